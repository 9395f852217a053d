//! `manifest.json` as far as both sides share it.
//!
//! The agent owns the full format (`agent::manifest::Manifest`: it writes it, and reads it back
//! strictly to restore). The types here are the pieces the manifest and the summary
//! share (an artifact's kind, its table counts, the encryption description), and the view the
//! operator reads to confirm a backup independently of the agent: only the artifact list, and of
//! each artifact only its key, size and SHA-256. The view ignores everything else, so an
//! operator still confirms backups written by an agent image of another version (the Job
//! template may pin one) as long as those three fields keep their meaning.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::api::backup_run::BackupScope;

/// File name of the manifest inside a backup's directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// What one artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArtifactKind {
    /// One database.
    Database,
    /// Cluster-wide objects (PostgreSQL roles and tablespaces from `pg_dumpall --globals-only`).
    Globals,
    /// Every database in one SQL stream (MySQL `--all-databases`); in the parallel layout every
    /// database's `CREATE DATABASE`, views, routines and events, the tables being in
    /// `TableData` artifacts without a database.
    AllDatabases,
    /// The rows of some tables of one database, dumped in parallel inside the database
    /// artifact's snapshot (the parallel layout): restored after the database artifact's
    /// pre-data section and before its post-data section. MySQL/MariaDB: the tables' structure,
    /// rows and triggers, restored before the database artifact; with all databases the tables
    /// of any databases (the artifact names no database; `dataTables` name each table's).
    TableData,
}

/// Row count of one table, taken consistently with the dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableCount {
    /// Schema (PostgreSQL) or database (MySQL) of the table.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Exact number of rows.
    pub rows: u64,
}

/// How the agent confirmed that a stored object holds exactly the bytes it wrote (recorded per
/// artifact in the manifest and in the backup and copy summaries). An upload that none of these
/// confirms fails: it is never trusted on the server's word alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmedBy {
    /// The server's SHA-256 checksum (the S3 checksum extension; for a multipart upload the
    /// composite over the parts' digests) equals the one computed while writing.
    Sha256Checksum,
    /// The server has no checksum extension: its ETag equals the one computed locally, the MD5
    /// of the body, or for a multipart upload the MD5 of the parts' MD5s suffixed `-<parts>`.
    Md5Etag,
    /// Neither is available (or the ETag is not an MD5, e.g. with SSE-KMS): the stored object
    /// was read back and its size and SHA-256 recomputed.
    ReadBack,
    /// A local file: written, fsynced and renamed into place, its size checked (the SHA-256 is
    /// computed on the bytes as they are written).
    LocalFile,
}

impl ConfirmedBy {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfirmedBy::Sha256Checksum => "sha256-checksum",
            ConfirmedBy::Md5Etag => "md5-etag",
            ConfirmedBy::ReadBack => "read-back",
            ConfirmedBy::LocalFile => "local-file",
        }
    }
}

impl std::fmt::Display for ConfirmedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `encryption.scheme` of a manifest written before envelope encryption (format 1): its
/// artifacts are encrypted straight to the recipients and no re-wrap can re-key them.
pub const DIRECT_ENCRYPTION_SCHEME: &str = "age-x25519";

/// Encryption of the artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInfo {
    /// Always `age-x25519`.
    pub scheme: String,
    /// Fingerprints of the recipients' public keys (never identities).
    pub recipients: Vec<String>,
}

/// Whether `key` is a plain key relative to the manifest's directory: no leading `/`, no
/// empty, `.` or `..` segment.
pub fn is_plain_relative_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The part of a manifest the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    /// The artifacts, in restore order.
    pub artifacts: Vec<ManifestArtifactView>,
    /// Whether every database is included (absent in a manifest of another format: unknown).
    #[serde(default)]
    pub all_databases: Option<bool>,
    /// Encryption of the artifacts (absent or `null`: unencrypted).
    #[serde(default)]
    pub encryption: Option<EncryptionInfo>,
}

