//! The WORM audit trail (docs/audit.md): who did what, appended as JSON Lines to a
//! BackupStorage the platform team names (`--audit-storage NAMESPACE/NAME`), in per-namespace
//! hash-chained segments written under Object Lock.
//!
//! - [`record`]: the records, their stable ids, and what each object's status shows (pure).
//! - [`chain`]: the segment format, the hash chain and its verification (pure).
//! - [`sink`]: the leader's writer (batches, retries, re-sending after a restart).
//! - [`ids`]: the record ids the writer remembers, 16 bytes each (pure).
//! - [`spool`]: the write-ahead spool of the records no status shows afterwards.
//! - this file: opening the audit storage from the cluster, and reading a chain back
//!   (`kubectl dataguardian audit verify|show`).

pub mod chain;
pub mod ids;
pub mod record;
pub mod sink;
pub mod spool;

use kube::{Api, Client};

use crate::api::BackupStorage;
use crate::api::backup_storage::{ObjectLock, ObjectLockMode};
use crate::controller::common::storage_access::{AccessError, StorageAccess};
use crate::egress::EgressPolicy;

use chain::{ChainReport, Found};
use record::AuditRecord;
use sink::AuditTarget;

/// A `NAMESPACE/NAME` reference to the audit BackupStorage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for StorageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for StorageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let valid = |p: &str| {
            !p.is_empty()
                && p.len() <= 253
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        match s.split_once('/') {
            Some((ns, name)) if valid(ns) && valid(name) => Ok(StorageRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            _ => Err(format!(
                "{s:?}: expected NAMESPACE/NAME of a BackupStorage, e.g. dataguardian-system/audit"
            )),
        }
    }
}

/// Retention of segments when the audit storage declares no `objectLock` but its bucket has
/// Object Lock enabled.
pub const DEFAULT_LOCK: ObjectLock = ObjectLock {
    mode: ObjectLockMode::Governance,
    days: 365,
};

/// Why the audit storage cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read BackupStorage {0}: {1}")]
    Storage(StorageRef, String),
    #[error("BackupStorage {0} does not exist")]
    NotFound(StorageRef),
    #[error("audit storage {0}: {1}")]
    Access(StorageRef, #[source] AccessError),
}

/// Opens the audit storage `r` with its own credentials Secret (or the caller's ambient
/// credentials when it has none: the platform team named it). Segments get the storage's
/// `objectLock`, or [`DEFAULT_LOCK`] when only the bucket has Object Lock enabled.
pub async fn open(
    client: &Client,
    r: &StorageRef,
    egress: &EgressPolicy,
) -> Result<AuditTarget, OpenError> {
    let storages: Api<BackupStorage> = Api::namespaced(client.clone(), &r.namespace);
    let storage = storages
        .get_opt(&r.name)
        .await
        .map_err(|e| OpenError::Storage(r.clone(), e.to_string()))?
        .ok_or_else(|| OpenError::NotFound(r.clone()))?;
    let access = StorageAccess::open(client, &r.namespace, &storage, egress, true)
        .await
        .map_err(|e| OpenError::Access(r.clone(), e))?;
    let declared = storage.spec.s3.as_ref().and_then(|s| s.object_lock.clone());
    let lock = match declared {
        Some(l) => Some(l),
        None => match access.object_lock_enabled().await {
            Ok(true) => Some(DEFAULT_LOCK),
            Ok(false) => None,
            Err(e) => return Err(OpenError::Access(r.clone(), e)),
        },
    };
    Ok(AuditTarget { access, lock })
}

/// The namespaces with a chain in the audit storage.
pub async fn namespaces(access: &StorageAccess) -> Result<Vec<String>, AccessError> {
    let root = access.key("");
    let prefix = access.key(&format!("{}/", chain::ROOT));
    let mut out: Vec<String> = access
        .list(&prefix, usize::MAX)
        .await?
        .iter()
        .filter_map(|k| {
            let rel = k.strip_prefix(&root).unwrap_or(k).trim_start_matches('/');
            chain::parse_key(rel).map(|(ns, _)| ns)
        })
        .collect();
    out.dedup();
    Ok(out)
}

/// Reads every segment of `namespace` (every version listed: deleted and overwritten ones say
/// so) and verifies the chain. Also returns the records of the segments that parse, in order.
pub async fn read_chain(
    access: &StorageAccess,
    namespace: &str,
) -> Result<(ChainReport, Vec<AuditRecord>), AccessError> {
    let root = access.key("");
    let prefix = access.key(&chain::namespace_prefix(namespace));
    let mut found = Vec::new();
    let mut records = Vec::new();
    for kv in access.list_versions(&prefix).await? {
        let rel = kv
            .key
            .strip_prefix(&root)
            .unwrap_or(&kv.key)
            .trim_start_matches('/');
        let Some((ns, index)) = chain::parse_key(rel) else {
            continue;
        };
        if ns != namespace {
            continue;
        }
        let bytes = if kv.deleted {
            None
        } else {
            match access.get(&kv.key, 64 << 20).await {
                Ok(b) => Some(b),
                Err(AccessError::NotFound(_)) => None,
                Err(e) => return Err(e),
            }
        };
        if let Some(b) = &bytes
            && let Ok((_, rs)) = chain::parse_segment(b)
        {
            records.push((index, rs));
        }
        found.push(Found {
            index,
            location: access.location(&kv.key),
            bytes,
            versions: kv.versions,
        });
    }
    records.sort_by_key(|(i, _)| *i);
    let report = chain::verify(namespace, found, |i| {
        access.location(&access.key(&chain::segment_key(namespace, i)))
    });
    Ok((report, records.into_iter().flat_map(|(_, r)| r).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_refs_parse_and_refuse_clearly() {
        let r: StorageRef = "dataguardian-system/audit".parse().unwrap();
        assert_eq!(r.namespace, "dataguardian-system");
        assert_eq!(r.name, "audit");
        assert_eq!(r.to_string(), "dataguardian-system/audit");
        for bad in ["audit", "/audit", "ns/", "ns/Audit", "a/b/c"] {
            let e = bad.parse::<StorageRef>().unwrap_err();
            assert!(e.contains("expected NAMESPACE/NAME"), "{bad}: {e}");
        }
    }
}
