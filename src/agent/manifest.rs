//! `manifest.json`: the commit marker of a backup, written last next to its artifacts.
//!
//! Layout of one backup run under the destination (`s3://bucket/prefix/<run-id>/` or
//! `file:///dir/<run-id>/`):
//!
//! ```text
//! <run-id>/
//!   databases/<db>.pgdump[.zst|.gz][.age] PostgreSQL: one pg_dump custom archive per database
//!   databases/<db>.tables/<NNN>.pgdump[...] PostgreSQL parallel layout: the rows of some tables
//!                                        (`pg_dump --data-only -t …` in the same snapshot); the
//!                                        database archive then holds everything but their rows
//!   globals.sql[...]                     PostgreSQL --all-databases: roles and tablespaces
//!   <db>.sql[.zst|.gz][.age]             single MySQL/MariaDB database (mariadb-dump SQL)
//!   all-databases.sql[...]               MySQL --all-databases: one SQL stream
//!   <db>.tables/<NNN>.sql[...]           MySQL parallel layout: some tables of <db> (structure,
//!                                        rows, triggers); <db>.sql then holds the rest
//!   all-databases.tables/<NNN>.sql[...]  MySQL --all-databases parallel layout: some tables of
//!                                        any databases (each with CREATE DATABASE IF NOT EXISTS
//!                                        and USE); all-databases.sql then holds every database's
//!                                        CREATE DATABASE, views, routines and events
//!   manifest.json                        written last; without it, the run is not a backup
//! ```
//!
//! Artifact keys in the manifest are relative to the manifest's own directory, so a backup can
//! be copied to another bucket or directory and still restore.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compress::Compression;

/// The manifest format version of the single-stream layout without a wrapped data key
/// (unencrypted, or — written by older agents — encrypted straight to the recipients).
pub const FORMAT_VERSION: u32 = 1;

/// The manifest format version of envelope-encrypted single-stream backups (a `dataKey` with
/// its wraps): an older agent, which could not open them, says so instead of trying the
/// identity on the artifacts.
pub const ENVELOPE_FORMAT_VERSION: u32 = 2;

