//! The policy's pure planning: observed state in (the policy, its storage, its runs, the schedule
//! and RPO verdicts), conditions, Events, notifications and the owned status out. The reconciler
//! ([`super::reconcile`]) reads, calls these, and applies what they return.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde::Serialize;

use crate::api::backup_policy::{BackupPolicyStatus, KeysStatus, POLICY_LABEL};
use crate::api::backup_run::Trigger;
use crate::api::common::{
    LocalObjectReference, RunSummary, find_condition, set_condition, time_from_chrono,
};
use crate::api::{BackupPolicy, BackupRun, BackupRunSpec, BackupStorage};
use crate::controller::common::reason::Reason;
use crate::controller::common::run_cache::FinishedRun;

use super::rpo::{ConditionStatus, RpoCondition};
use super::schedule::{Schedule, ScheduleError, ScheduledRun};

/// An Event the plan asks for (the reconciler publishes it on the policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    /// Warning (`true`) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// The action the Event reports.
    pub action: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// A condition of the policy's status.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: time_from_chrono(now),
        observed_generation: generation,
    }
}

/// `ScheduleValid` from the parsed schedule, and a Warning Event when it turned invalid for a
/// new reason (`previous` are the conditions before this reconcile).
pub fn schedule_condition(
    policy: &BackupPolicy,
    parsed: &Result<Schedule, ScheduleError>,
    previous: &[Condition],
    now: DateTime<Utc>,
) -> (Condition, Option<PolicyEvent>) {
    let generation = policy.metadata.generation;
    match parsed {
        Ok(_) => (
            condition(
                "ScheduleValid",
                true,
                "Valid",
                format!(
                    "{} in {}",
                    policy.spec.schedule,
                    policy.spec.time_zone_or_default()
                ),
                generation,
                now,
            ),
            None,
        ),
        Err(e) => {
            let was = find_condition(previous, "ScheduleValid").map(|c| c.reason.as_str());
            let event = (was != Some(e.reason())).then(|| PolicyEvent {
                warning: true,
                reason: e.reason(),
                action: "ValidateSchedule",
                note: e.to_string(),
            });
            (
                condition(
                    "ScheduleValid",
                    false,
                    e.reason(),
                    e.to_string(),
                    generation,
                    now,
                ),
                event,
            )
        }
    }
}

/// `StorageReady` from the referenced storage (`None`: not found) and whether it is ready.
pub fn storage_condition(
    policy: &BackupPolicy,
    ns: &str,
    storage: Option<&BackupStorage>,
    now: DateTime<Utc>,
) -> (Condition, bool) {
    let generation = policy.metadata.generation;
    let (ready, reason, message) = match storage {
        None => (
            false,
            "StorageNotFound".to_owned(),
            format!(
                "BackupStorage {} not found in namespace {ns}",
                policy.spec.storage_ref.name
            ),
        ),
        Some(s) => match s
            .status
            .as_ref()
            .and_then(|st| find_condition(&st.conditions, "Ready"))
        {
            Some(c) if c.status == "True" => (
                true,
                "StorageReady".to_owned(),
                format!("BackupStorage {} is ready", s.name_any()),
            ),
            Some(c) => (
                false,
                c.reason.clone(),
                format!("BackupStorage {}: {}", s.name_any(), c.message),
            ),
            None => (
                false,
                Reason::NotProbedYet.to_string(),
                format!("BackupStorage {} has not been probed yet", s.name_any()),
            ),
        },
    };
    (
        condition("StorageReady", ready, &reason, message, generation, now),
        ready,
    )
}

/// The `StorageReady` condition when the storage just turned unhealthy — news for the policy's
/// channels (not a storage that was never probed yet, and not again while it stays down).
pub fn storage_turned_unhealthy<'a>(
    previous: &[Condition],
    current: &'a [Condition],
) -> Option<&'a Condition> {
    let unhealthy = |c: Option<&Condition>| {
        c.is_some_and(|c| c.status == "False" && !Reason::saved_is_not_probed_yet(&c.reason))
    };
    let now = find_condition(current, "StorageReady");
    (unhealthy(now) && !unhealthy(find_condition(previous, "StorageReady")))
        .then_some(now)
        .flatten()
}

