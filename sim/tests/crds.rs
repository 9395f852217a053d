//! CustomResourceDefinitions as API objects: applied with kubectl (server-side) like an
//! install does, served dynamically, updated, validated, deleted with their custom resources.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, WatchParams,
};
use kube_sim::ServerOptions;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn repo_crds() -> String {
    repo().join("crds").display().to_string()
}

async fn bare_server() -> kube_sim::RunningServer {
    start_with(ServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    })
    .await
}

/// `name → resourceVersion` of every CRD.
async fn crd_versions(server: &kube_sim::RunningServer) -> Vec<(String, String)> {
    let out = kubectl_ok(
        server,
        &[
            "get",
            "crd",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
        ],
    )
    .await;
    out.lines()
        .map(|l| {
            let (n, rv) = l.split_once('=').expect("name=rv");
            (n.to_string(), rv.to_string())
        })
        .collect()
}

const NAMES: [&str; 5] = [
    "backuppolicies.dataguardian.io",
    "backupruns.dataguardian.io",
    "backupstorages.dataguardian.io",
    "restoreruns.dataguardian.io",
    "restorevalidations.dataguardian.io",
];

#[tokio::test]
async fn kubectl_server_side_apply_of_the_repo_crds_serves_them() {
    let server = bare_server().await;
    let out = kubectl(&server, &["get", "backupstorages", "-A"]).await;
    assert!(!out.ok, "not served before the CRDs exist: {}", out.stdout);

    let crds = repo_crds();
    let out = kubectl_ok(&server, &["apply", "--server-side", "-f", &crds]).await;
    for n in NAMES {
        assert!(
            out.contains(&format!(
                "customresourcedefinition.apiextensions.k8s.io/{n} serverside-applied"
            )),
            "{out}"
        );
    }
    let mut args = vec!["wait", "--for", "condition=established", "--timeout=20s"];
    let crd_args: Vec<String> = NAMES.iter().map(|n| format!("crd/{n}")).collect();
    args.extend(crd_args.iter().map(String::as_str));
    let out = kubectl_ok(&server, &args).await;
    assert_eq!(out.matches("condition met").count(), 5, "{out}");

    // The CRD object as the server keeps it: generation, defaults, status, managedFields of
    // the applier.
    let client = server.client().await.unwrap();
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let bs = crd_api.get("backupstorages.dataguardian.io").await.unwrap();
    assert_eq!(bs.metadata.generation, Some(1));
    assert_eq!(
        bs.spec.names.list_kind.as_deref(),
        Some("BackupStorageList")
    );
    assert_eq!(
        bs.spec.conversion.as_ref().map(|c| c.strategy.as_str()),
        Some("None")
    );
    let status = bs.status.expect("status");
    assert_eq!(status.stored_versions, Some(vec!["v1alpha1".to_string()]));
    assert_eq!(
        status.accepted_names.map(|n| n.kind),
        Some("BackupStorage".into())
    );
    let conds: Vec<(String, String)> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert!(conds.contains(&("NamesAccepted".into(), "True".into())));
    assert!(conds.contains(&("Established".into(), "True".into())));
    let managers: Vec<(String, String)> = bs
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(managers, [("kubectl".to_string(), "Apply".to_string())]);

    // Discovery lists the new resources.
    let out = kubectl_ok(&server, &["api-resources", "--api-group=dataguardian.io"]).await;
    for r in [
        "backuppolicies",
        "backupruns",
        "backupstorages",
        "restoreruns",
        "restorevalidations",
    ] {
        assert!(out.contains(r), "{out}");
    }

    // A BackupStorage from examples/, with kubectl (client-side validation downloads the
    // OpenAPI document of the new group-version).
    let examples = repo().join("examples");
    let out = kubectl_ok(
        &server,
        &[
            "apply",
            "-f",
            &examples.join("00-namespace.yaml").display().to_string(),
            "-f",
            &examples
                .join("12-storage-filesystem.yaml")
                .display()
                .to_string(),
        ],
    )
    .await;
    assert!(
        out.contains("backupstorage.dataguardian.io/local created"),
        "{out}"
    );
    let out = kubectl_ok(&server, &["get", "backupstorages", "-n", "shop"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "BUCKET",
            "CLAIM",
            "READY",
            "LATENCY(MS)",
            "LAST",
            "PROBE",
            "AGE"
        ],
        "{out}"
    );
    assert!(out.lines().nth(1).unwrap().starts_with("local "), "{out}");
    let out = kubectl_ok(&server, &["get", "bs", "-n", "shop", "-o", "name"]).await;
    assert_eq!(out.trim(), "backupstorage.dataguardian.io/local");

    // Schema and CEL validation come back as before.
    let bad = "apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata:
  name: bad
  namespace: shop
spec:
  filesystem:
    claimName: backups
    path: /data/../etc
";
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(bad)).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("path must be absolute and must not contain '..'"),
        "{}",
        out.stderr
    );
    let neither = "apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata:
  name: neither
  namespace: shop
