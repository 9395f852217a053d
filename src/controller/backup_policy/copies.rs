//! Copies of confirmed backups on a policy's `secondaryStorageRefs`: the executor of
//! [`super::copy_plan`], called from the policy reconcile.
//!
//! For each secondary storage the oldest succeeded run without a confirmed copy is copied,
//! one at a time per storage: a server-side copy when both storages are buckets on the same S3
//! endpoint with the same credentials ([`CopyMethod::ServerSideCopy`]), otherwise a copy Job
//! (`agent copy`, [`crate::jobs::copy_job`]). Either way the manifest goes last and must hash to
//! the digest recorded when the run was confirmed. A copy counts only once the operator has
//! confirmed it itself (S3: the copy's manifest hashes to that digest and every artifact it lists
//! has the listed size; a filesystem storage: the Job's report names exactly the expected
//! location and digest). It is then recorded in the run's `status.artifact.copies` with an
//! Event; the policy's `status.copies` shows each storage's lag, and the metrics its RPO.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;

use crate::api::backup_policy::CopyStatus;
use crate::api::backup_run::ArtifactCopy;
use crate::api::common::{find_condition, time_from_chrono};
use crate::api::{BackupPolicy, BackupRun, BackupStorage};
use crate::contract::manifest::sha256_hex;
use crate::contract::{CopySummary, ManifestView};
use crate::controller::common::context::Context;
use crate::controller::common::error::Result;
use crate::controller::common::job_watch::{self, Observed};
use crate::controller::common::run_cache::FinishedRun;
use crate::controller::common::storage_access::{AccessError, StorageAccess, ambient_refusal};
use crate::jobs::backup_job::{ExpectedBackup, expected_backup};
use crate::jobs::{copy_job, prune_job};
use crate::telemetry::metrics::CopyLabels;
use crate::telemetry::otel;

use super::copy_plan::{
    CopyCandidate, CopyMethod, Secondary, StoragePlan, copy_method, plan_copies,
};
use super::copy_prune_plan::{CopyDeletion, CopyFacts, CopyPrune, CopyStore, plan_copy_prunes};

/// Field manager of `status.copies` on the policy.
pub const FIELD_MANAGER: &str = "dataguardian-copies";
/// Manifests are small; anything larger is not one of ours.
const MANIFEST_LIMIT: usize = 16 << 20;
/// Largest object one CopyObject request copies.
const SERVER_SIDE_LIMIT: u64 = 5 << 30;

/// What became of one copy this pass.
enum Outcome {
    /// Confirmed: record it.
    Done(Box<ArtifactCopy>),
    /// A copy Job is working on it.
    Running,
    /// Its copy Job waits for a place under the cluster-wide limit (why).
    Waiting(String),
    /// It failed; tried again later.
    Failed(String),
}

/// Copies what is due, records confirmed copies, writes `status.copies` and the copy metrics.
/// Returns when to look again.
pub async fn reconcile_copies(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    primary: Option<&BackupStorage>,
    finished: &[FinishedRun],
    kept: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let name = policy.name_any();
    let refs = &policy.spec.secondary_storage_refs;
    let old = policy
        .status
        .as_ref()
        .map(|s| s.copies.clone())
        .unwrap_or_default();
    if refs.is_empty() {
        if !old.is_empty() {
            write_status(ctx, ns, &name, &[]).await?;
        }
        return Ok(None);
    }
    let primary_name = policy.spec.storage_ref.name.clone();
    let mut candidates: Vec<CopyCandidate> = finished
        .iter()
        .filter(|r| r.succeeded)
        .filter_map(|r| {
            let a = r.artifact.as_deref()?;
            (a.storage == primary_name).then(|| CopyCandidate {
                name: r.name.clone(),
                completed_at: r.completed_at.unwrap_or(now),
                copied_to: a.copies.iter().map(|(s, _)| s.clone()).collect(),
                kept: kept.contains(&r.name),
            })
        })
        .collect();
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), ns);
    let mut secondaries = Vec::new();
    let mut objects = Vec::new();
    for r in refs {
        let storage = storages.get_opt(&r.name).await?;
        let usable = match (&storage, primary) {
            (None, _) => Err(format!("BackupStorage {} not found", r.name)),
            (_, None) => Err(format!(
                "the primary BackupStorage {primary_name} not found"
            )),
            (Some(s), Some(_)) => usable(ctx, ns, s),
        };
        secondaries.push(Secondary {
            name: r.name.clone(),
            usable,
        });
        objects.push(storage);
    }
    let mut done: Vec<(String, String)> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    let plans = plan_copies(&candidates, &secondaries, now);
    let mut requeue: Option<DateTime<Utc>> = None;
    let mut soon = |at: DateTime<Utc>| {
        requeue = Some(requeue.map_or(at, |r: DateTime<Utc>| r.min(at)));
    };
    for (plan, storage) in plans.iter().zip(&objects) {
        let (Some(run_name), Some(secondary), Some(primary)) =
            (plan.next.clone(), storage.as_ref(), primary)
        else {
            if plan.blocked.is_some() {
                soon(now + chrono::Duration::seconds(60));
            }
            continue;
        };
        let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
        let Some(run) = runs.get_opt(&run_name).await? else {
            continue;
        };
        match copy_one(ctx, ns, policy, primary, secondary, &run).await? {
            Outcome::Done(copy) => {
                record(ctx, ns, &run, &copy).await?;
                done.push((run_name.clone(), plan.storage.clone()));
                soon(now + chrono::Duration::seconds(1));
            }
            Outcome::Running => soon(now + chrono::Duration::seconds(3)),
            Outcome::Waiting(why) => {
                waiting.push((plan.storage.clone(), why));
                soon(now + chrono::Duration::seconds(15));
            }
            Outcome::Failed(why) => {
                let note = format!(
                    "copying run {run_name} to storage {} failed: {why}; it is tried again",
                    plan.storage
                );
                ctx.event(&run, EventType::Warning, "CopyFailed", "Copy", note.clone())
                    .await;
                ctx.event(policy, EventType::Warning, "CopyFailed", "Copy", note)
                    .await;
                failed.push((plan.storage.clone(), why));
                soon(now + chrono::Duration::seconds(60));
            }
        }
    }
    // The status after this pass: what was just confirmed counts, what just failed says why.
    for (run, storage) in done {
        if let Some(c) = candidates.iter_mut().find(|c| c.name == run) {
            c.copied_to.push(storage);
        }
    }
    let mut plans = plan_copies(&candidates, &secondaries, now);
    for (storage, why) in failed.into_iter().chain(waiting) {
        if let Some(p) = plans.iter_mut().find(|p| p.storage == storage) {
            p.blocked = Some(why);
        }
    }
    let status: Vec<CopyStatus> = plans.iter().map(|p| copy_status(p, now)).collect();
    for p in &plans {
        let labels = CopyLabels {
            namespace: ns.to_string(),
            policy: name.clone(),
            storage: p.storage.clone(),
        };
        match &p.last_copied {
            Some((_, t)) => {
                ctx.metrics
                    .copy_last_success
                    .get_or_create(&labels)
                    .set(t.timestamp() as f64);
            }
            None => {
                ctx.metrics.copy_last_success.remove(&labels);
            }
        }
        ctx.metrics
            .copy_pending
            .get_or_create(&labels)
            .set(i64::from(p.pending));
    }
    if status != old {
        write_status(ctx, ns, &name, &status).await?;
    }
    Ok(requeue)
}

