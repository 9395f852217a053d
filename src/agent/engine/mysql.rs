//! MySQL / MariaDB: `mariadb-dump` (or `mysqldump`) with `--single-transaction --routines
//! --triggers --events`, restored with the `mariadb` (or `mysql`) client, which stops at the
//! first error (batch mode without `--force`).
//!
//! Consistency of row counts: they are **counted from the dump stream itself**. The dump runs in
//! one `START TRANSACTION WITH CONSISTENT SNAPSHOT` (that is what `--single-transaction` does),
//! and [`RowCounter`] parses the SQL as it flows through the pipeline, counting the row tuples of
//! every `INSERT INTO` per table (tables with no rows are registered from their
//! `CREATE TABLE`). The counts are therefore exactly the rows that the artifact restores — no
//! second query, no separate snapshot, no lock on the server.

use std::process::{Command, Stdio};

use super::{DbUri, ToolProcess, spawn_tool};
use crate::agent::error::{AgentError, Result};
use crate::agent::manifest::TableCount;

fn find_tool(candidates: &[&'static str]) -> &'static str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for c in candidates {
        if std::env::split_paths(&path).any(|d| d.join(c).is_file()) {
            return c;
        }
    }
    candidates[0]
}

/// The dump tool on PATH (`mariadb-dump`, else `mysqldump`).
pub fn dump_tool() -> &'static str {
    find_tool(&["mariadb-dump", "mysqldump"])
}

/// The SQL client on PATH (`mariadb`, else `mysql`).
pub fn client_tool() -> &'static str {
    find_tool(&["mariadb", "mysql"])
}

fn command(tool: &str, uri: &DbUri) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env_remove("MYSQL_PWD");
    if let Some(p) = &uri.password {
        cmd.env("MYSQL_PWD", &p.0);
    }
    // Never read ~/.my.cnf: the URI is the whole configuration.
    cmd.arg("--no-defaults");
    cmd.arg(format!("--host={}", uri.host))
        .arg("--protocol=TCP");
    if let Some(p) = uri.port {
        cmd.arg(format!("--port={p}"));
    }
    if let Some(u) = &uri.user {
        cmd.arg(format!("--user={u}"));
    }
    if tool == client_tool() {
        cmd.arg("--connect-timeout=15");
    }
    for (k, v) in &uri.params {
        match (k.as_str(), v.as_str()) {
            ("ssl" | "tls", "true" | "1" | "required") => {
                cmd.arg("--ssl");
            }
            ("ssl" | "tls", "false" | "0" | "disabled") => {
                cmd.arg("--skip-ssl");
            }
            ("ssl-ca" | "sslrootcert", path) => {
                cmd.arg(format!("--ssl-ca={path}"));
            }
            // The policy's sslMode, passed through unchanged: a verify mode must verify the
            // server's certificate (MariaDB's client has one switch for chain and host name,
            // the stricter reading of VERIFY_CA); an unknown mode verifies too.
            ("ssl-mode" | "sslmode", mode) => {
                let mode = mode.to_ascii_uppercase();
                match (mode.as_str(), tool.starts_with("mariadb")) {
                    ("DISABLED", _) => cmd.arg("--skip-ssl"),
                    ("PREFERRED", _) => &mut cmd,
                    ("REQUIRED", true) => cmd.arg("--ssl"),
                    ("VERIFY_CA" | "VERIFY_IDENTITY" | "REQUIRED", false) => {
                        cmd.arg(format!("--ssl-mode={mode}"))
                    }
                    (_, true) => cmd.args(["--ssl", "--ssl-verify-server-cert"]),
                    (_, false) => cmd.arg("--ssl-mode=VERIFY_IDENTITY"),
                };
            }
            _ => {}
        }
    }
    cmd
}

/// Run SQL with the client in batch mode and return the output rows (tab-separated). The SQL
/// goes on stdin (never argv, where a password in it would show), and `--binary-mode` turns
/// off the client's own commands (`system`, `\!`, `source`, `tee`, …).
pub fn query(
    uri: &DbUri,
    db: Option<&str>,
    sql: &str,
    fail: fn(String) -> AgentError,
) -> Result<Vec<String>> {
    let mut cmd = command(client_tool(), uri);
    cmd.args(["--batch", "--binary-mode", "--skip-column-names", "--raw"]);
    if let Some(db) = db {
        cmd.arg(format!("--database={db}"));
    }
    let mut proc = spawn_tool(cmd, client_tool(), Stdio::piped(), Stdio::piped())?;
    let mut stdin = proc.take_stdin().expect("stdin is piped");
    let writer = {
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, sql.as_bytes());
        })
    };
    let mut out = String::new();
    let read =
        std::io::Read::read_to_string(&mut proc.take_stdout().expect("stdout is piped"), &mut out);
    let _ = writer.join();
    proc.finish(fail)?;
    read.map_err(|e| fail(format!("cannot read client output: {e}")))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Quote a string literal for MySQL.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quote an identifier for MySQL.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `SELECT VERSION()`.
pub fn server_version(uri: &DbUri) -> Result<String> {
    let rows = query(uri, None, "SELECT VERSION()", AgentError::Source)?;
    rows.first()
        .cloned()
        .ok_or_else(|| AgentError::Source("server returned no version".into()))
}

/// What the dump tool prints for `--version` (`mariadb-dump from 10.11.19-MariaDB, client
/// 10.11.19 for debian-linux-gnu (x86_64)`, `mysqldump  Ver 8.0.36 for Linux on x86_64`).
pub fn dump_tool_version() -> Result<String> {
    super::tool_version(std::path::Path::new(dump_tool()))
}

/// A MySQL-family product and its `major.minor`, from what servers (`SELECT VERSION()`) and
/// tools (`--version`) print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavour {
    /// MariaDB (else Oracle MySQL).
    pub mariadb: bool,
    /// `(major, minor)`.
    pub version: (u32, u32),
}

