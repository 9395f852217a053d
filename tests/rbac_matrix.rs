//! The RBAC manifests in `config/rbac/` against the permission matrix in `docs/rbac.md`.
//!
//! Every cell of the matrix is evaluated with the Kubernetes RBAC matching rules
//! (API groups, resources and `*/subresource`, verbs, `*` wildcards, resourceNames) after
//! ClusterRole aggregation (our roles into the built-in `view`/`edit`/`admin`, `view` into
//! `edit`, `edit` into `admin`). The check fails in both directions: a manifest that grants
//! less than a `yes` cell, or anything that is not a `yes` cell.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;

/// The verb columns of the matrix, in order.
const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "approve",
];
const CONTROLLER_ROLE: &str = "dataguardian-controller";
const LEADER_ELECTION_ROLE: &str = "dataguardian-leader-election";
const OPERATOR_NAMESPACE: &str = "dataguardian-system";
const SERVICE_ACCOUNT: &str = "dataguardian";
const API_GROUP: &str = "dataguardian.io";
const BUILT_IN: [&str; 3] = ["view", "edit", "admin"];

/// Kubernetes RBAC evaluation, after `pkg/apis/rbac/v1/evaluation_helpers.go`.
mod eval {
    use super::*;

    /// One resource request, as the authorizer sees it.
    #[derive(Debug, Clone, Copy)]
    pub struct Request<'a> {
        pub verb: &'a str,
        /// `""` for the core group.
        pub group: &'a str,
        pub resource: &'a str,
        pub subresource: Option<&'a str>,
        /// The object name, when the verb addresses one object.
        pub name: Option<&'a str>,
    }

    fn has(list: &Option<Vec<String>>, item: &str) -> bool {
        list.iter().flatten().any(|x| x == "*" || x == item)
    }

    fn resource_matches(rule: &PolicyRule, req: &Request) -> bool {
        let combined = match req.subresource {
            Some(sub) => format!("{}/{sub}", req.resource),
            None => req.resource.to_owned(),
        };
        rule.resources.iter().flatten().any(|r| {
            if r == "*" || *r == combined {
                return true;
            }
            // "*/status" matches the status subresource of every resource.
            match req.subresource {
                Some(sub) => r.strip_prefix("*/") == Some(sub),
                None => false,
            }
        })
    }

    fn resource_name_matches(rule: &PolicyRule, req: &Request) -> bool {
        match &rule.resource_names {
            None => true,
            Some(names) if names.is_empty() => true,
            Some(names) => req.name.is_some_and(|n| names.iter().any(|x| x == n)),
        }
    }

    /// Whether one rule allows the request.
    pub fn rule_allows(rule: &PolicyRule, req: &Request) -> bool {
        rule.verbs.iter().any(|v| v == "*" || v == req.verb)
            && has(&rule.api_groups, req.group)
            && resource_matches(rule, req)
            && resource_name_matches(rule, req)
    }

    /// Whether any rule allows the request (RBAC is purely additive).
    pub fn allows(rules: &[PolicyRule], req: &Request) -> bool {
        rules.iter().any(|r| rule_allows(r, req))
    }

    /// `metav1.LabelSelector` semantics: all of matchLabels and matchExpressions hold.
    pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        let labels_ok = sel
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        });
        labels_ok && exprs_ok
    }

    /// What the ClusterRole aggregation controller does: every ClusterRole with an
    /// aggregationRule gets the union of the rules of all other ClusterRoles matched by
    /// its selectors; repeated until nothing changes, so chains (view → edit → admin) settle.
    pub fn aggregate(roles: &mut BTreeMap<String, ClusterRole>) {
        loop {
            let mut changed = false;
            let names: Vec<String> = roles.keys().cloned().collect();
            for name in &names {
                let Some(selectors) = roles[name]
                    .aggregation_rule
                    .as_ref()
                    .and_then(|a| a.cluster_role_selectors.clone())
                else {
                    continue;
                };
                let mut rules: Vec<PolicyRule> = Vec::new();
                for (other_name, other) in roles.iter() {
                    if other_name == name {
                        continue;
                    }
                    let labels = other.metadata.labels.clone().unwrap_or_default();
                    if selectors.iter().any(|s| selector_matches(s, &labels)) {
                        for rule in other.rules.iter().flatten() {
                            if !rules.contains(rule) {
                                rules.push(rule.clone());
                            }
                        }
                    }
                }
                let role = roles.get_mut(name).expect("name from keys");
                if role.rules.as_ref() != Some(&rules) {
                    role.rules = Some(rules);
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// The built-in user-facing ClusterRoles, as far as aggregation is concerned: `view` is
    /// labelled into `edit`, `edit` into `admin`, and each aggregates its own label.
    pub fn built_in_roles() -> Vec<ClusterRole> {
        let role = |name: &str, selects: &str, labelled: Option<&str>| ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: labelled.map(|l| {
                    BTreeMap::from([(
                        format!("rbac.authorization.k8s.io/aggregate-to-{l}"),
                        "true".to_owned(),
                    )])
                }),
                ..Default::default()
            },
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        format!("rbac.authorization.k8s.io/aggregate-to-{selects}"),
                        "true".to_owned(),
                    )])),
                    ..Default::default()
                }]),
            }),
            rules: None,
        };
        vec![
            role("view", "view", Some("edit")),
            role("edit", "edit", Some("admin")),
            role("admin", "admin", None),
        ]
    }
}

