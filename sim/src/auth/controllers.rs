//! Two kube-controller-manager controllers: ClusterRole aggregation (`aggregationRule`: the
//! aggregated role's `rules` are the union of the rules of the ClusterRoles its selectors
//! match, kept current) and the root-CA publisher (ConfigMap `kube-root-ca.crt` with key
//! `ca.crt` in every namespace, restored when changed or deleted).

use serde_json::{Value, json};

use super::rbac::{GROUP, PolicyRule};
use crate::ops::{State, WriteOpts};
use crate::store::{Inner, ObjKey};

/// The ConfigMap the root-CA publisher maintains.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn labels(o: &Value) -> serde_json::Map<String, Value> {
    o.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether a `metav1.LabelSelector` (matchLabels, matchExpressions) matches `labels`.
pub fn selector_matches(sel: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ok = match e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn rules_value(o: &Value) -> Vec<PolicyRule> {
    super::authorizer::rules_of(o)
}

/// The rules an aggregated ClusterRole should have: every rule of the ClusterRoles matched by
/// any of its selectors (itself excluded), in name order, without duplicates.
pub fn aggregated_rules(inner: &Inner, name: &str, selectors: &[Value]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for (k, o) in inner.list(GROUP, "clusterroles", None) {
        if k.name == name {
            continue;
        }
        let l = labels(o);
        if !selectors.iter().any(|s| selector_matches(s, &l)) {
            continue;
        }
        for r in rules_value(o) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// One pass of the aggregation controller; returns whether anything changed.
pub fn aggregation_pass(state: &State, inner: &mut Inner) -> bool {
    let aggregated: Vec<(ObjKey, Vec<Value>)> = inner
        .list(GROUP, "clusterroles", None)
        .filter_map(|(k, o)| {
            let sels = o
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)?;
            Some((k.clone(), sels.clone()))
        })
        .collect();
    let mut changed = false;
    for (key, selectors) in aggregated {
        let want = aggregated_rules(inner, &key.name, &selectors);
        let Some(cur) = inner.objects.get(&key).cloned() else {
            continue;
        };
        if rules_value(&cur) == want {
            continue;
        }
        let mut new = cur;
        new["rules"] = json!(want);
        state.controller_update(inner, &key, new, "clusterrole-aggregation-controller");
        changed = true;
    }
    changed
}

/// One pass of the root-CA publisher; returns whether anything changed.
pub fn root_ca_pass(state: &State, inner: &mut Inner) -> bool {
    let Some(rd) = state.registry().find("", "v1", "configmaps").cloned() else {
        return false;
    };
    let ca = state.auth.ca_pem.clone();
    let active: Vec<String> = inner
        .list("", "namespaces", None)
        .filter(|(_, o)| o.pointer("/metadata/deletionTimestamp").is_none())
        .map(|(k, _)| k.name.clone())
        .collect();
    let mut changed = false;
    for ns in active {
        let key = crate::ops::key_for(&rd, &ns, ROOT_CA_CONFIGMAP);
        match inner.objects.get(&key).cloned() {
            None => {
                let cm = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {
                        "name": ROOT_CA_CONFIGMAP,
                        "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
                    },
                    "data": {"ca.crt": ca},
                });
                let opts = WriteOpts {
                    manager: "kube-controller-manager".into(),
                    ..Default::default()
                };
                if state.create_in(inner, &rd, &ns, cm, &opts).is_ok() {
                    changed = true;
                }
            }
            Some(cur) => {
                let data_ok = cur.get("data") == Some(&json!({"ca.crt": ca}));
                let ann_ok = cur
                    .pointer("/metadata/annotations/kubernetes.io~1description")
                    .and_then(Value::as_str)
                    == Some(ROOT_CA_DESCRIPTION);
                if data_ok && ann_ok {
                    continue;
                }
                let mut new = cur;
                new["data"] = json!({"ca.crt": ca});
                if let Some(m) = new.as_object_mut() {
                    m.remove("binaryData");
                }
                new["metadata"]["annotations"]["kubernetes.io/description"] =
                    json!(ROOT_CA_DESCRIPTION);
                state.controller_update(inner, &key, new, "kube-controller-manager");
                changed = true;
            }
        }
    }
    changed
}

/// Whether a write to `key` can give these controllers work (a ClusterRole, a
/// `kube-root-ca.crt` ConfigMap; namespaces already wake the garbage collector's loop).
pub fn watches(key: &ObjKey) -> bool {
    (key.group == GROUP && key.resource == "clusterroles")
        || (key.group.is_empty() && key.resource == "configmaps" && key.name == ROOT_CA_CONFIGMAP)
}

/// Both controllers; returns whether anything changed.
pub fn pass(state: &State, inner: &mut Inner) -> bool {
    let a = aggregation_pass(state, inner);
    let b = root_ca_pass(state, inner);
    a || b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let labels: serde_json::Map<String, Value> =
            serde_json::from_value(json!({"a": "1", "b": "2"})).unwrap();
        assert!(selector_matches(
            &json!({"matchLabels": {"a": "1"}}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"a": "2"}}),
            &labels
        ));
        assert!(selector_matches(&json!({}), &labels), "empty selects all");
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]}, {"key": "c", "operator": "DoesNotExist"}]}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}),
            &labels
        ));
    }
}
