//! RestoreRun: restore one backup into a target database.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup_run::AttemptFailure;
use super::common::{DatabaseSpec, Decryption, LocalObjectReference, Progress, RestoreJobTemplate};

/// Restores one backup — a BackupRun's artifact, or any artifact by storage and key — into a
/// target database. Restores are queued: at most one runs per target at a time. The spec is
/// immutable.
///
/// Safety: a restore into a database that already contains tables is refused unless
/// `overwrite: true` is set explicitly; `clean: true` (drop existing objects first) requires
/// `overwrite: true` as well.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "dataguardian.io",
    version = "v1alpha1",
    kind = "RestoreRun",
    plural = "restoreruns",
    namespaced,
    status = "RestoreRunStatus",
    shortname = "rr",
    category = "dataguardian",
    doc = "Restores one backup into a target database.",
    printcolumn = r#"{"name":"Backup","type":"string","jsonPath":".spec.backupRunRef.name"}"#,
    printcolumn = r#"{"name":"Key","type":"string","priority":1,"jsonPath":".spec.key"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Queue","type":"integer","jsonPath":".status.queuePosition"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.duration"}"#,
    printcolumn = r#"{"name":"Approved-By","type":"string","jsonPath":".status.approval.approvedBy"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec is immutable"),
    validation = Rule::new("has(self.backupRunRef) != has(self.storageRef)")
        .message("set exactly one of backupRunRef or storageRef + key"),
    validation = Rule::new("has(self.storageRef) == has(self.key)")
        .message("storageRef and key must be set together"),
    validation = Rule::new("!has(self.manifestSha256) || has(self.storageRef)")
        .message("manifestSha256 pins a restore by storageRef + key; a backupRunRef restore is pinned to what its BackupRun recorded"),
    validation = Rule::new("!(has(self.clean) && self.clean) || (has(self.overwrite) && self.overwrite)")
        .message("clean drops existing objects in the target: set overwrite: true to confirm"),
    // Staged restores and masking (issue 16): see `SwapSpec` and `MaskingSpec`.
    validation = Rule::new("!has(self.masking) || !has(self.swap) || !has(self.swap.mode) || self.swap.mode == 'Staged'")
        .message("masking runs in the staging database before the swap: it needs swap.mode Staged"),
    validation = Rule::new("!has(self.masking) || !((has(self.target.postgres) && has(self.target.postgres.allDatabases) && self.target.postgres.allDatabases) || (has(self.target.mysql) && has(self.target.mysql.allDatabases) && self.target.mysql.allDatabases))")
        .message("allDatabases restores cannot be staged, so they cannot be masked: restore one database at a time"),
    validation = Rule::new("!has(self.swap) || !has(self.swap.mode) || self.swap.mode != 'Staged' || !((has(self.target.postgres) && has(self.target.postgres.allDatabases) && self.target.postgres.allDatabases) || (has(self.target.mysql) && has(self.target.mysql.allDatabases) && self.target.mysql.allDatabases))")
        .message("allDatabases restores cannot be staged: use swap.mode InPlace (or leave it unset)"),
    validation = Rule::new("!has(self.swap) || !has(self.swap.mode) || self.swap.mode == 'Staged' || (!has(self.swap.keepPreviousSeconds) && !(has(self.swap.terminateSessions) && self.swap.terminateSessions))")
        .message("keepPreviousSeconds and terminateSessions apply to the swap of a Staged restore")
)]
pub struct RestoreRunSpec {
    /// The BackupRun (same namespace) whose artifact to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_run_ref: Option<LocalObjectReference>,
    /// The BackupStorage holding the artifact, for an artifact not tracked by a BackupRun
    /// (e.g. from another cluster). Requires `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_ref: Option<LocalObjectReference>,
    /// Key of the artifact in `storageRef` (its `manifest.json` must exist next to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub key: Option<String>,
    /// With `storageRef` + `key`: the SHA-256 (lowercase hex) of the backup's `manifest.json`,
    /// as `kubectl get backuprun -o jsonpath='{.status.artifact.manifestSha256}'` showed it in
    /// the cluster that made the backup. The agent refuses any other manifest before touching
    /// the target (its artifact digests are pinned by it). Without it, a storage + key restore
    /// believes the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub manifest_sha256: Option<String>,
    /// With `backupRunRef`: the BackupStorage to read the backup from — the storage it was
    /// made on, or one of its policy's `secondaryStorageRefs` holding a confirmed copy
    /// (`status.artifact.copies` of the BackupRun; the restore waits with reason `CopyNotFound`
    /// until there is one). Without it the restore reads the storage the backup was made on,
    /// and falls back to a confirmed copy on a usable storage (with an Event `ReadingCopy`)
    /// when that storage is missing or not Ready. Not for `storageRef` + `key` restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_from: Option<LocalObjectReference>,
    /// The database to restore into: exactly one engine block, of the same engine as the
    /// backup.
    pub target: DatabaseSpec,
    /// Create the target database first if it does not exist.
    #[serde(default)]
    pub create_database: bool,
    /// Drop existing objects before recreating them (`pg_restore --clean --if-exists`; for
    /// MySQL, drop the tables contained in the dump). Requires `overwrite: true`. In place
    /// only: a staged restore replaces the whole database.
    #[serde(default)]
    pub clean: bool,
    /// Must be `true` to restore into a database that already contains tables. Without it a
    /// non-empty target makes the restore fail with reason `TargetNotEmpty` and nothing is
    /// touched.
    #[serde(default)]
    pub overwrite: bool,
    /// Identity to decrypt an encrypted artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Retries of a failed attempt before the restore fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<u32>,
    /// Upper bound on the restore's wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: Option<i64>,
    /// A restore that moves no bytes for this many seconds is considered stalled (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30))]
    pub stall_timeout_seconds: Option<i64>,
    /// Resources and scheduling of the restore Job's Pod, laid over the backup policy's
    /// `jobTemplate`. Nothing else can be set here: image, ServiceAccount, security contexts,
    /// labels and annotations come from the policy (or the operator) and are refused by the
    /// API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<RestoreJobTemplate>,
    /// How the restore reaches the target. By default a single-database restore is staged:
    /// it lands in a staging database on the target server, the artifact's checksum is
    /// verified as the stream ends, `masking` runs there, and only then is it swapped in (see
    /// docs/restore.md). `allDatabases` restores cannot be staged and run in place, after a
    /// full verification pass of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapSpec>,
    /// Masking for staging refreshes: statements run in the staging database before the swap,
    /// then a guard query that must hold, so the target never holds an unmasked row. Needs a
    /// staged restore (not `allDatabases`, not `swap.mode: InPlace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking: Option<MaskingSpec>,
}

