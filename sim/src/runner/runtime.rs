//! Which container runtime the kubelet uses.

use std::fmt;
use std::str::FromStr;

/// The environment variable that selects the runtime (also read by the `kube-sim` CLI's
/// `--container-runtime`).
pub const RUNTIME_ENV: &str = "KUBE_SIM_CONTAINER_RUNTIME";

/// How pod containers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// Each container is a Docker container of the pod's image (host network). The default.
    #[default]
    Docker,
    /// Each container is a host process mapped through `sim/images.yaml` (development only).
    Process,
}

/// A runtime name that is neither `docker` nor `process`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown container runtime {0:?} (expected \"docker\" or \"process\")")]
pub struct UnknownRuntime(pub String);

impl Runtime {
    /// Both runtimes.
    pub const ALL: [Runtime; 2] = [Runtime::Docker, Runtime::Process];

    /// The name used on the command line and in [`RUNTIME_ENV`].
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Process => "process",
        }
    }

    /// [`RUNTIME_ENV`] if set (an unknown value is an error), else [`Runtime::Docker`].
    pub fn from_env() -> Result<Self, UnknownRuntime> {
        match std::env::var(RUNTIME_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Runtime::default()),
        }
    }
}

impl FromStr for Runtime {
    type Err = UnknownRuntime;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Runtime::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownRuntime(s.to_string()))
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
