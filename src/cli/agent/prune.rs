//! `dataguardian agent prune`: the command line and the process frame around
//! [`crate::agent::prune`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::agent::error::AgentError;
use crate::agent::prune::prune;
use crate::agent::storage::Location;
use crate::agent::summary;

use super::LogFormat;

/// `dataguardian agent prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The artifact's manifest: file:///dir/manifest.json.
    #[arg(long, env = "DG_MANIFEST")]
    pub manifest: String,
    /// Where to write the Kubernetes termination message (default /dev/termination-log when
    /// writable; an empty value disables it).
    #[arg(long, env = "DG_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = "DG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Runs `agent prune`: prints the JSON summary and returns the exit code.
pub fn run_cli(args: &PruneArgs) -> ExitCode {
    let clock = Instant::now();
    super::init_logging(args.log_format);
    let termination_log = summary::termination_log_path(args.termination_log.clone());
    let result = match args.manifest.parse::<Location>() {
        Ok(Location::File { path }) => prune(&path),
        Ok(Location::S3 { .. }) => Err(AgentError::Config(
            "prune removes artifacts from a directory (file://); the operator deletes S3 artifacts itself".into(),
        )),
        Err(e) => Err(e),
    };
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
                &json!({
                    "status": "succeeded",
                    "operation": "prune",
                    "deleted": paths(&o.deleted),
                    "alreadyGone": paths(&o.already_gone),
                    "durationSeconds": clock.elapsed().as_secs_f64(),
                }),
                termination_log.as_deref(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "prune failed");
            summary::emit(
                &summary::failure_summary("prune", &e, clock.elapsed().as_secs_f64()),
                termination_log.as_deref(),
            );
            ExitCode::from(e.exit_code())
        }
    }
}
