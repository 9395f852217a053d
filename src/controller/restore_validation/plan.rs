//! Pure planning for RestoreValidations: the next step of one validation, which BackupRun a
//! `policyRef` + `latest` validation proves, the agent's verdict, and what a BackupPolicy's
//! `validation` settings ask for (create a validation now? which old ones to prune? what goes
//! in the policy's `lastValidation`, `backupsSinceValidation` and `Verified` condition?).
//! No API calls here.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::api::backup_run::{BackupRun, BackupRunPhase, Verification};
use crate::api::common::{time_from_chrono, time_to_chrono};
use crate::api::restore_validation::{
    CheckResult, RestoreValidation, RestoreValidationPhase, ValidationResult,
};
use crate::contract::{Report, ValidationReport};

use crate::controller::common::blockers::{BLOCKED_TIMEOUT, SourceState};
use crate::controller::common::job_watch::Observed as JobObserved;

/// How a validation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `Succeeded` (a verdict) or `Failed` (could not be carried out).
    pub phase: RestoreValidationPhase,
    /// The verdict (`Failed` whenever the phase is Failed).
    pub result: ValidationResult,
    /// Status reason.
    pub reason: String,
    /// Detail.
    pub message: String,
    /// Per-check results.
    pub checks: Vec<CheckResult>,
    /// Measured restore time.
    pub restore_duration_seconds: Option<f64>,
}

/// The next step of a validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Finished.
    Done,
    /// Stay Pending; look again later.
    Wait {
        /// Status reason.
        reason: String,
        /// Detail.
        message: String,
    },
    /// Create the sandbox Secret and the Job.
    StartJob,
    /// The Job runs.
    Track {
        /// Pods started.
        attempts: u32,
    },
    /// Record the outcome (and mark the BackupRun).
    Finish(Outcome),
}

/// Everything the planner needs.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The validation.
    pub validation: &'a RestoreValidation,
    /// Whether the backup, storage and Secrets resolve.
    pub source: SourceState,
    /// Its Job.
    pub job: JobObserved,
    /// Now.
    pub now: DateTime<Utc>,
}

fn fail(reason: &str, message: String) -> Step {
    Step::Finish(Outcome {
        phase: RestoreValidationPhase::Failed,
        result: ValidationResult::Failed,
        reason: reason.into(),
        message,
        checks: Vec::new(),
        restore_duration_seconds: None,
    })
}

/// Decides the next step of a validation.
pub fn plan(o: &Observed<'_>) -> Step {
    let status = o.validation.status.as_ref();
    if status
        .and_then(|s| s.phase)
        .is_some_and(RestoreValidationPhase::is_finished)
    {
        return Step::Done;
    }
    match &o.job {
        JobObserved::NotCreated => match &o.source {
            SourceState::Ready => Step::StartJob,
            SourceState::Invalid(b) => fail(&b.reason, b.message.clone()),
            SourceState::Blocked(b) => {
                let waited = o
                    .validation
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|c| (o.now - time_to_chrono(c)).to_std().unwrap_or_default())
                    .unwrap_or_default();
                if waited >= BLOCKED_TIMEOUT {
                    fail(
                        &b.reason,
                        format!("{} (waited 10 minutes for it to be fixed)", b.message),
                    )
                } else {
                    Step::Wait {
                        reason: b.reason.clone(),
                        message: b.message.clone(),
                    }
                }
            }
        },
        JobObserved::Vanished { name } => fail(
            "JobDeleted",
            format!("the validation Job {name} was deleted before it finished"),
        ),
        JobObserved::Active { attempts, .. } => Step::Track {
            attempts: *attempts,
        },
        JobObserved::Finished {
            reason,
            message,
            termination_message,
            ..
        } => {
            let report = termination_message
                .as_deref()
                .and_then(ValidationReport::parse);
            Step::Finish(outcome(report, reason, message))
        }
    }
}

