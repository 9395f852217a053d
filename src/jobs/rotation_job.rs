//! Builds the key rotation Job of a BackupPolicy: one `dataguardian agent rewrap` per retained
//! backup whose data key is wrapped for other keys than the policy's, each pinned to the
//! manifest digest its BackupRun recorded (`--manifest-sha256`). The first backups run as init
//! containers (`rewrap-0`, `rewrap-1`, …), the last one as the agent container, so that every
//! re-wrapped manifest leaves its own summary in its container's termination message, which the
//! policy controller reads back to record the new manifest digest on the run.
//!
//! The Job holds only what a re-wrap needs: the storage's credentials, the old key (the identity
//! Secret of `encryption.rotation.previousIdentitySecretRef`, read-only, and/or KMS `Decrypt`
//! via `previousKms`), and the new public keys (the recipients Secret, and/or KMS `Encrypt` of
//! `encryption.kms`). Artifacts are never read or written: only the manifests change (on an
//! Object-Locked bucket each rewrite is a new version with the storage's retention).
//!
//! Deterministic like the other builders: the name comes from the policy and a digest of the
//! new key set ([`job_name`]); it is owned by the BackupPolicy (not as controller), never
//! retried by Kubernetes (`backoffLimit: 0`: a retried pod would meet manifests it already
//! rewrote), and runs under the policy's Job template and the restricted security context.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::backup_policy::POLICY_LABEL;
use crate::api::{BackupPolicy, BackupStorage};
use crate::contract::{COMPONENT_ROTATION, exit};

use super::naming::{MAX_LABEL_LEN, bounded_name};
use super::shell::{
    JobBuildError, JobDefaults, JobShell, agent_container, agent_env, escape_dollar, escape_env,
    job, labels, pod_failure_policy, pod_spec, push_flag, required, tmp_volume,
};
use super::source::{push_identity, push_kms_key, push_storage_access};

/// Backups re-wrapped by one Job at most: every summary must fit in its container's share of
/// the Pod's termination messages (12 KiB in all). More go to the next Job.
pub const MAX_TARGETS: usize = 8;
/// A rotation Job that takes longer than this is stuck.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 1800;
/// Prefix of the init containers' names (`rewrap-0`, …).
pub const INIT_CONTAINER_PREFIX: &str = "rewrap-";

/// Where the new recipients Secret is mounted.
const RECIPIENTS_DIR: &str = "/etc/dataguardian/recipients";
/// File name of the recipients inside [`RECIPIENTS_DIR`].
const RECIPIENTS_FILE: &str = "recipients";

/// One backup to re-wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapTarget {
    /// The BackupRun.
    pub run: String,
    /// Its manifest (`s3://…/manifest.json` or `file:///backup/…/manifest.json`).
    pub location: String,
    /// The digest its status records: the agent touches nothing else.
    pub manifest_sha256: String,
}

/// The deterministic name of the rotation Job of `policy` towards the key set `key_set` (a hex
/// digest; its first 10 characters go in the name).
pub fn job_name(policy: &str, key_set: &str) -> String {
    let short: String = key_set.chars().take(10).collect();
    bounded_name(policy, &format!("rotate-{short}"), MAX_LABEL_LEN)
}

