//! Reconcile tests: the real `reconcile` against the API stand-in, in process.

use crate::api::BackupPolicy;
use crate::api::common::find_condition;
use crate::controller::common::reconcile::ControllerKind;
use crate::controller::common::testing::{Given, Sim};

fn policy(schedule: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nightly, namespace: shop}}
spec:
  source: {{postgres: {{host: db, port: 5432, database: shop, user: u}}}}
  storageRef: {{name: main}}
  schedule: "{schedule}"
  {extra}
"#
    )
}

async fn reconcile(sim: &Sim, policy: BackupPolicy) -> BackupPolicy {
    sim.reconcile(
        ControllerKind::BackupPolicy,
        Given::Stored(policy),
        super::reconcile,
    )
    .await
}

#[tokio::test]
async fn conditions_say_what_is_wrong_and_the_status_is_written_once() {
    let sim = Sim::start().await;
    let created: BackupPolicy = sim
        .create(&policy("0 2 * * *", "secondaryStorageRefs: [{name: dr}]"))
        .await;
    let policy = reconcile(&sim, created).await;
    let status = policy.status.clone().expect("the status is written");
    let cond = |t: &str| {
        let c = find_condition(&status.conditions, t).unwrap_or_else(|| panic!("{t}"));
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(cond("ScheduleValid"), ("True".into(), "Valid".into()));
    assert_eq!(
        cond("StorageReady"),
        ("False".into(), "StorageNotFound".into())
    );
    assert_eq!(cond("Ready"), ("False".into(), "StorageNotReady".into()));
    // Copies are supported: no Unsupported condition; the secondary's lag is shown.
    assert!(find_condition(&status.conditions, "Unsupported").is_none());
    assert_eq!(status.copies.len(), 1, "{status:?}");
    assert_eq!(status.copies[0].storage, "dr");
    assert_eq!(
        (status.copies[0].pending_runs, status.copies[0].lag_seconds),
        (0, 0)
    );
    assert!(status.next_schedule_time.is_some(), "{status:?}");
    assert!(status.active_runs.is_empty());

    // Nothing changed: a second pass writes nothing (the resourceVersion stays).
    let rv = policy.metadata.resource_version.clone();
    let again = reconcile(&sim, policy).await;
    assert_eq!(again.metadata.resource_version, rv);
}

#[tokio::test]
async fn an_invalid_schedule_is_reported_with_its_reason() {
    let sim = Sim::start().await;
    let created: BackupPolicy = sim.create(&policy("61 2 * * *", "")).await;
    let policy = reconcile(&sim, created).await;
    let status = policy.status.expect("the status is written");
    let valid = find_condition(&status.conditions, "ScheduleValid").expect("ScheduleValid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidSchedule")
    );
    let ready = find_condition(&status.conditions, "Ready").expect("Ready");
    assert_eq!(ready.reason, "ScheduleInvalid");
    assert!(status.next_schedule_time.is_none());
    assert!(
        sim.event_reasons("shop", "nightly")
            .await
            .contains(&"InvalidSchedule".to_owned())
    );
}

/// Finding 5: a policy's `jobTemplate` could override the restricted security context
/// (privileged, root, added capabilities). The API refuses each with a clear message; an
/// override the restricted profile allows (another non-root user, NET_BIND_SERVICE) passes.
#[tokio::test]
async fn a_policy_asking_for_privilege_is_refused_by_the_api() {
    let sim = Sim::start().await;
    let policy = |name: &str, template: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "source": {"postgres": {"host": "db", "database": "shop", "user": "u"}},
                "storageRef": {"name": "main"},
                "schedule": "0 2 * * *",
                "jobTemplate": template
            }
        })
    };
    for (i, (template, expected)) in [
        (serde_json::json!({"securityContext": {"privileged": true}}), "securityContext.privileged is not allowed"),
        (serde_json::json!({"securityContext": {"allowPrivilegeEscalation": true}}), "allowPrivilegeEscalation: true is not allowed"),
        (serde_json::json!({"securityContext": {"runAsUser": 0}}), "runAsUser: 0 is not allowed"),
        (serde_json::json!({"podSecurityContext": {"runAsUser": 0}}), "runAsUser: 0 is not allowed"),
        (serde_json::json!({"podSecurityContext": {"runAsNonRoot": false}}), "runAsNonRoot: false is not allowed"),
        (serde_json::json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}), "capabilities.add may only contain NET_BIND_SERVICE"),
        (serde_json::json!({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}), "capabilities.drop must contain ALL"),
        (serde_json::json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}), "seccompProfile.type must be RuntimeDefault or Localhost"),
        (serde_json::json!({"podSecurityContext": {"appArmorProfile": {"type": "Unconfined"}}}), "appArmorProfile.type Unconfined is not allowed"),
        (serde_json::json!({"securityContext": {"procMount": "Unmasked"}}), "procMount must be Default"),
        (serde_json::json!({"securityContext": {"windowsOptions": {"hostProcess": true}}}), "hostProcess is not allowed"),
        (serde_json::json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}), "seLinuxOptions may not set user or role"),
        (serde_json::json!({"podSecurityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}), "sysctls are not allowed"),
        (serde_json::json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/agent": "unconfined"}}), "annotations may not set AppArmor or seccomp profiles"),
    ]
    .into_iter()
    .enumerate()
    {
        match sim
            .create_json::<BackupPolicy>(policy(&format!("p{i}"), template.clone()))
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{template}: {status:?}");
                assert!(status.message.contains(expected), "{template}: {}", status.message);
            }
            other => panic!("{template}: expected a 422 refusal, got {other:?}"),
        }
    }
    sim.create_json::<BackupPolicy>(policy(
        "fine",
        serde_json::json!({
            "podSecurityContext": {"runAsUser": 1000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
            "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}, "seLinuxOptions": {"level": "s0:c1"}},
            "annotations": {"owner": "shop-team"}
        }),
    ))
    .await
    .expect("what the restricted profile allows is accepted");
}

/// Encryption needs at least one way to wrap the data key: age recipients, a KMS key, or both;
/// decryption (a policy's validations) at least one way to unwrap it.
#[tokio::test]
async fn encryption_needs_recipients_or_a_kms_key_and_decryption_an_identity_or_kms() {
    let sim = Sim::start().await;
    let policy = |name: &str, encryption: serde_json::Value, validation: serde_json::Value| {
        let mut spec = serde_json::json!({
            "source": {"postgres": {"host": "db", "database": "shop", "user": "u"}},
            "storageRef": {"name": "main"},
            "schedule": "0 2 * * *",
            "encryption": encryption
        });
        if !validation.is_null() {
            spec["validation"] = validation;
        }
        serde_json::json!({
            "apiVersion": "dataguardian.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec
        })
    };
    let kms = serde_json::json!({"keyId": "alias/backups", "region": "eu-west-1",
                                 "credentialsSecretRef": {"name": "kms-creds"}});
    let age = serde_json::json!({"name": "age", "key": "recipients"});
    for (i, (encryption, validation, expected)) in [
        (
            serde_json::json!({}),
            serde_json::Value::Null,
            "encryption needs recipientsSecretRef, kms, or both",
        ),
        (
            serde_json::json!({"kms": kms}),
            serde_json::json!({"everyNthBackup": 1, "decryption": {}}),
            "decryption needs identitySecretRef, kms, or both",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        match sim
            .create_json::<BackupPolicy>(policy(&format!("bad{i}"), encryption.clone(), validation))
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{encryption}: {status:?}");
                assert!(
                    status.message.contains(expected),
                    "{encryption}: {}",
                    status.message
                );
            }
            other => panic!("{encryption}: expected a 422 refusal, got {other:?}"),
        }
    }
    for (name, encryption) in [
        ("kms-only", serde_json::json!({"kms": kms})),
        ("age-only", serde_json::json!({"recipientsSecretRef": age})),
        (
            "both",
            serde_json::json!({"recipientsSecretRef": age, "kms": kms}),
        ),
    ] {
        sim.create_json::<BackupPolicy>(policy(
            name,
            encryption,
            serde_json::json!({"everyNthBackup": 1, "decryption": {"kms": {}}}),
        ))
        .await
        .unwrap_or_else(|e| panic!("{name} is accepted: {e}"));
    }
}

