//! `kubectl-dataguardian`: the plugin's command line ([`args`]) and its process frame (runtime,
//! exit code) around [`crate::plugin::run`].

pub mod args;

use std::process::ExitCode;

use clap::Parser;

use args::Plugin;

/// Entry point of the `kubectl-dataguardian` binary.
pub fn main() -> ExitCode {
    let plugin = Plugin::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(crate::plugin::run(plugin)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
