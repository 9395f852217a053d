//! Declarative key rotation: when a policy's age recipients change, the retained backups still
//! wrapped for the old ones are re-wrapped by a rotation Job ([`crate::jobs::rotation_job`])
//! with the old key the policy names (`spec.encryption.rotation`); once a re-wrap is reported,
//! the run's recorded manifest digest and recipients are updated, so restores by `backupRunRef`
//! pin the re-wrapped manifest (and need the new identity). The decisions are in
//! [`super::rotation_plan`]; this is the API side.
//!
//! One Job at a time per policy and key set, named from both. A finished Job's reports are
//! recorded each time it is seen (idempotent: a report only changes a run still recording its
//! "before" digest); a succeeded Job stays until its TTL when nothing is left to re-wrap, and is
//! deleted when more backups wait (the next Job takes them); a failed Job is reported (Warning
//! Event, `KeysCurrent=False` `KeyRotationFailed`, an audit record) and deleted, and the
//! rotation is tried again after [`RETRY_AFTER`].

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;

use crate::api::backup_policy::KeysStatus;
use crate::api::common::condition_types::KEYS_CURRENT;
use crate::api::common::time_to_chrono;
use crate::api::{BackupPolicy, BackupRun, BackupStorage};
use crate::controller::common::context::Context;
use crate::controller::common::error::Result;
use crate::controller::common::job_watch::{self, Observed};
use crate::controller::common::reason::Reason;
use crate::controller::common::run_cache::FinishedRun;
use crate::jobs::rotation_job;

use super::FIELD_MANAGER;
use super::rotation_plan::{
    self, CopyUpdate, RecordedUpdate, RotationPlan, RotationState, keys_condition, keys_status,
};

/// A failed rotation is tried again this long after it failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How often a running rotation is looked at.
const POLL: Duration = Duration::from_secs(3);
/// The Event action of every rotation Event.
const ACTION: &str = "RotateKeys";

/// What the rotation adds to the policy's status.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// `KeysCurrent`.
    pub condition: Condition,
    /// `status.keys`.
    pub keys: KeysStatus,
    /// When to look again.
    pub requeue: Option<Duration>,
}

