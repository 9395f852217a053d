//! The admission decision, pure: who asked for a run, who changed a policy or storage last.
//!
//! - CREATE of a BackupRun, RestoreRun or RestoreValidation: the requester's username and groups
//!   (from the API server's `userInfo`, never from the object) are written into the annotations
//!   [`REQUESTED_BY`] and [`REQUESTED_BY_GROUPS`]; whatever the object carried there is replaced.
//! - UPDATE of those kinds: a change to either annotation (set, changed or removed) is refused.
//! - CREATE of a BackupPolicy or BackupStorage, and an UPDATE that changes its `spec`:
//!   [`LAST_CHANGED_BY`] and [`LAST_CHANGED_AT`] record who and when; an UPDATE that touches
//!   them without changing the spec is refused, one that changes nothing else leaves them.
//!
//! Everything else is allowed untouched.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

/// Annotation: the user who created the run (stamped at admission).
pub const REQUESTED_BY: &str = "dataguardian.io/requested-by";
/// Annotation: that user's groups, comma-separated.
pub const REQUESTED_BY_GROUPS: &str = "dataguardian.io/requested-by-groups";
/// Annotation: the user who last changed a policy's or storage's spec.
pub const LAST_CHANGED_BY: &str = "dataguardian.io/last-changed-by";
/// Annotation: when (RFC 3339).
pub const LAST_CHANGED_AT: &str = "dataguardian.io/last-changed-at";

/// Which stamp a kind gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// The run kinds: who asked, set once.
    Requester,
    /// Policies and storages: who changed the spec last.
    LastChange,
}

fn stamp_for(group: &str, kind: &str) -> Option<Stamp> {
    if group != crate::api::GROUP {
        return None;
    }
    match kind {
        "BackupRun" | "RestoreRun" | "RestoreValidation" => Some(Stamp::Requester),
        "BackupPolicy" | "BackupStorage" => Some(Stamp::LastChange),
        _ => None,
    }
}

fn annotation<'a>(obj: Option<&'a DynamicObject>, key: &str) -> Option<&'a str> {
    obj.and_then(|o| o.metadata.annotations.as_ref())
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn pointer(key: &str) -> PointerBuf {
    PointerBuf::from_tokens(["metadata", "annotations", key])
}

/// Patch operations that set `values` as annotations of `obj` (creating the map if absent).
fn set_annotations(obj: &DynamicObject, values: &[(&str, String)]) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    if obj.metadata.annotations.is_none() {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: Value::Object(Default::default()),
        }));
    }
    for (key, value) in values {
        ops.push(PatchOperation::Add(AddOperation {
            path: pointer(key),
            value: Value::String(value.clone()),
        }));
    }
    ops
}

