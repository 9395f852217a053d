//! Issue 11, finding 3: the artifact is pinned. The real `dataguardian agent` against real
//! PostgreSQL, MariaDB and moto S3: a restore or validation given what the operator recorded
//! (`--manifest-sha256`, `--expect-encryption`, `--expect-recipient`, `--expect-scope`) refuses a
//! manifest swapped consistently with its artifact, one that claims "unencrypted" or other
//! recipients, and one that claims another scope — with an integrity error, before any
//! database is touched. Each test first shows the unpinned agent believing the bucket (the hole
//! the pin closes), then that the honest backup still restores with the pin.

mod agent_common;

use agent_common::*;
use testkit::{MariaDb, Moto, Postgres};

fn pg_db_count(pg: &Postgres) -> String {
    pg.psql("postgres", "SELECT count(*) FROM pg_database")
        .unwrap()
}

fn pg_db_exists(pg: &Postgres, db: &str) -> bool {
    pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    )
    .unwrap()
        == "1"
}

/// Copies every object under `from/` to `to/` (same relative keys), as an attacker with write
/// access to the bucket would.
fn copy_prefix(moto: &Moto, bucket: &str, from: &str, to: &str) {
    for key in moto.list_keys(bucket, &format!("{from}/")).unwrap() {
        let rel = key.strip_prefix(&format!("{from}/")).unwrap();
        let body = moto.get_object(bucket, &key).unwrap();
        moto.put_object(bucket, &format!("{to}/{rel}"), body)
            .unwrap();
    }
}

#[test]
fn a_manifest_swapped_with_its_artifact_is_refused_by_digest_before_the_target_is_touched() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    pg.create_database("evil").unwrap();
    pg.psql(
        "evil",
        "CREATE TABLE planted (x int); INSERT INTO planted VALUES (1)",
    )
    .unwrap();
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    env.extend([
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    let backup = |db: &str, run_id: &str| {
        let uri = pg.uri(db);
        let mut e = env.clone();
        e.push(("DG_URI", uri.as_str()));
        run_agent(
            &[
                "backup",
                "--engine",
                "postgres",
                "--to",
                "s3://backups/t",
                "--run-id",
                run_id,
            ],
            &e,
        )
    };
    let honest = backup("shop", "honest");
    honest.assert_ok();
    let digest = honest.summary["manifestSha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(digest.len(), 64);
    backup("evil", "evil").assert_ok();
    let honest_manifest = moto
        .get_object("backups", "t/honest/manifest.json")
        .unwrap();
    // The attacker rewrites both: the manifest and its artifact agree, every bucket hash matches.
    copy_prefix(&moto, "backups", "t/evil", "t/honest");

    let uri = pg.uri("postgres");
    let restore = |target: &str, pin: &[&str]| {
        let mut e = env.clone();
        e.push(("DG_URI", uri.as_str()));
        let mut args = vec![
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/t/honest/manifest.json",
            "--create-database",
            "--database",
            target,
            "--verify-first",
        ];
        args.extend_from_slice(pin);
        run_agent(&args, &e)
    };
    // Unpinned, the agent believes the bucket: the planted data lands in the target.
    restore("believed", &[]).assert_ok();
    assert_eq!(
        pg.psql("believed", "SELECT count(*) FROM planted").unwrap(),
        "1"
    );

    // Pinned to what the operator recorded: refused by digest, the target never created.
    let before = pg_db_count(&pg);
    let run = restore("pinned", &["--manifest-sha256", &digest]);
    run.assert_failed("integrity");
    assert!(
        run.error().contains("replaced or altered"),
        "{}",
        run.error()
    );
    assert!(run.error().contains(&digest), "{}", run.error());
    assert!(!pg_db_exists(&pg, "pinned"), "the target was not touched");
    assert_eq!(pg_db_count(&pg), before);
    // Also through the environment, as Jobs may pass it.
    let mut e = env.clone();
    e.extend([
        ("DG_URI", uri.as_str()),
        ("DG_MANIFEST_SHA256", digest.as_str()),
    ]);
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/t/honest/manifest.json",
            "--create-database",
            "--database",
            "pinned",
        ],
        &e,
    )
    .assert_failed("integrity");
    assert!(!pg_db_exists(&pg, "pinned"));

    // A digest that is not one is a configuration error, not a silent "no pin".
    restore("pinned", &["--manifest-sha256", "abc"]).assert_failed("config");

    // The honest manifest (with its original artifact, still in place) restores with the pin.
    moto.put_object("backups", "t/honest/manifest.json", honest_manifest)
        .unwrap();
    restore(
        "pinned",
        &[
            "--manifest-sha256",
            &digest,
            "--expect-encryption",
            "none",
            "--expect-scope",
            "Database",
        ],
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "pinned"), pg_fingerprint(&pg, "shop"));
}

