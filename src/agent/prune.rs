//! `dataguardian agent prune`: deletes one backup's artifact from a directory — a filesystem
//! storage's claim, which only a pod that mounts it can reach (the operator deletes S3 artifacts
//! itself).
//!
//! The manifest was written last, so it goes first: it is renamed to `.manifest.json.pruning`
//! (atomically), then the data files it lists are deleted, then the renamed manifest. A restore
//! therefore never finds a manifest whose data is gone, and a prune interrupted at any point
//! is finished by running it again (the renamed manifest still lists what is left). Files that
//! are already gone count as deleted; the emptied directory is removed.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::error::{AgentError, Result};

/// What a prune removed.
#[derive(Debug, Default, PartialEq)]
pub struct PruneOutcome {
    /// Files deleted (the manifest last).
    pub deleted: Vec<PathBuf>,
    /// Files the manifest lists that were already gone.
    pub already_gone: Vec<PathBuf>,
}

/// Largest manifest read.
const MANIFEST_LIMIT: u64 = 16 << 20;

fn io_err(what: &str, path: &Path, e: io::Error) -> AgentError {
    AgentError::Storage(format!("{what} {}: {e}", path.display()))
}

/// The path of `key` (relative to the manifest's directory), refused when it could leave it.
fn data_path(dir: &Path, key: &str) -> Result<PathBuf> {
    let rel = Path::new(key);
    let safe = !key.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !safe {
        return Err(AgentError::Integrity(format!(
            "manifest lists {key:?}, which is not a path inside its directory"
        )));
    }
    Ok(dir.join(rel))
}

/// Deletes `path`; `Ok(false)` when it was already gone.
fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("cannot delete", path, e)),
    }
}

