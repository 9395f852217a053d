//! E-mail through SMTP (lettre), always encrypted: STARTTLS (refused if the server does not
//! offer it) or TLS from the first byte, with AUTH when a credentials Secret is given.
//!
//! The server's host name is resolved and checked against the egress policy before the socket
//! is opened (like every tenant endpoint), and the certificate is checked against the host
//! name. SMTP does not go through `HTTPS_PROXY`/`HTTP_PROXY` (those are HTTP proxies): the
//! SMTP server must be reachable directly. Errors name the server as written and what failed,
//! never the credentials.

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
    let addrs = policy
        .resolve(&server.host)
        .await
        .map_err(DeliveryError::Refused)?;
    let mut tcp = None;
    for ip in addrs {
        if let Ok(s) = TcpStream::connect((ip, server.port)).await {
            tcp = Some(s);
            break;
        }
    }
    let tcp = tcp.ok_or(DeliveryError::Unreachable { attempts: 1 })?;
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
