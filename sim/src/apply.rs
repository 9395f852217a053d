//! Server-side apply and `metadata.managedFields` tracking.
//!
//! Fields are tracked as paths in the `fieldsV1` vocabulary (`f:name`, `k:{"type":"Ready"}`,
//! `v:"value"`, `.` for "the node itself"). Lists merge according to [`crate::types`]:
//! CRD lists by their `x-kubernetes-list-type`, built-in lists by their merge keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::resources::ResourceDef;
use crate::types::{ListType, TypeNode, item_key};

/// A field path (`["f:spec", "f:containers", "k:{\"name\":\"a\"}", "f:image"]`).
pub type FieldPath = Vec<String>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;
type Flat = BTreeMap<FieldPath, Value>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the fields were written with.
    pub api_version: String,
    /// Last time this manager changed its set.
    pub time: String,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
}

/// Which part of the object a write covers.
fn scoped_view(rd: &ResourceDef, obj: &Value, sub: Option<&str>) -> Value {
    let mut out = Map::new();
    let Some(m) = obj.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if sub.is_some() {
                    continue;
                }
                let mut md = Map::new();
                for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = v.get(f) {
                        md.insert(f.into(), x.clone());
                    }
                }
                if !md.is_empty() {
                    out.insert(k.clone(), Value::Object(md));
                }
            }
            "status" if rd.status_subresource => {
                if sub == Some("status") {
                    out.insert(k.clone(), v.clone());
                }
            }
            _ => {
                if sub.is_none() || !rd.status_subresource {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

fn flatten(
    v: &Value,
    node: TypeNode<'_>,
    custom: bool,
    field: &str,
    prefix: &mut FieldPath,
    root: bool,
    out: &mut Flat,
) {
    match v {
        Value::Object(m) if !node.atomic_map() || root => {
            // Like the apiserver, `metadata` itself carries no "." marker.
            if !(prefix.is_empty() || prefix.len() == 1 && prefix[0] == "f:metadata") {
                let mut p = prefix.clone();
                p.push(".".into());
                out.insert(p, Value::Bool(true));
            }
            for (k, cv) in m {
                prefix.push(format!("f:{k}"));
                flatten(cv, node.field(k, root), custom, k, prefix, false, out);
                prefix.pop();
            }
        }
        Value::Array(items) => match node.list_type(field, custom) {
            ListType::Map(keys) => {
                for item in items {
                    prefix.push(format!("k:{}", item_key(item, &keys)));
                    flatten(item, node.items(), custom, "", prefix, false, out);
                    prefix.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    let mut p = prefix.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p, item.clone());
                }
            }
            ListType::Atomic => {
                out.insert(prefix.clone(), v.clone());
            }
        },
        _ => {
            out.insert(prefix.clone(), v.clone());
        }
    }
}

fn flat_of(rd: &ResourceDef, obj: &Value, sub: Option<&str>) -> Flat {
    let view = scoped_view(rd, obj, sub);
    let mut out = Flat::new();
    flatten(
        &view,
        TypeNode::root(rd.schema.as_deref()),
        rd.is_custom(),
        "",
        &mut Vec::new(),
        true,
        &mut out,
    );
    out
}

fn apply_merge(
    live: &mut Value,
    applied: &Value,
    node: TypeNode<'_>,
    custom: bool,
    field: &str,
    root: bool,
) {
    match applied {
        Value::Object(am) if live.is_object() && (!node.atomic_map() || root) => {
            let lm = live.as_object_mut().expect("object");
            for (k, av) in am {
                if av.is_null() {
                    lm.remove(k);
                    continue;
                }
                match lm.get_mut(k) {
                    Some(lv) => apply_merge(lv, av, node.field(k, root), custom, k, false),
                    None => {
                        lm.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        Value::Array(items) => match (node.list_type(field, custom), live.as_array_mut()) {
            (ListType::Map(keys), Some(list)) => {
                for item in items {
                    let k = item_key(item, &keys);
                    match list.iter().position(|x| item_key(x, &keys) == k) {
                        Some(i) => apply_merge(&mut list[i], item, node.items(), custom, "", false),
                        None => list.push(item.clone()),
                    }
                }
            }
            (ListType::Set, Some(list)) => {
                for item in items {
                    if !list.contains(item) {
                        list.push(item.clone());
                    }
                }
            }
            _ => *live = applied.clone(),
        },
        _ => *live = applied.clone(),
    }
}

fn matches_pe(item: &Value, pe: &str) -> bool {
    if let Some(k) = pe.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        keys.iter().all(|(f, v)| item.get(f) == Some(v))
    } else if let Some(v) = pe.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|x| &x == item)
    } else {
        false
    }
}

/// Removes the node at `path` (a `.`-terminated path removes the node that owns the dot).
fn remove_path(obj: &mut Value, path: &[String]) {
    let path = match path.last().map(String::as_str) {
        Some(".") => &path[..path.len() - 1],
        _ => path,
    };
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parents {
        let next = if let Some(f) = pe.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Value::Array(items) = cur {
            items.iter_mut().find(|x| matches_pe(x, pe))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Value::Object(m) = cur {
            m.remove(f);
        }
    } else if let Value::Array(items) = cur {
        items.retain(|x| !matches_pe(x, last));
    }
}

/// Renders a field path like the apiserver's conflict messages (`.spec.containers[name="a"].image`).
pub fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(k) {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        } else if let Some(v) = pe.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for pe in path {
            cur = cur
                .entry(pe.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            prefix.push(k.clone());
            if child.as_object().is_none_or(Map::is_empty) {
                out.insert(prefix.clone());
            } else {
                from_fields_v1(child, prefix, out);
            }
            prefix.pop();
        }
    }
}

/// Reads `metadata.managedFields`.
pub fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                from_fields_v1(f, &mut Vec::new(), &mut fields);
            }
            ManagedEntry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                fields,
            }
        })
        .collect()
}

