//! `dataguardian agent …`: the data path inside Jobs (and by hand without Kubernetes).
//!
//! Every flag can also come from an environment variable (`DG_…`), which is how Jobs pass
//! settings. Secrets never come from argv: a password inside `--uri` is refused unless the URI
//! came from `DG_URI` or `--uri-file`; the password can also come from `DG_PASSWORD` or
//! `--password-file`. S3 credentials come from the standard AWS environment/IRSA chain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

pub mod copy;
pub mod prune;
pub mod rewrap;
pub mod validate;

use crate::agent::backup::{self, BackupRequest};
use crate::agent::compress::Compression;
use crate::agent::crypto::Recipients;
use crate::agent::engine::{DbUri, Secret};
use crate::agent::error::{AgentError, Result};
use crate::agent::kms::KmsSettings;
use crate::agent::manifest::{Engine, sanitize};
use crate::agent::restore::{self, RestoreRequest};
use crate::agent::staging::Staging;
use crate::agent::storage::{Location, LockMode, ObjectLock, S3Settings, Sse};
use crate::agent::summary;
use crate::api::restore_run::MaskingSpec;
use crate::contract::{
    ArtifactPin, BackupScope, DropPreviousSummary, EncryptionMode, ExpectedEncryption,
    LOG_FORMAT_ENV, Operation, TERMINATION_LOG_ENV,
};

/// `dataguardian agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// Agent operations.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Dump a database, compress, encrypt, checksum and store it, then write manifest.json.
    Backup(BackupArgs),
    /// Restore a backup from its manifest.json, verifying its checksum.
    Restore(RestoreArgs),
    /// Restore a backup into a sandbox database and check it (row counts, SQL, schema).
    Validate(validate::ValidateArgs),
    /// Delete one backup's artifact from a directory (a filesystem storage): manifest first.
    Prune(prune::PruneArgs),
    /// Drop a previous target a staged restore kept (`<db>_dgprev_<UTC time>`), after its
    /// grace period.
    DropPrevious(DropPreviousArgs),
    /// Copy one backup (its artifacts, then its manifest) to another storage, checking every
    /// artifact's SHA-256 against the manifest. Needs no key: artifacts stay encrypted.
    Copy(copy::CopyArgs),
    /// Re-key one backup: unwrap its data key with the old key (identity file or KMS) and wrap
    /// it for the new recipients and/or KMS key. Only the manifest is rewritten (a new version
    /// in a versioned bucket); the artifacts are untouched.
    Rewrap(rewrap::RewrapArgs),
    /// Measure this node's backup data path (compression, age encryption, SHA-256) on
    /// generated data, without a database or storage: prints throughput and peak memory as
    /// JSON. Also what the CI performance gate runs under callgrind.
    Bench(BenchArgs),
    /// Internal: run a validation's user-written checks (a job on stdin, results on stdout).
    /// `agent validate` starts it with an empty environment; not for use by hand.
    #[command(hide = true)]
    Checks(ChecksArgs),
}

