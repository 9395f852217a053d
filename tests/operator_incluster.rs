//! The operator as it runs in a cluster, against the API stand-in (`kube_sim`): the real
//! `dataguardian operator` binary as its own process, its log captured.
//!
//! - Both replicas of a Deployment become Ready (`/readyz` = caches synced, on the follower
//!   too); only the leader reconciles; `dataguardian_leader` says who leads.
//! - SIGTERM hands the lease over within seconds, not after the lease duration.
//! - A missing lease namespace, and RBAC refusing the Lease, are said once as an error naming
//!   the fix, shown by `/readyz`, and recovered from without a restart.
//! - Every API call the operator made is granted by `config/rbac/` (the ClusterRole
//!   `dataguardian-controller` and, in its own namespace, the Role
//!   `dataguardian-leader-election`).
//!
//! Between the operator and the stand-in sits a small forwarding front that records every
//! request (forwarding it over HTTPS, with the caller's credentials, to the stand-in) and can
//! answer the Lease calls with the real API server's 403. The operators use the stand-in's
//! admin credentials here: what they may do is checked against `config/rbac/` from the record;
//! the install e2e scenarios run the operator under exactly the chart's RBAC.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Api;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The stand-in with the CRDs from `crds/`, and the front the operators talk to.
struct Cluster {
    sim: kube_sim::RunningServer,
    front: Front,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let sim = kube_sim::Server::start(kube_sim::ServerOptions {
            crds_dir: Some(workspace().join("crds")),
            ..Default::default()
        })
        .await
        .expect("starting the API stand-in");
        let dir = tempfile::Builder::new()
            .prefix("dg-incluster-")
            .tempdir()
            .expect("temp dir");
        let front = Front::start(&sim, dir.path()).await;
        Cluster { sim, front, dir }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = testkit::kubectl(
            self.sim.kubeconfig_path(),
            args,
            Some(stdin.unwrap_or_default()),
        );
        assert!(out.success(), "kubectl {}: {}", args.join(" "), out.stderr);
        out.stdout
    }

    fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    async fn client(&self) -> kube::Client {
        self.sim.client().await.expect("client")
    }
}

/// One request as the operator sent it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    method: String,
    path_and_query: String,
}

#[derive(Clone)]
struct FrontState {
    upstream: SocketAddr,
    http: HttpClient<HttpsConnector<HttpConnector>, Body>,
    seen: Arc<Mutex<Vec<Seen>>>,
    deny_leases: Arc<AtomicBool>,
}

/// A forwarding front for the stand-in: records every request; answers the Lease calls with
/// the real API server's 403 while `deny_leases` is set.
struct Front {
    kubeconfig: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    deny_leases: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    async fn start(sim: &kube_sim::RunningServer, dir: &Path) -> Front {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(sim.ca_pem().as_bytes()) {
            roots.add(cert.expect("the stand-in's CA")).expect("CA");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let state = FrontState {
            upstream: sim.addr(),
            http: HttpClient::builder(TokioExecutor::new()).build(https),
            seen: Arc::default(),
            deny_leases: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = dir.join("front-kubeconfig");
        kube_sim::server::write_kubeconfig(
            &kubeconfig,
            &format!("http://{addr}"),
            sim.ca_pem(),
            kube_sim::server::ADMIN_USER,
            &admin_token(sim.kubeconfig_path()),
        )
        .unwrap();
        Front {
            kubeconfig,
            seen: state.seen,
            deny_leases: state.deny_leases,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn forward(State(state): State<FrontState>, req: Request<Body>) -> Response<Body> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().as_str().to_string();
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path_and_query: path_and_query.clone(),
    });
    let path = req.uri().path().to_string();
    if state.deny_leases.load(Ordering::SeqCst) && path.starts_with("/apis/coordination.k8s.io/") {
        return forbidden(&method, &path);
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("https://{}{path_and_query}", state.upstream)
        .parse()
        .unwrap();
    match state.http.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(e.to_string()))
            .unwrap(),
    }
}

/// The bearer token of a kubeconfig's (first) user.
fn admin_token(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("the stand-in's kubeconfig");
    let kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    kc["users"][0]["user"]["token"]
        .as_str()
        .expect("a bearer token")
        .to_string()
}

/// The body kube-apiserver sends when RBAC refuses a Lease call.
fn forbidden(method: &str, path: &str) -> Response<Body> {
    let verb = match method {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    };
    let segments: Vec<&str> = path.split('/').collect();
    let ns = segments
        .iter()
        .position(|s| *s == "namespaces")
        .and_then(|i| segments.get(i + 1))
        .copied()
        .unwrap_or_default();
    let name = if segments.len() > 7 { segments[7] } else { "" };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("leases.coordination.k8s.io \"{name}\" is forbidden: User \"system:serviceaccount:dataguardian-system:dataguardian\" cannot {verb} resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"{ns}\""),
        "reason": "Forbidden",
        "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases"},
        "code": 403
    });
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `dataguardian operator` as its own process.
struct Operator {
    child: Option<Child>,
    log: PathBuf,
    metrics_addr: String,
    identity: String,
}

