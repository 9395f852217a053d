//! Retention planning: which backups to keep (grandfather-father-son buckets in the policy's
//! time zone, pins, Object Lock, `maxAge`) and, from that, which artifacts and BackupRun objects
//! to delete, in which order.
//!
//! # Keep rules (as restic's `forget` does it)
//!
//! Successful runs are ordered newest first. Each rule is evaluated **independently** over that
//! whole list, and a run is kept when **any** rule keeps it; the counts are never summed into one
//! number (`keepDaily: 7` + `keepWeekly: 4` keeps at most 11 runs, usually fewer because the
//! newest run of a week is often also the newest of a day):
//!
//! - `keepLast: n` keeps the n newest runs.
//! - `keepDaily` / `keepWeekly` / `keepMonthly` / `keepYearly: n` look at the run's completion
//!   time in the **policy's time zone** and bucket it by calendar day, ISO 8601 week (`2026-W53`
//!   runs from Monday 2026-12-28 to Sunday 2027-01-03), month or year. The n most recent buckets
//!   *that contain runs* each keep their newest run. Buckets without runs do not count, so a
//!   week without backups does not eat into `keepWeekly`.
//! - A policy without any positive keep rule keeps every run (retention by `maxAge` only, or none
//!   at all): a missing rule never means "delete everything".
//!
//! # maxAge, pins and Object Lock
//!
//! - `maxAge` caps age: a run whose age reached `maxAge` is pruned **even if a keep rule selects
//!   it** (keep rules say what to keep, `maxAge` says how long at most). The prune reason lists
//!   the rules it overrode. One exception guards against data loss: the **newest** successful run
//!   is never pruned by `maxAge`, so a schedule that stopped working cannot age out the last
//!   restore point.
//! - Pinned runs (`dataguardian.io/pin`) are never pruned, by anything. They still count in the
//!   buckets like any other run.
//! - A run that would be pruned but whose artifact is Object-Locked (`retainUntil` in the future)
//!   is kept with reason `ObjectLocked` until then; [`RetentionPlan::requeue_at`] says when to
//!   look again (the earliest such expiry, or the earliest time a kept run reaches `maxAge`).
//!
//! # Deleting
//!
//! [`run_history_plan`] turns the retention verdicts and the `runHistory` limits into ordered
//! cleanup actions per run: manifests first (an artifact without a manifest is not a backup, so
//! a half-deleted artifact is never mistaken for one), then the data, then the BackupRun
//! object.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::api::backup_policy::Retention;
use crate::api::common::parse_duration;
use crate::controller::common::run_cache::FinishedRun;

/// A successful backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRun {
    /// The BackupRun's name.
    pub name: String,
    /// When the backup completed (UTC).
    pub completed_at: DateTime<Utc>,
    /// Whether the run carries the `dataguardian.io/pin` label.
    pub pinned: bool,
    /// Object Lock retain-until date of its artifact, if the storage locks objects.
    pub retain_until: Option<DateTime<Utc>>,
}

/// `spec.retention` of a BackupPolicy. `None` and `Some(0)` both mean "rule not used".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the n newest runs.
    pub keep_last: Option<u32>,
    /// Keep the newest run of each of the n most recent days with runs.
    pub keep_daily: Option<u32>,
    /// Keep the newest run of each of the n most recent ISO weeks with runs.
    pub keep_weekly: Option<u32>,
    /// Keep the newest run of each of the n most recent months with runs.
    pub keep_monthly: Option<u32>,
    /// Keep the newest run of each of the n most recent years with runs.
    pub keep_yearly: Option<u32>,
    /// Prune runs whose age reached this, whatever the keep rules say (see the module docs).
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    fn has_keep_rules(&self) -> bool {
        [
            self.keep_last,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .into_iter()
        .any(|n| n.unwrap_or(0) > 0)
    }
}

/// Why a run is kept. `Display` gives the short text used in status and Events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// One of the `keepLast` newest runs (`rank` 1 = newest).
    Last {
        /// Position among the newest runs, from 1.
        rank: u32,
        /// The `keepLast` value.
        of: u32,
    },
    /// Newest run of this day (policy time zone).
    Daily(NaiveDate),
    /// Newest run of this ISO week (policy time zone).
    Weekly {
        /// ISO week-numbering year.
        year: i32,
        /// ISO week, 1..=53.
        week: u32,
    },
    /// Newest run of this month (policy time zone).
    Monthly {
        /// Calendar year.
        year: i32,
        /// Month, 1..=12.
        month: u32,
    },
    /// Newest run of this year (policy time zone).
    Yearly(i32),
    /// Carries the pin label.
    Pinned,
    /// Its artifact cannot be deleted before this time.
    ObjectLocked {
        /// The Object Lock retain-until date.
        until: DateTime<Utc>,
    },
    /// The newest successful backup, which `maxAge` never prunes.
    NewestBackup,
    /// The policy has no keep rules: every run is kept (subject to `maxAge`).
    NoKeepRules,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Last { rank, of } => write!(f, "last {of} (#{rank})"),
            KeepReason::Daily(day) => write!(f, "daily {day}"),
            KeepReason::Weekly { year, week } => write!(f, "weekly {year:04}-W{week:02}"),
            KeepReason::Monthly { year, month } => write!(f, "monthly {year:04}-{month:02}"),
            KeepReason::Yearly(year) => write!(f, "yearly {year:04}"),
            KeepReason::Pinned => write!(f, "pinned"),
            KeepReason::ObjectLocked { until } => {
                write!(f, "object-locked until {}", until.to_rfc3339())
            }
            KeepReason::NewestBackup => write!(f, "newest backup (never pruned by maxAge)"),
            KeepReason::NoKeepRules => write!(f, "no keep rules"),
        }
    }
}

