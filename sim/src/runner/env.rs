//! Container environment resolution, following the kubelet's `makeEnvironmentVariables`:
//! `envFrom` sources first (with `prefix`), then `env` in order; a literal `value` may refer to
//! variables defined before it with `$(NAME)`; later definitions override earlier ones.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use super::expand::expand;

/// Secrets and ConfigMaps of the pod's namespace that a container refers to, by name.
/// A name that is absent did not exist when the kubelet looked.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Service-account tokens for the pod's `serviceAccountToken` projections, by audience
    /// (`""` = the API server's).
    pub service_account_tokens: BTreeMap<String, String>,
    /// The `kubernetes` Service's variables (`KUBERNETES_SERVICE_HOST`, ...): usable in
    /// `$(VAR)` references and added after the container's own variables unless it defines
    /// them, as the kubelet does.
    pub service_env: Vec<(String, String)>,
}

/// Names of the Secrets and ConfigMaps a container's env and envFrom refer to.
pub fn referenced_objects(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for from in container.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref {
            secrets.insert(s.name.clone());
        }
        if let Some(c) = &from.config_map_ref {
            config_maps.insert(c.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(source) = &var.value_from {
            if let Some(s) = &source.secret_key_ref {
                secrets.insert(s.name.clone());
            }
            if let Some(c) = &source.config_map_key_ref {
                config_maps.insert(c.name.clone());
            }
        }
    }
    (secrets, config_maps)
}

/// Why a container's environment cannot be built (`CreateContainerConfigError`). The messages
/// are the kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required Secret does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A required ConfigMap does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A required key is missing from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// Missing key.
        key: String,
    },
    /// A required key is missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyMissing {
        /// Namespace.
        namespace: String,
        /// ConfigMap name.
        name: String,
        /// Missing key.
        key: String,
    },
    /// A `fieldRef` path the kubelet does not support.
    #[error("unsupported fieldRef fieldPath {0:?}")]
    UnsupportedField(String),
    /// A `resourceFieldRef` the sim cannot answer.
    #[error("unsupported resourceFieldRef resource {0:?}")]
    UnsupportedResource(String),
}

/// Resolves a container's environment. `pod` must already carry the status fields a `fieldRef`
/// may ask for (`status.podIP`, `spec.nodeName`, ...).
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            out.push((name, value));
        }
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(s) = &from.config_map_ref {
            match sources.config_maps.get(&s.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if is_valid_env_name(&name) {
                            set(&mut out, name, v.clone());
                        }
                    }
                }
                None if s.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(s.name.clone())),
            }
        }
        if let Some(s) = &from.secret_ref {
            match sources.secrets.get(&s.name) {
                Some(secret) => {
                    for (k, v) in secret.data.iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if is_valid_env_name(&name) {
                            set(&mut out, name, String::from_utf8_lossy(&v.0).into_owned());
                        }
                    }
                }
                None if s.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(s.name.clone())),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            if let Some(r) = &source.secret_key_ref {
                let optional = r.optional == Some(true);
                match sources.secrets.get(&r.name) {
                    None if optional => continue,
                    None => return Err(EnvError::SecretNotFound(r.name.clone())),
                    Some(secret) => match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKeyMissing {
                                namespace: namespace.clone(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    },
                }
            } else if let Some(r) = &source.config_map_key_ref {
                let optional = r.optional == Some(true);
                match sources.config_maps.get(&r.name) {
                    None if optional => continue,
                    None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKeyMissing {
                                namespace: namespace.clone(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    },
                }
            } else if let Some(f) = &source.field_ref {
                field_value(pod, &f.field_path)?
            } else if let Some(r) = &source.resource_field_ref {
                resource_value(pod, container, r)?
            } else {
                String::new()
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            let known = out.clone();
            expand(&raw, &|name| {
                known
                    .iter()
                    .chain(sources.service_env.iter())
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        };
        set(&mut out, var.name.clone(), value);
    }
    for (k, v) in &sources.service_env {
        if !out.iter().any(|(n, _)| n == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// Expands `$(NAME)` in a container's `command` and `args` against its resolved environment.
pub fn expand_command(values: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    values.iter().map(|v| expand(v, &lookup)).collect()
}

/// The value of a downward-API `fieldRef`.
pub fn field_value(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(rest.to_string())
    };
    if let Some(key) = map_key("metadata.labels['") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&key))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = map_key("metadata.annotations['") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|l| l.get(&key))
            .cloned()
            .unwrap_or_default());
    }
    let join_ips = |ips: Option<Vec<String>>| ips.unwrap_or_default().join(",");
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIPs" => join_ips(
            status
                .and_then(|s| s.pod_ips.clone())
                .map(|v| v.into_iter().map(|i| i.ip).collect()),
        ),
        "status.hostIPs" => join_ips(
            status
                .and_then(|s| s.host_ips.clone())
                .map(|v| v.into_iter().map(|i| i.ip).collect()),
        ),
        other => return Err(EnvError::UnsupportedField(other.to_string())),
    })
}

/// The value of a `resourceFieldRef`: the container's request/limit, or for an unset limit the
/// sim node's allocatable (2 CPUs, 24 GiB) as the kubelet reports node allocatable.
fn resource_value(
    pod: &Pod,
    container: &Container,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, EnvError> {
    let target = match &r.container_name {
        Some(name) if !name.is_empty() && *name != container.name => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == *name))
            .unwrap_or(container),
        _ => container,
    };
    let (kind, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError::UnsupportedResource(r.resource.clone()))?;
    let resources = target.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|x| x.limits.as_ref()),
        "requests" => resources.and_then(|x| x.requests.as_ref()),
        _ => return Err(EnvError::UnsupportedResource(r.resource.clone())),
    };
    if let Some(q) = set.and_then(|m| m.get(resource)) {
        return Ok(q.0.clone());
    }
    Ok(match (kind, resource) {
        ("limits", "cpu") => "2".into(),
        ("limits", "memory") => (24u64 << 30).to_string(),
        ("limits", "ephemeral-storage") => (50u64 << 30).to_string(),
        ("requests", "cpu" | "memory" | "ephemeral-storage") => "0".into(),
        _ => return Err(EnvError::UnsupportedResource(r.resource.clone())),
    })
}

/// Kubernetes' rule for env var names (C identifier-ish, also `.` and `-`, not starting with a digit).
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '-' || c == '.' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
