//! Custom resource types of the `dataguardian.io/v1alpha1` API, one file per kind.
//!
//! The field documentation here becomes the `kubectl explain` text of the CRDs, and the
//! validation rules (OpenAPI bounds and CEL `x-kubernetes-validations`) are what the API server
//! enforces; `README.md` and `examples/` show them in use, `docs/architecture.md` where they sit.
//! This module holds no client code and imports nothing else of the crate.

pub mod backup_policy;
pub mod backup_run;
pub mod backup_storage;
pub mod common;
pub mod restore_run;
pub mod restore_validation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;
use serde_json::Value;

pub use backup_policy::{BackupPolicy, BackupPolicySpec, BackupPolicyStatus};
pub use backup_run::{BackupRun, BackupRunPhase, BackupRunSpec, BackupRunStatus};
pub use backup_storage::{BackupStorage, BackupStorageSpec, BackupStorageStatus};
pub use restore_run::{RestoreRun, RestoreRunPhase, RestoreRunSpec, RestoreRunStatus};
pub use restore_validation::{
    RestoreValidation, RestoreValidationPhase, RestoreValidationSpec, RestoreValidationStatus,
};

/// The API group of every DataGuardian kind.
pub const GROUP: &str = "dataguardian.io";
/// The API version of every DataGuardian kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every DataGuardian object.
pub const API_VERSION: &str = "dataguardian.io/v1alpha1";

/// The CustomResourceDefinitions of all five kinds, sorted by plural name (the order of
/// `dataguardian crd` and of the files in `crds/`).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        BackupStorage::crd(),
        BackupPolicy::crd(),
        BackupRun::crd(),
        RestoreRun::crd(),
        RestoreValidation::crd(),
    ];
    crds.sort_by(|a, b| a.spec.names.plural.cmp(&b.spec.names.plural));
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                *schema = with_kubernetes_formats(schema);
            }
        }
    }
    crds
}

/// Formats the API server recognises (others are ignored with a warning on CRD install).
pub const KUBERNETES_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "password",
];

/// Rewrites the unsigned integer formats schemars emits (`uint16`, `uint32`, `uint64`), which
/// Kubernetes does not recognise, into `int32`/`int64` with the unsigned type's bounds, so the
/// API server still refuses values the Rust types could not hold.
fn with_kubernetes_formats(schema: &JSONSchemaProps) -> JSONSchemaProps {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                let rewrite = match map.get("format").and_then(Value::as_str) {
                    Some("uint8") => Some(("int32", Some(u32::from(u8::MAX)))),
                    Some("uint16") => Some(("int32", Some(u32::from(u16::MAX)))),
                    Some("uint32") => Some(("int64", Some(u32::MAX))),
                    Some("uint64") | Some("uint") => Some(("int64", None::<u32>)),
                    _ => None,
                };
                if let Some((format, max)) = rewrite {
                    map.insert("format".into(), Value::from(format));
                    if let Some(max) = max {
                        map.entry("maximum").or_insert(Value::from(f64::from(max)));
                    }
                    map.entry("minimum").or_insert(Value::from(0.0));
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(schema).expect("a JSONSchemaProps serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("rewriting formats keeps a valid JSONSchemaProps")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_come_sorted_by_plural() {
        let plurals: Vec<String> = crds().into_iter().map(|c| c.spec.names.plural).collect();
        assert_eq!(
            plurals,
            [
                "backuppolicies",
                "backupruns",
                "backupstorages",
                "restoreruns",
                "restorevalidations"
            ]
        );
    }

    #[test]
    fn unsigned_formats_become_bounded_kubernetes_formats() {
        let schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint32", "minimum": 0.0},
                "b": {"type": "integer", "format": "uint16", "minimum": 1.0, "maximum": 10.0},
                "c": {"type": "integer", "format": "uint64"},
                "d": {"type": "integer", "format": "int32"}
            }
        }))
        .unwrap();
        let out = serde_json::to_value(with_kubernetes_formats(&schema)).unwrap();
        let p = &out["properties"];
        assert_eq!(p["a"]["format"], "int64");
        assert_eq!(p["a"]["maximum"], 4294967295.0);
        assert_eq!(p["b"]["format"], "int32");
        assert_eq!(p["b"]["maximum"], 10.0);
        assert_eq!(p["b"]["minimum"], 1.0);
        assert_eq!(p["c"]["format"], "int64");
        assert_eq!(p["c"]["minimum"], 0.0);
        assert!(p["c"].get("maximum").is_none());
        assert_eq!(
            p["d"],
            serde_json::json!({"type": "integer", "format": "int32"})
        );
    }

    #[test]
    fn minimal_policy_gets_documented_defaults() {
        let policy: BackupPolicy = serde_yaml::from_str(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {name: p, namespace: shop}
spec:
  source: {postgres: {host: db, database: shop, user: backup}}
  storageRef: {name: main}
  schedule: "0 2 * * *"
"#,
        )
        .unwrap();
        let spec = &policy.spec;
        assert_eq!(spec.source.postgres.as_ref().unwrap().port, 5432);
        assert_eq!(spec.source.engine(), Some(common::Engine::Postgres));
        assert_eq!(spec.backoff_limit, 2);
        assert!(!spec.suspend);
        assert_eq!(
            spec.concurrency_policy,
            backup_policy::ConcurrencyPolicy::Forbid
        );
        assert_eq!(
            spec.path_template_or_default(),
            backup_policy::DEFAULT_PATH_TEMPLATE
        );
        assert_eq!(spec.time_zone_or_default(), "UTC");
        assert_eq!(spec.compression_or_default().effective_level(), Some(3));
        assert_eq!(spec.run_history_or_default().successful, 10);
        assert_eq!(spec.stall_timeout_seconds_or_default(), 600);
    }
}
