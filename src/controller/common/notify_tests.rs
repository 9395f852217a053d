//! [`Context::notify`] and [`Context::resume_notifications`] against the API stand-in and a
//! real HTTP receiver on loopback: the record in the policy's status before and after sending,
//! a storm folded into one message and a digest, and a record left by an earlier operator sent
//! again with its key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Api;
use serde_json::Value;

use super::*;
use crate::api::backup_policy::NotificationEvent;
use crate::controller::common::testing::Sim;
use crate::notify::message::Details;
use crate::notify::outbox;

/// A receiver recording (path, Idempotency-Key, JSON body); answers 200.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String, Value)>>>) {
    use axum::extract::Request;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let s = s.clone();
        async move {
            let path = req.uri().path().to_string();
            let key = req
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            s.lock().unwrap().push((path, key, body));
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

async fn setup(base: &str, window: Duration) -> (Sim, BackupPolicy) {
    let mut sim = Sim::start().await;
    let ctx = Arc::get_mut(&mut sim.ctx).expect("one owner");
    ctx.notifications.backoff = Duration::from_millis(10);
    ctx.notifications.fold_window = window;
    sim.create::<k8s_openapi::api::core::v1::Secret>(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: shop}}\nstringData: {{ops: {base}/hook/t0ken}}\n"
    ))
    .await;
    let policy = sim
        .create::<BackupPolicy>(
            "apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: shop}
spec:
  source: {postgres: {host: db, port: 5432, database: shop, user: u}}
  storageRef: {name: main}
  schedule: \"0 2 * * *\"
  notifications:
    - {name: ops, events: [BackupFailed], webhook: {urlSecretRef: {name: hooks, key: ops}}}
",
        )
        .await;
    (sim, policy)
}

fn failure(name: &str, second: u32) -> Notification {
    Notification {
        event: NotificationEvent::BackupFailed,
        namespace: "shop".into(),
        policy: "nightly".into(),
        kind: "BackupRun".into(),
        name: name.into(),
        reason: "DumpFailed".into(),
        message: "pg_dump exited 1".into(),
        time: format!("2026-11-23T02:00:{second:02}Z").parse().unwrap(),
        details: Details::default(),
    }
}

async fn pending(sim: &Sim) -> BTreeMap<String, crate::api::backup_policy::PendingNotification> {
    let api: Api<BackupPolicy> = Api::namespaced(sim.ctx.client.clone(), "shop");
    api.get("nightly")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
        .pending_notifications
}

async fn wait_until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_storm_is_one_message_then_a_digest_and_nothing_stays_pending() {
    let (base, seen) = receiver().await;
    let (sim, policy) = setup(&base, Duration::from_secs(2)).await;
    for (i, name) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
        sim.ctx.notify(&policy, failure(name, i as u32));
    }
    wait_until("the first failure", async || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    // The others are folded: nothing more until the window closes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let got = seen.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].2["object"]["name"], "r1");
        assert_eq!(got[0].1, outbox::key(&failure("r1", 0), "ops"));
    }
    wait_until("the digest", async || seen.lock().unwrap().len() == 2).await;
    let digest = seen.lock().unwrap()[1].2.clone();
    assert_eq!(digest["object"]["name"], "r4");
    assert_eq!(digest["details"]["digest"]["count"], 3);
    assert_eq!(
        digest["details"]["digest"]["names"],
        serde_json::json!(["r2", "r3", "r4"])
    );
    assert!(
        digest["message"]
            .as_str()
            .unwrap()
            .starts_with("3 more BackupFailed (DumpFailed) since "),
        "{digest}"
    );
    assert!(
        digest["text"]
            .as_str()
            .unwrap()
            .contains("3 more identical notifications were folded into this one (r2, r3, r4).")
    );
    wait_until("the records removed", async || {
        pending(&sim).await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_record_left_by_an_earlier_operator_is_sent_again_with_its_key() {
    let (base, seen) = receiver().await;
    let (sim, _) = setup(&base, Duration::from_secs(600)).await;
    // What an operator killed after recording (and before delivering) leaves behind.
    let n = failure("r9", 9);
    let key = outbox::key(&n, "ops");
    let records = BTreeMap::from([(key.clone(), outbox::record(&n, "ops"))]);
    outbox::add(&sim.ctx.client, "shop", "nightly", &records)
        .await
        .unwrap();
    // A record of a rule that no longer exists is dropped, not sent.
    let gone = BTreeMap::from([("gone-key".to_string(), outbox::record(&n, "removed-rule"))]);
    outbox::add(&sim.ctx.client, "shop", "nightly", &gone)
        .await
        .unwrap();
    assert_eq!(pending(&sim).await.len(), 2);

    let policy: BackupPolicy = sim.get("shop", "nightly").await;
    sim.ctx.resume_notifications(&policy);
    // Resuming twice (another reconcile while it is being sent) sends it once.
    sim.ctx.resume_notifications(&policy);
    wait_until("the resent notification", async || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    wait_until("the records removed", async || {
        pending(&sim).await.is_empty()
    })
    .await;
    // A reconcile of the policy as it was read before the removal sends nothing again.
    sim.ctx.resume_notifications(&policy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, key);
    assert_eq!(got[0].2["id"], key.as_str());
    assert_eq!(got[0].2["object"]["name"], "r9");
    assert_eq!(got[0].2["time"], "2026-11-23T02:00:09Z");
}
