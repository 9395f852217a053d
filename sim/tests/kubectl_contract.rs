//! Contract tests of kube-sim with the installed kubectl (v1.32) as the user's client.

mod common;

use std::time::Duration;

use common::*;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const WIDGET: &str = "apiVersion: test.kube-sim.io/v1
kind: Widget
metadata:
  name: w1
spec:
  size: 3
";

#[tokio::test]
async fn kubectl_get_uses_printer_columns_short_names_and_categories() {
    let server = start().await;
    kubectl_stdin(&server, &["apply", "-f", "-"], Some(WIDGET)).await;
    let client = server.client().await.unwrap();
    widgets(&client, "default")
        .patch_status(
            "w1",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    for args in [
        &["get", "widgets"][..],
        &["get", "wd"][..],
        &["get", "kubesimtest"][..],
        &["get", "widget.test.kube-sim.io", "w1"][..],
    ] {
        let out = kubectl_ok(&server, args).await;
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "SIZE", "PHASE", "AGE"], "{args:?}: {out}");
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(&row[..3], ["w1", "3", "Ready"], "{args:?}: {out}");
    }
    // Discovery (kubectl 1.32 uses the aggregated form).
    let out = kubectl(
        &server,
        &["api-resources", "--api-group=test.kube-sim.io", "-v=6"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["widgets", "wd", "test.kube-sim.io/v1", "true", "Widget"],
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("/apis/test.kube-sim.io/v1?"),
        "aggregated discovery avoids per-group requests: {}",
        out.stderr
    );
    let out = kubectl_ok(&server, &["explain", "widget.spec.size"]).await;
    assert!(out.contains("FIELD: size <integer>"), "{out}");

    // Built-ins get default columns.
    let out = kubectl_ok(&server, &["get", "namespaces"]).await;
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("default") && out.contains("Active"), "{out}");
    let out = kubectl_ok(&server, &["get", "crd"]).await;
    assert!(out.contains("widgets.test.kube-sim.io"), "{out}");
}

#[tokio::test]
async fn kubectl_apply_is_validated_by_the_server() {
    let server = start().await;
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(WIDGET)).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "widget.test.kube-sim.io/w1 created");
    let changed = WIDGET.replace("size: 3", "size: 4");
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(&changed)).await;
    assert_eq!(
        out.stdout.trim(),
        "widget.test.kube-sim.io/w1 configured",
        "{}",
        out.stderr
    );
    let generation = kubectl_ok(
        &server,
        &["get", "wd", "w1", "-o", "jsonpath={.metadata.generation}"],
    )
    .await;
    assert_eq!(generation, "2");

    let bad = WIDGET.replace("size: 3", "size: 300");
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(&bad)).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("The Widget \"w1\" is invalid: spec.size: Invalid value: 300"),
        "{}",
        out.stderr
    );

    // kubectl's default --validate=strict asks the server to refuse unknown fields.
    let unknown = WIDGET
        .replace("size: 3", "size: 3\n  bogus: true")
        .replace("w1", "w2");
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(&unknown)).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("strict decoding error: unknown field \"spec.bogus\""),
        "{}",
        out.stderr
    );
    let out = kubectl_stdin(
        &server,
        &["apply", "--validate=false", "-f", "-"],
        Some(&unknown),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);

    // Server-side apply conflicts are reported like the real server's.
    let out = kubectl_stdin(
        &server,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        Some(&WIDGET.replace("size: 3", "size: 9")),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Apply failed with 1 conflict"),
        "{}",
        out.stderr
    );
    let out = kubectl_stdin(
        &server,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        Some(&WIDGET.replace("size: 3", "size: 9")),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
}

#[tokio::test]
async fn kubectl_generators_send_protobuf() {
    let server = start().await;
    let runs: [&[&str]; 5] = [
        &["create", "namespace", "shop"],
        &["create", "serviceaccount", "backup", "-n", "shop"],
        &[
            "create",
            "configmap",
            "cfg",
            "-n",
            "shop",
            "--from-literal=a=b",
        ],
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "-n",
            "shop",
            "--from-literal=password=hunter2",
        ],
        &[
            "create",
            "job",
            "once",
            "-n",
            "shop",
            "--image=busybox",
            "--",
            "echo",
            "hi",
        ],
    ];
    for args in runs {
        let mut v = vec!["-v=8"];
        v.extend_from_slice(args);
        let out = kubectl(&server, &v).await;
        assert!(out.ok, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("Content-Type: application/vnd.kubernetes.protobuf"),
            "{args:?} did not send protobuf: {}",
            out.stderr
        );
    }
    let client = server.client().await.unwrap();
    let cm: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "shop");
    assert_eq!(cm.get("cfg").await.unwrap().data.unwrap()["a"], "b");
    let s: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "shop");
    let secret = s.get("creds").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"].0, b"hunter2".to_vec());
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "shop");
    let job = jobs.get("once").await.unwrap();
    let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("busybox"));
    assert_eq!(
        c.command.as_deref(),
        Some(&["echo".to_string(), "hi".to_string()][..])
    );
}

