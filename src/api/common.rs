//! Types shared by several kinds: references, database endpoints, compression, encryption,
//! Job templates, progress and conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference as PullSecretReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to another object of a given kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object, in the namespace of the referring object. References never cross
    /// namespaces.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl LocalObjectReference {
    /// A reference to `name`.
    pub fn new(name: impl Into<String>) -> Self {
        LocalObjectReference { name: name.into() }
    }
}

/// Selects one key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret, in the namespace of the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's `data`.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl SecretKeySelector {
    /// A selector of `key` in the Secret `name`.
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        SecretKeySelector {
            name: name.into(),
            key: key.into(),
        }
    }
}

/// The database engine of an endpoint or artifact.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL (dumped with `pg_dump`/`pg_dumpall`, restored with `pg_restore`/`psql`).
    Postgres,
    /// MySQL or MariaDB (dumped with `mysqldump`/`mariadb-dump`).
    Mysql,
}

impl Engine {
    /// Every engine.
    pub const ALL: [Engine; 2] = [Engine::Postgres, Engine::Mysql];

    /// The lower-case name used in status, labels and manifests (`postgres`, `mysql`).
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    /// Parses the lower-case name ([`Engine::as_str`]).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == name)
            .ok_or_else(|| format!("unknown engine {name:?} (postgres or mysql)"))
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database to back up from or restore into: exactly one engine block.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.postgres) ? 1 : 0) + (has(self.mysql) ? 1 : 0) == 1"
).message("exactly one engine block must be set: postgres or mysql"))]
pub struct DatabaseSpec {
    /// A PostgreSQL server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Box<PostgresEndpoint>>,
    /// A MySQL or MariaDB server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<Box<MysqlEndpoint>>,
}

impl DatabaseSpec {
    /// The engine of the block that is set (`None` only for an invalid spec with no block).
    pub fn engine(&self) -> Option<Engine> {
        match (&self.postgres, &self.mysql) {
            (Some(_), _) => Some(Engine::Postgres),
            (None, Some(_)) => Some(Engine::Mysql),
            (None, None) => None,
        }
    }
}

/// libpq `sslmode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresSslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS only if the server insists.
    Allow,
    /// Use TLS if the server supports it (libpq's default).
    #[default]
    Prefer,
    /// Always use TLS, without verifying the certificate.
    Require,
    /// Always use TLS and verify the certificate chain (the agent image's CA bundle); the
    /// connection fails rather than fall back. The MariaDB client (the agent's default) checks
    /// the host name as well.
    VerifyCa,
    /// Always use TLS, verify the chain and the host name.
    VerifyFull,
}

/// Connection to a PostgreSQL server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.database) != (has(self.allDatabases) && self.allDatabases)")
        .message("set exactly one of database or allDatabases: true"),
    validation = Rule::new("!(has(self.passwordSecretRef) && has(self.connectionSecretRef))")
        .message("set at most one of passwordSecretRef or connectionSecretRef"),
    validation = Rule::new("has(self.connectionSecretRef) || (has(self.host) && has(self.user))")
        .message("host and user are required unless connectionSecretRef is set")
)]
pub struct PostgresEndpoint {
    /// Host name or IP address of the server, e.g. `db.shop.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// TCP port of the server.
    #[serde(default = "default_postgres_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The database to dump or restore into. Exactly one of `database` and `allDatabases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub database: Option<String>,
    /// Dump every database of the server (`pg_dumpall`, including roles); restores replay the
    /// whole cluster. Exactly one of `database` and `allDatabases: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_databases: Option<bool>,
    /// Role to connect as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub user: Option<String>,
    /// Secret key holding the password of `user`. It reaches the dump tool through the
    /// environment, never through argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// Secret key holding a complete libpq connection URI
    /// (`postgresql://user:password@host:5432/db?sslmode=verify-full`), for setups that hand out
    /// ready-made URIs. Settings in the URI win over `host`, `port`, `user` and `sslMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret_ref: Option<SecretKeySelector>,
    /// TLS mode (libpq `sslmode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<PostgresSslMode>,
    /// Extra arguments appended to `pg_dump` (in a policy) or `pg_restore` (in a restore
    /// target), e.g. `["--exclude-table=audit_*"]`. Only options on DataGuardian's allow-list
    /// are accepted, as full long names with `--option=value` (content selection such as
    /// `--schema=`, `--exclude-table=`, `--no-comments`); anything that writes or reads files,
    /// changes the connection or role, or overrides the format, snapshot or compression is
    /// refused with reason `ArgumentNotAllowed` (`docs/threat-model.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    pub extra_args: Vec<String>,
}

