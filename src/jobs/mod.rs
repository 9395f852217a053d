//! Builders for the Kubernetes Jobs the controllers launch. [`shell`] and [`source`] are the
//! neutral parts every builder uses; kind builders never use each other, and nothing here
//! imports the controllers.

pub mod backup_job;
pub mod copy_job;
pub mod naming;
pub mod prune_job;
pub mod restore_job;
pub mod rotation_job;
pub mod shell;
pub mod source;
pub mod validation_job;
