//! The BackupPolicy reconciler: validates the schedule and references, creates BackupRuns on
//! schedule (computing the next fire time and requeueing until then — no polling), applies
//! retention (artifacts first, manifest first of all, then the BackupRun objects) and run-history
//! limits, evaluates `RPOMet`, and writes the policy status.
//!
//! The pure decisions live in [`crate::controller::backup_policy::schedule`], [`crate::controller::backup_policy::retention`] and [`crate::controller::backup_policy::rpo`].

pub mod retention;
pub mod rpo;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::backup_policy::NotificationEvent;
use crate::api::backup_run::Trigger;
use crate::api::common::{
    LocalObjectReference, RunSummary, find_condition, parse_duration, set_condition,
    time_from_chrono, time_to_chrono,
};
use crate::api::{BackupPolicy, BackupRun, BackupRunSpec, BackupStorage};
use crate::notify::message::Notification;
use crate::telemetry::metrics::PolicyLabels;

use crate::controller::backup_policy::retention::{
    ArtifactLocation, CleanupAction, FinishedPhase, HistoryRun, RetentionPolicy, RetentionRun,
    RunCleanup, RunHistoryLimits, plan_retention, run_history_plan,
};
use crate::controller::backup_policy::rpo::{RpoInput, evaluate_rpo};
use crate::controller::backup_policy::schedule::{
    ActiveRun, Schedule, ScheduleInput, plan as plan_schedule,
};
use crate::controller::common::artifact_check::parse_s3_location;
use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};
use crate::controller::common::job_watch::{self, Observed};
use crate::controller::common::run_cache::FinishedRun;
use crate::controller::common::storage_access::StorageAccess;
use crate::jobs::{prune_job, restore_job};

/// Field manager of everything this controller writes.
pub const FIELD_MANAGER: &str = "dataguardian-backuppolicy";
/// Label on every BackupRun the schedule creates.
pub const POLICY_LABEL: &str = "dataguardian.io/policy";
/// Upper bound between two reconciles of a healthy policy (status freshness).
const MAX_REQUEUE: Duration = Duration::from_secs(5 * 60);

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: time_from_chrono(Utc::now()),
        observed_generation: generation,
    }
}

fn summary(r: &FinishedRun) -> RunSummary {
    let failure = r.failure.as_deref();
    RunSummary {
        name: r.name.clone(),
        completion_time: r.completed_at.map(time_from_chrono),
        reason: failure.and_then(|f| f.reason.clone()),
        message: failure.and_then(|f| f.message.clone()),
    }
}