impl Default for PostgresEndpoint {
    fn default() -> Self {
        PostgresEndpoint {
            host: None,
            port: default_postgres_port(),
            database: None,
            all_databases: None,
            user: None,
            password_secret_ref: None,
            connection_secret_ref: None,
            ssl_mode: None,
            extra_args: Vec::new(),
        }
    }
}

fn default_postgres_port() -> u16 {
    5432
}

/// MySQL/MariaDB `--ssl-mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MysqlSslMode {
    /// Never use TLS.
    Disabled,
    /// Use TLS if the server supports it.
    #[default]
    Preferred,
    /// Always use TLS, without verifying the certificate.
    Required,
    /// Always use TLS and verify the certificate chain.
    VerifyCa,
    /// Always use TLS, verify the chain and the host name.
    VerifyIdentity,
}

/// Connection to a MySQL or MariaDB server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.database) != (has(self.allDatabases) && self.allDatabases)")
        .message("set exactly one of database or allDatabases: true"),
    validation = Rule::new("!(has(self.passwordSecretRef) && has(self.connectionSecretRef))")
        .message("set at most one of passwordSecretRef or connectionSecretRef"),
    validation = Rule::new("has(self.connectionSecretRef) || (has(self.host) && has(self.user))")
        .message("host and user are required unless connectionSecretRef is set")
)]
pub struct MysqlEndpoint {
    /// Host name or IP address of the server, e.g. `mariadb.shop.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// TCP port of the server.
    #[serde(default = "default_mysql_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The database (schema) to dump or restore into. Exactly one of `database` and
    /// `allDatabases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub database: Option<String>,
    /// Dump every database of the server (`--all-databases`). Exactly one of `database` and
    /// `allDatabases: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_databases: Option<bool>,
    /// User to connect as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub user: Option<String>,
    /// Secret key holding the password of `user`. It reaches the dump tool through the
    /// environment or an option file, never through argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeySelector>,
    /// Secret key holding a connection URI (`mysql://user:password@host:3306/db`). Settings in
    /// the URI win over `host`, `port` and `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret_ref: Option<SecretKeySelector>,
    /// TLS mode (`--ssl-mode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<MysqlSslMode>,
    /// Extra arguments appended to `mysqldump`/`mariadb-dump`, e.g. `["--skip-lock-tables"]`.
    /// Only options on DataGuardian's allow-list are accepted, as full long names with
    /// `--option=value` (e.g. `--ignore-table=db.table`, `--skip-comments`); anything else is
    /// refused with reason `ArgumentNotAllowed`. Restores take no extra arguments. Passwords
    /// are refused here: they belong in `passwordSecretRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    #[x_kube(validation = Rule::new(
        "self.all(a, !a.startsWith('--password') && !a.startsWith('-p'))"
    ).message("passwords must not be passed as arguments: use passwordSecretRef"))]
    pub extra_args: Vec<String>,
}

impl Default for MysqlEndpoint {
    fn default() -> Self {
        MysqlEndpoint {
            host: None,
            port: default_mysql_port(),
            database: None,
            all_databases: None,
            user: None,
            password_secret_ref: None,
            connection_secret_ref: None,
            ssl_mode: None,
            extra_args: Vec::new(),
        }
    }
}

fn default_mysql_port() -> u16 {
    3306
}

/// Compression algorithm of an artifact.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    /// Zstandard, multi-threaded (the default; fast and compact).
    #[default]
    Zstd,
    /// gzip, for tools that only read gzip.
    Gzip,
    /// No compression (e.g. for data that is already compressed).
    None,
}

impl CompressionAlgorithm {
    /// The lower-case name used in status and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionAlgorithm::Zstd => "zstd",
            CompressionAlgorithm::Gzip => "gzip",
            CompressionAlgorithm::None => "none",
        }
    }

    /// The level used when none is configured.
    pub fn default_level(self) -> Option<i32> {
        match self {
            CompressionAlgorithm::Zstd => Some(3),
            CompressionAlgorithm::Gzip => Some(6),
            CompressionAlgorithm::None => None,
        }
    }
}

