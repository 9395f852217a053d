//! Job pods as containers of the agent image (issue 12): memory limits that hold on a large
//! database, an out-of-memory kill that ends the run with a clear reason, and a server newer
//! than every bundled `pg_dump`.

use std::time::Duration;

use dataguardian::api::{BackupRun, RestoreRun};

use crate::backup::{Scenario, finished, scenario};
use crate::harness::{manual_run, phase, reason, wait_for};

const LARGE_TIMEOUT: Duration = Duration::from_secs(900);

/// Size of the large database in MiB (`E2E_LARGE_DB_MB`, default 1024).
fn large_db_mb() -> u64 {
    std::env::var("E2E_LARGE_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

impl Scenario {
    async fn run_until(&self, name: &str, policy: &str, timeout: Duration) -> BackupRun {
        self.cluster.apply(&manual_run(&self.ns, name, policy));
        wait_for::<BackupRun, _>(
            &self.cluster,
            Some(&self.operator),
            &self.ns,
            name,
            timeout,
            "run finished",
            finished,
        )
        .await
    }
}

/// A fingerprint of the `big` table: rows and a hash over every column.
fn fingerprint(pg: &testkit::Postgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*) || ':' || md5(string_agg(md5(t::text), '' ORDER BY id)) FROM big t",
    )
    .expect("fingerprint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_limited_to_64mib_backs_up_and_restores_a_large_database() {
    let _serial = crate::serial().await;
    let s = scenario(
        "e2e-large",
        "0 0 1 1 *",
        "  jobTemplate:\n    resources: {limits: {memory: 64Mi, cpu: \"1\"}}\n",
    )
    .await;
    // Mixed content: incompressible bytes, text, numbers, JSON; ~1 KiB per row.
    let rows = large_db_mb() * 1400;
    s.services
        .pg
        .psql(
            "shop",
            &format!(
                "CREATE TABLE big (id bigint PRIMARY KEY, blob bytea, note text, amount numeric(12,2), doc jsonb);
                 INSERT INTO big
                 SELECT g,
                        decode(repeat(md5(g::text || 'a') || md5(random()::text), 8), 'hex'),
                        repeat('row ' || g || ' of the large table; ', 12),
                        (g % 100000) * 1.37,
                        jsonb_build_object('id', g, 'tags', jsonb_build_array('x', g % 7, md5(g::text)))
                 FROM generate_series(1, {rows}) g;"
            ),
        )
        .expect("filling the large table");
    let before = fingerprint(&s.services.pg, "shop");
    let size: u64 = s
        .services
        .pg
        .psql("shop", "SELECT pg_database_size('shop')")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        size >= large_db_mb() * 1024 * 1024 * 9 / 10,
        "the database is {size} bytes"
    );

    let run = s.run_until("large", "shop", LARGE_TIMEOUT).await;
    assert_eq!(
        phase(&run).as_deref(),
        Some("Succeeded"),
        "a 64 MiB agent streams {size} bytes: {:#?}\n{}",
        run.status,
        s.cluster.diagnostics(&s.ns).await
    );
    let jobs = crate::harness::jobs(&s.cluster, &s.ns).await;
    let job = jobs.values().next().expect("the backup Job");
    let limits = serde_json::to_value(
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .resources,
    )
    .unwrap();
    assert_eq!(limits["limits"]["memory"], "64Mi", "{limits}");

    s.cluster
        .apply(&s.restore_yaml("large-copy", "large", "shop_copy", ""));
    let restored = wait_for::<RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "large-copy",
        LARGE_TIMEOUT,
        "restore finished",
        |r| {
            r.status
                .as_ref()
                .and_then(|st| st.phase)
                .is_some_and(|p| p.is_finished())
        },
    )
    .await;
    let st = restored.status.clone().unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "{st:#?}\n{}",
        s.cluster.diagnostics(&s.ns).await
    );
    assert_eq!(fingerprint(&s.services.pg, "shop_copy"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_memory_limit_far_too_small_ends_the_run_out_of_memory() {
    let _serial = crate::serial().await;
    let s = scenario(
        "e2e-oom",
        "0 0 1 1 *",
        "  backoffLimit: 0\n  jobTemplate:\n    resources: {limits: {memory: 6Mi}}\n",
    )
    .await;
    let run = s
        .run_until("starved", "shop", Duration::from_secs(180))
        .await;
    assert_eq!(phase(&run).as_deref(), Some("Failed"), "{:#?}", run.status);
    assert_eq!(reason(&run), "OutOfMemory", "{:#?}", run.status);
    let message = run.status.unwrap().message.unwrap_or_default();
    assert!(
        message.contains("6Mi"),
        "the message names the limit: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_newer_than_every_bundled_pg_dump_ends_client_too_old() {
    let _serial = crate::serial().await;
    let s = scenario("e2e-client-too-old", "0 0 1 1 *", "").await;
    let pg16 = testkit::Postgres::builder()
        .bin_dir("/opt/dataguardian-test/postgresql-16/bin")
        .start()
        .expect("PostgreSQL 16 (scripts/install-deps.sh installs it)");
    pg16.create_database("newer").unwrap();
    s.cluster.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pg16-creds, namespace: {ns}}}
stringData: {{password: "{pw}"}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: newer, namespace: {ns}}}
spec:
  source: {{postgres: {{host: "{host}", port: {port}, database: newer, user: {user}, passwordSecretRef: {{name: pg16-creds, key: password}}}}}}
  storageRef: {{name: main}}
  schedule: "0 0 1 1 *"
"#,
        ns = s.ns,
        pw = pg16.password(),
        host = pg16.host(),
        port = pg16.port(),
        user = pg16.user(),
    ));
    let run = s
        .run_until("too-new", "newer", Duration::from_secs(180))
        .await;
    assert_eq!(phase(&run).as_deref(), Some("Failed"), "{:#?}", run.status);
    assert_eq!(reason(&run), "ClientTooOld", "{:#?}", run.status);
    let message = run.status.unwrap().message.unwrap_or_default();
    assert!(
        message.contains("16.2") && message.contains("15"),
        "both versions are named: {message}"
    );
    assert!(
        s.services
            .keys("e2e/")
            .iter()
            .all(|k| !k.contains("too-new")),
        "nothing was written for the run"
    );
}
