//! Telemetry: JSON logs via `tracing` and Prometheus metrics via `prometheus-client`.

pub mod logging;
pub mod metrics;
