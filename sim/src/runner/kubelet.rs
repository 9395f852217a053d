//! The kubelet: binds unassigned Pods to the sim node and runs their containers as Docker
//! containers (or host processes with [`super::Runtime::Process`]), reporting status through
//! the API like a real kubelet.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, ObjectReference, Pod, Probe, Secret,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::docker::{
    ContainerPlan, DockerContainer, Engine, ExitInfo, LABEL_POD_UID, LABEL_RUNNER, MountSpec,
    command_line, container_name, security_plan,
};
use super::env::{EnvSources, expand_command, referenced_objects, resolve_env};
use super::error::RunnerError;
use super::images::{ImageTable, Launch, ResolveError};
use super::ip::IpPool;
use super::mounts::MountMap;
use super::podstatus::{
    CState, ContainerRecord, PodRecord, exit_reason, final_phase, pod_status_patch,
    termination_message,
};
use super::probes::{ProbeKind, ProbeWorker, Verdict, started_and_ready, workers_for};
use super::process::{ContainerProcess, ProcessSpec, exit_code};
use super::quantity::{cpu_millis, memory_bytes};
use super::volumes::{apply_fs_group, materialize, plan_volume, volume_references};

/// Name of the one node the sim has.
pub const NODE_NAME: &str = "sim-node";
/// Host IP of the sim node.
pub const HOST_IP: &str = "127.0.0.1";
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
const FIELD_MANAGER: &str = "kube-sim-kubelet";

/// Shared kubelet configuration and state.
pub(crate) struct KubeletCtx {
    pub client: Client,
    pub events: super::events::Events,
    pub state_dir: PathBuf,
    pub pods_root: PathBuf,
    pub images: ImageTable,
    pub ips: Mutex<IpPool>,
    /// The API server as the `kubernetes` Service (`KUBERNETES_SERVICE_*`).
    pub api_server: Option<std::net::SocketAddr>,
    pub restart_backoff: Duration,
    /// The Docker Engine (Docker runtime); `None` runs host processes.
    pub engine: Option<Arc<Engine>>,
}

/// Why a pod's containers are being stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    /// `deletionTimestamp` set: stop with this grace, report, then remove the object.
    Graceful(Duration),
    /// The object is gone already.
    Gone,
}

/// How long a pod status update is retried while the API server is unreachable.
const STATUS_RETRY_FOR: Duration = Duration::from_secs(600);

/// Whether a failed status update is worth retrying: the server was not reached, or it
/// answered that it cannot serve now (5xx, 429). Other answers are final.
fn status_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

/// Runs the kubelet until the pod watch ends.
pub(crate) async fn run(ctx: Arc<KubeletCtx>) -> Result<(), RunnerError> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Stop>>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    // UIDs listed since the watch (re)started: pods we run that are not among them were deleted
    // while the watch was down.
    let mut relisted: Option<std::collections::HashSet<String>> = None;
    loop {
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                }
            }
            event = stream.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        warn!(error = %e, "pod watch error");
                        continue;
                    }
                };
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(seen) = relisted.as_mut() {
                            seen.insert(uid.clone());
                        }
                        if let Some(tx) = workers.get(&uid) {
                            if pod.metadata.deletion_timestamp.is_some() {
                                let grace = grace_period(&pod);
                                tx.send_if_modified(|s| {
                                    if s.is_none() { *s = Some(Stop::Graceful(grace)); true } else { false }
                                });
                            }
                            continue;
                        }
                        if !should_run(&pod) {
                            continue;
                        }
                        let (tx, rx) = watch::channel(None);
                        workers.insert(uid.clone(), tx);
                        let ctx = ctx.clone();
                        tasks.spawn(async move {
                            PodWorker::new(ctx, pod, rx).run().await;
                            uid
                        });
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            tx.send_if_modified(|s| {
                                if s != &Some(Stop::Gone) { *s = Some(Stop::Gone); true } else { false }
                            });
                        }
                    }
                    watcher::Event::Init => relisted = Some(Default::default()),
                    watcher::Event::InitDone => {
                        let seen = relisted.take().unwrap_or_default();
                        for (uid, tx) in &workers {
                            if !seen.contains(uid) {
                                tx.send_if_modified(|s| {
                                    if s != &Some(Stop::Gone) { *s = Some(Stop::Gone); true } else { false }
                                });
                            }
                        }
                    }
                }
            }
        }
    }
}

fn should_run(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") || pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        None | Some("") => true,
        // A pod of ours that has no container state yet (bound, runner restarted before start).
        Some(NODE_NAME) => pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_none(),
        Some(_) => false,
    }
}

fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Which container a process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Init(usize),
    Main(usize),
}

/// A container process ended.
#[derive(Debug)]
struct Exit {
    key: Key,
    run: u32,
    exit_code: i32,
    signal: Option<i32>,
    /// Killed by the OOM killer (memory limit).
    oom_killed: bool,
    /// The runtime could not start it (reason `StartError`, exit code 128).
    start_error: Option<String>,
}

enum Event {
    Exit(Exit),
    Stop(Stop),
    Deadline,
    Tick,
}

/// Outcome of a step that may be interrupted.
enum Flow {
    Continue,
    Interrupted(Interrupt),
}

#[derive(Debug, Clone, Copy)]
enum Interrupt {
    Stop(Stop),
    Deadline,
    /// A regular init container failed under `restartPolicy: Never`.
    InitFailed,
}

struct RunningContainer {
    stop: oneshot::Sender<Duration>,
    run: u32,
    started_at: Timestamp,
    term_file: PathBuf,
    log_path: PathBuf,
    mounts: MountMap,
    /// The Docker container's name (Docker runtime).
    docker: Option<String>,
}

/// A started container, whichever the runtime.
enum Handle {
    Process(ContainerProcess),
    Docker(DockerContainer),
}

/// What [`PodWorker::launch`] started.
struct Launched {
    handle: Handle,
    log_path: PathBuf,
    mounts: MountMap,
    docker: Option<String>,
}

struct PodWorker {
    ctx: Arc<KubeletCtx>,
    api: Api<Pod>,
    pod: Pod,
    name: String,
    namespace: String,
    record: PodRecord,
    pod_dir: PathBuf,
    log_dir: PathBuf,
    volumes: BTreeMap<String, PathBuf>,
    stop_rx: watch::Receiver<Option<Stop>>,
    deadline: Option<tokio::time::Instant>,
    exit_tx: mpsc::UnboundedSender<Exit>,
    exit_rx: mpsc::UnboundedReceiver<Exit>,
    running: HashMap<Key, RunningContainer>,
    runs: u32,
    tasks: JoinSet<()>,
    ip: Option<Ipv4Addr>,
    /// Volumes the kubelet forces read-only (secret, configMap, downwardAPI, projected).
    read_only_volumes: std::collections::BTreeSet<String>,
    /// Memory-backed emptyDirs as Docker volumes: pod volume name → Docker volume name.
    docker_volumes: BTreeMap<String, String>,
    /// Docker containers created for this pod (removed with the pod).
    docker_containers: Vec<String>,
    /// Memory-backed emptyDirs (Docker runtime): host directories with a tmpfs mounted on
    /// them for the pod's lifetime, shared by its containers as Kubernetes shares them.
    tmpfs_mounts: Vec<PathBuf>,
    /// Startup, readiness and liveness probe workers of the running main containers.
    probes: HashMap<Key, Vec<ProbeWorker>>,
}

