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
    AppArmorProfile, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SELinuxOptions,
    SeccompProfile, SecretKeySelector as K8sSecretKeySelector, SecurityContext, Volume,
    VolumeMount, WindowsSecurityContextOptions,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::common::{
    ALLOWED_ADDED_CAPABILITIES, ALLOWED_SELINUX_TYPES, CONFINEMENT_ANNOTATION_PREFIXES,
    JobTemplate, SecretKeySelector,
};
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
    /// The images a Job may run (every container, init containers and the sandbox included).
    pub allowed_images: ImageAllowList,
    /// The registry replacing that of the default sandbox images ([`with_registry`]); the
    /// agent image above is already rewritten.
    pub image_registry: Option<String>,
}

impl JobDefaults {
    /// Defaults with `agent_image`, a TTL of one day and the default allow-list
    /// ([`ImageAllowList::default_for`]).
    pub fn new(agent_image: impl Into<String>) -> Self {
        let agent_image = agent_image.into();
        JobDefaults {
            allowed_images: ImageAllowList::default_for(&agent_image),
            agent_image,
            ttl_seconds_after_finished: 86_400,
            egress: EgressPolicy::default(),
            image_registry: None,
        }
    }
}

/// `image` pulled from `registry` instead of its own (pure): the registry part (a first
/// component with a `.` or `:`, or `localhost`, as Docker reads references) is replaced, and
/// Docker Hub's official images get their `library/` path. `None` leaves the image as it is.
///
/// `ghcr.io/dataguardian/dataguardian:1` → `registry.corp/mirror/dataguardian/dataguardian:1`,
/// `postgres:15` → `registry.corp/mirror/library/postgres:15`.
pub fn with_registry(image: &str, registry: Option<&str>) -> String {
    let Some(registry) = registry
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty())
    else {
        return image.to_string();
    };
    let path = match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest.to_string()
        }
        Some(_) => image.to_string(),
        None => format!("library/{image}"),
    };
    format!("{registry}/{path}")
}

/// Image patterns of the default sandbox images (`postgres:<major>`, `mariadb:<major.minor>`,
/// `mysql:<major.minor>`, see `validation_job::sandbox_image`).
pub const DEFAULT_SANDBOX_IMAGE_PATTERNS: &[&str] = &["postgres:*", "mariadb:*", "mysql:*"];

/// The images the platform team lets DataGuardian Jobs run (`--allowed-images` /
/// `DG_ALLOWED_IMAGES`). A pattern is an exact image reference, or a prefix ending in `*`
/// (`registry.corp/dataguardian:*`, `registry.corp/mirror/postgres:*`). Without the flag the
/// list holds the operator's agent image and the default sandbox images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageAllowList {
    patterns: Vec<String>,
}

impl ImageAllowList {
    /// An allow-list of exactly `patterns` (blank entries are ignored).
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ImageAllowList {
            patterns: patterns
                .into_iter()
                .map(Into::into)
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// The default list: `agent_image` and [`DEFAULT_SANDBOX_IMAGE_PATTERNS`].
    pub fn default_for(agent_image: &str) -> Self {
        ImageAllowList::new(
            std::iter::once(agent_image).chain(DEFAULT_SANDBOX_IMAGE_PATTERNS.iter().copied()),
        )
    }

    /// The default list for images pulled through `registry` (`None`: [`Self::default_for`]):
    /// the agent image and the default sandbox images, rewritten ([`with_registry`]).
    pub fn default_for_registry(agent_image: &str, registry: Option<&str>) -> Self {
        ImageAllowList::new(
            std::iter::once(agent_image.to_string()).chain(
                DEFAULT_SANDBOX_IMAGE_PATTERNS
                    .iter()
                    .map(|p| with_registry(p, registry)),
            ),
        )
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `image` matches a pattern. A `*` is only special at the end of a pattern; an
    /// image containing whitespace or control characters never matches.
    pub fn allows(&self, image: &str) -> bool {
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return false;
        }
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix) && image.len() > prefix.len(),
            None => image == p,
        })
    }
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
    /// A container image is not on the operator's allow-list.
    #[error(
        "image {0:?} is not on the operator's image allow-list (set by the platform team with --allowed-images / DG_ALLOWED_IMAGES)"
    )]
    ImageNotAllowed(String),
    /// The Pod would ask for more than the `restricted` Pod Security profile allows.
    #[error("the Job's Pod would not be restricted: {0}")]
    PrivilegeNotAllowed(String),
    /// A dump or restore argument is not on the allow-list of its tool.
    #[error("{0}")]
    ArgumentNotAllowed(String),
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
            JobBuildError::ImageNotAllowed(_) => "ImageNotAllowed",
            JobBuildError::PrivilegeNotAllowed(_) => "PrivilegeNotAllowed",
            JobBuildError::ArgumentNotAllowed(_) => "ArgumentNotAllowed",
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

