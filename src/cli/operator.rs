//! `dataguardian operator`: its flags and the process frame (allocator, logging, runtime) around
//! [`crate::operator::run`].

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use crate::controller::common::context::Settings;
use crate::egress::EgressPolicy;
use crate::operator::run::OperatorConfig;

/// Flags of `dataguardian operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, env = "DG_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "dataguardian-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "DG_LEASE_NAME", default_value = "dataguardian-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (defaults to the pod name, then the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration in seconds: a dead leader is replaced after at most this long.
    #[arg(long, env = "DG_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// At most this many backups run at once across the cluster (0 = unlimited).
    #[arg(long, env = "DG_MAX_CONCURRENT_BACKUPS", default_value_t = 10)]
    pub max_concurrent_backups: usize,
    /// At most this many restores run at once across the cluster (0 = unlimited).
    #[arg(long, env = "DG_MAX_CONCURRENT_RESTORES", default_value_t = 4)]
    pub max_concurrent_restores: usize,
    /// At most this many restore validations (each with a sandbox database) run at once
    /// across the cluster (0 = unlimited).
    #[arg(long, env = "DG_MAX_CONCURRENT_VALIDATIONS", default_value_t = 2)]
    pub max_concurrent_validations: usize,
    /// Image of the agent run by backup/restore/validation Jobs.
    #[arg(long, env = "DG_AGENT_IMAGE")]
    pub agent_image: Option<String>,
    /// Images DataGuardian Jobs may run (agent, sandbox), comma-separated: exact references
    /// or prefixes ending in `*` (e.g. `registry.corp/dataguardian:*`). A policy's
    /// `jobTemplate.image` or a validation's `sandbox.image` outside this list is refused with
    /// reason `ImageNotAllowed`. Default: the agent image and `postgres:*`, `mariadb:*`,
    /// `mysql:*` (the default sandbox images).
    #[arg(long, env = "DG_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,
    /// Registry (and path) that replaces the registry of every image the operator puts in a
    /// Job — the agent image and the default sandbox images — for clusters that pull only from
    /// a mirror (e.g. `registry.corp/mirror`: `postgres:15` becomes
    /// `registry.corp/mirror/library/postgres:15`). A policy's `jobTemplate.image` and a
    /// validation's `sandbox.image` are used as written. The allow-list follows.
    #[arg(long, env = "DG_IMAGE_REGISTRY", value_parser = parse_registry)]
    pub image_registry: Option<String>,
    /// How long finished Jobs (and their logs) are kept, in seconds.
    #[arg(long, env = "DG_JOB_TTL_SECONDS", default_value_t = 86_400)]
    pub job_ttl_seconds: i32,
    /// Internal address ranges (comma-separated CIDRs) that tenant endpoints — BackupStorage
    /// S3 endpoints and webhook URLs — may resolve to; agent Jobs get the same list. Loopback,
    /// private (RFC 1918), CGNAT and unique-local addresses are refused unless listed here;
    /// link-local addresses (cloud metadata) are refused always. Empty: public addresses only.
    /// With `HTTPS_PROXY`/`HTTP_PROXY` set (`NO_PROXY` for exceptions), S3 and webhook requests
    /// go through the proxy; the endpoint is still resolved and checked against this list, the
    /// proxy's own address is not (it is the platform's setting). Agent Jobs get the same proxy
    /// variables unless a proxy URL carries credentials.
    #[arg(long, env = crate::egress::ENV_ALLOW_CIDRS, default_value = "", value_parser = parse_egress)]
    pub egress_allow_cidrs: EgressPolicy,
    /// A namespace whose BackupStorages may omit `credentialsSecretRef` and so use the
    /// operator's own cloud identity (IRSA, instance profile); repeat for several. By default
    /// no namespace may: a tenant's storage always brings its own credentials.
    #[arg(
        long = "allow-ambient-credentials-in",
        env = "DG_ALLOW_AMBIENT_CREDENTIALS_NAMESPACES",
        value_delimiter = ','
    )]
    pub ambient_credentials_namespaces: Vec<String>,
    /// Address of the admission webhook's HTTPS server (records who asked for each run and
    /// who changed each policy and storage); empty: no webhook.
    #[arg(long, env = "DG_WEBHOOK_ADDR", default_value = "0.0.0.0:9443", value_parser = parse_optional_addr)]
    pub webhook_addr: OptionalAddr,
    /// Name of the webhook's Service (in the operator's namespace): the serving certificate is
    /// issued for `NAME.NAMESPACE.svc`.
    #[arg(
        long,
        env = "DG_WEBHOOK_SERVICE",
        default_value = "dataguardian-webhook"
    )]
    pub webhook_service: String,
    /// Directory with `tls.crt` and `tls.key` (e.g. cert-manager's Secret mounted): served as
    /// they are and re-read when they change. Unset: the operator issues its own CA and
    /// certificate into `--webhook-secret` and rotates them.
    #[arg(long, env = "DG_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// Secret (in the operator's namespace) for the self-issued webhook certificate.
    #[arg(
        long,
        env = "DG_WEBHOOK_SECRET",
        default_value = "dataguardian-webhook-tls"
    )]
    pub webhook_secret: String,
    /// MutatingWebhookConfigurations whose `caBundle` the operator keeps current with its
    /// self-issued CA, comma-separated (ignored with `--webhook-cert-dir`).
    #[arg(
        long,
        env = "DG_WEBHOOK_CONFIGURATIONS",
        value_delimiter = ',',
        default_value = "dataguardian-admission"
    )]
    pub webhook_configurations: Vec<String>,
    /// Which restores need a second person's approval when their backup's policy sets no
    /// `restoreApproval` (and for `storageRef` + `key` restores): `never`, `on-overwrite`
    /// (restores with `overwrite` or `clean`) or `always`. Approvals need the admission webhook.
    #[arg(long, env = "DG_RESTORE_APPROVAL", default_value = "never", value_parser = parse_approval)]
    pub restore_approval: crate::api::backup_policy::ApprovalRequirement,
    /// How long an approval lets a restore start when the policy says nothing, e.g. `1h`,
    /// `30m` (units s, m, h, d, w).
    #[arg(long, env = "DG_RESTORE_APPROVAL_VALID_FOR", default_value = "1h", value_parser = parse_validity)]
    pub restore_approval_valid_for: Duration,
    /// The BackupStorage (`NAMESPACE/NAME`, S3 only) the leader appends the audit trail to:
    /// who created, started, approved and finished runs, restores and validations, retention
    /// deletions, key rotations and policy changes, as hash-chained segments per namespace under
    /// Object Lock when the bucket has it (docs/audit.md). Empty: no audit trail.
    #[arg(long, env = "DG_AUDIT_STORAGE", default_value = "", value_parser = parse_audit_storage)]
    pub audit_storage: OptionalStorage,
    /// Log format.
    #[arg(long, env = "DG_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::logging::LogFormat::Json)]
    pub log_format: crate::telemetry::logging::LogFormat,
}

