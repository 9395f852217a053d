//! Builds the `batch/v1` Job that runs one BackupRun: `dataguardian agent backup …` with the
//! policy's source, the storage's destination and the policy's Job template.
//!
//! The build is pure and deterministic: the same run, policy, storage and settings always give
//! the same Job, so a server-side apply after a crash finds the Job it already created. No
//! secret value ever enters the Job: passwords, connection URIs and S3 keys are `secretKeyRef`
//! environment variables, age recipients a read-only Secret volume.
//!
//! Shape of the Job:
//! - name `<run>-<attempt>` (≤ 63 characters, truncated and hashed when the run name is long);
//!   the Job itself retries failed pods up to the policy's `backoffLimit`;
//! - a controller ownerReference to the BackupRun (garbage collection, watch mapping);
//! - the recommended `app.kubernetes.io/*` labels plus `dataguardian.io/policy` and
//!   `dataguardian.io/run`, on the Job and its Pod;
//! - a restricted security context (non-root, read-only root filesystem, no privilege
//!   escalation, all capabilities dropped, `RuntimeDefault` seccomp) that the Job template's
//!   `podSecurityContext`/`securityContext` are merged over; no service account token;
//! - `/tmp` on an `emptyDir`, the agent's JSON summary in `/dev/termination-log`;
//! - `activeDeadlineSeconds` (run override, else policy), `ttlSecondsAfterFinished`, and a pod
//!   failure policy: configuration errors fail at once, evictions do not use up retries.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, KeyToPath, PersistentVolumeClaimVolumeSource, SecretVolumeSource,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{Resource, ResourceExt};

use crate::api::backup_policy::POLICY_LABEL;
use crate::api::backup_run::BackupScope;
use crate::api::backup_storage::{FilesystemStorage, S3Storage, SseAlgorithm};
use crate::api::common::{Compression, CompressionAlgorithm, SecretKeySelector, time_to_chrono};
use crate::api::{BackupPolicy, BackupRun, BackupStorage};
use crate::contract::{
    APP_NAME, COMPONENT_BACKUP, COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL, NAME_LABEL,
    OPERATOR_NAME, PART_OF_LABEL, RUN_LABEL, exit, extra_args,
};

use super::naming::{MAX_LABEL_LEN, bounded_name, label_value};
use super::shell::{
    JobBuildError, JobDefaults, JobShell, STORAGE_MOUNT, agent_container, agent_env, escape_dollar,
    job, plain_env, pod_failure_policy, pod_spec, push_flag, required, secret_env,
};
use super::source::{Source, join_key, push_kms_key};

/// Where the recipients Secret is mounted.
const RECIPIENTS_DIR: &str = "/etc/dataguardian/recipients";
/// File name of the recipients inside [`RECIPIENTS_DIR`].
const RECIPIENTS_FILE: &str = "recipients";
/// The deterministic name of the Job of attempt `attempt` of run `run`.
pub fn job_name(run: &str, attempt: u32) -> String {
    bounded_name(run, &attempt.to_string(), MAX_LABEL_LEN)
}

/// Builds the backup Job for the first attempt of `run`. `defaults` is a [`JobDefaults`] or the
/// operator's `Settings`.
pub fn build(
    run: &BackupRun,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    defaults: impl Into<JobDefaults>,
) -> Result<Job, JobBuildError> {
    build_attempt(run, policy, storage, &defaults.into(), 1)
}

/// Builds the backup Job of attempt `attempt` of `run` (the attempt only changes the name).
pub fn build_attempt(
    run: &BackupRun,
    policy: &BackupPolicy,
    storage: &BackupStorage,
    defaults: &JobDefaults,
    attempt: u32,
) -> Result<Job, JobBuildError> {
    let run_name = required(&run.metadata.name, "metadata.name")?;
    let namespace = required(&run.metadata.namespace, "metadata.namespace")?;
    let owner = run
        .controller_owner_ref(&())
        .ok_or(JobBuildError::MissingRunField("metadata.uid"))?;
    let policy_name = policy.name_any();
    let spec = &policy.spec;
    let template = spec.job_template.clone().unwrap_or_default();

    let source = Source::from_spec(&spec.source)?;
    let location = run_location(run, policy, &source)?;
    let compression = run
        .spec
        .compression
        .clone()
        .unwrap_or_else(|| spec.compression_or_default());

    let mut args: Vec<String> = vec!["agent".into(), "backup".into()];
    let mut env: Vec<EnvVar> = Vec::new();
    let mut volumes: Vec<Volume> = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("1Gi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts: Vec<VolumeMount> = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];

    source.push_args(&mut args, &mut env);
    push_destination(
        storage,
        &location,
        &mut args,
        &mut env,
        &mut volumes,
        &mut mounts,
    )?;
    push_flag(&mut args, "--run-id", &location.run_id);
    push_flag(&mut args, "--compression", &compression_flag(&compression));
    if let Some(n) = parallelism(spec.parallelism, template.resources.as_ref()) {
        push_flag(&mut args, "--parallelism", &n.to_string());
    }
    if let Some(kms) = spec.encryption.as_ref().and_then(|e| e.kms.as_ref()) {
        push_kms_key(kms, &mut args, &mut env);
    }
    if let Some(selector) = spec
        .encryption
        .as_ref()
        .and_then(|e| e.recipients_secret_ref.as_ref())
    {
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
            &mut args,
            "--recipients-file",
            &format!("{RECIPIENTS_DIR}/{RECIPIENTS_FILE}"),
        );
    }
    // Only allow-listed options reach the dump tool; the agent checks again.
    extra_args::check(extra_args::Tool::dump(source.engine), &source.extra_args)
        .map_err(|e| JobBuildError::ArgumentNotAllowed(e.to_string()))?;
    for extra in &source.extra_args {
        args.push(format!("--dump-arg={extra}"));
    }
    env.extend(agent_env());

    // The kubelet expands `$(VAR)` in args and env values; user text (database names, extra
    // dump arguments, paths) must reach the agent literally, so `$` is escaped as `$$`.
    let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
    for var in &mut env {
        if let Some(value) = &mut var.value {
            *value = escape_dollar(value);
        }
    }

    let labels = labels(&policy_name, &run_name, &template.labels);
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());

    let container = agent_container(&template, defaults, args, env, mounts);
    let pod = pod_spec(&template, Vec::new(), container, volumes);
    job(
        JobShell {
            name: job_name(&run_name, attempt),
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: i32::try_from(spec.backoff_limit).unwrap_or(i32::MAX),
            active_deadline_seconds: run
                .spec
                .active_deadline_seconds
                .or(spec.active_deadline_seconds),
            pod_failure_policy: pod_failure_policy(&exit::BACKUP_NON_RETRYABLE),
            ttl_seconds_after_finished: defaults.ttl_seconds_after_finished,
        },
        pod,
        defaults,
    )
}

