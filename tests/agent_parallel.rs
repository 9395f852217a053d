//! The parallel layout of large PostgreSQL databases, with the real `dataguardian agent` binary
//! against real PostgreSQL 15: several `pg_dump`s in one exported snapshot (proved under
//! concurrent writes across artifacts), per-artifact checksums and per-table counts in the
//! manifest, parallel staged and in-place restores, a tampered part refused with the target
//! left as it was, validation on the parallel layout, and a restore by hand with the exact
//! commands documented in docs/restore-and-validation.md.

mod agent_common;

use std::collections::BTreeMap;

use agent_common::*;
use serde_json::Value;
use testkit::Postgres;

/// The agent's backup of `db` to `to/<run>` in the parallel layout (3 jobs, no size threshold).
fn parallel_backup(pg: &Postgres, db: &str, to: &str, run: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "backup",
        "--engine",
        "postgres",
        "--to",
        to,
        "--run-id",
        run,
        "--parallelism",
        "3",
        "--parallel-min-bytes",
        "0",
    ];
    args.extend_from_slice(extra);
    run_agent(&args, &[("DG_URI", &pg.uri(db))])
}

fn manifest(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// "schema.table" → (artifact key, rows) from the tableData artifacts' `dataTables`.
fn data_tables(m: &Value) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for a in m["artifacts"].as_array().unwrap() {
        if a["kind"] != "tableData" {
            continue;
        }
        for t in a["dataTables"].as_array().unwrap() {
            let name = format!(
                "{}.{}",
                t["schema"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            );
            let prev = out.insert(
                name.clone(),
                (
                    a["key"].as_str().unwrap().to_string(),
                    t["rows"].as_u64().unwrap(),
                ),
            );
            assert!(prev.is_none(), "{name} in two tableData artifacts");
        }
    }
    out
}

fn restore(pg: &Postgres, from: &str, db: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "restore",
        "--engine",
        "postgres",
        "--from",
        from,
        "--create-database",
        "--database",
        db,
    ];
    if !extra.contains(&"--parallelism") {
        args.extend(["--parallelism", "2"]);
    }
    args.extend_from_slice(extra);
    run_agent(&args, &[("DG_URI", &pg.uri("postgres"))])
}

/// Indexes and constraints of `db`, by name (the post-data section).
fn post_data(pg: &Postgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT string_agg(conname || ':' || contype::text, ',' ORDER BY conname) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ('public', 'sales')",
    )
    .unwrap()
}

