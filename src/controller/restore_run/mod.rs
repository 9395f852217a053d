//! The RestoreRun reconciler: read → resolve the artifact (a Succeeded BackupRun of the same
//! namespace, or a storage + key) and the Secrets → queue (FIFO, global limit, one restore per
//! target database; [`crate::controller::common::queue::plan_restore_queue`]) → plan (pure,
//! [`crate::controller::restore_run::plan`]) → apply (server-side apply of the Job, then of the whole
//! status) → Events and metrics.
//!
//! Invariants (as for backups): one Job per run with a deterministic name, recorded in status
//! right after it is applied; the agent always verifies every artifact's checksum before it
//! touches the target (`--verify-first`), so a tampered artifact fails the run with reason
//! `ChecksumMismatch` and the target untouched.

pub mod approval;
pub mod plan;

use crate::api::backup_policy::{NotificationEvent, RestoreApproval};
use crate::notify::message::{Details, Notification, database_of};
use approval::{ApprovalRule, Gate};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::api::backup_run::BackupRunPhase;
use crate::api::common::{
    JobTemplate, SecretKeySelector, format_bytes, format_duration, set_condition, time_from_chrono,
    time_to_chrono,
};
use crate::api::restore_run::{ChecksumVerification, RestoreRunStatus, RestoreSource, SwapStatus};
use crate::api::{BackupPolicy, BackupRun, BackupStorage, RestoreRun, RestoreRunPhase};
use crate::contract::{Report, RestoreReport};
use crate::jobs::restore_job;
use crate::jobs::shell::{JobBuildError, JobDefaults};
use crate::telemetry::metrics::{QueueLabels, RunLabels, RunResult};

use crate::contract::ArtifactPin;
use crate::controller::common::blockers::{
    SourceState, blocked, invalid, missing_secret, stop_blocked, stop_invalid, storage_secrets,
};
use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};
use crate::controller::common::job_watch;
use crate::controller::common::read_from;
use crate::controller::common::reason::Reason;
use crate::controller::common::reconcile::namespace_and_name;
use crate::controller::common::status::{ControllerStatus, apply as apply_status};
use crate::controller::restore_run::plan::{
    Cleanup, Observed, QueueState, Step, plan, queue_state, target_id,
};
use crate::jobs::source::artifact_pin;

/// Field manager of everything this controller writes.
pub const FIELD_MANAGER: &str = "dataguardian-restorerun";

/// The artifact a run restores, resolved.
struct Resolved {
    storage: BackupStorage,
    manifest_location: String,
    /// What the BackupRun recorded (nothing for storage + key); the agent refuses any other
    /// manifest before it touches the target.
    pin: ArtifactPin,
    source: RestoreSource,
    template: Option<JobTemplate>,
    /// Why a copy is read instead of the primary (the Event's note), if it is.
    fallback: Option<String>,
    /// The backup's policy's approval rule (none for storage + key restores).
    approval: Option<RestoreApproval>,
}

