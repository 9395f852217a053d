//! The Job runner against the in-repo API server, end to end: Jobs become pods, pods become host
//! processes, status and logs come back through the API.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube_sim::runner::{RunnerConfig, Runtime, attach};
use kube_sim::{RunningServer, Server, ServerOptions};
use serde_json::json;

struct Sim {
    client: Client,
    // Dropped first: aborts the runner (killing its processes) and stops the server.
    server: RunningServer,
    dir: tempfile::TempDir,
}

async fn sim() -> Sim {
    sim_with_state(false).await
}

/// With `nested`, the state dir lies inside a private (0700) temp dir, as in the e2e harness.
async fn sim_with_state(nested: bool) -> Sim {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kube_sim::runner=info")),
        )
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let state = if nested {
        dir.path().join("state")
    } else {
        dir.path().to_path_buf()
    };
    let mut server = Server::start(ServerOptions {
        state_dir: Some(state.clone()),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let mut cfg = RunnerConfig::new(state).unwrap();
    // These scenarios run host processes (busybox, postgres, mariadb from the image table);
    // the Docker runtime has its own tests (runner_docker.rs).
    cfg.runtime = Runtime::Process;
    cfg.pod_backoff_base = Duration::from_millis(200);
    cfg.container_restart_backoff = Duration::from_millis(200);
    attach(&mut server, cfg).await.unwrap();
    let client = server.client().await.unwrap();
    Sim {
        client,
        server,
        dir,
    }
}

const TIMEOUT: Duration = Duration::from_secs(90);

/// Polls `f` until it returns `Some`, failing after [`TIMEOUT`] with `what`.
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn job_condition(job: &Job, t: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn wait_job_condition(jobs: &Api<Job>, name: &str, t: &str) -> Job {
    wait_for(&format!("job {name} condition {t}"), || async {
        let j = jobs.get(name).await.ok()?;
        job_condition(&j, t).map(|_| j)
    })
    .await
}

async fn job_pods(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .unwrap()
        .items
}

fn job(name: &str, spec: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn shell_job(name: &str, script: &str, extra: serde_json::Value) -> Job {
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox:1.36",
            "command": ["sh", "-c", script],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        }]}}
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    job(name, spec)
}

/// Waits until events regarding `name` (in `default`) with all `reasons` exist; returns
/// (reason, note) of all events regarding it.
async fn events_about(client: &Client, name: &str, reasons: &[&str]) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    wait_for(&format!("events {reasons:?} about {name}"), || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let found: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        reasons
            .iter()
            .all(|r| found.iter().any(|(fr, _)| fr == r))
            .then_some(found)
    })
    .await
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