#[test]
fn postgres_parallel_round_trip_checksums_counts_and_one_snapshot() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 10);
    pg.psql(
        "shop",
        "CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());
         CREATE INDEX orders_amount ON sales.orders (amount);
         SELECT setval('customers_id_seq', 5000);
         SELECT lo_from_bytea(4242, 'a large object');",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _secret) = age_keypair(tmp.path(), "id.txt");
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());

    // A writer adds one tick and one order per transaction while the backup runs: in one
    // snapshot both tables gain the same number of rows, whichever artifacts hold them.
    let mut client = pg.client_command("psql");
    client.args(["-X", "-q", "-d", "shop", "-f", "-"]);
    let writer = LoopingWriter::start(client, b"BEGIN; INSERT INTO ticks DEFAULT VALUES; INSERT INTO sales.orders (customer, amount) VALUES (1, -1); COMMIT;\n");
    let run = parallel_backup(&pg, "shop", &to, "par", &["--recipient", &public]);
    writer.stop();
    run.assert_ok();
    let before = pg_fingerprint(&pg, "shop");

    // The manifest: version 3, a database artifact and several tableData artifacts, each
    // object's size and SHA-256 what is on disk.
    let dir = store.join("par");
    let m = manifest(&dir);
    assert_eq!(m["formatVersion"], 3);
    let arts = m["artifacts"].as_array().unwrap();
    assert_eq!(arts[0]["kind"], "database");
    assert_eq!(arts[0]["key"], "databases/shop.pgdump.zst.age");
    let parts: Vec<&Value> = arts.iter().filter(|a| a["kind"] == "tableData").collect();
    assert!(parts.len() >= 2, "{m}");
    for a in arts {
        let key = a["key"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(key)).unwrap();
        assert_eq!(
            a["sizeBytes"].as_u64().unwrap(),
            bytes.len() as u64,
            "{key}"
        );
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            dataguardian::agent::hash::sha256_hex(&bytes),
            "{key}"
        );
        assert!(bytes.starts_with(b"age-encryption.org/v1"), "{key}");
        assert_eq!(a["database"], "shop");
    }
    for p in &parts {
        assert!(
            p["key"]
                .as_str()
                .unwrap()
                .starts_with("databases/shop.tables/"),
            "{p}"
        );
        assert!(p["tables"].as_array().unwrap().is_empty());
    }
    let mut keys: Vec<String> = arts
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    keys.push("manifest.json".into());
    keys.sort();
    assert_eq!(files_below(&dir), keys, "no other object, no temp file");

    // Counts: every table once in the database artifact, and in exactly one tableData
    // artifact with the same count; the summary's totals are not doubled.
    let counts = summary_counts(&run.summary);
    let placed = data_tables(&m);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert_eq!(
        placed.keys().collect::<Vec<_>>(),
        counts.keys().collect::<Vec<_>>()
    );
    for (t, (_, rows)) in &placed {
        assert_eq!(counts[t], *rows, "{t}");
    }
    assert_eq!(
        run.summary["rows"].as_u64().unwrap(),
        counts.values().sum::<u64>()
    );
    assert_ne!(
        placed["public.ticks"].0, placed["sales.orders"].0,
        "the two tables the writer touches are in different artifacts"
    );
    let ticks = counts["public.ticks"];
    assert!(ticks > 0, "the writer was running during the backup");
    assert_eq!(
        counts["sales.orders"],
        30_000 + ticks,
        "both artifacts and the counts saw one snapshot"
    );

    // Staged restore (the default), 2 sessions: the same data, functions, views, sequence
    // values, large objects, indexes and constraints as the source at the snapshot.
    let from = format!("file://{}/manifest.json", dir.display());
    let identity_s = identity.display().to_string();
    let r = restore(&pg, &from, "copy", &["--identity-file", &identity_s]);
    r.assert_ok();
    assert_eq!(r.summary["checksumVerified"], true);
    assert_eq!(r.summary["sha256"].as_array().unwrap().len(), arts.len());
    let restored = pg_fingerprint(&pg, "copy");
    for (t, (rows, _)) in &restored {
        let key = t
            .replace('"', "")
            .replace("Odd Name Tbl", "Odd \"Name\" Tbl");
        assert_eq!(counts.get(&key), Some(rows), "{t}");
    }
    for t in [
        "public.customers",
        "public.empty_table",
        "public.\"Odd \"\"Name\"\" Tbl\"",
    ] {
        assert_eq!(restored[t], before[t], "{t}");
    }
    assert_eq!(
        pg.psql(
            "copy",
            "SELECT count(*) FROM sales.orders WHERE amount = -1"
        )
        .unwrap(),
        pg.psql("copy", "SELECT count(*) FROM ticks").unwrap()
    );
    assert_eq!(pg.psql("copy", "SELECT add_one(41)").unwrap(), "42");
    assert_eq!(
        pg.psql("copy", "SELECT last_value FROM customers_id_seq")
            .unwrap(),
        "5000"
    );
    assert_eq!(
        pg.psql("copy", "SELECT convert_from(lo_get(4242), 'UTF8')")
            .unwrap(),
        "a large object"
    );
    assert_eq!(post_data(&pg, "copy"), post_data(&pg, "shop"));
    assert!(post_data(&pg, "copy").contains("orders_customer_fkey:f"));
    assert_eq!(
        pg.psql(
            "copy",
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_amount'"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%dgstaging%'"
        )
        .unwrap(),
        "0"
    );

    // In place into a new database, one session: the same.
    let r = restore(
        &pg,
        &from,
        "inplace",
        &[
            "--identity-file",
            &identity_s,
            "--staging",
            "in-place",
            "--parallelism",
            "1",
        ],
    );
    r.assert_ok();
    assert_eq!(pg_fingerprint(&pg, "inplace"), restored);

    // What the parallel layout cannot do is refused before the target is touched.
    let r = restore(
        &pg,
        &from,
        "inplace",
        &[
            "--identity-file",
            &identity_s,
            "--staging",
            "in-place",
            "--clean",
            "--overwrite",
        ],
    );
    r.assert_failed("config");
    assert!(r.error().contains("--clean in place"), "{}", r.error());
    let r = restore(
        &pg,
        &from,
        "other",
        &["--identity-file", &identity_s, "--single-transaction"],
    );
    r.assert_failed("config");
    assert!(r.error().contains("--single-transaction"), "{}", r.error());

    // A tampered tableData artifact: the staged restore fails on its checksum, the staging
    // database is dropped and the existing target keeps its data.
    pg.psql("copy", "CREATE TABLE marker (x int)").unwrap();
    let victim = dir.join(parts[0]["key"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let r = restore(
        &pg,
        &from,
        "copy",
        &["--identity-file", &identity_s, "--overwrite"],
    );
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        matches!(
            r.summary["category"].as_str(),
            Some("integrity") | Some("source")
        ),
        "{}",
        r.summary
    );
    assert_eq!(
        pg.psql(
            "copy",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        )
        .unwrap(),
        "1",
        "the target was left as it was"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%dgstaging%'"
        )
        .unwrap(),
        "0"
    );
}

