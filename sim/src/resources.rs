//! The resource registry: built-in kinds and the custom resources loaded from CRD files.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Built-in kinds with special server-side behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// core/v1 Pod.
    Pod,
    /// core/v1 PersistentVolumeClaim.
    PersistentVolumeClaim,
    /// core/v1 Event (storage representation of all events).
    CoreEvent,
    /// events.k8s.io/v1 Event (converted to/from the core/v1 storage form).
    EventV1,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// batch/v1 Job.
    Job,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition (see [`crate::crds`]).
    Crd,
    /// rbac.authorization.k8s.io/v1 Role and ClusterRole.
    Role,
    /// rbac.authorization.k8s.io/v1 RoleBinding and ClusterRoleBinding.
    RoleBinding,
    /// A create-only review (`authorization.k8s.io`, `authentication.k8s.io`): answered from
    /// the request, never stored.
    Review,
    /// apps/v1 Deployment (see [`crate::workloads`]).
    Deployment,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// core/v1 Service (stored; ClusterIP and NodePort allocation, no proxying).
    Service,
    /// policy/v1 PodDisruptionBudget (stored; no disruption controller).
    PodDisruptionBudget,
    /// networking.k8s.io/v1 NetworkPolicy (stored; not enforced).
    NetworkPolicy,
    /// admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration (called on writes, see
    /// [`crate::webhooks`]).
    ValidatingWebhookConfiguration,
    /// admissionregistration.k8s.io/v1 MutatingWebhookConfiguration (called on writes).
    MutatingWebhookConfiguration,
    /// admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (evaluated on writes, see
    /// [`crate::admission_policy`]).
    ValidatingAdmissionPolicy,
    /// admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding.
    ValidatingAdmissionPolicyBinding,
}

/// A CRD `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `number`, `boolean`, `date`).
    pub type_: String,
    /// Optional format.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 = shown by default).
    pub priority: i64,
    /// JSONPath like `.status.phase`.
    pub json_path: String,
}

/// A CRD's `subresources.scale`: JSON paths (`.spec.replicas`) of the replica counts and the
/// label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// `specReplicasPath`.
    pub spec_replicas: String,
    /// `statusReplicasPath`.
    pub status_replicas: String,
    /// `labelSelectorPath` (optional).
    pub label_selector: Option<String>,
}

/// Everything the server knows about one resource (one group/version/plural).
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: String,
    /// Version served.
    pub version: String,
    /// Plural resource name (URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`, `dataguardian`).
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (spec/status split).
    pub status_subresource: bool,
    /// Whether `/log` is a subresource (pods).
    pub log_subresource: bool,
    /// Whether `/scale` is a subresource (`autoscaling/v1` Scale of `spec.replicas`).
    pub scale_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Whether PUT without `metadata.resourceVersion` is allowed.
    pub allow_unconditional_update: bool,
    /// Whether PUT creates a missing object.
    pub allow_create_on_update: bool,
    /// Whether deletes default to `propagationPolicy: Orphan` (batch/v1 Jobs).
    pub orphan_by_default: bool,
    /// Read-only resource (only get/list/watch).
    pub read_only: bool,
    /// The CRD version's `openAPIV3Schema` (custom resources only; shared, as definitions are
    /// cloned per request).
    pub schema: Option<std::sync::Arc<Value>>,
    /// The compiled schema validator (custom resources only).
    pub validator: Option<std::sync::Arc<crate::validation::SchemaValidator>>,
    /// Printer columns (custom resources only).
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD's `subresources.scale` paths (custom resources with a scale subresource).
    pub scale_paths: Option<ScalePaths>,
    /// Whether the CRD serving this resource is being deleted (no creates).
    pub terminating: bool,
    /// Special behaviour of built-in kinds; `None` for custom resources.
    pub builtin: Option<Builtin>,
    /// The group and plural under which objects are stored (events.k8s.io events share the
    /// core/v1 storage).
    pub storage: (String, String),
}

