//! The Helm chart (`charts/dataguardian`) and the kustomize base (`config/default`):
//!
//! - the chart's copies of `crds/`, `config/rbac/`, `config/prometheus/` and `config/grafana/`
//!   are exactly what `make chart` generates from them;
//! - with default values the chart renders the same objects as `kubectl kustomize
//!   config/default` (Helm's own labels aside);
//! - every rendered object of five value sets (defaults, everything enabled, air-gapped mirror
//!   with digests, `rbac.create=false`, `crds.install=false`) passes `kubernetes-validate
//!   --strict` for Kubernetes 1.29, 1.30, 1.31 and 1.32; the Prometheus Operator kinds, which it
//!   has no schema for, are checked here instead (the PrometheusRule with promtool);
//! - the operator accepts every flag the chart passes it, and every flag it has can be set;
//! - bad values are refused by `values.schema.json` with Helm's message.
//!
//! The chart is rendered by `tools/helm-template` (see `testkit::chart`), which runs Helm's
//! template engine (Go text/template, sprig, Helm's functions); its own tests run here too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use clap::CommandFactory;
use serde_json::{Value, json};
use testkit::chart::{RenderOptions, render_chart, split_documents, sync, try_render};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn values_file(name: &str) -> PathBuf {
    repo().join("tests/chart-values").join(name)
}

const VERSION: &str = env!("CARGO_PKG_VERSION");
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const AGENT_DIGEST: &str =
    "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// A rendered object: its `# Source:` template and its content.
#[derive(Debug, Clone)]
struct Object {
    source: Option<String>,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
    fn key(&self) -> String {
        key_of(&self.value)
    }
}

fn key_of(v: &Value) -> String {
    format!(
        "{}/{}/{}",
        v["kind"].as_str().unwrap_or("?"),
        v["metadata"]["namespace"].as_str().unwrap_or(""),
        v["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn parse(yaml: &str) -> Vec<Object> {
    split_documents(yaml)
        .into_iter()
        .map(|d| Object {
            source: d.source,
            value: serde_yaml::from_str(&d.text)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{}", d.text)),
        })
        .collect()
}

fn render(options: &RenderOptions) -> Vec<Object> {
    parse(&try_render(options).unwrap_or_else(|e| panic!("{e}")))
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Value {
    &objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} among {:?}",
                objects.iter().map(Object::key).collect::<Vec<_>>()
            )
        })
        .value
}

fn kinds(objects: &[Object]) -> Vec<&str> {
    objects.iter().map(Object::kind).collect()
}

/// The value sets every structural test runs over.
fn variants() -> Vec<(&'static str, RenderOptions)> {
    let set = |pairs: &[(&str, &str)]| RenderOptions::new(&[], pairs);
    vec![
        ("defaults", RenderOptions::default()),
        (
            "everything",
            RenderOptions::new(&[&values_file("everything.yaml")], &[]),
        ),
        (
            "air-gapped",
            set(&[
                ("global.imageRegistry", "registry.corp:5000/mirror"),
                ("image.digest", DIGEST),
                ("agent.image.digest", AGENT_DIGEST),
                ("imagePullSecrets[0].name", "mirror-pull"),
            ]),
        ),
        ("rbac-off", set(&[("rbac.create", "false")])),
        ("crds-off", set(&[("crds.install", "false")])),
    ]
}

fn deployment(objects: &[Object]) -> &Value {
    let deployments: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind() == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "one Deployment");
    &deployments[0].value
}

fn container(objects: &[Object]) -> &Value {
    &deployment(objects)["spec"]["template"]["spec"]["containers"][0]
}