#[tokio::test]
async fn kubectl_patch_types() {
    let server = start().await;
    kubectl_ok(&server, &["create", "configmap", "c", "--from-literal=a=1"]).await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "configmap",
            "c",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "configmap",
            "c",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/data/a"}]"#,
        ],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "configmap",
            "c",
            "--type",
            "strategic",
            "-p",
            r#"{"metadata":{"finalizers":["x/y"]}}"#,
        ],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "configmap",
            "c",
            "-p",
            r#"{"metadata":{"finalizers":["x/z"]}}"#,
        ],
    )
    .await;
    let out = kubectl_ok(&server, &["get", "configmap", "c", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"], json!({"b": "2"}));
    assert_eq!(
        v["metadata"]["finalizers"],
        json!(["x/y", "x/z"]),
        "finalizers merge as a set"
    );

    kubectl_stdin(&server, &["apply", "-f", "-"], Some(WIDGET)).await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "wd",
            "w1",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"size":7}}"#,
        ],
    )
    .await;
    let out = kubectl(
        &server,
        &[
            "patch",
            "wd",
            "w1",
            "--type",
            "strategic",
            "-p",
            r#"{"spec":{"size":8}}"#,
        ],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("not supported"), "{}", out.stderr);
    let size = kubectl_ok(&server, &["get", "wd", "w1", "-o", "jsonpath={.spec.size}"]).await;
    assert_eq!(size, "7");
}

#[tokio::test]
async fn kubectl_get_watch_streams_changes() {
    let server = start().await;
    kubectl_stdin(&server, &["apply", "-f", "-"], Some(WIDGET)).await;
    let cache = server.state_dir().join("kubectl-cache");
    let child = tokio::process::Command::new("kubectl")
        .args(["get", "wd", "-w", "--request-timeout=0"])
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("KUBECACHEDIR", &cache)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl must be installed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kubectl_ok(
        &server,
        &[
            "patch",
            "wd",
            "w1",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"size":42}}"#,
        ],
    )
    .await;
    let api = widgets(&server.client().await.unwrap(), "default");
    api.create(&PostParams::default(), &widget("w2", json!({"size": 5})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().expect("running");
    // Stop only the kubectl we started.
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let out = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "SIZE", "PHASE", "AGE"], "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.len() >= 2 && l[0] == "w1" && l[1] == "42"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.len() >= 2 && l[0] == "w2" && l[1] == "5"),
        "{text}"
    );
}

#[tokio::test]
async fn kubectl_delete_with_cascade() {
    let server = start().await;
    let client = server.client().await.unwrap();
    for (job, pod) in [("j1", "p1"), ("j2", "p2")] {
        kubectl_ok(
            &server,
            &["create", "job", job, "--image=busybox", "--", "true"],
        )
        .await;
        let jobs: Api<k8s_openapi::api::batch::v1::Job> =
            Api::namespaced(client.clone(), "default");
        let uid = jobs.get(job).await.unwrap().metadata.uid.unwrap();
        let pod_obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
        kubectl_stdin(&server, &["create", "-f", "-"], Some(&pod_obj.to_string())).await;
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    kubectl_ok(&server, &["delete", "job", "j1"]).await; // kubectl's default cascade is background
    eventually("p1 deleted with its job", || async {
        pods.get_opt("p1").await.unwrap().is_none()
    })
    .await;
    kubectl_ok(&server, &["delete", "job", "j2", "--cascade=orphan"]).await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    eventually("j2 gone", || async {
        jobs.get_opt("j2").await.unwrap().is_none()
    })
    .await;
    let p2 = pods.get("p2").await.unwrap();
    assert!(
        p2.metadata.owner_references.unwrap_or_default().is_empty(),
        "orphaned pod keeps running without owner"
    );
}

#[tokio::test]
async fn kubectl_logs_and_follow() {
    let server = start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "x"}]}});
    kubectl_stdin(&server, &["create", "-f", "-"], Some(&pod.to_string())).await;
    let out = kubectl(&server, &["logs", "p"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("is waiting to start: ContainerCreating"),
        "{}",
        out.stderr
    );
    let dir = server.state_dir().join("logs/default/p");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.log"), "a\nb\nc\n").unwrap();
    assert_eq!(kubectl_ok(&server, &["logs", "p"]).await, "a\nb\nc\n");
    assert_eq!(kubectl_ok(&server, &["logs", "p", "--tail=1"]).await, "c\n");
    let client = server.client().await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let follow = {
        let s = &server;
        async move { kubectl_ok(s, &["logs", "-f", "p"]).await }
    };
    let finish = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("main.log"))
                .unwrap();
            f.write_all(b"d\n").unwrap();
        }
        pods.patch_status(
            "p",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    };
    let (out, ()) = tokio::join!(follow, finish);
    assert_eq!(out, "a\nb\nc\nd\n");
}

