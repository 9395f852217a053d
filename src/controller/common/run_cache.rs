//! The operator's cache of BackupRuns, in two parts:
//!
//! - **active** runs (new, Pending, Running), whole, in a kube reflector [`Store`]: the run
//!   controller reconciles them and the fair backup queue reads them;
//! - **finished** runs (Succeeded, Failed) as compact [`FinishedRun`] records, indexed by their
//!   policy: the policy side (status, retention, run history, RPO, automatic validations) reads
//!   them.
//!
//! A finished run is history: nothing in the operator writes it again, and the policy side
//! reads only its name, outcome, completion time, pin and artifact location. With 10,000s of
//! runs in a cluster, keeping those as typed objects (~1.3 KB each) was half of the operator's
//! memory. A record is kept packed ([`Packed`]: the record's fields serialized with `postcard`
//! into one allocation, ≈ 250 bytes for a typical succeeded run, where the record as Rust
//! values takes ≈ 550 bytes in seven allocations) and unpacked when a policy's runs are read.
//! Whoever needs a finished run in full (restores, validations) reads it from the API.
//!
//! [`RunCacheWriter::apply`] takes the BackupRun watch's events and keeps both parts in step,
//! including the atomic swap of a re-list.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::api::backup_run::is_pinned;
use crate::api::common::time_to_chrono;
use crate::api::{BackupRun, BackupRunPhase};

/// What the policy side knows of a finished BackupRun.
///
/// (Serialized only into the cache's packed records, [`Packed`]: `name` must stay the first
/// field, which [`Packed::name`] reads without unpacking the rest.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishedRun {
    pub name: String,
    /// Succeeded (else Failed).
    pub succeeded: bool,
    /// `status.completionTime`.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Carries the pin label: retention never deletes it.
    pub pinned: bool,
    /// Created by the operator's schedule (`status.scheduled`, written only by the operator).
    pub scheduled: bool,
    /// A failed run's reason and message (the policy's `lastFailedRun`).
    pub failure: Option<Box<Failure>>,
    /// Where the artifact is (retention deletes it, validations restore it).
    pub artifact: Option<Box<ArtifactRef>>,
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// Where a run's artifact is, and how long Object Lock keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub storage: String,
    /// Bytes stored (each copy holds the same bytes).
    pub size_bytes: u64,
    pub key: String,
    pub manifest_key: Option<String>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub retain_until: Option<DateTime<Utc>>,
    /// Confirmed copies on secondary storages: (storage, Object Lock retain-until).
    pub copies: Vec<(String, Option<DateTime<Utc>>)>,
    /// The recorded digest of the manifest (`status.artifact.manifestSha256`).
    pub manifest_sha256: Option<String>,
    /// Fingerprints of the age recipients the data key is wrapped for (`None`: unencrypted).
    pub recipients: Option<Vec<String>>,
    /// The KMS key id the data key is wrapped by, as recorded (`None`: no KMS wrap, or not
    /// recorded by an older operator).
    pub kms_key_id: Option<String>,
    /// Confirmed copies whose manifest location and digest are recorded (what a key rotation
    /// refreshes after re-wrapping the primary's manifest).
    pub copy_manifests: Vec<CopyManifest>,
    /// Recorded as written before envelope encryption (`encryption.scheme: age-x25519`): its
    /// artifacts are encrypted straight to the recipients, no re-wrap can re-key it.
    pub direct_encryption: bool,
}

/// A confirmed copy's manifest, as `status.artifact.copies` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyManifest {
    /// The secondary BackupStorage.
    pub storage: String,
    /// The copy's manifest (`s3://…`, `file:///…`).
    pub location: String,
    /// Its recorded digest: equal to the run's `manifestSha256` unless the primary's manifest
    /// was re-wrapped since.
    pub manifest_sha256: String,
}

