//! The BackupPolicy reconciler: validates the schedule and references, creates BackupRuns on
//! schedule (computing the next fire time and requeueing until then — no polling), applies
//! retention (artifacts first, manifest first of all, then the BackupRun objects) and run-history
//! limits, evaluates `RPOMet`, and writes the policy status.
//!
//! The pure decisions live in [`crate::controller::backup_policy::schedule`], [`crate::controller::backup_policy::retention`] and [`crate::controller::backup_policy::rpo`].

pub mod copies;
pub mod copy_plan;
pub mod copy_prune_plan;
pub mod plan;
pub mod retention;
pub mod rotation;
pub mod rotation_plan;
pub mod rpo;
pub mod schedule;
pub mod validation;
pub mod validation_plan;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::Instrument;

use crate::api::backup_policy::NotificationEvent;
use crate::api::common::{parse_duration, set_condition, time_from_chrono, time_to_chrono};
use crate::api::{BackupPolicy, BackupRun, BackupStorage};
use crate::notify::message::{Details, Notification};
use crate::telemetry::metrics::PolicyLabels;

use crate::controller::backup_policy::retention::{
    ArtifactLocation, CleanupAction, FinishedPhase, HistoryRun, RetentionPolicy, RetentionRun,
    RunCleanup, RunHistoryLimits, plan_retention, run_history_plan,
};
use crate::controller::backup_policy::rpo::{RpoInput, evaluate_rpo};
use crate::controller::backup_policy::schedule::{
    ActiveRun, Schedule, ScheduleInput, plan as plan_schedule,
};
use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};
use crate::controller::common::job_watch::{self, Observed};
use crate::controller::common::reason::Reason;
use crate::controller::common::reconcile::{RUNS_CACHE_WAIT, namespace_and_name};
use crate::controller::common::run_cache::FinishedRun;
use crate::controller::common::status::apply_status;
use crate::controller::common::storage_access::StorageAccess;
use crate::jobs::prune_job;
use copy_prune_plan::CopyDeletion;

/// Field manager of everything this controller writes.
pub const FIELD_MANAGER: &str = "dataguardian-backuppolicy";
/// Upper bound between two reconciles of a healthy policy (status freshness).
const MAX_REQUEUE: Duration = Duration::from_secs(5 * 60);