/// `Err(why)` when `storage` cannot take copies now.
fn usable(ctx: &Context, ns: &str, storage: &BackupStorage) -> std::result::Result<(), String> {
    if let Some(why) = ambient_refusal(storage, ns, ctx.settings.allows_ambient_credentials(ns)) {
        return Err(why);
    }
    let not_ready = storage
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .filter(|c| c.status == "False");
    match not_ready {
        Some(c) => Err(format!(
            "BackupStorage {} is not Ready ({}): copies wait until it is back",
            storage.name_any(),
            c.reason
        )),
        None => Ok(()),
    }
}

fn copy_status(p: &StoragePlan, now: DateTime<Utc>) -> CopyStatus {
    let _ = now;
    CopyStatus {
        storage: p.storage.clone(),
        last_copied_run: p.last_copied.as_ref().map(|(n, _)| n.clone()),
        last_copied_run_time: p.last_copied.as_ref().map(|(_, t)| time_from_chrono(*t)),
        pending_runs: p.pending,
        lag_seconds: p.lag_seconds,
        message: p.blocked.clone(),
    }
}

async fn write_status(ctx: &Context, ns: &str, name: &str, copies: &[CopyStatus]) -> Result<()> {
    crate::controller::common::status::apply_status::<BackupPolicy>(
        &ctx.client,
        ns,
        name,
        FIELD_MANAGER,
        &json!({ "copies": copies }),
    )
    .await
}

/// Adds `copy` to the run's `status.artifact.copies` (a merge patch of that list only; the run's
/// controller never writes it) and says so in an Event.
async fn record(ctx: &Context, ns: &str, run: &BackupRun, copy: &ArtifactCopy) -> Result<()> {
    let mut copies: Vec<ArtifactCopy> = run
        .status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .map(|a| a.copies.clone())
        .unwrap_or_default();
    copies.retain(|c| c.storage != copy.storage);
    copies.push(copy.clone());
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    runs.patch_status(
        &run.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"artifact": {"copies": copies}}})),
    )
    .await?;
    ctx.event(
        run,
        EventType::Normal,
        "Copied",
        "Copy",
        format!(
            "copy on storage {} confirmed ({}): {}, manifest sha256 {}",
            copy.storage,
            copy.method.as_deref().unwrap_or("copy"),
            copy.location.as_deref().unwrap_or(&copy.key),
            copy.manifest_sha256
                .as_deref()
                .map(|d| &d[..d.len().min(16)])
                .unwrap_or("")
        ),
    )
    .await;
    Ok(())
}

