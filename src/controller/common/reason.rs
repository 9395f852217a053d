//! The one vocabulary of machine-readable reasons the controllers write: `status.reason` of runs,
//! restores and validations, the `reason` of every condition the operator sets, the `reason` of
//! every Event it publishes, and the `reason` of a storage probe. The wire strings are exactly the
//! ones the controllers wrote as literals before this type existed: dashboards, alerts, docs and
//! users' scripts match on them, so a variant's string never changes.
//!
//! The queue rules that look at a *saved* reason (is this run blocked on the user, or does it
//! hold a place in the queue?) are methods here, so that the lists they used to keep as string
//! arrays cannot drift from the reasons the reconcilers write.
//!
//! Not in this enum, on purpose — these values come from outside and are passed through verbatim,
//! so they stay strings:
//! - the reason of a Kubernetes Job's `Failed`/`Complete` condition (`BackoffLimitExceeded`,
//!   `PodFailurePolicy`, `MaxFailedIndexesExceeded`, `CompletionsReached`, `SuccessPolicy`, …):
//!   an open set that grows with Kubernetes releases. A run whose Job failed without an agent
//!   report records it as its own reason. `DeadlineExceeded` is the one such value the controllers
//!   name themselves, so it is a variant ([`Reason::DeadlineExceeded`]);
//! - the verdict reason in the agent's validation summary (`ValidationReport::reason`): today's
//!   agent sends `CheckFailed`, `ChecksumMismatch` or `RestoreFailed`, all variants here, but the
//!   agent image can differ from the operator's, so the controller records whatever it sent;
//! - a BackupStorage's `Ready` condition reason, which the BackupPolicy copies into its own
//!   `StorageReady` condition (written by this operator, but read back from the API);
//! - the agent's failure `category` (`source`, `storage`, `integrity`, …): lower-case, its own
//!   vocabulary (typed as `contract::FailureCategory` where that module is used), which the
//!   planners map to a reason.
//!
//! Also separate vocabularies, not reasons: Event *actions* (`Wait`, `Finish`, `CreateJob`, …),
//! condition *types* (`Ready`, `StorageReady`, `Verified`, …; see
//! [`crate::api::common::condition_types`]), phases, notification event names
//! ([`crate::api::backup_policy::NotificationEvent`]; some of its strings coincide with reasons
//! here, e.g. `BackupFailed`, `RestoreFailed`, `ValidationPassed`), the queue's
//! [`WaitReason`](crate::controller::common::queue::WaitReason) (message text) and retention's
//! `KeepReason`/`PruneReason` (message text).

use std::fmt;
use std::str::FromStr;

