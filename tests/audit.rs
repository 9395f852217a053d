//! The WORM audit trail against a real S3 server (moto, with Object Lock): every segment carries
//! retention headers; `audit verify`'s reading of the chain finds a deleted segment and a flipped
//! byte, each with its location; the sink down for a while loses nothing; a restarted writer
//! re-sends only what the chain lacks; a spooled record (the API stand-in, as the operator's
//! ServiceAccount) outlives a writer killed while S3 is down (docs/audit.md).

use std::time::{Duration, Instant};

use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{TimeZone, Utc};
use dataguardian::api::backup_storage::{ObjectLock, ObjectLockMode, S3Storage};
use dataguardian::audit::chain::{ProblemKind, segment_key};
use dataguardian::audit::record::{AuditAction, AuditRecord, record_id};
use dataguardian::audit::sink::{AuditSink, AuditTarget, SinkSettings};
use dataguardian::audit::spool::{SPOOL_LABEL, Spool, SpoolError, SpoolLimits, entry_name};
use dataguardian::controller::common::storage_access::StorageAccess;
use dataguardian::egress::EgressPolicy;
use dataguardian::telemetry::metrics::Metrics;
use testkit::{FaultPlan, FaultyProxy, Moto};

const PREFIX: &str = "trail";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn access(rt: &tokio::runtime::Runtime, endpoint: &str, bucket: &str) -> StorageAccess {
    let s3: S3Storage = serde_json::from_value(serde_json::json!({
        "bucket": bucket,
        "region": testkit::REGION,
        "endpoint": endpoint,
        "forcePathStyle": true,
        "prefix": format!("{PREFIX}/"),
    }))
    .unwrap();
    let creds = Credentials::new(
        testkit::ACCESS_KEY_ID,
        testkit::SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    rt.block_on(StorageAccess::connect(
        &s3,
        Some(creds),
        &EgressPolicy::from_list("127.0.0.0/8").unwrap(),
    ))
}

fn record(ns: &str, n: u64) -> AuditRecord {
    let uid = format!("uid-{ns}-{n}");
    AuditRecord {
        id: record_id(&uid, AuditAction::RestoreFinished, ""),
        time: Utc.timestamp_opt(1_800_000_000 + n as i64, 0).unwrap(),
        action: AuditAction::RestoreFinished,
        namespace: ns.into(),
        kind: "RestoreRun".into(),
        name: format!("restore-{n}"),
        uid,
        actor: Some("alice".into()),
        approver: Some("bob".into()),
        outcome: Some("Succeeded".into()),
        reason: None,
        detail: None,
    }
}

fn settings(max: usize) -> SinkSettings {
    SinkSettings {
        flush_interval: Duration::from_millis(200),
        max_records_per_segment: max,
        tail_segments: 16,
        retry_after: Duration::from_millis(100),
    }
}

fn lock() -> Option<ObjectLock> {
    Some(ObjectLock {
        mode: ObjectLockMode::Governance,
        days: 1,
    })
}

fn full_key(ns: &str, i: u64) -> String {
    format!("{PREFIX}/{}", segment_key(ns, i))
}

#[test]
fn every_segment_is_locked_and_verify_finds_a_deleted_segment_and_a_flipped_byte() {
    let moto = Moto::start().expect("moto");
    moto.create_bucket_with_object_lock("audit").unwrap();
    let rt = rt();
    let access = access(&rt, &moto.endpoint(), "audit");
    let sink = AuditSink::new(
        AuditTarget {
            access: access.clone(),
            lock: lock(),
        },
        settings(3),
        Metrics::new(),
    );
    assert_eq!(sink.offer((0..10).map(|n| record("shop", n)).collect()), 10);
    assert_eq!(
        sink.offer((0..2).map(|n| record("billing", n)).collect()),
        2
    );
    assert_eq!(rt.block_on(sink.flush()).unwrap(), 12);
    assert_eq!(sink.pending(), 0);
    // Offered again: already written, nothing queued.
    assert_eq!(sink.offer((0..10).map(|n| record("shop", n)).collect()), 0);

    // Four segments for shop (3+3+3+1), one for billing, each under Object Lock retention.
    let client = moto.s3_client();
    let mut keys = moto.list_keys("audit", PREFIX).unwrap();
    keys.sort();
    let mut expected: Vec<String> = (0..4).map(|i| full_key("shop", i)).collect();
    expected.push(full_key("billing", 0));
    expected.sort();
    assert_eq!(keys, expected);
    for key in &keys {
        let head = rt
            .block_on(client.head_object().bucket("audit").key(key).send())
            .unwrap();
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("GOVERNANCE"),
            "{key}"
        );
        let until = head.object_lock_retain_until_date().expect("retain-until");
        assert!(until.secs() > Utc::now().timestamp() + 3600, "{key}");
        let info = rt.block_on(access.head(key)).unwrap();
        assert!(info.retain_until.is_some(), "{key}");
    }

    let (report, records) = rt
        .block_on(dataguardian::audit::read_chain(&access, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.segments, report.records), (4, 10));
    assert_eq!(
        records,
        (0..10).map(|n| record("shop", n)).collect::<Vec<_>>()
    );
    assert_eq!(
        rt.block_on(dataguardian::audit::namespaces(&access))
            .unwrap(),
        vec!["billing".to_string(), "shop".to_string()]
    );

    // A deleted segment (a delete marker in the locked bucket): missing, with its location.
    rt.block_on(
        client
            .delete_object()
            .bucket("audit")
            .key(full_key("shop", 1))
            .send(),
    )
    .unwrap();
    // A flipped byte in another: a new version with one byte changed.
    let mut bytes = moto.get_object("audit", &full_key("shop", 2)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    rt.block_on(
        client
            .put_object()
            .bucket("audit")
            .key(full_key("shop", 2))
            .body(ByteStream::from(bytes))
            .send(),
    )
    .unwrap();
    let (report, _) = rt
        .block_on(dataguardian::audit::read_chain(&access, "shop"))
        .unwrap();
    let found: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.index, p.location.clone()))
        .collect();
    assert!(
        found.contains(&(
            ProblemKind::Missing,
            1,
            format!("s3://audit/{}", full_key("shop", 1))
        )),
        "{report:#?}"
    );
    assert!(
        found.contains(&(
            ProblemKind::Altered,
            2,
            format!("s3://audit/{}", full_key("shop", 2))
        )),
        "{report:#?}"
    );
    assert!(
        found.iter().all(|(_, i, _)| [1, 2].contains(i)),
        "{report:#?}"
    );
    // The other namespace's chain is untouched.
    let (billing, _) = rt
        .block_on(dataguardian::audit::read_chain(&access, "billing"))
        .unwrap();
    assert!(billing.is_intact(), "{billing:?}");
}

