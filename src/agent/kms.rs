//! AWS KMS (or a KMS-compatible service) wrapping a run's data key: `Encrypt` on the backup side
//! (the only permission a backup needs), `Decrypt` on the restore side.
//!
//! Credentials come from the standard AWS chain, like S3's (environment, web identity / IRSA,
//! profile, container or instance metadata). Calls to a custom endpoint go through the egress
//! policy's client (its resolved address checked before each connection). Neither the plaintext
//! data key nor any credential is ever logged or formatted into an error: errors name the key id
//! and the KMS error code only.

use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;

use super::error::{AgentError, Result};
use crate::egress::EgressPolicy;

/// Where the KMS is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct KmsSettings {
    /// Custom endpoint (a KMS-compatible service), e.g. `http://127.0.0.1:5000`.
    pub endpoint: Option<String>,
    /// Region (default: the region recorded with the wrap, else the environment's, else
    /// `us-east-1`).
    pub region: Option<String>,
    /// Which internal address ranges a custom endpoint may resolve to.
    pub egress: EgressPolicy,
    /// Explicit credentials for the KMS (`DG_KMS_AWS_ACCESS_KEY_ID`, … when the KMS key has its
    /// own Secret); `None`: the standard AWS chain, as for S3.
    pub credentials: Option<aws_sdk_kms::config::Credentials>,
}

use crate::contract::KMS_CREDENTIALS_ENV_PREFIX as CREDENTIALS_ENV_PREFIX;

/// The KMS's own credentials from the environment, when both the key id and the secret are set.
pub fn credentials_from_env() -> Option<aws_sdk_kms::config::Credentials> {
    credentials_from_env_prefix(CREDENTIALS_ENV_PREFIX)
}

/// Credentials from `{prefix}AWS_ACCESS_KEY_ID`, `{prefix}AWS_SECRET_ACCESS_KEY` and optionally
/// `{prefix}AWS_SESSION_TOKEN`, when both the key id and the secret are set.
pub fn credentials_from_env_prefix(prefix: &str) -> Option<aws_sdk_kms::config::Credentials> {
    let var = |k: &str| {
        std::env::var(format!("{prefix}{k}"))
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Some(aws_sdk_kms::config::Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN"),
        None,
        "dataguardian-kms",
    ))
}

/// The KMS error codes that mean the key itself cannot be used: disabled, pending deletion or
/// deleted (crypto-erasure), unknown, or its key material unavailable. Retrying cannot help.
const UNAVAILABLE_CODES: [&str; 4] = [
    "DisabledException",
    "KMSInvalidStateException",
    "NotFoundException",
    "KeyUnavailableException",
];

/// How a KMS failure is reported (pure: the error code and message of the reply).
pub fn classify(operation: &str, key_id: &str, code: Option<&str>, message: &str) -> AgentError {
    match code {
        Some(c) if UNAVAILABLE_CODES.contains(&c) => AgentError::KeyUnavailable(format!(
            "KMS key {key_id} cannot be used for {operation} ({c}: {message}); a disabled or \
             deleted key makes every backup it wraps unreadable"
        )),
        Some(c) => AgentError::Crypto(format!(
            "KMS {operation} with key {key_id} failed ({c}: {message})"
        )),
        None => AgentError::Io(std::io::Error::other(format!(
            "KMS {operation} with key {key_id} failed: {message}"
        ))),
    }
}

fn sdk_error<E>(operation: &str, key_id: &str, err: SdkError<E>) -> AgentError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(s) => {
            let e = s.err();
            classify(
                operation,
                key_id,
                e.code(),
                e.message().unwrap_or("no message"),
            )
        }
        other => classify(
            operation,
            key_id,
            None,
            &aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
        ),
    }
}

/// A KMS client for one region.
#[derive(Clone)]
pub struct Kms {
    client: Client,
    region: String,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kms({})", self.region)
    }
}

impl Kms {
    /// Connect with `settings`; `region_hint` (the region recorded with a wrap) applies when
    /// `settings` names none.
    pub async fn connect(settings: &KmsSettings, region_hint: Option<&str>) -> Self {
        let timeouts = aws_sdk_kms::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(30))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(crate::egress::s3::platform_http_client())
            .timeout_config(timeouts);
        if let Some(region) = settings.region.as_deref().or(region_hint) {
            loader = loader.region(aws_sdk_kms::config::Region::new(region.to_string()));
        }
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_kms::config::Builder::from(&shared)
            .http_client(crate::egress::s3::http_client(&settings.egress));
        if shared.region().is_none() {
            b = b.region(aws_sdk_kms::config::Region::new("us-east-1"));
        }
        if let Some(ep) = &settings.endpoint {
            b = b.endpoint_url(ep.clone());
        }
        let conf = b.build();
        let region = conf
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        Kms {
            client: Client::from_conf(conf),
            region,
        }
    }

    /// The region this client talks to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// `Encrypt` `plaintext` under `key_id` (id, ARN, alias name or alias ARN); returns the
    /// ciphertext blob and the key's ARN as KMS reports it.
    pub async fn encrypt(&self, key_id: &str, plaintext: &[u8]) -> Result<(Vec<u8>, String)> {
        let out = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .send()
            .await
            .map_err(|e| sdk_error("Encrypt", key_id, e))?;
        let blob = out.ciphertext_blob().ok_or_else(|| {
            AgentError::Crypto(format!(
                "KMS Encrypt with key {key_id} returned no ciphertext"
            ))
        })?;
        let arn = out.key_id().unwrap_or(key_id).to_string();
        Ok((blob.as_ref().to_vec(), arn))
    }

    /// `Decrypt` `ciphertext` with `key_id` named explicitly (KMS refuses a ciphertext of
    /// another key).
    pub async fn decrypt(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .send()
            .await
            .map_err(|e| sdk_error("Decrypt", key_id, e))?;
        let plain = out.plaintext().ok_or_else(|| {
            AgentError::Crypto(format!(
                "KMS Decrypt with key {key_id} returned no plaintext"
            ))
        })?;
        Ok(plain.as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_or_deleted_keys_are_key_unavailable_and_other_failures_are_not() {
        for code in UNAVAILABLE_CODES {
            let e = classify("Decrypt", "alias/backups", Some(code), "key is disabled");
            assert_eq!(e.category(), "key-unavailable", "{code}");
            assert!(e.to_string().contains("alias/backups"));
        }
        let denied = classify("Decrypt", "k", Some("AccessDeniedException"), "no");
        assert_eq!(denied.category(), "crypto");
        let transport = classify("Decrypt", "k", None, "connection refused");
        assert_eq!(transport.category(), "io");
    }
}
