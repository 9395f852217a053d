//! Reconcile tests: the real `reconcile` against the API stand-in, in process.

use crate::api::BackupStorage;
use crate::api::common::find_condition;
use crate::controller::common::reconcile::ControllerKind;
use crate::controller::common::testing::{Given, Sim};

const STORAGE: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: local, namespace: shop}
spec: {filesystem: {claimName: backups}}
"#;

#[tokio::test]
async fn a_filesystem_storage_without_its_claim_is_not_ready() {
    let sim = Sim::start().await;
    let storage: BackupStorage = sim
        .reconcile(
            ControllerKind::BackupStorage,
            Given::Yaml(STORAGE),
            super::reconcile,
        )
        .await;
    let status = storage.status.expect("the status is written");
    let ready = find_condition(&status.conditions, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ClaimNotFound")
    );
    assert!(ready.message.contains("backups"), "{}", ready.message);
    assert!(!status.history.is_empty(), "the probe is recorded");
    let metrics = sim.ctx.metrics.encode();
    assert!(
        metrics.contains(
            r#"dataguardian_reconcile_duration_seconds_count{controller="backupstorage",result="ok"} 1"#
        ),
        "{metrics}"
    );
}

/// Issue 11, finding 4: a tenant's S3 storage without `credentialsSecretRef` never gets the
/// operator's own cloud identity: it is refused, before any request is sent, with a clear
/// reason — unless the platform team allowed ambient credentials in its namespace.
#[tokio::test]
async fn a_storage_without_credentials_is_refused_unless_its_namespace_may_use_ambient_ones() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // An endpoint that counts the connections it receives.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let accept = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    let yaml = format!(
        "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {{name: ambient, namespace: shop}}\nspec: {{s3: {{bucket: other-teams-bucket, region: us-east-1, endpoint: \"{endpoint}\", forcePathStyle: true}}, probe: {{timeoutSeconds: 5}}}}\n"
    );

    let sim = Sim::start().await;
    let storage: BackupStorage = sim
        .reconcile(
            ControllerKind::BackupStorage,
            Given::Yaml(&yaml),
            super::reconcile,
        )
        .await;
    let status = storage.status.expect("the status is written");
    let ready = find_condition(&status.conditions, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AmbientCredentialsNotAllowed"),
        "{ready:?}"
    );
    assert!(
        ready.message.contains("credentialsSecretRef"),
        "{}",
        ready.message
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was sent");

    // Allowed for namespace shop: the operator's identity is used (the probe goes out).
    let sim = Sim::start_with(crate::controller::common::context::Settings {
        ambient_credentials_namespaces: vec!["shop".into()],
        ..Default::default()
    })
    .await;
    let storage: BackupStorage = sim
        .reconcile(
            ControllerKind::BackupStorage,
            Given::Yaml(&yaml),
            super::reconcile,
        )
        .await;
    let ready = find_condition(&storage.status.unwrap().conditions, "Ready")
        .cloned()
        .expect("Ready");
    assert_ne!(ready.reason, "AmbientCredentialsNotAllowed", "{ready:?}");
    accept.abort();
}

mod probes {
    use super::super::*;
    use crate::api::backup_storage::{BackupStorageSpec, FilesystemStorage};

    fn storage() -> BackupStorage {
        let mut s = BackupStorage::new(
            "main",
            BackupStorageSpec {
                s3: None,
                filesystem: Some(FilesystemStorage {
                    claim_name: "backups".into(),
                    path: "/".into(),
                }),
                probe: None,
            },
        );
        s.metadata.generation = Some(1);
        s
    }

    fn probe(ok: bool) -> Probe {
        Probe {
            success: ok,
            latency: Duration::from_millis(12),
            object_lock_enabled: None,
            reason: if ok { "ProbeSucceeded" } else { "WriteFailed" }.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn history_is_bounded_and_ready_follows_the_last_probe() {
        let mut status = BackupStorageStatus::default();
        let t0: chrono::DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        for i in 0..25 {
            record_probe(
                &mut status,
                &probe(i % 2 == 0),
                20,
                Some(1),
                t0 + chrono::Duration::minutes(i),
            );
        }
        assert_eq!(status.history.len(), 20);
        assert_eq!(status.history.last(), status.last_probe.as_ref());
        assert_eq!(
            find_condition(&status.conditions, "Ready").unwrap().status,
            "True"
        );
        record_probe(
            &mut status,
            &probe(false),
            20,
            Some(1),
            t0 + chrono::Duration::minutes(30),
        );
        let ready = find_condition(&status.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "WriteFailed")
        );
        assert_eq!(status.history.len(), 20);
    }

    #[test]
    fn probes_are_due_on_interval_or_spec_change() {
        let mut s = storage();
        let t0: chrono::DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(probe_due(&s, t0), None, "never probed: due now");
        let mut status = BackupStorageStatus::default();
        record_probe(&mut status, &probe(true), 20, Some(1), t0);
        s.status = Some(status);
        assert_eq!(
            probe_due(&s, t0 + chrono::Duration::seconds(100)),
            Some(Duration::from_secs(200))
        );
        assert_eq!(probe_due(&s, t0 + chrono::Duration::seconds(300)), None);
        s.metadata.generation = Some(2);
        assert_eq!(
            probe_due(&s, t0 + chrono::Duration::seconds(100)),
            None,
            "spec changed: due now"
        );
    }
}
