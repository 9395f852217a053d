//! Structured logging setup shared by the operator and the agent.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines; the default in clusters).
    #[default]
    Json,
    /// Human-readable text (for a terminal).
    Text,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_directive` (e.g. `info`).
/// Logs go to stderr so that stdout stays free for machine-readable output (the agent's summary).
pub fn init(format: LogFormat, default_directive: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (e.g. in tests) keeps the first subscriber; that is not an error worth failing on.
    let _ = result;
}
