//! Server-side behaviour of the workload and install kinds: `apps/v1` Deployments and
//! ReplicaSets, core/v1 Services, `policy/v1` PodDisruptionBudgets, `networking.k8s.io/v1`
//! NetworkPolicies and the `admissionregistration.k8s.io/v1` webhook configurations: their
//! registration, defaulting (the `SetDefaults_*` functions), validation (the apiserver's
//! messages), ClusterIP/NodePort allocation, the Scale view and printer columns.
//!
//! Nothing here runs a controller: Deployments and ReplicaSets are driven by the runner's
//! controllers (`runner::deployment`, `runner::replicaset`) through the API like upstream.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::resources::{Builtin, PrinterColumn, ResourceDef};
use crate::store::Inner;
use crate::table::{age, col};

type FieldErr = (String, &'static str, String);

/// The label the Deployment controller adds to a ReplicaSet's selector and template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The Service ClusterIP range (kube-apiserver's `--service-cluster-ip-range` default of kind
/// and kubeadm clusters).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The NodePort range (`--service-node-port-range` default).
pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

/// Registers the resources of this module (called by [`crate::resources::Registry::builtins`]).
pub fn register(defs: &mut Vec<ResourceDef>) {
    use Builtin::*;
    let mut deploy = ResourceDef::builtin(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
        Deployment,
    );
    deploy.status_subresource = true;
    deploy.scale_subresource = true;
    deploy.has_generation = true;
    defs.push(deploy);
    let mut rs = ResourceDef::builtin(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        &["all"],
        ReplicaSet,
    );
    rs.status_subresource = true;
    rs.scale_subresource = true;
    rs.has_generation = true;
    defs.push(rs);
    let mut svc = ResourceDef::builtin(
        "",
        "v1",
        "services",
        "Service",
        true,
        &["svc"],
        &["all"],
        Service,
    );
    svc.status_subresource = true;
    defs.push(svc);
    let mut pdb = ResourceDef::builtin(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[],
        PodDisruptionBudget,
    );
    pdb.status_subresource = true;
    pdb.has_generation = true;
    defs.push(pdb);
    let mut np = ResourceDef::builtin(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        &[],
        NetworkPolicy,
    );
    np.has_generation = true;
    defs.push(np);
    for (plural, kind, b) in [
        (
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            ValidatingWebhookConfiguration,
        ),
        (
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            MutatingWebhookConfiguration,
        ),
    ] {
        let mut w = ResourceDef::builtin(
            "admissionregistration.k8s.io",
            "v1",
            plural,
            kind,
            false,
            &[],
            &["api-extensions"],
            b,
        );
        w.has_generation = true;
        defs.push(w);
    }
}

/// Drops unknown fields through the kind's `k8s-openapi` type (see
/// [`crate::builtin::prune_unknown`]).
pub fn typed_roundtrip(b: Builtin, obj: &Value) -> Option<Value> {
    use crate::builtin::roundtrip;
    use k8s_openapi::api as k;
    match b {
        Builtin::Deployment => roundtrip::<k::apps::v1::Deployment>(obj),
        Builtin::ReplicaSet => roundtrip::<k::apps::v1::ReplicaSet>(obj),
        Builtin::Service => roundtrip::<k::core::v1::Service>(obj),
        Builtin::PodDisruptionBudget => roundtrip::<k::policy::v1::PodDisruptionBudget>(obj),
        Builtin::NetworkPolicy => roundtrip::<k::networking::v1::NetworkPolicy>(obj),
        Builtin::ValidatingWebhookConfiguration => {
            roundtrip::<k::admissionregistration::v1::ValidatingWebhookConfiguration>(obj)
        }
        Builtin::MutatingWebhookConfiguration => {
            roundtrip::<k::admissionregistration::v1::MutatingWebhookConfiguration>(obj)
        }
        Builtin::ValidatingAdmissionPolicy | Builtin::ValidatingAdmissionPolicyBinding => {
            crate::admission_policy::typed_roundtrip(b, obj)
        }
        _ => None,
    }
}

fn obj_entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = json!({});
    }
    let m = v.as_object_mut().expect("object");
    let e = m.entry(key.to_string()).or_insert(json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e
}

fn default_field(m: &mut Value, key: &str, v: Value) {
    if let Some(o) = m.as_object_mut() {
        match o.get(key) {
            None | Some(Value::Null) => {
                o.insert(key.into(), v);
            }
            Some(_) => {}
        }
    }
}

