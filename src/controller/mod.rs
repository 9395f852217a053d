//! The reconcilers, one per kind; pure planning functions are kept apart from API calls.

pub mod queue;
pub mod retention;
pub mod rpo;
pub mod schedule;
