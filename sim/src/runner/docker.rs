//! The Docker container runtime of the kubelet: what `docker create` is asked for (pure, see
//! [`create_args`], [`security_plan`], [`command_line`]) and the engine calls (the `docker`
//! CLI; no image is ever pulled).
//!
//! Secret values never appear on a command line: every variable (except ones named `DOCKER_*`,
//! which the CLI itself would read) is passed as `-e NAME` with its value in the environment of
//! the `docker create` process only.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::process::{Child, Command};

/// Label on every container and volume: the pod's UID.
pub const LABEL_POD_UID: &str = "io.kube-sim.pod-uid";
/// Label on every container and volume: the runner that made it (`<pid>-<start time>`).
pub const LABEL_RUNNER: &str = "io.kube-sim.runner";

/// Why the Docker runtime cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No `docker` program on `PATH`.
    #[error(
        "the Docker container runtime is selected but no `docker` CLI is on PATH; install Docker, or select the process runtime explicitly (--container-runtime process, KUBE_SIM_CONTAINER_RUNTIME=process)"
    )]
    NoCli,
    /// The engine does not answer.
    #[error(
        "the Docker container runtime is selected but the Docker Engine is not reachable ({0}); start it, or select the process runtime explicitly (--container-runtime process, KUBE_SIM_CONTAINER_RUNTIME=process)"
    )]
    Unreachable(String),
}

