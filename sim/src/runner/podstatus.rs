//! The kubelet's view of one pod, and its rendering as `PodStatus` (pure).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// State of one container.
#[derive(Debug, Clone, PartialEq)]
pub enum CState {
    /// Not running yet (or backing off).
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `CreateContainerConfigError`, `ErrImagePull`...
        reason: String,
        /// Human-readable detail.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// Start time.
        started_at: Timestamp,
    },
    /// Exited.
    Terminated {
        /// Exit code (128+signal when killed by a signal).
        exit_code: i32,
        /// Signal that ended it, if any.
        signal: Option<i32>,
        /// `Completed`, `Error`, `StartError`...
        reason: String,
        /// Termination message.
        message: Option<String>,
        /// Start time.
        started_at: Option<Timestamp>,
        /// Exit time.
        finished_at: Timestamp,
    },
}

impl CState {
    /// Waiting with a reason.
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        CState::Waiting {
            reason: reason.into(),
            message,
        }
    }

    /// Whether the container has exited.
    pub fn is_terminated(&self) -> bool {
        matches!(self, CState::Terminated { .. })
    }

    /// Whether the container exited with code 0.
    pub fn succeeded(&self) -> bool {
        matches!(self, CState::Terminated { exit_code: 0, .. })
    }

    fn to_api(&self) -> ContainerState {
        match self {
            CState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            CState::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..ContainerState::default()
            },
            CState::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: started_at.map(Time),
                    finished_at: Some(Time(*finished_at)),
                    container_id: None,
                }),
                ..ContainerState::default()
            },
        }
    }
}

/// Reason for a terminated container: `Completed` for exit code 0, else `Error`.
pub fn exit_reason(exit_code: i32) -> &'static str {
    if exit_code == 0 { "Completed" } else { "Error" }
}

/// The kubelet's record of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    /// Container name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// Current state.
    pub state: CState,
    /// The previous run's final state.
    pub last_state: Option<CState>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Whether startup finished (startupProbe passed, or no probe).
    pub started: bool,
    /// Whether the container counts as ready.
    pub ready: bool,
    /// Whether this is a native sidecar (init container with `restartPolicy: Always`).
    pub sidecar: bool,
}

impl ContainerRecord {
    /// A container that has not started yet.
    pub fn new(name: &str, image: &str, waiting_reason: &str, sidecar: bool) -> Self {
        ContainerRecord {
            name: name.into(),
            image: image.into(),
            state: CState::waiting(waiting_reason, None),
            last_state: None,
            restart_count: 0,
            started: false,
            ready: false,
            sidecar,
        }
    }

    /// Renders the API `ContainerStatus`.
    pub fn to_status(&self, pod_uid: &str) -> ContainerStatus {
        let running = matches!(self.state, CState::Running { .. });
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("sim://{}", self.image),
            container_id: (!matches!(self.state, CState::Waiting { .. }))
                .then(|| format!("sim://{pod_uid}/{}/{}", self.name, self.restart_count)),
            ready: running && self.ready,
            restart_count: self.restart_count,
            started: Some(running && self.started),
            state: Some(self.state.to_api()),
            last_state: Some(
                self.last_state
                    .as_ref()
                    .map(CState::to_api)
                    .unwrap_or_default(),
            ),
            ..ContainerStatus::default()
        }
    }
}

/// The kubelet's record of one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    /// Pod UID.
    pub uid: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: String,
    /// Pod-level reason (e.g. `DeadlineExceeded`).
    pub reason: Option<String>,
    /// Pod-level message.
    pub message: Option<String>,
    /// Pod IP.
    pub pod_ip: Option<String>,
    /// Host IP.
    pub host_ip: String,
    /// When the kubelet accepted the pod.
    pub start_time: Timestamp,
    /// Init containers (regular and sidecars) in spec order.
    pub init: Vec<ContainerRecord>,
    /// Main containers in spec order.
    pub main: Vec<ContainerRecord>,
    /// Conditions, maintained by [`PodRecord::refresh_conditions`].
    pub conditions: Vec<PodCondition>,
}

impl PodRecord {
    /// Whether every regular init container completed and every sidecar started.
    pub fn initialized(&self) -> bool {
        self.init.iter().all(|c| {
            if c.sidecar {
                c.started || c.state.is_terminated()
            } else {
                c.state.succeeded()
            }
        })
    }

