//! `dataguardian agent copy` between two real S3 servers (two moto instances on loopback):
//! a copy is byte-identical and restores while the primary is down, carries the destination's
//! Object Lock, is idempotent, survives an outage of the secondary (fails cleanly, then catches
//! up), refuses a tampered source or a pinned manifest that differs, and a tampered copy is
//! refused by the restore.

mod agent_common;

use agent_common::*;
use testkit::{Moto, Postgres};

struct Pair {
    primary: Moto,
    secondary: Moto,
}

/// The environment of a copy from `primary` (bucket `main`) to `secondary` (bucket `replica`), each
/// side with its own credentials variables.
fn copy_env(pair: &Pair) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("AWS_REGION".into(), testkit::REGION.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("DG_FROM_S3_ENDPOINT".into(), pair.primary.endpoint()),
        ("DG_FROM_S3_PATH_STYLE".into(), "true".into()),
        ("DG_TO_S3_ENDPOINT".into(), pair.secondary.endpoint()),
        ("DG_TO_S3_PATH_STYLE".into(), "true".into()),
    ];
    for side in ["DG_FROM_", "DG_TO_"] {
        env.push((
            format!("{side}AWS_ACCESS_KEY_ID"),
            testkit::ACCESS_KEY_ID.into(),
        ));
        env.push((
            format!("{side}AWS_SECRET_ACCESS_KEY"),
            testkit::SECRET_ACCESS_KEY.into(),
        ));
    }
    env
}

fn copy(pair: &Pair, args: &[&str]) -> Run {
    let env = copy_env(pair);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_agent(&[&["copy"], args].concat(), &env)
}

fn backup(pg: &Postgres, moto: &Moto, run_id: &str, recipient: &str) -> Run {
    let uri = pg.uri("shop");
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
        ("DG_RECIPIENTS", recipient),
    ]);
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://main/shop/nightly",
            "--run-id",
            run_id,
        ],
        &env,
    );
    run.assert_ok();
    run
}

fn restore(pg: &Postgres, moto: &Moto, from: &str, digest: &str, identity: &str, db: &str) -> Run {
    let uri = pg.uri("shop");
    let endpoint = moto.endpoint();
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
        ("DG_S3_RETRIES", "0"),
    ]);
    run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            from,
            "--manifest-sha256",
            digest,
            "--identity-file",
            identity,
            "--verify-first",
            "--create-database",
            "--database",
            db,
        ],
        &env,
    )
}

fn head_lock(moto: &Moto, bucket: &str, key: &str) -> (Option<String>, Option<i64>) {
    let client = moto.s3_client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let head = rt
        .block_on(client.head_object().bucket(bucket).key(key).send())
        .unwrap();
    (
        head.object_lock_mode().map(|m| m.as_str().to_string()),
        head.object_lock_retain_until_date().map(|d| d.secs()),
    )
}

#[test]
fn a_copy_on_a_second_s3_server_restores_while_the_primary_is_down() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let pair = Pair {
        primary: Moto::start().unwrap(),
        secondary: Moto::start().unwrap(),
    };
    pair.primary.create_bucket("main").unwrap();
    pair.secondary
        .create_bucket_with_object_lock("replica")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, secret) = age_keypair(tmp.path(), "id.txt");
    let identity = identity.display().to_string();

    let b = backup(&pg, &pair.primary, "r1", &public);
    let digest = b.summary["manifestSha256"].as_str().unwrap().to_string();
    let from = "s3://main/shop/nightly/r1/manifest.json";
    let to = "s3://replica/replica/shop/nightly/r1/manifest.json";

    // A pinned digest that differs copies nothing.
    let refused = copy(
        &pair,
        &[
            "--from",
            from,
            "--to",
            to,
            "--manifest-sha256",
            &"a".repeat(64),
        ],
    );
    refused.assert_failed("integrity");
    assert!(pair.secondary.list_keys("replica", "").unwrap().is_empty());

    // The copy: artifacts then manifest, byte-identical, locked per the destination's settings.
    let c = copy(
        &pair,
        &[
            "--from",
            from,
            "--to",
            to,
            "--manifest-sha256",
            &digest,
            "--object-lock-mode",
            "GOVERNANCE",
            "--object-lock-days",
            "2",
        ],
    );
    c.assert_ok();
    c.assert_no_secret(testkit::SECRET_ACCESS_KEY);
    c.assert_no_secret(&secret);
    assert_eq!(c.summary["operation"], "copy");
    assert_eq!(c.summary["location"], to);
    assert_eq!(c.summary["manifestSha256"], digest.as_str());
    assert_eq!(c.summary["alreadyPresent"], false);
    assert_eq!(c.summary["sizeBytes"], b.summary["sizeBytes"]);
    assert_eq!(c.summary["sha256"][0], b.summary["sha256"]);
    let primary_keys = pair.primary.list_keys("main", "shop/nightly/r1/").unwrap();
    let copied_keys = pair
        .secondary
        .list_keys("replica", "replica/shop/nightly/r1/")
        .unwrap();
    assert_eq!(copied_keys.len(), primary_keys.len());
    for key in &primary_keys {
        let copied = format!("replica/{key}");
        assert_eq!(
            pair.secondary.get_object("replica", &copied).unwrap(),
            pair.primary.get_object("main", key).unwrap(),
            "{key}"
        );
        let (mode, until) = head_lock(&pair.secondary, "replica", &copied);
        assert_eq!(mode.as_deref(), Some("GOVERNANCE"), "{copied}");
        let days = (until.unwrap() - chrono::Utc::now().timestamp()) as f64 / 86400.0;
        assert!((1.9..=2.01).contains(&days), "{copied}: {days} days");
    }
    // Again: already there, nothing rewritten.
    let again = copy(
        &pair,
        &["--from", from, "--to", to, "--manifest-sha256", &digest],
    );
    again.assert_ok();
    assert_eq!(again.summary["alreadyPresent"], true);
    assert_eq!(again.summary["sizeBytes"], 0);

    // The primary goes away: the copy restores on its own, pinned to the recorded digest.
    let mut pair = pair;
    pair.primary.kill();
    let r = restore(&pg, &pair.secondary, to, &digest, &identity, "from_copy");
    r.assert_ok();
    assert_eq!(pg_fingerprint(&pg, "from_copy"), before);
}