/// The BackupRun the schedule creates, labelled with its policy.
pub fn scheduled_run(ns: &str, policy: &str, new: &ScheduledRun) -> BackupRun {
    let mut run = BackupRun::new(
        &new.name,
        BackupRunSpec {
            policy_ref: LocalObjectReference::new(policy.to_owned()),
            trigger: Trigger::Scheduled,
            scheduled_time: Some(time_from_chrono(new.scheduled_time)),
            reason: None,
            compression: None,
            active_deadline_seconds: None,
        },
    );
    run.metadata.namespace = Some(ns.to_owned());
    run.metadata.labels = Some([(POLICY_LABEL.to_string(), policy.to_owned())].into());
    run
}

/// The Event for a created scheduled run: `CatchUp` when it starts more than a minute late
/// (`missed` older times were skipped), else `Scheduled`.
pub fn created_run_event(new: &ScheduledRun, missed: u32) -> PolicyEvent {
    let late = new.late_by.as_secs();
    let (reason, note) = if late > 60 {
        (
            "CatchUp",
            format!(
                "created catch-up run {} for {} ({late}s late; {missed} older missed time(s) skipped)",
                new.name,
                new.scheduled_time.to_rfc3339()
            ),
        )
    } else {
        (
            "Scheduled",
            format!(
                "created run {} for {}",
                new.name,
                new.scheduled_time.to_rfc3339()
            ),
        )
    };
    PolicyEvent {
        warning: false,
        reason,
        action: "CreateRun",
        note,
    }
}

/// `RPOMet` from the RPO verdict; `met` is `None` when the verdict is Unknown. The Warning
/// Event (and the RpoMissed notification, sent by the caller) only when it just turned False.
pub struct RpoPlan {
    /// The condition.
    pub condition: Condition,
    /// `Some(true|false)` when known (the `policy_rpo_met` gauge), `None` when Unknown.
    pub met: Option<bool>,
    /// The objective was just missed: a Warning Event and a notification.
    pub missed_now: Option<PolicyEvent>,
}

