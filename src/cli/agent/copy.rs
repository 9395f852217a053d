//! `dataguardian agent copy`: the command line and the process frame around
//! [`crate::agent::copy`].
//!
//! Each side has its own S3 settings and credentials (a copy reads the primary storage and
//! writes a secondary one, each with its own Secret): `DG_FROM_AWS_ACCESS_KEY_ID` /
//! `DG_FROM_AWS_SECRET_ACCESS_KEY` (optional `…_SESSION_TOKEN`) for the source, `DG_TO_AWS_…`
//! for the destination; a side without them uses the standard AWS chain (IRSA, environment).
//! Credentials come from the environment only, never from argv.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::agent::copy::{CopyRequest, run};
use crate::agent::error::{AgentError, Result};
use crate::agent::storage::{Location, LockMode, S3Settings};
use crate::agent::summary;
use crate::contract::{CopySummary, LOG_FORMAT_ENV, Operation, TERMINATION_LOG_ENV};

use super::LogFormat;

/// `dataguardian agent copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The backup's manifest: s3://bucket/…/manifest.json or file:///…/manifest.json.
    #[arg(long, env = "DG_FROM")]
    pub from: String,
    /// Where the copy's manifest goes (artifacts go below its directory under the same keys).
    #[arg(long, env = "DG_TO")]
    pub to: String,
    /// Hex SHA-256 the source manifest must have (the digest the operator recorded for the
    /// run): a manifest with other bytes copies nothing.
    #[arg(long, env = "DG_MANIFEST_SHA256")]
    pub manifest_sha256: Option<String>,
    /// Refresh the copy's manifest only (after a key rotation re-wrapped the source's): the
    /// destination's manifest must hash to this digest (the one recorded for the copy) and the
    /// source's must describe the same backup with other wraps; artifacts are not copied.
    #[arg(long, env = "DG_REPLACE_MANIFEST_SHA256")]
    pub replace_manifest_sha256: Option<String>,
    /// S3 endpoint of the source (S3-compatible servers).
    #[arg(long, env = "DG_FROM_S3_ENDPOINT")]
    pub from_s3_endpoint: Option<String>,
    /// S3 region of the source.
    #[arg(long, env = "DG_FROM_S3_REGION")]
    pub from_s3_region: Option<String>,
    /// Path-style addressing for the source.
    #[arg(long, env = "DG_FROM_S3_PATH_STYLE")]
    pub from_s3_path_style: bool,
    /// S3 endpoint of the destination.
    #[arg(long, env = "DG_TO_S3_ENDPOINT")]
    pub to_s3_endpoint: Option<String>,
    /// S3 region of the destination.
    #[arg(long, env = "DG_TO_S3_REGION")]
    pub to_s3_region: Option<String>,
    /// Path-style addressing for the destination.
    #[arg(long, env = "DG_TO_S3_PATH_STYLE")]
    pub to_s3_path_style: bool,
    /// Object Lock mode for every object written at the destination.
    #[arg(
        long,
        env = "DG_OBJECT_LOCK_MODE",
        value_enum,
        requires = "object_lock_days"
    )]
    pub object_lock_mode: Option<LockMode>,
    /// Object Lock retention in days at the destination.
    #[arg(long, env = "DG_OBJECT_LOCK_DAYS", requires = "object_lock_mode")]
    pub object_lock_days: Option<u32>,
    /// Server-side encryption at the destination: aws:kms or AES256.
    #[arg(long, env = "DG_SSE")]
    pub sse: Option<String>,
    /// KMS key id for --sse aws:kms.
    #[arg(long, env = "DG_SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// Storage class at the destination.
    #[arg(long, env = "DG_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Size of the first 1,000 multipart parts in MiB (5 to 5120); later parts double every
    /// 1,000 so that 10,000 parts hold ≈ 1,000,000 times this size (4.9 TiB from 5 MiB).
    /// `--s3-concurrency` + 1 parts are in memory at most.
    #[arg(long, env = "DG_S3_PART_SIZE_MIB", default_value_t = 5)]
    pub s3_part_size_mib: usize,
    /// Retries per S3 request after the first attempt.
    #[arg(long, env = "DG_S3_RETRIES", default_value_t = 4)]
    pub s3_retries: u32,
    /// First retry backoff in milliseconds.
    #[arg(long, env = "DG_S3_BACKOFF_MS", default_value_t = 250)]
    pub s3_backoff_ms: u64,
    /// Internal address ranges (comma-separated CIDRs) the endpoints may resolve to.
    #[arg(long, env = crate::egress::ENV_ALLOW_CIDRS, default_value = "", value_parser = crate::cli::operator::parse_egress)]
    pub egress_allow_cidrs: crate::egress::EgressPolicy,
    /// Where to write the Kubernetes termination message.
    #[arg(long, env = TERMINATION_LOG_ENV)]
    pub termination_log: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, env = LOG_FORMAT_ENV, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// Explicit credentials of one side from `<prefix>AWS_ACCESS_KEY_ID` etc., if set.