/// Writes `metadata.managedFields` (entries with no fields are dropped).
pub fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                m["subresource"] = json!(s);
            }
            m
        })
        .collect();
    if let Some(md) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            md.remove("managedFields");
        } else {
            md.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn changed_paths(a: &Flat, b: &Flat) -> FieldSet {
    let mut out = FieldSet::new();
    for (p, v) in a {
        if b.get(p) != Some(v) {
            out.insert(p.clone());
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.insert(p.clone());
        }
    }
    out
}

/// Records a non-apply write (`operation: Update`) by `manager` that turned `old` into `new`:
/// the manager takes the fields it changed, other managers lose them.
pub fn record_update(
    rd: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: Option<&str>,
    now: &str,
) {
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let before = flat_of(rd, old_v, sub);
    let after = flat_of(rd, new, sub);
    let changed = changed_paths(&before, &after);
    let mut entries = read_managed(old_v);
    if !changed.is_empty() {
        for e in entries.iter_mut() {
            e.fields.retain(|p| !changed.contains(p));
        }
        let sub_s = sub.map(str::to_string);
        let idx = entries.iter().position(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == sub_s
        });
        let idx = match idx {
            Some(i) => i,
            None => {
                entries.push(ManagedEntry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: rd.api_version(),
                    time: now.to_string(),
                    subresource: sub_s,
                    fields: FieldSet::new(),
                });
                entries.len() - 1
            }
        };
        let mine = &mut entries[idx];
        mine.time = now.to_string();
        mine.api_version = rd.api_version();
        mine.fields
            .extend(changed.into_iter().filter(|p| after.contains_key(p)));
    }
    write_managed(new, &entries);
}

