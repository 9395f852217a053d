//! OpenTelemetry traces exported over OTLP, configured only by the standard `OTEL_*` variables.
//!
//! Tracing is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off). When it
//! is off nothing is built: no exporter, no thread, no tracing layer, no `traceId` in status.
//!
//! - Protocol: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or
//!   `http/protobuf` (the default, as the specification says).
//! - Resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` win; otherwise `service.name` is
//!   the process's role (`dataguardian-operator`, `dataguardian-agent`), and `k8s.namespace.name`
//!   / `k8s.pod.name` come from `POD_NAMESPACE` / `POD_NAME` (the downward API).
//! - Sampler: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (read by the SDK).
//!
//! A run (BackupRun, RestoreRun, RestoreValidation) is one trace whose id is derived from the
//! run's UID ([`RunTrace`]): every reconcile of the run is a child of the run's root span, which
//! is exported once, when the run finishes, spanning its whole life; the Job-creation span has a
//! fixed id too, so the `TRACEPARENT` put into the Job is the same on every apply of the Job.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SdkTracer, SdkTracerProvider,
};
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C Trace Context `traceparent` in a Job's environment.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";
/// The W3C Trace Context `tracestate` in a Job's environment.
pub const TRACESTATE_ENV: &str = "TRACESTATE";

/// The `OTEL_*` variables a Job inherits from the operator so that the agent exports to the same
/// place. `OTEL_EXPORTER_OTLP_HEADERS` is deliberately not among them: headers often carry an
/// API token, and a Job's environment is readable by anyone who can read the Job.
pub const INHERITED_ENV: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// The [`INHERITED_ENV`] variables this process has (for a Job's environment); empty when
/// tracing is off.
pub fn inherited_env() -> Vec<(String, String)> {
    if !enabled() {
        return Vec::new();
    }
    INHERITED_ENV
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v))
        })
        .collect()
}

/// Why tracing could not be set up (the process then runs without it and says so in its log).
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// A protocol other than `grpc` and `http/protobuf`.
    #[error("OTLP protocol {0:?} is not supported: use grpc or http/protobuf")]
    UnsupportedProtocol(String),
    /// The exporter refused its configuration (e.g. an endpoint that is not a URL).
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(String),
    /// The exporter's own runtime thread could not start.
    #[error("the OTLP exporter's runtime could not start: {0}")]
    Runtime(#[source] std::io::Error),
}

impl OtelError {
    /// A stable category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            OtelError::UnsupportedProtocol(_) | OtelError::Exporter(_) => "config",
            OtelError::Runtime(_) => "internal",
        }
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub protocol: Protocol,
}

impl Settings {
    /// Reads the settings through `env` (a variable's value, if set). `Ok(None)`: tracing is off.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, OtelError> {
        let set = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => return Err(OtelError::UnsupportedProtocol(other.to_string())),
        };
        Ok(Some(Settings { protocol }))
    }
}

struct Installed {
    provider: SdkTracerProvider,
    /// The sampler the SDK uses (from `OTEL_TRACES_SAMPLER`), asked whether a run's trace is
    /// sampled, so that a run's root span and its children agree.
    sampler: Box<dyn opentelemetry_sdk::trace::ShouldSample>,
    /// The exporter's network I/O runs here, apart from the process's own runtime (which the
    /// agent drops before it flushes).
    _runtime: tokio::runtime::Runtime,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer of this process: `None` when tracing is off.
fn tracer() -> Option<SdkTracer> {
    INSTALLED.get().map(|i| i.provider.tracer("dataguardian"))
}

/// Builds the exporter and the provider when the environment asks for traces, and returns the
/// `tracing` layer that feeds it. `service` is the default `service.name`.
pub fn layer<S>(
    service: &str,
) -> Result<Option<tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>>, OtelError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(settings) = Settings::from_env(|k| std::env::var(k).ok())? else {
        return Ok(None);
    };
    if INSTALLED.get().is_none() {
        let installed = install(service, &settings)?;
        let _ = INSTALLED.set(installed);
    }
    let Some(tracer) = tracer() else {
        return Ok(None);
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false),
    ))
}

fn install(service: &str, settings: &Settings) -> Result<Installed, OtelError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(OtelError::Runtime)?;
    let exporter = {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let _entered = runtime.enter();
        match settings.protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(http::OtlpHttp::new(runtime.handle().clone()))
                .build(),
        }
        .map_err(|e| OtelError::Exporter(e.to_string()))?
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service, |k| std::env::var(k).ok()))
        .with_id_generator(RunIds)
        .build();
    Ok(Installed {
        provider,
        sampler: opentelemetry_sdk::trace::Config::default().sampler,
        _runtime: runtime,
    })
}

