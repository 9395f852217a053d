//! The Job runner's Docker runtime against the in-repo API server and the machine's Docker
//! Engine: each pod container is a container of the pod's image (host network), built here from
//! `debian:bookworm-slim` (imported by `scripts/base-images.sh`) with `tests/images/Dockerfile`.
//! Names are unique per test, so the tests run in parallel.

mod common;

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use serde_json::json;

const ROOT_IMAGE: &str = "kube-sim-test-root:1";
const NONROOT_IMAGE: &str = "kube-sim-test-nonroot:1";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the two test images once per test process.
fn images() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        common::build_test_image("root", &[ROOT_IMAGE]);
        common::build_test_image("nonroot", &[NONROOT_IMAGE]);
    });
}

type Sim = common::DockerSim;

async fn sim() -> Sim {
    common::docker_sim(images, true).await
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn job(name: &str, pod_spec: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}},
    }))
    .unwrap()
}

/// Waits for the Job's pod to have a status for which `pick` returns something.
async fn job_pod<T>(
    pods: &Api<Pod>,
    job: &str,
    what: &str,
    pick: impl Fn(&Pod) -> Option<T>,
) -> (Pod, T) {
    wait_for(what, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
            .await
            .ok()?;
        let pod = list.items.into_iter().next()?;
        let v = pick(&pod)?;
        Some((pod, v))
    })
    .await
}

fn main_status(pod: &Pod) -> Option<ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

fn terminated(pod: &Pod) -> Option<ContainerStateTerminated> {
    main_status(pod)?.state?.terminated
}