#[test]
fn a_flipped_byte_is_found_without_versioning_too() {
    // An unversioned bucket keeps no trace of an overwrite: the seal and the chain find it.
    let moto = Moto::start().expect("moto");
    moto.create_bucket("plain").unwrap();
    let rt = rt();
    let access = access(&rt, &moto.endpoint(), "plain");
    let sink = AuditSink::new(
        AuditTarget {
            access: access.clone(),
            lock: None,
        },
        settings(2),
        Metrics::new(),
    );
    sink.offer((0..6).map(|n| record("shop", n)).collect());
    assert_eq!(rt.block_on(sink.flush()).unwrap(), 6);
    for index in [0u64, 2] {
        let key = full_key("shop", index);
        let original = moto.get_object("plain", &key).unwrap();
        let mut bytes = original.clone();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x01;
        moto.put_object("plain", &key, bytes).unwrap();
        let (report, _) = rt
            .block_on(dataguardian::audit::read_chain(&access, "shop"))
            .unwrap();
        assert_eq!(report.problems.len(), 1, "segment {index}: {report:#?}");
        assert_eq!(report.problems[0].kind, ProblemKind::Altered);
        assert_eq!(report.problems[0].index, index);
        assert_eq!(report.problems[0].location, format!("s3://plain/{key}"));
        moto.put_object("plain", &key, original).unwrap();
    }
    let (report, _) = rt
        .block_on(dataguardian::audit::read_chain(&access, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[test]
fn the_sink_down_for_a_while_loses_nothing_and_a_restart_resends_only_what_is_missing() {
    let moto = Moto::start().expect("moto");
    moto.create_bucket_with_object_lock("audit").unwrap();
    let proxy = FaultyProxy::start(moto.addr(), FaultPlan::PassThrough).unwrap();
    let rt = rt();
    let through_proxy = access(&rt, &proxy.endpoint(), "audit");
    let direct = access(&rt, &moto.endpoint(), "audit");
    let metrics = Metrics::new();
    let sink = AuditSink::new(
        AuditTarget {
            access: through_proxy.clone(),
            lock: lock(),
        },
        settings(4),
        metrics.clone(),
    );
    let writer = rt.spawn(sink.clone().run());
    let wait_empty = |what: &str| {
        let started = Instant::now();
        while sink.pending() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: {} records still pending",
                sink.pending()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    sink.offer((0..5).map(|n| record("shop", n)).collect());
    wait_empty("before the outage");

    // The storage goes away: records stay pending, failures are counted.
    proxy.set_plan(FaultPlan::RefuseAll);
    sink.offer((5..12).map(|n| record("shop", n)).collect());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sink.pending(),
        7,
        "nothing is dropped while the storage is down"
    );
    let exposition = metrics.encode();
    let value = |name: &str| -> f64 {
        exposition
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in\n{exposition}"))
    };
    // At least the first segment's records (4 a segment) were in a failed write.
    assert!(
        value("dataguardian_audit_records_failed_total") >= 4.0,
        "{exposition}"
    );
    assert_eq!(value("dataguardian_audit_records_pending"), 7.0);
    assert!(value("dataguardian_audit_oldest_pending_seconds") > 0.0);

    // Back: everything is written, once, in an intact chain.
    proxy.set_plan(FaultPlan::PassThrough);
    wait_empty("after the outage");
    let (report, records) = rt
        .block_on(dataguardian::audit::read_chain(&direct, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    let ids: Vec<_> = records.iter().map(|r| r.id.clone()).collect();
    let expected: Vec<_> = (0..12).map(|n| record("shop", n).id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(sorted, want, "every record exactly once");
    writer.abort();

    // A restarted operator offers everything its objects' status shows again, plus one new
    // record: only the new one is written.
    let restarted = AuditSink::new(
        AuditTarget {
            access: direct.clone(),
            lock: lock(),
        },
        settings(4),
        Metrics::new(),
    );
    restarted.offer((0..13).map(|n| record("shop", n)).collect());
    assert_eq!(rt.block_on(restarted.flush()).unwrap(), 1);
    let (report, records) = rt
        .block_on(dataguardian::audit::read_chain(&direct, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(records.len(), 13);
    assert_eq!(records.last().unwrap().id, record("shop", 12).id);
}

#[test]
fn a_restarted_writer_skips_what_older_segments_hold_beyond_the_tail_it_reads() {
    // The writer reads only the chain's last 2 segments: records older than those are taken as
    // written (the status of an object finished long ago), newer ones are compared by id.
    let moto = Moto::start().expect("moto");
    moto.create_bucket("plain").unwrap();
    let rt = rt();
    let access = access(&rt, &moto.endpoint(), "plain");
    let target = || AuditTarget {
        access: access.clone(),
        lock: None,
    };
    let tail = |max| SinkSettings {
        tail_segments: 2,
        ..settings(max)
    };
    let first = AuditSink::new(target(), tail(2), Metrics::new());
    // 10 records two hours apart: 5 segments of 2.
    let spaced = |n: u64| {
        let mut r = record("shop", n);
        r.time = Utc
            .timestamp_opt(1_800_000_000 + n as i64 * 7200, 0)
            .unwrap();
        r
    };
    first.offer((0..10).map(spaced).collect());
    assert_eq!(rt.block_on(first.flush()).unwrap(), 10);
    let restarted = AuditSink::new(target(), tail(2), Metrics::new());
    restarted.offer((0..11).map(spaced).collect());
    assert_eq!(
        rt.block_on(restarted.flush()).unwrap(),
        1,
        "only the new record"
    );
    let (report, records) = rt
        .block_on(dataguardian::audit::read_chain(&access, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(records.len(), 11);
}

#[test]
fn a_running_writer_keeps_only_its_tail_and_writes_each_record_once() {
    // One writer over many segments, records as they happen: its head keeps the last 2
    // segments' ids (the older ones are among the ids it remembers); everything offered again
    // (a re-list) with one new record: only that one is written.
    let moto = Moto::start().expect("moto");
    moto.create_bucket("plain").unwrap();
    let rt = rt();
    let access = access(&rt, &moto.endpoint(), "plain");
    let target = || AuditTarget {
        access: access.clone(),
        lock: None,
    };
    let tail = || SinkSettings {
        tail_segments: 2,
        ..settings(3)
    };
    let start = Utc::now() - chrono::Duration::minutes(30);
    let live = |n: u64| {
        let mut r = record("shop", n);
        r.time = start + chrono::Duration::seconds(n as i64);
        r
    };
    let writer = AuditSink::new(target(), tail(), Metrics::new());
    // The watches' first lists are done: only then does a head let its oldest segments go.
    writer.history_offered();
    for n in (0..30).step_by(3) {
        writer.offer((n..n + 3).map(live).collect());
        assert_eq!(rt.block_on(writer.flush()).unwrap(), 3);
    }
    writer.offer((0..31).map(live).collect());
    assert_eq!(
        rt.block_on(writer.flush()).unwrap(),
        1,
        "only the new record"
    );
    let (report, records) = rt
        .block_on(dataguardian::audit::read_chain(&access, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.segments, 11);
    let mut ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 31, "each record once");
    assert_eq!(records.len(), 31);
}

#[test]
fn two_writers_never_overwrite_a_segment() {
    // A previous leader still writing while the new one starts (a handover): each segment key
    // is written once; the writer that lost the race reads the head again and continues after.
    let moto = Moto::start().expect("moto");
    moto.create_bucket_with_object_lock("audit").unwrap();
    let rt = rt();
    let access = access(&rt, &moto.endpoint(), "audit");
    let target = || AuditTarget {
        access: access.clone(),
        lock: lock(),
    };
    let old_leader = AuditSink::new(target(), settings(10), Metrics::new());
    old_leader.offer(vec![record("shop", 0)]);
    assert_eq!(rt.block_on(old_leader.flush()).unwrap(), 1);
    let new_leader = AuditSink::new(target(), settings(10), Metrics::new());
    new_leader.offer(vec![record("shop", 1)]);
    assert_eq!(rt.block_on(new_leader.flush()).unwrap(), 1);
    // The old leader's cached head still says segment 1 is next.
    old_leader.offer(vec![record("shop", 2)]);
    let err = rt.block_on(old_leader.flush()).unwrap_err().to_string();
    assert!(
        err.contains(&full_key("shop", 1)) && err.contains("another writer"),
        "{err}"
    );
    assert_eq!(old_leader.pending(), 1, "kept for the next attempt");
    assert_eq!(rt.block_on(old_leader.flush()).unwrap(), 1);
    let (report, records) = rt
        .block_on(dataguardian::audit::read_chain(&access, "shop"))
        .unwrap();
    assert!(report.is_intact(), "{report:#?}");
    assert_eq!(report.segments, 3);
    assert_eq!(
        records.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        ["restore-0", "restore-1", "restore-2"]
    );
}

/// The operator's ServiceAccount (config/rbac), whose namespace holds the audit spool.
const OPERATOR_NS: &str = "dataguardian-system";
const OPERATOR_SA: &str = "system:serviceaccount:dataguardian-system:dataguardian";

/// The API stand-in with `config/rbac/` applied, and a client acting as the operator's
/// ServiceAccount (so the spool works with exactly the permissions the operator is granted).
async fn api_as_operator() -> (kube_sim::RunningServer, kube::Client, kube::Client) {
    let sim = kube_sim::Server::start(kube_sim::ServerOptions {
        crds_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")),
        ..Default::default()
    })
    .await
    .expect("starting the API stand-in");
    let kubectl = |args: &[&str]| {
        let out = testkit::kubectl(sim.kubeconfig_path(), args, None);
        assert!(out.success(), "kubectl {}: {}", args.join(" "), out.stderr);
    };
    kubectl(&["create", "namespace", OPERATOR_NS]);
    let rbac = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rbac");
    kubectl(&["apply", "-k", &rbac.display().to_string()]);
    let admin = sim.client().await.expect("client");
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    cfg.auth_info.impersonate = Some(OPERATOR_SA.into());
    let operator = kube::Client::try_from(cfg).unwrap();
    (sim, admin, operator)
}

/// The names of the spool's ConfigMaps, as the cluster admin sees them.
async fn spool_entries(admin: &kube::Client) -> Vec<String> {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(admin.clone(), OPERATOR_NS);
    let mut names: Vec<String> = cms
        .list(&kube::api::ListParams::default().labels(&format!("{SPOOL_LABEL}=true")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    names.sort();
    names
}

#[test]
fn a_spooled_retention_record_outlives_its_writer_and_is_chained_exactly_once() {
    // The writer that spooled a retention deletion dies while the audit storage is down; the
    // next one reads the spool and writes the record — although the chain's tail holds only
    // records hours newer (a status-derived record that old would be taken as written) — then
    // removes the entry. A record spooled again after it was chained is dropped by id.
    let moto = Moto::start().expect("moto");
    moto.create_bucket_with_object_lock("audit").unwrap();
    let proxy = FaultyProxy::start(moto.addr(), FaultPlan::PassThrough).unwrap();
    let rt = rt();
    let through_proxy = access(&rt, &proxy.endpoint(), "audit");
    let direct = access(&rt, &moto.endpoint(), "audit");
    let (_sim, admin, operator) = rt.block_on(api_as_operator());
    let target = || AuditTarget {
        access: through_proxy.clone(),
        lock: lock(),
    };
    let tail = SinkSettings {
        tail_segments: 2,
        ..settings(2)
    };
    let spooled_at = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let deletion = AuditRecord {
        id: record_id("uid-policy", AuditAction::RetentionDeletion, "nightly-1"),
        time: spooled_at,
        action: AuditAction::RetentionDeletion,
        namespace: "shop".into(),
        kind: "BackupPolicy".into(),
        name: "nightly".into(),
        uid: "uid-policy".into(),
        actor: None,
        approver: None,
        outcome: None,
        reason: Some("Retention".into()),
        detail: Some("run nightly-1 and its artifact (KeepLast)".into()),
    };
    // What status shows: 10 records from 3 hours after the deletion on, 2 hours apart.
    let later = |n: u64| {
        let mut r = record("shop", n);
        r.time = spooled_at + chrono::Duration::hours(3 + 2 * n as i64);
        r
    };
    let spool = |max| {
        Spool::new(
            operator.clone(),
            OPERATOR_NS,
            SpoolLimits { max_entries: max },
        )
    };

    // The first leader.
    let metrics = Metrics::new();
    let first_spool = spool(10);
    rt.block_on(first_spool.load())
        .expect("an empty spool lists");
    let first = AuditSink::new(target(), tail.clone(), metrics.clone()).with_spool(first_spool);
    first.offer((0..10).map(later).collect());
    assert_eq!(rt.block_on(first.flush()).unwrap(), 10);
    // The audit storage goes away; retention spools its record, then deletes.
    proxy.set_plan(FaultPlan::RefuseAll);
    rt.block_on(first.offer_durably(deletion.clone()))
        .expect("spooled while S3 is down");
    assert_eq!(
        rt.block_on(spool_entries(&admin)),
        vec![entry_name(&deletion.id)]
    );
    assert!(
        metrics
            .encode()
            .lines()
            .any(|l| l == "dataguardian_audit_spool_entries 1"),
        "{}",
        metrics.encode()
    );
    assert!(rt.block_on(first.flush()).is_err());
    assert_eq!(first.pending(), 1);
    // SIGKILL: the process and its queue are gone, no last flush.
    drop(first);

    // A full spool refuses a new record (the action waits), and admits the one it holds.
    let full = spool(1);
    assert_eq!(rt.block_on(full.load()).unwrap(), vec![deletion.clone()]);
    let mut other = deletion.clone();
    other.id = record_id("uid-policy", AuditAction::RetentionDeletion, "nightly-2");
    let err = rt.block_on(full.write(&other)).unwrap_err();
    assert!(matches!(err, SpoolError::Full { max: 1 }), "{err}");
    rt.block_on(full.write(&deletion)).expect("already there");

    // The next leader, once S3 is back: status offers its records again, the spool its own.
    proxy.set_plan(FaultPlan::PassThrough);
    let second_spool = spool(10);
    let second = AuditSink::new(target(), tail.clone(), Metrics::new()).with_spool(second_spool);
    second.offer((0..10).map(later).collect());
    let back = rt.block_on(second.spool().unwrap().load()).unwrap();
    assert_eq!(back, vec![deletion.clone()]);
    assert_eq!(second.offer_spooled(back), 1);
    assert_eq!(
        rt.block_on(second.flush()).unwrap(),
        1,
        "only the spooled record is new"
    );
    assert_eq!(rt.block_on(second.release_confirmed()).unwrap(), 1);
    assert!(rt.block_on(spool_entries(&admin)).is_empty());
    let chained = |what: &str| {
        let (report, records) = rt
            .block_on(dataguardian::audit::read_chain(&direct, "shop"))
            .unwrap();
        assert!(report.is_intact(), "{what}: {report:#?}");
        assert_eq!(records.len(), 11, "{what}");
        assert_eq!(
            records.iter().filter(|r| **r == deletion).count(),
            1,
            "{what}: the deletion exactly once"
        );
    };
    chained("after the restart");

    // Yet another leader: retention, not finished, spools the same record again. The chain
    // has it: it is dropped by id and its entry removed.
    let third_spool = spool(10);
    rt.block_on(third_spool.load()).unwrap();
    let third = AuditSink::new(target(), tail, Metrics::new()).with_spool(third_spool);
    rt.block_on(third.offer_durably(deletion.clone())).unwrap();
    assert_eq!(rt.block_on(spool_entries(&admin)).len(), 1);
    assert_eq!(rt.block_on(third.flush()).unwrap(), 0);
    assert_eq!(rt.block_on(third.release_confirmed()).unwrap(), 1);
    assert!(rt.block_on(spool_entries(&admin)).is_empty());
    chained("after a second spooling");
}
