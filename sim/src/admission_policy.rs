//! `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicy and
//! ValidatingAdmissionPolicyBinding: their registration, defaulting, validation (expressions
//! must compile), and their evaluation on every create and update an API user makes (DELETE and CONNECT
//! requests are not evaluated), after
//! schema validation, as kube-apiserver's `ValidatingAdmissionPolicy` admission plugin does.
//!
//! What is evaluated: `matchConstraints` (resource rules with operations, scopes, subresources
//! and resource names, exclusions, namespace and object selectors), the binding's
//! `matchResources`, `matchConditions`, `variables`, `validations` (`expression`, `message`,
//! `messageExpression`, `reason`), parameters (`paramKind` with the binding's
//! `paramRef` by name or selector, in a given namespace or the request's, and
//! `parameterNotFoundAction`), `failurePolicy`, and the binding's `validationActions`:
//! `Deny` refuses the request with the apiserver's text (`… is forbidden:
//! ValidatingAdmissionPolicy 'P' with binding 'B' denied request: MESSAGE`, reason `Invalid`
//! unless the validation names another), `Warn` returns a `Warning` header (`Validation failed
//! for ValidatingAdmissionPolicy 'P' with binding 'B': MESSAGE`), `Audit` writes the failure to
//! the server's log under the `kube_sim::audit` target (the stand-in has no audit backend).
//!
//! CEL variables: `object`, `oldObject` (null on create), `request` (kind, resource,
//! subResource, name, namespace, operation, userInfo, dryRun), `params`, `namespaceObject`,
//! `variables`. Not available: `authorizer` (an expression using it fails to evaluate, which the
//! failure policy then decides), and static type checking (`status.typeChecking`).
//!
//! As upstream, the admission kinds themselves (policies, bindings, webhook configurations) are
//! never subject to policies; writes by the server's own controllers are not either (they run
//! in-process here).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::auth::UserInfo;
use crate::error::{ApiError, Cause};
use crate::resources::{Builtin, Registry, ResourceDef};
use crate::store::{Inner, ObjKey};

type FieldErr = (String, &'static str, String);

const GROUP: &str = "admissionregistration.k8s.io";
const POLICIES: &str = "validatingadmissionpolicies";
const BINDINGS: &str = "validatingadmissionpolicybindings";

/// Registers the two kinds (called by [`crate::resources::Registry::builtins`]).
pub fn register(defs: &mut Vec<ResourceDef>) {
    let mut policy = ResourceDef::builtin(
        GROUP,
        "v1",
        POLICIES,
        "ValidatingAdmissionPolicy",
        false,
        &[],
        &["api-extensions"],
        Builtin::ValidatingAdmissionPolicy,
    );
    policy.status_subresource = true;
    policy.has_generation = true;
    defs.push(policy);
    let mut binding = ResourceDef::builtin(
        GROUP,
        "v1",
        BINDINGS,
        "ValidatingAdmissionPolicyBinding",
        false,
        &[],
        &["api-extensions"],
        Builtin::ValidatingAdmissionPolicyBinding,
    );
    binding.has_generation = true;
    defs.push(binding);
}

/// Drops unknown fields through the `k8s-openapi` types.
pub fn typed_roundtrip(b: Builtin, obj: &Value) -> Option<Value> {
    use crate::builtin::roundtrip;
    use k8s_openapi::api::admissionregistration::v1 as a;
    match b {
        Builtin::ValidatingAdmissionPolicy => roundtrip::<a::ValidatingAdmissionPolicy>(obj),
        Builtin::ValidatingAdmissionPolicyBinding => {
            roundtrip::<a::ValidatingAdmissionPolicyBinding>(obj)
        }
        _ => None,
    }
}

fn entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = json!({});
    }
    let m = v.as_object_mut().expect("object");
    let e = m.entry(key.to_string()).or_insert(json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e
}