/// Names of the Docker containers of a pod (any state).
fn containers_of(uid: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label=io.kube-sim.pod-uid={uid}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn inspect(name: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn wait_gone(uid: &str) {
    let uid = uid.to_string();
    wait_for("the pod's containers to be removed", || {
        let uid = uid.clone();
        async move {
            tokio::task::spawn_blocking(move || containers_of(&uid).is_empty())
                .await
                .unwrap()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_pod_runs_as_a_container_of_its_image() {
    let sim = sim().await;
    let ns = "default";
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "dk-basic"},
                "stringData": {"password": "s3cret-value"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), ns);
    // command replaces the ENTRYPOINT, args the CMD; env from a Secret and the downward API;
    // workingDir; a native sidecar gated by an exec startup probe; the termination message.
    let script = r#"echo "pwd=$(pwd) host=$(hostname) ip=$POD_IP pw=$PASSWORD"
grep -E '^Seccomp:' /proc/self/status
test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-mounted
echo "api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
echo to-stderr >&2
printf 'all good' > /dev/termination-log
exit 0"#;
    let spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "initContainers": [{
            "name": "side", "image": ROOT_IMAGE, "restartPolicy": "Always",
            "command": ["sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 300"],
            "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]},
                             "periodSeconds": 1, "failureThreshold": 30}
        }],
        "containers": [{
            "name": "main", "image": ROOT_IMAGE,
            "command": ["sh", "-c"], "args": [script],
            "workingDir": "/work/here",
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "dk-basic", "key": "password"}}}
            ]
        }]
    });
    jobs.create(&PostParams::default(), &job("dk-basic", spec))
        .await
        .unwrap();
    let (pod, term) = job_pod(&pods, "dk-basic", "the main container to exit", terminated).await;
    let name = pod.metadata.name.clone().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(term.exit_code, 0, "{term:?}");
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert_eq!(term.message.as_deref(), Some("all good"));
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(ip.starts_with("127.") && ip != "127.0.0.1", "{ip}");

    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert!(
        logs.contains(&format!(
            "pwd=/work/here host={name} ip={ip} pw=s3cret-value"
        )),
        "{logs}"
    );
    // No seccompProfile: unconfined, as the kubelet's default.
    assert!(logs.contains("Seccomp:\t0"), "{logs}");
    // The default ServiceAccount's token (the API server added the kube-api-access volume)
    // and the `kubernetes` Service's variables naming the API server.
    assert!(logs.contains("token-mounted"), "{logs}");
    assert!(
        logs.contains(&format!("api=127.0.0.1:{}", sim.server.addr().port())),
        "{logs}"
    );
    assert!(logs.contains("to-stderr"), "{logs}");

    // Real containers, on the host network, labelled with the pod; the secret is not on any
    // container's command line.
    let names = containers_of(&uid);
    assert_eq!(names.len(), 2, "{names:?}");
    let main = names.iter().find(|n| n.starts_with("k8s_main_")).unwrap();
    assert!(main.contains(&name), "{main}");
    assert_eq!(inspect(main, "{{.HostConfig.NetworkMode}}"), "host");
    assert_eq!(inspect(main, "{{.Config.Image}}"), ROOT_IMAGE);
    assert_eq!(
        inspect(main, "{{json .Path}} {{json .Args}}"),
        r#""sh" ["-c","#.to_string() + &serde_json::to_string(script).unwrap() + "]"
    );
    // The sidecar was stopped after the main container, and the pod succeeded.
    let (_, phase) = job_pod(&pods, "dk-basic", "the pod to succeed", |p| {
        let phase = p.status.as_ref()?.phase.clone()?;
        (phase == "Succeeded").then_some(phase)
    })
    .await;
    assert_eq!(phase, "Succeeded");
    let side = names.iter().find(|n| n.starts_with("k8s_side_")).unwrap();
    assert_eq!(inspect(side, "{{.State.Running}}"), "false");

    // Deleting the Job deletes the pod, and the pod's containers go with it.
    jobs.delete(
        "dk-basic",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    wait_gone(&uid).await;
    drop(sim.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_and_volumes_are_enforced_by_the_engine() {
    let sim = sim().await;
    let ns = "default";
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "dk-sec"},
                "stringData": {"token": "tok-123", "other": "o"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), ns);
    let script = r#"echo "ids=$(id -u):$(id -g) groups=$(id -G)"
# /tmp of the image is world-writable: only a read-only root fs refuses this.
if touch /tmp/rootfs-probe 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi
grep -E ' /secret ' /proc/mounts | awk '{split($4, o, ","); print "secretmount=" o[1]}'
echo "secret=$(cat /secret/token) default=$(cat /defaults/other)"
stat -c 'mode=%a' /secret/token
grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status
df -k /mem | tail -1 | awk '{print "memsize=" $2}'
grep -E ' /mem ' /proc/mounts | awk '{print "memfs=" $3}'
if dd if=/dev/zero of=/mem/big bs=1M count=16 2>/dev/null; then echo mem=unbounded; else echo mem=full; fi
echo data > /data/out && echo pvc=ok
exit 0"#;
    let spec = json!({
        "restartPolicy": "Never",
        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
            {"name": "secret", "secret": {"secretName": "dk-sec", "defaultMode": 256}},
            {"name": "defaults", "secret": {"secretName": "dk-sec"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "dk-claim"}}
        ],
        "containers": [{
            "name": "main", "image": ROOT_IMAGE,
            "command": ["sh", "-c", script],
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                {"name": "mem", "mountPath": "/mem"},
                {"name": "secret", "mountPath": "/secret"},
                {"name": "defaults", "mountPath": "/defaults"},
                {"name": "data", "mountPath": "/data"}
            ]
        }]
    });
    jobs.create(&PostParams::default(), &job("dk-sec", spec))
        .await
        .unwrap();
    let (pod, term) = job_pod(&pods, "dk-sec", "the container to exit", terminated).await;
    let name = pod.metadata.name.clone().unwrap();
    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert_eq!(term.exit_code, 0, "{logs}");
    for expected in [
        "ids=65532:65532 groups=65532",
        "rootfs=readonly",
        "secretmount=ro",
        // defaultMode 0400 with fsGroup: group-readable (0440), so uid 65532 reads it; the
        // default mode 0644 is readable anyway.
        "secret=tok-123 default=o",
        "mode=440",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        // RuntimeDefault: the engine's default seccomp filter.
        "Seccomp:\t2",
        "memsize=8192",
        "memfs=tmpfs",
        "mem=full",
        "pvc=ok",
    ] {
        assert!(logs.contains(expected), "{expected:?} missing in:\n{logs}");
    }
    drop(sim.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_non_root_refuses_an_image_that_runs_as_root() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = |image: &str| {
        json!({
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", "id -u"]}]
        })
    };
    jobs.create(&PostParams::default(), &job("dk-root", spec(ROOT_IMAGE)))
        .await
        .unwrap();
    // The same policy with an image whose USER is 65532 runs.
    jobs.create(
        &PostParams::default(),
        &job("dk-nonroot", spec(NONROOT_IMAGE)),
    )
    .await
    .unwrap();
    let (pod, (reason, message)) = job_pod(&pods, "dk-root", "CreateContainerConfigError", |p| {
        let w = main_status(p)?.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError"))
            .then(|| (w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
    })
    .await;
    assert_eq!(reason, "CreateContainerConfigError");
    let expected = format!(
        "container has runAsNonRoot and image will run as root (pod: \"{}_default({})\", container: main)",
        pod.metadata.name.clone().unwrap(),
        pod.metadata.uid.clone().unwrap()
    );
    assert_eq!(message, expected);
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert!(containers_of(pod.metadata.uid.as_deref().unwrap()).is_empty());
    // A subPath that climbs out of its volume is refused, never bind-mounted.
    let escape = json!({
        "restartPolicy": "Never",
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [{"name": "main", "image": ROOT_IMAGE, "command": ["true"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/x", "subPath": "../../../etc"}]}]
    });
    jobs.create(&PostParams::default(), &job("dk-escape", escape))
        .await
        .unwrap();
    let (esc_pod, message) = job_pod(&pods, "dk-escape", "the subPath refusal", |p| {
        let w = main_status(p)?.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError"))
            .then(|| w.message.unwrap_or_default())
    })
    .await;
    assert!(
        message.contains("must be a relative path without"),
        "{message}"
    );
    assert!(containers_of(esc_pod.metadata.uid.as_deref().unwrap()).is_empty());
    let (ok_pod, term) = job_pod(
        &pods,
        "dk-nonroot",
        "the non-root pod to finish",
        terminated,
    )
    .await;
    assert_eq!(term.exit_code, 0);
    let logs = pods
        .logs(
            ok_pod.metadata.name.as_deref().unwrap(),
            &LogParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(logs.trim(), "65532");
    drop(sim.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kills_with_137_and_cpu_limit_is_applied() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    // A shell variable of 200 MB in a container limited to 32 MiB.
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{
            "name": "main", "image": ROOT_IMAGE,
            "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}"],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}
        }]
    });
    jobs.create(&PostParams::default(), &job("dk-oom", spec))
        .await
        .unwrap();
    let (pod, term) = job_pod(
        &pods,
        "dk-oom",
        "the container to be OOM-killed",
        terminated,
    )
    .await;
    assert_eq!(term.reason.as_deref(), Some("OOMKilled"), "{term:?}");
    assert_eq!(term.exit_code, 137);
    let uid = pod.metadata.uid.clone().unwrap();
    let names = containers_of(&uid);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        inspect(
            &names[0],
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}}"
        ),
        format!("{m} {m} 500000000", m = 32 * 1024 * 1024)
    );
    let job = wait_for("the Job to fail", || async {
        let j = jobs.get("dk-oom").await.ok()?;
        j.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
            .then_some(j)
    })
    .await;
    assert_eq!(job.status.unwrap().failed, Some(1));
    drop(sim.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_err_image_pull_and_nothing_is_pulled() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let image = "kube-sim-test-absent:0";
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": image, "command": ["true"]}]
    });
    jobs.create(&PostParams::default(), &job("dk-absent", spec))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for wanted in ["ErrImagePull", "ImagePullBackOff"] {
        let (_, (reason, message)) = job_pod(&pods, "dk-absent", wanted, |p| {
            let w = main_status(p)?.state?.waiting?;
            (w.reason.as_deref() == Some(wanted))
                .then(|| (w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
        })
        .await;
        assert!(message.contains(image), "{message}");
        seen.push(reason);
    }
    assert_eq!(seen, ["ErrImagePull", "ImagePullBackOff"]);
    let present = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .unwrap();
    assert!(!present.status.success(), "the image was pulled");
    drop(sim.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_runner_removes_its_containers_and_a_new_one_removes_stale_ones() {
    // A container left by a runner that no longer exists (a crash): removed at start.
    tokio::task::spawn_blocking(images).await.unwrap();
    let stale = format!("k8s_stale_{}", uuid_like());
    let out = Command::new("docker")
        .args([
            "create",
            "--name",
            &stale,
            "--label",
            "io.kube-sim.runner=999999999-1",
        ])
        .args(["--label", "io.kube-sim.pod-uid=stale", ROOT_IMAGE, "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sim = sim().await;
    assert_eq!(
        inspect(&stale, "{{.Name}}"),
        "",
        "the stale container is still there"
    );

    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": ROOT_IMAGE, "command": ["sleep", "300"]}]
    });
    jobs.create(&PostParams::default(), &job("dk-stop", spec))
        .await
        .unwrap();
    let (pod, _) = job_pod(&pods, "dk-stop", "the container to run", |p| {
        main_status(p)?.state?.running
    })
    .await;
    let uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(containers_of(&uid).len(), 1);
    drop(sim.server);
    wait_gone(&uid).await;
}

fn uuid_like() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}
