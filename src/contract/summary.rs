//! The agent's one-line JSON summary: printed on stdout and written (compacted to
//! [`super::TERMINATION_LIMIT`]) to the termination log, from where the operator reads it out of
//! the terminated agent container's `message`.
//!
//! Two sides of one wire:
//! - [`Summary`] is what the agent writes: `status` (`succeeded` | `failed`) and, on success,
//!   `operation` select the shape. Serialise it with [`Summary::to_value`] and print that
//!   `Value` (as the agent always has): a `serde_json::Value` object keeps its keys sorted, so
//!   the line is byte-for-byte what the agent's `json!` summaries were. (`serde_json::to_string`
//!   of the struct would keep field order instead: same JSON, other bytes.)
//! - [`AgentReport`], [`RestoreReport`] and [`ValidationReport`] are what the controllers read.
//!   They are deliberately lenient: every field but `status` is optional and unknown fields are
//!   ignored, so they also read compacted summaries, summaries of other agent versions, and
//!   partial ones. `parse` gives `None` for anything that is not a JSON object with a non-empty
//!   string `status` (an empty message, a crash's last log lines).

use super::redact::redact_failure;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::common::Engine;
use crate::api::restore_validation::{CheckResult, ValidationResult};

use super::exit::FailureCategory;
use super::manifest::{ArtifactKind, ConfirmedBy, EncryptionInfo, TableCount};

/// `status` of a summary when the agent did its work (for `validate`: reached a verdict).
pub const STATUS_SUCCEEDED: &str = "succeeded";
/// `status` of a failure summary.
pub const STATUS_FAILED: &str = "failed";

/// The summary the agent writes.
// One summary per agent run: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Summary {
    /// `"status": "succeeded"`.
    Succeeded(Succeeded),
    /// `"status": "failed"`.
    Failed(FailureSummary),
}

/// A successful summary, by `operation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "lowercase")]
pub enum Succeeded {
    /// `"operation": "backup"`.
    Backup(BackupSummary),
    /// `"operation": "restore"`.
    Restore(RestoreSummary),
    /// `"operation": "validate"` (a verdict, Passed or Failed).
    Validate(ValidateSummary),
    /// `"operation": "prune"`.
    Prune(PruneSummary),
    /// `"operation": "copy"`.
    Copy(CopySummary),
    /// `"operation": "drop-previous"`.
    #[serde(rename = "drop-previous")]
    DropPrevious(DropPreviousSummary),
    /// `"operation": "rewrap"`.
    Rewrap(RewrapSummary),
}

/// What the agent was doing (`operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `agent backup`.
    Backup,
    /// `agent restore`.
    Restore,
    /// `agent validate`.
    Validate,
    /// `agent prune`.
    Prune,
    /// `agent copy`.
    Copy,
    /// `agent drop-previous`.
    #[serde(rename = "drop-previous")]
    DropPrevious,
    /// `agent rewrap`.
    Rewrap,
}

impl Operation {
    /// The `operation` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::Validate => "validate",
            Operation::Prune => "prune",
            Operation::Copy => "copy",
            Operation::DropPrevious => "drop-previous",
            Operation::Rewrap => "rewrap",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Summary of a successful backup. Field order follows the JSON the agent has always written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    /// Engine of the dumped server.
    pub engine: Engine,
    /// Version reported by the dumped server.
    pub server_version: String,
    /// The database backed up; `null` with `allDatabases`.
    pub database: Option<String>,
    /// Whether every database was backed up.
    pub all_databases: bool,
    /// Full location of the manifest (`s3://bucket/key/manifest.json`, `file:///…`).
    pub location: String,
    /// The backup's directory: the S3 prefix, or the manifest's file path.
    pub key: String,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: String,
    /// SHA-256 of the only artifact, else of the manifest.
    pub sha256: String,
    /// Stored bytes over all artifacts.
    pub size_bytes: u64,
    /// Raw dump bytes over all artifacts.
    pub raw_bytes: u64,
    /// Compression of every artifact (`zstd:3`, `gzip:6`, `none`).
    pub compression: String,
    /// Encryption description; `null` when unencrypted.
    pub encryption: Option<EncryptionInfo>,
    /// Number of tables over all artifacts.
    pub tables: u64,
    /// Number of rows over all artifacts.
    pub rows: u64,
    /// The artifacts (compaction may drop the list).
    #[serde(default)]
    pub artifacts: Vec<ArtifactSummary>,
    /// When the backup started.
    pub started_at: DateTime<Utc>,
    /// When the last artifact was confirmed in storage.
    pub completed_at: DateTime<Utc>,
    /// Wall time of the whole backup.
    pub duration_seconds: f64,
}

/// One artifact in a backup summary (unlike the manifest, `database` is `null`, not absent,
/// when there is none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSummary {
    /// Key relative to the manifest's directory.
    pub key: String,
    /// What it holds.
    pub kind: ArtifactKind,
    /// The database it holds; `null` for globals and all-databases streams.
    pub database: Option<String>,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Bytes produced by the dump.
    pub raw_bytes: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    /// Wall time of this artifact's dump and upload.
    pub duration_seconds: f64,
    /// Per-table row counts (compaction drops them first).
    #[serde(default)]
    pub tables: Vec<TableCount>,
    /// How the upload was confirmed (absent in summaries of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<ConfirmedBy>,
}

