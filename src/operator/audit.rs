//! The leader's audit trail (docs/audit.md): opens the audit storage named by
//! `--audit-storage` (retrying while it is unreachable: records queue meanwhile), runs the
//! [`AuditSink`] writer, and watches the audited kinds, offering every record an object's
//! state shows ([`Audited`]). The first list after a start offers the records of every
//! existing object again: the sink drops those its chain already holds, so whatever status
//! shows but the trail lacks (e.g. the operator stopped before writing) is sent. The records no
//! status shows come from the write-ahead spool ([`crate::audit::spool`]), read first (before
//! that, actions that need the spool wait) and again every
//! [`RELOAD_INTERVAL`](crate::audit::spool::RELOAD_INTERVAL).

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::run_watch::{strip_metadata, trimmed_watch};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::{BackupPolicy, BackupRun, RestoreRun, RestoreValidation};
use crate::audit::StorageRef;
use crate::audit::record::Audited;
use crate::audit::sink::AuditSink;
use crate::egress::EgressPolicy;

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
    vec![
        spool_reader,
        writer,
        tokio::spawn(watch(
            Api::<BackupRun>::all(client.clone()),
            sink.clone(),
            requester_recorded,
        )),
        tokio::spawn(watch(
            Api::<RestoreRun>::all(client.clone()),
            sink.clone(),
            requester_recorded,
        )),
        tokio::spawn(watch(
            Api::<RestoreValidation>::all(client.clone()),
            sink.clone(),
            requester_recorded,
        )),
        tokio::spawn(watch(
            Api::<BackupPolicy>::all(client),
            sink,
            requester_recorded,
        )),
    ]
}

/// Offers the records of every object of `api` as it is listed and changes.
async fn watch<K>(api: Api<K>, sink: AuditSink, recorded: bool)
where
    K: Resource + Audited + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    // Listed in pages and trimmed like the controllers' watches: at 100,000 BackupRuns one
    // unpaged list is hundreds of MiB of JSON and typed objects, managedFields included, held
    // at once (docs/benchmarks.md, "At 10,000 policies and 100,000 runs").
    let mut stream = trimmed_watch(
        api,
        watcher::Config::default().any_semantic(),
        strip_metadata::<K>,
    )
    .applied_objects()
    .boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(obj) => {
                // Paced by the writer: at most WATCH_QUEUE_LIMIT records held in memory.
                sink.wait_for_room(WATCH_QUEUE_LIMIT).await;
                sink.offer(obj.audit_records(recorded));
            }
            Err(e) => tracing::warn!(error = %e, "audit watch error (retrying)"),
        }
    }
}
