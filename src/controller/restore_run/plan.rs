//! Pure planning for a RestoreRun: from what was observed (the run, whether its source and
//! Secrets resolve, its Job, the restore queue's decision) to the one next step; plus the
//! pure helpers the reconciler needs (the target's identity for the queue, the agent's report,
//! failure reasons, who asked for the restore). No API calls here.

use std::num::NonZeroUsize;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::common::time_from_chrono;
use crate::api::common::{DatabaseSpec, time_to_chrono};
use crate::api::restore_run::{
    RestoreMode, RestoreRun, RestoreRunPhase, RestoreRunSpec, RestoreRunStatus, SwapStatus,
};
use crate::contract::{ProgressSample, Report, RestoreReport};

use crate::controller::common::blockers::{
    BLOCKED_TIMEOUT, SourceState, TRACK_REQUEUE, WAIT_REQUEUE,
};
use crate::controller::common::job_watch::Observed as JobObserved;
use crate::controller::common::queue::{
    PendingRestore, RunKey, RunningRestore, TargetId, plan_restore_queue,
};
use crate::controller::common::reason::Reason;
use crate::controller::restore_run::approval::Gate;

/// The status reason for a failed restore, from the agent's report and the Job's condition.
pub fn failure_reason(
    report: Option<&RestoreReport>,
    job_reason: &str,
    job_message: &str,
) -> (String, String) {
    if let Some(r) = report.filter(|r| !r.succeeded()) {
        let error = r
            .error
            .clone()
            .unwrap_or_else(|| "the agent reported a failure".into());
        let reason = match r.category.as_deref() {
            Some("integrity") => "ChecksumMismatch",
            Some("target") if error.contains("target in use") => Reason::TargetInUse.as_str(),
            Some("target") if error.contains("guard failed") => Reason::GuardFailed.as_str(),
            Some("target") if error.contains("masking failed") => Reason::MaskingFailed.as_str(),
            Some("target") if error.contains("the tables were swapped") => {
                Reason::SwapIncomplete.as_str()
            }
            Some("target") if error.contains("not empty") => "TargetNotEmpty",
            Some("target") if error.contains("does not exist") => "TargetDatabaseMissing",
            Some("target") => "TargetRejected",
            Some("crypto") => "DecryptionFailed",
            Some("key-unavailable") => Reason::KeyUnavailable.as_str(),
            Some("storage") => "StorageError",
            Some("storage-refused") => "StorageRefused",
            Some("config") => "InvalidConfiguration",
            Some("client-too-old") => "ClientTooOld",
            _ => "RestoreFailed",
        };
        return (reason.into(), error);
    }
    match job_reason {
        crate::controller::common::job_watch::OOM_KILLED => {
            (Reason::OutOfMemory.into(), job_message.to_string())
        }
        "DeadlineExceeded" => (
            "DeadlineExceeded".into(),
            format!("the restore exceeded its activeDeadlineSeconds: {job_message}"),
        ),
        "" => (
            "RestoreFailed".into(),
            "the restore Job failed without a report".into(),
        ),
        other => (
            other.to_string(),
            if job_message.is_empty() {
                "the restore Job failed without a report".into()
            } else {
                job_message.to_string()
            },
        ),
    }
}

/// The identity of the database a restore writes to, for "one restore per target".
/// A target given only as a connection Secret is identified by that Secret.
pub fn target_id(target: &DatabaseSpec, namespace: &str) -> Option<TargetId> {
    let (engine, host, port, database, all, connection) = match (&target.postgres, &target.mysql) {
        (Some(pg), _) => (
            "postgres",
            pg.host.clone(),
            pg.port,
            pg.database.clone(),
            pg.all_databases.unwrap_or(false),
            pg.connection_secret_ref.as_ref(),
        ),
        (None, Some(my)) => (
            "mysql",
            my.host.clone(),
            my.port,
            my.database.clone(),
            my.all_databases.unwrap_or(false),
            my.connection_secret_ref.as_ref(),
        ),
        (None, None) => return None,
    };
    let host = match (host, connection) {
        (Some(h), _) => h,
        (None, Some(c)) => format!("secret-{}.{namespace}", c.name),
        (None, None) => return None,
    };
    let database = if all { None } else { database };
    Some(TargetId::new(
        engine,
        &host,
        port,
        database.as_deref(),
        namespace,
    ))
}

