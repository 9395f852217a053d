//! The project's container images on the local Docker Engine, for tests that run Job pods as
//! containers (the e2e suite) or look into the images.
//!
//! [`ensure`] runs `scripts/build-images.sh --profile debug --binary <the tested binary>` once
//! per test process, holding a lock file so that parallel test processes do not build at the
//! same time. The script makes the base image with debootstrap when it is missing, rebuilds the
//! agent and operator images from the binary under test (Docker's layer cache keeps the package
//! layers) and builds the test sandbox images (`postgres:15`, `mariadb:10.11`) only when they
//! are missing.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The agent image's repository (its tag is the crate version).
pub const AGENT_REPOSITORY: &str = "ghcr.io/dataguardian/dataguardian";
/// The operator image's repository.
pub const OPERATOR_REPOSITORY: &str = "ghcr.io/dataguardian/dataguardian-operator";

/// The images that were built: references usable with `docker run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// `ghcr.io/dataguardian/dataguardian:<version>`.
    pub agent: String,
    /// `ghcr.io/dataguardian/dataguardian-operator:<version>`.
    pub operator: String,
}

static BUILT: OnceLock<Result<Images, String>> = OnceLock::new();

/// Build (or refresh) the images from `binary`, once per process; `workspace` is the
/// repository root, `version` the crate version (the tag). Panics with the script's output when
/// the build fails: tests that need images cannot run without them.
pub fn ensure(workspace: &Path, binary: &Path, version: &str) -> Images {
    BUILT
        .get_or_init(|| build(workspace, binary, version))
        .clone()
        .unwrap_or_else(|e| panic!("building the project's images failed:\n{e}"))
}

fn build(workspace: &Path, binary: &Path, version: &str) -> Result<Images, String> {
    let lock_path = std::env::temp_dir().join("dataguardian-images.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; released when `lock` is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let out = Command::new(workspace.join("scripts/build-images.sh"))
        .args(["--profile", "debug", "--binary"])
        .arg(binary)
        .current_dir(workspace)
        .output()
        .map_err(|e| format!("cannot run scripts/build-images.sh: {e}"))?;
    drop(lock);
    if !out.status.success() {
        return Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Images {
        agent: format!("{AGENT_REPOSITORY}:{version}"),
        operator: format!("{OPERATOR_REPOSITORY}:{version}"),
    })
}
