//! The write-ahead spool of the audit records no object's status shows afterwards (a retention
//! deletion, a key rotation): each is written to the Kubernetes API **before** the action it
//! describes is carried out, so that an operator killed while the audit storage is down (or
//! before its writer got to it) does not lose it. The leader drains the spool into the chain
//! (the sink, `sink.rs`) and removes an entry only once a segment holding its record was confirmed
//! by S3 (or the chain was found to hold it already); a new leader reads the spool when it
//! starts, and every [`RELOAD_INTERVAL`] after (entries a previous leader wrote during a
//! handover).
//!
//! Where: one ConfigMap per record in the operator's own namespace (`--lease-namespace` /
//! `POD_NAMESPACE`), named `dataguardian-audit-spool-<record id>`, labelled
//! [`SPOOL_LABEL`], written by server-side apply under [`FIELD_MANAGER`]. One object per record:
//! concurrent reconcilers never read-modify-write a shared object, an entry is removed by one
//! delete, and each object stays far below the API's 1 MiB limit ([`MAX_RECORD_BYTES`]). Not on
//! the users' objects (no finalizer, no status field a tenant's deletion of a policy would take
//! away) and without an ownerReference (uninstalling the operator must not garbage-collect
//! records it has not written yet).
//!
//! Bounded: at most [`SpoolLimits::max_entries`] entries. When the spool is full (the audit
//! storage has been down for long) or cannot be written, the caller does not act: retention
//! waits (Warning Event `RetentionWaitsForAudit`), a key rotation's status is not advanced —
//! nothing is deleted unrecorded.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};

use super::record::AuditRecord;

/// The label every spool entry carries (value `"true"`): how the leader lists them.
pub const SPOOL_LABEL: &str = "dataguardian.io/audit-spool";
/// The name of an entry is this prefix and its record's id.
pub const NAME_PREFIX: &str = "dataguardian-audit-spool-";
/// The data key holding the record (one JSON object).
pub const DATA_KEY: &str = "record.json";
/// The field manager of the spool entries.
pub const FIELD_MANAGER: &str = "dataguardian-audit";
/// The most bytes of one entry's record; a longer `detail` is cut to fit.
pub const MAX_RECORD_BYTES: usize = 4096;
/// How often the leader lists the spool again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(300);

/// How much the spool may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Entries at most: 5,000 × at most 4 KiB (typically ~0.5 KiB) = at most 20 MiB in etcd.
    pub max_entries: usize,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits { max_entries: 5000 }
    }
}

/// Why a record cannot be spooled (the action it describes must wait).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "the audit spool is full ({max} records the audit storage has not confirmed yet); \
         the action waits until the audit storage is reachable again (docs/audit.md)"
    )]
    Full { max: usize },
    #[error("the audit spool has not been read yet since this operator started leading")]
    NotLoaded,
    #[error("writing the audit spool entry {name}: {message}")]
    Write { name: String, message: String },
    #[error("reading the audit spool: {0}")]
    List(String),
    #[error("removing the audit spool entry {name}: {message}")]
    Remove { name: String, message: String },
}

/// Why a spool entry cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("it holds no {DATA_KEY}")]
    Missing,
    #[error("its {DATA_KEY} is not an audit record: {0}")]
    NotARecord(String),
    #[error("its name is not the one of the record it holds ({0})")]
    NameMismatch(String),
}

/// The name of the entry of the record `id`.
pub fn entry_name(id: &str) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// The JSON of `record`, its `detail` cut (on a character boundary, marked `…`) so that the
/// whole is at most [`MAX_RECORD_BYTES`].
pub fn encode_record(record: &AuditRecord) -> String {
    // A record always serializes (strings, a time, an enum).
    let json = |r: &AuditRecord| serde_json::to_string(r).unwrap_or_default();
    let full = json(record);
    if full.len() <= MAX_RECORD_BYTES {
        return full;
    }
    let mut cut = record.clone();
    let detail = cut.detail.take().unwrap_or_default();
    let floor = |mut i: usize| {
        while !detail.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let with = |keep: usize| {
        let mut c = cut.clone();
        c.detail = Some(format!("{}…", &detail[..keep]));
        json(&c)
    };
    // The longest prefix that fits (JSON escaping makes the bytes of a prefix grow unevenly):
    // a binary search over its length, `lo` always fitting.
    let (mut lo, mut hi) = (0, detail.len());
    while lo < hi {
        let mid = floor(lo + (hi - lo).div_ceil(2));
        if mid <= lo {
            break;
        }
        if with(mid).len() <= MAX_RECORD_BYTES {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    with(lo)
}

/// The ConfigMap holding `record` in the operator's namespace `namespace`.
pub fn encode(namespace: &str, record: &AuditRecord) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(entry_name(&record.id)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (SPOOL_LABEL.to_string(), "true".to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "dataguardian".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "audit-spool".to_string(),
                ),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            DATA_KEY.to_string(),
            encode_record(record),
        )])),
        ..Default::default()
    }
}

