//! Builds the `batch/v1` Job that runs one RestoreRun: `dataguardian agent restore …` from the
//! artifact's manifest into the run's target.
//!
//! Like the backup Job the build is pure and deterministic (same inputs, same Job), so a
//! server-side apply after a crash finds the Job already created. No secret value enters the
//! Job: the target's password or connection URI are `secretKeyRef` environment variables, S3
//! credentials come from the storage's Secret the same way, and the age identity is a read-only
//! Secret volume — only restore and validation Jobs ever mount an identity.
//!
//! The agent always runs with `--verify-first`: every artifact is read and its SHA-256 checked
//! before the target is touched, so a tampered artifact fails the restore with the target
//! untouched. `--overwrite` is passed only when the RestoreRun says `overwrite: true`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, KeyToPath, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::common::{Decryption, JobTemplate, SecretKeySelector};
use crate::api::{BackupStorage, RestoreRun};

use super::backup_job::{
    AGENT_CONTAINER, JobBuildError, JobDefaults, STORAGE_MOUNT, Source, TERMINATION_LOG,
    container_security_context, default_resources, escape_dollar, join_key, plain_env,
    pod_security_context, push_flag, secret_env,
};
use super::naming::{MAX_LABEL_LEN, bounded_name, label_value};

/// Label with the RestoreRun's name.
pub const RESTORE_LABEL: &str = "dataguardian.io/restore";
/// Where the identity Secret is mounted.
pub const IDENTITY_DIR: &str = "/etc/dataguardian/identity";
/// File name of the identity inside [`IDENTITY_DIR`].
pub const IDENTITY_FILE: &str = "identity";
/// Default `backoffLimit` of a restore Job (a restore retries transient failures).
pub const DEFAULT_BACKOFF_LIMIT: u32 = 2;

/// Agent exit codes a restore retry cannot fix: invalid configuration (2), a target that
/// refuses the restore, e.g. not empty (11), an artifact whose checksum does not match (13) and
/// a wrong identity (14). The Job fails at once on them instead of retrying.
pub const NON_RETRYABLE_EXIT_CODES: [i32; 4] = [2, 11, 13, 14];

/// Fails the Job at once on `codes` of the agent container; evicted or preempted pods (node
/// drain, spot reclaim) are retried without counting against `backoffLimit`.
/// With no `codes`, only the eviction rule is set.
pub(crate) fn pod_failure_policy(codes: &[i32]) -> PodFailurePolicy {
    let mut rules = Vec::new();
    if !codes.is_empty() {
        rules.push(PodFailurePolicyRule {
            action: "FailJob".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(AGENT_CONTAINER.into()),
                operator: "In".into(),
                values: codes.to_vec(),
            }),
            on_pod_conditions: None,
        });
    }
    rules.push(PodFailurePolicyRule {
        action: "Ignore".into(),
        on_exit_codes: None,
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".into(),
            status: Some("True".into()),
        }]),
    });
    PodFailurePolicy { rules }
}

/// The deterministic name of the restore Job of `run`.
pub fn job_name(run: &str) -> String {
    bounded_name(run, "restore", MAX_LABEL_LEN)
}

