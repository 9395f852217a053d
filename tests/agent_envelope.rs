//! Envelope encryption end to end with the real binary: each run's artifacts are encrypted to a
//! fresh data key, stored in the manifest only wrapped (age recipients and/or a KMS key served
//! by moto on loopback); restores unwrap it with an identity file or KMS `Decrypt`; manifests
//! written the old way (artifacts encrypted straight to the recipients) still restore; a
//! disabled or deleted KMS key fails with the `key-unavailable` category (crypto-erasure).

mod agent_common;

use std::io::{Read, Write};
use std::path::Path;

use agent_common::*;
use dataguardian::agent::crypto::{EncryptWriter, Identities, Recipients, fingerprint};
use dataguardian::agent::envelope::{DataKeyWraps, Unwrapper, unwrap};
use dataguardian::agent::hash::sha256_hex;
use serde_json::Value;
use testkit::{KmsKeyStateProxy, Moto, Postgres};

/// Every artifact the manifest lists has the stored size and SHA-256 it records.
fn assert_checksums(manifest: &Value, read: impl Fn(&str) -> Vec<u8>) {
    for a in manifest["artifacts"].as_array().unwrap() {
        let bytes = read(a["key"].as_str().unwrap());
        assert_eq!(a["sizeBytes"].as_u64().unwrap(), bytes.len() as u64);
        assert_eq!(a["sha256"].as_str().unwrap(), sha256_hex(&bytes));
        assert!(bytes.starts_with(b"age-encryption.org/v1"));
    }
}

fn backup(to: &str, run_id: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec![
        "backup", "--engine", "postgres", "--to", to, "--run-id", run_id,
    ];
    args.extend_from_slice(extra);
    run_agent(&args, env)
}

fn restore(from: &str, database: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec![
        "restore",
        "--engine",
        "postgres",
        "--from",
        from,
        "--create-database",
        "--database",
        database,
    ];
    args.extend_from_slice(extra);
    run_agent(&args, env)
}

