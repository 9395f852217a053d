//! A real SMTP server (Python's `aiosmtpd`) on a loopback port: STARTTLS or implicit TLS
//! with a [`crate::TestCertificates`] certificate, optional AUTH (PLAIN/LOGIN) with one
//! account. Every message it accepts is parsed with Python's `email` package and written as a
//! JSON file ([`ReceivedMail`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net::{free_port_on, parse_loopback};
use crate::process::{ServiceProcess, TempDir, find_binary};
use crate::tls::TestCertificates;

const INSTALL_HINT: &str = "pip install aiosmtpd";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

const SERVER: &str = r#"
import email, email.policy, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

host, port, mode, cert, key, user, password, outdir = sys.argv[1:9]
count = 0

class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["subject"] or ""),
            "message_id": str(msg["message-id"] or ""),
            "from": str(msg["from"] or ""),
            "to": str(msg["to"] or ""),
            "headers": [[k, str(v)] for k, v in msg.items()],
            "body": body.get_content() if body is not None else "",
            "tls": session.ssl is not None or mode == "tls",
            "authenticated": bool(session.authenticated),
            "raw": envelope.original_content.decode("utf-8", "replace"),
        }
        count += 1
        path = os.path.join(outdir, "%06d.json" % count)
        with open(path + ".tmp", "w") as f:
            json.dump(rec, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
auth = dict(authenticator=authenticator, auth_required=True) if user else {}
if mode == "starttls":
    c = Controller(Handler(), hostname=host, port=int(port), tls_context=ctx,
                   require_starttls=True, server_hostname="localhost", **auth)
elif mode == "tls":
    c = Controller(Handler(), hostname=host, port=int(port), ssl_context=ctx,
                   auth_require_tls=False, server_hostname="localhost", **auth)
else:
    c = Controller(Handler(), hostname=host, port=int(port), **auth)
c.start()
print("smtp ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// How the server protects connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Plain, upgraded with STARTTLS (required before MAIL and AUTH).
    StartTls,
    /// TLS from the first byte.
    ImplicitTls,
    /// No TLS offered at all (to prove a client refuses to send in the clear).
    Plain,
}

/// One message the server accepted, as parsed by Python's `email` package.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub headers: Vec<(String, String)>,
    /// The text/plain body, decoded.
    pub body: String,
    /// Whether the session was encrypted when the message was sent.
    pub tls: bool,
    /// Whether the client had authenticated.
    pub authenticated: bool,
    /// The message as received (headers and encoded body).
    pub raw: String,
}

impl ReceivedMail {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A builder for [`SmtpServer`].
#[derive(Debug)]
pub struct SmtpServerBuilder {
    listen: String,
    mode: SmtpMode,
    auth: Option<(String, String)>,
}

/// A running aiosmtpd; stopped and its temp dir removed on drop.
#[derive(Debug)]
pub struct SmtpServer {
    process: ServiceProcess,
    ip: IpAddr,
    port: u16,
    dir: TempDir,
    certs: TestCertificates,
}

impl SmtpServer {
    /// A server with `mode` on 127.0.0.1 and a fresh test CA.
    pub fn builder(mode: SmtpMode) -> SmtpServerBuilder {
        SmtpServerBuilder {
            listen: "127.0.0.1".into(),
            mode,
            auth: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM of the CA that signed its certificate (for `127.0.0.1` and `localhost`).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.certs.ca()).unwrap_or_default()
    }

    /// The messages received so far, in order.
    pub fn received(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Waits up to `timeout` for at least `n` messages.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > timeout {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log (aiosmtpd's own lines, the session transcript on failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}

impl SmtpServerBuilder {
    /// Listen on another loopback address.
    pub fn listen(mut self, ip: &str) -> Self {
        self.listen = ip.into();
        self
    }

    /// Require AUTH with this account.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    pub fn start(self) -> Result<SmtpServer> {
        let ip = parse_loopback(&self.listen)?;
        let python = find_binary("python3", "apt-get install python3")?;
        let check = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .map_err(|source| Error::Io {
                context: "running python3".into(),
                source,
            })?;
        if !check.status.success() {
            return Err(Error::MissingBinary {
                binary: "aiosmtpd (Python package)".into(),
                hint: INSTALL_HINT.into(),
            });
        }
        let certs = TestCertificates::generate()?;
        let dir = TempDir::new("smtp")?;
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail).map_err(|source| Error::Io {
            context: format!("creating {}", mail.display()),
            source,
        })?;
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER).map_err(|source| Error::Io {
            context: format!("writing {}", script.display()),
            source,
        })?;
        let port = free_port_on(ip)?;
        let (user, password) = self.auth.clone().unwrap_or_default();
        let mode = match self.mode {
            SmtpMode::StartTls => "starttls",
            SmtpMode::ImplicitTls => "tls",
            SmtpMode::Plain => "plain",
        };
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg(ip.to_string())
            .arg(port.to_string())
            .arg(mode)
            .arg(certs.cert())
            .arg(certs.key())
            .arg(user)
            .arg(password)
            .arg(&mail)
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(dir.path());
        let log = dir.path().join("smtp.log");
        let mut process = ServiceProcess::spawn("aiosmtpd", cmd, &log, libc::SIGTERM)?;
        let start = Instant::now();
        loop {
            process.ensure_running("aiosmtpd exited during startup")?;
            let ready = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("smtp ready"));
            if ready {
                break;
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                let err = process.startup_error(format!(
                    "aiosmtpd not ready on {ip}:{port} after {STARTUP_TIMEOUT:?}"
                ));
                process.kill();
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(SmtpServer {
            process,
            ip,
            port,
            dir,
            certs,
        })
    }
}