/// The operator container's environment: literal values, and `fieldRef:<path>` for the
/// downward API.
fn env(objects: &[Object]) -> BTreeMap<String, String> {
    container(objects)["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let value = match e.get("value") {
                Some(v) => v.as_str().expect("env values are strings").to_string(),
                None => format!(
                    "fieldRef:{}",
                    e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap()
                ),
            };
            (e["name"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One source of truth.

#[test]
fn chart_and_kustomize_copies_match_their_sources() {
    let generated = sync::generate(&repo()).unwrap_or_else(|e| panic!("{e}"));
    let drift = sync::drift(&repo(), &generated);
    assert!(
        drift.is_empty(),
        "the chart or config/ drifted from crds/, config/rbac/, config/prometheus/, config/grafana/ or the crate version:\n{}\nrun `{}` and commit the result",
        drift
            .iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n"),
        sync::REGENERATE
    );
    // The generator covers every source file: CRDs, RBAC manifests, rules and dashboards.
    let names: Vec<String> = generated
        .files
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    for expected in [
        "charts/dataguardian/templates/crds/backupruns.dataguardian.io.yaml",
        "charts/dataguardian/templates/rbac/user-roles.yaml",
        "charts/dataguardian/templates/serviceaccount.yaml",
        "charts/dataguardian/files/prometheus/dataguardian-alerts.yaml",
        "charts/dataguardian/files/grafana/dataguardian.json",
        "config/crd/kustomization.yaml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
}

#[test]
fn the_drift_check_notices_an_edited_copy_and_a_stale_file() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |rel: &str| {
        let from = repo().join(rel);
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    copy("Cargo.toml");
    for (dir_rel, ext) in [
        ("crds", "yaml"),
        ("config/rbac", "yaml"),
        ("config/grafana", "json"),
    ] {
        for entry in std::fs::read_dir(repo().join(dir_rel)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(ext) {
                copy(&format!("{dir_rel}/{name}"));
            }
        }
    }
    copy("config/prometheus/dataguardian-alerts.yaml");
    copy("charts/dataguardian/Chart.yaml");
    copy("config/default/kustomization.yaml");
    copy("config/manager/manager.yaml");
    let generated = sync::generate(dir.path()).unwrap();
    sync::write(dir.path(), &generated).unwrap();
    assert!(sync::drift(dir.path(), &generated).is_empty());

    // A source changes: its copy differs.
    let role = dir.path().join("config/rbac/controller_cluster_role.yaml");
    let text = std::fs::read_to_string(&role).unwrap();
    std::fs::write(&role, text.replace("\"get\", \"list\"", "\"get\"")).unwrap();
    let regenerated = sync::generate(dir.path()).unwrap();
    let drift = sync::drift(dir.path(), &regenerated);
    assert_eq!(
        drift,
        vec![sync::Drift::Differs(PathBuf::from(
            "charts/dataguardian/templates/rbac/controller-clusterrole.yaml"
        ))]
    );
    // A CRD disappears: its copies are stale.
    std::fs::remove_file(dir.path().join("crds/backupruns.dataguardian.io.yaml")).unwrap();
    let regenerated = sync::generate(dir.path()).unwrap();
    let drift: Vec<String> = sync::drift(dir.path(), &regenerated)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        drift.contains(
            &"charts/dataguardian/templates/crds/backupruns.dataguardian.io.yaml has no source any more".to_string()
        ),
        "{drift:?}"
    );
    assert!(
        drift.contains(&"config/crd/kustomization.yaml differs from its source".to_string()),
        "{drift:?}"
    );
}

#[test]
fn chart_and_appversion_are_the_crate_version() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/dataguardian/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart["version"], VERSION);
    assert_eq!(chart["appVersion"], VERSION);
    let objects = parse(&render_chart(&[], &[]));
    assert_eq!(
        container(&objects)["image"],
        format!("ghcr.io/dataguardian/dataguardian-operator:{VERSION}"),
        "the image scripts/build-images.sh builds"
    );
    assert_eq!(
        env(&objects)["DG_AGENT_IMAGE"],
        format!("{}:{VERSION}", testkit::images::AGENT_REPOSITORY)
    );
}

// ---------------------------------------------------------------------------------------------
// Chart = kustomize base.

/// Labels only Helm sets; the annotation that keeps CRDs on `helm uninstall`.
const HELM_ONLY_LABELS: &[&str] = &["helm.sh/chart", "app.kubernetes.io/managed-by"];
const HELM_ONLY_ANNOTATIONS: &[&str] = &["helm.sh/resource-policy"];

fn strip_helm_only(v: &mut Value) {
    for path in ["/metadata", "/spec/template/metadata"] {
        let Some(meta) = v.pointer_mut(path) else {
            continue;
        };
        for (field, keys) in [
            ("labels", HELM_ONLY_LABELS),
            ("annotations", HELM_ONLY_ANNOTATIONS),
        ] {
            if let Some(map) = meta.get_mut(field).and_then(Value::as_object_mut) {
                for k in keys {
                    map.remove(*k);
                }
                if map.is_empty() {
                    meta.as_object_mut().unwrap().remove(field);
                }
            }
        }
    }
}

/// The paths where `a` and `b` differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(&p, u, v, out),
                    (u, v) => out.push(format!("{p}: chart {u:?} / kustomize {v:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), u, v, out);
            }
        }
        // Numbers compare by value: kustomize prints the CRDs' `minimum: 0.0` as `0`.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: chart {a} / kustomize {b}")),
    }
}

