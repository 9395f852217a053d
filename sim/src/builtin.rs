//! Server-side defaulting, validation and conversions of the built-in kinds (what the real
//! registry strategies and admission plugins do for them).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::resources::{Builtin, ResourceDef};

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Validates `metadata.name` the way the resource's strategy does; returns the field error.
pub fn name_error(rd: &ResourceDef, name: &str) -> Option<(String, &'static str, String)> {
    let label_only = matches!(rd.builtin, Some(Builtin::Namespace));
    let ok = if label_only {
        is_label(name)
    } else {
        is_subdomain(name)
    };
    if ok {
        None
    } else {
        let msg = if label_only {
            DNS1123_LABEL_MSG
        } else {
            DNS1123_SUBDOMAIN_MSG
        };
        Some((
            "metadata.name".into(),
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": {msg}"),
        ))
    }
}

fn default_probe(p: &mut Value) {
    let Some(m) = p.as_object_mut() else { return };
    m.entry("timeoutSeconds").or_insert(json!(1));
    m.entry("periodSeconds").or_insert(json!(10));
    m.entry("successThreshold").or_insert(json!(1));
    m.entry("failureThreshold").or_insert(json!(3));
    if let Some(h) = m.get_mut("httpGet").and_then(Value::as_object_mut) {
        h.entry("path").or_insert(json!("/"));
        h.entry("scheme").or_insert(json!("HTTP"));
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    if let Some(Value::Array(ports)) = m.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe) {
            default_probe(p);
        }
    }
    if let Some(Value::Array(env)) = m.get_mut("env") {
        for fr in env
            .iter_mut()
            .filter_map(|e| e.pointer_mut("/valueFrom/fieldRef"))
            .filter_map(Value::as_object_mut)
        {
            fr.entry("apiVersion").or_insert(json!("v1"));
        }
    }
    m.entry("terminationMessagePath")
        .or_insert(json!("/dev/termination-log"));
    m.entry("terminationMessagePolicy").or_insert(json!("File"));
    m.entry("resources").or_insert(json!({}));
    if !m.contains_key("imagePullPolicy") {
        let image = m.get("image").and_then(Value::as_str).unwrap_or_default();
        let tag = image.rsplit('/').next().unwrap_or_default();
        let policy = if !tag.contains(':') || tag.ends_with(":latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        m.insert("imagePullPolicy".into(), json!(policy));
    }
}

/// Pod spec defaults (also applied to Job pod templates).
pub fn default_pod_spec(spec: &mut Value, restart_default: &str) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    m.entry("restartPolicy").or_insert(json!(restart_default));
    m.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    m.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    m.entry("securityContext").or_insert(json!({}));
    m.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = m.get_mut(key) {
            cs.iter_mut().for_each(default_container);
        }
    }
}

pub(crate) fn container_errors(
    spec: &Value,
    base: &str,
    errs: &mut Vec<(String, &'static str, String)>,
) {
    match spec.get("containers").and_then(Value::as_array) {
        None => errs.push((
            format!("{base}.containers"),
            "FieldValueRequired",
            "Required value".into(),
        )),
        Some(cs) if cs.is_empty() => errs.push((
            format!("{base}.containers"),
            "FieldValueRequired",
            "Required value".into(),
        )),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                for f in ["name", "image"] {
                    if c.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push((
                            format!("{base}.containers[{i}].{f}"),
                            "FieldValueRequired",
                            "Required value".into(),
                        ));
                    }
                }
            }
        }
    }
}

