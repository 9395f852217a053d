//! KMS on loopback: moto serves the KMS JSON API beside S3 ([`Moto::kms`] calls it), and
//! [`KmsKeyStateProxy`] in front of it answers `Encrypt`/`Decrypt` for a disabled key or one
//! pending deletion the way AWS KMS does (`DisabledException`, `KMSInvalidStateException`).
//! moto 5 records a key's state but still encrypts and decrypts with a disabled or
//! pending-deletion key, so crypto-erasure cannot be observed against moto alone.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::moto::{Moto, block_on};
use crate::net::{LOCALHOST, host_port, loopback};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sends one KMS JSON request (`TrentService.<operation>`) to `upstream` with `headers` (the
/// kit's SigV4-shaped authorization, so moto picks the kit's region); returns status and body.
async fn kms_request(
    client: &HttpClient,
    upstream: SocketAddr,
    operation: &str,
    body: Bytes,
    authorization: Option<HeaderValue>,
) -> std::result::Result<(u16, Bytes), String> {
    let mut req = Request::post(format!("http://{upstream}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("TrentService.{operation}"));
    if let Some(auth) = authorization {
        req = req.header("authorization", auth);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

fn kit_authorization(region: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/{region}/kms/aws4_request, SignedHeaders=host, Signature=00",
        crate::moto::ACCESS_KEY_ID
    ))
    .expect("ascii header")
}

impl Moto {
    /// Calls the KMS API: `operation` (e.g. `CreateKey`, `DisableKey`) with a JSON `body`;
    /// returns the JSON reply, or an error with moto's reply.
    pub fn kms(&self, operation: &str, body: Value) -> Result<Value> {
        let upstream = self.addr();
        let region = self.region();
        let operation = operation.to_owned();
        block_on(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            let (status, reply) = kms_request(
                &client,
                upstream,
                &operation,
                Bytes::from(body.to_string()),
                Some(kit_authorization(region)),
            )
            .await
            .map_err(|message| Error::S3 {
                operation: format!("KMS {operation}"),
                message,
            })?;
            if status != 200 {
                return Err(Error::S3 {
                    operation: format!("KMS {operation}"),
                    message: format!("HTTP {status}: {}", String::from_utf8_lossy(&reply)),
                });
            }
            if reply.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&reply).map_err(|e| Error::S3 {
                operation: format!("KMS {operation}"),
                message: format!("reply is not JSON: {e}"),
            })
        })
    }

    /// Creates a symmetric KMS key; returns its key id.
    pub fn kms_create_key(&self, description: &str) -> Result<String> {
        let out = self.kms(
            "CreateKey",
            serde_json::json!({"Description": description, "KeyUsage": "ENCRYPT_DECRYPT"}),
        )?;
        out["KeyMetadata"]["KeyId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::S3 {
                operation: "KMS CreateKey".into(),
                message: format!("no KeyId in {out}"),
            })
    }
}

/// A proxy in front of moto's KMS that refuses `Encrypt`/`Decrypt` with a key that is disabled
/// (`DisabledException`) or pending deletion (`KMSInvalidStateException`), as AWS KMS does,
/// by asking moto's `DescribeKey` first; every other request is forwarded unchanged.
#[derive(Debug)]
pub struct KmsKeyStateProxy {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KmsKeyStateProxy {
    /// Proxies a free port on `127.0.0.1` to moto at `upstream` (loopback).
    pub fn start(upstream: SocketAddr) -> Result<KmsKeyStateProxy> {
        loopback(upstream.ip())?;
        let listen = loopback(IpAddr::V4(LOCALHOST))?;
        let listener = std::net::TcpListener::bind((listen, 0))
            .context(|| format!("binding the KMS proxy on {listen}"))?;
        listener
            .set_nonblocking(true)
            .context(|| "making the KMS proxy listener non-blocking".to_owned())?;
        let addr = listener
            .local_addr()
            .context(|| "reading the KMS proxy address".to_owned())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context(|| "building the KMS proxy runtime".to_owned())?;
        let thread = std::thread::Builder::new()
            .name("testkit-kms-state".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
                    tokio::select! {
                        _ = stopped => {}
                        _ = serve(listener, upstream, client) => {}
                    }
                });
                runtime.shutdown_background();
            })
            .context(|| "spawning the KMS proxy thread".to_owned())?;
        Ok(KmsKeyStateProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://<ip>:<port>` of the proxy, for KMS clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", host_port(self.addr.ip(), self.addr.port()))
    }
}

impl Drop for KmsKeyStateProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, upstream: SocketAddr, client: HttpClient) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, upstream, client.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn json_reply(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    resp
}

fn kms_error(code: &str, message: &str) -> Response<Full<Bytes>> {
    json_reply(
        400,
        Bytes::from(serde_json::json!({"__type": code, "message": message}).to_string()),
    )
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    client: HttpClient,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(kms_error("ValidationException", "request body broke off"));
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if matches!(
        target.as_str(),
        "TrentService.Encrypt" | "TrentService.Decrypt"
    ) && let Some(key_id) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["KeyId"].as_str().map(str::to_owned))
    {
        let describe = Bytes::from(serde_json::json!({"KeyId": key_id}).to_string());
        let auth = parts.headers.get("authorization").cloned();
        if let Ok((200, reply)) =
            kms_request(&client, upstream, "DescribeKey", describe, auth).await
            && let Ok(meta) = serde_json::from_slice::<Value>(&reply)
        {
            let arn = meta["KeyMetadata"]["Arn"].as_str().unwrap_or(&key_id);
            match meta["KeyMetadata"]["KeyState"].as_str() {
                Some("Disabled") => {
                    return Ok(kms_error(
                        "DisabledException",
                        &format!("{arn} is disabled."),
                    ));
                }
                Some("PendingDeletion") => {
                    return Ok(kms_error(
                        "KMSInvalidStateException",
                        &format!("{arn} is pending deletion."),
                    ));
                }
                _ => {}
            }
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(u) => u,
        Err(_) => return Ok(kms_error("ValidationException", "bad request URI")),
    };
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                return Ok(kms_error(
                    "KMSInternalException",
                    "upstream reply broke off",
                ));
            };
            parts.headers.remove(hyper::header::TRANSFER_ENCODING);
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Full::new(body)))
        }
        Err(_) => Ok(kms_error("KMSInternalException", "upstream unreachable")),
    }
}
