//! Declarative key rotation, the pure part: which retained backups are wrapped for other age
//! recipients than the policy's ([`plan`]), the `KeysCurrent` condition and `status.keys`, and
//! what a finished rotation Job reported ([`rewrap_reports`], [`recorded_updates`]).
//!
//! A backup is current when the recipient fingerprints its BackupRun records
//! (`status.artifact.encryption.recipients`, confirmed from its manifest) are exactly the
//! fingerprints of the policy's recipients Secret and the KMS key id it records
//! (`status.artifact.encryption.kmsKeyId`: the policy's `spec.encryption.kms.keyId` as written
//! when its backup Job ran) is the policy's key id now; a KMS-wrapped policy's backup that records
//! no KMS key (recorded by an older operator) is re-wrapped too, to be sure, and named as such.
//! The rotation Job re-wraps the others; each
//! re-wrap's summary (its container's termination message) names the manifest, its digest before
//! and after, and who it is wrapped for now, and the run's recorded digest and recipients are
//! updated only from a summary whose "before" digest is the one the run records.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use sha2::{Digest, Sha256};

use crate::api::BackupPolicy;
use crate::api::backup_policy::KeysStatus;
use crate::api::common::condition_types::KEYS_CURRENT;
use crate::contract::CopySummary;
use crate::contract::{RewrapSummary, Succeeded, Summary};
use crate::controller::common::reason::Reason;
use crate::controller::common::run_cache::FinishedRun;
use crate::jobs::rotation_job::{CopyRefresh, MAX_TARGETS, RewrapTarget};

use super::plan::condition;

/// The fingerprint of one age recipient, as the agent records it (`sha256:` and the first 16
/// hex characters of the SHA-256 of the recipient's text).
pub fn fingerprint(recipient: &str) -> String {
    let digest = hex::encode(Sha256::digest(recipient.trim().as_bytes()));
    format!("sha256:{}", &digest[..16])
}

/// The fingerprints of the recipients in a recipients Secret's text (one per line, `#`
/// comments and blank lines skipped), sorted and without duplicates.
pub fn recipient_fingerprints(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(fingerprint)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Hex SHA-256 naming a key set: the sorted recipient fingerprints and the KMS key.
pub fn key_set(fingerprints: &[String], kms: Option<(&str, &str)>) -> String {
    let mut h = Sha256::new();
    for f in fingerprints {
        h.update(format!("age {f}\n"));
    }
    if let Some((region, key)) = kms {
        h.update(format!("kms {region} {key}\n"));
    }
    hex::encode(h.finalize())
}

/// The retained backups of a policy, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationPlan {
    /// Retained, succeeded, encrypted backups on the policy's storage.
    pub total: u32,
    /// Of those, wrapped for the policy's recipients.
    pub current: u32,
    /// Wrapped for other recipients and re-wrappable (manifest location and digest recorded),
    /// newest first, at most [`MAX_TARGETS`] (the next Job takes the rest).
    pub targets: Vec<RewrapTarget>,
    /// Wrapped for other recipients beyond this Job's share.
    pub waiting: u32,
    /// Wrapped for other recipients but with no recorded manifest location or digest (recorded
    /// by an older operator): the operator cannot pin a re-wrap, they stay as they are.
    pub unpinned: Vec<String>,
    /// Backups of a KMS-wrapped policy that record no KMS key (recorded by an older operator):
    /// which key wraps them is unknown, so they are re-wrapped like the stale ones.
    pub unknown_kms: Vec<String>,
    /// Wrapped for other recipients but written before envelope encryption (recorded scheme
    /// `age-x25519`: the artifacts encrypted straight to the old recipients): no re-wrap can
    /// re-key them, no Job is started for them; they stay readable with the previous identity
    /// only, until retention removes them. Newest first.
    pub not_rewrappable: Vec<String>,
}

impl RotationPlan {
    /// Whether every retained backup is wrapped for the policy's keys.
    pub fn keys_current(&self) -> bool {
        self.targets.is_empty() && self.unpinned.is_empty()
    }
}

