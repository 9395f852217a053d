//! Watch: resume from a resourceVersion via the event history, `410 Gone` (as an ERROR event)
//! when it is too old, bookmarks, `sendInitialEvents`, label/field selector transitions.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::ops::{State, to_external};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType};
use crate::table::{IncludeObject, table};

/// Watch request parameters.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<u64>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
    /// Namespace (None = all).
    pub namespace: Option<String>,
    /// Render objects as Tables (kubectl get -w).
    pub table: Option<IncludeObject>,
}

struct Filter {
    rd: Arc<ResourceDef>,
    p: WatchParams,
}

impl Filter {
    fn in_scope(&self, ev: &Event) -> bool {
        ev.key.group == self.rd.storage.0
            && ev.key.resource == self.rd.storage.1
            && self
                .p
                .namespace
                .as_deref()
                .is_none_or(|ns| !self.rd.namespaced || ev.key.namespace == ns)
    }

    fn matches(&self, o: &Value) -> bool {
        self.p.labels.matches(o) && self.p.fields.matches(o)
    }

    /// The event type the watcher sees, if any.
    fn translate(&self, ev: &Event) -> Option<&'static str> {
        if !self.in_scope(ev) {
            return None;
        }
        let cur = self.matches(&ev.object);
        match ev.kind {
            EventType::Added => cur.then_some("ADDED"),
            EventType::Deleted => cur.then_some("DELETED"),
            EventType::Modified => {
                let prev = ev.prev.as_ref().map_or(cur, |p| self.matches(p));
                match (prev, cur) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    fn line(&self, type_: &str, stored: &Value, first: &mut bool) -> Bytes {
        let obj = to_external(&self.rd, stored);
        let obj = match self.p.table {
            Some(inc) => {
                let t = table(
                    &self.rd,
                    &[obj],
                    inc,
                    json!({"resourceVersion": stored.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}),
                    *first,
                );
                *first = false;
                t
            }
            None => obj,
        };
        let mut s = json!({"type": type_, "object": obj}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.rd.kind, "apiVersion": self.rd.api_version(), "metadata": md});
        let mut s = json!({"type": "BOOKMARK", "object": obj}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

/// Whether `ev` is the removal of the CRD serving custom resource `rd`.
fn crd_gone(rd: &ResourceDef, ev: &Event) -> bool {
    rd.is_custom()
        && ev.kind == EventType::Deleted
        && ev.key.group == crate::crds::GROUP
        && ev.key.resource == crate::crds::RESOURCE
        && ev.key.name == rd.crd_name()
}

/// Starts a watch; the returned stream yields one JSON event per line.
pub fn watch(
    state: Arc<State>,
    rd: Arc<ResourceDef>,
    p: WatchParams,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, ApiError> {
    let filter = Filter { rd, p };
    let mut first = true;
    let mut initial: Vec<Bytes> = Vec::new();
    let (mut rx, start_rv) = {
        let inner = state.store.lock();
        if state.store.is_stopped() {
            // Stopped while this request was on its way: the watch ends at once.
            let none = futures::stream::iter(Vec::<Bytes>::new().into_iter().map(Ok));
            return Ok(futures::future::Either::Left(none));
        }
        let rx = inner.subscribe();
        let rv_param = filter.p.resource_version.clone().unwrap_or_default();
        let list_initial = rv_param.is_empty() || rv_param == "0" || filter.p.send_initial_events;
        if list_initial {
            let ns = if filter.rd.namespaced {
                filter.p.namespace.as_deref()
            } else {
                None
            };
            for (_, o) in inner.list(&filter.rd.storage.0, &filter.rd.storage.1, ns) {
                if filter.matches(o) {
                    initial.push(filter.line("ADDED", o, &mut first));
                }
            }
            if filter.p.send_initial_events {
                initial.push(filter.bookmark(inner.rv, true));
            }
            (rx, inner.rv)
        } else {
            let n: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param}"))
            })?;
            if n > inner.rv {
                let mut e = ApiError::timeout(format!(
                    "Too large resource version: {n}, current: {}",
                    inner.rv
                ));
                e.causes.push(crate::error::Cause {
                    reason: "ResourceVersionTooLarge".into(),
                    message: "Too large resource version".into(),
                    field: String::new(),
                });
                return Err(e);
            }
            if n < inner.oldest_resumable {
                let status = ApiError::gone(format!(
                    "too old resource version: {n} ({})",
                    inner.oldest_resumable
                ))
                .to_status();
                let mut s = json!({"type": "ERROR", "object": status}).to_string();
                s.push('\n');
                initial.push(Bytes::from(s));
                drop(inner);
                let once = futures::stream::iter(initial.into_iter().map(Ok));
                return Ok(futures::future::Either::Left(once));
            }
            for ev in inner.history.iter().filter(|e| e.rv > n) {
                if let Some(t) = filter.translate(ev) {
                    initial.push(filter.line(t, &ev.object, &mut first));
                }
            }
            (rx, inner.rv.max(n))
        }
    };
    let timeout = Duration::from_secs(filter.p.timeout.unwrap_or(1800));
    let bookmark_every = state.bookmark_interval;
    let s = async_stream::stream! {
        for b in initial {
            yield Ok(b);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        let mut last = start_rv;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last { continue; }
                        if crd_gone(&filter.rd, &ev) {
                            // The CRD went: its resource is no longer served.
                            break;
                        }
                        last = ev.rv;
                        if let Some(t) = filter.translate(&ev) {
                            yield Ok(filter.line(t, &ev.object, &mut first));
                        }
                    }
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                },
                _ = tick.tick(), if filter.p.bookmarks => {
                    yield Ok(filter.bookmark(last, false));
                }
                _ = &mut deadline => break,
            }
        }
    };
    Ok(futures::future::Either::Right(s))
}
