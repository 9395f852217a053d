//! Envelope encryption: each backup run draws a fresh data key (an age X25519 identity); its
//! artifacts are encrypted to that key only, in the ordinary age format. The manifest holds the
//! data key only wrapped ([`DataKeyWraps`]): once per age recipient of the policy (an armored age
//! file holding the data key's `AGE-SECRET-KEY-1…` line) and/or by a KMS key (the same line,
//! KMS-encrypted, base64). Several wraps coexist (KMS for daily use, an offline age key for
//! break-glass); any one of them opens the backup.
//!
//! Re-keying a backup ([`rewrap`]) rewrites only the wraps: the artifacts stay as they are.
//! Disabling or deleting the KMS key makes every backup it alone wraps unreadable
//! (crypto-erasure): a restore then fails with [`AgentError::KeyUnavailable`].
//!
//! Manifests of older agents have no wraps: their artifacts are encrypted straight to the
//! recipients and open with the identity file itself.

use std::str::FromStr;
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use aws_smithy_types::base64;
use serde::{Deserialize, Serialize};

use super::crypto::{Identities, Recipients, fingerprint};
use super::error::{AgentError, Result};
use super::kms::{Kms, KmsSettings};

/// The `encryption.scheme` of a manifest whose artifacts are encrypted to a wrapped data key.
pub const ENVELOPE_SCHEME: &str = "age-x25519-envelope";

/// A run's data key. Its secret is never logged, formatted or written unwrapped.
pub struct DataKey(age::x25519::Identity);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.fingerprint())
    }
}

impl DataKey {
    /// A fresh key.
    pub fn generate() -> Self {
        DataKey(age::x25519::Identity::generate())
    }

    /// The one recipient the run's artifacts are encrypted to.
    pub fn recipients(&self) -> Recipients {
        Recipients::of_identity(&self.0)
    }

    /// The identity that decrypts the run's artifacts.
    pub fn identities(&self) -> Identities {
        Identities::of_identity(self.0.clone())
    }

    /// Fingerprint of the data key's public key (recorded in the manifest).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0.to_public().to_string())
    }

    fn secret_line(&self) -> Vec<u8> {
        self.0.to_string().expose_secret().as_bytes().to_vec()
    }

    fn from_secret_line(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| AgentError::Crypto("an unwrapped data key is not text".into()))?;
        age::x25519::Identity::from_str(text.trim())
            .map(DataKey)
            .map_err(|_| AgentError::Crypto("an unwrapped data key is not an age identity".into()))
    }
}

/// One age wrap of the data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgeWrap {
    /// Fingerprint of the recipient it is encrypted to.
    pub recipient: String,
    /// The data key's identity line, age-encrypted to that recipient, ASCII-armored.
    pub wrapped: String,
}

/// One KMS wrap of the data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KmsWrap {
    /// The key as KMS reported it on `Encrypt` (its ARN).
    pub key_id: String,
    /// The region of the key.
    pub region: String,
    /// The data key's identity line, KMS-encrypted, base64 (a `CiphertextBlob`).
    pub ciphertext: String,
}

/// The wrapped data key of a run (the manifest's `dataKey`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataKeyWraps {
    /// Fingerprint of the data key's public key (the recipient of every artifact).
    pub fingerprint: String,
    /// Wraps for age recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age: Vec<AgeWrap>,
    /// Wraps by KMS keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kms: Vec<KmsWrap>,
}

impl DataKeyWraps {
    /// Fingerprints of the age recipients it is wrapped for.
    pub fn age_recipients(&self) -> Vec<String> {
        self.age.iter().map(|w| w.recipient.clone()).collect()
    }

    /// The KMS keys it is wrapped by.
    pub fn kms_keys(&self) -> Vec<String> {
        self.kms.iter().map(|w| w.key_id.clone()).collect()
    }

    /// Whether nothing can open it.
    pub fn is_empty(&self) -> bool {
        self.age.is_empty() && self.kms.is_empty()
    }
}

/// Who a data key is wrapped for: age recipients and/or one KMS key.
#[derive(Debug, Clone, Default)]
pub struct WrapTargets {
    /// age recipients (public keys).
    pub recipients: Recipients,
    /// KMS key (id, ARN or alias) and how to reach it.
    pub kms: Option<(String, KmsSettings)>,
}

impl WrapTargets {
    /// No recipient and no KMS key: nothing is encrypted.
    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty() && self.kms.is_none()
    }
}