fn read_pid(log: &str, marker: &str) -> Option<i32> {
    log.lines()
        .find_map(|l| l.strip_prefix(marker)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_succeeds_with_logs_termination_message_and_pod_metadata() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let script = "echo hi from $POD_NAME at $(POD_IP); echo done-msg > /dev/termination-log; echo to-stderr >&2";
    let created = jobs
        .create(
            &PostParams::default(),
            &shell_job("hello", script, json!({})),
        )
        .await
        .unwrap();
    let job = wait_job_condition(&jobs, "hello", "Complete").await;
    let status = job.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.active, None);
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(
        job_condition(&job, "SuccessCriteriaMet").unwrap().0,
        "CompletionsReached"
    );

    let list = job_pods(&pods, "hello").await;
    assert_eq!(list.len(), 1);
    let pod = &list[0];
    let name = pod.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("hello-") && name.len() == "hello-".len() + 5,
        "{name}"
    );
    let labels = pod.metadata.labels.clone().unwrap();
    let job_uid = created.metadata.uid.clone().unwrap();
    assert_eq!(labels["batch.kubernetes.io/job-name"], "hello");
    assert_eq!(labels["job-name"], "hello");
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], job_uid);
    assert_eq!(labels["controller-uid"], job_uid);
    let owner = &pod.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", job_uid.as_str(), Some(true))
    );
    assert_eq!(owner.block_owner_deletion, Some(true));

    let st = pod.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Succeeded"));
    let ip = st.pod_ip.clone().unwrap();
    assert!(ip.starts_with("127.") && ip != "127.0.0.1", "{ip}");
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(st.pod_ips.unwrap()[0].ip, ip);
    let cs = &st.container_statuses.unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert_eq!(term.message.as_deref(), Some("done-msg\n"));
    assert!(term.started_at.is_some() && term.finished_at.is_some());
    let conds = st.conditions.unwrap();
    let cond = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
    };
    assert_eq!(cond("PodScheduled").as_deref(), Some("True"));
    assert_eq!(cond("Initialized").as_deref(), Some("True"));
    assert_eq!(cond("Ready").as_deref(), Some("False"));

    // Logs through the API server (written by the runner) and on disk.
    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert!(logs.contains(&format!("hi from {name} at {ip}")), "{logs}");
    assert!(logs.contains("to-stderr"), "{logs}");
    let on_disk =
        std::fs::read_to_string(sim.dir.path().join(format!("logs/default/{name}/main.log")))
            .unwrap();
    assert_eq!(on_disk, logs);

    // Events like the real components': the Job controller's and the kubelet's.
    let job_events = events_about(&sim.client, "hello", &["SuccessfulCreate", "Completed"]).await;
    assert!(
        job_events
            .iter()
            .any(|(r, n)| r == "SuccessfulCreate" && n == &format!("Created pod: {name}")),
        "{job_events:?}"
    );
    let pod_events = events_about(&sim.client, &name, &["Started"]).await;
    assert!(
        pod_events
            .iter()
            .any(|(r, n)| r == "Started" && n == "Started container main"),
        "{pod_events:?}"
    );
    drop(sim.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_retries_up_to_backoff_limit_then_fails() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let j = shell_job(
        "flaky",
        "echo attempt; echo boom > /dev/termination-log; exit 3",
        json!({"backoffLimit": 2}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let job = wait_job_condition(&jobs, "flaky", "Failed").await;
    let (reason, message) = job_condition(&job, "Failed").unwrap();
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    assert_eq!(
        job_condition(&job, "FailureTarget").unwrap().0,
        "BackoffLimitExceeded"
    );
    let status = job.status.unwrap();
    assert_eq!(status.failed, Some(3));
    assert_eq!(status.succeeded, None);
    assert!(status.completion_time.is_none());
    let list = job_pods(&pods, "flaky").await;
    assert_eq!(
        list.len(),
        3,
        "one pod per attempt: backoffLimit 2 = 3 attempts"
    );
    for p in &list {
        let st = p.status.clone().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        let term = st.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(term.exit_code, 3);
        assert_eq!(term.reason.as_deref(), Some("Error"));
        assert_eq!(term.message.as_deref(), Some("boom\n"));
    }
    // No fourth attempt shows up later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(job_pods(&pods, "flaky").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_kills_the_pod_and_fails_the_job() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let j = shell_job(
        "slow",
        "echo pid=$$$$; exec sleep 300",
        json!({"activeDeadlineSeconds": 3, "backoffLimit": 5}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    // The process runs first.
    let (pod_name, pid) = wait_for("the sleeping pod's pid", || async {
        let p = job_pods(&pods, "slow").await.into_iter().next()?;
        let name = p.metadata.name.clone()?;
        let log = pods.logs(&name, &LogParams::default()).await.ok()?;
        Some((name, read_pid(&log, "pid=")?))
    })
    .await;
    assert!(process_alive(pid));
    let job = wait_job_condition(&jobs, "slow", "Failed").await;
    let (reason, message) = job_condition(&job, "Failed").unwrap();
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    assert!(job.status.unwrap().active.is_none());
    wait_for("the process to be killed", || async {
        (!process_alive(pid)).then_some(())
    })
    .await;
    // The job controller deleted its pod; no retry was started.
    wait_for("the pod to be deleted", || async {
        pods.get_opt(&pod_name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(job_pods(&pods, "slow").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_kills_its_processes() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    // A child process in the background too: the whole process group must go.
    let j = shell_job(
        "doomed",
        "sleep 300 & echo child=$!; echo pid=$$$$; wait",
        json!({}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let (pid, child) = wait_for("the pids", || async {
        let p = job_pods(&pods, "doomed").await.into_iter().next()?;
        let log = pods
            .logs(p.metadata.name.as_deref()?, &LogParams::default())
            .await
            .ok()?;
        Some((read_pid(&log, "pid=")?, read_pid(&log, "child=")?))
    })
    .await;
    assert!(process_alive(pid) && process_alive(child));
    let running = wait_for("the pod to be Running", || async {
        let p = job_pods(&pods, "doomed").await.into_iter().next()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let cs = running.status.unwrap().container_statuses.unwrap();
    assert!(cs[0].state.as_ref().unwrap().running.is_some());
    assert!(cs[0].ready);

    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    jobs.delete("doomed", &dp).await.unwrap();
    wait_for("the processes to be killed", || async {
        (!process_alive(pid) && !process_alive(child)).then_some(())
    })
    .await;
    wait_for("the pods to be gone", || async {
        job_pods(&pods, "doomed").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_blocks_the_container_until_it_exists() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let j = job(
        "needs-secret",
        json!({"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "debian:bookworm",
            "command": ["sh", "-c", "test \"$DB_PASSWORD\" = 'p@ss w0rd' && echo user=$DB_USER"],
            "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
            "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}]
        }]}}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let waiting = wait_for("CreateContainerConfigError", || async {
        let p = job_pods(&pods, "needs-secret").await.into_iter().next()?;
        let st = p.status.clone()?;
        let w = st.container_statuses.as_ref()?[0]
            .state
            .as_ref()?
            .waiting
            .clone()?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some((st, w))
    })
    .await;
    assert_eq!(waiting.0.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting.1.message.as_deref(),
        Some("secret \"db\" not found")
    );

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "stringData": {"password": "p@ss w0rd", "USER": "backup"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let job = wait_job_condition(&jobs, "needs-secret", "Complete").await;
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    let p = job_pods(&pods, "needs-secret").await.remove(0);
    let logs = pods
        .logs(p.metadata.name.as_deref().unwrap(), &LogParams::default())
        .await
        .unwrap();
    assert_eq!(logs, "user=backup\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_is_err_image_pull() {
    let sim = sim().await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mystery"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "example.com/nope:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let w = wait_for("ErrImagePull/ImagePullBackOff", || async {
        let p = pods.get("mystery").await.ok()?;
        let w = p.status?.container_statuses?[0].state.clone()?.waiting?;
        matches!(
            w.reason.as_deref(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
        .then_some(w)
    })
    .await;
    assert!(w.message.unwrap().contains("example.com/nope:1"));
    assert_eq!(
        pods.get("mystery")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_postgres_sidecar_serves_the_main_container_then_stops() {
    // A private parent of the state dir must not keep the postgres user from its data dir.
    let sim = sim_with_state(true).await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sandbox"}, "stringData": {"password": "sandbox-pw"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let pw = json!({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "sandbox", "key": "password"}}});
    let j = job(
        "validate",
        json!({"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "sandbox", "image": "postgres:15", "restartPolicy": "Always",
                "env": [{"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sandbox", "key": "password"}}},
                        {"name": "POSTGRES_DB", "value": "shop"}],
                "ports": [{"name": "pg", "containerPort": 5432}],
                "startupProbe": {"tcpSocket": {"port": "pg"}, "periodSeconds": 1, "failureThreshold": 120}
            }],
            "containers": [{
                "name": "check", "image": "debian:bookworm",
                "command": ["sh", "-c",
                    "psql -h \"$POD_IP\" -U postgres -d shop -Atc 'select 40 + 2, inet_server_addr()'"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, pw]
            }]
        }}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let job = wait_job_condition(&jobs, "validate", "Complete").await;
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    let pod = job_pods(&pods, "validate").await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let st = pod.status.unwrap();
    let ip = st.pod_ip.clone().unwrap();
    let logs = pods
        .logs(
            &name,
            &LogParams {
                container: Some("check".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        logs.trim(),
        format!("42|{ip}"),
        "main container reached the sidecar on the pod IP"
    );
    // The sidecar was stopped after the main container and is reported terminated.
    let sidecar = &st.init_container_statuses.unwrap()[0];
    let term = sidecar
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .expect("sidecar terminated");
    assert!(
        term.finished_at.unwrap().0
            >= st.container_statuses.unwrap()[0]
                .state
                .clone()
                .unwrap()
                .terminated
                .unwrap()
                .finished_at
                .unwrap()
                .0
    );
    let sidecar_log = pods
        .logs(
            &name,
            &LogParams {
                container: Some("sandbox".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert!(
        sidecar_log.contains("database system is ready to accept connections"),
        "{sidecar_log}"
    );
    assert!(
        sidecar_log.contains("database system is shut down"),
        "stopped cleanly: {sidecar_log}"
    );
    assert!(
        !sidecar_log.contains("sandbox-pw"),
        "the password must not be logged"
    );
    // Nothing listens on the pod IP any more.
    assert!(
        tokio::net::TcpStream::connect((ip.as_str(), 5432))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_kills_running_containers() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &shell_job("forever", "echo pid=$$$$; exec sleep 300", json!({})),
    )
    .await
    .unwrap();
    let pid = wait_for("the pid", || async {
        let p = job_pods(&pods, "forever").await.into_iter().next()?;
        let log = pods
            .logs(p.metadata.name.as_deref()?, &LogParams::default())
            .await
            .ok()?;
        read_pid(&log, "pid=")
    })
    .await;
    assert!(process_alive(pid));
    drop(sim.server);
    wait_for("the container to die with the runner", || async {
        (!process_alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_mapped_into_args_env_and_sim_mount_vars() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"}, "stringData": {"password": "hunter2"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let script = r#"set -e
test "$(cat /etc/creds/pw)" = hunter2
test "$(stat -c %a /etc/creds/pw)" = 400
test "$SIM_MOUNT_ETC_CREDS" != ""
test -f "$SIM_MOUNT_ETC_CREDS/pw"
echo shared > /scratch/file
test "$(cat "$OUT_DIR/file")" = shared
test "$OUT_DIR" = "$SIM_MOUNT_SCRATCH"
case "$OUT_DIR" in "$SIM_POD_DIR"/*) ;; *) exit 9;; esac
echo ok > /dev/termination-log
echo mapped"#;
    let j = job(
        "mounts",
        json!({"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw", "mode": 0o400}]}},
                {"name": "scratch", "emptyDir": {}}
            ],
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", script],
                "env": [{"name": "OUT_DIR", "value": "/scratch"}],
                "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                                 {"name": "scratch", "mountPath": "/scratch"}]
            }]
        }}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let done = wait_for("the job to finish", || async {
        let j = jobs.get("mounts").await.ok()?;
        (job_condition(&j, "Complete").is_some() || job_condition(&j, "Failed").is_some())
            .then_some(j)
    })
    .await;
    let pod = job_pods(&pods, "mounts").await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert!(
        job_condition(&done, "Complete").is_some(),
        "job failed; logs: {logs}; status: {:?}",
        pod.status
    );
    assert_eq!(logs, "mapped\n");
    let term = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.message.as_deref(), Some("ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mariadb_sidecar_serves_the_main_container() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let j = job(
        "validate-mysql",
        json!({"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "sandbox", "image": "mariadb:10.11", "restartPolicy": "Always",
                "env": [{"name": "MARIADB_ROOT_PASSWORD", "value": "r'oo\\t"},
                        {"name": "MARIADB_DATABASE", "value": "shop"}],
                "startupProbe": {"tcpSocket": {"port": 3306}, "periodSeconds": 1, "failureThreshold": 120}
            }],
            "containers": [{
                "name": "check", "image": "debian:bookworm",
                "command": ["mariadb", "-h", "$(POD_IP)", "-u", "root", "-pr'oo\\t", "shop", "-N", "-e", "select 6 * 7"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
            }]
        }}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let done = wait_for("the job to finish", || async {
        let j = jobs.get("validate-mysql").await.ok()?;
        (job_condition(&j, "Complete").is_some() || job_condition(&j, "Failed").is_some())
            .then_some(j)
    })
    .await;
    let pod = job_pods(&pods, "validate-mysql").await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let logs = pods
        .logs(
            &name,
            &LogParams {
                container: Some("check".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert!(job_condition(&done, "Complete").is_some(), "logs: {logs}");
    assert_eq!(logs.trim(), "42");
    let sidecar = &pod.status.unwrap().init_container_statuses.unwrap()[0];
    assert!(
        sidecar.state.as_ref().unwrap().terminated.is_some(),
        "sidecar stopped after the main container"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_job_is_deleted_after_its_ttl_with_its_pods() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &shell_job("short-lived", "true", json!({"ttlSecondsAfterFinished": 1})),
    )
    .await
    .unwrap();
    wait_job_condition(&jobs, "short-lived", "Complete").await;
    wait_for("the job to be deleted", || async {
        jobs.get_opt("short-lived")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_for("its pods to be collected", || async {
        job_pods(&pods, "short-lived")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_the_container_in_the_same_pod() {
    let sim = sim().await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let j = job(
        "retry-in-place",
        json!({"backoffLimit": 3, "template": {"spec": {
            "restartPolicy": "OnFailure",
            "volumes": [{"name": "state", "emptyDir": {}}],
            "initContainers": [{"name": "prepare", "image": "busybox", "command": ["sh", "-c", "echo prepared > /state/ready"],
                                "volumeMounts": [{"name": "state", "mountPath": "/state"}]}],
            "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "test -f /state/ready || exit 5; if [ -f /state/tried ]; then echo second; else touch /state/tried; echo first; exit 1; fi"],
                "volumeMounts": [{"name": "state", "mountPath": "/state"}]
            }]
        }}}),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let job = wait_job_condition(&jobs, "retry-in-place", "Complete").await;
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    let list = job_pods(&pods, "retry-in-place").await;
    assert_eq!(list.len(), 1, "restarted in place, not a new pod");
    let st = list[0].status.clone().unwrap();
    let init = &st.init_container_statuses.unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );
    let main = &st.container_statuses.unwrap()[0];
    assert_eq!(main.restart_count, 1);
    assert_eq!(
        main.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    assert_eq!(
        main.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );
    let name = list[0].metadata.name.clone().unwrap();
    let logs = pods
        .logs(
            &name,
            &LogParams {
                container: Some("main".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(logs, "second\n", "the current run's log");
    let previous = std::fs::read_to_string(
        sim.server
            .state_dir()
            .join(format!("logs/default/{name}/main.previous.log")),
    )
    .unwrap();
    assert_eq!(previous, "first\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_init_container_fails_the_pod_without_running_main() {
    let sim = sim().await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bad-init"},
        "spec": {"restartPolicy": "Never",
                 "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 4"]}],
                 "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo should-not-run"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let st = wait_for("the pod to fail", || async {
        let st = pods.get("bad-init").await.ok()?.status?;
        (st.phase.as_deref() == Some("Failed")).then_some(st)
    })
    .await;
    let init = &st.init_container_statuses.unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        4
    );
    let main = &st.container_statuses.unwrap()[0];
    assert!(
        main.state.as_ref().unwrap().waiting.is_some(),
        "main never started: {main:?}"
    );
    let conds = st.conditions.unwrap();
    assert_eq!(
        conds
            .iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap()
            .status,
        "False"
    );
}