/// Which of `runs` (the policy's finished runs) are retained (`kept`), encrypted, on `storage`,
/// and wrapped for other recipients than `desired` (sorted fingerprints) or by another KMS key
/// than `desired_kms` (the policy's `kms.keyId` as written).
pub fn plan(
    desired: &[String],
    desired_kms: Option<&str>,
    runs: &[FinishedRun],
    kept: &BTreeSet<String>,
    storage: &str,
) -> RotationPlan {
    let mut out = RotationPlan::default();
    let mut stale: Vec<(&FinishedRun, RewrapTarget)> = Vec::new();
    let mut direct: Vec<&FinishedRun> = Vec::new();
    for run in runs
        .iter()
        .filter(|r| r.succeeded && kept.contains(&r.name))
    {
        let Some(artifact) = run.artifact.as_deref() else {
            continue;
        };
        let Some(recipients) = &artifact.recipients else {
            continue; // unencrypted: nothing to re-key
        };
        if artifact.storage != storage {
            continue;
        }
        out.total += 1;
        let mut have: Vec<String> = recipients.clone();
        have.sort();
        have.dedup();
        let kms_current = match (desired_kms, artifact.kms_key_id.as_deref()) {
            (Some(_), None) => {
                out.unknown_kms.push(run.name.clone());
                false
            }
            (want, have) => want == have,
        };
        let primary_current = have == desired && kms_current;
        // Copies are byte-identical to the primary: all of them follow a re-wrap of the
        // primary, and one with another digest still holds the manifest from before an
        // earlier re-wrap.
        let stale_copies: Vec<CopyRefresh> = artifact
            .copy_manifests
            .iter()
            .filter(|c| {
                !primary_current || Some(&c.manifest_sha256) != artifact.manifest_sha256.as_ref()
            })
            .map(|c| CopyRefresh {
                storage: c.storage.clone(),
                location: c.location.clone(),
                manifest_sha256: c.manifest_sha256.clone(),
            })
            .collect();
        if primary_current && stale_copies.is_empty() {
            out.current += 1;
            continue;
        }
        if artifact.direct_encryption && !primary_current {
            direct.push(run);
            continue;
        }
        match (&artifact.manifest_key, &artifact.manifest_sha256) {
            (Some(location), Some(digest)) => stale.push((
                run,
                RewrapTarget {
                    run: run.name.clone(),
                    location: location.clone(),
                    manifest_sha256: digest.clone(),
                    rewrap: !primary_current,
                    copies: stale_copies,
                },
            )),
            _ => out.unpinned.push(run.name.clone()),
        }
    }
    // Newest first: the backups most likely to be restored are re-keyed first, and backups
    // that cannot be re-wrapped (written before envelope encryption, hence the oldest) come
    // last, so their failing re-wrap never holds the others back.
    stale.sort_by(|a, b| (b.0.completed_at, &b.0.name).cmp(&(a.0.completed_at, &a.0.name)));
    direct.sort_by(|a, b| (b.completed_at, &b.name).cmp(&(a.completed_at, &a.name)));
    out.not_rewrappable = direct.into_iter().map(|r| r.name.clone()).collect();
    // At most MAX_TARGETS containers (re-wraps and copy refreshes) per Job; a backup with more
    // copies than that gets its copies over several Jobs.
    let mut containers = 0;
    for (_, mut t) in stale {
        if containers < MAX_TARGETS && out.targets.is_empty() && t.containers() > MAX_TARGETS {
            t.copies.truncate(MAX_TARGETS - usize::from(t.rewrap));
        }
        if containers + t.containers() <= MAX_TARGETS {
            containers += t.containers();
            out.targets.push(t);
        } else {
            out.waiting += 1;
        }
    }
    out
}

/// Where the rotation stands, for the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationState {
    /// Nothing to do.
    Current,
    /// Backups need a re-wrap and the policy names no old key.
    NoPreviousKey,
    /// A rotation Job is running (or was just created).
    Running { job: String },
    /// The rotation Job failed with this detail.
    Failed { job: String, detail: String },
}

