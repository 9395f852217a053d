//! Backup → restore round trips of the real `dataguardian agent` binary against real
//! PostgreSQL 15, MariaDB and moto S3: both engines, both sinks, with and without encryption,
//! comparing row counts and a content checksum per table.

mod agent_common;

use agent_common::*;
use testkit::{MariaDb, Moto, Postgres};

#[test]
fn postgres_file_encrypted_round_trip() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, secret) = age_keypair(tmp.path(), "id.txt");
    let store = tmp.path().join("backups");
    let term = tmp.path().join("termination-log");
    let to = format!("file://{}", store.display());
    let term_s = term.display().to_string();
    let uri = pg.uri("shop");

    // The password travels in DG_URI (environment), never argv.
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "r1",
            "--recipient",
            &public,
            "--termination-log",
            &term_s,
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_ok();
    run.assert_no_secret(pg.password());
    let s = &run.summary;
    assert_eq!(s["engine"], "postgres");
    assert!(s["serverVersion"].as_str().unwrap().starts_with("15"));
    assert_eq!(s["compression"], "zstd:3");
    let key = s["artifacts"][0]["key"].as_str().unwrap();
    assert_eq!(key, "databases/shop.pgdump.zst.age");
    let artifact = store.join("r1").join(key);
    let bytes = std::fs::read(&artifact).unwrap();
    assert_eq!(s["sizeBytes"].as_u64().unwrap(), bytes.len() as u64);
    assert_eq!(
        s["sha256"].as_str().unwrap(),
        dataguardian::agent::hash::sha256_hex(&bytes)
    );
    assert!(
        bytes.starts_with(b"age-encryption.org/v1"),
        "the artifact is age-encrypted"
    );
    assert!(s["rawBytes"].as_u64().unwrap() > s["sizeBytes"].as_u64().unwrap());
    assert!(s["durationSeconds"].as_f64().unwrap() > 0.0);
    // Progress is logged as structured JSON on stderr (the last line carries the totals).
    let progress: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "progress")
        .collect();
    let last = progress.last().expect("progress lines on stderr");
    assert_eq!(last["phase"], "backup");
    assert_eq!(last["done"], true);
    assert_eq!(last["bytes_in"], s["rawBytes"]);
    assert_eq!(last["bytes_out"], s["sizeBytes"]);

    // Row counts in the summary and manifest are the real ones.
    let counts = summary_counts(s);
    let expected: std::collections::BTreeMap<String, u64> = before
        .iter()
        .map(|(k, v)| {
            (
                k.replace('"', "")
                    .replace("Odd Name Tbl", "Odd \"Name\" Tbl"),
                v.0,
            )
        })
        .collect();
    assert_eq!(counts.get("sales.orders"), Some(&3000));
    assert_eq!(counts.get("public.customers"), Some(&2000));
    assert_eq!(counts.get("public.empty_table"), Some(&0));
    assert_eq!(counts.get("public.Odd \"Name\" Tbl"), Some(&4));
    assert_eq!(counts.len(), expected.len(), "{counts:?} vs {expected:?}");

    // Manifest: written, holds fingerprints, never the identity; no temp files remain.
    let manifest_text = std::fs::read_to_string(store.join("r1/manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(
        manifest["encryption"]["recipients"][0],
        dataguardian::agent::crypto::fingerprint(&public)
    );
    assert!(!manifest_text.contains(&secret) && !manifest_text.contains(&public));
    assert_eq!(
        files_below(&store.join("r1")),
        vec![key.to_string(), "manifest.json".to_string()]
    );

    // The termination message is the same summary.
    let term_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).unwrap()).unwrap();
    assert_eq!(term_json["sha256"], s["sha256"]);

    // A second backup with the same run id refuses to overwrite.
    let again = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "r1",
        ],
        &[("DG_URI", &uri)],
    );
    again.assert_failed("config");

    // Restore into a fresh database.
    let from = format!("file://{}/r1/manifest.json", store.display());
    let identity_s = identity.display().to_string();
    let restore = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--identity-file",
            &identity_s,
            "--create-database",
            "--database",
            "copy",
        ],
        &[("DG_URI", &uri)],
    );
    restore.assert_ok();
    restore.assert_no_secret(&secret);
    assert_eq!(restore.summary["checksumVerified"], true);
    assert_eq!(pg_fingerprint(&pg, "copy"), before);
    assert_eq!(pg.psql("copy", "SELECT add_one(41)").unwrap(), "42");
    assert_eq!(
        pg.psql("copy", "SELECT count(*) FROM big_orders").unwrap(),
        pg.psql("shop", "SELECT count(*) FROM big_orders").unwrap()
    );

    // Restoring again into the now non-empty database is refused without --overwrite/--clean.
    let refused = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--identity-file",
            &identity_s,
            "--database",
            "copy",
        ],
        &[("DG_URI", &uri)],
    );
    refused.assert_failed("target");
    assert!(refused.error().contains("not empty"), "{}", refused.error());
    // With --clean it replaces the content.
    pg.psql(
        "copy",
        "DELETE FROM empty_table; INSERT INTO empty_table VALUES (1)",
    )
    .unwrap();
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--identity-file",
            &identity_s,
            "--database",
            "copy",
            "--clean",
            "--overwrite",
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy"), before);
}