/// Reconciles one BackupPolicy: observe (storage, the policy's runs from the cache) → plan
/// ([`plan`], [`schedule`], [`retention`], [`rpo`]) → apply (runs created or replaced,
/// retention) → the owned status, written only when it changed.
pub async fn reconcile(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.runs_synced() {
        return Ok(Action::requeue(RUNS_CACHE_WAIT));
    }
    let (ns, name) = namespace_and_name(policy.as_ref())?;
    // Notifications an earlier operator recorded but did not finish sending.
    ctx.resume_notifications(&policy);
    let generation = policy.metadata.generation;
    let now = Utc::now();
    let old_status = policy.status.clone().unwrap_or_default();
    let previous = &old_status.conditions;
    let mut conditions = previous.clone();

    // 1. The schedule.
    let parsed = Schedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref());
    let (schedule_valid, event) = plan::schedule_condition(&policy, &parsed, previous, now);
    set_condition(&mut conditions, schedule_valid);
    publish(&ctx, &policy, event).await;
    let schedule = parsed.ok();

    // 2. The storage.
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), &ns);
    let storage = storages.get_opt(&policy.spec.storage_ref.name).await?;
    let (storage_ready_condition, storage_ready) =
        plan::storage_condition(&policy, &ns, storage.as_ref(), now);
    set_condition(&mut conditions, storage_ready_condition);
    if let Some(c) = plan::storage_turned_unhealthy(previous, &conditions) {
        ctx.notify(
            &policy,
            policy_notification(&ns, &name, NotificationEvent::StorageUnhealthy, c, now),
        );
    }

    // 3. The policy's runs, from the shared cache.
    let active = ctx.runs.active_of(&ns, &name);
    let finished = ctx.runs.finished_of(&ns, &name);
    let (last_success, last_failure) = plan::newest_outcomes(&finished);
    // FinOps: what the policy's kept runs hold on each storage.
    let primary = policy.spec.storage_ref.name.clone();
    for (storage, (bytes, count)) in
        crate::controller::common::run_cache::stored_by_storage(&finished, &[primary.as_str()])
    {
        let labels = crate::telemetry::metrics::CopyLabels {
            namespace: ns.clone(),
            policy: name.clone(),
            storage,
        };
        ctx.metrics
            .stored_bytes
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        ctx.metrics
            .stored_artifacts
            .get_or_create(&labels)
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    let mut requeue = MAX_REQUEUE;
    let mut last_schedule_time = old_status.last_schedule_time.clone();
    let mut next_schedule_time = None;
    let mut created_now: Option<String> = None;

    // 4. The schedule: at most one new run per reconcile, never a storm.
    if let Some(schedule) = &schedule {
        let active_runs: Vec<ActiveRun> = active
            .iter()
            .filter_map(|r| ActiveRun::from_run(r))
            .collect();
        let input = ScheduleInput {
            policy_name: &name,
            created_at: policy
                .metadata
                .creation_timestamp
                .as_ref()
                .map(time_to_chrono)
                .unwrap_or(now),
            last_schedule_time: old_status.last_schedule_time.as_ref().map(time_to_chrono),
            suspend: policy.spec.suspend,
            starting_deadline_seconds: policy
                .spec
                .starting_deadline_seconds
                .map(|s| s.max(0) as u64),
            concurrency_policy: policy.spec.concurrency_policy,
            active_runs: &active_runs,
        };
        let plan = plan_schedule(schedule, now, &input);
        next_schedule_time = plan.next_schedule_time.map(time_from_chrono);
        if let Some(after) = plan.requeue_after {
            // Wake up just after the fire time, so that "now" is past it.
            requeue = requeue.min(after + Duration::from_millis(50));
        }
        for victim in &plan.replace_active {
            if let Some(run) = active.iter().find(|r| &r.name_any() == victim) {
                replace_run(&ctx, &ns, run).await?;
            }
        }
        if let Some(new) = &plan.create_run {
            let run = plan::scheduled_run(&ns, &name, new);
            let api: Api<BackupRun> = Api::namespaced(ctx.client.clone(), &ns);
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&params, &run).await {
                Ok(_) => {
                    // Only the operator writes status: this marks the run as the schedule's,
                    // which `spec.trigger` (client-chosen) cannot (retention counts scheduled
                    // and manual runs separately).
                    apply_status::<BackupRun>(
                        &ctx.client,
                        &ns,
                        &new.name,
                        FIELD_MANAGER,
                        &serde_json::json!({"scheduled": true}),
                    )
                    .await?;
                    let event = plan::created_run_event(new, plan.missed.count);
                    publish(&ctx, &policy, Some(event)).await;
                    created_now = Some(new.name.clone());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {} // created by an earlier pass
                Err(e) => return Err(e.into()),
            }
            last_schedule_time = Some(time_from_chrono(new.scheduled_time));
            requeue = requeue.min(Duration::from_secs(1));
        } else if let Some(skip) = &plan.skip_reason {
            tracing::debug!(policy = %format!("{ns}/{name}"), reason = skip.reason(), "scheduled run skipped");
        }
    }

    // 5. Copies on the secondary storages, then retention and run history.
    let kept = kept_runs(&policy, &finished, now)?;
    if let Some(at) =
        copies::reconcile_copies(&ctx, &ns, &policy, storage.as_ref(), &finished, &kept, now)
            .await?
    {
        let until = (at - now).to_std().unwrap_or_default();
        requeue = requeue.min(until.max(Duration::from_secs(1)));
    }
    if let Some(at) = apply_retention(&ctx, &ns, &policy, storage.as_ref(), &finished, now).await? {
        let until = (at - now).to_std().unwrap_or_default();
        requeue = requeue.min(until.max(Duration::from_secs(1)));
    }

    // 5b. Key rotation: the retained backups re-wrapped for the policy's keys.
    // Kept while the recipients cannot be read; gone with the encryption.
    let mut keys = policy.spec.encryption.as_ref().and(old_status.keys.clone());
    if let Some(r) =
        rotation::reconcile_rotation(&ctx, &ns, &policy, storage.as_ref(), &finished, &kept, now)
            .await?
    {
        set_condition(&mut conditions, r.condition);
        keys = Some(Box::new(r.keys));
        if let Some(after) = r.requeue {
            requeue = requeue.min(after);
        }
    }

    // 6. RPO.
    let last_success_time = last_success.and_then(|r| r.completed_at);
    let labels = PolicyLabels {
        namespace: ns.clone(),
        policy: name.clone(),
    };
    if let Some(schedule) = &schedule {
        let created = policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map(time_to_chrono)
            .unwrap_or(now);
        let verdict = evaluate_rpo(
            schedule,
            &RpoInput {
                now,
                created_at: created,
                last_success: last_success_time,
                suspended: policy.spec.suspend,
                objective: policy
                    .spec
                    .rpo
                    .as_deref()
                    .and_then(parse_duration)
                    .map(Duration::from_secs),
                grace: None,
            },
        );
        let recheck = verdict.recheck_at;
        let rpo = plan::rpo_plan(verdict, previous, generation, now);
        if let Some(event) = rpo.missed_now {
            ctx.notify(
                &policy,
                policy_notification(
                    &ns,
                    &name,
                    NotificationEvent::RpoMissed,
                    &rpo.condition,
                    now,
                ),
            );
            publish(&ctx, &policy, Some(event)).await;
        }
        match rpo.met {
            Some(met) => {
                ctx.metrics
                    .rpo_met
                    .get_or_create(&labels)
                    .set(i64::from(met));
            }
            None => {
                ctx.metrics.rpo_met.remove(&labels);
            }
        }
        set_condition(&mut conditions, rpo.condition);
        if let Some(at) = recheck {
            let until = (at - now).to_std().unwrap_or_default();
            requeue = requeue.min(until.max(Duration::from_secs(1)));
        }
    }
    if let Some(t) = last_success_time {
        ctx.metrics
            .last_success
            .get_or_create(&labels)
            .set(t.timestamp() as f64);
    }

    // 7. Ready, and fields this version does not act on.
    let ready = plan::ready_condition(
        &conditions,
        schedule.is_some(),
        storage_ready,
        generation,
        now,
    );
    set_condition(&mut conditions, ready);
    let event = plan::apply_unsupported(&policy, previous, &mut conditions, now);
    publish(&ctx, &policy, event).await;

    // 8. The owned status, when it changed.
    let status = plan::OwnedStatus {
        conditions,
        observed_generation: generation,
        last_schedule_time,
        next_schedule_time,
        last_successful_run: last_success.map(plan::run_summary),
        last_failed_run: last_failure.map(plan::run_summary),
        active_runs: plan::active_run_names(
            active.iter().map(|r| r.name_any()).collect(),
            created_now,
        ),
        keys,
    };
    if !status.same_on_the_wire(&plan::OwnedStatus::of(&old_status)) {
        apply_status::<BackupPolicy>(&ctx.client, &ns, &name, FIELD_MANAGER, &status).await?;
    }
    Ok(Action::requeue(requeue))
}