/// The restore queue's decision for `me` given every RestoreRun known (`all`, which may not
/// contain `me` yet), under the global `limit`; also returns how many runs keep waiting.
pub fn queue_state(
    all: &[RestoreRun],
    me: &RestoreRun,
    limit: Option<NonZeroUsize>,
    now: DateTime<Utc>,
) -> (QueueState, usize) {
    let created = |r: &RestoreRun| {
        r.metadata
            .creation_timestamp
            .as_ref()
            .map(time_to_chrono)
            .unwrap_or(now)
    };
    let key_of = |r: &RestoreRun| {
        RunKey::new(
            r.metadata.namespace.clone().unwrap_or_default(),
            r.metadata.name.clone().unwrap_or_default(),
        )
    };
    let mut pending = Vec::new();
    let mut running = Vec::new();
    for r in all {
        let Some(ns) = r.metadata.namespace.as_deref() else {
            continue;
        };
        let status = r.status.as_ref();
        if status
            .and_then(|s| s.phase)
            .is_some_and(RestoreRunPhase::is_finished)
            || r.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(target) = target_id(&r.spec.target, ns) else {
            continue;
        };
        if status.and_then(|s| s.job_name.as_ref()).is_some() {
            running.push(RunningRestore {
                key: key_of(r),
                target,
            });
        } else if !Reason::saved_blocks_restore(status.and_then(|s| s.reason.as_deref())) {
            pending.push(PendingRestore {
                key: key_of(r),
                created_at: created(r),
                target,
                not_before: None,
            });
        }
    }
    let me_key = key_of(me);
    let admitted = QueueState {
        admitted: true,
        position: None,
        message: None,
    };
    if !pending.iter().any(|p| p.key == me_key) && !running.iter().any(|r| r.key == me_key) {
        // The cache may not have seen this run yet (just created): it still competes.
        match target_id(&me.spec.target, &me_key.namespace) {
            Some(target) => pending.push(PendingRestore {
                key: me_key.clone(),
                created_at: created(me),
                target,
                not_before: None,
            }),
            None => return (admitted, 0),
        }
    }
    let q = plan_restore_queue(&pending, &running, limit, now);
    let waiting = q.waiting.len();
    if q.start.contains(&me_key) {
        return (admitted, waiting);
    }
    let state = match q.waiting.iter().find(|w| w.key == me_key) {
        Some(w) => QueueState {
            admitted: false,
            position: Some(w.position),
            message: Some(format!(
                "queued at position {} of {waiting}: {}",
                w.position, w.reason
            )),
        },
        None => QueueState::default(),
    };
    (state, waiting)
}

/// The restore queue's decision for this run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueState {
    /// The run may start now.
    pub admitted: bool,
    /// 1-based queue position while waiting.
    pub position: Option<u32>,
    /// Why it waits.
    pub message: Option<String>,
}

