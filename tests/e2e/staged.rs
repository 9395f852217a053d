//! Staged and masked restores end to end (issue 16): the operator's Job restores into a staging
//! database, masks it, checks the guard and only then swaps it in. A poller watches the target
//! during the whole masked restore and never sees an unmasked row; the kept previous target is
//! dropped by the cleanup Job after its grace period; a failing guard, a tampered artifact and a
//! restore whose container is killed mid-stream leave the target byte-for-byte as it was (every
//! table's rows and md5 compared).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dataguardian::api::RestoreRun;

use crate::harness::{wait_for, wait_for_events};

/// Per table: "rows|md5 of every row's text, in order".
fn fingerprint(pg: &testkit::Postgres, db: &str) -> BTreeMap<String, String> {
    let tables = pg
        .psql(db, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1")
        .unwrap();
    tables
        .lines()
        .filter(|l| !l.is_empty())
        .map(|t| {
            let v = pg
                .psql(db, &format!("SELECT count(*) || '|' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '-') FROM {t} x"))
                .unwrap();
            (t.to_string(), v)
        })
        .collect()
}

fn databases(pg: &testkit::Postgres) -> String {
    pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staged_masked_restores_swap_clean_up_and_never_half_restore() {
    let _serial = crate::serial().await;
    let s = crate::backup::scenario("staged", "0 0 1 1 *", "").await;
    let b1 = s.run_to_end("b1", "shop").await;
    assert!(b1.status.unwrap().artifact.is_some());
    let pg = &s.services.pg;
    // The staging copy holds other data before the refresh.
    pg.create_database("shop_staging").unwrap();
    pg.psql(
        "shop_staging",
        "CREATE TABLE customers (id int PRIMARY KEY, name text); INSERT INTO customers VALUES (1, 'old staging row');",
    )
    .unwrap();

    // 1. A masked refresh, keeping the previous copy for 3 seconds; a poller watches the target.
    let stop = Arc::new(AtomicBool::new(false));
    let (unmasked, polls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (stop, unmasked, polls) = (stop.clone(), unmasked.clone(), polls.clone());
        let mut cmd = pg.client_command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-d", "shop_staging", "-c"]);
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let envs: Vec<_> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new(&program)
                    .args(&args)
                    .arg("SELECT count(*) FROM customers WHERE name LIKE 'customer %'")
                    .envs(envs.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                let n: u64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0);
                unmasked.fetch_add(n, Ordering::SeqCst);
                polls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    s.cluster.apply(&s.restore_yaml(
        "refresh",
        "b1",
        "shop_staging",
        "  overwrite: true\n  swap: {keepPreviousSeconds: 3}\n  masking:\n    rules:\n      - table: public.customers\n        columns: [{name: name, expression: \"'Person ' || id\"}]\n      - {sql: \"UPDATE orders SET total = round(total)\"}\n    guard: \"SELECT count(*) = 0 FROM customers WHERE name NOT LIKE 'Person %'\"\n",
    ));
    let r = s.restore_finished("refresh").await;
    stop.store(true, Ordering::SeqCst);
    poller.join().unwrap();
    let st = r.status.clone().unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "{st:#?}\n{}",
        s.operator.log()
    );
    assert_eq!(
        unmasked.load(Ordering::SeqCst),
        0,
        "an unmasked row was visible in the target"
    );
    assert!(polls.load(Ordering::SeqCst) > 2);
    let swap = st.swap.clone().expect("status.swap");
    assert!(swap.swapped, "{swap:?}");
    assert_eq!(
        swap.staging_database.as_deref(),
        Some("shop_staging_dgstaging")
    );
    assert_eq!(swap.masking_rules_applied, Some(2));
    assert_eq!(swap.guard_passed, Some(true));
    let previous = swap.previous_database.clone().expect("previous kept");
    assert!(swap.previous_drop_after.is_some());
    assert_eq!(s.count("shop_staging", "customers"), "50");
    assert_eq!(
        pg.psql("shop_staging", "SELECT name FROM customers WHERE id = 3")
            .unwrap(),
        "Person 3"
    );
    assert_eq!(
        pg.psql(
            "shop_staging",
            "SELECT count(*) FROM orders WHERE total <> round(total)"
        )
        .unwrap(),
        "0"
    );
    wait_for_events(&s.cluster, &s.ns, "refresh", |events| {
        events.iter().any(|e| {
            e.starts_with("Swapped")
                && e.contains("shop_staging_dgstaging")
                && e.contains(&previous)
        })
    })
    .await;

    // 2. After the grace period the cleanup Job drops the previous copy, recorded in status.
    let r = wait_for::<RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "refresh",
        Duration::from_secs(120),
        "previous target dropped",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.swap.as_ref())
                .is_some_and(|w| w.previous_dropped_at.is_some())
        },
    )
    .await;
    let swap = r.status.unwrap().swap.unwrap();
    assert_eq!(swap.cleanup_job_name.as_deref(), Some("refresh-cleanup"));
    assert!(!databases(pg).contains(&previous), "{}", databases(pg));
    wait_for_events(&s.cluster, &s.ns, "refresh", |events| {
        events.iter().any(|e| e.starts_with("PreviousDropped"))
    })
    .await;
    let before = fingerprint(pg, "shop_staging");

    // 3. A guard that does not hold: Failed (GuardFailed), the target byte-for-byte as it was.
    s.cluster.apply(&s.restore_yaml(
        "weak-masking",
        "b1",
        "shop_staging",
        "  overwrite: true\n  masking:\n    guard: \"SELECT count(*) = 0 FROM customers\"\n",
    ));
    let r = s.restore_finished("weak-masking").await;
    let st = r.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("GuardFailed"), "{st:#?}");
    assert!(!st.swap.unwrap().swapped);
    assert_eq!(fingerprint(pg, "shop_staging"), before);
    assert!(!databases(pg).contains("_dgstaging"), "{}", databases(pg));

    // 4. A tampered artifact: Failed (ChecksumMismatch) as the stream ends, target untouched.
    let data_key = s
        .services
        .keys("e2e/")
        .into_iter()
        .find(|k| k.contains("/databases/") && !k.ends_with("manifest.json"))
        .expect("data key");
    let mut bytes = s
        .services
        .s3
        .get_object(&s.services.bucket, &data_key)
        .unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    s.services
        .s3
        .put_object(&s.services.bucket, &data_key, bytes)
        .unwrap();
    s.cluster
        .apply(&s.restore_yaml("tampered", "b1", "shop_staging", "  overwrite: true\n"));
    let r = s.restore_finished("tampered").await;
    let st = r.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("ChecksumMismatch"), "{st:#?}");
    assert_eq!(fingerprint(pg, "shop_staging"), before);
    assert!(!databases(pg).contains("_dgstaging"), "{}", databases(pg));

    // 5. Killed mid-stream (SIGKILL of the Job's container: no cleanup possible). A storage
    // `slow` reaches the same bucket through a proxy that stalls downloads half-way through the
    // data; the container is killed there. The restore fails, the target is byte-for-byte as
    // it was.
    let b2 = s.backup("b2").await;
    let artifact = b2.status.unwrap().artifact.unwrap();
    // The manifest's key in the bucket (the storage's prefix included).
    let manifest_key = artifact
        .manifest_key
        .as_deref()
        .expect("b2's manifest key")
        .trim_start_matches(&format!("s3://{}/", s.services.bucket))
        .to_string();
    assert!(manifest_key.starts_with("e2e/"), "{manifest_key}");
    let manifest_len = s
        .services
        .s3
        .get_object(&s.services.bucket, &manifest_key)
        .unwrap()
        .len() as u64;
    let size = artifact.size_bytes;
    let stall_at = manifest_len + size / 2;
    let proxy = testkit::FaultyProxy::start(
        s.services.s3.addr(),
        testkit::FaultPlan::StallDownloadAfterBytes(stall_at),
    )
    .expect("proxy");
    s.cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: slow, namespace: {ns}}}