/// The manifests in `config/rbac/`.
#[derive(Debug, Clone, Default)]
struct Manifests {
    cluster_roles: BTreeMap<String, ClusterRole>,
    /// Keyed by (namespace, name).
    roles: BTreeMap<(String, String), Role>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: Vec<RoleBinding>,
    service_accounts: Vec<ServiceAccount>,
    /// The YAML files that were read (file names).
    files: BTreeSet<String>,
}

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().expect("every manifest has metadata.name")
}

/// Deserializes one manifest into its typed k8s-openapi object.
fn parse<T: serde::de::DeserializeOwned>(file: &str, kind: &str, value: serde_yaml::Value) -> T {
    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{file}: invalid {kind}: {e}"))
}

impl Manifests {
    fn load() -> Manifests {
        let dir = repo_path("config/rbac");
        let mut m = Manifests::default();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        entries.sort();
        for path in entries {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).expect("readable manifest");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{file}: invalid YAML: {e}"));
                if value.is_null() {
                    continue;
                }
                m.add(&file, value);
            }
            m.files.insert(file);
        }
        m
    }

    fn add(&mut self, file: &str, value: serde_yaml::Value) {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_else(|| panic!("{file}: document without kind"))
            .to_owned();
        match kind.as_str() {
            "ClusterRole" => {
                let role: ClusterRole = parse(file, &kind, value);
                let name = name_of(&role.metadata);
                assert!(
                    self.cluster_roles.insert(name.clone(), role).is_none(),
                    "{file}: duplicate ClusterRole {name}"
                );
            }
            "Role" => {
                let role: Role = parse(file, &kind, value);
                let key = (
                    role.metadata
                        .namespace
                        .clone()
                        .expect("Role has a namespace"),
                    name_of(&role.metadata),
                );
                assert!(
                    self.roles.insert(key.clone(), role).is_none(),
                    "{file}: duplicate Role {key:?}"
                );
            }
            "ClusterRoleBinding" => self.cluster_role_bindings.push(parse(file, &kind, value)),
            "RoleBinding" => self.role_bindings.push(parse(file, &kind, value)),
            "ServiceAccount" => self.service_accounts.push(parse(file, &kind, value)),
            "Kustomization" => {}
            other => panic!("{file}: unexpected kind {other} in config/rbac"),
        }
    }

    /// Our ClusterRoles plus the built-in ones, after aggregation.
    fn effective_cluster_roles(&self) -> BTreeMap<String, ClusterRole> {
        let mut all = self.cluster_roles.clone();
        for role in eval::built_in_roles() {
            let name = name_of(&role.metadata);
            assert!(
                !all.contains_key(&name),
                "config/rbac must not redefine the built-in {name}"
            );
            all.insert(name, role);
        }
        eval::aggregate(&mut all);
        all
    }
}

/// One row of the permission matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    role: String,
    /// `""` for the core group (written `core` in the document).
    group: String,
    resource: String,
    subresource: Option<String>,
    /// verb → allowed, for every column in [`VERBS`] (for any name: a cell `only NAME` is
    /// `false` here and listed in `named`).
    cells: BTreeMap<String, bool>,
    /// verb → the one object name it is granted for (`only NAME` cells: a rule with
    /// `resourceNames`).
    named: BTreeMap<String, String>,
}

impl Row {
    fn resource_label(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        match &self.subresource {
            Some(sub) => format!("{group}/{}/{sub}", self.resource),
            None => format!("{group}/{}", self.resource),
        }
    }
}

/// Parses the table between the `rbac-matrix` markers of `docs/rbac.md`.
fn parse_matrix(doc: &str) -> Result<Vec<Row>, String> {
    let begin = doc
        .find("<!-- rbac-matrix:begin -->")
        .ok_or("docs/rbac.md: missing <!-- rbac-matrix:begin --> marker")?;
    let end = doc
        .find("<!-- rbac-matrix:end -->")
        .ok_or("docs/rbac.md: missing <!-- rbac-matrix:end --> marker")?;
    let lines: Vec<&str> = doc[begin..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines.first().ok_or("matrix: no header")?);
    let mut expected_header = vec!["Role".to_owned(), "Resource".to_owned()];
    expected_header.extend(VERBS.iter().map(|v| v.to_string()));
    if header != expected_header {
        return Err(format!(
            "matrix header is {header:?}, expected {expected_header:?}"
        ));
    }
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for line in lines.iter().skip(2) {
        let c = cells(line);
        if c.len() != 2 + VERBS.len() {
            return Err(format!("matrix row has {} cells: {line}", c.len()));
        }
        let parts: Vec<&str> = c[1].split('/').collect();
        let (group, resource, subresource) = match parts.as_slice() {
            [g, r] => (*g, *r, None),
            [g, r, s] => (*g, *r, Some(s.to_string())),
            _ => {
                return Err(format!(
                    "matrix resource {:?} is not group/resource[/sub]",
                    c[1]
                ));
            }
        };
        let mut row = Row {
            role: c[0].clone(),
            group: if group == "core" {
                String::new()
            } else {
                group.to_owned()
            },
            resource: resource.to_owned(),
            subresource,
            cells: BTreeMap::new(),
            named: BTreeMap::new(),
        };
        for (verb, cell) in VERBS.iter().zip(&c[2..]) {
            let allowed = match cell.as_str() {
                "yes" => true,
                "no" => false,
                other => match other.strip_prefix("only ") {
                    Some(name) if !name.trim().is_empty() => {
                        row.named.insert(verb.to_string(), name.trim().to_owned());
                        false
                    }
                    _ => {
                        return Err(format!(
                            "matrix cell {other:?} is not yes/no/only NAME: {line}"
                        ));
                    }
                },
            };
            row.cells.insert(verb.to_string(), allowed);
        }
        if !seen.insert((row.role.clone(), row.resource_label())) {
            return Err(format!("matrix row repeated: {line}"));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err("matrix has no rows".into());
    }
    Ok(rows)
}

fn load_matrix() -> Vec<Row> {
    let doc = std::fs::read_to_string(repo_path("docs/rbac.md")).expect("docs/rbac.md exists");
    parse_matrix(&doc).unwrap_or_else(|e| panic!("{e}"))
}

/// The rules a matrix role name refers to, and whether it is one of ours.
fn rules_of<'a>(
    role: &str,
    manifests: &'a Manifests,
    effective: &'a BTreeMap<String, ClusterRole>,
) -> Option<Vec<PolicyRule>> {
    if let Some(cr) = effective.get(role) {
        return Some(cr.rules.clone().unwrap_or_default());
    }
    let mut found = manifests.roles.iter().filter(|((_, name), _)| name == role);
    let (_, r) = found.next()?;
    assert!(found.next().is_none(), "Role name {role} is ambiguous");
    Some(r.rules.clone().unwrap_or_default())
}