/// Why a run is pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneReason {
    /// No keep rule selects it.
    NotSelected,
    /// Its age reached `maxAge`; `overridden` lists the keep rules that selected it.
    MaxAgeExceeded {
        /// The run's age at planning time.
        age: Duration,
        /// The policy's `maxAge`.
        max_age: Duration,
        /// Keep rules that would otherwise have kept it.
        overridden: Vec<KeepReason>,
    },
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneReason::NotSelected => write!(f, "not selected by any keep rule"),
            PruneReason::MaxAgeExceeded {
                age,
                max_age,
                overridden,
            } => {
                write!(
                    f,
                    "age {}s reached maxAge {}s",
                    age.as_secs(),
                    max_age.as_secs()
                )?;
                if !overridden.is_empty() {
                    let rules: Vec<String> = overridden.iter().map(ToString::to_string).collect();
                    write!(f, " (overrides {})", rules.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// The verdict for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it, for these reasons (never empty).
    Keep(Vec<KeepReason>),
    /// Delete its artifact and then the run.
    Prune(PruneReason),
}

/// The verdict for one run, with its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDecision {
    /// The BackupRun's name.
    pub name: String,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
    /// Keep or prune, and why.
    pub verdict: Verdict,
}

impl RunDecision {
    /// Whether the run's artifact must be kept.
    pub fn is_kept(&self) -> bool {
        matches!(self.verdict, Verdict::Keep(_))
    }
}

/// The result of [`plan_retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// One decision per input run, newest first.
    pub decisions: Vec<RunDecision>,
    /// When the plan changes by the passage of time alone (an Object Lock expires on a run
    /// that is only kept for its lock, or a kept run reaches `maxAge`); `None` if never.
    pub requeue_at: Option<DateTime<Utc>>,
}

impl RetentionPlan {
    /// Names of the runs to prune, oldest first.
    pub fn pruned(&self) -> impl Iterator<Item = &str> {
        self.decisions
            .iter()
            .rev()
            .filter(|d| !d.is_kept())
            .map(|d| d.name.as_str())
    }

    /// Names of the runs to keep, newest first.
    pub fn kept(&self) -> impl Iterator<Item = &str> {
        self.decisions
            .iter()
            .filter(|d| d.is_kept())
            .map(|d| d.name.as_str())
    }
}

/// Calendar buckets of the GFS rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    fn reason(self, local: &DateTime<Tz>) -> KeepReason {
        match self {
            Bucket::Day => KeepReason::Daily(local.date_naive()),
            Bucket::Week => {
                let week = local.iso_week();
                KeepReason::Weekly {
                    year: week.year(),
                    week: week.week(),
                }
            }
            Bucket::Month => KeepReason::Monthly {
                year: local.year(),
                month: local.month(),
            },
            Bucket::Year => KeepReason::Yearly(local.year()),
        }
    }
}

/// Decides, for every successful run, whether its artifact is kept or pruned, and why.
///
/// `time_zone` is the policy's time zone (the buckets' calendar). Deterministic: runs with equal
/// completion times are ordered by name (the greater name counts as newer).
pub fn plan_retention(
    runs: &[RetentionRun],
    policy: &RetentionPolicy,
    time_zone: Tz,
    now: DateTime<Utc>,
) -> RetentionPlan {
    let mut order: Vec<&RetentionRun> = runs.iter().collect();
    order.sort_by(|a, b| {
        b.completed_at
            .cmp(&a.completed_at)
            .then_with(|| b.name.cmp(&a.name))
    });

    // Rule reasons per run, in `order` positions.
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); order.len()];
    if let Some(n) = policy.keep_last.filter(|n| *n > 0) {
        for (rank, slot) in reasons.iter_mut().take(n as usize).enumerate() {
            slot.push(KeepReason::Last {
                rank: rank as u32 + 1,
                of: n,
            });
        }
    }
    for (count, bucket) in [
        (policy.keep_daily, Bucket::Day),
        (policy.keep_weekly, Bucket::Week),
        (policy.keep_monthly, Bucket::Month),
        (policy.keep_yearly, Bucket::Year),
    ] {
        let Some(mut remaining) = count.filter(|n| *n > 0) else {
            continue;
        };
        // Buckets are contiguous in time order except where a clock change crosses a bucket
        // boundary (a fall-back from 00:30 to 23:30 revisits the previous day), so kept buckets
        // are remembered as a set rather than as "the last one".
        let mut kept_buckets: HashSet<KeepReason> = HashSet::new();
        for (i, run) in order.iter().enumerate() {
            let key = bucket.reason(&run.completed_at.with_timezone(&time_zone));
            if kept_buckets.contains(&key) {
                continue; // an older run of a bucket already kept
            }
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            kept_buckets.insert(key.clone());
            reasons[i].push(key);
        }
    }

    let has_rules = policy.has_keep_rules();
    let mut requeue_at: Option<DateTime<Utc>> = None;
    let mut requeue = |t: DateTime<Utc>| {
        if requeue_at.is_none_or(|r| t < r) {
            requeue_at = Some(t);
        }
    };
    let decisions = order
        .iter()
        .zip(reasons)
        .enumerate()
        .map(|(position, (run, mut keep))| {
            if !has_rules {
                keep.push(KeepReason::NoKeepRules);
            }
            let lock = run.retain_until.filter(|until| *until > now);
            let age = (now - run.completed_at).to_std().unwrap_or(Duration::ZERO);
            let expired = policy.max_age.filter(|max| age >= *max);
            let verdict = if run.pinned {
                keep.push(KeepReason::Pinned);
                keep.extend(lock.map(|until| KeepReason::ObjectLocked { until }));
                Verdict::Keep(keep)
            } else if let Some(max_age) = expired {
                if position == 0 {
                    keep.push(KeepReason::NewestBackup);
                    keep.extend(lock.map(|until| KeepReason::ObjectLocked { until }));
                    Verdict::Keep(keep)
                } else if let Some(until) = lock {
                    requeue(until);
                    Verdict::Keep(vec![KeepReason::ObjectLocked { until }])
                } else {
                    Verdict::Prune(PruneReason::MaxAgeExceeded {
                        age,
                        max_age,
                        overridden: keep,
                    })
                }
            } else if !keep.is_empty() {
                if let Some(max_age) = policy.max_age
                    && position != 0
                {
                    // It is pruned once it reaches maxAge and its lock (if any) expired.
                    let expiry = run
                        .completed_at
                        .checked_add_signed(TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX))
                        .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    requeue(lock.map_or(expiry, |until| until.max(expiry)));
                }
                keep.extend(lock.map(|until| KeepReason::ObjectLocked { until }));
                Verdict::Keep(keep)
            } else if let Some(until) = lock {
                requeue(until);
                Verdict::Keep(vec![KeepReason::ObjectLocked { until }])
            } else {
                Verdict::Prune(PruneReason::NotSelected)
            };
            RunDecision {
                name: run.name.clone(),
                completed_at: run.completed_at,
                verdict,
            }
        })
        .collect();
    RetentionPlan {
        decisions,
        requeue_at,
    }
}

/// `spec.runHistory`: how many finished BackupRun objects of each outcome stay in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHistoryLimits {
    /// Succeeded runs to keep (beyond those whose artifact is kept, which always stay).
    pub successful: u32,
    /// Failed runs to keep.
    pub failed: u32,
}

