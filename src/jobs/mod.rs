//! Builders for the Kubernetes Jobs the controllers launch.

pub mod backup_job;
pub mod naming;
pub mod prune_job;
pub mod restore_job;
pub mod validation_job;