/// The recommended labels plus DataGuardian's own; the template's extra labels never override
/// these (selectors and the reconcilers depend on them).
fn labels(policy: &str, run: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.extend(
        [
            (NAME_LABEL, APP_NAME.to_owned()),
            (INSTANCE_LABEL, label_value(policy)),
            (COMPONENT_LABEL, COMPONENT_BACKUP.to_owned()),
            (MANAGED_BY_LABEL, OPERATOR_NAME.to_owned()),
            (PART_OF_LABEL, APP_NAME.to_owned()),
            (POLICY_LABEL, label_value(policy)),
            (RUN_LABEL, label_value(run)),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    labels
}

/// Most dumps of one database a derived default asks for.
const MAX_DERIVED_PARALLELISM: u32 = 8;

/// `--parallelism` of a backup Job (pure): the policy's `parallelism`, else the Job's CPU
/// limit rounded up (1 to 8). `None` (no setting, no CPU limit) leaves it to the agent, which
/// takes the CPUs its Pod may use.
pub fn parallelism(
    setting: Option<u32>,
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
) -> Option<u32> {
    if let Some(n) = setting {
        return Some(n.max(1));
    }
    let cpu = resources?.limits.as_ref()?.get("cpu")?;
    let millis = cpu_millis(&cpu.0)?;
    Some(
        millis
            .div_ceil(1000)
            .clamp(1, u64::from(MAX_DERIVED_PARALLELISM)) as u32,
    )
}

/// Millicores of a CPU quantity (`2`, `1.5`, `500m`); `None` for anything else.
fn cpu_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(m) = text.strip_suffix('m') {
        return m.parse::<u64>().ok();
    }
    let cores: f64 = text.parse().ok()?;
    (cores.is_finite() && cores > 0.0).then(|| (cores * 1000.0).ceil() as u64)
}

fn compression_flag(compression: &Compression) -> String {
    match (compression.algorithm, compression.effective_level()) {
        (CompressionAlgorithm::None, _) | (_, None) => compression.algorithm.as_str().to_owned(),
        (algorithm, Some(level)) => format!("{}:{level}", algorithm.as_str()),
    }
}

/// The rendered destination of one run: the directory under the storage root (`dir`) and the
/// run's own directory name inside it (`run_id`, the agent's `--run-id`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    dir: String,
    run_id: String,
}

struct PathValues<'a> {
    namespace: &'a str,
    policy: &'a str,
    run: &'a str,
    engine: &'a str,
    database: &'a str,
    time: DateTime<Utc>,
}

/// The longest key a `pathTemplate` may render (bytes): S3 keys end at 1024 bytes, and the
/// storage prefix and the artifact names (`databases/<db>.pgdump.zst.age`) come on top.
const MAX_RENDERED_KEY: usize = 768;

/// Renders `pathTemplate`: placeholders `{namespace}`, `{policy}`, `{run}`, `{engine}`,
/// `{database}`, `{date}` (YYYY-MM-DD) and `{timestamp}` (YYYYMMDDTHHMMSSZ), all in UTC. The
/// time is the run's scheduled time, or its creation time for a manual run, so every build of
/// the same run renders the same key. The last path segment becomes the agent's run id.
fn render_location(template: &str, values: &PathValues<'_>) -> Result<Location, JobBuildError> {
    let invalid = |detail: String| JobBuildError::InvalidPathTemplate {
        template: template.to_owned(),
        detail,
    };
    let mut rendered = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| invalid("unclosed '{'".into()))?;
        let value = match &after[..close] {
            "namespace" => values.namespace.to_owned(),
            "policy" => values.policy.to_owned(),
            "run" => values.run.to_owned(),
            "engine" => values.engine.to_owned(),
            "database" => key_safe(values.database),
            "date" => values.time.format("%Y-%m-%d").to_string(),
            "timestamp" => values.time.format("%Y%m%dT%H%M%SZ").to_string(),
            other => return Err(invalid(format!("unknown placeholder {{{other}}}"))),
        };
        rendered.push_str(&value);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(invalid("unmatched '}'".into()));
    }
    rendered.push_str(rest);
    let segments: Vec<&str> = rendered.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(invalid("'.' and '..' segments are not allowed".into()));
    }
    let Some((run_id, dirs)) = segments.split_last() else {
        return Err(invalid("it renders an empty key".into()));
    };
    let rendered_len = segments.iter().map(|s| s.len() + 1).sum::<usize>() - 1;
    if rendered_len > MAX_RENDERED_KEY {
        return Err(invalid(format!(
            "it renders a key of {rendered_len} bytes; at most {MAX_RENDERED_KEY} leave room under S3's 1024-byte key limit for the storage prefix and the artifact names"
        )));
    }
    if run_id.len() > 200
        || !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(format!(
            "the last segment {run_id:?} must be 1-200 characters of [A-Za-z0-9._-]"
        )));
    }
    Ok(Location {
        dir: dirs.join("/"),
        run_id: (*run_id).to_owned(),
    })
}

/// Renders the run's destination from the policy's `pathTemplate` (pure, deterministic).
fn run_location(
    run: &BackupRun,
    policy: &BackupPolicy,
    source: &Source,
) -> Result<Location, JobBuildError> {
    let run_name = required(&run.metadata.name, "metadata.name")?;
    let namespace = required(&run.metadata.namespace, "metadata.namespace")?;
    let run_time = run
        .spec
        .scheduled_time
        .as_ref()
        .or(run.metadata.creation_timestamp.as_ref())
        .map(time_to_chrono)
        .ok_or(JobBuildError::MissingRunField("metadata.creationTimestamp"))?;
    render_location(
        policy.spec.path_template_or_default(),
        &PathValues {
            namespace: &namespace,
            policy: &policy.name_any(),
            run: &run_name,
            engine: source.engine.as_str(),
            database: source.database.as_deref().unwrap_or("all"),
            time: run_time,
        },
    )
}

/// What a run's backup must be, computed by the operator from the run, its policy and the
/// storage — never taken from what the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedBackup {
    /// The manifest's full location as the agent names it (`s3://bucket/key/manifest.json`,
    /// `file:///…/manifest.json`).
    pub location: String,
    /// The manifest's object key (S3) or its path inside the pod (filesystem).
    pub key: String,
    /// One database or all of them (the policy's source).
    pub scope: BackupScope,
    /// Whether the policy encrypts.
    pub encrypted: bool,
}

