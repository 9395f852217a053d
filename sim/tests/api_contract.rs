//! Contract tests of kube-sim through the kube-rs client: each test pins one semantic of the
//! real kube-apiserver that DataGuardian relies on.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Pod, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube_sim::ServerOptions;
use serde_json::{Value, json};

fn rv(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn generation(o: &DynamicObject) -> i64 {
    o.metadata.generation.unwrap()
}

#[tokio::test]
async fn crud_resource_version_conflict_and_generation() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let created = api
        .create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(generation(&created), 1);

    // A configmap write in between moves the cluster-wide counter.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
        )
        .await
        .unwrap();
    let cm_rv: u64 = cm.metadata.resource_version.unwrap().parse().unwrap();
    assert!(cm_rv > rv(&created));

    // Spec change: generation bumps.
    let mut w = api.get("w").await.unwrap();
    w.data["spec"]["size"] = json!(2);
    let updated = api.replace("w", &PostParams::default(), &w).await.unwrap();
    assert_eq!(generation(&updated), 2);
    assert!(rv(&updated) > cm_rv);

    // Stale resourceVersion: 409 Conflict in the real shape.
    w.data["spec"]["size"] = json!(3);
    let err = api_err(
        api.replace("w", &PostParams::default(), &w)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on widgets.test.kube-sim.io \"w\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let details = err.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("w", "test.kube-sim.io", "widgets")
    );

    // Custom resources refuse unconditional updates (no resourceVersion).
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    let err = api_err(
        api.replace("w", &PostParams::default(), &unconditional)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // Metadata-only change: no generation bump.
    let labelled = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(generation(&labelled), 2);
    assert!(rv(&labelled) > rv(&updated));

    // A no-op write keeps the resourceVersion.
    let same = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&labelled));

    // Creating with a resourceVersion is refused, as upstream.
    let mut with_rv = widget("rv", json!({"size": 1}));
    with_rv.metadata.resource_version = Some("5".into());
    let err = api_err(
        api.create(&PostParams::default(), &with_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "resourceVersion should not be set on objects to be created"
    );

    // 404 and 409 AlreadyExists shapes.
    let err = api_err(api.get("missing").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        err.message,
        "widgets.test.kube-sim.io \"missing\" not found"
    );
    let err = api_err(
        api.create(&PostParams::default(), &widget("w", json!({"size": 1})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "widgets.test.kube-sim.io \"w\" already exists");
}

#[tokio::test]
async fn generate_name_and_namespace_must_exist() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let mut w = widget("", json!({"size": 1}));
    w.metadata.name = None;
    w.metadata.generate_name = Some("gen-".into());
    let a = api.create(&PostParams::default(), &w).await.unwrap();
    let b = api.create(&PostParams::default(), &w).await.unwrap();
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(na.starts_with("gen-") && na.len() == 9, "{na}");
    assert_ne!(na, nb);

    let err = api_err(
        widgets(&client, "nowhere")
            .create(&PostParams::default(), &widget("x", json!({"size": 1})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn status_subresource_split() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let mut w = widget("s", json!({"size": 1}));
    w.data["status"] = json!({"phase": "Sneaky"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    let st = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"size": 50}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(st.data["spec"]["size"], 1, "status writes ignore spec");
    assert_eq!(generation(&st), 1, "status writes do not bump generation");

    let main = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Hacked"}, "spec": {"size": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.data["status"]["phase"], "Ready",
        "main writes ignore status"
    );
    assert_eq!(main.data["spec"]["size"], 4);
    assert_eq!(generation(&main), 2);

    // PUT on /status with the full object.
    let mut cur = api.get_status("s").await.unwrap();
    cur.data["status"]["phase"] = json!("Done");
    cur.data["spec"]["size"] = json!(99);
    let put = api
        .replace_status("s", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(put.data["status"]["phase"], "Done");
    assert_eq!(put.data["spec"]["size"], 4);
}

#[tokio::test]
async fn schema_validation_cel_defaulting_and_pruning() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let err = api_err(
        api.create(&PostParams::default(), &widget("bad", json!({"size": 300})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message.starts_with(
            "Widget.test.kube-sim.io \"bad\" is invalid: spec.size: Invalid value: 300"
        ),
        "{}",
        err.message
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.size");
    assert_eq!(causes[0].reason, "FieldValueInvalid");

    let err = api_err(
        api.create(
            &PostParams::default(),
            &widget("red", json!({"size": 50, "color": "red"})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        err.message.contains("red widgets must be small"),
        "{}",
        err.message
    );

    // Defaulting and pruning of unknown fields.
    let w = api
        .create(
            &PostParams::default(),
            &widget("ok", json!({"size": 1, "frozen": "ice", "bogus": true})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["color"], "blue");
    assert!(w.data["spec"].get("bogus").is_none());

    // Transition rule (oldSelf) on update.
    let err = api_err(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"frozen": "water"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(err.message.contains("spec.frozen"), "{}", err.message);
    assert!(
        err.message.contains("frozen is immutable"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn patch_types_merge_json_strategic() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // Strategic: containers merge by name (only images may change on a pod, as in Kubernetes).
    let p = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{"name": "a", "image": "x:2"}]}})),
        )
        .await
        .unwrap();
    let cs = p.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("x:2"));
    assert_eq!(cs[0].env.as_ref().unwrap().len(), 1);
    let err = api_err(
        pods.patch("p", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422, "pod specs are immutable apart from images");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let merged = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap().into_iter().collect::<Vec<_>>(),
        vec![("b".into(), "2".into()), ("c".into(), "3".into())]
    );
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/b", "value": "20"}]))
            .unwrap();
    let jp = cms
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(jp.data.unwrap()["b"], "20");

    // Strategic merge is refused for custom resources, as by the real server.
    let api = widgets(&client, "default");
    api.create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    let err = api_err(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 415);

    // A merge patch carrying a stale resourceVersion conflicts.
    let err = api_err(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn server_side_apply_managers_conflicts_and_force() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let applied = json!({
        "apiVersion": "test.kube-sim.io/v1", "kind": "Widget",
        "metadata": {"name": "a", "labels": {"team": "x"}},
        "spec": {"size": 1, "tags": ["one"], "parts": [{"name": "p1", "count": 1}]}
    });
    let w = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 1);
    let mf = w.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Another manager changing alice's field conflicts...
    let bob = json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "metadata": {"name": "a"},
                     "spec": {"size": 2, "tags": ["two"], "parts": [{"name": "p2", "count": 2}]}});
    let err = api_err(
        api.patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message
            .starts_with("Apply failed with 1 conflict: conflict with \"alice\""),
        "{}",
        err.message
    );
    assert!(err.message.contains(".spec.size"), "{}", err.message);

    // ...unless forced; set and map lists merge.
    let w = api
        .patch("a", &PatchParams::apply("bob").force(), &Patch::Apply(&bob))
        .await
        .unwrap();
    assert_eq!(w.data["spec"]["size"], 2);
    assert_eq!(w.data["spec"]["tags"], json!(["one", "two"]));
    assert_eq!(w.data["spec"]["parts"].as_array().unwrap().len(), 2);

    // alice drops her label and part: they are removed (nobody else owns them).
    let alice2 = json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "metadata": {"name": "a"},
                        "spec": {"tags": ["one"]}});
    let w = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
        .await
        .unwrap();
    assert!(
        w.metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key("team"))
    );
    assert_eq!(w.data["spec"]["parts"], json!([{"name": "p2", "count": 2}]));
    assert_eq!(w.data["spec"]["size"], 2);

    // Apply creates missing objects, and a non-apply write is tracked as an Update.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let c = cms
        .patch("fresh", &PatchParams::apply("ctl"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"k": "v"}})))
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["k"], "v");
    let editor = PatchParams {
        field_manager: Some("editor".into()),
        ..Default::default()
    };
    let c = cms
        .patch(
            "fresh",
            &editor,
            &Patch::Merge(json!({"data": {"k": "edited"}})),
        )
        .await
        .unwrap();
    let mf = c.metadata.managed_fields.unwrap();
    let ed = mf
        .iter()
        .find(|m| m.manager.as_deref() == Some("editor"))
        .expect("editor entry");
    assert_eq!(ed.operation.as_deref(), Some("Update"));
    // The applier lost the field to the editor: re-applying the old value conflicts.
    let err = api_err(
        cms.patch("fresh", &PatchParams::apply("ctl"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fresh"}, "data": {"k": "v"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains("conflict with \"editor\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, labels) in [
        ("a", json!({"app": "db", "tier": "backend"})),
        ("b", json!({"app": "web", "tier": "frontend"})),
        ("c", json!({"app": "db"})),
    ] {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let mut v: Vec<String> = cms
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                // Every namespace also holds the root-CA publisher's ConfigMap (no labels).
                .filter(|n| n != "kube-root-ca.crt")
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(names("app=db").await, ["a", "c"]);
    assert_eq!(names("app==db,tier=backend").await, ["a"]);
    assert_eq!(names("app!=db").await, ["b"]);
    assert_eq!(names("tier!=backend").await, ["b", "c"]);
    assert_eq!(names("app in (web,db)").await, ["a", "b", "c"]);
    assert_eq!(names("tier notin (frontend)").await, ["a", "c"]);
    assert_eq!(names("tier").await, ["a", "b"]);
    assert_eq!(names("!tier").await, ["c"]);

    // Label values are validated like the real server does (63 characters, charset).
    let long = "v".repeat(64);
    let err = api_err(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "long", "labels": {"k": long}}}))
                .unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        format!(
            "ConfigMap \"long\" is invalid: metadata.labels: Invalid value: \"{long}\": must be no more than 63 characters"
        )
    );

    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let err = api_err(
        cms.list(&ListParams::default().fields("data.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);

    // Pagination with limit/continue (three pages of two: our three objects and the
    // namespace's kube-root-ca.crt).
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    let mut all: Vec<String> = page
        .items
        .iter()
        .chain(rest.items.iter())
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, ["a", "b", "c", "kube-root-ca.crt"]);
    assert!(rest.metadata.continue_.is_none());

    // deletecollection honours the selector.
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=db"),
    )
    .await
    .unwrap();
    assert_eq!(names("").await, ["b"]);
}

