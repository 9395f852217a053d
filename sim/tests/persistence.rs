//! A persistent stand-in (`ServerOptions::persist`, `kube-sim --persist`) restarted on the same
//! state directory and address serves the same cluster, as kube-apiserver does over etcd:
//! objects keep their resourceVersions and uids, the counter continues, the CA, the static
//! users' tokens and the service-account signing key stay valid, CRDs stay served, watches
//! from before the restart end and resuming them gets `410 Gone` so that clients relist.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_sim::ServerOptions;
use serde_json::json;

fn opts(dir: &std::path::Path, listen: std::net::SocketAddr) -> ServerOptions {
    ServerOptions {
        listen,
        crds_dir: Some(fixtures()),
        state_dir: Some(dir.to_path_buf()),
        persist: true,
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

fn rv_of(meta: &kube::api::ObjectMeta) -> u64 {
    meta.resource_version.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_restarted_persistent_server_keeps_objects_versions_uids_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_with(opts(dir.path(), "127.0.0.1:0".parse().unwrap())).await;
    let addr = first.addr();
    let client = first.client().await.unwrap();
    let person = first.add_user("alice", &["system:masters"]).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let kept = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kept"}, "data": {"a": "1"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let gone = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap(),
        )
        .await
        .unwrap();
    cms.delete("gone", &DeleteParams::default()).await.unwrap();
    let w = widgets(&client, "default")
        .create(&PostParams::default(), &widget("w", json!({"size": 3})))
        .await
        .unwrap();
    let ns_uid = Api::<Namespace>::all(client.clone())
        .get("default")
        .await
        .unwrap()
        .metadata
        .uid;
    let last_rv = rv_of(&w.metadata);
    // A watch open across the restart must end (its server went away).
    let mut open_watch = cms
        .watch(&WatchParams::default().timeout(60), &last_rv.to_string())
        .await
        .unwrap()
        .boxed();

    drop(first);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = open_watch.next().await {
            if ev.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a watch kept streaming after its server stopped"
    );
    // Nor does it answer anything else, also not on connections opened before the stop.
    assert!(
        cms.get("kept").await.is_err(),
        "a stopped server answered a request"
    );

    let second = start_with(opts(dir.path(), addr)).await;
    assert_eq!(second.addr(), addr);
    // The old kubeconfig (same CA, same admin token) and the added user still work.
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(second.kubeconfig_path()).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let got = cms.get("kept").await.unwrap();
    assert_eq!(got.metadata.uid, kept.metadata.uid);
    assert_eq!(
        got.metadata.resource_version,
        kept.metadata.resource_version
    );
    assert_eq!(got.data, kept.data);
    assert_eq!(
        api_err(cms.get("gone").await.unwrap_err()).code,
        404,
        "a deleted object stays deleted (uid {:?})",
        gone.metadata.uid
    );
    let w2 = widgets(&client, "default").get("w").await.unwrap();
    assert_eq!(
        w2.metadata.uid, w.metadata.uid,
        "CRDs stay served, objects kept"
    );
    assert_eq!(
        Api::<Namespace>::all(client.clone())
            .get("default")
            .await
            .unwrap()
            .metadata
            .uid,
        ns_uid,
        "built-in objects are not seeded again"
    );
    let alice = second.client_for(&person).await.unwrap();
    Api::<ConfigMap>::namespaced(alice, "default")
        .get("kept")
        .await
        .expect("a static user's token survives the restart");

    // The counter continues past every version handed out before.
    let next = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "after"}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(rv_of(&next.metadata) > last_rv);

    // Resuming a watch from before the restart: 410 Gone (the history is not kept).
    let mut stream = cms
        .watch(
            &WatchParams::default().timeout(5),
            kept.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410, "{}", e.message),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // kube-runtime's watcher relists and sees every kept object.
    // (`default` also holds `kube-root-ca.crt`.)
    let names: Vec<String> = tokio::time::timeout(
        Duration::from_secs(10),
        watcher(cms.clone(), watcher::Config::default())
            .applied_objects()
            .take(3)
            .map(|r| r.unwrap().metadata.name.unwrap())
            .collect(),
    )
    .await
    .expect("the watcher lists the kept objects");
    assert!(names.contains(&"kept".to_string()) && names.contains(&"after".to_string()));
    drop(second);

    // A torn last journal record (a crash mid-write) is dropped; the rest loads.
    let journal = dir.path().join(kube_sim::store::JOURNAL_FILE);
    let mut text = std::fs::read_to_string(&journal).unwrap();
    text.push_str("{\"rv\":99999,\"key\":[\"\",\"configm");
    std::fs::write(&journal, text).unwrap();
    let third = start_with(opts(dir.path(), addr)).await;
    let cms: Api<ConfigMap> = Api::namespaced(third.client().await.unwrap(), "default");
    assert!(cms.get("after").await.is_ok());
    assert!(cms.get("kept").await.is_ok());
}

#[tokio::test]
async fn a_server_without_persist_starts_empty_on_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), "127.0.0.1:0".parse().unwrap());
    o.persist = false;
    let first = start_with(o.clone()).await;
    let cms: Api<ConfigMap> = Api::namespaced(first.client().await.unwrap(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
    )
    .await
    .unwrap();
    drop(first);
    assert!(!dir.path().join(kube_sim::store::JOURNAL_FILE).exists());
    let second = start_with(o).await;
    let cms: Api<ConfigMap> = Api::namespaced(second.client().await.unwrap(), "default");
    assert_eq!(api_err(cms.get("x").await.unwrap_err()).code, 404);
}