impl OperatorArgs {
    /// The operator's configuration from these flags.
    pub fn config(&self) -> OperatorConfig {
        OperatorConfig {
            metrics_addr: self.metrics_addr,
            lease_namespace: self.lease_namespace.clone(),
            lease_name: self.lease_name.clone(),
            identity: self.identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            settings: self.settings(),
            audit_storage: self.audit_storage.0.clone(),
            webhook: self
                .webhook_addr
                .0
                .map(|addr| crate::admission::WebhookConfig {
                    addr,
                    namespace: self.lease_namespace.clone(),
                    service: self.webhook_service.clone(),
                    extra_names: Vec::new(),
                    certs: match &self.webhook_cert_dir {
                        Some(dir) => crate::admission::CertSource::Dir(dir.clone()),
                        None => crate::admission::CertSource::SelfManaged {
                            secret: self.webhook_secret.clone(),
                            configurations: self
                                .webhook_configurations
                                .iter()
                                .map(|c| c.trim().to_string())
                                .filter(|c| !c.is_empty())
                                .collect(),
                        },
                    },
                }),
        }
    }

    fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            agent_image: self.agent_image.clone().unwrap_or(defaults.agent_image),
            image_registry: self.image_registry.clone(),
            allowed_images: self
                .allowed_images
                .iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            max_concurrent_backups: NonZeroUsize::new(self.max_concurrent_backups),
            max_concurrent_restores: NonZeroUsize::new(self.max_concurrent_restores),
            max_concurrent_validations: NonZeroUsize::new(self.max_concurrent_validations),
            job_ttl_seconds: self.job_ttl_seconds,
            default_stall_timeout: defaults.default_stall_timeout,
            egress: self.egress_allow_cidrs.clone(),
            ambient_credentials_namespaces: self
                .ambient_credentials_namespaces
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            requester_recorded: self.webhook_addr.0.is_some(),
            restore_approval: self.restore_approval,
            restore_approval_valid_for: self.restore_approval_valid_for,
        }
    }
}

