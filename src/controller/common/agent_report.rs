//! What the agent tells the control plane: the one-line JSON summary it writes to the Job pod's
//! termination message, and the structured progress lines in its log.

use serde::Deserialize;

/// The agent's summary, as read from a terminated container's `message`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// `succeeded` or `failed`.
    pub status: String,
    /// `backup`, `restore` or `validate`.
    #[serde(default)]
    pub operation: Option<String>,
    /// Failure category (e.g. `dump`, `storage`, `checksum`, `config`).
    #[serde(default)]
    pub category: Option<String>,
    /// Failure text (never contains secrets: the agent guarantees it).
    #[serde(default)]
    pub error: Option<String>,
    /// Engine of the dumped server.
    #[serde(default)]
    pub engine: Option<String>,
    /// Version reported by the dumped server.
    #[serde(default)]
    pub server_version: Option<String>,
    /// Full location of the manifest (`s3://bucket/key/manifest.json`, `file:///…`).
    #[serde(default)]
    pub location: Option<String>,
    /// Key of the artifact (its directory/prefix).
    #[serde(default)]
    pub key: Option<String>,
    /// SHA-256 of the stored artifact bytes.
    #[serde(default)]
    pub sha256: Option<String>,
    /// SHA-256 of the manifest.
    #[serde(default)]
    pub manifest_sha256: Option<String>,
    /// Stored bytes.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Raw dump bytes.
    #[serde(default)]
    pub raw_bytes: Option<u64>,
    /// Compression used.
    #[serde(default)]
    pub compression: Option<String>,
    /// Encryption description (recipients' fingerprints), as the agent wrote it.
    #[serde(default)]
    pub encryption: Option<serde_json::Value>,
    /// Number of tables dumped.
    #[serde(default)]
    pub tables: Option<u64>,
    /// Total rows dumped.
    #[serde(default)]
    pub rows: Option<u64>,
    /// Wall time of the agent's work.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// Whether the checksum was verified (restores).
    #[serde(default)]
    pub checksum_verified: Option<bool>,
}

impl AgentReport {
    /// Parses a termination message; `None` when it is not the agent's summary (e.g. empty, or a
    /// crash before the agent could write it).
    pub fn parse(message: &str) -> Option<AgentReport> {
        let report: AgentReport = serde_json::from_str(message.trim()).ok()?;
        (!report.status.is_empty()).then_some(report)
    }

    /// Whether the agent reported success.
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }
}

/// One progress sample from the agent's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ProgressSample {
    /// Bytes read from the source so far.
    pub bytes_in: u64,
    /// Bytes written to the destination so far.
    pub bytes_out: u64,
    /// Recent rate of `bytes_in`.
    #[serde(default)]
    pub bytes_per_second: u64,
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(flatten)]
    sample: Option<ProgressSample>,
}

/// The newest progress sample in a chunk of the agent's JSON log (other lines are ignored).
pub fn last_progress(log: &str) -> Option<ProgressSample> {
    log.lines().rev().find_map(|line| {
        let parsed: LogLine = serde_json::from_str(line.trim()).ok()?;
        let is_progress = parsed.message.as_deref() == Some("progress")
            || parsed.target.as_deref() == Some("dataguardian::progress");
        if is_progress { parsed.sample } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success_and_failure_summaries() {
        let ok = AgentReport::parse(
            r#"{"status":"succeeded","operation":"backup","engine":"postgres","serverVersion":"15.18","key":"shop/nightly/x","location":"s3://b/shop/nightly/x/manifest.json","sha256":"ab","sizeBytes":10,"rawBytes":40,"compression":"zstd:3","tables":3,"rows":42}"#,
        )
        .unwrap();
        assert!(ok.succeeded());
        assert_eq!(ok.size_bytes, Some(10));
        assert_eq!(ok.rows, Some(42));
        let failed = AgentReport::parse(r#"{"status":"failed","operation":"backup","category":"dump","error":"pg_dump exited with 1"}"#).unwrap();
        assert!(!failed.succeeded());
        assert_eq!(failed.category.as_deref(), Some("dump"));
        assert_eq!(AgentReport::parse(""), None);
        assert_eq!(AgentReport::parse("panicked at ..."), None);
    }

    #[test]
    fn finds_the_newest_progress_line() {
        let log = concat!(
            r#"{"timestamp":"t","level":"INFO","message":"starting","target":"dataguardian::agent"}"#,
            "\n",
            r#"{"timestamp":"t","level":"INFO","message":"progress","target":"dataguardian::progress","phase":"backup","done":false,"bytes_in":100,"bytes_out":40,"bytes_per_second":50,"elapsed_seconds":2.0}"#,
            "\n",
            r#"{"timestamp":"t","level":"INFO","message":"progress","target":"dataguardian::progress","phase":"backup","done":false,"bytes_in":300,"bytes_out":90,"bytes_per_second":100,"elapsed_seconds":4.0}"#,
            "\n",
            "not json\n",
        );
        assert_eq!(
            last_progress(log),
            Some(ProgressSample {
                bytes_in: 300,
                bytes_out: 90,
                bytes_per_second: 100
            })
        );
        assert_eq!(last_progress("nothing here"), None);
    }
}
