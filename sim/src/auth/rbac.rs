//! RBAC policy evaluation, pure: rules and their matching (`rbac/v1` `RuleAllows`), subjects,
//! the descriptions used in authorization reasons, and rule coverage for privilege-escalation
//! prevention (`Covers`, `BreakdownRule`, `CompactRules`, `CompactString`), all following
//! kube-apiserver's `plugin/pkg/auth/authorizer/rbac` and `pkg/registry/rbac/validation`.

use serde::{Deserialize, Deserializer, Serialize};

use super::UserInfo;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// `rbac/v1` `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`*` = all).
    #[serde(default, deserialize_with = "nullable")]
    pub verbs: Vec<String>,
    /// API groups (`""` = core, `*` = all).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub api_groups: Vec<String>,
    /// Resources, possibly `resource/subresource`, `*/subresource` or `*`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<String>,
    /// Object names the rule is limited to (empty = all).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resource_names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/apis/*`, `*`).
    #[serde(
        default,
        rename = "nonResourceURLs",
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl PolicyRule {
    /// A resource rule.
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        PolicyRule {
            verbs: strs(verbs),
            api_groups: strs(groups),
            resources: strs(resources),
            ..Default::default()
        }
    }

    /// A non-resource rule.
    pub fn non_resource(verbs: &[&str], urls: &[&str]) -> Self {
        PolicyRule {
            verbs: strs(verbs),
            non_resource_urls: strs(urls),
            ..Default::default()
        }
    }
}

/// `rbac/v1` `Subject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    #[serde(default)]
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, `""` for service accounts.
    #[serde(default)]
    pub api_group: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (service accounts).
    #[serde(default)]
    pub namespace: String,
}

/// `rbac/v1` `RoleRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    #[serde(default)]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// What a request asks to do (kube-apiserver's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or a
    /// special verb (`impersonate`, `bind`, `escalate`); lowercased HTTP method for
    /// non-resource requests.
    pub verb: String,
    /// Whether this is a resource request (`/api/...`, `/apis/...` with a resource).
    pub resource_request: bool,
    /// The URL path (non-resource requests).
    pub path: String,
    /// API group.
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, `log`, ...).
    pub subresource: String,
    /// Namespace (`""` = cluster scope or all namespaces).
    pub namespace: String,
    /// Object name (`""` for collections).
    pub name: String,
}

impl Attributes {
    /// A resource request.
    #[allow(clippy::too_many_arguments)]
    pub fn resource(
        user: &UserInfo,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// A non-resource request.
    pub fn non_resource(user: &UserInfo, verb: &str, path: &str) -> Self {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    /// The message of a 403 for these attributes (`responsewriters.forbiddenMessage`).
    pub fn forbidden_message(&self) -> String {
        let user = &self.user.name;
        if !self.resource_request {
            return format!(
                "User {} cannot {} path {}",
                quote(user),
                self.verb,
                quote(&self.path)
            );
        }
        let mut resource = self.resource.clone();
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        if self.namespace.is_empty() {
            format!(
                "User {} cannot {} resource {} in API group {} at the cluster scope",
                quote(user),
                self.verb,
                quote(&resource),
                quote(&self.api_group)
            )
        } else {
            format!(
                "User {} cannot {} resource {} in API group {} in the namespace {}",
                quote(user),
                self.verb,
                quote(&resource),
                quote(&self.api_group),
                quote(&self.namespace)
            )
        }
    }
}

/// Go's `%q` of a string.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn quote_list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ")
    )
}

fn has(set: &[String], want: &str) -> bool {
    set.iter().any(|s| s == want)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

/// `VerbMatches`.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

/// `APIGroupMatches`.
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == "*" || g == group)
}

/// `ResourceMatches`: `*`, an exact `resource[/subresource]`, or `*/subresource`.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

/// `ResourceNameMatches`: no names = all names.
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

