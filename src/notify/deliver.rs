//! Delivering a notification: the receiver's URL from its Secret, one JSON POST, retried.
//!
//! Webhook URLs carry tokens (Slack's do), so a URL never appears in an error, a log line, an
//! Event or a metric: errors name the Secret and key the URL came from, and the HTTP status or
//! the kind of transport failure.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::common::SecretKeySelector;
use crate::egress::webhook::PolicyGate;
use crate::egress::{EgressError, EgressPolicy};

/// Attempts per notification and channel (the first try and four retries), each after a
/// longer, jittered pause; an operator restart starts again from the first.
pub const ATTEMPTS: u32 = 5;
/// Time allowed for one attempt (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause a receiver's `Retry-After` can ask for (longer asks wait this long).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a notification was not delivered. Never carries the URL or a credential.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeliveryError {
    #[error("Secret {secret} not found")]
    SecretNotFound { secret: String },
    #[error("Secret {secret} has no key {key}")]
    KeyNotFound { secret: String, key: String },
    #[error("reading Secret {secret} failed ({reason})")]
    SecretUnreadable { secret: String, reason: String },
    #[error("the value of Secret {secret} key {key} is not an http or https URL")]
    InvalidUrl { secret: String, key: String },
    #[error("the value of Secret {secret} key {key} is not a valid HTTP header value")]
    InvalidHeader { secret: String, key: String },
    #[error("the receiver answered HTTP {status} ({attempts} attempt(s))")]
    Rejected { status: u16, attempts: u32 },
    #[error("no answer from the receiver within {}s ({attempts} attempt(s))", ATTEMPT_TIMEOUT.as_secs())]
    TimedOut { attempts: u32 },
    #[error("could not reach the receiver ({attempts} attempt(s))")]
    Unreachable { attempts: u32 },
    /// The URL's host resolves to an address the operator's egress policy refuses; nothing
    /// was sent.
    #[error("{0}")]
    Refused(EgressError),
    /// The rule's template could not be rendered; nothing was sent.
    #[error("{0}")]
    Template(#[from] crate::notify::template::TemplateError),
    #[error("the e-mail could not be built: {reason}")]
    InvalidMail { reason: String },
    #[error("the CA certificates for the SMTP server are not valid PEM certificates")]
    InvalidCa,
    #[error("the SMTP server refused the mail at {stage}{} ({})", code.as_ref().map(|c| format!(" with code {c}")).unwrap_or_default(), if *permanent { "permanent" } else { "temporary" })]
    MailRejected {
        stage: &'static str,
        code: Option<String>,
        permanent: bool,
    },
    #[error("the SMTP server does not offer STARTTLS (mail is never sent unencrypted)")]
    NoStartTls,
    #[error("the TLS handshake with the SMTP server failed (certificate or protocol)")]
    MailTls,
    #[error("the SMTP server refused the credentials")]
    MailAuth,
    #[error("the SMTP conversation failed at {stage}")]
    MailFailed { stage: &'static str },
    #[error("the rule names no channel")]
    NoChannel,
}

impl DeliveryError {
    /// A short category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            DeliveryError::SecretNotFound { .. }
            | DeliveryError::KeyNotFound { .. }
            | DeliveryError::SecretUnreadable { .. }
            | DeliveryError::InvalidUrl { .. }
            | DeliveryError::InvalidHeader { .. }
            | DeliveryError::InvalidMail { .. }
            | DeliveryError::InvalidCa
            | DeliveryError::NoChannel => "config",
            DeliveryError::Template(_) => "template",
            DeliveryError::Rejected { .. }
            | DeliveryError::MailRejected { .. }
            | DeliveryError::MailAuth
            | DeliveryError::NoStartTls => "rejected",
            DeliveryError::TimedOut { .. }
            | DeliveryError::Unreachable { .. }
            | DeliveryError::MailTls
            | DeliveryError::MailFailed { .. } => "unreachable",
            DeliveryError::Refused(_) => "refused",
        }
    }

    /// Whether another attempt may succeed (server errors, 429, transport failures, temporary
    /// SMTP refusals). Configuration errors, refusals and 4xx answers are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Rejected { status, .. } => *status >= 500 || *status == 429,
            DeliveryError::MailRejected { permanent, .. } => !permanent,
            DeliveryError::TimedOut { .. }
            | DeliveryError::Unreachable { .. }
            | DeliveryError::MailTls
            | DeliveryError::MailFailed { .. } => true,
            _ => false,
        }
    }

    /// The same error, counting `attempts` attempts.
    pub fn after(self, attempts: u32) -> Self {
        match self {
            DeliveryError::Rejected { status, .. } => DeliveryError::Rejected { status, attempts },
            DeliveryError::TimedOut { .. } => DeliveryError::TimedOut { attempts },
            DeliveryError::Unreachable { .. } => DeliveryError::Unreachable { attempts },
            other => other,
        }
    }
}

