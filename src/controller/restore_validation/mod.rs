//! The RestoreValidation reconciler, and the part of BackupPolicy reconciliation that belongs to
//! validations.
//!
//! A validation: read → resolve the BackupRun (`backupRunRef`, or the policy's newest
//! successful run for `policyRef` + `latest`), its storage and Secrets → plan (pure,
//! [`crate::controller::restore_validation::plan`]) → create the Job (its sandbox password is generated
//! inside the Pod, see [`crate::jobs::validation_job`]) → on finish record the verdict,
//! per-check results and the measured restore time, mark the BackupRun's
//! `status.verification` (a server-side apply of only that field under this controller's field
//! manager, so the BackupRun controller's fields are untouched), raise Events and count it.
//!
//! A policy ([`reconcile_policy`]): create validations as its `validation` settings ask
//! (every Nth successful backup, or on a cron schedule), prune finished ones beyond
//! `historyLimit`, and apply the policy's `lastValidation`, `backupsSinceValidation` and
//! `Verified` condition — only those fields, under this controller's field manager.

pub mod plan;

use crate::api::backup_policy::NotificationEvent;
use crate::controller::common::queue::{PendingBackup, RunKey, plan_backup_queue};
use crate::notify::message::{Details, Notification};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::backup_run::BackupRunPhase;
use crate::api::common::{
    Engine, SecretKeySelector, set_condition, time_from_chrono, time_to_chrono,
};
use crate::api::restore_validation::{RestoreValidationStatus, ValidationResult};
use crate::api::{
    BackupPolicy, BackupRun, BackupStorage, RestoreValidation, RestoreValidationPhase,
};
use crate::jobs::shell::{JobBuildError, JobDefaults};
use crate::jobs::validation_job;
use crate::telemetry::metrics::{RunLabels, RunResult};

use crate::api::backup_policy::POLICY_LABEL;
use crate::contract::ArtifactPin;
use crate::controller::common::blockers::{
    SourceState, blocked, missing_secret, stop_blocked, stop_invalid, storage_secrets,
};
use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};
use crate::controller::common::job_watch;
use crate::controller::common::read_from;
use crate::controller::common::reason::Reason;
use crate::controller::common::reconcile::namespace_and_name;
use crate::controller::common::status::{ControllerStatus, apply as apply_status};
use crate::controller::restore_validation::plan::{
    Observed, Outcome, Step, latest_successful, plan, verification,
};
use crate::jobs::source::artifact_pin;

/// Field manager of everything this controller writes (validation status, the BackupRun's
/// `status.verification`).
pub const FIELD_MANAGER: &str = "dataguardian-restorevalidation";

/// What a validation's Job needs, resolved.
struct Resolved {
    backup: BackupRun,
    storage: BackupStorage,
    manifest_location: String,
    /// Why a copy is read instead of the primary (the Event's note), if it is.
    fallback: Option<String>,
    /// What the BackupRun recorded; the agent refuses any other manifest.
    pin: ArtifactPin,
    engine: Engine,
    server_version: Option<String>,
    policy: Option<BackupPolicy>,
}