/// The outcome from the agent's report and the Job's condition (pure).
pub fn outcome(report: Option<ValidationReport>, job_reason: &str, job_message: &str) -> Outcome {
    match report {
        Some(r) if r.succeeded() && r.result.is_some() => {
            let result = r.result.unwrap_or(ValidationResult::Failed);
            Outcome {
                phase: RestoreValidationPhase::Succeeded,
                result,
                reason: match result {
                    ValidationResult::Passed => "Passed".into(),
                    ValidationResult::Failed => {
                        r.reason.clone().unwrap_or_else(|| "CheckFailed".into())
                    }
                },
                message: r.message.clone().unwrap_or_default(),
                checks: r.checks.into_iter().take(32).collect(),
                restore_duration_seconds: r.restore_duration_seconds,
            }
        }
        Some(r) => Outcome {
            phase: RestoreValidationPhase::Failed,
            result: ValidationResult::Failed,
            reason: match r.category.as_deref() {
                Some("storage" | "storage-refused") => "ArtifactUnavailable",
                Some("target") => "SandboxUnavailable",
                Some("config") => "InvalidConfiguration",
                // The manifest is not the one recorded (swapped, or claims another encryption
                // or scope), or an artifact's digest differs.
                Some("integrity") => "ChecksumMismatch",
                Some("key-unavailable") => {
                    crate::controller::common::reason::Reason::KeyUnavailable.as_str()
                }
                _ => "ValidationError",
            }
            .into(),
            message: r
                .error
                .unwrap_or_else(|| "the agent reported a failure".into()),
            checks: Vec::new(),
            restore_duration_seconds: None,
        },
        None => Outcome {
            phase: RestoreValidationPhase::Failed,
            result: ValidationResult::Failed,
            reason: if job_reason.is_empty() {
                "NoAgentReport".into()
            } else {
                job_reason.to_string()
            },
            message: if job_message.is_empty() {
                "the validation Job ended without a verdict from the agent".into()
            } else {
                job_message.to_string()
            },
            checks: Vec::new(),
            restore_duration_seconds: None,
        },
    }
}

fn completed_at(r: &BackupRun) -> Option<DateTime<Utc>> {
    let s = r.status.as_ref()?;
    s.completion_time
        .as_ref()
        .or(r.metadata.creation_timestamp.as_ref())
        .map(time_to_chrono)
}

fn succeeded(r: &BackupRun) -> bool {
    r.status.as_ref().and_then(|s| s.phase) == Some(BackupRunPhase::Succeeded)
        && r.status.as_ref().is_some_and(|s| s.artifact.is_some())
}

/// The newest Succeeded BackupRun of `policy` among `runs` (by completion time).
pub fn latest_successful<'a>(runs: &'a [BackupRun], policy: &str) -> Option<&'a BackupRun> {
    runs.iter()
        .filter(|r| r.spec.policy_ref.name == policy && succeeded(r))
        .max_by_key(|r| (completed_at(r), r.name_any()))
}

