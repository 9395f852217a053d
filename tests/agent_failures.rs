//! Failure paths of the real `dataguardian agent` binary: corrupted artifacts, wrong keys,
//! dumps that die, storage that fails mid-upload. Every failure must be reported (non-zero
//! exit, a failed JSON summary with a category), leave no manifest behind, and leave the
//! restore target untouched where promised.

mod agent_common;

use std::time::{Duration, Instant};

use agent_common::*;
use testkit::{FaultPlan, FaultyProxy, MariaDb, Moto, Postgres};

/// Flip one byte in the middle of `bytes`, at a position holding an ASCII hex digit so the
/// change stays valid text for the database (only the checksum can catch it).
fn flip_text_byte(bytes: &mut [u8]) -> usize {
    let mid = bytes.len() / 2;
    let pos = (mid..bytes.len())
        .find(|&i| bytes[i].is_ascii_hexdigit() && bytes[i].is_ascii_lowercase())
        .unwrap();
    bytes[pos] ^= 0x01;
    pos
}

#[test]
fn flipped_byte_fails_the_checksum_and_verify_first_leaves_the_target_untouched() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let uri = pg.uri("shop");
    let to = format!("file://{}", tmp.path().display());

    // File sink, zstd: the flipped byte is caught by --verify-first before the target exists.
    run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "z",
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
    let artifact = tmp.path().join("z/databases/shop.pgdump.zst");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&artifact, &bytes).unwrap();
    let from = format!("file://{}/z/manifest.json", tmp.path().display());
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--create-database",
            "--database",
            "copy",
            "--verify-first",
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_failed("integrity");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        )
        .unwrap(),
        "0",
        "target untouched"
    );

    // S3 sink, uncompressed and unencrypted: nothing but the SHA-256 can notice the change.
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
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
            "raw",
            "--compression",
            "none",
        ],
        &env,
    )
    .assert_ok();
    let key = "p/raw/databases/shop.pgdump";
    let mut bytes = moto.get_object("backups", key).unwrap();
    flip_text_byte(&mut bytes);
    moto.put_object("backups", key, bytes).unwrap();
    let from = "s3://backups/p/raw/manifest.json";
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            from,
            "--create-database",
            "--database",
            "copy2",
            "--verify-first",
        ],
        &env,
    );
    run.assert_failed("integrity");
    assert!(run.error().contains("SHA-256 mismatch"), "{}", run.error());
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy2'"
        )
        .unwrap(),
        "0"
    );

    // Without --verify-first the stream is restored, and the checksum at the end fails the run.
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            from,
            "--create-database",
            "--database",
            "copy3",
        ],
        &env,
    );
    run.assert_failed("integrity");
    assert!(run.error().contains("SHA-256 mismatch"), "{}", run.error());
}

#[test]
fn wrong_or_missing_identity_is_a_clear_error() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let (public, _right, _) = age_keypair(tmp.path(), "right.txt");
    let (_, wrong, wrong_secret) = age_keypair(tmp.path(), "wrong.txt");
    let uri = pg.uri("shop");
    let to = format!("file://{}", tmp.path().display());
    run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "e",
            "--recipient",
            &public,
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
    let from = format!("file://{}/e/manifest.json", tmp.path().display());
    let wrong_s = wrong.display().to_string();
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--identity-file",
            &wrong_s,
            "--create-database",
            "--database",
            "copy",
            "--verify-first",
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_failed("crypto");
    assert!(run.error().contains("wrong identity"), "{}", run.error());
    run.assert_no_secret(&wrong_secret);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        )
        .unwrap(),
        "0"
    );

    let run = run_agent(
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
    );
    run.assert_failed("config");
    assert!(run.error().contains("--identity-file"), "{}", run.error());

    // An identity given where a recipient belongs is refused (the backup side never needs it).
    let secret = std::fs::read_to_string(&wrong).unwrap();
    let secret_line = secret.lines().last().unwrap();
    let run = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "bad",
        ],
        &[("DG_URI", &uri), ("DG_RECIPIENTS", secret_line)],
    );
    run.assert_failed("config");
    run.assert_no_secret(secret_line);
}

#[test]
fn bad_credentials_and_passwords_in_argv_fail_without_a_manifest() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = pg.uri("shop").replace(pg.password(), "not-the-password");
    let run = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "x",
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_failed("source");
    assert!(
        run.error().contains("password authentication failed"),
        "{}",
        run.error()
    );
    run.assert_no_secret("not-the-password");
    assert!(
        files_below(tmp.path()).is_empty(),
        "nothing written: {:?}",
        files_below(tmp.path())
    );

    // A password inside --uri on the command line is refused before anything runs.
    let argv_uri = pg.uri("shop");
    let run = run_agent(
        &[
            "backup", "--engine", "postgres", "--uri", &argv_uri, "--to", &to,
        ],
        &[],
    );
    run.assert_failed("config");
    run.assert_no_secret(pg.password());

    let db = MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    let uri = db.uri("shop").replace(db.password(), "wrong-pw");
    let run = run_agent(
        &["backup", "--engine", "mysql", "--to", &to, "--run-id", "m"],
        &[("DG_URI", &uri)],
    );
    run.assert_failed("source");
    run.assert_no_secret("wrong-pw");
    assert!(files_below(tmp.path()).is_empty());
}

