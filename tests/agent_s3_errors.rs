//! S3 failures are classified: access denied, a missing bucket and bad requests fail at once
//! with their own category (`storage-refused`, an exit code the Job's pod failure policy does not
//! retry) and a reason that says what to check; throttling, 5xx replies and transport errors back
//! off and retry. Against real servers (s3s-fs enforces SigV4, so wrong credentials are refused;
//! moto has no such bucket) and, for replies a real server gives only under load, an HTTP proxy
//! in front of one that answers with the injected error.

mod agent_common;

use agent_common::*;
use testkit::{Injection, Moto, Postgres, S3TamperProxy, S3sFs, TamperPlan};

fn backup(endpoint: &str, uri: &str, to: &str, run_id: &str, extra_env: &[(&str, &str)]) -> Run {
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri),
        ("DG_S3_ENDPOINT", endpoint),
        ("DG_S3_PATH_STYLE", "true"),
        // Short backoff: the retries themselves are what is tested, not their pace.
        ("DG_S3_BACKOFF_MS", "20"),
    ]);
    env.extend_from_slice(extra_env);
    run_agent(
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
        &env,
    )
}

fn retried(run: &Run) -> bool {
    run.stderr.contains("failed, retrying")
}

fn inject(status: u16, code: &str, times: u32, method: Option<&str>) -> TamperPlan {
    TamperPlan {
        inject: Some(Injection {
            status,
            code: code.into(),
            times,
            method: method.map(str::to_string),
        }),
        ..Default::default()
    }
}

#[test]
fn refusals_fail_at_once_with_their_own_category() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let uri = pg.uri("shop");
    let s3s = S3sFs::start().unwrap();
    s3s.create_bucket("backups").unwrap();
    let proxy = S3TamperProxy::start(s3s.addr(), TamperPlan::default()).unwrap();

    // Wrong secret key: s3s-fs checks the signature.
    let run = backup(
        &proxy.endpoint(),
        &uri,
        "s3://backups/shop",
        "wrong-key",
        &[(
            "AWS_SECRET_ACCESS_KEY",
            "not-the-secret-key-0000000000000000000",
        )],
    );
    run.assert_failed("storage-refused");
    assert_eq!(run.code, 17, "the storage-refused exit code");
    assert!(run.error().contains("access denied"), "{}", run.error());
    assert!(
        run.error().contains("check the credentials"),
        "{}",
        run.error()
    );
    assert!(!retried(&run), "a refusal is not retried:\n{}", run.stderr);
    assert_eq!(proxy.stats().requests, 1, "one request, refused, no retry");
    run.assert_no_secret("not-the-secret-key-0000000000000000000");

    // A bucket that does not exist.
    let moto = Moto::start().unwrap();
    let run = backup(
        &moto.endpoint(),
        &uri,
        "s3://no-such-bucket/shop",
        "r1",
        &[],
    );
    run.assert_failed("storage-refused");
    assert!(
        run.error().contains("bucket does not exist"),
        "{}",
        run.error()
    );
    assert!(!retried(&run), "{}", run.stderr);

    // A request the server rejects as invalid (here: every part upload).
    moto.create_bucket("backups").unwrap();
    let proxy = S3TamperProxy::start(
        moto.addr(),
        inject(400, "InvalidArgument", u32::MAX, Some("PUT")),
    )
    .unwrap();
    let run = backup(&proxy.endpoint(), &uri, "s3://backups/shop", "bad", &[]);
    run.assert_failed("storage-refused");
    assert!(
        run.error().contains("refused the request as invalid"),
        "{}",
        run.error()
    );
    assert_eq!(
        proxy.stats().injected,
        1,
        "the first refusal ends the upload"
    );
    assert!(
        !moto
            .list_keys("backups", "shop/bad/")
            .unwrap()
            .iter()
            .any(|k| k.ends_with("manifest.json"))
    );
}

#[test]
fn throttling_and_server_errors_back_off_and_retry() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 3); // several parts
    let before = pg_fingerprint(&pg, "shop");
    let uri = pg.uri("shop");
    let s3s = S3sFs::start().unwrap();
    s3s.create_bucket("backups").unwrap();

    // The first three part uploads are throttled, then pass.
    let proxy = S3TamperProxy::start(s3s.addr(), inject(503, "SlowDown", 3, Some("PUT"))).unwrap();
    let run = backup(
        &proxy.endpoint(),
        &uri,
        "s3://backups/shop",
        "throttled",
        &[],
    );
    run.assert_ok();
    assert_eq!(proxy.stats().injected, 3);
    assert!(retried(&run), "{}", run.stderr);
    assert!(run.stderr.contains("throttled"), "{}", run.stderr);

    // 500 InternalError on the first two POSTs (create and complete the multipart upload).
    proxy.set_plan(inject(500, "InternalError", 2, Some("POST")));
    let run = backup(&proxy.endpoint(), &uri, "s3://backups/shop", "5xx", &[]);
    run.assert_ok();
    assert_eq!(proxy.stats().injected, 5);

    // Both backups are whole.
    let mut env = s3_env();
    let endpoint = s3s.endpoint();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    for (run_id, db) in [("throttled", "copy_t"), ("5xx", "copy_5")] {
        let from = format!("s3://backups/shop/{run_id}/manifest.json");
        run_agent(
            &[
                "restore",
                "--engine",
                "postgres",
                "--from",
                &from,
                "--create-database",
                "--database",
                db,
            ],
            &env,
        )
        .assert_ok();
        assert_eq!(pg_fingerprint(&pg, db), before);
    }

    // Throttling that does not end: a storage error once the retries run out.
    proxy.set_plan(inject(503, "SlowDown", u32::MAX, None));
    let run = backup(
        &proxy.endpoint(),
        &uri,
        "s3://backups/shop",
        "never",
        &[("DG_S3_RETRIES", "2")],
    );
    run.assert_failed("storage");
    assert!(
        run.error().contains("after 3 attempts (throttled)"),
        "{}",
        run.error()
    );
    assert_eq!(
        proxy.stats().injected,
        5 + 3,
        "first attempt and two retries"
    );
}

#[test]
fn part_sizes_s3_cannot_take_are_refused_before_any_request() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let uri = pg.uri("shop");
    let s3s = S3sFs::start().unwrap();
    s3s.create_bucket("backups").unwrap();
    let proxy = S3TamperProxy::start(s3s.addr(), TamperPlan::default()).unwrap();
    let endpoint = proxy.endpoint();
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    for (mib, says) in [("4", "at least 5 MiB"), ("5121", "at most 5 GiB")] {
        let run = run_agent(
            &[
                "backup",
                "--engine",
                "postgres",
                "--to",
                "s3://backups/shop",
                "--run-id",
                "bad-part-size",
                "--s3-part-size-mib",
                mib,
            ],
            &env,
        );
        run.assert_failed("config");
        assert!(run.error().contains(says), "{mib} MiB: {}", run.error());
        run.assert_no_secret(pg.password());
        run.assert_no_secret(testkit::SECRET_ACCESS_KEY);
    }
    assert_eq!(proxy.stats().requests, 0, "nothing was sent to the server");
}