/// The `KeysCurrent` condition.
pub fn keys_condition(
    p: &RotationPlan,
    state: &RotationState,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let stale = p.targets.len() as u32 + p.waiting + p.unpinned.len() as u32;
    let unpinned = if p.unpinned.is_empty() {
        String::new()
    } else {
        format!(
            "; {} cannot be re-wrapped by the operator (no recorded manifest digest): {}",
            p.unpinned.len(),
            p.unpinned.join(", ")
        )
    };
    let unknown = if p.unknown_kms.is_empty() {
        String::new()
    } else {
        format!(
            "; {} record no KMS key (recorded by an older operator), which key wraps them is \
             unknown and they are re-wrapped: {}",
            p.unknown_kms.len(),
            p.unknown_kms.join(", ")
        )
    };
    let legacy = not_rewrappable_note(p);
    let unpinned = format!("{unknown}{unpinned}");
    let (ok, reason, message) = match state {
        RotationState::Current if p.keys_current() && !p.not_rewrappable.is_empty() => (
            false,
            Reason::BackupsNotRewrappable,
            format!(
                "{} of {} retained backups are wrapped for the policy's keys{legacy}",
                p.current, p.total
            ),
        ),
        RotationState::Current if p.keys_current() => (
            true,
            Reason::KeysCurrent,
            format!(
                "all {} retained encrypted backups are wrapped for the policy's keys",
                p.total
            ),
        ),
        RotationState::Current | RotationState::NoPreviousKey => (
            false,
            Reason::PreviousKeyMissing,
            format!(
                "{stale} of {} retained backups are wrapped for other keys; name the old key in \
                 spec.encryption.rotation to re-wrap them{unpinned}{legacy}",
                p.total
            ),
        ),
        RotationState::Running { job } => (
            false,
            Reason::RotatingKeys,
            format!(
                "Job {job} re-wraps {} backups; {} of {} are wrapped for the policy's keys\
                 {unpinned}{legacy}",
                p.targets.len(),
                p.current,
                p.total
            ),
        ),
        RotationState::Failed { job, detail } => (
            false,
            Reason::KeyRotationFailed,
            format!(
                "Job {job} failed: {detail}; {} of {} are wrapped for the policy's keys; tried \
                 again{unpinned}{legacy}",
                p.current, p.total
            ),
        ),
    };
    condition(KEYS_CURRENT, ok, reason.as_str(), message, generation, now)
}

/// What the condition and the Event say about backups no re-wrap can re-key (empty when there
/// are none): how many, which, that only the previous identity reads them until retention
/// removes them, and what to do.
pub fn not_rewrappable_note(p: &RotationPlan) -> String {
    if p.not_rewrappable.is_empty() {
        return String::new();
    }
    format!(
        "; {} were written before envelope encryption (their artifacts are encrypted straight to \
         the old recipients) and cannot be re-wrapped: {}. They stay readable only with the \
         previous identity until retention removes them: keep that identity (e.g. the Secret of \
         spec.encryption.rotation.previousIdentitySecretRef) until then, or, to be rid of the \
         old key sooner, take a new backup and delete these runs",
        p.not_rewrappable.len(),
        p.not_rewrappable.join(", ")
    )
}

/// `status.keys`.
pub fn keys_status(
    desired: &[String],
    policy: &BackupPolicy,
    key_set: &str,
    p: &RotationPlan,
    rotation_job: Option<String>,
) -> KeysStatus {
    KeysStatus {
        wrapped_for: desired.to_vec(),
        kms_key_id: policy
            .spec
            .encryption
            .as_ref()
            .and_then(|e| e.kms.as_ref())
            .map(|k| k.key_id.clone()),
        key_set: key_set.to_string(),
        rewrapped: p.current,
        total: p.total,
        not_rewrappable: (!p.not_rewrappable.is_empty()).then_some(p.not_rewrappable.len() as u32),
        rotation_job,
    }
}

/// The agent summaries in a rotation Job's Pods: the termination message of every container
/// (init containers included) that exited 0.
fn succeeded_summaries(pods: &[Pod]) -> impl Iterator<Item = Succeeded> + '_ {
    pods.iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code == 0)
        .filter_map(|t| t.message.as_deref())
        .filter_map(|m| match serde_json::from_str::<Summary>(m.trim()) {
            Ok(Summary::Succeeded(s)) => Some(s),
            _ => None,
        })
}