/// Summary of a successful restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSummary {
    /// Engine of the backup.
    pub engine: Engine,
    /// The manifest restored from (`s3://…/manifest.json`, `file:///…`).
    pub from: String,
    /// Databases restored into.
    pub databases: Vec<String>,
    /// Stored bytes read.
    pub size_bytes: u64,
    /// Plain bytes restored.
    pub raw_bytes: u64,
    /// Whether every artifact's SHA-256 matched (the agent writes `true`: a mismatch fails).
    pub checksum_verified: bool,
    /// Whether every artifact was verified before the target was touched.
    pub verified_first: bool,
    /// SHA-256 of every artifact read, in restore order.
    pub sha256: Vec<String>,
    /// Wall time.
    pub duration_seconds: f64,
    /// What a staged restore did (absent for in-place restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapSummary>,
}

/// What a staged restore did: where it was staged, the swap, masking, the previous target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwapSummary {
    /// The staging database (dropped after the swap).
    pub staging_database: String,
    /// The database swapped in as.
    pub target_database: String,
    /// Sessions on the target terminated for the swap.
    #[serde(default)]
    pub sessions_terminated: u64,
    /// Masking rules applied before the swap.
    #[serde(default)]
    pub masking_rules: u32,
    /// Whether a guard ran and held (`null`: no guard).
    #[serde(default)]
    pub guard_passed: Option<bool>,
    /// The previous target, when it still exists under this name (kept on request, or its
    /// drop failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_database: Option<String>,
    /// Whether the previous target was kept on request.
    #[serde(default)]
    pub previous_kept: bool,
}

/// Summary of a validation that reached a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateSummary {
    /// `Passed` or `Failed`.
    pub result: ValidationResult,
    /// `RestoreFailed`, `ChecksumMismatch` or `CheckFailed` when Failed; `null` when Passed.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: String,
    /// Engine of the backup.
    pub engine: Engine,
    /// Server version recorded in the backup.
    pub server_version: String,
    /// The manifest validated.
    pub from: String,
    /// Databases restored into the sandbox.
    pub databases: Vec<String>,
    /// How long the restore took; `null` when it failed.
    pub restore_duration_seconds: Option<f64>,
    /// Per-check results (compaction shortens and drops them, failing ones last).
    pub checks: Vec<CheckResult>,
    /// Wall time of the whole validation.
    pub duration_seconds: f64,
}

/// Summary of a successful prune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneSummary {
    /// Files deleted (the manifest last).
    pub deleted: Vec<String>,
    /// Files the manifest lists that were already gone.
    pub already_gone: Vec<String>,
    /// Wall time (not rounded).
    pub duration_seconds: f64,
}

/// Summary of a dropped previous target (the cleanup after a staged restore's grace period).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropPreviousSummary {
    /// The database dropped.
    pub database: String,
    /// Whether it still existed (`false`: dropped earlier, by hand or by an earlier attempt).
    pub existed: bool,
    /// Wall time.
    pub duration_seconds: f64,
}

/// Who a backup's data key is wrapped for: fingerprints and key ids, never keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrappedFor {
    /// Fingerprints of the age recipients.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// KMS key ARNs.
    #[serde(default)]
    pub kms_keys: Vec<String>,
}

/// Summary of a re-wrapped backup: its manifest rewritten with the data key wrapped for the new
/// keys; its artifacts untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewrapSummary {
    /// The manifest rewritten.
    pub location: String,
    /// SHA-256 of the manifest's bytes before.
    pub previous_manifest_sha256: String,
    /// SHA-256 of the manifest's bytes now (the digest a restore must be pinned to).
    pub manifest_sha256: String,
    /// Fingerprint of the data key (unchanged).
    pub data_key: String,
    /// Who the data key is wrapped for now.
    pub wrapped_for: WrappedFor,
    /// Wall time.
    pub duration_seconds: f64,
    /// Set when the manifest was NOT rewritten because it has no wrapped data key: its
    /// encryption scheme (`age-x25519`: written before envelope encryption, the artifacts
    /// encrypted straight to the recipients, which no re-wrap can change). Then both digests
    /// are the manifest's unchanged one, `dataKey` is empty and `wrappedFor` names the
    /// recipients the artifacts are encrypted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_rewrappable: Option<String>,
}

impl From<RewrapSummary> for Summary {
    fn from(s: RewrapSummary) -> Self {
        Summary::Succeeded(Succeeded::Rewrap(s))
    }
}