/// Parse a server's `VERSION()` or a tool's `--version` (pure).
pub fn flavour(text: &str) -> Option<Flavour> {
    let mariadb = text.to_ascii_lowercase().contains("mariadb");
    // Tools print "Ver 8.0.36" or "from 10.11.19-MariaDB"; servers "8.0.36" / "10.11.19-MariaDB".
    let start = text
        .find("from ")
        .map(|i| i + 5)
        .or_else(|| text.find("Ver ").map(|i| i + 4))
        .unwrap_or(0);
    let rest = &text[start..];
    let at = rest.find(|c: char| c.is_ascii_digit())?;
    let mut parts = rest[at..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(Flavour {
        mariadb,
        version: (major, minor),
    })
}

/// Refuse a client/server pair known not to work (pure), with both versions in the reason:
/// - a client of the same product older than the server (`mysqldump` 5.7 misses what 8.0
///   servers have; `mariadb-dump` 10.6 does not know 11.x);
/// - Oracle `mysqldump` 8.0+ against MariaDB (it queries `COLUMN_STATISTICS`, which MariaDB
///   does not have, and fails).
///
/// Other pairs are allowed and recorded in the manifest.
pub fn check_pair(tool: &str, server: &str) -> Result<()> {
    let (Some(c), Some(s)) = (flavour(tool), flavour(server)) else {
        return Ok(());
    };
    let refuse = if c.mariadb == s.mariadb {
        c.version < s.version
    } else {
        !c.mariadb && s.mariadb && c.version.0 >= 8
    };
    if refuse {
        return Err(AgentError::ClientTooOld(format!(
            "the dump tool ({tool}) cannot dump this server ({server}); use an agent image whose \
             client matches the server"
        )));
    }
    Ok(())
}

/// Start the dump of `db` (or every database). Stdout is SQL.
pub fn spawn_dump(uri: &DbUri, db: Option<&str>, extra: &[String]) -> Result<ToolProcess> {
    let tool = dump_tool();
    let mut cmd = command(tool, uri);
    cmd.args([
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--quick",
        "--default-character-set=utf8mb4",
    ]);
    cmd.args(extra);
    match db {
        Some(db) => {
            cmd.arg("--").arg(db);
        }
        None => {
            cmd.arg("--all-databases");
        }
    }
    spawn_tool(cmd, tool, Stdio::null(), Stdio::piped())
}

/// What one dump holds in the parallel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpScope<'a> {
    /// These base tables of `db`, each with its structure, rows and triggers (a `tableData`
    /// artifact).
    Tables {
        /// The database.
        db: &'a str,
        /// Its tables.
        tables: &'a [String],
    },
    /// Everything of `db` but these tables: views, routines, events (the database artifact,
    /// restored after the tables).
    AllBut {
        /// The database.
        db: &'a str,
        /// The tables left out.
        tables: &'a [String],
    },
    /// All-databases layout: these `(database, table)` base tables with their structure, rows
    /// and triggers, each database's `CREATE DATABASE IF NOT EXISTS` and `USE` before its
    /// tables (a `tableData` artifact that may span databases); `ignore` lists every other
    /// table and view of those databases.
    TablesOf {
        /// The tables dumped.
        tables: &'a [(String, String)],
        /// The other tables and views of their databases.
        ignore: &'a [(String, String)],
    },
    /// All-databases layout: every database's `CREATE DATABASE IF NOT EXISTS`, views,
    /// routines and events, without the base tables in `ignore` (the all-databases artifact,
    /// restored after the tables).
    Schemas {
        /// The databases.
        databases: &'a [String],
        /// Their base tables (left out).
        ignore: &'a [(String, String)],
    },
}

/// Databases the all-databases dump leaves out, as `mariadb-dump --all-databases` does (the
/// server's own views of itself).
pub const SYSTEM_SCHEMAS: [&str; 3] = ["information_schema", "performance_schema", "sys"];

/// Tables of `mysql` whose structure `mariadb-dump` writes (`CREATE TABLE IF NOT EXISTS`, no
/// rows) into every dump of that database, whatever `--ignore-table` says: the all-databases
/// layout plans no part for them and counts them in none.
pub const ALWAYS_DUMPED: [&str; 3] = ["general_log", "slow_log", "transaction_registry"];

/// Whether `db.table` is one of [`ALWAYS_DUMPED`] (pure).
pub fn always_dumped(db: &str, table: &str) -> bool {
    db == "mysql" && ALWAYS_DUMPED.contains(&table)
}

/// The dump tool's arguments for `scope` (pure; after the connection arguments).
pub fn scope_args(scope: DumpScope<'_>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--single-transaction",
        "--hex-blob",
        "--quick",
        "--default-character-set=utf8mb4",
    ]
    .map(String::from)
    .to_vec();
    let ignore = |list: &[(String, String)]| {
        list.iter()
            .map(|(d, t)| format!("--ignore-table={d}.{t}"))
            .collect::<Vec<_>>()
    };
    match scope {
        DumpScope::Tables { db, tables } => {
            args.extend(["--triggers", "--skip-routines", "--skip-events"].map(String::from));
            args.extend(["--".to_string(), db.to_string()]);
            args.extend(tables.iter().cloned());
        }
        DumpScope::AllBut { db, tables } => {
            args.extend(
                ["--no-data", "--skip-triggers", "--routines", "--events"].map(String::from),
            );
            args.extend(tables.iter().map(|t| format!("--ignore-table={db}.{t}")));
            args.extend(["--".to_string(), db.to_string()]);
        }
        DumpScope::TablesOf {
            tables,
            ignore: others,
        } => {
            args.extend(["--triggers", "--skip-routines", "--skip-events"].map(String::from));
            args.extend(ignore(others));
            let mut dbs: Vec<&String> = tables.iter().map(|(d, _)| d).collect();
            dbs.sort();
            dbs.dedup();
            args.extend(["--databases".to_string(), "--".to_string()]);
            args.extend(dbs.into_iter().cloned());
        }
        DumpScope::Schemas {
            databases,
            ignore: tables,
        } => {
            args.extend(
                ["--no-data", "--skip-triggers", "--routines", "--events"].map(String::from),
            );
            args.extend(ignore(tables));
            args.extend(["--databases".to_string(), "--".to_string()]);
            args.extend(databases.iter().cloned());
        }
    }
    args
}