/// How a finished run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedPhase {
    /// The backup was confirmed in storage.
    Succeeded,
    /// The backup failed (possibly leaving a partial artifact).
    Failed,
}

/// Where one copy of an artifact lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactLocation {
    /// The BackupStorage's name.
    pub storage: String,
    /// Key of the artifact's data (`status.artifact.key`). An all-databases artifact has
    /// several data objects, which its manifest lists; the executor deletes what the manifest
    /// lists, read before the manifest is deleted.
    pub data_key: String,
    /// Key of the `manifest.json` commit marker.
    pub manifest_key: String,
}

/// A finished BackupRun as the history plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRun {
    /// The BackupRun's name.
    pub name: String,
    /// Succeeded or Failed.
    pub phase: FinishedPhase,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Every stored copy of its artifact (primary and replicas), possibly partial for a failed
    /// run; empty if nothing was written or it is already gone.
    pub artifacts: Vec<ArtifactLocation>,
    /// Whether retention keeps its artifact ([`RunDecision::is_kept`]); `false` for failed runs.
    pub artifact_retained: bool,
    /// Object Lock retain-until of its objects, if any.
    pub retain_until: Option<DateTime<Utc>>,
}

/// Why a run is being cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupCause {
    /// Retention pruned its artifact; the object goes with it.
    RetentionPruned,
    /// It is beyond the `runHistory` limit for its phase.
    HistoryLimit,
}

/// One deletion, executed in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupAction {
    /// Delete an artifact's `manifest.json` (first: it is the commit marker).
    DeleteManifest {
        /// BackupStorage name.
        storage: String,
        /// Object key.
        key: String,
    },
    /// Delete an artifact's data, after its manifest is gone.
    DeleteArtifactData {
        /// BackupStorage name.
        storage: String,
        /// Object key ([`ArtifactLocation::data_key`]).
        key: String,
    },
    /// Delete the BackupRun object (last).
    DeleteBackupRun,
}

/// The ordered cleanup of one run. The executor runs `actions` in order and stops this run's
/// cleanup at the first failure (retrying later), without blocking other runs' cleanups.
/// Deleting an already-missing object counts as success, so a cleanup interrupted midway is
/// simply planned and executed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCleanup {
    /// The BackupRun's name.
    pub run: String,
    /// Why it is cleaned up.
    pub cause: CleanupCause,
    /// What to delete, in order.
    pub actions: Vec<CleanupAction>,
}

/// The result of [`run_history_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPlan {
    /// Cleanups, oldest run first.
    pub cleanups: Vec<RunCleanup>,
    /// Runs that are due for cleanup but whose objects are still Object-Locked (kept for now).
    pub deferred: Vec<String>,
    /// The earliest lock expiry among `deferred`.
    pub requeue_at: Option<DateTime<Utc>>,
}

/// Decides which finished BackupRun objects (and their artifacts) to delete.
///
/// - A succeeded run whose artifact retention keeps is never deleted: the object is the catalog
///   entry of its backup.
/// - A succeeded run whose artifact retention pruned is deleted with its artifact.
/// - Other succeeded runs (no artifact left) beyond the `successful` newest, and failed runs
///   beyond the `failed` newest, are deleted, with any partial artifact they left.
/// - A run whose objects are still Object-Locked is deferred until the lock expires.
///
/// Active runs must not be passed in: only finished runs are ever deleted.
pub fn run_history_plan(
    runs: &[HistoryRun],
    limits: RunHistoryLimits,
    now: DateTime<Utc>,
) -> HistoryPlan {
    let mut order: Vec<&HistoryRun> = runs.iter().collect();
    order.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    let mut due: Vec<(&HistoryRun, CleanupCause)> = Vec::new();
    let (mut succeeded_seen, mut failed_seen) = (0u32, 0u32);
    for run in &order {
        match run.phase {
            FinishedPhase::Succeeded if run.artifact_retained => {}
            FinishedPhase::Succeeded if !run.artifacts.is_empty() => {
                due.push((run, CleanupCause::RetentionPruned));
            }
            FinishedPhase::Succeeded => {
                succeeded_seen += 1;
                if succeeded_seen > limits.successful {
                    due.push((run, CleanupCause::HistoryLimit));
                }
            }
            FinishedPhase::Failed => {
                failed_seen += 1;
                if failed_seen > limits.failed {
                    due.push((run, CleanupCause::HistoryLimit));
                }
            }
        }
    }

    let mut plan = HistoryPlan {
        cleanups: Vec::new(),
        deferred: Vec::new(),
        requeue_at: None,
    };
    for (run, cause) in due.into_iter().rev() {
        if let Some(until) = run
            .retain_until
            .filter(|u| *u > now && !run.artifacts.is_empty())
        {
            plan.deferred.push(run.name.clone());
            if plan.requeue_at.is_none_or(|r| until < r) {
                plan.requeue_at = Some(until);
            }
            continue;
        }
        let mut actions: Vec<CleanupAction> = run
            .artifacts
            .iter()
            .map(|a| CleanupAction::DeleteManifest {
                storage: a.storage.clone(),
                key: a.manifest_key.clone(),
            })
            .collect();
        actions.extend(
            run.artifacts
                .iter()
                .map(|a| CleanupAction::DeleteArtifactData {
                    storage: a.storage.clone(),
                    key: a.data_key.clone(),
                }),
        );
        actions.push(CleanupAction::DeleteBackupRun);
        plan.cleanups.push(RunCleanup {
            run: run.name.clone(),
            cause,
            actions,
        });
    }
    plan
}

// ---- From the API types ----

impl RetentionPolicy {
    /// Reads `spec.retention`; `None` (no retention block) keeps everything. Fails with a message
    /// when `maxAge` is not a duration such as `90d` or `12w`.
    pub fn from_spec(retention: Option<&Retention>) -> Result<Self, String> {
        let Some(r) = retention else {
            return Ok(RetentionPolicy::default());
        };
        let max_age = match r.max_age.as_deref() {
            None => None,
            Some(text) => Some(Duration::from_secs(parse_duration(text).ok_or_else(
                || format!("retention.maxAge {text:?} is not a duration such as 90d, 12w or 720h"),
            )?)),
        };
        Ok(RetentionPolicy {
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_yearly: r.keep_yearly,
            max_age,
        })
    }
}