/// The resource: what the environment says first, then the defaults of this process.
fn resource(service: &str, env: impl Fn(&str) -> Option<String>) -> Resource {
    let from_env = Resource::builder().build();
    let has = |key: &'static str| from_env.get(&opentelemetry::Key::new(key)).is_some();
    let explicit_service = env("OTEL_SERVICE_NAME").is_some_and(|s| !s.trim().is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
            a.split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        });
    let mut extra = Vec::new();
    if !has("service.version") {
        extra.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !explicit_service {
        extra.push(KeyValue::new("service.name", service.to_string()));
    }
    for (key, var) in [
        ("k8s.namespace.name", "POD_NAMESPACE"),
        ("k8s.pod.name", "POD_NAME"),
    ] {
        if !has(key)
            && let Some(v) = env(var).filter(|v| !v.is_empty())
        {
            extra.push(KeyValue::new(key, v));
        }
    }
    Resource::builder().with_attributes(extra).build()
}

/// Flushes and stops the exporter: every span ended so far is sent (bounded by the exporter's
/// timeout). Call before the process exits.
pub fn shutdown() {
    if let Some(i) = INSTALLED.get() {
        let _ = i.provider.force_flush();
        let _ = i.provider.shutdown();
    }
}

thread_local! {
    static FIXED_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
    static FIXED_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except for the spans [`with_fixed_ids`] builds (the run's root and Job spans).
#[derive(Debug)]
struct RunIds;

impl IdGenerator for RunIds {
    fn new_trace_id(&self) -> TraceId {
        FIXED_TRACE_ID
            .take()
            .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        FIXED_SPAN_ID
            .take()
            .unwrap_or_else(|| RandomIdGenerator::default().new_span_id())
    }
}

/// Runs `f` (which builds exactly one span on this thread) so that the span gets `span_id` (and
/// `trace_id`, when it is a root).
fn with_fixed_ids<T>(trace_id: Option<TraceId>, span_id: SpanId, f: impl FnOnce() -> T) -> T {
    FIXED_TRACE_ID.set(trace_id);
    FIXED_SPAN_ID.set(Some(span_id));
    let out = f();
    FIXED_TRACE_ID.set(None);
    FIXED_SPAN_ID.set(None);
    out
}

/// The trace of one run, derived from its UID: the same on every reconcile and after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunTrace {
    trace_id: TraceId,
    root: SpanId,
    job: SpanId,
}

impl RunTrace {
    /// The trace of the run with this UID.
    pub fn of(uid: &str) -> RunTrace {
        let digest = Sha256::digest(format!("dataguardian.io/run-trace/{uid}").as_bytes());
        let mut t = [0u8; 16];
        t.copy_from_slice(&digest[..16]);
        let mut r = [0u8; 8];
        r.copy_from_slice(&digest[16..24]);
        let mut j = [0u8; 8];
        j.copy_from_slice(&digest[24..32]);
        // All-zero ids are invalid; a digest that produces one is astronomically unlikely.
        t[15] |= u8::from(t == [0; 16]);
        r[7] |= u8::from(r == [0; 8]);
        j[7] |= u8::from(j == [0; 8]);
        RunTrace {
            trace_id: TraceId::from_bytes(t),
            root: SpanId::from_bytes(r),
            job: SpanId::from_bytes(j),
        }
    }

    /// The trace id as 32 lowercase hex digits (what `status.traceId` shows).
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    fn sampled(&self) -> bool {
        INSTALLED.get().is_some_and(|i| {
            let r =
                i.sampler
                    .should_sample(None, self.trace_id, "run", &SpanKind::Internal, &[], &[]);
            matches!(r.decision, SamplingDecision::RecordAndSample)
        })
    }

    /// The context of the run's root span, as a remote parent.
    fn root_context(&self) -> Context {
        let flags = if self.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            self.root,
            flags,
            true,
            TraceState::default(),
        ))
    }

    /// Makes `span` (not yet entered) a child of the run's root span. No-op when tracing is off.
    pub fn adopt(&self, span: &tracing::Span) {
        if enabled() {
            let _ = span.set_parent(self.root_context());
        }
    }

    /// Makes `span` (not yet entered) a child of the run's root span and returns the W3C Trace
    /// Context of `span` for a Job's environment: for the Jobs that work on a finished run
    /// (its copies), whose spans join the run's trace. Empty when tracing is off.
    pub fn later_job_span(&self, span: &tracing::Span) -> Vec<(String, String)> {
        self.adopt(span);
        job_context(span)
    }

    /// Gives `span` (not yet entered, a child of the current reconcile) the run's fixed Job-span
    /// id, and returns the W3C Trace Context to put into the Job's environment (empty when
    /// tracing is off).
    pub fn job_span(&self, span: &tracing::Span) -> Vec<(String, String)> {
        if !enabled() {
            return Vec::new();
        }
        let cx = with_fixed_ids(None, self.job, || span.context());
        inject(&cx)
    }

    /// Exports the run's root span: from `started` to now, with its outcome. Called once, when
    /// the run finishes.
    pub fn finish(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        started: SystemTime,
        outcome: Result<&str, &str>,
    ) {
        let Some(tracer) = tracer() else { return };
        let attributes = vec![
            KeyValue::new("dataguardian.kind", kind),
            KeyValue::new("k8s.namespace.name", namespace.to_string()),
            KeyValue::new("dataguardian.run", name.to_string()),
            KeyValue::new(
                "dataguardian.reason",
                match outcome {
                    Ok(r) | Err(r) => r.to_string(),
                },
            ),
        ];
        let builder = tracer
            .span_builder(kind)
            .with_start_time(started)
            .with_attributes(attributes);
        let mut span = with_fixed_ids(Some(self.trace_id), self.root, || {
            tracer.build_with_context(builder, &Context::new())
        });
        use opentelemetry::trace::Span as _;
        if let Err(reason) = outcome {
            span.set_status(Status::error(reason.to_string()));
        }
        span.end();
    }
}

