//! Pure planning for a BackupRun: from what was observed (the run, whether its references
//! resolve, its Job and pods, the queue's decision) to the one next step. No API calls here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::backup_run::{BackupRun, BackupRunPhase};
use crate::api::common::time_to_chrono;
use crate::contract::{AgentReport, ProgressSample, Report};

use crate::controller::common::blockers::{BLOCKED_TIMEOUT, Blocker, TRACK_REQUEUE, WAIT_REQUEUE};

/// The run's Job as observed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// `status.jobName` is not set yet: no Job was created for this run.
    NotCreated,
    /// `status.jobName` is set but the Job is gone (deleted by hand, or garbage collected).
    Vanished { name: String },
    /// The Job runs (or waits for its pod).
    Active {
        attempts: u32,
        progress: Option<ProgressSample>,
    },
    /// The Job completed.
    Succeeded {
        attempts: u32,
        report: Option<AgentReport>,
    },
    /// The Job failed for good.
    Failed {
        attempts: u32,
        reason: String,
        message: String,
        report: Option<AgentReport>,
    },
}

/// Everything the planner needs.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub run: &'a BackupRun,
    /// `Err` when a reference does not resolve.
    pub references: Result<(), Blocker>,
    pub job: JobState,
    /// The backup queue admits this run now (ignored once a Job exists).
    pub admitted: bool,
    /// Position in the backup queue when not admitted.
    pub queue_message: Option<String>,
    /// Seconds without progress after which a running backup counts as stalled.
    pub stall_timeout: Duration,
    pub now: DateTime<Utc>,
}

/// The next step for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Finished: nothing to do.
    Done,
    /// Stay Pending with this reason; look again later.
    Wait {
        reason: String,
        message: String,
        requeue: Duration,
    },
    /// Create the Job, then record it in status.
    StartJob,
    /// Record progress; look again later.
    Track {
        attempts: u32,
        progress: Option<ProgressSample>,
        requeue: Duration,
    },
    /// The transfer stopped moving: stop the Job and fail.
    Stalled { message: String },
    /// The Job completed: confirm the artifact in storage, then succeed (or fail if it isn't there).
    Confirm {
        attempts: u32,
        report: Box<AgentReport>,
    },
    /// Fail the run.
    Fail { reason: String, message: String },
}

fn phase(run: &BackupRun) -> Option<BackupRunPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

fn created_at(run: &BackupRun) -> Option<DateTime<Utc>> {
    run.metadata.creation_timestamp.as_ref().map(time_to_chrono)
}

/// Decides the next step.
pub fn plan(o: &Observed<'_>) -> Step {
    if phase(o.run).is_some_and(BackupRunPhase::is_finished) {
        return Step::Done;
    }
    match &o.job {
        JobState::NotCreated => plan_start(o),
        JobState::Vanished { name } => Step::Fail {
            reason: "JobDeleted".into(),
            message: format!("the backup Job {name} was deleted before it finished"),
        },
        JobState::Active { attempts, progress } => plan_active(o, *attempts, *progress),
        JobState::Succeeded { attempts, report } => match report {
            Some(r) if r.succeeded() => Step::Confirm { attempts: *attempts, report: Box::new(r.clone()) },
            Some(r) => Step::Fail {
                reason: "AgentReportedFailure".into(),
                message: r.error.clone().unwrap_or_else(|| "the agent reported a failure".into()),
            },
            None => Step::Fail {
                reason: "NoAgentReport".into(),
                message: "the Job completed but the agent left no summary; the backup cannot be confirmed".into(),
            },
        },
        JobState::Failed { attempts, reason, message, report } => {
            let (reason, message) = failure_reason(reason, message, report.as_ref());
            Step::Fail { reason, message: format!("{message} (after {attempts} attempt(s))") }
        }
    }
}

fn plan_start(o: &Observed<'_>) -> Step {
    if let Err(blocker) = &o.references {
        let waited = created_at(o.run)
            .map(|c| (o.now - c).to_std().unwrap_or_default())
            .unwrap_or_default();
        if waited >= BLOCKED_TIMEOUT {
            return Step::Fail {
                reason: blocker.reason.clone(),
                message: format!(
                    "{} (waited {} minutes for it to be fixed)",
                    blocker.message,
                    BLOCKED_TIMEOUT.as_secs() / 60
                ),
            };
        }
        return Step::Wait {
            reason: blocker.reason.clone(),
            message: blocker.message.clone(),
            requeue: WAIT_REQUEUE,
        };
    }
    if !o.admitted {
        return Step::Wait {
            reason: "Queued".into(),
            message: o
                .queue_message
                .clone()
                .unwrap_or_else(|| "waiting for a free backup slot".into()),
            requeue: WAIT_REQUEUE,
        };
    }
    Step::StartJob
}

