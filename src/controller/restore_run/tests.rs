//! Reconcile tests: the real `reconcile` against the API stand-in, in process.

use crate::api::{RestoreRun, RestoreRunPhase};
use crate::controller::common::reconcile::ControllerKind;
use crate::controller::common::testing::{Given, Sim};

const RESTORE: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {name: to-staging, namespace: shop}
spec:
  backupRunRef: {name: before-migration}
  target: {postgres: {host: db-staging, port: 5432, database: shop_copy, user: restore}}
"#;

#[tokio::test]
async fn a_restore_of_a_missing_backup_waits_with_a_reason() {
    let sim = Sim::start().await;
    let run: RestoreRun = sim
        .reconcile(
            ControllerKind::RestoreRun,
            Given::Yaml(RESTORE),
            super::reconcile,
        )
        .await;
    let status = run.status.expect("the status is written");
    assert!(
        matches!(status.phase, Some(RestoreRunPhase::Queued)) && status.job_name.is_none(),
        "{status:?}"
    );
    assert_eq!(status.reason.as_deref(), Some("BackupRunNotFound"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("before-migration"),
        "{status:?}"
    );
}

/// The API's refusal message of `object`, or a panic when it was accepted.
async fn refusal(sim: &Sim, object: serde_json::Value) -> String {
    match sim.create_json::<RestoreRun>(object).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        other => panic!("expected a 422 refusal, got {other:?}"),
    }
}

fn restore_with_template(name: &str, template: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "dataguardian.io/v1alpha1",
        "kind": "RestoreRun",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "backupRunRef": {"name": "before-migration"},
            "target": {"postgres": {"host": "db-staging", "database": "shop_copy", "user": "restore"}},
            "jobTemplate": template
        }
    })
}

/// Finding 5: whoever may create a RestoreRun could choose the restore Pod's image,
/// ServiceAccount and security context (privileged, root). The API refuses each of them with a
/// message naming the field; resources and scheduling are still accepted.
#[tokio::test]
async fn a_restore_run_asking_for_privilege_is_refused_by_the_api() {
    let sim = Sim::start().await;
    for (i, (template, field)) in [
        (serde_json::json!({"image": "attacker/agent:1"}), "image"),
        (serde_json::json!({"imagePullPolicy": "Always"}), "imagePullPolicy"),
        (serde_json::json!({"imagePullSecrets": [{"name": "x"}]}), "imagePullSecrets"),
        (serde_json::json!({"serviceAccountName": "admin"}), "serviceAccountName"),
        (serde_json::json!({"securityContext": {"privileged": true}}), "securityContext"),
        (serde_json::json!({"securityContext": {"runAsUser": 0}}), "securityContext"),
        (serde_json::json!({"podSecurityContext": {"runAsUser": 0}}), "podSecurityContext"),
        (serde_json::json!({"labels": {"egress": "open"}}), "labels"),
        (
            serde_json::json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/agent": "unconfined"}}),
            "annotations",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let message = refusal(&sim, restore_with_template(&format!("r{i}"), template)).await;
        assert!(
            message.contains(&format!("jobTemplate.{field} cannot be set on a RestoreRun")),
            "{field}: {message}"
        );
    }
    // Resources and scheduling are what a RestoreRun may set.
    let accepted = sim
        .create_json::<RestoreRun>(restore_with_template(
            "allowed",
            serde_json::json!({
                "resources": {"limits": {"memory": "2Gi"}},
                "nodeSelector": {"pool": "restore"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                "priorityClassName": "low",
                // Not a field of the template at all: pruned, never reaches the Pod.
                "hostNetwork": true
            }),
        ))
        .await
        .expect("resources and scheduling are accepted");
    let template = &accepted["spec"]["jobTemplate"];
    assert_eq!(template["nodeSelector"]["pool"], "restore");
    assert!(template.get("hostNetwork").is_none(), "{template}");
    let run: RestoreRun = sim.get("shop", "allowed").await;
    let template = run.spec.job_template.expect("template");
    assert_eq!(template.priority_class_name.as_deref(), Some("low"));
}
