//! The Job runner: plays the Kubernetes Job, ReplicaSet and Deployment controllers and the
//! kubelet for the sim.
//!
//! It talks to the API server only over HTTP through a [`kube::Client`], like the real
//! controllers do, so it works against any API server. See `sim/README-runner.md` for how
//! containers map to host processes.
//!
//! Pure planning lives in [`jobplan`] (Job controller decisions), [`rsplan`] and [`deployplan`]
//! (ReplicaSet and Deployment controllers), [`probes`] (probe workers), [`env`] and [`expand`]
//! (container environment), [`mounts`] and [`volumes`] (paths), [`podstatus`] (status
//! rendering), [`images`] (image table); the I/O loops are in `jobcontroller`, `replicaset`,
//! `deployment` and `kubelet`.

mod deployment;
pub mod deployplan;
pub mod docker;
pub mod env;
pub mod error;
mod events;
pub mod expand;
pub mod images;
pub mod ip;
mod jobcontroller;
pub mod jobplan;
mod kubelet;
pub mod mounts;
pub mod podstatus;
pub mod probes;
pub mod process;
pub mod quantity;
mod replicaset;
pub mod rsplan;
pub mod runtime;
pub mod serviceaccount;
pub mod volumes;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{ErrorCategory, RunnerError};
pub use images::ImageTable;
pub use ip::{IpPool, IpPrefix};
pub use kubelet::{HOST_IP, NODE_NAME};
pub use runtime::{RUNTIME_ENV, Runtime};

/// Configuration of the Job runner.
#[derive(Debug)]
pub struct RunnerConfig {
    /// Where pod directories (`pods/<uid>`), persistent volumes (`volumes/`) and container logs
    /// (`logs/<namespace>/<pod>/<container>.log`) live. Made traversable (`o+x`) so that
    /// database servers running as their own users can reach their pod dirs; when a parent of
    /// it is private, pod dirs go to a temp dir of their own instead.
    pub state_dir: PathBuf,
    /// Image → local program table (normally [`ImageTable::load_default`]).
    pub images: ImageTable,
    /// Second octet of pod IPs `127.N.x.y` (see [`IpPrefix::claim`]).
    pub ip_prefix: IpPrefix,
    /// The API server pods reach as the `kubernetes` Service (`KUBERNETES_SERVICE_HOST`/`PORT`
    /// and the rest of that family); [`attach`] sets it to the server's address. Pods get their
    /// ServiceAccount's token, the CA and the namespace in the projected volume the API server
    /// added at `/var/run/secrets/kubernetes.io/serviceaccount`.
    pub api_server: Option<std::net::SocketAddr>,
    /// First delay before a failed Job pod is replaced (doubling per failure, capped at 6 min).
    /// Kubernetes uses 10 s; the default here is 1 s to keep tests quick.
    pub pod_backoff_base: Duration,
    /// First delay before a container is restarted in place (sidecars, `OnFailure`/`Always`).
    pub container_restart_backoff: Duration,
    /// How containers run: Docker containers of the pod's images (the default) or host
    /// processes mapped through `images` (development only).
    pub runtime: Runtime,
}

impl RunnerConfig {
    /// The committed image table, a claimed IP prefix, 1 s backoffs, no API server address, and the
    /// runtime named by `KUBE_SIM_CONTAINER_RUNTIME` (`docker` when unset).
    pub fn new(state_dir: PathBuf) -> Result<Self, RunnerError> {
        Ok(RunnerConfig {
            runtime: Runtime::from_env()?,
            state_dir,
            images: ImageTable::load_default()?,
            ip_prefix: IpPrefix::claim()?,
            api_server: None,
            pod_backoff_base: Duration::from_secs(1),
            container_restart_backoff: Duration::from_secs(1),
        })
    }
}

/// Runs the Job controller and the kubelet until one of them stops (an error) or the future is
/// dropped. Dropping it stops every container it started (Docker containers are removed).
///
/// `state_dir` is made absolute first (relative to the current directory), so that every path
/// handed to a container (termination-message file, volumes) is absolute. With
/// [`Runtime::Docker`] an engine that does not answer is an error here.
pub async fn run(client: kube::Client, cfg: RunnerConfig) -> Result<(), RunnerError> {
    let prepared = prepare(cfg).await?;
    run_prepared(client, prepared).await
}

/// A configuration whose state dir is absolute and whose engine answered.
struct Prepared {
    cfg: RunnerConfig,
    engine: Option<Arc<docker::Engine>>,
}

async fn prepare(mut cfg: RunnerConfig) -> Result<Prepared, RunnerError> {
    cfg.state_dir = absolute_state_dir(&cfg.state_dir)?;
    let engine = match cfg.runtime {
        Runtime::Process => None,
        Runtime::Docker => {
            let engine = docker::Engine::connect().await?;
            engine.remove_stale().await;
            Some(Arc::new(engine))
        }
    };
    Ok(Prepared { cfg, engine })
}

