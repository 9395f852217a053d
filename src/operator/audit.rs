//! The leader's audit trail (docs/audit.md): opens the audit storage named by
//! `--audit-storage` (retrying while it is unreachable: records queue meanwhile), runs the
//! [`AuditSink`] writer, and watches the audited kinds, offering every record an object's
//! state shows ([`Audited`]). The first list after a start offers the records of every
//! existing object again: the sink drops those its chain already holds, so whatever status
//! shows but the trail lacks (e.g. the operator stopped before writing) is sent. The records no
//! status shows come from the write-ahead spool ([`crate::audit::spool`]), read first (before
//! that, actions that need the spool wait) and again every
//! [`RELOAD_INTERVAL`](crate::audit::spool::RELOAD_INTERVAL).
//!
//! The first lists offer the cluster's history in list order, not in time order: the sink is
//! told once every watch has seen its first list through ([`AuditSink::history_offered`]), and
//! until then lets no chain head move on. Policies keep the time of their last write other
//! than status's (from `managedFields`, the rest of which is dropped): a `PolicySpecChanged`
//! record is timed no earlier than that ([`crate::audit::record::last_written`]).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;

use super::run_watch::{strip_metadata, trimmed_watch};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::{BackupPolicy, BackupRun, RestoreRun, RestoreValidation};
use crate::audit::StorageRef;
use crate::audit::record::{Audited, last_written};
use crate::audit::sink::AuditSink;
use crate::egress::EgressPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

/// Records queued before the audit watches wait for the writer (~1 KiB each in memory). The
/// first start over 100,000 BackupRuns offers ~300,000 records: unpaced, they were all held
/// at once (docs/benchmarks.md, "At 10,000 policies and 100,000 runs").
const WATCH_QUEUE_LIMIT: usize = 10_000;

/// How long to wait before trying to open an unreachable audit storage again.
const OPEN_RETRY: Duration = Duration::from_secs(10);

/// Starts the writer and the watches; the tasks end when aborted.
pub fn spawn(
    client: Client,
    storage: StorageRef,
    egress: EgressPolicy,
    sink: AuditSink,
    requester_recorded: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let spool_reader = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let Some(spool) = sink.spool().cloned() else {
                return;
            };
            loop {
                let wait = match spool.load().await {
                    Ok(records) => {
                        let queued = sink.offer_spooled(records);
                        if queued > 0 {
                            tracing::info!(
                                records = queued,
                                "audit records read back from the spool"
                            );
                            sink.flush_soon();
                        }
                        crate::audit::spool::RELOAD_INTERVAL
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the audit spool yet; retention and key rotation wait for it");
                        OPEN_RETRY
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    };
    let writer = {
        let (client, sink) = (client.clone(), sink.clone());
        tokio::spawn(async move {
            loop {
                match crate::audit::open(&client, &storage, &egress).await {
                    Ok(target) => {
                        tracing::info!(storage = %storage, object_lock = target.lock.is_some(), "writing the audit trail");
                        sink.open_with(target);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, pending = sink.pending(), "cannot open the audit storage yet; audit records queue until it opens");
                        tokio::time::sleep(OPEN_RETRY).await;
                    }
                }
            }
            sink.run().await;
        })
    };
    let listing = Listing::new(sink.clone(), WATCHES);
    vec![
        spool_reader,
        writer,
        tokio::spawn(watch::<BackupRun>(
            client.clone(),
            strip_metadata::<BackupRun>,
            listing.clone(),
            requester_recorded,
        )),
        tokio::spawn(watch::<RestoreRun>(
            client.clone(),
            strip_metadata::<RestoreRun>,
            listing.clone(),
            requester_recorded,
        )),
        tokio::spawn(watch::<RestoreValidation>(
            client.clone(),
            strip_metadata::<RestoreValidation>,
            listing.clone(),
            requester_recorded,
        )),
        tokio::spawn(watch::<BackupPolicy>(
            client,
            strip_keeping_last_write::<BackupPolicy>,
            listing,
            requester_recorded,
        )),
    ]
}

/// How many audit watches [`spawn`] starts.
const WATCHES: usize = 4;

/// Tells the sink once every audit watch has seen its first list through.
#[derive(Clone)]
struct Listing {
    sink: AuditSink,
    /// Watches whose first list is not done yet.
    left: Arc<AtomicUsize>,
}

impl Listing {
    fn new(sink: AuditSink, watches: usize) -> Self {
        Listing {
            sink,
            left: Arc::new(AtomicUsize::new(watches)),
        }
    }

    /// One watch's first list is done (call once per watch).
    fn first_list_done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::info!("audit watches listed the cluster's history");
            self.sink.history_offered();
        }
    }
}