impl ResourceDef {
    /// `group/version` or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Verbs of the main resource.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.builtin == Some(Builtin::Review) {
            return vec!["create"];
        }
        if self.read_only {
            vec!["get", "list", "watch"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// Whether this is a custom resource.
    pub fn is_custom(&self) -> bool {
        self.builtin.is_none()
    }

    /// The name of the CRD serving a custom resource (`plural.group`).
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
        categories: &[&str],
        b: Builtin,
    ) -> Self {
        ResourceDef {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: categories.iter().map(|s| s.to_string()).collect(),
            status_subresource: false,
            log_subresource: false,
            scale_subresource: false,
            has_generation: false,
            allow_unconditional_update: true,
            allow_create_on_update: false,
            orphan_by_default: false,
            read_only: false,
            schema: None,
            validator: None,
            printer_columns: Vec::new(),
            scale_paths: None,
            terminating: false,
            builtin: Some(b),
            storage: (group.into(), plural.into()),
        }
    }
}

/// Errors loading CRD files.
#[derive(Debug, thiserror::Error)]
pub enum CrdLoadError {
    /// The directory or a file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("parsing {path}: {source}")]
    Yaml {
        /// Path.
        path: String,
        /// Cause.
        source: serde_yaml::Error,
    },
    /// A CRD lacks a required field.
    #[error("{path}: invalid CustomResourceDefinition: {detail}")]
    Invalid {
        /// Path.
        path: String,
        /// What is missing.
        detail: String,
    },
}

