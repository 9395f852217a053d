//! Typed errors of the Job runner.

use std::path::PathBuf;

/// Broad class of a [`RunnerError`], for logs and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The API server refused or failed a request.
    Api,
    /// Local file-system or process trouble.
    Io,
    /// The runner's own configuration (image table, state dir) is wrong.
    Config,
}

/// Everything that stops the runner or one of its loops.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A request to the API server failed.
    #[error("API request failed while {context}: {source}")]
    Api {
        /// What the runner was doing.
        context: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A watch stream failed for good.
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    /// A local file or process operation failed.
    #[error("{context} ({path}): {source}")]
    Io {
        /// What the runner was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The image table could not be loaded.
    #[error(transparent)]
    ImageTable(#[from] crate::runner::images::ImageTableError),
    /// No API client could be built.
    #[error("cannot build an API client: {0}")]
    Client(String),
    /// The Docker runtime is selected but the engine cannot be used.
    #[error(transparent)]
    Engine(#[from] crate::runner::docker::EngineError),
    /// An unknown runtime was asked for.
    #[error(transparent)]
    Runtime(#[from] crate::runner::runtime::UnknownRuntime),
    /// No free loopback prefix could be claimed.
    #[error("no free 127.N.0.0/16 prefix for pod IPs: {0}")]
    NoIpPrefix(String),
    /// A controller could not do what its object asks (retried).
    #[error("{0}")]
    Controller(String),
}

impl RunnerError {
    /// The broad class of this error.
    pub fn category(&self) -> ErrorCategory {
        match self {
            RunnerError::Api { .. }
            | RunnerError::Watch(_)
            | RunnerError::Client(_)
            | RunnerError::Controller(_) => ErrorCategory::Api,
            RunnerError::Io { .. } => ErrorCategory::Io,
            RunnerError::ImageTable(_)
            | RunnerError::NoIpPrefix(_)
            | RunnerError::Engine(_)
            | RunnerError::Runtime(_) => ErrorCategory::Config,
        }
    }

    pub(crate) fn api(context: impl Into<String>, source: kube::Error) -> Self {
        RunnerError::Api {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        RunnerError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