#[test]
fn small_databases_keep_one_stream_and_one_job_is_one_stream() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    // The default threshold (256 MiB of tables) keeps this 10 MB database in one stream.
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "small",
            "--parallelism",
            "4",
        ],
        &[("DG_URI", &pg.uri("shop"))],
    );
    run.assert_ok();
    let m = manifest(&tmp.path().join("small"));
    assert_eq!(m["formatVersion"], 1);
    assert_eq!(m["artifacts"].as_array().unwrap().len(), 1);
    // One job: one stream whatever the size.
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "one",
            "--parallelism",
            "1",
            "--parallel-min-bytes",
            "0",
        ],
        &[("DG_URI", &pg.uri("shop"))],
    );
    run.assert_ok();
    assert_eq!(
        manifest(&tmp.path().join("one"))["artifacts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Out-of-range parallelism is refused by the flag parser.
    let bad = agent_command()
        .args([
            "agent",
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--parallelism",
            "0",
        ])
        .env("DG_URI", pg.uri("shop"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("0 is not in 1..=64"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn postgres_parallel_layout_validates_and_restores_by_hand_with_the_documented_commands() {
    let source = Postgres::start().unwrap();
    source.create_database("shop").unwrap();
    pg_fill(&source, "shop", 3);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    parallel_backup(&source, "shop", &to, "r1", &[]).assert_ok();
    let dir = store.join("r1");
    assert_eq!(manifest(&dir)["formatVersion"], 3);
    let before = pg_fingerprint(&source, "shop");

    // Validation into a fresh sandbox server: row counts from the database artifact pass.
    let sandbox = Postgres::start().unwrap();
    let from = format!("file://{}/manifest.json", dir.display());
    let checks = r#"[{"rowCounts": {}}, {"name": "fk", "schema": {"tables": ["sales.orders", "customers"]}}]"#;
    let v = run_agent(
        &[
            "validate",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--database",
            "shop",
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &sandbox.uri("postgres")), ("DG_CHECKS", checks)],
    );
    assert_eq!(v.code, 0, "stdout: {}\nstderr: {}", v.stdout, v.stderr);
    assert_eq!(v.summary["result"], "Passed", "{}", v.summary);
    let rc = check(&v.summary, "rowCounts-0");
    assert!(
        rc["expected"].as_str().unwrap().starts_with("4 tables"),
        "{rc}"
    );
    assert_eq!(rc["expected"], rc["observed"]);
    assert_eq!(pg_fingerprint(&sandbox, "shop"), before);

    // By hand: the exact block from the docs, with bash, zstd, jq, sha256sum and pg_restore.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/restore-and-validation.md"),
    )
    .unwrap();
    let block = doc
        .split("<!-- parallel-restore-by-hand:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- parallel-restore-by-hand:end -->").next())
        .expect("the documented block");
    let script = block
        .trim()
        .strip_prefix("```bash")
        .and_then(|s| s.strip_suffix("```"))
        .expect("a bash code block");
    let target = Postgres::start().unwrap();
    target.create_database("byhand").unwrap();
    let run_script = |db: &str| {
        let bin = source.bin_dir().display().to_string();
        std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PATH", format!("{bin}:{}", std::env::var("PATH").unwrap()))
            .env("BACKUP", &dir)
            .env("SOURCE_DB", "shop")
            .env("DB", db)
            .env("JOBS", "2")
            .env("PGHOST", target.host())
            .env("PGPORT", target.port().to_string())
            .env("PGUSER", target.user())
            .env("PGPASSWORD", target.password())
            .output()
            .unwrap()
    };
    let out = run_script("byhand");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pg_fingerprint(&target, "byhand"), before);
    assert_eq!(post_data(&target, "byhand"), post_data(&source, "shop"));
    assert_eq!(target.psql("byhand", "SELECT add_one(1)").unwrap(), "2");

    // The documented commands check the checksums first: a corrupted object stops them
    // before anything is restored.
    let m = manifest(&dir);
    let part = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "tableData")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = std::fs::read(dir.join(&part)).unwrap();
    bytes[10] ^= 1;
    std::fs::write(dir.join(&part), bytes).unwrap();
    target.create_database("corrupt").unwrap();
    let out = run_script("corrupt");
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("FAILED"), "{said}");
    assert_eq!(
        target
            .psql(
                "corrupt",
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .unwrap(),
        "0"
    );
}