/// Mounts a tmpfs of at most `size` bytes on `dir` (a memory-backed emptyDir). Needs root; a
/// runner without it keeps the plain directory (memory is then not the medium and the size
/// is not enforced) and says so.
fn mount_tmpfs(dir: &Path, size: Option<u64>) -> bool {
    let mut opts = String::from("mode=1777");
    if let Some(s) = size {
        opts.push_str(&format!(",size={s}"));
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        warn!(dir = %dir.display(), "kubelet: cannot mount a tmpfs (not root?): the memory-backed emptyDir is a plain directory");
    }
    ok
}

fn unmount_all(dirs: &mut Vec<PathBuf>) {
    for dir in dirs.drain(..) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for PodWorker {
    fn drop(&mut self) {
        // The runner stopped while this pod ran: remove its containers now (blocking; the
        // async path in `run` has emptied these lists when the pod ended normally).
        if let Some(engine) = &self.ctx.engine
            && (!self.docker_containers.is_empty() || !self.docker_volumes.is_empty())
        {
            let volumes: Vec<String> = self.docker_volumes.values().cloned().collect();
            engine.remove_blocking(&self.docker_containers, &volumes);
        }
        unmount_all(&mut self.tmpfs_mounts);
    }
}

impl PodWorker {
    fn new(ctx: Arc<KubeletCtx>, pod: Pod, stop_rx: watch::Receiver<Option<Stop>>) -> Self {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                ContainerRecord::new(
                    &c.name,
                    c.image.as_deref().unwrap_or(""),
                    "PodInitializing",
                    is_sidecar(c),
                )
            })
            .collect();
        let main_reason = if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let main = spec
            .containers
            .iter()
            .map(|c| {
                ContainerRecord::new(
                    &c.name,
                    c.image.as_deref().unwrap_or(""),
                    main_reason,
                    false,
                )
            })
            .collect();
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        PodWorker {
            api: Api::namespaced(ctx.client.clone(), &namespace),
            pod_dir: ctx.pods_root.join(&uid),
            log_dir: ctx.state_dir.join("logs").join(&namespace).join(&name),
            ctx,
            record: PodRecord {
                uid,
                phase: "Pending".into(),
                reason: None,
                message: None,
                pod_ip: None,
                host_ip: HOST_IP.into(),
                start_time: Timestamp::now(),
                init,
                main,
                conditions: Vec::new(),
            },
            pod,
            name,
            namespace,
            volumes: BTreeMap::new(),
            stop_rx,
            deadline: None,
            exit_tx,
            exit_rx,
            running: HashMap::new(),
            runs: 0,
            tasks: JoinSet::new(),
            ip: None,
            read_only_volumes: Default::default(),
            docker_volumes: BTreeMap::new(),
            tmpfs_mounts: Vec::new(),
            docker_containers: Vec::new(),
            probes: HashMap::new(),
        }
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn restart_policy(&self) -> String {
        self.spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into())
    }

    async fn run(mut self) {
        if !self.bind().await {
            return;
        }
        let ip = self
            .ctx
            .ips
            .lock()
            .map(|mut p| p.allocate())
            .unwrap_or(None);
        self.ip = ip;
        self.record.pod_ip = ip.map(|i| i.to_string());
        self.record.start_time = Timestamp::now();
        if let Some(secs) = self.spec().active_deadline_seconds {
            self.deadline =
                Some(tokio::time::Instant::now() + Duration::from_secs(secs.max(0) as u64));
        }
        self.sync_pod_object();
        info!(pod = %self.name, namespace = %self.namespace, ip = ?ip, "kubelet: starting pod");
        self.event(
            false,
            "Scheduled",
            "Binding",
            format!(
                "Successfully assigned {}/{} to {NODE_NAME}",
                self.namespace, self.name
            ),
        )
        .await;
        if let Err(e) = self.make_dirs() {
            warn!(pod = %self.name, error = %e, "kubelet: cannot create pod directories");
        }
        self.push_status().await;

        let outcome = self.run_containers().await;
        match outcome {
            Flow::Continue => {}
            Flow::Interrupted(i) => self.terminate(i).await,
        }
        self.release_ip();
        // Keep the pod's files until the object goes away, then finish deletion.
        let stop = *self.stop_rx.borrow();
        let stop = match stop {
            Some(s) => s,
            None => loop {
                if self.stop_rx.changed().await.is_err() {
                    break Stop::Gone;
                }
                if let Some(s) = *self.stop_rx.borrow() {
                    break s;
                }
            },
        };
        if let Stop::Graceful(_) = stop {
            self.finalize_deletion().await;
        }
        self.remove_docker_objects().await;
        unmount_all(&mut self.tmpfs_mounts);
        let _ = std::fs::remove_dir_all(&self.pod_dir);
    }

    /// Removes the pod's Docker containers and volumes (Docker runtime).
    async fn remove_docker_objects(&mut self) {
        let Some(engine) = self.ctx.engine.clone() else {
            return;
        };
        let containers = std::mem::take(&mut self.docker_containers);
        let volumes: Vec<String> = std::mem::take(&mut self.docker_volumes)
            .into_values()
            .collect();
        engine.remove_containers(&containers).await;
        engine.remove_volumes(&volumes).await;
    }

    async fn bind(&mut self) -> bool {
        let bound = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if !bound {
            let binding = Binding {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    uid: self.pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(NODE_NAME.into()),
                    ..Default::default()
                },
            };
            let res: Result<serde_json::Value, _> = self
                .api
                .create_subresource("binding", &self.name, &PostParams::default(), &binding)
                .await;
            if let Err(e) = res {
                // No binding subresource on this server: set spec.nodeName instead.
                debug!(error = %e, "pods/binding failed, patching spec.nodeName");
                let patch = serde_json::json!({"spec": {"nodeName": NODE_NAME}});
                if let Err(e) = self
                    .api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    match e {
                        kube::Error::Api(s) if s.code == 404 => return false,
                        e => {
                            // Neither pods/binding nor a nodeName patch is accepted: run the
                            // pod unbound (spec.nodeName stays empty in the API).
                            warn!(pod = %self.name, error = %e, "kubelet: cannot bind pod, running it unbound");
                        }
                    }
                }
            }
        }
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.node_name = Some(NODE_NAME.into());
        }
        true
    }

    /// Publishes an event about this pod.
    async fn event(&self, warning: bool, reason: &str, action: &str, note: String) {
        let regarding = self.pod.object_ref(&());
        self.ctx
            .events
            .publish(&regarding, warning, reason, action, note)
            .await;
    }

    fn make_dirs(&self) -> std::io::Result<()> {
        for (dir, mode) in [
            (self.pod_dir.clone(), 0o755),
            (self.pod_dir.join("root"), 0o755),
            (self.pod_dir.join("home"), 0o755),
            (self.pod_dir.join("tmp"), 0o1777),
            (self.pod_dir.join("volumes"), 0o755),
            (self.pod_dir.join("term"), 0o755),
        ] {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::create_dir_all(&self.log_dir)?;
        Ok(())
    }

    fn release_ip(&mut self) {
        if let Some(ip) = self.ip.take()
            && let Ok(mut pool) = self.ctx.ips.lock()
        {
            pool.release(ip);
        }
    }

    /// Mirrors the record into the local pod object, so fieldRefs see podIP etc.
    fn sync_pod_object(&mut self) {
        self.record.refresh_conditions(Timestamp::now());
        self.pod.status = Some(self.record.to_status());
    }

    async fn push_status(&mut self) {
        self.sync_pod_object();
        let patch = pod_status_patch(self.pod.status.as_ref().expect("status set"));
        let pp = PatchParams::apply(FIELD_MANAGER);
        let pp = PatchParams {
            field_manager: pp.field_manager,
            ..PatchParams::default()
        };
        // Like the kubelet's status manager, keep trying while the API server cannot be
        // reached or answers 5xx/429 (it may be restarting): a pod's final status must not be
        // lost, or its Job would never finish. A refusal (4xx: the pod is gone) ends it.
        let mut delay = Duration::from_millis(200);
        let give_up = tokio::time::Instant::now() + STATUS_RETRY_FOR;
        loop {
            match self
                .api
                .patch_status(&self.name, &pp, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) if status_retryable(&e) && tokio::time::Instant::now() < give_up => {
                    debug!(pod = %self.name, error = %e, "kubelet: status update failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    debug!(pod = %self.name, error = %e, "kubelet: status update failed");
                    return;
                }
            }
        }
    }

    async fn finalize_deletion(&mut self) {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = self.api.delete(&self.name, &dp).await {
            debug!(pod = %self.name, error = %e, "kubelet: final delete failed");
        }
    }

    /// Waits for the next event; `timer` adds a `Tick` after that long. Probes of running
    /// containers that fall due meanwhile are run (and their results reported) on the way.
    async fn next_event(&mut self, timer: Option<Duration>) -> Event {
        let until = timer.map(|t| tokio::time::Instant::now() + t);
        loop {
            if let Some(stop) = *self.stop_rx.borrow_and_update() {
                return Event::Stop(stop);
            }
            let deadline = self.deadline;
            let probe_at = self.next_probe_due();
            let event = tokio::select! {
                Some(exit) = self.exit_rx.recv() => Some(Event::Exit(exit)),
                changed = self.stop_rx.changed() => Some(match (changed, *self.stop_rx.borrow()) {
                    (Err(_), _) => Event::Stop(Stop::Gone),
                    (Ok(()), Some(s)) => Event::Stop(s),
                    (Ok(()), None) => Event::Tick,
                }),
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => Some(Event::Deadline),
                _ = async { tokio::time::sleep_until(until.expect("guarded")).await }, if until.is_some() => Some(Event::Tick),
                _ = async { tokio::time::sleep_until(probe_at.expect("guarded")).await }, if probe_at.is_some() => None,
            };
            match event {
                Some(e) => return e,
                None => self.run_due_probes().await,
            }
        }
    }

    /// When the next probe of a running container is due.
    fn next_probe_due(&self) -> Option<tokio::time::Instant> {
        self.probes
            .iter()
            .filter(|(k, _)| self.running.contains_key(k))
            .flat_map(|(_, ws)| ws.iter().filter_map(ProbeWorker::due))
            .min()
    }

    /// Runs the probes that are due, applies their verdicts (ready/started, restart on a failed
    /// liveness or startup probe) and reports a changed status.
    async fn run_due_probes(&mut self) {
        let now = tokio::time::Instant::now();
        let mut keys: Vec<Key> = self.probes.keys().copied().collect();
        keys.sort_by_key(|k| match k {
            Key::Init(i) | Key::Main(i) => *i,
        });
        let mut changed = false;
        for key in keys {
            if !self.running.contains_key(&key) {
                continue;
            }
            let container = self.container(key);
            let count = self.probes.get(&key).map_or(0, Vec::len);
            for i in 0..count {
                let started = self.record_of(key).started;
                let Some(w) = self.probes.get_mut(&key).and_then(|ws| ws.get_mut(i)) else {
                    break;
                };
                if !w.tick(now, started) {
                    continue;
                }
                let (kind, probe) = (w.kind, w.probe.clone());
                let outcome = self.probe(key, &container, &probe).await;
                let Some(w) = self.probes.get_mut(&key).and_then(|ws| ws.get_mut(i)) else {
                    break;
                };
                let verdict = w.record(outcome.is_ok());
                if let Err(detail) = &outcome {
                    self.event(
                        true,
                        "Unhealthy",
                        "Probe",
                        format!("{} probe failed: {detail}", kind.label()),
                    )
                    .await;
                }
                match verdict {
                    Verdict::Unchanged => {}
                    Verdict::Changed(ok) => {
                        if kind == ProbeKind::Startup && ok {
                            // The kubelet runs readiness at once when startup passes.
                            for w in self.probes.get_mut(&key).into_iter().flatten() {
                                if w.kind == ProbeKind::Readiness {
                                    w.trigger(now);
                                }
                            }
                        }
                    }
                    Verdict::Restart => {
                        self.event(
                            false,
                            "Killing",
                            "Kill",
                            format!(
                                "Container {} failed {} probe, will be restarted",
                                container.name,
                                kind.label().to_lowercase()
                            ),
                        )
                        .await;
                        let grace = probe
                            .termination_grace_period_seconds
                            .map(|g| Duration::from_secs(g.max(0) as u64))
                            .unwrap_or_else(|| self.grace());
                        if let Some(rc) = self.running.get_mut(&key) {
                            let (tx, _) = oneshot::channel();
                            let stop = std::mem::replace(&mut rc.stop, tx);
                            let _ = stop.send(grace);
                        }
                    }
                }
            }
            if let Some(ws) = self.probes.get(&key) {
                let (started, ready) = started_and_ready(ws);
                let rec = self.record_of_mut(key);
                if rec.started != started || rec.ready != ready {
                    rec.started = started;
                    rec.ready = ready;
                    changed = true;
                }
            }
        }
        if changed {
            self.push_status().await;
        }
    }

    /// Sleeps while handling exits of sidecars; returns an interrupt if one happens.
    async fn pause(&mut self, d: Duration) -> Option<Interrupt> {
        let until = tokio::time::Instant::now() + d;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.next_event(Some(left)).await {
                Event::Tick => {}
                Event::Stop(s) => return Some(Interrupt::Stop(s)),
                Event::Deadline => return Some(Interrupt::Deadline),
                Event::Exit(exit) => {
                    if let Some(i) = self.on_background_exit(exit).await {
                        return Some(i);
                    }
                }
            }
        }
    }

    async fn run_containers(&mut self) -> Flow {
        if let Flow::Interrupted(i) = self.prepare_volumes().await {
            return Flow::Interrupted(i);
        }
        let spec = self.spec();
        let inits = spec.init_containers.clone().unwrap_or_default();
        for (i, c) in inits.iter().enumerate() {
            self.record.init[i].state = CState::waiting("ContainerCreating", None);
            let flow = if is_sidecar(c) {
                self.start_sidecar(i).await
            } else {
                self.run_init(i).await
            };
            if let Flow::Interrupted(i) = flow {
                return Flow::Interrupted(i);
            }
        }
        for rec in &mut self.record.main {
            rec.state = CState::waiting("ContainerCreating", None);
        }
        self.push_status().await;
        for i in 0..spec.containers.len() {
            if let Flow::Interrupted(int) = self.start(Key::Main(i)).await {
                return Flow::Interrupted(int);
            }
        }
        self.record.phase = "Running".into();
        self.push_status().await;
        // Wait for the main containers.
        loop {
            if self.record.main.iter().all(|c| c.state.is_terminated()) {
                break;
            }
            match self.next_event(None).await {
                Event::Tick => {}
                Event::Stop(s) => return Flow::Interrupted(Interrupt::Stop(s)),
                Event::Deadline => return Flow::Interrupted(Interrupt::Deadline),
                Event::Exit(exit) => {
                    if let Some(i) = self.on_background_exit(exit).await {
                        return Flow::Interrupted(i);
                    }
                }
            }
        }
        // All main containers are done: stop sidecars in reverse order, then report.
        self.stop_all(self.grace(), true).await;
        self.record.phase = final_phase(&self.record.main).into();
        self.push_status().await;
        info!(pod = %self.name, phase = %self.record.phase, "kubelet: pod finished");
        Flow::Continue
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.spec()
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64,
        )
    }

    /// Handles the exit of a running container outside of a step that waits for it
    /// (sidecars, main containers). Restarts per policy.
    async fn on_background_exit(&mut self, exit: Exit) -> Option<Interrupt> {
        let rc = self.running.get(&exit.key)?;
        if rc.run != exit.run {
            return None;
        }
        let rc = self.running.remove(&exit.key).expect("present");
        self.record_exit(exit.key, &exit, &rc);
        let restart = match exit.key {
            Key::Init(i) => self.record.init[i].sidecar,
            Key::Main(_) => match self.restart_policy().as_str() {
                "Always" => true,
                "OnFailure" => exit.exit_code != 0,
                _ => false,
            },
        };
        self.push_status().await;
        if restart {
            let restarts = self.record_of(exit.key).restart_count.max(0) as u32;
            let delay = self
                .ctx
                .restart_backoff
                .saturating_mul(1u32 << restarts.min(5));
            if let Some(i) = Box::pin(self.pause(delay.min(Duration::from_secs(300)))).await {
                return Some(i);
            }
            let rec = self.record_of_mut(exit.key);
            rec.restart_count += 1;
            if let Flow::Interrupted(i) = Box::pin(self.start(exit.key)).await {
                return Some(i);
            }
            self.push_status().await;
        }
        None
    }

    fn record_of(&self, key: Key) -> &ContainerRecord {
        match key {
            Key::Init(i) => &self.record.init[i],
            Key::Main(i) => &self.record.main[i],
        }
    }

    fn record_of_mut(&mut self, key: Key) -> &mut ContainerRecord {
        match key {
            Key::Init(i) => &mut self.record.init[i],
            Key::Main(i) => &mut self.record.main[i],
        }
    }

    fn container(&self, key: Key) -> Container {
        let spec = self.spec();
        match key {
            Key::Init(i) => spec.init_containers.unwrap_or_default()[i].clone(),
            Key::Main(i) => spec.containers[i].clone(),
        }
    }

    fn record_exit(&mut self, key: Key, exit: &Exit, rc: &RunningContainer) {
        let container = self.container(key);
        let file = std::fs::read(&rc.term_file).unwrap_or_default();
        let log = std::fs::read(&rc.log_path).unwrap_or_default();
        // The process wrote host paths where a container writes its own: show them back as
        // the container paths a real container would have reported.
        let message = termination_message(
            &file,
            container.termination_message_policy.as_deref(),
            exit.exit_code,
            &log,
        )
        .map(|m| rc.mounts.to_container(&m));
        let (reason, message) = match (&exit.start_error, exit.oom_killed) {
            (Some(err), _) => ("StartError", Some(err.clone())),
            (None, true) => ("OOMKilled", message),
            (None, false) => (exit_reason(exit.exit_code), message),
        };
        let rec = self.record_of_mut(key);
        let previous = std::mem::replace(
            &mut rec.state,
            CState::Terminated {
                exit_code: exit.exit_code,
                signal: exit.signal,
                reason: reason.into(),
                message,
                started_at: Some(rc.started_at),
                finished_at: Timestamp::now(),
            },
        );
        if matches!(previous, CState::Terminated { .. }) {
            rec.last_state = Some(previous);
        }
        rec.ready = false;
        self.probes.remove(&key);
        debug!(pod = %self.name, container = %container.name, code = exit.exit_code, "kubelet: container exited");
    }

    async fn prepare_volumes(&mut self) -> Flow {
        let volumes = self.spec().volumes.unwrap_or_default();
        if volumes.is_empty() {
            return Flow::Continue;
        }
        let mut mount_warned = false;
        loop {
            let (secrets, cms) = volume_references(&volumes);
            let fetched = match self.fetch_sources(&secrets, &cms).await {
                Ok(mut sources) => self
                    .fetch_tokens(&volumes, &mut sources)
                    .await
                    .map(|()| sources),
                Err(e) => Err(e),
            };
            let result = match fetched {
                Ok(sources) => {
                    let mut out = Ok(BTreeMap::new());
                    for v in &volumes {
                        let plan = match plan_volume(&self.pod, v, &sources) {
                            Ok(p) => p,
                            Err(e) => {
                                out = Err(e.to_string());
                                break;
                            }
                        };
                        if v.secret.is_some()
                            || v.config_map.is_some()
                            || v.downward_api.is_some()
                            || v.projected.is_some()
                        {
                            self.read_only_volumes.insert(v.name.clone());
                        }
                        // A memory-backed emptyDir (Docker runtime): a host directory with a
                        // tmpfs on it, alive as long as the pod, shared by its containers.
                        let memory_size = match v.empty_dir.as_ref() {
                            Some(ed)
                                if self.ctx.engine.is_some()
                                    && ed.medium.as_deref() == Some("Memory") =>
                            {
                                match ed.size_limit.as_ref().map(|q| memory_bytes(&q.0)) {
                                    Some(Err(e)) => {
                                        out = Err(format!(
                                            "MountVolume.SetUp failed for volume \"{}\" : {e}",
                                            v.name
                                        ));
                                        break;
                                    }
                                    Some(Ok(bytes)) => Some(Some(bytes)),
                                    None => Some(None),
                                }
                            }
                            _ => None,
                        };
                        let fs_group = self
                            .spec()
                            .security_context
                            .and_then(|sc| sc.fs_group)
                            .filter(|_| v.host_path.is_none());
                        let read_only = self.read_only_volumes.contains(&v.name);
                        match materialize(
                            &plan,
                            &v.name,
                            &self.pod_dir.join("volumes"),
                            &self.ctx.state_dir,
                        )
                        .and_then(|dir| match fs_group {
                            Some(g) => apply_fs_group(&dir, g as u32, read_only).map(|()| dir),
                            None => Ok(dir),
                        }) {
                            Ok(dir) => {
                                if let Some(size) = memory_size
                                    && !self.tmpfs_mounts.contains(&dir)
                                    && mount_tmpfs(&dir, size)
                                {
                                    if let Some(g) = fs_group {
                                        let _ = apply_fs_group(&dir, g as u32, read_only);
                                    }
                                    self.tmpfs_mounts.push(dir.clone());
                                }
                                if let Ok(m) = out.as_mut() {
                                    m.insert(v.name.clone(), dir);
                                }
                            }
                            Err(e) => {
                                out = Err(format!(
                                    "MountVolume.SetUp failed for volume \"{}\" : {e}",
                                    v.name
                                ));
                                break;
                            }
                        }
                    }
                    out
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(dirs) => {
                    self.volumes = dirs;
                    return Flow::Continue;
                }
                Err(message) => {
                    debug!(pod = %self.name, %message, "kubelet: volumes not ready");
                    if !mount_warned {
                        mount_warned = true;
                        self.event(true, "FailedMount", "Mount", message.clone())
                            .await;
                    }
                    for rec in self
                        .record
                        .init
                        .iter_mut()
                        .chain(self.record.main.iter_mut())
                    {
                        rec.state = CState::waiting("ContainerCreating", Some(message.clone()));
                    }
                    self.record
                        .init
                        .iter_mut()
                        .for_each(|r| r.state = CState::waiting("PodInitializing", None));
                    if !self.record.init.is_empty() {
                        self.record.init[0].state =
                            CState::waiting("ContainerCreating", Some(message.clone()));
                    }
                    self.push_status().await;
                    if let Some(i) = self.pause(Duration::from_secs(1)).await {
                        return Flow::Interrupted(i);
                    }
                }
            }
        }
    }

    /// Requests, through the TokenRequest API, the ServiceAccount tokens the pod's
    /// `serviceAccountToken` projections need, bound to the pod (as the kubelet does).
    async fn fetch_tokens(
        &self,
        volumes: &[k8s_openapi::api::core::v1::Volume],
        sources: &mut EnvSources,
    ) -> Result<(), String> {
        use k8s_openapi::api::authentication::v1::{
            BoundObjectReference, TokenRequest, TokenRequestSpec,
        };
        use k8s_openapi::api::core::v1::ServiceAccount;
        let needs = super::serviceaccount::token_needs(volumes);
        if needs.is_empty() {
            return Ok(());
        }
        let sa = self
            .spec()
            .service_account_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for need in needs {
            let req = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: (!need.audience.is_empty()).then(|| vec![need.audience.clone()]),
                    expiration_seconds: Some(need.expiration_seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(self.name.clone()),
                        uid: self.pod.metadata.uid.clone(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let out: TokenRequest = api
                .create_subresource("token", &sa, &PostParams::default(), &req)
                .await
                .map_err(|e| {
                    let why = match e {
                        kube::Error::Api(s) => s.message,
                        other => other.to_string(),
                    };
                    format!("failed to fetch token: {why}")
                })?;
            let token = out.status.and_then(|s| s.token).unwrap_or_default();
            sources.service_account_tokens.insert(need.audience, token);
        }
        Ok(())
    }

    async fn fetch_sources(
        &self,
        secrets: &std::collections::BTreeSet<String>,
        cms: &std::collections::BTreeSet<String>,
    ) -> Result<EnvSources, String> {
        let mut sources = EnvSources::default();
        if let Some(addr) = self.ctx.api_server {
            sources.service_env =
                super::serviceaccount::service_env(&addr.ip().to_string(), addr.port());
        }
        let sapi: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let capi: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in secrets {
            match sapi.get_opt(name).await {
                Ok(Some(s)) => {
                    sources.secrets.insert(name.clone(), s);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot read secret \"{name}\": {e}")),
            }
        }
        for name in cms {
            match capi.get_opt(name).await {
                Ok(Some(c)) => {
                    sources.config_maps.insert(name.clone(), c);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot read configmap \"{name}\": {e}")),
            }
        }
        Ok(sources)
    }

    async fn run_init(&mut self, i: usize) -> Flow {
        loop {
            if let Flow::Interrupted(int) = self.start(Key::Init(i)).await {
                return Flow::Interrupted(int);
            }
            self.push_status().await;
            // Wait for this init container (sidecars started earlier may exit meanwhile).
            let code = loop {
                if let CState::Terminated { exit_code, .. } = self.record.init[i].state
                    && !self.running.contains_key(&Key::Init(i))
                {
                    break exit_code;
                }
                match self.next_event(None).await {
                    Event::Tick => {}
                    Event::Stop(s) => return Flow::Interrupted(Interrupt::Stop(s)),
                    Event::Deadline => return Flow::Interrupted(Interrupt::Deadline),
                    Event::Exit(exit) if exit.key == Key::Init(i) => {
                        if let Some(rc) = self.running.remove(&exit.key) {
                            self.record_exit(exit.key, &exit, &rc);
                        }
                    }
                    Event::Exit(exit) => {
                        if let Some(int) = self.on_background_exit(exit).await {
                            return Flow::Interrupted(int);
                        }
                    }
                }
            };
            self.push_status().await;
            if code == 0 {
                return Flow::Continue;
            }
            if self.restart_policy() == "Never" {
                return Flow::Interrupted(Interrupt::InitFailed);
            }
            let restarts = self.record.init[i].restart_count.max(0) as u32;
            let delay = self
                .ctx
                .restart_backoff
                .saturating_mul(1u32 << restarts.min(5));
            if let Some(int) = self.pause(delay).await {
                return Flow::Interrupted(int);
            }
            self.record.init[i].restart_count += 1;
        }
    }

    async fn start_sidecar(&mut self, i: usize) -> Flow {
        if let Flow::Interrupted(int) = self.start(Key::Init(i)).await {
            return Flow::Interrupted(int);
        }
        let container = self.container(Key::Init(i));
        if let Some(probe) = container.startup_probe.clone() {
            self.push_status().await;
            let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
            let threshold = probe.failure_threshold.unwrap_or(3).max(1);
            if let Some(int) = self
                .pause(Duration::from_secs(
                    probe.initial_delay_seconds.unwrap_or(0).max(0) as u64,
                ))
                .await
            {
                return Flow::Interrupted(int);
            }
            let mut failures = 0;
            loop {
                if !self.running.contains_key(&Key::Init(i)) {
                    // It exited (and was restarted or not) during the wait: probe again later.
                    failures = 0;
                } else if self.probe(Key::Init(i), &container, &probe).await.is_ok() {
                    break;
                } else {
                    failures += 1;
                    self.event(
                        true,
                        "Unhealthy",
                        "Probe",
                        format!("Startup probe failed for container {}", container.name),
                    )
                    .await;
                    if failures >= threshold {
                        // Startup probe failed: kill it; the exit restarts it.
                        if let Some(rc) = self.running.get_mut(&Key::Init(i)) {
                            let (tx, _) = oneshot::channel();
                            let stop = std::mem::replace(&mut rc.stop, tx);
                            let _ = stop.send(self.grace());
                        }
                        failures = 0;
                    }
                }
                if let Some(int) = self.pause(period).await {
                    return Flow::Interrupted(int);
                }
            }
        }
        let rec = &mut self.record.init[i];
        rec.started = true;
        rec.ready = true;
        self.push_status().await;
        Flow::Continue
    }

    /// Runs one probe; the error is the kubelet's failure detail (for the `Unhealthy` event).
    async fn probe(
        &mut self,
        key: Key,
        container: &Container,
        probe: &Probe,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let ip = self.record.pod_ip.clone().unwrap_or_else(|| HOST_IP.into());
        let port_of =
            |p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| -> Result<u16, String> {
                use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                match p {
                    IntOrString::Int(n) => {
                        u16::try_from(*n).map_err(|_| format!("invalid port number: {n}"))
                    }
                    IntOrString::String(name) => container
                        .ports
                        .iter()
                        .flatten()
                        .find(|cp| cp.name.as_deref() == Some(name))
                        .and_then(|cp| u16::try_from(cp.container_port).ok())
                        .ok_or_else(|| format!("couldn't find port {name} in container")),
                }
            };
        if let Some(tcp) = &probe.tcp_socket {
            let host = tcp.host.clone().unwrap_or(ip);
            let port = port_of(&tcp.port)?;
            return match tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "dial tcp {host}:{port}: connect: {}",
                    go_net_error(&e)
                )),
                Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
            };
        }
        if let Some(http) = &probe.http_get {
            let host = http.host.clone().unwrap_or(ip);
            let port = port_of(&http.port)?;
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            return tokio::time::timeout(timeout, http_probe(&host, port, &path))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    ))
                });
        }
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let failed = || format!("command {command:?} failed");
            if let Some(engine) = self.ctx.engine.clone() {
                let Some(name) = self.running.get(&key).and_then(|r| r.docker.clone()) else {
                    return Err(failed());
                };
                return if engine.exec(&name, &command, timeout).await {
                    Ok(())
                } else {
                    Err(failed())
                };
            }
            let Ok((spec, stop_signal)) =
                self.process_spec(container, Some(&command), "probe").await
            else {
                return Err(failed());
            };
            let Ok(mut proc) = ContainerProcess::spawn(&spec, stop_signal) else {
                return Err(failed());
            };
            return match tokio::time::timeout(timeout, proc.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(_) => Err(failed()),
                Err(_) => {
                    let _ = proc.stop(Duration::ZERO).await;
                    Err(format!("command {command:?} timed out"))
                }
            };
        }
        Ok(())
    }

    /// Builds what to run for a container. `override_command` replaces command+args (exec
    /// probes). Errors are container waiting/terminated states.
    async fn process_spec(
        &mut self,
        container: &Container,
        override_command: Option<&[String]>,
        log_name: &str,
    ) -> Result<(ProcessSpec, i32), CState> {
        let (secrets, cms) = referenced_objects(container);
        let sources = self
            .fetch_sources(&secrets, &cms)
            .await
            .map_err(|m| CState::waiting("CreateContainerConfigError", Some(m)))?;
        let env = resolve_env(&self.pod, container, &sources)
            .map_err(|e| CState::waiting("CreateContainerConfigError", Some(e.to_string())))?;

        // Mounts: volume mounts and the termination-message file.
        let mut mounts = MountMap::new();
        let term_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into());
        let term_file = self.term_file(&container.name);
        mounts.insert(&term_path, term_file);
        for m in container.volume_mounts.iter().flatten() {
            let Some(dir) = self.volumes.get(&m.name) else {
                return Err(CState::waiting(
                    "CreateContainerConfigError",
                    Some(format!("volume \"{}\" not found", m.name)),
                ));
            };
            let sub = m
                .sub_path
                .clone()
                .or_else(|| {
                    m.sub_path_expr
                        .as_ref()
                        .map(|e| expand_command(std::slice::from_ref(e), &env).remove(0))
                })
                .unwrap_or_default();
            let host = if sub.is_empty() {
                dir.clone()
            } else {
                dir.join(sub)
            };
            if !host.exists() {
                let _ = std::fs::create_dir_all(&host);
            }
            mounts.insert(&m.mount_path, host);
        }

        let image = container.image.clone().unwrap_or_default();
        let (command, args) = match override_command {
            Some(cmd) => (expand_command(cmd, &env), Vec::new()),
            None => (
                expand_command(container.command.as_deref().unwrap_or_default(), &env),
                expand_command(container.args.as_deref().unwrap_or_default(), &env),
            ),
        };
        let command: Vec<String> = command.iter().map(|s| mounts.rewrite(s)).collect();
        let args: Vec<String> = args.iter().map(|s| mounts.rewrite(s)).collect();
        let launch: Launch = match self.ctx.images.resolve(&image, &command, &args) {
            Ok(l) => l,
            Err(e @ ResolveError::UnknownImage { .. }) => {
                return Err(CState::waiting("ErrImagePull", Some(e.to_string())));
            }
            Err(e) => {
                let now = Timestamp::now();
                return Err(CState::Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(e.to_string()),
                    started_at: Some(now),
                    finished_at: now,
                });
            }
        };

        let mut full: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| {
            if let Some(slot) = full.iter_mut().find(|(n, _)| n == k) {
                slot.1 = v;
            } else {
                full.push((k.to_string(), v));
            }
        };
        set(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        );
        set("HOSTNAME", self.name.clone());
        set("HOME", self.pod_dir.join("home").display().to_string());
        set("TMPDIR", self.pod_dir.join("tmp").display().to_string());
        for name in &self.ctx.images.pass_env {
            if let Ok(v) = std::env::var(name) {
                set(name, v);
            }
        }
        // A host process cannot see the token volume at its container path: it gets a
        // kubeconfig using the volume's files (same ServiceAccount, same CA) instead.
        if let (Some(addr), Some(dir)) = (
            self.ctx.api_server,
            mounts.host_path(super::serviceaccount::TOKEN_MOUNT_PATH),
        ) {
            let path = self.pod_dir.join(format!("{}.kubeconfig", container.name));
            let text = super::serviceaccount::incluster_kubeconfig(
                &format!("https://{addr}"),
                &dir,
                &self.namespace,
            );
            if std::fs::write(&path, text).is_ok() {
                set("KUBECONFIG", path.display().to_string());
            }
        }
        for (k, v) in &launch.image_env {
            set(k, mounts.rewrite(v));
        }
        for (k, v) in &env {
            set(k, mounts.rewrite(v));
        }
        set("SIM_POD_IP", self.record.pod_ip.clone().unwrap_or_default());
        set("SIM_POD_DIR", self.pod_dir.display().to_string());
        set(
            "SIM_TERMINATION_MESSAGE_PATH",
            self.term_file(&container.name).display().to_string(),
        );
        for (k, v) in mounts.env_vars() {
            set(&k, v);
        }

        let cwd = match container.working_dir.as_deref() {
            Some(wd) if !wd.is_empty() => mounts
                .host_path(wd)
                .unwrap_or_else(|| self.pod_dir.join("root").join(wd.trim_start_matches('/'))),
            _ => self.pod_dir.join("root"),
        };
        let _ = std::fs::create_dir_all(&cwd);
        let log_path = if log_name == "probe" {
            self.pod_dir.join(format!("probe-{}.log", container.name))
        } else {
            self.log_dir.join(format!("{}.log", container.name))
        };
        Ok((
            ProcessSpec {
                argv: launch.argv,
                env: full,
                cwd,
                log_path,
                mounts,
            },
            launch.stop_signal,
        ))
    }

    fn term_file(&self, container: &str) -> PathBuf {
        self.pod_dir.join("term").join(container)
    }

    /// Starts one container; keeps retrying while its config or image is not available.
    async fn start(&mut self, key: Key) -> Flow {
        let container = self.container(key);
        let mut attempts = 0u32;
        loop {
            match self.launch(key, &container).await {
                Ok(launched) => {
                    let image = container.image.clone().unwrap_or_default();
                    self.event(
                        false,
                        "Pulled",
                        "Pull",
                        format!("Container image \"{image}\" already present on machine"),
                    )
                    .await;
                    self.event(
                        false,
                        "Created",
                        "Create",
                        format!("Created container: {}", container.name),
                    )
                    .await;
                    self.event(
                        false,
                        "Started",
                        "Start",
                        format!("Started container {}", container.name),
                    )
                    .await;
                    let started_at = Timestamp::now();
                    self.runs += 1;
                    let run = self.runs;
                    let (stop_tx, stop_rx) = oneshot::channel();
                    let tx = self.exit_tx.clone();
                    self.tasks
                        .spawn(supervise(launched.handle, stop_rx, key, run, tx));
                    self.running.insert(
                        key,
                        RunningContainer {
                            stop: stop_tx,
                            run,
                            started_at,
                            term_file: self.term_file(&container.name),
                            log_path: launched.log_path,
                            mounts: launched.mounts,
                            docker: launched.docker,
                        },
                    );
                    let (started, ready) = match key {
                        // Sidecars: the startup probe is run by `start_sidecar`.
                        Key::Init(_) => {
                            let started = container.startup_probe.is_none();
                            (started, started)
                        }
                        Key::Main(_) => {
                            let workers = workers_for(
                                container.startup_probe.as_ref(),
                                container.readiness_probe.as_ref(),
                                container.liveness_probe.as_ref(),
                                tokio::time::Instant::now(),
                            );
                            let sr = started_and_ready(&workers);
                            self.probes.insert(key, workers);
                            sr
                        }
                    };
                    let rec = self.record_of_mut(key);
                    let previous =
                        std::mem::replace(&mut rec.state, CState::Running { started_at });
                    if matches!(previous, CState::Terminated { .. }) {
                        rec.last_state = Some(previous);
                    }
                    rec.started = started;
                    rec.ready = ready;
                    return Flow::Continue;
                }
                Err(state @ CState::Terminated { .. }) => {
                    self.record_of_mut(key).state = state;
                    return Flow::Continue;
                }
                Err(CState::Waiting { reason, message }) => {
                    attempts += 1;
                    let image = container.image.clone().unwrap_or_default();
                    let detail = message.clone().unwrap_or_default();
                    match (reason.as_str(), attempts) {
                        ("ErrImagePull", 1) => {
                            self.event(
                                true,
                                "Failed",
                                "Pull",
                                format!("Failed to pull image \"{image}\": {detail}"),
                            )
                            .await;
                        }
                        ("ErrImagePull", 2) => {
                            self.event(
                                true,
                                "BackOff",
                                "Pull",
                                format!("Back-off pulling image \"{image}\""),
                            )
                            .await;
                        }
                        (_, 1) => {
                            self.event(true, "Failed", "Create", format!("Error: {detail}"))
                                .await
                        }
                        _ => {}
                    }
                    let reason = if reason == "ErrImagePull" && attempts > 1 {
                        "ImagePullBackOff".to_string()
                    } else {
                        reason
                    };
                    let message = if reason == "ImagePullBackOff" {
                        Some(format!(
                            "Back-off pulling image \"{}\": {}",
                            container.image.clone().unwrap_or_default(),
                            message.unwrap_or_default()
                        ))
                    } else {
                        message
                    };
                    self.record_of_mut(key).state = CState::Waiting { reason, message };
                    self.push_status().await;
                    if let Some(i) = self.pause(Duration::from_secs(1)).await {
                        return Flow::Interrupted(i);
                    }
                }
                Err(other) => {
                    self.record_of_mut(key).state = other;
                    return Flow::Continue;
                }
            }
        }
    }

    /// A new run of a container: a fresh termination-message file, the previous log moved to
    /// `{container}.previous.log`.
    fn fresh_run_files(&self, key: Key, container: &Container, log_path: &Path) {
        let term_file = self.term_file(&container.name);
        let _ = std::fs::write(&term_file, b"");
        let _ = std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666));
        if self.record_of(key).restart_count > 0
            || matches!(self.record_of(key).state, CState::Terminated { .. })
        {
            let prev = self
                .log_dir
                .join(format!("{}.previous.log", container.name));
            let _ = std::fs::rename(log_path, prev);
        }
    }

    /// Starts a container with the configured runtime. Errors are waiting/terminated states.
    async fn launch(&mut self, key: Key, container: &Container) -> Result<Launched, CState> {
        if let Some(engine) = self.ctx.engine.clone() {
            return self.launch_docker(&engine, key, container).await;
        }
        let (spec, stop_signal) = self.process_spec(container, None, "main").await?;
        self.fresh_run_files(key, container, &spec.log_path);
        match ContainerProcess::spawn(&spec, stop_signal) {
            Ok(proc) => Ok(Launched {
                handle: Handle::Process(proc),
                log_path: spec.log_path,
                mounts: spec.mounts,
                docker: None,
            }),
            Err(e) => {
                let now = Timestamp::now();
                let _ = std::fs::write(
                    &spec.log_path,
                    format!("kube-sim: cannot start {:?}: {e}\n", spec.argv.first()),
                );
                Err(CState::Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(format!("failed to start container process: {e}")),
                    started_at: Some(now),
                    finished_at: now,
                })
            }
        }
    }

    async fn launch_docker(
        &mut self,
        engine: &Arc<Engine>,
        key: Key,
        container: &Container,
    ) -> Result<Launched, CState> {
        let attempt = self.record_of(key).restart_count.max(0) as u32;
        let plan = self.docker_plan(engine, container, attempt).await?;
        let log_path = self.log_dir.join(format!("{}.log", container.name));
        self.fresh_run_files(key, container, &log_path);
        engine
            .create(&plan)
            .await
            .map_err(|e| CState::waiting("CreateContainerError", Some(e)))?;
        if !self.docker_containers.contains(&plan.name) {
            self.docker_containers.push(plan.name.clone());
        }
        match engine.start_attached(&plan.name, &log_path) {
            Ok(dc) => Ok(Launched {
                handle: Handle::Docker(dc),
                log_path,
                mounts: MountMap::new(),
                docker: Some(plan.name),
            }),
            Err(e) => {
                let now = Timestamp::now();
                Err(CState::Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(format!("cannot run the docker CLI: {e}")),
                    started_at: Some(now),
                    finished_at: now,
                })
            }
        }
    }

    /// What `docker create` is told for `container` (Docker runtime).
    async fn docker_plan(
        &mut self,
        engine: &Engine,
        container: &Container,
        attempt: u32,
    ) -> Result<ContainerPlan, CState> {
        let config_error = |m: String| CState::waiting("CreateContainerConfigError", Some(m));
        let (secrets, cms) = referenced_objects(container);
        let sources = self
            .fetch_sources(&secrets, &cms)
            .await
            .map_err(config_error)?;
        let env =
            resolve_env(&self.pod, container, &sources).map_err(|e| config_error(e.to_string()))?;
        let image = container.image.clone().unwrap_or_default();
        let image_config = match engine.image_config(&image).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(CState::waiting(
                    "ErrImagePull",
                    Some(format!(
                        "failed to pull image \"{image}\": kube-sim never pulls (no registry) and the image is not present on the node; build or import it (docker images)"
                    )),
                ));
            }
            Err(e) => return Err(CState::waiting("ErrImagePull", Some(e))),
        };
        let security =
            security_plan(&self.pod, container, &image_config.user).map_err(config_error)?;

        let mut mounts = Vec::new();
        let term_path = container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.into());
        let term_file = self.term_file(&container.name);
        if !term_file.exists() {
            let _ = std::fs::write(&term_file, b"");
            let _ = std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666));
        }
        mounts.push(MountSpec::Bind {
            source: term_file,
            target: term_path,
            read_only: false,
        });
        let full_env: Vec<(String, String)> = env.clone();
        for m in container.volume_mounts.iter().flatten() {
            let read_only = m.read_only == Some(true) || self.read_only_volumes.contains(&m.name);
            let sub = m
                .sub_path
                .clone()
                .or_else(|| {
                    m.sub_path_expr
                        .as_ref()
                        .map(|e| expand_command(std::slice::from_ref(e), &env).remove(0))
                })
                .unwrap_or_default();
            if let Some(vol) = self.docker_volumes.get(&m.name) {
                if !sub.is_empty() {
                    return Err(config_error(format!(
                        "subPath on the memory-backed emptyDir \"{}\" is not supported by kube-sim",
                        m.name
                    )));
                }
                mounts.push(MountSpec::Volume {
                    name: vol.clone(),
                    target: m.mount_path.clone(),
                    read_only,
                });
                continue;
            }
            let Some(dir) = self.volumes.get(&m.name) else {
                return Err(config_error(format!("volume \"{}\" not found", m.name)));
            };
            if sub.split('/').any(|c| c == "..") || sub.starts_with('/') {
                return Err(config_error(format!(
                    "subPath \"{sub}\" must be a relative path without \"..\""
                )));
            }
            let host = if sub.is_empty() {
                dir.clone()
            } else {
                dir.join(&sub)
            };
            if !host.exists() {
                let _ = std::fs::create_dir_all(&host);
                let _ = std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777));
            }
            mounts.push(MountSpec::Bind {
                source: host,
                target: m.mount_path.clone(),
                read_only,
            });
        }
        let (command, args) = command_line(
            &expand_command(container.command.as_deref().unwrap_or_default(), &env),
            &expand_command(container.args.as_deref().unwrap_or_default(), &env),
        );
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let memory = match limits.get("memory") {
            Some(q) => Some(memory_bytes(&q.0).map_err(|e| config_error(e.to_string()))?),
            None => None,
        };
        let cpu = match limits.get("cpu") {
            Some(q) => Some(cpu_millis(&q.0).map_err(|e| config_error(e.to_string()))?),
            None => None,
        };
        Ok(ContainerPlan {
            name: container_name(
                &container.name,
                &self.name,
                &self.namespace,
                &self.record.uid,
                attempt,
            ),
            image,
            labels: vec![
                (LABEL_POD_UID.into(), self.record.uid.clone()),
                (LABEL_RUNNER.into(), engine.runner_label().to_string()),
                ("io.kube-sim.pod".into(), self.name.clone()),
                ("io.kube-sim.namespace".into(), self.namespace.clone()),
                ("io.kube-sim.container".into(), container.name.clone()),
            ],
            hostname: self.name.clone(),
            entrypoint: command,
            args,
            env: full_env,
            working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
            mounts,
            security,
            memory_bytes: memory,
            cpu_millis: cpu,
        })
    }

    /// Stops running containers: main containers first (in parallel), then sidecars in reverse
    /// order, each with `grace`. Records their final states.
    async fn stop_all(&mut self, grace: Duration, sidecars_only: bool) {
        let mut order: Vec<Key> = Vec::new();
        if !sidecars_only {
            order.extend(
                self.running
                    .keys()
                    .filter(|k| matches!(k, Key::Main(_)))
                    .copied(),
            );
        }
        let mut inits: Vec<Key> = self
            .running
            .keys()
            .filter(|k| matches!(k, Key::Init(_)))
            .copied()
            .collect();
        inits.sort_by_key(|k| {
            std::cmp::Reverse(match k {
                Key::Init(i) | Key::Main(i) => *i,
            })
        });
        // Main containers all at once, then each sidecar after the previous one stopped.
        let mains = order.clone();
        self.stop_keys(&mains, grace).await;
        for k in inits {
            self.stop_keys(&[k], grace).await;
        }
    }

    async fn stop_keys(&mut self, keys: &[Key], grace: Duration) {
        let mut waiting: Vec<Key> = Vec::new();
        for k in keys {
            if self.running.contains_key(k) {
                let name = self.record_of(*k).name.clone();
                self.event(
                    false,
                    "Killing",
                    "Kill",
                    format!("Stopping container {name}"),
                )
                .await;
            }
            if let Some(rc) = self.running.get_mut(k) {
                let (tx, _) = oneshot::channel();
                let stop = std::mem::replace(&mut rc.stop, tx);
                let _ = stop.send(grace);
                waiting.push(*k);
            }
        }
        let hard_limit = tokio::time::Instant::now() + grace + Duration::from_secs(5);
        while !waiting.is_empty() {
            let exit = tokio::select! {
                e = self.exit_rx.recv() => e,
                _ = tokio::time::sleep_until(hard_limit) => None,
            };
            let Some(exit) = exit else { break };
            if let Some(rc) = self.running.get(&exit.key)
                && rc.run == exit.run
            {
                let rc = self.running.remove(&exit.key).expect("present");
                self.record_exit(exit.key, &exit, &rc);
                waiting.retain(|k| *k != exit.key);
            }
        }
    }

    /// Stops everything after an interruption and reports the final state.
    async fn terminate(&mut self, why: Interrupt) {
        let grace = match why {
            Interrupt::Stop(Stop::Graceful(g)) => g,
            Interrupt::Stop(Stop::Gone) => self.grace().min(Duration::from_secs(5)),
            Interrupt::Deadline | Interrupt::InitFailed => self.grace(),
        };
        self.stop_all(grace, false).await;
        // Containers that never ran stay waiting; the pod is over.
        match why {
            Interrupt::Deadline => {
                self.event(
                    false,
                    "DeadlineExceeded",
                    "Kill",
                    "Pod was active on the node longer than the specified deadline".into(),
                )
                .await;
                self.record.phase = "Failed".into();
                self.record.reason = Some("DeadlineExceeded".into());
                self.record.message =
                    Some("Pod was active on the node longer than the specified deadline".into());
            }
            Interrupt::InitFailed => {
                self.record.phase = "Failed".into();
            }
            Interrupt::Stop(_) => {
                let all_ok = self.record.main.iter().all(|c| c.state.succeeded());
                self.record.phase = if all_ok { "Succeeded" } else { "Failed" }.into();
            }
        }
        if !matches!(why, Interrupt::Stop(Stop::Gone)) {
            self.push_status().await;
        }
        info!(pod = %self.name, phase = %self.record.phase, reason = ?why, "kubelet: pod stopped");
    }
}