#[tokio::test]
async fn watch_resume_bookmarks_and_watcher() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let first = api
        .create(&PostParams::default(), &widget("w1", json!({"size": 1})))
        .await
        .unwrap();
    let resume_from = first.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &widget("w2", json!({"size": 2})))
        .await
        .unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 5}})),
    )
    .await
    .unwrap();
    api.delete("w2", &DeleteParams::default()).await.unwrap();

    // Resume from the first create's RV: exactly the later events, in order.
    let wp = WatchParams::default().timeout(5);
    let mut stream = api.watch(&wp, &resume_from).await.unwrap().boxed();
    let mut seen = Vec::new();
    let mut bookmark = false;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        match ev.unwrap() {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                bookmark = true;
                break;
            }
            WatchEvent::Error(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w2", "MODIFIED w1", "DELETED w2"]);
    assert!(bookmark, "bookmarks are sent when allowed");

    // The kube-rs watcher (list + watch) sees later changes.
    let mut w = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let api2 = api.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        api2.create(&PostParams::default(), &widget("w3", json!({"size": 3})))
            .await
            .unwrap();
    });
    let mut names = Vec::new();
    while !names.contains(&"w3".to_string()) {
        let o = tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        names.push(o.metadata.name.unwrap());
    }
    assert!(names.contains(&"w1".to_string()));

    // Streaming lists (sendInitialEvents) work with the kube-rs watcher too.
    let mut w = watcher(api.clone(), watcher::Config::default().streaming_lists())
        .default_backoff()
        .boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    initial.sort();
    assert_eq!(initial, ["w1", "w3"]);
}