/// Compares manifests and matrix; returns every discrepancy (empty = they agree).
fn check(manifests: &Manifests, rows: &[Row]) -> Vec<String> {
    let mut errors = Vec::new();
    let effective = manifests.effective_cluster_roles();

    // 1. Every cell, evaluated with the RBAC rules after aggregation.
    for row in rows {
        let Some(rules) = rules_of(&row.role, manifests, &effective) else {
            errors.push(format!(
                "matrix names role {:?}, which is neither in config/rbac nor built in",
                row.role
            ));
            continue;
        };
        for (verb, &documented) in &row.cells {
            let req = eval::Request {
                verb,
                group: &row.group,
                resource: &row.resource,
                subresource: row.subresource.as_deref(),
                name: None,
            };
            if let Some(name) = row.named.get(verb) {
                let named = eval::Request {
                    name: Some(name),
                    ..req
                };
                if !eval::allows(&rules, &named) {
                    errors.push(format!(
                        "{}: `{verb}` on {} {name}: docs/rbac.md says only that one, the manifests do not grant it",
                        row.role,
                        row.resource_label(),
                    ));
                }
            }
            let granted = eval::allows(&rules, &req);
            if granted != documented {
                errors.push(format!(
                    "{}: `{verb}` on {}: docs/rbac.md says {}, the manifests {}",
                    row.role,
                    row.resource_label(),
                    if documented { "yes" } else { "no" },
                    if granted {
                        "grant it"
                    } else {
                        "do not grant it"
                    },
                ));
            }
        }
    }

    // 2. Nothing granted beyond the documented `yes` cells.
    let documented_yes: BTreeSet<(String, String, String)> = rows
        .iter()
        .flat_map(|r| {
            r.cells
                .iter()
                .filter(|(_, yes)| **yes)
                .map(move |(verb, _)| (r.role.clone(), r.resource_label(), verb.clone()))
        })
        .collect();
    let mut our_roles: Vec<(String, Vec<PolicyRule>)> = manifests
        .cluster_roles
        .iter()
        .map(|(n, r)| (n.clone(), r.rules.clone().unwrap_or_default()))
        .collect();
    our_roles.extend(
        manifests
            .roles
            .iter()
            .map(|((_, n), r)| (n.clone(), r.rules.clone().unwrap_or_default())),
    );
    let documented_named: BTreeSet<(String, String, String, String)> = rows
        .iter()
        .flat_map(|r| {
            r.named.iter().map(move |(verb, name)| {
                (
                    r.role.clone(),
                    r.resource_label(),
                    verb.clone(),
                    name.clone(),
                )
            })
        })
        .collect();
    for (role, rules) in &our_roles {
        errors.extend(undocumented_grants(
            role,
            rules,
            &documented_yes,
            &documented_named,
            false,
        ));
    }
    for role in BUILT_IN {
        let rules = effective[role].rules.clone().unwrap_or_default();
        errors.extend(undocumented_grants(
            role,
            &rules,
            &documented_yes,
            &documented_named,
            true,
        ));
    }

    // 3. Every role of ours appears in the matrix.
    let matrix_roles: BTreeSet<&str> = rows.iter().map(|r| r.role.as_str()).collect();
    for (role, _) in &our_roles {
        if !matrix_roles.contains(role.as_str()) {
            errors.push(format!("role {role} has no rows in docs/rbac.md"));
        }
    }
    errors
}

/// Every (resource, verb) a role's rules grant that the matrix does not mark `yes` (or, for a
/// rule with `resourceNames`, `only NAME` with exactly that one name). Our manifests use
/// explicit lists only, so grants can be enumerated exactly; wildcards and nonResourceURLs
/// cannot be expressed in the matrix and are reported. For built-in roles only the
/// `dataguardian.io` rules are ours to check.
fn undocumented_grants(
    role: &str,
    rules: &[PolicyRule],
    documented_yes: &BTreeSet<(String, String, String)>,
    documented_named: &BTreeSet<(String, String, String, String)>,
    only_our_group: bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    for rule in rules {
        let groups = rule.api_groups.clone().unwrap_or_default();
        if only_our_group && !groups.iter().any(|g| g == API_GROUP) {
            continue;
        }
        if rule
            .non_resource_urls
            .as_ref()
            .is_some_and(|u| !u.is_empty())
        {
            errors.push(format!(
                "{role}: nonResourceURLs are not documented: {rule:?}"
            ));
        }
        let names = rule.resource_names.clone().unwrap_or_default();
        if names.len() > 1 {
            errors.push(format!(
                "{role}: several resourceNames in one rule; the matrix documents one name per cell: {rule:?}"
            ));
        }
        let resources = rule.resources.clone().unwrap_or_default();
        for field in [&groups, &resources, &rule.verbs] {
            if field.iter().any(|x| x.contains('*')) {
                errors.push(format!(
                    "{role}: wildcard in {field:?}; list grants explicitly"
                ));
            }
        }
        for group in &groups {
            for resource in &resources {
                let g = if group.is_empty() { "core" } else { group };
                let label = format!("{g}/{resource}");
                for verb in &rule.verbs {
                    if let [name] = names.as_slice() {
                        let key = (role.to_owned(), label.clone(), verb.clone(), name.clone());
                        if !documented_named.contains(&key) {
                            errors.push(format!(
                                "{role}: grants `{verb}` on {label} {name}, which docs/rbac.md does not list"
                            ));
                        }
                        continue;
                    }
                    let key = (role.to_owned(), label.clone(), verb.clone());
                    if !documented_yes.contains(&key) {
                        errors.push(format!(
                            "{role}: grants `{verb}` on {label}, which docs/rbac.md does not list"
                        ));
                    }
                }
            }
        }
    }
    errors
}

