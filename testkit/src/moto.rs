//! A throwaway S3-compatible server: `moto_server` from `pip install 'moto[server]'`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use crate::error::{Error, Result};
use crate::net::{LOCALHOST, free_port_on, host_port, parse_loopback};
use crate::process::{ServiceProcess, TempDir, find_binary};

const INSTALL_HINT: &str = "pip install 'moto[server]'";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 3;

/// The access key id every kit S3 client uses (moto accepts any key).
pub const ACCESS_KEY_ID: &str = "AKIATESTKIT000000000";
/// The secret access key every kit S3 client uses (moto accepts any key).
pub const SECRET_ACCESS_KEY: &str = "testkit-secret-access-key-0000000000000";
/// The region of the kit's S3 clients.
pub const REGION: &str = "us-east-1";

/// Configures a [`Moto`] server before starting it.
#[derive(Debug, Clone)]
pub struct MotoBuilder {
    listen: String,
    port: Option<u16>,
    /// Serve HTTPS with this certificate and key; the CA that signed it.
    tls: Option<Tls>,
}

#[derive(Debug, Clone)]
struct Tls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: std::path::PathBuf,
}

impl Default for MotoBuilder {
    fn default() -> Self {
        MotoBuilder {
            listen: LOCALHOST.to_string(),
            port: None,
            tls: None,
        }
    }
}

impl MotoBuilder {
    /// Listens on this loopback IP (default `127.0.0.1`).
    pub fn listen(mut self, ip: &str) -> Self {
        self.listen = ip.to_owned();
        self
    }

    /// Uses this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Serves HTTPS (`https://` endpoint) with the server certificate of `certs`.
    pub fn tls(mut self, certs: &crate::TestCertificates) -> Self {
        self.tls = Some(Tls {
            cert: certs.cert(),
            key: certs.key(),
            ca: certs.ca(),
        });
        self
    }

    /// Starts `moto_server` and waits until it answers.
    pub fn start(self) -> Result<Moto> {
        let ip = parse_loopback(&self.listen)?;
        let binary = find_binary("moto_server", INSTALL_HINT)?;
        let dir = TempDir::new("moto")?;
        let mut attempt = 1;
        loop {
            let port = match self.port {
                Some(port) => port,
                None => free_port_on(ip)?,
            };
            let mut cmd = Command::new(&binary);
            cmd.arg("-H")
                .arg(ip.to_string())
                .arg("-p")
                .arg(port.to_string())
                .env("PYTHONUNBUFFERED", "1")
                .current_dir(dir.path());
            if let Some(tls) = &self.tls {
                cmd.arg("-c").arg(&tls.cert).arg("-k").arg(&tls.key);
            }
            let log = dir.path().join("moto.log");
            let _ = std::fs::remove_file(&log);
            let mut process = ServiceProcess::spawn("moto_server", cmd, &log, libc::SIGTERM)?;
            let ca = match &self.tls {
                Some(tls) => Some(std::fs::read(&tls.ca).map_err(|source| Error::Io {
                    context: format!("reading {}", tls.ca.display()),
                    source,
                })?),
                None => None,
            };
            match wait_ready(&mut process, ip, port, ca.clone()) {
                Ok(()) => {
                    return Ok(Moto {
                        process,
                        ip,
                        port,
                        dir,
                        ca,
                    });
                }
                Err(err) => {
                    process.kill();
                    let port_taken = matches!(&err, Error::Startup { log, .. } if log.contains("Address already in use"));
                    if !port_taken || self.port.is_some() || attempt == PORT_ATTEMPTS {
                        return Err(err);
                    }
                    attempt += 1;
                }
            }
        }
    }
}

