//! Every channel against a real receiver on loopback: aiosmtpd for e-mail (STARTTLS and
//! implicit TLS, AUTH, a server without STARTTLS, an untrusted certificate, a refused
//! address), and an HTTP receiver for Teams, CloudEvents (checked against the CloudEvents
//! JSON schema), Slack, the JSON webhook and a templated webhook (the WhatsApp Cloud API
//! example of docs/notifications.md). Secrets never show in a body or an error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::deliver::{DeliveryError, Webhooks};
use super::email::{Mail, SmtpServer};
use super::message::{Details, Notification};
use super::{IDEMPOTENCY_HEADER, deliver, outbox, send_mail_retrying};
use crate::api::backup_policy::*;
use crate::api::common::{LocalObjectReference, SecretKeySelector};
use crate::egress::EgressPolicy;

const PASSWORD: &str = "smtp-pa55-w0rd";
const TOKEN: &str = "EAAG-wh4tsapp-t0ken";

fn loopback() -> EgressPolicy {
    EgressPolicy::from_list("127.0.0.0/8").unwrap()
}

fn failed_backup() -> Notification {
    Notification {
        event: NotificationEvent::BackupFailed,
        namespace: "shop".into(),
        policy: "nightly".into(),
        kind: "BackupRun".into(),
        name: "nightly-7".into(),
        reason: "DumpFailed".into(),
        message: "pg_dump: error: connection refused".into(),
        time: "2026-11-23T02:00:00Z".parse().unwrap(),
        details: Details {
            database: Some("postgres shop on db.shop.svc".into()),
            run: Some("nightly-7".into()),
            duration_seconds: Some(4.0),
            ..Details::default()
        },
    }
}

fn rule(name: &str) -> NotificationRule {
    NotificationRule {
        name: name.into(),
        events: vec![NotificationEvent::BackupFailed],
        webhook: None,
        slack: None,
        teams: None,
        email: None,
        cloud_events: None,
        template: None,
    }
}

fn selector(name: &str, key: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
    }
}

type Secrets = BTreeMap<(String, String, String), String>;

