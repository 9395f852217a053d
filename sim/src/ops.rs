//! The API operations (create, get, list, update, patch, delete) with the apiserver's
//! semantics: resourceVersion and conflicts, generation, the status split, finalizers,
//! managedFields, namespace lifecycle.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::apply::{record_update, server_side_apply};
use crate::builtin;
use crate::error::{ApiError, ApiResult};
use crate::patch::{PatchType, json_patch, merge_patch, strategic_merge};
use crate::resources::{Builtin, Registry, ResourceDef};
use crate::schema;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Inner, ObjKey, Store};

/// Shared server state.
#[derive(Debug)]
pub struct State {
    /// Served resources: a snapshot replaced (never mutated) when a CRD is written; read it
    /// with [`State::registry`].
    pub registry: arc_swap::ArcSwap<Registry>,
    /// Objects.
    pub store: Store,
    /// Where pod logs live (`logs/{ns}/{pod}/{container}.log`).
    pub state_dir: PathBuf,
    /// Wakes the garbage collector.
    pub gc_wake: Notify,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Authentication state (static users, the token signer, the cluster CA).
    pub auth: crate::auth::Auth,
}

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and warn (the default).
    #[default]
    Warn,
    /// Reject unknown fields with 400.
    Strict,
}

/// Options common to writes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// Field manager (from `fieldManager` or the User-Agent).
    pub manager: String,
    /// Whether `fieldManager` was given explicitly.
    pub manager_explicit: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
    /// Who asks (API requests: RBAC objects they write are checked for privilege escalation);
    /// `None` for the server's own controllers.
    pub requester: Option<crate::auth::UserInfo>,
    /// JSONPatches of mutating admission webhooks, applied to the object where the API server
    /// admits it ([`crate::webhooks`]).
    pub admission_patches: Vec<Value>,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The object as the client sees it.
    pub object: Value,
    /// Whether it was created (201).
    pub created: bool,
    /// `Warning` headers.
    pub warnings: Vec<String>,
}

/// `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete dependents in the background.
    Background,
    /// Delete dependents first.
    Foreground,
    /// Leave dependents.
    Orphan,
}

/// Delete options.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// Propagation policy (None = the resource's default).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds` (pods bound to a node terminate gracefully).
    pub grace_period: Option<i64>,
}

/// List options.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// Now, in the RFC 3339 seconds format Kubernetes uses.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The storage key of an object.
pub fn key_for(rd: &ResourceDef, ns: &str, name: &str) -> ObjKey {
    ObjKey {
        group: rd.storage.0.clone(),
        resource: rd.storage.1.clone(),
        namespace: if rd.namespaced {
            ns.to_string()
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

/// Converts a stored object to the representation of `rd`.
/// A list as the API server writes it, its items in their external form.
struct ListBody<'a> {
    rd: &'a ResourceDef,
    metadata: &'a Value,
    items: &'a [&'a Value],
}

impl serde::Serialize for ListBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Items<'a>(&'a ResourceDef, &'a [&'a Value]);
        impl serde::Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.1.len()))?;
                for o in self.1 {
                    seq.serialize_element(&External(self.0, o))?;
                }
                seq.end()
            }
        }
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("kind", &self.rd.list_kind)?;
        map.serialize_entry("apiVersion", &self.rd.api_version())?;
        map.serialize_entry("metadata", self.metadata)?;
        map.serialize_entry("items", &Items(self.rd, self.items))?;
        map.end()
    }
}

/// A stored object in its external form ([`to_external`]), serialized without copying it.
struct External<'a>(&'a ResourceDef, &'a Value);

impl serde::Serialize for External<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (rd, stored) = (self.0, self.1);
        let Some(fields) = stored
            .as_object()
            .filter(|_| rd.builtin != Some(Builtin::EventV1))
        else {
            return to_external(rd, stored).serialize(s);
        };
        let api_version = rd.api_version();
        // The stored keys are sorted (as in `to_external`'s copy): `apiVersion` and `kind` go
        // where that copy has them.
        let mut synthetic = [
            ("apiVersion", api_version.as_str()),
            ("kind", rd.kind.as_str()),
        ]
        .into_iter()
        .peekable();
        let mut map = s.serialize_map(None)?;
        for (k, v) in fields {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            while let Some((sk, sv)) = synthetic.next_if(|(sk, _)| *sk < k.as_str()) {
                map.serialize_entry(sk, sv)?;
            }
            map.serialize_entry(k, v)?;
        }
        for (sk, sv) in synthetic {
            map.serialize_entry(sk, sv)?;
        }
        map.end()
    }
}

