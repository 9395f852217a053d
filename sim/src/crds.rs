//! `apiextensions.k8s.io/v1` CustomResourceDefinitions as writable API objects, after
//! apiextensions-apiserver: defaulting and validation of the CRD itself, the status the
//! naming and establishing controllers write (`acceptedNames`, `storedVersions`, the
//! `NamesAccepted` and `Established` conditions), and the finalizer controller that deletes a
//! deleted CRD's custom resources before the CRD goes
//! (`customresourcecleanup.apiextensions.k8s.io`).
//!
//! The served resources follow the stored CRDs: every write of a CRD replaces the server's
//! [`crate::resources::Registry`] snapshot ([`crate::ops::State::crd_changed`]).

use serde_json::{Value, json};

use crate::ops::{Propagation, State, now};
use crate::resources::Registry;
use crate::schema::FieldErr;
use crate::store::{Inner, ObjKey};

/// The finalizer a deleted CRD carries until its custom resources are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The CRDs' API group.
pub const GROUP: &str = "apiextensions.k8s.io";

/// The CRDs' resource.
pub const RESOURCE: &str = "customresourcedefinitions";

/// The store key of CRD `name`.
pub fn key(name: &str) -> ObjKey {
    ObjKey {
        group: GROUP.into(),
        resource: RESOURCE.into(),
        namespace: String::new(),
        name: name.into(),
    }
}

fn condition<'a>(crd: &'a Value, type_: &str) -> Option<&'a Value> {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// Whether the CRD's `Established` condition is `True` (its resources are served).
pub fn is_established(crd: &Value) -> bool {
    condition(crd, "Established").and_then(|c| c.get("status")) == Some(&json!("True"))
}

/// Integral floating-point numbers as integers (`maximum: 100.0` is stored as `100`): the
/// apiserver decodes CRDs into Go types (`float64`, `interface{}`) and encodes them again, which
/// drops the fraction; without this, applying YAML that spells `100` over a CRD created from
/// YAML that spells `100.0` would look like a change.
pub fn normalize_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9_007_199_254_740_992.0
            {
                *v = json!(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_numbers),
        Value::Object(m) => m.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// `SetDefaults_CustomResourceDefinition` (v1): `names.singular`, `names.listKind`,
/// `conversion.strategy`; numbers normalized ([`normalize_numbers`]).
pub fn set_defaults(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        normalize_numbers(spec);
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut)
        && let Some(kind) = names
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string)
    {
        if names
            .get("singular")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            names.insert("singular".into(), json!(kind.to_lowercase()));
        }
        if names
            .get("listKind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            names.insert("listKind".into(), json!(format!("{kind}List")));
        }
    }
    let conv = spec.entry("conversion").or_insert(json!({}));
    if let Some(c) = conv.as_object_mut() {
        c.entry("strategy").or_insert(json!("None"));
    }
}

fn storage_version(obj: &Value) -> Option<String> {
    obj.pointer("/spec/versions")
        .and_then(Value::as_array)?
        .iter()
        .find(|v| v.get("storage") == Some(&json!(true)))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn set_condition(conds: &mut Vec<Value>, type_: &str, status: &str, reason: &str, msg: &str) {
    let now = now();
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(status) {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(msg);
        }
        None => conds.push(json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": msg,
            "lastTransitionTime": now,
        })),
    }
}

/// What the naming and establishing controllers write into a CRD's status: the accepted names
/// (the spec's), the storage version added to `storedVersions`, `NamesAccepted` and
/// `Established` true (kept as they were when nothing changed, so a no-op write stays one).
pub fn update_status(obj: &mut Value) {
    let mut status = obj.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    status["acceptedNames"] = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut stored: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = storage_version(obj)
        && !stored.iter().any(|s| s.as_str() == Some(&v))
    {
        stored.push(json!(v));
    }
    status["storedVersions"] = json!(stored);
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let first = !conds
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some("Established"));
    set_condition(
        &mut conds,
        "NamesAccepted",
        "True",
        "NoConflicts",
        "no conflicts found",
    );
    if first {
        set_condition(
            &mut conds,
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        );
    }
    status["conditions"] = json!(conds);
    obj["status"] = status;
}

/// Create-time preparation: defaults, the finalizer-free metadata, a fresh status.
pub fn prepare_create(obj: &mut Value) {
    set_defaults(obj);
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    update_status(obj);
}

