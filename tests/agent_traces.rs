//! The agent's traces, received by a real OTLP receiver (testkit, gRPC and HTTP/protobuf):
//! a backup, a restore and a validation of the real `dataguardian agent` binary against real
//! PostgreSQL and moto S3 continue the trace handed to them in `TRACEPARENT`, with the spans the
//! issue names; log lines carry the ids; no span carries a secret, a connection string, SQL or
//! row data; and with the `OTEL_*` variables unset nothing is sent.

mod agent_common;

use std::time::Duration;

use agent_common::*;
use testkit::{Moto, OtlpReceiver, OtlpTransport, Postgres, ReceivedSpan};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const CANARY_ROW: &str = "row-canary-5d1c9e";
const CHECK_SQL: &str = "SELECT count(*) FROM canary WHERE v LIKE 'row-canary-%'";

fn names(spans: &[ReceivedSpan]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name} in {:?}", names(spans)))
}

/// Every span of `spans` is free of each of `secrets`.
fn scan(spans: &[ReceivedSpan], secrets: &[&str]) {
    for span in spans {
        for text in span.texts() {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "span {} carries {secret:?} in {text:?}",
                    span.name
                );
            }
        }
    }
}

/// Waits until a span named `root` has arrived (the agent flushes before it exits, so this is
/// quick), then returns every span of the trace `TRACE` received so far.
fn trace_with(receiver: &OtlpReceiver, root: &str) -> Vec<ReceivedSpan> {
    receiver
        .wait_for(root, Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.name == root)
        })
        .unwrap()
        .into_iter()
        .filter(|s| s.trace_id == TRACE)
        .collect()
}

fn otel_env<'a>(endpoint: &'a str, protocol: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("POD_NAMESPACE", "shop-ns"),
        ("POD_NAME", "shop-backup-abc12"),
    ]
}