/// The manifest format version of a backup with the parallel layout (`tableData` artifacts
/// beside a database artifact), with or without a wrapped data key. Agents that know only
/// versions 1 and 2 refuse such a manifest with a clear message instead of restoring the schema
/// without the rows.
pub const PARALLEL_FORMAT_VERSION: u32 = 3;

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
    /// Per-table exact row counts, taken consistently with the dump. A database artifact of
    /// the parallel layout lists every table of the database here (its rows may be stored in
    /// `tableData` artifacts); a `tableData` artifact lists none (see `data_tables`).
    pub tables: Vec<TableCount>,
    /// `tableData` artifacts: the tables whose rows this object holds, with their counts (the
    /// same counts as the database artifact's). Not summed into the manifest's totals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_tables: Vec<TableCount>,
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
    /// The run's data key, only wrapped (age and/or KMS): the artifacts are encrypted to it.
    /// Absent when unencrypted, and in manifests of older agents (artifacts encrypted straight
    /// to the recipients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key: Option<super::envelope::DataKeyWraps>,
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

    /// Whether the backup has the parallel layout (`tableData` artifacts).
    pub fn is_parallel(&self) -> bool {
        self.artifacts
            .iter()
            .any(|a| a.kind == ArtifactKind::TableData)
    }

    /// Check the manifest is one this agent can restore.
    pub fn validate(&self) -> Result<(), String> {
        match (self.format_version, &self.data_key, &self.encryption) {
            (FORMAT_VERSION, None, _) => {}
            (ENVELOPE_FORMAT_VERSION | PARALLEL_FORMAT_VERSION, Some(wraps), Some(_)) => {
                if wraps.is_empty() {
                    return Err("the manifest's data key has no wrap: nothing can open it".into());
                }
            }
            // A parallel backup without a data key: unencrypted, or encrypted to the recipients.
            (PARALLEL_FORMAT_VERSION, None, _) => {}
            (FORMAT_VERSION | ENVELOPE_FORMAT_VERSION | PARALLEL_FORMAT_VERSION, _, _) => {
                return Err(format!(
                    "manifest format version {} does not match its encryption (a data key is \
                     recorded with version {ENVELOPE_FORMAT_VERSION} or {PARALLEL_FORMAT_VERSION} \
                     and encryption only)",
                    self.format_version
                ));
            }
            (v, _, _) => {
                return Err(format!(
                    "manifest format version {v} is not supported (this agent reads \
                     {FORMAT_VERSION}, {ENVELOPE_FORMAT_VERSION} and {PARALLEL_FORMAT_VERSION})"
                ));
            }
        }
        if self.artifacts.is_empty() {
            return Err("manifest lists no artifacts".into());
        }
        let parallel = self.is_parallel();
        if parallel != (self.format_version == PARALLEL_FORMAT_VERSION) {
            return Err(format!(
                "manifest format version {} does not match its layout ({})",
                self.format_version,
                if parallel {
                    "tableData artifacts need version 3"
                } else {
                    "version 3 without tableData artifacts"
                }
            ));
        }
        for a in self
            .artifacts
            .iter()
            .filter(|a| a.kind == ArtifactKind::TableData)
        {
            let format = match self.engine {
                Engine::Postgres => PayloadFormat::PgDumpCustom,
                Engine::Mysql => PayloadFormat::Sql,
            };
            // A part belongs to its database's artifact; a MySQL all-databases part (its tables
            // may span databases, each named in `dataTables`) to the all-databases artifact.
            let owner = self.artifacts.iter().any(|d| {
                d.format == format
                    && d.database == a.database
                    && match (&a.database, d.kind) {
                        (Some(_), ArtifactKind::Database) => true,
                        (None, ArtifactKind::AllDatabases) => {
                            self.engine == Engine::Mysql && self.all_databases
                        }
                        _ => false,
                    }
            });
            if !owner || a.format != format {
                return Err(format!(
                    "tableData artifact {:?} belongs to no database artifact of its format",
                    a.key
                ));
            }
            if a.data_tables.is_empty() || !a.tables.is_empty() {
                return Err(format!(
                    "tableData artifact {:?} must name its tables in dataTables only",
                    a.key
                ));
            }
        }
        for a in &self.artifacts {
            // The operator's rule (a `.` segment too), so both sides accept the same manifests.
            if !crate::contract::manifest::is_plain_relative_key(&a.key) {
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
        (_, ArtifactKind::TableData) => {
            format!(
                "databases/{}.tables/data.pgdump",
                sanitize(database.unwrap_or("database"))
            )
        }
    };
    format!(
        "{base}{}{}",
        compression.suffix(),
        if encrypted { ".age" } else { "" }
    )
}

/// The key of the `index`-th `tableData` artifact of `database` (parallel layout):
/// `databases/<db>.tables/<NNN>.pgdump[.zst|.gz][.age]` (PostgreSQL) or
/// `<db>.tables/<NNN>.sql[…]` (MySQL/MariaDB, beside its `<db>.sql…`).
pub fn table_data_name(
    engine: Engine,
    database: &str,
    index: usize,
    compression: Compression,
    encrypted: bool,
) -> String {
    let (dir, ext) = match engine {
        Engine::Postgres => ("databases/", "pgdump"),
        Engine::Mysql => ("", "sql"),
    };
    format!(
        "{dir}{}.tables/{index:03}.{ext}{}{}",
        sanitize(database),
        compression.suffix(),
        if encrypted { ".age" } else { "" }
    )
}

/// Make a database name safe as a key segment (anything but `[A-Za-z0-9._-]` becomes `_`,
/// followed by `~` and a hash when anything was replaced so distinct names stay distinct: a
/// name kept as it is never holds `~`, so no database can be named after another's hashed
/// form and overwrite its artifact in an all-databases backup).
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
        format!(
            "{clean}~{}",
            &super::hash::sha256_hex(name.as_bytes())[..16]
        )
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
            data_key: None,
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
                data_tables: vec![],
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
        assert!(sanitize("a/b").starts_with("a_b~"));
        assert_ne!(sanitize("a/b"), sanitize("a?b"));
    }

    /// `sample()` in the parallel layout: the database artifact and one `tableData` artifact.
    pub(crate) fn parallel_sample() -> Manifest {
        let mut m = sample();
        m.format_version = PARALLEL_FORMAT_VERSION;
        let mut part = m.artifacts[0].clone();
        part.key = table_data_name(Engine::Postgres, "shop", 0, m.compression, true);
        part.kind = ArtifactKind::TableData;
        part.data_tables = std::mem::take(&mut part.tables);
        m.artifacts.push(part);
        m
    }

    #[test]
    fn the_parallel_layout_is_version_3_and_its_parts_belong_to_a_database() {
        let m = parallel_sample();
        assert_eq!(
            m.artifacts[1].key,
            "databases/shop.tables/000.pgdump.zst.age"
        );
        assert!(m.validate().is_ok() && m.is_parallel());
        // Counts are not summed twice.
        assert_eq!((m.row_count(), m.table_count()), (5, 1));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["artifacts"][1]["kind"], "tableData");
        assert_eq!(json["artifacts"][1]["dataTables"][0]["rows"], 5);
        assert!(json["artifacts"][0].get("dataTables").is_none());
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), m);
        // The operator's view lists every object, the parts included (copies and pruning
        // handle them like any artifact).
        let view = crate::contract::ManifestView::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(
            view.artifacts
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>(),
            m.artifacts
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>()
        );
        let mut v1 = m.clone();
        v1.format_version = FORMAT_VERSION;
        assert!(v1.validate().unwrap_err().contains("need version 3"));
        let mut v2 = sample();
        v2.format_version = PARALLEL_FORMAT_VERSION;
        assert!(v2.validate().is_err());
        let mut orphan = m.clone();
        orphan.artifacts[1].database = Some("other".into());
        assert!(orphan.validate().unwrap_err().contains("belongs to no"));
        let mut unnamed = m.clone();
        unnamed.artifacts[1].data_tables.clear();
        assert!(unnamed.validate().is_err());
        // MySQL parts are SQL beside an SQL database artifact.
        let mut mysql = m;
        mysql.engine = Engine::Mysql;
        assert!(mysql.validate().is_err());
        for a in &mut mysql.artifacts {
            a.format = PayloadFormat::Sql;
        }
        assert!(mysql.validate().is_ok());
        assert_eq!(
            table_data_name(Engine::Mysql, "shop", 2, Compression::None, false),
            "shop.tables/002.sql"
        );
        // MySQL all databases: parts without a database belong to the all-databases artifact
        // (their tables, of any database, named in dataTables); nowhere else.
        let mut all = mysql.clone();
        all.all_databases = true;
        all.database = None;
        all.artifacts[0].kind = ArtifactKind::AllDatabases;
        all.artifacts[0].database = None;
        all.artifacts[1].database = None;
        assert!(all.validate().is_ok(), "{:?}", all.validate());
        let mut one_db = all.clone();
        one_db.all_databases = false;
        assert!(one_db.validate().unwrap_err().contains("belongs to no"));
        let mut pg_all = all.clone();
        pg_all.engine = Engine::Postgres;
        for a in &mut pg_all.artifacts {
            a.format = PayloadFormat::PgDumpCustom;
        }
        assert!(pg_all.validate().unwrap_err().contains("belongs to no"));
        let mut named = all;
        named.artifacts[1].database = Some("shop".into());
        assert!(named.validate().unwrap_err().contains("belongs to no"));
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