/// Prunes the artifact whose manifest is `manifest`. With `manifest_sha256` (the digest the
/// operator recorded for the run), a manifest with other bytes deletes nothing: it may have
/// been rewritten to list files of other backups.
pub fn prune(manifest: &Path, manifest_sha256: Option<&str>) -> Result<PruneOutcome> {
    let dir = manifest
        .parent()
        .ok_or_else(|| AgentError::Config(format!("{} has no directory", manifest.display())))?;
    let name = manifest
        .file_name()
        .ok_or_else(|| AgentError::Config(format!("{} names no file", manifest.display())))?
        .to_string_lossy()
        .into_owned();
    let pruning = dir.join(format!(".{name}.pruning"));
    // The manifest, or the one an interrupted prune already took out of sight.
    let source = if manifest.exists() {
        manifest.to_path_buf()
    } else if pruning.exists() {
        pruning.clone()
    } else {
        // Pruned before: nothing lists what to delete any more.
        return Ok(PruneOutcome::default());
    };
    let mut bytes = Vec::new();
    {
        use std::io::Read;
        let f = std::fs::File::open(&source).map_err(|e| io_err("cannot open", &source, e))?;
        f.take(MANIFEST_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err("cannot read", &source, e))?;
    }
    let pin = crate::contract::ArtifactPin {
        manifest_sha256: manifest_sha256.map(str::to_string),
        ..Default::default()
    };
    pin.check_bytes(&bytes)
        .map_err(|e| AgentError::Integrity(format!("{}: {e}", source.display())))?;
    // Only the artifact list is read: a manifest of any format version lists its files.
    #[derive(serde::Deserialize)]
    struct Listed {
        artifacts: Vec<ListedArtifact>,
    }
    #[derive(serde::Deserialize)]
    struct ListedArtifact {
        key: String,
    }
    let parsed: Listed = serde_json::from_slice(&bytes).map_err(|e| {
        AgentError::Integrity(format!("{} is not a manifest: {e}", source.display()))
    })?;
    // Every listed path is checked before anything is touched.
    let data: Vec<PathBuf> = parsed
        .artifacts
        .iter()
        .map(|a| data_path(dir, &a.key))
        .collect::<Result<_>>()?;
    // 1. Take the manifest out of sight: from now on no restore starts from it.
    if source != pruning {
        std::fs::rename(manifest, &pruning).map_err(|e| io_err("cannot rename", manifest, e))?;
    }
    // 2. The data it lists.
    let mut outcome = PruneOutcome::default();
    for path in data {
        if remove(&path)? {
            outcome.deleted.push(path);
        } else {
            outcome.already_gone.push(path);
        }
    }
    // 3. The manifest, then every directory the prune emptied (best effort).
    remove(&pruning)?;
    outcome.deleted.push(manifest.to_path_buf());
    for path in outcome.deleted.iter().chain(&outcome.already_gone) {
        let mut parent = path.parent();
        while let Some(p) = parent.filter(|p| p.starts_with(dir)) {
            if std::fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A manifest listing `keys`, written with the files it names.
    fn artifact(dir: &Path, keys: &[&str]) -> PathBuf {
        let artifacts: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| {
                json!({"key": k, "kind": "database", "database": "shop", "format": "pg-dump-custom",
                       "sizeBytes": 3, "rawBytes": 3, "sha256": "00"})
            })
            .collect();
        let manifest = json!({
            "formatVersion": 1, "tool": "dataguardian test", "engine": "postgres",
            "serverVersion": "15", "database": "shop", "allDatabases": false,
            "compression": {"algorithm": "zstd", "level": 3}, "artifacts": artifacts,
            "createdAt": "2026-11-23T00:00:00Z", "startedAt": "2026-11-23T00:00:00Z"
        });
        std::fs::create_dir_all(dir).unwrap();
        for k in keys {
            let p = dir.join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"abc").unwrap();
        }
        let m = dir.join("manifest.json");
        std::fs::write(&m, serde_json::to_vec(&manifest).unwrap()).unwrap();
        m
    }

    #[test]
    fn a_prune_deletes_the_data_and_the_manifest_and_the_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("ns/policy/run-1");
        let m = artifact(&run, &["shop.dump.zst", "globals/roles.sql.zst"]);
        let other = artifact(&tmp.path().join("ns/policy/run-2"), &["shop.dump.zst"]);
        let o = prune(&m, None).unwrap();
        assert_eq!(o.deleted.len(), 3, "{o:?}");
        assert_eq!(o.deleted.last(), Some(&m), "the manifest is reported last");
        assert!(o.already_gone.is_empty());
        assert!(
            !m.exists() && !run.exists(),
            "data, manifest and emptied directories gone"
        );
        assert!(other.exists(), "another run's artifact is untouched");
        // Again: nothing left to do, no error.
        assert_eq!(prune(&m, None).unwrap(), PruneOutcome::default());
    }

    #[test]
    fn an_interrupted_prune_is_finished_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let m = artifact(&run, &["a.zst", "b.zst"]);
        // As if a prune died after hiding the manifest and deleting one file.
        std::fs::rename(&m, run.join(".manifest.json.pruning")).unwrap();
        std::fs::remove_file(run.join("a.zst")).unwrap();
        let o = prune(&m, None).unwrap();
        assert_eq!(o.already_gone, vec![run.join("a.zst")]);
        assert_eq!(o.deleted, vec![run.join("b.zst"), m.clone()]);
        assert!(!run.exists(), "the emptied directory is removed");
    }

    #[test]
    fn a_manifest_cannot_send_a_prune_outside_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let run = tmp.path().join("run");
        let m = artifact(&run, &["ok.zst"]);
        // Rewrite the manifest to point outside.
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        v["artifacts"][0]["key"] = json!("../victim");
        std::fs::write(&m, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = prune(&m, None).unwrap_err();
        assert!(e.to_string().contains("not a path inside"), "{e}");
        assert!(victim.exists());
        assert!(
            m.exists() && run.join("ok.zst").exists(),
            "nothing was touched"
        );
    }

    #[test]
    fn a_manifest_that_is_not_the_recorded_one_prunes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let m = artifact(tmp.path(), &["databases/shop.pgdump"]);
        let recorded = crate::contract::manifest::sha256_hex(&std::fs::read(&m).unwrap());
        let e = prune(&m, Some(&"0".repeat(64))).unwrap_err();
        assert_eq!(e.category(), "integrity");
        assert!(m.exists() && tmp.path().join("databases/shop.pgdump").exists());
        let o = prune(&m, Some(&recorded)).unwrap();
        assert!(!m.exists() && !o.deleted.is_empty());
    }
}
