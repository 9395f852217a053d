//! The reconcile wrapper's telemetry, seen from outside: after the operator reconciles an
//! object, `/metrics` serves the reconcile duration histogram for that controller.

use std::time::{Duration, Instant};

use dataguardian::api::BackupRun;

use crate::harness::{Cluster, Operator, manual_run, reason, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_durations_show_on_metrics_after_a_reconcile() {
    let _serial = crate::serial().await;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("telemetry");
    let operator = Operator::start(&cluster, "dataguardian-system", "telemetry-op");
    operator.wait_ready(Duration::from_secs(60)).await;

    // A run whose policy does not exist: the run controller reconciles it and reports why it
    // waits — a successful reconcile with no Job.
    cluster.apply(&manual_run(&ns, "orphan", "missing-policy"));
    wait_for::<BackupRun, _>(
        &cluster,
        Some(&operator),
        &ns,
        "orphan",
        Duration::from_secs(60),
        "the run's status names the missing policy",
        |r| !reason(r).is_empty(),
    )
    .await;

    let count =
        r#"dataguardian_reconcile_duration_seconds_count{controller="backuprun",result="ok"} "#;
    let bucket = r#"dataguardian_reconcile_duration_seconds_bucket{le="0.001",controller="backuprun",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (code, body) = operator.http_get("/metrics").expect("metrics");
        assert_eq!(code, 200, "{body}");
        let observed = body
            .lines()
            .find_map(|l| l.strip_prefix(count))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if observed >= 1 || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        metrics.contains("# TYPE dataguardian_reconcile_duration_seconds histogram"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(count)),
        "no backuprun reconcile was timed:\n{metrics}"
    );
    assert!(
        metrics.contains(bucket),
        "buckets start at 1 ms:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"dataguardian_reconciles_total{controller="backuprun"}"#),
        "{metrics}"
    );
}

