//! Restores and validations end to end: the real operator binary, the API stand-in (or a real
//! cluster), real PostgreSQL and S3; validation sandboxes are native sidecars of the Job's pod.

use std::time::Duration;

use dataguardian::api::{BackupPolicy, BackupRun, RestoreRun, RestoreValidation};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::backup::Scenario;
use crate::harness::{Webhooks, phase, wait_for, wait_for_events};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The backup scenario (storage `main`, policy `shop` that never fires on its own).
async fn scenario(ns: &str, extra_policy_spec: &str) -> Scenario {
    crate::backup::scenario(ns, "0 0 1 1 *", extra_policy_spec).await
}

impl Scenario {
    pub(crate) async fn backup(&self, name: &str) -> BackupRun {
        let run = self.run_to_end(name, "shop").await;
        assert_eq!(
            phase(&run).as_deref(),
            Some("Succeeded"),
            "{:#?}",
            run.status
        );
        run
    }

    pub(crate) fn restore_yaml(
        &self,
        name: &str,
        backup: &str,
        database: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {{name: {name}, namespace: {ns}}}
spec:
  backupRunRef: {{name: {backup}}}
  target: {{postgres: {endpoint}}}
  createDatabase: true
{extra}"#,
            ns = self.ns,
            endpoint = self.services.postgres_endpoint(database),
        )
    }

    pub(crate) async fn restore_finished(&self, name: &str) -> RestoreRun {
        wait_for::<RestoreRun, _>(
            &self.cluster,
            Some(&self.operator),
            &self.ns,
            name,
            TIMEOUT,
            "restore finished",
            |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_finished())
            },
        )
        .await
    }

    pub(crate) fn validation_yaml(&self, name: &str, backup: &str, checks: &str) -> String {
        format!(
            "apiVersion: dataguardian.io/v1alpha1\nkind: RestoreValidation\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  backupRunRef: {{name: {backup}}}\n  checks:\n{checks}",
            ns = self.ns
        )
    }

    pub(crate) async fn validation_finished(&self, name: &str) -> RestoreValidation {
        wait_for::<RestoreValidation, _>(
            &self.cluster,
            Some(&self.operator),
            &self.ns,
            name,
            TIMEOUT,
            "validation finished",
            |v| {
                v.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_finished())
            },
        )
        .await
    }

    pub(crate) fn count(&self, db: &str, table: &str) -> String {
        self.services
            .pg
            .psql(db, &format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .trim()
            .to_string()
    }
}