impl ArtifactRef {
    /// The latest retain-until over the artifact and its copies: nothing of the run may be
    /// deleted before it.
    pub fn latest_retain_until(&self) -> Option<DateTime<Utc>> {
        self.copies
            .iter()
            .filter_map(|(_, t)| *t)
            .chain(self.retain_until)
            .max()
    }
}

impl FinishedRun {
    /// The record of `run` if it is finished and not being deleted.
    pub fn from_run(run: &BackupRun) -> Option<Self> {
        if run.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = run.status.as_ref()?;
        let succeeded = match status.phase? {
            BackupRunPhase::Succeeded => true,
            BackupRunPhase::Failed => false,
            BackupRunPhase::Pending | BackupRunPhase::Running => return None,
        };
        Some(FinishedRun {
            name: run.name_any(),
            succeeded,
            completed_at: status.completion_time.as_ref().map(time_to_chrono),
            pinned: is_pinned(run),
            scheduled: status.scheduled == Some(true),
            failure: (!succeeded).then(|| {
                Box::new(Failure {
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                })
            }),
            artifact: status.artifact.as_ref().map(|a| {
                Box::new(ArtifactRef {
                    storage: a.storage.clone(),
                    size_bytes: a.size_bytes,
                    key: a.key.clone(),
                    manifest_key: a.manifest_key.clone(),
                    retain_until: a.retain_until.as_ref().map(time_to_chrono),
                    copies: a
                        .copies
                        .iter()
                        .filter(|c| c.confirmed)
                        .map(|c| {
                            (
                                c.storage.clone(),
                                c.retain_until.as_ref().map(time_to_chrono),
                            )
                        })
                        .collect(),
                    copy_manifests: a
                        .copies
                        .iter()
                        .filter(|c| c.confirmed)
                        .filter_map(|c| {
                            Some(CopyManifest {
                                storage: c.storage.clone(),
                                location: c.location.clone()?,
                                manifest_sha256: c
                                    .manifest_sha256
                                    .clone()
                                    .filter(|d| !d.is_empty())?,
                            })
                        })
                        .collect(),
                    manifest_sha256: a.manifest_sha256.clone().filter(|d| !d.is_empty()),
                    recipients: a.encryption.as_ref().map(|e| e.recipients.clone()),
                    kms_key_id: a.encryption.as_ref().and_then(|e| e.kms_key_id.clone()),
                    direct_encryption: a.encryption.as_ref().and_then(|e| e.scheme.as_deref())
                        == Some(crate::contract::manifest::DIRECT_ENCRYPTION_SCHEME),
                })
            }),
        })
    }

    pub fn phase(&self) -> BackupRunPhase {
        if self.succeeded {
            BackupRunPhase::Succeeded
        } else {
            BackupRunPhase::Failed
        }
    }
}

/// What a policy's kept runs hold per storage (the primary storage and each confirmed copy's):
/// (bytes, artifacts). `always` storages appear even with nothing on them.
pub fn stored_by_storage(
    runs: &[FinishedRun],
    always: &[&str],
) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out: std::collections::BTreeMap<String, (u64, u64)> =
        always.iter().map(|s| (s.to_string(), (0, 0))).collect();
    for a in runs
        .iter()
        .filter(|r| r.succeeded)
        .filter_map(|r| r.artifact.as_ref())
    {
        let storages =
            std::iter::once(a.storage.as_str()).chain(a.copies.iter().map(|(s, _)| s.as_str()));
        for storage in storages {
            let e = out.entry(storage.to_string()).or_default();
            e.0 += a.size_bytes;
            e.1 += 1;
        }
    }
    out
}

/// A [`FinishedRun`] as the cache keeps it: its fields serialized with `postcard` (a stable,
/// documented wire format: a struct is its fields in order, strings length-prefixed, integers
/// as varints) into one allocation sized to fit.
///
/// At 100,000 runs the record as Rust values (the struct, its name, a boxed artifact reference
/// of ~240 bytes of mostly empty options and lists, and each string in its own allocation) was
/// the largest part of the operator's heap. Unpacking allocates what a clone of the record did
/// before, and only a policy's own runs are unpacked when it is reconciled.
#[derive(Clone, Debug)]
pub struct Packed(Box<[u8]>);