/// The W3C Trace Context of `cx` as (variable, value) pairs: `TRACEPARENT` and, if any,
/// `TRACESTATE`.
fn inject(cx: &Context) -> Vec<(String, String)> {
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    let mut out = Vec::new();
    if let Some(p) = carrier.remove("traceparent") {
        out.push((TRACEPARENT_ENV.to_string(), p));
    }
    if let Some(s) = carrier.remove("tracestate").filter(|s| !s.is_empty()) {
        out.push((TRACESTATE_ENV.to_string(), s));
    }
    out
}

/// The W3C Trace Context of `span` (`TRACEPARENT`, `TRACESTATE`) for the environment of a Job
/// created inside it, so that the agent's spans are its children. Empty when tracing is off.
pub fn job_context(span: &tracing::Span) -> Vec<(String, String)> {
    if !enabled() {
        return Vec::new();
    }
    inject(&span.context())
}

/// Makes `span` (not yet entered) continue the trace in `TRACEPARENT`/`TRACESTATE` of this
/// process's environment (the agent in a Job). No-op when tracing is off or they are unset.
pub fn continue_from_env(span: &tracing::Span) {
    if !enabled() {
        return;
    }
    let mut carrier = HashMap::new();
    for (var, key) in [
        (TRACEPARENT_ENV, "traceparent"),
        (TRACESTATE_ENV, "tracestate"),
    ] {
        if let Ok(v) = std::env::var(var) {
            carrier.insert(key.to_string(), v);
        }
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Marks `span` as failed with `error` (the span's status; exported only when tracing is on).
/// Errors of this code base name no secret (see the error types), so their text may travel.
pub fn fail(span: &tracing::Span, error: &dyn std::fmt::Display) {
    if enabled() {
        span.set_status(Status::error(error.to_string()));
    }
}

/// Runs `fut` inside `span` and marks the span failed if it returns an error.
pub async fn in_span<T, E: std::fmt::Display>(
    span: tracing::Span,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let out = fut.instrument(span.clone()).await;
    if let Err(e) = &out {
        fail(&span, e);
    }
    out
}

/// Adds an event to the current span, e.g. a retry (exported only when tracing is on). Only
/// names, counts and error texts of this code base belong in `attributes`.
pub fn event(name: &'static str, attributes: &[(&'static str, AttrValue)]) {
    if enabled() {
        let attributes = attributes
            .iter()
            .map(|(k, v)| match v {
                AttrValue::Int(i) => KeyValue::new(*k, *i),
                AttrValue::Text(t) => KeyValue::new(*k, t.clone()),
            })
            .collect();
        tracing::Span::current().add_event(name, attributes);
    }
}

/// A value of an event attribute.
#[derive(Debug, Clone)]
pub enum AttrValue {
    Int(i64),
    Text(String),
}

static DISPATCH: OnceLock<tracing::dispatcher::WeakDispatch> = OnceLock::new();

/// Remembers the global subscriber, through which log lines find their span's ids.
pub(crate) fn remember_dispatch() {
    if enabled() {
        tracing::dispatcher::get_default(|d| {
            let _ = DISPATCH.set(d.downgrade());
        });
    }
}

/// The trace id and span id of the span `id`, when it is being exported (for log lines).
pub(crate) fn ids_of_span_id(id: &tracing::span::Id) -> Option<(String, String)> {
    let dispatch = DISPATCH.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The OTLP/HTTP client: hyper with rustls (https endpoints), on the exporter's runtime.
mod http {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use opentelemetry_http::{HttpClient, HttpError, Request, Response};
    use std::sync::Arc;

    type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

    #[derive(Clone)]
    pub struct OtlpHttp {
        handle: tokio::runtime::Handle,
        client: Https,
    }

    impl std::fmt::Debug for OtlpHttp {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("OtlpHttp")
        }
    }

    impl OtlpHttp {
        pub fn new(handle: tokio::runtime::Handle) -> Self {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = hyper_rustls::HttpsConnectorBuilder::new();
            let builder = match builder.with_provider_and_native_roots(provider.clone()) {
                Ok(b) => b,
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .map(|b| {
                            b.with_root_certificates(rustls::RootCertStore::empty())
                                .with_no_client_auth()
                        })
                        .unwrap_or_else(|_| unreachable!("ring supports the default versions")),
                ),
            };
            let connector = builder.https_or_http().enable_http1().build();
            let client = Client::builder(TokioExecutor::new()).build(connector);
            OtlpHttp { handle, client }
        }
    }

    #[async_trait::async_trait]
    impl HttpClient for OtlpHttp {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            let (parts, body) = request.into_parts();
            let request = hyper::Request::from_parts(parts, Full::new(body));
            self.handle
                .spawn(async move {
                    let response = client.request(request).await?;
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await?.to_bytes();
                    Ok::<_, HttpError>(Response::from_parts(parts, body))
                })
                .await?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_set() {
        assert_eq!(Settings::from_env(env(&[])).unwrap(), None);
        assert_eq!(
            Settings::from_env(env(&[("OTEL_SERVICE_NAME", "x")])).unwrap(),
            None
        );
        assert_eq!(
            Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])).unwrap(),
            None
        );
        assert_eq!(
            Settings::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])).unwrap(),
            Some(Settings {
                protocol: Protocol::HttpProtobuf
            })
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                Settings::from_env(env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    off
                ]))
                .unwrap(),
                None,
                "{off:?}"
            );
        }
    }

    #[test]
    fn the_traces_protocol_wins_over_the_generic_one() {
        let s = Settings::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert_eq!(s.unwrap().protocol, Protocol::Grpc);
        let err = Settings::from_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap_err();
        assert!(matches!(err, OtelError::UnsupportedProtocol(p) if p == "http/json"));
    }

    #[test]
    fn a_runs_trace_is_stable_and_distinct_per_uid() {
        let a = RunTrace::of("0b6a3c1e-5f1d-4c55-9a57-1f2f3a4b5c6d");
        assert_eq!(a, RunTrace::of("0b6a3c1e-5f1d-4c55-9a57-1f2f3a4b5c6d"));
        let b = RunTrace::of("0b6a3c1e-5f1d-4c55-9a57-1f2f3a4b5c6e");
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.trace_id().len(), 32);
        assert!(a.trace_id().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.root, a.job);
    }

    #[test]
    fn the_resource_defaults_yield_to_the_environment() {
        let r = resource(
            "dataguardian-operator",
            env(&[("POD_NAMESPACE", "dg"), ("POD_NAME", "op-0")]),
        );
        let get = |k: &'static str| r.get(&opentelemetry::Key::new(k)).map(|v| v.to_string());
        assert_eq!(get("k8s.namespace.name").as_deref(), Some("dg"));
        assert_eq!(get("k8s.pod.name").as_deref(), Some("op-0"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        // The process environment of the test has no OTEL_SERVICE_NAME: the role is the name.
        if std::env::var("OTEL_SERVICE_NAME").is_err()
            && std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_err()
        {
            assert_eq!(
                get("service.name").as_deref(),
                Some("dataguardian-operator")
            );
        }
        let named = resource(
            "dataguardian-operator",
            env(&[("OTEL_SERVICE_NAME", "backups")]),
        );
        assert!(
            named
                .get(&opentelemetry::Key::new("service.name"))
                .is_none_or(|v| v.to_string() != "dataguardian-operator")
        );
    }

    #[test]
    fn injection_needs_a_valid_context() {
        assert!(inject(&Context::new()).is_empty());
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes([1; 16]),
            SpanId::from_bytes([2; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        assert_eq!(
            inject(&cx),
            vec![(
                TRACEPARENT_ENV.to_string(),
                "00-01010101010101010101010101010101-0202020202020202-01".to_string()
            )]
        );
    }
}
