//! Kubernetes Events the Job controller and the kubelet emit (events.k8s.io/v1 through
//! kube-runtime's recorder, which aggregates repeats into series like client-go does).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::debug;

/// An event recorder for one component.
#[derive(Clone)]
pub(crate) struct Events {
    recorder: Recorder,
}

impl Events {
    /// A recorder reporting as `controller` (instance `instance`).
    pub fn new(client: kube::Client, controller: &str, instance: Option<&str>) -> Self {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: controller.into(),
                    instance: instance.map(Into::into),
                },
            ),
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
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, regarding).await {
            debug!(error = %e, reason, "cannot publish event");
        }
    }
}
