//! Protobuf request bodies of the RBAC, review and TokenRequest kinds (kubectl sends its
//! generated objects as `application/vnd.kubernetes.protobuf`: `create role|clusterrole|
//! rolebinding|clusterrolebinding`, `create token`, `auth can-i`, `auth whoami`), converted
//! to JSON like the other kinds in [`crate::protobuf`]: every field is converted or refused.

use std::collections::BTreeMap;

use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::protobuf::{bad, check_empty, object_meta, put_list, put_str, unsupported};

fn rules(rs: Vec<rbac::PolicyRule>) -> Value {
    let v: Vec<Value> = rs
        .into_iter()
        .map(|mut r| {
            let mut m = Map::new();
            put_list(&mut m, "verbs", &mut r.verbs);
            put_list(&mut m, "apiGroups", &mut r.api_groups);
            put_list(&mut m, "resources", &mut r.resources);
            put_list(&mut m, "resourceNames", &mut r.resource_names);
            put_list(&mut m, "nonResourceURLs", &mut r.non_resource_ur_ls);
            Value::Object(m)
        })
        .collect();
    json!(v)
}

fn label_selector(mut s: meta::LabelSelector) -> Value {
    let mut m = Map::new();
    if !s.match_labels.is_empty() {
        m.insert(
            "matchLabels".into(),
            json!(std::mem::take(&mut s.match_labels)),
        );
    }
    if !s.match_expressions.is_empty() {
        let exprs: Vec<Value> = s
            .match_expressions
            .into_iter()
            .map(|e| {
                json!({
                    "key": e.key.unwrap_or_default(),
                    "operator": e.operator.unwrap_or_default(),
                    "values": e.values,
                })
            })
            .collect();
        m.insert("matchExpressions".into(), json!(exprs));
    }
    Value::Object(m)
}

fn subjects(ss: Vec<rbac::Subject>) -> Value {
    let v: Vec<Value> = ss
        .into_iter()
        .map(|mut s| {
            let mut m = Map::new();
            put_str(&mut m, "kind", &mut s.kind);
            if let Some(g) = s.api_group.take() {
                m.insert("apiGroup".into(), json!(g));
            }
            put_str(&mut m, "name", &mut s.name);
            put_str(&mut m, "namespace", &mut s.namespace);
            Value::Object(m)
        })
        .collect();
    json!(v)
}

fn role_ref(r: Option<rbac::RoleRef>) -> Value {
    let r = r.unwrap_or_default();
    json!({
        "apiGroup": r.api_group.unwrap_or_default(),
        "kind": r.kind.unwrap_or_default(),
        "name": r.name.unwrap_or_default(),
    })
}

fn resource_attributes(a: Option<authz::ResourceAttributes>) -> Result<Option<Value>, ApiError> {
    let Some(mut a) = a else { return Ok(None) };
    let mut m = Map::new();
    for (k, v) in [
        ("namespace", &mut a.namespace),
        ("verb", &mut a.verb),
        ("group", &mut a.group),
        ("version", &mut a.version),
        ("resource", &mut a.resource),
        ("subresource", &mut a.subresource),
        ("name", &mut a.name),
    ] {
        put_str(&mut m, k, v);
    }
    check_empty(&a, "field and label selectors of resourceAttributes")?;
    Ok(Some(Value::Object(m)))
}

fn non_resource_attributes(a: Option<authz::NonResourceAttributes>) -> Option<Value> {
    let mut a = a?;
    let mut m = Map::new();
    put_str(&mut m, "path", &mut a.path);
    put_str(&mut m, "verb", &mut a.verb);
    Some(Value::Object(m))
}

fn sar_spec(
    ra: Option<authz::ResourceAttributes>,
    nra: Option<authz::NonResourceAttributes>,
) -> Result<Map<String, Value>, ApiError> {
    let mut spec = Map::new();
    if let Some(r) = resource_attributes(ra)? {
        spec.insert("resourceAttributes".into(), r);
    }
    if let Some(n) = non_resource_attributes(nra) {
        spec.insert("nonResourceAttributes".into(), n);
    }
    Ok(spec)
}

fn extra(e: BTreeMap<String, authz::ExtraValue>) -> Value {
    json!(
        e.into_iter()
            .map(|(k, v)| (k, v.items))
            .collect::<BTreeMap<_, _>>()
    )
}