#[test]
fn age_wraps_open_with_any_recipient_and_old_manifests_still_restore() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let tmp = tempfile::tempdir().unwrap();
    let (pub_a, id_a, secret_a) = age_keypair(tmp.path(), "a.txt");
    let (pub_b, id_b, secret_b) = age_keypair(tmp.path(), "b.txt");
    let (_, id_c, _) = age_keypair(tmp.path(), "c.txt");
    let (id_a, id_b, id_c) = (
        id_a.display().to_string(),
        id_b.display().to_string(),
        id_c.display().to_string(),
    );
    let store = tmp.path().join("backups");
    let to = format!("file://{}", store.display());
    let uri = pg.uri("shop");
    let env = [("DG_URI", uri.as_str())];

    let run = backup(
        &to,
        "env",
        &["--recipient", &pub_a, "--recipient", &pub_b],
        &env,
    );
    run.assert_ok();
    run.assert_no_secret(&secret_a);
    // The summary (what the operator records) names the wrapping recipients.
    let fps = vec![fingerprint(&pub_a), fingerprint(&pub_b)];
    assert_eq!(
        run.summary["encryption"]["recipients"],
        serde_json::json!(fps)
    );

    let manifest_path = store.join("env/manifest.json");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    assert!(
        !text.contains("AGE-SECRET-KEY"),
        "no key in clear in the manifest"
    );
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["formatVersion"], 2);
    assert_eq!(manifest["encryption"]["scheme"], "age-x25519-envelope");
    let wraps: DataKeyWraps = serde_json::from_value(manifest["dataKey"].clone()).unwrap();
    assert_eq!(wraps.age_recipients(), fps);
    assert!(wraps.kms.is_empty());
    assert_checksums(&manifest, |k| {
        std::fs::read(store.join("env").join(k)).unwrap()
    });

    // The artifact is encrypted to the data key only: the recipient's identity alone cannot
    // open it, the unwrapped data key can.
    let key = manifest["artifacts"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let artifact = std::fs::read(store.join("env").join(&key)).unwrap();
    let direct = Identities::from_file(Path::new(&id_a))
        .unwrap()
        .decrypt(&artifact[..])
        .err()
        .expect("a recipient's identity does not open the artifact itself");
    assert_eq!(direct.category(), "crypto");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data_key = rt
        .block_on(unwrap(
            &wraps,
            &Unwrapper {
                identity_file: Some(id_a.clone().into()),
                kms: None,
            },
        ))
        .unwrap();
    assert_eq!(data_key.fingerprint(), wraps.fingerprint);
    let mut plain = Vec::new();
    data_key
        .identities()
        .decrypt(&artifact[..])
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();

    // Either recipient restores it; a third identity does not (and nothing secret leaks).
    let from = format!("{to}/env/manifest.json");
    for (id, db) in [(&id_a, "copy_a"), (&id_b, "copy_b")] {
        let r = restore(&from, db, &["--identity-file", id], &env);
        r.assert_ok();
        r.assert_no_secret(&secret_b);
        assert_eq!(pg_fingerprint(&pg, db), before);
    }
    let wrong = restore(&from, "copy_c", &["--identity-file", &id_c], &env);
    wrong.assert_failed("crypto");
    assert!(
        wrong.error().contains("wrong identity"),
        "{}",
        wrong.error()
    );
    let none = restore(&from, "copy_none", &[], &env);
    none.assert_failed("config");
    assert!(none.error().contains("--identity-file"), "{}", none.error());

    // A manifest written the old way: format 1, no data key, the artifact encrypted straight
    // to the recipient. It still restores with the recipient's identity.
    let recipients = Recipients::parse([pub_a.as_str()]).unwrap();
    let mut w = EncryptWriter::new(Vec::new(), &recipients).unwrap();
    w.write_all(&plain).unwrap();
    let legacy_bytes = w.finish().unwrap();
    let legacy_dir = store.join("legacy");
    std::fs::create_dir_all(legacy_dir.join("databases")).unwrap();
    std::fs::write(legacy_dir.join(&key), &legacy_bytes).unwrap();
    let mut legacy = manifest.clone();
    legacy["formatVersion"] = 1.into();
    legacy.as_object_mut().unwrap().remove("dataKey");
    legacy["encryption"] =
        serde_json::json!({"scheme": "age-x25519", "recipients": [fingerprint(&pub_a)]});
    legacy["artifacts"][0]["sha256"] = sha256_hex(&legacy_bytes).into();
    legacy["artifacts"][0]["sizeBytes"] = (legacy_bytes.len() as u64).into();
    std::fs::write(
        legacy_dir.join("manifest.json"),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();
    let legacy_from = format!("{to}/legacy/manifest.json");
    restore(
        &legacy_from,
        "copy_legacy",
        &["--identity-file", &id_a],
        &env,
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_legacy"), before);

    // A format-1 manifest that carries a data key (or a format-2 one without) is refused.
    let mut mixed = manifest.clone();
    mixed["formatVersion"] = 1.into();
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&mixed).unwrap()).unwrap();
    restore(&from, "copy_mixed", &["--identity-file", &id_a], &env).assert_failed("integrity");
}

/// moto with a KMS key aliased `alias/backups`, behind the key-state proxy.
struct Kms {
    moto: Moto,
    proxy: KmsKeyStateProxy,
    key_id: String,
}

fn kms() -> Kms {
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    let key_id = moto.kms_create_key("dataguardian test").unwrap();
    moto.kms(
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/backups", "TargetKeyId": key_id}),
    )
    .unwrap();
    let proxy = KmsKeyStateProxy::start(moto.addr()).unwrap();
    Kms {
        moto,
        proxy,
        key_id,
    }
}

