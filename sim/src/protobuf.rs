//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0`
//! envelope around a `runtime.Unknown`, decoded with the `k8s-pb` types and converted to JSON
//! for the kinds kubectl's generator commands create (`create namespace|configmap|secret
//! generic|job|serviceaccount|deployment|service`, `expose`). Fields outside the converted subset are refused with 415 rather than
//! silently dropped.

use base64::Engine as _;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::{Builtin, ResourceDef};

const MAGIC: &[u8] = b"k8s\0";

pub(crate) fn unsupported(what: &str) -> ApiError {
    ApiError::unsupported_media_type(format!(
        "kube-sim decodes protobuf bodies only for the fields kubectl's generators set; {what} must be sent as JSON"
    ))
}

pub(crate) fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("error decoding protobuf body: {e}"))
}

pub(crate) fn put_str(m: &mut Map<String, Value>, k: &str, v: &mut Option<String>) {
    if let Some(s) = v.take().filter(|s| !s.is_empty()) {
        m.insert(k.into(), json!(s));
    }
}

pub(crate) fn put_map(
    m: &mut Map<String, Value>,
    k: &str,
    v: &mut std::collections::BTreeMap<String, String>,
) {
    if !v.is_empty() {
        m.insert(k.into(), json!(std::mem::take(v)));
    }
}

pub(crate) fn put_list(m: &mut Map<String, Value>, k: &str, v: &mut Vec<String>) {
    if !v.is_empty() {
        m.insert(k.into(), json!(std::mem::take(v)));
    }
}

/// Whether protobuf wire bytes hold only zero values (Go's generated code always writes
/// non-pointer scalars, so "unset" arrives as `""`, `0` or `false`).
fn is_zero_wire(mut b: &[u8]) -> bool {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else {
            return false;
        };
        match key & 7 {
            0 => {
                if varint(&mut b) != Some(0) {
                    return false;
                }
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                if b.len() < n || b[..n].iter().any(|x| *x != 0) {
                    return false;
                }
                b = &b[n..];
            }
            2 => {
                let Some(len) = varint(&mut b) else {
                    return false;
                };
                let len = len as usize;
                if b.len() < len || (len > 0 && !is_zero_wire(&b[..len])) {
                    return false;
                }
                b = &b[len..];
            }
            _ => return false,
        }
    }
    true
}

pub(crate) fn check_empty<T: Message>(rest: &T, what: &str) -> Result<(), ApiError> {
    if is_zero_wire(&rest.encode_to_vec()) {
        Ok(())
    } else {
        Err(unsupported(what))
    }
}

