//! The object store: one cluster-wide resourceVersion counter, a bounded event history for
//! watch resume, and a broadcast channel for live watchers. Optionally persistent, as etcd is
//! for kube-apiserver: every write is appended to a journal (`store.jsonl` in the state
//! directory) and a restarted server reloads the objects with their resourceVersions and uids.
//! The event history is not kept: after a restart a watch from an older resourceVersion gets
//! `410 Gone` (as from a fresh kube-apiserver watch cache), and clients relist.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
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
    /// Set by a write the garbage collector or the namespace controller may have to act on (a
    /// removal, a namespace, an object with owners or being deleted); cleared by their pass.
    /// Like the real controllers, they react to such changes instead of rescanning the whole
    /// store after every write (which, with 10,000s of objects, held the store lock for a
    /// noticeable time on every status update).
    pub gc_dirty: bool,
    /// Objects with a non-empty `metadata.ownerReferences` (the garbage collector's dependents).
    pub owned: BTreeSet<ObjKey>,
    /// Objects with a `metadata.deletionTimestamp`.
    pub deleting: BTreeSet<ObjKey>,
    /// uid -> key of every object.
    pub uids: HashMap<String, ObjKey>,
    history_limit: usize,
    tx: broadcast::Sender<Arc<Event>>,
    journal: Option<Journal>,
}

/// The name of the journal file in the state directory.
pub const JOURNAL_FILE: &str = "store.jsonl";

/// One journal line: a write (`key` + `object`), a removal (`key` alone) or, first in a
/// compacted journal, the resourceVersion counter alone.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    rv: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<(String, String, String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<Value>,
}

impl Record {
    fn key(key: &ObjKey) -> Option<(String, String, String, String)> {
        Some((
            key.group.clone(),
            key.resource.clone(),
            key.namespace.clone(),
            key.name.clone(),
        ))
    }
}

/// The append-only journal of a persistent store. Each record is written with one `write`
/// call on an `O_APPEND` file, so a killed server (SIGKILL) loses nothing it acknowledged;
/// a record torn by a machine crash is the last line and is dropped on load.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes appended since the last compaction.
    appended: u64,
    /// Size of the journal right after the last compaction.
    compacted: u64,
}

/// Errors opening a persistent store.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the journal failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The journal.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A record other than the last one does not parse (the journal was damaged).
    #[error("{path} line {line}: {detail}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Parser message.
        detail: String,
    },
}

/// The store.
#[derive(Debug)]
pub struct Store {
    inner: std::sync::Mutex<Inner>,
    /// Set when the server stops: from then on requests are refused and watches end.
    stopped: std::sync::atomic::AtomicBool,
    /// Requests being handled (see [`Store::begin_request`]).
    in_flight: std::sync::atomic::AtomicUsize,
}

