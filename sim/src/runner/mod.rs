//! The Job runner: plays the Kubernetes Job controller and the kubelet for the sim.
//!
//! It talks to the API server only over HTTP through a [`kube::Client`], like the real
//! controllers do, so it works against any API server. See `sim/README-runner.md` for how
//! containers map to host processes.
//!
//! Pure planning lives in [`jobplan`] (Job controller decisions), [`env`] and [`expand`]
//! (container environment), [`mounts`] and [`volumes`] (paths), [`podstatus`] (status
//! rendering), [`images`] (image table); the I/O loops are in `jobcontroller` and `kubelet`.

pub mod env;
pub mod error;
pub mod expand;
pub mod images;
pub mod ip;
mod jobcontroller;
pub mod jobplan;
mod kubelet;
pub mod mounts;
pub mod podstatus;
pub mod process;
pub mod volumes;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{ErrorCategory, RunnerError};
pub use images::ImageTable;
pub use ip::{IpPool, IpPrefix};
pub use kubelet::{HOST_IP, NODE_NAME};

/// Configuration of the Job runner.
#[derive(Debug)]
pub struct RunnerConfig {
    /// Where pod directories (`pods/<uid>`), persistent volumes (`volumes/`) and container logs
    /// (`logs/<namespace>/<pod>/<container>.log`) live. Made traversable (`o+x`) so that
    /// database servers running as their own users can reach their pod dirs.
    pub state_dir: PathBuf,
    /// Image → local program table (normally [`ImageTable::load_default`]).
    pub images: ImageTable,
    /// Second octet of pod IPs `127.N.x.y` (see [`IpPrefix::claim`]).
    pub ip_prefix: IpPrefix,
    /// Kubeconfig handed to containers as `KUBECONFIG` (stands in for the in-cluster service
    /// account), if any.
    pub kubeconfig: Option<PathBuf>,
    /// First delay before a failed Job pod is replaced (doubling per failure, capped at 6 min).
    /// Kubernetes uses 10 s; the default here is 1 s to keep tests quick.
    pub pod_backoff_base: Duration,
    /// First delay before a container is restarted in place (sidecars, `OnFailure`/`Always`).
    pub container_restart_backoff: Duration,
}

impl RunnerConfig {
    /// The committed image table, a claimed IP prefix, 1 s backoffs, no kubeconfig.
    pub fn new(state_dir: PathBuf) -> Result<Self, RunnerError> {
        Ok(RunnerConfig {
            state_dir,
            images: ImageTable::load_default()?,
            ip_prefix: IpPrefix::claim()?,
            kubeconfig: None,
            pod_backoff_base: Duration::from_secs(1),
            container_restart_backoff: Duration::from_secs(1),
        })
    }
}

/// Runs the Job controller and the kubelet until one of them stops (an error) or the future is
/// dropped. Dropping it stops every container process it started.
pub async fn run(client: kube::Client, cfg: RunnerConfig) -> Result<(), RunnerError> {
    std::fs::create_dir_all(cfg.state_dir.join("pods"))
        .map_err(|e| RunnerError::io("creating pod directory root", cfg.state_dir.join("pods"), e))?;
    std::fs::create_dir_all(cfg.state_dir.join("logs"))
        .map_err(|e| RunnerError::io("creating log directory", cfg.state_dir.join("logs"), e))?;
    for dir in [cfg.state_dir.clone(), cfg.state_dir.join("pods")] {
        kubelet::make_traversable(&dir).map_err(|e| RunnerError::io("making state dir traversable", dir.clone(), e))?;
    }
    let kubelet_ctx = Arc::new(kubelet::KubeletCtx {
        client: client.clone(),
        state_dir: cfg.state_dir.clone(),
        images: cfg.images,
        ips: Mutex::new(IpPool::new(cfg.ip_prefix.octet())),
        kubeconfig: cfg.kubeconfig,
        restart_backoff: cfg.container_restart_backoff,
    });
    let job_ctx = Arc::new(jobcontroller::JobCtx {
        client,
        backoff_base: cfg.pod_backoff_base,
    });
    // Keep the prefix claimed for as long as the runner runs.
    let _prefix = cfg.ip_prefix;
    tokio::select! {
        r = kubelet::run(kubelet_ctx) => r,
        r = jobcontroller::run(job_ctx) => r,
    }
}
