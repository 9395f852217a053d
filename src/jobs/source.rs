//! What the agent is told about the places it reads and writes: the database source or target
//! (engine, URI without password, Secret references), the storage's access (S3 settings and
//! credentials, or the claim's mount) and the age identity of restores and validations.

use k8s_openapi::api::core::v1::{
    EnvVar, KeyToPath, PersistentVolumeClaimVolumeSource, SecretVolumeSource, Volume, VolumeMount,
};
use kube::ResourceExt;

use crate::api::BackupStorage;
use crate::api::backup_run::Artifact;
use crate::api::common::{
    DatabaseSpec, Decryption, Engine, KmsKey, LocalObjectReference, MysqlSslMode, SecretKeySelector,
};
use crate::contract::manifest::{
    EXPECT_ENCRYPTION_FLAG, EXPECT_RECIPIENT_FLAG, EXPECT_SCOPE_FLAG, MANIFEST_SHA256_FLAG,
};
use crate::contract::{ArtifactPin, EncryptionMode, ExpectedEncryption};

use super::shell::{JobBuildError, STORAGE_MOUNT, plain_env, push_flag, secret_env};

/// The policy's source, reduced to what the agent needs.
pub(crate) struct Source {
    pub(crate) engine: Engine,
    /// `postgresql://user@host:port/db?…` without a password; `None` when the URI comes from
    /// a Secret.
    pub(crate) uri: Option<String>,
    pub(crate) password: Option<SecretKeySelector>,
    pub(crate) connection: Option<SecretKeySelector>,
    pub(crate) database: Option<String>,
    pub(crate) all_databases: bool,
    pub(crate) extra_args: Vec<String>,
}

/// The MySQL client's spelling of `mode` (`--ssl-mode`).
fn mysql_ssl_mode(mode: MysqlSslMode) -> &'static str {
    match mode {
        MysqlSslMode::Disabled => "DISABLED",
        MysqlSslMode::Preferred => "PREFERRED",
        MysqlSslMode::Required => "REQUIRED",
        MysqlSslMode::VerifyCa => "VERIFY_CA",
        MysqlSslMode::VerifyIdentity => "VERIFY_IDENTITY",
    }
}