/// The re-wrap summaries in a rotation Job's Pods (containers that exited 0).
pub fn rewrap_reports(pods: &[Pod]) -> Vec<RewrapSummary> {
    succeeded_summaries(pods)
        .filter_map(|s| match s {
            Succeeded::Rewrap(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// A run whose recorded manifest digest and recipients a re-wrap changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedUpdate {
    /// The BackupRun.
    pub run: String,
    /// Its manifest's digest now.
    pub manifest_sha256: String,
    /// The fingerprints its data key is wrapped for now.
    pub recipients: Vec<String>,
    /// The KMS key id (the policy's, as written) its data key is wrapped by now.
    pub kms_key_id: Option<String>,
    /// The manifest's encryption scheme when the report found it cannot be re-wrapped
    /// (written before envelope encryption; nothing was rewritten).
    pub not_rewrappable: Option<String>,
}

/// The runs of `runs` a report re-wrapped: same manifest location and the digest the run
/// records is the report's digest before. A report matching no run (already recorded, or about
/// another manifest) changes nothing. `kms_key_id` is the policy's KMS key id the rotation Job
/// wrapped with (its name is derived from it), recorded when the report names a KMS wrap.
pub fn recorded_updates(
    runs: &[FinishedRun],
    reports: &[RewrapSummary],
    kms_key_id: Option<&str>,
) -> Vec<RecordedUpdate> {
    reports
        .iter()
        .filter_map(|r| {
            let run = runs.iter().find(|run| {
                run.artifact.as_deref().is_some_and(|a| {
                    a.manifest_key.as_deref() == Some(r.location.as_str())
                        && a.manifest_sha256.as_deref() == Some(r.previous_manifest_sha256.as_str())
                        // A not-rewrappable report changes no digest: once recorded, done.
                        && !(r.not_rewrappable.is_some() && a.direct_encryption)
                })
            })?;
            Some(RecordedUpdate {
                run: run.name.clone(),
                manifest_sha256: r.manifest_sha256.clone(),
                recipients: r.wrapped_for.recipients.clone(),
                kms_key_id: kms_key_id
                    .filter(|_| !r.wrapped_for.kms_keys.is_empty())
                    .map(str::to_string),
                not_rewrappable: r.not_rewrappable.clone(),
            })
        })
        .collect()
}

/// The copy refreshes in a rotation Job's Pods: the `agent copy` summaries of every container
/// that exited 0.
pub fn copy_reports(pods: &[Pod]) -> Vec<CopySummary> {
    succeeded_summaries(pods)
        .filter_map(|s| match s {
            Succeeded::Copy(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// A copy whose manifest a rotation refreshed: its recorded digest becomes the run's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUpdate {
    /// The BackupRun.
    pub run: String,
    /// The copy's storage.
    pub storage: String,
    /// The copy's manifest digest now (the run's).
    pub manifest_sha256: String,
}

/// The copies of `runs` (as recorded after the re-wraps) the reports refreshed: the report's
/// source is the run's manifest, its destination a confirmed copy of the run recording another
/// digest, and the digest it copied is the one the run records now (a report of a manifest the
/// run does not record changes nothing).
pub fn copy_updates(runs: &[FinishedRun], reports: &[CopySummary]) -> Vec<CopyUpdate> {
    reports
        .iter()
        .filter_map(|r| {
            runs.iter().find_map(|run| {
                let a = run.artifact.as_deref()?;
                let digest = a.manifest_sha256.as_deref()?;
                if a.manifest_key.as_deref() != Some(r.from.as_str())
                    || !digest.eq_ignore_ascii_case(&r.manifest_sha256)
                {
                    return None;
                }
                let copy = a
                    .copy_manifests
                    .iter()
                    .find(|c| c.location == r.location && c.manifest_sha256 != digest)?;
                Some(CopyUpdate {
                    run: run.name.clone(),
                    storage: copy.storage.clone(),
                    manifest_sha256: digest.to_string(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::WrappedFor;
    use crate::controller::common::run_cache::ArtifactRef;

    fn run(
        name: &str,
        minute: u32,
        recipients: Option<&[&str]>,
        digest: Option<&str>,
    ) -> FinishedRun {
        FinishedRun {
            name: name.into(),
            succeeded: true,
            completed_at: Some(
                DateTime::parse_from_rfc3339(&format!("2026-12-07T10:{minute:02}:00Z"))
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            pinned: false,
            scheduled: true,
            failure: None,
            artifact: Some(Box::new(ArtifactRef {
                storage: "main".into(),
                size_bytes: 1,
                key: format!("shop/{name}"),
                manifest_key: Some(format!("s3://b/shop/{name}/manifest.json")),
                retain_until: None,
                copies: Vec::new(),
                manifest_sha256: digest.map(str::to_string),
                recipients: recipients.map(|r| r.iter().map(|s| s.to_string()).collect()),
                kms_key_id: None,
                copy_manifests: Vec::new(),
                direct_encryption: false,
            })),
        }
    }

    fn kept(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fingerprints_match_the_agents_and_ignore_comments_order_and_duplicates() {
        // The agent's fingerprint of this recipient (src/agent/crypto.rs), computed the same way.
        let r = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let f = fingerprint(r);
        assert_eq!(f, crate::agent::crypto::fingerprint(r));
        assert!(f.starts_with("sha256:") && f.len() == 7 + 16, "{f}");
        assert_eq!(fingerprint(&format!("  {r}\n")), f);
        let text = format!("# team key\n{r}\n\nage1other\n{r}\n");
        let fps = recipient_fingerprints(&text);
        assert_eq!(fps.len(), 2);
        assert!(fps.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(key_set(&fps, None), key_set(&fps, Some(("r", "alias/k"))));
        assert_ne!(key_set(&fps[..1], None), key_set(&fps, None));
    }

    #[test]
    fn only_retained_encrypted_backups_wrapped_for_other_keys_are_rewrapped_newest_first() {
        let new = vec!["sha256:b".to_string()];
        let runs = vec![
            run("r3", 3, Some(&["sha256:a"]), Some("d3")),
            run("r1", 1, Some(&["sha256:a"]), Some("d1")),
            run("r2", 2, Some(&["sha256:b"]), Some("d2")), // already current
            run("r4", 4, None, Some("d4")),                // unencrypted
            run("r5", 5, Some(&["sha256:a"]), Some("d5")), // not retained
            run("r6", 6, Some(&["sha256:a"]), None),       // no recorded digest
        ];
        let p = plan(
            &new,
            None,
            &runs,
            &kept(&["r1", "r2", "r3", "r4", "r6"]),
            "main",
        );
        assert_eq!((p.total, p.current), (4, 1));
        assert_eq!(
            p.targets.iter().map(|t| t.run.as_str()).collect::<Vec<_>>(),
            ["r3", "r1"]
        );
        assert_eq!(p.targets[1].manifest_sha256, "d1");
        assert_eq!(p.targets[1].location, "s3://b/shop/r1/manifest.json");
        assert_eq!(p.unpinned, ["r6"]);
        assert!(!p.keys_current());
        let now = Utc::now();
        let c = keys_condition(&p, &RotationState::NoPreviousKey, Some(3), now);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PreviousKeyMissing")
        );
        assert!(c.message.contains("r6"), "{}", c.message);
        // Another storage's backups are not this policy's to re-key.
        assert_eq!(plan(&new, None, &runs, &kept(&["r1"]), "other").total, 0);
    }

    #[test]
    fn a_large_backlog_goes_in_jobs_of_bounded_size() {
        let runs: Vec<FinishedRun> = (0..(MAX_TARGETS as u32 + 3))
            .map(|i| run(&format!("r{i:02}"), i, Some(&["sha256:a"]), Some("d")))
            .collect();
        let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
        let kept: BTreeSet<String> = names.into_iter().collect();
        let p = plan(&["sha256:b".into()], None, &runs, &kept, "main");
        assert_eq!(p.targets.len(), MAX_TARGETS);
        assert_eq!(p.waiting, 3);
    }

    #[test]
    fn the_condition_says_current_only_when_every_backup_is() {
        let now = Utc::now();
        let current = RotationPlan {
            total: 2,
            current: 2,
            ..Default::default()
        };
        let c = keys_condition(&current, &RotationState::Current, Some(1), now);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "KeysCurrent")
        );
        let running = RotationPlan {
            total: 2,
            current: 0,
            targets: vec![RewrapTarget {
                run: "r".into(),
                location: "l".into(),
                manifest_sha256: "d".into(),
                rewrap: true,
                copies: Vec::new(),
            }],
            ..Default::default()
        };
        let c = keys_condition(
            &running,
            &RotationState::Running { job: "j".into() },
            Some(1),
            now,
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RotatingKeys")
        );
        let c = keys_condition(
            &running,
            &RotationState::Failed {
                job: "j".into(),
                detail: "boom".into(),
            },
            Some(1),
            now,
        );
        assert_eq!(c.reason, "KeyRotationFailed");
        assert!(c.message.contains("boom"));
    }

    fn summary(location: &str, before: &str, after: &str) -> RewrapSummary {
        RewrapSummary {
            location: location.into(),
            previous_manifest_sha256: before.into(),
            manifest_sha256: after.into(),
            data_key: "sha256:dk".into(),
            wrapped_for: WrappedFor {
                recipients: vec!["sha256:b".into()],
                kms_keys: Vec::new(),
            },
            duration_seconds: 0.1,
            not_rewrappable: None,
        }
    }

    #[test]
    fn reports_are_read_from_every_container_that_exited_zero() {
        let ok = Summary::from(summary("s3://b/shop/r1/manifest.json", "d1", "n1"));
        let msg = serde_json::to_string(&ok.to_value()).unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {
                "phase": "Failed",
                "initContainerStatuses": [
                    {"name": "rewrap-0", "ready": false, "restartCount": 0, "image": "i",
                     "imageID": "", "state": {"terminated": {"exitCode": 0, "message": msg}}},
                    {"name": "rewrap-1", "ready": false, "restartCount": 0, "image": "i",
                     "imageID": "", "state": {"terminated": {"exitCode": 13,
                        "message": "{\"status\":\"failed\",\"error\":\"x\"}"}}}
                ],
                "containerStatuses": [
                    {"name": "agent", "ready": false, "restartCount": 0, "image": "i",
                     "imageID": "", "state": {"waiting": {"reason": "PodInitializing"}}}
                ]
            }
        }))
        .unwrap();
        let reports = rewrap_reports(&[pod]);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].manifest_sha256, "n1");
    }

    #[test]
    fn a_report_updates_only_the_run_whose_recorded_digest_it_rewrote() {
        let runs = vec![
            run("r1", 1, Some(&["sha256:a"]), Some("d1")),
            run("r2", 2, Some(&["sha256:a"]), Some("d2")),
        ];
        let reports = vec![
            summary("s3://b/shop/r1/manifest.json", "d1", "n1"),
            // Stale: r2 records another digest (already updated, or replaced).
            summary("s3://b/shop/r2/manifest.json", "old", "n2"),
            // Another manifest.
            summary("s3://b/elsewhere/manifest.json", "d2", "n3"),
        ];
        let u = recorded_updates(&runs, &reports, None);
        assert_eq!(
            u,
            [RecordedUpdate {
                run: "r1".into(),
                manifest_sha256: "n1".into(),
                recipients: vec!["sha256:b".into()],
                kms_key_id: None,
                not_rewrappable: None,
            }]
        );
    }

    fn with_copy(mut r: FinishedRun, storage: &str, digest: &str) -> FinishedRun {
        let name = r.name.clone();
        r.artifact.as_deref_mut().unwrap().copy_manifests.push(
            crate::controller::common::run_cache::CopyManifest {
                storage: storage.into(),
                location: format!("s3://{storage}/shop/{name}/manifest.json"),
                manifest_sha256: digest.into(),
            },
        );
        r
    }

    #[test]
    fn a_run_is_current_only_when_its_copies_hold_the_re_wrapped_manifest_too() {
        let new = vec!["sha256:b".to_string()];
        let runs = vec![
            // Stale primary, its copy too: re-wrap then refresh the copy.
            with_copy(run("r1", 1, Some(&["sha256:a"]), Some("d1")), "dr", "d1"),
            // Primary re-wrapped (n2), the copy still holds the old manifest (d2).
            with_copy(run("r2", 2, Some(&["sha256:b"]), Some("n2")), "dr", "d2"),
            // Both current.
            with_copy(run("r3", 3, Some(&["sha256:b"]), Some("n3")), "dr", "n3"),
        ];
        let p = plan(&new, None, &runs, &kept(&["r1", "r2", "r3"]), "main");
        assert_eq!((p.total, p.current), (3, 1));
        let t: Vec<(&str, bool, Vec<&str>)> = p
            .targets
            .iter()
            .map(|t| {
                (
                    t.run.as_str(),
                    t.rewrap,
                    t.copies
                        .iter()
                        .map(|c| c.manifest_sha256.as_str())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(t, [("r2", false, vec!["d2"]), ("r1", true, vec!["d1"])]);
        assert!(!p.keys_current());
        // The containers of one Job are bounded: re-wraps and copy refreshes together.
        let many: Vec<FinishedRun> = (0..MAX_TARGETS as u32)
            .map(|i| {
                with_copy(
                    run(&format!("m{i}"), i, Some(&["sha256:a"]), Some("d")),
                    "dr",
                    "d",
                )
            })
            .collect();
        let names: BTreeSet<String> = many.iter().map(|r| r.name.clone()).collect();
        let p = plan(&new, None, &many, &names, "main");
        assert_eq!(p.targets.len(), MAX_TARGETS / 2);
        assert_eq!(p.waiting as usize, MAX_TARGETS - MAX_TARGETS / 2);
        assert!(
            p.targets
                .iter()
                .map(RewrapTarget::containers)
                .sum::<usize>()
                <= MAX_TARGETS
        );
    }

    #[test]
    fn a_copy_refresh_is_recorded_only_for_the_digest_the_run_records() {
        let runs = vec![with_copy(
            run("r1", 1, Some(&["sha256:b"]), Some("n1")),
            "dr",
            "d1",
        )];
        let report = |from: &str, to: &str, digest: &str| CopySummary {
            from: from.into(),
            location: to.into(),
            manifest_sha256: digest.into(),
            size_bytes: 0,
            sha256: Vec::new(),
            confirmed_by: Vec::new(),
            already_present: false,
            duration_seconds: 0.1,
        };
        let from = "s3://b/shop/r1/manifest.json";
        let to = "s3://dr/shop/r1/manifest.json";
        assert_eq!(
            copy_updates(&runs, &[report(from, to, "n1")]),
            [CopyUpdate {
                run: "r1".into(),
                storage: "dr".into(),
                manifest_sha256: "n1".into(),
            }]
        );
        // Another digest, another source or an unknown copy: nothing.
        assert!(copy_updates(&runs, &[report(from, to, "x")]).is_empty());
        assert!(copy_updates(&runs, &[report("s3://b/other/manifest.json", to, "n1")]).is_empty());
        assert!(copy_updates(&runs, &[report(from, "s3://elsewhere/m.json", "n1")]).is_empty());
        // Already recorded: nothing more.
        let done = vec![with_copy(
            run("r1", 1, Some(&["sha256:b"]), Some("n1")),
            "dr",
            "n1",
        )];
        assert!(copy_updates(&done, &[report(from, to, "n1")]).is_empty());
    }

    fn direct(mut r: FinishedRun) -> FinishedRun {
        r.artifact.as_deref_mut().unwrap().direct_encryption = true;
        r
    }

    #[test]
    fn backups_written_before_envelope_encryption_are_counted_apart_and_start_no_job() {
        let new = vec!["sha256:b".to_string()];
        let runs = vec![
            run("r1", 1, Some(&["sha256:a"]), Some("d1")),
            direct(run("r2", 2, Some(&["sha256:a"]), Some("d2"))),
            direct(run("r3", 3, Some(&["sha256:a"]), Some("d3"))),
            // Written the old way but for the current recipients: nothing to do, current.
            direct(run("r4", 4, Some(&["sha256:b"]), Some("d4"))),
        ];
        let all = kept(&["r1", "r2", "r3", "r4"]);
        let p = plan(&new, None, &runs, &all, "main");
        assert_eq!((p.total, p.current), (4, 1));
        assert_eq!(
            p.targets.iter().map(|t| t.run.as_str()).collect::<Vec<_>>(),
            ["r1"]
        );
        assert_eq!(p.not_rewrappable, ["r3", "r2"]);
        // While r1 is re-wrapped the condition says so and names the others.
        let now = Utc::now();
        let c = keys_condition(
            &p,
            &RotationState::Running { job: "j".into() },
            Some(1),
            now,
        );
        assert_eq!(c.reason, "RotatingKeys");
        assert!(
            c.message.contains("cannot be re-wrapped: r3, r2"),
            "{}",
            c.message
        );

        // Once the others are done: no Job (no target), KeysCurrent False with its own
        // reason, a message that says how many, who can still read them and what to do.
        let done = plan(&new, None, &runs[1..], &all, "main");
        assert!(done.targets.is_empty() && done.keys_current(), "{done:?}");
        let c = keys_condition(&done, &RotationState::Current, Some(2), now);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "BackupsNotRewrappable")
        );
        for needed in [
            "1 of 3 retained backups are wrapped for the policy's keys",
            "2 were written before envelope encryption",
            "r3, r2",
            "readable only with the previous identity until retention removes them",
            "take a new backup and delete these runs",
        ] {
            assert!(c.message.contains(needed), "{needed}: {}", c.message);
        }
        let policy: BackupPolicy = serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: p, namespace: n}\nspec: {source: {postgres: {host: h, database: d, user: u, passwordSecretRef: {name: s, key: p}}}, storageRef: {name: main}, schedule: '0 2 * * *', encryption: {recipientsSecretRef: {name: r, key: k}}}\n",
        )
        .unwrap();
        let keys = keys_status(&new, &policy, "ks", &done, None);
        assert_eq!((keys.rewrapped, keys.total), (1, 3));
        assert_eq!(keys.not_rewrappable, Some(2));
        assert_eq!(
            keys_status(&new, &policy, "ks", &p, None).not_rewrappable,
            Some(2)
        );
        let all_current = plan(&new, None, &runs[3..], &all, "main");
        assert_eq!(
            keys_status(&new, &policy, "ks", &all_current, None).not_rewrappable,
            None
        );
    }

    #[test]
    fn a_not_rewrappable_report_is_recorded_once() {
        let runs = vec![run("r1", 1, Some(&["sha256:a"]), Some("d1"))];
        let mut s = summary("s3://b/shop/r1/manifest.json", "d1", "d1");
        s.not_rewrappable = Some("age-x25519".into());
        s.wrapped_for.recipients = vec!["sha256:a".into()];
        let u = recorded_updates(&runs, &[s.clone()], None);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].not_rewrappable.as_deref(), Some("age-x25519"));
        assert_eq!(u[0].manifest_sha256, "d1");
        assert_eq!(u[0].recipients, ["sha256:a"]);
        // Recorded: the same report (same digest) changes nothing any more.
        let recorded = vec![direct(run("r1", 1, Some(&["sha256:a"]), Some("d1")))];
        assert!(recorded_updates(&recorded, &[s], None).is_empty());
    }

    fn with_kms(mut r: FinishedRun, key: Option<&str>) -> FinishedRun {
        r.artifact.as_deref_mut().unwrap().kms_key_id = key.map(str::to_string);
        r
    }

    #[test]
    fn a_changed_kms_key_id_makes_backups_stale_and_unrecorded_ones_are_named() {
        let age = vec!["sha256:a".to_string()];
        let runs = vec![
            with_kms(
                run("r1", 1, Some(&["sha256:a"]), Some("d1")),
                Some("alias/k1"),
            ),
            with_kms(
                run("r2", 2, Some(&["sha256:a"]), Some("d2")),
                Some("alias/k2"),
            ),
            // Recorded by an older operator: which KMS key wraps it is unknown.
            with_kms(run("r3", 3, Some(&["sha256:a"]), Some("d3")), None),
        ];
        let all = kept(&["r1", "r2", "r3"]);
        // Same recipients, same key as written: current.
        let p = plan(&age, Some("alias/k2"), &runs[1..2], &all, "main");
        assert!(p.keys_current() && p.current == 1, "{p:?}");
        // The policy's key changed from k1 to k2: r1 is stale; r3 unknown, re-wrapped too.
        let p = plan(&age, Some("alias/k2"), &runs, &all, "main");
        assert_eq!((p.total, p.current), (3, 1));
        assert_eq!(
            p.targets.iter().map(|t| t.run.as_str()).collect::<Vec<_>>(),
            ["r3", "r1"]
        );
        assert_eq!(p.unknown_kms, ["r3"]);
        let c = keys_condition(&p, &RotationState::NoPreviousKey, Some(1), Utc::now());
        assert_eq!(c.status, "False");
        assert!(
            c.message.contains("record no KMS key") && c.message.contains("r3"),
            "{}",
            c.message
        );
        // Compared as written: an ARN of the same key is another id.
        let p = plan(
            &age,
            Some("arn:aws:kms:r:1:alias/k2"),
            &runs[1..2],
            &all,
            "main",
        );
        assert_eq!(p.targets.len(), 1);
        // KMS dropped from the policy: a KMS-wrapped backup is re-wrapped without it.
        let p = plan(&age, None, &runs, &all, "main");
        assert_eq!(p.targets.len(), 2);
        assert!(p.unknown_kms.is_empty());
    }

    #[test]
    fn a_report_with_a_kms_wrap_records_the_policys_key_id_as_written() {
        let runs = vec![with_kms(
            run("r1", 1, Some(&[]), Some("d1")),
            Some("alias/k1"),
        )];
        let mut s = summary("s3://b/shop/r1/manifest.json", "d1", "n1");
        s.wrapped_for = WrappedFor {
            recipients: Vec::new(),
            kms_keys: vec!["arn:aws:kms:eu-west-1:1:key/2".into()],
        };
        let u = recorded_updates(&runs, &[s.clone()], Some("alias/k2"));
        assert_eq!(u[0].kms_key_id.as_deref(), Some("alias/k2"));
        // No KMS wrap in the report (KMS dropped): nothing recorded.
        s.wrapped_for.kms_keys.clear();
        s.wrapped_for.recipients = vec!["sha256:b".into()];
        assert_eq!(
            recorded_updates(&runs, &[s], Some("alias/k2"))[0].kms_key_id,
            None
        );
    }
}
