//! What keeps a run from starting, shared by the run kinds: blockers the user can fix, problems
//! no waiting fixes, the Secrets a Job will reference, and how often waiting and running runs
//! are looked at again.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::BackupStorage;
use crate::api::common::SecretKeySelector;

use super::context::Context;
use super::error::Result;

/// A run that cannot start because of a problem the user must fix (missing policy, storage or
/// Secret) waits this long for the fix before it fails.
pub const BLOCKED_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How often a waiting run is looked at again.
pub const WAIT_REQUEUE: Duration = Duration::from_secs(15);

/// How often a running run's progress is sampled.
pub const TRACK_REQUEUE: Duration = Duration::from_secs(10);

/// Something the user must fix before the run can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// Condition/status reason, e.g. `PolicyNotFound`, `SecretNotFound`.
    pub reason: String,
    /// Human-readable detail (never a secret value).
    pub message: String,
}

/// Whether the run's source (BackupRun or storage + key), storage and Secrets resolve.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceState {
    /// Everything the Job needs exists.
    Ready,
    /// Something the user can still fix (e.g. a Secret not created yet).
    Blocked(Blocker),
    /// A problem no waiting fixes (e.g. the BackupRun failed, engine mismatch).
    Invalid(Blocker),
}

pub fn blocked(reason: &str, message: String) -> SourceState {
    SourceState::Blocked(Blocker {
        reason: reason.into(),
        message,
    })
}

pub fn invalid(reason: &str, message: String) -> SourceState {
    SourceState::Invalid(Blocker {
        reason: reason.into(),
        message,
    })
}

/// A resolution that stops at a blocker the user can fix: `Ok((Blocked, None))`.
pub fn stop_blocked<T>(reason: &str, message: String) -> Result<(SourceState, Option<T>)> {
    Ok((blocked(reason, message), None))
}

/// A resolution that stops at a problem no waiting fixes: `Ok((Invalid, None))`.
pub fn stop_invalid<T>(reason: &str, message: String) -> Result<(SourceState, Option<T>)> {
    Ok((invalid(reason, message), None))
}

/// The S3 credential keys a Job reading `storage` references.
pub fn storage_secrets(storage: &BackupStorage) -> Vec<SecretKeySelector> {
    storage
        .spec
        .s3
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
        .map(|c| {
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
                .iter()
                .map(|k| SecretKeySelector::new(c.name.clone(), *k))
                .collect()
        })
        .unwrap_or_default()
}

/// The first Secret (or key) in `needed` that does not exist, as a blocker. Values are never
/// read into messages; the message names the Secret and key as the object's author wrote them
/// and reads the same whether the Secret or only the key is missing, so a reference cannot be
/// used to probe which Secrets or keys exist.
pub async fn missing_secret(
    ctx: &Context,
    ns: &str,
    needed: &[SecretKeySelector],
) -> Result<Option<Blocker>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for sel in needed {
        match secrets.get_opt(&sel.name).await? {
            None => return Ok(Some(unusable_secret(sel))),
            Some(secret) => {
                let has = secret
                    .data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(&sel.key))
                    || secret
                        .string_data
                        .as_ref()
                        .is_some_and(|d| d.contains_key(&sel.key));
                if !has {
                    return Ok(Some(unusable_secret(sel)));
                }
            }
        }
    }
    Ok(None)
}

/// The blocker for a Secret reference that cannot be used (see [`missing_secret`]).
pub fn unusable_secret(sel: &SecretKeySelector) -> Blocker {
    Blocker {
        reason: "SecretNotFound".into(),
        message: format!(
            "Secret {} key {} is not available (the Secret or the key does not exist)",
            sel.name, sel.key
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_credentials_are_the_only_storage_secrets() {
        let s3: BackupStorage = serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: m, namespace: shop}\nspec: {s3: {bucket: b, region: r, credentialsSecretRef: {name: creds}}}",
        )
        .unwrap();
        let keys: Vec<String> = storage_secrets(&s3)
            .into_iter()
            .map(|s| format!("{}/{}", s.name, s.key))
            .collect();
        assert_eq!(
            keys,
            ["creds/AWS_ACCESS_KEY_ID", "creds/AWS_SECRET_ACCESS_KEY"]
        );
        let ambient: BackupStorage = serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: m, namespace: shop}\nspec: {s3: {bucket: b, region: r}}",
        )
        .unwrap();
        assert!(storage_secrets(&ambient).is_empty());
    }
}