fn kustomize(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(repo())
        .output()
        .expect("kubectl is required for this test");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn chart_defaults_render_the_same_objects_as_the_kustomize_base() {
    let chart = parse(&render_chart(&[], &[]));
    let kustomized = parse(&kustomize("config/default"));

    let mut chart_objects: BTreeMap<String, Value> = BTreeMap::new();
    for o in chart {
        let mut v = o.value;
        strip_helm_only(&mut v);
        assert!(chart_objects.insert(key_of(&v), v).is_none(), "duplicate");
    }
    let mut kustomize_objects: BTreeMap<String, Value> = BTreeMap::new();
    for o in kustomized {
        assert!(
            kustomize_objects.insert(o.key(), o.value).is_none(),
            "duplicate"
        );
    }
    // The namespace: Helm installs into an existing one (or --create-namespace); the kustomize
    // base creates it, under the restricted Pod Security Standard.
    let namespace = kustomize_objects
        .remove("Namespace//dataguardian-system")
        .expect("config/default creates the namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    let chart_keys: BTreeSet<&String> = chart_objects.keys().collect();
    let kustomize_keys: BTreeSet<&String> = kustomize_objects.keys().collect();
    assert_eq!(
        chart_keys, kustomize_keys,
        "the chart (left) and config/default (right) render different objects"
    );
    let mut differences = Vec::new();
    for (key, c) in &chart_objects {
        diff(key, c, &kustomize_objects[key], &mut differences);
    }
    assert!(
        differences.is_empty(),
        "the chart with default values and config/default differ:\n{}",
        differences.join("\n")
    );
    assert_eq!(chart_objects.len(), 19, "{chart_keys:?}");
}

#[test]
fn the_kustomize_base_uses_the_sources_themselves() {
    let text = std::fs::read_to_string(repo().join("config/default/kustomization.yaml")).unwrap();
    let k: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        k["resources"],
        json!([
            "namespace.yaml",
            "../crd",
            "../rbac",
            "../manager",
            "../webhook"
        ])
    );
    // config/rbac is the very directory tests/rbac_matrix.rs checks; its objects come out of
    // the base unchanged apart from the common labels.
    let rbac = parse(&kustomize("config/rbac"));
    let base = parse(&kustomize("config/default"));
    for o in &rbac {
        let mut rendered = base
            .iter()
            .find(|b| b.key() == o.key())
            .unwrap_or_else(|| panic!("{} missing from config/default", o.key()))
            .value
            .clone();
        let labels = rendered["metadata"]["labels"].as_object_mut().unwrap();
        for k in [
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/name",
            "app.kubernetes.io/part-of",
        ] {
            labels.remove(k);
        }
        let mut source = o.value.clone();
        let labels = source["metadata"]["labels"].as_object_mut().unwrap();
        labels.remove("app.kubernetes.io/name");
        labels.remove("app.kubernetes.io/part-of");
        assert_eq!(rendered, source, "{}", o.key());
    }
}

// ---------------------------------------------------------------------------------------------
// What the chart renders.

#[test]
fn defaults_render_a_restricted_two_replica_operator() {
    let objects = parse(&render_chart(&[], &[]));
    assert_eq!(
        kinds(&objects),
        vec![
            "PodDisruptionBudget",
            "ServiceAccount",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "Deployment",
            "MutatingWebhookConfiguration",
        ],
        "Helm's install order"
    );
    let d = deployment(&objects);
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "dataguardian");
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let c = container(&objects);
    assert_eq!(c["args"], json!(["operator"]));
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
               {"name": "webhook", "containerPort": 9443, "protocol": "TCP"}])
    );
    let env = env(&objects);
    assert_eq!(env["POD_NAMESPACE"], "fieldRef:metadata.namespace");
    assert_eq!(env["POD_NAME"], "fieldRef:metadata.name");
    assert_eq!(env["POD_IP"], "fieldRef:status.podIP");
    assert_eq!(env["DG_METRICS_ADDR"], "0.0.0.0:8080");
    assert!(!env.contains_key("DG_IMAGE_REGISTRY"), "{env:?}");

    for crd in objects
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
    {
        assert_eq!(
            crd.value["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep",
            "{}",
            crd.name()
        );
        assert_eq!(
            crd.value["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }
    for role in [
        "dataguardian-readonly",
        "dataguardian-operator",
        "dataguardian-admin",
    ] {
        let labels = &find(&objects, "ClusterRole", role)["metadata"]["labels"];
        let aggregated: Vec<&String> = labels
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            .collect();
        assert_eq!(aggregated.len(), 1, "{role}: {labels}");
    }
    for o in &objects {
        assert!(
            o.source
                .as_deref()
                .is_some_and(|s| s.starts_with("dataguardian/templates/")),
            "{:?}",
            o.source
        );
        let labels = &o.value["metadata"]["labels"];
        assert_eq!(labels["helm.sh/chart"], format!("dataguardian-{VERSION}"));
        assert_eq!(labels["app.kubernetes.io/instance"], "dataguardian");
        assert_eq!(labels["app.kubernetes.io/version"], VERSION);
        assert_eq!(labels["app.kubernetes.io/part-of"], "dataguardian");
    }
}

/// Consistency every variant must keep: bindings name rendered roles and the operator's
/// ServiceAccount, selectors select the operator pods, the Service targets the container port.
fn check_references(variant: &str, objects: &[Object]) {
    let d = deployment(objects);
    let pod_labels = d["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let selects_pods = |selector: &Value, what: &str| {
        let selector = selector.as_object().unwrap();
        assert!(!selector.is_empty(), "{variant}: {what} selects everything");
        for (k, v) in selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{variant}: {what} misses the pods"
            );
        }
    };
    selects_pods(&d["spec"]["selector"]["matchLabels"], "the Deployment");
    let namespace = d["metadata"]["namespace"].as_str().unwrap();
    let sa = d["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let role_names: BTreeSet<(&str, &str)> = objects
        .iter()
        .filter(|o| o.kind() == "ClusterRole" || o.kind() == "Role")
        .map(|o| (o.kind(), o.name()))
        .collect();
    for b in objects.iter().filter(|o| o.kind().ends_with("RoleBinding")) {
        let role_ref = &b.value["roleRef"];
        let kind = role_ref["kind"].as_str().unwrap();
        let name = role_ref["name"].as_str().unwrap();
        assert!(
            role_names.contains(&(kind, name)),
            "{variant}: {} refers to {kind} {name}, which is not rendered",
            b.key()
        );
        assert_eq!(
            b.value["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]),
            "{variant}: {}",
            b.key()
        );
    }
    if let Some(account) = objects.iter().find(|o| o.kind() == "ServiceAccount") {
        assert_eq!(account.name(), sa, "{variant}");
    }
    let port_names: Vec<&Value> = container(objects)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for o in objects {
        match o.kind() {
            "Service" => {
                selects_pods(&o.value["spec"]["selector"], "the Service");
                assert!(
                    port_names.contains(&&o.value["spec"]["ports"][0]["targetPort"]),
                    "{variant}: {} targets a port the container does not name",
                    o.key()
                );
            }
            "MutatingWebhookConfiguration" => {
                for w in o.value["webhooks"].as_array().unwrap() {
                    let svc = &w["clientConfig"]["service"];
                    assert!(
                        objects.iter().any(|s| s.kind() == "Service"
                            && s.value["metadata"]["name"] == svc["name"]
                            && s.value["metadata"]["namespace"] == svc["namespace"]
                            && s.value["spec"]["ports"][0]["port"] == svc["port"]),
                        "{variant}: webhook {} calls a Service that is not rendered",
                        w["name"]
                    );
                }
            }
            "PodDisruptionBudget" | "NetworkPolicy" => {
                let path = if o.kind() == "NetworkPolicy" {
                    "/spec/podSelector/matchLabels"
                } else {
                    "/spec/selector/matchLabels"
                };
                selects_pods(o.value.pointer(path).unwrap(), o.kind());
            }
            "ServiceMonitor" => {
                let service = objects
                    .iter()
                    .find(|s| s.kind() == "Service" && s.name().ends_with("-metrics"))
                    .unwrap();
                let service_labels = service.value["metadata"]["labels"].as_object().unwrap();
                for (k, v) in o.value["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .unwrap()
                {
                    assert_eq!(service_labels.get(k), Some(v), "{variant}: ServiceMonitor");
                }
                assert_eq!(
                    o.value["spec"]["endpoints"][0]["port"],
                    service.value["spec"]["ports"][0]["name"]
                );
                assert_eq!(
                    o.value["spec"]["namespaceSelector"]["matchNames"],
                    json!([namespace])
                );
            }
            _ => {}
        }
    }
}

#[test]
fn every_variant_keeps_its_references_consistent() {
    for (variant, options) in variants() {
        let objects = render(&options);
        check_references(variant, &objects);
        let notes = try_render(&RenderOptions {
            notes: true,
            ..options.clone()
        })
        .unwrap();
        assert!(
            notes.contains("kubectl -n dataguardian-system rollout status"),
            "{notes}"
        );
    }
    // Another release name: the operator's own objects follow it, the user roles do not.
    let objects = render(&RenderOptions {
        release: "dg".into(),
        namespace: "platform".into(),
        ..RenderOptions::default()
    });
    check_references("release dg", &objects);
    assert_eq!(deployment(&objects)["metadata"]["name"], "dg-dataguardian");
    find(&objects, "ClusterRole", "dg-dataguardian-controller");
    find(&objects, "ClusterRole", "dataguardian-operator");
    find(&objects, "Role", "dg-dataguardian-leader-election");
}

#[test]
fn rbac_and_crds_can_be_left_to_the_platform_team() {
    let objects = render(&RenderOptions::new(&[], &[("rbac.create", "false")]));
    assert!(
        !objects
            .iter()
            .any(|o| o.kind().contains("Role") || o.kind().ends_with("Binding")),
        "{:?}",
        kinds(&objects)
    );
    find(&objects, "ServiceAccount", "dataguardian");
    let notes = try_render(&RenderOptions {
        notes: true,
        ..RenderOptions::new(&[], &[("rbac.create", "false")])
    })
    .unwrap();
    assert!(notes.contains("rbac.create is false"), "{notes}");

    let objects = render(&RenderOptions::new(
        &[],
        &[
            ("serviceAccount.create", "false"),
            ("serviceAccount.name", "platform-dg"),
        ],
    ));
    assert!(!kinds(&objects).contains(&"ServiceAccount"));
    assert_eq!(
        deployment(&objects)["spec"]["template"]["spec"]["serviceAccountName"],
        "platform-dg"
    );
    check_references("own ServiceAccount", &objects);

    let objects = render(&RenderOptions::new(&[], &[("crds.install", "false")]));
    assert!(!kinds(&objects).contains(&"CustomResourceDefinition"));

    let objects = render(&RenderOptions::new(
        &[],
        &[("rbac.aggregateUserRoles", "false")],
    ));
    for role in [
        "dataguardian-readonly",
        "dataguardian-operator",
        "dataguardian-admin",
    ] {
        let labels = find(&objects, "ClusterRole", role)["metadata"]["labels"].to_string();
        assert!(!labels.contains("aggregate-to"), "{role}: {labels}");
    }
}

#[test]
fn everything_enabled_renders_monitoring_network_policy_and_scheduling() {
    let objects = render(&RenderOptions::new(&[&values_file("everything.yaml")], &[]));
    check_references("everything", &objects);
    let d = deployment(&objects);
    assert_eq!(d["spec"]["replicas"], 3);
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/team"],
        "platform"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["terminationGracePeriodSeconds"], 60);
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(spec["tolerations"][0]["key"], "dedicated");
    assert!(spec["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(
        spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "dataguardian",
        "topologySpreadConstraints go through tpl"
    );
    let c = container(&objects);
    assert_eq!(
        c["image"],
        "registry.corp/mirror/dataguardian/dataguardian-operator:0.1.0-rc.1"
    );
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["args"], json!(["operator", "--log-format=text"]));
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    assert_eq!(c["livenessProbe"]["periodSeconds"], 20);
    assert_eq!(c["readinessProbe"]["failureThreshold"], 6);
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    let env = env(&objects);
    assert_eq!(env["DG_METRICS_ADDR"], "$(POD_IP):9090");
    assert_eq!(env["DG_IMAGE_REGISTRY"], "registry.corp/mirror");
    assert_eq!(
        env["DG_AGENT_IMAGE"],
        "registry.corp/platform/dataguardian-agent:0.1.0-rc.1"
    );
    assert_eq!(env["DG_EGRESS_ALLOW_CIDRS"], "10.20.0.0/16,fd00:20::/64");
    assert_eq!(env["HTTPS_PROXY"], "http://proxy.corp:3128");
    // The downward-API POD_IP comes before the variable that expands it.
    let names: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("POD_IP") < pos("DG_METRICS_ADDR"), "{names:?}");

    let sa = find(&objects, "ServiceAccount", "dataguardian");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/dataguardian"
    );
    for crd in objects
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
    {
        assert!(
            crd.value["metadata"].get("annotations").is_none(),
            "crds.keep=false"
        );
    }
    let pdb = find(&objects, "PodDisruptionBudget", "dataguardian");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(pdb["spec"].get("maxUnavailable").is_none());

    let service = find(&objects, "Service", "dataguardian-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 9090);
    assert_eq!(service["metadata"]["labels"]["monitoring"], "true");
    let monitor = find(&objects, "ServiceMonitor", "dataguardian");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "1m");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["relabelings"][0]["targetLabel"],
        "node"
    );

    let dashboards = find(&objects, "ConfigMap", "dataguardian-dashboards");
    assert_eq!(dashboards["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboards["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboards["metadata"]["annotations"]["grafana_folder"],
        "Backups"
    );
    let source = std::fs::read_to_string(repo().join("config/grafana/dataguardian.json")).unwrap();
    assert_eq!(
        dashboards["data"]["dataguardian.json"].as_str().unwrap(),
        source,
        "the ConfigMap holds config/grafana/dataguardian.json byte for byte"
    );

    let policy = find(&objects, "NetworkPolicy", "dataguardian-operator-egress");
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let cidrs: Vec<&str> = egress
        .iter()
        .flat_map(|rule| rule["to"].as_array().into_iter().flatten())
        .filter_map(|to| to["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(
        cidrs,
        vec![
            "10.0.0.1/32",
            "172.18.0.2/32",
            "0.0.0.0/0",
            "::/0",
            "10.20.0.0/16",
            "fd00:20::/64"
        ]
    );
    assert_eq!(
        egress.last().unwrap()["ports"][0]["port"],
        4317,
        "extraEgress"
    );
    let metadata_range_open = egress.iter().any(|rule| {
        rule["to"].as_array().into_iter().flatten().any(|to| {
            to["ipBlock"]["cidr"] == "0.0.0.0/0"
                && !to["ipBlock"]["except"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("169.254.0.0/16"))
        })
    });
    assert!(!metadata_range_open, "cloud metadata stays blocked");
}

#[test]
fn the_prometheus_rule_carries_the_alert_rules_unchanged() {
    let objects = render(&RenderOptions::new(
        &[],
        &[("metrics.prometheusRule.enabled", "true")],
    ));
    let rule = find(&objects, "PrometheusRule", "dataguardian");
    let source: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("config/prometheus/dataguardian-alerts.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"], source, "the spec is the rules file");
    assert!(
        rule["spec"].to_string().contains("{{ $labels.namespace }}"),
        "Prometheus templates are not executed by Helm"
    );
    // And Prometheus accepts it as a rules file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is required for this test (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboard_queries_are_valid_promql_over_exported_metrics() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/grafana/dataguardian.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        ("query", Value::String(s)) if s.starts_with("label_values(") => {
                            // label_values(<selector>, label): the selector must be PromQL.
                            let inner = &s["label_values(".len()..s.rfind(',').unwrap()];
                            out.push(inner.to_string());
                        }
                        _ => collect(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");

    // Grafana's variables as Prometheus would see them after substitution.
    let promql: Vec<String> = exprs
        .iter()
        .map(|e| {
            e.replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$policy", ".*")
        })
        .collect();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in promql.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is required for this test (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "a dashboard query is not valid PromQL:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let exposition = every_metric_exposed();
    let used: BTreeSet<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("dataguardian_"))
        .collect();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        assert!(
            exposition.lines().any(|l| l.starts_with(name)),
            "the dashboard uses {name}, which the operator does not export:\n{exposition}"
        );
    }
}