/// Agent flag (and `DG_MANIFEST_SHA256`): the hex SHA-256 the manifest's bytes must have.
pub const MANIFEST_SHA256_FLAG: &str = "--manifest-sha256";
/// Agent flag (and `DG_EXPECT_ENCRYPTION`): `none` or `age`.
pub const EXPECT_ENCRYPTION_FLAG: &str = "--expect-encryption";
/// Agent flag (and `DG_EXPECT_RECIPIENTS`, comma-separated): a recipient fingerprint the
/// manifest must list; the set must match exactly.
pub const EXPECT_RECIPIENT_FLAG: &str = "--expect-recipient";
/// Agent flag (and `DG_EXPECT_SCOPE`): `Database` or `AllDatabases`.
pub const EXPECT_SCOPE_FLAG: &str = "--expect-scope";

/// The encryption a restore or validation expects, as the operator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedEncryption {
    /// The backup was written unencrypted.
    None,
    /// The backup was age-encrypted; with fingerprints, to exactly these recipients.
    Age {
        /// Recipient fingerprints (`sha256:…`); empty: any.
        recipients: Vec<String>,
    },
}

/// The encryption modes of `--expect-encryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionMode {
    /// Unencrypted.
    None,
    /// age.
    Age,
}

impl EncryptionMode {
    /// Every mode.
    pub const ALL: [EncryptionMode; 2] = [EncryptionMode::None, EncryptionMode::Age];

    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionMode::None => "none",
            EncryptionMode::Age => "age",
        }
    }
}

impl std::str::FromStr for EncryptionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EncryptionMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown encryption mode {s:?} (none or age)"))
    }
}

/// What the operator recorded about a backup when it confirmed it, handed to the restore and
/// validation agents so that they believe nothing the bucket says on its own: the manifest must
/// hash to the recorded digest (which pins every artifact's digest it lists), and its
/// encryption and scope must be the recorded ones. `None` fields are not checked (a backup
/// restored by storage and key, with nothing recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactPin {
    /// Hex SHA-256 of the manifest's bytes.
    pub manifest_sha256: Option<String>,
    /// Expected encryption.
    pub encryption: Option<ExpectedEncryption>,
    /// Expected scope.
    pub scope: Option<BackupScope>,
}

/// Why a manifest does not match its pin (shown in status; holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinMismatch {
    /// The manifest's bytes hash to another digest.
    #[error(
        "the manifest has sha256 {actual}, the backup recorded {expected}: it was replaced or altered"
    )]
    ManifestDigest {
        /// Recorded digest.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },
    /// The manifest says unencrypted, the backup was encrypted (or the reverse).
    #[error("the manifest says the backup is {actual}, the backup recorded {expected}")]
    Encryption {
        /// Recorded.
        expected: &'static str,
        /// In the manifest.
        actual: &'static str,
    },
    /// The recipients differ.
    #[error("the manifest lists recipients [{actual}], the backup recorded [{expected}]")]
    Recipients {
        /// Recorded.
        expected: String,
        /// In the manifest.
        actual: String,
    },
    /// The manifest's scope differs.
    #[error("the manifest says scope {actual}, the backup recorded {expected}")]
    Scope {
        /// Recorded.
        expected: BackupScope,
        /// In the manifest.
        actual: BackupScope,
    },
    /// A pin that is not a SHA-256.
    #[error("the recorded manifest digest {0:?} is not a hex SHA-256")]
    InvalidDigest(String),
}

/// Hex SHA-256 of `bytes` (lowercase).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn encryption_word(encrypted: bool) -> &'static str {
    if encrypted {
        "encrypted"
    } else {
        "unencrypted"
    }
}

