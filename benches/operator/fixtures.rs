//! The benchmark's objects: per namespace two Secrets and one S3 BackupStorage; per policy a
//! daily schedule and finished BackupRuns (Succeeded with an artifact, or Failed), written the
//! way the operator writes them (server-side apply of the status with its field manager) so the
//! objects, managedFields included, are the size they are on a cluster.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use dataguardian::api::backup_run::{Artifact, Trigger};
use dataguardian::api::common::{Progress, format_bytes, format_duration, time_from_chrono};
use dataguardian::api::{BackupPolicy, BackupRun, BackupRunPhase, BackupRunStatus, BackupStorage};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

/// Field manager of the run status the operator's BackupRun controller writes.
const RUN_STATUS_MANAGER: &str = "dataguardian-backuprun";
/// Field manager of everything else the loader creates (a GitOps tool, say).
const LOADER_MANAGER: &str = "bench-loader";
/// Concurrent requests while loading.
const LOAD_CONCURRENCY: usize = 16;
/// An S3 endpoint where nothing listens: every storage probe fails (connection refused).
pub const DEAD_S3_ENDPOINT: &str = "http://127.0.0.1:1";
/// The schedule of the loaded policies (daily, so none fires during a benchmark).
pub const DAILY_SCHEDULE: &str = "0 3 * * *";
/// runHistory of the loaded policies: above the runs loaded per policy, so nothing is pruned.
pub const RUN_HISTORY_LIMIT: u32 = 50;

/// How many objects to load.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub namespaces: usize,
    pub policies: usize,
    pub runs_per_policy: usize,
}

impl Shape {
    /// Namespace of policy `i` (policies are spread round-robin).
    pub fn namespace_of(&self, policy: usize) -> String {
        namespace_name(policy % self.namespaces)
    }

    /// Name of policy `i`.
    pub fn policy_name(policy: usize) -> String {
        format!("db-{policy:04}")
    }
}

fn namespace_name(i: usize) -> String {
    format!("bench-{i:03}")
}

/// Namespace `ns` with its two Secrets (S3 keys, database password) and BackupStorage `main`.
pub async fn namespace_with_storage(client: &Client, ns: &str) -> Result<()> {
    let pp = PostParams {
        field_manager: Some(LOADER_MANAGER.into()),
        ..Default::default()
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    namespaces
        .create(&pp, &namespace)
        .await
        .with_context(|| format!("namespace {ns}"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for secret in [
        json!({"metadata": {"name": "s3-creds"}, "stringData": {
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret-key"}}),
        json!({"metadata": {"name": "db-creds"}, "stringData": {"password": "bench-password"}}),
    ] {
        let secret: Secret = serde_json::from_value(secret)?;
        secrets
            .create(&pp, &secret)
            .await
            .with_context(|| format!("secret in {ns}"))?;
    }
    let storages: Api<BackupStorage> = Api::namespaced(client.clone(), ns);
    let storage: BackupStorage = serde_json::from_value(json!({
        "apiVersion": "dataguardian.io/v1alpha1", "kind": "BackupStorage",
        "metadata": {"name": "main", "namespace": ns},
        "spec": {
            "s3": {"bucket": "backups", "region": "us-east-1", "endpoint": DEAD_S3_ENDPOINT,
                   "forcePathStyle": true, "prefix": format!("{ns}/"),
                   "credentialsSecretRef": {"name": "s3-creds"}},
            "probe": {"intervalSeconds": 300}
        }
    }))?;
    storages
        .create(&pp, &storage)
        .await
        .with_context(|| format!("storage in {ns}"))?;
    Ok(())
}

/// A PostgreSQL policy on storage `main`.
pub fn policy(ns: &str, name: &str, schedule: &str) -> Result<BackupPolicy> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "dataguardian.io/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "source": {"postgres": {"host": format!("{name}.{ns}.svc"), "port": 5432,
                "database": "app", "user": "backup",
                "passwordSecretRef": {"name": "db-creds", "key": "password"}}},
            "storageRef": {"name": "main"},
            "schedule": schedule,
            "compression": {"algorithm": "zstd", "level": 3},
            "runHistory": {"successful": RUN_HISTORY_LIMIT, "failed": RUN_HISTORY_LIMIT}
        }
    }))?)
}

/// Creates the policy.
pub async fn create_policy(client: &Client, ns: &str, name: &str, schedule: &str) -> Result<()> {
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        field_manager: Some(LOADER_MANAGER.into()),
        ..Default::default()
    };
    api.create(&pp, &policy(ns, name, schedule)?)
        .await
        .with_context(|| format!("policy {ns}/{name}"))?;
    Ok(())
}

/// The 03:00 UTC fire time `days_ago` days before `now`.
fn fire_time(now: DateTime<Utc>, days_ago: usize) -> DateTime<Utc> {
    let day = (now - ChronoDuration::days(days_ago as i64)).date_naive();
    Utc.from_utc_datetime(&day.and_hms_opt(3, 0, 0).expect("03:00 exists"))
}

