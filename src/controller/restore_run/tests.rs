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