/// Server-side apply of `applied` by `manager` onto `live`; returns the merged object (with
/// managedFields) or a 409 listing the conflicting fields when `force` is false.
pub fn server_side_apply(
    rd: &ResourceDef,
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: Option<&str>,
    now: &str,
) -> Result<Value, ApiError> {
    let applied_view = scoped_view(rd, applied, sub);
    let node = TypeNode::root(rd.schema.as_deref());
    let mut new_flat = Flat::new();
    flatten(
        &applied_view,
        node,
        rd.is_custom(),
        "",
        &mut Vec::new(),
        true,
        &mut new_flat,
    );
    let new_set: FieldSet = new_flat.keys().cloned().collect();

    let mut merged = live.clone();
    apply_merge(&mut merged, &applied_view, node, rd.is_custom(), "", true);

    let before = flat_of(rd, live, sub);
    let after = flat_of(rd, &merged, sub);
    let changed = changed_paths(&before, &after);

    let sub_s = sub.map(str::to_string);
    let mut entries = read_managed(live);
    let is_mine =
        |e: &ManagedEntry| e.manager == manager && e.operation == "Apply" && e.subresource == sub_s;

    let mut conflicts: BTreeMap<(String, String), Vec<FieldPath>> = BTreeMap::new();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        for p in e
            .fields
            .iter()
            .filter(|p| changed.contains(*p) && new_set.contains(*p))
        {
            if p.last().map(String::as_str) == Some(".") {
                continue;
            }
            conflicts
                .entry((e.manager.clone(), e.api_version.clone()))
                .or_default()
                .push(p.clone());
        }
    }
    if !conflicts.is_empty() && !force {
        let total: usize = conflicts.values().map(Vec::len).sum();
        let mut causes = Vec::new();
        let mut parts = Vec::new();
        for ((mgr, av), paths) in &conflicts {
            for p in paths {
                causes.push(Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with \"{mgr}\" using {av}"),
                    field: render_path(p),
                });
            }
            if paths.len() == 1 {
                parts.push(format!(
                    "conflict with \"{mgr}\" using {av}: {}",
                    render_path(&paths[0])
                ));
            } else {
                let list: Vec<String> = paths
                    .iter()
                    .map(|p| format!("- {}", render_path(p)))
                    .collect();
                parts.push(format!(
                    "conflicts with \"{mgr}\" using {av}:\n{}",
                    list.join("\n")
                ));
            }
        }
        let plural = if total == 1 { "" } else { "s" };
        let name = live
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut err = ApiError::conflict_msg(&rd.group, &rd.plural, name, "");
        err.message = format!(
            "Apply failed with {total} conflict{plural}: {}",
            parts.join("\n")
        );
        err.causes = causes;
        return Err(err);
    }
    // Forced (or conflict-free): the applier takes the changed fields from everyone else.
    for e in entries.iter_mut().filter(|e| !is_mine(e)) {
        e.fields
            .retain(|p| !(changed.contains(p) && new_set.contains(p)));
    }
    // Fields this manager applied before but no longer applies are removed unless someone
    // else also owns them.
    let prev: FieldSet = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut removals: Vec<&FieldPath> = prev
        .iter()
        .filter(|p| !new_set.contains(*p) && !others.contains(*p))
        .collect();
    // Remove leaves before the nodes that contain them.
    removals.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in removals {
        let node = &p[..p.len() - 1];
        let owned_below =
            p.last().map(String::as_str) == Some(".") && others.iter().any(|o| o.starts_with(node));
        if !owned_below {
            remove_path(&mut merged, p);
        }
    }
    match entries.iter_mut().find(|e| is_mine(e)) {
        Some(e) => {
            // As the apiserver's managed-fields updater: the time moves only when the apply
            // changed the object or this manager's field set (a no-op apply stays a no-op).
            if !changed.is_empty() || e.fields != new_set || e.api_version != rd.api_version() {
                e.time = now.to_string();
            }
            e.fields = new_set;
            e.api_version = rd.api_version();
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: rd.api_version(),
            time: now.to_string(),
            subresource: sub_s,
            fields: new_set,
        }),
    }
    write_managed(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn cm() -> ResourceDef {
        Registry::builtins()
            .find("", "v1", "configmaps")
            .unwrap()
            .clone()
    }

    #[test]
    fn apply_conflict_then_force() {
        let rd = cm();
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "1"}});
        let v1 = server_side_apply(&rd, &live, &a, "one", false, None, "t").unwrap();
        assert_eq!(v1["data"]["k"], "1");
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "2"}});
        let err = server_side_apply(&rd, &v1, &b, "two", false, None, "t").unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"one\""),
            "{}",
            err.message
        );
        assert!(err.message.contains(".data.k"), "{}", err.message);
        // Same value: shared, no conflict.
        let v2 = server_side_apply(&rd, &v1, &a, "two", false, None, "t").unwrap();
        assert_eq!(read_managed(&v2).len(), 2);
        let v3 = server_side_apply(&rd, &v1, &b, "two", true, None, "t").unwrap();
        assert_eq!(v3["data"]["k"], "2");
        let m = read_managed(&v3);
        let k: FieldPath = vec!["f:data".into(), "f:k".into()];
        let owners: Vec<&str> = m
            .iter()
            .filter(|e| e.fields.contains(&k))
            .map(|e| e.manager.as_str())
            .collect();
        assert_eq!(owners, ["two"], "{m:?}");
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let rd = cm();
        let live = json!({"metadata": {"name": "x"}});
        let a = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "data": {"k": "1", "j": "2"}});
        let v1 = server_side_apply(&rd, &live, &a, "m", false, None, "t").unwrap();
        let a2 = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "1"}});
        let v2 = server_side_apply(&rd, &v1, &a2, "m", false, None, "t").unwrap();
        assert_eq!(v2["data"], json!({"k": "1"}));
        assert_eq!(v2["metadata"]["labels"], json!({"a": "1"}));
    }
}