fn cluster_role_mut<'a>(m: &'a mut Manifests, name: &str) -> &'a mut ClusterRole {
    m.cluster_roles
        .get_mut(name)
        .unwrap_or_else(|| panic!("ClusterRole {name} in config/rbac"))
}

fn assert_caught(m: &Manifests, rows: &[Row], expect: &str) {
    let errors = check(m, rows);
    assert!(
        errors.iter().any(|e| e.contains(expect)),
        "the check did not catch the mutation (wanted an error containing {expect:?}); errors: {errors:#?}"
    );
}

#[test]
fn manifests_match_every_cell_of_the_documented_matrix() {
    let manifests = Manifests::load();
    let rows = load_matrix();
    let errors = check(&manifests, &rows);
    assert!(errors.is_empty(), "RBAC drift:\n{}", errors.join("\n"));
    // The matrix covers the three user roles, the three built-ins and the operator, for
    // every kind (main resource and status).
    let kinds = [
        "backupstorages",
        "backuppolicies",
        "backupruns",
        "restoreruns",
        "restorevalidations",
    ];
    for role in [
        "dataguardian-readonly",
        "dataguardian-operator",
        "dataguardian-admin",
        "dataguardian-approver",
        "view",
        "edit",
        "admin",
        CONTROLLER_ROLE,
    ] {
        for kind in kinds {
            for label in [
                format!("{API_GROUP}/{kind}"),
                format!("{API_GROUP}/{kind}/status"),
            ] {
                assert!(
                    rows.iter()
                        .any(|r| r.role == role && r.resource_label() == label),
                    "docs/rbac.md has no row for {role} × {label}"
                );
            }
        }
    }
}