/// Decides `req` at time `now` (RFC 3339).
pub fn review(req: &AdmissionRequest<DynamicObject>, now: &str) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    let Some(stamp) = stamp_for(&req.kind.group, &req.kind.kind) else {
        return response;
    };
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        return response;
    }
    let Some(obj) = req.object.as_ref() else {
        return response;
    };
    let old = req.old_object.as_ref();
    let user = &req.user_info;
    let username = user.username.clone().unwrap_or_default();
    let kind = &req.kind.kind;
    let result = match (stamp, &req.operation) {
        (Stamp::Requester, Operation::Create) => {
            let groups = user.groups.clone().unwrap_or_default().join(",");
            response.with_patch(Patch(set_annotations(
                obj,
                &[(REQUESTED_BY, username), (REQUESTED_BY_GROUPS, groups)],
            )))
        }
        (Stamp::Requester, Operation::Update) => {
            for key in [REQUESTED_BY, REQUESTED_BY_GROUPS] {
                if annotation(Some(obj), key) != annotation(old, key) {
                    return response.deny(format!(
                        "the annotation {key} of a {kind} records who asked for it: it is set \
                         when the {kind} is created and cannot be changed"
                    ));
                }
            }
            Ok(response)
        }
        (Stamp::LastChange, Operation::Create) => response.with_patch(Patch(set_annotations(
            obj,
            &[
                (LAST_CHANGED_BY, username),
                (LAST_CHANGED_AT, now.to_string()),
            ],
        ))),
        (Stamp::LastChange, Operation::Update) => {
            let spec_changed = obj.data.get("spec") != old.and_then(|o| o.data.get("spec"));
            if spec_changed {
                response.with_patch(Patch(set_annotations(
                    obj,
                    &[
                        (LAST_CHANGED_BY, username),
                        (LAST_CHANGED_AT, now.to_string()),
                    ],
                )))
            } else {
                for key in [LAST_CHANGED_BY, LAST_CHANGED_AT] {
                    if annotation(Some(obj), key) != annotation(old, key) {
                        return response.deny(format!(
                            "the annotation {key} of a {kind} records who changed its spec \
                             last: it is set by admission and cannot be changed by hand"
                        ));
                    }
                }
                Ok(response)
            }
        }
        _ => Ok(response),
    };
    result.unwrap_or_else(|e| {
        AdmissionResponse::from(req).deny(format!(
            "DataGuardian admission cannot build its patch: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(kind: &str, op: &str, object: Value, old: Value) -> AdmissionRequest<DynamicObject> {
        let review: kube::core::admission::AdmissionReview<DynamicObject> =
            serde_json::from_value(json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u-1",
                    "kind": {"group": "dataguardian.io", "version": "v1alpha1", "kind": kind},
                    "resource": {"group": "dataguardian.io", "version": "v1alpha1", "resource": "x"},
                    "name": "n",
                    "namespace": "shop",
                    "operation": op,
                    "userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"]},
                    "object": object,
                    "oldObject": old,
                    "dryRun": false
                }
            }))
            .unwrap();
        review.try_into().unwrap()
    }

    fn obj(annotations: Value, spec: Value) -> Value {
        json!({"apiVersion": "dataguardian.io/v1alpha1", "kind": "BackupRun",
               "metadata": {"name": "n", "namespace": "shop", "annotations": annotations},
               "spec": spec})
    }

    fn patched(resp: &AdmissionResponse, original: &Value) -> Value {
        let patch: json_patch::Patch =
            serde_json::from_slice(resp.patch.as_ref().expect("a patch")).unwrap();
        let mut v = original.clone();
        json_patch::patch(&mut v, &patch).unwrap();
        v
    }

    #[test]
    fn a_new_run_is_stamped_with_the_requester_whatever_it_claimed() {
        let forged = obj(json!({REQUESTED_BY: "mallory", "keep": "me"}), json!({}));
        let resp = review(
            &request("BackupRun", "CREATE", forged.clone(), Value::Null),
            "t",
        );
        assert!(resp.allowed);
        let out = patched(&resp, &forged);
        assert_eq!(out["metadata"]["annotations"][REQUESTED_BY], "alice");
        assert_eq!(
            out["metadata"]["annotations"][REQUESTED_BY_GROUPS],
            "devs,system:authenticated"
        );
        assert_eq!(out["metadata"]["annotations"]["keep"], "me");
        // Without any annotations the map is created.
        let bare = json!({"apiVersion": "dataguardian.io/v1alpha1", "kind": "RestoreRun",
                          "metadata": {"name": "n"}, "spec": {}});
        let resp = review(
            &request("RestoreRun", "CREATE", bare.clone(), Value::Null),
            "t",
        );
        assert_eq!(
            patched(&resp, &bare)["metadata"]["annotations"][REQUESTED_BY],
            "alice"
        );
    }

    #[test]
    fn the_requester_cannot_be_changed_or_removed() {
        let old = obj(
            json!({REQUESTED_BY: "alice", REQUESTED_BY_GROUPS: "devs"}),
            json!({}),
        );
        for new in [
            obj(
                json!({REQUESTED_BY: "mallory", REQUESTED_BY_GROUPS: "devs"}),
                json!({}),
            ),
            obj(json!({REQUESTED_BY_GROUPS: "devs"}), json!({})),
            obj(
                json!({REQUESTED_BY: "alice", REQUESTED_BY_GROUPS: "admins"}),
                json!({}),
            ),
        ] {
            let resp = review(&request("BackupRun", "UPDATE", new, old.clone()), "t");
            assert!(!resp.allowed);
            assert!(
                resp.result.message.contains("cannot be changed"),
                "{}",
                resp.result.message
            );
        }
        let same = obj(
            json!({REQUESTED_BY: "alice", REQUESTED_BY_GROUPS: "devs", "x": "y"}),
            json!({}),
        );
        assert!(review(&request("BackupRun", "UPDATE", same, old), "t").allowed);
    }

    #[test]
    fn a_policy_records_who_changed_its_spec_last() {
        let old = obj(
            json!({LAST_CHANGED_BY: "bob", LAST_CHANGED_AT: "t0"}),
            json!({"schedule": "1"}),
        );
        let new = obj(
            json!({LAST_CHANGED_BY: "bob", LAST_CHANGED_AT: "t0"}),
            json!({"schedule": "2"}),
        );
        let resp = review(
            &request("BackupPolicy", "UPDATE", new.clone(), old.clone()),
            "t1",
        );
        let out = patched(&resp, &new);
        assert_eq!(out["metadata"]["annotations"][LAST_CHANGED_BY], "alice");
        assert_eq!(out["metadata"]["annotations"][LAST_CHANGED_AT], "t1");
        // A metadata-only change keeps the stamp, and the stamp cannot be forged.
        let labels_only = obj(
            json!({LAST_CHANGED_BY: "bob", LAST_CHANGED_AT: "t0", "a": "b"}),
            json!({"schedule": "1"}),
        );
        let resp = review(
            &request("BackupPolicy", "UPDATE", labels_only, old.clone()),
            "t1",
        );
        assert!(resp.allowed && resp.patch.is_none());
        let forged = obj(
            json!({LAST_CHANGED_BY: "carol", LAST_CHANGED_AT: "t0"}),
            json!({"schedule": "1"}),
        );
        assert!(!review(&request("BackupStorage", "UPDATE", forged, old), "t1").allowed);
    }

    #[test]
    fn other_kinds_and_subresources_pass_untouched() {
        let o = obj(json!({}), json!({}));
        let mut req = request("BackupRun", "UPDATE", o.clone(), o.clone());
        req.sub_resource = Some("status".into());
        let resp = review(&req, "t");
        assert!(resp.allowed && resp.patch.is_none());
        let mut req = request("BackupRun", "CREATE", o, Value::Null);
        req.kind.group = "batch".into();
        assert!(review(&req, "t").patch.is_none());
    }
}
