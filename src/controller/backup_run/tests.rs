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

#[tokio::test]
async fn secret_messages_name_the_reference_not_the_secret_and_do_not_tell_missing_from_keyless() {
    use k8s_openapi::api::core::v1::Secret;
    // The storage has no credentials Secret: the namespace may use ambient ones, so the
    // policy's own Secret is what the run waits for.
    let sim = Sim::start_with(crate::controller::common::context::Settings {
        ambient_credentials_namespaces: vec!["shop".into()],
        ..Default::default()
    })
    .await;
    let _: crate::api::BackupStorage = sim
        .create(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: main, namespace: shop}
spec: {s3: {bucket: shop-backups, endpoint: "http://127.0.0.1:9", forcePathStyle: true}}
"#,
        )
        .await;
    let _: crate::api::BackupPolicy = sim
        .create(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: shop}
spec:
  source: {postgres: {host: db, port: 5432, database: shop, user: u,
                      passwordSecretRef: {name: platform-db-admin, key: superuser-password}}}
  storageRef: {name: main}
  schedule: "0 2 * * *"
"#,
        )
        .await;
    let message = |run: BackupRun| {
        let status = run.status.expect("status");
        assert_eq!(
            status.reason.as_deref(),
            Some("SecretNotFound"),
            "{status:?}"
        );
        status.message.unwrap_or_default()
    };
    // The Secret is missing.
    let missing = message(
        sim.reconcile(
            ControllerKind::BackupRun,
            Given::Yaml(RUN),
            super::reconcile,
        )
        .await,
    );
    // The Secret exists, without the key.
    let secrets: Api<Secret> = Api::namespaced(sim.ctx.client.clone(), "shop");
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "platform-db-admin"},
                "stringData": {"other": "x"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let stored: BackupRun = sim.get("shop", "before-migration").await;
    let keyless = message(
        sim.reconcile(
            ControllerKind::BackupRun,
            Given::Stored(stored),
            super::reconcile,
        )
        .await,
    );
    for text in [&missing, &keyless] {
        assert!(
            text.contains("spec.source.postgres.passwordSecretRef"),
            "{text}"
        );
        assert!(text.contains("nightly"), "{text}");
        assert!(!text.contains("platform-db-admin"), "{text}");
        assert!(!text.contains("superuser-password"), "{text}");
    }
    assert_eq!(
        missing, keyless,
        "a missing Secret and a missing key read the same"
    );
}

/// Finding 5: a policy's `jobTemplate.image` ran whatever image it named, with the policy's
/// Secrets. An image off the operator's allow-list fails the run with `ImageNotAllowed` and
/// no Job; the same policy with the default image gets its Job.
#[tokio::test]
async fn an_image_off_the_allow_list_fails_the_run_without_a_job() {
    let sim = Sim::start().await;
    let _: crate::api::BackupStorage = sim
        .create(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: main, namespace: shop}
spec: {filesystem: {claimName: backups, path: /shop}}
"#,
        )
        .await;
    let policy = |name: &str, template: &str| {
        format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: {name}, namespace: shop}}
spec:
  source: {{postgres: {{host: db, database: shop, user: backup}}}}
  storageRef: {{name: main}}
  schedule: "0 2 * * *"
  {template}
"#
        )
    };
    let _: crate::api::BackupPolicy = sim
        .create(&policy(
            "nightly",
            "jobTemplate: {image: \"attacker.example/agent:1\"}",
        ))
        .await;
    let _: crate::api::BackupPolicy = sim
        .create(&policy("plain", "jobTemplate: {priorityClassName: low}"))
        .await;

    let run: BackupRun = sim
        .reconcile(
            ControllerKind::BackupRun,
            Given::Yaml(RUN),
            super::reconcile,
        )
        .await;
    let status = run.status.expect("the status is written");
    assert_eq!(status.phase, Some(BackupRunPhase::Failed), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("ImageNotAllowed"));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("attacker.example/agent:1") && message.contains("allow-list"),
        "{message}"
    );
    let jobs: Api<Job> = Api::namespaced(sim.ctx.client.clone(), "shop");
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let run: BackupRun = sim
        .reconcile(
            ControllerKind::BackupRun,
            Given::Yaml(
                &RUN.replace("before-migration", "fine")
                    .replace("nightly", "plain"),
            ),
            super::reconcile,
        )
        .await;
    let status = run.status.expect("the status is written");
    assert_eq!(status.reason.as_deref(), Some("JobCreated"), "{status:?}");
    let jobs = jobs.list(&Default::default()).await.unwrap().items;
    assert_eq!(jobs.len(), 1);
    let pod = jobs[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(
        pod.containers[0].image,
        Some(sim.ctx.settings.agent_image.clone())
    );
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

#[test]
fn the_kms_key_recorded_is_the_one_the_backup_job_was_given() {
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "agent", "args": [
                "agent", "backup", "--kms-key", "alias/k1", "--kms-region", "eu-west-1"
            ]}]
        }}}
    }))
    .unwrap();
    assert_eq!(super::kms_key_of_job(&job).as_deref(), Some("alias/k1"));
    let plain: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "agent", "args": ["agent", "backup", "--recipient", "age1x"]}]
        }}}
    }))
    .unwrap();
    assert_eq!(super::kms_key_of_job(&plain), None);
}
