//! `make demo`: the product end to end on the local stand-ins, narrated. Ignored in `make test`
//! (the scenarios in the other modules assert the same behaviour); run with
//! `cargo test --test e2e demo -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use dataguardian::api::{BackupRun, BackupStorage, RestoreRun, RestoreValidation};
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
    say(
        "Starting the local stand-ins: Kubernetes API stand-in + Job runner, PostgreSQL 15, S3 (moto)",
    );
    let cluster = Cluster::start().await;
    let services = Services::start();
    println!(
        "PostgreSQL on {}:{} with database `shop` (50 customers, 500 orders)",
        services.pg.host(),
        services.pg.port()
    );
    println!(
        "S3 at {} with bucket `{}`",
        services.s3.endpoint(),
        services.bucket
    );
    let ns = cluster.namespace("demo");

    say("Starting the operator (dataguardian operator) — leader election, /readyz, /metrics");
    let operator = Operator::start(&cluster, "dataguardian-system", "demo-operator");
    operator.wait_ready(Duration::from_secs(60)).await;
    println!("ready; metrics at http://{}/metrics", operator.metrics_addr);

    say("Applying a BackupStorage (S3) and a BackupPolicy that backs `shop` up every minute");
    cluster.apply(&services.manifests(&ns, "shop", "* * * * *", "  retention: {keepLast: 5}\n"));
    wait_for::<BackupStorage, _>(
        &cluster,
        Some(&operator),
        &ns,
        "main",
        Duration::from_secs(60),
        "storage Ready",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await;
    show(&cluster, &["get", "backupstorages", "-n", &ns]);

    say("A manual backup before a risky migration: kubectl apply a BackupRun");
    cluster.apply(&manual_run(&ns, "before-migration", "shop"));
    let run = wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "before-migration",
        Duration::from_secs(120),
        "manual run finished",
        |r| matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed")),
    )
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
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        run.status
    );

    say("Waiting for the schedule to fire (every minute, on the minute)");
    let runs: Api<BackupRun> = Api::namespaced(cluster.client.clone(), &ns);
    let start = Instant::now();
    loop {
        let items = runs.list(&ListParams::default()).await.expect("list").items;
        if items
            .iter()
            .any(|r| r.spec.scheduled_time.is_some() && phase(r).as_deref() == Some("Succeeded"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "no scheduled run succeeded:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    show(&cluster, &["get", "dataguardian", "-n", &ns]);
    show(
        &cluster,
        &[
            "get",
            "events",
            "-n",
            &ns,
            "--sort-by=.metadata.creationTimestamp",
        ],
    );

    say("Restoring `before-migration` into a new database `shop_copy`: kubectl apply a RestoreRun");
    cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {{name: copy, namespace: {ns}}}
spec:
  backupRunRef: {{name: before-migration}}
  target: {{postgres: {{host: "{host}", port: {port}, database: shop_copy, user: {user},
                      passwordSecretRef: {{name: db-creds, key: password}}}}}}
  createDatabase: true
"#,
        host = services.pg.host(),
        port = services.pg.port(),
        user = services.pg.user(),
    ));
    let restore = wait_for::<RestoreRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "copy",
        Duration::from_secs(120),
        "restore finished",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    show(&cluster, &["get", "restoreruns", "-n", &ns]);
    println!(
        "shop_copy has {} orders (shop has {}); checksum verified before writing: {:?}",
        services
            .pg
            .psql("shop_copy", "SELECT count(*) FROM orders")
            .unwrap_or_default()
            .trim(),
        services
            .pg
            .psql("shop", "SELECT count(*) FROM orders")
            .unwrap_or_default()
            .trim(),
        restore
            .status
            .as_ref()
            .and_then(|s| s.checksum.as_ref())
            .map(|c| c.verified)
    );

    say(
        "Proving the backup restores: a RestoreValidation (sandbox PostgreSQL as a native sidecar)",
    );
    cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: RestoreValidation
metadata: {{name: prove-it, namespace: {ns}}}
spec:
  backupRunRef: {{name: before-migration}}
  checks:
    - rowCounts: {{}}
    - {{name: orders, sql: "SELECT count(*) FROM orders", expect: {{min: 1}}}}
"#
    ));
    let validation = wait_for::<RestoreValidation, _>(
        &cluster,
        Some(&operator),
        &ns,
        "prove-it",
        Duration::from_secs(120),
        "validation finished",
        |v| {
            v.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    show(&cluster, &["get", "restorevalidations", "-n", &ns]);
    for c in validation
        .status
        .as_ref()
        .map(|s| s.checks.clone())
        .unwrap_or_default()
    {
        println!(
            "  check {}: {:?} (expected {}, observed {})",
            c.name,
            c.result,
            c.expected.unwrap_or_default(),
            c.observed.unwrap_or_default()
        );
    }
    show(&cluster, &["get", "backupruns", "-n", &ns]);

    say("The same at a glance, through the kubectl plugin: kubectl dataguardian status");
    let (code, table, err) = cluster.plugin(&["status", "-n", &ns]);
    assert_eq!(code, 0, "kubectl dataguardian status: {err}");
    for line in table.lines() {
        println!("  {line}");
    }

    say("Objects in S3 (one artifact + manifest.json per run)");
    for key in services.keys("e2e/") {
        println!("  s3://{}/{key}", services.bucket);
    }
    say("Metrics (excerpt)");
    if let Some((_, body)) = operator.http_get("/metrics") {
        for line in body.lines().filter(|l| {
            l.starts_with("dataguardian_backup_runs_total")
                || l.starts_with("dataguardian_backup_last_success")
                || l.starts_with("dataguardian_restore_runs_total")
                || l.starts_with("dataguardian_restore_validations_total")
        }) {
            println!("  {line}");
        }
    }
    say("Demo complete: every server is stopped and every temp dir removed now");
}
