//! Uploads to S3-compatible servers without the checksum extension: the agent confirms each
//! upload another way, chosen automatically and recorded in the manifest and the summary
//! (`confirmedBy`): the server's SHA-256 checksum (moto), the multipart ETag computed locally
//! from the parts' MD5s (`s3s-fs`, or moto with its checksums hidden), or a read-back of the
//! stored object (ETags that are not MD5s). A server that lies about what it stored — a wrong
//! ETag, or a stored object whose bytes differ — is refused as an integrity error, and no
//! manifest is written.

mod agent_common;

use agent_common::*;
use serde_json::Value;
use testkit::{EtagRewrite, Moto, Postgres, S3TamperProxy, S3sFs, TamperPlan};

/// Environment of the agent talking to `endpoint` with the kit's credentials.
fn env_for(endpoint: &str, uri: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = s3_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend([
        ("DG_URI".to_string(), uri.to_string()),
        ("DG_S3_ENDPOINT".to_string(), endpoint.to_string()),
        ("DG_S3_PATH_STYLE".to_string(), "true".to_string()),
    ]);
    env
}

fn agent(args: &[&str], env: &[(String, String)]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_agent(args, &env)
}

/// An uncompressed backup of `shop` in 5 MiB parts (a multipart upload of several parts).
fn backup(endpoint: &str, uri: &str, to: &str, run_id: &str) -> Run {
    agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            to,
            "--run-id",
            run_id,
            "--compression",
            "none",
            "--s3-part-size-mib",
            "5",
        ],
        &env_for(endpoint, uri),
    )
}

fn restore(endpoint: &str, uri: &str, from: &str, database: &str) -> Run {
    agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            from,
            "--create-database",
            "--database",
            database,
            "--verify-first",
        ],
        &env_for(endpoint, uri),
    )
}

fn confirmed_by(summary: &Value) -> Vec<String> {
    summary["artifacts"]
        .as_array()
        .expect("the summary lists artifacts")
        .iter()
        .map(|a| a["confirmedBy"].as_str().unwrap_or("(absent)").to_string())
        .collect()
}

fn manifest_confirmations(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["confirmedBy"].as_str().unwrap_or("(absent)").to_string())
        .collect()
}