/// A mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host file or directory.
    Bind {
        /// Host path (absolute).
        source: PathBuf,
        /// Container path.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A named Docker volume (memory-backed emptyDir).
    Volume {
        /// Volume name.
        name: String,
        /// Container path.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
}

/// The security options of one container (pod and container `securityContext`, container wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityPlan {
    /// `--user` (`uid`, `uid:gid` or `<image user>:gid`).
    pub user: Option<String>,
    /// `--group-add` (fsGroup, supplementalGroups).
    pub group_add: Vec<i64>,
    /// `--read-only`.
    pub read_only_root: bool,
    /// `--privileged`.
    pub privileged: bool,
    /// `--security-opt no-new-privileges` (allowPrivilegeEscalation: false).
    pub no_new_privileges: bool,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--security-opt seccomp=unconfined` (seccompProfile Unconfined or unset, as the kubelet
    /// defaults); RuntimeDefault keeps the engine's default profile.
    pub seccomp_unconfined: bool,
}

/// Everything `docker create` is told about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerPlan {
    /// Container name (see [`container_name`]).
    pub name: String,
    /// Image reference as written in the pod.
    pub image: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Hostname (the pod name).
    pub hostname: String,
    /// `--entrypoint` (the container's `command[0]`).
    pub entrypoint: Option<String>,
    /// Arguments after the image (replace the image's CMD when non-empty or with an entrypoint).
    pub args: Vec<String>,
    /// The environment (name, value), in order.
    pub env: Vec<(String, String)>,
    /// `--workdir`.
    pub working_dir: Option<String>,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Security options.
    pub security: SecurityPlan,
    /// `--memory` and `--memory-swap`.
    pub memory_bytes: Option<u64>,
    /// `--cpus` (millicores).
    pub cpu_millis: Option<u64>,
}

/// `k8s_<container>_<pod>_<namespace>_<uid8>_<attempt>`, like the kubelet's dockershim names.
pub fn container_name(
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
    attempt: u32,
) -> String {
    let uid8: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "k8s_{}_{}_{}_{}_{attempt}",
        clean(container),
        clean(pod),
        clean(namespace),
        uid8
    )
}

/// Kubernetes `command`/`args` → docker `--entrypoint` and the arguments after the image:
/// `command` replaces the ENTRYPOINT (and drops the image's CMD), `args` replaces the CMD.
pub fn command_line(command: &[String], args: &[String]) -> (Option<String>, Vec<String>) {
    match command.split_first() {
        Some((first, rest)) => {
            let mut all = rest.to_vec();
            all.extend_from_slice(args);
            (Some(first.clone()), all)
        }
        None => (None, args.to_vec()),
    }
}

/// The kubelet's `format.Pod`: `name_namespace(uid)`.
fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// The security options of `container` in `pod`, given the image's `Config.User`. An error is
/// the kubelet's `CreateContainerConfigError` message (runAsNonRoot violations, unsupported
/// seccomp profiles).
pub fn security_plan(
    pod: &Pod,
    container: &Container,
    image_user: &str,
) -> Result<SecurityPlan, String> {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let csc = container.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    let non_root = csc.run_as_non_root.or(psc.run_as_non_root) == Some(true);
    if non_root {
        match run_as_user {
            Some(0) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy (pod: \"{}\", container: {})",
                    pod_label(pod),
                    container.name
                ));
            }
            Some(_) => {}
            None => {
                let user = image_user.split(':').next().unwrap_or("").trim();
                match user.parse::<i64>() {
                    Ok(0) => return Err(as_root(pod, container)),
                    Ok(_) => {}
                    Err(_) if user.is_empty() => return Err(as_root(pod, container)),
                    Err(_) => {
                        return Err(format!(
                            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{}\", container: {})",
                            pod_label(pod),
                            container.name
                        ));
                    }
                }
            }
        }
    }
    let user = match (run_as_user, run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => {
            let base = image_user.split(':').next().unwrap_or("").trim();
            Some(format!("{}:{g}", if base.is_empty() { "0" } else { base }))
        }
        (None, None) => None,
    };
    let mut group_add: Vec<i64> = psc.fs_group.into_iter().collect();
    for g in psc.supplemental_groups.iter().flatten() {
        if !group_add.contains(g) {
            group_add.push(*g);
        }
    }
    let seccomp = csc.seccomp_profile.or(psc.seccomp_profile).map(|p| p.type_);
    let seccomp_unconfined = match seccomp.as_deref() {
        Some("RuntimeDefault") => false,
        None | Some("Unconfined") => true,
        Some(other) => {
            return Err(format!(
                "seccomp profile type {other:?} is not supported by kube-sim (RuntimeDefault or Unconfined)"
            ));
        }
    };
    let caps = csc.capabilities.unwrap_or_default();
    Ok(SecurityPlan {
        user,
        group_add,
        read_only_root: csc.read_only_root_filesystem == Some(true),
        privileged: csc.privileged == Some(true),
        no_new_privileges: csc.allow_privilege_escalation == Some(false),
        cap_drop: caps.drop.unwrap_or_default(),
        cap_add: caps.add.unwrap_or_default(),
        seccomp_unconfined,
    })
}

fn as_root(pod: &Pod, container: &Container) -> String {
    format!(
        "container has runAsNonRoot and image will run as root (pod: \"{}\", container: {})",
        pod_label(pod),
        container.name
    )
}

/// Whether the docker CLI itself reads this variable (it then travels on the command line
/// instead of through the CLI's environment).
fn cli_reads(name: &str) -> bool {
    name.starts_with("DOCKER_")
}

/// The `docker create` arguments for `plan`, and the variables to put in the CLI's environment
/// (the values of the `-e NAME` arguments).
pub fn create_args(plan: &ContainerPlan) -> (Vec<String>, Vec<(String, String)>) {
    let mut a: Vec<String> = vec![
        "create".into(),
        "--pull".into(),
        "never".into(),
        "--name".into(),
        plan.name.clone(),
        "--network".into(),
        "host".into(),
        "--hostname".into(),
        plan.hostname.chars().take(63).collect(),
        "--log-driver".into(),
        "none".into(),
    ];
    for (k, v) in &plan.labels {
        a.push("--label".into());
        a.push(format!("{k}={v}"));
    }
    let mut cli_env = Vec::new();
    for (k, v) in &plan.env {
        a.push("--env".into());
        if cli_reads(k) {
            a.push(format!("{k}={v}"));
        } else {
            a.push(k.clone());
            cli_env.retain(|(n, _): &(String, String)| n != k);
            cli_env.push((k.clone(), v.clone()));
        }
    }
    if let Some(wd) = &plan.working_dir {
        a.push("--workdir".into());
        a.push(wd.clone());
    }
    for m in &plan.mounts {
        a.push("--mount".into());
        a.push(match m {
            MountSpec::Bind {
                source,
                target,
                read_only,
            } => format!(
                "type=bind,source={},target={target}{}",
                source.display(),
                if *read_only { ",readonly" } else { "" }
            ),
            MountSpec::Volume {
                name,
                target,
                read_only,
            } => format!(
                "type=volume,source={name},target={target}{}",
                if *read_only { ",readonly" } else { "" }
            ),
        });
    }
    let s = &plan.security;
    if let Some(u) = &s.user {
        a.push("--user".into());
        a.push(u.clone());
    }
    for g in &s.group_add {
        a.push("--group-add".into());
        a.push(g.to_string());
    }
    if s.read_only_root {
        a.push("--read-only".into());
    }
    if s.privileged {
        a.push("--privileged".into());
    }
    if s.no_new_privileges {
        a.push("--security-opt".into());
        a.push("no-new-privileges".into());
    }
    if s.seccomp_unconfined {
        a.push("--security-opt".into());
        a.push("seccomp=unconfined".into());
    }
    for c in &s.cap_drop {
        a.push("--cap-drop".into());
        a.push(c.clone());
    }
    for c in &s.cap_add {
        a.push("--cap-add".into());
        a.push(c.clone());
    }
    if let Some(m) = plan.memory_bytes {
        a.push("--memory".into());
        a.push(m.to_string());
        a.push("--memory-swap".into());
        a.push(m.to_string());
    }
    if let Some(c) = plan.cpu_millis {
        a.push("--cpus".into());
        a.push(format!("{}.{:03}", c / 1000, c % 1000));
    }
    if let Some(ep) = &plan.entrypoint {
        a.push("--entrypoint".into());
        a.push(ep.clone());
    }
    a.push("--".into());
    a.push(plan.image.clone());
    a.extend(plan.args.iter().cloned());
    (a, cli_env)
}

/// What the image says about itself (`docker image inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Config.User` (may be empty).
    pub user: String,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code (128+signal when killed).
    pub exit_code: i32,
    /// The signal, when the runtime knows it.
    pub signal: Option<i32>,
    /// Killed by the kernel's OOM killer (cgroup memory limit).
    pub oom_killed: bool,
    /// The container never started: the engine's error.
    pub start_error: Option<String>,
}

/// This runner's identity for [`LABEL_RUNNER`]: its pid and start time (so a reused pid is not
/// taken for a live runner).
fn runner_id(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime) counted after the parenthesised command name.
    let after = stat.rsplit_once(')')?.1;
    let start = after.split_whitespace().nth(19)?;
    Some(format!("{pid}-{start}"))
}

fn runner_alive(id: &str) -> bool {
    let Some((pid, _)) = id.split_once('-') else {
        return false;
    };
    pid.parse::<u32>()
        .ok()
        .and_then(runner_id)
        .is_some_and(|now| now == id)
}

fn find_docker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

/// The Docker Engine, reached through its CLI.
#[derive(Debug)]
pub struct Engine {
    bin: PathBuf,
    cli_env: Vec<(String, String)>,
    runner: String,
}

impl Engine {
    /// Finds the CLI and checks that the engine answers (fails loudly otherwise).
    pub async fn connect() -> Result<Self, EngineError> {
        let bin = find_docker().ok_or(EngineError::NoCli)?;
        let cli_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| cli_reads(k) || k == "HOME" || k == "PATH")
            .collect();
        let engine = Engine {
            bin,
            cli_env,
            runner: runner_id(std::process::id()).unwrap_or_else(|| std::process::id().to_string()),
        };
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            engine
                .cmd()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output(),
        )
        .await
        .map_err(|_| EngineError::Unreachable("`docker version` timed out".into()))?
        .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        if !out.status.success() {
            return Err(EngineError::Unreachable(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(engine)
    }

    /// The label value of this runner.
    pub fn runner_label(&self) -> &str {
        &self.runner
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .envs(self.cli_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.bin);
        c.env_clear()
            .envs(self.cli_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .cmd()
            .args(args)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Removes containers and volumes left by runners that are gone (a crashed runner).
    pub async fn remove_stale(&self) {
        let fmt = format!("{{{{.Names}}}}\t{{{{.Label \"{LABEL_RUNNER}\"}}}}");
        let filter = format!("label={LABEL_RUNNER}");
        if let Ok(out) = self
            .run(&["ps", "-a", "--filter", &filter, "--format", &fmt])
            .await
        {
            let stale: Vec<String> = out
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .filter(|(_, r)| !runner_alive(r))
                .map(|(n, _)| n.to_string())
                .collect();
            self.remove_containers(&stale).await;
        }
        if let Ok(out) = self
            .run(&["volume", "ls", "--filter", &filter, "--format", &fmt])
            .await
        {
            let stale: Vec<String> = out
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .filter(|(_, r)| !runner_alive(r))
                .map(|(n, _)| n.to_string())
                .collect();
            self.remove_volumes(&stale).await;
        }
    }

    /// The image's config, or `None` when the image is not present locally.
    pub async fn image_config(&self, image: &str) -> Result<Option<ImageConfig>, String> {
        let out = self
            .cmd()
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .Config.User}}",
                "--",
                image,
            ])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such image") || err.contains("no such image") {
                return Ok(None);
            }
            return Err(err.trim().to_string());
        }
        let user: String = serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_default();
        Ok(Some(ImageConfig { user }))
    }

    /// `docker create` (removing a leftover container of the same name first).
    pub async fn create(&self, plan: &ContainerPlan) -> Result<(), String> {
        let _ = self.run(&["rm", "-f", &plan.name]).await;
        let (args, env) = create_args(plan);
        let out = self
            .cmd()
            .args(&args)
            .envs(env)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Starts a created container attached: its stdout and stderr append to `log`.
    pub fn start_attached(
        self: &Arc<Self>,
        name: &str,
        log: &Path,
    ) -> std::io::Result<DockerContainer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = self
            .cmd()
            .args(["start", "--attach", name])
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        Ok(DockerContainer {
            engine: self.clone(),
            name: name.to_string(),
            child,
            done: None,
        })
    }

    /// How an exited container ended.
    pub async fn exit_info(&self, name: &str) -> Result<ExitInfo, String> {
        let out = self
            .run(&[
                "inspect",
                "--type",
                "container",
                "--format",
                "{{json .State}}",
                name,
            ])
            .await?;
        let state: serde_json::Value =
            serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
        let code = state["ExitCode"].as_i64().unwrap_or(255) as i32;
        let error = state["Error"].as_str().unwrap_or("").to_string();
        let never_started = state["StartedAt"]
            .as_str()
            .is_none_or(|s| s.starts_with("0001-"));
        Ok(ExitInfo {
            exit_code: code,
            signal: None,
            oom_killed: state["OOMKilled"].as_bool().unwrap_or(false),
            start_error: (never_started && !error.is_empty()).then_some(error),
        })
    }

    /// `docker exec` (exec probes); true when the command exits 0 within `timeout`.
    pub async fn exec(&self, name: &str, command: &[String], timeout: Duration) -> bool {
        let mut c = self.cmd();
        c.arg("exec")
            .arg(name)
            .args(command)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        matches!(
            tokio::time::timeout(timeout, c.status()).await,
            Ok(Ok(s)) if s.success()
        )
    }

    /// Removes containers (running or not).
    pub async fn remove_containers(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let mut c = self.cmd();
        c.args(["rm", "-f", "-v"])
            .args(names)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status().await;
    }

    /// Removes volumes.
    pub async fn remove_volumes(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let mut c = self.cmd();
        c.args(["volume", "rm", "-f"])
            .args(names)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status().await;
    }

    /// Removes containers, then volumes, waiting for the CLI (for `Drop`).
    pub fn remove_blocking(&self, containers: &[String], volumes: &[String]) {
        if !containers.is_empty() {
            let _ = self
                .std_cmd()
                .args(["rm", "-f", "-v"])
                .args(containers)
                .status();
        }
        if !volumes.is_empty() {
            let _ = self
                .std_cmd()
                .args(["volume", "rm", "-f"])
                .args(volumes)
                .status();
        }
    }
}

/// A started container (its attached `docker start`).
#[derive(Debug)]
pub struct DockerContainer {
    engine: Arc<Engine>,
    name: String,
    child: Child,
    done: Option<ExitInfo>,
}

impl DockerContainer {
    /// Waits for the container to exit.
    pub async fn wait(&mut self) -> ExitInfo {
        if let Some(d) = &self.done {
            return d.clone();
        }
        let cli = self.child.wait().await;
        // The attached CLI can end before the engine recorded the exit: ask until it did.
        let mut info = None;
        for _ in 0..50 {
            match self.engine.exit_info(&self.name).await {
                Ok(i) => {
                    info = Some(i);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let info = info.unwrap_or_else(|| ExitInfo {
            exit_code: cli.ok().and_then(|s| s.code()).unwrap_or(255),
            signal: None,
            oom_killed: false,
            start_error: None,
        });
        self.done = Some(info.clone());
        info
    }

    /// `docker stop -t <grace>`: the image's stop signal, SIGKILL after the grace period.
    pub async fn stop(&mut self, grace: Duration) -> ExitInfo {
        if self.done.is_none() {
            let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
            let t = secs.to_string();
            let _ = self.engine.run(&["stop", "-t", &t, &self.name]).await;
        }
        self.wait().await
    }
}
