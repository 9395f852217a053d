//! Pods reach the API server in-cluster like on a real cluster: the kubelet requests their
//! ServiceAccount's token through the TokenRequest API and mounts it (with `ca.crt` and
//! `namespace`) at `/var/run/secrets/kubernetes.io/serviceaccount`, and sets
//! `KUBERNETES_SERVICE_HOST`/`PORT`. A real kubectl inside the pod's container (client-go's
//! in-cluster config: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the mounted
//! CA and token) may do what the ServiceAccount's Role allows and is refused the rest. The same
//! with the process runtime, which hands host processes a kubeconfig built from those files.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use kube_sim::runner::{RunnerConfig, Runtime, attach};
use kube_sim::{RunningServer, Server, ServerOptions};
use serde_json::json;

const KUBECTL_IMAGE: &str = "kube-sim-test-kubectl:1";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Builds, once per test process, an image of `debian:bookworm-slim` (imported by
/// `scripts/base-images.sh`) with the host's kubectl (a static binary) and user 65532.
fn kubectl_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let base = Command::new("docker")
            .args(["image", "inspect", "debian:bookworm-slim"])
            .output()
            .expect("docker CLI");
        assert!(
            base.status.success(),
            "debian:bookworm-slim is missing: run scripts/base-images.sh"
        );
        let which = Command::new("sh")
            .args(["-c", "command -v kubectl"])
            .output()
            .unwrap();
        let kubectl = std::fs::canonicalize(String::from_utf8_lossy(&which.stdout).trim())
            .expect("kubectl must be installed");
        let ctx = tempfile::tempdir().unwrap();
        std::fs::copy(&kubectl, ctx.path().join("kubectl")).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM debian:bookworm-slim\nLABEL io.kube-sim.test-image=\"kubectl\"\nCOPY kubectl /usr/local/bin/kubectl\nUSER 65532:65532\n",
        )
        .unwrap();
        let out = Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", KUBECTL_IMAGE])
            .arg(ctx.path())
            .output()
            .expect("docker build");
        assert!(
            out.status.success(),
            "docker build {KUBECTL_IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

struct Sim {
    client: Client,
    server: RunningServer,
    _dir: tempfile::TempDir,
}

async fn sim(runtime: Runtime) -> Sim {
    if runtime == Runtime::Docker {
        tokio::task::spawn_blocking(kubectl_image).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut server = Server::start(ServerOptions {
        state_dir: Some(state.clone()),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let mut cfg = RunnerConfig::new(state).unwrap();
    cfg.runtime = runtime;
    attach(&mut server, cfg).await.unwrap();
    let client = server.client().await.unwrap();
    Sim {
        client,
        server,
        _dir: dir,
    }
}

fn kubectl_admin(server: &RunningServer, args: &[&str], stdin: &str) {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("KUBECACHEDIR", server.state_dir().join("kubectl-cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespace `shop`, ServiceAccount `reader` allowed to read ConfigMaps (not Secrets).
fn setup(server: &RunningServer) {
    kubectl_admin(
        server,
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: shop}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects: [{kind: ServiceAccount, name: reader}]
"#,
    );
}

const SCRIPT: &str = r#"d=/var/run/secrets/kubernetes.io/serviceaccount
echo "files: $(cd $d 2>/dev/null && ls | tr '\n' ' ')"
echo "namespace: $(cat $d/namespace 2>/dev/null)"
echo "api: $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT $KUBERNETES_PORT"
kubectl get configmaps -o name 2>&1
kubectl get secrets 2>&1 || echo secrets-refused
kubectl auth whoami 2>&1
kubectl auth can-i list configmaps 2>&1
"#;

async fn run_pod(sim: &Sim, image: &str) -> (Pod, String) {
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "in-cluster"},
        "spec": {
            "serviceAccountName": "reader",
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": image,
                "command": ["sh", "-c", SCRIPT],
                "env": [{"name": "HOME", "value": "/tmp"}],
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let start = std::time::Instant::now();
    loop {
        let p = pods.get("in-cluster").await.unwrap();
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            let logs = pods.logs("in-cluster", &Default::default()).await.unwrap();
            return (p, logs);
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the pod did not finish: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `kubectl auth whoami` printed the pod-name and pod-uid extras of a pod-bound token.
fn bound_to_pod(logs: &str, uid: &str) -> bool {
    let extra = |key: &str, value: &str| {
        logs.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words == ["Extra:", key, value]
        })
    };
    extra("authentication.kubernetes.io/pod-name", "[in-cluster]")
        && extra("authentication.kubernetes.io/pod-uid", &format!("[{uid}]"))
}

fn check_logs(sim: &Sim, pod: &Pod, logs: &str) {
    let port = sim.server.addr().port();
    assert!(
        logs.contains("files: ca.crt namespace token"),
        "the token volume: {logs}"
    );
    assert!(logs.contains("namespace: shop\n"), "{logs}");
    assert!(
        logs.contains(&format!("api: 127.0.0.1:{port} tcp://127.0.0.1:{port}\n")),
        "{logs}"
    );
    assert!(
        logs.contains("configmap/kube-root-ca.crt\n"),
        "allowed: {logs}"
    );
    assert!(
        logs.contains(r#"Error from server (Forbidden): secrets is forbidden: User "system:serviceaccount:shop:reader" cannot list resource "secrets" in API group "" in the namespace "shop""#),
        "refused: {logs}"
    );
    assert!(logs.contains("secrets-refused"), "{logs}");
    // The token is the ServiceAccount's, bound to this pod.
    let uid = pod.metadata.uid.clone().unwrap();
    for want in [
        "system:serviceaccount:shop:reader",
        "[system:serviceaccounts system:serviceaccounts:shop system:authenticated]",
    ] {
        assert!(logs.contains(want), "whoami shows {want}: {logs}");
    }
    assert!(bound_to_pod(logs, &uid), "whoami shows the pod: {logs}");
    assert!(logs.trim_end().ends_with("yes"), "can-i: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_uses_its_service_account_in_cluster() {
    let sim = sim(Runtime::Docker).await;
    setup(&sim.server);
    let (pod, logs) = run_pod(&sim, KUBECTL_IMAGE).await;
    check_logs(&sim, &pod, &logs);
    assert_eq!(
        pod.status.unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_process_uses_its_service_account_through_a_kubeconfig() {
    let sim = sim(Runtime::Process).await;
    setup(&sim.server);
    // `debian` maps to the host's shell and commands in the process runtime's image table; the
    // token volume lives in the pod dir on the host, so the process gets KUBECONFIG instead.
    let (pod, logs) = run_pod(&sim, "debian:bookworm-slim").await;
    let port = sim.server.addr().port();
    assert!(
        logs.contains("configmap/kube-root-ca.crt\n") && logs.contains("secrets-refused"),
        "{logs}"
    );
    assert!(logs.contains(&format!("api: 127.0.0.1:{port}")), "{logs}");
    let uid = pod.metadata.uid.clone().unwrap();
    assert!(
        logs.contains("system:serviceaccount:shop:reader") && bound_to_pod(&logs, &uid),
        "{logs}"
    );
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Succeeded"));
}
