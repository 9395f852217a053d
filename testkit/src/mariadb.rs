//! A throwaway MariaDB server.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::net::{LOCALHOST, free_port_on, host_port, parse_loopback};
use crate::postgres::quote_ident;
use crate::process::{OsUser, ServiceProcess, TempDir, find_binary, random_password, run_tool};

const SERVER_HINT: &str = "apt-get install mariadb-server";
const CLIENT_HINT: &str = "apt-get install mariadb-client";
/// The account the kit creates: all privileges, from any host, over TCP.
const USER: &str = "testkit";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 3;

/// Configures a [`MariaDb`] before starting it.
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    listen: String,
    port: Option<u16>,
    options: Vec<String>,
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        MariaDbBuilder {
            listen: LOCALHOST.to_string(),
            port: None,
            options: Vec::new(),
        }
    }
}

impl MariaDbBuilder {
    /// Listens on this loopback IP (default `127.0.0.1`).
    pub fn listen(mut self, ip: &str) -> Self {
        self.listen = ip.to_owned();
        self
    }

    /// Uses this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Passes an extra server option, e.g. `--max-allowed-packet=64M`.
    pub fn option(mut self, option: &str) -> Self {
        self.options.push(option.to_owned());
        self
    }

    /// Creates a data dir with `mariadb-install-db` and starts `mariadbd`.
    pub fn start(self) -> Result<MariaDb> {
        let ip = parse_loopback(&self.listen)?;
        let install_db = find_binary("mariadb-install-db", SERVER_HINT)?;
        let server = find_server_binary()?;
        let client = find_binary("mariadb", CLIENT_HINT)?;
        let os_user = OsUser::for_service(
            "mysql",
            "mariadbd should not run as root and needs the `mysql` OS user: apt-get install mariadb-server",
        )?;
        let dir = TempDir::new("mariadb")?;
        dir.chown(os_user)?;
        std::fs::create_dir(dir.path().join("tmp"))
            .map_err(|e| Error::io("creating the MariaDB tmpdir", e))?;
        crate::process::chown(&dir.path().join("tmp"), os_user)?;

        let mut install = Command::new(&install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args([
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            // Parallel bootstraps must not share /tmp for their temporary tables.
            .env("TMPDIR", dir.path().join("tmp"))
            .current_dir(dir.path());
        if os_user.uid == 0 {
            install.arg("--user=root");
        }
        os_user.apply(&mut install);
        run_tool(install, "mariadb-install-db", None)?;

        let password = random_password(24);
        let port = match self.port {
            Some(port) => port,
            None => free_port_on(ip)?,
        };
        let mut db = MariaDb {
            process: None,
            ip,
            port,
            password,
            server,
            client,
            options: self.options.clone(),
            os_user,
            dir,
        };
        db.write_files()?;
        let mut attempt = 1;
        loop {
            match db.spawn_and_wait() {
                Ok(()) => return Ok(db),
                Err(err) => {
                    db.kill();
                    let port_taken = matches!(&err, Error::Startup { log, .. }
                        if log.contains("Address already in use") || log.contains("Do you already have another"));
                    if !port_taken || self.port.is_some() || attempt == PORT_ATTEMPTS {
                        return Err(err);
                    }
                    attempt += 1;
                    db.port = free_port_on(ip)?;
                    db.write_files()?;
                }
            }
        }
    }
}

fn find_server_binary() -> Result<PathBuf> {
    find_binary("mariadbd", SERVER_HINT).or_else(|err| {
        // Debian keeps mariadbd in /usr/sbin, which is not always on PATH.
        let sbin = Path::new("/usr/sbin/mariadbd");
        if sbin.exists() {
            Ok(sbin.to_path_buf())
        } else {
            Err(err)
        }
    })
}

/// A running MariaDB server in a temp dir; stopped and removed on drop.
///
/// The kit's account `testkit` has a random password and all privileges (with grant
/// option) from any host over TCP.
#[derive(Debug)]
pub struct MariaDb {
    process: Option<ServiceProcess>,
    ip: IpAddr,
    port: u16,
    password: String,
    server: PathBuf,
    client: PathBuf,
    options: Vec<String>,
    os_user: OsUser,
    dir: TempDir,
}

impl MariaDb {
    /// Starts a server on `127.0.0.1` and a free port.
    pub fn start() -> Result<MariaDb> {
        MariaDb::builder().start()
    }

    /// A builder for a server on another loopback IP, port or with extra options.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::default()
    }

    /// Writes the init file (creates the account) and the client option file.
    fn write_files(&self) -> Result<()> {
        let pw = &self.password;
        let init = format!(
            "CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{pw}';\n\
             CREATE USER IF NOT EXISTS '{USER}'@'localhost' IDENTIFIED BY '{pw}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%' WITH GRANT OPTION;\n\
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost' WITH GRANT OPTION;\n\
             FLUSH PRIVILEGES;\n"
        );
        self.dir
            .write_private("init.sql", init.as_bytes(), self.os_user)?;
        let client = format!(
            "[client]\nuser={USER}\npassword={pw}\nhost={}\nport={}\nprotocol=TCP\n",
            self.ip, self.port
        );
        // Read by client tools running as the test process's user.
        self.dir
            .write_private("client.cnf", client.as_bytes(), OsUser::current())?;
        Ok(())
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let dir = self.dir.path();
        let log = dir.join("mariadbd.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(&self.server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--init-file={}", dir.join("init.sql").display()))
            .arg(format!("--bind-address={}", self.ip))
            .arg(format!("--port={}", self.port))
            .args([
                "--skip-name-resolve",
                "--skip-log-bin",
                "--performance-schema=OFF",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                // Written to the OS at every commit (survives a killed server), synced once a second.
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
                "--sync-binlog=0",
                "--max-connections=50",
                "--character-set-server=utf8mb4",
            ])
            .args(&self.options)
            .current_dir(dir);
        if self.os_user.uid == 0 {
            cmd.arg("--user=root");
        }
        self.os_user.apply(&mut cmd);
        let process = ServiceProcess::spawn("mariadbd", cmd, &log, libc::SIGTERM)?;
        self.process = Some(process);
        let start = Instant::now();
        loop {
            if let Some(process) = self.process.as_mut() {
                process.ensure_running("mariadbd exited during startup")?;
            }
            if self.sql("", "SELECT 1").is_ok() {
                // The init file holds the password; the server has read it.
                let _ = std::fs::remove_file(dir.join("init.sql"));
                return Ok(());
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                let process = self.process.as_ref().expect("spawned above");
                return Err(process.startup_error(format!(
                    "not accepting connections after {STARTUP_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
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

    /// The account name, `testkit`.
    pub fn user(&self) -> &str {
        USER
    }

    /// The account's random password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `mysql://testkit:<password>@<ip>:<port>/<db>`.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "mysql://{USER}:{}@{}/{db}",
            self.password,
            host_port(self.ip, self.port)
        )
    }

    /// The temp dir (data dir, socket, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// An option file (`[client]` user, password, host, port, TCP) for client tools:
    /// pass it as the first argument `--defaults-file=<path>` so the password stays
    /// out of argv.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.cnf")
    }

    /// A command for a client tool (`mariadb`, `mariadb-dump`, ...) that already has
    /// `--defaults-file` pointing at [`MariaDb::client_config`].
    pub fn client_command(&self, tool: &str) -> Command {
        let program = if tool == "mariadb" {
            self.client.clone()
        } else {
            PathBuf::from(tool)
        };
        let mut cmd = Command::new(program);
        cmd.arg(format!(
            "--defaults-file={}",
            self.client_config().display()
        ));
        cmd
    }

    /// The server log.
    pub fn log(&self) -> String {
        crate::process::log_tail(&self.dir.path().join("mariadbd.log"), 200)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServiceProcess::pid)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.exit_status().is_none())
    }

    /// Runs SQL with the `mariadb` client over TCP (batch mode: tab-separated rows,
    /// no column names, stops at the first error) and returns the output without the
    /// final newline. `db` may be empty for no default database.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.client_command("mariadb");
        cmd.args(["--batch", "--skip-column-names", "--connect-timeout=10"]);
        if !db.is_empty() {
            cmd.arg(format!("--database={db}"));
        }
        let out = run_tool(cmd, "mariadb", Some(sql.as_bytes()))?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_owned())
    }

    /// Creates a database (name: letters, digits, `_` and `-`).
    pub fn create_database(&self, name: &str) -> Result<()> {
        let quoted = quote_ident(name)?.replace('"', "`");
        self.sql("", &format!("CREATE DATABASE {quoted}"))
            .map(|_| ())
    }

    /// Stops the server cleanly (SIGTERM). The data dir stays until drop.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.stop(Duration::from_secs(20));
        }
    }

    /// Starts the server again on the same port and data dir, after [`MariaDb::stop`] or
    /// [`MariaDb::kill`]. A running server is stopped first.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.write_files()?;
        self.spawn_and_wait()
    }

    /// Kills the server with SIGKILL, as if the machine died.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // The data dir is thrown away, so there is nothing to shut down cleanly for.
        self.kill();
    }
}
