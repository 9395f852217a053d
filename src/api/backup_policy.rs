//! BackupPolicy: what to back up, when, where, and how long to keep it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Compression, DatabaseSpec, Encryption, JobTemplate, LocalObjectReference, RunSummary,
};
use super::restore_validation::{Sandbox, ValidationCheck, ValidationResult};

/// The default `pathTemplate`: one directory per policy, one key per run.
pub const DEFAULT_PATH_TEMPLATE: &str = "{namespace}/{policy}/{timestamp}-{run}";

/// Label with the BackupPolicy's name, on its BackupRuns, their Jobs and pods, and the
/// RestoreValidations it creates.
pub const POLICY_LABEL: &str = "dataguardian.io/policy";

/// Label that pins a BackupRun: retention never prunes a pinned run or its artifact.
pub const PIN_LABEL: &str = "dataguardian.io/pin";

/// A backup schedule for one database: what to dump, when, where to store it, how to compress
/// and encrypt it, how long to keep it, and how often to prove that it restores.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "dataguardian.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    plural = "backuppolicies",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bp",
    category = "dataguardian",
    doc = "What to back up, when, where, and how long to keep it.",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","jsonPath":".spec.storageRef.name"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessfulRun.completionTime"}"#,
    printcolumn = r#"{"name":"Next","type":"string","jsonPath":".status.nextScheduleTime"}"#,
    printcolumn = r#"{"name":"RPO Met","type":"string","jsonPath":".status.conditions[?(@.type==\"RPOMet\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.secondaryStorageRefs) || self.secondaryStorageRefs.all(s, s.name != self.storageRef.name)")
        .message("secondaryStorageRefs must not repeat storageRef"),
    validation = Rule::new("!has(self.pathTemplate) || self.pathTemplate.contains('{run}') || self.pathTemplate.contains('{timestamp}')")
        .message("pathTemplate must contain {run} or {timestamp} so that every run gets its own key")
)]
pub struct BackupPolicySpec {
    /// The database to back up: exactly one engine block (`postgres` or `mysql`).
    pub source: DatabaseSpec,
    /// The BackupStorage (same namespace) every artifact is written to.
    pub storage_ref: LocalObjectReference,
    /// Further BackupStorages that receive a copy of every confirmed backup (the 3-2-1 rule,
    /// e.g. a second region or provider). After a run is confirmed in `storageRef` the operator
    /// copies its artifacts and manifest (manifest last) to each of them: a server-side copy
    /// when both are buckets on the same S3 endpoint with the same credentials, otherwise a
    /// copy Job that streams object to object and checks every SHA-256. Artifacts stay
    /// encrypted: copying never needs a key. Each confirmed copy is listed in the run's
    /// `status.artifact.copies`; `status.copies` shows each storage's lag. A storage that was
    /// unreachable catches up, oldest run first; retention deletes copies with their run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub secondary_storage_refs: Vec<LocalObjectReference>,
    /// Object key of each artifact under the storage's prefix. Placeholders: `{namespace}`,
    /// `{policy}`, `{run}`, `{engine}`, `{database}`, `{date}` (YYYY-MM-DD) and `{timestamp}`
    /// (YYYYMMDDTHHMMSSZ), all in UTC. Default: `{namespace}/{policy}/{timestamp}-{run}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub path_template: Option<String>,
    /// When to back up: a 5-field cron expression (minute hour day-of-month month day-of-week),
    /// e.g. `0 2 * * *`, evaluated in `timeZone`.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(
        "self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')"
    ).message("schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\""))]
    pub schedule: String,
    /// IANA time zone of `schedule` and of the daily/weekly/monthly/yearly retention buckets,
    /// e.g. `America/Sao_Paulo`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')")
        .message("timeZone must be an IANA time zone name such as UTC or Europe/Berlin"))]
    pub time_zone: Option<String>,
    /// Stop creating scheduled runs (manual runs still work; running ones continue).
    #[serde(default)]
    pub suspend: bool,
    /// A scheduled run that could not start within this many seconds of its cron time is
    /// skipped. After an outage at most one catch-up run is started, never one per missed tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// What to do when a run is due while another one of this policy is still active:
    /// `Forbid` (default: skip the new one), `Allow` (run both) or `Replace` (stop the old one).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Compression of artifacts (default zstd level 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// How many dumps run at once inside one snapshot (the parallel layout: the tables in
    /// several artifacts, restored in parallel too; PostgreSQL, and MySQL/MariaDB backups of
    /// one or all databases, where it needs the RELOAD privilege for a brief global read
    /// lock). Default: the backup Job's CPU limit rounded up (at most 8), or without a limit
    /// the CPUs the agent's Pod may use. `1` keeps one stream, and so does a database whose
    /// tables hold less than 256 MiB, or a policy with `extraArgs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: Option<u32>,
    /// Encryption of artifacts with age public keys. Absent means unencrypted artifacts
    /// (rely on the storage's own encryption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Box<Encryption>>,
    /// Which successful runs (and their artifacts) to keep. Absent keeps everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// How many finished BackupRun objects of this policy stay in the API (the artifacts'
    /// lifetime is governed by `retention`, not by this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_history: Option<RunHistory>,
    /// Retries of a failed backup attempt before the run fails.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: u32,
    /// Upper bound on a run's wall time; the Job is stopped and the run fails after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: Option<i64>,
    /// A run that moves no bytes for this many seconds is considered stalled and fails
    /// (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30))]
    pub stall_timeout_seconds: Option<i64>,
    /// Recovery point objective: the `RPOMet` condition turns False when the newest successful
    /// backup is older than this, e.g. `26h`. Units s, m, h, d, w. Default: twice the interval
    /// between two scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhdw])+$')")
        .message("rpo must be a duration such as 26h, 2d or 1h30m"))]
    pub rpo: Option<String>,
    /// Recovery time objective: the `RTOMet` condition turns False when the newest finished
    /// RestoreValidation of this policy took longer than this to restore, e.g. `30m`. Units s,
    /// m, h, d, w. Unset: no objective, no condition. Measured by validations only: schedule
    /// them with `validation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhdw])+$')")
        .message("rto must be a duration such as 30m, 2h or 1h30m"))]
    pub rto: Option<String>,
    /// How often backups are proven restorable by a RestoreValidation, and with which checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Box<ValidationPolicy>>,
    /// Who hears about which events: each rule sends the events it lists to one channel (a
    /// webhook, Slack, Microsoft Teams, e-mail or CloudEvents), with optional templates.
    /// Delivery is at least once: each notification is recorded in the status before it is
    /// sent, retried with backoff, and sent again after an operator restart with the same
    /// idempotency key; a failed delivery is a Warning Event `NotificationFailed` on the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub notifications: Vec<NotificationRule>,
    /// Overrides for the backup Jobs' Pods (image, resources, placement, security context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<Box<JobTemplate>>,
    /// When a RestoreRun of this policy's backups needs a second person's approval before it
    /// touches its target (the two-person rule for destructive restores). Absent: the
    /// operator-wide default (`--restore-approval`, chart value `restoreApproval.required`).
    /// Approvals are recorded by the operator's admission webhook; see docs/approvals.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_approval: Option<RestoreApproval>,
}