/// Observes and advances the key rotation of `policy`. `None`: the policy is not encrypted, or
/// its recipients cannot be read (the BackupRun controller reports missing Secrets).
pub async fn reconcile_rotation(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    storage: Option<&BackupStorage>,
    finished: &[FinishedRun],
    kept: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Result<Option<Rotation>> {
    let Some(encryption) = &policy.spec.encryption else {
        return Ok(None);
    };
    let desired = match &encryption.recipients_secret_ref {
        None => Vec::new(),
        Some(selector) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let Some(secret) = secrets.get_opt(&selector.name).await? else {
                return Ok(None);
            };
            // Public keys only; never logged.
            let Some(text) = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&selector.key))
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
            else {
                return Ok(None);
            };
            rotation_plan::recipient_fingerprints(&text)
        }
    };
    let key_set = rotation_plan::key_set(
        &desired,
        encryption
            .kms
            .as_ref()
            .map(|k| (k.region.as_str(), k.key_id.as_str())),
    );
    let desired_kms = encryption.kms.as_ref().map(|k| k.key_id.as_str());
    let name = policy.name_any();
    let job_name = rotation_job::job_name(&name, &key_set);
    let mut runs: Vec<FinishedRun> = finished.to_vec();
    let generation = policy.metadata.generation;

    let (state, job_shown, requeue) = match job_watch::observe(ctx, ns, Some(&job_name)).await? {
        Observed::Active { .. } => (
            RotationState::Running {
                job: job_name.clone(),
            },
            Some(job_name.clone()),
            Some(POLL),
        ),
        Observed::Finished { succeeded, .. } => {
            let pods = job_pods(ctx, ns, &job_name).await?;
            let updates = rotation_plan::recorded_updates(
                &runs,
                &rotation_plan::rewrap_reports(&pods),
                desired_kms,
            );
            let mut runs_after = runs.clone();
            apply_locally(&mut runs_after, &updates);
            // Then the copies refreshed from the re-wrapped manifests.
            let copy_updates =
                rotation_plan::copy_updates(&runs_after, &rotation_plan::copy_reports(&pods));
            apply_copies_locally(&mut runs_after, &copy_updates);
            let rewrapped =
                updates.iter().any(|u| u.not_rewrappable.is_none()) || !copy_updates.is_empty();
            let after = rotation_plan::plan(
                &desired,
                desired_kms,
                &runs_after,
                kept,
                &policy.spec.storage_ref.name,
            );
            // Once the runs record the re-wrap, nothing shows it happened: its audit record is
            // made durable first (the write-ahead spool), or the runs wait (docs/audit.md).
            if succeeded && rewrapped {
                ctx.audit_durably(crate::audit::record::key_rotation(
                    policy,
                    &key_set,
                    "succeeded",
                    format!(
                        "{} ({})",
                        done_note(&job_name, &after),
                        describe(&desired, policy)
                    ),
                ))
                .await?;
            }
            record(ctx, ns, &updates).await?;
            record_copies(ctx, ns, &copy_updates).await?;
            runs = runs_after;
            if succeeded {
                if after.targets.is_empty() {
                    if rewrapped {
                        announce_done(ctx, policy, &job_name, &after).await;
                    }
                    (RotationState::Current, Some(job_name.clone()), None)
                } else {
                    // More backups wait: the next Job (same name) takes them.
                    if rewrapped {
                        announce_done(ctx, policy, &job_name, &after).await;
                    }
                    job_watch::delete(ctx, ns, &job_name).await?;
                    (
                        RotationState::Running {
                            job: job_name.clone(),
                        },
                        Some(job_name.clone()),
                        Some(Duration::from_secs(1)),
                    )
                }
            } else {
                let detail = failure_detail(&pods);
                let previous = policy
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == KEYS_CURRENT));
                if previous.is_none_or(|c| c.reason != Reason::KeyRotationFailed.as_str()) {
                    // Durable before the status says KeyRotationFailed (after which this is
                    // not reported again).
                    ctx.audit_durably(crate::audit::record::key_rotation(
                        policy,
                        &key_set,
                        "failed",
                        format!(
                            "Job {job_name}: {detail}; {} of {} backups wrapped for {}",
                            after.current,
                            after.total,
                            describe(&desired, policy)
                        ),
                    ))
                    .await?;
                    ctx.event(
                        policy,
                        EventType::Warning,
                        Reason::KeyRotationFailed.as_str(),
                        ACTION,
                        format!(
                            "Job {job_name} failed: {detail}; {} of {} retained backups are \
                             wrapped for the policy's keys; the rotation is tried again in {}s",
                            after.current,
                            after.total,
                            RETRY_AFTER.as_secs()
                        ),
                    )
                    .await;
                }
                // The failed Job stays for RETRY_AFTER (its failure shows meanwhile), then goes
                // so that the next pass starts another.
                let wait = match failed_at(ctx, ns, &job_name).await? {
                    Some(at) => RETRY_AFTER
                        .checked_sub((now - at).to_std().unwrap_or_default())
                        .filter(|d| !d.is_zero()),
                    None => None,
                };
                let requeue = match wait {
                    Some(wait) => wait,
                    None => {
                        job_watch::delete(ctx, ns, &job_name).await?;
                        Duration::from_secs(1)
                    }
                };
                (
                    RotationState::Failed {
                        job: job_name.clone(),
                        detail,
                    },
                    Some(job_name.clone()),
                    Some(requeue),
                )
            }
        }
        Observed::NotCreated | Observed::Vanished { .. } => {
            let p = rotation_plan::plan(
                &desired,
                desired_kms,
                &runs,
                kept,
                &policy.spec.storage_ref.name,
            );
            if p.targets.is_empty() {
                (RotationState::Current, None, None)
            } else if encryption.rotation.is_none() {
                (RotationState::NoPreviousKey, None, None)
            } else {
                match storage {
                    None => (RotationState::NoPreviousKey, None, Some(RETRY_AFTER)),
                    Some(storage) => {
                        let state = start(ctx, ns, policy, storage, &job_name, &p).await?;
                        let requeue = match state {
                            RotationState::Failed { .. } => RETRY_AFTER,
                            _ => POLL,
                        };
                        (state, Some(job_name.clone()), Some(requeue))
                    }
                }
            }
        }
    };
    let p = rotation_plan::plan(
        &desired,
        desired_kms,
        &runs,
        kept,
        &policy.spec.storage_ref.name,
    );
    // A succeeded Job with nothing left is current; while reports are being recorded the plan
    // (on the updated runs) decides.
    let state = match state {
        RotationState::Current if !p.keys_current() => RotationState::NoPreviousKey,
        s => s,
    };
    let condition = keys_condition(&p, &state, generation, now);
    announce_not_rewrappable(ctx, policy, &condition, &p).await;
    Ok(Some(Rotation {
        condition,
        keys: keys_status(&desired, policy, &key_set, &p, job_shown),
        requeue,
    }))
}

