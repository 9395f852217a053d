//! A real OTLP trace receiver on loopback, built on the official OpenTelemetry protobuf
//! definitions (`opentelemetry-proto`): OTLP/gRPC (`TraceService/Export`, served by tonic) and
//! OTLP/HTTP with binary protobuf (`POST /v1/traces`, served by hyper). Every span it receives
//! is kept, flattened into a [`ReceivedSpan`], for tests to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

use crate::error::{Error, Result};

/// One received span with everything a test may look at, ids as lowercase hex.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// The resource's attributes, values rendered as text.
    pub resource: Vec<(String, String)>,
    /// The span's attributes, values rendered as text.
    pub attributes: Vec<(String, String)>,
    /// The span's events: name and attributes.
    pub events: Vec<(String, Vec<(String, String)>)>,
    /// The status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// The status message.
    pub status_message: String,
    /// Which transport brought it.
    pub transport: Transport,
}

impl ReceivedSpan {
    /// The value of attribute `key`, if any.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of resource attribute `key`, if any.
    pub fn resource_attribute(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every text this span carries (name, attributes, events, status, resource): what a
    /// secrets scan must look through.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = vec![self.name.as_str(), self.status_message.as_str()];
        for (k, v) in self.resource.iter().chain(self.attributes.iter()) {
            out.push(k);
            out.push(v);
        }
        for (name, attrs) in &self.events {
            out.push(name);
            for (k, v) in attrs {
                out.push(k);
                out.push(v);
            }
        }
        out
    }
}

/// The OTLP transport a span arrived by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP, binary protobuf.
    HttpProtobuf,
}

type Store = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver: both transports on their own loopback ports, served from a thread of its own;
/// stopped when dropped.
pub struct OtlpReceiver {
    grpc: SocketAddr,
    http: SocketAddr,
    spans: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("grpc", &self.grpc)
            .field("http", &self.http)
            .finish()
    }
}

impl OtlpReceiver {
    /// Starts both servers on 127.0.0.1 (ports chosen by the kernel).
    pub fn start() -> Result<OtlpReceiver> {
        let io = |context: &str| {
            let context = context.to_string();
            move |source| Error::Io { context, source }
        };
        let grpc_listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding the OTLP/gRPC port"))?;
        let http_listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(io("binding the OTLP/HTTP port"))?;
        for l in [&grpc_listener, &http_listener] {
            l.set_nonblocking(true)
                .map_err(io("making an OTLP listener non-blocking"))?;
        }
        let grpc = grpc_listener
            .local_addr()
            .map_err(io("reading the OTLP/gRPC address"))?;
        let http = http_listener
            .local_addr()
            .map_err(io("reading the OTLP/HTTP address"))?;
        let spans: Store = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the OTLP receiver's runtime"))?;
        let store = spans.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let grpc_listener = tokio::net::TcpListener::from_std(grpc_listener)
                        .expect("a tokio listener from a non-blocking std listener");
                    let http_listener = tokio::net::TcpListener::from_std(http_listener)
                        .expect("a tokio listener from a non-blocking std listener");
                    let (quit, _) = tokio::sync::broadcast::channel::<()>(1);
                    let mut grpc_quit = quit.subscribe();
                    let grpc_server = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(GrpcReceiver(store.clone())))
                        .serve_with_incoming_shutdown(
                            tonic::transport::server::TcpIncoming::from(grpc_listener),
                            async move {
                                let _ = grpc_quit.recv().await;
                            },
                        );
                    let grpc_task = tokio::spawn(grpc_server);
                    let http_task =
                        tokio::spawn(serve_http(http_listener, store, quit.subscribe()));
                    let _ = stopped.await;
                    let _ = quit.send(());
                    let _ = grpc_task.await;
                    let _ = http_task.await;
                });
            })
            .map_err(io("starting the OTLP receiver's thread"))?;
        Ok(OtlpReceiver {
            grpc,
            http,
            spans,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` of the gRPC transport (`OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:PORT` of the HTTP transport (`OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`; exporters append `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the spans received satisfy `done`, then returns them all.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "{what} (received {} spans: {:?})",
                        spans.len(),
                        spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
                    ),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct GrpcReceiver(Store);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner(), Transport::Grpc);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    store: Store,
    mut quit: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = quit.recv() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle_http(req, store.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle_http(
    req: Request<hyper::body::Incoming>,
    store: Store,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        r
    };
    if req.method() != Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(reply(StatusCode::NOT_FOUND, Bytes::new()));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            keep(&store, request, Transport::HttpProtobuf);
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            Ok(reply(StatusCode::OK, Bytes::from(response.encode_to_vec())))
        }
        Err(_) => Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    }
}

fn keep(store: &Store, request: ExportTraceServiceRequest, transport: Transport) {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .map(|r| flatten(&r.attributes))
            .unwrap_or_default();
        let service = resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                let status = span.status.unwrap_or_default();
                out.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    service: service.clone(),
                    resource: resource.clone(),
                    attributes: flatten(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), flatten(&e.attributes)))
                        .collect(),
                    status_code: status.code,
                    status_message: status.message,
                    transport,
                });
            }
        }
    }
    store.lock().unwrap_or_else(|e| e.into_inner()).extend(out);
}

fn flatten(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => {
            a.values.iter().map(text).collect::<Vec<_>>().join(",")
        }
        Some(any_value::Value::KvlistValue(l)) => flatten(&l.values)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        Some(any_value::Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(name: &str) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("svc".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        name: name.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn http_protobuf_posts_are_decoded_and_kept() {
        let receiver = OtlpReceiver::start().unwrap();
        let body = request("over-http").encode_to_vec();
        let mut stream = std::net::TcpStream::connect(receiver.http).unwrap();
        use std::io::{Read, Write};
        write!(
            stream,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(&body).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let spans = receiver.spans();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "over-http");
        assert_eq!(spans[0].service, "svc");
        assert_eq!(spans[0].trace_id, "ab".repeat(16));
        assert_eq!(spans[0].span_id, "cd".repeat(8));
        assert_eq!(spans[0].parent_span_id, "");
        assert_eq!(spans[0].transport, Transport::HttpProtobuf);
    }

    #[test]
    fn other_paths_and_garbage_are_refused() {
        let receiver = OtlpReceiver::start().unwrap();
        for (path, body) in [("/v1/logs", vec![]), ("/v1/traces", vec![0xff, 0xff, 0xff])] {
            let mut stream = std::net::TcpStream::connect(receiver.http).unwrap();
            use std::io::{Read, Write};
            write!(
                stream,
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(&body).unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            assert!(!answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        }
        assert!(receiver.spans().is_empty());
    }
}