/// When a restore needs approval, and for how long an approval holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreApproval {
    /// `Never`, `OnOverwrite` (a restore with `overwrite` or `clean`: one that may change an
    /// existing database) or `Always`.
    pub required: ApprovalRequirement,
    /// How long an approval stays valid: a restore that has not started within this time of
    /// its approval waits for a new one (reason `ApprovalExpired`). Units s, m, h, d, w.
    /// Default: the operator-wide default (`--restore-approval-valid-for`, 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhdw])+$')")
        .message("validFor must be a duration such as 30m, 1h or 2d"))]
    pub valid_for: Option<String>,
}

/// Which restores need a second person's approval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ApprovalRequirement {
    /// No restore needs approval.
    #[default]
    Never,
    /// Restores that may change an existing database (`overwrite: true` or `clean: true`).
    OnOverwrite,
    /// Every restore.
    Always,
}

impl ApprovalRequirement {
    /// The flag's spelling (`never`, `on-overwrite`, `always`).
    pub fn parse_flag(text: &str) -> Option<Self> {
        match text {
            "never" | "Never" => Some(Self::Never),
            "on-overwrite" | "OnOverwrite" => Some(Self::OnOverwrite),
            "always" | "Always" => Some(Self::Always),
            _ => None,
        }
    }

