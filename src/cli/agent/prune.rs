//! `dataguardian agent prune`: the command line and the process frame around
//! [`crate::agent::prune`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use crate::agent::error::AgentError;
use crate::agent::prune::prune;
use crate::agent::storage::Location;
use crate::agent::summary;
use crate::contract::{LOG_FORMAT_ENV, Operation, PruneSummary, TERMINATION_LOG_ENV};

use super::LogFormat;

/// `dataguardian agent prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The artifact's manifest: file:///dir/manifest.json.
    #[arg(long, env = "DG_MANIFEST")]
    pub manifest: String,
    /// Hex SHA-256 the manifest must have (the digest the operator recorded for the run):
    /// a manifest with other bytes deletes nothing.
    #[arg(long, env = "DG_MANIFEST_SHA256")]
    pub manifest_sha256: Option<String>,
    /// Where to write the Kubernetes termination message (default /dev/termination-log when
    /// writable; an empty value disables it).
    #[arg(long, env = TERMINATION_LOG_ENV)]
    pub termination_log: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Runs `agent prune`: prints the JSON summary and returns the exit code.
pub fn run_cli(args: &PruneArgs) -> ExitCode {
    let clock = Instant::now();
    super::init_logging(args.log_format);
    let termination_log = summary::termination_log_path(args.termination_log.clone());
    // The agent's root span continues the operator's `create_prune_job` span (TRACEPARENT).
    let span = super::agent_span("agent prune");
    let result = span.in_scope(|| match args.manifest.parse::<Location>() {
        Ok(Location::File { path }) => prune(&path, args.manifest_sha256.as_deref()),
        Ok(Location::S3 { .. }) => Err(AgentError::Config(
            "prune removes artifacts from a directory (file://); the operator deletes S3 artifacts itself".into(),
        )),
        Err(e) => Err(e),
    });
    if let Err(e) = &result {
        crate::telemetry::otel::fail(&span, e);
    }
    drop(span);
    match result {
        Ok(o) => {
            tracing::info!(
                deleted = o.deleted.len(),
                already_gone = o.already_gone.len(),
                manifest = %args.manifest,
                "artifact pruned"
            );
            let paths = |v: &[PathBuf]| -> Vec<String> {
                v.iter().map(|p| p.display().to_string()).collect()
            };
            summary::emit(
                &PruneSummary {
                    deleted: paths(&o.deleted),
                    already_gone: paths(&o.already_gone),
                    duration_seconds: clock.elapsed().as_secs_f64(),
                }
                .into(),
                termination_log.as_deref(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "prune failed");
            summary::emit(
                &summary::failure_summary(Operation::Prune, &e, clock.elapsed().as_secs_f64()),
                termination_log.as_deref(),
            );
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::Summary;

    #[test]
    fn the_prune_summary_is_byte_for_byte_the_legacy_one() {
        let deleted = vec![
            "/backup/shop/r1/databases/shop.pgdump.zst".to_string(),
            "/backup/shop/r1/manifest.json".to_string(),
        ];
        let gone = vec!["/backup/shop/r1/globals \"x\".sql".to_string()];
        for (deleted, already_gone, duration_seconds) in [
            (deleted.clone(), gone.clone(), 0.012345678901),
            (Vec::new(), Vec::new(), 0.0),
            (deleted, Vec::new(), 0.1 + 0.2),
        ] {
            // What `run_cli` wrote before the contract.
            let legacy = json!({
                "status": "succeeded",
                "operation": "prune",
                "deleted": deleted,
                "alreadyGone": already_gone,
                "durationSeconds": duration_seconds,
            });
            let summary: Summary = PruneSummary {
                deleted,
                already_gone,
                duration_seconds,
            }
            .into();
            assert_eq!(summary.to_value().to_string(), legacy.to_string());
            assert_eq!(
                summary::compact(&summary.to_value()),
                summary::compact(&legacy)
            );
        }
    }
}
