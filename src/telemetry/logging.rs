//! Structured logging setup shared by the operator and the agent, and the OpenTelemetry layer
//! when `OTEL_*` asks for traces ([`super::otel`]). Inside an exported span every log line
//! carries `trace_id` and `span_id`.

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
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
    install(filter, format, "dataguardian-operator");
}

/// Installs the global subscriber with `filter`: JSON or text lines on stderr, and the
/// OpenTelemetry layer (default `service.name` `service`) when the environment asks for traces.
pub fn install(filter: EnvFilter, format: LogFormat, service: &str) {
    let (otel, otel_error) = match super::otel::layer(service) {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    // Traces get this code base's spans only (info and above): never log events, whose fields
    // were written for logs, and never the spans of libraries (HTTP clients, the AWS SDK),
    // whose attributes this code does not choose. The log filter applies to log lines only.
    let otel = otel.map(|layer| {
        layer.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span()
                && *meta.level() <= tracing::Level::INFO
                && meta.target().starts_with("dataguardian")
        }))
    });
    let registry = tracing_subscriber::registry().with(otel);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .event_format(WithTraceIds(
                        fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(false)
                            .with_span_list(false),
                    ))
                    .fmt_fields(fmt::format::JsonFields::new())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .event_format(WithTraceIds(fmt::format()))
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    // A second init (e.g. in tests) keeps the first subscriber; that is not an error worth failing on.
    let _ = result;
    super::otel::remember_dispatch();
    if let Some(e) = otel_error {
        tracing::warn!(category = e.category(), error = %e, "traces are off: the OTEL_* settings cannot be used");
    }
}

/// A formatter that adds the current span's `trace_id` and `span_id` to every line written
/// inside an exported span.
struct WithTraceIds<F>(F);

impl<S, N> FormatEvent<S, N> for WithTraceIds<Format<Json>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = current_ids(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

impl<S, N> FormatEvent<S, N> for WithTraceIds<Format>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if let Some((trace_id, span_id)) = current_ids(ctx) {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// The ids of the span the event is in, when traces are exported.
fn current_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if !super::otel::enabled() {
        return None;
    }
    let id = ctx.lookup_current()?.id();
    super::otel::ids_of_span_id(&id)
}