/// The operator's exposition with a sample in every family.
fn every_metric_exposed() -> String {
    use dataguardian::telemetry::metrics::*;
    let m = Metrics::new();
    let p = PolicyLabels {
        namespace: "n".into(),
        policy: "p".into(),
    };
    let run = || RunLabels {
        namespace: "n".into(),
        policy: "p".into(),
        result: RunResult::Succeeded,
    };
    m.backup_runs.get_or_create(&run()).inc();
    m.restore_runs.get_or_create(&run()).inc();
    m.validations.get_or_create(&run()).inc();
    m.backup_duration.get_or_create(&p).observe(3.0, None, None);
    m.restore_duration
        .get_or_create(&p)
        .observe(3.0, None, None);
    m.validation_rto.get_or_create(&p).set(3.0);
    m.start_latency
        .get_or_create(&StartLabels {
            kind: "BackupRun".into(),
            trigger: "Manual".into(),
        })
        .observe(0.1);
    let storage = StorageLabels {
        namespace: "n".into(),
        storage: "s".into(),
    };
    m.storage_up.get_or_create(&storage).set(1);
    m.storage_probe_duration
        .get_or_create(&storage)
        .observe(0.05);
    let kept = CopyLabels {
        namespace: "n".into(),
        policy: "p".into(),
        storage: "s".into(),
    };
    m.stored_bytes.get_or_create(&kept).set(1);
    m.stored_artifacts.get_or_create(&kept).set(1);
    m.backup_bytes.get_or_create(&p).inc();
    m.last_success.get_or_create(&p).set(1.0);
    m.rpo_met.get_or_create(&p).set(1);
    m.rto_met.get_or_create(&p).set(1);
    m.reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "c".into(),
            category: "k".into(),
        })
        .inc();
    m.reconciles
        .get_or_create(&ControllerLabels {
            controller: "c".into(),
        })
        .inc();
    m.reconcile_duration
        .get_or_create(&ReconcileLabels {
            controller: "c".into(),
            result: ReconcileResult::Ok,
        })
        .observe(0.01);
    m.queue_depth
        .get_or_create(&QueueLabels {
            queue: "backup".into(),
        })
        .set(1);
    m.notifications
        .get_or_create(&NotificationLabels {
            namespace: "n".into(),
            policy: "p".into(),
            event: "BackupFailed".into(),
            result: "delivered".into(),
        })
        .inc();
    m.audit_pending.set(1);
    m.audit_oldest_pending.set(1.0);
    m.audit_failed.inc();
    m.audit_written.inc();
    m.audit_spool_entries.set(1);
    m.encode()
}