/// Create-time defaulting and status reset of built-in kinds.
pub fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match rd.builtin {
        Some(Builtin::Namespace) => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Some(Builtin::Secret) => {
            fold_string_data(obj);
            if obj
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                obj["type"] = json!("Opaque");
            }
        }
        Some(Builtin::Pod) => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec, "Always");
                if spec.get("serviceAccountName").is_none() {
                    spec["serviceAccountName"] = json!("default");
                    spec["serviceAccount"] = json!("default");
                }
            }
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        Some(Builtin::PersistentVolumeClaim) => {
            if let Some(m) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                m.entry("volumeMode").or_insert(json!("Filesystem"));
            }
            // No provisioner runs here: claims stay Pending, as on a cluster without one.
            obj["status"] = json!({"phase": "Pending"});
        }
        Some(Builtin::Job) => {
            let spec = obj
                .as_object_mut()
                .expect("object")
                .entry("spec")
                .or_insert(json!({}));
            if let Some(m) = spec.as_object_mut() {
                m.entry("parallelism").or_insert(json!(1));
                m.entry("completions").or_insert(json!(1));
                m.entry("backoffLimit").or_insert(json!(6));
                m.entry("completionMode").or_insert(json!("NonIndexed"));
                m.entry("suspend").or_insert(json!(false));
                m.entry("podReplacementPolicy")
                    .or_insert(json!("TerminatingOrFailed"));
                m.entry("manualSelector").or_insert(json!(false));
            }
            if spec.get("manualSelector") != Some(&json!(true)) {
                let labels = json!({
                    "batch.kubernetes.io/controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid,
                    "job-name": name,
                });
                spec["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                let tmpl = spec
                    .as_object_mut()
                    .expect("object")
                    .entry("template")
                    .or_insert(json!({}));
                let md = tmpl
                    .as_object_mut()
                    .expect("object")
                    .entry("metadata")
                    .or_insert(json!({}));
                let lm = md
                    .as_object_mut()
                    .expect("object")
                    .entry("labels")
                    .or_insert(json!({}));
                if let (Some(lm), Some(add)) = (lm.as_object_mut(), labels.as_object()) {
                    for (k, v) in add {
                        lm.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(ps) = spec.pointer_mut("/template/spec") {
                default_pod_spec(ps, "Never");
            }
            obj["status"] = json!({});
        }
        Some(Builtin::RoleBinding) => crate::auth::escalation::default_subjects(obj),
        Some(Builtin::Crd) => crate::crds::prepare_create(obj),
        _ => crate::workloads::prepare_create(rd, obj),
    }
}

/// Update-time conversions and immutability checks of built-in kinds.
pub fn prepare_update(
    rd: &ResourceDef,
    old: &Value,
    new: &mut Value,
) -> Vec<(String, &'static str, String)> {
    let mut errs = Vec::new();
    match rd.builtin {
        Some(Builtin::Secret) => {
            fold_string_data(new);
            if old.get("immutable") == Some(&json!(true)) && (old.get("data") != new.get("data")) {
                errs.push((
                    "data".into(),
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set".into(),
                ));
            }
        }
        Some(Builtin::ConfigMap)
            if old.get("immutable") == Some(&json!(true))
                && (old.get("data") != new.get("data")
                    || old.get("binaryData") != new.get("binaryData")) =>
        {
            errs.push((
                "data".into(),
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set".into(),
            ));
        }
        Some(Builtin::Namespace) => {
            new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
        }
        Some(Builtin::Job) => {
            for f in ["selector", "completions", "completionMode"] {
                if old.pointer(&format!("/spec/{f}")) != new.pointer(&format!("/spec/{f}")) {
                    errs.push((
                        format!("spec.{f}"),
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {}: field is immutable",
                            new.pointer(&format!("/spec/{f}"))
                                .cloned()
                                .unwrap_or(Value::Null)
                        ),
                    ));
                }
            }
            let suspended = old.pointer("/spec/suspend") == Some(&json!(true));
            if !suspended && old.pointer("/spec/template") != new.pointer("/spec/template") {
                errs.push((
                    "spec.template".into(),
                    "FieldValueInvalid",
                    "Invalid value: \"object\": field is immutable".into(),
                ));
            }
        }
        Some(Builtin::Pod) => {
            // Only container images, activeDeadlineSeconds and tolerations may change.
            let strip = |v: &Value| {
                let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                for key in ["containers", "initContainers"] {
                    if let Some(Value::Array(cs)) = s.get_mut(key) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = s.as_object_mut() {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                }
                s
            };
            if strip(old) != strip(new) {
                errs.push(("spec".into(), "FieldValueForbidden", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into()));
            }
        }
        Some(Builtin::RoleBinding) => {
            crate::auth::escalation::default_subjects(new);
            errs.extend(crate::auth::escalation::validate_binding_update(old, new));
        }
        Some(Builtin::Crd) => errs.extend(crate::crds::prepare_update(old, new)),
        _ => errs.extend(crate::workloads::prepare_update(rd, old, new)),
    }
    errs
}

/// Validation of built-in kinds beyond names.
pub fn validate(rd: &ResourceDef, obj: &Value) -> Vec<(String, &'static str, String)> {
    let mut errs = Vec::new();
    match rd.builtin {
        Some(Builtin::Pod) => {
            container_errors(obj.get("spec").unwrap_or(&Value::Null), "spec", &mut errs);
        }
        Some(Builtin::Job) => {
            let ps = obj.pointer("/spec/template/spec").unwrap_or(&Value::Null);
            container_errors(ps, "spec.template.spec", &mut errs);
            match ps.get("restartPolicy").and_then(Value::as_str) {
                Some("Never" | "OnFailure") => {}
                other => errs.push((
                    "spec.template.spec.restartPolicy".into(),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: {}: supported values: \"OnFailure\", \"Never\"",
                        Value::String(other.unwrap_or_default().to_string())
                    ),
                )),
            }
        }
        Some(Builtin::PersistentVolumeClaim) => {
            let modes = obj.pointer("/spec/accessModes").and_then(Value::as_array);
            if modes.is_none_or(|m| m.is_empty()) {
                errs.push((
                    "spec.accessModes".into(),
                    "FieldValueRequired",
                    "Required value: at least 1 access mode is required".into(),
                ));
            }
            if obj.pointer("/spec/resources/requests/storage").is_none() {
                errs.push((
                    "spec.resources[storage]".into(),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
        Some(Builtin::Secret) => {
            if let Some(Value::Object(data)) = obj.get("data") {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|s| {
                        base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                    });
                    if !ok {
                        errs.push((
                            format!("data[{k}]"),
                            "FieldValueInvalid",
                            "Invalid value: \"<secret contents redacted>\": illegal base64 data"
                                .into(),
                        ));
                    }
                }
            }
        }
        Some(Builtin::Role) => {
            errs.extend(crate::auth::escalation::validate_role(obj, rd.namespaced))
        }
        Some(Builtin::RoleBinding) => errs.extend(crate::auth::escalation::validate_binding(
            obj,
            rd.namespaced,
        )),
        Some(Builtin::Crd) => errs.extend(crate::crds::validate(obj)),
        _ => errs.extend(crate::workloads::validate(rd, obj)),
    }
    errs
}

/// Moves Secret `stringData` into `data` (base64), as the apiserver does on write.
fn fold_string_data(obj: &mut Value) {
    let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let data = obj
        .as_object_mut()
        .expect("object")
        .entry("data")
        .or_insert(Value::Object(Map::new()));
    if let Some(dm) = data.as_object_mut() {
        for (k, v) in sd {
            let s = v.as_str().unwrap_or_default();
            dm.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// events.k8s.io/v1 Event → core/v1 Event (the storage form).
pub fn event_v1_to_core(v: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let nk = EVENT_RENAMES
                .iter()
                .find(|(a, _)| a == k)
                .map(|(_, b)| *b)
                .unwrap_or(k.as_str());
            out.insert(nk.to_string(), val.clone());
        }
    }
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn event_core_to_v1(v: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let nk = EVENT_RENAMES
                .iter()
                .find(|(_, b)| b == k)
                .map(|(a, _)| *a)
                .unwrap_or(k.as_str());
            out.insert(nk.to_string(), val.clone());
        }
    }
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

pub(crate) fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Option<Value> {
    let typed: T = serde_json::from_value(v.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// Collects (and removes from `orig`) the fields the typed round trip dropped.
fn diff_unknown(orig: &mut Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, typed) {
        (Value::Object(om), Value::Object(tm)) => {
            let keys: Vec<String> = om.keys().cloned().collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match tm.get(&k) {
                    None => {
                        if !om[&k].is_null() {
                            out.push(p);
                        }
                        om.remove(&k);
                    }
                    Some(t) => diff_unknown(om.get_mut(&k).expect("key"), t, &p, out),
                }
            }
        }
        (Value::Array(oa), Value::Array(ta)) if oa.len() == ta.len() => {
            for (i, (o, t)) in oa.iter_mut().zip(ta).enumerate() {
                diff_unknown(o, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Drops fields a built-in kind does not have (as decoding into the Go types does) and returns
/// their paths, for `fieldValidation` (Strict → 400, Warn → warning). A body that does not
/// decode into the kind's type is left alone (its validation reports the problem).
pub fn prune_unknown(rd: &ResourceDef, obj: &mut Value) -> Vec<String> {
    use k8s_openapi::api as k;
    let typed = match rd.builtin {
        Some(Builtin::Namespace) => roundtrip::<k::core::v1::Namespace>(obj),
        Some(Builtin::Secret) => roundtrip::<k::core::v1::Secret>(obj),
        Some(Builtin::ConfigMap) => roundtrip::<k::core::v1::ConfigMap>(obj),
        Some(Builtin::ServiceAccount) => roundtrip::<k::core::v1::ServiceAccount>(obj),
        Some(Builtin::Pod) => roundtrip::<k::core::v1::Pod>(obj),
        Some(Builtin::PersistentVolumeClaim) => {
            roundtrip::<k::core::v1::PersistentVolumeClaim>(obj)
        }
        Some(Builtin::CoreEvent) | Some(Builtin::EventV1) => roundtrip::<k::core::v1::Event>(obj),
        Some(Builtin::Lease) => roundtrip::<k::coordination::v1::Lease>(obj),
        Some(Builtin::Job) => roundtrip::<k::batch::v1::Job>(obj),
        Some(Builtin::Role) if rd.namespaced => roundtrip::<k::rbac::v1::Role>(obj),
        Some(Builtin::Role) => roundtrip::<k::rbac::v1::ClusterRole>(obj),
        Some(Builtin::RoleBinding) if rd.namespaced => roundtrip::<k::rbac::v1::RoleBinding>(obj),
        Some(Builtin::RoleBinding) => roundtrip::<k::rbac::v1::ClusterRoleBinding>(obj),
        Some(Builtin::Crd) => roundtrip::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(obj),
        Some(Builtin::Review) | None => None,
        Some(other) => crate::workloads::typed_roundtrip(other, obj),
    };
    let mut out = Vec::new();
    if let Some(t) = typed {
        diff_unknown(obj, &t, "", &mut out);
    }
    out
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Validates a label or annotation key (`[prefix/]name`), returning the apiserver's messages.
fn key_errors(key: &str) -> Vec<String> {
    const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let mut out = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            out.push("name part must be no more than 63 characters".to_string());
        }
        if !is_qualified_name_part(name) {
            out.push(NAME_MSG.to_string());
        }
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            out.push("prefix part must be non-empty".to_string());
        } else if !is_subdomain(p) {
            out.push(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
        }
    }
    out
}

/// `metadata.labels` and `metadata.annotations` validation (all kinds).
pub fn metadata_errors(obj: &Value) -> Vec<(String, &'static str, String)> {
    const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    let mut errs = Vec::new();
    let quote = |s: &str| Value::String(s.to_string()).to_string();
    if let Some(Value::Object(labels)) = obj.pointer("/metadata/labels") {
        for (k, v) in labels {
            for m in key_errors(k) {
                errs.push((
                    "metadata.labels".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {}: {m}", quote(k)),
                ));
            }
            let v = v.as_str().unwrap_or_default();
            if v.len() > 63 {
                errs.push((
                    "metadata.labels".into(),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: must be no more than 63 characters",
                        quote(v)
                    ),
                ));
            }
            if !v.is_empty() && !is_qualified_name_part(v) {
                errs.push((
                    "metadata.labels".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {}: {VALUE_MSG}", quote(v)),
                ));
            }
        }
    }
    if let Some(Value::Object(ann)) = obj.pointer("/metadata/annotations") {
        let mut total = 0;
        for (k, v) in ann {
            for m in key_errors(&k.to_lowercase()) {
                errs.push((
                    "metadata.annotations".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {}: {m}", quote(k)),
                ));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push((
                "metadata.annotations".into(),
                "FieldValueTooLong",
                "Too long: must have at most 262144 bytes".into(),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules() {
        let ok = json!({"metadata": {"labels": {"app.kubernetes.io/name": "db", "x": "", "a_b": "A.b-c"}}});
        assert!(metadata_errors(&ok).is_empty());
        let long = "a".repeat(64);
        let bad = json!({"metadata": {"labels": {"x": long, "bad key": "v", "Ex.com/y": "v", "z": "-v"}}});
        let errs = metadata_errors(&bad);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.2.contains("must be no more than 63 characters"))
        );
    }
}