/// Finding 8: retention must be able to tell the schedule's runs from runs anyone with
/// `create backupruns` made. The policy marks the runs its schedule creates in status (which
/// users cannot write); the run controller's own status writes keep the mark.
#[tokio::test]
async fn runs_the_schedule_creates_are_marked_scheduled_in_status() {
    use kube::api::Api;

    use crate::api::BackupRun;
    use crate::controller::backup_policy::retention::{RetentionRun, RunOrigin};
    use crate::controller::common::run_cache::FinishedRun;

    let sim = Sim::start().await;
    let created: BackupPolicy = sim.create(&policy("* * * * *", "")).await;
    // As if created ten minutes ago: minutes were missed, so the schedule creates one
    // catch-up run now.
    let mut stored = created;
    stored.metadata.creation_timestamp = Some(crate::api::common::time_from_chrono(
        chrono::Utc::now() - chrono::Duration::minutes(10),
    ));
    reconcile(&sim, stored).await;

    let runs: Api<BackupRun> = Api::namespaced(sim.ctx.client.clone(), "shop");
    let list = runs.list(&Default::default()).await.expect("runs").items;
    assert_eq!(list.len(), 1, "one catch-up run");
    let run = list.into_iter().next().unwrap();
    assert_eq!(run.status.as_ref().and_then(|s| s.scheduled), Some(true));

    // The run controller applies its whole status under its own field manager, possibly from
    // a copy read before the mark: the mark stays (it is the policy controller's field).
    let whole = crate::api::BackupRunStatus {
        phase: Some(crate::api::BackupRunPhase::Pending),
        reason: Some("StorageNotFound".into()),
        ..Default::default()
    };
    crate::controller::common::status::apply_status::<BackupRun>(
        &sim.ctx.client,
        "shop",
        &run.metadata.name.clone().unwrap(),
        "dataguardian-backuprun",
        &whole,
    )
    .await
    .expect("status apply");
    let after: BackupRun = sim.get("shop", run.metadata.name.as_deref().unwrap()).await;
    let status = after.status.expect("status");
    assert_eq!(
        status.reason.as_deref(),
        Some("StorageNotFound"),
        "{status:?}"
    );
    assert_eq!(status.scheduled, Some(true));

    // A client's run saying `trigger: Scheduled` is still a manual run for retention.
    let forged: BackupRun = sim
        .create(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {name: forged, namespace: shop}
spec: {policyRef: {name: nightly}, trigger: Scheduled}
"#,
        )
        .await;
    let mut finished = forged.clone();
    finished.status = Some(
        serde_json::from_value(serde_json::json!({
            "phase": "Succeeded", "completionTime": "2026-11-22T10:00:00Z"
        }))
        .unwrap(),
    );
    let record = FinishedRun::from_run(&finished).expect("finished");
    assert_eq!(
        RetentionRun::from_finished(&record).map(|r| r.origin),
        Some(RunOrigin::Manual)
    );
    let mut genuine = finished;
    genuine.status.as_mut().unwrap().scheduled = Some(true);
    let record = FinishedRun::from_run(&genuine).expect("finished");
    assert_eq!(
        RetentionRun::from_finished(&record).map(|r| r.origin),
        Some(RunOrigin::Schedule)
    );
}
