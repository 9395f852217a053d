//! Cron schedules in an IANA time zone, and the pure scheduling decision of the BackupPolicy
//! reconciler.
//!
//! # Syntax
//!
//! `spec.schedule` is a standard 5-field cron expression (`minute hour day-of-month month
//! day-of-week`), parsed by the [`croner`] crate: ranges, lists, steps, month and weekday names,
//! and croner's extensions (`L`, `#`, `W`, `+`) are accepted; day-of-month and day-of-week are
//! OR-ed as in Vixie cron and Kubernetes CronJobs. The descriptors `@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` are accepted. A seconds or year
//! field, `@every`, and `TZ=`/`CRON_TZ=` prefixes are refused with a message saying what to
//! write instead. `spec.timeZone` is an IANA name (`Europe/Berlin`); empty means UTC.
//!
//! # Daylight saving time
//!
//! Fire times are wall-clock times in the policy's time zone. Around a DST transition a wall
//! clock time may not exist (spring forward) or exist twice (fall back). What happens then
//! depends on the hour field, as in Vixie cron ([`DstHandling`]):
//!
//! - **Explicit hours** (`30 2 * * *`, `0 1,13 * * *`, `0 9-17 * * 1-5`): the schedule names
//!   wall-clock times. A time inside a spring-forward gap fires **once, at the first instant after
//!   the gap** (a 02:30 backup in America/New_York runs at 03:00 EDT on the DST day); several
//!   times inside one gap collapse into that one run. A time that occurs twice in a fall-back
//!   overlap fires **once**, at its first occurrence.
//! - **Wildcard hours** (`*/15 * * * *`, `0 * * * *`, `0 */2 * * *`): the schedule is an
//!   interval. Times inside a gap do not exist and are skipped (the next interval comes soon);
//!   times in an overlap fire in both passes, because real time passed between them.
//!
//! This deliberately differs from Kubernetes CronJobs, whose cron library (robfig/cron) silently
//! *skips* a fixed-time job that falls into a spring-forward gap (robfig/cron#541) and runs it
//! *twice* in a fall-back overlap (kubernetes/kubernetes#121594: a `0 2 * * *` Europe/Berlin
//! CronJob ran twice and collided with a running restore). It matches ISC/Vixie cron
//! (`cron(8)`: jobs in a skipped interval run immediately, repeated times are not re-run). For a
//! backup operator a skipped nightly backup is a missed restore point (and `RPOMet=False`), and
//! `0 2 * * *` in Europe/Berlin — the most common backup schedule — falls into the gap every
//! March.
//!
//! # Planning
//!
//! [`plan`] turns the schedule, the current time and the policy's scheduling settings into a
//! [`SchedulePlan`]: whether to create a run now (at most one, the most recent missed time — no
//! backlog storm after an outage), which active runs to replace, why a time was skipped, and
//! when to reconcile next (the next fire time; no polling).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use kube::ResourceExt;

use crate::api::BackupRun;
use crate::api::backup_policy::BackupPolicySpec;
use crate::api::backup_run::{BackupRunPhase, Trigger};
use crate::api::common::time_to_chrono;
use crate::jobs::naming::{MAX_LABEL_LEN, bounded_name};

/// The longest backward clock change (fall-back) the fire-time search allows for. Real zones
/// move their clocks back by at most two hours (Antarctica/Troll); forward jumps of any size are
/// handled exactly through the zone's gap information.
const MAX_BACKWARD_SHIFT: TimeDelta = TimeDelta::hours(3);

/// The longest delay [`plan`] asks to be requeued after. Schedules can be years apart
/// (`0 0 29 2 *`); re-planning once a day is idempotent and keeps timers in a sane range.
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 60 * 60);

/// How many missed fire times [`plan`] counts before it stops counting (for the Event message).
pub const MISSED_COUNT_CAP: u32 = 100;

/// The names of the five cron fields, in order, for error messages.
const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// Why a schedule or time zone was refused. The [`reason`](ScheduleError::reason) is meant for
/// a condition's `reason` field, the `Display` text for its `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression cannot be parsed or never fires.
    #[error("invalid schedule {expression:?}: {detail}")]
    InvalidSchedule {
        /// The expression as written in the spec.
        expression: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The time zone is not a known IANA time zone name.
    #[error("unknown time zone {name:?}{}", suggestion_text(.suggestion))]
    InvalidTimeZone {
        /// The name as written in the spec.
        name: String,
        /// The correctly spelled name when the input differs only in letter case.
        suggestion: Option<String>,
    },
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(name) => format!(" (did you mean {name:?}? time zone names are case-sensitive)"),
        None => " (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")".to_owned(),
    }
}