/// The full location of an artifact's `manifest.json` as the agent reads it (`--from`), from a
/// storage and a key.
///
/// For S3 the key is the object key inside the bucket (as shown in a BackupRun's
/// `status.artifact.key`); for a filesystem storage it is either the absolute path the backup
/// Job wrote (under the claim's mount) or a path relative to the storage's directory. A key
/// that does not name the manifest itself is taken as the artifact's directory.
pub fn manifest_location(storage: &BackupStorage, key: &str) -> Result<String, JobBuildError> {
    let key = key.trim();
    if key.split('/').any(|s| s == "..") {
        return Err(JobBuildError::InvalidSource(format!(
            "artifact key {key:?} must not contain '..'"
        )));
    }
    let with_manifest = |k: &str| {
        let k = k.trim_end_matches('/');
        if k.ends_with("manifest.json") {
            k.to_owned()
        } else {
            format!("{k}/manifest.json")
        }
    };
    match (&storage.spec.s3, &storage.spec.filesystem) {
        (Some(s3), _) => {
            let k = with_manifest(key.trim_start_matches('/'));
            Ok(format!("s3://{}/{k}", s3.bucket))
        }
        (None, Some(fs)) => {
            if key.starts_with('/') {
                if !key.starts_with(&format!("{STORAGE_MOUNT}/")) {
                    return Err(JobBuildError::InvalidSource(format!(
                        "artifact path {key:?} is outside the storage mount {STORAGE_MOUNT}"
                    )));
                }
                Ok(format!("file://{}", with_manifest(key)))
            } else {
                let rel = join_key(&[&fs.path, key]);
                Ok(format!("file://{STORAGE_MOUNT}/{}", with_manifest(&rel)))
            }
        }
        (None, None) => Err(JobBuildError::NoStorageBackend(storage.name_any())),
    }
}

/// The manifest of a BackupRun's artifact on `storage`: the recorded `manifest_key` when the
/// agent can read it from there, else derived from the artifact `key` ([`manifest_location`]).
pub fn artifact_manifest_location(
    storage: &BackupStorage,
    key: &str,
    manifest_key: Option<&str>,
) -> Result<String, JobBuildError> {
    match manifest_key {
        Some(loc) if location_matches_storage(storage, loc) => Ok(loc.to_string()),
        _ => manifest_location(storage, key),
    }
}

/// Whether `location` (`s3://…` / `file://…`) is one the agent can read from `storage`.
pub fn location_matches_storage(storage: &BackupStorage, location: &str) -> bool {
    match (&storage.spec.s3, &storage.spec.filesystem) {
        (Some(s3), _) => location.starts_with(&format!("s3://{}/", s3.bucket)),
        (None, Some(_)) => location.starts_with(&format!("file://{STORAGE_MOUNT}/")),
        (None, None) => false,
    }
}