#[test]
fn user_roles_aggregate_into_the_built_in_roles() {
    let m = Manifests::load();
    for (role, target) in [
        ("dataguardian-readonly", "view"),
        ("dataguardian-operator", "edit"),
        ("dataguardian-admin", "admin"),
        ("dataguardian-approver", "admin"),
    ] {
        let labels = m.cluster_roles[role]
            .metadata
            .labels
            .clone()
            .unwrap_or_default();
        let aggregate: Vec<&String> = labels
            .keys()
            .filter(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            .collect();
        assert_eq!(
            aggregate,
            vec![&format!("rbac.authorization.k8s.io/aggregate-to-{target}")],
            "{role} must aggregate into {target} only"
        );
        assert_eq!(
            labels[&format!("rbac.authorization.k8s.io/aggregate-to-{target}")],
            "true"
        );
        assert!(m.cluster_roles[role].aggregation_rule.is_none());
    }
    let effective = m.effective_cluster_roles();
    let can = |role: &str, verb: &str, resource: &str| {
        eval::allows(
            effective[role].rules.as_deref().unwrap_or_default(),
            &eval::Request {
                verb,
                group: API_GROUP,
                resource,
                subresource: None,
                name: None,
            },
        )
    };
    // Aggregation is transitive: edit has readonly's and operator's rules, admin all three.
    assert!(can("view", "watch", "backuppolicies"));
    assert!(!can("view", "create", "backupruns"));
    assert!(can("edit", "list", "backupstorages"));
    assert!(can("edit", "create", "restoreruns"));
    assert!(!can("edit", "delete", "backupruns"));
    assert!(can("admin", "deletecollection", "backupruns"));
    assert!(can("admin", "create", "backupstorages"));
    // Approving restores (the two-person rule): admins and approvers, never edit or view.
    assert!(can("admin", "approve", "restoreruns"));
    assert!(!can("edit", "approve", "restoreruns"));
    assert!(!can("view", "approve", "restoreruns"));
    assert!(can("dataguardian-approver", "approve", "restoreruns"));
    assert!(!can("dataguardian-approver", "create", "restoreruns"));
}

#[test]
fn controller_role_is_least_privilege_without_wildcards() {
    let m = Manifests::load();
    let role = &m.cluster_roles[CONTROLLER_ROLE];
    let labels = role.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels.keys().any(|k| k.contains("aggregate-to")),
        "the operator's own role must never aggregate into user roles"
    );
    assert!(role.aggregation_rule.is_none());
    let rules = role.rules.clone().unwrap_or_default();
    assert!(!rules.is_empty());
    for rule in &rules {
        for field in [
            rule.api_groups.clone().unwrap_or_default(),
            rule.resources.clone().unwrap_or_default(),
            rule.verbs.clone(),
        ] {
            assert!(!field.is_empty(), "empty list in {rule:?}");
            assert!(
                !field.iter().any(|x| x.contains('*')),
                "wildcard in the operator's ClusterRole: {rule:?}"
            );
        }
        assert!(rule.non_resource_urls.is_none(), "{rule:?}");
        for verb in &rule.verbs {
            assert!(
                !["escalate", "bind", "impersonate", "approve", "sign"].contains(&verb.as_str()),
                "privilege-escalation verb in the operator's ClusterRole: {rule:?}"
            );
        }
    }
    // The documented list, exactly: (group, resource) → verbs.
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    // Rules limited to named objects are checked cell by cell (`only NAME`).
    for rule in rules
        .iter()
        .filter(|r| r.resource_names.as_ref().is_none_or(|n| n.is_empty()))
    {
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                granted
                    .entry((g.clone(), r.clone()))
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    let rows = load_matrix();
    let documented: BTreeMap<(String, String), BTreeSet<String>> = rows
        .iter()
        .filter(|r| r.role == CONTROLLER_ROLE)
        .map(|r| {
            let resource = match &r.subresource {
                Some(s) => format!("{}/{s}", r.resource),
                None => r.resource.clone(),
            };
            let verbs: BTreeSet<String> = r
                .cells
                .iter()
                .filter(|(_, y)| **y)
                .map(|(v, _)| v.clone())
                .collect();
            ((r.group.clone(), resource), verbs)
        })
        .filter(|(_, verbs)| !verbs.is_empty())
        .collect();
    assert_eq!(granted, documented, "operator ClusterRole vs docs/rbac.md");
    // Secrets: only single reads by name, never list/watch.
    assert_eq!(
        granted[&(String::new(), "secrets".to_owned())],
        BTreeSet::from(["get".to_owned()])
    );
    // Leader election is namespaced, in the operator's namespace only.
    assert!(!granted.keys().any(|(_, r)| r == "leases"));
    let lease_role = &m.roles[&(
        OPERATOR_NAMESPACE.to_owned(),
        LEADER_ELECTION_ROLE.to_owned(),
    )];
    assert!(eval::allows(
        lease_role.rules.as_deref().unwrap_or_default(),
        &eval::Request {
            verb: "update",
            group: "coordination.k8s.io",
            resource: "leases",
            subresource: None,
            name: Some("dataguardian-operator"),
        }
    ));
}

#[test]
fn bindings_give_the_operator_service_account_its_roles() {
    let m = Manifests::load();
    let sa_exists = |ns: &str, name: &str| {
        m.service_accounts.iter().any(|sa| {
            sa.metadata.name.as_deref() == Some(name)
                && sa.metadata.namespace.as_deref() == Some(ns)
        })
    };
    assert!(sa_exists(OPERATOR_NAMESPACE, SERVICE_ACCOUNT));
    let is_operator_sa = |s: &k8s_openapi::api::rbac::v1::Subject| {
        s.kind == "ServiceAccount"
            && s.name == SERVICE_ACCOUNT
            && s.namespace.as_deref() == Some(OPERATOR_NAMESPACE)
    };
    let crb = m
        .cluster_role_bindings
        .iter()
        .find(|b| b.role_ref.name == CONTROLLER_ROLE)
        .expect("a ClusterRoleBinding for the controller role");
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(
        crb.role_ref.api_group.as_deref(),
        Some("rbac.authorization.k8s.io")
    );
    let subjects = crb.subjects.clone().unwrap_or_default();
    assert!(
        subjects.len() == 1 && is_operator_sa(&subjects[0]),
        "{subjects:?}"
    );

    let rb = m
        .role_bindings
        .iter()
        .find(|b| b.role_ref.name == LEADER_ELECTION_ROLE)
        .expect("a RoleBinding for leader election");
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.metadata.namespace.as_deref(), Some(OPERATOR_NAMESPACE));
    let subjects = rb.subjects.clone().unwrap_or_default();
    assert!(
        subjects.len() == 1 && is_operator_sa(&subjects[0]),
        "{subjects:?}"
    );

    // Every binding refers to a role that exists and to service accounts that exist.
    for b in &m.cluster_role_bindings {
        assert!(
            m.cluster_roles.contains_key(&b.role_ref.name),
            "{:?}",
            b.role_ref
        );
    }
    for b in &m.role_bindings {
        let ns = b.metadata.namespace.clone().expect("namespaced");
        assert!(
            m.roles.contains_key(&(ns, b.role_ref.name.clone()))
                || (b.role_ref.kind == "ClusterRole"
                    && m.cluster_roles.contains_key(&b.role_ref.name)),
            "{:?}",
            b.role_ref
        );
    }
    for s in m
        .cluster_role_bindings
        .iter()
        .flat_map(|b| b.subjects.clone().unwrap_or_default())
        .chain(
            m.role_bindings
                .iter()
                .flat_map(|b| b.subjects.clone().unwrap_or_default()),
        )
        .filter(|s| s.kind == "ServiceAccount")
    {
        assert!(
            sa_exists(s.namespace.as_deref().unwrap_or_default(), &s.name),
            "binding subject {s:?} is not defined in config/rbac"
        );
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let m = Manifests::load();
    let text = std::fs::read_to_string(repo_path("config/rbac/kustomization.yaml"))
        .expect("config/rbac/kustomization.yaml");
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let listed: BTreeSet<String> = value["resources"]
        .as_sequence()
        .expect("resources list")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut files = m.files.clone();
    files.remove("kustomization.yaml");
    assert_eq!(listed, files);
}

// ---- the check catches drift: mutate a loaded role in memory ----

#[test]
fn check_catches_a_role_that_grants_more() {
    let rows = load_matrix();

    let mut m = Manifests::load();
    cluster_role_mut(&mut m, "dataguardian-readonly")
        .rules
        .as_mut()
        .unwrap()[0]
        .verbs
        .push("delete".into());
    assert_caught(
        &m,
        &rows,
        "dataguardian-readonly: `delete` on dataguardian.io/backupruns: docs/rbac.md says no",
    );
    // Aggregation carries the extra verb into the built-in view role too.
    assert_caught(&m, &rows, "view: `delete` on dataguardian.io/backupruns");

    let mut m = Manifests::load();
    cluster_role_mut(&mut m, "dataguardian-admin")
        .rules
        .as_mut()
        .unwrap()
        .push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        });
    assert_caught(
        &m,
        &rows,
        "dataguardian-admin: grants `get` on core/configmaps, which docs/rbac.md does not list",
    );

    let mut m = Manifests::load();
    cluster_role_mut(&mut m, CONTROLLER_ROLE)
        .rules
        .as_mut()
        .unwrap()
        .push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into(), "watch".into()],
            ..Default::default()
        });
    assert_caught(
        &m,
        &rows,
        "dataguardian-controller: `list` on core/secrets: docs/rbac.md says no",
    );

    let mut m = Manifests::load();
    cluster_role_mut(&mut m, CONTROLLER_ROLE)
        .rules
        .as_mut()
        .unwrap()[0]
        .verbs = vec!["*".into()];
    assert_caught(&m, &rows, "dataguardian-controller: wildcard");

    // An operator-user role gaining update on status (forging the audit trail).
    let mut m = Manifests::load();
    cluster_role_mut(&mut m, "dataguardian-operator")
        .rules
        .as_mut()
        .unwrap()
        .push(PolicyRule {
            api_groups: Some(vec![API_GROUP.into()]),
            resources: Some(vec!["*/status".into()]),
            verbs: vec!["update".into()],
            ..Default::default()
        });
    assert_caught(
        &m,
        &rows,
        "dataguardian-operator: `update` on dataguardian.io/backupruns/status: docs/rbac.md says no",
    );
    assert_caught(
        &m,
        &rows,
        "admin: `update` on dataguardian.io/restoreruns/status",
    );
}

