//! Which copies of a retention-expired run are deleted, and whether deletion may start (pure).
//!
//! A run goes with every copy, or not at all: every confirmed copy is checked first (its Object
//! Lock expired, its BackupStorage present and usable, the copy where the operator computes it
//! and vouched for by a digest), and one copy that must stay keeps the run and all its copies, so
//! an unreachable storage never leaves a run half pruned. Copies on a filesystem (PVC) storage
//! are deleted by a prune Job, those on S3 by the operator; the Jobs go first, the S3 copies once
//! no filesystem copy is left (a Job is what may take long or fail).

use chrono::{DateTime, Utc};

/// A confirmed copy's BackupStorage as retention sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyStore {
    /// No such BackupStorage.
    Missing,
    /// It exists but cannot be used now (why: not Ready, credentials refused, no backend).
    Unusable(String),
    /// An S3 bucket: the operator deletes the copy itself.
    S3,
    /// A claim only a pod can mount: a prune Job deletes the copy.
    Filesystem,
}

/// One confirmed copy of the run, with what retention knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFacts {
    /// The BackupStorage holding it.
    pub storage: String,
    /// Its Object Lock retain-until date.
    pub retain_until: Option<DateTime<Utc>>,
    /// Its storage.
    pub store: CopyStore,
    /// Where the operator computes the run's copy on that storage (`(key, location)`), or why
    /// it cannot (`None` while the storage is missing).
    pub expected: Option<Result<(String, String), String>>,
    /// What the run's status records for the copy: its key and location.
    pub recorded: (String, Option<String>),
    /// The copy's confirmed manifest digest.
    pub digest: Option<String>,
}

/// How one copy is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMethod {
    /// The operator deletes the S3 objects, manifest first.
    Delete,
    /// A prune Job (`agent prune`) deletes the files from the claim, manifest first.
    Job,
}

/// One copy to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPrune {
    /// Its storage.
    pub storage: String,
    /// How.
    pub method: PruneMethod,
    /// The copy's manifest key on that storage (as computed by the operator).
    pub key: String,
    /// The copy's manifest location (as computed by the operator).
    pub location: String,
    /// The digest its manifest must hash to.
    pub digest: String,
}

/// The copies of one run to delete: the prune Jobs first, then the S3 copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyPrunePlan {
    /// Copies on filesystem storages (prune Jobs).
    pub jobs: Vec<CopyPrune>,
    /// Copies on S3 storages, deleted once no filesystem copy is left.
    pub deletes: Vec<CopyPrune>,
}

/// What became of a run's copies this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDeletion {
    /// None is left: the run's own artifact may go.
    Deleted,
    /// Prune Jobs are deleting copies (or one failed and is tried again): look again then.
    InProgress(DateTime<Utc>),
    /// A copy must stay (why), and the run with it.
    Refused(String),
}

/// Plans the deletion of a run's confirmed copies: every one of them, or (`Err(why)`, every
/// reason a copy must stay) none.
pub fn plan_copy_prunes(copies: &[CopyFacts], now: DateTime<Utc>) -> Result<CopyPrunePlan, String> {
    let mut plan = CopyPrunePlan::default();
    let mut refusals = Vec::new();
    for c in copies {
        match check(c, now) {
            Ok(p) if p.method == PruneMethod::Job => plan.jobs.push(p),
            Ok(p) => plan.deletes.push(p),
            Err(why) => refusals.push(why),
        }
    }
    if refusals.is_empty() {
        Ok(plan)
    } else {
        Err(refusals.join("; "))
    }
}