/// Start a dump of part of a database or of the server (the parallel layout). Stdout is SQL.
pub fn spawn_scoped_dump(uri: &DbUri, scope: DumpScope<'_>) -> Result<ToolProcess> {
    let tool = dump_tool();
    let mut cmd = command(tool, uri);
    cmd.args(scope_args(scope));
    spawn_tool(cmd, tool, Stdio::null(), Stdio::piped())
}

/// Base tables of `db` with their size (`data_length + index_length`), for planning the
/// parallel layout.
pub fn table_sizes(uri: &DbUri, db: &str) -> Result<Vec<(String, u64)>> {
    let rows = query_rows(
        uri,
        None,
        &format!(
            "SELECT table_name, COALESCE(data_length, 0) + COALESCE(index_length, 0) FROM information_schema.tables WHERE table_schema = {} AND table_type = 'BASE TABLE' ORDER BY 1",
            quote_str(db)
        ),
        AgentError::Source,
    )?;
    rows.into_iter()
        .map(|r| match r.as_slice() {
            [name, bytes] => Ok((name.clone(), bytes.trim().parse().unwrap_or(0))),
            _ => Err(AgentError::Source("cannot list table sizes".into())),
        })
        .collect()
}

/// What the user databases of a server hold (every database but [`SYSTEM_SCHEMAS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerObjects {
    /// The databases, sorted.
    pub databases: Vec<String>,
    /// Their base tables: `(database, table, data_length + index_length)`.
    pub tables: Vec<(String, String, u64)>,
    /// Their other tables (views, sequences): `(database, name)`.
    pub others: Vec<(String, String)>,
}

/// The user databases of a server (every database but [`SYSTEM_SCHEMAS`]), sorted; `fail`
/// makes the error (source or target side).
pub fn user_databases(uri: &DbUri, fail: fn(String) -> AgentError) -> Result<Vec<String>> {
    let skip = SYSTEM_SCHEMAS.map(quote_str).join(", ");
    Ok(query_rows(
        uri,
        None,
        &format!(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ({skip}) ORDER BY 1"
        ),
        fail,
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next())
    .filter(|d| !d.is_empty())
    .collect())
}

/// List the user databases and their tables (for planning the all-databases parallel layout).
pub fn server_objects(uri: &DbUri) -> Result<ServerObjects> {
    let skip = SYSTEM_SCHEMAS.map(quote_str).join(", ");
    let databases = user_databases(uri, AgentError::Source)?;
    let rows = query_rows(
        uri,
        None,
        &format!(
            "SELECT table_schema, table_name, table_type, COALESCE(data_length, 0) + COALESCE(index_length, 0) FROM information_schema.tables WHERE table_schema NOT IN ({skip}) ORDER BY 1, 2"
        ),
        AgentError::Source,
    )?;
    let mut out = ServerObjects {
        databases,
        ..Default::default()
    };
    for r in rows {
        match r.as_slice() {
            [db, name, kind, bytes] if kind == "BASE TABLE" => {
                out.tables
                    .push((db.clone(), name.clone(), bytes.trim().parse().unwrap_or(0)))
            }
            [db, name, _, _] => out.others.push((db.clone(), name.clone())),
            _ => return Err(AgentError::Source("cannot list the server's tables".into())),
        }
    }
    Ok(out)
}

/// A session holding `FLUSH TABLES WITH READ LOCK`: while it is held no transaction commits,
/// so dumps that start their `START TRANSACTION WITH CONSISTENT SNAPSHOT` meanwhile all see
/// the same data. Held only until every dump of a parallel backup has begun (a moment).
pub struct ReadLock {
    proc: ToolProcess,
    stdin: std::process::ChildStdin,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

const LOCKED_MARKER: &str = "dataguardian-locked";

impl ReadLock {
    /// Take the global read lock (waiting at most 30 s for other sessions' table locks).
    /// Needs the RELOAD privilege.
    pub fn acquire(uri: &DbUri) -> Result<Self> {
        use std::io::{BufRead, Write};
        let tool = client_tool();
        let mut cmd = command(tool, uri);
        cmd.args([
            "--batch",
            "--binary-mode",
            "--skip-column-names",
            "--unbuffered",
        ]);
        let mut proc = spawn_tool(cmd, tool, Stdio::piped(), Stdio::piped())?;
        let mut stdin = proc.take_stdin().expect("stdin is piped");
        let mut stdout = std::io::BufReader::new(proc.take_stdout().expect("stdout is piped"));
        let sent = writeln!(
            stdin,
            "SET SESSION lock_wait_timeout = 30;\nFLUSH TABLES WITH READ LOCK;\nSELECT '{LOCKED_MARKER}';"
        )
        .and_then(|_| stdin.flush());
        if sent.is_ok() {
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                if line.trim() == LOCKED_MARKER {
                    return Ok(ReadLock {
                        proc,
                        stdin,
                        _stdout: stdout,
                    });
                }
                line.clear();
            }
        }
        drop(stdin);
        Err(proc
            .finish(AgentError::Source)
            .err()
            .unwrap_or_else(|| AgentError::Source("the read lock session ended".into())))
    }

    /// `UNLOCK TABLES` and close the session.
    pub fn release(self) -> Result<()> {
        use std::io::Write;
        let ReadLock {
            proc, mut stdin, ..
        } = self;
        let _ = writeln!(stdin, "UNLOCK TABLES;");
        drop(stdin);
        proc.finish(AgentError::Source).map(|_| ())
    }
}

