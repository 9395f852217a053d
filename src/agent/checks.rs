//! The user-written checks of a validation (`sql`, `schema`), run so that a check can read the
//! restored data and nothing else.
//!
//! A check's SQL comes from anyone who may create a RestoreValidation, so it is treated as
//! hostile:
//!
//! - it goes through a **database driver** (`tokio-postgres`, `mysql_async`), never through
//!   `psql` or the `mysql` client, so client meta-commands (`\!`, `\copy`, `\lo_import`,
//!   `\connect`, `system`, `source`) do not exist;
//! - it is **one statement**: PostgreSQL parses it as a prepared statement first (the server
//!   refuses several commands there), MySQL runs it as a prepared statement;
//! - it runs in a **read-only transaction** that a single statement cannot leave, as a
//!   **non-superuser role** made for this validation ([`prepare_role`]) that may only read the
//!   restored databases (no `FILE`, no `pg_read_server_files`, a random name and password);
//! - it runs in a **separate process** ([`run_isolated`] → `dataguardian agent checks`) whose
//!   environment is empty: it holds no S3 credentials and no database superuser password, only
//!   the check role's own password, given on stdin.
//!
//! Its answer travels back as JSON on the child's stdout (read up to [`OUTPUT_LIMIT`]).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::engine::{DbUri, Secret, mysql, postgres, random_hex};
use super::error::{AgentError, Result};
use super::manifest::Engine;
use crate::api::restore_validation::{CheckKind, CheckResult, Expectation, ValidationResult};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The longest a single check may run (a server-side statement timeout as well).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// Most bytes read from the check process's stdout.
pub const OUTPUT_LIMIT: u64 = 1 << 20;
/// Most bytes of a job read on the check process's stdin.
const INPUT_LIMIT: u64 = 4 << 20;
/// Longest `observed` value kept.
const OBSERVED_LIMIT: usize = 256;
/// Longest `message` kept (the API's limit).
const MESSAGE_LIMIT: usize = 1024;

/// One check the child runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum CheckSpec {
    /// One read-only statement whose first value is compared with the expectation.
    Sql {
        /// The statement.
        sql: String,
        /// What it must return.
        expect: Expectation,
    },
    /// Tables (`schema.table` or `table`) that must exist.
    Schema {
        /// The tables.
        tables: Vec<String>,
    },
}

/// A named check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedCheck {
    /// Name shown in status.
    pub name: String,
    /// What to run.
    pub spec: CheckSpec,
    /// The database it runs in (the check's `database`; none: the job's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Everything the check process needs: the check role's connection and the checks.
#[derive(Serialize, Deserialize)]
pub struct CheckJob {
    /// Engine of the sandbox.
    pub engine: Engine,
    /// Sandbox host.
    pub host: String,
    /// Sandbox port.
    pub port: Option<u16>,
    /// The check role.
    pub user: String,
    /// Its password (made for this validation; never logged).
    pub password: String,
    /// Default database of the checks (the restored one; none for an all-databases backup
    /// that restored several: MySQL checks name `database.table`, PostgreSQL `schema` checks
    /// `database.schema.table` and `sql` checks set their `database`).
    pub database: Option<String>,
    /// The databases the check role may read: the only ones a check may name.
    #[serde(default)]
    pub databases: Vec<String>,
    /// The checks, in order.
    pub checks: Vec<NamedCheck>,
}

impl std::fmt::Debug for CheckJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckJob")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("databases", &self.databases)
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

/// `text` cut to `max` bytes (on a character boundary), `...` marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// `schema.table` → (`schema`, `table`); a bare `table` gets `default_schema`.
pub fn split_table(name: &str, default_schema: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => (default_schema.to_string(), name.to_string()),
    }
}

/// How an expectation reads in status (`>= 1`, `<= 5`, `= 42`, `1..5`).
pub fn describe_expectation(e: &Expectation) -> String {
    let mut parts = Vec::new();
    match (e.min, e.max) {
        (Some(a), Some(b)) => parts.push(format!("between {a} and {b}")),
        (Some(a), None) => parts.push(format!(">= {a}")),
        (None, Some(b)) => parts.push(format!("<= {b}")),
        (None, None) => {}
    }
    match &e.equals {
        Some(IntOrString::Int(n)) => parts.push(format!("= {n}")),
        Some(IntOrString::String(s)) => parts.push(format!("= {s:?}")),
        None => {}
    }
    parts.join(" and ")
}