    /// Whether all main containers (and running sidecars) are ready.
    pub fn containers_ready(&self) -> bool {
        let running = |c: &ContainerRecord| matches!(c.state, CState::Running { .. }) && c.ready;
        !self.main.is_empty()
            && self.main.iter().all(running)
            && self.init.iter().filter(|c| c.sidecar).all(running)
    }

    /// Recomputes conditions (keeping `lastTransitionTime` when a status did not change).
    pub fn refresh_conditions(&mut self, now: Timestamp) {
        let terminal = matches!(self.phase.as_str(), "Succeeded" | "Failed");
        let completed = if terminal { Some("PodCompleted") } else { None };
        let sandbox = self.pod_ip.is_some();
        let initialized = self.initialized();
        let ready = !terminal && self.containers_ready();
        let not_ready_reason = completed.or(Some("ContainersNotReady"));
        let wanted: [(&str, bool, Option<&str>); 5] = [
            ("PodReadyToStartContainers", sandbox && !terminal, None),
            ("PodScheduled", true, None),
            (
                "Initialized",
                initialized,
                (!initialized).then_some("ContainersNotInitialized"),
            ),
            (
                "ContainersReady",
                ready,
                (!ready).then_some(not_ready_reason).flatten(),
            ),
            (
                "Ready",
                ready,
                (!ready).then_some(not_ready_reason).flatten(),
            ),
        ];
        for (type_, status, reason) in wanted {
            let status = if status { "True" } else { "False" };
            match self.conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    if c.status != status {
                        c.last_transition_time = Some(Time(now));
                    }
                    c.status = status.into();
                    c.reason = reason.map(Into::into);
                }
                None => self.conditions.push(PodCondition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: reason.map(Into::into),
                    last_transition_time: Some(Time(now)),
                    ..PodCondition::default()
                }),
            }
        }
    }

    /// Renders the API `PodStatus`.
    pub fn to_status(&self) -> PodStatus {
        PodStatus {
            phase: Some(self.phase.clone()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self
                .pod_ip
                .as_ref()
                .map(|ip| vec![PodIP { ip: ip.clone() }]),
            start_time: Some(Time(self.start_time)),
            conditions: Some(self.conditions.clone()),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(|c| c.to_status(&self.uid)).collect()),
            container_statuses: Some(self.main.iter().map(|c| c.to_status(&self.uid)).collect()),
            qos_class: Some("BestEffort".into()),
            ..PodStatus::default()
        }
    }
}

/// The pod phase once every main container has exited under `restartPolicy: Never`:
/// `Succeeded` when all exited 0, else `Failed`.
pub fn final_phase(main: &[ContainerRecord]) -> &'static str {
    if main.iter().all(|c| c.state.succeeded()) {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// A JSON merge patch that sets `status` to exactly `status` (absent optional fields are nulled).
pub fn pod_status_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = value.as_object_mut() {
        for key in [
            "reason",
            "message",
            "podIP",
            "podIPs",
            "initContainerStatuses",
        ] {
            obj.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

/// Termination message as the kubelet reads it: at most 4096 bytes of the file; with
/// `FallbackToLogsOnError` and an empty file and a failed container, the log tail (last 80 lines,
/// at most 2048 bytes).
pub fn termination_message(
    file_contents: &[u8],
    policy: Option<&str>,
    exit_code: i32,
    log: &[u8],
) -> Option<String> {
    let file = &file_contents[..file_contents.len().min(4096)];
    if !file.is_empty() {
        return Some(String::from_utf8_lossy(file).into_owned());
    }
    if policy == Some("FallbackToLogsOnError") && exit_code != 0 && !log.is_empty() {
        return Some(log_tail(log, 80, 2048));
    }
    None
}

/// The last `lines` lines of `log`, then at most the last `max_bytes` bytes of those.
pub fn log_tail(log: &[u8], lines: usize, max_bytes: usize) -> String {
    let trimmed = log.strip_suffix(b"\n").unwrap_or(log);
    let mut start = 0;
    let mut seen = 0;
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                start = i + 1;
                break;
            }
        }
    }
    let tail = &log[start..];
    let tail = &tail[tail.len().saturating_sub(max_bytes)..];
    String::from_utf8_lossy(tail).into_owned()
}