/// Plans `RPOMet` from the verdict `c`.
pub fn rpo_plan(
    c: RpoCondition,
    previous: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> RpoPlan {
    let met = match c.status {
        ConditionStatus::True => Some(true),
        ConditionStatus::False => Some(false),
        ConditionStatus::Unknown => None,
    };
    let was = find_condition(previous, "RPOMet").map(|c| c.status.as_str());
    let mut cond = condition(
        "RPOMet",
        met.unwrap_or(false),
        c.reason,
        c.message.clone(),
        generation,
        now,
    );
    if met.is_none() {
        cond.status = "Unknown".into();
    }
    let missed_now = (met == Some(false) && was != Some("False")).then_some(PolicyEvent {
        warning: true,
        reason: "RPONotMet",
        action: "EvaluateRPO",
        note: c.message,
    });
    RpoPlan {
        condition: cond,
        met,
        missed_now,
    }
}

/// `Ready`: the schedule is valid and the storage ready.
pub fn ready_condition(
    conditions: &[Condition],
    schedule_ok: bool,
    storage_ready: bool,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let message_of = |t: &str| {
        find_condition(conditions, t)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    let (ready, reason, message) = match (schedule_ok, storage_ready) {
        (true, true) => (
            true,
            "Ready",
            "schedule valid and storage ready".to_string(),
        ),
        (false, _) => (false, "ScheduleInvalid", message_of("ScheduleValid")),
        (true, false) => (false, "StorageNotReady", message_of("StorageReady")),
    };
    condition("Ready", ready, reason, message, generation, now)
}

/// Fields of the API this version does not act on yet: the `Unsupported` condition is set (with
/// a Warning Event the first time) instead of ignoring them, and removed when none is used.
pub fn apply_unsupported(
    policy: &BackupPolicy,
    previous: &[Condition],
    conditions: &mut Vec<Condition>,
    now: DateTime<Utc>,
) -> Option<PolicyEvent> {
    // Every field is acted on today (`secondaryStorageRefs` was the last); the condition an
    // older version set is removed.
    let _ = policy;
    let unsupported: Vec<&str> = Vec::new();
    if unsupported.is_empty() {
        conditions.retain(|c| c.type_ != "Unsupported");
        return None;
    }
    let message = format!(
        "not implemented in this version: {}",
        unsupported.join("; ")
    );
    let event = find_condition(previous, "Unsupported")
        .is_none()
        .then(|| PolicyEvent {
            warning: true,
            reason: "NotImplemented",
            action: "Validate",
            note: message.clone(),
        });
    set_condition(
        conditions,
        condition(
            "Unsupported",
            true,
            "NotImplemented",
            message,
            policy.metadata.generation,
            now,
        ),
    );
    event
}

/// The status summary of a finished run.
pub fn run_summary(r: &FinishedRun) -> RunSummary {
    let failure = r.failure.as_deref();
    RunSummary {
        name: r.name.clone(),
        completion_time: r.completed_at.map(time_from_chrono),
        reason: failure.and_then(|f| f.reason.clone()),
        message: failure.and_then(|f| f.message.clone()),
    }
}

/// The status fields this controller owns (the validation fields belong to the policy's
/// validation controller). Every field is always sent — `null` or `[]` when empty — so that a
/// server-side apply clears what is gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedStatus {
    pub conditions: Vec<Condition>,
    pub observed_generation: Option<i64>,
    pub last_schedule_time: Option<Time>,
    pub next_schedule_time: Option<Time>,
    pub last_successful_run: Option<RunSummary>,
    pub last_failed_run: Option<RunSummary>,
    pub active_runs: Vec<String>,
    pub keys: Option<Box<KeysStatus>>,
}

impl OwnedStatus {
    /// The owned fields of a stored status.
    pub fn of(status: &BackupPolicyStatus) -> OwnedStatus {
        OwnedStatus {
            conditions: status.conditions.clone(),
            observed_generation: status.observed_generation,
            last_schedule_time: status.last_schedule_time.clone(),
            next_schedule_time: status.next_schedule_time.clone(),
            last_successful_run: status.last_successful_run.clone(),
            last_failed_run: status.last_failed_run.clone(),
            active_runs: status.active_runs.clone(),
            keys: status.keys.clone(),
        }
    }

    /// Whether both serialize alike: times are compared as the API stores them (whole
    /// seconds), so a status read back never looks changed.
    pub fn same_on_the_wire(&self, other: &OwnedStatus) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

/// The newest succeeded and the newest failed of a policy's finished runs.
pub fn newest_outcomes(finished: &[FinishedRun]) -> (Option<&FinishedRun>, Option<&FinishedRun>) {
    let newest = |ok: bool| {
        finished
            .iter()
            .filter(|r| r.succeeded == ok)
            .max_by_key(|r| r.completed_at)
    };
    (newest(true), newest(false))
}

/// The sorted names of the active runs, with the run created in this pass.
pub fn active_run_names(mut names: Vec<String>, created_now: Option<String>) -> Vec<String> {
    if let Some(n) = created_now
        && !names.contains(&n)
    {
        names.push(n);
    }
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::common::testing::{policy, t};

    fn storage(status: &str) -> BackupStorage {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: main, namespace: shop}}
spec: {{s3: {{bucket: b, region: us-east-1}}}}
{status}
"#
        ))
        .unwrap()
    }

    #[test]
    fn an_invalid_schedule_is_reported_once_per_reason() {
        let p = policy("");
        let now = t("2026-11-22T10:00:00Z");
        let bad = Schedule::parse("61 * * * *", None);
        let (c, event) = schedule_condition(&p, &bad, &[], now);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidSchedule")
        );
        assert_eq!(c.observed_generation, Some(3));
        let event = event.expect("a Warning Event the first time");
        assert!(event.warning && event.action == "ValidateSchedule");
        let (_, again) = schedule_condition(&p, &bad, &[c], now);
        assert!(again.is_none(), "no Event while the reason stays");
        let (ok, none) = schedule_condition(&p, &Schedule::parse("0 2 * * *", None), &[], now);
        assert_eq!((ok.status.as_str(), ok.reason.as_str()), ("True", "Valid"));
        assert!(none.is_none());
    }

    #[test]
    fn storage_readiness_follows_the_storage_condition() {
        let p = policy("");
        let now = t("2026-11-22T10:00:00Z");
        let (c, ready) = storage_condition(&p, "shop", None, now);
        assert!(!ready);
        assert_eq!(c.reason, "StorageNotFound");
        let (c, ready) = storage_condition(&p, "shop", Some(&storage("")), now);
        assert!(!ready);
        assert_eq!(c.reason, "NotProbedYet");
        let down = storage(
            "status: {conditions: [{type: Ready, status: \"False\", reason: ProbeFailed, message: timeout, lastTransitionTime: \"2026-11-22T09:00:00Z\"}]}",
        );
        let (down_c, ready) = storage_condition(&p, "shop", Some(&down), now);
        assert!(!ready);
        assert_eq!(down_c.reason, "ProbeFailed");
        assert_eq!(down_c.message, "BackupStorage main: timeout");
        // Unhealthy is news once: not from NotProbedYet's point of view twice.
        let (never, _) = storage_condition(&p, "shop", Some(&storage("")), now);
        assert!(storage_turned_unhealthy(&[never], std::slice::from_ref(&down_c)).is_some());
        assert!(
            storage_turned_unhealthy(std::slice::from_ref(&down_c), std::slice::from_ref(&down_c))
                .is_none()
        );
        let up = storage(
            "status: {conditions: [{type: Ready, status: \"True\", reason: ProbeSucceeded, message: ok, lastTransitionTime: \"2026-11-22T09:00:00Z\"}]}",
        );
        let (c, ready) = storage_condition(&p, "shop", Some(&up), now);
        assert!(ready);
        assert_eq!(c.reason, "StorageReady");
    }

    #[test]
    fn ready_names_what_is_missing() {
        let now = t("2026-11-22T10:00:00Z");
        let conds = vec![condition(
            "StorageReady",
            false,
            "StorageNotFound",
            "BackupStorage main not found".into(),
            Some(1),
            now,
        )];
        let c = ready_condition(&conds, true, false, Some(1), now);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "StorageNotReady")
        );
        assert_eq!(c.message, "BackupStorage main not found");
        let c = ready_condition(&conds, true, true, Some(1), now);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Ready"));
    }

    #[test]
    fn secondary_storages_are_supported_and_an_old_unsupported_condition_goes() {
        let now = t("2026-11-22T10:00:00Z");
        let p = policy("secondaryStorageRefs: [{name: dr}]");
        let stale = condition(
            "Unsupported",
            true,
            "NotImplemented",
            "secondaryStorageRefs".into(),
            Some(1),
            now,
        );
        let mut conds = vec![stale.clone()];
        assert!(apply_unsupported(&p, &[stale], &mut conds, now).is_none());
        assert!(conds.is_empty(), "{conds:?}");
    }

    #[test]
    fn rpo_missed_is_news_only_when_it_turns_false() {
        let now = t("2026-11-22T10:00:00Z");
        let verdict = |status| RpoCondition {
            status,
            reason: "BackupOverdue",
            message: "late".into(),
            deadline: None,
            recheck_at: None,
        };
        let p = rpo_plan(verdict(ConditionStatus::False), &[], Some(2), now);
        assert_eq!(p.met, Some(false));
        assert!(p.missed_now.is_some());
        let again = rpo_plan(
            verdict(ConditionStatus::False),
            &[p.condition],
            Some(2),
            now,
        );
        assert!(again.missed_now.is_none());
        let unknown = rpo_plan(verdict(ConditionStatus::Unknown), &[], Some(2), now);
        assert_eq!(unknown.met, None);
        assert_eq!(unknown.condition.status, "Unknown");
    }

    #[test]
    fn created_runs_are_scheduled_or_catch_up() {
        let new = ScheduledRun {
            name: "nightly-1".into(),
            scheduled_time: t("2026-11-22T02:00:00Z"),
            late_by: std::time::Duration::from_secs(5),
        };
        assert_eq!(created_run_event(&new, 0).reason, "Scheduled");
        let late = ScheduledRun {
            late_by: std::time::Duration::from_secs(3600),
            ..new.clone()
        };
        let e = created_run_event(&late, 3);
        assert_eq!(e.reason, "CatchUp");
        assert!(e.note.contains("3 older missed"), "{}", e.note);
        let run = scheduled_run("shop", "nightly", &new);
        assert_eq!(run.labels()[POLICY_LABEL], "nightly");
        assert_eq!(run.spec.trigger, Trigger::Scheduled);
    }

    #[test]
    fn the_owned_status_always_sends_every_field() {
        let json = serde_json::to_value(OwnedStatus::default()).unwrap();
        for field in [
            "conditions",
            "observedGeneration",
            "lastScheduleTime",
            "nextScheduleTime",
            "lastSuccessfulRun",
            "lastFailedRun",
            "activeRuns",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(
            active_run_names(vec!["b".into(), "a".into()], Some("c".into())),
            ["a", "b", "c"]
        );
        assert_eq!(active_run_names(vec!["a".into()], Some("a".into())), ["a"]);
    }
}