/// `agent checks` (internal).
#[derive(Debug, Args)]
pub struct ChecksArgs {
    /// Log format.
    #[arg(long, env = LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// `agent bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// MiB of generated data (a third random bytes, two thirds dump-like rows).
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Seed of the generated data (same seed, same bytes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compression, as a policy's: `zstd:3`, `gzip:6`, `none`.
    #[arg(long, default_value = "zstd:3")]
    pub compression: String,
    /// Streams at once, as a parallel backup's `--parallelism` (the data split among them).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
}

fn run_bench(args: &BenchArgs) -> ExitCode {
    tune_allocator();
    let result = args
        .compression
        .parse::<crate::agent::compress::Compression>()
        .map_err(AgentError::Config)
        .and_then(|c| crate::agent::bench::run(args.mib, args.seed, c, args.jobs));
    match result {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_checks(args: &ChecksArgs) -> ExitCode {
    init_logging(args.log_format);
    let result = runtime()
        .map_err(AgentError::Io)
        .and_then(|rt| rt.block_on(crate::agent::checks::serve_stdio()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "the checks could not run");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `--engine`: the API's engine names (`postgres`, `mysql`), listed in `--help`.
fn engine_parser() -> impl clap::builder::TypedValueParser<Value = Engine> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Engine::ALL.map(Engine::as_str))
        .try_map(|name| name.parse::<Engine>())
}

/// Connection, storage and logging settings shared by backup and restore.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Database engine.
    #[arg(long, env = "DG_ENGINE", value_parser = engine_parser())]
    pub engine: Engine,
    /// Connection URI (postgresql://user@host:port/db, mysql://user@host:port/db). A password
    /// in it is accepted only from the DG_URI environment variable, never from argv.
    #[arg(long, env = "DG_URI", hide_env_values = true)]
    pub uri: Option<String>,
    /// File holding the connection URI (may contain the password).
    #[arg(long, env = "DG_URI_FILE")]
    pub uri_file: Option<PathBuf>,
    /// File holding the database password (else DG_PASSWORD, else the URI's).
    #[arg(long, env = "DG_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Database (default: the URI's database).
    #[arg(long, env = "DG_DATABASE")]
    pub database: Option<String>,
    /// S3 endpoint for S3-compatible servers (http:// allowed).
    #[arg(long, env = "DG_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "DG_S3_REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing.
    #[arg(long, env = "DG_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Size of the first 1,000 multipart parts in MiB (5 to 5120); later parts double every
    /// 1,000 so that 10,000 parts hold ≈ 1,000,000 times this size (4.9 TiB from 5 MiB).
    /// `--s3-concurrency` + 1 parts are in memory at most.
    #[arg(long, env = "DG_S3_PART_SIZE_MIB", default_value_t = 5)]
    pub s3_part_size_mib: usize,
    /// Parts uploaded in parallel.
    #[arg(long, env = "DG_S3_CONCURRENCY", default_value_t = 2)]
    pub s3_concurrency: usize,
    /// Retries per S3 request (each part is retried on its own) after the first attempt.
    #[arg(long, env = "DG_S3_RETRIES", default_value_t = 4)]
    pub s3_retries: u32,
    /// First retry backoff in milliseconds (doubles per retry, at most 8 s).
    #[arg(long, env = "DG_S3_BACKOFF_MS", default_value_t = 250)]
    pub s3_backoff_ms: u64,
    /// Timeout of one S3 request attempt, in seconds.
    #[arg(long, env = "DG_S3_TIMEOUT_SECONDS", default_value_t = 120)]
    pub s3_timeout_seconds: u64,
    /// Internal address ranges (comma-separated CIDRs) the S3 endpoint may resolve to; the
    /// operator passes its own list. Loopback, private, CGNAT and unique-local addresses are
    /// refused unless listed; link-local (cloud metadata) always. By hand against a local
    /// server: `--egress-allow-cidrs 127.0.0.0/8`. With `HTTPS_PROXY`/`HTTP_PROXY` set (and
    /// `NO_PROXY` for exceptions), S3 requests go through that proxy; the endpoint itself must
    /// still pass this check (the proxy's own address is not checked).
    #[arg(long, env = crate::egress::ENV_ALLOW_CIDRS, default_value = "", value_parser = crate::cli::operator::parse_egress)]
    pub egress_allow_cidrs: crate::egress::EgressPolicy,
    /// Where to write the Kubernetes termination message (default /dev/termination-log when
    /// writable; an empty value disables it).
    #[arg(long, env = TERMINATION_LOG_ENV)]
    pub termination_log: Option<PathBuf>,
    /// Seconds between progress log lines.
    #[arg(long, env = "DG_PROGRESS_INTERVAL_SECONDS", default_value_t = 5)]
    pub progress_interval_seconds: u64,
    /// Log format on stderr.
    #[arg(long, env = LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// `agent backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Back up every database (PostgreSQL: plus roles and tablespaces).
    #[arg(long, env = "DG_ALL_DATABASES")]
    pub all_databases: bool,
    /// Destination: s3://bucket/prefix or file:///dir. The backup goes to <to>/<run-id>/.
    #[arg(long, env = "DG_TO")]
    pub to: String,
    /// Directory name of this backup under --to (default: UTC time and database).
    #[arg(long, env = "DG_RUN_ID")]
    pub run_id: Option<String>,
    /// zstd[:LEVEL] (default zstd:3), gzip[:LEVEL] or none.
    #[arg(long, env = "DG_COMPRESSION", default_value = "zstd:3")]
    pub compression: Compression,
    /// age X25519 recipient (public key); repeat for several. From the environment: comma-separated.
    #[arg(long = "recipient", env = "DG_RECIPIENTS", value_delimiter = ',')]
    pub recipients: Vec<String>,
    /// File with age recipients, one per line.
    #[arg(long, env = "DG_RECIPIENTS_FILE")]
    pub recipients_file: Option<PathBuf>,
    #[command(flatten)]
    pub kms: KmsArgs,
    /// S3 Object Lock mode for every object written.
    #[arg(
        long,
        env = "DG_OBJECT_LOCK_MODE",
        value_enum,
        requires = "object_lock_days"
    )]
    pub object_lock_mode: Option<LockMode>,
    /// S3 Object Lock retention in days.
    #[arg(long, env = "DG_OBJECT_LOCK_DAYS", requires = "object_lock_mode")]
    pub object_lock_days: Option<u32>,
    /// S3 server-side encryption: aws:kms or AES256.
    #[arg(long, env = "DG_SSE")]
    pub sse: Option<String>,
    /// KMS key id for --sse aws:kms.
    #[arg(long, env = "DG_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// S3 storage class.
    #[arg(long, env = "DG_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Extra argument for the dump tool (repeatable).
    #[arg(
        long = "dump-arg",
        env = "DG_DUMP_ARGS",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub dump_args: Vec<String>,
    /// How many dumps of one database run at once inside one snapshot (the parallel layout:
    /// the tables in several artifacts; MySQL/MariaDB need RELOAD for a brief global read
    /// lock). Default: the CPUs this process may use (its cgroup CPU limit), at most 8; 1 keeps
    /// one stream.
    #[arg(long, env = "DG_PARALLELISM", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: Option<u16>,
    /// The parallel layout only for a database whose tables hold at least this many bytes (smaller ones keep one stream, which is as fast for them).
    #[arg(long, env = "DG_PARALLEL_MIN_BYTES", default_value_t = crate::agent::backup::DEFAULT_PARALLEL_MIN_BYTES)]
    pub parallel_min_bytes: u64,
}