async fn supervise(
    handle: Handle,
    mut stop: oneshot::Receiver<Duration>,
    key: Key,
    run: u32,
    tx: mpsc::UnboundedSender<Exit>,
) {
    let info = match handle {
        Handle::Process(mut proc) => {
            let status = tokio::select! {
                s = proc.wait() => s,
                Ok(grace) = &mut stop => proc.stop(grace).await,
            };
            let (exit_code, signal) = match status {
                Ok(s) => exit_code(s),
                Err(_) => (255, None),
            };
            ExitInfo {
                exit_code,
                signal,
                oom_killed: false,
                start_error: None,
            }
        }
        Handle::Docker(mut dc) => {
            tokio::select! {
                i = dc.wait() => i,
                Ok(grace) = &mut stop => dc.stop(grace).await,
            }
        }
    };
    let _ = tx.send(Exit {
        key,
        run,
        // The kubelet reports a container that never started with exit code 128.
        exit_code: if info.start_error.is_some() {
            128
        } else {
            info.exit_code
        },
        signal: info.signal,
        oom_killed: info.oom_killed,
        start_error: info.start_error,
    });
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// A network error as Go's net package words it (`connection refused`, ...).
fn go_net_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        _ => e.to_string(),
    }
}

async fn http_probe(host: &str, port: u16, path: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = format!("http://{host}:{port}{path}");
    let mut s = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| {
            format!(
                "Get \"{url}\": dial tcp {host}:{port}: connect: {}",
                go_net_error(&e)
            )
        })?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kube-probe/1.32\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut buf = [0u8; 64];
    let n = s
        .read(&mut buf)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let line = String::from_utf8_lossy(&buf[..n]);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(c) if (200..400).contains(&c) => Ok(()),
        Some(c) => Err(format!("HTTP probe failed with statuscode: {c}")),
        None => Err(format!("Get \"{url}\": malformed HTTP response")),
    }
}

/// Makes `dir` traversable by other users (adds `o+x`), so that database processes running as
/// `postgres`/`mysql` can reach their data under the pod dirs. Parents are left alone.
pub(crate) fn make_traversable(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    Ok(())
}
