//! DataGuardian: a Kubernetes operator that backs up databases, restores them, and proves the
//! backups restore.
//!
//! Module map (see `DESIGN.md` §2):
//! - [`admission`]: the admission webhook (who asked for a run, who changed a policy) and its
//!   certificates.
//! - [`api`]: the custom resource types, one file per kind, no client code.
//! - [`agent`]: the data path that runs inside backup/restore/validation Jobs.
//! - [`controller`]: the reconcilers; pure planning separated from API calls.
//! - [`jobs`]: builders for the Kubernetes Jobs the controllers launch.
//! - [`cli`]: the command-line interface of the `dataguardian` binary.
//! - [`contract`]: the operator↔agent contract (summary, progress line, manifest view, exit
//!   codes, Job constants).
//! - [`egress`]: where tenant-named endpoints may be reached (the resolved-address policy) and
//!   the caps on what is read from them.

pub mod admission;
pub mod agent;
pub mod api;
pub mod cli;
pub mod contract;
pub mod controller;
pub mod egress;
pub mod jobs;
pub mod notify;
pub mod operator;
pub mod plugin;
pub mod telemetry;