#[test]
fn postgres_all_databases_to_s3_in_the_parallel_layout_with_grants_and_comments() {
    let pg = Postgres::start().unwrap();
    let moto = testkit::Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    for db in ["alpha", "beta"] {
        pg.create_database(db).unwrap();
    }
    pg_fill(&pg, "alpha", 4);
    pg.psql("beta", "CREATE TABLE notes (id int, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 500) g;").unwrap();
    pg.psql("postgres", "CREATE ROLE reporting_team NOLOGIN;")
        .unwrap();
    pg.psql(
        "alpha",
        "GRANT SELECT ON sales.orders TO reporting_team; COMMENT ON TABLE customers IS 'who buys';",
    )
    .unwrap();
    let (alpha, beta) = (pg_fingerprint(&pg, "alpha"), pg_fingerprint(&pg, "beta"));
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    let uri = pg.uri("postgres");
    env.push(("DG_URI", &uri));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--all-databases",
            "--to",
            "s3://backups/team",
            "--run-id",
            "all",
            "--parallelism",
            "2",
            "--parallel-min-bytes",
            "0",
            "--s3-part-size-mib",
            "5",
        ],
        &env,
    );
    run.assert_ok();
    let arts = run.summary["artifacts"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = arts
        .iter()
        .map(|a| (a["kind"].as_str().unwrap(), a["key"].as_str().unwrap()))
        .collect();
    // alpha and beta (two tables or more: one table is one stream) in the parallel layout,
    // each followed by its parts; the `postgres` database has no table: one stream.
    assert_eq!(kinds[0], ("globals", "globals.sql.zst"));
    assert_eq!(kinds[1], ("database", "databases/alpha.pgdump.zst"));
    assert!(
        kinds
            .iter()
            .any(|(k, key)| *k == "tableData" && key.starts_with("databases/alpha.tables/")),
        "{kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|(_, key)| key.starts_with("databases/beta.tables/")),
        "one table keeps one stream: {kinds:?}"
    );
    for a in arts {
        let key = format!("team/all/{}", a["key"].as_str().unwrap());
        let stored = moto.get_object("backups", &key).unwrap();
        assert_eq!(
            stored.len() as u64,
            a["sizeBytes"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            dataguardian::agent::hash::sha256_hex(&stored),
            "{key}"
        );
    }
    assert_eq!(open_multipart_uploads(&moto, "backups"), 0);

    // Everything into a second, empty server, in place (allDatabases), from S3.
    let target = Postgres::start().unwrap();
    let mut env = s3_env();
    let turi = target.uri("postgres");
    env.push(("DG_URI", &turi));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/team/all/manifest.json",
            "--create-database",
            "--parallelism",
            "2",
            "--verify-first",
        ],
        &env,
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&target, "alpha"), alpha);
    assert_eq!(pg_fingerprint(&target, "beta"), beta);
    assert_eq!(post_data(&target, "alpha"), post_data(&pg, "alpha"));
    assert_eq!(
        target
            .psql(
                "alpha",
                "SELECT has_table_privilege('reporting_team', 'sales.orders', 'SELECT')"
            )
            .unwrap(),
        "t"
    );
    assert_eq!(
        target
            .psql("alpha", "SELECT obj_description('customers'::regclass)")
            .unwrap(),
        "who buys"
    );
}