/// Whether `value` meets the expectation (pure). `None` = the query returned no row.
pub fn meets(e: &Expectation, value: Option<&str>) -> std::result::Result<(), String> {
    let Some(value) = value.map(str::trim) else {
        return Err("the query returned no row".into());
    };
    let number = value.parse::<f64>().ok();
    if e.min.is_some() || e.max.is_some() || matches!(e.equals, Some(IntOrString::Int(_))) {
        let Some(n) = number else {
            return Err(format!("{value:?} is not a number"));
        };
        if let Some(min) = e.min
            && n < min as f64
        {
            return Err(format!("{value} is less than {min}"));
        }
        if let Some(max) = e.max
            && n > max as f64
        {
            return Err(format!("{value} is greater than {max}"));
        }
        if let Some(IntOrString::Int(want)) = e.equals
            && n != f64::from(want)
        {
            return Err(format!("{value} is not {want}"));
        }
    }
    if let Some(IntOrString::String(want)) = &e.equals
        && value != want
    {
        return Err(format!("{value:?} is not {want:?}"));
    }
    Ok(())
}

/// The result of a `sql` check from the first value it returned (or its error).
fn sql_result(
    name: String,
    expect: &Expectation,
    value: std::result::Result<Option<String>, String>,
) -> CheckResult {
    let (result, observed, message) = match value {
        Err(e) => (
            ValidationResult::Failed,
            Some("error".to_string()),
            Some(format!("the query failed: {e}")),
        ),
        Ok(value) => match meets(expect, value.as_deref()) {
            Ok(()) => (ValidationResult::Passed, value, None),
            Err(why) => (
                ValidationResult::Failed,
                value.or(Some("no rows".into())),
                Some(why),
            ),
        },
    };
    CheckResult {
        name,
        kind: CheckKind::Sql,
        result,
        expected: Some(describe_expectation(expect)),
        observed: observed.map(|o| truncate(&o, OBSERVED_LIMIT)),
        message: message.map(|m| truncate(&m, MESSAGE_LIMIT)),
    }
}

fn schema_result(name: String, tables: &[String], missing: Vec<String>) -> CheckResult {
    let found = tables.len() - missing.len();
    CheckResult {
        name,
        kind: CheckKind::Schema,
        result: if missing.is_empty() {
            ValidationResult::Passed
        } else {
            ValidationResult::Failed
        },
        expected: Some(format!("{} tables present", tables.len())),
        observed: Some(format!("{found} present")),
        message: (!missing.is_empty())
            .then(|| truncate(&format!("missing: {}", missing.join(", ")), MESSAGE_LIMIT)),
    }
}

/// Where a check runs: its own `database` when the role may read it, else the job's default
/// (`Ok(None)`: no default database). `Err`: why the check cannot run (a database that was not
/// restored, or that the checks may not read).
fn check_database<'a>(
    job: &'a CheckJob,
    check: &'a NamedCheck,
) -> std::result::Result<Option<&'a str>, String> {
    match check.database.as_deref() {
        None => Ok(job.database.as_deref()),
        Some(db) if job.databases.iter().any(|d| d == db) => Ok(Some(db)),
        Some(db) => Err(format!(
            "database {db:?} is not a restored database the checks may read (they may read: {})",
            listed(&job.databases)
        )),
    }
}

/// Databases as a list for a message.
fn listed(databases: &[String]) -> String {
    if databases.is_empty() {
        "none".into()
    } else {
        databases.join(", ")
    }
}

/// A check that did not run, failed with `why`.
fn not_run(check: &NamedCheck, why: String) -> CheckResult {
    let (kind, expected) = match &check.spec {
        CheckSpec::Sql { expect, .. } => (CheckKind::Sql, describe_expectation(expect)),
        CheckSpec::Schema { tables } => (
            CheckKind::Schema,
            format!("{} tables present", tables.len()),
        ),
    };
    CheckResult {
        name: check.name.clone(),
        kind,
        result: ValidationResult::Failed,
        expected: Some(expected),
        observed: Some("not run".into()),
        message: Some(truncate(&why, MESSAGE_LIMIT)),
    }
}

/// Where a PostgreSQL `schema` check looks a name up (pure): in `default_db` as `schema.table`
/// or `table` (schema `public`); without one (all databases) the first dot separates the
/// database: `database.schema.table` or `database.table`. `Err`: why the name names no table.
pub fn pg_table_ref(
    name: &str,
    default_db: Option<&str>,
    databases: &[String],
) -> std::result::Result<(String, String, String), String> {
    let (db, rest) = match default_db {
        Some(db) => (db, name),
        None => match name.split_once('.') {
            Some((db, rest)) if databases.iter().any(|d| d == db) => (db, rest),
            Some((db, _)) => return Err(format!("{name} (no restored database {db:?})")),
            None => return Err(format!("{name} (name it database.schema.table)")),
        },
    };
    let (schema, table) = split_table(rest, "public");
    Ok((db.to_string(), schema, table))
}

