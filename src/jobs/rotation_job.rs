//! Builds the key rotation Job of a BackupPolicy: one `dataguardian agent rewrap` per retained
//! backup whose data key is wrapped for other keys than the policy's, each pinned to the
//! manifest digest its BackupRun recorded (`--manifest-sha256`). The first backups run as init
//! containers (`rewrap-0`, `rewrap-1`, …), the last one as the agent container, so that every
//! re-wrapped manifest leaves its own summary in its container's termination message, which the
//! policy controller reads back to record the new manifest digest on the run.
//!
//! The Job holds only what a re-wrap needs: the storage's credentials, the old key (the identity
//! Secret of `encryption.rotation.previousIdentitySecretRef`, read-only, and/or KMS `Decrypt`
//! via `previousKms`: its own region, endpoint and credentials, never the new key's), and the new public keys (the recipients Secret, and/or KMS `Encrypt` of
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

use super::copy_job::copy_sides;
use super::naming::{MAX_LABEL_LEN, bounded_name};
use super::shell::{
    JobBuildError, JobDefaults, JobShell, agent_container, agent_env, escape_dollar, escape_env,
    job, labels, pod_failure_policy, pod_spec, push_flag, required, tmp_volume,
};
use super::source::{
    push_identity, push_kms_credentials_prefixed, push_kms_key, push_storage_access,
};

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
    /// Whether the primary's manifest is re-wrapped (`false`: it already is, only copies are
    /// refreshed, from the manifest of the recorded digest).
    pub rewrap: bool,
    /// Confirmed copies whose manifest is then replaced by the primary's re-wrapped one (the
    /// copies stay byte-identical to the primary).
    pub copies: Vec<CopyRefresh>,
}

impl RewrapTarget {
    /// How many containers it takes: one re-wrap (when due) and one per copy.
    pub fn containers(&self) -> usize {
        usize::from(self.rewrap) + self.copies.len()
    }
}

/// A copy of a backup on a secondary storage whose manifest a rotation refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRefresh {
    /// The secondary BackupStorage.
    pub storage: String,
    /// The copy's manifest.
    pub location: String,
    /// The digest recorded for the copy: only a manifest with it is replaced.
    pub manifest_sha256: String,
}

/// The deterministic name of the rotation Job of `policy` towards the key set `key_set` (a hex
/// digest; its first 10 characters go in the name).
pub fn job_name(policy: &str, key_set: &str) -> String {
    let short: String = key_set.chars().take(10).collect();
    bounded_name(policy, &format!("rotate-{short}"), MAX_LABEL_LEN)
}

