//! Deployments, ReplicaSets and probes end to end: the in-repo API server with the runner's
//! Deployment and ReplicaSet controllers and the kubelet on the Docker runtime, pods running the
//! `kube-sim-test-web` image (`tests/images/web.pl`: an HTTP server on the pod IP that becomes
//! reachable after `READY_DELAY` seconds and exits on SIGTERM), real kubectl as the user.
//! Run `scripts/base-images.sh` first (the image is built from `debian:bookworm-slim`).

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{kubectl, kubectl_ok};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube_sim::RunningServer;
use serde_json::{Value, json};

const WEB_V1: &str = "kube-sim-test-web:1";
const WEB_V2: &str = "kube-sim-test-web:2";
const TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the web image (tagged twice, for image-tag rollouts) once per test process.
fn images() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| common::build_test_image("web", &[WEB_V1, WEB_V2]));
}

type Sim = common::DockerSim;

async fn sim() -> Sim {
    common::docker_sim(images, false).await
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Deployment of the web image with an HTTP readiness probe on the pod IP.
fn web(name: &str, replicas: i32, strategy: Value, extra_env: Value) -> Deployment {
    let mut env = vec![
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "PORT", "value": "8080"}),
        json!({"name": "READY_DELAY", "value": "1"}),
    ];
    env.extend(extra_env.as_array().cloned().unwrap_or_default());
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "web",
                        "image": WEB_V1,
                        "env": env,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "http"},
                            "periodSeconds": 1,
                        },
                    }],
                },
            },
        },
    }))
    .unwrap()
}

fn annotations(meta: &kube::api::ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations.clone().unwrap_or_default()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
        .map(|c| {
            (
                c.status.clone().unwrap_or_default(),
                c.reason.clone().unwrap_or_default(),
            )
        })
}

async fn replica_sets(client: &Client, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut list = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items;
    list.sort_by_key(|r| {
        annotations(&r.metadata)
            .get("deployment.kubernetes.io/revision")
            .cloned()
    });
    list
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn hash_of(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash").cloned())
        .unwrap_or_default()
}

/// What a pod watch saw: per event, the pods that are not terminating and how many of them
/// are ready, plus the order in which pods appeared and went.
#[derive(Default)]
struct Observed {
    /// (pods not terminating, of which ready) after each event once the initial list is in.
    counts: Vec<(usize, usize)>,
    /// ("+"/"-", pod name, pod-template-hash) in event order.
    lifecycle: Vec<(char, String, String)>,
}

fn watch_pods(client: &Client, app: &str) -> Arc<Mutex<Observed>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let observed = Arc::new(Mutex::new(Observed::default()));
    let out = observed.clone();
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let mut listed = false;
        let mut stream = watcher(api, cfg).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            let mut o = out.lock().unwrap();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if !pods.contains_key(&name) && listed {
                        o.lifecycle.push(('+', name.clone(), hash_of(&p)));
                    }
                    pods.insert(name, p);
                }
                watcher::Event::Delete(p) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    o.lifecycle.push(('-', name.clone(), hash_of(&p)));
                    pods.remove(&name);
                }
                watcher::Event::Init => {}
                watcher::Event::InitDone => listed = true,
            }
            if listed {
                let live: Vec<&Pod> = pods
                    .values()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let ready = live.iter().filter(|p| is_ready(p)).count();
                o.counts.push((live.len(), ready));
            }
        }
    });
    observed
}

