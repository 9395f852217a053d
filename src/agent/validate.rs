//! `agent validate`: prove that a backup restores. Waits for a sandbox database to accept
//! connections, restores the artifact into it (the same code path as `agent restore`), measures
//! how long the restore took (the real RTO), then runs the checks:
//!
//! - `rowCounts`: every table's exact row count against the counts recorded in the artifact's
//!   manifest at backup time (taken in the same snapshot as the dump);
//! - `sql`: one statement returning one value, compared with `min`/`max`/`equals`; it runs
//!   through a database driver as a read-only role in a process that holds no Secrets (see
//!   [`super::checks`]), and an error fails the check with the error as the observed value;
//! - `schema`: tables that must exist.
//!
//! The verdict is a JSON summary on stdout and in the termination log (at most 4096 bytes:
//! per-check detail is shortened first, the result never). Exit codes: 0 = Passed,
//! 1 = Failed (a verdict about the backup), other codes = the validation could not be carried
//! out (the agent's error categories).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::blocking;
use super::checks::{self, CheckSpec, NamedCheck, truncate};
pub use super::checks::{describe_expectation, meets, split_table};
use super::engine::{DbUri, mysql, postgres};
use super::error::{AgentError, Result};
use super::manifest::{ArtifactKind, Engine, Manifest, TableCount};
use super::restore::{self, RestoreRequest};
use super::storage::{Location, S3Settings, Store};
use crate::api::restore_validation::{
    CheckKind, CheckResult, RowCountsCheck, ValidationCheck, ValidationResult,
};
use crate::contract::{Summary, TERMINATION_LIMIT, ValidateSummary};
use crate::telemetry::otel::in_span;

/// Mismatching tables listed in a row-count check's message.
const MAX_LISTED: usize = 10;
/// Longest `message` of a check result (the API's limit).
const MESSAGE_LIMIT: usize = 1024;
/// The MySQL/MariaDB database of the accounts and grants: an all-databases backup restores it,
/// its row counts are compared, but the check role may not read it (password hashes).
const ACCOUNTS_DATABASE: &str = "mysql";

/// Everything a validation needs.
#[derive(Debug, Clone)]
pub struct ValidateRequest {
    /// Sandbox engine (must match the backup).
    pub engine: Engine,
    /// Sandbox connection (a superuser of the throwaway server).
    pub uri: DbUri,
    /// Database to restore a single-database backup into (default: the backup's own name).
    pub database: Option<String>,
    /// The manifest.
    pub from: Location,
    /// What the operator recorded about the backup; a manifest that differs is refused.
    pub pin: crate::contract::ArtifactPin,
    /// age identity file.
    pub identity_file: Option<PathBuf>,
    /// KMS settings for a data key wrapped by KMS.
    pub kms: Option<crate::agent::kms::KmsSettings>,
    /// Checks to run (empty = one rowCounts check).
    pub checks: Vec<ValidationCheck>,
    /// S3 settings.
    pub s3: S3Settings,
    /// How long to wait for the sandbox.
    pub wait: Duration,
    /// Interval of progress log lines.
    pub progress_interval: Duration,
}

/// The verdict of a validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidateOutcome {
    /// Passed when the restore and every check passed.
    pub result: ValidationResult,
    /// `RestoreFailed`, `ChecksumMismatch` or `CheckFailed` when Failed.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: String,
    /// How long the restore took (absent when it failed).
    pub restore_duration_seconds: Option<f64>,
    /// Per-check results.
    pub checks: Vec<CheckResult>,
    /// Engine of the backup.
    pub engine: Engine,
    /// Server version recorded in the backup.
    pub server_version: String,
    /// Databases restored into the sandbox.
    pub databases: Vec<String>,
    /// Wall time of the whole validation.
    pub duration_seconds: f64,
}

/// Parse the checks JSON; an empty list means one rowCounts check.
pub fn parse_checks(json: Option<&str>) -> Result<Vec<ValidationCheck>> {
    let checks: Vec<ValidationCheck> = match json.map(str::trim).filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| AgentError::Config(format!("the checks are not valid JSON: {e}")))?,
    };
    for (i, c) in checks.iter().enumerate() {
        let set = [c.row_counts.is_some(), c.sql.is_some(), c.schema.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            return Err(AgentError::Config(format!(
                "check {i} must set exactly one of rowCounts, sql or schema"
            )));
        }
        if c.sql.is_some() != c.expect.is_some() {
            return Err(AgentError::Config(format!(
                "check {i}: sql and expect go together"
            )));
        }
        if c.database.is_some() && c.row_counts.is_some() {
            return Err(AgentError::Config(format!(
                "check {i}: database applies to sql and schema checks"
            )));
        }
    }
    if checks.is_empty() {
        return Ok(vec![ValidationCheck {
            name: Some("rowCounts".into()),
            row_counts: Some(RowCountsCheck::default()),
            sql: None,
            expect: None,
            schema: None,
            database: None,
        }]);
    }
    Ok(checks)
}