/// Publishes the Event a plan asked for, if any.
async fn publish(ctx: &Context, policy: &BackupPolicy, event: Option<plan::PolicyEvent>) {
    if let Some(e) = event {
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(policy, type_, e.reason, e.action, e.note).await;
    }
}

/// A notification about the policy itself, from one of its conditions.
fn policy_notification(
    ns: &str,
    name: &str,
    event: NotificationEvent,
    c: &Condition,
    now: DateTime<Utc>,
) -> Notification {
    Notification {
        event,
        namespace: ns.to_owned(),
        policy: name.to_owned(),
        kind: "BackupPolicy".into(),
        name: name.to_owned(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        time: now,
        details: Details::default(),
    }
}

/// `concurrencyPolicy: Replace`: stop the active scheduled run's Job; its controller then fails
/// the run (the Job is gone before it finished).
async fn replace_run(ctx: &Context, ns: &str, run: &BackupRun) -> Result<()> {
    if let Some(job) = run.status.as_ref().and_then(|s| s.job_name.as_ref()) {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match jobs.delete(job, &dp).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.event(
        run,
        EventType::Warning,
        "Replaced",
        "Replace",
        "a newer scheduled run replaces this one (concurrencyPolicy: Replace)".into(),
    )
    .await;
    Ok(())
}

/// The succeeded runs whose artifacts retention keeps (all of them without a retention).
fn kept_runs(
    policy: &BackupPolicy,
    runs: &[FinishedRun],
    now: DateTime<Utc>,
) -> Result<std::collections::BTreeSet<String>> {
    let tz: chrono_tz::Tz = policy
        .spec
        .time_zone_or_default()
        .parse()
        .unwrap_or(chrono_tz::UTC);
    let retention_runs: Vec<RetentionRun> = runs
        .iter()
        .filter_map(RetentionRun::from_finished)
        .collect();
    Ok(match &policy.spec.retention {
        Some(r) => {
            let rp = RetentionPolicy::from_spec(Some(r)).map_err(Error::InvalidSpec)?;
            plan_retention(&retention_runs, &rp, tz, now)
                .kept()
                .map(str::to_string)
                .collect()
        }
        None => retention_runs.iter().map(|r| r.name.clone()).collect(),
    })
}

/// Applies retention and run-history limits; returns when to look again (Object Lock expiry).
async fn apply_retention(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    storage: Option<&BackupStorage>,
    runs: &[FinishedRun],
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let tz: chrono_tz::Tz = policy
        .spec
        .time_zone_or_default()
        .parse()
        .unwrap_or(chrono_tz::UTC);
    let retention_runs: Vec<RetentionRun> = runs
        .iter()
        .filter_map(RetentionRun::from_finished)
        .collect();
    let mut requeue_at = None;
    let kept: std::collections::BTreeSet<String> = match &policy.spec.retention {
        Some(r) => {
            let rp = RetentionPolicy::from_spec(Some(r)).map_err(Error::InvalidSpec)?;
            let plan = plan_retention(&retention_runs, &rp, tz, now);
            requeue_at = plan.requeue_at;
            plan.kept().map(str::to_string).collect()
        }
        None => retention_runs.iter().map(|r| r.name.clone()).collect(),
    };
    let history: Vec<HistoryRun> = runs
        .iter()
        .map(|r| {
            let phase = if r.succeeded {
                FinishedPhase::Succeeded
            } else {
                FinishedPhase::Failed
            };
            let artifact = r.artifact.as_deref();
            let artifacts = artifact
                .filter(|_| phase == FinishedPhase::Succeeded)
                .map(|a| {
                    vec![ArtifactLocation {
                        storage: a.storage.clone(),
                        data_key: a.key.clone(),
                        manifest_key: a.manifest_key.clone().unwrap_or_default(),
                    }]
                })
                .unwrap_or_default();
            HistoryRun {
                name: r.name.clone(),
                phase,
                finished_at: r.completed_at.unwrap_or(now),
                artifacts,
                artifact_retained: phase == FinishedPhase::Succeeded && kept.contains(&r.name),
                retain_until: artifact.and_then(|a| a.latest_retain_until()),
            }
        })
        .collect();
    let limits = policy.spec.run_history_or_default();
    let plan = run_history_plan(
        &history,
        RunHistoryLimits {
            successful: limits.successful,
            failed: limits.failed,
        },
        now,
    );
    if let Some(t) = plan.requeue_at {
        requeue_at = Some(requeue_at.map_or(t, |r: DateTime<Utc>| r.min(t)));
    }
    if plan.cleanups.is_empty() {
        return Ok(requeue_at);
    }
    let access = match storage {
        Some(s) if s.spec.s3.is_some() => match StorageAccess::open(
            &ctx.client,
            ns,
            s,
            &ctx.settings.egress,
            ctx.settings.allows_ambient_credentials(ns),
        )
        .await
        {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(policy = %policy.name_any(), error = %e, "storage unavailable: retention waits");
                return Ok(Some(now + chrono::Duration::seconds(60)));
            }
        },
        _ => None,
    };
    for cleanup in &plan.cleanups {
        let needs_storage = cleanup
            .actions
            .iter()
            .any(|a| !matches!(a, CleanupAction::DeleteBackupRun));
        // The copies on secondary storages go first (each manifest first); a copy that cannot
        // go yet keeps the run, its artifact and the other copies.
        let has_copies = runs.iter().any(|r| {
            r.name == cleanup.run && r.artifact.as_ref().is_some_and(|a| !a.copies.is_empty())
        });
        // An S3 artifact whose storage cannot be opened is kept below, run and all: nothing to
        // record yet.
        let kept_for_now = needs_storage
            && !has_copies
            && access.is_none()
            && storage.is_none_or(|s| s.spec.filesystem.is_none());
        // Nothing shows a deletion afterwards: its audit record is made durable (the write-ahead
        // spool) before anything of the run is deleted, or retention waits (docs/audit.md).
        let record = if kept_for_now {
            None
        } else {
            crate::audit::record::retention_deletion(
                policy,
                &cleanup.run,
                Some(&format!(
                    "run {} and its artifact ({:?})",
                    cleanup.run, cleanup.cause
                )),
            )
        };
        if let Err(e) = ctx.audit_durably(record).await {
            tracing::warn!(run = %cleanup.run, error = %e, "retention waits: the audit record of the deletion is not durable");
            ctx.event(
                policy,
                EventType::Warning,
                Reason::RetentionWaitsForAudit.as_str(),
                "Retention",
                format!(
                    "run {} and its artifact are kept until the audit record of their deletion \
                     is durable: {e}",
                    cleanup.run
                ),
            )
            .await;
            let at = now + chrono::Duration::seconds(AUDIT_RETRY_SECONDS);
            requeue_at = Some(requeue_at.map_or(at, |r: DateTime<Utc>| r.min(at)));
            break;
        }
        if needs_storage && has_copies {
            match copies::delete_copies(ctx, ns, policy, &cleanup.run, now).await? {
                CopyDeletion::Deleted => {}
                // Prune Jobs are deleting copies from claims: the run and its artifact wait.
                CopyDeletion::InProgress(at) => {
                    requeue_at = Some(requeue_at.map_or(at, |r: DateTime<Utc>| r.min(at)));
                    continue;
                }
                CopyDeletion::Refused(why) => {
                    tracing::warn!(run = %cleanup.run, reason = %why, "retention: a copy is kept");
                    ctx.event(
                        policy,
                        EventType::Warning,
                        "RetentionRefused",
                        "Retention",
                        format!(
                            "run {} and its artifact are kept: a copy cannot be deleted yet: {why}",
                            cleanup.run
                        ),
                    )
                    .await;
                    continue;
                }
            }
        }
        if needs_storage && access.is_none() {
            match storage {
                // Filesystem artifacts live on a claim only a pod can mount: a prune Job deletes
                // them, then the run goes.
                Some(s) if s.spec.filesystem.is_some() => {
                    if let Some(at) = prune_on_claim(ctx, ns, policy, s, cleanup, now).await? {
                        requeue_at = Some(requeue_at.map_or(at, |r: DateTime<Utc>| r.min(at)));
                    }
                }
                // The storage is gone: keep the run (the record of an artifact that may still
                // exist) rather than forget it.
                _ => {
                    tracing::info!(run = %cleanup.run, "retention: the storage is unavailable; the run and its artifact are kept")
                }
            }
            continue;
        }
        let mut failed = false;
        for action in &cleanup.actions {
            match action {
                CleanupAction::DeleteManifest { .. } => {
                    let (Some(access), Some(storage)) = (&access, storage) else {
                        continue;
                    };
                    // Only what the operator computes itself and the recorded manifest digest
                    // vouches for: never the keys a status, a report or the bucket names.
                    let keys = match pinned_deletions(
                        ctx,
                        ns,
                        policy,
                        storage,
                        access,
                        &cleanup.run,
                    )
                    .await?
                    {
                        Ok(keys) => keys,
                        Err(why) => {
                            tracing::warn!(run = %cleanup.run, reason = %why, "retention: the artifact is kept");
                            ctx.event(
                                policy,
                                EventType::Warning,
                                "RetentionRefused",
                                "Retention",
                                format!(
                                    "the artifact of run {} is kept and the run with it: {why}",
                                    cleanup.run
                                ),
                            )
                            .await;
                            break;
                        }
                    };
                    let mut keys = keys.into_iter();
                    let deleting = |what: &'static str| tracing::info_span!("retention_delete", run = %cleanup.run, object = what);
                    if let Some(manifest) = keys.next()
                        && let Err(e) = access
                            .delete(&manifest)
                            .instrument(deleting("manifest"))
                            .await
                    {
                        tracing::warn!(run = %cleanup.run, error = %e, "retention: deleting manifest failed");
                        break;
                    }
                    for data in keys {
                        if let Err(e) = access.delete(&data).instrument(deleting("data")).await {
                            tracing::warn!(run = %cleanup.run, error = %e, "retention: deleting artifact data failed");
                            failed = true;
                        }
                    }
                }
                CleanupAction::DeleteArtifactData { .. } => {} // deleted with the manifest's list above
                CleanupAction::DeleteBackupRun => {
                    if failed {
                        break;
                    }
                    let note = format!("deleted run {} ({:?})", cleanup.run, cleanup.cause);
                    delete_pruned_run(ctx, ns, policy, &cleanup.run, note).await?;
                }
            }
        }
    }
    Ok(requeue_at)
}

/// How long retention waits before trying again to make a deletion's audit record durable.
const AUDIT_RETRY_SECONDS: i64 = 30;

/// Deletes a run retention pruned (one already gone is fine) and says so on the policy.
#[tracing::instrument(name = "retention_delete_run", skip_all, fields(run = %run))]
async fn delete_pruned_run(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    run: &str,
    note: String,
) -> Result<()> {
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    match runs.delete(run, &DeleteParams::default()).await {
        Ok(_) => {
            // (Its audit record was spooled before anything was deleted.)
            ctx.event(policy, EventType::Normal, "Pruned", "Retention", note)
                .await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Retention of an artifact on a filesystem storage: a prune Job (`<run>-prune`) deletes it from
/// the claim, manifest first; once it has succeeded the BackupRun is deleted. Returns when to
/// look again while the Job runs. A failed Job is reported (Warning Event `PruneFailed`) and
/// removed, so that a later reconcile tries again; the run and its artifact stay meanwhile.
async fn prune_on_claim(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    cleanup: &RunCleanup,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    // The location is the one the operator computes for the run, and the run's status must
    // name exactly it: a status naming another place prunes nothing.
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    let location = match runs.get_opt(&cleanup.run).await? {
        None => None,
        Some(run) => {
            let artifact = run.status.as_ref().and_then(|s| s.artifact.as_deref());
            let recorded = artifact.and_then(|a| a.manifest_key.clone());
            let Some(digest) = artifact
                .and_then(|a| a.manifest_sha256.clone())
                .filter(|d| !d.is_empty())
            else {
                tracing::warn!(run = %cleanup.run, "retention: the run records no manifest digest; its artifact and the run are kept");
                return Ok(None);
            };
            match crate::jobs::backup_job::expected_backup(&run, policy, storage) {
                Ok(e) if recorded.as_deref() == Some(e.location.as_str()) => {
                    Some((e.location, digest))
                }
                Ok(e) => {
                    tracing::warn!(run = %cleanup.run, recorded = ?recorded, expected = %e.location, "retention: the run's status names another location; the run is kept");
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(run = %cleanup.run, error = %e, "retention: cannot locate the artifact on the claim; the run is kept");
                    return Ok(None);
                }
            }
        }
    };
    let Some((location, digest)) = location else {
        return Ok(None);
    };
    let name = prune_job::job_name(&cleanup.run);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let recheck = Some(now + chrono::Duration::seconds(3));
    match job_watch::observe(ctx, ns, Some(&name)).await? {
        Observed::Vanished { .. } | Observed::NotCreated => {
            let defaults = crate::jobs::shell::JobDefaults::from(&ctx.settings);
            let mut job = match prune_job::build(
                &name,
                &cleanup.run,
                policy,
                storage,
                &location,
                &digest,
                &defaults,
            ) {
                Ok(job) => job,
                Err(e) => {
                    tracing::warn!(run = %cleanup.run, error = %e, "retention: cannot build the prune Job; the run is kept");
                    return Ok(None);
                }
            };
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            // The prune Job's spans are children of this one, in the policy's reconcile.
            let span = tracing::info_span!("create_prune_job", k8s.job.name = %name);
            crate::jobs::shell::add_trace_env(
                &mut job,
                &crate::telemetry::otel::job_context(&span),
                &crate::telemetry::otel::inherited_env(),
            );
            match crate::telemetry::otel::in_span(span, jobs.create(&pp, &job)).await {
                Ok(_) => {
                    ctx.event(
                        policy,
                        EventType::Normal,
                        "Pruning",
                        "Retention",
                        format!(
                            "Job {name} deletes the artifact of run {} ({:?}) from claim {}",
                            cleanup.run,
                            cleanup.cause,
                            storage
                                .spec
                                .filesystem
                                .as_ref()
                                .map(|f| f.claim_name.as_str())
                                .unwrap_or_default()
                        ),
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(recheck)
        }
        Observed::Active { .. } => Ok(recheck),
        Observed::Finished {
            succeeded: true, ..
        } => {
            let note = format!(
                "deleted run {} and its artifact ({:?})",
                cleanup.run, cleanup.cause
            );
            delete_pruned_run(ctx, ns, policy, &cleanup.run, note).await?;
            job_watch::delete(ctx, ns, &name).await?;
            Ok(None)
        }
        Observed::Finished {
            succeeded: false,
            reason,
            message,
            termination_message,
            ..
        } => {
            let detail = job_watch::failure_detail(termination_message.as_deref(), message);
            ctx.event(
                policy,
                EventType::Warning,
                "PruneFailed",
                "Retention",
                format!(
                    "Job {name} could not delete the artifact of run {} ({reason}: {detail}); the run and its artifact are kept and the prune is tried again",
                    cleanup.run
                ),
            )
            .await;
            job_watch::delete(ctx, ns, &name).await?;
            Ok(Some(now + chrono::Duration::seconds(60)))
        }
    }
}

/// What retention may delete for run `name` on an S3 storage ([`retention::pinned_deletion_keys`]):
/// the location is computed from the run, the policy and the storage, the manifest is read there
/// and must hash to the digest recorded when the run was confirmed. `Ok(Err(why))`: keep it.
async fn pinned_deletions(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    access: &StorageAccess,
    name: &str,
) -> Result<std::result::Result<Vec<String>, String>> {
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    let Some(run) = runs.get_opt(name).await? else {
        return Ok(Ok(Vec::new()));
    };
    let Some(artifact) = run.status.as_ref().and_then(|s| s.artifact.as_deref()) else {
        return Ok(Ok(Vec::new()));
    };
    if artifact.storage != storage.name_any() {
        return Ok(Err(format!(
            "the run's artifact is on storage {}, not on the policy's storage {}",
            artifact.storage,
            storage.name_any()
        )));
    }
    let expected = match crate::jobs::backup_job::expected_backup(&run, policy, storage) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("cannot compute where the run wrote: {e}"))),
    };
    let manifest = match access.get(&expected.key, 16 << 20).await {
        Ok(bytes) => Some(bytes),
        Err(crate::controller::common::storage_access::AccessError::NotFound(_)) => None,
        Err(e) => return Ok(Err(format!("reading manifest {}: {e}", expected.key))),
    };
    Ok(retention::pinned_deletion_keys(
        artifact,
        &expected,
        manifest.as_deref(),
    ))
}

#[cfg(test)]
mod tests;