#[test]
fn the_network_policy_example_is_what_the_chart_renders() {
    let objects = render(&RenderOptions::new(
        &[],
        &[
            ("networkPolicy.enabled", "true"),
            ("networkPolicy.apiServer.cidrs", "{10.0.0.1/32}"),
        ],
    ));
    let rendered = find(&objects, "NetworkPolicy", "dataguardian-operator-egress");
    let example: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/egress-networkpolicy.yaml")).unwrap(),
    )
    .unwrap();
    // Name, namespace and the whole spec; the example leaves the chart's labels out.
    let essentials = |v: &Value| {
        json!({"kind": v["kind"], "name": v["metadata"]["name"],
               "namespace": v["metadata"]["namespace"], "spec": v["spec"]})
    };
    let mut differences = Vec::new();
    diff(
        "NetworkPolicy",
        &essentials(rendered),
        &essentials(&example),
        &mut differences,
    );
    assert!(
        differences.is_empty(),
        "deploy/egress-networkpolicy.yaml (right) differs from the chart's (left):\n{}",
        differences.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The operator accepts what the chart passes.

/// `DG_X=value` environment variables as the operator's `--x=value` flags, via the operator's
/// own clap definition; `$(POD_IP)` expanded as the kubelet would.
fn operator_argv(objects: &[Object]) -> Vec<String> {
    let cli = dataguardian::cli::Cli::command();
    let operator = cli
        .find_subcommand("operator")
        .expect("operator subcommand");
    let env = env(objects);
    let extra_args: Vec<String> = container(objects)["args"].as_array().unwrap()[1..]
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut argv = vec!["dataguardian".to_string(), "operator".to_string()];
    let pod_values = [
        ("fieldRef:metadata.namespace", "dataguardian-system"),
        ("fieldRef:metadata.name", "dataguardian-5f7d8-abcde"),
        ("fieldRef:status.podIP", "10.1.2.3"),
    ];
    for arg in operator.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = env.get(var.to_str().unwrap()) else {
            continue;
        };
        // A flag in extraArgs wins over its environment variable, as with clap.
        if extra_args
            .iter()
            .any(|a| a.starts_with(&format!("--{long}")))
        {
            continue;
        }
        let mut value = value.clone();
        for (from, to) in pod_values {
            if value == from {
                value = to.to_string();
            }
        }
        argv.push(format!(
            "--{long}={}",
            value.replace("$(POD_IP)", "10.1.2.3")
        ));
    }
    argv.extend(extra_args);
    argv
}

