//! `dataguardian agent validate` against real PostgreSQL 15 servers: back up one server, then
//! validate the backup into a second, fresh server playing the sandbox sidecar. Passing checks
//! pass with a measured restore time; a failing SQL check fails with expected vs observed; a
//! tampered artifact fails the validation without any check passing.

mod agent_common;

use agent_common::*;
use serde_json::Value;
use testkit::Postgres;

fn validate(
    sandbox: &Postgres,
    from: &str,
    database: &str,
    checks: &str,
    term: &std::path::Path,
) -> Run {
    let uri = sandbox.uri("postgres");
    run_agent(
        &[
            "validate",
            "--engine",
            "postgres",
            "--from",
            from,
            "--database",
            database,
            "--termination-log",
            &term.display().to_string(),
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &uri), ("DG_CHECKS", checks)],
    )
}

#[test]
fn postgres_validation_passes_fails_on_sql_and_on_tampering() {
    let source = Postgres::start().unwrap();
    source.create_database("shop").unwrap();
    pg_fill(&source, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let backup = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "r1",
            "--termination-log",
            &tmp.path().join("backup-term").display().to_string(),
        ],
        &[("DG_URI", &source.uri("shop"))],
    );
    backup.assert_ok();
    let from = format!("file://{}/r1/manifest.json", store.display());

    // A fresh server acts as the sandbox.
    let sandbox = Postgres::start().unwrap();
    let term = tmp.path().join("termination-log");

    // 1. Passing checks pass, with the RTO measured.
    let checks = r#"[
        {"rowCounts": {}},
        {"name": "orders", "sql": "SELECT count(*) FROM sales.orders", "expect": {"min": 1, "max": 3000}},
        {"name": "exact", "sql": "SELECT count(*) FROM customers", "expect": {"equals": 2000}},
        {"name": "tables", "schema": {"tables": ["sales.orders", "customers", "empty_table"]}}
    ]"#;
    let ok = validate(&sandbox, &from, "shop", checks, &term);
    assert_eq!(ok.code, 0, "stdout: {}\nstderr: {}", ok.stdout, ok.stderr);
    ok.assert_no_secret(sandbox.password());
    let s = &ok.summary;
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["operation"], "validate");
    assert_eq!(s["result"], "Passed", "{s}");
    assert!(s["restoreDurationSeconds"].as_f64().unwrap() > 0.0);
    assert_eq!(s["checks"].as_array().unwrap().len(), 4);
    let rc = check(s, "rowCounts-0");
    assert_eq!(rc["result"], "Passed");
    assert_eq!(rc["expected"], rc["observed"]);
    assert!(
        rc["expected"].as_str().unwrap().starts_with("4 tables"),
        "{rc}"
    );
    assert_eq!(check(s, "orders")["observed"], "3000");
    assert_eq!(check(s, "exact")["result"], "Passed");
    assert_eq!(check(s, "tables")["result"], "Passed");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(written["result"], "Passed");
    // The data really is in the sandbox.
    assert_eq!(
        pg_fingerprint(&sandbox, "shop"),
        pg_fingerprint(&source, "shop")
    );

    // 2. A failing SQL check fails with expected vs observed; an erroring query fails too.
    let checks = r#"[
        {"name": "too-many", "sql": "SELECT count(*) FROM sales.orders", "expect": {"equals": 5}},
        {"name": "broken", "sql": "SELECT * FROM no_such_table", "expect": {"min": 1}},
        {"name": "missing", "schema": {"tables": ["public.nope"]}},
        {"rowCounts": {"tables": ["sales.orders"]}}
    ]"#;
    let bad = validate(&sandbox, &from, "shop_second", checks, &term);
    assert_eq!(
        bad.code, 1,
        "a failed verdict exits 1: {}\n{}",
        bad.stdout, bad.stderr
    );
    let s = &bad.summary;
    assert_eq!(s["status"], "succeeded", "the validation ran: {s}");
    assert_eq!(s["result"], "Failed");
    assert_eq!(s["reason"], "CheckFailed");
    let c = check(s, "too-many");
    assert_eq!(c["result"], "Failed");
    assert_eq!(c["expected"], "= 5");
    assert_eq!(c["observed"], "3000");
    let c = check(s, "broken");
    assert_eq!(c["result"], "Failed");
    assert_message_contains(c, "no_such_table");
    assert_eq!(check(s, "missing")["result"], "Failed");
    assert_eq!(check(s, "rowCounts-3")["result"], "Passed");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(written["result"], "Failed");

    // 3. A tampered artifact fails the validation; no check passes.
    let artifact = store.join("r1/databases/shop.pgdump.zst");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&artifact, &bytes).unwrap();
    let tampered = validate(
        &sandbox,
        &from,
        "shop_third",
        r#"[{"rowCounts": {}}]"#,
        &term,
    );
    assert_eq!(tampered.code, 1, "{}\n{}", tampered.stdout, tampered.stderr);
    let s = &tampered.summary;
    assert_eq!(s["result"], "Failed", "{s}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason == "ChecksumMismatch" || reason == "RestoreFailed",
        "{reason}"
    );
    assert!(s["restoreDurationSeconds"].is_null());
    assert_eq!(check(s, "rowCounts-0")["result"], "Failed");
}