#[test]
fn a_manifest_claiming_unencrypted_other_recipients_or_all_databases_is_refused() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _) = age_keypair(tmp.path(), "id.txt");
    let identity = identity.display().to_string();
    let store = tmp.path().join("store");
    let to = format!("file://{}", store.display());
    let uri = pg.uri("shop");
    let backup = |run_id: &str, extra: &[&str]| {
        let mut args = vec![
            "backup", "--engine", "postgres", "--to", &to, "--run-id", run_id,
        ];
        args.extend_from_slice(extra);
        let r = run_agent(&args, &[("DG_URI", &uri)]);
        r.assert_ok();
        r
    };
    let enc = backup("enc", &["--recipient", &public]);
    let fp = enc.summary["encryption"]["recipients"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fp.starts_with("sha256:"), "{fp}");
    let digest = enc.summary["manifestSha256"].as_str().unwrap().to_string();
    let honest_manifest = std::fs::read(store.join("enc/manifest.json")).unwrap();
    backup("plain", &[]);
    backup("all", &["--all-databases"]);

    let restore_uri = pg.uri("postgres");
    let restore = |run_id: &str, target: &str, extra: &[&str]| {
        let from = format!("file://{}/{run_id}/manifest.json", store.display());
        let mut args = vec![
            "restore",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--create-database",
            "--database",
            target,
            "--verify-first",
        ];
        args.extend_from_slice(extra);
        run_agent(&args, &[("DG_URI", &restore_uri)])
    };

    // The attacker replaces the encrypted backup by an unencrypted one of their choosing.
    std::fs::copy(
        store.join("plain/manifest.json"),
        store.join("enc/manifest.json"),
    )
    .unwrap();
    std::fs::create_dir_all(store.join("enc/databases")).unwrap();
    std::fs::copy(
        store.join("plain/databases/shop.pgdump.zst"),
        store.join("enc/databases/shop.pgdump.zst"),
    )
    .unwrap();
    // Unpinned, the "unencrypted" manifest is believed: no identity needed at all.
    restore("enc", "believed", &[]).assert_ok();
    // Pinned to encrypted-to-this-recipient (even without the digest): refused.
    let before = pg_db_count(&pg);
    let run = restore(
        "enc",
        "pinned",
        &[
            "--identity-file",
            &identity,
            "--expect-encryption",
            "age",
            "--expect-recipient",
            &fp,
        ],
    );
    run.assert_failed("integrity");
    assert!(
        run.error()
            .contains("says the backup is unencrypted, the backup recorded encrypted"),
        "{}",
        run.error()
    );
    assert_eq!(pg_db_count(&pg), before, "nothing was created");

    // The honest manifest back: other recipients than recorded are refused, the right ones pass.
    std::fs::write(store.join("enc/manifest.json"), &honest_manifest).unwrap();
    let run = restore(
        "enc",
        "pinned",
        &[
            "--identity-file",
            &identity,
            "--expect-encryption",
            "age",
            "--expect-recipient",
            "sha256:0000000000000000",
        ],
    );
    run.assert_failed("integrity");
    assert!(run.error().contains("recipients"), "{}", run.error());
    // Recipients without saying the backup is encrypted is a configuration error.
    restore("enc", "pinned", &["--expect-recipient", &fp]).assert_failed("config");
    assert_eq!(pg_db_count(&pg), before);

    // An all-databases manifest where one database was recorded: refused before the globals
    // or any database are written.
    let run = restore("all", "pinned", &["--expect-scope", "Database"]);
    run.assert_failed("integrity");
    assert!(
        run.error()
            .contains("scope AllDatabases, the backup recorded Database"),
        "{}",
        run.error()
    );
    assert_eq!(pg_db_count(&pg), before);

    restore(
        "enc",
        "pinned",
        &[
            "--identity-file",
            &identity,
            "--manifest-sha256",
            &digest,
            "--expect-encryption",
            "age",
            "--expect-recipient",
            &fp,
            "--expect-scope",
            "Database",
        ],
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "pinned"), pg_fingerprint(&pg, "shop"));
}