/// Decodes the protobuf `raw` bytes of a `kind` object into JSON (`apiVersion`/`kind` are set
/// by the caller).
pub fn decode(kind: &str, raw: &[u8]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    match kind {
        "Role" => {
            let mut r = rbac::Role::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
            out.insert("rules".into(), rules(std::mem::take(&mut r.rules)));
        }
        "ClusterRole" => {
            let mut r = rbac::ClusterRole::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
            out.insert("rules".into(), rules(std::mem::take(&mut r.rules)));
            if let Some(a) = r.aggregation_rule.take() {
                let sels: Vec<Value> = a
                    .cluster_role_selectors
                    .into_iter()
                    .map(label_selector)
                    .collect();
                out.insert(
                    "aggregationRule".into(),
                    json!({"clusterRoleSelectors": sels}),
                );
            }
        }
        "RoleBinding" => {
            let mut b = rbac::RoleBinding::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(b.metadata.take())?);
            out.insert("subjects".into(), subjects(std::mem::take(&mut b.subjects)));
            out.insert("roleRef".into(), role_ref(b.role_ref.take()));
        }
        "ClusterRoleBinding" => {
            let mut b = rbac::ClusterRoleBinding::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(b.metadata.take())?);
            out.insert("subjects".into(), subjects(std::mem::take(&mut b.subjects)));
            out.insert("roleRef".into(), role_ref(b.role_ref.take()));
        }
        "SelfSubjectAccessReview" => {
            let mut r = authz::SelfSubjectAccessReview::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
            let spec = r.spec.take().unwrap_or_default();
            out.insert(
                "spec".into(),
                Value::Object(sar_spec(
                    spec.resource_attributes,
                    spec.non_resource_attributes,
                )?),
            );
            r.status = None;
            check_empty(&r, "SelfSubjectAccessReview fields")?;
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let (md, spec) = if kind == "SubjectAccessReview" {
                let r = authz::SubjectAccessReview::decode(raw).map_err(bad)?;
                (r.metadata, r.spec)
            } else {
                let r = authz::LocalSubjectAccessReview::decode(raw).map_err(bad)?;
                (r.metadata, r.spec)
            };
            out.insert("metadata".into(), object_meta(md)?);
            let mut spec = spec.unwrap_or_default();
            let mut m = sar_spec(
                spec.resource_attributes.take(),
                spec.non_resource_attributes.take(),
            )?;
            put_str(&mut m, "user", &mut spec.user);
            put_list(&mut m, "groups", &mut spec.groups);
            put_str(&mut m, "uid", &mut spec.uid);
            if !spec.extra.is_empty() {
                m.insert("extra".into(), extra(std::mem::take(&mut spec.extra)));
            }
            out.insert("spec".into(), Value::Object(m));
        }
        "SelfSubjectRulesReview" => {
            let mut r = authz::SelfSubjectRulesReview::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
            let mut spec = r.spec.take().unwrap_or_default();
            let mut m = Map::new();
            put_str(&mut m, "namespace", &mut spec.namespace);
            out.insert("spec".into(), Value::Object(m));
        }
        "SelfSubjectReview" => {
            let mut r = authn::SelfSubjectReview::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
        }
        "TokenReview" => {
            let mut r = authn::TokenReview::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
            let mut spec = r.spec.take().unwrap_or_default();
            let mut m = Map::new();
            put_str(&mut m, "token", &mut spec.token);
            put_list(&mut m, "audiences", &mut spec.audiences);
            out.insert("spec".into(), Value::Object(m));
        }
        "TokenRequest" => {
            let mut r = authn::TokenRequest::decode(raw).map_err(bad)?;
            out.insert("metadata".into(), object_meta(r.metadata.take())?);
            let mut spec = r.spec.take().unwrap_or_default();
            let mut m = Map::new();
            put_list(&mut m, "audiences", &mut spec.audiences);
            if let Some(e) = spec.expiration_seconds.take() {
                m.insert("expirationSeconds".into(), json!(e));
            }
            if let Some(mut b) = spec.bound_object_ref.take() {
                let mut bm = Map::new();
                put_str(&mut bm, "kind", &mut b.kind);
                put_str(&mut bm, "apiVersion", &mut b.api_version);
                put_str(&mut bm, "name", &mut b.name);
                put_str(&mut bm, "uid", &mut b.u_id);
                m.insert("boundObjectRef".into(), Value::Object(bm));
            }
            out.insert("spec".into(), Value::Object(m));
        }
        other => return Err(unsupported(&format!("{other} objects"))),
    }
    Ok(Value::Object(out))
}
