//! The operator's Prometheus metrics.
//!
//! Label values are object names and enum-like categories only: never a secret, never a free-form
//! error message (which could carry one, and would explode cardinality).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
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

/// Labels of one storage.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    pub namespace: String,
    pub storage: String,
}

/// An exemplar's labels: the run's trace id (OpenMetrics exemplars link a histogram bucket to
/// the trace of one run that fell into it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

impl TraceLabels {
    /// The exemplar of a run with `trace_id` (none without one).
    pub fn of(trace_id: Option<&str>) -> Option<TraceLabels> {
        trace_id.map(|t| TraceLabels {
            trace_id: t.to_string(),
        })
    }
}

/// The build: the operator's version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// Duration histograms whose buckets carry the trace id of a run as exemplar.
pub type TracedHistogram = HistogramWithExemplars<TraceLabels>;

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
    /// Wall time of finished backup runs; exemplars carry the run's trace id.
    pub backup_duration: Family<PolicyLabels, TracedHistogram>,
    /// Wall time of finished restore runs; exemplars carry the run's trace id.
    pub restore_duration: Family<PolicyLabels, TracedHistogram>,
    /// Latency of storage probes.
    pub storage_probe_duration: Family<StorageLabels, Histogram>,
    /// 1 when the storage's last probe succeeded, 0 when it failed.
    pub storage_up: Family<StorageLabels, Gauge>,
    /// Bytes of the artifacts a policy keeps on a storage (its primary storage and each copy's),
    /// from the runs the operator keeps.
    pub stored_bytes: Family<CopyLabels, Gauge>,
    /// Artifacts a policy keeps on a storage.
    pub stored_artifacts: Family<CopyLabels, Gauge>,
    pub backup_bytes: Family<PolicyLabels, Counter>,
    pub last_success: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub restore_runs: Family<RunLabels, Counter>,
    pub validations: Family<RunLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub rpo_met: Family<PolicyLabels, Gauge>,
    /// 1 when the policy's newest finished validation restored within its `rto`, 0 when not;
    /// absent without an objective or a measurement.
    pub rto_met: Family<PolicyLabels, Gauge>,
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
    /// The last passed validation's measured restore time (the RTO actually achieved).
    pub validation_rto: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    /// From a run's creation to its Job's creation (manual run → Job, the SLI of
    /// docs/slo.md), by kind and trigger.
    pub start_latency: Family<StartLabels, Histogram>,
    /// Audit records waiting to be written to the audit storage (docs/audit.md).
    pub audit_pending: Gauge,
    /// Age of the oldest audit record waiting to be written, 0 when none waits.
    pub audit_oldest_pending: Gauge<f64, AtomicU64>,
    /// Audit records whose segment write failed (each is retried).
    pub audit_failed: Counter,
    /// Audit records written (confirmed by the audit storage).
    pub audit_written: Counter,
    /// Entries in the audit write-ahead spool (records no status shows afterwards, not yet
    /// confirmed by the audit storage; docs/audit.md).
    pub audit_spool_entries: Gauge,
}

/// Labels of the start latency: which kind of run and how it was triggered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// `BackupRun`, `RestoreRun`, `RestoreValidation`.
    pub kind: String,
    /// `Manual` or `Scheduled`.
    pub trigger: String,
}

/// 10 ms … ~80 s: from a run's creation to its Job (queues included).
fn start_latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 14,
    ))
}

/// 1 ms … ~16 s: a reconcile is a few API calls, a storage probe at most.
fn reconcile_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

