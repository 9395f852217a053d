//! Builds the `batch/v1` Job of one RestoreValidation: a Pod holding a throwaway sandbox
//! database as a native sidecar (an init container with `restartPolicy: Always`, Kubernetes
//! 1.29+) and the agent container running `dataguardian agent validate`, which restores the
//! artifact into the sandbox and runs the checks. When the agent exits, Kubernetes stops the
//! sidecar and the sandbox's `emptyDir` volumes go with the Pod: nothing outlives the
//! validation.
//!
//! The sandbox is the official image of the backup's engine and major version (`postgres:15`,
//! `mariadb:10.11`, `mysql:8.0`) unless `spec.sandbox.image` says otherwise. It listens on the
//! Pod's own IP (`status.podIP`, the address the agent beside it connects to) and its superuser
//! password is random and known only inside the Pod. Its password is random, generated
//! inside the Pod by a first init container into a memory-backed `emptyDir` that only this Pod
//! mounts: no Secret object is created, the operator needs no write access to Secrets, and the
//! password dies with the Pod. The sandbox reads it through the images' `*_PASSWORD_FILE`
//! convention, the agent through `--password-file`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use kube::Resource;

use crate::api::common::{Engine, JobTemplate};
use crate::api::restore_validation::{RowCountsCheck, Sandbox, ValidationCheck};
use crate::api::{BackupStorage, RestoreValidation};
use crate::contract::{COMPONENT_VALIDATION, VALIDATION_LABEL, exit};

use super::naming::{MAX_LABEL_LEN, bounded_name};
use super::shell::{
    JobBuildError, JobDefaults, JobShell, agent_container, agent_env, escape_dollar, escape_env,
    job, labels, plain_env, pod_failure_policy, pod_spec, push_flag, required, tmp_volume,
};
use super::source::{push_identity, push_storage_access};

/// Name of the sandbox sidecar container.
pub const SANDBOX_CONTAINER: &str = "sandbox";
/// Name of the init container that generates the sandbox password.
pub const KEYGEN_CONTAINER: &str = "sandbox-password";
/// Where the sandbox password file lives (a memory-backed emptyDir).
pub const PASSWORD_DIR: &str = "/run/dataguardian-sandbox";
/// The sandbox password file.
pub const PASSWORD_FILE: &str = "/run/dataguardian-sandbox/password";
/// The keygen script: 24 random bytes as hex, readable by the pod's group only.
const KEYGEN_SCRIPT: &str = "umask 027 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /run/dataguardian-sandbox/password";
/// Default upper bound on a validation's wall time when the spec sets none.
pub const DEFAULT_DEADLINE_SECONDS: i64 = 2 * 3600;
/// UID/GID of the `postgres`/`mysql` user in the official database images.
const DB_IMAGE_UID: i64 = 999;

/// The deterministic name of the validation Job of `validation`.
pub fn job_name(validation: &str) -> String {
    bounded_name(validation, "validate", MAX_LABEL_LEN)
}

/// The default sandbox image for a backup of `engine` taken from a server reporting
/// `server_version`: the official image of the same major version. MariaDB and MySQL are told
/// apart by the version string (`10.11.6-MariaDB-…`).
pub fn sandbox_image(
    engine: Engine,
    server_version: Option<&str>,
) -> Result<String, JobBuildError> {
    let version = server_version
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            JobBuildError::InvalidSource(
                "the backup records no server version: set spec.sandbox.image".into(),
            )
        })?;
    let numeric: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or("")
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect();
    let bad = || {
        JobBuildError::InvalidSource(format!(
            "cannot derive a sandbox image from server version {version:?}: set spec.sandbox.image"
        ))
    };
    match engine {
        Engine::Postgres => match numeric.as_slice() {
            // Before 10 the major version had two parts (9.6).
            [major, minor, ..] if *major < 10 => Ok(format!("postgres:{major}.{minor}")),
            [major, ..] => Ok(format!("postgres:{major}")),
            [] => Err(bad()),
        },
        Engine::Mysql => {
            let [major, minor, ..] = numeric.as_slice() else {
                return Err(bad());
            };
            let flavour = if version.to_ascii_lowercase().contains("mariadb") {
                "mariadb"
            } else {
                "mysql"
            };
            Ok(format!("{flavour}:{major}.{minor}"))
        }
    }
}

