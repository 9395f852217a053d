//! Shared helpers of the kube-sim contract tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube_sim::{RunningServer, Server, ServerOptions};
use serde_json::{Value, json};

/// The fixture CRDs (a `Widget` kind with status, printer columns, schema and CEL rules).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Starts a server with the fixture CRDs.
pub async fn start() -> RunningServer {
    start_with(ServerOptions {
        crds_dir: Some(fixtures()),
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
}

/// Starts a server with explicit options.
pub async fn start_with(opts: ServerOptions) -> RunningServer {
    Server::start(opts).await.expect("kube-sim starts")
}

/// The Widget resource.
pub fn widget_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kube-sim.io", "v1", "Widget"),
        "widgets",
    )
}

/// A namespaced Widget API.
pub fn widgets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &widget_ar())
}

/// A Widget object.
pub fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "test.kube-sim.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid widget")
}

/// The `Status` of an API error (panics on other errors).
pub fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it returns true (10 s timeout).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Output of a kubectl run.
pub struct Kubectl {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the installed kubectl against the server (with a private discovery cache).
pub async fn kubectl(server: &RunningServer, args: &[&str]) -> Kubectl {
    kubectl_stdin(server, args, None).await
}

/// Runs kubectl with `stdin` piped in.
pub async fn kubectl_stdin(server: &RunningServer, args: &[&str], stdin: Option<&str>) -> Kubectl {
    kubectl_with(server, server.kubeconfig_path(), args, stdin).await
}

/// Runs kubectl as the user of `kubeconfig` (e.g. from `RunningServer::add_user`).
pub async fn kubectl_as(server: &RunningServer, kubeconfig: &Path, args: &[&str]) -> Kubectl {
    kubectl_with(server, kubeconfig, args, None).await
}

/// Runs kubectl with `kubeconfig` and `stdin`.
pub async fn kubectl_with(
    server: &RunningServer,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Kubectl {
    use tokio::io::AsyncWriteExt;
    let cache = server.state_dir().join("kubectl-cache");
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", &cache)
        .env("HOME", server.state_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("kubectl must be installed (v1.32) for the kube-sim contract tests");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes within 60 s")
        .expect("kubectl runs");
    Kubectl {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs kubectl and requires success.
pub async fn kubectl_ok(server: &RunningServer, args: &[&str]) -> String {
    let out = kubectl(server, args).await;
    assert!(
        out.ok,
        "kubectl {args:?} failed: {}\n{}",
        out.stderr, out.stdout
    );
    out.stdout
}

/// Builds `target` of `tests/images/Dockerfile` under `tags` (from `debian:bookworm-slim`,
/// which `scripts/base-images.sh` imports). Callers build once per test process.
pub fn build_test_image(target: &str, tags: &[&str]) {
    use std::process::Command;
    let base = Command::new("docker")
        .args(["image", "inspect", "debian:bookworm-slim"])
        .output()
        .expect("docker CLI");
    assert!(
        base.status.success(),
        "debian:bookworm-slim is missing: run scripts/base-images.sh"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images");
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--target", target]);
    for tag in tags {
        cmd.args(["-t", tag]);
    }
    let out = cmd.arg(&dir).output().expect("docker build");
    assert!(
        out.status.success(),
        "docker build {}: {}",
        tags.join(", "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server with the runner attached on the Docker runtime (restart backoff 200 ms; the
/// pod backoff too when `fast_pod_backoff`), its admin client, and the temp dir holding the
/// state (a private 0700 dir above it, as in the e2e harness).
pub struct DockerSim {
    pub client: kube::Client,
    pub server: RunningServer,
    pub _dir: tempfile::TempDir,
}

/// Starts a [`DockerSim`] after `images` (run on a blocking thread) has built what it needs.
pub async fn docker_sim(images: fn(), fast_pod_backoff: bool) -> DockerSim {
    use kube_sim::runner::{RunnerConfig, Runtime, attach};
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kube_sim::runner=info")),
        )
        .try_init();
    tokio::task::spawn_blocking(images).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut server = Server::start(ServerOptions {
        state_dir: Some(state.clone()),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let mut cfg = RunnerConfig::new(state).unwrap();
    cfg.runtime = Runtime::Docker;
    if fast_pod_backoff {
        cfg.pod_backoff_base = Duration::from_millis(200);
    }
    cfg.container_restart_backoff = Duration::from_millis(200);
    attach(&mut server, cfg).await.unwrap();
    let client = server.client().await.unwrap();
    DockerSim {
        client,
        server,
        _dir: dir,
    }
}
