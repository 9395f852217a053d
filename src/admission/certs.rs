//! The webhook's serving certificate when no cert-manager provides one: a CA and a serving
//! certificate the operator issues itself and keeps in a Secret of its namespace (so every
//! replica serves the same one), renewed before they expire.
//!
//! - The CA lives 10 years and is replaced when less than a year is left; the bundle the API
//!   server trusts (`ca.crt`) keeps the previous CA until it expires, so certificates issued
//!   by either verify during the change-over.
//! - The serving certificate lives one year, is issued for the Service's DNS names, and is
//!   replaced when less than 30 days are left or the names change.
//!
//! Validity is recorded in the Secret's annotations (the operator wrote the certificates; it
//! does not parse them back). Planning is pure ([`plan`]); [`sync`] applies it with an
//! optimistic-concurrency write, so replicas racing to renew end with one winner.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Secret key: the CA bundle the API server trusts (PEM, current CA first).
pub const CA_BUNDLE_KEY: &str = "ca.crt";
/// Secret key: the current CA's private key (PEM).
pub const CA_KEY_KEY: &str = "ca.key";
/// Secret key: the serving certificate (PEM).
pub const TLS_CRT_KEY: &str = "tls.crt";
/// Secret key: the serving key (PEM).
pub const TLS_KEY_KEY: &str = "tls.key";

const ANN_CA_NOT_AFTER: &str = "dataguardian.io/ca-not-after";
const ANN_CA_PEMS_NOT_AFTER: &str = "dataguardian.io/ca-bundle-not-after";
const ANN_CERT_NOT_AFTER: &str = "dataguardian.io/cert-not-after";
const ANN_CERT_NAMES: &str = "dataguardian.io/cert-dns-names";

const DAY: i64 = 86_400;
const CA_LIFETIME: i64 = 3650 * DAY;
const CA_RENEW_BEFORE: i64 = 365 * DAY;
const CERT_LIFETIME: i64 = 365 * DAY;
const CERT_RENEW_BEFORE: i64 = 30 * DAY;
const CA_COMMON_NAME: &str = "dataguardian-webhook-ca";

/// Why certificates could not be issued or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or key.
    #[error("cannot issue the webhook certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// The Secret could not be read or written.
    #[error("cannot read or write the webhook certificate Secret {name}: {source}")]
    Secret {
        /// The Secret's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A date outside what certificates can carry.
    #[error("cannot represent the certificate validity: {0}")]
    Time(String),
}

impl CertError {
    /// Whether the Secret's namespace does not exist (the operator's namespace is missing).
    pub fn is_namespace_missing(&self) -> bool {
        matches!(self, CertError::Secret { source: kube::Error::Api(e), .. }
            if e.code == 404 && e.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
    }
}

/// The certificates as stored.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Material {
    /// `ca.crt`: every CA certificate still trusted, current first.
    pub ca_bundle: String,
    /// The current CA's key.
    pub ca_key: String,
    /// The serving certificate.
    pub cert: String,
    /// The serving key.
    pub key: String,
    /// When the current CA expires (unix seconds).
    pub ca_not_after: i64,
    /// Each bundled CA's expiry, in bundle order (unix seconds).
    pub bundle_not_after: Vec<i64>,
    /// When the serving certificate expires (unix seconds).
    pub cert_not_after: i64,
    /// The serving certificate's DNS names.
    pub names: Vec<String>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca_not_after", &self.ca_not_after)
            .field("cert_not_after", &self.cert_not_after)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// What to do with the stored certificates.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// They are good.
    Keep,
    /// Store these instead.
    Replace(Material),
}

fn time(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CertError::Time(e.to_string()))
}

fn ca_params(not_before: i64, not_after: i64) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = time(not_before)?;
    p.not_after = time(not_after)?;
    Ok(p)
}