/// Summary of a successful copy of a backup to another storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopySummary {
    /// The source manifest.
    pub from: String,
    /// The copy's manifest (`location`: what the operator confirms).
    pub location: String,
    /// SHA-256 of the manifest (identical bytes at both places).
    pub manifest_sha256: String,
    /// Bytes copied over all artifacts (0 when the copy was already there).
    pub size_bytes: u64,
    /// SHA-256 of every artifact copied, computed while copying, in manifest order.
    pub sha256: Vec<String>,
    /// How each copied artifact's upload was confirmed, in the same order (absent in summaries
    /// of older agents and when nothing was copied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_by: Vec<ConfirmedBy>,
    /// Whether the destination already held this exact manifest.
    pub already_present: bool,
    /// Wall time.
    pub duration_seconds: f64,
}

impl CopySummary {
    /// The summary of a successful copy in a terminated copy container's `message`, as the
    /// operator confirms a copy on a claim from it. ([`AgentReport`] cannot read it: a copy
    /// reports the SHA-256 of every artifact, not one.)
    pub fn parse(message: &str) -> Option<CopySummary> {
        match serde_json::from_str::<Summary>(message.trim()).ok()? {
            Summary::Succeeded(Succeeded::Copy(c)) => Some(c),
            _ => None,
        }
    }
}

/// Summary of a failure of any operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureSummary {
    /// What failed.
    pub operation: Operation,
    /// Why (also the exit code).
    pub category: FailureCategory,
    /// The error's text (never contains secrets: the agent guarantees it).
    pub error: String,
    /// Wall time, rounded to milliseconds.
    pub duration_seconds: f64,
}

impl Summary {
    /// The summary as a JSON object (keys sorted): print it, or compact it for the
    /// termination log.
    pub fn to_value(&self) -> Value {
        // Only string keys and plain values: serialising into a `Value` cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Whether the agent did its work.
    pub fn succeeded(&self) -> bool {
        matches!(self, Summary::Succeeded(_))
    }
}

impl From<BackupSummary> for Summary {
    fn from(s: BackupSummary) -> Self {
        Summary::Succeeded(Succeeded::Backup(s))
    }
}

impl From<RestoreSummary> for Summary {
    fn from(s: RestoreSummary) -> Self {
        Summary::Succeeded(Succeeded::Restore(s))
    }
}

impl From<ValidateSummary> for Summary {
    fn from(s: ValidateSummary) -> Self {
        Summary::Succeeded(Succeeded::Validate(s))
    }
}

impl From<PruneSummary> for Summary {
    fn from(s: PruneSummary) -> Self {
        Summary::Succeeded(Succeeded::Prune(s))
    }
}

impl From<CopySummary> for Summary {
    fn from(s: CopySummary) -> Self {
        Summary::Succeeded(Succeeded::Copy(s))
    }
}

impl From<DropPreviousSummary> for Summary {
    fn from(s: DropPreviousSummary) -> Self {
        Summary::Succeeded(Succeeded::DropPrevious(s))
    }
}

impl From<FailureSummary> for Summary {
    fn from(s: FailureSummary) -> Self {
        Summary::Failed(s)
    }
}

/// The summary of a backup Job (or any summary's common fields), as the backup controller reads
/// it from a terminated container's `message`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// `succeeded` or `failed`.
    pub status: String,
    /// `backup`, `restore`, `validate` or `prune`.
    #[serde(default)]
    pub operation: Option<String>,
    /// Failure category (see [`FailureCategory`]; other values are kept as they are).
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

impl Report for AgentReport {
    fn status(&self) -> &str {
        &self.status
    }

    fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    fn redact(&mut self) {
        self.error = self.error.as_deref().map(redact_failure);
    }
}

/// The summary of a restore Job (a `restore` summary or a failure summary).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// `succeeded` or `failed`.
    pub status: String,
    /// Failure category (`integrity`, `target`, `crypto`, `storage`, `config`, …).
    #[serde(default)]
    pub category: Option<String>,
    /// Failure text (never contains secrets).
    #[serde(default)]
    pub error: Option<String>,
    /// Databases restored into.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Stored bytes read.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Plain bytes restored.
    #[serde(default)]
    pub raw_bytes: Option<u64>,
    /// Whether every artifact's SHA-256 matched.
    #[serde(default)]
    pub checksum_verified: Option<bool>,
    /// SHA-256 of every artifact read.
    #[serde(default)]
    pub sha256: Vec<String>,
    /// Wall time of the agent's work.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// What a staged restore did.
    #[serde(default)]
    pub swap: Option<SwapSummary>,
}

impl Report for RestoreReport {
    fn status(&self) -> &str {
        &self.status
    }

    fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    fn redact(&mut self) {
        self.error = self.error.as_deref().map(redact_failure);
    }
}

/// The summary of a validation Job (a `validate` summary or a failure summary).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    /// `succeeded` (a verdict was reached) or `failed` (the validation could not run).
    pub status: String,
    /// `Passed` or `Failed`, with a verdict.
    #[serde(default)]
    pub result: Option<ValidationResult>,
    /// `CheckFailed`, `ChecksumMismatch`, `RestoreFailed` with a Failed verdict.
    #[serde(default)]
    pub reason: Option<String>,
    /// Detail of the verdict.
    #[serde(default)]
    pub message: Option<String>,
    /// Failure category when the validation could not run.
    #[serde(default)]
    pub category: Option<String>,
    /// Failure text when the validation could not run.
    #[serde(default)]
    pub error: Option<String>,
    /// Measured restore time.
    #[serde(default)]
    pub restore_duration_seconds: Option<f64>,
    /// Per-check results.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

