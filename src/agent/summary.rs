//! The one-line JSON summary printed on stdout and written to the Kubernetes
//! termination-message file, which the control plane reads into the run's status.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::backup::BackupOutcome;
use super::error::AgentError;
use super::restore::RestoreOutcome;
use super::storage::Location;
use crate::contract::{
    ArtifactSummary, BackupSummary, FailureSummary, Operation, RestoreSummary, Summary,
    TERMINATION_LIMIT, TERMINATION_LOG,
};

fn object_key(loc: &Location) -> String {
    match loc {
        Location::S3 { prefix, .. } => prefix.clone(),
        Location::File { path } => path.display().to_string(),
    }
}

/// Summary of a successful backup.
pub fn backup_summary(o: &BackupOutcome) -> Summary {
    let m = &o.manifest;
    let single = (m.artifacts.len() == 1).then(|| &m.artifacts[0]);
    BackupSummary {
        engine: m.engine,
        server_version: m.server_version.clone(),
        database: m.database.clone(),
        all_databases: m.all_databases,
        location: o.manifest_location.to_string(),
        key: object_key(&o.manifest_location),
        manifest_sha256: o.manifest_sha256.clone(),
        sha256: single
            .map(|a| a.sha256.clone())
            .unwrap_or_else(|| o.manifest_sha256.clone()),
        size_bytes: m.size_bytes(),
        raw_bytes: m.raw_bytes(),
        compression: m.compression.to_string(),
        encryption: m.encryption.clone(),
        tables: m.table_count() as u64,
        rows: m.row_count(),
        artifacts: m
            .artifacts
            .iter()
            .map(|a| ArtifactSummary {
                key: a.key.clone(),
                kind: a.kind,
                database: a.database.clone(),
                size_bytes: a.size_bytes,
                raw_bytes: a.raw_bytes,
                sha256: a.sha256.clone(),
                duration_seconds: a.duration_seconds,
                tables: a.tables.clone(),
                confirmed_by: a.confirmed_by,
            })
            .collect(),
        started_at: m.started_at,
        completed_at: m.completed_at,
        duration_seconds: m.duration_seconds,
    }
    .into()
}

/// Summary of a successful restore.
pub fn restore_summary(o: &RestoreOutcome, from: &Location) -> Summary {
    RestoreSummary {
        engine: o.manifest.engine,
        from: from.to_string(),
        databases: o.databases.clone(),
        size_bytes: o.stored_bytes,
        raw_bytes: o.raw_bytes,
        checksum_verified: true,
        verified_first: o.verified_first,
        sha256: o
            .manifest
            .artifacts
            .iter()
            .map(|a| a.sha256.clone())
            .collect(),
        duration_seconds: o.duration_seconds,
        swap: o.swap.clone(),
    }
    .into()
}

/// Summary of a failure.
pub fn failure_summary(operation: Operation, err: &AgentError, duration_seconds: f64) -> Summary {
    FailureSummary {
        operation,
        category: err.failure_category(),
        error: err.to_string(),
        duration_seconds: (duration_seconds * 1000.0).round() / 1000.0,
    }
    .into()
}

/// The summary as printed, when it fits the termination-message limit as it is.
pub fn fitting(summary: &Value) -> Option<String> {
    let full = summary.to_string();
    (full.len() <= TERMINATION_LIMIT).then_some(full)
}

/// Shrink a summary until it fits the termination-message limit: per-table counts go first
/// (they stay in the manifest), then the artifact list.
pub fn compact(summary: &Value) -> String {
    if let Some(full) = fitting(summary) {
        return full;
    }
    let mut v = summary.clone();
    if let Some(arts) = v.get_mut("artifacts").and_then(Value::as_array_mut) {
        for a in arts.iter_mut() {
            if let Some(obj) = a.as_object_mut() {
                obj.remove("tables");
            }
        }
    }
    v["truncated"] = json!(true);
    let s = v.to_string();
    if s.len() <= TERMINATION_LIMIT {
        return s;
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("artifacts");
    }
    let s = v.to_string();
    if s.len() <= TERMINATION_LIMIT {
        return s;
    }
    if let Some(e) = v
        .get_mut("error")
        .and_then(|e| e.as_str().map(str::to_string))
    {
        v["error"] = json!(e.chars().take(2000).collect::<String>());
    }
    fit(v)
}

