//! The `dataguardian` command line: `operator`, `agent`, `crd`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod agent;
pub mod crd;

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
    Operator(Box<crate::operator::run::OperatorArgs>),
    /// Run a backup, restore or validation (inside a Job, or by hand without Kubernetes).
    Agent(Box<agent::AgentArgs>),
    /// Print the CustomResourceDefinitions as YAML (the source of `crds/`).
    Crd(crd::CrdArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Operator(args) => {
            crate::operator::memory::limit_malloc_arenas();
            crate::telemetry::logging::init(
                args.log_format,
                "info,kube=warn,tower=warn,hyper=warn",
            );
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("dataguardian operator: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::operator::run::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Agent(args) => agent::run(*args),
        Command::Crd(args) => crd::run(args),
    }
}
