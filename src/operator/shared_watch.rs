//! One watch, one cache, several controllers: for a kind that more than one controller
//! reconciles (BackupPolicies: the policy controller and its automatic validations), so the
//! operator lists and caches it once.
//!
//! Each consumer gets the reference of every object created or changed; the controllers read
//! the objects from the shared [`Store`].

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, unbounded};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::run_watch::{Watched, strip_metadata, trimmed_watch};

/// The cache, one receiver per consumer, and the task feeding them.
pub struct SharedWatch<K: Resource<DynamicType = ()> + 'static> {
    /// Every object of the kind (metadata stripped, [`strip_metadata`]).
    pub store: Store<K>,
    /// References of created or changed objects, one stream per consumer.
    pub consumers: Vec<UnboundedReceiver<ObjectRef<K>>>,
    /// The watch; abort it at shutdown.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts watching every `K` for `consumers` consumers.
pub fn spawn<K>(api: Api<K>, consumers: usize) -> SharedWatch<K>
where
    K: Watched,
{
    let (reader, writer) = reflector::store();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..consumers).map(|_| unbounded()).unzip();
    let kind = K::kind(&()).to_string();
    let events = trimmed_watch(
        api,
        watcher::Config::default().any_semantic(),
        strip_metadata::<K>,
    )
    .reflect(writer)
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(obj) => {
                    let r = ObjectRef::from_obj(&obj);
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