#[test]
fn mariadb_parallel_round_trip_in_one_snapshot() {
    let db = testkit::MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    my_fill(&db, "shop", 20000);
    db.sql(
        "shop",
        "CREATE TABLE ticks (id BIGINT AUTO_INCREMENT PRIMARY KEY, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let uri = db.uri("shop");

    // One tick and one order per transaction while the backup runs.
    let mut client = db.client_command("mariadb");
    client.args(["--batch", "--database=shop"]);
    let writer = LoopingWriter::start(client, b"BEGIN; INSERT INTO ticks () VALUES (); INSERT INTO orders (customer, amount, blob_text) VALUES (1, -1, 'w'); COMMIT;\n");
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            &to,
            "--run-id",
            "par",
            "--parallelism",
            "2",
            "--parallel-min-bytes",
            "0",
        ],
        &[("DG_URI", &uri)],
    );
    writer.stop();
    run.assert_ok();

    let dir = store.join("par");
    let m = manifest(&dir);
    assert_eq!(m["formatVersion"], 3, "{m}");
    let arts = m["artifacts"].as_array().unwrap();
    assert_eq!(arts[0]["kind"], "database");
    assert_eq!(arts[0]["key"], "shop.sql.zst");
    assert_eq!(arts.len(), 3, "the database artifact and one per job: {m}");
    for a in arts {
        let key = a["key"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(key)).unwrap();
        assert_eq!(
            a["sizeBytes"].as_u64().unwrap(),
            bytes.len() as u64,
            "{key}"
        );
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            dataguardian::agent::hash::sha256_hex(&bytes),
            "{key}"
        );
    }
    let counts = summary_counts(&run.summary);
    let placed = data_tables(&m);
    assert_eq!(
        placed.keys().collect::<Vec<_>>(),
        counts.keys().collect::<Vec<_>>(),
        "every base table in exactly one part, views not counted"
    );
    for (t, (_, rows)) in &placed {
        assert_eq!(counts[t], *rows, "{t}");
    }
    assert_ne!(
        placed["shop.ticks"].0, placed["shop.orders"].0,
        "{placed:?}"
    );
    let ticks = counts["shop.ticks"];
    assert!(ticks > 0, "the writer was running during the backup");
    assert_eq!(
        counts["shop.orders"],
        20_000 + ticks,
        "every dump started in the same state (one snapshot under the read lock)"
    );

    // Staged restore with 2 sessions: the rows, the view, the routine and the trigger.
    let from = format!("file://{}/manifest.json", dir.display());
    let r = run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--create-database",
            "--database",
            "copy",
            "--parallelism",
            "2",
        ],
        &[("DG_URI", &uri)],
    );
    r.assert_ok();
    let restored = my_fingerprint(&db, "copy");
    assert_eq!(restored.len(), counts.len());
    for (t, (rows, _)) in &restored {
        assert_eq!(counts.get(&format!("shop.{t}")), Some(rows), "{t}");
    }
    assert_eq!(
        db.sql("copy", "SELECT COUNT(*) FROM orders WHERE amount = -1")
            .unwrap(),
        db.sql("copy", "SELECT COUNT(*) FROM ticks").unwrap()
    );
    assert_eq!(db.sql("copy", "SELECT add_one(41)").unwrap(), "42");
    assert_eq!(
        db.sql(
            "copy",
            "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'copy'"
        )
        .unwrap(),
        "1"
    );
    assert!(
        db.sql("copy", "SELECT COUNT(*) FROM big_orders")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
}