fn default_field(m: &mut Value, key: &str, v: Value) {
    if let Some(o) = m.as_object_mut()
        && o.get(key).is_none_or(Value::is_null)
    {
        o.insert(key.into(), v);
    }
}

/// `SetDefaults_ValidatingAdmissionPolicySpec`, `SetDefaults_MatchResources`,
/// `SetDefaults_NamedRuleWithOperations` and `SetDefaults_ParamRef`.
pub fn set_defaults(b: Builtin, obj: &mut Value) {
    let spec = entry(obj, "spec");
    match b {
        Builtin::ValidatingAdmissionPolicy => {
            default_field(spec, "failurePolicy", json!("Fail"));
            if spec.get("matchConstraints").is_some_and(Value::is_object) {
                default_match_resources(entry(spec, "matchConstraints"));
            }
        }
        Builtin::ValidatingAdmissionPolicyBinding
            if spec.get("matchResources").is_some_and(Value::is_object) =>
        {
            default_match_resources(entry(spec, "matchResources"));
        }
        _ => {}
    }
}

fn default_match_resources(m: &mut Value) {
    default_field(m, "matchPolicy", json!("Equivalent"));
    default_field(m, "namespaceSelector", json!({}));
    default_field(m, "objectSelector", json!({}));
    for list in ["resourceRules", "excludeResourceRules"] {
        if let Some(rules) = m.get_mut(list).and_then(Value::as_array_mut) {
            for r in rules {
                default_field(r, "scope", json!("*"));
            }
        }
    }
}

/// The apiserver's validation of the two kinds: required fields, known enum values, and every
/// CEL expression compiles (`compilation failed: …`).
pub fn validate(b: Builtin, obj: &Value) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    match b {
        Builtin::ValidatingAdmissionPolicy => {
            let env = crate::validation::cel_env();
            match spec.get("failurePolicy").and_then(Value::as_str) {
                Some("Fail" | "Ignore") | None => {}
                Some(other) => errs.push(unsupported(
                    "spec.failurePolicy",
                    other,
                    &["Fail", "Ignore"],
                )),
            }
            let has_rules = spec
                .pointer("/matchConstraints/resourceRules")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty());
            if !has_rules {
                errs.push((
                    "spec.matchConstraints.resourceRules".into(),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
            let validations = spec.get("validations").and_then(Value::as_array);
            let audits = spec.get("auditAnnotations").and_then(Value::as_array);
            if validations.is_none_or(|v| v.is_empty()) && audits.is_none_or(|a| a.is_empty()) {
                errs.push((
                    "spec.validations".into(),
                    "FieldValueRequired",
                    "Required value: validations or auditAnnotations must contain at least one item".into(),
                ));
            }
            for (i, v) in validations.into_iter().flatten().enumerate() {
                let path = format!("spec.validations[{i}]");
                match v.get("expression").and_then(Value::as_str) {
                    None | Some("") => errs.push((
                        format!("{path}.expression"),
                        "FieldValueRequired",
                        "Required value: expression is not specified".into(),
                    )),
                    Some(e) => compile_check(&env, &format!("{path}.expression"), e, &mut errs),
                }
                if let Some(e) = v.get("messageExpression").and_then(Value::as_str) {
                    compile_check(&env, &format!("{path}.messageExpression"), e, &mut errs);
                }
                if let Some(r) = v.get("reason").and_then(Value::as_str)
                    && reason_code(r).is_none()
                {
                    errs.push(unsupported(
                        &format!("{path}.reason"),
                        r,
                        &[
                            "Unauthorized",
                            "Forbidden",
                            "Invalid",
                            "RequestEntityTooLarge",
                        ],
                    ));
                }
            }
            for list in ["matchConditions", "variables"] {
                for (i, c) in spec
                    .get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let path = format!("spec.{list}[{i}]");
                    if c.get("name")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        errs.push((
                            format!("{path}.name"),
                            "FieldValueRequired",
                            "Required value".into(),
                        ));
                    }
                    match c.get("expression").and_then(Value::as_str) {
                        None | Some("") => errs.push((
                            format!("{path}.expression"),
                            "FieldValueRequired",
                            "Required value".into(),
                        )),
                        Some(e) => compile_check(&env, &format!("{path}.expression"), e, &mut errs),
                    }
                }
            }
            if let Some(pk) = spec.get("paramKind") {
                for f in ["apiVersion", "kind"] {
                    if pk.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push((
                            format!("spec.paramKind.{f}"),
                            "FieldValueRequired",
                            "Required value".into(),
                        ));
                    }
                }
            }
        }
        Builtin::ValidatingAdmissionPolicyBinding => {
            if spec
                .get("policyName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push((
                    "spec.policyName".into(),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
            let actions: Vec<&str> = spec
                .get("validationActions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if actions.is_empty() {
                errs.push((
                    "spec.validationActions".into(),
                    "FieldValueRequired",
                    "Required value: at least one validation action is required".into(),
                ));
            }
            for (i, a) in actions.iter().enumerate() {
                if Action::parse(a).is_none() {
                    errs.push(unsupported(
                        &format!("spec.validationActions[{i}]"),
                        a,
                        &["Audit", "Deny", "Warn"],
                    ));
                }
            }
            if actions.contains(&"Deny") && actions.contains(&"Warn") {
                errs.push((
                    "spec.validationActions".into(),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
                        go_string_list(&actions)
                    ),
                ));
            }
            if let Some(pr) = spec.get("paramRef") {
                let has_name = pr
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                let has_selector = pr.get("selector").is_some_and(Value::is_object);
                if has_name == has_selector {
                    errs.push((
                        "spec.paramRef".into(),
                        "FieldValueRequired",
                        "Required value: one of `name` or `selector` must be specified".into(),
                    ));
                }
                match pr.get("parameterNotFoundAction").and_then(Value::as_str) {
                    Some("Allow" | "Deny") => {}
                    None => errs.push((
                        "spec.paramRef.parameterNotFoundAction".into(),
                        "FieldValueRequired",
                        "Required value".into(),
                    )),
                    Some(other) => errs.push(unsupported(
                        "spec.paramRef.parameterNotFoundAction",
                        other,
                        &["Allow", "Deny"],
                    )),
                }
            }
        }
        _ => {}
    }
    errs
}

