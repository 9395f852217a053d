//! An HTTP proxy in front of an S3 server that makes it misbehave on purpose: it hides the
//! checksum extension, rewrites ETags (an opaque value, or an MD5 that is wrong: a server that
//! lies), corrupts object bodies on their way back (a corrupted stored object), or answers the
//! first requests with an error of its choosing (throttling, 5xx, access denied). Requests are
//! forwarded unchanged (same `Host`, so SigV4 signatures still verify upstream); loopback only.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::error::{IoContext, Result};
use crate::net::{LOCALHOST, host_port, loopback};

/// How the proxy rewrites the `ETag` of replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagRewrite {
    /// Leave ETags alone.
    Keep,
    /// Replace every ETag with an opaque value that is not an MD5 (as under SSE-KMS).
    Opaque,
    /// Replace the hex digest of every ETag with another one of the same shape (`-<parts>` kept):
    /// the server claims to hold bytes it does not.
    WrongMd5,
}

/// An error reply the proxy sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// HTTP status, e.g. 503.
    pub status: u16,
    /// S3 error code in the XML body, e.g. `SlowDown`.
    pub code: String,
    /// How many matching requests get it (then they pass again); `u32::MAX`: all of them.
    pub times: u32,
    /// Only requests with this method (e.g. `PUT`); `None`: any.
    pub method: Option<String>,
}

/// What the proxy does. Everything off (the default) forwards faithfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TamperPlan {
    /// Remove every `x-amz-checksum-*` header from replies (a server without the extension).
    pub strip_checksums: bool,
    /// ETag rewriting.
    pub etags: EtagRewrite,
    /// Rewrite ETags only in replies to HEAD (what a client reads to confirm an upload); the
    /// replies to the upload requests themselves stay true.
    pub etags_on_head_only: bool,
    /// Flip one byte in the middle of every successful GET body (a corrupted stored object).
    pub corrupt_get_bodies: bool,
    /// Answer matching requests with an error.
    pub inject: Option<Injection>,
}

impl Default for TamperPlan {
    fn default() -> Self {
        TamperPlan {
            strip_checksums: false,
            etags: EtagRewrite::Keep,
            etags_on_head_only: false,
            corrupt_get_bodies: false,
            inject: None,
        }
    }
}

/// Counters of what the proxy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TamperStats {
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an injected error.
    pub injected: u64,
    /// Replies whose ETag was rewritten.
    pub etags_rewritten: u64,
    /// GET bodies corrupted.
    pub bodies_corrupted: u64,
    /// GET requests forwarded.
    pub gets: u64,
}

