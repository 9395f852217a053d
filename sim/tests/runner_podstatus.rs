//! Pod status as the kubelet reports it (pure rendering), termination messages, and container
//! processes (process groups, stop signal then SIGKILL, nothing survives a drop).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube_sim::runner::podstatus::{
    CState, ContainerRecord, PodRecord, exit_reason, final_phase, log_tail, pod_status_patch,
    termination_message,
};
use kube_sim::runner::process::{ContainerProcess, ProcessSpec, exit_code};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn record() -> PodRecord {
    PodRecord {
        uid: "uid".into(),
        phase: "Pending".into(),
        reason: None,
        message: None,
        pod_ip: Some("127.7.0.1".into()),
        host_ip: "127.0.0.1".into(),
        start_time: t(0),
        init: vec![
            ContainerRecord::new("setup", "busybox", "PodInitializing", false),
            ContainerRecord::new("db", "postgres:15", "PodInitializing", true),
        ],
        main: vec![ContainerRecord::new(
            "main",
            "busybox",
            "PodInitializing",
            false,
        )],
        conditions: Vec::new(),
    }
}

fn terminated(code: i32, at: i64) -> CState {
    CState::Terminated {
        exit_code: code,
        signal: None,
        reason: exit_reason(code).into(),
        message: None,
        started_at: Some(t(at - 1)),
        finished_at: t(at),
    }
}

