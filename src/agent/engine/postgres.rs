//! PostgreSQL: `pg_dump -Fc -Z0` inside an exported snapshot, exact row counts from the same
//! snapshot, `pg_dumpall --globals-only` for cluster objects, `pg_restore --exit-on-error`.
//!
//! Consistency: a `psql` session opens `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` and
//! calls `pg_export_snapshot()`. `pg_dump --snapshot=<id>` imports that snapshot, and the row
//! counts run inside the exporting transaction itself, so the dump and the counts see exactly
//! the same data. The session stays open (holding the snapshot) until pg_dump has finished.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

use super::pg_tools::{self, PgTools};
use super::{DbUri, ToolProcess, conninfo_quote, spawn_tool};
use crate::agent::error::{AgentError, Result};
use crate::agent::manifest::TableCount;

/// The database `psql` connects to for cluster-level statements.
pub const MAINTENANCE_DB: &str = "postgres";

const END_MARKER: &str = "__DATAGUARDIAN_END__";

/// libpq `key=value` connection string for `db` (no password: that goes in `PGPASSWORD`).
pub fn conninfo(uri: &DbUri, db: &str) -> String {
    let mut parts = vec![format!("host={}", conninfo_quote(&uri.host))];
    if let Some(p) = uri.port {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = &uri.user {
        parts.push(format!("user={}", conninfo_quote(u)));
    }
    parts.push(format!("dbname={}", conninfo_quote(db)));
    for (k, v) in &uri.params {
        if k != "password" && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            parts.push(format!("{k}={}", conninfo_quote(v)));
        }
    }
    parts.push("application_name='dataguardian'".into());
    parts.join(" ")
}

fn command(program: std::path::PathBuf, uri: &DbUri) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("PGPASSWORD");
    if let Some(p) = &uri.password {
        cmd.env("PGPASSWORD", &p.0);
    }
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "15");
    }
    cmd
}

fn psql(uri: &DbUri, db: &str) -> Command {
    // psql talks to servers of any version: the newest bundled one.
    let mut cmd = command(pg_tools::newest().program("psql"), uri);
    cmd.args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo(uri, db));
    cmd
}

/// Run SQL (given on stdin, so psql variables `-v k=v` interpolate) and return stdout lines.
pub fn query(
    uri: &DbUri,
    db: &str,
    sql: &str,
    vars: &[(&str, &str)],
    fail: fn(String) -> AgentError,
) -> Result<Vec<String>> {
    let mut cmd = psql(uri, db);
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    let mut proc = spawn_tool(cmd, "psql", Stdio::piped(), Stdio::piped())?;
    let mut stdin = proc
        .take_stdin()
        .ok_or_else(|| fail("psql has no stdin".into()))?;
    let mut stdout = proc
        .take_stdout()
        .ok_or_else(|| fail("psql has no stdout".into()))?;
    let writer = {
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        })
    };
    let mut out = String::new();
    let read = stdout.read_to_string(&mut out);
    let _ = writer.join();
    proc.finish(fail)?;
    read.map_err(|e| fail(format!("cannot read psql output: {e}")))?;
    Ok(out
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// The server version (`SHOW server_version`).
pub fn server_version(uri: &DbUri, db: &str) -> Result<String> {
    let lines = query(uri, db, "SHOW server_version;\n", &[], AgentError::Source)?;
    lines
        .first()
        .cloned()
        .ok_or_else(|| AgentError::Source("server returned no version".into()))
}

/// Databases that can be dumped (`datallowconn`, not templates).
pub fn list_databases(uri: &DbUri) -> Result<Vec<String>> {
    let db = uri.database.as_deref().unwrap_or(MAINTENANCE_DB);
    query(
        uri,
        db,
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname;\n",
        &[],
        AgentError::Source,
    )
}

/// The tables whose rows are counted, as one JSON array of `[schema, table]`: only ordinary
/// tables (partitions count as their own tables, their parents are not double-counted), no
/// system or extension tables.
const TABLES_SQL: &str = r#"SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname) ORDER BY n.nspname, c.relname), '[]'::json)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e');
"#;

/// The same tables as [`TABLES_SQL`] with their on-disk size (`pg_table_size`: heap, TOAST,
/// free-space and visibility maps; no indexes), largest first: what the parallel layout plans
/// with.
const TABLE_SIZES_SQL: &str = r#"SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname, pg_table_size(c.oid)) ORDER BY pg_table_size(c.oid) DESC, n.nspname, c.relname), '[]'::json)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e');
"#;

/// One table and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSize {
    /// Schema.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// `pg_table_size` in bytes.
    pub bytes: u64,
}

