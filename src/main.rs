use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = dataguardian::cli::Cli::parse();
    dataguardian::cli::run(cli)
}