spec: {}
";
    let out = kubectl_stdin(&server, &["apply", "-f", "-"], Some(neither)).await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("exactly one of s3 or filesystem must be set"),
        "{}",
        out.stderr
    );

    // Applying the same CRDs again is a no-op: nothing changes, not even resourceVersions.
    let before = crd_versions(&server).await;
    assert_eq!(before.len(), 5);
    let out = kubectl_ok(&server, &["apply", "--server-side", "-f", &crds]).await;
    assert_eq!(out.matches("serverside-applied").count(), 5, "{out}");
    assert_eq!(crd_versions(&server).await, before);
    // So is a client-side apply of unchanged CRDs from another manager... and the objects stay.
    let out = kubectl_ok(&server, &["get", "bs", "-n", "shop", "local"]).await;
    assert!(out.contains("local"), "{out}");
}

#[tokio::test]
async fn a_server_started_with_crds_dir_accepts_server_side_apply_of_the_same_crds() {
    let server = start_with(ServerOptions {
        crds_dir: Some(repo().join("crds")),
        ..Default::default()
    })
    .await;
    // The start-up CRDs are ordinary stored objects, without managedFields.
    let client = server.client().await.unwrap();
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let bs = crd_api.get("backupstorages.dataguardian.io").await.unwrap();
    assert!(bs.metadata.uid.is_some());
    assert!(bs.metadata.resource_version.is_some());
    assert_eq!(bs.metadata.generation, Some(1));
    assert!(bs.metadata.managed_fields.is_none());

    let crds = repo_crds();
    let out = kubectl_ok(&server, &["apply", "--server-side", "-f", &crds]).await;
    assert_eq!(out.matches("serverside-applied").count(), 5, "{out}");
    let after_first = crd_versions(&server).await;
    let bs = crd_api.get("backupstorages.dataguardian.io").await.unwrap();
    assert_eq!(bs.metadata.generation, Some(1), "the spec did not change");
    let out = kubectl_ok(&server, &["apply", "--server-side", "-f", &crds]).await;
    assert_eq!(out.matches("serverside-applied").count(), 5, "{out}");
    assert_eq!(crd_versions(&server).await, after_first);
    // A client-side apply works too.
    let out = kubectl_ok(
        &server,
        &[
            "apply",
            "-f",
            &repo()
                .join("crds/backupruns.dataguardian.io.yaml")
                .display()
                .to_string(),
        ],
    )
    .await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/backupruns.dataguardian.io"),
        "{out}"
    );
}

fn gadget_crd(extra_field: bool) -> String {
    let color = if extra_field {
        "\n              color:\n                type: string\n                enum: [red, blue]"
    } else {
        ""
    };
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.dyn.kube-sim.io
spec:
  group: dyn.kube-sim.io
  scope: Namespaced
  names:
    plural: gadgets
    singular: gadget
    kind: Gadget
    shortNames: [gd]
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.replicas <= 10
              message: at most 10 replicas
            properties:
              replicas:
                type: integer{color}
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
"
    )
}

fn gadget_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("dyn.kube-sim.io", "v1", "Gadget"),
        "gadgets",
    )
}