fn parse_table_sizes(json: &str) -> Result<Vec<TableSize>> {
    let rows: Vec<(String, String, u64)> = serde_json::from_str(json)
        .map_err(|e| AgentError::Source(format!("cannot list table sizes: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(schema, name, bytes)| TableSize {
            schema,
            name,
            bytes,
        })
        .collect())
}

/// A `pg_dump` pattern that matches exactly one table: both parts double-quoted, so no
/// character in them is a wildcard and case is kept (`"s"."t"`; a `"` is written `""`).
pub fn exact_table_pattern(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Tables counted per query (one `count(*)` sub-select each).
const COUNTS_PER_QUERY: usize = 200;

/// A PostgreSQL identifier, always quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Parse the JSON list of tables.
fn parse_tables(json: &str) -> Result<Vec<(String, String)>> {
    serde_json::from_str(json).map_err(|e| AgentError::Source(format!("cannot list tables: {e}")))
}

/// `SELECT json_build_array((SELECT count(*) FROM ONLY "s"."t"), …)` for a batch of tables.
fn counts_sql(tables: &[(String, String)]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .map(|(s, t)| {
            format!(
                "(SELECT count(*) FROM ONLY {}.{})",
                quote_ident(s),
                quote_ident(t)
            )
        })
        .collect();
    format!("SELECT json_build_array({});\n", parts.join(", "))
}

/// Exact per-table row counts through `run` (a statement in → output lines): the tables, then
/// their counts in batches — plain SQL, nothing the server may lack (no XML functions).
fn count_rows(mut run: impl FnMut(&str) -> Result<Vec<String>>) -> Result<Vec<TableCount>> {
    let tables = parse_tables(&run(TABLES_SQL)?.join("\n"))?;
    let mut out = Vec::with_capacity(tables.len());
    for batch in tables.chunks(COUNTS_PER_QUERY) {
        let counts: Vec<u64> = serde_json::from_str(&run(&counts_sql(batch))?.join("\n"))
            .map_err(|e| AgentError::Source(format!("cannot parse row counts: {e}")))?;
        if counts.len() != batch.len() {
            return Err(AgentError::Source(format!(
                "{} row counts for {} tables",
                counts.len(),
                batch.len()
            )));
        }
        out.extend(
            batch
                .iter()
                .zip(counts)
                .map(|((schema, name), rows)| TableCount {
                    schema: schema.clone(),
                    name: name.clone(),
                    rows,
                }),
        );
    }
    Ok(out)
}

/// Exact row counts of `db` in a fresh snapshot (used by tests and restore checks).
pub fn row_counts(uri: &DbUri, db: &str) -> Result<Vec<TableCount>> {
    // One psql session: the listing and the counts see the same snapshot.
    let mut session = SnapshotSession::open(uri, db)?;
    match session.row_counts() {
        Ok(counts) => session.close().map(|_| counts),
        Err(e) => Err(session.close_with_error().unwrap_or(e)),
    }
}

/// A `psql` session holding a REPEATABLE READ transaction whose snapshot was exported.
pub struct SnapshotSession {
    proc: ToolProcess,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The exported snapshot id for `pg_dump --snapshot`.
    pub snapshot: String,
    /// `SHOW server_version` in this session.
    pub server_version: String,
}

impl SnapshotSession {
    /// Connect to `db`, begin the transaction and export its snapshot.
    pub fn open(uri: &DbUri, db: &str) -> Result<Self> {
        let mut proc = spawn_tool(psql(uri, db), "psql", Stdio::piped(), Stdio::piped())?;
        let stdin = proc
            .take_stdin()
            .ok_or_else(|| AgentError::Source("psql has no stdin".into()))?;
        let stdout = BufReader::new(
            proc.take_stdout()
                .ok_or_else(|| AgentError::Source("psql has no stdout".into()))?,
        );
        let mut s = SnapshotSession {
            proc,
            stdin,
            stdout,
            snapshot: String::new(),
            server_version: String::new(),
        };
        let lines = s.run(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\nSHOW server_version;\n",
        )?;
        match lines.as_slice() {
            [snap, version] => {
                s.snapshot = snap.trim().to_string();
                s.server_version = version.trim().to_string();
            }
            _ => return Err(s.fail("unexpected output while exporting the snapshot")),
        }
        if s.snapshot.is_empty()
            || !s
                .snapshot
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(s.fail("invalid snapshot id"));
        }
        Ok(s)
    }

    fn fail(self, what: &str) -> AgentError {
        let SnapshotSession { proc, stdin, .. } = self;
        drop(stdin);
        match proc.finish(AgentError::Source) {
            Err(e) => e,
            Ok(_) => AgentError::Source(format!("snapshot session: {what}")),
        }
    }

    fn run(&mut self, sql: &str) -> Result<Vec<String>> {
        let sent =
            writeln!(self.stdin, "{sql}\n\\echo {END_MARKER}").and_then(|_| self.stdin.flush());
        let mut lines = Vec::new();
        if sent.is_ok() {
            loop {
                let mut line = String::new();
                match self.stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        if line == END_MARKER {
                            return Ok(lines);
                        }
                        if !line.is_empty() {
                            lines.push(line);
                        }
                    }
                }
            }
        }
        // psql stopped (ON_ERROR_STOP): report its error.
        Err(AgentError::Source(
            "the snapshot session ended unexpectedly".into(),
        ))
    }

    /// Exact per-table row counts inside the exported snapshot.
    pub fn row_counts(&mut self) -> Result<Vec<TableCount>> {
        count_rows(|sql| self.run(sql))
    }

    /// The tables the row counts cover, with their sizes, largest first (see
    /// [`TABLE_SIZES_SQL`]).
    pub fn table_sizes(&mut self) -> Result<Vec<TableSize>> {
        let lines = self.run(TABLE_SIZES_SQL)?;
        parse_table_sizes(&lines.join("\n"))
    }

    /// Commit (nothing was written) and close the session.
    pub fn close(mut self) -> Result<()> {
        let _ = writeln!(self.stdin, "COMMIT;\n\\q");
        drop(self.stdin);
        self.proc.finish(AgentError::Source).map(|_| ())
    }

    /// Close after a failure elsewhere, reporting the session's own error when it has one.
    pub fn close_with_error(self) -> Option<AgentError> {
        let SnapshotSession { proc, stdin, .. } = self;
        drop(stdin);
        proc.finish(AgentError::Source).err()
    }
}

