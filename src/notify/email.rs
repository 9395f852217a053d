//! E-mail through SMTP (lettre), always encrypted: STARTTLS (refused if the server does not
//! offer it) or TLS from the first byte, with AUTH when a credentials Secret is given.
//!
//! The server's host is resolved and every address checked against the egress policy before
//! any socket is opened, and with `HTTPS_PROXY` set (and the host not in `NO_PROXY`) the
//! conversation goes through a `CONNECT` tunnel, TLS end to end with the server. The certificate is checked
//! against the host name. Errors name what failed, never the credentials.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::deliver::{ATTEMPT_TIMEOUT, DeliveryError};
use crate::api::backup_policy::SmtpTls;
use crate::egress::EgressPolicy;
use crate::egress::proxy::Route;

/// Where and how to send mail (the credentials read from their Secret).
#[derive(Clone)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Username and password for AUTH.
    pub credentials: Option<(String, String)>,
    /// PEM CA certificates to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("auth", &self.credentials.is_some())
            .finish()
    }
}

/// The default port of a protection mode.
pub fn default_port(tls: SmtpTls) -> u16 {
    match tls {
        SmtpTls::StartTLS => 587,
        SmtpTls::TLS => 465,
    }
}

/// One e-mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// The idempotency key: the Message-ID is `<key@dataguardian.io>`, so a receiver (or a
    /// mail client) recognises a second copy of the same notification.
    pub key: String,
    /// The event, in an `X-DataGuardian-Event` header (for mail filters).
    pub event: String,
}

/// The Message-ID of a notification.
pub fn message_id(key: &str) -> String {
    format!("<{key}@dataguardian.io>")
}

/// Builds the message (no I/O). Address errors name the address field, not the server.
pub fn build(mail: &Mail) -> Result<Message, DeliveryError> {
    let invalid = |field: &str| DeliveryError::InvalidMail {
        reason: format!("{field} is not a valid address"),
    };
    let from: Mailbox = mail.from.parse().map_err(|_| invalid("from"))?;
    let mut to = Mailboxes::new();
    for (i, addr) in mail.to.iter().enumerate() {
        to.push(addr.parse().map_err(|_| invalid(&format!("to[{i}]")))?);
    }
    let mut builder = Message::builder()
        .from(from)
        .subject(mail.subject.clone())
        .message_id(Some(message_id(&mail.key)))
        .header(ContentType::TEXT_PLAIN)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-DataGuardian-Event"),
            mail.event.clone(),
        ));
    for m in to {
        builder = builder.to(m);
    }
    builder
        .body(mail.body.clone())
        .map_err(|e| DeliveryError::InvalidMail {
            reason: e.to_string(),
        })
}

/// A TLS stream opened before the SMTP greeting (implicit TLS), for lettre.
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImplicitTls")
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

fn roots(ca_pem: Option<&[u8]>) -> Result<rustls::RootCertStore, DeliveryError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| DeliveryError::InvalidCa)?;
                roots.add(cert).map_err(|_| DeliveryError::InvalidCa)?;
            }
            if roots.is_empty() {
                return Err(DeliveryError::InvalidCa);
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// What failed, without anything the server or the credentials said.
fn smtp_failure(stage: &'static str, e: &lettre::transport::smtp::Error) -> DeliveryError {
    if e.is_permanent() {
        DeliveryError::MailRejected {
            stage,
            code: e.status().map(|c| c.to_string()),
            permanent: true,
        }
    } else if e.is_transient() {
        DeliveryError::MailRejected {
            stage,
            code: e.status().map(|c| c.to_string()),
            permanent: false,
        }
    } else if e.is_tls() {
        DeliveryError::MailTls
    } else {
        DeliveryError::MailFailed { stage }
    }
}

/// A TCP connection to `host:port` under the egress policy: the host's resolved addresses are
/// checked before any socket is opened, and `HTTPS_PROXY` (unless `NO_PROXY` names the host)
/// is used as a `CONNECT` tunnel, as for an `https://` webhook.
async fn connect(policy: &EgressPolicy, host: &str, port: u16) -> Result<TcpStream, DeliveryError> {
    let unreachable = DeliveryError::Unreachable { attempts: 1 };
    let authority = match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    };
    let uri: hyper::Uri = format!("https://{authority}/")
        .parse()
        .map_err(|_| DeliveryError::Unreachable { attempts: 1 })?;
    let addrs = policy.resolve(host).await.map_err(DeliveryError::Refused)?;
    match policy.proxy().route(&uri) {
        Route::Direct => {
            for ip in addrs {
                if let Ok(s) = TcpStream::connect((ip, port)).await {
                    return Ok(s);
                }
            }
            Err(unreachable)
        }
        Route::Proxy {
            proxy,
            authorization,
            ..
        } => {
            // The proxy is platform configuration: reached with the system resolver.
            let proxy_host = proxy.host().unwrap_or_default().trim_start_matches('[');
            let proxy_host = proxy_host.trim_end_matches(']');
            let proxy_port = proxy.port_u16().unwrap_or(80);
            let mut tcp = TcpStream::connect((proxy_host, proxy_port))
                .await
                .map_err(|_| DeliveryError::Unreachable { attempts: 1 })?;
            tunnel(&mut tcp, &authority, authorization.as_ref()).await?;
            Ok(tcp)
        }
    }
}