/// `NonResourceURLMatches`: `*`, exact, or a `prefix*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// `RuleAllows`.
pub fn rule_allows(a: &Attributes, rule: &PolicyRule) -> bool {
    if a.resource_request {
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        return verb_matches(rule, &a.verb)
            && api_group_matches(rule, &a.api_group)
            && resource_matches(rule, &combined, &a.subresource)
            && resource_name_matches(rule, &a.name);
    }
    verb_matches(rule, &a.verb) && non_resource_url_matches(rule, &a.path)
}

/// The service-account user name `system:serviceaccount:NS:NAME`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// `appliesToUser`: whether `subject` (of a binding evaluated in `namespace`, `""` for cluster
/// role bindings) names `user`.
pub fn applies_to(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => has(&user.groups, &subject.name),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                namespace
            } else {
                subject.namespace.as_str()
            };
            !ns.is_empty() && user.name == service_account_user(ns, &subject.name)
        }
        _ => false,
    }
}

/// `describeSubject`.
pub fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    if s.kind == "ServiceAccount" {
        let ns = if s.namespace.is_empty() {
            binding_namespace
        } else {
            s.namespace.as_str()
        };
        return format!("{} {}", s.kind, quote(&format!("{}/{ns}", s.name)));
    }
    format!("{} {}", s.kind, quote(&s.name))
}

/// How an authorization reason names the binding that allowed a request.
pub fn describe_binding(
    name: &str,
    namespace: &str,
    role_ref: &RoleRef,
    subject: &Subject,
) -> String {
    if namespace.is_empty() {
        format!(
            "ClusterRoleBinding {} of {} {} to {}",
            quote(name),
            role_ref.kind,
            quote(&role_ref.name),
            describe_subject(subject, "")
        )
    } else {
        format!(
            "RoleBinding {} of {} {} to {}",
            quote(&format!("{name}/{namespace}")),
            role_ref.kind,
            quote(&role_ref.name),
            describe_subject(subject, namespace)
        )
    }
}

/// `BreakdownRule`: one rule per (group, resource, verb[, name]) and per (URL, verb).
pub fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                if rule.resource_names.is_empty() {
                    out.push(PolicyRule {
                        verbs: vec![v.clone()],
                        api_groups: vec![g.clone()],
                        resources: vec![r.clone()],
                        ..Default::default()
                    });
                } else {
                    for n in &rule.resource_names {
                        out.push(PolicyRule {
                            verbs: vec![v.clone()],
                            api_groups: vec![g.clone()],
                            resources: vec![r.clone()],
                            resource_names: vec![n.clone()],
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(PolicyRule {
                verbs: vec![v.clone()],
                non_resource_urls: vec![u.clone()],
                ..Default::default()
            });
        }
    }
    out
}

fn resource_covers_all(set: &[String], covers: &[String]) -> bool {
    if has(set, "*") || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        has(set, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(set, &format!("*/{sub}")))
    })
}

fn non_resource_url_covers(owner: &str, sub: &str) -> bool {
    owner == sub || (owner.ends_with('*') && sub.starts_with(owner.trim_end_matches('*')))
}

/// `ruleCovers`.
pub fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = sub.non_resource_urls.iter().all(|p| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| non_resource_url_covers(o, p))
    });
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// `Covers`: whether `owner` holds every permission of `servant`; else the missing atoms.
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let mut missing = Vec::new();
    for rule in servant {
        for sub in breakdown(rule) {
            if !owner.iter().any(|o| rule_covers(o, &sub)) {
                missing.push(sub);
            }
        }
    }
    (missing.is_empty(), missing)
}

/// `CompactRules`: simple rules (one group, one resource, at most one name) that differ only by
/// verb are merged.
pub fn compact(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let is_simple = r.resource_names.len() <= 1
            && r.non_resource_urls.is_empty()
            && r.api_groups.len() == 1
            && r.resources.len() == 1;
        if !is_simple {
            out.push(r.clone());
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == r.api_groups
                && s.resources == r.resources
                && s.resource_names == r.resource_names
        }) {
            Some(s) => s.verbs.extend(r.verbs.iter().cloned()),
            None => simple.push(r.clone()),
        }
    }
    out.extend(simple);
    out
}

