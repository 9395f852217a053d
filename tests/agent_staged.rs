//! Staged restores of the real `dataguardian agent` against real PostgreSQL and MariaDB: the
//! artifact lands in a staging database, is verified as the stream ends, masked, and only then
//! swapped in. A tampered artifact, a restore killed mid-stream, a target in use and a failing
//! guard all leave the target exactly as it was (every table's rows and checksum compared);
//! a masked restore's target never shows an unmasked row, checked while the restore runs.

mod agent_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_common::*;
use testkit::{FaultPlan, FaultyProxy, MariaDb, Moto, Postgres};

/// Flip one byte in the middle of the (uncompressed) artifact, on a lowercase hex digit so the
/// dump stays valid for the database: only the checksum can notice.
fn tamper(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    let pos = (mid..bytes.len())
        .find(|&i| bytes[i].is_ascii_hexdigit() && bytes[i].is_ascii_lowercase())
        .unwrap();
    bytes[pos] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn pg_databases(pg: &Postgres) -> Vec<String> {
    pg.psql(
        "postgres",
        "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

const MASKING: &str = r#"{"rules":[
  {"table":"public.customers","columns":[
     {"name":"name","expression":"'Customer ' || id"},
     {"name":"note","expression":"NULL"}]},
  {"sql":"DELETE FROM \"Odd \"\"Name\"\" Tbl\""}],
 "guard":"SELECT count(*) = 0 FROM customers WHERE name LIKE 'customer %'"}"#;

#[test]
fn postgres_staged_restores_swap_atomically_and_failures_leave_the_target_as_it_was() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 2);
    let source = pg_fingerprint(&pg, "shop");
    // The target holds other data, so a swap is visible.
    pg.create_database("prod").unwrap();
    pg.psql(
        "prod",
        "CREATE TABLE keepme (id int PRIMARY KEY, v text); INSERT INTO keepme SELECT g, md5(g::text) FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let before = pg_fingerprint(&pg, "prod");
    let uri = pg.uri("postgres");
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "good",
            "--compression",
            "none",
        ],
        &[("DG_URI", &pg.uri("shop"))],
    )
    .assert_ok();
    let good = format!("file://{}/good/manifest.json", tmp.path().display());
    let restore = |from: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--engine",
            "postgres",
            "--from",
            from,
            "--database",
            "prod",
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        run_agent(&args, &[("DG_URI", &uri)])
    };
    let untouched = |what: &str| {
        assert_eq!(
            pg_fingerprint(&pg, "prod"),
            before,
            "{what}: target changed"
        );
        assert!(
            !pg_databases(&pg).iter().any(|d| d.contains("_dgstaging")),
            "{what}: staging left behind: {:?}",
            pg_databases(&pg)
        );
    };

    // 1. A tampered artifact: the checksum fails as the stream ends; staging dropped.
    copy_dir(&tmp.path().join("good"), &tmp.path().join("bad"));
    tamper(&tmp.path().join("bad/databases/shop.pgdump"));
    let bad = format!("file://{}/bad/manifest.json", tmp.path().display());
    let run = restore(&bad, &[]);
    run.assert_failed("integrity");
    assert!(
        run.error().contains("the target was left as it was"),
        "{}",
        run.error()
    );
    untouched("tampered artifact");

    // 2. Killed mid-stream (SIGKILL, no cleanup possible): the download from S3 stalls
    // half-way, the agent is killed there; the target is as it was, and the leftover staging
    // database is dropped by the next attempt.
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    let (endpoint, shop_uri) = (moto.endpoint(), pg.uri("shop"));
    let mut env = s3_env();
    env.extend([
        ("DG_URI", shop_uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/p",
            "--run-id",
            "s3",
            "--compression",
            "none",
        ],
        &env,
    )
    .assert_ok();
    let size = moto
        .get_object("backups", "p/s3/databases/shop.pgdump")
        .unwrap()
        .len() as u64;
    let proxy =
        FaultyProxy::start(moto.addr(), FaultPlan::StallDownloadAfterBytes(size / 2)).unwrap();
    let mut child = agent_command();
    child
        .args([
            "agent",
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/p/s3/manifest.json",
            "--database",
            "prod",
            "--overwrite",
        ])
        .env("DG_URI", &uri)
        .env("DG_S3_ENDPOINT", proxy.endpoint())
        .env("DG_S3_PATH_STYLE", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in s3_env() {
        child.env(k, v);
    }
    let mut child = child.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().bytes_down < size / 2 {
        assert!(
            Instant::now() < deadline,
            "the restore never read half the artifact"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the restore ended before it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        pg_fingerprint(&pg, "prod"),
        before,
        "killed mid-stream: target changed"
    );
    assert!(pg_databases(&pg).contains(&"prod_dgstaging".to_string()));

    // 3. A failing guard (the rules do not mask everything it checks).
    let weak = r#"{"rules":[{"sql":"UPDATE customers SET note = NULL"}],"guard":"SELECT count(*) = 0 FROM customers WHERE name LIKE 'customer %'"}"#;
    let run = restore(&good, &["--masking", weak]);
    run.assert_failed("target");
    assert!(run.error().contains("guard failed"), "{}", run.error());
    untouched("failing guard");

    // 3b. A rule carrying a psql meta-command runs nothing in the agent: psql is restricted.
    let marker = tmp.path().join("pwned");
    let hostile = serde_json::json!({"rules": [{"sql": format!("SELECT 1;\n\\! touch {}", marker.display())}]}).to_string();
    let run = restore(&good, &["--masking", &hostile]);
    run.assert_failed("target");
    assert!(run.error().contains("masking failed"), "{}", run.error());
    assert!(!marker.exists(), "a meta-command in a masking rule ran");
    untouched("hostile masking rule");

    // 4. A target in use is refused without --terminate-sessions.
    let mut session = pg
        .client_command("psql")
        .args(["-X", "-q", "-d", "prod", "-c", "SELECT pg_sleep(120)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'prod'",
        )
        .unwrap()
        .trim()
        == "0"
    {
        assert!(Instant::now() < deadline, "the session never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = restore(&good, &[]);
    run.assert_failed("target");
    assert!(run.error().contains("target in use"), "{}", run.error());
    untouched("target in use");

    // 5. Masked, with --terminate-sessions, keeping the previous target: a poller watches the
    // target the whole time and never sees an unmasked customer.
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_unmasked, polls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (stop, seen, polls) = (stop.clone(), seen_unmasked.clone(), polls.clone());
        let mut cmd_base = pg.client_command("psql");
        cmd_base.args(["-X", "-q", "-A", "-t", "-d", "prod", "-c"]);
        let program = cmd_base.get_program().to_owned();
        let args: Vec<_> = cmd_base.get_args().map(|a| a.to_owned()).collect();
        let envs: Vec<_> = cmd_base
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new(&program)
                    .args(&args)
                    .arg("SELECT count(*) FROM customers WHERE name LIKE 'customer %' OR note IS NOT NULL")
                    .envs(envs.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                // Before the swap the table does not exist (an error): nothing unmasked.
                let n: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0);
                seen.fetch_add(n, Ordering::SeqCst);
                polls.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let run = restore(
        &good,
        &[
            "--masking",
            MASKING,
            "--terminate-sessions",
            "--keep-previous",
        ],
    );
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    run.assert_ok();
    assert!(
        session.wait().unwrap().code() != Some(0),
        "the session was terminated"
    );
    assert_eq!(
        seen_unmasked.load(Ordering::SeqCst),
        0,
        "an unmasked row was visible"
    );
    assert!(polls.load(Ordering::SeqCst) > 1);
    let swap = &run.summary["swap"];
    assert_eq!(swap["stagingDatabase"], "prod_dgstaging");
    assert_eq!(swap["maskingRules"], 2);
    assert_eq!(swap["guardPassed"], true);
    assert!(swap["sessionsTerminated"].as_u64().unwrap() >= 1, "{swap}");
    let previous = swap["previousDatabase"].as_str().unwrap().to_string();
    assert!(previous.starts_with("prod_dgprev_"), "{previous}");
    assert_eq!(swap["previousKept"], true);
    assert_eq!(
        pg_fingerprint(&pg, &previous),
        before,
        "the previous target kept as it was"
    );
    let after = pg_fingerprint(&pg, "prod");
    assert_eq!(after["public.customers"].0, 2000);
    assert_eq!(
        after["sales.orders"], source["sales.orders"],
        "unmasked tables as backed up"
    );
    assert_eq!(after["public.\"Odd \"\"Name\"\" Tbl\""].0, 0);
    assert_eq!(
        pg.psql("prod", "SELECT name FROM customers WHERE id = 7")
            .unwrap(),
        "Customer 7"
    );
    assert!(!after.contains_key("public.keepme"));
    assert_eq!(
        pg.psql("prod", "SELECT add_one(1)").unwrap(),
        "2",
        "functions restored"
    );
    assert!(!pg_databases(&pg).iter().any(|d| d.contains("_dgstaging")));

    // 6. The cleanup drops the kept previous target, and nothing else.
    let run = run_agent(
        &[
            "drop-previous",
            "--engine",
            "postgres",
            "--previous",
            "prod",
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_failed("config");
    assert!(pg_databases(&pg).contains(&"prod".to_string()));
    let run = run_agent(
        &[
            "drop-previous",
            "--engine",
            "postgres",
            "--previous",
            &previous,
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_ok();
    assert_eq!(run.summary["existed"], true);
    assert!(!pg_databases(&pg).contains(&previous));

    // 7. Without masking and without keeping: the target is exactly the backup, the previous
    // target is gone, and the artifact was read once.
    let run = restore(&good, &[]);
    run.assert_ok();
    assert_eq!(pg_fingerprint(&pg, "prod"), source);
    assert!(run.summary["swap"].get("previousDatabase").is_none());
    assert_eq!(run.summary["verifiedFirst"], false);
    let artifact = std::fs::metadata(tmp.path().join("good/databases/shop.pgdump")).unwrap();
    assert_eq!(run.summary["sizeBytes"], artifact.len());
    assert_eq!(
        pg_databases(&pg),
        vec!["postgres".to_string(), "prod".into(), "shop".into()]
    );

    // 8. A missing target is created by the swap itself.
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &good,
            "--database",
            "fresh",
            "--create-database",
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_ok();
    assert_eq!(pg_fingerprint(&pg, "fresh"), source);
}

#[test]
fn mariadb_staged_restores_swap_tables_and_recreate_views_routines_triggers() {
    let db = MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    my_fill(&db, "shop", 3000);
    db.sql(
        "shop",
        "CREATE TABLE people (id INT PRIMARY KEY, full_name VARCHAR(100), email VARCHAR(200), national_id VARCHAR(20));
         INSERT INTO people SELECT seq, CONCAT('Person ', seq), CONCAT('p', seq, '@mail.example'), LPAD(seq, 11, '9') FROM seq_1_to_300;
         CREATE VIEW people_v AS SELECT id, email FROM people;
         CREATE VIEW people_vv AS SELECT email FROM people_v;
         DELIMITER //
         CREATE PROCEDURE touch_people() BEGIN UPDATE people SET email = email; SELECT 1; END//
         DELIMITER ;",
    )
    .unwrap();
    let source = my_fingerprint(&db, "shop");
    db.create_database("prod").unwrap();
    db.sql(
        "prod",
        "CREATE TABLE keepme (id INT PRIMARY KEY, v TEXT); INSERT INTO keepme SELECT seq, MD5(seq) FROM seq_1_to_500;
         CREATE VIEW keep_v AS SELECT id FROM keepme;
         CREATE TRIGGER keep_bi BEFORE INSERT ON keepme FOR EACH ROW SET NEW.v = COALESCE(NEW.v, 'x');",
    )
    .unwrap();
    let before = my_fingerprint(&db, "prod");
    let objects = |name: &str| {
        db.sql(
            "",
            &format!(
                "SELECT CONCAT_WS(',', (SELECT GROUP_CONCAT(table_name ORDER BY 1) FROM information_schema.views WHERE table_schema = '{name}'), (SELECT GROUP_CONCAT(trigger_name ORDER BY 1) FROM information_schema.triggers WHERE trigger_schema = '{name}'), (SELECT GROUP_CONCAT(routine_name ORDER BY 1) FROM information_schema.routines WHERE routine_schema = '{name}'))"
            ),
        )
        .unwrap()
    };
    let before_objects = objects("prod");
    let schemas = || {
        db.sql(
            "",
            "SELECT GROUP_CONCAT(schema_name ORDER BY 1) FROM information_schema.schemata",
        )
        .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = db.uri("");
    run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            &to,
            "--run-id",
            "good",
            "--compression",
            "none",
        ],
        &[("DG_URI", &db.uri("shop"))],
    )
    .assert_ok();
    let good = format!("file://{}/good/manifest.json", tmp.path().display());
    let restore = |from: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--engine",
            "mysql",
            "--from",
            from,
            "--database",
            "prod",
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        run_agent(&args, &[("DG_URI", &uri)])
    };
    let untouched = |what: &str| {
        assert_eq!(
            my_fingerprint(&db, "prod"),
            before,
            "{what}: target changed"
        );
        assert_eq!(
            objects("prod"),
            before_objects,
            "{what}: target objects changed"
        );
        assert!(
            !schemas().contains("_dgstaging"),
            "{what}: staging left: {}",
            schemas()
        );
    };

    // A tampered artifact.
    copy_dir(&tmp.path().join("good"), &tmp.path().join("bad"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("bad/manifest.json")).unwrap())
            .unwrap();
    tamper(
        &tmp.path()
            .join("bad")
            .join(manifest["artifacts"][0]["key"].as_str().unwrap()),
    );
    let bad = format!("file://{}/bad/manifest.json", tmp.path().display());
    restore(&bad, &[]).assert_failed("integrity");
    untouched("tampered artifact");

    // A failing guard.
    let run = restore(
        &good,
        &[
            "--masking",
            r#"{"rules":[],"guard":"SELECT COUNT(*) = 0 FROM people"}"#,
        ],
    );
    run.assert_failed("target");
    assert!(run.error().contains("guard failed"), "{}", run.error());
    untouched("failing guard");

    // A rule carrying the mariadb client's own commands (`system`, `\!`) runs nothing in the
    // agent: the client runs in --binary-mode and sends them to the server, which refuses them.
    let marker = tmp.path().join("pwned");
    for command in ["system", "\\!"] {
        let hostile = serde_json::json!({"rules": [{"sql": format!("SELECT 1;\n{command} touch {}", marker.display())}]}).to_string();
        let run = restore(&good, &["--masking", &hostile]);
        run.assert_failed("target");
        assert!(run.error().contains("masking failed"), "{}", run.error());
        assert!(
            !marker.exists(),
            "a client command in a masking rule ran: {command}"
        );
        untouched("hostile masking rule");
    }

    // A session holding a lock on the target (an open transaction that read it): the RENAME
    // waits 30 s, gives up, and the target is as it was. With --terminate-sessions the session
    // (its default schema is the target) is killed and the swap goes through (below).
    let mut holder = db
        .client_command("mariadb")
        .args([
            "--batch",
            "--skip-column-names",
            "--unbuffered",
            "--database=prod",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder_in = holder.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut holder_in,
        b"START TRANSACTION;\nSELECT COUNT(*) FROM keepme;\n",
    )
    .unwrap();
    std::io::Write::flush(&mut holder_in).unwrap();
    // Its transaction has read the target once the client prints the count (--unbuffered
    // flushes after each statement); a client that died says why.
    let (read_tx, read_rx) = std::sync::mpsc::channel();
    let holder_out = holder.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(holder_out), &mut line);
        let _ = read_tx.send(line);
    });
    match read_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if line.trim() == "500" => {}
        Ok(line) => {
            let _ = holder.kill();
            let out = holder.wait_with_output().unwrap();
            panic!(
                "the lock holder printed {line:?} instead of the row count: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => {
            let _ = holder.kill();
            let out = holder.wait_with_output().unwrap();
            panic!(
                "the lock holder never read the target: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let run = restore(&good, &[]);
    run.assert_failed("target");
    assert!(run.error().contains("target in use"), "{}", run.error());
    untouched("target locked by a session");

    // Masked, keeping the previous target, killing the lock holder; a poller never sees a real
    // e-mail in the target.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let mut base = db.client_command("mariadb");
        base.args(["--batch", "--skip-column-names", "--database=prod", "-e"]);
        let program = base.get_program().to_owned();
        let args: Vec<_> = base.get_args().map(|a| a.to_owned()).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new(&program)
                    .args(&args)
                    .arg("SELECT COUNT(*) FROM people WHERE email LIKE '%@mail.example' OR national_id IS NOT NULL")
                    .output()
                    .unwrap();
                let n: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0);
                seen.fetch_add(n, Ordering::SeqCst);
            }
        })
    };
    let masking = r#"{"rules":[{"table":"people","columns":[
        {"name":"full_name","expression":"CONCAT('Person ', id)"},
        {"name":"email","expression":"CONCAT('user', id, '@example.invalid')"},
        {"name":"national_id","expression":"NULL"}]}],
      "guard":"SELECT COUNT(*) = 0 FROM people WHERE email NOT LIKE '%@example.invalid'"}"#;
    let run = restore(
        &good,
        &[
            "--masking",
            masking,
            "--keep-previous",
            "--terminate-sessions",
        ],
    );
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    run.assert_ok();
    assert!(
        run.summary["swap"]["sessionsTerminated"].as_u64().unwrap() >= 1,
        "{}",
        run.summary
    );
    drop(holder_in);
    let _ = holder.wait();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "an unmasked row was visible"
    );
    let after = my_fingerprint(&db, "prod");
    assert_eq!(after["orders"], source["orders"]);
    assert_eq!(after["customers"], source["customers"]);
    assert_eq!(after["people"].0, 300);
    assert!(!after.contains_key("keepme"));
    assert_eq!(
        db.sql(
            "prod",
            "SELECT COUNT(*) FROM people_vv WHERE email LIKE 'user%@example.invalid'"
        )
        .unwrap(),
        "300",
        "views on views recreated"
    );
    assert_eq!(db.sql("prod", "SELECT add_one(41)").unwrap(), "42");
    db.sql(
        "prod",
        "INSERT INTO orders (customer, amount) VALUES (1, NULL)",
    )
    .unwrap();
    assert_eq!(
        db.sql("prod", "SELECT amount FROM orders ORDER BY id DESC LIMIT 1")
            .unwrap(),
        "0.00",
        "the trigger moved with its table"
    );
    assert_eq!(
        db.sql("prod", "CALL touch_people()").unwrap(),
        "1",
        "procedures recreated"
    );
    let previous = run.summary["swap"]["previousDatabase"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        my_fingerprint(&db, &previous),
        before,
        "previous tables kept"
    );
    assert!(!schemas().contains("_dgstaging"));
    run_agent(
        &[
            "drop-previous",
            "--engine",
            "mysql",
            "--previous",
            &previous,
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
    assert!(!schemas().contains("_dgprev_"), "{}", schemas());

    // Unmasked, dropping the previous target: the target is the backup.
    restore(&good, &[]).assert_ok();
    assert_eq!(my_fingerprint(&db, "prod"), source);
    assert!(!schemas().contains("_dgprev_") && !schemas().contains("_dgstaging"));
}
