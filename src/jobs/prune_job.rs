//! Builds the Job that deletes one retention-expired artifact from a filesystem storage:
//! `dataguardian agent prune --manifest file:///backup/…/manifest.json` with the storage's claim
//! mounted read-write. Only a pod that mounts the claim can reach it; S3 artifacts the operator
//! deletes itself.
//!
//! The same Job deletes a run's copy on a filesystem secondary storage (the copy's manifest on
//! that storage's claim). Pure and deterministic like the other builders: one Job per run
//! (`<run>-prune`, [`job_name`]) and one per copy (`<run>-<storage>-<hash>-prune`,
//! [`copy_job_name`]); the caller names it. It is owned by the BackupPolicy (not the controller reference), so a policy deleted mid-prune takes its Job
//! along. It runs under the policy's Job template and the same restricted security context.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, PersistentVolumeClaimVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::backup_policy::POLICY_LABEL;
use crate::api::{BackupPolicy, BackupStorage};
use crate::contract::{COMPONENT_PRUNE, RUN_LABEL, exit};

use super::naming::{MAX_LABEL_LEN, bounded_name, pair_name};
use super::shell::{
    JobBuildError, JobDefaults, JobShell, STORAGE_MOUNT, agent_container, agent_env, escape_dollar,
    escape_env, job, labels, pod_failure_policy, pod_spec, push_flag, required, tmp_volume,
};

/// Retries of a prune Job (deleting files is idempotent).
pub const BACKOFF_LIMIT: i32 = 2;
/// A prune that takes longer than this is stuck.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 600;

/// The deterministic name of the prune Job of `run`'s artifact on the policy's storage.
pub fn job_name(run: &str) -> String {
    bounded_name(run, "prune", MAX_LABEL_LEN)
}

/// The deterministic name of the prune Job of `run`'s copy on the secondary storage `storage`;
/// distinct for every (run, storage) pair and from every run's [`job_name`].
pub fn copy_job_name(run: &str, storage: &str) -> String {
    pair_name(run, storage, "prune")
}

/// Builds the Job `name` that prunes an artifact of the BackupRun `run` (the run's own, or its
/// copy) whose manifest is at `manifest_location` (`file:///backup/…`) on the filesystem
/// `storage` and must hash to `manifest_sha256` (the digest recorded for the run).
pub fn build(
    name: &str,
    run: &str,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    manifest_location: &str,
    manifest_sha256: &str,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    let Some(fs) = &storage.spec.filesystem else {
        return Err(JobBuildError::NoStorageBackend(storage.name_any()));
    };
    if !manifest_location.starts_with(&format!("file://{STORAGE_MOUNT}/")) {
        return Err(JobBuildError::InvalidSource(format!(
            "artifact {manifest_location:?} is not under the storage mount {STORAGE_MOUNT}"
        )));
    }
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

    let mut args: Vec<String> = vec!["agent".into(), "prune".into()];
    push_flag(&mut args, "--manifest", manifest_location);
    push_flag(
        &mut args,
        crate::contract::manifest::MANIFEST_SHA256_FLAG,
        manifest_sha256,
    );
    let (tmp, tmp_mount) = tmp_volume();
    let volumes = vec![
        tmp,
        Volume {
            name: "storage".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: fs.claim_name.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
    ];
    let mounts = vec![
        tmp_mount,
        VolumeMount {
            name: "storage".into(),
            mount_path: STORAGE_MOUNT.into(),
            ..Default::default()
        },
    ];
    let mut env: Vec<EnvVar> = agent_env();
    let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
    escape_env(&mut env);

    let mut extra: BTreeMap<String, String> = template.labels.clone();
    extra.insert(POLICY_LABEL.into(), policy.name_any());
    let labels = labels(COMPONENT_PRUNE, run, (RUN_LABEL, run), &extra);
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let container = agent_container(&template, defaults, args, env, mounts);
    let pod = pod_spec(&template, Vec::new(), container, volumes);
    job(
        JobShell {
            name: name.to_string(),
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: BACKOFF_LIMIT,
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

    fn policy() -> BackupPolicy {
        serde_yaml::from_str(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: shop, uid: 4a1c}
spec:
  source: {postgres: {host: db, database: shop, user: u, passwordSecretRef: {name: s, key: p}}}
  storageRef: {name: local}
  schedule: "0 2 * * *"
  jobTemplate: {serviceAccountName: backup-sa}
"#,
        )
        .unwrap()
    }

    fn storage() -> BackupStorage {
        serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: local, namespace: shop}\nspec: {filesystem: {claimName: backups, path: /dumps}}\n",
        )
        .unwrap()
    }

    const MANIFEST: &str = "file:///backup/dumps/shop/nightly/r1/manifest.json";

    #[test]
    fn the_prune_job_mounts_the_claim_writable_and_runs_the_agent() {
        let d = JobDefaults {
            ttl_seconds_after_finished: 60,
            ..JobDefaults::new("img:1")
        };
        let digest = "ab".repeat(32);
        let name = job_name("nightly-r1");
        let job = build(
            &name,
            "nightly-r1",
            &policy(),
            &storage(),
            MANIFEST,
            &digest,
            &d,
        )
        .unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("nightly-r1-prune"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("BackupPolicy", Some(false))
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(RUN_LABEL).map(String::as_str),
            Some("nightly-r1")
        );
        assert_eq!(
            labels.get(POLICY_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str),
            Some("prune")
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("backup-sa"));
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "agent",
                "prune",
                "--manifest",
                MANIFEST,
                "--manifest-sha256",
                &digest
            ]
        );
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.mount_path == STORAGE_MOUNT)
            .unwrap();
        assert_ne!(mount.read_only, Some(true), "prune writes to the claim");
        let claim = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.persistent_volume_claim.as_ref())
            .unwrap();
        assert_eq!(claim.claim_name, "backups");
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }

    #[test]
    fn only_artifacts_under_the_mount_of_a_filesystem_storage_are_pruned() {
        let d = JobDefaults {
            ttl_seconds_after_finished: 60,
            ..JobDefaults::new("img:1")
        };
        assert!(
            build(
                "r-prune",
                "r",
                &policy(),
                &storage(),
                "file:///etc/manifest.json",
                "",
                &d
            )
            .is_err()
        );
        let s3: BackupStorage = serde_yaml::from_str(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: s3, namespace: shop}\nspec: {s3: {bucket: b, region: r}}\n",
        )
        .unwrap();
        assert!(build("r-prune", "r", &policy(), &s3, MANIFEST, "", &d).is_err());
    }
}