#[test]
fn kms_only_and_kms_plus_age_round_trip_and_a_disabled_key_is_key_unavailable() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let k = kms();
    let tmp = tempfile::tempdir().unwrap();
    let (pub_a, id_a, _) = age_keypair(tmp.path(), "a.txt");
    let id_a = id_a.display().to_string();
    let endpoint = k.moto.endpoint();
    let kms_endpoint = k.proxy.endpoint();
    let uri = pg.uri("shop");
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    let kms_flags = [
        "--kms-endpoint",
        kms_endpoint.as_str(),
        "--kms-region",
        testkit::REGION,
    ];
    let to = "s3://backups/team/shop";
    let read = |run: &str| {
        let moto = &k.moto;
        let run = run.to_string();
        move |key: &str| {
            moto.get_object("backups", &format!("team/shop/{run}/{key}"))
                .unwrap()
        }
    };
    let manifest_of = |run: &str| -> Value {
        serde_json::from_slice(
            &k.moto
                .get_object("backups", &format!("team/shop/{run}/manifest.json"))
                .unwrap(),
        )
        .unwrap()
    };

    // KMS only: the data key is wrapped by the key (its ARN recorded), no age wrap.
    let mut args = vec!["--kms-key", "alias/backups"];
    args.extend_from_slice(&kms_flags);
    backup(to, "kms", &args, &env).assert_ok();
    let m = manifest_of("kms");
    assert_eq!(m["formatVersion"], 2);
    let wraps: DataKeyWraps = serde_json::from_value(m["dataKey"].clone()).unwrap();
    assert!(wraps.age.is_empty());
    assert_eq!(wraps.kms.len(), 1);
    assert!(
        wraps.kms[0].key_id.starts_with("arn:aws:kms:") && wraps.kms[0].key_id.ends_with(&k.key_id),
        "{:?}",
        wraps.kms[0]
    );
    assert_eq!(wraps.kms[0].region, testkit::REGION);
    assert_eq!(m["encryption"]["recipients"], serde_json::json!([]));
    assert_checksums(&m, read("kms"));
    let kms_from = format!("{to}/kms/manifest.json");
    restore(&kms_from, "copy_kms", &kms_flags, &env).assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_kms"), before);

    // KMS and age together: either opens it.
    let mut args = vec!["--kms-key", "alias/backups", "--recipient", &pub_a];
    args.extend_from_slice(&kms_flags);
    backup(to, "both", &args, &env).assert_ok();
    let m = manifest_of("both");
    let wraps: DataKeyWraps = serde_json::from_value(m["dataKey"].clone()).unwrap();
    assert_eq!((wraps.age.len(), wraps.kms.len()), (1, 1));
    assert_eq!(m["encryption"]["recipients"][0], fingerprint(&pub_a));
    assert_checksums(&m, read("both"));
    let both_from = format!("{to}/both/manifest.json");
    restore(&both_from, "copy_both_kms", &kms_flags, &env).assert_ok();
    restore(
        &both_from,
        "copy_both_age",
        &["--identity-file", &id_a],
        &env,
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_both_kms"), before);
    assert_eq!(pg_fingerprint(&pg, "copy_both_age"), before);

    // Crypto-erasure: the key disabled, the KMS-only backup cannot be restored, with a clear
    // category; nothing is created on the target.
    k.moto
        .kms("DisableKey", serde_json::json!({"KeyId": k.key_id}))
        .unwrap();
    let erased = restore(&kms_from, "copy_erased", &kms_flags, &env);
    erased.assert_failed("key-unavailable");
    assert_eq!(erased.code, 18);
    assert!(
        erased.error().contains("DisabledException"),
        "{}",
        erased.error()
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'copy_erased%'"
        )
        .unwrap(),
        "0"
    );
    // The break-glass age wrap still opens the backup that has one.
    restore(&both_from, "copy_glass", &["--identity-file", &id_a], &env).assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_glass"), before);
    // A backup cannot wrap with a disabled key: it fails before anything is stored.
    let mut args = vec!["--kms-key", "alias/backups"];
    args.extend_from_slice(&kms_flags);
    let refused = backup(to, "after", &args, &env);
    refused.assert_failed("key-unavailable");
    assert!(
        k.moto
            .list_keys("backups", "team/shop/after/")
            .unwrap()
            .is_empty()
    );

    // Pending deletion is key-unavailable too.
    k.moto
        .kms("EnableKey", serde_json::json!({"KeyId": k.key_id}))
        .unwrap();
    restore(&kms_from, "copy_enabled", &kms_flags, &env).assert_ok();
    k.moto
        .kms(
            "ScheduleKeyDeletion",
            serde_json::json!({"KeyId": k.key_id, "PendingWindowInDays": 7}),
        )
        .unwrap();
    let deleted = restore(&kms_from, "copy_deleted", &kms_flags, &env);
    deleted.assert_failed("key-unavailable");
    assert!(
        deleted.error().contains("KMSInvalidStateException"),
        "{}",
        deleted.error()
    );
}