/// What one `pg_dump` of a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpScope<'a> {
    /// Everything (the single-stream layout).
    Whole,
    /// Everything but the rows of these tables (`--exclude-table-data`): the database
    /// artifact of the parallel layout (schema, sequences, large objects, the rows of any
    /// table not listed).
    WithoutDataOf(&'a [(String, String)]),
    /// Only the rows of these tables (`--data-only -t`): a `tableData` artifact.
    DataOf(&'a [(String, String)]),
}

/// The `pg_dump` arguments selecting `scope` (pure).
pub fn scope_args(scope: DumpScope<'_>) -> Vec<String> {
    match scope {
        DumpScope::Whole => Vec::new(),
        DumpScope::WithoutDataOf(tables) => tables
            .iter()
            .map(|(s, t)| format!("--exclude-table-data={}", exact_table_pattern(s, t)))
            .collect(),
        DumpScope::DataOf(tables) => std::iter::once("--data-only".to_string())
            .chain(
                tables
                    .iter()
                    .map(|(s, t)| format!("--table={}", exact_table_pattern(s, t))),
            )
            .collect(),
    }
}

/// Start `pg_dump -Fc -Z0` of `db` in `snapshot` (stdout is the archive), from `tools`
/// ([`pg_tools::for_server`]).
pub fn spawn_dump(
    tools: &PgTools,
    uri: &DbUri,
    db: &str,
    snapshot: &str,
    extra: &[String],
) -> Result<ToolProcess> {
    spawn_scoped_dump(tools, uri, db, snapshot, DumpScope::Whole, extra)
}

/// [`spawn_dump`] of part of the database (the parallel layout).
pub fn spawn_scoped_dump(
    tools: &PgTools,
    uri: &DbUri,
    db: &str,
    snapshot: &str,
    scope: DumpScope<'_>,
    extra: &[String],
) -> Result<ToolProcess> {
    let mut cmd = command(tools.program("pg_dump"), uri);
    cmd.args(["-w", "--format=custom", "--compress=0"])
        .arg(format!("--snapshot={snapshot}"))
        .args(scope_args(scope))
        .args(extra)
        .arg("-d")
        .arg(conninfo(uri, db));
    spawn_tool(cmd, "pg_dump", Stdio::null(), Stdio::piped())
}

/// Start `pg_dumpall --globals-only` (roles, memberships, tablespaces).
pub fn spawn_globals(tools: &PgTools, uri: &DbUri, extra: &[String]) -> Result<ToolProcess> {
    let mut cmd = command(tools.program("pg_dumpall"), uri);
    let db = uri.database.as_deref().unwrap_or(MAINTENANCE_DB);
    cmd.args(["-w", "--globals-only"])
        .args(extra)
        .arg("-d")
        .arg(conninfo(uri, db));
    spawn_tool(cmd, "pg_dumpall", Stdio::null(), Stdio::piped())
}

/// Whether `db` exists.
pub fn database_exists(uri: &DbUri, db: &str) -> Result<bool> {
    let lines = query(
        uri,
        MAINTENANCE_DB,
        "SELECT count(*) FROM pg_database WHERE datname = :'name';\n",
        &[("name", db)],
        AgentError::Target,
    )?;
    Ok(lines.first().map(|l| l.trim() != "0").unwrap_or(false))
}

/// Number of user relations (tables, views, sequences, …) in `db`.
pub fn user_relation_count(uri: &DbUri, db: &str) -> Result<u64> {
    let lines = query(
        uri,
        db,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%';\n",
        &[],
        AgentError::Target,
    )?;
    lines
        .first()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| AgentError::Target("cannot count relations in the target".into()))
}