/// Creates the rotation Job for the plan's targets.
async fn start(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    job_name: &str,
    p: &RotationPlan,
) -> Result<RotationState> {
    let defaults = crate::jobs::shell::JobDefaults::from(&ctx.settings);
    // The secondary storages of the copies to refresh (their credentials, as a copy Job's).
    let wanted: BTreeSet<&str> = p
        .targets
        .iter()
        .flat_map(|t| t.copies.iter().map(|c| c.storage.as_str()))
        .collect();
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), ns);
    let mut secondaries = Vec::new();
    for name in wanted {
        if let Some(s) = storages.get_opt(name).await? {
            secondaries.push(s);
        }
    }
    let mut job: Job = match rotation_job::build(
        job_name,
        policy,
        storage,
        &secondaries,
        &p.targets,
        &defaults,
    ) {
        Ok(job) => job,
        Err(e) => {
            return Ok(RotationState::Failed {
                job: job_name.to_string(),
                detail: format!("cannot build the rotation Job: {e}"),
            });
        }
    };
    let span = tracing::info_span!("create_rotation_job", k8s.job.name = %job_name);
    crate::jobs::shell::add_trace_env(
        &mut job,
        &crate::telemetry::otel::job_context(&span),
        &crate::telemetry::otel::inherited_env(),
    );
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match crate::telemetry::otel::in_span(span, jobs.create(&pp, &job)).await {
        Ok(_) => {
            let runs: Vec<&str> = p.targets.iter().map(|t| t.run.as_str()).collect();
            ctx.event(
                policy,
                EventType::Normal,
                Reason::RotatingKeys.as_str(),
                ACTION,
                format!(
                    "Job {job_name} re-wraps the data keys of {} backups ({}) for the policy's \
                     keys; artifacts are not rewritten{}",
                    runs.len(),
                    runs.join(", "),
                    if p.waiting > 0 {
                        format!("; {} more wait for the next Job", p.waiting)
                    } else {
                        String::new()
                    }
                ),
            )
            .await;
        }
        // Created by an earlier pass, or the previous one is still being deleted.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(RotationState::Running {
        job: job_name.to_string(),
    })
}