impl ScheduleError {
    /// A CamelCase reason for a `ScheduleValid=False` condition or an Event.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::InvalidSchedule { .. } => "InvalidSchedule",
            ScheduleError::InvalidTimeZone { .. } => "InvalidTimeZone",
        }
    }
}

/// How a schedule treats wall-clock times that a DST transition skips or repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstHandling {
    /// The hour field lists explicit hours: gap times fire once at the end of the gap, repeated
    /// times fire once at their first occurrence.
    WallClock,
    /// The hour field is a wildcard (`*` or `*/n`): gap times are skipped, repeated times fire
    /// in both passes.
    Interval,
}

/// A validated cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    time_zone: Tz,
    dst: DstHandling,
}

impl Schedule {
    /// Parses and validates `expression` (5-field cron or a descriptor such as `@daily`) in
    /// `time_zone` (IANA name; `None` or empty means UTC).
    pub fn parse(expression: &str, time_zone: Option<&str>) -> Result<Self, ScheduleError> {
        let time_zone = parse_time_zone(time_zone)?;
        let cron = parse_cron(expression)?;
        let dst = if cron.pattern.hours.from_wildcard {
            DstHandling::Interval
        } else {
            DstHandling::WallClock
        };
        let schedule = Schedule {
            expression: expression.to_owned(),
            cron,
            time_zone,
            dst,
        };
        // A pattern such as `0 0 30 2 *` parses but never matches a real date.
        let reference = NaiveDateTime::new(
            chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date"),
            chrono::NaiveTime::MIN,
        );
        if schedule.naive_next(reference).is_none() {
            return Err(ScheduleError::InvalidSchedule {
                expression: expression.to_owned(),
                detail: "it never fires (no date matches the day-of-month, month and \
                         day-of-week fields)"
                    .to_owned(),
            });
        }
        Ok(schedule)
    }

    /// Parses `spec.schedule` in `spec.timeZone` of a BackupPolicy.
    pub fn from_policy(spec: &BackupPolicySpec) -> Result<Self, ScheduleError> {
        Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the schedule's wall-clock times are in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// How this schedule behaves around DST transitions (decided by its hour field).
    pub fn dst_handling(&self) -> DstHandling {
        self.dst
    }

    /// The first fire time strictly after `t`, or `None` if the schedule never fires again.
    pub fn next_fire_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.local(t);
        let first = self.naive_next(local)?;
        // Fast path: no clock moved back near `t` or near the answer, so the first wall-clock
        // match after `t` is also the first instant.
        if let Some(candidate) = self.instants(first).into_iter().flatten().find(|i| *i > t)
            && self.same_offset(t, t + MAX_BACKWARD_SHIFT)
            && self.same_offset(candidate - MAX_BACKWARD_SHIFT, candidate)
        {
            return Some(candidate);
        }
        // Slow path (a few hours around a transition): walk the wall clock from far enough back
        // to see every wall-clock time whose instant may lie after `t`.
        let mut best: Option<DateTime<Utc>> = None;
        let mut cursor = local - MAX_BACKWARD_SHIFT - TimeDelta::seconds(1);
        while let Some(naive) = self.naive_next(cursor) {
            if let Some(b) = best
                && naive > self.local(b) + MAX_BACKWARD_SHIFT
            {
                break;
            }
            for instant in self.instants(naive).into_iter().flatten() {
                if instant > t && best.is_none_or(|b| instant < b) {
                    best = Some(instant);
                }
            }
            cursor = naive;
        }
        best
    }