fn parallelism(flag: Option<u16>) -> usize {
    flag.map(usize::from)
        .unwrap_or_else(crate::agent::backup::default_parallelism)
}

/// A KMS key wrapping each run's data key (beside or instead of `--recipient`).
#[derive(Debug, Args, Default, Clone)]
pub struct KmsArgs {
    /// AWS KMS key (key id, key ARN, `alias/NAME` or alias ARN) that wraps each run's data key;
    /// the backup needs only kms:Encrypt on it. Credentials: the standard AWS chain, as for S3.
    #[arg(long, env = "DG_KMS_KEY")]
    pub kms_key: Option<String>,
    #[command(flatten)]
    pub access: KmsAccessArgs,
}

/// How to reach the KMS (restore, validate: the key and region come from the manifest's wrap).
/// KMS is asked only when one of these flags is given.
#[derive(Debug, Args, Default, Clone)]
pub struct KmsAccessArgs {
    /// Unwrap the data key with AWS KMS Decrypt (the key and region recorded in the manifest)
    /// when the identity file opens none of its wraps or none is given. Implied by
    /// --kms-endpoint and --kms-region.
    #[arg(long = "kms", env = "DG_KMS")]
    pub use_kms: bool,
    /// KMS endpoint for KMS-compatible services (http:// allowed); subject to
    /// --egress-allow-cidrs like the S3 endpoint.
    #[arg(long, env = "DG_KMS_ENDPOINT")]
    pub kms_endpoint: Option<String>,
    /// KMS region (default: the region recorded with the wrap, else AWS_REGION, else
    /// us-east-1).
    #[arg(long, env = "DG_KMS_REGION")]
    pub kms_region: Option<String>,
}

impl KmsAccessArgs {
    /// The KMS settings for unwrapping, when KMS is to be asked at all.
    pub fn unwrap_settings(&self, egress: &crate::egress::EgressPolicy) -> Option<KmsSettings> {
        (self.use_kms || self.kms_endpoint.is_some() || self.kms_region.is_some())
            .then(|| self.settings(egress))
    }

    /// The KMS settings, with the egress policy of the S3 endpoint.
    pub fn settings(&self, egress: &crate::egress::EgressPolicy) -> KmsSettings {
        KmsSettings {
            endpoint: self.kms_endpoint.clone(),
            region: self.kms_region.clone(),
            egress: egress.clone(),
            credentials: crate::agent::kms::credentials_from_env(),
        }
    }
}

