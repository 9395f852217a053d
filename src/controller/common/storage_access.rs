//! The operator's own access to a BackupStorage: probing it, confirming artifacts, deleting
//! pruned ones. S3 only — a filesystem storage lives on a PVC that only Job pods mount, so the
//! operator cannot reach it (see [`StorageAccess::open`]).
//!
//! Credentials come from the storage's `credentialsSecretRef` (keys `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`). Without one, the operator's ambient
//! credentials (IRSA, instance profile) are used only in the namespaces the platform team
//! allowed (`--allow-ambient-credentials-in`): otherwise a tenant could point a storage at any
//! bucket the operator's identity can reach ([`ambient_refusal`]). They are never logged.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::api::BackupStorage;
use crate::api::backup_storage::S3Storage;
use crate::egress::EgressPolicy;
use crate::egress::cap::{CollectError, collect_capped};

/// Why the storage could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    /// The storage is a filesystem (PVC) storage: only pods that mount it can read it.
    #[error("filesystem storages are only reachable from Job pods")]
    NotReachableFromOperator,
    /// The credentials Secret is missing or incomplete.
    #[error("{0}")]
    Credentials(String),
    /// S3 answered with an error or could not be reached.
    #[error("{0}")]
    S3(String),
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// The storage has no credentials Secret and its namespace may not use ambient ones.
    #[error("{0}")]
    AmbientCredentialsRefused(String),
}

/// Status reason of a storage that would use ambient credentials where that is not allowed.
pub const AMBIENT_CREDENTIALS_REFUSED: &str = "AmbientCredentialsNotAllowed";

/// Why an S3 `storage` in `ns` may not be used: it has no `credentialsSecretRef` and `ns` is not
/// among the namespaces allowed to use the operator's ambient identity. `None`: it may.
pub fn ambient_refusal(storage: &BackupStorage, ns: &str, allowed: bool) -> Option<String> {
    let s3 = storage.spec.s3.as_ref()?;
    if s3.credentials_secret_ref.is_some() || allowed {
        return None;
    }
    Some(format!(
        "BackupStorage {} has no credentialsSecretRef, and the operator does not allow storages in namespace {ns} to use its own cloud identity; set spec.s3.credentialsSecretRef (or ask the platform team to allow ambient credentials in {ns})",
        kube::ResourceExt::name_any(storage)
    ))
}

/// The storage's credentials Secret is missing or incomplete. These messages reach BackupRun
/// status, whose readers did not write the storage: they name the field, not the Secret, and
/// read the same whether the Secret or a key is missing.
fn unusable_credentials() -> AccessError {
    AccessError::Credentials(
        "the storage's credentialsSecretRef Secret does not exist or lacks AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            .into(),
    )
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub retain_until: Option<DateTime<Utc>>,
    pub checksum_sha256: Option<String>,
    /// `GOVERNANCE` or `COMPLIANCE` when the object is under Object Lock retention.
    pub lock_mode: Option<String>,
}

/// A key and its versions ([`StorageAccess::list_versions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersions {
    pub key: String,
    /// Object versions (delete markers not counted).
    pub versions: usize,
    /// The newest version is a delete marker.
    pub deleted: bool,
}

/// Object Lock mode and retain-until date (from now) of a write under `lock`.
fn lock_of(
    lock: Option<&crate::api::backup_storage::ObjectLock>,
) -> (
    Option<aws_sdk_s3::types::ObjectLockMode>,
    Option<aws_smithy_types::DateTime>,
) {
    match lock {
        None => (None, None),
        Some(l) => {
            let until = Utc::now() + chrono::Duration::days(i64::from(l.days));
            (
                Some(aws_sdk_s3::types::ObjectLockMode::from(l.mode.as_str())),
                Some(aws_smithy_types::DateTime::from_secs(until.timestamp())),
            )
        }
    }
}

/// An S3 client bound to a storage's bucket and prefix.
#[derive(Clone)]
pub struct StorageAccess {
    client: Client,
    bucket: String,
    prefix: String,
}

/// The error in status and Events: never a reply body or transport detail from the endpoint.
fn s3_error<E: std::error::Error + ProvideErrorMetadata + 'static>(
    what: &str,
    e: aws_sdk_s3::error::SdkError<E>,
) -> AccessError {
    AccessError::S3(format!("{what}: {}", crate::egress::s3::error_text(&e)))
}

