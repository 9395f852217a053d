//! `dataguardian crd`: print the CustomResourceDefinitions.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CrdArgs {}

pub fn run(_args: CrdArgs) -> ExitCode {
    ExitCode::SUCCESS
}