fn operator_config(objects: &[Object]) -> dataguardian::operator::run::OperatorConfig {
    use clap::Parser;
    let argv = operator_argv(objects);
    let cli = dataguardian::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the operator refuses the chart's flags {argv:?}:\n{e}"));
    let dataguardian::cli::Command::Operator(args) = cli.command else {
        panic!("not the operator");
    };
    args.config()
}

#[test]
fn the_operator_accepts_every_flag_the_chart_passes() {
    for (variant, options) in variants() {
        let objects = render(&options);
        let config = operator_config(&objects);
        assert_eq!(config.lease_namespace, "dataguardian-system", "{variant}");
        assert_eq!(
            config.identity.as_deref(),
            Some("dataguardian-5f7d8-abcde"),
            "{variant}"
        );
    }

    let config = operator_config(&render(&RenderOptions::default()));
    assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.lease_name, "dataguardian-operator");
    assert_eq!(config.lease_duration_seconds, 15);
    let s = &config.settings;
    assert_eq!(s.max_concurrent_backups.map(|n| n.get()), Some(10));
    assert_eq!(s.max_concurrent_restores.map(|n| n.get()), Some(4));
    assert_eq!(s.max_concurrent_validations.map(|n| n.get()), Some(2));
    assert_eq!(s.job_ttl_seconds, 86_400);
    assert_eq!(
        s.agent_image,
        dataguardian::controller::common::context::Settings::default().agent_image,
        "the chart's default agent image is the operator's own default"
    );

    let config = operator_config(&render(&RenderOptions::new(
        &[&values_file("everything.yaml")],
        &[],
    )));
    assert_eq!(config.metrics_addr.to_string(), "10.1.2.3:9090");
    assert_eq!(config.lease_name, "dg-leader");
    assert_eq!(config.lease_duration_seconds, 30);
    let s = &config.settings;
    assert_eq!(s.max_concurrent_restores, None, "0 = unlimited");
    assert_eq!(s.job_ttl_seconds, 3600);
    assert!(s.allows_ambient_credentials("platform-backups"));
    let jobs = dataguardian::jobs::shell::JobDefaults::from(s);
    assert_eq!(
        jobs.agent_image,
        "registry.corp/mirror/platform/dataguardian-agent:0.1.0-rc.1"
    );
    assert!(
        jobs.allowed_images
            .allows("registry.corp/mirror/platform/dataguardian-agent:0.1.0-rc.1")
    );
}