/// Reconciles one RestoreRun.
pub async fn reconcile(run: Arc<RestoreRun>, ctx: Arc<Context>) -> Result<Action> {
    let (ns, name) = namespace_and_name(run.as_ref())?;
    let status = run.status.clone().unwrap_or_default();
    if run.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if status.phase.is_some_and(RestoreRunPhase::is_finished) {
        // A staged restore may have kept the previous target for a grace period.
        return cleanup_previous(&ctx, &ns, &run, &status).await;
    }
    let job_name = status.job_name.clone();
    let (source_state, resolved) = if job_name.is_some() {
        (SourceState::Ready, None) // checked before the Job was created
    } else {
        resolve(&ctx, &ns, &run).await?
    };
    let job = job_watch::observe(&ctx, &ns, job_name.as_deref()).await?;
    let queue = if job_name.is_none() && source_state == SourceState::Ready {
        queue_decision(&ctx, &run)
    } else {
        QueueState::default()
    };
    let stall_timeout =
        Duration::from_secs(run.spec.stall_timeout_seconds.unwrap_or(600).max(30) as u64);
    let now = Utc::now();
    let gate = match &resolved {
        Some(r) => approval::gate(
            &run,
            ApprovalRule::effective(
                r.approval.as_ref(),
                ApprovalRule {
                    required: ctx.settings.restore_approval,
                    valid_for: ctx.settings.restore_approval_valid_for,
                },
            ),
            ctx.settings.requester_recorded,
            now,
        ),
        None => Gate::NotRequired,
    };
    let step = plan(&Observed {
        run: &run,
        source: source_state,
        job,
        queue,
        approval: gate.clone(),
        stall_timeout,
        now,
    });
    tracing::debug!(run = %format!("{ns}/{name}"), ?step, "planned");
    match step {
        Step::Done => Ok(Action::await_change()),
        Step::Wait {
            reason,
            message,
            queue_position,
            blocked,
            requeue,
        } => {
            if status.reason.as_deref() != Some(reason.as_str())
                || status.message.as_deref() != Some(message.as_str())
                || status.queue_position != queue_position
                || status.phase.is_none()
            {
                let mut next = status.clone();
                next.phase = Some(RestoreRunPhase::Queued);
                next.reason = Some(reason.clone());
                next.message = Some(message.clone());
                next.queue_position = queue_position;
                next.observed_generation = run.metadata.generation;
                next.approval = gate.status().cloned();
                apply_status(&ctx, &ns, &name, &next).await?;
                if status.reason.as_deref() != Some(reason.as_str()) {
                    let type_ = if blocked {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    };
                    ctx.event(run.as_ref(), type_, &reason, "Wait", message)
                        .await;
                }
            }
            Ok(Action::requeue(requeue))
        }
        Step::AwaitApproval {
            reason,
            message,
            requeue,
        } => {
            let approval = gate.status().cloned();
            if status.reason.as_deref() != Some(reason.as_str())
                || status.message.as_deref() != Some(message.as_str())
                || status.phase != Some(RestoreRunPhase::AwaitingApproval)
                || status.approval != approval
            {
                let mut next = status.clone();
                next.phase = Some(RestoreRunPhase::AwaitingApproval);
                next.reason = Some(reason.as_str().to_string());
                next.message = Some(message.clone());
                next.queue_position = None;
                next.observed_generation = run.metadata.generation;
                next.approval = approval;
                apply_status(&ctx, &ns, &name, &next).await?;
                if status.reason.as_deref() != Some(reason.as_str()) {
                    await_approval_news(&ctx, &ns, &run, reason, &message).await;
                }
            }
            Ok(Action::requeue(requeue))
        }
        Step::StartJob => {
            let Some(resolved) = resolved else {
                return Err(Error::InvalidSpec(
                    "the restore's source vanished while starting".into(),
                ));
            };
            start_job(&ctx, &ns, &run, resolved, &gate).await
        }
        Step::Track {
            attempts,
            progress,
            requeue,
        } => {
            let mut next = status.clone();
            next.attempts = Some(attempts.max(1));
            if let Some(sample) = progress {
                next.progress = Some(crate::controller::common::status::advance_progress(
                    status.progress.as_ref(),
                    sample,
                    now,
                ));
            }
            if next != status {
                apply_status(&ctx, &ns, &name, &next).await?;
            }
            if attempts > status.attempts.unwrap_or(1) {
                ctx.event(
                    run.as_ref(),
                    EventType::Warning,
                    "Retrying",
                    "Retry",
                    format!("restore attempt {attempts} started after a failed attempt"),
                )
                .await;
            }
            Ok(Action::requeue(requeue))
        }
        Step::Stalled { message } => {
            if let Some(job) = &job_name {
                job_watch::delete(&ctx, &ns, job).await?;
            }
            finish(
                &ctx,
                &ns,
                &run,
                RestoreRunPhase::Failed,
                "Stalled",
                &message,
                None,
            )
            .await
        }
        Step::Succeed { attempts, report } => {
            let mut with_attempts = (*run).clone();
            with_attempts
                .status
                .get_or_insert_with(Default::default)
                .attempts = Some(attempts.max(1));
            let msg = format!(
                "restored {} into {} ({} read, checksum verified before writing)",
                source_text(&status),
                target_text(&run),
                format_bytes(report.size_bytes.unwrap_or(0)),
            );
            finish(
                &ctx,
                &ns,
                &with_attempts,
                RestoreRunPhase::Succeeded,
                "Completed",
                &msg,
                Some(&report),
            )
            .await
        }
        Step::Fail {
            reason,
            message,
            report,
        } => {
            finish(
                &ctx,
                &ns,
                &run,
                RestoreRunPhase::Failed,
                &reason,
                &message,
                report.as_ref(),
            )
            .await
        }
    }
}