fn go_string_list(items: &[&str]) -> String {
    format!(
        "[]admissionregistration.ValidationAction{{{}}}",
        items
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn unsupported(path: &str, value: &str, allowed: &[&str]) -> FieldErr {
    (
        path.to_string(),
        "FieldValueNotSupported",
        format!(
            "Unsupported value: \"{value}\": supported values: {}",
            allowed
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn compile_check(env: &cel::Env, path: &str, expr: &str, errs: &mut Vec<FieldErr>) {
    if let Err(e) = env.compile(expr) {
        errs.push((
            path.to_string(),
            "FieldValueInvalid",
            format!(
                "Invalid value: \"{}\": compilation failed: {e}",
                expr.replace('"', "\\\"")
            ),
        ));
    }
}

/// `StatusReason` → HTTP code for the reasons a validation may name.
fn reason_code(reason: &str) -> Option<(u16, &'static str)> {
    match reason {
        "Unauthorized" => Some((401, "Unauthorized")),
        "Forbidden" => Some((403, "Forbidden")),
        "Invalid" => Some((422, "Invalid")),
        "RequestEntityTooLarge" => Some((413, "RequestEntityTooLarge")),
        _ => None,
    }
}

/// A binding's `validationActions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Deny,
    Warn,
    Audit,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "Deny" => Some(Action::Deny),
            "Warn" => Some(Action::Warn),
            "Audit" => Some(Action::Audit),
            _ => None,
        }
    }
}

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A create (POST, or an apply/update that creates).
    Create,
    /// An update (PUT, PATCH, apply of an existing object), subresources included.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

/// One request as admission sees it.
pub struct Request<'a> {
    /// The resource written.
    pub rd: &'a ResourceDef,
    /// The subresource (`status`, `scale`), if any.
    pub subresource: Option<&'a str>,
    /// The operation.
    pub operation: Operation,
    /// The request's namespace (`""` when cluster-scoped).
    pub namespace: &'a str,
    /// The object's name.
    pub name: &'a str,
    /// The object after the write.
    pub object: Option<&'a Value>,
    /// The stored object before the write (`None` on create).
    pub old_object: Option<&'a Value>,
    /// Who asks.
    pub user: &'a UserInfo,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// One failed validation (or an error the failure policy turned into one).
struct Decision {
    message: String,
    reason: Option<String>,
}

/// Runs every bound policy that matches `req`. Returns the `Warning` headers to send, or the
/// denial of the first `Deny` decision.
pub fn admit(
    inner: &Inner,
    registry: &Registry,
    req: &Request<'_>,
) -> Result<Vec<String>, ApiError> {
    if req.rd.group == GROUP || req.rd.builtin == Some(Builtin::Review) {
        return Ok(Vec::new());
    }
    let bindings = cluster_objects(inner, BINDINGS);
    if bindings.is_empty() {
        return Ok(Vec::new());
    }
    let env = Arc::new(crate::validation::cel_env());
    let mut warnings = Vec::new();
    let mut denials: Vec<(String, String, Decision)> = Vec::new();
    for binding in bindings {
        let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
        let Some(policy_name) = binding.pointer("/spec/policyName").and_then(Value::as_str) else {
            continue;
        };
        // A binding of a policy that does not exist (yet) does nothing.
        let Some(policy) = inner.objects.get(&cluster_key(POLICIES, policy_name)) else {
            continue;
        };
        let Some(constraints) = policy.pointer("/spec/matchConstraints") else {
            continue;
        };
        if !matches_resources(inner, constraints, req)
            || binding
                .pointer("/spec/matchResources")
                .is_some_and(|m| !matches_resources(inner, m, req))
        {
            continue;
        }
        let actions: Vec<Action> = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().and_then(Action::parse))
                    .collect()
            })
            .unwrap_or_default();
        let fail_closed = policy
            .pointer("/spec/failurePolicy")
            .and_then(Value::as_str)
            != Some("Ignore");
        let decisions = evaluate_binding(inner, registry, &env, policy, binding, req, fail_closed);
        for d in decisions {
            for action in &actions {
                match action {
                    Action::Deny => denials.push((
                        policy_name.to_string(),
                        binding_name.to_string(),
                        Decision {
                            message: d.message.clone(),
                            reason: d.reason.clone(),
                        },
                    )),
                    Action::Warn => warnings.push(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                        d.message
                    )),
                    Action::Audit => tracing::warn!(
                        target: "kube_sim::audit",
                        policy = policy_name,
                        binding = binding_name,
                        resource = %req.rd.plural,
                        namespace = req.namespace,
                        name = req.name,
                        user = %req.user.name,
                        "validation.policy.admission.k8s.io/validation_failure: {}",
                        d.message
                    ),
                }
            }
        }
    }
    match denials.into_iter().next() {
        None => Ok(warnings),
        Some((policy, binding, d)) => {
            let message = format!(
                "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
                d.message
            );
            let resource = if req.rd.group.is_empty() {
                req.rd.plural.clone()
            } else {
                format!("{}.{}", req.rd.plural, req.rd.group)
            };
            let mut err = ApiError::forbidden(
                &req.rd.group,
                &req.rd.plural,
                req.name,
                format!("{resource} \"{}\" is forbidden: {message}", req.name),
            );
            let reason = d.reason.as_deref().unwrap_or("Invalid");
            if let Some((code, reason)) = reason_code(reason) {
                err.code = code;
                err.reason = reason;
            }
            err.causes.push(Cause {
                reason: String::new(),
                message,
                field: String::new(),
            });
            Err(err)
        }
    }
}