/// A PostgreSQL all-databases `rowCounts` filter name as the comparison spells it (pure): there
/// a table's schema is `database/schema`; a name whose part before the first dot is a restored
/// database (`alpha.sales.orders`, `alpha.orders` for schema `public`) is the same table as
/// `alpha/sales.orders`. Other names are unchanged.
pub fn pg_all_databases_filter(name: &str, databases: &[&str]) -> String {
    match name.split_once('.') {
        Some((db, rest)) if !name.contains('/') && databases.contains(&db) => {
            let (schema, table) = split_table(rest, "public");
            format!("{db}/{schema}.{table}")
        }
        _ => name.to_string(),
    }
}

fn table_matches(filter: &[String], t: &TableCount) -> bool {
    filter.is_empty()
        || filter
            .iter()
            .any(|f| *f == t.name || *f == format!("{}.{}", t.schema, t.name))
}

/// Compare the recorded row counts with the observed ones (pure).
pub fn compare_row_counts(
    name: String,
    filter: &[String],
    expected: &[TableCount],
    observed: &[TableCount],
) -> CheckResult {
    let wanted: Vec<&TableCount> = expected
        .iter()
        .filter(|t| table_matches(filter, t))
        .collect();
    let mut problems = Vec::new();
    let (mut seen_tables, mut seen_rows) = (0usize, 0u64);
    for t in &wanted {
        match observed
            .iter()
            .find(|o| o.schema == t.schema && o.name == t.name)
        {
            None => problems.push(format!("{}.{}: missing", t.schema, t.name)),
            Some(o) => {
                seen_tables += 1;
                seen_rows += o.rows;
                if o.rows != t.rows {
                    problems.push(format!(
                        "{}.{}: expected {}, observed {}",
                        t.schema, t.name, t.rows, o.rows
                    ));
                }
            }
        }
    }
    for f in filter {
        if !expected
            .iter()
            .any(|t| table_matches(std::slice::from_ref(f), t))
        {
            problems.push(format!("{f}: not in the backup's manifest"));
        }
    }
    let expected_rows: u64 = wanted.iter().map(|t| t.rows).sum();
    let passed = problems.is_empty();
    let message = if passed {
        format!(
            "{} tables match the counts recorded at backup time",
            wanted.len()
        )
    } else {
        let mut m = problems
            .iter()
            .take(MAX_LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if problems.len() > MAX_LISTED {
            m.push_str(&format!("; and {} more", problems.len() - MAX_LISTED));
        }
        m
    };
    CheckResult {
        name,
        kind: CheckKind::RowCounts,
        result: if passed {
            ValidationResult::Passed
        } else {
            ValidationResult::Failed
        },
        expected: Some(format!("{} tables, {expected_rows} rows", wanted.len())),
        observed: Some(format!("{seen_tables} tables, {seen_rows} rows")),
        message: Some(truncate(&message, MESSAGE_LIMIT)),
    }
}

/// The row counts recorded in the manifest for each restored database, with MySQL schemas
/// renamed when a single-database backup was restored under another name.
fn expected_counts(
    manifest: &Manifest,
    target_db: Option<&str>,
) -> Vec<(Option<String>, Vec<TableCount>)> {
    manifest
        .artifacts
        .iter()
        // Globals hold no tables; a tableData artifact's tables are counted in its database's
        // artifact already.
        .filter(|a| matches!(a.kind, ArtifactKind::Database | ArtifactKind::AllDatabases))
        .map(|a| {
            let db = if manifest.all_databases {
                a.database.clone()
            } else {
                target_db.map(str::to_string)
            };
            let tables = a
                .tables
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    if manifest.engine == Engine::Mysql
                        && !manifest.all_databases
                        && let Some(db) = &db
                    {
                        t.schema = db.clone();
                    }
                    t
                })
                .collect();
            (db, tables)
        })
        .collect()
}

