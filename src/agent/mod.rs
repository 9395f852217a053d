//! The agent: streaming backup, restore and validation pipelines that run inside Jobs, and by
//! hand without Kubernetes.
//!
//! Modules, in data-path order:
//! - [`engine`]: dump and restore client processes, consistent row counts;
//! - [`compress`], [`crypto`], [`hash`]: the stream stages;
//! - [`envelope`], [`kms`]: the run's data key and its wraps (age recipients, KMS);
//! - [`pipeline`]: the blocking stream loops wiring the stages together;
//! - [`storage`]: S3 (multipart) and filesystem (atomic rename) stores;
//! - [`manifest`]: the commit marker written last;
//! - [`backup`], [`restore`]: orchestration (pure planning + I/O);
//! - [`progress`], [`summary`]: live progress logs and the final JSON line;
//! - [`error`]: typed errors with categories.

pub mod backup;
pub mod bench;
pub mod checks;
pub mod compress;
pub mod copy;
pub mod crypto;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod kms;
pub mod manifest;
pub mod pipeline;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod rewrap;
pub mod staging;
pub mod storage;
pub mod summary;
pub mod validate;

pub use error::{AgentError, Result};

/// Runs blocking work (a database client, a file) on tokio's blocking pool; a worker that
/// panicked is an I/O error.
/// The OpenTelemetry `db.system.name` of an engine (a span attribute).
pub(crate) fn db_system(engine: crate::api::common::Engine) -> &'static str {
    match engine {
        crate::api::common::Engine::Postgres => "postgresql",
        crate::api::common::Engine::Mysql => "mysql",
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // The work stays inside the caller's span (its log lines and child spans).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| AgentError::Io(std::io::Error::other(format!("worker thread failed: {e}"))))?
}
