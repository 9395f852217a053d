//! The backup control plane end to end: the real operator binary, the API stand-in (or a real
//! cluster), real PostgreSQL and S3.

use std::time::Duration;

use dataguardian::api::{BackupPolicy, BackupRun, BackupStorage, RestoreValidation};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

use crate::harness::{
    Cluster, Operator, Services, jobs, manual_run, phase, reason, wait_for, wait_for_events,
};

pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn storage_ready(s: &BackupStorage) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub fn finished(r: &BackupRun) -> bool {
    matches!(phase(r).as_deref(), Some("Succeeded") | Some("Failed"))
}

pub struct Scenario {
    pub cluster: Cluster,
    pub services: Services,
    pub operator: Operator,
    pub ns: String,
}

/// A cluster, the databases and S3, the operator, and a storage `main` (Ready) with a
/// PostgreSQL policy `shop` on `schedule` (plus `extra_policy_spec`) in namespace `ns`.
pub async fn scenario(ns: &str, schedule: &str, extra_policy_spec: &str) -> Scenario {
    scenario_with(ns, schedule, extra_policy_spec, &[]).await
}

/// [`scenario`], the operator started with `env` (its flags' variables).
pub async fn scenario_with(
    ns: &str,
    schedule: &str,
    extra_policy_spec: &str,
    env: &[(&str, &str)],
) -> Scenario {
    let cluster = Cluster::start().await;
    let services = Services::start();
    let ns = cluster.namespace(ns);
    let operator = Operator::start_with(&cluster, "dataguardian-system", "e2e-operator", env);
    operator.wait_ready(Duration::from_secs(60)).await;
    cluster.apply(&services.manifests(&ns, "shop", schedule, extra_policy_spec));
    wait_for::<BackupStorage, _>(
        &cluster,
        Some(&operator),
        &ns,
        "main",
        Duration::from_secs(60),
        "storage Ready",
        storage_ready,
    )
    .await;
    Scenario {
        cluster,
        services,
        operator,
        ns,
    }
}

impl Scenario {
    /// A manual BackupRun `name` of `policy`, followed until it finishes (either way).
    pub async fn run_to_end(&self, name: &str, policy: &str) -> BackupRun {
        self.cluster.apply(&manual_run(&self.ns, name, policy));
        wait_for::<BackupRun, _>(
            &self.cluster,
            Some(&self.operator),
            &self.ns,
            name,
            RUN_TIMEOUT,
            "run finished",
            finished,
        )
        .await
    }