fn check(c: &CopyFacts, now: DateTime<Utc>) -> Result<CopyPrune, String> {
    let storage = &c.storage;
    if let Some(until) = c.retain_until.filter(|u| *u > now) {
        return Err(format!(
            "the copy on storage {storage} is object-locked until {until}"
        ));
    }
    let method = match &c.store {
        CopyStore::Missing => {
            return Err(format!(
                "BackupStorage {storage} of the copy does not exist"
            ));
        }
        CopyStore::Unusable(why) => {
            return Err(format!(
                "the copy on storage {storage} cannot be deleted now: {why}"
            ));
        }
        CopyStore::S3 => PruneMethod::Delete,
        CopyStore::Filesystem => PruneMethod::Job,
    };
    let (key, location) = match &c.expected {
        Some(Ok(e)) => e.clone(),
        Some(Err(e)) => {
            return Err(format!(
                "cannot compute where the copy on storage {storage} is: {e}"
            ));
        }
        None => {
            return Err(format!(
                "BackupStorage {storage} of the copy does not exist"
            ));
        }
    };
    if c.recorded.0 != key || c.recorded.1.as_deref() != Some(location.as_str()) {
        return Err(format!(
            "the copy on storage {storage} is recorded at {}, but this run's copy is at {location}: nothing there is deleted",
            c.recorded.1.as_deref().unwrap_or(&c.recorded.0)
        ));
    }
    let Some(digest) = c.digest.clone().filter(|d| d.len() == 64) else {
        return Err(format!(
            "the copy on storage {storage} records no manifest digest, so what its manifest lists cannot be trusted"
        ));
    };
    Ok(CopyPrune {
        storage: storage.clone(),
        method,
        key,
        location,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn facts(storage: &str, store: CopyStore) -> CopyFacts {
        let (key, location) = match store {
            CopyStore::Filesystem => (
                "dumps/shop/nightly/r1/manifest.json".to_string(),
                "file:///backup/dumps/shop/nightly/r1/manifest.json".to_string(),
            ),
            _ => (
                "dr/shop/nightly/r1/manifest.json".to_string(),
                format!("s3://{storage}/dr/shop/nightly/r1/manifest.json"),
            ),
        };
        CopyFacts {
            storage: storage.into(),
            retain_until: None,
            store,
            expected: Some(Ok((key.clone(), location.clone()))),
            recorded: (key, Some(location)),
            digest: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn prune_jobs_go_before_the_s3_deletions() {
        let now = at("2026-12-01T00:00:00Z");
        let plan = plan_copy_prunes(
            &[
                facts("dr", CopyStore::S3),
                facts("local", CopyStore::Filesystem),
            ],
            now,
        )
        .unwrap();
        assert_eq!(plan.jobs.len(), 1);
        assert_eq!(plan.jobs[0].storage, "local");
        assert_eq!(plan.jobs[0].method, PruneMethod::Job);
        assert_eq!(
            plan.jobs[0].location,
            "file:///backup/dumps/shop/nightly/r1/manifest.json"
        );
        assert_eq!(plan.deletes.len(), 1);
        assert_eq!(plan.deletes[0].storage, "dr");
        assert_eq!(plan.deletes[0].method, PruneMethod::Delete);
        assert_eq!(plan.deletes[0].digest, "ab".repeat(32));
        assert_eq!(plan_copy_prunes(&[], now), Ok(CopyPrunePlan::default()));
    }

    #[test]
    fn one_copy_that_must_stay_keeps_every_copy() {
        let now = at("2026-12-01T00:00:00Z");
        let ok = facts("dr", CopyStore::S3);
        let cases: Vec<(CopyFacts, &str)> = vec![
            (
                CopyFacts {
                    retain_until: Some(at("2026-12-02T00:00:00Z")),
                    ..facts("local", CopyStore::Filesystem)
                },
                "object-locked until 2026-12-02",
            ),
            (
                CopyFacts {
                    expected: None,
                    ..facts("gone", CopyStore::Missing)
                },
                "BackupStorage gone of the copy does not exist",
            ),
            (
                facts("far", CopyStore::Unusable("not Ready (Unreachable)".into())),
                "storage far cannot be deleted now: not Ready (Unreachable)",
            ),
            (
                CopyFacts {
                    expected: Some(Err("no prefix".into())),
                    ..facts("local", CopyStore::Filesystem)
                },
                "cannot compute where the copy on storage local is: no prefix",
            ),
            (
                CopyFacts {
                    recorded: ("elsewhere/manifest.json".into(), None),
                    ..facts("local", CopyStore::Filesystem)
                },
                "recorded at elsewhere/manifest.json",
            ),
            (
                CopyFacts {
                    digest: None,
                    ..facts("local", CopyStore::Filesystem)
                },
                "records no manifest digest",
            ),
        ];
        for (bad, why) in cases {
            // Whatever the order, nothing is planned.
            for copies in [vec![ok.clone(), bad.clone()], vec![bad.clone(), ok.clone()]] {
                let refused = plan_copy_prunes(&copies, now).unwrap_err();
                assert!(refused.contains(why), "{refused:?} lacks {why:?}");
            }
        }
    }

    #[test]
    fn an_expired_lock_no_longer_keeps_the_copy_and_every_reason_is_given() {
        let now = at("2026-12-01T00:00:00Z");
        let expired = CopyFacts {
            retain_until: Some(at("2026-11-30T00:00:00Z")),
            ..facts("dr", CopyStore::S3)
        };
        assert_eq!(plan_copy_prunes(&[expired], now).unwrap().deletes.len(), 1);
        let refused = plan_copy_prunes(
            &[
                facts("a", CopyStore::Unusable("not Ready".into())),
                facts("b", CopyStore::Unusable("not Ready".into())),
            ],
            now,
        )
        .unwrap_err();
        assert!(
            refused.contains("storage a") && refused.contains("storage b"),
            "{refused}"
        );
    }
}