/// How artifacts are compressed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.level) || ((!has(self.algorithm) || self.algorithm == 'zstd') && self.level >= 1 && self.level <= 19) || (has(self.algorithm) && self.algorithm == 'gzip' && self.level >= 1 && self.level <= 9)"
).message("level must be 1-19 for zstd, 1-9 for gzip, and unset for none"))]
pub struct Compression {
    /// `zstd` (default), `gzip` or `none`.
    #[serde(default)]
    pub algorithm: CompressionAlgorithm,
    /// Compression level: 1-19 for zstd (default 3), 1-9 for gzip (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
}

impl Compression {
    /// The configured level, or the algorithm's default.
    pub fn effective_level(&self) -> Option<i32> {
        self.level.or(self.algorithm.default_level())
    }
}

/// Encryption of artifacts (envelope encryption): each run's artifacts are encrypted to a fresh
/// data key, which the manifest stores only wrapped — for each age recipient and/or by a KMS key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.recipientsSecretRef) || has(self.kms)"
).message("encryption needs recipientsSecretRef, kms, or both"))]
pub struct Encryption {
    /// Secret key holding the age recipients, one per line (`age1…` X25519 keys; `#` comments
    /// allowed). The backup Job only ever sees these public keys: the matching identity is
    /// needed to restore, and lives elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_secret_ref: Option<SecretKeySelector>,
    /// A KMS key that wraps each run's data key (beside or instead of the age recipients). The
    /// backup Job needs only `kms:Encrypt` on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsKey>,
    /// What opens the data keys of the retained backups while they are re-wrapped for the keys
    /// above (declarative key rotation): change `recipientsSecretRef` or `kms` and name the old
    /// key here; the operator's rotation Job re-wraps every retained backup's manifest and
    /// leaves the artifacts untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotation>,
}

/// The old key of a key rotation: an age identity Secret and/or KMS `Decrypt` of the wraps
/// recorded in the manifests. Only the rotation Job sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.previousIdentitySecretRef) || has(self.previousKms)"
).message("rotation needs previousIdentitySecretRef, previousKms, or both"))]
pub struct KeyRotation {
    /// Secret key holding an age identity (`AGE-SECRET-KEY-1…`) of one of the recipients the
    /// retained backups are wrapped for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_identity_secret_ref: Option<SecretKeySelector>,
    /// Unwrap with KMS `Decrypt` of the key recorded in each manifest (the old KMS key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_kms: Option<KmsAccess>,
}

impl KeyRotation {
    /// The old key as the restore-side [`Decryption`] the Job builders understand.
    pub fn as_decryption(&self) -> Decryption {
        Decryption {
            identity_secret_ref: self.previous_identity_secret_ref.clone(),
            kms: self.previous_kms.clone(),
        }
    }
}

/// An AWS KMS (or KMS-compatible) key that wraps data keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsKey {
    /// Key id, key ARN, `alias/NAME` or alias ARN.
    #[schemars(length(min = 1, max = 2048))]
    pub key_id: String,
    /// Region of the key, e.g. `eu-west-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Endpoint of a KMS-compatible service (absent: AWS KMS of the region). Subject to the
    /// operator's egress policy like S3 endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN` for the KMS calls. Absent means the pod's workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
}

/// How restore and validation Jobs reach the KMS that unwraps data keys (the key and its region
/// are recorded in each manifest).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsAccess {
    /// Region, when it differs from the one recorded with the wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub region: Option<String>,
    /// Endpoint of a KMS-compatible service (absent: AWS KMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: Option<String>,
    /// Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN` allowed `kms:Decrypt`. Absent means the pod's workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
}

/// Decryption of an encrypted artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.identitySecretRef) || has(self.kms)"
).message("decryption needs identitySecretRef, kms, or both"))]
pub struct Decryption {
    /// Secret key holding one or more age identities (`AGE-SECRET-KEY-1…` lines) able to
    /// decrypt the artifact (or unwrap its data key). Only restore and validation Jobs mount it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret_ref: Option<SecretKeySelector>,
    /// Unwrap the data key with KMS `Decrypt` (tried when no identity opens it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsAccess>,
}

