//! Audit records: what happened, to which object, who asked and who approved (pure).
//!
//! A record's id is derived from the object's uid, the action and a discriminator (the
//! generation for a policy change, the deleted run for a retention deletion): the same fact
//! always gets the same id, so a record sent twice (at-least-once delivery, a re-derivation
//! after a restart) is recognised as one. Most records are derived from an object's status
//! ([`Audited`]); the ones status cannot show later (a retention deletion, a key rotation) are
//! built by their constructors and emitted by the code that acts.

use chrono::{DateTime, Utc};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::admission::{LAST_CHANGED_AT, LAST_CHANGED_BY};
use crate::api::common::time_to_chrono;
use crate::api::{
    BackupPolicy, BackupRun, BackupRunPhase, RestoreRun, RestoreRunPhase, RestoreValidation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// What was done. The names are part of the record format (`kubectl dataguardian audit show`,
/// SIEM queries): add variants freely, rename none.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AuditAction {
    /// A BackupRun was created (by the schedule, or by `actor`).
    RunCreated,
    /// A BackupRun's Job started.
    RunStarted,
    /// A BackupRun's artifact was confirmed.
    RunSucceeded,
    /// A BackupRun failed (`reason`).
    RunFailed,
    /// A RestoreRun was created by `actor`.
    RestoreRequested,
    /// A RestoreRun was approved by `approver` (the two-person rule).
    RestoreApproved,
    /// A RestoreRun's Job started.
    RestoreStarted,
    /// A RestoreRun finished (`outcome` Succeeded or Failed).
    RestoreFinished,
    /// A RestoreValidation reached its verdict (`outcome` Passed or Failed).
    ValidationVerdict,
    /// Retention deleted a backup (its artifact and BackupRun).
    RetentionDeletion,
    /// The data keys of a policy's artifacts were re-wrapped for new recipients or a new KMS key.
    KeyRotation,
    /// A BackupPolicy's spec changed (a new generation), last changed by `actor`.
    PolicySpecChanged,
}

impl AuditAction {
    /// The name in records and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::RunCreated => "RunCreated",
            AuditAction::RunStarted => "RunStarted",
            AuditAction::RunSucceeded => "RunSucceeded",
            AuditAction::RunFailed => "RunFailed",
            AuditAction::RestoreRequested => "RestoreRequested",
            AuditAction::RestoreApproved => "RestoreApproved",
            AuditAction::RestoreStarted => "RestoreStarted",
            AuditAction::RestoreFinished => "RestoreFinished",
            AuditAction::ValidationVerdict => "ValidationVerdict",
            AuditAction::RetentionDeletion => "RetentionDeletion",
            AuditAction::KeyRotation => "KeyRotation",
            AuditAction::PolicySpecChanged => "PolicySpecChanged",
        }
    }
}

/// One line of the audit trail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Stable id: the same fact always has the same id (see [`record_id`]).
    pub id: String,
    /// When it happened (as the object's status or metadata says).
    pub time: DateTime<Utc>,
    pub action: AuditAction,
    pub namespace: String,
    /// The object's kind (`BackupRun`, `RestoreRun`, …).
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// Who asked (a run's requester, a policy's last changer), as the admission webhook
    /// recorded it; absent when nobody authenticated is known (e.g. the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Who approved a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// How it ended: `Succeeded`, `Failed`, `Passed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Machine-readable reason (of a failure, a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Short free text: the policy of a run, the backup a restore read, the deleted artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The id of the record of `action` on the object `uid`, told apart from others of the same