    /// Whether a restore with these settings needs approval.
    pub fn applies(self, overwrite: bool, clean: bool) -> bool {
        match self {
            Self::Never => false,
            Self::OnOverwrite => overwrite || clean,
            Self::Always => true,
        }
    }
}

fn default_backoff_limit() -> u32 {
    2
}

/// What happens when a run is due while another run of the policy is active.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the new run while one is active (default).
    #[default]
    Forbid,
    /// Start the new run alongside the active one.
    Allow,
    /// Stop the active run and start the new one.
    Replace,
}

/// Grandfather-father-son retention. A run is kept when any rule keeps it; pinned runs
/// (label `dataguardian.io/pin`) are always kept; Object-Locked artifacts are deleted only
/// after their retain-until date. Runs the schedule created and all other (manual) runs are
/// counted separately: every rule keeps its count of scheduled runs and, independently, of
/// manual runs, so manual runs never evict a scheduled restore point.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N successful scheduled runs, and the newest N manual runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest run of each of the last N days (in the policy's time zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest run of each of the last N ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest run of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest run of each of the last N years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Delete runs older than this, whatever the other rules say (pins and Object Lock still
    /// win), e.g. `400d`. Units s, m, h, d, w.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+[smhdw])+$')")
        .message("maxAge must be a duration such as 90d, 12w or 720h"))]
    pub max_age: Option<String>,
}

/// How many finished BackupRun objects are kept in the API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunHistory {
    /// Succeeded runs to keep (runs still referenced by retained artifacts are kept anyway).
    #[serde(default = "default_successful_history")]
    #[schemars(range(max = 1000))]
    pub successful: u32,
    /// Failed runs to keep.
    #[serde(default = "default_failed_history")]
    #[schemars(range(max = 1000))]
    pub failed: u32,
}

impl Default for RunHistory {
    fn default() -> Self {
        RunHistory {
            successful: default_successful_history(),
            failed: default_failed_history(),
        }
    }
}

fn default_successful_history() -> u32 {
    10
}
fn default_failed_history() -> u32 {
    5
}

/// How often the policy's backups are proven restorable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.everyNthBackup) != has(self.schedule)")
    .message("set exactly one of everyNthBackup or schedule"))]
pub struct ValidationPolicy {
    /// Validate every Nth successful backup (1 = every backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub every_nth_backup: Option<u32>,
    /// Validate the newest successful backup on this 5-field cron schedule (in the policy's
    /// time zone), e.g. `0 6 * * 0` for every Sunday morning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(
        "self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')"
    ).message("schedule must be a 5-field cron expression, e.g. \"0 6 * * 0\""))]
    pub schedule: Option<String>,
    /// Checks to run; default is a single `rowCounts` check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub checks: Vec<ValidationCheck>,
    /// Sandbox database image and resources for the validations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Identity to decrypt the policy's encrypted backups in its validations (only the
    /// validation Jobs mount it; the backup Jobs never see it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<super::common::Decryption>,
    /// How many RestoreValidation objects created by this policy stay in the API.
    #[serde(default = "default_validation_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn default_validation_history() -> u32 {
    5
}

/// Events a notification rule can subscribe to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotificationEvent {
    /// A backup run succeeded.
    BackupSucceeded,
    /// A backup run failed.
    BackupFailed,
    /// A restore run succeeded.
    RestoreSucceeded,
    /// A restore run failed.
    RestoreFailed,
    /// A restore validation passed.
    ValidationPassed,
    /// A restore validation failed.
    ValidationFailed,
    /// The newest successful backup became older than the RPO.
    RpoMissed,
    /// The policy's storage stopped being Ready.
    StorageUnhealthy,
    /// A restore of the policy's backups waits for a second person's approval.
    RestoreAwaitingApproval,
}