impl KmsArgs {
    /// The key and its settings, when a key is given.
    pub fn key(&self, egress: &crate::egress::EgressPolicy) -> Option<(String, KmsSettings)> {
        self.kms_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| (k.to_string(), self.access.settings(egress)))
    }
}

/// What the operator recorded about a backup (restore and validate): the agent refuses a
/// manifest that differs before it touches any database.
#[derive(Debug, Args, Default)]
pub struct PinArgs {
    /// Hex SHA-256 the manifest's bytes must have (pins every artifact digest it lists).
    #[arg(long, env = "DG_MANIFEST_SHA256")]
    pub manifest_sha256: Option<String>,
    /// Whether the backup must be encrypted: none or age.
    #[arg(long, env = "DG_EXPECT_ENCRYPTION", value_parser = encryption_mode_parser())]
    pub expect_encryption: Option<EncryptionMode>,
    /// Recipient fingerprint the manifest must list (repeat; the set must match exactly).
    /// Requires --expect-encryption age.
    #[arg(
        long = "expect-recipient",
        env = "DG_EXPECT_RECIPIENTS",
        value_delimiter = ','
    )]
    pub expect_recipients: Vec<String>,
    /// What the backup must hold: Database or AllDatabases.
    #[arg(long, env = "DG_EXPECT_SCOPE", value_parser = scope_parser())]
    pub expect_scope: Option<BackupScope>,
}

fn encryption_mode_parser() -> impl clap::builder::TypedValueParser<Value = EncryptionMode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(EncryptionMode::ALL.map(EncryptionMode::as_str))
        .try_map(|name| name.parse::<EncryptionMode>())
}

fn scope_parser() -> impl clap::builder::TypedValueParser<Value = BackupScope> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(BackupScope::ALL.map(BackupScope::as_str))
        .try_map(|name| name.parse::<BackupScope>())
}

impl PinArgs {
    /// The pin, or a configuration error for an inconsistent set of flags.
    pub fn pin(&self) -> Result<ArtifactPin> {
        let recipients: Vec<String> = self
            .expect_recipients
            .iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        let encryption = match (self.expect_encryption, recipients.is_empty()) {
            (None, true) => None,
            (None, false) | (Some(EncryptionMode::None), false) => {
                return Err(AgentError::Config(
                    "--expect-recipient needs --expect-encryption age".into(),
                ));
            }
            (Some(EncryptionMode::None), true) => Some(ExpectedEncryption::None),
            (Some(EncryptionMode::Age), _) => Some(ExpectedEncryption::Age { recipients }),
        };
        let manifest_sha256 = parse_manifest_sha256(self.manifest_sha256.as_deref())?;
        Ok(ArtifactPin {
            manifest_sha256,
            encryption,
            scope: self.expect_scope,
        })
    }
}

