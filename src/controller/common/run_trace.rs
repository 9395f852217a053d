//! A run's trace on the operator's side ([`crate::telemetry::otel::RunTrace`]): the Job is
//! created inside a `create_job` span whose context the Job carries (`TRACEPARENT`), and the
//! run's root span is exported when the run finishes.

use std::time::SystemTime;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::telemetry::otel::{self, RunTrace};

use super::context::Context;
use super::error::Result;
use super::job_watch;

/// The run's trace, when traces are exported and the run has a UID.
pub fn of(meta: &ObjectMeta) -> Option<RunTrace> {
    if !otel::enabled() {
        return None;
    }
    meta.uid.as_deref().map(RunTrace::of)
}

/// Applies `job` (see [`job_watch::apply`]) in a `create_job` span, with the run's trace context
/// and the `OTEL_*` settings in its environment. Returns the Job's name and the trace id to
/// record in status (`None` when traces are off).
pub async fn apply_job(
    ctx: &Context,
    ns: &str,
    field_manager: &str,
    run: &ObjectMeta,
    mut job: Job,
) -> Result<(String, Option<String>)> {
    let span = tracing::info_span!(
        "create_job",
        k8s.job.name = job.metadata.name.as_deref().unwrap_or_default(),
    );
    let trace = of(run);
    if let Some(t) = &trace {
        let context = t.job_span(&span);
        crate::jobs::shell::add_trace_env(&mut job, &context, &otel::inherited_env());
    }
    let name = otel::in_span(span, job_watch::apply(ctx, ns, field_manager, &job)).await?;
    Ok((name, trace.map(|t| t.trace_id())))
}

/// Records how long the run waited from its creation until its Job was created
/// (`dataguardian_run_start_latency_seconds{kind, trigger}`: the manual run → Job SLI).
pub fn observe_start(ctx: &Context, kind: &str, trigger: &str, run: &ObjectMeta) {
    let Some(created) = run.creation_timestamp.as_ref() else {
        return;
    };
    let waited = (chrono::Utc::now() - crate::api::common::time_to_chrono(created))
        .num_milliseconds()
        .max(0) as f64
        / 1000.0;
    ctx.metrics
        .start_latency
        .get_or_create(&crate::telemetry::metrics::StartLabels {
            kind: kind.to_string(),
            trigger: trigger.to_string(),
        })
        .observe(waited);
}

/// Exports the run's root span (from its creation to now) when it finishes: `Ok(reason)` for a
/// success, `Err(reason)` for a failure.
pub fn finish(
    meta: &ObjectMeta,
    kind: &'static str,
    ns: &str,
    outcome: std::result::Result<&str, &str>,
) {
    let Some(trace) = of(meta) else { return };
    let started = meta
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(crate::api::common::time_to_chrono(t)))
        .unwrap_or_else(SystemTime::now);
    trace.finish(
        kind,
        ns,
        meta.name.as_deref().unwrap_or_default(),
        started,
        outcome,
    );
}