impl StorageAccess {
    /// Opens the storage, reading credentials from its Secret in `ns`. Without a Secret the
    /// operator's ambient credentials are used only when `allow_ambient` (the operator allows
    /// them in `ns`, [`ambient_refusal`]).
    pub async fn open(
        client: &kube::Client,
        ns: &str,
        storage: &BackupStorage,
        egress: &EgressPolicy,
        allow_ambient: bool,
    ) -> Result<Self, AccessError> {
        let Some(s3) = &storage.spec.s3 else {
            return Err(AccessError::NotReachableFromOperator);
        };
        if let Some(why) = ambient_refusal(storage, ns, allow_ambient) {
            return Err(AccessError::AmbientCredentialsRefused(why));
        }
        let credentials = match &s3.credentials_secret_ref {
            None => None,
            Some(r) => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                let secret = secrets
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| {
                        AccessError::Credentials(match e {
                            kube::Error::Api(s) => format!(
                                "reading the storage's credentialsSecretRef Secret failed (HTTP {})",
                                s.code
                            ),
                            _ => "reading the storage's credentialsSecretRef Secret failed".into(),
                        })
                    })?
                    .ok_or_else(unusable_credentials)?;
                let value = |key: &str| -> Option<String> {
                    secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
                        .or_else(|| {
                            secret
                                .string_data
                                .as_ref()
                                .and_then(|d| d.get(key))
                                .map(|s| s.trim().to_string())
                        })
                };
                let id = value("AWS_ACCESS_KEY_ID").ok_or_else(unusable_credentials)?;
                let key = value("AWS_SECRET_ACCESS_KEY").ok_or_else(unusable_credentials)?;
                Some(Credentials::new(
                    id,
                    key,
                    value("AWS_SESSION_TOKEN"),
                    None,
                    "dataguardian-storage-secret",
                ))
            }
        };
        Ok(Self::connect(s3, credentials, egress).await)
    }

    /// Builds the client from an S3 block and explicit (or ambient, when `None`) credentials.
    /// Every connection to the endpoint goes through `egress` (the resolved address is checked
    /// before the socket opens; replies are capped); the ambient credential providers keep the
    /// platform's client. All clients share those two HTTPS clients (TLS roots, connection pool).
    pub async fn connect(
        s3: &S3Storage,
        credentials: Option<Credentials>,
        egress: &EgressPolicy,
    ) -> Self {
        let http = crate::egress::s3::platform_http_client();
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(30))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(timeouts)
            .region(Region::new(s3.region.clone()));
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s3.force_path_style)
            .http_client(crate::egress::s3::http_client(egress));
        if let Some(ep) = &s3.endpoint {
            b = b.endpoint_url(ep.clone());
        }
        StorageAccess {
            client: Client::from_conf(b.build()),
            bucket: s3.bucket.clone(),
            prefix: s3
                .prefix
                .clone()
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The full key of `rel` under the storage's prefix.
    pub fn key(&self, rel: &str) -> String {
        let rel = rel.trim_start_matches('/');
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// Reads a small object whole (manifests, probe objects).
    pub async fn get(&self, key: &str, limit: usize) -> Result<Vec<u8>, AccessError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(AccessError::NotFound(key.to_string()));
            }
            Err(e) => return Err(s3_error(&format!("GET {key}"), e)),
        };
        let too_large = || AccessError::S3(format!("object {key} is larger than {limit} bytes"));
        if out.content_length().unwrap_or(0) as u64 > limit as u64 {
            return Err(too_large());
        }
        // A reply without Content-Length (chunked) is read only up to the limit.
        collect_capped(out.body, limit as u64)
            .await
            .map_err(|e| match e {
                CollectError::Cap(_) => too_large(),
                CollectError::Read(_) => AccessError::S3(format!(
                    "reading {key}: the reply broke off or exceeded a read cap"
                )),
            })
    }

    /// Size, retention and checksum of an object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, AccessError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(o) => Ok(ObjectInfo {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                retain_until: o
                    .object_lock_retain_until_date()
                    .and_then(|d| DateTime::from_timestamp(d.secs(), 0)),
                checksum_sha256: o.checksum_sha256().map(str::to_string),
                lock_mode: o.object_lock_mode().map(|m| m.as_str().to_string()),
            }),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(AccessError::NotFound(key.to_string()))
            }
            Err(e) => Err(s3_error(&format!("HEAD {key}"), e)),
        }
    }

    /// Writes a small object.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), AccessError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error(&format!("PUT {key}"), e))?;
        Ok(())
    }

    /// Writes a small object with the storage's Object Lock (`lock`: mode and days), if any.
    pub async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        lock: Option<&crate::api::backup_storage::ObjectLock>,
    ) -> Result<(), AccessError> {
        let (mode, until) = lock_of(lock);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_object_lock_mode(mode)
            .set_object_lock_retain_until_date(until)
            .send()
            .await
            .map_err(|e| s3_error(&format!("PUT {key}"), e))?;
        Ok(())
    }

    /// Writes a small object only if `key` does not exist yet (`If-None-Match: *`), with the
    /// storage's Object Lock (`lock`), if any. `Ok(false)`: the key exists, nothing was written.
    /// A server that ignores the condition overwrites (as [`StorageAccess::put_locked`]).
    pub async fn put_new_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        lock: Option<&crate::api::backup_storage::ObjectLock>,
    ) -> Result<bool, AccessError> {
        let (mode, until) = lock_of(lock);
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .set_object_lock_mode(mode)
            .set_object_lock_retain_until_date(until)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
            Err(e) => Err(s3_error(&format!("PUT {key}"), e)),
        }
    }

    /// Server-side copy of `source_bucket/source_key` (same endpoint, readable with this
    /// storage's credentials) to `key` in this bucket, with this storage's Object Lock. No
    /// bytes pass through the operator. Objects up to 5 GiB (a single CopyObject).
    pub async fn copy_from(
        &self,
        source_bucket: &str,
        source_key: &str,
        key: &str,
        lock: Option<&crate::api::backup_storage::ObjectLock>,
    ) -> Result<(), AccessError> {
        const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'/')
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~');
        let source = format!(
            "{source_bucket}/{}",
            percent_encoding::utf8_percent_encode(source_key, KEY)
        );
        let (mode, until) = lock_of(lock);
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(source)
            .set_object_lock_mode(mode)
            .set_object_lock_retain_until_date(until)
            .send()
            .await
            .map_err(|e| s3_error(&format!("COPY {source_bucket}/{source_key} to {key}"), e))?;
        Ok(())
    }

    /// Deletes an object (and, in a versioned bucket, every version of it, so that retention
    /// really frees the space). A missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), AccessError> {
        let versions = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await;
        if let Ok(v) = versions {
            let mut any = false;
            for ver in v.versions() {
                if ver.key() == Some(key) {
                    any = true;
                    self.client
                        .delete_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .set_version_id(ver.version_id().map(str::to_string))
                        .send()
                        .await
                        .map_err(|e| s3_error(&format!("DELETE {key}"), e))?;
                }
            }
            for marker in v.delete_markers() {
                if marker.key() == Some(key) {
                    self.client
                        .delete_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .set_version_id(marker.version_id().map(str::to_string))
                        .send()
                        .await
                        .map_err(|e| s3_error(&format!("DELETE {key} (marker)"), e))?;
                }
            }
            if any {
                return Ok(());
            }
        }
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
            Err(e) => Err(s3_error(&format!("DELETE {key}"), e)),
        }
    }

    /// `s3://bucket/key`: where an object is, for reports.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The keys under `prefix` (full keys), in key order, at most `limit`.
    pub async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, AccessError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error(&format!("LIST {prefix}"), e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) && keys.len() < limit => {
                    token = Some(t.to_string());
                }
                _ => break,
            }
        }
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }

    /// Every key under `prefix` with how many versions it has and whether its newest version
    /// is a delete marker (a deleted object in a versioned bucket). In an unversioned bucket:
    /// every key once, never deleted.
    pub async fn list_versions(&self, prefix: &str) -> Result<Vec<KeyVersions>, AccessError> {
        let mut by_key: std::collections::BTreeMap<String, KeyVersions> = Default::default();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| s3_error(&format!("LIST VERSIONS {prefix}"), e))?;
            for v in out.versions() {
                let Some(k) = v.key() else { continue };
                let e = by_key.entry(k.to_string()).or_insert_with(|| KeyVersions {
                    key: k.to_string(),
                    versions: 0,
                    deleted: false,
                });
                e.versions += 1;
            }
            for m in out.delete_markers() {
                let Some(k) = m.key() else { continue };
                let e = by_key.entry(k.to_string()).or_insert_with(|| KeyVersions {
                    key: k.to_string(),
                    versions: 0,
                    deleted: false,
                });
                if m.is_latest() == Some(true) {
                    e.deleted = true;
                }
            }
            if out.is_truncated() == Some(true) {
                key_marker = out.next_key_marker().map(str::to_string);
                version_marker = out.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(by_key.into_values().collect())
    }

    /// Whether the bucket has Object Lock enabled.
    pub async fn object_lock_enabled(&self) -> Result<bool, AccessError> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(o) => Ok(o
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some()),
            Err(e)
                if e.as_service_error()
                    .and_then(|s| s.code())
                    .is_some_and(|c| c.contains("ObjectLockConfigurationNotFound")) =>
            {
                Ok(false)
            }
            Err(e) => Err(s3_error("GetObjectLockConfiguration", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::testing::{AcceptCounter, EndlessServer};
    use std::time::Instant;

    fn storage(endpoint: &str) -> S3Storage {
        serde_json::from_value(serde_json::json!({
            "bucket": "tenant-bucket",
            "endpoint": endpoint,
            "forcePathStyle": true,
        }))
        .unwrap()
    }

    fn creds() -> Option<Credentials> {
        Some(Credentials::new(
            "AKIDTEST",
            "secret-key-value",
            None,
            None,
            "test",
        ))
    }

    fn loopback() -> EgressPolicy {
        EgressPolicy::from_list("127.0.0.0/8").unwrap()
    }

    async fn get_error(endpoint: &str, egress: &EgressPolicy) -> String {
        let access = StorageAccess::connect(&storage(endpoint), creds(), egress).await;
        match access.get("manifest.json", 1 << 20).await {
            Err(AccessError::S3(text)) => text,
            other => panic!("{endpoint}: expected an S3 error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_s3_endpoint_at_a_refused_address_is_never_contacted() {
        let listener = AcceptCounter::start("127.0.0.1").await;
        let port = listener.addr.port();
        let nothing_internal = EgressPolicy::default();
        for endpoint in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ] {
            let text = get_error(&endpoint, &nothing_internal).await;
            assert!(text.contains("egress policy refused"), "{text}");
            assert!(text.contains("DG_EGRESS_ALLOW_CIDRS"), "{text}");
        }
        for (endpoint, class) in [
            ("http://169.254.169.254", "link-local"),
            ("http://[fe80::1]:9000", "link-local"),
            ("http://10.0.0.1:9000", "private"),
            ("http://100.64.0.1:9000", "CGNAT"),
        ] {
            let started = Instant::now();
            let text = get_error(endpoint, &loopback()).await;
            assert!(
                text.contains("egress policy refused") && text.contains(class),
                "{endpoint}: {text}"
            );
            // Refused before connecting: no connect timeout (5 s) was waited for.
            assert!(started.elapsed() < Duration::from_secs(3), "{endpoint}");
        }
        assert_eq!(listener.accepted(), 0, "a refused endpoint was contacted");
        // Positive control: the same listener counts a connection once loopback is allowed.
        let _ = get_error(&format!("http://127.0.0.1:{port}"), &loopback()).await;
        assert!(listener.accepted() >= 1);
    }

    #[tokio::test]
    async fn an_endless_s3_reply_is_read_only_up_to_the_cap() {
        // An object download without Content-Length: the caller's limit stops it.
        let server = EndlessServer::start(200).await;
        let access = StorageAccess::connect(
            &storage(&format!("http://{}", server.addr)),
            creds(),
            &loopback(),
        )
        .await;
        let err = access.get("manifest.json", 1 << 20).await.unwrap_err();
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The limit plus what the loopback socket buffers hold, nothing like "endless".
        let sent = server.sent();
        assert!(sent < (1 << 20) + (16 << 20), "{sent} bytes were sent");

        // A reply the SDK buffers (an XML answer) stops at the client's cap, on every one of
        // the SDK's attempts.
        let server = EndlessServer::start(200).await;
        let access = StorageAccess::connect(
            &storage(&format!("http://{}", server.addr)),
            creds(),
            &loopback(),
        )
        .await;
        let err = access.object_lock_enabled().await.unwrap_err().to_string();
        assert!(err.contains("read cap"), "{err}");
        assert!(!err.contains("AAAA"), "the reply body leaked: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = server.sent();
        let attempts = 3;
        assert!(
            sent < attempts * (crate::egress::cap::BUFFERED_REPLY_CAP + (16 << 20)),
            "{sent} bytes were sent"
        );

        // An error reply that never ends: capped, and its body is not echoed.
        let server = EndlessServer::start(500).await;
        let access = StorageAccess::connect(
            &storage(&format!("http://{}", server.addr)),
            creds(),
            &loopback(),
        )
        .await;
        let err = access.head("manifest.json").await.unwrap_err().to_string();
        assert!(!err.contains("AAAA"), "{err}");
        let err = access
            .put("probe", b"x".to_vec())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("read cap"), "{err}");
        assert!(!err.contains("AAAA"), "{err}");
    }
}