fn secrets(entries: &[(&str, &str, &str)]) -> Secrets {
    entries
        .iter()
        .map(|(n, k, v)| {
            (
                ("shop".to_string(), n.to_string(), k.to_string()),
                v.to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- e-mail

fn smtp(server: &testkit::SmtpServer, tls: SmtpTls, auth: bool, trust: bool) -> SmtpServer {
    SmtpServer {
        host: "127.0.0.1".into(),
        port: server.port(),
        tls,
        credentials: auth.then(|| ("backup-bot".to_string(), PASSWORD.to_string())),
        ca_pem: trust.then(|| server.ca_pem()),
    }
}

fn mail(key: &str) -> Mail {
    Mail {
        from: "DataGuardian <backups@example.com>".into(),
        to: vec!["oncall@example.com".into(), "dba@example.com".into()],
        subject: "[warning] Backup failed: BackupRun shop/nightly-7".into(),
        body: "Backup failed.\nNext: kubectl dataguardian logs nightly-7 -n shop\n".into(),
        key: key.into(),
        event: "BackupFailed".into(),
    }
}

#[tokio::test]
async fn an_email_is_received_over_starttls_with_auth_and_parsed() {
    let server = testkit::SmtpServer::builder(testkit::SmtpMode::StartTls)
        .auth("backup-bot", PASSWORD)
        .start()
        .unwrap();
    let attempts = send_mail_retrying(
        &loopback(),
        &smtp(&server, SmtpTls::StartTLS, true, true),
        &mail("3f2a-key"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(attempts, 1);
    let got = server.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", server.log());
    let m = &got[0];
    assert!(m.tls && m.authenticated, "{m:?}");
    assert_eq!(m.mail_from, "backups@example.com");
    assert_eq!(m.rcpt_tos, ["oncall@example.com", "dba@example.com"]);
    assert_eq!(
        m.subject,
        "[warning] Backup failed: BackupRun shop/nightly-7"
    );
    assert_eq!(m.message_id, "<3f2a-key@dataguardian.io>");
    assert_eq!(m.header("X-DataGuardian-Event"), Some("BackupFailed"));
    assert!(
        m.body
            .contains("Next: kubectl dataguardian logs nightly-7 -n shop"),
        "{}",
        m.body
    );
    assert!(!m.raw.contains(PASSWORD));
}

#[tokio::test]
async fn an_email_is_received_over_implicit_tls_and_bad_credentials_are_final() {
    let server = testkit::SmtpServer::builder(testkit::SmtpMode::ImplicitTls)
        .auth("backup-bot", PASSWORD)
        .start()
        .unwrap();
    send_mail_retrying(
        &loopback(),
        &smtp(&server, SmtpTls::TLS, true, true),
        &mail("k-1"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let got = server.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert!(got[0].tls && got[0].authenticated);

    // A wrong password: refused once, not retried, and the error does not carry it.
    let mut wrong = smtp(&server, SmtpTls::TLS, true, true);
    wrong.credentials = Some(("backup-bot".into(), "not-the-pa55".into()));
    let started = Instant::now();
    let err = send_mail_retrying(&loopback(), &wrong, &mail("k-2"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "retried: {err}");
    assert!(
        matches!(
            err,
            DeliveryError::MailAuth
                | DeliveryError::MailRejected {
                    permanent: true,
                    ..
                }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("pa55"), "{err}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn mail_is_never_sent_in_the_clear_nor_to_an_untrusted_or_refused_server() {
    // A server that offers no STARTTLS.
    let plain = testkit::SmtpServer::builder(testkit::SmtpMode::Plain)
        .start()
        .unwrap();
    let err = send_mail_retrying(
        &loopback(),
        &smtp(&plain, SmtpTls::StartTLS, false, true),
        &mail("k"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_err();
    assert_eq!(err, DeliveryError::NoStartTls);
    assert_eq!(err.category(), "rejected");

    // A certificate from a CA the operator does not trust (the system roots).
    let server = testkit::SmtpServer::builder(testkit::SmtpMode::StartTls)
        .start()
        .unwrap();
    let err = send_mail_retrying(
        &loopback(),
        &smtp(&server, SmtpTls::StartTLS, false, false),
        &mail("k"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            DeliveryError::MailTls | DeliveryError::MailFailed { .. }
        ),
        "{err:?}"
    );
    let implicit = testkit::SmtpServer::builder(testkit::SmtpMode::ImplicitTls)
        .start()
        .unwrap();
    let err = send_mail_retrying(
        &loopback(),
        &smtp(&implicit, SmtpTls::TLS, false, false),
        &mail("k"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_err();
    assert_eq!(err, DeliveryError::MailTls);

    // The egress policy does not allow loopback: refused before any connection.
    let err = send_mail_retrying(
        &EgressPolicy::default(),
        &smtp(&server, SmtpTls::StartTLS, false, true),
        &mail("k"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeliveryError::Refused(_)), "{err:?}");
    assert_eq!(err.category(), "refused");
    for s in [&plain, &server, &implicit] {
        assert!(s.received().is_empty());
    }
}

// ---------------------------------------------------------------- HTTP channels

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// An HTTP receiver on loopback recording every request; `/busy/…` answers 503 with
/// `Retry-After: 1` the first time, then 200.
async fn receiver() -> (String, Arc<Mutex<Vec<Seen>>>) {
    use axum::extract::Request;
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let s = s.clone();
        async move {
            let path = req.uri().path().to_string();
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            let mut seen = s.lock().unwrap();
            let earlier = seen.iter().filter(|x| x.path == path).count();
            seen.push(Seen {
                path: path.clone(),
                headers,
                body,
            });
            if path.starts_with("/busy/") && earlier == 0 {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "1")],
                )
            } else {
                (
                    axum::http::StatusCode::OK,
                    [(axum::http::header::CACHE_CONTROL, "no-store")],
                )
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn on(seen: &Arc<Mutex<Vec<Seen>>>, path: &str) -> Vec<Seen> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == path)
        .cloned()
        .collect()
}

/// The WhatsApp Cloud API example of docs/notifications.md (a template message body).
pub const WHATSAPP_BODY: &str = r#"{
  "messaging_product": "whatsapp",
  "to": "15550100",
  "type": "text",
  "text": {"body": {{ (summary ~ ". Why: " ~ reason ~ ". Next: " ~ next_command) | tojson }}}
}"#;

#[tokio::test]
async fn every_http_channel_delivers_its_format_with_the_idempotency_key() {
    let (base, seen) = receiver().await;
    let secrets = secrets(&[
        ("hooks", "teams", &format!("{base}/teams/t0k-teams")),
        ("hooks", "events", &format!("{base}/events/t0k-ce")),
        ("hooks", "slack", &format!("{base}/slack/t0k-slack")),
        ("hooks", "json", &format!("{base}/json/t0k-json")),
        ("whatsapp", "url", &format!("{base}/v21.0/1055/messages")),
        ("whatsapp", "authorization", &format!("Bearer {TOKEN}")),
    ]);
    let webhooks = Webhooks::new(loopback());
    let n = failed_backup();
    let backoff = Duration::from_millis(10);

    let mut teams = rule("teams");
    teams.teams = Some(TeamsChannel {
        webhook_url_secret_ref: selector("hooks", "teams"),
    });
    let mut events = rule("events");
    events.cloud_events = Some(CloudEventsChannel {
        url_secret_ref: selector("hooks", "events"),
    });
    let mut slack = rule("slack");
    slack.slack = Some(SlackChannel {
        webhook_url_secret_ref: selector("hooks", "slack"),
    });
    let mut json_hook = rule("json");
    json_hook.webhook = Some(WebhookChannel {
        url_secret_ref: selector("hooks", "json"),
        authorization_secret_ref: None,
        content_type: None,
    });
    let mut whatsapp = rule("whatsapp");
    whatsapp.webhook = Some(WebhookChannel {
        url_secret_ref: selector("whatsapp", "url"),
        authorization_secret_ref: Some(selector("whatsapp", "authorization")),
        content_type: None,
    });
    whatsapp.template = Some(NotificationTemplate {
        subject: None,
        body: Some(WHATSAPP_BODY.into()),
    });
    for r in [&teams, &events, &slack, &json_hook, &whatsapp] {
        let key = outbox::key(&n, &r.name);
        let attempts = deliver(&secrets, &webhooks, r, &n, &key, backoff)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", r.name));
        assert_eq!(attempts, 1, "{}", r.name);
    }
    let key = |r: &NotificationRule| outbox::key(&n, &r.name);

    // Teams: an Adaptive Card saying what, which database, why and what next.
    let got = on(&seen, "/teams/t0k-teams");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers[IDEMPOTENCY_HEADER], key(&teams));
    assert_eq!(got[0].headers["content-type"], "application/json");
    let card: Value = serde_json::from_str(&got[0].body).unwrap();
    let content = &card["attachments"][0]["content"];
    assert_eq!(content["type"], "AdaptiveCard");
    assert_eq!(
        content["body"][0]["text"],
        "[warning] Backup failed: BackupRun shop/nightly-7 (postgres shop on db.shop.svc)"
    );
    let text = content["body"][1]["text"].as_str().unwrap();
    assert!(
        text.contains("Database: postgres shop on db.shop.svc")
            && text.contains("Why: DumpFailed: pg_dump: error: connection refused")
            && text.contains("Next: kubectl dataguardian logs nightly-7 -n shop"),
        "{text}"
    );

    // CloudEvents: structured mode, valid against the specification's schema, id = key.
    let got = on(&seen, "/events/t0k-ce");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].headers["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
    let ev: Value = serde_json::from_str(&got[0].body).unwrap();
    let schema = crate::notify::channels::tests::cloudevents_schema();
    let errors: Vec<String> = schema.iter_errors(&ev).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ev["id"], key(&events));
    assert_eq!(got[0].headers[IDEMPOTENCY_HEADER], key(&events));
    assert_eq!(ev["type"], "io.dataguardian.backup.failed");

    // Slack and the JSON webhook: their documents, with the next step and the key.
    let got = on(&seen, "/slack/t0k-slack");
    let slack_doc: Value = serde_json::from_str(&got[0].body).unwrap();
    assert!(
        slack_doc["text"]
            .as_str()
            .unwrap()
            .ends_with("\nNext: `kubectl dataguardian logs nightly-7 -n shop`")
    );
    let got = on(&seen, "/json/t0k-json");
    let doc: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(doc["event"], "BackupFailed");
    assert_eq!(doc["id"], key(&json_hook));

    // The templated webhook: exactly the WhatsApp Cloud API request, with its token in the
    // Authorization header only.
    let got = on(&seen, "/v21.0/1055/messages");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["authorization"], format!("Bearer {TOKEN}"));
    let msg: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        msg,
        json!({
            "messaging_product": "whatsapp",
            "to": "15550100",
            "type": "text",
            "text": {"body": "Backup failed: BackupRun shop/nightly-7 (postgres shop on db.shop.svc). Why: DumpFailed. Next: kubectl dataguardian logs nightly-7 -n shop"},
        })
    );

    // No body carries a URL token or the WhatsApp token.
    for s in seen.lock().unwrap().iter() {
        for secret in ["t0k-", TOKEN] {
            assert!(
                !s.body.contains(secret),
                "{secret} in {}: {}",
                s.path,
                s.body
            );
        }
    }
}

#[tokio::test]
async fn a_busy_receiver_is_retried_after_its_retry_after_with_the_same_key() {
    let (base, seen) = receiver().await;
    let secrets = secrets(&[("hooks", "events", &format!("{base}/busy/t0k"))]);
    let mut events = rule("events");
    events.cloud_events = Some(CloudEventsChannel {
        url_secret_ref: selector("hooks", "events"),
    });
    let n = failed_backup();
    let key = outbox::key(&n, "events");
    let started = Instant::now();
    let attempts = deliver(
        &secrets,
        &Webhooks::new(loopback()),
        &events,
        &n,
        &key,
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    assert_eq!(attempts, 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 not honoured ({:?})",
        started.elapsed()
    );
    let got = on(&seen, "/busy/t0k");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body);
    assert!(got.iter().all(|s| s.headers[IDEMPOTENCY_HEADER] == key));
}

#[tokio::test]
async fn a_template_error_sends_nothing_and_says_why() {
    let (base, seen) = receiver().await;
    let secrets = secrets(&[("hooks", "json", &format!("{base}/json/t0k"))]);
    let mut r = rule("sms");
    r.webhook = Some(WebhookChannel {
        url_secret_ref: selector("hooks", "json"),
        authorization_secret_ref: None,
        content_type: Some("text/plain".into()),
    });
    r.template = Some(NotificationTemplate {
        subject: None,
        body: Some("{{ summary }} {% if %}".into()),
    });
    let n = failed_backup();
    let err = deliver(
        &secrets,
        &Webhooks::new(loopback()),
        &r,
        &n,
        "k",
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeliveryError::Template(_)), "{err:?}");
    assert_eq!(err.category(), "template");
    assert!(
        err.to_string()
            .starts_with("the body template of rule sms is invalid:"),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty());

    // A missing Secret or key is named, and nothing is sent.
    r.template = None;
    r.webhook.as_mut().unwrap().authorization_secret_ref = Some(selector("nope", "token"));
    let err = deliver(
        &secrets,
        &Webhooks::new(loopback()),
        &r,
        &n,
        "k",
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::SecretNotFound {
            secret: "nope".into()
        }
    );
    let mut mail_rule = rule("mail");
    mail_rule.email = Some(EmailChannel {
        host: "127.0.0.1".into(),
        port: Some(1),
        tls: SmtpTls::StartTLS,
        from: "a@example.com".into(),
        to: vec!["b@example.com".into()],
        credentials_secret_ref: Some(LocalObjectReference {
            name: "hooks".into(),
        }),
        ca_secret_ref: None,
    });
    let err = deliver(
        &secrets,
        &Webhooks::new(loopback()),
        &mail_rule,
        &n,
        "k",
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::KeyNotFound {
            secret: "hooks".into(),
            key: "username".into()
        }
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn backoff_grows_with_jitter_and_honours_retry_after() {
    use super::deliver::{MAX_RETRY_AFTER, backoff_delay, parse_retry_after};
    let base = Duration::from_secs(1);
    for attempt in 1..=4u32 {
        let nominal = base * (1 << (attempt - 1));
        let delays: Vec<_> = (0..50)
            .map(|_| backoff_delay(base, attempt, None))
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= nominal / 2 && *d < nominal * 3 / 2)
        );
        // Jittered: not all the same.
        assert!(delays.iter().any(|d| *d != delays[0]));
    }
    assert!(backoff_delay(base, 1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    assert_eq!(
        backoff_delay(Duration::ZERO, 1, Some(Duration::from_secs(86_400))),
        MAX_RETRY_AFTER
    );
    let now = "2026-11-23T02:00:00Z".parse().unwrap();
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 02:00:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 01:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_through_the_https_proxy_tunnel_unless_no_proxy_names_the_server() {
    let server = testkit::SmtpServer::builder(testkit::SmtpMode::StartTls)
        .start()
        .unwrap();
    let proxy = testkit::ForwardProxy::with_credentials("hooks", "pr0xy-s3cret").unwrap();
    let url = proxy.url_with_credentials("hooks", "pr0xy-s3cret");
    let via = |no_proxy: &str| {
        loopback().with_proxy(crate::egress::ProxyConfig::new(None, Some(&url), no_proxy).unwrap())
    };
    send_mail_retrying(
        &via(""),
        &smtp(&server, SmtpTls::StartTLS, false, true),
        &mail("k-1"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(server.wait_for(1, Duration::from_secs(10)).len(), 1);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "CONNECT");
    assert_eq!(seen[0].target, format!("127.0.0.1:{}", server.port()));
    assert_eq!(
        seen[0].proxy_authorization.as_deref(),
        Some("Basic aG9va3M6cHIweHktczNjcmV0"),
        "base64(hooks:pr0xy-s3cret)"
    );

    // NO_PROXY names the server: straight to it.
    send_mail_retrying(
        &via("127.0.0.0/8"),
        &smtp(&server, SmtpTls::StartTLS, false, true),
        &mail("k-2"),
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    assert_eq!(server.wait_for(2, Duration::from_secs(10)).len(), 2);
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY was not honoured");

    // A server the egress policy refuses never reaches the proxy.
    let err = send_mail_retrying(
        &crate::egress::EgressPolicy::default()
            .with_proxy(crate::egress::ProxyConfig::new(None, Some(&url), "").unwrap()),
        &smtp(&server, SmtpTls::StartTLS, false, true),
        &mail("k-3"),
        Duration::from_millis(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeliveryError::Refused(_)), "{err:?}");
    assert!(!err.to_string().contains("pr0xy-s3cret"));
    assert_eq!(proxy.requests().len(), 1);
}
