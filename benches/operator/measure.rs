//! The measurements: when the operator has reconciled everything, manual run → Job latency
//! (through a watch on Jobs), and how late scheduled runs are created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{Timelike, Utc};
use dataguardian::api::backup_run::Trigger;
use dataguardian::api::common::time_to_chrono;
use dataguardian::api::{BackupPolicy, BackupRun, BackupStorage};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::fixtures::{self, Shape};
use crate::process::OperatorProcess;

/// Label the operator puts on its Jobs.
const MANAGED_JOBS: &str = "app.kubernetes.io/managed-by=dataguardian-operator";
/// Label naming a Job's BackupRun.
const RUN_LABEL: &str = "dataguardian.io/run";

/// Percentiles of a sample (nearest rank).
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub n: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for an empty sample.
    pub fn of(samples: &[Duration]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort();
        let rank = |p: f64| s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Some(Percentiles {
            n: s.len(),
            min: s[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: s[s.len() - 1],
        })
    }
}

/// Waits until every loaded policy has a status written for its current generation that
/// names its last successful run (so the operator has seen the policy and its runs), and
/// every storage has been probed. Returns the time it took.
pub async fn wait_reconciled(
    client: &Client,
    op: &mut OperatorProcess,
    shape: Shape,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let policies: Api<BackupPolicy> = Api::all(client.clone());
    let storages: Api<BackupStorage> = Api::all(client.clone());
    loop {
        op.ensure_running()?;
        let done_policies = policies
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.observed_generation == p.metadata.generation
                        && s.last_successful_run.is_some()
                })
            })
            .count();
        let probed = storages
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.last_probe.is_some()))
            .count();
        if done_policies >= shape.policies && probed >= shape.namespaces {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "after {timeout:?} only {done_policies}/{} policies reconciled and {probed}/{} storages probed; log tail:\n{}",
                shape.policies,
                shape.namespaces,
                op.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When each operator Job was first seen by a watch, by (namespace, run).
#[derive(Clone, Default)]
pub struct JobSightings {
    seen: Arc<Mutex<HashMap<(String, String), Instant>>>,
    changed: Arc<Notify>,
}

impl JobSightings {
    /// Starts a watch on the operator's Jobs in all namespaces; returns once its initial list is
    /// done. The task ends when the returned handle is aborted.
    pub async fn watch(client: &Client) -> Result<(JobSightings, tokio::task::JoinHandle<()>)> {
        let sightings = JobSightings::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let api: Api<Job> = Api::all(client.clone());
        let s = sightings.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = watcher(api, watcher::Config::default().labels(MANAGED_JOBS)).boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                match event {
                    Ok(watcher::Event::Apply(job)) | Ok(watcher::Event::InitApply(job)) => {
                        if let (Some(ns), Some(run)) =
                            (job.namespace(), job.labels().get(RUN_LABEL).cloned())
                        {
                            s.seen
                                .lock()
                                .expect("sightings lock")
                                .entry((ns, run))
                                .or_insert(now);
                            s.changed.notify_waiters();
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("  job watch error (the watcher retries): {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("job watch did not finish its initial list")??;
        Ok((sightings, task))
    }

    /// Waits until a Job of `ns/run` has been seen; returns when.
    async fn wait_for(&self, ns: &str, run: &str, timeout: Duration) -> Result<Instant> {
        let key = (ns.to_string(), run.to_string());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(t) = self.seen.lock().expect("sightings lock").get(&key) {
                return Ok(*t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("no Job for run {ns}/{run} within {timeout:?}");
            }
        }
    }
}

/// Creates `samples` manual BackupRuns one after another (spread over the loaded policies) and
/// measures, for each, the time from the create call returning to its Job appearing on the
/// watch. Each measured run is deleted once its Job was seen (its Job is garbage-collected
/// with it), so the concurrency limit never queues the next one. A run whose Job does not
/// appear within 30 s is returned as a miss (and deleted like the others).
pub async fn run_to_job_latency(
    client: &Client,
    op: &mut OperatorProcess,
    jobs: &JobSightings,
    shape: Shape,
    samples: usize,
) -> Result<(Vec<Duration>, Vec<String>)> {
    let mut latencies = Vec::with_capacity(samples);
    let mut misses = Vec::new();
    let stride = (shape.policies / samples.max(1)).max(1);
    for i in 0..samples {
        op.ensure_running()?;
        let policy = (i * stride + i / shape.policies.max(1)) % shape.policies;
        let ns = shape.namespace_of(policy);
        let name = format!("bench-manual-{i:03}");
        let mut run = BackupRun::new(
            &name,
            dataguardian::api::BackupRunSpec {
                policy_ref: dataguardian::api::common::LocalObjectReference::new(
                    Shape::policy_name(policy),
                ),
                trigger: Trigger::Manual,
                scheduled_time: None,
                reason: Some("operator benchmark".into()),
                compression: None,
                active_deadline_seconds: None,
            },
        );
        run.metadata.namespace = Some(ns.clone());
        let api: Api<BackupRun> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &run)
            .await
            .with_context(|| format!("creating {ns}/{name}"))?;
        let created = Instant::now();
        if std::env::var_os("DG_BENCH_KEEP").is_some() {
            // For reading alongside the kept operator logs.
            eprintln!("created {ns}/{name} at {}", chrono::Utc::now().to_rfc3339());
        }
        match jobs.wait_for(&ns, &name, Duration::from_secs(30)).await {
            Ok(seen) => latencies.push(seen.saturating_duration_since(created)),
            Err(e) => {
                eprintln!("  {e}; counted as a miss");
                misses.push(format!("{ns}/{name}"));
            }
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        api.delete(&name, &dp)
            .await
            .with_context(|| format!("deleting {ns}/{name}"))?;
    }
    Ok((latencies, misses))
}

/// Creates `count` policies scheduled every minute in a fresh namespace and measures, for the
/// first fire time after they exist, how long after the cron time each run reached a watch.
/// The policies and their runs are deleted afterwards.
pub async fn scheduled_lateness(
    client: &Client,
    op: &mut OperatorProcess,
    count: usize,
) -> Result<Vec<Duration>> {
    let ns = "bench-scheduled";
    // Leave the operator at least 15 s before the next minute to see the new policies.
    let second = Utc::now().second();
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs(u64::from(61 - second))).await;
    }
    fixtures::namespace_with_storage(client, ns).await?;
    let runs: Api<BackupRun> = Api::namespaced(client.clone(), ns);
    let first_seen: Arc<Mutex<HashMap<String, chrono::DateTime<Utc>>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let seen = first_seen.clone();
    let watch_api = runs.clone();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut stream = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let now = Utc::now();
            match event {
                Ok(watcher::Event::Apply(run)) | Ok(watcher::Event::InitApply(run))
                    if run.spec.scheduled_time.is_some() =>
                {
                    seen.lock()
                        .expect("lock")
                        .entry(run.name_any())
                        .or_insert(now);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
    });
    ready_rx
        .await
        .context("run watch ended before its initial list")?;
    for i in 0..count {
        fixtures::create_policy(client, ns, &format!("every-minute-{i:02}"), "* * * * *").await?;
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    let observed = loop {
        op.ensure_running()?;
        let snapshot = first_seen.lock().expect("lock").clone();
        if snapshot.len() >= count {
            break snapshot;
        }
        if Instant::now() > deadline {
            task.abort();
            bail!(
                "only {} of {count} scheduled runs appeared; log tail:\n{}",
                snapshot.len(),
                op.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    task.abort();
    let listed = runs.list(&ListParams::default()).await?.items;
    let mut lateness = Vec::new();
    for run in &listed {
        let (Some(at), Some(fire)) = (
            observed.get(&run.name_any()),
            run.spec.scheduled_time.as_ref(),
        ) else {
            continue;
        };
        lateness.push((*at - time_to_chrono(fire)).to_std().unwrap_or_default());
    }
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), ns);
    policies
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    runs.delete_collection(
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        },
        &ListParams::default(),
    )
    .await?;
    Ok(lateness)
}