/// Defines [`Reason`] from one list of `Variant = "WireString"` entries, each with its doc
/// comment: the enum, [`Reason::ALL`], [`Reason::as_str`] and [`Reason::parse`] cannot disagree.
macro_rules! reasons {
    ($($(#[$attr:meta])* $variant:ident = $wire:literal,)*) => {
        /// A machine-readable reason the operator writes (status, condition, Event or probe
        /// result).
        ///
        /// Adding a variant: add one documented `Variant = "WireString",` line to the
        /// `reasons!` list; the enum, [`Reason::ALL`], [`Reason::as_str`] and
        /// [`Reason::parse`] are generated from it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$attr])* $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The wire string (CamelCase, as written to the API).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $wire,)*
                }
            }

            /// The reason whose wire string is `s` (exact, case-sensitive); `None` for anything
            /// else, e.g. a Kubernetes Job condition reason passed through into a status.
            pub fn parse(s: &str) -> Option<Reason> {
                match s {
                    $($wire => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    // --- References the user must fix (runs wait, then fail after the blocked timeout) ---
    /// The BackupRun's `policyRef` names no BackupPolicy in its namespace (BackupRun, blocker).
    PolicyNotFound = "PolicyNotFound",
    /// A referenced BackupStorage does not exist: the policy's `storageRef` (BackupRun blocker;
    /// the policy's `StorageReady=False` condition) or the storage of the artifact to restore
    /// (RestoreRun, RestoreValidation blocker).
    StorageNotFound = "StorageNotFound",
    /// A Secret the Job would reference does not exist (BackupRun, RestoreRun,
    /// RestoreValidation blocker).
    SecretNotFound = "SecretNotFound",
    /// A referenced Secret exists but lacks the referenced key (BackupRun, RestoreRun,
    /// RestoreValidation blocker).
    SecretKeyNotFound = "SecretKeyNotFound",
    /// The BackupPolicy cannot produce a backup Job: its source has no engine block (BackupRun
    /// blocker), or the Job builder refused its source (`JobBuildError::InvalidSource` of a
    /// backup: the run fails).
    InvalidPolicy = "InvalidPolicy",
    /// The `backupRunRef` names no BackupRun in the namespace (RestoreRun, RestoreValidation
    /// blocker).
    BackupRunNotFound = "BackupRunNotFound",
    /// The referenced BackupRun has not succeeded yet (RestoreRun, RestoreValidation blocker).
    BackupRunNotReady = "BackupRunNotReady",
    /// A `policyRef` + `latest` validation's policy has no successful BackupRun yet
    /// (RestoreValidation blocker).
    NoSuccessfulBackup = "NoSuccessfulBackup",
    /// `readFrom` names a storage holding no confirmed copy of the BackupRun (yet) (RestoreRun,
    /// RestoreValidation blocker).
    CopyNotFound = "CopyNotFound",
    /// The storage a backup was made on is missing or not Ready: a confirmed copy on a
    /// secondary storage is read instead (Warning Event on a RestoreRun or RestoreValidation).
    ReadingCopy = "ReadingCopy",
    /// The restore needs a second person's approval (the policy's or the operator's
    /// `restoreApproval`) and has none: phase `AwaitingApproval` (RestoreRun blocker).
    AwaitingApproval = "AwaitingApproval",
    /// The restore was approved, but did not start within the approval's validity: it needs a
    /// new approval (RestoreRun blocker).
    ApprovalExpired = "ApprovalExpired",
    /// The restore needs approval but this operator's admission webhook is off, so no approval
    /// can be trusted (RestoreRun blocker).
    ApprovalUnavailable = "ApprovalUnavailable",
    /// A valid approval was seen (Event on a RestoreRun: who approved, until when).
    Approved = "Approved",

    // --- Specs and sources no waiting can fix (fail at once) ---
    /// The spec names no source to act on: neither `backupRunRef` nor `storageRef` + `key`
    /// (RestoreRun), neither `backupRunRef` nor `policyRef` + `latest` (RestoreValidation).
    InvalidSpec = "InvalidSpec",
    /// The referenced BackupRun failed: there is no artifact to restore or validate.
    BackupRunFailed = "BackupRunFailed",
    /// The referenced BackupRun succeeded but records no artifact (RestoreRun,
    /// RestoreValidation).
    NoArtifact = "NoArtifact",
    /// The artifact's engine differs from the restore target's engine (RestoreRun).
    EngineMismatch = "EngineMismatch",
    /// The artifact is encrypted and the spec sets no `decryption.identitySecretRef`
    /// (RestoreRun, RestoreValidation).
    DecryptionRequired = "DecryptionRequired",
    /// The artifact's manifest location cannot be derived from its storage and key
    /// (RestoreRun, RestoreValidation).
    InvalidSource = "InvalidSource",
    /// The BackupRun records an engine this operator does not know (RestoreValidation).
    UnknownEngine = "UnknownEngine",
    /// The restore Job builder refused the target (`JobBuildError::InvalidSource` of a restore;
    /// RestoreRun fails).
    InvalidTarget = "InvalidTarget",
    /// The object lacks a field the API server always sets, so no Job can be built
    /// (`JobBuildError::MissingRunField`; the run fails).
    InvalidRun = "InvalidRun",
    /// The BackupStorage sets neither `s3` nor `filesystem` (`JobBuildError::NoStorageBackend`;
    /// the run fails).
    InvalidStorage = "InvalidStorage",
    /// The policy's `pathTemplate` uses an unknown placeholder or renders an invalid key
    /// (`JobBuildError::InvalidPathTemplate`; the BackupRun fails).
    InvalidPathTemplate = "InvalidPathTemplate",
    /// The validation Job (its sandbox) cannot be built from the spec and the policy's
    /// validation settings (RestoreValidation fails).
    InvalidSandbox = "InvalidSandbox",

    // --- Run lifecycle (status reasons; the Wait Event repeats the status reason) ---
    /// Waiting for a free slot of the global limit (or, for restores, for the target database):
    /// BackupRun `Pending`, RestoreRun `Queued`, RestoreValidation `Pending` with `queuePosition`.
    /// Also the reason of the RestoreValidation's `Queue` Event.
    Queued = "Queued",
    /// The Job was created and recorded in status (phase `Running`).
    JobCreated = "JobCreated",
    /// The run finished successfully: the backup's artifact was confirmed in storage, or the
    /// restore was written and its checksum verified (BackupRun, RestoreRun `Succeeded`).
    Completed = "Completed",
    /// No bytes moved for the stall timeout: the Job was stopped and the run failed.
    Stalled = "Stalled",
    /// The run's Job was deleted before it finished (including `concurrencyPolicy: Replace`).
    JobDeleted = "JobDeleted",
    /// The backup Job failed with no agent report and no Job condition reason.
    JobFailed = "JobFailed",
    /// The Job ended without the agent's summary (BackupRun, RestoreRun: the Job completed;
    /// RestoreValidation: the Job ended with no condition reason either).
    NoAgentReport = "NoAgentReport",
    /// The backup Job completed but the agent's summary says it failed.
    AgentReportedFailure = "AgentReportedFailure",
    /// The Job ran past its `activeDeadlineSeconds` (the Kubernetes Job condition reason of the
    /// same name, kept as the run's reason).
    DeadlineExceeded = "DeadlineExceeded",
    /// The backup Job succeeded but the artifact could not be confirmed in storage.
    ArtifactNotConfirmed = "ArtifactNotConfirmed",
    /// The restore agent reported success without confirming the artifact's checksum.
    ChecksumNotVerified = "ChecksumNotVerified",

    // --- Backup failures reported by the agent (its failure category → reason) ---
    /// The dump of the source database failed (agent category `source`).
    DumpFailed = "DumpFailed",
    /// Writing the artifact to storage failed (backup agent category `storage`).
    StorageFailed = "StorageFailed",
    /// The storage refused the agent for a reason no retry fixes — access denied, a missing
    /// bucket, a request the server rejects as invalid (agent category `storage-refused`;
    /// backups and restores). The Job fails at once instead of retrying.
    StorageRefused = "StorageRefused",
    /// The stored bytes are not the ones written or expected (agent category `integrity`, for
    /// backups and restores; also a validation verdict reason sent by the agent). A restore
    /// failing so records `status.checksum.verified: false`.
    ChecksumMismatch = "ChecksumMismatch",
    /// Encrypting the artifact failed (backup agent category `crypto`).
    EncryptionFailed = "EncryptionFailed",
    /// The agent refused its configuration (agent category `config`; backups, restores,
    /// validations).
    InvalidConfiguration = "InvalidConfiguration",
    /// The backup agent failed with any other category.
    BackupFailed = "BackupFailed",
    /// The agent's client tools are older than the server or the archive, or a known-bad pair
    /// (agent category `client-too-old`; backups and restores). The message names both versions.
    ClientTooOld = "ClientTooOld",
    /// The agent container was killed for exceeding its memory limit (`OOMKilled`).
    OutOfMemory = "OutOfMemory",

    // --- Restore failures reported by the agent ---
    /// The restore target database is not empty and the restore does not overwrite or clean it.
    TargetNotEmpty = "TargetNotEmpty",
    /// The restore target database does not exist and the restore does not create it.
    TargetDatabaseMissing = "TargetDatabaseMissing",
    /// The restore target refused the data or could not be prepared (other `target` failures).
    TargetRejected = "TargetRejected",
    /// Decrypting the artifact failed (restore agent category `crypto`).
    DecryptionFailed = "DecryptionFailed",
    /// The key that wraps the backup's data key cannot be used: the KMS key is disabled,
    /// pending deletion or deleted (crypto-erasure), or unknown (agent category
    /// `key-unavailable`; restores, validations and backups). Retrying cannot help.
    KeyUnavailable = "KeyUnavailable",
    /// Reading the artifact from storage failed (restore agent category `storage`).
    StorageError = "StorageError",
    /// The restore failed with any other category, or its Job failed without a report or a
    /// condition reason. Also a validation verdict reason sent by the agent (the backup did not
    /// restore into the sandbox).
    RestoreFailed = "RestoreFailed",
    /// A staged restore's target has connected sessions and the RestoreRun does not terminate
    /// them (`swap.terminateSessions`): the staging database was dropped, the target left as
    /// it was.
    TargetInUse = "TargetInUse",
    /// A masking rule failed in the staging database (the message carries no values); the
    /// staging database was dropped, the target left as it was.
    MaskingFailed = "MaskingFailed",
    /// The masking guard did not hold (or failed); the staging database was dropped, the
    /// target left as it was.
    GuardFailed = "GuardFailed",
    /// MySQL/MariaDB: the tables were swapped in but recreating the views, routines, triggers
    /// or events failed; the previous tables are kept under the name in the message.
    SwapIncomplete = "SwapIncomplete",
    /// Event: a staged restore's staging database was swapped in (`Swap`).
    Swapped = "Swapped",
    /// Event: the previous target kept by a staged restore was dropped after its grace period
    /// (`Cleanup`).
    PreviousDropped = "PreviousDropped",
    /// Warning Event: the cleanup Job could not drop the kept previous target (`Cleanup`).
    PreviousDropFailed = "PreviousDropFailed",

    // --- Validation outcomes ---
    /// Every check passed (RestoreValidation status reason and `Finish` Event reason).
    Passed = "Passed",
    /// At least one check failed: the default verdict reason when the agent sends none.
    CheckFailed = "CheckFailed",
    /// The validation could not read the artifact (agent category `storage`).
    ArtifactUnavailable = "ArtifactUnavailable",
    /// The validation's sandbox database could not be used (agent category `target`).
    SandboxUnavailable = "SandboxUnavailable",
    /// The validation could not run for any other reason the agent reported.
    ValidationError = "ValidationError",

    // --- Events of runs, restores and validations ---
    /// Event: the run's Job was created (`CreateJob`).
    Started = "Started",
    /// Warning Event: a new attempt started after a failed one (`Retry`).
    Retrying = "Retrying",
    /// Event: a BackupRun or RestoreRun succeeded (`Finish`).
    Succeeded = "Succeeded",
    /// Warning Event: a run, restore or validation failed (`Finish`).
    Failed = "Failed",
    /// Warning Event on a BackupRun: a newer scheduled run replaces it
    /// (`concurrencyPolicy: Replace`).
    Replaced = "Replaced",
    /// Event on a BackupRun: a RestoreValidation proved it restores (`Verify`).
    Verified = "Verified",
    /// Warning Event on a BackupRun: a RestoreValidation of it failed (`Verify`).
    VerificationFailed = "VerificationFailed",

    // --- BackupPolicy conditions and Events ---
    /// `ScheduleValid=True`: the schedule and time zone parse.
    Valid = "Valid",
    /// `ScheduleValid=False` (and Warning Event): the cron expression cannot be parsed or never
    /// fires.
    InvalidSchedule = "InvalidSchedule",
    /// `ScheduleValid=False` (and Warning Event): the time zone is not a known IANA name.
    InvalidTimeZone = "InvalidTimeZone",
    /// `StorageReady=True`: the policy's BackupStorage is `Ready`.
    StorageReady = "StorageReady",
    /// `StorageReady=False` (on the policy) while the storage has no `Ready` condition yet; not
    /// news for the policy's channels (no `StorageUnhealthy` notification).
    NotProbedYet = "NotProbedYet",
    /// `Ready=True` of a policy (schedule valid, storage ready); `Ready` Event of a storage whose
    /// probe succeeds (its first probe, or after a failed one).
    Ready = "Ready",
    /// `Ready=False` of a policy whose schedule is invalid.
    ScheduleInvalid = "ScheduleInvalid",
    /// `Ready=False` of a policy whose storage is not ready.
    StorageNotReady = "StorageNotReady",
    /// `Unsupported=True` (and Warning Event): the spec sets a field this version does not act
    /// on.
    NotImplemented = "NotImplemented",
    /// `RPOMet=True`: the newest successful backup is recent enough.
    WithinObjective = "WithinObjective",
    /// `RPOMet=False`: the newest successful backup is older than the objective allows.
    BackupOverdue = "BackupOverdue",
    /// `RPOMet=Unknown`: no successful backup yet, but the first is not due yet.
    AwaitingFirstBackup = "AwaitingFirstBackup",
    /// `RPOMet=False`: no successful backup since the policy was created, and one was due.
    NeverSucceeded = "NeverSucceeded",
    /// `RPOMet=Unknown` of a suspended policy; also why a scheduled run was skipped (today only
    /// logged).
    Suspended = "Suspended",
    /// `RPOMet=Unknown`: the schedule has no fire time after the last backup.
    NoUpcomingSchedule = "NoUpcomingSchedule",
    /// Warning Event: `RPOMet` turned `False` (`EvaluateRPO`). Wire string `RPONotMet`.
    RpoNotMet = "RPONotMet",
    /// `RTOMet=False`: the newest finished validation of the policy took longer to restore
    /// than its `rto`.
    RestoreTooSlow = "RestoreTooSlow",
    /// `RTOMet=Unknown`: no finished validation of the policy has measured a restore yet.
    NotMeasured = "NotMeasured",
    /// Warning Event: `RTOMet` turned `False` (`EvaluateRTO`). Wire string `RTONotMet`.
    RtoNotMet = "RTONotMet",
    /// `Verified=True`: the newest finished validation of the policy passed.
    ValidationPassed = "ValidationPassed",
    /// `Verified=False`: the newest finished validation of the policy failed.
    ValidationFailed = "ValidationFailed",
    /// `Verified=Unknown`: no validation of the policy has finished yet.
    NotValidated = "NotValidated",
    /// Event: the schedule created a run on time (`CreateRun`).
    Scheduled = "Scheduled",
    /// Event: the schedule created a run more than a minute late, skipping older missed times
    /// (`CreateRun`).
    CatchUp = "CatchUp",
    /// Event: the policy created a RestoreValidation of a BackupRun (`CreateValidation`).
    ValidationCreated = "ValidationCreated",
    /// Warning Event: a notification could not be delivered (`Notify`).
    NotificationFailed = "NotificationFailed",
    /// Event: retention deleted a run (and its artifact) (`Retention`).
    Pruned = "Pruned",
    /// Event: a prune Job deletes a run's artifact from a filesystem claim (`Retention`).
    Pruning = "Pruning",
    /// Warning Event: a prune Job failed; the run and its artifact are kept (`Retention`).
    PruneFailed = "PruneFailed",
    /// Warning Event: retention deletes nothing until the audit record of the deletion is
    /// durable (the audit spool is full or cannot be written; docs/audit.md) (`Retention`).
    RetentionWaitsForAudit = "RetentionWaitsForAudit",
    /// A scheduled run was skipped: `concurrencyPolicy: Forbid` and runs are active (today only
    /// logged).
    ConcurrencyForbidden = "ConcurrencyForbidden",
    /// A scheduled run was skipped: its fire time is older than `startingDeadlineSeconds`
    /// (today only logged).
    MissedSchedule = "MissedSchedule",
    /// `KeysCurrent=True`: every retained backup of the policy is wrapped for its keys.
    KeysCurrent = "KeysCurrent",
    /// `KeysCurrent=False` and Event: a rotation Job re-wraps the retained backups (`RotateKeys`).
    RotatingKeys = "RotatingKeys",
    /// `KeysCurrent=False`: retained backups are wrapped for other keys and the policy names no
    /// old key (`encryption.rotation`) to re-wrap them with.
    PreviousKeyMissing = "PreviousKeyMissing",
    /// `KeysCurrent=False` and Warning Event: the rotation Job failed; it is tried again.
    KeyRotationFailed = "KeyRotationFailed",
    /// Event: the rotation Job re-wrapped the retained backups (`RotateKeys`).
    KeysRotated = "KeysRotated",
    /// `KeysCurrent=False` and one Warning Event: retained backups written before envelope
    /// encryption (their artifacts encrypted straight to the old recipients) cannot be re-wrapped
    /// and stay readable only with the previous identity until retention removes them.
    BackupsNotRewrappable = "BackupsNotRewrappable",

    // --- BackupStorage probes (`Ready` condition, probe history) and Events ---
    /// `Ready=True`: a probe object was written, read back and deleted (S3).
    ProbeSucceeded = "ProbeSucceeded",
    /// `Ready=False`: the storage's credentials could not be read or used to open it (S3).
    CredentialsUnavailable = "CredentialsUnavailable",
    /// `Ready=False`: writing the probe object failed (S3).
    WriteFailed = "WriteFailed",
    /// `Ready=False`: reading the probe object back failed (S3).
    ReadFailed = "ReadFailed",
    /// `Ready=False`: the probe object read back different bytes (S3).
    ReadMismatch = "ReadMismatch",
    /// `Ready=False`: deleting the probe object failed (S3).
    DeleteFailed = "DeleteFailed",
    /// `Ready=False`: the bucket's Object Lock configuration could not be read (S3 with
    /// `objectLock`).
    ObjectLockUnknown = "ObjectLockUnknown",
    /// `Ready=False`: `objectLock` is set but the bucket has no Object Lock enabled.
    ObjectLockNotEnabled = "ObjectLockNotEnabled",
    /// `Ready=True`: the filesystem storage's claim is `Bound` or `Pending` (first consumer).
    ClaimAvailable = "ClaimAvailable",
    /// `Ready=False`: the filesystem storage's PersistentVolumeClaim does not exist.
    ClaimNotFound = "ClaimNotFound",
    /// `Ready=False`: the filesystem storage's claim is neither `Bound` nor `Pending`.
    ClaimNotBound = "ClaimNotBound",
    /// Warning Event: a storage's probe failed after it was ready (or on its first probe).
    NotReady = "NotReady",
}

/// A string that is not one of the operator's reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownReason(pub String);

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown reason {:?}", self.0)
    }
}

impl std::error::Error for UnknownReason {}

impl Reason {
    /// A pending BackupRun with this reason is blocked on the user (a missing policy, storage,
    /// Secret or key, or a policy without an engine), not waiting in the queue: it takes no
    /// place in the backup queue, and its Wait Event is a Warning. (Was `BLOCKER_REASONS` in
    /// `controller/backup_run/mod.rs`.)
    pub const fn blocks_backup(self) -> bool {
        matches!(
            self,
            Reason::PolicyNotFound
                | Reason::StorageNotFound
                | Reason::SecretNotFound
                | Reason::SecretKeyNotFound
                | Reason::InvalidPolicy
        )
    }

    /// A queued RestoreRun with this reason is blocked on the user (a missing or unfinished
    /// BackupRun, a missing storage, Secret or key): it holds no place in the restore queue.
    /// These are exactly the reasons the RestoreRun reconciler reports as
    /// `SourceState::Blocked`. (Was `BLOCKER_REASONS` in `controller/restore_run/plan.rs`.)
    pub const fn blocks_restore(self) -> bool {
        matches!(
            self,
            Reason::BackupRunNotFound
                | Reason::BackupRunNotReady
                | Reason::CopyNotFound
                | Reason::StorageNotFound
                | Reason::SecretNotFound
                | Reason::SecretKeyNotFound
                | Reason::AwaitingApproval
                | Reason::ApprovalExpired
                | Reason::ApprovalUnavailable
        )
    }

    /// A pending RestoreValidation with this reason competes for a validation slot. Only
    /// `Queued` does: a validation waiting on a blocker (`BackupRunNotFound`,
    /// `NoSuccessfulBackup`, a Secret, …) does not compete until it is unblocked. A validation
    /// with no reason yet (new) competes too: see [`Reason::saved_competes_for_validation_slot`].
    pub const fn competes_for_validation_slot(self) -> bool {
        matches!(self, Reason::Queued)
    }

    /// The storage has not been probed yet: a policy's `StorageReady=False` with this reason is
    /// not news for its channels (no `StorageUnhealthy` notification).
    pub const fn is_not_probed_yet(self) -> bool {
        matches!(self, Reason::NotProbedYet)
    }

    /// Whether a saved `status.reason` of a pending BackupRun (no Job yet) keeps it out of the
    /// backup queue. No reason, or one that is not the operator's, does not.
    pub fn saved_blocks_backup(saved: Option<&str>) -> bool {
        saved
            .and_then(Reason::parse)
            .is_some_and(Reason::blocks_backup)
    }

    /// Whether a saved `status.reason` of a queued RestoreRun (no Job yet) keeps it out of the
    /// restore queue. No reason, or one that is not the operator's, does not.
    pub fn saved_blocks_restore(saved: Option<&str>) -> bool {
        saved
            .and_then(Reason::parse)
            .is_some_and(Reason::blocks_restore)
    }

    /// Whether a pending RestoreValidation (no Job yet) with this saved `status.reason` competes
    /// for a validation slot: a new one (no reason) or a queued one. Any other reason, including
    /// one that is not the operator's, keeps it out.
    pub fn saved_competes_for_validation_slot(saved: Option<&str>) -> bool {
        match saved {
            None => true,
            Some(s) => Reason::parse(s).is_some_and(Reason::competes_for_validation_slot),
        }
    }

    /// Whether a saved condition reason (a policy's `StorageReady`) says "not probed yet".
    pub fn saved_is_not_probed_yet(saved: &str) -> bool {
        Reason::parse(saved).is_some_and(Reason::is_not_probed_yet)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::parse(s).ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> Self {
        r.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `BLOCKER_REASONS` of controller/backup_run/mod.rs before this type.
    const OLD_BACKUP_BLOCKERS: &[&str] = &[
        "PolicyNotFound",
        "StorageNotFound",
        "SecretNotFound",
        "SecretKeyNotFound",
        "InvalidPolicy",
    ];

    /// `BLOCKER_REASONS` of controller/restore_run/plan.rs before this type.
    /// (Plus `CopyNotFound`, added with `readFrom`.)
    const OLD_RESTORE_BLOCKERS: &[&str] = &[
        "BackupRunNotFound",
        "BackupRunNotReady",
        "CopyNotFound",
        "StorageNotFound",
        "SecretNotFound",
        "SecretKeyNotFound",
        // added with restore approvals
        "AwaitingApproval",
        "ApprovalExpired",
        "ApprovalUnavailable",
    ];

    #[test]
    fn as_str_and_parse_round_trip_for_every_reason() {
        for &r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r), "{r:?}");
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r), "{r:?}");
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(String::from(r), r.as_str());
        }
    }

    #[test]
    fn all_lists_every_variant_once_in_declaration_order() {
        for (i, &r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?} is out of place in ALL");
        }
        assert_eq!(Reason::ALL.len(), 122);
        assert_eq!(Reason::ALL.last(), Some(&Reason::NotReady));
    }

    #[test]
    fn wire_strings_are_the_variant_names_except_rpo_and_rto_not_met() {
        for &r in Reason::ALL {
            let expected = match r {
                Reason::RpoNotMet => "RPONotMet".to_owned(),
                Reason::RtoNotMet => "RTONotMet".to_owned(),
                _ => format!("{r:?}"),
            };
            assert_eq!(r.as_str(), expected);
        }
    }

    #[test]
    fn wire_strings_are_distinct() {
        let mut seen = BTreeSet::new();
        for &r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{} is used twice", r.as_str());
        }
        assert_eq!(seen.len(), Reason::ALL.len());
    }

    #[test]
    fn wire_strings_are_valid_condition_reasons() {
        // metav1.Condition.reason: `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most 1024
        // bytes; Events want CamelCase. Ours are plain CamelCase.
        for &r in Reason::ALL {
            let s = r.as_str();
            assert!(s.len() <= 1024);
            assert!(s.starts_with(|c: char| c.is_ascii_uppercase()), "{s}");
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
    }

    #[test]
    fn unknown_strings_do_not_parse() {
        for s in [
            "",
            "queued",
            "Queued ",
            "RpoNotMet",
            "RtoNotMet",
            // Kubernetes Job condition reasons passed through, not ours.
            "BackoffLimitExceeded",
            "PodFailurePolicy",
            "CompletionsReached",
            "SuccessPolicy",
        ] {
            assert_eq!(Reason::parse(s), None, "{s:?}");
            assert_eq!(s.parse::<Reason>(), Err(UnknownReason(s.to_owned())));
        }
    }

    fn wire_strings_where(pred: fn(Reason) -> bool) -> BTreeSet<&'static str> {
        Reason::ALL
            .iter()
            .filter(|&&r| pred(r))
            .map(|r| r.as_str())
            .collect()
    }

    #[test]
    fn blockers_are_the_old_lists() {
        let old = |l: &[&'static str]| l.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            wire_strings_where(Reason::blocks_backup),
            old(OLD_BACKUP_BLOCKERS)
        );
        assert_eq!(
            wire_strings_where(Reason::blocks_restore),
            old(OLD_RESTORE_BLOCKERS)
        );
    }

    #[test]
    fn saved_reason_rules_match_the_old_string_comparisons() {
        // Saved reasons to try: none, every reason, and strings that are not ours.
        let others = ["", "queued", "BackoffLimitExceeded", "PodFailurePolicy"];
        let saved_reasons = std::iter::once(None).chain(
            Reason::ALL
                .iter()
                .map(|r| r.as_str())
                .chain(others)
                .map(Some),
        );
        for saved in saved_reasons {
            // backup_run::queue_decision
            assert_eq!(
                Reason::saved_blocks_backup(saved),
                saved.is_some_and(|s| OLD_BACKUP_BLOCKERS.contains(&s)),
                "{saved:?}"
            );
            // restore_run::plan::queue_state
            assert_eq!(
                Reason::saved_blocks_restore(saved),
                saved.is_some_and(|s| OLD_RESTORE_BLOCKERS.contains(&s)),
                "{saved:?}"
            );
            // restore_validation::queue_decision (`QUEUED` was "Queued")
            assert_eq!(
                Reason::saved_competes_for_validation_slot(saved),
                saved.is_none_or(|s| s == "Queued"),
                "{saved:?}"
            );
            // backup_policy::reconcile, the `unhealthy` closure
            if let Some(s) = saved {
                assert_eq!(
                    Reason::saved_is_not_probed_yet(s),
                    s == "NotProbedYet",
                    "{s:?}"
                );
            }
        }
    }
}
