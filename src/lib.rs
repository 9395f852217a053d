//! DataGuardian: a Kubernetes operator that backs up databases, restores them, and proves the
//! backups restore.
//!
//! Module map (see `DESIGN.md` §2):
//! - [`admission`]: the admission webhook (who asked for a run, who changed a policy) and its
//!   certificates.
//! - [`audit`]: the WORM audit trail (records, hash-chained segments, the leader's writer).
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
pub mod audit;
pub mod cli;
pub mod contract;
pub mod controller;
pub mod egress;
pub mod jobs;
pub mod notify;
pub mod operator;
pub mod plugin;
pub mod telemetry;

/// Settings of the property tests of the parsers of outside input: `cases` cases each (sized for
/// CI), or `PROPTEST_CASES` for a longer run; failing cases are reported, not persisted to files.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
