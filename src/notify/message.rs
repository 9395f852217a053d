//! What a notification says, and which of a policy's rules hear it (pure; no I/O).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::api::backup_policy::{NotificationEvent, NotificationRule};
use crate::api::common::DatabaseSpec;

/// One thing that happened, about one object of one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub event: NotificationEvent,
    pub namespace: String,
    /// The BackupPolicy whose rules decide who hears it.
    pub policy: String,
    /// The object it is about: `BackupRun`, `RestoreRun`, `RestoreValidation` or `BackupPolicy`.
    pub kind: String,
    pub name: String,
    /// The machine-readable reason (as in the object's status).
    pub reason: String,
    /// The human-readable message (as in the object's status and Events).
    pub message: String,
    pub time: DateTime<Utc>,
    /// What else is known about it (template variables).
    pub details: Details,
}

/// The template variables an event may know, besides what every notification has.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Details {
    /// The database backed up, restored or validated (`db.shop.svc/shop`).
    pub database: Option<String>,
    /// The BackupRun involved (the run itself, or the one restored or validated).
    pub run: Option<String>,
    /// Artifact size in bytes.
    pub size_bytes: Option<u64>,
    /// How long the run took, in seconds.
    pub duration_seconds: Option<f64>,
    /// Who asked for it (a RestoreRun's recorded requester).
    pub requester: Option<String>,
    /// The W3C trace id of the run's trace.
    pub trace_id: Option<String>,
    /// For a digest: how many identical notifications it stands for, and about which objects.
    pub digest: Option<Digest>,
}

/// Identical failures folded into one message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Digest {
    /// How many notifications were folded (not sent one by one).
    pub count: u32,
    /// The objects they were about (the first few).
    pub names: Vec<String>,
}

impl Notification {
    /// A short description of the object, e.g. `BackupRun shop/nightly-1`.
    pub fn object(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl NotificationEvent {
    /// The name users write in `events:` (and receivers see in `event`).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::BackupSucceeded => "BackupSucceeded",
            NotificationEvent::BackupFailed => "BackupFailed",
            NotificationEvent::RestoreSucceeded => "RestoreSucceeded",
            NotificationEvent::RestoreFailed => "RestoreFailed",
            NotificationEvent::ValidationPassed => "ValidationPassed",
            NotificationEvent::ValidationFailed => "ValidationFailed",
            NotificationEvent::RpoMissed => "RpoMissed",
            NotificationEvent::StorageUnhealthy => "StorageUnhealthy",
            NotificationEvent::RestoreAwaitingApproval => "RestoreAwaitingApproval",
        }
    }

    /// Whether the event is bad news.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            NotificationEvent::BackupFailed
                | NotificationEvent::RestoreFailed
                | NotificationEvent::ValidationFailed
                | NotificationEvent::RpoMissed
                | NotificationEvent::StorageUnhealthy
        )
    }
}

/// The database of `spec` in words (engine, database, host; never credentials), e.g.
/// `postgres shop on db.shop.svc`.
pub fn database_of(spec: &DatabaseSpec) -> Option<String> {
    let (engine, host, database, all) = match (&spec.postgres, &spec.mysql) {
        (Some(p), _) => ("postgres", &p.host, &p.database, p.all_databases),
        (None, Some(m)) => ("mysql", &m.host, &m.database, m.all_databases),
        (None, None) => return None,
    };
    let database = if all.unwrap_or(false) {
        "all databases".to_string()
    } else {
        database
            .clone()
            .unwrap_or_else(|| "(default database)".into())
    };
    Some(match host {
        Some(h) => format!("{engine} {database} on {h}"),
        None => format!("{engine} {database}"),
    })
}

/// The rules of a policy that subscribe to `event`.
pub fn rules_for(rules: &[NotificationRule], event: NotificationEvent) -> Vec<&NotificationRule> {
    rules.iter().filter(|r| r.events.contains(&event)).collect()
}

