//! The bootstrap ClusterRoles and ClusterRoleBindings a kube-apiserver 1.32 creates
//! (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`): `cluster-admin` for `system:masters`,
//! the aggregated user-facing `admin`/`edit`/`view` (with the upstream rules for core, apps,
//! batch, autoscaling, policy, networking and coordination objects), `system:basic-user`,
//! `system:discovery`, `system:public-info-viewer`, `system:auth-delegator` and
//! `system:monitoring`.

use serde_json::{Value, json};

use super::rbac::{GROUP, PolicyRule};
use crate::store::{Inner, ObjKey};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule::resource(verbs, groups, resources)
}

/// Rules of `system:aggregate-to-view`.
pub fn view_rules() -> Vec<PolicyRule> {
    vec![
        r(
            READ,
            &[""],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        r(
            READ,
            &[""],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        r(READ, &[""], &["namespaces"]),
        r(READ, &["discovery.k8s.io"], &["endpointslices"]),
        r(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
            ],
        ),
        r(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        r(
            READ,
            &["batch"],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        r(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        r(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        r(
            READ,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses", "ingresses/status"],
        ),
    ]
}

/// Rules of `system:aggregate-to-edit`.
pub fn edit_rules() -> Vec<PolicyRule> {
    vec![
        r(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        r(&["impersonate"], &[""], &["serviceaccounts"]),
        r(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        r(&["create"], &[""], &["pods/eviction"]),
        r(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        r(&["create"], &[""], &["serviceaccounts/token"]),
        r(
            WRITE,
            &["apps"],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        r(WRITE, &["batch"], &["jobs", "cronjobs"]),
        r(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        r(WRITE, &["policy"], &["poddisruptionbudgets"]),
        r(
            WRITE,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses"],
        ),
        r(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
    ]
}

/// Rules of `system:aggregate-to-admin`.
pub fn admin_rules() -> Vec<PolicyRule> {
    vec![
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
        r(READ_WRITE, &[GROUP], &["roles", "rolebindings"]),
    ]
}

fn labels(extra: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in extra {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

fn cluster_role(
    name: &str,
    extra_labels: &[(&str, &str)],
    rules: Vec<PolicyRule>,
    aggregate_label: Option<&str>,
) -> Value {
    let mut o = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": labels(extra_labels),
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    });
    if let Some(l) = aggregate_label {
        o["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {l: "true"}}]});
        o["rules"] = Value::Null;
    }
    o
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": labels(&[]),
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": groups.iter().map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g})).collect::<Vec<_>>(),
    })
}

const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![
                r(&["*"], &["*"], &["*"]),
                PolicyRule::non_resource(&["*"], &["*"]),
            ],
            None,
        ),
        cluster_role("admin", &[], Vec::new(), Some(TO_ADMIN)),
        cluster_role("edit", &[(TO_ADMIN, "true")], Vec::new(), Some(TO_EDIT)),
        cluster_role("view", &[(TO_EDIT, "true")], Vec::new(), Some(TO_VIEW)),
        cluster_role(
            "system:aggregate-to-admin",
            &[(TO_ADMIN, "true")],
            admin_rules(),
            None,
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(TO_EDIT, "true")],
            edit_rules(),
            None,
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(TO_VIEW, "true")],
            view_rules(),
            None,
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
            None,
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![PolicyRule::non_resource(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
            None,
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![PolicyRule::non_resource(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
            None,
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
            None,
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![PolicyRule::non_resource(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
            None,
        ),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_role_binding("cluster-admin", "cluster-admin", &["system:masters"]),
        cluster_role_binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        cluster_role_binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        cluster_role_binding(
            "system:monitoring",
            "system:monitoring",
            &["system:monitoring"],
        ),
    ]
}

/// Stores the bootstrap policy (the aggregation controller fills `admin`/`edit`/`view`).
pub fn seed(inner: &mut Inner) {
    let now = crate::ops::now();
    for (resource, objs) in [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ] {
        for mut o in objs {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            o["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
            o["metadata"]["creationTimestamp"] = json!(now);
            if o["rules"].is_null()
                && let Some(m) = o.as_object_mut()
            {
                m.remove("rules");
            }
            let key = ObjKey {
                group: GROUP.into(),
                resource: resource.into(),
                namespace: String::new(),
                name,
            };
            inner.put(key, o);
        }
    }
}
