//! The authorizer: the privileged-group check (`system:masters`) and then RBAC over the stored
//! Roles, ClusterRoles and bindings, visited in kube-apiserver's order (ClusterRoleBindings,
//! then the RoleBindings of the request's namespace).

use serde_json::Value;

use super::UserInfo;
use super::rbac::{self, Attributes, PolicyRule, RoleRef, Subject};
use crate::store::Inner;

/// The group whose members may do anything.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// An authorization decision with kube-apiserver's reason text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason names the binding (`RBAC: allowed by ...`), empty for
    /// `system:masters`.
    Allow(String),
    /// Not allowed; the reason is empty unless some binding could not be resolved
    /// (`RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`).
    Deny(String),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// A stored binding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Name.
    pub name: String,
    /// Namespace (`""` for ClusterRoleBindings).
    pub namespace: String,
    /// The role it grants.
    pub role_ref: RoleRef,
    /// Who it grants it to.
    pub subjects: Vec<Subject>,
}

fn binding_of(obj: &Value) -> Binding {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Binding {
        name: s("/metadata/name"),
        namespace: s("/metadata/namespace"),
        role_ref: obj
            .get("roleRef")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default(),
        subjects: obj
            .get("subjects")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default(),
    }
}

/// The rules of a stored Role or ClusterRole object.
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

/// ClusterRoleBindings (`namespace` `None`) or the RoleBindings of one namespace.
pub fn bindings(inner: &Inner, namespace: Option<&str>) -> Vec<Binding> {
    let (resource, ns) = match namespace {
        None => ("clusterrolebindings", None),
        Some(n) => ("rolebindings", Some(n)),
    };
    inner
        .list(rbac::GROUP, resource, ns)
        .map(|(_, o)| binding_of(o))
        .collect()
}

/// A stored Role (`namespace` non-empty) or ClusterRole.
pub fn role_object<'a>(inner: &'a Inner, namespace: &str, name: &str) -> Option<&'a Value> {
    let key = crate::store::ObjKey {
        group: rbac::GROUP.into(),
        resource: if namespace.is_empty() {
            "clusterroles"
        } else {
            "roles"
        }
        .into(),
        namespace: namespace.into(),
        name: name.into(),
    };
    inner.objects.get(&key)
}

/// The rules a binding's roleRef grants, or the listers' NotFound message.
pub fn role_ref_rules(
    inner: &Inner,
    role_ref: &RoleRef,
    binding_namespace: &str,
) -> Result<Vec<PolicyRule>, String> {
    match role_ref.kind.as_str() {
        "ClusterRole" => role_object(inner, "", &role_ref.name)
            .map(rules_of)
            .ok_or_else(|| {
                format!(
                    "clusterrole.rbac.authorization.k8s.io {} not found",
                    rbac::quote(&role_ref.name)
                )
            }),
        "Role" if !binding_namespace.is_empty() => {
            role_object(inner, binding_namespace, &role_ref.name)
                .map(rules_of)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {} not found",
                        rbac::quote(&role_ref.name)
                    )
                })
        }
        other => Err(format!("unsupported role reference kind: {other:?}")),
    }
}

/// Visits every rule granted to `user` for `namespace` (cluster bindings first). The visitor
/// gets the binding and subject that granted it; returning `false` stops the walk. Returns the
/// resolution errors met on the way.
pub fn visit_rules(
    inner: &Inner,
    user: &UserInfo,
    namespace: &str,
    mut visit: impl FnMut(&Binding, &Subject, &PolicyRule) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut scopes = vec![None];
    if !namespace.is_empty() {
        scopes.push(Some(namespace));
    }
    for scope in scopes {
        for b in bindings(inner, scope) {
            let eval_ns = scope.unwrap_or("");
            let Some(subject) = b
                .subjects
                .iter()
                .find(|s| rbac::applies_to(user, s, eval_ns))
            else {
                continue;
            };
            match role_ref_rules(inner, &b.role_ref, &b.namespace) {
                Ok(rules) => {
                    for r in &rules {
                        if !visit(&b, subject, r) {
                            return errors;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    errors
}

/// All rules `user` holds in `namespace` (RBAC only), with resolution errors.
pub fn rules_for(
    inner: &Inner,
    user: &UserInfo,
    namespace: &str,
) -> (Vec<PolicyRule>, Vec<String>) {
    let mut rules = Vec::new();
    let errors = visit_rules(inner, user, namespace, |_, _, r| {
        rules.push(r.clone());
        true
    });
    (rules, errors)
}

/// Whether `user` is in the privileged group.
pub fn is_privileged(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == SYSTEM_MASTERS)
}

/// Authorizes a request.
pub fn authorize(inner: &Inner, a: &Attributes) -> Decision {
    if is_privileged(&a.user) {
        return Decision::Allow(String::new());
    }
    let mut allowed = None;
    let errors = visit_rules(inner, &a.user, &a.namespace, |b, s, r| {
        if rbac::rule_allows(a, r) {
            allowed = Some(format!(
                "RBAC: allowed by {}",
                rbac::describe_binding(&b.name, &b.namespace, &b.role_ref, s)
            ));
            return false;
        }
        true
    });
    match allowed {
        Some(reason) => Decision::Allow(reason),
        None if errors.is_empty() => Decision::Deny(String::new()),
        None if errors.len() == 1 => Decision::Deny(format!("RBAC: {}", errors[0])),
        None => Decision::Deny(format!("RBAC: [{}]", errors.join(", "))),
    }
}
