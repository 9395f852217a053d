//! The operator process: leader election, health and metrics endpoints, controller startup.

pub mod audit;
pub mod compact;
pub mod health;
pub mod leader;
pub mod lean;
pub mod memory;
pub mod run;
pub mod run_watch;
pub mod shared_watch;