#[test]
fn database_killed_mid_dump_fails_and_aborts_the_multipart_upload() {
    let mut pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 40); // ~120 MB raw
    let proxy = FaultyProxy::start(moto.addr(), FaultPlan::PassThrough).unwrap();
    let endpoint = proxy.endpoint();
    let uri = pg.uri("shop");
    let mut cmd = agent_command();
    cmd.args([
        "agent",
        "backup",
        "--engine",
        "postgres",
        "--to",
        "s3://backups/k",
        "--run-id",
        "dies",
        "--compression",
        "none",
        "--s3-part-size-mib",
        "5",
    ]);
    for (k, v) in s3_env() {
        cmd.env(k, v);
    }
    cmd.env("DG_URI", &uri)
        .env("DG_S3_ENDPOINT", &endpoint)
        .env("DG_S3_PATH_STYLE", "true");
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until data is flowing to S3, then kill the database.
    let start = Instant::now();
    while proxy.stats().bytes_up < 6 << 20 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no upload started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.kill();
    let run = finish(child.wait_with_output().unwrap());
    run.assert_failed("source");
    assert!(run.error().contains("pg_dump"), "{}", run.error());
    assert_eq!(
        open_multipart_uploads(&moto, "backups"),
        0,
        "the multipart upload was aborted"
    );
    assert!(
        moto.list_keys("backups", "k/").unwrap().is_empty(),
        "no object, no manifest"
    );
}

#[test]
fn s3_failing_mid_upload_retries_then_aborts_cleanly() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 4); // ~12 MB raw
    let before = pg_fingerprint(&pg, "shop");
    let uri = pg.uri("shop");

    // Every connection is cut after 1 MiB: small requests pass, no 5 MiB part ever does.
    let proxy =
        FaultyProxy::start(moto.addr(), FaultPlan::CutEachConnectionAfterBytes(1 << 20)).unwrap();
    let endpoint = proxy.endpoint();
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    let args = [
        "backup",
        "--engine",
        "postgres",
        "--to",
        "s3://backups/f",
        "--compression",
        "none",
        "--s3-part-size-mib",
        "5",
        "--s3-retries",
        "2",
        "--s3-backoff-ms",
        "50",
    ];
    let run = run_agent(&[&args[..], &["--run-id", "broken"]].concat(), &env);
    run.assert_failed("storage");
    assert!(
        run.error().contains("UploadPart") && run.error().contains("after 3 attempts"),
        "{}",
        run.error()
    );
    assert!(
        proxy.stats().cuts >= 3,
        "each attempt was cut: {:?}",
        proxy.stats()
    );
    assert!(run.stderr.contains("retrying"), "retries are logged");
    assert_eq!(
        open_multipart_uploads(&moto, "backups"),
        0,
        "the multipart upload was aborted"
    );
    assert!(moto.list_keys("backups", "f/").unwrap().is_empty());

    // A transient cut is survived by the per-part retry; the backup restores.
    let cuts_before = proxy.stats().cuts;
    proxy.set_plan(FaultPlan::CutOnceAfterBytes(6 << 20));
    let run = run_agent(&[&args[..], &["--run-id", "flaky"]].concat(), &env);
    run.assert_ok();
    assert_eq!(
        proxy.stats().cuts,
        cuts_before + 1,
        "exactly one cut, survived: {:?}",
        proxy.stats()
    );
    assert_eq!(open_multipart_uploads(&moto, "backups"), 0);
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/f/flaky/manifest.json",
            "--create-database",
            "--database",
            "copy",
            "--verify-first",
        ],
        &env,
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy"), before);
}

/// A listener on 127.0.0.1 that counts the connections it accepts.
fn accept_counter() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