/// `env` plus the egress policy, last, replacing any earlier value of the same name: the
/// allowed ranges, and the operator's proxies (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) unless
/// a proxy URL carries credentials (never copied into a Job, whose spec tenants may read).
fn with_egress(mut env: Vec<EnvVar>, egress: &EgressPolicy) -> Vec<EnvVar> {
    env.retain(|e| {
        e.name != ENV_ALLOW_CIDRS && !crate::egress::ProxyConfig::variables().any(|v| v == e.name)
    });
    env.push(plain_env(ENV_ALLOW_CIDRS, &egress.to_list()));
    for (name, value) in egress.proxy().job_env().unwrap_or_default() {
        env.push(plain_env(name, &value));
    }
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
/// Refused unless every container image is on the allow-list and the Pod is restricted
/// ([`check_restricted`]): this is the one door every Job goes out by.
pub(crate) fn job(
    shell: JobShell,
    pod: PodSpec,
    defaults: &JobDefaults,
) -> Result<Job, JobBuildError> {
    for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let image = container.image.as_deref().unwrap_or_default();
        if !defaults.allowed_images.allows(image) {
            return Err(JobBuildError::ImageNotAllowed(image.to_owned()));
        }
    }
    check_restricted(&pod, shell.annotations.as_ref())?;
    Ok(Job {
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
    })
}

/// Volume sources the `restricted` Pod Security profile allows.
const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Checks a Pod against the `restricted` Pod Security profile (Kubernetes' `restricted`
/// level, latest version), plus DataGuardian's own rule that Job Pods never mount a
/// ServiceAccount token. The restricted settings are not defaults a template may weaken: a
/// Pod that asks for more is refused here, whatever produced it.
pub(crate) fn check_restricted(
    pod: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<(), JobBuildError> {
    let refuse = |what: String| Err(JobBuildError::PrivilegeNotAllowed(what));
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        return refuse("host namespaces (hostNetwork, hostPID, hostIPC) are not allowed".into());
    }
    if pod.host_users == Some(true) {
        return refuse("hostUsers is not allowed".into());
    }
    if pod.automount_service_account_token != Some(false) {
        return refuse("the ServiceAccount token must not be mounted".into());
    }
    for volume in pod.volumes.iter().flatten() {
        let value = serde_json::to_value(volume).unwrap_or_default();
        if let Some(source) = value
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .find(|k| *k != "name" && !RESTRICTED_VOLUME_SOURCES.contains(&k.as_str()))
        {
            return refuse(format!(
                "volume {} of type {source} is not allowed",
                volume.name
            ));
        }
    }
    for key in annotations.into_iter().flat_map(|a| a.keys()) {
        if CONFINEMENT_ANNOTATION_PREFIXES
            .iter()
            .any(|p| key.starts_with(p))
        {
            return refuse(format!("annotation {key} is not allowed"));
        }
    }
    let pod_context = pod.security_context.clone().unwrap_or_default();
    if pod_context.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
        return refuse("sysctls are not allowed".into());
    }
    if pod_context.run_as_user == Some(0) {
        return refuse("runAsUser 0 is not allowed".into());
    }
    if pod_context.run_as_non_root == Some(false) {
        return refuse("the Pod must run as non-root (runAsNonRoot: false)".into());
    }
    check_common(
        "the Pod",
        pod_context.se_linux_options.as_ref(),
        pod_context.windows_options.as_ref(),
        pod_context.app_armor_profile.as_ref(),
    )?;
    let seccomp_ok = |p: Option<&SeccompProfile>| {
        p.map(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
    };
    if seccomp_ok(pod_context.seccomp_profile.as_ref()) == Some(false) {
        return refuse("the Pod's seccompProfile must be RuntimeDefault or Localhost".into());
    }
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        let name = &c.name;
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            return refuse(format!("container {name} is privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            return refuse(format!(
                "container {name} must set allowPrivilegeEscalation: false"
            ));
        }
        if sc.run_as_non_root.or(pod_context.run_as_non_root) != Some(true) {
            return refuse(format!("container {name} must run as non-root"));
        }
        if sc.run_as_user == Some(0) {
            return refuse(format!("container {name} may not run as user 0"));
        }
        match seccomp_ok(sc.seccomp_profile.as_ref()) {
            Some(true) => {}
            Some(false) => {
                return refuse(format!(
                    "container {name}'s seccompProfile must be RuntimeDefault or Localhost"
                ));
            }
            None if seccomp_ok(pod_context.seccomp_profile.as_ref()) == Some(true) => {}
            None => return refuse(format!("container {name} has no seccompProfile")),
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|c| c == "ALL") {
            return refuse(format!("container {name} must drop ALL capabilities"));
        }
        if let Some(cap) = caps
            .add
            .iter()
            .flatten()
            .find(|c| !ALLOWED_ADDED_CAPABILITIES.contains(&c.as_str()))
        {
            return refuse(format!("container {name} may not add capability {cap}"));
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            return refuse(format!("container {name} must use the Default procMount"));
        }
        if c.ports
            .iter()
            .flatten()
            .any(|p| p.host_port.is_some_and(|h| h != 0))
        {
            return refuse(format!("container {name} may not use host ports"));
        }
        check_common(
            &format!("container {name}"),
            sc.se_linux_options.as_ref(),
            sc.windows_options.as_ref(),
            sc.app_armor_profile.as_ref(),
        )?;
    }
    Ok(())
}

