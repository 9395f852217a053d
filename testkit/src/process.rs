//! Child processes, the OS users they run as, and temp dirs that clean up after themselves.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// Finds `name` on `PATH`, or fails with "`name` not found: `hint`".
pub fn find_binary(name: &str, hint: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| Error::MissingBinary {
            binary: name.to_owned(),
            hint: hint.to_owned(),
        })
}

/// Checks that `dir/name` is an executable file, or fails with an install hint.
pub fn require_binary_in(dir: &Path, name: &str, hint: &str) -> Result<PathBuf> {
    let candidate = dir.join(name);
    if is_executable(&candidate) {
        Ok(candidate)
    } else {
        Err(Error::MissingBinary {
            binary: format!("{name} (looked in {})", dir.display()),
            hint: hint.to_owned(),
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An OS account a server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl OsUser {
    /// Looks up a user by name in the password database.
    pub fn lookup(name: &str) -> Option<OsUser> {
        let cname = CString::new(name).ok()?;
        // SAFETY: getpwnam returns a pointer into static storage or null; we copy the
        // two integers out immediately and never keep the pointer.
        unsafe {
            let entry = libc::getpwnam(cname.as_ptr());
            if entry.is_null() {
                None
            } else {
                Some(OsUser {
                    uid: (*entry).pw_uid,
                    gid: (*entry).pw_gid,
                })
            }
        }
    }

    /// The user this test process runs as.
    pub fn current() -> OsUser {
        // SAFETY: geteuid/getegid cannot fail.
        unsafe {
            OsUser {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        }
    }

    /// Which user a server that refuses root should run as.
    ///
    /// As root this is `name` (e.g. `postgres`), which must exist; as any other
    /// user it is the current user, because only root can switch users.
    pub fn for_service(name: &str, hint: &str) -> Result<OsUser> {
        let current = OsUser::current();
        if current.uid != 0 {
            return Ok(current);
        }
        OsUser::lookup(name).ok_or_else(|| Error::MissingBinary {
            binary: format!("OS user {name:?}"),
            hint: hint.to_owned(),
        })
    }

    /// Makes `cmd` run as this user (a no-op when it is the current user).
    pub fn apply(&self, cmd: &mut Command) {
        if *self != OsUser::current() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }
}

/// A temporary directory that is removed, with everything in it, when dropped.
#[derive(Debug)]
pub struct TempDir {
    inner: tempfile::TempDir,
}

impl TempDir {
    /// Creates `<temp>/testkit-<prefix>-XXXXXX` with mode 0700: servers keep Unix sockets
    /// with local trust authentication in it, so nobody else may even look inside.
    ///
    /// `<temp>` is the system temp dir (`TMPDIR`) when every directory above it can be
    /// entered by other users — a server running as `postgres` or `mysql` must reach the
    /// dir after it is chowned — and `/tmp` otherwise.
    pub fn new(prefix: &str) -> Result<TempDir> {
        use std::os::unix::fs::PermissionsExt;
        let inner = tempfile::Builder::new()
            .prefix(&format!("testkit-{prefix}-"))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base_dir())
            .context(|| format!("creating a temp dir for {prefix}"))?;
        Ok(TempDir { inner })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// Gives the directory to `user`, so a server running as that user can write in it.
    pub fn chown(&self, user: OsUser) -> Result<()> {
        chown(self.path(), user)
    }

    /// Writes a file readable only by its owner (mode 0600), owned by `user`.
    pub fn write_private(&self, name: &str, contents: &[u8], user: OsUser) -> Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .context(|| format!("creating {}", path.display()))?;
        file.write_all(contents)
            .context(|| format!("writing {}", path.display()))?;
        chown(&path, user)?;
        Ok(path)
    }
}

/// The directory temp dirs are created in (see [`TempDir::new`]).
fn base_dir() -> PathBuf {
    let temp = std::env::temp_dir();
    if traversable_by_others(&temp) {
        temp
    } else {
        PathBuf::from("/tmp")
    }
}

/// Whether every directory from `/` down to `dir` has the "others may enter" bit.
fn traversable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|d| {
        d.metadata()
            .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    })
}

/// Changes the owner of `path` to `user` (a no-op when it already is the current user).
pub fn chown(path: &Path, user: OsUser) -> Result<()> {
    if user == OsUser::current() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .context(|| format!("chown {} to uid {}", path.display(), user.uid))
}

/// Returns the last `lines` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs a client tool to completion, feeding `stdin`, and returns its stdout.
///
/// Fails with [`Error::CommandFailed`] (carrying stderr) on a non-zero exit.
pub fn run_tool(mut cmd: Command, tool: &str, stdin: Option<&[u8]>) -> Result<String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context(|| format!("starting {tool}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let input = input.to_vec();
        // Write from a thread so a tool that fills its stdout pipe first cannot deadlock us.
        let writer = std::thread::spawn(move || pipe.write_all(&input));
        let output = child
            .wait_with_output()
            .context(|| format!("waiting for {tool}"))?;
        // A tool that exits early closes the pipe; its exit status tells the real story.
        let _ = writer.join();
        finish(tool, output)
    } else {
        let output = child
            .wait_with_output()
            .context(|| format!("waiting for {tool}"))?;
        finish(tool, output)
    }
}

fn finish(tool: &str, output: std::process::Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::CommandFailed {
            tool: tool.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// A long-running server process in its own process group.
///
/// Dropping it sends the graceful-stop signal, waits briefly, then kills the
/// whole process group, so no server outlives its test, also when the test panics.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    log: PathBuf,
    stop_signal: i32,
    exited: Option<ExitStatus>,
}

impl ServiceProcess {
    /// Spawns `cmd` in a new process group with stdout and stderr appended to `log`.
    ///
    /// `stop_signal` is what [`ServiceProcess::stop`] sends first (e.g. `SIGINT`
    /// for PostgreSQL's fast shutdown).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, stop_signal: i32) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("opening {}", log.display()))?;
        let err = out
            .try_clone()
            .context(|| format!("opening {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().context(|| format!("starting {name}"))?;
        Ok(ServiceProcess {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
            stop_signal,
            exited: None,
        })
    }

    /// The process id (also the process-group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file the process writes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Returns the exit status if the process has exited.
    ///
    /// The leader is not reaped here (`waitid` with `WNOWAIT`): as a zombie it keeps its
    /// pid — our process-group id — reserved, so a later `killpg` can never hit an
    /// unrelated group that reused the number. Only [`ServiceProcess::kill`] reaps.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        use std::os::unix::process::ExitStatusExt;
        // SAFETY: siginfo_t is plain old data; waitid writes it and we read it only when
        // the call succeeded and reported our child.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let rc = libc::waitid(
                libc::P_PID,
                self.child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            if rc != 0 || info.si_pid() == 0 {
                return None;
            }
            let status = info.si_status();
            let raw = match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => status | 0x80,
                _ => status,
            };
            Some(ExitStatus::from_raw(raw))
        }
    }

    /// Fails with the log tail if the process has already exited.
    pub fn ensure_running(&mut self, reason: &str) -> Result<()> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(self.startup_error(format!("{reason}: exited with {status}"))),
        }
    }

    /// Builds a startup error that carries the tail of the process log.
    pub fn startup_error(&self, reason: String) -> Error {
        Error::Startup {
            service: self.name.clone(),
            reason,
            log: log_tail(&self.log, 30),
        }
    }

    /// Sends `signal` to the whole process group (until the leader has been reaped).
    pub fn signal_group(&mut self, signal: i32) {
        if self.exited.is_some() {
            return;
        }
        // SAFETY: killpg has no memory-safety preconditions; the group id is our unreaped
        // child's pid, which the kernel cannot hand out again until we reap it.
        unsafe {
            libc::killpg(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Stops gracefully: sends the stop signal to the leader (which shuts down its own
    /// helpers), waits up to `timeout`, then kills whatever is left of the group.
    pub fn stop(&mut self, timeout: Duration) {
        if self.exit_status().is_none() {
            // SAFETY: as in signal_group; the leader is not reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, self.stop_signal);
            }
            let start = Instant::now();
            while self.exit_status().is_none() && start.elapsed() < timeout {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }

    /// Kills the whole process group with SIGKILL and reaps the leader.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            // Signal the group, not just the leader: helpers it started (PostgreSQL
            // backends, a shell's children) go too.
            self.signal_group(libc::SIGKILL);
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Returns true if a process with this pid exists (and is not a zombie we could see).
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Returns true if any process is still in process group `pgid`.
pub fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::killpg(pgid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Waits until process group `pgid` is empty; returns false on timeout.
pub fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while group_alive(pgid) {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Random password material: `len` characters from `[A-Za-z0-9]`, from the OS RNG.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the OS random number generator is available");
        for &b in &buf {
            // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_passwords_differ_and_are_alphanumeric() {
        let a = random_password(24);
        let b = random_password(24);
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn missing_binary_error_names_the_package() {
        let err = find_binary("definitely-not-installed-xyz", "apt-get install xyz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "definitely-not-installed-xyz not found: apt-get install xyz"
        );
    }

    #[test]
    fn temp_dirs_live_where_other_users_can_reach_them() {
        assert!(traversable_by_others(Path::new("/tmp")));
        let private = TempDir::new("unit").unwrap();
        assert!(!traversable_by_others(private.path()), "0700 is private");
        assert!(traversable_by_others(&base_dir()));
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::new("unit").unwrap();
        let path = dir.path().to_path_buf();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = path.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "temp dirs are private");
        }
        dir.write_private("f", b"x", OsUser::current()).unwrap();
        assert!(path.join("f").exists());
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn service_process_group_is_killed_on_drop() {
        let dir = TempDir::new("unit").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & sleep 60"]);
        let proc = ServiceProcess::spawn("sh", cmd, &dir.path().join("log"), libc::SIGTERM)
            .expect("spawn sh");
        let pid = proc.pid();
        assert!(pid_alive(pid));
        drop(proc);
        assert!(!pid_alive(pid));
        // The background sleep was in the same group and is gone too.
        assert!(
            wait_group_gone(pid, Duration::from_secs(2)),
            "group {pid} still has processes"
        );
    }
}
