//! `make demo`: the product end to end on the local stand-ins, narrated. Ignored in `make test`
//! (the scenarios in the other modules assert the same behaviour); run with
//! `cargo test --test e2e demo -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use dataguardian::api::{BackupRun, BackupStorage};
use kube::api::{Api, ListParams};

use crate::harness::{Cluster, Operator, Services, manual_run, phase, wait_for};

fn say(text: &str) {
    println!("\n\x1b[1m==> {text}\x1b[0m");
}

fn show(cluster: &Cluster, args: &[&str]) {
    println!("$ kubectl {}", args.join(" "));
    match cluster.kubectl(args) {
        Ok(out) => print!("{out}"),
        Err(e) => println!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the narrated demo; run by `make demo`"]
async fn demo() {
    let _serial = crate::serial().await;
    say("Starting the local stand-ins: Kubernetes API stand-in + Job runner, PostgreSQL 15, S3 (moto)");
    let cluster = Cluster::start().await;
    let services = Services::start();
    println!("PostgreSQL on {}:{} with database `shop` (50 customers, 500 orders)", services.pg.host(), services.pg.port());
    println!("S3 at {} with bucket `{}`", services.s3.endpoint(), services.bucket);
    let ns = cluster.namespace("demo");

    say("Starting the operator (dataguardian operator) — leader election, /readyz, /metrics");
    let operator = Operator::start(&cluster, "dataguardian-system", "demo-operator");
    operator.wait_ready(Duration::from_secs(60)).await;
    println!("ready; metrics at http://{}/metrics", operator.metrics_addr);

    say("Applying a BackupStorage (S3) and a BackupPolicy that backs `shop` up every minute");
    cluster.apply(&services.manifests(&ns, "shop", "* * * * *", "  retention: {keepLast: 5}\n"));
    wait_for::<BackupStorage, _>(&cluster, Some(&operator), &ns, "main", Duration::from_secs(60), "storage Ready", |s| {
        s.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    show(&cluster, &["get", "backupstorages", "-n", &ns]);

    say("A manual backup before a risky migration: kubectl apply a BackupRun");
    cluster.apply(&manual_run(&ns, "before-migration", "shop"));
    let run = wait_for::<BackupRun, _>(&cluster, Some(&operator), &ns, "before-migration", Duration::from_secs(120), "manual run finished", |r| {
        matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed"))
    })
    .await;
    show(&cluster, &["get", "backupruns", "-n", &ns]);
    let st = run.status.clone().unwrap_or_default();
    if let Some(a) = &st.artifact {
        println!(
            "artifact: {} ({} stored, {} raw bytes, sha256 {}…), {} tables / {} rows, confirmed in storage",
            a.manifest_key.clone().unwrap_or_default(),
            a.size.clone().unwrap_or_default(),
            a.raw_bytes,
            a.sha256.chars().take(16).collect::<String>(),
            a.tables.unwrap_or(0),
            a.rows.unwrap_or(0)
        );
    }
    assert_eq!(phase(&run).as_deref(), Some("Succeeded"), "{:#?}", run.status);

    say("Waiting for the schedule to fire (every minute, on the minute)");
    let runs: Api<BackupRun> = Api::namespaced(cluster.client.clone(), &ns);
    let start = Instant::now();
    loop {
        let items = runs.list(&ListParams::default()).await.expect("list").items;
        if items.iter().any(|r| r.spec.scheduled_time.is_some() && phase(r).as_deref() == Some("Succeeded")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(150), "no scheduled run succeeded:\n{}", operator.log());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    show(&cluster, &["get", "dataguardian", "-n", &ns]);
    show(&cluster, &["get", "events", "-n", &ns, "--sort-by=.metadata.creationTimestamp"]);

    say("Objects in S3 (one artifact + manifest.json per run)");
    for key in services.keys("e2e/") {
        println!("  s3://{}/{key}", services.bucket);
    }
    say("Metrics (excerpt)");
    if let Some((_, body)) = operator.http_get("/metrics") {
        for line in body.lines().filter(|l| l.starts_with("dataguardian_backup_runs_total") || l.starts_with("dataguardian_backup_last_success")) {
            println!("  {line}");
        }
    }
    say("Demo complete: every server is stopped and every temp dir removed now");
}