impl Source {
    pub(crate) fn from_spec(source: &DatabaseSpec) -> Result<Self, JobBuildError> {
        struct Common<'a> {
            host: Option<&'a str>,
            port: u16,
            user: Option<&'a str>,
            database: Option<&'a String>,
            all: bool,
            password: Option<&'a SecretKeySelector>,
            connection: Option<&'a SecretKeySelector>,
            extra: &'a [String],
        }
        let (engine, common, params) = match (&source.postgres, &source.mysql) {
            (Some(pg), _) => (
                Engine::Postgres,
                Common {
                    host: pg.host.as_deref(),
                    port: pg.port,
                    user: pg.user.as_deref(),
                    database: pg.database.as_ref(),
                    all: pg.all_databases.unwrap_or(false),
                    password: pg.password_secret_ref.as_ref(),
                    connection: pg.connection_secret_ref.as_ref(),
                    extra: &pg.extra_args,
                },
                pg.ssl_mode
                    .map(|mode| {
                        let value = serde_json::to_value(mode)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        vec![("sslmode", value)]
                    })
                    .unwrap_or_default(),
            ),
            (None, Some(my)) => (
                Engine::Mysql,
                Common {
                    host: my.host.as_deref(),
                    port: my.port,
                    user: my.user.as_deref(),
                    database: my.database.as_ref(),
                    all: my.all_databases.unwrap_or(false),
                    password: my.password_secret_ref.as_ref(),
                    connection: my.connection_secret_ref.as_ref(),
                    extra: &my.extra_args,
                },
                // The mode goes to the agent unchanged (`ssl-mode=VERIFY_IDENTITY`): the verify
                // modes verify the server's certificate, never just "use TLS".
                match my.ssl_mode {
                    Some(MysqlSslMode::Preferred) | None => vec![],
                    Some(mode) => vec![("ssl-mode", mysql_ssl_mode(mode).to_owned())],
                },
            ),
            (None, None) => {
                return Err(JobBuildError::InvalidSource(
                    "no engine block (postgres or mysql) is set".into(),
                ));
            }
        };
        // The agent splits `--dump-arg` values at commas (its env form is a comma list), so an
        // argument with a comma would reach the dump tool as two. Refuse it instead.
        if let Some(arg) = common.extra.iter().find(|a| a.contains(',')) {
            return Err(JobBuildError::InvalidSource(format!(
                "extraArgs entry {arg:?} contains ','; give each value as its own argument \
                 (e.g. two --exclude-table=… entries)"
            )));
        }
        if common.database.is_some() == common.all {
            return Err(JobBuildError::InvalidSource(
                "set exactly one of database or allDatabases: true".into(),
            ));
        }
        let uri = match common.connection {
            Some(_) => None,
            None => {
                let (Some(host), Some(user)) = (common.host, common.user) else {
                    return Err(JobBuildError::InvalidSource(
                        "host and user are required unless connectionSecretRef is set".into(),
                    ));
                };
                Some(connection_uri(
                    engine,
                    host,
                    common.port,
                    user,
                    common.database.map(String::as_str),
                    &params,
                )?)
            }
        };
        Ok(Source {
            engine,
            uri,
            password: common.password.cloned(),
            connection: common.connection.cloned(),
            database: common.database.cloned(),
            all_databases: common.all,
            extra_args: common.extra.to_vec(),
        })
    }

    pub(crate) fn push_args(&self, args: &mut Vec<String>, env: &mut Vec<EnvVar>) {
        push_flag(args, "--engine", self.engine.as_str());
        match (&self.uri, &self.connection) {
            (Some(uri), _) => push_flag(args, "--uri", uri),
            // A URI from a Secret may hold the password: it only ever travels as DG_URI.
            (None, Some(connection)) => env.push(secret_env("DG_URI", connection, false)),
            (None, None) => {}
        }
        if let Some(password) = &self.password {
            env.push(secret_env("DG_PASSWORD", password, false));
        }
        if let Some(database) = &self.database {
            push_flag(args, "--database", database);
        }
        if self.all_databases {
            args.push("--all-databases".into());
        }
    }
}

