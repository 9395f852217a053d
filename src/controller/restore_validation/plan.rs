//! Pure planning for RestoreValidations: the next step of one validation, which BackupRun a
//! `policyRef` + `latest` validation proves, the agent's verdict, and what a BackupPolicy's
//! `validation` settings ask for (create a validation now? which old ones to prune? what goes
//! in the policy's `lastValidation`, `backupsSinceValidation` and `Verified` condition?).
//! No API calls here.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Deserialize;

use crate::api::backup_policy::{BackupPolicy, ValidationSummary};
use crate::api::backup_run::{BackupRun, BackupRunPhase, Verification};
use crate::api::common::{time_from_chrono, time_to_chrono};
use crate::api::restore_validation::{
    CheckResult, RestoreValidation, RestoreValidationPhase, ValidationResult,
};

use crate::controller::backup_policy::schedule::Schedule;
use crate::controller::common::job_watch::Observed as JobObserved;
use crate::controller::common::run_cache::FinishedRun;
use crate::controller::restore_run::plan::SourceState;

/// Label on RestoreValidations a BackupPolicy created, with the policy's name.
pub const POLICY_LABEL: &str = "dataguardian.io/policy";

/// The agent's `validate` summary (or failure summary).
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

impl ValidationReport {
    /// Parses a termination message; `None` when it is not the agent's summary.
    pub fn parse(message: &str) -> Option<ValidationReport> {
        let r: ValidationReport = serde_json::from_str(message.trim()).ok()?;
        (!r.status.is_empty()).then_some(r)
    }
}

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
                if waited >= crate::controller::backup_run::plan::BLOCKED_TIMEOUT {
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
        Some(r) if r.status == "succeeded" && r.result.is_some() => {
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
                Some("storage") => "ArtifactUnavailable",
                Some("target") => "SandboxUnavailable",
                Some("config") => "InvalidConfiguration",
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

/// What a BackupPolicy's `validation` settings ask for now.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyValidationPlan {
    /// Create a validation of this BackupRun now.
    pub create_for: Option<String>,
    /// Finished validations created by the policy beyond its history limit (oldest first).
    pub prune: Vec<String>,
    /// The policy's `lastValidation`.
    pub last_validation: Option<ValidationSummary>,
    /// Successful backups newer than the last validated one.
    pub backups_since_validation: u32,
    /// The `Verified` condition.
    pub verified: Condition,
    /// When to look again (a cron schedule's next time).
    pub next_check: Option<DateTime<Utc>>,
}

fn created(v: &RestoreValidation) -> Option<DateTime<Utc>> {
    v.metadata.creation_timestamp.as_ref().map(time_to_chrono)
}

fn finished(v: &RestoreValidation) -> bool {
    v.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RestoreValidationPhase::is_finished)
}

fn validated_run(v: &RestoreValidation) -> Option<String> {
    v.status
        .as_ref()
        .and_then(|s| s.backup_run_name.clone())
        .or_else(|| v.spec.backup_run_ref.as_ref().map(|r| r.name.clone()))
}

