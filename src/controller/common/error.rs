//! Reconcile errors, with a category used as the `category` label of
//! `dataguardian_reconcile_errors_total` and to choose between "wait for a change" and "back off".

/// An error of a reconcile pass. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object's spec cannot be acted on until someone changes it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The backup storage could not be reached or answered unexpectedly.
    #[error("storage: {0}")]
    Storage(String),
    /// A Job could not be built from the policy and storage.
    #[error("building the Job: {0}")]
    JobBuild(String),
    /// An object lacks a field the API server always sets (name, namespace, uid).
    #[error("object is missing {0}")]
    MissingObjectField(&'static str),
}

impl Error {
    /// The category label: stable, low-cardinality.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => "not-found",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Error::Kube(_) => "kube-api",
            Error::InvalidSpec(_) => "invalid-spec",
            Error::Storage(_) => "storage",
            Error::JobBuild(_) => "job-build",
            Error::MissingObjectField(_) => "malformed-object",
        }
    }
}

/// Result of a reconcile pass.
pub type Result<T, E = Error> = std::result::Result<T, E>;
