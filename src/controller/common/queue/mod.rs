//! Admission planning for backup and restore runs: which waiting runs start now, and the queue
//! position of every run that keeps waiting.
//!
//! Both planners are stateless: they are recomputed from the runs in the API on every
//! reconcile, so there is no queue state to lose or to wedge. A run that cannot start yet (a
//! retry backoff, `not_before` in the future) is passed over without holding anyone else back,
//! and a stuck running run only ever occupies its own slot until its deadline fails it.
//!
//! # Backups: fair across namespaces
//!
//! A global limit bounds concurrent backups. Free slots go round-robin across namespaces: each
//! namespace's waiting runs are ordered by creation time, and a namespace's k-th waiting run
//! competes in round `k + (its running runs)`. Within a round the oldest run goes first. A
//! namespace with 500 queued runs therefore gets one slot per round like a namespace with one,
//! and a namespace that already holds slots waits for the others to catch up.
//!
//! # Restores: FIFO, one per target database
//!
//! Restores start in creation order under the global limit, and never two at once into the same
//! database ([`TargetId`]): a run whose target is busy waits while later runs for other targets
//! go ahead.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;

use chrono::{DateTime, Utc};

use crate::api::common::DatabaseSpec;

/// Identifies a run across namespaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunKey {
    /// The run's namespace.
    pub namespace: String,
    /// The run's name.
    pub name: String,
}

impl RunKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RunKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A BackupRun waiting to start (phase Pending, no Job yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBackup {
    /// Namespace and name.
    pub key: RunKey,
    /// The run's creation time (queue order).
    pub created_at: DateTime<Utc>,
    /// The BackupPolicy it belongs to (for messages).
    pub policy: String,
    /// Earliest time it may start (retry backoff); `None` = now.
    pub not_before: Option<DateTime<Utc>>,
}

/// Why a run keeps waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// All slots of the global limit are taken.
    GlobalLimit {
        /// The limit.
        limit: usize,
    },
    /// Another restore into the same database is running or starts now.
    TargetBusy {
        /// The run holding the target.
        holder: RunKey,
    },
    /// The run may not start before this time (retry backoff).
    NotBefore(DateTime<Utc>),
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::GlobalLimit { limit } => {
                write!(f, "waiting for one of {limit} concurrent slots")
            }
            WaitReason::TargetBusy { holder } => {
                write!(
                    f,
                    "waiting for {holder}, which restores into the same database"
                )
            }
            WaitReason::NotBefore(t) => write!(f, "retrying after {}", t.to_rfc3339()),
        }
    }
}

/// A run that keeps waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Namespace and name.
    pub key: RunKey,
    /// 1-based place in the queue (`status.queuePosition`).
    pub position: u32,
    /// Why it waits.
    pub reason: WaitReason,
}

/// The admission decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePlan {
    /// Runs to start now, in order.
    pub start: Vec<RunKey>,
    /// Runs that keep waiting, by queue position.
    pub waiting: Vec<Waiting>,
    /// The earliest `not_before` among waiting runs, when a reconcile could start one without
    /// any other change.
    pub requeue_at: Option<DateTime<Utc>>,
}

impl QueuePlan {
    fn wait(&mut self, key: RunKey, reason: WaitReason) {
        if let WaitReason::NotBefore(t) = reason
            && self.requeue_at.is_none_or(|r| t < r)
        {
            self.requeue_at = Some(t);
        }
        let position = self.waiting.len() as u32 + 1;
        self.waiting.push(Waiting {
            key,
            position,
            reason,
        });
    }
}

fn free_slots(limit: Option<NonZeroUsize>, running: usize) -> usize {
    limit.map_or(usize::MAX, |l| l.get().saturating_sub(running))
}

fn is_ready(not_before: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    not_before.is_none_or(|t| t <= now)
}