pub fn to_external(rd: &ResourceDef, stored: &Value) -> Value {
    let mut out = match rd.builtin {
        Some(Builtin::EventV1) => builtin::event_core_to_v1(stored),
        _ => stored.clone(),
    };
    out["apiVersion"] = json!(rd.api_version());
    out["kind"] = json!(rd.kind);
    out
}

fn to_internal(rd: &ResourceDef, external: &Value) -> Value {
    match rd.builtin {
        Some(Builtin::EventV1) => builtin::event_v1_to_core(external),
        _ => external.clone(),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// What generation tracks: everything but metadata (and status when it is a subresource).
fn spec_view(obj: &Value, status_subresource: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if status_subresource {
            m.remove("status");
        }
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn without_rv(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        md.remove("resourceVersion");
    }
    v
}

fn check_body(rd: &ResourceDef, body: &Value) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && av != rd.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rd.api_version()
        )));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != rd.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rd.kind
        )));
    }
    if rd.is_custom() && body.get("kind").is_none() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            body
        )));
    }
    Ok(())
}

/// Runs CRD defaulting, pruning and validation, and built-in validation.
fn admit(
    rd: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    fv: FieldValidation,
    name: &str,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    let mut errs = Vec::new();
    let pruned = match &rd.schema {
        Some(s) => schema::default_and_prune(s, obj),
        None => builtin::prune_unknown(rd, obj),
    };
    if !pruned.is_empty() {
        match fv {
            FieldValidation::Strict => {
                let list: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    rd.kind,
                    rd.version,
                    rd.kind,
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(pruned.iter().map(|p| format!("unknown field \"{p}\"")));
            }
            FieldValidation::Ignore => {}
        }
    }
    if rd.schema.is_some() {
        errs.extend(schema::validate(rd, obj, old));
    }
    errs.extend(owner_reference_errors(obj));
    errs.extend(builtin::metadata_errors(obj));
    errs.extend(builtin::validate(rd, obj));
    if errs.is_empty() {
        Ok(warnings)
    } else {
        Err(ApiError::invalid_fields(&rd.group, &rd.kind, name, &errs))
    }
}