#[test]
fn mariadb_all_databases_parallel_round_trip_in_one_snapshot_and_validation() {
    let db = testkit::MariaDb::start().unwrap();
    db.create_database("alpha").unwrap();
    my_fill(&db, "alpha", 20000);
    // A second database with its own character set, a trigger and a table as big as alpha's
    // orders (the two biggest tables go to different parts); a third with no table at all.
    db.sql(
        "",
        "CREATE DATABASE beta CHARACTER SET latin1 COLLATE latin1_swedish_ci;",
    )
    .unwrap();
    db.sql(
        "beta",
        "CREATE TABLE beta.notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT, src VARCHAR(10));
         INSERT INTO beta.notes (body, src) SELECT REPEAT(MD5(seq), 20), 'seed' FROM seq_1_to_20000;
         CREATE TABLE beta.audit (n INT);
         CREATE TRIGGER beta.notes_ai AFTER INSERT ON beta.notes FOR EACH ROW INSERT INTO beta.audit VALUES (NEW.id);
         CREATE DATABASE gamma;
         CREATE VIEW gamma.constants AS SELECT 42 AS answer;
         CREATE PROCEDURE gamma.hello() SELECT 'hello';",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let uri = db.uri("");

    // One order in alpha and one note in beta per transaction while the backup runs.
    let mut client = db.client_command("mariadb");
    client.args(["--batch"]);
    let writer = LoopingWriter::start(client, b"BEGIN; INSERT INTO alpha.orders (customer, amount, blob_text) VALUES (1, -1, 'w'); INSERT INTO beta.notes (body, src) VALUES ('w', 'writer'); COMMIT;\n");
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--all-databases",
            "--to",
            &to,
            "--run-id",
            "all",
            "--parallelism",
            "2",
            "--parallel-min-bytes",
            "0",
        ],
        &[("DG_URI", &uri)],
    );
    writer.stop();
    run.assert_ok();

    // The manifest: the all-databases artifact (every database's CREATE DATABASE, views,
    // routines, events) and one part per job, each part naming the database and table of
    // every table it holds; sizes and checksums are what is on disk.
    let dir = store.join("all");
    let m = manifest(&dir);
    assert_eq!(m["formatVersion"], 3, "{m}");
    assert_eq!(m["allDatabases"], true);
    let arts = m["artifacts"].as_array().unwrap();
    assert_eq!(arts[0]["kind"], "allDatabases");
    assert_eq!(arts[0]["key"], "all-databases.sql.zst");
    assert_eq!(arts.len(), 3, "the schemas and one part per job: {m}");
    for a in arts {
        let key = a["key"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(key)).unwrap();
        assert_eq!(
            a["sizeBytes"].as_u64().unwrap(),
            bytes.len() as u64,
            "{key}"
        );
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            dataguardian::agent::hash::sha256_hex(&bytes),
            "{key}"
        );
        assert!(a.get("database").is_none(), "{a}");
    }
    for p in &arts[1..] {
        assert_eq!(p["kind"], "tableData");
        assert!(
            p["key"]
                .as_str()
                .unwrap()
                .starts_with("all-databases.tables/"),
            "{p}"
        );
    }
    let counts = summary_counts(&run.summary);
    let placed = data_tables(&m);
    assert_eq!(
        placed.keys().collect::<Vec<_>>(),
        counts.keys().collect::<Vec<_>>(),
        "every base table of every user database in exactly one part"
    );
    for (t, (_, rows)) in &placed {
        assert_eq!(counts[t], *rows, "{t}");
    }
    for t in [
        "alpha.orders",
        "alpha.odd`name",
        "alpha.empty_table",
        "beta.notes",
        "beta.audit",
    ] {
        assert!(counts.contains_key(t), "{t} in {counts:?}");
    }
    assert!(
        !counts.keys().any(|t| t.starts_with("information_schema.")
            || t.starts_with("performance_schema.")
            || t.starts_with("sys.")),
        "{counts:?}"
    );
    assert_ne!(
        placed["alpha.orders"].0, placed["beta.notes"].0,
        "{placed:?}"
    );
    let written = counts["beta.notes"] - 20_000;
    assert!(written > 0, "the writer was running during the backup");
    assert_eq!(
        counts["alpha.orders"],
        20_000 + written,
        "both databases' parts started in the same snapshot"
    );
    assert_eq!(
        counts["beta.audit"], written,
        "the trigger fired once per note"
    );

    // Everything into a second, empty server, 2 sessions: the rows, the character set, the
    // views, routines and triggers, the database without tables.
    let target = testkit::MariaDb::start().unwrap();
    let from = format!("file://{}/manifest.json", dir.display());
    let r = run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--parallelism",
            "2",
        ],
        &[("DG_URI", &target.uri(""))],
    );
    r.assert_ok();
    assert_eq!(r.summary["checksumVerified"], true);
    for name in ["alpha", "beta"] {
        let restored = my_fingerprint(&target, name);
        assert!(!restored.is_empty(), "{name}");
        for (t, (rows, _)) in &restored {
            assert_eq!(counts.get(&format!("{name}.{t}")), Some(rows), "{name}.{t}");
        }
    }
    assert_eq!(
        my_fingerprint(&target, "alpha")["customers"],
        my_fingerprint(&db, "alpha")["customers"]
    );
    assert_eq!(
        target
            .sql(
                "",
                "SELECT default_character_set_name FROM information_schema.schemata WHERE schema_name = 'beta'"
            )
            .unwrap(),
        "latin1"
    );
    assert_eq!(
        target
            .sql("alpha", "SELECT COUNT(*) FROM orders WHERE amount = -1")
            .unwrap(),
        written.to_string()
    );
    assert_eq!(target.sql("alpha", "SELECT add_one(41)").unwrap(), "42");
    assert!(
        target
            .sql("alpha", "SELECT COUNT(*) FROM big_orders")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(
        target
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema IN ('alpha', 'beta')"
            )
            .unwrap(),
        "2"
    );
    assert_eq!(
        target.sql("gamma", "SELECT answer FROM constants").unwrap(),
        "42"
    );
    assert_eq!(target.sql("gamma", "CALL hello()").unwrap(), "hello");

    // A validation into a fresh sandbox server: the row counts of every database pass.
    let sandbox = testkit::MariaDb::start().unwrap();
    let checks = r#"[{"rowCounts": {}}]"#;
    let v = run_agent(
        &[
            "validate",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--wait-seconds",
            "30",
        ],
        &[("DG_URI", &sandbox.uri("")), ("DG_CHECKS", checks)],
    );
    assert_eq!(v.code, 0, "stdout: {}\nstderr: {}", v.stdout, v.stderr);
    assert_eq!(v.summary["result"], "Passed", "{}", v.summary);
    let rc = check(&v.summary, "rowCounts-0");
    assert_eq!(rc["expected"], rc["observed"], "{rc}");
    assert!(
        rc["expected"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} tables", counts.len())),
        "{rc}"
    );

    // A tampered part: the restore fails on its checksum.
    let victim = dir.join(arts[1]["key"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let other = testkit::MariaDb::start().unwrap();
    let r = run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--verify-first",
        ],
        &[("DG_URI", &other.uri(""))],
    );
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.summary["category"], "integrity", "{}", r.summary);
    assert_eq!(
        other
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name IN ('alpha', 'beta', 'gamma')"
            )
            .unwrap(),
        "0",
        "--verify-first: nothing restored"
    );
}