#[test]
fn check_catches_a_role_that_grants_less() {
    let rows = load_matrix();

    let mut m = Manifests::load();
    let operator = cluster_role_mut(&mut m, "dataguardian-operator");
    let create_rule = operator
        .rules
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r.verbs == ["create"])
        .expect("the create rule");
    create_rule
        .resources
        .as_mut()
        .unwrap()
        .retain(|r| r != "restoreruns");
    assert_caught(
        &m,
        &rows,
        "dataguardian-operator: `create` on dataguardian.io/restoreruns: docs/rbac.md says yes",
    );
    assert_caught(&m, &rows, "edit: `create` on dataguardian.io/restoreruns");

    // Dropping the aggregation label takes the rules out of the built-in edit role.
    let mut m = Manifests::load();
    cluster_role_mut(&mut m, "dataguardian-operator")
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("rbac.authorization.k8s.io/aggregate-to-edit");
    assert_caught(
        &m,
        &rows,
        "edit: `create` on dataguardian.io/backupruns: docs/rbac.md says yes",
    );

    // Restricting a rule to resourceNames no longer grants the verb on every object.
    let mut m = Manifests::load();
    cluster_role_mut(&mut m, "dataguardian-readonly")
        .rules
        .as_mut()
        .unwrap()[0]
        .resource_names = Some(vec!["only-this-one".into()]);
    assert_caught(
        &m,
        &rows,
        "dataguardian-readonly: `get` on dataguardian.io/backupstorages: docs/rbac.md says yes",
    );

    // The operator losing watch on Jobs, or the lease role losing update.
    let mut m = Manifests::load();
    for rule in cluster_role_mut(&mut m, CONTROLLER_ROLE)
        .rules
        .as_mut()
        .unwrap()
    {
        if rule.api_groups.as_deref() == Some(&["batch".to_owned()]) {
            rule.verbs.retain(|v| v != "watch");
        }
    }
    assert_caught(&m, &rows, "dataguardian-controller: `watch` on batch/jobs");
    let mut m = Manifests::load();
    m.roles
        .get_mut(&(
            OPERATOR_NAMESPACE.to_owned(),
            LEADER_ELECTION_ROLE.to_owned(),
        ))
        .unwrap()
        .rules
        .as_mut()
        .unwrap()[0]
        .verbs
        .retain(|v| v != "update");
    assert_caught(
        &m,
        &rows,
        "dataguardian-leader-election: `update` on coordination.k8s.io/leases",
    );
}

#[test]
fn check_catches_an_edited_document() {
    let m = Manifests::load();
    let doc = std::fs::read_to_string(repo_path("docs/rbac.md")).unwrap();
    // Flip one cell: readonly may "create" backupruns according to the document.
    let line = "| dataguardian-readonly | dataguardian.io/backupruns | yes | yes | yes | no |";
    assert!(doc.contains(line), "matrix row format changed");
    let edited = doc.replacen(
        line,
        "| dataguardian-readonly | dataguardian.io/backupruns | yes | yes | yes | yes |",
        1,
    );
    let rows = parse_matrix(&edited).unwrap();
    assert_caught(
        &m,
        &rows,
        "dataguardian-readonly: `create` on dataguardian.io/backupruns: docs/rbac.md says yes",
    );
    // Dropping a row the manifests need is caught as an undocumented grant.
    let rows: Vec<Row> = load_matrix()
        .into_iter()
        .filter(|r| !(r.role == CONTROLLER_ROLE && r.resource == "secrets"))
        .collect();
    assert_caught(
        &m,
        &rows,
        "dataguardian-controller: grants `get` on core/secrets, which docs/rbac.md does not list",
    );
    // Malformed cells and unknown roles are errors, not silently skipped.
    assert!(parse_matrix(&doc.replacen("| yes |", "| maybe |", 1)).is_err());
    let mut rows = load_matrix();
    rows[0].role = "dataguardian-nobody".into();
    assert_caught(&m, &rows, "neither in config/rbac nor built in");
}

