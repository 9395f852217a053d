//! What several controllers share: the context, errors, status writing, Job observation, the
//! fair queues, the run cache, storage access and artifact confirmation.

pub mod artifact_check;
pub mod blockers;
pub mod context;
pub mod error;
pub mod job_watch;
pub mod queue;
pub mod read_from;
pub mod reason;
pub mod reconcile;
pub mod requester;
pub mod run_cache;
pub mod run_trace;
pub mod status;
pub mod storage_access;
#[cfg(test)]
pub mod testing;
