//! Operator benchmark (`make bench-operator`, or `cargo bench --bench operator`).
//!
//! Loads 1,000 BackupPolicies and 10,000 finished BackupRuns into the in-repo Kubernetes API
//! stand-in (without its Job runner: Jobs are created but nothing runs them), then measures the
//! real operator binary against the DESIGN.md §4 targets:
//!
//! - peak RSS (VmHWM) once it has synced and reconciled everything (target ≤ 50 MiB);
//! - manual BackupRun → Job created latency, p50/p99 (target p99 ≤ 200 ms);
//! - how late a scheduled run is created after its cron time (target ≤ 1 s);
//! - time for a restarted operator to answer `/readyz` 200.
//!
//! It prints figures and ratios to the targets and never fails on a timing: only a broken setup
//! (the operator exiting, a Job never appearing) makes it exit non-zero.
//!
//! Knobs (environment): `DG_BENCH_POLICIES` (1000), `DG_BENCH_RUNS_PER_POLICY` (10),
//! `DG_BENCH_NAMESPACES` (100), `DG_BENCH_LATENCY_SAMPLES` (100), `DG_BENCH_SCHEDULED` (10; 0
//! skips), `DG_BENCH_RESTARTS` (3), `DG_BENCH_OPERATOR_BIN` (the release `dataguardian`),
//! `DG_BENCH_AUDIT` (1: the audit trail on, to a local moto server; off by default).

mod audit;
mod fixtures;
mod measure;
mod process;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};

use fixtures::Shape;
use measure::{JobSightings, Percentiles};
use process::{OperatorCommand, ProcStats};

const MIB: f64 = 1024.0 * 1024.0;
const TARGET_RSS_MIB: f64 = 50.0;
const TARGET_RUN_TO_JOB_P99: Duration = Duration::from_millis(200);
const TARGET_SCHEDULED_LATE: Duration = Duration::from_secs(1);

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

struct Config {
    shape: Shape,
    latency_samples: usize,
    scheduled: usize,
    restarts: usize,
    binary: PathBuf,
    audit: bool,
}

impl Config {
    fn from_env() -> Result<Config> {
        let shape = Shape {
            policies: env_usize("DG_BENCH_POLICIES", 1000)?.max(1),
            runs_per_policy: env_usize("DG_BENCH_RUNS_PER_POLICY", 10)?,
            namespaces: env_usize("DG_BENCH_NAMESPACES", 100)?.max(1),
        };
        anyhow::ensure!(
            shape.runs_per_policy < fixtures::RUN_HISTORY_LIMIT as usize,
            "DG_BENCH_RUNS_PER_POLICY must stay below the policies' runHistory ({})",
            fixtures::RUN_HISTORY_LIMIT
        );
        Ok(Config {
            shape,
            latency_samples: env_usize("DG_BENCH_LATENCY_SAMPLES", 100)?.max(1),
            scheduled: env_usize("DG_BENCH_SCHEDULED", 10)?,
            restarts: env_usize("DG_BENCH_RESTARTS", 3)?.max(1),
            binary: std::env::var_os("DG_BENCH_OPERATOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dataguardian"))),
            audit: env_usize("DG_BENCH_AUDIT", 0)? > 0,
        })
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_stats(label: &str, s: ProcStats) {
    println!(
        "{label}: peak RSS (VmHWM) {:.1} MiB = {:.2}x the {TARGET_RSS_MIB:.0} MiB target; RSS now {:.1} MiB ({:.1} MiB heap and stacks, {:.1} MiB the binary's pages); CPU so far {:.1} s",
        mib(s.peak_rss),
        mib(s.peak_rss) / TARGET_RSS_MIB,
        mib(s.rss),
        mib(s.rss_anon),
        mib(s.rss_file),
        s.cpu.as_secs_f64()
    );
}