/// Plans which pending backups start now under a global `limit` (`None` = unlimited), fairly
/// across namespaces. `running` lists the backups currently holding a slot.
pub fn plan_backup_queue(
    pending: &[PendingBackup],
    running: &[RunKey],
    limit: Option<NonZeroUsize>,
    now: DateTime<Utc>,
) -> QueuePlan {
    let mut running_per_ns: BTreeMap<&str, usize> = BTreeMap::new();
    for key in running {
        *running_per_ns.entry(key.namespace.as_str()).or_default() += 1;
    }

    let (ready, delayed): (Vec<&PendingBackup>, Vec<&PendingBackup>) = pending
        .iter()
        .partition(|run| is_ready(run.not_before, now));

    // Round of each ready run: its index among its namespace's ready runs (oldest first), after
    // the slots the namespace already holds.
    let mut per_ns: BTreeMap<&str, Vec<&PendingBackup>> = BTreeMap::new();
    for run in ready {
        per_ns
            .entry(run.key.namespace.as_str())
            .or_default()
            .push(run);
    }
    let mut ordered: Vec<(usize, &PendingBackup)> = Vec::new();
    for (ns, mut runs) in per_ns {
        runs.sort_by(|a, b| by_creation(a.created_at, &a.key, b.created_at, &b.key));
        let held = running_per_ns.get(ns).copied().unwrap_or(0);
        ordered.extend(runs.into_iter().enumerate().map(|(i, run)| (held + i, run)));
    }
    ordered.sort_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then_with(|| by_creation(a.created_at, &a.key, b.created_at, &b.key))
    });

    let mut plan = QueuePlan::default();
    let mut slots = free_slots(limit, running.len());
    for (_, run) in ordered {
        if slots > 0 {
            slots -= 1;
            plan.start.push(run.key.clone());
        } else {
            plan.wait(
                run.key.clone(),
                WaitReason::GlobalLimit {
                    limit: limit.map_or(usize::MAX, NonZeroUsize::get),
                },
            );
        }
    }
    let mut delayed = delayed;
    delayed.sort_by(|a, b| {
        a.not_before
            .cmp(&b.not_before)
            .then_with(|| by_creation(a.created_at, &a.key, b.created_at, &b.key))
    });
    for run in delayed {
        let until = run.not_before.expect("delayed runs have not_before");
        plan.wait(run.key.clone(), WaitReason::NotBefore(until));
    }
    plan
}

fn by_creation(a_at: DateTime<Utc>, a: &RunKey, b_at: DateTime<Utc>, b: &RunKey) -> Ordering {
    a_at.cmp(&b_at).then_with(|| a.cmp(b))
}

/// The database a restore writes into. Two restores conflict when they target the same
/// database on the same server, or when either targets the whole server (`database: None`,
/// e.g. an all-databases restore).
///
/// Built with [`TargetId::new`], which normalises what a user may spell differently: the engine
/// (`postgresql` = `postgres`, `mariadb` = `mysql`), the host's case and trailing dot, and the
/// in-cluster service forms (`db`, `db.shop`, `db.shop.svc`, `db.shop.svc.cluster.local` in
/// namespace `shop` are one host). When in doubt, normalisation errs towards "same target":
/// a false match only delays a restore, a missed one could let two restores clobber a database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetId {
    engine: String,
    host: String,
    port: u16,
    database: Option<String>,
}

impl TargetId {
    /// Normalises a target. `namespace` is the restore's namespace, which resolves
    /// single-label service hosts; `database: None` means the whole server.
    pub fn new(
        engine: &str,
        host: &str,
        port: u16,
        database: Option<&str>,
        namespace: &str,
    ) -> Self {
        let engine = match engine.to_ascii_lowercase().as_str() {
            "postgresql" | "postgres" | "pg" => "postgres".to_owned(),
            "mariadb" | "mysql" => "mysql".to_owned(),
            other => other.to_owned(),
        };
        let mut host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        for suffix in [".svc.cluster.local", ".svc"] {
            if let Some(stripped) = host.strip_suffix(suffix) {
                host = stripped.to_owned();
                break;
            }
        }
        if !host.contains('.') && !host.contains(':') && host != "localhost" {
            host = format!("{host}.{namespace}");
        }
        TargetId {
            engine,
            host,
            port,
            database: database.map(str::to_owned),
        }
    }