/// `CREATE DATABASE`.
pub fn create_database(uri: &DbUri, db: &str) -> Result<()> {
    query(
        uri,
        MAINTENANCE_DB,
        "CREATE DATABASE :\"name\";\n",
        &[("name", db)],
        AgentError::Target,
    )
    .map(|_| ())
}

/// `DROP DATABASE IF EXISTS` (with `FORCE` on PostgreSQL 13+, which ends the sessions a
/// killed restore tool may have left behind).
pub fn drop_database(uri: &DbUri, db: &str) -> Result<()> {
    let force = query(
        uri,
        MAINTENANCE_DB,
        "SELECT current_setting('server_version_num')::int >= 130000;\n",
        &[],
        AgentError::Target,
    )?
    .first()
    .is_some_and(|l| l.trim() == "t");
    let sql = if force {
        "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);\n"
    } else {
        "DROP DATABASE IF EXISTS :\"name\";\n"
    };
    query(
        uri,
        MAINTENANCE_DB,
        sql,
        &[("name", db)],
        AgentError::Target,
    )
    .map(|_| ())
}

/// Sessions connected to `db` (other than ours).
pub fn session_count(uri: &DbUri, db: &str) -> Result<u64> {
    let lines = query(
        uri,
        MAINTENANCE_DB,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :'name' AND pid <> pg_backend_pid();\n",
        &[("name", db)],
        AgentError::Target,
    )?;
    lines
        .first()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| AgentError::Target("cannot count the sessions on the target".into()))
}