#[tokio::test]
async fn watch_too_old_resource_version_is_410() {
    let server = start_with(ServerOptions {
        crds_dir: Some(fixtures()),
        history_limit: 3,
        ..Default::default()
    })
    .await;
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c0"}})).unwrap(),
        )
        .await
        .unwrap();
    for i in 1..10 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let mut stream = cms
        .watch(
            &WatchParams::default().timeout(5),
            first.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A resourceVersion from the future (e.g. after a server restart) is a 504 like upstream's
    // "Too large resource version" (kube-rs would retry 504s; this client does not).
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.default_retry = false;
    let no_retry = kube::Client::try_from(cfg).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(no_retry, "default");
    let err = cms
        .watch(&WatchParams::default().timeout(5), "999999")
        .await;
    let err = match err {
        Err(e) => api_err(e),
        Ok(s) => match s.boxed().next().await {
            Some(Err(e)) => api_err(e),
            other => panic!("expected an error, got {:?}", other.map(|r| r.map(|_| ()))),
        },
    };
    assert_eq!(err.code, 504);
    assert!(
        err.message.starts_with("Too large resource version"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn watch_label_selector_transitions() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(
            &WatchParams::default().labels("sel=yes").timeout(5),
            &start_rv,
        )
        .await
        .unwrap()
        .boxed();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "x", "labels": {"sel": "no"}}}))
            .unwrap(),
    )
    .await
    .unwrap();
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        match stream.next().await.unwrap().unwrap() {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Deleted(_) => kinds.push("DELETED"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    let mut w = widget("f", json!({"size": 1}));
    w.metadata.finalizers = Some(vec!["test.kube-sim.io/cleanup".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let cur = api.get("f").await.unwrap();
    assert!(
        cur.metadata.deletion_timestamp.is_some(),
        "only marked for deletion"
    );
    assert_eq!(
        generation(&cur),
        2,
        "setting deletionTimestamp bumps generation"
    );

    let err = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["test.kube-sim.io/cleanup", "another"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("no new finalizers can be added"),
        "{}",
        err.message
    );

    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let err = api_err(api.get("f").await.unwrap_err());
    assert_eq!(
        err.code, 404,
        "removing the last finalizer deletes the object"
    );

    // Preconditions.
    api.create(&PostParams::default(), &widget("p", json!({"size": 1})))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let err = api_err(api.delete("p", &dp).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        err.message
    );
}

async fn owned_configmap(cms: &Api<ConfigMap>, name: &str, owner: &ConfigMap, block: bool) {
    let o = json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner.metadata.name.clone().unwrap(),
            "uid": owner.metadata.uid.clone().unwrap(),
            "blockOwnerDeletion": block,
        }]}
    });
    cms.create(&PostParams::default(), &serde_json::from_value(o).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mk =
        |n: &str| serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": n}})).unwrap();

    // Background (default): dependents go after the owner.
    let owner = cms
        .create(&PostParams::default(), &mk("owner"))
        .await
        .unwrap();
    owned_configmap(&cms, "dep", &owner, false).await;
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("background GC deletes the dependent", || async {
        cms.get_opt("dep").await.unwrap().is_none()
    })
    .await;

    // An owner in another namespace does not count (the real GC looks owners up in the
    // dependent's namespace): the dependent is collected.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let foreign = other
        .create(&PostParams::default(), &mk("foreign-owner"))
        .await
        .unwrap();
    owned_configmap(&cms, "cross-ns-dep", &foreign, false).await;
    eventually("cross-namespace dependent collected", || async {
        cms.get_opt("cross-ns-dep").await.unwrap().is_none()
    })
    .await;

    // Two controllers are refused.
    let two = json!({"metadata": {"name": "two", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "1", "controller": true},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": "2", "controller": true}]}});
    let err = api_err(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(two).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("Only one reference can have Controller set to true"),
        "{}",
        err.message
    );

    // Orphan: dependents stay, without the owner reference.
    let owner = cms
        .create(&PostParams::default(), &mk("owner2"))
        .await
        .unwrap();
    owned_configmap(&cms, "dep2", &owner, false).await;
    cms.delete(
        "owner2",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually("orphaned owner goes away", || async {
        cms.get_opt("owner2").await.unwrap().is_none()
    })
    .await;
    let dep = cms.get("dep2").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());

    // Foreground: the owner waits (with a deletionTimestamp) until blocking dependents are gone.
    let owner = cms
        .create(&PostParams::default(), &mk("owner3"))
        .await
        .unwrap();
    owned_configmap(&cms, "dep3", &owner, true).await;
    let mut dep3 = cms.get("dep3").await.unwrap();
    dep3.metadata.finalizers = Some(vec!["hold".into()]);
    cms.replace("dep3", &PostParams::default(), &dep3)
        .await
        .unwrap();
    cms.delete("owner3", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("dependent marked for deletion", || async {
        cms.get("dep3")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let o3 = cms.get("owner3").await.unwrap();
    assert!(o3.metadata.deletion_timestamp.is_some());
    assert!(
        o3.metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    cms.patch(
        "dep3",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("foreground owner deleted after its dependent", || async {
        cms.get_opt("owner3").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn jobs_default_to_orphan_and_get_selector_labels() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    let job = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let uid = job.metadata.uid.clone().unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(6));
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(labels["job-name"], "j");

    let bad = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "bad"}, "spec": {"template": {"spec": {
                "restartPolicy": "Always", "containers": [{"name": "c", "image": "busybox"}]}}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    let bad = api_err(bad);
    assert_eq!(bad.code, 422);
    assert!(
        bad.message
            .contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{}",
        bad.message
    );

    // A pod owned by the job survives a default delete (orphan) but not a background one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mk_pod = |name: &str, uid: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    };
    pods.create(&PostParams::default(), &mk_pod("p1", &uid))
        .await
        .unwrap();
    jobs.delete("j", &DeleteParams::default()).await.unwrap();
    eventually("job gone", || async {
        jobs.get_opt("j").await.unwrap().is_none()
    })
    .await;
    let p1 = pods.get("p1").await.unwrap();
    assert!(p1.metadata.owner_references.unwrap_or_default().is_empty());

    let job = jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "j2"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &mk_pod("p2", job.metadata.uid.as_deref().unwrap()),
    )
    .await
    .unwrap();
    jobs.delete("j2", &DeleteParams::background())
        .await
        .unwrap();
    eventually("pod of background-deleted job gone", || async {
        pods.get_opt("p2").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn namespace_lifecycle() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "team");
    eventually("default service account created", || async {
        sas.get_opt("default").await.unwrap().is_some()
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");
    let s = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        s.data.unwrap()["k"].0,
        b"v".to_vec(),
        "stringData is folded into data"
    );

    let api = widgets(&client, "team");
    let mut w = widget("held", json!({"size": 1}));
    w.metadata.finalizers = Some(vec!["x/y".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();

    nss.delete("team", &DeleteParams::default()).await.unwrap();
    let ns = nss.get("team").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let err = api_err(
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains("because it is being terminated"),
        "{}",
        err.message
    );

    eventually("contents deleted", || async {
        secrets.get_opt("s").await.unwrap().is_none()
    })
    .await;
    assert!(
        nss.get_opt("team").await.unwrap().is_some(),
        "waits for finalizers of contents"
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("namespace removed", || async {
        nss.get_opt("team").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn events_both_apis_share_storage() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
        "events",
    );
    let v1: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let ev: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "w.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "dataguardian.io/operator", "reportingInstance": "op-1",
        "action": "Reconcile", "reason": "Scheduled", "type": "Normal", "note": "created run",
        "regarding": {"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "name": "w", "namespace": "default", "uid": "u-1"}
    }))
    .unwrap();
    v1.create(&PostParams::default(), &ev).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=w,involvedObject.kind=Widget"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.message.as_deref(), Some("created run"));
    assert_eq!(
        e.reporting_component.as_deref(),
        Some("dataguardian.io/operator")
    );
    assert_eq!(e.involved_object.uid.as_deref(), Some("u-1"));
    let back = v1.get("w.1").await.unwrap();
    assert_eq!(back.data["note"], "created run");
    assert_eq!(back.data["regarding"]["name"], "w");
}

#[tokio::test]
async fn leases_crud() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let l = leases
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap())
        .await
        .unwrap();
    let mut stale = l.clone();
    let mut next = l.clone();
    next.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &next)
        .await
        .unwrap();
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api_err(
        leases
            .replace("leader", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409, "two candidates cannot both win");
}

#[tokio::test]
async fn pod_logs_tail_and_follow() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}, {"name": "side", "image": "y"}]}})).unwrap(),
    )
    .await
    .unwrap();
    let dir = server.state_dir().join("logs/default/p");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("main.log");
    std::fs::write(&file, "one\ntwo\nthree\n").unwrap();

    let lp = kube::api::LogParams {
        container: Some("main".into()),
        tail_lines: Some(2),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &lp).await.unwrap(), "two\nthree\n");
    let err = api_err(
        pods.logs("p", &kube::api::LogParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message
            .contains("a container name must be specified for pod p, choose one of: [main side]"),
        "{}",
        err.message
    );

    // follow: streams appended bytes until the container is terminated and the file drained.
    let lp = kube::api::LogParams {
        container: Some("main".into()),
        follow: true,
        ..Default::default()
    };
    let reader = pods.log_stream("p", &lp).await.unwrap();
    let collect = tokio::spawn(async move {
        use futures::AsyncReadExt;
        let mut s = String::new();
        let mut reader = Box::pin(reader);
        reader.read_to_string(&mut s).await.unwrap();
        s
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(b"four\n").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !collect.is_finished(),
        "follow keeps streaming while the container runs"
    );
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}})),
    )
    .await
    .unwrap();
    let all = tokio::time::timeout(Duration::from_secs(5), collect)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, "one\ntwo\nthree\nfour\n");
}