async fn rollout_status(server: &RunningServer, name: &str) -> String {
    let out = kubectl(
        server,
        &[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=55s",
        ],
    )
    .await;
    assert!(out.ok, "rollout status: {}\n{}", out.stderr, out.stdout);
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_surge_and_availability() {
    let s = sim().await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d = web(
        "web",
        2,
        json!({}),
        json!([{"name": "VERSION", "value": "v1"}]),
    );
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let out = rollout_status(&s.server, "web").await;
    assert!(
        out.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let out = kubectl_ok(
        &s.server,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=30s",
        ],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps/web condition met");

    let d = deploys.get("web").await.unwrap();
    let st = d.status.clone().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(2), Some(2), Some(2), Some(2))
    );
    assert_eq!(st.unavailable_replicas, None);
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        condition(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    assert_eq!(
        annotations(&d.metadata).get("deployment.kubernetes.io/revision"),
        Some(&"1".to_string())
    );
    let rss = replica_sets(&s.client, "web").await;
    assert_eq!(rss.len(), 1);
    let rs1 = &rss[0];
    let hash1 = rs1.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        rs1.metadata.name.as_deref(),
        Some(format!("web-{hash1}").as_str())
    );
    assert_eq!(
        rs1.spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash1
    );
    let owner = &rs1.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        ("Deployment", "web", Some(true), Some(true))
    );
    let a = annotations(&rs1.metadata);
    assert_eq!(a["deployment.kubernetes.io/revision"], "1");
    assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "2");
    assert_eq!(a["deployment.kubernetes.io/max-replicas"], "3");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let first = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(first.len(), 2);
    for p in &first {
        assert_eq!(
            p.metadata.generate_name.as_deref(),
            Some(format!("web-{hash1}-").as_str())
        );
        assert!(is_ready(p));
        // The pod answers on its own IP (what the readiness probe checked).
        let ip = p.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let body = http_get(&ip, 8080).await;
        assert!(body.ends_with("v1\n"), "{body}");
    }

    // Roll to a new image tag: maxSurge 25% of 2 = 1 up, maxUnavailable 25% of 2 = 0 down.
    let observed = watch_pods(&s.client, "web");
    wait_for("the pod watch to list", || async {
        (!observed.lock().unwrap().counts.is_empty()).then_some(())
    })
    .await;
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": WEB_V2, "env": [{"name": "VERSION", "value": "v2"}]},
            ]}}}})),
        )
        .await
        .unwrap();
    let out = rollout_status(&s.server, "web").await;
    assert!(out.contains("successfully rolled out"), "{out}");
    // Old pods go away gracefully (SIGTERM) after the rollout.
    let old_names: Vec<String> = first
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    wait_for("old pods to be gone", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        list.items
            .iter()
            .all(|p| !old_names.contains(p.metadata.name.as_ref().unwrap()))
            .then_some(())
    })
    .await;
    {
        let o = observed.lock().unwrap();
        let max_live = o.counts.iter().map(|c| c.0).max().unwrap();
        let min_ready = o.counts.iter().map(|c| c.1).min().unwrap();
        assert!(
            max_live <= 3,
            "more than replicas+maxSurge pods: {:?}",
            o.counts
        );
        assert_eq!(max_live, 3, "the surge pod was used: {:?}", o.counts);
        assert!(min_ready >= 2, "availability dropped: {:?}", o.counts);
        // One pod at a time: the new pods appear one after another, each after an old one went.
        let created: Vec<&(char, String, String)> =
            o.lifecycle.iter().filter(|e| e.0 == '+').collect();
        assert_eq!(created.len(), 2, "{:?}", o.lifecycle);
        assert!(created.iter().all(|e| e.2 != hash1), "{:?}", o.lifecycle);
    }
    for name in &old_names {
        let log = std::fs::read_to_string(
            s.server
                .state_dir()
                .join("logs/default")
                .join(name)
                .join("web.log"),
        )
        .unwrap();
        assert!(log.contains("terminating"), "{name} got SIGTERM: {log}");
    }

    let d = deploys.get("web").await.unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(d.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(
        annotations(&d.metadata).get("deployment.kubernetes.io/revision"),
        Some(&"2".to_string())
    );
    let rss = replica_sets(&s.client, "web").await;
    assert_eq!(rss.len(), 2);
    let (old, new) = (&rss[0], &rss[1]);
    assert_eq!(
        annotations(&old.metadata)["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        annotations(&new.metadata)["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(old.spec.replicas, Some(0));
    assert_eq!(old.status.as_ref().unwrap().replicas, 0);
    assert_eq!(new.spec.replicas, Some(2));
    assert_eq!(new.status.as_ref().unwrap().available_replicas, Some(2));
    let history = kubectl_ok(&s.server, &["rollout", "history", "deployment/web"]).await;
    let revs: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revs, ["1", "2"], "{history}");
    let table = kubectl_ok(&s.server, &["get", "deploy", "web"]).await;
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "2/2", "2", "2"], "{table}");
    let events = kubectl_ok(
        &s.server,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=ScalingReplicaSet",
        ],
    )
    .await;
    assert!(
        events.contains(&format!("Scaled down replica set web-{hash1} from 1 to 0")),
        "{events}"
    );

    // Undo brings revision 1's template back as revision 3 (the old ReplicaSet is reused).
    kubectl_ok(&s.server, &["rollout", "undo", "deployment/web"]).await;
    rollout_status(&s.server, "web").await;
    let rss = replica_sets(&s.client, "web").await;
    assert_eq!(rss.len(), 2, "{rss:?}");
    let reused = rss
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(format!("web-{hash1}").as_str()))
        .unwrap();
    let a = annotations(&reused.metadata);
    assert_eq!(a["deployment.kubernetes.io/revision"], "3");
    assert_eq!(a["deployment.kubernetes.io/revision-history"], "1");
    assert_eq!(reused.spec.replicas, Some(2));
}

