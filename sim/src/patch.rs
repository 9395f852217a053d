//! Patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! (for built-in kinds, with the merge keys of [`crate::types::builtin_list_type`]).

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::types::{ListType, builtin_list_type, item_key};

/// The patch types the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Parses a request Content-Type.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// Applies a JSON patch (RFC 6902).
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &p).map_err(|e| {
        ApiError::internal(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })?;
    Ok(out)
}

/// Applies a strategic merge patch to a built-in object.
pub fn strategic_merge(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut out = target.clone();
    smp_object(&mut out, patch)?;
    Ok(out)
}

fn smp_object(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = pm.clone();
            m.remove("$patch");
            *target = Value::Object(m);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other}"
            )));
        }
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let tm = target.as_object_mut().expect("object");
    // Directives that apply to lists are processed with their lists.
    for (k, pv) in pm {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tm.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => {
                let entry = tm.entry(k.clone()).or_insert(Value::Object(Map::new()));
                smp_object(entry, pv)?;
            }
            Value::Array(items) => {
                let lt = builtin_list_type(k);
                let existing = tm.remove(k);
                let merged = smp_list(existing, items, &lt)?;
                tm.insert(k.clone(), merged);
                if let Some(Value::Array(order)) = pm.get(&format!("$setElementOrder/{k}")) {
                    reorder(tm.get_mut(k).expect("just inserted"), order, &lt);
                }
            }
            _ => {
                tm.insert(k.clone(), pv.clone());
            }
        }
    }
    if let Some(Value::Array(keep)) = pm.get("$retainKeys") {
        tm.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    Ok(())
}

fn smp_list(existing: Option<Value>, patch: &[Value], lt: &ListType) -> Result<Value, ApiError> {
    // `$patch: replace` inside a list replaces the list.
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            patch
                .iter()
                .filter(|p| p.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    let mut list = match existing {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    match lt {
        ListType::Atomic => Ok(Value::Array(patch.to_vec())),
        ListType::Set => {
            for p in patch {
                if !list.contains(p) {
                    list.push(p.clone());
                }
            }
            Ok(Value::Array(list))
        }
        ListType::Map(keys) => {
            for p in patch {
                let k = item_key(p, keys);
                let pos = list.iter().position(|x| item_key(x, keys) == k);
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(i) = pos {
                        list.remove(i);
                    }
                    continue;
                }
                match pos {
                    Some(i) => smp_object(&mut list[i], p)?,
                    None => {
                        let mut item = Value::Object(Map::new());
                        smp_object(&mut item, p)?;
                        list.push(item);
                    }
                }
            }
            Ok(Value::Array(list))
        }
    }
}

fn reorder(list: &mut Value, order: &[Value], lt: &ListType) {
    let Value::Array(items) = list else { return };
    let pos = |x: &Value| {
        order.iter().position(|o| match lt {
            ListType::Map(keys) => item_key(o, keys) == item_key(x, keys),
            _ => o == x,
        })
    };
    items.sort_by_key(|x| pos(x).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name_and_env_by_name() {
        let live = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "B", "value": "2"}]},
            {"name": "b", "$patch": "delete"}]}});
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "x",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}})
        );
    }

    #[test]
    fn strategic_finalizers_are_a_set_and_args_atomic() {
        let live = json!({"metadata": {"finalizers": ["a"]}, "spec": {"args": ["1", "2"]}});
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"args": ["3"]}});
        let out = strategic_merge(&live, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"args": ["3"]}})
        );
        let del = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = strategic_merge(&out, &del).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }
}
