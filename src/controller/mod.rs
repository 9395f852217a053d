//! The reconcilers, one per kind; pure planning functions are kept apart from API calls.

pub mod queue;
pub mod retention;
pub mod rpo;
pub mod schedule;

pub mod agent_report;
pub mod artifact_check;
pub mod backup_policy;
pub mod backup_run;
pub mod backup_run_plan;
pub mod backup_storage;
pub mod context;
pub mod error;
pub mod job_watch;
pub mod restore_run;
pub mod restore_run_plan;
pub mod restore_validation;
pub mod restore_validation_plan;
pub mod run_cache;
pub mod status;
pub mod storage_access;