/// Fields a reader needs to classify a summary: never shortened by [`fit`].
const KEPT_WHOLE: [&str; 6] = [
    "status",
    "operation",
    "category",
    "result",
    "reason",
    "truncated",
];

/// The last step of every compaction: while the summary is still over the limit (an error
/// text of escaped or multi-byte characters, a prune's long list of deleted files, a copy's
/// digest per artifact), halves its largest field — a string to half its characters, an array
/// to half its elements, so that strict readers still find every field — and removes a largest
/// field of any other kind. The fields in [`KEPT_WHOLE`] stay. Kubernetes cuts a longer message
/// at the limit, and a cut JSON line is no summary at all.
pub(crate) fn fit(mut v: Value) -> String {
    loop {
        let s = v.to_string();
        if s.len() <= TERMINATION_LIMIT {
            return s;
        }
        let Some(obj) = v.as_object_mut() else {
            return s;
        };
        let largest = obj
            .iter()
            .filter(|(k, _)| !KEPT_WHOLE.contains(&k.as_str()))
            .map(|(k, field)| (field.to_string().len(), k.clone()))
            .max();
        let Some((_, key)) = largest else {
            return s;
        };
        match obj.get_mut(&key) {
            Some(Value::String(text)) if !text.is_empty() => {
                let half = text.chars().count() / 2;
                *text = text.chars().take(half).collect();
            }
            Some(Value::Array(items)) if !items.is_empty() => items.truncate(items.len() / 2),
            _ => {
                obj.remove(&key);
            }
        }
    }
}