#[test]
fn an_unreachable_sandbox_is_an_error_not_a_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let term = tmp.path().join("t");
    // Nothing listens on this loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "postgres",
            "--from",
            "file:///nonexistent/manifest.json",
            "--termination-log",
            &term.display().to_string(),
            "--wait-seconds",
            "2",
        ],
        &[(
            "DG_URI",
            &format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        )],
    );
    run.assert_failed("target");
    assert!(
        run.error().contains("did not accept connections"),
        "{}",
        run.error()
    );
}

#[test]
fn mariadb_encrypted_backup_validates_into_a_fresh_server() {
    let source = testkit::MariaDb::start().unwrap();
    source.create_database("shop").unwrap();
    my_fill(&source, "shop", 500);
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _) = age_keypair(tmp.path(), "id.txt");
    let to = format!("file://{}", tmp.path().join("backups").display());
    let backup_term = tmp.path().join("backup-term").display().to_string();
    run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            &to,
            "--run-id",
            "m1",
            "--recipient",
            &public,
            "--termination-log",
            &backup_term,
        ],
        &[("DG_URI", &source.uri("shop"))],
    )
    .assert_ok();
    let from = format!("{to}/m1/manifest.json");
    let sandbox = testkit::MariaDb::start().unwrap();
    let term = tmp.path().join("term").display().to_string();
    let identity = identity.display().to_string();
    let checks = r#"[
        {"rowCounts": {}},
        {"name": "orders", "sql": "SELECT COUNT(*) FROM orders", "expect": {"equals": 500}},
        {"name": "fn", "sql": "SELECT add_one(41)", "expect": {"equals": "42"}},
        {"name": "wrong", "sql": "SELECT COUNT(*) FROM customers", "expect": {"max": 10}},
        {"schema": {"tables": ["customers", "odd`name"]}}
    ]"#;
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--identity-file",
            &identity,
            "--termination-log",
            &term,
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &sandbox.uri("")), ("DG_CHECKS", checks)],
    );
    assert_eq!(
        run.code, 1,
        "one check fails: {}\n{}",
        run.stdout, run.stderr
    );
    run.assert_no_secret(sandbox.password());
    let s = &run.summary;
    assert_eq!(s["result"], "Failed");
    assert_eq!(s["reason"], "CheckFailed");
    assert!(s["restoreDurationSeconds"].as_f64().unwrap() > 0.0);
    let rc = check(s, "rowCounts-0");
    assert_eq!(rc["result"], "Passed", "{rc}");
    assert_eq!(rc["expected"], rc["observed"]);
    assert_eq!(check(s, "orders")["result"], "Passed");
    assert_eq!(check(s, "fn")["result"], "Passed", "{}", check(s, "fn"));
    let wrong = check(s, "wrong");
    assert_eq!(wrong["result"], "Failed");
    assert_eq!(
        (wrong["expected"].as_str(), wrong["observed"].as_str()),
        (Some("<= 10"), Some("2000"))
    );
    assert_eq!(check(s, "schema-4")["result"], "Passed");

    // Without the identity the encrypted backup cannot be validated: a clear configuration error.
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--database",
            "other",
            "--termination-log",
            &term,
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &sandbox.uri(""))],
    );
    run.assert_failed("config");
}

