//! The `/scale` subresource of Deployments, ReplicaSets and custom resources whose CRD declares
//! `subresources.scale`: an `autoscaling/v1` Scale view of `spec.replicas` (and
//! `status.replicas` + the selector string; for custom resources the CRD's
//! `specReplicasPath`/`statusReplicasPath`/`labelSelectorPath`), read with GET and written with
//! PUT or PATCH (what `kubectl scale` and autoscalers use).

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::ops::{Managed, State, WriteOpts, key_for, to_external};
use crate::patch::{PatchType, json_patch, merge_patch, strategic_merge};
use crate::resources::ResourceDef;

/// `.spec.replicas` → `/spec/replicas` (the simple JSON paths CRDs use for scale).
fn pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut acc, seg| {
            acc.push('/');
            acc.push_str(seg);
            acc
        })
}

/// The Scale of an object of `rd`.
fn scale_of(rd: &ResourceDef, obj: &Value) -> Value {
    let mut scale = crate::workloads::scale_of(obj);
    if let Some(p) = &rd.scale_paths {
        scale["spec"]["replicas"] = obj
            .pointer(&pointer(&p.spec_replicas))
            .cloned()
            .unwrap_or(json!(0));
        scale["status"]["replicas"] = obj
            .pointer(&pointer(&p.status_replicas))
            .cloned()
            .unwrap_or(json!(0));
        scale["status"]["selector"] = p
            .label_selector
            .as_deref()
            .and_then(|l| obj.pointer(&pointer(l)))
            .cloned()
            .unwrap_or(json!(""));
    }
    scale
}

/// How a write changes the Scale.
#[derive(Debug, Clone)]
pub enum ScaleWrite {
    /// PUT of a whole Scale.
    Replace(Value),
    /// PATCH of the Scale.
    Patch(PatchType, Value),
}

impl State {
    /// `GET .../{name}/scale`.
    pub fn get_scale(&self, rd: &ResourceDef, ns: &str, name: &str) -> ApiResult<Value> {
        Ok(scale_of(rd, &self.get(rd, ns, name)?))
    }

    /// `PUT`/`PATCH .../{name}/scale`: sets `spec.replicas` of the object (a main-resource
    /// update: `generation` moves, the status is kept) and returns the new Scale.
    pub fn write_scale(
        &self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        write: ScaleWrite,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let mut inner = self.store.lock();
        let key = key_for(rd, ns, name);
        let Some(old) = inner.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&rd.group, &rd.plural, name));
        };
        let current = scale_of(rd, &to_external(rd, &old));
        let desired = match write {
            ScaleWrite::Replace(body) => {
                if let Some(k) = body.get("kind").and_then(Value::as_str)
                    && k != "Scale"
                {
                    return Err(ApiError::bad_request(format!(
                        "the kind in the data ({k}) does not match the expected kind (Scale)"
                    )));
                }
                body
            }
            ScaleWrite::Patch(PatchType::Merge, p) => merge_patch(&current, &p),
            ScaleWrite::Patch(PatchType::Json, p) => json_patch(&current, &p)?,
            ScaleWrite::Patch(PatchType::Strategic, p) => strategic_merge(&current, &p)?,
            ScaleWrite::Patch(PatchType::Apply, _) => {
                return Err(ApiError::unsupported_media_type(
                    "kube-sim does not implement server-side apply on the scale subresource; use a merge patch or PUT",
                ));
            }
        };
        if let Some(rv) = desired
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            return Err(ApiError::conflict(&rd.group, &rd.plural, name));
        }
        let replicas = match desired.pointer("/spec/replicas") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_i64() {
                Some(n) if n >= 0 && n <= i64::from(i32::MAX) => n,
                _ => {
                    return Err(ApiError::invalid_fields(
                        "autoscaling",
                        "Scale",
                        name,
                        &[(
                            "spec.replicas".into(),
                            "FieldValueInvalid",
                            format!("Invalid value: {v}: must be greater than or equal to 0"),
                        )],
                    ));
                }
            },
        };
        let mut new = old.clone();
        let spec_path = rd
            .scale_paths
            .as_ref()
            .map_or("/spec/replicas".to_string(), |p| pointer(&p.spec_replicas));
        set_at(&mut new, &spec_path, json!(replicas));
        let out = self.commit_update(
            &mut inner,
            rd,
            key,
            old,
            new,
            None,
            opts,
            Managed::Update(&opts.manager),
        )?;
        Ok(scale_of(rd, &out.object))
    }
}

/// Sets the value at a JSON pointer, creating intermediate objects.
fn set_at(obj: &mut Value, pointer: &str, v: Value) {
    let mut cur = obj;
    for seg in pointer.trim_start_matches('/').split('/') {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(seg.to_string())
            .or_insert(Value::Null);
    }
    *cur = v;
}