/// The apiserver's ownerReferences validation (required fields, at most one controller).
fn owner_reference_errors(obj: &Value) -> Vec<schema::FieldErr> {
    let mut errs = Vec::new();
    let Some(refs) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
    else {
        return errs;
    };
    let mut controllers = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        for (f, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push((
                    format!("metadata.ownerReferences[{i}].{f}"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"\": {what} must not be empty"),
                ));
            }
        }
        if r.get("controller") == Some(&Value::Bool(true)) {
            controllers.push(format!(
                "{}/{}",
                r.get("kind").and_then(Value::as_str).unwrap_or_default(),
                r.get("name").and_then(Value::as_str).unwrap_or_default()
            ));
        }
    }
    if controllers.len() > 1 {
        errs.push((
            "metadata.ownerReferences".into(),
            "FieldValueInvalid",
            format!(
                "Invalid value: \"[...]\": Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    errs
}

/// How managedFields are maintained by a write.
pub(crate) enum Managed<'a> {
    /// Record an `Update` by this manager.
    Update(&'a str),
    /// Already computed by server-side apply.
    Preset,
}

impl State {
    /// The current resource registry (a cheap snapshot; hold it across awaits if needed).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Serves what the stored CRD `name` now says (or stops serving it when it is gone). Called
    /// with the store locked after every write of a CRD, so snapshots follow the store's order.
    pub fn crd_changed(&self, inner: &Inner, name: &str) {
        let crd = inner.objects.get(&crate::crds::key(name));
        let next = self.registry.load().with_crd(name, crd);
        self.registry.store(Arc::new(next));
    }

    /// Creates a CRD given at start (`--crds`) through the create path, without managedFields
    /// (as if written before server-side apply tracked fields).
    pub fn create_initial_crd(&self, crd: Value) -> ApiResult<Outcome> {
        let reg = self.registry();
        let rd = reg
            .find(crate::crds::GROUP, "v1", crate::crds::RESOURCE)
            .expect("CRDs are a built-in resource");
        check_body(rd, &crd)?;
        let mut inner = self.store.lock();
        let opts = WriteOpts {
            field_validation: FieldValidation::Strict,
            ..Default::default()
        };
        self.create_locked(&mut inner, rd, "", crd, &opts, Managed::Preset)
    }

    /// Creates an object (POST).
    pub fn create(
        &self,
        rd: &ResourceDef,
        ns: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Outcome> {
        check_body(rd, &body)?;
        if meta_str(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut inner = self.store.lock();
        self.create_locked(
            &mut inner,
            rd,
            ns,
            body,
            opts,
            Managed::Update(&opts.manager),
        )
    }

    /// Create with the store already locked (controllers).
    pub fn create_in(
        &self,
        inner: &mut Inner,
        rd: &ResourceDef,
        ns: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Outcome> {
        self.create_locked(inner, rd, ns, body, opts, Managed::Update(&opts.manager))
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        rd: &ResourceDef,
        ns: &str,
        body: Value,
        opts: &WriteOpts,
        managed: Managed<'_>,
    ) -> ApiResult<Outcome> {
        if rd.read_only {
            return Err(ApiError::method_not_allowed(format!(
                "create is not supported on resources of kind \"{}\"",
                rd.plural
            )));
        }
        let mut obj = to_internal(rd, &body);
        obj["apiVersion"] = json!(rd.api_version());
        obj["kind"] = json!(rd.kind);
        if rd.builtin == Some(Builtin::EventV1) {
            obj["apiVersion"] = json!("v1");
        }
        let md = obj
            .as_object_mut()
            .expect("object")
            .entry("metadata")
            .or_insert(Value::Object(Map::new()));
        if !md.is_object() {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let mdm = md.as_object_mut().expect("object");
        if rd.namespaced {
            match mdm.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    mdm.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            mdm.remove("namespace");
        }
        let mut name = mdm
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // How admission errors name the object (its generateName before one is generated).
        let display_name = if name.is_empty() {
            meta_str(&body, "generateName")
                .unwrap_or_default()
                .to_string()
        } else {
            name.clone()
        };
        if name.is_empty() {
            match mdm.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let base: String = g.chars().take(63 - 5).collect();
                    name = format!("{base}{}", random_suffix());
                    mdm.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid_fields(
                        &rd.group,
                        &rd.kind,
                        "",
                        &[(
                            "metadata.name".into(),
                            "FieldValueRequired",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        if let Some(e) = builtin::name_error(rd, &name) {
            return Err(ApiError::invalid_fields(&rd.group, &rd.kind, &name, &[e]));
        }
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "selfLink",
        ] {
            mdm.remove(f);
        }
        if matches!(managed, Managed::Update(_)) {
            mdm.remove("managedFields");
        }
        let now = now();
        mdm.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        mdm.insert("creationTimestamp".into(), json!(now));
        if rd.has_generation {
            mdm.insert("generation".into(), json!(1));
        }
        if rd.namespaced {
            let ns_key = ObjKey {
                group: String::new(),
                resource: "namespaces".into(),
                namespace: String::new(),
                name: ns.to_string(),
            };
            match inner.objects.get(&ns_key) {
                None => return Err(ApiError::not_found("", "namespaces", ns)),
                Some(n) if meta_str(n, "deletionTimestamp").is_some() => {
                    let mut e = ApiError::forbidden(
                        &rd.group,
                        &rd.plural,
                        &name,
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            if rd.group.is_empty() {
                                rd.plural.clone()
                            } else {
                                format!("{}.{}", rd.plural, rd.group)
                            }
                        ),
                    );
                    e.causes.push(crate::error::Cause {
                        reason: "NamespaceTerminating".into(),
                        message: format!("namespace {ns} is being terminated"),
                        field: "metadata.namespace".into(),
                    });
                    return Err(e);
                }
                Some(_) => {}
            }
        }
        if rd.is_custom() {
            // The request may have resolved its resource just before the CRD went or began
            // terminating.
            match inner.objects.get(&crate::crds::key(&rd.crd_name())) {
                None => return Err(ApiError::no_route()),
                Some(crd) if meta_str(crd, "deletionTimestamp").is_some() => {
                    return Err(ApiError::method_not_allowed(
                        "create not allowed while custom resource definition is terminating",
                    ));
                }
                Some(_) => {}
            }
        }
        let key = key_for(rd, ns, &name);
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rd.group, &rd.plural, &name));
        }
        if rd.status_subresource
            && rd.is_custom()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        builtin::prepare_create(rd, &mut obj);
        if rd.builtin == Some(Builtin::Pod) {
            crate::auth::admission::admit_pod(inner, ns, &display_name, &mut obj)?;
        }
        for patch in &opts.admission_patches {
            obj = crate::patch::json_patch(&obj, patch)?;
        }
        let mut warnings = admit(rd, &mut obj, None, opts.field_validation, &name)?;
        if let Some(user) = &opts.requester {
            crate::auth::escalation::check(inner, rd, ns, &obj, None, user)?;
            let request = crate::admission_policy::Request {
                rd,
                subresource: None,
                operation: crate::admission_policy::Operation::Create,
                namespace: ns,
                name: &name,
                object: Some(&obj),
                old_object: None,
                user,
                dry_run: opts.dry_run,
            };
            warnings.extend(crate::admission_policy::admit(
                inner,
                &self.registry(),
                &request,
            )?);
        }
        crate::workloads::allocate(inner, rd, None, &mut obj)?;
        if let Managed::Update(mgr) = managed {
            record_update(rd, None, &mut obj, mgr, None, &now);
        }
        let stored = if opts.dry_run {
            obj
        } else {
            inner.put(key, obj)
        };
        if rd.builtin == Some(Builtin::Crd) && !opts.dry_run {
            self.crd_changed(inner, &name);
        }
        Ok(Outcome {
            object: to_external(rd, &stored),
            created: true,
            warnings,
        })
    }

    /// Reads one object.
    pub fn get(&self, rd: &ResourceDef, ns: &str, name: &str) -> ApiResult<Value> {
        let inner = self.store.lock();
        inner
            .objects
            .get(&key_for(rd, ns, name))
            .map(|o| to_external(rd, o))
            .ok_or_else(|| ApiError::not_found(&rd.group, &rd.plural, name))
    }

    /// Lists objects (namespace `None` = all namespaces).
    pub fn list(&self, rd: &ResourceDef, ns: Option<&str>, opts: &ListOpts) -> ApiResult<Value> {
        self.with_page(rd, ns, opts, |items, metadata| {
            json!({
                "kind": rd.list_kind,
                "apiVersion": rd.api_version(),
                "metadata": metadata,
                "items": items.iter().map(|o| to_external(rd, o)).collect::<Vec<_>>(),
            })
        })
    }

    /// [`Ops::list`], serialized: the same JSON, written straight from the stored objects
    /// (no copy of each object is made to set its `apiVersion` and `kind`). A list of 100,000
    /// objects is what an operator's restart reads; copying every object first made the
    /// stand-in, not the client, the slow side of that read.
    pub fn list_json(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> ApiResult<String> {
        self.with_page(rd, ns, opts, |items, metadata| {
            let list = ListBody {
                rd,
                metadata: &metadata,
                items,
            };
            serde_json::to_string(&list).expect("JSON values serialize")
        })
    }

    /// Calls `f` with the page of objects `opts` selects and the list's metadata
    /// (`resourceVersion`, and `continue` when more objects follow), under the store's lock.
    fn with_page<R>(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOpts,
        f: impl FnOnce(&[&Value], Value) -> R,
    ) -> ApiResult<R> {
        let inner = self.store.lock();
        let ns = if rd.namespaced { ns } else { None };
        let start_after: Option<(String, String)> = match &opts.continue_token {
            Some(t) if !t.is_empty() => Some(decode_continue(t)?),
            _ => None,
        };
        let mut items: Vec<&Value> = Vec::new();
        let mut last: Option<&ObjKey> = None;
        let mut more = None;
        let objects: Box<dyn Iterator<Item = _>> = match &start_after {
            Some((sns, sname)) => {
                Box::new(inner.list_after(&rd.storage.0, &rd.storage.1, ns, (sns, sname)))
            }
            None => Box::new(inner.list(&rd.storage.0, &rd.storage.1, ns)),
        };
        for (k, o) in objects {
            if let Some((sns, sname)) = &start_after
                && (&k.namespace, &k.name) <= (sns, sname)
            {
                continue;
            }
            if !opts.labels.matches(o) || !opts.fields.matches(o) {
                continue;
            }
            if let Some(l) = opts.limit
                && l > 0
                && items.len() == l
            {
                let last = last.map(|k| (k.namespace.clone(), k.name.clone()));
                more = Some(encode_continue(inner.rv, &last.unwrap_or_default()));
                break;
            }
            items.push(o);
            last = Some(k);
        }
        let mut metadata = json!({"resourceVersion": inner.rv.to_string()});
        if let Some(c) = more {
            metadata["continue"] = json!(c);
        }
        Ok(f(&items, metadata))
    }

    /// Replaces an object (PUT), optionally its status subresource.
    pub fn update(
        &self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        body: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Outcome> {
        check_body(rd, &body)?;
        if let Some(n) = meta_str(&body, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if rd.namespaced
            && let Some(n) = meta_str(&body, "namespace")
            && !n.is_empty()
            && n != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut inner = self.store.lock();
        let key = key_for(rd, ns, name);
        let Some(old) = inner.objects.get(&key).cloned() else {
            if rd.allow_create_on_update && sub.is_none() {
                let mut body = body;
                body["metadata"]["name"] = json!(name);
                return self.create_locked(
                    &mut inner,
                    rd,
                    ns,
                    body,
                    opts,
                    Managed::Update(&opts.manager),
                );
            }
            return Err(ApiError::not_found(&rd.group, &rd.plural, name));
        };
        let new = to_internal(rd, &body);
        match meta_str(&new, "resourceVersion") {
            Some(rv) if !rv.is_empty() => {
                if Some(rv) != meta_str(&old, "resourceVersion") {
                    return Err(ApiError::conflict(&rd.group, &rd.plural, name));
                }
            }
            _ => {
                if !rd.allow_unconditional_update {
                    return Err(ApiError::invalid_fields(
                        &rd.group,
                        &rd.kind,
                        name,
                        &[(
                            "metadata.resourceVersion".into(),
                            "FieldValueInvalid",
                            "Invalid value: 0x0: must be specified for an update".into(),
                        )],
                    ));
                }
            }
        }
        self.commit_update(
            &mut inner,
            rd,
            key,
            old,
            new,
            sub,
            opts,
            Managed::Update(&opts.manager),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_update(
        &self,
        inner: &mut Inner,
        rd: &ResourceDef,
        key: ObjKey,
        old: Value,
        mut new: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
        managed: Managed<'_>,
    ) -> ApiResult<Outcome> {
        if rd.read_only {
            return Err(ApiError::method_not_allowed(format!(
                "update is not supported on resources of kind \"{}\"",
                rd.plural
            )));
        }
        let now = now();
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if sub == Some("status") {
            let status = new.get("status").cloned();
            let mf = new.pointer("/metadata/managedFields").cloned();
            let annotations = new.pointer("/metadata/annotations").cloned();
            new = old.clone();
            crate::workloads::status_write_annotations(rd, annotations, &mut new);
            match status {
                Some(s) => new["status"] = s,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            if let (Managed::Preset, Some(mf)) = (&managed, mf) {
                new["metadata"]["managedFields"] = mf;
            }
        } else {
            if !new.get("metadata").is_some_and(Value::is_object) {
                new["metadata"] = json!({});
            }
            if rd.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "generateName",
            ] {
                match old.get("metadata").and_then(|m| m.get(f)) {
                    Some(v) => new["metadata"][f] = v.clone(),
                    None => {
                        new["metadata"].as_object_mut().expect("object").remove(f);
                    }
                }
            }
            if matches!(managed, Managed::Update(_)) {
                match old.pointer("/metadata/managedFields") {
                    Some(v) => new["metadata"]["managedFields"] = v.clone(),
                    None => {
                        new["metadata"]
                            .as_object_mut()
                            .expect("object")
                            .remove("managedFields");
                    }
                }
            }
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        let name = key.name.clone();
        let mut errs = builtin::prepare_update(rd, &old, &mut new);
        if meta_str(&old, "deletionTimestamp").is_some() {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                errs.push((
                    "metadata.finalizers".into(),
                    "FieldValueForbidden",
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        added.iter().map(|f| format!("\"{f}\"")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid_fields(&rd.group, &rd.kind, &name, &errs));
        }
        for patch in &opts.admission_patches {
            new = crate::patch::json_patch(&new, patch)?;
        }
        let mut warnings = admit(rd, &mut new, Some(&old), opts.field_validation, &name)?;
        if let Some(user) = &opts.requester {
            crate::auth::escalation::check(inner, rd, &key.namespace, &new, Some(&old), user)?;
            let request = crate::admission_policy::Request {
                rd,
                subresource: sub,
                operation: crate::admission_policy::Operation::Update,
                namespace: &key.namespace,
                name: &name,
                object: Some(&new),
                old_object: Some(&old),
                user,
                dry_run: opts.dry_run,
            };
            warnings.extend(crate::admission_policy::admit(
                inner,
                &self.registry(),
                &request,
            )?);
        }
        crate::workloads::allocate(inner, rd, Some(&old), &mut new)?;
        if rd.has_generation
            && sub.is_none()
            && spec_view(&old, rd.status_subresource) != spec_view(&new, rd.status_subresource)
        {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if let Managed::Update(mgr) = managed {
            record_update(rd, Some(&old), &mut new, mgr, sub, &now);
        }
        if without_rv(&new) == without_rv(&old) {
            return Ok(Outcome {
                object: to_external(rd, &old),
                created: false,
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(Outcome {
                object: to_external(rd, &new),
                created: false,
                warnings,
            });
        }
        // Like the apiserver's ShouldDeleteDuringUpdate: a deleting object without finalizers
        // whose grace period is over (0) goes; a terminating pod waits for its kubelet.
        let grace_over = new
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g == 0);
        let stored = if meta_str(&new, "deletionTimestamp").is_some()
            && finalizers(&new).is_empty()
            && grace_over
        {
            inner.objects.insert(key.clone(), new);
            let gone = inner.remove(&key).expect("just inserted");
            self.gc_wake.notify_one();
            gone
        } else {
            inner.put(key, new)
        };
        if rd.builtin == Some(Builtin::Crd) {
            self.crd_changed(inner, &name);
        }
        Ok(Outcome {
            object: to_external(rd, &stored),
            created: false,
            warnings,
        })
    }

    /// Patches an object (PATCH) with any patch type, including server-side apply.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        ptype: PatchType,
        patch: Value,
        sub: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Outcome> {
        if ptype == PatchType::Strategic && rd.is_custom() {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        if ptype == PatchType::Apply {
            if !opts.manager_explicit {
                return Err(ApiError::bad_request(
                    "PATCH /apply requires fieldManager to be set",
                ));
            }
            check_body(rd, &patch)?;
            if let Some(n) = meta_str(&patch, "name")
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let mut inner = self.store.lock();
        let key = key_for(rd, ns, name);
        let now = now();
        let Some(old) = inner.objects.get(&key).cloned() else {
            if ptype == PatchType::Apply && sub.is_none() {
                let mut skeleton = json!({
                    "apiVersion": rd.api_version(),
                    "kind": rd.kind,
                    "metadata": {"name": name},
                });
                if let Some(md) = patch.get("metadata") {
                    for f in ["namespace", "generateName"] {
                        if let Some(v) = md.get(f) {
                            skeleton["metadata"][f] = v.clone();
                        }
                    }
                }
                let ext = to_external(rd, &skeleton);
                let mut obj =
                    server_side_apply(rd, &ext, &patch, &opts.manager, opts.force, None, &now)?;
                // Status is not part of a main-resource apply, but create keeps what the
                // strategy keeps (nothing for CRs with a status subresource).
                if !rd.status_subresource
                    && let Some(s) = patch.get("status")
                {
                    obj["status"] = s.clone();
                }
                return self.create_locked(&mut inner, rd, ns, obj, opts, Managed::Preset);
            }
            return Err(ApiError::not_found(&rd.group, &rd.plural, name));
        };
        let ext_old = to_external(rd, &old);
        let new_ext = match ptype {
            PatchType::Merge => merge_patch(&ext_old, &patch),
            PatchType::Json => json_patch(&ext_old, &patch)?,
            PatchType::Strategic => strategic_merge(&ext_old, &patch)?,
            PatchType::Apply => {
                server_side_apply(rd, &ext_old, &patch, &opts.manager, opts.force, sub, &now)?
            }
        };
        let want_rv = if ptype == PatchType::Apply {
            meta_str(&patch, "resourceVersion")
        } else {
            meta_str(&new_ext, "resourceVersion")
        };
        if let Some(rv) = want_rv
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(&rd.group, &rd.plural, name));
        }
        if let Some(n) = meta_str(&new_ext, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let new = to_internal(rd, &new_ext);
        let managed = if ptype == PatchType::Apply {
            Managed::Preset
        } else {
            Managed::Update(&opts.manager)
        };
        self.commit_update(&mut inner, rd, key, old, new, sub, opts, managed)
    }

    /// Deletes an object (honouring finalizers and the propagation policy).
    pub fn delete(
        &self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<Outcome> {
        if rd.read_only {
            return Err(ApiError::method_not_allowed(format!(
                "delete is not supported on resources of kind \"{}\"",
                rd.plural
            )));
        }
        let mut inner = self.store.lock();
        self.delete_locked(&mut inner, rd, ns, name, opts)
    }

    fn delete_locked(
        &self,
        inner: &mut Inner,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<Outcome> {
        let key = key_for(rd, ns, name);
        let Some(mut obj) = inner.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(&rd.group, &rd.plural, name));
        };
        if let Some(uid) = &opts.uid
            && Some(uid.as_str()) != meta_str(&obj, "uid")
        {
            return Err(ApiError::conflict_msg(
                &rd.group,
                &rd.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && Some(rv.as_str()) != meta_str(&obj, "resourceVersion")
        {
            return Err(ApiError::conflict_msg(
                &rd.group,
                &rd.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        let already_deleting = meta_str(&obj, "deletionTimestamp").is_some();
        if rd.builtin == Some(Builtin::Namespace) {
            if matches!(name, "default" | "kube-system" | "kube-public") {
                return Err(ApiError::forbidden(
                    "",
                    "namespaces",
                    name,
                    format!(
                        "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                    ),
                ));
            }
            if !already_deleting && !opts.dry_run {
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["status"]["phase"] = json!("Terminating");
                obj = inner.put(key, obj);
                self.gc_wake.notify_one();
            }
            return Ok(Outcome {
                object: to_external(rd, &obj),
                created: false,
                warnings: Vec::new(),
            });
        }
        if rd.builtin == Some(Builtin::Crd) {
            // apiextensions-apiserver's REST.Delete: the first delete marks the CRD and adds
            // the cleanup finalizer; the finalizer controller (`crds::cleanup_pass`) deletes
            // the custom resources and then the CRD.
            if !already_deleting && !opts.dry_run {
                obj["metadata"]["deletionTimestamp"] = json!(now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                crate::crds::mark_terminating(&mut obj);
                obj = inner.put(key, obj);
                self.crd_changed(inner, name);
                self.gc_wake.notify_one();
            }
            return Ok(Outcome {
                object: to_external(rd, &obj),
                created: false,
                warnings: Vec::new(),
            });
        }
        let policy = opts.propagation.unwrap_or(if rd.orphan_by_default {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
        let mut fins = finalizers(&obj);
        let gc_fin = match policy {
            Propagation::Orphan => Some("orphan"),
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Background => None,
        };
        if let Some(f) = gc_fin
            && !fins.iter().any(|x| x == f)
        {
            fins.push(f.to_string());
        }
        if opts.dry_run {
            return Ok(Outcome {
                object: to_external(rd, &obj),
                created: false,
                warnings: Vec::new(),
            });
        }
        // Pods bound to a node and not yet terminal are deleted gracefully: the kubelet stops
        // them and then deletes them with a zero grace period.
        let grace = if rd.builtin == Some(Builtin::Pod) {
            let bound = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                obj.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if bound && !terminal {
                opts.grace_period.unwrap_or_else(|| {
                    obj.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                })
            } else {
                0
            }
        } else {
            0
        }
        .max(0);
        if fins.is_empty() && grace == 0 {
            let gone = inner.remove(&key).expect("exists");
            self.gc_wake.notify_one();
            return Ok(Outcome {
                object: to_external(rd, &gone),
                created: false,
                warnings: Vec::new(),
            });
        }
        let before = obj.clone();
        obj["metadata"]["finalizers"] = json!(fins);
        let current_grace = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if already_deleting && current_grace.is_some_and(|g| grace < g) {
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        if !already_deleting {
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            obj["metadata"]["deletionTimestamp"] =
                json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64) {
                obj["metadata"]["generation"] = json!(g + 1);
            }
        }
        if obj != before {
            obj = inner.put(key, obj);
        }
        self.gc_wake.notify_one();
        Ok(Outcome {
            object: to_external(rd, &obj),
            created: false,
            warnings: Vec::new(),
        })
    }

    /// `pods/{name}/binding`: assigns a pod to a node (what the scheduler does).
    pub fn bind_pod(
        &self,
        rd: &ResourceDef,
        ns: &str,
        name: &str,
        binding: &Value,
    ) -> ApiResult<Value> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_fields(
                    "",
                    "Binding",
                    name,
                    &[(
                        "target.name".into(),
                        "FieldValueRequired",
                        "Required value".into(),
                    )],
                )
            })?;
        let mut inner = self.store.lock();
        let key = key_for(rd, ns, name);
        let Some(mut pod) = inner.objects.get(&key).cloned() else {
            return Err(ApiError::not_found("", "pods", name));
        };
        if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str)
            && !uid.is_empty()
            && Some(uid) != meta_str(&pod, "uid")
        {
            return Err(ApiError::conflict_msg(
                "",
                "pods/binding",
                name,
                "the UID in the binding does not match the pod",
            ));
        }
        if meta_str(&pod, "deletionTimestamp").is_some() {
            return Err(ApiError::conflict_msg(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(cur) = pod.pointer("/spec/nodeName").and_then(Value::as_str)
            && !cur.is_empty()
        {
            return Err(ApiError::conflict_msg(
                "",
                "pods/binding",
                name,
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()});
        match pod
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            Some(conds) => {
                conds.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
                conds.push(cond);
            }
            None => pod["status"]["conditions"] = json!([cond]),
        }
        inner.put(key, pod);
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// Deletes every object matching the list options.
    pub fn delete_collection(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> ApiResult<Value> {
        let mut inner = self.store.lock();
        let ns = if rd.namespaced { ns } else { None };
        let targets: Vec<ObjKey> = inner
            .list(&rd.storage.0, &rd.storage.1, ns)
            .filter(|(_, o)| list.labels.matches(o) && list.fields.matches(o))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for k in targets {
            match self.delete_locked(&mut inner, rd, &k.namespace, &k.name, opts) {
                Ok(o) => items.push(o.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": rd.list_kind,
            "apiVersion": rd.api_version(),
            "metadata": {"resourceVersion": inner.rv.to_string()},
            "items": items,
        }))
    }

    /// Internal delete used by the garbage collector and namespace controller.
    pub fn delete_key(&self, inner: &mut Inner, key: &ObjKey, propagation: Propagation) {
        let reg = self.registry();
        let Some(rd) = reg.defs.iter().find(|d| {
            d.storage.0 == key.group && d.storage.1 == key.resource && d.group == key.group
        }) else {
            return;
        };
        let opts = DeleteOpts {
            propagation: Some(propagation),
            ..Default::default()
        };
        let _ = self.delete_locked(inner, rd, &key.namespace, &key.name, &opts);
    }

    /// Internal update of a stored object by a controller (GC, namespace controller); records
    /// managedFields for `manager` and removes the object when its last finalizer goes.
    pub fn controller_update(&self, inner: &mut Inner, key: &ObjKey, new: Value, manager: &str) {
        let Some(old) = inner.objects.get(key).cloned() else {
            return;
        };
        let Some(rd) = self
            .registry()
            .defs
            .iter()
            .find(|d| {
                d.storage.0 == key.group && d.storage.1 == key.resource && d.group == key.group
            })
            .cloned()
        else {
            return;
        };
        let rd = Arc::new(rd);
        let opts = WriteOpts {
            manager: manager.to_string(),
            field_validation: FieldValidation::Ignore,
            ..Default::default()
        };
        if let Err(e) = self.commit_update(
            inner,
            &rd,
            key.clone(),
            old,
            new,
            None,
            &opts,
            Managed::Update(manager),
        ) {
            tracing::warn!(error = %e, ?key, "controller update failed");
        }
    }
}

fn encode_continue(rv: u64, last: &(String, String)) -> String {
    use base64::Engine as _;
    let raw = json!({"rv": rv, "ns": last.0, "name": last.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    use base64::Engine as _;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v.get("ns")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        v.get("name")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
    ))
}