/// Print the summary line on stdout and write the compact form to the termination log.
pub fn emit(summary: &Summary, termination_log: Option<&Path>) {
    let value = summary.to_value();
    let line = value.to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Some(path) = termination_log
        && let Err(e) = std::fs::write(path, compact(&value))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

/// Resolve the termination-log path: the explicit one, else the Kubernetes default when it is
/// writable (inside a pod), else none.
pub fn termination_log_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return (!p.as_os_str().is_empty()).then_some(p);
    }
    let default = Path::new(TERMINATION_LOG);
    std::fs::OpenOptions::new()
        .write(true)
        .open(default)
        .ok()
        .map(|_| default.to_path_buf())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::agent::compress::Compression;
    use crate::agent::manifest::{
        Artifact, ArtifactKind, Engine, FORMAT_VERSION, Manifest, PayloadFormat, TableCount,
    };

    /// `backup_summary` as it was before the contract (`json!`).
    fn legacy_backup_summary(o: &BackupOutcome) -> Value {
        let m = &o.manifest;
        let single = (m.artifacts.len() == 1).then(|| &m.artifacts[0]);
        json!({
            "status": "succeeded",
            "operation": "backup",
            "engine": m.engine,
            "serverVersion": m.server_version,
            "database": m.database,
            "allDatabases": m.all_databases,
            "location": o.manifest_location.to_string(),
            "key": object_key(&o.manifest_location),
            "manifestSha256": o.manifest_sha256,
            "sha256": single.map(|a| a.sha256.clone()).unwrap_or_else(|| o.manifest_sha256.clone()),
            "sizeBytes": m.size_bytes(),
            "rawBytes": m.raw_bytes(),
            "compression": m.compression.to_string(),
            "encryption": m.encryption,
            "tables": m.table_count(),
            "rows": m.row_count(),
            "artifacts": m.artifacts.iter().map(|a| {
                let mut v = json!({
                    "key": a.key,
                    "kind": a.kind,
                    "database": a.database,
                    "sizeBytes": a.size_bytes,
                    "rawBytes": a.raw_bytes,
                    "sha256": a.sha256,
                    "durationSeconds": a.duration_seconds,
                    "tables": a.tables,
                });
                // The one field added since (how the upload was confirmed), only when known.
                if let Some(c) = a.confirmed_by {
                    v["confirmedBy"] = json!(c);
                }
                v
            }).collect::<Vec<_>>(),
            "startedAt": m.started_at,
            "completedAt": m.completed_at,
            "durationSeconds": m.duration_seconds,
        })
    }

    /// `restore_summary` as it was before the contract (`json!`).
    fn legacy_restore_summary(o: &RestoreOutcome, from: &Location) -> Value {
        json!({
            "status": "succeeded",
            "operation": "restore",
            "engine": o.manifest.engine,
            "from": from.to_string(),
            "databases": o.databases,
            "sizeBytes": o.stored_bytes,
            "rawBytes": o.raw_bytes,
            "checksumVerified": true,
            "verifiedFirst": o.verified_first,
            "sha256": o.manifest.artifacts.iter().map(|a| a.sha256.clone()).collect::<Vec<_>>(),
            "durationSeconds": o.duration_seconds,
        })
    }

    /// `failure_summary` as it was before the contract (`json!`).
    fn legacy_failure_summary(operation: &str, err: &AgentError, duration_seconds: f64) -> Value {
        json!({
            "status": "failed",
            "operation": operation,
            "category": err.category(),
            "error": err.to_string(),
            "durationSeconds": (duration_seconds * 1000.0).round() / 1000.0,
        })
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn tables(n: u64) -> Vec<TableCount> {
        (0..n)
            .map(|i| TableCount {
                schema: "public".into(),
                name: format!("t{i}"),
                rows: i * 7,
            })
            .collect()
    }

    use crate::agent::manifest::tests::sample;

    /// All databases, unencrypted, several artifacts (one without a database), odd floats.
    fn all_databases(compression: Compression, table_count: u64) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tool: "dataguardian test".into(),
            engine: Engine::Mysql,
            server_version: "10.11.6-MariaDB".into(),
            dump_tool: None,
            database: None,
            all_databases: true,
            compression,
            encryption: None,
            data_key: None,
            artifacts: vec![
                Artifact {
                    key: "globals.sql".into(),
                    kind: ArtifactKind::Globals,
                    database: None,
                    format: PayloadFormat::Sql,
                    size_bytes: 0,
                    raw_bytes: 0,
                    sha256: "b".repeat(64),
                    tables: Vec::new(),
                    data_tables: vec![],
                    duration_seconds: 0.0,
                    confirmed_by: None,
                },
                Artifact {
                    key: "all-databases.sql.gz".into(),
                    kind: ArtifactKind::AllDatabases,
                    database: None,
                    format: PayloadFormat::Sql,
                    size_bytes: u64::from(u32::MAX) + 7,
                    raw_bytes: 1 << 40,
                    sha256: "c".repeat(64),
                    tables: tables(table_count),
                    data_tables: vec![],
                    duration_seconds: 0.1 + 0.2,
                    confirmed_by: None,
                },
                Artifact {
                    key: "databases/a b.pgdump".into(),
                    kind: ArtifactKind::Database,
                    database: Some("a b \"quoted\" ü".into()),
                    format: PayloadFormat::PgDumpCustom,
                    size_bytes: 3,
                    raw_bytes: 4,
                    sha256: "d".repeat(64),
                    tables: tables(2),
                    data_tables: vec![],
                    duration_seconds: 1e-7,
                    confirmed_by: None,
                },
            ],
            started_at: at("2026-11-22T10:00:00.123456789Z"),
            completed_at: at("2026-11-22T10:00:00Z"),
            duration_seconds: 12345.678901,
        }
    }

    fn backups() -> Vec<BackupOutcome> {
        let s3 = Location::S3 {
            bucket: "b".into(),
            prefix: "p/r1".into(),
        };
        let file = Location::File {
            path: "/backup/shop/r2/manifest.json".into(),
        };
        let mut empty = sample();
        empty.artifacts.clear();
        vec![
            BackupOutcome {
                manifest: sample(),
                manifest_location: s3.clone(),
                manifest_sha256: "f".repeat(64),
            },
            BackupOutcome {
                manifest: all_databases(Compression::Gzip { level: 6 }, 3),
                manifest_location: file.clone(),
                manifest_sha256: "e".repeat(64),
            },
            BackupOutcome {
                manifest: all_databases(Compression::None, 0),
                manifest_location: s3,
                manifest_sha256: "e".repeat(64),
            },
            // Too big for the termination message: compaction kicks in.
            BackupOutcome {
                manifest: all_databases(Compression::Zstd { level: 19 }, 400),
                manifest_location: file,
                manifest_sha256: "e".repeat(64),
            },
            // No artifacts: `sha256` falls back to the manifest's.
            BackupOutcome {
                manifest: empty,
                manifest_location: Location::S3 {
                    bucket: "b".into(),
                    prefix: String::new(),
                },
                manifest_sha256: "0".repeat(64),
            },
        ]
    }

    #[test]
    fn backup_summaries_are_byte_for_byte_the_legacy_ones() {
        let mut compacted = false;
        for o in backups() {
            let new = backup_summary(&o).to_value();
            let old = legacy_backup_summary(&o);
            assert_eq!(new.to_string(), old.to_string());
            assert_eq!(compact(&new), compact(&old));
            compacted |= old.to_string().len() > TERMINATION_LIMIT;
        }
        assert!(compacted, "one fixture exercises compaction");
    }

    #[test]
    fn restore_summaries_are_byte_for_byte_the_legacy_ones() {
        let from = Location::S3 {
            bucket: "b".into(),
            prefix: "p/r1/manifest.json".into(),
        };
        for (manifest, databases, verified_first, duration_seconds) in [
            (sample(), vec!["copy".to_string()], true, 3.25),
            (
                all_databases(Compression::None, 1),
                vec!["a".into(), "b \"c\"".into()],
                false,
                0.1 + 0.2,
            ),
            (sample(), Vec::new(), false, 0.0),
        ] {
            let o = RestoreOutcome {
                manifest,
                databases,
                stored_bytes: 1024,
                raw_bytes: u64::MAX,
                verified_first,
                duration_seconds,
                swap: None,
            };
            let new = restore_summary(&o, &from).to_value();
            let old = legacy_restore_summary(&o, &from);
            assert_eq!(new.to_string(), old.to_string());
            assert_eq!(compact(&new), compact(&old));
        }
    }

    #[test]
    fn failure_summaries_are_byte_for_byte_the_legacy_ones() {
        let long = "x\"\n".repeat(3000);
        let errors = || {
            [
                AgentError::Config("bad uri".into()),
                AgentError::Source("pg_dump exited with 1".into()),
                AgentError::Target("database \"copy\" is not empty".into()),
                AgentError::Storage(long.clone()),
                AgentError::Integrity("sha256 mismatch".into()),
                AgentError::Crypto("no identity matched".into()),
                AgentError::Io(std::io::Error::other("disk full")),
            ]
        };
        for (operation, name) in [
            (Operation::Backup, "backup"),
            (Operation::Restore, "restore"),
            (Operation::Validate, "validate"),
            (Operation::Prune, "prune"),
        ] {
            for err in errors() {
                for duration in [0.0, 1.23456, 0.0005, 98765.4321] {
                    let new = failure_summary(operation, &err, duration).to_value();
                    let old = legacy_failure_summary(name, &err, duration);
                    assert_eq!(new.to_string(), old.to_string());
                    assert_eq!(compact(&new), compact(&old));
                }
            }
        }
    }

    #[test]
    fn emit_writes_the_legacy_termination_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        for o in backups() {
            emit(&backup_summary(&o), Some(&path));
            let written = std::fs::read_to_string(&path).unwrap();
            assert_eq!(written, compact(&legacy_backup_summary(&o)));
        }
    }

    #[test]
    fn compact_drops_tables_then_artifacts() {
        let tables: Vec<Value> = (0..500)
            .map(|i| json!({"schema": "s", "name": format!("t{i}"), "rows": i}))
            .collect();
        let v = json!({"status": "succeeded", "artifacts": [{"key": "a", "tables": tables}]});
        let c = compact(&v);
        assert!(c.len() <= TERMINATION_LIMIT);
        let back: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(back["truncated"], true);
        assert_eq!(back["artifacts"][0]["key"], "a");
        let small = json!({"status": "failed"});
        assert_eq!(compact(&small), small.to_string());
    }

    #[test]
    fn failure_has_category() {
        let v = failure_summary(
            Operation::Backup,
            &AgentError::Integrity("x".into()),
            1.23456,
        )
        .to_value();
        assert_eq!(v["category"], "integrity");
        assert_eq!(v["durationSeconds"], 1.235);
    }
}