pub(crate) fn object_meta(md: Option<meta::ObjectMeta>) -> Result<Value, ApiError> {
    let mut md = md.unwrap_or_default();
    let mut m = Map::new();
    put_str(&mut m, "name", &mut md.name);
    put_str(&mut m, "generateName", &mut md.generate_name);
    put_str(&mut m, "namespace", &mut md.namespace);
    put_str(&mut m, "resourceVersion", &mut md.resource_version);
    put_map(&mut m, "labels", &mut md.labels);
    put_map(&mut m, "annotations", &mut md.annotations);
    put_list(&mut m, "finalizers", &mut md.finalizers);
    if !md.owner_references.is_empty() {
        let refs: Vec<Value> = std::mem::take(&mut md.owner_references)
            .into_iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert(
                    "apiVersion".into(),
                    json!(r.api_version.unwrap_or_default()),
                );
                o.insert("kind".into(), json!(r.kind.unwrap_or_default()));
                o.insert("name".into(), json!(r.name.unwrap_or_default()));
                o.insert("uid".into(), json!(r.uid.unwrap_or_default()));
                if let Some(c) = r.controller {
                    o.insert("controller".into(), json!(c));
                }
                if let Some(b) = r.block_owner_deletion {
                    o.insert("blockOwnerDeletion".into(), json!(b));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("ownerReferences".into(), json!(refs));
    }
    // Server-set fields a client may echo back are ignored by the server anyway.
    md.uid = None;
    md.self_link = None;
    md.generation = None;
    md.creation_timestamp = None;
    md.managed_fields.clear();
    check_empty(
        &md,
        "metadata beyond name, generateName, namespace, labels, annotations, finalizers and ownerReferences",
    )?;
    Ok(Value::Object(m))
}

fn resources(r: Option<core::ResourceRequirements>) -> Result<Value, ApiError> {
    let mut r = r.unwrap_or_default();
    let mut m = Map::new();
    for (k, map) in [("limits", &mut r.limits), ("requests", &mut r.requests)] {
        if !map.is_empty() {
            let q: Map<String, Value> = std::mem::take(map)
                .into_iter()
                .map(|(k, v)| (k, json!(v.string.unwrap_or_default())))
                .collect();
            m.insert(k.into(), Value::Object(q));
        }
    }
    check_empty(&r, "container resources beyond limits and requests")?;
    Ok(Value::Object(m))
}

fn container(mut c: core::Container) -> Result<Value, ApiError> {
    let mut m = Map::new();
    put_str(&mut m, "name", &mut c.name);
    put_str(&mut m, "image", &mut c.image);
    put_list(&mut m, "command", &mut c.command);
    put_list(&mut m, "args", &mut c.args);
    put_str(&mut m, "workingDir", &mut c.working_dir);
    put_str(
        &mut m,
        "terminationMessagePath",
        &mut c.termination_message_path,
    );
    put_str(
        &mut m,
        "terminationMessagePolicy",
        &mut c.termination_message_policy,
    );
    put_str(&mut m, "imagePullPolicy", &mut c.image_pull_policy);
    put_str(&mut m, "restartPolicy", &mut c.restart_policy);
    if !c.env.is_empty() {
        let mut env = Vec::new();
        for mut e in std::mem::take(&mut c.env) {
            let mut em = Map::new();
            put_str(&mut em, "name", &mut e.name);
            put_str(&mut em, "value", &mut e.value);
            check_empty(&e, "env valueFrom")?;
            env.push(Value::Object(em));
        }
        m.insert("env".into(), json!(env));
    }
    if !c.ports.is_empty() {
        let mut ports = Vec::new();
        for mut p in std::mem::take(&mut c.ports) {
            let mut pm = Map::new();
            put_str(&mut pm, "name", &mut p.name);
            if let Some(n) = p.container_port.take() {
                pm.insert("containerPort".into(), json!(n));
            }
            put_str(&mut pm, "protocol", &mut p.protocol);
            check_empty(
                &p,
                "container port fields beyond name, containerPort and protocol",
            )?;
            ports.push(Value::Object(pm));
        }
        m.insert("ports".into(), json!(ports));
    }
    let res = c.resources.take();
    m.insert("resources".into(), resources(res)?);
    check_empty(
        &c,
        "container fields beyond name, image, command, args, workingDir, env values, ports and resources",
    )?;
    Ok(Value::Object(m))
}

fn pod_template(t: Option<core::PodTemplateSpec>) -> Result<Value, ApiError> {
    let mut t = t.unwrap_or_default();
    let mut out = Map::new();
    out.insert("metadata".into(), object_meta(t.metadata.take())?);
    let mut s = t.spec.take().unwrap_or_default();
    let mut sm = Map::new();
    for (k, list) in [
        ("containers", &mut s.containers),
        ("initContainers", &mut s.init_containers),
    ] {
        if !list.is_empty() {
            let cs = std::mem::take(list)
                .into_iter()
                .map(container)
                .collect::<Result<Vec<_>, _>>()?;
            sm.insert(k.into(), json!(cs));
        }
    }
    put_str(&mut sm, "restartPolicy", &mut s.restart_policy);
    put_str(&mut sm, "serviceAccountName", &mut s.service_account_name);
    put_str(&mut sm, "dnsPolicy", &mut s.dns_policy);
    put_str(&mut sm, "schedulerName", &mut s.scheduler_name);
    put_map(&mut sm, "nodeSelector", &mut s.node_selector);
    if let Some(g) = s.termination_grace_period_seconds.take() {
        sm.insert("terminationGracePeriodSeconds".into(), json!(g));
    }
    if let Some(sc) = s.security_context.take() {
        check_empty(&sc, "pod securityContext")?;
        sm.insert("securityContext".into(), json!({}));
    }
    check_empty(
        &s,
        "pod spec fields beyond containers, restartPolicy and serviceAccountName",
    )?;
    out.insert("spec".into(), Value::Object(sm));
    Ok(Value::Object(out))
}

fn job(mut j: batch::Job) -> Result<Value, ApiError> {
    let mut out = Map::new();
    out.insert("metadata".into(), object_meta(j.metadata.take())?);
    let mut s = j.spec.take().unwrap_or_default();
    let mut sm = Map::new();
    for (k, v) in [
        ("parallelism", s.parallelism.take()),
        ("completions", s.completions.take()),
        ("backoffLimit", s.backoff_limit.take()),
        (
            "ttlSecondsAfterFinished",
            s.ttl_seconds_after_finished.take(),
        ),
    ] {
        if let Some(v) = v {
            sm.insert(k.into(), json!(v));
        }
    }
    if let Some(a) = s.active_deadline_seconds.take() {
        sm.insert("activeDeadlineSeconds".into(), json!(a));
    }
    if let Some(b) = s.suspend.take() {
        sm.insert("suspend".into(), json!(b));
    }
    put_str(&mut sm, "completionMode", &mut s.completion_mode);
    sm.insert("template".into(), pod_template(s.template.take())?);
    check_empty(
        &s,
        "job spec fields beyond parallelism, completions, backoffLimit, activeDeadlineSeconds, suspend and template",
    )?;
    out.insert("spec".into(), Value::Object(sm));
    if let Some(st) = j.status.take() {
        check_empty(&st, "job status")?;
    }
    Ok(Value::Object(out))
}

fn match_labels(sel: Option<meta::LabelSelector>) -> Result<Option<Value>, ApiError> {
    let Some(mut sel) = sel else { return Ok(None) };
    let mut m = Map::new();
    put_map(&mut m, "matchLabels", &mut sel.match_labels);
    check_empty(&sel, "label selector expressions")?;
    Ok(Some(Value::Object(m)))
}

/// `kubectl create deployment`.
fn deployment(mut d: apps::Deployment) -> Result<Value, ApiError> {
    let mut out = Map::new();
    out.insert("metadata".into(), object_meta(d.metadata.take())?);
    let mut s = d.spec.take().unwrap_or_default();
    let mut sm = Map::new();
    for (k, v) in [
        ("replicas", s.replicas.take()),
        ("minReadySeconds", s.min_ready_seconds.take()),
        ("revisionHistoryLimit", s.revision_history_limit.take()),
        (
            "progressDeadlineSeconds",
            s.progress_deadline_seconds.take(),
        ),
    ] {
        if let Some(v) = v {
            sm.insert(k.into(), json!(v));
        }
    }
    if let Some(p) = s.paused.take() {
        sm.insert("paused".into(), json!(p));
    }
    if let Some(sel) = match_labels(s.selector.take())? {
        sm.insert("selector".into(), sel);
    }
    if let Some(mut st) = s.strategy.take() {
        let mut stm = Map::new();
        put_str(&mut stm, "type", &mut st.r#type);
        check_empty(&st, "deployment strategy rollingUpdate")?;
        sm.insert("strategy".into(), Value::Object(stm));
    }
    sm.insert("template".into(), pod_template(s.template.take())?);
    check_empty(
        &s,
        "deployment spec fields beyond replicas, selector, template, strategy type and counts",
    )?;
    out.insert("spec".into(), Value::Object(sm));
    if let Some(st) = d.status.take() {
        check_empty(&st, "deployment status")?;
    }
    Ok(Value::Object(out))
}

/// `kubectl create service` / `kubectl expose`.
fn service(mut svc: core::Service) -> Result<Value, ApiError> {
    let mut out = Map::new();
    out.insert("metadata".into(), object_meta(svc.metadata.take())?);
    let mut s = svc.spec.take().unwrap_or_default();
    let mut sm = Map::new();
    if !s.ports.is_empty() {
        let mut ports = Vec::new();
        for mut p in std::mem::take(&mut s.ports) {
            let mut pm = Map::new();
            put_str(&mut pm, "name", &mut p.name);
            put_str(&mut pm, "protocol", &mut p.protocol);
            if let Some(n) = p.port.take() {
                pm.insert("port".into(), json!(n));
            }
            if let Some(n) = p.node_port.take().filter(|n| *n != 0) {
                pm.insert("nodePort".into(), json!(n));
            }
            if let Some(mut t) = p.target_port.take() {
                match t.r#type.take() {
                    Some(1) => {
                        pm.insert(
                            "targetPort".into(),
                            json!(t.str_val.take().unwrap_or_default()),
                        );
                    }
                    _ => {
                        pm.insert("targetPort".into(), json!(t.int_val.take().unwrap_or(0)));
                    }
                }
                t.int_val = None;
                check_empty(&t, "targetPort")?;
            }
            check_empty(
                &p,
                "service port fields beyond name, protocol, port, targetPort and nodePort",
            )?;
            ports.push(Value::Object(pm));
        }
        sm.insert("ports".into(), json!(ports));
    }
    put_map(&mut sm, "selector", &mut s.selector);
    put_str(&mut sm, "clusterIP", &mut s.cluster_ip);
    put_str(&mut sm, "type", &mut s.r#type);
    put_str(&mut sm, "externalName", &mut s.external_name);
    put_str(&mut sm, "sessionAffinity", &mut s.session_affinity);
    put_list(&mut sm, "externalIPs", &mut s.external_ips);
    check_empty(
        &s,
        "service spec fields beyond ports, selector, clusterIP, type, externalName, sessionAffinity and externalIPs",
    )?;
    out.insert("spec".into(), Value::Object(sm));
    if let Some(st) = svc.status.take() {
        check_empty(&st, "service status")?;
    }
    Ok(Value::Object(out))
}

/// The kind and raw object bytes of a `k8s\0` + `runtime.Unknown` envelope.
pub(crate) fn unwrap_envelope(body: &[u8]) -> Result<(String, Vec<u8>), ApiError> {
    let raw = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 envelope"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(raw).map_err(bad)?;
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(bad("content encodings are not supported"));
    }
    let tm = unknown.type_meta.unwrap_or_default();
    Ok((tm.kind.unwrap_or_default(), unknown.raw.unwrap_or_default()))
}

/// Decodes a protobuf request body for `rd` into its JSON form.
pub fn decode(rd: &ResourceDef, body: &[u8]) -> Result<Value, ApiError> {
    let (kind, inner) = unwrap_envelope(body)?;
    if kind != rd.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rd.kind
        )));
    }
    let mut v = match rd.builtin {
        Some(Builtin::Namespace) => {
            let mut n = core::Namespace::decode(inner.as_slice()).map_err(bad)?;
            let mut out = Map::new();
            out.insert("metadata".into(), object_meta(n.metadata.take())?);
            if let Some(mut spec) = n.spec.take() {
                let mut sm = Map::new();
                put_list(&mut sm, "finalizers", &mut spec.finalizers);
                out.insert("spec".into(), Value::Object(sm));
            }
            n.status = None;
            check_empty(&n, "namespace fields")?;
            Value::Object(out)
        }
        Some(Builtin::ConfigMap) => {
            let mut c = core::ConfigMap::decode(inner.as_slice()).map_err(bad)?;
            let mut out = Map::new();
            out.insert("metadata".into(), object_meta(c.metadata.take())?);
            put_map(&mut out, "data", &mut c.data);
            if !c.binary_data.is_empty() {
                let b: Map<String, Value> = std::mem::take(&mut c.binary_data)
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(v)),
                        )
                    })
                    .collect();
                out.insert("binaryData".into(), Value::Object(b));
            }
            if let Some(i) = c.immutable.take() {
                out.insert("immutable".into(), json!(i));
            }
            check_empty(&c, "configmap fields")?;
            Value::Object(out)
        }
        Some(Builtin::Secret) => {
            let mut s = core::Secret::decode(inner.as_slice()).map_err(bad)?;
            let mut out = Map::new();
            out.insert("metadata".into(), object_meta(s.metadata.take())?);
            if !s.data.is_empty() {
                let b: Map<String, Value> = std::mem::take(&mut s.data)
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(v)),
                        )
                    })
                    .collect();
                out.insert("data".into(), Value::Object(b));
            }
            put_map(&mut out, "stringData", &mut s.string_data);
            put_str(&mut out, "type", &mut s.r#type);
            if let Some(i) = s.immutable.take() {
                out.insert("immutable".into(), json!(i));
            }
            check_empty(&s, "secret fields")?;
            Value::Object(out)
        }
        Some(Builtin::ServiceAccount) => {
            let mut sa = core::ServiceAccount::decode(inner.as_slice()).map_err(bad)?;
            let mut out = Map::new();
            out.insert("metadata".into(), object_meta(sa.metadata.take())?);
            if !sa.image_pull_secrets.is_empty() {
                let refs: Vec<Value> = std::mem::take(&mut sa.image_pull_secrets)
                    .into_iter()
                    .map(|r| json!({"name": r.name.unwrap_or_default()}))
                    .collect();
                out.insert("imagePullSecrets".into(), json!(refs));
            }
            if let Some(a) = sa.automount_service_account_token.take() {
                out.insert("automountServiceAccountToken".into(), json!(a));
            }
            check_empty(
                &sa,
                "serviceaccount fields beyond imagePullSecrets and automountServiceAccountToken",
            )?;
            Value::Object(out)
        }
        Some(Builtin::Job) => job(batch::Job::decode(inner.as_slice()).map_err(bad)?)?,
        Some(Builtin::Role | Builtin::RoleBinding | Builtin::Review) => {
            crate::auth::protobuf::decode(&rd.kind, &inner)?
        }
        Some(Builtin::Deployment) => {
            deployment(apps::Deployment::decode(inner.as_slice()).map_err(bad)?)?
        }
        Some(Builtin::Service) => service(core::Service::decode(inner.as_slice()).map_err(bad)?)?,
        _ => return Err(unsupported(&format!("{} objects", rd.kind))),
    };
    v["apiVersion"] = json!(rd.api_version());
    v["kind"] = json!(rd.kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn envelope(kind: &str, api_version: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn decodes_a_secret_and_refuses_unconverted_fields() {
        let reg = Registry::builtins();
        let rd = reg.find("", "v1", "secrets").unwrap();
        let s = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("creds".into()),
                ..Default::default()
            }),
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = decode(rd, &envelope("Secret", "v1", s.encode_to_vec())).unwrap();
        assert_eq!(v["data"]["password"], json!("aHVudGVyMg=="));
        assert_eq!(v["metadata"]["name"], json!("creds"));

        let md = meta::ObjectMeta {
            name: Some("x".into()),
            deletion_grace_period_seconds: Some(3),
            ..Default::default()
        };
        let s = core::Secret {
            metadata: Some(md),
            ..Default::default()
        };
        let err = decode(rd, &envelope("Secret", "v1", s.encode_to_vec())).unwrap_err();
        assert_eq!(err.code, 415);
    }
}
