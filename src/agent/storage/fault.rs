//! Why an S3 request failed, as far as retrying goes: access denied, a missing bucket and bad
//! requests fail at once with a clear reason (another attempt gets the same answer);
//! throttling, 5xx replies and transport errors back off and retry.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::agent::error::AgentError;

/// The class of one failed S3 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Fault {
    /// 401/403, or an S3 code saying the credentials or the permission are wrong. Not retried.
    AccessDenied,
    /// The bucket does not exist. Not retried.
    NoSuchBucket,
    /// Any other 3xx/4xx, or 501, that the server would answer the same way again (an invalid
    /// argument, storage class or retention; a bucket in another region; an operation the server
    /// does not implement). Not retried.
    BadRequest,
    /// The object does not exist. Not retried.
    NotFound,
    /// The endpoint resolves to an address the egress policy refuses. Not retried.
    EgressRefused,
    /// The object is not what the caller can use (larger than its limit). Not retried.
    Unusable,
    /// 429, 503 `SlowDown` and kin: the server asks to slow down. Retried after a backoff.
    Throttled,
    /// Another 5xx (or an error with a 200 status). Retried.
    ServerError,
    /// No reply, a broken or unreadable reply, a timeout. Retried.
    Transport,
    /// The server's checksum or ETag of the bytes it received differs from the sent bytes':
    /// retried (they may have been damaged in transit), an integrity error once retries run out.
    Mismatch,
}

impl S3Fault {
    /// Whether another attempt may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            S3Fault::Throttled | S3Fault::ServerError | S3Fault::Transport | S3Fault::Mismatch
        )
    }

    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            S3Fault::AccessDenied => "access denied",
            S3Fault::NoSuchBucket => "the bucket does not exist",
            S3Fault::BadRequest => "the server refused the request as invalid",
            S3Fault::NotFound => "the object does not exist",
            S3Fault::EgressRefused => "the egress policy refused the endpoint",
            S3Fault::Unusable => "the object cannot be used",
            S3Fault::Throttled => "throttled",
            S3Fault::ServerError => "server error",
            S3Fault::Transport => "transport error",
            S3Fault::Mismatch => "the server received other bytes",
        }
    }

    /// What to check, for the faults a person has to fix.
    fn hint(self) -> &'static str {
        match self {
            S3Fault::AccessDenied => {
                ": check the credentials and that they may read and write the bucket and prefix"
            }
            S3Fault::NoSuchBucket => ": check the bucket name, the region and the endpoint",
            S3Fault::BadRequest => {
                ": check the region and the storage settings (storage class, Object Lock, encryption) against what the server supports"
            }
            _ => "",
        }
    }
}

/// The S3 error codes that name a class regardless of the HTTP status.
fn by_code(code: &str) -> Option<S3Fault> {
    Some(match code {
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "AllAccessDisabled"
        | "AccountProblem"
        | "InvalidSecurity"
        | "ExpiredToken"
        | "InvalidToken"
        | "TokenRefreshRequired"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "InvalidObjectState" => S3Fault::AccessDenied,
        "NoSuchBucket" => S3Fault::NoSuchBucket,
        // The server does not implement the operation (e.g. Object Lock retention on a server
        // without it): no retry makes it.
        "NotImplemented" => S3Fault::BadRequest,
        "NoSuchKey" => S3Fault::NotFound,
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "ThrottledException"
        | "RequestLimitExceeded"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "TooManyRequests"
        | "TooManyRequestsException"
        | "ProvisionedThroughputExceededException"
        | "BandwidthLimitExceeded"
        | "EC2ThrottledException"
        | "ServiceUnavailable" => S3Fault::Throttled,
        // Transient although some come as 400: the request was cut, the clock was off (the SDK
        // corrects its skew), the body was damaged on the way.
        "RequestTimeout"
        | "RequestTimeoutException"
        | "IncompleteBody"
        | "RequestTimeTooSkewed"
        | "PriorRequestNotComplete" => S3Fault::Transport,
        "BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest" => S3Fault::Mismatch,
        "InternalError" | "OperationAborted" | "ServiceFailure" => S3Fault::ServerError,
        _ => return None,
    })
}

/// The class of an S3 error reply from its HTTP status and S3 error code (pure).
pub fn classify_reply(status: u16, code: Option<&str>) -> S3Fault {
    if let Some(fault) = code.and_then(by_code) {
        return fault;
    }
    match status {
        401 | 403 => S3Fault::AccessDenied,
        404 => S3Fault::NotFound,
        408 => S3Fault::Transport,
        501 => S3Fault::BadRequest,
        429 => S3Fault::Throttled,
        503 => S3Fault::Throttled,
        // A redirect (301 PermanentRedirect: the bucket lives in another region) or another 4xx
        // gets the same answer next time.
        300..=499 => S3Fault::BadRequest,
        _ => S3Fault::ServerError,
    }
}

/// The class of a failed SDK call.
pub fn classify<E>(
    e: &SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> S3Fault
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if crate::egress::refusal(e).is_some() {
        return S3Fault::EgressRefused;
    }
    match e {
        SdkError::ServiceError(s) => classify_reply(s.raw().status().as_u16(), s.err().code()),
        // A request the SDK could not even build will not build next time either.
        SdkError::ConstructionFailure(_) => S3Fault::BadRequest,
        _ => S3Fault::Transport,
    }
}

/// One failed attempt: its class and the text for logs and the final error (never a reply body,
/// [`crate::egress::s3::error_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Fail {
    /// Class.
    pub fault: S3Fault,
    /// What happened.
    pub text: String,
}