/// Reconciles one BackupPolicy.
pub async fn reconcile(policy: Arc<BackupPolicy>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.runs_synced() {
        // The BackupRun cache is still loading: acting now would see no runs at all.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let ns = policy
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let now = Utc::now();
    let old_status = policy.status.clone().unwrap_or_default();
    let mut conditions = old_status.conditions.clone();

    // 1. The schedule.
    let schedule = match Schedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref()) {
        Ok(s) => {
            set_condition(
                &mut conditions,
                condition(
                    "ScheduleValid",
                    true,
                    "Valid",
                    format!(
                        "{} in {}",
                        policy.spec.schedule,
                        policy.spec.time_zone_or_default()
                    ),
                    generation,
                ),
            );
            Some(s)
        }
        Err(e) => {
            let was =
                find_condition(&old_status.conditions, "ScheduleValid").map(|c| c.reason.clone());
            set_condition(
                &mut conditions,
                condition(
                    "ScheduleValid",
                    false,
                    e.reason(),
                    e.to_string(),
                    generation,
                ),
            );
            if was.as_deref() != Some(e.reason()) {
                ctx.event(
                    policy.as_ref(),
                    EventType::Warning,
                    e.reason(),
                    "ValidateSchedule",
                    e.to_string(),
                )
                .await;
            }
            None
        }
    };

    // 2. The storage.
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), &ns);
    let storage = storages.get_opt(&policy.spec.storage_ref.name).await?;
    let storage_ready = match &storage {
        None => {
            set_condition(
                &mut conditions,
                condition(
                    "StorageReady",
                    false,
                    "StorageNotFound",
                    format!(
                        "BackupStorage {} not found in namespace {ns}",
                        policy.spec.storage_ref.name
                    ),
                    generation,
                ),
            );
            false
        }
        Some(s) => match s
            .status
            .as_ref()
            .and_then(|st| find_condition(&st.conditions, "Ready"))
        {
            Some(c) if c.status == "True" => {
                set_condition(
                    &mut conditions,
                    condition(
                        "StorageReady",
                        true,
                        "StorageReady",
                        format!("BackupStorage {} is ready", s.name_any()),
                        generation,
                    ),
                );
                true
            }
            Some(c) => {
                set_condition(
                    &mut conditions,
                    condition(
                        "StorageReady",
                        false,
                        &c.reason,
                        format!("BackupStorage {}: {}", s.name_any(), c.message),
                        generation,
                    ),
                );
                false
            }
            None => {
                set_condition(
                    &mut conditions,
                    condition(
                        "StorageReady",
                        false,
                        "NotProbedYet",
                        format!("BackupStorage {} has not been probed yet", s.name_any()),
                        generation,
                    ),
                );
                false
            }
        },
    };

    // The storage turning unhealthy is news for the policy's channels (not a storage that was
    // never probed yet, and not again while it stays down).
    let unhealthy = |c: Option<&Condition>| {
        c.is_some_and(|c| c.status == "False" && c.reason != "NotProbedYet")
    };
    let storage_now = find_condition(&conditions, "StorageReady");
    if unhealthy(storage_now)
        && !unhealthy(find_condition(&old_status.conditions, "StorageReady"))
        && let Some(c) = storage_now
    {
        ctx.notify(
            &policy,
            Notification {
                event: NotificationEvent::StorageUnhealthy,
                namespace: ns.clone(),
                policy: name.clone(),
                kind: "BackupPolicy",
                name: name.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                time: now,
            },
        );
    }

    // 3. The policy's runs, from the shared cache.
    let active = ctx.runs.active_of(&ns, &name);
    let finished = ctx.runs.finished_of(&ns, &name);
    let last_success = finished
        .iter()
        .filter(|r| r.succeeded)
        .max_by_key(|r| r.completed_at);
    let last_failure = finished
        .iter()
        .filter(|r| !r.succeeded)
        .max_by_key(|r| r.completed_at);

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
            let mut run = BackupRun::new(
                &new.name,
                BackupRunSpec {
                    policy_ref: LocalObjectReference::new(name.clone()),
                    trigger: Trigger::Scheduled,
                    scheduled_time: Some(time_from_chrono(new.scheduled_time)),
                    reason: None,
                    compression: None,
                    active_deadline_seconds: None,
                },
            );
            run.metadata.namespace = Some(ns.clone());
            run.metadata.labels = Some([(POLICY_LABEL.to_string(), name.clone())].into());
            let api: Api<BackupRun> = Api::namespaced(ctx.client.clone(), &ns);
            match api
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &run,
                )
                .await
            {
                Ok(_) => {
                    let late = new.late_by.as_secs();
                    let note = if late > 60 {
                        let missed = plan.missed.count;
                        format!(
                            "created catch-up run {} for {} ({late}s late; {missed} older missed time(s) skipped)",
                            new.name,
                            new.scheduled_time.to_rfc3339()
                        )
                    } else {
                        format!(
                            "created run {} for {}",
                            new.name,
                            new.scheduled_time.to_rfc3339()
                        )
                    };
                    ctx.event(
                        policy.as_ref(),
                        EventType::Normal,
                        if late > 60 { "CatchUp" } else { "Scheduled" },
                        "CreateRun",
                        note,
                    )
                    .await;
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

    // 5. Retention and run history.
    if let Some(at) = apply_retention(&ctx, &ns, &policy, storage.as_ref(), &finished, now).await? {
        let until = (at - now).to_std().unwrap_or_default();
        requeue = requeue.min(until.max(Duration::from_secs(1)));
    }

    // 6. RPO.
    let last_success_time = last_success.and_then(|r| r.completed_at);
    if let Some(schedule) = &schedule {
        let created = policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map(time_to_chrono)
            .unwrap_or(now);
        let c = evaluate_rpo(
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
        let ok = match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        };
        let (reason, message, recheck) = (c.reason, c.message, c.recheck_at);
        let was = find_condition(&old_status.conditions, "RPOMet").map(|c| c.status.clone());
        let mut cond = condition(
            "RPOMet",
            ok.unwrap_or(false),
            reason,
            message.clone(),
            generation,
        );
        if ok.is_none() {
            cond.status = "Unknown".into();
        }
        if ok == Some(false) && was.as_deref() != Some("False") {
            ctx.notify(
                &policy,
                Notification {
                    event: NotificationEvent::RpoMissed,
                    namespace: ns.clone(),
                    policy: name.clone(),
                    kind: "BackupPolicy",
                    name: name.clone(),
                    reason: cond.reason.clone(),
                    message: message.clone(),
                    time: now,
                },
            );
            ctx.event(
                policy.as_ref(),
                EventType::Warning,
                "RPONotMet",
                "EvaluateRPO",
                message,
            )
            .await;
        }
        let labels = PolicyLabels {
            namespace: ns.clone(),
            policy: name.clone(),
        };
        match ok {
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
        set_condition(&mut conditions, cond);
        if let Some(at) = recheck {
            let until = (at - now).to_std().unwrap_or_default();
            requeue = requeue.min(until.max(Duration::from_secs(1)));
        }
    }
    if let Some(t) = last_success_time {
        ctx.metrics
            .last_success
            .get_or_create(&PolicyLabels {
                namespace: ns.clone(),
                policy: name.clone(),
            })
            .set(t.timestamp() as f64);
    }

    // 7. Ready.
    let schedule_ok = schedule.is_some();
    let (ready, ready_reason, ready_message) = match (schedule_ok, storage_ready) {
        (true, true) => (
            true,
            "Ready",
            "schedule valid and storage ready".to_string(),
        ),
        (false, _) => (
            false,
            "ScheduleInvalid",
            find_condition(&conditions, "ScheduleValid")
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        ),
        (true, false) => (
            false,
            "StorageNotReady",
            find_condition(&conditions, "StorageReady")
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        ),
    };
    set_condition(
        &mut conditions,
        condition("Ready", ready, ready_reason, ready_message, generation),
    );

    // Fields of the API that this version does not act on yet: say so instead of ignoring them.
    let mut unsupported = Vec::new();
    if !policy.spec.secondary_storage_refs.is_empty() {
        unsupported.push("secondaryStorageRefs (artifacts are written to storageRef only)");
    }
    if unsupported.is_empty() {
        conditions.retain(|c| c.type_ != "Unsupported");
    } else {
        let message = format!(
            "not implemented in this version: {}",
            unsupported.join("; ")
        );
        if find_condition(&old_status.conditions, "Unsupported").is_none() {
            ctx.event(
                policy.as_ref(),
                EventType::Warning,
                "NotImplemented",
                "Validate",
                message.clone(),
            )
            .await;
        }
        set_condition(
            &mut conditions,
            condition("Unsupported", true, "NotImplemented", message, generation),
        );
    }

    let mut active_names: Vec<String> = active.iter().map(|r| r.name_any()).collect();
    if let Some(n) = created_now
        && !active_names.contains(&n)
    {
        active_names.push(n);
    }
    active_names.sort();
    // Only the fields this controller owns: validation fields belong to the validation controller.
    let status = json!({
        "conditions": conditions,
        "observedGeneration": generation,
        "lastScheduleTime": last_schedule_time,
        "nextScheduleTime": next_schedule_time,
        "lastSuccessfulRun": last_success.map(summary),
        "lastFailedRun": last_failure.map(summary),
        "activeRuns": active_names,
    });
    let unchanged = serde_json::to_value(&old_status).ok().is_some_and(|old| {
        [
            "conditions",
            "observedGeneration",
            "lastScheduleTime",
            "nextScheduleTime",
            "lastSuccessfulRun",
            "lastFailedRun",
            "activeRuns",
        ]
        .iter()
        .all(|k| normalized(old.get(*k)) == normalized(status.get(*k)))
    });
    if !unchanged {
        let api: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({"apiVersion": BackupPolicy::api_version(&()), "kind": BackupPolicy::kind(&()), "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    Ok(Action::requeue(requeue))
}

/// Nulls, empty arrays and absent fields compare equal.
fn normalized(v: Option<&serde_json::Value>) -> Option<&serde_json::Value> {
    match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(a)) if a.is_empty() => None,
        other => other,
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
                retain_until: artifact.and_then(|a| a.retain_until),
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
        Some(s) if s.spec.s3.is_some() => match StorageAccess::open(&ctx.client, ns, s).await {
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
                CleanupAction::DeleteManifest { key, .. } => {
                    let Some(access) = &access else { continue };
                    let key = parse_s3_location(key)
                        .map(|(_, k)| k)
                        .unwrap_or_else(|| key.clone());
                    // Read the manifest first: it lists the data objects to delete after it.
                    let data_keys = manifest_data_keys(access, &key).await;
                    if let Err(e) = access.delete(&key).await {
                        tracing::warn!(run = %cleanup.run, error = %e, "retention: deleting manifest failed");
                        break;
                    }
                    for data in data_keys {
                        if let Err(e) = access.delete(&data).await {
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

/// Deletes a run retention pruned (one already gone is fine) and says so on the policy.
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
    let mut manifest_key = None;
    let mut data_key = None;
    for action in &cleanup.actions {
        match action {
            CleanupAction::DeleteManifest { key, .. } => manifest_key = Some(key.as_str()),
            CleanupAction::DeleteArtifactData { key, .. } => data_key = Some(key.as_str()),
            CleanupAction::DeleteBackupRun => {}
        }
    }
    let location = match restore_job::artifact_manifest_location(
        storage,
        data_key.unwrap_or_default(),
        manifest_key.filter(|k| !k.is_empty()),
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(run = %cleanup.run, error = %e, "retention: cannot locate the artifact on the claim; the run is kept");
            return Ok(None);
        }
    };
    let name = prune_job::job_name(&cleanup.run);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let recheck = Some(now + chrono::Duration::seconds(3));
    match job_watch::observe(ctx, ns, Some(&name)).await? {
        Observed::Vanished { .. } | Observed::NotCreated => {
            let defaults = crate::jobs::shell::JobDefaults {
                agent_image: ctx.settings.agent_image.clone(),
                ttl_seconds_after_finished: ctx.settings.job_ttl_seconds,
            };
            let job = match prune_job::build(&cleanup.run, policy, storage, &location, &defaults) {
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
            match jobs.create(&pp, &job).await {
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
            let detail = termination_message
                .as_deref()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(message);
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

/// The data objects a manifest lists (full keys), or none when it cannot be read.
async fn manifest_data_keys(access: &StorageAccess, manifest_key: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct M {
        artifacts: Vec<A>,
    }
    #[derive(serde::Deserialize)]
    struct A {
        key: String,
    }
    let dir = manifest_key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    match access.get(manifest_key, 16 << 20).await {
        Ok(bytes) => serde_json::from_slice::<M>(&bytes)
            .map(|m| {
                m.artifacts
                    .into_iter()
                    .map(|a| {
                        if dir.is_empty() {
                            a.key
                        } else {
                            format!("{dir}/{}", a.key)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}
