//! A Kubernetes API stand-in for DataGuardian's end-to-end tests (test infrastructure only).
pub mod runner;