impl Decryption {
    /// Every Secret key the Job reads: the identity, and the KMS credentials' key id and
    /// secret.
    pub fn secret_refs(&self) -> Vec<SecretKeySelector> {
        let mut out: Vec<SecretKeySelector> = self.identity_secret_ref.iter().cloned().collect();
        if let Some(creds) = self
            .kms
            .as_ref()
            .and_then(|k| k.credentials_secret_ref.as_ref())
        {
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                out.push(SecretKeySelector::new(creds.name.clone(), key));
            }
        }
        out
    }
}

/// Overrides for the Pods of the Jobs DataGuardian launches.
///
/// Every Job DataGuardian builds runs under the `restricted` Pod Security profile: the API
/// refuses a template that asks for more (see [`JOB_TEMPLATE_RULES`]) and the Job builders
/// refuse to build a Pod that is not restricted. `image` must be on the operator's image
/// allow-list (`--allowed-images`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = job_template_rules)]
pub struct JobTemplate {
    /// Container image of the agent. Defaults to the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Image pull policy of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Secrets used to pull the agent image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<PullSecretReference>,
    /// CPU/memory requests and limits of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the Pod must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the Pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// ServiceAccount the Pod runs as (e.g. one annotated for IRSA to reach S3 without keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// PriorityClass of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Pod-level security context; merged over DataGuardian's restricted defaults
    /// (non-root, read-only root filesystem, no privilege escalation, RuntimeDefault seccomp).
    /// Nothing the `restricted` Pod Security profile forbids is accepted (root, `Unconfined`
    /// seccomp or AppArmor, sysctls, host processes, SELinux user/role/type changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    /// Container-level security context; merged over the restricted defaults. Refused:
    /// `privileged`, `allowPrivilegeEscalation: true`, `runAsNonRoot: false`, `runAsUser: 0`,
    /// added capabilities other than `NET_BIND_SERVICE`, a `drop` list without `ALL`,
    /// `procMount: Unmasked`, `Unconfined` seccomp or AppArmor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Extra labels for the Job and its Pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for the Job and its Pod. The legacy AppArmor and seccomp annotation
    /// keys (`container.apparmor.security.beta.kubernetes.io/…`,
    /// `seccomp.security.alpha.kubernetes.io/…`) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Annotation key prefixes that change a Pod's confinement (legacy AppArmor and seccomp).
pub const CONFINEMENT_ANNOTATION_PREFIXES: &[&str] = &[
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
];

/// Capabilities the `restricted` Pod Security profile lets a container add.
pub const ALLOWED_ADDED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// SELinux types the `restricted` Pod Security profile allows.
pub const ALLOWED_SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// CEL rules (rule, message) of a [`JobTemplate`]: everything the `restricted` Pod Security
/// profile forbids is refused by the API server, for every role that may write the template.
pub const JOB_TEMPLATE_RULES: &[(&str, &str)] = &[
    (
        "!has(self.securityContext) || !has(self.securityContext.privileged) || !self.securityContext.privileged",
        "securityContext.privileged is not allowed: DataGuardian Jobs run under the restricted Pod Security profile",
    ),
    (
        "!has(self.securityContext) || !has(self.securityContext.allowPrivilegeEscalation) || !self.securityContext.allowPrivilegeEscalation",
        "securityContext.allowPrivilegeEscalation: true is not allowed: DataGuardian Jobs run under the restricted Pod Security profile",
    ),
    (
        "(!has(self.securityContext) || !has(self.securityContext.runAsNonRoot) || self.securityContext.runAsNonRoot) && (!has(self.podSecurityContext) || !has(self.podSecurityContext.runAsNonRoot) || self.podSecurityContext.runAsNonRoot)",
        "runAsNonRoot: false is not allowed: DataGuardian Jobs never run as root",
    ),
    (
        "(!has(self.securityContext) || !has(self.securityContext.runAsUser) || self.securityContext.runAsUser != 0) && (!has(self.podSecurityContext) || !has(self.podSecurityContext.runAsUser) || self.podSecurityContext.runAsUser != 0)",
        "runAsUser: 0 is not allowed: DataGuardian Jobs never run as root",
    ),
    (
        "!has(self.securityContext) || !has(self.securityContext.capabilities) || !has(self.securityContext.capabilities.add) || self.securityContext.capabilities.add.all(c, c == 'NET_BIND_SERVICE')",
        "securityContext.capabilities.add may only contain NET_BIND_SERVICE (restricted Pod Security profile)",
    ),
    (
        "!has(self.securityContext) || !has(self.securityContext.capabilities) || !has(self.securityContext.capabilities.drop) || self.securityContext.capabilities.drop.exists(c, c == 'ALL')",
        "securityContext.capabilities.drop must contain ALL (restricted Pod Security profile)",
    ),
    (
        "(!has(self.securityContext) || !has(self.securityContext.seccompProfile) || self.securityContext.seccompProfile.type in ['RuntimeDefault', 'Localhost']) && (!has(self.podSecurityContext) || !has(self.podSecurityContext.seccompProfile) || self.podSecurityContext.seccompProfile.type in ['RuntimeDefault', 'Localhost'])",
        "seccompProfile.type must be RuntimeDefault or Localhost (restricted Pod Security profile)",
    ),
    (
        "(!has(self.securityContext) || !has(self.securityContext.appArmorProfile) || self.securityContext.appArmorProfile.type != 'Unconfined') && (!has(self.podSecurityContext) || !has(self.podSecurityContext.appArmorProfile) || self.podSecurityContext.appArmorProfile.type != 'Unconfined')",
        "appArmorProfile.type Unconfined is not allowed (restricted Pod Security profile)",
    ),
    (
        "!has(self.securityContext) || !has(self.securityContext.procMount) || self.securityContext.procMount == 'Default'",
        "securityContext.procMount must be Default (restricted Pod Security profile)",
    ),
    (
        "(!has(self.securityContext) || !has(self.securityContext.windowsOptions) || !has(self.securityContext.windowsOptions.hostProcess) || !self.securityContext.windowsOptions.hostProcess) && (!has(self.podSecurityContext) || !has(self.podSecurityContext.windowsOptions) || !has(self.podSecurityContext.windowsOptions.hostProcess) || !self.podSecurityContext.windowsOptions.hostProcess)",
        "windowsOptions.hostProcess is not allowed (restricted Pod Security profile)",
    ),
    (
        "(!has(self.securityContext) || !has(self.securityContext.seLinuxOptions) || (!has(self.securityContext.seLinuxOptions.user) && !has(self.securityContext.seLinuxOptions.role) && (!has(self.securityContext.seLinuxOptions.type) || self.securityContext.seLinuxOptions.type in ['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t']))) && (!has(self.podSecurityContext) || !has(self.podSecurityContext.seLinuxOptions) || (!has(self.podSecurityContext.seLinuxOptions.user) && !has(self.podSecurityContext.seLinuxOptions.role) && (!has(self.podSecurityContext.seLinuxOptions.type) || self.podSecurityContext.seLinuxOptions.type in ['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t'])))",
        "seLinuxOptions may not set user or role, and type must be one the restricted Pod Security profile allows",
    ),
    (
        "!has(self.podSecurityContext) || !has(self.podSecurityContext.sysctls) || size(self.podSecurityContext.sysctls) == 0",
        "podSecurityContext.sysctls are not allowed in DataGuardian Jobs",
    ),
    (
        "!has(self.annotations) || self.annotations.all(k, !k.startsWith('container.apparmor.security.beta.kubernetes.io/') && !k.startsWith('seccomp.security.alpha.kubernetes.io/'))",
        "annotations may not set AppArmor or seccomp profiles (container.apparmor.security.beta.kubernetes.io/*, seccomp.security.alpha.kubernetes.io/*)",
    ),
];

/// Appends `rules` to a schema's `x-kubernetes-validations`.
fn push_rules(schema: &mut schemars::Schema, rules: &[(&str, &str)]) {
    let list = schema
        .ensure_object()
        .entry("x-kubernetes-validations")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let serde_json::Value::Array(list) = list {
        list.extend(
            rules
                .iter()
                .map(|(rule, message)| serde_json::json!({"rule": rule, "message": message})),
        );
    }
}

fn job_template_rules(schema: &mut schemars::Schema) {
    push_rules(schema, JOB_TEMPLATE_RULES);
}

/// Fields of a [`JobTemplate`] that a RestoreRun may not set, and why. A RestoreRun keeps only
/// resources and scheduling: whoever may create a RestoreRun must not choose what the restore
/// Pod runs, as whom, or with which privileges (the Pod holds the decryption identity and the
/// target's credentials).
pub const RESTORE_REFUSED_FIELDS: &[(&str, &str)] = &[
    (
        "image",
        "the restore runs the policy's or the operator's agent image",
    ),
    (
        "imagePullPolicy",
        "the restore uses the policy's pull settings",
    ),
    (
        "imagePullSecrets",
        "the restore uses the policy's pull settings",
    ),
    (
        "serviceAccountName",
        "the restore runs as the policy's ServiceAccount",
    ),
    (
        "podSecurityContext",
        "the restore Pod always runs under the restricted Pod Security profile",
    ),
    (
        "securityContext",
        "the restore Pod always runs under the restricted Pod Security profile",
    ),
    (
        "labels",
        "labels can select the restore Pod into network or admission policies",
    ),
    (
        "annotations",
        "annotations can change the restore Pod's confinement",
    ),
];

/// Overrides a RestoreRun may make to its restore Job's Pod: resources and scheduling only.
/// Everything else comes from the backup policy's `jobTemplate` (or the operator's defaults);
/// the fields in [`RESTORE_REFUSED_FIELDS`] are refused by the API server with a message that
/// says why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = restore_job_template_refusals)]
pub struct RestoreJobTemplate {
    /// CPU/memory requests and limits of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the Pod must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the Pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

impl RestoreJobTemplate {
    /// `base` (the policy's template, or the defaults) with this run's resources and
    /// scheduling laid over it; nothing else of `base` changes.
    pub fn over(&self, base: JobTemplate) -> JobTemplate {
        let mut out = base;
        if let Some(resources) = &self.resources {
            out.resources = Some(resources.clone());
        }
        if !self.node_selector.is_empty() {
            out.node_selector = self.node_selector.clone();
        }
        if !self.tolerations.is_empty() {
            out.tolerations = self.tolerations.clone();
        }
        if let Some(affinity) = &self.affinity {
            out.affinity = Some(affinity.clone());
        }
        if let Some(priority) = &self.priority_class_name {
            out.priority_class_name = Some(priority.clone());
        }
        out
    }
}

/// Declares the refused fields (any value, so that they survive pruning and reach the rules)
/// and one rule per field that refuses it with its reason.
fn restore_job_template_refusals(schema: &mut schemars::Schema) {
    let object = schema.ensure_object();
    let properties = object
        .entry("properties")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if let serde_json::Value::Object(properties) = properties {
        for (field, why) in RESTORE_REFUSED_FIELDS {
            properties.insert(
                (*field).to_owned(),
                serde_json::json!({
                    "description": format!("Not allowed on a RestoreRun: {why}."),
                    "x-kubernetes-preserve-unknown-fields": true
                }),
            );
        }
    }
    let rules: Vec<(String, String)> = RESTORE_REFUSED_FIELDS
        .iter()
        .map(|(field, why)| {
            (
                format!("!has(self.{field})"),
                format!("jobTemplate.{field} cannot be set on a RestoreRun: {why}; a RestoreRun may set only resources, nodeSelector, tolerations, affinity and priorityClassName"),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = rules
        .iter()
        .map(|(r, m)| (r.as_str(), m.as_str()))
        .collect();
    push_rules(schema, &borrowed);
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull if the image is not present on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Live progress of a data transfer, updated by the agent while it runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Bytes read from the source so far (the uncompressed dump for a backup, the artifact for
    /// a restore).
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes written to the destination so far.
    #[serde(default)]
    pub bytes_out: u64,
    /// Recent throughput in bytes per second (of `bytesIn`).
    #[serde(default)]
    pub bytes_per_second: u64,
    /// When these figures were last updated; a stale time means a stalled transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<Time>,
}

/// A reference to a run, with when and how it ended (used in BackupPolicy status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Name of the run object.
    pub name: String,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Machine-readable reason (set for failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail (set for failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Condition types used across kinds.
pub mod condition_types {
    /// The object is reconciled and usable.
    pub const READY: &str = "Ready";
    /// The policy's cron schedule and time zone parse.
    pub const SCHEDULE_VALID: &str = "ScheduleValid";
    /// The policy's storage(s) exist and are Ready.
    pub const STORAGE_READY: &str = "StorageReady";
    /// The newest successful backup is younger than the policy's RPO.
    pub const RPO_MET: &str = "RPOMet";
    /// The newest finished RestoreValidation of the policy restored within its RTO.
    pub const RTO_MET: &str = "RTOMet";
    /// A run has finished (successfully or not).
    pub const COMPLETE: &str = "Complete";
    /// A run failed.
    pub const FAILED: &str = "Failed";
    /// A backup was proven restorable by a RestoreValidation.
    pub const VERIFIED: &str = "Verified";
    /// Every retained backup of the policy is wrapped for the policy's current keys.
    pub const KEYS_CURRENT: &str = "KeysCurrent";
}

/// Inserts or replaces the condition of the same `type`, keeping `lastTransitionTime` when the
/// status did not change (metav1 semantics). Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let mut new = new;
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == new {
                return false;
            }
            *existing = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Finds the condition of type `type_`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Converts a chrono UTC time into a Kubernetes `Time` (nanosecond precision).
pub fn time_from_chrono(t: chrono::DateTime<chrono::Utc>) -> Time {
    let ts = k8s_openapi::jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// Converts a Kubernetes `Time` into a chrono UTC time.
pub fn time_to_chrono(t: &Time) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// Formats a byte count the way printer columns show it: `0 B`, `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats a duration the way printer columns show it: `45s`, `3m12s`, `2h5m`, `3d4h`.
pub fn format_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Parses a retention/RPO duration such as `90d`, `36h`, `2w`, `1h30m` or `45s` into seconds.
/// Units: `s`, `m`, `h`, `d` (24h), `w` (7d). Returns `None` for anything else.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        any = true;
    }
    (digits.is_empty() && any).then_some(total)
}

/// Pattern of the durations [`parse_duration`] accepts (used in CEL rules).
pub const DURATION_PATTERN: &str = "^([0-9]+[smhdw])+$";

/// Pattern of a 5-field cron expression (used in CEL rules).
pub const CRON_PATTERN: &str = r"^\s*\S+(\s+\S+){4}\s*$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_from_their_names_only() {
        for e in Engine::ALL {
            assert_eq!(e.as_str().parse::<Engine>(), Ok(e));
        }
        let err = "oracle".parse::<Engine>().unwrap_err();
        assert!(err.contains("oracle") && err.contains("postgres"), "{err}");
    }

    #[test]
    fn bytes_are_human_readable() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(
            format_bytes(3 * 1024 * 1024 * 1024 + 200 * 1024 * 1024),
            "3.2 GiB"
        );
        assert_eq!(format_bytes(700 * 1024 * 1024), "700 MiB");
    }

    #[test]
    fn durations_are_human_readable() {
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(192), "3m12s");
        assert_eq!(format_duration(7500), "2h5m");
        assert_eq!(format_duration(4 * 86_400 + 3 * 3600 + 59), "4d3h");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d"), Some(90 * 86_400));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("2w"), Some(14 * 86_400));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn chrono_time_round_trip() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(time_to_chrono(&time_from_chrono(t)), t);
    }

    #[test]
    fn set_condition_keeps_transition_time_for_same_status() {
        let t0 = time_from_chrono(chrono::DateTime::from_timestamp(1, 0).unwrap());
        let t1 = time_from_chrono(chrono::DateTime::from_timestamp(2, 0).unwrap());
        let cond = |status: &str, reason: &str, t: &Time| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: t.clone(),
            observed_generation: Some(1),
        };
        let mut conds = vec![];
        assert!(set_condition(&mut conds, cond("True", "Ok", &t0)));
        assert!(!set_condition(&mut conds, cond("True", "Ok", &t1)));
        assert!(set_condition(&mut conds, cond("True", "Other", &t1)));
        assert_eq!(conds[0].last_transition_time, t0);
        assert!(set_condition(&mut conds, cond("False", "Down", &t1)));
        assert_eq!(conds[0].last_transition_time, t1);
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn engine_of_database_spec() {
        let spec = DatabaseSpec {
            mysql: Some(Box::default()),
            ..Default::default()
        };
        assert_eq!(spec.engine(), Some(Engine::Mysql));
        assert_eq!(DatabaseSpec::default().engine(), None);
    }
}