    /// Waits until the namespace's BackupRuns are exactly `names` and `also` says `Ok` (else
    /// what it is still waiting for).
    pub async fn wait_for_runs(
        &self,
        names: &[&str],
        timeout: Duration,
        also: impl Fn() -> Result<(), String>,
    ) {
        let runs: Api<BackupRun> = Api::namespaced(self.cluster.client.clone(), &self.ns);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now: Vec<String> = runs
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|r| r.name_any())
                .collect();
            let extra = also();
            if now == names && extra.is_ok() {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "runs {now:?}, expected {names:?}; {}\n{}\n{}",
                    extra.err().unwrap_or_default(),
                    self.cluster.diagnostics(&self.ns).await,
                    self.operator.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_backup_succeeds_with_a_confirmed_artifact_and_an_audit_trail() {
    let _serial = crate::serial().await;
    let s = scenario("manual", "0 0 1 1 *", "").await;
    s.cluster
        .apply(&manual_run(&s.ns, "before-migration", "shop"));
    let run = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "before-migration",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "run: {:#?}\n{}",
        run.status,
        s.operator.log()
    );

    // The artifact is where status says, and its manifest (the commit marker) exists.
    let status = run.status.clone().unwrap();
    let artifact = status.artifact.clone().expect("artifact in status");
    assert!(
        artifact.size_bytes > 0 && artifact.raw_bytes > artifact.size_bytes,
        "{artifact:?}"
    );
    assert_eq!(artifact.engine, "postgres");
    assert_eq!(
        artifact.rows,
        Some(550),
        "customers + orders rows: {artifact:?}"
    );
    let keys = s.services.keys("e2e/");
    assert!(
        keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(keys.len() >= 2, "manifest and data: {keys:?}");
    assert!(
        status.job_name.is_some()
            && status.start_time.is_some()
            && status.completion_time.is_some()
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );

    // kubectl shows the printer columns.
    let table = s
        .cluster
        .kubectl(&["get", "backupruns", "-n", &s.ns])
        .unwrap();
    let header = table.lines().next().unwrap_or_default();
    for col in [
        "NAME", "POLICY", "PHASE", "SIZE", "DURATION", "VERIFIED", "AGE",
    ] {
        assert!(header.contains(col), "missing column {col}: {table}");
    }
    assert!(
        table.contains("before-migration") && table.contains("Succeeded"),
        "{table}"
    );

    // Events tell the story; metrics count it.
    wait_for_events(&s.cluster, &s.ns, "before-migration", |events| {
        events.iter().any(|e| e.starts_with("Started"))
            && events.iter().any(|e| e.starts_with("Succeeded"))
    })
    .await;
    let (code, metrics) = s.operator.http_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(r#"dataguardian_backup_runs_total{{namespace="{}",policy="shop",result="Succeeded"}} 1"#, s.ns)),
        "{metrics}"
    );
    // A real Prometheus scrapes the endpoint and sees the series.
    let prom = crate::harness::Prometheus::start(&s.operator.metrics_addr);
    let value = prom.wait_for_value(
        r#"dataguardian_backup_runs_total{result="Succeeded"}"#,
        Duration::from_secs(30),
    );
    assert_eq!(
        value.as_deref(),
        Some("1"),
        "Prometheus query; its log:\n{}",
        prom.log()
    );
    // No secret anywhere in what the operator printed or stored.
    let log = s.operator.log();
    assert!(
        !log.contains(s.services.pg.password()),
        "database password in the operator log"
    );
    assert!(
        !log.contains(s.services.s3.secret_access_key()),
        "S3 secret in the operator log"
    );
    let runs_yaml = s
        .cluster
        .kubectl(&["get", "backupruns", "-n", &s.ns, "-o", "yaml"])
        .unwrap();
    assert!(
        !runs_yaml.contains(s.services.pg.password()),
        "password in run status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_scheduled_every_minute_produces_runs_on_time() {
    let _serial = crate::serial().await;
    let s = scenario("scheduled", "* * * * *", "").await;
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let first = loop {
        let list = runs.list(&ListParams::default()).await.unwrap().items;
        if let Some(r) = list
            .iter()
            .find(|r| phase(r).as_deref() == Some("Succeeded"))
        {
            break r.clone();
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "no scheduled run succeeded\n{}\n{}",
                s.cluster.diagnostics(&s.ns).await,
                s.operator.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(format!("{:?}", first.spec.trigger), "Scheduled");
    let scheduled = first.spec.scheduled_time.clone().expect("scheduledTime").0;
    let created = first
        .metadata
        .creation_timestamp
        .clone()
        .expect("created")
        .0;
    let late = created.duration_since(scheduled);
    assert!(
        late.as_secs_f64() >= 0.0 && late.as_secs_f64() < 5.0,
        "run created {late:?} after its cron time"
    );
    assert_eq!(scheduled.as_second() % 60, 0, "cron time on the minute");
    let policy: Api<BackupPolicy> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let p = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        Duration::from_secs(30),
        "policy status",
        |p| {
            p.status.as_ref().is_some_and(|st| {
                st.last_successful_run.is_some() && st.next_schedule_time.is_some()
            })
        },
    )
    .await;
    let st = p.status.unwrap();
    for c in ["Ready", "ScheduleValid", "StorageReady", "RPOMet"] {
        let cond = st
            .conditions
            .iter()
            .find(|x| x.type_ == c)
            .unwrap_or_else(|| panic!("condition {c}: {:#?}", st.conditions));
        assert_eq!(cond.status, "True", "{cond:?}");
    }
    drop(policy);

    // Suspended (a spec change, generation 2): nothing is due any more and the RPO is not
    // judged, once the operator has observed the new generation.
    s.cluster
        .kubectl(&[
            "patch",
            "backuppolicy",
            "shop",
            "-n",
            &s.ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ])
        .expect("suspending the policy");
    let p = wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        Duration::from_secs(30),
        "policy suspended",
        |p| {
            p.status.as_ref().is_some_and(|st| {
                st.observed_generation == p.metadata.generation
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "RPOMet" && c.reason == "Suspended")
            })
        },
    )
    .await;
    assert_eq!(p.metadata.generation, Some(2));
    let st = p.status.unwrap();
    let rpo = st.conditions.iter().find(|c| c.type_ == "RPOMet").unwrap();
    assert_eq!(rpo.status, "Unknown", "{rpo:?}");
    assert_eq!(
        st.next_schedule_time, None,
        "nothing is due while suspended"
    );
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True", "suspended is not unready: {ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keep_last_prunes_runs_and_their_artifacts() {
    let _serial = crate::serial().await;
    let s = scenario("retention", "0 0 1 1 *", "  retention: {keepLast: 1}\n").await;
    for name in ["first", "second", "third"] {
        let r = s.run_to_end(name, "shop").await;
        assert_eq!(phase(&r).as_deref(), Some("Succeeded"), "{:#?}", r.status);
    }
    s.wait_for_runs(&["third"], Duration::from_secs(60), || {
        let manifests: Vec<String> = s
            .services
            .keys("e2e/")
            .into_iter()
            .filter(|k| k.ends_with("manifest.json"))
            .collect();
        if manifests.len() == 1 {
            Ok(())
        } else {
            Err(format!("retention did not prune: manifests {manifests:?}"))
        }
    })
    .await;
    // What remains is the third run's artifact, manifest and data alike.
    let keys = s.services.keys("e2e/");
    assert!(keys.iter().all(|k| k.contains("third")), "{keys:?}");
}

/// The scenario's operator must run with `DG_AUDIT_STORAGE` set to this storage.
pub const AUDIT_STORAGE_ENV: (&str, &str) = ("DG_AUDIT_STORAGE", "dataguardian-system/audit");
/// The plugin's flag naming it.
pub const AUDIT_STORAGE_FLAG: &str = "--storage=dataguardian-system/audit";

/// The audit BackupStorage `dataguardian-system/audit` on an Object-Locked bucket of the
/// scenario's S3, reached through the returned proxy (which can refuse every connection).
pub fn audit_storage_behind_proxy(s: &Scenario) -> testkit::FaultyProxy {
    s.services
        .s3
        .create_bucket_with_object_lock("audit-trail")
        .expect("audit bucket");
    let proxy = testkit::FaultyProxy::start(s.services.s3.addr(), testkit::FaultPlan::PassThrough)
        .expect("proxy");
    s.cluster.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: audit-s3, namespace: dataguardian-system}}
stringData: {{AWS_ACCESS_KEY_ID: {key}, AWS_SECRET_ACCESS_KEY: {secret}}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: audit, namespace: dataguardian-system}}
spec:
  s3: {{bucket: audit-trail, region: us-east-1, endpoint: "{endpoint}", forcePathStyle: true,
       prefix: trail/, credentialsSecretRef: {{name: audit-s3}},
       objectLock: {{mode: GOVERNANCE, days: 1}}}}
"#,
        key = s.services.s3.access_key_id(),
        secret = s.services.s3.secret_access_key(),
        endpoint = proxy.endpoint(),
    ));
    proxy
}