/// Create the check role in the sandbox (as its superuser, with fixed SQL: nothing of the
/// user's reaches it): LOGIN, no superuser, no role creation, no file access; it may read
/// `databases` and nothing else. Returns its connection, whose default database (where the
/// checks run, and the schema of a bare table name) is `default_database`.
pub fn prepare_role(
    engine: Engine,
    admin: &DbUri,
    databases: &[String],
    default_database: Option<String>,
) -> Result<DbUri> {
    let suffix = random_hex()?;
    let role = format!("dataguardian_check_{}", &suffix[..12]);
    let password = random_hex()?;
    match engine {
        Engine::Postgres => {
            // Role name and password are hex and made here: safe to spell inline, and the
            // password travels on psql's stdin, not its argv.
            postgres::query(
                admin,
                postgres::MAINTENANCE_DB,
                &format!(
                    "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                     BYPASSRLS INHERIT PASSWORD '{password}';\n\
                     ALTER ROLE {role} SET default_transaction_read_only = on;\n"
                ),
                &[],
                AgentError::Target,
            )?;
            for db in databases {
                postgres::query(
                    admin,
                    db,
                    &format!(
                        "GRANT CONNECT ON DATABASE :\"db\" TO {role};\n\
                         DO $dataguardian$ DECLARE s name; BEGIN \
                         FOR s IN SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
                         AND nspname NOT LIKE 'pg\\_%' LOOP \
                         EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', s); \
                         EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO {role}', s); \
                         EXECUTE format('GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO {role}', s); \
                         END LOOP; END $dataguardian$;\n"
                    ),
                    &[("db", db)],
                    AgentError::Target,
                )?;
            }
        }
        Engine::Mysql => {
            let mut sql = format!("CREATE USER '{role}'@'%' IDENTIFIED BY '{password}';");
            for db in databases {
                sql.push_str(&format!(
                    " GRANT SELECT, SHOW VIEW, EXECUTE ON {}.* TO '{role}'@'%';",
                    mysql::quote_ident(db)
                ));
            }
            mysql::query(admin, None, &sql, AgentError::Target)?;
        }
    }
    Ok(DbUri {
        user: Some(role),
        password: Some(Secret(password)),
        database: default_database,
        params: Vec::new(),
        ..admin.clone()
    })
}