/// `agent restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The backup's manifest: s3://bucket/…/manifest.json or file:///…/manifest.json.
    #[arg(long, env = "DG_FROM")]
    pub from: String,
    #[command(flatten)]
    pub pin: PinArgs,
    /// age identity file for encrypted backups.
    #[arg(long, env = "DG_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,
    /// KMS access for a data key wrapped by KMS (asked when the identity file opens none of
    /// the wraps, or none is given).
    #[command(flatten)]
    pub kms: KmsAccessArgs,
    /// Create the target database when it does not exist.
    #[arg(long, env = "DG_CREATE_DATABASE")]
    pub create_database: bool,
    /// Drop existing objects first (PostgreSQL --clean --if-exists; MySQL drops and recreates the database).
    #[arg(long, env = "DG_CLEAN")]
    pub clean: bool,
    /// Allow restoring into a database that is not empty.
    #[arg(long, env = "DG_OVERWRITE")]
    pub overwrite: bool,
    /// Download and verify every artifact completely before touching the target.
    #[arg(long, env = "DG_VERIFY_FIRST")]
    pub verify_first: bool,
    /// PostgreSQL: do not restore object ownership.
    #[arg(long, env = "DG_NO_OWNER")]
    pub no_owner: bool,
    /// PostgreSQL: restore in one transaction (all or nothing).
    #[arg(long, env = "DG_SINGLE_TRANSACTION")]
    pub single_transaction: bool,
    /// Extra argument for pg_restore (repeatable).
    #[arg(
        long = "restore-arg",
        env = "DG_RESTORE_ARGS",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub restore_args: Vec<String>,
    /// auto (staged for one database, in place for allDatabases), staged, or in-place.
    /// Staged: restore into `<db>_dgstaging`, verify the checksum as the stream ends, mask,
    /// then swap it in; any failure leaves the target as it was.
    #[arg(long, env = "DG_STAGING", default_value = "auto")]
    pub staging: Staging,
    /// Staged: terminate sessions connected to the target for the swap (else a target in use
    /// fails the restore and is left as it was).
    #[arg(long, env = "DG_TERMINATE_SESSIONS")]
    pub terminate_sessions: bool,
    /// Staged: keep the previous target as `<db>_dgprev_<UTC time>` instead of dropping it.
    #[arg(long, env = "DG_KEEP_PREVIOUS")]
    pub keep_previous: bool,
    /// Staged: masking rules and guard as JSON (`{"rules":[{"table":"t","columns":[{"name":
    /// "c","expression":"…"}]},{"sql":"…"}],"guard":"SELECT …"}`), run in the staging
    /// database before the swap.
    #[arg(long, env = "DG_MASKING")]
    pub masking: Option<String>,
    /// Parallel layout: how many tables' artifacts load at once (and PostgreSQL's `pg_restore
    /// --jobs` for indexes and constraints). Default: the CPUs this process may use, at most 8.
    #[arg(long, env = "DG_PARALLELISM", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: Option<u16>,
}

/// `agent drop-previous`.
#[derive(Debug, Args)]
pub struct DropPreviousArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The previous target to drop (`<db>_dgprev_<UTC time>`; nothing else is accepted).
    #[arg(long, env = "DG_PREVIOUS_DATABASE")]
    pub previous: String,
}

/// The agent's root span: a child of the operator's Job-creation span when the Job's
/// `TRACEPARENT` says so, so that the run's whole story is one trace.
pub(crate) fn agent_span(name: &'static str) -> tracing::Span {
    let span = tracing::info_span!("agent", otel.name = name);
    crate::telemetry::otel::continue_from_env(&span);
    span
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DG_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn")
    });
    let format = match format {
        LogFormat::Json => crate::telemetry::logging::LogFormat::Json,
        LogFormat::Text => crate::telemetry::logging::LogFormat::Text,
    };
    crate::telemetry::logging::install(filter, format, "dataguardian-agent");
}

/// Resolve the connection URI and its password without ever taking a secret from argv.
pub fn resolve_uri(common: &CommonArgs) -> Result<DbUri> {
    let env_uri = std::env::var("DG_URI").ok();
    let (text, from_argv) = match (&common.uri, &common.uri_file) {
        (Some(_), Some(_)) => {
            return Err(AgentError::Config(
                "give either --uri or --uri-file, not both".into(),
            ));
        }
        (Some(u), None) => (u.clone(), env_uri.as_deref() != Some(u.as_str())),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .map_err(|e| {
                    AgentError::Config(format!("cannot read --uri-file {}: {e}", f.display()))
                })?
                .trim()
                .to_string(),
            false,
        ),
        (None, None) => {
            return Err(AgentError::Config(
                "no connection: give --uri, DG_URI or --uri-file".into(),
            ));
        }
    };
    let mut uri = DbUri::parse(&text)?;
    if uri.password.is_some() && from_argv {
        return Err(AgentError::Config(
            "refusing a password in --uri on the command line (visible in the process list); \
             put the URI in DG_URI or --uri-file, or the password in DG_PASSWORD or --password-file"
                .into(),
        ));
    }
    if let Some(f) = &common.password_file {
        let pw = std::fs::read_to_string(f).map_err(|e| {
            AgentError::Config(format!("cannot read --password-file {}: {e}", f.display()))
        })?;
        uri.password = Some(Secret(pw.trim_end_matches(['\n', '\r']).to_string()));
    } else if uri.password.is_none()
        && let Ok(pw) = std::env::var("DG_PASSWORD")
    {
        uri.password = Some(Secret(pw));
    }
    let scheme_engine = match uri.scheme.as_str() {
        "postgres" | "postgresql" => Engine::Postgres,
        _ => Engine::Mysql,
    };
    if scheme_engine != common.engine {
        return Err(AgentError::Config(format!(
            "--engine {} does not match the URI scheme {}://",
            common.engine, uri.scheme
        )));
    }
    Ok(uri)
}