#[test]
fn postgres_s3_round_trips_plain_multipart_and_encrypted_gzip() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 5); // ~15 MB raw: several 5 MiB parts uncompressed
    let before = pg_fingerprint(&pg, "shop");
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    let uri = pg.uri("shop");
    env.push(("DG_URI", &uri));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));

    // Plain, uncompressed, 5 MiB parts: a real multipart upload with several parts.
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/team/shop",
            "--run-id",
            "plain",
            "--compression",
            "none",
            "--s3-part-size-mib",
            "5",
        ],
        &env,
    );
    run.assert_ok();
    let size = run.summary["sizeBytes"].as_u64().unwrap();
    assert!(
        size > 10 << 20,
        "dump should span several parts, got {size}"
    );
    assert_eq!(
        run.summary["location"],
        "s3://backups/team/shop/plain/manifest.json"
    );
    let stored = moto
        .get_object("backups", "team/shop/plain/databases/shop.pgdump")
        .unwrap();
    assert_eq!(stored.len() as u64, size);
    assert_eq!(
        run.summary["sha256"].as_str().unwrap(),
        dataguardian::agent::hash::sha256_hex(&stored)
    );
    assert_eq!(open_multipart_uploads(&moto, "backups"), 0);
    assert_eq!(
        summary_counts(&run.summary).get("sales.orders"),
        Some(&15000)
    );

    let restore = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/team/shop/plain/manifest.json",
            "--create-database",
            "--database",
            "copy_plain",
            "--verify-first",
        ],
        &env,
    );
    restore.assert_ok();
    assert_eq!(restore.summary["verifiedFirst"], true);
    assert_eq!(pg_fingerprint(&pg, "copy_plain"), before);

    // Encrypted, gzip.
    let (public, identity, _) = age_keypair(tmp.path(), "id.txt");
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/team/shop",
            "--run-id",
            "enc",
            "--compression",
            "gzip:1",
        ],
        &[env.as_slice(), &[("DG_RECIPIENTS", public.as_str())]].concat(),
    );
    run.assert_ok();
    assert_eq!(
        run.summary["artifacts"][0]["key"],
        "databases/shop.pgdump.gz.age"
    );
    assert!(run.summary["sizeBytes"].as_u64().unwrap() < size);
    let identity_s = identity.display().to_string();
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/team/shop/enc/manifest.json",
            "--identity-file",
            &identity_s,
            "--create-database",
            "--database",
            "copy_enc",
        ],
        &env,
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_enc"), before);
    assert_eq!(open_multipart_uploads(&moto, "backups"), 0);
}

