//! The BackupRun reconciler: read → check references → plan (pure, [`crate::controller::backup_run::plan`]) →
//! apply (server-side apply of the Job, then of the status) → Events and metrics.
//!
//! Invariants:
//! - one Job per run, with a deterministic name; `status.jobName` is written right after the Job
//!   is applied, and an apply of an existing Job is a no-op, so a crash between the two never
//!   creates a second Job;
//! - a run is `Succeeded` only after the artifact was confirmed in storage;
//! - every phase change is an Event (the live audit trail) and lands in status (the durable one).

pub mod plan;

use crate::api::backup_policy::NotificationEvent;
use crate::notify::message::{Details, Notification, database_of};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::api::backup_run::{
    Artifact, ArtifactEncryption, BackupRun, BackupRunPhase, BackupRunStatus,
};
use crate::api::common::{
    SecretKeySelector, format_bytes, format_duration, set_condition, time_from_chrono,
    time_to_chrono,
};
use crate::api::{BackupPolicy, BackupStorage};
use crate::contract::{AGENT_CONTAINER, AgentReport, Report, last_progress};
use crate::telemetry::metrics::{PolicyLabels, RunLabels, RunResult};

use crate::controller::backup_run::plan::{JobState, Observed, Step, plan};
use crate::controller::common::artifact_check;
use crate::controller::common::blockers::Blocker;
use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};
use crate::controller::common::queue::{PendingBackup, RunKey, plan_backup_queue};
use crate::controller::common::reason::Reason;
use crate::controller::common::reconcile::namespace_and_name;
use crate::controller::common::status::{ControllerStatus, apply as apply_status};

/// Field manager of everything this controller writes.
pub const FIELD_MANAGER: &str = "dataguardian-backuprun";

