//! Authentication, impersonation and authorization of every request, like kube-apiserver's
//! filter chain: bearer tokens (static users as with `--token-auth-file`, and service-account
//! JWTs from the TokenRequest API), anonymous requests as `system:anonymous`, 401 for unknown
//! tokens, `Impersonate-*` headers (checked with the `impersonate` verb), then the
//! `system:masters` privileged group and RBAC (403 with the real messages).

pub mod admission;
pub mod authorizer;
pub mod bootstrap;
pub mod controllers;
pub mod escalation;
pub mod protobuf;
pub mod rbac;
pub mod request;
pub mod reviews;
pub mod tokens;
pub mod users;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use axum::http::{HeaderMap, Method, Uri, header};
use serde_json::Value;

use crate::error::ApiError;
use crate::ops::State;
use crate::store::{Inner, ObjKey};
use authorizer::Decision;
use rbac::Attributes;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";
/// Extra key: the pod a service-account token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// Extra key: that pod's uid.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// Extra key: the token's id (`JTI=...`).
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Who a request is from (kube-apiserver's `user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Uid (may be empty).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// `authentication.k8s.io/v1` `UserInfo` JSON.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = Value::String(self.uid.clone());
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }

    /// Adds `system:authenticated` like kube-apiserver's group adder.
    fn with_authenticated(mut self) -> Self {
        if self.name != ANONYMOUS && !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }
}

/// A user of `--token-auth-file` / [`crate::ServerOptions::users`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StaticUser {
    /// Bearer token.
    pub token: String,
    /// User name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// Groups (`system:authenticated` is added).
    pub groups: Vec<String>,
}

/// Authentication state: static tokens, the token signer, the CA.
#[derive(Debug)]
pub struct Auth {
    users: RwLock<HashMap<String, UserInfo>>,
    /// Signs and verifies service-account tokens.
    pub signer: tokens::Signer,
    /// The cluster CA (PEM).
    pub ca_pem: String,
}

impl Auth {
    /// Fresh state with a new signing key.
    pub fn new(ca_pem: String) -> Result<Self, String> {
        Ok(Auth {
            users: RwLock::new(HashMap::new()),
            signer: tokens::Signer::generate()?,
            ca_pem,
        })
    }

    /// State with a given token signer (a restarted server keeps its key).
    pub fn with_signer(ca_pem: String, signer: tokens::Signer) -> Self {
        Auth {
            users: RwLock::new(HashMap::new()),
            signer,
            ca_pem,
        }
    }

    /// Registers a static user.
    pub fn add_user(&self, u: &StaticUser) {
        let info = UserInfo {
            name: u.name.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: BTreeMap::new(),
        };
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(u.token.clone(), info);
    }

    fn static_user(&self, token: &str) -> Option<UserInfo> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// A random token (32 hex characters of a v4 uuid twice).
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// 401 `Unauthorized`.
pub fn unauthorized() -> ApiError {
    ApiError::unauthorized()
}

fn meta_str<'a>(o: &'a Value, field: &str) -> Option<&'a str> {
    o.get("metadata")?.get(field)?.as_str()
}

fn core_key(resource: &str, namespace: &str, name: &str) -> ObjKey {
    ObjKey {
        group: String::new(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn deleted_before(o: &Value, now: i64) -> bool {
    meta_str(o, "deletionTimestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.timestamp() <= now)
}

/// The user of a verified service-account token, if the objects it is bound to still exist
/// with the same uids (a deleted ServiceAccount's or Pod's tokens stop working).
pub fn service_account_user(inner: &Inner, c: &tokens::Claims, now: i64) -> Option<UserInfo> {
    let k = &c.kubernetes;
    let sa = inner.objects.get(&core_key(
        "serviceaccounts",
        &k.namespace,
        &k.serviceaccount.name,
    ))?;
    if meta_str(sa, "uid") != Some(k.serviceaccount.uid.as_str())
        || meta_str(sa, "deletionTimestamp").is_some()
    {
        return None;
    }
    let mut extra = BTreeMap::new();
    if let Some(p) = &k.pod {
        let pod = inner
            .objects
            .get(&core_key("pods", &k.namespace, &p.name))?;
        if meta_str(pod, "uid") != Some(p.uid.as_str()) || deleted_before(pod, now) {
            return None;
        }
        extra.insert(EXTRA_POD_NAME.to_string(), vec![p.name.clone()]);
        extra.insert(EXTRA_POD_UID.to_string(), vec![p.uid.clone()]);
    }
    if let Some(s) = &k.secret {
        let secret = inner
            .objects
            .get(&core_key("secrets", &k.namespace, &s.name))?;
        if meta_str(secret, "uid") != Some(s.uid.as_str()) {
            return None;
        }
    }
    extra.insert(
        EXTRA_CREDENTIAL_ID.to_string(),
        vec![format!("JTI={}", c.jti)],
    );
    Some(UserInfo {
        name: rbac::service_account_user(&k.namespace, &k.serviceaccount.name),
        uid: k.serviceaccount.uid.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", k.namespace),
            AUTHENTICATED.into(),
        ],
        extra,
    })
}

/// Authenticates a bearer token (`None` = not ours).
pub fn authenticate_token(state: &State, token: &str) -> Option<UserInfo> {
    if let Some(u) = state.auth.static_user(token) {
        return Some(u.with_authenticated());
    }
    if !tokens::looks_like_jwt(token) {
        return None;
    }
    let now = chrono::Utc::now().timestamp();
    let claims = state.auth.signer.verify(token, now).ok()?;
    let inner = state.store.lock();
    service_account_user(&inner, &claims, now)
}

/// Who sent the request: the user of its bearer token, or `system:anonymous` without one.
/// An unknown token is a 401, as kube-apiserver answers (never anonymous).
pub fn authenticate(state: &State, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(h) = headers.get(header::AUTHORIZATION) else {
        return Ok(UserInfo::anonymous());
    };
    let Ok(h) = h.to_str() else {
        return Err(unauthorized());
    };
    let mut parts = h.trim().splitn(3, ' ');
    let (scheme, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        // Not a bearer token: no authenticator has an opinion (basic auth and client
        // certificates are not served).
        return Ok(UserInfo::anonymous());
    }
    authenticate_token(state, token).ok_or_else(unauthorized)
}

/// The 403 of a denied request.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let msg = if reason.is_empty() {
        a.forbidden_message()
    } else {
        format!("{}: {reason}", a.forbidden_message())
    };
    let qualified = if a.resource.is_empty() {
        String::new()
    } else if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {msg}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {} is forbidden: {msg}", rbac::quote(&a.name))
    };
    ApiError::forbidden(&a.api_group, &a.resource, &a.name, message)
}

