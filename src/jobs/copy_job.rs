//! Builds the Job that copies one confirmed backup to a secondary storage:
//! `dataguardian agent copy --from <primary manifest> --to <copy's manifest>` pinned to the
//! manifest digest recorded for the run. It streams object to object and checks every SHA-256;
//! it never gets a key (artifacts stay encrypted) and each side gets only its own storage's
//! credentials (`DG_FROM_AWS_…`, `DG_TO_AWS_…`). A filesystem side is its claim mounted in the
//! pod: the source at the usual storage mount, a filesystem destination at [`COPY_MOUNT`].
//!
//! Pure and deterministic like the other builders: one Job per run and storage
//! (`<run>-<storage>-<hash>-copy`, [`super::naming::pair_name`]), owned by the BackupPolicy, under the policy's Job template.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, PersistentVolumeClaimVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::backup_policy::POLICY_LABEL;
use crate::api::backup_storage::{S3Storage, SseAlgorithm};
use crate::api::common::SecretKeySelector;
use crate::api::{BackupPolicy, BackupStorage};
use crate::contract::{COMPONENT_COPY, RUN_LABEL, exit};

use super::naming::pair_name;
use super::shell::{
    JobBuildError, JobDefaults, JobShell, STORAGE_MOUNT, agent_container, agent_env, escape_dollar,
    escape_env, job, labels, plain_env, pod_failure_policy, pod_spec, push_flag, required,
    secret_env, tmp_volume,
};

/// Where a filesystem destination's claim is mounted in the copy pod.
pub const COPY_MOUNT: &str = "/backup-copy";
/// Retries of a copy Job (a copy is idempotent: it is simply made again).
pub const BACKOFF_LIMIT: i32 = 2;
/// A copy that takes longer than this is stuck.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 6 * 3600;
/// Label with the destination storage's name.
pub const COPY_STORAGE_LABEL: &str = "dataguardian.io/copy-storage";

/// The deterministic name of the Job copying run `run` to storage `storage`; distinct for every
/// (run, storage) pair ([`pair_name`]).
pub fn job_name(run: &str, storage: &str) -> String {
    pair_name(run, storage, "copy")
}

/// The `--to` of a filesystem destination: `file:///backup/…` (where a restore pod mounts the
/// claim) becomes `file:///backup-copy/…` (where the copy pod mounts it).
fn copy_pod_location(location: &str) -> Result<String, JobBuildError> {
    let prefix = format!("file://{STORAGE_MOUNT}/");
    location
        .strip_prefix(&prefix)
        .map(|rest| format!("file://{COPY_MOUNT}/{rest}"))
        .ok_or_else(|| {
            JobBuildError::InvalidSource(format!(
                "copy location {location:?} is not under the storage mount {STORAGE_MOUNT}"
            ))
        })
}

fn claim_volume(name: &str, claim: &str, mount: &str, read_only: bool) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: read_only.then_some(true),
            }),
            ..Default::default()
        },
        VolumeMount {
            name: name.into(),
            mount_path: mount.into(),
            read_only: read_only.then_some(true),
            ..Default::default()
        },
    )
}

/// Flags and credentials of one S3 side (`from` or `to`).
fn push_s3_side(side: &str, s3: &S3Storage, args: &mut Vec<String>, env: &mut Vec<EnvVar>) {
    push_flag(args, &format!("--{side}-s3-region"), &s3.region);
    if let Some(endpoint) = &s3.endpoint {
        push_flag(args, &format!("--{side}-s3-endpoint"), endpoint);
    }
    if s3.force_path_style {
        args.push(format!("--{side}-s3-path-style"));
    }
    if let Some(creds) = &s3.credentials_secret_ref {
        let prefix = format!("DG_{}_", side.to_ascii_uppercase());
        for (var, optional) in [
            ("AWS_ACCESS_KEY_ID", false),
            ("AWS_SECRET_ACCESS_KEY", false),
            ("AWS_SESSION_TOKEN", true),
        ] {
            env.push(secret_env(
                &format!("{prefix}{var}"),
                &SecretKeySelector::new(creds.name.clone(), var),
                optional,
            ));
        }
    }
}

