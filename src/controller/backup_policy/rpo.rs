//! The `RPOMet` condition of a BackupPolicy: is the newest successful backup recent enough?
//!
//! The objective is either explicit (`spec.rpo`, e.g. `26h`: met while the newest successful
//! backup is younger than that) or follows the schedule. Let `L` be the completion time of the
//! last successful run and `interval` the length of the schedule period that contains `L` (from
//! the fire time at or before `L` to the next one — for `0 2 * * 1-5` a Friday backup's period
//! lasts until Monday, on a DST day a daily period lasts 23 or 25 hours). The schedule-derived
//! objective is met while `now < L + interval + grace`: the next backup has its whole period plus
//! `grace` (which covers how long a backup takes) to complete. `grace` defaults to one interval,
//! i.e. twice the interval in total, as the API documents for an unset `spec.rpo`. The current
//! schedule is used, so tightening the schedule tightens the objective immediately.
//!
//! A policy that never succeeded is measured from its creation time in the same way; until that
//! deadline the condition is `Unknown` (`AwaitingFirstBackup`), then `False`
//! (`NeverSucceeded`). A suspended policy is `Unknown` (`Suspended`): it is expected to produce
//! no backups, and the condition says so instead of raising an alarm or hiding one.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::backup_policy::BackupPolicySpec;
use crate::api::common::parse_duration;
use crate::controller::backup_policy::schedule::Schedule;

/// A condition status, as in `metav1.Condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The objective is met.
    True,
    /// The objective is missed.
    False,
    /// Not evaluated or not yet decidable.
    Unknown,
}

impl ConditionStatus {
    /// The string used in `status.conditions[].status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// What the RPO evaluation needs from the policy.
#[derive(Debug, Clone, Copy)]
pub struct RpoInput {
    /// The time of evaluation.
    pub now: DateTime<Utc>,
    /// When the policy was created.
    pub created_at: DateTime<Utc>,
    /// Completion time of the newest successful run, if any.
    pub last_success: Option<DateTime<Utc>>,
    /// `spec.suspend`.
    pub suspended: bool,
    /// `spec.rpo`: an explicit objective. When set, `grace` is not used.
    pub objective: Option<Duration>,
    /// Extra time allowed beyond the schedule interval (backup duration and slack); `None`
    /// means one interval.
    pub grace: Option<Duration>,
}

/// The evaluated `RPOMet` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpoCondition {
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase reason: `WithinObjective`, `BackupOverdue`, `AwaitingFirstBackup`,
    /// `NeverSucceeded`, `Suspended` or `NoUpcomingSchedule`.
    pub reason: &'static str,
    /// Human-readable explanation with the times involved.
    pub message: String,
    /// The instant the objective is (or was) missed, when defined.
    pub deadline: Option<DateTime<Utc>>,
    /// When the condition flips by the passage of time alone (the deadline, while it is ahead).
    pub recheck_at: Option<DateTime<Utc>>,
}

/// Reads `spec.rpo` (e.g. `26h`); `Ok(None)` when unset. The error message is meant for the
/// condition (reason `InvalidRPO`).
pub fn objective_from_spec(spec: &BackupPolicySpec) -> Result<Option<Duration>, String> {
    spec.rpo
        .as_deref()
        .map(|text| {
            parse_duration(text)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("rpo {text:?} is not a duration such as 26h, 2d or 1h30m"))
        })
        .transpose()
}