impl S3Fail {
    /// A failure of `fault` described by `text`.
    pub fn new(fault: S3Fault, text: impl Into<String>) -> Self {
        S3Fail {
            fault,
            text: text.into(),
        }
    }

    /// The failure of an SDK call.
    pub fn of<E>(
        e: &SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    ) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        S3Fail::new(classify(e), crate::egress::s3::error_text(e))
    }

    /// The agent error when this failure ends `what` after `attempts` attempts: the refusals no
    /// retry fixes are `StorageRefused` (their own category and exit code), a mismatch that
    /// outlived its retries is an integrity error, everything else a storage error.
    pub fn into_error(self, what: &str, attempts: u32) -> AgentError {
        match self.fault {
            S3Fault::AccessDenied | S3Fault::NoSuchBucket | S3Fault::BadRequest => {
                AgentError::StorageRefused(format!(
                    "{what}: {} ({}){}",
                    self.fault.describe(),
                    self.text,
                    self.fault.hint()
                ))
            }
            S3Fault::NotFound | S3Fault::EgressRefused | S3Fault::Unusable => {
                AgentError::Storage(format!("{what}: {}", self.text))
            }
            S3Fault::Mismatch => AgentError::Integrity(format!(
                "{what} failed after {attempts} attempts: {}",
                self.text
            )),
            S3Fault::Throttled | S3Fault::ServerError | S3Fault::Transport => {
                AgentError::Storage(format!(
                    "{what} failed after {attempts} attempts ({}): {}",
                    self.fault.describe(),
                    self.text
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fail_at_once_and_transient_faults_retry() {
        // Refused: credentials, permissions, a missing bucket, an invalid request.
        for (status, code, fault) in [
            (403, Some("AccessDenied"), S3Fault::AccessDenied),
            (403, Some("SignatureDoesNotMatch"), S3Fault::AccessDenied),
            (403, Some("InvalidAccessKeyId"), S3Fault::AccessDenied),
            (400, Some("ExpiredToken"), S3Fault::AccessDenied),
            (403, None, S3Fault::AccessDenied), // a HEAD reply has no body
            (401, None, S3Fault::AccessDenied),
            (404, Some("NoSuchBucket"), S3Fault::NoSuchBucket),
            (400, Some("InvalidArgument"), S3Fault::BadRequest),
            (400, Some("InvalidStorageClass"), S3Fault::BadRequest),
            (405, Some("MethodNotAllowed"), S3Fault::BadRequest),
            (501, Some("NotImplemented"), S3Fault::BadRequest),
            (501, None, S3Fault::BadRequest),
            (301, Some("PermanentRedirect"), S3Fault::BadRequest), // another region
            (301, None, S3Fault::BadRequest),
            (
                400,
                Some("AuthorizationHeaderMalformed"),
                S3Fault::BadRequest,
            ),
            (404, Some("NoSuchKey"), S3Fault::NotFound),
            (404, None, S3Fault::NotFound),
        ] {
            assert_eq!(classify_reply(status, code), fault, "{status} {code:?}");
        }
        // Retried: throttling, 5xx, transport-like 4xx, damaged bodies.
        for (status, code, fault) in [
            (503, Some("SlowDown"), S3Fault::Throttled),
            (503, None, S3Fault::Throttled),
            (429, None, S3Fault::Throttled),
            (400, Some("ThrottlingException"), S3Fault::Throttled),
            (500, Some("InternalError"), S3Fault::ServerError),
            (502, None, S3Fault::ServerError),
            (200, None, S3Fault::ServerError),
            (400, Some("RequestTimeout"), S3Fault::Transport),
            (408, None, S3Fault::Transport),
            (400, Some("BadDigest"), S3Fault::Mismatch),
            (409, Some("OperationAborted"), S3Fault::ServerError),
        ] {
            assert_eq!(classify_reply(status, code), fault, "{status} {code:?}");
            assert!(fault.retryable(), "{fault:?}");
        }
        for fault in [
            S3Fault::AccessDenied,
            S3Fault::NoSuchBucket,
            S3Fault::BadRequest,
            S3Fault::NotFound,
            S3Fault::EgressRefused,
            S3Fault::Unusable,
        ] {
            assert!(!fault.retryable(), "{fault:?}");
        }
    }

    #[test]
    fn each_final_failure_has_its_category() {
        let e =
            S3Fail::new(S3Fault::AccessDenied, "HTTP 403, AccessDenied: no").into_error("PUT", 1);
        assert_eq!(e.category(), "storage-refused");
        assert!(e.to_string().contains("access denied"), "{e}");
        assert!(e.to_string().contains("check the credentials"), "{e}");
        let e = S3Fail::new(S3Fault::NoSuchBucket, "HTTP 404, NoSuchBucket").into_error("PUT", 1);
        assert_eq!(e.category(), "storage-refused");
        assert!(e.to_string().contains("bucket does not exist"), "{e}");
        let e = S3Fail::new(S3Fault::Throttled, "HTTP 503, SlowDown").into_error("UploadPart 3", 5);
        assert_eq!(e.category(), "storage");
        assert!(
            e.to_string().contains("after 5 attempts (throttled)"),
            "{e}"
        );
        let e = S3Fail::new(S3Fault::Mismatch, "ETag differs").into_error("UploadPart 1", 5);
        assert_eq!(e.category(), "integrity");
        let e = S3Fail::new(S3Fault::NotFound, "s3://b/k does not exist").into_error("GET", 1);
        assert_eq!(e.category(), "storage");
    }
}