/// Every version of every object under `prefix`: (key, version id, latest).
fn versions(moto: &Moto, bucket: &str, prefix: &str) -> Vec<(String, String, bool)> {
    let client = moto.s3_client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt
        .block_on(
            client
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .send(),
        )
        .unwrap();
    let mut v: Vec<(String, String, bool)> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap_or_default().to_string(),
                v.version_id().unwrap_or_default().to_string(),
                v.is_latest().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn rewrap_rekeys_only_the_manifest_and_a_locked_manifest_gets_a_new_version() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let k = kms();
    k.moto.create_bucket_with_object_lock("locked").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (pub_a, id_a, secret_a) = age_keypair(tmp.path(), "a.txt");
    let (pub_b, id_b, _) = age_keypair(tmp.path(), "b.txt");
    let (id_a, id_b) = (id_a.display().to_string(), id_b.display().to_string());
    let endpoint = k.moto.endpoint();
    let kms_endpoint = k.proxy.endpoint();
    let uri = pg.uri("shop");
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
        ("DG_KMS_ENDPOINT", kms_endpoint.as_str()),
        ("DG_KMS_REGION", testkit::REGION),
    ]);
    let lock = [
        "--object-lock-mode",
        "GOVERNANCE",
        "--object-lock-days",
        "2",
    ];
    let mut args = vec!["--recipient", pub_a.as_str()];
    args.extend_from_slice(&lock);
    let run = backup("s3://locked/team/shop", "r", &args, &env);
    run.assert_ok();
    let manifest_key = "team/shop/r/manifest.json";
    let from = format!("s3://locked/{manifest_key}");
    let first = k.moto.get_object("locked", manifest_key).unwrap();
    let first_sha = sha256_hex(&first);
    let artifacts_before: Vec<_> = versions(&k.moto, "locked", "team/shop/r/")
        .into_iter()
        .filter(|(key, _, _)| key != manifest_key)
        .collect();
    assert_eq!(artifacts_before.len(), 1, "{artifacts_before:?}");
    let art_key = artifacts_before[0].0.clone();
    let art_bytes = k.moto.get_object("locked", &art_key).unwrap();

    // A wrong old key changes nothing.
    let (_, id_c, _) = age_keypair(tmp.path(), "c.txt");
    let id_c = id_c.display().to_string();
    let bad = run_agent(
        &[
            "rewrap",
            "--from",
            &from,
            "--identity-file",
            &id_c,
            "--recipient",
            &pub_b,
        ],
        &env,
    );
    bad.assert_failed("crypto");
    assert_eq!(k.moto.get_object("locked", manifest_key).unwrap(), first);

    // a → b and the KMS key, pinned to the recorded digest, the new version locked too.
    let mut args = vec![
        "rewrap",
        "--from",
        &from,
        "--manifest-sha256",
        &first_sha,
        "--identity-file",
        &id_a,
        "--recipient",
        &pub_b,
        "--kms-key",
        "alias/backups",
    ];
    args.extend_from_slice(&lock);
    let rewrapped = run_agent(&args, &env);
    rewrapped.assert_ok();
    rewrapped.assert_no_secret(&secret_a);
    let s = &rewrapped.summary;
    assert_eq!(s["operation"], "rewrap");
    assert_eq!(s["previousManifestSha256"], first_sha.as_str());
    assert_eq!(
        s["wrappedFor"]["recipients"],
        serde_json::json!([fingerprint(&pub_b)])
    );
    assert!(
        s["wrappedFor"]["kmsKeys"][0]
            .as_str()
            .unwrap()
            .ends_with(&k.key_id)
    );
    let second = k.moto.get_object("locked", manifest_key).unwrap();
    assert_eq!(s["manifestSha256"], sha256_hex(&second).as_str());
    let old: Value = serde_json::from_slice(&first).unwrap();
    let new: Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(old["dataKey"]["fingerprint"], new["dataKey"]["fingerprint"]);
    assert_eq!(old["artifacts"], new["artifacts"]);
    assert_eq!(
        new["encryption"]["recipients"],
        serde_json::json!([fingerprint(&pub_b)])
    );

    // The artifacts are untouched: same single version, same bytes. The manifest has a new
    // version; the locked previous one is still there.
    let after = versions(&k.moto, "locked", "team/shop/r/");
    let artifacts_after: Vec<_> = after
        .iter()
        .filter(|(key, _, _)| key != manifest_key)
        .cloned()
        .collect();
    assert_eq!(artifacts_after, artifacts_before);
    assert_eq!(k.moto.get_object("locked", &art_key).unwrap(), art_bytes);
    let manifest_versions: Vec<_> = after
        .iter()
        .filter(|(key, _, _)| key == manifest_key)
        .collect();
    assert_eq!(manifest_versions.len(), 2, "{after:?}");
    let client = k.moto.s3_client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let head = rt
        .block_on(
            client
                .head_object()
                .bucket("locked")
                .key(manifest_key)
                .send(),
        )
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );

    // b restores, KMS restores, a no longer does; a restore pinned to the old digest refuses
    // the rewritten manifest (the operator records the new digest).
    restore(&from, "copy_b", &["--identity-file", &id_b], &env).assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_b"), before);
    restore(&from, "copy_kms", &[], &env).assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_kms"), before);
    // (Without KMS settings: with them, the KMS wrap would open it.)
    let age_only: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("DG_KMS"))
        .collect();
    let a = restore(&from, "copy_a", &["--identity-file", &id_a], &age_only);
    a.assert_failed("crypto");
    assert!(a.error().contains("wrong identity"), "{}", a.error());
    restore(
        &from,
        "copy_pinned",
        &["--manifest-sha256", &first_sha, "--identity-file", &id_b],
        &env,
    )
    .assert_failed("integrity");

    // A backup written before envelope encryption cannot be re-wrapped (config), untouched.
    let plain_to = "s3://locked/team/plain";
    backup(plain_to, "p", &[], &env).assert_ok();
    let plain = run_agent(
        &[
            "rewrap",
            "--from",
            "s3://locked/team/plain/p/manifest.json",
            "--recipient",
            &pub_b,
        ],
        &env,
    );
    plain.assert_failed("config");
}

