//! Copies on `secondaryStorageRefs` end to end: the real operator binary copies each confirmed
//! backup to a second S3 server (a copy Job: another endpoint) and to another bucket of the same
//! server (server-side copy), catches a secondary up oldest first after an outage, prunes the
//! copies with their runs, and restores and validates from the copy while the primary is down.

use std::time::{Duration, Instant};

use dataguardian::api::backup_run::ArtifactCopy;
use dataguardian::api::{BackupPolicy, BackupRun, BackupStorage};
use kube::api::Api;
use testkit::{FaultPlan, FaultyProxy, Moto};

use crate::backup::{Scenario, scenario};
use crate::harness::{phase, wait_for, wait_for_events};

/// Bucket of the second S3 server.
const REPLICA_BUCKET: &str = "shop-replica";
/// Another bucket on the primary's S3 server.
const NEARBY_BUCKET: &str = "shop-nearby";

fn ready_is(s: &BackupStorage, status: &str) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == status)
    })
}

fn copies(r: &BackupRun) -> Vec<ArtifactCopy> {
    r.status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .map(|a| a.copies.clone())
        .unwrap_or_default()
}

fn copy_on(r: &BackupRun, storage: &str) -> Option<ArtifactCopy> {
    copies(r).into_iter().find(|c| c.storage == storage)
}

/// A second S3 server behind a proxy that can play dead (the bucket survives the "outage").
pub struct Replica {
    pub moto: Moto,
    pub proxy: FaultyProxy,
}

impl Replica {
    pub fn start() -> Replica {
        let moto = Moto::start().expect("second moto");
        moto.create_bucket(REPLICA_BUCKET).expect("replica bucket");
        let proxy = FaultyProxy::start(moto.addr(), FaultPlan::PassThrough).expect("proxy");
        Replica { moto, proxy }
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.moto
            .list_keys(REPLICA_BUCKET, prefix)
            .expect("list replica keys")
    }
}

/// The storages `replica` (the second server, through the proxy) and `nearby` (another bucket
/// of the primary server, same credentials Secret), and the policy `shop` copying to both.
fn secondary_manifests(s: &Scenario, replica: &Replica, extra_policy_spec: &str) -> String {
    format!(
        r#"apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: replica, namespace: {ns}}}
spec:
  s3: {{bucket: {REPLICA_BUCKET}, region: us-east-1, endpoint: "{replica}", forcePathStyle: true,
       prefix: dr/, credentialsSecretRef: {{name: s3-creds}}}}
  probe: {{intervalSeconds: 10}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: nearby, namespace: {ns}}}
spec:
  s3: {{bucket: {NEARBY_BUCKET}, region: us-east-1, endpoint: "{primary}", forcePathStyle: true,
       prefix: e2e/, credentialsSecretRef: {{name: s3-creds}}}}
  probe: {{intervalSeconds: 10}}
---
{policy}"#,
        ns = s.ns,
        replica = replica.proxy.endpoint(),
        primary = s.services.s3.endpoint(),
        policy = s.services.postgres_policy(
            &s.ns,
            "shop",
            "shop",
            "main",
            &format!(
                "  schedule: \"0 0 1 1 *\"\n  secondaryStorageRefs: [{{name: replica}}, {{name: nearby}}]\n{extra_policy_spec}"
            ),
        ),
    )
}

async fn wait_storage(s: &Scenario, name: &str, status: &str) {
    wait_for::<BackupStorage, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        name,
        Duration::from_secs(90),
        &format!("storage {name} Ready={status}"),
        |st| ready_is(st, status),
    )
    .await;
}

async fn wait_copied(s: &Scenario, run: &str, storages: &[&str]) -> BackupRun {
    wait_for::<BackupRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        run,
        Duration::from_secs(180),
        "copies confirmed",
        |r| storages.iter().all(|st| copy_on(r, st).is_some()),
    )
    .await
}

