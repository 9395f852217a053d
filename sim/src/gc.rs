//! The garbage collector (ownerReferences: background, foreground and orphan propagation) and
//! the namespace controller (deleting a namespace's contents before the namespace).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ops::{Propagation, State};
use crate::store::{Inner, ObjKey};

const GC_MANAGER: &str = "generic-garbage-collector";

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(f)))
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn remove_finalizer(obj: &Value, f: &str) -> Value {
    let mut new = obj.clone();
    if let Some(Value::Array(a)) = new.pointer_mut("/metadata/finalizers") {
        a.retain(|x| x.as_str() != Some(f));
    }
    new
}

fn refs_uid(obj: &Value, uid: &str) -> bool {
    owner_refs(obj)
        .iter()
        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
}

/// One pass of garbage collection; returns whether anything changed.
pub fn gc_pass(state: &State, inner: &mut Inner) -> bool {
    let mut changed = false;
    let uid_of = |o: &Value| {
        o.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let dependents: Vec<ObjKey> = inner.owned.iter().cloned().collect();
    let owners_in_deletion: Vec<(String, ObjKey, bool, bool)> = inner
        .deleting
        .iter()
        .filter_map(|k| {
            let o = inner.objects.get(k)?;
            let (orphan, fg) = (
                has_finalizer(o, "orphan"),
                has_finalizer(o, "foregroundDeletion"),
            );
            (orphan || fg).then(|| uid_of(o).map(|u| (u, k.clone(), orphan, fg)))?
        })
        .collect();

    // Owners being deleted with the orphan finalizer: drop the references, then the finalizer.
    for (uid, okey, orphan, _) in &owners_in_deletion {
        if !orphan {
            continue;
        }
        for dkey in &dependents {
            let Some(dep) = inner.objects.get(dkey) else {
                continue;
            };
            if !refs_uid(dep, uid) {
                continue;
            }
            let mut new = dep.clone();
            let kept: Vec<Value> = owner_refs(dep)
                .into_iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                .collect();
            if kept.is_empty() {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
            } else {
                new["metadata"]["ownerReferences"] = json!(kept);
            }
            state.controller_update(inner, dkey, new, GC_MANAGER);
            changed = true;
        }
        if let Some(cur) = inner.objects.get(okey).cloned() {
            state.controller_update(inner, okey, remove_finalizer(&cur, "orphan"), GC_MANAGER);
            changed = true;
        }
    }

    // Dependents whose owners are gone (or being deleted in the foreground).
    for dkey in &dependents {
        // Earlier steps of this pass may have changed or removed it.
        let Some(dep) = inner.objects.get(dkey).cloned() else {
            continue;
        };
        let refs = owner_refs(&dep);
        let mut solid = 0;
        let mut dangling = Vec::new();
        let mut foreground_owner = false;
        for r in &refs {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
            // Like the real GC: the owner is looked up by name in the dependent's namespace (or
            // cluster-wide) and must have the referenced uid; a cross-namespace owner is absent.
            let ref_name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let owner = inner
                .uids
                .get(uid)
                .filter(|k| {
                    k.name == ref_name && (k.namespace.is_empty() || k.namespace == dkey.namespace)
                })
                .and_then(|k| inner.objects.get(k))
                .filter(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid));
            match owner {
                Some(o) if deleting(o) && has_finalizer(o, "foregroundDeletion") => {
                    foreground_owner = true;
                }
                Some(_) => solid += 1,
                None => dangling.push(r.clone()),
            }
        }
        if solid == 0 && (!dangling.is_empty() || foreground_owner) {
            if !deleting(&dep) {
                let policy = if foreground_owner {
                    Propagation::Foreground
                } else {
                    Propagation::Background
                };
                state.delete_key(inner, dkey, policy);
                changed = true;
            }
        } else if !dangling.is_empty() {
            let mut new = dep.clone();
            new["metadata"]["ownerReferences"] = json!(
                refs.into_iter()
                    .filter(|r| !dangling.contains(r))
                    .collect::<Vec<_>>()
            );
            state.controller_update(inner, dkey, new, GC_MANAGER);
            changed = true;
        }
    }

    // Foreground owners lose their finalizer once no blocking dependent is left.
    for (uid, okey, _, fg) in &owners_in_deletion {
        if !fg {
            continue;
        }
        let blocked = dependents.iter().any(|dkey| {
            inner.objects.get(dkey).is_some_and(|o| {
                owner_refs(o).iter().any(|r| {
                    r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                        && r.get("blockOwnerDeletion") == Some(&Value::Bool(true))
                })
            })
        });
        if !blocked && let Some(cur) = inner.objects.get(okey).cloned() {
            state.controller_update(
                inner,
                okey,
                remove_finalizer(&cur, "foregroundDeletion"),
                GC_MANAGER,
            );
            changed = true;
        }
    }
    changed
}

/// One pass of the namespace controller; returns whether anything changed.
pub fn namespace_pass(state: &State, inner: &mut Inner) -> bool {
    let mut changed = false;
    let terminating: Vec<(ObjKey, String)> = inner
        .deleting
        .iter()
        .filter(|k| k.group.is_empty() && k.resource == "namespaces")
        .map(|k| (k.clone(), k.name.clone()))
        .collect();
    for (nskey, ns) in terminating {
        let contents: Vec<(ObjKey, bool)> = inner
            .objects
            .iter()
            .filter(|(k, _)| k.namespace == ns)
            .map(|(k, o)| (k.clone(), deleting(o)))
            .collect();
        if contents.is_empty() {
            inner.remove(&nskey);
            changed = true;
            continue;
        }
        for (k, is_deleting) in contents {
            if !is_deleting {
                state.delete_key(inner, &k, Propagation::Background);
                changed = true;
            }
        }
    }
    changed
}

/// The service account controller: every active namespace gets a `default` ServiceAccount.
pub fn service_account_pass(state: &State, inner: &mut Inner) -> bool {
    let Some(rd) = state.registry().find("", "v1", "serviceaccounts").cloned() else {
        return false;
    };
    let active: Vec<String> = inner
        .list("", "namespaces", None)
        .filter(|(_, o)| !deleting(o))
        .map(|(k, _)| k.name.clone())
        .collect();
    let mut changed = false;
    for ns in active {
        let key = crate::ops::key_for(&rd, &ns, "default");
        if !inner.objects.contains_key(&key) {
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
            let opts = crate::ops::WriteOpts {
                manager: "kube-controller-manager".into(),
                ..Default::default()
            };
            if state.create_in(inner, &rd, &ns, sa, &opts).is_ok() {
                changed = true;
            }
        }
    }
    changed
}

/// Runs the garbage collector and namespace controller until the state is dropped.
pub async fn run(state: Arc<State>) {
    loop {
        {
            let mut inner = state.store.lock();
            for _ in 0..16 {
                if !inner.gc_dirty {
                    break;
                }
                inner.gc_dirty = false;
                let a = gc_pass(&state, &mut inner);
                let b = namespace_pass(&state, &mut inner);
                let c = service_account_pass(&state, &mut inner);
                let d = crate::auth::controllers::pass(&state, &mut inner);
                let e = crate::crds::cleanup_pass(&state, &mut inner);
                if !a && !b && !c && !d && !e {
                    break;
                }
            }
        }
        tokio::select! {
            _ = state.gc_wake.notified() => {
                // Let the request that woke us finish answering first, like an async controller.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