// ---- the evaluator itself ----

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn req<'a>(
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    sub: Option<&'a str>,
) -> eval::Request<'a> {
    eval::Request {
        verb,
        group,
        resource,
        subresource: sub,
        name: None,
    }
}

#[test]
fn evaluator_follows_kubernetes_matching_rules() {
    use eval::rule_allows;
    let exact = rule(&["dataguardian.io"], &["backupruns"], &["get"]);
    assert!(rule_allows(
        &exact,
        &req("get", "dataguardian.io", "backupruns", None)
    ));
    assert!(!rule_allows(
        &exact,
        &req("list", "dataguardian.io", "backupruns", None)
    ));
    assert!(!rule_allows(&exact, &req("get", "", "backupruns", None)));
    // A resource does not include its subresources.
    assert!(!rule_allows(
        &exact,
        &req("get", "dataguardian.io", "backupruns", Some("status"))
    ));

    let all = rule(&["*"], &["*"], &["*"]);
    assert!(rule_allows(
        &all,
        &req("escalate", "rbac.authorization.k8s.io", "roles", None)
    ));
    assert!(rule_allows(&all, &req("get", "", "pods", Some("log"))));

    let any_status = rule(&["dataguardian.io"], &["*/status"], &["patch"]);
    assert!(rule_allows(
        &any_status,
        &req("patch", "dataguardian.io", "restoreruns", Some("status"))
    ));
    assert!(!rule_allows(
        &any_status,
        &req("patch", "dataguardian.io", "restoreruns", None)
    ));
    assert!(!rule_allows(
        &any_status,
        &req("patch", "dataguardian.io", "restoreruns", Some("scale"))
    ));

    let sub = rule(&["dataguardian.io"], &["backupruns/status"], &["get"]);
    assert!(rule_allows(
        &sub,
        &req("get", "dataguardian.io", "backupruns", Some("status"))
    ));
    assert!(!rule_allows(
        &sub,
        &req("get", "dataguardian.io", "backupruns", None)
    ));
    assert!(!rule_allows(
        &sub,
        &req("get", "dataguardian.io", "restoreruns", Some("status"))
    ));

    let core = rule(&[""], &["pods/log"], &["get"]);
    assert!(rule_allows(&core, &req("get", "", "pods", Some("log"))));
    assert!(!rule_allows(&core, &req("get", "", "pods", None)));

    let named = PolicyRule {
        resource_names: Some(vec!["leader".into()]),
        ..rule(&["coordination.k8s.io"], &["leases"], &["get", "update"])
    };
    let mut r = req("update", "coordination.k8s.io", "leases", None);
    assert!(
        !rule_allows(&named, &r),
        "a named rule does not grant unnamed requests"
    );
    r.name = Some("leader");
    assert!(rule_allows(&named, &r));
    r.name = Some("other");
    assert!(!rule_allows(&named, &r));

    let no_groups = PolicyRule {
        api_groups: None,
        ..rule(&[], &["pods"], &["get"])
    };
    assert!(!rule_allows(&no_groups, &req("get", "", "pods", None)));
}

#[test]
fn aggregation_follows_selectors_transitively() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let mut roles: BTreeMap<String, ClusterRole> = eval::built_in_roles()
        .into_iter()
        .map(|r| (name_of(&r.metadata), r))
        .collect();
    let labelled = |name: &str, label: &str, rules: Vec<PolicyRule>| ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(label.to_owned(), "true".to_owned())])),
            ..Default::default()
        },
        rules: Some(rules),
        aggregation_rule: None,
    };
    roles.insert(
        "reader".into(),
        labelled(
            "reader",
            "rbac.authorization.k8s.io/aggregate-to-view",
            vec![rule(&["x.io"], &["things"], &["get"])],
        ),
    );
    roles.insert(
        "unrelated".into(),
        labelled(
            "unrelated",
            "team",
            vec![rule(&["x.io"], &["things"], &["delete"])],
        ),
    );
    // A custom aggregate with matchExpressions.
    roles.insert(
        "custom".into(),
        ClusterRole {
            metadata: ObjectMeta {
                name: Some("custom".into()),
                ..Default::default()
            },
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "team".into(),
                        operator: "Exists".into(),
                        values: None,
                    }]),
                    ..Default::default()
                }]),
            }),
            rules: None,
        },
    );
    eval::aggregate(&mut roles);
    let get = req("get", "x.io", "things", None);
    let delete = req("delete", "x.io", "things", None);
    for name in ["view", "edit", "admin"] {
        assert!(
            eval::allows(roles[name].rules.as_deref().unwrap(), &get),
            "{name}"
        );
        assert!(
            !eval::allows(roles[name].rules.as_deref().unwrap(), &delete),
            "{name}"
        );
    }
    assert!(eval::allows(
        roles["custom"].rules.as_deref().unwrap(),
        &delete
    ));
    assert!(!eval::allows(
        roles["custom"].rules.as_deref().unwrap(),
        &get
    ));
}

