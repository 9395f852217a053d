//! `manifest.json`: the commit marker of a backup, written last next to its artifacts.
//!
//! Layout of one backup run under the destination (`s3://bucket/prefix/<run-id>/` or
//! `file:///dir/<run-id>/`):
//!
//! ```text
//! <run-id>/
//!   databases/<db>.pgdump[.zst|.gz][.age] PostgreSQL: one pg_dump custom archive per database
//!   globals.sql[...]                     PostgreSQL --all-databases: roles and tablespaces
//!   <db>.sql[.zst|.gz][.age]             single MySQL/MariaDB database (mariadb-dump SQL)
//!   all-databases.sql[...]               MySQL --all-databases: one SQL stream
//!   manifest.json                        written last; without it, the run is not a backup
//! ```
//!
//! Artifact keys in the manifest are relative to the manifest's own directory, so a backup can
//! be copied to another bucket or directory and still restore.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compress::Compression;

/// The manifest format version this agent writes and understands.
pub const FORMAT_VERSION: u32 = 1;

/// Which database engine produced a backup: the API's one engine type.
pub use crate::api::common::Engine;

/// The manifest's types shared with the summary and the operator.
pub use crate::contract::manifest::{
    ArtifactKind, ConfirmedBy, EncryptionInfo, MANIFEST_NAME, TableCount,
};

/// The payload format inside the compression and encryption layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// `pg_dump -Fc -Z0` archive, restored with `pg_restore`.
    PgDumpCustom,
    /// Plain SQL (pg_dumpall globals, mariadb-dump), restored with the SQL client.
    Sql,
}

/// One stored object of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Key relative to the manifest's directory.
    pub key: String,
    /// What it holds.
    pub kind: ArtifactKind,
    /// The database it holds (for `Database` artifacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Payload format.
    pub format: PayloadFormat,
    /// Bytes stored (after compression and encryption).
    pub size_bytes: u64,
    /// Bytes produced by the dump (before compression).
    pub raw_bytes: u64,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// Per-table exact row counts, taken consistently with the dump.
    pub tables: Vec<TableCount>,
    /// Wall time of this artifact's dump and upload.
    pub duration_seconds: f64,
    /// How the store confirmed the upload (absent in manifests of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<ConfirmedBy>,
}

/// The manifest of one backup run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// The agent that wrote it (`dataguardian <version>`).
    pub tool: String,
    /// Database engine.
    pub engine: Engine,
    /// Server version reported by the source.
    pub server_version: String,
    /// The dump tool that wrote the artifacts, as its `--version` prints it (`pg_dump
    /// (PostgreSQL) 15.20 (Debian …)`, `mariadb-dump from 10.11.19-MariaDB, …`). A restore
    /// picks a `pg_restore` not older than it. Absent in manifests of older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_tool: Option<String>,
    /// The database backed up, or `None` with `all_databases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whether every database (and PostgreSQL globals) is included.
    pub all_databases: bool,
    /// Compression of every artifact.
    pub compression: Compression,
    /// Encryption of every artifact, `None` when unencrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// The artifacts, in restore order.
    pub artifacts: Vec<Artifact>,
    /// When the backup started.
    pub started_at: DateTime<Utc>,
    /// When the last artifact was confirmed in storage.
    pub completed_at: DateTime<Utc>,
    /// Wall time of the whole backup.
    pub duration_seconds: f64,
}

impl Manifest {
    /// Sum of stored bytes over all artifacts.
    pub fn size_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size_bytes).sum()
    }

    /// Sum of raw dump bytes over all artifacts.
    pub fn raw_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.raw_bytes).sum()
    }

    /// Number of tables over all artifacts.
    pub fn table_count(&self) -> usize {
        self.artifacts.iter().map(|a| a.tables.len()).sum()
    }

    /// Number of rows over all artifacts.
    pub fn row_count(&self) -> u64 {
        self.artifacts
            .iter()
            .flat_map(|a| &a.tables)
            .map(|t| t.rows)
            .sum()
    }

    /// Check the manifest is one this agent can restore.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "manifest format version {} is not supported (this agent reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.artifacts.is_empty() {
            return Err("manifest lists no artifacts".into());
        }
        for a in &self.artifacts {
            if a.key.starts_with('/') || a.key.split('/').any(|p| p == ".." || p.is_empty()) {
                return Err(format!(
                    "artifact key {:?} is not a plain relative key",
                    a.key
                ));
            }
            if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("artifact {:?} has an invalid sha256", a.key));
            }
        }
        Ok(())
    }
}