/// A policy's backups are copied to a second S3 server by a copy Job and to another bucket of
/// the same server by a server-side copy; a secondary that was down catches up oldest first;
/// retention deletes every copy with its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_on_two_secondaries_catch_up_and_are_pruned_with_their_runs() {
    let _serial = crate::serial().await;
    let replica = Replica::start();
    // The scenario's own policy is replaced below by one with secondary storages.
    let s = scenario("copies", "0 0 1 1 *", "").await;
    s.services.s3.create_bucket(NEARBY_BUCKET).unwrap();
    s.cluster.apply(&secondary_manifests(
        &s,
        &replica,
        "  retention: {keepLast: 2}\n",
    ));
    wait_storage(&s, "replica", "True").await;
    wait_storage(&s, "nearby", "True").await;

    // 1. A confirmed backup is copied to both, each copy confirmed and recorded.
    let b1 = s.run_to_end("b1", "shop").await;
    assert_eq!(phase(&b1).as_deref(), Some("Succeeded"), "{:#?}", b1.status);
    let digest = b1
        .status
        .as_ref()
        .and_then(|st| st.artifact.as_ref())
        .and_then(|a| a.manifest_sha256.clone())
        .expect("manifest digest");
    let b1 = wait_copied(&s, "b1", &["replica", "nearby"]).await;
    let far = copy_on(&b1, "replica").unwrap();
    let near = copy_on(&b1, "nearby").unwrap();
    assert_eq!(far.method.as_deref(), Some("CopyJob"), "{far:#?}");
    assert_eq!(near.method.as_deref(), Some("ServerSideCopy"), "{near:#?}");
    for c in [&far, &near] {
        assert!(c.confirmed && c.time.is_some(), "{c:#?}");
        assert_eq!(c.manifest_sha256.as_deref(), Some(digest.as_str()));
    }
    assert!(
        far.location
            .as_deref()
            .is_some_and(|l| l.starts_with(&format!("s3://{REPLICA_BUCKET}/dr/"))),
        "{far:#?}"
    );
    let job = dataguardian::jobs::copy_job::job_name("b1", "replica");
    // (The recorder folds Events with the same reason about one object into a series: the
    // first copy's note is the one shown.)
    wait_for_events(&s.cluster, &s.ns, "b1", |events| {
        events
            .iter()
            .any(|e| e.starts_with("Copying") && e.contains(&job))
            && events
                .iter()
                .any(|e| e.starts_with("Copied") && e.contains("confirmed"))
    })
    .await;
    // Byte for byte the primary's objects, below the secondary's own prefix; the manifest is
    // the recorded one.
    let relative = |keys: Vec<String>, prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = keys
            .into_iter()
            .map(|k| k.trim_start_matches(prefix).to_string())
            .collect();
        v.sort();
        v
    };
    let primary_keys = relative(s.services.keys("e2e/"), "e2e/");
    assert!(!primary_keys.is_empty());
    assert_eq!(relative(replica.keys("dr/"), "dr/"), primary_keys);
    let nearby_keys = relative(
        s.services.s3.list_keys(NEARBY_BUCKET, "e2e/").unwrap(),
        "e2e/",
    );
    assert_eq!(nearby_keys, primary_keys);
    let manifest_key = far
        .location
        .as_deref()
        .unwrap()
        .trim_start_matches(&format!("s3://{REPLICA_BUCKET}/"))
        .to_string();
    let manifest = replica
        .moto
        .get_object(REPLICA_BUCKET, &manifest_key)
        .unwrap();
    assert_eq!(
        dataguardian::contract::manifest::sha256_hex(&manifest),
        digest
    );
    wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        Duration::from_secs(30),
        "copy status of both storages",
        |p| {
            let st = p.status.clone().unwrap_or_default();
            st.copies.len() == 2
                && st
                    .copies
                    .iter()
                    .all(|c| c.last_copied_run.as_deref() == Some("b1") && c.pending_runs == 0)
        },
    )
    .await;

    // 2. The second server goes away: backups go on, its copies wait.
    replica.proxy.set_plan(FaultPlan::RefuseAll);
    replica.proxy.cut_all();
    wait_storage(&s, "replica", "False").await;
    for name in ["b2", "b3"] {
        let r = s.run_to_end(name, "shop").await;
        assert_eq!(phase(&r).as_deref(), Some("Succeeded"), "{:#?}", r.status);
        wait_copied(&s, name, &["nearby"]).await;
    }
    wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        Duration::from_secs(60),
        "two runs waiting for the replica",
        |p| {
            p.status.as_ref().is_some_and(|st| {
                st.copies.iter().any(|c| {
                    c.storage == "replica"
                        && c.pending_runs == 2
                        && c.last_copied_run.as_deref() == Some("b1")
                        && c.message
                            .as_deref()
                            .is_some_and(|m| m.contains("not Ready"))
                })
            })
        },
    )
    .await;
    // keepLast 2 wants b1 gone, but its copy on the unreachable replica cannot go yet: the run
    // and every copy stay.
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events
            .iter()
            .any(|e| e.starts_with("RetentionRefused") && e.contains("b1"))
    })
    .await;
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    assert!(runs.get_opt("b1").await.unwrap().is_some());
    assert!(copy_on(&runs.get("b2").await.unwrap(), "replica").is_none());

    // 3. It is back: the missing runs are copied oldest first, then b1 goes with its copies.
    replica.proxy.set_plan(FaultPlan::PassThrough);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let b2 = copy_on(&runs.get("b2").await.unwrap(), "replica");
        let b3 = copy_on(&runs.get("b3").await.unwrap(), "replica");
        assert!(
            !(b3.is_some() && b2.is_none()),
            "b3 was copied before the older b2"
        );
        if let (Some(b2), Some(b3)) = (b2, b3) {
            assert!(b2.time <= b3.time, "{b2:#?} {b3:#?}");
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the replica did not catch up\n{}\n{}",
                s.cluster.diagnostics(&s.ns).await,
                s.operator.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.wait_for_runs(&["b2", "b3"], Duration::from_secs(120), || {
        let left: Vec<String> = replica
            .keys("dr/")
            .into_iter()
            .chain(s.services.s3.list_keys(NEARBY_BUCKET, "e2e/").unwrap())
            .chain(s.services.keys("e2e/"))
            .filter(|k| k.contains("-b1/"))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("b1's objects are still stored: {left:?}"))
        }
    })
    .await;
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events
            .iter()
            .any(|e| e.starts_with("CopyPruned") && e.contains("b1"))
    })
    .await;
    // What the kept runs have is everywhere: each store holds the same two backups.
    let primary_keys = relative(s.services.keys("e2e/"), "e2e/");
    assert!(primary_keys.iter().any(|k| k.contains("-b3/")));
    assert_eq!(relative(replica.keys("dr/"), "dr/"), primary_keys);
    assert_eq!(
        relative(
            s.services.s3.list_keys(NEARBY_BUCKET, "e2e/").unwrap(),
            "e2e/"
        ),
        primary_keys
    );
}

