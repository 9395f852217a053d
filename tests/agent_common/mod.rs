//! Helpers shared by the agent integration tests: run the real binary, generate age keys,
//! fill databases with varied data and fingerprint their content per table.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use serde_json::Value;

/// Result of one agent run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The JSON summary line (last line of stdout).
    pub summary: Value,
}

impl Run {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code,
            0,
            "agent failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            tail(&self.stderr)
        );
        assert_eq!(self.summary["status"], "succeeded");
        self
    }

    pub fn assert_failed(&self, category: &str) -> &Self {
        assert_ne!(
            self.code, 0,
            "agent unexpectedly succeeded: {}",
            self.stdout
        );
        assert_eq!(self.summary["status"], "failed", "stdout: {}", self.stdout);
        assert_eq!(
            self.summary["category"],
            category,
            "summary: {}\nstderr: {}",
            self.summary,
            tail(&self.stderr)
        );
        self
    }

    pub fn error(&self) -> String {
        self.summary["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Neither output contains `secret`.
    pub fn assert_no_secret(&self, secret: &str) {
        assert!(!self.stdout.contains(secret), "secret leaked on stdout");
        assert!(!self.stderr.contains(secret), "secret leaked on stderr");
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A command for the real binary with a clean environment (no inherited DG_/AWS_/PG or proxy
/// settings).
pub fn agent_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dataguardian"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DG_")
            || k.starts_with("AWS_")
            || k.starts_with("PG")
            || k == "MYSQL_PWD"
            || k.to_ascii_uppercase().ends_with("_PROXY")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("DG_PROGRESS_INTERVAL_SECONDS", "1");
    // The test services (moto, s3s) listen on loopback: the only internal range allowed.
    cmd.env("DG_EGRESS_ALLOW_CIDRS", "127.0.0.0/8");
    cmd
}

/// Run the agent with `args` and extra environment.
pub fn run_agent(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = agent_command();
    cmd.arg("agent").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(cmd.output().expect("run dataguardian"))
}

pub fn finish(out: Output) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout.lines().last().unwrap_or("").to_string();
    let summary = serde_json::from_str(&last).unwrap_or_else(|e| {
        panic!(
            "stdout's last line is not a JSON summary ({e}):\nstdout: {stdout}\nstderr: {}",
            tail(&stderr)
        )
    });
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one line on stdout: {stdout}"
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
        summary,
    }
}

/// An age key pair: (public key, path of an identity file in `dir`, the secret text).
pub fn age_keypair(dir: &Path, name: &str) -> (String, PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    let path = dir.join(name);
    std::fs::write(&path, format!("# test identity\n{secret}\n")).unwrap();
    (id.to_public().to_string(), path, secret)
}

