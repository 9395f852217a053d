//! Pod volumes on the host: what each volume holds (pure) and writing it into the pod's dir.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};

use super::env::{EnvSources, field_value};

/// One file a volume projects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path relative to the volume root.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// What a volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePlan {
    /// An empty directory private to the pod (emptyDir).
    EmptyDir,
    /// A directory private to the pod holding these files (secret, configMap, downwardAPI,
    /// projected).
    Files(Vec<VolumeFile>),
    /// A directory that outlives the pod, under the runner's state dir (persistentVolumeClaim:
    /// `pvc/<namespace>/<claim>`; hostPath: `hostpath/<path>`).
    Persistent(PathBuf),
}

/// Why a volume cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// A referenced object is missing; the kubelet retries (`FailedMount`).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    NotReady {
        /// Volume name.
        volume: String,
        /// Cause.
        message: String,
    },
    /// The sim cannot provide this kind of volume.
    #[error("volume \"{volume}\": {kind} volumes are not supported by kube-sim")]
    Unsupported {
        /// Volume name.
        volume: String,
        /// The volume source kind.
        kind: &'static str,
    },
}

/// Names of the Secrets and ConfigMaps the pod's volumes refer to.
pub fn volume_references(volumes: &[Volume]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for v in volumes {
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        if let Some(c) = &v.config_map {
            config_maps.insert(c.name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
            if let Some(c) = &source.config_map {
                config_maps.insert(c.name.clone());
            }
        }
    }
    (secrets, config_maps)
}

fn project(
    volume: &str,
    kind: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: u32,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let Some(data) = data else {
        if optional {
            return Ok(Vec::new());
        }
        return Err(VolumeError::NotReady {
            volume: volume.into(),
            message: format!("{kind} \"{name}\" not found"),
        });
    };
    let mut files = Vec::new();
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => files.push(VolumeFile {
                        path: item.path.clone(),
                        data: bytes.clone(),
                        mode: item.mode.map(|m| m as u32).unwrap_or(default_mode),
                    }),
                    None if optional => {}
                    None => {
                        return Err(VolumeError::NotReady {
                            volume: volume.into(),
                            message: format!(
                                "{kind} references non-existent config key: {}",
                                item.key
                            ),
                        });
                    }
                }
            }
        }
        None => {
            for (k, v) in data {
                files.push(VolumeFile {
                    path: k,
                    data: v,
                    mode: default_mode,
                });
            }
        }
    }
    Ok(files)
}

fn secret_data(sources: &EnvSources, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    sources.secrets.get(name).map(|s| {
        s.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    })
}

fn config_map_data(sources: &EnvSources, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    sources.config_maps.get(name).map(|c| {
        let mut out: BTreeMap<String, Vec<u8>> = c
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in c.binary_data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        out
    })
}

const DEFAULT_MODE: u32 = 0o644;