/// Everything the planner needs.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The run.
    pub run: &'a RestoreRun,
    /// Whether its references resolve (ignored once a Job exists).
    pub source: SourceState,
    /// Its Job.
    pub job: JobObserved,
    /// The queue's decision (ignored once a Job exists).
    pub queue: QueueState,
    /// Whether approval lets it start (ignored once a Job exists).
    pub approval: Gate,
    /// A running restore that moves no bytes this long has stalled.
    pub stall_timeout: Duration,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The next step for a RestoreRun.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Finished: nothing to do.
    Done,
    /// Stay Queued with this reason (and queue position); look again later.
    Wait {
        /// Status reason (`Queued`, `SecretNotFound`, …).
        reason: String,
        /// Detail.
        message: String,
        /// Queue position, when waiting in the queue.
        queue_position: Option<u32>,
        /// Whether the user must fix something (a Warning Event).
        blocked: bool,
        /// When to look again.
        requeue: Duration,
    },
    /// Wait in `AwaitingApproval` (holding no place in the queue); look again later.
    AwaitApproval {
        /// `AwaitingApproval`, `ApprovalExpired` or `ApprovalUnavailable`.
        reason: Reason,
        /// What to do about it.
        message: String,
        /// When to look again.
        requeue: Duration,
    },
    /// Create the Job, then record it.
    StartJob,
    /// Record progress; look again later.
    Track {
        /// Pods started.
        attempts: u32,
        /// Newest progress.
        progress: Option<ProgressSample>,
        /// When to look again.
        requeue: Duration,
    },
    /// No bytes moved for too long: stop the Job and fail.
    Stalled {
        /// Detail.
        message: String,
    },
    /// The agent restored and verified the artifact.
    Succeed {
        /// Pods started.
        attempts: u32,
        /// The agent's summary.
        report: RestoreReport,
    },
    /// Fail the run.
    Fail {
        /// Status reason.
        reason: String,
        /// Detail.
        message: String,
        /// The agent's summary, when there was one.
        report: Option<RestoreReport>,
    },
}

/// Decides the next step.
pub fn plan(o: &Observed<'_>) -> Step {
    let status = o.run.status.as_ref();
    if status
        .and_then(|s| s.phase)
        .is_some_and(RestoreRunPhase::is_finished)
    {
        return Step::Done;
    }
    match &o.job {
        JobObserved::NotCreated => plan_start(o),
        JobObserved::Vanished { name } => Step::Fail {
            reason: "JobDeleted".into(),
            message: format!("the restore Job {name} was deleted before it finished"),
            report: None,
        },
        JobObserved::Active { attempts, progress } => {
            let previous = status.and_then(|s| s.progress.as_ref());
            if let (Some(prev), Some(sample)) = (previous, progress)
                && prev.bytes_in == sample.bytes_in
                && let Some(updated) = prev.updated.as_ref().map(time_to_chrono)
            {
                let still = (o.now - updated).to_std().unwrap_or_default();
                if still >= o.stall_timeout {
                    return Step::Stalled {
                        message: format!(
                            "no bytes moved for {}s (stall timeout {}s) at {} bytes read",
                            still.as_secs(),
                            o.stall_timeout.as_secs(),
                            sample.bytes_in
                        ),
                    };
                }
            }
            Step::Track {
                attempts: *attempts,
                progress: *progress,
                requeue: TRACK_REQUEUE,
            }
        }
        JobObserved::Finished {
            attempts,
            succeeded,
            reason,
            message,
            termination_message,
        } => {
            let report = termination_message
                .as_deref()
                .and_then(RestoreReport::parse);
            match (succeeded, report) {
                (true, Some(r)) if r.succeeded() && r.checksum_verified == Some(true) => {
                    Step::Succeed {
                        attempts: *attempts,
                        report: r,
                    }
                }
                (true, Some(r)) if r.succeeded() => Step::Fail {
                    reason: "ChecksumNotVerified".into(),
                    message: "the agent did not confirm the artifact's checksum".into(),
                    report: Some(r),
                },
                (true, None) => Step::Fail {
                    reason: "NoAgentReport".into(),
                    message: "the Job completed but the agent left no summary; the restore cannot be confirmed".into(),
                    report: None,
                },
                (_, report) => {
                    let (reason, msg) = failure_reason(report.as_ref(), reason, message);
                    Step::Fail {
                        reason,
                        message: format!("{msg} (after {attempts} attempt(s))"),
                        report,
                    }
                }
            }
        }
    }
}