fn gadget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "dyn.kube-sim.io/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_crd_update_recompiles_its_schema_and_keeps_the_objects() {
    let server = bare_server().await;
    let out = kubectl_stdin(
        &server,
        &["apply", "--server-side", "-f", "-"],
        Some(&gadget_crd(false)),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    kubectl_ok(
        &server,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/gadgets.dyn.kube-sim.io",
        ],
    )
    .await;
    let client = server.client().await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &gadget_ar());
    api.create(
        &PostParams::default(),
        &gadget("g1", json!({"replicas": 2})),
    )
    .await
    .unwrap();
    // CEL from the CRD.
    let e = api_err(
        api.create(
            &PostParams::default(),
            &gadget("g2", json!({"replicas": 11})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(e.message.contains("at most 10 replicas"), "{}", e.message);
    // `color` is not in the schema yet: pruned (and refused with strict validation).
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some("apiVersion: dyn.kube-sim.io/v1\nkind: Gadget\nmetadata:\n  name: g3\n  namespace: default\nspec:\n  replicas: 1\n  color: red\n"),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("unknown field \"spec.color\""),
        "{}",
        out.stderr
    );

    // The CRD gains the field: generation 2, the new schema applies, g1 is still there.
    let out = kubectl_stdin(
        &server,
        &["apply", "--server-side", "-f", "-"],
        Some(&gadget_crd(true)),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let generation = kubectl_ok(
        &server,
        &[
            "get",
            "crd",
            "gadgets.dyn.kube-sim.io",
            "-o",
            "jsonpath={.metadata.generation}",
        ],
    )
    .await;
    assert_eq!(generation, "2");
    let out = kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        Some("apiVersion: dyn.kube-sim.io/v1\nkind: Gadget\nmetadata:\n  name: g3\n  namespace: default\nspec:\n  replicas: 1\n  color: red\n"),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let g3 = api.get("g3").await.unwrap();
    assert_eq!(g3.data["spec"]["color"], "red");
    let e = api_err(
        api.create(
            &PostParams::default(),
            &gadget("g4", json!({"replicas": 1, "color": "green"})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.color"), "{}", e.message);
    assert_eq!(api.get("g1").await.unwrap().data["spec"]["replicas"], 2);

    // Printer columns and the scale subresource of the new kind.
    let out = kubectl_ok(&server, &["get", "gadgets"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REPLICAS"], "{out}");
    let out = kubectl_ok(&server, &["scale", "gadget/g1", "--replicas=5"]).await;
    assert!(out.contains("gadget.dyn.kube-sim.io/g1 scaled"), "{out}");
    let g1 = api.get("g1").await.unwrap();
    assert_eq!(g1.data["spec"]["replicas"], 5);
    api.patch_status(
        "g1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 4, "selector": "app=g1"}})),
    )
    .await
    .unwrap();
    let scale: Value = client
        .request(
            axum::http::Request::get(
                "/apis/dyn.kube-sim.io/v1/namespaces/default/gadgets/g1/scale",
            )
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=g1");
}

#[tokio::test]
async fn deleting_a_crd_deletes_its_objects_ends_watches_and_stops_serving_it() {
    let server = bare_server().await;
    let client = server.client().await.unwrap();
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_yaml::from_str(&gadget_crd(false)).unwrap();
    crd_api
        .patch(
            "gadgets.dyn.kube-sim.io",
            &PatchParams::apply("crd-test"),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &gadget_ar());
    api.create(
        &PostParams::default(),
        &gadget("plain", json!({"replicas": 1})),
    )
    .await
    .unwrap();
    let mut held = gadget("held", json!({"replicas": 1}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    let watch_task = tokio::spawn(async move {
        let mut events = 0;
        while let Ok(Some(_)) = stream.try_next().await {
            events += 1;
        }
        events
    });

    crd_api
        .delete("gadgets.dyn.kube-sim.io", &DeleteParams::default())
        .await
        .unwrap();
    // The CRD waits for its objects: terminating, with the cleanup finalizer.
    let crd = crd_api.get("gadgets.dyn.kube-sim.io").await.unwrap();
    assert!(crd.metadata.deletion_timestamp.is_some());
    assert!(
        crd.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".to_string())
    );
    let terminating = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Terminating" && c.status == "True");
    assert!(terminating);
    let api2 = api.clone();
    eventually("the plain gadget is deleted", || {
        let api = api2.clone();
        async move { matches!(api.get("plain").await, Err(kube::Error::Api(s)) if s.code == 404) }
    })
    .await;
    let held_now = api.get("held").await.unwrap();
    assert!(held_now.metadata.deletion_timestamp.is_some());
    let e = api_err(
        api.create(
            &PostParams::default(),
            &gadget("new", json!({"replicas": 1})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 405, "{}", e.message);
    assert!(e.message.contains("terminating"), "{}", e.message);

    // Releasing the last object lets the CRD go, and its resource with it.
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let crd_api2 = crd_api.clone();
    eventually("the CRD is gone", || {
        let crd_api = crd_api2.clone();
        async move {
            matches!(crd_api.get("gadgets.dyn.kube-sim.io").await, Err(kube::Error::Api(s)) if s.code == 404)
        }
    })
    .await;
    let events = tokio::time::timeout(Duration::from_secs(5), watch_task)
        .await
        .expect("the watch ends when the CRD goes")
        .unwrap();
    assert!(events >= 2, "saw the initial objects: {events}");
    assert_eq!(
        api_err(api.list(&Default::default()).await.unwrap_err()).code,
        404
    );
    let out = kubectl(&server, &["api-resources", "--api-group=dyn.kube-sim.io"]).await;
    assert!(!out.stdout.contains("gadgets"), "{}", out.stdout);
    let groups = kubectl_ok(&server, &["api-versions"]).await;
    assert!(!groups.contains("dyn.kube-sim.io"), "{groups}");

    // Re-creating it serves the kind again, empty.
    crd_api
        .patch(
            "gadgets.dyn.kube-sim.io",
            &PatchParams::apply("crd-test"),
            &Patch::Apply(serde_yaml::from_str::<Value>(&gadget_crd(false)).unwrap()),
        )
        .await
        .unwrap();
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn invalid_crds_are_refused_and_crd_writes_need_cluster_permissions() {
    let server = bare_server().await;
    let refused = |yaml: String, want: &'static str| {
        let server = &server;
        async move {
            let out =
                kubectl_stdin(server, &["apply", "--server-side", "-f", "-"], Some(&yaml)).await;
            assert!(!out.ok, "accepted: {yaml}");
            assert!(out.stderr.contains(want), "want {want:?}: {}", out.stderr);
        }
    };
    refused(
        gadget_crd(false).replace("name: gadgets.dyn.kube-sim.io", "name: other.dyn.kube-sim.io"),
        "metadata.name: Invalid value: \"other.dyn.kube-sim.io\": must be spec.names.plural+\".\"+spec.group",
    )
    .await;
    refused(
        gadget_crd(false).replace(
            "    storage: true\n",
            "    storage: true\n  - name: v2\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n",
        ),
        "must have exactly one version marked as storage version",
    )
    .await;
    refused(
        gadget_crd(false).replace("rule: self.replicas <= 10", "rule: self.replicas <= "),
        "spec.versions[0].schema.openAPIV3Schema",
    )
    .await;
    refused(
        gadget_crd(false).replace("scope: Namespaced", "scope: Galactic"),
        "spec.scope: Unsupported value: \"Galactic\"",
    )
    .await;

    let out = kubectl_stdin(
        &server,
        &["apply", "--server-side", "-f", "-"],
        Some(&gadget_crd(false)),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    refused(
        gadget_crd(false).replace("scope: Namespaced", "scope: Cluster"),
        "spec.scope: Invalid value: \"Cluster\": field is immutable",
    )
    .await;

    // RBAC: an ordinary user may not write CRDs; a cluster-wide grant allows it.
    let kc = server.add_user("dev", &[]).unwrap();
    let out = kubectl_with(
        &server,
        &kc,
        &["apply", "--server-side", "-f", "-"],
        Some(&gadget_crd(true)),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("customresourcedefinitions.apiextensions.k8s.io \"gadgets.dyn.kube-sim.io\" is forbidden: User \"dev\" cannot"),
        "{}",
        out.stderr
    );
    kubectl_ok(
        &server,
        &[
            "create",
            "clusterrole",
            "crd-admin",
            "--verb=get,list,watch,create,update,patch,delete",
            "--resource=customresourcedefinitions.apiextensions.k8s.io",
        ],
    )
    .await;
    kubectl_ok(
        &server,
        &[
            "create",
            "clusterrolebinding",
            "dev-crd-admin",
            "--clusterrole=crd-admin",
            "--user=dev",
        ],
    )
    .await;
    let out = kubectl_with(
        &server,
        &kc,
        &["apply", "--server-side", "-f", "-"],
        Some(&gadget_crd(true)),
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
}
