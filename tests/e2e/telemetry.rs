//! The reconcile wrapper's telemetry, seen from outside: after the operator reconciles an
//! object, `/metrics` serves the reconcile duration histogram for that controller.

use std::time::{Duration, Instant};

use dataguardian::api::BackupRun;

use crate::harness::{Cluster, Operator, manual_run, reason, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_durations_show_on_metrics_after_a_reconcile() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("telemetry");
    let operator = Operator::start(&cluster, "dataguardian-system", "telemetry-op");
    operator.wait_ready(Duration::from_secs(60)).await;

    // A run whose policy does not exist: the run controller reconciles it and reports why it
    // waits — a successful reconcile with no Job.
    cluster.apply(&manual_run(&ns, "orphan", "missing-policy"));
    wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "orphan",
        Duration::from_secs(60),
        "the run's status names the missing policy",
        |r| !reason(r).is_empty(),
    )
    .await;

    let count =
        r#"dataguardian_reconcile_duration_seconds_count{controller="backuprun",result="ok"} "#;
    let bucket = r#"dataguardian_reconcile_duration_seconds_bucket{le="0.001",controller="backuprun",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (code, body) = operator.http_get("/metrics").expect("metrics");
        assert_eq!(code, 200, "{body}");
        let observed = body
            .lines()
            .find_map(|l| l.strip_prefix(count))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if observed >= 1 || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        metrics.contains("# TYPE dataguardian_reconcile_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(count)),
        "no backuprun reconcile was timed:\n{metrics}"
    );
    assert!(
        metrics.contains(bucket),
        "buckets start at 1 ms:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"dataguardian_reconciles_total{controller="backuprun"}"#),
        "{metrics}"
    );
}