    /// The latest fire time at or before `t`, or `None` if the schedule never fired before.
    pub fn latest_fire_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.local(t);
        if let Some(first) = self.naive_prev_inclusive(local)
            && let Some(candidate) = self
                .instants(first)
                .into_iter()
                .flatten()
                .filter(|i| *i <= t)
                .max()
            && self.same_offset(t - MAX_BACKWARD_SHIFT, t)
            && self.same_offset(candidate, candidate + MAX_BACKWARD_SHIFT)
        {
            return Some(candidate);
        }
        let mut best: Option<DateTime<Utc>> = None;
        let mut cursor = local + MAX_BACKWARD_SHIFT + TimeDelta::seconds(1);
        while let Some(naive) = self.naive_prev_exclusive(cursor) {
            if let Some(b) = best
                && naive < self.local(b) - MAX_BACKWARD_SHIFT
            {
                break;
            }
            for instant in self.instants(naive).into_iter().flatten() {
                if instant <= t && best.is_none_or(|b| instant > b) {
                    best = Some(instant);
                }
            }
            cursor = naive;
        }
        best
    }

    /// The latest fire time strictly before `t`.
    pub fn latest_fire_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.latest_fire_at_or_before(t - TimeDelta::nanoseconds(1))
    }

    /// The wall-clock time of `t` in the schedule's zone.
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.time_zone).naive_local()
    }

    fn same_offset(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
        let offset = |t: DateTime<Utc>| {
            self.time_zone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
        };
        offset(a) == offset(b)
    }

    /// The instants at which the wall-clock match `local` fires, earliest first.
    fn instants(&self, local: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        use chrono::LocalResult;
        match self.time_zone.from_local_datetime(&local) {
            LocalResult::Single(t) => [Some(t.to_utc()), None],
            LocalResult::Ambiguous(first, second) => match self.dst {
                DstHandling::WallClock => [Some(first.to_utc()), None],
                DstHandling::Interval => [Some(first.to_utc()), Some(second.to_utc())],
            },
            LocalResult::None => match self.dst {
                DstHandling::WallClock => [
                    GapInfo::new(&local, &self.time_zone)
                        .and_then(|gap| gap.end)
                        .map(|end| end.to_utc()),
                    None,
                ],
                DstHandling::Interval => [None, None],
            },
        }
    }

    /// The first wall-clock match strictly after `local`.
    fn naive_next(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&local, false).ok()
    }

    /// The last wall-clock match at or before `local`.
    fn naive_prev_inclusive(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_previous_occurrence(&local, true).ok()
    }

    /// The last wall-clock match strictly before `local`.
    fn naive_prev_exclusive(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_previous_occurrence(&local, false).ok()
    }
}

/// Parses an IANA time zone name; `None` or empty means UTC.
pub fn parse_time_zone(name: Option<&str>) -> Result<Tz, ScheduleError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(Tz::UTC);
    };
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::InvalidTimeZone {
            name: name.to_owned(),
            suggestion: chrono_tz::TZ_VARIANTS
                .iter()
                .map(|tz| tz.name())
                .find(|known| known.eq_ignore_ascii_case(name.trim()))
                .map(str::to_owned),
        })
}

fn parse_cron(expression: &str) -> Result<Cron, ScheduleError> {
    let invalid = |detail: String| ScheduleError::InvalidSchedule {
        expression: expression.to_owned(),
        detail,
    };
    let trimmed = expression.trim();
    if trimmed.is_empty() {
        return Err(invalid("the schedule is empty".to_owned()));
    }
    let upper = trimmed.to_ascii_uppercase();
    if upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=") {
        return Err(invalid(
            "a time zone inside the schedule is not supported; set spec.timeZone instead"
                .to_owned(),
        ));
    }
    let five_fields = if let Some(descriptor) = trimmed.strip_prefix('@') {
        match descriptor.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            other if other.starts_with("every") => {
                return Err(invalid(
                    "@every is not supported; write the interval as a cron expression \
                     (e.g. \"*/30 * * * *\")"
                        .to_owned(),
                ));
            }
            _ => {
                return Err(invalid(
                    "unknown descriptor; use @yearly, @annually, @monthly, @weekly, @daily, \
                     @midnight or @hourly"
                        .to_owned(),
                ));
            }
        }
        .to_owned()
    } else {
        trimmed.to_owned()
    };
    let fields: Vec<&str> = five_fields.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(invalid(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        )));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    parser.parse(&five_fields).map_err(|err| {
        // Point at the field: the first one whose replacement by `*` makes the rest parse.
        let culprit = (0..fields.len()).find(|&i| {
            let mut probe = fields.clone();
            probe[i] = "*";
            parser.parse(&probe.join(" ")).is_ok()
        });
        match culprit {
            Some(i) => invalid(format!("{} field {:?}: {err}", FIELD_NAMES[i], fields[i])),
            None => invalid(err.to_string()),
        }
    })
}

/// The name of the BackupRun a policy creates for `scheduled_time`:
/// `<policy>-<yyyymmddhhmm>` with the time in UTC (unique per minute, sortable, and never
/// ambiguous across DST). Long policy names are truncated and hashed so the name stays a valid
/// ≤ 63 character name.
pub fn scheduled_run_name(policy: &str, scheduled_time: DateTime<Utc>) -> String {
    bounded_name(
        policy,
        &scheduled_time.format("%Y%m%d%H%M").to_string(),
        MAX_LABEL_LEN,
    )
}