/// [`strip_metadata`], keeping of `managedFields` only the time of the object's last write
/// other than through status ([`last_written`]), as one entry without fields.
fn strip_keeping_last_write<K: Resource>(o: &mut K) {
    let last = last_written(o.meta()).cloned();
    strip_metadata(o);
    o.meta_mut().managed_fields = last.map(|time| {
        vec![ManagedFieldsEntry {
            time: Some(time),
            ..ManagedFieldsEntry::default()
        }]
    });
}

/// Offers the records of every object of `api` as it is listed and changes; tells `listing`
/// when its first list is done.
async fn watch<K>(client: kube::Client, trim: fn(&mut K), listing: Listing, recorded: bool)
where
    K: Resource<DynamicType = ()>
        + Audited
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    // Listed in pages and trimmed like the controllers' watches: at 100,000 BackupRuns one
    // unpaged list is hundreds of MiB of JSON and typed objects, managedFields included, held
    // at once (docs/benchmarks.md, "At 10,000 policies and 100,000 runs").
    let mut stream = trimmed_watch(client, watcher::Config::default().any_semantic(), trim).boxed();
    let sink = &listing.sink;
    let mut listed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                // Paced by the writer: at most WATCH_QUEUE_LIMIT records held in memory.
                sink.wait_for_room(WATCH_QUEUE_LIMIT).await;
                sink.offer(obj.audit_records(recorded));
            }
            Ok(watcher::Event::InitDone) if !listed => {
                listed = true;
                listing.first_list_done();
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone | watcher::Event::Delete(_)) => {}
            Err(e) => tracing::warn!(error = %e, "audit watch error (retrying)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupPolicy;
    use crate::telemetry::metrics::Metrics;

    #[test]
    fn the_sink_hears_of_the_history_once_every_watch_listed_it() {
        let sink = AuditSink::unopened(Default::default(), Metrics::new());
        let listing = Listing::new(sink.clone(), 3);
        listing.first_list_done();
        listing.clone().first_list_done();
        assert!(!sink.history_was_offered());
        listing.first_list_done();
        assert!(sink.history_was_offered());
    }

    #[test]
    fn a_trimmed_policy_keeps_only_the_time_of_its_last_write_other_than_status() {
        let mut policy: BackupPolicy = crate::audit::record::tests::policy_with(
            serde_json::json!({
                            "name": "nightly", "namespace": "shop", "uid": "u-policy", "generation": 2,
                            "creationTimestamp": "2026-12-01T00:00:00Z",
                            "managedFields": [
                                {"manager": "kubectl-edit", "operation": "Update",
                                 "apiVersion": "dataguardian.io/v1alpha1", "time": "2026-12-07T09:00:00Z",
                                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:schedule": {}}}},
                                {"manager": "dataguardian", "operation": "Update", "subresource": "status",
                                 "apiVersion": "dataguardian.io/v1alpha1", "time": "2026-12-07T12:00:00Z",
                                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}
                            ]
            }),
        );
        let before = policy.audit_records(false);
        strip_keeping_last_write(&mut policy);
        let kept = policy.meta().managed_fields.as_deref().expect("one entry");
        assert_eq!(kept.len(), 1);
        assert!(kept[0].fields_v1.is_none() && kept[0].manager.is_none());
        let after = policy.audit_records(false);
        assert_eq!(after, before);
        assert_eq!(after[0].time.to_rfc3339(), "2026-12-07T09:00:00+00:00");
        // Trimmed again (a cached copy): the same.
        strip_keeping_last_write(&mut policy);
        assert_eq!(policy.audit_records(false), before);
    }
}