/// A source server with three user databases for the all-databases validations: `alpha` (the
/// shared fill: 300 orders, `odd``name`, a view, a function), `beta` (`notes`, 40 rows, and a
/// table whose name holds a dot) and `gamma` (a view only, no table).
fn all_databases_source() -> testkit::MariaDb {
    let source = testkit::MariaDb::start().unwrap();
    source.create_database("alpha").unwrap();
    my_fill(&source, "alpha", 300);
    source
        .sql(
            "alpha",
            "CREATE DATABASE beta;
             CREATE TABLE beta.notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT);
             INSERT INTO beta.notes (body) SELECT MD5(seq) FROM seq_1_to_40;
             CREATE TABLE beta.`dotted.name` (v INT);
             INSERT INTO beta.`dotted.name` VALUES (1), (2), (3);
             CREATE DATABASE gamma;
             CREATE VIEW gamma.constants AS SELECT 42 AS answer;",
        )
        .unwrap();
    source
}

/// Back up every database of `source` (`extra`: layout flags), validate the backup into a
/// fresh sandbox server with checks naming `database.table`, and check the verdict of each.
fn all_databases_validation(layout: &str, extra: &[&str]) {
    let source = all_databases_source();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let mut args = vec![
        "backup",
        "--engine",
        "mysql",
        "--all-databases",
        "--to",
        &to,
        "--run-id",
        layout,
    ];
    args.extend_from_slice(extra);
    let backup = run_agent(&args, &[("DG_URI", &source.uri(""))]);
    backup.assert_ok();
    let dir = store.join(layout);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["allDatabases"], true, "{manifest}");
    let parts = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "tableData")
        .count();
    if extra.is_empty() {
        assert_eq!(parts, 0, "the single stream: {manifest}");
    } else {
        assert!(parts >= 2, "the parallel layout: {manifest}");
    }

    let sandbox = testkit::MariaDb::start().unwrap();
    let from = format!("{to}/{layout}/manifest.json");
    let term = tmp.path().join("term").display().to_string();
    let checks = r#"[
        {"rowCounts": {}},
        {"name": "some-counts", "rowCounts": {"tables": ["alpha.orders", "beta.notes", "beta.dotted.name"]}},
        {"name": "orders", "sql": "SELECT COUNT(*) FROM alpha.orders", "expect": {"equals": 300}},
        {"name": "notes", "sql": "SELECT COUNT(*) FROM beta.notes", "expect": {"equals": 40}},
        {"name": "dotted", "sql": "SELECT SUM(v) FROM beta.`dotted.name`", "expect": {"equals": 6}},
        {"name": "view", "sql": "SELECT answer FROM gamma.constants", "expect": {"equals": 42}},
        {"name": "function", "sql": "SELECT alpha.add_one(41)", "expect": {"equals": "42"}},
        {"name": "tables", "schema": {"tables": ["alpha.customers", "alpha.odd`name", "alpha.empty_table", "alpha.big_orders", "beta.notes", "beta.dotted.name", "gamma.constants"]}},
        {"name": "absent", "schema": {"tables": ["alpha.customers", "alpha.no_such_table"]}},
        {"name": "wrong-database", "schema": {"tables": ["beta.customers"]}},
        {"name": "bare", "schema": {"tables": ["customers"]}},
        {"name": "absent-count", "rowCounts": {"tables": ["gamma.nothing"]}},
        {"name": "accounts", "sql": "SELECT COUNT(*) FROM mysql.user", "expect": {"min": 0}},
        {"name": "in-beta", "database": "beta", "sql": "SELECT COUNT(*) FROM notes", "expect": {"equals": 40}},
        {"name": "beta-tables", "database": "beta", "schema": {"tables": ["notes", "alpha.customers"]}},
        {"name": "accounts-database", "database": "mysql", "sql": "SELECT 1", "expect": {"equals": 1}}
    ]"#;
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--termination-log",
            &term,
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &sandbox.uri("")), ("DG_CHECKS", checks)],
    );
    assert_eq!(
        run.code, 1,
        "the checks meant to fail fail: {}\n{}",
        run.stdout, run.stderr
    );
    run.assert_no_secret(sandbox.password());
    let s = &run.summary;
    assert_eq!(s["status"], "succeeded", "the validation ran: {s}");
    assert_eq!(s["result"], "Failed", "{s}");
    assert_eq!(s["reason"], "CheckFailed", "{s}");
    assert!(s["restoreDurationSeconds"].as_f64().unwrap() > 0.0, "{s}");
    let databases: Vec<&str> = s["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for db in ["alpha", "beta", "gamma"] {
        assert!(databases.contains(&db), "{db} restored: {s}");
    }

    let rc = check(s, "rowCounts-0");
    assert_eq!(rc["result"], "Passed", "{rc}");
    assert_eq!(rc["expected"], rc["observed"], "{rc}");
    let some = check(s, "some-counts");
    assert_eq!(some["result"], "Passed", "{some}");
    assert_eq!(some["expected"], "3 tables, 343 rows", "{some}");
    assert_eq!(some["observed"], "3 tables, 343 rows", "{some}");
    for name in [
        "orders",
        "notes",
        "dotted",
        "view",
        "function",
        "in-beta",
        "beta-tables",
    ] {
        let c = check(s, name);
        assert_eq!(c["result"], "Passed", "{c}");
    }
    assert_eq!(check(s, "orders")["observed"], "300");
    assert_eq!(check(s, "dotted")["observed"], "6");
    let tables = check(s, "tables");
    assert_eq!(tables["result"], "Passed", "{tables}");
    assert_eq!(tables["observed"], "7 present", "{tables}");

    // Tables that are not there fail, and say which.
    let absent = check(s, "absent");
    assert_eq!(absent["result"], "Failed", "{absent}");
    assert_eq!(absent["observed"], "1 present", "{absent}");
    assert_eq!(
        absent["message"], "missing: alpha.no_such_table",
        "{absent}"
    );
    let wrong = check(s, "wrong-database");
    assert_eq!(wrong["result"], "Failed", "{wrong}");
    assert_eq!(wrong["message"], "missing: beta.customers", "{wrong}");
    // No default database in an all-databases backup: a bare name names no table.
    let bare = check(s, "bare");
    assert_eq!(bare["result"], "Failed", "{bare}");
    assert_eq!(
        bare["message"], "missing: customers (name it database.table)",
        "{bare}"
    );
    let absent_count = check(s, "absent-count");
    assert_eq!(absent_count["result"], "Failed", "{absent_count}");
    assert_message_contains(absent_count, "gamma.nothing: not in the backup's manifest");
    // The accounts (the `mysql` database) are not the checks' to read.
    let accounts = check(s, "accounts");
    assert_eq!(accounts["result"], "Failed", "{accounts}");
    assert_eq!(accounts["observed"], "error", "{accounts}");
    // Nor may a check run in it.
    let accounts_db = check(s, "accounts-database");
    assert_eq!(accounts_db["observed"], "not run", "{accounts_db}");
    assert_message_contains(
        accounts_db,
        "database \"mysql\" is not a restored database the checks may read",
    );

    assert_eq!(
        failed_checks(s),
        [
            "absent",
            "wrong-database",
            "bare",
            "absent-count",
            "accounts",
            "accounts-database"
        ],
        "{s}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(written["result"], "Failed");
}