/// Makes (or follows) the copy of `run` to `secondary`.
async fn copy_one(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    primary: &BackupStorage,
    secondary: &BackupStorage,
    run: &BackupRun,
) -> Result<Outcome> {
    let Some(artifact) = run.status.as_ref().and_then(|s| s.artifact.as_deref()) else {
        return Ok(Outcome::Failed("the run records no artifact".into()));
    };
    let Some(digest) = artifact.manifest_sha256.clone().filter(|d| d.len() == 64) else {
        return Ok(Outcome::Failed(
            "the run records no manifest digest, so its copy could not be verified".into(),
        ));
    };
    // Both locations are the operator's own computation; the source must be what the run's
    // status names.
    let (source, dest) = match (
        expected_backup(run, policy, primary),
        expected_backup(run, policy, secondary),
    ) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            return Ok(Outcome::Failed(format!(
                "cannot compute where the copy goes: {e}"
            )));
        }
    };
    if artifact.manifest_key.as_deref() != Some(source.location.as_str()) {
        return Ok(Outcome::Failed(format!(
            "the run's status names {}, but this run writes {}",
            artifact.manifest_key.as_deref().unwrap_or("no manifest"),
            source.location
        )));
    }
    let lock = secondary
        .spec
        .s3
        .as_ref()
        .and_then(|s| s.object_lock.as_ref());
    let copy = |method: CopyMethod, retain_until: Option<DateTime<Utc>>| {
        Box::new(ArtifactCopy {
            storage: secondary.name_any(),
            key: dest.key.clone(),
            confirmed: true,
            location: Some(dest.location.clone()),
            manifest_sha256: Some(digest.clone()),
            method: Some(method.as_str().into()),
            time: Some(time_from_chrono(Utc::now())),
            retain_until: retain_until.map(time_from_chrono),
        })
    };
    let open = |s: &BackupStorage| {
        let s = s.clone();
        async move {
            StorageAccess::open(
                &ctx.client,
                ns,
                &s,
                &ctx.settings.egress,
                ctx.settings.allows_ambient_credentials(ns),
            )
            .await
        }
    };
    let method = copy_method(
        primary.spec.s3.as_ref(),
        secondary.spec.s3.as_ref(),
        artifact.size_bytes,
    );
    if method == CopyMethod::ServerSideCopy {
        let (src, dst) = match (open(primary).await, open(secondary).await) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return Ok(Outcome::Failed(format!("cannot open storage: {e}")));
            }
        };
        return Ok(
            match server_side_copy(&src, &dst, &source.key, &dest.key, &digest, lock).await {
                Ok(()) => match confirm_copy(&dst, &dest.key, &digest).await {
                    Ok(until) => Outcome::Done(copy(method, until)),
                    Err(why) => Outcome::Failed(why),
                },
                Err(why) => Outcome::Failed(why),
            },
        );
    }

    // A copy Job.
    let job_name = copy_job::job_name(&run.name_any(), &secondary.name_any());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    match job_watch::observe(ctx, ns, Some(&job_name)).await? {
        Observed::NotCreated | Observed::Vanished { .. } => {
            // Copies share the cluster-wide limit of backups: both move whole artifacts.
            if let Some(limit) = ctx.settings.max_concurrent_backups {
                let all: Api<Job> = Api::all(ctx.client.clone());
                let listed = all
                    .list(&ListParams::default().labels(crate::contract::JOB_SELECTOR))
                    .await?;
                let running = data_jobs_running(&listed.items);
                if running >= limit.get() {
                    return Ok(Outcome::Waiting(format!(
                        "waiting for a place: {running} backup and copy Jobs run, the limit is {limit} (--max-concurrent-backups)"
                    )));
                }
            }
            let defaults = crate::jobs::shell::JobDefaults::from(&ctx.settings);
            let mut job = match copy_job::build(
                &run.name_any(),
                policy,
                primary,
                secondary,
                &source.location,
                &dest.location,
                &digest,
                &defaults,
            ) {
                Ok(job) => job,
                Err(e) => return Ok(Outcome::Failed(format!("cannot build the copy Job: {e}"))),
            };
            let pp = PostParams {
                field_manager: Some(super::FIELD_MANAGER.into()),
                ..Default::default()
            };
            // The copy joins the run's trace: a child of the run's root span, the agent's spans
            // children of this one.
            let span = tracing::info_span!("create_copy_job", k8s.job.name = %job_name);
            let trace = match crate::controller::common::run_trace::of(&run.metadata) {
                Some(t) => t.later_job_span(&span),
                None => otel::job_context(&span),
            };
            crate::jobs::shell::add_trace_env(&mut job, &trace, &otel::inherited_env());
            match otel::in_span(span, jobs.create(&pp, &job)).await {
                Ok(_) => {
                    ctx.event(
                        run,
                        EventType::Normal,
                        "Copying",
                        "Copy",
                        format!(
                            "Job {job_name} copies the backup to storage {}",
                            secondary.name_any()
                        ),
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Outcome::Running)
        }
        Observed::Active { .. } => Ok(Outcome::Running),
        Observed::Finished {
            succeeded,
            reason,
            message,
            termination_message,
            ..
        } => {
            let outcome = if !succeeded {
                let detail = job_watch::failure_detail(termination_message.as_deref(), message);
                Outcome::Failed(format!("Job {job_name} failed ({reason}: {detail})"))
            } else if secondary.spec.s3.is_some() {
                match open(secondary).await {
                    Ok(dst) => match confirm_copy(&dst, &dest.key, &digest).await {
                        Ok(until) => Outcome::Done(copy(method, until)),
                        Err(why) => Outcome::Failed(why),
                    },
                    Err(e) => Outcome::Failed(format!("cannot open storage: {e}")),
                }
            } else {
                // A claim only the Job's pod mounts: its report must name exactly the copy's
                // place in that pod and the recorded digest.
                let expected = dest.location.replacen(
                    &format!("file://{}/", crate::jobs::shell::STORAGE_MOUNT),
                    &format!("file://{}/", copy_job::COPY_MOUNT),
                    1,
                );
                match termination_message.as_deref().and_then(CopySummary::parse) {
                    Some(r)
                        if r.location == expected
                            && r.manifest_sha256.eq_ignore_ascii_case(&digest) =>
                    {
                        Outcome::Done(copy(method, None))
                    }
                    _ => Outcome::Failed(format!(
                        "Job {job_name} did not report a copy at {expected} with the recorded manifest digest"
                    )),
                }
            };
            job_watch::delete(ctx, ns, &job_name).await?;
            Ok(outcome)
        }
    }
}

/// How many of `jobs` are backup or copy Jobs still running (not Complete or Failed).
fn data_jobs_running(jobs: &[Job]) -> usize {
    jobs.iter()
        .filter(|j| {
            let component = j
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(crate::contract::COMPONENT_LABEL))
                .map(String::as_str);
            matches!(
                component,
                Some(crate::contract::COMPONENT_BACKUP | crate::contract::COMPONENT_COPY)
            )
        })
        .filter(|j| {
            let status = j.status.as_ref();
            status.is_none_or(|s| {
                s.completion_time.is_none()
                    && !s.conditions.iter().flatten().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
            })
        })
        .count()
}

