//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and field selectors.

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::{Builtin, ResourceDef};

/// One parsed label requirement.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    /// Parses the string form used in `?labelSelector=`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = |detail: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {detail}: found '{s}', expected: label selector"
            ))
        };
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let req = if let Some(key) = part.strip_prefix('!') {
                let key = key.trim();
                if !valid_key(key) {
                    return Err(bad("invalid label key"));
                }
                Req::NotExists(key.to_string())
            } else if let Some(idx) = part.find(" notin ").or_else(|| part.find(" in ")) {
                let (key, rest) = part.split_at(idx);
                let rest = rest.trim_start();
                let (neg, rest) = if let Some(r) = rest.strip_prefix("notin") {
                    (true, r)
                } else {
                    (false, rest.strip_prefix("in").unwrap_or(rest))
                };
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad("expected ( and )"))?;
                let values: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let key = key.trim().to_string();
                if !valid_key(&key) || values.iter().any(|v| !valid_value(v)) {
                    return Err(bad("invalid label key or value"));
                }
                if neg {
                    Req::NotIn(key, values)
                } else {
                    Req::In(key, values)
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                let (k, v) = (k.trim(), v.trim());
                if !valid_key(k) || !valid_value(v) {
                    return Err(bad("invalid label key or value"));
                }
                Req::NotIn(k.into(), vec![v.into()])
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                let (k, v) = (k.trim(), v.trim());
                if !valid_key(k) || !valid_value(v) {
                    return Err(bad("invalid label key or value"));
                }
                Req::In(k.into(), vec![v.into()])
            } else {
                let key = part.trim();
                if !valid_key(key) {
                    return Err(bad("invalid label key"));
                }
                Req::Exists(key.to_string())
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Req::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        })
    }
}

/// A parsed field selector (`a=b`, `a==b`, `a!=b`, comma-separated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The field labels a resource supports in field selectors, with the JSON pointer they read.
fn field_pointer(rd: &ResourceDef, field: &str) -> Option<String> {
    match field {
        "metadata.name" | "metadata.namespace" => Some(format!("/{}", field.replace('.', "/"))),
        _ => match rd.builtin {
            Some(Builtin::Pod) => match field {
                "status.phase"
                | "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.serviceAccountName"
                | "status.podIP" => Some(format!("/{}", field.replace('.', "/"))),
                _ => None,
            },
            Some(Builtin::CoreEvent) => {
                let ok = field.starts_with("involvedObject.")
                    || matches!(field, "reason" | "type" | "source" | "reportingComponent");
                ok.then(|| {
                    if field == "source" {
                        "/source/component".to_string()
                    } else {
                        format!("/{}", field.replace('.', "/"))
                    }
                })
            }
            Some(Builtin::EventV1) => {
                // Selected on the stored (core/v1) form.
                if let Some(rest) = field.strip_prefix("regarding.") {
                    Some(format!("/involvedObject/{rest}"))
                } else if field == "reportingController" {
                    Some("/reportingComponent".into())
                } else if matches!(field, "reason" | "type") {
                    Some(format!("/{field}"))
                } else {
                    None
                }
            }
            Some(Builtin::Secret) if field == "type" => Some("/type".into()),
            Some(Builtin::Namespace) if field == "status.phase" => Some("/status/phase".into()),
            Some(Builtin::Job) if field == "status.successful" => Some("/status/succeeded".into()),
            Some(Builtin::ReplicaSet) if field == "status.replicas" => {
                Some("/status/replicas".into())
            }
            Some(Builtin::Service) if matches!(field, "spec.clusterIP" | "spec.type") => {
                Some(format!("/{}", field.replace('.', "/")))
            }
            _ => None,
        },
    }
}

impl FieldSelector {
    /// Parses `?fieldSelector=` for a resource; unknown fields are a 400 like the apiserver's.
    pub fn parse(rd: &ResourceDef, s: &str) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let k = k.trim();
            let ptr = field_pointer(rd, k)
                .ok_or_else(|| ApiError::bad_request(format!("field label not supported: {k}")))?;
            out.push((ptr, eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    /// Whether the stored object satisfies the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(ptr, eq, want)| {
            let have = match obj.pointer(ptr) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "db", "tier": "backend"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=db"));
        assert!(m("app==db"));
        assert!(!m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("app in (db,web)"));
        assert!(!m("app notin (db,web)"));
        assert!(m("missing notin (x)"));
        assert!(m("tier"));
        assert!(!m("!tier"));
        assert!(m("!missing"));
        assert!(m("app in (db, web),tier=backend"));
        assert!(!m("app=db,tier=frontend"));
        assert!(m(""));
    }

    #[test]
    fn bad_selector_is_400() {
        assert_eq!(LabelSelector::parse("app in db").unwrap_err().code, 400);
    }
}