fn cluster_key(resource: &str, name: &str) -> ObjKey {
    ObjKey {
        group: GROUP.into(),
        resource: resource.into(),
        namespace: String::new(),
        name: name.into(),
    }
}

/// The stored cluster-scoped objects of `resource` in this group, by name.
fn cluster_objects<'a>(inner: &'a Inner, resource: &str) -> Vec<&'a Value> {
    inner
        .objects
        .range(cluster_key(resource, "")..)
        .take_while(|(k, _)| k.group == GROUP && k.resource == resource)
        .map(|(_, v)| v)
        .collect()
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one `NamedRuleWithOperations` covers the request.
pub(crate) fn rule_matches(rule: &Value, req: &Request<'_>) -> bool {
    let any = |list: &[&str], v: &str| list.iter().any(|x| *x == "*" || *x == v);
    if !any(&strs(rule.get("apiGroups")), &req.rd.group)
        || !any(&strs(rule.get("apiVersions")), &req.rd.version)
        || !any(&strs(rule.get("operations")), req.operation.as_str())
    {
        return false;
    }
    let resources = strs(rule.get("resources"));
    let resource_ok = resources.iter().any(|r| {
        let (res, sub) = match r.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (*r, None),
        };
        match (sub, req.subresource) {
            (None, None) => res == "*" || res == req.rd.plural,
            (Some(s), Some(rs)) => (res == "*" || res == req.rd.plural) && (s == "*" || s == rs),
            (Some("*"), None) => res == "*" || res == req.rd.plural,
            _ => false,
        }
    });
    if !resource_ok {
        return false;
    }
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !req.rd.namespaced,
        "Namespaced" => req.rd.namespaced,
        _ => true,
    };
    let names = strs(rule.get("resourceNames"));
    scope_ok && (names.is_empty() || names.contains(&req.name))
}

