//! The in-memory object store: one cluster-wide resourceVersion counter, a bounded event
//! history for watch resume, and a broadcast channel for live watchers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// Where an object lives: storage group, storage resource, namespace (`""` when cluster-scoped)
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// Storage group.
    pub group: String,
    /// Storage resource (plural).
    pub resource: String,
    /// Namespace or `""`.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as stored in the history and broadcast to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion this change produced.
    pub rv: u64,
    /// The object's key.
    pub key: ObjKey,
    /// Event type.
    pub kind: EventType,
    /// The object after the change (for deletes: the last state, with the delete's RV).
    pub object: Value,
    /// The object before the change (for selector transitions).
    pub prev: Option<Value>,
}

/// Store contents; guarded by one mutex in [`Store`].
#[derive(Debug)]
pub struct Inner {
    /// All objects.
    pub objects: BTreeMap<ObjKey, Value>,
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Recent events, oldest first.
    pub history: VecDeque<Arc<Event>>,
    /// Watches may resume from any RV >= this one.
    pub oldest_resumable: u64,
    history_limit: usize,
    tx: broadcast::Sender<Arc<Event>>,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    inner: std::sync::Mutex<Inner>,
}

impl Store {
    /// An empty store keeping `history_limit` events for watch resume.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            inner: std::sync::Mutex::new(Inner {
                objects: BTreeMap::new(),
                rv: 1,
                history: VecDeque::new(),
                oldest_resumable: 1,
                history_limit: history_limit.max(1),
                tx,
            }),
        }
    }

    /// Locks the store.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Allocates the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Records an event produced at `rv` (which must be the latest allocated).
    pub fn emit(
        &mut self,
        rv: u64,
        key: ObjKey,
        kind: EventType,
        object: Value,
        prev: Option<Value>,
    ) {
        let ev = Arc::new(Event {
            rv,
            key,
            kind,
            object,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_resumable = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// Stores `obj` under `key` with a new RV and emits ADDED/MODIFIED; returns the stored object.
    pub fn put(&mut self, key: ObjKey, mut obj: Value) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let prev = self.objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(rv, key, kind, obj.clone(), prev);
        obj
    }

    /// Removes the object under `key` with a new RV and emits DELETED; returns its last state.
    pub fn remove(&mut self, key: &ObjKey) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.emit(rv, key.clone(), EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// Objects of one storage resource, optionally in one namespace.
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| {
            k.group == group
                && k.resource == resource
                && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }
}