/// One BackupRun is one trace: the operator's reconciles and its Job creation, and the agent's
/// spans inside the Job's container, share the trace id that `status.traceId` shows; the
/// agent's root span is a child of the operator's `create_job` span; the run's root span spans
/// the run. No span carries a secret or a connection string.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_backup_run_is_one_trace_from_the_operator_into_the_job() {
    use crate::backup::{RUN_TIMEOUT, finished, scenario_with};
    use crate::harness::{jobs, phase};
    use testkit::{OtlpReceiver, ReceivedSpan};

    let _serial = crate::serial().await;
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let endpoint = receiver.grpc_endpoint();
    let s = scenario_with(
        "traces",
        "0 0 1 1 *",
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    s.cluster.apply(&manual_run(&s.ns, "traced", "shop"));
    let run = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "traced",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(phase(&run).as_deref(), Some("Succeeded"), "{run:?}");
    let trace_id = run
        .status
        .as_ref()
        .and_then(|st| st.trace_id.clone())
        .expect("status.traceId is recorded");
    assert_eq!(trace_id.len(), 32);
    // `kubectl dataguardian trace` shows it, for a jump to the tracing backend.
    let (code, out, err) = s.cluster.plugin(&["trace", "traced", "-n", &s.ns]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), trace_id);

    // The Job carries the run's trace context and the exporter settings.
    let job_name = run
        .status
        .as_ref()
        .and_then(|st| st.job_name.clone())
        .unwrap();
    let job = jobs(&s.cluster, &s.ns)
        .await
        .remove(&job_name)
        .expect("the Job");
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let traceparent = value("TRACEPARENT").expect("TRACEPARENT in the Job");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some(endpoint.as_str())
    );

    let in_trace = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|x| x.trace_id == trace_id)
            .cloned()
            .collect()
    };
    let spans = receiver
        .wait_for(
            "the run's root span and the agent's spans",
            Duration::from_secs(60),
            |spans| {
                let t = in_trace(spans);
                t.iter().any(|x| x.name == "BackupRun")
                    && t.iter().any(|x| x.name == "agent backup")
                    && t.iter().any(|x| x.name == "confirm_artifact")
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", s.operator.log()));
    let trace = in_trace(&spans);
    let one = |name: &str| {
        trace
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let root = one("BackupRun");
    assert_eq!(
        root.parent_span_id, "",
        "the run's root span is the trace's root"
    );
    assert_eq!(root.service, "dataguardian-operator");
    assert_eq!(root.attribute("dataguardian.reason"), Some("Completed"));
    let reconciles: Vec<&ReceivedSpan> = trace.iter().filter(|x| x.name == "reconcile").collect();
    assert!(!reconciles.is_empty());
    assert!(
        reconciles.iter().all(|r| r.parent_span_id == root.span_id),
        "every reconcile of the run is a child of the run's root span"
    );
    let create = one("create_job");
    assert_eq!(create.attribute("k8s.job.name"), Some(job_name.as_str()));
    assert!(
        traceparent.contains(&create.span_id),
        "{traceparent} names the create_job span"
    );
    let agent = one("agent backup");
    assert_eq!(agent.service, "dataguardian-agent");
    assert_eq!(
        agent.parent_span_id, create.span_id,
        "the agent continues the operator's trace"
    );
    assert_eq!(
        agent.resource_attribute("k8s.namespace.name"),
        Some(s.ns.as_str())
    );
    for name in ["connect", "dump", "upload_part", "confirm", "manifest"] {
        one(name);
    }
    one("confirm_artifact");

    // The secrets scan: every span received, operator's and agent's.
    assert_no_secret_in_spans(&receiver, &s.services);
    // The scrape: the run's duration bucket carries its trace id as exemplar (OpenMetrics),
    // the storage is up, and the policy's stored bytes and artifacts are counted.
    let size = run
        .status
        .as_ref()
        .and_then(|st| st.artifact.as_ref())
        .map(|a| a.size_bytes)
        .expect("the artifact");
    let expected = [
        format!("# {{trace_id=\"{trace_id}\"}}"),
        format!(
            r#"dataguardian_storage_up{{namespace="{}",storage="main"}} 1"#,
            s.ns
        ),
        format!(
            r#"dataguardian_policy_stored_bytes{{namespace="{}",policy="shop",storage="main"}} {size}"#,
            s.ns
        ),
        format!(
            r#"dataguardian_policy_stored_artifacts{{namespace="{}",policy="shop",storage="main"}} 1"#,
            s.ns
        ),
        "dataguardian_build_info{version=".to_string(),
    ];
    let missing = |metrics: &str| -> Vec<String> {
        expected
            .iter()
            .filter(|e| {
                !metrics.lines().any(|l| {
                    l.contains(e.as_str())
                        && (!e.starts_with("# {")
                            || l.starts_with("dataguardian_backup_duration_seconds_bucket"))
                })
            })
            .cloned()
            .collect()
    };
    // The policy's figures follow its next reconcile after the run finished.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, metrics) = s.operator.http_get("/metrics").expect("metrics");
        assert_eq!(code, 200);
        let gone = missing(&metrics);
        if gone.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{gone:?} not in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Log lines inside the trace carry its id.
    assert!(
        s.operator
            .log()
            .contains(&format!("\"trace_id\":\"{trace_id}\"")),
        "the operator's log names the trace"
    );
}

/// A restore and a validation are one trace each, like a backup: the operator's root span for
/// the object, its `create_job` span, and the agent's spans inside the Job (the agent's root a
/// child of `create_job`; one span per validation check). A failing backup's trace carries the
/// error on the run's root span and on the agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restores_validations_and_failures_are_one_trace_each() {
    use crate::backup::scenario_with;
    use crate::harness::phase;
    use dataguardian::api::{RestoreRun, RestoreValidation};
    use testkit::{OtlpReceiver, ReceivedSpan};

    let _serial = crate::serial().await;
    let receiver = OtlpReceiver::start().expect("OTLP receiver");
    let endpoint = receiver.http_endpoint();
    let s = scenario_with(
        "traces2",
        "0 0 1 1 *",
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    s.backup("b1").await;

    // The spans of one trace once `done` holds for them, and checks common to every kind:
    // the root span is the operator's and has no parent; the agent's root is a child of the
    // operator's `create_job` span for `job`.
    let trace_of = |trace_id: String, root: &'static str, agent: &'static str, also: &[&str]| {
        let also: Vec<String> = also.iter().map(|x| x.to_string()).collect();
        let in_trace = move |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
            spans
                .iter()
                .filter(|x| x.trace_id == trace_id)
                .cloned()
                .collect()
        };
        let spans = receiver
            .wait_for(
                &format!("the {root} trace"),
                Duration::from_secs(60),
                |spans| {
                    let t = in_trace(spans);
                    t.iter().any(|x| x.name == root)
                        && t.iter().any(|x| x.name == agent)
                        && also.iter().all(|n| t.iter().any(|x| &x.name == n))
                },
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", s.operator.log()));
        let trace = in_trace(&spans);
        let one = |name: &str| -> ReceivedSpan {
            trace
                .iter()
                .find(|x| x.name == name)
                .cloned()
                .unwrap_or_else(|| panic!("no span {name}"))
        };
        let (r, create, a) = (one(root), one("create_job"), one(agent));
        assert_eq!(r.parent_span_id, "", "{root} is the trace's root");
        assert_eq!(r.service, "dataguardian-operator");
        assert_eq!(a.service, "dataguardian-agent");
        assert_eq!(
            a.parent_span_id, create.span_id,
            "{agent} continues the operator's trace"
        );
        trace
    };

    // A restore.
    s.cluster
        .apply(&s.restore_yaml("traced-restore", "b1", "shop_traced", ""));
    let r: RestoreRun = s.restore_finished("traced-restore").await;
    let st = r.status.clone().unwrap();
    assert_eq!(format!("{:?}", st.phase.unwrap()), "Succeeded", "{st:#?}");
    let trace_id = st.trace_id.clone().expect("status.traceId of the restore");
    let trace = trace_of(
        trace_id.clone(),
        "RestoreRun",
        "agent restore",
        &["artifact"],
    );
    let create = trace.iter().find(|x| x.name == "create_job").unwrap();
    assert_eq!(create.attribute("k8s.job.name"), st.job_name.as_deref());
    let (code, out, err) = s.cluster.plugin(&["trace", "traced-restore", "-n", &s.ns]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), trace_id);

    // A validation: one span per check, a failed check an error.
    s.cluster.apply(&s.validation_yaml(
        "traced-validation",
        "b1",
        "    - {name: orders, sql: \"SELECT count(*) FROM orders\", expect: {equals: 500}}\n    - {name: too-few, sql: \"SELECT count(*) FROM customers\", expect: {equals: 1}}\n",
    ));
    let v: RestoreValidation = s.validation_finished("traced-validation").await;
    let vst = v.status.clone().unwrap();
    let trace_id = vst
        .trace_id
        .clone()
        .expect("status.traceId of the validation");
    let trace = trace_of(
        trace_id,
        "RestoreValidation",
        "agent validate",
        &["checks", "check"],
    );
    let checks: Vec<&ReceivedSpan> = trace.iter().filter(|x| x.name == "check").collect();
    assert_eq!(checks.len(), 2, "{checks:#?}");
    let by_check = |n: &str| {
        checks
            .iter()
            .find(|c| c.attribute("check.name") == Some(n))
            .unwrap_or_else(|| panic!("no span for check {n}"))
    };
    assert_ne!(by_check("orders").status_code, 2);
    assert_eq!(
        by_check("too-few").status_code,
        2,
        "a failed check is an error"
    );

    // A failing backup: a database nobody listens on.
    let closed_port = testkit::free_port();
    s.cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: unreachable, namespace: {ns}}}