/// Adds read access to `storage` to a Job: S3 settings and the credentials Secret's keys as
/// `secretKeyRef` env vars, or the claim mounted read-only.
pub(crate) fn push_storage_access(
    storage: &BackupStorage,
    args: &mut Vec<String>,
    env: &mut Vec<EnvVar>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) -> Result<(), JobBuildError> {
    match (&storage.spec.s3, &storage.spec.filesystem) {
        (Some(s3), _) => {
            push_flag(args, "--s3-region", &s3.region);
            if let Some(endpoint) = &s3.endpoint {
                push_flag(args, "--s3-endpoint", endpoint);
            }
            if s3.force_path_style {
                args.push("--s3-path-style".into());
            }
            env.push(plain_env("AWS_REGION", &s3.region));
            if let Some(creds) = &s3.credentials_secret_ref {
                for (var, optional) in [
                    ("AWS_ACCESS_KEY_ID", false),
                    ("AWS_SECRET_ACCESS_KEY", false),
                    ("AWS_SESSION_TOKEN", true),
                ] {
                    env.push(secret_env(
                        var,
                        &SecretKeySelector::new(creds.name.clone(), var),
                        optional,
                    ));
                }
            }
            Ok(())
        }
        (None, Some(fs)) => {
            volumes.push(Volume {
                name: "storage".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: fs.claim_name.clone(),
                    read_only: Some(true),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "storage".into(),
                mount_path: STORAGE_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
            Ok(())
        }
        (None, None) => Err(JobBuildError::NoStorageBackend(storage.name_any())),
    }
}

/// Mounts the identity Secret read-only and points `--identity-file` at it.
pub(crate) fn push_identity(
    decryption: Option<&Decryption>,
    args: &mut Vec<String>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    let Some(decryption) = decryption else {
        return;
    };
    let selector = &decryption.identity_secret_ref;
    volumes.push(Volume {
        name: "identity".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(selector.name.clone()),
            items: Some(vec![KeyToPath {
                key: selector.key.clone(),
                path: IDENTITY_FILE.into(),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "identity".into(),
        mount_path: IDENTITY_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    push_flag(
        args,
        "--identity-file",
        &format!("{IDENTITY_DIR}/{IDENTITY_FILE}"),
    );
}

/// The `/tmp` emptyDir every agent container gets (read-only root filesystem).
pub(crate) fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("1Gi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    )
}

/// Escapes `$` in every literal env value (see [`escape_dollar`]).
pub(crate) fn escape_env(env: &mut [EnvVar]) {
    for var in env {
        if let Some(value) = &mut var.value {
            *value = escape_dollar(value);
        }
    }
}

/// The agent's logging and termination-message environment.
pub(crate) fn agent_env() -> Vec<EnvVar> {
    vec![
        plain_env("DG_TERMINATION_LOG", TERMINATION_LOG),
        plain_env("DG_LOG_FORMAT", "json"),
        plain_env("HOME", "/tmp"),
        plain_env("TMPDIR", "/tmp"),
    ]
}

/// The recommended labels plus DataGuardian's own for a Job of `component`.
pub(crate) fn labels(
    component: &str,
    instance: &str,
    own: (&str, &str),
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.extend(
        [
            ("app.kubernetes.io/name", "dataguardian".to_owned()),
            ("app.kubernetes.io/instance", label_value(instance)),
            ("app.kubernetes.io/component", component.to_owned()),
            (
                "app.kubernetes.io/managed-by",
                "dataguardian-operator".to_owned(),
            ),
            ("app.kubernetes.io/part-of", "dataguardian".to_owned()),
            (own.0, label_value(own.1)),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    labels
}

/// The agent container of a restore or validation Job.
pub(crate) fn agent_container(
    template: &JobTemplate,
    defaults: &JobDefaults,
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: AGENT_CONTAINER.into(),
        image: Some(
            template
                .image
                .clone()
                .unwrap_or_else(|| defaults.agent_image.clone()),
        ),
        image_pull_policy: template.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["dataguardian".into()]),
        args: Some(args),
        env: Some(env),
        resources: Some(template.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context(
            template.security_context.clone(),
        )),
        volume_mounts: Some(mounts),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// The Pod spec around the containers, from the Job template.
pub(crate) fn pod_spec(
    template: &JobTemplate,
    init_containers: Vec<Container>,
    container: Container,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        containers: vec![container],
        restart_policy: Some("Never".into()),
        service_account_name: template.service_account_name.clone(),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: (!template.node_selector.is_empty()).then(|| template.node_selector.clone()),
        tolerations: (!template.tolerations.is_empty()).then(|| template.tolerations.clone()),
        affinity: template.affinity.clone(),
        priority_class_name: template.priority_class_name.clone(),
        image_pull_secrets: (!template.image_pull_secrets.is_empty())
            .then(|| template.image_pull_secrets.clone()),
        security_context: Some(pod_security_context(template.pod_security_context.clone())),
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// What sets one DataGuardian Job apart from another, around its Pod.
pub(crate) struct JobShell {
    pub name: String,
    pub namespace: String,
    /// On the Job and its Pod.
    pub labels: BTreeMap<String, String>,
    /// On the Job and its Pod.
    pub annotations: Option<BTreeMap<String, String>>,
    pub owner: OwnerReference,
    pub backoff_limit: i32,
    pub active_deadline_seconds: Option<i64>,
    pub pod_failure_policy: PodFailurePolicy,
    pub ttl_seconds_after_finished: i32,
}

/// The Job of every builder: one Pod run to completion, labelled and annotated like the Job.
pub(crate) fn job(shell: JobShell, pod: PodSpec) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(shell.name),
            namespace: Some(shell.namespace),
            labels: Some(shell.labels.clone()),
            annotations: shell.annotations.clone(),
            owner_references: Some(vec![shell.owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(shell.backoff_limit),
            active_deadline_seconds: shell.active_deadline_seconds,
            pod_failure_policy: Some(shell.pod_failure_policy),
            ttl_seconds_after_finished: Some(shell.ttl_seconds_after_finished),
            completions: Some(1),
            parallelism: Some(1),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(shell.labels),
                    annotations: shell.annotations,
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Builds the restore Job of `run`, reading the manifest at `manifest_location` (see
/// [`manifest_location`]) from `storage`. `fallback_template` is the backup policy's Job
/// template, used when the run sets none.
pub fn build(
    run: &RestoreRun,
    storage: &BackupStorage,
    manifest_location: &str,
    fallback_template: Option<&JobTemplate>,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    let run_name = run
        .metadata
        .name
        .clone()
        .ok_or(JobBuildError::MissingRunField("metadata.name"))?;
    let namespace = run
        .metadata
        .namespace
        .clone()
        .ok_or(JobBuildError::MissingRunField("metadata.namespace"))?;
    let owner = run
        .controller_owner_ref(&())
        .ok_or(JobBuildError::MissingRunField("metadata.uid"))?;
    let spec = &run.spec;
    let template = spec
        .job_template
        .clone()
        .or_else(|| fallback_template.cloned())
        .unwrap_or_default();
    let target = Source::from_spec(&spec.target)?;

    let mut args: Vec<String> = vec!["agent".into(), "restore".into()];
    let mut env: Vec<EnvVar> = Vec::new();
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![tmp];
    let mut mounts = vec![tmp_mount];

    push_flag(&mut args, "--engine", target.engine.as_str());
    match (&target.uri, &target.connection) {
        (Some(uri), _) => push_flag(&mut args, "--uri", uri),
        (None, Some(connection)) => env.push(secret_env("DG_URI", connection, false)),
        (None, None) => {}
    }
    if let Some(password) = &target.password {
        env.push(secret_env("DG_PASSWORD", password, false));
    }
    if let Some(database) = &target.database {
        push_flag(&mut args, "--database", database);
    }
    push_flag(&mut args, "--from", manifest_location);
    push_storage_access(storage, &mut args, &mut env, &mut volumes, &mut mounts)?;
    push_identity(
        spec.decryption.as_ref(),
        &mut args,
        &mut volumes,
        &mut mounts,
    );
    // The checksum is always verified before the target is touched.
    args.push("--verify-first".into());
    if spec.create_database {
        args.push("--create-database".into());
    }
    if spec.clean {
        args.push("--clean".into());
    }
    if spec.overwrite {
        args.push("--overwrite".into());
    }
    for extra in &target.extra_args {
        args.push(format!("--restore-arg={extra}"));
    }
    env.extend(agent_env());
    // The kubelet expands `$(VAR)`: user text must reach the agent literally.
    let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
    escape_env(&mut env);

    let labels = labels(
        "restore",
        &run_name,
        (RESTORE_LABEL, &run_name),
        &template.labels,
    );
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let container = agent_container(&template, defaults, args, env, mounts);
    let pod = pod_spec(&template, Vec::new(), container, volumes);
    let backoff = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    Ok(job(
        JobShell {
            name: job_name(&run_name),
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: i32::try_from(backoff).unwrap_or(i32::MAX),
            active_deadline_seconds: spec.active_deadline_seconds,
            pod_failure_policy: pod_failure_policy(&NON_RETRYABLE_EXIT_CODES),
            ttl_seconds_after_finished: defaults.ttl_seconds_after_finished,
        },
        pod,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn run(yaml: &str) -> RestoreRun {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("run fixture: {e}"))
    }

    pub(crate) fn storage_s3() -> BackupStorage {
        serde_yaml::from_str(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: main, namespace: shop}
spec:
  s3: {bucket: shop-backups, region: us-east-1, endpoint: "http://127.0.0.1:9000",
       forcePathStyle: true, prefix: shop/, credentialsSecretRef: {name: s3-creds}}
"#,
        )
        .unwrap()
    }

    fn storage_fs() -> BackupStorage {
        serde_yaml::from_str(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: disk, namespace: shop}
spec:
  filesystem: {claimName: backups, path: /shop}
"#,
        )
        .unwrap()
    }

    const RUN: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreRun
metadata: {name: copy-1, namespace: shop, uid: 0b9f3c52-8e0c-4f3e-9d6a-1f2e3d4c5b6a,
           creationTimestamp: "2026-11-22T10:00:00Z"}
spec:
  backupRunRef: {name: before-migration}
  target: {postgres: {host: db-staging.shop.svc, port: 5432, database: shop_copy, user: restore,
                      passwordSecretRef: {name: staging-creds, key: password}}}
  createDatabase: true
  decryption: {identitySecretRef: {name: backup-age-identity, key: identity}}
"#;

    fn defaults() -> JobDefaults {
        JobDefaults {
            agent_image: "dg:test".into(),
            ttl_seconds_after_finished: 3600,
        }
    }

    fn json(job: &Job) -> Value {
        serde_json::to_value(job).unwrap()
    }

    fn args(v: &Value) -> Vec<String> {
        serde_json::from_value(v["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .unwrap()
    }

    #[test]
    fn postgres_restore_from_s3_job() {
        let loc = "s3://shop-backups/shop/nightly/r1/manifest.json";
        let job = build(&run(RUN), &storage_s3(), loc, None, &defaults()).unwrap();
        let v = json(&job);
        assert_eq!(v["metadata"]["name"], "copy-1-restore");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "RestoreRun");
        assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            v["metadata"]["labels"]["app.kubernetes.io/component"],
            "restore"
        );
        assert_eq!(v["metadata"]["labels"][RESTORE_LABEL], "copy-1");
        assert_eq!(v["spec"]["backoffLimit"], DEFAULT_BACKOFF_LIMIT);
        let rule = &v["spec"]["podFailurePolicy"]["rules"][0];
        assert_eq!(rule["action"], "FailJob");
        assert_eq!(
            rule["onExitCodes"]["values"],
            serde_json::json!([2, 11, 13, 14])
        );
        let a = args(&v);
        let joined = a.join(" ");
        assert!(joined.starts_with("agent restore --engine postgres --uri postgresql://restore@db-staging.shop.svc:5432/shop_copy"), "{joined}");
        assert!(joined.contains(&format!("--from {loc}")));
        assert!(joined.contains("--s3-endpoint http://127.0.0.1:9000 --s3-path-style"));
        assert!(
            a.contains(&"--verify-first".to_string()),
            "always verify first"
        );
        assert!(a.contains(&"--create-database".to_string()));
        assert!(
            !a.contains(&"--overwrite".to_string()),
            "overwrite only when asked"
        );
        assert!(!a.contains(&"--clean".to_string()));
        assert!(joined.contains("--identity-file /etc/dataguardian/identity/identity"));
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        let env = c["env"].as_array().unwrap();
        let pw = env.iter().find(|e| e["name"] == "DG_PASSWORD").unwrap();
        assert_eq!(pw["valueFrom"]["secretKeyRef"]["name"], "staging-creds");
        let key = env
            .iter()
            .find(|e| e["name"] == "AWS_SECRET_ACCESS_KEY")
            .unwrap();
        assert_eq!(key["valueFrom"]["secretKeyRef"]["name"], "s3-creds");
        // Every env var with a secret-looking name comes from a secretKeyRef.
        for e in env {
            let n = e["name"].as_str().unwrap();
            if n.contains("PASSWORD") || n.contains("SECRET") || n == "DG_URI" {
                assert!(e["value"].is_null(), "{n} has a literal value");
            }
        }
        let identity = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "identity")
            .unwrap();
        assert_eq!(identity["secret"]["secretName"], "backup-age-identity");
        assert_eq!(identity["secret"]["items"][0]["key"], "identity");
        // User text reaches the agent literally through the kubelet's $(VAR) expansion.
        let odd = RUN.replace("database: shop_copy", "database: \"shop$(HOME)\"");
        let a = args(&json(
            &build(&run(&odd), &storage_s3(), loc, None, &defaults()).unwrap(),
        ));
        assert!(a.contains(&"shop$$(HOME)".to_string()), "{a:?}");
        // Deterministic.
        assert_eq!(
            job,
            build(&run(RUN), &storage_s3(), loc, None, &defaults()).unwrap()
        );
    }

    #[test]
    fn overwrite_and_clean_only_when_set_and_template_falls_back_to_the_policy() {
        let yaml = RUN.replace(
            "createDatabase: true",
            "overwrite: true\n  clean: true\n  backoffLimit: 0",
        );
        let tpl = JobTemplate {
            image: Some("custom:1".into()),
            ..Default::default()
        };
        let job = build(
            &run(&yaml),
            &storage_fs(),
            "file:///backup/shop/r1/manifest.json",
            Some(&tpl),
            &defaults(),
        )
        .unwrap();
        let v = json(&job);
        let a = args(&v);
        assert!(a.contains(&"--overwrite".to_string()));
        assert!(a.contains(&"--clean".to_string()));
        assert!(!a.contains(&"--create-database".to_string()));
        assert_eq!(v["spec"]["backoffLimit"], 0);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "custom:1");
        let storage = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "storage")
            .unwrap();
        assert_eq!(storage["persistentVolumeClaim"]["claimName"], "backups");
        assert_eq!(storage["persistentVolumeClaim"]["readOnly"], true);
    }

    #[test]
    fn non_retryable_exit_codes_match_the_agent() {
        use crate::agent::error::AgentError;
        let codes: Vec<i32> = [
            AgentError::Config(String::new()),
            AgentError::Target(String::new()),
            AgentError::Integrity(String::new()),
            AgentError::Crypto(String::new()),
        ]
        .iter()
        .map(|e| i32::from(e.exit_code()))
        .collect();
        assert_eq!(codes, NON_RETRYABLE_EXIT_CODES);
    }

    #[test]
    fn manifest_locations() {
        let s3 = storage_s3();
        assert_eq!(
            manifest_location(&s3, "shop/nightly/r1/manifest.json").unwrap(),
            "s3://shop-backups/shop/nightly/r1/manifest.json"
        );
        assert_eq!(
            manifest_location(&s3, "shop/nightly/r1/").unwrap(),
            "s3://shop-backups/shop/nightly/r1/manifest.json"
        );
        assert!(manifest_location(&s3, "shop/../other").is_err());
        let fs = storage_fs();
        assert_eq!(
            manifest_location(&fs, "nightly/r1").unwrap(),
            "file:///backup/shop/nightly/r1/manifest.json"
        );
        assert_eq!(
            manifest_location(&fs, "/backup/shop/r1/manifest.json").unwrap(),
            "file:///backup/shop/r1/manifest.json"
        );
        assert!(manifest_location(&fs, "/etc/passwd").is_err());
        assert!(location_matches_storage(
            &s3,
            "s3://shop-backups/x/manifest.json"
        ));
        assert!(!location_matches_storage(&s3, "s3://other/x/manifest.json"));
        assert!(location_matches_storage(
            &fs,
            "file:///backup/x/manifest.json"
        ));
    }

    #[test]
    fn long_names_fit_and_bad_targets_are_typed_errors() {
        let long = "r".repeat(80);
        assert!(job_name(&long).len() <= MAX_LABEL_LEN);
        assert_ne!(job_name(&long), job_name(&format!("{long}x")));
        let bad = RUN.replace("database: shop_copy, ", "");
        let err = build(
            &run(&bad),
            &storage_s3(),
            "s3://b/k/manifest.json",
            None,
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidPolicy");
    }
}