/// Joins a manifest's directory and a key it lists.
fn beside(manifest_key: &str, rel: &str) -> String {
    match manifest_key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{rel}"),
        None => rel.to_string(),
    }
}

/// The manifest at `key` in `access`, checked against the recorded `digest` and parsed.
async fn pinned_manifest(
    access: &StorageAccess,
    key: &str,
    digest: &str,
) -> std::result::Result<(Vec<u8>, ManifestView), String> {
    let bytes = access.get(key, MANIFEST_LIMIT).await.map_err(|e| match e {
        AccessError::NotFound(_) => format!("manifest {key} is missing"),
        other => format!("reading manifest {key}: {other}"),
    })?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(digest) {
        return Err(format!(
            "manifest {key} has sha256 {actual}, the run recorded {digest}: refused"
        ));
    }
    let view = ManifestView::parse(&bytes).map_err(|e| format!("manifest {key}: {e}"))?;
    if let Some(bad) = view
        .artifacts
        .iter()
        .find(|a| !crate::contract::manifest::is_plain_relative_key(&a.key))
    {
        return Err(format!(
            "manifest {key} lists {:?}, which is not a plain key below its directory",
            bad.key
        ));
    }
    Ok((bytes, view))
}

/// Server-side copy: every artifact (sizes checked against the pinned manifest first), then the
/// manifest, with the destination's Object Lock.
async fn server_side_copy(
    src: &StorageAccess,
    dst: &StorageAccess,
    src_key: &str,
    dst_key: &str,
    digest: &str,
    lock: Option<&crate::api::backup_storage::ObjectLock>,
) -> std::result::Result<(), String> {
    let (bytes, view) = pinned_manifest(src, src_key, digest).await?;
    for a in &view.artifacts {
        let from = beside(src_key, &a.key);
        let info = src
            .head(&from)
            .await
            .map_err(|e| format!("checking {from}: {e}"))?;
        if info.size != a.size_bytes {
            return Err(format!(
                "{from} has {} bytes, the manifest lists {}: not copied",
                info.size, a.size_bytes
            ));
        }
        if info.size > SERVER_SIDE_LIMIT {
            return Err(format!(
                "{from} is larger than 5 GiB, beyond a single server-side copy"
            ));
        }
        dst.copy_from(src.bucket(), &from, &beside(dst_key, &a.key), lock)
            .await
            .map_err(|e| e.to_string())?;
    }
    dst.put_locked(dst_key, bytes, lock)
        .await
        .map_err(|e| e.to_string())
}

/// Confirms a copy on S3: its manifest hashes to `digest` and every artifact it lists exists
/// with the listed size. Returns the earliest Object Lock retain-until among its objects.
pub async fn confirm_copy(
    access: &StorageAccess,
    key: &str,
    digest: &str,
) -> std::result::Result<Option<DateTime<Utc>>, String> {
    let (_, view) = pinned_manifest(access, key, digest).await?;
    if view.artifacts.is_empty() {
        return Err(format!("manifest {key} lists no artifacts"));
    }
    let mut until: Option<DateTime<Utc>> = access
        .head(key)
        .await
        .map_err(|e| format!("checking {key}: {e}"))?
        .retain_until;
    for a in &view.artifacts {
        let k = beside(key, &a.key);
        let info = access.head(&k).await.map_err(|e| match e {
            AccessError::NotFound(_) => format!("copied artifact {k} is missing"),
            other => format!("checking {k}: {other}"),
        })?;
        if info.size != a.size_bytes {
            return Err(format!(
                "copied artifact {k} has {} bytes, the manifest lists {}",
                info.size, a.size_bytes
            ));
        }
        if let Some(t) = info.retain_until {
            until = Some(until.map_or(t, |u| u.min(t)));
        }
    }
    Ok(until)
}