impl RetentionRun {
    /// The retention view of a Succeeded run with a completion time; `None` for any other run
    /// (only successful backups take part in retention).
    pub fn from_finished(run: &FinishedRun) -> Option<Self> {
        if !run.succeeded {
            return None;
        }
        Some(RetentionRun {
            name: run.name.clone(),
            completed_at: run.completed_at?,
            pinned: run.pinned,
            retain_until: run.artifact.as_ref().and_then(|a| a.retain_until),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupRun;
    use crate::api::backup_policy::PIN_LABEL;
    use crate::api::backup_run::BackupRunPhase;
    use crate::api::backup_run::is_pinned;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
            .to_utc()
    }

    fn run(name: &str, completed_at: &str) -> RetentionRun {
        RetentionRun {
            name: name.to_owned(),
            completed_at: utc(completed_at),
            pinned: false,
            retain_until: None,
        }
    }

    /// Daily runs at `hh:mm` UTC for `days` days ending on `last_day`, named `d<date>`.
    fn daily_runs(last_day: &str, days: i64, hhmm: &str) -> Vec<RetentionRun> {
        let last: NaiveDate = last_day.parse().unwrap();
        (0..days)
            .map(|i| {
                let day = last - TimeDelta::days(i);
                run(&format!("d{day}"), &format!("{day}T{hhmm}:00Z"))
            })
            .collect()
    }

    fn kept(plan: &RetentionPlan) -> Vec<&str> {
        let mut v: Vec<&str> = plan.kept().collect();
        v.sort_unstable();
        v
    }

    fn reasons<'a>(plan: &'a RetentionPlan, name: &str) -> &'a [KeepReason] {
        match &plan
            .decisions
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .verdict
        {
            Verdict::Keep(r) => r,
            Verdict::Prune(p) => panic!("{name} pruned: {p}"),
        }
    }

