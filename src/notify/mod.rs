//! Notifications: a policy's `notifications` rules name a channel — a generic webhook (JSON, or
//! the rule's own body template: SMS and WhatsApp gateways), Slack, Microsoft Teams (an
//! Adaptive Card), e-mail over SMTP, or CloudEvents 1.0 — and the events it hears. Secrets
//! (URLs with tokens, SMTP passwords, `Authorization` values) are read from their Secrets at
//! each attempt and never appear in a body, a log line, an Event, a status or a metric.
//!
//! - What is said: [`template`] (minijinja; defaults say what happened, to which database, why,
//!   and the next command) and [`channels`] (the bodies).
//! - Delivery is at least once ([`outbox`]): each notification is recorded in the policy's
//!   status before it is sent and removed after; an operator restart sends what is still
//!   recorded again, with the same idempotency key (`Idempotency-Key` header, CloudEvents `id`,
//!   the mail's Message-ID). Attempts back off with jitter and honour `Retry-After`
//!   ([`deliver`]); a storm of identical failures is folded into one message and a digest.
//! - Everything goes through the operator's egress policy ([`crate::egress`]): HTTP channels
//!   through its checked connector and proxy settings, SMTP by checking the server's resolved
//!   address ([`email`]).
//!
//! A failed delivery becomes a Warning Event `NotificationFailed` on the policy (a template
//! error: `NotificationTemplateInvalid`) and a `dataguardian_notifications_total` sample with
//! its category.

pub mod channels;
pub mod deliver;
pub mod email;
pub mod message;
pub mod outbox;
pub mod template;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::api::backup_policy::NotificationRule;
use deliver::{
    ATTEMPTS, DeliveryError, HttpRequest, SecretSource, Webhooks, backoff_delay, url_from_secret,
};
use message::Notification;
use template::render;

/// The header carrying the idempotency key on every HTTP channel.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Sends `n` to `rule`'s channel with idempotency key `key`, retrying (see [`deliver`]).
/// Returns the number of attempts made.
pub async fn deliver(
    client: &impl SecretSource,
    webhooks: &Webhooks,
    rule: &NotificationRule,
    n: &Notification,
    key: &str,
    backoff: Duration,
) -> Result<u32, DeliveryError> {
    let rendered = render(rule, n, key)?;
    let ns = n.namespace.as_str();
    let http = |body: &serde_json::Value| HttpRequest::json(body);
    let (selector, request) = if let Some(w) = &rule.webhook {
        let mut request = if rendered.custom_body {
            HttpRequest {
                body: rendered.body.clone().into(),
                content_type: w
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".into()),
                headers: Vec::new(),
            }
        } else {
            http(&channels::webhook(n, key, &rendered))
        };
        if let Some(auth) = &w.authorization_secret_ref {
            let value = client.value(ns, &auth.name, &auth.key).await?;
            let value = hyper::header::HeaderValue::from_str(&value).map_err(|_| {
                DeliveryError::InvalidHeader {
                    secret: auth.name.clone(),
                    key: auth.key.clone(),
                }
            })?;
            let mut value = value;
            value.set_sensitive(true);
            request.headers.push((hyper::header::AUTHORIZATION, value));
        }
        (&w.url_secret_ref, request)
    } else if let Some(s) = &rule.slack {
        let templated = rule.template.is_some();
        (
            &s.webhook_url_secret_ref,
            http(&channels::slack(n, key, &rendered, templated)),
        )
    } else if let Some(t) = &rule.teams {
        (
            &t.webhook_url_secret_ref,
            http(&channels::teams_card(n, key, &rendered)),
        )
    } else if let Some(c) = &rule.cloud_events {
        let mut request = http(&channels::cloudevent(n, key, &rendered));
        request.content_type = channels::CLOUDEVENTS_CONTENT_TYPE.into();
        (&c.url_secret_ref, request)
    } else if let Some(e) = &rule.email {
        return send_mail(client, webhooks, e, n, key, &rendered, backoff).await;
    } else {
        // The CRD refuses a rule without exactly one channel.
        return Err(DeliveryError::NoChannel);
    };
    let url = url_from_secret(client, ns, selector).await?;
    let request = request.with_header(IDEMPOTENCY_HEADER, key);
    webhooks.post(&url, &request, backoff).await
}

async fn send_mail(
    client: &impl SecretSource,
    webhooks: &Webhooks,
    e: &crate::api::backup_policy::EmailChannel,
    n: &Notification,
    key: &str,
    rendered: &template::Rendered,
    backoff: Duration,
) -> Result<u32, DeliveryError> {
    let ns = n.namespace.as_str();
    let credentials = match &e.credentials_secret_ref {
        Some(r) => Some((
            client.value(ns, &r.name, "username").await?,
            client.value(ns, &r.name, "password").await?,
        )),
        None => None,
    };
    let ca_pem = match &e.ca_secret_ref {
        Some(r) => Some(client.value(ns, &r.name, &r.key).await?.into_bytes()),
        None => None,
    };
    let server = email::SmtpServer {
        host: e.host.clone(),
        port: e.port.unwrap_or_else(|| email::default_port(e.tls)),
        tls: e.tls,
        credentials,
        ca_pem,
    };
    let mail = email::Mail {
        from: e.from.clone(),
        to: e.to.clone(),
        subject: rendered.subject.clone(),
        body: rendered.body.clone(),
        key: key.to_string(),
        event: n.event.as_str().to_string(),
    };
    send_mail_retrying(webhooks.policy(), &server, &mail, backoff).await
}

/// [`email::send`] with the same retry rules as the HTTP channels (temporary SMTP refusals
/// and transport failures are retried).
pub async fn send_mail_retrying(
    policy: &crate::egress::EgressPolicy,
    server: &email::SmtpServer,
    mail: &email::Mail,
    backoff: Duration,
) -> Result<u32, DeliveryError> {
    let mut attempt = 1;
    loop {
        match email::send(policy, server, mail).await {
            Ok(()) => return Ok(attempt),
            Err(e) => {
                let e = e.after(attempt);
                if !e.is_retryable() || attempt >= ATTEMPTS {
                    return Err(e);
                }
                tokio::time::sleep(backoff_delay(backoff, attempt, None)).await;
                attempt += 1;
            }
        }
    }
}
