//! The HTTPS server of the admission webhook: `POST /mutate` takes an `AdmissionReview` and
//! answers with [`super::review::review`]'s decision. The serving certificate can change while
//! it runs ([`CertResolver`]).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use super::review::{Authorization, approval_to_authorize};

/// The serving certificate, replaceable at run time.
#[derive(Debug, Default)]
pub struct CertResolver(RwLock<Option<Arc<CertifiedKey>>>);

impl CertResolver {
    /// Serves `cert_pem` (leaf first) with `key_pem` from now on.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the webhook certificate is not PEM: {e}"))?;
        if chain.is_empty() {
            return Err("the webhook certificate file holds no certificate".into());
        }
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("the webhook key is not a PEM private key: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("the webhook key cannot sign: {e}"))?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(CertifiedKey::new(chain, signing)));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Accepts TCP connections and yields those whose TLS handshake succeeded (handshakes run in
/// their own tasks, so a slow client holds up nobody).
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "webhook TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task ended (the runtime is shutting down): wait to be dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// How long the SubjectAccessReview of an approval may take (the API server gives the whole
/// webhook call 10 s by default).
const SAR_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the API server whether the user of `req` may `approve` the RestoreRun it updates.
async fn authorize_approval(
    client: &Client,
    req: &AdmissionRequest<DynamicObject>,
) -> Authorization {
    let user = &req.user_info;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(crate::api::GROUP.to_string()),
                resource: Some("restoreruns".into()),
                verb: Some("approve".into()),
                namespace: req.namespace.clone(),
                name: Some(req.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    match tokio::time::timeout(SAR_TIMEOUT, api.create(&PostParams::default(), &review)).await {
        Err(_) => Authorization::Unavailable("the SubjectAccessReview timed out".into()),
        Ok(Err(e)) => Authorization::Unavailable(format!("the SubjectAccessReview failed: {e}")),
        Ok(Ok(r)) => match r.status {
            Some(s) if s.allowed && s.denied != Some(true) => Authorization::Allowed,
            Some(s) => Authorization::Denied(s.reason.unwrap_or_default()),
            None => Authorization::Unavailable("the SubjectAccessReview has no status".into()),
        },
    }
}

async fn mutate(
    State(client): State<Client>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let response = match request {
        Ok(req) => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let authorization = if approval_to_authorize(&req) {
                authorize_approval(&client, &req).await
            } else {
                Authorization::NotAsked
            };
            let resp = super::review::review(&req, &now, &authorization);
            tracing::debug!(
                kind = %req.kind.kind,
                namespace = req.namespace.as_deref().unwrap_or(""),
                name = %req.name,
                operation = ?req.operation,
                allowed = resp.allowed,
                "admission review"
            );
            resp
        }
        Err(e) => AdmissionResponse::invalid(e.to_string()),
    };
    Json(response.into_review())
}

/// Binds `addr` and serves the webhook with the certificate `resolver` holds (asking the API
/// server through `client` whether approvers may approve); returns the bound address and the
/// server task.
pub async fn serve(
    addr: SocketAddr,
    resolver: Arc<CertResolver>,
    client: Client,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpListener::bind(addr).await?;
    let listener = TlsListener::start(tcp, Arc::new(config))?;
    let local = listener.local;
    let app = axum::Router::new()
        .route("/mutate", post(mutate))
        .with_state(client);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the admission webhook server stopped");
        }
    });
    Ok((local, task))
}