/// Resolves the artifact, its storage and every Secret the Job will reference.
async fn resolve(
    ctx: &Context,
    ns: &str,
    run: &RestoreRun,
) -> Result<(SourceState, Option<Resolved>)> {
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), ns);
    let spec = &run.spec;
    let target_engine = spec.target.engine();
    let resolved = if let Some(r) = &spec.backup_run_ref {
        let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
        let Some(backup) = runs.get_opt(&r.name).await? else {
            return stop_blocked(
                "BackupRunNotFound",
                format!("BackupRun {} not found in namespace {ns}", r.name),
            );
        };
        let bstatus = backup.status.clone().unwrap_or_default();
        match bstatus.phase {
            Some(BackupRunPhase::Succeeded) => {}
            Some(BackupRunPhase::Failed) => {
                return stop_invalid(
                    "BackupRunFailed",
                    format!("BackupRun {} failed; it has no artifact to restore", r.name),
                );
            }
            phase => {
                return stop_blocked(
                    "BackupRunNotReady",
                    format!(
                        "BackupRun {} is {:?}; the restore waits for it to succeed",
                        r.name,
                        phase.unwrap_or_default()
                    ),
                );
            }
        }
        let Some(artifact) = bstatus.artifact else {
            return stop_invalid(
                "NoArtifact",
                format!("BackupRun {} succeeded but records no artifact", r.name),
            );
        };
        if let Some(engine) = target_engine
            && !artifact.engine.is_empty()
            && artifact.engine != engine.as_str()
        {
            return stop_invalid(
                "EngineMismatch",
                format!(
                    "the backup is a {} backup; the target is {}",
                    artifact.engine,
                    engine.as_str()
                ),
            );
        }
        if artifact.encryption.is_some() && spec.decryption.is_none() {
            return stop_invalid(
                "DecryptionRequired",
                format!(
                    "the backup is encrypted; set spec.decryption.identitySecretRef and/or spec.decryption.kms (recipients {})",
                    artifact
                        .encryption
                        .as_ref()
                        .map(|e| e.recipients.join(", "))
                        .unwrap_or_default()
                ),
            );
        }
        let located = match read_from::locate(
            ctx,
            ns,
            &r.name,
            &artifact,
            spec.read_from.as_ref().map(|s| s.name.as_str()),
        )
        .await?
        {
            Ok(found) => found,
            Err(state) => return Ok((state, None)),
        };
        let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), ns);
        let policy = policies.get_opt(&backup.spec.policy_ref.name).await?;
        let approval = policy
            .as_ref()
            .and_then(|p| p.spec.restore_approval.clone());
        let template = policy.and_then(|p| p.spec.job_template.map(|t| *t));
        Resolved {
            source: RestoreSource {
                storage: located.storage.name_any(),
                key: located.key,
                size_bytes: Some(artifact.size_bytes),
                engine: Some(artifact.engine.clone()).filter(|e| !e.is_empty()),
            },
            storage: located.storage,
            manifest_location: located.manifest_location,
            pin: artifact_pin(&artifact),
            template,
            fallback: located.fallback,
            approval,
        }
    } else {
        if spec.read_from.is_some() {
            return stop_invalid(
                "InvalidSpec",
                "readFrom chooses where a backupRunRef restore reads; a storageRef + key restore names its storage itself".into(),
            );
        }
        let (Some(sref), Some(key)) = (&spec.storage_ref, &spec.key) else {
            return stop_invalid(
                "InvalidSpec",
                "set backupRunRef, or storageRef and key".into(),
            );
        };
        let Some(storage) = storages.get_opt(&sref.name).await? else {
            return stop_blocked(
                "StorageNotFound",
                format!("BackupStorage {} not found in namespace {ns}", sref.name),
            );
        };
        let location = match restore_job::manifest_location(&storage, key) {
            Ok(loc) => loc,
            Err(e) => return Ok((invalid("InvalidSource", e.to_string()), None)),
        };
        Resolved {
            source: RestoreSource {
                storage: sref.name.clone(),
                key: key.clone(),
                size_bytes: None,
                engine: None,
            },
            storage,
            manifest_location: location,
            // Nothing was recorded here: the digest the user pins (if any) is the pin.
            pin: ArtifactPin {
                manifest_sha256: spec.manifest_sha256.clone(),
                ..ArtifactPin::default()
            },
            template: None,
            fallback: None,
            approval: None,
        }
    };
    let mut needed: Vec<SecretKeySelector> = Vec::new();
    for endpoint in [
        spec.target
            .postgres
            .as_ref()
            .map(|p| (&p.password_secret_ref, &p.connection_secret_ref)),
        spec.target
            .mysql
            .as_ref()
            .map(|m| (&m.password_secret_ref, &m.connection_secret_ref)),
    ]
    .into_iter()
    .flatten()
    {
        needed.extend(endpoint.0.iter().cloned());
        needed.extend(endpoint.1.iter().cloned());
    }
    if let Some(d) = &spec.decryption {
        needed.extend(d.secret_refs());
    }
    if let Some(message) = crate::controller::common::storage_access::ambient_refusal(
        &resolved.storage,
        ns,
        ctx.settings.allows_ambient_credentials(ns),
    ) {
        return Ok((
            blocked(
                crate::controller::common::storage_access::AMBIENT_CREDENTIALS_REFUSED,
                message,
            ),
            None,
        ));
    }
    needed.extend(storage_secrets(&resolved.storage));
    if let Some(b) = missing_secret(ctx, ns, &needed).await? {
        return Ok((SourceState::Blocked(b), None));
    }
    Ok((SourceState::Ready, Some(resolved)))
}

