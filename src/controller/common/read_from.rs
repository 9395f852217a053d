//! Where a restore or validation of a BackupRun reads the backup: the storage it was made on, or
//! a confirmed copy on one of its policy's secondary storages (`status.artifact.copies`) — the
//! one `readFrom` names, or, without `readFrom`, the first confirmed copy on a usable storage
//! when the primary storage is missing or not Ready. The choice is pure ([`choose`]); the
//! copies are byte-identical to the primary (same manifest, pinned by the recorded digest), so
//! the agent checks a copy exactly as it checks the primary.

use kube::Api;

use crate::api::BackupStorage;
use crate::api::backup_run::{Artifact, ArtifactCopy};
use crate::api::common::find_condition;
use crate::jobs::restore_job::{artifact_manifest_location, location_matches_storage};

use super::blockers::{SourceState, blocked, invalid};
use super::context::Context;
use super::error::Result;
use super::reason::Reason;

/// Whether a storage can be read from now, as its object and status say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The BackupStorage does not exist.
    Missing,
    /// Its `Ready` condition is False (with the condition's reason).
    NotReady(String),
    /// Ready, or not probed yet (believed until a probe says otherwise).
    Usable,
}

impl Readiness {
    /// From the storage object, if any.
    pub fn of(storage: Option<&BackupStorage>) -> Readiness {
        let Some(storage) = storage else {
            return Readiness::Missing;
        };
        match storage
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .filter(|c| c.status == "False")
        {
            Some(c) => Readiness::NotReady(c.reason.clone()),
            None => Readiness::Usable,
        }
    }

    fn describe(&self, name: &str) -> String {
        match self {
            Readiness::Missing => format!("BackupStorage {name} does not exist"),
            Readiness::NotReady(reason) => format!("BackupStorage {name} is not Ready ({reason})"),
            Readiness::Usable => format!("BackupStorage {name} is Ready"),
        }
    }
}

/// Which copy of the backup to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The artifact on the storage it was made on.
    Primary,
    /// A confirmed copy; `fallback` is the note for the Event when it was chosen because the
    /// primary storage cannot be read (none when `readFrom` named it).
    Copy {
        copy: ArtifactCopy,
        fallback: Option<String>,
    },
}

/// Chooses where to read `artifact` (of BackupRun `run`): `read_from` is the storage the user
/// named, `readiness` tells whether a storage can be read now.
pub fn choose(
    run: &str,
    artifact: &Artifact,
    read_from: Option<&str>,
    readiness: impl Fn(&str) -> Readiness,
) -> std::result::Result<Choice, SourceState> {
    let confirmed = || artifact.copies.iter().filter(|c| c.confirmed);
    if let Some(wanted) = read_from {
        if wanted == artifact.storage {
            return Ok(Choice::Primary);
        }
        return match confirmed().find(|c| c.storage == wanted) {
            Some(copy) => Ok(Choice::Copy {
                copy: copy.clone(),
                fallback: None,
            }),
            // A copy may still be on its way: wait for it (and fail after the blocked timeout).
            None => Err(blocked(
                Reason::CopyNotFound.as_str(),
                format!(
                    "BackupRun {run} has no confirmed copy on storage {wanted} (it is on {}{})",
                    artifact.storage,
                    confirmed()
                        .map(|c| format!(", {}", c.storage))
                        .collect::<String>()
                ),
            )),
        };
    }
    let primary = readiness(&artifact.storage);
    if primary == Readiness::Usable {
        return Ok(Choice::Primary);
    }
    match confirmed().find(|c| readiness(&c.storage) == Readiness::Usable) {
        Some(copy) => Ok(Choice::Copy {
            copy: copy.clone(),
            fallback: Some(format!(
                "{}: reading the confirmed copy of BackupRun {run} on storage {} ({}) instead",
                primary.describe(&artifact.storage),
                copy.storage,
                copy.location.as_deref().unwrap_or(&copy.key)
            )),
        }),
        // No copy to fall back on: the primary it is (a missing storage blocks below, an
        // unreachable one fails the Job with a storage error).
        None => Ok(Choice::Primary),
    }
}

/// Where a restore or validation reads, resolved.
pub struct Located {
    /// The storage read.
    pub storage: BackupStorage,
    /// The manifest's location on it.
    pub manifest_location: String,
    /// The key shown as the source (the artifact's key; of a copy, its manifest key).
    pub key: String,
    /// Set when a copy was chosen because the primary cannot be read: the Event's note.
    pub fallback: Option<String>,
}

