//! The operator's admission webhook: who asked for each run, who changed each policy and
//! storage last ([`review`]), served over HTTPS ([`server`]) with a certificate from
//! cert-manager (files in `--webhook-cert-dir`) or one the operator issues and rotates itself
//! ([`certs`]), in which case it also keeps the `caBundle` of its webhook configurations
//! current.
//!
//! The API server calls it for every create and update of the five kinds (the chart's
//! `MutatingWebhookConfiguration`): with `failurePolicy: Fail` for the run kinds (a run whose
//! requester cannot be recorded is not created) and `Ignore` for policies and storages (GitOps
//! keeps working while the operator is down; the stamp is then missing).

pub mod certs;
pub mod review;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

pub use review::{
    APPROVE, APPROVED_AT, APPROVED_BY, LAST_CHANGED_AT, LAST_CHANGED_BY, REQUESTED_BY,
    REQUESTED_BY_GROUPS,
};

/// How often certificates are checked (and files re-read).
const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How often it is tried while no certificate is served yet.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` in this directory (cert-manager's Secret mounted), re-read
    /// when they change; the CA bundle is injected by cert-manager.
    Dir(PathBuf),
    /// Issued by the operator into this Secret of its namespace, for the Service's names; the
    /// `caBundle` of these MutatingWebhookConfigurations is kept current.
    SelfManaged {
        /// The Secret's name.
        secret: String,
        /// The configurations whose `caBundle` to keep.
        configurations: Vec<String>,
    },
}

/// The webhook's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to listen (HTTPS).
    pub addr: SocketAddr,
    /// The operator's namespace.
    pub namespace: String,
    /// The webhook Service's name (the certificate's names: `NAME.NAMESPACE.svc` and
    /// `NAME.NAMESPACE.svc.cluster.local`).
    pub service: String,
    /// Extra names for the self-issued certificate (DNS names; e.g. for a `url:` webhook).
    pub extra_names: Vec<String>,
    /// Certificate source.
    pub certs: CertSource,
}

impl WebhookConfig {
    fn dns_names(&self) -> Vec<String> {
        let mut names = vec![
            format!("{}.{}.svc", self.service, self.namespace),
            format!("{}.{}.svc.cluster.local", self.service, self.namespace),
        ];
        names.extend(self.extra_names.iter().cloned());
        names
    }
}

/// Serves the webhook until the process ends: binds, loads the certificate (setting `ready`
/// once one is served), and keeps it (and the CA bundles) current.
pub async fn run(
    client: Client,
    config: WebhookConfig,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let resolver = Arc::new(server::CertResolver::default());
    let (addr, server_task) = server::serve(config.addr, resolver.clone(), client.clone()).await?;
    tracing::info!(%addr, service = %config.service, "admission webhook listening");
    let task = tokio::spawn(async move {
        let mut last_files: Option<(String, String)> = None;
        let mut last_bundle: Option<String> = None;
        // Said once per distinct problem, not every round.
        let mut last_error: Option<String> = None;
        loop {
            match &config.certs {
                CertSource::Dir(dir) => {
                    let read = |f: &str| std::fs::read_to_string(dir.join(f));
                    match (read("tls.crt"), read("tls.key")) {
                        (Ok(c), Ok(k)) => {
                            if last_files.as_ref() != Some(&(c.clone(), k.clone())) {
                                match resolver.set(&c, &k) {
                                    Ok(()) => {
                                        tracing::info!(dir = %dir.display(), "webhook certificate loaded");
                                        last_files = Some((c, k));
                                    }
                                    Err(e) => {
                                        tracing::error!(dir = %dir.display(), error = %e, "cannot load the webhook certificate")
                                    }
                                }
                            }
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!(dir = %dir.display(), error = %e, "cannot read the webhook certificate")
                        }
                    }
                }
                CertSource::SelfManaged {
                    secret,
                    configurations,
                } => {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
                    let now = chrono::Utc::now().timestamp();
                    match certs::sync(&api, secret, &config.dns_names(), now).await {
                        Ok(m) => {
                            last_error = None;
                            if let Err(e) = resolver.set(&m.cert, &m.key) {
                                tracing::error!(error = %e, "cannot serve the issued webhook certificate");
                            }
                            if last_bundle.as_deref() != Some(&m.ca_bundle) {
                                let mut all_ok = true;
                                for name in configurations {
                                    if let Err(e) =
                                        keep_ca_bundle(&client, name, &m.ca_bundle).await
                                    {
                                        all_ok = false;
                                        tracing::error!(configuration = %name, error = %e, "cannot update the webhook configuration's caBundle");
                                    }
                                }
                                if all_ok {
                                    last_bundle = Some(m.ca_bundle.clone());
                                }
                            }
                        }
                        Err(e) => {
                            let text = e.to_string();
                            if last_error.as_deref() != Some(text.as_str()) {
                                if e.is_namespace_missing() {
                                    // The leader election reports the missing namespace and its fix.
                                    tracing::warn!(namespace = %config.namespace, "the operator's namespace does not exist: the webhook certificate is issued once it does");
                                } else {
                                    tracing::error!(error = %e, "cannot issue or read the webhook certificate");
                                }
                                last_error = Some(text);
                            }
                        }
                    }
                }
            }
            // Until a certificate is served, look again soon (e.g. the namespace was just
            // created); after that, once a minute.
            if resolver.is_loaded() {
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(CHECK_INTERVAL).await;
            } else {
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    });
    let joined = tokio::spawn(async move {
        let _ = tokio::join!(server_task, task);
    });
    Ok((addr, joined))
}

/// Sets `caBundle` on every webhook of the MutatingWebhookConfiguration `name` (a JSON patch
/// per webhook, guarded by its name so a reordered list is never mispatched).
async fn keep_ca_bundle(client: &Client, name: &str, bundle: &str) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(cfg) = api.get_opt(name).await? else {
        tracing::warn!(
            configuration = name,
            "webhook configuration not found; its caBundle cannot be set"
        );
        return Ok(());
    };
    // ByteString serializes as base64, as the API wants `caBundle`.
    let encoded = serde_json::to_value(k8s_openapi::ByteString(bundle.as_bytes().to_vec()))
        .map_err(kube::Error::SerdeError)?;
    let mut ops = Vec::new();
    for (i, w) in cfg.webhooks.unwrap_or_default().iter().enumerate() {
        let current = w
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        if current.as_deref() == Some(bundle) {
            continue;
        }
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    tracing::info!(configuration = name, "webhook caBundle updated");
    Ok(())
}
