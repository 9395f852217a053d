//! Builds the `batch/v1` Job that runs one RestoreRun: `dataguardian agent restore …` from the
//! artifact's manifest into the run's target.
//!
//! Like the backup Job the build is pure and deterministic (same inputs, same Job), so a
//! server-side apply after a crash finds the Job already created. No secret value enters the
//! Job: the target's password or connection URI are `secretKeyRef` environment variables, S3
//! credentials come from the storage's Secret the same way, and the age identity is a read-only
//! Secret volume — only restore and validation Jobs ever mount an identity.
//!
//! The agent always runs with `--verify-first`: no artifact reaches the target before its
//! SHA-256 was checked, so a tampered artifact fails the restore with the target untouched. A
//! staged restore (the default for one database, `--staging`) keeps that promise reading the
//! artifact once: it is restored into a staging database, checked as the stream ends, masked
//! (`DG_MASKING`) and only then swapped in; an in-place restore (`allDatabases`, or
//! `swap.mode: InPlace`) reads it twice. `--overwrite` is passed only when the RestoreRun says
//! `overwrite: true`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::EnvVar;
use kube::{Resource, ResourceExt};

use crate::api::common::JobTemplate;
use crate::api::restore_run::RestoreMode;
use crate::api::{BackupStorage, RestoreRun};
use crate::contract::{COMPONENT_RESTORE, MANIFEST_NAME, RESTORE_LABEL, exit, extra_args};

use super::naming::{MAX_LABEL_LEN, bounded_name};
use super::shell::{
    JobBuildError, JobDefaults, JobShell, STORAGE_MOUNT, agent_container, agent_env, escape_dollar,
    escape_env, job, labels, pod_failure_policy, pod_spec, push_flag, required, secret_env,
    tmp_volume,
};
use super::source::{Source, join_key, push_identity, push_pin, push_storage_access};
use crate::contract::ArtifactPin;

/// Default `backoffLimit` of a restore Job (a restore retries transient failures).
pub const DEFAULT_BACKOFF_LIMIT: u32 = 2;

/// The deterministic name of the restore Job of `run`.
pub fn job_name(run: &str) -> String {
    bounded_name(run, "restore", MAX_LABEL_LEN)
}