#[test]
fn an_air_gapped_install_pulls_every_image_from_the_mirror_by_digest() {
    let objects = render(&RenderOptions::new(
        &[],
        &[
            ("global.imageRegistry", "registry.corp:5000/mirror"),
            ("image.digest", DIGEST),
            ("image.tag", "ignored-when-a-digest-is-set"),
            ("agent.image.digest", AGENT_DIGEST),
        ],
    ));
    assert_eq!(
        container(&objects)["image"],
        format!("registry.corp:5000/mirror/dataguardian/dataguardian-operator@{DIGEST}"),
        "the digest wins over the tag"
    );
    let config = operator_config(&objects);
    let jobs = dataguardian::jobs::shell::JobDefaults::from(&config.settings);
    assert_eq!(
        jobs.agent_image,
        format!("registry.corp:5000/mirror/dataguardian/dataguardian@{AGENT_DIGEST}"),
        "the operator moves the agent image to the mirror"
    );
    assert_eq!(
        jobs.image_registry.as_deref(),
        Some("registry.corp:5000/mirror")
    );
    assert!(jobs.allowed_images.allows(&jobs.agent_image));
    assert!(
        jobs.allowed_images
            .allows("registry.corp:5000/mirror/library/postgres:16"),
        "default sandbox images follow the mirror"
    );
    assert!(!jobs.allowed_images.allows("postgres:16"));
    let notes = try_render(&RenderOptions {
        notes: true,
        ..RenderOptions::new(
            &[],
            &[
                ("global.imageRegistry", "registry.corp:5000/mirror"),
                ("image.digest", DIGEST),
                ("agent.image.digest", AGENT_DIGEST),
            ],
        )
    })
    .unwrap();
    // NOTES.txt lists what to mirror: exactly the references the operator will use.
    assert!(
        notes.contains("Images come from registry.corp:5000/mirror"),
        "{notes}"
    );
    let operator_image = container(&objects)["image"].as_str().unwrap();
    assert!(
        notes.contains(&format!("  {operator_image} (the operator)")),
        "{notes}"
    );
    assert!(
        notes.contains(&format!("  {} (the agent", jobs.agent_image)),
        "{notes}"
    );
}

