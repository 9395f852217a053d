//! The create-only review APIs, answered from the request and never stored:
//! `authorization.k8s.io/v1` SelfSubjectAccessReview, SelfSubjectRulesReview,
//! SubjectAccessReview and LocalSubjectAccessReview; `authentication.k8s.io/v1`
//! SelfSubjectReview and TokenReview; and the TokenRequest subresource
//! (`serviceaccounts/{name}/token`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::authorizer::{self, Decision};
use super::rbac::{Attributes, PolicyRule};
use super::tokens::{self, Claims, Private, Ref};
use super::{UserInfo, authenticate_token};
use crate::error::ApiError;
use crate::ops::{State, now};
use crate::store::ObjKey;

/// The JSON of a request body of `kind` (JSON, YAML or protobuf).
pub fn decode(kind: &str, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let base = content_type.split(';').next().unwrap_or("").trim();
    let mut v = match base {
        "application/vnd.kubernetes.protobuf" => {
            let (got, raw) = crate::protobuf::unwrap_envelope(body)?;
            if got != kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({got}) does not match the expected kind ({kind})"
                )));
            }
            super::protobuf::decode(kind, &raw)?
        }
        "application/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        "" | "application/json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
            )));
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    if let Some(k) = v.get("kind").and_then(Value::as_str)
        && k != kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({kind})"
        )));
    }
    if v.get("metadata").is_none() {
        v["metadata"] = json!({});
    }
    Ok(v)
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn invalid(
    group: &str,
    kind: &str,
    name: &str,
    field: &str,
    reason: &'static str,
    body: &str,
) -> ApiError {
    ApiError::invalid_fields(
        group,
        kind,
        name,
        &[(field.to_string(), reason, body.to_string())],
    )
}

