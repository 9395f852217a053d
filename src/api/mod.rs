//! Custom resource types of the `dataguardian.io/v1alpha1` API, one file per kind.
//!
//! The field documentation here becomes the `kubectl explain` text of the CRDs, and the
//! validation rules (OpenAPI bounds and CEL `x-kubernetes-validations`) are what the API server
//! enforces: see `DESIGN.md` §1 for the contract. This module holds no client code.

pub mod backup_policy;
pub mod backup_run;
pub mod backup_storage;
pub mod common;
pub mod restore_run;
pub mod restore_validation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

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
    crds
}
