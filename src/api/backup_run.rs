//! BackupRun: one backup, created by the schedule or by a person/GitOps for a manual run.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Compression, LocalObjectReference, Progress};
use super::restore_validation::ValidationResult;

/// One backup of a BackupPolicy's database. The spec is immutable; the status is the audit
/// trail: trigger, Job, attempts, times, live progress, the artifact produced (confirmed by
/// size and checksum before the run counts as Succeeded) and whether it was proven restorable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "dataguardian.io",
    version = "v1alpha1",
    kind = "BackupRun",
    plural = "backupruns",
    namespaced,
    status = "BackupRunStatus",
    shortname = "br",
    category = "dataguardian",
    doc = "One backup of a BackupPolicy's database.",
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policyRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".status.artifact.size"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.duration"}"#,
    printcolumn = r#"{"name":"Verified","type":"string","jsonPath":".status.verification.result"}"#,
    printcolumn = r#"{"name":"Trigger","type":"string","priority":1,"jsonPath":".spec.trigger"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
pub struct BackupRunSpec {
    /// The BackupPolicy (same namespace) whose database, storage and settings this run uses.
    pub policy_ref: LocalObjectReference,
    /// Who started the run: `Scheduled` (the operator, from the policy's schedule) or `Manual`
    /// (a person, a pipeline, GitOps). Default `Manual`.
    #[serde(default)]
    pub trigger: Trigger,
    /// For scheduled runs, the cron time this run satisfies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<Time>,
    /// Free-text reason recorded with the run, e.g. `before migration 42`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
    /// Overrides the policy's compression for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Overrides the policy's `activeDeadlineSeconds` for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: Option<i64>,
}

/// What started a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    /// Started by the operator from the policy's schedule.
    Scheduled,
    /// Started by a person or a pipeline.
    #[default]
    Manual,
}

/// Lifecycle phase of a BackupRun.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupRunPhase {
    /// Accepted; waiting for its Job to start (e.g. behind another run of the policy).
    #[default]
    Pending,
    /// The backup Job is running.
    Running,
    /// The artifact was uploaded and confirmed (size and checksum) and its manifest written.
    Succeeded,
    /// The run failed; `reason` and `message` say why.
    Failed,
}

impl BackupRunPhase {
    /// How it ended: `Some(true)` Succeeded, `Some(false)` Failed, `None` while it goes on.
    pub fn outcome(self) -> Option<bool> {
        match self {
            BackupRunPhase::Succeeded => Some(true),
            BackupRunPhase::Failed => Some(false),
            _ => None,
        }
    }

    /// Whether the run has finished (Succeeded or Failed).
    pub fn is_finished(self) -> bool {
        matches!(self, BackupRunPhase::Succeeded | BackupRunPhase::Failed)
    }
}

/// Observed state of a BackupRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRunStatus {
    /// `Pending` → `Running` → `Succeeded` | `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupRunPhase>,
    /// Machine-readable reason of the current phase, e.g. `DumpFailed`, `Stalled`,
    /// `DeadlineExceeded`, `ChecksumMismatch`, `PolicyNotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts started so far (1 + retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Name of the backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The OpenTelemetry trace id of this run (32 hex digits), when the operator exports
    /// traces: the operator's reconciles, the Job's creation and the agent's work are one trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Wall time of the run in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Wall time of the run, human-readable (e.g. `3m12s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Live progress while running; final figures afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Box<Progress>>,
    /// What was produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Box<Artifact>>,
    /// Set by a RestoreValidation that restored this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Box<Verification>>,
    /// Failed attempts, oldest first (at most 10): what failed and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub failed_attempts: Vec<AttemptFailure>,
    /// `Complete`, `Failed` and `Verified`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `true` when the operator's schedule created this run. Written by the operator only
    /// (users cannot write status), so unlike `spec.trigger` it cannot be claimed by whoever
    /// creates a run. Retention counts these as the scheduled restore points; every other run
    /// (manual, or `trigger: Scheduled` set by a client) is counted with the manual runs, so
    /// manual runs never evict scheduled ones from `keepLast` or the calendar buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<bool>,
    /// Who asked for it: the user the admission webhook recorded when it was created
    /// (annotation `dataguardian.io/requested-by`), copied here when its Job starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The artifact of a backup. Per-table row counts live in the artifact's `manifest.json`,