/// Update-time preparation and immutability checks (`spec.scope`; group and plural are fixed
/// by the immutable name).
pub fn prepare_update(old: &Value, new: &mut Value) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    set_defaults(new);
    let old_scope = old.pointer("/spec/scope");
    let new_scope = new.pointer("/spec/scope");
    if old_scope.is_some() && new_scope != old_scope {
        errs.push((
            "spec.scope".into(),
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: field is immutable",
                new_scope.cloned().unwrap_or(json!(""))
            ),
        ));
    }
    if new.pointer("/metadata/deletionTimestamp").is_none() {
        update_status(new);
    }
    errs
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_kind(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn invalid(field: impl Into<String>, value: &Value, why: &str) -> FieldErr {
    (
        field.into(),
        "FieldValueInvalid",
        format!("Invalid value: {value}: {why}"),
    )
}

fn required(field: impl Into<String>) -> FieldErr {
    (field.into(), "FieldValueRequired", "Required value".into())
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// `ValidateCustomResourceDefinition`, to a useful degree: the name, group, names, scope, the
/// versions (names, exactly one storage version, a structural schema that compiles with its
/// CEL rules, printer columns), conversion and `preserveUnknownFields`.
pub fn validate(obj: &Value) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let name = s("/metadata/name");
    if group.is_empty() {
        errs.push(required("spec.group"));
    } else if !is_subdomain(group) || !group.contains('.') {
        errs.push(invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match obj.pointer("/spec/scope").and_then(Value::as_str) {
        Some("Cluster" | "Namespaced") => {}
        None | Some("") => errs.push(required("spec.scope")),
        Some(other) => errs.push((
            "spec.scope".into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: \"Cluster\", \"Namespaced\"",
                json!(other)
            ),
        )),
    }
    for (f, label) in [
        ("plural", true),
        ("singular", true),
        ("kind", false),
        ("listKind", false),
    ] {
        let v = s(&format!("/spec/names/{f}"));
        let field = format!("spec.names.{f}");
        if v.is_empty() {
            errs.push(required(field));
        } else if label && !is_dns_label(v) {
            errs.push(invalid(field, &json!(v), LABEL_MSG));
        } else if !label && !is_kind(v) {
            errs.push(invalid(
                field,
                &json!(v),
                "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
            ));
        }
    }
    for f in ["shortNames", "categories"] {
        if let Some(list) = obj
            .pointer(&format!("/spec/names/{f}"))
            .and_then(Value::as_array)
        {
            for (i, v) in list.iter().enumerate() {
                if !v.as_str().is_some_and(is_dns_label) {
                    errs.push(invalid(format!("spec.names.{f}[{i}]"), v, LABEL_MSG));
                }
            }
        }
    }
    if obj.pointer("/spec/preserveUnknownFields") == Some(&json!(true)) {
        errs.push(invalid(
            "spec.preserveUnknownFields",
            &json!(true),
            "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ));
    }
    match obj.pointer("/spec/conversion/strategy").and_then(Value::as_str) {
        None | Some("None") => {}
        Some(other) => errs.push((
            "spec.conversion.strategy".into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: \"None\" (kube-sim calls no conversion webhooks)",
                json!(other)
            ),
        )),
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(required("spec.versions"));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage") == Some(&json!(true)))
            .count();
        if storage != 1 {
            errs.push(invalid(
                "spec.versions",
                &Value::Array(versions.clone()),
                "must have exactly one version marked as storage version",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            let vf = format!("spec.versions[{i}]");
            let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
            if vname.is_empty() {
                errs.push(required(format!("{vf}.name")));
            } else if !is_dns_label(vname) || !vname.starts_with(|c: char| c.is_ascii_lowercase()) {
                errs.push(invalid(
                    format!("{vf}.name"),
                    &json!(vname),
                    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                ));
            } else if seen.contains(&vname) {
                errs.push((
                    format!("{vf}.name"),
                    "FieldValueDuplicate",
                    format!("Duplicate value: {}", json!(vname)),
                ));
            }
            seen.push(vname);
            for f in ["served", "storage"] {
                if !v.get(f).is_some_and(Value::is_boolean) {
                    errs.push(required(format!("{vf}.{f}")));
                }
            }
            match v.pointer("/schema/openAPIV3Schema") {
                None => errs.push((
                    format!("{vf}.schema.openAPIV3Schema"),
                    "FieldValueRequired",
                    "Required value: schemas are required".into(),
                )),
                Some(schema) => {
                    let sf = format!("{vf}.schema.openAPIV3Schema");
                    match schema.get("type").and_then(Value::as_str) {
                        Some("object") => {}
                        None => errs.push((
                            format!("{sf}.type"),
                            "FieldValueRequired",
                            "Required value: must not be empty at the root".into(),
                        )),
                        Some(t) => errs.push(invalid(
                            format!("{sf}.type"),
                            &json!(t),
                            "must be object at the root",
                        )),
                    }
                    if let Err(e) = crate::validation::SchemaValidator::new(schema) {
                        errs.push(invalid(sf, &json!(""), &e.to_string()));
                    }
                }
            }
            if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
                for (j, c) in cols.iter().enumerate() {
                    let cf = format!("{vf}.additionalPrinterColumns[{j}]");
                    for f in ["name", "type", "jsonPath"] {
                        if c.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                            errs.push(required(format!("{cf}.{f}")));
                        }
                    }
                    if let Some(t) = c.get("type").and_then(Value::as_str)
                        && !matches!(t, "integer" | "number" | "string" | "boolean" | "date")
                    {
                        errs.push((
                            format!("{cf}.type"),
                            "FieldValueNotSupported",
                            format!("Unsupported value: {}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"", json!(t)),
                        ));
                    }
                }
            }
            if let Some(sc) = v.pointer("/subresources/scale") {
                for f in ["specReplicasPath", "statusReplicasPath"] {
                    match sc.get(f).and_then(Value::as_str) {
                        None | Some("") => {
                            errs.push(required(format!("{vf}.subresources.scale.{f}")))
                        }
                        Some(p) if !p.starts_with(".spec.") && f == "specReplicasPath" => errs
                            .push(invalid(
                                format!("{vf}.subresources.scale.{f}"),
                                &json!(p),
                                "should be a json path under .spec",
                            )),
                        Some(p) if !p.starts_with(".status.") && f == "statusReplicasPath" => errs
                            .push(invalid(
                                format!("{vf}.subresources.scale.{f}"),
                                &json!(p),
                                "should be a json path under .status",
                            )),
                        Some(_) => {}
                    }
                }
            }
        }
        if !versions
            .iter()
            .any(|v| v.get("served") == Some(&json!(true)))
        {
            errs.push(invalid(
                "spec.versions",
                &Value::Array(versions.clone()),
                "must have at least one served version",
            ));
        }
    }
    if errs.is_empty()
        && let Err(e) = Registry::crd_defs(obj)
    {
        errs.push(invalid("spec.versions", &json!(""), &e));
    }
    errs
}

/// The Terminating condition and the cleanup finalizer a first delete puts on a CRD
/// (apiextensions-apiserver's `REST.Delete`).
pub fn mark_terminating(obj: &mut Value) {
    let mut fins: Vec<Value> = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !fins.iter().any(|f| f.as_str() == Some(CLEANUP_FINALIZER)) {
        fins.push(json!(CLEANUP_FINALIZER));
    }
    obj["metadata"]["finalizers"] = json!(fins);
    let mut conds: Vec<Value> = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    set_condition(
        &mut conds,
        "Terminating",
        "True",
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
    );
    obj["status"]["conditions"] = json!(conds);
}

/// The finalizer controller: for every CRD being deleted that carries
/// [`CLEANUP_FINALIZER`], deletes its custom resources (honouring their finalizers) and, once
/// none is left, removes the finalizer so the CRD goes. Returns whether anything changed.
pub fn cleanup_pass(state: &State, inner: &mut Inner) -> bool {
    let mut changed = false;
    let crds: Vec<(ObjKey, Value)> = inner
        .deleting
        .iter()
        .filter(|k| k.group == GROUP && k.resource == RESOURCE)
        .filter_map(|k| inner.objects.get(k).map(|o| (k.clone(), o.clone())))
        .collect();
    for (key, crd) in crds {
        let has_fin = crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|f| f.as_str() == Some(CLEANUP_FINALIZER)));
        if !has_fin {
            continue;
        }
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let objects: Vec<(ObjKey, bool)> = inner
            .list(&group, &plural, None)
            .map(|(k, o)| {
                (
                    k.clone(),
                    o.pointer("/metadata/deletionTimestamp").is_some(),
                )
            })
            .collect();
        if objects.is_empty() {
            let mut new = crd.clone();
            if let Some(Value::Array(a)) = new.pointer_mut("/metadata/finalizers") {
                a.retain(|f| f.as_str() != Some(CLEANUP_FINALIZER));
            }
            state.controller_update(inner, &key, new, "kube-apiserver");
            changed = true;
            continue;
        }
        let mut progressed = false;
        for (k, deleting) in objects {
            if !deleting {
                state.delete_key(inner, &k, Propagation::Background);
                progressed = true;
            }
        }
        if progressed {
            let mut new = crd.clone();
            let mut conds: Vec<Value> = new
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            set_condition(
                &mut conds,
                "Terminating",
                "True",
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            );
            new["status"]["conditions"] = json!(conds);
            if new != crd {
                state.controller_update(inner, &key, new, "kube-apiserver");
            }
            changed = true;
        }
    }
    changed
}
