//! A fast S3-compatible server: `s3s-fs` from crates.io (`cargo install s3s-fs@0.14.1 --locked
//! --features binary`), objects as plain files under a temp dir.
//!
//! Unlike moto it enforces SigV4 (with the kit's keys, [`crate::ACCESS_KEY_ID`] /
//! [`crate::SECRET_ACCESS_KEY`]) and, like many S3-compatible servers in the field, it does not
//! implement the checksum extension for multipart uploads: a HEAD returns no
//! `x-amz-checksum-sha256` for them, only an ETag (the MD5 of the part MD5s, `-<parts>`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::moto::{
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, block_on, client_trusting, create_bucket_on, get_object_on,
    list_keys_on, put_object_on,
};
use crate::net::{LOCALHOST, free_port_on, host_port, parse_loopback};
use crate::process::{ServiceProcess, TempDir, find_binary};

const INSTALL_HINT: &str = "cargo install s3s-fs@0.14.1 --locked --features binary";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;

/// Configures an [`S3sFs`] server before starting it.
#[derive(Debug, Clone)]
pub struct S3sFsBuilder {
    listen: String,
    port: Option<u16>,
}

impl Default for S3sFsBuilder {
    fn default() -> Self {
        S3sFsBuilder {
            listen: LOCALHOST.to_string(),
            port: None,
        }
    }
}

impl S3sFsBuilder {
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

    /// Starts `s3s-fs` and waits until it answers a signed request.
    pub fn start(self) -> Result<S3sFs> {
        let ip = parse_loopback(&self.listen)?;
        let binary = find_binary("s3s-fs", INSTALL_HINT)?;
        let dir = TempDir::new("s3s")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
        let mut attempt = 1;
        loop {
            let port = match self.port {
                Some(port) => port,
                None => free_port_on(ip)?,
            };
            let mut cmd = Command::new(&binary);
            cmd.arg("--host")
                .arg(ip.to_string())
                .arg("--port")
                .arg(port.to_string())
                .arg("--access-key")
                .arg(ACCESS_KEY_ID)
                .arg("--secret-key")
                .arg(SECRET_ACCESS_KEY)
                .arg(&data)
                .env("RUST_LOG", "info")
                .current_dir(dir.path());
            let log = dir.path().join("s3s-fs.log");
            let _ = std::fs::remove_file(&log);
            let mut process = ServiceProcess::spawn("s3s-fs", cmd, &log, libc::SIGTERM)?;
            match wait_ready(&mut process, ip, port) {
                Ok(()) => {
                    return Ok(S3sFs {
                        process,
                        ip,
                        port,
                        dir,
                        data,
                    });
                }
                Err(err) => {
                    process.kill();
                    let port_taken = matches!(&err, Error::Startup { log, .. } if log.contains("Address already in use") || log.contains("AddrInUse"));
                    if !port_taken || self.port.is_some() || attempt == PORT_ATTEMPTS {
                        return Err(err);
                    }
                    attempt += 1;
                }
            }
        }
    }
}

/// Waits until this very process serves S3: its own log says it is running (a different server
/// that grabbed the port cannot fool us) and a signed ListBuckets answers.
fn wait_ready(process: &mut ServiceProcess, ip: IpAddr, port: u16) -> Result<()> {
    let start = Instant::now();
    let endpoint = format!("http://{}", host_port(ip, port));
    loop {
        process.ensure_running("s3s-fs exited during startup")?;
        let running = std::fs::read_to_string(process.log_path())
            .is_ok_and(|log| log.contains("server is running"));
        if running {
            let client = client_trusting(&endpoint, None);
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

/// A running `s3s-fs`; killed and its temp dir (with every object) removed on drop.
#[derive(Debug)]
pub struct S3sFs {
    process: ServiceProcess,
    ip: IpAddr,
    port: u16,
    dir: TempDir,
    data: PathBuf,
}

impl S3sFs {
    /// Starts a server on `127.0.0.1` and a free port.
    pub fn start() -> Result<S3sFs> {
        S3sFs::builder().start()
    }

    /// A builder for a server on another loopback IP or port.
    pub fn builder() -> S3sFsBuilder {
        S3sFsBuilder::default()
    }

    /// `http://<ip>:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", host_port(self.ip, self.port))
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The directory holding the buckets (one subdirectory each).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data
    }

    /// The file holding object `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.data.join(bucket).join(key)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server log.
    pub fn log(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("s3s-fs.log"), 200)
    }

    /// An S3 client for this server (the kit's keys, path-style).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        client_trusting(&self.endpoint(), None)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        create_bucket_on(self.s3_client(), name)
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

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