/// With the primary S3 server down, a restore of a run falls back to its confirmed copy on the
/// second server (a Warning Event says so), a validation that names the copy proves it
/// restores, and a restore naming a storage without a copy waits for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restores_and_validations_read_the_copy_while_the_primary_is_down() {
    let _serial = crate::serial().await;
    let replica = Replica::start();
    let mut s = scenario("copyrestore", "0 0 1 1 *", "").await;
    s.services.s3.create_bucket(NEARBY_BUCKET).unwrap();
    s.cluster.apply(&secondary_manifests(&s, &replica, ""));
    wait_storage(&s, "replica", "True").await;
    let b1 = s.run_to_end("b1", "shop").await;
    assert_eq!(phase(&b1).as_deref(), Some("Succeeded"), "{:#?}", b1.status);
    let b1 = wait_copied(&s, "b1", &["replica", "nearby"]).await;
    let far = copy_on(&b1, "replica").unwrap();

    // The primary server (and the nearby bucket on it) is gone.
    s.services.s3.kill();
    wait_storage(&s, "main", "False").await;
    wait_storage(&s, "nearby", "False").await;

    // No readFrom: the restore reads the copy on the usable secondary, and says so.
    s.cluster
        .apply(&s.restore_yaml("fallback", "b1", "shop_fallback", ""));
    let r = s.restore_finished("fallback").await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "{st:#?}\n{}",
        s.operator.log()
    );
    let source = st.source.clone().unwrap();
    assert_eq!(source.storage, "replica", "{source:#?}");
    assert_eq!(source.key, far.key);
    assert!(st.checksum.is_some_and(|c| c.verified));
    assert_eq!(s.count("shop_fallback", "customers"), "50");
    assert_eq!(s.count("shop_fallback", "orders"), "500");
    wait_for_events(&s.cluster, &s.ns, "fallback", |events| {
        events.iter().any(|e| {
            e.starts_with("ReadingCopy")
                && e.contains("BackupStorage main is not Ready")
                && e.contains("storage replica")
        })
    })
    .await;

    // A validation that names the copy restores it into a sandbox and passes.
    s.cluster.apply(&format!(
        "{}  readFrom: {{name: replica}}\n",
        s.validation_yaml("v-copy", "b1", "    - rowCounts: {}\n")
    ));
    let v = s.validation_finished("v-copy").await;
    let vst = v.status.clone().unwrap();
    assert_eq!(
        vst.result.map(|r| format!("{r:?}")).as_deref(),
        Some("Passed"),
        "{vst:#?}"
    );
    assert_eq!(vst.storage.as_deref(), Some("replica"));
    let events = crate::harness::events_for(&s.cluster, &s.ns, "v-copy").await;
    assert!(
        !events.iter().any(|e| e.starts_with("ReadingCopy")),
        "a named copy is no fallback: {events:?}"
    );

    // A storage that holds no copy of the run: the restore waits for one.
    s.cluster.apply(&s.restore_yaml(
        "nowhere",
        "b1",
        "shop_nowhere",
        "  readFrom: {name: elsewhere}\n",
    ));
    let r = wait_for::<dataguardian::api::RestoreRun, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "nowhere",
        Duration::from_secs(60),
        "restore waiting for a copy",
        |r| {
            r.status
                .as_ref()
                .is_some_and(|st| st.reason.as_deref() == Some("CopyNotFound"))
        },
    )
    .await;
    let st = r.status.unwrap();
    assert!(st.job_name.is_none(), "{st:#?}");
    assert!(
        st.message
            .as_deref()
            .is_some_and(|m| m.contains("elsewhere") && m.contains("replica")),
        "{st:#?}"
    );
}