#[test]
fn an_s3_endpoint_at_a_refused_address_is_never_contacted_by_the_agent() {
    use std::sync::atomic::Ordering;
    let (port, accepted) = accept_counter();
    let restore = |endpoint: &str, allowed: &str| {
        let mut env = s3_env();
        env.push(("DG_EGRESS_ALLOW_CIDRS", allowed));
        env.push(("DG_URI", "postgres://restore@127.0.0.1:1/shop"));
        let started = Instant::now();
        let run = run_agent(
            &[
                "restore",
                "--engine",
                "postgres",
                "--from",
                "s3://backups/nightly/manifest.json",
                "--s3-endpoint",
                endpoint,
                "--s3-path-style",
                "--s3-retries",
                "0",
            ],
            &env,
        );
        (run, started.elapsed())
    };
    // Loopback when the operator allows nothing internal (by address and by name), the cloud
    // metadata address and a cluster address when it allows loopback only.
    let own = format!("http://127.0.0.1:{port}");
    let named = format!("http://localhost:{port}");
    for (endpoint, allowed) in [
        (own.as_str(), ""),
        (named.as_str(), ""),
        ("http://169.254.169.254", "127.0.0.0/8"),
        ("http://10.0.0.1:9000", "127.0.0.0/8"),
    ] {
        let (run, took) = restore(endpoint, allowed);
        run.assert_failed("storage");
        assert!(
            run.error().contains("egress policy refused"),
            "{endpoint}: {}",
            run.error()
        );
        assert!(took < Duration::from_secs(8), "{endpoint}: took {took:?}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a refused endpoint was contacted"
    );
    // Positive control: allowed, the same listener is contacted.
    let (run, _) = restore(&own, "127.0.0.0/8");
    assert_ne!(run.code, 0);
    assert!(accepted.load(Ordering::SeqCst) >= 1);
}

/// Finding 5: `extraArgs` reached pg_dump/pg_restore unchecked, so a policy could make the
/// dump write a file (`--file`), read one (`--filter`) or talk to another server (`--host`).
/// The agent refuses every option off the allow-list before it connects or writes anything;
/// allow-listed options still work.
#[test]
fn extra_args_off_the_allow_list_are_refused_before_anything_runs() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let uri = pg.uri("shop");
    let to = format!("file://{}", tmp.path().display());
    let stolen = out.path().join("stolen.dump");
    for (i, arg) in [
        format!("--dump-arg=--file={}", stolen.display()),
        "--dump-arg=-f/tmp/dg-stolen".to_string(),
        "--dump-arg=--host=127.0.0.2".to_string(),
        "--dump-arg=--filter=/proc/self/environ".to_string(),
        "--dump-arg=--snapshot=00000003-00000002-1".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let run_id = format!("bad{i}");
        let run = run_agent(
            &[
                "backup", "--engine", "postgres", "--to", &to, "--run-id", &run_id, arg,
            ],
            &[("DG_URI", &uri)],
        );
        run.assert_failed("config");
        assert!(run.error().contains("pg_dump"), "{arg}: {}", run.error());
        run.assert_no_secret(pg.password());
    }
    assert!(!stolen.exists(), "pg_dump never ran with --file");
    assert!(!std::path::Path::new("/tmp/dg-stolen").exists());
    assert!(
        files_below(tmp.path()).is_empty(),
        "{:?}",
        files_below(tmp.path())
    );

    // An allow-listed option passes and shapes the dump.
    run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            &to,
            "--run-id",
            "ok",
            "--dump-arg=--no-comments",
            "--dump-arg=--exclude-table-data=nothing_matches",
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();

    // pg_restore --file would write the decrypted dump to a file instead of the database.
    let from = format!("file://{}/ok/manifest.json", tmp.path().display());
    let written = out.path().join("restored.sql");
    let run = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--create-database",
            "--database",
            "copy",
            &format!("--restore-arg=--file={}", written.display()),
        ],
        &[("DG_URI", &uri)],
    );
    run.assert_failed("config");
    assert!(run.error().contains("pg_restore"), "{}", run.error());
    assert!(!written.exists());
    assert!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        )
        .unwrap()
        .trim()
            == "0",
        "the target was not created"
    );
}

/// Finding 9: `sslMode: VERIFY_CA`/`VERIFY_IDENTITY` became a bare `--ssl`, which the MariaDB
/// client treats as "TLS if available": against a server without a certificate the backup
/// went through in plaintext. A verify mode now verifies the certificate or fails; a server
/// without TLS (the test server has none) is refused before any data moves.
#[test]
fn mysql_verify_modes_never_fall_back_to_an_unverified_connection() {
    let db = MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    for mode in ["VERIFY_CA", "VERIFY_IDENTITY"] {
        let uri = format!("{}?ssl-mode={mode}", db.uri("shop"));
        let run = run_agent(
            &["backup", "--engine", "mysql", "--to", &to, "--run-id", mode],
            &[("DG_URI", &uri)],
        );
        run.assert_failed("source");
        assert!(run.error().contains("SSL"), "{mode}: {}", run.error());
        run.assert_no_secret(db.password());
        assert!(
            files_below(tmp.path()).is_empty(),
            "{mode}: nothing written: {:?}",
            files_below(tmp.path())
        );
    }
    // The same server with PREFERRED (the default) works: the refusals above are TLS's.
    let uri = format!("{}?ssl-mode=PREFERRED", db.uri("shop"));
    run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            &to,
            "--run-id",
            "preferred",
        ],
        &[("DG_URI", &uri)],
    )
    .assert_ok();
}
