//! The request bodies of the HTTP channels (pure; no I/O): Microsoft Teams Adaptive Cards,
//! CloudEvents 1.0 structured JSON, Slack and the generic webhook.

use serde_json::{Value, json};

use super::message::{Notification, webhook_body};
use super::template::{Rendered, vars};

/// `Content-Type` of a CloudEvents structured-mode request.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// The CloudEvents `source` prefix (the policy's API path follows).
pub const CLOUDEVENTS_SOURCE: &str = "/apis/dataguardian.io/v1alpha1";

/// The CloudEvents `type` of an event: `io.dataguardian.backup.failed`, …
pub fn cloudevents_type(n: &Notification) -> String {
    use crate::api::backup_policy::NotificationEvent::*;
    let t = match n.event {
        BackupSucceeded => "backup.succeeded",
        BackupFailed => "backup.failed",
        RestoreSucceeded => "restore.succeeded",
        RestoreFailed => "restore.failed",
        ValidationPassed => "validation.passed",
        ValidationFailed => "validation.failed",
        RpoMissed => "policy.rpo_missed",
        StorageUnhealthy => "policy.storage_unhealthy",
        RestoreAwaitingApproval => "restore.awaiting_approval",
    };
    format!("io.dataguardian.{t}")
}

/// The API plural of a kind (for CloudEvents `subject`).
fn plural(kind: &str) -> String {
    match kind {
        "BackupPolicy" => "backuppolicies".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

/// A CloudEvents 1.0 event in structured JSON mode. `id` is the idempotency key: a receiver
/// that sees the same `source` + `id` twice has seen the same event.
pub fn cloudevent(n: &Notification, id: &str, r: &Rendered) -> Value {
    let mut data = webhook_body(n);
    let v = vars(n, id);
    data["id"] = json!(id);
    data["subject"] = json!(r.subject);
    data["text"] = json!(r.body);
    data["nextCommand"] = json!(v.next_command);
    data["details"] = details(&v);
    let mut ev = json!({
        "specversion": "1.0",
        "id": id,
        "source": format!(
            "{CLOUDEVENTS_SOURCE}/namespaces/{}/backuppolicies/{}",
            n.namespace, n.policy
        ),
        "type": cloudevents_type(n),
        "subject": format!("{}/{}", plural(&n.kind), n.name),
        "time": v.time,
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(trace) = &n.details.trace_id {
        // The Distributed Tracing extension wants a whole traceparent; the trace id is what
        // is known, so it goes in an extension attribute of its own.
        ev["dgtraceid"] = json!(trace);
    }
    ev
}

fn details(v: &super::template::Vars) -> Value {
    let mut d = serde_json::Map::new();
    let mut put = |k: &str, val: Value| {
        if !val.is_null() {
            d.insert(k.to_string(), val);
        }
    };
    put("run", json!(v.run));
    put("database", json!(v.database));
    put("sizeBytes", json!(v.size_bytes));
    put("durationSeconds", json!(v.duration_seconds));
    put("requester", json!(v.requester));
    put("traceId", json!(v.trace_id));
    if let Some(g) = &v.digest {
        put("digest", json!({"count": g.count, "names": g.names}));
    }
    Value::Object(d)
}

/// A Microsoft Teams workflow ("When a Teams webhook request is received") message: one
/// Adaptive Card with the subject as title, the body as text, the facts and the next command.
pub fn teams_card(n: &Notification, id: &str, r: &Rendered) -> Value {
    let v = vars(n, id);
    let mut facts = vec![
        json!({"title": "Event", "value": v.event}),
        json!({"title": "Object", "value": format!("{} {}/{}", v.kind, v.namespace, v.name)}),
        json!({"title": "Policy", "value": v.policy}),
    ];
    if let Some(db) = &v.database {
        facts.push(json!({"title": "Database", "value": db}));
    }
    facts.push(json!({"title": "Reason", "value": v.reason}));
    if let Some(s) = &v.size {
        facts.push(json!({"title": "Size", "value": s}));
    }
    if let Some(d) = &v.duration {
        facts.push(json!({"title": "Duration", "value": d}));
    }
    if let Some(who) = &v.requester {
        facts.push(json!({"title": "Requested by", "value": who}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": [
                    {
                        "type": "TextBlock",
                        "text": r.subject,
                        "weight": "Bolder",
                        "size": "Medium",
                        "wrap": true,
                        "color": if v.failed { "Attention" } else { "Good" },
                    },
                    {"type": "TextBlock", "text": r.body, "wrap": true},
                    {"type": "FactSet", "facts": facts},
                    {"type": "TextBlock", "text": "Next:", "weight": "Bolder", "spacing": "Medium"},
                    {"type": "TextBlock", "text": v.next_command, "fontType": "Monospace", "wrap": true},
                ],
            },
        }],
    })
}

/// The Slack message: with a rule template, the subject in bold and the body; otherwise one
/// line saying what happened, and the next command.
pub fn slack(n: &Notification, id: &str, r: &Rendered, templated: bool) -> Value {
    if templated {
        return json!({"text": format!("*{}*\n{}", r.subject, r.body)});
    }
    let mut body = super::message::slack_body(n);
    let next = vars(n, id).next_command;
    if let Some(text) = body["text"].as_str() {
        body["text"] = json!(format!("{text}\nNext: `{next}`"));
    }
    body
}

/// The generic webhook's JSON document: the fields it always had, plus the idempotency key,
/// the rendered subject and text, and the details.
pub fn webhook(n: &Notification, id: &str, r: &Rendered) -> Value {
    let v = vars(n, id);
    let mut body = webhook_body(n);
    body["id"] = json!(id);
    body["subject"] = json!(r.subject);
    body["text"] = json!(r.body);
    body["nextCommand"] = json!(v.next_command);
    body["details"] = details(&v);
    body
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::backup_policy::NotificationEvent;
    use crate::notify::message::Details;

    fn n() -> Notification {
        Notification {
            event: NotificationEvent::BackupFailed,
            namespace: "shop".into(),
            policy: "nightly".into(),
            kind: "BackupRun".into(),
            name: "nightly-1".into(),
            reason: "DumpFailed".into(),
            message: "pg_dump exited 1".into(),
            time: "2026-11-23T02:00:00Z".parse().unwrap(),
            details: Details {
                database: Some("postgres shop on db.shop.svc".into()),
                size_bytes: Some(2048),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                ..Details::default()
            },
        }
    }

    fn rendered() -> Rendered {
        Rendered {
            subject: "Backup failed".into(),
            body: "the body".into(),
            custom_body: false,
        }
    }

    /// The CloudEvents 1.0 JSON schema (tests/schemas, written from the specification),
    /// formats (`date-time`, `uri-reference`) checked.
    pub(crate) fn cloudevents_schema() -> jsonschema::Validator {
        let schema: Value =
            serde_json::from_str(include_str!("../../tests/schemas/cloudevents-1.0.json")).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    }

    #[test]
    fn a_cloudevent_is_valid_against_the_specification_schema() {
        let schema = cloudevents_schema();
        let ev = cloudevent(&n(), "0b8e-key", &rendered());
        let errors: Vec<String> = schema.iter_errors(&ev).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{ev:#}");
        assert_eq!(ev["id"], "0b8e-key");
        assert_eq!(ev["type"], "io.dataguardian.backup.failed");
        assert_eq!(
            ev["source"],
            "/apis/dataguardian.io/v1alpha1/namespaces/shop/backuppolicies/nightly"
        );
        assert_eq!(ev["subject"], "backupruns/nightly-1");
        assert_eq!(ev["data"]["details"]["sizeBytes"], 2048);
        // The schema really checks: a document without `specversion` fails it.
        let mut bad = ev.clone();
        bad.as_object_mut().unwrap().remove("specversion");
        assert!(!schema.is_valid(&bad));
        for (field, value) in [
            ("id", json!("")),
            ("time", json!("yesterday")),
            ("specversion", json!("0.3")),
            ("Bad_Extension", json!("x")),
            ("data_base64", json!("aGk=")),
        ] {
            let mut bad = ev.clone();
            bad[field] = value;
            assert!(!schema.is_valid(&bad), "{field} accepted");
        }
    }

    #[test]
    fn a_teams_message_is_one_adaptive_card() {
        let card = teams_card(&n(), "k", &rendered());
        assert_eq!(card["type"], "message");
        let a = &card["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        let body = a["content"]["body"].as_array().unwrap();
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(body[0]["text"], "Backup failed");
        assert_eq!(body[0]["color"], "Attention");
        assert_eq!(body[1]["text"], "the body");
        let facts = body[2]["facts"].as_array().unwrap();
        assert!(facts.contains(&json!({"title": "Size", "value": "2.0 KiB"})));
        assert_eq!(
            body[4]["text"],
            "kubectl dataguardian logs nightly-1 -n shop"
        );
    }

    #[test]
    fn slack_and_webhook_keep_their_fields_and_add_the_key_and_the_next_step() {
        let s = slack(&n(), "k", &rendered(), false);
        assert_eq!(
            s["text"],
            ":x: *BackupFailed* BackupRun `shop/nightly-1` (policy `nightly`): DumpFailed: pg_dump exited 1\nNext: `kubectl dataguardian logs nightly-1 -n shop`"
        );
        let s = slack(&n(), "k", &rendered(), true);
        assert_eq!(s["text"], "*Backup failed*\nthe body");
        let w = webhook(&n(), "k", &rendered());
        assert_eq!(w["event"], "BackupFailed");
        assert_eq!(w["object"]["name"], "nightly-1");
        assert_eq!(w["id"], "k");
        assert_eq!(w["text"], "the body");
        assert_eq!(w["details"]["database"], "postgres shop on db.shop.svc");
    }
}
