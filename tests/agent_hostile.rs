//! Hostile input against the agent, on real servers (issue 11, findings 1 and 2; rows of
//! docs/threat-model.md):
//!
//! - a RestoreValidation's `sql` checks written to run client meta-commands (`\!`, `\copy`,
//!   `system`, `source`), to read server files, or to leave the read-only transaction execute
//!   nothing: each fails with a clear message and leaves no trace;
//! - an artifact rewritten to carry client commands — its manifest updated to match, so every
//!   digest agrees — runs none of them during `agent restore`: the restore fails at that line.

mod agent_common;

use std::path::Path;

use agent_common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use testkit::{MariaDb, Postgres};

/// Rewrite the stored artifact `key` of the backup in `dir` (zstd, unencrypted) with `edit`,
/// and update the manifest so that its sizes and digest match: the bucket is consistent.
fn rewrite_artifact(dir: &Path, key: &str, edit: impl Fn(String) -> String) {
    let path = dir.join(key);
    let plain = zstd::decode_all(&std::fs::read(&path).unwrap()[..]).unwrap();
    let edited = edit(String::from_utf8(plain).unwrap());
    let stored = zstd::encode_all(edited.as_bytes(), 3).unwrap();
    std::fs::write(&path, &stored).unwrap();
    let manifest_path = dir.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let artifact = manifest["artifacts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| a["key"] == key)
        .unwrap();
    artifact["sha256"] = Value::from(hex::encode(Sha256::digest(&stored)));
    artifact["sizeBytes"] = Value::from(stored.len());
    artifact["rawBytes"] = Value::from(edited.len());
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

fn backup(uri: &str, engine: &str, to: &str, run_id: &str, extra: &[&str]) {
    let mut args = vec!["backup", "--engine", engine, "--to", to, "--run-id", run_id];
    args.extend_from_slice(extra);
    run_agent(&args, &[("DG_URI", uri)]).assert_ok();
}

#[test]
fn postgres_checks_cannot_run_client_commands_read_files_or_write() {
    let source = Postgres::start().unwrap();
    source.create_database("shop").unwrap();
    pg_fill(&source, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().join("b").display());
    backup(&source.uri("shop"), "postgres", &to, "r1", &[]);
    let sandbox = Postgres::start().unwrap();
    let f = |n: &str| tmp.path().join(n).display().to_string();
    let checks = serde_json::json!([
        {"name": "shell", "sql": format!("\\! touch {}", f("shell")), "expect": {"min": 0}},
        {"name": "copy", "sql": format!("\\copy (select 1) to '{}'", f("copy")), "expect": {"min": 0}},
        {"name": "after-select", "sql": format!("SELECT 1;\n\\! touch {}", f("after")), "expect": {"min": 0}},
        {"name": "lo-import", "sql": "\\lo_import '/etc/hostname'", "expect": {"min": 0}},
        {"name": "two-statements", "sql": "COMMIT; CREATE TABLE pwned (i int)", "expect": {"min": 0}},
        {"name": "leave-read-only", "sql": "SET transaction_read_only = off", "expect": {"min": 0}},
        {"name": "write", "sql": "CREATE TABLE pwned AS SELECT 1 AS i", "expect": {"min": 0}},
        {"name": "server-file", "sql": "SELECT length(pg_read_file('/etc/hostname'))", "expect": {"min": 0}},
        {"name": "server-copy", "sql": format!("COPY (SELECT 1) TO '{}'", f("server-copy")), "expect": {"min": 0}},
        {"name": "not-superuser", "sql": "SELECT current_setting('is_superuser')", "expect": {"equals": "off"}},
        {"name": "reads-data", "sql": "SELECT count(*) FROM sales.orders", "expect": {"min": 1}}
    ]);
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "postgres",
            "--from",
            &format!("{to}/r1/manifest.json"),
            "--database",
            "shop",
            "--wait-seconds",
            "30",
        ],
        &[
            ("DG_URI", &sandbox.uri("postgres")),
            ("DG_CHECKS", &checks.to_string()),
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    run.assert_no_secret(sandbox.password());
    let s = &run.summary;
    assert_eq!(s["reason"], "CheckFailed", "{s}");
    for name in [
        "shell",
        "copy",
        "after-select",
        "lo-import",
        "two-statements",
        "leave-read-only",
        "write",
        "server-file",
        "server-copy",
    ] {
        let c = check(s, name);
        assert_eq!(c["result"], "Failed", "{c}");
        assert_eq!(c["observed"], "error", "{c}");
    }
    let msg = |n: &str| check(s, n)["message"].as_str().unwrap().to_string();
    assert!(
        msg("two-statements").contains("multiple commands"),
        "{}",
        msg("two-statements")
    );
    assert!(
        msg("leave-read-only").contains("read-write mode must be set before any query"),
        "{}",
        msg("leave-read-only")
    );
    assert!(
        msg("server-file").contains("permission denied"),
        "{}",
        msg("server-file")
    );
    assert_eq!(check(s, "not-superuser")["result"], "Passed", "{s}");
    assert_eq!(check(s, "reads-data")["result"], "Passed", "{s}");
    for file in ["shell", "copy", "after", "server-copy"] {
        assert!(!tmp.path().join(file).exists(), "{file} was created");
    }
    assert_eq!(
        sandbox
            .psql(
                "shop",
                "SELECT count(*) FROM pg_class WHERE relname = 'pwned'"
            )
            .unwrap(),
        "0"
    );
}

#[test]
fn mariadb_checks_cannot_run_client_commands_read_files_or_write() {
    let source = MariaDb::start().unwrap();
    source.create_database("shop").unwrap();
    my_fill(&source, "shop", 50);
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().join("b").display());
    backup(&source.uri("shop"), "mysql", &to, "m1", &[]);
    let sandbox = MariaDb::start().unwrap();
    let f = |n: &str| tmp.path().join(n).display().to_string();
    let checks = serde_json::json!([
        {"name": "system", "sql": format!("system touch {}", f("system")), "expect": {"min": 0}},
        {"name": "shell", "sql": format!("\\! touch {}", f("shell")), "expect": {"min": 0}},
        {"name": "source", "sql": "source /etc/hostname", "expect": {"min": 0}},
        {"name": "two-statements", "sql": "SELECT 1; DROP DATABASE shop", "expect": {"min": 0}},
        {"name": "write", "sql": "CREATE TABLE pwned (i int)", "expect": {"min": 0}},
        {"name": "outfile", "sql": format!("SELECT 1 INTO OUTFILE '{}'", f("outfile")), "expect": {"min": 0}},
        {"name": "load-file", "sql": "SELECT LOAD_FILE('/etc/hostname')", "expect": {"min": 0}},
        {"name": "reads-data", "sql": "SELECT COUNT(*) FROM orders", "expect": {"min": 1}}
    ]);
    let run = run_agent(
        &[
            "validate",
            "--engine",
            "mysql",
            "--from",
            &format!("{to}/m1/manifest.json"),
            "--wait-seconds",
            "30",
        ],
        &[
            ("DG_URI", &sandbox.uri("")),
            ("DG_CHECKS", &checks.to_string()),
        ],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    run.assert_no_secret(sandbox.password());
    let s = &run.summary;
    for name in [
        "system",
        "shell",
        "source",
        "two-statements",
        "write",
        "outfile",
    ] {
        let c = check(s, name);
        assert_eq!(c["result"], "Failed", "{c}");
        assert_eq!(c["observed"], "error", "{c}");
    }
    // No FILE privilege: the server reads nothing for the check role.
    let c = check(s, "load-file");
    assert_eq!(
        (&c["result"], &c["observed"]),
        (&Value::from("Failed"), &Value::from("no rows")),
        "{c}"
    );
    assert_eq!(check(s, "reads-data")["result"], "Passed", "{s}");
    for file in ["system", "shell", "outfile"] {
        assert!(!tmp.path().join(file).exists(), "{file} was created");
    }
    assert_eq!(
        sandbox
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'pwned'"
            )
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(
        sandbox
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'shop'"
            )
            .unwrap()
            .trim(),
        "1"
    );
}

#[test]
fn a_rewritten_postgres_globals_artifact_runs_no_client_command() {
    let source = Postgres::start().unwrap();
    source.create_database("alpha").unwrap();
    pg_fill(&source, "alpha", 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let to = format!("file://{}", dir.display());
    backup(
        &source.uri("postgres"),
        "postgres",
        &to,
        "all",
        &["--all-databases"],
    );
    let marker = tmp.path().join("pwned-by-globals");
    let copied = tmp.path().join("copied-by-globals");
    rewrite_artifact(&dir.join("all"), "globals.sql.zst", |sql| {
        format!(
            "{sql}\n\\! touch {}\n\\copy (select 1) to '{}'\n\\unrestrict guess\n\\! touch {}\n",
            marker.display(),
            copied.display(),
            marker.display()
        )
    });
    let target = Postgres::start().unwrap();
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &format!("{to}/all/manifest.json"),
            "--create-database",
        ],
        &[("DG_URI", &target.uri("postgres"))],
    );
    run.assert_failed("target");
    assert!(
        run.error().contains("restricted"),
        "the refusal names psql's restricted mode: {}",
        run.error()
    );
    assert!(!marker.exists(), "a meta-command ran during the restore");
    assert!(!copied.exists(), "\\copy ran during the restore");
}