/// `spec.concurrencyPolicy` (the API's type): what the schedule does when a fire time comes
/// while earlier runs of the policy are still active. See [`plan`] for the exact semantics.
pub use crate::api::backup_policy::ConcurrencyPolicy;

/// A BackupRun of the policy that has not finished yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveRun {
    /// The BackupRun's name.
    pub name: String,
    /// The fire time it was created for; `None` for a manual run.
    pub scheduled_time: Option<DateTime<Utc>>,
}

impl ActiveRun {
    /// The active-run view of `run`, or `None` when it has finished. Only scheduled runs carry
    /// their fire time (`spec.scheduledTime` with `trigger: Scheduled`).
    pub fn from_run(run: &BackupRun) -> Option<Self> {
        if run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(BackupRunPhase::is_finished)
        {
            return None;
        }
        Some(ActiveRun {
            name: run.name_any(),
            scheduled_time: (run.spec.trigger == Trigger::Scheduled)
                .then(|| run.spec.scheduled_time.as_ref().map(time_to_chrono))
                .flatten(),
        })
    }
}

/// The policy's scheduling settings and state, as read from the API.
#[derive(Debug, Clone)]
pub struct ScheduleInput<'a> {
    /// The BackupPolicy's name (prefix of the run names).
    pub policy_name: &'a str,
    /// When the policy was created: fire times before it are never run.
    pub created_at: DateTime<Utc>,
    /// `status.lastScheduleTime`: the fire time of the last run the schedule created.
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// `spec.suspend`.
    pub suspend: bool,
    /// `spec.startingDeadlineSeconds`: a fire time missed by more than this is not run.
    /// (The API's `i64` converts with `u64::try_from(..).ok()`; it is validated ≥ 1.)
    pub starting_deadline_seconds: Option<u64>,
    /// `spec.concurrencyPolicy`.
    pub concurrency_policy: ConcurrencyPolicy,
    /// The policy's runs that are Pending or Running (scheduled and manual).
    pub active_runs: &'a [ActiveRun],
}

/// A BackupRun the schedule wants created now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    /// Its deterministic name ([`scheduled_run_name`]). Creating it twice yields
    /// `AlreadyExists`, which the reconciler treats as success.
    pub name: String,
    /// The fire time it is for (goes to `status.lastScheduleTime` once created).
    pub scheduled_time: DateTime<Utc>,
    /// How late it starts relative to its fire time (large after an outage: a catch-up run).
    pub late_by: Duration,
}

/// Fire times that passed without a run and will never get one (counted for the Event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MissedRuns {
    /// How many, counted up to [`MISSED_COUNT_CAP`].
    pub count: u32,
    /// `true` when there were more than `count`.
    pub capped: bool,
}

/// Why the schedule did not create a run for the most recent fire time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `spec.suspend` is true.
    Suspended,
    /// `concurrencyPolicy: Forbid` and these runs are still active.
    ConcurrencyForbidden {
        /// Fire time that was skipped.
        scheduled_time: DateTime<Utc>,
        /// Names of the active runs.
        active: Vec<String>,
    },
    /// The fire time is older than `startingDeadlineSeconds`.
    MissedStartingDeadline {
        /// Fire time that was skipped.
        scheduled_time: DateTime<Utc>,
        /// The configured deadline.
        deadline_seconds: u64,
    },
}

impl SkipReason {
    /// A CamelCase reason for an Event.
    pub fn reason(&self) -> &'static str {
        match self {
            SkipReason::Suspended => "Suspended",
            SkipReason::ConcurrencyForbidden { .. } => "ConcurrencyForbidden",
            SkipReason::MissedStartingDeadline { .. } => "MissedSchedule",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Suspended => write!(f, "the schedule is suspended"),
            SkipReason::ConcurrencyForbidden {
                scheduled_time,
                active,
            } => write!(
                f,
                "skipped the run for {} because concurrencyPolicy is Forbid and {} still active",
                scheduled_time.to_rfc3339(),
                match active.as_slice() {
                    [one] => format!("run {one} is"),
                    many => format!("runs {} are", many.join(", ")),
                }
            ),
            SkipReason::MissedStartingDeadline {
                scheduled_time,
                deadline_seconds,
            } => write!(
                f,
                "missed the run for {}: it is more than startingDeadlineSeconds ({deadline_seconds}) \
                 late",
                scheduled_time.to_rfc3339()
            ),
        }
    }
}

