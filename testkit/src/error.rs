//! The one error type of the test kit.

use std::io;
use std::time::Duration;

/// Result alias used throughout the test kit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, using or stopping a test service.
///
/// Messages never contain passwords or secret keys: those are passed to child
/// processes through files or environment variables, never argv, and never echoed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required program is not installed; `hint` says how to install it.
    #[error("{binary} not found: {hint}")]
    MissingBinary {
        /// The program that was looked for.
        binary: String,
        /// How to install it, e.g. `apt-get install mariadb-server`.
        hint: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the kit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A server process did not come up; `log` is the tail of its log.
    #[error("{service} failed to start: {reason}\n--- last lines of the {service} log ---\n{log}")]
    Startup {
        /// Which service (postgres, mariadbd, moto_server, ...).
        service: String,
        /// Why the kit gave up.
        reason: String,
        /// The last lines the service wrote.
        log: String,
    },
    /// A client tool (psql, mariadb, initdb, ...) exited unsuccessfully.
    #[error("{tool} failed with {status}: {stderr}")]
    CommandFailed {
        /// The tool that was run.
        tool: String,
        /// Its exit status.
        status: String,
        /// What it wrote on stderr.
        stderr: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the kit waited.
        waited: Duration,
    },
    /// A call to the S3 server failed.
    #[error("S3 {operation} failed: {message}")]
    S3 {
        /// The S3 operation, e.g. `CreateBucket`.
        operation: String,
        /// The error as reported by the SDK.
        message: String,
    },
    /// The caller passed something the kit cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Wraps an I/O error with what the kit was doing when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Turns an I/O error into [`Error::Io`] with the given context.
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}