fn cond(r: &PodRecord, ty: &str) -> (String, Option<String>) {
    let c = r.conditions.iter().find(|c| c.type_ == ty).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[test]
fn lifecycle_conditions() {
    let mut r = record();
    r.refresh_conditions(t(0));
    assert_eq!(cond(&r, "PodScheduled").0, "True");
    assert_eq!(cond(&r, "PodReadyToStartContainers").0, "True");
    assert_eq!(
        cond(&r, "Initialized"),
        ("False".into(), Some("ContainersNotInitialized".into()))
    );
    assert_eq!(
        cond(&r, "Ready"),
        ("False".into(), Some("ContainersNotReady".into()))
    );

    // Init done, sidecar started, main running: ready.
    r.init[0].state = terminated(0, 1);
    r.init[1].state = CState::Running { started_at: t(1) };
    r.init[1].started = true;
    r.init[1].ready = true;
    r.main[0].state = CState::Running { started_at: t(2) };
    r.main[0].started = true;
    r.main[0].ready = true;
    r.phase = "Running".into();
    r.refresh_conditions(t(2));
    assert!(r.initialized());
    assert_eq!(cond(&r, "Initialized").0, "True");
    assert_eq!(cond(&r, "ContainersReady").0, "True");
    assert_eq!(cond(&r, "Ready").0, "True");
    let ready_since = r
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .last_transition_time
        .clone();
    r.refresh_conditions(t(3));
    assert_eq!(
        r.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .last_transition_time,
        ready_since,
        "unchanged conditions keep their transition time"
    );

    // Main done, sidecar stopped: Succeeded, not ready (PodCompleted).
    r.main[0].state = terminated(0, 4);
    r.init[1].state = terminated(0, 5);
    r.phase = final_phase(&r.main).into();
    r.refresh_conditions(t(5));
    assert_eq!(r.phase, "Succeeded");
    assert_eq!(
        cond(&r, "Ready"),
        ("False".into(), Some("PodCompleted".into()))
    );
    assert_eq!(cond(&r, "PodReadyToStartContainers").0, "False");

    let status = r.to_status();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.7.0.1"));
    assert_eq!(status.host_ips.as_ref().unwrap()[0].ip, "127.0.0.1");
    let init = status.init_container_statuses.unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(
        init[1]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    let main = &status.container_statuses.unwrap()[0];
    assert!(!main.ready);
    assert_eq!(main.restart_count, 0);
    assert!(
        main.container_id
            .as_deref()
            .unwrap()
            .starts_with("sim://uid/main")
    );
}

#[test]
fn waiting_and_failed_states_render() {
    let mut r = record();
    r.main[0].state = CState::waiting(
        "CreateContainerConfigError",
        Some("secret \"db\" not found".into()),
    );
    let s = r.to_status();
    let w = s.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
    assert_eq!(w.message.as_deref(), Some("secret \"db\" not found"));
    assert_eq!(
        final_phase(&[ContainerRecord {
            state: terminated(2, 1),
            ..record().main[0].clone()
        }]),
        "Failed"
    );
    assert_eq!(exit_reason(0), "Completed");
    assert_eq!(exit_reason(137), "Error");
    // The status patch nulls fields that are not set, so stale values disappear.
    let patch = pod_status_patch(&r.to_status());
    assert!(patch["status"]["reason"].is_null());
    assert!(patch["status"].as_object().unwrap().contains_key("message"));
}

#[test]
fn termination_message_rules() {
    assert_eq!(
        termination_message(b"done", None, 0, b"log"),
        Some("done".into())
    );
    let big = vec![b'x'; 10_000];
    assert_eq!(termination_message(&big, None, 1, b"").unwrap().len(), 4096);
    assert_eq!(termination_message(b"", None, 1, b"log line\n"), None);
    assert_eq!(
        termination_message(b"", Some("FallbackToLogsOnError"), 0, b"log\n"),
        None,
        "only on error"
    );
    assert_eq!(
        termination_message(b"", Some("FallbackToLogsOnError"), 1, b"a\nb\n"),
        Some("a\nb\n".into())
    );
    assert_eq!(
        termination_message(b"file wins", Some("FallbackToLogsOnError"), 1, b"log"),
        Some("file wins".into())
    );
    let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let tail = log_tail(many.as_bytes(), 80, 2048);
    assert!(
        tail.starts_with("line 20\n") && tail.ends_with("line 99\n"),
        "{tail}"
    );
    let long = "y".repeat(5000);
    assert_eq!(log_tail(long.as_bytes(), 80, 2048).len(), 2048);
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Waits (up to 5 s, signal delivery is asynchronous) until none of `pids` runs.
async fn gone(pids: &[i32]) {
    for _ in 0..100 {
        if pids.iter().all(|p| !alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("processes survived: {pids:?}");
}

fn spec(dir: &std::path::Path, script: &str) -> ProcessSpec {
    ProcessSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            ("PATH".into(), std::env::var("PATH").unwrap()),
            ("ONLY".into(), "this".into()),
        ],
        cwd: dir.to_path_buf(),
        log_path: dir.join("c.log"),
        mounts: Default::default(),
    }
}

async fn wait_for_pids(log: &std::path::Path, n: usize) -> Vec<i32> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let pids: Vec<i32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("pid=")?.parse().ok())
            .collect();
        if pids.len() >= n {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "pids never logged: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test]
async fn process_exit_code_env_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ContainerProcess::spawn(
        &spec(dir.path(), "echo out; echo err >&2; env | sort; exit 7"),
        libc::SIGTERM,
    )
    .unwrap();
    let (code, signal) = exit_code(p.wait().await.unwrap());
    assert_eq!((code, signal), (7, None));
    let log = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
    assert!(log.starts_with("out\nerr\n"), "{log}");
    assert!(log.contains("ONLY=this"));
    assert!(
        !log.contains("HOME="),
        "the host environment is not inherited: {log}"
    );
}

#[tokio::test]
async fn stop_signals_the_group_then_kills_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    // Ignores SIGTERM, with a background child: both must die, by SIGKILL after the grace.
    let script = "trap '' TERM; sleep 300 & echo pid=$!; echo pid=$$; while :; do sleep 0.1; done";
    let mut p = ContainerProcess::spawn(&spec(dir.path(), script), libc::SIGTERM).unwrap();
    let pids = wait_for_pids(&dir.path().join("c.log"), 2).await;
    let started = std::time::Instant::now();
    let (code, signal) = exit_code(p.stop(Duration::from_millis(500)).await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!((code, signal), (137, Some(libc::SIGKILL)));
    gone(&pids).await;
    // A cooperative process stops with its stop signal well before the grace ends.
    let mut p = ContainerProcess::spawn(&spec(dir.path(), "exec sleep 300"), libc::SIGINT).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let (code, signal) = exit_code(p.stop(Duration::from_secs(30)).await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((code, signal), (128 + libc::SIGINT, Some(libc::SIGINT)));
}

#[tokio::test]
async fn dropping_a_process_kills_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let p = ContainerProcess::spawn(
        &spec(dir.path(), "sleep 300 & echo pid=$!; echo pid=$$; wait"),
        libc::SIGTERM,
    )
    .unwrap();
    let pids = wait_for_pids(&dir.path().join("c.log"), 2).await;
    assert!(pids.iter().all(|p| alive(*p)));
    drop(p);
    gone(&pids).await;
}

#[tokio::test]
async fn leftover_children_die_with_the_main_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ContainerProcess::spawn(
        &spec(dir.path(), "sleep 300 & echo pid=$!; exit 0"),
        libc::SIGTERM,
    )
    .unwrap();
    assert_eq!(exit_code(p.wait().await.unwrap()).0, 0);
    let pids = wait_for_pids(&dir.path().join("c.log"), 1).await;
    gone(&pids).await;
}
