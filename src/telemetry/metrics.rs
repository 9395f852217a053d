//! The operator's Prometheus metrics.
//!
//! Label values are object names and enum-like categories only: never a secret, never a free-form
//! error message (which could carry one, and would explode cardinality).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// How a run ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RunResult {
    Succeeded,
    Failed,
}

/// Labels identifying a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub namespace: String,
    pub policy: String,
}

/// Labels of a policy's copies on one secondary storage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CopyLabels {
    pub namespace: String,
    pub policy: String,
    pub storage: String,
}

/// Labels for a finished run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub namespace: String,
    pub policy: String,
    pub result: RunResult,
}

/// Labels for reconcile errors: the controller and the error's category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    /// A stable, low-cardinality category name (the controllers' `ErrorCategory::as_str`).
    pub category: String,
}

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReconcileResult {
    Ok,
    Error,
}

impl EncodeLabelValue for ReconcileResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        let text = match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
        };
        EncodeLabelValue::encode(&text, encoder)
    }
}

/// Labels for reconcile durations: the controller and how the reconcile ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub result: ReconcileResult,
}

/// Labels for a notification: its policy, event and outcome (`delivered`, or why not:
/// `config`, `rejected`, `unreachable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub namespace: String,
    pub policy: String,
    pub event: String,
    pub result: String,
}

/// Labels for a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

/// Labels for reconcile counts and durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// Labels for leader election: this replica's identity in the Lease.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaderLabels {
    pub identity: String,
}

/// Every metric the operator exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub backup_runs: Family<RunLabels, Counter>,
    pub backup_duration: Family<PolicyLabels, Histogram>,
    pub backup_bytes: Family<PolicyLabels, Counter>,
    pub last_success: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub restore_runs: Family<RunLabels, Counter>,
    pub validations: Family<RunLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub rpo_met: Family<PolicyLabels, Gauge>,
    /// Completion time of the newest backup with a confirmed copy on a secondary storage (the
    /// copy's recovery point: `time() - this` is its RPO).
    pub copy_last_success: Family<CopyLabels, Gauge<f64, AtomicU64>>,
    /// Succeeded backups still waiting for their copy on a secondary storage.
    pub copy_pending: Family<CopyLabels, Gauge>,
    pub notifications: Family<NotificationLabels, Counter>,
    /// 1 while this replica holds the leader Lease, 0 while it stands by.
    pub leader: Family<LeaderLabels, Gauge>,
    /// `spec.leaseTransitions` of the leader Lease as this replica last read or wrote it: how
    /// often leadership changed hands since the Lease was created.
    pub lease_transitions: Gauge,
}

/// 1 ms … ~16 s: a reconcile is a few API calls, a storage probe at most.
fn reconcile_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

fn duration_histogram() -> Histogram {
    // 1 s … ~9 h: backups of small to very large databases.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dataguardian");
        let backup_runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "backup_runs",
            "Finished backup runs by result",
            backup_runs.clone(),
        );
        let backup_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "backup_duration_seconds",
            "Wall time of finished backup runs",
            backup_duration.clone(),
        );
        let backup_bytes = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "backup_stored_bytes",
            "Bytes written to storage by successful backups",
            backup_bytes.clone(),
        );
        let last_success = Family::<PolicyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup of a policy",
            last_success.clone(),
        );
        let restore_runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "restore_runs",
            "Finished restore runs by result",
            restore_runs.clone(),
        );
        let validations = Family::<RunLabels, Counter>::default();
        registry.register(
            "restore_validations",
            "Finished restore validations by result",
            validations.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by controller and error category",
            reconcile_errors.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations by controller",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(
            reconcile_histogram as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles by controller and result",
            reconcile_duration.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Runs waiting in a queue",
            queue_depth.clone(),
        );
        let rpo_met = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_rpo_met",
            "1 when the policy's newest successful backup is within its recovery point objective, 0 when not",
            rpo_met.clone(),
        );
        let copy_last_success = Family::<CopyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "copy_last_success_timestamp_seconds",
            "Completion time of the newest backup of a policy with a confirmed copy on a secondary storage",
            copy_last_success.clone(),
        );
        let copy_pending = Family::<CopyLabels, Gauge>::default();
        registry.register(
            "copy_pending_runs",
            "Successful backups of a policy still waiting for their copy on a secondary storage",
            copy_pending.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by policy, event and outcome (delivered, config, rejected, unreachable)",
            notifications.clone(),
        );
        let leader = Family::<LeaderLabels, Gauge>::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (reconciles), 0 while it stands by",
            leader.clone(),
        );
        let lease_transitions = Gauge::default();
        registry.register(
            "leader_lease_transitions",
            "spec.leaseTransitions of the leader Lease as last seen by this replica (leadership changes since the Lease was created)",
            lease_transitions.clone(),
        );
        Self {
            registry: Arc::new(registry),
            backup_runs,
            backup_duration,
            backup_bytes,
            last_success,
            restore_runs,
            validations,
            reconcile_errors,
            reconciles,
            reconcile_duration,
            queue_depth,
            rpo_met,
            copy_last_success,
            copy_pending,
            notifications,
            leader,
            lease_transitions,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_labelled_series() {
        let m = Metrics::new();
        let p = PolicyLabels {
            namespace: "shop".into(),
            policy: "nightly".into(),
        };
        m.backup_runs
            .get_or_create(&RunLabels {
                namespace: "shop".into(),
                policy: "nightly".into(),
                result: RunResult::Failed,
            })
            .inc();
        m.last_success.get_or_create(&p).set(1_700_000_000.0);
        m.backup_duration.get_or_create(&p).observe(42.0);
        let c = CopyLabels {
            namespace: "shop".into(),
            policy: "nightly".into(),
            storage: "dr".into(),
        };
        m.copy_last_success.get_or_create(&c).set(1_700_000_100.0);
        m.copy_pending.get_or_create(&c).set(2);
        let text = m.encode();
        assert!(text.contains(r#"dataguardian_copy_last_success_timestamp_seconds{namespace="shop",policy="nightly",storage="dr"} 1700000100"#), "{text}");
        assert!(text.contains(r#"dataguardian_copy_pending_runs{namespace="shop",policy="nightly",storage="dr"} 2"#), "{text}");
        assert!(text.contains(r#"dataguardian_backup_runs_total{namespace="shop",policy="nightly",result="Failed"} 1"#), "{text}");
        assert!(text.contains(r#"dataguardian_backup_last_success_timestamp_seconds{namespace="shop",policy="nightly"} 1700000000"#), "{text}");
        assert!(text.contains("dataguardian_backup_duration_seconds_count{namespace=\"shop\",policy=\"nightly\"} 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