#[derive(Debug)]
struct State {
    plan: TamperPlan,
    injected_for_plan: u32,
    stats: TamperStats,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    upstream: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The tampering proxy; stops on drop.
#[derive(Debug)]
pub struct S3TamperProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3TamperProxy {
    /// Proxies a free port on `127.0.0.1` to the S3 server at `upstream` (loopback).
    pub fn start(upstream: SocketAddr, plan: TamperPlan) -> Result<S3TamperProxy> {
        loopback(upstream.ip())?;
        let listen = loopback(IpAddr::V4(LOCALHOST))?;
        let listener = std::net::TcpListener::bind((listen, 0))
            .context(|| format!("binding the tamper proxy on {listen}"))?;
        listener
            .set_nonblocking(true)
            .context(|| "making the proxy listener non-blocking".to_owned())?;
        let addr = listener
            .local_addr()
            .context(|| "reading the proxy address".to_owned())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                plan,
                injected_for_plan: 0,
                stats: TamperStats::default(),
            }),
            upstream,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context(|| "building the proxy runtime".to_owned())?;
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("testkit-s3-tamper".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(_) => return,
                        };
                        let client: Client<HttpConnector, Full<Bytes>> =
                            Client::builder(TokioExecutor::new()).build_http();
                        tokio::select! {
                            _ = stopped => {}
                            _ = serve(listener, shared, client) => {}
                        }
                    });
                    runtime.shutdown_background();
                })
                .context(|| "spawning the proxy thread".to_owned())?
        };
        Ok(S3TamperProxy {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://<ip>:<port>` of the proxy, for S3 clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", host_port(self.addr.ip(), self.addr.port()))
    }

    /// The proxy's listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches to another plan (injection counts start over).
    pub fn set_plan(&self, plan: TamperPlan) {
        let mut state = self.shared.lock();
        state.plan = plan;
        state.injected_for_plan = 0;
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> TamperStats {
        self.shared.lock().stats
    }
}

impl Drop for S3TamperProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    client: Client<HttpConnector, Full<Bytes>>,
) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let (shared, client) = (Arc::clone(&shared), client.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                handle(req, Arc::clone(&shared), client.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn error_reply(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>testkit</RequestId></Error>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

/// Another hex digest of the same length (every hex digit moved by one).
fn wrong_hex(hex: &str) -> String {
    hex.chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => std::char::from_digit((d + 1) % 16, 16).unwrap_or('0'),
            None => c,
        })
        .collect()
}

fn rewrite_etag(value: &str, how: EtagRewrite) -> String {
    let inner = value.trim().trim_matches('"');
    match how {
        EtagRewrite::Keep => value.to_string(),
        EtagRewrite::Opaque => format!("\"opaque{}\"", inner.len()),
        EtagRewrite::WrongMd5 => match inner.split_once('-') {
            Some((digest, parts)) => format!("\"{}-{parts}\"", wrong_hex(digest)),
            None => format!("\"{}\"", wrong_hex(inner)),
        },
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: Client<HttpConnector, Full<Bytes>>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let (mut parts, body) = req.into_parts();
    // Read the whole request first, so an injected reply reaches a client that is still sending.
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error_reply(400, "IncompleteBody", "request body broke off")),
    };
    let plan = {
        let mut state = shared.lock();
        state.stats.requests += 1;
        let inject = state.plan.inject.clone().filter(|i| {
            i.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
        });
        if let Some(i) = inject
            && state.injected_for_plan < i.times
        {
            state.injected_for_plan += 1;
            state.stats.injected += 1;
            return Ok(error_reply(
                i.status,
                &i.code,
                "injected by the testkit proxy",
            ));
        }
        state.plan.clone()
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match format!("http://{}{path}", shared.upstream).parse() {
        Ok(u) => u,
        Err(_) => return Ok(error_reply(400, "InvalidURI", "bad request URI")),
    };
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    let upstream = match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(r) => r,
        Err(_) => return Ok(error_reply(502, "BadGateway", "upstream unreachable")),
    };
    let (mut parts, body) = upstream.into_parts();
    let mut body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return Ok(error_reply(502, "BadGateway", "upstream reply broke off")),
    };
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    let mut stats = TamperStats::default();
    if plan.strip_checksums {
        let names: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-amz-checksum-"))
            .cloned()
            .collect();
        for name in names {
            parts.headers.remove(name);
        }
        // CompleteMultipartUpload answers with the checksum in its XML body.
        if let Ok(text) = std::str::from_utf8(&body)
            && text.contains("<Checksum")
        {
            let mut out = String::new();
            let mut rest = text;
            while let Some(start) = rest.find("<Checksum") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 1..];
                let name_end = after.find('>').unwrap_or(after.len());
                let name = &after[..name_end];
                let close = format!("</{name}>");
                match rest.find(&close) {
                    Some(end) => rest = &rest[end + close.len()..],
                    None => {
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            body = out.into_bytes();
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
        }
    }
    if plan.etags != EtagRewrite::Keep && (!plan.etags_on_head_only || method == Method::HEAD) {
        if let Some(v) = parts
            .headers
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
        {
            let new = rewrite_etag(v, plan.etags);
            if let Ok(value) = HeaderValue::from_str(&new) {
                parts.headers.insert(hyper::header::ETAG, value);
                stats.etags_rewritten += 1;
            }
        }
        if !plan.etags_on_head_only
            && let Ok(text) = std::str::from_utf8(&body)
            && let (Some(start), Some(end)) = (text.find("<ETag>"), text.find("</ETag>"))
            && start < end
        {
            let etag = text[start + 6..end].replace("&quot;", "\"");
            let new = rewrite_etag(&etag, plan.etags).replace('"', "&quot;");
            body = format!("{}<ETag>{new}{}", &text[..start], &text[end..]).into_bytes();
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            stats.etags_rewritten += 1;
        }
    }
    if method == Method::GET {
        stats.gets += 1;
        if plan.corrupt_get_bodies && parts.status.is_success() && !body.is_empty() {
            let mid = body.len() / 2;
            body[mid] ^= 0x01;
            stats.bodies_corrupted += 1;
        }
    }
    {
        let mut state = shared.lock();
        state.stats.etags_rewritten += stats.etags_rewritten;
        state.stats.bodies_corrupted += stats.bodies_corrupted;
        state.stats.gets += stats.gets;
    }
    Ok(Response::from_parts(parts, Full::new(Bytes::from(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_rewritten_in_shape() {
        assert_eq!(
            rewrite_etag(
                "\"0123456789abcdef0123456789abcdef-3\"",
                EtagRewrite::WrongMd5
            ),
            "\"123456789abcdef0123456789abcdef0-3\""
        );
        assert_eq!(rewrite_etag("\"0f\"", EtagRewrite::WrongMd5), "\"10\"");
        assert_eq!(rewrite_etag("\"0f\"", EtagRewrite::Opaque), "\"opaque2\"");
        assert_eq!(rewrite_etag("\"0f\"", EtagRewrite::Keep), "\"0f\"");
    }
}