/// A record that could not be packed or unpacked: a bug in the record's serde attributes, never
/// in the data (every field is a string, number, time, option or list).
#[derive(Debug, thiserror::Error)]
#[error("finished-run record not packable: {0}")]
pub struct PackError(#[from] postcard::Error);

impl Packed {
    /// The record, with its manifest location written relative to its artifact key
    /// ([`ManifestKey`]) after it.
    pub fn pack(record: &FinishedRun) -> Result<Self, PackError> {
        let mut record = record.clone();
        let manifest = record.artifact.as_mut().and_then(|a| {
            a.manifest_key
                .take()
                .map(|m| ManifestKey::relative_to(&a.key, m))
        });
        Ok(Packed(
            postcard::to_allocvec(&(record, manifest))?.into_boxed_slice(),
        ))
    }

    pub fn unpack(&self) -> Result<FinishedRun, PackError> {
        let (mut record, manifest): (FinishedRun, Option<ManifestKey>) =
            postcard::from_bytes(&self.0)?;
        if let Some(a) = record.artifact.as_mut() {
            a.manifest_key = match manifest {
                Some(m) => Some(
                    m.resolve(&a.key)
                        .ok_or(PackError(postcard::Error::DeserializeBadEncoding))?,
                ),
                None => None,
            };
        }
        Ok(record)
    }

    /// The run's name, read without unpacking the rest (it is the record's first field).
    pub fn name(&self) -> Result<&str, PackError> {
        Ok(postcard::take_from_bytes::<&str>(&self.0)?.0)
    }

    /// Bytes held (without the allocator's overhead).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A manifest location as packed: the operator records `s3://bucket/<key's directory>/manifest.json`
/// beside the artifact key `<key's directory>/…`, so the shared part (≈ 70 of a typical
/// location's ≈ 95 bytes) is kept once, in the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ManifestKey {
    /// `before` + the key's first `shared` bytes + `after`.
    AroundKey {
        before: String,
        shared: u32,
        after: String,
    },
    /// A location that shares no directory with the key.
    Whole(String),
}

impl ManifestKey {
    /// `location` in terms of `key`: around the longest of the key and its directories (at a
    /// `/`) that the location holds.
    fn relative_to(key: &str, location: String) -> Self {
        let mut candidates = std::iter::once(key.len())
            .chain(key.rmatch_indices('/').map(|(i, _)| i))
            .filter(|&n| n > 0);
        let found = candidates.find_map(|n| location.find(&key[..n]).map(|at| (at, n)));
        match found {
            Some((at, n)) => ManifestKey::AroundKey {
                before: location[..at].to_string(),
                shared: n as u32,
                after: location[at + n..].to_string(),
            },
            None => ManifestKey::Whole(location),
        }
    }

    /// The location again (`None`: the key is not the one it was packed with).
    fn resolve(self, key: &str) -> Option<String> {
        match self {
            ManifestKey::AroundKey {
                before,
                shared,
                after,
            } => {
                let shared = key.get(..shared as usize)?;
                Some([before.as_str(), shared, after.as_str()].concat())
            }
            ManifestKey::Whole(location) => Some(location),
        }
    }
}

/// (namespace, policy name).
type PolicyKey = (String, String);

/// Finished runs by policy.
type Index = HashMap<PolicyKey, Vec<Packed>>;

fn key_of(run: &BackupRun) -> Option<PolicyKey> {
    Some((run.namespace()?, run.spec.policy_ref.name.clone()))
}

fn insert(index: &mut Index, key: PolicyKey, record: &FinishedRun) {
    let packed = match Packed::pack(record) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(run = %record.name, error = %e, "finished run not cached");
            remove(index, &key, &record.name);
            return;
        }
    };
    let runs = index.entry(key).or_default();
    match runs
        .iter_mut()
        .find(|r| r.name().is_ok_and(|n| n == record.name))
    {
        Some(old) => *old = packed,
        None => runs.push(packed),
    }
}