/// Retention of run `name`'s copies, all or none ([`plan_copy_prunes`]): every confirmed copy is
/// checked first (lock, storage usable, location, digest; an S3 copy's manifest read and pinned)
/// and one that must stay keeps the run and every copy ([`CopyDeletion::Refused`]). Then a prune
/// Job deletes each copy on a filesystem storage from its claim ([`CopyDeletion::InProgress`]
/// while they run), and once none is left the S3 copies are deleted, manifest first, only what a
/// manifest with the recorded digest lists. Each copy deleted leaves the run's
/// `status.artifact.copies` with an Event `CopyPruned`.
pub async fn delete_copies(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    name: &str,
    now: DateTime<Utc>,
) -> Result<CopyDeletion> {
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    let Some(run) = runs.get_opt(name).await? else {
        return Ok(CopyDeletion::Deleted);
    };
    let mut remaining: Vec<ArtifactCopy> = run
        .status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .map(|a| a.copies.clone())
        .unwrap_or_default();
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), ns);
    let mut facts = Vec::new();
    let mut objects: Vec<(String, BackupStorage, ExpectedBackup)> = Vec::new();
    for copy in remaining.iter().filter(|c| c.confirmed) {
        let storage = storages.get_opt(&copy.storage).await?;
        let store = match &storage {
            None => CopyStore::Missing,
            Some(s) => match (usable(ctx, ns, s), &s.spec.s3, &s.spec.filesystem) {
                (Err(why), _, _) => CopyStore::Unusable(why),
                (Ok(()), Some(_), _) => CopyStore::S3,
                (Ok(()), None, Some(_)) => CopyStore::Filesystem,
                (Ok(()), None, None) => CopyStore::Unusable("it names no backend".into()),
            },
        };
        let expected = storage.as_ref().map(|s| expected_backup(&run, policy, s));
        facts.push(CopyFacts {
            storage: copy.storage.clone(),
            retain_until: copy
                .retain_until
                .as_ref()
                .map(crate::api::common::time_to_chrono),
            store,
            expected: expected.as_ref().map(|e| {
                e.as_ref()
                    .map(|e| (e.key.clone(), e.location.clone()))
                    .map_err(|e| e.to_string())
            }),
            recorded: (copy.key.clone(), copy.location.clone()),
            digest: copy.manifest_sha256.clone(),
        });
        if let (Some(s), Some(Ok(e))) = (storage, expected) {
            objects.push((copy.storage.clone(), s, e));
        }
    }
    let plan = match plan_copy_prunes(&facts, now) {
        Ok(plan) => plan,
        Err(why) => return Ok(CopyDeletion::Refused(why)),
    };
    let storage_of = |name: &str| {
        objects
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, e)| (s, e))
    };

    // Every S3 copy is opened, its manifest read and pinned before anything is deleted.
    let mut s3 = Vec::new();
    for p in &plan.deletes {
        let Some((storage, expected)) = storage_of(&p.storage) else {
            continue;
        };
        let access = match StorageAccess::open(
            &ctx.client,
            ns,
            storage,
            &ctx.settings.egress,
            ctx.settings.allows_ambient_credentials(ns),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                return Ok(CopyDeletion::Refused(format!(
                    "cannot open storage {}: {e}",
                    p.storage
                )));
            }
        };
        let manifest = match access.get(&p.key, MANIFEST_LIMIT).await {
            Ok(bytes) => Some(bytes),
            Err(AccessError::NotFound(_)) => None,
            Err(e) => {
                return Ok(CopyDeletion::Refused(format!(
                    "reading {} on {}: {e}",
                    p.key, p.storage
                )));
            }
        };
        // The same check as for the primary: the recorded key and digest must match.
        let vouched = crate::api::backup_run::Artifact {
            storage: p.storage.clone(),
            key: p.key.clone(),
            manifest_key: Some(p.location.clone()),
            manifest_sha256: Some(p.digest.clone()),
            ..Default::default()
        };
        match super::retention::pinned_deletion_keys(&vouched, expected, manifest.as_deref()) {
            Ok(keys) => s3.push((p, access, keys)),
            Err(why) => {
                return Ok(CopyDeletion::Refused(format!(
                    "copy on storage {}: {why}",
                    p.storage
                )));
            }
        }
    }

    // The copies on claims: a prune Job each; the S3 copies wait until none is left.
    let mut again: Option<DateTime<Utc>> = None;
    for p in &plan.jobs {
        let Some((storage, _)) = storage_of(&p.storage) else {
            continue;
        };
        match prune_on_claim(ctx, ns, policy, name, storage, p, now).await? {
            Some(at) => again = Some(again.map_or(at, |a| a.min(at))),
            None => {
                remaining.retain(|c| c.storage != p.storage);
                forget(ctx, ns, policy, &run, &remaining, p).await?;
            }
        }
    }
    if let Some(at) = again {
        return Ok(CopyDeletion::InProgress(at));
    }

    for (p, access, keys) in s3 {
        for key in keys {
            if let Err(e) = access.delete(&key).await {
                return Ok(CopyDeletion::Refused(format!(
                    "deleting {key} on {}: {e}",
                    p.storage
                )));
            }
        }
        remaining.retain(|c| c.storage != p.storage);
        forget(ctx, ns, policy, &run, &remaining, p).await?;
    }
    Ok(CopyDeletion::Deleted)
}

/// Records that the copy `p` of `run` is deleted: `remaining` becomes the run's
/// `status.artifact.copies` (a merge patch of that list only), with an Event `CopyPruned`.
async fn forget(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    run: &BackupRun,
    remaining: &[ArtifactCopy],
    p: &CopyPrune,
) -> Result<()> {
    let runs: Api<BackupRun> = Api::namespaced(ctx.client.clone(), ns);
    match runs
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"artifact": {"copies": remaining}}})),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.event(
        policy,
        EventType::Normal,
        "CopyPruned",
        "Retention",
        format!(
            "deleted the copy of run {} on storage {} ({})",
            run.name_any(),
            p.storage,
            p.location
        ),
    )
    .await;
    Ok(())
}