/// What the backup Job of `run` writes, and where (the same rendering as [`build`]).
pub fn expected_backup(
    run: &BackupRun,
    policy: &BackupPolicy,
    storage: &BackupStorage,
) -> Result<ExpectedBackup, JobBuildError> {
    let source = Source::from_spec(&policy.spec.source)?;
    let location = run_location(run, policy, &source)?;
    let scope = BackupScope::from_all_databases(source.all_databases);
    let encrypted = policy.spec.encryption.is_some();
    match (&storage.spec.s3, &storage.spec.filesystem) {
        (Some(s3), _) => {
            let dir = join_key(&[
                s3.prefix.as_deref().unwrap_or(""),
                &location.dir,
                &location.run_id,
            ]);
            let key = format!("{dir}/{}", crate::contract::MANIFEST_NAME);
            Ok(ExpectedBackup {
                location: format!("s3://{}/{key}", s3.bucket),
                key,
                scope,
                encrypted,
            })
        }
        (None, Some(fs)) => {
            let dir = join_key(&[&fs.path, &location.dir, &location.run_id]);
            let key = format!("{STORAGE_MOUNT}/{dir}/{}", crate::contract::MANIFEST_NAME);
            Ok(ExpectedBackup {
                location: format!("file://{key}"),
                key,
                scope,
                encrypted,
            })
        }
        (None, None) => Err(JobBuildError::NoStorageBackend(storage.name_any())),
    }
}

/// Replaces characters outside `[A-Za-z0-9._-]` (database names can hold anything).
fn key_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn push_destination(
    storage: &BackupStorage,
    location: &Location,
    args: &mut Vec<String>,
    env: &mut Vec<EnvVar>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) -> Result<(), JobBuildError> {
    match (&storage.spec.s3, &storage.spec.filesystem) {
        (Some(s3), _) => {
            push_s3(s3, location, args, env);
            Ok(())
        }
        (None, Some(fs)) => {
            push_filesystem(fs, location, args, volumes, mounts);
            Ok(())
        }
        (None, None) => Err(JobBuildError::NoStorageBackend(storage.name_any())),
    }
}

fn push_s3(s3: &S3Storage, location: &Location, args: &mut Vec<String>, env: &mut Vec<EnvVar>) {
    let key = join_key(&[s3.prefix.as_deref().unwrap_or(""), &location.dir]);
    let to = if key.is_empty() {
        format!("s3://{}", s3.bucket)
    } else {
        format!("s3://{}/{key}", s3.bucket)
    };
    push_flag(args, "--to", &to);
    push_flag(args, "--s3-region", &s3.region);
    if let Some(endpoint) = &s3.endpoint {
        push_flag(args, "--s3-endpoint", endpoint);
    }
    if s3.force_path_style {
        args.push("--s3-path-style".into());
    }
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
}

fn push_filesystem(
    fs: &FilesystemStorage,
    location: &Location,
    args: &mut Vec<String>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    volumes.push(Volume {
        name: "storage".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: fs.claim_name.clone(),
            read_only: None,
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "storage".into(),
        mount_path: STORAGE_MOUNT.into(),
        ..Default::default()
    });
    let dir = join_key(&[&fs.path, &location.dir]);
    // The minimal RFC 8089 form `file:/abs/path` (same meaning as `file:///abs/path`) keeps the
    // mount path a whole word, so tools that map container paths (the e2e stand-in's kubelet)
    // recognise it.
    let to = if dir.is_empty() {
        format!("file:{STORAGE_MOUNT}")
    } else {
        format!("file:{STORAGE_MOUNT}/{dir}")
    };
    push_flag(args, "--to", &to);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::Engine;
    use crate::jobs::shell::ImageAllowList;
    use crate::jobs::source::connection_uri;
    use serde_json::{Value, json};

    #[test]
    fn parallelism_comes_from_the_policy_else_the_cpu_limit() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        let limit = |cpu: &str| ResourceRequirements {
            limits: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
            ..Default::default()
        };
        assert_eq!(parallelism(Some(3), Some(&limit("16"))), Some(3));
        assert_eq!(parallelism(None, Some(&limit("2"))), Some(2));
        assert_eq!(parallelism(None, Some(&limit("1500m"))), Some(2));
        assert_eq!(parallelism(None, Some(&limit("250m"))), Some(1));
        assert_eq!(parallelism(None, Some(&limit("0.5"))), Some(1));
        assert_eq!(parallelism(None, Some(&limit("32"))), Some(8));
        assert_eq!(parallelism(None, Some(&limit("lots"))), None);
        assert_eq!(
            parallelism(None, Some(&ResourceRequirements::default())),
            None
        );
        assert_eq!(parallelism(None, None), None);
        // In the Job: the flag appears only when there is something to say.
        let job = build_json(RUN, POLICY, S3_STORAGE);
        assert!(!args(&job).iter().any(|a| a == "--parallelism"));
        let with = POLICY.replace(
            "  compression: {algorithm: zstd, level: 5}",
            "  compression: {algorithm: zstd, level: 5}\n  parallelism: 4",
        );
        let job = build_json(RUN, &with, S3_STORAGE);
        let a = args(&job);
        let at = a.iter().position(|x| x == "--parallelism").unwrap();
        assert_eq!(a[at + 1], "4");
    }

    fn policy(yaml: &str) -> BackupPolicy {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("policy fixture: {e}"))
    }

    fn storage(yaml: &str) -> BackupStorage {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("storage fixture: {e}"))
    }

    fn run(yaml: &str) -> BackupRun {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("run fixture: {e}"))
    }

    const POLICY: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupPolicy
metadata: {name: nightly, namespace: shop, uid: 11111111-2222-3333-4444-555555555555}
spec:
  source:
    postgres: {host: db.shop.svc, port: 5432, database: shop, user: backup,
               passwordSecretRef: {name: db-creds, key: password}, sslMode: verify-full,
               extraArgs: ["--exclude-table=audit_*", "--exclude-table=tmp_*"]}
  storageRef: {name: main}
  schedule: "0 2 * * *"
  timeZone: America/Sao_Paulo
  compression: {algorithm: zstd, level: 5}
  encryption: {recipientsSecretRef: {name: backup-age, key: recipients}}
  backoffLimit: 3
  activeDeadlineSeconds: 7200
"#;

    const S3_STORAGE: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: main, namespace: shop}
spec:
  s3: {bucket: shop-backups, region: eu-central-1, endpoint: "https://minio.example:9000",
       forcePathStyle: true, prefix: backups/, credentialsSecretRef: {name: s3-creds},
       storageClass: STANDARD_IA, objectLock: {mode: COMPLIANCE, days: 30},
       serverSideEncryption: {algorithm: "aws:kms", kmsKeyId: "alias/backups"}}
"#;

    const RUN: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupRun
metadata: {name: nightly-202611220500, namespace: shop, uid: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee,
           creationTimestamp: "2026-11-22T05:00:01Z"}
