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
    v.to_string()
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
            "artifacts": m.artifacts.iter().map(|a| json!({
                "key": a.key,
                "kind": a.kind,
                "database": a.database,
                "sizeBytes": a.size_bytes,
                "rawBytes": a.raw_bytes,
                "sha256": a.sha256,
                "durationSeconds": a.duration_seconds,
                "tables": a.tables,
            })).collect::<Vec<_>>(),
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
                    duration_seconds: 0.0,
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
                    duration_seconds: 0.1 + 0.2,
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
                    duration_seconds: 1e-7,
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
