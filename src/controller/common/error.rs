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
    /// The audit record of an action could not be made durable (the audit spool is full or
    /// cannot be written): the action waits.
    #[error(transparent)]
    AuditSpool(#[from] crate::audit::spool::SpoolError),
}

/// What kind of failure a reconcile error is: stable and low-cardinality, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// 409: someone else wrote the object first; retried at once.
    Conflict,
    /// 404 from the API.
    NotFound,
    /// 422: the API refused the request as invalid.
    Invalid,
    /// Any other Kubernetes API failure (transport, 5xx, …).
    KubeApi,
    /// The spec cannot be acted on until it changes.
    InvalidSpec,
    /// The storage could not be reached or answered unexpectedly.
    Storage,
    /// A Job could not be built.
    JobBuild,
    /// The object lacks a field the API server always sets.
    MalformedObject,
    /// An audit record could not be made durable; the action waits.
    AuditSpool,
}

impl ErrorCategory {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Conflict => "conflict",
            ErrorCategory::NotFound => "not-found",
            ErrorCategory::Invalid => "invalid",
            ErrorCategory::KubeApi => "kube-api",
            ErrorCategory::InvalidSpec => "invalid-spec",
            ErrorCategory::Storage => "storage",
            ErrorCategory::JobBuild => "job-build",
            ErrorCategory::MalformedObject => "malformed-object",
            ErrorCategory::AuditSpool => "audit-spool",
        }
    }
}

impl std::fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The category of this error.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => ErrorCategory::Conflict,
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => ErrorCategory::NotFound,
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => ErrorCategory::Invalid,
            Error::Kube(_) => ErrorCategory::KubeApi,
            Error::InvalidSpec(_) => ErrorCategory::InvalidSpec,
            Error::Storage(_) => ErrorCategory::Storage,
            Error::JobBuild(_) => ErrorCategory::JobBuild,
            Error::MissingObjectField(_) => ErrorCategory::MalformedObject,
            Error::AuditSpool(_) => ErrorCategory::AuditSpool,
        }
    }

    /// The category label: stable, low-cardinality.
    pub fn metric_label(&self) -> &'static str {
        self.category().as_str()
    }
}

/// Result of a reconcile pass.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_label_kube_statuses() {
        let status = |code| {
            Error::Kube(kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ))
        };
        assert_eq!(status(409).metric_label(), "conflict");
        assert_eq!(status(404).metric_label(), "not-found");
        assert_eq!(status(422).metric_label(), "invalid");
        assert_eq!(status(500).metric_label(), "kube-api");
        assert_eq!(
            Error::InvalidSpec(String::new()).metric_label(),
            "invalid-spec"
        );
        assert_eq!(
            Error::MissingObjectField("uid").category(),
            ErrorCategory::MalformedObject
        );
        assert_eq!(
            Error::AuditSpool(crate::audit::spool::SpoolError::Full { max: 1 }).metric_label(),
            "audit-spool"
        );
    }
}