/// All resources the server serves: the built-ins and one entry per served version of every
/// established CRD. The server keeps it in an `ArcSwap` ([`crate::ops::State::registry`]) and
/// replaces it whenever a CRD is written ([`Registry::with_crd`]).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Resource definitions.
    pub defs: Vec<ResourceDef>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtins() -> Self {
        use Builtin::*;
        let mut defs = Vec::new();
        let mut ns = ResourceDef::builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            &[],
            Namespace,
        );
        ns.status_subresource = true;
        defs.push(ns);
        defs.push(ResourceDef::builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            &[],
            &[],
            Secret,
        ));
        defs.push(ResourceDef::builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            &[],
            ConfigMap,
        ));
        defs.push(ResourceDef::builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
            ServiceAccount,
        ));
        let mut pod = ResourceDef::builtin("", "v1", "pods", "Pod", true, &["po"], &["all"], Pod);
        pod.status_subresource = true;
        pod.log_subresource = true;
        defs.push(pod);
        let mut pvc = ResourceDef::builtin(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            &[],
            PersistentVolumeClaim,
        );
        pvc.status_subresource = true;
        defs.push(pvc);
        let mut ev =
            ResourceDef::builtin("", "v1", "events", "Event", true, &["ev"], &[], CoreEvent);
        ev.allow_create_on_update = true;
        defs.push(ev);
        let mut ev1 = ResourceDef::builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            &[],
            EventV1,
        );
        ev1.allow_create_on_update = true;
        ev1.storage = (String::new(), "events".into());
        defs.push(ev1);
        let mut lease = ResourceDef::builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
            Lease,
        );
        lease.allow_create_on_update = true;
        defs.push(lease);
        let mut job = ResourceDef::builtin("batch", "v1", "jobs", "Job", true, &[], &["all"], Job);
        job.status_subresource = true;
        job.has_generation = true;
        job.orphan_by_default = true;
        defs.push(job);
        crate::workloads::register(&mut defs);
        crate::admission_policy::register(&mut defs);
        let mut crd = ResourceDef::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            Crd,
        );
        crd.status_subresource = true;
        crd.has_generation = true;
        defs.push(crd);
        defs.extend(crate::auth::resource_defs());
        Registry { defs }
    }

    /// Reads every `CustomResourceDefinition` from the YAML files (`*.yaml`, `*.yml`) in `dir`
    /// (with the file each came from); the server creates them through the API's create path.
    pub fn read_crd_files(dir: &Path) -> Result<Vec<(String, Value)>, CrdLoadError> {
        let io = |path: &Path, source| CrdLoadError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| io(&file, e))?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: Value =
                    serde::Deserialize::deserialize(doc).map_err(|source| CrdLoadError::Yaml {
                        path: file.display().to_string(),
                        source,
                    })?;
                if v.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                    continue;
                }
                out.push((file.display().to_string(), v));
            }
        }
        Ok(out)
    }

    /// This registry with the resources of CRD `name` replaced by those `crd` serves (`None`,
    /// or a CRD whose names are not accepted: the resources go). Schemas that do not compile
    /// were refused when the CRD was written; here they leave the CRD unserved.
    pub fn with_crd(&self, name: &str, crd: Option<&Value>) -> Registry {
        let mut defs: Vec<ResourceDef> = self
            .defs
            .iter()
            .filter(|d| !(d.is_custom() && d.crd_name() == name))
            .cloned()
            .collect();
        if let Some(crd) = crd.filter(|c| crate::crds::is_established(c)) {
            match Self::crd_defs(crd) {
                Ok(new) => defs.extend(new),
                Err(e) => tracing::warn!(crd = name, error = %e, "CRD not served"),
            }
        }
        Registry { defs }
    }

    /// The resources one CRD object serves (one per served version).
    pub fn crd_defs(crd: &Value) -> Result<Vec<ResourceDef>, String> {
        let mut out = Vec::new();
        let spec = crd.get("spec").ok_or("missing spec")?;
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let group = s(spec, "group").ok_or("missing spec.group")?;
        let names = spec.get("names").ok_or("missing spec.names")?;
        let plural = s(names, "plural").ok_or("missing spec.names.plural")?;
        let kind = s(names, "kind").ok_or("missing spec.names.kind")?;
        let singular = s(names, "singular").unwrap_or_else(|| kind.to_lowercase());
        let list_kind = s(names, "listKind").unwrap_or_else(|| format!("{kind}List"));
        let namespaced = s(spec, "scope").as_deref() != Some("Cluster");
        let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .ok_or("missing spec.versions")?;
        for ver in versions {
            if ver.get("served") == Some(&Value::Bool(false)) {
                continue;
            }
            let version = s(ver, "name").ok_or("version without name")?;
            let schema = ver
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .map(std::sync::Arc::new);
            let validator = match &schema {
                Some(s) => Some(std::sync::Arc::new(
                    crate::validation::SchemaValidator::new(s)
                        .map_err(|e| format!("version {version}: schema does not compile: {e}"))?,
                )),
                None => None,
            };
            let status_subresource = ver.pointer("/subresources/status").is_some();
            let scale_paths = ver.pointer("/subresources/scale").map(|sc| ScalePaths {
                spec_replicas: s(sc, "specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
                status_replicas: s(sc, "statusReplicasPath")
                    .unwrap_or_else(|| ".status.replicas".into()),
                label_selector: s(sc, "labelSelectorPath"),
            });
            let printer_columns = ver
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: s(c, "name").unwrap_or_default(),
                            type_: s(c, "type").unwrap_or_else(|| "string".into()),
                            format: s(c, "format").unwrap_or_default(),
                            description: s(c, "description").unwrap_or_default(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path: s(c, "jsonPath").unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ResourceDef {
                group: group.clone(),
                version,
                plural: plural.clone(),
                singular: singular.clone(),
                kind: kind.clone(),
                list_kind: list_kind.clone(),
                namespaced,
                short_names: strings(names.get("shortNames")),
                categories: strings(names.get("categories")),
                status_subresource,
                log_subresource: false,
                scale_subresource: scale_paths.is_some(),
                has_generation: true,
                allow_unconditional_update: false,
                allow_create_on_update: false,
                orphan_by_default: false,
                read_only: false,
                schema,
                validator,
                printer_columns,
                scale_paths,
                terminating,
                builtin: None,
                storage: (group.clone(), plural.clone()),
            });
        }
        Ok(out)
    }

    /// Looks a resource up by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// Looks a resource up by apiVersion and kind.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.api_version() == api_version && d.kind == kind)
    }

    /// Group → versions, in registration order (core group first).
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in &self.defs {
            let vs = out.entry(d.group.clone()).or_default();
            if !vs.contains(&d.version) {
                vs.push(d.version.clone());
            }
        }
        out
    }

    /// Group names in the order discovery lists them (built-ins first, then CRD groups).
    pub fn group_order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in &self.defs {
            if !d.group.is_empty() && !out.contains(&d.group) {
                out.push(d.group.clone());
            }
        }
        out
    }

    /// Resources of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceDef> + 'a {
        self.defs
            .iter()
            .filter(move |d| d.group == group && d.version == version)
    }
}
