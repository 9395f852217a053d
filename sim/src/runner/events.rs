//! Kubernetes Events the runner's controllers and the kubelet emit (events.k8s.io/v1).
//!
//! Like client-go's event recorder, an event that repeats an earlier one exactly (same object,
//! type, reason, action and note) within 6 minutes becomes a series (`series.count`,
//! `lastObservedTime`) instead of a new object; events that differ in their note are separate
//! objects. (kube-runtime's `Recorder` folds every event with the same reason and action into
//! the first one's series, so "Created pod: b" would show as "Created pod: a".)

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;
use tracing::debug;

const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

type Key = (String, String, bool, String, String, String);
/// A published event: its name, how often it occurred, when last.
type Seen = HashMap<Key, (String, i32, Timestamp)>;

/// An event recorder for one component.
#[derive(Clone)]
pub(crate) struct Events {
    client: kube::Client,
    controller: String,
    instance: String,
    /// Published events by identity: (event name, count, last seen).
    seen: Arc<Mutex<Seen>>,
}

impl Events {
    /// A recorder reporting as `controller` (instance `instance`, else the controller name).
    pub fn new(client: kube::Client, controller: &str, instance: Option<&str>) -> Self {
        Events {
            client,
            controller: controller.into(),
            instance: instance.unwrap_or(controller).into(),
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Publishes an event about `regarding`; failures are only logged (events are best effort).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let now = Timestamp::now();
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key: Key = (
            regarding.uid.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default(),
            warning,
            reason.into(),
            action.into(),
            note.clone(),
        );
        let mut seen = self.seen.lock().await;
        seen.retain(|_, (_, _, last)| *last + SERIES_WINDOW > now);
        if let Some((name, count, last)) = seen.get_mut(&key) {
            *count += 1;
            *last = now;
            let patch = serde_json::json!({"series": EventSeries {
                count: *count,
                last_observed_time: MicroTime(now),
            }});
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                debug!(error = %e, reason, "cannot update event series");
            }
            return;
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(key, (name, 1, now));
            }
            Err(e) => debug!(error = %e, reason, "cannot publish event"),
        }
    }
}