/// Resolves where to read `artifact` of BackupRun `run` ([`choose`]), or why it cannot be read
/// (the storage is missing: blocked until it exists; a location that does not fit the storage:
/// invalid).
pub async fn locate(
    ctx: &Context,
    ns: &str,
    run: &str,
    artifact: &Artifact,
    read_from: Option<&str>,
) -> Result<std::result::Result<Located, SourceState>> {
    let storages: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), ns);
    let mut names: Vec<&str> = vec![artifact.storage.as_str()];
    names.extend(artifact.copies.iter().map(|c| c.storage.as_str()));
    names.extend(read_from);
    let mut objects: Vec<(String, Option<BackupStorage>)> = Vec::new();
    for name in names {
        if objects.iter().any(|(n, _)| n == name) {
            continue;
        }
        objects.push((name.to_string(), storages.get_opt(name).await?));
    }
    let object = |name: &str| {
        objects
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.clone())
    };
    let choice = match choose(run, artifact, read_from, |n| {
        Readiness::of(object(n).as_ref())
    }) {
        Ok(c) => c,
        Err(state) => return Ok(Err(state)),
    };
    let (storage_name, fallback) = match &choice {
        Choice::Primary => (artifact.storage.clone(), None),
        Choice::Copy { copy, fallback } => (copy.storage.clone(), fallback.clone()),
    };
    let Some(storage) = object(&storage_name) else {
        return Ok(Err(blocked(
            "StorageNotFound",
            format!("BackupStorage {storage_name} not found in namespace {ns}"),
        )));
    };
    let found = match choice {
        Choice::Primary => {
            artifact_manifest_location(&storage, &artifact.key, artifact.manifest_key.as_deref())
                .map(|location| (location, artifact.key.clone()))
                .map_err(|e| e.to_string())
        }
        Choice::Copy { copy, .. } => match copy.location.as_deref() {
            Some(loc) if location_matches_storage(&storage, loc) => {
                Ok((loc.to_string(), copy.key.clone()))
            }
            other => Err(format!(
                "the copy on storage {storage_name} is recorded at {}, which that storage does not hold",
                other.unwrap_or("no location")
            )),
        },
    };
    Ok(match found {
        Ok((manifest_location, key)) => Ok(Located {
            storage,
            manifest_location,
            key,
            fallback,
        }),
        Err(why) => Err(invalid("InvalidSource", why)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact() -> Artifact {
        let copy = |storage: &str, confirmed: bool| ArtifactCopy {
            storage: storage.into(),
            key: format!("{storage}/run/manifest.json"),
            confirmed,
            location: Some(format!("s3://{storage}-bucket/{storage}/run/manifest.json")),
            ..Default::default()
        };
        Artifact {
            storage: "main".into(),
            key: "e2e/run/manifest.json".into(),
            copies: vec![
                copy("pending", false),
                copy("far", true),
                copy("near", true),
            ],
            ..Default::default()
        }
    }

    fn all_usable(_: &str) -> Readiness {
        Readiness::Usable
    }

    fn copy_storage(c: &Choice) -> Option<&str> {
        match c {
            Choice::Copy { copy, .. } => Some(copy.storage.as_str()),
            Choice::Primary => None,
        }
    }

    #[test]
    fn the_primary_is_read_while_it_is_usable() {
        assert_eq!(
            choose("r", &artifact(), None, all_usable).unwrap(),
            Choice::Primary
        );
        assert_eq!(
            choose("r", &artifact(), Some("main"), |_| Readiness::Missing).unwrap(),
            Choice::Primary,
            "naming the primary reads the primary, whatever its state"
        );
    }

    #[test]
    fn a_named_copy_is_read_only_when_confirmed() {
        let c = choose("r", &artifact(), Some("near"), all_usable).unwrap();
        assert_eq!(copy_storage(&c), Some("near"));
        assert!(matches!(c, Choice::Copy { fallback: None, .. }));
        for missing in ["pending", "elsewhere"] {
            match choose("r", &artifact(), Some(missing), all_usable) {
                Err(SourceState::Blocked(b)) => {
                    assert_eq!(b.reason, "CopyNotFound");
                    assert!(b.message.contains(missing), "{}", b.message);
                    assert!(b.message.contains("main, far, near"), "{}", b.message);
                }
                other => panic!("{missing}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unreadable_primary_falls_back_to_the_first_usable_confirmed_copy() {
        let down = |n: &str| match n {
            "main" => Readiness::NotReady("Unreachable".into()),
            "far" => Readiness::Missing,
            _ => Readiness::Usable,
        };
        let c = choose("r", &artifact(), None, down).unwrap();
        assert_eq!(copy_storage(&c), Some("near"));
        let Choice::Copy {
            fallback: Some(note),
            ..
        } = c
        else {
            panic!("{c:?}")
        };
        assert!(
            note.contains("main is not Ready (Unreachable)")
                && note.contains("storage near")
                && note.contains("s3://near-bucket/"),
            "{note}"
        );
        let gone = |n: &str| {
            if n == "main" {
                Readiness::Missing
            } else {
                Readiness::Usable
            }
        };
        assert_eq!(
            copy_storage(&choose("r", &artifact(), None, gone).unwrap()),
            Some("far")
        );
    }

    #[test]
    fn without_a_usable_copy_the_primary_is_tried() {
        let only_pending = |n: &str| {
            if n == "pending" {
                Readiness::Usable
            } else {
                Readiness::NotReady("Unreachable".into())
            }
        };
        assert_eq!(
            choose("r", &artifact(), None, only_pending).unwrap(),
            Choice::Primary
        );
    }
}