/// The pause before attempt `attempt + 1`: `backoff` × 2^(attempt−1), times a random factor
/// in [0.5, 1.5) (so that many operators or rules do not retry in step), and at least what the
/// receiver asked for with `Retry-After` (at most [`MAX_RETRY_AFTER`]).
pub fn backoff_delay(backoff: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let jittered = exp.mul_f64(0.5 + fastrand::f64());
    match retry_after {
        Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// One HTTP request to a receiver: the body, its type and extra headers (e.g.
/// `Idempotency-Key`, a secret `Authorization`: never logged).
#[derive(Clone)]
pub struct HttpRequest {
    pub body: Bytes,
    pub content_type: String,
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl HttpRequest {
    /// A JSON document.
    pub fn json(body: &serde_json::Value) -> Self {
        HttpRequest {
            body: Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
            content_type: "application/json".into(),
            headers: Vec::new(),
        }
    }

    /// The same request with the header `name: value` (a value that is not a valid header is
    /// left out).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
            self.headers
                .push((hyper::header::HeaderName::from_static(name), v));
        }
        self
    }
}

/// Where channel secrets (URLs, credentials, header values) are read from: the Kubernetes API
/// in the operator ([`kube::Client`]), a map in tests.
pub trait SecretSource: Sync {
    /// The value of `key` of Secret `name` in `ns`, trimmed.
    fn value(
        &self,
        ns: &str,
        name: &str,
        key: &str,
    ) -> impl std::future::Future<Output = Result<String, DeliveryError>> + Send;
}

impl SecretSource for kube::Client {
    async fn value(&self, ns: &str, name: &str, key: &str) -> Result<String, DeliveryError> {
        secret_value(self, ns, name, key).await
    }
}

/// Secrets as `(namespace, name, key) → value` (tests, and the docs' examples).
impl SecretSource for std::collections::BTreeMap<(String, String, String), String> {
    async fn value(&self, ns: &str, name: &str, key: &str) -> Result<String, DeliveryError> {
        if !self.keys().any(|(n, s, _)| n == ns && s == name) {
            return Err(DeliveryError::SecretNotFound {
                secret: name.to_string(),
            });
        }
        self.get(&(ns.to_string(), name.to_string(), key.to_string()))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| DeliveryError::KeyNotFound {
                secret: name.to_string(),
                key: key.to_string(),
            })
    }
}

/// Reads the value of `key` of Secret `name` in `ns` (trimmed).
pub async fn secret_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<String, DeliveryError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| DeliveryError::SecretUnreadable {
            secret: name.to_string(),
            reason: match e {
                kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.reason),
                _ => "API unreachable".into(),
            },
        })?
        .ok_or_else(|| DeliveryError::SecretNotFound {
            secret: name.to_string(),
        })?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.trim().to_string())
        })
        .ok_or_else(|| DeliveryError::KeyNotFound {
            secret: name.to_string(),
            key: key.to_string(),
        })
}