impl Operator {
    fn start(
        kubeconfig: &Path,
        dir: &Path,
        lease_ns: &str,
        identity: &str,
        lease_seconds: u32,
    ) -> Operator {
        let log = dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let metrics_addr = format!("127.0.0.1:{}", testkit::free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_dataguardian"))
            .arg("operator")
            .env("KUBECONFIG", kubeconfig)
            .env("DG_METRICS_ADDR", &metrics_addr)
            .env("POD_NAMESPACE", lease_ns)
            .env("POD_NAME", identity)
            .env("DG_LEASE_DURATION_SECONDS", lease_seconds.to_string())
            .env("DG_LOG_FORMAT", "json")
            // Several operators share this host: each serves its webhook on a port of its own.
            .env("DG_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,dataguardian=debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting dataguardian operator");
        Operator {
            child: Some(child),
            log,
            metrics_addr,
            identity: identity.to_string(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's JSON records at `level`.
    fn records(&self, level: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["level"] == level)
            .collect()
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
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
        let body = buf.split_once("\r\n\r\n")?.1.to_string();
        Some((code, body))
    }

    /// The value of `dataguardian_leader` for this replica.
    fn leader_gauge(&self) -> Option<i64> {
        let (_, metrics) = self.get("/metrics")?;
        let prefix = format!("dataguardian_leader{{identity=\"{}\"}} ", self.identity);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let (_, metrics) = self.get("/metrics")?;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name_and_labels} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Polls `/readyz` until `done(code, body)` holds.
    async fn wait_readyz(&self, what: &str, timeout: Duration, done: impl Fn(u16, &str) -> bool) {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            if let Some((code, body)) = self.get("/readyz") {
                if done(code, &body) {
                    return;
                }
                last = Some((code, body));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{}: not {what} after {timeout:?}; last /readyz: {last:?}\nlog:\n{}",
            self.identity,
            self.log()
        );
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Waits for the process to exit; its exit code.
    async fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        while start.elapsed() < timeout {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code().unwrap_or(-1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} still running {timeout:?} after SIGTERM; log:\n{}",
            self.identity,
            self.log()
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn lease_holder(cluster: &Cluster, ns: &str) -> (Option<String>, Option<i32>) {
    let leases: Api<Lease> = Api::namespaced(cluster.client().await, ns);
    let lease = leases
        .get_opt("dataguardian-operator")
        .await
        .unwrap()
        .and_then(|l| l.spec);
    (
        lease.as_ref().and_then(|s| s.holder_identity.clone()),
        lease.and_then(|s| s.lease_transitions),
    )
}

const SHOP: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: db-creds, namespace: shop}
stringData: {password: not-used}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: backups, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: local, namespace: shop}
spec:
  filesystem: {claimName: backups, path: /dataguardian}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: shop}
spec:
  source:
    postgres: {host: 127.0.0.1, port: 5432, database: shop, user: backup,
               passwordSecretRef: {name: db-creds, key: password}}
  storageRef: {name: local}
  schedule: "0 0 1 1 *"
"#;

/// A `config/rbac` object of `kind` called `name`.
fn rbac_object<T: serde::de::DeserializeOwned>(kind: &str, name: &str) -> T {
    for entry in std::fs::read_dir(workspace().join("config/rbac")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if value["kind"].as_str() == Some(kind)
                && value["metadata"]["name"].as_str() == Some(name)
            {
                return serde_yaml::from_value(value).unwrap();
            }
        }
    }
    panic!("config/rbac has no {kind} {name}");
}

use serde::Deserialize;

/// One API request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Attributes {
    verb: String,
    group: String,
    resource: String,
    namespace: Option<String>,
    /// The object's name, when the request names one (for `resourceNames` rules).
    name: Option<String>,
}

impl std::fmt::Display for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// The RBAC attributes of a request path (kube-apiserver's RequestInfoFactory, for the
/// resource paths an operator uses); `None` for discovery and other non-resource paths.
fn attributes(seen: &Seen) -> Option<Attributes> {
    let (path, query) = seen
        .path_and_query
        .split_once('?')
        .unwrap_or((&seen.path_and_query, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [] => return None,
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, sub, ..] => (format!("{resource}/{sub}"), Some(name.to_string())),
    };
    let named = name.is_some();
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (seen.method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(Attributes {
        verb: verb.to_string(),
        group,
        resource,
        namespace,
        name,
    })
}

fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let has =
        |list: &Option<Vec<String>>, x: &str| list.iter().flatten().any(|v| v == "*" || v == x);
    rule.verbs.iter().any(|v| v == "*" || *v == a.verb)
        && has(&rule.api_groups, &a.group)
        && has(&rule.resources, &a.resource)
        && match rule.resource_names.as_deref() {
            None | Some([]) => true,
            Some(names) => a.name.as_ref().is_some_and(|n| names.contains(n)),
        }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_replicas_become_ready_only_the_leader_acts_and_sigterm_hands_over_in_seconds() {
    let cluster = Cluster::start().await;
    cluster.kubectl(&["create", "namespace", "dataguardian-system"], None);
    // A 15 s lease: a takeover that waited for it to expire would take that long.
    let mut a = Operator::start(
        &cluster.front.kubeconfig,
        cluster.dir.path(),
        "dataguardian-system",
        "replica-a",
        15,
    );
    a.wait_readyz("ready as leader", Duration::from_secs(60), |c, b| {
        c == 200 && b.contains("ok (leader)")
    })
    .await;
    assert_eq!(a.leader_gauge(), Some(1));
    let b = Operator::start(
        &cluster.front.kubeconfig,
        cluster.dir.path(),
        "dataguardian-system",
        "replica-b",
        15,
    );
    // The follower is Ready too (its standby caches are synced): a 2-replica Deployment
    // becomes fully Available.
    b.wait_readyz("ready as standby", Duration::from_secs(60), |c, body| {
        c == 200 && body.contains("ok (standby, leader: replica-a)")
    })
    .await;
    assert_eq!(b.leader_gauge(), Some(0));
    assert_eq!(b.get("/healthz").map(|r| r.0), Some(200));

    // Work arrives while b stands by: only the leader acts on it.
    cluster.apply(SHOP);
    cluster.apply(
        "apiVersion: dataguardian.io/v1alpha1\nkind: BackupRun\nmetadata: {name: manual, namespace: shop}\nspec: {policyRef: {name: nightly}, trigger: Manual}\n",
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(cluster.client().await, "shop");
    let start = Instant::now();
    while jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the leader created no Job; log:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reconciles = |op: &Operator, controller: &str| {
        op.metric(&format!(
            "dataguardian_reconciles_total{{controller=\"{controller}\"}}"
        ))
        .unwrap_or(0.0)
    };
    assert!(reconciles(&a, "backuprun") >= 1.0, "{}", a.log());
    for controller in ["backuprun", "backuppolicy", "backupstorage"] {
        assert_eq!(
            reconciles(&b, controller),
            0.0,
            "the follower reconciled {controller}s; log:\n{}",
            b.log()
        );
    }

    // A rolling update stops the leader: it releases the lease, the standby takes over
    // within its 2 s retry period, not after the 15 s lease.
    a.sigterm();
    let stopped = Instant::now();
    let code = a.wait_exit(Duration::from_secs(12)).await;
    assert_eq!(code, 0, "log:\n{}", a.log());
    assert!(a.log().contains("released the lease"), "log:\n{}", a.log());
    b.wait_readyz("leading", Duration::from_secs(6), |c, body| {
        c == 200 && body.contains("ok (leader)")
    })
    .await;
    let handover = stopped.elapsed();
    assert!(
        handover < Duration::from_secs(6),
        "handover took {handover:?}"
    );
    assert_eq!(b.leader_gauge(), Some(1));
    let (holder, transitions) = lease_holder(&cluster, "dataguardian-system").await;
    assert_eq!(holder.as_deref(), Some("replica-b"));
    assert_eq!(transitions, Some(1), "one handover");
    assert_eq!(b.metric("dataguardian_leader_lease_transitions"), Some(1.0));
    // The new leader picks up what it cached while standing by: the policy and its storage
    // are reconciled without any change to them.
    let start = Instant::now();
    while reconciles(&b, "backuppolicy") < 1.0 || reconciles(&b, "backupstorage") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the new leader did not reconcile what it cached; log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);

    // Every API call either replica made is granted by config/rbac.
    let controller: ClusterRole = rbac_object("ClusterRole", "dataguardian-controller");
    let election: Role = rbac_object("Role", "dataguardian-leader-election");
    let election_ns = election.metadata.namespace.clone().unwrap();
    let calls: BTreeSet<Attributes> = cluster.front.seen().iter().filter_map(attributes).collect();
    let mut refused = Vec::new();
    for call in &calls {
        let cluster_wide = controller
            .rules
            .iter()
            .flatten()
            .any(|r| rule_allows(r, call));
        let namespaced = call.namespace.as_deref() == Some(election_ns.as_str())
            && election
                .rules
                .iter()
                .flatten()
                .any(|r| rule_allows(r, call));
        if !(cluster_wide || namespaced) {
            refused.push(call.to_string());
        }
    }
    let listed: Vec<String> = calls.iter().map(ToString::to_string).collect();
    eprintln!("API calls the operator made:\n  {}", listed.join("\n  "));
    assert!(
        refused.is_empty(),
        "config/rbac does not grant: {refused:#?}"
    );
    for expected in [
        "get coordination.k8s.io/leases in dataguardian-system",
        "update coordination.k8s.io/leases in dataguardian-system",
        "watch dataguardian.io/backupruns",
        "watch dataguardian.io/backuppolicies",
        "patch batch/jobs in shop",
        "create events.k8s.io/events in shop",
        "patch dataguardian.io/backupruns/status in shop",
    ] {
        assert!(
            listed.iter().any(|c| c == expected),
            "expected the call {expected:?}; saw {listed:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_lease_namespace_is_one_error_naming_the_fix_and_heals_when_created() {
    let cluster = Cluster::start().await;
    let op = Operator::start(
        &cluster.front.kubeconfig,
        cluster.dir.path(),
        "dg-missing",
        "lonely",
        6,
    );
    op.wait_readyz(
        "refusing for the namespace",
        Duration::from_secs(60),
        |c, b| {
            c == 503
                && b.contains("lease namespace \"dg-missing\" not found")
                && !b.contains("caches")
        },
    )
    .await;
    // Several retry periods (2 s each) go by: the error is said once, not every round.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let errors = op.records("ERROR");
    assert_eq!(
        errors.len(),
        1,
        "one error, not one per round; log:\n{}",
        op.log()
    );
    let message = errors[0]["message"].as_str().unwrap_or_default();
    for needle in [
        "lease namespace \"dg-missing\" not found",
        "kubectl create namespace dg-missing",
        "--lease-namespace",
        "POD_NAMESPACE",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message}"
        );
    }
    let warnings: Vec<_> = op
        .records("WARN")
        .into_iter()
        .filter(|r| r.to_string().contains("lease"))
        .collect();
    assert!(warnings.is_empty(), "no repeated warnings: {warnings:#?}");
    let (_, body) = op.get("/readyz").unwrap();
    assert!(body.contains("--lease-namespace"), "{body}");
    assert_eq!(op.leader_gauge(), Some(0));

    // Fixed from outside: the operator notices by itself and leads.
    cluster.kubectl(&["create", "namespace", "dg-missing"], None);
    op.wait_readyz("leading", Duration::from_secs(15), |c, b| {
        c == 200 && b.contains("ok (leader)")
    })
    .await;
    assert_eq!(op.leader_gauge(), Some(1));
    assert!(
        op.records("INFO").iter().any(|r| r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("reachable again")),
        "log:\n{}",
        op.log()
    );
    assert_eq!(op.records("ERROR").len(), 1, "log:\n{}", op.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rbac_refusing_the_lease_is_one_error_naming_the_role_and_heals_when_granted() {
    let cluster = Cluster::start().await;
    cluster.kubectl(&["create", "namespace", "dataguardian-system"], None);
    cluster.front.deny_leases.store(true, Ordering::SeqCst);
    let op = Operator::start(
        &cluster.front.kubeconfig,
        cluster.dir.path(),
        "dataguardian-system",
        "unbound",
        6,
    );
    op.wait_readyz("refusing for RBAC", Duration::from_secs(60), |c, b| {
        c == 503
            && b.contains("forbidden to get Lease \"dataguardian-operator\" in namespace \"dataguardian-system\"")
            && !b.contains("caches")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let errors = op.records("ERROR");
    assert_eq!(errors.len(), 1, "log:\n{}", op.log());
    let message = errors[0]["message"].as_str().unwrap_or_default();
    for needle in [
        "forbidden to get Lease",
        "get, create and update",
        "config/rbac/leader_election_role.yaml",
        "dataguardian-leader-election",
        "system:serviceaccount:dataguardian-system:dataguardian",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message}"
        );
    }

    // The platform team applies the Role: the operator carries on by itself.
    cluster.front.deny_leases.store(false, Ordering::SeqCst);
    op.wait_readyz("leading", Duration::from_secs(15), |c, b| {
        c == 200 && b.contains("ok (leader)")
    })
    .await;
    assert_eq!(op.records("ERROR").len(), 1, "log:\n{}", op.log());
}
