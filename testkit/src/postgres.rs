//! A throwaway PostgreSQL 15 server.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net::{LOCALHOST, free_port_on, host_port, parse_loopback};
use crate::process::{
    OsUser, ServiceProcess, TempDir, random_password, require_binary_in, run_tool,
};

/// Where Debian installs PostgreSQL 15; override with `TESTKIT_PG_BIN`.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const INSTALL_HINT: &str = "apt-get install postgresql-15 (or set TESTKIT_PG_BIN)";
const SUPERUSER: &str = "postgres";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const PORT_ATTEMPTS: usize = 3;

/// Settings that make a test server start fast and stay small. Durability is off:
/// the data dir is thrown away anyway. Commits still reach the OS before they return
/// (`synchronous_commit` stays on), so a killed server keeps them.
const FAST_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "16MB"),
    ("max_connections", "40"),
    ("max_wal_size", "256MB"),
    ("checkpoint_timeout", "30min"),
    ("logging_collector", "off"),
    ("log_min_messages", "warning"),
    ("password_encryption", "scram-sha-256"),
];

/// Configures a [`Postgres`] before starting it.
#[derive(Debug, Clone)]
pub struct PostgresBuilder {
    listen: String,
    port: Option<u16>,
    bin_dir: PathBuf,
    settings: Vec<(String, String)>,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        PostgresBuilder {
            listen: LOCALHOST.to_string(),
            port: None,
            bin_dir: std::env::var_os("TESTKIT_PG_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR)),
            settings: Vec::new(),
        }
    }
}

impl PostgresBuilder {
    /// Listens on this loopback IP (default `127.0.0.1`), e.g. a simulated pod IP `127.0.3.7`.
    pub fn listen(mut self, ip: &str) -> Self {
        self.listen = ip.to_owned();
        self
    }

    /// Uses this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Uses PostgreSQL binaries from this directory.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }

    /// Adds a `postgresql.conf` setting (overrides the kit's fast defaults).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs `initdb` in a fresh temp dir and starts the server.
    pub fn start(self) -> Result<Postgres> {
        let ip = parse_loopback(&self.listen)?;
        for tool in ["initdb", "postgres", "psql"] {
            require_binary_in(&self.bin_dir, tool, INSTALL_HINT)?;
        }
        let os_user = OsUser::for_service(
            "postgres",
            "PostgreSQL refuses to run as root and needs the `postgres` OS user: apt-get install postgresql-15",
        )?;
        let dir = TempDir::new("postgres")?;
        dir.chown(os_user)?;
        let password = random_password(24);
        self.initdb(&dir, os_user, &password)?;
        self.configure(&dir, ip)?;

        let port = match self.port {
            Some(port) => port,
            None => free_port_on(ip)?,
        };
        let mut server = Postgres {
            process: None,
            ip,
            port,
            password,
            bin_dir: self.bin_dir.clone(),
            os_user,
            dir,
        };
        let mut attempt = 1;
        loop {
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(err) => {
                    server.kill();
                    let port_taken = matches!(&err, Error::Startup { log, .. } if log.contains("Address already in use"));
                    if !port_taken || self.port.is_some() || attempt == PORT_ATTEMPTS {
                        return Err(err);
                    }
                    attempt += 1;
                    server.port = free_port_on(ip)?;
                }
            }
        }
    }

    fn initdb(&self, dir: &TempDir, os_user: OsUser, password: &str) -> Result<()> {
        let pwfile = dir.write_private("initdb.pw", password.as_bytes(), os_user)?;
        let mut cmd = Command::new(self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args([
                "--no-sync",
                "--no-instructions",
                "--locale=C",
                "--encoding=UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .env("LC_ALL", "C")
            .current_dir(dir.path());
        os_user.apply(&mut cmd);
        let result = run_tool(cmd, "initdb", None);
        let _ = std::fs::remove_file(&pwfile);
        result.map(|_| ())
    }

    fn configure(&self, dir: &TempDir, ip: IpAddr) -> Result<()> {
        use std::fmt::Write as _;
        let data = dir.path().join("data");
        // Password (SCRAM) authentication on every loopback address; the Unix socket lives in
        // the private temp dir, so trusting it only admits the test process itself.
        let hba = "local all all trust\n\
                   host all all 127.0.0.0/8 scram-sha-256\n\
                   host all all ::1/128 scram-sha-256\n";
        let mut conf = String::from("\n# testkit\n");
        let _ = writeln!(conf, "listen_addresses = '{ip}'");
        let _ = writeln!(conf, "unix_socket_directories = '{}'", dir.path().display());
        for (name, value) in FAST_SETTINGS
            .iter()
            .map(|(n, v)| (*n, *v))
            .chain(self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            let _ = writeln!(conf, "{name} = '{}'", value.replace('\'', "''"));
        }
        let write = |name: &str, text: &str, append: bool| -> Result<()> {
            use std::io::Write;
            let path = data.join(name);
            let mut file = std::fs::OpenOptions::new()
                .append(append)
                .write(true)
                .truncate(!append)
                .open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            file.write_all(text.as_bytes())
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))
        };
        write("pg_hba.conf", hba, false)?;
        write("postgresql.conf", &conf, true)
    }
}

