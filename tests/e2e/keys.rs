//! Declarative key rotation end to end: change a policy's age recipients, name the old identity,
//! and the operator's rotation Job re-wraps every retained backup (manifests rewritten,
//! artifacts untouched); restores by `backupRunRef` then open with the new identity only.

use std::collections::BTreeMap;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use dataguardian::api::{BackupPolicy, BackupRun};
use kube::api::Api;

use crate::backup::Scenario;
use crate::harness::{jobs, wait_for, wait_for_events};

const TIMEOUT: Duration = Duration::from_secs(240);

/// An age key pair: (recipient, identity).
pub(crate) fn keypair() -> (String, String) {
    let id = age::x25519::Identity::generate();
    (
        id.to_public().to_string(),
        id.to_string().expose_secret().to_string(),
    )
}

/// The agent's fingerprint of a recipient.
pub(crate) fn fingerprint(recipient: &str) -> String {
    dataguardian::agent::crypto::fingerprint(recipient)
}

pub(crate) fn secret(ns: &str, name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData:\n  {key}: |\n    {value}\n"
    )
}

/// Every version of every object under `prefix`: key → version ids (oldest last).
async fn versions(s: &Scenario, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let out = s
        .services
        .s3
        .s3_client()
        .list_object_versions()
        .bucket(&s.services.bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in out.versions() {
        map.entry(v.key().unwrap_or_default().to_string())
            .or_default()
            .push(v.version_id().unwrap_or_default().to_string());
    }
    map
}

pub(crate) fn keys_current(p: &BackupPolicy) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "KeysCurrent")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn artifact(run: &BackupRun) -> dataguardian::api::backup_run::Artifact {
    *run.status.as_ref().unwrap().artifact.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_the_recipients_rewraps_retained_backups_and_restores_need_the_new_identity() {
    let _serial = crate::serial().await;
    let s = crate::backup::scenario(
        "rotation",
        "0 0 1 1 *",
        "  encryption: {recipientsSecretRef: {name: age-recipients, key: recipients}}\n",
    )
    .await;
    s.services
        .s3
        .s3_client()
        .put_bucket_versioning()
        .bucket(&s.services.bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (recipient_a, identity_a) = keypair();
    let (recipient_b, identity_b) = keypair();
    s.cluster
        .apply(&secret(&s.ns, "age-recipients", "recipients", &recipient_a));
    s.cluster
        .apply(&secret(&s.ns, "age-a", "identity", &identity_a));
    s.cluster
        .apply(&secret(&s.ns, "age-b", "identity", &identity_b));

    // Two backups for recipient A; the policy says its keys are current.
    let b1 = s.backup("b1").await;
    let b2 = s.backup("b2").await;
    for run in [&b1, &b2] {
        assert_eq!(
            artifact(run).encryption.unwrap().recipients,
            [fingerprint(&recipient_a)]
        );
    }
    let policy = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "KeysCurrent for A",
        |p| {
            keys_current(p).is_some_and(|(st, _)| st == "True")
                && p.status
                    .as_ref()
                    .and_then(|s| s.keys.as_ref())
                    .is_some_and(|k| k.total == 2)
        },
    )
    .await;
    assert_eq!(
        policy.status.unwrap().keys.unwrap().wrapped_for,
        [fingerprint(&recipient_a)]
    );
    let before = versions(&s, "e2e/").await;
    let data_keys: Vec<&String> = before
        .keys()
        .filter(|k| !k.ends_with("manifest.json"))
        .collect();
    assert!(data_keys.len() >= 2, "{before:?}");

    // Recipient B replaces A; the old identity is named for the rotation.
    s.cluster
        .apply(&secret(&s.ns, "age-recipients", "recipients", &recipient_b));
    s.cluster.apply(&crate::harness::Services::postgres_policy(
        &s.services,
        &s.ns,
        "shop",
        "shop",
        "main",
        "  schedule: \"0 0 1 1 *\"\n  compression: {algorithm: zstd, level: 3}\n  encryption:\n    recipientsSecretRef: {name: age-recipients, key: recipients}\n    rotation: {previousIdentitySecretRef: {name: age-a, key: identity}}\n",
    ));
    let policy = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "KeysCurrent for B, 2 of 2",
        |p| {
            let keys = p.status.as_ref().and_then(|s| s.keys.as_ref());
            keys_current(p).is_some_and(|(st, _)| st == "True")
                && keys.is_some_and(|k| {
                    k.wrapped_for == [fingerprint(&recipient_b)] && k.rewrapped == 2 && k.total == 2
                })
        },
    )
    .await;
    let keys = policy.status.as_ref().unwrap().keys.clone().unwrap();
    let job = keys
        .rotation_job
        .clone()
        .expect("the rotation Job is named");
    assert!(job.starts_with("shop-rotate-"), "{job}");
    // The Job ran restricted, with the old identity and the new recipients only.
    let all_jobs = jobs(&s.cluster, &s.ns).await;
    if let Some(j) = all_jobs.get(&job) {
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let secrets: Vec<String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert!(secrets.contains(&"age-a".to_string()), "{secrets:?}");
        assert!(!secrets.contains(&"age-b".to_string()), "{secrets:?}");
    }
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        ["RotatingKeys:", "KeysRotated:"]
            .iter()
            .all(|r| events.iter().any(|e| e.starts_with(r)))
    })
    .await;

    // The runs record the re-wrapped manifests: new digest, recipient B.
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    for (old, name) in [(&b1, "b1"), (&b2, "b2")] {
        let now = runs.get(name).await.unwrap();
        let (a, b) = (artifact(old), artifact(&now));
        assert_ne!(a.manifest_sha256, b.manifest_sha256, "{name}");
        assert_eq!(
            b.encryption.unwrap().recipients,
            [fingerprint(&recipient_b)]
        );
        assert_eq!((a.sha256, a.size_bytes), (b.sha256, b.size_bytes), "{name}");
    }
    // Artifacts untouched (same single version); each manifest got a new version.
    let after = versions(&s, "e2e/").await;
    for (key, v) in &before {
        if key.ends_with("manifest.json") {
            assert_eq!(after[key].len(), v.len() + 1, "{key}: {after:?}");
        } else {
            assert_eq!(&after[key], v, "{key} was rewritten");
        }
    }

    // A restore by backupRunRef opens with B …
    s.cluster.apply(&s.restore_yaml(
        "with-b",
        "b1",
        "shop_b",
        "  decryption: {identitySecretRef: {name: age-b, key: identity}}\n",
    ));
    let r = s.restore_finished("with-b").await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        format!("{:?}", st.phase.unwrap()),
        "Succeeded",
        "{st:#?}\n{}",
        s.operator.log()
    );
    assert_eq!(s.count("shop_b", "orders"), "500");
    // … and no longer with A.
    s.cluster.apply(&s.restore_yaml(
        "with-a",
        "b2",
        "shop_a",
        "  decryption: {identitySecretRef: {name: age-a, key: identity}}\n",
    ));
    let r = s.restore_finished("with-a").await;
    let st = r.status.clone().unwrap();
    assert_eq!(format!("{:?}", st.phase.unwrap()), "Failed", "{st:#?}");
    // It failed on the key, not on the pin: the manifest is the one the run records.
    let message = st.message.clone().unwrap_or_default();
    assert!(
        message.contains("cannot unwrap the data key") && !message.contains("replaced or altered"),
        "{st:#?}"
    );
    // A wrong identity is not retried: the Job's pod failure policy fails it on the first pod.
    assert_single_pod_failed_job(&s, st.job_name.as_deref().expect("job name")).await;
}