/// Whether `chunk` (a piece of a dump's output, with the end of the previous one before it)
/// shows that the dump is past its `START TRANSACTION WITH CONSISTENT SNAPSHOT`: the dump tool
/// writes its header before, and anything about a table, view, routine or event after.
pub fn past_snapshot(chunk: &[u8]) -> bool {
    const MARKERS: [&[u8]; 10] = [
        b"\nCREATE TABLE",
        b"\n-- Current Database:",
        b"\nCREATE DATABASE",
        b"\nINSERT INTO",
        b"\nLOCK TABLES",
        b"\n-- Dumping",
        b"\n-- Table structure",
        b"\nDELIMITER",
        b"\n/*!50001 CREATE",
        b"\n/*!50106 CREATE",
    ];
    MARKERS
        .iter()
        .any(|m| chunk.windows(m.len()).any(|w| w == *m))
}

/// Whether `db` exists.
pub fn database_exists(uri: &DbUri, db: &str) -> Result<bool> {
    let rows = query(
        uri,
        None,
        &format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {}",
            quote_str(db)
        ),
        AgentError::Target,
    )?;
    Ok(rows.first().is_some_and(|r| r.trim() != "0"))
}

/// Number of tables, views and routines in `db`.
pub fn user_object_count(uri: &DbUri, db: &str) -> Result<u64> {
    let q = quote_str(db);
    let rows = query(
        uri,
        None,
        &format!(
            "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {q}) + \
             (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = {q})"
        ),
        AgentError::Target,
    )?;
    rows.first()
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| AgentError::Target("cannot count objects in the target".into()))
}

/// `CREATE DATABASE`.
pub fn create_database(uri: &DbUri, db: &str) -> Result<()> {
    query(
        uri,
        None,
        &format!("CREATE DATABASE {}", quote_ident(db)),
        AgentError::Target,
    )
    .map(|_| ())
}

/// `DROP DATABASE` + `CREATE DATABASE` (the MySQL meaning of `--clean`).
pub fn recreate_database(uri: &DbUri, db: &str) -> Result<()> {
    let q = quote_ident(db);
    query(
        uri,
        None,
        &format!("DROP DATABASE IF EXISTS {q}; CREATE DATABASE {q}"),
        AgentError::Target,
    )
    .map(|_| ())
}

/// Like [`query`], but rows come back as columns, with the client's batch escapes (`\n`,
/// `\t`, `\\`, `\0`) undone: for definitions that span lines.
pub fn query_rows(
    uri: &DbUri,
    db: Option<&str>,
    sql: &str,
    fail: fn(String) -> AgentError,
) -> Result<Vec<Vec<String>>> {
    let mut cmd = command(client_tool(), uri);
    cmd.args(["--batch", "--binary-mode", "--skip-column-names"]);
    if let Some(db) = db {
        cmd.arg(format!("--database={db}"));
    }
    let mut proc = spawn_tool(cmd, client_tool(), Stdio::piped(), Stdio::piped())?;
    let mut stdin = proc.take_stdin().expect("stdin is piped");
    let writer = {
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, sql.as_bytes());
        })
    };
    let mut out = String::new();
    let read =
        std::io::Read::read_to_string(&mut proc.take_stdout().expect("stdout is piped"), &mut out);
    let _ = writer.join();
    proc.finish(fail)?;
    read.map_err(|e| fail(format!("cannot read client output: {e}")))?;
    Ok(out
        .lines()
        .map(|l| l.split('\t').map(unescape_batch).collect())
        .collect())
}

/// Undo the client's batch-mode escapes (pure).
pub fn unescape_batch(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `DROP DATABASE IF EXISTS`.
pub fn drop_database(uri: &DbUri, db: &str) -> Result<()> {
    query(
        uri,
        None,
        &format!("DROP DATABASE IF EXISTS {}", quote_ident(db)),
        AgentError::Target,
    )
    .map(|_| ())
}

/// Run the masking statements in `db` (one transaction where the statements allow it).
/// Errors are scrubbed of quoted values.
pub fn run_masking(uri: &DbUri, db: &str, sql: &str) -> Result<()> {
    query(
        uri,
        Some(db),
        &format!("START TRANSACTION;\n{sql}COMMIT;\n"),
        AgentError::Target,
    )
    .map(|_| ())
    .map_err(|e| {
        AgentError::Target(format!(
            "masking failed: {}",
            crate::agent::staging::scrub(&e.detail())
        ))
    })
}

/// Run the guard query in `db` and return its output rows.
pub fn run_guard(uri: &DbUri, db: &str, guard: &str) -> Result<Vec<String>> {
    query(
        uri,
        Some(db),
        &format!("{};\n", guard.trim().trim_end_matches(';')),
        AgentError::Target,
    )
    .map(|rows| rows.into_iter().filter(|r| !r.is_empty()).collect())
    .map_err(|e| {
        AgentError::Target(format!(
            "guard failed: the guard query failed: {}",
            crate::agent::staging::scrub(&e.detail())
        ))
    })
}

/// A stored object of a schema recreated by the swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaObject {
    /// `VIEW`, `FUNCTION`, `PROCEDURE`, `TRIGGER` or `EVENT`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// `sql_mode` it was created with (not for views).
    pub sql_mode: Option<String>,
    /// Its `CREATE` statement.
    pub create: String,
}

/// What a schema holds: base tables and the objects that cannot move across schemas.
#[derive(Debug, Clone, Default)]
pub struct SchemaContents {
    /// Base tables.
    pub tables: Vec<String>,
    /// Views, routines, triggers and events with their definitions.
    pub objects: Vec<SchemaObject>,
}

fn names(uri: &DbUri, sql: String) -> Result<Vec<String>> {
    Ok(query_rows(uri, None, &sql, AgentError::Target)?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .filter(|n| !n.is_empty())
        .collect())
}

