//! The real operator binary as a child process: start, graceful stop (SIGTERM, which releases
//! the Lease), `/readyz` polling, and its memory and CPU figures from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One `dataguardian operator` process.
pub struct OperatorProcess {
    child: Option<Child>,
    pub metrics_addr: String,
    log: PathBuf,
    started: Instant,
}

/// How the operator is started (the same for every start in a benchmark).
#[derive(Debug, Clone)]
pub struct OperatorCommand {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub lease_namespace: String,
    pub log_dir: PathBuf,
    /// `NS/NAME` of the audit BackupStorage (`--audit-storage`), if the trail is on.
    pub audit_storage: Option<String>,
}

impl OperatorCommand {
    /// Starts the operator; `tag` names its log file.
    pub fn spawn(&self, tag: &str) -> Result<OperatorProcess> {
        let port = free_port()?;
        let metrics_addr = format!("127.0.0.1:{port}");
        let log = self.log_dir.join(format!("operator-{tag}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let started = Instant::now();
        let child = Command::new(&self.binary)
            .arg("operator")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("DG_METRICS_ADDR", &metrics_addr)
            .env("POD_NAMESPACE", &self.lease_namespace)
            .env("POD_NAME", format!("bench-{tag}"))
            .env("DG_LEASE_DURATION_SECONDS", "15")
            .env("DG_AGENT_IMAGE", "ghcr.io/dataguardian/dataguardian:bench")
            .env("DG_LOG_FORMAT", "json")
            // Several operators share this host: each serves its webhook on a port of its own.
            .env("DG_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("DG_EGRESS_ALLOW_CIDRS", "127.0.0.0/8")
            .env(
                "DG_AUDIT_STORAGE",
                self.audit_storage.as_deref().unwrap_or_default(),
            )
            .env(
                "RUST_LOG",
                std::env::var("DG_BENCH_RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        Ok(OperatorProcess {
            child: Some(child),
            metrics_addr,
            log,
            started,
        })
    }
}

/// A free loopback port (bound, then released for the operator to take).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss: u64,
    /// Current resident set size (VmRSS), bytes.
    pub rss: u64,
    /// Of which anonymous memory (heap, stacks), bytes.
    pub rss_anon: u64,
    /// Of which file-backed pages (the binary's code and read-only data), bytes.
    pub rss_file: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

impl ProcStats {
    fn read(pid: u32) -> Result<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = |field: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(field))
                .with_context(|| format!("{field} missing in /proc/{pid}/status"))?;
            let value: u64 = line
                .split_whitespace()
                .nth(1)
                .context("no value")?
                .parse()?;
            Ok(value * 1024)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("bad /proc stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
            + fields.get(12).context("stime")?.parse::<u64>()?;
        let hz = clock_ticks_per_second();
        Ok(ProcStats {
            peak_rss: kib("VmHWM:")?,
            rss: kib("VmRSS:")?,
            rss_anon: kib("RssAnon:")?,
            rss_file: kib("RssFile:")?,
            cpu: Duration::from_secs_f64(ticks as f64 / hz as f64),
        })
    }
}

/// Clock ticks per second of /proc/*/stat times (`getconf CLK_TCK`, 100 when unknown).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&v: &u64| v > 0)
        .unwrap_or(100)
}

impl OperatorProcess {
    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Memory and CPU now.
    pub fn stats(&self) -> Result<ProcStats> {
        ProcStats::read(self.pid().context("operator not running")?)
    }

    /// Fails when the process has exited (with the tail of its log).
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "operator exited ({status}); log tail:\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Polls `/readyz` every 10 ms; returns the time from process start to the first 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http_get(&self.metrics_addr, "/readyz").await {
                return Ok(self.started.elapsed());
            }
            self.ensure_running()?;
            if Instant::now() > deadline {
                let why = http_get(&self.metrics_addr, "/readyz")
                    .await
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                bail!(
                    "operator not ready after {timeout:?} ({why}); log tail:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then wait (SIGKILL after `grace`). Returns how long the shutdown took.
    pub fn stop(&mut self, grace: Duration) -> Duration {
        let t = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            while t.elapsed() < grace {
                if let Ok(Some(_)) = child.try_wait() {
                    return t.elapsed();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        t.elapsed()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A plain HTTP/1.1 GET; returns the status code and body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .context("no status line")?
        .parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