#[test]
fn a_rewritten_mariadb_artifact_runs_no_client_command() {
    let source = MariaDb::start().unwrap();
    source.create_database("shop").unwrap();
    my_fill(&source, "shop", 20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let to = format!("file://{}", dir.display());
    backup(&source.uri("shop"), "mysql", &to, "m1", &[]);
    let (shell, system) = (tmp.path().join("shell"), tmp.path().join("system"));
    let key = "shop.sql.zst";
    for (n, (line, marker)) in [
        (format!("\\! touch {}", shell.display()), &shell),
        (format!("system touch {}", system.display()), &system),
        ("source /etc/hostname".to_string(), &shell),
    ]
    .into_iter()
    .enumerate()
    {
        let run_dir = dir.join(format!("m{n}x"));
        copy_dir(&dir.join("m1"), &run_dir);
        rewrite_artifact(&run_dir, key, |sql| {
            // In the middle of the dump, where a real attacker would hide it.
            let at = sql.find("INSERT INTO").unwrap();
            format!("{}{line}\n{}", &sql[..at], &sql[at..])
        });
        let target = MariaDb::start().unwrap();
        let run = run_agent(
            &[
                "restore",
                "--engine",
                "mysql",
                "--from",
                &format!("{to}/m{n}x/manifest.json"),
                "--database",
                "restored",
                "--create-database",
            ],
            &[("DG_URI", &target.uri(""))],
        );
        run.assert_failed("target");
        assert!(!marker.exists(), "{line:?} ran during the restore");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