spec: {policyRef: {name: nightly}, trigger: Scheduled, scheduledTime: "2026-11-22T05:00:00Z"}
"#;

    fn defaults() -> JobDefaults {
        JobDefaults {
            ttl_seconds_after_finished: 86_400,
            ..JobDefaults::new("ghcr.io/dataguardian/dataguardian:0.1.0")
        }
    }

    fn build_json(run_yaml: &str, policy_yaml: &str, storage_yaml: &str) -> Value {
        let job = build(
            &run(run_yaml),
            &policy(policy_yaml),
            &storage(storage_yaml),
            defaults(),
        )
        .unwrap_or_else(|e| panic!("build: {e}"));
        serde_json::to_value(job).unwrap()
    }

    fn args(job: &Value) -> Vec<String> {
        serde_json::from_value(job["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .unwrap()
    }

    fn env(job: &Value) -> &Vec<Value> {
        job["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
    }

    /// Snapshot of the whole Job for the canonical policy: every field that matters, reviewed.
    #[test]
    fn postgres_to_s3_job_snapshot() {
        let job = build_json(RUN, POLICY, S3_STORAGE);
        let labels = json!({
            "app.kubernetes.io/name": "dataguardian",
            "app.kubernetes.io/instance": "nightly",
            "app.kubernetes.io/component": "backup",
            "app.kubernetes.io/managed-by": "dataguardian-operator",
            "app.kubernetes.io/part-of": "dataguardian",
            "dataguardian.io/policy": "nightly",
            "dataguardian.io/run": "nightly-202611220500"
        });
        let secret = |name: &str, secret: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}});
        let expected = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "nightly-202611220500-1",
                "namespace": "shop",
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "dataguardian.io/v1alpha1",
                    "kind": "BackupRun",
                    "name": "nightly-202611220500",
                    "uid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                    "controller": true
                }]
            },
            "spec": {
                "backoffLimit": 3,
                "activeDeadlineSeconds": 7200,
                "ttlSecondsAfterFinished": 86400,
                "completions": 1,
                "parallelism": 1,
                "podFailurePolicy": {"rules": [
                    {"action": "FailJob", "onExitCodes": {
                        "containerName": "agent", "operator": "In", "values": [2, 14, 16, 17, 18]}},
                    {"action": "Ignore", "onPodConditions": [
                        {"type": "DisruptionTarget", "status": "True"}]}
                ]},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}
                        },
                        "volumes": [
                            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "recipients", "secret": {
                                "secretName": "backup-age",
                                "items": [{"key": "recipients", "path": "recipients"}],
                                "defaultMode": 288
                            }}
                        ],
                        "containers": [{
                            "name": "agent",
                            "image": "ghcr.io/dataguardian/dataguardian:0.1.0",
                            "command": ["dataguardian"],
                            "args": [
                                "agent", "backup",
                                "--engine", "postgres",
                                "--uri", "postgresql://backup@db.shop.svc:5432/shop?sslmode=verify-full",
                                "--database", "shop",
                                "--to", "s3://shop-backups/backups/shop/nightly",
                                "--s3-region", "eu-central-1",
                                "--s3-endpoint", "https://minio.example:9000",
                                "--s3-path-style",
                                "--storage-class", "STANDARD_IA",
                                "--object-lock-mode", "COMPLIANCE",
                                "--object-lock-days", "30",
                                "--sse", "aws:kms",
                                "--sse-kms-key-id", "alias/backups",
                                "--run-id", "20261122T050000Z-nightly-202611220500",
                                "--compression", "zstd:5",
                                "--recipients-file", "/etc/dataguardian/recipients/recipients",
                                "--dump-arg=--exclude-table=audit_*",
                                "--dump-arg=--exclude-table=tmp_*"
                            ],
                            "env": [
                                secret("DG_PASSWORD", "db-creds", "password"),
                                {"name": "AWS_REGION", "value": "eu-central-1"},
                                secret("AWS_ACCESS_KEY_ID", "s3-creds", "AWS_ACCESS_KEY_ID"),
                                secret("AWS_SECRET_ACCESS_KEY", "s3-creds", "AWS_SECRET_ACCESS_KEY"),
                                {"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {
                                    "name": "s3-creds", "key": "AWS_SESSION_TOKEN", "optional": true}}},
                                {"name": "DG_TERMINATION_LOG", "value": "/dev/termination-log"},
                                {"name": "DG_LOG_FORMAT", "value": "json"},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "TMPDIR", "value": "/tmp"},
                                {"name": "DG_EGRESS_ALLOW_CIDRS", "value": ""}
                            ],
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "128Mi"},
                                "limits": {"memory": "1Gi"}
                            },
                            "securityContext": {
                                "runAsNonRoot": true,
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "privileged": false,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}
                            },
                            "volumeMounts": [
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "recipients", "mountPath": "/etc/dataguardian/recipients",
                                 "readOnly": true}
                            ],
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "FallbackToLogsOnError"
                        }]
                    }
                }
            }
        });
        assert_eq!(
            job,
            expected,
            "actual:\n{}",
            serde_json::to_string_pretty(&job).unwrap()
        );
    }

    #[test]
    fn operator_settings_are_job_defaults() {
        use crate::controller::common::context::Settings;
        let settings = Settings {
            agent_image: "registry.local/dg:1".into(),
            job_ttl_seconds: 600,
            egress: crate::egress::EgressPolicy::from_list("127.0.0.0/8,fd00::/8").unwrap(),
            ..Settings::default()
        };
        let job = build(&run(RUN), &policy(POLICY), &storage(S3_STORAGE), &settings).unwrap();
        let spec = job.spec.unwrap();
        assert_eq!(spec.ttl_seconds_after_finished, Some(600));
        let container = spec.template.spec.unwrap().containers[0].clone();
        assert_eq!(container.image.as_deref(), Some("registry.local/dg:1"));
        // The agent reaches no more than the operator may: it gets the same egress list, once.
        let egress: Vec<_> = container
            .env
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name == crate::egress::ENV_ALLOW_CIDRS)
            .map(|e| e.value)
            .collect();
        assert_eq!(egress, vec![Some("127.0.0.0/8,fd00::/8".to_string())]);
    }

    #[test]
    fn the_operators_proxies_reach_the_agent_without_credentials() {
        use crate::controller::common::context::Settings;
        use crate::egress::{EgressPolicy, ProxyConfig};
        let env_of = |proxy: ProxyConfig| {
            let settings = Settings {
                egress: EgressPolicy::default().with_proxy(proxy),
                ..Settings::default()
            };
            let job = build(&run(RUN), &policy(POLICY), &storage(S3_STORAGE), &settings).unwrap();
            job.spec.unwrap().template.spec.unwrap().containers[0]
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.name.ends_with("_PROXY"))
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        let plain = ProxyConfig::new(
            Some("http://proxy.corp:3128"),
            Some("http://proxy.corp:3128"),
            ".svc,10.0.0.0/8",
        )
        .unwrap();
        assert_eq!(
            env_of(plain),
            vec![
                (
                    "HTTPS_PROXY".to_string(),
                    "http://proxy.corp:3128".to_string()
                ),
                (
                    "HTTP_PROXY".to_string(),
                    "http://proxy.corp:3128".to_string()
                ),
                ("NO_PROXY".to_string(), ".svc,10.0.0.0/8".to_string()),
            ]
        );
        // Credentials stay with the operator: the Job (readable by the tenant) gets none.
        let with_credentials =
            ProxyConfig::new(None, Some("http://user:secret@proxy.corp:3128"), "").unwrap();
        assert_eq!(env_of(with_credentials), vec![]);
        assert_eq!(env_of(ProxyConfig::none()), vec![]);
    }

    #[test]
    fn non_retryable_exit_codes_match_the_agent() {
        use crate::agent::error::AgentError;
        assert_eq!(
            exit::BACKUP_NON_RETRYABLE,
            [
                i32::from(AgentError::Config(String::new()).exit_code()),
                i32::from(AgentError::Crypto(String::new()).exit_code()),
                i32::from(AgentError::ClientTooOld(String::new()).exit_code()),
                i32::from(AgentError::StorageRefused(String::new()).exit_code()),
                i32::from(AgentError::KeyUnavailable(String::new()).exit_code())
            ]
        );
    }

    #[test]
    fn the_build_is_deterministic() {
        let a = build_json(RUN, POLICY, S3_STORAGE);
        let b = build_json(RUN, POLICY, S3_STORAGE);
        assert_eq!(a, b);
    }

    #[test]
    fn no_secret_travels_outside_secret_refs() {
        let job = build_json(RUN, POLICY, S3_STORAGE);
        for var in env(&job) {
            let name = var["name"].as_str().unwrap();
            if name.starts_with("AWS_") && name != "AWS_REGION" || name == "DG_PASSWORD" {
                assert!(var.get("value").is_none(), "{name} has an inline value");
                assert!(var["valueFrom"]["secretKeyRef"].is_object(), "{name}");
            }
        }
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.to_lowercase().contains("password="), "{text}");
        assert!(
            !args(&job)
                .iter()
                .any(|a| a.contains(":pw@") || a.contains("password"))
        );
    }

    #[test]
    fn a_connection_secret_is_passed_only_as_dg_uri() {
        let p = POLICY.replace(
            "passwordSecretRef: {name: db-creds, key: password}",
            "connectionSecretRef: {name: db-uri, key: uri}",
        );
        let job = build_json(RUN, &p, S3_STORAGE);
        assert!(!args(&job).contains(&"--uri".to_owned()));
        let uri = env(&job)
            .iter()
            .find(|v| v["name"] == "DG_URI")
            .expect("DG_URI");
        assert_eq!(
            uri["valueFrom"]["secretKeyRef"],
            json!({"name": "db-uri", "key": "uri"})
        );
        assert!(!env(&job).iter().any(|v| v["name"] == "DG_PASSWORD"));
    }

    #[test]
    fn mysql_all_databases_to_a_filesystem_claim() {
        let p = r#"
metadata: {name: maria, namespace: shop}
spec:
  source:
    mysql: {host: maria.shop.svc, user: root, allDatabases: true, sslMode: REQUIRED,
            passwordSecretRef: {name: maria, key: root-password}}
  storageRef: {name: pvc}
  schedule: "@daily"
  compression: {algorithm: gzip}
  pathTemplate: "{engine}/{database}/{date}/{run}"
"#;
        let s = r#"
metadata: {name: pvc, namespace: shop}
spec: {filesystem: {claimName: backup-pvc, path: /dumps/}}
"#;
        let r = r#"
metadata: {name: before-migration, namespace: shop, uid: u-1, creationTimestamp: "2026-11-22T10:11:12Z"}
spec: {policyRef: {name: maria}, activeDeadlineSeconds: 600}
"#;
        let job = build_json(r, p, s);
        assert_eq!(
            args(&job),
            [
                "agent",
                "backup",
                "--engine",
                "mysql",
                "--uri",
                "mysql://root@maria.shop.svc:3306/?ssl-mode=REQUIRED",
                "--all-databases",
                "--to",
                "file:/backup/dumps/mysql/all/2026-11-22",
                "--run-id",
                "before-migration",
                "--compression",
                "gzip:6"
            ]
        );
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "storage", "persistentVolumeClaim": {"claimName": "backup-pvc"}})
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][1],
            json!({"name": "storage", "mountPath": "/backup"})
        );
        // The run's own deadline wins; the policy's default backoffLimit applies.
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
        assert_eq!(job["spec"]["backoffLimit"], 2);
        // No S3 credentials for a filesystem storage.
        assert!(
            !env(&job)
                .iter()
                .any(|v| v["name"].as_str().unwrap().starts_with("AWS_"))
        );
    }

    #[test]
    fn job_template_asking_for_privilege_is_refused_not_merged() {
        // Each of these templates would weaken the restricted profile if it were merged over
        // the defaults; the builder refuses every one (the API refuses them too, see the
        // backup_policy reconcile tests).
        for (template, why) in [
            ("securityContext: {privileged: true}", "privileged"),
            (
                "securityContext: {allowPrivilegeEscalation: true}",
                "allowPrivilegeEscalation",
            ),
            ("securityContext: {runAsUser: 0}", "user 0"),
            ("podSecurityContext: {runAsUser: 0}", "runAsUser 0"),
            ("securityContext: {runAsNonRoot: false}", "non-root"),
            ("podSecurityContext: {runAsNonRoot: false}", "non-root"),
            (
                "securityContext: {capabilities: {add: [SYS_ADMIN]}}",
                "SYS_ADMIN",
            ),
            (
                "securityContext: {capabilities: {drop: [NET_RAW]}}",
                "drop ALL",
            ),
            (
                "securityContext: {seccompProfile: {type: Unconfined}}",
                "seccompProfile",
            ),
            (
                "podSecurityContext: {seccompProfile: {type: Unconfined}}",
                "seccompProfile",
            ),
            ("securityContext: {procMount: Unmasked}", "procMount"),
            (
                "podSecurityContext: {sysctls: [{name: kernel.msgmax, value: '1'}]}",
                "sysctls",
            ),
            (
                "securityContext: {seLinuxOptions: {type: spc_t}}",
                "SELinux",
            ),
            (
                "securityContext: {appArmorProfile: {type: Unconfined}}",
                "AppArmor",
            ),
            (
                "securityContext: {windowsOptions: {hostProcess: true}}",
                "host process",
            ),
            (
                "annotations: {container.apparmor.security.beta.kubernetes.io/agent: unconfined}",
                "annotation",
            ),
        ] {
            let p = format!("{POLICY}  jobTemplate:\n    {template}\n");
            let err = build(&run(RUN), &policy(&p), &storage(S3_STORAGE), defaults())
                .expect_err(template);
            assert_eq!(err.reason(), "PrivilegeNotAllowed", "{template}: {err}");
            assert!(err.to_string().contains(why), "{template}: {err}");
        }
    }

    #[test]
    fn job_template_overrides_apply_without_weakening_the_defaults_they_do_not_touch() {
        let p = format!(
            "{POLICY}{}",
            r#"  jobTemplate:
    image: registry.local/dg:custom
    imagePullPolicy: IfNotPresent
    imagePullSecrets: [{name: regcred}]
    serviceAccountName: backup-irsa
    priorityClassName: low
    nodeSelector: {pool: backups}
    tolerations: [{key: dedicated, operator: Equal, value: backups, effect: NoSchedule}]
    affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
    resources: {requests: {cpu: "1", memory: 256Mi}}
    podSecurityContext: {runAsUser: 1000, fsGroup: 2000}
    securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}
    labels: {team: shop, app.kubernetes.io/name: hijack}
    annotations: {owner: shop-team}
"#
        );
        // The custom image is refused until the platform team puts it on the allow-list.
        let refused = build(&run(RUN), &policy(&p), &storage(S3_STORAGE), defaults()).unwrap_err();
        assert_eq!(
            refused,
            JobBuildError::ImageNotAllowed("registry.local/dg:custom".into())
        );
        assert_eq!(refused.reason(), "ImageNotAllowed");
        let allowing = JobDefaults {
            allowed_images: ImageAllowList::new(["registry.local/dg:*"]),
            ..defaults()
        };
        let job = serde_json::to_value(
            build(&run(RUN), &policy(&p), &storage(S3_STORAGE), allowing).unwrap(),
        )
        .unwrap();
        let pod = &job["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "registry.local/dg:custom");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(pod["serviceAccountName"], "backup-irsa");
        assert_eq!(pod["priorityClassName"], "low");
        assert_eq!(pod["nodeSelector"], json!({"pool": "backups"}));
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchExpressions"][0]["values"],
            json!(["a"])
        );
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "1", "memory": "256Mi"}})
        );
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 65532,
                   "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            c["securityContext"]["capabilities"],
            json!({"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]})
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let labels = &job["metadata"]["labels"];
        assert_eq!(labels["team"], "shop");
        assert_eq!(labels["app.kubernetes.io/name"], "dataguardian", "ours win");
        assert_eq!(job["spec"]["template"]["metadata"]["labels"], *labels);
        assert_eq!(
            job["metadata"]["annotations"],
            json!({"owner": "shop-team"})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["annotations"],
            json!({"owner": "shop-team"})
        );
    }

    #[test]
    fn long_names_stay_within_kubernetes_limits() {
        let long_run = format!("before-migration-{}", "x".repeat(230));
        let long_policy = format!("policy-{}", "p".repeat(240));
        let r = RUN.replace("nightly-202611220500", &long_run);
        let p = POLICY
            .replace("name: nightly,", &format!("name: {long_policy},"))
            .replace(
                "storageRef: {name: main}",
                "storageRef: {name: main}\n  pathTemplate: \"{namespace}/{timestamp}\"",
            );
        let job = build_json(&r, &p, S3_STORAGE);
        let name = job["metadata"]["name"].as_str().unwrap();
        assert!(name.len() <= 63 && name.ends_with("-1"), "{name}");
        assert!(
            crate::jobs::naming::is_short_dns1123_subdomain(name),
            "{name}"
        );
        for (k, v) in job["metadata"]["labels"].as_object().unwrap() {
            assert!(v.as_str().unwrap().len() <= 63, "{k}={v}");
        }
        assert_eq!(
            job["metadata"]["ownerReferences"][0]["name"],
            long_run.as_str()
        );
        assert_eq!(job_name(&long_run, 2).len(), 63);
        assert_ne!(job_name(&long_run, 1), job_name(&long_run, 2));
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let p = policy(POLICY);
        let s = storage(S3_STORAGE);
        let mut r = run(RUN);
        r.metadata.uid = None;
        let err = build(&r, &p, &s, defaults()).unwrap_err();
        assert_eq!(err, JobBuildError::MissingRunField("metadata.uid"));
        assert_eq!(err.reason(), "InvalidRun");

        let mut r = run(RUN);
        r.spec.scheduled_time = None;
        r.metadata.creation_timestamp = None;
        assert_eq!(
            build(&r, &p, &s, defaults()).unwrap_err(),
            JobBuildError::MissingRunField("metadata.creationTimestamp")
        );

        let empty: BackupStorage =
            storage("metadata: {name: nothing, namespace: shop}\nspec: {}\n");
        let err = build(&run(RUN), &p, &empty, defaults()).unwrap_err();
        assert_eq!(err.reason(), "InvalidStorage");
        assert!(err.to_string().contains("nothing"));

        for (template, detail) in [
            ("{namespace}/{nope}", "unknown placeholder {nope}"),
            ("{namespace}/{run", "unclosed"),
            ("{run}}", "unmatched"),
            ("{namespace}/../{run}", "'..'"),
            ("///", "empty key"),
            ("{run}/{namespace}:x", "last segment"),
        ] {
            let mut p = policy(POLICY);
            p.spec.path_template = Some(template.into());
            let err = build(&run(RUN), &p, &s, defaults()).unwrap_err();
            assert_eq!(err.reason(), "InvalidPathTemplate", "{template}");
            assert!(err.to_string().contains(detail), "{template}: {err}");
        }

        let mut p = policy(POLICY);
        p.spec.source.postgres = None;
        assert_eq!(
            build(&run(RUN), &p, &s, defaults()).unwrap_err().reason(),
            "InvalidPolicy"
        );
        let mut p = policy(POLICY);
        p.spec.source.postgres.as_mut().unwrap().extra_args = vec!["--exclude-table=a,b".into()];
        let err = build(&run(RUN), &p, &s, defaults()).unwrap_err();
        assert_eq!(err.reason(), "InvalidPolicy");
        assert!(err.to_string().contains("contains ','"), "{err}");
        let mut p = policy(POLICY);
        p.spec.source.postgres.as_mut().unwrap().host = None;
        let err = build(&run(RUN), &p, &s, defaults()).unwrap_err();
        assert!(
            err.to_string().contains("host and user are required"),
            "{err}"
        );
    }

    /// Finding 5: `extraArgs` reached pg_dump unchecked. Off-list options are refused before a
    /// Job exists, with a reason and a message naming the option (never its value).
    #[test]
    fn extra_args_off_the_allow_list_are_refused_before_a_job_is_built() {
        let s = storage(S3_STORAGE);
        for arg in [
            "--file=/tmp/out",
            "-f/tmp/out",
            "--host=10.0.0.9",
            "--dbname=postgres://elsewhere",
            "--snapshot=1-2-3",
            "--filter=/etc/dataguardian/recipients/recipients",
        ] {
            let mut p = policy(POLICY);
            p.spec.source.postgres.as_mut().unwrap().extra_args = vec![arg.into()];
            let err = build(&run(RUN), &p, &s, defaults()).unwrap_err();
            assert_eq!(err.reason(), "ArgumentNotAllowed", "{arg}: {err}");
            assert!(err.to_string().contains("pg_dump"), "{err}");
        }
        let mut p = policy(POLICY);
        p.spec.source.postgres = None;
        p.spec.source.mysql = Some(Box::new(crate::api::common::MysqlEndpoint {
            host: Some("db".into()),
            user: Some("u".into()),
            database: Some("shop".into()),
            extra_args: vec!["--result-file=/tmp/x".into()],
            ..Default::default()
        }));
        let err = build(&run(RUN), &p, &s, defaults()).unwrap_err();
        assert_eq!(err.reason(), "ArgumentNotAllowed", "{err}");
        assert!(err.to_string().contains("--result-file") && !err.to_string().contains("/tmp/x"));
    }

    /// Finding 9: the MySQL verify modes reached the agent as a bare `ssl=true`.
    #[test]
    fn mysql_ssl_modes_reach_the_agent_unchanged() {
        for (mode, param) in [
            ("DISABLED", Some("ssl-mode=DISABLED")),
            ("PREFERRED", None),
            ("REQUIRED", Some("ssl-mode=REQUIRED")),
            ("VERIFY_CA", Some("ssl-mode=VERIFY_CA")),
            ("VERIFY_IDENTITY", Some("ssl-mode=VERIFY_IDENTITY")),
        ] {
            let mut p = policy(POLICY);
            p.spec.source.postgres = None;
            p.spec.source.mysql = Some(
                serde_json::from_value(json!({
                    "host": "db", "user": "u", "database": "shop", "sslMode": mode
                }))
                .unwrap(),
            );
            let job = serde_json::to_value(
                build(&run(RUN), &p, &storage(S3_STORAGE), defaults()).unwrap(),
            )
            .unwrap();
            let a = args(&job);
            let uri = &a[a.iter().position(|x| x == "--uri").unwrap() + 1];
            match param {
                Some(param) => assert!(uri.ends_with(&format!("?{param}")), "{mode}: {uri}"),
                None => assert!(!uri.contains('?'), "{mode}: {uri}"),
            }
        }
    }

    /// The agent's own command line parser accepts every flag the builder emits.
    fn parse_with_the_agent_cli(job: &Value) -> crate::cli::agent::BackupArgs {
        use clap::Parser;
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        let mut argv: Vec<String> = serde_json::from_value(container["command"].clone()).unwrap();
        argv.extend(args(job).iter().map(|a| a.replace("$$", "$")));
        let cli = crate::cli::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("the agent refuses {argv:?}: {e}"));
        match cli.command {
            crate::cli::Command::Agent(agent) => match agent.command {
                crate::cli::agent::AgentCommand::Backup(b) => b,
                other => panic!("not a backup: {other:?}"),
            },
            _ => panic!("not an agent command"),
        }
    }

    #[test]
    fn the_agent_cli_accepts_the_job_args() {
        let b = parse_with_the_agent_cli(&build_json(RUN, POLICY, S3_STORAGE));
        assert_eq!(b.to, "s3://shop-backups/backups/shop/nightly");
        assert_eq!(
            b.run_id.as_deref(),
            Some("20261122T050000Z-nightly-202611220500")
        );
        assert_eq!(b.common.database.as_deref(), Some("shop"));
        assert!(b.common.s3_path_style);
        assert_eq!(b.object_lock_days, Some(30));
        assert_eq!(
            b.dump_args,
            ["--exclude-table=audit_*", "--exclude-table=tmp_*"]
        );
        assert_eq!(
            b.recipients_file.as_deref(),
            Some(std::path::Path::new(
                "/etc/dataguardian/recipients/recipients"
            ))
        );
        assert!(!b.all_databases);

        let p = POLICY.replace(
            "passwordSecretRef: {name: db-creds, key: password}",
            "connectionSecretRef: {name: db-uri, key: uri}",
        );
        let b = parse_with_the_agent_cli(&build_json(RUN, &p, S3_STORAGE));
        assert_eq!(b.common.uri, None, "the URI comes from DG_URI at run time");

        let p = r#"
metadata: {name: maria, namespace: shop}
spec:
  source: {mysql: {host: maria, user: root, allDatabases: true}}
  storageRef: {name: pvc}
  schedule: "@daily"
  compression: {algorithm: none}
"#;
        let s = "metadata: {name: pvc, namespace: shop}\nspec: {filesystem: {claimName: c}}\n";
        let b = parse_with_the_agent_cli(&build_json(RUN, p, s));
        assert!(b.all_databases);
        assert_eq!(b.to, "file:/backup/shop/maria");
        let location: crate::agent::storage::Location = b.to.parse().unwrap();
        assert_eq!(location.to_string(), "file:///backup/shop/maria");
    }

    /// A KMS key on the policy reaches the agent as `--kms-key`/`--kms-region`/`--kms-endpoint`
    /// with its own credentials (`DG_KMS_AWS_*` from its Secret), beside or instead of the
    /// recipients; the backup Job gets nothing that unwraps (no identity, no `--kms` decrypt).
    #[test]
    fn a_kms_key_reaches_the_agent_with_its_own_credentials_and_nothing_that_unwraps() {
        let both = POLICY.replace(
            "encryption: {recipientsSecretRef: {name: backup-age, key: recipients}}",
            "encryption: {recipientsSecretRef: {name: backup-age, key: recipients},\n    kms: {keyId: alias/backups, region: eu-west-1, endpoint: \"https://kms.internal:8443\",\n          credentialsSecretRef: {name: kms-creds}}}",
        );
        let job = build_json(RUN, &both, S3_STORAGE);
        let b = parse_with_the_agent_cli(&job);
        assert_eq!(b.kms.kms_key.as_deref(), Some("alias/backups"));
        assert_eq!(b.kms.access.kms_region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            b.kms.access.kms_endpoint.as_deref(),
            Some("https://kms.internal:8443")
        );
        assert!(b.recipients_file.is_some());
        let secret_of = |name: &str| {
            env(&job)
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
        };
        assert_eq!(
            secret_of("DG_KMS_AWS_ACCESS_KEY_ID"),
            Some(json!({"name": "kms-creds", "key": "AWS_ACCESS_KEY_ID"}))
        );
        assert_eq!(
            secret_of("DG_KMS_AWS_SECRET_ACCESS_KEY"),
            Some(json!({"name": "kms-creds", "key": "AWS_SECRET_ACCESS_KEY"}))
        );
        let joined = args(&job).join(" ");
        assert!(
            !joined.contains("--identity-file") && !joined.contains("--kms "),
            "{joined}"
        );
        assert!(!b.kms.access.use_kms);

        // KMS only: no recipients volume, the key alone.
        let kms_only = POLICY.replace(
            "encryption: {recipientsSecretRef: {name: backup-age, key: recipients}}",
            "encryption: {kms: {keyId: \"arn:aws:kms:eu-west-1:111122223333:key/k\", region: eu-west-1}}",
        );
        let job = build_json(RUN, &kms_only, S3_STORAGE);
        let b = parse_with_the_agent_cli(&job);
        assert!(b.recipients_file.is_none());
        assert_eq!(
            b.kms.kms_key.as_deref(),
            Some("arn:aws:kms:eu-west-1:111122223333:key/k")
        );
        assert!(
            env(&job)
                .iter()
                .all(|e| e["name"] != "DG_KMS_AWS_ACCESS_KEY_ID")
        );
        let volumes = job["spec"]["template"]["spec"]["volumes"].to_string();
        assert!(!volumes.contains("recipients"), "{volumes}");
    }

    #[test]
    fn user_text_is_protected_from_kubelet_variable_expansion() {
        let p = POLICY
            .replace("database: shop,", "database: \"shop$(HOME)\",")
            .replace("--exclude-table=audit_*", "--exclude-table=$$x");
        let job = build_json(RUN, &p, S3_STORAGE);
        let a = args(&job);
        assert!(a.contains(&"shop$$(HOME)".to_owned()), "{a:?}");
        assert!(
            a.contains(&"--dump-arg=--exclude-table=$$$$x".to_owned()),
            "{a:?}"
        );
        assert!(
            a.iter()
                .any(|x| x.ends_with("/shop$$(HOME)?sslmode=verify-full")),
            "{a:?}"
        );
    }

    #[test]
    fn connection_uris_encode_awkward_names() {
        assert_eq!(
            connection_uri(
                Engine::Postgres,
                "::1",
                5432,
                "back up@x",
                Some("my db/1"),
                &[]
            )
            .unwrap(),
            "postgresql://back%20up%40x@[::1]:5432/my%20db%2F1"
        );
        assert_eq!(key_safe("my db/1"), "my_db_1");
    }

    #[test]
    fn run_overrides_compression_and_none_has_no_level() {
        let mut r = run(RUN);
        r.spec.compression = Some(Compression {
            algorithm: CompressionAlgorithm::None,
            level: None,
        });
        let job = build(&r, &policy(POLICY), &storage(S3_STORAGE), defaults()).unwrap();
        let job = serde_json::to_value(job).unwrap();
        let a = args(&job);
        let at = a.iter().position(|x| x == "--compression").unwrap();
        assert_eq!(a[at + 1], "none");
        assert_eq!(
            compression_flag(&Compression {
                algorithm: CompressionAlgorithm::Zstd,
                level: None
            }),
            "zstd:3"
        );
    }
}