/// Reads the receiver's URL from `selector` in `ns`.
pub async fn url_from_secret(
    secrets: &impl SecretSource,
    ns: &str,
    selector: &SecretKeySelector,
) -> Result<hyper::Uri, DeliveryError> {
    let value = secrets.value(ns, &selector.name, &selector.key).await?;
    parse_url(&value).ok_or_else(|| DeliveryError::InvalidUrl {
        secret: selector.name.clone(),
        key: selector.key.clone(),
    })
}

/// An http(s) URL with a host, or `None`.
pub fn parse_url(value: &str) -> Option<hyper::Uri> {
    let uri: hyper::Uri = value.parse().ok()?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty());
    ok.then_some(uri)
}

type Https = HttpClient<HttpsConnector<PolicyGate>, Full<Bytes>>;

/// The HTTP(S) client notifications use, under the operator's egress policy: the receiver's
/// resolved address is checked before every new connection ([`crate::egress::webhook`]).
/// Cheap to clone; TLS roots are loaded on first use and connections are pooled.
#[derive(Clone)]
pub struct Webhooks {
    policy: EgressPolicy,
    http: Arc<OnceLock<Https>>,
}

impl Webhooks {
    /// A client for `policy`.
    pub fn new(policy: EgressPolicy) -> Self {
        Webhooks {
            policy,
            http: Arc::new(OnceLock::new()),
        }
    }

    /// The egress policy it works under.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    fn http(&self) -> &Https {
        self.http.get_or_init(|| build_http(&self.policy))
    }

    /// A client that trusts only the CA in `ca_pem` (tests with a private CA).
    #[cfg(test)]
    fn trusting(policy: EgressPolicy, ca_pem: &[u8]) -> Self {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(provider, roots));
        let webhooks = Webhooks::new(policy.clone());
        let _ = webhooks.http.set(client(builder, &policy));
        webhooks
    }

    /// POSTs `body` as JSON to `url` ([`Webhooks::post`]).
    pub async fn post_json(
        &self,
        url: &hyper::Uri,
        body: &serde_json::Value,
        backoff: Duration,
    ) -> Result<(), DeliveryError> {
        self.post(url, &HttpRequest::json(body), backoff)
            .await
            .map(|_| ())
    }

    /// POSTs `request` to `url`: up to [`ATTEMPTS`] tries, [`backoff_delay`] between them
    /// (honouring the receiver's `Retry-After`). Server errors (5xx), 429 and transport failures
    /// are retried; other answers, and a refusal by the egress policy, are final. The
    /// receiver's answer is judged by its status alone: its body is never read. Returns the
    /// number of attempts made.
    pub async fn post(
        &self,
        url: &hyper::Uri,
        request: &HttpRequest,
        backoff: Duration,
    ) -> Result<u32, DeliveryError> {
        let mut attempt = 1;
        loop {
            match self.post_once(url, request).await {
                Ok(()) => return Ok(attempt),
                Err((e, retry_after)) => {
                    let e = e.after(attempt);
                    if !e.is_retryable() || attempt >= ATTEMPTS {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff_delay(backoff, attempt, retry_after)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt; a failure carries the receiver's `Retry-After`, if it sent one.
    async fn post_once(
        &self,
        url: &hyper::Uri,
        r: &HttpRequest,
    ) -> Result<(), (DeliveryError, Option<Duration>)> {
        let mut request = hyper::Request::post(url.clone())
            .header(hyper::header::CONTENT_TYPE, r.content_type.as_str())
            .header(hyper::header::USER_AGENT, "dataguardian-operator");
        for (name, value) in &r.headers {
            request = request.header(name, value);
        }
        if let Some(auth) = crate::egress::webhook::proxy_authorization(&self.policy, url) {
            request = request.header(hyper::header::PROXY_AUTHORIZATION, auth);
        }
        let Ok(request) = request.body(Full::new(r.body.clone())) else {
            return Err((DeliveryError::Unreachable { attempts: 1 }, None));
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.http().request(request)).await {
            Ok(Ok(response)) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                // Dropped unread: an endless reply costs nothing.
                drop(response);
                if status.is_success() {
                    return Ok(());
                }
                Err((
                    DeliveryError::Rejected {
                        status: status.as_u16(),
                        attempts: 1,
                    },
                    retry_after,
                ))
            }
            Ok(Err(e)) => {
                if let Some(refused) = crate::egress::refusal(&e) {
                    return Err((DeliveryError::Refused(refused.clone()), None));
                }
                Err((DeliveryError::Unreachable { attempts: 1 }, None))
            }
            Err(_) => Err((DeliveryError::TimedOut { attempts: 1 }, None)),
        }
    }
}

fn build_http(policy: &EgressPolicy) -> Https {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            // No system CA bundle: https receivers will fail their TLS handshake (and say
            // so per notification); http receivers still work.
            tracing::warn!(error = %e, "no TLS root certificates found for notifications");
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(provider, rustls::RootCertStore::empty()))
        }
    };
    client(builder, policy)
}