/// Reconciles one RestoreValidation.
pub async fn reconcile(rv: Arc<RestoreValidation>, ctx: Arc<Context>) -> Result<Action> {
    let (ns, name) = namespace_and_name(rv.as_ref())?;
    let status = rv.status.clone().unwrap_or_default();
    if status
        .phase
        .is_some_and(RestoreValidationPhase::is_finished)
        || rv.meta().deletion_timestamp.is_some()
    {
        // Its slot is free, and the cache already says so (this reconcile was triggered by the
        // cache seeing it finished): the queue moves now.
        ctx.wake_queued_validations();
        return Ok(Action::await_change());
    }
    let job_name = status.job_name.clone();
    let (source, resolved) = if job_name.is_some() {
        (SourceState::Ready, None)
    } else {
        resolve(&ctx, &ns, &rv).await?
    };
    let job = job_watch::observe(&ctx, &ns, job_name.as_deref()).await?;
    let step = plan(&Observed {
        validation: &rv,
        source,
        job,
        now: Utc::now(),
    });
    tracing::debug!(validation = %format!("{ns}/{name}"), ?step, "planned");
    match step {
        Step::Done => Ok(Action::await_change()),
        Step::Wait { reason, message } => {
            if status.reason.as_deref() != Some(reason.as_str()) || status.phase.is_none() {
                let mut next = status.clone();
                next.phase = Some(RestoreValidationPhase::Pending);
                next.reason = Some(reason.clone());
                next.message = Some(message.clone());
                next.observed_generation = rv.metadata.generation;
                apply_status(&ctx, &ns, &name, &next).await?;
                ctx.event(rv.as_ref(), EventType::Warning, &reason, "Wait", message)
                    .await;
            }
            Ok(Action::requeue(Duration::from_secs(15)))
        }
        Step::StartJob => {
            let Some(resolved) = resolved else {
                return Err(Error::InvalidSpec(
                    "the validation's backup vanished while starting".into(),
                ));
            };
            if let Some((position, message)) = queue_decision(&ctx, &rv) {
                if status.reason.as_deref() != Some(QUEUED)
                    || status.queue_position != Some(position)
                    || status.message.as_deref() != Some(message.as_str())
                {
                    let mut next = status.clone();
                    next.phase = Some(RestoreValidationPhase::Pending);
                    next.reason = Some(QUEUED.into());
                    next.message = Some(message.clone());
                    next.queue_position = Some(position);
                    next.observed_generation = rv.metadata.generation;
                    apply_status(&ctx, &ns, &name, &next).await?;
                    if status.reason.as_deref() != Some(QUEUED) {
                        ctx.event(rv.as_ref(), EventType::Normal, QUEUED, "Queue", message)
                            .await;
                    }
                }
                // A finishing validation wakes this one; the requeue covers a running one
                // that is deleted instead.
                return Ok(Action::requeue(QUEUE_RECHECK));
            }
            start_job(&ctx, &ns, &rv, resolved).await
        }
        Step::Track { attempts } => {
            if status.attempts != Some(attempts) {
                let mut next = status.clone();
                next.attempts = Some(attempts);
                apply_status(&ctx, &ns, &name, &next).await?;
            }
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Step::Finish(outcome) => finish(&ctx, &ns, &rv, outcome).await,
    }
}

/// Reason of a validation waiting for a slot under the global limit.
const QUEUED: &str = Reason::Queued.as_str();
/// How often a queued validation looks for a free slot on its own; a finishing validation wakes
/// the queued ones at once ([`Context::wake_queued_validations`]).
const QUEUE_RECHECK: Duration = Duration::from_secs(10);

/// The validation queue's verdict on `rv`: `None` when it may start now, else its queue
/// position and a message. Validations share a global limit (each runs a sandbox database),
/// fairly across namespaces like backups ([`plan_backup_queue`]).
fn queue_decision(ctx: &Context, rv: &RestoreValidation) -> Option<(u32, String)> {
    let created = |v: &RestoreValidation| {
        v.metadata
            .creation_timestamp
            .as_ref()
            .map(time_to_chrono)
            .unwrap_or_else(Utc::now)
    };
    let pending_entry = |v: &RestoreValidation, ns: String| PendingBackup {
        key: RunKey::new(ns, v.name_any()),
        created_at: created(v),
        policy: String::new(),
        not_before: None,
    };
    let mut pending = Vec::new();
    let mut running = Vec::new();
    for v in ctx.validations.state() {
        let Some(ns) = v.namespace() else { continue };
        let st = v.status.as_ref();
        if st
            .and_then(|s| s.phase)
            .is_some_and(RestoreValidationPhase::is_finished)
            || v.meta().deletion_timestamp.is_some()
        {
            continue;
        }
        if st.and_then(|s| s.job_name.as_ref()).is_some() {
            running.push(RunKey::new(ns, v.name_any()));
        } else if Reason::saved_competes_for_validation_slot(st.and_then(|s| s.reason.as_deref())) {
            // New or queued; one waiting on a blocker (a missing backup, a Secret) does not
            // compete until it is unblocked.
            pending.push(pending_entry(&v, ns));
        }
    }
    let me = RunKey::new(rv.namespace().unwrap_or_default(), rv.name_any());
    // The cache may not have seen this validation yet, or still sees it blocked: it competes.
    if !pending.iter().any(|p| p.key == me) && !running.contains(&me) {
        pending.push(pending_entry(rv, me.namespace.clone()));
    }
    let q = plan_backup_queue(
        &pending,
        &running,
        ctx.settings.max_concurrent_validations,
        Utc::now(),
    );
    ctx.metrics
        .queue_depth
        .get_or_create(&crate::telemetry::metrics::QueueLabels {
            queue: "validation".into(),
        })
        .set(q.waiting.len() as i64);
    if q.start.contains(&me) {
        return None;
    }
    let w = q.waiting.iter().find(|w| w.key == me)?;
    Some((
        w.position,
        format!(
            "queued at position {} of {}: {}",
            w.position,
            q.waiting.len(),
            w.reason
        ),
    ))
}

async fn resolve(
    ctx: &Context,
    ns: &str,
    rv: &RestoreValidation,
) -> Result<(SourceState, Option<Resolved>)> {
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    let spec = &rv.spec;
    let backup = if let Some(r) = &spec.backup_run_ref {
        match runs.get_opt(&r.name).await? {
            Some(b) => b,
            None => {
                return stop_blocked(
                    "BackupRunNotFound",
                    format!("BackupRun {} not found in namespace {ns}", r.name),
                );
            }
        }
    } else if let Some(p) = &spec.policy_ref {
        let all = runs.list(&ListParams::default()).await?.items;
        match latest_successful(&all, &p.name) {
            Some(b) => b.clone(),
            None => {
                return stop_blocked(
                    "NoSuccessfulBackup",
                    format!("BackupPolicy {} has no successful BackupRun yet", p.name),
                );
            }
        }
    } else {
        return stop_invalid(
            "InvalidSpec",
            "set backupRunRef, or policyRef with latest: true".into(),
        );
    };
    let bname = backup.name_any();
    let bstatus = backup.status.clone().unwrap_or_default();
    match bstatus.phase {
        Some(BackupRunPhase::Succeeded) => {}
        Some(BackupRunPhase::Failed) => {
            return stop_invalid(
                "BackupRunFailed",
                format!("BackupRun {bname} failed; there is nothing to validate"),
            );
        }
        phase => {
            return stop_blocked(
                "BackupRunNotReady",
                format!(
                    "BackupRun {bname} is {:?}; the validation waits for it to succeed",
                    phase.unwrap_or_default()
                ),
            );
        }
    }
    let Some(artifact) = bstatus.artifact.clone() else {
        return stop_invalid(
            "NoArtifact",
            format!("BackupRun {bname} records no artifact"),
        );
    };
    let engine = match artifact.engine.as_str() {
        "postgres" => Engine::Postgres,
        "mysql" => Engine::Mysql,
        other => {
            return stop_invalid(
                "UnknownEngine",
                format!("BackupRun {bname} records engine {other:?}"),
            );
        }
    };
    if artifact.encryption.is_some() && spec.decryption.is_none() {
        return stop_invalid(
            "DecryptionRequired",
            "the backup is encrypted; set spec.decryption.identitySecretRef and/or spec.decryption.kms".into(),
        );
    }
    let located = match read_from::locate(
        ctx,
        ns,
        &backup.name_any(),
        &artifact,
        spec.read_from.as_ref().map(|r| r.name.as_str()),
    )
    .await?
    {
        Ok(found) => found,
        Err(state) => return Ok((state, None)),
    };
    let (storage, manifest_location) = (located.storage, located.manifest_location);
    if let Some(message) = crate::controller::common::storage_access::ambient_refusal(
        &storage,
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
    let mut needed: Vec<SecretKeySelector> = storage_secrets(&storage);
    if let Some(d) = &spec.decryption {
        needed.extend(d.secret_refs());
    }
    if let Some(b) = missing_secret(ctx, ns, &needed).await? {
        return Ok((SourceState::Blocked(b), None));
    }
    let policy = Api::<BackupPolicy>::namespaced(ctx.client.clone(), ns)
        .get_opt(&backup.spec.policy_ref.name)
        .await?;
    Ok((
        SourceState::Ready,
        Some(Resolved {
            pin: artifact_pin(&artifact),
            server_version: artifact.server_version.clone(),
            backup,
            storage,
            manifest_location,
            fallback: located.fallback,
            engine,
            policy,
        }),
    ))
}

async fn start_job(ctx: &Context, ns: &str, rv: &RestoreValidation, r: Resolved) -> Result<Action> {
    let defaults = JobDefaults::from(&ctx.settings);
    let policy_validation = r.policy.as_ref().and_then(|p| p.spec.validation.clone());
    let inputs = validation_job::ValidationInputs {
        storage: &r.storage,
        manifest_location: &r.manifest_location,
        pin: &r.pin,
        engine: r.engine,
        server_version: r.server_version.as_deref(),
        fallback_sandbox: policy_validation.as_ref().and_then(|v| v.sandbox.as_ref()),
        template: r
            .policy
            .as_ref()
            .and_then(|p| p.spec.job_template.as_deref()),
    };
    let job = match validation_job::build(rv, &inputs, &defaults) {
        Ok(job) => job,
        Err(e) => {
            let outcome = Outcome {
                phase: RestoreValidationPhase::Failed,
                result: ValidationResult::Failed,
                reason: match &e {
                    JobBuildError::ImageNotAllowed(_) | JobBuildError::PrivilegeNotAllowed(_) => {
                        e.reason().into()
                    }
                    _ => "InvalidSandbox".into(),
                },
                message: e.to_string(),
                checks: Vec::new(),
                restore_duration_seconds: None,
            };
            return finish(ctx, ns, rv, outcome).await;
        }
    };
    let sandbox_image = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.init_containers.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.name == validation_job::SANDBOX_CONTAINER)
        })
        .and_then(|c| c.image.clone());
    let (job_name, trace_id) =
        crate::controller::common::run_trace::apply_job(ctx, ns, FIELD_MANAGER, &rv.metadata, job)
            .await?;
    let trigger = if rv.labels().contains_key(POLICY_LABEL) {
        "Scheduled"
    } else {
        "Manual"
    };
    crate::controller::common::run_trace::observe_start(
        ctx,
        "RestoreValidation",
        trigger,
        &rv.metadata,
    );
    let mut status = rv.status.clone().unwrap_or_default();
    if trace_id.is_some() {
        status.trace_id = trace_id;
    }
    status.phase = Some(RestoreValidationPhase::Running);
    status.queue_position = None;
    status.reason = Some("JobCreated".into());
    status.message = Some(format!(
        "validation Job {job_name} restores BackupRun {} into a sandbox",
        r.backup.name_any()
    ));
    status.backup_run_name = Some(r.backup.name_any());
    status.storage = Some(r.storage.name_any());
    status.job_name = Some(job_name.clone());
    status.sandbox_image = sandbox_image.clone();
    status.start_time = Some(time_from_chrono(Utc::now()));
    status.requested_by = crate::controller::common::requester::requested_by(
        &rv.metadata,
        ctx.settings.requester_recorded,
    );
    status.attempts = Some(1);
    status.observed_generation = rv.metadata.generation;
    apply_status(ctx, ns, &rv.name_any(), &status).await?;
    if let Some(note) = &r.fallback {
        ctx.event(
            rv,
            EventType::Warning,
            Reason::ReadingCopy.as_str(),
            "CreateJob",
            note.clone(),
        )
        .await;
    }
    let who = match crate::controller::common::requester::who_note(
        &rv.metadata,
        ctx.settings.requester_recorded,
    ) {
        note if note.is_empty() => note,
        note => format!("; {note}"),
    };
    ctx.event(
        rv,
        EventType::Normal,
        "Started",
        "CreateJob",
        format!(
            "validation Job {job_name} restores BackupRun {} ({}) into a {} sandbox{who}",
            r.backup.name_any(),
            r.manifest_location,
            sandbox_image.unwrap_or_default()
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(2)))
}