fn duration_histogram() -> TracedHistogram {
    // 1 s … ~9 h: backups of small to very large databases.
    HistogramWithExemplars::new(prometheus_client::metrics::histogram::exponential_buckets(
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
        let backup_duration = Family::<PolicyLabels, TracedHistogram>::new_with_constructor(
            duration_histogram as fn() -> TracedHistogram,
        );
        registry.register(
            "backup_duration_seconds",
            "Wall time of finished backup runs (exemplars: the run's trace_id)",
            backup_duration.clone(),
        );
        let restore_duration = Family::<PolicyLabels, TracedHistogram>::new_with_constructor(
            duration_histogram as fn() -> TracedHistogram,
        );
        registry.register(
            "restore_duration_seconds",
            "Wall time of finished restore runs (exemplars: the run's trace_id)",
            restore_duration.clone(),
        );
        let storage_probe_duration = Family::<StorageLabels, Histogram>::new_with_constructor(
            reconcile_histogram as fn() -> Histogram,
        );
        registry.register(
            "storage_probe_duration_seconds",
            "Latency of storage probes",
            storage_probe_duration.clone(),
        );
        let storage_up = Family::<StorageLabels, Gauge>::default();
        registry.register(
            "storage_up",
            "1 when the storage's last probe succeeded, 0 when it failed",
            storage_up.clone(),
        );
        let stored_bytes = Family::<CopyLabels, Gauge>::default();
        registry.register(
            "policy_stored_bytes",
            "Bytes of the artifacts a policy keeps on a storage (primary and copies), from the runs the operator keeps",
            stored_bytes.clone(),
        );
        let stored_artifacts = Family::<CopyLabels, Gauge>::default();
        registry.register(
            "policy_stored_artifacts",
            "Artifacts a policy keeps on a storage (primary and copies)",
            stored_artifacts.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The operator's version (always 1)",
            build_info,
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
        let rto_met = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "policy_rto_met",
            "1 when the policy's newest finished restore validation restored within its recovery time objective, 0 when not",
            rto_met.clone(),
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
        let validation_rto = Family::<PolicyLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "validation_restore_seconds",
            "Restore time measured by the policy's last passed restore validation: the recovery time actually achieved",
            validation_rto.clone(),
        );
        let start_latency = Family::<StartLabels, Histogram>::new_with_constructor(
            start_latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "run_start_latency_seconds",
            "From a run's creation to the creation of its Job, by kind and trigger (queues included)",
            start_latency.clone(),
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
        let audit_pending = Gauge::default();
        registry.register(
            "audit_records_pending",
            "Audit records waiting to be written to the audit storage",
            audit_pending.clone(),
        );
        let audit_oldest_pending = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "audit_oldest_pending_seconds",
            "Age of the oldest audit record waiting to be written (0 when none waits)",
            audit_oldest_pending.clone(),
        );
        let audit_failed = Counter::default();
        registry.register(
            "audit_records_failed",
            "Audit records whose segment write failed (each is retried until confirmed)",
            audit_failed.clone(),
        );
        let audit_written = Counter::default();
        registry.register(
            "audit_records_written",
            "Audit records written to the audit storage and confirmed",
            audit_written.clone(),
        );
        let audit_spool_entries = Gauge::default();
        registry.register(
            "audit_spool_entries",
            "Audit records in the write-ahead spool, not yet confirmed by the audit storage (retention waits when it is full)",
            audit_spool_entries.clone(),
        );
        Self {
            registry: Arc::new(registry),
            backup_runs,
            backup_duration,
            restore_duration,
            storage_probe_duration,
            storage_up,
            stored_bytes,
            stored_artifacts,
            backup_bytes,
            last_success,
            restore_runs,
            validations,
            reconcile_errors,
            reconciles,
            reconcile_duration,
            queue_depth,
            rpo_met,
            rto_met,
            copy_last_success,
            copy_pending,
            notifications,
            leader,
            lease_transitions,
            validation_rto,
            start_latency,
            audit_pending,
            audit_oldest_pending,
            audit_failed,
            audit_written,
            audit_spool_entries,
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
        m.backup_duration.get_or_create(&p).observe(
            42.0,
            TraceLabels::of(Some("4bf92f3577b34da6a3ce929d0e0e4736")),
            None,
        );
        m.restore_duration
            .get_or_create(&p)
            .observe(3.0, None, None);
        let st = StorageLabels {
            namespace: "shop".into(),
            storage: "main".into(),
        };
        m.storage_up.get_or_create(&st).set(1);
        m.storage_probe_duration.get_or_create(&st).observe(0.02);
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
        // The bucket the observation fell into carries the trace id as exemplar.
        assert!(text.contains(r#"dataguardian_backup_duration_seconds_bucket{le="64.0",namespace="shop",policy="nightly"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 42.0"#), "{text}");
        assert!(text.contains("dataguardian_restore_duration_seconds_count{namespace=\"shop\",policy=\"nightly\"} 1"), "{text}");
        assert!(
            text.contains(r#"dataguardian_storage_up{namespace="shop",storage="main"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"dataguardian_storage_probe_duration_seconds_count{namespace="shop",storage="main"} 1"#), "{text}");
        assert!(
            text.contains(&format!(
                r#"dataguardian_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