/// Records each re-wrap on its run: the manifest's new digest and recipients (what restores
/// pin). A run gone meanwhile is skipped.
async fn record(ctx: &Context, ns: &str, updates: &[RecordedUpdate]) -> Result<()> {
    let api: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for u in updates {
        let mut encryption = json!({"method": "age", "recipients": u.recipients,
            "kmsKeyId": u.kms_key_id});
        if let Some(scheme) = &u.not_rewrappable {
            encryption["scheme"] = json!(scheme);
        }
        let patch = json!({"status": {"artifact": {
            "manifestSha256": u.manifest_sha256,
            "encryption": encryption,
        }}});
        match api.patch_status(&u.run, &pp, &Patch::Merge(&patch)).await {
            Ok(run) if u.not_rewrappable.is_some() => {
                ctx.event(
                    &run,
                    EventType::Warning,
                    Reason::BackupsNotRewrappable.as_str(),
                    ACTION,
                    "written before envelope encryption: its artifacts are encrypted straight to \
                     its recipients, no re-wrap can re-key it; it stays readable only with the \
                     previous identity until retention removes it"
                        .to_string(),
                )
                .await;
            }
            Ok(run) => {
                ctx.event(
                    &run,
                    EventType::Normal,
                    Reason::KeysRotated.as_str(),
                    ACTION,
                    format!(
                        "data key re-wrapped for {}{}; manifest sha256 now {}; artifacts unchanged",
                        u.recipients.join(", "),
                        u.kms_key_id
                            .as_deref()
                            .map(|k| format!(" and KMS key {k}"))
                            .unwrap_or_default(),
                        u.manifest_sha256
                    ),
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Records each refreshed copy on its run: the copy's manifest digest is the run's again (what a
/// restore that reads the copy pins). A run gone meanwhile is skipped.
async fn record_copies(ctx: &Context, ns: &str, updates: &[CopyUpdate]) -> Result<()> {
    let api: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    for u in updates {
        let Some(run) = api.get_opt(&u.run).await? else {
            continue;
        };
        let mut copies = run
            .status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .map(|a| a.copies.clone())
            .unwrap_or_default();
        let Some(copy) = copies.iter_mut().find(|c| c.storage == u.storage) else {
            continue;
        };
        copy.manifest_sha256 = Some(u.manifest_sha256.clone());
        copy.time = Some(crate::api::common::time_from_chrono(Utc::now()));
        let patch = json!({"status": {"artifact": {"copies": copies}}});
        match api
            .patch_status(&u.run, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(run) => {
                ctx.event(
                    &run,
                    EventType::Normal,
                    Reason::KeysRotated.as_str(),
                    ACTION,
                    format!(
                        "the copy on storage {} now holds the re-wrapped manifest (sha256 {}); \
                         its artifacts unchanged",
                        u.storage, u.manifest_sha256
                    ),
                )
                .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `runs` as they read once the copy `updates` are recorded.
fn apply_copies_locally(runs: &mut [FinishedRun], updates: &[CopyUpdate]) {
    for u in updates {
        if let Some(c) = runs
            .iter_mut()
            .find(|r| r.name == u.run)
            .and_then(|r| r.artifact.as_deref_mut())
            .and_then(|a| a.copy_manifests.iter_mut().find(|c| c.storage == u.storage))
        {
            c.manifest_sha256 = u.manifest_sha256.clone();
        }
    }
}

/// `runs` as they read once `updates` are recorded (the run cache may lag behind).
fn apply_locally(runs: &mut [FinishedRun], updates: &[RecordedUpdate]) {
    for u in updates {
        if let Some(a) = runs
            .iter_mut()
            .find(|r| r.name == u.run)
            .and_then(|r| r.artifact.as_deref_mut())
        {
            a.manifest_sha256 = Some(u.manifest_sha256.clone());
            a.recipients = Some(u.recipients.clone());
            a.kms_key_id = u.kms_key_id.clone();
            if u.not_rewrappable.is_some() {
                a.direct_encryption = true;
            }
        }
    }
}

/// What a succeeded rotation Job did (the Event's note; the audit record's detail).
fn done_note(job_name: &str, after: &RotationPlan) -> String {
    format!(
        "Job {job_name} re-wrapped the data keys; {} of {} retained backups are wrapped for the \
         policy's keys",
        after.current, after.total
    )
}

/// The Event of re-wrapped backups (their audit record was spooled before the runs recorded
/// the re-wrap).
async fn announce_done(ctx: &Context, policy: &BackupPolicy, job_name: &str, after: &RotationPlan) {
    ctx.event(
        policy,
        EventType::Normal,
        Reason::KeysRotated.as_str(),
        ACTION,
        done_note(job_name, after),
    )
    .await;
}

/// The one Warning Event when backups that no re-wrap can re-key remain:
/// sent when `KeysCurrent` turns to `BackupsNotRewrappable`, not on every pass.
async fn announce_not_rewrappable(
    ctx: &Context,
    policy: &BackupPolicy,
    condition: &Condition,
    p: &RotationPlan,
) {
    if condition.reason != Reason::BackupsNotRewrappable.as_str() {
        return;
    }
    let previous = policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == KEYS_CURRENT));
    if previous.is_some_and(|c| c.reason == condition.reason) {
        return;
    }
    ctx.event(
        policy,
        EventType::Warning,
        Reason::BackupsNotRewrappable.as_str(),
        ACTION,
        format!(
            "{} retained backups cannot be re-wrapped{}",
            p.not_rewrappable.len(),
            rotation_plan::not_rewrappable_note(p)
        ),
    )
    .await;
}

/// Who the keys are, for messages: fingerprints and the KMS key id, never keys.
fn describe(fingerprints: &[String], policy: &BackupPolicy) -> String {
    let mut parts: Vec<String> = fingerprints.iter().map(|f| format!("age {f}")).collect();
    if let Some(kms) = policy.spec.encryption.as_ref().and_then(|e| e.kms.as_ref()) {
        parts.push(format!("KMS {}", kms.key_id));
    }
    if parts.is_empty() {
        "no keys".into()
    } else {
        parts.join(", ")
    }
}

/// The Pods of the rotation Job.
async fn job_pods(ctx: &Context, ns: &str, job_name: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await?
        .items)
}

/// The agent's error from the first container that failed with a report, else a generic line.
fn failure_detail(pods: &[Pod]) -> String {
    pods.iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .find(|t| t.exit_code != 0)
        .map(|t| {
            job_watch::failure_detail(
                t.message.as_deref(),
                format!("a re-wrap exited with code {}", t.exit_code),
            )
        })
        .unwrap_or_else(|| "the Job failed before any re-wrap reported".into())
}

/// When the Job `job_name` failed (its `Failed` condition).
async fn failed_at(ctx: &Context, ns: &str, job_name: &str) -> Result<Option<DateTime<Utc>>> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    Ok(jobs.get_opt(job_name).await?.and_then(|j| {
        j.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Failed" && c.status == "True")?
            .last_transition_time
            .map(|t| time_to_chrono(&t))
    }))
}
