//! What a notification says: the template variables of a [`Notification`], the default subject
//! and body, and rendering a rule's own minijinja templates (pure; no I/O).
//!
//! Templates are tenant input: they run with a fuel limit (no endless loops), strict undefined
//! variables (a typo is an error, not an empty string), and a bound on the output. They only
//! ever see the variables below, never a Secret.

use chrono::SecondsFormat;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use super::message::Notification;
use crate::api::backup_policy::{NotificationEvent, NotificationRule};

/// The default subject: what happened, to what.
pub const DEFAULT_SUBJECT: &str = "[{{ severity }}] {{ summary }}";

/// The default body: what happened, to which database, why, and the next command to run.
pub const DEFAULT_BODY: &str = "\
{{ summary }}.
{% if digest %}
{{ digest.count }} more identical notifications were folded into this one ({{ digest.names | join(\", \") }}).
{% endif %}
What: {{ kind }} {{ name }} in namespace {{ namespace }} (policy {{ policy }}){{ (\", backup run \" ~ run) if run and run != name else \"\" }}
Database: {{ database or \"unknown\" }}
Why: {{ reason }}: {{ message }}
{% if size %}Size: {{ size }}
{% endif %}{% if duration %}Duration: {{ duration }}
{% endif %}{% if requester %}Requested by: {{ requester }}
{% endif %}{% if trace_id %}Trace: {{ trace_id }}
{% endif %}When: {{ time }}
Next: {{ next_command }}
";

/// Instructions a template may run (minijinja fuel): plenty for any message, not for a loop
/// that never ends.
const FUEL: u64 = 100_000;
/// The longest rendered subject or body, in bytes.
pub const MAX_RENDERED: usize = 64 * 1024;

/// Why a rule's template could not be rendered. Names the rule and the part, and minijinja's
/// description with the line: the template is the tenant's own text, never a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("the {part} template of rule {rule} is invalid: {detail}")]
    Invalid {
        rule: String,
        part: &'static str,
        detail: String,
    },
    #[error("the {part} template of rule {rule} renders more than {MAX_RENDERED} bytes")]
    TooLong { rule: String, part: &'static str },
}

/// The variables every template sees (documented in docs/notifications.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vars {
    /// `BackupFailed`, …
    pub event: &'static str,
    /// `warning` for bad news, `info` otherwise.
    pub severity: &'static str,
    /// Whether the event is bad news.
    pub failed: bool,
    /// One sentence: what happened to what.
    pub summary: String,
    pub namespace: String,
    pub policy: String,
    /// The object's kind and name.
    pub kind: String,
    pub name: String,
    /// The BackupRun involved, when there is one.
    pub run: Option<String>,
    /// The database, when known (engine, name and host; never credentials).
    pub database: Option<String>,
    /// The artifact size, human-readable (`1.5 MiB`) and in bytes.
    pub size: Option<String>,
    pub size_bytes: Option<u64>,
    /// How long it took, human-readable (`3m12s`) and in seconds.
    pub duration: Option<String>,
    pub duration_seconds: Option<f64>,
    pub reason: String,
    pub message: String,
    /// Who asked for it, when recorded.
    pub requester: Option<String>,
    /// The trace of the run, when known.
    pub trace_id: Option<String>,
    /// RFC 3339, UTC.
    pub time: String,
    /// The `kubectl dataguardian …` command to run next.
    pub next_command: String,
    /// The notification's idempotency key (also the CloudEvents `id` and the mail's
    /// Message-ID).
    pub id: String,
    /// Present on a digest: `count` folded notifications about `names`.
    pub digest: Option<DigestVars>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestVars {
    pub count: u32,
    pub names: Vec<String>,
}

/// A notification's subject and body, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    /// Whether the body is the rule's own template (a webhook then sends it as it is).
    pub custom_body: bool,
}

/// What happened, in words: `backup failed`, …
pub fn what(event: NotificationEvent) -> &'static str {
    match event {
        NotificationEvent::BackupSucceeded => "Backup succeeded",
        NotificationEvent::BackupFailed => "Backup failed",
        NotificationEvent::RestoreSucceeded => "Restore succeeded",
        NotificationEvent::RestoreFailed => "Restore failed",
        NotificationEvent::ValidationPassed => "Restore validation passed",
        NotificationEvent::ValidationFailed => "Restore validation failed",
        NotificationEvent::RpoMissed => "Recovery point objective missed",
        NotificationEvent::StorageUnhealthy => "Backup storage unhealthy",
        NotificationEvent::RestoreAwaitingApproval => "Restore awaiting approval",
    }
}

/// The command a person runs next about `n`.
pub fn next_command(n: &Notification) -> String {
    let ns = &n.namespace;
    match n.event {
        NotificationEvent::BackupFailed
        | NotificationEvent::RestoreFailed
        | NotificationEvent::ValidationFailed => {
            format!("kubectl dataguardian logs {} -n {ns}", n.name)
        }
        NotificationEvent::BackupSucceeded => {
            format!("kubectl dataguardian validate {} -n {ns}", n.name)
        }
        NotificationEvent::RpoMissed => {
            format!("kubectl dataguardian backup now {} -n {ns}", n.policy)
        }
        NotificationEvent::RestoreAwaitingApproval => {
            format!("kubectl dataguardian approve {} -n {ns}", n.name)
        }
        NotificationEvent::RestoreSucceeded
        | NotificationEvent::ValidationPassed
        | NotificationEvent::StorageUnhealthy => {
            format!("kubectl dataguardian status {} -n {ns}", n.policy)
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The variables of `n`, whose idempotency key is `id`.
pub fn vars(n: &Notification, id: &str) -> Vars {
    let d = &n.details;
    let subject = match &d.database {
        Some(db) => format!("{} {}/{} ({db})", n.kind, n.namespace, n.name),
        None => format!("{} {}/{}", n.kind, n.namespace, n.name),
    };
    Vars {
        event: n.event.as_str(),
        severity: if n.event.is_failure() {
            "warning"
        } else {
            "info"
        },
        failed: n.event.is_failure(),
        summary: format!("{}: {subject}", what(n.event)),
        namespace: n.namespace.clone(),
        policy: n.policy.clone(),
        kind: n.kind.clone(),
        name: n.name.clone(),
        run: d.run.clone(),
        database: d.database.clone(),
        size: d.size_bytes.map(human_size),
        size_bytes: d.size_bytes,
        duration: d
            .duration_seconds
            .map(|s| crate::api::common::format_duration(s.round().max(0.0) as u64)),
        duration_seconds: d.duration_seconds,
        reason: n.reason.clone(),
        message: n.message.clone(),
        requester: d.requester.clone(),
        trace_id: d.trace_id.clone(),
        time: n.time.to_rfc3339_opts(SecondsFormat::Secs, true),
        next_command: next_command(n),
        id: id.to_string(),
        digest: d.digest.as_ref().map(|g| DigestVars {
            count: g.count,
            names: g.names.clone(),
        }),
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // Keep the newline after a block tag out of the output (`{% if %}` lines vanish).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

fn render_one(
    env: &Environment<'_>,
    rule: &str,
    part: &'static str,
    source: &str,
    vars: &Vars,
) -> Result<String, TemplateError> {
    let out = env
        .render_str(
            source,
            minijinja::Value::from(minijinja::value::Serde(vars)),
        )
        .map_err(|e| TemplateError::Invalid {
            rule: rule.to_string(),
            part,
            detail: describe(&e),
        })?;
    if out.len() > MAX_RENDERED {
        return Err(TemplateError::TooLong {
            rule: rule.to_string(),
            part,
        });
    }
    Ok(out)
}

/// minijinja's error in one line, with the line number when it has one.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    if let Some(line) = e.line()
        && !text.contains("line")
    {
        text = format!("{text} (line {line})");
    }
    text.replace('\n', " ")
}

/// Checks that the rule's templates parse (a syntax error is reported before anything
/// happens to render them).
pub fn check(rule: &NotificationRule) -> Result<(), TemplateError> {
    let env = environment();
    let Some(t) = &rule.template else {
        return Ok(());
    };
    for (part, source) in [("subject", &t.subject), ("body", &t.body)] {
        if let Some(source) = source {
            env.template_from_str(source)
                .map_err(|e| TemplateError::Invalid {
                    rule: rule.name.clone(),
                    part,
                    detail: describe(&e),
                })?;
        }
    }
    Ok(())
}

/// Renders `rule`'s subject and body for `n` (the defaults where the rule has none).
pub fn render(
    rule: &NotificationRule,
    n: &Notification,
    id: &str,
) -> Result<Rendered, TemplateError> {
    let env = environment();
    let vars = vars(n, id);
    let template = rule.template.as_ref();
    let subject_src = template
        .and_then(|t| t.subject.as_deref())
        .unwrap_or(DEFAULT_SUBJECT);
    let body_src = template.and_then(|t| t.body.as_deref());
    let subject = render_one(&env, &rule.name, "subject", subject_src, &vars)?;
    let body = render_one(
        &env,
        &rule.name,
        "body",
        body_src.unwrap_or(DEFAULT_BODY),
        &vars,
    )?;
    Ok(Rendered {
        // A subject is one line.
        subject: subject.lines().map(str::trim).collect::<Vec<_>>().join(" "),
        body,
        custom_body: body_src.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup_policy::{NotificationTemplate, WebhookChannel};
    use crate::api::common::SecretKeySelector;
    use crate::notify::message::{Details, Digest};

    pub(crate) fn failed_backup() -> Notification {
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
                run: Some("nightly-1".into()),
                size_bytes: None,
                duration_seconds: Some(192.4),
                ..Details::default()
            },
        }
    }

    fn rule(subject: Option<&str>, body: Option<&str>) -> NotificationRule {
        NotificationRule {
            name: "ops".into(),
            events: vec![NotificationEvent::BackupFailed],
            webhook: Some(WebhookChannel {
                url_secret_ref: SecretKeySelector {
                    name: "hooks".into(),
                    key: "ops".into(),
                },
                authorization_secret_ref: None,
                content_type: None,
            }),
            slack: None,
            teams: None,
            email: None,
            cloud_events: None,
            template: (subject.is_some() || body.is_some()).then(|| NotificationTemplate {
                subject: subject.map(str::to_string),
                body: body.map(str::to_string),
            }),
        }
    }

    #[test]
    fn the_default_says_what_to_which_database_why_and_what_next() {
        let r = render(&rule(None, None), &failed_backup(), "k1").unwrap();
        assert_eq!(
            r.subject,
            "[warning] Backup failed: BackupRun shop/nightly-1 (postgres shop on db.shop.svc)"
        );
        assert_eq!(
            r.body,
            "Backup failed: BackupRun shop/nightly-1 (postgres shop on db.shop.svc).\n\
             What: BackupRun nightly-1 in namespace shop (policy nightly)\n\
             Database: postgres shop on db.shop.svc\n\
             Why: DumpFailed: pg_dump exited 1\n\
             Duration: 3m12s\n\
             When: 2026-11-23T02:00:00Z\n\
             Next: kubectl dataguardian logs nightly-1 -n shop\n"
        );
        assert!(!r.custom_body);
    }

    #[test]
    fn the_default_names_a_digest_and_unknown_databases() {
        let mut n = failed_backup();
        n.details.database = None;
        n.details.digest = Some(Digest {
            count: 4,
            names: vec!["nightly-2".into(), "nightly-3".into()],
        });
        n.details.size_bytes = Some(3 << 20);
        n.details.requester = Some("alice".into());
        let r = render(&rule(None, None), &n, "k1").unwrap();
        assert!(
            r.body.contains(
                "4 more identical notifications were folded into this one (nightly-2, nightly-3)."
            ),
            "{}",
            r.body
        );
        assert!(r.body.contains("Database: unknown\n"), "{}", r.body);
        assert!(r.body.contains("Size: 3.0 MiB\n"), "{}", r.body);
        assert!(r.body.contains("Requested by: alice\n"), "{}", r.body);
    }

    #[test]
    fn a_rule_template_sees_every_documented_variable() {
        let body = "{{ event }} {{ severity }} {{ failed }} {{ namespace }}/{{ policy }} \
                    {{ kind }}/{{ name }} {{ run }} {{ database }} {{ size }} {{ size_bytes }} \
                    {{ duration }} {{ duration_seconds }} {{ reason }} {{ message }} \
                    {{ requester }} {{ trace_id }} {{ time }} {{ next_command }} {{ id }} \
                    {{ digest }} {{ summary }}";
        let r = render(
            &rule(Some("{{ event }} on {{ database }}"), Some(body)),
            &failed_backup(),
            "key-1",
        )
        .unwrap();
        assert_eq!(r.subject, "BackupFailed on postgres shop on db.shop.svc");
        assert!(r.custom_body);
        assert!(
            r.body.starts_with(
                "BackupFailed warning True shop/nightly BackupRun/nightly-1 nightly-1 \
                 postgres shop on db.shop.svc None None 3m12s 192.4 DumpFailed pg_dump exited 1 \
                 None None 2026-11-23T02:00:00Z kubectl dataguardian logs nightly-1 -n shop key-1"
            ),
            "{}",
            r.body
        );
    }

    #[test]
    fn a_json_body_escapes_what_it_quotes() {
        let mut n = failed_backup();
        n.message = "pg_dump: \"orders\" \\ broken\nnext line".into();
        let r = render(
            &rule(
                None,
                Some(r#"{"text": {{ message | tojson }}, "to": "+15550100"}"#),
            ),
            &n,
            "k",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["text"], n.message.as_str());
    }

    #[test]
    fn template_errors_name_the_rule_the_part_and_the_problem() {
        // A syntax error, found before rendering.
        let bad = rule(None, Some("line one\n{{ event "));
        let e = check(&bad).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("the body template of rule ops is invalid:"),
            "{text}"
        );
        assert!(text.contains("line 2"), "{text}");
        assert_eq!(render(&bad, &failed_backup(), "k").unwrap_err(), e);
        // An unknown variable (a typo) is an error, not an empty string.
        let typo = rule(Some("{{ evnt }}"), None);
        assert!(check(&typo).is_ok());
        let text = render(&typo, &failed_backup(), "k")
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("the subject template of rule ops is invalid:")
                && text.contains("undefined"),
            "{text}"
        );
        // A template that never ends runs out of fuel.
        let endless = rule(
            None,
            Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            ),
        );
        let text = render(&endless, &failed_backup(), "k")
            .unwrap_err()
            .to_string();
        assert!(text.contains("fuel"), "{text}");
        // One that renders too much is refused.
        let huge = rule(None, Some("{{ 'x' * 70000 }}"));
        assert_eq!(
            render(&huge, &failed_backup(), "k").unwrap_err(),
            TemplateError::TooLong {
                rule: "ops".into(),
                part: "body"
            }
        );
    }

    #[test]
    fn every_event_has_a_next_command() {
        let mut n = failed_backup();
        for (event, expect) in [
            (
                NotificationEvent::BackupSucceeded,
                "kubectl dataguardian validate nightly-1 -n shop",
            ),
            (
                NotificationEvent::RpoMissed,
                "kubectl dataguardian backup now nightly -n shop",
            ),
            (
                NotificationEvent::StorageUnhealthy,
                "kubectl dataguardian status nightly -n shop",
            ),
            (
                NotificationEvent::RestoreFailed,
                "kubectl dataguardian logs nightly-1 -n shop",
            ),
        ] {
            n.event = event;
            assert_eq!(next_command(&n), expect);
        }
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
