//! `dataguardian agent …`: the data path inside Jobs.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {}

pub fn run(_args: AgentArgs) -> ExitCode {
    eprintln!("dataguardian agent: not built yet (see the agent issue)");
    ExitCode::from(2)
}