#[test]
fn a_secondary_outage_fails_cleanly_then_catches_up_and_tampering_is_refused() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let mut pair = Pair {
        primary: Moto::start().unwrap(),
        secondary: Moto::start().unwrap(),
    };
    pair.primary.create_bucket("main").unwrap();
    pair.secondary.create_bucket("replica").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, _) = age_keypair(tmp.path(), "id.txt");
    let identity = identity.display().to_string();
    let b1 = backup(&pg, &pair.primary, "r1", &public);
    let d1 = b1.summary["manifestSha256"].as_str().unwrap().to_string();
    let from = "s3://main/shop/nightly/r1/manifest.json";
    let to = "s3://replica/shop/nightly/r1/manifest.json";

    // The secondary is down: a storage failure (retried by the Job), nothing committed.
    let port = pair.secondary.port();
    pair.secondary.kill();
    let down = copy(
        &pair,
        &[
            "--from",
            from,
            "--to",
            to,
            "--manifest-sha256",
            &d1,
            "--s3-retries",
            "0",
        ],
    );
    down.assert_failed("storage");

    // Back (same address): the copy catches up.
    pair.secondary = Moto::builder().port(port).start().unwrap();
    pair.secondary.create_bucket("replica").unwrap();
    copy(
        &pair,
        &["--from", from, "--to", to, "--manifest-sha256", &d1],
    )
    .assert_ok();
    assert!(
        pair.secondary
            .list_keys("replica", "shop/nightly/r1/")
            .unwrap()
            .contains(&"shop/nightly/r1/manifest.json".to_string())
    );

    // A tampered source artifact: not copied, no manifest at the destination.
    let b2 = backup(&pg, &pair.primary, "r2", &public);
    let d2 = b2.summary["manifestSha256"].as_str().unwrap().to_string();
    let data_key = format!(
        "shop/nightly/r2/{}",
        b2.summary["artifacts"][0]["key"].as_str().unwrap()
    );
    let mut bytes = pair.primary.get_object("main", &data_key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    pair.primary.put_object("main", &data_key, bytes).unwrap();
    let tampered = copy(
        &pair,
        &[
            "--from",
            "s3://main/shop/nightly/r2/manifest.json",
            "--to",
            "s3://replica/shop/nightly/r2/manifest.json",
            "--manifest-sha256",
            &d2,
        ],
    );
    tampered.assert_failed("integrity");
    assert!(
        tampered.error().contains("not copied"),
        "{}",
        tampered.error()
    );
    assert!(
        pair.secondary
            .list_keys("replica", "shop/nightly/r2/")
            .unwrap()
            .is_empty()
    );

    // A tampered copy is refused by the restore (the artifact's digest is pinned by the
    // manifest, the manifest's by the run's record).
    let copied_key = format!(
        "shop/nightly/r1/{}",
        b1.summary["artifacts"][0]["key"].as_str().unwrap()
    );
    let mut bytes = pair.secondary.get_object("replica", &copied_key).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    pair.secondary
        .put_object("replica", &copied_key, bytes)
        .unwrap();
    let r = restore(&pg, &pair.secondary, to, &d1, &identity, "from_tampered");
    assert_ne!(r.code, 0, "a tampered copy restored: {}", r.stdout);
    assert_eq!(r.summary["category"], "integrity", "{}", r.summary);
    // A rewritten manifest is refused before anything is read.
    pair.secondary
        .put_object(
            "replica",
            "shop/nightly/r1/manifest.json",
            b"{\"artifacts\":[]}".to_vec(),
        )
        .unwrap();
    let r = restore(&pg, &pair.secondary, to, &d1, &identity, "from_rewritten");
    r.assert_failed("integrity");
}