/// The scheduling decision for one reconcile of a BackupPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulePlan {
    /// The run to create now, if any (never more than one).
    pub create_run: Option<ScheduledRun>,
    /// Active scheduled runs to cancel first (`concurrencyPolicy: Replace`).
    pub replace_active: Vec<String>,
    /// Why the most recent fire time gets no run, if it does not.
    pub skip_reason: Option<SkipReason>,
    /// Older fire times that passed without a run (downtime); they are not run.
    pub missed: MissedRuns,
    /// The next fire time after now (`status.nextScheduleTime`); `None` when suspended or when
    /// the schedule never fires again.
    pub next_schedule_time: Option<DateTime<Utc>>,
    /// When to reconcile again: until the next fire time, at most [`MAX_REQUEUE`]; `None` means
    /// only a change to the policy or its runs needs a new reconcile.
    pub requeue_after: Option<Duration>,
}

/// Decides what the schedule does at `now`.
///
/// - Suspended: nothing, no requeue (un-suspending is a spec change that triggers a reconcile).
/// - The fire times in `(max(lastScheduleTime or creation), now]` are the missed ones. Only the
///   most recent is a candidate (at most one catch-up run, never a storm); the older ones are
///   reported in [`SchedulePlan::missed`]. With `startingDeadlineSeconds`, the candidate is
///   dropped when it is more than that late.
/// - If an active run already exists for the candidate (status not yet updated), nothing new.
/// - Concurrency: `Forbid` skips while any run (manual or scheduled) is active and keeps the
///   fire time pending (it still runs when the active run ends, within the deadline);
///   `Replace` cancels active scheduled runs; `Allow` starts alongside.
pub fn plan(schedule: &Schedule, now: DateTime<Utc>, input: &ScheduleInput<'_>) -> SchedulePlan {
    let mut plan = SchedulePlan {
        create_run: None,
        replace_active: Vec::new(),
        skip_reason: None,
        missed: MissedRuns::default(),
        next_schedule_time: None,
        requeue_after: None,
    };
    if input.suspend {
        plan.skip_reason = Some(SkipReason::Suspended);
        return plan;
    }
    plan.next_schedule_time = schedule.next_fire_after(now);
    plan.requeue_after = plan.next_schedule_time.map(|next| {
        (next - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_REQUEUE)
    });

    let earliest = input
        .last_schedule_time
        .map_or(input.created_at, |last| last.max(input.created_at));
    let Some(candidate) = schedule
        .latest_fire_at_or_before(now)
        .filter(|t| *t > earliest)
    else {
        return plan;
    };
    plan.missed = count_missed(schedule, earliest, candidate);

    let late_by = (now - candidate).to_std().unwrap_or(Duration::ZERO);
    if let Some(deadline_seconds) = input.starting_deadline_seconds
        && late_by > Duration::from_secs(deadline_seconds)
    {
        plan.skip_reason = Some(SkipReason::MissedStartingDeadline {
            scheduled_time: candidate,
            deadline_seconds,
        });
        return plan;
    }
    if input
        .active_runs
        .iter()
        .any(|run| run.scheduled_time == Some(candidate))
    {
        return plan;
    }
    match input.concurrency_policy {
        ConcurrencyPolicy::Forbid if !input.active_runs.is_empty() => {
            plan.skip_reason = Some(SkipReason::ConcurrencyForbidden {
                scheduled_time: candidate,
                active: input.active_runs.iter().map(|r| r.name.clone()).collect(),
            });
            return plan;
        }
        ConcurrencyPolicy::Replace => {
            plan.replace_active = input
                .active_runs
                .iter()
                .filter(|run| run.scheduled_time.is_some())
                .map(|run| run.name.clone())
                .collect();
        }
        ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Allow => {}
    }
    plan.create_run = Some(ScheduledRun {
        name: scheduled_run_name(input.policy_name, candidate),
        scheduled_time: candidate,
        late_by,
    });
    plan
}

/// Counts fire times in `(earliest, latest)`, up to [`MISSED_COUNT_CAP`].
fn count_missed(schedule: &Schedule, earliest: DateTime<Utc>, latest: DateTime<Utc>) -> MissedRuns {
    let mut missed = MissedRuns::default();
    let mut cursor = latest;
    while let Some(previous) = schedule.latest_fire_before(cursor) {
        if previous <= earliest {
            break;
        }
        if missed.count == MISSED_COUNT_CAP {
            missed.capped = true;
            break;
        }
        missed.count += 1;
        cursor = previous;
    }
    missed
}

#[cfg(test)]
mod tests;