async fn finish(ctx: &Context, ns: &str, rv: &RestoreValidation, o: Outcome) -> Result<Action> {
    let now = Utc::now();
    let mut status = rv.status.clone().unwrap_or_default();
    let started = status
        .start_time
        .as_ref()
        .map(time_to_chrono)
        .or_else(|| rv.metadata.creation_timestamp.as_ref().map(time_to_chrono))
        .unwrap_or(now);
    let seconds = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
    status.phase = Some(o.phase);
    status.queue_position = None;
    status.result = Some(o.result);
    status.reason = Some(o.reason.clone());
    status.message = Some(o.message.clone());
    status.checks = o.checks.clone();
    status.restore_duration_seconds = o.restore_duration_seconds;
    status.completion_time = Some(time_from_chrono(now));
    status.duration_seconds = Some(seconds);
    status.observed_generation = rv.metadata.generation;
    let passed = o.result == ValidationResult::Passed;
    set_condition(
        &mut status.conditions,
        Condition {
            type_: if o.phase == RestoreValidationPhase::Succeeded {
                "Complete".into()
            } else {
                "Failed".into()
            },
            status: "True".into(),
            reason: o.reason.clone(),
            message: o.message.clone(),
            last_transition_time: time_from_chrono(now),
            observed_generation: rv.metadata.generation,
        },
    );
    apply_status(ctx, ns, &rv.name_any(), &status).await?;
    crate::controller::common::run_trace::finish(
        &rv.metadata,
        "RestoreValidation",
        ns,
        if passed {
            Ok(o.reason.as_str())
        } else {
            Err(o.reason.as_str())
        },
    );

    let (type_, reason) = if passed {
        (EventType::Normal, "Passed")
    } else {
        (EventType::Warning, "Failed")
    };
    let backup_name = status.backup_run_name.clone();
    let rto = o
        .restore_duration_seconds
        .map(|s| format!(", restore took {s:.1}s"))
        .unwrap_or_default();
    ctx.event(
        rv,
        type_,
        reason,
        "Finish",
        format!("{}: {}{rto}", o.reason, o.message),
    )
    .await;

    let mut policy = String::new();
    // A verdict about the backup (not "could not run") marks the BackupRun.
    if o.phase == RestoreValidationPhase::Succeeded
        && let Some(bname) = &backup_name
    {
        let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
        if let Some(backup) = runs.get_opt(bname).await? {
            policy = backup.spec.policy_ref.name.clone();
            let body = json!({
                "apiVersion": BackupRun::api_version(&()),
                "kind": BackupRun::kind(&()),
                "status": {"verification": verification(&rv.name_any(), &o, now)},
            });
            runs.patch_status(
                bname,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            let (t, r, what) = if passed {
                (EventType::Normal, "Verified", "passed")
            } else {
                (EventType::Warning, "VerificationFailed", "failed")
            };
            ctx.event(
                &backup,
                t,
                r,
                "Verify",
                format!(
                    "RestoreValidation {} {what}: {}{rto}",
                    rv.name_any(),
                    o.message
                ),
            )
            .await;
        }
    }
    // The policy whose channels hear the verdict (also when the validation could not run).
    let notify_policy = if policy.is_empty() {
        match rv
            .labels()
            .get(POLICY_LABEL)
            .cloned()
            .or_else(|| rv.spec.policy_ref.as_ref().map(|p| p.name.clone()))
        {
            Some(p) => p,
            None => backup_name
                .as_deref()
                .and_then(|b| ctx.runs.policy_of_run(ns, b))
                .unwrap_or_default(),
        }
    } else {
        policy.clone()
    };
    if passed
        && !notify_policy.is_empty()
        && let Some(seconds) = o.restore_duration_seconds
    {
        ctx.metrics
            .validation_rto
            .get_or_create(&crate::telemetry::metrics::PolicyLabels {
                namespace: ns.to_string(),
                policy: notify_policy.clone(),
            })
            .set(seconds);
    }
    ctx.notify_policy_named(
        ns,
        &notify_policy,
        Notification {
            event: if passed {
                NotificationEvent::ValidationPassed
            } else {
                NotificationEvent::ValidationFailed
            },
            namespace: ns.to_string(),
            policy: notify_policy.clone(),
            kind: "RestoreValidation".into(),
            name: rv.name_any(),
            reason: o.reason.clone(),
            message: match &backup_name {
                Some(b) => format!("BackupRun {b}: {}{rto}", o.message),
                None => format!("{}{rto}", o.message),
            },
            time: now,
            details: Details {
                run: backup_name.clone(),
                requester: crate::controller::common::requester::requested_by(
                    &rv.metadata,
                    ctx.settings.requester_recorded,
                ),
                ..Details::default()
            },
        },
    )
    .await;
    ctx.metrics
        .validations
        .get_or_create(&RunLabels {
            namespace: ns.to_string(),
            policy,
            result: if passed {
                RunResult::Succeeded
            } else {
                RunResult::Failed
            },
        })
        .inc();
    Ok(Action::await_change())
}

impl ControllerStatus for RestoreValidationStatus {
    type Kind = RestoreValidation;
    const FIELD_MANAGER: &'static str = FIELD_MANAGER;
}

#[cfg(test)]
mod tests;
