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
use crate::contract::{RewrapSummary, Succeeded, Summary};
use crate::controller::common::reason::Reason;
use crate::controller::common::run_cache::FinishedRun;
use crate::jobs::rotation_job::{MAX_TARGETS, RewrapTarget};

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
        if have == desired && kms_current {
            out.current += 1;
            continue;
        }
        match (&artifact.manifest_key, &artifact.manifest_sha256) {
            (Some(location), Some(digest)) => stale.push((
                run,
                RewrapTarget {
                    run: run.name.clone(),
                    location: location.clone(),
                    manifest_sha256: digest.clone(),
                },
            )),
            _ => out.unpinned.push(run.name.clone()),
        }
    }
    // Newest first: the backups most likely to be restored are re-keyed first, and backups
    // that cannot be re-wrapped (written before envelope encryption, hence the oldest) come
    // last, so their failing re-wrap never holds the others back.
    stale.sort_by(|a, b| (b.0.completed_at, &b.0.name).cmp(&(a.0.completed_at, &a.0.name)));
    out.waiting = stale.len().saturating_sub(MAX_TARGETS) as u32;
    out.targets = stale
        .into_iter()
        .take(MAX_TARGETS)
        .map(|(_, t)| t)
        .collect();
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
    let unpinned = format!("{unknown}{unpinned}");
    let (ok, reason, message) = match state {
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
                 spec.encryption.rotation to re-wrap them{unpinned}",
                p.total
            ),
        ),
        RotationState::Running { job } => (
            false,
            Reason::RotatingKeys,
            format!(
                "Job {job} re-wraps {} backups; {} of {} are wrapped for the policy's keys{unpinned}",
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
                 again{unpinned}",
                p.current, p.total
            ),
        ),
    };
    condition(KEYS_CURRENT, ok, reason.as_str(), message, generation, now)
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
        rotation_job,
    }
}

/// The re-wrap summaries in a rotation Job's Pods: the termination message of every container
/// (init containers included) that exited 0.
pub fn rewrap_reports(pods: &[Pod]) -> Vec<RewrapSummary> {
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
            Ok(Summary::Succeeded(Succeeded::Rewrap(s))) => Some(s),
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
                })
            })?;
            Some(RecordedUpdate {
                run: run.name.clone(),
                manifest_sha256: r.manifest_sha256.clone(),
                recipients: r.wrapped_for.recipients.clone(),
                kms_key_id: kms_key_id
                    .filter(|_| !r.wrapped_for.kms_keys.is_empty())
                    .map(str::to_string),
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
            }]
        );
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
