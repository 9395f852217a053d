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
//! # Manual runs
//!
//! Scheduled runs (those the operator's schedule created, `status.scheduled`, which only the
//! operator can write) and all other runs are counted **separately**: every keep rule is
//! evaluated over the scheduled runs and, independently, over the manual runs. `keepLast: 7`
//! keeps the 7 newest scheduled runs *and* the 7 newest manual runs; a day's bucket keeps the
//! newest scheduled run of the day *and* the newest manual one. So someone who may only create
//! BackupRuns cannot prune a single scheduled restore point by creating many runs, while their
//! own manual runs stay bounded by the same rules. Claiming `spec.trigger: Scheduled` does not
//! help: only `status.scheduled` counts. The `maxAge` guard below keeps the newest run of each
//! kind.
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
    /// Who started it; the keep rules count each origin on its own.
    pub origin: RunOrigin,
}

/// Where a run came from, as retention counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOrigin {
    /// Created by the operator's schedule (`status.scheduled`).
    Schedule,
    /// Anything else: `trigger: Manual`, or a run a client created (whatever its
    /// `spec.trigger` says).
    Manual,
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
/// Scheduled and manual runs are counted **separately** (see "Manual runs" in the module
/// docs): every rule is evaluated over the scheduled runs and, on its own, over the manual
/// runs, so however many manual runs someone creates, they never push a scheduled restore
/// point out of `keepLast` or a calendar bucket.
///
/// `time_zone` is the policy's time zone (the buckets' calendar). Deterministic: runs with equal
/// completion times are ordered by name (the greater name counts as newer).
pub fn plan_retention(
    runs: &[RetentionRun],
    policy: &RetentionPolicy,
    time_zone: Tz,
    now: DateTime<Utc>,
) -> RetentionPlan {
    let mut decisions = Vec::with_capacity(runs.len());
    let mut requeue_at: Option<DateTime<Utc>> = None;
    for origin in [RunOrigin::Schedule, RunOrigin::Manual] {
        let group: Vec<&RetentionRun> = runs.iter().filter(|r| r.origin == origin).collect();
        let plan = plan_group(&group, policy, time_zone, now);
        decisions.extend(plan.decisions);
        requeue_at = match (requeue_at, plan.requeue_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    decisions.sort_by(|a, b| {
        b.completed_at
            .cmp(&a.completed_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    RetentionPlan {
        decisions,
        requeue_at,
    }
}

/// [`plan_retention`] over the runs of one origin.
fn plan_group(
    runs: &[&RetentionRun],
    policy: &RetentionPolicy,
    time_zone: Tz,
    now: DateTime<Utc>,
) -> RetentionPlan {
    let mut order: Vec<&RetentionRun> = runs.to_vec();
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
            retain_until: run.artifact.as_ref().and_then(|a| a.latest_retain_until()),
            origin: if run.scheduled {
                RunOrigin::Schedule
            } else {
                RunOrigin::Manual
            },
        })
    }
}

/// The objects retention may delete for one run's S3 artifact, in order (manifest first, then
/// the data it lists) — pure, from what the operator computed itself:
///
/// - `expected` is where this run writes, rendered by the operator from the run, the policy and
///   the storage; the run's status must name exactly that manifest (`manifestKey` and `key`),
///   so a status or a report naming someone else's keys deletes nothing;
/// - the status must record the manifest's SHA-256 (taken when the operator confirmed the
///   backup), and `manifest` (its current bytes; `None` when it is already gone) must still hash
///   to it, so a manifest rewritten in the bucket to list other keys deletes nothing;
/// - every key it lists must be a plain key below the manifest's own directory.
///
/// `Err` is the reason the artifact is kept.
pub fn pinned_deletion_keys(
    artifact: &crate::api::backup_run::Artifact,
    expected: &crate::jobs::backup_job::ExpectedBackup,
    manifest: Option<&[u8]>,
) -> Result<Vec<String>, String> {
    use crate::contract::ManifestView;
    use crate::contract::manifest::sha256_hex;
    use crate::controller::common::artifact_check::is_plain_relative_key;

    if artifact.manifest_key.as_deref() != Some(expected.location.as_str())
        || artifact.key != expected.key
    {
        return Err(format!(
            "the run's status names {} ({}), but this run writes {}",
            artifact.manifest_key.as_deref().unwrap_or("no manifest"),
            artifact.key,
            expected.location
        ));
    }
    let Some(recorded) = artifact
        .manifest_sha256
        .as_deref()
        .filter(|d| !d.is_empty())
    else {
        return Err(
            "the run records no manifest digest, so what its manifest lists cannot be trusted"
                .into(),
        );
    };
    let Some(bytes) = manifest else {
        // Already deleted (a previous attempt deleted the manifest first): nothing of this run
        // can be identified any more.
        return Ok(Vec::new());
    };
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(recorded) {
        return Err(format!(
            "manifest {} has sha256 {actual}, the run recorded {recorded}: it was altered, nothing it lists is deleted",
            expected.key
        ));
    }
    let view = ManifestView::parse(bytes)
        .map_err(|e| format!("manifest {} is not valid: {e}", expected.key))?;
    let dir = expected.key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut keys = vec![expected.key.clone()];
    for a in &view.artifacts {
        if !is_plain_relative_key(&a.key) {
            return Err(format!(
                "manifest {} lists {:?}, which is not a plain key below its directory",
                expected.key, a.key
            ));
        }
        keys.push(if dir.is_empty() {
            a.key.clone()
        } else {
            format!("{dir}/{}", a.key)
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
