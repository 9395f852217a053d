//! Starting and stopping the server, in-process (tests) or from the `kube-sim` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::http::{App, router};
use crate::ops::{State, now};
use crate::resources::{CrdLoadError, Registry};
use crate::store::{ObjKey, Store};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Loading CRDs failed.
    #[error(transparent)]
    Crds(#[from] CrdLoadError),
    /// Binding or file I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Building the kube client failed.
    #[error("building a kube client: {0}")]
    Client(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Listen address (port 0 = pick one). Must be loopback.
    pub listen: SocketAddr,
    /// Directory of CRD YAML files.
    pub crds_dir: Option<PathBuf>,
    /// State directory (pod logs); `None` = a temp dir removed on shutdown.
    pub state_dir: Option<PathBuf>,
    /// Where to write the kubeconfig; `None` = `{state_dir}/kubeconfig`.
    pub kubeconfig_out: Option<PathBuf>,
    /// Watch events kept for resume.
    pub history_limit: usize,
    /// Bookmark interval for watches that allow bookmarks.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds_dir: None,
            state_dir: None,
            kubeconfig_out: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// The server entry point.
#[derive(Debug)]
pub struct Server;

/// A running server; shuts down when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: Arc<Notify>,
    _temp: Option<tempfile::TempDir>,
}

/// Writes a kubeconfig for `url` (plain http on loopback, a dummy token).
pub fn write_kubeconfig(path: &Path, url: &str) -> std::io::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\nusers:\n- name: kube-sim\n  user:\n    token: kube-sim\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\n"
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

fn seed(state: &State) {
    let mut inner = state.store.lock();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now(),
                "labels": {"kubernetes.io/metadata.name": ns},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        let key = ObjKey {
            group: String::new(),
            resource: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        inner.put(key, obj);
    }
    for crd in &state.registry.crd_objects {
        let mut obj = crd.clone();
        let name = obj
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(now());
        obj["metadata"]["generation"] = json!(1);
        obj["status"] = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
            ],
            "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or(json!({})),
            "storedVersions": obj.pointer("/spec/versions").and_then(|v| v.as_array()).map(|vs| vs.iter().filter(|v| v.get("storage") == Some(&json!(true))).filter_map(|v| v.get("name").cloned()).collect::<Vec<_>>()).unwrap_or_default(),
        });
        let key = ObjKey {
            group: "apiextensions.k8s.io".into(),
            resource: "customresourcedefinitions".into(),
            namespace: String::new(),
            name,
        };
        inner.put(key, obj);
    }
}

impl Server {
    /// Starts the server on the current tokio runtime.
    pub async fn start(opts: ServerOptions) -> Result<RunningServer, ServerError> {
        let mut registry = Registry::builtins();
        if let Some(dir) = &opts.crds_dir {
            registry.load_crds(dir)?;
        }
        let (state_dir, temp) = match &opts.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kube-sim-")
                    .tempdir()
                    .map_err(io("creating a temp dir"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(state_dir.join("logs")).map_err(io("creating the logs dir"))?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(io(format!("binding {}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let state = Arc::new(State {
            registry,
            store: Store::new(opts.history_limit),
            state_dir: state_dir.clone(),
            gc_wake: Notify::new(),
            bookmark_interval: opts.bookmark_interval,
        });
        seed(&state);
        let kubeconfig = opts
            .kubeconfig_out
            .clone()
            .unwrap_or_else(|| state_dir.join("kubeconfig"));
        write_kubeconfig(&kubeconfig, &format!("http://{addr}"))
            .map_err(io(format!("writing {}", kubeconfig.display())))?;
        let shutdown = Arc::new(Notify::new());
        let app = App {
            state: state.clone(),
            address: addr.to_string(),
        };
        let stop = shutdown.clone();
        let http = tokio::spawn(async move {
            let server = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
                stop.notified().await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "kube-sim server failed");
            }
        });
        let gc = tokio::spawn(crate::gc::run(state.clone()));
        tracing::info!(%addr, "kube-sim listening");
        Ok(RunningServer {
            addr,
            kubeconfig,
            state,
            tasks: vec![http, gc],
            shutdown,
            _temp: temp,
        })
    }
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig written for this server.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state directory (pod logs live under `logs/`).
    pub fn state_dir(&self) -> &Path {
        &self.state.state_dir
    }

    /// A kube client for this server.
    pub async fn client(&self) -> Result<kube::Client, ServerError> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| ServerError::Client(e.to_string()))?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ServerError::Client(e.to_string()))?;
        kube::Client::try_from(cfg).map_err(|e| ServerError::Client(e.to_string()))
    }

    /// Adds a background task that is aborted with the server (e.g. the Job runner).
    pub fn attach(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Waits until the HTTP server stops.
    pub async fn wait(mut self) {
        if !self.tasks.is_empty() {
            let http = self.tasks.remove(0);
            let _ = http.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
    }
}