/// A request being handled by a running server; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Store);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
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
                gc_dirty: false,
                owned: BTreeSet::new(),
                deleting: BTreeSet::new(),
                uids: HashMap::new(),
                history_limit: history_limit.max(1),
                tx,
                journal: None,
            }),
            stopped: std::sync::atomic::AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Registers a request; `None` once the server stopped (a stopped kube-apiserver answers
    /// nothing: requests still arriving on connections opened before must not read or write
    /// this store, whose successor may already be serving).
    pub fn begin_request(&self) -> Option<InFlight<'_>> {
        use std::sync::atomic::Ordering::SeqCst;
        self.in_flight.fetch_add(1, SeqCst);
        let guard = InFlight(self);
        (!self.stopped.load(SeqCst)).then_some(guard)
    }

    /// Whether the server stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops serving: later requests are refused, live watches end, and this waits (up to
    /// `wait`) for the requests being handled to finish, so that every write a client was
    /// told about is in the journal before a successor loads it.
    pub fn stop(&self, wait: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        {
            let mut inner = self.lock();
            self.stopped.store(true, SeqCst);
            inner.close_watches();
        }
        let deadline = std::time::Instant::now() + wait;
        while self.in_flight.load(SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A persistent store journaled in `{dir}/store.jsonl`: the objects of an existing journal
    /// are loaded (with their resourceVersions, uids and the resourceVersion counter), the
    /// journal is compacted, and every later write is appended to it. Watches resume only
    /// from the loaded resourceVersion on (older ones get `410 Gone`).
    pub fn open(history_limit: usize, dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let store = Store::new(history_limit);
        {
            let mut inner = store.lock();
            let (objects, rv) = load_journal(&path)?;
            inner.rv = inner.rv.max(rv);
            for (key, obj) in &objects {
                inner.index(key, Some(obj));
            }
            inner.objects = objects;
            inner.oldest_resumable = inner.rv;
            inner.gc_dirty = !inner.objects.is_empty();
            let (file, compacted) = write_compacted(&path, inner.rv, &inner.objects)?;
            inner.journal = Some(Journal {
                path,
                file,
                appended: 0,
                compacted,
            });
        }
        Ok(store)
    }

    /// Locks the store.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether writing `obj` can give the garbage collector or the namespace controller work: a
/// namespace (default ServiceAccount, termination), an object with ownerReferences (its owner
/// may be gone or going) or one being deleted (orphan/foreground finalizers). Removals always
/// count.
fn gc_relevant(key: &ObjKey, obj: &Value) -> bool {
    let meta = &obj["metadata"];
    (key.group.is_empty() && key.resource == "namespaces")
        || crate::auth::controllers::watches(key)
        || meta.get("deletionTimestamp").is_some_and(|v| !v.is_null())
        || meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

/// Reads the objects and the last resourceVersion of the journal at `path` (none: empty).
fn load_journal(path: &Path) -> Result<(BTreeMap<ObjKey, Value>, u64), JournalError> {
    let mut objects = BTreeMap::new();
    let mut rv = 0;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((objects, rv)),
        Err(source) => {
            return Err(JournalError::Io {
                what: "opening",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| JournalError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = match serde_json::from_str(line) {
            Ok(r) => r,
            // A torn last record: the write it belonged to was never acknowledged.
            Err(_) if i + 1 == last => break,
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: i + 1,
                    detail: e.to_string(),
                });
            }
        };
        rv = rv.max(rec.rv);
        if let Some((group, resource, namespace, name)) = rec.key {
            let key = ObjKey {
                group,
                resource,
                namespace,
                name,
            };
            match rec.object {
                Some(obj) => {
                    objects.insert(key, obj);
                }
                None => {
                    objects.remove(&key);
                }
            }
        }
    }
    Ok((objects, rv))
}

/// Writes a journal holding the counter `rv` and `objects` next to `path`, moves it over
/// `path` and returns it opened for appending, with its size.
fn write_compacted(
    path: &Path,
    rv: u64,
    objects: &BTreeMap<ObjKey, Value>,
) -> Result<(std::fs::File, u64), JournalError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| JournalError::Io { what, path, source }
    };
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io("creating"))?);
        let mut line = |rec: &Record| -> std::io::Result<()> {
            serde_json::to_writer(&mut out, rec)?;
            out.write_all(b"\n")
        };
        line(&Record {
            rv,
            key: None,
            object: None,
        })
        .map_err(io("writing"))?;
        for (key, obj) in objects {
            let obj_rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(rv);
            line(&Record {
                rv: obj_rv,
                key: Record::key(key),
                object: Some(obj.clone()),
            })
            .map_err(io("writing"))?;
        }
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(io("writing"))?;
    }
    std::fs::rename(&tmp, path).map_err(io("replacing"))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io("opening"))?;
    let size = file.metadata().map_err(io("reading"))?.len();
    Ok((file, size))
}

/// A journal is compacted once what was appended since the last compaction exceeds this, or
/// three times the compacted size if that is more (every status update appends a whole
/// object: without compaction the file would grow with every progress report).
const COMPACT_AFTER_BYTES: u64 = 32 << 20;