/// The bash block between `<!-- {marker}:begin -->` and `<!-- {marker}:end -->` of
/// docs/restore-and-validation.md, as it is written there.
fn documented_block(marker: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/restore-and-validation.md"),
    )
    .unwrap();
    let block = doc
        .split(&format!("<!-- {marker}:begin -->"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- {marker}:end -->")).next())
        .unwrap_or_else(|| panic!("the documented block {marker}"));
    block
        .trim()
        .strip_prefix("```bash")
        .and_then(|s| s.strip_suffix("```"))
        .expect("a bash code block")
        .to_string()
}

#[test]
fn mariadb_layouts_restore_by_hand_with_the_documented_commands() {
    let source = testkit::MariaDb::start().unwrap();
    source.create_database("shop").unwrap();
    my_fill(&source, "shop", 3000);
    source
        .sql(
            "",
            "CREATE DATABASE beta; USE beta; CREATE TABLE beta.notes (id INT PRIMARY KEY, body TEXT);
             INSERT INTO beta.notes SELECT seq, MD5(seq) FROM seq_1_to_500;
             CREATE DATABASE gamma; CREATE VIEW gamma.constants AS SELECT 42 AS answer;",
        )
        .unwrap();
    let (shop, beta) = (
        my_fingerprint(&source, "shop"),
        my_fingerprint(&source, "beta"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _) = age_keypair(tmp.path(), "id.txt");
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let backup = |run: &str, all: bool, jobs: &str, extra: &[&str]| {
        let mut args = vec![
            "backup",
            "--engine",
            "mysql",
            "--to",
            &to,
            "--run-id",
            run,
            "--parallelism",
            jobs,
            "--parallel-min-bytes",
            "0",
        ];
        if all {
            args.push("--all-databases");
        }
        args.extend_from_slice(extra);
        let uri = source.uri(if all { "" } else { "shop" });
        run_agent(&args, &[("DG_URI", &uri)]).assert_ok();
        let m = manifest(&store.join(run));
        m["formatVersion"].as_u64().unwrap()
    };
    assert_eq!(backup("single", false, "1", &[]), 1);
    assert_eq!(backup("par", false, "2", &["--recipient", &public]), 3);
    assert_eq!(backup("allpar", true, "2", &[]), 3);

    // The encrypted backup's data key, unwrapped with docs/disaster-recovery.md's own block.
    let dr = include_str!("../docs/disaster-recovery.md");
    let unwrap = dr
        .split("```sh dr-unwrap-age")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the dr-unwrap-age block");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{unwrap}"))
        .current_dir(store.join("par"))
        .env("AGE_IDENTITY", &identity)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data_key = store.join("par").join("data-key.txt");

    let script = documented_block("mariadb-restore-by-hand");
    // The client's connection from ~/.my.cnf, as the page says.
    let run_script = |target: &testkit::MariaDb, run: &str, db: &str| {
        let home = tmp.path().join(format!("home-{}", target.port()));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::copy(target.client_config(), home.join(".my.cnf")).unwrap();
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("HOME", &home)
            .env("BACKUP", store.join(run))
            .env("SOURCE_DB", "shop")
            .env("DB", db)
            .env("JOBS", "2")
            .env("IDENTITY", &data_key)
            .output()
            .unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let target = testkit::MariaDb::start().unwrap();
    for (run, db) in [("single", "from_single"), ("par", "from_par")] {
        target.create_database(db).unwrap();
        ok(run_script(&target, run, db));
        assert_eq!(my_fingerprint(&target, db), shop, "{run}");
        assert_eq!(target.sql(db, "SELECT add_one(1)").unwrap(), "2", "{run}");
        assert_eq!(
            target
                .sql(
                    "",
                    &format!("SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = '{db}'")
                )
                .unwrap(),
            "1",
            "{run}"
        );
    }
    let everything = testkit::MariaDb::start().unwrap();
    ok(run_script(&everything, "allpar", ""));
    assert_eq!(my_fingerprint(&everything, "shop"), shop);
    assert_eq!(my_fingerprint(&everything, "beta"), beta);
    assert_eq!(
        everything
            .sql("gamma", "SELECT answer FROM constants")
            .unwrap(),
        "42"
    );

    // The documented commands check the checksums first: a corrupted part stops them before
    // anything is restored.
    let m = manifest(&store.join("par"));
    let part = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "tableData")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let path = store.join("par").join(&part);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    target.create_database("corrupt").unwrap();
    let out = run_script(&target, "par", "corrupt");
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("FAILED"), "{said}");
    assert_eq!(
        target
            .sql(
                "",
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'corrupt'"
            )
            .unwrap(),
        "0"
    );
}
