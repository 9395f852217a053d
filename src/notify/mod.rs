//! Notifications: a policy's `notifications` rules name channels (a generic JSON webhook or a
//! Slack incoming webhook, their URLs in Secrets) and the events each one hears.
//!
//! Delivery happens next to the Kubernetes Event of the same transition, off the reconcile
//! path, with bounded retries ([`deliver::Webhooks::post_json`]), under the operator's egress policy. It is at most once: an operator that
//! dies between the status write and the POST does not send it again after restarting (the
//! status and the Event remain the durable record). A failed delivery becomes a Warning Event
//! `NotificationFailed` on the policy and a `dataguardian_notifications_total` sample with its
//! category; the URL itself never appears anywhere.

pub mod deliver;
pub mod message;

use std::time::Duration;

use crate::api::backup_policy::NotificationRule;
use deliver::{DeliveryError, Webhooks, url_from_secret};
use message::{Notification, rules_for, slack_body, webhook_body};

/// Sends `n` to every rule subscribed to its event; returns each rule's name and outcome.
pub async fn send(
    client: &kube::Client,
    webhooks: &Webhooks,
    rules: &[NotificationRule],
    n: &Notification,
    backoff: Duration,
) -> Vec<(String, Result<(), DeliveryError>)> {
    let mut outcomes = Vec::new();
    for rule in rules_for(rules, n.event) {
        let (selector, body) = match (&rule.webhook, &rule.slack) {
            (Some(w), _) => (&w.url_secret_ref, webhook_body(n)),
            (None, Some(s)) => (&s.webhook_url_secret_ref, slack_body(n)),
            // The CRD refuses a rule without exactly one channel.
            (None, None) => continue,
        };
        let result = match url_from_secret(client, &n.namespace, selector).await {
            Ok(url) => webhooks.post_json(&url, &body, backoff).await,
            Err(e) => Err(e),
        };
        outcomes.push((rule.name.clone(), result));
    }
    outcomes
}