/// The databases a MySQL all-databases restore put into the sandbox (pure): its SQL creates and
/// names them, so the restore itself reports none. They are the sandbox's user databases that
/// did not exist `before` it, and those the manifest counts tables of (such as `mysql`, which
/// every server has). Sorted.
pub fn restored_all_databases(
    expected: &[(Option<String>, Vec<TableCount>)],
    before: &[String],
    after: Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = after
        .into_iter()
        .filter(|db| {
            !before.contains(db)
                || expected
                    .iter()
                    .flat_map(|(_, tables)| tables)
                    .any(|t| t.schema == *db)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn observed_counts(
    engine: Engine,
    uri: &DbUri,
    db: Option<&str>,
    expected: &[TableCount],
) -> Result<Vec<TableCount>> {
    match (engine, db) {
        (Engine::Postgres, Some(db)) => postgres::row_counts(uri, db),
        (Engine::Postgres, None) => Ok(Vec::new()),
        (Engine::Mysql, Some(db)) => mysql::row_counts(uri, db),
        (Engine::Mysql, None) => {
            // One stream of every database: count each schema the manifest names.
            let mut schemas: Vec<&str> = expected.iter().map(|t| t.schema.as_str()).collect();
            schemas.sort_unstable();
            schemas.dedup();
            let mut out = Vec::new();
            for s in schemas {
                if mysql::database_exists(uri, s)? {
                    out.extend(mysql::row_counts(uri, s)?);
                }
            }
            Ok(out)
        }
    }
}

/// Wait until the sandbox answers `SELECT 1`.
async fn wait_for_sandbox(engine: Engine, uri: &DbUri, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let u = uri.clone();
        let res = blocking(move || {
            Ok(match engine {
                Engine::Postgres => postgres::query(
                    &u,
                    u.database.as_deref().unwrap_or(postgres::MAINTENANCE_DB),
                    "SELECT 1;\n",
                    &[],
                    AgentError::Target,
                ),
                Engine::Mysql => mysql::query(&u, None, "SELECT 1", AgentError::Target),
            })
        })
        .await?;
        match res {
            Ok(_) => return Ok(()),
            Err(AgentError::Config(m)) => return Err(AgentError::Config(m)),
            Err(e) if Instant::now() >= deadline => {
                return Err(AgentError::Target(format!(
                    "the sandbox did not accept connections within {}s: {e}",
                    wait.as_secs()
                )));
            }
            Err(e) => {
                tracing::info!(error = %e, "waiting for the sandbox database");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Run a validation end to end. `Err` means it could not be carried out (sandbox down,
/// manifest unreadable, bad configuration); a backup that does not restore or does not pass
/// its checks is an `Ok` outcome with result Failed.
/// A span for one check: its name and kind (never its SQL, expectation or observed values).
fn check_span(name: &str, kind: &'static str) -> tracing::Span {
    tracing::info_span!(
        "check",
        check.name = %name,
        check.kind = kind,
        check.result = tracing::field::Empty,
    )
}

/// Records a check's verdict on its span (a failed check is an error status).
fn record_check(span: &tracing::Span, result: &CheckResult) {
    let passed = result.result == ValidationResult::Passed;
    span.record("check.result", if passed { "Passed" } else { "Failed" });
    if !passed {
        crate::telemetry::otel::fail(span, &"the check failed");
    }
}

pub async fn run(req: ValidateRequest) -> Result<ValidateOutcome> {
    let clock = Instant::now();
    in_span(
        tracing::info_span!("connect", db.system.name = super::db_system(req.engine)),
        wait_for_sandbox(req.engine, &req.uri, req.wait),
    )
    .await?;
    let store = Store::open(&req.from, &req.s3).await?;
    let manifest = in_span(
        tracing::info_span!("manifest"),
        restore::load_manifest(&store, &req.from, &req.pin),
    )
    .await?;
    drop(store);
    if manifest.engine != req.engine {
        return Err(AgentError::Config(format!(
            "the backup is a {} backup; the sandbox is {}",
            manifest.engine, req.engine
        )));
    }
    let target_db = if manifest.all_databases {
        None
    } else {
        Some(
            req.database
                .clone()
                .or_else(|| manifest.database.clone())
                .unwrap_or_else(|| "restored".into()),
        )
    };
    // MySQL all databases: the sandbox's databases before the restore, to tell which ones it
    // restored (see `restored_all_databases`).
    let mysql_all = req.engine == Engine::Mysql && manifest.all_databases;
    let before = if mysql_all {
        let uri = req.uri.clone();
        blocking(move || mysql::user_databases(&uri, AgentError::Target)).await?
    } else {
        Vec::new()
    };
    let restore_req = RestoreRequest {
        engine: req.engine,
        uri: req.uri.clone(),
        database: target_db.clone(),
        from: req.from.clone(),
        pin: req.pin.clone(),
        identity_file: req.identity_file.clone(),
        kms: req.kms.clone(),
        create_database: true,
        clean: false,
        overwrite: false,
        verify_first: false,
        // The sandbox has none of the source's roles.
        no_owner: req.engine == Engine::Postgres,
        single_transaction: false,
        restore_args: Vec::new(),
        s3: req.s3.clone(),
        progress_interval: req.progress_interval,
        // A throwaway sandbox: nothing to protect, and the measured RTO stays the plain
        // restore's.
        staging: crate::agent::staging::Staging::InPlace,
        terminate_sessions: false,
        keep_previous: false,
        masking: None,
        // A parallel-layout backup restores in parallel as far as the validation pod's CPUs go.
        parallelism: crate::agent::backup::default_parallelism(),
    };
    let names: Vec<String> = req
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| c.display_name(i))
        .collect();
    let restore_clock = Instant::now();
    let restored = in_span(tracing::info_span!("restore"), restore::run(restore_req)).await;
    let restore_seconds = (restore_clock.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    let base = |result, reason: Option<&str>, message: String, checks, rto, dbs| ValidateOutcome {
        result,
        reason: reason.map(str::to_string),
        message,
        restore_duration_seconds: rto,
        checks,
        engine: manifest.engine,
        server_version: manifest.server_version.clone(),
        databases: dbs,
        duration_seconds: (clock.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    };
    let outcome = match restored {
        Ok(o) => o,
        Err(e @ (AgentError::Integrity(_) | AgentError::Crypto(_) | AgentError::Target(_))) => {
            let reason = if matches!(e, AgentError::Integrity(_)) {
                "ChecksumMismatch"
            } else {
                "RestoreFailed"
            };
            tracing::warn!(category = e.category(), error = %e, "the backup did not restore");
            let checks = req
                .checks
                .iter()
                .zip(&names)
                .map(|(c, n)| CheckResult {
                    name: n.clone(),
                    kind: c.kind(),
                    result: ValidationResult::Failed,
                    expected: None,
                    observed: None,
                    message: Some("not run: the restore failed".into()),
                })
                .collect();
            return Ok(base(
                ValidationResult::Failed,
                Some(reason),
                truncate(&format!("the backup did not restore: {e}"), MESSAGE_LIMIT),
                checks,
                None,
                Vec::new(),
            ));
        }
        Err(e) => return Err(e),
    };
    let expected = expected_counts(&manifest, target_db.as_deref());
    let restored_dbs = if mysql_all {
        let uri = req.uri.clone();
        let after = blocking(move || mysql::user_databases(&uri, AgentError::Target)).await?;
        restored_all_databases(&expected, &before, after)
    } else {
        outcome.databases.clone()
    };
    tracing::info!(seconds = restore_seconds, databases = ?restored_dbs, "restored into the sandbox");
    // Row counts run here (fixed SQL, as the sandbox's superuser); the user-written checks run
    // apart, as a read-only role in a process without Secrets (see `checks`).
    let mut slots: Vec<Option<CheckResult>> = Vec::with_capacity(req.checks.len());
    let mut user_checks = Vec::new();
    let mut user_slots = Vec::new();
    for (check, name) in req.checks.iter().zip(names) {
        if let Some(rc) = &check.row_counts {
            let (engine, uri) = (req.engine, req.uri.clone());
            let (rc, expected) = (rc.clone(), expected.clone());
            let span = check_span(&name, "rowCounts");
            let result = in_span(
                span.clone(),
                blocking(move || -> Result<CheckResult> {
                    let several_pg = engine == Engine::Postgres && expected.len() > 1;
                    let filter: Vec<String> = if several_pg {
                        let dbs: Vec<&str> = expected
                            .iter()
                            .filter_map(|(db, _)| db.as_deref())
                            .collect();
                        rc.tables
                            .iter()
                            .map(|f| pg_all_databases_filter(f, &dbs))
                            .collect()
                    } else {
                        rc.tables.clone()
                    };
                    let mut exp_all = Vec::new();
                    let mut obs_all = Vec::new();
                    for (db, tables) in &expected {
                        let mut obs = observed_counts(engine, &uri, db.as_deref(), tables)?;
                        if let Some(db) = db
                            && several_pg
                        {
                            // Several databases: qualify the schema with the database.
                            obs.iter_mut()
                                .for_each(|t| t.schema = format!("{db}/{}", t.schema));
                            exp_all.extend(tables.iter().cloned().map(|mut t| {
                                t.schema = format!("{db}/{}", t.schema);
                                t
                            }));
                        } else {
                            exp_all.extend(tables.iter().cloned());
                        }
                        obs_all.extend(obs);
                    }
                    Ok(compare_row_counts(name, &filter, &exp_all, &obs_all))
                }),
            )
            .await?;
            record_check(&span, &result);
            slots.push(Some(result));
            continue;
        }
        let spec = if let (Some(sql), Some(expect)) = (&check.sql, &check.expect) {
            CheckSpec::Sql {
                sql: sql.clone(),
                expect: expect.clone(),
            }
        } else if let Some(schema) = &check.schema {
            CheckSpec::Schema {
                tables: schema.tables.clone(),
            }
        } else {
            return Err(AgentError::Config(format!("check {name} sets no kind")));
        };
        user_slots.push(slots.len());
        slots.push(None);
        user_checks.push(NamedCheck {
            name,
            spec,
            database: check.database.clone(),
        });
    }
    if !user_checks.is_empty() {
        let engine = req.engine;
        let uri = req.uri.clone();
        // The check role reads the restored databases. MySQL all databases: not the accounts,
        // and no default database (tables are named `database.table`). PostgreSQL all
        // databases: no default database when several were restored (a `schema` check names
        // `database.schema.table`, a `sql` check sets its `database`).
        let (dbs, default_db) = if mysql_all {
            let dbs: Vec<String> = restored_dbs
                .iter()
                .filter(|d| *d != ACCOUNTS_DATABASE)
                .cloned()
                .collect();
            (dbs, None)
        } else if manifest.all_databases && restored_dbs.len() > 1 {
            (restored_dbs.clone(), None)
        } else {
            (restored_dbs.clone(), restored_dbs.first().cloned())
        };
        let names: Vec<(String, &'static str)> = user_checks
            .iter()
            .map(|c| {
                let kind = match c.spec {
                    CheckSpec::Sql { .. } => "sql",
                    CheckSpec::Schema { .. } => "schema",
                };
                (c.name.clone(), kind)
            })
            .collect();
        // The user-written checks run together in one isolated process: one span for it, and
        // one span per check inside it, ended as its answer arrives.
        let batch = tracing::info_span!("checks", count = names.len());
        let spans: Vec<tracing::Span> = names
            .iter()
            .map(|(name, kind)| {
                tracing::info_span!(
                    parent: &batch,
                    "check",
                    check.name = %name,
                    check.kind = *kind,
                    check.result = tracing::field::Empty,
                )
            })
            .collect();
        let answers = in_span(
            batch,
            blocking(move || {
                let role = checks::prepare_role(engine, &uri, &dbs, default_db)?;
                checks::run_isolated(engine, &role, dbs, user_checks)
            }),
        )
        .await?;
        for (span, answer) in spans.iter().zip(&answers) {
            record_check(span, answer);
        }
        drop(spans);
        if answers.len() != user_slots.len() {
            return Err(AgentError::Target(format!(
                "the check process answered {} of {} checks",
                answers.len(),
                user_slots.len()
            )));
        }
        for (slot, answer) in user_slots.into_iter().zip(answers) {
            slots[slot] = Some(answer);
        }
    }
    let results: Vec<CheckResult> = slots.into_iter().flatten().collect();
    for result in &results {
        tracing::info!(check = %result.name, result = ?result.result, expected = ?result.expected, observed = ?result.observed, "check finished");
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.result == ValidationResult::Failed)
        .map(|r| r.name.as_str())
        .collect();
    Ok(if failed.is_empty() {
        base(
            ValidationResult::Passed,
            None,
            format!(
                "restored in {restore_seconds:.1}s; {} checks passed",
                results.len()
            ),
            results,
            Some(restore_seconds),
            restored_dbs,
        )
    } else {
        let message = format!(
            "restored in {restore_seconds:.1}s; failed checks: {}",
            failed.join(", ")
        );
        base(
            ValidationResult::Failed,
            Some("CheckFailed"),
            message,
            results,
            Some(restore_seconds),
            restored_dbs,
        )
    })
}

/// The JSON summary of a verdict.
pub fn outcome_summary(o: &ValidateOutcome, from: &Location) -> Summary {
    ValidateSummary {
        result: o.result,
        reason: o.reason.clone(),
        message: o.message.clone(),
        engine: o.engine,
        server_version: o.server_version.clone(),
        from: from.to_string(),
        databases: o.databases.clone(),
        restore_duration_seconds: o.restore_duration_seconds,
        checks: o.checks.clone(),
        duration_seconds: o.duration_seconds,
    }
    .into()
}

/// Shrink a validation summary to the termination-message limit: check messages first, then
/// observed/expected values, then the checks beyond the first failing ones. The result, reason
/// and restore duration always stay.
pub fn compact(summary: &Value) -> String {
    if let Some(full) = super::summary::fitting(summary) {
        return full;
    }
    let mut v = summary.clone();
    v["truncated"] = json!(true);
    for (field, max) in [
        ("message", 120usize),
        ("observed", 60),
        ("expected", 60),
        ("message", 0),
    ] {
        if let Some(checks) = v.get_mut("checks").and_then(Value::as_array_mut) {
            for c in checks.iter_mut() {
                if let Some(text) = c.get(field).and_then(Value::as_str).map(str::to_string) {
                    if max == 0 {
                        c.as_object_mut().map(|o| o.remove(field));
                    } else {
                        c[field] = json!(truncate(&text, max));
                    }
                }
            }
        }
        if v.to_string().len() <= TERMINATION_LIMIT {
            return v.to_string();
        }
    }
    if let Some(m) = v.get("message").and_then(Value::as_str).map(str::to_string) {
        v["message"] = json!(truncate(&m, 300));
    }
    // Keep failing checks first, drop from the end until it fits.
    if let Some(checks) = v.get_mut("checks").and_then(Value::as_array_mut) {
        checks.sort_by_key(|c| c["result"] != "Failed");
    }
    while v.to_string().len() > TERMINATION_LIMIT {
        let Some(checks) = v.get_mut("checks").and_then(Value::as_array_mut) else {
            break;
        };
        if checks.pop().is_none() {
            break;
        }
    }
    super::summary::fit(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::restore_validation::Expectation;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn t(schema: &str, name: &str, rows: u64) -> TableCount {
        TableCount {
            schema: schema.into(),
            name: name.into(),
            rows,
        }
    }

    #[test]
    fn row_counts_compare_every_table_and_list_mismatches() {
        let expected = [
            t("public", "a", 3),
            t("public", "b", 0),
            t("sales", "orders", 120),
        ];
        let ok = compare_row_counts("rc".into(), &[], &expected, &expected);
        assert_eq!(ok.result, ValidationResult::Passed);
        assert_eq!(ok.expected.as_deref(), Some("3 tables, 123 rows"));
        assert_eq!(ok.observed.as_deref(), Some("3 tables, 123 rows"));
        let observed = [t("public", "a", 3), t("sales", "orders", 118)];
        let bad = compare_row_counts("rc".into(), &[], &expected, &observed);
        assert_eq!(bad.result, ValidationResult::Failed);
        let msg = bad.message.unwrap();
        assert!(msg.contains("public.b: missing"), "{msg}");
        assert!(
            msg.contains("sales.orders: expected 120, observed 118"),
            "{msg}"
        );
        assert_eq!(bad.observed.as_deref(), Some("2 tables, 121 rows"));
        // A filter limits the comparison; an unknown table in the filter fails.
        let only = compare_row_counts("rc".into(), &["a".into()], &expected, &observed);
        assert_eq!(only.result, ValidationResult::Passed);
        let unknown = compare_row_counts("rc".into(), &["public.zzz".into()], &expected, &observed);
        assert_eq!(unknown.result, ValidationResult::Failed);
    }

    #[test]
    fn expected_counts_follow_the_restored_database() {
        use crate::agent::compress::Compression;
        use crate::agent::manifest::{Artifact, FORMAT_VERSION, PayloadFormat};
        let art = |kind, db: Option<&str>, tables: Vec<TableCount>| Artifact {
            key: "k".into(),
            kind,
            database: db.map(str::to_string),
            format: PayloadFormat::Sql,
            size_bytes: 1,
            raw_bytes: 1,
            sha256: "0".repeat(64),
            tables,
            data_tables: vec![],
            duration_seconds: 0.0,
            confirmed_by: None,
        };
        let mut m = Manifest {
            format_version: FORMAT_VERSION,
            tool: "t".into(),
            engine: Engine::Mysql,
            server_version: "10.11".into(),
            dump_tool: None,
            database: Some("shop".into()),
            all_databases: false,
            compression: Compression::None,
            encryption: None,
            data_key: None,
            artifacts: vec![art(
                ArtifactKind::Database,
                Some("shop"),
                vec![t("shop", "orders", 5)],
            )],
            started_at: chrono::Utc::now(),
            completed_at: chrono::Utc::now(),
            duration_seconds: 0.0,
        };
        // MySQL: the schema is the database, renamed to where it was restored.
        let e = expected_counts(&m, Some("copy"));
        assert_eq!(e, vec![(Some("copy".into()), vec![t("copy", "orders", 5)])]);
        // PostgreSQL: schemas stay; all-databases backups keep their names; globals are skipped.
        m.engine = Engine::Postgres;
        assert_eq!(
            expected_counts(&m, Some("copy"))[0].1,
            vec![t("shop", "orders", 5)]
        );
        m.all_databases = true;
        m.artifacts = vec![
            art(ArtifactKind::Globals, None, vec![]),
            art(ArtifactKind::Database, Some("a"), vec![t("public", "x", 1)]),
        ];
        let e = expected_counts(&m, None);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0.as_deref(), Some("a"));
    }

    #[test]
    fn an_all_databases_restore_names_the_new_databases_and_those_with_counted_tables() {
        let expected = vec![(
            None,
            vec![
                t("alpha", "orders", 3),
                t("mysql", "db", 2),
                t("beta", "notes", 1),
            ],
        )];
        let before = vec!["mysql".to_string(), "leftover".to_string()];
        let after = ["alpha", "beta", "gamma", "leftover", "mysql"]
            .map(String::from)
            .to_vec();
        // gamma (a view only) is new; mysql existed but holds counted tables; leftover was
        // there before and the backup knows nothing of it.
        assert_eq!(
            restored_all_databases(&expected, &before, after),
            ["alpha", "beta", "gamma", "mysql"]
        );
        assert!(restored_all_databases(&expected, &before, before.clone()) == ["mysql"]);
    }

    #[test]
    fn expectations() {
        let e = |min, max, equals| Expectation { min, max, equals };
        assert!(meets(&e(Some(1), None, None), Some("5")).is_ok());
        assert!(
            meets(&e(Some(1), None, None), Some("0"))
                .unwrap_err()
                .contains("less than 1")
        );
        assert!(meets(&e(None, Some(10), None), Some("11")).is_err());
        assert!(meets(&e(None, None, Some(IntOrString::Int(42))), Some("42")).is_ok());
        assert!(meets(&e(None, None, Some(IntOrString::Int(42))), Some("41")).is_err());
        assert!(
            meets(
                &e(None, None, Some(IntOrString::String("ok".into()))),
                Some("ok")
            )
            .is_ok()
        );
        assert!(
            meets(
                &e(None, None, Some(IntOrString::String("ok".into()))),
                Some("no")
            )
            .is_err()
        );
        assert!(
            meets(&e(Some(1), None, None), Some("abc"))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(meets(&e(Some(1), None, None), None).is_err());
        assert_eq!(describe_expectation(&e(Some(1), None, None)), ">= 1");
        assert_eq!(
            describe_expectation(&e(Some(1), Some(5), None)),
            "between 1 and 5"
        );
        assert_eq!(
            describe_expectation(&e(None, None, Some(IntOrString::Int(3)))),
            "= 3"
        );
    }

    #[test]
    fn postgres_all_databases_filters_take_the_database_first() {
        let dbs = ["alpha", "beta"];
        let f = |name| pg_all_databases_filter(name, &dbs);
        assert_eq!(f("alpha.sales.orders"), "alpha/sales.orders");
        assert_eq!(f("alpha.orders"), "alpha/public.orders");
        assert_eq!(f("beta.archive.dotted.name"), "beta/archive.dotted.name");
        // Already in the comparison's spelling, bare, or of no restored database: unchanged.
        assert_eq!(f("alpha/sales.orders"), "alpha/sales.orders");
        assert_eq!(f("orders"), "orders");
        assert_eq!(f("gamma.public.t"), "gamma.public.t");
        let expected = [t("alpha/sales", "orders", 3), t("beta/public", "orders", 1)];
        let only = compare_row_counts(
            "rc".into(),
            &[f("alpha.sales.orders")],
            &expected,
            &expected,
        );
        assert_eq!(only.result, ValidationResult::Passed);
        assert_eq!(only.expected.as_deref(), Some("1 tables, 3 rows"));
    }

    #[test]
    fn table_names() {
        assert_eq!(
            split_table("sales.orders", "public"),
            ("sales".into(), "orders".into())
        );
        assert_eq!(
            split_table("orders", "public"),
            ("public".into(), "orders".into())
        );
    }

    #[test]
    fn checks_parse_with_a_default() {
        let d = parse_checks(None).unwrap();
        assert_eq!(d.len(), 1);
        assert!(d[0].row_counts.is_some());
        let c = parse_checks(Some(
            r#"[{"sql":"SELECT 1","expect":{"equals":1}},{"schema":{"tables":["a"]}}]"#,
        ))
        .unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_checks(Some(r#"[{"sql":"SELECT 1"}]"#)).is_err());
        assert!(parse_checks(Some(r#"[{"rowCounts":{},"schema":{"tables":["a"]}}]"#)).is_err());
        assert!(parse_checks(Some("nope")).is_err());
        assert!(parse_checks(Some(r#"[{"rowCounts":{},"database":"a"}]"#)).is_err());
        let c = parse_checks(Some(r#"[{"schema":{"tables":["a"]},"database":"shop"}]"#)).unwrap();
        assert_eq!(c[0].database.as_deref(), Some("shop"));
    }

    #[test]
    fn compact_keeps_the_result() {
        let checks: Vec<Value> = (0..60)
            .map(|i| json!({"name": format!("check-{i}"), "type": "sql", "result": if i == 59 {"Failed"} else {"Passed"},
                "expected": ">= 1", "observed": "x".repeat(200), "message": "m".repeat(900)}))
            .collect();
        let v = json!({"status": "succeeded", "result": "Failed", "reason": "CheckFailed", "restoreDurationSeconds": 1.5, "checks": checks});
        let c = compact(&v);
        assert!(c.len() <= TERMINATION_LIMIT, "{}", c.len());
        let back: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(back["result"], "Failed");
        assert_eq!(back["reason"], "CheckFailed");
        assert_eq!(back["restoreDurationSeconds"], 1.5);
        assert_eq!(back["truncated"], true);
        assert_eq!(
            back["checks"][0]["name"], "check-59",
            "failing checks are kept first"
        );
    }

    /// `outcome_summary` as it was before the contract (`json!`).
    fn legacy_outcome_summary(o: &ValidateOutcome, from: &Location) -> Value {
        json!({
            "status": "succeeded",
            "operation": "validate",
            "result": o.result,
            "reason": o.reason,
            "message": o.message,
            "engine": o.engine,
            "serverVersion": o.server_version,
            "from": from.to_string(),
            "databases": o.databases,
            "restoreDurationSeconds": o.restore_duration_seconds,
            "checks": o.checks,
            "durationSeconds": o.duration_seconds,
        })
    }

    #[test]
    fn outcome_summaries_are_byte_for_byte_the_legacy_ones() {
        let check = |i: usize, result: ValidationResult, detail: bool| CheckResult {
            name: format!("check-{i}"),
            kind: if i.is_multiple_of(2) {
                CheckKind::RowCounts
            } else {
                CheckKind::Sql
            },
            result,
            expected: detail.then(|| ">= 1".to_string()),
            observed: detail.then(|| "x \"y\"".repeat(40)),
            message: detail.then(|| "m".repeat(900)),
        };
        let passed = ValidateOutcome {
            result: ValidationResult::Passed,
            reason: None,
            message: "restored in 1.5s; 2 checks passed".into(),
            restore_duration_seconds: Some(0.1 + 0.2),
            checks: vec![
                check(0, ValidationResult::Passed, true),
                check(1, ValidationResult::Passed, false),
            ],
            engine: Engine::Postgres,
            server_version: "15.8".into(),
            databases: vec!["shop".into()],
            duration_seconds: 4.75,
        };
        let failed = ValidateOutcome {
            result: ValidationResult::Failed,
            reason: Some("CheckFailed".into()),
            message: "1 of 60 checks failed".into(),
            restore_duration_seconds: None,
            checks: (0..60)
                .map(|i| {
                    let r = if i == 59 {
                        ValidationResult::Failed
                    } else {
                        ValidationResult::Passed
                    };
                    check(i, r, true)
                })
                .collect(),
            engine: Engine::Mysql,
            server_version: "10.11".into(),
            databases: Vec::new(),
            duration_seconds: 0.0,
        };
        let from = Location::File {
            path: "/backup/r1/manifest.json".into(),
        };
        for o in [passed, failed] {
            let new = outcome_summary(&o, &from).to_value();
            let old = legacy_outcome_summary(&o, &from);
            assert_eq!(new.to_string(), old.to_string());
            assert_eq!(compact(&new), compact(&old));
        }
    }
}