/// action by `discriminator` (empty when one per object): 32 hex digits of a SHA-256.
pub fn record_id(uid: &str, action: AuditAction, discriminator: &str) -> String {
    let mut h = Sha256::new();
    h.update(uid.as_bytes());
    h.update([0]);
    h.update(action.as_str().as_bytes());
    h.update([0]);
    h.update(discriminator.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A record id as [`record_id`] makes it (32 lowercase hex digits), held as its 16 bytes: how
/// the sink remembers ids (a third of a 32-character `String`'s heap chunk, and no allocation).
/// Parsing is exact: only the one rendering [`record_id`] produces parses, so two different id
/// strings never give the same value (an id in another form, e.g. upper case, does not parse
/// and is kept as the string it is).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RecordDigest([u8; 16]);

/// Why an id is not a [`RecordDigest`] (e.g. a record of another writer or an older format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("a record id of {0} bytes, not 32 hex digits")]
    Length(usize),
    #[error("a record id with a character that is not a lowercase hex digit")]
    NotLowerHex,
}

impl RecordDigest {
    /// Its 16 bytes.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::str::FromStr for RecordDigest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(DigestError::Length(b.len()));
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(DigestError::NotLowerHex),
        };
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(RecordDigest(out))
    }
}

impl std::fmt::Display for RecordDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The object fields every record of it carries.
struct Subject {
    namespace: String,
    kind: &'static str,
    name: String,
    uid: String,
}

impl Subject {
    fn of<K: kube::Resource>(obj: &K, kind: &'static str) -> Option<Subject> {
        Some(Subject {
            namespace: obj.meta().namespace.clone()?,
            kind,
            name: obj.meta().name.clone()?,
            uid: obj.meta().uid.clone()?,
        })
    }

    fn record(&self, action: AuditAction, discriminator: &str, time: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            id: record_id(&self.uid, action, discriminator),
            time,
            action,
            namespace: self.namespace.clone(),
            kind: self.kind.to_string(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            actor: None,
            approver: None,
            outcome: None,
            reason: None,
            detail: None,
        }
    }
}

fn created<K: kube::Resource>(obj: &K) -> DateTime<Utc> {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map(time_to_chrono)
        .unwrap_or_default()
}

/// When the object was last written other than through its status: the newest time among its
/// `managedFields` entries that are not the status subresource's (the API server sets an
/// entry's time whenever its manager adds, changes or removes one of its fields). A spec change
/// is such a write, so a policy's current generation is no older than this; later metadata
/// writes (labels, finalizers) can make it newer. `None` when the object has no such entry.
pub fn last_written(meta: &ObjectMeta) -> Option<&Time> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|e| e.subresource.as_deref().unwrap_or("").is_empty())
        .filter_map(|e| e.time.as_ref())
        .max_by_key(|t| time_to_chrono(t))
}

/// The records an object's current state shows (what must be in the trail by now).
/// `requester_recorded`: whether the operator's admission webhook records requesters (only then
/// are the requester annotations believed, see [`crate::controller::common::requester`]).
pub trait Audited {
    fn audit_records(&self, requester_recorded: bool) -> Vec<AuditRecord>;
}

fn requester<K: kube::Resource>(obj: &K, recorded: bool) -> Option<String> {
    crate::controller::common::requester::requested_by(obj.meta(), recorded)
}

impl Audited for BackupRun {
    fn audit_records(&self, recorded: bool) -> Vec<AuditRecord> {
        let Some(s) = Subject::of(self, "BackupRun") else {
            return Vec::new();
        };
        let status = self.status.clone().unwrap_or_default();
        let actor = requester(self, recorded).or(status.requested_by.clone());
        let detail = Some(format!("policy {}", self.spec.policy_ref.name));
        let mut out = Vec::new();
        let mut created_rec = s.record(AuditAction::RunCreated, "", created(self));
        created_rec.actor = actor.clone();
        created_rec.detail = Some(format!(
            "policy {}, trigger {}",
            self.spec.policy_ref.name,
            if status.scheduled == Some(true) {
                "Scheduled"
            } else {
                "Manual"
            }
        ));
        out.push(created_rec);
        if let Some(start) = &status.start_time {
            let mut r = s.record(AuditAction::RunStarted, "", time_to_chrono(start));
            r.actor = actor.clone();
            r.detail = detail.clone();
            out.push(r);
        }
        if let Some(phase) = status.phase.filter(|p| p.is_finished()) {
            let action = if phase == BackupRunPhase::Succeeded {
                AuditAction::RunSucceeded
            } else {
                AuditAction::RunFailed
            };
            let time = status
                .completion_time
                .as_ref()
                .map(time_to_chrono)
                .unwrap_or_else(|| created(self));
            let mut r = s.record(action, "", time);
            r.actor = actor;
            r.outcome = Some(format!("{phase:?}"));
            r.reason = status
                .reason
                .clone()
                .filter(|_| action == AuditAction::RunFailed);
            r.detail = match status.artifact.as_deref() {
                Some(a) if action == AuditAction::RunSucceeded => Some(format!(
                    "policy {}, artifact {} in storage {} (sha256 {})",
                    self.spec.policy_ref.name, a.key, a.storage, a.sha256
                )),
                _ => detail,
            };
            out.push(r);
        }
        out
    }
}

