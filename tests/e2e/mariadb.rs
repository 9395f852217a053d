//! The same control plane with a MariaDB source: backup to S3, restore into a new database.

use std::time::Duration;

use dataguardian::api::{BackupRun, BackupStorage, RestoreRun};

use crate::harness::{Cluster, Operator, Services, manual_run, phase, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_backup_and_restore_round_trip() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let services = Services::start();
    let maria = testkit::MariaDb::start().expect("MariaDB");
    maria.create_database("catalog").expect("create database");
    maria
        .sql(
            "catalog",
            "CREATE TABLE products (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(64) NOT NULL, price DECIMAL(10,2));
             INSERT INTO products (name, price) SELECT CONCAT('product ', seq), seq * 2.5 FROM seq_1_to_300;
             CREATE TABLE tags (product_id INT, tag VARCHAR(32));
             INSERT INTO tags SELECT seq, 'sale' FROM seq_1_to_40;",
        )
        .expect("seed");
    let ns = cluster.namespace("maria");
    let operator = Operator::start(&cluster, "dataguardian-system", "maria-op");
    operator.wait_ready(Duration::from_secs(60)).await;
    // The S3 storage and Secrets of the standard scenario, plus a MariaDB policy.
    cluster.apply(&services.manifests(&ns, "unused", "0 0 1 1 *", ""));
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: maria-creds, namespace: {ns}}}
stringData: {{password: "{pw}"}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: catalog, namespace: {ns}}}
spec:
  source:
    mysql: {{host: "{host}", port: {port}, database: catalog, user: {user},
            passwordSecretRef: {{name: maria-creds, key: password}}}}
  storageRef: {{name: main}}
  schedule: "0 0 1 1 *"
  compression: {{algorithm: gzip}}
"#,
        pw = maria.password(),
        host = maria.host(),
        port = maria.port(),
        user = maria.user(),
    ));
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
    cluster.apply(&manual_run(&ns, "catalog-now", "catalog"));
    let run = wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "catalog-now",
        Duration::from_secs(120),
        "run finished",
        |r| matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed")),
    )
    .await;
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        run.status
    );
    let artifact = run.status.unwrap().artifact.expect("artifact");
    assert_eq!(artifact.engine, "mysql");
    assert_eq!(artifact.rows, Some(340), "{artifact:?}");
    assert!(artifact.compression.starts_with("gzip"), "{artifact:?}");

    cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {{name: catalog-copy, namespace: {ns}}}
spec:
  backupRunRef: {{name: catalog-now}}
  target: {{mysql: {{host: "{host}", port: {port}, database: catalog_copy, user: {user},
                   passwordSecretRef: {{name: maria-creds, key: password}}}}}}
  createDatabase: true
"#,
        host = maria.host(),
        port = maria.port(),
        user = maria.user(),
    ));
    let restore = wait_for::<RestoreRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "catalog-copy",
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
    assert_eq!(
        restore
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| format!("{p:?}"))
            .as_deref(),
        Some("Succeeded"),
        "{:#?}",
        restore.status
    );
    for (table, expected) in [("products", "300"), ("tags", "40")] {
        let got = maria
            .sql("catalog_copy", &format!("SELECT count(*) FROM {table}"))
            .expect("count");
        assert_eq!(got.trim(), expected, "{table}");
    }
    let checksum = |db: &str| maria.sql(db, "CHECKSUM TABLE products").expect("checksum");
    let original = checksum("catalog");
    let copy = checksum("catalog_copy");
    assert_eq!(
        original.split_whitespace().last(),
        copy.split_whitespace().last(),
        "content checksum of products"
    );
}
