//! Runs the installed kubectl as a user does: a kubeconfig, arguments and optional stdin.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What one kubectl invocation printed and how it ended.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs `kubectl ARGS` with `KUBECONFIG=kubeconfig`, feeding `stdin` if any. Panics only when
/// kubectl cannot be started at all.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> KubectlOutput {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(input) = stdin {
        // kubectl may exit before reading it all (a bad flag): its output says why.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes());
    }
    let out = child.wait_with_output().expect("kubectl output");
    KubectlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
