//! Container processes: each runs in its own process group, so that stopping a container stops
//! everything it started, as when a container's PID namespace goes away.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Host argv.
    pub argv: Vec<String>,
    /// The complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// stdout and stderr both append here.
    pub log_path: PathBuf,
    /// The container's path mapping (to show host paths back as container paths).
    pub mounts: super::mounts::MountMap,
}

/// A started container process (group leader). Dropping it kills the whole group.
#[derive(Debug)]
pub struct ContainerProcess {
    child: Child,
    pgid: i32,
    stop_signal: i32,
    reaped: Option<ExitStatus>,
}

/// Exit code as a container runtime reports it: the code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (255, None),
    }
}

fn send(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group we created; no memory
        // is shared with the callee.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

impl ContainerProcess {
    /// Starts the process in a new process group with exactly `spec.env`.
    pub fn spawn(spec: &ProcessSpec, stop_signal: i32) -> std::io::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)?;
        let (program, args) = spec
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl, signal and sigprocmask are async-signal-safe. PR_SET_PDEATHSIG asks
        // the kernel to SIGKILL the child if the spawning thread dies, so no process outlives a
        // crashed runner. A container starts with default signal dispositions and an empty
        // signal mask whatever the runtime inherited (a shell that started us in the background
        // ignores SIGINT/SIGQUIT, and ignored signals survive exec): reset them like a container
        // runtime does, so stop signals behave as in a pod.
        unsafe {
            cmd.pre_exec(|| {
                for sig in [
                    libc::SIGINT,
                    libc::SIGQUIT,
                    libc::SIGTERM,
                    libc::SIGHUP,
                    libc::SIGPIPE,
                    libc::SIGUSR1,
                    libc::SIGUSR2,
                ] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(ContainerProcess {
            child,
            pgid,
            stop_signal,
            reaped: None,
        })
    }

    /// The process id (= process group id).
    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the main process to exit, then kills whatever else is left in its group.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        let status = self.child.wait().await?;
        send(self.pgid, libc::SIGKILL);
        self.reaped = Some(status);
        Ok(status)
    }

    /// Stops the container: its stop signal to the group, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        send(self.pgid, self.stop_signal);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                send(self.pgid, libc::SIGKILL);
                self.reaped = Some(status);
                Ok(status)
            }
            Err(_) => {
                send(self.pgid, libc::SIGKILL);
                self.wait().await
            }
        }
    }
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        // Once reaped, the group was already killed in `wait`, and the id may be reused.
        if self.reaped.is_none() {
            send(self.pgid, libc::SIGKILL);
        }
    }
}
