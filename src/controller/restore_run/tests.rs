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

const STORAGE: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: main, namespace: shop}
spec: {s3: {bucket: shop-backups, region: us-east-1, prefix: shop/, credentialsSecretRef: {name: s3-creds}}}
"#;

const BACKUP: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {name: before-migration, namespace: shop}
spec: {policyRef: {name: nightly}, trigger: Manual}
"#;

const SECRETS: [&str; 3] = [
    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s3-creds","namespace":"shop"},"stringData":{"AWS_ACCESS_KEY_ID":"a","AWS_SECRET_ACCESS_KEY":"b"}}"#,
    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"staging-creds","namespace":"shop"},"stringData":{"password":"p"}}"#,
    r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"age-id","namespace":"shop"},"stringData":{"identity":"i"}}"#,
];

/// Issue 11, finding 3: the restore Job receives what the operator recorded when it confirmed
/// the backup (manifest digest, encryption and recipients, scope), so the agent can refuse a
/// manifest the bucket swapped.
#[tokio::test]
async fn the_restore_job_is_pinned_to_the_recorded_manifest_digest_encryption_and_scope() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    use kube::api::{Patch, PatchParams};

    use crate::api::{BackupRun, BackupStorage};

    let sim = Sim::start().await;
    let _: BackupStorage = sim.create(STORAGE).await;
    for s in SECRETS {
        let _: Secret = sim.create(s).await;
    }
    let _: BackupRun = sim.create(BACKUP).await;
    let digest = "5e".repeat(32);
    let runs: Api<BackupRun> = Api::namespaced(sim.ctx.client.clone(), "shop");
    runs.patch_status(
        "before-migration",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {
            "phase": "Succeeded",
            "artifact": {
                "storage": "main",
                "key": "shop/shop/nightly/r1/manifest.json",
                "manifestKey": "s3://shop-backups/shop/shop/nightly/r1/manifest.json",
                "manifestSha256": digest,
                "scope": "Database",
                "sizeBytes": 10, "sha256": "ab".repeat(32), "engine": "postgres",
                "encryption": {"method": "age", "recipients": ["sha256:aa", "sha256:bb"]}
            }
        }})),
    )
    .await
    .unwrap();
    let yaml = RESTORE.replace(
        "user: restore}}",
        "user: restore, passwordSecretRef: {name: staging-creds, key: password}}}\n  decryption: {identitySecretRef: {name: age-id, key: identity}}",
    );
    let mut run: RestoreRun = sim.create(&yaml).await;
    for _ in 0..4 {
        if run
            .status
            .as_ref()
            .and_then(|s| s.job_name.as_ref())
            .is_some()
        {
            break;
        }
        run = sim
            .reconcile(
                ControllerKind::RestoreRun,
                Given::Stored(run),
                super::reconcile,
            )
            .await;
    }
    let jobs: Api<Job> = Api::namespaced(sim.ctx.client.clone(), "shop");
    let job = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("a restore Job: {:?}", run.status));
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        args.contains(&format!(
            "--from s3://shop-backups/shop/shop/nightly/r1/manifest.json --manifest-sha256 {digest} --expect-encryption age --expect-recipient sha256:aa --expect-recipient sha256:bb --expect-scope Database"
        )),
        "{args}"
    );
}

/// A restore by storage and key has no BackupRun to pin against: the digest the user gives in
/// `spec.manifestSha256` reaches the agent, which refuses any other manifest. The API refuses
/// the field on a backupRunRef restore and anything that is not a SHA-256.
#[tokio::test]
async fn a_storage_and_key_restore_is_pinned_to_the_digest_its_spec_names() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;

    use crate::api::BackupStorage;

    let sim = Sim::start().await;
    let _: BackupStorage = sim.create(STORAGE).await;
    for s in SECRETS {
        let _: Secret = sim.create(s).await;
    }
    let digest = "7a".repeat(32);
    let by_key = |name: &str, extra: &str| {
        serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "RestoreRun",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": serde_json::from_str::<serde_json::Value>(&format!(
                r#"{{"storageRef": {{"name": "main"}}, "key": "shop/nightly/r1/manifest.json",
                    "target": {{"postgres": {{"host": "db-staging", "port": 5432, "database": "shop_copy", "user": "restore",
                                            "passwordSecretRef": {{"name": "staging-creds", "key": "password"}}}}}}{extra}}}"#
            ))
            .unwrap()
        })
    };
    for (name, bad) in [
        (
            "short",
            format!(r#", "manifestSha256": "{}""#, "7a".repeat(31)),
        ),
        (
            "upper",
            format!(r#", "manifestSha256": "{}""#, "7A".repeat(32)),
        ),
    ] {
        assert!(
            sim.create_json::<RestoreRun>(by_key(name, &bad))
                .await
                .is_err(),
            "{name}"
        );
    }
    let mut on_run: serde_json::Value = serde_yaml::from_str(RESTORE).unwrap();
    on_run["metadata"]["name"] = "on-run".into();
    on_run["spec"]["manifestSha256"] = digest.clone().into();
    assert!(sim.create_json::<RestoreRun>(on_run).await.is_err());

    let created = sim
        .create_json::<RestoreRun>(by_key(
            "by-key",
            &format!(r#", "manifestSha256": "{digest}""#),
        ))
        .await
        .expect("a pinned storage + key restore is accepted");
    let mut run: RestoreRun = serde_json::from_value(created).unwrap();
    for _ in 0..4 {
        if run
            .status
            .as_ref()
            .and_then(|s| s.job_name.as_ref())
            .is_some()
        {
            break;
        }
        run = sim
            .reconcile(
                ControllerKind::RestoreRun,
                Given::Stored(run),
                super::reconcile,
            )
            .await;
    }
    let jobs: Api<Job> = Api::namespaced(sim.ctx.client.clone(), "shop");
    let job = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("a restore Job: {:?}", run.status));
    let args = job.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        args.contains(&format!(
            "--from s3://shop-backups/shop/nightly/r1/manifest.json --manifest-sha256 {digest}"
        )),
        "{args}"
    );
}
