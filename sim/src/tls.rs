//! TLS: a certificate authority generated at start, a serving certificate for the names kube
//! clients use (`127.0.0.1`, `localhost`, `kubernetes`, `kubernetes.default`,
//! `kubernetes.default.svc`, `kubernetes.default.svc.cluster.local` and the listen address),
//! and an axum listener that completes TLS handshakes off the accept loop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The DNS names of the serving certificate (the `kubernetes` Service's names).
pub const DNS_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The generated CA and serving configuration.
pub struct Pki {
    /// The CA certificate, PEM (what clients trust: kubeconfig `certificate-authority-data`,
    /// the `kube-root-ca.crt` ConfigMaps, pods' `ca.crt`).
    pub ca_pem: String,
    /// The rustls server configuration (serving certificate signed by the CA).
    pub server: Arc<rustls::ServerConfig>,
    /// What [`load_or_generate`] keeps: the serving certificate, the CA certificate (DER) and
    /// the serving key (PKCS#8 DER).
    persisted: Persisted,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    ca_pem: String,
    cert_der: String,
    ca_der: String,
    key_der: String,
}

/// The file (in the state directory) a persistent server keeps its CA and serving key in,
/// as kube-apiserver keeps its certificates across restarts (mode 0600).
pub const PKI_FILE: &str = "pki.json";

/// The CA and serving certificate kept in `{dir}/pki.json`, or new ones (then written there)
/// when there are none: a restarted server keeps the CA its clients trust.
pub fn load_or_generate(dir: &std::path::Path, listen_ip: IpAddr) -> Result<Pki, String> {
    use base64::Engine as _;
    let path = dir.join(PKI_FILE);
    let b64 = base64::engine::general_purpose::STANDARD;
    match std::fs::read(&path) {
        Ok(bytes) => {
            let p: Persisted =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let de = |s: &str| {
                b64.decode(s)
                    .map_err(|e| format!("{}: {e}", path.display()))
            };
            let server = server_config(de(&p.cert_der)?, de(&p.ca_der)?, de(&p.key_der)?)?;
            Ok(Pki {
                ca_pem: p.ca_pem.clone(),
                server,
                persisted: p,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pki = generate(listen_ip)?;
            let text = serde_json::to_vec(&pki.persisted).map_err(|e| e.to_string())?;
            write_private(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(pki)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Writes `data` to a new file only its owner can read, then moves it over `path`.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn server_config(
    cert_der: Vec<u8>,
    ca_der: Vec<u8>,
    key_der: Vec<u8>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert_der.into(), ca_der.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into()),
        )
        .map_err(|e| format!("TLS serving config: {e}"))?;
    // HTTP/1.1 only: kubectl and kube-rs then speak it over TLS (no exec/port-forward here).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// Generates a CA and a serving certificate valid for [`DNS_NAMES`], `127.0.0.1`, `::1` and
/// `listen_ip`.
pub fn generate(listen_ip: IpAddr) -> Result<Pki, String> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: rcgen::Error| format!("{what}: {e}")
    };
    let ca_key = KeyPair::generate().map_err(err("generating the CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA params"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-sim-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err("signing the CA"))?;

    let key = KeyPair::generate().map_err(err("generating the serving key"))?;
    let mut params =
        CertificateParams::new(DNS_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(err("serving certificate params"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let mut ips = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if !ips.contains(&listen_ip) && !listen_ip.is_unspecified() {
        ips.push(listen_ip);
    }
    params
        .subject_alt_names
        .extend(ips.into_iter().map(SanType::IpAddress));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &ca)
        .map_err(err("signing the serving certificate"))?;

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_der = key.serialize_der();
    let persisted = Persisted {
        ca_pem: ca.pem(),
        cert_der: b64.encode(cert.der()),
        ca_der: b64.encode(ca.der()),
        key_der: b64.encode(&key_der),
    };
    let server = server_config(cert.der().to_vec(), ca.der().to_vec(), key_der)?;
    Ok(Pki {
        ca_pem: ca.pem(),
        server,
        persisted,
    })
}

/// Accepts TCP connections and hands out those whose TLS handshake succeeded. Handshakes run
/// in their own tasks (a slow or broken client does not hold up others).
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; the returned task ends when the listener is dropped.
    pub fn start(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "kube-sim: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "kube-sim: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "kube-sim: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok((TlsListener { rx, local }, task))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop is gone (server shutting down): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
