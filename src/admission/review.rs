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
//! - RestoreRun approvals (the two-person rule; the RestoreRun controller's `approval` module
//!   decides whether a restore needs one): an UPDATE that sets or changes [`APPROVE`]
//!   is an approval. It is admitted only from a user who is not the requester and whom the API
//!   server authorizes to `approve` `restoreruns` in the namespace (a SubjectAccessReview the
//!   server makes, passed in as [`Authorization`]), while the restore has not started; the
//!   webhook then stamps [`APPROVED_BY`] and [`APPROVED_AT`]. Removing [`APPROVE`] withdraws the
//!   approval (both stamps go). Nobody sets the stamps by hand, and no RestoreRun is created
//!   approved.
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
/// Annotation an approver sets on a RestoreRun (any non-empty value; a new value approves
/// again, e.g. after an approval expired).
pub const APPROVE: &str = "dataguardian.io/approve";
/// Annotation: who approved the restore (stamped at admission).
pub const APPROVED_BY: &str = "dataguardian.io/approved-by";
/// Annotation: when (RFC 3339, stamped at admission).
pub const APPROVED_AT: &str = "dataguardian.io/approved-at";

/// The API server's answer to "may this user approve this restore?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Not asked: the request is not an approval.
    NotAsked,
    /// Allowed.
    Allowed,
    /// Denied (the authorizer's reason, possibly empty).
    Denied(String),
    /// The SubjectAccessReview itself failed.
    Unavailable(String),
}

/// Who to ask about, when `req` is an approval: the webhook makes a SubjectAccessReview for
/// verb `approve` on this RestoreRun before [`review`] decides.
pub fn approval_to_authorize(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.kind.group == crate::api::GROUP
        && req.kind.kind == "RestoreRun"
        && req.operation == Operation::Update
        && req.sub_resource.as_deref().is_none_or(str::is_empty)
        && approves(req.object.as_ref(), req.old_object.as_ref())
}

/// Whether `obj` sets or changes [`APPROVE`] to a non-empty value.
fn approves(obj: Option<&DynamicObject>, old: Option<&DynamicObject>) -> bool {
    let new = annotation(obj, APPROVE).filter(|v| !v.is_empty());
    new.is_some() && new != annotation(old, APPROVE)
}

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