fn parse_approval(text: &str) -> Result<crate::api::backup_policy::ApprovalRequirement, String> {
    crate::api::backup_policy::ApprovalRequirement::parse_flag(text.trim())
        .ok_or_else(|| format!("{text:?}: expected never, on-overwrite or always"))
}

fn parse_validity(text: &str) -> Result<Duration, String> {
    match crate::api::common::parse_duration(text) {
        Some(0) | None => Err(format!(
            "{text:?}: expected a positive duration such as 30m, 1h or 2d"
        )),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// A BackupStorage reference, or none (`--audit-storage ""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionalStorage(pub Option<crate::audit::StorageRef>);

/// Reads `--audit-storage`: `NAMESPACE/NAME`, or empty for no audit trail.
fn parse_audit_storage(text: &str) -> Result<OptionalStorage, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(OptionalStorage(None));
    }
    text.parse().map(|r| OptionalStorage(Some(r)))
}

/// An address, or none (`--webhook-addr ""`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// Reads `--webhook-addr`: an address, or empty for none.
fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{text:?} is not an address such as 0.0.0.0:9443: {e}"))
}

/// Reads `--image-registry`: a registry host with an optional path, no scheme, no tag.
pub(crate) fn parse_registry(text: &str) -> Result<String, String> {
    let registry = text.trim().trim_end_matches('/');
    let host = registry.split('/').next().unwrap_or("");
    if registry.is_empty()
        || registry.contains("://")
        || registry.contains('@')
        || registry
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        || host.is_empty()
        || registry
            .split('/')
            .skip(1)
            .any(|p| p.is_empty() || p.contains(':'))
    {
        return Err(format!(
            "{text:?} is not a registry: give a host with an optional path, e.g. registry.corp/mirror"
        ));
    }
    Ok(registry.to_string())
}

/// Reads `--egress-allow-cidrs`.
pub(crate) fn parse_egress(list: &str) -> Result<EgressPolicy, String> {
    EgressPolicy::from_list(list).map_err(|e| e.to_string())
}