fn labels(obj: Option<&Value>) -> Option<&Value> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
}

fn selector_ok(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    match selector {
        None => true,
        Some(s) => crate::workloads::selector_matches(Some(s), labels.or(Some(&json!({})))),
    }
}

/// `matchConstraints` / `matchResources`: rules, exclusions and the two selectors.
pub(crate) fn matches_resources(inner: &Inner, m: &Value, req: &Request<'_>) -> bool {
    let rules = m.get("resourceRules").and_then(Value::as_array);
    // A binding's matchResources without rules defers to the policy's.
    if let Some(rules) = rules
        && !rules.iter().any(|r| rule_matches(r, req))
    {
        return false;
    }
    if m.get("excludeResourceRules")
        .and_then(Value::as_array)
        .is_some_and(|rules| rules.iter().any(|r| rule_matches(r, req)))
    {
        return false;
    }
    let ns_selector = m.get("namespaceSelector");
    let ns_ok = if req.rd.builtin == Some(Builtin::Namespace) {
        selector_ok(ns_selector, labels(req.object.or(req.old_object)))
    } else if req.rd.namespaced {
        selector_ok(ns_selector, labels(namespace_object(inner, req.namespace)))
    } else {
        true
    };
    let obj_selector = m.get("objectSelector");
    let obj_ok = selector_ok(obj_selector, labels(req.object))
        || (req.old_object.is_some() && selector_ok(obj_selector, labels(req.old_object)));
    ns_ok && obj_ok
}

fn namespace_object<'a>(inner: &'a Inner, ns: &str) -> Option<&'a Value> {
    if ns.is_empty() {
        return None;
    }
    inner.objects.get(&ObjKey {
        group: String::new(),
        resource: "namespaces".into(),
        namespace: String::new(),
        name: ns.into(),
    })
}

/// The parameter objects a binding selects, or why none could be found.
enum Params<'a> {
    /// The policy takes no parameters.
    None,
    /// These objects, one evaluation each.
    Found(Vec<&'a Value>),
    /// Nothing found and `parameterNotFoundAction: Allow`: the binding does nothing.
    NotFoundAllow,
    /// A configuration error or `parameterNotFoundAction: Deny` with nothing found.
    Error(String),
}