/// S3 environment for the agent talking to moto (or a proxy in front of it).
pub fn s3_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", testkit::ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", testkit::SECRET_ACCESS_KEY),
        ("AWS_REGION", testkit::REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Fill a PostgreSQL database with tables of several shapes: numbers, text that compresses
/// poorly, bytea, jsonb, NULLs, awkward names and characters, an empty table, a second schema.
/// `scale` multiplies the big table (1 ≈ 3 MB of dump).
pub fn pg_fill(pg: &testkit::Postgres, db: &str, scale: u32) {
    let rows = 3000 * scale;
    pg.psql(db, &format!(r#"
        CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text, photo bytea, created timestamptz DEFAULT '2026-01-01');
        INSERT INTO customers (name, note, photo)
          SELECT 'customer ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE md5(g::text) || E'\t' || md5((g*3)::text) END,
                 decode(md5(g::text) || md5((g+1)::text), 'hex')
          FROM generate_series(1, 2000) g;
        CREATE SCHEMA sales;
        CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, amount numeric(12,2), payload jsonb, blob text);
        INSERT INTO sales.orders (customer, amount, payload, blob)
          SELECT 1 + g % 2000, (g * 1.37)::numeric(12,2), jsonb_build_object('k', g, 's', md5(g::text)),
                 (SELECT string_agg(md5((g * 31 + i)::text), '') FROM generate_series(1, 30) i)
          FROM generate_series(1, {rows}) g;
        CREATE TABLE "Odd ""Name"" Tbl" (t text);
        INSERT INTO "Odd ""Name"" Tbl" VALUES (E'line\nbreak'), ('quote '' and \ backslash'), ('ünïcödé ✓'), (NULL);
        CREATE TABLE empty_table (x int);
        CREATE VIEW big_orders AS SELECT * FROM sales.orders WHERE amount > 100;
        CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql AS 'SELECT i + 1';
    "#)).unwrap();
}

/// Per table: (rows, md5 over the rows' text in a stable order).
pub fn pg_fingerprint(pg: &testkit::Postgres, db: &str) -> BTreeMap<String, (u64, String)> {
    let tables = pg
        .psql(db, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1")
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables.lines().filter(|l| !l.is_empty()) {
        let row = pg
            .psql(db, &format!("SELECT count(*) || '|' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '-') FROM {t} x"))
            .unwrap();
        let (n, sum) = row.split_once('|').unwrap();
        out.insert(t.to_string(), (n.parse().unwrap(), sum.to_string()));
    }
    out
}

/// Fill a MariaDB database similarly (strings with quotes, parentheses and semicolons, blobs,
/// NULLs, an empty table, a view, a routine, a trigger).
pub fn my_fill(db: &testkit::MariaDb, name: &str, rows: u32) {
    db.sql(name, &format!(r#"
        CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, note TEXT, photo BLOB);
        CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT, amount DECIMAL(12,2), blob_text TEXT);
        CREATE TABLE empty_table (x INT);
        CREATE TABLE `odd``name` (t TEXT);
        INSERT INTO `odd``name` VALUES ('it''s (not) a row; really'), ('back\\slash'), ('line\nbreak'), (NULL), ('ünïcödé ✓');
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
        CREATE FUNCTION add_one(i INT) RETURNS INT DETERMINISTIC RETURN i + 1;
        CREATE TRIGGER orders_bi BEFORE INSERT ON orders FOR EACH ROW SET NEW.amount = COALESCE(NEW.amount, 0);
        INSERT INTO customers (name, note, photo)
          SELECT CONCAT('customer ', seq), IF(seq % 7 = 0, NULL, CONCAT(MD5(seq), '),(', MD5(seq * 3))), UNHEX(MD5(seq))
          FROM seq_1_to_2000;
        INSERT INTO orders (customer, amount, blob_text)
          SELECT 1 + seq % 2000, seq * 1.37, REPEAT(MD5(seq), 20) FROM seq_1_to_{rows};
    "#)).unwrap();
}

/// Per base table: (rows, CHECKSUM TABLE).
pub fn my_fingerprint(db: &testkit::MariaDb, name: &str) -> BTreeMap<String, (u64, String)> {
    let tables = db
        .sql("", &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{name}' AND table_type = 'BASE TABLE' ORDER BY 1"))
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables.lines().filter(|l| !l.is_empty()) {
        let q = t.replace('`', "``");
        let n = db
            .sql(name, &format!("SELECT COUNT(*) FROM `{q}`"))
            .unwrap();
        let sum = db.sql(name, &format!("CHECKSUM TABLE `{q}`")).unwrap();
        let sum = sum.split('\t').nth(1).unwrap_or("").to_string();
        out.insert(t.to_string(), (n.trim().parse().unwrap(), sum));
    }
    out
}

/// The per-table counts recorded in a backup summary: "schema.table" → rows.
pub fn summary_counts(summary: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for a in summary["artifacts"].as_array().unwrap() {
        for t in a["tables"].as_array().unwrap() {
            out.insert(
                format!(
                    "{}.{}",
                    t["schema"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                ),
                t["rows"].as_u64().unwrap(),
            );
        }
    }
    out
}

/// Files below `dir`, recursively, as relative paths.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Multipart uploads still open in a bucket.
pub fn open_multipart_uploads(moto: &testkit::Moto, bucket: &str) -> usize {
    let client = moto.s3_client();
    let bucket = bucket.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let out = client
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.uploads().len()
    })
}

/// The check named `name` in a validation summary.
pub fn check<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {summary}"))
}

/// The names of the summary's failed checks, in order.
pub fn failed_checks(summary: &serde_json::Value) -> Vec<&str> {
    summary["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "Failed")
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// Asserts that the check's message contains `text`.
pub fn assert_message_contains(check: &serde_json::Value, text: &str) {
    assert!(
        check["message"].as_str().unwrap_or_default().contains(text),
        "{text:?} not in {check}"
    );
}

/// A database client writing `statement` over and over, each in its own line, while a backup
/// runs (what a consistent snapshot must not split); running for 300 ms when `start` returns.
pub struct LoopingWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl LoopingWriter {
    /// Starts `client` (a `psql` or `mariadb` command reading statements from stdin).
    pub fn start(mut client: std::process::Command, statement: &'static [u8]) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        client
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut child = client.spawn().unwrap();
                let mut stdin = child.stdin.take().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    if stdin.write_all(statement).is_err() {
                        break;
                    }
                }
                drop(stdin);
                let _ = child.wait();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        LoopingWriter { stop, thread }
    }

    /// Stops writing and waits for the client to exit.
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}
