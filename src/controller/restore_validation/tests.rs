//! Reconcile tests: the real `reconcile` against the API stand-in, in process.

use crate::api::{RestoreValidation, RestoreValidationPhase};
use crate::controller::common::reconcile::ControllerKind;
use crate::controller::common::testing::{Given, Sim};

const VALIDATION: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreValidation
metadata: {name: prove-it, namespace: shop}
spec: {backupRunRef: {name: before-migration}}
"#;

#[tokio::test]
async fn a_validation_of_a_missing_backup_waits_with_a_reason() {
    let sim = Sim::start().await;
    let rv: RestoreValidation = sim
        .reconcile(
            ControllerKind::RestoreValidation,
            Given::Yaml(VALIDATION),
            super::reconcile,
        )
        .await;
    let status = rv.status.expect("the status is written");
    assert_eq!(status.phase, Some(RestoreValidationPhase::Pending));
    assert_eq!(status.reason.as_deref(), Some("BackupRunNotFound"));
    assert!(
        status.job_name.is_none() && status.queue_position.is_none(),
        "blocked, not queued: {status:?}"
    );
    assert!(status.result.is_none(), "no verdict without a restore");
}