/// The checks to run: the spec's, or a single `rowCounts` check by default.
pub fn effective_checks(checks: &[ValidationCheck]) -> Vec<ValidationCheck> {
    if checks.is_empty() {
        vec![ValidationCheck {
            name: Some("rowCounts".into()),
            row_counts: Some(RowCountsCheck::default()),
            sql: None,
            expect: None,
            schema: None,
            database: None,
        }]
    } else {
        checks.to_vec()
    }
}

/// What the validation Job needs besides the RestoreValidation itself.
#[derive(Debug, Clone)]
pub struct ValidationInputs<'a> {
    /// Storage holding the artifact.
    pub storage: &'a BackupStorage,
    /// The manifest's location (`s3://…/manifest.json`, `file:///backup/…/manifest.json`).
    pub manifest_location: &'a str,
    /// What the BackupRun recorded (manifest digest, encryption, scope): the agent refuses any
    /// other manifest.
    pub pin: &'a crate::contract::ArtifactPin,
    /// Engine of the backup.
    pub engine: Engine,
    /// Server version recorded in the backup (picks the sandbox image).
    pub server_version: Option<&'a str>,
    /// Sandbox settings when the validation sets none (the policy's `validation.sandbox`).
    pub fallback_sandbox: Option<&'a Sandbox>,
    /// Job template (the policy's), for scheduling and the agent image.
    pub template: Option<&'a JobTemplate>,
}