#[test]
fn backup_restore_and_validation_continue_the_trace_handed_to_them() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 2); // ~6 MB raw: two 5 MiB parts uncompressed
    pg.psql(
        "shop",
        &format!("CREATE TABLE canary (v text); INSERT INTO canary VALUES ('{CANARY_ROW}')"),
    )
    .unwrap();
    let receiver = OtlpReceiver::start().unwrap();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let uri = pg.uri("shop");
    let endpoint = moto.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let (public, identity, age_secret) = age_keypair(tmp.path(), "id.txt");
    let identity_s = identity.display().to_string();
    let secrets = [
        pg.password(),
        uri.as_str(),
        testkit::SECRET_ACCESS_KEY,
        age_secret.as_str(),
        CANARY_ROW,
        CHECK_SQL,
        "postgres://",
        "postgresql://",
    ];

    // 1. A backup to S3 over OTLP/gRPC: a multipart upload with two parts.
    let grpc = receiver.grpc_endpoint();
    let mut env = s3_env();
    env.extend(otel_env(&grpc, "grpc"));
    env.push(("DG_URI", &uri));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));
    env.push(("TRACEPARENT", &traceparent));
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/shop",
            "--run-id",
            "traced",
            "--compression",
            "none",
            "--recipient",
            &public,
            "--s3-part-size-mib",
            "5",
        ],
        &env,
    );
    run.assert_ok();
    let spans = trace_with(&receiver, "agent backup");
    let root = one(&spans, "agent backup");
    assert_eq!(root.parent_span_id, PARENT, "the agent continues the trace");
    assert_eq!(root.service, "dataguardian-agent");
    assert_eq!(root.transport, OtlpTransport::Grpc);
    assert_eq!(
        root.resource_attribute("k8s.namespace.name"),
        Some("shop-ns")
    );
    assert_eq!(
        root.resource_attribute("k8s.pod.name"),
        Some("shop-backup-abc12")
    );
    for name in [
        "connect", "snapshot", "artifact", "dump", "confirm", "manifest",
    ] {
        one(&spans, name);
    }
    assert_eq!(
        one(&spans, "connect").attribute("db.system.name"),
        Some("postgresql")
    );
    let parts: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "upload_part").collect();
    assert!(parts.len() >= 2, "one span per part: {:?}", names(&spans));
    let dump = one(&spans, "dump");
    assert!(
        parts.iter().all(|p| p.parent_span_id == dump.span_id),
        "part uploads belong to the dump's stream"
    );
    let artifact = one(&spans, "artifact");
    assert_eq!(artifact.parent_span_id, root.span_id);
    assert_eq!(
        artifact.attribute("artifact.key"),
        Some("databases/shop.pgdump.age")
    );
    assert_eq!(
        artifact.attribute("artifact.size_bytes"),
        Some(run.summary["sizeBytes"].to_string().as_str())
    );
    assert!(spans.iter().all(|s| s.status_code != 2), "nothing failed");
    // The log lines inside the trace carry its ids.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(&format!("{{\"trace_id\":\"{TRACE}\",\"span_id\":\""))),
        "{}",
        run.stderr
    );
    scan(&spans, &secrets);

    // 2. A restore from S3 over OTLP/HTTP (binary protobuf), into a new database.
    let http = receiver.http_endpoint();
    let restore_trace = format!("00-{TRACE}-{}-01", "1111111111111111");
    let mut env = s3_env();
    env.extend(otel_env(&http, "http/protobuf"));
    env.push(("DG_URI", &uri));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));
    env.push(("TRACEPARENT", &restore_trace));
    let restored = run_agent(
        &[
            "restore",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/shop/traced/manifest.json",
            "--database",
            "shop_copy",
            "--create-database",
            "--identity-file",
            &identity_s,
        ],
        &env,
    );
    restored.assert_ok();
    let spans = trace_with(&receiver, "agent restore");
    let root = one(&spans, "agent restore");
    assert_eq!(root.parent_span_id, "1111111111111111");
    assert_eq!(root.transport, OtlpTransport::HttpProtobuf);
    for name in ["manifest", "connect", "artifact"] {
        assert!(
            spans
                .iter()
                .any(|s| s.name == name && s.transport == OtlpTransport::HttpProtobuf),
            "{name} in {:?}",
            names(&spans)
        );
    }
    scan(&spans, &secrets);

    // 3. A validation: one span per check, named, without its SQL or its values.
    let validate_trace = format!("00-{TRACE}-{}-01", "2222222222222222");
    let checks = format!(
        r#"[{{"name": "canary", "sql": "{CHECK_SQL}", "expect": {{"equals": 1}}}},
            {{"name": "too-few", "sql": "{CHECK_SQL}", "expect": {{"min": 5}}}},
            {{"rowCounts": {{}}}}]"#
    );
    let mut env = s3_env();
    env.extend(otel_env(&http, "http/protobuf"));
    env.push(("DG_URI", &uri));
    env.push(("DG_S3_ENDPOINT", &endpoint));
    env.push(("DG_S3_PATH_STYLE", "true"));
    env.push(("DG_CHECKS", &checks));
    env.push(("TRACEPARENT", &validate_trace));
    let validated = run_agent(
        &[
            "validate",
            "--engine",
            "postgres",
            "--from",
            "s3://backups/shop/traced/manifest.json",
            "--database",
            "shop_sandbox",
            "--identity-file",
            &identity_s,
            "--wait-seconds",
            "30",
        ],
        &env,
    );
    assert_eq!(
        validated.summary["result"], "Failed",
        "{}",
        validated.stdout
    );
    let spans = trace_with(&receiver, "agent validate");
    let root = one(&spans, "agent validate");
    assert_eq!(root.parent_span_id, "2222222222222222");
    one(&spans, "restore");
    let checks: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "check").collect();
    assert_eq!(checks.len(), 3, "{:?}", names(&spans));
    let by_name = |n: &str| {
        *checks
            .iter()
            .find(|c| c.attribute("check.name") == Some(n))
            .unwrap_or_else(|| panic!("no check span {n}"))
    };
    assert_eq!(by_name("canary").attribute("check.result"), Some("Passed"));
    assert_eq!(by_name("canary").attribute("check.kind"), Some("sql"));
    assert_eq!(by_name("too-few").attribute("check.result"), Some("Failed"));
    assert_eq!(
        by_name("too-few").status_code,
        2,
        "a failed check is an error"
    );
    assert_eq!(
        by_name("rowCounts-2").attribute("check.kind"),
        Some("rowCounts")
    );
    scan(&spans, &secrets);

    // Everything that arrived at all (not only this trace) passes the scan too.
    scan(&receiver.spans(), &secrets);
}

#[test]
fn a_failing_backup_marks_its_spans_failed_and_without_otel_nothing_is_sent() {
    let receiver = OtlpReceiver::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    // Nothing listens on this port: the connection fails.
    let port = testkit::free_port();
    let uri = format!("postgres://dg:hunter2-secret@127.0.0.1:{port}/shop");
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let http = receiver.http_endpoint();
    let mut env = otel_env(&http, "http/protobuf");
    env.push(("DG_URI", &uri));
    env.push(("TRACEPARENT", &traceparent));
    let failed = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "r1",
        ],
        &env,
    );
    assert_ne!(failed.code, 0);
    let spans = trace_with(&receiver, "agent backup");
    let root = one(&spans, "agent backup");
    assert_eq!(root.status_code, 2, "the failure is the root span's status");
    assert!(!root.status_message.is_empty());
    assert_eq!(one(&spans, "connect").status_code, 2);
    scan(&spans, &["hunter2-secret", &uri]);

    // The same run without the OTEL_* variables: no span reaches the receiver, no ids in logs.
    let before = receiver.spans().len();
    let quiet = run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "r2",
        ],
        &[("DG_URI", &uri), ("TRACEPARENT", &traceparent)],
    );
    assert_ne!(quiet.code, 0);
    assert!(!quiet.stderr.contains("trace_id"), "{}", quiet.stderr);
    // The agent flushes before it exits: had it exported anything, the receiver would hold it.
    assert_eq!(receiver.spans().len(), before, "nothing was sent");
}