/// SELinux, Windows host process and AppArmor rules shared by Pod and container contexts.
fn check_common(
    who: &str,
    se_linux: Option<&SELinuxOptions>,
    windows: Option<&WindowsSecurityContextOptions>,
    app_armor: Option<&AppArmorProfile>,
) -> Result<(), JobBuildError> {
    let refuse = |what: String| Err(JobBuildError::PrivilegeNotAllowed(what));
    if let Some(se) = se_linux {
        if se.user.is_some() || se.role.is_some() {
            return refuse(format!("{who} may not set an SELinux user or role"));
        }
        if se
            .type_
            .as_deref()
            .is_some_and(|t| !ALLOWED_SELINUX_TYPES.contains(&t))
        {
            return refuse(format!("{who} may not use this SELinux type"));
        }
    }
    if windows.and_then(|w| w.host_process) == Some(true) {
        return refuse(format!("{who} may not be a Windows host process"));
    }
    if app_armor.is_some_and(|a| a.type_ == "Unconfined") {
        return refuse(format!("{who} may not be AppArmor Unconfined"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::HostPathVolumeSource;

    #[test]
    fn image_allow_list_matches_exact_names_and_star_prefixes_only() {
        let list = ImageAllowList::new([
            "registry.corp/dg:1.2",
            "registry.corp/mirror/postgres:*",
            " ",
        ]);
        assert_eq!(list.patterns().len(), 2);
        assert!(list.allows("registry.corp/dg:1.2"));
        assert!(!list.allows("registry.corp/dg:1.2-evil"));
        assert!(!list.allows("registry.corp/dg:1.3"));
        assert!(list.allows("registry.corp/mirror/postgres:15"));
        assert!(!list.allows("registry.corp/mirror/postgres:"));
        assert!(!list.allows("registry.corp/mirror/postgresx:15"));
        assert!(!list.allows("evil.io/registry.corp/mirror/postgres:15"));
        assert!(!list.allows(""));
        assert!(!list.allows("registry.corp/dg:1.2 "));
        let default = ImageAllowList::default_for("ghcr.io/dataguardian/dataguardian:0.1.0");
        assert!(default.allows("ghcr.io/dataguardian/dataguardian:0.1.0"));
        assert!(!default.allows("ghcr.io/dataguardian/dataguardian:0.0.9"));
        assert!(default.allows("postgres:16") && default.allows("mariadb:10.11"));
        assert!(default.allows("mysql:8.0"));
        assert!(!default.allows("attacker/postgres:15"));
    }

    fn restricted_pod() -> PodSpec {
        let container = Container {
            name: "agent".into(),
            image: Some("dg:1".into()),
            security_context: Some(container_security_context(None)),
            ..Default::default()
        };
        pod_spec(
            &JobTemplate::default(),
            Vec::new(),
            container,
            vec![tmp_volume().0],
        )
    }

    #[test]
    fn the_default_pod_is_restricted_and_host_access_is_refused() {
        assert_eq!(check_restricted(&restricted_pod(), None), Ok(()));
        let refused = |pod: PodSpec| check_restricted(&pod, None).unwrap_err().to_string();
        let mut pod = restricted_pod();
        pod.host_network = Some(true);
        assert!(refused(pod).contains("host namespaces"));
        let mut pod = restricted_pod();
        pod.host_pid = Some(true);
        assert!(refused(pod).contains("host namespaces"));
        let mut pod = restricted_pod();
        pod.volumes.get_or_insert_default().push(Volume {
            name: "root".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/".into(),
                type_: None,
            }),
            ..Default::default()
        });
        assert!(refused(pod).contains("volume root of type hostPath"));
        let mut pod = restricted_pod();
        pod.automount_service_account_token = None;
        assert!(refused(pod).contains("ServiceAccount token"));
        let mut pod = restricted_pod();
        pod.containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            container_port: 80,
            host_port: Some(80),
            ..Default::default()
        }]);
        assert!(refused(pod).contains("host ports"));
        // A container without an explicit allowPrivilegeEscalation: false is not restricted.
        let mut pod = restricted_pod();
        pod.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .allow_privilege_escalation = None;
        assert!(refused(pod).contains("allowPrivilegeEscalation"));
    }
}

