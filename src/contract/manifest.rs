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
    /// Every database in one SQL stream (MySQL `--all-databases`).
    AllDatabases,
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

/// Encryption of the artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInfo {
    /// Always `age-x25519`.
    pub scheme: String,
    /// Fingerprints of the recipients' public keys (never identities).
    pub recipients: Vec<String>,
}

/// The part of a manifest the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    /// The artifacts, in restore order.
    pub artifacts: Vec<ManifestArtifactView>,
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
            }
        );
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
                ArtifactKind::AllDatabases
            ])
            .unwrap(),
            serde_json::json!(["database", "globals", "allDatabases"])
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