/// Properties of the summary wire: whatever the agent writes fits the termination message and
/// still reads back, and whatever a container's message holds never panics a reader.
#[cfg(test)]
mod props {
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::api::common::Engine;
    use crate::api::restore_validation::{CheckKind, CheckResult, ValidationResult};
    use crate::contract::exit::FailureCategory;
    use crate::contract::{
        AgentReport, ArtifactKind, CopySummary, EncryptionInfo, PruneSummary, Report,
        RestoreReport, Succeeded, TableCount, ValidateSummary, ValidationReport,
    };

    fn text(max: usize) -> impl Strategy<Value = String> {
        // Any characters, control and multi-byte ones included (they serialise longer).
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect())
    }

    fn hex64() -> impl Strategy<Value = String> {
        "[0-9a-f]{64}"
    }

    fn seconds() -> impl Strategy<Value = f64> {
        (0u32..10_000_000).prop_map(|ms| f64::from(ms) / 1000.0)
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..4_102_444_800, 0u32..1_000_000_000)
            .prop_map(|(s, ns)| Utc.timestamp_opt(s, ns).single().expect("in range"))
    }

    fn engine() -> impl Strategy<Value = Engine> {
        prop_oneof![Just(Engine::Postgres), Just(Engine::Mysql)]
    }

    fn verdict() -> impl Strategy<Value = ValidationResult> {
        prop_oneof![
            Just(ValidationResult::Passed),
            Just(ValidationResult::Failed)
        ]
    }

    fn table() -> impl Strategy<Value = TableCount> {
        (text(40), text(60), any::<u64>()).prop_map(|(schema, name, rows)| TableCount {
            schema,
            name,
            rows,
        })
    }

    fn artifact() -> impl Strategy<Value = ArtifactSummary> {
        (
            text(200),
            prop_oneof![
                Just(ArtifactKind::Database),
                Just(ArtifactKind::Globals),
                Just(ArtifactKind::AllDatabases),
                Just(ArtifactKind::TableData)
            ],
            proptest::option::of(text(64)),
            (any::<u64>(), any::<u64>()),
            hex64(),
            seconds(),
            proptest::collection::vec(table(), 0..40),
        )
            .prop_map(
                |(
                    key,
                    kind,
                    database,
                    (size_bytes, raw_bytes),
                    sha256,
                    duration_seconds,
                    tables,
                )| {
                    ArtifactSummary {
                        key,
                        kind,
                        database,
                        size_bytes,
                        raw_bytes,
                        sha256,
                        duration_seconds,
                        tables,
                        confirmed_by: None,
                    }
                },
            )
    }

    fn backup() -> impl Strategy<Value = Summary> {
        (
            (
                engine(),
                text(80),
                proptest::option::of(text(64)),
                any::<bool>(),
            ),
            (text(1100), text(1100), hex64(), hex64()),
            (
                any::<u64>(),
                any::<u64>(),
                text(12),
                any::<u64>(),
                any::<u64>(),
            ),
            proptest::option::of(proptest::collection::vec(text(80), 0..6)),
            proptest::collection::vec(artifact(), 0..12),
            (instant(), instant(), seconds()),
        )
            .prop_map(
                |(
                    (engine, server_version, database, all_databases),
                    (location, key, manifest_sha256, sha256),
                    (size_bytes, raw_bytes, compression, tables, rows),
                    recipients,
                    artifacts,
                    (started_at, completed_at, duration_seconds),
                )| {
                    BackupSummary {
                        engine,
                        server_version,
                        database,
                        all_databases,
                        location,
                        key,
                        manifest_sha256,
                        sha256,
                        size_bytes,
                        raw_bytes,
                        compression,
                        encryption: recipients.map(|recipients| EncryptionInfo {
                            scheme: "age-x25519".into(),
                            recipients,
                        }),
                        tables,
                        rows,
                        artifacts,
                        started_at,
                        completed_at,
                        duration_seconds,
                    }
                    .into()
                },
            )
    }

    fn restore() -> impl Strategy<Value = Summary> {
        (
            engine(),
            text(1100),
            proptest::collection::vec(text(64), 0..80),
            (any::<u64>(), any::<u64>(), any::<bool>(), any::<bool>()),
            proptest::collection::vec(hex64(), 0..120),
            seconds(),
        )
            .prop_map(
                |(
                    engine,
                    from,
                    databases,
                    (size_bytes, raw_bytes, checksum_verified, verified_first),
                    sha256,
                    duration_seconds,
                )| {
                    RestoreSummary {
                        engine,
                        from,
                        databases,
                        size_bytes,
                        raw_bytes,
                        checksum_verified,
                        verified_first,
                        sha256,
                        duration_seconds,
                        swap: None,
                    }
                    .into()
                },
            )
    }

    fn check() -> impl Strategy<Value = CheckResult> {
        (
            text(60),
            prop_oneof![
                Just(CheckKind::RowCounts),
                Just(CheckKind::Sql),
                Just(CheckKind::Schema)
            ],
            verdict(),
            proptest::option::of(text(200)),
            proptest::option::of(text(200)),
            proptest::option::of(text(1024)),
        )
            .prop_map(
                |(name, kind, result, expected, observed, message)| CheckResult {
                    name,
                    kind,
                    result,
                    expected,
                    observed,
                    message,
                },
            )
    }

    fn validate() -> impl Strategy<Value = Summary> {
        (
            verdict(),
            proptest::option::of("[A-Za-z]{1,20}"),
            text(3000),
            (engine(), text(80), text(1100)),
            proptest::collection::vec(text(64), 0..40),
            (proptest::option::of(seconds()), seconds()),
            proptest::collection::vec(check(), 0..30),
        )
            .prop_map(
                |(
                    result,
                    reason,
                    message,
                    (engine, server_version, from),
                    databases,
                    (restore_duration_seconds, duration_seconds),
                    checks,
                )| {
                    ValidateSummary {
                        result,
                        reason,
                        message,
                        engine,
                        server_version,
                        from,
                        databases,
                        restore_duration_seconds,
                        checks,
                        duration_seconds,
                    }
                    .into()
                },
            )
    }

    fn prune() -> impl Strategy<Value = Summary> {
        (
            proptest::collection::vec(text(300), 0..120),
            proptest::collection::vec(text(300), 0..20),
            seconds(),
        )
            .prop_map(|(deleted, already_gone, duration_seconds)| {
                PruneSummary {
                    deleted,
                    already_gone,
                    duration_seconds,
                }
                .into()
            })
    }

    fn copy() -> impl Strategy<Value = Summary> {
        (
            "[ -~]{0,1100}",
            "[ -~]{0,1100}",
            hex64(),
            any::<u64>(),
            proptest::collection::vec(hex64(), 0..200),
            any::<bool>(),
            seconds(),
        )
            .prop_map(
                |(from, location, manifest_sha256, size_bytes, sha256, already_present, d)| {
                    CopySummary {
                        from,
                        location,
                        manifest_sha256,
                        size_bytes,
                        sha256,
                        already_present,
                        duration_seconds: d,
                        confirmed_by: Vec::new(),
                    }
                    .into()
                },
            )
    }

    fn failure() -> impl Strategy<Value = Summary> {
        (
            prop_oneof![
                Just(Operation::Backup),
                Just(Operation::Restore),
                Just(Operation::Validate),
                Just(Operation::Prune),
                Just(Operation::Copy)
            ],
            proptest::sample::select(FailureCategory::ALL.to_vec()),
            text(6000),
            seconds(),
        )
            .prop_map(|(operation, category, error, duration_seconds)| {
                FailureSummary {
                    operation,
                    category,
                    error,
                    duration_seconds,
                }
                .into()
            })
    }

    fn summary() -> impl Strategy<Value = Summary> {
        prop_oneof![backup(), restore(), validate(), prune(), copy(), failure()]
    }

    /// What the agent writes to the termination log for `s` (`agent validate` compacts its own
    /// way).
    fn termination_message(s: &Summary) -> String {
        match s {
            Summary::Succeeded(Succeeded::Validate(_)) => {
                crate::agent::validate::compact(&s.to_value())
            }
            _ => compact(&s.to_value()),
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(64))]

        /// Printed then read back, a summary is the one written.
        #[test]
        fn a_printed_summary_reads_back_as_written(s in summary()) {
            let line = s.to_value().to_string();
            let back: Summary = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(back, s);
        }

        /// The termination message always fits Kubernetes' limit (a longer one is cut and is
        /// no JSON any more), and the operator still reads its status and failure category;
        /// a copy's claim still confirms from its location and manifest digest.
        #[test]
        fn the_termination_message_fits_and_still_reads(s in summary()) {
            let message = termination_message(&s);
            prop_assert!(message.len() <= TERMINATION_LIMIT, "{} bytes", message.len());
            // Each controller reads its own operation's summary (and every failure).
            match &s {
                Summary::Failed(f) => {
                    let report = AgentReport::parse(&message).expect("a failure");
                    prop_assert!(!report.succeeded());
                    prop_assert_eq!(report.failure_category(), Some(f.category));
                    let restore = RestoreReport::parse(&message).expect("a failure");
                    prop_assert_eq!(restore.failure_category(), Some(f.category));
                    let validation = ValidationReport::parse(&message).expect("a failure");
                    prop_assert_eq!(validation.failure_category(), Some(f.category));
                }
                Summary::Succeeded(Succeeded::Backup(_) | Succeeded::Prune(_)) => {
                    prop_assert!(AgentReport::parse(&message).expect("a summary").succeeded());
                }
                Summary::Succeeded(Succeeded::Restore(_)) => {
                    prop_assert!(RestoreReport::parse(&message).expect("a summary").succeeded());
                }
                // Not generated by `summary()`: drop-previous summaries are a fixed small shape.
                Summary::Succeeded(Succeeded::DropPrevious(_) | Succeeded::Rewrap(_)) => {}
                Summary::Succeeded(Succeeded::Copy(c)) => {
                    let read = CopySummary::parse(&message).expect("a copy summary");
                    prop_assert_eq!(&read.location, &c.location);
                    prop_assert_eq!(&read.manifest_sha256, &c.manifest_sha256);
                }
                Summary::Succeeded(Succeeded::Validate(v)) => {
                    let read = ValidationReport::parse(&message).expect("a verdict");
                    prop_assert!(read.succeeded());
                    prop_assert_eq!(read.result, Some(v.result));
                    prop_assert_eq!(read.reason.as_deref(), v.reason.as_deref());
                }
            }
        }

        /// Whatever a terminated container left in its message, no reader panics.
        #[test]
        fn no_reader_panics_on_any_message(message in text(5000)) {
            let _ = AgentReport::parse(&message);
            let _ = RestoreReport::parse(&message);
            let _ = ValidationReport::parse(&message);
            let _ = CopySummary::parse(&message);
        }

        /// Nor on JSON that looks like a summary but has the wrong types or odd values.
        #[test]
        fn no_reader_panics_on_summary_shaped_json(
            status in prop_oneof![Just("succeeded".to_string()), Just("failed".to_string()), text(10)],
            fields in proptest::collection::btree_map(
                prop_oneof![
                    Just("category".to_string()), Just("error".to_string()),
                    Just("sizeBytes".to_string()), Just("sha256".to_string()),
                    Just("result".to_string()), Just("checks".to_string()),
                    Just("databases".to_string()), Just("encryption".to_string()),
                    text(8),
                ],
                prop_oneof![
                    Just(Value::Null),
                    any::<bool>().prop_map(Value::from),
                    any::<i64>().prop_map(Value::from),
                    any::<f64>().prop_map(Value::from),
                    text(40).prop_map(Value::from),
                    proptest::collection::vec(text(10).prop_map(Value::from), 0..4)
                        .prop_map(Value::from),
                ],
                0..8,
            ),
        ) {
            let mut v = serde_json::Map::from_iter(fields);
            v.insert("status".into(), Value::from(status));
            let message = Value::Object(v).to_string();
            if let Some(r) = AgentReport::parse(&message) {
                let _ = (r.succeeded(), r.failure_category());
            }
            let _ = RestoreReport::parse(&message);
            let _ = ValidationReport::parse(&message);
            let _ = CopySummary::parse(&message);
        }
    }
}