impl ArtifactPin {
    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.manifest_sha256.is_none() && self.encryption.is_none() && self.scope.is_none()
    }

    /// Checks the manifest's raw bytes against the pinned digest (before they are parsed).
    pub fn check_bytes(&self, bytes: &[u8]) -> Result<(), PinMismatch> {
        let Some(expected) = &self.manifest_sha256 else {
            return Ok(());
        };
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PinMismatch::InvalidDigest(expected.clone()));
        }
        let actual = sha256_hex(bytes);
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(PinMismatch::ManifestDigest {
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
        Ok(())
    }

    /// Checks what a parsed manifest says against the pinned encryption and scope.
    pub fn check_contents(
        &self,
        encryption: Option<&EncryptionInfo>,
        all_databases: bool,
    ) -> Result<(), PinMismatch> {
        match (&self.encryption, encryption) {
            (None, _) => {}
            (Some(ExpectedEncryption::None), None) => {}
            (Some(ExpectedEncryption::None), Some(_)) => {
                return Err(PinMismatch::Encryption {
                    expected: encryption_word(false),
                    actual: encryption_word(true),
                });
            }
            (Some(ExpectedEncryption::Age { .. }), None) => {
                return Err(PinMismatch::Encryption {
                    expected: encryption_word(true),
                    actual: encryption_word(false),
                });
            }
            (Some(ExpectedEncryption::Age { recipients }), Some(info)) => {
                let mut want: Vec<&str> = recipients.iter().map(String::as_str).collect();
                let mut have: Vec<&str> = info.recipients.iter().map(String::as_str).collect();
                want.sort_unstable();
                want.dedup();
                have.sort_unstable();
                have.dedup();
                if !want.is_empty() && want != have {
                    return Err(PinMismatch::Recipients {
                        expected: want.join(", "),
                        actual: have.join(", "),
                    });
                }
            }
        }
        if let Some(expected) = self.scope {
            let actual = BackupScope::from_all_databases(all_databases);
            if actual != expected {
                return Err(PinMismatch::Scope { expected, actual });
            }
        }
        Ok(())
    }
}

/// The part of one listed artifact the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestArtifactView {
    /// Key relative to the manifest's directory.
    pub key: String,
    /// Bytes stored (after compression and encryption).
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub sha256: String,
}

