//! The one-line JSON summary printed on stdout and written to the Kubernetes
//! termination-message file, which the control plane reads into the run's status.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::backup::BackupOutcome;
use super::error::AgentError;
use super::restore::RestoreOutcome;
use super::storage::Location;

/// Kubernetes keeps at most 4096 bytes of a termination message.
pub const TERMINATION_LIMIT: usize = 4096;

/// Default termination-message path inside a pod.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

fn object_key(loc: &Location) -> String {
    match loc {
        Location::S3 { prefix, .. } => prefix.clone(),
        Location::File { path } => path.display().to_string(),
    }
}

/// Summary of a successful backup.
pub fn backup_summary(o: &BackupOutcome) -> Value {
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

/// Summary of a successful restore.
pub fn restore_summary(o: &RestoreOutcome, from: &Location) -> Value {
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

/// Summary of a failure.
pub fn failure_summary(operation: &str, err: &AgentError, duration_seconds: f64) -> Value {
    json!({
        "status": "failed",
        "operation": operation,
        "category": err.category(),
        "error": err.to_string(),
        "durationSeconds": (duration_seconds * 1000.0).round() / 1000.0,
    })
}

/// Shrink a summary until it fits the termination-message limit: per-table counts go first
/// (they stay in the manifest), then the artifact list.
pub fn compact(summary: &Value) -> String {
    let full = summary.to_string();
    if full.len() <= TERMINATION_LIMIT {
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
pub fn emit(summary: &Value, termination_log: Option<&Path>) {
    let line = summary.to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Some(path) = termination_log
        && let Err(e) = std::fs::write(path, compact(summary))
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
    let default = Path::new(DEFAULT_TERMINATION_LOG);
    std::fs::OpenOptions::new()
        .write(true)
        .open(default)
        .ok()
        .map(|_| default.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v = failure_summary("backup", &AgentError::Integrity("x".into()), 1.23456);
        assert_eq!(v["category"], "integrity");
        assert_eq!(v["durationSeconds"], 1.235);
    }
}