/// `--manifest-sha256`: empty or a hex SHA-256 (returned lower-case).
pub(crate) fn parse_manifest_sha256(value: Option<&str>) -> Result<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(d.to_ascii_lowercase()))
        }
        Some(d) => Err(AgentError::Config(format!(
            "--manifest-sha256 {d:?} is not a hex SHA-256"
        ))),
    }
}

/// What every object written to S3 gets: `--object-lock-mode`/`--object-lock-days`, `--sse`
/// (with `--sse-kms-key-id`) and `--storage-class`.
pub(crate) fn apply_write_options(
    s3: &mut S3Settings,
    lock: Option<(LockMode, u32)>,
    sse: Option<&str>,
    sse_kms_key_id: Option<&str>,
    storage_class: Option<&str>,
) -> Result<()> {
    if let Some((mode, days)) = lock {
        if days == 0 {
            return Err(AgentError::Config(
                "--object-lock-days must be at least 1".into(),
            ));
        }
        s3.object_lock = Some(ObjectLock { mode, days });
    }
    s3.sse = match sse {
        None => None,
        Some("AES256") | Some("aes256") => Some(Sse::Aes256),
        Some("aws:kms") | Some("kms") => Some(Sse::Kms {
            key_id: sse_kms_key_id.map(str::to_string),
        }),
        Some(other) => {
            return Err(AgentError::Config(format!(
                "--sse must be aws:kms or AES256, not {other:?}"
            )));
        }
    };
    s3.storage_class = storage_class.map(str::to_string);
    Ok(())
}

pub(crate) fn s3_settings(common: &CommonArgs) -> S3Settings {
    S3Settings {
        endpoint: common.s3_endpoint.clone(),
        region: common.s3_region.clone(),
        path_style: common.s3_path_style,
        part_size: common.s3_part_size_mib.saturating_mul(1 << 20),
        concurrency: common.s3_concurrency,
        retries: common.s3_retries,
        backoff: Duration::from_millis(common.s3_backoff_ms),
        attempt_timeout: Duration::from_secs(common.s3_timeout_seconds.max(1)),
        egress: common
            .egress_allow_cidrs
            .clone()
            .with_proxy(crate::egress::ProxyConfig::from_env().unwrap_or_default()),
        ..S3Settings::default()
    }
}

fn backup_request(args: &BackupArgs) -> Result<BackupRequest> {
    let uri = resolve_uri(&args.common)?;
    let database = if args.all_databases {
        args.common.database.clone()
    } else {
        args.common
            .database
            .clone()
            .or_else(|| uri.database.clone())
    };
    let mut recipients = Recipients::parse(args.recipients.iter().map(String::as_str))?;
    if let Some(f) = &args.recipients_file {
        recipients.extend(Recipients::from_file(f)?);
    }
    let mut s3 = s3_settings(&args.common);
    apply_write_options(
        &mut s3,
        args.object_lock_mode.zip(args.object_lock_days),
        args.sse.as_deref(),
        args.sse_kms_key_id.as_deref(),
        args.storage_class.as_deref(),
    )?;
    let destination: Location = args.to.parse()?;
    let run_id = match &args.run_id {
        Some(id) => id.clone(),
        None => format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            sanitize(database.as_deref().unwrap_or("all-databases"))
        ),
    };
    Ok(BackupRequest {
        engine: args.common.engine,
        uri,
        database,
        all_databases: args.all_databases,
        destination,
        run_id,
        compression: args.compression,
        recipients,
        kms: args.kms.key(&args.common.egress_allow_cidrs),
        s3,
        dump_args: args.dump_args.clone(),
        progress_interval: Duration::from_secs(args.common.progress_interval_seconds.max(1)),
        parallelism: parallelism(args.parallelism),
        parallel_min_bytes: args.parallel_min_bytes,
    })
}