fn resolve_params<'a>(
    inner: &'a Inner,
    registry: &Registry,
    policy: &Value,
    binding: &Value,
    req: &Request<'_>,
) -> Params<'a> {
    let Some(kind) = policy.pointer("/spec/paramKind") else {
        return Params::None;
    };
    let api_version = kind
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind_name = kind.get("kind").and_then(Value::as_str).unwrap_or_default();
    let Some(rd) = registry.find_kind(api_version, kind_name) else {
        return Params::Error(format!(
            "failed to configure policy: failed to find resource referenced by paramKind: '{}, Kind={kind_name}'",
            api_version
        ));
    };
    let Some(param_ref) = binding.pointer("/spec/paramRef") else {
        return Params::Error(format!(
            "failed to configure binding: paramRef is required when the policy has paramKind '{kind_name}'"
        ));
    };
    let namespace = if rd.namespaced {
        match param_ref
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(ns) => ns.to_string(),
            None if !req.namespace.is_empty() => req.namespace.to_string(),
            None => {
                return Params::Error(
                    "failed to configure binding: cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".into(),
                );
            }
        }
    } else {
        String::new()
    };
    let storage_group = rd.group.clone();
    let mut found: Vec<&Value> = Vec::new();
    if let Some(name) = param_ref
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let key = ObjKey {
            group: storage_group,
            resource: rd.plural.clone(),
            namespace,
            name: name.into(),
        };
        found.extend(inner.objects.get(&key));
    } else {
        let selector = param_ref.get("selector");
        let start = ObjKey {
            group: storage_group.clone(),
            resource: rd.plural.clone(),
            namespace: namespace.clone(),
            name: String::new(),
        };
        found.extend(
            inner
                .objects
                .range(start..)
                .take_while(|(k, _)| {
                    k.group == storage_group && k.resource == rd.plural && k.namespace == namespace
                })
                .map(|(_, v)| v)
                .filter(|v| selector_ok(selector, labels(Some(v)))),
        );
    }
    if !found.is_empty() {
        return Params::Found(found);
    }
    match param_ref.get("parameterNotFoundAction").and_then(Value::as_str) {
        Some("Allow") => Params::NotFoundAllow,
        _ => Params::Error(
            "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".into(),
        ),
    }
}

/// The `request` variable (`admissionv1.AdmissionRequest` as CEL sees it).
fn request_value(req: &Request<'_>) -> Value {
    let kind = json!({"group": req.rd.group, "version": req.rd.version, "kind": req.rd.kind});
    let resource =
        json!({"group": req.rd.group, "version": req.rd.version, "resource": req.rd.plural});
    let extra: Map<String, Value> = req
        .user
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "kind": kind,
        "resource": resource,
        "subResource": req.subresource.unwrap_or(""),
        "requestKind": kind,
        "requestResource": resource,
        "requestSubResource": req.subresource.unwrap_or(""),
        "name": req.name,
        "namespace": req.namespace,
        "operation": req.operation.as_str(),
        "userInfo": {
            "username": req.user.name,
            "uid": req.user.uid,
            "groups": req.user.groups,
            "extra": extra,
        },
        "dryRun": req.dry_run,
        "options": {},
    })
}

