//! Planning a policy's automatic validations (pure): which BackupRun to prove next
//! (`everyNthBackup` or a cron `schedule`), which finished validations to prune, and the
//! policy's `lastValidation` and `Verified` condition.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::api::backup_policy::{BackupPolicy, POLICY_LABEL, ValidationSummary};
use crate::api::common::{time_from_chrono, time_to_chrono};
use crate::api::restore_validation::{RestoreValidation, RestoreValidationPhase, ValidationResult};
use crate::controller::common::run_cache::FinishedRun;

use super::schedule::Schedule;

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
    /// The `RTOMet` condition, when the policy sets `rto`.
    pub rto: Option<RtoVerdict>,
}

/// The policy's recovery time objective against the newest measured restore.
#[derive(Debug, Clone, PartialEq)]
pub struct RtoVerdict {
    /// The `RTOMet` condition.
    pub condition: Condition,
    /// `Some(true|false)` when measured (the `policy_rto_met` gauge), `None` when Unknown.
    pub met: Option<bool>,
}

/// `RTOMet` from the objective (`rto`, e.g. `30m`; `None` when it does not parse, which the
/// API refuses) and the newest finished validation (`name`, its measured restore time). A
/// validation that failed its checks still measured how long the restore took; one that never
/// restored measured nothing and leaves it Unknown.
pub fn rto_verdict(
    objective: &str,
    newest_finished: Option<(&str, Option<f64>)>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Option<RtoVerdict> {
    use crate::controller::common::reason::Reason;
    let objective_seconds = crate::api::common::parse_duration(objective)?;
    let (met, reason, message) = match newest_finished {
        Some((name, Some(seconds))) if seconds <= objective_seconds as f64 => (
            Some(true),
            Reason::WithinObjective,
            format!(
                "RestoreValidation {name} restored in {seconds:.1}s, within the RTO of {objective}"
            ),
        ),
        Some((name, Some(seconds))) => (
            Some(false),
            Reason::RestoreTooSlow,
            format!(
                "RestoreValidation {name} took {seconds:.1}s to restore, longer than the RTO of {objective}"
            ),
        ),
        Some((name, None)) => (
            None,
            Reason::NotMeasured,
            format!("RestoreValidation {name} measured no restore time (it did not restore)"),
        ),
        None => (
            None,
            Reason::NotMeasured,
            "no restore validation has finished yet: set spec.validation to measure the RTO"
                .to_string(),
        ),
    };
    Some(RtoVerdict {
        condition: Condition {
            type_: crate::api::common::condition_types::RTO_MET.into(),
            status: match met {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            }
            .into(),
            reason: reason.as_str().into(),
            message: message.chars().take(1024).collect(),
            last_transition_time: time_from_chrono(now),
            observed_generation: generation,
        },
        met,
    })
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
    let rto = policy.spec.rto.as_deref().and_then(|objective| {
        rto_verdict(
            objective,
            last_finished.map(|v| {
                (
                    v.metadata.name.as_deref().unwrap_or_default(),
                    v.status.as_ref().and_then(|s| s.restore_duration_seconds),
                )
            }),
            generation,
            now,
        )
    });
    PolicyValidationPlan {
        rto,
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
    use crate::api::BackupRun;
    use crate::controller::common::testing::{backup, policy, t};

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
    fn rto_met_compares_the_newest_finished_validation_with_the_objective() {
        let now = t("2026-11-22T12:00:00Z");
        let runs = vec![
            backup("b1", "2026-11-20T02:00:00Z", "Succeeded"),
            backup("b2", "2026-11-21T02:00:00Z", "Succeeded"),
        ];
        let quick = validation_of(
            "v1",
            "b1",
            "2026-11-20T03:00:00Z",
            "{phase: Succeeded, result: Passed, backupRunName: b1, restoreDurationSeconds: 95.5}",
        );
        // No objective: no condition.
        let plan = plan_policy(
            &policy(""),
            &finished(&runs),
            std::slice::from_ref(&quick),
            now,
        );
        assert_eq!(plan.rto, None);

        let p = policy("rto: 2m");
        // Nothing measured yet.
        let rto = plan_policy(&p, &finished(&runs), &[], now).rto.unwrap();
        assert_eq!(
            (
                rto.condition.status.as_str(),
                rto.condition.reason.as_str(),
                rto.met
            ),
            ("Unknown", "NotMeasured", None)
        );
        assert_eq!(rto.condition.type_, "RTOMet");
        // 95.5 s within 2m.
        let rto = plan_policy(&p, &finished(&runs), std::slice::from_ref(&quick), now)
            .rto
            .unwrap();
        assert_eq!(
            (
                rto.condition.status.as_str(),
                rto.condition.reason.as_str(),
                rto.met
            ),
            ("True", "WithinObjective", Some(true))
        );
        assert!(
            rto.condition.message.contains("95.5s"),
            "{}",
            rto.condition.message
        );
        assert!(
            rto.condition.message.contains("2m"),
            "{}",
            rto.condition.message
        );
        // The newest finished one counts, even when its checks failed; a running one does not.
        let slow = validation_of(
            "v2",
            "b2",
            "2026-11-21T03:00:00Z",
            "{phase: Succeeded, result: Failed, backupRunName: b2, restoreDurationSeconds: 120.5}",
        );
        let running = validation_of("v3", "b2", "2026-11-22T03:00:00Z", "{phase: Running}");
        let rto = plan_policy(&p, &finished(&runs), &[quick.clone(), slow, running], now)
            .rto
            .unwrap();
        assert_eq!(
            (
                rto.condition.status.as_str(),
                rto.condition.reason.as_str(),
                rto.met
            ),
            ("False", "RestoreTooSlow", Some(false))
        );
        assert!(
            rto.condition.message.contains("v2"),
            "{}",
            rto.condition.message
        );
        // A validation that never restored measured nothing.
        let broken = validation_of(
            "v4",
            "b2",
            "2026-11-22T04:00:00Z",
            "{phase: Failed, result: Failed, backupRunName: b2}",
        );
        let rto = plan_policy(&p, &finished(&runs), &[quick, broken], now)
            .rto
            .unwrap();
        assert_eq!(
            (rto.condition.reason.as_str(), rto.met),
            ("NotMeasured", None)
        );
        // Exactly at the objective is within it.
        assert_eq!(
            rto_verdict("2m", Some(("v", Some(120.0))), None, now)
                .unwrap()
                .met,
            Some(true)
        );
        assert_eq!(rto_verdict("soon", None, None, now), None);
    }
}