#[test]
fn postgres_counts_come_from_the_dump_snapshot_under_concurrent_writes() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 20);
    pg.psql(
        "shop",
        "CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = pg.uri("shop");

    // A writer inserts into two tables continuously while the backup runs.
    let mut client = pg.client_command("psql");
    client.args(["-X", "-q", "-d", "shop", "-f", "-"]);
    let writer = LoopingWriter::start(client, b"INSERT INTO ticks DEFAULT VALUES; INSERT INTO sales.orders (customer, amount) VALUES (1, 5);\n");
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "busy",
            "--compression",
            "none",
        ],
        &[("DG_URI", &uri)],
    );
    writer.stop();
    run.assert_ok();
    let counts = summary_counts(&run.summary);
    assert!(
        counts["public.ticks"] > 0,
        "the writer was running during the backup"
    );

    let from = format!("file://{}/busy/manifest.json", tmp.path().display());
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--create-database",
            "--database",
            "copy",
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
    let restored = pg_fingerprint(&pg, "copy");
    for (table, (rows, _)) in &restored {
        let key = table
            .replace('"', "")
            .replace("Odd Name Tbl", "Odd \"Name\" Tbl");
        assert_eq!(
            counts.get(&key),
            Some(rows),
            "{table}: manifest count must equal the restored rows"
        );
    }
    // And the source has moved on since.
    let now: u64 = pg
        .psql("shop", "SELECT count(*) FROM ticks")
        .unwrap()
        .parse()
        .unwrap();
    assert!(now > counts["public.ticks"]);
}

#[test]
fn postgres_all_databases_with_globals() {
    let pg = Postgres::start().unwrap();
    for db in ["alpha", "beta"] {
        pg.create_database(db).unwrap();
    }
    pg_fill(&pg, "alpha", 1);
    pg.psql("beta", "CREATE TABLE notes (id int, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 500) g;").unwrap();
    pg.psql(
        "postgres",
        "CREATE ROLE reporting_team NOLOGIN; CREATE ROLE app_user LOGIN IN ROLE reporting_team;",
    )
    .unwrap();
    pg.psql("beta", "GRANT SELECT ON notes TO reporting_team;")
        .unwrap();
    let (alpha, beta) = (pg_fingerprint(&pg, "alpha"), pg_fingerprint(&pg, "beta"));
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--all-databases",
            "--to",
            &to,
            "--run-id",
            "all",
        ],
        &[("DG_URI", &pg.uri("postgres"))],
    );
    run.assert_ok();
    let keys: Vec<&str> = run.summary["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "globals.sql.zst",
            "databases/alpha.pgdump.zst",
            "databases/beta.pgdump.zst",
            "databases/postgres.pgdump.zst"
        ]
    );
    assert_eq!(run.summary["allDatabases"], true);

    // Restore everything into a second, empty server.
    let target = Postgres::start().unwrap();
    let from = format!("file://{}/all/manifest.json", tmp.path().display());
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--create-database",
        ],
        &[("DG_URI", &target.uri("postgres"))],
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&target, "alpha"), alpha);
    assert_eq!(pg_fingerprint(&target, "beta"), beta);
    assert_eq!(
        target
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname IN ('reporting_team', 'app_user')"
            )
            .unwrap(),
        "2"
    );
    assert_eq!(
        target
            .psql(
                "beta",
                "SELECT has_table_privilege('reporting_team', 'notes', 'SELECT')"
            )
            .unwrap(),
        "t"
    );
}