/// Read a schema's tables and its views, routines, triggers and events with definitions.
pub fn schema_contents(uri: &DbUri, db: &str) -> Result<SchemaContents> {
    let q = quote_str(db);
    let tables = names(
        uri,
        format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = {q} AND table_type = 'BASE TABLE' ORDER BY 1"
        ),
    )?;
    let mut objects = Vec::new();
    let lists: [(&'static str, String, usize, Option<usize>); 5] = [
        (
            "VIEW",
            format!(
                "SELECT table_name FROM information_schema.views WHERE table_schema = {q} ORDER BY 1"
            ),
            1,
            None,
        ),
        (
            "FUNCTION",
            format!(
                "SELECT routine_name FROM information_schema.routines WHERE routine_schema = {q} AND routine_type = 'FUNCTION' ORDER BY 1"
            ),
            2,
            Some(1),
        ),
        (
            "PROCEDURE",
            format!(
                "SELECT routine_name FROM information_schema.routines WHERE routine_schema = {q} AND routine_type = 'PROCEDURE' ORDER BY 1"
            ),
            2,
            Some(1),
        ),
        (
            "TRIGGER",
            format!(
                "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = {q} ORDER BY action_order, 1"
            ),
            2,
            Some(1),
        ),
        (
            "EVENT",
            format!(
                "SELECT event_name FROM information_schema.events WHERE event_schema = {q} ORDER BY 1"
            ),
            3,
            Some(1),
        ),
    ];
    for (kind, list, create_col, mode_col) in lists {
        for name in names(uri, list)? {
            // With the schema as the default database, definitions name its objects without
            // the schema, so they can be recreated in another one.
            let rows = query_rows(
                uri,
                Some(db),
                &format!("SHOW CREATE {kind} {}", quote_ident(&name)),
                AgentError::Target,
            )?;
            let row = rows.into_iter().next().unwrap_or_default();
            let create = row.get(create_col).cloned().ok_or_else(|| {
                AgentError::Target(format!("cannot read the definition of {kind} {name:?}"))
            })?;
            objects.push(SchemaObject {
                kind,
                name,
                sql_mode: mode_col.and_then(|i| row.get(i).cloned()),
                create,
            });
        }
    }
    Ok(SchemaContents { tables, objects })
}

/// Every statement of the swap waits at most this long for a lock held by another session
/// (the server's default is a year).
const LOCK_WAIT: &str = "SET SESSION lock_wait_timeout = 30;\n";

/// A lock wait that timed out is a target in use; any other error stays as it is.
fn locked_or(e: AgentError, target: &str) -> AgentError {
    if e.to_string().contains("Lock wait timeout") {
        AgentError::Target(format!(
            "target in use: sessions hold locks on {target:?} and the swap waited 30 s; the target was left as it was (close them, or set swap.terminateSessions / --terminate-sessions)"
        ))
    } else {
        e
    }
}

/// The SQL that creates `o` in the current schema.
fn create_sql(o: &SchemaObject) -> String {
    let mode = o
        .sql_mode
        .as_deref()
        .map(|m| format!("SET SESSION sql_mode = {};\n", quote_str(m)))
        .unwrap_or_default();
    format!(
        "{LOCK_WAIT}{mode}DELIMITER ;;\n{}\n;;\nDELIMITER ;\n",
        o.create
    )
}

fn drop_sql(o: &SchemaObject) -> String {
    format!("DROP {} IF EXISTS {};\n", o.kind, quote_ident(&o.name))
}

/// Create `objects` in `db`: views in as many rounds as their dependencies need, then
/// routines, triggers and events.
fn create_objects(uri: &DbUri, db: &str, objects: &[SchemaObject]) -> Result<()> {
    let (mut views, others): (Vec<&SchemaObject>, Vec<&SchemaObject>) =
        objects.iter().partition(|o| o.kind == "VIEW");
    while !views.is_empty() {
        let mut left = Vec::new();
        let mut last_err = None;
        for v in &views {
            if let Err(e) = query(uri, Some(db), &create_sql(v), AgentError::Target) {
                last_err = Some(e);
                left.push(*v);
            }
        }
        if left.len() == views.len() {
            return Err(
                last_err.unwrap_or_else(|| AgentError::Target("cannot create views".into()))
            );
        }
        views = left;
    }
    for o in others {
        query(uri, Some(db), &create_sql(o), AgentError::Target)?;
    }
    Ok(())
}

fn kill_sessions(uri: &DbUri, db: &str) -> Result<u64> {
    let ids = names(
        uri,
        format!(
            "SELECT id FROM information_schema.processlist WHERE db = {} AND id <> CONNECTION_ID()",
            quote_str(db)
        ),
    )?;
    let mut killed = 0;
    for id in ids.iter().filter(|i| i.bytes().all(|b| b.is_ascii_digit())) {
        if query(
            uri,
            None,
            &format!("KILL CONNECTION {id}"),
            AgentError::Target,
        )
        .is_ok()
        {
            killed += 1;
        }
    }
    Ok(killed)
}