/// The JSON document a generic webhook receives.
pub fn webhook_body(n: &Notification) -> Value {
    json!({
        "source": "dataguardian",
        "event": n.event.as_str(),
        "severity": if n.event.is_failure() { "warning" } else { "info" },
        "namespace": n.namespace,
        "policy": n.policy,
        "object": {"kind": n.kind, "name": n.name},
        "reason": n.reason,
        "message": n.message,
        "time": n.time.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// The message a Slack incoming webhook receives.
pub fn slack_body(n: &Notification) -> Value {
    let mark = if n.event.is_failure() {
        ":x:"
    } else {
        ":white_check_mark:"
    };
    json!({
        "text": format!(
            "{mark} *{}* {} `{}/{}` (policy `{}`): {}: {}",
            n.event.as_str(),
            n.kind,
            n.namespace,
            n.name,
            n.policy,
            n.reason,
            n.message
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup_policy::{SlackChannel, WebhookChannel};
    use crate::api::common::SecretKeySelector;

    fn n(event: NotificationEvent) -> Notification {
        Notification {
            event,
            namespace: "shop".into(),
            policy: "nightly".into(),
            kind: "BackupRun".into(),
            name: "nightly-1".into(),
            reason: "DumpFailed".into(),
            message: "pg_dump exited 1".into(),
            time: "2026-11-23T02:00:00Z".parse().unwrap(),
            details: Details::default(),
        }
    }

    fn rule(name: &str, events: &[NotificationEvent], slack: bool) -> NotificationRule {
        let secret = SecretKeySelector {
            name: "hooks".into(),
            key: name.into(),
        };
        NotificationRule {
            name: name.into(),
            events: events.to_vec(),
            webhook: (!slack).then(|| WebhookChannel {
                url_secret_ref: secret.clone(),
                authorization_secret_ref: None,
                content_type: None,
            }),
            slack: slack.then_some(SlackChannel {
                webhook_url_secret_ref: secret,
            }),
            teams: None,
            email: None,
            cloud_events: None,
            template: None,
        }
    }

    #[test]
    fn only_subscribed_rules_hear_an_event() {
        use NotificationEvent::*;
        let rules = [
            rule("failures", &[BackupFailed, RpoMissed], false),
            rule("all-backups", &[BackupSucceeded, BackupFailed], true),
        ];
        let names = |e| {
            rules_for(&rules, e)
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(BackupFailed), ["failures", "all-backups"]);
        assert_eq!(names(BackupSucceeded), ["all-backups"]);
        assert_eq!(names(RpoMissed), ["failures"]);
        assert!(names(ValidationPassed).is_empty());
    }

    #[test]
    fn the_webhook_document_names_everything() {
        let body = webhook_body(&n(NotificationEvent::BackupFailed));
        assert_eq!(
            body,
            json!({
                "source": "dataguardian",
                "event": "BackupFailed",
                "severity": "warning",
                "namespace": "shop",
                "policy": "nightly",
                "object": {"kind": "BackupRun", "name": "nightly-1"},
                "reason": "DumpFailed",
                "message": "pg_dump exited 1",
                "time": "2026-11-23T02:00:00Z",
            })
        );
        assert_eq!(
            webhook_body(&n(NotificationEvent::BackupSucceeded))["severity"],
            "info"
        );
    }

    #[test]
    fn the_slack_message_is_one_line_of_text() {
        let body = slack_body(&n(NotificationEvent::BackupFailed));
        assert_eq!(
            body["text"],
            ":x: *BackupFailed* BackupRun `shop/nightly-1` (policy `nightly`): DumpFailed: pg_dump exited 1"
        );
        let ok = slack_body(&n(NotificationEvent::ValidationPassed));
        assert!(
            ok["text"]
                .as_str()
                .unwrap()
                .starts_with(":white_check_mark: *ValidationPassed*")
        );
    }

    #[test]
    fn event_names_match_the_api() {
        for e in [
            NotificationEvent::BackupSucceeded,
            NotificationEvent::BackupFailed,
            NotificationEvent::RestoreSucceeded,
            NotificationEvent::RestoreFailed,
            NotificationEvent::ValidationPassed,
            NotificationEvent::ValidationFailed,
            NotificationEvent::RpoMissed,
            NotificationEvent::StorageUnhealthy,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }
}
