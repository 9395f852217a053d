//! End-to-end scenarios: the real operator binary against the in-repo Kubernetes API stand-in
//! (or the cluster in `E2E_KUBECONFIG`), with real PostgreSQL, MariaDB and S3 servers.
//!
//! Scenarios run one at a time (each starts its own cluster, servers and operator), so that a
//! 2-core machine is not asked to run several databases and operators at once.

mod backup;
mod containers;
mod copies;
mod demo;
mod gameday;
mod harness;
mod install;
mod keys;
mod mariadb;
mod notify;
mod operations;
mod pinning;
mod plugin;
mod policies;
#[path = "../shared/released_crds.rs"]
mod released_crds;
mod restore;
mod staged;
mod telemetry;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for the duration of a scenario. A panicking scenario releases it (tokio's Mutex is not
/// poisoned), so one failure does not fail the rest.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}