/// Reconciles one BackupRun.
pub async fn reconcile(run: Arc<BackupRun>, ctx: Arc<Context>) -> Result<Action> {
    let (ns, name) = namespace_and_name(run.as_ref())?;
    if run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(BackupRunPhase::is_finished)
        || run.meta().deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let client = ctx.client.clone();
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let storages: Api<BackupStorage> = Api::namespaced(client.clone(), &ns);

    let policy = policies.get_opt(&run.spec.policy_ref.name).await?;
    let storage = match &policy {
        Some(p) => storages.get_opt(&p.spec.storage_ref.name).await?,
        None => None,
    };
    let job_name = run.status.as_ref().and_then(|s| s.job_name.clone());
    let references = if job_name.is_some() {
        Ok(()) // already started: references were checked before the Job was created
    } else {
        check_references(&ctx, &ns, &run, policy.as_ref(), storage.as_ref()).await?
    };
    let job = observe_job(&ctx, &ns, job_name.as_deref()).await?;
    let (admitted, queue_message) = queue_decision(&ctx, &run);
    let stall_timeout = policy
        .as_ref()
        .map(|p| Duration::from_secs(p.spec.stall_timeout_seconds_or_default().max(30) as u64))
        .unwrap_or(ctx.settings.default_stall_timeout);
    let now = Utc::now();
    let step = plan(&Observed {
        run: &run,
        references,
        job,
        admitted,
        queue_message,
        stall_timeout,
        now,
    });
    tracing::debug!(run = %format!("{ns}/{name}"), ?step, "planned");

    match step {
        Step::Done => Ok(Action::await_change()),
        Step::Wait {
            reason,
            message,
            requeue,
        } => {
            let status = run.status.clone().unwrap_or_default();
            if status.reason.as_deref() != Some(reason.as_str())
                || status.message.as_deref() != Some(message.as_str())
                || status.phase.is_none()
            {
                let blocked = Reason::saved_blocks_backup(Some(&reason));
                let mut next = status.clone();
                next.phase = Some(BackupRunPhase::Pending);
                next.reason = Some(reason.clone());
                next.message = Some(message.clone());
                next.observed_generation = run.metadata.generation;
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
        Step::StartJob => start_job(&ctx, &ns, &run, policy, storage).await,
        Step::Track {
            attempts,
            progress,
            requeue,
        } => {
            let status = run.status.clone().unwrap_or_default();
            let mut next = status.clone();
            next.attempts = Some(attempts.max(1));
            if let Some(sample) = progress {
                next.progress = Some(Box::new(
                    crate::controller::common::status::advance_progress(
                        status.progress.as_deref(),
                        sample,
                        now,
                    ),
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
                    format!("attempt {attempts} started after a failed attempt"),
                )
                .await;
            }
            Ok(Action::requeue(requeue))
        }
        Step::Stalled { message } => {
            if let Some(job) = &job_name {
                crate::controller::common::job_watch::delete(&ctx, &ns, job).await?;
            }
            finish(
                &ctx,
                &ns,
                &run,
                policy.as_ref(),
                BackupRunPhase::Failed,
                "Stalled",
                &message,
                None,
            )
            .await
        }
        Step::Confirm { attempts, report } => {
            let storage_name = policy
                .as_ref()
                .map(|p| p.spec.storage_ref.name.clone())
                .unwrap_or_default();
            let confirmed = match (storage.as_ref(), policy.as_ref()) {
                (Some(s), Some(p)) => match crate::jobs::backup_job::expected_backup(&run, p, s) {
                    Ok(expected) => artifact_check::confirm(
                        &ctx.client,
                        &ns,
                        s,
                        &report,
                        &expected,
                        &ctx.settings.egress,
                        ctx.settings.allows_ambient_credentials(&ns),
                    )
                    .await
                    .map(|check| (check, expected)),
                    Err(e) => Err(format!("cannot compute where this run writes: {e}")),
                },
                (None, _) => Err(format!(
                    "BackupStorage {storage_name} no longer exists; the artifact cannot be confirmed"
                )),
                (_, None) => Err(format!(
                    "BackupPolicy {} no longer exists; the artifact cannot be confirmed",
                    run.spec.policy_ref.name
                )),
            };
            match confirmed {
                Ok((check, expected)) => {
                    // The KMS key the backup Job was given (the policy's key id as written when
                    // the Job was created), not the policy's key now: a rotation compares it.
                    let kms_key_id = match &job_name {
                        Some(job) if check.encryption.is_some() => {
                            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                            jobs.get_opt(job).await?.as_ref().and_then(kms_key_of_job)
                        }
                        _ => None,
                    };
                    let artifact =
                        artifact_from_report(&storage_name, &report, &check, &expected, kms_key_id);
                    let mut run_with_attempts = (*run).clone();
                    run_with_attempts
                        .status
                        .get_or_insert_with(Default::default)
                        .attempts = Some(attempts.max(1));
                    let msg = format!(
                        "backup of {} confirmed in storage {}: {} ({} raw), sha256 {}{}",
                        report.engine.as_deref().unwrap_or("database"),
                        storage_name,
                        format_bytes(artifact.size_bytes),
                        format_bytes(artifact.raw_bytes),
                        &artifact.sha256.chars().take(16).collect::<String>(),
                        check.note.map(|n| format!(" ({n})")).unwrap_or_default()
                    );
                    finish(
                        &ctx,
                        &ns,
                        &run_with_attempts,
                        policy.as_ref(),
                        BackupRunPhase::Succeeded,
                        "Completed",
                        &msg,
                        Some(artifact),
                    )
                    .await
                }
                Err(why) => {
                    finish(
                        &ctx,
                        &ns,
                        &run,
                        policy.as_ref(),
                        BackupRunPhase::Failed,
                        "ArtifactNotConfirmed",
                        &why,
                        None,
                    )
                    .await
                }
            }
        }
        Step::Fail { reason, message } => {
            finish(
                &ctx,
                &ns,
                &run,
                policy.as_ref(),
                BackupRunPhase::Failed,
                &reason,
                &message,
                None,
            )
            .await
        }
    }
}

/// The Secrets a backup of this policy needs (never their values).
/// The Secrets a backup needs: (where the reference is written, Secret, key).
fn needed_secrets(
    policy: &BackupPolicy,
    storage: &BackupStorage,
) -> Vec<(String, String, Option<String>)> {
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let storage_name = storage.metadata.name.clone().unwrap_or_default();
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    let mut push = |field: &str, sel: Option<&SecretKeySelector>| {
        if let Some(s) = sel {
            out.push((
                format!("BackupPolicy {policy_name} {field}"),
                s.name.clone(),
                Some(s.key.clone()),
            ));
        }
    };
    if let Some(pg) = &policy.spec.source.postgres {
        push(
            "spec.source.postgres.passwordSecretRef",
            pg.password_secret_ref.as_ref(),
        );
        push(
            "spec.source.postgres.connectionSecretRef",
            pg.connection_secret_ref.as_ref(),
        );
    }
    if let Some(my) = &policy.spec.source.mysql {
        push(
            "spec.source.mysql.passwordSecretRef",
            my.password_secret_ref.as_ref(),
        );
        push(
            "spec.source.mysql.connectionSecretRef",
            my.connection_secret_ref.as_ref(),
        );
    }
    if let Some(enc) = &policy.spec.encryption {
        push(
            "spec.encryption.recipientsSecretRef",
            enc.recipients_secret_ref.as_ref(),
        );
        if let Some(creds) = enc
            .kms
            .as_ref()
            .and_then(|k| k.credentials_secret_ref.as_ref())
        {
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                push(
                    "spec.encryption.kms.credentialsSecretRef",
                    Some(&SecretKeySelector::new(creds.name.clone(), key)),
                );
            }
        }
    }
    if let Some(creds) = storage
        .spec
        .s3
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            out.push((
                format!("BackupStorage {storage_name} spec.s3.credentialsSecretRef"),
                creds.name.clone(),
                Some(key.into()),
            ));
        }
    }
    out
}

