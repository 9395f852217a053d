//! The Job shell every kind builder uses: the agent container, the Pod spec, labels, the
//! restricted security contexts, `/tmp`, environment helpers, the pod failure policy, the
//! operator-wide defaults and the build errors. Kind builders (`backup_job`, `restore_job`,
//! `validation_job`, `prune_job`) use this module and `source.rs`, never each other.

use std::collections::BTreeMap;

use k8s_openapi::DeepMerge;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretKeySelector as K8sSecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::common::{JobTemplate, SecretKeySelector};
use crate::contract::{
    AGENT_CONTAINER, APP_NAME, COMPONENT_LABEL, INSTANCE_LABEL, LOG_FORMAT_ENV, LOG_FORMAT_JSON,
    MANAGED_BY_LABEL, NAME_LABEL, OPERATOR_NAME, PART_OF_LABEL, TERMINATION_LOG,
    TERMINATION_LOG_ENV,
};
use crate::egress::{ENV_ALLOW_CIDRS, EgressPolicy};

use super::naming::label_value;

/// Where a filesystem storage's claim is mounted.
pub(crate) const STORAGE_MOUNT: &str = "/backup";

/// UID/GID the agent runs as when the template does not say otherwise (distroless `nonroot`).
pub(crate) const NONROOT_ID: i64 = 65532;

/// Operator-wide inputs of the Job builders (from the operator's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDefaults {
    /// Agent image when the policy's Job template sets none (the operator's own image).
    pub agent_image: String,
    /// `ttlSecondsAfterFinished` of the Jobs (how long `kubectl logs` keeps working).
    pub ttl_seconds_after_finished: i32,
    /// The operator's egress policy, handed to every agent ([`ENV_ALLOW_CIDRS`]) so that a
    /// Job reaches no more than the operator itself may.
    pub egress: EgressPolicy,
}

impl From<&JobDefaults> for JobDefaults {
    fn from(defaults: &JobDefaults) -> Self {
        defaults.clone()
    }
}

/// Why a Job cannot be built. These are spec problems: they wait for a change, not a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobBuildError {
    /// The BackupRun lacks a field the API server always sets.
    #[error("the BackupRun is missing {0}")]
    MissingRunField(&'static str),
    /// The policy's source has no engine block (or no host/user without a connection Secret).
    #[error("the policy's source is incomplete: {0}")]
    InvalidSource(String),
    /// The storage sets neither `s3` nor `filesystem`.
    #[error("the BackupStorage {0} sets neither s3 nor filesystem")]
    NoStorageBackend(String),
    /// The policy's `pathTemplate` uses an unknown placeholder or renders an invalid key.
    #[error("invalid pathTemplate {template:?}: {detail}")]
    InvalidPathTemplate {
        /// The template.
        template: String,
        /// What is wrong.
        detail: String,
    },
}

/// A metadata field the API server always sets, or the build error that names it.
pub(crate) fn required(
    value: &Option<String>,
    field: &'static str,
) -> Result<String, JobBuildError> {
    value.clone().ok_or(JobBuildError::MissingRunField(field))
}

impl JobBuildError {
    /// A CamelCase reason for status and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            JobBuildError::MissingRunField(_) => "InvalidRun",
            JobBuildError::InvalidSource(_) => "InvalidPolicy",
            JobBuildError::NoStorageBackend(_) => "InvalidStorage",
            JobBuildError::InvalidPathTemplate { .. } => "InvalidPathTemplate",
        }
    }
}

pub(crate) fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("250m".into())),
            ("memory".to_owned(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("1Gi".into()),
        )])),
        ..Default::default()
    }
}

/// The restricted pod security context, with the template's fields merged over it.
pub(crate) fn pod_security_context(overrides: Option<PodSecurityContext>) -> PodSecurityContext {
    let mut context = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT_ID),
        run_as_group: Some(NONROOT_ID),
        fs_group: Some(NONROOT_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    };
    if let Some(overrides) = overrides {
        context.merge_from(overrides);
    }
    context
}

/// The restricted container security context, with the template's fields merged over it.
pub(crate) fn container_security_context(overrides: Option<SecurityContext>) -> SecurityContext {
    let mut context = SecurityContext {
        run_as_non_root: Some(true),
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
    };
    if let Some(overrides) = overrides {
        context.merge_from(overrides);
    }
    context
}

/// Escapes `$` so that the kubelet's `$(VAR)` expansion leaves the text as written.
pub(crate) fn escape_dollar(text: &str) -> String {
    text.replace('$', "$$")
}

pub(crate) fn push_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    args.push(flag.to_owned());
    args.push(value.to_owned());
}

pub(crate) fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

pub(crate) fn secret_env(name: &str, selector: &SecretKeySelector, optional: bool) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(K8sSecretKeySelector {
                name: selector.name.clone(),
                key: selector.key.clone(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
    }
}

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
        plain_env(TERMINATION_LOG_ENV, TERMINATION_LOG),
        plain_env(LOG_FORMAT_ENV, LOG_FORMAT_JSON),
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
            (NAME_LABEL, APP_NAME.to_owned()),
            (INSTANCE_LABEL, label_value(instance)),
            (COMPONENT_LABEL, component.to_owned()),
            (MANAGED_BY_LABEL, OPERATOR_NAME.to_owned()),
            (PART_OF_LABEL, APP_NAME.to_owned()),
            (own.0, label_value(own.1)),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    labels
}

/// `env` plus the egress policy, last, replacing any earlier value of the same name.
fn with_egress(mut env: Vec<EnvVar>, egress: &EgressPolicy) -> Vec<EnvVar> {
    env.retain(|e| e.name != ENV_ALLOW_CIDRS);
    env.push(plain_env(ENV_ALLOW_CIDRS, &egress.to_list()));
    env
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
        env: Some(with_egress(env, &defaults.egress)),
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