/// Run the checks in a child process with an empty environment (see the module docs). The
/// child is this program (`agent checks`); it is killed when it outlives every check's
/// timeout.
pub fn run_isolated(
    engine: Engine,
    role: &DbUri,
    databases: Vec<String>,
    checks: Vec<NamedCheck>,
) -> Result<Vec<CheckResult>> {
    let exe = std::env::current_exe()
        .map_err(|e| AgentError::Config(format!("cannot find the agent's own program: {e}")))?;
    let count = checks.len();
    let job = CheckJob {
        engine,
        host: role.host.clone(),
        port: role.port,
        user: role.user.clone().unwrap_or_default(),
        password: role
            .password
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_default(),
        database: role.database.clone(),
        databases,
        checks,
    };
    let input = serde_json::to_vec(&job)
        .map_err(|e| AgentError::Config(format!("cannot encode the checks: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["agent", "checks"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(format) = std::env::var_os(crate::contract::LOG_FORMAT_ENV) {
        cmd.env(crate::contract::LOG_FORMAT_ENV, format);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| AgentError::Config(format!("cannot start the check process: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.take(OUTPUT_LIMIT).read_to_end(&mut out);
        read.map(|_| out)
    });
    let deadline = std::time::Instant::now() + CHECK_TIMEOUT * (count as u32 + 1);
    let status = loop {
        match child.try_wait().map_err(AgentError::Io)? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AgentError::Target(format!(
                    "the checks did not finish within {}s",
                    (CHECK_TIMEOUT * (count as u32 + 1)).as_secs()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = writer.join();
    let out = reader
        .join()
        .map_err(|_| AgentError::Io(std::io::Error::other("the check reader failed")))?
        .map_err(AgentError::Io)?;
    if !status.success() {
        return Err(AgentError::Target(format!(
            "the check process failed ({status})"
        )));
    }
    serde_json::from_slice(&out)
        .map_err(|e| AgentError::Target(format!("the check process answered badly: {e}")))
}

/// `agent checks`: read a [`CheckJob`] on stdin, print the results as JSON on stdout.
pub async fn serve_stdio() -> Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(INPUT_LIMIT)
        .read_to_end(&mut input)
        .map_err(AgentError::Io)?;
    let job: CheckJob = serde_json::from_slice(&input)
        .map_err(|e| AgentError::Config(format!("the check job is not valid JSON: {e}")))?;
    let results = run_in_process(&job).await?;
    let out = serde_json::to_vec(&results)
        .map_err(|e| AgentError::Config(format!("cannot encode the results: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).map_err(AgentError::Io)?;
    stdout.flush().map_err(AgentError::Io)
}

/// Run the checks of `job` over the driver (in this process: [`run_isolated`] is the way in).
pub async fn run_in_process(job: &CheckJob) -> Result<Vec<CheckResult>> {
    match job.engine {
        Engine::Postgres => pg::run(job).await,
        Engine::Mysql => my::run(job).await,
    }
}

/// A driver error as text; for PostgreSQL the server's own message (`ERROR: relation … does
/// not exist`), not just "db error".
fn driver_error(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

mod pg {
    use super::*;
    use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

    /// One connection as the check role, to `database`, with the statement timeout set.
    async fn connect(
        job: &CheckJob,
        database: &str,
    ) -> Result<(Client, tokio::task::JoinHandle<()>)> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&job.host)
            .user(&job.user)
            .password(job.password.as_bytes())
            .dbname(database)
            .application_name("dataguardian-checks")
            .connect_timeout(Duration::from_secs(15));
        if let Some(p) = job.port {
            config.port(p);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            AgentError::Target(format!(
                "cannot connect as the check role: {}",
                driver_error(e)
            ))
        })?;
        let conn = tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                CHECK_TIMEOUT.as_millis()
            ))
            .await
            .map_err(|e| AgentError::Target(driver_error(e)))?;
        Ok((client, conn))
    }

    /// The connections of a job: one per database, opened when a check first needs it.
    struct Connections<'a> {
        job: &'a CheckJob,
        open: Vec<(String, Client, tokio::task::JoinHandle<()>)>,
    }

    impl Connections<'_> {
        async fn to(&mut self, database: &str) -> Result<&Client> {
            let i = match self.open.iter().position(|(db, ..)| db == database) {
                Some(i) => i,
                None => {
                    let (client, conn) = connect(self.job, database).await?;
                    self.open.push((database.to_string(), client, conn));
                    self.open.len() - 1
                }
            };
            Ok(&self.open[i].1)
        }

        async fn close(self) {
            for (_, client, conn) in self.open {
                drop(client);
                let _ = conn.await;
            }
        }
    }

    pub(super) async fn run(job: &CheckJob) -> Result<Vec<CheckResult>> {
        let mut conns = Connections {
            job,
            open: Vec::new(),
        };
        let mut results = Vec::new();
        for check in &job.checks {
            let database = match check_database(job, check) {
                Ok(db) => db,
                Err(why) => {
                    results.push(not_run(check, why));
                    continue;
                }
            };
            let result = match &check.spec {
                CheckSpec::Sql { sql, expect } => {
                    let Some(database) = database else {
                        results.push(not_run(
                            check,
                            format!(
                                "several databases were restored: set the check's database to \
                                 the one it runs in ({})",
                                listed(&job.databases)
                            ),
                        ));
                        continue;
                    };
                    let client = conns.to(database).await?;
                    let value = tokio::time::timeout(CHECK_TIMEOUT, first_value(client, sql))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                    sql_result(check.name.clone(), expect, value)
                }
                CheckSpec::Schema { tables } => {
                    let mut missing = Vec::new();
                    for t in tables {
                        let (db, schema, table) = match pg_table_ref(t, database, &job.databases) {
                            Ok(r) => r,
                            Err(why) => {
                                missing.push(why);
                                continue;
                            }
                        };
                        let row = conns
                            .to(&db)
                            .await?
                            .query_one(
                                "SELECT count(*) FROM pg_catalog.pg_class c \
                                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                                 WHERE n.nspname = $1 AND c.relname = $2 \
                                 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                                &[&schema, &table],
                            )
                            .await
                            .map_err(|e| AgentError::Target(driver_error(e)))?;
                        if row.get::<_, i64>(0) == 0 {
                            missing.push(t.clone());
                        }
                    }
                    schema_result(check.name.clone(), tables, missing)
                }
            };
            results.push(result);
        }
        conns.close().await;
        Ok(results)
    }

    /// The first value of the first row of `sql`, run alone in a read-only transaction.
    async fn first_value(
        client: &Client,
        sql: &str,
    ) -> std::result::Result<Option<String>, String> {
        // The `SELECT 1` takes the snapshot: from then on `SET transaction_read_only = off`
        // is refused ("must be called before any query").
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
            .await
            .map_err(driver_error)?;
        let value = async {
            // Parsing it as a prepared statement proves it is exactly one statement (the
            // server refuses several); only then does it run, as that one statement, with
            // results in text form.
            client.prepare(sql).await.map_err(driver_error)?;
            let messages = client.simple_query(sql).await.map_err(driver_error)?;
            Ok(messages.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                _ => None,
            }))
        }
        .await;
        let _ = client.batch_execute("ROLLBACK").await;
        match value {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

mod my {
    use super::*;
    use mysql_async::prelude::Queryable;
    use mysql_async::{Conn, OptsBuilder, Row, Value};

    /// One connection as the check role, with `database` as its default database.
    async fn connect(job: &CheckJob, database: Option<&str>) -> Result<Conn> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(job.host.clone())
            .tcp_port(job.port.unwrap_or(3306))
            .user(Some(job.user.clone()))
            .pass(Some(job.password.clone()))
            .db_name(database.map(str::to_string))
            .prefer_socket(false);
        let mut conn = tokio::time::timeout(Duration::from_secs(15), Conn::new(opts))
            .await
            .map_err(|_| AgentError::Target("cannot connect as the check role: timed out".into()))?
            .map_err(|e| {
                AgentError::Target(format!(
                    "cannot connect as the check role: {}",
                    driver_error(e)
                ))
            })?;
        // MariaDB's statement timeout; MySQL has another name for it (ignored there, the
        // client-side timeout below still applies).
        let _ = conn
            .query_drop(format!(
                "SET SESSION max_statement_time = {}",
                CHECK_TIMEOUT.as_secs()
            ))
            .await;
        Ok(conn)
    }

    pub(super) async fn run(job: &CheckJob) -> Result<Vec<CheckResult>> {
        // One connection per default database, opened when a check first needs it.
        let mut open: Vec<(Option<String>, Conn)> = Vec::new();
        let mut results = Vec::new();
        for check in &job.checks {
            let database = match check_database(job, check) {
                Ok(db) => db,
                Err(why) => {
                    results.push(not_run(check, why));
                    continue;
                }
            };
            let i = match open.iter().position(|(db, _)| db.as_deref() == database) {
                Some(i) => i,
                None => {
                    let conn = connect(job, database).await?;
                    open.push((database.map(str::to_string), conn));
                    open.len() - 1
                }
            };
            let conn = &mut open[i].1;
            let result = match &check.spec {
                CheckSpec::Sql { sql, expect } => {
                    let value = tokio::time::timeout(CHECK_TIMEOUT, first_value(conn, sql))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                    sql_result(check.name.clone(), expect, value)
                }
                CheckSpec::Schema { tables } => {
                    let mut missing = Vec::new();
                    for t in tables {
                        if database.is_none() && !t.contains('.') {
                            // No default database (all databases): a bare name names nothing.
                            missing.push(format!("{t} (name it database.table)"));
                            continue;
                        }
                        let (schema, table) = split_table(t, database.unwrap_or_default());
                        let n: Option<u64> = conn
                            .exec_first(
                                "SELECT COUNT(*) FROM information_schema.tables \
                                 WHERE table_schema = ? AND table_name = ?",
                                (schema, table),
                            )
                            .await
                            .map_err(|e| AgentError::Target(driver_error(e)))?;
                        if n.unwrap_or(0) == 0 {
                            missing.push(t.clone());
                        }
                    }
                    schema_result(check.name.clone(), tables, missing)
                }
            };
            results.push(result);
        }
        for (_, conn) in open {
            let _ = conn.disconnect().await;
        }
        Ok(results)
    }

    /// The first value of the first row of `sql`, a prepared statement (one statement only)
    /// in a read-only transaction.
    async fn first_value(
        conn: &mut Conn,
        sql: &str,
    ) -> std::result::Result<Option<String>, String> {
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(driver_error)?;
        let row: std::result::Result<Option<Row>, String> =
            conn.exec_first(sql, ()).await.map_err(driver_error);
        let _ = conn.query_drop("ROLLBACK").await;
        let Some(mut row) = row? else {
            return Ok(None);
        };
        let value: Option<Value> = row.take(0);
        Ok(value.and_then(text))
    }

    /// A value as the MySQL client prints it; `NULL` is no value.
    fn text(v: Value) -> Option<String> {
        Some(match v {
            Value::NULL => return None,
            Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Date(y, mo, d, 0, 0, 0, 0) => format!("{y:04}-{mo:02}-{d:02}"),
            Value::Date(y, mo, d, h, mi, s, 0) => {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
            }
            Value::Date(y, mo, d, h, mi, s, us) => {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
            }
            Value::Time(neg, days, h, mi, s, us) => {
                let sign = if neg { "-" } else { "" };
                let hours = u32::from(h) + days * 24;
                if us == 0 {
                    format!("{sign}{hours:02}:{mi:02}:{s:02}")
                } else {
                    format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_never_prints_its_password() {
        let job = CheckJob {
            engine: Engine::Postgres,
            host: "127.0.0.1".into(),
            port: Some(5432),
            user: "dataguardian_check_x".into(),
            password: "s3cr3t-value".into(),
            database: Some("shop".into()),
            databases: vec!["shop".into()],
            checks: Vec::new(),
        };
        assert!(!format!("{job:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn postgres_schema_names_take_the_database_first_without_a_default() {
        let dbs = ["alpha", "beta", "postgres"].map(String::from);
        let r = |name, default| pg_table_ref(name, default, &dbs);
        let ok = |db: &str, schema: &str, table: &str| {
            Ok((db.to_string(), schema.to_string(), table.to_string()))
        };
        // One database (or the check's `database`): `schema.table` or `table` in it.
        assert_eq!(
            r("sales.orders", Some("shop")),
            ok("shop", "sales", "orders")
        );
        assert_eq!(r("orders", Some("shop")), ok("shop", "public", "orders"));
        // All databases: the first dot separates the database.
        assert_eq!(
            r("alpha.sales.orders", None),
            ok("alpha", "sales", "orders")
        );
        assert_eq!(r("alpha.orders", None), ok("alpha", "public", "orders"));
        assert_eq!(
            r("beta.archive.dotted.name", None),
            ok("beta", "archive", "dotted.name")
        );
        assert_eq!(
            r("gamma.public.t", None),
            Err("gamma.public.t (no restored database \"gamma\")".into())
        );
        assert_eq!(
            r("orders", None),
            Err("orders (name it database.schema.table)".into())
        );
    }

    #[test]
    fn a_check_runs_in_its_database_only_when_the_role_may_read_it() {
        let job = |database: Option<&str>| CheckJob {
            engine: Engine::Postgres,
            host: "127.0.0.1".into(),
            port: None,
            user: "u".into(),
            password: "p".into(),
            database: database.map(str::to_string),
            databases: vec!["alpha".into(), "beta".into()],
            checks: Vec::new(),
        };
        let check = |database: Option<&str>| NamedCheck {
            name: "c".into(),
            spec: CheckSpec::Schema { tables: vec![] },
            database: database.map(str::to_string),
        };
        assert_eq!(check_database(&job(None), &check(None)), Ok(None));
        assert_eq!(
            check_database(&job(Some("alpha")), &check(None)),
            Ok(Some("alpha"))
        );
        assert_eq!(
            check_database(&job(None), &check(Some("beta"))),
            Ok(Some("beta"))
        );
        let err = check_database(&job(None), &check(Some("mysql"))).unwrap_err();
        assert!(
            err.contains("\"mysql\"") && err.contains("alpha, beta"),
            "{err}"
        );
        let failed = not_run(&check(Some("mysql")), err);
        assert_eq!(failed.result, ValidationResult::Failed);
        assert_eq!(failed.kind, CheckKind::Schema);
        // A tenant's value never reaches a connection unless it is exactly a restored
        // database: no connection-string options, no prefix, no other server's database.
        for hostile in [
            "alpha host=169.254.169.254",
            "alpha' OR '1'='1",
            "alpha;\\! id",
            "ALPHA",
            "alph",
            "",
            "postgres",
            "other-namespace-db",
        ] {
            assert!(
                check_database(&job(None), &check(Some(hostile))).is_err(),
                "{hostile:?} accepted"
            );
        }
    }

    #[test]
    fn random_names_differ() {
        assert_ne!(random_hex().unwrap(), random_hex().unwrap());
        assert_eq!(random_hex().unwrap().len(), 32);
    }
}
