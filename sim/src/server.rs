//! Starting and stopping the server, in-process (tests) or from the `kube-sim` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::auth::StaticUser;
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
    /// Loading the persisted store failed.
    #[error("loading the store: {0}")]
    Store(#[from] crate::store::JournalError),
    /// Generating the CA, certificates or signing keys, or reading the token file failed.
    #[error("{0}")]
    Auth(String),
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
    /// Static users from a kube-apiserver `--token-auth-file` (CSV `token,user,uid,"g1,g2"`).
    pub token_auth_file: Option<PathBuf>,
    /// More static users (tests).
    pub users: Vec<StaticUser>,
    /// Keep everything in the state directory across restarts, as etcd and kube-apiserver's
    /// key files do: the objects with their resourceVersions and uids (`store.jsonl`), the CA
    /// and serving certificate (`pki.json`), the service-account signing key (`sa.key`) and
    /// the static users with their tokens (`users.json`). A server started again on the same
    /// state directory (and address) serves the same cluster to the same clients.
    pub persist: bool,
}

/// The file a persistent server keeps its service-account token signing key in.
pub const SIGNING_KEY_FILE: &str = "sa.key";
/// The file a persistent server keeps its static users (and their tokens) in.
pub const USERS_FILE: &str = "users.json";

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds_dir: None,
            state_dir: None,
            kubeconfig_out: None,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            token_auth_file: None,
            users: Vec::new(),
            persist: false,
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
    url: String,
    kubeconfig: PathBuf,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: Arc<Notify>,
    /// Where static users are kept (persistent servers).
    users_file: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

pub use crate::auth::users::write_kubeconfig;

/// The user of the kubeconfig the server writes (a cluster admin through `system:masters`).
pub const ADMIN_USER: &str = "kubernetes-admin";

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
    crate::auth::bootstrap::seed(&mut inner);
    // What kube-controller-manager does right after start: default ServiceAccounts, the
    // aggregated roles and the `kube-root-ca.crt` ConfigMaps.
    crate::gc::service_account_pass(state, &mut inner);
    crate::auth::controllers::pass(state, &mut inner);
}