/// The audit records of namespace `ns` as `kubectl dataguardian audit show -o json` prints them
/// (empty while the trail cannot be read).
pub fn audit_records(s: &Scenario, storage: &str) -> Vec<serde_json::Value> {
    let (code, out, _) = s
        .cluster
        .plugin(&["audit", "show", "-n", &s.ns, "-o", "json", storage]);
    if code != 0 {
        return Vec::new();
    }
    serde_json::from_str(&out).unwrap_or_default()
}

/// The names of the audit spool's entries in the operator's namespace.
pub fn spool_entries(s: &Scenario) -> Vec<String> {
    s.cluster
        .kubectl(&[
            "get",
            "configmaps",
            "-n",
            "dataguardian-system",
            "-l",
            "dataguardian.io/audit-spool=true",
            "-o",
            "name",
        ])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retention_deletion_made_while_the_audit_storage_is_down_survives_a_killed_operator() {
    // Retention deletes a run while the audit storage refuses every connection; the operator is
    // then killed (SIGKILL: no last flush). The deletion's record waited in the write-ahead
    // spool: the next operator process writes it once the storage is back — exactly once, in
    // a chain that verifies — and empties the spool (docs/audit.md).
    let _serial = crate::serial().await;
    let mut s = scenario_with(
        "auditspool",
        "0 0 1 1 *",
        "  retention: {keepLast: 1}\n",
        &[AUDIT_STORAGE_ENV],
    )
    .await;
    let proxy = audit_storage_behind_proxy(&s);
    let storage = AUDIT_STORAGE_FLAG;
    let first = s.run_to_end("first", "shop").await;
    assert_eq!(
        phase(&first).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        first.status
    );
    // The trail is being written: the first run's success arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !audit_records(&s, storage)
        .iter()
        .any(|r| r["action"] == "RunSucceeded" && r["name"] == "first")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run's records never reached the trail\n{}",
            s.operator.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The audit storage goes down; the second run makes retention delete the first.
    proxy.set_plan(testkit::FaultPlan::RefuseAll);
    let second = s.run_to_end("second", "shop").await;
    assert_eq!(
        phase(&second).as_deref(),
        Some("Succeeded"),
        "{:#?}",
        second.status
    );
    s.wait_for_runs(&["second"], Duration::from_secs(90), || Ok(()))
        .await;
    let spooled = spool_entries(&s);
    assert_eq!(
        spooled.len(),
        1,
        "the deletion's record waits in the spool: {spooled:?}\n{}",
        s.operator.log()
    );
    assert!(
        !audit_records(&s, storage)
            .iter()
            .any(|r| r["action"] == "RetentionDeletion"),
        "the storage was down"
    );

    // SIGKILL, the storage back, a new operator process.
    s.operator.kill();
    proxy.set_plan(testkit::FaultPlan::PassThrough);
    s.operator.restart();
    let deletions = |records: &[serde_json::Value]| {
        records
            .iter()
            .filter(|r| {
                r["action"] == "RetentionDeletion"
                    && r["name"] == "shop"
                    && r["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("run first "))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let records = audit_records(&s, storage);
        if deletions(&records) > 0 && spool_entries(&s).is_empty() {
            assert_eq!(deletions(&records), 1, "exactly once: {records:#?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the spooled deletion never reached the trail (spool {:?}): {records:#?}\n{}",
            spool_entries(&s),
            s.operator.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (code, out, err) = s.cluster.plugin(&["audit", "verify", "-n", &s.ns, storage]);
    assert_eq!(code, 0, "audit verify\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("{}: intact", s.ns)), "{out}");
    // Still once after the new leader re-derived and re-offered everything.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(deletions(&audit_records(&s, storage)), 1);
}

/// Files under `dir` (relative paths), recursively.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_on_a_filesystem_storage_prunes_through_a_job() {
    let _serial = crate::serial().await;
    let s = scenario("fsretention", "0 0 1 1 *", "").await;
    s.cluster.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: backups, namespace: {ns}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: local, namespace: {ns}}}
spec: {{filesystem: {{claimName: backups, path: /dumps}}}}
---
{policy}"#,
        ns = s.ns,
        policy = s.services.postgres_policy(
            &s.ns,
            "onclaim",
            "shop",
            "local",
            "  schedule: \"0 0 1 1 *\"\n  retention: {keepLast: 1}\n",
        ),
    ));
    wait_for::<BackupStorage, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "local",
        Duration::from_secs(60),
        "filesystem storage Ready",
        storage_ready,
    )
    .await;
    for name in ["fs-first", "fs-second", "fs-third"] {
        let r = s.run_to_end(name, "onclaim").await;
        assert_eq!(phase(&r).as_deref(), Some("Succeeded"), "{:#?}", r.status);
        let manifest = r.status.unwrap().artifact.unwrap().manifest_key.unwrap();
        assert!(
            manifest.starts_with("file:///backup/dumps/"),
            "the artifact is recorded at its path in the container: {manifest}"
        );
    }
    // keepLast 1: a prune Job deletes the two older artifacts from the claim, then their runs go.
    s.wait_for_runs(&["fs-third"], Duration::from_secs(90), || Ok(()))
        .await;
    // (Events with the same reason about one object are folded into a series by the
    // recorder: the first prune's note is the one shown.)
    wait_for_events(&s.cluster, &s.ns, "onclaim", |events| {
        events
            .iter()
            .any(|e| e.starts_with("Pruning") && e.contains("fs-first-prune"))
            && events.iter().any(|e| e.starts_with("Pruned"))
    })
    .await;
    if let Some(dir) = s.cluster.claim_dir(&s.ns, "backups") {
        let files = files_under(&dir);
        assert!(
            !files.is_empty() && files.iter().all(|f| f.contains("fs-third")),
            "only the kept run's artifact remains on the claim: {files:?}"
        );
        assert!(
            files.iter().any(|f| f.ends_with("manifest.json")),
            "{files:?}"
        );
    }
    // The kept backup restores from the claim (a Job mounts it read-only).
    s.cluster
        .apply(&s.restore_yaml("from-claim", "fs-third", "shop_from_claim", ""));
    let r = s.restore_finished("from-claim").await;
    let st = r.status.unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "{st:#?}"
    );
    assert!(st.checksum.is_some_and(|c| c.verified));
    assert_eq!(
        s.services
            .pg
            .psql("shop_from_claim", "SELECT count(*) FROM orders")
            .unwrap()
            .trim(),
        "500"
    );
    // The kept run's manifest is on the claim where its status says.
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let kept = runs.get("fs-third").await.unwrap();
    let manifest = kept.status.unwrap().artifact.unwrap().manifest_key.unwrap();
    if let Some(dir) = s.cluster.claim_dir(&s.ns, "backups") {
        let path = manifest.trim_start_matches("file:///backup/");
        assert!(dir.join(path).exists(), "{manifest} not on the claim");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_and_faults_end_in_clear_reasons() {
    let _serial = crate::serial().await;
    let s = scenario("faults", "0 0 1 1 *", "").await;

    // A policy whose Secret does not exist: the run waits with SecretNotFound and an Event.
    s.cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nosecret, namespace: {ns}}}
spec:
  source: {{postgres: {{host: "{host}", port: {port}, database: shop, user: postgres, passwordSecretRef: {{name: missing-creds, key: password}}}}}}
  storageRef: {{name: main}}
  schedule: "0 0 1 1 *"
"#,
        ns = s.ns,
        host = s.services.pg.host(),
        port = s.services.pg.port()
    ));
    s.cluster.apply(&manual_run(&s.ns, "blocked", "nosecret"));
    wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "blocked",
        Duration::from_secs(30),
        "SecretNotFound",
        |r| reason(r) == "SecretNotFound",
    )
    .await;
    wait_for_events(&s.cluster, &s.ns, "blocked", |events| {
        events.iter().any(|e| {
            e.starts_with("SecretNotFound")
                && e.contains("passwordSecretRef")
                && !e.contains("missing-creds")
        })
    })
    .await;
    // Fixing it lets the run go on.
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: missing-creds, namespace: {}}}\nstringData: {{password: \"{}\"}}\n",
        s.ns,
        s.services.pg.password()
    ));
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "blocked",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(phase(&r).as_deref(), Some("Succeeded"), "{:#?}", r.status);

    // A policy whose storage does not exist; a database nobody listens on.
    let closed_port = testkit::free_port();
    s.cluster.apply(&format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nostorage, namespace: {ns}}}