/// A finished scheduled run of policy `policy` for the fire time `days_ago` days back: every
/// fourth one Failed (wrong password), the others Succeeded with a confirmed artifact.
fn finished_run(
    ns: &str,
    policy: &str,
    days_ago: usize,
    now: DateTime<Utc>,
) -> (BackupRun, BackupRunStatus) {
    let fired = fire_time(now, days_ago);
    let name = format!("{policy}-{}", fired.format("%Y%m%d%H%M"));
    let mut run = BackupRun::new(
        &name,
        dataguardian::api::BackupRunSpec {
            policy_ref: dataguardian::api::common::LocalObjectReference::new(policy),
            trigger: Trigger::Scheduled,
            scheduled_time: Some(time_from_chrono(fired)),
            reason: None,
            compression: None,
            active_deadline_seconds: None,
        },
    );
    run.metadata.namespace = Some(ns.to_string());
    run.metadata.labels = Some([("dataguardian.io/policy".to_string(), policy.to_string())].into());

    let seconds = 95 + (days_ago as u64 * 37) % 240;
    let started = fired + ChronoDuration::seconds(2);
    let completed = started + ChronoDuration::seconds(seconds as i64);
    let failed = days_ago % 4 == 3;
    let raw: u64 = 700 * 1024 * 1024 + days_ago as u64 * 3_000_000;
    let size = raw / 3;
    let (phase, reason, message, condition) = if failed {
        (
            BackupRunPhase::Failed,
            "DumpFailed",
            format!(
                "pg_dump: error: connection to server at \"{policy}.{ns}.svc\" (10.0.0.1), port 5432 failed: FATAL:  password authentication failed for user \"backup\""
            ),
            "Failed",
        )
    } else {
        (
            BackupRunPhase::Succeeded,
            "Confirmed",
            format!(
                "artifact confirmed in storage main ({})",
                format_bytes(size)
            ),
            "Complete",
        )
    };
    let key = format!(
        "{ns}/{policy}/{}/{}-{name}",
        fired.format("%Y-%m-%d"),
        fired.format("%Y%m%dT%H%M%SZ")
    );
    let status = BackupRunStatus {
        phase: Some(phase),
        reason: Some(reason.into()),
        message: Some(message.clone()),
        attempts: Some(1),
        job_name: Some(format!("{name}-1")),
        start_time: Some(time_from_chrono(started)),
        completion_time: Some(time_from_chrono(completed)),
        duration_seconds: Some(seconds as f64),
        duration: Some(format_duration(seconds)),
        progress: Some(Box::new(Progress {
            bytes_in: if failed { 0 } else { raw },
            bytes_out: if failed { 0 } else { size },
            bytes_per_second: 0,
            updated: Some(time_from_chrono(completed)),
        })),
        artifact: (!failed).then(|| {
            Box::new(Artifact {
                storage: "main".into(),
                key: format!("{key}/dump.pgc.zst"),
                manifest_key: Some(format!("s3://backups/{key}/manifest.json")),
                size_bytes: size,
                size: Some(format_bytes(size)),
                raw_bytes: raw,
                sha256: format!(
                    "{:064x}",
                    (days_ago as u128 + 1) * 0x9e37_79b9_7f4a_7c15_u128
                ),
                compression: "zstd".into(),
                engine: "postgres".into(),
                server_version: Some("15.8".into()),
                tables: Some(42),
                rows: Some(1_250_000 + days_ago as u64),
                ..Default::default()
            })
        }),
        conditions: vec![Condition {
            type_: condition.into(),
            status: "True".into(),
            reason: reason.into(),
            message,
            last_transition_time: time_from_chrono(completed),
            observed_generation: Some(1),
        }],
        observed_generation: Some(1),
        ..Default::default()
    };
    (run, status)
}

/// Creates one finished run and writes its status through the /status subresource.
async fn load_run(client: Client, run: BackupRun, status: BackupRunStatus) -> Result<()> {
    let ns = run.metadata.namespace.clone().unwrap_or_default();
    let name = run.metadata.name.clone().unwrap_or_default();
    let api: Api<BackupRun> = Api::namespaced(client, &ns);
    let pp = PostParams {
        field_manager: Some(LOADER_MANAGER.into()),
        ..Default::default()
    };
    api.create(&pp, &run)
        .await
        .with_context(|| format!("run {ns}/{name}"))?;
    let body = json!({
        "apiVersion": BackupRun::api_version(&()),
        "kind": BackupRun::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(RUN_STATUS_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .with_context(|| format!("status of run {ns}/{name}"))?;
    Ok(())
}

/// What loading took.
#[derive(Debug, Clone, Copy)]
pub struct LoadReport {
    pub namespaces: usize,
    pub policies: usize,
    pub runs: usize,
    pub elapsed: Duration,
}

/// Loads `shape` into the cluster.
pub async fn load(client: &Client, shape: Shape) -> Result<LoadReport> {
    let started = Instant::now();
    futures::stream::iter((0..shape.namespaces).map(namespace_name))
        .map(|ns| async move { namespace_with_storage(client, &ns).await })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    futures::stream::iter(0..shape.policies)
        .map(|i| async move {
            create_policy(
                client,
                &shape.namespace_of(i),
                &Shape::policy_name(i),
                DAILY_SCHEDULE,
            )
            .await
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let now = Utc::now();
    let runs = (0..shape.policies).flat_map(|i| {
        (1..=shape.runs_per_policy).map(move |days_ago| {
            finished_run(
                &shape.namespace_of(i),
                &Shape::policy_name(i),
                days_ago,
                now,
            )
        })
    });
    let mut loaded = 0usize;
    let mut stream = futures::stream::iter(runs)
        .map(|(run, status)| load_run(client.clone(), run, status))
        .buffer_unordered(LOAD_CONCURRENCY);
    while let Some(res) = stream.next().await {
        res?;
        loaded += 1;
        if loaded.is_multiple_of(2000) {
            eprintln!("  loaded {loaded} runs ({:.0?})", started.elapsed());
        }
    }
    Ok(LoadReport {
        namespaces: shape.namespaces,
        policies: shape.policies,
        runs: loaded,
        elapsed: started.elapsed(),
    })
}