#[tokio::test]
async fn discovery_documents() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "32"));
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "test.kube-sim.io"));
    let res = client
        .list_api_group_resources("test.kube-sim.io/v1")
        .await
        .unwrap();
    let w = res.resources.iter().find(|r| r.name == "widgets").unwrap();
    assert_eq!(w.short_names.as_deref(), Some(&["wd".to_string()][..]));
    assert_eq!(
        w.categories.as_deref(),
        Some(&["kubesimtest".to_string()][..])
    );
    assert!(w.namespaced);
    assert!(res.resources.iter().any(|r| r.name == "widgets/status"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(core.resources.iter().any(|r| r.name == "pods/log"));
    // kube-rs discovery over everything works.
    let d = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    assert!(d.groups().any(|g| g.name() == "batch"));
    let _: Vec<Value> = Vec::new();
}

#[tokio::test]
async fn pod_binding_and_graceful_deletion() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mk = |n: &str| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": n}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap()
    };
    pods.create(&PostParams::default(), &mk("unbound"))
        .await
        .unwrap();
    pods.delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        pods.get_opt("unbound").await.unwrap().is_none(),
        "unscheduled pods go at once"
    );

    let p = pods
        .create(&PostParams::default(), &mk("bound"))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": "bound", "uid": p.metadata.uid.clone().unwrap()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let _: Value = pods
        .create_subresource("binding", "bound", &PostParams::default(), &binding)
        .await
        .unwrap();
    let p = pods.get("bound").await.unwrap();
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    let again: Result<Value, _> = pods
        .create_subresource("binding", "bound", &PostParams::default(), &binding)
        .await;
    assert_eq!(api_err(again.unwrap_err()).code, 409);
    let err = api_err(
        pods.patch(
            "bound",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "other"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422, "nodeName changes only through binding");

    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let p = pods.get("bound").await.unwrap();
    assert!(
        p.metadata.deletion_timestamp.is_some(),
        "a bound pod terminates gracefully"
    );
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // The kubelet's status updates while terminating do not remove the pod.
    pods.patch_status(
        "bound",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    assert!(pods.get_opt("bound").await.unwrap().is_some());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("bound", &dp).await.unwrap();
    assert!(
        pods.get_opt("bound").await.unwrap().is_none(),
        "the kubelet's zero-grace delete removes it"
    );
}

#[tokio::test]
async fn server_side_apply_of_jobs_is_idempotent() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), "default");
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "backup-1", "labels": {"app": "dg"}},
        "spec": {"backoffLimit": 2, "template": {"metadata": {"labels": {"run": "1"}}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "agent", "image": "dataguardian:dev", "args": ["agent", "backup"],
                            "env": [{"name": "A", "value": "1"}]}]}}}
    });
    let pp = PatchParams::apply("dataguardian-backuprun").force();
    let first = jobs
        .patch("backup-1", &pp, &Patch::Apply(&job))
        .await
        .unwrap();
    let uid = first.metadata.uid.clone().unwrap();
    let labels = first
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(labels["run"], "1");
    assert_eq!(
        labels["batch.kubernetes.io/controller-uid"], uid,
        "server-generated labels kept"
    );
    let second = jobs
        .patch("backup-1", &pp, &Patch::Apply(&job))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version, second.metadata.resource_version,
        "re-applying is a no-op"
    );

    let mut changed = job.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("dataguardian:v2");
    let err = api_err(
        jobs.patch("backup-1", &pp, &Patch::Apply(&changed))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.template: Invalid value"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("field is immutable"),
        "{}",
        err.message
    );

    // Job status written through the status subresource by another manager.
    let st = jobs
        .patch_status(
            "backup-1",
            &PatchParams::apply("job-controller").force(),
            &Patch::Apply(
                json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"active": 1}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().active, Some(1));
    assert_eq!(st.metadata.generation, Some(1));
}