/// Builds the rotation Job `name` re-wrapping `targets` (1 to [`MAX_TARGETS`]) on `storage` for
/// the policy's current keys.
pub fn build(
    name: &str,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    targets: &[RewrapTarget],
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    if targets.is_empty() || targets.len() > MAX_TARGETS {
        return Err(JobBuildError::InvalidSource(format!(
            "a rotation Job re-wraps 1 to {MAX_TARGETS} backups, not {}",
            targets.len()
        )));
    }
    let encryption = policy.spec.encryption.as_ref().ok_or_else(|| {
        JobBuildError::InvalidSource("the policy has no encryption: nothing to rotate".into())
    })?;
    let rotation = encryption.rotation.as_ref().ok_or_else(|| {
        JobBuildError::InvalidSource(
            "the policy names no old key (spec.encryption.rotation) to re-wrap with".into(),
        )
    })?;
    let namespace = required(&policy.metadata.namespace, "metadata.namespace")?;
    let owner = policy
        .controller_owner_ref(&())
        .map(|o| OwnerReference {
            controller: Some(false),
            ..o
        })
        .ok_or(JobBuildError::MissingRunField("metadata.uid"))?;
    let template = policy
        .spec
        .job_template
        .as_deref()
        .cloned()
        .unwrap_or_default();

    // What every re-wrap shares: storage access, the old key, the new keys.
    let mut common: Vec<String> = Vec::new();
    let mut env: Vec<EnvVar> = agent_env();
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![tmp];
    let mut mounts = vec![tmp_mount];
    push_storage_access(storage, &mut common, &mut env, &mut volumes, &mut mounts)?;
    if storage.spec.filesystem.is_some() {
        // Re-wrapping writes the manifests: the claim is mounted writable.
        for m in mounts.iter_mut().filter(|m| m.name == "storage") {
            m.read_only = None;
        }
        for v in volumes.iter_mut() {
            if let Some(claim) = v.persistent_volume_claim.as_mut() {
                claim.read_only = None;
            }
        }
    }
    if let Some(lock) = storage
        .spec
        .s3
        .as_ref()
        .and_then(|s| s.object_lock.as_ref())
    {
        push_flag(&mut common, "--object-lock-mode", lock.mode.as_str());
        push_flag(&mut common, "--object-lock-days", &lock.days.to_string());
    }
    let old = rotation.as_decryption();
    match (&encryption.kms, &old.kms) {
        // One KMS client: the new key's region, endpoint and credentials also decrypt.
        (Some(kms), Some(_)) => {
            push_kms_key(kms, &mut common, &mut env);
            common.push("--kms".into());
            let identity_only = crate::api::common::Decryption {
                kms: None,
                ..old.clone()
            };
            push_identity(
                Some(&identity_only),
                &mut common,
                &mut env,
                &mut volumes,
                &mut mounts,
            );
        }
        (Some(kms), None) => {
            push_kms_key(kms, &mut common, &mut env);
            push_identity(Some(&old), &mut common, &mut env, &mut volumes, &mut mounts);
        }
        (None, _) => {
            push_identity(Some(&old), &mut common, &mut env, &mut volumes, &mut mounts);
        }
    }
    if let Some(selector) = &encryption.recipients_secret_ref {
        volumes.push(Volume {
            name: "recipients".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(selector.name.clone()),
                items: Some(vec![KeyToPath {
                    key: selector.key.clone(),
                    path: RECIPIENTS_FILE.into(),
                    ..Default::default()
                }]),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "recipients".into(),
            mount_path: RECIPIENTS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        push_flag(
            &mut common,
            "--recipients-file",
            &format!("{RECIPIENTS_DIR}/{RECIPIENTS_FILE}"),
        );
    }
    escape_env(&mut env);

    let container_for = |target: &RewrapTarget| -> Container {
        let mut args: Vec<String> = vec!["agent".into(), "rewrap".into()];
        push_flag(&mut args, "--from", &target.location);
        push_flag(
            &mut args,
            crate::contract::manifest::MANIFEST_SHA256_FLAG,
            &target.manifest_sha256,
        );
        args.extend(common.iter().cloned());
        let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
        agent_container(&template, defaults, args, env.clone(), mounts.clone())
    };
    let (last, first) = targets.split_last().expect("checked non-empty above");
    let init: Vec<Container> = first
        .iter()
        .enumerate()
        .map(|(i, t)| Container {
            name: format!("{INIT_CONTAINER_PREFIX}{i}"),
            ..container_for(t)
        })
        .collect();
    let container = container_for(last);

    let mut extra: BTreeMap<String, String> = template.labels.clone();
    extra.insert(POLICY_LABEL.into(), policy.name_any());
    let labels = labels(
        COMPONENT_ROTATION,
        name,
        (POLICY_LABEL, &policy.name_any()),
        &extra,
    );
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let pod = pod_spec(&template, init, container, volumes);
    job(
        JobShell {
            name: name.to_string(),
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: 0,
            active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
            pod_failure_policy: pod_failure_policy(&exit::PRUNE_NON_RETRYABLE),
            ttl_seconds_after_finished: defaults.ttl_seconds_after_finished,
        },
        pod,
        defaults,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rotation: &str) -> BackupPolicy {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {{name: nightly, namespace: shop, uid: 4a1c}}
spec:
  source: {{postgres: {{host: db, database: shop, user: u, passwordSecretRef: {{name: s, key: p}}}}}}
  storageRef: {{name: main}}
  schedule: "0 2 * * *"
  encryption:
    recipientsSecretRef: {{name: age-new, key: recipients}}
{rotation}
"#
        ))
        .unwrap()
    }

    fn storage() -> BackupStorage {
        serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: main, namespace: shop}\nspec: {s3: {bucket: b, region: r, endpoint: 'http://127.0.0.1:9', forcePathStyle: true, credentialsSecretRef: {name: s3-creds}, objectLock: {mode: GOVERNANCE, days: 3}}}\n",
        )
        .unwrap()
    }

    fn target(i: usize) -> RewrapTarget {
        RewrapTarget {
            run: format!("nightly-{i}"),
            location: format!("s3://b/shop/nightly-{i}/manifest.json"),
            manifest_sha256: format!("{i:02}").repeat(32),
        }
    }

    const ROTATION: &str =
        "    rotation: {previousIdentitySecretRef: {name: age-old, key: identity}}";

    #[test]
    fn one_rewrap_per_backup_each_pinned_with_the_old_identity_and_the_new_recipients() {
        let d = JobDefaults::new("img:1");
        let name = job_name("nightly", &"ab12".repeat(16));
        assert_eq!(name, "nightly-rotate-ab12ab12ab");
        let job = build(
            &name,
            &policy(ROTATION),
            &storage(),
            &[target(1), target(2), target(3)],
            &d,
        )
        .unwrap();
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("BackupPolicy", Some(false))
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.as_ref().unwrap();
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(
            init.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["rewrap-0", "rewrap-1"]
        );
        let all: Vec<&Container> = init.iter().chain(&pod.containers).collect();
        for (i, c) in all.iter().enumerate() {
            let args = c.args.as_ref().unwrap();
            let t = target(i + 1);
            assert_eq!(
                &args[..6],
                [
                    "agent",
                    "rewrap",
                    "--from",
                    t.location.as_str(),
                    "--manifest-sha256",
                    t.manifest_sha256.as_str()
                ]
            );
            let joined = args.join(" ");
            for needed in [
                "--identity-file /etc/dataguardian/identity/identity",
                "--recipients-file /etc/dataguardian/recipients/recipients",
                "--object-lock-mode GOVERNANCE --object-lock-days 3",
                "--s3-endpoint http://127.0.0.1:9",
            ] {
                assert!(joined.contains(needed), "{needed} missing in {joined}");
            }
            assert!(!joined.contains("--kms"), "{joined}");
            let env = c.env.as_ref().unwrap();
            assert!(env.iter().any(|e| e.name == "AWS_ACCESS_KEY_ID"));
            // No secret value in the Job: Secrets are references only.
            assert!(
                env.iter()
                    .all(|e| e.name != "AWS_SECRET_ACCESS_KEY" || e.value_from.is_some())
            );
        }
        // The identity is the old one, mounted read-only; the recipients the new ones.
        let volumes = pod.volumes.as_ref().unwrap();
        let secret_of = |v: &str| {
            volumes
                .iter()
                .find(|x| x.name == v)
                .and_then(|x| x.secret.as_ref())
                .and_then(|s| s.secret_name.clone())
        };
        assert_eq!(secret_of("identity").as_deref(), Some("age-old"));
        assert_eq!(secret_of("recipients").as_deref(), Some("age-new"));
        let sc = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn kms_rotation_decrypts_and_encrypts_with_kms_and_mounts_no_identity() {
        let p = policy(
            "    kms: {keyId: alias/new, region: eu-west-1}\n    rotation: {previousKms: {}}",
        );
        let job = build(
            "n",
            &p,
            &storage(),
            &[target(1)],
            &JobDefaults::new("img:1"),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        assert!(
            args.contains("--kms-key alias/new --kms-region eu-west-1"),
            "{args}"
        );
        assert!(args.contains(" --kms"), "{args}");
        assert!(!args.contains("--identity-file"), "{args}");
        assert!(pod.init_containers.is_none());
    }

    #[test]
    fn no_old_key_or_too_many_backups_build_nothing() {
        let d = JobDefaults::new("img:1");
        assert!(build("n", &policy(""), &storage(), &[target(1)], &d).is_err());
        let many: Vec<RewrapTarget> = (0..=MAX_TARGETS).map(target).collect();
        assert!(build("n", &policy(ROTATION), &storage(), &many, &d).is_err());
        assert!(build("n", &policy(ROTATION), &storage(), &[], &d).is_err());
    }
}