/// A new CA: (certificate PEM, key PEM, not-after).
fn new_ca(now: i64) -> Result<(String, String, i64), CertError> {
    let key = KeyPair::generate()?;
    let not_after = now + CA_LIFETIME;
    let cert = ca_params(now - 300, not_after)?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// A serving certificate for `names`, signed by the CA whose key is `ca_key` (the CA's
/// subject is fixed, so the issuer is rebuilt from its key).
fn new_cert(ca_key: &str, names: &[String], now: i64) -> Result<(String, String, i64), CertError> {
    let ca_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::new(ca_params(now, now + CA_LIFETIME)?, ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.to_vec())?;
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let not_after = now + CERT_LIFETIME;
    p.not_before = time(now - 300)?;
    p.not_after = time(not_after)?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// Decides, at `now` (unix seconds), whether `current` serves `names` long enough.
pub fn plan(current: Option<&Material>, names: &[String], now: i64) -> Result<Plan, CertError> {
    let mut next = current.cloned().unwrap_or_default();
    let mut changed = false;
    if current.is_none_or(|m| m.ca_key.is_empty() || m.ca_not_after - now < CA_RENEW_BEFORE) {
        let (ca, key, not_after) = new_ca(now)?;
        // The new CA first; older ones stay while they are valid.
        let mut bundle = vec![(ca, not_after)];
        if let Some(m) = current {
            let old: Vec<String> = split_pem(&m.ca_bundle);
            for (pem, exp) in old.into_iter().zip(m.bundle_not_after.iter().copied()) {
                if exp > now {
                    bundle.push((pem, exp));
                }
            }
        }
        next.ca_bundle = bundle.iter().map(|(p, _)| p.as_str()).collect();
        next.bundle_not_after = bundle.iter().map(|(_, e)| *e).collect();
        next.ca_key = key;
        next.ca_not_after = not_after;
        // A new CA means a new serving certificate.
        next.cert_not_after = 0;
        changed = true;
    } else if let Some(m) = current {
        // Drop expired CAs from the bundle.
        let kept: Vec<(String, i64)> = split_pem(&m.ca_bundle)
            .into_iter()
            .zip(m.bundle_not_after.iter().copied())
            .filter(|(_, e)| *e > now)
            .collect();
        if kept.len() != m.bundle_not_after.len() {
            next.ca_bundle = kept.iter().map(|(p, _)| p.as_str()).collect();
            next.bundle_not_after = kept.iter().map(|(_, e)| *e).collect();
            changed = true;
        }
    }
    if next.cert.is_empty() || next.cert_not_after - now < CERT_RENEW_BEFORE || next.names != names
    {
        let (cert, key, not_after) = new_cert(&next.ca_key, names, now)?;
        next.cert = cert;
        next.key = key;
        next.cert_not_after = not_after;
        next.names = names.to_vec();
        changed = true;
    }
    Ok(if changed {
        Plan::Replace(next)
    } else {
        Plan::Keep
    })
}

/// The PEM blocks of a bundle, each with its trailing newline.
fn split_pem(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in bundle.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    data.get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// Reads the material from a Secret (missing pieces are empty, which [`plan`] renews).
pub fn from_secret(secret: &Secret) -> Material {
    let data = secret.data.clone().unwrap_or_default();
    let ann = secret.metadata.annotations.clone().unwrap_or_default();
    let num = |k: &str| ann.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Material {
        ca_bundle: text(&data, CA_BUNDLE_KEY),
        ca_key: text(&data, CA_KEY_KEY),
        cert: text(&data, TLS_CRT_KEY),
        key: text(&data, TLS_KEY_KEY),
        ca_not_after: num(ANN_CA_NOT_AFTER),
        bundle_not_after: ann
            .get(ANN_CA_PEMS_NOT_AFTER)
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default(),
        cert_not_after: num(ANN_CERT_NOT_AFTER),
        names: ann
            .get(ANN_CERT_NAMES)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

fn to_secret(
    name: &str,
    namespace: &str,
    m: &Material,
    resource_version: Option<String>,
) -> Secret {
    let data = [
        (CA_BUNDLE_KEY, &m.ca_bundle),
        (CA_KEY_KEY, &m.ca_key),
        (TLS_CRT_KEY, &m.cert),
        (TLS_KEY_KEY, &m.key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let annotations = [
        (ANN_CA_NOT_AFTER, m.ca_not_after.to_string()),
        (
            ANN_CA_PEMS_NOT_AFTER,
            m.bundle_not_after
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        (ANN_CERT_NOT_AFTER, m.cert_not_after.to_string()),
        (ANN_CERT_NAMES, m.names.join(",")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version,
            annotations: Some(annotations),
            labels: Some(
                [
                    (
                        crate::contract::MANAGED_BY_LABEL,
                        crate::contract::OPERATOR_NAME,
                    ),
                    (crate::contract::PART_OF_LABEL, crate::contract::APP_NAME),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Makes the Secret hold valid certificates for `names` and returns them. Another replica
/// renewing at the same moment wins the write; its certificates are returned then.
pub async fn sync(
    api: &Api<Secret>,
    name: &str,
    names: &[String],
    now: i64,
) -> Result<Material, CertError> {
    let secret_err = |source| CertError::Secret {
        name: name.to_string(),
        source,
    };
    for _ in 0..3 {
        let existing = api.get_opt(name).await.map_err(secret_err)?;
        let current = existing.as_ref().map(from_secret);
        let next = match plan(current.as_ref(), names, now)? {
            Plan::Keep => return Ok(current.unwrap_or_default()),
            Plan::Replace(m) => m,
        };
        let namespace = api_namespace(existing.as_ref());
        let result = match &existing {
            None => {
                api.create(
                    &PostParams::default(),
                    &to_secret(name, &namespace, &next, None),
                )
                .await
            }
            Some(s) => {
                api.replace(
                    name,
                    &PostParams::default(),
                    &to_secret(name, &namespace, &next, s.metadata.resource_version.clone()),
                )
                .await
            }
        };
        match result {
            Ok(_) => {
                tracing::info!(secret = name, dns_names = ?names, "webhook certificate issued");
                return Ok(next);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(secret_err(e)),
        }
    }
    let existing = api.get(name).await.map_err(secret_err)?;
    Ok(from_secret(&existing))
}

fn api_namespace(existing: Option<&Secret>) -> String {
    existing
        .and_then(|s| s.metadata.namespace.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["dataguardian-webhook.ns.svc".into()]
    }

    #[test]
    fn a_fresh_install_gets_a_ca_and_a_certificate_then_keeps_them() {
        let now = 1_800_000_000;
        let Plan::Replace(m) = plan(None, &names(), now).unwrap() else {
            panic!("nothing issued")
        };
        assert_eq!(split_pem(&m.ca_bundle).len(), 1);
        assert!(m.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(m.cert_not_after, now + CERT_LIFETIME);
        assert_eq!(
            plan(Some(&m), &names(), now + 300 * DAY).unwrap(),
            Plan::Keep
        );
    }

    #[test]
    fn the_certificate_is_renewed_before_it_expires_or_when_names_change() {
        let now = 1_800_000_000;
        let Plan::Replace(m) = plan(None, &names(), now).unwrap() else {
            panic!()
        };
        let Plan::Replace(renewed) = plan(Some(&m), &names(), now + 340 * DAY).unwrap() else {
            panic!("not renewed 25 days before expiry")
        };
        assert_ne!(renewed.cert, m.cert);
        assert_eq!(renewed.ca_bundle, m.ca_bundle, "the CA stays");
        let Plan::Replace(other) =
            plan(Some(&m), &["other.ns.svc".to_string()], now + DAY).unwrap()
        else {
            panic!("not reissued for new names")
        };
        assert_eq!(other.names, ["other.ns.svc"]);
    }

    #[test]
    fn a_ca_near_its_end_is_replaced_and_the_old_one_stays_trusted_until_it_expires() {
        let now = 1_800_000_000;
        let Plan::Replace(m) = plan(None, &names(), now).unwrap() else {
            panic!()
        };
        let later = now + CA_LIFETIME - 200 * DAY;
        let Plan::Replace(rolled) = plan(Some(&m), &names(), later).unwrap() else {
            panic!("CA not rolled")
        };
        let bundle = split_pem(&rolled.ca_bundle);
        assert_eq!(bundle.len(), 2);
        assert_eq!(bundle[1], split_pem(&m.ca_bundle)[0], "the old CA is kept");
        assert_ne!(rolled.ca_key, m.ca_key);
        // Once the old CA expired it leaves the bundle.
        let Plan::Replace(pruned) = plan(Some(&rolled), &names(), now + CA_LIFETIME + DAY).unwrap()
        else {
            panic!("expired CA not dropped")
        };
        assert_eq!(split_pem(&pruned.ca_bundle).len(), 1);
    }

    #[test]
    fn the_serving_certificate_verifies_against_the_bundle_for_its_name() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject as _;
        let now = chrono::Utc::now().timestamp();
        let Plan::Replace(m) = plan(None, &names(), now).unwrap() else {
            panic!()
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(m.ca_bundle.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(m.cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("dataguardian-webhook.ns.svc").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("the serving certificate verifies");
        let wrong = rustls::pki_types::ServerName::try_from("evil.ns.svc").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &wrong, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }
}
