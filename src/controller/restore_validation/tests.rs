//! Reconcile tests: the real `reconcile` against the API stand-in, in process.

use crate::api::{RestoreValidation, RestoreValidationPhase};
use crate::controller::common::reconcile::ControllerKind;
use crate::controller::common::testing::Sim;

#[tokio::test]
async fn a_validation_of_a_missing_backup_waits_with_a_reason() {
    let sim = Sim::start().await;
    let rv: RestoreValidation = sim
        .create(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreValidation
metadata: {name: prove-it, namespace: shop}
spec: {backupRunRef: {name: before-migration}}
"#,
        )
        .await;
    let rv: RestoreValidation = sim
        .reconcile(ControllerKind::RestoreValidation, rv, super::reconcile)
        .await;
    let status = rv.status.expect("the status is written");
    assert_ne!(status.phase, Some(RestoreValidationPhase::Running));
    assert_eq!(status.reason.as_deref(), Some("BackupRunNotFound"));
    assert_eq!(status.job_name, None);
}