#[test]
fn every_operator_flag_has_a_chart_value() {
    let objects = render(&RenderOptions::new(&[&values_file("everything.yaml")], &[]));
    let env = env(&objects);
    let cli = dataguardian::cli::Cli::command();
    let operator = cli.find_subcommand("operator").unwrap();
    let mut missing = Vec::new();
    for arg in operator.get_arguments() {
        if let Some(var) = arg.get_env() {
            let var = var.to_str().unwrap();
            if !env.contains_key(var) {
                missing.push(format!("--{} ({var})", arg.get_long().unwrap_or("?")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operator flags the chart cannot set (add a value and an env var to templates/deployment.yaml, config/manager and tests/chart-values/everything.yaml): {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad values.

#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let prefix = "Error: values don't meet the specifications of the schema(s) in the following chart(s):\ndataguardian:\n";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("replicaCount", "two")],
            "- replicaCount: Invalid type. Expected: integer, given: string",
        ),
        (
            &[("operator.maxConcurrentBackups", "-1")],
            "- operator.maxConcurrentBackups: Must be greater than or equal to 0",
        ),
        (
            &[("operator.leaderElection.leaseDurationSeconds", "0")],
            "- operator.leaderElection.leaseDurationSeconds: Must be greater than or equal to 1",
        ),
        (
            &[("image.pullPolicy", "Sometimes")],
            "- image.pullPolicy: image.pullPolicy must be one of the following: \"Always\", \"IfNotPresent\", \"Never\"",
        ),
        (
            &[("operator.logFormat", "xml")],
            "- operator.logFormat: operator.logFormat must be one of the following: \"json\", \"text\"",
        ),
        (
            &[("replicas", "2")],
            "- (root): Additional property replicas is not allowed",
        ),
        (
            &[("operator.maxConcurrentBackup", "2")],
            "- operator: Additional property maxConcurrentBackup is not allowed",
        ),
        (
            &[("image.tag", "v1:2")],
            "- image.tag: Does not match pattern",
        ),
        (
            &[("image.digest", "sha256:abc")],
            "- image.digest: Does not match pattern",
        ),
        (
            &[("agent.image.digest", "md5:0123")],
            "- agent.image.digest: Does not match pattern",
        ),
        (
            &[("global.imageRegistry", "https://registry.corp")],
            "- global.imageRegistry: Does not match pattern",
        ),
        (
            &[("operator.egressAllowCIDRs", "{10.0.0.0}")],
            "- operator.egressAllowCIDRs.0: Does not match pattern",
        ),
        (
            &[("metrics.bindAddress", "0.0.0.0:8080")],
            "- metrics.bindAddress: Does not match pattern",
        ),
        (
            &[("metrics.port", "70000")],
            "- metrics.port: Must be less than or equal to 65535",
        ),
        (
            &[("crds.install", "yes")],
            "- crds.install: Invalid type. Expected: boolean, given: string",
        ),
        (
            &[("admissionPolicies.validationActions", "{Block}")],
            "- admissionPolicies.validationActions.0: admissionPolicies.validationActions.0 must be one of the following: \"Deny\", \"Warn\", \"Audit\"",
        ),
        (
            &[("admissionPolicies.validationActions", "{Deny,Warn}")],
            "- admissionPolicies.validationActions: Must not validate the schema (not)",
        ),
        (
            &[("admissionPolicies.minimumRetention.days", "0")],
            "- admissionPolicies.minimumRetention.days: Must be greater than or equal to 1",
        ),
        (
            &[(
                "admissionPolicies.approvedStorages.approverGroups",
                "{a\\,b}",
            )],
            "- admissionPolicies.approvedStorages.approverGroups.0: Does not match pattern",
        ),
    ];
    for (set, expected) in cases {
        let err = try_render(&RenderOptions::new(&[], set))
            .expect_err(&format!("{set:?} must be refused"));
        assert!(
            err.starts_with(prefix) && err.contains(expected),
            "{set:?}: expected {expected:?} in:\n{err}"
        );
    }
}

#[test]
fn settings_that_cannot_work_are_refused_by_the_templates() {
    let err = try_render(&RenderOptions::new(
        &[],
        &[("networkPolicy.enabled", "true")],
    ))
    .unwrap_err();
    assert!(
        err.starts_with("Error: execution error at (dataguardian/templates/networkpolicy.yaml:")
            && err.contains(
                "): networkPolicy.apiServer.cidrs is required when networkPolicy.enabled"
            ),
        "{err}"
    );
    let err = try_render(&RenderOptions::new(
        &[],
        &[
            ("metrics.serviceMonitor.enabled", "true"),
            ("metrics.service.enabled", "false"),
        ],
    ))
    .unwrap_err();
    assert!(
        err.contains("metrics.serviceMonitor.enabled needs metrics.service.enabled"),
        "{err}"
    );
    let err = try_render(&RenderOptions {
        kube_version: Some("v1.28.15".into()),
        ..RenderOptions::default()
    })
    .unwrap_err();
    assert_eq!(
        err.trim(),
        "Error: chart requires kubeVersion: >=1.29.0-0 which is incompatible with Kubernetes v1.28.15"
    );
    let err = try_render(&RenderOptions {
        kube_version: Some("v1.29.10".into()),
        ..RenderOptions::new(&[], &[("admissionPolicies.enabled", "true")])
    })
    .unwrap_err();
    assert!(
        err.contains("admissionPolicies.enabled needs admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (Kubernetes 1.30 or later)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes' own schemas.

/// Kinds kubernetes-validate has no schema for (CRD-backed): checked by the tests above.
const CRD_BACKED: &[&str] = &["ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"];

#[test]
fn every_rendered_object_passes_kubernetes_validate_strict_for_1_29_to_1_32() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = 0;
    let mut outputs = vec![("kustomize".to_string(), kustomize("config/default"))];
    for (variant, options) in variants() {
        outputs.push((variant.to_string(), try_render(&options).unwrap()));
    }
    for (variant, yaml) in outputs {
        let mut docs = Vec::new();
        for doc in split_documents(&yaml) {
            let v: Value = serde_yaml::from_str(&doc.text).unwrap();
            if CRD_BACKED.contains(&v["kind"].as_str().unwrap()) {
                continue;
            }
            expected += 1;
            docs.push(doc.text);
        }
        let file = dir.path().join(format!("{variant}.yaml"));
        std::fs::write(&file, docs.join("---\n")).unwrap();
        files.push(file);
    }
    // ValidatingAdmissionPolicy is GA (admissionregistration.k8s.io/v1) from 1.30: the chart
    // refuses to render it for 1.29 (settings_that_cannot_work_are_refused_by_the_templates).
    let without_policies: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let docs: Vec<&str> = text
                .split("---\n")
                .filter(|d| !d.contains("kind: ValidatingAdmissionPolicy"))
                .collect();
            let out = f.with_extension("1.29.yaml");
            std::fs::write(&out, docs.join("---\n")).unwrap();
            out
        })
        .collect();
    let policy_docs = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.split("---\n")
                .filter(|d| d.contains("kind: ValidatingAdmissionPolicy"))
                .count()
        })
        .sum::<usize>();
    assert!(
        policy_docs >= 8,
        "only {policy_docs} admission policy objects rendered"
    );
    for version in ["1.29", "1.30", "1.31", "1.32"] {
        let (files, expected) = if version == "1.29" {
            (&without_policies, expected - policy_docs)
        } else {
            (&files, expected)
        };
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .args(files)
            .output()
            .expect("kubernetes-validate is required (pip install kubernetes-validate)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let passed = text
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert!(
            out.status.success() && passed == expected && !text.contains("WARN"),
            "kubernetes-validate --strict -k {version}: {passed} of {expected} objects passed:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The renderer itself.

#[test]
fn the_renderer_passes_its_own_tests() {
    // Builds it too: a compile error shows here first.
    let _ = testkit::chart::renderer();
    let out = testkit::chart::go_command()
        .args(["test", "./tools/helm-template"])
        .output()
        .expect("go is required (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "go test ./tools/helm-template:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn set_values_are_typed_and_files_merge_like_helm() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.yaml");
    let second = dir.path().join("second.yaml");
    std::fs::write(
        &first,
        "replicaCount: 4\noperator:\n  maxConcurrentBackups: 7\n  logFormat: text\n",
    )
    .unwrap();
    std::fs::write(&second, "operator:\n  maxConcurrentBackups: 8\n").unwrap();
    let objects = parse(&render_chart(
        &[first.as_path(), second.as_path()],
        &[
            ("replicaCount", "5"),
            ("podLabels.example\\.com/tier", "backup"),
        ],
    ));
    let d = deployment(&objects);
    assert_eq!(d["spec"]["replicas"], 5, "--set wins over -f");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["example.com/tier"], "backup",
        "escaped dots stay in the key"
    );
    let env = env(&objects);
    assert_eq!(env["DG_MAX_CONCURRENT_BACKUPS"], "8", "later files win");
    assert_eq!(env["DG_LOG_FORMAT"], "text", "files merge key by key");
}