/// The prose of `docs/rbac.md` must not contradict the operator's ClusterRole: every resource
/// the "Not granted, on purpose" paragraph names has no rule at all (issue 11, finding 9: the
/// paragraph listed `persistentvolumeclaims` while the role grants `get`).
#[test]
fn resources_documented_as_not_granted_are_not_granted() {
    let doc = std::fs::read_to_string(repo_path("docs/rbac.md")).expect("docs/rbac.md exists");
    let start = doc
        .find("Not granted, on purpose:")
        .expect("docs/rbac.md has the not-granted paragraph");
    let paragraph = doc[start..].split("\n\n").next().unwrap();
    // The first sentence: up to a full stop followed by a space or a line break.
    let end = paragraph
        .match_indices('.')
        .map(|(i, _)| i)
        .find(|i| matches!(paragraph.as_bytes().get(i + 1), Some(b' ' | b'\n') | None))
        .unwrap_or(paragraph.len());
    let sentence = &paragraph[..end];
    let named: Vec<&str> = sentence
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    assert!(named.contains(&"configmaps"), "{named:?}");
    let m = Manifests::load();
    let rules = m.cluster_roles[CONTROLLER_ROLE]
        .rules
        .clone()
        .unwrap_or_default();
    for resource in named {
        if ["escalate", "bind", "impersonate"].contains(&resource) {
            continue; // verbs, checked by controller_role_is_least_privilege_without_wildcards
        }
        assert!(
            !rules
                .iter()
                .any(|r| r.resources.iter().flatten().any(|x| x == resource)),
            "docs/rbac.md says {resource} is not granted, but the operator's ClusterRole grants it"
        );
    }
}

/// Runs kubectl with `kubeconfig`; returns (exit code, stdout + stderr).
fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let out = testkit::kubectl(kubeconfig, args, stdin);
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

/// The same matrix, asked of an API server: `config/rbac/` applied to the stand-in (which
/// enforces RBAC and aggregates ClusterRoles like kube-apiserver), one user per role bound in
/// a namespace, and `kubectl auth can-i` for every cell. The operator's roles are asked as its
/// ServiceAccount (`--as`), the leader-election Role in the operator's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_through_the_stand_in_agrees_with_every_cell() {
    let server = kube_sim::Server::start(kube_sim::ServerOptions {
        crds_dir: Some(repo_path("crds")),
        ..Default::default()
    })
    .await
    .expect("starting the API stand-in");
    let admin = server.kubeconfig_path().to_path_buf();
    let tenant = "shop";
    for ns in [OPERATOR_NAMESPACE, tenant] {
        let (code, out) = kubectl_with(&admin, &["create", "namespace", ns], None);
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = kubectl_with(
        &admin,
        &[
            "apply",
            "-k",
            &repo_path("config/rbac").display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 0, "kubectl apply -k config/rbac: {out}");

    let rows = load_matrix();
    let roles: BTreeSet<&str> = rows.iter().map(|r| r.role.as_str()).collect();
    let sa = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}");
    // role → (kubeconfig, extra args, namespace)
    let mut askers: BTreeMap<&str, (PathBuf, Vec<String>, &str)> = BTreeMap::new();
    for role in roles {
        if role == CONTROLLER_ROLE || role == LEADER_ELECTION_ROLE {
            let ns = if role == LEADER_ELECTION_ROLE {
                OPERATOR_NAMESPACE
            } else {
                tenant
            };
            askers.insert(role, (admin.clone(), vec![format!("--as={sa}")], ns));
            continue;
        }
        let user = format!("user-{role}");
        let kubeconfig = server.add_user(&user, &["people"]).expect("test user");
        let binding = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {user}, namespace: {tenant}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\nsubjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: {user}}}]\n"
        );
        let (code, out) = kubectl_with(&admin, &["apply", "-f", "-"], Some(&binding));
        assert_eq!(code, 0, "{out}");
        askers.insert(role, (kubeconfig, Vec::new(), tenant));
    }

    // Every cell, a few kubectl processes at a time.
    let mut questions = Vec::new();
    for row in &rows {
        let resource = if row.group.is_empty() {
            row.resource.clone()
        } else {
            format!("{}.{}", row.resource, row.group)
        };
        for (verb, allowed) in &row.cells {
            questions.push((row, resource.clone(), verb.clone(), *allowed));
            if let Some(name) = row.named.get(verb) {
                questions.push((row, format!("{resource}/{name}"), verb.clone(), true));
            }
        }
    }
    let wrong = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((row, resource, verb, allowed)) = questions.get(i) else {
                        return;
                    };
                    let (kubeconfig, extra, ns) = &askers[row.role.as_str()];
                    let mut args =
                        vec!["auth", "can-i", verb.as_str(), resource.as_str(), "-n", ns];
                    let sub;
                    if let Some(s) = &row.subresource {
                        sub = format!("--subresource={s}");
                        args.push(&sub);
                    }
                    args.extend(extra.iter().map(String::as_str));
                    let (code, out) = kubectl_with(kubeconfig, &args, None);
                    // A cluster-scoped resource asked about with -n adds a warning line.
                    let first = out.lines().next().unwrap_or_default().trim();
                    let answer = match (code, first) {
                        (0, "yes") => true,
                        (1, "no") => false,
                        _ => panic!("kubectl {}: exit {code}: {out}", args.join(" ")),
                    };
                    if answer != *allowed {
                        wrong.lock().unwrap().push(format!(
                            "{} × {} {verb}: the matrix says {}, the API server says {}",
                            row.role,
                            row.resource_label(),
                            if *allowed { "yes" } else { "no" },
                            if answer { "yes" } else { "no" },
                        ));
                    }
                }
            });
        }
    });
    let wrong = wrong.into_inner().unwrap();
    assert!(
        wrong.is_empty(),
        "kubectl auth can-i disagrees with docs/rbac.md:\n{}",
        wrong.join("\n")
    );
    assert!(questions.len() > 500, "{} cells asked", questions.len());
}
