//! Typed errors of the agent, each with a category used in logs, summaries and exit codes.

use std::io;

use crate::contract::FailureCategory;

/// Everything that can make a backup or restore fail.
///
/// Messages never contain secrets: URIs are shown without passwords, age identities and S3
/// keys are never formatted.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The command line or environment is invalid (bad URI, missing identity, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database dump or a query on the source failed.
    #[error("source database: {0}")]
    Source(String),
    /// The restore target refused the data, is not empty, or could not be prepared.
    #[error("restore target: {0}")]
    Target(String),
    /// Reading or writing the artifact store failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The storage refused a request for a reason no retry fixes: access denied, a missing
    /// bucket, a request the server rejects as invalid.
    #[error("storage refused: {0}")]
    StorageRefused(String),
    /// The stored bytes are not the ones that were written (size or SHA-256 mismatch, corrupt
    /// stream).
    #[error("integrity: {0}")]
    Integrity(String),
    /// Encryption or decryption failed (wrong identity, bad recipient).
    #[error("encryption: {0}")]
    Crypto(String),
    /// The key that wraps the backup's data key cannot be used: the KMS key is disabled,
    /// pending deletion or deleted (crypto-erasure), or unknown to the KMS.
    #[error("key unavailable: {0}")]
    KeyUnavailable(String),
    /// A local I/O error that belongs to none of the above.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The client tools cannot handle the server or the archive (too old, or a known-bad pair).
    #[error("client tools: {0}")]
    ClientTooOld(String),
}

impl AgentError {
    /// The failure category (the summary's `category`, a metric label, the exit code).
    pub fn failure_category(&self) -> FailureCategory {
        match self {
            AgentError::Config(_) => FailureCategory::Config,
            AgentError::Source(_) => FailureCategory::Source,
            AgentError::Target(_) => FailureCategory::Target,
            AgentError::Storage(_) => FailureCategory::Storage,
            AgentError::StorageRefused(_) => FailureCategory::StorageRefused,
            AgentError::Integrity(_) => FailureCategory::Integrity,
            AgentError::Crypto(_) => FailureCategory::Crypto,
            AgentError::KeyUnavailable(_) => FailureCategory::KeyUnavailable,
            AgentError::Io(_) => FailureCategory::Io,
            AgentError::ClientTooOld(_) => FailureCategory::ClientTooOld,
        }
    }

    /// A short, stable category name (a metric label and a field of the JSON summary).
    pub fn category(&self) -> &'static str {
        self.failure_category().as_str()
    }

    /// The message without its category prefix.
    pub fn detail(&self) -> String {
        match self {
            AgentError::Config(m)
            | AgentError::Source(m)
            | AgentError::Target(m)
            | AgentError::Storage(m)
            | AgentError::StorageRefused(m)
            | AgentError::Integrity(m)
            | AgentError::Crypto(m)
            | AgentError::KeyUnavailable(m)
            | AgentError::ClientTooOld(m) => m.clone(),
            AgentError::Io(e) => e.to_string(),
        }
    }

    /// The process exit code for this error (distinct per category, never 0 or 1).
    pub fn exit_code(&self) -> u8 {
        self.failure_category().exit_code()
    }
}

/// Result alias of the agent.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// An I/O error that carries an [`AgentError`] through `std::io` plumbing (writers/readers
/// inside the pipeline), so the original category survives.
pub(crate) fn into_io(err: AgentError) -> io::Error {
    io::Error::other(err)
}

/// Recover the [`AgentError`] carried by [`into_io`], or classify a plain I/O error with `f`.
pub(crate) fn from_io(err: io::Error, f: impl FnOnce(io::Error) -> AgentError) -> AgentError {
    if err.get_ref().is_some_and(|e| e.is::<AgentError>()) {
        match err.into_inner().map(|e| e.downcast::<AgentError>()) {
            Some(Ok(agent)) => *agent,
            Some(Err(other)) => f(io::Error::other(other)),
            None => AgentError::Io(io::Error::other("unknown i/o error")),
        }
    } else {
        f(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_roundtrip_keeps_category() {
        let e = into_io(AgentError::Integrity("x".into()));
        let back = from_io(e, AgentError::Io);
        assert_eq!(back.category(), "integrity");
        let plain = from_io(io::Error::other("boom"), |e| {
            AgentError::Storage(e.to_string())
        });
        assert_eq!(plain.category(), "storage");
    }
}
