//! Telemetry: JSON logs via `tracing`, Prometheus metrics via `prometheus-client`, and
//! OpenTelemetry traces over OTLP when the `OTEL_*` variables ask for them.

pub mod logging;
pub mod metrics;
pub mod otel;