/// Waits until this very process serves S3: its own log says it is listening (so a
/// different server that grabbed the port cannot fool us) and ListBuckets answers.
fn wait_ready(
    process: &mut ServiceProcess,
    ip: IpAddr,
    port: u16,
    ca: Option<Vec<u8>>,
) -> Result<()> {
    let start = Instant::now();
    let scheme = if ca.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", host_port(ip, port));
    loop {
        process.ensure_running("moto_server exited during startup")?;
        let listening =
            std::fs::read_to_string(process.log_path()).is_ok_and(|log| log.contains("Running on"));
        if listening {
            let client = client_trusting(&endpoint, ca.as_deref());
            let answered = block_on(async move { client.list_buckets().send().await.is_ok() });
            if answered {
                return Ok(());
            }
        }
        if start.elapsed() > STARTUP_TIMEOUT {
            return Err(process.startup_error(format!(
                "no S3 answer on {endpoint} after {STARTUP_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `moto_server`; killed and its temp dir removed on drop.
///
/// Moto keeps everything in memory and accepts any credentials; the kit's clients use
/// [`ACCESS_KEY_ID`] / [`SECRET_ACCESS_KEY`] in [`REGION`], path-style, over plain HTTP.
#[derive(Debug)]
pub struct Moto {
    process: ServiceProcess,
    ip: IpAddr,
    port: u16,
    dir: TempDir,
    /// The CA of its certificate (PEM), when it serves HTTPS.
    ca: Option<Vec<u8>>,
}

impl Moto {
    /// Starts a server on `127.0.0.1` and a free port.
    pub fn start() -> Result<Moto> {
        Moto::builder().start()
    }

    /// A builder for a server on another loopback IP or port.
    pub fn builder() -> MotoBuilder {
        MotoBuilder::default()
    }

    /// `http://<ip>:<port>` (`https://` when built with [`MotoBuilder::tls`]).
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", host_port(self.ip, self.port))
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The IP the server listens on.
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The region the kit's clients use.
    pub fn region(&self) -> &'static str {
        REGION
    }

    /// The access key id the kit's clients use.
    pub fn access_key_id(&self) -> &'static str {
        ACCESS_KEY_ID
    }

    /// The secret access key the kit's clients use.
    pub fn secret_access_key(&self) -> &'static str {
        SECRET_ACCESS_KEY
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.exit_status().is_none()
    }

    /// The server log.
    pub fn log(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("moto.log"), 200)
    }

    /// An S3 client for this server (trusting its CA when it serves HTTPS).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        client_trusting(&self.endpoint(), self.ca.as_deref())
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        create_bucket_on(self.s3_client(), name)
    }

    /// Creates a bucket with Object Lock enabled (versioning is turned on with it).
    pub fn create_bucket_with_object_lock(&self, name: &str) -> Result<()> {
        let client = self.s3_client();
        let name = name.to_owned();
        block_on(async move {
            client
                .create_bucket()
                .bucket(name)
                .object_lock_enabled_for_bucket(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("CreateBucket", e))
        })
    }

    /// Lists bucket names.
    pub fn list_buckets(&self) -> Result<Vec<String>> {
        let client = self.s3_client();
        block_on(async move {
            let out = client
                .list_buckets()
                .send()
                .await
                .map_err(|e| s3_error("ListBuckets", e))?;
            Ok(out
                .buckets()
                .iter()
                .filter_map(|b| b.name().map(str::to_owned))
                .collect())
        })
    }

    /// Uploads an object in one request.
    pub fn put_object(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) -> Result<()> {
        put_object_on(self.s3_client(), bucket, key, body.into())
    }

    /// Downloads a whole object.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        get_object_on(self.s3_client(), bucket, key)
    }

    /// Lists the keys under `prefix` (all pages), sorted.
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        list_keys_on(self.s3_client(), bucket, prefix)
    }

    /// Kills the server (SIGKILL), e.g. to make storage vanish mid-upload.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Creates a bucket with `client`.
pub(crate) fn create_bucket_on(client: aws_sdk_s3::Client, name: &str) -> Result<()> {
    let name = name.to_owned();
    block_on(async move {
        client
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error("CreateBucket", e))
    })
}

/// Uploads an object in one request with `client`.
pub(crate) fn put_object_on(
    client: aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<()> {
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    block_on(async move {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_error("PutObject", e))
    })
}

/// Downloads a whole object with `client`.
pub(crate) fn get_object_on(
    client: aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>> {
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    block_on(async move {
        let out = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", e))?;
        let bytes = out.body.collect().await.map_err(|e| Error::S3 {
            operation: "GetObject".into(),
            message: e.to_string(),
        })?;
        Ok(bytes.to_vec())
    })
}

/// Lists the keys under `prefix` (all pages), sorted, with `client`.
pub(crate) fn list_keys_on(
    client: aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>> {
    let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
    block_on(async move {
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        Ok(keys)
    })
}

/// An S3 client for any endpoint (e.g. a [`crate::FaultyProxy`] in front of moto) with
/// the kit's credentials, region and path-style addressing.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    client_trusting(endpoint, None)
}

/// [`s3_client`], trusting the CA in `ca` (PEM) besides the system's roots.
pub(crate) fn client_trusting(endpoint: &str, ca: Option<&[u8]>) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls;
    let mut builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    if let Some(ca) = ca {
        let context = tls::TlsContext::builder()
            .with_trust_store(tls::TrustStore::empty().with_pem_certificate(ca.to_vec()))
            .build()
            .expect("a TLS context from the test CA");
        builder = builder.tls_context(context);
    }
    let http = builder.build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "testkit",
        ))
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn s3_error<E, R>(operation: &str, err: aws_sdk_s3::error::SdkError<E, R>) -> Error
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let message = match err.as_service_error().and_then(|e| e.code()) {
        Some(code) => format!(
            "{code}: {}",
            err.as_service_error()
                .and_then(|e| e.message())
                .unwrap_or("(no message)")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(&err).to_string(),
    };
    Error::S3 {
        operation: operation.to_owned(),
        message,
    }
}

/// Runs a future to completion on a private runtime in its own thread, so the
/// blocking helpers work both in plain `#[test]`s and inside a Tokio runtime.
pub(crate) fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a Tokio runtime")
            .block_on(fut)
    })
    .join()
    .expect("S3 helper thread panicked")
}