fn remove(index: &mut Index, key: &PolicyKey, name: &str) {
    if let Some(runs) = index.get_mut(key) {
        runs.retain(|r| r.name().is_ok_and(|n| n != name));
        if runs.is_empty() {
            index.remove(key);
        }
    }
}

/// The reading side; cheap to clone.
#[derive(Clone)]
pub struct RunCache {
    active: Store<BackupRun>,
    finished: Arc<RwLock<Index>>,
}

/// The writing side, driven by the BackupRun watch.
pub struct RunCacheWriter {
    active: Writer<BackupRun>,
    finished: Arc<RwLock<Index>>,
    /// The index being rebuilt by a (re-)list, swapped in when it completes.
    relist: Option<Index>,
}

/// An empty cache and its writer.
pub fn new() -> (RunCache, RunCacheWriter) {
    let (active, writer) = reflector::store();
    let finished = Arc::new(RwLock::new(Index::new()));
    (
        RunCache {
            active,
            finished: finished.clone(),
        },
        RunCacheWriter {
            active: writer,
            finished,
            relist: None,
        },
    )
}

impl RunCache {
    /// Every active run (new, Pending or Running), whole; deleting ones included.
    pub fn active(&self) -> &Store<BackupRun> {
        &self.active
    }

    /// The active runs of a policy that are not being deleted.
    pub fn active_of(&self, ns: &str, policy: &str) -> Vec<Arc<BackupRun>> {
        self.active
            .state()
            .into_iter()
            .filter(|r| {
                r.metadata.namespace.as_deref() == Some(ns)
                    && r.spec.policy_ref.name == policy
                    && r.metadata.deletion_timestamp.is_none()
            })
            .collect()
    }

    /// The finished runs of a policy that are not being deleted, in no particular order.
    pub fn finished_of(&self, ns: &str, policy: &str) -> Vec<FinishedRun> {
        let index = self.finished.read().unwrap_or_else(PoisonError::into_inner);
        let Some(runs) = index.get(&(ns.to_string(), policy.to_string())) else {
            return Vec::new();
        };
        runs.iter()
            .filter_map(|r| {
                r.unpack()
                    .inspect_err(|e| tracing::error!(namespace = ns, policy, error = %e, "finished run record unreadable"))
                    .ok()
            })
            .collect()
    }

    /// The policy the run `ns/name` belongs to, if the run is cached.
    pub fn policy_of_run(&self, ns: &str, name: &str) -> Option<String> {
        if let Some(run) = self
            .active
            .get(&reflector::ObjectRef::<BackupRun>::new(name).within(ns))
        {
            return Some(run.spec.policy_ref.name.clone());
        }
        let index = self.finished.read().unwrap_or_else(PoisonError::into_inner);
        index
            .iter()
            .find(|((n, _), runs)| {
                n == ns && runs.iter().any(|r| r.name().is_ok_and(|n| n == name))
            })
            .map(|((_, policy), _)| policy.clone())
    }
}

