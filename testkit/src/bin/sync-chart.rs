//! `make chart`: regenerates the chart's and the kustomize base's copies of `crds/`,
//! `config/rbac/`, `config/prometheus/` and `config/grafana/` (see `testkit::chart::sync`).
//! `--check` only reports the drift and exits 1 when there is any.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("usage: sync-chart [--check] (unknown argument {other:?})");
            return ExitCode::from(2);
        }
    };
    let repo = testkit::chart::repo_root();
    let generated = match testkit::chart::sync::generate(&repo) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("sync-chart: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        let drift = testkit::chart::sync::drift(&repo, &generated);
        for d in &drift {
            eprintln!("sync-chart: {d}");
        }
        return if drift.is_empty() {
            ExitCode::SUCCESS
        } else {
            eprintln!("sync-chart: run `{}`", testkit::chart::sync::REGENERATE);
            ExitCode::FAILURE
        };
    }
    match testkit::chart::sync::write(&repo, &generated) {
        Ok(changes) => {
            for c in &changes {
                println!("sync-chart: {c}: updated");
            }
            println!(
                "sync-chart: {} files checked, {} updated",
                generated.files.len(),
                changes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sync-chart: {e}");
            ExitCode::FAILURE
        }
    }
}
