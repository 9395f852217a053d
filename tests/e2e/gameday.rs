//! The GameDay: a bounded, seeded fault campaign against the real operator binary, real
//! PostgreSQL and S3 (moto behind a fault-injecting proxy) and the API stand-in with its Job
//! runner, while backups and restores run:
//!
//! - the operator is killed (SIGKILL) at random points and started again after a while;
//! - S3 goes down (every connection refused) for a while;
//! - PostgreSQL is restarted while a backup is dumping;
//! - the API stand-in is restarted: it keeps its objects as etcd would (`persist`), watches
//!   end and relist; the kubelet (the runner, a separate client) keeps its containers running.
//!
//! Backups run in waves of `parallel` manual BackupRuns, one fault per wave (a shuffled bag, so
//! every kind occurs); then restores of randomly chosen succeeded backups run in waves the
//! same way. It reports and asserts:
//! - **lost** runs (a run created that never reached a terminal phase within the bound): 0;
//! - **duplicate Jobs** (two Jobs, by uid, for one run, seen by a watch of all Jobs): 0;
//! - **false successes**: a Succeeded backup whose manifest does not hash to its status, whose
//!   artifacts in S3 do not match the manifest's sizes and checksums, or that does not restore
//!   (a restore that failed under a fault is retried without one); a Succeeded restore whose
//!   tables do not hold the row counts the backup's manifest recorded: 0;
//! - runs that failed, by reason (a failure without a reason and message fails the campaign);
//! - the time to recover: from each fault's end to the next backup that succeeded.
//!
//! `gameday_short` runs a few runs with every fault in `make test`; `make gameday` runs the
//! long campaign (`gameday_campaign`, ignored by default) sized by `GAMEDAY_BACKUPS` (50),
//! `GAMEDAY_RESTORES` (10), `GAMEDAY_PARALLEL` (3) and `GAMEDAY_BOUND_SECONDS` (300). The seed
//! is printed; `GAMEDAY_SEED` reproduces the fault schedule (timing on a shared machine still
//! varies). `GAMEDAY_REPORT` names a file the report is also written to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dataguardian::agent::manifest::Manifest;
use dataguardian::api::{BackupRun, RestoreRun};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use sha2::{Digest, Sha256};
use testkit::{FaultPlan, FaultyProxy};

use crate::harness::{Cluster, Operator, Services, manual_run, phase};

const NS: &str = "gameday";

/// How big the campaign is.
#[derive(Debug, Clone)]
struct Plan {
    backups: usize,
    restores: usize,
    parallel: usize,
    seed: u64,
    /// A run that is not Succeeded or Failed this long after it was created is lost.
    bound: Duration,
    /// Rows of filler text in the database (makes a dump take long enough to be interrupted).
    filler_rows: u64,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn seed() -> u64 {
    match std::env::var("GAMEDAY_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GAMEDAY_SEED={v:?} is not a number")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

impl Plan {
    /// The campaign of `make test`: every fault once, a few runs.
    fn short() -> Plan {
        Plan {
            backups: 8,
            restores: 2,
            parallel: 2,
            seed: seed(),
            bound: Duration::from_secs(env_num("GAMEDAY_BOUND_SECONDS", 240)),
            filler_rows: 40_000,
        }
    }

    /// The campaign of `make gameday`.
    fn long() -> Plan {
        Plan {
            backups: env_num("GAMEDAY_BACKUPS", 50) as usize,
            restores: env_num("GAMEDAY_RESTORES", 10) as usize,
            parallel: env_num("GAMEDAY_PARALLEL", 3).max(1) as usize,
            seed: seed(),
            bound: Duration::from_secs(env_num("GAMEDAY_BOUND_SECONDS", 300)),
            filler_rows: 150_000,
        }
    }
}

/// SplitMix64: small, seedable, good enough to pick fault timings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    OperatorKilled,
    S3Down,
    DatabaseRestarted,
    ApiServerRestarted,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [
        FaultKind::OperatorKilled,
        FaultKind::S3Down,
        FaultKind::DatabaseRestarted,
        FaultKind::ApiServerRestarted,
    ];
}

/// A shuffled bag of every fault kind, refilled when empty.
struct Bag {
    left: Vec<FaultKind>,
}

impl Bag {
    fn take(&mut self, rng: &mut Rng) -> FaultKind {
        if self.left.is_empty() {
            self.left = FaultKind::ALL.to_vec();
            rng.shuffle(&mut self.left);
        }
        self.left.pop().expect("refilled")
    }
}

#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    /// What was done, with the random timings.
    detail: String,
    cleared: DateTime<Utc>,
}

