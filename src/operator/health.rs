//! `/healthz`, `/readyz` and `/metrics` for the operator.
//!
//! `/healthz` answers while the process serves requests. `/readyz` answers 200 only when the
//! controllers' caches are synced AND this replica holds the leader lease (a follower is alive
//! but not ready to act); the body says which condition is missing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::telemetry::metrics::Metrics;

/// Shared readiness state.
#[derive(Clone)]
pub struct Readiness {
    caches_synced: Arc<AtomicBool>,
    leader: watch::Receiver<bool>,
}

impl Readiness {
    pub fn new(leader: watch::Receiver<bool>) -> Self {
        Self {
            caches_synced: Arc::new(AtomicBool::new(false)),
            leader,
        }
    }

    /// Called once every controller's reflector has its first full list.
    pub fn mark_caches_synced(&self) {
        self.caches_synced.store(true, Ordering::SeqCst);
    }

    /// Why the operator is not ready, or None when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if !*self.leader.borrow() {
            Some("not the leader (waiting for the lease)")
        } else if !self.caches_synced.load(Ordering::SeqCst) {
            Some("caches not synced yet")
        } else {
            None
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
    match state.readiness.not_ready_reason() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
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

    #[tokio::test]
    async fn readyz_needs_lease_and_synced_caches() {
        let (tx, rx) = watch::channel(false);
        let readiness = Readiness::new(rx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(readiness.clone(), Metrics::new());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let mut buf = String::new();
            stream.read_to_string(&mut buf).await.unwrap();
            buf
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get("/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("not the leader"),
            "{r}"
        );
        tx.send_replace(true);
        let r = get("/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("caches not synced"),
            "{r}"
        );
        readiness.mark_caches_synced();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get("/metrics").await;
        assert!(m.contains("# EOF"), "{m}");
    }
}