/// Swap schema `staging` in as `target`: one `RENAME TABLE` moves every base table of the
/// target to `previous` and every base table of staging to the target, atomically. Views,
/// routines, triggers and events cannot move across schemas: triggers are dropped before the
/// rename (and the target's put back if the rename fails), and the staging ones are recreated
/// in the target afterwards, where the old views, routines and events are dropped. Returns the
/// sessions killed (with `terminate`).
pub fn swap_schemas(
    uri: &DbUri,
    target: &str,
    staging: &str,
    previous: &str,
    terminate: bool,
) -> Result<u64> {
    if !database_exists(uri, target)? {
        create_database(uri, target)?;
    }
    let new = schema_contents(uri, staging)?;
    let old = schema_contents(uri, target)?;
    let triggers = |c: &SchemaContents, db: &str| -> String {
        let mut sql = format!("{LOCK_WAIT}USE {};\n", quote_ident(db));
        for o in c.objects.iter().filter(|o| o.kind == "TRIGGER") {
            sql.push_str(&drop_sql(o));
        }
        sql
    };
    let killed = if terminate {
        kill_sessions(uri, target)?
    } else {
        0
    };
    query(uri, None, &triggers(&new, staging), AgentError::Target)?;
    let restore_old_triggers = || {
        // Only the ones that were dropped (a drop that timed out left its trigger in place).
        let still = names(
            uri,
            format!(
                "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = {}",
                quote_str(target)
            ),
        )
        .unwrap_or_default();
        let old_triggers: Vec<SchemaObject> = old
            .objects
            .iter()
            .filter(|o| o.kind == "TRIGGER" && !still.contains(&o.name))
            .cloned()
            .collect();
        let _ = create_objects(uri, target, &old_triggers);
    };
    // The target's triggers go first (a table with triggers cannot move to another schema);
    // they are put back if anything before the swap fails.
    if let Err(e) = query(uri, None, &triggers(&old, target), AgentError::Target) {
        restore_old_triggers();
        return Err(locked_or(e, target));
    }
    if let Err(e) = create_database(uri, previous) {
        restore_old_triggers();
        return Err(e);
    }
    let (qt, qs, qp) = (
        quote_ident(target),
        quote_ident(staging),
        quote_ident(previous),
    );
    let moves: Vec<String> = old
        .tables
        .iter()
        .map(|t| format!("{qt}.{0} TO {qp}.{0}", quote_ident(t)))
        .chain(
            new.tables
                .iter()
                .map(|t| format!("{qs}.{0} TO {qt}.{0}", quote_ident(t))),
        )
        .collect();
    if !moves.is_empty() {
        let rename = format!("{LOCK_WAIT}RENAME TABLE {};\n", moves.join(", "));
        if let Err(e) = query(uri, None, &rename, AgentError::Target) {
            restore_old_triggers();
            let _ = drop_database(uri, previous);
            return Err(locked_or(e, target));
        }
    }
    // The tables are swapped: put the rest of the staging schema in place.
    let mut sql = format!("{LOCK_WAIT}USE {qt};\n");
    for o in old.objects.iter().filter(|o| o.kind != "TRIGGER") {
        sql.push_str(&drop_sql(o));
    }
    query(uri, None, &sql, AgentError::Target)
        .and_then(|_| create_objects(uri, target, &new.objects))
        .map_err(|e| {
            AgentError::Target(format!(
                "the tables were swapped into {target:?} but recreating its views, routines, triggers or events failed (the previous tables are in {previous:?}): {}",
                e.detail()
            ))
        })?;
    // The previous tables keep their triggers.
    let old_triggers: Vec<SchemaObject> = old
        .objects
        .iter()
        .filter(|o| o.kind == "TRIGGER")
        .cloned()
        .collect();
    if let Err(e) = create_objects(uri, previous, &old_triggers) {
        tracing::warn!(error = %e, "the previous target's triggers could not be recreated");
    }
    Ok(killed)
}

/// Start the client reading SQL from stdin into `db` (or the databases named in the SQL).
///
/// `--binary-mode` makes the client send everything but `DELIMITER` to the server: the
/// client's own commands (`system`/`\!`, `source`/`\.`, `tee`, `pager`, `connect`, …) in an
/// artifact are SQL syntax errors there, so a rewritten artifact cannot run anything in the
/// Job, and the restore stops at that line.
pub fn spawn_restore(uri: &DbUri, db: Option<&str>) -> Result<ToolProcess> {
    let tool = client_tool();
    let mut cmd = command(tool, uri);
    cmd.args([
        "--batch",
        "--binary-mode",
        "--default-character-set=utf8mb4",
    ]);
    if let Some(db) = db {
        cmd.arg(format!("--database={db}"));
    }
    spawn_tool(cmd, tool, Stdio::piped(), Stdio::null())
}

/// Exact per-table row counts of `db` (`SELECT COUNT(*)` per base table; used by tests and
/// checks, not by backups — see the module docs).
pub fn row_counts(uri: &DbUri, db: &str) -> Result<Vec<TableCount>> {
    let tables = query(
        uri,
        None,
        &format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = {} AND table_type = 'BASE TABLE' ORDER BY table_name",
            quote_str(db)
        ),
        AgentError::Source,
    )?;
    let mut out = Vec::new();
    for t in tables {
        let rows = query(
            uri,
            Some(db),
            &format!("SELECT COUNT(*) FROM {}", quote_ident(&t)),
            AgentError::Source,
        )?;
        let rows = rows
            .first()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(0);
        out.push(TableCount {
            schema: db.to_string(),
            name: t,
            rows,
        });
    }
    Ok(out)
}

/// Counts rows per table in a mysqldump/mariadb-dump SQL stream, incrementally.
///
/// Recognised at the start of a line: ``USE `db`;`` (switches the current database, with
/// `--all-databases`), ``CREATE TABLE `t` `` (registers a table with zero rows) and
/// ``INSERT INTO `t` VALUES (…),(…);`` (each top-level parenthesised tuple is one row). Quoted
/// strings (with backslash escapes) are skipped, so parentheses or quotes inside values do not
/// confuse the count.
#[derive(Debug, Default)]
pub struct RowCounter {
    default_db: String,
    current_db: String,
    tables: Vec<TableCount>,
    index: std::collections::HashMap<(String, String), usize>,
    state: ScanState,
    line_head: Vec<u8>,
    current: Option<usize>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// At the start of a line, collecting its head.
    #[default]
    LineStart,
    /// Skipping to the end of an uninteresting line.
    SkipLine,
    /// Inside `INSERT … VALUES`, outside any tuple.
    Values { depth: u32 },
    /// Inside a quoted string within values.
    Quoted {
        depth: u32,
        quote: u8,
        escaped: bool,
    },
}

const HEAD_LIMIT: usize = 512;

impl RowCounter {
    /// A counter for a dump of `db` (the schema recorded for each table until a `USE`).
    pub fn new(db: &str) -> Self {
        Self {
            default_db: db.to_string(),
            current_db: db.to_string(),
            ..Default::default()
        }
    }