/// The prune Job of the copy `p` of run `run` on the filesystem `storage`
/// ([`prune_job::copy_job_name`]): `None` once it has succeeded (and is removed), else when to
/// look again. A failed Job is reported (Warning Event `PruneFailed`) and removed, and tried
/// again a minute later; `agent prune` is safe to run again.
async fn prune_on_claim(
    ctx: &Context,
    ns: &str,
    policy: &BackupPolicy,
    run: &str,
    storage: &BackupStorage,
    p: &CopyPrune,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let job_name = prune_job::copy_job_name(run, &p.storage);
    let recheck = Some(now + chrono::Duration::seconds(3));
    match job_watch::observe(ctx, ns, Some(&job_name)).await? {
        Observed::NotCreated | Observed::Vanished { .. } => {
            let defaults = crate::jobs::shell::JobDefaults::from(&ctx.settings);
            let mut job = match prune_job::build(
                &job_name,
                run,
                policy,
                storage,
                &p.location,
                &p.digest,
                &defaults,
            ) {
                Ok(job) => job,
                Err(e) => {
                    ctx.event(
                        policy,
                        EventType::Warning,
                        "PruneFailed",
                        "Retention",
                        format!(
                            "cannot build the Job deleting the copy of run {run} on storage {}: {e}; the run and its copies are kept",
                            p.storage
                        ),
                    )
                    .await;
                    return Ok(Some(now + chrono::Duration::seconds(60)));
                }
            };
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
            let pp = PostParams {
                field_manager: Some(super::FIELD_MANAGER.into()),
                ..Default::default()
            };
            // The prune Job's spans are children of this one, in the policy's reconcile.
            let span = tracing::info_span!("create_prune_job", k8s.job.name = %job_name);
            crate::jobs::shell::add_trace_env(
                &mut job,
                &otel::job_context(&span),
                &otel::inherited_env(),
            );
            match otel::in_span(span, jobs.create(&pp, &job)).await {
                Ok(_) => {
                    ctx.event(
                        policy,
                        EventType::Normal,
                        "Pruning",
                        "Retention",
                        format!(
                            "Job {job_name} deletes the copy of run {run} on storage {} from claim {}",
                            p.storage,
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
            job_watch::delete(ctx, ns, &job_name).await?;
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
                    "Job {job_name} could not delete the copy of run {run} on storage {} ({reason}: {detail}); the run and its copies are kept and the prune is tried again",
                    p.storage
                ),
            )
            .await;
            job_watch::delete(ctx, ns, &job_name).await?;
            Ok(Some(now + chrono::Duration::seconds(60)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::common::testing::Sim;

    fn storage_yaml(name: &str, bucket: &str, endpoint: &str) -> String {
        format!(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{s3: {{bucket: {bucket}, region: us-east-1, endpoint: '{endpoint}', forcePathStyle: true, credentialsSecretRef: {{name: s3-creds}}}}}}\n"
        )
    }

    /// A succeeded run whose artifact (`data`, listed in its manifest with `listed_size`) is
    /// stored where the run writes on `main`; returns the run as stored and its digest.
    async fn stored_run(
        sim: &Sim,
        moto: &testkit::Moto,
        policy: &BackupPolicy,
        main: &BackupStorage,
        name: &str,
        data: &[u8],
        listed_size: usize,
    ) -> (BackupRun, String) {
        let run: BackupRun = sim
            .create(&format!(
                "apiVersion: dataguardian.io/v1alpha1\nkind: BackupRun\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{policyRef: {{name: nightly}}}}\n"
            ))
            .await;
        let expected = expected_backup(&run, policy, main).unwrap();
        let data_key = beside(&expected.key, "databases/shop.pgdump.zst.age");
        moto.put_object("primary-bucket", &data_key, data.to_vec())
            .unwrap();
        let manifest = serde_json::to_vec(&json!({"artifacts": [{
            "key": "databases/shop.pgdump.zst.age",
            "sizeBytes": listed_size,
            "sha256": crate::contract::manifest::sha256_hex(data),
        }], "allDatabases": false}))
        .unwrap();
        let digest = sha256_hex(&manifest);
        moto.put_object("primary-bucket", &expected.key, manifest)
            .unwrap();
        let runs: Api<BackupRun> = Api::namespaced(sim.ctx.client.clone(), "shop");
        let run = runs
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Succeeded",
                    "completionTime": "2026-11-10T02:00:00Z",
                    "artifact": {
                        "storage": "main",
                        "key": expected.key,
                        "manifestKey": expected.location,
                        "manifestSha256": digest,
                        "sizeBytes": data.len(),
                        "sha256": crate::contract::manifest::sha256_hex(data),
                    },
                }})),
            )
            .await
            .unwrap();
        (run, digest)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_side_copy_is_confirmed_recorded_refused_when_tampered_and_pruned() {
        let moto = testkit::Moto::start().unwrap();
        moto.create_bucket("primary-bucket").unwrap();
        moto.create_bucket("secondary-bucket").unwrap();
        let sim = Sim::start().await;
        let _: k8s_openapi::api::core::v1::Secret = sim
            .create(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: s3-creds, namespace: shop}}\nstringData: {{AWS_ACCESS_KEY_ID: {}, AWS_SECRET_ACCESS_KEY: {}}}\n",
                testkit::ACCESS_KEY_ID,
                testkit::SECRET_ACCESS_KEY
            ))
            .await;
        let main: BackupStorage = sim
            .create(&storage_yaml("main", "primary-bucket", &moto.endpoint()))
            .await;
        let _: BackupStorage = sim
            .create(&storage_yaml("dr", "secondary-bucket", &moto.endpoint()))
            .await;
        let policy: BackupPolicy = sim
            .create(
                "apiVersion: dataguardian.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: nightly, namespace: shop}\nspec: {source: {postgres: {host: db, port: 5432, database: shop, user: u}}, storageRef: {name: main}, secondaryStorageRefs: [{name: dr}], schedule: '0 2 * * *'}\n",
            )
            .await;
        let data = b"age-encrypted bytes of a dump".to_vec();
        let (r1, digest) = stored_run(&sim, &moto, &policy, &main, "r1", &data, data.len()).await;
        let now = Utc::now();
        let finished: Vec<FinishedRun> = FinishedRun::from_run(&r1).into_iter().collect();
        let kept: BTreeSet<String> = ["r1".to_string()].into();
        let ctx = sim.ctx.as_ref();
        reconcile_copies(ctx, "shop", &policy, Some(&main), &finished, &kept, now)
            .await
            .unwrap();

        let r1: BackupRun = sim.get("shop", "r1").await;
        let copies = &r1
            .status
            .as_ref()
            .unwrap()
            .artifact
            .as_ref()
            .unwrap()
            .copies;
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0].storage, "dr");
        assert!(copies[0].confirmed);
        assert_eq!(copies[0].method.as_deref(), Some("ServerSideCopy"));
        assert_eq!(copies[0].manifest_sha256.as_deref(), Some(digest.as_str()));
        let primary_keys = moto.list_keys("primary-bucket", "").unwrap();
        let copied_keys = moto.list_keys("secondary-bucket", "").unwrap();
        assert_eq!(primary_keys, copied_keys);
        for k in &primary_keys {
            assert_eq!(
                moto.get_object("primary-bucket", k).unwrap(),
                moto.get_object("secondary-bucket", k).unwrap()
            );
        }
        let p: BackupPolicy = sim.get("shop", "nightly").await;
        let status = &p.status.as_ref().unwrap().copies;
        assert_eq!(status[0].last_copied_run.as_deref(), Some("r1"));
        assert_eq!((status[0].pending_runs, status[0].lag_seconds), (0, 0));
        assert!(
            sim.event_reasons("shop", "r1")
                .await
                .contains(&"Copied".to_string())
        );

        // A primary artifact that does not match its manifest is not copied.
        let (r2, _) = stored_run(&sim, &moto, &p, &main, "r2", &data, data.len() + 1).await;
        let r1: BackupRun = sim.get("shop", "r1").await;
        let finished: Vec<FinishedRun> = [&r1, &r2]
            .into_iter()
            .filter_map(FinishedRun::from_run)
            .collect();
        let kept: BTreeSet<String> = ["r1".to_string(), "r2".to_string()].into();
        reconcile_copies(ctx, "shop", &p, Some(&main), &finished, &kept, Utc::now())
            .await
            .unwrap();
        let r2: BackupRun = sim.get("shop", "r2").await;
        assert!(
            r2.status.unwrap().artifact.unwrap().copies.is_empty(),
            "a tampered backup was copied"
        );
        let p: BackupPolicy = sim.get("shop", "nightly").await;
        let st = &p.status.as_ref().unwrap().copies[0];
        assert_eq!(st.pending_runs, 1);
        assert!(
            st.message.as_deref().unwrap_or("").contains("not copied"),
            "{st:?}"
        );
        assert_eq!(moto.list_keys("secondary-bucket", "").unwrap(), copied_keys);

        // Retention deletes r1's copy (manifest first) and nothing else.
        let gone = delete_copies(ctx, "shop", &p, "r1", Utc::now())
            .await
            .unwrap();
        assert_eq!(gone, CopyDeletion::Deleted);
        assert!(moto.list_keys("secondary-bucket", "").unwrap().is_empty());
        assert_eq!(
            moto.list_keys("primary-bucket", "").unwrap().len(),
            primary_keys.len() + 2,
            "the primary objects are retention's own business"
        );
    }

    /// Sets (or clears) the `Ready` condition of the BackupStorage `name`.
    async fn set_ready(sim: &Sim, name: &str, ready: Option<bool>) {
        let storages: Api<BackupStorage> = Api::namespaced(sim.ctx.client.clone(), "shop");
        let conditions = match ready {
            None => json!([]),
            Some(r) => json!([{
                "type": "Ready",
                "status": if r { "True" } else { "False" },
                "reason": if r { "Reachable" } else { "Unreachable" },
                "message": "probe",
                "lastTransitionTime": "2026-11-10T02:00:00Z",
            }]),
        };
        storages
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filesystem_copy_is_pruned_by_a_job_first_and_an_unusable_storage_keeps_every_copy() {
        let moto = testkit::Moto::start().unwrap();
        moto.create_bucket("primary-bucket").unwrap();
        moto.create_bucket("secondary-bucket").unwrap();
        let sim = Sim::start().await;
        let _: k8s_openapi::api::core::v1::Secret = sim
            .create(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: s3-creds, namespace: shop}}\nstringData: {{AWS_ACCESS_KEY_ID: {}, AWS_SECRET_ACCESS_KEY: {}}}\n",
                testkit::ACCESS_KEY_ID,
                testkit::SECRET_ACCESS_KEY
            ))
            .await;
        let main: BackupStorage = sim
            .create(&storage_yaml("main", "primary-bucket", &moto.endpoint()))
            .await;
        let _: BackupStorage = sim
            .create(&storage_yaml("dr", "secondary-bucket", &moto.endpoint()))
            .await;
        let local: BackupStorage = sim
            .create(
                "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: local, namespace: shop}\nspec: {filesystem: {claimName: backups, path: /dumps}}\n",
            )
            .await;
        let policy: BackupPolicy = sim
            .create(
                "apiVersion: dataguardian.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: nightly, namespace: shop}\nspec: {source: {postgres: {host: db, port: 5432, database: shop, user: u}}, storageRef: {name: main}, secondaryStorageRefs: [{name: dr}], schedule: '0 2 * * *'}\n",
            )
            .await;
        let data = b"age-encrypted bytes of a dump".to_vec();
        let (r1, digest) = stored_run(&sim, &moto, &policy, &main, "r1", &data, data.len()).await;
        let ctx = sim.ctx.as_ref();
        // The S3 copy is made by the operator; the claim's copy is recorded as a copy Job
        // would have confirmed it.
        let finished: Vec<FinishedRun> = FinishedRun::from_run(&r1).into_iter().collect();
        let kept: BTreeSet<String> = ["r1".to_string()].into();
        reconcile_copies(
            ctx,
            "shop",
            &policy,
            Some(&main),
            &finished,
            &kept,
            Utc::now(),
        )
        .await
        .unwrap();
        let r1: BackupRun = sim.get("shop", "r1").await;
        let on_claim = expected_backup(&r1, &policy, &local).unwrap();
        let mut copies = r1.status.unwrap().artifact.unwrap().copies;
        assert_eq!(copies.len(), 1, "{copies:?}");
        copies.push(ArtifactCopy {
            storage: "local".into(),
            key: on_claim.key.clone(),
            confirmed: true,
            location: Some(on_claim.location.clone()),
            manifest_sha256: Some(digest.clone()),
            method: Some("CopyJob".into()),
            ..Default::default()
        });
        let runs: Api<BackupRun> = Api::namespaced(sim.ctx.client.clone(), "shop");
        runs.patch_status(
            "r1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"artifact": {"copies": copies}}})),
        )
        .await
        .unwrap();
        let copied = moto.list_keys("secondary-bucket", "").unwrap();
        assert!(!copied.is_empty());
        let job_name = prune_job::copy_job_name("r1", "local");
        let jobs: Api<Job> = Api::namespaced(sim.ctx.client.clone(), "shop");

        // The claim's storage is down: nothing is deleted anywhere, no Job starts.
        set_ready(&sim, "local", Some(false)).await;
        let outcome = delete_copies(ctx, "shop", &policy, "r1", Utc::now())
            .await
            .unwrap();
        let CopyDeletion::Refused(why) = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            why.contains("storage local") && why.contains("not Ready"),
            "{why}"
        );
        assert_eq!(moto.list_keys("secondary-bucket", "").unwrap(), copied);
        assert!(jobs.get_opt(&job_name).await.unwrap().is_none());

        // Back: a prune Job deletes the claim's copy first; the S3 copy waits for it.
        set_ready(&sim, "local", Some(true)).await;
        let now = Utc::now();
        let outcome = delete_copies(ctx, "shop", &policy, "r1", now)
            .await
            .unwrap();
        assert_eq!(
            outcome,
            CopyDeletion::InProgress(now + chrono::Duration::seconds(3))
        );
        let job = jobs.get(&job_name).await.unwrap();
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(
            args,
            [
                "agent",
                "prune",
                "--manifest",
                on_claim.location.as_str(),
                "--manifest-sha256",
                digest.as_str()
            ]
        );
        let claim = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.persistent_volume_claim.as_ref())
            .unwrap();
        assert_eq!(claim.claim_name, "backups");
        assert_eq!(moto.list_keys("secondary-bucket", "").unwrap(), copied);
        // Running: still in progress, the same Job.
        let outcome = delete_copies(ctx, "shop", &policy, "r1", Utc::now())
            .await
            .unwrap();
        assert!(
            matches!(outcome, CopyDeletion::InProgress(_)),
            "{outcome:?}"
        );
        assert!(
            sim.event_reasons("shop", "nightly")
                .await
                .contains(&"Pruning".to_string())
        );

        // It succeeded: the claim's copy is recorded as pruned, then the S3 copy goes.
        jobs.patch_status(
            &job_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"succeeded": 1, "conditions": [{
                "type": "Complete", "status": "True",
                "lastTransitionTime": "2026-11-10T02:00:00Z",
            }]}})),
        )
        .await
        .unwrap();
        let outcome = delete_copies(ctx, "shop", &policy, "r1", Utc::now())
            .await
            .unwrap();
        assert_eq!(outcome, CopyDeletion::Deleted);
        assert!(moto.list_keys("secondary-bucket", "").unwrap().is_empty());
        assert!(jobs.get_opt(&job_name).await.unwrap().is_none());
        let r1: BackupRun = sim.get("shop", "r1").await;
        assert!(
            r1.status.unwrap().artifact.unwrap().copies.is_empty(),
            "every pruned copy leaves the run's status"
        );
        assert!(
            sim.event_reasons("shop", "nightly")
                .await
                .contains(&"CopyPruned".to_string())
        );
        // Nothing left: nothing to do.
        assert_eq!(
            delete_copies(ctx, "shop", &policy, "r1", Utc::now())
                .await
                .unwrap(),
            CopyDeletion::Deleted
        );
    }

    #[test]
    fn running_backup_and_copy_jobs_count_against_the_limit() {
        let job = |component: &str, finished: Option<&str>| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "j", "labels": {crate::contract::COMPONENT_LABEL: component}},
                "status": match finished {
                    Some(t) => serde_json::json!({"conditions": [{"type": t, "status": "True"}]}),
                    None => serde_json::json!({"active": 1}),
                },
            }))
            .unwrap()
        };
        let jobs = vec![
            job("backup", None),
            job("copy", None),
            job("copy", Some("Complete")),
            job("backup", Some("Failed")),
            job("restore", None),
            job("validation", None),
        ];
        assert_eq!(data_jobs_running(&jobs), 2);
    }

    #[test]
    fn keys_are_joined_below_the_manifest_directory() {
        assert_eq!(
            beside("p/shop/r1/manifest.json", "databases/shop.pgdump"),
            "p/shop/r1/databases/shop.pgdump"
        );
        assert_eq!(beside("manifest.json", "x"), "x");
    }
}