fn plan_start(o: &Observed<'_>) -> Step {
    match &o.source {
        SourceState::Invalid(b) => {
            return Step::Fail {
                reason: b.reason.clone(),
                message: b.message.clone(),
                report: None,
            };
        }
        SourceState::Blocked(b) => {
            let waited = o
                .run
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|c| (o.now - time_to_chrono(c)).to_std().unwrap_or_default())
                .unwrap_or_default();
            if waited >= BLOCKED_TIMEOUT {
                return Step::Fail {
                    reason: b.reason.clone(),
                    message: format!(
                        "{} (waited {} minutes for it to be fixed)",
                        b.message,
                        BLOCKED_TIMEOUT.as_secs() / 60
                    ),
                    report: None,
                };
            }
            return Step::Wait {
                reason: b.reason.clone(),
                message: b.message.clone(),
                queue_position: None,
                blocked: true,
                requeue: WAIT_REQUEUE,
            };
        }
        SourceState::Ready => {}
    }
    if let Gate::Waiting {
        reason, message, ..
    } = &o.approval
    {
        return Step::AwaitApproval {
            reason: *reason,
            message: message.clone(),
            requeue: WAIT_REQUEUE,
        };
    }
    if !o.queue.admitted {
        return Step::Wait {
            reason: "Queued".into(),
            message: o
                .queue
                .message
                .clone()
                .unwrap_or_else(|| "waiting for a free restore slot".into()),
            queue_position: o.queue.position,
            blocked: false,
            requeue: WAIT_REQUEUE,
        };
    }
    Step::StartJob
}

/// Whether the restore is expected to be staged (the agent decides for good: an
/// `allDatabases` backup is never staged).
pub fn expected_mode(spec: &RestoreRunSpec) -> RestoreMode {
    let all = spec
        .target
        .postgres
        .as_ref()
        .and_then(|p| p.all_databases)
        .or_else(|| spec.target.mysql.as_ref().and_then(|m| m.all_databases))
        .unwrap_or(false);
    match spec.swap.as_ref().and_then(|s| s.mode) {
        Some(mode) => mode,
        None if all => RestoreMode::InPlace,
        None => RestoreMode::Staged,
    }
}

/// `status.swap` of a finished restore, from the agent's report (pure). A kept previous target
/// is dropped `swap.keepPreviousSeconds` after `now`.
pub fn swap_status(
    spec: &RestoreRunSpec,
    report: Option<&RestoreReport>,
    succeeded: bool,
    now: DateTime<Utc>,
) -> SwapStatus {
    let Some(s) = report.and_then(|r| r.swap.as_ref()) else {
        // In place, or failed before the agent could say: nothing was swapped.
        return SwapStatus {
            mode: if succeeded {
                RestoreMode::InPlace
            } else {
                expected_mode(spec)
            },
            ..Default::default()
        };
    };
    let keep = spec.swap.as_ref().and_then(|w| w.keep_previous_seconds);
    SwapStatus {
        mode: RestoreMode::Staged,
        staging_database: Some(s.staging_database.clone()),
        swapped: succeeded,
        sessions_terminated: Some(s.sessions_terminated).filter(|n| *n > 0),
        masking_rules_applied: Some(s.masking_rules).filter(|n| *n > 0),
        guard_passed: s.guard_passed,
        previous_database: s.previous_database.clone(),
        previous_drop_after: match (s.previous_kept, keep) {
            (true, Some(secs)) => Some(time_from_chrono(now + chrono::Duration::seconds(secs))),
            _ => None,
        },
        ..Default::default()
    }
}

/// What to do about the previous target a Succeeded staged restore kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing kept, or already dropped (or its cleanup failed for good).
    Nothing,
    /// Look again after this long (the grace period runs).
    WaitFor(Duration),
    /// The grace period is over: create the cleanup Job dropping this database.
    StartJob {
        /// The kept previous target.
        previous: String,
    },
    /// The cleanup Job runs: watch it.
    Watch {
        /// Its name.
        job: String,
    },
}