/// not here: objects must stay small.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Name of the BackupStorage holding it.
    pub storage: String,
    /// Object key (S3) or relative path (filesystem) of the artifact.
    pub key: String,
    /// Key of the artifact's manifest (written last: the commit marker). The operator computes
    /// it from the policy and the storage and requires the agent to have written exactly there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    /// Hex SHA-256 of the manifest's bytes, computed by the operator when it confirmed the
    /// backup: restores and validations refuse a manifest that does not hash to it, and
    /// retention deletes nothing a manifest with another digest names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// What the backup holds: one `Database` or `AllDatabases` (from the policy, confirmed
    /// against the manifest). Restores and validations refuse a manifest that says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<BackupScope>,
    /// Stored size in bytes (after compression and encryption), confirmed on the storage.
    #[serde(default)]
    pub size_bytes: u64,
    /// Stored size, human-readable (e.g. `1.2 GiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Size of the raw dump in bytes (before compression).
    #[serde(default)]
    pub raw_bytes: u64,
    /// Hex SHA-256 of the stored bytes.
    #[serde(default)]
    pub sha256: String,
    /// Compression algorithm (`zstd`, `gzip`, `none`).
    #[serde(default)]
    pub compression: String,
    /// Encryption of the artifact (absent when unencrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ArtifactEncryption>,
    /// Engine of the dumped server (`postgres`, `mysql`).
    #[serde(default)]
    pub engine: String,
    /// Version reported by the dumped server, e.g. `15.6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Number of tables dumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<u64>,
    /// Total rows dumped (sum over tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Object Lock retain-until date (only with Object Lock): the artifact cannot be deleted
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<Time>,
    /// Confirmed copies on the policy's secondary storages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<ArtifactCopy>,
}

/// Whether a backup holds one database or every database of the server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupScope {
    /// One database.
    Database,
    /// Every database (PostgreSQL: plus roles and tablespaces).
    AllDatabases,
}

impl BackupScope {
    /// Every scope.
    pub const ALL: [BackupScope; 2] = [BackupScope::Database, BackupScope::AllDatabases];

    /// The wire name (also the agent's `--expect-scope` value).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupScope::Database => "Database",
            BackupScope::AllDatabases => "AllDatabases",
        }
    }

    /// The scope of a backup that does (or does not) include every database.
    pub fn from_all_databases(all: bool) -> Self {
        if all {
            BackupScope::AllDatabases
        } else {
            BackupScope::Database
        }
    }
}

impl std::fmt::Display for BackupScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackupScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackupScope::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?} (Database or AllDatabases)"))
    }
}

/// Encryption of an artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactEncryption {
    /// Always `age`.
    pub method: String,
    /// Fingerprints (SHA-256 of each recipient, hex, first 16 chars) of the recipients the
    /// artifact was encrypted to: tells which identity can restore it without revealing keys.
    pub recipients: Vec<String>,
    /// The KMS key the data key is wrapped by, as the policy named it
    /// (`spec.encryption.kms.keyId`, key id or alias as written) when the backup Job ran, or as
    /// the rotation that re-wrapped it named it. Absent: not wrapped by KMS, or recorded by an
    /// older operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// The manifest's encryption scheme, as read from it: `age-x25519-envelope` (the artifacts
    /// encrypted to a data key the manifest holds wrapped: re-wrappable) or `age-x25519`
    /// (written before envelope encryption: the artifacts encrypted straight to the recipients,
    /// never re-wrappable). Absent: recorded by an older operator (a rotation finds out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

/// A replicated copy of an artifact on one of the policy's `secondaryStorageRefs`, recorded
/// once the operator confirmed it (the copy's manifest hashes to the run's `manifestSha256` and
/// every artifact it lists has the listed size).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactCopy {
    /// Name of the BackupStorage holding the copy.
    pub storage: String,
    /// Key of the copy's manifest on that storage (S3 object key, or path in the copy pod).
    pub key: String,
    /// Whether size and checksum of the copy were confirmed.
    pub confirmed: bool,
    /// Full location of the copy's manifest (`s3://bucket/key`, `file:///…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Hex SHA-256 of the copy's manifest, confirmed equal to the run's `manifestSha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// How it was made: `ServerSideCopy` (same S3 endpoint) or `CopyJob` (streamed by a Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// When the copy was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Object Lock retain-until date of the copy (the storage's own lock settings): retention
    /// deletes it only after this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<Time>,
}

/// Proof that a backup restores, set by a RestoreValidation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// `Passed` or `Failed`.
    pub result: ValidationResult,
    /// Name of the RestoreValidation.
    pub validation_name: String,
    /// When the validation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Measured restore time in seconds (the real RTO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_duration_seconds: Option<f64>,
}

/// One failed attempt of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptFailure {
    /// Attempt number (1-based).
    pub attempt: u32,
    /// When the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Machine-readable reason.
    pub reason: String,
    /// Human-readable detail (never contains secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Whether `run` carries the pin label. Any value but `false` pins: when in doubt, keep.
pub fn is_pinned(run: &BackupRun) -> bool {
    kube::ResourceExt::labels(run)
        .get(super::backup_policy::PIN_LABEL)
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
}