/// `SetDefaults_Deployment` (apps/v1) plus the pod template defaults.
fn default_deployment(obj: &mut Value) {
    let spec = obj_entry(obj, "spec");
    default_field(spec, "replicas", json!(1));
    let strategy = obj_entry(spec, "strategy");
    let ty = strategy.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() {
        strategy["type"] = json!("RollingUpdate");
    }
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = obj_entry(strategy, "rollingUpdate");
        default_field(ru, "maxUnavailable", json!("25%"));
        default_field(ru, "maxSurge", json!("25%"));
    }
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "progressDeadlineSeconds", json!(600));
    if let Some(ps) = spec.pointer_mut("/template/spec") {
        crate::builtin::default_pod_spec(ps, "Always");
    }
}

/// `SetDefaults_ReplicaSet` (apps/v1) plus the pod template defaults.
fn default_replicaset(obj: &mut Value) {
    let spec = obj_entry(obj, "spec");
    default_field(spec, "replicas", json!(1));
    if let Some(ps) = spec.pointer_mut("/template/spec") {
        crate::builtin::default_pod_spec(ps, "Always");
    }
}

fn service_type(obj: &Value) -> &str {
    obj.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn needs_node_ports(obj: &Value) -> bool {
    match service_type(obj) {
        "NodePort" => true,
        "LoadBalancer" => obj.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

/// `SetDefaults_Service` (core/v1) and the registry's IP family defaults (single-stack IPv4).
fn default_service(obj: &mut Value) {
    let spec = obj_entry(obj, "spec");
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if !p.contains_key("targetPort")
                && let Some(port) = p.get("port").cloned()
            {
                p.insert("targetPort".into(), port);
            }
        }
    }
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        default_field(spec, "ipFamilies", json!(["IPv4"]));
        default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
        default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        default_field(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// `SetDefaults_NetworkPolicy` (networking/v1).
fn default_network_policy(obj: &mut Value) {
    let spec = obj_entry(obj, "spec");
    default_field(spec, "podSelector", json!({}));
    let has_egress = spec
        .get("egress")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let mut types = vec![json!("Ingress")];
        if has_egress {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = Value::Array(types);
    }
    for dir in ["ingress", "egress"] {
        if let Some(Value::Array(rules)) = spec.get_mut(dir) {
            for rule in rules {
                if let Some(Value::Array(ports)) = rule.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
    }
}

/// `SetDefaults_ValidatingWebhook` / `SetDefaults_MutatingWebhook` (admissionregistration/v1).
fn default_webhooks(obj: &mut Value, mutating: bool) {
    let Some(Value::Array(hooks)) = obj.get_mut("webhooks") else {
        return;
    };
    for h in hooks.iter_mut().filter(|h| h.is_object()) {
        default_field(h, "failurePolicy", json!("Fail"));
        default_field(h, "matchPolicy", json!("Equivalent"));
        default_field(h, "namespaceSelector", json!({}));
        default_field(h, "objectSelector", json!({}));
        default_field(h, "timeoutSeconds", json!(10));
        if mutating {
            default_field(h, "reinvocationPolicy", json!("Never"));
        }
        if let Some(Value::Array(rules)) = h.get_mut("rules") {
            for r in rules.iter_mut().filter(|r| r.is_object()) {
                default_field(r, "scope", json!("*"));
            }
        }
        if let Some(svc) = h.pointer_mut("/clientConfig/service") {
            default_field(svc, "port", json!(443));
        }
    }
}

fn default_kind(rd: &ResourceDef, obj: &mut Value) {
    match rd.builtin {
        Some(Builtin::Deployment) => default_deployment(obj),
        Some(Builtin::ReplicaSet) => default_replicaset(obj),
        Some(Builtin::Service) => default_service(obj),
        Some(Builtin::NetworkPolicy) => default_network_policy(obj),
        Some(Builtin::ValidatingWebhookConfiguration) => default_webhooks(obj, false),
        Some(Builtin::MutatingWebhookConfiguration) => default_webhooks(obj, true),
        Some(
            b @ (Builtin::ValidatingAdmissionPolicy | Builtin::ValidatingAdmissionPolicyBinding),
        ) => crate::admission_policy::set_defaults(b, obj),
        _ => {}
    }
}

/// Create-time defaulting and status reset (the registry strategies' `PrepareForCreate`).
pub fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    default_kind(rd, obj);
    match rd.builtin {
        Some(Builtin::Deployment) => obj["status"] = json!({}),
        // ReplicaSetStatus.replicas has no omitempty.
        Some(Builtin::ReplicaSet) => obj["status"] = json!({"replicas": 0}),
        Some(Builtin::Service) => obj["status"] = json!({"loadBalancer": {}}),
        Some(Builtin::PodDisruptionBudget) => {
            obj["status"] = json!({
                "disruptionsAllowed": 0,
                "currentHealthy": 0,
                "desiredHealthy": 0,
                "expectedPods": 0,
            })
        }
        _ => {}
    }
}

/// Update-time defaulting, carried-over allocations and immutability checks.
pub fn prepare_update(rd: &ResourceDef, old: &Value, new: &mut Value) -> Vec<FieldErr> {
    default_kind(rd, new);
    let mut errs = Vec::new();
    match rd.builtin {
        Some(Builtin::Deployment | Builtin::ReplicaSet) => {
            let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
            if o != n {
                errs.push((
                    "spec.selector".into(),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: field is immutable",
                        go_label_selector(n.unwrap_or(&Value::Null))
                    ),
                ));
            }
        }
        Some(Builtin::Service) => service_update(old, new, &mut errs),
        _ => {}
    }
    errs
}

/// What a Service update keeps of the old object (`patchAllocatedValues`) and refuses.
fn service_update(old: &Value, new: &mut Value, errs: &mut Vec<FieldErr>) {
    let external = |o: &Value| service_type(o) == "ExternalName";
    if external(old) || external(new) {
        return;
    }
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    if new_ip.is_empty() {
        for f in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                new["spec"][f] = v.clone();
            }
        }
    } else if new.pointer("/spec/clusterIPs").is_none() {
        new["spec"]["clusterIPs"] = json!([new_ip]);
    }
    let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str);
    let new_ip = new.pointer("/spec/clusterIP").and_then(Value::as_str);
    if old_ip.is_some_and(|o| !o.is_empty()) && old_ip != new_ip {
        errs.push((
            "spec.clusterIPs[0]".into(),
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: may not change once set",
                go_string_slice(new.pointer("/spec/clusterIPs"))
            ),
        ));
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let old_ports: Vec<Value> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(ports)) = new.pointer_mut("/spec/ports") {
            for p in ports.iter_mut() {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    continue;
                }
                if let Some(np) = old_ports
                    .iter()
                    .find(|o| {
                        o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                    })
                    .and_then(|o| o.get("nodePort"))
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }
}

