//! Database engines: connection URIs, the dump and restore client processes, and consistent
//! per-table row counts.
//!
//! Secrets never reach argv: client tools get the password through `PGPASSWORD` / `MYSQL_PWD`
//! in their environment, and connection parameters are passed without it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use super::error::{AgentError, Result};

pub mod mysql;
pub mod pg_tools;
pub mod postgres;

/// 16 random bytes from the kernel, as 32 hex digits: role names, passwords and keys nobody
/// can guess.
pub fn random_hex() -> Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(AgentError::Io)?;
    Ok(hex::encode(bytes))
}

/// What `program --version` prints (trimmed), for the manifest's `dumpTool`.
pub fn tool_version(program: &std::path::Path) -> Result<String> {
    let name = program.display();
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| AgentError::Config(format!("cannot run {name} --version: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.is_empty() {
        return Err(AgentError::Config(format!(
            "{name} --version failed ({})",
            out.status
        )));
    }
    Ok(text)
}

/// A password, redacted in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A parsed database connection URI (`postgresql://user@host:port/db?sslmode=…`,
/// `mysql://user@host:port/db`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbUri {
    /// URI scheme.
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// User name.
    pub user: Option<String>,
    /// Password (from the URI, an env var or a file — never argv).
    pub password: Option<Secret>,
    /// Database name (may be empty).
    pub database: Option<String>,
    /// Query parameters (e.g. `sslmode`).
    pub params: Vec<(String, String)>,
}

impl DbUri {
    /// Parse a URI. The password, if any, is kept in [`Secret`].
    pub fn parse(text: &str) -> Result<Self> {
        let url = url::Url::parse(text)
            .map_err(|e| AgentError::Config(format!("invalid database URI: {e}")))?;
        let scheme = url.scheme().to_string();
        if !matches!(
            scheme.as_str(),
            "postgres" | "postgresql" | "mysql" | "mariadb"
        ) {
            return Err(AgentError::Config(format!(
                "unsupported database URI scheme {scheme:?} (postgresql://, mysql:// or mariadb://)"
            )));
        }
        let decode = |s: &str| -> String {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let host = url
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_default();
        if host.is_empty() {
            return Err(AgentError::Config("database URI has no host".into()));
        }
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(|p| Secret(decode(p)));
        let db = decode(url.path().trim_start_matches('/'));
        Ok(DbUri {
            scheme,
            host,
            port: url.port(),
            user,
            password,
            database: (!db.is_empty()).then_some(db),
            params: url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }

    /// The URI with the password removed (safe to log).
    pub fn redacted(&self) -> String {
        let mut s = format!("{}://", self.scheme);
        if let Some(u) = &self.user {
            s.push_str(u);
            if self.password.is_some() {
                s.push_str(":***");
            }
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push('/');
        s.push_str(self.database.as_deref().unwrap_or(""));
        s
    }

    /// This URI with another database.
    pub fn with_database(&self, db: &str) -> DbUri {
        DbUri {
            database: Some(db.to_string()),
            ..self.clone()
        }
    }
}

/// A running client tool whose stdout is the data stream.
pub struct ToolProcess {
    tool: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

/// Spawn `cmd` with stdin/stdout as given and stderr collected (and logged line by line).
pub fn spawn_tool(
    mut cmd: Command,
    tool: &str,
    stdin: Stdio,
    stdout: Stdio,
) -> Result<ToolProcess> {
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        AgentError::Config(format!(
            "cannot start {tool}: {e} (is it installed and on PATH?)"
        ))
    })?;
    let stderr = child.stderr.take().map(|err| {
        let tool = tool.to_string();
        std::thread::spawn(move || collect_stderr(&tool, err))
    });
    Ok(ToolProcess {
        tool: tool.to_string(),
        child,
        stderr,
    })
}

fn collect_stderr(tool: &str, err: impl Read) -> String {
    const KEEP: usize = 16 << 10;
    let mut tail = String::new();
    for line in BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        tracing::warn!(tool, line = %line, "tool stderr");
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > 2 * KEEP {
            let cut = tail.len() - KEEP;
            let cut = (cut..tail.len())
                .find(|i| tail.is_char_boundary(*i))
                .unwrap_or(cut);
            tail.drain(..cut);
        }
    }
    tail
}

impl ToolProcess {
    /// The child's stdout (the dump stream).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin (the restore stream).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Kill the tool (after a failure elsewhere in the pipeline) and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }

    /// Wait for the tool; fail on a non-zero exit or an error reported on stderr.
    /// `fail: fn(String) -> AgentError` picks the category (source for dumps, target for
    /// restores).
    pub fn finish(mut self, fail: fn(String) -> AgentError) -> Result<String> {
        let status = self
            .child
            .wait()
            .map_err(|e| fail(format!("cannot wait for {}: {e}", self.tool)))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        check_exit(&self.tool, status, &stderr).map_err(fail)?;
        Ok(stderr)
    }
}

/// Decide whether a tool run succeeded: exit status 0 and no error line on stderr.
pub fn check_exit(tool: &str, status: ExitStatus, stderr: &str) -> std::result::Result<(), String> {
    let error_line = stderr.lines().find(|l| is_error_line(l));
    if !status.success() {
        let detail = error_line
            .map(str::to_string)
            .unwrap_or_else(|| last_lines(stderr, 3));
        return Err(format!("{tool} failed ({status}): {}", detail.trim()));
    }
    if let Some(line) = error_line {
        return Err(format!(
            "{tool} exited 0 but reported an error: {}",
            line.trim()
        ));
    }
    Ok(())
}

fn is_error_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("error:")
        || l.starts_with("error ")
        || l.contains("fatal:")
        || l.contains(": error ")
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Quote a value for a libpq `key=value` connection string.
pub fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn parses_uri_and_redacts() {
        let u =
            DbUri::parse("postgresql://bob:s%40cret@127.0.0.1:5433/shop?sslmode=disable").unwrap();
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.password, Some(Secret("s@cret".into())));
        assert_eq!(u.port, Some(5433));
        assert_eq!(u.database.as_deref(), Some("shop"));
        assert_eq!(u.params, vec![("sslmode".into(), "disable".into())]);
        assert!(!u.redacted().contains("cret"));
        assert!(!format!("{u:?}").contains("cret"));
        assert!(DbUri::parse("http://x/y").is_err());
        assert!(DbUri::parse("mysql:///db").is_err());
    }

    #[test]
    fn exit_checks() {
        let ok = ExitStatus::from_raw(0);
        let bad = ExitStatus::from_raw(1 << 8);
        assert!(check_exit("pg_dump", ok, "").is_ok());
        assert!(check_exit("pg_dump", ok, "pg_dump: warning: something\n").is_ok());
        assert!(check_exit("pg_dump", bad, "").is_err());
        let e = check_exit("pg_dump", ok, "pg_dump: error: query failed\n").unwrap_err();
        assert!(e.contains("query failed"));
        assert!(
            check_exit(
                "mariadb-dump",
                ok,
                "mariadb-dump: Got error: 2013: Lost connection"
            )
            .is_err()
        );
    }

    #[test]
    fn conninfo_quoting() {
        assert_eq!(conninfo_quote("a'b\\c"), "'a\\'b\\\\c'");
    }
}