#[cfg(test)]
mod registry_tests {
    use super::with_registry;

    #[test]
    fn images_move_to_the_mirror_with_their_path() {
        let m = Some("registry.corp/mirror");
        assert_eq!(
            with_registry("ghcr.io/dataguardian/dataguardian:1", m),
            "registry.corp/mirror/dataguardian/dataguardian:1"
        );
        assert_eq!(
            with_registry("postgres:15", m),
            "registry.corp/mirror/library/postgres:15"
        );
        assert_eq!(
            with_registry("bitnami/postgresql:16", m),
            "registry.corp/mirror/bitnami/postgresql:16"
        );
        assert_eq!(
            with_registry("localhost/x:1", m),
            "registry.corp/mirror/x:1"
        );
        assert_eq!(
            with_registry("reg:5000/a/b@sha256:00", m),
            "registry.corp/mirror/a/b@sha256:00"
        );
        assert_eq!(
            with_registry("postgres:*", m),
            "registry.corp/mirror/library/postgres:*"
        );
        assert_eq!(with_registry("postgres:15", None), "postgres:15");
    }
}

/// Puts a run's trace into `job`'s containers (not its init containers, e.g. a validation's
/// sandbox database): the W3C Trace Context (`trace`, from [`crate::telemetry::otel`]), the
/// operator's `otel` settings (`OTEL_*` name and value), and `POD_NAME`/`POD_NAMESPACE` from the
/// downward API for the agent's resource. A variable the container already sets is kept. With
/// an empty `trace` (tracing off) the Job is left as it is.
pub fn add_trace_env(job: &mut Job, trace: &[(String, String)], otel: &[(String, String)]) {
    if trace.is_empty() {
        return;
    }
    let field = |path: &str| EnvVarSource {
        field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
            field_path: path.to_owned(),
            api_version: None,
        }),
        ..Default::default()
    };
    let mut wanted: Vec<EnvVar> = trace
        .iter()
        .chain(otel)
        .map(|(k, v)| plain_env(k, v))
        .collect();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        wanted.push(EnvVar {
            name: name.to_owned(),
            value: None,
            value_from: Some(field(path)),
        });
    }
    let containers = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .map(|p| p.containers.iter_mut());
    for container in containers.into_iter().flatten() {
        let env = container.env.get_or_insert_with(Vec::new);
        for var in &wanted {
            if !env.iter().any(|e| e.name == var.name) {
                env.push(var.clone());
            }
        }
    }
}

#[cfg(test)]
mod trace_env_tests {
    use super::*;

    fn job() -> Job {
        let container = |name: &str, env: Vec<EnvVar>| Container {
            name: name.into(),
            env: Some(env),
            ..Default::default()
        };
        Job {
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        init_containers: Some(vec![container("sandbox", vec![])]),
                        containers: vec![container(
                            "agent",
                            vec![plain_env("OTEL_EXPORTER_OTLP_PROTOCOL", "from-template")],
                        )],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_a_trace_the_job_is_left_as_it_is() {
        let mut j = job();
        add_trace_env(&mut j, &[], &pairs(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "x")]));
        assert_eq!(j, job());
    }

    #[test]
    fn the_agent_gets_the_trace_the_settings_and_its_pod_identity() {
        let mut j = job();
        add_trace_env(
            &mut j,
            &pairs(&[("TRACEPARENT", "00-01-02-01")]),
            &pairs(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
        );
        let pod = j.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let value = |n: &str| env.iter().find(|e| e.name == n).cloned();
        assert_eq!(
            value("TRACEPARENT").unwrap().value.as_deref(),
            Some("00-01-02-01")
        );
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_ENDPOINT")
                .unwrap()
                .value
                .as_deref(),
            Some("http://c:4317")
        );
        // A variable the container already sets is kept.
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_PROTOCOL")
                .unwrap()
                .value
                .as_deref(),
            Some("from-template")
        );
        assert_eq!(
            env.iter()
                .filter(|e| e.name == "OTEL_EXPORTER_OTLP_PROTOCOL")
                .count(),
            1
        );
        let pod_name = value("POD_NAME")
            .unwrap()
            .value_from
            .unwrap()
            .field_ref
            .unwrap();
        assert_eq!(pod_name.field_path, "metadata.name");
        // The sandbox database is not the agent.
        assert!(
            pod.init_containers.unwrap()[0]
                .env
                .as_ref()
                .unwrap()
                .is_empty()
        );
    }
}