/// Why a referenced Secret cannot be used, for the run's status. A run's author wrote only the
/// policy's name: the message names the reference (object and field), never the Secret or the
/// key it names, and a missing Secret reads the same as a missing key (no probing which
/// Secrets or keys exist through runs).
fn unusable_secret(field: &str) -> Blocker {
    Blocker {
        reason: "SecretNotFound".into(),
        message: format!(
            "the Secret referenced by {field} does not exist or lacks the referenced key"
        ),
    }
}

async fn check_references(
    ctx: &Context,
    ns: &str,
    run: &BackupRun,
    policy: Option<&BackupPolicy>,
    storage: Option<&BackupStorage>,
) -> Result<Result<(), Blocker>> {
    let Some(policy) = policy else {
        return Ok(Err(Blocker {
            reason: "PolicyNotFound".into(),
            message: format!(
                "BackupPolicy {} not found in namespace {ns}",
                run.spec.policy_ref.name
            ),
        }));
    };
    if policy.spec.source.engine().is_none() {
        return Ok(Err(Blocker {
            reason: "InvalidPolicy".into(),
            message: format!("BackupPolicy {} has no engine block", policy.name_any()),
        }));
    }
    let Some(storage) = storage else {
        return Ok(Err(Blocker {
            reason: "StorageNotFound".into(),
            message: format!(
                "BackupStorage {} (of policy {}) not found in namespace {ns}",
                policy.spec.storage_ref.name,
                policy.name_any()
            ),
        }));
    };
    if let Some(message) = crate::controller::common::storage_access::ambient_refusal(
        storage,
        ns,
        ctx.settings.allows_ambient_credentials(ns),
    ) {
        return Ok(Err(Blocker {
            reason: crate::controller::common::storage_access::AMBIENT_CREDENTIALS_REFUSED.into(),
            message,
        }));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for (field, name, key) in needed_secrets(policy, storage) {
        match secrets.get_opt(&name).await? {
            None => return Ok(Err(unusable_secret(&field))),
            Some(secret) => {
                if let Some(key) = key {
                    let has = secret.data.as_ref().is_some_and(|d| d.contains_key(&key))
                        || secret
                            .string_data
                            .as_ref()
                            .is_some_and(|d| d.contains_key(&key));
                    if !has {
                        return Ok(Err(unusable_secret(&field)));
                    }
                }
            }
        }
    }
    Ok(Ok(()))
}

/// Reads the run's Job and its pods into a [`JobState`].
async fn observe_job(ctx: &Context, ns: &str, job_name: Option<&str>) -> Result<JobState> {
    let Some(job_name) = job_name else {
        return Ok(JobState::NotCreated);
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let Some(job) = jobs.get_opt(job_name).await? else {
        return Ok(JobState::Vanished {
            name: job_name.to_string(),
        });
    };
    let st = job.status.clone().unwrap_or_default();
    let attempts =
        (st.failed.unwrap_or(0) + st.succeeded.unwrap_or(0) + st.active.unwrap_or(0)).max(1) as u32;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut pod_list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await?
        .items;
    pod_list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let condition = |type_: &str| {
        st.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
            .cloned()
    };
    if condition("Complete").is_some() {
        let report = pod_list
            .iter()
            .rev()
            .find(|p| pod_phase(p) == "Succeeded")
            .and_then(agent_report);
        return Ok(JobState::Succeeded { attempts, report });
    }
    if let Some(c) = condition("Failed") {
        let report = pod_list
            .iter()
            .rev()
            .find(|p| pod_phase(p) == "Failed")
            .and_then(agent_report);
        let (reason, message) = crate::controller::common::job_watch::failure_cause(
            &pod_list,
            report.is_some(),
            c.reason,
            c.message,
        );
        return Ok(JobState::Failed {
            attempts,
            reason,
            message,
            report,
        });
    }
    let progress = match pod_list.iter().rev().find(|p| pod_phase(p) == "Running") {
        Some(pod) => {
            let params = crate::controller::common::job_watch::progress_log_params();
            match pods.logs(&pod.name_any(), &params).await {
                Ok(log) => last_progress(&log),
                Err(e) => {
                    tracing::debug!(error = %e, pod = %pod.name_any(), "could not read agent progress");
                    None
                }
            }
        }
        None => None,
    };
    Ok(JobState::Active { attempts, progress })
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The agent's summary from the pod's agent container termination message.
fn agent_report(pod: &Pod) -> Option<AgentReport> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let agent = statuses.iter().find(|c| c.name == AGENT_CONTAINER)?;
    let message = agent
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .as_deref()?;
    AgentReport::parse(message)
}

/// Whether the fair backup queue admits `run` now, and its position message if not.
fn queue_decision(ctx: &Context, run: &BackupRun) -> (bool, Option<String>) {
    let mut pending = Vec::new();
    let mut running = Vec::new();
    for r in ctx.runs.active().state() {
        let Some(ns) = r.namespace() else { continue };
        let status = r.status.as_ref();
        let phase = status.and_then(|s| s.phase);
        if phase.is_some_and(BackupRunPhase::is_finished) || r.meta().deletion_timestamp.is_some() {
            continue;
        }
        let key = RunKey::new(ns, r.name_any());
        if status.and_then(|s| s.job_name.as_ref()).is_some() {
            running.push(key);
        } else if !Reason::saved_blocks_backup(status.and_then(|s| s.reason.as_deref())) {
            pending.push(PendingBackup {
                key,
                created_at: r
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(time_to_chrono)
                    .unwrap_or_else(Utc::now),
                policy: r.spec.policy_ref.name.clone(),
                not_before: None,
            });
        }
    }
    let me = RunKey::new(run.namespace().unwrap_or_default(), run.name_any());
    // The cache may not have seen this run yet (just created): it still competes.
    if !pending.iter().any(|p| p.key == me) && !running.contains(&me) {
        pending.push(PendingBackup {
            key: me.clone(),
            created_at: run
                .metadata
                .creation_timestamp
                .as_ref()
                .map(time_to_chrono)
                .unwrap_or_else(Utc::now),
            policy: run.spec.policy_ref.name.clone(),
            not_before: None,
        });
    }
    let q = plan_backup_queue(
        &pending,
        &running,
        ctx.settings.max_concurrent_backups,
        Utc::now(),
    );
    ctx.metrics
        .queue_depth
        .get_or_create(&crate::telemetry::metrics::QueueLabels {
            queue: "backup".into(),
        })
        .set(q.waiting.len() as i64);
    if q.start.contains(&me) {
        return (true, None);
    }
    let message = q.waiting.iter().find(|w| w.key == me).map(|w| {
        format!(
            "queued at position {} of {}: {}",
            w.position,
            q.waiting.len(),
            w.reason
        )
    });
    (false, message)
}

async fn start_job(
    ctx: &Context,
    ns: &str,
    run: &BackupRun,
    policy: Option<BackupPolicy>,
    storage: Option<BackupStorage>,
) -> Result<Action> {
    let (Some(policy), Some(storage)) = (policy, storage) else {
        return Err(Error::InvalidSpec(
            "policy or storage vanished while starting".into(),
        ));
    };
    let defaults = crate::jobs::shell::JobDefaults::from(&ctx.settings);
    let job = match crate::jobs::backup_job::build(run, &policy, &storage, &defaults) {
        Ok(job) => job,
        // A spec problem: retrying cannot help, so the run fails with the reason.
        Err(e) => {
            return finish(
                ctx,
                ns,
                run,
                Some(&policy),
                BackupRunPhase::Failed,
                e.reason(),
                &e.to_string(),
                None,
            )
            .await;
        }
    };
    // Server-side apply is idempotent: re-applying after a crash finds the same Job.
    let (job_name, trace_id) =
        crate::controller::common::run_trace::apply_job(ctx, ns, FIELD_MANAGER, &run.metadata, job)
            .await?;
    crate::controller::common::run_trace::observe_start(
        ctx,
        "BackupRun",
        &format!("{:?}", run.spec.trigger),
        &run.metadata,
    );
    let now = Utc::now();
    let mut status = run.status.clone().unwrap_or_default();
    if trace_id.is_some() {
        status.trace_id = trace_id;
    }
    status.phase = Some(BackupRunPhase::Running);
    status.reason = Some("JobCreated".into());
    status.message = Some(format!("backup Job {job_name} started"));
    status.job_name = Some(job_name.clone());
    status.start_time = Some(time_from_chrono(now));
    status.attempts = Some(1);
    status.observed_generation = run.metadata.generation;
    status.requested_by = crate::controller::common::requester::requested_by(
        &run.metadata,
        ctx.settings.requester_recorded,
    );
    apply_status(ctx, ns, &run.name_any(), &status).await?;
    let who = match crate::controller::common::requester::who_note(
        &run.metadata,
        ctx.settings.requester_recorded,
    ) {
        note if note.is_empty() => note,
        note => format!("; {note}"),
    };
    ctx.event(
        run,
        EventType::Normal,
        "Started",
        "CreateJob",
        format!(
            "backup Job {job_name} created for policy {}{who}",
            policy.name_any()
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(2)))
}

/// The artifact recorded in status: where it is and its manifest's digest, scope and
/// encryption come from the operator's own computation and reading; sizes and counts from the
/// agent's report (confirmed against storage for S3).
fn artifact_from_report(
    storage: &str,
    r: &AgentReport,
    check: &artifact_check::Confirmation,
    expected: &crate::jobs::backup_job::ExpectedBackup,
    kms_key_id: Option<String>,
) -> Artifact {
    let size_bytes = r.size_bytes.unwrap_or(0);
    Artifact {
        storage: storage.to_string(),
        key: expected.key.clone(),
        manifest_key: Some(expected.location.clone()),
        manifest_sha256: check.manifest_sha256.clone(),
        scope: Some(expected.scope),
        size_bytes,
        size: Some(format_bytes(size_bytes)),
        raw_bytes: r.raw_bytes.unwrap_or(0),
        sha256: r.sha256.clone().unwrap_or_default(),
        compression: r.compression.clone().unwrap_or_default(),
        encryption: check.encryption.as_ref().map(|e| ArtifactEncryption {
            method: "age".into(),
            recipients: e.recipients.clone(),
            kms_key_id: kms_key_id.clone(),
            scheme: Some(e.scheme.clone()),
        }),
        engine: r.engine.clone().unwrap_or_default(),
        server_version: r.server_version.clone(),
        tables: r.tables,
        rows: r.rows,
        retain_until: check.retain_until.map(time_from_chrono),
        copies: Vec::new(),
    }
}

/// The KMS key id a backup Job wraps its data key with: the value of its agent's `--kms-key`.
pub(crate) fn kms_key_of_job(job: &Job) -> Option<String> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .filter_map(|c| c.args.as_ref())
        .find_map(|args| {
            args.iter()
                .position(|a| a == "--kms-key")
                .and_then(|i| args.get(i + 1))
                .cloned()
        })
}

/// Writes the final status, the Event and the metrics of a finished run.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    ns: &str,
    run: &BackupRun,
    policy: Option<&BackupPolicy>,
    phase: BackupRunPhase,
    reason: &str,
    message: &str,
    artifact: Option<Artifact>,
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
    status.phase = Some(phase);
    status.reason = Some(reason.to_string());
    status.message = Some(message.to_string());
    status.completion_time = Some(time_from_chrono(now));
    status.duration_seconds = Some(seconds);
    status.duration = Some(format_duration(seconds.round() as u64));
    status.observed_generation = run.metadata.generation;
    let succeeded = phase == BackupRunPhase::Succeeded;
    if let Some(a) = &artifact {
        status.artifact = Some(Box::new(a.clone()));
    }
    if let Some(p) = status.progress.as_mut() {
        p.bytes_per_second = 0;
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
        "BackupRun",
        ns,
        if succeeded { Ok(reason) } else { Err(reason) },
    );
    let (type_, ev_reason) = if succeeded {
        (EventType::Normal, "Succeeded")
    } else {
        (EventType::Warning, "Failed")
    };
    ctx.event(
        run,
        type_,
        ev_reason,
        "Finish",
        format!("{reason}: {message}"),
    )
    .await;
    if let Some(p) = policy {
        ctx.notify(
            p,
            Notification {
                event: if succeeded {
                    NotificationEvent::BackupSucceeded
                } else {
                    NotificationEvent::BackupFailed
                },
                namespace: ns.to_string(),
                policy: p.name_any(),
                kind: "BackupRun".into(),
                name: run.name_any(),
                reason: reason.to_string(),
                message: message.to_string(),
                time: now,
                details: Details {
                    database: database_of(&p.spec.source),
                    run: Some(run.name_any()),
                    requester: crate::controller::common::requester::requested_by(
                        &run.metadata,
                        ctx.settings.requester_recorded,
                    ),
                    size_bytes: artifact.as_ref().map(|a| a.size_bytes),
                    duration_seconds: Some(seconds),
                    ..Details::default()
                },
            },
        );
    }

    let policy_name = policy
        .map(|p| p.name_any())
        .unwrap_or_else(|| run.spec.policy_ref.name.clone());
    let labels = PolicyLabels {
        namespace: ns.to_string(),
        policy: policy_name.clone(),
    };
    ctx.metrics
        .backup_runs
        .get_or_create(&RunLabels {
            namespace: ns.to_string(),
            policy: policy_name,
            result: if succeeded {
                RunResult::Succeeded
            } else {
                RunResult::Failed
            },
        })
        .inc();
    ctx.metrics.backup_duration.get_or_create(&labels).observe(
        seconds,
        crate::telemetry::metrics::TraceLabels::of(status.trace_id.as_deref()),
        None,
    );
    if let Some(a) = &artifact {
        ctx.metrics
            .backup_bytes
            .get_or_create(&labels)
            .inc_by(a.size_bytes);
        ctx.metrics
            .last_success
            .get_or_create(&labels)
            .set(now.timestamp() as f64);
    }
    Ok(Action::await_change())
}

impl ControllerStatus for BackupRunStatus {
    type Kind = BackupRun;
    const FIELD_MANAGER: &'static str = FIELD_MANAGER;
}

#[cfg(test)]
mod tests;