impl Inner {
    /// Appends a write (`object` set) or a removal to the journal of a persistent store, and
    /// compacts the journal when it has grown well past the live objects.
    fn journal(&mut self, rv: u64, key: &ObjKey, object: Option<&Value>) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let rec = Record {
            rv,
            key: Record::key(key),
            object: object.cloned(),
        };
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = j.file.write_all(&line) {
            tracing::error!(path = %j.path.display(), error = %e, "kube-sim: writing the store journal failed");
        }
        j.appended += line.len() as u64;
        if j.appended > COMPACT_AFTER_BYTES.max(j.compacted * 3) {
            let path = j.path.clone();
            match write_compacted(&path, self.rv, &self.objects) {
                Ok((file, compacted)) => {
                    self.journal = Some(Journal {
                        path,
                        file,
                        appended: 0,
                        compacted,
                    })
                }
                Err(e) => {
                    tracing::error!(error = %e, "kube-sim: compacting the store journal failed")
                }
            }
        }
    }

    /// Whether this store is journaled (objects survive a restart).
    pub fn persistent(&self) -> bool {
        self.journal.is_some()
    }

    /// Ends every live watch (their streams see the channel closed), as a stopping
    /// kube-apiserver ends its watch responses; later watchers subscribe to a new channel.
    pub fn close_watches(&mut self) {
        let (tx, _) = broadcast::channel(4096);
        self.tx = tx;
    }

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
        if gc_relevant(&key, &obj) {
            self.gc_dirty = true;
        }
        self.index(&key, Some(&obj));
        let prev = self.objects.insert(key.clone(), obj.clone());
        // After the insert: a compaction the append triggers writes the store as it now is.
        self.journal(rv, &key, Some(&obj));
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
        self.gc_dirty = true;
        self.index(key, None);
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str)
            && self.uids.get(uid) == Some(key)
        {
            self.uids.remove(uid);
        }
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.journal(rv, key, None);
        self.emit(rv, key.clone(), EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// Objects of one storage resource, optionally in one namespace, in key order (a range of
    /// the store, not a scan).
    pub fn list<'a>(
        &'a self,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        let start = ObjKey {
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.group == group
                && k.resource == resource
                && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    /// Like [`Store::list`], starting after the object `after` = (namespace, name): the next
    /// page of a paginated list, found by a seek as etcd does, not by skipping every object
    /// before it (with 100,000 objects in pages of 50 that skipping was quadratic).
    pub fn list_after<'a>(
        &'a self,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
        after: (&str, &str),
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        use std::ops::Bound;
        let (after_ns, after_name) = after;
        // A key before the namespace starts at the namespace's first object (one after it
        // leaves nothing: the range ends at once).
        let from = match namespace {
            Some(ns) if after_ns < ns => Bound::Included(ObjKey {
                group: group.to_string(),
                resource: resource.to_string(),
                namespace: ns.to_string(),
                name: String::new(),
            }),
            _ => Bound::Excluded(ObjKey {
                group: group.to_string(),
                resource: resource.to_string(),
                namespace: after_ns.to_string(),
                name: after_name.to_string(),
            }),
        };
        self.objects
            .range((from, Bound::Unbounded))
            .take_while(move |(k, _)| {
                k.group == group
                    && k.resource == resource
                    && namespace.is_none_or(|ns| k.namespace == ns)
            })
    }

    /// Keeps the garbage collector's indexes in step with `obj` (now stored under `key`, or
    /// `None`: removed).
    fn index(&mut self, key: &ObjKey, obj: Option<&Value>) {
        let meta = obj.map(|o| &o["metadata"]);
        let has_owners = meta
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let deleting = meta
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some_and(|v| !v.is_null());
        if has_owners {
            self.owned.insert(key.clone());
        } else {
            self.owned.remove(key);
        }
        if deleting {
            self.deleting.insert(key.clone());
        } else {
            self.deleting.remove(key);
        }
        if let Some(uid) = meta.and_then(|m| m.get("uid")).and_then(Value::as_str)
            && self.uids.get(uid) != Some(key)
        {
            self.uids.insert(uid.to_string(), key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(resource: &str, ns: &str, name: &str) -> ObjKey {
        ObjKey {
            group: "g".into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn list_is_a_range_of_one_resource_and_namespace() {
        let store = Store::new(10);
        let mut s = store.lock();
        for (res, ns, name) in [
            ("a", "n1", "x"),
            ("b", "n1", "x"),
            ("b", "n1", "y"),
            ("b", "n2", "x"),
            ("c", "n1", "x"),
        ] {
            s.put(key(res, ns, name), json!({"metadata": {"name": name}}));
        }
        let names = |ns: Option<&str>| {
            s.list("g", "b", ns)
                .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(None), ["n1/x", "n1/y", "n2/x"]);
        assert_eq!(names(Some("n1")), ["n1/x", "n1/y"]);
        assert_eq!(names(Some("n3")), Vec::<String>::new());
        assert_eq!(s.list("g", "z", None).count(), 0);
    }

    #[test]
    fn a_next_page_starts_right_after_its_continue_key() {
        let store = Store::new(10);
        let mut s = store.lock();
        for (res, ns, name) in [
            ("a", "n1", "z"),
            ("b", "n1", "x"),
            ("b", "n1", "y"),
            ("b", "n2", "a"),
            ("b", "n2", "x"),
            ("c", "n0", "a"),
        ] {
            s.put(key(res, ns, name), json!({"metadata": {"name": name}}));
        }
        let after = |ns: Option<&str>, from: (&str, &str)| {
            s.list_after("g", "b", ns, from)
                .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
                .collect::<Vec<_>>()
        };
        // Across namespaces (an all-namespaces list), never past the resource.
        assert_eq!(after(None, ("n1", "x")), ["n1/y", "n2/a", "n2/x"]);
        assert_eq!(after(None, ("n1", "y")), ["n2/a", "n2/x"]);
        assert_eq!(after(None, ("n2", "x")), Vec::<String>::new());
        // A key between objects, and one before the first.
        assert_eq!(after(None, ("n1", "xa")), ["n1/y", "n2/a", "n2/x"]);
        assert_eq!(after(None, ("", "")), ["n1/x", "n1/y", "n2/a", "n2/x"]);
        // Within one namespace.
        assert_eq!(after(Some("n2"), ("n2", "a")), ["n2/x"]);
        // A token of an earlier namespace starts the namespace from its first object; one of
        // a later namespace leaves nothing.
        assert_eq!(after(Some("n2"), ("n1", "y")), ["n2/a", "n2/x"]);
        assert_eq!(after(Some("n1"), ("n2", "a")), Vec::<String>::new());
    }

    #[test]
    fn gc_indexes_follow_writes_and_removals() {
        let store = Store::new(10);
        let mut s = store.lock();
        let (owner, dep) = (key("a", "n", "owner"), key("b", "n", "dep"));
        s.put(
            owner.clone(),
            json!({"metadata": {"name": "owner", "uid": "u1"}}),
        );
        assert!(!s.gc_dirty, "a plain object gives the GC no work");
        s.put(
            dep.clone(),
            json!({"metadata": {"name": "dep", "uid": "u2", "ownerReferences": [{"uid": "u1"}]}}),
        );
        assert!(s.gc_dirty);
        assert!(s.owned.contains(&dep) && !s.owned.contains(&owner));
        assert_eq!(s.uids.get("u1"), Some(&owner));
        s.gc_dirty = false;
        s.put(
            owner.clone(),
            json!({"metadata": {"name": "owner", "uid": "u1", "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert!(s.gc_dirty && s.deleting.contains(&owner));
        s.gc_dirty = false;
        s.put(
            dep.clone(),
            json!({"metadata": {"name": "dep", "uid": "u2"}}),
        );
        assert!(!s.owned.contains(&dep), "ownerReferences removed");
        s.remove(&owner);
        assert!(s.gc_dirty);
        assert!(!s.deleting.contains(&owner) && !s.uids.contains_key("u1"));
        assert_eq!(s.uids.get("u2"), Some(&dep));
    }
}
