//! Notifications end to end: a policy's rules send backup outcomes to a JSON webhook and a
//! Slack-style webhook (a real HTTP receiver on loopback), a failing receiver becomes a Warning
//! Event and a metric, and the URLs (their tokens) never show anywhere.

use std::time::Duration;

use dataguardian::api::BackupPolicy;

use crate::backup::scenario;
use crate::harness::{Webhooks, phase, wait_for, wait_for_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_outcomes_reach_webhooks_and_failures_are_reported() {
    let _serial = crate::serial().await;
    let hooks = Webhooks::start().await;
    let base = &hooks.base;
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
    s.cluster.apply(&s.services.postgres_policy(
        &s.ns,
        "nodb",
        "no_such_db",
        "main",
        &format!("  schedule: \"0 0 1 1 *\"\n{rules}"),
    ));

    // A successful backup: the JSON webhook and the Slack webhook hear it.
    let run = s.run_to_end("good", "shop").await;
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        run.status
    );
    let doc = hooks
        .wait_for("/hook/tok-ops-1", |v| v["object"]["name"] == "good")
        .await;
    assert_eq!(doc["event"], "BackupSucceeded");
    assert_eq!(doc["severity"], "info");
    assert_eq!(doc["namespace"], s.ns.as_str());
    assert_eq!(doc["policy"], "shop");
    assert_eq!(doc["object"]["kind"], "BackupRun");
    assert!(
        doc["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{doc}"
    );
    let slack = hooks
        .wait_for("/slack/tok-team-2", |v| {
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
    assert_eq!(
        hooks.posts("/fail/tok-broken-3").len(),
        3,
        "one try and two retries"
    );

    // A failed backup: the ops webhook hears it as a warning; the rule whose Secret is missing
    // says so in an Event.
    let run = s.run_to_end("bad", "nodb").await;
    assert_eq!(phase(&run).as_deref(), Some("Failed"), "{:#?}", run.status);
    let doc = hooks
        .wait_for("/hook/tok-ops-1", |v| v["object"]["name"] == "bad")
        .await;
    assert_eq!(doc["event"], "BackupFailed");
    assert_eq!(doc["severity"], "warning");
    assert_eq!(doc["policy"], "nodb");
    let status = run.status.clone().unwrap();
    assert_eq!(doc["reason"], status.reason.clone().unwrap().as_str());
    assert!(
        !hooks
            .posts("/slack/tok-team-2")
            .iter()
            .any(|v| v["text"].as_str().is_some_and(|t| t.contains("bad"))),
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

    // A policy whose recovery point objective passes without a backup: RpoMissed.
    s.cluster.apply(&s.services.postgres_policy(
        &s.ns,
        "strict",
        "shop",
        "main",
        "  schedule: \"0 0 1 1 *\"\n  rpo: 2s\n  notifications:\n    - {name: ops, events: [RpoMissed], webhook: {urlSecretRef: {name: hooks, key: ops}}}\n",
    ));
    let doc = hooks
        .wait_for("/hook/tok-ops-1", |v| v["event"] == "RpoMissed")
        .await;
    assert_eq!(
        (doc["policy"].as_str(), doc["object"]["kind"].as_str()),
        (Some("strict"), Some("BackupPolicy"))
    );
    // The policy's status says the same: no backup ever succeeded, and one was due.
    let p = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "strict",
        Duration::from_secs(30),
        "RPOMet False",
        |p| {
            p.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "RPOMet" && c.status == "False")
            })
        },
    )
    .await;
    let st = p.status.unwrap();
    let rpo = st.conditions.iter().find(|c| c.type_ == "RPOMet").unwrap();
    assert_eq!(rpo.reason, "NeverSucceeded", "{rpo:?}");

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