fn print_percentiles(label: &str, p: &Percentiles, target: Duration) {
    println!(
        "{label} (n={}): min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; p99 = {:.2}x the {:.0} ms target",
        p.n,
        ms(p.min),
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.max),
        p.p99.as_secs_f64() / target.as_secs_f64(),
        ms(target)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; there are no other arguments.
    let cfg = Config::from_env()?;
    // On Ctrl-C/SIGTERM the benchmark future is dropped, so the operator process is stopped
    // and the temp dirs are removed by their guards.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        res = run(cfg) => res,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

async fn run(cfg: Config) -> Result<()> {
    anyhow::ensure!(
        cfg.binary.is_file(),
        "operator binary {} not found (build it with `cargo build --release`)",
        cfg.binary.display()
    );
    let workdir = tempfile::Builder::new()
        .prefix("dg-bench-operator-")
        .tempdir()?;
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let server = kube_sim::Server::start(kube_sim::ServerOptions {
        crds_dir: Some(crds),
        state_dir: Some(workdir.path().join("sim")),
        ..Default::default()
    })
    .await
    .context("starting the API stand-in")?;
    let client = server.client().await?;
    let shape = cfg.shape;

    println!("== DataGuardian operator benchmark ==");
    println!("operator binary: {}", cfg.binary.display());
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "loading {} namespaces (1 S3 BackupStorage on a dead endpoint, 2 Secrets each), {} policies (\"{}\", runHistory {}/{}), {} finished runs per policy ...",
        shape.namespaces,
        shape.policies,
        fixtures::DAILY_SCHEDULE,
        fixtures::RUN_HISTORY_LIMIT,
        fixtures::RUN_HISTORY_LIMIT,
        shape.runs_per_policy
    );
    let load = fixtures::load(&client, shape).await?;
    println!(
        "loaded {} namespaces, {} policies and {} runs in {:.1} s",
        load.namespaces,
        load.policies,
        load.runs,
        load.elapsed.as_secs_f64()
    );

    let lease_ns = "dataguardian-system";
    fixtures_namespace(&client, lease_ns).await?;
    // The audit trail (leader-only watches and the sink) when asked for.
    let audit_server = if cfg.audit {
        Some(audit::AuditServer::start().await?)
    } else {
        None
    };
    let audit_storage = match &audit_server {
        Some(s) => Some(s.create_storage(&client, lease_ns).await?),
        None => None,
    };
    println!(
        "audit trail: {}",
        audit_storage.as_deref().map_or(
            "off (DG_BENCH_AUDIT=1 turns it on)".to_string(),
            |s| format!("on, --audit-storage {s} (moto, Object Lock bucket)")
        )
    );
    let command = OperatorCommand {
        binary: cfg.binary.clone(),
        kubeconfig: server.kubeconfig_path().to_path_buf(),
        lease_namespace: lease_ns.into(),
        log_dir: workdir.path().to_path_buf(),
        audit_storage: audit_storage.clone(),
    };

    // 1. Cold start: ready, then everything reconciled; memory.
    let mut op = command.spawn("cold")?;
    let ready = op.wait_ready(Duration::from_secs(300)).await?;
    println!("cold start: /readyz 200 after {:.0} ms", ms(ready));
    let reconciled =
        measure::wait_reconciled(&client, &mut op, shape, Duration::from_secs(600)).await?;
    println!(
        "cold start: all {} policies reconciled and {} storages probed {:.1} s after ready",
        shape.policies,
        shape.namespaces,
        reconciled.as_secs_f64()
    );
    if cfg.audit {
        let (t, f) =
            audit::wait_drained(&mut op, Duration::from_secs(5), Duration::from_secs(1800)).await?;
        println!(
            "cold start: audit trail caught up (nothing pending for 5 s) {:.1} s after the reconcile: {} records written, {} failed writes",
            t.as_secs_f64(),
            f.written,
            f.failed
        );
    }
    // Let the requeues and the status-change echoes settle before reading memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    op.ensure_running()?;
    let synced = op.stats()?;
    print_stats("after sync + reconcile", synced);

    // 2. Manual run → Job latency.
    let (jobs, watch) = JobSightings::watch(&client).await?;
    let (latencies, misses) =
        measure::run_to_job_latency(&client, &mut op, &jobs, shape, cfg.latency_samples).await?;
    if !misses.is_empty() {
        println!(
            "manual BackupRun -> Job: {} of {} runs got no Job within 30 s: {misses:?}",
            misses.len(),
            cfg.latency_samples
        );
    }
    watch.abort();
    let run_to_job = Percentiles::of(&latencies).context("no latency samples")?;
    print_percentiles(
        "manual BackupRun -> Job",
        &run_to_job,
        TARGET_RUN_TO_JOB_P99,
    );

    // 3. Scheduled runs: lateness after the cron time.
    let scheduled = if cfg.scheduled > 0 {
        let late = measure::scheduled_lateness(&client, &mut op, cfg.scheduled).await?;
        let p = Percentiles::of(&late).context("no scheduled samples")?;
        print_percentiles(
            "scheduled run created after its cron time",
            &p,
            TARGET_SCHEDULED_LATE,
        );
        Some(p)
    } else {
        None
    };
    let after_load = op.stats()?;
    print_stats("after the latency phases", after_load);

    // 4. Restarts: time to ready with everything in the cluster.
    let mut restarts = Vec::new();
    for i in 0..cfg.restarts {
        let stop = op.stop(Duration::from_secs(30));
        op = command.spawn(&format!("restart-{i}"))?;
        let t = op.wait_ready(Duration::from_secs(300)).await?;
        println!(
            "restart {}: stopped in {:.0} ms (SIGTERM, lease released); /readyz 200 after {:.0} ms",
            i + 1,
            ms(stop),
            ms(t)
        );
        restarts.push(t);
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    if cfg.audit {
        let (t, f) =
            audit::wait_drained(&mut op, Duration::from_secs(5), Duration::from_secs(1800)).await?;
        println!(
            "restarted operator: audit trail checked against the chain (nothing pending for 5 s) {:.1} s after the 15 s wait: {} records written by this process",
            t.as_secs_f64(),
            f.written
        );
    }
    op.ensure_running()?;
    let restarted = op.stats()?;
    print_stats("restarted operator, 15 s after ready", restarted);
    let restart = Percentiles::of(&restarts).context("no restarts")?;

    println!();
    println!("== summary (targets: DESIGN.md §4) ==");
    println!(
        "| peak RSS, {} policies + {} runs | {:.1} MiB | ≤ {TARGET_RSS_MIB:.0} MiB | {:.2}x |",
        shape.policies,
        load.runs,
        mib(synced.peak_rss.max(after_load.peak_rss)),
        mib(synced.peak_rss.max(after_load.peak_rss)) / TARGET_RSS_MIB
    );
    println!(
        "| manual run → Job p50 / p99 (n={}) | {:.1} / {:.1} ms | p99 ≤ {:.0} ms | {:.2}x |",
        run_to_job.n,
        ms(run_to_job.p50),
        ms(run_to_job.p99),
        ms(TARGET_RUN_TO_JOB_P99),
        run_to_job.p99.as_secs_f64() / TARGET_RUN_TO_JOB_P99.as_secs_f64()
    );
    if let Some(p) = scheduled {
        println!(
            "| scheduled run after cron time, max (n={}) | {:.0} ms | ≤ {:.0} ms | {:.2}x |",
            p.n,
            ms(p.max),
            ms(TARGET_SCHEDULED_LATE),
            p.max.as_secs_f64() / TARGET_SCHEDULED_LATE.as_secs_f64()
        );
    }
    println!(
        "| restart → /readyz 200, median of {} (max) | {:.0} ms ({:.0} ms) | — | — |",
        restart.n,
        ms(restart.p50),
        ms(restart.max)
    );
    println!(
        "| restarted operator, peak RSS | {:.1} MiB | — | — |",
        mib(restarted.peak_rss)
    );
    if cfg.audit {
        println!("(audit trail on: --audit-storage to moto)");
    }
    println!(
        "operator logs: {} (removed at exit)",
        op.log_path().display()
    );
    drop(op);
    drop(audit_server);
    drop(server);
    if std::env::var_os("DG_BENCH_KEEP").is_some() {
        println!("kept {}", workdir.keep().display());
    }
    Ok(())
}

/// A plain namespace (the operator's own, for its Lease).
async fn fixtures_namespace(client: &kube::Client, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    api.create(&Default::default(), &ns)
        .await
        .with_context(|| format!("namespace {name}"))?;
    Ok(())
}
