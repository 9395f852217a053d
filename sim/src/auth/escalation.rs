//! The RBAC registry's strategies: defaulting and validation of Roles, ClusterRoles and
//! bindings (roleRef immutable), and privilege-escalation prevention — a requester may only
//! create or update a role granting what they already hold (or with the `escalate` verb), and
//! a binding to a role whose permissions they hold (or with the `bind` verb), as
//! kube-apiserver's `pkg/registry/rbac` storage does.

use serde_json::{Value, json};

use super::UserInfo;
use super::authorizer::{self, Decision};
use super::rbac::{self, Attributes, GROUP, PolicyRule, RoleRef, quote};
use crate::error::ApiError;
use crate::resources::ResourceDef;
use crate::store::Inner;

type FieldErr = (String, &'static str, String);

fn go_string_slice(v: &[String]) -> String {
    format!(
        "[]string{{{}}}",
        v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
    )
}

fn not_supported(field: String, value: &str, supported: &[&str]) -> FieldErr {
    (
        field,
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {}: supported values: {}",
            quote(value),
            supported
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn required(field: String, detail: &str) -> FieldErr {
    let msg = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    (field, "FieldValueRequired", msg)
}

/// `SetDefaults_Subject`: users and groups get the RBAC API group.
pub fn default_subjects(obj: &mut Value) {
    let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) else {
        return;
    };
    for s in subjects {
        let Some(m) = s.as_object_mut() else { continue };
        if m.get("apiGroup")
            .and_then(Value::as_str)
            .is_some_and(|g| !g.is_empty())
        {
            continue;
        }
        let group = match m.get("kind").and_then(Value::as_str) {
            Some("User" | "Group") => GROUP,
            Some("ServiceAccount") => "",
            _ => continue,
        };
        m.insert("apiGroup".into(), json!(group));
    }
}

/// Validation of a Role (`namespaced`) or ClusterRole's rules.
pub fn validate_role(obj: &Value, namespaced: bool) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let rules = obj
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, r) in rules.iter().enumerate() {
        let rule: PolicyRule = serde_json::from_value(r.clone()).unwrap_or_default();
        let p = format!("rules[{i}]");
        if rule.verbs.is_empty() {
            errs.push(required(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        if !rule.non_resource_urls.is_empty() {
            let v = go_string_slice(&rule.non_resource_urls);
            if namespaced {
                errs.push((
                    format!("{p}.nonResourceURLs"),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {v}: namespaced rules cannot apply to non-resource URLs"
                    ),
                ));
            }
            if !rule.api_groups.is_empty()
                || !rule.resources.is_empty()
                || !rule.resource_names.is_empty()
            {
                errs.push((
                    format!("{p}.nonResourceURLs"),
                    "FieldValueInvalid",
                    format!("Invalid value: {v}: rules cannot apply to both regular resources and non-resource URLs"),
                ));
            }
            continue;
        }
        if rule.api_groups.is_empty() {
            errs.push(required(
                format!("{p}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if rule.resources.is_empty() {
            errs.push(required(
                format!("{p}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

/// Validation of a RoleBinding (`namespaced`) or ClusterRoleBinding.
pub fn validate_binding(obj: &Value, namespaced: bool) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let rr: RoleRef = obj
        .get("roleRef")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    if rr.api_group != GROUP {
        errs.push(not_supported(
            "roleRef.apiGroup".into(),
            &rr.api_group,
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&rr.kind.as_str()) {
        errs.push(not_supported("roleRef.kind".into(), &rr.kind, kinds));
    }
    if rr.name.is_empty() {
        errs.push(required("roleRef.name".into(), ""));
    }
    let subjects: Vec<rbac::Subject> = obj
        .get("subjects")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    for (i, s) in subjects.iter().enumerate() {
        let p = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(required(format!("{p}.name"), ""));
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.api_group.is_empty() {
                    errs.push(not_supported(format!("{p}.apiGroup"), &s.api_group, &[""]));
                }
                if !namespaced && s.namespace.is_empty() {
                    errs.push(required(format!("{p}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if s.api_group != GROUP {
                    errs.push(not_supported(
                        format!("{p}.apiGroup"),
                        &s.api_group,
                        &[GROUP],
                    ));
                }
            }
            other => errs.push(not_supported(
                format!("{p}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// Update validation of a binding: `roleRef` cannot change.
pub fn validate_binding_update(old: &Value, new: &Value) -> Vec<FieldErr> {
    if old.get("roleRef") == new.get("roleRef") {
        return Vec::new();
    }
    let rr: RoleRef = new
        .get("roleRef")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    vec![(
        "roleRef".into(),
        "FieldValueInvalid",
        format!(
            "Invalid value: rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}: cannot change roleRef",
            quote(&rr.api_group),
            quote(&rr.kind),
            quote(&rr.name)
        ),
    )]
}

fn forbidden(rd: &ResourceDef, name: &str, msg: String) -> ApiError {
    ApiError::forbidden(
        &rd.group,
        &rd.plural,
        name,
        format!(
            "{}.{} {} is forbidden: {msg}",
            rd.plural,
            rd.group,
            quote(name)
        ),
    )
}

fn without_gc_fields(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "ownerReferences",
            "finalizers",
            "managedFields",
            "resourceVersion",
            "generation",
        ] {
            m.remove(f);
        }
    }
    v
}

fn allowed(inner: &Inner, a: &Attributes) -> bool {
    matches!(authorizer::authorize(inner, a), Decision::Allow(_))
}

fn confirm_no_escalation(
    inner: &Inner,
    user: &UserInfo,
    namespace: &str,
    wanted: &[PolicyRule],
) -> Option<String> {
    let (owner, errors) = authorizer::rules_for(inner, user, namespace);
    rbac::escalation_message(user, &owner, wanted, &errors)
}

/// Refuses a create (`old` `None`) or update of an RBAC object by `user` that would grant
/// permissions `user` does not hold.
pub fn check(
    inner: &Inner,
    rd: &ResourceDef,
    ns: &str,
    new: &Value,
    old: Option<&Value>,
    user: &UserInfo,
) -> Result<(), ApiError> {
    if rd.group != GROUP || authorizer::is_privileged(user) {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = if rd.namespaced { ns } else { "" };
    match rd.plural.as_str() {
        "roles" | "clusterroles" => {
            let rules = authorizer::rules_of(new);
            let agg_changed = new.get("aggregationRule").is_some_and(|a| !a.is_null())
                && old.is_none_or(|o| o.get("aggregationRule") != new.get("aggregationRule"));
            let rules_changed = old.is_none_or(|o| authorizer::rules_of(o) != rules);
            if !rules_changed && !agg_changed {
                return Ok(());
            }
            let request_name = if old.is_some() { name } else { "" };
            let escalate =
                Attributes::resource(user, "escalate", GROUP, &rd.plural, "", ns, request_name);
            if allowed(inner, &escalate) {
                return Ok(());
            }
            if rules_changed && let Some(msg) = confirm_no_escalation(inner, user, ns, &rules) {
                return Err(forbidden(rd, name, msg));
            }
            if agg_changed {
                let full = [
                    PolicyRule::resource(&["*"], &["*"], &["*"]),
                    PolicyRule::non_resource(&["*"], &["*"]),
                ];
                if confirm_no_escalation(inner, user, ns, &full).is_some() {
                    return Err(forbidden(
                        rd,
                        name,
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    ));
                }
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            if let Some(o) = old
                && without_gc_fields(o) == without_gc_fields(new)
            {
                return Ok(());
            }
            let rr: RoleRef = new
                .get("roleRef")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default();
            let resource = match rr.kind.as_str() {
                "ClusterRole" => "clusterroles",
                "Role" => "roles",
                _ => "",
            };
            if !resource.is_empty() {
                let bind =
                    Attributes::resource(user, "bind", &rr.api_group, resource, "", ns, &rr.name);
                if allowed(inner, &bind) {
                    return Ok(());
                }
            }
            let rules = match rr.kind.as_str() {
                "ClusterRole" => authorizer::role_object(inner, "", &rr.name)
                    .map(authorizer::rules_of)
                    .ok_or_else(|| ApiError::not_found(GROUP, "clusterroles", &rr.name))?,
                _ => authorizer::role_object(inner, ns, &rr.name)
                    .map(authorizer::rules_of)
                    .ok_or_else(|| ApiError::not_found(GROUP, "roles", &rr.name))?,
            };
            match confirm_no_escalation(inner, user, ns, &rules) {
                Some(msg) => Err(forbidden(rd, name, msg)),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}