/// How a restore reaches its target database.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestoreMode {
    /// Restore into a staging database on the target server, verify, mask, then swap it in
    /// atomically; any failure drops the staging database and leaves the target as it was.
    #[default]
    Staged,
    /// Restore straight into the target (the only way for `allDatabases` restores). The
    /// artifact is read and verified completely first, then read again for the restore.
    InPlace,
}

impl RestoreMode {
    /// The spelling in the API and the agent's `--staging` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreMode::Staged => "Staged",
            RestoreMode::InPlace => "InPlace",
        }
    }
}

/// The swap of a staged restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwapSpec {
    /// `Staged` (the default for a single database) or `InPlace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RestoreMode>,
    /// PostgreSQL: sessions connected to the target are terminated just before the swap (new
    /// connections are refused meanwhile). Without it, a target with connected sessions fails
    /// the restore with reason `TargetInUse` and the target is left as it was. MySQL/MariaDB:
    /// connections whose default schema is the target are killed; the `RENAME TABLE` waits at
    /// most 30 seconds for any other lock.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate_sessions: bool,
    /// Keep the previous target under `<database>_dgprev_<UTC time>` for this many seconds
    /// after the swap (`status.swap.previousDatabase`); then a cleanup Job drops it. Without
    /// it the previous target is dropped right after the swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7776000))]
    pub keep_previous_seconds: Option<i64>,
}

/// Masking of a staged restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaskingSpec {
    /// Applied in order in the staging database (PostgreSQL: in one transaction).
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub rules: Vec<MaskingRule>,
    /// A query returning one value that must be true (PostgreSQL `true`, MySQL `1`) after
    /// the rules ran, e.g. `SELECT count(*) = 0 FROM customers WHERE email NOT LIKE
    /// '%@example.invalid'`. Otherwise the restore fails with reason `GuardFailed`, the
    /// staging database is dropped and the target is left as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub guard: Option<String>,
}

/// One masking rule: per-column SQL expressions for one table, or one SQL statement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.table) != has(self.sql)")
        .message("set exactly one of table (with columns) or sql"),
    validation = Rule::new("has(self.table) == has(self.columns)")
        .message("table and columns must be set together")
)]
pub struct MaskingRule {
    /// The table: `schema.table` (PostgreSQL) or `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub table: Option<String>,
    /// Columns and the SQL expression each is set to (`UPDATE table SET column = expression`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub columns: Option<Vec<ColumnMask>>,
    /// Only rows matching this SQL condition are masked (default: all rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub r#where: Option<String>,
    /// One SQL statement, e.g. `TRUNCATE audit_log` or `DELETE FROM sessions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub sql: Option<String>,
}

