//! The reconcilers, one folder per kind: `mod.rs` wires the controller and holds `reconcile`,
//! `plan.rs` is the pure planner (observed state in, steps out). [`common`] holds what several
//! kinds share. See `docs/architecture.md`.

pub mod common;

pub mod backup_policy;
pub mod backup_run;
pub mod backup_storage;
pub mod restore_run;
pub mod restore_validation;