spec:
  s3: {{bucket: {bucket}, region: us-east-1, endpoint: "{endpoint}", forcePathStyle: true,
       prefix: e2e/, credentialsSecretRef: {{name: s3-creds}}}}
---
apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {{name: killed, namespace: {ns}}}
spec:
  storageRef: {{name: slow}}
  key: {key}
  target: {{postgres: {target}}}
  overwrite: true
  backoffLimit: 0
"#,
        ns = s.ns,
        bucket = s.services.bucket,
        endpoint = proxy.endpoint(),
        key = manifest_key.trim_start_matches("e2e/"),
        target = s.services.postgres_endpoint("shop_staging"),
    ));
    let running = wait_for::<RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "killed",
        Duration::from_secs(120),
        "the restore's Job stalled half-way through the download",
        |r| {
            r.status.as_ref().is_some_and(|st| st.job_name.is_some())
                && proxy.stats().bytes_down >= stall_at
        },
    )
    .await;
    // Let it sit in the stall a moment, then kill it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = running.status.unwrap().job_name.unwrap();
    assert_eq!(
        s.cluster.kill_job_containers(&s.ns, &job),
        1,
        "the restore's container was running"
    );
    let r = s.restore_finished("killed").await;
    let st = r.status.unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Failed"),
        "{st:#?}"
    );
    assert_eq!(
        fingerprint(pg, "shop_staging"),
        before,
        "killed mid-stream: the target changed"
    );

    // The next restore (from the real storage) cleans up what the killed one left behind.
    s.cluster
        .apply(&s.restore_yaml("after-kill", "b2", "shop_staging", "  overwrite: true\n"));
    let r = s.restore_finished("after-kill").await;
    let st = r.status.unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "{st:#?}"
    );
    assert!(!databases(pg).contains("_dgstaging"), "{}", databases(pg));
}