    /// The target of a database block whose host is in the spec; `None` when the block has no
    /// engine or only a `connectionSecretRef` (resolve the Secret's URI and use
    /// [`TargetId::from_uri`]).
    pub fn from_database_spec(spec: &DatabaseSpec, namespace: &str) -> Option<Self> {
        let (engine, host, port, database, all) = match (&spec.postgres, &spec.mysql) {
            (Some(pg), _) => (
                "postgres",
                pg.host.as_deref()?,
                pg.port,
                pg.database.as_deref(),
                pg.all_databases.unwrap_or(false),
            ),
            (None, Some(my)) => (
                "mysql",
                my.host.as_deref()?,
                my.port,
                my.database.as_deref(),
                my.all_databases.unwrap_or(false),
            ),
            (None, None) => return None,
        };
        Some(TargetId::new(
            engine,
            host,
            port,
            if all { None } else { database },
            namespace,
        ))
    }

    /// The target of a connection URI (`postgresql://user:pw@host:5432/db`), e.g. one read from
    /// a `connectionSecretRef`. The password is ignored and never stored. `None` when the URI
    /// has no host.
    pub fn from_uri(uri: &str, namespace: &str) -> Option<Self> {
        let url = url::Url::parse(uri).ok()?;
        let engine = url.scheme();
        let port = url.port().unwrap_or(match engine {
            "mysql" | "mariadb" => 3306,
            _ => 5432,
        });
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let database = url
            .path_segments()
            .and_then(|mut segments| segments.next())
            .filter(|db| !db.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            });
        Some(TargetId::new(
            engine,
            host,
            port,
            database.as_deref(),
            namespace,
        ))
    }

    /// Whether a restore into `self` and one into `other` must not run at the same time.
    pub fn conflicts_with(&self, other: &TargetId) -> bool {
        self.engine == other.engine
            && self.host == other.host
            && self.port == other.port
            && match (&self.database, &other.database) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.engine, self.host, self.port)?;
        match &self.database {
            Some(db) => write!(f, "/{db}"),
            None => write!(f, " (all databases)"),
        }
    }
}

/// A RestoreRun waiting to start (phase Queued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRestore {
    /// Namespace and name.
    pub key: RunKey,
    /// The run's creation time (FIFO order).
    pub created_at: DateTime<Utc>,
    /// The database it restores into.
    pub target: TargetId,
    /// Earliest time it may start (retry backoff); `None` = now.
    pub not_before: Option<DateTime<Utc>>,
}

/// A RestoreRun holding a slot and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRestore {
    /// Namespace and name.
    pub key: RunKey,
    /// The database it restores into.
    pub target: TargetId,
}

/// Plans which queued restores start now: FIFO by creation time under the global `limit`
/// (`None` = unlimited), at most one restore per target database. Every run that keeps waiting
/// gets a queue position, in FIFO order.
pub fn plan_restore_queue(
    pending: &[PendingRestore],
    running: &[RunningRestore],
    limit: Option<NonZeroUsize>,
    now: DateTime<Utc>,
) -> QueuePlan {
    let mut order: Vec<&PendingRestore> = pending.iter().collect();
    order.sort_by(|a, b| by_creation(a.created_at, &a.key, b.created_at, &b.key));

    let mut holders: Vec<(&TargetId, &RunKey)> =
        running.iter().map(|r| (&r.target, &r.key)).collect();
    let mut slots = free_slots(limit, running.len());
    let mut plan = QueuePlan::default();
    for run in order {
        if !is_ready(run.not_before, now) {
            let until = run.not_before.expect("not ready implies not_before");
            plan.wait(run.key.clone(), WaitReason::NotBefore(until));
            continue;
        }
        if let Some((_, holder)) = holders.iter().find(|(t, _)| t.conflicts_with(&run.target)) {
            let holder = (*holder).clone();
            plan.wait(run.key.clone(), WaitReason::TargetBusy { holder });
            continue;
        }
        if slots == 0 {
            plan.wait(
                run.key.clone(),
                WaitReason::GlobalLimit {
                    limit: limit.map_or(usize::MAX, NonZeroUsize::get),
                },
            );
            continue;
        }
        slots -= 1;
        holders.push((&run.target, &run.key));
        plan.start.push(run.key.clone());
    }
    plan
}

#[cfg(test)]
mod tests;
