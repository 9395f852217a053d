//! `dataguardian agent validate`: the command line and the process frame around
//! [`crate::agent::validate`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::agent::error::{AgentError, Result};
use crate::agent::storage::Location;
use crate::agent::summary;
use crate::agent::validate::{ValidateRequest, compact, outcome_summary, parse_checks, run};
use crate::api::restore_validation::ValidationResult;
use crate::contract::{Operation, exit::VALIDATION_FAILED};

use super::CommonArgs;

/// `agent validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Connection to the sandbox database (`--database` picks the database to restore into;
    /// default: the backup's own database name).
    #[command(flatten)]
    pub common: CommonArgs,
    /// The backup's manifest: s3://bucket/…/manifest.json or file:///…/manifest.json.
    #[arg(long, env = "DG_FROM")]
    pub from: String,
    #[command(flatten)]
    pub pin: super::PinArgs,
    /// age identity file for encrypted backups.
    #[arg(long, env = "DG_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,
    /// KMS access for a data key wrapped by KMS.
    #[command(flatten)]
    pub kms: super::KmsAccessArgs,
    /// The checks as JSON (a RestoreValidation's `spec.checks`); default: one rowCounts check.
    #[arg(long, env = "DG_CHECKS")]
    pub checks: Option<String>,
    /// File holding the checks as JSON.
    #[arg(long, env = "DG_CHECKS_FILE")]
    pub checks_file: Option<PathBuf>,
    /// How long to wait for the sandbox to accept connections, in seconds.
    #[arg(long, env = "DG_SANDBOX_WAIT_SECONDS", default_value_t = 300)]
    pub wait_seconds: u64,
}

fn request(args: &ValidateArgs) -> Result<ValidateRequest> {
    let checks_text = match (&args.checks, &args.checks_file) {
        (Some(_), Some(_)) => {
            return Err(AgentError::Config(
                "give either --checks or --checks-file".into(),
            ));
        }
        (Some(c), None) => Some(c.clone()),
        (None, Some(f)) => Some(std::fs::read_to_string(f).map_err(|e| {
            AgentError::Config(format!("cannot read --checks-file {}: {e}", f.display()))
        })?),
        (None, None) => None,
    };
    Ok(ValidateRequest {
        engine: args.common.engine,
        uri: super::resolve_uri(&args.common)?,
        database: args.common.database.clone(),
        from: args.from.parse()?,
        pin: args.pin.pin()?,
        identity_file: args.identity_file.clone(),
        kms: args.kms.unwrap_settings(&args.common.egress_allow_cidrs),
        checks: parse_checks(checks_text.as_deref())?,
        s3: super::s3_settings(&args.common),
        wait: Duration::from_secs(args.wait_seconds.max(1)),
        progress_interval: Duration::from_secs(args.common.progress_interval_seconds.max(1)),
    })
}

/// Run `agent validate`: print the summary, write the termination message, return the exit
/// code (0 Passed, 1 Failed, else the error category's code).
pub fn run_cli(args: &ValidateArgs) -> ExitCode {
    let clock = Instant::now();
    super::tune_allocator();
    super::init_logging(args.common.log_format);
    let termination_log = summary::termination_log_path(args.common.termination_log.clone());
    let result = super::runtime().map_err(AgentError::Io).and_then(|rt| {
        rt.block_on(crate::telemetry::otel::in_span(
            super::agent_span("agent validate"),
            async { run(request(args)?).await },
        ))
    });
    let (summary_out, code) = match result {
        Ok(o) => {
            let from: Location = args.from.parse().unwrap_or(Location::File {
                path: PathBuf::new(),
            });
            let code = if o.result == ValidationResult::Passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(VALIDATION_FAILED)
            };
            match o.result {
                ValidationResult::Passed => {
                    tracing::info!(rto = ?o.restore_duration_seconds, "validation passed")
                }
                ValidationResult::Failed => {
                    tracing::warn!(reason = ?o.reason, message = %o.message, "validation failed")
                }
            }
            (outcome_summary(&o, &from), code)
        }
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "validate failed");
            (
                summary::failure_summary(Operation::Validate, &e, clock.elapsed().as_secs_f64()),
                ExitCode::from(e.exit_code()),
            )
        }
    };
    let value = summary_out.to_value();
    println!("{value}");
    if let Some(path) = termination_log
        && let Err(e) = std::fs::write(&path, compact(&value))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
    code
}