impl RunCacheWriter {
    /// Applies one event of the BackupRun watch.
    pub fn apply(&mut self, event: &watcher::Event<BackupRun>) {
        match event {
            watcher::Event::Init => {
                self.active.apply_watcher_event(event);
                self.relist = Some(Index::new());
            }
            watcher::Event::InitApply(run) => match FinishedRun::from_run(run) {
                Some(record) => {
                    if let (Some(index), Some(key)) = (self.relist.as_mut(), key_of(run)) {
                        insert(index, key, &record);
                    }
                }
                None if is_finished(run) => {} // finished and being deleted: gone
                None => self.active.apply_watcher_event(event),
            },
            watcher::Event::InitDone => {
                self.active.apply_watcher_event(event);
                if let Some(mut index) = self.relist.take() {
                    // Each policy's list grew by doubling while the list came in: give back
                    // the unused room (up to ~45 % of it at 10 runs per policy).
                    for runs in index.values_mut() {
                        runs.shrink_to_fit();
                    }
                    index.shrink_to_fit();
                    *self
                        .finished
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = index;
                }
            }
            watcher::Event::Apply(run) => {
                let record = FinishedRun::from_run(run);
                if record.is_some() || is_finished(run) {
                    self.active
                        .apply_watcher_event(&watcher::Event::Delete(run.clone()));
                } else {
                    self.active.apply_watcher_event(event);
                }
                let Some(key) = key_of(run) else { return };
                let mut index = self
                    .finished
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                match record {
                    Some(record) => insert(&mut index, key, &record),
                    None => remove(&mut index, &key, &run.name_any()),
                }
            }
            watcher::Event::Delete(run) => {
                self.active.apply_watcher_event(event);
                if let Some(key) = key_of(run) {
                    let mut index = self
                        .finished
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    remove(&mut index, &key, &run.name_any());
                }
            }
        }
    }
}