fn tls_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: rustls::RootCertStore,
) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| unreachable!("ring supports the default TLS versions"))
}

fn client(
    builder: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
    policy: &EgressPolicy,
) -> Https {
    let connector = builder
        .https_or_http()
        .enable_http1()
        .wrap_connector(PolicyGate::new(policy.clone()));
    HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(parse_url("https://hooks.slack.com/services/T0/B0/xyz").is_some());
        assert!(parse_url("http://127.0.0.1:8080/hook").is_some());
        for bad in [
            "",
            "hooks.example",
            "ftp://x/y",
            "file:///etc/passwd",
            "http://",
        ] {
            assert!(parse_url(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_never_carry_the_url() {
        let errors = [
            DeliveryError::Rejected {
                status: 403,
                attempts: 1,
            },
            DeliveryError::TimedOut { attempts: 3 },
            DeliveryError::Unreachable { attempts: 3 },
            DeliveryError::InvalidUrl {
                secret: "hooks".into(),
                key: "url".into(),
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{text}"
            );
        }
    }

    /// The tests' policy: loopback allowed, nothing else internal.
    fn loopback() -> Webhooks {
        Webhooks::new(EgressPolicy::from_list("127.0.0.0/8").unwrap())
    }

    /// A receiver on loopback answering with `statuses` in turn (then 200), recording bodies.
    async fn receiver(statuses: Vec<u16>) -> (hyper::Uri, Arc<Mutex<Vec<String>>>, Arc<AtomicU32>) {
        use axum::routing::post;
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU32::new(0));
        let (b, c) = (bodies.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/hook/{token}",
            post(move |body: String| {
                let (b, c, statuses) = (b.clone(), c.clone(), statuses.clone());
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst) as usize;
                    b.lock().unwrap().push(body);
                    axum::http::StatusCode::from_u16(*statuses.get(n).unwrap_or(&200)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/hook/s3cr3t").parse().unwrap();
        (url, bodies, calls)
    }

    #[tokio::test]
    async fn a_post_is_retried_on_server_errors_and_delivered() {
        let (url, bodies, calls) = receiver(vec![503, 500]).await;
        let body = serde_json::json!({"event": "BackupFailed"});
        loopback()
            .post_json(&url, &body, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let bodies = bodies.lock().unwrap();
        assert!(bodies.iter().all(|b| b == r#"{"event":"BackupFailed"}"#));
    }

    #[tokio::test]
    async fn a_client_error_is_final_and_retries_are_bounded() {
        let (url, _, calls) = receiver(vec![404]).await;
        let body = serde_json::json!({});
        assert_eq!(
            loopback()
                .post_json(&url, &body, Duration::from_millis(10))
                .await,
            Err(DeliveryError::Rejected {
                status: 404,
                attempts: 1
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (url, _, calls) = receiver(vec![500; ATTEMPTS as usize + 1]).await;
        assert_eq!(
            loopback()
                .post_json(&url, &body, Duration::from_millis(10))
                .await,
            Err(DeliveryError::Rejected {
                status: 500,
                attempts: ATTEMPTS
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn an_unreachable_receiver_fails_after_the_retries() {
        // A port nothing listens on: bind, note the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
        assert_eq!(
            loopback()
                .post_json(&url, &serde_json::json!({}), Duration::from_millis(10))
                .await,
            Err(DeliveryError::Unreachable { attempts: ATTEMPTS })
        );
    }

    #[tokio::test]
    async fn a_webhook_at_a_refused_address_is_never_contacted() {
        use crate::egress::testing::AcceptCounter;
        let listener = AcceptCounter::start("127.0.0.1").await;
        let port = listener.addr.port();
        let nothing_internal = Webhooks::new(EgressPolicy::default());
        // Loopback by address and by name, when the platform team has not allowed it.
        for url in [
            format!("http://127.0.0.1:{port}/hook/s3cr3t"),
            format!("http://localhost:{port}/hook/s3cr3t"),
        ] {
            let err = nothing_internal
                .post_json(
                    &url.parse().unwrap(),
                    &serde_json::json!({}),
                    Duration::ZERO,
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, DeliveryError::Refused(EgressError::NotAllowed { .. })),
                "{url}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("egress policy"), "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
            assert_eq!(err.category(), "refused");
        }
        // Cloud metadata and cluster addresses, even with loopback allowed: refused at once,
        // not after a connect timeout.
        for (url, always) in [
            ("http://169.254.169.254/latest/meta-data/", true),
            ("http://[fe80::1]/hook", true),
            ("http://10.0.0.1/hook", false),
            ("http://100.64.0.10/hook", false),
        ] {
            let started = std::time::Instant::now();
            let err = loopback()
                .post_json(
                    &url.parse().unwrap(),
                    &serde_json::json!({}),
                    Duration::ZERO,
                )
                .await
                .unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(1), "{url}");
            match (&err, always) {
                (DeliveryError::Refused(EgressError::AlwaysRefused { .. }), true)
                | (DeliveryError::Refused(EgressError::NotAllowed { .. }), false) => {}
                _ => panic!("{url}: {err:?}"),
            }
        }
        assert_eq!(listener.accepted(), 0, "a refused receiver was contacted");
        // The same listener is reachable once loopback is allowed: the count above is real.
        let _ = loopback()
            .post_json(
                &format!("http://127.0.0.1:{port}/hook").parse().unwrap(),
                &serde_json::json!({}),
                Duration::ZERO,
            )
            .await;
        assert!(listener.accepted() >= 1);
    }

    #[tokio::test]
    async fn an_endless_receiver_reply_is_never_read() {
        use crate::egress::testing::EndlessServer;
        let server = EndlessServer::start(200).await;
        let url = format!("http://{}/hook", server.addr).parse().unwrap();
        loopback()
            .post_json(&url, &serde_json::json!({}), Duration::ZERO)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Only what fits in the socket buffers left the server.
        assert!(server.sent() < 16 << 20, "{} bytes read", server.sent());
    }

    /// The policy of the proxy tests: loopback allowed, the proxy's URL for `scheme`.
    fn via_proxy(proxy: &str, scheme: &str, no_proxy: &str) -> EgressPolicy {
        let config = if scheme == "https" {
            crate::egress::ProxyConfig::new(None, Some(proxy), no_proxy)
        } else {
            crate::egress::ProxyConfig::new(Some(proxy), None, no_proxy)
        };
        EgressPolicy::from_list("127.0.0.0/8")
            .unwrap()
            .with_proxy(config.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_webhook_goes_through_the_proxy_unless_no_proxy_names_it() {
        let proxy = testkit::ForwardProxy::with_credentials("hooks", "pr0xy-s3cret").unwrap();
        let proxy_url = proxy.url_with_credentials("hooks", "pr0xy-s3cret");
        let (url, bodies, calls) = receiver(vec![]).await;
        let body = serde_json::json!({"event": "BackupSucceeded"});

        // http:// receiver: the request goes to the proxy in absolute form, with the
        // credentials; the receiver gets it (the proxy forwards it in origin form).
        Webhooks::new(via_proxy(&proxy_url, "http", ""))
            .post_json(&url, &body, Duration::ZERO)
            .await
            .unwrap();
        let seen = proxy.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].target, url.to_string());
        assert_eq!(
            seen[0].proxy_authorization.as_deref(),
            Some("Basic aG9va3M6cHIweHktczNjcmV0"),
            "base64(hooks:pr0xy-s3cret)"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(bodies.lock().unwrap()[0], r#"{"event":"BackupSucceeded"}"#);

        // NO_PROXY names the receiver: straight to it.
        Webhooks::new(via_proxy(&proxy_url, "http", "127.0.0.0/8"))
            .post_json(&url, &body, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(proxy.requests().len(), 1, "NO_PROXY was not honoured");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A receiver the egress policy refuses never reaches the proxy.
        let err = Webhooks::new(via_proxy(&proxy_url, "http", ""))
            .post_json(
                &"http://10.0.0.1/hook/s3cr3t".parse().unwrap(),
                &body,
                Duration::ZERO,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Refused(_)), "{err:?}");
        assert!(!err.to_string().contains("pr0xy-s3cret"), "{err}");
        assert_eq!(proxy.requests().len(), 1);

        // Wrong credentials: the proxy answers 407, nothing reaches the receiver.
        let wrong = proxy.url_with_credentials("hooks", "wrong");
        let err = Webhooks::new(via_proxy(&wrong, "http", ""))
            .post_json(&url, &body, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DeliveryError::Rejected {
                status: 407,
                attempts: 1
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_https_webhook_goes_through_a_connect_tunnel_with_tls_to_the_receiver() {
        // An HTTPS server with a certificate from a test CA (moto serves any path).
        let certs = testkit::TestCertificates::generate().unwrap();
        let server = testkit::Moto::builder().tls(&certs).start().unwrap();
        let ca = std::fs::read(certs.ca()).unwrap();
        let proxy = testkit::ForwardProxy::with_credentials("hooks", "pr0xy-s3cret").unwrap();
        let proxy_url = proxy.url_with_credentials("hooks", "pr0xy-s3cret");
        let url: hyper::Uri = format!("{}/hook/s3cr3t", server.endpoint())
            .parse()
            .unwrap();
        let webhooks = Webhooks::trusting(via_proxy(&proxy_url, "https", ""), &ca);
        let result = webhooks
            .post_json(&url, &serde_json::json!({}), Duration::ZERO)
            .await;
        // The receiver answered over TLS through the tunnel (with whatever status an S3
        // server gives a POST): not a transport failure.
        assert!(
            matches!(result, Ok(()) | Err(DeliveryError::Rejected { .. })),
            "{result:?}"
        );
        // One tunnel per attempt (an S3 server may answer a POST with a retried 5xx).
        let seen = proxy.requests();
        assert!(!seen.is_empty());
        for r in &seen {
            assert_eq!(r.method, "CONNECT", "{seen:?}");
            assert_eq!(r.target, format!("127.0.0.1:{}", server.port()));
            assert_eq!(
                r.proxy_authorization.as_deref(),
                Some("Basic aG9va3M6cHIweHktczNjcmV0")
            );
            assert!(r.forwarded);
        }
        let tunnels = seen.len();

        // The certificate is still checked end to end: a client that does not trust the test
        // CA fails, through the same tunnel.
        let untrusting = Webhooks::new(via_proxy(&proxy_url, "https", ""));
        let result = untrusting
            .post_json(&url, &serde_json::json!({}), Duration::ZERO)
            .await;
        assert!(
            matches!(result, Err(DeliveryError::Unreachable { .. })),
            "{result:?}"
        );
        assert!(proxy.requests().len() > tunnels);
    }
}