/// A running PostgreSQL server in a temp dir; stopped and removed on drop.
///
/// The superuser is `postgres` with a random password; TCP connections use SCRAM
/// password authentication.
#[derive(Debug)]
pub struct Postgres {
    process: Option<ServiceProcess>,
    ip: IpAddr,
    port: u16,
    password: String,
    bin_dir: PathBuf,
    os_user: OsUser,
    dir: TempDir,
}

impl Postgres {
    /// Starts a server on `127.0.0.1` and a free port.
    pub fn start() -> Result<Postgres> {
        Postgres::builder().start()
    }

    /// A builder for a server on another loopback IP, port or with extra settings.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .env("LC_ALL", "C")
            .current_dir(self.dir.path());
        self.os_user.apply(&mut cmd);
        let log = self.dir.path().join("postgres.log");
        // A fresh log per attempt, so a retry is judged by its own messages.
        let _ = std::fs::remove_file(&log);
        let process = ServiceProcess::spawn("postgres", cmd, &log, libc::SIGINT)?;
        let pidfile = self.data_dir().join("postmaster.pid");
        let process = self.process.insert(process);
        let pid = process.pid();
        let start = Instant::now();
        loop {
            process.ensure_running("postgres exited during startup")?;
            // Our own postmaster reports "ready" in its pid file (line 1 pid, line 8
            // status) once it accepts connections; a different server that grabbed the
            // port in the meantime cannot fake that.
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                let lines: Vec<&str> = text.lines().collect();
                if lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
                    && lines.get(7).map(|l| l.trim()) == Some("ready")
                {
                    return Ok(());
                }
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(process.startup_error(format!(
                    "not accepting connections after {STARTUP_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The IP the server listens on.
    pub fn host(&self) -> String {
        self.ip.to_string()
    }

    /// The IP the server listens on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The superuser name, `postgres`.
    pub fn user(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's random password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://postgres:<password>@<ip>:<port>/<db>`.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}/{db}",
            SUPERUSER,
            self.password,
            host_port(self.ip, self.port)
        )
    }

    /// The directory holding `initdb`, `pg_dump`, `psql`, ...
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temp dir (data dir, socket, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log.
    pub fn log(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("postgres.log"), 200)
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServiceProcess::pid)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.exit_status().is_none())
    }

    /// Runs SQL with `psql` as the superuser over TCP and returns tuples-only,
    /// unaligned output (`psql -tA`: one row per line, columns separated by `|`),
    /// without the final newline. Any SQL error fails the call (`ON_ERROR_STOP`).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.client_command("psql");
        cmd.args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-f",
            "-",
        ]);
        let out = run_tool(cmd, "psql", Some(sql.as_bytes()))?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_owned())
    }

    /// A command for a client tool from [`Postgres::bin_dir`] with host, port, user and
    /// password (through `PGPASSWORD`, never argv) already set.
    pub fn client_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.env("PGHOST", self.ip.to_string())
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGSERVICE")
            .env_remove("PGDATABASE");
        cmd
    }

    /// Creates a database (name: letters, digits, `_` and `-`).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)?),
        )
        .map(|_| ())
    }

    /// Stops the server cleanly (fast shutdown). The data dir stays until drop.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.stop(Duration::from_secs(10));
        }
        self.remove_leftover_shared_memory();
    }

    /// Starts the server again on the same port and data dir, after [`Postgres::stop`] or
    /// [`Postgres::kill`] (after a kill PostgreSQL runs crash recovery first). A running
    /// server is stopped first.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Kills the server and every backend with SIGKILL, as if the machine died —
    /// for tests of a database vanishing mid-dump.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
        self.remove_leftover_shared_memory();
    }

    /// After an unclean exit PostgreSQL leaves its small System V segment behind;
    /// remove it so thousands of test runs cannot exhaust the kernel's limit.
    fn remove_leftover_shared_memory(&self) {
        let pidfile = self.data_dir().join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&pidfile) else {
            return;
        };
        // Line 7 is "<shmem key> <shmem id>".
        if let Some(id) = text
            .lines()
            .nth(6)
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|id| id.parse::<libc::c_int>().ok())
        {
            // SAFETY: IPC_RMID with a null buffer only marks the segment for removal.
            unsafe {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // `dir` is removed when the fields drop, after the server is gone.
    }
}

/// Quotes a database name for SQL after checking it is a plain identifier.
pub(crate) fn quote_ident(name: &str) -> Result<String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::InvalidArgument(format!(
            "database name {name:?} must be 1-63 letters, digits, '_' or '-'"
        )));
    }
    Ok(format!("\"{name}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert_eq!(quote_ident("shop_copy").unwrap(), "\"shop_copy\"");
        assert!(quote_ident("x\"; DROP").is_err());
        assert!(quote_ident("").is_err());
    }

    #[test]
    fn non_loopback_listen_is_refused() {
        let err = Postgres::builder()
            .listen("192.168.1.10")
            .start()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}