fn restore_request(args: &RestoreArgs) -> Result<RestoreRequest> {
    Ok(RestoreRequest {
        engine: args.common.engine,
        uri: resolve_uri(&args.common)?,
        database: args.common.database.clone(),
        from: args.from.parse()?,
        pin: args.pin.pin()?,
        identity_file: args.identity_file.clone(),
        kms: args.kms.unwrap_settings(&args.common.egress_allow_cidrs),
        create_database: args.create_database,
        clean: args.clean,
        overwrite: args.overwrite,
        verify_first: args.verify_first,
        no_owner: args.no_owner,
        single_transaction: args.single_transaction,
        restore_args: args.restore_args.clone(),
        s3: s3_settings(&args.common),
        progress_interval: Duration::from_secs(args.common.progress_interval_seconds.max(1)),
        staging: args.staging,
        terminate_sessions: args.terminate_sessions,
        keep_previous: args.keep_previous,
        masking: args
            .masking
            .as_deref()
            .map(|m| {
                serde_json::from_str::<MaskingSpec>(m).map_err(|e| {
                    AgentError::Config(format!("--masking is not valid JSON masking rules: {e}"))
                })
            })
            .transpose()?,
        parallelism: parallelism(args.parallelism),
    })
}

/// Keep the agent's memory flat: large pipeline buffers (S3 parts, zstd jobs) are freed back to
/// the OS instead of lingering in glibc arenas, whose dynamic mmap threshold otherwise grows to
/// the part size and fragments the heap as the run goes on.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before any other thread
    // of this process exists (the runtime is built afterwards).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Run an agent subcommand; prints the JSON summary and returns the exit code.
pub fn run(args: AgentArgs) -> ExitCode {
    let clock = Instant::now();
    let (operation, common) = match &args.command {
        AgentCommand::Backup(b) => (Operation::Backup, &b.common),
        AgentCommand::Restore(r) => (Operation::Restore, &r.common),
        AgentCommand::DropPrevious(d) => (Operation::DropPrevious, &d.common),
        AgentCommand::Validate(v) => return validate::run_cli(v),
        AgentCommand::Prune(p) => return prune::run_cli(p),
        AgentCommand::Copy(c) => return copy::run_cli(c),
        AgentCommand::Rewrap(r) => return rewrap::run_cli(r),
        AgentCommand::Checks(c) => return run_checks(c),
        AgentCommand::Bench(b) => return run_bench(b),
    };
    tune_allocator();
    init_logging(common.log_format);
    let termination_log = summary::termination_log_path(common.termination_log.clone());
    let root = agent_span(match operation {
        Operation::Backup => "agent backup",
        _ => "agent restore",
    });
    let result = runtime().map_err(AgentError::Io).and_then(|rt| {
        rt.block_on(crate::telemetry::otel::in_span(root, async {
            match &args.command {
                AgentCommand::Backup(b) => {
                    let outcome = backup::run(backup_request(b)?).await?;
                    Ok(summary::backup_summary(&outcome))
                }
                AgentCommand::Restore(r) => {
                    let req = restore_request(r)?;
                    let from = req.from.clone();
                    let outcome = restore::run(req).await?;
                    Ok(summary::restore_summary(&outcome, &from))
                }
                AgentCommand::DropPrevious(d) => {
                    let (engine, uri, name) =
                        (d.common.engine, resolve_uri(&d.common)?, d.previous.clone());
                    let clock = Instant::now();
                    let existed = crate::agent::blocking({
                        let name = name.clone();
                        move || restore::drop_previous(engine, &uri, &name)
                    })
                    .await?;
                    tracing::info!(database = %name, existed, "previous target dropped");
                    Ok(DropPreviousSummary {
                        database: name,
                        existed,
                        duration_seconds: clock.elapsed().as_secs_f64(),
                    }
                    .into())
                }
                AgentCommand::Validate(_)
                | AgentCommand::Prune(_)
                | AgentCommand::Copy(_)
                | AgentCommand::Rewrap(_)
                | AgentCommand::Checks(_)
                | AgentCommand::Bench(_) => Err(AgentError::Config(
                    "validate, prune, copy, checks and bench run on their own paths".into(),
                )),
            }
        }))
    });
    match result {
        Ok(v) => {
            summary::emit(&v, termination_log.as_deref());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "{operation} failed");
            summary::emit(
                &summary::failure_summary(operation, &e, clock.elapsed().as_secs_f64()),
                termination_log.as_deref(),
            );
            ExitCode::from(e.exit_code())
        }
    }
}