/// Evaluates `RPOMet` for a policy with a valid `schedule`.
pub fn evaluate_rpo(schedule: &Schedule, input: &RpoInput) -> RpoCondition {
    if input.suspended {
        return RpoCondition {
            status: ConditionStatus::Unknown,
            reason: "Suspended",
            message: "the schedule is suspended; the recovery point objective is not evaluated"
                .to_owned(),
            deadline: None,
            recheck_at: None,
        };
    }
    let reference = input.last_success.unwrap_or(input.created_at);
    let Some(next) = schedule.next_fire_after(reference) else {
        return RpoCondition {
            status: ConditionStatus::Unknown,
            reason: "NoUpcomingSchedule",
            message: "the schedule has no fire time after the last backup".to_owned(),
            deadline: None,
            recheck_at: None,
        };
    };
    let period_start = schedule
        .latest_fire_at_or_before(reference)
        .unwrap_or(reference);
    let interval = next - period_start;
    let to_delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    let (allowed, expectation) = match input.objective {
        Some(rpo) => (
            to_delta(rpo),
            format!(
                "the recovery point objective is {}",
                HumanDuration(to_delta(rpo))
            ),
        ),
        None => {
            let grace = input.grace.map_or(interval, to_delta);
            (
                interval.checked_add(&grace).unwrap_or(TimeDelta::MAX),
                format!(
                    "the schedule expects one every {} (+{} grace)",
                    HumanDuration(interval),
                    HumanDuration(grace)
                ),
            )
        }
    };
    let deadline = reference
        .checked_add_signed(allowed)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let met = input.now < deadline;
    let (status, reason, message) = match (input.last_success, met) {
        (Some(last), true) => (
            ConditionStatus::True,
            "WithinObjective",
            format!(
                "last successful backup completed {} ago at {}; the next must complete before {}",
                HumanDuration(input.now - last),
                last.to_rfc3339(),
                deadline.to_rfc3339()
            ),
        ),
        (Some(last), false) => (
            ConditionStatus::False,
            "BackupOverdue",
            format!(
                "last successful backup completed {} ago at {}, but {expectation}; overdue since {}",
                HumanDuration(input.now - last),
                last.to_rfc3339(),
                deadline.to_rfc3339()
            ),
        ),
        (None, true) => (
            ConditionStatus::Unknown,
            "AwaitingFirstBackup",
            format!(
                "no successful backup yet; the first must complete before {}",
                deadline.to_rfc3339()
            ),
        ),
        (None, false) => (
            ConditionStatus::False,
            "NeverSucceeded",
            format!(
                "no successful backup since the policy was created {} ago; {expectation}; \
                 overdue since {}",
                HumanDuration(input.now - input.created_at),
                deadline.to_rfc3339()
            ),
        ),
    };
    RpoCondition {
        status,
        reason,
        message,
        deadline: Some(deadline),
        recheck_at: met.then_some(deadline),
    }
}