#[test]
fn mariadb_round_trips_file_plain_and_s3_encrypted() {
    let db = MariaDb::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    db.create_database("shop").unwrap();
    my_fill(&db, "shop", 8000);
    let before = my_fingerprint(&db, "shop");
    let tmp = tempfile::tempdir().unwrap();
    let uri = db.uri("shop");
    let to = format!("file://{}", tmp.path().display());

    // File sink, no encryption; the password is given through DG_PASSWORD, the URI in argv
    // carries none.
    let uri_no_pw = uri.replace(&format!(":{}@", db.password()), "@");
    let run = run_agent(
        &[
            "backup", "--engine", "mysql", "--uri", &uri_no_pw, "--to", &to, "--run-id", "plain",
        ],
        &[("DG_PASSWORD", db.password())],
    );
    run.assert_ok();
    run.assert_no_secret(db.password());
    assert!(
        run.summary["serverVersion"]
            .as_str()
            .unwrap()
            .contains("MariaDB")
    );
    assert_eq!(run.summary["artifacts"][0]["key"], "shop.sql.zst");
    let counts = summary_counts(&run.summary);
    for (table, (rows, _)) in &before {
        assert_eq!(
            counts.get(&format!("shop.{table}")),
            Some(rows),
            "{table}: {counts:?}"
        );
    }
    assert_eq!(
        counts.len(),
        before.len(),
        "views are not counted as tables: {counts:?}"
    );

    let from = format!("file://{}/plain/manifest.json", tmp.path().display());
    run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--create-database",
            "--database",
            "copy_plain",
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
    assert_eq!(my_fingerprint(&db, "copy_plain"), before);
    assert_eq!(db.sql("copy_plain", "SELECT add_one(41)").unwrap(), "42");
    assert_eq!(
        db.sql(
            "copy_plain",
            "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'copy_plain'"
        )
        .unwrap(),
        "1"
    );

    // S3 sink with age encryption.
    let (public, identity, _) = age_keypair(tmp.path(), "id.txt");
    let recipients_file = tmp.path().join("recipients.txt");
    std::fs::write(&recipients_file, format!("# ops team\n{public}\n")).unwrap();
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    env.push(("DG_URI", &uri));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));
    let rf = recipients_file.display().to_string();
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            "s3://backups/my",
            "--run-id",
            "enc",
            "--recipients-file",
            &rf,
        ],
        &env,
    );
    run.assert_ok();
    assert_eq!(run.summary["artifacts"][0]["key"], "shop.sql.zst.age");
    let identity_s = identity.display().to_string();
    run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            "s3://backups/my/enc/manifest.json",
            "--identity-file",
            &identity_s,
            "--create-database",
            "--database",
            "copy_enc",
            "--verify-first",
        ],
        &env,
    )
    .assert_ok();
    assert_eq!(my_fingerprint(&db, "copy_enc"), before);
    assert_eq!(open_multipart_uploads(&moto, "backups"), 0);

    // A non-empty target is refused, --clean replaces it.
    let refused = run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            "s3://backups/my/enc/manifest.json",
            "--identity-file",
            &identity_s,
            "--database",
            "copy_enc",
        ],
        &env,
    );
    refused.assert_failed("target");
    db.sql("copy_enc", "INSERT INTO empty_table VALUES (1)")
        .unwrap();
    run_agent(
        &[
            "restore",
            "--engine",
            "mysql",
            "--from",
            "s3://backups/my/enc/manifest.json",
            "--identity-file",
            &identity_s,
            "--database",
            "copy_enc",
            "--clean",
            "--overwrite",
        ],
        &env,
    )
    .assert_ok();
    assert_eq!(my_fingerprint(&db, "copy_enc"), before);
}

#[test]
fn s3_object_lock_and_sse_are_applied_to_every_object() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket_with_object_lock("locked").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let endpoint = moto.endpoint();
    let uri = pg.uri("shop");
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://locked/worm",
            "--run-id",
            "l",
            "--object-lock-mode",
            "GOVERNANCE",
            "--object-lock-days",
            "3",
            "--sse",
            "AES256",
        ],
        &env,
    );
    run.assert_ok();
    let client = moto.s3_client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for key in ["worm/l/databases/shop.pgdump.zst", "worm/l/manifest.json"] {
        let head = rt
            .block_on(client.head_object().bucket("locked").key(key).send())
            .unwrap();
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = head
            .object_lock_retain_until_date()
            .expect("retain-until set")
            .secs();
        let days = (until - chrono::Utc::now().timestamp()) as f64 / 86400.0;
        assert!(
            (2.9..=3.01).contains(&days),
            "{key}: retain-until in {days} days"
        );
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "{key}"
        );
    }
    // Missing half of the lock settings is refused by the command line.
    let out = agent_command()
        .args([
            "agent",
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://locked/x",
            "--object-lock-days",
            "3",
        ])
        .env("DG_URI", &uri)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