impl Report for ValidationReport {
    fn status(&self) -> &str {
        &self.status
    }

    fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    fn redact(&mut self) {
        self.error = self.error.as_deref().map(redact_failure);
        self.message = self.message.as_deref().map(redact_failure);
    }
}

/// What every reader of an agent summary shares: the summary's `status` and, on failure, its
/// `category`. The readers are lenient (unknown fields are ignored, missing ones default) so
/// that an agent of another version is still understood.
pub trait Report: serde::de::DeserializeOwned {
    /// `succeeded` or `failed`.
    fn status(&self) -> &str;
    /// The failure category as written.
    fn category(&self) -> Option<&str>;

    /// Parses a termination message, redacted; `None` when it is not the agent's summary (e.g. empty, or
    /// a crash before the agent could write it).
    fn parse(message: &str) -> Option<Self> {
        let mut report: Self = serde_json::from_str(message.trim()).ok()?;
        report.redact();
        (!report.status().is_empty()).then_some(report)
    }

    /// Redacts the failure text the agent wrote ([`redact_failure`]): what a report says goes
    /// into status, Events and notifications, so the tools' echoes of data and any credential
    /// stay in the Job's log.
    fn redact(&mut self);

    /// Whether the agent reported success (for a validation: it reached a verdict, Passed or
    /// Failed).
    fn succeeded(&self) -> bool {
        self.status() == STATUS_SUCCEEDED
    }