fn allows_connections(uri: &DbUri, db: &str) -> Result<bool> {
    Ok(query(
        uri,
        MAINTENANCE_DB,
        "SELECT datallowconn FROM pg_database WHERE datname = :'name';\n",
        &[("name", db)],
        AgentError::Target,
    )?
    .first()
    .is_some_and(|l| l.trim() == "t"))
}

fn set_allow_connections(uri: &DbUri, db: &str, allow: bool) -> Result<()> {
    query(
        uri,
        MAINTENANCE_DB,
        &format!("ALTER DATABASE :\"name\" WITH ALLOW_CONNECTIONS {allow};\n"),
        &[("name", db)],
        AgentError::Target,
    )
    .map(|_| ())
}

fn in_use(target: &str, sessions: u64) -> AgentError {
    AgentError::Target(format!(
        "target in use: {sessions} session(s) connected to {target:?}; the target was left as it was (close them, or set swap.terminateSessions / --terminate-sessions)"
    ))
}

/// Swap `staging` in as `target`, the old target becoming `previous`, in one transaction of
/// two renames. With `terminate`, new connections to the target are refused and its sessions
/// terminated first; without it, connected sessions refuse the swap (`target in use`) and
/// nothing changes. Returns the number of sessions terminated.
pub fn swap_databases(
    uri: &DbUri,
    target: &str,
    staging: &str,
    previous: &str,
    terminate: bool,
) -> Result<u64> {
    if !database_exists(uri, target)? {
        query(
            uri,
            MAINTENANCE_DB,
            "ALTER DATABASE :\"staging\" RENAME TO :\"target\";\n",
            &[("staging", staging), ("target", target)],
            AgentError::Target,
        )?;
        return Ok(0);
    }
    let mut terminated = 0;
    let allowed = allows_connections(uri, target)?;
    if terminate {
        if allowed {
            set_allow_connections(uri, target, false)?;
        }
        let ended = query(
            uri,
            MAINTENANCE_DB,
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'name' AND pid <> pg_backend_pid();\n",
            &[("name", target)],
            AgentError::Target,
        );
        match ended {
            Ok(lines) => {
                terminated = lines
                    .first()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0)
            }
            Err(e) => {
                if allowed {
                    let _ = set_allow_connections(uri, target, true);
                }
                return Err(e);
            }
        }
        // Terminated backends take a moment to leave.
        for _ in 0..200 {
            if session_count(uri, target)? == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    } else {
        let n = session_count(uri, target)?;
        if n > 0 {
            return Err(in_use(target, n));
        }
    }
    let renamed = query(
        uri,
        MAINTENANCE_DB,
        "BEGIN;\nALTER DATABASE :\"target\" RENAME TO :\"previous\";\nALTER DATABASE :\"staging\" RENAME TO :\"target\";\nCOMMIT;\n",
        &[
            ("target", target),
            ("previous", previous),
            ("staging", staging),
        ],
        AgentError::Target,
    );
    match renamed {
        Ok(_) => {
            if terminate && allowed {
                set_allow_connections(uri, previous, true)?;
            }
            Ok(terminated)
        }
        Err(e) => {
            if terminate && allowed {
                let _ = set_allow_connections(uri, target, true);
            }
            if e.to_string().contains("being accessed by other users") {
                let n = session_count(uri, target).unwrap_or(1).max(1);
                return Err(in_use(target, n));
            }
            Err(e)
        }
    }
}

/// Run `sql` in `db` in one transaction, in psql's restricted mode (no meta-commands): the
/// masking rules. Errors are scrubbed of quoted values.
pub fn run_masking(uri: &DbUri, db: &str, sql: &str) -> Result<()> {
    let key = super::random_hex()?;
    let script = format!("\\restrict {key}\nBEGIN;\n{sql}COMMIT;\n");
    query(uri, db, &script, &[], AgentError::Target)
        .map(|_| ())
        .map_err(|e| {
            AgentError::Target(format!(
                "masking failed: {}",
                crate::agent::staging::scrub(&e.detail())
            ))
        })
}

