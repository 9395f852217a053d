//! Notifications end to end: a policy's rules send backup outcomes to a JSON webhook and a
//! Slack-style webhook (a real HTTP receiver on loopback), a failing receiver becomes a Warning
//! Event and a metric, and the URLs (their tokens) never show anywhere. Delivery is at least
//! once: an operator killed while sending sends again after its restart, with the same
//! idempotency key; a template error is a clear Event.

use std::time::Duration;

use dataguardian::api::BackupPolicy;
use kube::Api;

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

    // The broken receiver was tried five times (backing off), then the policy got a Warning
    // Event.
    hooks.wait_for_count("/fail/tok-broken-3", 5).await;
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events.iter().any(|e| {
            e.starts_with("NotificationFailed")
                && e.contains("rule broken")
                && e.contains("HTTP 500")
                && e.contains("good")
        })
    })
    .await;
    let tries = hooks.requests("/fail/tok-broken-3");
    assert_eq!(tries.len(), 5, "one try and four retries");
    // Every try carries the same idempotency key.
    let key = &tries[0].headers["idempotency-key"];
    assert!(tries.iter().all(|t| &t.headers["idempotency-key"] == key));

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

/// The pending notifications recorded in policy `name`'s status (key → record).
async fn pending(
    s: &crate::backup::Scenario,
    name: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let policies: Api<BackupPolicy> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let p = policies.get(name).await.expect("policy");
    serde_json::to_value(p.status.unwrap_or_default())
        .unwrap()
        .get("pendingNotifications")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notification_survives_an_operator_killed_while_sending_it() {
    let _serial = crate::serial().await;
    let hooks = Webhooks::start().await;
    let base = &hooks.base;
    // CloudEvents to a receiver that never answers the first request; a Teams card; an SMS
    // gateway whose template is broken.
    let rules = r#"  notifications:
    - name: router
      events: [BackupSucceeded]
      cloudEvents: {urlSecretRef: {name: hooks, key: router}}
    - name: team
      events: [BackupSucceeded]
      teams: {webhookUrlSecretRef: {name: hooks, key: team}}
    - name: dba-mail
      events: [BackupSucceeded]
      email:
        host: 127.0.0.1
        port: SMTP_PORT
        tls: StartTLS
        from: "DataGuardian <backups@example.com>"
        to: [dba@example.com]
        credentialsSecretRef: {name: smtp-creds}
        caSecretRef: {name: smtp-creds, key: ca.crt}
      template:
        subject: "{{ event }}: {{ kind }} {{ name }} of {{ database }}"
    - name: sms
      events: [BackupSucceeded]
      webhook:
        urlSecretRef: {name: hooks, key: sms}
        authorizationSecretRef: {name: hooks, key: sms-auth}
        contentType: text/plain
      template:
        body: "{{ summary }} {% if %}"
"#;
    let smtp = testkit::SmtpServer::builder(testkit::SmtpMode::StartTls)
        .auth("backup-bot", "smtp-pa55-w0rd-5")
        .start()
        .expect("aiosmtpd (pip install aiosmtpd)");
    let rules = rules.replace("SMTP_PORT", &smtp.port().to_string());
    let mut s = scenario("notify-restart", "0 0 1 1 *", &rules).await;
    let ca = String::from_utf8(smtp.ca_pem()).unwrap();
    let ca_yaml: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: smtp-creds, namespace: {ns}}}\nstringData:\n  username: backup-bot\n  password: smtp-pa55-w0rd-5\n  ca.crt: |\n{ca_yaml}",
        ns = s.ns
    ));
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: {ns}}}\nstringData:\n  router: {base}/hold/tok-router-1\n  team: {base}/teams/tok-team-2\n  sms: {base}/sms/tok-sms-3\n  sms-auth: Bearer tok-sms-auth-4\n",
        ns = s.ns
    ));

    let run = s.run_to_end("good", "shop").await;
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        run.status
    );

    // The router's first request is in flight (the receiver holds it): the notification is
    // recorded as pending in the policy's status under the key the request carries.
    // The operator dies before the receiver answers.
    let first = hooks.wait_for_count("/hold/tok-router-1", 1).await;
    s.operator.kill();
    let key = first[0].headers["idempotency-key"].clone();
    assert_eq!(first[0].body["id"], key.as_str());
    let recorded = pending(&s, "shop").await;
    assert!(
        recorded.contains_key(&key),
        "{key} not pending: {recorded:?}"
    );
    assert_eq!(recorded[&key]["rule"], "router");
    assert_eq!(recorded[&key]["event"], "BackupSucceeded");
    assert_eq!(
        hooks.requests("/hold/tok-router-1").len(),
        1,
        "sent again before the kill"
    );

    // Its successor sends it again, with the same idempotency key and the same CloudEvents
    // id, and then forgets it.
    s.operator.restart();
    let both = hooks.wait_for_count("/hold/tok-router-1", 2).await;
    assert_eq!(both[1].headers["idempotency-key"], key);
    assert_eq!(both[1].body["id"], key.as_str());
    assert_eq!(both[1].body["type"], "io.dataguardian.backup.succeeded");
    assert_eq!(both[0].body, both[1].body);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pending(&s, "shop").await.contains_key(&key) {
        assert!(
            std::time::Instant::now() < deadline,
            "still pending after delivery: {:?}",
            pending(&s, "shop").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.operator
            .log()
            .contains("sending a pending notification again"),
        "{}",
        s.operator.log()
    );

    // The Teams card arrived (once before the kill, or again after it: same key).
    let cards = hooks.wait_for_count("/teams/tok-team-2", 1).await;
    let card = &cards[0].body["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(
        card["body"][1]["text"].as_str().is_some_and(
            |t| t.contains("Next: kubectl dataguardian validate good -n notify-restart")
        ),
        "{card}"
    );
    let team_keys: std::collections::BTreeSet<_> = cards
        .iter()
        .map(|c| c.headers["idempotency-key"].clone())
        .collect();
    assert_eq!(team_keys.len(), 1, "{cards:?}");

    // The e-mail, received and parsed by a real SMTP server: over STARTTLS, authenticated,
    // with the rule's subject, the default body and the idempotency key as Message-ID.
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    assert!(!mails.is_empty(), "no mail; server log:\n{}", smtp.log());
    let m = &mails[0];
    assert!(m.tls && m.authenticated, "{m:?}");
    assert_eq!(m.rcpt_tos, ["dba@example.com"]);
    assert!(
        m.subject
            .starts_with("BackupSucceeded: BackupRun good of postgres shop on "),
        "{}",
        m.subject
    );
    assert!(
        m.message_id.starts_with('<') && m.message_id.ends_with("@dataguardian.io>"),
        "{}",
        m.message_id
    );
    assert!(
        m.body
            .contains("Next: kubectl dataguardian validate good -n notify-restart")
            && m.body.contains("Database: postgres shop on "),
        "{}",
        m.body
    );
    // Sent again after the restart, it would carry the same Message-ID.
    let ids: std::collections::BTreeSet<_> = mails.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), 1, "{mails:?}");

    // The broken template: nothing sent, a clear Event naming the rule and the problem.
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events.iter().any(|e| {
            e.starts_with("NotificationTemplateInvalid")
                && e.contains("rule sms")
                && e.contains("the body template of rule sms is invalid")
        })
    })
    .await;
    assert!(hooks.requests("/sms/tok-sms-3").is_empty());

    // No URL token or Authorization value anywhere.
    let log = s.operator.log();
    let events = s
        .cluster
        .kubectl(&["get", "events", "-n", &s.ns, "-o", "yaml"])
        .unwrap();
    let policies = s
        .cluster
        .kubectl(&["get", "backuppolicies", "-n", &s.ns, "-o", "yaml"])
        .unwrap();
    let bodies = format!(
        "{:?}{:?}",
        hooks.posts("/hold/tok-router-1"),
        hooks.posts("/teams/tok-team-2")
    );
    let mail_text: String = smtp.received().iter().map(|m| m.raw.clone()).collect();
    assert!(!mail_text.contains("smtp-pa55-w0rd-5"));
    for token in [
        "tok-router-1",
        "tok-team-2",
        "tok-sms-3",
        "tok-sms-auth-4",
        "smtp-pa55-w0rd-5",
    ] {
        assert!(!log.contains(token), "{token} in the operator log");
        assert!(!events.contains(token), "{token} in an Event");
        assert!(!policies.contains(token), "{token} in a policy");
        assert!(!bodies.contains(token), "{token} in a body");
    }
}