/// One masked column.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMask {
    /// Column name.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// SQL expression, evaluated per row, e.g. `'user' || id || '@example.invalid'`.
    #[schemars(length(min = 1, max = 65536))]
    pub expression: String,
}

/// What the swap of a staged restore did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwapStatus {
    /// `Staged` or `InPlace`.
    pub mode: RestoreMode,
    /// The staging database the artifact was restored into (dropped after the swap or a
    /// failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_database: Option<String>,
    /// Whether the staging database replaced the target.
    #[serde(default)]
    pub swapped: bool,
    /// Sessions on the target terminated for the swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_terminated: Option<u64>,
    /// Masking rules applied in the staging database before the swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking_rules_applied: Option<u32>,
    /// Whether the masking guard held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_passed: Option<bool>,
    /// The previous target, kept under this name after the swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_database: Option<String>,
    /// When the cleanup Job drops the kept previous target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_drop_after: Option<Time>,
    /// When the kept previous target was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_dropped_at: Option<Time>,
    /// The Job dropping the kept previous target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_job_name: Option<String>,
    /// Why the cleanup failed, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_message: Option<String>,
}

/// Lifecycle phase of a RestoreRun.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestoreRunPhase {
    /// Waiting its turn; `queuePosition` tells how many restores are ahead.
    #[default]
    Queued,
    /// Waiting for a second person's approval (the policy's or the operator's
    /// `restoreApproval`): `kubectl dataguardian approve NAME`. Holds no place in the queue.
    AwaitingApproval,
    /// The restore Job is running.
    Running,
    /// The artifact's checksum matched and the restore completed.
    Succeeded,
    /// The restore failed; `reason` and `message` say why.
    Failed,
}

impl RestoreRunPhase {
    /// How it ended: `Some(true)` Succeeded, `Some(false)` Failed, `None` while it goes on.
    pub fn outcome(self) -> Option<bool> {
        match self {
            RestoreRunPhase::Succeeded => Some(true),
            RestoreRunPhase::Failed => Some(false),
            _ => None,
        }
    }

    /// Whether the restore has finished (Succeeded or Failed).
    pub fn is_finished(self) -> bool {
        matches!(self, RestoreRunPhase::Succeeded | RestoreRunPhase::Failed)
    }
}

/// Observed state of a RestoreRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRunStatus {
    /// `Queued` (or `AwaitingApproval`) → `Running` → `Succeeded` | `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestoreRunPhase>,
    /// Restores ahead of this one (0 = next), while Queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// Machine-readable reason of the current phase, e.g. `TargetNotEmpty`,
    /// `ChecksumMismatch`, `BackupRunNotFound`, `EngineMismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts started so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Name of the restore Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The OpenTelemetry trace id of this run (32 hex digits), when the operator exports
    /// traces: the operator's reconciles, the Job's creation and the agent's work are one trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Wall time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Wall time, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Live progress while running; final figures afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The artifact being restored (resolved from `backupRunRef` or `storageRef` + `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RestoreSource>,
    /// Result of verifying the artifact's SHA-256 while streaming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<ChecksumVerification>,
    /// Failed attempts, oldest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub failed_attempts: Vec<AttemptFailure>,
    /// `Complete` and `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Who asked for it: the user the admission webhook recorded when it was created
    /// (annotation `dataguardian.io/requested-by`), copied here when its Job starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// What the staged restore did: staging database, swap, masking, the previous target kept
    /// and its cleanup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStatus>,
    /// Whether this restore needs a second person's approval, and who gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStatus>,
}

/// The approval of a restore that needs one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// The rule that applied (`OnOverwrite` or `Always`).
    pub required: super::backup_policy::ApprovalRequirement,
    /// The approver, as the admission webhook recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When the approval was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Time>,
    /// Until when the approval lets the restore start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
}

/// The artifact a restore reads.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// BackupStorage holding the artifact (a secondary storage when a copy is read).
    pub storage: String,
    /// Key of the artifact (of a copy: the key of its manifest on that storage).
    pub key: String,
    /// Stored size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Engine of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// Checksum verification of a restored artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChecksumVerification {
    /// Whether the streamed bytes matched the recorded checksum.
    pub verified: bool,
    /// SHA-256 recorded at backup time.
    pub expected_sha256: String,
    /// SHA-256 of the bytes read during the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_sha256: Option<String>,
}