/// The record a spool entry holds; its name must be the record's ([`entry_name`]).
pub fn decode(cm: &ConfigMap) -> Result<AuditRecord, DecodeError> {
    let json = cm
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .ok_or(DecodeError::Missing)?;
    let record: AuditRecord =
        serde_json::from_str(json).map_err(|e| DecodeError::NotARecord(e.to_string()))?;
    if cm.metadata.name.as_deref() != Some(entry_name(&record.id).as_str()) {
        return Err(DecodeError::NameMismatch(record.id));
    }
    Ok(record)
}

/// What the spool holds, as this process knows it.
#[derive(Debug, Default)]
struct Known {
    /// Listed at least once since this process started leading.
    loaded: bool,
    ids: HashSet<String>,
}

/// Whether a record `id` may be added to a spool holding `known` (`Ok(true)`: it is there
/// already, nothing to write).
fn admit(known: &Known, id: &str, limits: SpoolLimits) -> Result<bool, SpoolError> {
    if !known.loaded {
        return Err(SpoolError::NotLoaded);
    }
    if known.ids.contains(id) {
        return Ok(true);
    }
    if known.ids.len() >= limits.max_entries {
        return Err(SpoolError::Full {
            max: limits.max_entries,
        });
    }
    Ok(false)
}

/// The spool in the operator's namespace. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    api: Api<ConfigMap>,
    namespace: String,
    limits: SpoolLimits,
    known: Arc<Mutex<Known>>,
}

impl Spool {
    /// The spool in `namespace` (the operator's own).
    pub fn new(client: Client, namespace: &str, limits: SpoolLimits) -> Self {
        Spool {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            limits,
            known: Arc::default(),
        }
    }

    /// Entries known to be in the spool.
    pub fn len(&self) -> usize {
        self.known.lock().map(|k| k.ids.len()).unwrap_or(0)
    }