/// Asks the proxy on `tcp` for a tunnel to `authority`. The answer is read byte by byte up to
/// its blank line and no further: the SMTP server speaks first, and its greeting may follow
/// the proxy's answer in the same packet.
async fn tunnel(
    tcp: &mut TcpStream,
    authority: &str,
    authorization: Option<&hyper::header::HeaderValue>,
) -> Result<(), DeliveryError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let unreachable = || DeliveryError::Unreachable { attempts: 1 };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(auth) = authorization {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    tcp.write_all(&request).await.map_err(|_| unreachable())?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 8192 || tcp.read(&mut byte).await.map_err(|_| unreachable())? == 0 {
            return Err(unreachable());
        }
        head.push(byte[0]);
    }
    let status = std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(unreachable)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(DeliveryError::Rejected {
            status,
            attempts: 1,
        })
    }
}

/// Sends `mail` through `server`: one attempt (the caller retries).
pub async fn send(
    policy: &EgressPolicy,
    server: &SmtpServer,
    mail: &Mail,
) -> Result<(), DeliveryError> {
    let message = build(mail)?;
    tokio::time::timeout(ATTEMPT_TIMEOUT, send_inner(policy, server, &message))
        .await
        .unwrap_or(Err(DeliveryError::TimedOut { attempts: 1 }))
}

async fn send_inner(
    policy: &EgressPolicy,
    server: &SmtpServer,
    message: &Message,
) -> Result<(), DeliveryError> {
    let tcp = connect(policy, &server.host, server.port).await?;
    let hello = ClientId::Domain("dataguardian.io".into());
    let host = server
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut conn = match server.tls {
        SmtpTls::TLS => {
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|_| DeliveryError::MailTls)?
            .with_root_certificates(roots(server.ca_pem.as_deref())?)
            .with_no_client_auth();
            let name = ServerName::try_from(host.clone()).map_err(|_| DeliveryError::MailTls)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|_| DeliveryError::MailTls)?;
            AsyncSmtpConnection::connect_with_transport(Box::new(ImplicitTls(tls)), &hello)
                .await
                .map_err(|e| smtp_failure("greeting", &e))?
        }
        SmtpTls::StartTLS => {
            let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                .await
                .map_err(|e| smtp_failure("greeting", &e))?;
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(DeliveryError::NoStartTls);
            }
            let mut params = TlsParameters::builder(host);
            if let Some(pem) = &server.ca_pem {
                // Checked the same way as for implicit TLS (a PEM with no certificate is an
                // error, not "trust the system").
                roots(Some(pem))?;
                params = params
                    .certificate_store(lettre::transport::smtp::client::CertificateStore::None);
                for der in CertificateDer::pem_slice_iter(pem).flatten() {
                    let cert = Certificate::from_der(der.to_vec())
                        .map_err(|_| DeliveryError::InvalidCa)?;
                    params = params.add_root_certificate(cert);
                }
            }
            let params = params.build_rustls().map_err(|_| DeliveryError::MailTls)?;
            conn.starttls(params, &hello)
                .await
                .map_err(|e| smtp_failure("STARTTLS", &e))?;
            conn
        }
    };
    if let Some((user, password)) = &server.credentials {
        let creds = Credentials::new(user.clone(), password.clone());
        if let Err(e) = conn
            .auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await
        {
            conn.abort().await;
            return Err(match smtp_failure("AUTH", &e) {
                DeliveryError::MailFailed { .. } => DeliveryError::MailAuth,
                other => other,
            });
        }
    }
    let result = conn
        .send(message.envelope(), &message.formatted())
        .await
        .map_err(|e| smtp_failure("sending", &e));
    let _ = conn.quit().await;
    result.map(|_| ())
}