    /// The failure category, when it is one of the agent's.
    fn failure_category(&self) -> Option<FailureCategory> {
        self.category().and_then(FailureCategory::parse)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_copy_summary_is_read_back_from_what_the_agent_writes() {
        let c = CopySummary {
            from: "s3://a/p/r1/manifest.json".into(),
            location: "file:///backup-copy/dumps/r1/manifest.json".into(),
            manifest_sha256: "ab".repeat(32),
            size_bytes: 12,
            sha256: vec!["cd".repeat(32), "ef".repeat(32)],
            confirmed_by: vec![ConfirmedBy::Md5Etag, ConfirmedBy::ReadBack],
            already_present: false,
            duration_seconds: 0.5,
        };
        let written = serde_json::to_string(&Summary::from(c.clone())).unwrap();
        assert_eq!(CopySummary::parse(&written), Some(c));
        let prune = serde_json::to_string(&Summary::from(PruneSummary {
            deleted: Vec::new(),
            already_gone: Vec::new(),
            duration_seconds: 0.1,
        }))
        .unwrap();
        assert_eq!(CopySummary::parse(&prune), None);
        assert_eq!(CopySummary::parse("not json"), None);
    }

    use serde_json::json;

    use super::*;
    use crate::api::restore_validation::CheckKind;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn shop_tables() -> Vec<TableCount> {
        vec![
            TableCount {
                schema: "public".into(),
                name: "customers".into(),
                rows: 2000,
            },
            TableCount {
                schema: "sales".into(),
                name: "orders".into(),
                rows: 3000,
            },
        ]
    }

    /// A single-database, encrypted backup summary, built field by field the way
    /// `agent::summary::backup_summary` builds it from a `BackupOutcome`.
    fn backup() -> Summary {
        let sha = "a".repeat(64);
        BackupSummary {
            engine: Engine::Postgres,
            server_version: "15.8".into(),
            database: Some("shop".into()),
            all_databases: false,
            location: "s3://shop-backups/shop/nightly/r1/manifest.json".into(),
            key: "shop/nightly/r1".into(),
            manifest_sha256: "f".repeat(64),
            // The only artifact's digest.
            sha256: sha.clone(),
            size_bytes: 1024,
            raw_bytes: 4096,
            compression: "zstd:3".into(),
            encryption: Some(EncryptionInfo {
                scheme: "age-x25519".into(),
                recipients: vec!["sha256:00".into()],
            }),
            tables: 2,
            rows: 5000,
            artifacts: vec![ArtifactSummary {
                key: "databases/shop.pgdump.zst.age".into(),
                kind: ArtifactKind::Database,
                database: Some("shop".into()),
                size_bytes: 1024,
                raw_bytes: 4096,
                sha256: sha,
                duration_seconds: 1.5,
                tables: shop_tables(),
                confirmed_by: None,
            }],
            started_at: at("2026-11-22T10:00:00Z"),
            completed_at: at("2026-11-22T10:00:02.5Z"),
            duration_seconds: 2.5,
        }
        .into()
    }

    /// The same backup with today's `json!` in `agent::summary::backup_summary`.
    fn backup_json() -> Value {
        let sha = "a".repeat(64);
        json!({
            "status": "succeeded",
            "operation": "backup",
            "engine": "postgres",
            "serverVersion": "15.8",
            "database": "shop",
            "allDatabases": false,
            "location": "s3://shop-backups/shop/nightly/r1/manifest.json",
            "key": "shop/nightly/r1",
            "manifestSha256": "f".repeat(64),
            "sha256": sha,
            "sizeBytes": 1024u64,
            "rawBytes": 4096u64,
            "compression": "zstd:3",
            "encryption": {"scheme": "age-x25519", "recipients": ["sha256:00"]},
            "tables": 2usize,
            "rows": 5000u64,
            "artifacts": [{
                "key": "databases/shop.pgdump.zst.age",
                "kind": "database",
                "database": "shop",
                "sizeBytes": 1024u64,
                "rawBytes": 4096u64,
                "sha256": sha,
                "durationSeconds": 1.5,
                "tables": [
                    {"schema": "public", "name": "customers", "rows": 2000u64},
                    {"schema": "sales", "name": "orders", "rows": 3000u64},
                ],
            }],
            "startedAt": "2026-11-22T10:00:00Z",
            "completedAt": "2026-11-22T10:00:02.500Z",
            "durationSeconds": 2.5,
        })
    }

    /// An all-databases, unencrypted backup: `database` and `encryption` are `null`, never
    /// absent, in the summary and in every artifact.
    fn backup_all() -> Summary {
        BackupSummary {
            engine: Engine::Mysql,
            server_version: "10.11.6-MariaDB".into(),
            database: None,
            all_databases: true,
            location: "file:///backup/shop/r2/manifest.json".into(),
            key: "/backup/shop/r2/manifest.json".into(),
            manifest_sha256: "c".repeat(64),
            sha256: "d".repeat(64),
            size_bytes: 0,
            raw_bytes: 0,
            compression: "none".into(),
            encryption: None,
            tables: 0,
            rows: 0,
            artifacts: vec![ArtifactSummary {
                key: "all-databases.sql".into(),
                kind: ArtifactKind::AllDatabases,
                database: None,
                size_bytes: 0,
                raw_bytes: 0,
                sha256: "d".repeat(64),
                duration_seconds: 0.0,
                tables: Vec::new(),
                confirmed_by: None,
            }],
            started_at: at("2026-11-22T10:00:00Z"),
            completed_at: at("2026-11-22T10:00:00Z"),
            duration_seconds: 0.0,
        }
        .into()
    }

    fn restore() -> Summary {
        RestoreSummary {
            engine: Engine::Postgres,
            from: "s3://shop-backups/shop/nightly/r1/manifest.json".into(),
            databases: vec!["copy".into()],
            size_bytes: 1024,
            raw_bytes: 4096,
            checksum_verified: true,
            verified_first: true,
            sha256: vec!["a".repeat(64)],
            duration_seconds: 3.25,
            swap: None,
        }
        .into()
    }

    /// A staged restore's summary: the in-place one plus `swap`.
    fn restore_staged() -> Summary {
        let Summary::Succeeded(Succeeded::Restore(mut r)) = restore() else {
            unreachable!()
        };
        r.swap = Some(swap());
        r.into()
    }

    fn swap() -> SwapSummary {
        SwapSummary {
            staging_database: "copy_dgstaging".into(),
            target_database: "copy".into(),
            sessions_terminated: 2,
            masking_rules: 3,
            guard_passed: Some(true),
            previous_database: Some("copy_dgprev_20261207083005".into()),
            previous_kept: true,
        }
    }

    fn check(name: &str, kind: CheckKind, result: ValidationResult) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind,
            result,
            expected: Some("2 tables, 5000 rows".into()),
            observed: Some("2 tables, 5000 rows".into()),
            message: None,
        }
    }

    fn validate_passed() -> Summary {
        ValidateSummary {
            result: ValidationResult::Passed,
            reason: None,
            message: "restored in 1.5s; 1 checks passed".into(),
            engine: Engine::Postgres,
            server_version: "15.8".into(),
            from: "s3://shop-backups/shop/nightly/r1/manifest.json".into(),
            databases: vec!["shop".into()],
            restore_duration_seconds: Some(1.5),
            checks: vec![check(
                "rowCounts",
                CheckKind::RowCounts,
                ValidationResult::Passed,
            )],
            duration_seconds: 4.75,
        }
        .into()
    }

    /// A backup that did not restore: a verdict (status `succeeded`), `reason` set,
    /// `restoreDurationSeconds` null.
    fn validate_failed() -> Summary {
        ValidateSummary {
            result: ValidationResult::Failed,
            reason: Some("ChecksumMismatch".into()),
            message: "the backup did not restore: integrity: sha256 mismatch".into(),
            engine: Engine::Mysql,
            server_version: "10.11".into(),
            from: "file:///backup/r1/manifest.json".into(),
            databases: Vec::new(),
            restore_duration_seconds: None,
            checks: vec![CheckResult {
                name: "rowCounts".into(),
                kind: CheckKind::RowCounts,
                result: ValidationResult::Failed,
                expected: None,
                observed: None,
                message: Some("not run: the restore failed".into()),
            }],
            duration_seconds: 0.5,
        }
        .into()
    }

    fn prune() -> Summary {
        PruneSummary {
            deleted: vec![
                "/backup/shop/r1/databases/shop.pgdump.zst".into(),
                "/backup/shop/r1/manifest.json".into(),
            ],
            already_gone: Vec::new(),
            duration_seconds: 0.012345,
        }
        .into()
    }

    fn failure() -> Summary {
        FailureSummary {
            operation: Operation::Restore,
            category: FailureCategory::Target,
            error: "restore target: database \"copy\" is not empty (3 objects)".into(),
            duration_seconds: 1.235,
        }
        .into()
    }

    #[test]
    fn backup_summaries_are_byte_for_byte_the_agents() {
        assert_eq!(backup().to_value().to_string(), backup_json().to_string());
        // The bytes on the wire: keys sorted, as a `Value` prints them.
        assert!(
            backup()
                .to_value()
                .to_string()
                .starts_with(r#"{"allDatabases":false,"artifacts":[{"database":"shop","durationSeconds":1.5,"key":"databases/shop.pgdump.zst.age","kind":"database","rawBytes":4096,"sha256":"aaaa"#),
        );
        let all = json!({
            "status": "succeeded",
            "operation": "backup",
            "engine": "mysql",
            "serverVersion": "10.11.6-MariaDB",
            "database": null,
            "allDatabases": true,
            "location": "file:///backup/shop/r2/manifest.json",
            "key": "/backup/shop/r2/manifest.json",
            "manifestSha256": "c".repeat(64),
            "sha256": "d".repeat(64),
            "sizeBytes": 0u64,
            "rawBytes": 0u64,
            "compression": "none",
            "encryption": null,
            "tables": 0usize,
            "rows": 0u64,
            "artifacts": [{
                "key": "all-databases.sql",
                "kind": "allDatabases",
                "database": null,
                "sizeBytes": 0u64,
                "rawBytes": 0u64,
                "sha256": "d".repeat(64),
                "durationSeconds": 0.0,
                "tables": [],
            }],
            "startedAt": "2026-11-22T10:00:00Z",
            "completedAt": "2026-11-22T10:00:00Z",
            "durationSeconds": 0.0,
        });
        assert_eq!(backup_all().to_value().to_string(), all.to_string());
    }

    #[test]
    fn restore_validate_prune_and_failure_summaries_are_byte_for_byte_the_agents() {
        // agent::summary::restore_summary
        assert_eq!(
            restore().to_value().to_string(),
            r#"{"checksumVerified":true,"databases":["copy"],"durationSeconds":3.25,"engine":"postgres","from":"s3://shop-backups/shop/nightly/r1/manifest.json","operation":"restore","rawBytes":4096,"sha256":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],"sizeBytes":1024,"status":"succeeded","verifiedFirst":true}"#
        );
        // agent::validate::outcome_summary: `reason` and `restoreDurationSeconds` are null when
        // unset; a check's unset `expected`/`observed`/`message` are absent.
        assert_eq!(
            validate_passed().to_value().to_string(),
            json!({
                "status": "succeeded",
                "operation": "validate",
                "result": "Passed",
                "reason": null,
                "message": "restored in 1.5s; 1 checks passed",
                "engine": "postgres",
                "serverVersion": "15.8",
                "from": "s3://shop-backups/shop/nightly/r1/manifest.json",
                "databases": ["shop"],
                "restoreDurationSeconds": 1.5,
                "checks": [{"name": "rowCounts", "type": "rowCounts", "result": "Passed",
                    "expected": "2 tables, 5000 rows", "observed": "2 tables, 5000 rows"}],
                "durationSeconds": 4.75,
            })
            .to_string()
        );
        assert_eq!(
            validate_failed().to_value().to_string(),
            r#"{"checks":[{"message":"not run: the restore failed","name":"rowCounts","result":"Failed","type":"rowCounts"}],"databases":[],"durationSeconds":0.5,"engine":"mysql","from":"file:///backup/r1/manifest.json","message":"the backup did not restore: integrity: sha256 mismatch","operation":"validate","reason":"ChecksumMismatch","restoreDurationSeconds":null,"result":"Failed","serverVersion":"10.11","status":"succeeded"}"#
        );
        // cli::agent::prune: the duration is not rounded.
        assert_eq!(
            prune().to_value().to_string(),
            r#"{"alreadyGone":[],"deleted":["/backup/shop/r1/databases/shop.pgdump.zst","/backup/shop/r1/manifest.json"],"durationSeconds":0.012345,"operation":"prune","status":"succeeded"}"#
        );
        // agent::summary::failure_summary
        assert_eq!(
            failure().to_value().to_string(),
            r#"{"category":"target","durationSeconds":1.235,"error":"restore target: database \"copy\" is not empty (3 objects)","operation":"restore","status":"failed"}"#
        );
    }

    #[test]
    fn every_summary_reads_back_as_itself() {
        for s in [
            backup(),
            backup_all(),
            restore(),
            validate_passed(),
            validate_failed(),
            prune(),
            failure(),
        ] {
            let line = s.to_value().to_string();
            let back: Summary = serde_json::from_str(&line).unwrap();
            assert_eq!(back, s, "{line}");
        }
        assert!(backup().succeeded() && validate_failed().succeeded() && !failure().succeeded());
        for op in [
            Operation::Backup,
            Operation::Restore,
            Operation::Validate,
            Operation::Prune,
        ] {
            assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
        }
    }

    #[test]
    fn compacted_summaries_still_read() {
        // agent::summary::compact drops per-table counts, then the artifact list, and marks
        // the summary truncated.
        let mut v = backup().to_value();
        v["artifacts"][0].as_object_mut().unwrap().remove("tables");
        v["truncated"] = json!(true);
        let Summary::Succeeded(Succeeded::Backup(b)) =
            serde_json::from_value::<Summary>(v.clone()).unwrap()
        else {
            panic!("not a backup summary")
        };
        assert!(b.artifacts[0].tables.is_empty());
        v.as_object_mut().unwrap().remove("artifacts");
        let Summary::Succeeded(Succeeded::Backup(b)) =
            serde_json::from_value::<Summary>(v.clone()).unwrap()
        else {
            panic!("not a backup summary")
        };
        assert!(b.artifacts.is_empty());
        assert_eq!(AgentReport::parse(&v.to_string()).unwrap().rows, Some(5000));
        // agent::validate::compact drops check messages and observed values.
        let mut v = validate_failed().to_value();
        v["truncated"] = json!(true);
        v["checks"][0].as_object_mut().unwrap().remove("message");
        assert!(serde_json::from_value::<Summary>(v.clone()).is_ok());
        let r = ValidationReport::parse(&v.to_string()).unwrap();
        assert_eq!(r.checks[0].message, None);
        assert_eq!(r.reason.as_deref(), Some("ChecksumMismatch"));
    }

    #[test]
    fn the_backup_controller_reads_what_the_agent_wrote() {
        let r = AgentReport::parse(&backup().to_value().to_string()).unwrap();
        assert_eq!(
            r,
            AgentReport {
                status: "succeeded".into(),
                operation: Some("backup".into()),
                category: None,
                error: None,
                engine: Some("postgres".into()),
                server_version: Some("15.8".into()),
                location: Some("s3://shop-backups/shop/nightly/r1/manifest.json".into()),
                key: Some("shop/nightly/r1".into()),
                sha256: Some("a".repeat(64)),
                manifest_sha256: Some("f".repeat(64)),
                size_bytes: Some(1024),
                raw_bytes: Some(4096),
                compression: Some("zstd:3".into()),
                encryption: Some(json!({"scheme": "age-x25519", "recipients": ["sha256:00"]})),
                tables: Some(2),
                rows: Some(5000),
                duration_seconds: Some(2.5),
                checksum_verified: None,
            }
        );
        assert!(r.succeeded());
        // `null` database and encryption read as absent.
        let all = AgentReport::parse(&backup_all().to_value().to_string()).unwrap();
        assert_eq!(all.encryption, None);
        assert_eq!(all.engine.as_deref(), Some("mysql"));
        // A backup Job's failure.
        let backup_failed: Summary = FailureSummary {
            operation: Operation::Backup,
            category: FailureCategory::Storage,
            error: "storage: upload failed".into(),
            duration_seconds: 0.5,
        }
        .into();
        let f = AgentReport::parse(&backup_failed.to_value().to_string()).unwrap();
        assert!(!f.succeeded());
        assert_eq!(f.operation.as_deref(), Some("backup"));
        assert_eq!(f.category.as_deref(), Some("storage"));
        assert_eq!(f.failure_category(), Some(FailureCategory::Storage));
        assert_eq!(f.error.as_deref(), Some("storage: upload failed"));
        assert_eq!(f.duration_seconds, Some(0.5));
        // A prune Job's summaries (the policy controller reads `error` of a failed one).
        let p = AgentReport::parse(&prune().to_value().to_string()).unwrap();
        assert!(p.succeeded());
        assert_eq!(p.operation.as_deref(), Some("prune"));
    }

    #[test]
    fn the_restore_controller_reads_what_the_agent_wrote() {
        let r = RestoreReport::parse(&restore_staged().to_value().to_string()).unwrap();
        assert_eq!(
            r,
            RestoreReport {
                status: "succeeded".into(),
                category: None,
                error: None,
                databases: vec!["copy".into()],
                size_bytes: Some(1024),
                raw_bytes: Some(4096),
                checksum_verified: Some(true),
                sha256: vec!["a".repeat(64)],
                duration_seconds: Some(3.25),
                swap: Some(swap()),
            }
        );
        assert!(r.succeeded());
        let f = RestoreReport::parse(&failure().to_value().to_string()).unwrap();
        assert!(!f.succeeded());
        assert_eq!(f.failure_category(), Some(FailureCategory::Target));
        assert!(f.error.unwrap().contains("not empty"));
    }

    #[test]
    fn the_validation_controller_reads_what_the_agent_wrote() {
        let r = ValidationReport::parse(&validate_passed().to_value().to_string()).unwrap();
        assert_eq!(
            r,
            ValidationReport {
                status: "succeeded".into(),
                result: Some(ValidationResult::Passed),
                reason: None,
                message: Some("restored in 1.5s; 1 checks passed".into()),
                category: None,
                error: None,
                restore_duration_seconds: Some(1.5),
                checks: vec![check(
                    "rowCounts",
                    CheckKind::RowCounts,
                    ValidationResult::Passed
                )],
            }
        );
        let f = ValidationReport::parse(&validate_failed().to_value().to_string()).unwrap();
        assert!(f.succeeded(), "a Failed verdict is a succeeded validation");
        assert_eq!(f.result, Some(ValidationResult::Failed));
        assert_eq!(f.reason.as_deref(), Some("ChecksumMismatch"));
        assert_eq!(f.restore_duration_seconds, None);
        let could_not_run: Summary = FailureSummary {
            operation: Operation::Validate,
            category: FailureCategory::Storage,
            error: "storage: no such key".into(),
            duration_seconds: 0.25,
        }
        .into();
        let e = ValidationReport::parse(&could_not_run.to_value().to_string()).unwrap();
        assert!(!e.succeeded());
        assert_eq!(e.result, None);
        assert_eq!(e.failure_category(), Some(FailureCategory::Storage));
        assert_eq!(e.error.as_deref(), Some("storage: no such key"));
    }

    #[test]
    fn readers_stay_lenient() {
        // Every message the controllers' own tests feed them keeps parsing.
        let ok = AgentReport::parse(
            r#"{"status":"succeeded","operation":"backup","engine":"postgres","serverVersion":"15.18","key":"shop/nightly/x","location":"s3://b/shop/nightly/x/manifest.json","sha256":"ab","sizeBytes":10,"rawBytes":40,"compression":"zstd:3","tables":3,"rows":42}"#,
        )
        .unwrap();
        assert!(ok.succeeded());
        assert_eq!((ok.size_bytes, ok.rows), (Some(10), Some(42)));
        let failed = AgentReport::parse(r#"{"status":"failed","operation":"backup","category":"dump","error":"pg_dump exited with 1"}"#).unwrap();
        assert!(!failed.succeeded());
        assert_eq!(failed.category.as_deref(), Some("dump"));
        assert_eq!(failed.failure_category(), None);
        assert_eq!(AgentReport::parse(""), None);
        assert_eq!(AgentReport::parse("panicked at ..."), None);
        assert_eq!(AgentReport::parse(r#"{"status":""}"#), None);

        let unverified =
            RestoreReport::parse(r#"{"status":"succeeded","checksumVerified":false}"#).unwrap();
        assert_eq!(unverified.checksum_verified, Some(false));
        assert!(
            RestoreReport::parse(r#"{"status":"failed","category":"target","error":"x"}"#)
                .is_some()
        );
        assert!(
            RestoreReport::parse(
                r#"{"status":"succeeded","operation":"restore","databases":["copy"],"checksumVerified":true,"sha256":["ab"],"sizeBytes":10}"#
            )
            .is_some()
        );

        let v = ValidationReport::parse(r#"{"status":"succeeded","result":"Failed","reason":"ChecksumMismatch","message":"bad"}"#).unwrap();
        assert_eq!(v.result, Some(ValidationResult::Failed));
        let v = ValidationReport::parse(
            r#"{"status":"succeeded","operation":"validate","result":"Passed","restoreDurationSeconds":2.5,"checks":[{"name":"rowCounts-0","type":"rowCounts","result":"Passed","expected":"3 tables, 5 rows","observed":"3 tables, 5 rows"}]}"#,
        )
        .unwrap();
        assert_eq!(v.checks.len(), 1);
        assert!(
            ValidationReport::parse(
                r#"{"status":"failed","category":"storage","error":"no such key"}"#
            )
            .is_some()
        );
    }

    #[test]
    fn tool_stderr_in_a_report_is_redacted_before_status_sees_it() {
        let stderr = "pg_restore failed (exit status: 1): pg_restore: error: COPY failed for table \"users\": ERROR:  duplicate key value violates unique constraint \"users_email_key\"\nDETAIL:  Key (email)=(alice@example.com) already exists. | connection: postgres://restore:hunter2@db/shop";
        let raw = json!({"status": "failed", "operation": "restore", "category": "target", "error": stderr}).to_string();
        for error in [
            AgentReport::parse(&raw).unwrap().error,
            RestoreReport::parse(&raw).unwrap().error,
            ValidationReport::parse(&raw).unwrap().error,
        ] {
            let error = error.unwrap();
            assert!(
                error.contains("duplicate key value violates unique constraint"),
                "{error}"
            );
            assert!(!error.contains("alice@example.com"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        let verdict = json!({"status": "succeeded", "result": "Failed", "reason": "RestoreFailed",
            "message": "restore failed: ERROR: x DETAIL: Failing row contains (4111111111111111)"})
        .to_string();
        let message = ValidationReport::parse(&verdict).unwrap().message.unwrap();
        assert!(!message.contains("4111"), "{message}");
    }
}
