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
    assert_eq!(
        cond("Unsupported"),
        ("True".into(), "NotImplemented".into())
    );
    assert!(status.next_schedule_time.is_some(), "{status:?}");
    assert!(status.active_runs.is_empty());
    assert!(
        sim.event_reasons("shop", "nightly")
            .await
            .contains(&"NotImplemented".to_owned())
    );

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
