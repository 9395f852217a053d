//! Operating the operator: two replicas, the backup queue, storage outages, bad schedules.

use std::time::Duration;

use dataguardian::api::{BackupPolicy, BackupRun, BackupStorage};

use crate::harness::{
    Cluster, Operator, Services, Webhooks, manual_run, phase, reason, wait_for, wait_for_events,
};

fn condition(
    conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String)> {
    conds
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_one_leads_and_the_other_takes_over() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let services = Services::start();
    let ns = cluster.namespace("replicas");
    let mut a = Operator::start(&cluster, "dataguardian-system", "replica-a");
    a.wait_ready(Duration::from_secs(60)).await;
    let b = Operator::start(&cluster, "dataguardian-system", "replica-b");
    // The follower is Ready too (its standby caches are synced), but does not lead.
    b.wait_ready(Duration::from_secs(60)).await;
    let (code, body) = b.http_get("/readyz").expect("replica b answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("standby, leader: replica-a"), "{body}");
    assert_eq!(b.http_get("/healthz").map(|r| r.0), Some(200));

    // The leader dies without releasing the lease: the follower takes over after it expires.
    a.kill();
    b.wait_leading(Duration::from_secs(30)).await;
    cluster.apply(&services.manifests(&ns, "shop", "0 0 1 1 *", ""));
    cluster.apply(&manual_run(&ns, "after-failover", "shop"));
    let r = wait_for::<BackupRun, _>(
        &cluster,
        Some(&b),
        &ns,
        "after-failover",
        Duration::from_secs(120),
        "run finished",
        |r| matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed")),
    )
    .await;
    assert_eq!(phase(&r).as_deref(), Some("Succeeded"), "{:#?}", r.status);
    let lease = cluster
        .kubectl(&[
            "get",
            "lease",
            "dataguardian-operator",
            "-n",
            "dataguardian-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .unwrap();
    assert_eq!(lease, "replica-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_global_limit_queues_backups_and_reports_the_position() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let services = Services::start();
    let ns = cluster.namespace("queue");
    let operator = Operator::start_with(
        &cluster,
        "dataguardian-system",
        "queue-op",
        &[("DG_MAX_CONCURRENT_BACKUPS", "1")],
    );
    operator.wait_ready(Duration::from_secs(60)).await;
    cluster.apply(&services.manifests(&ns, "shop", "0 0 1 1 *", ""));
    // Hold the first backup inside its dump so the second must wait for the slot.
    let locker = std::thread::spawn({
        let mut cmd = services.pg.client_command("psql");
        cmd.args([
            "-d",
            "shop",
            "-c",
            "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
        ]);
        move || cmd.output()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.apply(&manual_run(&ns, "first", "shop"));
    wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "first",
        Duration::from_secs(30),
        "first running",
        |r| phase(r).as_deref() == Some("Running"),
    )
    .await;
    cluster.apply(&manual_run(&ns, "second", "shop"));
    let queued = wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "second",
        Duration::from_secs(30),
        "second queued",
        |r| reason(r) == "Queued",
    )
    .await;
    assert_eq!(phase(&queued).as_deref(), Some("Pending"));
    let msg = queued.status.unwrap().message.unwrap_or_default();
    assert!(msg.contains("position 1"), "{msg}");
    for name in ["first", "second"] {
        let r = wait_for::<BackupRun, _>(
            &cluster,
            Some(&operator),
            &ns,
            name,
            Duration::from_secs(120),
            "finished",
            |r| matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed")),
        )
        .await;
        assert_eq!(
            phase(&r).as_deref(),
            Some("Succeeded"),
            "{name}: {:#?}",
            r.status
        );
    }
    let _ = locker.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_outages_and_bad_schedules_are_reported_with_reasons() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let mut services = Services::start();
    let ns = cluster.namespace("outage");
    let operator = Operator::start(&cluster, "dataguardian-system", "outage-op");
    operator.wait_ready(Duration::from_secs(60)).await;
    // An unhealthy storage is news for the policy's channels.
    let hooks = Webhooks::start().await;
    cluster.apply(&services.manifests(
        &ns,
        "shop",
        "0 0 1 1 *",
        "  timeZone: Mars/Olympus_Mons\n  notifications:\n    - {name: storage, events: [StorageUnhealthy], webhook: {urlSecretRef: {name: hooks, key: url}}}\n",
    ));
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: {ns}}}\nstringData: {{url: \"{}/storage/tok-st\"}}\n",
        hooks.base
    ));

    // An unknown time zone passes the CRD's pattern but not the operator.
    let p = wait_for::<BackupPolicy, _>(
        &cluster,
        Some(&operator),
        &ns,
        "shop",
        Duration::from_secs(30),
        "ScheduleValid False",
        |p| {
            p.status.as_ref().is_some_and(|s| {
                condition(&s.conditions, "ScheduleValid").is_some_and(|c| c.0 == "False")
            })
        },
    )
    .await;
    let st = p.status.unwrap();
    assert_eq!(
        condition(&st.conditions, "ScheduleValid").unwrap().1,
        "InvalidTimeZone"
    );
    assert_eq!(condition(&st.conditions, "Ready").unwrap().0, "False");
    wait_for_events(&cluster, &ns, "shop", |events| {
        events
            .iter()
            .any(|e| e.starts_with("InvalidTimeZone") && e.contains("Mars/Olympus_Mons"))
    })
    .await;

    // The storage goes down: Ready turns False with the failing step, and an Event says so.
    wait_for::<BackupStorage, _>(
        &cluster,
        Some(&operator),
        &ns,
        "main",
        Duration::from_secs(30),
        "storage Ready",
        |s| {
            s.status
                .as_ref()
                .is_some_and(|st| condition(&st.conditions, "Ready").is_some_and(|c| c.0 == "True"))
        },
    )
    .await;
    services.s3.kill();
    let s = wait_for::<BackupStorage, _>(
        &cluster,
        Some(&operator),
        &ns,
        "main",
        Duration::from_secs(60),
        "storage not Ready",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                condition(&st.conditions, "Ready").is_some_and(|c| c.0 == "False")
            })
        },
    )
    .await;
    let st = s.status.unwrap();
    assert_eq!(
        condition(&st.conditions, "Ready").unwrap().1,
        "WriteFailed",
        "{st:#?}"
    );
    assert!(
        st.history.len() >= 2
            && st.history.iter().any(|h| h.success)
            && st.history.last().is_some_and(|h| !h.success),
        "{:#?}",
        st.history
    );
    wait_for_events(&cluster, &ns, "main", |events| {
        events.iter().any(|e| e.starts_with("NotReady"))
    })
    .await;
    let doc = hooks
        .wait_for("/storage/tok-st", |v| v["event"] == "StorageUnhealthy")
        .await;
    assert_eq!(
        (doc["object"]["kind"].as_str(), doc["policy"].as_str()),
        (Some("BackupPolicy"), Some("shop"))
    );
    assert_eq!(doc["reason"], "WriteFailed", "{doc}");
    assert_eq!(
        hooks.posts("/storage/tok-st").len(),
        1,
        "one notification per outage, not one per probe"
    );
    assert!(
        !operator.log().contains(services.s3.secret_access_key()),
        "S3 secret in the operator log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_that_stops_moving_bytes_fails_as_stalled() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let services = Services::start();
    let ns = cluster.namespace("stall");
    let operator = Operator::start(&cluster, "dataguardian-system", "stall-op");
    operator.wait_ready(Duration::from_secs(60)).await;
    cluster.apply(&services.manifests(
        &ns,
        "shop",
        "0 0 1 1 *",
        "  stallTimeoutSeconds: 30\n  backoffLimit: 0\n",
    ));
    // The dump waits on a lock for far longer than the stall timeout: no bytes move.
    let locker = std::thread::spawn({
        let mut cmd = services.pg.client_command("psql");
        cmd.args([
            "-d",
            "shop",
            "-c",
            "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(90); COMMIT;",
        ]);
        move || cmd.output()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.apply(&manual_run(&ns, "stuck", "shop"));
    let r = wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "stuck",
        Duration::from_secs(120),
        "run finished",
        |r| matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed")),
    )
    .await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        (phase(&r).as_deref(), st.reason.as_deref()),
        (Some("Failed"), Some("Stalled")),
        "{st:#?}"
    );
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains("no bytes moved"),
        "{st:#?}"
    );
    // Its Job is gone, so the dump does not linger.
    let job = st.job_name.unwrap();
    let jobs = crate::harness::jobs(&cluster, &ns).await;
    assert!(!jobs.contains_key(&job), "stalled Job {job} still exists");
    drop(locker);
}