/// One notification channel and the events it hears.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.webhook) ? 1 : 0) + (has(self.slack) ? 1 : 0) + (has(self.teams) ? 1 : 0) + (has(self.email) ? 1 : 0) + (has(self.cloudEvents) ? 1 : 0) == 1")
    .message("exactly one channel must be set: webhook, slack, teams, email or cloudEvents"))]
pub struct NotificationRule {
    /// Name of this rule (for status and logs).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Events that trigger a notification.
    #[schemars(length(min = 1))]
    pub events: Vec<NotificationEvent>,
    /// A generic webhook receiving a JSON document per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannel>,
    /// A Microsoft Teams workflow webhook ("When a Teams webhook request is received"),
    /// receiving an Adaptive Card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<TeamsChannel>,
    /// E-mail through an SMTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailChannel>,
    /// A CloudEvents 1.0 receiver (structured mode JSON over HTTP), e.g. an event router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_events: Option<CloudEventsChannel>,
    /// The subject and body of this rule's messages (minijinja templates; see
    /// docs/notifications.md for the variables). Absent parts use the defaults, which say what
    /// happened, to which database, why, and the next command to run. For a `webhook`, a
    /// `body` template replaces the JSON document (SMS and WhatsApp gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<NotificationTemplate>,
}

/// A rule's own subject and body templates (minijinja).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationTemplate {
    /// The subject (e-mail subject, Teams card title, Slack headline); one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub subject: Option<String>,
    /// The body (e-mail text, card text, Slack text; a webhook's whole request body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub body: Option<String>,
}

/// A Microsoft Teams workflow webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamsChannel {
    /// Secret key holding the workflow's HTTP POST URL (it carries a signature).
    pub webhook_url_secret_ref: super::common::SecretKeySelector,
}

/// A CloudEvents 1.0 HTTP receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudEventsChannel {
    /// Secret key holding the receiver's URL.
    pub url_secret_ref: super::common::SecretKeySelector,
}

/// How the connection to the SMTP server is protected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (usually port 587); refused if the server does
    /// not offer it.
    #[default]
    StartTLS,
    /// TLS from the first byte ("SMTPS", usually port 465).
    TLS,
}

/// E-mail through an SMTP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailChannel {
    /// The SMTP server's host name (checked against its TLS certificate).
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// The SMTP server's port. Default 587 (465 with `tls: TLS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// `StartTLS` (default) or `TLS`. Mail is never sent unencrypted.
    #[serde(default)]
    pub tls: SmtpTls,
    /// The sender address, e.g. `DataGuardian <backups@example.com>`.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,
    /// The recipients.
    #[schemars(length(min = 1, max = 50))]
    pub to: Vec<String>,
    /// A Secret with keys `username` and `password` for SMTP AUTH (absent: no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<super::common::LocalObjectReference>,
    /// A Secret key holding PEM CA certificates to trust for the server's certificate (a
    /// private CA); absent: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<super::common::SecretKeySelector>,
}

/// A generic webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// Secret key holding the URL (URLs often embed tokens, so they live in Secrets).
    pub url_secret_ref: super::common::SecretKeySelector,
    /// Secret key holding the value of an `Authorization` header (e.g. `Bearer <token>` for
    /// the WhatsApp Cloud API or an SMS gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_secret_ref: Option<super::common::SecretKeySelector>,
    /// The request's `Content-Type`. Default `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub content_type: Option<String>,
}

/// A Slack incoming webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlackChannel {
    /// Secret key holding the incoming-webhook URL.
    pub webhook_url_secret_ref: super::common::SecretKeySelector,
}

/// Observed state of a BackupPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// `Ready`, `ScheduleValid`, `StorageReady`, `RPOMet` and (encrypted policies) `KeysCurrent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cron time of the most recent scheduled run that was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next cron time a run is due (absent while suspended or invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The newest succeeded BackupRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run: Option<RunSummary>,
    /// The newest failed BackupRun, with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_run: Option<RunSummary>,
    /// Names of the BackupRuns of this policy that are Pending or Running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_runs: Vec<String>,
    /// The newest RestoreValidation of this policy's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validation: Option<Box<ValidationSummary>>,
    /// Successful backups since the last validation (drives `validation.everyNthBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups_since_validation: Option<u32>,
    /// Notifications recorded before they are sent and removed once delivered (or given up),
    /// by idempotency key: an operator that restarts sends the ones still here again, with the
    /// same key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_notifications: BTreeMap<String, PendingNotification>,
    /// Per secondary storage: how far its copies lag behind the primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub copies: Vec<CopyStatus>,
    /// Who the retained backups' data keys are wrapped for, and how far a key rotation got
    /// (with the `KeysCurrent` condition). Fingerprints and key ids only, never keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Box<KeysStatus>>,
}

