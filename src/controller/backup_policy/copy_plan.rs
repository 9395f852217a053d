//! Which backups to copy to a policy's secondary storages next, and how far each lags (pure).
//!
//! Every succeeded run whose artifact retention keeps gets a copy on every secondary storage.
//! Runs waiting for a copy are taken oldest first, one at a time per storage (a storage that was
//! down catches up in order, never in a storm), and the lag of a storage is the age of the oldest
//! run still waiting. The recovery point of a copy is the completion time of the newest run
//! confirmed there.

use chrono::{DateTime, Utc};

use crate::api::backup_storage::S3Storage;

/// A succeeded run as the copy plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCandidate {
    /// The BackupRun's name.
    pub name: String,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
    /// Storages holding a confirmed copy of it.
    pub copied_to: Vec<String>,
    /// Whether retention keeps its artifact (a run about to be pruned is not copied).
    pub kept: bool,
}

/// One secondary storage and whether copies to it can be made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secondary {
    /// The BackupStorage's name.
    pub name: String,
    /// `Err(why)` when it cannot take copies now (missing, not ready, a copy backing off).
    pub usable: Result<(), String>,
}

/// What to do for one secondary storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePlan {
    /// The storage.
    pub storage: String,
    /// The run to copy now (the oldest waiting), if the storage is usable.
    pub next: Option<String>,
    /// Runs waiting for a copy.
    pub pending: u32,
    /// Age of the oldest waiting run in seconds (0 when none waits).
    pub lag_seconds: i64,
    /// The newest run confirmed there and when it completed (the copy's recovery point).
    pub last_copied: Option<(String, DateTime<Utc>)>,
    /// Why copies wait, if they do.
    pub blocked: Option<String>,
}

/// Plans the copies of `runs` (succeeded runs of the policy, any order) to `secondaries`.
pub fn plan_copies(
    runs: &[CopyCandidate],
    secondaries: &[Secondary],
    now: DateTime<Utc>,
) -> Vec<StoragePlan> {
    let mut ordered: Vec<&CopyCandidate> = runs.iter().collect();
    ordered.sort_by(|a, b| {
        a.completed_at
            .cmp(&b.completed_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    secondaries
        .iter()
        .map(|s| {
            let has = |r: &CopyCandidate| r.copied_to.iter().any(|c| c == &s.name);
            let waiting: Vec<&&CopyCandidate> =
                ordered.iter().filter(|r| r.kept && !has(r)).collect();
            let last_copied = ordered
                .iter()
                .rev()
                .find(|r| has(r))
                .map(|r| (r.name.clone(), r.completed_at));
            let lag_seconds = waiting
                .first()
                .map(|r| (now - r.completed_at).num_seconds().max(0))
                .unwrap_or(0);
            StoragePlan {
                storage: s.name.clone(),
                next: match &s.usable {
                    Ok(()) => waiting.first().map(|r| r.name.clone()),
                    Err(_) => None,
                },
                pending: waiting.len() as u32,
                lag_seconds,
                last_copied,
                blocked: s.usable.clone().err().filter(|_| !waiting.is_empty()),
            }
        })
        .collect()
}

/// How a copy is made between two storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Both are buckets on the same S3 endpoint, reached with the same credentials: the
    /// operator asks S3 to copy (no bytes pass through the cluster).
    ServerSideCopy,
    /// Anything else: a copy Job streams object to object.
    CopyJob,
}

impl CopyMethod {
    /// The name recorded in `status.artifact.copies[].method`.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::ServerSideCopy => "ServerSideCopy",
            CopyMethod::CopyJob => "CopyJob",
        }
    }
}