/// The API stand-in: restartable on its port and state directory (persistent store).
struct Sim {
    opts: kube_sim::ServerOptions,
    server: Option<kube_sim::RunningServer>,
}

impl Sim {
    async fn start(state: &Path) -> Sim {
        let port = testkit::free_port();
        let opts = kube_sim::ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            crds_dir: Some(workspace().join("crds")),
            state_dir: Some(state.to_path_buf()),
            persist: true,
            ..Default::default()
        };
        let server = kube_sim::Server::start(opts.clone())
            .await
            .expect("starting the API stand-in");
        Sim {
            opts,
            server: Some(server),
        }
    }

    fn server(&self) -> &kube_sim::RunningServer {
        self.server.as_ref().expect("running")
    }

    /// Stops the server (its connections and watches end), waits `down`, starts it again on
    /// the same address and state directory.
    async fn restart(&mut self, down: Duration) {
        drop(self.server.take());
        tokio::time::sleep(down).await;
        self.server = Some(
            kube_sim::Server::start(self.opts.clone())
                .await
                .expect("restarting the API stand-in"),
        );
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Job uid seen per owning run (`Kind/name`), from a watch that relists across restarts.
type JobsSeen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

fn watch_jobs(client: kube::Client) -> (JobsSeen, tokio::task::JoinHandle<()>) {
    let seen: JobsSeen = Arc::default();
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let api: Api<Job> = Api::namespaced(client, NS);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = stream.next().await {
            let Ok(job) = ev else { continue };
            let Some(uid) = job.metadata.uid.clone() else {
                continue;
            };
            let owner = job
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .or_else(|| job.owner_references().first())
                .map(|o| format!("{}/{}", o.kind, o.name))
                .unwrap_or_else(|| format!("(no owner)/{}", job.name_any()));
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(owner)
                .or_default()
                .insert(uid);
        }
    });
    (seen, task)
}

/// The whole campaign's world.
struct World {
    sim: Sim,
    runner: tokio::task::JoinHandle<()>,
    cluster: Cluster,
    services: Services,
    proxy: FaultyProxy,
    operator: Operator,
    /// When the operator process was seen to have ended on its own (not killed by a fault).
    operator_exited_at: Option<Instant>,
    /// Every time it ended on its own: when, and why (its exit status and last error).
    operator_exits: Vec<(Instant, String)>,
    _dir: tempfile::TempDir,
}

/// The kubelet's first restart delay for a container that exited (`restartPolicy: Always`),
/// doubled per exit within [`CRASH_WINDOW`] up to 16× (as CrashLoopBackOff).
const RESTART_BACKOFF: Duration = Duration::from_secs(10);
const CRASH_WINDOW: Duration = Duration::from_secs(600);