#[test]
fn mariadb_all_databases_single_stream_validates_database_qualified_checks() {
    all_databases_validation("single", &[]);
}

#[test]
fn mariadb_all_databases_parallel_layout_validates_database_qualified_checks() {
    all_databases_validation(
        "parallel",
        &["--parallelism", "2", "--parallel-min-bytes", "0"],
    );
}

/// A PostgreSQL source with two user databases for the all-databases validations: `alpha` (the
/// shared fill: customers, `sales.orders` 3000 rows, `"Odd ""Name"" Tbl"`, a view, a function)
/// and `beta` (schema `archive` with `notes`, 40 rows, and a table whose name holds a dot; and a
/// `public.customers` of its own, 5 rows, to tell the databases apart).
fn pg_all_databases_source() -> Postgres {
    let source = Postgres::start().unwrap();
    source.create_database("alpha").unwrap();
    source.create_database("beta").unwrap();
    pg_fill(&source, "alpha", 1);
    source
        .psql(
            "beta",
            r#"CREATE SCHEMA archive;
               CREATE TABLE archive.notes (id int PRIMARY KEY, body text);
               INSERT INTO archive.notes SELECT g, md5(g::text) FROM generate_series(1, 40) g;
               CREATE TABLE archive."dotted.name" (v int);
               INSERT INTO archive."dotted.name" VALUES (1), (2), (3);
               CREATE TABLE customers (id int);
               INSERT INTO customers SELECT generate_series(1, 5);"#,
        )
        .unwrap();
    source
}