/// Properties of `pathTemplate` rendering: it never panics, and whatever it accepts is a key
/// the agent reads back exactly and that cannot climb out of the storage's prefix.
#[cfg(test)]
mod props {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::agent::storage::Location as AgentLocation;

    fn config() -> ProptestConfig {
        crate::proptest_config(256)
    }

    /// Template pieces: placeholders (known and unknown), literal text with URL-special and
    /// non-ASCII characters, slashes and dot segments, stray braces.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            prop_oneof![
                Just("{namespace}"),
                Just("{policy}"),
                Just("{run}"),
                Just("{engine}"),
                Just("{database}"),
                Just("{date}"),
                Just("{timestamp}"),
                Just("{other}"),
                Just("/"),
                Just("."),
                Just(".."),
                Just("{"),
                Just("}"),
            ]
            .prop_map(str::to_owned),
            "[ -~]{1,10}",
            any::<String>(),
        ]
    }

    fn template() -> impl Strategy<Value = String> {
        proptest::collection::vec(piece(), 0..12).prop_map(|p| p.concat())
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn rendering_never_panics_and_accepts_only_safe_keys(
            template in template(),
            (namespace, policy, run) in (name(), name(), name()),
            database in any::<String>(),
            secs in 0i64..4_102_444_800,
        ) {
            let values = PathValues {
                namespace: &namespace,
                policy: &policy,
                run: &run,
                engine: "postgres",
                database: &database,
                time: Utc.timestamp_opt(secs, 0).unwrap(),
            };
            let Ok(location) = render_location(&template, &values) else {
                return Ok(());
            };
            // The same inputs render the same key (every Job build of a run agrees).
            prop_assert_eq!(&render_location(&template, &values).unwrap(), &location);
            let key = if location.dir.is_empty() {
                location.run_id.clone()
            } else {
                format!("{}/{}", location.dir, location.run_id)
            };
            prop_assert!(key.len() <= MAX_RENDERED_KEY);
            prop_assert!(
                key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
                "{key:?}"
            );
            prop_assert!(!location.run_id.is_empty() && location.run_id.len() <= 200);
            prop_assert!(location
                .run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
            // What the Job passes as --to (bucket and prefix with the rendered directory) is
            // read by the agent as exactly that prefix, and the run directory below it.
            let prefix = join_key(&["shop/", &location.dir]);
            let to = if prefix.is_empty() { "s3://bkt".to_owned() } else { format!("s3://bkt/{prefix}") };
            let parsed: AgentLocation = to.parse().unwrap();
            prop_assert_eq!(
                parsed.join(&location.run_id),
                AgentLocation::S3 { bucket: "bkt".into(), prefix: join_key(&[&prefix, &location.run_id]) }
            );
        }

        /// A template of placeholders and plain text that names the run always renders.
        #[test]
        fn plain_templates_with_the_run_render(
            dirs in proptest::collection::vec(
                prop_oneof![
                    Just("{namespace}".to_owned()),
                    Just("{policy}".to_owned()),
                    Just("{database}".to_owned()),
                    Just("{date}".to_owned()),
                    "[A-Za-z0-9_-]{1,20}",
                ],
                0..4,
            ),
            (namespace, policy, run) in (name(), name(), name()),
            database in any::<String>(),
        ) {
            let template = dirs.iter().map(|d| format!("{d}/")).collect::<String>() + "{timestamp}-{run}";
            let values = PathValues {
                namespace: &namespace,
                policy: &policy,
                run: &run,
                engine: "mysql",
                database: &database,
                time: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            };
            let location = render_location(&template, &values).unwrap();
            prop_assert!(location.run_id.ends_with(&run));
        }

        /// A template that renders past the key budget is refused up front, not by S3 after the
        /// dump.
        #[test]
        fn oversized_keys_are_refused(repeat in 4usize..60) {
            let template = "{policy}/".repeat(repeat) + "{run}";
            let policy = "p".repeat(253);
            let values = PathValues {
                namespace: "shop",
                policy: &policy,
                run: "r1",
                engine: "postgres",
                database: "shop",
                time: Utc.timestamp_opt(0, 0).unwrap(),
            };
            let rendered = render_location(&template, &values);
            let refused = matches!(rendered, Err(JobBuildError::InvalidPathTemplate { .. }));
            prop_assert!(refused, "{:?}", rendered);
        }
    }
}