impl Audited for RestoreRun {
    fn audit_records(&self, recorded: bool) -> Vec<AuditRecord> {
        let Some(s) = Subject::of(self, "RestoreRun") else {
            return Vec::new();
        };
        let status = self.status.clone().unwrap_or_default();
        let actor = requester(self, recorded).or(status.requested_by.clone());
        let source = match (
            &self.spec.backup_run_ref,
            &self.spec.storage_ref,
            &self.spec.key,
        ) {
            (Some(r), _, _) => format!("backup run {}", r.name),
            (None, Some(st), Some(k)) => format!("key {k} in storage {}", st.name),
            _ => "unresolved source".to_string(),
        };
        let detail = Some(format!(
            "{source} into {}{}",
            target(&self.spec.target),
            if self.spec.overwrite || self.spec.clean {
                " (overwrite)"
            } else {
                ""
            }
        ));
        let approver = status.approval.as_ref().and_then(|a| a.approved_by.clone());
        let mut out = Vec::new();
        let mut r = s.record(AuditAction::RestoreRequested, "", created(self));
        r.actor = actor.clone();
        r.detail = detail.clone();
        out.push(r);
        if let Some(a) = status.approval.as_ref()
            && let (Some(by), Some(at)) = (&a.approved_by, &a.approved_at)
        {
            let at = time_to_chrono(at);
            // One record per approval (a withdrawn and renewed approval is a new one).
            let mut r = s.record(AuditAction::RestoreApproved, &at.to_rfc3339(), at);
            r.actor = actor.clone();
            r.approver = Some(by.clone());
            r.detail = detail.clone();
            out.push(r);
        }
        if let Some(start) = &status.start_time {
            let mut r = s.record(AuditAction::RestoreStarted, "", time_to_chrono(start));
            r.actor = actor.clone();
            r.approver = approver.clone();
            r.detail = detail.clone();
            out.push(r);
        }
        if let Some(phase) = status.phase.filter(|p| p.is_finished()) {
            let time = status
                .completion_time
                .as_ref()
                .map(time_to_chrono)
                .unwrap_or_else(|| created(self));
            let mut r = s.record(AuditAction::RestoreFinished, "", time);
            r.actor = actor;
            r.approver = approver;
            r.outcome = Some(format!("{phase:?}"));
            r.reason = status
                .reason
                .clone()
                .filter(|_| phase == RestoreRunPhase::Failed);
            r.detail = detail;
            out.push(r);
        }
        out
    }
}

impl Audited for RestoreValidation {
    fn audit_records(&self, recorded: bool) -> Vec<AuditRecord> {
        let Some(s) = Subject::of(self, "RestoreValidation") else {
            return Vec::new();
        };
        let Some(status) = &self.status else {
            return Vec::new();
        };
        let (Some(phase), Some(result)) = (status.phase, status.result) else {
            return Vec::new();
        };
        if !phase.is_finished() {
            return Vec::new();
        }
        let time = status
            .completion_time
            .as_ref()
            .map(time_to_chrono)
            .unwrap_or_else(|| created(self));
        let mut r = s.record(AuditAction::ValidationVerdict, "", time);
        r.actor = requester(self, recorded).or(status.requested_by.clone());
        r.outcome = Some(format!("{result:?}"));
        r.reason = status.reason.clone();
        r.detail = status
            .backup_run_name
            .as_ref()
            .map(|b| format!("backup run {b}"));
        vec![r]
    }
}