/// `CompactString`: `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get" "list"]}`.
pub fn compact_string(r: &PolicyRule) -> String {
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", quote_list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:{}", quote_list(&r.resources)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!(
            "NonResourceURLs:{}",
            quote_list(&r.non_resource_urls)
        ));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{}", quote_list(&r.resource_names)));
    }
    if !r.verbs.is_empty() {
        parts.push(format!("Verbs:{}", quote_list(&r.verbs)));
    }
    format!("{{{}}}", parts.join(", "))
}

/// The message of `ConfirmNoEscalation` when `owner` does not cover `wanted`, else `None`.
pub fn escalation_message(
    user: &UserInfo,
    owner: &[PolicyRule],
    wanted: &[PolicyRule],
    resolution_errors: &[String],
) -> Option<String> {
    let (ok, missing) = covers(owner, wanted);
    if ok {
        return None;
    }
    let mut lines: Vec<String> = compact(&missing).iter().map(compact_string).collect();
    lines.sort();
    lines.dedup();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        quote(&user.name),
        quote_list(&user.groups),
        lines.join("\n")
    );
    if !resolution_errors.is_empty() {
        msg.push_str(&format!(
            "; resolution errors: [{}]",
            resolution_errors.join(" ")
        ));
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: strs(groups),
            ..Default::default()
        }
    }

    #[test]
    fn resource_rules_match_like_upstream() {
        let u = user("bob", &[]);
        let rule = PolicyRule::resource(&["get", "list"], &[""], &["pods", "pods/log"]);
        let a = |verb: &str, res: &str, sub: &str| {
            Attributes::resource(&u, verb, "", res, sub, "shop", "")
        };
        assert!(rule_allows(&a("get", "pods", ""), &rule));
        assert!(rule_allows(&a("get", "pods", "log"), &rule));
        assert!(!rule_allows(&a("get", "pods", "status"), &rule));
        assert!(!rule_allows(&a("create", "pods", ""), &rule));
        assert!(!rule_allows(
            &Attributes::resource(&u, "get", "apps", "pods", "", "shop", ""),
            &rule
        ));
        let status = PolicyRule::resource(&["*"], &["*"], &["*/status"]);
        assert!(rule_allows(&a("update", "jobs", "status"), &status));
        assert!(!rule_allows(&a("update", "jobs", ""), &status));
        let named = PolicyRule {
            resource_names: vec!["a".into()],
            ..PolicyRule::resource(&["get"], &[""], &["secrets"])
        };
        assert!(rule_allows(
            &Attributes::resource(&u, "get", "", "secrets", "", "x", "a"),
            &named
        ));
        assert!(!rule_allows(
            &Attributes::resource(&u, "get", "", "secrets", "", "x", "b"),
            &named
        ));
        assert!(
            !rule_allows(
                &Attributes::resource(&u, "list", "", "secrets", "", "x", ""),
                &named
            ),
            "a named rule never allows a list"
        );
    }

    #[test]
    fn non_resource_rules_match_prefixes() {
        let u = user("bob", &[]);
        let rule = PolicyRule::non_resource(&["get"], &["/healthz", "/apis/*"]);
        assert!(rule_allows(
            &Attributes::non_resource(&u, "get", "/healthz"),
            &rule
        ));
        assert!(rule_allows(
            &Attributes::non_resource(&u, "get", "/apis/apps/v1"),
            &rule
        ));
        assert!(!rule_allows(
            &Attributes::non_resource(&u, "get", "/api"),
            &rule
        ));
        assert!(!rule_allows(
            &Attributes::non_resource(&u, "post", "/healthz"),
            &rule
        ));
    }

    #[test]
    fn subjects_and_descriptions() {
        let sa = service_account_user("shop", "op");
        let u = user(&sa, &["system:serviceaccounts"]);
        let s = Subject {
            kind: "ServiceAccount".into(),
            name: "op".into(),
            ..Default::default()
        };
        assert!(applies_to(&u, &s, "shop"));
        assert!(!applies_to(&u, &s, ""), "a CRB subject needs a namespace");
        assert!(!applies_to(&u, &s, "other"));
        let g = Subject {
            kind: "Group".into(),
            name: "system:serviceaccounts".into(),
            ..Default::default()
        };
        assert!(applies_to(&u, &g, ""));
        let rr = RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: "view".into(),
        };
        assert_eq!(
            describe_binding("b", "shop", &rr, &s),
            r#"RoleBinding "b/shop" of ClusterRole "view" to ServiceAccount "op/shop""#
        );
        assert_eq!(
            describe_binding("cluster-admin", "", &rr, &g),
            r#"ClusterRoleBinding "cluster-admin" of ClusterRole "view" to Group "system:serviceaccounts""#
        );
    }

    #[test]
    fn forbidden_messages() {
        let u = user("bob", &[]);
        let a = Attributes::resource(
            &u,
            "create",
            "dataguardian.io",
            "backupruns",
            "",
            "shop",
            "",
        );
        assert_eq!(
            a.forbidden_message(),
            r#"User "bob" cannot create resource "backupruns" in API group "dataguardian.io" in the namespace "shop""#
        );
        let a = Attributes::resource(&u, "get", "", "nodes", "status", "", "n1");
        assert_eq!(
            a.forbidden_message(),
            r#"User "bob" cannot get resource "nodes/status" in API group "" at the cluster scope"#
        );
        let a = Attributes::non_resource(&u, "get", "/metrics");
        assert_eq!(
            a.forbidden_message(),
            r#"User "bob" cannot get path "/metrics""#
        );
    }

    #[test]
    fn coverage_and_escalation_message() {
        let owner = vec![
            PolicyRule::resource(&["get", "list"], &[""], &["pods", "configmaps"]),
            PolicyRule::resource(&["*"], &["batch"], &["*/status"]),
            PolicyRule::non_resource(&["get"], &["/apis/*"]),
        ];
        assert!(covers(&owner, &[PolicyRule::resource(&["get"], &[""], &["pods"])]).0);
        assert!(
            covers(
                &owner,
                &[PolicyRule::resource(
                    &["patch"],
                    &["batch"],
                    &["jobs/status"]
                )]
            )
            .0
        );
        assert!(
            covers(
                &owner,
                &[PolicyRule::non_resource(&["get"], &["/apis/apps"])]
            )
            .0
        );
        assert!(
            !covers(&owner, &[PolicyRule::resource(&["get"], &["*"], &["pods"])]).0,
            "a wildcard is covered only by a wildcard"
        );
        let named = PolicyRule {
            resource_names: vec!["x".into()],
            ..PolicyRule::resource(&["get"], &[""], &["pods"])
        };
        assert!(covers(&owner, &[named]).0);
        let u = user("bob", &["dev", "system:authenticated"]);
        let msg = escalation_message(
            &u,
            &owner,
            &[PolicyRule::resource(
                &["get", "delete", "create"],
                &["", "apps"],
                &["pods", "deployments"],
            )],
            &[],
        )
        .unwrap();
        assert_eq!(
            msg,
            "user \"bob\" (groups=[\"dev\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"deployments\"], Verbs:[\"get\" \"delete\" \"create\"]}\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"create\"]}\n\
             {APIGroups:[\"apps\"], Resources:[\"deployments\"], Verbs:[\"get\" \"delete\" \"create\"]}\n\
             {APIGroups:[\"apps\"], Resources:[\"pods\"], Verbs:[\"get\" \"delete\" \"create\"]}"
        );
    }
}