/// The `status.verification` a finished validation writes to its BackupRun.
pub fn verification(name: &str, o: &Outcome, now: DateTime<Utc>) -> Verification {
    Verification {
        result: o.result,
        validation_name: name.to_string(),
        time: Some(time_from_chrono(now)),
        restore_duration_seconds: o.restore_duration_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::backup_policy::validation_plan::auto_validation_name;
    use crate::controller::common::blockers::Blocker;
    use crate::controller::common::testing::{backup, t};

    fn rv(yaml_status: &str, labels: &str) -> RestoreValidation {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreValidation
metadata: {{name: v1, namespace: shop, creationTimestamp: "2026-11-22T10:00:00Z"{labels}}}
spec: {{backupRunRef: {{name: b1}}}}
{yaml_status}
"#
        ))
        .unwrap()
    }

    #[test]
    fn verdicts_become_outcomes() {
        let passed = ValidationReport::parse(
            r#"{"status":"succeeded","operation":"validate","result":"Passed","restoreDurationSeconds":2.5,"checks":[{"name":"rowCounts-0","type":"rowCounts","result":"Passed","expected":"3 tables, 5 rows","observed":"3 tables, 5 rows"}]}"#,
        );
        let o = outcome(passed, "", "");
        assert_eq!(o.phase, RestoreValidationPhase::Succeeded);
        assert_eq!(o.result, ValidationResult::Passed);
        assert_eq!(o.restore_duration_seconds, Some(2.5));
        assert_eq!(o.checks.len(), 1);
        let failed = ValidationReport::parse(
            r#"{"status":"succeeded","result":"Failed","reason":"ChecksumMismatch","message":"bad"}"#,
        );
        let o = outcome(failed, "BackoffLimitExceeded", "");
        assert_eq!(
            (o.phase, o.result, o.reason.as_str()),
            (
                RestoreValidationPhase::Succeeded,
                ValidationResult::Failed,
                "ChecksumMismatch"
            )
        );
        let error = ValidationReport::parse(
            r#"{"status":"failed","category":"storage","error":"no such key"}"#,
        );
        let o = outcome(error, "BackoffLimitExceeded", "");
        assert_eq!(
            (o.phase, o.reason.as_str()),
            (RestoreValidationPhase::Failed, "ArtifactUnavailable")
        );
        // A manifest that is not the recorded one is refused by the agent: ChecksumMismatch.
        let swapped = ValidationReport::parse(
            r#"{"status":"failed","category":"integrity","error":"the manifest has sha256 …, the backup recorded …: it was replaced or altered"}"#,
        );
        let o = outcome(swapped, "BackoffLimitExceeded", "");
        assert_eq!(
            (o.phase, o.result, o.reason.as_str()),
            (
                RestoreValidationPhase::Failed,
                ValidationResult::Failed,
                "ChecksumMismatch"
            )
        );
        assert!(o.message.contains("replaced or altered"));
        let o = outcome(None, "DeadlineExceeded", "too slow");
        assert_eq!(
            (o.phase, o.reason.as_str()),
            (RestoreValidationPhase::Failed, "DeadlineExceeded")
        );
    }

    #[test]
    fn plan_steps() {
        let v = rv("", "");
        let now = t("2026-11-22T10:01:00Z");
        let obs = |source, job| Observed {
            validation: &v,
            source,
            job,
            now,
        };
        assert_eq!(
            plan(&obs(SourceState::Ready, JobObserved::NotCreated)),
            Step::StartJob
        );
        let b = Blocker {
            reason: "SecretNotFound".into(),
            message: "m".into(),
        };
        assert!(matches!(
            plan(&obs(
                SourceState::Blocked(b.clone()),
                JobObserved::NotCreated
            )),
            Step::Wait { .. }
        ));
        assert!(
            matches!(plan(&obs(SourceState::Invalid(b), JobObserved::NotCreated)), Step::Finish(ref o) if o.phase == RestoreValidationPhase::Failed)
        );
        assert_eq!(
            plan(&obs(
                SourceState::Ready,
                JobObserved::Active {
                    attempts: 1,
                    progress: None
                }
            )),
            Step::Track { attempts: 1 }
        );
        let done = rv("status: {phase: Succeeded, result: Passed}", "");
        let o = Observed {
            validation: &done,
            source: SourceState::Ready,
            job: JobObserved::NotCreated,
            now,
        };
        assert_eq!(plan(&o), Step::Done);
    }

    #[test]
    fn latest_successful_run_of_a_policy() {
        let runs = [
            backup("b1", "2026-11-20T02:00:00Z", "Succeeded"),
            backup("b2", "2026-11-21T02:00:00Z", "Succeeded"),
            backup("b3", "2026-11-22T02:00:00Z", "Failed"),
        ];
        assert_eq!(
            latest_successful(&runs, "nightly").unwrap().name_any(),
            "b2"
        );
        assert!(latest_successful(&runs, "other").is_none());
    }

    #[test]
    fn verification_and_names() {
        let o = Outcome {
            phase: RestoreValidationPhase::Succeeded,
            result: ValidationResult::Passed,
            reason: "Passed".into(),
            message: String::new(),
            checks: vec![],
            restore_duration_seconds: Some(3.0),
        };
        let v = verification("v1", &o, t("2026-11-22T10:00:00Z"));
        assert_eq!(v.validation_name, "v1");
        assert_eq!(v.restore_duration_seconds, Some(3.0));
        assert!(auto_validation_name(&"x".repeat(80)).len() <= 63);
        assert_eq!(auto_validation_name("b1"), "b1-validation");
    }
}