#[test]
fn a_validation_refuses_a_swapped_manifest_before_restoring_into_the_sandbox() {
    let source = Postgres::start().unwrap();
    source.create_database("shop").unwrap();
    pg_fill(&source, "shop", 1);
    let sandbox = Postgres::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = source.uri("shop");
    let honest = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "r",
        ],
        &[("DG_URI", &uri)],
    );
    honest.assert_ok();
    let digest = honest.summary["manifestSha256"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = tmp.path().join("r/manifest.json");
    let original = std::fs::read(&manifest).unwrap();
    // A consistent rewrite: still valid JSON with the same artifacts, other bytes.
    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    m["tool"] = "dataguardian attacker".into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let from = format!("file://{}/r/manifest.json", tmp.path().display());
    let sandbox_uri = sandbox.uri("postgres");
    let term = tmp.path().join("termination-log").display().to_string();
    let validate = |extra: &[&str]| {
        let mut args = vec![
            "validate",
            "--engine",
            "postgres",
            "--from",
            &from,
            "--database",
            "shop",
            "--termination-log",
            &term,
            "--wait-seconds",
            "30",
        ];
        args.extend_from_slice(extra);
        run_agent(&args, &[("DG_URI", &sandbox_uri)])
    };
    let run = validate(&["--manifest-sha256", &digest]);
    run.assert_failed("integrity");
    assert!(
        run.error().contains("replaced or altered"),
        "{}",
        run.error()
    );
    assert!(
        !pg_db_exists(&sandbox, "shop"),
        "nothing restored into the sandbox"
    );

    std::fs::write(&manifest, &original).unwrap();
    let run = validate(&[
        "--manifest-sha256",
        &digest,
        "--expect-encryption",
        "none",
        "--expect-scope",
        "Database",
    ]);
    assert_eq!(run.summary["result"], "Passed", "{}", run.summary);
}

#[test]
fn mariadb_restore_refuses_an_all_databases_manifest_in_place_of_one_database() {
    let db = MariaDb::start().unwrap();
    db.create_database("shop").unwrap();
    my_fill(&db, "shop", 200);
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = db.uri("shop");
    let one = run_agent(
        &[
            "backup", "--engine", "mysql", "--to", &to, "--run-id", "one",
        ],
        &[("DG_URI", &uri)],
    );
    one.assert_ok();
    let digest = one.summary["manifestSha256"].as_str().unwrap().to_string();
    let all_uri = db.uri("");
    run_agent(
        &[
            "backup",
            "--engine",
            "mysql",
            "--to",
            &to,
            "--run-id",
            "all",
            "--all-databases",
        ],
        &[("DG_URI", &all_uri)],
    )
    .assert_ok();
    // The attacker puts the all-databases backup (one SQL stream that names every database)
    // where the single-database one was.
    for f in std::fs::read_dir(tmp.path().join("all")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), tmp.path().join("one").join(f.file_name())).unwrap();
    }
    let from = format!("file://{}/one/manifest.json", tmp.path().display());
    let restore_uri = db.uri("copy");
    let databases = || {
        db.sql("", "SELECT count(*) FROM information_schema.schemata")
            .unwrap()
    };
    let before = databases();
    for pin in [
        vec!["--expect-scope", "Database"],
        vec!["--manifest-sha256", digest.as_str()],
    ] {
        let mut args = vec![
            "restore",
            "--engine",
            "mysql",
            "--from",
            &from,
            "--create-database",
            "--verify-first",
        ];
        args.extend(pin);
        let run = run_agent(&args, &[("DG_URI", &restore_uri)]);
        run.assert_failed("integrity");
        assert_eq!(databases(), before, "no database created or replaced");
    }
}