    /// Feed the next bytes of the dump.
    pub fn feed(&mut self, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                ScanState::LineStart => {
                    if b == b'\n' {
                        // MariaDB ≥ 10.x puts `INSERT INTO `t` VALUES` on its own line and
                        // each tuple on the following lines.
                        if let Some(rest) = self.line_head.strip_prefix(b"INSERT INTO `")
                            && self.line_head.ends_with(b" VALUES")
                            && let Some((name, _)) = parse_ident(rest)
                        {
                            let t = self.table(&name);
                            self.current = Some(t);
                            self.state = ScanState::Values { depth: 0 };
                        }
                        self.line_head.clear();
                    } else {
                        self.line_head.push(b);
                        if self.classify_head() {
                            self.line_head.clear();
                        } else if self.line_head.len() >= HEAD_LIMIT {
                            self.line_head.clear();
                            self.state = ScanState::SkipLine;
                        }
                    }
                }
                ScanState::SkipLine => {
                    if b == b'\n' {
                        self.state = ScanState::LineStart;
                    }
                }
                ScanState::Values { depth } => match b {
                    b'(' => {
                        if depth == 0
                            && let Some(t) = self.current
                        {
                            self.tables[t].rows += 1;
                        }
                        self.state = ScanState::Values { depth: depth + 1 };
                    }
                    b')' => {
                        self.state = ScanState::Values {
                            depth: depth.saturating_sub(1),
                        }
                    }
                    b'\'' | b'"' => {
                        self.state = ScanState::Quoted {
                            depth,
                            quote: b,
                            escaped: false,
                        }
                    }
                    b';' if depth == 0 => {
                        self.current = None;
                        self.state = ScanState::SkipLine;
                    }
                    _ => {}
                },
                ScanState::Quoted {
                    depth,
                    quote,
                    escaped,
                } => {
                    self.state = if escaped {
                        ScanState::Quoted {
                            depth,
                            quote,
                            escaped: false,
                        }
                    } else if b == b'\\' {
                        ScanState::Quoted {
                            depth,
                            quote,
                            escaped: true,
                        }
                    } else if b == quote {
                        ScanState::Values { depth }
                    } else {
                        ScanState::Quoted {
                            depth,
                            quote,
                            escaped: false,
                        }
                    };
                }
            }
            i += 1;
        }
    }

    /// Decide what the current line is once enough of its head is known. Returns true when the
    /// state changed (the head is consumed).
    fn classify_head(&mut self) -> bool {
        let head = &self.line_head[..];
        let last = *head.last().unwrap_or(&0);
        if let Some(rest) = head.strip_prefix(b"INSERT INTO `") {
            // Wait for "VALUES (" — the name (and any column list) is complete and the first
            // tuple starts.
            if head.ends_with(b" VALUES (")
                && let Some((name, _)) = parse_ident(rest)
            {
                let t = self.table(&name);
                self.tables[t].rows += 1;
                self.current = Some(t);
                self.state = ScanState::Values { depth: 1 };
                return true;
            }
            return false;
        }
        // `mariadb-dump` writes the log tables of `mysql` (structure only) with IF NOT EXISTS.
        if let Some(rest) = head
            .strip_prefix(b"CREATE TABLE `")
            .or_else(|| head.strip_prefix(b"CREATE TABLE IF NOT EXISTS `"))
        {
            if (last == b'(' || last == b' ')
                && let Some((name, _)) = parse_ident(rest)
            {
                self.table(&name);
                self.state = ScanState::SkipLine;
                return true;
            }
            return false;
        }
        if let Some(rest) = head.strip_prefix(b"USE `") {
            if last == b';' {
                if let Some((name, _)) = parse_ident(rest) {
                    self.current_db = name;
                }
                self.state = ScanState::SkipLine;
                return true;
            }
            return false;
        }
        // Anything that cannot become one of the prefixes above is skipped.
        let could_be = |p: &[u8]| p.starts_with(head) || head.starts_with(p);
        if !(could_be(b"INSERT INTO `")
            || could_be(b"CREATE TABLE `")
            || could_be(b"CREATE TABLE IF NOT EXISTS `")
            || could_be(b"USE `"))
        {
            self.state = ScanState::SkipLine;
            return true;
        }
        false
    }

    fn table(&mut self, name: &str) -> usize {
        let key = (self.current_db.clone(), name.to_string());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.tables.push(TableCount {
            schema: key.0.clone(),
            name: key.1.clone(),
            rows: 0,
        });
        self.index.insert(key, self.tables.len() - 1);
        self.tables.len() - 1
    }

    /// The counts, sorted by schema and table.
    pub fn finish(mut self) -> Vec<TableCount> {
        let _ = &self.default_db;
        self.tables
            .sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        self.tables
    }
}