impl World {
    async fn start(plan: &Plan) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("E2E_LOG")
                    .unwrap_or_else(|_| "kube_sim=warn".into()),
            )
            .with_test_writer()
            .try_init();
        testkit::images::ensure(
            &workspace(),
            Path::new(env!("CARGO_BIN_EXE_dataguardian")),
            env!("CARGO_PKG_VERSION"),
        );
        let dir = tempfile::Builder::new()
            .prefix("dg-gameday-")
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("sim");
        let sim = Sim::start(&state).await;
        let kubeconfig = sim.server().kubeconfig_path().to_path_buf();
        // The kubelet and the workload controllers: a client of the server like the real
        // ones, apart from the server's lifetime, so they keep running across its restarts.
        let mut cfg = kube_sim::runner::RunnerConfig::new(state.clone()).expect("runner config");
        cfg.api_server = Some(sim.server().addr());
        let runner_client = sim.server().client().await.expect("runner client");
        let runner = tokio::spawn(async move {
            // Runs until aborted; stopping on its own would leave every later run lost.
            match kube_sim::runner::run(runner_client, cfg).await {
                Ok(()) => eprintln!("GameDay: the Job runner stopped"),
                Err(e) => eprintln!("GameDay: the Job runner failed: {e}"),
            }
        });
        let cluster = Cluster::connect(kubeconfig).await;
        let services = Services::start();
        services
            .pg
            .psql(
                "shop",
                &format!(
                    "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
                     INSERT INTO notes (body) SELECT md5(g::text) || md5((g * 7)::text) || repeat(md5((g * 13)::text), 2) FROM generate_series(1, {}) g;",
                    plan.filler_rows
                ),
            )
            .expect("filler rows");
        let proxy =
            FaultyProxy::start(services.s3.addr(), FaultPlan::PassThrough).expect("S3 fault proxy");
        let ns = cluster.namespace(NS);
        let operator = Operator::start(&cluster, "dataguardian-system", "gameday-operator");
        operator.wait_ready(Duration::from_secs(120)).await;
        // Every run and artifact is kept: the campaign checks them all at the end.
        let manifests = services
            .manifests(
                &ns,
                "shop",
                "0 0 1 1 *",
                "  runHistory: {successful: 1000, failed: 1000}\n",
            )
            .replace(&services.s3.endpoint(), &proxy.endpoint());
        cluster.apply(&manifests);
        World {
            sim,
            runner,
            cluster,
            services,
            proxy,
            operator,
            operator_exited_at: None,
            operator_exits: Vec::new(),
            _dir: dir,
        }
    }

    /// Plays the kubelet for the operator's pod: a process that ended on its own (e.g. after
    /// losing its lease while the API server was away) is started again after the
    /// CrashLoopBackOff delay, as its Deployment's pod would be.
    fn supervise(&mut self) {
        let Some(status) = self.operator.exited() else {
            return;
        };
        let now = Instant::now();
        let Some(exited) = self.operator_exited_at else {
            let log = self.operator.log();
            let last_error = log
                .lines()
                .rev()
                .find(|l| l.contains("\"level\":\"ERROR\"") && !l.contains("kube_client"))
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|v| {
                    format!(
                        "{}: {}",
                        v["message"].as_str().unwrap_or(""),
                        v["error"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default();
            eprintln!("GameDay: the operator exited ({status}): {last_error}");
            self.operator_exits
                .push((now, format!("{status}: {last_error}")));
            self.operator_exited_at = Some(now);
            return;
        };
        let recent = self
            .operator_exits
            .iter()
            .filter(|(t, _)| now.duration_since(*t) < CRASH_WINDOW)
            .count()
            .max(1);
        let backoff = RESTART_BACKOFF * (1 << (recent - 1).min(4)) as u32;
        if now.duration_since(exited) >= backoff {
            eprintln!("GameDay: restarting the operator after {backoff:?} (as the kubelet would)");
            self.operator.restart();
            self.operator_exited_at = None;
        }
    }

    /// `kubectl apply`, retried while the API stand-in is down.
    async fn apply(&self, yaml: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self
                .cluster
                .kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
            {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("gameday: apply failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("apply failed for 120 s: {e}\n{yaml}"),
            }
        }
    }

    /// Injects one fault of `kind` while `names` (runs of `kind_of_runs`) are under way.
    async fn inject(
        &mut self,
        kind: FaultKind,
        rng: &mut Rng,
        names: &[String],
        restores: bool,
    ) -> Fault {
        let detail = match kind {
            FaultKind::OperatorKilled => {
                let after = rng.millis(0, 3000);
                let down = rng.millis(500, 6000);
                tokio::time::sleep(after).await;
                self.operator.kill();
                tokio::time::sleep(down).await;
                self.operator.restart();
                format!("operator SIGKILLed {after:?} after the runs were created, down {down:?}")
            }
            FaultKind::S3Down => {
                let after = rng.millis(0, 3000);
                let down = rng.millis(2000, 20000);
                tokio::time::sleep(after).await;
                self.proxy.set_plan(FaultPlan::RefuseAll);
                tokio::time::sleep(down).await;
                self.proxy.set_plan(FaultPlan::PassThrough);
                format!("S3 refused every connection from {after:?} on, for {down:?}")
            }
            FaultKind::DatabaseRestarted => {
                // Mid-dump (or mid-restore): once one of the runs is Running.
                let running = self
                    .wait_running(names, restores, Duration::from_secs(60))
                    .await;
                let after = rng.millis(0, 1500);
                tokio::time::sleep(after).await;
                let pg = &mut self.services.pg;
                tokio::task::block_in_place(|| pg.restart()).expect("restarting PostgreSQL");
                match running {
                    Some(run) => format!("PostgreSQL restarted {after:?} after {run} was Running"),
                    None => format!(
                        "PostgreSQL restarted {after:?} after 60 s without seeing a run Running"
                    ),
                }
            }
            FaultKind::ApiServerRestarted => {
                let after = rng.millis(0, 3000);
                let down = rng.millis(500, 5000);
                tokio::time::sleep(after).await;
                self.sim.restart(down).await;
                format!("API stand-in stopped {after:?} after the runs were created, down {down:?}")
            }
        };
        Fault {
            kind,
            detail,
            cleared: Utc::now(),
        }
    }

    /// The first of `names` seen Running (None after `timeout`).
    async fn wait_running(
        &mut self,
        names: &[String],
        restores: bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.supervise();
            for n in names {
                let p = if restores {
                    self.restore(n).await.and_then(|r| restore_phase(&r))
                } else {
                    self.backup(n).await.and_then(|r| phase(&r))
                };
                if p.as_deref() == Some("Running") {
                    return Some(n.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn backup(&self, name: &str) -> Option<BackupRun> {
        let api: Api<BackupRun> = Api::namespaced(self.cluster.client.clone(), NS);
        api.get_opt(name).await.ok().flatten()
    }

    async fn restore(&self, name: &str) -> Option<RestoreRun> {
        let api: Api<RestoreRun> = Api::namespaced(self.cluster.client.clone(), NS);
        api.get_opt(name).await.ok().flatten()
    }

    /// Waits until every run in `names` is Succeeded or Failed, or until its bound (from
    /// `created`) passed; returns the phase each ended in (`None`: lost).
    async fn wait_terminal(
        &mut self,
        names: &[String],
        created: Instant,
        bound: Duration,
        restores: bool,
    ) -> BTreeMap<String, Option<String>> {
        let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
        loop {
            self.supervise();
            for n in names {
                if out.get(n).is_some_and(Option::is_some) {
                    continue;
                }
                let p = if restores {
                    self.restore(n).await.and_then(|r| restore_phase(&r))
                } else {
                    self.backup(n).await.and_then(|r| phase(&r))
                };
                let terminal = p.filter(|p| p == "Succeeded" || p == "Failed");
                out.insert(n.clone(), terminal);
            }
            if out.values().all(Option::is_some) || created.elapsed() > bound {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The manifest of a Succeeded backup, checked against its status and S3: the manifest
    /// hashes to `manifestSha256`, every artifact it lists has its size and SHA-256 in S3,
    /// and the status's artifact is one of them. `Err` says what does not match.
    fn verify_artifacts(&self, run: &BackupRun) -> Result<Manifest, String> {
        let artifact = run
            .status
            .as_ref()
            .and_then(|s| s.artifact.as_deref())
            .ok_or("Succeeded without an artifact in status")?;
        let manifest_key = artifact
            .manifest_key
            .as_deref()
            .ok_or("Succeeded without a manifest key")?;
        let bucket = &self.services.bucket;
        let key = object_key(manifest_key, bucket);
        let bytes = self
            .services
            .s3
            .get_object(bucket, &key)
            .map_err(|e| format!("manifest {key} not readable: {e}"))?;
        let digest = hex(&Sha256::digest(&bytes));
        if artifact.manifest_sha256.as_deref() != Some(digest.as_str()) {
            return Err(format!(
                "manifest {key} hashes to {digest}, status says {:?}",
                artifact.manifest_sha256
            ));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest {key} does not parse: {e}"))?;
        let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let mut status_artifact_listed = false;
        for a in &manifest.artifacts {
            let akey = if dir.is_empty() {
                a.key.clone()
            } else {
                format!("{dir}/{}", a.key)
            };
            let data = self
                .services
                .s3
                .get_object(bucket, &akey)
                .map_err(|e| format!("artifact {akey} not readable: {e}"))?;
            if data.len() as u64 != a.size_bytes {
                return Err(format!(
                    "artifact {akey}: {} bytes in S3, the manifest says {}",
                    data.len(),
                    a.size_bytes
                ));
            }
            let sha = hex(&Sha256::digest(&data));
            if sha != a.sha256 {
                return Err(format!(
                    "artifact {akey}: SHA-256 {sha}, the manifest says {}",
                    a.sha256
                ));
            }
            if sha == artifact.sha256 {
                status_artifact_listed = true;
            }
        }
        if !status_artifact_listed {
            return Err(format!(
                "the status's artifact SHA-256 {} is not among the manifest's artifacts",
                artifact.sha256
            ));
        }
        Ok(manifest)
    }

    /// Whether database `db` holds the row counts `manifest` recorded for every table.
    fn verify_restored(&self, db: &str, manifest: &Manifest) -> Result<(), String> {
        let mut checked = 0;
        for t in manifest.artifacts.iter().flat_map(|a| &a.tables) {
            let got = self
                .services
                .pg
                .psql(
                    db,
                    &format!("SELECT count(*) FROM \"{}\".\"{}\"", t.schema, t.name),
                )
                .map_err(|e| format!("counting {}.{} in {db}: {e}", t.schema, t.name))?;
            let got: u64 = got.trim().parse().map_err(|_| format!("count {got:?}"))?;
            if got != t.rows {
                return Err(format!(
                    "{db}: {}.{} has {got} rows, the backup recorded {}",
                    t.schema, t.name, t.rows
                ));
            }
            checked += 1;
        }
        if checked == 0 {
            return Err("the manifest lists no tables".into());
        }
        Ok(())
    }

    fn restore_yaml(&self, name: &str, backup: &str, db: &str) -> String {
        format!(
            "apiVersion: dataguardian.io/v1alpha1\nkind: RestoreRun\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  backupRunRef: {{name: {backup}}}\n  target: {{postgres: {}}}\n  createDatabase: true\n",
            self.services.postgres_endpoint(db)
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.runner.abort();
    }
}

fn restore_phase(r: &RestoreRun) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
}

/// `s3://bucket/key` or a bare key → the key.
fn object_key(location: &str, bucket: &str) -> String {
    location
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap_or(location)
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the campaign found.
#[derive(Debug, Default)]
struct Report {
    seed: u64,
    backups: usize,
    restores: usize,
    succeeded: usize,
    lost: Vec<String>,
    duplicate_jobs: Vec<String>,
    false_successes: Vec<String>,
    failed_by_reason: BTreeMap<String, usize>,
    /// Failed attempts of backups (retried by the operator), by reason.
    attempts_failed_by_reason: BTreeMap<String, usize>,
    unclear_failures: Vec<String>,
    restores_verified: usize,
    restores_failed_by_reason: BTreeMap<String, usize>,
    faults: Vec<Fault>,
    /// Each time the operator ended on its own (restarted as the kubelet would).
    operator_exits: Vec<String>,
    /// Per fault: seconds from its end to the next backup that succeeded (None: none did).
    recovery: Vec<(FaultKind, Option<f64>)>,
    elapsed: Duration,
}

impl Report {
    fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "GameDay seed {} — {} backups, {} restores in {:.0?}\n",
            self.seed, self.backups, self.restores, self.elapsed
        ));
        s.push_str(&format!("  backups succeeded:     {}\n", self.succeeded));
        s.push_str(&format!(
            "  runs lost:             {} {:?}\n",
            self.lost.len(),
            self.lost
        ));
        s.push_str(&format!(
            "  duplicate Jobs:        {} {:?}\n",
            self.duplicate_jobs.len(),
            self.duplicate_jobs
        ));
        s.push_str(&format!(
            "  false successes:       {} {:?}\n",
            self.false_successes.len(),
            self.false_successes
        ));
        s.push_str(&format!(
            "  backups failed (clear reason): {:?}\n",
            self.failed_by_reason
        ));
        s.push_str(&format!(
            "  failed attempts retried by the operator, by reason: {:?}\n",
            self.attempts_failed_by_reason
        ));
        s.push_str(&format!(
            "  failures without a reason: {} {:?}\n",
            self.unclear_failures.len(),
            self.unclear_failures
        ));
        s.push_str(&format!(
            "  restores verified (row counts = manifest): {}; failed under a fault: {:?}\n",
            self.restores_verified, self.restores_failed_by_reason
        ));
        s.push_str(&format!(
            "  operator exits on its own (restarted after the CrashLoopBackOff delay): {} {:?}\n",
            self.operator_exits.len(),
            self.operator_exits
        ));
        s.push_str("  faults and time to recover (fault end → next successful backup):\n");
        for kind in FaultKind::ALL {
            let times: Vec<f64> = self
                .recovery
                .iter()
                .filter(|(k, _)| *k == kind)
                .filter_map(|(_, t)| *t)
                .collect();
            let n = self.recovery.iter().filter(|(k, _)| *k == kind).count();
            let (median, max) = median_max(&times);
            s.push_str(&format!(
                "    {kind:?}: {n} injected, recovered {} — median {median:.1} s, max {max:.1} s\n",
                times.len()
            ));
        }
        s.push_str("  fault log:\n");
        for f in &self.faults {
            s.push_str(&format!("    {:?}: {}\n", f.kind, f.detail));
        }
        s
    }
}

fn median_max(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() - 1])
}

async fn campaign(plan: Plan) {
    let started = Instant::now();
    eprintln!(
        "GameDay: seed {} (GAMEDAY_SEED={} reproduces it), {plan:?}",
        plan.seed, plan.seed
    );
    let mut rng = Rng(plan.seed);
    let mut bag = Bag { left: Vec::new() };
    let mut world = World::start(&plan).await;
    let (jobs_seen, jobs_task) = watch_jobs(world.cluster.client.clone());
    // The last wave is one run without a fault: the last fault's recovery is measured too.
    let total = plan.backups + 1;
    let mut report = Report {
        seed: plan.seed,
        backups: total,
        restores: plan.restores,
        ..Default::default()
    };

    // Backups, in waves with one fault each.
    let mut outcomes: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut index = 0;
    let mut wave = 0;
    while index < total {
        let n = if index == plan.backups {
            1
        } else {
            plan.parallel.min(plan.backups - index)
        };
        // The data changes between waves, so every backup's row counts are its own.
        world
            .services
            .pg
            .psql(
                "shop",
                &format!(
                    "INSERT INTO orders (customer_id, total) SELECT 1, {wave} FROM generate_series(1, {})",
                    wave + 1
                ),
            )
            .expect("changing the data");
        let names: Vec<String> = (index..index + n).map(|i| format!("gd-{i:03}")).collect();
        let created = Instant::now();
        for name in &names {
            world.apply(&manual_run(NS, name, "shop")).await;
        }
        if index < plan.backups {
            let kind = bag.take(&mut rng);
            let fault = world.inject(kind, &mut rng, &names, false).await;
            eprintln!(
                "GameDay wave {wave} ({names:?}): {:?}: {}",
                fault.kind, fault.detail
            );
            report.faults.push(fault);
        }
        let ended = world
            .wait_terminal(&names, created, plan.bound, false)
            .await;
        eprintln!("GameDay wave {wave}: {ended:?}");
        outcomes.extend(ended);
        index += n;
        wave += 1;
    }

    // Every backup: lost, failed (with a reason?) or succeeded (artifacts match?).
    let mut succeeded: Vec<(String, Manifest, DateTime<Utc>)> = Vec::new();
    for (name, ended) in &outcomes {
        let Some(run) = world.backup(name).await else {
            report.lost.push(format!("{name} (object gone)"));
            continue;
        };
        for a in run.status.iter().flat_map(|s| &s.failed_attempts) {
            *report
                .attempts_failed_by_reason
                .entry(a.reason.clone())
                .or_default() += 1;
        }
        match ended.as_deref() {
            None => report.lost.push(format!(
                "{name} ({})",
                phase(&run).unwrap_or_else(|| "no phase".into())
            )),
            Some("Failed") => {
                let st = run.status.clone().unwrap_or_default();
                let reason = st.reason.clone().unwrap_or_default();
                if reason.is_empty() || st.message.as_deref().unwrap_or("").is_empty() {
                    report
                        .unclear_failures
                        .push(format!("{name}: {:?}", run.status));
                }
                *report.failed_by_reason.entry(reason).or_default() += 1;
            }
            _ => match world.verify_artifacts(&run) {
                Ok(m) => {
                    let done = run
                        .status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .and_then(|t| serde_json::to_value(t).ok())
                        .and_then(|v| {
                            v.as_str()
                                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        })
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_else(Utc::now);
                    report.succeeded += 1;
                    succeeded.push((name.clone(), m, done));
                }
                Err(e) => report.false_successes.push(format!("{name}: {e}")),
            },
        }
    }
    for f in &report.faults {
        let next = succeeded
            .iter()
            .filter(|(_, _, done)| *done >= f.cleared)
            .map(|(_, _, done)| (*done - f.cleared).num_milliseconds() as f64 / 1000.0)
            .reduce(f64::min);
        report.recovery.push((f.kind, next));
    }

    // Restores of randomly chosen succeeded backups, in waves with one fault each.
    let mut chosen: Vec<usize> = (0..succeeded.len()).collect();
    rng.shuffle(&mut chosen);
    chosen.truncate(plan.restores);
    for (w, group) in chosen.chunks(plan.parallel).enumerate() {
        let names: Vec<String> = group.iter().map(|i| format!("gd-restore-{i:03}")).collect();
        let created = Instant::now();
        for (name, i) in names.iter().zip(group) {
            let db = name.replace('-', "_");
            world
                .apply(&world.restore_yaml(name, &succeeded[*i].0, &db))
                .await;
        }
        let kind = bag.take(&mut rng);
        let fault = world.inject(kind, &mut rng, &names, true).await;
        eprintln!(
            "GameDay restore wave {w} ({names:?}): {:?}: {}",
            fault.kind, fault.detail
        );
        report.faults.push(fault);
        let ended = world.wait_terminal(&names, created, plan.bound, true).await;
        eprintln!("GameDay restore wave {w}: {ended:?}");
        for (name, i) in names.iter().zip(group) {
            let (backup, manifest, _) = &succeeded[*i];
            let db = name.replace('-', "_");
            // By name: the map is in name order, the wave in the order the runs were drawn.
            match ended.get(name).cloned().flatten().as_deref() {
                None => report.lost.push(format!("{name} (restore)")),
                Some("Succeeded") => match world.verify_restored(&db, manifest) {
                    Ok(()) => report.restores_verified += 1,
                    Err(e) => report
                        .false_successes
                        .push(format!("{name} (restore of {backup}): {e}")),
                },
                _ => {
                    let st = world
                        .restore(name)
                        .await
                        .and_then(|r| r.status)
                        .unwrap_or_default();
                    let reason = st.reason.clone().unwrap_or_default();
                    if reason.is_empty() || st.message.as_deref().unwrap_or("").is_empty() {
                        report.unclear_failures.push(format!("{name}: {st:?}"));
                    }
                    *report.restores_failed_by_reason.entry(reason).or_default() += 1;
                    // Failed under a fault: does the backup restore without one?
                    let retry = format!("{name}-retry");
                    let retry_db = retry.replace('-', "_");
                    world
                        .apply(&world.restore_yaml(&retry, backup, &retry_db))
                        .await;
                    let again = world
                        .wait_terminal(
                            std::slice::from_ref(&retry),
                            Instant::now(),
                            plan.bound,
                            true,
                        )
                        .await;
                    match again.get(&retry).cloned().flatten().as_deref() {
                        Some("Succeeded") => match world.verify_restored(&retry_db, manifest) {
                            Ok(()) => report.restores_verified += 1,
                            Err(e) => report
                                .false_successes
                                .push(format!("{retry} (restore of {backup}): {e}")),
                        },
                        Some(_) => report.false_successes.push(format!(
                            "{backup}: Succeeded, but does not restore without faults ({retry}: {:?})",
                            world.restore(&retry).await.and_then(|r| r.status)
                        )),
                        None => report.lost.push(format!("{retry} (restore)")),
                    }
                }
            }
        }
    }

    // Two Jobs for one run, ever.
    let seen = jobs_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    jobs_task.abort();
    for (owner, uids) in &seen {
        // One Job per run; other owners (e.g. a policy's retention Jobs) may have several.
        let run = owner.starts_with("BackupRun/") || owner.starts_with("RestoreRun/");
        if run && uids.len() > 1 {
            report
                .duplicate_jobs
                .push(format!("{owner}: {} Jobs", uids.len()));
        }
    }
    report.operator_exits = world
        .operator_exits
        .iter()
        .map(|(t, why)| format!("{:.0?} in: {why}", t.duration_since(started)))
        .collect();
    report.elapsed = started.elapsed();
    let text = report.render();
    eprintln!("{text}");
    if let Ok(path) = std::env::var("GAMEDAY_REPORT") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    let failed = !report.lost.is_empty()
        || !report.duplicate_jobs.is_empty()
        || !report.false_successes.is_empty()
        || !report.unclear_failures.is_empty()
        || report.succeeded == 0
        || report.restores_verified < plan.restores.min(report.succeeded)
        || seen.is_empty();
    if failed {
        panic!(
            "GameDay failed (seed {}):\n{text}\n{}\n===== operator log =====\n{}",
            plan.seed,
            world.cluster.diagnostics(NS).await,
            world.operator.log()
        );
    }
}

/// A few runs with every kind of fault (part of `make test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gameday_short() {
    let _serial = crate::serial().await;
    campaign(Plan::short()).await;
}

/// The long campaign (`make gameday`): `GAMEDAY_BACKUPS` (50), `GAMEDAY_RESTORES` (10), ….
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run by `make gameday`"]
async fn gameday_campaign() {
    let _serial = crate::serial().await;
    campaign(Plan::long()).await;
}

#[test]
fn the_rng_is_reproducible_and_the_bag_deals_every_fault() {
    let mut a = Rng(42);
    let mut b = Rng(42);
    let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
    let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
    assert_eq!(xs, ys);
    assert_ne!(xs[0], Rng(43).next());
    let mut bag = Bag { left: Vec::new() };
    let mut rng = Rng(7);
    let mut dealt: Vec<FaultKind> = (0..4).map(|_| bag.take(&mut rng)).collect();
    dealt.sort();
    assert_eq!(dealt, FaultKind::ALL.to_vec());
    let d = rng.millis(100, 200);
    assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200));
    assert_eq!(
        object_key("s3://b/e2e/x/manifest.json", "b"),
        "e2e/x/manifest.json"
    );
    assert_eq!(
        object_key("e2e/x/manifest.json", "b"),
        "e2e/x/manifest.json"
    );
    assert_eq!(median_max(&[3.0, 1.0, 2.0]), (2.0, 3.0));
}