const RUN: &str = "apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata:
  name: before-migration
spec:
  policyRef:
    name: nightly
  trigger: Manual
";

/// The repository's own CRDs (`crds/`) load, `kubectl get dataguardian` and printer columns
/// work, their CEL rules are enforced, and every file in `examples/` applies.
#[tokio::test]
async fn kubectl_repo_crds_and_examples() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let crds = repo.join("crds");
    assert!(
        crds.is_dir(),
        "{} must exist (generated by `dataguardian crd`)",
        crds.display()
    );
    let server = start_with(kube_sim::ServerOptions {
        crds_dir: Some(crds),
        ..Default::default()
    })
    .await;

    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(RUN)).await;
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl_ok(&server, &["get", "backupruns"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "POLICY", "PHASE", "SIZE", "DURATION", "VERIFIED", "AGE"
        ],
        "{out}"
    );
    let out = kubectl_ok(&server, &["get", "dataguardian"]).await;
    assert!(
        out.contains("backuprun.dataguardian.io/before-migration"),
        "{out}"
    );
    // Run specs are immutable (a CEL transition rule).
    let out = kubectl(
        &server,
        &[
            "patch",
            "backuprun",
            "before-migration",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"policyRef":{"name":"other"}}}"#,
        ],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("spec is immutable"), "{}", out.stderr);

    let examples = repo.join("examples");
    assert!(examples.is_dir(), "{} must exist", examples.display());
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        let text = std::fs::read_to_string(f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if let Some(ns) = v.pointer("/metadata/namespace").and_then(Value::as_str) {
                let _ = kubectl(&server, &["create", "namespace", ns]).await;
            }
        }
        let out = kubectl(&server, &["apply", "-f", f.to_str().unwrap()]).await;
        assert!(out.ok, "applying {}: {}", f.display(), out.stderr);
    }
    let out = kubectl_ok(&server, &["get", "dataguardian", "-A"]).await;
    assert!(out.starts_with("NAMESPACE"), "{out}");
}

#[tokio::test]
async fn kubectl_strict_validation_of_builtins() {
    let server = start().await;
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\ndatta:\n  x: y\n";
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(cm)).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("strict decoding error: unknown field \"datta\""),
        "{}",
        out.stderr
    );
    let out = kubectl_stdin(&server, &["apply", "--validate=false", "-f", "-"], Some(cm)).await;
    assert!(out.ok, "{}", out.stderr);
    let v: Value =
        serde_json::from_str(&kubectl_ok(&server, &["get", "cm", "c", "-o", "json"]).await)
            .unwrap();
    assert!(
        v.get("datta").is_none(),
        "unknown fields are dropped like the Go decoder does"
    );
    assert_eq!(v["data"]["a"], "b");
}

/// The `kube-sim` binary: prints its port, writes an https kubeconfig (with the CA) kubectl can use, runs Jobs with
/// `--run-jobs` (pod logs included), and stops on SIGTERM.
#[tokio::test]
async fn kube_sim_binary_with_run_jobs() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--listen", "127.0.0.1:0", "--crds"])
        .arg(fixtures())
        .arg("--state-dir")
        .arg(&state)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--run-jobs")
        // busybox maps to the host's shell in the image table (process runtime); the Docker
        // runtime, the default, is covered by runner_docker.rs and the e2e suite.
        .args(["--container-runtime", "process"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(state.join("port")).unwrap(),
        port.to_string()
    );
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        kc.contains(&format!("server: https://127.0.0.1:{port}"))
            && kc.contains("certificate-authority-data: "),
        "{kc}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("ca.crt"))
            .unwrap()
            .lines()
            .next(),
        Some("-----BEGIN CERTIFICATE-----")
    );

    let run = |args: Vec<&'static str>| {
        let kubeconfig = kubeconfig.clone();
        let cache = dir.path().join("cache");
        async move {
            let out = tokio::process::Command::new("kubectl")
                .args(&args)
                .env("KUBECONFIG", &kubeconfig)
                .env("KUBECACHEDIR", &cache)
                .output()
                .await
                .expect("kubectl must be installed");
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    run(vec![
        "create",
        "job",
        "hello",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo hello from the runner",
    ])
    .await;
    run(vec![
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=60s",
    ])
    .await;
    assert_eq!(
        run(vec!["logs", "job/hello"]).await,
        "hello from the runner\n"
    );

    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "kube-sim exits cleanly on SIGTERM: {exit:?}"
    );
}
