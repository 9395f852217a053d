//! The e2e harness: a cluster (the in-repo API stand-in with its Job runner, or the cluster
//! `E2E_KUBECONFIG` points at), real PostgreSQL/MariaDB/S3 servers, and the real operator binary
//! as its own process. Everything is stopped and every temp dir removed on drop, also when a
//! test fails; on failure the operator log, the objects and the pod logs are printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataguardian::api::{BackupPolicy, BackupRun, BackupStorage};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

/// The namespace every scenario works in (one per test, so tests can run in parallel).
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    _server: Option<kube_sim::RunningServer>,
    _dir: tempfile::TempDir,
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The agent image every Job of the suite runs: built from the binary under test.
pub fn agent_image() -> String {
    format!(
        "{}:{}",
        testkit::images::AGENT_REPOSITORY,
        env!("CARGO_PKG_VERSION")
    )
}

impl Cluster {
    /// Starts the stand-in (CRDs from `crds/`, Job runner attached), or connects to the cluster
    /// in `E2E_KUBECONFIG` (which must already have the CRDs installed).
    pub async fn start() -> Cluster {
        Self::start_with_crds(true).await
    }

    /// Like [`Cluster::start`]; with `crds` false the stand-in starts without DataGuardian's
    /// CRDs (an install brings them), a real cluster is used as it is.
    pub async fn start_with_crds(crds: bool) -> Cluster {
        // The stand-in's own log (captured by the test harness, printed when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("E2E_LOG")
                    .unwrap_or_else(|_| "kube_sim=info".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::Builder::new()
            .prefix("dg-e2e-")
            .tempdir()
            .expect("temp dir");
        if let Ok(path) = std::env::var("E2E_KUBECONFIG") {
            let kubeconfig = PathBuf::from(path);
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).expect("reading E2E_KUBECONFIG"),
                &Default::default(),
            )
            .await
            .expect("E2E_KUBECONFIG");
            let client = Client::try_from(config).expect("client");
            return Cluster {
                client,
                kubeconfig,
                _server: None,
                _dir: dir,
            };
        }
        // Job pods run as containers of the project's images (the stand-in's kubelet uses the
        // Docker Engine; KUBE_SIM_CONTAINER_RUNTIME=process is for development only).
        testkit::images::ensure(
            &workspace(),
            Path::new(env!("CARGO_BIN_EXE_dataguardian")),
            env!("CARGO_PKG_VERSION"),
        );
        let state = dir.path().join("sim");
        let mut server = kube_sim::Server::start(kube_sim::ServerOptions {
            crds_dir: crds.then(|| workspace().join("crds")),
            state_dir: Some(state.clone()),
            ..Default::default()
        })
        .await
        .expect("starting the API stand-in");
        let cfg = kube_sim::runner::RunnerConfig::new(state.clone()).expect("runner config");
        kube_sim::runner::attach(&mut server, cfg)
            .await
            .expect("starting the Job runner");
        let client = server.client().await.expect("client");
        Cluster {
            client,
            kubeconfig: server.kubeconfig_path().to_path_buf(),
            _server: Some(server),
            _dir: dir,
        }
    }

    /// Kills (SIGKILL, no chance to clean up) the running containers of the pods of Job `job`
    /// in `ns`, as a node crash or an OOM kill would; returns how many. On the stand-in its
    /// kubelet's containers are killed in the Docker Engine; on a real cluster the pods are
    /// force-deleted with no grace period.
    pub fn kill_job_containers(&self, ns: &str, job: &str) -> usize {
        if self._server.is_none() {
            let out = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", "pods", "-n", ns, "-l"])
                .arg(format!("job-name={job}"))
                .args(["--grace-period=0", "--force", "-o", "name"])
                .output()
                .expect("kubectl delete pods");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return String::from_utf8_lossy(&out.stdout).lines().count();
        }
        // Containers are named `k8s_<container>_<pod>_<namespace>_<uid8>_<attempt>`; the pod's
        // name starts with the Job's.
        let out = std::process::Command::new("docker")
            .args(["ps", "--format", "{{.Names}}"])
            .output()
            .expect("docker ps");
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|n| {
                let parts: Vec<&str> = n.split('_').collect();
                parts.len() >= 4 && parts[0] == "k8s" && parts[2].starts_with(job) && parts[3] == ns
            })
            .map(str::to_string)
            .collect();
        for name in &names {
            let status = std::process::Command::new("docker")
                .args(["kill", "--signal", "KILL", name])
                .status()
                .expect("docker kill");
            assert!(status.success(), "docker kill {name}");
        }
        names.len()
    }

    /// A cluster whose API server the caller runs (e.g. a stand-in it restarts), reached
    /// through `kubeconfig`.
    pub async fn connect(kubeconfig: PathBuf) -> Cluster {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("reading the kubeconfig"),
            &Default::default(),
        )
        .await
        .expect("kubeconfig");
        Cluster {
            client: Client::try_from(config).expect("client"),
            kubeconfig,
            _server: None,
            _dir: tempfile::Builder::new()
                .prefix("dg-e2e-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Where the stand-in's kubelet keeps the contents of the claim `ns/claim` (`None` on a real
    /// cluster, whose volumes the tests cannot look into).
    #[allow(dead_code)]
    pub fn claim_dir(&self, ns: &str, claim: &str) -> Option<PathBuf> {
        self._server.as_ref().map(|_| {
            self._dir
                .path()
                .join("sim/volumes/pvc")
                .join(ns)
                .join(claim)
        })
    }

    /// A fresh namespace for one scenario.
    pub fn namespace(&self, name: &str) -> String {
        self.kubectl(&["create", "namespace", name])
            .expect("create namespace");
        name.to_string()
    }

    /// Runs the installed kubectl against the cluster (the user's client).
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `stdin` (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        run_kubectl(&self.kubeconfig, args, stdin)
    }

    /// Runs kubectl as `user`.
    #[allow(dead_code)]
    pub fn kubectl_as(&self, user: &TestUser, args: &[&str]) -> Result<String, String> {
        run_kubectl(&user.kubeconfig, args, None)
    }

    /// Runs kubectl as `user` with `stdin`.
    #[allow(dead_code)]
    pub fn kubectl_stdin_as(
        &self,
        user: &TestUser,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, String> {
        run_kubectl(&user.kubeconfig, args, stdin)
    }

    /// A person with their own credentials (and no permissions until bound): a static user
    /// of the stand-in in `groups`, or on a real cluster a ServiceAccount of the namespace
    /// `e2e-people` with a token (`groups` unused there: bind the returned subject).
    #[allow(dead_code)]
    pub fn user(&self, name: &str, groups: &[&str]) -> TestUser {
        self.user_in(name, groups, "e2e-people")
    }

    /// A member of `group`, and the group as the API server reports it: on the stand-in a
    /// static user in `group`; on a real cluster a ServiceAccount of the namespace
    /// `e2e-GROUP`, whose group is `system:serviceaccounts:e2e-GROUP`.
    #[allow(dead_code)]
    pub fn group_member(&self, name: &str, group: &str) -> (TestUser, String) {
        if self._server.is_some() {
            return (self.user(name, &[group]), group.to_string());
        }
        let ns = format!("e2e-{group}");
        (
            self.user_in(name, &[], &ns),
            format!("system:serviceaccounts:{ns}"),
        )
    }

    fn user_in(&self, name: &str, groups: &[&str], people: &str) -> TestUser {
        if let Some(server) = &self._server {
            let kubeconfig = server.add_user(name, groups).expect("adding a test user");
            return TestUser {
                name: name.to_string(),
                subject: format!(
                    "{{kind: User, apiGroup: rbac.authorization.k8s.io, name: {name}}}"
                ),
                kubeconfig,
            };
        }
        let _ = self.kubectl(&["create", "namespace", people]);
        let _ = self.kubectl(&["create", "serviceaccount", name, "-n", people]);
        let token = self
            .kubectl(&["create", "token", name, "-n", people, "--duration=2h"])
            .expect("kubectl create token");
        let raw = self
            .kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                "json",
            ])
            .expect("kubectl config view");
        let mut cfg: serde_json::Value = serde_json::from_str(&raw).expect("kubeconfig json");
        cfg["users"] = serde_json::json!([{"name": name, "user": {"token": token.trim()}}]);
        cfg["contexts"][0]["context"]["user"] = serde_json::json!(name);
        let kubeconfig = self._dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, cfg.to_string()).expect("write kubeconfig");
        TestUser {
            name: name.to_string(),
            subject: format!("{{kind: ServiceAccount, name: {name}, namespace: {people}}}"),
            kubeconfig,
        }
    }

    /// `kubectl dataguardian ARGS` as `user`.
    #[allow(dead_code)]
    pub fn plugin_as(&self, user: &TestUser, args: &[&str]) -> (i32, String, String) {
        plugin_with(&user.kubeconfig, args)
    }

    /// `kubectl dataguardian ARGS` — the plugin as a user runs it: kubectl finds the built
    /// `kubectl-dataguardian` on PATH. Returns the exit code, stdout and stderr.
    #[allow(dead_code)]
    pub fn plugin(&self, args: &[&str]) -> (i32, String, String) {
        plugin_with(&self.kubeconfig, args)
    }

    /// `kubectl apply -f -` of a YAML stream.
    pub fn apply(&self, yaml: &str) {
        if let Err(e) = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)) {
            panic!("apply failed: {e}\n---\n{yaml}");
        }
    }

    /// Everything useful for a post-mortem of namespace `ns`.
    pub async fn diagnostics(&self, ns: &str) -> String {
        let mut out = String::new();
        for kind in [
            "backupstorages",
            "backuppolicies",
            "backupruns",
            "br",
            "restoreruns",
            "rr",
            "restorevalidations",
            "jobs",
            "pods",
        ] {
            let text = self
                .kubectl(&["get", kind, "-n", ns, "-o", "yaml"])
                .unwrap_or_else(|e| e);
            out.push_str(&format!("\n===== {kind} =====\n{text}"));
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        if let Ok(list) = events.list(&ListParams::default()).await {
            out.push_str("\n===== events =====\n");
            for e in list.items {
                out.push_str(&format!(
                    "{} {} {}: {}\n",
                    e.type_.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                ));
            }
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for p in list.items {
                let containers: Vec<String> = p
                    .spec
                    .as_ref()
                    .map(|s| {
                        s.init_containers
                            .iter()
                            .flatten()
                            .chain(s.containers.iter())
                            .map(|c| c.name.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for c in containers {
                    let log = pods
                        .logs(
                            &p.name_any(),
                            &LogParams {
                                container: Some(c.clone()),
                                ..Default::default()
                            },
                        )
                        .await
                        .unwrap_or_else(|e| format!("(no log: {e})"));
                    out.push_str(&format!("\n===== log {}/{c} =====\n{log}", p.name_any()));
                }
            }
        }
        out
    }
}

/// The operator binary running as its own process against the cluster.
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    pub metrics_addr: String,
    kubeconfig: PathBuf,
    identity: String,
    lease_ns: String,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts `dataguardian operator` with the lease in `lease_ns` (created if missing).
    pub fn start(cluster: &Cluster, lease_ns: &str, identity: &str) -> Operator {
        Self::start_with(cluster, lease_ns, identity, &[])
    }

    /// Like [`Operator::start`], with extra environment (flags), e.g. `DG_MAX_CONCURRENT_BACKUPS`.
    pub fn start_with(
        cluster: &Cluster,
        lease_ns: &str,
        identity: &str,
        env: &[(&str, &str)],
    ) -> Operator {
        let _ = cluster.kubectl(&["create", "namespace", lease_ns]);
        let dir = tempfile::Builder::new()
            .prefix("dg-operator-")
            .tempdir()
            .expect("temp dir");
        let port = testkit::free_port();
        let mut op = Operator {
            child: None,
            log: dir.path().join("operator.log"),
            metrics_addr: format!("127.0.0.1:{port}"),
            kubeconfig: cluster.kubeconfig.clone(),
            identity: identity.to_string(),
            lease_ns: lease_ns.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dir: dir,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_dataguardian"))
            .arg("operator")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("DG_METRICS_ADDR", &self.metrics_addr)
            .env("POD_NAMESPACE", &self.lease_ns)
            .env("POD_NAME", &self.identity)
            .env("DG_LEASE_DURATION_SECONDS", "4")
            .env("DG_AGENT_IMAGE", agent_image())
            .env("DG_LOG_FORMAT", "json")
            // Everything in the e2e suite lives on 127.0.0.0/8, and nothing else may be
            // reached; the operator hands the same list to its agent Jobs.
            .env("DG_EGRESS_ALLOW_CIDRS", "127.0.0.0/8")
            // Several operators share this host: each serves its webhook on a port of its own.
            .env("DG_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,dataguardian=debug,kube=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting dataguardian operator");
        self.child = Some(child);
    }

    /// Kills the process at once (SIGKILL: no cleanup, like a node failure).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How the process ended, if it ended on its own (not through [`Operator::kill`]).
    #[allow(dead_code)]
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Starts it again after [`Operator::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the health/metrics server (plain HTTP/1.1, no extra client).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&self.metrics_addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Waits until `/readyz` answers 200: caches synced (a follower is ready too) and, when
    /// this is the only replica, leading (it takes the lease in its first round).
    pub async fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((200, _)) = self.http_get("/readyz") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("operator not ready after {timeout:?}; log:\n{}", self.log());
    }

    /// Waits until this replica leads and is ready (`/readyz` says `ok (leader)`).
    #[allow(dead_code)]
    pub async fn wait_leading(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((200, body)) = self.http_get("/readyz")
                && body.contains("ok (leader)")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "operator not leading after {timeout:?}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first so that it releases the lease, then make sure.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs kubectl with `kubeconfig` (and `stdin`, if any): stdout, or the error output.
fn run_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let out = testkit::kubectl(kubeconfig, args, stdin);
    if out.success() {
        check_released_crds(kubeconfig, args, stdin);
        Ok(out.stdout)
    } else {
        Err(format!(
            "kubectl {}: {}{}",
            args.join(" "),
            out.stderr,
            out.stdout
        ))
    }
}

/// A person using the cluster with their own kubeconfig ([`Cluster::user`]).
#[allow(dead_code)]
pub struct TestUser {
    pub name: String,
    /// The RBAC subject naming them, as a YAML flow mapping.
    pub subject: String,
    pub kubeconfig: PathBuf,
}

/// Every DataGuardian object the suite writes and today's server accepted must also be valid
/// for every released CRD set (`released-crds/`): the YAML of an `apply`, `create` or
/// `replace`, and the object a `patch` leaves (read back, status dropped). A change that would
/// refuse yesterday's YAML fails here, naming the release, the object and the field.
fn check_released_crds(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) {
    use crate::released_crds::{is_dataguardian, parse_documents, refusals, releases};
    static RELEASES: std::sync::OnceLock<Vec<(PathBuf, crate::released_crds::Validators)>> =
        std::sync::OnceLock::new();
    let objects: Vec<serde_json::Value> = match (args.first().copied(), stdin) {
        (Some("apply" | "create" | "replace"), Some(yaml)) => {
            parse_documents(yaml, "kubectl stdin")
        }
        (Some("patch"), _)
            if args.len() >= 3
                && (args[1].contains(".dataguardian.io")
                    || DATAGUARDIAN_RESOURCES.contains(&args[1])) =>
        {
            let mut get = vec!["get", args[1], args[2], "-o", "json"];
            if let Some(i) = args.iter().position(|a| *a == "-n") {
                get.extend(["-n", args[i + 1]]);
            }
            let out = testkit::kubectl(kubeconfig, &get, None);
            let mut obj: serde_json::Value = match serde_json::from_str(&out.stdout) {
                Ok(v) => v,
                Err(_) => return,
            };
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            vec![obj]
        }
        _ => return,
    };
    let releases = RELEASES.get_or_init(releases);
    for obj in objects.iter().filter(|o| is_dataguardian(o)) {
        let refused = refusals(releases, obj);
        assert!(
            refused.is_empty(),
            "{} {}/{} is accepted today but a released CRD refuses it (kubectl {}):\n{}",
            obj["kind"],
            obj["metadata"]["namespace"].as_str().unwrap_or_default(),
            obj["metadata"]["name"].as_str().unwrap_or_default(),
            args.join(" "),
            refused.join("\n")
        );
    }
}

/// DataGuardian's resources as kubectl names them (plural, singular, short names).
const DATAGUARDIAN_RESOURCES: &[&str] = &[
    "backupstorage",
    "backupstorages",
    "bs",
    "backuppolicy",
    "backuppolicies",
    "bp",
    "backuprun",
    "backupruns",
    "br",
    "restorerun",
    "restoreruns",
    "rr",
    "restorevalidation",
    "restorevalidations",
    "rv",
];

/// `kubectl dataguardian ARGS` with `kubeconfig`.
fn plugin_with(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-dataguardian"));
    let dir = bin.parent().expect("plugin directory");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .arg("dataguardian")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl dataguardian");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `get` until `done` holds, or panics with diagnostics after `timeout`. With
/// `E2E_CAPTURE_DIR` set, the object is also written there each time its state changes while
/// waiting ([`Capture`]).
pub async fn wait_for<K, F>(
    cluster: &Cluster,
    op: Option<&Operator>,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    done: F,
) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let api: Api<K> = Api::namespaced(cluster.client.clone(), ns);
    let mut capture = Capture::start::<K>(cluster, ns, what);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        let got = match &mut capture {
            None => api.get_opt(name).await.ok().flatten(),
            Some(c) => c.get(name).await,
        };
        if let Some(obj) = got {
            let finished = done(&obj);
            if let Some(c) = &mut capture {
                c.write(finished);
            }
            if finished {
                return obj;
            }
            last = Some(obj);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let diag = cluster.diagnostics(ns).await;
    let oplog = op.map(|o| o.log()).unwrap_or_default();
    panic!(
        "timed out after {timeout:?} waiting for {what} ({ns}/{name}); last seen: {last:#?}\n{diag}\n===== operator log =====\n{oplog}"
    );
}

/// Opt-in capture of the objects scenarios wait on (`E2E_CAPTURE_DIR=dir`): the raw object as
/// the API served it, written as YAML (`metadata.managedFields` dropped, nothing else changed)
/// whenever its state — `status.phase`, `status.reason`, `status.result`, the conditions'
/// type/status/reason, and whether `status.observedGeneration` has caught up with
/// `metadata.generation` — differs from the last one written, so a wait for `Succeeded` also
/// records the `Pending` and `Running` it passed through (at the 250 ms polling resolution).
/// Files are named `<Kind>_<namespace>_<name>_<seq>_<phase or Ready-status>.yaml` and start with
/// a comment naming the scenario (the test) and the wait. The Argo CD health checks' testdata
/// (`deploy/argocd/resource_customizations/`) comes from these files.
pub struct Capture {
    dir: PathBuf,
    api: Api<kube::api::DynamicObject>,
    kind: String,
    ns: String,
    what: String,
    scenario: String,
    current: Option<serde_json::Value>,
    last_state: Option<String>,
}

static CAPTURE_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Capture {
    /// `None` unless `E2E_CAPTURE_DIR` is set.
    fn start<K>(cluster: &Cluster, ns: &str, what: &str) -> Option<Capture>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        let dir = PathBuf::from(std::env::var_os("E2E_CAPTURE_DIR")?);
        std::fs::create_dir_all(&dir).expect("creating E2E_CAPTURE_DIR");
        let resource = kube::api::ApiResource::erase::<K>(&());
        Some(Capture {
            dir,
            api: Api::namespaced_with(cluster.client.clone(), ns, &resource),
            kind: K::kind(&()).into_owned(),
            ns: ns.to_string(),
            what: what.to_string(),
            // The test body runs on the test's own thread, named after the test.
            scenario: std::thread::current()
                .name()
                .unwrap_or("unknown scenario")
                .to_string(),
            current: None,
            last_state: None,
        })
    }

    /// GETs the object once, raw, and decodes the typed view the scenario checks from the very
    /// same response (so the file written is exactly what the test saw).
    async fn get<K: DeserializeOwned>(&mut self, name: &str) -> Option<K> {
        let raw = self.api.get_opt(name).await.ok().flatten()?;
        let value = serde_json::to_value(&raw).ok()?;
        let typed = serde_json::from_value(value.clone()).ok()?;
        self.current = Some(value);
        Some(typed)
    }

    /// Writes the object last read when its state changed (`satisfied`: the wait is over).
    fn write(&mut self, satisfied: bool) {
        let Some(mut obj) = self.current.take() else {
            return;
        };
        let state = capture_state(&obj);
        if self.last_state.as_deref() == Some(state.as_str()) {
            return;
        }
        if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or("unnamed")
            .to_string();
        let label = obj["status"]["phase"]
            .as_str()
            .map(str::to_string)
            .or_else(|| {
                obj["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .and_then(|c| c["status"].as_str())
                    .map(|s| format!("Ready-{s}"))
            })
            .unwrap_or_else(|| "nostatus".to_string());
        let seq = CAPTURE_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let file = self.dir.join(format!(
            "{}_{}_{}_{seq:04}_{label}.yaml",
            self.kind, self.ns, name
        ));
        let yaml = serde_yaml::to_string(&obj).expect("object as YAML");
        let text = format!(
            "# Captured from e2e scenario {} while waiting for \"{}\" ({}).\n{yaml}",
            self.scenario,
            self.what,
            if satisfied {
                "the state waited for"
            } else {
                "on the way"
            },
        );
        std::fs::write(&file, text).expect("writing a captured object");
        self.last_state = Some(state);
    }
}

/// What makes two observations of an object different states for [`Capture`].
fn capture_state(obj: &serde_json::Value) -> String {
    let status = &obj["status"];
    let conditions: Vec<String> = status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| format!("{}={}/{}", c["type"], c["status"], c["reason"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}|{}|{}|{}|{}",
        status["phase"],
        status["reason"],
        status["result"],
        conditions.join(","),
        status["observedGeneration"] == obj["metadata"]["generation"],
    )
}

/// Real services for a scenario: PostgreSQL seeded with a small shop database, and S3.
pub struct Services {
    pub pg: testkit::Postgres,
    pub s3: testkit::Moto,
    pub bucket: String,
}

impl Services {
    pub fn start() -> Services {
        let pg = testkit::Postgres::start().expect("PostgreSQL");
        pg.create_database("shop").expect("create database");
        pg.psql(
            "shop",
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2), created_at timestamptz DEFAULT now());
             INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 50) g;
             INSERT INTO orders (customer_id, total) SELECT 1 + g % 50, g * 1.5 FROM generate_series(1, 500) g;",
        )
        .expect("seed");
        let s3 = testkit::Moto::start().expect("moto");
        let bucket = "shop-backups".to_string();
        s3.create_bucket(&bucket).expect("bucket");
        Services { pg, s3, bucket }
    }

    /// The Secrets, BackupStorage and BackupPolicy of a scenario, as YAML.
    pub fn manifests(
        &self,
        ns: &str,
        policy: &str,
        schedule: &str,
        extra_policy_spec: &str,
    ) -> String {
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: {ns}}}
stringData: {{AWS_ACCESS_KEY_ID: {key}, AWS_SECRET_ACCESS_KEY: {secret}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db-creds, namespace: {ns}}}
stringData: {{password: "{pw}"}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: main, namespace: {ns}}}
spec:
  s3: {{bucket: {bucket}, region: us-east-1, endpoint: "{endpoint}", forcePathStyle: true,
       prefix: e2e/, credentialsSecretRef: {{name: s3-creds}}}}
  probe: {{intervalSeconds: 10}}
---
{policy}"#,
            key = self.s3.access_key_id(),
            secret = self.s3.secret_access_key(),
            pw = self.pg.password(),
            bucket = self.bucket,
            endpoint = self.s3.endpoint(),
            policy = self.postgres_policy(
                ns,
                policy,
                "shop",
                "main",
                &format!("  schedule: \"{schedule}\"\n  compression: {{algorithm: zstd, level: 3}}\n{extra_policy_spec}"),
            ),
        )
    }

    /// A BackupPolicy `name` of the PostgreSQL `database` (credentials from the Secret
    /// `db-creds` that [`Services::manifests`] creates) onto `storage`, with `extra` spec lines.
    pub fn postgres_policy(
        &self,
        ns: &str,
        name: &str,
        database: &str,
        storage: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  source: {{postgres: {endpoint}}}
  storageRef: {{name: {storage}}}
{extra}"#,
            endpoint = self.postgres_endpoint(database),
        )
    }

    /// The test PostgreSQL server's `database` as a `postgres` block (one line of flow YAML),
    /// credentials from the Secret `db-creds`.
    pub fn postgres_endpoint(&self, database: &str) -> String {
        format!(
            r#"{{host: "{host}", port: {port}, database: {database}, user: {user}, passwordSecretRef: {{name: db-creds, key: password}}}}"#,
            host = self.pg.host(),
            port = self.pg.port(),
            user = self.pg.user(),
        )
    }

    /// Object keys under `prefix` in the scenario's bucket.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.s3.list_keys(&self.bucket, prefix).expect("list keys")
    }
}

/// A manual BackupRun.
pub fn manual_run(ns: &str, name: &str, policy: &str) -> String {
    format!(
        "apiVersion: dataguardian.io/v1alpha1\nkind: BackupRun\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{policyRef: {{name: {policy}}}, trigger: Manual}}\n"
    )
}

/// Phase of a run.
pub fn phase(r: &BackupRun) -> Option<String> {
    r.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
}

/// Reason of a run's status.
pub fn reason(r: &BackupRun) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default()
}

/// Jobs in a namespace, by name.
pub async fn jobs(cluster: &Cluster, ns: &str) -> BTreeMap<String, Job> {
    let api: Api<Job> = Api::namespaced(cluster.client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("list jobs")
        .items
        .into_iter()
        .map(|j| (j.name_any(), j))
        .collect()
}

/// Events about `name` in `ns`, as "Reason: message" lines.
pub async fn events_for(cluster: &Cluster, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(name))
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the Events about `name` in `ns` satisfy `ok` and returns them. Events are
/// recorded next to, not atomically with, the status write a test waits for, so a test that
/// has seen the status must still wait for the Event (on a real cluster too).
pub async fn wait_for_events(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = events_for(cluster, ns, name).await;
        if ok(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no matching Event about {ns}/{name} within 20s: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A webhook receiver on loopback for notification tests: it records every POST (path, JSON
/// body and headers); `/fail/...` answers 500, `/hold/...` never answers its first request
/// (an operator killed while sending it), every other path (and later requests) 200.
pub struct Webhooks {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Post>>>,
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Post {
    pub path: String,
    pub body: serde_json::Value,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
}

impl Webhooks {
    pub async fn start() -> Self {
        use axum::extract::Path;
        use axum::http::HeaderMap;
        use axum::routing::post;
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Post>::new()));
        let g = got.clone();
        let app = axum::Router::new().route(
            "/{kind}/{token}",
            post(
                move |Path((kind, token)): Path<(String, String)>,
                      headers: HeaderMap,
                      body: String| {
                    let g = g.clone();
                    async move {
                        let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                        let path = format!("/{kind}/{token}");
                        let headers = headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        let first = {
                            let mut got = g.lock().unwrap();
                            let first = !got.iter().any(|p| p.path == path);
                            got.push(Post {
                                path,
                                body: value,
                                headers,
                            });
                            first
                        };
                        if kind == "hold" && first {
                            tokio::time::sleep(Duration::from_secs(300)).await;
                        }
                        if kind == "fail" {
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Webhooks {
            base: format!("http://{addr}"),
            got,
        }
    }

    /// The bodies POSTed on `path`, in order.
    pub fn posts(&self, path: &str) -> Vec<serde_json::Value> {
        self.requests(path).into_iter().map(|p| p.body).collect()
    }

    /// The POSTs on `path` (bodies and headers), in order.
    pub fn requests(&self, path: &str) -> Vec<Post> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }

    /// Waits (30 s) until `path` got at least `n` POSTs, and returns them.
    #[allow(dead_code)]
    pub async fn wait_for_count(&self, path: &str, n: usize) -> Vec<Post> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.requests(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} POST(s) on {path} within 30s, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (30 s) for a POST on `path` whose body satisfies `ok`, and returns the body.
    pub async fn wait_for(
        &self,
        path: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.posts(path).into_iter().find(|v| ok(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no matching POST on {path} within 30s; got {:?}",
                self.got
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|p| (&p.path, &p.body))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[allow(dead_code)]
pub type Policies = Api<BackupPolicy>;
#[allow(dead_code)]
pub type Storages = Api<BackupStorage>;

/// A real Prometheus server scraping one target every second.
pub struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(target: &str) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("dg-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: dataguardian-operator\n    static_configs: [{{targets: ['{target}']}}]\n"),
        )
        .expect("prometheus config");
        let addr = format!("127.0.0.1:{}", testkit::free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus is required (apt-get install prometheus)");
        Prometheus { child, addr, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// One instant query: `Ok(number of series)`, or `Err(Prometheus's error)` for a query it
    /// refuses (bad PromQL); `None` while Prometheus does not answer.
    pub fn series(&self, query: &str) -> Option<Result<usize, String>> {
        use std::io::Read;
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let mut s = std::net::TcpStream::connect(&self.addr).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        write!(
            s,
            "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (_, body) = buf.split_once("\r\n\r\n")?;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(match v["status"].as_str() {
            Some("success") => Ok(v["data"]["result"].as_array().map_or(0, Vec::len)),
            _ => Err(v["error"].as_str().unwrap_or(body).to_string()),
        })
    }

    /// Checks the shipped Grafana dashboard (`config/grafana/dataguardian.json`) against what
    /// this Prometheus scraped: every panel query is valid PromQL, and every panel shows data
    /// (at least one of its queries returns series). Dashboard variables are widened
    /// (`$namespace`, `$policy` → `.*`; `$__rate_interval` → `1m`). Polls up to `timeout` for
    /// scrapes to accumulate; returns the problems left.
    pub fn check_dashboard(&self, timeout: Duration) -> Vec<String> {
        let path = workspace().join("config/grafana/dataguardian.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
                .expect("json");
        let mut panels: Vec<(String, Vec<String>)> = Vec::new();
        let mut stack: Vec<&serde_json::Value> =
            dashboard["panels"].as_array().unwrap().iter().collect();
        while let Some(p) = stack.pop() {
            if let Some(inner) = p["panels"].as_array() {
                stack.extend(inner.iter());
            }
            let exprs: Vec<String> = p["targets"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t["expr"].as_str())
                        .map(|e| {
                            e.replace("$namespace", ".*")
                                .replace("$policy", ".*")
                                .replace("$__rate_interval", "1m")
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !exprs.is_empty() {
                panels.push((p["title"].as_str().unwrap_or("?").to_string(), exprs));
            }
        }
        assert!(!panels.is_empty(), "the dashboard has no queries");
        let start = Instant::now();
        loop {
            let mut problems = Vec::new();
            for (title, exprs) in &panels {
                let mut any = false;
                for e in exprs {
                    match self.series(e) {
                        Some(Ok(n)) => any |= n > 0,
                        Some(Err(err)) => problems.push(format!("{title}: {e}: {err}")),
                        None => problems.push(format!("{title}: {e}: no answer")),
                    }
                }
                if !any {
                    problems.push(format!("{title}: no query returns series: {exprs:?}"));
                }
            }
            if problems.is_empty() || start.elapsed() > timeout {
                return problems;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Polls an instant query until it returns a sample; the sample's value.
    pub fn wait_for_value(&self, query: &str, timeout: Duration) -> Option<String> {
        use std::io::Read;
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(mut s) = std::net::TcpStream::connect(&self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    s,
                    "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                );
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if let Some((_, body)) = buf.split_once("\r\n\r\n")
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
                    && let Some(value) = v["data"]["result"][0]["value"][1].as_str()
                {
                    return Some(value.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