/// A policy's backups are copied by a copy Job onto a claim (a filesystem secondary); retention
/// prunes an expired run's copy with a prune Job on that claim, then the run, without a
/// `RetentionRefused` on the way; the kept run's copy stays on the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_on_a_claim_is_pruned_with_its_run() {
    let _serial = crate::serial().await;
    let s = scenario("copyclaim", "0 0 1 1 *", "").await;
    s.cluster.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: replica-claim, namespace: {ns}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {{name: onclaim, namespace: {ns}}}
spec: {{filesystem: {{claimName: replica-claim, path: /dumps}}}}
---
{policy}"#,
        ns = s.ns,
        policy = s.services.postgres_policy(
            &s.ns,
            "shop",
            "shop",
            "main",
            "  schedule: \"0 0 1 1 *\"\n  secondaryStorageRefs: [{name: onclaim}]\n  retention: {keepLast: 1}\n",
        ),
    ));
    wait_storage(&s, "onclaim", "True").await;
    let claim = s.cluster.claim_dir(&s.ns, "replica-claim");
    // The copy's files on the claim: everything in its manifest's directory.
    let copy_files = |c: &ArtifactCopy| -> Option<Vec<String>> {
        let rel = c
            .location
            .as_deref()?
            .strip_prefix("file:///backup/")?
            .to_string();
        let dir = claim.as_ref()?.join(&rel);
        Some(crate::backup::files_under(dir.parent()?))
    };

    // 1. The backup is copied onto the claim by a copy Job and confirmed from its report.
    let b1 = s.run_to_end("b1", "shop").await;
    assert_eq!(phase(&b1).as_deref(), Some("Succeeded"), "{:#?}", b1.status);
    let b1 = wait_copied(&s, "b1", &["onclaim"]).await;
    let c1 = copy_on(&b1, "onclaim").unwrap();
    assert_eq!(c1.method.as_deref(), Some("CopyJob"), "{c1:#?}");
    assert!(
        c1.location
            .as_deref()
            .is_some_and(|l| l.starts_with("file:///backup/dumps/")),
        "{c1:#?}"
    );
    let b1_primary: Vec<String> = s
        .services
        .keys("e2e/")
        .into_iter()
        .filter(|k| k.contains("-b1/"))
        .collect();
    assert!(!b1_primary.is_empty());
    if let Some(files) = copy_files(&c1) {
        assert!(
            files.iter().any(|f| f == "manifest.json"),
            "the copy's manifest is on the claim: {files:?}"
        );
        // The same artifact files as the primary holds.
        let mut primary: Vec<String> = b1_primary
            .iter()
            .map(|k| k.rsplit_once("-b1/").unwrap().1.to_string())
            .collect();
        primary.sort();
        assert_eq!(files, primary);
    }

    // 2. keepLast 1: a second backup retires b1, its copy on the claim goes first (a prune Job),
    // then its primary artifact and the run.
    let b2 = s.run_to_end("b2", "shop").await;
    assert_eq!(phase(&b2).as_deref(), Some("Succeeded"), "{:#?}", b2.status);
    let b2 = wait_copied(&s, "b2", &["onclaim"]).await;
    let c2 = copy_on(&b2, "onclaim").unwrap();
    s.wait_for_runs(&["b2"], Duration::from_secs(180), || {
        let left: Vec<String> = s
            .services
            .keys("e2e/")
            .into_iter()
            .filter(|k| k.contains("-b1/"))
            .collect();
        if !left.is_empty() {
            return Err(format!("b1's primary objects are still stored: {left:?}"));
        }
        match copy_files(&c1) {
            Some(files) if !files.is_empty() => {
                Err(format!("b1's copy is still on the claim: {files:?}"))
            }
            _ => Ok(()),
        }
    })
    .await;
    let job = dataguardian::jobs::prune_job::copy_job_name("b1", "onclaim");
    wait_for_events(&s.cluster, &s.ns, "shop", |events| {
        events
            .iter()
            .any(|e| e.starts_with("Pruning") && e.contains(&job))
            && events
                .iter()
                .any(|e| e.starts_with("CopyPruned") && e.contains("b1"))
            && events.iter().any(|e| e.starts_with("Pruned"))
    })
    .await;
    let events = crate::harness::events_for(&s.cluster, &s.ns, "shop").await;
    assert!(
        !events.iter().any(|e| e.starts_with("RetentionRefused")),
        "a copy being pruned is no refusal: {events:?}"
    );
    // The kept run's copy is still on the claim, whole.
    if let Some(files) = copy_files(&c2) {
        assert!(files.iter().any(|f| f == "manifest.json"), "{files:?}");
    }
    if let Some(dir) = &claim {
        let all = crate::backup::files_under(dir);
        assert!(
            !all.is_empty() && all.iter().all(|f| f.contains("b2")),
            "only b2's copy remains on the claim: {all:?}"
        );
    }
}