/// The Deployment status strategy lets a `/status` write change annotations (only `spec` and
/// labels are reset), which the Deployment controller uses for its revision annotation.
pub fn status_write_annotations(rd: &ResourceDef, annotations: Option<Value>, new: &mut Value) {
    if rd.builtin != Some(Builtin::Deployment) {
        return;
    }
    let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match annotations {
        Some(a) if a.as_object().is_some_and(|m| !m.is_empty()) => {
            md.insert("annotations".into(), a);
        }
        _ => {
            md.remove("annotations");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors.

/// Whether `labels` satisfy a `metav1.LabelSelector` (JSON). A missing selector matches nothing,
/// an empty one everything, as `LabelSelectorAsSelector`.
pub fn selector_matches(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(sel) = selector.filter(|s| s.is_object()) else {
        return false;
    };
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let ml_ok = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let me_ok = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                let values: Vec<&str> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                    Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                    Some("Exists") => get(key).is_some(),
                    Some("DoesNotExist") => get(key).is_none(),
                    _ => false,
                }
            })
        });
    ml_ok && me_ok
}

/// `metav1.FormatLabelSelector` without the `<none>` (`labels.Selector.String()`): requirements
/// sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
pub fn selector_string(selector: Option<&Value>) -> String {
    let Some(sel) = selector else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let mut values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        let s = match e.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key.to_string(), s));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

fn none_if_empty(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn go_quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Go's `%#v` of a `map[string]string`.
fn go_string_map(m: Option<&Value>) -> String {
    match m.and_then(Value::as_object) {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or(""))))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// Go's `%#v` of a `[]string`.