fn is_finished(run: &BackupRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(BackupRunPhase::is_finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupRunSpec;
    use crate::api::backup_policy::PIN_LABEL;
    use crate::api::backup_run::{Artifact, BackupRunStatus, Trigger};
    use crate::api::common::LocalObjectReference;
    use crate::api::common::time_from_chrono;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn run(name: &str, policy: &str, phase: Option<BackupRunPhase>) -> BackupRun {
        let mut r = BackupRun::new(
            name,
            BackupRunSpec {
                policy_ref: LocalObjectReference::new(policy),
                trigger: Trigger::Manual,
                scheduled_time: None,
                reason: None,
                compression: None,
                active_deadline_seconds: None,
            },
        );
        r.metadata.namespace = Some("ns".into());
        r.status = phase.map(|phase| BackupRunStatus {
            phase: Some(phase),
            reason: Some("DumpFailed".into()),
            message: Some("pg_dump exited 1".into()),
            completion_time: Some(time_from_chrono(at("2026-11-22T01:00:00Z"))),
            artifact: Some(Box::new(Artifact {
                storage: "s3".into(),
                key: "ns/p/r/data".into(),
                manifest_key: Some("ns/p/r/manifest.json".into()),
                retain_until: Some(time_from_chrono(at("2026-12-01T00:00:00Z"))),
                size: Some("1 MiB".into()),
                ..Default::default()
            })),
            ..Default::default()
        });
        r
    }

    fn names(runs: &[FinishedRun]) -> Vec<&str> {
        let mut n: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        n.sort();
        n
    }

    /// A record with every field set, as a policy with copies, KMS and age recipients has.
    fn rich(name: &str) -> FinishedRun {
        FinishedRun {
            name: name.into(),
            succeeded: false,
            completed_at: Some(at("2026-11-22T01:00:00.123456Z")),
            pinned: true,
            scheduled: true,
            failure: Some(Box::new(Failure {
                reason: Some("DumpFailed".into()),
                message: Some("pg_dump: error: \"ü\" 100 %".into()),
            })),
            artifact: Some(Box::new(ArtifactRef {
                storage: "main".into(),
                size_bytes: u64::MAX,
                key: "ns/p/2026-11-22/r/dump.pgc.zst".into(),
                manifest_key: Some("s3://b/ns/p/2026-11-22/r/manifest.json".into()),
                retain_until: Some(at("2027-01-01T00:00:00Z")),
                copies: vec![
                    ("dr".into(), Some(at("2027-02-01T00:00:00Z"))),
                    ("cold".into(), None),
                ],
                manifest_sha256: Some("ab".repeat(32)),
                recipients: Some(vec!["fp1".into(), "fp2".into()]),
                kms_key_id: Some("arn:aws:kms:eu-west-1:1:key/k".into()),
                copy_manifests: vec![CopyManifest {
                    storage: "dr".into(),
                    location: "s3://dr/m.json".into(),
                    manifest_sha256: "cd".repeat(32),
                }],
                direct_encryption: true,
            })),
        }
    }

    #[test]
    fn a_packed_record_unpacks_to_itself_and_names_itself() {
        for record in [
            rich("run-1"),
            FinishedRun {
                name: String::new(),
                succeeded: true,
                completed_at: None,
                pinned: false,
                scheduled: false,
                failure: None,
                artifact: None,
            },
            FinishedRun::from_run(&run("r1", "p", Some(BackupRunPhase::Succeeded))).unwrap(),
        ] {
            let packed = Packed::pack(&record).unwrap();
            assert_eq!(packed.unpack().unwrap(), record);
            assert_eq!(packed.name().unwrap(), record.name);
        }
    }

    #[test]
    fn a_manifest_location_is_kept_around_the_key_it_shares() {
        let key = "p/ns/pol/2026-12-07/r";
        for (location, shared) in [
            (format!("s3://b/{key}/manifest.json"), key.len()),
            (format!("s3://b/{key}.manifest"), key.len()),
            (
                "s3://b/p/ns/pol/other/manifest.json".to_string(),
                "p/ns/pol".len(),
            ),
            ("file:///elsewhere/manifest.json".to_string(), 0),
            (String::new(), 0),
        ] {
            let m = ManifestKey::relative_to(key, location.clone());
            match &m {
                ManifestKey::AroundKey { shared: n, .. } => assert_eq!(*n as usize, shared),
                ManifestKey::Whole(_) => assert_eq!(shared, 0, "{location}"),
            }
            assert_eq!(m.resolve(key).as_deref(), Some(location.as_str()));
        }
        // Against a shorter key than it was packed with: refused, never a wrong location.
        let m = ManifestKey::relative_to(key, format!("s3://b/{key}/manifest.json"));
        assert_eq!(m.resolve("p/ns"), None);
    }

    #[test]
    fn a_typical_succeeded_run_packs_small() {
        // What the operator benchmark loads (benches/operator/fixtures.rs), at its longest.
        let key = "ns-0999/policy-09999/2026-12-07/20261207T030000Z-policy-09999-202612070300";
        let record = FinishedRun {
            name: "policy-09999-202612070300".into(),
            succeeded: true,
            completed_at: Some(at("2026-12-07T03:05:37Z")),
            pinned: false,
            scheduled: true,
            failure: None,
            artifact: Some(Box::new(ArtifactRef {
                storage: "main".into(),
                size_bytes: 245_000_000,
                key: format!("{key}/dump.pgc.zst"),
                manifest_key: Some(format!("s3://backups/{key}/manifest.json")),
                retain_until: None,
                copies: Vec::new(),
                manifest_sha256: None,
                recipients: None,
                kms_key_id: None,
                copy_manifests: Vec::new(),
                direct_encryption: false,
            })),
        };
        let packed = Packed::pack(&record).unwrap();
        let a = record.artifact.as_ref().unwrap();
        // The manifest location's directory is the key's: kept once.
        let strings = record.name.len()
            + a.storage.len()
            + a.key.len()
            + a.manifest_key.as_ref().map_or(0, String::len)
            - key.len();
        // The strings and at most 36 bytes of lengths, flags, numbers, tags and empty fields,
        // in one allocation (the unpacked record takes ~550 bytes in seven).
        assert!(
            packed.len() <= strings + 36,
            "{} bytes for {strings} bytes of strings",
            packed.len()
        );
        assert_eq!(packed.unpack().unwrap(), record);
    }

    proptest::proptest! {
        #[test]
        fn any_record_survives_packing(
            name in ".{0,40}",
            key in ".{0,120}",
            message in proptest::option::of(".{0,300}"),
            secs in proptest::option::of(0i64..4_000_000_000),
            size in proptest::num::u64::ANY,
            copies in proptest::collection::vec((".{0,20}", proptest::option::of(0i64..4_000_000_000)), 0..3),
            flags in 0u8..8,
            location in proptest::option::of(".{0,60}"),
            around_key in 0usize..3,
        ) {
            let time = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
            let mut record = rich(&name);
            record.completed_at = secs.map(time);
            record.succeeded = flags & 1 == 1;
            record.pinned = flags & 2 == 2;
            record.scheduled = flags & 4 == 4;
            record.failure.as_mut().unwrap().message = message;
            let a = record.artifact.as_mut().unwrap();
            // A location around the key, around one of its directories, or anything.
            a.manifest_key = location.map(|l| match around_key {
                0 => format!("s3://{l}/{key}/manifest.json"),
                1 => format!("{l}{}", key.rsplit_once('/').map_or(key.as_str(), |(d, _)| d)),
                _ => l,
            });
            a.key = key;
            a.size_bytes = size;
            a.copies = copies.into_iter().map(|(s, t)| (s, t.map(time))).collect();
            let packed = Packed::pack(&record).unwrap();
            proptest::prop_assert_eq!(packed.name().unwrap(), record.name.as_str());
            proptest::prop_assert_eq!(packed.unpack().unwrap(), record);
        }
    }

    #[test]
    fn stored_bytes_count_the_primary_and_every_confirmed_copy() {
        let with = |name: &str, ok: bool, size: u64, copies: &[&str]| FinishedRun {
            name: name.into(),
            succeeded: ok,
            completed_at: None,
            pinned: false,
            scheduled: false,
            failure: None,
            artifact: Some(Box::new(ArtifactRef {
                storage: "main".into(),
                size_bytes: size,
                key: format!("{name}/data"),
                manifest_key: None,
                retain_until: None,
                copies: copies.iter().map(|c| (c.to_string(), None)).collect(),
                manifest_sha256: None,
                recipients: None,
                kms_key_id: None,
                copy_manifests: Vec::new(),
                direct_encryption: false,
            })),
        };
        let runs = vec![
            with("a", true, 100, &["dr"]),
            with("b", true, 50, &[]),
            // A failed run's leftovers are not a kept backup.
            with("c", false, 7, &["dr"]),
        ];
        let stored = stored_by_storage(&runs, &["main", "empty"]);
        assert_eq!(stored.get("main"), Some(&(150, 2)));
        assert_eq!(stored.get("dr"), Some(&(100, 1)));
        assert_eq!(stored.get("empty"), Some(&(0, 0)));
        assert_eq!(stored.len(), 3);
    }

    #[test]
    fn a_record_keeps_what_the_policy_side_reads() {
        let mut ok = run("r1", "p", Some(BackupRunPhase::Succeeded));
        ok.labels_mut().insert(PIN_LABEL.into(), "true".into());
        let r = FinishedRun::from_run(&ok).unwrap();
        assert!(r.succeeded && r.pinned && r.failure.is_none());
        assert_eq!(r.phase(), BackupRunPhase::Succeeded);
        assert_eq!(r.completed_at, Some(at("2026-11-22T01:00:00Z")));
        let a = r.artifact.unwrap();
        assert_eq!(
            (
                a.storage.as_str(),
                a.key.as_str(),
                a.manifest_key.as_deref()
            ),
            ("s3", "ns/p/r/data", Some("ns/p/r/manifest.json"))
        );
        assert_eq!(a.retain_until, Some(at("2026-12-01T00:00:00Z")));

        let failed = FinishedRun::from_run(&run("r2", "p", Some(BackupRunPhase::Failed))).unwrap();
        assert!(!failed.succeeded && !failed.pinned);
        let f = failed.failure.unwrap();
        assert_eq!(f.reason.as_deref(), Some("DumpFailed"));
        assert_eq!(f.message.as_deref(), Some("pg_dump exited 1"));

        for phase in [
            None,
            Some(BackupRunPhase::Pending),
            Some(BackupRunPhase::Running),
        ] {
            assert!(FinishedRun::from_run(&run("r", "p", phase)).is_none());
        }
        let mut deleting = run("r3", "p", Some(BackupRunPhase::Succeeded));
        deleting.metadata.deletion_timestamp = Some(time_from_chrono(Utc::now()));
        assert!(FinishedRun::from_run(&deleting).is_none());
    }

    #[test]
    fn runs_move_from_active_to_finished_and_out() {
        let (cache, mut w) = new();
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(run("new", "p", None)));
        w.apply(&watcher::Event::InitApply(run(
            "old",
            "p",
            Some(BackupRunPhase::Succeeded),
        )));
        w.apply(&watcher::Event::InitApply(run(
            "other",
            "q",
            Some(BackupRunPhase::Failed),
        )));
        // Nothing is visible before the list completes.
        assert!(cache.finished_of("ns", "p").is_empty());
        w.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache.finished_of("ns", "p")), ["old"]);
        assert_eq!(names(&cache.finished_of("ns", "q")), ["other"]);
        assert!(cache.finished_of("other-ns", "p").is_empty());
        let active: Vec<String> = cache
            .active_of("ns", "p")
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(active, ["new"]);
        assert!(cache.active_of("ns", "q").is_empty());
        assert_eq!(cache.policy_of_run("ns", "new").as_deref(), Some("p"));
        assert_eq!(cache.policy_of_run("ns", "other").as_deref(), Some("q"));
        assert_eq!(cache.policy_of_run("ns", "missing"), None);

        // The active run finishes: it leaves the active store for the index.
        w.apply(&watcher::Event::Apply(run(
            "new",
            "p",
            Some(BackupRunPhase::Running),
        )));
        assert_eq!(cache.active().state().len(), 1);
        w.apply(&watcher::Event::Apply(run(
            "new",
            "p",
            Some(BackupRunPhase::Succeeded),
        )));
        assert!(cache.active().state().is_empty());
        assert_eq!(names(&cache.finished_of("ns", "p")), ["new", "old"]);
        // Applied again (e.g. a label change): replaced, not duplicated.
        let mut pinned = run("new", "p", Some(BackupRunPhase::Succeeded));
        pinned.labels_mut().insert(PIN_LABEL.into(), "true".into());
        w.apply(&watcher::Event::Apply(pinned));
        let p = cache.finished_of("ns", "p");
        assert_eq!(names(&p), ["new", "old"]);
        assert!(p.iter().find(|r| r.name == "new").unwrap().pinned);

        // Marked for deletion, then deleted.
        let mut deleting = run("old", "p", Some(BackupRunPhase::Succeeded));
        deleting.metadata.deletion_timestamp = Some(time_from_chrono(Utc::now()));
        w.apply(&watcher::Event::Apply(deleting.clone()));
        assert_eq!(names(&cache.finished_of("ns", "p")), ["new"]);
        w.apply(&watcher::Event::Delete(deleting));
        w.apply(&watcher::Event::Delete(run(
            "new",
            "p",
            Some(BackupRunPhase::Succeeded),
        )));
        assert!(cache.finished_of("ns", "p").is_empty());
        assert_eq!(names(&cache.finished_of("ns", "q")), ["other"]);
    }

    #[test]
    fn a_relist_replaces_the_index_whole() {
        let (cache, mut w) = new();
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(run(
            "gone",
            "p",
            Some(BackupRunPhase::Succeeded),
        )));
        w.apply(&watcher::Event::InitDone);
        // A re-list (e.g. after the watch expired) no longer sees "gone".
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(run(
            "kept",
            "p",
            Some(BackupRunPhase::Succeeded),
        )));
        assert_eq!(names(&cache.finished_of("ns", "p")), ["gone"]);
        w.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache.finished_of("ns", "p")), ["kept"]);
    }
}