/// Authorizes `a` (`system:masters` without touching the store).
pub fn authorize(state: &State, a: &Attributes) -> Decision {
    if authorizer::is_privileged(&a.user) {
        return Decision::Allow(String::new());
    }
    let inner = state.store.lock();
    authorizer::authorize(&inner, a)
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// Applies `Impersonate-User`/`-Group`/`-Uid`/`-Extra-*` headers: each needs the `impersonate`
/// verb on `users`, `groups`, `serviceaccounts` (for `system:serviceaccount:NS:NAME`), `uids`
/// or `userextras/KEY`.
pub fn impersonate(
    state: &State,
    actor: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let users = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let uids = header_values(headers, "impersonate-uid");
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = value.to_str()
        {
            let key = url::form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| key.to_string());
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    if users.is_empty() {
        if !groups.is_empty() || !uids.is_empty() || !extra.is_empty() {
            return Err(ApiError::internal(format!(
                "requested {} without impersonating a user",
                if !groups.is_empty() {
                    "group impersonation"
                } else if !uids.is_empty() {
                    "uid impersonation"
                } else {
                    "extra impersonation"
                }
            )));
        }
        return Ok(actor);
    }
    let name = users[0].clone();
    let mut checks = Vec::new();
    match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => checks.push(Attributes::resource(
            &actor,
            "impersonate",
            "",
            "serviceaccounts",
            "",
            ns,
            sa,
        )),
        None => checks.push(Attributes::resource(
            &actor,
            "impersonate",
            "",
            "users",
            "",
            "",
            &name,
        )),
    }
    for g in &groups {
        checks.push(Attributes::resource(
            &actor,
            "impersonate",
            "",
            "groups",
            "",
            "",
            g,
        ));
    }
    for u in &uids {
        checks.push(Attributes::resource(
            &actor,
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            "",
            u,
        ));
    }
    for (k, vs) in &extra {
        for v in vs {
            checks.push(Attributes::resource(
                &actor,
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                k,
                "",
                v,
            ));
        }
    }
    for a in &checks {
        if let Decision::Deny(reason) = authorize(state, a) {
            return Err(forbidden(a, &reason));
        }
    }
    let mut groups = groups;
    if groups.is_empty()
        && let Some((ns, _)) = name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
    {
        groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let mut user = UserInfo {
        name,
        uid: uids.first().cloned().unwrap_or_default(),
        groups,
        extra,
    };
    if user.name == ANONYMOUS {
        if !user.groups.iter().any(|g| g == UNAUTHENTICATED) {
            user.groups.push(UNAUTHENTICATED.into());
        }
    } else {
        user = user.with_authenticated();
    }
    Ok(user)
}

/// The filter chain of one request: authentication, impersonation, authorization. Returns who
/// the request runs as.
pub fn gate(
    state: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let user = authenticate(state, headers)?;
    let user = impersonate(state, user, headers)?;
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let query = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let a = request::attributes(&user, method.as_str(), uri.path(), &query);
    match authorize(state, &a) {
        Decision::Allow(_) => Ok(user),
        Decision::Deny(reason) => Err(forbidden(&a, &reason)),
    }
}

/// The resources of RBAC and of the review APIs.
pub fn resource_defs() -> Vec<crate::resources::ResourceDef> {
    use crate::resources::{Builtin, ResourceDef};
    let mut defs = Vec::new();
    for (plural, kind, namespaced, b) in [
        (
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            Builtin::RoleBinding,
        ),
        ("clusterroles", "ClusterRole", false, Builtin::Role),
        ("rolebindings", "RoleBinding", true, Builtin::RoleBinding),
        ("roles", "Role", true, Builtin::Role),
    ] {
        defs.push(ResourceDef::builtin(
            rbac::GROUP,
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            &[],
            b,
        ));
    }
    for (group, plural, kind, namespaced) in [
        (
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
        ),
        (
            "authentication.k8s.io",
            "tokenreviews",
            "TokenReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            true,
        ),
        (
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            false,
        ),
        (
            "authorization.k8s.io",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
        ),
    ] {
        let d = ResourceDef::builtin(
            group,
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            &[],
            Builtin::Review,
        );
        defs.push(d);
    }
    defs
}