impl Audited for BackupPolicy {
    fn audit_records(&self, recorded: bool) -> Vec<AuditRecord> {
        let Some(s) = Subject::of(self, "BackupPolicy") else {
            return Vec::new();
        };
        let Some(generation) = self.meta().generation else {
            return Vec::new();
        };
        let annotations = self.annotations();
        // When the generation came: no earlier than the webhook's stamp (when it records), the
        // last write that can have changed the spec, or the creation. The stamp alone can be
        // older than the generation (a change admitted while the webhook was down keeps the
        // previous stamp), and so is the creation (no webhook): after a restart such a time
        // would have the sink take a generation it never wrote as written long ago.
        let stamped = annotations
            .get(LAST_CHANGED_AT)
            .filter(|_| recorded)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let time = [stamped, last_written(self.meta()).map(time_to_chrono)]
            .into_iter()
            .flatten()
            .fold(created(self), DateTime::max);
        let mut r = s.record(
            AuditAction::PolicySpecChanged,
            &generation.to_string(),
            time,
        );
        r.actor = annotations
            .get(LAST_CHANGED_BY)
            .filter(|v| recorded && !v.is_empty())
            .cloned();
        r.detail = Some(format!("generation {generation}"));
        vec![r]
    }
}

/// `postgres db.shop.svc/shop`: where a restore writes (no credentials).
fn target(t: &crate::api::common::DatabaseSpec) -> String {
    let (engine, host, db) = match (&t.postgres, &t.mysql) {
        (Some(p), _) => ("postgres", p.host.clone(), p.database.clone()),
        (None, Some(m)) => ("mysql", m.host.clone(), m.database.clone()),
        (None, None) => return "no target".into(),
    };
    format!(
        "{engine} {}/{}",
        host.unwrap_or_else(|| "?".into()),
        db.unwrap_or_else(|| "*".into())
    )
}

/// The record of retention deleting `run` under `policy` (`note`: what is deleted and why):
/// spooled by the policy controller before it deletes anything of the run, since nothing shows
/// the deletion afterwards. Its time is when retention began deleting.
pub fn retention_deletion(
    policy: &BackupPolicy,
    run: &str,
    note: Option<&str>,
) -> Option<AuditRecord> {
    let s = Subject::of(policy, "BackupPolicy")?;
    let mut r = s.record(AuditAction::RetentionDeletion, run, Utc::now());
    r.reason = Some("Retention".into());
    r.detail = Some(match note {
        Some(n) => n.to_string(),
        None => format!("deleted run {run}"),
    });
    Some(r)
}

