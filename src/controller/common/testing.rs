//! Test fixtures several controllers' tests share.

use chrono::{DateTime, Utc};

use crate::api::BackupRun;

/// An RFC 3339 time.
pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// A finished BackupRun of the policy `nightly` in `shop`, completed at `done`.
pub fn backup(name: &str, done: &str, phase: &str) -> BackupRun {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {{name: {name}, namespace: shop, creationTimestamp: "{done}"}}
spec: {{policyRef: {{name: nightly}}, trigger: Scheduled}}
status: {{phase: {phase}, completionTime: "{done}", artifact: {{storage: main, key: k, engine: postgres}}}}
"#
    ))
    .unwrap()
}