/// Formats a duration as `1d2h3m4s` (zero units omitted, seconds precision).
struct HumanDuration(TimeDelta);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.num_seconds();
        if total <= 0 {
            return write!(f, "0s");
        }
        let (d, h, m, s) = (
            total / 86_400,
            total % 86_400 / 3600,
            total % 3600 / 60,
            total % 60,
        );
        for (value, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn input(now: &str, last: Option<&str>) -> RpoInput {
        RpoInput {
            now: utc(now),
            created_at: utc("2026-11-01T00:00:00Z"),
            last_success: last.map(utc),
            suspended: false,
            objective: None,
            grace: Some(Duration::from_secs(3600)),
        }
    }

    fn daily() -> Schedule {
        Schedule::parse("0 2 * * *", Some("UTC")).unwrap()
    }

    #[test]
    fn a_recent_backup_meets_the_objective_until_interval_plus_grace() {
        let s = daily();
        let last = "2026-11-21T02:10:00Z";
        let c = evaluate_rpo(&s, &input("2026-11-22T03:09:59Z", Some(last)));
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.reason, "WithinObjective");
        assert_eq!(c.deadline, Some(utc("2026-11-22T03:10:00Z")));
        assert_eq!(c.recheck_at, c.deadline);
        assert!(
            c.message.contains("completed 1d59m59s ago"),
            "{}",
            c.message
        );

        let c = evaluate_rpo(&s, &input("2026-11-22T03:10:00Z", Some(last)));
        assert_eq!(c.status, ConditionStatus::False);
        assert_eq!(c.reason, "BackupOverdue");
        assert_eq!(c.recheck_at, None);
        assert!(
            c.message.contains("expects one every 1d (+1h grace)"),
            "{}",
            c.message
        );
    }

    #[test]
    fn the_interval_is_the_schedule_period_at_the_last_backup() {
        // Weekdays only: Friday's backup is good until Monday + grace.
        let s = Schedule::parse("0 2 * * 1-5", Some("UTC")).unwrap();
        let friday = "2026-11-20T02:30:00Z";
        let c = evaluate_rpo(&s, &input("2026-11-23T03:00:00Z", Some(friday)));
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.deadline, Some(utc("2026-11-23T03:30:00Z")));
        // A Tuesday backup is good for one day only.
        let c = evaluate_rpo(
            &s,
            &input("2026-11-25T03:31:00Z", Some("2026-11-24T02:30:00Z")),
        );
        assert_eq!(c.status, ConditionStatus::False);
    }

    #[test]
    fn dst_days_have_23_and_25_hour_periods() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        let mut i = input("2026-03-29T00:00:00Z", Some("2026-03-28T01:05:00Z"));
        i.grace = Some(Duration::ZERO);
        // The period from 02:00 CET on the 28th to 03:00 CEST (gap end) on the 29th is 24h;
        // the 2026-10-25 period (02:00 CEST -> 02:00 CET) is 25h.
        assert_eq!(
            evaluate_rpo(&s, &i).deadline,
            Some(utc("2026-03-29T01:05:00Z"))
        );
        i.last_success = Some(utc("2026-10-25T00:05:00Z"));
        i.now = utc("2026-10-25T12:00:00Z");
        assert_eq!(
            evaluate_rpo(&s, &i).deadline,
            Some(utc("2026-10-26T01:05:00Z"))
        );
    }

    #[test]
    fn never_succeeded_is_unknown_then_false() {
        let s = daily();
        let c = evaluate_rpo(&s, &input("2026-11-01T12:00:00Z", None));
        assert_eq!(c.status, ConditionStatus::Unknown);
        assert_eq!(c.reason, "AwaitingFirstBackup");
        // Created at midnight: period 02:00 (Oct 31) -> 02:00 (Nov 1) = 24h, + 1h grace.
        assert_eq!(c.deadline, Some(utc("2026-11-02T01:00:00Z")));
        assert_eq!(c.recheck_at, c.deadline);

        let c = evaluate_rpo(&s, &input("2026-11-03T00:00:00Z", None));
        assert_eq!(c.status, ConditionStatus::False);
        assert_eq!(c.reason, "NeverSucceeded");
        assert!(c.message.contains("created 2d ago"), "{}", c.message);
    }

    #[test]
    fn an_explicit_objective_replaces_the_schedule_interval() {
        let mut i = input("2026-11-22T04:00:00Z", Some("2026-11-21T02:10:00Z"));
        i.objective = Some(Duration::from_secs(26 * 3600));
        let c = evaluate_rpo(&daily(), &i);
        assert_eq!(c.status, ConditionStatus::True);
        assert_eq!(c.deadline, Some(utc("2026-11-22T04:10:00Z")));
        i.now = utc("2026-11-22T04:10:00Z");
        let c = evaluate_rpo(&daily(), &i);
        assert_eq!(c.reason, "BackupOverdue");
        assert!(c.message.contains("objective is 1d2h"), "{}", c.message);
    }

    #[test]
    fn the_default_grace_is_one_interval() {
        let mut i = input("2026-11-23T02:09:00Z", Some("2026-11-21T02:10:00Z"));
        i.grace = None;
        let c = evaluate_rpo(&daily(), &i);
        assert_eq!(c.deadline, Some(utc("2026-11-23T02:10:00Z")));
        assert_eq!(c.status, ConditionStatus::True);
    }

    #[test]
    fn suspended_policies_are_not_evaluated() {
        let mut i = input("2027-01-01T00:00:00Z", Some("2026-11-01T02:00:00Z"));
        i.suspended = true;
        let c = evaluate_rpo(&daily(), &i);
        assert_eq!(c.status, ConditionStatus::Unknown);
        assert_eq!(c.reason, "Suspended");
        assert_eq!(c.recheck_at, None);
        assert_eq!(c.status.as_str(), "Unknown");
    }

    #[test]
    fn objectives_from_the_spec() {
        let mut spec: BackupPolicySpec = serde_yaml::from_str(
            "source: {postgres: {host: db, database: shop, user: u}}\nstorageRef: {name: s}\nschedule: \"@daily\"\n",
        )
        .unwrap();
        assert_eq!(objective_from_spec(&spec), Ok(None));
        spec.rpo = Some("1d2h".into());
        assert_eq!(
            objective_from_spec(&spec),
            Ok(Some(Duration::from_secs(26 * 3600)))
        );
        spec.rpo = Some("soon".into());
        assert!(objective_from_spec(&spec).unwrap_err().contains("\"soon\""));
    }

    #[test]
    fn human_durations() {
        assert_eq!(HumanDuration(TimeDelta::seconds(0)).to_string(), "0s");
        assert_eq!(HumanDuration(TimeDelta::seconds(-5)).to_string(), "0s");
        assert_eq!(
            HumanDuration(TimeDelta::seconds(90_061)).to_string(),
            "1d1h1m1s"
        );
        assert_eq!(HumanDuration(TimeDelta::hours(25)).to_string(), "1d1h");
    }
}