/// Decides what a volume holds. `pod` must carry the status fields a downwardAPI item may read.
pub fn plan_volume(
    pod: &Pod,
    volume: &Volume,
    sources: &EnvSources,
) -> Result<VolumePlan, VolumeError> {
    let name = volume.name.as_str();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    if volume.empty_dir.is_some() {
        return Ok(VolumePlan::EmptyDir);
    }
    if let Some(s) = &volume.secret {
        let secret_name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        return project(
            name,
            "secret",
            &secret_name,
            secret_data(sources, &secret_name),
            s.items.as_ref(),
            s.optional == Some(true),
            mode,
        )
        .map(VolumePlan::Files);
    }
    if let Some(c) = &volume.config_map {
        let mode = c.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        return project(
            name,
            "configmap",
            &c.name,
            config_map_data(sources, &c.name),
            c.items.as_ref(),
            c.optional == Some(true),
            mode,
        )
        .map(VolumePlan::Files);
    }
    if let Some(d) = &volume.downward_api {
        let mode = d.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        let mut files = Vec::new();
        for item in d.items.iter().flatten() {
            files.push(downward_file(pod, name, item, mode)?);
        }
        return Ok(VolumePlan::Files(files));
    }
    if let Some(p) = &volume.projected {
        let mode = p.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
        let mut files = Vec::new();
        for source in p.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                files.extend(project(
                    name,
                    "secret",
                    &s.name,
                    secret_data(sources, &s.name),
                    s.items.as_ref(),
                    s.optional == Some(true),
                    mode,
                )?);
            } else if let Some(c) = &source.config_map {
                files.extend(project(
                    name,
                    "configmap",
                    &c.name,
                    config_map_data(sources, &c.name),
                    c.items.as_ref(),
                    c.optional == Some(true),
                    mode,
                )?);
            } else if let Some(d) = &source.downward_api {
                for item in d.items.iter().flatten() {
                    files.push(downward_file(pod, name, item, mode)?);
                }
            } else if let Some(t) = &source.service_account_token {
                let audience = t.audience.clone().unwrap_or_default();
                let Some(token) = sources.service_account_tokens.get(&audience) else {
                    return Err(VolumeError::NotReady {
                        volume: name.into(),
                        message:
                            "failed to fetch token: no token was requested for this projection"
                                .into(),
                    });
                };
                files.push(VolumeFile {
                    path: t.path.clone(),
                    data: token.clone().into_bytes(),
                    mode,
                });
            } else {
                return Err(VolumeError::Unsupported {
                    volume: name.into(),
                    kind: "this projected source",
                });
            }
        }
        return Ok(VolumePlan::Files(files));
    }
    if let Some(pvc) = &volume.persistent_volume_claim {
        return Ok(VolumePlan::Persistent(
            PathBuf::from("pvc")
                .join(&ns)
                .join(safe_component(&pvc.claim_name)),
        ));
    }
    if let Some(h) = &volume.host_path {
        let rel: PathBuf = Path::new(&h.path)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_owned()),
                _ => None,
            })
            .collect();
        return Ok(VolumePlan::Persistent(PathBuf::from("hostpath").join(rel)));
    }
    let kind = if volume.ephemeral.is_some() {
        "ephemeral"
    } else if volume.csi.is_some() {
        "csi"
    } else if volume.nfs.is_some() {
        "nfs"
    } else {
        "this kind of"
    };
    Err(VolumeError::Unsupported {
        volume: name.into(),
        kind,
    })
}

fn downward_file(
    pod: &Pod,
    volume: &str,
    item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile,
    mode: u32,
) -> Result<VolumeFile, VolumeError> {
    let value = match &item.field_ref {
        Some(f) => {
            if f.field_path == "metadata.labels" || f.field_path == "metadata.annotations" {
                let map = if f.field_path == "metadata.labels" {
                    pod.metadata.labels.clone()
                } else {
                    pod.metadata.annotations.clone()
                };
                map.unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\"\n"))
                    .collect()
            } else {
                field_value(pod, &f.field_path).map_err(|e| VolumeError::NotReady {
                    volume: volume.into(),
                    message: e.to_string(),
                })?
            }
        }
        None => {
            return Err(VolumeError::Unsupported {
                volume: volume.into(),
                kind: "downwardAPI resourceFieldRef",
            });
        }
    };
    Ok(VolumeFile {
        path: item.path.clone(),
        data: value.into_bytes(),
        mode: item.mode.map(|m| m as u32).unwrap_or(mode),
    })
}

fn safe_component(s: &str) -> String {
    s.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}

/// Writes a volume plan. Returns the host directory of the volume.
/// `pod_volumes` is the pod's private volume root, `state_dir` the runner's state dir.
pub fn materialize(
    plan: &VolumePlan,
    name: &str,
    pod_volumes: &Path,
    state_dir: &Path,
) -> std::io::Result<PathBuf> {
    match plan {
        VolumePlan::EmptyDir => {
            let dir = pod_volumes.join(safe_component(name));
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
            Ok(dir)
        }
        VolumePlan::Files(files) => {
            let dir = pod_volumes.join(safe_component(name));
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            for f in files {
                let rel: PathBuf = Path::new(&f.path)
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_owned()),
                        _ => None,
                    })
                    .collect();
                if rel.as_os_str().is_empty() {
                    continue;
                }
                let path = dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, &f.data)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
            }
            Ok(dir)
        }
        VolumePlan::Persistent(rel) => {
            let dir = state_dir.join("volumes").join(rel);
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
            Ok(dir)
        }
    }
}

/// What the kubelet does for a pod's `fsGroup` (`SetVolumeOwnership`): every file and directory
/// of the volume gets group `gid`, group read (read-only volumes) or read-write permission,
/// and directories the setgid bit and group search permission, so the container's processes
/// (which run with `gid` as a supplementary group) can use them.
pub fn apply_fs_group(dir: &Path, gid: u32, read_only: bool) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    let mut mask = if read_only { 0o440 } else { 0o660 };
    if meta.is_dir() {
        mask |= 0o2000 | 0o110;
    }
    let mode = meta.permissions().mode() & 0o7777;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | mask))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            apply_fs_group(&entry?.path(), gid, read_only)?;
        }
    }
    Ok(())
}
