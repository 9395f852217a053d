//! Service-account tokens: JWTs signed by a key generated at server start (ES256; kube-apiserver
//! signs with its `--service-account-signing-key-file`, usually RS256), with kube-apiserver's
//! claims (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and the `kubernetes.io` private
//! claim naming the namespace, the ServiceAccount and the bound Pod with their uids).

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};

/// The issuer and the API server's audience (kube-apiserver's default with kubeadm).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The `expirationSeconds` kubelets ask for; such tokens bound to a pod are valid for a year
/// (`--service-account-extend-token-expiration`, on by default) with `warnafter` at the hour.
pub const KUBELET_EXPIRATION_SECONDS: i64 = 3607;
/// How long an extended token is valid.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;

/// A `{name, uid}` reference in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Private {
    /// Namespace of the ServiceAccount.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: Ref,
    /// The Pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    /// The Secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    /// When an extended token should have been refreshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// The claims of a service-account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Token id.
    pub jti: String,
    /// Kubernetes claims.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Private,
    /// Not before.
    pub nbf: i64,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
}

/// Why a token does not authenticate (never shown to clients: they get 401 `Unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT of ours.
    #[error("malformed token")]
    Malformed,
    /// Bad signature.
    #[error("invalid signature")]
    Signature,
    /// Past `exp` or before `nbf`.
    #[error("token is expired")]
    Expired,
    /// Wrong issuer or audience.
    #[error("token audiences or issuer do not match")]
    Audience,
}

/// Signs and verifies tokens.
pub struct Signer {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl Signer {
    /// A signer with a fresh key.
    pub fn generate() -> Result<Self, String> {
        Ok(Self::generate_pkcs8()?.0)
    }

    /// A signer with a fresh key, and that key (PKCS#8 DER) to keep for [`Signer::from_pkcs8`].
    pub fn generate_pkcs8() -> Result<(Self, Vec<u8>), String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("generating the token signing key: {e}"))?;
        let signer = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    /// A signer with a kept key (PKCS#8 DER): tokens it issued before a restart stay valid,
    /// as with kube-apiserver's `--service-account-key-file`.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| format!("loading the token signing key: {e}"))?;
        let public = key.public_key().as_ref().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        Ok(Signer {
            kid: b64(&digest.as_ref()[..16]),
            key,
            public,
        })
    }

    /// A signed JWT for `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, String> {
        let header = serde_json::json!({"alg": "ES256", "kid": self.kid});
        let payload = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&payload));
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| format!("signing a token: {e}"))?;
        Ok(format!("{signing_input}.{}", b64(sig.as_ref())))
    }

    /// Verifies signature, issuer, audience and validity period at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let dec = |x: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| TokenError::Malformed)
        };
        let header: serde_json::Value =
            serde_json::from_slice(&dec(h)?).map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
            return Err(TokenError::Malformed);
        }
        let sig = dec(s)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = serde_json::from_slice(&dec(p)?).map_err(|_| TokenError::Malformed)?;
        if claims.iss != ISSUER || !claims.aud.iter().any(|a| a == ISSUER) {
            return Err(TokenError::Audience);
        }
        if now >= claims.exp || now < claims.nbf {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Whether a bearer token looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp,
            iat: 1000,
            iss: ISSUER.into(),
            jti: "j".into(),
            kubernetes: Private {
                namespace: "shop".into(),
                serviceaccount: Ref {
                    name: "op".into(),
                    uid: "u1".into(),
                },
                pod: None,
                secret: None,
                warnafter: None,
            },
            nbf: 1000,
            sub: "system:serviceaccount:shop:op".into(),
        }
    }

    #[test]
    fn tokens_verify_until_they_expire() {
        let s = Signer::generate().unwrap();
        let t = s.issue(&claims(1600)).unwrap();
        assert!(looks_like_jwt(&t));
        assert_eq!(s.verify(&t, 1000).unwrap(), claims(1600));
        assert_eq!(s.verify(&t, 1599).unwrap().exp, 1600);
        assert_eq!(s.verify(&t, 1600), Err(TokenError::Expired));
        assert_eq!(s.verify(&t, 999), Err(TokenError::Expired));
    }

    #[test]
    fn other_keys_and_tampering_are_refused() {
        let s = Signer::generate().unwrap();
        let other = Signer::generate().unwrap();
        let t = other.issue(&claims(1600)).unwrap();
        assert_eq!(s.verify(&t, 1000), Err(TokenError::Signature));
        let mine = s.issue(&claims(1600)).unwrap();
        let mut parts: Vec<&str> = mine.split('.').collect();
        let forged = b64(&serde_json::to_vec(&claims(99_999)).unwrap());
        parts[1] = &forged;
        assert_eq!(s.verify(&parts.join("."), 1000), Err(TokenError::Signature));
        assert_eq!(s.verify("abc", 1000), Err(TokenError::Malformed));
        let mut wrong_aud = claims(1600);
        wrong_aud.aud = vec!["vault".into()];
        let t = s.issue(&wrong_aud).unwrap();
        assert_eq!(s.verify(&t, 1000), Err(TokenError::Audience));
    }
}