/// Evaluates one binding of `policy`; the failed validations (errors included when the policy
/// fails closed).
fn evaluate_binding(
    inner: &Inner,
    registry: &Registry,
    env: &Arc<cel::Env>,
    policy: &Value,
    binding: &Value,
    req: &Request<'_>,
    fail_closed: bool,
) -> Vec<Decision> {
    let error = |message: String| -> Vec<Decision> {
        if fail_closed {
            vec![Decision {
                message,
                reason: None,
            }]
        } else {
            Vec::new()
        }
    };
    let params: Vec<Option<&Value>> = match resolve_params(inner, registry, policy, binding, req) {
        Params::None => vec![None],
        Params::Found(p) => p.into_iter().map(Some).collect(),
        Params::NotFoundAllow => return Vec::new(),
        Params::Error(m) => return error(m),
    };
    let spec = &policy["spec"];
    let mut decisions = Vec::new();
    let null = Value::Null;
    let request = crate::validation::to_cel(&request_value(req), None);
    let object = crate::validation::to_cel(req.object.unwrap_or(&null), None);
    let old_object = crate::validation::to_cel(req.old_object.unwrap_or(&null), None);
    let namespace_object = crate::validation::to_cel(
        namespace_object(inner, req.namespace).unwrap_or(&null),
        None,
    );
    'params: for param in params {
        let mut ctx = cel::Context::with_env(env.clone());
        ctx.add_variable_from_value("object", object.clone());
        ctx.add_variable_from_value("oldObject", old_object.clone());
        ctx.add_variable_from_value("request", request.clone());
        ctx.add_variable_from_value("namespaceObject", namespace_object.clone());
        ctx.add_variable_from_value(
            "params",
            crate::validation::to_cel(param.unwrap_or(&null), None),
        );
        ctx.add_variable_from_value(
            "variables",
            cel::Value::Map(HashMap::<String, cel::Value>::new().into()),
        );
        // matchConditions: all must hold for the policy to apply.
        for cond in spec
            .get("matchConditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let expr = cond
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or("true");
            let name = cond.get("name").and_then(Value::as_str).unwrap_or_default();
            match run(env, expr, &ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => continue 'params,
                Ok(other) => {
                    decisions.extend(error(format!(
                        "failed to evaluate match condition '{name}': must evaluate to bool, got {:?}",
                        other.type_of()
                    )));
                    continue 'params;
                }
                Err(e) => {
                    decisions.extend(error(format!(
                        "failed to evaluate match condition '{name}': {e}"
                    )));
                    continue 'params;
                }
            }
        }
        // variables, in order; one that fails is left out, so an expression using it fails.
        let mut vars: HashMap<String, cel::Value> = HashMap::new();
        for var in spec
            .get("variables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(expr)) = (
                var.get("name").and_then(Value::as_str),
                var.get("expression").and_then(Value::as_str),
            ) else {
                continue;
            };
            if let Ok(v) = run(env, expr, &ctx) {
                vars.insert(name.to_string(), v);
                ctx.add_variable_from_value("variables", cel::Value::Map(vars.clone().into()));
            }
        }
        for v in spec
            .get("validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let expr = v
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or("true");
            let reason = v.get("reason").and_then(Value::as_str).map(str::to_string);
            match run(env, expr, &ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => decisions.push(Decision {
                    message: failure_message(env, v, expr, &ctx),
                    reason,
                }),
                Ok(other) => decisions.extend(error(format!(
                    "expression '{expr}' resulted in error: must evaluate to bool, got {:?}",
                    other.type_of()
                ))),
                Err(e) => {
                    decisions.extend(error(format!("expression '{expr}' resulted in error: {e}")))
                }
            }
        }
    }
    decisions
}

fn run(env: &cel::Env, expr: &str, ctx: &cel::Context) -> Result<cel::Value, String> {
    let program = env
        .compile(expr)
        .map_err(|e| format!("compilation failed: {e}"))?;
    program.execute(ctx).map_err(|e| e.to_string())
}

/// `messageExpression` when it yields a non-empty string, else `message`, else the expression.
fn failure_message(env: &cel::Env, v: &Value, expr: &str, ctx: &cel::Context) -> String {
    if let Some(me) = v.get("messageExpression").and_then(Value::as_str)
        && let Ok(cel::Value::String(s)) = run(env, me, ctx)
        && !s.trim().is_empty()
        && !s.contains('\n')
    {
        return s.to_string();
    }
    match v.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => format!("failed expression: {expr}"),
    }
}