/// Hostile input: a KMS endpoint a tenant points at the cloud metadata address (or any address
/// outside the egress policy) is refused before a byte leaves the Job, and no manifest is
/// written. Nothing secret appears in the agent's output.
#[test]
fn a_kms_endpoint_outside_the_egress_policy_is_refused() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('x')",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = pg.uri("shop");
    let env = [
        ("DG_URI", uri.as_str()),
        ("DG_KMS_AWS_ACCESS_KEY_ID", "AKIAHOSTILETEST"),
        ("DG_KMS_AWS_SECRET_ACCESS_KEY", "kms-secret-canary-7f3a"),
        ("DG_EGRESS_ALLOW_CIDRS", "127.0.0.0/8"),
    ];
    let run = backup(
        &to,
        "hostile",
        &[
            "--kms-key",
            "alias/stolen",
            "--kms-region",
            "us-east-1",
            "--kms-endpoint",
            "http://169.254.169.254:80",
        ],
        &env,
    );
    assert_ne!(run.code, 0, "{}", run.stdout);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("egress"), "{said}");
    assert!(!said.contains("kms-secret-canary-7f3a"), "{said}");
    assert!(!said.contains(pg.password()), "{said}");
    assert!(!tmp.path().join("hostile/manifest.json").exists());
}

