//! `dataguardian agent rewrap`: the command line and the process frame around
//! [`crate::agent::rewrap`].
//!
//! The old key is an identity file (`--identity-file`) or KMS `Decrypt` (the key and region
//! recorded in the manifest; `--kms-endpoint`/`--kms-region` say how to reach it, or
//! `--previous-kms-endpoint`/`--previous-kms-region` with the `DG_PREVIOUS_KMS_*` credentials
//! when the old key lives elsewhere than the new one); the new keys
//! are `--recipient`/`--recipients-file` and/or `--kms-key` (KMS `Encrypt`). Credentials (S3
//! and KMS) come from the standard AWS chain, never from argv.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::agent::crypto::Recipients;
use crate::agent::envelope::{Unwrapper, WrapTargets};
use crate::agent::error::{AgentError, Result};
use crate::agent::rewrap::{RewrapRequest, run};
use crate::agent::storage::{LockMode, S3Settings};
use crate::agent::summary;
use crate::contract::{LOG_FORMAT_ENV, Operation, TERMINATION_LOG_ENV};

use super::{KmsArgs, LogFormat};

/// `dataguardian agent rewrap`.
#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The backup's manifest: s3://bucket/…/manifest.json or file:///…/manifest.json.
    #[arg(long, env = "DG_FROM")]
    pub from: String,
    /// Hex SHA-256 the manifest must have (the digest the operator recorded): a manifest with
    /// other bytes is not touched.
    #[arg(long, env = "DG_MANIFEST_SHA256")]
    pub manifest_sha256: Option<String>,
    /// The old key: an age identity file that opens one of the current wraps.
    #[arg(long, env = "DG_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,
    /// The new age recipients (public keys); repeat for several. From the environment:
    /// comma-separated.
    #[arg(long = "recipient", env = "DG_RECIPIENTS", value_delimiter = ',')]
    pub recipients: Vec<String>,
    /// File with the new age recipients, one per line.
    #[arg(long, env = "DG_RECIPIENTS_FILE")]
    pub recipients_file: Option<PathBuf>,
    /// The new KMS key (`--kms-key`) and how to reach the KMS (also for the old KMS wraps).
    #[command(flatten)]
    pub kms: KmsArgs,
    /// Endpoint of the KMS holding the OLD key, when it differs from the new key's (another
    /// KMS-compatible service); implies KMS unwrapping. Credentials:
    /// `DG_PREVIOUS_KMS_AWS_ACCESS_KEY_ID`/`…SECRET_ACCESS_KEY`/`…SESSION_TOKEN`, else the
    /// standard AWS chain.
    #[arg(long, env = "DG_PREVIOUS_KMS_ENDPOINT")]
    pub previous_kms_endpoint: Option<String>,
    /// Region of the OLD KMS key, when it differs from the one recorded with the wrap; implies
    /// KMS unwrapping.
    #[arg(long, env = "DG_PREVIOUS_KMS_REGION")]
    pub previous_kms_region: Option<String>,
    /// Unwrap the old KMS wraps with the `--previous-kms-*` settings (and the
    /// `DG_PREVIOUS_KMS_*` credentials) rather than the new key's `--kms-*` ones.
    #[arg(long, env = "DG_PREVIOUS_KMS")]
    pub previous_kms: bool,
    /// A manifest written before envelope encryption (its artifacts encrypted straight to the
    /// recipients: nothing to re-wrap) is reported in a succeeded summary (`notRewrappable`)
    /// and left as it is, instead of failing (the rotation Job's way: the next backups go on).
    #[arg(long, env = "DG_REPORT_NOT_REWRAPPABLE")]
    pub report_not_rewrappable: bool,
    /// S3 endpoint for S3-compatible servers (http:// allowed).
    #[arg(long, env = "DG_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "DG_S3_REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing.
    #[arg(long, env = "DG_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Object Lock mode of the new manifest version.
    #[arg(
        long,
        env = "DG_OBJECT_LOCK_MODE",
        value_enum,
        requires = "object_lock_days"
    )]
    pub object_lock_mode: Option<LockMode>,
    /// Object Lock retention of the new manifest version, in days.
    #[arg(long, env = "DG_OBJECT_LOCK_DAYS", requires = "object_lock_mode")]
    pub object_lock_days: Option<u32>,
    /// Retries per S3 request after the first attempt.
    #[arg(long, env = "DG_S3_RETRIES", default_value_t = 4)]
    pub s3_retries: u32,
    /// Internal address ranges (comma-separated CIDRs) the S3 and KMS endpoints may resolve to.
    #[arg(long, env = crate::egress::ENV_ALLOW_CIDRS, default_value = "", value_parser = crate::cli::operator::parse_egress)]
    pub egress_allow_cidrs: crate::egress::EgressPolicy,
    /// Where to write the Kubernetes termination message.
    #[arg(long, env = TERMINATION_LOG_ENV)]
    pub termination_log: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

