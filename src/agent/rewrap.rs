//! `agent rewrap`: re-key one backup. The manifest's data key is unwrapped with the old key
//! (identity file or KMS `Decrypt`) and wrapped for the new recipients and/or KMS key; only the
//! manifest is rewritten (its `dataKey` and `encryption.recipients`), every other field kept as
//! it was. The artifacts are neither read nor written: their bytes, checksums and object
//! versions stay the same.
//!
//! On S3 the manifest is written with a plain PUT: in a versioned (Object Lock) bucket that is a
//! new version with its own retention, the locked previous version staying as it was (it still
//! holds the old wraps until its retention ends: re-wrapping does not erase a leaked old key's
//! access to locked versions; disabling that KMS key does).

use std::time::Instant;

use serde_json::Value;

use super::envelope::{self, ENVELOPE_SCHEME, Unwrapper, WrapTargets};
use super::error::{AgentError, Result};
use super::hash::sha256_hex;
use super::restore::parse_pinned_manifest;
use super::storage::{Location, S3Settings, Store};
use crate::contract::{ArtifactPin, RewrapSummary, WrappedFor};

/// Largest manifest accepted.
const MANIFEST_LIMIT: usize = 64 << 20;

/// Everything a rewrap needs.
#[derive(Debug, Clone)]
pub struct RewrapRequest {
    /// The manifest.
    pub from: Location,
    /// The manifest's bytes must hash to this (the digest the operator recorded), if given.
    pub manifest_sha256: Option<String>,
    /// What opens the current wraps.
    pub old: Unwrapper,
    /// Who the data key is wrapped for from now on.
    pub new: WrapTargets,
    /// S3 settings (Object Lock retention for the new manifest version).
    pub s3: S3Settings,
    /// A manifest without a wrapped data key (written before envelope encryption) is reported
    /// (`notRewrappable`) rather than failing; it is left as it is either way.
    pub report_not_rewrappable: bool,
}

/// Re-wrap one manifest.
pub async fn run(req: RewrapRequest) -> Result<RewrapSummary> {
    let clock = Instant::now();
    let store = Store::open(&req.from, &req.s3).await?;
    let bytes = store.get_small(&req.from, MANIFEST_LIMIT).await?;
    let pin = ArtifactPin {
        manifest_sha256: req.manifest_sha256.clone(),
        ..ArtifactPin::default()
    };
    let manifest = parse_pinned_manifest(&bytes, &req.from, &pin)?;
    let Some(wraps) = &manifest.data_key else {
        if req.report_not_rewrappable
            && let Some(enc) = &manifest.encryption
        {
            tracing::warn!(
                manifest = %req.from, scheme = %enc.scheme,
                "written before envelope encryption: the artifacts are encrypted straight to \
                 their recipients, nothing to re-wrap; left as it is"
            );
            let digest = sha256_hex(&bytes);
            return Ok(RewrapSummary {
                location: req.from.to_string(),
                previous_manifest_sha256: digest.clone(),
                manifest_sha256: digest,
                data_key: String::new(),
                wrapped_for: WrappedFor {
                    recipients: enc.recipients.clone(),
                    kms_keys: Vec::new(),
                },
                duration_seconds: clock.elapsed().as_secs_f64(),
                not_rewrappable: Some(enc.scheme.clone()),
            });
        }
        return Err(AgentError::Config(format!(
            "{} has no wrapped data key ({}): its artifacts are encrypted straight to their \
             recipients and cannot be re-keyed without re-encrypting them",
            req.from,
            if manifest.encryption.is_some() {
                "written before envelope encryption"
            } else {
                "the backup is not encrypted"
            }
        )));
    };
    let new_wraps = envelope::rewrap(wraps, &req.old, &req.new).await?;
    let mut doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| AgentError::Integrity(format!("{} is not JSON: {e}", req.from)))?;
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| AgentError::Integrity(format!("{} is not a JSON object", req.from)))?;
    let wraps_value = serde_json::to_value(&new_wraps)
        .map_err(|e| AgentError::Storage(format!("cannot encode the wraps: {e}")))?;
    obj.insert("dataKey".into(), wraps_value);
    let scheme = manifest
        .encryption
        .as_ref()
        .map(|e| e.scheme.clone())
        .unwrap_or_else(|| ENVELOPE_SCHEME.into());
    obj.insert(
        "encryption".into(),
        serde_json::json!({"scheme": scheme, "recipients": new_wraps.age_recipients()}),
    );
    let out = serde_json::to_vec_pretty(&doc)
        .map_err(|e| AgentError::Storage(format!("cannot encode manifest: {e}")))?;
    // What is written must read back as the same backup with the new wraps.
    let check: super::manifest::Manifest = serde_json::from_slice(&out)
        .map_err(|e| AgentError::Integrity(format!("the rewritten manifest is invalid: {e}")))?;
    if check.artifacts != manifest.artifacts || check.data_key.as_ref() != Some(&new_wraps) {
        return Err(AgentError::Integrity(
            "the rewritten manifest does not hold the same artifacts and the new wraps".into(),
        ));
    }
    let manifest_sha256 = sha256_hex(&out);
    store.put_small(&req.from, out).await?;
    tracing::info!(
        manifest = %req.from, data_key = %new_wraps.fingerprint,
        wrapped_for = %envelope::describe(&new_wraps), "data key re-wrapped; artifacts untouched"
    );
    Ok(RewrapSummary {
        location: req.from.to_string(),
        previous_manifest_sha256: sha256_hex(&bytes),
        manifest_sha256,
        data_key: new_wraps.fingerprint.clone(),
        wrapped_for: WrappedFor {
            recipients: new_wraps.age_recipients(),
            kms_keys: new_wraps.kms_keys(),
        },
        duration_seconds: clock.elapsed().as_secs_f64(),
        not_rewrappable: None,
    })
}