/// The record of a key rotation of `policy`'s artifacts: `rotation` tells rotations apart (e.g.
/// the fingerprint set of the new recipients), `detail` what changed (never key material).
/// Made durable by the key rotation code through the controllers' `Context::audit_durably`
/// (the write-ahead spool) before the runs record the re-wrap.
pub fn key_rotation(
    policy: &BackupPolicy,
    rotation: &str,
    outcome: &str,
    detail: String,
) -> Option<AuditRecord> {
    let s = Subject::of(policy, "BackupPolicy")?;
    let mut r = s.record(AuditAction::KeyRotation, rotation, Utc::now());
    r.actor = policy
        .annotations()
        .get(LAST_CHANGED_BY)
        .filter(|v| !v.is_empty())
        .cloned();
    r.outcome = Some(outcome.to_string());
    r.detail = Some(detail);
    Some(r)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admission::REQUESTED_BY;
    use crate::api::common::time_from_chrono;
    use crate::api::restore_run::ApprovalStatus;

    fn restore(status: serde_json::Value) -> RestoreRun {
        let mut r: RestoreRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "RestoreRun",
            "metadata": {
                "name": "refresh", "namespace": "shop", "uid": "u-restore",
                "creationTimestamp": "2026-12-07T10:00:00Z",
                "annotations": {REQUESTED_BY: "alice"}
            },
            "spec": {
                "backupRunRef": {"name": "nightly-1"},
                "overwrite": true,
                "target": {"postgres": {"host": "db", "database": "shop", "user": "restore",
                    "passwordSecretRef": {"name": "s", "key": "password"}}}
            }
        }))
        .expect("restore");
        r.status = serde_json::from_value(status).expect("status");
        r
    }

    #[test]
    fn a_restores_records_name_requester_and_approver() {
        let mut r = restore(serde_json::json!({
            "phase": "Succeeded",
            "startTime": "2026-12-07T10:05:00Z",
            "completionTime": "2026-12-07T10:09:00Z",
        }));
        let at = DateTime::parse_from_rfc3339("2026-12-07T10:04:00Z")
            .unwrap()
            .with_timezone(&Utc);
        r.status.as_mut().unwrap().approval = Some(ApprovalStatus {
            approved_by: Some("bob".into()),
            approved_at: Some(time_from_chrono(at)),
            ..Default::default()
        });
        let records = r.audit_records(true);
        let actions: Vec<_> = records.iter().map(|r| r.action).collect();
        assert_eq!(
            actions,
            [
                AuditAction::RestoreRequested,
                AuditAction::RestoreApproved,
                AuditAction::RestoreStarted,
                AuditAction::RestoreFinished
            ]
        );
        for rec in &records {
            assert_eq!(rec.actor.as_deref(), Some("alice"), "{rec:?}");
        }
        assert_eq!(records[1].approver.as_deref(), Some("bob"));
        assert_eq!(records[3].approver.as_deref(), Some("bob"));
        assert_eq!(records[3].outcome.as_deref(), Some("Succeeded"));
        assert!(records[0].detail.as_deref().unwrap().contains("overwrite"));
        // Stable: the same object gives the same ids; ids differ between actions.
        let again = r.audit_records(true);
        assert_eq!(
            records.iter().map(|r| &r.id).collect::<Vec<_>>(),
            again.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
        let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.id).collect();
        assert_eq!(ids.len(), records.len());
    }

    #[test]
    fn without_the_webhook_the_requester_annotation_is_not_believed() {
        let r = restore(serde_json::json!({"phase": "Queued"}));
        let records = r.audit_records(false);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].actor, None);
    }

    #[test]
    fn a_renewed_approval_is_a_new_record() {
        let mk = |t: &str| {
            let mut r = restore(serde_json::json!({"phase": "Queued"}));
            let at = DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
            r.status.as_mut().unwrap().approval = Some(ApprovalStatus {
                approved_by: Some("bob".into()),
                approved_at: Some(time_from_chrono(at)),
                ..Default::default()
            });
            r.audit_records(true)[1].id.clone()
        };
        assert_ne!(mk("2026-12-07T10:04:00Z"), mk("2026-12-07T11:04:00Z"));
    }

    #[test]
    fn a_backup_runs_records_follow_its_status_and_name_the_requester() {
        let mut run: BackupRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {
                "name": "before-migration", "namespace": "shop", "uid": "u-run",
                "creationTimestamp": "2026-12-07T10:00:00Z",
                "annotations": {REQUESTED_BY: "alice"}
            },
            "spec": {"policyRef": {"name": "nightly"}, "trigger": "Manual"}
        }))
        .expect("run");
        let actions = |r: &BackupRun| {
            r.audit_records(true)
                .iter()
                .map(|x| x.action)
                .collect::<Vec<_>>()
        };
        assert_eq!(actions(&run), [AuditAction::RunCreated]);
        run.status = serde_json::from_value(serde_json::json!({
            "phase": "Failed", "reason": "DumpFailed",
            "startTime": "2026-12-07T10:01:00Z", "completionTime": "2026-12-07T10:02:00Z"
        }))
        .unwrap();
        let records = run.audit_records(true);
        assert_eq!(
            records.iter().map(|r| r.action).collect::<Vec<_>>(),
            [
                AuditAction::RunCreated,
                AuditAction::RunStarted,
                AuditAction::RunFailed
            ]
        );
        assert!(records.iter().all(|r| r.actor.as_deref() == Some("alice")));
        assert_eq!(records[2].reason.as_deref(), Some("DumpFailed"));
        assert_eq!(
            records[2].time.to_rfc3339(),
            "2026-12-07T10:02:00+00:00",
            "the time is the status's, not the observer's"
        );
    }

    #[test]
    fn a_policy_change_is_one_record_per_generation_with_its_last_changer() {
        let policy = |generation: i64, by: &str| -> BackupPolicy {
            policy_with(serde_json::json!({
                "name": "nightly", "namespace": "shop", "uid": "u-policy",
                "generation": generation,
                "creationTimestamp": "2026-12-01T00:00:00Z",
                "annotations": {LAST_CHANGED_BY: by, LAST_CHANGED_AT: "2026-12-07T09:00:00Z"}
            }))
        };
        let first = policy(3, "bob").audit_records(true);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].action, AuditAction::PolicySpecChanged);
        assert_eq!(first[0].actor.as_deref(), Some("bob"));
        assert_eq!(first[0].time.to_rfc3339(), "2026-12-07T09:00:00+00:00");
        assert_eq!(first[0].id, policy(3, "bob").audit_records(true)[0].id);
        assert_ne!(first[0].id, policy(4, "bob").audit_records(true)[0].id);
        assert_eq!(policy(3, "bob").audit_records(false)[0].actor, None);
        let rotation = key_rotation(
            &policy(4, "carol"),
            "fp-set-2",
            "Succeeded",
            "3 of 3".into(),
        )
        .expect("record");
        assert_eq!(rotation.action, AuditAction::KeyRotation);
        assert_eq!(rotation.actor.as_deref(), Some("carol"));
    }

    /// A PostgreSQL BackupPolicy (storage `main`, nightly at 02:00) with `metadata`.
    pub(crate) fn policy_with(metadata: serde_json::Value) -> BackupPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": metadata,
            "spec": {
                "source": {"postgres": {"host": "db", "database": "shop", "user": "u",
                    "passwordSecretRef": {"name": "s", "key": "password"}}},
                "storageRef": {"name": "main"},
                "schedule": "0 2 * * *"
            }
        }))
        .expect("policy")
    }

    /// A policy at generation 5, created on Dec 1st, whose spec `kubectl edit` changed on Dec 7th
    /// at 09:00 while the webhook was down (the stamp is the previous change's, Dec 2nd); the
    /// operator wrote its status at 12:00. `fields`: its `managedFields` as the API serves them.
    pub(crate) fn changed_policy(fields: serde_json::Value) -> BackupPolicy {
        policy_with(serde_json::json!({
            "name": "nightly", "namespace": "shop", "uid": "u-policy",
            "generation": 5,
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "annotations": {LAST_CHANGED_BY: "bob", LAST_CHANGED_AT: "2026-12-02T00:00:00Z"},
            "managedFields": fields
        }))
    }

    pub(crate) fn edited_at_nine() -> serde_json::Value {
        serde_json::json!([
            {"manager": "kubectl-client-side-apply", "operation": "Update",
             "apiVersion": "dataguardian.io/v1alpha1", "time": "2026-12-01T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:source": {}}}},
            {"manager": "kubectl-edit", "operation": "Update",
             "apiVersion": "dataguardian.io/v1alpha1", "time": "2026-12-07T09:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:schedule": {}}}},
            {"manager": "dataguardian", "operation": "Update", "subresource": "status",
             "apiVersion": "dataguardian.io/v1alpha1", "time": "2026-12-07T12:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:observedGeneration": {}}}}
        ])
    }

    #[test]
    fn a_policy_change_is_timed_no_earlier_than_the_write_that_made_it() {
        let edited = changed_policy(edited_at_nine());
        for recorded in [true, false] {
            let r = &edited.audit_records(recorded)[0];
            assert_eq!(
                r.time.to_rfc3339(),
                "2026-12-07T09:00:00+00:00",
                "the last write other than status's (recorded: {recorded})"
            );
            assert_eq!(
                r.id,
                record_id("u-policy", AuditAction::PolicySpecChanged, "5")
            );
        }
        // Nothing but the stamp and the creation: the stamp when believed, else the creation.
        let bare = changed_policy(serde_json::Value::Null);
        assert_eq!(
            bare.audit_records(true)[0].time.to_rfc3339(),
            "2026-12-02T00:00:00+00:00"
        );
        assert_eq!(
            bare.audit_records(false)[0].time.to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            last_written(edited.meta()).map(time_to_chrono),
            Some("2026-12-07T09:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn record_ids_parse_to_16_bytes_and_back_and_nothing_else_parses() {
        for (uid, d) in [("u", ""), ("v", "1"), ("uid-policy", "nightly-1")] {
            let id = record_id(uid, AuditAction::RetentionDeletion, d);
            let digest: RecordDigest = id.parse().expect("a record id parses");
            assert_eq!(digest.to_string(), id, "round trip");
            assert_eq!(hex::encode(digest.bytes()), id);
        }
        let all: RecordDigest = "0123456789abcdeffedcba9876543210".parse().unwrap();
        assert_eq!(
            all.bytes(),
            &[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
                0x32, 0x10
            ]
        );
        // The order of the bytes is the order of the strings.
        let a: RecordDigest = "0f000000000000000000000000000000".parse().unwrap();
        let b: RecordDigest = "a0000000000000000000000000000000".parse().unwrap();
        assert!(a < b && a.to_string() < b.to_string());
        // Only the rendering record_id makes: upper case (which would read as the same bytes),
        // other lengths, other characters, a multi-byte character stay strings.
        let upper = "0123456789ABCDEFFEDCBA9876543210";
        assert_eq!(upper.parse::<RecordDigest>(), Err(DigestError::NotLowerHex));
        for bad in [
            "",
            "0123",
            "0123456789abcdeffedcba98765432100",
            "legacy-record-7",
        ] {
            assert_eq!(
                bad.parse::<RecordDigest>(),
                Err(DigestError::Length(bad.len())),
                "{bad:?}"
            );
        }
        for bad in [
            "0123456789abcdeffedcba987654321g",
            " 123456789abcdeffedcba9876543210",
            "+123456789abcdeffedcba9876543210",
        ] {
            assert_eq!(
                bad.parse::<RecordDigest>(),
                Err(DigestError::NotLowerHex),
                "{bad:?}"
            );
        }
        // 30 bytes of ASCII and one 2-byte character: 32 bytes, not hex.
        let multibyte = format!("{}é", "0".repeat(30));
        assert_eq!(multibyte.len(), 32);
        assert_eq!(
            multibyte.parse::<RecordDigest>(),
            Err(DigestError::NotLowerHex)
        );
    }

    #[test]
    fn record_ids_depend_on_uid_action_and_discriminator() {
        let a = record_id("u", AuditAction::PolicySpecChanged, "1");
        assert_eq!(a.len(), 32);
        assert_eq!(a, record_id("u", AuditAction::PolicySpecChanged, "1"));
        assert_ne!(a, record_id("u", AuditAction::PolicySpecChanged, "2"));
        assert_ne!(a, record_id("v", AuditAction::PolicySpecChanged, "1"));
        assert_ne!(a, record_id("u", AuditAction::KeyRotation, "1"));
    }
}
