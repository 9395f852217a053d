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
        .message("clean drops existing objects in the target: set overwrite: true to confirm")
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
    /// MySQL, drop the tables contained in the dump). Requires `overwrite: true`.
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