/// Decides `req` at time `now` (RFC 3339); `authorization` answers
/// [`approval_to_authorize`] (`NotAsked` when it was not needed).
pub fn review(
    req: &AdmissionRequest<DynamicObject>,
    now: &str,
    authorization: &Authorization,
) -> AdmissionResponse {
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
            if kind == "RestoreRun" {
                for key in [APPROVE, APPROVED_BY, APPROVED_AT] {
                    if annotation(Some(obj), key).is_some() {
                        return response.deny(format!(
                            "a RestoreRun cannot be created approved (annotation {key}): \
                             create it, then a second person who may approve restoreruns \
                             runs kubectl dataguardian approve NAME"
                        ));
                    }
                }
            }
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
            if kind == "RestoreRun" {
                approval(req, obj, old, &username, now, authorization, response)
            } else {
                Ok(response)
            }
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

/// The approval rules of a RestoreRun UPDATE (the requester annotations already checked).
fn approval(
    req: &AdmissionRequest<DynamicObject>,
    obj: &DynamicObject,
    old: Option<&DynamicObject>,
    username: &str,
    now: &str,
    authorization: &Authorization,
    response: AdmissionResponse,
) -> Result<AdmissionResponse, kube::core::admission::SerializePatchError> {
    let ns = req.namespace.as_deref().unwrap_or_default();
    let name = &req.name;
    let new_ask = annotation(Some(obj), APPROVE).filter(|v| !v.is_empty());
    let old_ask = annotation(old, APPROVE).filter(|v| !v.is_empty());
    if new_ask.is_none() && old_ask.is_some() {
        // Withdrawn: the stamps go with it.
        let mut ops = Vec::new();
        for key in [APPROVED_BY, APPROVED_AT] {
            if annotation(Some(obj), key).is_some() {
                ops.push(PatchOperation::Remove(json_patch::RemoveOperation {
                    path: pointer(key),
                }));
            }
        }
        return if ops.is_empty() {
            Ok(response)
        } else {
            response.with_patch(Patch(ops))
        };
    }
    if !approves(Some(obj), old) {
        for key in [APPROVED_BY, APPROVED_AT] {
            if annotation(Some(obj), key) != annotation(old, key) {
                return Ok(response.deny(format!(
                    "the annotation {key} of a RestoreRun records its approval: it is set by \
                     admission when a user who may approve restoreruns sets {APPROVE} \
                     (kubectl dataguardian approve {name} -n {ns}), never by hand"
                )));
            }
        }
        return Ok(response);
    }
    // An approval.
    let phase = obj
        .data
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("Queued");
    if !matches!(phase, "Queued" | "AwaitingApproval") {
        return Ok(response.deny(format!(
            "RestoreRun {ns}/{name} is {phase}: an approval only matters before a restore starts"
        )));
    }
    let Some(requester) = annotation(old, REQUESTED_BY).filter(|r| !r.is_empty()) else {
        return Ok(response.deny(format!(
            "RestoreRun {ns}/{name} records no requester (it was created before the admission \
             webhook recorded requesters), so a second person cannot be told apart from the \
             first: delete it and create it again"
        )));
    };
    if requester == username {
        return Ok(response.deny(format!(
            "{username} requested RestoreRun {ns}/{name} and cannot approve it: a second person \
             who may approve restoreruns in {ns} must"
        )));
    }
    match authorization {
        Authorization::Allowed => {}
        Authorization::Denied(why) => {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            return Ok(response.deny(format!(
                "{username} may not approve restoreruns in namespace {ns}{why}: approving needs \
                 the verb approve on restoreruns.dataguardian.io, e.g. from the ClusterRole \
                 dataguardian-approver"
            )));
        }
        Authorization::Unavailable(e) => {
            return Ok(response.deny(format!(
                "cannot check whether {username} may approve restoreruns in {ns}: {e}"
            )));
        }
        Authorization::NotAsked => {
            return Ok(response.deny(
                "the approval was not authorized (no SubjectAccessReview was made)".to_string(),
            ));
        }
    }
    response.with_patch(Patch(set_annotations(
        obj,
        &[
            (APPROVED_BY, username.to_string()),
            (APPROVED_AT, now.to_string()),
        ],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rv(req: &AdmissionRequest<DynamicObject>, now: &str) -> AdmissionResponse {
        review(req, now, &Authorization::NotAsked)
    }

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
        let resp = rv(
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
        let resp = rv(
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
            let resp = rv(&request("BackupRun", "UPDATE", new, old.clone()), "t");
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
        assert!(rv(&request("BackupRun", "UPDATE", same, old), "t").allowed);
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
        let resp = rv(
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
        let resp = rv(
            &request("BackupPolicy", "UPDATE", labels_only, old.clone()),
            "t1",
        );
        assert!(resp.allowed && resp.patch.is_none());
        let forged = obj(
            json!({LAST_CHANGED_BY: "carol", LAST_CHANGED_AT: "t0"}),
            json!({"schedule": "1"}),
        );
        assert!(!rv(&request("BackupStorage", "UPDATE", forged, old), "t1").allowed);
    }

    #[test]
    fn other_kinds_and_subresources_pass_untouched() {
        let o = obj(json!({}), json!({}));
        let mut req = request("BackupRun", "UPDATE", o.clone(), o.clone());
        req.sub_resource = Some("status".into());
        let resp = rv(&req, "t");
        assert!(resp.allowed && resp.patch.is_none());
        let mut req = request("BackupRun", "CREATE", o, Value::Null);
        req.kind.group = "batch".into();
        assert!(rv(&req, "t").patch.is_none());
    }

    fn restore(annotations: Value, phase: Option<&str>) -> Value {
        let mut o = json!({"apiVersion": "dataguardian.io/v1alpha1", "kind": "RestoreRun",
               "metadata": {"name": "n", "namespace": "shop", "annotations": annotations},
               "spec": {"overwrite": true}});
        if let Some(p) = phase {
            o["status"] = json!({"phase": p});
        }
        o
    }

    fn approve_as(
        user: &str,
        new: Value,
        old: Value,
        authorization: Authorization,
    ) -> (AdmissionResponse, AdmissionRequest<DynamicObject>) {
        let mut req = request("RestoreRun", "UPDATE", new, old);
        req.user_info.username = Some(user.into());
        let resp = review(&req, "2026-12-07T12:00:00Z", &authorization);
        (resp, req)
    }

    #[test]
    fn an_approver_who_is_not_the_requester_is_stamped() {
        let old = restore(json!({REQUESTED_BY: "alice"}), Some("AwaitingApproval"));
        let new = restore(
            json!({REQUESTED_BY: "alice", APPROVE: "1"}),
            Some("AwaitingApproval"),
        );
        let (resp, req) = approve_as("carol", new.clone(), old, Authorization::Allowed);
        assert!(approval_to_authorize(&req));
        assert!(resp.allowed, "{}", resp.result.message);
        let out = patched(&resp, &new);
        assert_eq!(out["metadata"]["annotations"][APPROVED_BY], "carol");
        assert_eq!(
            out["metadata"]["annotations"][APPROVED_AT],
            "2026-12-07T12:00:00Z"
        );
    }

    #[test]
    fn approvals_are_refused_with_the_exact_reason() {
        let old = restore(json!({REQUESTED_BY: "alice"}), Some("AwaitingApproval"));
        let asks = restore(
            json!({REQUESTED_BY: "alice", APPROVE: "1"}),
            Some("AwaitingApproval"),
        );
        let cases = [
            ("alice", Authorization::Allowed, "cannot approve it"),
            (
                "bob",
                Authorization::Denied(String::new()),
                "bob may not approve restoreruns in namespace shop",
            ),
            (
                "bob",
                Authorization::Unavailable("timeout".into()),
                "cannot check whether bob may approve",
            ),
        ];
        for (user, authz, expected) in cases {
            let (resp, _) = approve_as(user, asks.clone(), old.clone(), authz);
            assert!(!resp.allowed, "{user}");
            assert!(
                resp.result.message.contains(expected),
                "{user}: {}",
                resp.result.message
            );
        }
        // No requester recorded: nobody can be a second person.
        let (resp, _) = approve_as(
            "carol",
            restore(json!({APPROVE: "1"}), None),
            restore(json!({}), None),
            Authorization::Allowed,
        );
        assert!(resp.result.message.contains("records no requester"));
        // Too late.
        let (resp, _) = approve_as(
            "carol",
            restore(
                json!({REQUESTED_BY: "alice", APPROVE: "1"}),
                Some("Running"),
            ),
            restore(json!({REQUESTED_BY: "alice"}), Some("Running")),
            Authorization::Allowed,
        );
        assert!(
            resp.result.message.contains("is Running"),
            "{}",
            resp.result.message
        );
    }

    #[test]
    fn stamps_cannot_be_forged_and_are_withdrawn_with_the_approval() {
        let old = restore(json!({REQUESTED_BY: "alice"}), None);
        let forged = restore(
            json!({REQUESTED_BY: "alice", APPROVED_BY: "carol", APPROVED_AT: "x"}),
            None,
        );
        let (resp, req) = approve_as("alice", forged, old, Authorization::NotAsked);
        assert!(!approval_to_authorize(&req));
        assert!(!resp.allowed);
        assert!(resp.result.message.contains("never by hand"));
        // Withdrawing removes both stamps.
        let approved = restore(
            json!({REQUESTED_BY: "alice", APPROVE: "1", APPROVED_BY: "carol", APPROVED_AT: "t"}),
            None,
        );
        let withdrawn = restore(
            json!({REQUESTED_BY: "alice", APPROVED_BY: "carol", APPROVED_AT: "t"}),
            None,
        );
        let (resp, _) = approve_as(
            "alice",
            withdrawn.clone(),
            approved,
            Authorization::NotAsked,
        );
        assert!(resp.allowed);
        let out = patched(&resp, &withdrawn);
        assert!(out["metadata"]["annotations"].get(APPROVED_BY).is_none());
        assert!(out["metadata"]["annotations"].get(APPROVED_AT).is_none());
        // Created approved: refused.
        let resp = rv(
            &request(
                "RestoreRun",
                "CREATE",
                restore(json!({APPROVED_BY: "carol"}), None),
                Value::Null,
            ),
            "t",
        );
        assert!(!resp.allowed);
        assert!(resp.result.message.contains("cannot be created approved"));
    }
}