/// The restore queue's decision for `run`, from every RestoreRun in the cache.
fn queue_decision(ctx: &Context, run: &RestoreRun) -> QueueState {
    let all: Vec<RestoreRun> = ctx
        .restore_runs
        .state()
        .iter()
        .map(|r| (**r).clone())
        .collect();
    let (state, waiting) = queue_state(&all, run, ctx.settings.max_concurrent_restores, Utc::now());
    ctx.metrics
        .queue_depth
        .get_or_create(&QueueLabels {
            queue: "restore".into(),
        })
        .set(waiting as i64);
    state
}

fn source_text(status: &RestoreRunStatus) -> String {
    match &status.source {
        Some(s) => format!("{} from storage {}", s.key, s.storage),
        None => "the artifact".into(),
    }
}

fn target_text(run: &RestoreRun) -> String {
    match target_id(&run.spec.target, &run.namespace().unwrap_or_default()) {
        Some(t) => t.to_string(),
        None => "the target".into(),
    }
}

/// The Event and the notification of a restore that starts waiting for approval (or for a new
/// one).
async fn await_approval_news(
    ctx: &Context,
    ns: &str,
    run: &RestoreRun,
    reason: Reason,
    message: &str,
) {
    let type_ = if reason == Reason::ApprovalUnavailable {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let who = who_in_parentheses(ctx, run);
    ctx.event(
        run,
        type_,
        reason.as_str(),
        "AwaitApproval",
        format!("restore into {}{who}: {message}", target_text(run)),
    )
    .await;
    notify(
        ctx,
        ns,
        run,
        NotificationEvent::RestoreAwaitingApproval,
        reason.as_str(),
        message,
        Utc::now(),
    )
    .await;
}

/// `" (requested by alice)"` (or the client-chosen field manager, marked as such) for Events;
/// empty when neither is known.
fn who_in_parentheses(ctx: &Context, run: &RestoreRun) -> String {
    match crate::controller::common::requester::who_note(
        &run.metadata,
        ctx.settings.requester_recorded,
    ) {
        note if note.is_empty() => note,
        note => format!(" ({note})"),
    }
}

/// Sends `event` about `run` to the channels of its backup's policy (from the run cache; an
/// artifact given by storage + key has none); returns that policy's name (empty without one).
async fn notify(
    ctx: &Context,
    ns: &str,
    run: &RestoreRun,
    event: NotificationEvent,
    reason: &str,
    message: &str,
    time: chrono::DateTime<Utc>,
) -> String {
    let policy = run
        .spec
        .backup_run_ref
        .as_ref()
        .and_then(|b| ctx.runs.policy_of_run(ns, &b.name))
        .unwrap_or_default();
    ctx.notify_policy_named(
        ns,
        &policy,
        Notification {
            event,
            namespace: ns.to_string(),
            policy: policy.clone(),
            kind: "RestoreRun".into(),
            name: run.name_any(),
            reason: reason.to_string(),
            message: format!("{message}; target {}", target_text(run)),
            time,
            details: Details {
                database: database_of(&run.spec.target),
                run: run.spec.backup_run_ref.as_ref().map(|b| b.name.clone()),
                requester: crate::controller::common::requester::requested_by(
                    &run.metadata,
                    ctx.settings.requester_recorded,
                ),
                ..Details::default()
            },
        },
    )
    .await;
    policy
}

async fn start_job(
    ctx: &Context,
    ns: &str,
    run: &RestoreRun,
    resolved: Resolved,
    gate: &Gate,
) -> Result<Action> {
    let defaults = JobDefaults::from(&ctx.settings);
    let job = match restore_job::build(
        run,
        &resolved.storage,
        &resolved.manifest_location,
        &resolved.pin,
        resolved.template.as_ref(),
        &defaults,
    ) {
        Ok(job) => job,
        Err(e) => {
            let reason = match &e {
                JobBuildError::InvalidSource(_) => "InvalidTarget",
                other => other.reason(),
            };
            return finish(
                ctx,
                ns,
                run,
                RestoreRunPhase::Failed,
                reason,
                &e.to_string(),
                None,
            )
            .await;
        }
    };
    let (job_name, trace_id) =
        crate::controller::common::run_trace::apply_job(ctx, ns, FIELD_MANAGER, &run.metadata, job)
            .await?;
    crate::controller::common::run_trace::observe_start(ctx, "RestoreRun", "Manual", &run.metadata);
    let mut status = run.status.clone().unwrap_or_default();
    if trace_id.is_some() {
        status.trace_id = trace_id;
    }
    status.phase = Some(RestoreRunPhase::Running);
    status.reason = Some("JobCreated".into());
    status.queue_position = None;
    status.job_name = Some(job_name.clone());
    status.start_time = Some(time_from_chrono(Utc::now()));
    status.attempts = Some(1);
    status.source = Some(resolved.source.clone());
    status.requested_by = crate::controller::common::requester::requested_by(
        &run.metadata,
        ctx.settings.requester_recorded,
    );
    status.message = Some(format!("restore Job {job_name} started"));
    status.observed_generation = run.metadata.generation;
    status.approval = gate.status().cloned();
    apply_status(ctx, ns, &run.name_any(), &status).await?;
    if let Gate::Approved { message, .. } = gate {
        ctx.event(
            run,
            EventType::Normal,
            Reason::Approved.as_str(),
            "CreateJob",
            message.clone(),
        )
        .await;
    }
    if let Some(note) = &resolved.fallback {
        ctx.event(
            run,
            EventType::Warning,
            Reason::ReadingCopy.as_str(),
            "CreateJob",
            note.clone(),
        )
        .await;
    }
    let who = match crate::controller::common::requester::who_note(
        &run.metadata,
        ctx.settings.requester_recorded,
    ) {
        note if note.is_empty() => note,
        note => format!("; {note}"),
    };
    let what = match &run.spec.backup_run_ref {
        Some(b) => format!("BackupRun {} ({})", b.name, resolved.manifest_location),
        None => resolved.manifest_location.clone(),
    };
    ctx.event(
        run,
        EventType::Normal,
        "Started",
        "CreateJob",
        format!(
            "restore Job {job_name} restores {what} into {}{who}",
            target_text(run)
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(2)))
}

/// Writes the final status, the Event and the metrics of a finished restore.
async fn finish(
    ctx: &Context,
    ns: &str,
    run: &RestoreRun,
    phase: RestoreRunPhase,
    reason: &str,
    message: &str,
    report: Option<&RestoreReport>,
) -> Result<Action> {
    let now = Utc::now();
    let mut status = run.status.clone().unwrap_or_default();
    let started = status
        .start_time
        .as_ref()
        .map(time_to_chrono)
        .or_else(|| run.metadata.creation_timestamp.as_ref().map(time_to_chrono))
        .unwrap_or(now);
    let seconds = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
    let succeeded = phase == RestoreRunPhase::Succeeded;
    status.phase = Some(phase);
    status.reason = Some(reason.to_string());
    status.message = Some(message.to_string());
    status.queue_position = None;
    status.completion_time = Some(time_from_chrono(now));
    status.duration_seconds = Some(seconds);
    status.duration = Some(format_duration(seconds.round() as u64));
    status.observed_generation = run.metadata.generation;
    if let Some(p) = status.progress.as_mut() {
        p.bytes_per_second = 0;
    }
    // Only a restore whose Job ran has something to say about a swap.
    let swap_note = if status.job_name.is_some() {
        let swap = plan::swap_status(&run.spec, report, succeeded, now);
        let note = swap_note(&swap);
        status.swap = Some(swap);
        note
    } else {
        None
    };
    if let Some(r) = report {
        let expected = expected_sha256(ctx, ns, run)
            .await
            .unwrap_or_else(|| r.sha256.join(","));
        if succeeded {
            status.checksum = Some(ChecksumVerification {
                verified: true,
                expected_sha256: expected,
                observed_sha256: Some(r.sha256.join(",")).filter(|s| !s.is_empty()),
            });
        } else if reason == "ChecksumMismatch" {
            status.checksum = Some(ChecksumVerification {
                verified: false,
                expected_sha256: expected,
                observed_sha256: None,
            });
        }
    }
    set_condition(
        &mut status.conditions,
        Condition {
            type_: if succeeded {
                "Complete".into()
            } else {
                "Failed".into()
            },
            status: "True".into(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: time_from_chrono(now),
            observed_generation: run.metadata.generation,
        },
    );
    apply_status(ctx, ns, &run.name_any(), &status).await?;
    crate::controller::common::run_trace::finish(
        &run.metadata,
        "RestoreRun",
        ns,
        if succeeded { Ok(reason) } else { Err(reason) },
    );
    if let Some(note) = swap_note.filter(|_| succeeded) {
        ctx.event(
            run,
            EventType::Normal,
            Reason::Swapped.as_str(),
            "Swap",
            note,
        )
        .await;
    }
    let (type_, ev_reason) = if succeeded {
        (EventType::Normal, "Succeeded")
    } else {
        (EventType::Warning, "Failed")
    };
    let who = who_in_parentheses(ctx, run);
    ctx.event(
        run,
        type_,
        ev_reason,
        "Finish",
        format!(
            "{reason}: {message}; target {}{who}, took {}",
            target_text(run),
            format_duration(seconds.round() as u64)
        ),
    )
    .await;
    let event = if succeeded {
        NotificationEvent::RestoreSucceeded
    } else {
        NotificationEvent::RestoreFailed
    };
    let policy = notify(ctx, ns, run, event, reason, message, now).await;
    ctx.metrics
        .restore_duration
        .get_or_create(&crate::telemetry::metrics::PolicyLabels {
            namespace: ns.to_string(),
            policy: policy.clone(),
        })
        .observe(
            seconds,
            crate::telemetry::metrics::TraceLabels::of(status.trace_id.as_deref()),
            None,
        );
    ctx.metrics
        .restore_runs
        .get_or_create(&RunLabels {
            namespace: ns.to_string(),
            policy,
            result: if succeeded {
                RunResult::Succeeded
            } else {
                RunResult::Failed
            },
        })
        .inc();
    Ok(Action::await_change())
}

/// The Event text of a swap (`None`: nothing was swapped).
fn swap_note(swap: &SwapStatus) -> Option<String> {
    let staging = swap.staging_database.as_deref()?;
    let mut note = format!("staging database {staging} swapped in after its checksum matched");
    if let Some(n) = swap.masking_rules_applied {
        note.push_str(&format!("; {n} masking rule(s) applied before the swap"));
    }
    if swap.guard_passed == Some(true) {
        note.push_str("; the masking guard held");
    }
    if let Some(n) = swap.sessions_terminated {
        note.push_str(&format!("; {n} session(s) on the target terminated"));
    }
    match (&swap.previous_database, &swap.previous_drop_after) {
        (Some(prev), Some(after)) => note.push_str(&format!(
            "; the previous target is kept as {prev} until {}",
            after.0
        )),
        (Some(prev), None) => note.push_str(&format!(
            "; the previous target could not be dropped and remains as {prev}"
        )),
        (None, _) => note.push_str("; the previous target was dropped"),
    }
    Some(note)
}

/// Drop the previous target a Succeeded staged restore kept, once its grace period is over:
/// a cleanup Job (`agent drop-previous`), recorded in `status.swap`.
async fn cleanup_previous(
    ctx: &Context,
    ns: &str,
    run: &RestoreRun,
    status: &RestoreRunStatus,
) -> Result<Action> {
    let now = Utc::now();
    match plan::plan_cleanup(status, now) {
        Cleanup::Nothing => Ok(Action::await_change()),
        Cleanup::WaitFor(d) => Ok(Action::requeue(d)),
        Cleanup::StartJob { previous } => {
            let defaults = JobDefaults::from(&ctx.settings);
            let template = match &run.spec.backup_run_ref {
                Some(b) => policy_template(ctx, ns, &b.name).await?,
                None => None,
            };
            let mut next = status.clone();
            let swap = next.swap.get_or_insert_with(Default::default);
            match restore_job::build_cleanup(run, &previous, template.as_ref(), &defaults) {
                Ok(job) => {
                    swap.cleanup_job_name =
                        Some(job_watch::apply(ctx, ns, FIELD_MANAGER, &job).await?);
                    apply_status(ctx, ns, &run.name_any(), &next).await?;
                    Ok(Action::requeue(Duration::from_secs(2)))
                }
                Err(e) => {
                    swap.cleanup_message = Some(e.to_string());
                    apply_status(ctx, ns, &run.name_any(), &next).await?;
                    ctx.event(
                        run,
                        EventType::Warning,
                        Reason::PreviousDropFailed.as_str(),
                        "Cleanup",
                        format!("the previous target {previous} was not dropped: {e}"),
                    )
                    .await;
                    Ok(Action::await_change())
                }
            }
        }
        Cleanup::Watch { job } => {
            let previous = status
                .swap
                .as_ref()
                .and_then(|s| s.previous_database.clone())
                .unwrap_or_default();
            let mut next = status.clone();
            let swap = next.swap.get_or_insert_with(Default::default);
            match job_watch::observe(ctx, ns, Some(&job)).await? {
                job_watch::Observed::Finished {
                    succeeded: true, ..
                } => {
                    swap.previous_dropped_at = Some(time_from_chrono(now));
                    apply_status(ctx, ns, &run.name_any(), &next).await?;
                    ctx.event(run, EventType::Normal, Reason::PreviousDropped.as_str(), "Cleanup", format!("the previous target {previous} was dropped after its grace period (Job {job})")).await;
                    Ok(Action::await_change())
                }
                job_watch::Observed::Finished {
                    reason,
                    message,
                    termination_message,
                    ..
                } => {
                    let detail = termination_message
                        .as_deref()
                        .and_then(RestoreReport::parse)
                        .and_then(|r| r.error)
                        .unwrap_or(if message.is_empty() { reason } else { message });
                    swap.cleanup_message = Some(detail.clone());
                    apply_status(ctx, ns, &run.name_any(), &next).await?;
                    ctx.event(
                        run,
                        EventType::Warning,
                        Reason::PreviousDropFailed.as_str(),
                        "Cleanup",
                        format!(
                            "the previous target {previous} was not dropped (Job {job}): {detail}"
                        ),
                    )
                    .await;
                    Ok(Action::await_change())
                }
                job_watch::Observed::Vanished { .. } => {
                    // Deleted before it finished: start it again.
                    swap.cleanup_job_name = None;
                    apply_status(ctx, ns, &run.name_any(), &next).await?;
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                _ => Ok(Action::requeue(Duration::from_secs(2))),
            }
        }
    }
}

/// The Job template of the policy behind BackupRun `backup` (its image, ServiceAccount and
/// security apply to the cleanup Job as they did to the restore).
async fn policy_template(ctx: &Context, ns: &str, backup: &str) -> Result<Option<JobTemplate>> {
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    let Some(b) = runs.get_opt(backup).await? else {
        return Ok(None);
    };
    let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), ns);
    Ok(policies
        .get_opt(&b.spec.policy_ref.name)
        .await?
        .and_then(|p| p.spec.job_template.map(|t| *t)))
}

/// The SHA-256 recorded at backup time, when the run restores a BackupRun's artifact.
async fn expected_sha256(ctx: &Context, ns: &str, run: &RestoreRun) -> Option<String> {
    let name = &run.spec.backup_run_ref.as_ref()?.name;
    let backup = Api::<BackupRun>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    backup
        .status?
        .artifact
        .map(|a| a.sha256)
        .filter(|s| !s.is_empty())
}

impl ControllerStatus for RestoreRunStatus {
    type Kind = RestoreRun;
    const FIELD_MANAGER: &'static str = FIELD_MANAGER;
}

#[cfg(test)]
mod tests;
