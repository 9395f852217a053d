//! RestoreValidation: prove that a backup restores.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Decryption, LocalObjectReference};

/// Proves that a backup restores: restores it into a throwaway sandbox database that lives
/// only inside the validation Job's Pod (a sidecar of the same engine and major version), runs
/// the checks, records expected vs observed values and the measured restore time (the real
/// RTO), and tears everything down. A passed validation marks the BackupRun verified. The spec
/// is immutable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "dataguardian.io",
    version = "v1alpha1",
    kind = "RestoreValidation",
    plural = "restorevalidations",
    namespaced,
    status = "RestoreValidationStatus",
    shortname = "rv",
    category = "dataguardian",
    doc = "Proves that a backup restores, by restoring it into a throwaway sandbox and checking it.",
    printcolumn = r#"{"name":"Backup","type":"string","jsonPath":".status.backupRunName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.result"}"#,
    printcolumn = r#"{"name":"RTO(s)","type":"number","jsonPath":".status.restoreDurationSeconds"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("spec is immutable"),
    validation = Rule::new("has(self.backupRunRef) != has(self.policyRef)")
        .message("set exactly one of backupRunRef or policyRef (with latest: true)"),
    validation = Rule::new("!has(self.policyRef) || (has(self.latest) && self.latest)")
        .message("policyRef requires latest: true (validate the policy's newest successful backup)"),
    validation = Rule::new("!has(self.latest) || !self.latest || has(self.policyRef)")
        .message("latest: true requires policyRef")
)]
pub struct RestoreValidationSpec {
    /// The BackupRun (same namespace) to validate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_run_ref: Option<LocalObjectReference>,
    /// A BackupPolicy whose newest successful backup to validate (with `latest: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<LocalObjectReference>,
    /// With `policyRef`: validate the newest successful BackupRun of the policy, resolved
    /// when the validation starts (recorded in `status.backupRunName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<bool>,
    /// The BackupStorage to read the backup from — the storage it was made on, or one of its
    /// policy's `secondaryStorageRefs` holding a confirmed copy (`status.artifact.copies` of the
    /// BackupRun; the validation waits with reason `CopyNotFound` until there is one), to prove
    /// that the copy restores. Without it the validation reads the storage the backup was made
    /// on, and falls back to a confirmed copy (with an Event `ReadingCopy`) when that storage
    /// is missing or not Ready. The storage read is recorded in `status.storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_from: Option<LocalObjectReference>,
    /// The sandbox database: image and resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Checks to run after the restore; default is a single `rowCounts` check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub checks: Vec<ValidationCheck>,
    /// Identity to decrypt an encrypted artifact (defaults to none: unencrypted artifacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Upper bound on the validation's wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: Option<i64>,
}

/// The throwaway database a validation restores into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    /// Image of the sandbox database, e.g. `postgres:15`. Default: the official image of the
    /// backup's engine and major server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// CPU/memory of the sandbox container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// One check: exactly one of `rowCounts`, `sql` (with `expect`) or `schema`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.rowCounts) ? 1 : 0) + (has(self.sql) ? 1 : 0) + (has(self.schema) ? 1 : 0) == 1")
        .message("each check must set exactly one of rowCounts, sql or schema"),
    validation = Rule::new("has(self.sql) == has(self.expect)")
        .message("sql and expect must be set together"),
    validation = Rule::new("!has(self.database) || !has(self.rowCounts)")
        .message("database applies to sql and schema checks")
)]
pub struct ValidationCheck {
    /// Name of the check in status (default: derived from its kind and position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Compare the row count of every table in the sandbox with the counts recorded in the
    /// backup's own manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<RowCountsCheck>,
    /// A read-only SQL query returning one value (first column of the first row), compared
    /// with `expect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub sql: Option<String>,
    /// What the `sql` query must return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expectation>,
    /// Tables that must exist after the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaCheck>,
    /// Restored database a `sql` or `schema` check runs in (its default database: where a
    /// `schema` check's names are looked up). Needed by a `sql` check of a PostgreSQL
    /// `allDatabases` backup that restored several databases; otherwise the restored database
    /// (one database) or none (MariaDB/MySQL `allDatabases`, whose checks name
    /// `database.table`). A database that was not restored fails the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub database: Option<String>,
}