/// Runs the operator until it stops; the exit code says how.
pub fn run(args: &OperatorArgs) -> ExitCode {
    crate::operator::memory::limit_malloc_arenas();
    crate::telemetry::logging::init(args.log_format, "info,kube=warn,tower=warn,hyper=warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dataguardian operator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = args.config();
    let proxy = crate::egress::ProxyConfig::from_env().unwrap_or_default();
    if proxy.is_enabled() {
        tracing::info!(%proxy, "S3 and webhook requests go through the proxy");
        if proxy.job_env().is_none() {
            tracing::warn!(
                "a proxy URL carries credentials: agent Jobs get no proxy settings (a Job's environment is readable by whoever may read Jobs or Pods in its namespace); give agents a proxy without credentials or a direct route"
            );
        }
    }
    config.settings.egress = config.settings.egress.with_proxy(proxy);
    match runtime.block_on(crate::operator::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::jobs::shell::JobDefaults;

    fn settings(argv: &[&str]) -> crate::controller::common::context::Settings {
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        let Command::Operator(args) = cli.command else {
            panic!("not the operator command");
        };
        args.settings()
    }

    /// Air-gapped clusters: one setting moves every image the operator chooses to the mirror
    /// (agent and default sandbox images), and the default allow-list follows.
    #[test]
    fn the_image_registry_flag_moves_the_agent_and_sandbox_images_to_the_mirror() {
        let s = settings(&[
            "dataguardian",
            "operator",
            "--image-registry=registry.corp/mirror/",
        ]);
        let defaults = JobDefaults::from(&s);
        assert_eq!(
            defaults.agent_image,
            format!(
                "registry.corp/mirror/dataguardian/dataguardian:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(
            defaults.image_registry.as_deref(),
            Some("registry.corp/mirror")
        );
        assert!(defaults.allowed_images.allows(&defaults.agent_image));
        assert!(
            defaults
                .allowed_images
                .allows("registry.corp/mirror/library/postgres:16")
        );
        assert!(!defaults.allowed_images.allows("postgres:16"));
        assert!(
            !defaults
                .allowed_images
                .allows("ghcr.io/dataguardian/dataguardian:1")
        );
        for bad in [
            "https://registry.corp",
            "registry.corp/a:b",
            "reg istry",
            "registry.corp//x",
        ] {
            let argv = [
                "dataguardian",
                "operator",
                &format!("--image-registry={bad}"),
            ];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_image_allow_list_comes_from_the_platform_teams_flag() {
        let s = settings(&[
            "dataguardian",
            "operator",
            "--agent-image=registry.corp/dg:2",
            "--allowed-images=registry.corp/dg:*, registry.corp/mirror/postgres:*",
        ]);
        let defaults = JobDefaults::from(&s);
        assert!(defaults.allowed_images.allows("registry.corp/dg:2"));
        assert!(
            defaults
                .allowed_images
                .allows("registry.corp/mirror/postgres:16")
        );
        assert!(
            !defaults.allowed_images.allows("postgres:16"),
            "the flag replaces the default"
        );
        // Without the flag: the agent image and the default sandbox images only.
        let defaults = JobDefaults::from(&settings(&[
            "dataguardian",
            "operator",
            "--agent-image=registry.corp/dg:2",
        ]));
        assert!(defaults.allowed_images.allows("registry.corp/dg:2"));
        assert!(defaults.allowed_images.allows("postgres:16"));
        assert!(!defaults.allowed_images.allows("registry.corp/dg:3"));
    }

    #[test]
    fn the_audit_storage_flag_names_a_storage_or_nothing() {
        let config = |argv: &[&str]| {
            let cli = Cli::try_parse_from(argv).expect("flags parse");
            let Command::Operator(args) = cli.command else {
                panic!("not the operator command");
            };
            args.config().audit_storage
        };
        assert_eq!(config(&["dataguardian", "operator"]), None);
        assert_eq!(
            config(&[
                "dataguardian",
                "operator",
                "--audit-storage",
                "dataguardian-system/audit"
            ])
            .map(|r| r.to_string())
            .as_deref(),
            Some("dataguardian-system/audit")
        );
        let err = Cli::try_parse_from(["dataguardian", "operator", "--audit-storage", "audit"])
            .expect_err("no namespace")
            .to_string();
        assert!(err.contains("expected NAMESPACE/NAME"), "{err}");
    }

    #[test]
    fn the_restore_approval_flags_parse_and_refuse_bad_values_clearly() {
        let s = settings(&[
            "dataguardian",
            "operator",
            "--restore-approval",
            "on-overwrite",
            "--restore-approval-valid-for",
            "30m",
        ]);
        assert_eq!(
            s.restore_approval,
            crate::api::backup_policy::ApprovalRequirement::OnOverwrite
        );
        assert_eq!(
            s.restore_approval_valid_for,
            std::time::Duration::from_secs(1800)
        );
        let defaults = settings(&["dataguardian", "operator"]);
        assert_eq!(
            defaults.restore_approval,
            crate::api::backup_policy::ApprovalRequirement::Never
        );
        assert_eq!(
            defaults.restore_approval_valid_for,
            std::time::Duration::from_secs(3600)
        );
        for (flag, value, says) in [
            (
                "--restore-approval",
                "sometimes",
                "expected never, on-overwrite or always",
            ),
            (
                "--restore-approval-valid-for",
                "0s",
                "expected a positive duration",
            ),
            (
                "--restore-approval-valid-for",
                "an hour",
                "expected a positive duration",
            ),
        ] {
            let err = Cli::try_parse_from(["dataguardian", "operator", flag, value])
                .expect_err(value)
                .to_string();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }
}