/// Parse a backquoted identifier body (after the opening backquote): returns the name and the
/// bytes after the closing backquote. Doubled backquotes are an escaped backquote.
fn parse_ident(s: &[u8]) -> Option<(String, &[u8])> {
    let mut name = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'`' {
            if s.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            return Some((String::from_utf8_lossy(&name).into_owned(), &s[i + 1..]));
        }
        name.push(s[i]);
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_scopes_and_the_snapshot_marker() {
        let tables = vec!["orders".to_string(), "odd`name".to_string()];
        let a = scope_args(DumpScope::Tables {
            db: "shop",
            tables: &tables,
        });
        assert!(a.contains(&"--single-transaction".to_string()));
        assert!(a.contains(&"--skip-routines".to_string()));
        assert_eq!(&a[a.len() - 4..], ["--", "shop", "orders", "odd`name"]);
        let b = scope_args(DumpScope::AllBut {
            db: "shop",
            tables: &tables,
        });
        assert!(b.contains(&"--no-data".to_string()) && b.contains(&"--routines".to_string()));
        assert!(b.contains(&"--ignore-table=shop.odd`name".to_string()));
        assert_eq!(&b[b.len() - 2..], ["--", "shop"]);
        // All databases: the part names its databases (each once, sorted) and ignores the
        // rest of them; the schemas name every database and ignore every base table.
        let pair = |d: &str, t: &str| (d.to_string(), t.to_string());
        let mine = [pair("b.x", "t1"), pair("a", "t2"), pair("b.x", "t3")];
        let others = [pair("a", "v"), pair("b.x", "t4")];
        let c = scope_args(DumpScope::TablesOf {
            tables: &mine,
            ignore: &others,
        });
        assert!(
            c.contains(&"--triggers".to_string()) && c.contains(&"--skip-routines".to_string())
        );
        assert!(c.contains(&"--ignore-table=a.v".to_string()));
        assert!(c.contains(&"--ignore-table=b.x.t4".to_string()));
        assert!(!c.iter().any(|x| x.contains("t1") || x.contains("t3")));
        assert_eq!(&c[c.len() - 4..], ["--databases", "--", "a", "b.x"]);
        let dbs = ["a".to_string(), "b.x".to_string(), "c".to_string()];
        let d = scope_args(DumpScope::Schemas {
            databases: &dbs,
            ignore: &mine,
        });
        assert!(d.contains(&"--no-data".to_string()) && d.contains(&"--events".to_string()));
        assert!(d.contains(&"--ignore-table=b.x.t1".to_string()));
        assert_eq!(&d[d.len() - 5..], ["--databases", "--", "a", "b.x", "c"]);
        assert!(past_snapshot(b"*/;\n\n--\n-- Current Database: `a`\n"));
        assert!(past_snapshot(
            b"*/;\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `a`;"
        ));
        let header = b"-- MariaDB dump 10.19\n-- Host: h    Database: CREATE\n/*!40101 SET NAMES utf8mb4 */;\n";
        assert!(!past_snapshot(header));
        assert!(past_snapshot(
            b"x */;\n\n--\n-- Table structure for table `t`\n"
        ));
        assert!(past_snapshot(b";\nINSERT INTO `t` VALUES (1);"));
        assert!(past_snapshot(b";\nDELIMITER ;;\n"));
    }

    const DUMP: &str = "-- MariaDB dump 10.19\n\
/*!40101 SET NAMES utf8mb4 */;\n\
DROP TABLE IF EXISTS `a``b`;\n\
CREATE TABLE `a``b` (\n  `id` int NOT NULL\n) ENGINE=InnoDB;\n\
CREATE TABLE `empty` (\n  `id` int\n);\n\
CREATE TABLE IF NOT EXISTS `general_log` (\n  `x` int\n) ENGINE=CSV;\n\
INSERT INTO `a``b` VALUES (1,'x'),(2,'it\\'s (not) a row'),(3,'semi;colon'),(4,0x28);\n\
INSERT INTO `a``b` VALUES\n(5,'\\\\'),\n(6,NULL);\n\
/*!50001 CREATE VIEW `v` AS SELECT 1 AS `a` */;\n\
INSERT INTO `t2` (`a`, `b`) VALUES ('(','('),(')',\"\\\")\");\n";

    #[test]
    fn known_bad_client_server_pairs_are_refused() {
        let maria_11 =
            "mariadb-dump from 10.11.19-MariaDB, client 10.11.19 for debian-linux-gnu (x86_64)";
        assert_eq!(
            flavour(maria_11),
            Some(Flavour {
                mariadb: true,
                version: (10, 11)
            })
        );
        assert_eq!(
            flavour("8.0.36"),
            Some(Flavour {
                mariadb: false,
                version: (8, 0)
            })
        );
        assert!(check_pair(maria_11, "10.11.6-MariaDB").is_ok());
        assert!(check_pair(maria_11, "10.6.20-MariaDB-log").is_ok());
        assert!(check_pair(maria_11, "8.0.36").is_ok());
        let err = check_pair(maria_11, "11.4.2-MariaDB").unwrap_err();
        assert_eq!(err.category(), "client-too-old");
        assert!(err.to_string().contains("11.4.2-MariaDB") && err.to_string().contains("10.11.19"));
        let mysqldump_8 =
            "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)";
        assert!(check_pair(mysqldump_8, "10.11.6-MariaDB").is_err());
        assert!(check_pair(mysqldump_8, "8.4.0").is_err());
        assert!(check_pair(mysqldump_8, "8.0.40").is_ok());
        assert!(check_pair("something else", "8.0.40").is_ok());
    }

    #[test]
    fn counts_rows_in_any_chunking() {
        for chunk in [1usize, 2, 3, 7, 64, 4096] {
            let mut c = RowCounter::new("shop");
            for part in DUMP.as_bytes().chunks(chunk) {
                c.feed(part);
            }
            let counts = c.finish();
            let get = |n: &str| counts.iter().find(|t| t.name == n).map(|t| t.rows);
            assert_eq!(get("a`b"), Some(6), "chunk {chunk}: {counts:?}");
            assert_eq!(get("empty"), Some(0), "chunk {chunk}");
            assert_eq!(get("general_log"), Some(0), "chunk {chunk}");
            assert_eq!(get("t2"), Some(2), "chunk {chunk}");
            assert_eq!(get("v"), None, "views are not tables");
            assert!(counts.iter().all(|t| t.schema == "shop"));
        }
    }

    #[test]
    fn use_switches_database() {
        let mut c = RowCounter::new("");
        c.feed(b"USE `one`;\nINSERT INTO `t` VALUES (1);\nUSE `two`;\nINSERT INTO `t` VALUES (1),(2);\n");
        let counts = c.finish();
        assert_eq!(counts.len(), 2);
        assert_eq!((counts[0].schema.as_str(), counts[0].rows), ("one", 1));
        assert_eq!((counts[1].schema.as_str(), counts[1].rows), ("two", 2));
    }

    #[test]
    fn batch_escapes_are_undone() {
        assert_eq!(unescape_batch("a\\nb\\tc\\\\d"), "a\nb\tc\\d");
        assert_eq!(unescape_batch("x\\"), "x\\");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_str("a'b\\"), "'a''b\\\\'");
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