fn restricted(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// `POD_IP` from the downward API: the sandbox listens on it, the agent connects to it.
fn pod_ip_env() -> EnvVar {
    EnvVar {
        name: "POD_IP".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn password_mount(read_only: bool) -> VolumeMount {
    VolumeMount {
        name: "sandbox-password".into(),
        mount_path: PASSWORD_DIR.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// The sandbox sidecar, its volumes, and the agent's connection URI to it.
fn sandbox_container(
    engine: Engine,
    image: String,
    sandbox: Option<&Sandbox>,
) -> (Vec<Container>, Vec<Volume>, String) {
    let (env, args, mounts, volumes, uri) = match engine {
        Engine::Postgres => (
            vec![
                pod_ip_env(),
                plain_env("POSTGRES_PASSWORD_FILE", PASSWORD_FILE),
                plain_env("POSTGRES_USER", "postgres"),
                plain_env("PGDATA", "/var/lib/postgresql/data/pgdata"),
            ],
            vec![
                "postgres".into(),
                "-c".into(),
                "listen_addresses=$(POD_IP)".into(),
            ],
            vec![
                mount("sandbox-data", "/var/lib/postgresql/data"),
                mount("sandbox-run", "/var/run/postgresql"),
                mount("sandbox-tmp", "/tmp"),
                password_mount(true),
            ],
            vec![
                empty_dir("sandbox-data"),
                empty_dir("sandbox-run"),
                empty_dir("sandbox-tmp"),
            ],
            "postgresql://postgres@$(POD_IP):5432/postgres".to_owned(),
        ),
        Engine::Mysql => {
            let mariadb = image.contains("mariadb");
            let password_var = if mariadb {
                "MARIADB_ROOT_PASSWORD_FILE"
            } else {
                "MYSQL_ROOT_PASSWORD_FILE"
            };
            (
                vec![pod_ip_env(), plain_env(password_var, PASSWORD_FILE)],
                vec!["--bind-address=$(POD_IP)".into()],
                vec![
                    mount("sandbox-data", "/var/lib/mysql"),
                    mount("sandbox-run", "/run/mysqld"),
                    mount("sandbox-tmp", "/tmp"),
                    password_mount(true),
                ],
                vec![
                    empty_dir("sandbox-data"),
                    empty_dir("sandbox-run"),
                    empty_dir("sandbox-tmp"),
                ],
                "mysql://root@$(POD_IP):3306/".to_owned(),
            )
        }
    };
    let keygen = Container {
        name: KEYGEN_CONTAINER.into(),
        image: Some(image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), KEYGEN_SCRIPT.into()]),
        security_context: Some(restricted(DB_IMAGE_UID)),
        volume_mounts: Some(vec![password_mount(false)]),
        ..Default::default()
    };
    let mut volumes = volumes;
    volumes.push(Volume {
        name: "sandbox-password".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "1Mi".into(),
            )),
            ..Default::default()
        }),
        ..Default::default()
    });
    let container = Container {
        name: SANDBOX_CONTAINER.into(),
        image: Some(image),
        args: Some(args),
        env: Some(env),
        // A native sidecar: starts before the agent, runs beside it, stops after it.
        restart_policy: Some("Always".into()),
        resources: sandbox.and_then(|s| s.resources.clone()),
        security_context: Some(restricted(DB_IMAGE_UID)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    (vec![keygen, container], volumes, uri)
}

/// Builds the validation Job of `validation`.
pub fn build(
    validation: &RestoreValidation,
    inputs: &ValidationInputs<'_>,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    let name = required(&validation.metadata.name, "metadata.name")?;
    let namespace = required(&validation.metadata.namespace, "metadata.namespace")?;
    let owner = validation
        .controller_owner_ref(&())
        .ok_or(JobBuildError::MissingRunField("metadata.uid"))?;
    let spec = &validation.spec;
    let template = inputs.template.cloned().unwrap_or_default();
    let sandbox = spec.sandbox.as_ref().or(inputs.fallback_sandbox);
    let image = match sandbox.and_then(|s| s.image.clone()) {
        Some(image) => image,
        // The default image follows the operator's registry; one the user named is used as is.
        None => crate::jobs::shell::with_registry(
            &sandbox_image(inputs.engine, inputs.server_version)?,
            defaults.image_registry.as_deref(),
        ),
    };
    let (init, mut volumes, uri) = sandbox_container(inputs.engine, image, sandbox);

    let mut args: Vec<String> = vec!["agent".into(), "validate".into()];
    let mut env: Vec<EnvVar> = vec![pod_ip_env(), plain_env("DG_PASSWORD_FILE", PASSWORD_FILE)];
    let (tmp, tmp_mount) = tmp_volume();
    volumes.push(tmp);
    let mut mounts = vec![tmp_mount, password_mount(true)];
    push_flag(&mut args, "--engine", inputs.engine.as_str());
    push_flag(&mut args, "--uri", &uri);
    push_flag(&mut args, "--from", inputs.manifest_location);
    super::source::push_pin(inputs.pin, &mut args);
    push_storage_access(
        inputs.storage,
        &mut args,
        &mut env,
        &mut volumes,
        &mut mounts,
    )?;
    push_identity(
        spec.decryption.as_ref(),
        &mut args,
        &mut env,
        &mut volumes,
        &mut mounts,
    );
    let checks = serde_json::to_string(&effective_checks(&spec.checks))
        .map_err(|e| JobBuildError::InvalidSource(format!("cannot encode the checks: {e}")))?;
    env.push(plain_env("DG_CHECKS", &checks));
    env.extend(agent_env());
    // The kubelet expands `$(VAR)`: only the sandbox URI uses it (`$(POD_IP)`); user text (the
    // checks' SQL, paths) must reach the agent literally.
    let args: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && args[i - 1] == "--uri" {
                a.clone()
            } else {
                escape_dollar(a)
            }
        })
        .collect();
    escape_env(&mut env);

    let labels = labels(
        COMPONENT_VALIDATION,
        &name,
        (VALIDATION_LABEL, &name),
        &template.labels,
    );
    let annotations = (!template.annotations.is_empty()).then(|| template.annotations.clone());
    let container = agent_container(&template, defaults, args, env, mounts);
    let pod = pod_spec(&template, init, container, volumes);
    job(
        JobShell {
            name: job_name(&name),
            namespace,
            labels,
            annotations,
            owner,
            // A verdict (passed or failed) is final; the sandbox is fresh on every Pod anyway.
            backoff_limit: 0,
            active_deadline_seconds: Some(
                spec.active_deadline_seconds
                    .unwrap_or(DEFAULT_DEADLINE_SECONDS),
            ),
            // Evictions do not count as a verdict (an evicted Pod is retried).
            pod_failure_policy: pod_failure_policy(&exit::VALIDATION_NON_RETRYABLE),
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

    fn validation(yaml: &str) -> RestoreValidation {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    const RV: &str = r#"
apiVersion: dataguardian.io/v1alpha1
kind: RestoreValidation
metadata: {name: check-1, namespace: shop, uid: 5a0c2a9e-1111-4f3e-9d6a-1f2e3d4c5b6a}
spec:
  backupRunRef: {name: nightly-1}
  decryption: {identitySecretRef: {name: backup-age-identity, key: identity}}
  checks:
    - rowCounts: {}
    - sql: "SELECT count(*) FROM orders"
      expect: {min: 1}
"#;

    fn storage() -> BackupStorage {
        serde_yaml::from_str(
            r#"
apiVersion: dataguardian.io/v1alpha1
kind: BackupStorage
metadata: {name: main, namespace: shop}
spec:
  s3: {bucket: shop-backups, region: us-east-1, credentialsSecretRef: {name: s3-creds}}
"#,
        )
        .unwrap()
    }

    fn defaults() -> JobDefaults {
        JobDefaults {
            ttl_seconds_after_finished: 600,
            ..JobDefaults::new("dg:test")
        }
    }

    #[test]
    fn sandbox_images_follow_engine_and_major_version() {
        let img = |e, v| sandbox_image(e, Some(v)).unwrap();
        assert_eq!(img(Engine::Postgres, "15.8"), "postgres:15");
        assert_eq!(
            img(Engine::Postgres, "15.8 (Debian 15.8-1.pgdg120+1)"),
            "postgres:15"
        );
        assert_eq!(img(Engine::Postgres, "16beta1"), "postgres:16");
        assert_eq!(img(Engine::Postgres, "9.6.24"), "postgres:9.6");
        assert_eq!(
            img(Engine::Mysql, "10.11.6-MariaDB-0+deb12u1"),
            "mariadb:10.11"
        );
        assert_eq!(img(Engine::Mysql, "8.0.36"), "mysql:8.0");
        assert!(sandbox_image(Engine::Postgres, None).is_err());
        assert!(sandbox_image(Engine::Mysql, Some("eight")).is_err());
    }

    #[test]
    fn postgres_validation_job_has_a_native_sidecar_sandbox() {
        let rv = validation(RV);
        let inputs = ValidationInputs {
            storage: &storage(),
            manifest_location: "s3://shop-backups/shop/nightly/r1/manifest.json",
            pin: &crate::contract::ArtifactPin {
                manifest_sha256: Some("cd".repeat(32)),
                encryption: Some(crate::contract::ExpectedEncryption::None),
                scope: Some(crate::contract::BackupScope::AllDatabases),
            },
            engine: Engine::Postgres,
            server_version: Some("15.8"),
            fallback_sandbox: None,
            template: None,
        };
        // Behind a mirror, the default sandbox image comes from it too.
        let mirrored = JobDefaults {
            image_registry: Some("registry.corp/mirror".into()),
            allowed_images: crate::jobs::shell::ImageAllowList::new(["*"]),
            ..defaults()
        };
        let job = build(&rv, &inputs, &mirrored).unwrap();
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(
            v["spec"]["template"]["spec"]["initContainers"][1]["image"],
            "registry.corp/mirror/library/postgres:15"
        );
        let job = build(&rv, &inputs, &defaults()).unwrap();
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["metadata"]["name"], "check-1-validate");
        let agent_args: Vec<String> =
            serde_json::from_value(v["spec"]["template"]["spec"]["containers"][0]["args"].clone())
                .unwrap();
        assert!(
            agent_args.join(" ").contains(&format!(
                "--manifest-sha256 {} --expect-encryption none --expect-scope AllDatabases",
                "cd".repeat(32)
            )),
            "validations verify the recorded pin too: {agent_args:?}"
        );
        assert_eq!(
            v["metadata"]["ownerReferences"][0]["kind"],
            "RestoreValidation"
        );
        assert_eq!(v["spec"]["backoffLimit"], 0);
        let rules = v["spec"]["podFailurePolicy"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["action"], "Ignore");
        assert_eq!(v["spec"]["activeDeadlineSeconds"], DEFAULT_DEADLINE_SECONDS);
        let pod = &v["spec"]["template"]["spec"];
        let keygen = &pod["initContainers"][0];
        assert_eq!(keygen["name"], KEYGEN_CONTAINER);
        assert!(
            keygen["restartPolicy"].is_null(),
            "the keygen runs to completion first"
        );
        let sidecar = &pod["initContainers"][1];
        assert_eq!(sidecar["name"], SANDBOX_CONTAINER);
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["image"], "postgres:15");
        assert!(
            sidecar["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "listen_addresses=$(POD_IP)")
        );
        assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            sidecar["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        let pw = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POSTGRES_PASSWORD_FILE")
            .unwrap();
        assert_eq!(pw["value"], PASSWORD_FILE);
        let vol = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "sandbox-password")
            .unwrap();
        assert_eq!(vol["emptyDir"]["medium"], "Memory");
        // No Secret, no literal password anywhere in the Job.
        assert!(
            !serde_json::to_string(&job)
                .unwrap()
                .contains("secretKeyRef\":{\"key\":\"password")
        );
        let agent = &pod["containers"][0];
        let args: Vec<String> = serde_json::from_value(agent["args"].clone()).unwrap();
        let joined = args.join(" ");
        assert!(joined.starts_with("agent validate --engine postgres --uri postgresql://postgres@$(POD_IP):5432/postgres --from s3://shop-backups/shop/nightly/r1/manifest.json"), "{joined}");
        assert!(joined.contains("--identity-file /etc/dataguardian/identity/identity"));
        let env = agent["env"].as_array().unwrap();
        let dg_pw = env
            .iter()
            .find(|e| e["name"] == "DG_PASSWORD_FILE")
            .unwrap();
        assert_eq!(dg_pw["value"], PASSWORD_FILE);
        let checks = env.iter().find(|e| e["name"] == "DG_CHECKS").unwrap();
        let parsed: Vec<ValidationCheck> =
            serde_json::from_str(checks["value"].as_str().unwrap()).unwrap();
        assert_eq!(parsed, rv.spec.checks);
        assert_eq!(
            job,
            build(&rv, &inputs, &defaults()).unwrap(),
            "deterministic"
        );
        // SQL with `$` survives the kubelet's $(VAR) expansion; the sandbox URI keeps $(POD_IP).
        let dollar =
            validation(&RV.replace("SELECT count(*) FROM orders", "SELECT $$a$$ || $(HOME)"));
        let v = serde_json::to_value(build(&dollar, &inputs, &defaults()).unwrap()).unwrap();
        let env = v["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone();
        let checks = env.iter().find(|e| e["name"] == "DG_CHECKS").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(checks.contains("$$$$a$$$$ || $$(HOME)"), "{checks}");
    }

    #[test]
    fn image_override_mariadb_and_default_checks() {
        let yaml = RV
            .replace("  checks:\n    - rowCounts: {}\n    - sql: \"SELECT count(*) FROM orders\"\n      expect: {min: 1}\n", "  sandbox: {image: \"registry.local/mariadb:10.11\"}\n");
        let rv = validation(&yaml);
        assert!(rv.spec.checks.is_empty());
        let inputs = ValidationInputs {
            storage: &storage(),
            manifest_location: "s3://shop-backups/x/manifest.json",
            pin: &crate::contract::ArtifactPin::default(),
            engine: Engine::Mysql,
            server_version: None,
            fallback_sandbox: None,
            template: None,
        };
        // A sandbox image off the allow-list could "verify" any backup: refused.
        let err = build(&rv, &inputs, &defaults()).unwrap_err();
        assert_eq!(
            err,
            JobBuildError::ImageNotAllowed("registry.local/mariadb:10.11".into())
        );
        let allowing = JobDefaults {
            allowed_images: ImageAllowList::new(["dg:test", "registry.local/mariadb:*"]),
            ..defaults()
        };
        let v = serde_json::to_value(build(&rv, &inputs, &allowing).unwrap()).unwrap();
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(
            pod["initContainers"][1]["image"],
            "registry.local/mariadb:10.11"
        );
        let env = pod["initContainers"][1]["env"].as_array().unwrap();
        assert!(
            env.iter()
                .any(|e| e["name"] == "MARIADB_ROOT_PASSWORD_FILE")
        );
        let agent_env = pod["containers"][0]["env"].as_array().unwrap();
        let checks = agent_env.iter().find(|e| e["name"] == "DG_CHECKS").unwrap();
        let parsed: Vec<ValidationCheck> =
            serde_json::from_str(checks["value"].as_str().unwrap()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert!(parsed[0].row_counts.is_some());
        // Without an override and without a recorded version the build refuses clearly.
        let rv = validation(RV);
        assert!(build(&rv, &inputs, &defaults()).is_err());
    }
}
