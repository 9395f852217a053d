//! The `dataguardian` command line: `operator`, `agent`, `crd`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod agent;
pub mod crd;
pub mod operator;
pub mod plugin;

/// DataGuardian — backs up databases from Kubernetes, restores them, and proves the backups restore.
#[derive(Debug, Parser)]
#[command(name = "dataguardian", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers (BackupStorage, BackupPolicy, BackupRun, RestoreRun, RestoreValidation).
    Operator(Box<operator::OperatorArgs>),
    /// Run a backup, restore or validation (inside a Job, or by hand without Kubernetes).
    Agent(Box<agent::AgentArgs>),
    /// Print the CustomResourceDefinitions as YAML (the source of `crds/`).
    Crd(crd::CrdArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    // The operator and the agent reach S3 and webhooks through HTTPS_PROXY/HTTP_PROXY/NO_PROXY:
    // a proxy setting they cannot use stops them before they start (the message never shows
    // credentials).
    if matches!(cli.command, Command::Operator(_) | Command::Agent(_))
        && let Err(e) = crate::egress::ProxyConfig::from_env()
    {
        eprintln!("dataguardian: {e}");
        return ExitCode::from(2);
    }
    let code = match cli.command {
        Command::Operator(args) => operator::run(&args),
        Command::Agent(args) => agent::run(*args),
        Command::Crd(args) => crd::run(args),
    };
    // Every span ended so far reaches the collector before the process exits.
    crate::telemetry::otel::shutdown();
    code
}