fn request(args: &RewrapArgs) -> Result<RewrapRequest> {
    let mut recipients = Recipients::parse(args.recipients.iter().map(String::as_str))?;
    if let Some(f) = &args.recipients_file {
        recipients.extend(Recipients::from_file(f)?);
    }
    let mut s3 = S3Settings {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        path_style: args.s3_path_style,
        retries: args.s3_retries,
        backoff: Duration::from_millis(250),
        egress: args
            .egress_allow_cidrs
            .clone()
            .with_proxy(crate::egress::ProxyConfig::from_env().unwrap_or_default()),
        ..S3Settings::default()
    };
    super::apply_write_options(
        &mut s3,
        args.object_lock_mode.zip(args.object_lock_days),
        None,
        None,
        None,
    )?;
    Ok(RewrapRequest {
        from: args.from.parse()?,
        manifest_sha256: super::parse_manifest_sha256(args.manifest_sha256.as_deref())?,
        old: Unwrapper {
            identity_file: args.identity_file.clone(),
            kms: previous_kms_settings(args)
                .or_else(|| args.kms.access.unwrap_settings(&args.egress_allow_cidrs)),
        },
        report_not_rewrappable: args.report_not_rewrappable,
        new: WrapTargets {
            recipients,
            kms: args.kms.key(&args.egress_allow_cidrs),
        },
        s3,
    })
}

/// How the OLD KMS key is reached, when `--previous-kms*` says so: its own endpoint, region and
/// credentials (`DG_PREVIOUS_KMS_*`), never the new key's.
fn previous_kms_settings(args: &RewrapArgs) -> Option<crate::agent::kms::KmsSettings> {
    (args.previous_kms
        || args.previous_kms_endpoint.is_some()
        || args.previous_kms_region.is_some())
    .then(|| crate::agent::kms::KmsSettings {
        endpoint: args.previous_kms_endpoint.clone(),
        region: args.previous_kms_region.clone(),
        egress: args.egress_allow_cidrs.clone(),
        credentials: crate::agent::kms::credentials_from_env_prefix(
            crate::contract::PREVIOUS_KMS_CREDENTIALS_ENV_PREFIX,
        ),
    })
}

/// Runs `agent rewrap`: prints the JSON summary and returns the exit code.
pub fn run_cli(args: &RewrapArgs) -> ExitCode {
    let clock = Instant::now();
    super::init_logging(args.log_format);
    let termination_log = summary::termination_log_path(args.termination_log.clone());
    let result = super::runtime().map_err(AgentError::Io).and_then(|rt| {
        rt.block_on(crate::telemetry::otel::in_span(
            super::agent_span("agent rewrap"),
            async { run(request(args)?).await },
        ))
    });
    match result {
        Ok(s) => {
            summary::emit(&s.into(), termination_log.as_deref());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "rewrap failed");
            summary::emit(
                &summary::failure_summary(Operation::Rewrap, &e, clock.elapsed().as_secs_f64()),
                termination_log.as_deref(),
            );
            ExitCode::from(e.exit_code())
        }
    }
}