/// Wrap `key` for every target. Needs only public keys and KMS `Encrypt`.
pub async fn wrap(key: &DataKey, targets: &WrapTargets) -> Result<DataKeyWraps> {
    let secret = key.secret_line();
    let mut age_wraps = Vec::new();
    for (fp, recipient) in targets.recipients.each() {
        let wrapped = age::encrypt_and_armor(recipient, &secret)
            .map_err(|e| AgentError::Crypto(format!("cannot wrap the data key for {fp}: {e}")))?;
        age_wraps.push(AgeWrap {
            recipient: fp,
            wrapped,
        });
    }
    let mut kms_wraps = Vec::new();
    if let Some((key_id, settings)) = &targets.kms {
        let kms = Kms::connect(settings, None).await;
        let (blob, arn) = kms.encrypt(key_id, &secret).await?;
        kms_wraps.push(KmsWrap {
            key_id: arn,
            region: kms.region().to_string(),
            ciphertext: base64::encode(blob),
        });
    }
    Ok(DataKeyWraps {
        fingerprint: key.fingerprint(),
        age: age_wraps,
        kms: kms_wraps,
    })
}

/// What can open a wrapped data key: an age identity file and/or KMS `Decrypt`.
#[derive(Debug, Clone, Default)]
pub struct Unwrapper {
    /// age identity file.
    pub identity_file: Option<std::path::PathBuf>,
    /// KMS settings (endpoint, region) when KMS may be asked (a KMS wrap the identity file
    /// does not open); `None`: KMS is not used.
    pub kms: Option<KmsSettings>,
}