/// The artifact file name for one database or globals stream.
pub fn artifact_name(
    engine: Engine,
    kind: ArtifactKind,
    database: Option<&str>,
    compression: Compression,
    encrypted: bool,
) -> String {
    let base = match (engine, kind) {
        (Engine::Postgres, ArtifactKind::Globals) => "globals.sql".to_string(),
        (Engine::Postgres, ArtifactKind::Database) => {
            format!(
                "databases/{}.pgdump",
                sanitize(database.unwrap_or("database"))
            )
        }
        (Engine::Mysql, ArtifactKind::Database) => {
            format!("{}.sql", sanitize(database.unwrap_or("database")))
        }
        (_, ArtifactKind::AllDatabases) | (Engine::Mysql, ArtifactKind::Globals) => {
            "all-databases.sql".into()
        }
    };
    format!(
        "{base}{}{}",
        compression.suffix(),
        if encrypted { ".age" } else { "" }
    )
}

/// Make a database name safe as a key segment (anything but `[A-Za-z0-9._-]` becomes `_`,
/// followed by a short hash when anything was replaced so distinct names stay distinct).
pub fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean == name && !clean.is_empty() {
        clean
    } else {
        format!("{clean}-{}", &super::hash::sha256_hex(name.as_bytes())[..8])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest of one encrypted database (also the summary tests' fixture).
    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tool: "dataguardian test".into(),
            engine: Engine::Postgres,
            server_version: "15.8".into(),
            dump_tool: None,
            database: Some("shop".into()),
            all_databases: false,
            compression: Compression::Zstd { level: 3 },
            encryption: Some(EncryptionInfo {
                scheme: "age-x25519".into(),
                recipients: vec!["sha256:00".into()],
            }),
            artifacts: vec![Artifact {
                key: "databases/shop.pgdump.zst.age".into(),
                kind: ArtifactKind::Database,
                database: Some("shop".into()),
                format: PayloadFormat::PgDumpCustom,
                size_bytes: 10,
                raw_bytes: 30,
                sha256: "a".repeat(64),
                tables: vec![TableCount {
                    schema: "public".into(),
                    name: "t".into(),
                    rows: 5,
                }],
                duration_seconds: 1.5,
                confirmed_by: Some(ConfirmedBy::Md5Etag),
            }],
            started_at: Utc::now(),
            completed_at: Utc::now(),
            duration_seconds: 2.0,
        }
    }

    #[test]
    fn json_round_trip_and_shape() {
        let m = sample();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["compression"]["algorithm"], "zstd");
        assert_eq!(json["compression"]["level"], 3);
        assert_eq!(json["artifacts"][0]["sizeBytes"], 10);
        assert_eq!(json["artifacts"][0]["format"], "pg-dump-custom");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        assert!(m.validate().is_ok());
        assert_eq!(m.row_count(), 5);
    }

    #[test]
    fn the_confirmation_is_recorded_and_older_manifests_without_it_still_parse() {
        let m = sample();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["artifacts"][0]["confirmedBy"], "md5-etag");
        let mut old = json.clone();
        old["artifacts"][0]
            .as_object_mut()
            .unwrap()
            .remove("confirmedBy");
        let back: Manifest = serde_json::from_value(old).unwrap();
        assert_eq!(back.artifacts[0].confirmed_by, None);
        assert!(back.validate().is_ok());
        let mut unset = m.clone();
        unset.artifacts[0].confirmed_by = None;
        let json = serde_json::to_value(&unset).unwrap();
        assert!(json["artifacts"][0].get("confirmedBy").is_none());
    }

    #[test]
    fn validation_rejects_escaping_keys_and_bad_digests() {
        let mut m = sample();
        m.artifacts[0].key = "../x".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.artifacts[0].sha256 = "zz".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.format_version = 99;
        assert!(m.validate().is_err());
    }

    #[test]
    fn names() {
        let c = Compression::Zstd { level: 3 };
        assert_eq!(
            artifact_name(
                Engine::Postgres,
                ArtifactKind::Database,
                Some("shop"),
                c,
                true
            ),
            "databases/shop.pgdump.zst.age"
        );
        assert_eq!(
            artifact_name(
                Engine::Mysql,
                ArtifactKind::Database,
                Some("shop"),
                Compression::None,
                false
            ),
            "shop.sql"
        );
        assert_eq!(
            artifact_name(Engine::Postgres, ArtifactKind::Globals, None, c, false),
            "globals.sql.zst"
        );
        assert_eq!(sanitize("shop"), "shop");
        assert!(sanitize("a/b").starts_with("a_b-"));
        assert_ne!(sanitize("a/b"), sanitize("a?b"));
    }

    #[test]
    fn the_operator_reads_what_the_agent_writes() {
        let m = sample();
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        let view = crate::contract::ManifestView::parse(&bytes).unwrap();
        assert_eq!(view.artifacts.len(), m.artifacts.len());
        assert_eq!(view.artifacts[0].key, m.artifacts[0].key);
        assert_eq!(view.artifacts[0].size_bytes, m.artifacts[0].size_bytes);
        assert_eq!(view.artifacts[0].sha256, m.artifacts[0].sha256);
    }
}