impl Server {
    /// Starts the server on the current tokio runtime.
    pub async fn start(opts: ServerOptions) -> Result<RunningServer, ServerError> {
        let crds = match &opts.crds_dir {
            Some(dir) => Registry::read_crd_files(dir)?,
            None => Vec::new(),
        };
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
        let listener = bind(opts.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let (pki, auth, store, kept_users) = if opts.persist {
            let pki =
                crate::tls::load_or_generate(&state_dir, addr.ip()).map_err(ServerError::Auth)?;
            let signer = load_or_generate_signer(&state_dir.join(SIGNING_KEY_FILE))?;
            let auth = crate::auth::Auth::with_signer(pki.ca_pem.clone(), signer);
            let store = Store::open(opts.history_limit, &state_dir)?;
            let kept = read_users(&state_dir.join(USERS_FILE))?;
            (pki, auth, store, kept)
        } else {
            let pki = crate::tls::generate(addr.ip()).map_err(ServerError::Auth)?;
            let auth = crate::auth::Auth::new(pki.ca_pem.clone()).map_err(ServerError::Auth)?;
            (pki, auth, Store::new(opts.history_limit), Vec::new())
        };
        let mut users = kept_users.clone();
        users.extend(
            opts.users
                .iter()
                .filter(|u| !kept_users.contains(u))
                .cloned(),
        );
        if let Some(f) = &opts.token_auth_file {
            let text =
                std::fs::read_to_string(f).map_err(io(format!("reading {}", f.display())))?;
            users.extend(
                crate::auth::users::parse_token_file(&text)
                    .map_err(|e| ServerError::Auth(format!("{}: {e}", f.display())))?,
            );
        }
        let admin = match kept_users.iter().find(|u| u.name == ADMIN_USER) {
            Some(a) => a.clone(),
            None => {
                let admin = StaticUser {
                    token: crate::auth::random_token(),
                    name: ADMIN_USER.into(),
                    uid: uuid::Uuid::new_v4().to_string(),
                    groups: vec![crate::auth::authorizer::SYSTEM_MASTERS.into()],
                };
                users.push(admin.clone());
                admin
            }
        };
        for u in &users {
            auth.add_user(u);
        }
        let users_file = opts.persist.then(|| state_dir.join(USERS_FILE));
        if let Some(f) = &users_file {
            write_users(f, &users)?;
        }
        let loaded = !store.lock().objects.is_empty();
        let state = Arc::new(State {
            registry: arc_swap::ArcSwap::from_pointee(Registry::builtins()),
            store,
            state_dir: state_dir.clone(),
            gc_wake: Notify::new(),
            bookmark_interval: opts.bookmark_interval,
            auth,
        });
        if loaded {
            // A restart: serve the CRDs the store holds; the built-in objects are there.
            let inner = state.store.lock();
            let names: Vec<String> = inner
                .list(crate::crds::GROUP, crate::crds::RESOURCE, None)
                .map(|(k, _)| k.name.clone())
                .collect();
            for name in names {
                state.crd_changed(&inner, &name);
            }
            tracing::info!(
                objects = inner.objects.len(),
                resource_version = inner.rv,
                "kube-sim: store loaded"
            );
        } else {
            seed(&state);
        }
        for (path, crd) in crds {
            let name = crd
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            if loaded
                && state
                    .store
                    .lock()
                    .objects
                    .contains_key(&crate::crds::key(&name))
            {
                // Installed before the restart (and possibly changed since): kept as it is.
                continue;
            }
            state
                .create_initial_crd(crd)
                .map_err(|e| CrdLoadError::Invalid {
                    path,
                    detail: e.message,
                })?;
        }
        std::fs::write(state_dir.join("ca.crt"), &pki.ca_pem)
            .map_err(io("writing the CA certificate"))?;
        let url = format!("https://{addr}");
        let kubeconfig = opts
            .kubeconfig_out
            .clone()
            .unwrap_or_else(|| state_dir.join("kubeconfig"));
        write_kubeconfig(&kubeconfig, &url, &pki.ca_pem, ADMIN_USER, &admin.token)
            .map_err(io(format!("writing {}", kubeconfig.display())))?;
        let shutdown = Arc::new(Notify::new());
        let app = App {
            state: state.clone(),
            address: addr.to_string(),
        };
        let stop = shutdown.clone();
        let (listener, acceptor) = crate::tls::TlsListener::start(listener, pki.server.clone())
            .map_err(io("starting the TLS listener"))?;
        let http = tokio::spawn(async move {
            let server = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
                stop.notified().await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "kube-sim server failed");
            }
        });
        let gc = tokio::spawn(crate::gc::run(state.clone()));
        tracing::info!(%addr, "kube-sim listening (https)");
        Ok(RunningServer {
            addr,
            url,
            kubeconfig,
            state,
            tasks: vec![http, gc, acceptor],
            shutdown,
            users_file,
            _temp: temp,
        })
    }
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The kubeconfig written for this server: a cluster admin (user `kubernetes-admin` in
    /// group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA certificate (PEM); also in `{state_dir}/ca.crt`, every kubeconfig and
    /// every namespace's `kube-root-ca.crt` ConfigMap.
    pub fn ca_pem(&self) -> &str {
        &self.state.auth.ca_pem
    }

    /// Adds a static user `name` in `groups` (plus `system:authenticated`) with a fresh token
    /// and writes a kubeconfig for it (same cluster and CA) to `{state_dir}/users/NAME.kubeconfig`,
    /// whose path is returned. Adding a name again adds another token for it.
    pub fn add_user(&self, name: &str, groups: &[&str]) -> Result<PathBuf, ServerError> {
        let user = StaticUser {
            token: crate::auth::random_token(),
            name: name.into(),
            uid: uuid::Uuid::new_v4().to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let file: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self
            .state
            .state_dir
            .join("users")
            .join(format!("{file}.kubeconfig"));
        self.add_user_with(&user, &path)?;
        Ok(path)
    }

    /// Registers `user` (its token and identity) and writes its kubeconfig to `path`.
    pub fn add_user_with(&self, user: &StaticUser, path: &Path) -> Result<(), ServerError> {
        self.state.auth.add_user(user);
        if let Some(f) = &self.users_file {
            let mut users = read_users(f)?;
            users.push(user.clone());
            write_users(f, &users)?;
        }
        write_kubeconfig(
            path,
            &self.url,
            &self.state.auth.ca_pem,
            &user.name,
            &user.token,
        )
        .map_err(io(format!("writing {}", path.display())))
    }

    /// A kube client for another kubeconfig of this server (e.g. one from
    /// [`RunningServer::add_user`]).
    pub async fn client_for(&self, kubeconfig: &Path) -> Result<kube::Client, ServerError> {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| ServerError::Client(e.to_string()))?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ServerError::Client(e.to_string()))?;
        kube::Client::try_from(cfg).map_err(|e| ServerError::Client(e.to_string()))
    }

    /// The state directory (pod logs live under `logs/`).
    pub fn state_dir(&self) -> &Path {
        &self.state.state_dir
    }

    /// A kube client for this server (as the cluster admin).
    pub async fn client(&self) -> Result<kube::Client, ServerError> {
        self.client_for(&self.kubeconfig).await
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

/// Binds `addr`; a fixed port a server that just stopped was using may take a moment to be
/// free again (its accept loop ends asynchronously), so that is retried for up to 5 s.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(io(format!("binding {addr}"))(e)),
        }
    }
}

fn load_or_generate_signer(path: &Path) -> Result<crate::auth::tokens::Signer, ServerError> {
    use crate::auth::tokens::Signer;
    match std::fs::read(path) {
        Ok(der) => Signer::from_pkcs8(&der)
            .map_err(|e| ServerError::Auth(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (signer, der) = Signer::generate_pkcs8().map_err(ServerError::Auth)?;
            crate::tls::write_private(path, &der)
                .map_err(io(format!("writing {}", path.display())))?;
            Ok(signer)
        }
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn read_users(path: &Path) -> Result<Vec<StaticUser>, ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ServerError::Auth(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn write_users(path: &Path, users: &[StaticUser]) -> Result<(), ServerError> {
    let text = serde_json::to_vec_pretty(users)
        .map_err(|e| ServerError::Auth(format!("encoding {}: {e}", path.display())))?;
    crate::tls::write_private(path, &text).map_err(io(format!("writing {}", path.display())))
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Requests are refused from now on, live watch responses end (clients see the stream
        // close and watch again) and requests under way finish first.
        self.state.store.stop(Duration::from_secs(5));
        self.shutdown.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
    }
}