/// Plan the cleanup of the kept previous target (pure).
pub fn plan_cleanup(status: &RestoreRunStatus, now: DateTime<Utc>) -> Cleanup {
    if status.phase != Some(RestoreRunPhase::Succeeded) {
        return Cleanup::Nothing;
    }
    let Some(swap) = &status.swap else {
        return Cleanup::Nothing;
    };
    let (Some(previous), Some(after)) = (&swap.previous_database, &swap.previous_drop_after) else {
        return Cleanup::Nothing;
    };
    if swap.previous_dropped_at.is_some() || swap.cleanup_message.is_some() {
        return Cleanup::Nothing;
    }
    if let Some(job) = &swap.cleanup_job_name {
        return Cleanup::Watch { job: job.clone() };
    }
    let due = time_to_chrono(after);
    if now < due {
        return Cleanup::WaitFor(
            (due - now)
                .to_std()
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_secs(1)),
        );
    }
    Cleanup::StartJob {
        previous: previous.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::time_from_chrono;
    use crate::controller::common::blockers::Blocker;

    fn run(status: &str) -> RestoreRun {
        let mut r: RestoreRun = serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {{name: r1, namespace: shop, creationTimestamp: "2026-11-22T10:00:00Z"}}
spec:
  backupRunRef: {{name: b1}}
  target: {{postgres: {{host: db, port: 5432, database: copy, user: u}}}}
{status}
"#
        ))
        .unwrap();
        r.metadata.managed_fields = None;
        r
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:01:00Z")
            .unwrap()
            .to_utc()
    }

    fn observed<'a>(r: &'a RestoreRun, job: JobObserved) -> Observed<'a> {
        Observed {
            run: r,
            source: SourceState::Ready,
            job,
            queue: QueueState {
                admitted: true,
                position: None,
                message: None,
            },
            approval: Gate::NotRequired,
            stall_timeout: Duration::from_secs(600),
            now: t0(),
        }
    }

    fn finished(succeeded: bool, msg: Option<&str>) -> JobObserved {
        JobObserved::Finished {
            attempts: 1,
            succeeded,
            reason: if succeeded {
                String::new()
            } else {
                "BackoffLimitExceeded".into()
            },
            message: String::new(),
            termination_message: msg.map(str::to_string),
        }
    }

    #[test]
    fn queued_runs_wait_with_their_position_and_admitted_ones_start() {
        let r = run("");
        let mut o = observed(&r, JobObserved::NotCreated);
        assert_eq!(plan(&o), Step::StartJob);
        o.queue = QueueState {
            admitted: false,
            position: Some(2),
            message: Some("queued at position 2".into()),
        };
        match plan(&o) {
            Step::Wait {
                reason,
                queue_position,
                blocked,
                ..
            } => {
                assert_eq!(reason, "Queued");
                assert_eq!(queue_position, Some(2));
                assert!(!blocked);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_restore_awaiting_approval_holds_no_queue_place_and_never_times_out() {
        let r = run("");
        let mut o = observed(&r, JobObserved::NotCreated);
        o.approval = Gate::Waiting {
            reason: Reason::AwaitingApproval,
            message: "needs approval".into(),
            status: Default::default(),
        };
        // Admitted by the queue or not, it waits for approval, however long it has waited.
        for admitted in [true, false] {
            o.queue.admitted = admitted;
            o.now = t0() + chrono::TimeDelta::days(3);
            assert!(
                matches!(
                    plan(&o),
                    Step::AwaitApproval {
                        reason: Reason::AwaitingApproval,
                        ..
                    }
                ),
                "{:?}",
                plan(&o)
            );
        }
        // A source problem is reported first.
        o.source = SourceState::Blocked(Blocker {
            reason: "SecretNotFound".into(),
            message: "Secret x not found".into(),
        });
        o.now = t0();
        assert!(matches!(plan(&o), Step::Wait { blocked: true, .. }));
        // Once approved, the queue decides.
        o.source = SourceState::Ready;
        o.queue.admitted = true;
        o.approval = Gate::Approved {
            status: Default::default(),
            message: "approved".into(),
        };
        assert_eq!(plan(&o), Step::StartJob);
    }

    #[test]
    fn blocked_runs_wait_then_fail_and_invalid_ones_fail_at_once() {
        let r = run("");
        let mut o = observed(&r, JobObserved::NotCreated);
        let b = Blocker {
            reason: "SecretNotFound".into(),
            message: "Secret x not found".into(),
        };
        o.source = SourceState::Blocked(b.clone());
        assert!(matches!(plan(&o), Step::Wait { blocked: true, .. }));
        o.now = t0() + chrono::TimeDelta::minutes(30);
        assert!(matches!(plan(&o), Step::Fail { ref reason, .. } if reason == "SecretNotFound"));
        o.now = t0();
        o.source = SourceState::Invalid(Blocker {
            reason: "EngineMismatch".into(),
            message: "m".into(),
        });
        assert!(matches!(plan(&o), Step::Fail { ref reason, .. } if reason == "EngineMismatch"));
    }

    #[test]
    fn finished_jobs_map_to_success_or_a_precise_reason() {
        let r = run("");
        let ok = r#"{"status":"succeeded","operation":"restore","databases":["copy"],"checksumVerified":true,"sha256":["ab"],"sizeBytes":10}"#;
        assert!(matches!(
            plan(&observed(&r, finished(true, Some(ok)))),
            Step::Succeed { .. }
        ));
        let tampered = r#"{"status":"failed","operation":"restore","category":"integrity","error":"checksum mismatch"}"#;
        match plan(&observed(&r, finished(false, Some(tampered)))) {
            Step::Fail { reason, report, .. } => {
                assert_eq!(reason, "ChecksumMismatch");
                assert!(report.is_some());
            }
            other => panic!("{other:?}"),
        }
        // Crypto-erasure: the KMS key that wraps the data key is disabled or deleted.
        let erased = r#"{"status":"failed","operation":"restore","category":"key-unavailable","error":"key unavailable: KMS key arn:aws:kms:us-east-1:1:key/k cannot be used for Decrypt (DisabledException: disabled)"}"#;
        match plan(&observed(&r, finished(false, Some(erased)))) {
            Step::Fail {
                reason, message, ..
            } => {
                assert_eq!(reason, Reason::KeyUnavailable.as_str());
                assert!(message.contains("DisabledException"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let not_empty = r#"{"status":"failed","category":"target","error":"restore target: database \"copy\" is not empty (3 objects)"}"#;
        assert!(
            matches!(plan(&observed(&r, finished(false, Some(not_empty)))), Step::Fail { ref reason, .. } if reason == "TargetNotEmpty")
        );
        assert!(
            matches!(plan(&observed(&r, finished(true, None))), Step::Fail { ref reason, .. } if reason == "NoAgentReport")
        );
        assert!(
            matches!(plan(&observed(&r, finished(false, None))), Step::Fail { ref reason, .. } if reason == "BackoffLimitExceeded")
        );
        let unverified = r#"{"status":"succeeded","checksumVerified":false}"#;
        assert!(
            matches!(plan(&observed(&r, finished(true, Some(unverified)))), Step::Fail { ref reason, .. } if reason == "ChecksumNotVerified")
        );
        assert!(
            matches!(plan(&observed(&r, JobObserved::Vanished { name: "j".into() })), Step::Fail { ref reason, .. } if reason == "JobDeleted")
        );
        let done = run("status: {phase: Succeeded}");
        assert_eq!(plan(&observed(&done, finished(true, Some(ok)))), Step::Done);
    }

    #[test]
    fn stalls_are_detected_from_unchanged_progress() {
        let mut r = run("status: {phase: Running, jobName: j}");
        let st = r.status.as_mut().unwrap();
        st.progress = Some(crate::api::common::Progress {
            bytes_in: 100,
            bytes_out: 50,
            bytes_per_second: 0,
            updated: Some(time_from_chrono(t0() - chrono::TimeDelta::minutes(20))),
        });
        let sample = ProgressSample {
            bytes_in: 100,
            bytes_out: 50,
            bytes_per_second: 0,
        };
        let o = observed(
            &r,
            JobObserved::Active {
                attempts: 1,
                progress: Some(sample),
            },
        );
        assert!(matches!(plan(&o), Step::Stalled { .. }));
        let moving = ProgressSample {
            bytes_in: 200,
            ..sample
        };
        let o = observed(
            &r,
            JobObserved::Active {
                attempts: 1,
                progress: Some(moving),
            },
        );
        assert!(matches!(plan(&o), Step::Track { .. }));
    }

    #[test]
    fn targets_are_identified_for_the_queue() {
        let r = run("");
        let a = target_id(&r.spec.target, "shop").unwrap();
        let b = TargetId::new(
            "postgresql",
            "db.shop.svc.cluster.local",
            5432,
            Some("copy"),
            "shop",
        );
        assert!(a.conflicts_with(&b));
        let other_db = TargetId::new("postgres", "db", 5432, Some("other"), "shop");
        assert!(!a.conflicts_with(&other_db));
        let spec: DatabaseSpec = serde_yaml::from_str(
            "postgres: {port: 5432, allDatabases: true, connectionSecretRef: {name: conn, key: uri}}",
        )
        .unwrap();
        let whole = target_id(&spec, "shop").unwrap();
        assert!(whole.to_string().contains("secret-conn"));
        assert!(target_id(&DatabaseSpec::default(), "shop").is_none());
    }

    fn named(name: &str, minute: u32, database: &str, status: &str) -> RestoreRun {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {{name: {name}, namespace: shop, creationTimestamp: "2026-11-22T10:{minute:02}:00Z"}}
spec:
  backupRunRef: {{name: b1}}
  target: {{postgres: {{host: db, port: 5432, database: {database}, user: u}}}}
{status}
"#
        ))
        .unwrap()
    }

    #[test]
    fn the_queue_serializes_one_target_and_reports_positions() {
        let limit = NonZeroUsize::new(4);
        let now = t0() + chrono::TimeDelta::hours(1);
        let q1 = named(
            "q1",
            1,
            "same",
            "status: {phase: Running, jobName: q1-restore}",
        );
        let q2 = named("q2", 2, "same", "");
        let q3 = named("q3", 3, "same", "status: {phase: Queued, reason: Queued}");
        let other = named("other", 4, "elsewhere", "");
        let all = vec![q1.clone(), q2.clone(), q3.clone(), other.clone()];
        let (s2, waiting) = queue_state(&all, &q2, limit, now);
        assert_eq!(waiting, 2);
        assert_eq!((s2.admitted, s2.position), (false, Some(1)));
        assert!(s2.message.unwrap().contains("q1"), "names the holder");
        let (s3, _) = queue_state(&all, &q3, limit, now);
        assert_eq!((s3.admitted, s3.position), (false, Some(2)));
        // Another database goes ahead.
        assert!(queue_state(&all, &other, limit, now).0.admitted);
        // Once q1 finished, q2 (the oldest) starts and q3 keeps waiting behind it.
        let done = named(
            "q1",
            1,
            "same",
            "status: {phase: Succeeded, jobName: q1-restore}",
        );
        let all = vec![done, q2.clone(), q3.clone()];
        assert!(queue_state(&all, &q2, limit, now).0.admitted);
        assert_eq!(queue_state(&all, &q3, limit, now).0.position, Some(1));
        // A run the cache has not seen yet still competes; a blocked run holds no place.
        let blocked = named(
            "q0",
            0,
            "same",
            "status: {phase: Queued, reason: SecretNotFound}",
        );
        let fresh = named("q9", 9, "fresh", "");
        let all = vec![blocked, q2.clone()];
        assert!(queue_state(&all, &q2, limit, now).0.admitted);
        assert!(queue_state(&all, &fresh, limit, now).0.admitted);
        // The global limit holds back restores to other databases too.
        let busy = named(
            "busy",
            0,
            "x",
            "status: {phase: Running, jobName: busy-restore}",
        );
        let all = vec![busy, other.clone()];
        let (s, _) = queue_state(&all, &other, NonZeroUsize::new(1), now);
        assert_eq!((s.admitted, s.position), (false, Some(1)));
    }

    #[test]
    fn swap_status_and_the_cleanup_of_a_kept_previous_target() {
        use crate::contract::SwapSummary;
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .to_utc();
        let mut r = run("");
        r.spec.swap = Some(crate::api::restore_run::SwapSpec {
            keep_previous_seconds: Some(600),
            ..Default::default()
        });
        let report = RestoreReport {
            status: "succeeded".into(),
            swap: Some(SwapSummary {
                staging_database: "shop_dgstaging".into(),
                target_database: "shop".into(),
                masking_rules: 2,
                guard_passed: Some(true),
                previous_database: Some("shop_dgprev_20261207100000".into()),
                previous_kept: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let swap = swap_status(&r.spec, Some(&report), true, now);
        assert!(swap.swapped && swap.mode == RestoreMode::Staged);
        assert_eq!(swap.masking_rules_applied, Some(2));
        assert_eq!(swap.sessions_terminated, None);
        let mut status = RestoreRunStatus {
            phase: Some(RestoreRunPhase::Succeeded),
            swap: Some(swap),
            ..Default::default()
        };
        assert_eq!(
            plan_cleanup(&status, now),
            Cleanup::WaitFor(Duration::from_secs(600))
        );
        let later = now + chrono::Duration::seconds(601);
        assert_eq!(
            plan_cleanup(&status, later),
            Cleanup::StartJob {
                previous: "shop_dgprev_20261207100000".into()
            }
        );
        status.swap.as_mut().unwrap().cleanup_job_name = Some("j".into());
        assert_eq!(
            plan_cleanup(&status, later),
            Cleanup::Watch { job: "j".into() }
        );
        status.swap.as_mut().unwrap().previous_dropped_at = Some(time_from_chrono(later));
        assert_eq!(plan_cleanup(&status, later), Cleanup::Nothing);
        // A failed staged restore swapped nothing; an in-place success says so.
        let failed = swap_status(&r.spec, None, false, now);
        assert_eq!((failed.mode, failed.swapped), (RestoreMode::Staged, false));
        assert_eq!(
            plan_cleanup(
                &RestoreRunStatus {
                    phase: Some(RestoreRunPhase::Failed),
                    swap: Some(failed),
                    ..Default::default()
                },
                later
            ),
            Cleanup::Nothing
        );
        let in_place = swap_status(
            &r.spec,
            Some(&RestoreReport {
                status: "succeeded".into(),
                ..Default::default()
            }),
            true,
            now,
        );
        assert_eq!(in_place.mode, RestoreMode::InPlace);
    }

    #[test]
    fn staged_failures_map_to_their_reasons() {
        let reason = |e: &str| {
            let r = RestoreReport {
                status: "failed".into(),
                category: Some("target".into()),
                error: Some(e.into()),
                ..Default::default()
            };
            failure_reason(Some(&r), "", "").0
        };
        assert_eq!(
            reason("restore target: target in use: 2 session(s)"),
            "TargetInUse"
        );
        assert_eq!(
            reason("restore target: guard failed: the guard query returned \"f\""),
            "GuardFailed"
        );
        assert_eq!(
            reason("restore target: masking failed: psql failed"),
            "MaskingFailed"
        );
        assert_eq!(
            reason("restore target: the tables were swapped into \"x\" but"),
            "SwapIncomplete"
        );
        assert_eq!(
            reason("restore target: database \"x\" is not empty"),
            "TargetNotEmpty"
        );
    }
}
