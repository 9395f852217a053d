//! `/healthz`, `/readyz` and `/metrics` for the operator.
//!
//! `/healthz` answers 200 while the process serves requests (liveness). `/readyz` answers 200
//! when this replica can do its job at once:
//!
//! - every replica, leader or not, keeps the standby caches (BackupRuns and BackupPolicies) and
//!   must have them synced, and must be able to take part in the election (its Lease namespace
//!   exists, RBAC lets it read and write the Lease, the API server answers);
//! - the leader must also have the caches of the controllers it started synced.
//!
//! So both replicas of a Deployment become Ready (the follower can take over at once), and a
//! replica that could never lead says why. The body is `ok (leader)` / `ok (standby, leader:
//! NAME)`, or the reasons it is not ready, one per line (`caches not synced: BackupRun`,
//! `lease namespace "x" not found: …`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::leader::Election;
use crate::telemetry::metrics::Metrics;

/// Whether one cache holds its first full list; set once by whoever feeds it.
#[derive(Clone, Debug, Default)]
pub struct Synced(Arc<AtomicBool>);

impl Synced {
    /// The cache holds its first full list.
    pub fn mark(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Synced::mark`] was called.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself (for code that keeps an `Arc<AtomicBool>`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// Who needs a cache to be synced before this replica is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheRole {
    /// Every replica keeps it (a follower needs it to take over at once).
    Standby,
    /// Only the leader keeps it (the caches of the controllers it starts).
    Leader,
}

#[derive(Debug)]
struct Cache {
    name: &'static str,
    role: CacheRole,
    synced: Synced,
}

/// Shared readiness state.
#[derive(Clone)]
pub struct Readiness {
    election: watch::Receiver<Election>,
    caches: Arc<Mutex<Vec<Cache>>>,
    /// Other parts every replica needs before it is ready (their `/readyz` reason, flag).
    parts: Arc<Mutex<Vec<(&'static str, Synced)>>>,
    /// The leader has built and started its controllers (their caches are tracked).
    controllers_started: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new(election: watch::Receiver<Election>) -> Self {
        Self {
            election,
            caches: Arc::default(),
            parts: Arc::default(),
            controllers_started: Arc::default(),
            stopping: Arc::default(),
        }
    }

    /// Tracks a cache called `name` (as `/readyz` names it); mark the returned flag once it
    /// holds its first full list.
    pub fn track(&self, name: &'static str, role: CacheRole) -> Synced {
        let synced = Synced::default();
        self.caches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Cache {
                name,
                role,
                synced: synced.clone(),
            });
        synced
    }

    /// A part every replica needs (e.g. the admission webhook's certificate): until the
    /// returned flag is marked, `/readyz` gives `reason`.
    pub fn require(&self, reason: &'static str) -> Synced {
        let flag = Synced::default();
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((reason, flag.clone()));
        flag
    }

    /// The leader's controllers are built (and their caches tracked).
    pub fn mark_controllers_started(&self) {
        self.controllers_started.store(true, Ordering::SeqCst);
    }

    /// The process is shutting down: no longer ready.
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Why the operator is not ready (one reason per item), or empty when it is.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let election = self.election.borrow().clone();
        let mut reasons = Vec::new();
        if self.stopping.load(Ordering::SeqCst) {
            reasons.push("shutting down".to_string());
        }
        if let Some(problem) = &election.problem {
            reasons.push(problem.to_string());
        } else if !election.checked {
            reasons.push("the leader Lease has not been read yet".to_string());
        }
        let unsynced: Vec<&'static str> = self
            .caches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|c| c.role == CacheRole::Standby || election.leading)
            .filter(|c| !c.synced.get())
            .map(|c| c.name)
            .collect();
        if !unsynced.is_empty() {
            reasons.push(format!("caches not synced: {}", unsynced.join(", ")));
        }
        reasons.extend(
            self.parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, flag)| !flag.get())
                .map(|(reason, _)| reason.to_string()),
        );
        if election.leading && !self.controllers_started.load(Ordering::SeqCst) {
            reasons.push("leading; starting the controllers".to_string());
        }
        reasons
    }

    /// What `/readyz` says when ready.
    fn ready_text(&self) -> String {
        let election = self.election.borrow();
        if election.leading {
            "ok (leader)".to_string()
        } else {
            match &election.holder {
                Some(holder) => format!("ok (standby, leader: {holder})"),
                None => "ok (standby)".to_string(),
            }
        }
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    metrics: Metrics,
}

/// The router, separate from the listener so that it can be tested without a socket.
pub fn router(readiness: Readiness, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { readiness, metrics })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let reasons = state.readiness.not_ready_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, state.readiness.ready_text())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n"))
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves the router on `addr` until the future is dropped.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    metrics: Metrics,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router(readiness, metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::leader::LeaseProblem;

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut buf = String::new();
        stream.read_to_string(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn a_follower_is_ready_with_its_standby_caches_and_the_leader_with_all_of_them() {
        let (tx, rx) = watch::channel(Election::default());
        let readiness = Readiness::new(rx);
        let runs = readiness.track("BackupRun", CacheRole::Standby);
        let policies = readiness.track("BackupPolicy", CacheRole::Standby);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(readiness.clone(), Metrics::new());
        tokio::spawn(async move { axum::serve(listener, app).await });

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503")
                && r.contains("caches not synced: BackupRun, BackupPolicy")
                && r.contains("Lease has not been read yet"),
            "{r}"
        );
        runs.mark();
        policies.mark();
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && !r.contains("caches"),
            "{r}"
        );
        tx.send_replace(Election {
            checked: true,
            leading: false,
            holder: Some("replica-a".into()),
            problem: None,
        });
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("ok (standby, leader: replica-a)"),
            "a follower with synced caches is ready: {r}"
        );

        // It cannot reach its Lease: not ready, and the body says why and what fixes it.
        tx.send_replace(Election {
            checked: true,
            leading: false,
            holder: None,
            problem: Some(LeaseProblem::NamespaceMissing {
                namespace: "x".into(),
            }),
        });
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503")
                && r.contains("lease namespace \"x\" not found")
                && r.contains("--lease-namespace"),
            "{r}"
        );

        // It leads: ready only once the controllers are started and their caches synced.
        tx.send_replace(Election {
            checked: true,
            leading: true,
            holder: Some("me".into()),
            problem: None,
        });
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("starting the controllers"),
            "{r}"
        );
        let restores = readiness.track("RestoreRun", CacheRole::Leader);
        readiness.mark_controllers_started();
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("caches not synced: RestoreRun"),
            "{r}"
        );
        restores.mark();
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("ok (leader)"),
            "{r}"
        );

        readiness.mark_stopping();
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("shutting down"),
            "{r}"
        );
        let m = get(addr, "/metrics").await;
        assert!(m.contains("# EOF"), "{m}");
    }
}
