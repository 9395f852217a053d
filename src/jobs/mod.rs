//! Builders for the Kubernetes Jobs the controllers launch.

pub mod naming;