/// What a copy container needs besides `agent copy` and the pod's `/tmp`: its flags (both sides,
/// the destination's write settings), its environment (each side's credentials as
/// `DG_FROM_AWS_…`/`DG_TO_AWS_…`) and the claims of filesystem sides (the source read-only at
/// the storage mount as `storage`, a destination at [`COPY_MOUNT`] as `copy`).
#[derive(Debug, Clone, Default)]
pub(crate) struct CopySides {
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

/// The [`CopySides`] of a copy of `from` on `primary` to `to` on `secondary`.
pub(crate) fn copy_sides(
    primary: &BackupStorage,
    secondary: &BackupStorage,
    from: &str,
    to: &str,
) -> Result<CopySides, JobBuildError> {
    let mut out = CopySides::default();
    let (args, env) = (&mut out.args, &mut out.env);
    push_flag(args, "--from", from);
    match (&primary.spec.s3, &primary.spec.filesystem) {
        (Some(s3), _) => push_s3_side("from", s3, args, env),
        (None, Some(fs)) => {
            let (v, m) = claim_volume("storage", &fs.claim_name, STORAGE_MOUNT, true);
            out.volumes.push(v);
            out.mounts.push(m);
        }
        (None, None) => return Err(JobBuildError::NoStorageBackend(primary.name_any())),
    }
    match (&secondary.spec.s3, &secondary.spec.filesystem) {
        (Some(s3), _) => {
            push_flag(args, "--to", to);
            push_s3_side("to", s3, args, env);
            if let Some(class) = &s3.storage_class {
                push_flag(args, "--storage-class", class);
            }
            if let Some(lock) = &s3.object_lock {
                push_flag(args, "--object-lock-mode", lock.mode.as_str());
                push_flag(args, "--object-lock-days", &lock.days.to_string());
            }
            if let Some(sse) = &s3.server_side_encryption {
                let algorithm = match sse.algorithm {
                    SseAlgorithm::Aes256 => "AES256",
                    SseAlgorithm::AwsKms => "aws:kms",
                };
                push_flag(args, "--sse", algorithm);
                if let Some(key_id) = &sse.kms_key_id {
                    push_flag(args, "--sse-kms-key-id", key_id);
                }
            }
            // The standard chain's region for a side without one of its own.
            env.push(plain_env("AWS_REGION", &s3.region));
        }
        (None, Some(fs)) => {
            push_flag(args, "--to", &copy_pod_location(to)?);
            let (v, m) = claim_volume("copy", &fs.claim_name, COPY_MOUNT, false);
            out.volumes.push(v);
            out.mounts.push(m);
        }
        (None, None) => return Err(JobBuildError::NoStorageBackend(secondary.name_any())),
    }
    Ok(out)
}

/// Builds the Job copying the backup of `run`, whose manifest is `from` on `primary` and must
/// hash to `manifest_sha256`, to `to` on `secondary` (both locations as the operator computed
/// them for the run).
#[allow(clippy::too_many_arguments)]
pub fn build(
    run: &str,
    policy: &BackupPolicy,
    primary: &BackupStorage,
    secondary: &BackupStorage,
    from: &str,
    to: &str,
    manifest_sha256: &str,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
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

    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![tmp];
    let mut mounts = vec![tmp_mount];
    let mut env: Vec<EnvVar> = agent_env();
    let mut args: Vec<String> = vec!["agent".into(), "copy".into()];
    let sides = copy_sides(primary, secondary, from, to)?;
    args.extend(sides.args);
    env.extend(sides.env);
    volumes.extend(sides.volumes);
    mounts.extend(sides.mounts);
    push_flag(
        &mut args,
        crate::contract::manifest::MANIFEST_SHA256_FLAG,
        manifest_sha256,
    );
    let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
    escape_env(&mut env);

    let mut extra: BTreeMap<String, String> = template.labels.clone();
    extra.insert(POLICY_LABEL.into(), policy.name_any());
    extra.insert(COPY_STORAGE_LABEL.into(), secondary.name_any());
    let name = job_name(run, &secondary.name_any());
    let labels = labels(COMPONENT_COPY, &name, (RUN_LABEL, run), &extra);
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let container = agent_container(&template, defaults, args, env, mounts);
    let pod = pod_spec(&template, Vec::new(), container, volumes);
    job(
        JobShell {
            name,
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: BACKOFF_LIMIT,
            active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
            pod_failure_policy: pod_failure_policy(&exit::COPY_NON_RETRYABLE),
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
  storageRef: {name: main}
  secondaryStorageRefs: [{name: dr}, {name: local}]
  schedule: "0 2 * * *"
  jobTemplate: {serviceAccountName: backup-sa}
"#,
        )
        .unwrap()
    }

    fn storage(yaml: &str) -> BackupStorage {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn main() -> BackupStorage {
        storage(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: main, namespace: shop}\nspec: {s3: {bucket: a, region: eu-west-1, endpoint: 'https://s3.a.example', forcePathStyle: true, credentialsSecretRef: {name: main-creds}}}\n",
        )
    }

    fn dr() -> BackupStorage {
        storage(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: dr, namespace: shop}\nspec: {s3: {bucket: b, region: us-east-2, credentialsSecretRef: {name: dr-creds}, objectLock: {mode: COMPLIANCE, days: 30}}}\n",
        )
    }