spec:
  source: {{postgres: {{host: "{host}", port: {port}, database: shop, user: postgres, passwordSecretRef: {{name: db-creds, key: password}}}}}}
  storageRef: {{name: ghost}}
  schedule: "0 0 1 1 *"
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: unreachable, namespace: {ns}}}
spec:
  source: {{postgres: {{host: "127.0.0.1", port: {closed_port}, database: shop, user: postgres, passwordSecretRef: {{name: db-creds, key: password}}}}}}
  storageRef: {{name: main}}
  schedule: "0 0 1 1 *"
  backoffLimit: 0
"#,
        ns = s.ns,
        host = s.services.pg.host(),
        port = s.services.pg.port()
    ));
    s.cluster.apply(&manual_run(&s.ns, "lost", "nostorage"));
    s.cluster.apply(&manual_run(&s.ns, "nodb", "unreachable"));
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "lost",
        Duration::from_secs(30),
        "StorageNotFound",
        |r| reason(r) == "StorageNotFound",
    )
    .await;
    assert!(
        r.status
            .unwrap()
            .message
            .unwrap_or_default()
            .contains("ghost")
    );
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "nodb",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        (phase(&r).as_deref(), st.reason.as_deref()),
        (Some("Failed"), Some("DumpFailed")),
        "{st:#?}"
    );
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .to_lowercase()
            .contains("connect"),
        "{st:#?}"
    );
    // Validating a failed backup fails at once: there is nothing to restore.
    s.cluster.apply(&format!(
        "apiVersion: dataguardian.io/v1alpha1\nkind: RestoreValidation\nmetadata: {{name: check-nodb, namespace: {}}}\nspec: {{backupRunRef: {{name: nodb}}}}\n",
        s.ns
    ));
    let v = wait_for::<RestoreValidation, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "check-nodb",
        Duration::from_secs(30),
        "validation finished",
        |v| {
            v.status
                .as_ref()
                .and_then(|st| st.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    let vs = v.status.unwrap();
    assert_eq!(
        (
            vs.phase.map(|p| format!("{p:?}")).as_deref(),
            vs.reason.as_deref()
        ),
        (Some("Failed"), Some("BackupRunFailed")),
        "{vs:#?}"
    );
    assert_eq!(vs.job_name, None, "no Job for a validation that cannot run");

    // A wrong password: the run fails with a reason, and the password appears nowhere.
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: db-creds, namespace: {}}}\nstringData: {{password: \"wrong-password-123\"}}\n",
        s.ns
    ));
    s.cluster.apply(&manual_run(&s.ns, "wrongpw", "shop"));
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "wrongpw",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(phase(&r).as_deref(), Some("Failed"));
    let st = r.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("DumpFailed"), "{st:#?}");
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains("password authentication failed"),
        "{st:#?}"
    );
    let yaml = s
        .cluster
        .kubectl(&["get", "backupruns,events", "-n", &s.ns, "-o", "yaml"])
        .unwrap();
    assert!(
        !yaml.contains("wrong-password-123"),
        "password leaked into objects"
    );
    assert!(
        !s.operator.log().contains("wrong-password-123"),
        "password leaked into the operator log"
    );

    // A Job deleted by hand: the run fails with JobDeleted.
    s.cluster.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: db-creds, namespace: {}}}\nstringData: {{password: \"{}\"}}\n",
        s.ns,
        s.services.pg.password()
    ));
    s.services.pg.psql("shop", "SELECT 1").unwrap();
    // Slow the dump down so there is time to delete its Job: lock a table it must read.
    let locker = std::thread::spawn({
        let mut cmd = s.services.pg.client_command("psql");
        cmd.args([
            "-d",
            "shop",
            "-c",
            "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;",
        ]);
        move || cmd.output()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.cluster.apply(&manual_run(&s.ns, "orphaned", "shop"));
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "orphaned",
        Duration::from_secs(30),
        "job created",
        |r| r.status.as_ref().is_some_and(|st| st.job_name.is_some()),
    )
    .await;
    let job = r.status.unwrap().job_name.unwrap();
    s.cluster
        .kubectl(&["delete", "job", &job, "-n", &s.ns, "--wait=false"])
        .unwrap();
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "orphaned",
        Duration::from_secs(60),
        "run finished",
        finished,
    )
    .await;
    assert_eq!(
        (phase(&r).as_deref(), reason(&r).as_str()),
        (Some("Failed"), "JobDeleted"),
        "{:#?}",
        r.status
    );
    let _ = locker.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_killed_mid_run_never_creates_a_second_job() {
    let _serial = crate::serial().await;
    let mut s = scenario("restart", "0 0 1 1 *", "").await;
    let locker = std::thread::spawn({
        let mut cmd = s.services.pg.client_command("psql");
        cmd.args([
            "-d",
            "shop",
            "-c",
            "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
        ]);
        move || cmd.output()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.cluster.apply(&manual_run(&s.ns, "survivor", "shop"));
    wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "survivor",
        Duration::from_secs(30),
        "job created",
        |r| r.status.as_ref().is_some_and(|st| st.job_name.is_some()),
    )
    .await;
    s.operator.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.operator.restart();
    s.operator.wait_ready(Duration::from_secs(60)).await;
    let r = wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "survivor",
        RUN_TIMEOUT,
        "run finished",
        finished,
    )
    .await;
    assert_eq!(phase(&r).as_deref(), Some("Succeeded"), "{:#?}", r.status);
    let all = jobs(&s.cluster, &s.ns).await;
    assert_eq!(all.len(), 1, "exactly one Job: {:?}", all.keys());
    let _ = locker.join();
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    runs.delete("survivor", &DeleteParams::default())
        .await
        .unwrap();
}
