//! Reconcile tests: the real `reconcile` against the API stand-in, in process.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;

use crate::api::{BackupRun, BackupRunPhase};
use crate::controller::common::reconcile::ControllerKind;
use crate::controller::common::testing::{Given, Sim};

const RUN: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {name: before-migration, namespace: shop}
spec: {policyRef: {name: nightly}, trigger: Manual}
"#;

#[tokio::test]
async fn a_run_of_a_missing_policy_waits_with_a_reason_an_event_and_no_job() {
    let sim = Sim::start().await;
    let run: BackupRun = sim
        .reconcile(
            ControllerKind::BackupRun,
            Given::Yaml(RUN),
            super::reconcile,
        )
        .await;
    let status = run.status.expect("the status is written");
    assert_eq!(status.phase, Some(BackupRunPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("PolicyNotFound"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("nightly"),
        "{status:?}"
    );
    assert_eq!(status.job_name, None, "no Job without a policy");
    let jobs: Api<Job> = Api::namespaced(sim.ctx.client.clone(), "shop");
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        sim.event_reasons("shop", "before-migration")
            .await
            .contains(&"PolicyNotFound".to_owned())
    );

    // The wrapper timed and counted it.
    let metrics = sim.ctx.metrics.encode();
    assert!(
        metrics.contains(
            r#"dataguardian_reconcile_duration_seconds_count{controller="backuprun",result="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dataguardian_reconciles_total{controller="backuprun"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_finished_run_is_left_alone() {
    let sim = Sim::start().await;
    let run: BackupRun = sim.create(RUN).await;
    let mut finished = run.clone();
    finished.status = Some(crate::api::backup_run::BackupRunStatus {
        phase: Some(BackupRunPhase::Failed),
        reason: Some("JobFailed".into()),
        ..Default::default()
    });
    super::reconcile(Arc::new(finished), sim.ctx.clone())
        .await
        .expect("reconcile");
    let run: BackupRun = sim.get("shop", "before-migration").await;
    assert!(run.status.is_none(), "nothing written: {:?}", run.status);
}

/// Issue 11, finding 4: a run whose storage has no credentials Secret, in a namespace the
/// operator does not allow ambient credentials in, waits with a clear reason and gets no Job
/// (the Job's pod would otherwise run with whatever cloud identity the node has).
#[tokio::test]
async fn a_run_on_a_storage_without_credentials_waits_and_gets_no_job() {
    let sim = Sim::start().await;
    let _: crate::api::BackupStorage = sim
        .create(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: main, namespace: shop}\nspec: {s3: {bucket: shop-backups, region: us-east-1}}\n",
        )
        .await;
    let _: crate::api::BackupPolicy = sim
        .create(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: nightly, namespace: shop}\nspec:\n  source: {postgres: {host: db, port: 5432, database: shop, user: u}}\n  storageRef: {name: main}\n  schedule: \"0 2 * * *\"\n",
        )
        .await;
    let run: BackupRun = sim
        .reconcile(
            ControllerKind::BackupRun,
            Given::Yaml(RUN),
            super::reconcile,
        )
        .await;
    let status = run.status.expect("the status is written");
    assert_eq!(status.phase, Some(BackupRunPhase::Pending));
    assert_eq!(
        status.reason.as_deref(),
        Some("AmbientCredentialsNotAllowed"),
        "{status:?}"
    );
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("credentialsSecretRef")),
        "{status:?}"
    );
    let jobs: Api<Job> = Api::namespaced(sim.ctx.client.clone(), "shop");
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