/// Attributes of a SubjectAccessReview spec for `user`.
fn spec_attributes(spec: &Value, user: &UserInfo, kind: &str) -> Result<Attributes, ApiError> {
    let ra = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let nra = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (ra, nra) {
        (Some(_), Some(_)) => Err(invalid(
            "authorization.k8s.io",
            kind,
            "",
            "spec.nonResourceAttributes",
            "FieldValueInvalid",
            &format!(
                "Invalid value: {}: cannot be specified in combination with resourceAttributes",
                nra.map(Value::to_string).unwrap_or_default()
            ),
        )),
        (None, None) => Err(invalid(
            "authorization.k8s.io",
            kind,
            "",
            "spec.resourceAttributes",
            "FieldValueInvalid",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        (Some(r), None) => {
            let mut a = Attributes::resource(
                user,
                s(r, "/verb"),
                s(r, "/group"),
                s(r, "/resource"),
                s(r, "/subresource"),
                s(r, "/namespace"),
                s(r, "/name"),
            );
            a.api_version = s(r, "/version").to_string();
            Ok(a)
        }
        (None, Some(n)) => Ok(Attributes::non_resource(user, s(n, "/verb"), s(n, "/path"))),
    }
}

fn access_status(d: Decision) -> Value {
    match d {
        Decision::Allow(reason) if reason.is_empty() => json!({"allowed": true}),
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn finish(mut obj: Value, api_version: &str, kind: &str, status: Value) -> Value {
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    obj["metadata"]["creationTimestamp"] = json!(now());
    obj["status"] = status;
    obj
}

/// The `SubjectRulesReviewStatus` of `user` in `namespace`.
fn rules_status(state: &State, user: &UserInfo, namespace: &str) -> Value {
    let (mut rules, errors) = {
        let inner = state.store.lock();
        authorizer::rules_for(&inner, user, namespace)
    };
    if authorizer::is_privileged(user) {
        rules.insert(0, PolicyRule::resource(&["*"], &["*"], &["*"]));
        rules.insert(1, PolicyRule::non_resource(&["*"], &["*"]));
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if r.non_resource_urls.is_empty() {
            let mut m = Map::new();
            m.insert("verbs".into(), json!(r.verbs));
            if !r.api_groups.is_empty() {
                m.insert("apiGroups".into(), json!(r.api_groups));
            }
            if !r.resources.is_empty() {
                m.insert("resources".into(), json!(r.resources));
            }
            if !r.resource_names.is_empty() {
                m.insert("resourceNames".into(), json!(r.resource_names));
            }
            resource_rules.push(Value::Object(m));
        } else {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    status
}

fn extra_of(spec: &Value) -> BTreeMap<String, Vec<String>> {
    spec.get("extra")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default()
}

/// Answers a review of `kind` (the resource's Kind) created by `user` in `namespace`.
pub fn review(
    state: &State,
    kind: &str,
    namespace: Option<&str>,
    user: &UserInfo,
    body: Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    match kind {
        "SelfSubjectAccessReview" => {
            let a = spec_attributes(&spec, user, kind)?;
            let d = super::authorize(state, &a);
            Ok(finish(
                body,
                "authorization.k8s.io/v1",
                kind,
                access_status(d),
            ))
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let subject = UserInfo {
                name: s(&spec, "/user").to_string(),
                uid: s(&spec, "/uid").to_string(),
                groups: spec
                    .get("groups")
                    .and_then(|g| serde_json::from_value(g.clone()).ok())
                    .unwrap_or_default(),
                extra: extra_of(&spec),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid(
                    "authorization.k8s.io",
                    kind,
                    "",
                    "spec.user",
                    "FieldValueInvalid",
                    "Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            let a = spec_attributes(&spec, &subject, kind)?;
            if kind == "LocalSubjectAccessReview" {
                let ns = namespace.unwrap_or_default();
                if !a.resource_request || a.namespace != ns {
                    return Err(invalid(
                        "authorization.k8s.io",
                        kind,
                        "",
                        "spec.resourceAttributes.namespace",
                        "FieldValueInvalid",
                        &format!(
                            "Invalid value: {}: must match metadata.namespace",
                            super::rbac::quote(&a.namespace)
                        ),
                    ));
                }
            }
            let d = super::authorize(state, &a);
            Ok(finish(
                body,
                "authorization.k8s.io/v1",
                kind,
                access_status(d),
            ))
        }
        "SelfSubjectRulesReview" => {
            let ns = s(&spec, "/namespace").to_string();
            let status = rules_status(state, user, &ns);
            Ok(finish(body, "authorization.k8s.io/v1", kind, status))
        }
        "SelfSubjectReview" => Ok(finish(
            body,
            "authentication.k8s.io/v1",
            kind,
            json!({"userInfo": user.to_json()}),
        )),
        "TokenReview" => {
            let token = s(&spec, "/token").to_string();
            let wanted: Vec<String> = spec
                .get("audiences")
                .and_then(|a| serde_json::from_value(a.clone()).ok())
                .unwrap_or_default();
            let api = vec![tokens::ISSUER.to_string()];
            let fits = wanted.is_empty() || wanted.iter().any(|w| w == tokens::ISSUER);
            let status = match authenticate_token(state, &token).filter(|_| fits) {
                Some(u) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": if wanted.is_empty() { api } else { wanted }})
                }
                None => {
                    json!({"authenticated": false, "error": "[invalid bearer token, token lookup failed]"})
                }
            };
            Ok(finish(body, "authentication.k8s.io/v1", kind, status))
        }
        other => Err(ApiError::method_not_allowed(format!(
            "create is not supported on resources of kind \"{other}\""
        ))),
    }
}

fn ts(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `POST .../serviceaccounts/{sa}/token`: a TokenRequest for ServiceAccount `ns/sa`.
pub fn token_request(
    state: &State,
    ns: &str,
    sa_name: &str,
    body: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let invalid_exp = |msg: &str| {
        invalid(
            "authentication.k8s.io",
            "TokenRequest",
            sa_name,
            "spec.expirationSeconds",
            "FieldValueInvalid",
            &format!("Invalid value: {expiration}: {msg}"),
        )
    };
    if expiration < 600 {
        return Err(invalid_exp(
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid_exp(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = vec![tokens::ISSUER.to_string()];
    }
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null()).cloned();
    let inner = state.store.lock();
    let key = |resource: &str, name: &str| ObjKey {
        group: String::new(),
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
    };
    let sa = inner
        .objects
        .get(&key("serviceaccounts", sa_name))
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", sa_name))?;
    let sa_uid = s(sa, "/metadata/uid").to_string();
    let (mut pod, mut secret) = (None, None);
    if let Some(b) = &bound {
        let (bkind, bname, buid) = (s(b, "/kind"), s(b, "/name"), s(b, "/uid"));
        let resource = match (bkind, s(b, "/apiVersion")) {
            ("Pod", "v1" | "") => "pods",
            ("Secret", "v1" | "") => "secrets",
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for object of kind {}",
                    super::rbac::quote(bkind)
                )));
            }
        };
        let obj = inner
            .objects
            .get(&key(resource, bname))
            .ok_or_else(|| ApiError::not_found("", resource, bname))?;
        let uid = s(obj, "/metadata/uid").to_string();
        if !buid.is_empty() && buid != uid {
            return Err(ApiError::conflict_msg(
                "",
                resource,
                bname,
                &format!(
                    "the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        let r = Ref {
            name: bname.to_string(),
            uid,
        };
        if resource == "pods" {
            pod = Some(r);
        } else {
            secret = Some(r);
        }
    }
    drop(inner);
    let now_ts = chrono::Utc::now().timestamp();
    let api_audience = audiences.iter().any(|a| a == tokens::ISSUER);
    let (exp, warnafter) =
        if pod.is_some() && expiration == tokens::KUBELET_EXPIRATION_SECONDS && api_audience {
            (
                now_ts + tokens::EXTENDED_EXPIRATION_SECONDS,
                Some(now_ts + expiration),
            )
        } else {
            (now_ts + expiration, None)
        };
    let claims = Claims {
        aud: audiences.clone(),
        exp,
        iat: now_ts,
        iss: tokens::ISSUER.into(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: Private {
            namespace: ns.into(),
            serviceaccount: Ref {
                name: sa_name.into(),
                uid: sa_uid,
            },
            pod,
            secret,
            warnafter,
        },
        nbf: now_ts,
        sub: super::rbac::service_account_user(ns, sa_name),
    };
    let token = if dry_run {
        String::new()
    } else {
        state
            .auth
            .signer
            .issue(&claims)
            .map_err(ApiError::internal)?
    };
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(b) = bound {
        out_spec["boundObjectRef"] = b;
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": sa_name, "namespace": ns, "creationTimestamp": ts(now_ts)},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": ts(now_ts + expiration)},
    }))
}
