//! Confirms, independently of the agent, that a finished backup really is in storage before the
//! run may count as Succeeded (no false success): the manifest (the commit marker) exists and
//! hashes to what the agent reported, and every artifact it lists exists with the listed size.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::api::BackupStorage;

use crate::contract::{AgentReport, ManifestView};
use crate::controller::common::storage_access::{AccessError, StorageAccess};

/// Manifests are small; anything larger is not one of ours.
const MANIFEST_LIMIT: usize = 16 << 20;

/// A confirmed artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// The earliest Object Lock retain-until date among the artifact's objects.
    pub retain_until: Option<DateTime<Utc>>,
    /// A note for the status message (e.g. how it was confirmed).
    pub note: Option<String>,
}

/// Splits `s3://bucket/key` into its parts.
pub fn parse_s3_location(location: &str) -> Option<(String, String)> {
    let rest = location.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// The directory part of a key (`a/b/manifest.json` → `a/b`).
fn dir_of(key: &str) -> &str {
    key.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// Confirms the artifact the agent reported. `Err` carries the reason shown in status.
pub async fn confirm(
    client: &kube::Client,
    ns: &str,
    storage: &BackupStorage,
    report: &AgentReport,
    egress: &crate::egress::EgressPolicy,
) -> Result<Confirmation, String> {
    if storage.spec.s3.is_none() {
        // A PVC is mounted only by Job pods; the agent confirmed size and checksum after the
        // atomic rename, and the manifest exists only after that.
        return Ok(Confirmation {
            retain_until: None,
            note: Some("confirmed by the agent on the volume".into()),
        });
    }
    let location = report
        .location
        .as_deref()
        .ok_or("the agent's report has no artifact location")?;
    let (bucket, manifest_key) = parse_s3_location(location)
        .ok_or_else(|| format!("unexpected artifact location {location}"))?;
    let access = StorageAccess::open(client, ns, storage, egress)
        .await
        .map_err(|e| format!("cannot open storage: {e}"))?;
    if bucket != access.bucket() {
        return Err(format!(
            "the artifact was written to bucket {bucket}, not to the storage's bucket {}",
            access.bucket()
        ));
    }
    confirm_with(&access, &manifest_key, report).await
}

/// The checks, given an open storage.
pub async fn confirm_with(
    access: &StorageAccess,
    manifest_key: &str,
    report: &AgentReport,
) -> Result<Confirmation, String> {
    let manifest = access
        .get(manifest_key, MANIFEST_LIMIT)
        .await
        .map_err(|e| match e {
            AccessError::NotFound(_) => {
                format!("manifest {manifest_key} is missing: the backup was not committed")
            }
            other => format!("reading manifest {manifest_key}: {other}"),
        })?;
    let digest = hex::encode(Sha256::digest(&manifest));
    if let Some(expected) = &report.manifest_sha256
        && !expected.eq_ignore_ascii_case(&digest)
    {
        return Err(format!(
            "manifest {manifest_key} has sha256 {digest}, the agent reported {expected}"
        ));
    }
    let view = ManifestView::parse(&manifest)
        .map_err(|e| format!("manifest {manifest_key} is not valid: {e}"))?;
    if view.artifacts.is_empty() {
        return Err(format!("manifest {manifest_key} lists no artifacts"));
    }
    let dir = dir_of(manifest_key);
    let mut retain_until: Option<DateTime<Utc>> = None;
    let mut total = 0u64;
    for a in &view.artifacts {
        let key = if dir.is_empty() {
            a.key.clone()
        } else {
            format!("{dir}/{}", a.key)
        };
        let info = access.head(&key).await.map_err(|e| match e {
            AccessError::NotFound(_) => format!("artifact {key} listed in the manifest is missing"),
            other => format!("checking artifact {key}: {other}"),
        })?;
        if info.size != a.size_bytes {
            return Err(format!(
                "artifact {key} has {} bytes in storage, the manifest says {}",
                info.size, a.size_bytes
            ));
        }
        total += info.size;
        if let Some(t) = info.retain_until {
            retain_until = Some(retain_until.map_or(t, |r| r.min(t)));
        }
    }
    if let Some(reported) = report.size_bytes
        && reported != total
    {
        return Err(format!(
            "storage holds {total} bytes of artifacts, the agent reported {reported}"
        ));
    }
    if view.artifacts.len() == 1
        && let Some(sha) = &report.sha256
        && !sha.eq_ignore_ascii_case(&view.artifacts[0].sha256)
    {
        return Err(format!(
            "the manifest records sha256 {}, the agent reported {sha}",
            view.artifacts[0].sha256
        ));
    }
    Ok(Confirmation {
        retain_until,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations_split_into_bucket_and_key() {
        assert_eq!(
            parse_s3_location("s3://shop-backups/shop/nightly/x/manifest.json"),
            Some(("shop-backups".into(), "shop/nightly/x/manifest.json".into()))
        );
        assert_eq!(parse_s3_location("s3://bucket"), None);
        assert_eq!(parse_s3_location("file:///x/manifest.json"), None);
        assert_eq!(dir_of("a/b/manifest.json"), "a/b");
        assert_eq!(dir_of("manifest.json"), "");
    }
}