#[test]
fn a_retried_part_upload_is_an_event_on_the_parts_span() {
    let pg = Postgres::start().unwrap();
    let moto = Moto::start().unwrap();
    moto.create_bucket("backups").unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 2);
    // The connection carrying the first part is cut once, 3 MiB into it; the retry succeeds.
    let proxy =
        testkit::FaultyProxy::start(moto.addr(), testkit::FaultPlan::CutOnceAfterBytes(3 << 20))
            .unwrap();
    let receiver = OtlpReceiver::start().unwrap();
    let http = receiver.http_endpoint();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let uri = pg.uri("shop");
    let endpoint = proxy.endpoint();
    let mut env = s3_env();
    env.extend(otel_env(&http, "http/protobuf"));
    env.extend([
        ("DG_URI", uri.as_str()),
        ("DG_S3_ENDPOINT", endpoint.as_str()),
        ("DG_S3_PATH_STYLE", "true"),
        ("TRACEPARENT", traceparent.as_str()),
    ]);
    let run = run_agent(
        &[
            "backup",
            "--engine",
            "postgres",
            "--to",
            "s3://backups/flaky",
            "--run-id",
            "r1",
            "--compression",
            "none",
            "--s3-part-size-mib",
            "5",
            "--s3-backoff-ms",
            "50",
        ],
        &env,
    );
    run.assert_ok();
    assert_eq!(proxy.stats().cuts, 1, "{:?}", proxy.stats());
    let spans = trace_with(&receiver, "agent backup");
    let retried: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "upload_part" && s.events.iter().any(|(n, _)| n == "retry"))
        .collect();
    assert_eq!(retried.len(), 1, "{spans:#?}");
    let (_, attributes) = retried[0]
        .events
        .iter()
        .find(|(n, _)| n == "retry")
        .unwrap();
    let attr = |k: &str| {
        attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(attr("attempt"), Some("1"));
    // 50 ms doubled per attempt, plus up to 25 % jitter.
    let waited: u64 = attr("retry_in_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((50..=63).contains(&waited), "retry_in_ms {waited}");
    assert!(attr("operation").is_some_and(|o| o.starts_with("UploadPart")));
    assert_ne!(retried[0].status_code, 2, "the retry succeeded");
    scan(&spans, &[pg.password(), testkit::SECRET_ACCESS_KEY, &uri]);
}

/// `agent prune` (a retention or copy-deletion Job on a filesystem storage) continues the trace
/// handed to it, over gRPC from a process without an async runtime; a refused prune marks its
/// root span failed.
#[test]
fn a_prune_continues_the_trace_and_a_refused_one_is_an_error() {
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    pg_fill(&pg, "shop", 1);
    let tmp = tempfile::tempdir().unwrap();
    let to = format!("file://{}", tmp.path().display());
    let uri = pg.uri("shop");
    run_agent(
        &[
            "backup", "--engine", "postgres", "--to", &to, "--run-id", "r1",
        ],
        &[("DG_URI", uri.as_str())],
    )
    .assert_ok();
    let manifest = tmp.path().join("r1/manifest.json");
    assert!(manifest.exists());

    let receiver = OtlpReceiver::start().unwrap();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let grpc = receiver.grpc_endpoint();
    let mut env = otel_env(&grpc, "grpc");
    env.push(("TRACEPARENT", &traceparent));
    let location = format!("file://{}", manifest.display());
    run_agent(&["prune", "--manifest", &location], &env).assert_ok();
    assert!(!manifest.exists(), "the prune deleted the manifest");
    let spans = trace_with(&receiver, "agent prune");
    let root = one(&spans, "agent prune");
    assert_eq!(root.parent_span_id, PARENT, "the prune continues the trace");
    assert_eq!(root.transport, OtlpTransport::Grpc);
    assert_ne!(root.status_code, 2);

    // An S3 location is refused (the operator deletes S3 artifacts itself): an error span.
    let http = receiver.http_endpoint();
    let mut env = otel_env(&http, "http/protobuf");
    env.push(("TRACEPARENT", &traceparent));
    let refused = run_agent(
        &["prune", "--manifest", "s3://backups/shop/r1/manifest.json"],
        &env,
    );
    assert_ne!(refused.code, 0);
    let failed = receiver
        .wait_for("the refused prune", Duration::from_secs(30), |spans| {
            spans
                .iter()
                .any(|s| s.name == "agent prune" && s.status_code == 2)
        })
        .unwrap();
    let root = failed
        .iter()
        .find(|s| s.name == "agent prune" && s.status_code == 2)
        .unwrap();
    assert_eq!(root.transport, OtlpTransport::HttpProtobuf);
    assert!(
        root.status_message.contains("file://"),
        "{}",
        root.status_message
    );
}