#[test]
fn s3s_fs_backups_are_confirmed_by_the_multipart_etag_restore_and_copy() {
    let pg = Postgres::start().unwrap();
    let s3s = S3sFs::start().unwrap();
    let moto = Moto::start().unwrap();
    s3s.create_bucket("backups").unwrap();
    moto.create_bucket("replica").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 4); // ~12 MB raw: three 5 MiB parts uncompressed
    let before = pg_fingerprint(&pg, "shop");
    let uri = pg.uri("shop");

    let run = backup(&s3s.endpoint(), &uri, "s3://backups/shop", "r1");
    run.assert_ok();
    assert!(run.summary["sizeBytes"].as_u64().unwrap() > 10 << 20);
    assert_eq!(confirmed_by(&run.summary), ["md5-etag"]);
    let manifest = s3s.get_object("backups", "shop/r1/manifest.json").unwrap();
    assert_eq!(manifest_confirmations(&manifest), ["md5-etag"]);
    // What s3s-fs stores is what was hashed.
    let stored =
        std::fs::read(s3s.object_path("backups", "shop/r1/databases/shop.pgdump")).unwrap();
    assert_eq!(
        run.summary["sha256"].as_str().unwrap(),
        dataguardian::agent::hash::sha256_hex(&stored)
    );
    assert!(
        !run.stderr.contains("reading the object back"),
        "an MD5 ETag needs no read-back"
    );

    restore(
        &s3s.endpoint(),
        &uri,
        "s3://backups/shop/r1/manifest.json",
        "copy_s3s",
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_s3s"), before);

    // A copy from s3s-fs to moto is confirmed by moto's checksum, and back by the ETag.
    let copy_env = |from: &str, to: &str| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("AWS_REGION".into(), testkit::REGION.into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("DG_FROM_S3_ENDPOINT".into(), from.into()),
            ("DG_FROM_S3_PATH_STYLE".into(), "true".into()),
            ("DG_TO_S3_ENDPOINT".into(), to.into()),
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
    };
    let digest = run.summary["manifestSha256"].as_str().unwrap().to_string();
    let to_moto = agent(
        &[
            "copy",
            "--from",
            "s3://backups/shop/r1/manifest.json",
            "--to",
            "s3://replica/shop/r1/manifest.json",
            "--manifest-sha256",
            &digest,
        ],
        &copy_env(&s3s.endpoint(), &moto.endpoint()),
    );
    to_moto.assert_ok();
    assert_eq!(
        to_moto.summary["confirmedBy"],
        serde_json::json!(["sha256-checksum"])
    );
    let back = agent(
        &[
            "copy",
            "--from",
            "s3://replica/shop/r1/manifest.json",
            "--to",
            "s3://backups/shop/r1-back/manifest.json",
            "--manifest-sha256",
            &digest,
        ],
        &copy_env(&moto.endpoint(), &s3s.endpoint()),
    );
    back.assert_ok();
    assert_eq!(back.summary["confirmedBy"], serde_json::json!(["md5-etag"]));
    restore(
        &s3s.endpoint(),
        &uri,
        "s3://backups/shop/r1-back/manifest.json",
        "copy_back",
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_back"), before);
}

#[test]
fn each_server_gets_the_confirmation_it_supports() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 4);
    let before = pg_fingerprint(&pg, "shop");
    let uri = pg.uri("shop");

    // moto has the checksum extension.
    let run = backup(&moto.endpoint(), &uri, "s3://backups/shop", "checksum");
    run.assert_ok();
    assert_eq!(confirmed_by(&run.summary), ["sha256-checksum"]);

    // The same server with its checksums hidden: the multipart ETag.
    let proxy = S3TamperProxy::start(
        moto.addr(),
        TamperPlan {
            strip_checksums: true,
            ..Default::default()
        },
    )
    .unwrap();
    let run = backup(&proxy.endpoint(), &uri, "s3://backups/shop", "etag");
    run.assert_ok();
    assert_eq!(confirmed_by(&run.summary), ["md5-etag"]);

    // And with ETags that are not MD5s either (as under SSE-KMS): the object is read back.
    proxy.set_plan(TamperPlan {
        strip_checksums: true,
        etags: EtagRewrite::Opaque,
        etags_on_head_only: true,
        ..Default::default()
    });
    let gets_before = proxy.stats().gets;
    let run = backup(&proxy.endpoint(), &uri, "s3://backups/shop", "read-back");
    run.assert_ok();
    assert_eq!(confirmed_by(&run.summary), ["read-back"]);
    assert!(proxy.stats().gets > gets_before, "the object was read back");
    assert!(proxy.stats().etags_rewritten > 0);
    let manifest = moto
        .get_object("backups", "shop/read-back/manifest.json")
        .unwrap();
    assert_eq!(manifest_confirmations(&manifest), ["read-back"]);
    restore(
        &moto.endpoint(),
        &uri,
        "s3://backups/shop/read-back/manifest.json",
        "copy_rb",
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_rb"), before);
}

#[test]
fn a_server_that_lies_about_what_it_stored_is_refused() {
    let pg = Postgres::start().unwrap();
    let s3s = S3sFs::start().unwrap();
    s3s.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 3);
    let uri = pg.uri("shop");

    // The ETag a HEAD returns has the right shape but another digest.
    let proxy = S3TamperProxy::start(
        s3s.addr(),
        TamperPlan {
            etags: EtagRewrite::WrongMd5,
            etags_on_head_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let run = backup(&proxy.endpoint(), &uri, "s3://backups/shop", "lying-etag");
    run.assert_failed("integrity");
    assert!(run.error().contains("ETag"), "{}", run.error());
    assert!(proxy.stats().etags_rewritten > 0);
    assert!(
        !s3s.list_keys("backups", "shop/lying-etag/")
            .unwrap()
            .iter()
            .any(|k| k.ends_with("manifest.json")),
        "no manifest for an unconfirmed upload"
    );

    // No usable ETag, and the stored object reads back with other bytes.
    proxy.set_plan(TamperPlan {
        etags: EtagRewrite::Opaque,
        etags_on_head_only: true,
        corrupt_get_bodies: true,
        ..Default::default()
    });
    let run = backup(&proxy.endpoint(), &uri, "s3://backups/shop", "corrupt");
    run.assert_failed("integrity");
    assert!(run.error().contains("read back"), "{}", run.error());
    assert!(proxy.stats().bodies_corrupted > 0);
    assert!(
        !s3s.list_keys("backups", "shop/corrupt/")
            .unwrap()
            .iter()
            .any(|k| k.ends_with("manifest.json")),
        "no manifest for an unconfirmed upload"
    );

    // Positive control: the same server through the same proxy, faithful, is fine.
    proxy.set_plan(TamperPlan::default());
    backup(&proxy.endpoint(), &uri, "s3://backups/shop", "honest").assert_ok();
}