/// Open `wraps` with what `with` holds: the age wraps with the identity file first, then the
/// KMS wraps. The unwrapped key must be the one the wraps name (its fingerprint).
pub async fn unwrap(wraps: &DataKeyWraps, with: &Unwrapper) -> Result<DataKey> {
    let mut tried = Vec::new();
    if let Some(path) = &with.identity_file {
        let ids = Identities::from_file(path)?;
        for w in &wraps.age {
            if let Some(secret) = ids.decrypt_small(w.wrapped.as_bytes())? {
                return checked(DataKey::from_secret_line(&secret)?, wraps);
            }
        }
        tried.push(format!(
            "the identity file opens none of the age wraps (for {})",
            if wraps.age.is_empty() {
                "no recipient".to_string()
            } else {
                wraps.age_recipients().join(", ")
            }
        ));
    }
    if let Some(settings) = &with.kms
        && !wraps.kms.is_empty()
    {
        let mut last = None;
        for w in &wraps.kms {
            let blob = base64::decode(&w.ciphertext).map_err(|_| {
                AgentError::Integrity(format!("the KMS wrap for {} is not base64", w.key_id))
            })?;
            let kms = Kms::connect(settings, Some(&w.region)).await;
            match kms.decrypt(&w.key_id, &blob).await {
                Ok(secret) => return checked(DataKey::from_secret_line(&secret)?, wraps),
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    if with.identity_file.is_none() {
        return Err(AgentError::Config(format!(
            "the backup's data key is wrapped for {}; give --identity-file{}",
            describe(wraps),
            if wraps.kms.is_empty() {
                ""
            } else {
                " or --kms"
            }
        )));
    }
    Err(AgentError::Crypto(format!(
        "wrong identity: cannot unwrap the data key (wrapped for {}): {}",
        describe(wraps),
        tried.join("; ")
    )))
}

fn checked(key: DataKey, wraps: &DataKeyWraps) -> Result<DataKey> {
    if key.fingerprint() != wraps.fingerprint {
        return Err(AgentError::Integrity(format!(
            "a wrap holds the data key {}, the manifest names {}: the wraps were tampered with",
            key.fingerprint(),
            wraps.fingerprint
        )));
    }
    Ok(key)
}

/// "age sha256:…, KMS arn:…" (fingerprints and key ids only).
pub fn describe(wraps: &DataKeyWraps) -> String {
    let mut parts: Vec<String> = wraps
        .age
        .iter()
        .map(|w| format!("age {}", w.recipient))
        .collect();
    parts.extend(wraps.kms.iter().map(|w| format!("KMS {}", w.key_id)));
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// The identities that decrypt a manifest's artifacts (given its `encryption` and `dataKey`):
/// the unwrapped data key of an envelope manifest, or (a manifest of an older agent, encrypted straight to the recipients) the
/// identity file itself. `None` for an unencrypted backup.
pub async fn artifact_identities(
    encryption: Option<&crate::contract::EncryptionInfo>,
    data_key: Option<&DataKeyWraps>,
    with: &Unwrapper,
) -> Result<Option<Arc<Identities>>> {
    let Some(enc) = encryption else {
        return Ok(None);
    };
    if let Some(wraps) = data_key {
        let key = unwrap(wraps, with).await?;
        tracing::info!(data_key = %key.fingerprint(), "data key unwrapped");
        return Ok(Some(Arc::new(key.identities())));
    }
    match &with.identity_file {
        Some(path) => Ok(Some(Arc::new(Identities::from_file(path)?))),
        None => Err(AgentError::Config(format!(
            "the backup is encrypted to {}; give --identity-file",
            enc.recipients.join(", ")
        ))),
    }
}

/// Re-wrap: open `wraps` with `old`, wrap the same data key for `new` (the artifacts, encrypted
/// to the data key, stay valid).
pub async fn rewrap(
    wraps: &DataKeyWraps,
    old: &Unwrapper,
    new: &WrapTargets,
) -> Result<DataKeyWraps> {
    if new.is_empty() {
        return Err(AgentError::Config(
            "re-wrapping needs at least one new recipient or KMS key".into(),
        ));
    }
    let key = unwrap(wraps, old).await?;
    wrap(&key, new).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_string(),
        )
    }

    fn identity_file(dir: &Path, secret: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{}.txt", &fingerprint(secret)[7..]));
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        path
    }

    #[tokio::test]
    async fn a_data_key_wrapped_for_two_recipients_opens_with_either_and_not_a_third() {
        let dir = tempfile::tempdir().unwrap();
        let (pa, sa) = keypair();
        let (pb, sb) = keypair();
        let (_, sc) = keypair();
        let key = DataKey::generate();
        let targets = WrapTargets {
            recipients: Recipients::parse([pa.as_str(), pb.as_str()]).unwrap(),
            kms: None,
        };
        let wraps = wrap(&key, &targets).await.unwrap();
        assert_eq!(wraps.age.len(), 2);
        assert_eq!(wraps.fingerprint, key.fingerprint());
        let json = serde_json::to_string(&wraps).unwrap();
        assert!(
            !json.contains("AGE-SECRET-KEY"),
            "the data key is never stored in clear"
        );
        assert!(json.contains("BEGIN AGE ENCRYPTED FILE"));
        for secret in [&sa, &sb] {
            let with = Unwrapper {
                identity_file: Some(identity_file(dir.path(), secret)),
                kms: None,
            };
            let back = unwrap(&wraps, &with).await.unwrap();
            assert_eq!(back.fingerprint(), key.fingerprint());
        }
        let stranger = Unwrapper {
            identity_file: Some(identity_file(dir.path(), &sc)),
            kms: None,
        };
        let err = unwrap(&wraps, &stranger).await.unwrap_err();
        assert_eq!(err.category(), "crypto");
        assert!(!err.to_string().contains("AGE-SECRET"));
        let nothing = unwrap(&wraps, &Unwrapper::default()).await.unwrap_err();
        assert_eq!(nothing.category(), "config");
    }

    #[tokio::test]
    async fn a_swapped_wrap_is_refused_and_rewrap_keeps_the_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let (pa, sa) = keypair();
        let (pb, sb) = keypair();
        let key = DataKey::generate();
        let to_a = WrapTargets {
            recipients: Recipients::parse([pa.as_str()]).unwrap(),
            kms: None,
        };
        let mut wraps = wrap(&key, &to_a).await.unwrap();
        let with_a = Unwrapper {
            identity_file: Some(identity_file(dir.path(), &sa)),
            kms: None,
        };
        let with_b = Unwrapper {
            identity_file: Some(identity_file(dir.path(), &sb)),
            kms: None,
        };

        // Rotation: a to b. The same data key, now only b opens it.
        let to_b = WrapTargets {
            recipients: Recipients::parse([pb.as_str()]).unwrap(),
            kms: None,
        };
        let rotated = rewrap(&wraps, &with_a, &to_b).await.unwrap();
        assert_eq!(rotated.fingerprint, wraps.fingerprint);
        assert_eq!(rotated.age_recipients(), to_b.recipients.fingerprints());
        assert_eq!(
            unwrap(&rotated, &with_b).await.unwrap().fingerprint(),
            key.fingerprint()
        );
        assert_eq!(
            unwrap(&rotated, &with_a).await.unwrap_err().category(),
            "crypto"
        );

        // Someone replaces the wrap with one of another key: refused as tampering.
        let other = wrap(&DataKey::generate(), &to_a).await.unwrap();
        wraps.age = other.age;
        let err = unwrap(&wraps, &with_a).await.unwrap_err();
        assert_eq!(err.category(), "integrity");
    }

    #[test]
    fn the_data_key_encrypts_artifacts_its_identity_opens() {
        use std::io::{Read, Write};
        let key = DataKey::generate();
        let mut w =
            super::super::crypto::EncryptWriter::new(Vec::new(), &key.recipients()).unwrap();
        w.write_all(b"rows").unwrap();
        let ct = w.finish().unwrap();
        let mut out = Vec::new();
        key.identities()
            .decrypt(&ct[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"rows");
        assert!(!format!("{key:?}").contains("AGE-SECRET"));
    }
}