impl ManifestView {
    /// Parses a manifest's bytes; the error text is shown in status.
    pub fn parse(bytes: &[u8]) -> Result<ManifestView, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as the agent writes it (`serde_json::to_vec_pretty` of
    /// `agent::manifest::Manifest`, format version 1).
    const WRITTEN: &str = r#"{
  "formatVersion": 1,
  "tool": "dataguardian 0.1.0",
  "engine": "postgres",
  "serverVersion": "15.8",
  "allDatabases": true,
  "compression": {
    "algorithm": "zstd",
    "level": 3
  },
  "encryption": {
    "scheme": "age-x25519",
    "recipients": [
      "sha256:00"
    ]
  },
  "artifacts": [
    {
      "key": "globals.sql.zst.age",
      "kind": "globals",
      "format": "sql",
      "sizeBytes": 7,
      "rawBytes": 20,
      "sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
      "tables": [],
      "durationSeconds": 0.5
    },
    {
      "key": "databases/shop.pgdump.zst.age",
      "kind": "database",
      "database": "shop",
      "format": "pg-dump-custom",
      "sizeBytes": 10,
      "rawBytes": 30,
      "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "tables": [
        {
          "schema": "public",
          "name": "t",
          "rows": 5
        }
      ],
      "durationSeconds": 1.5
    }
  ],
  "startedAt": "2026-11-22T10:00:00Z",
  "completedAt": "2026-11-22T10:00:02Z",
  "durationSeconds": 2.0
}"#;

    #[test]
    fn the_operator_reads_key_size_and_digest_of_every_artifact() {
        let view = ManifestView::parse(WRITTEN.as_bytes()).unwrap();
        assert_eq!(
            view,
            ManifestView {
                artifacts: vec![
                    ManifestArtifactView {
                        key: "globals.sql.zst.age".into(),
                        size_bytes: 7,
                        sha256: "b".repeat(64),
                    },
                    ManifestArtifactView {
                        key: "databases/shop.pgdump.zst.age".into(),
                        size_bytes: 10,
                        sha256: "a".repeat(64),
                    },
                ],
                all_databases: Some(true),
                encryption: Some(EncryptionInfo {
                    scheme: "age-x25519".into(),
                    recipients: vec!["sha256:00".into()],
                }),
            }
        );
    }

    fn enc(recipients: &[&str]) -> EncryptionInfo {
        EncryptionInfo {
            scheme: "age-x25519".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_pin_refuses_another_digest_encryption_recipients_or_scope() {
        let bytes = WRITTEN.as_bytes();
        let pin = ArtifactPin {
            manifest_sha256: Some(sha256_hex(bytes).to_uppercase()),
            encryption: Some(ExpectedEncryption::Age {
                recipients: vec!["sha256:00".into()],
            }),
            scope: Some(BackupScope::AllDatabases),
        };
        pin.check_bytes(bytes).unwrap();
        pin.check_contents(Some(&enc(&["sha256:00"])), true)
            .unwrap();

        let mut swapped = bytes.to_vec();
        swapped.push(b'\n');
        assert!(matches!(
            pin.check_bytes(&swapped),
            Err(PinMismatch::ManifestDigest { .. })
        ));
        let e = pin.check_contents(None, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the manifest says the backup is unencrypted, the backup recorded encrypted"
        );
        assert!(matches!(
            pin.check_contents(Some(&enc(&["sha256:00", "sha256:11"])), true),
            Err(PinMismatch::Recipients { .. })
        ));
        assert!(matches!(
            pin.check_contents(Some(&enc(&["sha256:00"])), false),
            Err(PinMismatch::Scope {
                expected: BackupScope::AllDatabases,
                actual: BackupScope::Database
            })
        ));
        let unencrypted = ArtifactPin {
            encryption: Some(ExpectedEncryption::None),
            ..Default::default()
        };
        assert!(
            unencrypted
                .check_contents(Some(&enc(&["x"])), false)
                .is_err()
        );
        unencrypted.check_contents(None, true).unwrap();
        // A pin that is not a digest never matches anything.
        let bad = ArtifactPin {
            manifest_sha256: Some("abc".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad.check_bytes(bytes),
            Err(PinMismatch::InvalidDigest(_))
        ));
        // Nothing pinned: nothing checked.
        assert!(ArtifactPin::default().is_empty());
        ArtifactPin::default().check_bytes(b"anything").unwrap();
    }

    #[test]
    fn the_view_reads_manifests_that_record_how_each_upload_was_confirmed() {
        let with = WRITTEN.replace(
            r#""durationSeconds": 1.5"#,
            r#""durationSeconds": 1.5, "confirmedBy": "md5-etag""#,
        );
        assert_ne!(with, WRITTEN);
        let view = ManifestView::parse(with.as_bytes()).unwrap();
        assert_eq!(view, ManifestView::parse(WRITTEN.as_bytes()).unwrap());
        // A value this operator does not know yet is still read (the view ignores the field).
        let newer = WRITTEN.replace(
            r#""durationSeconds": 1.5"#,
            r#""durationSeconds": 1.5, "confirmedBy": "quantum-proof""#,
        );
        assert_eq!(
            ManifestView::parse(newer.as_bytes())
                .unwrap()
                .artifacts
                .len(),
            2
        );
        for c in [
            ConfirmedBy::Sha256Checksum,
            ConfirmedBy::Md5Etag,
            ConfirmedBy::ReadBack,
            ConfirmedBy::LocalFile,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn the_view_ignores_what_it_does_not_read_but_needs_what_it_does() {
        // Another format version with fields this operator has never seen still confirms.
        let newer = r#"{"formatVersion":2,"engine":"mongodb","artifacts":[{"key":"a","sizeBytes":1,"sha256":"00","kind":"oplog"}]}"#;
        assert_eq!(
            ManifestView::parse(newer.as_bytes()).unwrap().artifacts[0].key,
            "a"
        );
        // Without a size there is nothing to confirm.
        assert!(ManifestView::parse(br#"{"artifacts":[{"key":"a","sha256":"00"}]}"#).is_err());
        assert!(ManifestView::parse(b"{}").is_err());
    }

    #[test]
    fn shared_types_keep_their_wire_names() {
        assert_eq!(
            serde_json::to_value([
                ArtifactKind::Database,
                ArtifactKind::Globals,
                ArtifactKind::AllDatabases,
                ArtifactKind::TableData
            ])
            .unwrap(),
            serde_json::json!(["database", "globals", "allDatabases", "tableData"])
        );
        let t = TableCount {
            schema: "public".into(),
            name: "t".into(),
            rows: 5,
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"schema":"public","name":"t","rows":5}"#
        );
        let e = EncryptionInfo {
            scheme: "age-x25519".into(),
            recipients: vec!["sha256:00".into()],
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"scheme":"age-x25519","recipients":["sha256:00"]}"#
        );
    }
}