/// Run the guard query in `db` (restricted mode) and return its output lines.
pub fn run_guard(uri: &DbUri, db: &str, guard: &str) -> Result<Vec<String>> {
    let key = super::random_hex()?;
    let script = format!(
        "\\restrict {key}\n{};\n",
        guard.trim().trim_end_matches(';')
    );
    query(uri, db, &script, &[], AgentError::Target).map_err(|e| {
        AgentError::Target(format!(
            "guard failed: the guard query failed: {}",
            crate::agent::staging::scrub(&e.detail())
        ))
    })
}

/// Options of `pg_restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// `--clean --if-exists`: drop objects before recreating them.
    pub clean: bool,
    /// `--no-owner`: do not restore ownership (restoring as another user).
    pub no_owner: bool,
    /// `--single-transaction`: all or nothing.
    pub single_transaction: bool,
    /// Extra arguments.
    pub extra: Vec<String>,
}

/// Which part of an archive one `pg_restore` of the parallel layout restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePart {
    /// `--section=pre-data`: schemas, types, functions, tables (no indexes, no constraints
    /// but NOT NULL/CHECK, no triggers).
    PreData,
    /// `--section=data`: the rows the archive holds, sequence values, large objects.
    Data,
    /// `--section=post-data`: indexes, constraints, triggers, rules, policies (`-j N`).
    PostData,
}

/// The `pg_restore` arguments of one step of a parallel-layout restore (pure). `--clean`
/// belongs to the pre-data step only; `--single-transaction` is never given (several
/// sessions restore at once).
pub fn part_args(part: RestorePart, opts: &RestoreOptions, jobs: usize) -> Vec<String> {
    let mut args = vec!["-w".to_string(), "--exit-on-error".to_string()];
    match part {
        RestorePart::PreData => {
            args.push("--section=pre-data".into());
            if opts.clean {
                args.extend(["--clean".into(), "--if-exists".into()]);
            }
        }
        RestorePart::Data => args.push("--section=data".into()),
        RestorePart::PostData => {
            args.push("--section=post-data".into());
            if jobs > 1 {
                args.push(format!("--jobs={jobs}"));
            }
        }
    }
    if opts.no_owner {
        args.push("--no-owner".into());
    }
    args.extend(opts.extra.iter().cloned());
    args
}

/// Run `pg_restore` of one part of the archive file `archive` into `db` and wait for it.
pub fn restore_part_from_file(
    tools: &PgTools,
    uri: &DbUri,
    db: &str,
    archive: &std::path::Path,
    part: RestorePart,
    opts: &RestoreOptions,
    jobs: usize,
) -> Result<()> {
    let mut cmd = command(tools.program("pg_restore"), uri);
    cmd.args(part_args(part, opts, jobs))
        .arg("-d")
        .arg(conninfo(uri, db))
        .arg(archive);
    spawn_tool(cmd, "pg_restore", Stdio::null(), Stdio::null())?
        .finish(AgentError::Target)
        .map(|_| ())
}

/// Start `pg_restore --exit-on-error` into `db`, reading the archive from stdin, from `tools`
/// ([`pg_tools::for_archive`]).
pub fn spawn_restore(
    tools: &PgTools,
    uri: &DbUri,
    db: &str,
    opts: &RestoreOptions,
) -> Result<ToolProcess> {
    let mut cmd = command(tools.program("pg_restore"), uri);
    cmd.args(["-w", "--exit-on-error"]);
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if opts.no_owner {
        cmd.arg("--no-owner");
    }
    if opts.single_transaction {
        cmd.arg("--single-transaction");
    }
    cmd.args(&opts.extra).arg("-d").arg(conninfo(uri, db));
    spawn_tool(cmd, "pg_restore", Stdio::piped(), Stdio::null())
}

/// Start `psql -v ON_ERROR_STOP=1` reading SQL (globals) from stdin; feed it through a
/// [`GlobalsFilter`], which puts psql in restricted mode first.
pub fn spawn_sql_restore(uri: &DbUri, db: &str) -> Result<ToolProcess> {
    spawn_tool(psql(uri, db), "psql", Stdio::piped(), Stdio::null())
}