fn go_string_slice(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => "[]string(nil)".into(),
        Some(a) => format!(
            "[]string{{{}}}",
            a.iter()
                .map(|x| go_quote(x.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Go's `%#v` of a `v1.LabelSelector`, as field errors print it.
fn go_label_selector(sel: &Value) -> String {
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(a) => format!(
            "[]v1.LabelSelectorRequirement{{{}}}",
            a.iter()
                .map(|e| format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                    go_quote(e.get("key").and_then(Value::as_str).unwrap_or("")),
                    go_quote(e.get("operator").and_then(Value::as_str).unwrap_or("")),
                    go_string_slice(e.get("values"))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        go_string_map(sel.get("matchLabels"))
    )
}

// ---------------------------------------------------------------------------------------------
// Int-or-percent values (maxSurge, maxUnavailable, minAvailable).

/// `intstr.GetScaledValueFromIntOrPercent`: an integer, or a percentage of `total` rounded up
/// or down. `None` for a malformed value.
pub fn scaled_value(v: &Value, total: i64, round_up: bool) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            let x = pct * total;
            Some(if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            })
        }
        _ => None,
    }
}

/// Validates an int-or-percent field (`ValidatePositiveIntOrPercent` + `IsNotMoreThan100Percent`).
fn int_or_percent_errors(v: Option<&Value>, field: &str, errs: &mut Vec<FieldErr>) {
    let Some(v) = v else { return };
    match v {
        Value::Number(n) if n.as_i64().is_none_or(|i| i < 0) => {
            errs.push((
                field.into(),
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
        Value::Number(_) => {}
        Value::String(s) => {
            let pct = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok());
            match pct {
                None => errs.push((
                    field.into(),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                        go_quote(s)
                    ),
                )),
                Some(p) if p > 100 => errs.push((
                    field.into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {}: must not be greater than 100%", go_quote(s)),
                )),
                Some(_) => {}
            }
        }
        _ => {}
    }
}

fn is_zero_int_or_percent(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0%" || s == "0",
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn non_negative(obj: &Value, ptr: &str, field: &str, errs: &mut Vec<FieldErr>) {
    if let Some(n) = obj.pointer(ptr).and_then(Value::as_i64)
        && n < 0
    {
        errs.push((
            field.into(),
            "FieldValueInvalid",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
}

/// The selector/template part of `ValidateDeploymentSpec` and `ValidateReplicaSetSpec`.
fn workload_spec_errors(obj: &Value, kind: &str, errs: &mut Vec<FieldErr>) {
    non_negative(obj, "/spec/replicas", "spec.replicas", errs);
    non_negative(obj, "/spec/minReadySeconds", "spec.minReadySeconds", errs);
    let selector = obj.pointer("/spec/selector").filter(|s| !s.is_null());
    match selector {
        None => errs.push((
            "spec.selector".into(),
            "FieldValueRequired",
            "Required value".into(),
        )),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            if empty {
                errs.push((
                    "spec.selector".into(),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: empty selector is invalid for {kind}",
                        go_label_selector(sel)
                    ),
                ));
            } else {
                let labels = obj.pointer("/spec/template/metadata/labels");
                if !selector_matches(Some(sel), labels) {
                    errs.push((
                        "spec.template.metadata.labels".into(),
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {}: `selector` does not match template `labels`",
                            go_string_map(labels)
                        ),
                    ));
                }
            }
        }
    }
    let ps = obj.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    crate::builtin::container_errors(ps, "spec.template.spec", errs);
    match ps.get("restartPolicy").and_then(Value::as_str) {
        Some("Always") | None => {}
        Some(other) => errs.push((
            "spec.template.spec.restartPolicy".into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: \"Always\"",
                go_quote(other)
            ),
        )),
    }
    if ps
        .get("activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null())
    {
        errs.push((
            "spec.template.spec.activeDeadlineSeconds".into(),
            "FieldValueForbidden",
            format!("Forbidden: activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

fn deployment_errors(obj: &Value, errs: &mut Vec<FieldErr>) {
    workload_spec_errors(obj, "Deployment", errs);
    non_negative(
        obj,
        "/spec/revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    let strategy = obj.pointer("/spec/strategy").unwrap_or(&Value::Null);
    match strategy.get("type").and_then(Value::as_str) {
        Some("Recreate") => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                errs.push((
                    "spec.strategy.rollingUpdate".into(),
                    "FieldValueForbidden",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'".into(),
                ));
            }
        }
        Some("RollingUpdate") => {
            let ru = strategy.get("rollingUpdate").unwrap_or(&Value::Null);
            let base = "spec.strategy.rollingUpdate";
            int_or_percent_errors(
                ru.get("maxUnavailable"),
                &format!("{base}.maxUnavailable"),
                errs,
            );
            int_or_percent_errors(ru.get("maxSurge"), &format!("{base}.maxSurge"), errs);
            if is_zero_int_or_percent(ru.get("maxSurge"))
                && is_zero_int_or_percent(ru.get("maxUnavailable"))
            {
                errs.push((
                    format!("{base}.maxUnavailable"),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: may not be 0 when `maxSurge` is 0",
                        ru.get("maxUnavailable").cloned().unwrap_or(json!(0))
                    ),
                ));
            }
        }
        other => errs.push((
            "spec.strategy.type".into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: \"Recreate\", \"RollingUpdate\"",
                go_quote(other.unwrap_or(""))
            ),
        )),
    }
    if let Some(pd) = obj
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
    {
        let min_ready = obj
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if pd <= min_ready {
            errs.push((
                "spec.progressDeadlineSeconds".into(),
                "FieldValueInvalid",
                format!("Invalid value: {pd}: must be greater than minReadySeconds"),
            ));
        }
    }
}

fn service_errors(obj: &Value, errs: &mut Vec<FieldErr>) {
    let ty = service_type(obj);
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errs.push((
            "spec.type".into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                go_quote(ty)
            ),
        ));
        return;
    }
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push((
            "spec.ports".into(),
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    if ty == "ExternalName"
        && obj
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        errs.push((
            "spec.externalName".into(),
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push((
                format!("spec.ports[{i}].name"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push((
                format!("spec.ports[{i}].name"),
                "FieldValueDuplicate",
                format!("Duplicate value: {}", go_quote(name)),
            ));
        }
        match p.get("port").and_then(Value::as_i64) {
            Some(1..=65535) => {}
            Some(n) => errs.push((
                format!("spec.ports[{i}].port"),
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
            )),
            None => errs.push((
                format!("spec.ports[{i}].port"),
                "FieldValueRequired",
                "Required value".into(),
            )),
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64)
            && np != 0
            && !needs_node_ports(obj)
        {
            errs.push((
                format!("spec.ports[{i}].nodePort"),
                "FieldValueForbidden",
                "Forbidden: may not be used when `type` is 'ClusterIP'".into(),
            ));
        }
    }
}

fn pdb_errors(obj: &Value, errs: &mut Vec<FieldErr>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if spec.get("minAvailable").is_some_and(|v| !v.is_null())
        && spec.get("maxUnavailable").is_some_and(|v| !v.is_null())
    {
        errs.push((
            "spec".into(),
            "FieldValueInvalid",
            "Invalid value: policy.PodDisruptionBudgetSpec{...}: minAvailable and maxUnavailable cannot be both set".into(),
        ));
    }
    int_or_percent_errors(spec.get("minAvailable"), "spec.minAvailable", errs);
    int_or_percent_errors(spec.get("maxUnavailable"), "spec.maxUnavailable", errs);
}

fn webhook_errors(obj: &Value, mutating: bool, errs: &mut Vec<FieldErr>) {
    let hooks = obj
        .get("webhooks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let base = format!("webhooks[{i}]");
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            errs.push((
                format!("{base}.name"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        } else if name.split('.').count() < 3 {
            errs.push((
                format!("{base}.name"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: should be a domain with at least three segments separated by dots",
                    go_quote(name)
                ),
            ));
        } else if !names.insert(name.to_string()) {
            errs.push((
                format!("{base}.name"),
                "FieldValueDuplicate",
                format!("Duplicate value: {}", go_quote(name)),
            ));
        }
        match h.get("sideEffects").and_then(Value::as_str) {
            Some("None" | "NoneOnDryRun") => {}
            None => errs.push((
                format!("{base}.sideEffects"),
                "FieldValueRequired",
                "Required value: must specify one of None, NoneOnDryRun".into(),
            )),
            Some(other) => errs.push((
                format!("{base}.sideEffects"),
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: \"None\", \"NoneOnDryRun\"",
                    go_quote(other)
                ),
            )),
        }
        if h.get("admissionReviewVersions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            errs.push((
                format!("{base}.admissionReviewVersions"),
                "FieldValueRequired",
                "Required value: must specify one of v1, v1beta1".into(),
            ));
        }
        let cc = h.get("clientConfig").unwrap_or(&Value::Null);
        let has_url = cc.get("url").is_some_and(|u| !u.is_null());
        let has_svc = cc.get("service").is_some_and(|s| !s.is_null());
        if has_url == has_svc {
            errs.push((
                format!("{base}.clientConfig"),
                "FieldValueRequired",
                "Required value: exactly one of url or service is required".into(),
            ));
        }
        let _ = mutating;
    }
}

/// Validation of the kinds of this module (after defaulting).
pub fn validate(rd: &ResourceDef, obj: &Value) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    match rd.builtin {
        Some(Builtin::Deployment) => deployment_errors(obj, &mut errs),
        Some(Builtin::ReplicaSet) => workload_spec_errors(obj, "ReplicaSet", &mut errs),
        Some(Builtin::Service) => service_errors(obj, &mut errs),
        Some(Builtin::PodDisruptionBudget) => pdb_errors(obj, &mut errs),
        Some(Builtin::ValidatingWebhookConfiguration) => webhook_errors(obj, false, &mut errs),
        Some(Builtin::MutatingWebhookConfiguration) => webhook_errors(obj, true, &mut errs),
        Some(
            b @ (Builtin::ValidatingAdmissionPolicy | Builtin::ValidatingAdmissionPolicyBinding),
        ) => errs.extend(crate::admission_policy::validate(b, obj)),
        _ => {}
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// ClusterIP and NodePort allocation.

fn parse_ipv4(s: &str) -> Option<u32> {
    s.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
}

fn cidr() -> (u32, u32) {
    let (net, bits) = SERVICE_CIDR.split_once('/').expect("cidr");
    let mask = u32::MAX << (32 - bits.parse::<u32>().expect("bits"));
    (parse_ipv4(net).expect("ip") & mask, mask)
}

fn random_u32() -> u32 {
    let b = *uuid::Uuid::new_v4().as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Gives a Service its ClusterIP and NodePorts (the registry's allocators), checking the ones
/// the client chose: in range and not used by another Service. `old` is the stored object on
/// update (its allocations were carried over by [`prepare_update`]).
pub fn allocate(
    inner: &Inner,
    rd: &ResourceDef,
    old: Option<&Value>,
    obj: &mut Value,
) -> ApiResult<()> {
    if rd.builtin != Some(Builtin::Service) {
        return Ok(());
    }
    let me = (
        obj.pointer("/metadata/namespace").cloned(),
        obj.pointer("/metadata/name").cloned(),
    );
    let mut used_ips = BTreeSet::new();
    let mut used_ports = BTreeSet::new();
    for (_, o) in inner.list(&rd.storage.0, &rd.storage.1, None) {
        if (
            o.pointer("/metadata/namespace").cloned(),
            o.pointer("/metadata/name").cloned(),
        ) == me
        {
            continue;
        }
        if let Some(ip) = o
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(parse_ipv4)
        {
            used_ips.insert(ip);
        }
        for p in o
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                used_ports.insert(np);
            }
        }
    }
    let name =
        me.1.as_ref()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    let invalid = |field: &str, msg: String| {
        ApiError::invalid_fields(
            "",
            "Service",
            &name,
            &[(field.into(), "FieldValueInvalid", msg)],
        )
    };
    if service_type(obj) == "ExternalName" {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        return Ok(());
    }
    let wanted = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (net, mask) = cidr();
    let unchanged = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        == Some(&wanted);
    if wanted.is_empty() {
        // Random like the bitmap allocator; .0 (network), .1 (the kubernetes Service) and
        // the broadcast address are never handed out.
        let size = !mask;
        let ip = loop {
            let candidate = net | (random_u32() % size);
            let host = candidate & size;
            if host > 1 && host != size && !used_ips.contains(&candidate) {
                break candidate;
            }
        };
        let ip = std::net::Ipv4Addr::from(ip).to_string();
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    } else if wanted == "None" {
        obj["spec"]["clusterIPs"] = json!(["None"]);
    } else if !unchanged {
        let ips = go_string_slice(Some(&json!([wanted])));
        let Some(ip) = parse_ipv4(&wanted) else {
            return Err(invalid(
                "spec.clusterIPs[0]",
                format!(
                    "Invalid value: {}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    go_quote(&wanted)
                ),
            ));
        };
        if ip & mask != net {
            return Err(invalid(
                "spec.clusterIPs",
                format!(
                    "Invalid value: {ips}: failed to allocate IP {wanted}: the provided IP ({wanted}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}"
                ),
            ));
        }
        if used_ips.contains(&ip) {
            return Err(invalid(
                "spec.clusterIPs",
                format!(
                    "Invalid value: {ips}: failed to allocate IP {wanted}: provided IP is already allocated"
                ),
            ));
        }
        obj["spec"]["clusterIPs"] = json!([wanted]);
    }
    if needs_node_ports(obj) {
        let old_ports: BTreeSet<i64> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let mut mine = BTreeSet::new();
        let count = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let np = obj["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if np == 0 {
                let span = (NODE_PORT_RANGE.1 - NODE_PORT_RANGE.0 + 1) as u32;
                let port = loop {
                    let p = NODE_PORT_RANGE.0 + i64::from(random_u32() % span);
                    if !used_ports.contains(&p) && !mine.contains(&p) {
                        break p;
                    }
                };
                obj["spec"]["ports"][i]["nodePort"] = json!(port);
                mine.insert(port);
                continue;
            }
            if old_ports.contains(&np) {
                mine.insert(np);
                continue;
            }
            if !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&np) {
                return Err(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    format!(
                        "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                    ),
                ));
            }
            if used_ports.contains(&np) || !mine.insert(np) {
                return Err(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    format!("Invalid value: {np}: provided port is already allocated"),
                ));
            }
        }
    } else if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
        // Switching to ClusterIP releases the node ports (nodePort: 0 is dropped).
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if p.get("nodePort").and_then(Value::as_i64) == Some(0) {
                p.remove("nodePort");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scale subresource.

/// The `autoscaling/v1` Scale of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut meta = Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(f) {
            meta.insert(f.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(obj.pointer("/spec/selector")),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Tables (`kubectl get`), as pkg/printers/internalversion prints them.

/// Column definitions of the kinds of this module (`name`/`age` are the shared columns).
pub fn columns(b: Builtin, name: PrinterColumn, age_c: PrinterColumn) -> Vec<PrinterColumn> {
    let containers = col(
        "Containers",
        "string",
        "",
        "Names of each container in the template.",
        1,
    );
    let images = col(
        "Images",
        "string",
        "",
        "Images referenced by each container in the template.",
        1,
    );
    let selector = |desc: &str| col("Selector", "string", "", desc, 1);
    match b {
        Builtin::Deployment => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                "Number of the pod with ready state",
                0,
            ),
            col(
                "Up-to-date",
                "string",
                "",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                0,
            ),
            col(
                "Available",
                "string",
                "",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                0,
            ),
            age_c,
            containers,
            images,
            selector(
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        Builtin::ReplicaSet => vec![
            name,
            col(
                "Desired",
                "integer",
                "",
                "Replicas is the number of desired pods.",
                0,
            ),
            col(
                "Current",
                "integer",
                "",
                "Replicas is the most recently observed number of replicas.",
                0,
            ),
            col(
                "Ready",
                "integer",
                "",
                "The number of ready replicas for this replica set.",
                0,
            ),
            age_c,
            containers,
            images,
            selector("Selector is a label query over pods that should match the replica count."),
        ],
        Builtin::Service => vec![
            name,
            col("Type", "string", "", "The type of the service", 0),
            col(
                "Cluster-IP",
                "string",
                "",
                "The cluster IP of the service",
                0,
            ),
            col(
                "External-IP",
                "string",
                "",
                "The external IP of the service",
                0,
            ),
            col("Port(s)", "string", "", "The ports of the service", 0),
            age_c,
            selector(
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Builtin::PodDisruptionBudget => vec![
            name,
            col(
                "Min Available",
                "string",
                "",
                "The minimum number of pods that must be available.",
                0,
            ),
            col(
                "Max Unavailable",
                "string",
                "",
                "The maximum number of pods that may be unavailable.",
                0,
            ),
            col(
                "Allowed Disruptions",
                "integer",
                "",
                "Calculated number of pods that may be disrupted at this time.",
                0,
            ),
            age_c,
        ],
        Builtin::NetworkPolicy => vec![
            name,
            col(
                "Pod-Selector",
                "string",
                "",
                "Selects the pods to which this NetworkPolicy object applies.",
                0,
            ),
            age_c,
        ],
        Builtin::ValidatingWebhookConfiguration | Builtin::MutatingWebhookConfiguration => vec![
            name,
            col(
                "Webhooks",
                "integer",
                "",
                "Webhooks indicates the number of webhooks in the configuration.",
                0,
            ),
            age_c,
        ],
        _ => vec![name, age_c],
    }
}

fn template_containers(o: &Value) -> (String, String) {
    let cs = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs
        .iter()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let images: Vec<&str> = cs
        .iter()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or(""))
        .collect();
    (names.join(","), images.join(","))
}

fn int_at(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn service_external_ip(o: &Value) -> String {
    let external: Vec<&str> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match service_type(o) {
        "ExternalName" => o
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            ips.extend(external.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
    }
}

fn service_ports(o: &Value) -> String {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = int_at(p, "/port");
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    none_if_empty(ports.join(","))
}

fn int_or_string_cell(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(s)) => json!(s),
        _ => json!("N/A"),
    }
}

/// Row cells after the name column.
pub fn cells(b: Builtin, o: &Value) -> Vec<Value> {
    let created = age(o.pointer("/metadata/creationTimestamp"));
    match b {
        Builtin::Deployment => {
            let (names, images) = template_containers(o);
            vec![
                json!(format!(
                    "{}/{}",
                    int_at(o, "/status/readyReplicas"),
                    int_at(o, "/spec/replicas")
                )),
                json!(int_at(o, "/status/updatedReplicas")),
                json!(int_at(o, "/status/availableReplicas")),
                created,
                json!(names),
                json!(images),
                json!(none_if_empty(selector_string(o.pointer("/spec/selector")))),
            ]
        }
        Builtin::ReplicaSet => {
            let (names, images) = template_containers(o);
            vec![
                json!(int_at(o, "/spec/replicas")),
                json!(int_at(o, "/status/replicas")),
                json!(int_at(o, "/status/readyReplicas")),
                created,
                json!(names),
                json!(images),
                json!(none_if_empty(selector_string(o.pointer("/spec/selector")))),
            ]
        }
        Builtin::Service => {
            let cluster_ip = o
                .pointer("/spec/clusterIPs/0")
                .or_else(|| o.pointer("/spec/clusterIP"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("<none>");
            let selector = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                json!(service_type(o)),
                json!(cluster_ip),
                json!(service_external_ip(o)),
                json!(service_ports(o)),
                created,
                json!(none_if_empty(selector)),
            ]
        }
        Builtin::PodDisruptionBudget => vec![
            int_or_string_cell(o.pointer("/spec/minAvailable")),
            int_or_string_cell(o.pointer("/spec/maxUnavailable")),
            json!(int_at(o, "/status/disruptionsAllowed")),
            created,
        ],
        Builtin::NetworkPolicy => vec![
            json!(none_if_empty(selector_string(
                o.pointer("/spec/podSelector")
            ))),
            created,
        ],
        Builtin::ValidatingWebhookConfiguration | Builtin::MutatingWebhookConfiguration => vec![
            json!(
                o.get("webhooks")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            created,
        ],
        _ => vec![created],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_and_print_like_labels_selector() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        });
        assert!(selector_matches(
            Some(&sel),
            Some(&json!({"app": "web", "tier": "a"}))
        ));
        assert!(!selector_matches(
            Some(&sel),
            Some(&json!({"app": "web", "tier": "a", "canary": "1"}))
        ));
        assert!(!selector_matches(Some(&sel), Some(&json!({"app": "web"}))));
        assert!(!selector_matches(None, Some(&json!({"app": "web"}))));
        assert!(selector_matches(Some(&json!({})), None));
        assert_eq!(selector_string(Some(&sel)), "app=web,!canary,tier in (a,b)");
    }

    #[test]
    fn go_renderings_match_field_error_values() {
        assert_eq!(
            go_label_selector(&json!({"matchLabels": {"app": "nginx2"}})),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"nginx2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
        assert_eq!(
            go_string_slice(Some(&json!(["None"]))),
            r#"[]string{"None"}"#
        );
    }

    #[test]
    fn percentages_scale_like_intstr() {
        assert_eq!(scaled_value(&json!("25%"), 2, true), Some(1));
        assert_eq!(scaled_value(&json!("25%"), 2, false), Some(0));
        assert_eq!(scaled_value(&json!("25%"), 10, true), Some(3));
        assert_eq!(scaled_value(&json!("25%"), 10, false), Some(2));
        assert_eq!(scaled_value(&json!(3), 10, false), Some(3));
        assert_eq!(scaled_value(&json!("x"), 10, false), None);
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}]}]}}}});
        default_deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut errs = Vec::new();
        deployment_errors(&d, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        default_deployment(&mut r);
        assert!(r["spec"]["strategy"].get("rollingUpdate").is_none());
    }
}
