//! The `kube-sim` binary as the README and `make sim-up` use it: a relative `--state-dir`, the
//! runtime chosen by `--container-runtime` / `KUBE_SIM_CONTAINER_RUNTIME`, and a Docker runtime
//! that fails loudly when the engine cannot be reached.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// Kills the kube-sim child (this test's own process) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kube_sim(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kube-sim"));
    c.current_dir(cwd)
        .env_remove("KUBE_SIM_CONTAINER_RUNTIME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn wait_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_state_dir_hands_pods_absolute_paths() {
    let cwd = tempfile::tempdir().unwrap();
    // As `make sim-up`: started from the checkout with a relative state dir.
    let _sim = Running(
        kube_sim(cwd.path())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                "target/sim",
                "--run-jobs",
            ])
            .args(["--container-runtime", "process"])
            .spawn()
            .unwrap(),
    );
    let state = cwd.path().join("target/sim");
    wait_file(&state.join("port"));
    let kubeconfig = Kubeconfig::read_from(state.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "rel"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", "echo \"path=$SIM_TERMINATION_MESSAGE_PATH\"; printf written > /dev/termination-log"]
        }]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let start = Instant::now();
    let (name, term) = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pod never finished"
        );
        let list = pods
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=rel"))
            .await
            .unwrap();
        let found = list.items.into_iter().find_map(|p| {
            let t = p
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?
                .terminated
                .clone()?;
            Some((p.metadata.name.clone()?, t))
        });
        if let Some(f) = found {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert_eq!(term.exit_code, 0, "{logs}");
    assert_eq!(term.message.as_deref(), Some("written"), "{logs}");
    let path = logs.trim().strip_prefix("path=").unwrap();
    assert!(Path::new(path).is_absolute(), "{path}");
}

fn exits_with(mut child: Child, within: Duration) -> (i32, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("kube-sim kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn docker_is_the_default_and_an_unreachable_engine_fails_the_start() {
    let cwd = tempfile::tempdir().unwrap();
    let child = kube_sim(cwd.path())
        .args(["--state-dir", "s", "--run-jobs"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .spawn()
        .unwrap();
    let (code, err) = exits_with(child, Duration::from_secs(40));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(
            "the Docker container runtime is selected but the Docker Engine is not reachable"
        ),
        "{err}"
    );
    assert!(err.contains("--container-runtime process"), "{err}");

    // The process runtime, chosen through the environment, does not need the engine.
    let mut child = kube_sim(cwd.path())
        .args(["--state-dir", "p", "--run-jobs"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("KUBE_SIM_CONTAINER_RUNTIME", "process")
        .spawn()
        .unwrap();
    wait_file(&cwd.path().join("p/port"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "kube-sim exited");
    let _ = child.kill();
    let _ = child.wait();

    // An unknown runtime name is refused.
    let child = kube_sim(cwd.path())
        .args([
            "--state-dir",
            "q",
            "--run-jobs",
            "--container-runtime",
            "podman",
        ])
        .spawn()
        .unwrap();
    let (code, err) = exits_with(child, Duration::from_secs(20));
    assert_ne!(code, 0);
    assert!(err.contains("podman"), "{err}");
}
