//! Confirms, independently of the agent, that a finished backup really is in storage before the
//! run may count as Succeeded (no false success): the agent wrote exactly where the operator
//! computed ([`ExpectedBackup`]), the manifest (the commit marker) exists there and hashes to
//! what the agent reported, says the scope and encryption the policy asked for, lists only
//! plain keys below its own directory, and every artifact it lists exists with the listed size.
//! The digest the operator computed is recorded: restores, validations and retention believe
//! no manifest that hashes otherwise.

use chrono::{DateTime, Utc};

use crate::api::BackupStorage;
use crate::api::backup_run::BackupScope;

use crate::contract::manifest::sha256_hex;
use crate::contract::{AgentReport, EncryptionInfo, ManifestView};
use crate::controller::common::storage_access::{AccessError, StorageAccess};
use crate::jobs::backup_job::ExpectedBackup;

/// Manifests are small; anything larger is not one of ours.
const MANIFEST_LIMIT: usize = 16 << 20;

/// A confirmed artifact.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// The earliest Object Lock retain-until date among the artifact's objects.
    pub retain_until: Option<DateTime<Utc>>,
    /// A note for the status message (e.g. how it was confirmed).
    pub note: Option<String>,
    /// Hex SHA-256 of the manifest's bytes (computed by the operator on S3; on a volume the
    /// operator cannot read, the agent's).
    pub manifest_sha256: Option<String>,
    /// The manifest's encryption (S3: as read by the operator; on a volume: the agent's report).
    pub encryption: Option<EncryptionInfo>,
}

pub use crate::contract::manifest::is_plain_relative_key;

/// Checks the agent's reported location against the one the operator computed.
fn check_location(report: &AgentReport, expected: &ExpectedBackup) -> Result<(), String> {
    let location = report
        .location
        .as_deref()
        .ok_or("the agent's report has no artifact location")?;
    if location != expected.location {
        return Err(format!(
            "the agent reported its manifest at {location}, but this run writes to {}: refused",
            expected.location
        ));
    }
    Ok(())
}

/// Checks what a manifest says (scope, encryption) against what the policy asked for.
fn check_contents(
    expected: &ExpectedBackup,
    all_databases: Option<bool>,
    encrypted: bool,
) -> Result<(), String> {
    if let Some(all) = all_databases {
        let actual = BackupScope::from_all_databases(all);
        if actual != expected.scope {
            return Err(format!(
                "the manifest says scope {actual}, the policy backs up {}",
                expected.scope
            ));
        }
    }
    if encrypted != expected.encrypted {
        let word = |e: bool| if e { "encrypted" } else { "unencrypted" };
        return Err(format!(
            "the manifest says the backup is {}, the policy's backups are {}",
            word(encrypted),
            word(expected.encrypted)
        ));
    }
    Ok(())
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
#[tracing::instrument(name = "confirm_artifact", skip_all, fields(storage = %kube::ResourceExt::name_any(storage)))]
pub async fn confirm(
    client: &kube::Client,
    ns: &str,
    storage: &BackupStorage,
    report: &AgentReport,
    expected: &ExpectedBackup,
    egress: &crate::egress::EgressPolicy,
    allow_ambient: bool,
) -> Result<Confirmation, String> {
    check_location(report, expected)?;
    if storage.spec.s3.is_none() {
        // A PVC is mounted only by Job pods; the agent confirmed size and checksum after the
        // atomic rename, and the manifest exists only after that.
        let encryption = report
            .encryption
            .clone()
            .and_then(|v| serde_json::from_value::<EncryptionInfo>(v).ok());
        check_contents(expected, None, encryption.is_some())?;
        return Ok(Confirmation {
            retain_until: None,
            note: Some("confirmed by the agent on the volume".into()),
            manifest_sha256: report
                .manifest_sha256
                .clone()
                .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|d| d.to_ascii_lowercase()),
            encryption,
        });
    }
    let access = StorageAccess::open(client, ns, storage, egress, allow_ambient)
        .await
        .map_err(|e| format!("cannot open storage: {e}"))?;
    confirm_with(&access, report, expected).await
}

/// The checks, given an open storage.
pub async fn confirm_with(
    access: &StorageAccess,
    report: &AgentReport,
    expected: &ExpectedBackup,
) -> Result<Confirmation, String> {
    check_location(report, expected)?;
    let manifest_key = expected.key.as_str();
    let manifest = access
        .get(manifest_key, MANIFEST_LIMIT)
        .await
        .map_err(|e| match e {
            AccessError::NotFound(_) => {
                format!("manifest {manifest_key} is missing: the backup was not committed")
            }
            other => format!("reading manifest {manifest_key}: {other}"),
        })?;
    let digest = sha256_hex(&manifest);
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
    if let Some(bad) = view
        .artifacts
        .iter()
        .find(|a| !is_plain_relative_key(&a.key))
    {
        return Err(format!(
            "manifest {manifest_key} lists {:?}, which is not a plain key below its directory",
            bad.key
        ));
    }
    check_contents(expected, view.all_databases, view.encryption.is_some())?;
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
        manifest_sha256: Some(digest),
        encryption: view.encryption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Report as _;

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

    #[test]
    fn only_plain_relative_keys_are_accepted() {
        assert!(is_plain_relative_key("databases/shop.pgdump"));
        for bad in ["", "/etc/x", "../other/x", "a/../../b", "a//b", "./a", "a/"] {
            assert!(!is_plain_relative_key(bad), "{bad}");
        }
    }

    fn expected(scope: BackupScope, encrypted: bool) -> ExpectedBackup {
        ExpectedBackup {
            location: "s3://b/shop/r1/manifest.json".into(),
            key: "shop/r1/manifest.json".into(),
            scope,
            encrypted,
        }
    }

    #[test]
    fn a_report_elsewhere_or_a_manifest_claiming_another_scope_or_encryption_is_refused() {
        let mut report = AgentReport::parse(
            r#"{"status":"succeeded","operation":"backup","location":"s3://b/shop/r1/manifest.json"}"#,
        )
        .unwrap();
        let e = expected(BackupScope::Database, true);
        check_location(&report, &e).unwrap();
        report.location = Some("s3://b/other-tenant/r9/manifest.json".into());
        let why = check_location(&report, &e).unwrap_err();
        assert!(why.contains("refused"), "{why}");
        report.location = None;
        assert!(check_location(&report, &e).is_err());

        check_contents(&e, Some(false), true).unwrap();
        assert!(
            check_contents(&e, Some(true), true)
                .unwrap_err()
                .contains("AllDatabases")
        );
        assert!(
            check_contents(&e, Some(false), false)
                .unwrap_err()
                .contains("unencrypted")
        );
        assert!(check_contents(&expected(BackupScope::Database, false), None, true).is_err());
    }
}
