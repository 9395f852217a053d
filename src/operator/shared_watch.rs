//! One watch, one cache, several controllers: for a kind that more than one controller
//! reconciles (BackupPolicies: the policy controller and its automatic validations), so the
//! operator lists and caches it once.
//!
//! Each consumer gets the reference of every object created or changed; the controllers read
//! the objects from the shared [`Store`]. The cache is filled on every replica (a follower keeps
//! it so that it can take over at once); the consumers hear of changes only while `act` is true
//! (this replica leads), and when it turns true each consumer is sent every cached object once.

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, unbounded};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::health::Synced;
use super::run_watch::{Watched, marking_synced, strip_metadata, trimmed_watch};

/// The cache, one receiver per consumer, and the task feeding them.
pub struct SharedWatch<K: Resource<DynamicType = ()> + 'static> {
    /// Every object of the kind (metadata stripped, [`strip_metadata`]).
    pub store: Store<K>,
    /// References of created or changed objects, one stream per consumer.
    pub consumers: Vec<UnboundedReceiver<ObjectRef<K>>>,
    /// The watch; abort it at shutdown.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts watching every `K` for `consumers` consumers, who hear of changes while `act` is
/// true.
pub fn spawn<K>(
    client: kube::Client,
    consumers: usize,
    mut act: tokio::sync::watch::Receiver<bool>,
    synced: Synced,
) -> SharedWatch<K>
where
    K: Watched,
{
    let (reader, writer) = reflector::store();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..consumers).map(|_| unbounded()).unzip();
    let kind = K::kind(&()).to_string();
    let events = marking_synced(
        trimmed_watch(
            client,
            watcher::Config::default().any_semantic(),
            strip_metadata::<K>,
        ),
        synced,
    )
    .reflect(writer)
    .applied_objects();
    let store = reader.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        let mut acting = *act.borrow_and_update();
        loop {
            let event = tokio::select! {
                changed = act.changed(), if !acting => {
                    if changed.is_err() {
                        return;
                    }
                    acting = *act.borrow_and_update();
                    if acting {
                        for obj in store.state() {
                            let r = reference(obj.as_ref());
                            for tx in &senders {
                                let _ = tx.unbounded_send(r.clone());
                            }
                        }
                    }
                    continue;
                }
                event = events.next() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            match event {
                Ok(_) if !acting => {}
                Ok(obj) => {
                    let r = reference(&obj);
                    for tx in &senders {
                        // A closed receiver is a controller that stopped (shutdown).
                        let _ = tx.unbounded_send(r.clone());
                    }
                }
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    });
    SharedWatch {
        store: reader,
        consumers: receivers,
        task,
    }
}

/// The reference a consumer gets: namespace and name only. (`ObjectRef::from_obj` also copies
/// the uid and resourceVersion, two more strings per queued reference, which the controllers'
/// queues neither compare nor read: with 10,000 objects at a start, each consumer is sent
/// every one.)
fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectRef<K> {
    let meta = obj.meta();
    let r = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(ns) => r.within(ns),
        None => r,
    }
}