/// The largest object S3's `CopyObject` copies in one request (5 GiB).
pub const SERVER_SIDE_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// How to copy from `primary` to `secondary` a backup whose artifact is `artifact_bytes` long:
/// a server-side copy needs the same endpoint, region, addressing style and credentials Secret
/// (one identity must read the source and write the destination) and an artifact `CopyObject`
/// takes in one request; anything larger goes through a copy Job.
pub fn copy_method(
    primary: Option<&S3Storage>,
    secondary: Option<&S3Storage>,
    artifact_bytes: u64,
) -> CopyMethod {
    match (primary, secondary) {
        (Some(a), Some(b))
            if artifact_bytes <= SERVER_SIDE_COPY_LIMIT
                && a.endpoint == b.endpoint
                && a.region == b.region
                && a.force_path_style == b.force_path_style
                && a.credentials_secret_ref.as_ref().map(|r| &r.name)
                    == b.credentials_secret_ref.as_ref().map(|r| &r.name) =>
        {
            CopyMethod::ServerSideCopy
        }
        _ => CopyMethod::CopyJob,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::common::testing::t;

    fn run(name: &str, done: &str, copied_to: &[&str]) -> CopyCandidate {
        CopyCandidate {
            name: name.into(),
            completed_at: t(done),
            copied_to: copied_to.iter().map(|s| s.to_string()).collect(),
            kept: true,
        }
    }

    fn ok(name: &str) -> Secondary {
        Secondary {
            name: name.into(),
            usable: Ok(()),
        }
    }

    #[test]
    fn the_oldest_missing_copy_goes_first_per_storage_and_the_lag_is_its_age() {
        let now = t("2026-11-10T12:00:00Z");
        let runs = vec![
            run("r3", "2026-11-10T02:00:00Z", &[]),
            run("r1", "2026-11-08T02:00:00Z", &["dr", "eu"]),
            run("r2", "2026-11-09T02:00:00Z", &["eu"]),
        ];
        let plans = plan_copies(&runs, &[ok("dr"), ok("eu")], now);
        assert_eq!(plans[0].storage, "dr");
        assert_eq!(plans[0].next.as_deref(), Some("r2"));
        assert_eq!(plans[0].pending, 2);
        assert_eq!(plans[0].lag_seconds, 34 * 3600);
        assert_eq!(
            plans[0].last_copied,
            Some(("r1".into(), t("2026-11-08T02:00:00Z")))
        );
        assert_eq!(plans[1].next.as_deref(), Some("r3"));
        assert_eq!(plans[1].pending, 1);
        assert_eq!(plans[1].lag_seconds, 10 * 3600);
        assert_eq!(plans[1].last_copied.as_ref().unwrap().0, "r2");
        assert!(plans.iter().all(|p| p.blocked.is_none()));
    }

    #[test]
    fn an_unusable_storage_copies_nothing_but_still_shows_its_lag_and_why() {
        let now = t("2026-11-10T12:00:00Z");
        let runs = vec![run("r1", "2026-11-10T02:00:00Z", &[])];
        let down = Secondary {
            name: "dr".into(),
            usable: Err("BackupStorage dr is not Ready".into()),
        };
        let plans = plan_copies(&runs, std::slice::from_ref(&down), now);
        assert_eq!(plans[0].next, None);
        assert_eq!(plans[0].pending, 1);
        assert_eq!(plans[0].lag_seconds, 10 * 3600);
        assert_eq!(
            plans[0].blocked.as_deref(),
            Some("BackupStorage dr is not Ready")
        );
        // Nothing waiting: nothing to report as blocked, no lag.
        let plans = plan_copies(&[run("r1", "2026-11-10T02:00:00Z", &["dr"])], &[down], now);
        assert_eq!((plans[0].pending, plans[0].lag_seconds), (0, 0));
        assert_eq!(plans[0].blocked, None);
    }

    #[test]
    fn a_run_retention_drops_is_not_copied_and_does_not_count_as_lag() {
        let now = t("2026-11-10T12:00:00Z");
        let mut old = run("r1", "2026-11-01T02:00:00Z", &[]);
        old.kept = false;
        let plans = plan_copies(
            &[old, run("r2", "2026-11-10T11:00:00Z", &[])],
            &[ok("dr")],
            now,
        );
        assert_eq!(plans[0].next.as_deref(), Some("r2"));
        assert_eq!((plans[0].pending, plans[0].lag_seconds), (1, 3600));
        // No runs, no secondaries: nothing.
        assert!(plan_copies(&[], &[], now).is_empty());
        let empty = plan_copies(&[], &[ok("dr")], now);
        assert_eq!((empty[0].next.clone(), empty[0].pending), (None, 0));
    }

    fn s3(yaml: &str) -> S3Storage {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_server_side_copy_needs_the_same_endpoint_region_style_and_credentials() {
        let a = s3(
            "{bucket: a, region: r, endpoint: 'http://s3', forcePathStyle: true, credentialsSecretRef: {name: c}}",
        );
        let b = s3(
            "{bucket: b, region: r, endpoint: 'http://s3', forcePathStyle: true, credentialsSecretRef: {name: c}}",
        );
        assert_eq!(
            copy_method(Some(&a), Some(&b), 1024),
            CopyMethod::ServerSideCopy
        );
        assert_eq!(
            copy_method(Some(&a), Some(&b), SERVER_SIDE_COPY_LIMIT + 1),
            CopyMethod::CopyJob,
            "over 5 GiB CopyObject refuses: a Job copies it"
        );
        for other in [
            "{bucket: b, region: r, endpoint: 'http://other', forcePathStyle: true, credentialsSecretRef: {name: c}}",
            "{bucket: b, region: x, endpoint: 'http://s3', forcePathStyle: true, credentialsSecretRef: {name: c}}",
            "{bucket: b, region: r, endpoint: 'http://s3', credentialsSecretRef: {name: c}}",
            "{bucket: b, region: r, endpoint: 'http://s3', forcePathStyle: true, credentialsSecretRef: {name: d}}",
            "{bucket: b, region: r, endpoint: 'http://s3', forcePathStyle: true}",
        ] {
            assert_eq!(
                copy_method(Some(&a), Some(&s3(other)), 1024),
                CopyMethod::CopyJob,
                "{other}"
            );
        }
        assert_eq!(copy_method(None, Some(&b), 1024), CopyMethod::CopyJob);
        assert_eq!(copy_method(Some(&a), None, 1024), CopyMethod::CopyJob);
        assert_eq!(CopyMethod::CopyJob.as_str(), "CopyJob");
    }
}