fn result(v: &RestoreValidation) -> String {
    v.status
        .as_ref()
        .and_then(|s| s.result)
        .map(|r| format!("{r:?}"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_validate_and_tamper() {
    let _serial = crate::serial().await;
    // Restore and validation outcomes go to the policy's webhook.
    let hooks = Webhooks::start().await;
    let s = scenario(
        "restore",
        "  notifications:\n    - name: dr\n      events: [RestoreSucceeded, RestoreFailed, ValidationPassed, ValidationFailed]\n      webhook: {urlSecretRef: {name: hooks, key: dr}}\n",
    )
    .await;
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: hooks, namespace: {}}}\nstringData: {{dr: \"{}/dr/tok-dr\"}}\n",
        s.ns, hooks.base
    ));
    let b1 = s.backup("b1").await;
    let artifact = b1.status.clone().unwrap().artifact.unwrap();

    // Backup → RestoreRun into a new database → identical content, checksum verified.
    s.cluster
        .apply(&s.restore_yaml("copy", "b1", "shop_copy", ""));
    let r = s.restore_finished("copy").await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        format!("{:?}", st.phase.unwrap()),
        "Succeeded",
        "{st:#?}\n{}",
        s.operator.log()
    );
    assert_eq!(s.count("shop_copy", "customers"), "50");
    assert_eq!(s.count("shop_copy", "orders"), "500");
    assert_eq!(
        s.services
            .pg
            .psql("shop_copy", "SELECT sum(total) FROM orders")
            .unwrap(),
        s.services
            .pg
            .psql("shop", "SELECT sum(total) FROM orders")
            .unwrap()
    );
    let checksum = st.checksum.expect("checksum in status");
    assert!(checksum.verified);
    assert_eq!(checksum.expected_sha256, artifact.sha256);
    assert!(st.job_name.is_some() && st.start_time.is_some() && st.completion_time.is_some());
    wait_for_events(&s.cluster, &s.ns, "copy", |events| {
        events
            .iter()
            .any(|e| e.starts_with("Started") && e.contains("b1") && e.contains("shop_copy"))
            && events.iter().any(|e| e.starts_with("Succeeded"))
    })
    .await;

    let doc = hooks
        .wait_for("/dr/tok-dr", |v| v["object"]["name"] == "copy")
        .await;
    assert_eq!(
        (doc["event"].as_str(), doc["object"]["kind"].as_str()),
        (Some("RestoreSucceeded"), Some("RestoreRun"))
    );
    assert_eq!(doc["policy"], "shop");
    assert!(
        doc["message"]
            .as_str()
            .is_some_and(|m| m.contains("shop_copy")),
        "{doc}"
    );

    // A failing SQL check → Failed with expected vs observed; the BackupRun is marked.
    s.cluster.apply(&s.validation_yaml(
        "v-fail",
        "b1",
        "    - {name: orders, sql: \"SELECT count(*) FROM orders\", expect: {equals: 5}}\n",
    ));
    let v = s.validation_finished("v-fail").await;
    assert_eq!(result(&v), "Failed", "{:#?}", v.status);
    let c = &v.status.as_ref().unwrap().checks[0];
    assert_eq!(
        (c.expected.as_deref(), c.observed.as_deref()),
        (Some("= 5"), Some("500")),
        "{c:?}"
    );
    let doc = hooks
        .wait_for("/dr/tok-dr", |v| v["object"]["name"] == "v-fail")
        .await;
    assert_eq!(doc["event"], "ValidationFailed");
    assert!(
        doc["message"].as_str().is_some_and(|m| m.contains("b1")),
        "{doc}"
    );
    let b = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "b1",
        TIMEOUT,
        "verification Failed",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| format!("{:?}", v.result) == "Failed")
        },
    )
    .await;
    assert_eq!(
        b.status.unwrap().phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "the backup's own status is untouched"
    );
    // The policy's Verified condition follows its newest finished validation.
    let p = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "policy Verified False",
        |p| {
            p.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Verified" && c.status == "False")
            })
        },
    )
    .await;
    let st = p.status.unwrap();
    let verified = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Verified")
        .unwrap();
    assert_eq!(verified.reason, "ValidationFailed", "{verified:?}");
    assert!(
        verified.message.contains("v-fail") && verified.message.contains("b1"),
        "{verified:?}"
    );

    // A passing validation → Passed, RTO measured, BackupRun verified (printer column).
    s.cluster.apply(&s.validation_yaml(
        "v-pass",
        "b1",
        "    - rowCounts: {}\n    - {sql: \"SELECT count(*) FROM orders\", expect: {min: 1}}\n    - schema: {tables: [customers, public.orders]}\n",
    ));
    let v = s.validation_finished("v-pass").await;
    let vs = v.status.clone().unwrap();
    assert_eq!(result(&v), "Passed", "{vs:#?}\n{}", s.operator.log());
    assert!(vs.restore_duration_seconds.unwrap() > 0.0);
    let doc = hooks
        .wait_for("/dr/tok-dr", |v| v["object"]["name"] == "v-pass")
        .await;
    assert_eq!(doc["event"], "ValidationPassed");
    assert_eq!(vs.checks.len(), 3);
    assert_eq!(vs.sandbox_image.as_deref(), Some("postgres:15"));
    wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "b1",
        TIMEOUT,
        "verified",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some_and(|v| format!("{:?}", v.result) == "Passed")
        },
    )
    .await;
    let table = s
        .cluster
        .kubectl(&["get", "backupruns", "-n", &s.ns])
        .unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("b1") && l.contains("Passed")),
        "{table}"
    );

    // A tampered artifact → RestoreRun Failed (ChecksumMismatch) with the target untouched,
    // and RestoreValidation Failed.
    let data_key = s
        .services
        .keys("e2e/")
        .into_iter()
        .find(|k| k.contains("/databases/") && !k.ends_with("manifest.json"))
        .expect("data key");
    let mut bytes = s
        .services
        .s3
        .get_object(&s.services.bucket, &data_key)
        .unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    s.services
        .s3
        .put_object(&s.services.bucket, &data_key, bytes)
        .unwrap();
    s.cluster
        .apply(&s.restore_yaml("tampered", "b1", "shop_tampered", ""));
    let r = s.restore_finished("tampered").await;
    let st = r.status.clone().unwrap();
    assert_eq!(format!("{:?}", st.phase.unwrap()), "Failed");
    assert_eq!(st.reason.as_deref(), Some("ChecksumMismatch"), "{st:#?}");
    let doc = hooks
        .wait_for("/dr/tok-dr", |v| v["object"]["name"] == "tampered")
        .await;
    assert_eq!(
        (doc["event"].as_str(), doc["reason"].as_str()),
        (Some("RestoreFailed"), Some("ChecksumMismatch"))
    );
    assert!(!st.checksum.unwrap().verified);
    let exists = s
        .services
        .pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop_tampered'",
        )
        .unwrap();
    assert_eq!(exists.trim(), "0", "the target was not touched");
    s.cluster
        .apply(&s.validation_yaml("v-tampered", "b1", "    - rowCounts: {}\n"));
    let v = s.validation_finished("v-tampered").await;
    assert_eq!(result(&v), "Failed", "{:#?}", v.status);
    wait_for_events(&s.cluster, &s.ns, "b1", |events| {
        events.iter().any(|e| e.starts_with("VerificationFailed"))
    })
    .await;

    // The shipped dashboard, every panel, against what a real Prometheus scraped from this
    // operator after backups, restores, validations and notifications.
    let prom = crate::harness::Prometheus::start(&s.operator.metrics_addr);
    let problems = prom.check_dashboard(Duration::from_secs(30));
    assert!(
        problems.is_empty(),
        "dashboard queries without data or invalid:\n{}\nPrometheus log:\n{}",
        problems.join("\n"),
        prom.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restores_to_one_target_are_serialized_with_queue_positions() {
    let _serial = crate::serial().await;
    let s = scenario("queue", "").await;
    s.backup("b1").await;
    for name in ["q1", "q2", "q3"] {
        s.cluster.apply(&s.restore_yaml(
            name,
            "b1",
            "shop_same",
            "  overwrite: true\n  clean: true\n",
        ));
    }
    // The last one waits its turn, with its place in the queue.
    wait_for::<RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "q3",
        TIMEOUT,
        "q3 queued with a position",
        |r| {
            r.status.as_ref().is_some_and(|st| {
                st.phase.is_some_and(|p| format!("{p:?}") == "Queued")
                    && st.queue_position.is_some()
            })
        },
    )
    .await;
    let api: Api<RestoreRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let mut saw_position = false;
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    loop {
        let runs = api.list(&ListParams::default()).await.unwrap().items;
        let running = runs
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| format!("{p:?}") == "Running")
            })
            .count();
        assert!(
            running <= 1,
            "two restores ran into the same database at once"
        );
        saw_position |= runs.iter().any(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.queue_position)
                .is_some_and(|p| p >= 1)
        });
        if runs.len() == 3
            && runs.iter().all(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_finished())
            })
        {
            for r in &runs {
                assert_eq!(
                    format!("{:?}", r.status.as_ref().unwrap().phase.unwrap()),
                    "Succeeded",
                    "{}: {:#?}",
                    r.name_any(),
                    r.status
                );
            }
            // Serialized: each started after the previous one finished.
            let mut spans: Vec<_> = runs
                .iter()
                .map(|r| {
                    let st = r.status.clone().unwrap();
                    (st.start_time.unwrap().0, st.completion_time.unwrap().0)
                })
                .collect();
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[1].0 >= w[0].1, "overlapping restores: {spans:?}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restores did not finish\n{}\n{}",
            s.cluster.diagnostics(&s.ns).await,
            s.operator.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        saw_position,
        "a waiting restore reported its queue position"
    );
    assert_eq!(s.count("shop_same", "orders"), "500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validations_beyond_the_global_limit_wait_in_a_queue() {
    let _serial = crate::serial().await;
    let s = crate::backup::scenario_with(
        "vqueue",
        "0 0 1 1 *",
        "",
        &[("DG_MAX_CONCURRENT_VALIDATIONS", "1")],
    )
    .await;
    s.backup("b1").await;
    for name in ["v1", "v2", "v3"] {
        s.cluster
            .apply(&s.validation_yaml(name, "b1", "    - rowCounts: {}\n"));
    }
    // One sandbox at a time: while v1 runs, v2 and v3 wait with their places in the queue.
    let queued = wait_for::<RestoreValidation, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "v3",
        Duration::from_secs(60),
        "v3 queued at position 2",
        |v| {
            v.status.as_ref().is_some_and(|st| {
                st.reason.as_deref() == Some("Queued") && st.queue_position == Some(2)
            })
        },
    )
    .await;
    let st = queued.status.unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Pending")
    );
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("position 2 of 2") && m.contains("1 concurrent")),
        "{st:#?}"
    );
    let validations: Api<RestoreValidation> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let mut max_running = 0;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let all = validations
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let running = all
            .iter()
            .filter(|v| {
                v.status.as_ref().is_some_and(|st| {
                    st.job_name.is_some() && !st.phase.is_some_and(|p| p.is_finished())
                })
            })
            .count();
        max_running = max_running.max(running);
        if all.len() == 3 && all.iter().all(|v| result(v) == "Passed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "validations did not all pass: {:#?}\n{}",
            all.iter().map(|v| &v.status).collect::<Vec<_>>(),
            s.operator.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(max_running, 1, "never more than one validation at a time");
    // The queue is gone with them.
    for v in validations
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        assert_eq!(v.status.unwrap().queue_position, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_policy_validates_its_backups_automatically() {
    let _serial = crate::serial().await;
    let s = scenario(
        "autovalidate",
        "  rto: 1h\n  validation: {everyNthBackup: 1, historyLimit: 2}\n",
    )
    .await;
    s.backup("b1").await;
    let v = s.validation_finished("b1-validation").await;
    assert_eq!(
        result(&v),
        "Passed",
        "{:#?}\n{}",
        v.status,
        s.operator.log()
    );
    assert_eq!(
        v.labels().get("dataguardian.io/policy").map(String::as_str),
        Some("shop")
    );
    let p = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        TIMEOUT,
        "policy Verified",
        |p| {
            p.status.as_ref().is_some_and(|st| {
                st.last_validation
                    .as_ref()
                    .is_some_and(|l| l.name == "b1-validation" && l.result.is_some())
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Verified" && c.status == "True")
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "RTOMet" && c.status == "True")
            })
        },
    )
    .await;
    let st = p.status.unwrap();
    assert_eq!(st.backups_since_validation, Some(0));
    // The restore the validation measured is within the policy's RTO of an hour.
    let rto = st.conditions.iter().find(|c| c.type_ == "RTOMet").unwrap();
    assert_eq!(rto.reason, "WithinObjective", "{rto:?}");
    assert!(
        rto.message.contains("b1-validation") && rto.message.contains("1h"),
        "{rto:?}"
    );
    let (code, metrics) = s.operator.http_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            r#"dataguardian_policy_rto_met{{namespace="{}",policy="shop"}} 1"#,
            s.ns
        )),
        "{metrics}"
    );
    wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "b1",
        TIMEOUT,
        "verified",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.verification.as_ref())
                .is_some()
        },
    )
    .await;
}