async fn http_get(ip: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((ip, port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn pod_names(pods: &Api<Pod>, app: &str, live_only: bool) -> Vec<String> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| !live_only || p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_replacement_recreate_and_cascading_delete() {
    let s = sim().await;
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let mut d = web(
        "rec",
        1,
        json!({"type": "Recreate"}),
        json!([{"name": "VERSION", "value": "v1"}]),
    );
    d.spec.min_ready_seconds = Some(1);
    deploys.create(&PostParams::default(), &d).await.unwrap();
    rollout_status(&s.server, "rec").await;

    // Scale up and down with kubectl (the scale subresource).
    kubectl_ok(&s.server, &["scale", "deployment/rec", "--replicas=3"]).await;
    rollout_status(&s.server, "rec").await;
    let d = deploys.get("rec").await.unwrap();
    assert_eq!(d.status.as_ref().unwrap().available_replicas, Some(3));
    let rss = replica_sets(&s.client, "rec").await;
    assert_eq!(rss.len(), 1, "scaling makes no new revision");
    assert_eq!(
        annotations(&rss[0].metadata)["deployment.kubernetes.io/desired-replicas"],
        "3"
    );
    kubectl_ok(&s.server, &["scale", "deployment/rec", "--replicas=1"]).await;
    wait_for("two pods to go", || async {
        (pod_names(&pods, "rec", false).await.len() == 1).then_some(())
    })
    .await;
    let d = deploys.get("rec").await.unwrap();
    assert_eq!(d.status.as_ref().unwrap().replicas, Some(1));

    // A pod that is deleted is replaced by the ReplicaSet.
    let victim = pod_names(&pods, "rec", true).await.remove(0);
    kubectl_ok(&s.server, &["delete", "pod", &victim, "--wait=false"]).await;
    let replacement = wait_for("a replacement pod", || async {
        pod_names(&pods, "rec", true)
            .await
            .into_iter()
            .find(|n| n != &victim)
    })
    .await;
    kubectl_ok(
        &s.server,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/rec",
            "--timeout=50s",
        ],
    )
    .await;
    wait_for("the replacement to be ready", || async {
        pods.get(&replacement)
            .await
            .ok()
            .filter(is_ready)
            .map(|_| ())
    })
    .await;

    // Recreate: every old pod is gone before the first new one is created.
    let observed = watch_pods(&s.client, "rec");
    wait_for("the pod watch to list", || async {
        (!observed.lock().unwrap().counts.is_empty()).then_some(())
    })
    .await;
    let old_hash = replica_sets(&s.client, "rec").await[0]
        .metadata
        .labels
        .as_ref()
        .unwrap()["pod-template-hash"]
        .clone();
    kubectl_ok(&s.server, &["set", "env", "deployment/rec", "VERSION=v2"]).await;
    rollout_status(&s.server, "rec").await;
    {
        let o = observed.lock().unwrap();
        let first_new = o
            .lifecycle
            .iter()
            .position(|e| e.0 == '+' && e.2 != old_hash)
            .expect("a new pod");
        let last_old_gone = o
            .lifecycle
            .iter()
            .rposition(|e| e.0 == '-' && e.2 == old_hash)
            .expect("the old pod went");
        assert!(last_old_gone < first_new, "{:?}", o.lifecycle);
    }
    let d = deploys.get("rec").await.unwrap();
    assert_eq!(
        condition(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );

    // Orphaned ReplicaSets are adopted by a Deployment that selects them; its pods stay.
    let before = deploys.get("rec").await.unwrap();
    let pods_before = pod_names(&pods, "rec", true).await;
    kubectl_ok(
        &s.server,
        &["delete", "deployment", "rec", "--cascade=orphan"],
    )
    .await;
    wait_for("the replicasets to be orphaned", || async {
        let rss = replica_sets(&s.client, "rec").await;
        (!rss.is_empty() && rss.iter().all(|r| r.metadata.owner_references.is_none())).then_some(())
    })
    .await;
    let mut again = before.clone();
    again.metadata = kube::api::ObjectMeta {
        name: Some("rec".into()),
        ..Default::default()
    };
    again.status = None;
    let again = deploys
        .create(&PostParams::default(), &again)
        .await
        .unwrap();
    let new_uid = again.metadata.uid.clone().unwrap();
    wait_for("the replicasets to be adopted", || async {
        let rss = replica_sets(&s.client, "rec").await;
        rss.iter()
            .all(|r| {
                r.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o[0].uid == new_uid && o[0].controller == Some(true))
            })
            .then_some(())
    })
    .await;
    rollout_status(&s.server, "rec").await;
    assert_eq!(
        pod_names(&pods, "rec", true).await,
        pods_before,
        "no pod was replaced"
    );

    // Deleting the Deployment garbage-collects its ReplicaSets and pods.
    kubectl_ok(&s.server, &["delete", "deployment", "rec"]).await;
    wait_for("replicasets and pods to be collected", || async {
        let rss = replica_sets(&s.client, "rec").await;
        (rss.is_empty() && pod_names(&pods, "rec", false).await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_drive_readiness_and_liveness_restarts() {
    let s = sim().await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probed"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "slow",
                    "image": WEB_V1,
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "PORT", "value": "8080"},
                        {"name": "READY_DELAY", "value": "3"},
                    ],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                },
                {
                    "name": "dead",
                    "image": WEB_V1,
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "PORT", "value": "8081"},
                    ],
                    "livenessProbe": {"httpGet": {"port": 9999, "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 2},
                },
            ],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // Running but not ready until the server listens (3 s), then ready.
    let status = |p: &Pod, c: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|x| x.name == c).cloned())
    };
    let early = wait_for("slow to run", || async {
        let p = pods.get("probed").await.ok()?;
        let c = status(&p, "slow")?;
        c.state.as_ref()?.running.as_ref()?;
        Some(c)
    })
    .await;
    assert!(!early.ready, "not ready before the probe passes: {early:?}");
    wait_for("slow to become ready", || async {
        let p = pods.get("probed").await.ok()?;
        status(&p, "slow").filter(|c| c.ready).map(|_| ())
    })
    .await;
    // The liveness probe of "dead" never passes: the kubelet restarts it.
    let restarted = wait_for("dead to be restarted", || async {
        let p = pods.get("probed").await.ok()?;
        status(&p, "dead").filter(|c| c.restart_count >= 1)
    })
    .await;
    let last = restarted
        .last_state
        .and_then(|s| s.terminated)
        .expect("the previous run terminated");
    assert_eq!(last.exit_code, 0, "web.pl exits 0 on SIGTERM: {last:?}");
    let events = kubectl_ok(
        &s.server,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=probed",
        ],
    )
    .await;
    assert!(
        events.contains("Liveness probe failed: Get \"http://")
            && events.contains("connect: connection refused"),
        "{events}"
    );
    assert!(
        events.contains("Container dead failed liveness probe, will be restarted"),
        "{events}"
    );
    assert!(
        events.contains("Readiness probe failed: dial tcp"),
        "{events}"
    );
}
