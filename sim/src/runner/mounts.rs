//! Mapping of in-container paths (volume mounts, the termination-message file) to host paths.
//!
//! Processes run on the host, so a container path such as `/var/run/secrets/db` does not exist
//! for them. The runner therefore (1) rewrites occurrences of each mount path in the container's
//! argv and env values to the host directory, and (2) tells programs the mapping through
//! `SIM_MOUNT_<PATH>` variables (path upper-cased, non-alphanumerics as `_`).

use std::path::PathBuf;

/// In-container path → host path, longest container path first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountMap {
    entries: Vec<(String, PathBuf)>,
}

impl MountMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a mapping (a trailing `/` on the container path is ignored; `/` itself is ignored).
    pub fn insert(&mut self, container_path: &str, host: PathBuf) {
        let path = container_path.trim_end_matches('/');
        if path.is_empty() {
            return;
        }
        self.entries.retain(|(p, _)| p != path);
        self.entries.push((path.to_string(), host));
        self.entries
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// The mappings, longest container path first.
    pub fn entries(&self) -> &[(String, PathBuf)] {
        &self.entries
    }

    /// The host path for a container path, if it lies under a mapping.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        self.entries.iter().find_map(|(p, host)| {
            let rest = container_path.strip_prefix(p.as_str())?;
            if rest.is_empty() {
                Some(host.clone())
            } else {
                rest.strip_prefix('/').map(|r| host.join(r))
            }
        })
    }

    /// Rewrites every occurrence of a mapped container path (as a whole path or path prefix) in
    /// `s` to its host path. `/data` is rewritten in `--dir=/data/x` but not in `/database` or
    /// `/srv/data`.
    pub fn rewrite(&self, s: &str) -> String {
        let pairs: Vec<(&str, String)> = self
            .entries
            .iter()
            .map(|(p, host)| (p.as_str(), host.display().to_string()))
            .collect();
        replace_paths(s, &pairs)
    }

    /// The inverse of [`MountMap::rewrite`]: every occurrence of a mapped host directory (as a
    /// whole path or path prefix) in `s` becomes its container path again. Used on what a
    /// process reports about itself (the termination message), which a container would have
    /// written in container paths.
    pub fn to_container(&self, s: &str) -> String {
        let mut pairs: Vec<(String, &str)> = self
            .entries
            .iter()
            .map(|(p, host)| (host.display().to_string(), p.as_str()))
            .filter(|(h, _)| h.len() > 1)
            .collect();
        pairs.sort_by_key(|(h, _)| std::cmp::Reverse(h.len()));
        replace_paths(s, &pairs)
    }

    /// `SIM_MOUNT_<PATH>=<host path>` variables for every mapping.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(p, host)| (mount_env_name(p), host.display().to_string()))
            .collect()
    }
}

/// Replaces each `from` path (longest first in `pairs`) with its `to`, where it stands as a whole
/// path or a path prefix: it begins a path ([`starts_a_path`]) and ends at `/` or a non-path
/// byte.
fn replace_paths(s: &str, pairs: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < s.len() {
        if s.as_bytes()[i] == b'/' && starts_a_path(s.as_bytes(), i) {
            for (from, to) in pairs {
                let from = from.as_ref();
                if s[i..].starts_with(from) {
                    let end = i + from.len();
                    let boundary = s
                        .as_bytes()
                        .get(end)
                        .is_none_or(|&b| b == b'/' || !is_path_byte(b));
                    if boundary {
                        out.push_str(to.as_ref());
                        i = end;
                        continue 'outer;
                    }
                }
            }
        }
        let ch = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
        out.push_str(&s[i..i + ch]);
        i += ch;
    }
    out
}

/// Whether the `/` at `i` can begin a path: it follows a non-path byte, or it ends a run of
/// slashes that does (`file:///data/x` names `/data/x`).
fn starts_a_path(s: &[u8], i: usize) -> bool {
    let mut j = i;
    while j > 0 && s[j - 1] == b'/' {
        j -= 1;
    }
    j == 0 || !is_path_byte(s[j - 1])
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')
}

/// The variable that carries a mount's host path: `/var/run/secrets/db` →
/// `SIM_MOUNT_VAR_RUN_SECRETS_DB`.
pub fn mount_env_name(container_path: &str) -> String {
    let mut name = String::from("SIM_MOUNT_");
    let sanitized: String = container_path
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    name.push_str(&sanitized);
    name
}