pub(crate) fn join_key(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// Where the identity Secret is mounted.
pub const IDENTITY_DIR: &str = "/etc/dataguardian/identity";

/// File name of the identity inside [`IDENTITY_DIR`].
pub const IDENTITY_FILE: &str = "identity";

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

/// What a BackupRun's status records about its artifact, as the pin the restore and
/// validation agents check the manifest against. Encryption is pinned only for artifacts the
/// operator confirmed itself (those with a recorded manifest digest): older records took it
/// from the agent's report.
pub fn artifact_pin(artifact: &Artifact) -> ArtifactPin {
    let manifest_sha256 = artifact.manifest_sha256.clone().filter(|d| !d.is_empty());
    let encryption = manifest_sha256
        .as_ref()
        .map(|_| match &artifact.encryption {
            None => ExpectedEncryption::None,
            Some(e) => ExpectedEncryption::Age {
                recipients: e.recipients.clone(),
            },
        });
    ArtifactPin {
        manifest_sha256,
        encryption,
        scope: artifact.scope,
    }
}

/// Passes `pin` to the agent (`--manifest-sha256`, `--expect-encryption`,
/// `--expect-recipient`, `--expect-scope`).
pub(crate) fn push_pin(pin: &ArtifactPin, args: &mut Vec<String>) {
    if let Some(digest) = &pin.manifest_sha256 {
        push_flag(args, MANIFEST_SHA256_FLAG, digest);
    }
    match &pin.encryption {
        None => {}
        Some(ExpectedEncryption::None) => {
            push_flag(args, EXPECT_ENCRYPTION_FLAG, EncryptionMode::None.as_str())
        }
        Some(ExpectedEncryption::Age { recipients }) => {
            push_flag(args, EXPECT_ENCRYPTION_FLAG, EncryptionMode::Age.as_str());
            for r in recipients {
                push_flag(args, EXPECT_RECIPIENT_FLAG, r);
            }
        }
    }
    if let Some(scope) = pin.scope {
        push_flag(args, EXPECT_SCOPE_FLAG, scope.as_str());
    }
}

/// The KMS's own credentials (`credentialsSecretRef` of a KMS key or access) as the agent's
/// `DG_KMS_AWS_*` environment; absent: the pod's workload identity.
pub(crate) fn push_kms_credentials(creds: Option<&LocalObjectReference>, env: &mut Vec<EnvVar>) {
    push_kms_credentials_prefixed(creds, crate::contract::KMS_CREDENTIALS_ENV_PREFIX, env);
}

/// KMS credentials from a Secret as `{prefix}AWS_ACCESS_KEY_ID`, … (references only).
pub(crate) fn push_kms_credentials_prefixed(
    creds: Option<&LocalObjectReference>,
    prefix: &str,
    env: &mut Vec<EnvVar>,
) {
    let Some(creds) = creds else {
        return;
    };
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

/// The KMS key a backup wraps its data key by: `--kms-key`, `--kms-region`, `--kms-endpoint` and
/// its credentials (the backup needs only `kms:Encrypt`).
pub(crate) fn push_kms_key(kms: &KmsKey, args: &mut Vec<String>, env: &mut Vec<EnvVar>) {
    push_flag(args, "--kms-key", &kms.key_id);
    push_flag(args, "--kms-region", &kms.region);
    if let Some(endpoint) = &kms.endpoint {
        push_flag(args, "--kms-endpoint", endpoint);
    }
    push_kms_credentials(kms.credentials_secret_ref.as_ref(), env);
}

/// What unwraps a restore's or validation's data key: the identity Secret mounted read-only
/// (`--identity-file`) and/or KMS `Decrypt` (`--kms`, region, endpoint, credentials).
pub(crate) fn push_identity(
    decryption: Option<&Decryption>,
    args: &mut Vec<String>,
    env: &mut Vec<EnvVar>,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) {
    let Some(decryption) = decryption else {
        return;
    };
    if let Some(kms) = &decryption.kms {
        args.push("--kms".into());
        if let Some(region) = &kms.region {
            push_flag(args, "--kms-region", region);
        }
        if let Some(endpoint) = &kms.endpoint {
            push_flag(args, "--kms-endpoint", endpoint);
        }
        push_kms_credentials(kms.credentials_secret_ref.as_ref(), env);
    }
    let Some(selector) = &decryption.identity_secret_ref else {
        return;
    };
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

/// Builds a connection URI without a password, percent-encoding user and database.
pub(crate) fn connection_uri(
    engine: Engine,
    host: &str,
    port: u16,
    user: &str,
    database: Option<&str>,
    params: &[(&str, String)],
) -> Result<String, JobBuildError> {
    let scheme = match engine {
        Engine::Postgres => "postgresql",
        Engine::Mysql => "mysql",
    };
    let host_part = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]") // IPv6 literal
    } else {
        host.to_owned()
    };
    let mut url = url::Url::parse(&format!("{scheme}://{host_part}:{port}/")).map_err(|e| {
        JobBuildError::InvalidSource(format!("host {host:?} does not form a valid URI: {e}"))
    })?;
    url.set_username(user)
        .map_err(|()| JobBuildError::InvalidSource(format!("user {user:?} is not usable")))?;
    if let Some(db) = database {
        url.path_segments_mut()
            .map_err(|()| JobBuildError::InvalidSource("cannot set the database".into()))?
            .clear()
            .push(db);
    }
    if !params.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
    }
    Ok(url.to_string())
}
