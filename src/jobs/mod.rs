//! Builders for the Kubernetes Jobs the controllers launch.

pub mod backup_job;
pub mod naming;