/// The full location of an artifact's `manifest.json` as the agent reads it (`--from`), from a
/// storage and a key. The key never leaves the storage's own root (its S3 `prefix`, its
/// filesystem `path`): that root is the storage's boundary, whatever the key says.
///
/// For S3 the key is the object key inside the bucket (as shown in a BackupRun's
/// `status.artifact.key`, which starts with the prefix) or a key relative to the prefix; for a
/// filesystem storage it is either the absolute path the backup Job wrote (under the claim's
/// mount and the storage's path) or a path relative to the storage's directory. A key that does
/// not name the manifest itself is taken as the artifact's directory.
pub fn manifest_location(storage: &BackupStorage, key: &str) -> Result<String, JobBuildError> {
    let key = key.trim();
    if key.split('/').any(|s| s == "..") {
        return Err(JobBuildError::InvalidSource(format!(
            "artifact key {key:?} must not contain '..'"
        )));
    }
    let with_manifest = |k: &str| {
        let k = k.trim_end_matches('/');
        if k.ends_with(MANIFEST_NAME) {
            k.to_owned()
        } else {
            format!("{k}/{MANIFEST_NAME}")
        }
    };
    // `key` below `root` (segment-wise): as is when it already starts with the root, else
    // joined under it.
    let under = |root: &str, key: &str| {
        let root = join_key(&[root]);
        let key = join_key(&[key]);
        if root.is_empty() || key == root || key.starts_with(&format!("{root}/")) {
            key
        } else {
            join_key(&[&root, &key])
        }
    };
    match (&storage.spec.s3, &storage.spec.filesystem) {
        (Some(s3), _) => {
            let k = under(s3.prefix.as_deref().unwrap_or(""), key);
            Ok(format!("s3://{}/{}", s3.bucket, with_manifest(&k)))
        }
        (None, Some(fs)) => {
            let root = join_key(&[STORAGE_MOUNT, &fs.path]);
            if key.starts_with('/') {
                let rel = join_key(&[key]);
                if rel != root && !rel.starts_with(&format!("{root}/")) {
                    return Err(JobBuildError::InvalidSource(format!(
                        "artifact path {key:?} is outside the storage's directory /{root}"
                    )));
                }
                Ok(format!("file:///{}", with_manifest(&rel)))
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
        (Some(s3), _) => {
            let prefix = join_key(&[s3.prefix.as_deref().unwrap_or("")]);
            let root = if prefix.is_empty() {
                format!("s3://{}/", s3.bucket)
            } else {
                format!("s3://{}/{prefix}/", s3.bucket)
            };
            location.starts_with(&root) && !location.split('/').any(|s| s == "..")
        }
        (None, Some(_)) => location.starts_with(&format!("file://{STORAGE_MOUNT}/")),
        (None, None) => false,
    }
}

/// Builds the restore Job of `run`, reading the manifest at `manifest_location` (see
/// [`manifest_location`]) from `storage`. `fallback_template` is the backup policy's Job
/// template, used when the run sets none.
pub fn build(
    run: &RestoreRun,
    storage: &BackupStorage,
    manifest_location: &str,
    pin: &ArtifactPin,
    fallback_template: Option<&JobTemplate>,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    let run_name = required(&run.metadata.name, "metadata.name")?;
    let namespace = required(&run.metadata.namespace, "metadata.namespace")?;
    let owner = run
        .controller_owner_ref(&())
        .ok_or(JobBuildError::MissingRunField("metadata.uid"))?;
    let spec = &run.spec;
    // The policy's template (or the defaults) decides image, ServiceAccount and security; the
    // run may only lay resources and scheduling over it.
    let base = fallback_template.cloned().unwrap_or_default();
    let template = match &spec.job_template {
        Some(run_template) => run_template.over(base),
        None => base,
    };
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
    // What the operator recorded: the agent refuses any other manifest before the target.
    push_pin(pin, &mut args);
    push_storage_access(storage, &mut args, &mut env, &mut volumes, &mut mounts)?;
    push_identity(
        spec.decryption.as_ref(),
        &mut args,
        &mut env,
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
    // Staged restores (issue 16): how the restore reaches the target, and the masking.
    let swap = spec.swap.clone().unwrap_or_default();
    push_flag(
        &mut args,
        "--staging",
        match swap.mode {
            None => "auto",
            Some(RestoreMode::Staged) => "staged",
            Some(RestoreMode::InPlace) => "in-place",
        },
    );
    if swap.terminate_sessions {
        args.push("--terminate-sessions".into());
    }
    if swap.keep_previous_seconds.is_some() {
        args.push("--keep-previous".into());
    }
    if let Some(masking) = &spec.masking {
        let json = serde_json::to_string(masking)
            .map_err(|e| JobBuildError::InvalidSource(format!("masking: {e}")))?;
        env.push(EnvVar {
            name: "DG_MASKING".into(),
            value: Some(json),
            ..Default::default()
        });
    }
    // Only allow-listed options reach the restore tool; the agent checks again.
    extra_args::check(extra_args::Tool::restore(target.engine), &target.extra_args)
        .map_err(|e| JobBuildError::ArgumentNotAllowed(e.to_string()))?;
    for extra in &target.extra_args {
        args.push(format!("--restore-arg={extra}"));
    }
    env.extend(agent_env());
    // The kubelet expands `$(VAR)`: user text must reach the agent literally.
    let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
    escape_env(&mut env);

    let labels = labels(
        COMPONENT_RESTORE,
        &run_name,
        (RESTORE_LABEL, &run_name),
        &template.labels,
    );
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let container = agent_container(&template, defaults, args, env, mounts);
    let pod = pod_spec(&template, Vec::new(), container, volumes);
    let backoff = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    job(
        JobShell {
            name: job_name(&run_name),
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: i32::try_from(backoff).unwrap_or(i32::MAX),
            active_deadline_seconds: spec.active_deadline_seconds,
            pod_failure_policy: pod_failure_policy(&exit::RESTORE_NON_RETRYABLE),
            ttl_seconds_after_finished: defaults.ttl_seconds_after_finished,
        },
        pod,
        defaults,
    )
}

/// The deterministic name of the Job that drops the previous target `run` kept.
pub fn cleanup_job_name(run: &str) -> String {
    bounded_name(run, "cleanup", MAX_LABEL_LEN)
}

/// Builds the Job that drops `previous`, the target a staged restore of `run` kept for
/// `swap.keepPreviousSeconds` (`dataguardian agent drop-previous`, which refuses any name a
/// swap does not make). It connects to the target as the restore did.
pub fn build_cleanup(
    run: &RestoreRun,
    previous: &str,
    fallback_template: Option<&JobTemplate>,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    let run_name = required(&run.metadata.name, "metadata.name")?;
    let namespace = required(&run.metadata.namespace, "metadata.namespace")?;
    let owner = run
        .controller_owner_ref(&())
        .ok_or(JobBuildError::MissingRunField("metadata.uid"))?;
    let spec = &run.spec;
    let base = fallback_template.cloned().unwrap_or_default();
    let template = match &spec.job_template {
        Some(run_template) => run_template.over(base),
        None => base,
    };
    let target = Source::from_spec(&spec.target)?;
    let mut args: Vec<String> = vec!["agent".into(), "drop-previous".into()];
    let mut env: Vec<EnvVar> = Vec::new();
    let (tmp, tmp_mount) = tmp_volume();
    push_flag(&mut args, "--engine", target.engine.as_str());
    match (&target.uri, &target.connection) {
        (Some(uri), _) => push_flag(&mut args, "--uri", uri),
        (None, Some(connection)) => env.push(secret_env("DG_URI", connection, false)),
        (None, None) => {}
    }
    if let Some(password) = &target.password {
        env.push(secret_env("DG_PASSWORD", password, false));
    }
    push_flag(&mut args, "--previous", previous);
    env.extend(agent_env());
    let args: Vec<String> = args.iter().map(|a| escape_dollar(a)).collect();
    escape_env(&mut env);
    let labels = labels(
        COMPONENT_RESTORE,
        &run_name,
        (RESTORE_LABEL, &run_name),
        &template.labels,
    );
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let container = agent_container(&template, defaults, args, env, vec![tmp_mount]);
    let pod = pod_spec(&template, Vec::new(), container, vec![tmp]);
    job(
        JobShell {
            name: cleanup_job_name(&run_name),
            namespace,
            labels,
            annotations,
            owner,
            backoff_limit: DEFAULT_BACKOFF_LIMIT as i32,
            active_deadline_seconds: Some(600),
            pod_failure_policy: pod_failure_policy(&exit::RESTORE_NON_RETRYABLE),
            ttl_seconds_after_finished: defaults.ttl_seconds_after_finished,
        },
        pod,
        defaults,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::shell::ImageAllowList;
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
            ttl_seconds_after_finished: 3600,
            ..JobDefaults::new("dg:test")
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
        let pin = ArtifactPin {
            manifest_sha256: Some("ab".repeat(32)),
            encryption: Some(crate::contract::ExpectedEncryption::Age {
                recipients: vec!["sha256:01".into(), "sha256:02".into()],
            }),
            scope: Some(crate::contract::BackupScope::Database),
        };
        let job = build(&run(RUN), &storage_s3(), loc, &pin, None, &defaults()).unwrap();
        let v = json(&job);
        let joined = args(&v).join(" ");
        assert!(
            joined.contains(&format!(
                "--manifest-sha256 {} --expect-encryption age --expect-recipient sha256:01 --expect-recipient sha256:02 --expect-scope Database",
                "ab".repeat(32)
            )),
            "the recorded pin reaches the agent: {joined}"
        );
        let job = build(
            &run(RUN),
            &storage_s3(),
            loc,
            &ArtifactPin::default(),
            None,
            &defaults(),
        )
        .unwrap();
        let v = json(&job);
        assert!(!args(&v).join(" ").contains("--manifest-sha256"));
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
            serde_json::json!([2, 11, 13, 14, 16, 17, 18])
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
            &build(
                &run(&odd),
                &storage_s3(),
                loc,
                &ArtifactPin::default(),
                None,
                &defaults(),
            )
            .unwrap(),
        ));
        assert!(a.contains(&"shop$$(HOME)".to_string()), "{a:?}");
        // Deterministic.
        assert_eq!(
            job,
            build(
                &run(RUN),
                &storage_s3(),
                loc,
                &ArtifactPin::default(),
                None,
                &defaults()
            )
            .unwrap()
        );
    }

    /// `decryption.kms` gives the restore Job KMS `Decrypt` (`--kms`, region, endpoint, its own
    /// credentials) with or without the identity Secret; the agent's parser accepts the flags.
    #[test]
    fn decryption_by_kms_reaches_the_agent_with_or_without_an_identity() {
        use clap::Parser;
        let loc = "s3://shop-backups/shop/nightly/r1/manifest.json";
        let kms_only = RUN.replace(
            "decryption: {identitySecretRef: {name: backup-age-identity, key: identity}}",
            "decryption: {kms: {region: eu-west-1, endpoint: \"http://127.0.0.1:4566\", credentialsSecretRef: {name: kms-restore}}}",
        );
        let v = json(
            &build(
                &run(&kms_only),
                &storage_s3(),
                loc,
                &ArtifactPin::default(),
                None,
                &defaults(),
            )
            .unwrap(),
        );
        let a = args(&v);
        let joined = a.join(" ");
        assert!(
            joined.contains("--kms --kms-region eu-west-1 --kms-endpoint http://127.0.0.1:4566"),
            "{joined}"
        );
        assert!(!joined.contains("--identity-file"), "{joined}");
        let pod = &v["spec"]["template"]["spec"];
        assert!(!pod["volumes"].to_string().contains("identity"));
        let env = pod["containers"][0]["env"].as_array().unwrap();
        let id = env
            .iter()
            .find(|e| e["name"] == "DG_KMS_AWS_ACCESS_KEY_ID")
            .unwrap();
        assert_eq!(id["valueFrom"]["secretKeyRef"]["name"], "kms-restore");
        assert!(id["value"].is_null());
        let mut argv: Vec<String> =
            serde_json::from_value(pod["containers"][0]["command"].clone()).unwrap();
        argv.extend(a.iter().map(|x| x.replace("$$", "$")));
        let cli = crate::cli::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("the agent refuses {argv:?}: {e}"));
        match cli.command {
            crate::cli::Command::Agent(agent) => match agent.command {
                crate::cli::agent::AgentCommand::Restore(r) => {
                    assert!(r.kms.use_kms);
                    assert!(r.identity_file.is_none());
                }
                other => panic!("not a restore: {other:?}"),
            },
            _ => panic!("not an agent command"),
        }

        // Both: the identity is mounted and KMS is there as the other way in.
        let both = RUN.replace(
            "decryption: {identitySecretRef: {name: backup-age-identity, key: identity}}",
            "decryption: {identitySecretRef: {name: backup-age-identity, key: identity}, kms: {}}",
        );
        let joined = args(&json(
            &build(
                &run(&both),
                &storage_s3(),
                loc,
                &ArtifactPin::default(),
                None,
                &defaults(),
            )
            .unwrap(),
        ))
        .join(" ");
        assert!(joined.contains("--kms"), "{joined}");
        assert!(
            joined.contains("--identity-file /etc/dataguardian/identity/identity"),
            "{joined}"
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
            service_account_name: Some("backup-irsa".into()),
            priority_class_name: Some("low".into()),
            ..Default::default()
        };
        let allowing = JobDefaults {
            allowed_images: ImageAllowList::new(["custom:1"]),
            ..defaults()
        };
        // The run lays only resources and scheduling over the policy's template.
        let yaml = yaml.replace(
            "  backoffLimit: 0",
            "  backoffLimit: 0\n  jobTemplate: {resources: {limits: {memory: 2Gi}}, nodeSelector: {pool: restore}}",
        );
        let job = build(
            &run(&yaml),
            &storage_fs(),
            "file:///backup/shop/r1/manifest.json",
            &ArtifactPin::default(),
            Some(&tpl),
            &allowing,
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
        assert_eq!(pod["serviceAccountName"], "backup-irsa");
        assert_eq!(pod["priorityClassName"], "low");
        assert_eq!(pod["nodeSelector"], serde_json::json!({"pool": "restore"}));
        assert_eq!(
            pod["containers"][0]["resources"],
            serde_json::json!({"limits": {"memory": "2Gi"}})
        );
        // The policy's image must be on the allow-list like any other.
        let err = build(
            &run(&yaml),
            &storage_fs(),
            "file:///backup/shop/r1/manifest.json",
            &ArtifactPin::default(),
            Some(&tpl),
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "ImageNotAllowed");
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
    fn restore_args_off_the_allow_list_are_refused_before_a_job_is_built() {
        let loc = "s3://shop-backups/shop/nightly/r1/manifest.json";
        // --file would write the decrypted dump to a file; --clean would bypass overwrite.
        for arg in [
            "--file=/tmp/x",
            "--clean",
            "--superuser=postgres",
            "--use-list=/tmp/l",
        ] {
            let yaml = RUN.replace(
                "database: shop_copy, ",
                &format!("database: shop_copy, extraArgs: [\"{arg}\"], "),
            );
            let err = build(
                &run(&yaml),
                &storage_s3(),
                loc,
                &ArtifactPin::default(),
                None,
                &defaults(),
            )
            .unwrap_err();
            assert_eq!(err.reason(), "ArgumentNotAllowed", "{arg}: {err}");
        }
        let yaml = RUN.replace(
            "database: shop_copy, ",
            "database: shop_copy, extraArgs: [\"--no-owner\"], ",
        );
        let job = build(
            &run(&yaml),
            &storage_s3(),
            loc,
            &ArtifactPin::default(),
            None,
            &defaults(),
        )
        .unwrap();
        assert!(args(&json(&job)).contains(&"--restore-arg=--no-owner".to_string()));
    }

    #[test]
    fn non_retryable_exit_codes_match_the_agent() {
        use crate::agent::error::AgentError;
        let codes: Vec<i32> = [
            AgentError::Config(String::new()),
            AgentError::Target(String::new()),
            AgentError::Integrity(String::new()),
            AgentError::Crypto(String::new()),
            AgentError::ClientTooOld(String::new()),
            AgentError::StorageRefused(String::new()),
            AgentError::KeyUnavailable(String::new()),
        ]
        .iter()
        .map(|e| i32::from(e.exit_code()))
        .collect();
        assert_eq!(codes, exit::RESTORE_NON_RETRYABLE);
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
        // Issue 11, finding 9: a key outside the storage's prefix stays inside it.
        assert_eq!(
            manifest_location(&s3, "other-tenant/nightly/r1/manifest.json").unwrap(),
            "s3://shop-backups/shop/other-tenant/nightly/r1/manifest.json"
        );
        assert_eq!(
            manifest_location(&s3, "/nightly/r1").unwrap(),
            "s3://shop-backups/shop/nightly/r1/manifest.json"
        );
        assert_eq!(
            manifest_location(&s3, "shopping/r1").unwrap(),
            "s3://shop-backups/shop/shopping/r1/manifest.json",
            "the prefix is matched by whole segments"
        );
        assert!(!location_matches_storage(
            &s3,
            "s3://shop-backups/other-tenant/r1/manifest.json"
        ));
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
        assert!(
            manifest_location(&fs, "/backup/other-tenant/r1/manifest.json").is_err(),
            "an absolute path stays under the storage's path"
        );
        assert!(location_matches_storage(
            &s3,
            "s3://shop-backups/shop/x/manifest.json"
        ));
        assert!(!location_matches_storage(
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
            &ArtifactPin::default(),
            None,
            &defaults(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidPolicy");
    }

    #[test]
    fn swap_and_masking_reach_the_agent_literally() {
        let build_args = |extra: &str| {
            let job = build(
                &run(&format!("{RUN}{extra}")),
                &storage_s3(),
                "s3://b/k/manifest.json",
                &ArtifactPin::default(),
                None,
                &defaults(),
            )
            .unwrap();
            let v = json(&job);
            let env: Vec<Value> = serde_json::from_value(
                v["spec"]["template"]["spec"]["containers"][0]["env"].clone(),
            )
            .unwrap();
            let masking = env
                .iter()
                .find(|e| e["name"] == "DG_MASKING")
                .map(|e| e["value"].as_str().unwrap().to_string());
            (args(&v).join(" "), masking)
        };
        let (plain, masking) = build_args("");
        assert!(
            plain.contains("--verify-first --create-database --staging auto"),
            "{plain}"
        );
        assert!(!plain.contains("--terminate-sessions") && !plain.contains("--keep-previous"));
        assert_eq!(masking, None);
        let (staged, masking) = build_args(
            r#"  swap: {mode: Staged, terminateSessions: true, keepPreviousSeconds: 3600}
  masking:
    rules:
      - {table: public.customers, columns: [{name: email, expression: "'u' || id || '@example.invalid'"}]}
      - {sql: "UPDATE t SET x = '$(HOME)'"}
    guard: SELECT true
"#,
        );
        assert!(
            staged.contains("--staging staged --terminate-sessions --keep-previous"),
            "{staged}"
        );
        let masking = masking.unwrap();
        // The kubelet would expand $(HOME): it is escaped.
        assert!(masking.contains("$$(HOME)"), "{masking}");
        let parsed: crate::api::restore_run::MaskingSpec =
            serde_json::from_str(&masking.replace("$$(", "$(")).unwrap();
        assert_eq!(parsed.rules.len(), 2);
        assert_eq!(parsed.guard.as_deref(), Some("SELECT true"));
        let (in_place, _) = build_args("  swap: {mode: InPlace}\n");
        assert!(in_place.contains("--verify-first") && in_place.contains("--staging in-place"));
    }

    #[test]
    fn the_cleanup_job_drops_only_the_previous_target() {
        let job = build_cleanup(
            &run(RUN),
            "shop_copy_dgprev_20261207083005",
            None,
            &defaults(),
        )
        .unwrap();
        let v = json(&job);
        assert_eq!(v["metadata"]["name"], "copy-1-cleanup");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "RestoreRun");
        let a = args(&v).join(" ");
        assert!(
            a.starts_with("agent drop-previous --engine postgres")
                && a.ends_with("--previous shop_copy_dgprev_20261207083005"),
            "{a}"
        );
        assert!(!a.contains("--database"), "{a}");
        let env = v["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains("DG_PASSWORD") && env.contains("staging-creds"),
            "{env}"
        );
    }
}
