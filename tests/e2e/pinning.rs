//! Issue 11, finding 3, end to end: a backup's manifest swapped in the bucket together with its
//! artifact (every hash in the bucket agrees) is refused by the digest the operator recorded,
//! by restores and validations alike, and the restore target is never touched.

use std::time::Duration;

use dataguardian::api::backup_run::BackupScope;
use dataguardian::api::{RestoreRun, RestoreValidation};
use sha2::{Digest, Sha256};

use crate::harness::{phase, wait_for};

const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_swapped_with_its_artifact_is_refused_by_the_recorded_digest() {
    let _serial = crate::serial().await;
    let s = crate::backup::scenario("pinning", "0 0 1 1 *", "").await;
    let b1 = s.run_to_end("b1", "shop").await;
    assert_eq!(phase(&b1).as_deref(), Some("Succeeded"), "{:#?}", b1.status);
    let a1 = b1.status.clone().unwrap().artifact.unwrap();
    // The operator computed the manifest's digest itself, from the bucket.
    let manifest_key = a1.key.clone();
    assert!(manifest_key.ends_with("/manifest.json"), "{manifest_key}");
    let honest = s
        .services
        .s3
        .get_object(&s.services.bucket, &manifest_key)
        .unwrap();
    assert_eq!(
        a1.manifest_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&honest)).as_str())
    );
    assert_eq!(a1.scope, Some(BackupScope::Database));

    // A second backup with planted data; its manifest and artifact replace b1's in the bucket.
    s.services
        .pg
        .psql(
            "shop",
            "CREATE TABLE planted (x int); INSERT INTO planted VALUES (1)",
        )
        .unwrap();
    let b2 = s.run_to_end("b2", "shop").await;
    assert_eq!(phase(&b2).as_deref(), Some("Succeeded"), "{:#?}", b2.status);
    let a2 = b2.status.clone().unwrap().artifact.unwrap();
    let dir1 = manifest_key.strip_suffix("manifest.json").unwrap();
    let dir2 = a2.key.strip_suffix("manifest.json").unwrap();
    assert_ne!(dir1, dir2);
    for key in s.services.keys(dir2) {
        let body = s.services.s3.get_object(&s.services.bucket, &key).unwrap();
        let rel = key.strip_prefix(dir2).unwrap();
        s.services
            .s3
            .put_object(&s.services.bucket, &format!("{dir1}{rel}"), body)
            .unwrap();
    }

    s.cluster
        .apply(&s.restore_yaml("swapped", "b1", "shop_swapped", ""));
    let r = wait_for::<RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "swapped",
        TIMEOUT,
        "restore finished",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        format!("{:?}", st.phase.unwrap()),
        "Failed",
        "{st:#?}\n{}",
        s.operator.log()
    );
    assert_eq!(st.reason.as_deref(), Some("ChecksumMismatch"), "{st:#?}");
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("replaced or altered")),
        "{st:#?}"
    );
    let exists = s
        .services
        .pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop_swapped'",
        )
        .unwrap();
    assert_eq!(exists.trim(), "0", "the target was not touched");

    s.cluster.apply(&format!(
        "apiVersion: dataguardian.io/v1alpha1\nkind: RestoreValidation\nmetadata: {{name: v-swapped, namespace: {}}}\nspec:\n  backupRunRef: {{name: b1}}\n  checks:\n    - rowCounts: {{}}\n",
        s.ns
    ));
    let v = wait_for::<RestoreValidation, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "v-swapped",
        TIMEOUT,
        "validation finished",
        |v| {
            v.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    let vs = v.status.clone().unwrap();
    assert_eq!(
        vs.result.map(|r| format!("{r:?}")).as_deref(),
        Some("Failed"),
        "{vs:#?}"
    );
    assert_eq!(vs.reason.as_deref(), Some("ChecksumMismatch"), "{vs:#?}");

    // b2, untouched in the bucket, restores with its own pin: the pin refuses only what differs
    // from the record.
    s.cluster
        .apply(&s.restore_yaml("honest", "b2", "shop_honest", ""));
    let r = wait_for::<RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "honest",
        TIMEOUT,
        "restore finished",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        format!("{:?}", st.phase.unwrap()),
        "Succeeded",
        "{st:#?}\n{}",
        s.operator.log()
    );
    let planted = s
        .services
        .pg
        .psql("shop_honest", "SELECT count(*) FROM planted")
        .unwrap();
    assert_eq!(planted.trim(), "1");
}

/// Issue 11, finding 4: retention deletes only what the operator computed itself and the
/// recorded manifest digest vouches for. A manifest rewritten in the bucket to list another
/// tenant's object makes retention keep the run and delete nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_nothing_a_rewritten_manifest_names() {
    let _serial = crate::serial().await;
    let s = crate::backup::scenario("pinprune", "0 0 1 1 *", "  retention: {keepLast: 1}\n").await;
    let first = s.run_to_end("first", "shop").await;
    assert_eq!(
        phase(&first).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        first.status
    );
    let key = first.status.clone().unwrap().artifact.unwrap().key;
    // Another tenant's object in the same bucket, and the first run's manifest rewritten to
    // name it.
    let victim = "victim/nightly/r1/databases/crm.pgdump.zst";
    s.services
        .s3
        .put_object(
            &s.services.bucket,
            victim,
            b"someone else's backup".to_vec(),
        )
        .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&s.services.s3.get_object(&s.services.bucket, &key).unwrap())
            .unwrap();
    let depth = key.matches('/').count();
    manifest["artifacts"][0]["key"] = format!("{}{victim}", "../".repeat(depth)).into();
    s.services
        .s3
        .put_object(
            &s.services.bucket,
            &key,
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();

    // keepLast 1: the second run makes retention prune the first.
    let second = s.run_to_end("second", "shop").await;
    assert_eq!(
        phase(&second).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        second.status
    );
    crate::harness::wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events.iter().any(|e| {
            e.starts_with("RetentionRefused") && e.contains("first") && e.contains("altered")
        })
    })
    .await;
    assert_eq!(
        s.services
            .s3
            .get_object(&s.services.bucket, victim)
            .unwrap(),
        b"someone else's backup".to_vec(),
        "the other tenant's object is untouched"
    );
    assert!(
        s.services.keys("e2e/").iter().any(|k| k == &key),
        "the altered manifest is kept as evidence"
    );
    let runs = s
        .cluster
        .kubectl(&["get", "backupruns", "-n", &s.ns])
        .unwrap();
    assert!(runs.lines().any(|l| l.starts_with("first")), "{runs}");
}