impl ValidationCheck {
    /// The check's kind.
    pub fn kind(&self) -> CheckKind {
        if self.sql.is_some() {
            CheckKind::Sql
        } else if self.schema.is_some() {
            CheckKind::Schema
        } else {
            CheckKind::RowCounts
        }
    }

    /// The name shown in status: `name`, or `<kind>-<index>`.
    pub fn display_name(&self, index: usize) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("{}-{index}", self.kind().as_str()),
        }
    }
}

/// The kind of a check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CheckKind {
    /// Row counts against the backup's manifest.
    RowCounts,
    /// A SQL query with an expectation.
    Sql,
    /// Presence of tables.
    Schema,
}

impl CheckKind {
    /// The camelCase name (`rowCounts`, `sql`, `schema`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::RowCounts => "rowCounts",
            CheckKind::Sql => "sql",
            CheckKind::Schema => "schema",
        }
    }
}

/// Row-count comparison options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowCountsCheck {
    /// Only compare these tables (`schema.table` or `table`); default every table in the
    /// manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

/// Expected value of a SQL check. At least one of `min`, `max`, `equals`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max) || has(self.equals)")
        .message("expect needs at least one of min, max or equals"),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
        .message("expect.min must not be greater than expect.max")
)]
pub struct Expectation {
    /// The value, as a number, must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// The value, as a number, must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// The value must equal this (an integer, or a string compared as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<IntOrString>,
}

/// Presence of tables.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaCheck {
    /// Tables that must exist (`schema.table` or `table`).
    #[schemars(length(min = 1))]
    pub tables: Vec<String>,
}

/// Lifecycle phase of a RestoreValidation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestoreValidationPhase {
    /// Waiting to start: for a slot under the operator's limit on concurrent validations
    /// (reason `Queued`, with `queuePosition`), or for what it needs (the reason says what).
    #[default]
    Pending,
    /// The validation Job is running.
    Running,
    /// The validation finished: `result` says whether the backup passed.
    Succeeded,
    /// The validation could not be carried out (e.g. the artifact is missing); `result` is
    /// `Failed` and `reason` says why.
    Failed,
}

impl RestoreValidationPhase {
    /// How it ended: `Some(true)` Succeeded, `Some(false)` Failed, `None` while it goes on.
    pub fn outcome(self) -> Option<bool> {
        match self {
            RestoreValidationPhase::Succeeded => Some(true),
            RestoreValidationPhase::Failed => Some(false),
            _ => None,
        }
    }

    /// Whether the validation has finished.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RestoreValidationPhase::Succeeded | RestoreValidationPhase::Failed
        )
    }
}

/// Outcome of a validation or a single check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ValidationResult {
    /// The backup restored and every check passed.
    Passed,
    /// The restore or at least one check failed.
    Failed,
}

/// Observed state of a RestoreValidation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreValidationStatus {
    /// `Pending` → `Running` → `Succeeded` | `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestoreValidationPhase>,
    /// `Passed` or `Failed`, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ValidationResult>,
    /// The BackupRun validated (resolved from `backupRunRef` or `policyRef` + `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_run_name: Option<String>,
    /// The BackupStorage the backup was read from (a secondary storage when a copy was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Machine-readable reason, e.g. `RestoreFailed`, `CheckFailed`, `NoSuccessfulBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts started so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// 1-based place in the validation queue while the operator's limit on concurrent
    /// validations holds it back (phase `Pending`, reason `Queued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// Name of the validation Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The OpenTelemetry trace id of this run (32 hex digits), when the operator exports
    /// traces: the operator's reconciles, the Job's creation and the agent's work are one trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Image of the sandbox database that was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_image: Option<String>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the validation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Wall time of the whole validation in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Measured time of the restore alone, in seconds: the real RTO of this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_duration_seconds: Option<f64>,
    /// Per-check results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub checks: Vec<CheckResult>,
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
}

/// The result of one check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Name of the check.
    pub name: String,
    /// Kind of the check.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// `Passed` or `Failed`.
    pub result: ValidationResult,
    /// What was expected, e.g. `42 tables, 1048576 rows` or `>= 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Detail, e.g. the first mismatching tables (`orders: expected 120, observed 118`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}