fn side_credentials(prefix: &str) -> Option<aws_sdk_s3::config::Credentials> {
    let var = |k: &str| {
        std::env::var(format!("{prefix}{k}"))
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let id = var("AWS_ACCESS_KEY_ID")?;
    let key = var("AWS_SECRET_ACCESS_KEY")?;
    Some(aws_sdk_s3::config::Credentials::new(
        id,
        key,
        var("AWS_SESSION_TOKEN"),
        None,
        "dataguardian-copy",
    ))
}

fn side(
    args: &CopyArgs,
    endpoint: &Option<String>,
    region: &Option<String>,
    path_style: bool,
    prefix: &str,
) -> S3Settings {
    S3Settings {
        endpoint: endpoint.clone(),
        region: region.clone(),
        path_style,
        part_size: args.s3_part_size_mib.saturating_mul(1 << 20),
        retries: args.s3_retries,
        backoff: Duration::from_millis(args.s3_backoff_ms),
        egress: args
            .egress_allow_cidrs
            .clone()
            .with_proxy(crate::egress::ProxyConfig::from_env().unwrap_or_default()),
        credentials: side_credentials(prefix),
        ..S3Settings::default()
    }
}

fn request(args: &CopyArgs) -> Result<CopyRequest> {
    let from_s3 = side(
        args,
        &args.from_s3_endpoint,
        &args.from_s3_region,
        args.from_s3_path_style,
        "DG_FROM_",
    );
    let mut to_s3 = side(
        args,
        &args.to_s3_endpoint,
        &args.to_s3_region,
        args.to_s3_path_style,
        "DG_TO_",
    );
    super::apply_write_options(
        &mut to_s3,
        args.object_lock_mode.zip(args.object_lock_days),
        args.sse.as_deref(),
        args.sse_kms_key_id.as_deref(),
        args.storage_class.as_deref(),
    )?;
    let manifest_sha256 = super::parse_manifest_sha256(args.manifest_sha256.as_deref())?;
    Ok(CopyRequest {
        from: args.from.parse::<Location>()?,
        to: args.to.parse::<Location>()?,
        from_s3,
        to_s3,
        manifest_sha256,
        replace_manifest_sha256: super::parse_manifest_sha256(
            args.replace_manifest_sha256.as_deref(),
        )?,
    })
}

/// Runs `agent copy`: prints the JSON summary and returns the exit code.
pub fn run_cli(args: &CopyArgs) -> ExitCode {
    let clock = Instant::now();
    super::tune_allocator();
    super::init_logging(args.log_format);
    let termination_log = summary::termination_log_path(args.termination_log.clone());
    let result = super::runtime().map_err(AgentError::Io).and_then(|rt| {
        rt.block_on(crate::telemetry::otel::in_span(
            super::agent_span("agent copy"),
            async { run(request(args)?).await },
        ))
    });
    match result {
        Ok(o) => {
            tracing::info!(
                from = %o.from,
                to = %o.to,
                bytes = o.size_bytes(),
                already_present = o.already_present,
                "backup copied"
            );
            summary::emit(
                &CopySummary {
                    from: o.from.clone(),
                    location: o.to.clone(),
                    manifest_sha256: o.manifest_sha256.clone(),
                    size_bytes: o.size_bytes(),
                    sha256: o.artifacts.iter().map(|a| a.sha256.clone()).collect(),
                    confirmed_by: o.artifacts.iter().map(|a| a.confirmed_by).collect(),
                    already_present: o.already_present,
                    duration_seconds: clock.elapsed().as_secs_f64(),
                }
                .into(),
                termination_log.as_deref(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(category = e.category(), error = %e, "copy failed");
            summary::emit(
                &summary::failure_summary(Operation::Copy, &e, clock.elapsed().as_secs_f64()),
                termination_log.as_deref(),
            );
            ExitCode::from(e.exit_code())
        }
    }
}