/// KMS → KMS rotation across two KMS services: the old key only on the first, the new key only
/// on the second. Unwrapping with the new key's settings (the old behaviour) cannot find the
/// old key; `--previous-kms-endpoint` (with its own `DG_PREVIOUS_KMS_*` credentials) does, and
/// the new wrap is made on the second service. Then a manifest written before envelope
/// encryption is reported as not re-wrappable (`--report-not-rewrappable`), left untouched.
#[test]
fn rewrap_unwraps_the_old_kms_key_where_previous_kms_says_and_reports_old_manifests() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let before = pg_fingerprint(&pg, "shop");
    let old = kms();
    let new = Moto::start().unwrap();
    let new_key = new.kms_create_key("new key").unwrap();
    new.kms(
        "CreateAlias",
        serde_json::json!({"AliasName": "alias/new", "TargetKeyId": new_key}),
    )
    .unwrap();
    let s3_endpoint = old.moto.endpoint();
    let old_kms = old.proxy.endpoint();
    let new_kms = new.endpoint();
    let uri = pg.uri("shop");
    let mut env = s3_env();
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", s3_endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
    ]);
    let to = "s3://backups/team/two";
    let old_flags = [
        "--kms-key",
        "alias/backups",
        "--kms-endpoint",
        old_kms.as_str(),
        "--kms-region",
        testkit::REGION,
    ];
    backup(to, "a", &old_flags, &env).assert_ok();
    let manifest_key = "team/two/a/manifest.json";
    let first = old.moto.get_object("backups", manifest_key).unwrap();
    let from = format!("s3://backups/{manifest_key}");
    let new_flags = [
        "--kms-key",
        "alias/new",
        "--kms-endpoint",
        new_kms.as_str(),
        "--kms-region",
        testkit::REGION,
    ];

    // The old way: the old wrap is sent to the new key's service, which does not know the key.
    let mut args = vec!["rewrap", "--from", &from, "--kms"];
    args.extend_from_slice(&new_flags);
    let wrong = run_agent(&args, &env);
    wrong.assert_failed("key-unavailable");
    assert!(
        wrong.error().contains("NotFoundException"),
        "{}",
        wrong.error()
    );
    assert_eq!(old.moto.get_object("backups", manifest_key).unwrap(), first);

    // previousKms: the old key's own endpoint and credentials unwrap, the new key wraps.
    let first_sha = sha256_hex(&first);
    let mut args = vec![
        "rewrap",
        "--from",
        &from,
        "--manifest-sha256",
        &first_sha,
        "--previous-kms-endpoint",
        old_kms.as_str(),
    ];
    args.extend_from_slice(&new_flags);
    let mut prev_env = env.clone();
    prev_env.extend([
        ("DG_PREVIOUS_KMS_AWS_ACCESS_KEY_ID", "AKIAPREVIOUSKMS"),
        (
            "DG_PREVIOUS_KMS_AWS_SECRET_ACCESS_KEY",
            "previous-kms-canary-51c2",
        ),
    ]);
    let rewrapped = run_agent(&args, &prev_env);
    rewrapped.assert_ok();
    rewrapped.assert_no_secret("previous-kms-canary-51c2");
    let kms_keys = rewrapped.summary["wrappedFor"]["kmsKeys"].clone();
    assert!(
        kms_keys[0].as_str().unwrap().ends_with(&new_key),
        "{kms_keys}"
    );
    assert_eq!(kms_keys.as_array().unwrap().len(), 1);

    // The old key is gone for good (disabled): the backup restores through the new one only.
    old.moto
        .kms("DisableKey", serde_json::json!({"KeyId": old.key_id}))
        .unwrap();
    restore(
        &from,
        "copy_new_kms",
        &["--kms-endpoint", new_kms.as_str()],
        &env,
    )
    .assert_ok();
    assert_eq!(pg_fingerprint(&pg, "copy_new_kms"), before);

    // A manifest written before envelope encryption (format 1, straight to a recipient).
    let tmp = tempfile::tempdir().unwrap();
    let (pub_a, _, _) = age_keypair(tmp.path(), "a.txt");
    let (pub_b, _, _) = age_keypair(tmp.path(), "b.txt");
    let mut legacy: Value = serde_json::from_slice(&first).unwrap();
    legacy["formatVersion"] = 1.into();
    legacy.as_object_mut().unwrap().remove("dataKey");
    legacy["encryption"] =
        serde_json::json!({"scheme": "age-x25519", "recipients": [fingerprint(&pub_a)]});
    let legacy_bytes = serde_json::to_vec_pretty(&legacy).unwrap();
    let legacy_key = "team/legacy/l/manifest.json";
    old.moto
        .put_object("backups", legacy_key, legacy_bytes.clone())
        .unwrap();
    let legacy_from = format!("s3://backups/{legacy_key}");
    let digest = sha256_hex(&legacy_bytes);
    let rewrap_legacy = |extra: &[&str]| {
        let mut args = vec![
            "rewrap",
            "--from",
            legacy_from.as_str(),
            "--manifest-sha256",
            digest.as_str(),
            "--recipient",
            pub_b.as_str(),
        ];
        args.extend_from_slice(extra);
        run_agent(&args, &env)
    };
    // By hand: a clear failure.
    let failed = rewrap_legacy(&[]);
    failed.assert_failed("config");
    assert!(
        failed
            .error()
            .contains("written before envelope encryption"),
        "{}",
        failed.error()
    );
    // The rotation Job's way: reported, exit 0, nothing written.
    let reported = rewrap_legacy(&["--report-not-rewrappable"]);
    reported.assert_ok();
    assert_eq!(reported.summary["notRewrappable"], "age-x25519");
    assert_eq!(reported.summary["manifestSha256"], digest.as_str());
    assert_eq!(reported.summary["previousManifestSha256"], digest.as_str());
    assert_eq!(
        reported.summary["wrappedFor"]["recipients"],
        serde_json::json!([fingerprint(&pub_a)])
    );
    assert_eq!(
        old.moto.get_object("backups", legacy_key).unwrap(),
        legacy_bytes
    );
}