spec:
  source: {{postgres: {{host: "127.0.0.1", port: {closed_port}, database: shop, user: postgres, passwordSecretRef: {{name: db-creds, key: password}}}}}}
  storageRef: {{name: main}}
  schedule: "0 0 1 1 *"
  backoffLimit: 0
"#,
        ns = s.ns
    ));
    let run = s.run_to_end("doomed", "unreachable").await;
    assert_eq!(phase(&run).as_deref(), Some("Failed"), "{:#?}", run.status);
    let trace_id = run
        .status
        .as_ref()
        .and_then(|st| st.trace_id.clone())
        .expect("status.traceId of the failed run");
    let trace = trace_of(trace_id, "BackupRun", "agent backup", &["connect"]);
    let one = |name: &str| trace.iter().find(|x| x.name == name).unwrap();
    let root = one("BackupRun");
    assert_eq!(
        root.status_code, 2,
        "the run's failure is its root's status"
    );
    assert_eq!(
        root.attribute("dataguardian.reason"),
        Some(reason(&run).as_str())
    );
    let agent = one("agent backup");
    assert_eq!(
        agent.status_code, 2,
        "the agent's root span carries the error"
    );
    assert!(!agent.status_message.is_empty());
    assert_eq!(one("connect").status_code, 2);

    // Nothing secret in any span of the three traces.
    assert_no_secret_in_spans(&receiver, &s.services);
}

/// No span received so far, operator's or agent's, carries the database password, the S3
/// secret key or a connection string.
fn assert_no_secret_in_spans(
    receiver: &testkit::OtlpReceiver,
    services: &crate::harness::Services,
) {
    let secrets = [
        services.pg.password(),
        services.s3.secret_access_key(),
        "postgres://",
        "postgresql://",
    ];
    for span in receiver.spans() {
        for text in span.texts() {
            for secret in &secrets {
                assert!(
                    !text.contains(secret),
                    "span {} carries {secret:?}",
                    span.name
                );
            }
        }
    }
}