/// The keys of a policy's retained backups (`status.keys`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysStatus {
    /// Fingerprints (`sha256:…`) of the policy's age recipients: what every retained backup's
    /// data key is wrapped for once the rotation is done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrapped_for: Vec<String>,
    /// The policy's KMS key id (as written in `spec.encryption.kms.keyId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Digest of the key set (recipient fingerprints and KMS key): names the rotation Job.
    #[serde(default)]
    pub key_set: String,
    /// Retained encrypted backups wrapped for the current keys.
    #[serde(default)]
    pub rewrapped: u32,
    /// Retained encrypted backups.
    #[serde(default)]
    pub total: u32,
    /// Of `total`, backups written before envelope encryption (manifest format 1: the artifacts
    /// encrypted straight to the recipients) that are wrapped for other keys: no re-wrap can
    /// change them; they stay readable only with the previous identity until retention removes
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_rewrappable: Option<u32>,
    /// The rotation Job running or last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_job: Option<String>,
}

/// A notification not yet delivered to one rule's channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// The rule whose channel it goes to.
    pub rule: String,
    /// What happened.
    pub event: NotificationEvent,
    /// The kind of the object it is about.
    pub kind: String,
    /// The name of the object it is about.
    pub name: String,
    /// The machine-readable reason.
    #[serde(default)]
    pub reason: String,
    /// The human-readable message.
    #[serde(default)]
    pub message: String,
    /// When it happened (RFC 3339).
    pub time: String,
    /// Template variables known for this event (database, run, size, duration, requester,
    /// trace id, digest), as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// How far the copies on one secondary storage lag behind the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyStatus {
    /// Name of the secondary BackupStorage.
    pub storage: String,
    /// The newest succeeded run with a confirmed copy there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_copied_run: Option<String>,
    /// When that run completed (the copy's recovery point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_copied_run_time: Option<Time>,
    /// Succeeded runs (whose artifacts retention keeps) without a confirmed copy there yet.
    #[serde(default)]
    pub pending_runs: u32,
    /// Seconds since the oldest run still waiting for its copy completed (0 when none waits).
    #[serde(default)]
    pub lag_seconds: i64,
    /// Why copies to this storage cannot proceed right now (e.g. the storage is missing or
    /// a copy failed), if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A reference to a RestoreValidation and its outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationSummary {
    /// Name of the RestoreValidation.
    pub name: String,
    /// Name of the BackupRun it validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_run: Option<String>,
    /// `Passed` or `Failed` (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ValidationResult>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Measured restore time in seconds (the real RTO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_duration_seconds: Option<f64>,
}

impl BackupPolicySpec {
    /// The path template, or [`DEFAULT_PATH_TEMPLATE`].
    pub fn path_template_or_default(&self) -> &str {
        self.path_template
            .as_deref()
            .unwrap_or(DEFAULT_PATH_TEMPLATE)
    }

    /// The time zone name, or `UTC`.
    pub fn time_zone_or_default(&self) -> &str {
        self.time_zone.as_deref().unwrap_or("UTC")
    }

    /// The compression settings, or zstd level 3.
    pub fn compression_or_default(&self) -> Compression {
        self.compression.clone().unwrap_or_default()
    }

    /// The run history limits, or the defaults (10 successful, 5 failed).
    pub fn run_history_or_default(&self) -> RunHistory {
        self.run_history.clone().unwrap_or_default()
    }

    /// The stall timeout in seconds (default 600).
    pub fn stall_timeout_seconds_or_default(&self) -> i64 {
        self.stall_timeout_seconds.unwrap_or(600)
    }
}