    fn prune_reason<'a>(plan: &'a RetentionPlan, name: &str) -> &'a PruneReason {
        match &plan
            .decisions
            .iter()
            .find(|d| d.name == name)
            .unwrap()
            .verdict
        {
            Verdict::Prune(p) => p,
            Verdict::Keep(r) => panic!("{name} kept: {r:?}"),
        }
    }

    const NOW: &str = "2026-11-22T12:00:00Z";

    #[test]
    fn empty_input_gives_an_empty_plan() {
        let policy = RetentionPolicy {
            keep_last: Some(3),
            max_age: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        let plan = plan_retention(&[], &policy, Tz::UTC, utc(NOW));
        assert!(plan.decisions.is_empty());
        assert_eq!(plan.requeue_at, None);
    }

    #[test]
    fn keep_last_keeps_the_newest_n_in_any_input_order() {
        let mut runs = daily_runs("2026-11-21", 5, "02:00");
        runs.reverse();
        let policy = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(kept(&plan), ["d2026-11-19", "d2026-11-20", "d2026-11-21"]);
        assert_eq!(
            reasons(&plan, "d2026-11-21"),
            [KeepReason::Last { rank: 1, of: 3 }]
        );
        assert_eq!(reasons(&plan, "d2026-11-19")[0].to_string(), "last 3 (#3)");
        assert_eq!(
            plan.pruned().collect::<Vec<_>>(),
            ["d2026-11-17", "d2026-11-18"],
            "oldest first"
        );
        assert_eq!(
            prune_reason(&plan, "d2026-11-17"),
            &PruneReason::NotSelected
        );
        // Decisions come newest first.
        assert_eq!(plan.decisions[0].name, "d2026-11-21");
    }

    #[test]
    fn daily_keeps_the_newest_run_of_each_day_that_has_runs() {
        let runs = vec![
            run("a", "2026-11-21T01:00:00Z"),
            run("b", "2026-11-21T13:00:00Z"), // newest of the 21st
            run("c", "2026-11-20T09:00:00Z"),
            // no runs on the 19th and 18th: those days do not count
            run("d", "2026-11-17T08:00:00Z"),
            run("e", "2026-11-17T20:00:00Z"),
            run("f", "2026-11-16T20:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(kept(&plan), ["b", "c", "e"]);
        assert_eq!(reasons(&plan, "e")[0].to_string(), "daily 2026-11-17");
    }

    #[test]
    fn buckets_use_the_policy_time_zone() {
        // 01:30Z on the 21st is still the 20th in Sao Paulo (-03) and already the 21st in Berlin.
        let runs = vec![
            run("late", "2026-11-21T01:30:00Z"),
            run("evening", "2026-11-20T22:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(5),
            ..Default::default()
        };
        let sp = plan_retention(&runs, &policy, chrono_tz::America::Sao_Paulo, utc(NOW));
        assert_eq!(kept(&sp), ["late"], "same local day in Sao Paulo");
        assert_eq!(
            reasons(&sp, "late"),
            [KeepReason::Daily("2026-11-20".parse().unwrap())]
        );
        let utc_plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(kept(&utc_plan), ["evening", "late"]);
        let berlin = plan_retention(&runs, &policy, chrono_tz::Europe::Berlin, utc(NOW));
        assert_eq!(kept(&berlin), ["evening", "late"]);
    }

    #[test]
    fn the_fall_back_hour_is_one_day_bucket() {
        // 01:30 EDT and 01:30 EST on 2026-11-01 are the same New York day.
        let runs = vec![
            run("first", "2026-11-01T05:30:00Z"),
            run("second", "2026-11-01T06:30:00Z"),
            run("before", "2026-10-31T05:30:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(2),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, chrono_tz::America::New_York, utc(NOW));
        assert_eq!(kept(&plan), ["before", "second"]);
    }

    #[test]
    fn iso_weeks_cross_the_year_boundary() {
        // 2026 has 53 ISO weeks: Mon 2026-12-28 .. Sun 2027-01-03 is 2026-W53.
        let runs = vec![
            run("w01", "2027-01-04T10:00:00Z"),
            run("sun", "2027-01-03T10:00:00Z"),
            run("new-year", "2027-01-01T10:00:00Z"),
            run("dec31", "2026-12-31T10:00:00Z"),
            run("dec27", "2026-12-27T10:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_weekly: Some(3),
            keep_yearly: Some(2),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc("2027-01-05T00:00:00Z"));
        assert_eq!(
            reasons(&plan, "w01"),
            [
                KeepReason::Weekly {
                    year: 2027,
                    week: 1
                },
                KeepReason::Yearly(2027)
            ]
        );
        assert_eq!(reasons(&plan, "sun")[0].to_string(), "weekly 2026-W53");
        assert_eq!(reasons(&plan, "dec31"), [KeepReason::Yearly(2026)]);
        assert_eq!(reasons(&plan, "dec27")[0].to_string(), "weekly 2026-W52");
        assert_eq!(prune_reason(&plan, "new-year"), &PruneReason::NotSelected);
    }

    #[test]
    fn leap_days_and_months() {
        let runs = vec![
            run("mar1", "2028-03-01T00:30:00Z"),
            run("feb29", "2028-02-29T23:00:00Z"),
            run("feb28", "2028-02-28T23:00:00Z"),
            run("jan", "2028-01-31T23:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(2),
            keep_monthly: Some(3),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc("2028-03-02T00:00:00Z"));
        assert_eq!(
            reasons(&plan, "feb29"),
            [
                KeepReason::Daily("2028-02-29".parse().unwrap()),
                KeepReason::Monthly {
                    year: 2028,
                    month: 2
                }
            ]
        );
        assert_eq!(reasons(&plan, "jan")[0].to_string(), "monthly 2028-01");
        assert!(
            !plan
                .decisions
                .iter()
                .find(|d| d.name == "feb28")
                .unwrap()
                .is_kept()
        );
        // In Berlin (+01) 2028-02-29T23:00Z is already March 1st.
        let plan = plan_retention(
            &runs,
            &policy,
            chrono_tz::Europe::Berlin,
            utc("2028-03-02T00:00:00Z"),
        );
        assert_eq!(
            reasons(&plan, "mar1"),
            [
                KeepReason::Daily("2028-03-01".parse().unwrap()),
                KeepReason::Monthly {
                    year: 2028,
                    month: 3
                }
            ]
        );
        assert_eq!(
            reasons(&plan, "feb28")[0],
            KeepReason::Daily("2028-02-29".parse().unwrap())
        );
    }

    /// USER-PAINS #12: the seed app summed daily/weekly/monthly into one count. Here the rules
    /// are independent and a run is kept if any rule keeps it.
    #[test]
    fn rules_are_independent_not_summed() {
        // 90 daily backups ending Sunday 2026-11-22.
        let runs = daily_runs("2026-11-22", 90, "02:00");
        let policy = RetentionPolicy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(3),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(
            kept(&plan),
            [
                // monthly: newest of Sep, Oct (Nov's newest is the 22nd)
                "d2026-09-30",
                "d2026-10-31",
                // weekly: newest (Sunday) of W44, W45 (W46's is the 15th, W47's the 22nd)
                "d2026-11-01",
                "d2026-11-08",
                "d2026-11-15",
                // daily: the last 7 days
                "d2026-11-16",
                "d2026-11-17",
                "d2026-11-18",
                "d2026-11-19",
                "d2026-11-20",
                "d2026-11-21",
                "d2026-11-22",
            ]
        );
        // 12 kept, not 7 + 4 + 3 = 14 (overlaps) and not "the newest 14".
        assert_eq!(
            reasons(&plan, "d2026-11-22"),
            [
                KeepReason::Daily("2026-11-22".parse().unwrap()),
                KeepReason::Weekly {
                    year: 2026,
                    week: 47
                },
                KeepReason::Monthly {
                    year: 2026,
                    month: 11
                }
            ]
        );
        assert_eq!(plan.requeue_at, None);
    }

    #[test]
    fn pinned_runs_are_never_pruned_but_still_count() {
        let mut runs = daily_runs("2026-11-21", 4, "02:00");
        runs[3].pinned = true; // the oldest, 2026-11-18
        runs[0].pinned = true; // the newest
        let policy = RetentionPolicy {
            keep_last: Some(2),
            max_age: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(reasons(&plan, "d2026-11-18"), [KeepReason::Pinned]);
        // The pinned newest run counts towards keepLast: only one more is kept by it.
        assert_eq!(
            reasons(&plan, "d2026-11-21"),
            [KeepReason::Last { rank: 1, of: 2 }, KeepReason::Pinned]
        );
        // d2026-11-20 is kept by keepLast but older than maxAge: pruned, rule overridden.
        match prune_reason(&plan, "d2026-11-20") {
            PruneReason::MaxAgeExceeded { overridden, .. } => {
                assert_eq!(overridden, &[KeepReason::Last { rank: 2, of: 2 }]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !plan
                .decisions
                .iter()
                .find(|d| d.name == "d2026-11-19")
                .unwrap()
                .is_kept()
        );
    }

    #[test]
    fn object_locked_runs_wait_for_their_lock_and_requeue_at_the_earliest_expiry() {
        let mut runs = daily_runs("2026-11-21", 4, "02:00");
        runs[2].retain_until = Some(utc("2026-12-10T00:00:00Z")); // d2026-11-19
        runs[3].retain_until = Some(utc("2026-12-01T00:00:00Z")); // d2026-11-18
        runs[1].retain_until = Some(utc("2026-11-01T00:00:00Z")); // expired lock
        runs[0].retain_until = Some(utc("2026-11-25T00:00:00Z")); // kept anyway
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(
            reasons(&plan, "d2026-11-18"),
            [KeepReason::ObjectLocked {
                until: utc("2026-12-01T00:00:00Z")
            }]
        );
        assert!(
            reasons(&plan, "d2026-11-19")[0]
                .to_string()
                .starts_with("object-locked until 2026-12-10")
        );
        assert_eq!(
            prune_reason(&plan, "d2026-11-20"),
            &PruneReason::NotSelected
        );
        assert_eq!(
            reasons(&plan, "d2026-11-21"),
            [
                KeepReason::Last { rank: 1, of: 1 },
                KeepReason::ObjectLocked {
                    until: utc("2026-11-25T00:00:00Z")
                }
            ]
        );
        // The newest's lock changes nothing when it expires: not a requeue time.
        assert_eq!(plan.requeue_at, Some(utc("2026-12-01T00:00:00Z")));

        // After the earliest lock expired, that run is pruned.
        let later = plan_retention(&runs, &policy, Tz::UTC, utc("2026-12-01T00:00:00Z"));
        assert_eq!(
            prune_reason(&later, "d2026-11-18"),
            &PruneReason::NotSelected
        );
        assert_eq!(later.requeue_at, Some(utc("2026-12-10T00:00:00Z")));
    }

    #[test]
    fn max_age_caps_keep_rules_but_never_prunes_the_newest_backup() {
        let runs = daily_runs("2026-11-21", 10, "12:00");
        let policy = RetentionPolicy {
            keep_daily: Some(30),
            max_age: Some(Duration::from_secs(5 * 86_400)),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        // Ages 1..=10 days: ages >= 5 days are pruned.
        assert_eq!(
            kept(&plan),
            ["d2026-11-18", "d2026-11-19", "d2026-11-20", "d2026-11-21"]
        );
        let msg = prune_reason(&plan, "d2026-11-17").to_string();
        assert_eq!(
            msg,
            "age 432000s reached maxAge 432000s (overrides daily 2026-11-17)"
        );
        // The next change by time alone: d2026-11-18 reaches 5 days.
        assert_eq!(plan.requeue_at, Some(utc("2026-11-23T12:00:00Z")));

        // Backups stopped 40 days ago: the newest one survives maxAge.
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc("2027-01-01T00:00:00Z"));
        assert_eq!(kept(&plan), ["d2026-11-21"]);
        assert_eq!(
            reasons(&plan, "d2026-11-21"),
            [
                KeepReason::Daily("2026-11-21".parse().unwrap()),
                KeepReason::NewestBackup
            ]
        );
        assert_eq!(plan.requeue_at, None);
    }

    #[test]
    fn without_keep_rules_everything_is_kept_unless_max_age_says_otherwise() {
        let runs = daily_runs("2026-11-21", 3, "12:00");
        for policy in [
            RetentionPolicy::default(),
            RetentionPolicy {
                keep_last: Some(0),
                keep_daily: Some(0),
                ..Default::default()
            },
        ] {
            let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
            assert_eq!(kept(&plan).len(), 3);
            assert_eq!(reasons(&plan, "d2026-11-19"), [KeepReason::NoKeepRules]);
            assert_eq!(plan.requeue_at, None);
        }
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(5 * 43_200)),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(kept(&plan), ["d2026-11-20", "d2026-11-21"]);
        assert!(matches!(
            prune_reason(&plan, "d2026-11-19"),
            PruneReason::MaxAgeExceeded { overridden, .. } if overridden == &[KeepReason::NoKeepRules]
        ));
        assert_eq!(plan.requeue_at, Some(utc("2026-11-23T00:00:00Z")));
    }

    #[test]
    fn runs_completed_at_the_same_instant_are_ordered_by_name() {
        let runs = vec![
            run("b", "2026-11-21T02:00:00Z"),
            run("a", "2026-11-21T02:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(1),
            ..Default::default()
        };
        let plan = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        assert_eq!(kept(&plan), ["b"]);
        let swapped: Vec<_> = runs.iter().rev().cloned().collect();
        assert_eq!(plan_retention(&swapped, &policy, Tz::UTC, utc(NOW)), plan);
    }

    // ---- run history ----

    fn loc(storage: &str, run: &str) -> ArtifactLocation {
        ArtifactLocation {
            storage: storage.to_owned(),
            data_key: format!("shop/{run}/backup.dump.zst.age"),
            manifest_key: format!("shop/{run}/manifest.json"),
        }
    }

    fn hrun(
        name: &str,
        phase: FinishedPhase,
        at: &str,
        artifact: bool,
        retained: bool,
    ) -> HistoryRun {
        HistoryRun {
            name: name.to_owned(),
            phase,
            finished_at: utc(at),
            artifacts: if artifact {
                vec![loc("main", name)]
            } else {
                vec![]
            },
            artifact_retained: retained,
            retain_until: None,
        }
    }

    use FinishedPhase::{Failed, Succeeded};

    #[test]
    fn pruned_artifacts_are_deleted_manifest_first_then_the_run() {
        let mut pruned = hrun("old", Succeeded, "2026-11-01T02:00:00Z", true, false);
        pruned.artifacts.push(loc("replica", "old"));
        let runs = vec![
            hrun("kept", Succeeded, "2026-11-21T02:00:00Z", true, true),
            pruned,
        ];
        let plan = run_history_plan(
            &runs,
            RunHistoryLimits {
                successful: 0,
                failed: 0,
            },
            utc(NOW),
        );
        assert_eq!(
            plan.cleanups,
            [RunCleanup {
                run: "old".into(),
                cause: CleanupCause::RetentionPruned,
                actions: vec![
                    CleanupAction::DeleteManifest {
                        storage: "main".into(),
                        key: "shop/old/manifest.json".into()
                    },
                    CleanupAction::DeleteManifest {
                        storage: "replica".into(),
                        key: "shop/old/manifest.json".into()
                    },
                    CleanupAction::DeleteArtifactData {
                        storage: "main".into(),
                        key: "shop/old/backup.dump.zst.age".into()
                    },
                    CleanupAction::DeleteArtifactData {
                        storage: "replica".into(),
                        key: "shop/old/backup.dump.zst.age".into()
                    },
                    CleanupAction::DeleteBackupRun,
                ]
            }],
            "a retained artifact's run is never deleted, even with successful: 0"
        );
    }

    #[test]
    fn history_limits_apply_per_phase_newest_first() {
        let runs = vec![
            hrun("f1", Failed, "2026-11-21T02:00:00Z", false, false),
            hrun("f2", Failed, "2026-11-20T02:00:00Z", true, false), // partial upload
            hrun("f3", Failed, "2026-11-19T02:00:00Z", false, false),
            hrun("s-gone-1", Succeeded, "2026-11-18T02:00:00Z", false, false),
            hrun("s-gone-2", Succeeded, "2026-11-17T02:00:00Z", false, false),
            hrun("s-kept", Succeeded, "2026-11-01T02:00:00Z", true, true),
        ];
        let plan = run_history_plan(
            &runs,
            RunHistoryLimits {
                successful: 1,
                failed: 1,
            },
            utc(NOW),
        );
        let summary: Vec<(&str, usize)> = plan
            .cleanups
            .iter()
            .map(|c| (c.run.as_str(), c.actions.len()))
            .collect();
        assert_eq!(
            summary,
            [("s-gone-2", 1), ("f3", 1), ("f2", 3)],
            "oldest first"
        );
        assert!(
            plan.cleanups
                .iter()
                .all(|c| c.cause == CleanupCause::HistoryLimit)
        );
        assert!(matches!(
            plan.cleanups[2].actions[0],
            CleanupAction::DeleteManifest { .. }
        ));
        assert_eq!(plan.cleanups[2].actions[2], CleanupAction::DeleteBackupRun);
    }

    #[test]
    fn locked_partial_artifacts_defer_the_cleanup() {
        let mut f = hrun("f-locked", Failed, "2026-11-20T02:00:00Z", true, false);
        f.retain_until = Some(utc("2026-12-20T00:00:00Z"));
        let runs = vec![
            hrun("f-new", Failed, "2026-11-21T02:00:00Z", false, false),
            f,
        ];
        let limits = RunHistoryLimits {
            successful: 3,
            failed: 1,
        };
        let plan = run_history_plan(&runs, limits, utc(NOW));
        assert!(plan.cleanups.is_empty());
        assert_eq!(plan.deferred, ["f-locked"]);
        assert_eq!(plan.requeue_at, Some(utc("2026-12-20T00:00:00Z")));
        let plan = run_history_plan(&runs, limits, utc("2026-12-20T00:00:00Z"));
        assert_eq!(plan.cleanups.len(), 1);
        assert!(plan.deferred.is_empty());
    }

    #[test]
    fn empty_history_plans_nothing() {
        let plan = run_history_plan(
            &[],
            RunHistoryLimits {
                successful: 0,
                failed: 0,
            },
            utc(NOW),
        );
        assert!(plan.cleanups.is_empty() && plan.deferred.is_empty() && plan.requeue_at.is_none());
    }

    #[test]
    fn retention_feeds_the_history_plan() {
        let runs = daily_runs("2026-11-21", 5, "02:00");
        let policy = RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        let retention = plan_retention(&runs, &policy, Tz::UTC, utc(NOW));
        let history: Vec<HistoryRun> = retention
            .decisions
            .iter()
            .map(|d| HistoryRun {
                name: d.name.clone(),
                phase: Succeeded,
                finished_at: d.completed_at,
                artifacts: vec![loc("main", &d.name)],
                artifact_retained: d.is_kept(),
                retain_until: None,
            })
            .collect();
        let plan = run_history_plan(
            &history,
            RunHistoryLimits {
                successful: 10,
                failed: 1,
            },
            utc(NOW),
        );
        let deleted: Vec<&str> = plan.cleanups.iter().map(|c| c.run.as_str()).collect();
        assert_eq!(deleted, ["d2026-11-17", "d2026-11-18", "d2026-11-19"]);
        assert_eq!(deleted, retention.pruned().collect::<Vec<_>>());
    }

    // ---- API adapters ----

    #[test]
    fn retention_policy_from_the_spec() {
        assert_eq!(
            RetentionPolicy::from_spec(None),
            Ok(RetentionPolicy::default())
        );
        let spec = Retention {
            keep_last: Some(7),
            keep_weekly: Some(4),
            max_age: Some("1w2d".into()),
            ..Default::default()
        };
        let p = RetentionPolicy::from_spec(Some(&spec)).unwrap();
        assert_eq!(p.keep_last, Some(7));
        assert_eq!(p.keep_weekly, Some(4));
        assert_eq!(p.max_age, Some(Duration::from_secs(9 * 86_400)));
        let bad = Retention {
            max_age: Some("forever".into()),
            ..Default::default()
        };
        let err = RetentionPolicy::from_spec(Some(&bad)).unwrap_err();
        assert!(err.contains("\"forever\""), "{err}");
    }

    #[test]
    fn retention_runs_from_backup_runs() {
        let from_run = |run: &BackupRun| {
            RetentionRun::from_finished(&FinishedRun::from_run(run).expect("a finished run"))
        };
        let run: BackupRun = serde_yaml::from_str(
            r#"
metadata: {name: r1, namespace: shop, labels: {dataguardian.io/pin: "true"}}
spec: {policyRef: {name: nightly}}
status:
  phase: Succeeded
  completionTime: "2026-11-21T02:10:00Z"
  artifact: {storage: main, key: k, retainUntil: "2026-12-21T02:10:00Z"}
"#,
        )
        .unwrap();
        let r = from_run(&run).unwrap();
        assert_eq!(r.name, "r1");
        assert_eq!(r.completed_at, utc("2026-11-21T02:10:00Z"));
        assert!(r.pinned);
        assert_eq!(r.retain_until, Some(utc("2026-12-21T02:10:00Z")));

        let mut unpinned = run.clone();
        unpinned
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(PIN_LABEL.into(), "False".into());
        assert!(!from_run(&unpinned).unwrap().pinned);
        let mut odd = run.clone();
        odd.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(PIN_LABEL.into(), "".into());
        assert!(is_pinned(&odd), "an empty value still pins");

        let mut failed = run.clone();
        failed.status.as_mut().unwrap().phase = Some(BackupRunPhase::Failed);
        assert_eq!(from_run(&failed), None);
        let mut running = run;
        running.status.as_mut().unwrap().completion_time = None;
        assert_eq!(from_run(&running), None);
    }

    // ---- randomized invariants ----

    /// Tiny deterministic PRNG for test inputs (xorshift64*).
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn verdicts(plan: &RetentionPlan) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = plan
            .decisions
            .iter()
            .map(|d| (d.name.clone(), d.is_kept()))
            .collect();
        v.sort();
        v
    }

    /// Independent oracle for one bucket rule: group by bucket, order buckets by their newest
    /// run, take the first `n`, and name the newest run of each.
    fn oracle_bucket(
        runs: &[RetentionRun],
        n: u32,
        key: impl Fn(&RetentionRun) -> KeepReason,
    ) -> Vec<(String, KeepReason)> {
        let mut buckets: Vec<(KeepReason, &RetentionRun)> = Vec::new();
        for run in runs {
            let k = key(run);
            match buckets.iter_mut().find(|(bk, _)| *bk == k) {
                Some((_, best)) => {
                    if (run.completed_at, &run.name) > (best.completed_at, &best.name) {
                        *best = run;
                    }
                }
                None => buckets.push((k, run)),
            }
        }
        buckets.sort_by(|a, b| (b.1.completed_at, &b.1.name).cmp(&(a.1.completed_at, &a.1.name)));
        buckets
            .into_iter()
            .take(n as usize)
            .map(|(k, r)| (r.name.clone(), k))
            .collect()
    }

    #[test]
    fn random_histories_keep_the_documented_invariants() {
        let zones = [
            Tz::UTC,
            chrono_tz::America::Sao_Paulo,
            chrono_tz::Europe::Berlin,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Pacific::Kiritimati,
        ];
        let mut seed = 0x0123_4567_89ab_cdef_u64;
        let start = utc("2025-12-20T00:00:00Z");
        for case in 0..300 {
            let rnd = &mut seed;
            let count = (next_random(rnd) % 60) as usize;
            let mut runs: Vec<RetentionRun> = (0..count)
                .map(|i| {
                    // Mostly spread over ~3 years, sometimes clustered in one day.
                    let span = if next_random(rnd).is_multiple_of(4) {
                        86_400
                    } else {
                        3 * 365 * 86_400
                    };
                    let at = start + TimeDelta::seconds((next_random(rnd) % span) as i64);
                    RetentionRun {
                        name: format!("r{case}-{i:02}"),
                        completed_at: at,
                        pinned: next_random(rnd).is_multiple_of(10),
                        retain_until: (next_random(rnd).is_multiple_of(5))
                            .then(|| at + TimeDelta::days((next_random(rnd) % 900) as i64)),
                    }
                })
                .collect();
            if count > 3 && next_random(rnd).is_multiple_of(3) {
                runs[1].completed_at = runs[0].completed_at; // same instant
            }
            let mut rule = || {
                let v = next_random(rnd) % 7;
                (v < 6).then_some(v as u32) // None or 0..=5
            };
            let policy = RetentionPolicy {
                keep_last: rule(),
                keep_daily: rule(),
                keep_weekly: rule(),
                keep_monthly: rule(),
                keep_yearly: rule(),
                max_age: (next_random(rnd).is_multiple_of(2))
                    .then(|| Duration::from_secs(86_400 * (1 + next_random(rnd) % 800))),
            };
            let tz = zones[(next_random(rnd) % zones.len() as u64) as usize];
            let now = start + TimeDelta::days(3 * 365 + (next_random(rnd) % 400) as i64);
            let plan = plan_retention(&runs, &policy, tz, now);
            let ctx = format!("case {case}: {policy:?} in {tz}");

            assert_eq!(plan.decisions.len(), runs.len(), "{ctx}");
            let newest = plan.decisions.first().map(|d| d.name.clone());
            let has_rules = policy.has_keep_rules();
            let reasons_of = |name: &str| -> Vec<KeepReason> {
                match &plan
                    .decisions
                    .iter()
                    .find(|d| d.name == name)
                    .unwrap()
                    .verdict
                {
                    Verdict::Keep(r) => r.clone(),
                    Verdict::Prune(PruneReason::MaxAgeExceeded { overridden, .. }) => {
                        overridden.clone()
                    }
                    Verdict::Prune(PruneReason::NotSelected) => vec![],
                }
            };

            // Each bucket rule selects exactly what the oracle selects.
            let local = |r: &RetentionRun| r.completed_at.with_timezone(&tz);
            type BucketKey<'a> = Box<dyn Fn(&RetentionRun) -> KeepReason + 'a>;
            let rules: [(Option<u32>, BucketKey); 4] = [
                (
                    policy.keep_daily,
                    Box::new(|r| KeepReason::Daily(local(r).date_naive())),
                ),
                (
                    policy.keep_weekly,
                    Box::new(|r| KeepReason::Weekly {
                        year: local(r).iso_week().year(),
                        week: local(r).iso_week().week(),
                    }),
                ),
                (
                    policy.keep_monthly,
                    Box::new(|r| KeepReason::Monthly {
                        year: local(r).year(),
                        month: local(r).month(),
                    }),
                ),
                (
                    policy.keep_yearly,
                    Box::new(|r| KeepReason::Yearly(local(r).year())),
                ),
            ];
            // A run kept only for its Object Lock after maxAge overrode its rules reports just
            // the lock (the overridden rules would mislead); every other run reports its rules.
            let lock_only = |run: &RetentionRun| {
                let age = (now - run.completed_at).to_std().unwrap_or_default();
                matches!(
                    &plan.decisions.iter().find(|d| d.name == run.name).unwrap().verdict,
                    Verdict::Keep(r) if matches!(r.as_slice(), [KeepReason::ObjectLocked { .. }])
                ) && policy.max_age.is_some_and(|m| age >= m)
            };
            for (n, key) in rules {
                let expected = oracle_bucket(&runs, n.unwrap_or(0), &key);
                for run in runs.iter().filter(|r| !lock_only(r)) {
                    let kind = std::mem::discriminant(&key(run));
                    let got: Vec<KeepReason> = reasons_of(&run.name)
                        .into_iter()
                        .filter(|r| std::mem::discriminant(r) == kind)
                        .collect();
                    let want: Vec<KeepReason> = expected
                        .iter()
                        .filter(|(name, _)| *name == run.name)
                        .map(|(_, k)| k.clone())
                        .collect();
                    assert_eq!(got, want, "{ctx}: {} ({})", run.name, run.completed_at);
                }
            }
            // keepLast marks the n newest.
            let last = policy.keep_last.unwrap_or(0) as usize;
            for (i, d) in plan.decisions.iter().enumerate() {
                if lock_only(runs.iter().find(|r| r.name == d.name).unwrap()) {
                    continue;
                }
                let marked = reasons_of(&d.name)
                    .iter()
                    .any(|r| matches!(r, KeepReason::Last { .. }));
                assert_eq!(marked, i < last, "{ctx}: {}", d.name);
            }

            // The verdict follows the documented rules.
            for run in &runs {
                let decision = plan.decisions.iter().find(|d| d.name == run.name).unwrap();
                let age = (now - run.completed_at).to_std().unwrap_or_default();
                let expired = policy.max_age.is_some_and(|m| age >= m);
                let selected = !has_rules
                    || reasons_of(&run.name).iter().any(|r| {
                        !matches!(r, KeepReason::NoKeepRules | KeepReason::ObjectLocked { .. })
                    });
                let locked = run.retain_until.is_some_and(|u| u > now);
                let expected = run.pinned
                    || locked
                    || newest.as_deref() == Some(run.name.as_str())
                    || (selected && !expired);
                assert_eq!(
                    decision.is_kept(),
                    expected,
                    "{ctx}: {run:?} -> {decision:?}"
                );
                if run.pinned {
                    assert!(reasons_of(&run.name).contains(&KeepReason::Pinned), "{ctx}");
                }
            }

            // Nothing changes by time alone before requeue_at.
            let horizon = plan.requeue_at.unwrap_or(now + TimeDelta::days(36_500));
            assert!(horizon > now, "{ctx}");
            for probe in [
                now + (horizon - now) / 2,
                horizon - TimeDelta::milliseconds(1),
            ] {
                let later = plan_retention(&runs, &policy, tz, probe);
                assert_eq!(verdicts(&later), verdicts(&plan), "{ctx} at {probe}");
            }
            if let Some(at) = plan.requeue_at {
                let after = plan_retention(&runs, &policy, tz, at);
                assert_ne!(
                    verdicts(&after),
                    verdicts(&plan),
                    "{ctx}: requeue_at {at} changes nothing"
                );
            }

            // Input order never matters.
            let mut shuffled = runs.clone();
            shuffled.reverse();
            shuffled.rotate_left(count / 3);
            assert_eq!(plan_retention(&shuffled, &policy, tz, now), plan, "{ctx}");
        }
    }
}