/// Properties of the manifest, the file a restore, a copy, a prune and the operator read back
/// from storage: it round-trips, both readers agree on it, and no bytes make them panic.
#[cfg(test)]
mod props {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::contract::manifest::{ManifestView, is_plain_relative_key};

    fn config() -> ProptestConfig {
        crate::proptest_config(128)
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..4_102_444_800, 0u32..1_000_000_000)
            .prop_map(|(s, ns)| Utc.timestamp_opt(s, ns).single().expect("in range"))
    }

    fn seconds() -> impl Strategy<Value = f64> {
        (0u32..10_000_000).prop_map(|ms| f64::from(ms) / 1000.0)
    }

    fn compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            (1i32..=22).prop_map(|level| Compression::Zstd { level }),
            (0u32..=9).prop_map(|level| Compression::Gzip { level }),
            Just(Compression::None),
        ]
    }

    fn artifact(
        engine: Engine,
        compression: Compression,
        encrypted: bool,
    ) -> impl Strategy<Value = Artifact> {
        (
            proptest::option::of(text(64)),
            prop_oneof![
                Just(ArtifactKind::Database),
                Just(ArtifactKind::Globals),
                Just(ArtifactKind::AllDatabases)
            ],
            (any::<u64>(), any::<u64>()),
            "[0-9a-f]{64}",
            proptest::collection::vec(
                (text(30), text(30), any::<u64>()).prop_map(|(schema, name, rows)| TableCount {
                    schema,
                    name,
                    rows,
                }),
                0..5,
            ),
            seconds(),
        )
            .prop_map(
                move |(database, kind, (size_bytes, raw_bytes), sha256, tables, d)| Artifact {
                    key: artifact_name(engine, kind, database.as_deref(), compression, encrypted),
                    kind,
                    database,
                    format: PayloadFormat::Sql,
                    size_bytes,
                    raw_bytes,
                    sha256,
                    tables,
                    data_tables: Vec::new(),
                    duration_seconds: d,
                    confirmed_by: None,
                },
            )
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            prop_oneof![Just(Engine::Postgres), Just(Engine::Mysql)],
            compression(),
            proptest::option::of(proptest::collection::vec("sha256:[0-9a-f]{64}", 1..4)),
        )
            .prop_flat_map(|(engine, compression, recipients)| {
                let encrypted = recipients.is_some();
                (
                    Just((engine, compression, recipients)),
                    (
                        text(40),
                        text(20),
                        proptest::option::of(text(80)),
                        proptest::option::of(text(64)),
                        any::<bool>(),
                    ),
                    proptest::collection::vec(artifact(engine, compression, encrypted), 1..6),
                    (instant(), instant(), seconds()),
                )
            })
            .prop_map(
                |(
                    (engine, compression, recipients),
                    (tool, server_version, dump_tool, database, all_databases),
                    artifacts,
                    (started_at, completed_at, duration_seconds),
                )| Manifest {
                    format_version: FORMAT_VERSION,
                    tool,
                    engine,
                    server_version,
                    dump_tool,
                    database,
                    all_databases,
                    compression,
                    encryption: recipients.map(|recipients| EncryptionInfo {
                        scheme: "age-x25519".into(),
                        recipients,
                    }),
                    data_key: None,
                    artifacts,
                    started_at,
                    completed_at,
                    duration_seconds,
                },
            )
    }

    proptest! {
        #![proptest_config(config())]

        /// Written then read, a manifest is the one written; it validates; the operator's view
        /// of the same bytes lists the same keys, sizes and digests.
        #[test]
        fn a_written_manifest_reads_back_and_both_sides_agree(m in manifest()) {
            let bytes = serde_json::to_vec_pretty(&m).unwrap();
            let back: Manifest = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.validate(), Ok(()));
            let view = ManifestView::parse(&bytes).unwrap();
            prop_assert_eq!(view.artifacts.len(), m.artifacts.len());
            for (v, a) in view.artifacts.iter().zip(&m.artifacts) {
                prop_assert_eq!(&v.key, &a.key);
                prop_assert_eq!(v.size_bytes, a.size_bytes);
                prop_assert_eq!(&v.sha256, &a.sha256);
            }
            prop_assert_eq!(view.all_databases, Some(m.all_databases));
            prop_assert_eq!(view.encryption, m.encryption);
        }

        /// Whatever bytes sit where a manifest should be, neither reader panics, and a manifest
        /// the agent accepts lists only keys the operator accepts too.
        #[test]
        fn no_bytes_make_a_reader_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ManifestView::parse(&bytes);
            if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes)
                && m.validate().is_ok()
            {
                prop_assert!(m.artifacts.iter().all(|a| is_plain_relative_key(&a.key)));
            }
        }

        /// Artifact keys with any key text: the agent's and the operator's rules agree.
        #[test]
        fn both_sides_accept_the_same_keys(
            key in prop_oneof![
                text(40),
                proptest::collection::vec(prop_oneof![Just(".".to_owned()), Just("..".to_owned()), Just(String::new()), "[a-z]{1,4}".prop_map(String::from)], 1..5)
                    .prop_map(|s| s.join("/")),
            ],
        ) {
            let mut m = tests::sample();
            m.artifacts[0].key = key.clone();
            prop_assert_eq!(m.validate().is_ok(), is_plain_relative_key(&key));
        }

        /// Any database name becomes one safe key segment, and two names never share one (a
        /// name spelled like another's hashed form included).
        #[test]
        fn sanitized_names_are_safe_and_distinct(a in text(40), b in text(40)) {
            for name in [&a, &b] {
                let s = sanitize(name);
                prop_assert!(is_plain_relative_key(&s) && !s.contains('/'), "{s:?}");
                prop_assert!(!s.starts_with('.'));
                prop_assert!(s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'~')));
                if s != **name {
                    prop_assert_ne!(sanitize(&s), s.clone());
                }
            }
            if a != b {
                prop_assert_ne!(sanitize(&a), sanitize(&b));
            }
        }
    }

    #[test]
    fn a_database_named_like_another_hashed_name_gets_its_own_key() {
        let hashed = sanitize("a/b");
        assert_ne!(sanitize(&hashed), hashed);
        let c = Compression::None;
        assert_ne!(
            artifact_name(
                Engine::Postgres,
                ArtifactKind::Database,
                Some("a/b"),
                c,
                false
            ),
            artifact_name(
                Engine::Postgres,
                ArtifactKind::Database,
                Some(&hashed),
                c,
                false
            )
        );
    }
}