/// Builds the rotation Job `name` re-wrapping `targets` (1 to [`MAX_TARGETS`] containers) on
/// `storage` for the policy's current keys, and refreshing their copies on `secondaries`.
pub fn build(
    name: &str,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    secondaries: &[BackupStorage],
    targets: &[RewrapTarget],
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    let containers: usize = targets.iter().map(RewrapTarget::containers).sum();
    if containers == 0 || containers > MAX_TARGETS {
        return Err(JobBuildError::InvalidSource(format!(
            "a rotation Job runs 1 to {MAX_TARGETS} re-wraps and copy refreshes, not {containers}"
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
    // Backups written before envelope encryption are reported, not failed: the others go on.
    common.push("--report-not-rewrappable".into());
    match (&encryption.kms, &old.kms) {
        // Two KMS clients: the new key's settings encrypt, `previousKms`'s region, endpoint and
        // credentials (their own environment prefix) decrypt.
        (Some(kms), Some(previous)) => {
            push_kms_key(kms, &mut common, &mut env);
            common.push("--previous-kms".into());
            if let Some(region) = &previous.region {
                push_flag(&mut common, "--previous-kms-region", region);
            }
            if let Some(endpoint) = &previous.endpoint {
                push_flag(&mut common, "--previous-kms-endpoint", endpoint);
            }
            push_kms_credentials_prefixed(
                previous.credentials_secret_ref.as_ref(),
                crate::contract::PREVIOUS_KMS_CREDENTIALS_ENV_PREFIX,
                &mut env,
            );
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
    // A copy refresh: `agent copy` of the primary's (re-wrapped) manifest over the copy's,
    // with both storages' credentials (as a copy Job gets them) and no key.
    let mut copy_volumes: Vec<Volume> = Vec::new();
    let mut refresh_for = |index: usize,
                           target: &RewrapTarget,
                           copy: &CopyRefresh|
     -> Result<Container, JobBuildError> {
        let secondary = secondaries
            .iter()
            .find(|s| s.name_any() == copy.storage)
            .ok_or_else(|| {
                JobBuildError::InvalidSource(format!(
                    "BackupStorage {} of the copy of {} not found",
                    copy.storage, target.run
                ))
            })?;
        let mut sides = copy_sides(storage, secondary, &target.location, &copy.location)?;
        // Each filesystem destination its own volume.
        let copy_name = format!("copy-{index}");
        for v in sides.volumes.iter_mut().filter(|v| v.name == "copy") {
            v.name = copy_name.clone();
        }
        for m in sides.mounts.iter_mut().filter(|m| m.name == "copy") {
            m.name = copy_name.clone();
        }
        for v in sides.volumes {
            if !volumes
                .iter()
                .chain(&copy_volumes)
                .any(|x| x.name == v.name)
            {
                copy_volumes.push(v);
            }
        }
        let mut args: Vec<String> = vec!["agent".into(), "copy".into()];
        args.extend(sides.args);
        push_flag(
            &mut args,
            "--replace-manifest-sha256",
            &copy.manifest_sha256,
        );
        if !target.rewrap {
            // The primary was re-wrapped before: copy exactly the manifest the run records.
            push_flag(
                &mut args,
                crate::contract::manifest::MANIFEST_SHA256_FLAG,
                &target.manifest_sha256,
            );
        }
        let mut env = agent_env();
        env.extend(sides.env);
        escape_env(&mut env);
        let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
        let mut copy_mounts = vec![tmp_volume().1];
        copy_mounts.extend(sides.mounts);
        Ok(agent_container(&template, defaults, args, env, copy_mounts))
    };
    let mut all: Vec<Container> = Vec::with_capacity(containers);
    for target in targets {
        if target.rewrap {
            all.push(container_for(target));
        }
        for copy in &target.copies {
            let index = all.len();
            all.push(refresh_for(index, target, copy)?);
        }
    }
    volumes.extend(copy_volumes);
    let container = all.pop().expect("checked non-empty above");
    let init: Vec<Container> = all
        .into_iter()
        .enumerate()
        .map(|(i, c)| Container {
            name: format!("{INIT_CONTAINER_PREFIX}{i}"),
            ..c
        })
        .collect();

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
            rewrap: true,
            copies: Vec::new(),
        }
    }

    fn dr() -> BackupStorage {
        serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: dr, namespace: shop}\nspec: {s3: {bucket: drb, region: us-east-2, endpoint: 'http://127.0.0.1:8', forcePathStyle: true, credentialsSecretRef: {name: dr-creds}, objectLock: {mode: COMPLIANCE, days: 9}}}\n",
        )
        .unwrap()
    }

    fn copy(storage: &str, i: usize) -> CopyRefresh {
        CopyRefresh {
            storage: storage.into(),
            location: format!("s3://drb/dr/nightly-{i}/manifest.json"),
            manifest_sha256: "ee".repeat(32),
        }
    }

    #[test]
    fn each_copy_is_refreshed_after_its_primary_with_both_storages_credentials_and_no_key() {
        let d = JobDefaults::new("img:1");
        let mut t1 = target(1);
        t1.copies = vec![copy("dr", 1)];
        // Primary already re-wrapped: only its copy, pinned to the recorded digest.
        let mut t2 = target(2);
        t2.rewrap = false;
        t2.copies = vec![copy("dr", 2)];
        let job = build("n", &policy(ROTATION), &storage(), &[dr()], &[t1, t2], &d).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let all: Vec<Container> = pod
            .init_containers
            .clone()
            .unwrap()
            .into_iter()
            .chain(pod.containers.clone())
            .collect();
        assert_eq!(all.len(), 3);
        let args = |c: &Container| c.args.clone().unwrap().join(" ");
        assert!(
            args(&all[0]).starts_with("agent rewrap --from s3://b/shop/nightly-1/manifest.json")
        );
        for (c, i) in [(&all[1], 1), (&all[2], 2)] {
            let a = args(c);
            assert!(
                a.starts_with(&format!(
                    "agent copy --from s3://b/shop/nightly-{i}/manifest.json"
                )),
                "{a}"
            );
            for needed in [
                format!("--to s3://drb/dr/nightly-{i}/manifest.json"),
                format!("--replace-manifest-sha256 {}", "ee".repeat(32)),
                "--object-lock-mode COMPLIANCE --object-lock-days 9".to_string(),
                "--to-s3-endpoint http://127.0.0.1:8".to_string(),
            ] {
                assert!(a.contains(&needed), "{needed} missing in {a}");
            }
            // No key of any kind in a copy refresh.
            for never in ["--identity-file", "--recipients-file", "--kms"] {
                assert!(!a.contains(never), "{never} in {a}");
            }
            let env = c.env.clone().unwrap();
            let secret_of = |name: &str| {
                env.iter()
                    .find(|e| e.name == name)
                    .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                    .map(|s| s.name.clone())
            };
            assert_eq!(
                secret_of("DG_FROM_AWS_ACCESS_KEY_ID").as_deref(),
                Some("s3-creds")
            );
            assert_eq!(
                secret_of("DG_TO_AWS_ACCESS_KEY_ID").as_deref(),
                Some("dr-creds")
            );
            assert!(
                c.volume_mounts
                    .iter()
                    .flatten()
                    .all(|m| m.name != "identity" && m.name != "recipients")
            );
        }
        // Copied from a re-wrap in the same pod: no source pin; from an earlier one: pinned.
        assert!(!args(&all[1]).contains("--manifest-sha256"));
        assert!(args(&all[2]).contains(&format!("--manifest-sha256 {}", "02".repeat(32))));
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
            &[],
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
            "    kms: {keyId: alias/new, region: eu-west-1, endpoint: 'http://127.0.0.1:2', credentialsSecretRef: {name: kms-new}}\n    rotation: {previousKms: {region: us-west-2, endpoint: 'http://127.0.0.1:1', credentialsSecretRef: {name: kms-old}}}",
        );
        let job = build(
            "n",
            &p,
            &storage(),
            &[],
            &[target(1)],
            &JobDefaults::new("img:1"),
        )
        .unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        // The new key encrypts with its own settings …
        assert!(
            args.contains(
                "--kms-key alias/new --kms-region eu-west-1 --kms-endpoint http://127.0.0.1:2"
            ),
            "{args}"
        );
        // … the old one decrypts with previousKms's region, endpoint and credentials.
        assert!(
            args.contains(
                "--previous-kms --previous-kms-region us-west-2 --previous-kms-endpoint http://127.0.0.1:1"
            ),
            "{args}"
        );
        assert!(args.contains("--report-not-rewrappable"), "{args}");
        assert!(!args.split(' ').any(|a| a == "--kms"), "{args}");
        assert!(!args.contains("--identity-file"), "{args}");
        assert!(pod.init_containers.is_none());
        let env = pod.containers[0].env.clone().unwrap();
        let secret_of = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|s| s.name.clone())
        };
        assert_eq!(
            secret_of("DG_KMS_AWS_ACCESS_KEY_ID").as_deref(),
            Some("kms-new")
        );
        assert_eq!(
            secret_of("DG_PREVIOUS_KMS_AWS_SECRET_ACCESS_KEY").as_deref(),
            Some("kms-old")
        );
        // previousKms without settings: AWS KMS of the wrap's region, workload identity.
        let p = policy(
            "    kms: {keyId: alias/new, region: eu-west-1, endpoint: 'http://127.0.0.1:2'}\n    rotation: {previousKms: {}}",
        );
        let job = build(
            "n",
            &p,
            &storage(),
            &[],
            &[target(1)],
            &JobDefaults::new("img:1"),
        )
        .unwrap();
        let args = job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ");
        assert!(args.contains("--previous-kms "), "{args}");
        assert!(!args.contains("--previous-kms-endpoint"), "{args}");
    }

    #[test]
    fn no_old_key_or_too_many_backups_build_nothing() {
        let d = JobDefaults::new("img:1");
        assert!(build("n", &policy(""), &storage(), &[], &[target(1)], &d).is_err());
        let many: Vec<RewrapTarget> = (0..=MAX_TARGETS).map(target).collect();
        assert!(build("n", &policy(ROTATION), &storage(), &[], &many, &d).is_err());
        assert!(build("n", &policy(ROTATION), &storage(), &[], &[], &d).is_err());
    }
}