    /// Whether no entry is known to be in the spool.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lists the spool: the records of its entries (entries that do not decode are logged and
    /// left alone, and count against the bound). From now on records may be written.
    pub async fn load(&self) -> Result<Vec<AuditRecord>, SpoolError> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{SPOOL_LABEL}=true")))
            .await
            .map_err(|e| SpoolError::List(e.to_string()))?;
        let mut ids = HashSet::new();
        let mut records = Vec::new();
        for cm in &list.items {
            let name = cm.metadata.name.clone().unwrap_or_default();
            match decode(cm) {
                Ok(r) => {
                    ids.insert(r.id.clone());
                    records.push(r);
                }
                Err(e) => {
                    tracing::warn!(namespace = %self.namespace, entry = %name, error = %e, "an audit spool entry cannot be read; it is left in place");
                    ids.insert(name);
                }
            }
        }
        if let Ok(mut k) = self.known.lock() {
            k.loaded = true;
            k.ids = ids;
        }
        Ok(records)
    }

    /// Writes `record` to the spool (nothing to do if it is there already).
    pub async fn write(&self, record: &AuditRecord) -> Result<(), SpoolError> {
        let there = {
            let known = self.known.lock().map_err(|_| SpoolError::NotLoaded)?;
            admit(&known, &record.id, self.limits)?
        };
        if there {
            return Ok(());
        }
        let cm = encode(&self.namespace, record);
        let name = entry_name(&record.id);
        self.api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|e| SpoolError::Write {
                name: name.clone(),
                message: e.to_string(),
            })?;
        if let Ok(mut k) = self.known.lock() {
            k.ids.insert(record.id.clone());
        }
        Ok(())
    }

    /// Removes the entry of the record `id` (one already gone is fine).
    pub async fn remove(&self, id: &str) -> Result<(), SpoolError> {
        let name = entry_name(id);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(SpoolError::Remove {
                    name,
                    message: e.to_string(),
                });
            }
        }
        if let Ok(mut k) = self.known.lock() {
            k.ids.remove(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditAction, record_id};
    use chrono::TimeZone;

    fn record(detail: Option<String>) -> AuditRecord {
        AuditRecord {
            id: record_id("u-policy", AuditAction::RetentionDeletion, "nightly-1"),
            time: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            action: AuditAction::RetentionDeletion,
            namespace: "shop".into(),
            kind: "BackupPolicy".into(),
            name: "nightly".into(),
            uid: "u-policy".into(),
            actor: None,
            approver: None,
            outcome: None,
            reason: Some("Retention".into()),
            detail,
        }
    }

    #[test]
    fn an_entry_round_trips_under_its_records_name_and_label() {
        let r = record(Some("deleted run nightly-1 (KeepLast)".into()));
        let cm = encode("dataguardian-system", &r);
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some(format!("dataguardian-audit-spool-{}", r.id).as_str())
        );
        assert!(cm.metadata.name.as_ref().unwrap().len() <= 63);
        assert_eq!(
            cm.metadata.namespace.as_deref(),
            Some("dataguardian-system")
        );
        assert_eq!(
            cm.metadata.labels.as_ref().unwrap().get(SPOOL_LABEL),
            Some(&"true".to_string())
        );
        assert!(cm.metadata.owner_references.is_none());
        assert_eq!(decode(&cm), Ok(r));
    }

    #[test]
    fn entries_that_are_not_records_or_under_another_name_are_refused() {
        let r = record(None);
        let mut cm = encode("ns", &r);
        cm.metadata.name = Some(entry_name("0123"));
        assert_eq!(decode(&cm), Err(DecodeError::NameMismatch(r.id.clone())));
        let mut cm = encode("ns", &r);
        cm.data
            .as_mut()
            .unwrap()
            .insert(DATA_KEY.into(), "{\"id\":1}".into());
        assert!(matches!(decode(&cm), Err(DecodeError::NotARecord(_))));
        let mut cm = encode("ns", &r);
        cm.data = None;
        assert_eq!(decode(&cm), Err(DecodeError::Missing));
    }

    #[test]
    fn a_long_detail_is_cut_to_the_bound_on_a_character_boundary() {
        // Multi-byte characters and characters JSON escapes, well over the bound.
        let detail: String = "é\"\u{1}x".repeat(3000);
        let r = record(Some(detail.clone()));
        let json = encode_record(&r);
        assert!(json.len() <= MAX_RECORD_BYTES, "{}", json.len());
        assert!(
            json.len() > MAX_RECORD_BYTES - 64,
            "not cut too much: {}",
            json.len()
        );
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        let kept = back.detail.unwrap();
        assert!(kept.ends_with('…'));
        assert!(detail.starts_with(kept.trim_end_matches('…')));
        assert_eq!(back.id, r.id, "everything but the detail is kept");
        // A short one is untouched.
        let short = record(Some("deleted run nightly-1".into()));
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&encode_record(&short)).unwrap(),
            short
        );
    }

    #[test]
    fn the_bound_refuses_new_records_only_and_nothing_before_the_first_list() {
        let limits = SpoolLimits { max_entries: 2 };
        let mut known = Known::default();
        assert!(matches!(
            admit(&known, "a", limits),
            Err(SpoolError::NotLoaded)
        ));
        known.loaded = true;
        assert!(!admit(&known, "a", limits).unwrap());
        known.ids.insert("a".into());
        assert!(admit(&known, "a", limits).unwrap(), "already spooled");
        known.ids.insert("b".into());
        let full = admit(&known, "c", limits).unwrap_err();
        assert!(matches!(full, SpoolError::Full { max: 2 }));
        assert!(full.to_string().contains("audit spool is full"), "{full}");
        // What is spooled already is still admitted (a retried action).
        assert!(admit(&known, "b", limits).unwrap());
        known.ids.remove("a");
        assert!(!admit(&known, "c", limits).unwrap());
    }
}
