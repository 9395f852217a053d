//! The one reconcile wrapper every controller runs in: a `tracing` span per reconcile (controller,
//! namespace, name, generation), the reconcile counter, the duration histogram
//! `dataguardian_reconcile_duration_seconds{controller,result}`, and one error policy that counts
//! errors by category and chooses the retry.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::telemetry::metrics::{ControllerLabels, ErrorLabels, ReconcileLabels, ReconcileResult};

use super::context::Context;
use super::error::{Error, ErrorCategory, Result};

/// The operator's controllers: the `controller` label of every reconcile metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControllerKind {
    BackupRun,
    BackupPolicy,
    BackupStorage,
    RestoreRun,
    RestoreValidation,
    /// A policy's automatic validations (a second controller over BackupPolicies).
    PolicyValidation,
}

impl ControllerKind {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ControllerKind::BackupRun => "backuprun",
            ControllerKind::BackupPolicy => "backuppolicy",
            ControllerKind::BackupStorage => "backupstorage",
            ControllerKind::RestoreRun => "restorerun",
            ControllerKind::RestoreValidation => "restorevalidation",
            ControllerKind::PolicyValidation => "policyvalidation",
        }
    }

    /// When to try again after an error of `category`: a conflict is a lost race and retries
    /// almost at once; storages and automatic validations wait a little longer (they talk to
    /// storage or create objects, and a failure there is rarely gone in a second).
    pub fn retry_after(self, category: ErrorCategory) -> Duration {
        match (self, category) {
            (ControllerKind::BackupStorage | ControllerKind::PolicyValidation, _) => {
                Duration::from_secs(10)
            }
            (_, ErrorCategory::Conflict) => Duration::from_millis(200),
            _ => Duration::from_secs(5),
        }
    }
}

/// How long a controller that reads the BackupRun cache waits while the cache loads its first
/// full list (acting before would see no runs at all).
pub const RUNS_CACHE_WAIT: Duration = Duration::from_millis(500);

/// The namespace and name of a namespaced object (the API server always sets both).
pub fn namespace_and_name<K: Resource>(obj: &K) -> Result<(String, String)> {
    let ns = obj
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    Ok((ns, obj.name_any()))
}

/// Whether a reconcile of an object belongs to a run's trace ([`super::run_trace`]): a
/// BackupRun, RestoreRun or RestoreValidation that has not finished yet. A finished run's later
/// reconciles (e.g. after an operator restart) do not reopen its trace.
pub trait RunTraced: Resource {
    /// `true` while the object is a run that has not finished.
    fn in_run_trace(&self) -> bool {
        false
    }
}

impl RunTraced for crate::api::BackupRun {
    fn in_run_trace(&self) -> bool {
        !self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished())
    }
}

impl RunTraced for crate::api::RestoreRun {
    fn in_run_trace(&self) -> bool {
        !self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished())
    }
}

impl RunTraced for crate::api::RestoreValidation {
    fn in_run_trace(&self) -> bool {
        !self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished())
    }
}

impl RunTraced for crate::api::BackupPolicy {}
impl RunTraced for crate::api::BackupStorage {}

/// Runs `reconcile` for `obj` inside a span, counting it and timing it.
pub async fn instrumented<K, F, Fut>(
    kind: ControllerKind,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action>
where
    K: RunTraced,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let span = tracing::info_span!(
        "reconcile",
        controller = kind.as_str(),
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        generation = obj.meta().generation,
    );
    ctx.metrics
        .reconciles
        .get_or_create(&ControllerLabels {
            controller: kind.as_str().into(),
        })
        .inc();
    // A run's reconciles belong to the run's trace (see `run_trace`).
    if obj.in_run_trace()
        && let Some(trace) = super::run_trace::of(obj.meta())
    {
        trace.adopt(&span);
    }
    let metrics = ctx.metrics.clone();
    let started = Instant::now();
    let result = reconcile(obj, ctx).instrument(span.clone()).await;
    if let Err(e) = &result {
        crate::telemetry::otel::fail(&span, e);
    }
    metrics
        .reconcile_duration
        .get_or_create(&ReconcileLabels {
            controller: kind.as_str().into(),
            result: if result.is_ok() {
                ReconcileResult::Ok
            } else {
                ReconcileResult::Error
            },
        })
        .observe(started.elapsed().as_secs_f64());
    result
}

/// The error policy of every controller: count the error by category, log it, retry.
pub fn error_policy<K>(kind: ControllerKind, obj: &K, error: &Error, ctx: &Context) -> Action
where
    K: Resource,
{
    let category = error.category();
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: kind.as_str().into(),
            category: category.as_str().into(),
        })
        .inc();
    tracing::warn!(
        controller = kind.as_str(),
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        category = category.as_str(),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(kind.retry_after(category))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unfinished_runs_reconcile_inside_their_trace() {
        use crate::api::backup_run::{BackupRunPhase, BackupRunStatus, Trigger};
        use crate::api::common::LocalObjectReference;
        use crate::api::{BackupRun, BackupRunSpec};
        let mut run = BackupRun::new(
            "r",
            BackupRunSpec {
                policy_ref: LocalObjectReference::new("p"),
                trigger: Trigger::Manual,
                scheduled_time: None,
                reason: None,
                compression: None,
                active_deadline_seconds: None,
            },
        );
        assert!(run.in_run_trace(), "a new run");
        for (phase, inside) in [
            (BackupRunPhase::Pending, true),
            (BackupRunPhase::Running, true),
            (BackupRunPhase::Succeeded, false),
            (BackupRunPhase::Failed, false),
        ] {
            run.status = Some(BackupRunStatus {
                phase: Some(phase),
                ..Default::default()
            });
            assert_eq!(run.in_run_trace(), inside, "{phase:?}");
        }
    }

    #[test]
    fn retries_follow_the_category_and_the_controller() {
        assert_eq!(
            ControllerKind::BackupRun.retry_after(ErrorCategory::Conflict),
            Duration::from_millis(200)
        );
        assert_eq!(
            ControllerKind::RestoreRun.retry_after(ErrorCategory::KubeApi),
            Duration::from_secs(5)
        );
        assert_eq!(
            ControllerKind::BackupStorage.retry_after(ErrorCategory::Conflict),
            Duration::from_secs(10)
        );
        assert_eq!(
            ControllerKind::PolicyValidation.retry_after(ErrorCategory::Storage),
            Duration::from_secs(10)
        );
    }
}