/// Rewrites `pg_dumpall --globals-only` output so it restores into a cluster that already has
/// some of the roles (at least the one restoring): each `CREATE ROLE x;` becomes a block that
/// skips an existing role, and the role the restore connects as is never created or altered
/// (its password and attributes stay as they are on the target). Everything else passes
/// unchanged, and psql still stops on the first real error.
///
/// The stream starts with `\restrict <key>`, a key made for this restore: from then on psql
/// refuses every meta-command (`\!`, `\copy`, `\lo_import`, `\connect`, `\o`, …) that the
/// artifact may carry, and with `ON_ERROR_STOP` the restore stops there. The dump's own
/// `\restrict`/`\unrestrict` lines (pg_dumpall writes them since the August 2025 minors) are
/// dropped; an artifact cannot know this key, so it cannot leave restricted mode.
pub struct GlobalsFilter<R> {
    inner: BufReader<R>,
    pending: Vec<u8>,
    pos: usize,
    keep_role: Option<String>,
    preamble: Option<Vec<u8>>,
}

impl<R: Read> GlobalsFilter<R> {
    /// Wrap the globals SQL stream; `keep_role` is the role the restore connects as and
    /// `restrict_key` the secret key of psql's restricted mode (letters and digits).
    pub fn new(inner: R, keep_role: Option<String>, restrict_key: &str) -> Self {
        Self {
            inner: BufReader::with_capacity(64 << 10, inner),
            pending: Vec::new(),
            pos: 0,
            keep_role,
            preamble: Some(format!("\\restrict {restrict_key}\n").into_bytes()),
        }
    }
}

/// How `pg_dumpall` spells a role name (quoted unless a plain lowercase identifier).
fn role_spelling(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Rewrite one line of globals SQL (see [`GlobalsFilter`]); `Some(empty)` drops the line.
pub fn rewrite_globals_line(line: &[u8], keep_role: Option<&str>) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let body = text.trim_end_matches(['\n', '\r']);
    if body.starts_with("\\restrict ") || body.starts_with("\\unrestrict ") {
        return Some(b"-- dataguardian: the dump's own restricted-mode line is dropped\n".to_vec());
    }
    if let Some(me) = keep_role.map(role_spelling) {
        let create = format!("CREATE ROLE {me};");
        let alter = format!("ALTER ROLE {me} WITH ");
        if body == create || body.starts_with(&alter) {
            return Some(
                format!("-- dataguardian: role {me} (the restoring role) left unchanged\n")
                    .into_bytes(),
            );
        }
    }
    let role = body.strip_prefix("CREATE ROLE ")?.strip_suffix(';')?;
    Some(
        format!(
            "DO $dataguardian$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN RAISE NOTICE 'role {} exists, kept'; END $dataguardian$;\n",
            role.replace('\'', "''").replace('%', "%%")
        )
        .into_bytes(),
    )
}