fn plan_active(o: &Observed<'_>, attempts: u32, progress: Option<ProgressSample>) -> Step {
    let status = o.run.status.as_ref();
    let previous = status.and_then(|s| s.progress.as_ref());
    // Stall: the byte counter has not moved since the last recorded change, for too long.
    if let (Some(prev), Some(now_sample)) = (previous, progress)
        && prev.bytes_in == now_sample.bytes_in
        && let Some(updated) = prev.updated.as_ref().map(time_to_chrono)
    {
        let still = (o.now - updated).to_std().unwrap_or_default();
        if still >= o.stall_timeout {
            return Step::Stalled {
                message: format!(
                    "no bytes moved for {}s (stall timeout {}s) at {} bytes read",
                    still.as_secs(),
                    o.stall_timeout.as_secs(),
                    now_sample.bytes_in
                ),
            };
        }
    }
    Step::Track {
        attempts,
        progress,
        requeue: TRACK_REQUEUE,
    }
}

/// Maps the Job's failure and the agent's report to a status reason and message.
fn failure_reason(
    job_reason: &str,
    job_message: &str,
    report: Option<&AgentReport>,
) -> (String, String) {
    if job_reason == crate::controller::common::job_watch::OOM_KILLED {
        return (
            crate::controller::common::reason::Reason::OutOfMemory.into(),
            job_message.to_string(),
        );
    }
    if job_reason == "DeadlineExceeded" {
        return (
            "DeadlineExceeded".into(),
            "the backup did not finish within activeDeadlineSeconds".into(),
        );
    }
    if let Some(r) = report.filter(|r| !r.succeeded()) {
        let reason = match r.category.as_deref() {
            Some("source") => "DumpFailed",
            Some("storage") => "StorageFailed",
            Some("storage-refused") => "StorageRefused",
            Some("integrity") => "ChecksumMismatch",
            Some("crypto") => "EncryptionFailed",
            Some("key-unavailable") => {
                crate::controller::common::reason::Reason::KeyUnavailable.as_str()
            }
            Some("config") => "InvalidConfiguration",
            Some("client-too-old") => "ClientTooOld",
            _ => "BackupFailed",
        };
        return (
            reason.into(),
            r.error.clone().unwrap_or_else(|| job_message.to_string()),
        );
    }
    let reason = if job_reason.is_empty() {
        "JobFailed"
    } else {
        job_reason
    };
    (
        reason.to_string(),
        if job_message.is_empty() {
            "the backup Job failed".into()
        } else {
            job_message.to_string()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup_run::{BackupRunSpec, BackupRunStatus, Trigger};
    use crate::api::common::{LocalObjectReference, Progress, time_from_chrono};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn run(created: &str, status: Option<BackupRunStatus>) -> BackupRun {
        let mut r = BackupRun::new(
            "r1",
            BackupRunSpec {
                policy_ref: LocalObjectReference::new("nightly"),
                trigger: Trigger::Manual,
                scheduled_time: None,
                reason: None,
                compression: None,
                active_deadline_seconds: None,
            },
        );
        r.metadata.namespace = Some("shop".into());
        r.metadata.creation_timestamp = Some(time_from_chrono(t(created)));
        r.status = status;
        r
    }

    fn observed<'a>(run: &'a BackupRun, job: JobState, now: &str) -> Observed<'a> {
        Observed {
            run,
            references: Ok(()),
            job,
            admitted: true,
            queue_message: None,
            stall_timeout: Duration::from_secs(600),
            now: t(now),
        }
    }

    #[test]
    fn finished_runs_are_left_alone() {
        let r = run(
            "2026-11-22T10:00:00Z",
            Some(BackupRunStatus {
                phase: Some(BackupRunPhase::Failed),
                ..Default::default()
            }),
        );
        assert_eq!(
            plan(&observed(&r, JobState::NotCreated, "2026-11-22T10:00:01Z")),
            Step::Done
        );
    }

    #[test]
    fn blocked_runs_wait_then_fail_with_the_blocker_reason() {
        let r = run("2026-11-22T10:00:00Z", None);
        let mut o = observed(&r, JobState::NotCreated, "2026-11-22T10:01:00Z");
        o.references = Err(Blocker {
            reason: "SecretNotFound".into(),
            message: "Secret db-creds not found".into(),
        });
        assert!(matches!(plan(&o), Step::Wait { ref reason, .. } if reason == "SecretNotFound"));
        o.now = t("2026-11-22T10:10:00Z");
        assert!(
            matches!(plan(&o), Step::Fail { ref reason, ref message } if reason == "SecretNotFound" && message.contains("db-creds"))
        );
    }

    #[test]
    fn queued_runs_wait_and_admitted_runs_start() {
        let r = run("2026-11-22T10:00:00Z", None);
        let mut o = observed(&r, JobState::NotCreated, "2026-11-22T10:00:01Z");
        o.admitted = false;
        o.queue_message = Some("position 3 of 5".into());
        assert_eq!(
            plan(&o),
            Step::Wait {
                reason: "Queued".into(),
                message: "position 3 of 5".into(),
                requeue: WAIT_REQUEUE
            }
        );
        o.admitted = true;
        assert_eq!(plan(&o), Step::StartJob);
    }

    #[test]
    fn a_vanished_job_fails_the_run() {
        let r = run(
            "2026-11-22T10:00:00Z",
            Some(BackupRunStatus {
                phase: Some(BackupRunPhase::Running),
                job_name: Some("r1".into()),
                ..Default::default()
            }),
        );
        let s = plan(&observed(
            &r,
            JobState::Vanished { name: "r1".into() },
            "2026-11-22T10:05:00Z",
        ));
        assert!(matches!(s, Step::Fail { ref reason, .. } if reason == "JobDeleted"));
    }

    #[test]
    fn stalled_transfers_are_detected_from_unchanged_counters() {
        let status = BackupRunStatus {
            phase: Some(BackupRunPhase::Running),
            job_name: Some("r1".into()),
            progress: Some(Box::new(Progress {
                bytes_in: 500,
                bytes_out: 100,
                bytes_per_second: 0,
                updated: Some(time_from_chrono(t("2026-11-22T10:00:00Z"))),
            })),
            ..Default::default()
        };
        let r = run("2026-11-22T09:59:00Z", Some(status));
        let same = Some(ProgressSample {
            bytes_in: 500,
            bytes_out: 100,
            bytes_per_second: 0,
        });
        let moved = Some(ProgressSample {
            bytes_in: 900,
            bytes_out: 200,
            bytes_per_second: 40,
        });
        assert!(matches!(
            plan(&observed(
                &r,
                JobState::Active {
                    attempts: 1,
                    progress: same
                },
                "2026-11-22T10:05:00Z"
            )),
            Step::Track { .. }
        ));
        assert!(matches!(
            plan(&observed(
                &r,
                JobState::Active {
                    attempts: 1,
                    progress: same
                },
                "2026-11-22T10:10:00Z"
            )),
            Step::Stalled { .. }
        ));
        assert!(matches!(
            plan(&observed(
                &r,
                JobState::Active {
                    attempts: 1,
                    progress: moved
                },
                "2026-11-22T10:10:00Z"
            )),
            Step::Track { .. }
        ));
    }

    #[test]
    fn completed_jobs_need_a_successful_report_to_be_confirmed() {
        let r = run("2026-11-22T10:00:00Z", None);
        let ok = AgentReport {
            status: "succeeded".into(),
            ..Default::default()
        };
        assert!(matches!(
            plan(&observed(
                &r,
                JobState::Succeeded {
                    attempts: 1,
                    report: Some(ok)
                },
                "2026-11-22T10:05:00Z"
            )),
            Step::Confirm { attempts: 1, .. }
        ));
        assert!(matches!(
            plan(&observed(&r, JobState::Succeeded { attempts: 1, report: None }, "2026-11-22T10:05:00Z")),
            Step::Fail { ref reason, .. } if reason == "NoAgentReport"
        ));
    }

    #[test]
    fn failures_carry_the_agents_category_and_the_deadline() {
        let r = run("2026-11-22T10:00:00Z", None);
        let report = AgentReport {
            status: "failed".into(),
            category: Some("source".into()),
            error: Some("pg_dump: connection refused".into()),
            ..Default::default()
        };
        let s = plan(&observed(
            &r,
            JobState::Failed {
                attempts: 3,
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
                report: Some(report),
            },
            "2026-11-22T10:05:00Z",
        ));
        assert!(
            matches!(s, Step::Fail { ref reason, ref message } if reason == "DumpFailed" && message.contains("connection refused") && message.contains("3 attempt"))
        );
        let s = plan(&observed(
            &r,
            JobState::Failed {
                attempts: 1,
                reason: "DeadlineExceeded".into(),
                message: String::new(),
                report: None,
            },
            "2026-11-22T10:05:00Z",
        ));
        assert!(matches!(s, Step::Fail { ref reason, .. } if reason == "DeadlineExceeded"));
    }
}