/// Key rotation reaches the copies: after the recipients change, the rotation Job re-wraps the
/// primary's manifest and puts the same re-wrapped manifest on each confirmed copy (artifacts
/// untouched); each copy's recorded digest is the run's new one, so a restore that reads the
/// copy (`readFrom`) opens with the new identity and fails on the key with the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_rewraps_the_copies_too_and_restores_from_a_copy_need_the_new_identity() {
    use crate::keys::{fingerprint, keypair, keys_current, secret};
    use dataguardian::contract::manifest::sha256_hex;
    let _serial = crate::serial().await;
    let replica = Replica::start();
    let s = scenario("copyrotation", "0 0 1 1 *", "").await;
    s.services.s3.create_bucket(NEARBY_BUCKET).unwrap();
    let (recipient_a, identity_a) = keypair();
    let (recipient_b, identity_b) = keypair();
    s.cluster
        .apply(&secret(&s.ns, "age-recipients", "recipients", &recipient_a));
    s.cluster
        .apply(&secret(&s.ns, "age-a", "identity", &identity_a));
    s.cluster
        .apply(&secret(&s.ns, "age-b", "identity", &identity_b));
    let encryption =
        "  encryption:\n    recipientsSecretRef: {name: age-recipients, key: recipients}\n";
    s.cluster
        .apply(&secondary_manifests(&s, &replica, encryption));
    wait_storage(&s, "replica", "True").await;
    wait_storage(&s, "nearby", "True").await;
    let b1 = s.run_to_end("b1", "shop").await;
    assert_eq!(phase(&b1).as_deref(), Some("Succeeded"), "{:#?}", b1.status);
    let b1 = wait_copied(&s, "b1", &["replica", "nearby"]).await;
    let before = b1.status.clone().unwrap().artifact.unwrap();
    let far = copy_on(&b1, "replica").unwrap();
    let far_artifacts: Vec<String> = replica
        .keys("dr/")
        .into_iter()
        .filter(|k| !k.ends_with("manifest.json"))
        .collect();
    assert!(!far_artifacts.is_empty());
    let artifact_bytes: Vec<Vec<u8>> = far_artifacts
        .iter()
        .map(|k| replica.moto.get_object(REPLICA_BUCKET, k).unwrap())
        .collect();

    // Recipient B replaces A; the old identity is named for the rotation.
    s.cluster
        .apply(&secret(&s.ns, "age-recipients", "recipients", &recipient_b));
    s.cluster.apply(&secondary_manifests(
        &s,
        &replica,
        &format!(
            "{encryption}    rotation: {{previousIdentitySecretRef: {{name: age-a, key: identity}}}}\n"
        ),
    ));
    wait_for::<BackupPolicy, _>(
        &s.cluster,
        Some(&s.operator),
        &s.ns,
        "shop",
        Duration::from_secs(240),
        "KeysCurrent for B, primary and copies",
        |p| {
            let keys = p.status.as_ref().and_then(|s| s.keys.as_ref());
            keys_current(p).is_some_and(|(st, _)| st == "True")
                && keys.is_some_and(|k| {
                    k.wrapped_for == [fingerprint(&recipient_b)] && k.rewrapped == 1 && k.total == 1
                })
        },
    )
    .await;
    let runs: Api<BackupRun> = Api::namespaced(s.cluster.client.clone(), &s.ns);
    let now = runs.get("b1").await.unwrap();
    let after = now.status.clone().unwrap().artifact.unwrap();
    let digest = after.manifest_sha256.clone().unwrap();
    assert_ne!(before.manifest_sha256.as_deref(), Some(digest.as_str()));
    assert_eq!(
        after.encryption.clone().unwrap().recipients,
        [fingerprint(&recipient_b)]
    );
    // Every copy holds the primary's re-wrapped manifest, byte for byte, and records it.
    for storage in ["replica", "nearby"] {
        let copy = copy_on(&now, storage).unwrap();
        assert_eq!(
            copy.manifest_sha256.as_deref(),
            Some(digest.as_str()),
            "{copy:?}"
        );
    }
    let far_manifest = replica.moto.get_object(REPLICA_BUCKET, &far.key).unwrap();
    assert_eq!(sha256_hex(&far_manifest), digest);
    // The copy's artifacts are untouched.
    for (k, bytes) in far_artifacts.iter().zip(&artifact_bytes) {
        assert_eq!(
            &replica.moto.get_object(REPLICA_BUCKET, k).unwrap(),
            bytes,
            "{k}"
        );
    }

    // A restore reading the copy opens with B …
    s.cluster.apply(&s.restore_yaml(
        "copy-with-b",
        "b1",
        "shop_copy_b",
        "  readFrom: {name: replica}\n  decryption: {identitySecretRef: {name: age-b, key: identity}}\n",
    ));
    let r = s.restore_finished("copy-with-b").await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Succeeded"),
        "{st:#?}\n{}",
        s.operator.log()
    );
    assert_eq!(st.source.clone().unwrap().storage, "replica");
    assert_eq!(s.count("shop_copy_b", "orders"), "500");
    // … and fails on the key (not on the pin) with A.
    s.cluster.apply(&s.restore_yaml(
        "copy-with-a",
        "b1",
        "shop_copy_a",
        "  readFrom: {name: replica}\n  decryption: {identitySecretRef: {name: age-a, key: identity}}\n",
    ));
    let r = s.restore_finished("copy-with-a").await;
    let st = r.status.clone().unwrap();
    assert_eq!(
        st.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("Failed"),
        "{st:#?}"
    );
    let message = st.message.clone().unwrap_or_default();
    assert!(
        message.contains("cannot unwrap the data key") && !message.contains("replaced or altered"),
        "{st:#?}"
    );
}