/// Back up every database of a PostgreSQL server (`extra`: layout flags), validate the backup
/// into a fresh sandbox server with checks that name tables of each database, and check the
/// verdict of each.
fn pg_all_databases_validation(layout: &str, extra: &[&str]) {
    let source = pg_all_databases_source();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let mut args = vec![
        "backup",
        "--engine",
        "postgres",
        "--all-databases",
        "--to",
        &to,
        "--run-id",
        layout,
    ];
    args.extend_from_slice(extra);
    run_agent(&args, &[("DG_URI", &source.uri("postgres"))]).assert_ok();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(store.join(layout).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["allDatabases"], true, "{manifest}");
    let kinds: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "globals", "{manifest}");
    let parts = kinds.iter().filter(|k| **k == "tableData").count();
    if extra.is_empty() {
        assert_eq!(parts, 0, "the single stream: {manifest}");
    } else {
        assert!(parts >= 2, "the parallel layout: {manifest}");
    }

    let sandbox = Postgres::start().unwrap();
    let from = format!("{to}/{layout}/manifest.json");
    let term = tmp.path().join("term");
    let checks = r#"[
        {"rowCounts": {}},
        {"name": "some-counts", "rowCounts": {"tables": ["alpha.sales.orders", "beta/archive.notes", "beta.customers", "beta.archive.dotted.name"]}},
        {"name": "orders", "database": "alpha", "sql": "SELECT count(*) FROM sales.orders", "expect": {"equals": 3000}},
        {"name": "alpha-customers", "database": "alpha", "sql": "SELECT count(*) FROM customers", "expect": {"equals": 2000}},
        {"name": "beta-customers", "database": "beta", "sql": "SELECT count(*) FROM customers", "expect": {"equals": 5}},
        {"name": "notes", "database": "beta", "sql": "SELECT count(*) FROM archive.notes", "expect": {"equals": 40}},
        {"name": "dotted", "database": "beta", "sql": "SELECT sum(v) FROM archive.\"dotted.name\"", "expect": {"equals": 6}},
        {"name": "function", "database": "alpha", "sql": "SELECT add_one(41)", "expect": {"equals": "42"}},
        {"name": "not-superuser", "database": "beta", "sql": "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user", "expect": {"equals": "false"}},
        {"name": "tables", "schema": {"tables": ["alpha.customers", "alpha.sales.orders", "alpha.public.big_orders", "alpha.Odd \"Name\" Tbl", "alpha.empty_table", "beta.archive.notes", "beta.archive.dotted.name", "beta.customers"]}},
        {"name": "in-beta", "database": "beta", "schema": {"tables": ["archive.notes", "customers"]}},
        {"name": "absent", "schema": {"tables": ["alpha.customers", "alpha.sales.no_such_table"]}},
        {"name": "wrong-database", "schema": {"tables": ["beta.sales.orders"]}},
        {"name": "unknown-database", "schema": {"tables": ["gamma.public.t"]}},
        {"name": "bare", "schema": {"tables": ["customers"]}},
        {"name": "no-database", "sql": "SELECT count(*) FROM customers", "expect": {"min": 0}},
        {"name": "not-restored", "database": "gamma", "sql": "SELECT 1", "expect": {"equals": 1}},
        {"name": "write", "database": "alpha", "sql": "DELETE FROM customers", "expect": {"min": 0}},
        {"name": "absent-count", "rowCounts": {"tables": ["beta.sales.orders"]}}
    ]"#;
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--termination-log",
            &term.display().to_string(),
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &sandbox.uri("postgres")), ("DG_CHECKS", checks)],
    );
    assert_eq!(
        run.code, 1,
        "the checks meant to fail fail: {}\n{}",
        run.stdout, run.stderr
    );
    run.assert_no_secret(sandbox.password());
    let s = &run.summary;
    assert_eq!(s["status"], "succeeded", "the validation ran: {s}");
    assert_eq!(s["result"], "Failed", "{s}");
    assert_eq!(s["reason"], "CheckFailed", "{s}");
    assert!(s["restoreDurationSeconds"].as_f64().unwrap() > 0.0, "{s}");
    let databases: Vec<&str> = s["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    for db in ["alpha", "beta", "postgres"] {
        assert!(databases.contains(&db), "{db} restored: {s}");
    }
    assert_eq!(
        pg_fingerprint(&sandbox, "beta"),
        pg_fingerprint(&source, "beta")
    );

    let rc = check(s, "rowCounts-0");
    assert_eq!(rc["result"], "Passed", "{rc}");
    assert_eq!(rc["expected"], rc["observed"], "{rc}");
    let some = check(s, "some-counts");
    assert_eq!(some["result"], "Passed", "{some}");
    assert_eq!(some["expected"], "4 tables, 3048 rows", "{some}");
    assert_eq!(some["observed"], "4 tables, 3048 rows", "{some}");
    for name in [
        "orders",
        "alpha-customers",
        "beta-customers",
        "notes",
        "dotted",
        "function",
        "not-superuser",
    ] {
        let c = check(s, name);
        assert_eq!(c["result"], "Passed", "{c}");
    }
    assert_eq!(check(s, "orders")["observed"], "3000");
    assert_eq!(check(s, "beta-customers")["observed"], "5");
    let tables = check(s, "tables");
    assert_eq!(tables["result"], "Passed", "{tables}");
    assert_eq!(tables["observed"], "8 present", "{tables}");
    assert_eq!(check(s, "in-beta")["result"], "Passed");

    // Tables that are not there fail, and say which.
    let absent = check(s, "absent");
    assert_eq!(absent["result"], "Failed", "{absent}");
    assert_eq!(absent["observed"], "1 present", "{absent}");
    assert_eq!(
        absent["message"], "missing: alpha.sales.no_such_table",
        "{absent}"
    );
    let wrong = check(s, "wrong-database");
    assert_eq!(wrong["message"], "missing: beta.sales.orders", "{wrong}");
    let unknown = check(s, "unknown-database");
    assert_eq!(
        unknown["message"], "missing: gamma.public.t (no restored database \"gamma\")",
        "{unknown}"
    );
    // Several databases restored, no default: a bare name names no table, and a query must
    // say where it runs.
    let bare = check(s, "bare");
    assert_eq!(
        bare["message"], "missing: customers (name it database.schema.table)",
        "{bare}"
    );
    let no_db = check(s, "no-database");
    assert_eq!(no_db["result"], "Failed", "{no_db}");
    assert_eq!(no_db["observed"], "not run", "{no_db}");
    let message = no_db["message"].as_str().unwrap();
    assert!(
        message.contains("set the check's database") && message.contains("alpha, beta"),
        "{no_db}"
    );
    let not_restored = check(s, "not-restored");
    assert_eq!(not_restored["observed"], "not run", "{not_restored}");
    assert_message_contains(
        not_restored,
        "database \"gamma\" is not a restored database",
    );
    // Read-only: a write is refused by the server.
    let write = check(s, "write");
    assert_eq!(write["observed"], "error", "{write}");
    assert_message_contains(write, "read-only");
    assert_eq!(
        sandbox
            .psql("alpha", "SELECT count(*) FROM customers")
            .unwrap(),
        "2000"
    );
    let absent_count = check(s, "absent-count");
    assert_message_contains(
        absent_count,
        "beta/sales.orders: not in the backup's manifest",
    );

    assert_eq!(
        failed_checks(s),
        [
            "absent",
            "wrong-database",
            "unknown-database",
            "bare",
            "no-database",
            "not-restored",
            "write",
            "absent-count"
        ],
        "{s}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(written["result"], "Failed");
}

#[test]
fn postgres_all_databases_single_stream_validates_checks_of_every_database() {
    pg_all_databases_validation("single", &[]);
}

#[test]
fn postgres_all_databases_parallel_layout_validates_checks_of_every_database() {
    pg_all_databases_validation(
        "parallel",
        &["--parallelism", "2", "--parallel-min-bytes", "0"],
    );
}