/// Plans a policy's automatic validations. `runs` are the policy's finished BackupRuns,
/// `validations` the namespace's RestoreValidations (those of other policies are ignored).
pub fn plan_policy(
    policy: &BackupPolicy,
    runs: &[FinishedRun],
    validations: &[RestoreValidation],
    now: DateTime<Utc>,
) -> PolicyValidationPlan {
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let mut ours: Vec<&RestoreValidation> = validations
        .iter()
        .filter(|v| {
            v.labels().get(POLICY_LABEL).is_some_and(|p| *p == name)
                || v.spec.policy_ref.as_ref().is_some_and(|p| p.name == name)
                || validated_run(v).is_some_and(|r| runs.iter().any(|b| b.name == r))
        })
        .collect();
    ours.sort_by_key(|v| (created(v), v.name_any()));
    let newest = ours.last().copied();
    let last_finished = ours.iter().rev().find(|v| finished(v)).copied();
    let last_validation = newest.map(|v| {
        let st = v.status.clone().unwrap_or_default();
        ValidationSummary {
            name: v.name_any(),
            backup_run: validated_run(v),
            result: st.result,
            completion_time: st.completion_time,
            restore_duration_seconds: st.restore_duration_seconds,
        }
    });
    let mut successful: Vec<&FinishedRun> = runs
        .iter()
        .filter(|r| r.succeeded && r.artifact.is_some())
        .collect();
    successful.sort_by_key(|r| (r.completed_at, r.name.as_str()));
    // Backups newer than the newest validated one.
    let last_validated_at = ours
        .iter()
        .filter_map(|v| validated_run(v))
        .filter_map(|r| {
            successful
                .iter()
                .find(|b| b.name == r)
                .and_then(|b| b.completed_at)
        })
        .max();
    let since: Vec<&&FinishedRun> = successful
        .iter()
        .filter(|b| last_validated_at.is_none_or(|t| b.completed_at.is_some_and(|c| c > t)))
        .collect();
    let backups_since_validation = since.len() as u32;
    let active = ours.iter().any(|v| !finished(v));
    let latest = successful.last().map(|r| r.name.clone());
    let already_validated = |run: &str| {
        ours.iter()
            .any(|v| validated_run(v).as_deref() == Some(run))
    };

    let mut create_for = None;
    let mut next_check = None;
    if let Some(cfg) = &policy.spec.validation
        && !active
        && let Some(latest) = &latest
    {
        if let Some(n) = cfg.every_nth_backup {
            if backups_since_validation >= n.max(1) && !already_validated(latest) {
                create_for = Some(latest.clone());
            }
        } else if let Some(expr) = &cfg.schedule
            && let Ok(schedule) = Schedule::parse(expr, policy.spec.time_zone.as_deref())
        {
            let since = newest
                .and_then(created)
                .or_else(|| {
                    policy
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(time_to_chrono)
                })
                .unwrap_or(now);
            match schedule.next_fire_after(since) {
                Some(due) if due <= now => {
                    if !already_validated(latest) {
                        create_for = Some(latest.clone());
                    }
                    next_check = schedule.next_fire_after(now);
                }
                other => next_check = other,
            }
        }
    }

    let limit = policy
        .spec
        .validation
        .as_ref()
        .map_or(usize::MAX, |c| c.history_limit.max(1) as usize);
    let finished_ours: Vec<&&RestoreValidation> = ours
        .iter()
        .filter(|v| finished(v) && v.labels().contains_key(POLICY_LABEL))
        .collect();
    let prune = finished_ours
        .iter()
        .take(finished_ours.len().saturating_sub(limit))
        .map(|v| v.name_any())
        .collect();

    let (status, reason, message) = match last_finished.and_then(|v| v.status.clone()) {
        Some(st) if st.result == Some(ValidationResult::Passed) => (
            "True",
            "ValidationPassed",
            format!(
                "RestoreValidation {} proved BackupRun {} restores{}",
                last_finished.map(|v| v.name_any()).unwrap_or_default(),
                st.backup_run_name.unwrap_or_default(),
                st.restore_duration_seconds
                    .map(|s| format!(" in {s:.1}s"))
                    .unwrap_or_default()
            ),
        ),
        Some(st) => (
            "False",
            "ValidationFailed",
            format!(
                "RestoreValidation {} failed for BackupRun {}: {}",
                last_finished.map(|v| v.name_any()).unwrap_or_default(),
                st.backup_run_name.unwrap_or_default(),
                st.message.unwrap_or_default()
            ),
        ),
        None => (
            "Unknown",
            "NotValidated",
            "no restore validation has finished yet".to_string(),
        ),
    };
    PolicyValidationPlan {
        create_for,
        prune,
        last_validation,
        backups_since_validation,
        verified: Condition {
            type_: "Verified".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.chars().take(1024).collect(),
            last_transition_time: time_from_chrono(now),
            observed_generation: generation,
        },
        next_check,
    }
}

/// The deterministic name of the validation a policy creates for a BackupRun.
pub fn auto_validation_name(backup_run: &str) -> String {
    crate::jobs::naming::bounded_name(backup_run, "validation", crate::jobs::naming::MAX_LABEL_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::backup_run::plan::Blocker;

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

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn backup(name: &str, done: &str, phase: &str) -> BackupRun {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {{name: {name}, namespace: shop, creationTimestamp: "{done}"}}
spec: {{policyRef: {{name: nightly}}, trigger: Scheduled}}
status: {{phase: {phase}, completionTime: "{done}", artifact: {{storage: main, key: k, engine: postgres}}}}
"#
        ))
        .unwrap()
    }

    fn finished(runs: &[BackupRun]) -> Vec<FinishedRun> {
        runs.iter().filter_map(FinishedRun::from_run).collect()
    }

    fn validation_of(name: &str, run: &str, created: &str, status: &str) -> RestoreValidation {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreValidation
metadata: {{name: {name}, namespace: shop, creationTimestamp: "{created}", labels: {{dataguardian.io/policy: nightly}}}}
spec: {{backupRunRef: {{name: {run}}}}}
status: {status}
"#
        ))
        .unwrap()
    }

    fn policy(validation: &str) -> BackupPolicy {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nightly, namespace: shop, creationTimestamp: "2026-11-01T00:00:00Z", generation: 3}}