/// The Job `name` failed by its pod failure policy (exit code of a non-retryable category) after
/// exactly one pod.
async fn assert_single_pod_failed_job(s: &Scenario, name: &str) {
    let job = wait_for::<k8s_openapi::api::batch::v1::Job, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        name,
        TIMEOUT,
        "the restore Job failed",
        |j| {
            j.status
                .as_ref()
                .and_then(|st| st.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
        },
    )
    .await;
    let st = job.status.clone().unwrap();
    let failed = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(
        failed.reason.as_deref(),
        Some("PodFailurePolicy"),
        "{failed:?}"
    );
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exit code 14")),
        "{failed:?}"
    );
    assert_eq!(st.failed, Some(1), "{st:?}");
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(s.cluster.client.clone(), &s.ns);
    let listed = pods
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={name}")),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "one pod, no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_kms_key_rewraps_retained_backups_and_disabling_the_old_key_erases_nothing_current() {
    let _serial = crate::serial().await;
    // Two KMS services: the old key only on the first, the new key only on the second, each
    // with its own credentials Secret; the rotation must unwrap with `previousKms`'s endpoint
    // and credentials, wrap with the new key's. The first is reached through the proxy that
    // refuses a disabled key the way AWS KMS does (moto alone still decrypts with it).
    let kms_moto = testkit::Moto::start().expect("moto for KMS");
    let key_1 = kms_moto.kms_create_key("key 1").unwrap();
    kms_moto
        .kms(
            "CreateAlias",
            serde_json::json!({"AliasName": "alias/k1", "TargetKeyId": key_1}),
        )
        .unwrap();
    let kms_moto_2 = testkit::Moto::start().expect("a second moto for KMS");
    let key_2 = kms_moto_2.kms_create_key("key 2").unwrap();
    kms_moto_2
        .kms(
            "CreateAlias",
            serde_json::json!({"AliasName": "alias/k2", "TargetKeyId": key_2}),
        )
        .unwrap();
    let proxy = testkit::KmsKeyStateProxy::start(kms_moto.addr()).unwrap();
    let endpoint = proxy.endpoint();
    let endpoint_2 = kms_moto_2.endpoint();
    let region = kms_moto.region();
    let kms_key = |alias: &str, endpoint: &str, creds: &str| {
        format!(
            "    kms: {{keyId: {alias}, region: {region}, endpoint: \"{endpoint}\", credentialsSecretRef: {{name: {creds}}}}}\n"
        )
    };
    let access = format!("{{endpoint: \"{endpoint}\", credentialsSecretRef: {{name: s3-creds}}}}");
    let access_2 =
        format!("{{endpoint: \"{endpoint_2}\", credentialsSecretRef: {{name: kms-two}}}}");
    let s = crate::backup::scenario(
        "kmsrotation",
        "0 0 1 1 *",
        &format!(
            "  encryption:\n{}",
            kms_key("alias/k1", &endpoint, "s3-creds")
        ),
    )
    .await;
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: kms-two, namespace: {}}}\nstringData: {{AWS_ACCESS_KEY_ID: AKIAKMSTWO, AWS_SECRET_ACCESS_KEY: kms-two-secret}}\n",
        s.ns
    ));

    // Two backups wrapped by key 1; each run records the key id as the policy wrote it.
    let b1 = s.backup("b1").await;
    let b2 = s.backup("b2").await;
    for run in [&b1, &b2] {
        let enc = artifact(run).encryption.unwrap();
        assert_eq!(enc.kms_key_id.as_deref(), Some("alias/k1"), "{enc:?}");
    }
    wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "KeysCurrent for key 1",
        |p| {
            keys_current(p).is_some_and(|(st, _)| st == "True")
                && p.status
                    .as_ref()
                    .and_then(|s| s.keys.as_ref())
                    .is_some_and(|k| k.total == 2)
        },
    )
    .await;

    // The policy moves to key 2 (second service) and names how to reach the old one (first).
    s.cluster.apply(&crate::harness::Services::postgres_policy(
        &s.services,
        &s.ns,
        "shop",
        "shop",
        "main",
        &format!(
            "  schedule: \"0 0 1 1 *\"\n  compression: {{algorithm: zstd, level: 3}}\n  encryption:\n{}    rotation: {{previousKms: {access}}}\n",
            kms_key("alias/k2", &endpoint_2, "kms-two")
        ),
    ));
    let policy = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "KeysCurrent for key 2, 2 of 2",
        |p| {
            let keys = p.status.as_ref().and_then(|s| s.keys.as_ref());
            keys_current(p).is_some_and(|(st, _)| st == "True")
                && keys.is_some_and(|k| {
                    k.kms_key_id.as_deref() == Some("alias/k2") && k.rewrapped == 2 && k.total == 2
                })
        },
    )
    .await;
    let job = policy.status.unwrap().keys.unwrap().rotation_job.unwrap();
    assert!(job.starts_with("shop-rotate-"), "{job}");
    // Each side's credentials from its own Secret.
    if let Some(j) = jobs(&s.cluster, &s.ns).await.get(&job) {
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let secret_of = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| r.name.clone())
        };
        assert_eq!(
            secret_of("DG_KMS_AWS_ACCESS_KEY_ID").as_deref(),
            Some("kms-two")
        );
        assert_eq!(
            secret_of("DG_PREVIOUS_KMS_AWS_ACCESS_KEY_ID").as_deref(),
            Some("s3-creds")
        );
    }
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    for (old, name) in [(&b1, "b1"), (&b2, "b2")] {
        let now = runs.get(name).await.unwrap();
        let (a, b) = (artifact(old), artifact(&now));
        assert_ne!(a.manifest_sha256, b.manifest_sha256, "{name}");
        assert_eq!(
            b.encryption.unwrap().kms_key_id.as_deref(),
            Some("alias/k2"),
            "{name}"
        );
        assert_eq!((a.sha256, a.size_bytes), (b.sha256, b.size_bytes), "{name}");
    }

    // Crypto-erasure of key 1: the retained backups still restore, through key 2 on the
    // second service.
    kms_moto
        .kms("DisableKey", serde_json::json!({"KeyId": key_1}))
        .unwrap();
    s.cluster.apply(&s.restore_yaml(
        "after-erasure",
        "b1",
        "shop_k2",
        &format!("  decryption: {{kms: {access_2}}}\n"),
    ));
    let r = s.restore_finished("after-erasure").await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        format!("{:?}", st.phase.unwrap()),
        "Succeeded",
        "{st:#?}\n{}",
        s.operator.log()
    );
    assert_eq!(s.count("shop_k2", "orders"), "500");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotation_finished_while_the_audit_storage_is_down_survives_a_killed_operator() {
    // The rotation Job re-wraps while the audit storage refuses every connection; its record is
    // spooled before the runs record the re-wrap. The operator is then killed (SIGKILL): the
    // next process writes the record once the storage is back, exactly once (docs/audit.md).
    use crate::backup::{
        AUDIT_STORAGE_ENV, AUDIT_STORAGE_FLAG, audit_records, audit_storage_behind_proxy,
        spool_entries,
    };
    let _serial = crate::serial().await;
    let mut s = crate::backup::scenario_with(
        "rotaudit",
        "0 0 1 1 *",
        "  encryption: {recipientsSecretRef: {name: age-recipients, key: recipients}}\n",
        &[AUDIT_STORAGE_ENV],
    )
    .await;
    let proxy = audit_storage_behind_proxy(&s);
    let (recipient_a, identity_a) = keypair();
    let (recipient_b, _) = keypair();
    s.cluster
        .apply(&secret(&s.ns, "age-recipients", "recipients", &recipient_a));
    s.cluster
        .apply(&secret(&s.ns, "age-a", "identity", &identity_a));
    s.backup("b1").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !audit_records(&s, AUDIT_STORAGE_FLAG)
        .iter()
        .any(|r| r["action"] == "RunSucceeded" && r["name"] == "b1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "b1's records never reached the trail\n{}",
            s.operator.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The audit storage goes down; recipient B replaces A.
    proxy.set_plan(testkit::FaultPlan::RefuseAll);
    s.cluster
        .apply(&secret(&s.ns, "age-recipients", "recipients", &recipient_b));
    s.cluster.apply(&crate::harness::Services::postgres_policy(
        &s.services,
        &s.ns,
        "shop",
        "shop",
        "main",
        "  schedule: \"0 0 1 1 *\"\n  compression: {algorithm: zstd, level: 3}\n  encryption:\n    recipientsSecretRef: {name: age-recipients, key: recipients}\n    rotation: {previousIdentitySecretRef: {name: age-a, key: identity}}\n",
    ));
    wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "KeysCurrent for B",
        |p| {
            let keys = p.status.as_ref().and_then(|s| s.keys.as_ref());
            keys_current(p).is_some_and(|(st, _)| st == "True")
                && keys.is_some_and(|k| k.wrapped_for == [fingerprint(&recipient_b)])
        },
    )
    .await;
    let rotations = |records: &[serde_json::Value]| {
        records
            .iter()
            .filter(|r| {
                r["action"] == "KeyRotation" && r["name"] == "shop" && r["outcome"] == "succeeded"
            })
            .count()
    };
    assert_eq!(rotations(&audit_records(&s, AUDIT_STORAGE_FLAG)), 0);
    assert!(
        !spool_entries(&s).is_empty(),
        "the rotation's record waits in the spool\n{}",
        s.operator.log()
    );

    s.operator.kill();
    proxy.set_plan(testkit::FaultPlan::PassThrough);
    s.operator.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let records = audit_records(&s, AUDIT_STORAGE_FLAG);
        if rotations(&records) > 0 && spool_entries(&s).is_empty() {
            assert_eq!(rotations(&records), 1, "exactly once: {records:#?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spooled rotation never reached the trail (spool {:?}): {records:#?}\n{}",
            spool_entries(&s),
            s.operator.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (code, out, err) = s
        .cluster
        .plugin(&["audit", "verify", "-n", &s.ns, AUDIT_STORAGE_FLAG]);
    assert_eq!(code, 0, "audit verify\nstdout:\n{out}\nstderr:\n{err}");
}
