//! Notifications end to end: a policy's rules send backup outcomes to a JSON webhook and a
//! Slack-style webhook (a real HTTP receiver on loopback), a failing receiver becomes a Warning
//! Event and a metric, and the URLs (their tokens) never show anywhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataguardian::api::BackupRun;

use crate::backup::{RUN_TIMEOUT, finished, scenario};
use crate::harness::{manual_run, phase, wait_for, wait_for_events};

/// What the receiver got: (path, body) per POST.
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An HTTP receiver on loopback: `/fail/...` answers 500, every other path 200.
async fn receiver() -> (String, Received) {
    use axum::extract::Path;
    use axum::routing::post;
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/{kind}/{token}",
        post(
            move |Path((kind, token)): Path<(String, String)>, body: String| {
                let g = g.clone();
                async move {
                    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                    g.lock().unwrap().push((format!("/{kind}/{token}"), value));
                    if kind == "fail" {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// Waits until the receiver holds a POST on `path` satisfying `ok`.
async fn wait_for_post(
    got: &Received,
    path: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((_, v)) = got.lock().unwrap().iter().find(|(p, v)| p == path && ok(v)) {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching POST on {path} within 30s; got {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_outcomes_reach_webhooks_and_failures_are_reported() {
    let _serial = crate::serial().await;
    let (base, got) = receiver().await;
    let rules = r#"  notifications:
    - name: ops
      events: [BackupSucceeded, BackupFailed]
      webhook: {urlSecretRef: {name: hooks, key: ops}}
    - name: team
      events: [BackupSucceeded]
      slack: {webhookUrlSecretRef: {name: hooks, key: team}}
    - name: broken
      events: [BackupSucceeded]
      webhook: {urlSecretRef: {name: hooks, key: broken}}
    - name: missing
      events: [BackupFailed]
      webhook: {urlSecretRef: {name: no-such-secret, key: url}}
"#;
    let s = scenario("notify", "0 0 1 1 *", rules).await;
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: {ns}}}\nstringData:\n  ops: {base}/hook/tok-ops-1\n  team: {base}/slack/tok-team-2\n  broken: {base}/fail/tok-broken-3\n",
        ns = s.ns
    ));
    // A second policy on a database that does not exist: its backups fail.
    s.cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nodb, namespace: {ns}}}
spec:
  source:
    postgres: {{host: "{host}", port: {port}, database: no_such_db, user: {user},
               passwordSecretRef: {{name: db-creds, key: password}}}}
  storageRef: {{name: main}}
  schedule: "0 0 1 1 *"
{rules}"#,
        ns = s.ns,
        host = s.services.pg.host(),
        port = s.services.pg.port(),
        user = s.services.pg.user(),
    ));

    // A successful backup: the JSON webhook and the Slack webhook hear it.
    s.cluster.apply(&manual_run(&s.ns, "good", "shop"));
    let run = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "good",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        run.status
    );
    let doc = wait_for_post(&got, "/hook/tok-ops-1", |v| v["object"]["name"] == "good").await;
    assert_eq!(doc["event"], "BackupSucceeded");
    assert_eq!(doc["severity"], "info");
    assert_eq!(doc["namespace"], s.ns.as_str());
    assert_eq!(doc["policy"], "shop");
    assert_eq!(doc["object"]["kind"], "BackupRun");
    assert!(
        doc["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{doc}"
    );
    let slack = wait_for_post(&got, "/slack/tok-team-2", |v| {
        v["text"].as_str().is_some_and(|t| t.contains("good"))
    })
    .await;
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("*BackupSucceeded*") && text.contains("policy `shop`"),
        "{text}"
    );

    // The broken receiver was tried three times, then the policy got a Warning Event.
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events.iter().any(|e| {
            e.starts_with("NotificationFailed")
                && e.contains("rule broken")
                && e.contains("HTTP 500")
                && e.contains("good")
        })
    })
    .await;
    let broken_posts = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/fail/tok-broken-3")
        .count();
    assert_eq!(broken_posts, 3, "one try and two retries");

    // A failed backup: the ops webhook hears it as a warning; the rule whose Secret is missing
    // says so in an Event.
    s.cluster.apply(&manual_run(&s.ns, "bad", "nodb"));
    let run = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "bad",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(phase(&run).as_deref(), Some("Failed"), "{:#?}", run.status);
    let doc = wait_for_post(&got, "/hook/tok-ops-1", |v| v["object"]["name"] == "bad").await;
    assert_eq!(doc["event"], "BackupFailed");
    assert_eq!(doc["severity"], "warning");
    assert_eq!(doc["policy"], "nodb");
    let status = run.status.clone().unwrap();
    assert_eq!(doc["reason"], status.reason.clone().unwrap().as_str());
    assert!(
        !got.lock()
            .unwrap()
            .iter()
            .any(|(p, v)| p == "/slack/tok-team-2"
                && v["text"].as_str().is_some_and(|t| t.contains("bad"))),
        "the Slack rule does not hear failures"
    );
    wait_for_events(&s.cluster, &s.ns, "nodb", |events| {
        events.iter().any(|e| {
            e.starts_with("NotificationFailed")
                && e.contains("rule missing")
                && e.contains("Secret no-such-secret not found")
        })
    })
    .await;

    // Every outcome is counted by result.
    let (_, metrics) = s.operator.http_get("/metrics").expect("metrics");
    for (policy, event, result) in [
        ("shop", "BackupSucceeded", "delivered"),
        ("shop", "BackupSucceeded", "rejected"),
        ("nodb", "BackupFailed", "delivered"),
        ("nodb", "BackupFailed", "config"),
    ] {
        let series = format!(
            r#"dataguardian_notifications_total{{namespace="{}",policy="{policy}",event="{event}",result="{result}"}}"#,
            s.ns
        );
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    // The URLs carry tokens: none appears in the operator's log, Events or objects.
    let log = s.operator.log();
    let events = s
        .cluster
        .kubectl(&["get", "events", "-n", &s.ns, "-o", "yaml"])
        .unwrap();
    let policies = s
        .cluster
        .kubectl(&["get", "backuppolicies", "-n", &s.ns, "-o", "yaml"])
        .unwrap();
    for token in ["tok-ops-1", "tok-team-2", "tok-broken-3"] {
        assert!(!log.contains(token), "{token} in the operator log");
        assert!(!events.contains(token), "{token} in an Event");
        assert!(!policies.contains(token), "{token} in a policy");
    }
}