/// Creates `state_dir` and returns its canonical absolute path.
pub fn absolute_state_dir(state_dir: &std::path::Path) -> Result<PathBuf, RunnerError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| RunnerError::io("creating the state directory", state_dir, e))?;
    std::fs::canonicalize(state_dir)
        .map_err(|e| RunnerError::io("resolving the state directory", state_dir, e))
}

async fn run_prepared(client: kube::Client, prepared: Prepared) -> Result<(), RunnerError> {
    let Prepared { cfg, engine } = prepared;
    std::fs::create_dir_all(cfg.state_dir.join("logs"))
        .map_err(|e| RunnerError::io("creating log directory", cfg.state_dir.join("logs"), e))?;
    // Removed (after every process is gone) when the runner stops, if it is a temp dir.
    let (pods_root, _pods_temp) = pods_root(&cfg.state_dir)?;
    let kubelet_ctx = Arc::new(kubelet::KubeletCtx {
        events: events::Events::new(client.clone(), "kubelet", Some(NODE_NAME)),
        client: client.clone(),
        state_dir: cfg.state_dir.clone(),
        pods_root,
        images: cfg.images,
        ips: Mutex::new(IpPool::new(cfg.ip_prefix.octet())),
        api_server: cfg.api_server,
        restart_backoff: cfg.container_restart_backoff,
        engine,
    });
    let rs_ctx = Arc::new(replicaset::RsCtx {
        events: events::Events::new(client.clone(), "replicaset-controller", None),
        client: client.clone(),
    });
    let deploy_ctx = Arc::new(deployment::DeployCtx {
        events: events::Events::new(client.clone(), "deployment-controller", None),
        client: client.clone(),
    });
    let job_ctx = Arc::new(jobcontroller::JobCtx {
        events: events::Events::new(client.clone(), "job-controller", None),
        client,
        backoff_base: cfg.pod_backoff_base,
    });
    // Keep the prefix claimed for as long as the runner runs.
    let _prefix = cfg.ip_prefix;
    tokio::select! {
        r = kubelet::run(kubelet_ctx) => r,
        r = jobcontroller::run(job_ctx) => r,
        r = replicaset::run(rs_ctx) => r,
        r = deployment::run(deploy_ctx) => r,
    }
}

/// Where pod directories live: `{state_dir}/pods` when other users (the database servers'
/// `postgres`/`mysql` users) can reach it, else a fresh `kube-sim-pods-*` temp dir (mode 0711),
/// for example when `state_dir` lies inside a private (0700) temp dir.
fn pods_root(
    state_dir: &std::path::Path,
) -> Result<(PathBuf, Option<tempfile::TempDir>), RunnerError> {
    use std::os::unix::fs::PermissionsExt;
    let abs = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let ancestors_ok = abs
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if ancestors_ok {
        let dir = state_dir.join("pods");
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunnerError::io("creating pod directory root", dir.clone(), e))?;
        for d in [state_dir.to_path_buf(), dir.clone()] {
            kubelet::make_traversable(&d)
                .map_err(|e| RunnerError::io("making state dir traversable", d.clone(), e))?;
        }
        return Ok((dir, None));
    }
    let temp = tempfile::Builder::new()
        .prefix("kube-sim-pods-")
        .tempdir()
        .map_err(|e| RunnerError::io("creating pod directory root", std::env::temp_dir(), e))?;
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o711))
        .map_err(|e| RunnerError::io("making pod directory root traversable", temp.path(), e))?;
    Ok((temp.path().to_path_buf(), Some(temp)))
}

/// Starts the runner against a [`crate::RunningServer`] as one of its background tasks, so it
/// stops (and kills its processes, removes its containers) with the server. Pods reach the
/// server at its address unless `cfg.api_server` is set. The state dir is made
/// absolute and the container engine checked before this returns (an unreachable Docker Engine
/// is an error here, not in the background).
pub async fn attach(
    server: &mut crate::RunningServer,
    mut cfg: RunnerConfig,
) -> Result<(), RunnerError> {
    let client = server
        .client()
        .await
        .map_err(|e| RunnerError::Client(e.to_string()))?;
    if cfg.api_server.is_none() {
        cfg.api_server = Some(server.addr());
    }
    let prepared = prepare(cfg).await?;
    server.attach(tokio::spawn(async move {
        if let Err(e) = run_prepared(client, prepared).await {
            tracing::error!(error = %e, category = ?e.category(), "kube-sim job runner stopped");
        }
    }));
    Ok(())
}