spec:
  source: {{postgres: {{host: db, port: 5432, database: shop, user: u}}}}
  storageRef: {{name: main}}
  schedule: "0 2 * * *"
  {validation}
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
    fn every_nth_backup_creates_once_and_counts_backups_since() {
        let p = policy("validation: {everyNthBackup: 2, historyLimit: 1}");
        let now = t("2026-11-22T12:00:00Z");
        let runs = vec![
            backup("b1", "2026-11-20T02:00:00Z", "Succeeded"),
            backup("b2", "2026-11-21T02:00:00Z", "Succeeded"),
        ];
        let plan = plan_policy(&p, &finished(&runs), &[], now);
        assert_eq!(plan.backups_since_validation, 2);
        assert_eq!(plan.create_for.as_deref(), Some("b2"));
        assert_eq!(plan.verified.status, "Unknown");

        // b2 validated and passed; one more backup is not enough for N = 2.
        let mut runs2 = runs.clone();
        runs2.push(backup("b3", "2026-11-22T02:00:00Z", "Succeeded"));
        let vals = vec![validation_of(
            "b2-validation",
            "b2",
            "2026-11-21T03:00:00Z",
            "{phase: Succeeded, result: Passed, backupRunName: b2, restoreDurationSeconds: 4.0}",
        )];
        let plan = plan_policy(&p, &finished(&runs2), &vals, now);
        assert_eq!(plan.backups_since_validation, 1);
        assert_eq!(plan.create_for, None);
        assert_eq!(plan.verified.status, "True");
        assert_eq!(
            plan.last_validation.as_ref().unwrap().backup_run.as_deref(),
            Some("b2")
        );

        // A running validation holds off new ones; a failed one flips Verified to False.
        runs2.push(backup("b4", "2026-11-22T06:00:00Z", "Succeeded"));
        let mut vals2 = vals.clone();
        vals2.push(validation_of(
            "b3-validation",
            "b3",
            "2026-11-22T03:00:00Z",
            "{phase: Running}",
        ));
        assert_eq!(
            plan_policy(&p, &finished(&runs2), &vals2, now).create_for,
            None
        );
        vals2[1] = validation_of(
            "b3-validation",
            "b3",
            "2026-11-22T03:00:00Z",
            "{phase: Succeeded, result: Failed, backupRunName: b3, message: orders mismatch}",
        );
        let plan = plan_policy(&p, &finished(&runs2), &vals2, now);
        assert_eq!(plan.verified.status, "False");
        assert!(plan.verified.message.contains("orders mismatch"));
        // historyLimit 1: the older finished one is pruned.
        assert_eq!(plan.prune, vec!["b2-validation".to_string()]);
    }

    #[test]
    fn a_cron_schedule_creates_when_due() {
        let p = policy("validation: {schedule: \"0 6 * * *\"}");
        let runs = vec![backup("b1", "2026-11-22T02:00:00Z", "Succeeded")];
        let vals = vec![validation_of(
            "old",
            "b0",
            "2026-11-21T06:00:00Z",
            "{phase: Succeeded, result: Passed}",
        )];
        let before = plan_policy(&p, &finished(&runs), &vals, t("2026-11-22T05:59:00Z"));
        assert_eq!(before.create_for, None);
        assert_eq!(before.next_check, Some(t("2026-11-22T06:00:00Z")));
        let due = plan_policy(&p, &finished(&runs), &vals, t("2026-11-22T06:00:30Z"));
        assert_eq!(due.create_for.as_deref(), Some("b1"));
        // Without validation settings nothing is created.
        assert_eq!(
            plan_policy(
                &policy(""),
                &finished(&runs),
                &[],
                t("2026-11-22T06:00:30Z")
            )
            .create_for,
            None
        );
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