    fn local() -> BackupStorage {
        storage(
            "apiVersion: dataguardian.io/v1alpha1\nkind: BackupStorage\nmetadata: {name: local, namespace: shop}\nspec: {filesystem: {claimName: backups, path: /dumps}}\n",
        )
    }

    fn env_secret(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()
            .map(|s| format!("{}/{}", s.name, s.key))
    }

    #[test]
    fn an_s3_to_s3_copy_gets_each_side_its_own_credentials_and_the_destination_lock() {
        let digest = "ab".repeat(32);
        let d = JobDefaults::new("img:1");
        let job = build(
            "nightly-r1",
            &policy(),
            &main(),
            &dr(),
            "s3://a/shop/nightly/r1/manifest.json",
            "s3://b/shop/nightly/r1/manifest.json",
            &digest,
            &d,
        )
        .unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(job_name("nightly-r1", "dr").as_str())
        );
        assert_ne!(job_name("nightly-r1", "dr"), job_name("nightly", "r1-dr"));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(COPY_STORAGE_LABEL).map(String::as_str),
            Some("dr")
        );
        assert_eq!(
            labels
                .get("app.kubernetes.io/component")
                .map(String::as_str),
            Some("copy")
        );
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("backup-sa"));
        let c = &pod.containers[0];
        let args = c.args.as_deref().unwrap().join(" ");
        assert_eq!(
            args,
            format!(
                "agent copy --from s3://a/shop/nightly/r1/manifest.json --from-s3-region eu-west-1 \
                 --from-s3-endpoint https://s3.a.example --from-s3-path-style \
                 --to s3://b/shop/nightly/r1/manifest.json --to-s3-region us-east-2 \
                 --object-lock-mode COMPLIANCE --object-lock-days 30 --manifest-sha256 {digest}"
            )
        );
        assert_eq!(
            env_secret(c, "DG_FROM_AWS_ACCESS_KEY_ID").as_deref(),
            Some("main-creds/AWS_ACCESS_KEY_ID")
        );
        assert_eq!(
            env_secret(c, "DG_TO_AWS_SECRET_ACCESS_KEY").as_deref(),
            Some("dr-creds/AWS_SECRET_ACCESS_KEY")
        );
        // Never the plain AWS_ variables (one storage's keys for both sides), never a key.
        assert!(env_secret(c, "AWS_ACCESS_KEY_ID").is_none());
        assert!(!args.contains("identity"));
    }

    #[test]
    fn a_filesystem_destination_is_its_claim_mounted_beside_the_source() {
        let digest = "cd".repeat(32);
        let job = build(
            "nightly-r1",
            &policy(),
            &main(),
            &local(),
            "s3://a/shop/nightly/r1/manifest.json",
            "file:///backup/dumps/shop/nightly/r1/manifest.json",
            &digest,
            &JobDefaults::new("img:1"),
        )
        .unwrap();
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        let args = c.args.as_deref().unwrap();
        let to = args.iter().position(|a| a == "--to").unwrap();
        assert_eq!(
            args[to + 1],
            "file:///backup-copy/dumps/shop/nightly/r1/manifest.json"
        );
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "copy")
            .unwrap();
        assert_eq!(mount.mount_path, COPY_MOUNT);
        assert_eq!(mount.read_only, None);
        let claim = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "copy")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .unwrap();
        assert_eq!(claim.claim_name, "backups");
        // A location outside the mount is refused.
        assert!(
            build(
                "nightly-r1",
                &policy(),
                &main(),
                &local(),
                "s3://a/x/manifest.json",
                "file:///etc/manifest.json",
                &digest,
                &JobDefaults::new("img:1"),
            )
            .is_err()
        );
    }
}