#[tokio::test]
async fn server_side_apply_of_status_drops_fields_no_longer_applied() {
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    api.create(&PostParams::default(), &widget("s", json!({"size": 1})))
        .await
        .unwrap();
    let pp = PatchParams::apply("widget-controller").force();
    let body = |status: Value| json!({"apiVersion": "test.kube-sim.io/v1", "kind": "Widget", "status": status});
    api.patch_status(
        "s",
        &pp,
        &Patch::Apply(body(json!({
        "phase": "Running", "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "Starting"}]}))),
    )
    .await
    .unwrap();
    // Another controller owns a different condition type (map list keyed by type).
    api.patch_status(
        "s",
        &PatchParams::apply("other").force(),
        &Patch::Apply(body(json!({
        "conditions": [{"type": "Healthy", "status": "True"}]}))),
    )
    .await
    .unwrap();
    let w = api
        .patch_status(
            "s",
            &pp,
            &Patch::Apply(body(json!({
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Done"}]}))),
        )
        .await
        .unwrap();
    let st = &w.data["status"];
    assert!(
        st.get("phase").is_none(),
        "a field the manager stopped applying is removed: {st}"
    );
    let conds = st["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 2, "{st}");
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    );
    assert!(conds.iter().any(|c| c["type"] == "Healthy"));
    assert_eq!(w.data["spec"]["size"], 1);
    assert_eq!(generation(&w), 1);
}

/// GETs `path` as JSON.
async fn get_json(client: &kube::Client, path: &str) -> Value {
    client
        .request(axum::http::Request::get(path).body(Vec::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test]
async fn every_listed_item_is_the_object_a_get_returns_whole_and_in_order() {
    // A list is written straight from the stored objects (no copy per item): each item must
    // still be exactly what a GET of that object returns, `apiVersion` and `kind` included,
    // on every page, for a custom resource, a core kind whose keys sort around `kind`
    // (Secret: `data` before it, `type` after it) and a kind served in a converted form
    // (events.k8s.io/v1 Events over the core store).
    let server = start().await;
    let client = server.client().await.unwrap();
    let api = widgets(&client, "default");
    for (i, name) in ["w1", "w2", "w3"].into_iter().enumerate() {
        api.create(&PostParams::default(), &widget(name, json!({"size": i})))
            .await
            .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for name in ["s1", "s2"] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "x"}},
            "type": "Opaque",
            "stringData": {"k": name},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Secret", "name": "s1", "namespace": "default"},
        "reason": "Checked", "message": "m", "type": "Normal",
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();

    for (list, kind, names) in [
        (
            "/apis/test.kube-sim.io/v1/namespaces/default/widgets",
            "Widget",
            vec!["w1", "w2", "w3"],
        ),
        (
            "/api/v1/namespaces/default/secrets",
            "Secret",
            vec!["s1", "s2"],
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            "Event",
            vec!["e1"],
        ),
    ] {
        // Page by page (one object each), then whole.
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let url = match &token {
                Some(t) => format!("{list}?limit=1&continue={t}"),
                None => format!("{list}?limit=1"),
            };
            let page = get_json(&client, &url).await;
            assert_eq!(page["kind"], format!("{kind}List"));
            let items = page["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{url}: {page}");
            for item in items {
                let name = item["metadata"]["name"].as_str().unwrap().to_string();
                let got = get_json(&client, &format!("{list}/{name}")).await;
                assert_eq!(item, &got, "{url}: the listed {name} differs from a GET");
                assert_eq!(item["kind"], kind);
                seen.push(name);
            }
            token = page["metadata"]["continue"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen, names, "{list}: every object once, in order");
        let whole = get_json(&client, list).await;
        let whole_names: Vec<_> = whole["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(whole_names, names);
        assert!(whole["metadata"]["resourceVersion"].as_str().is_some());
    }
}
