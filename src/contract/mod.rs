//! The operator↔agent contract: everything the agent (inside a Job) and the operator (reading
//! that Job) must agree on, in one place both sides import.
//!
//! - [`summary`]: the one-line JSON summary the agent prints and writes to the termination
//!   log ([`Summary`], built by the agent), and the lenient views the controllers parse it into
//!   ([`AgentReport`], [`RestoreReport`], [`ValidationReport`]);
//! - [`progress`]: the structured progress log line ([`ProgressLine::log`] writes it,
//!   [`last_progress`] finds the newest one in a log chunk);
//! - [`manifest`]: the wire types `manifest.json` shares with the summary, and the view of a
//!   manifest the operator reads to confirm a backup ([`ManifestView`]);
//! - [`exit`]: the agent's failure categories, their exit codes, and which codes each Job kind
//!   treats as final;
//! - here: the agent container's name, where its termination message goes, the environment
//!   that makes the agent write what the operator reads, and the labels every Job carries.
//!
//! This module imports nothing of ours but `api/`, so both `agent/` and `controller/` (and
//! `jobs/`, `cli/`, `plugin/`) may use it.

pub mod exit;
pub mod extra_args;
pub mod manifest;
pub mod progress;
pub mod redact;
pub mod summary;

pub use exit::FailureCategory;
pub use manifest::{
    ArtifactKind, ArtifactPin, BackupScope, ConfirmedBy, EncryptionInfo, EncryptionMode,
    ExpectedEncryption, MANIFEST_NAME, ManifestArtifactView, ManifestView, PinMismatch, TableCount,
};
pub use progress::{
    PROGRESS_MESSAGE, PROGRESS_TARGET, ProgressLine, ProgressSample, last_progress,
};
pub use summary::{
    AgentReport, ArtifactSummary, BackupSummary, CopySummary, DropPreviousSummary, FailureSummary,
    Operation, PruneSummary, Report, RestoreReport, RestoreSummary, RewrapSummary, STATUS_FAILED,
    STATUS_SUCCEEDED, Succeeded, Summary, SwapSummary, ValidateSummary, ValidationReport,
    WrappedFor,
};

/// Prefix of the agent's environment variables with a KMS key's own credentials
/// (`DG_KMS_AWS_ACCESS_KEY_ID`, `DG_KMS_AWS_SECRET_ACCESS_KEY`, `DG_KMS_AWS_SESSION_TOKEN`): the
/// Job builders set them from the key's Secret, the agent reads them.
pub const KMS_CREDENTIALS_ENV_PREFIX: &str = "DG_KMS_";
/// Prefix of the environment variables holding the credentials of the OLD KMS key's service
/// in a rotation Job (`DG_PREVIOUS_KMS_AWS_ACCESS_KEY_ID`, …: `encryption.rotation.previousKms`
/// credentials, used only to unwrap).
pub const PREVIOUS_KMS_CREDENTIALS_ENV_PREFIX: &str = "DG_PREVIOUS_KMS_";

/// Name of the agent container in every Job (the operator reads its logs, termination message
/// and exit code).
pub const AGENT_CONTAINER: &str = "agent";

/// Where the agent writes its summary: the Kubernetes default termination-message path, set as
/// the agent container's `terminationMessagePath` and passed in [`TERMINATION_LOG_ENV`].
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Kubernetes keeps at most this many bytes of a termination message; the agent compacts its
/// summary to fit.
pub const TERMINATION_LIMIT: usize = 4096;

/// Environment variable with the termination-log path (`--termination-log`).
pub const TERMINATION_LOG_ENV: &str = "DG_TERMINATION_LOG";

/// Environment variable with the agent's log format (`--log-format`).
pub const LOG_FORMAT_ENV: &str = "DG_LOG_FORMAT";

/// The log format Jobs ask for: progress lines are read from JSON logs only.
pub const LOG_FORMAT_JSON: &str = "json";

/// Recommended label: the application's name ([`APP_NAME`]).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Recommended label: the instance (policy or run name).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Recommended label: what the Job does (`COMPONENT_*`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Recommended label: who manages the Job ([`OPERATOR_NAME`]); the operator watches Jobs by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Recommended label: the application the Job is part of ([`APP_NAME`]).
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

/// Value of [`NAME_LABEL`] and [`PART_OF_LABEL`].
pub const APP_NAME: &str = "dataguardian";
/// Value of [`MANAGED_BY_LABEL`].
pub const OPERATOR_NAME: &str = "dataguardian-operator";
/// The label selector of every Job the operator created: `MANAGED_BY_LABEL=OPERATOR_NAME`.
pub const JOB_SELECTOR: &str = "app.kubernetes.io/managed-by=dataguardian-operator";

/// [`COMPONENT_LABEL`] of a backup Job.
pub const COMPONENT_BACKUP: &str = "backup";
/// [`COMPONENT_LABEL`] of a restore Job.
pub const COMPONENT_RESTORE: &str = "restore";
/// [`COMPONENT_LABEL`] of a validation Job.
pub const COMPONENT_VALIDATION: &str = "validation";
/// [`COMPONENT_LABEL`] of a prune Job.
pub const COMPONENT_PRUNE: &str = "prune";
/// [`COMPONENT_LABEL`] of a copy Job.
pub const COMPONENT_COPY: &str = "copy";
/// [`COMPONENT_LABEL`] of a key rotation Job.
pub const COMPONENT_ROTATION: &str = "rotation";

/// Label with the BackupPolicy's name (backup and prune Jobs). It also labels the BackupRuns and
/// RestoreValidations a policy creates, so it is defined with the policy's API type.
pub use crate::api::backup_policy::POLICY_LABEL;
/// Label with the BackupRun's name (backup and prune Jobs).
pub const RUN_LABEL: &str = "dataguardian.io/run";
/// Label with the RestoreRun's name (restore Jobs).
pub const RESTORE_LABEL: &str = "dataguardian.io/restore";
/// Label with the RestoreValidation's name (validation Jobs).
pub const VALIDATION_LABEL: &str = "dataguardian.io/validation";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_selector_is_the_managed_by_label() {
        assert_eq!(JOB_SELECTOR, format!("{MANAGED_BY_LABEL}={OPERATOR_NAME}"));
    }

    #[test]
    fn job_constants_keep_their_values() {
        // Changing any of these breaks running Jobs or older agents: they are the wire.
        assert_eq!(AGENT_CONTAINER, "agent");
        assert_eq!(TERMINATION_LOG, "/dev/termination-log");
        assert_eq!(TERMINATION_LIMIT, 4096);
        assert_eq!(TERMINATION_LOG_ENV, "DG_TERMINATION_LOG");
        assert_eq!(LOG_FORMAT_ENV, "DG_LOG_FORMAT");
        assert_eq!(LOG_FORMAT_JSON, "json");
        assert_eq!(
            [POLICY_LABEL, RUN_LABEL, RESTORE_LABEL, VALIDATION_LABEL],
            [
                "dataguardian.io/policy",
                "dataguardian.io/run",
                "dataguardian.io/restore",
                "dataguardian.io/validation"
            ]
        );
    }
}