impl<R: Read> Read for GlobalsFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            if let Some(preamble) = self.preamble.take() {
                self.pending = preamble;
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.pos = n;
                return Ok(n);
            }
            let n = self.inner.read_until(b'\n', &mut self.pending)?;
            if n == 0 {
                return Ok(0);
            }
            if let Some(rewritten) = rewrite_globals_line(&self.pending, self.keep_role.as_deref())
            {
                self.pending = rewritten;
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_has_no_password() {
        let uri = DbUri::parse("postgresql://bob:pw@127.0.0.1:5432/shop?sslmode=require").unwrap();
        let c = conninfo(&uri, "other");
        assert!(
            c.contains("dbname='other'")
                && c.contains("sslmode='require'")
                && c.contains("port=5432")
        );
        assert!(!c.contains("pw"));
    }

    #[test]
    fn globals_filter_wraps_create_role_only() {
        let input = b"SET x = 1;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\nCREATE ROLE \"we'ird\";\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER PASSWORD 'x';\n";
        let mut out = String::new();
        GlobalsFilter::new(&input[..], Some("postgres".into()), "k3y")
            .read_to_string(&mut out)
            .unwrap();
        let lines: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(out.lines().next(), Some("\\restrict k3y"));
        assert_eq!(lines[0], "SET x = 1;");
        assert!(lines[1].starts_with(
            "DO $dataguardian$ BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object"
        ));
        assert_eq!(lines[2], "ALTER ROLE app WITH LOGIN;");
        assert!(
            lines[3].contains("CREATE ROLE \"we'ird\";")
                && lines[3].contains("role \"we''ird\" exists")
        );
        assert!(
            lines[4].starts_with("--") && lines[5].starts_with("--"),
            "{out}"
        );
        assert_eq!(role_spelling("Admin"), "\"Admin\"");
    }

    #[test]
    fn globals_start_restricted_and_lose_the_dumps_own_restrict_lines() {
        let input = b"\\restrict AbC\nCREATE ROLE app;\n\\! touch /tmp/x\n\\unrestrict AbC\n";
        let mut out = String::new();
        GlobalsFilter::new(&input[..], None, "ourkey")
            .read_to_string(&mut out)
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "\\restrict ourkey");
        assert!(lines[1].starts_with("--"), "{out}");
        // Any other meta-command reaches psql, which refuses it in restricted mode.
        assert_eq!(lines[3], "\\! touch /tmp/x");
        assert!(lines[4].starts_with("--"), "{out}");
        assert!(!out.contains("AbC"));
    }

    #[test]
    fn scoped_dumps_match_tables_exactly() {
        let tables = vec![
            ("public".to_string(), "t*".to_string()),
            ("Sales".to_string(), "we\"ird.x".to_string()),
        ];
        assert_eq!(
            scope_args(DumpScope::DataOf(&tables)),
            [
                "--data-only",
                "--table=\"public\".\"t*\"",
                "--table=\"Sales\".\"we\"\"ird.x\""
            ]
        );
        assert_eq!(
            scope_args(DumpScope::WithoutDataOf(&tables[..1])),
            ["--exclude-table-data=\"public\".\"t*\""]
        );
        assert!(scope_args(DumpScope::Whole).is_empty());
        assert_eq!(
            parse_table_sizes(r#"[["public","big",8192],["s","small",0]]"#).unwrap()[0],
            TableSize {
                schema: "public".into(),
                name: "big".into(),
                bytes: 8192
            }
        );
    }

    #[test]
    fn parallel_restore_parts() {
        let opts = RestoreOptions {
            clean: true,
            no_owner: true,
            single_transaction: true,
            extra: vec!["--no-comments".into()],
        };
        let pre = part_args(RestorePart::PreData, &opts, 4);
        assert_eq!(
            pre,
            [
                "-w",
                "--exit-on-error",
                "--section=pre-data",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-comments"
            ]
        );
        let post = part_args(RestorePart::PostData, &opts, 4);
        assert!(post.contains(&"--jobs=4".to_string()) && !post.contains(&"--clean".to_string()));
        assert!(
            !part_args(RestorePart::PostData, &opts, 1)
                .iter()
                .any(|a| a.starts_with("--jobs"))
        );
        let data = part_args(RestorePart::Data, &opts, 4);
        assert!(data.contains(&"--section=data".to_string()));
        assert!(!data.iter().any(|a| a.contains("single")));
    }

    #[test]
    fn counts_batch_quoted_tables() {
        let tables = vec![
            ("public".to_string(), "t".to_string()),
            ("we\"ird".to_string(), "x y".to_string()),
        ];
        assert_eq!(
            counts_sql(&tables),
            "SELECT json_build_array((SELECT count(*) FROM ONLY \"public\".\"t\"), (SELECT count(*) FROM ONLY \"we\"\"ird\".\"x y\"));\n"
        );
        let mut asked = Vec::new();
        let counts = count_rows(|sql| {
            asked.push(sql.to_string());
            Ok(vec![if sql == TABLES_SQL {
                r#"[["public","t"],["s","u"]]"#.to_string()
            } else {
                "[3, 0]".to_string()
            }])
        })
        .unwrap();
        assert_eq!(asked.len(), 2);
        assert_eq!((counts[0].rows, counts[1].name.as_str()), (3, "u"));
        assert!(count_rows(|_| Ok(vec!["[[\"a\",\"b\"]]".into()])).is_err());
    }
}
