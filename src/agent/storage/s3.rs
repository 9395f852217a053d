//! S3 store on aws-sdk-s3 with a rustls/ring HTTP client.
//!
//! Uploads are multipart: the pipeline thread cuts the stored stream into parts (the configured
//! size, doubling every 1,000 parts) and hands them over a bounded channel; up to `concurrency` parts are in flight at once,
//! each retried with exponential backoff. Every part carries its SHA-256 (`x-amz-checksum-sha256`),
//! which the server checks on receipt; after `CompleteMultipartUpload` a `HEAD` with checksum
//! mode confirms the size and the composite SHA-256 over the parts before success is reported.
//! Any failure aborts the multipart upload, so no invisible parts are left behind.
//!
//! Many S3-compatible servers lack the checksum extension (they ignore the checksum headers
//! and return none). The upload is then confirmed another way, chosen automatically
//! ([`ConfirmedBy`]): the server's ETag against the one computed locally (MD5 of the body, or
//! for multipart the MD5 of the parts' MD5s and `-<parts>`; each part's ETag is checked against
//! its MD5 on receipt), else — the ETag is not an MD5, e.g. under SSE-KMS — the object is read
//! back and its SHA-256 recomputed. A mismatch fails the upload as an integrity error; an upload
//! that none of them confirms is never reported as stored.

use std::io::{self, Read};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
    ServerSideEncryption, StorageClass,
};
use aws_smithy_types::base64;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::fault::{S3Fail, S3Fault};
use super::{ConfirmedBy, LockMode, S3Settings, SinkWriter, Sse, StoredObject};
use crate::agent::error::{AgentError, Result, into_io};
use crate::agent::hash::sha256_raw;
use crate::egress::cap::{CollectError, collect_capped};

/// A connected S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    settings: S3Settings,
    /// The part buffers, shared by every upload of this store (and its clones):
    /// `concurrency + 1` parts exist at most, however many streams upload at once (a parallel
    /// backup's jobs take turns instead of each holding its own parts).
    part_buffers: Arc<PartPool>,
}

/// Build an S3 client: rustls with the ring provider (no aws-lc), plain-http endpoints allowed,
/// optional path-style addressing. Credentials come from the standard AWS chain (environment,
/// web identity / IRSA, profile, container or instance metadata) over the platform's client;
/// the S3 calls themselves go through the egress policy's client (resolved address checked
/// before each connection, replies capped).
pub async fn client(settings: &S3Settings) -> Client {
    let http = crate::egress::s3::platform_http_client();
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(settings.attempt_timeout)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(region) = &settings.region {
        loader = loader.region(aws_sdk_s3::config::Region::new(region.clone()));
    }
    if let Some(c) = &settings.credentials {
        loader = loader.credentials_provider(c.clone());
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.path_style)
        // Our own per-request retry loop handles backoff; the SDK makes one attempt.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .http_client(crate::egress::s3::http_client(&settings.egress));
    if shared.region().is_none() {
        b = b.region(aws_sdk_s3::config::Region::new("us-east-1"));
    }
    if let Some(ep) = &settings.endpoint {
        b = b.endpoint_url(ep.clone());
    }
    Client::from_conf(b.build())
}

/// A retry, as an event on the current span.
fn retry_event(what: &str, attempt: u32, delay: Duration, error: &str) {
    use crate::telemetry::otel::{AttrValue, event};
    event(
        "retry",
        &[
            ("operation", AttrValue::Text(what.to_string())),
            ("attempt", AttrValue::Int(i64::from(attempt))),
            ("retry_in_ms", AttrValue::Int(delay.as_millis() as i64)),
            ("error", AttrValue::Text(error.to_string())),
        ],
    );
}

/// Run one S3 request with retries: a failure no retry can fix ([`S3Fault::retryable`]) ends it
/// at once; throttling, 5xx replies, transport errors and damaged bodies back off exponentially
/// (doubling from `settings.backoff`, capped at 8 s, with up to 25 % jitter so parallel parts do
/// not retry in lockstep) up to `settings.retries` times.
async fn with_retries<T, F, Fut>(settings: &S3Settings, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, S3Fail>>,
{
    let mut delay = settings.backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.fault.retryable() => {
                tracing::warn!(attempt, fault = e.fault.describe(), error = %e.text, "{what} failed; not retried");
                return Err(e.into_error(what, attempt));
            }
            Err(e) if attempt > settings.retries => return Err(e.into_error(what, attempt)),
            Err(e) => {
                let wait = delay + delay.mul_f64(fastrand::f64() * 0.25);
                tracing::warn!(attempt, retry_in_ms = wait.as_millis() as u64, fault = e.fault.describe(), error = %e.text, "{what} failed, retrying");
                retry_event(what, attempt, wait, &e.text);
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
}

/// Refuse settings S3 cannot serve: parts below its 5 MiB minimum or beyond its 5 GiB maximum,
/// or no part in flight.
fn check_settings(settings: &S3Settings) -> Result<()> {
    if settings.part_size < 5 << 20 {
        return Err(AgentError::Config(
            "S3 part size must be at least 5 MiB".into(),
        ));
    }
    if settings.part_size > MAX_PART {
        return Err(AgentError::Config(
            "S3 part size must be at most 5 GiB (5120 MiB)".into(),
        ));
    }
    if settings.concurrency == 0 {
        return Err(AgentError::Config(
            "S3 upload concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}

impl S3Store {
    /// Connect to `bucket` with `settings`.
    pub async fn connect(bucket: String, settings: S3Settings) -> Result<Self> {
        check_settings(&settings)?;
        let client = client(&settings).await;
        Ok(Self {
            client,
            bucket,
            part_buffers: PartPool::new(settings.concurrency + 1),
            settings,
        })
    }

    /// The underlying client (tests and the operator's storage probe reuse it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn retain_until(&self) -> Option<(ObjectLockMode, aws_smithy_types::DateTime)> {
        self.settings.object_lock.map(|lock| {
            let until = chrono::Utc::now() + chrono::Duration::days(i64::from(lock.days));
            let mode = match lock.mode {
                LockMode::Governance => ObjectLockMode::Governance,
                LockMode::Compliance => ObjectLockMode::Compliance,
            };
            (
                mode,
                aws_smithy_types::DateTime::from_secs(until.timestamp()),
            )
        })
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        with_retries(&self.settings, "HEAD", || async {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
                Err(e) => Err(S3Fail::of(&e)),
            }
        })
        .await
    }

    /// PUT a small object with its SHA-256 checked by the server, then confirm its size.
    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<StoredObject> {
        let sum = base64::encode(sha256_raw(&bytes));
        let body = Bytes::from(bytes);
        let size = body.len() as u64;
        with_retries(&self.settings, "PUT", || {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type("application/json")
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&sum)
                .body(ByteStream::from(body.clone()));
            if let Some((mode, until)) = self.retain_until() {
                req = req
                    .object_lock_mode(mode)
                    .object_lock_retain_until_date(until);
            }
            req = match &self.settings.sse {
                Some(Sse::Aes256) => req.server_side_encryption(ServerSideEncryption::Aes256),
                Some(Sse::Kms { key_id }) => req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone()),
                None => req,
            };
            if let Some(class) = &self.settings.storage_class {
                req = req.storage_class(StorageClass::from(class.as_str()));
            }
            async move { req.send().await.map(|_| ()).map_err(|e| S3Fail::of(&e)) }
        })
        .await?;
        let head = self.head(key).await?;
        if head.size != size {
            return Err(AgentError::Integrity(format!(
                "s3://{}/{key} holds {} bytes, {size} were written",
                self.bucket, head.size
            )));
        }
        let confirmed_by = match &head.checksum_sha256 {
            Some(got) if *got == sum => ConfirmedBy::Sha256Checksum,
            Some(got) => {
                return Err(AgentError::Integrity(format!(
                    "s3://{}/{key}: server checksum {got} differs from the written {sum}",
                    self.bucket
                )));
            }
            None => match self.etag_verdict_single(head.etag.as_deref(), &md5_raw(&body)) {
                EtagVerdict::Match => ConfirmedBy::Md5Etag,
                EtagVerdict::Mismatch { got, expected } => {
                    return Err(self.etag_mismatch(key, &got, &expected));
                }
                EtagVerdict::Unusable => {
                    self.read_back(key, size, &crate::agent::hash::sha256_hex(&body))
                        .await?;
                    ConfirmedBy::ReadBack
                }
            },
        };
        tracing::debug!(bucket = %self.bucket, key, bytes = size, confirmed_by = %confirmed_by, "object confirmed");
        Ok(StoredObject {
            location: format!("s3://{}/{key}", self.bucket),
            size,
            confirmed_by,
        })
    }

    /// Whether the server's ETags are MD5 digests of the content: S3 defines them so for
    /// unencrypted and SSE-S3 objects, not under SSE-KMS (nor SSE-C, which the agent never uses).
    fn etags_are_md5(&self) -> bool {
        !matches!(self.settings.sse, Some(Sse::Kms { .. }))
    }

    /// The verdict of a single-request object's ETag against the body's MD5.
    fn etag_verdict_single(&self, etag: Option<&str>, md5: &[u8; 16]) -> EtagVerdict {
        if !self.etags_are_md5() {
            return EtagVerdict::Unusable;
        }
        single_etag_verdict(etag, md5)
    }

    /// The failure of a GET: a missing key says so in words.
    fn get_fail<E>(
        &self,
        key: &str,
        e: &SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    ) -> S3Fail
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let fail = S3Fail::of(e);
        if fail.fault == S3Fault::NotFound {
            S3Fail::new(
                S3Fault::NotFound,
                format!("s3://{}/{key} does not exist", self.bucket),
            )
        } else {
            fail
        }
    }

    fn etag_mismatch(&self, key: &str, got: &str, expected: &str) -> AgentError {
        AgentError::Integrity(format!(
            "s3://{}/{key}: the server's ETag {got} differs from {expected} computed from the written bytes: the stored object is not what was uploaded",
            self.bucket
        ))
    }

    /// Read the stored object back and confirm its size and SHA-256 (a broken download starts
    /// over; a complete one that differs fails as an integrity error at once).
    async fn read_back(&self, key: &str, size: u64, sha256_hex: &str) -> Result<()> {
        use sha2::{Digest, Sha256};
        tracing::info!(bucket = %self.bucket, key, bytes = size, "the server confirms no checksum and no MD5 ETag: reading the object back");
        let (got_size, got_sha) = with_retries(&self.settings, "read-back GET", || async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| S3Fail::of(&e))?;
            let mut body = out.body;
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    S3Fail::new(S3Fault::Transport, format!("the read-back broke off: {e}"))
                })?;
                n += chunk.len() as u64;
                if n > size {
                    // More bytes than were written: no need to read the rest.
                    break;
                }
                hasher.update(&chunk);
            }
            Ok((n, hex::encode(hasher.finalize())))
        })
        .await?;
        if got_size != size || !got_sha.eq_ignore_ascii_case(sha256_hex) {
            return Err(AgentError::Integrity(format!(
                "s3://{}/{key} read back {} bytes with sha256 {got_sha}, {size} bytes with sha256 {sha256_hex} were written: the stored object is not what was uploaded",
                self.bucket,
                if got_size > size {
                    format!("more than {size}")
                } else {
                    got_size.to_string()
                }
            )));
        }
        Ok(())
    }

    /// With Object Lock configured, make sure the object carries the retention (some
    /// S3-compatible servers ignore the lock headers of a multipart upload): set it with
    /// `PutObjectRetention` when missing, then confirm it with a HEAD.
    async fn ensure_retention(&self, key: &str) -> Result<()> {
        let Some((mode, until)) = self.retain_until() else {
            return Ok(());
        };
        let lock_of = |h: &aws_sdk_s3::operation::head_object::HeadObjectOutput| {
            (
                h.object_lock_mode().cloned(),
                h.object_lock_retain_until_date().map(|d| d.secs()),
            )
        };
        let head = with_retries(&self.settings, "HEAD", || async {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| S3Fail::of(&e))
        })
        .await?;
        let (got_mode, got_until) = lock_of(&head);
        if got_mode.as_ref() == Some(&mode) && got_until.is_some_and(|u| u >= until.secs() - 3600) {
            return Ok(());
        }
        tracing::warn!(
            key,
            "object lock missing after upload; applying the retention explicitly"
        );
        with_retries(&self.settings, "PutObjectRetention", || async {
            let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::from(
                    mode.as_str(),
                ))
                .retain_until_date(until)
                .build();
            self.client
                .put_object_retention()
                .bucket(&self.bucket)
                .key(key)
                .retention(retention)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| S3Fail::of(&e))
        })
        .await?;
        let head = with_retries(&self.settings, "HEAD", || async {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| S3Fail::of(&e))
        })
        .await?;
        if lock_of(&head).0.as_ref() != Some(&mode) {
            return Err(AgentError::Storage(format!(
                "s3://{}/{key}: the bucket did not apply the requested Object Lock retention",
                self.bucket
            )));
        }
        Ok(())
    }

    /// After a `CompleteMultipartUpload` whose reply was lost or unreadable: whether the
    /// completion happened anyway. `Ok(None)`: no object of `size` bytes is there (yet);
    /// `Ok(Some)`: it is, confirmed like any upload ([`Self::verify_multipart`]); `Err`: it is
    /// there but holds other bytes.
    async fn completed_anyway(
        &self,
        key: &str,
        size: u64,
        parts: &[UploadedPart],
        sha256_hex: &str,
    ) -> Result<Option<ConfirmedBy>> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match out {
            Ok(o) if o.content_length().unwrap_or(-1) == size as i64 => {
                let head = HeadInfo {
                    size,
                    checksum_sha256: o.checksum_sha256().map(str::to_string),
                    etag: o.e_tag().map(str::to_string),
                };
                self.verify_multipart(key, &head, parts, sha256_hex)
                    .await
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Confirm a completed multipart object of the right size: its SHA-256 checksum, else its
    /// ETag against the parts' MD5s, else a read-back. A mismatch is an integrity error.
    async fn verify_multipart(
        &self,
        key: &str,
        head: &HeadInfo,
        parts: &[UploadedPart],
        sha256_hex: &str,
    ) -> Result<ConfirmedBy> {
        let expected = composite_sha256(parts);
        match &head.checksum_sha256 {
            Some(got) if checksum_matches(got, &expected, parts.len()) => {
                Ok(ConfirmedBy::Sha256Checksum)
            }
            Some(got) => Err(AgentError::Integrity(format!(
                "s3://{}/{key}: server checksum {got} differs from the uploaded parts' {expected}",
                self.bucket
            ))),
            None => {
                let verdict = if self.etags_are_md5() {
                    multipart_etag_verdict(head.etag.as_deref(), parts)
                } else {
                    EtagVerdict::Unusable
                };
                match verdict {
                    EtagVerdict::Match => Ok(ConfirmedBy::Md5Etag),
                    EtagVerdict::Mismatch { got, expected } => {
                        Err(self.etag_mismatch(key, &got, &expected))
                    }
                    EtagVerdict::Unusable => {
                        self.read_back(key, head.size, sha256_hex).await?;
                        Ok(ConfirmedBy::ReadBack)
                    }
                }
            }
        }
    }

    async fn head(&self, key: &str) -> Result<HeadInfo> {
        with_retries(&self.settings, "HEAD", || async {
            let out = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .map_err(|e| S3Fail::of(&e))?;
            Ok(HeadInfo {
                size: out.content_length().unwrap_or(-1).max(0) as u64,
                checksum_sha256: out.checksum_sha256().map(str::to_string),
                etag: out.e_tag().map(str::to_string),
            })
        })
        .await
    }

    /// GET a small object.
    pub async fn get_small(&self, key: &str, limit: usize) -> Result<Vec<u8>> {
        with_retries(&self.settings, "GET", || async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.get_fail(key, &e))?;
            if out.content_length().unwrap_or(0) as u64 > limit as u64 {
                return Err(S3Fail::new(
                    S3Fault::Unusable,
                    format!("s3://{}/{key} is larger than {limit} bytes", self.bucket),
                ));
            }
            // A reply without Content-Length (chunked) is read only up to the limit.
            collect_capped(out.body, limit as u64)
                .await
                .map_err(|e| match e {
                    CollectError::Cap(_) => S3Fail::new(
                        S3Fault::Unusable,
                        format!("s3://{}/{key} is larger than {limit} bytes", self.bucket),
                    ),
                    CollectError::Read(_) => S3Fail::new(
                        S3Fault::Transport,
                        format!(
                            "reading s3://{}/{key}: the reply broke off or exceeded a read cap",
                            self.bucket
                        ),
                    ),
                })
        })
        .await
    }

    /// Create the multipart upload and start the part uploader.
    pub async fn begin_upload(&self, key: &str) -> Result<(Box<dyn SinkWriter>, PendingUpload)> {
        let upload_id = with_retries(&self.settings, "CreateMultipartUpload", || {
            let mut req = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .content_type("application/octet-stream")
                .checksum_algorithm(ChecksumAlgorithm::Sha256);
            if let Some((mode, until)) = self.retain_until() {
                req = req
                    .object_lock_mode(mode)
                    .object_lock_retain_until_date(until);
            }
            req = match &self.settings.sse {
                Some(Sse::Aes256) => req.server_side_encryption(ServerSideEncryption::Aes256),
                Some(Sse::Kms { key_id }) => req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone()),
                None => req,
            };
            if let Some(class) = &self.settings.storage_class {
                req = req.storage_class(StorageClass::from(class.as_str()));
            }
            async move {
                let out = req.send().await.map_err(|e| S3Fail::of(&e))?;
                out.upload_id()
                    .map(str::to_string)
                    .ok_or_else(|| S3Fail::new(S3Fault::ServerError, "no upload id returned"))
            }
        })
        .await?;
        let (tx, rx) = mpsc::channel::<Part>(1);
        let store = self.clone();
        let task_key = key.to_string();
        let task_id = upload_id.clone();
        let task = tokio::spawn(
            async move { store.upload_parts(&task_key, &task_id, rx).await }.in_current_span(),
        );
        // Parts being filled, queued or in flight take their permits from the store's pool of
        // `concurrency + 1`, shared with the other uploads under way: the memory bound.
        let writer = PartWriter::new(self.settings.part_size, Arc::clone(&self.part_buffers), tx);
        tracing::debug!(bucket = %self.bucket, key, "multipart upload started");
        Ok((
            Box::new(writer),
            PendingUpload {
                store: self.clone(),
                key: key.to_string(),
                upload_id,
                task,
            },
        ))
    }

    /// Receive parts and upload them, at most `concurrency` at once. On error every in-flight
    /// part is cancelled and the error returned (the caller aborts the upload).
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        mut rx: mpsc::Receiver<Part>,
    ) -> Result<Vec<UploadedPart>> {
        let mut inflight: JoinSet<Result<UploadedPart>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut next_part: i32 = 0;
        let mut closed = false;
        loop {
            tokio::select! {
                done = inflight.join_next(), if !inflight.is_empty() => {
                    match done {
                        Some(Ok(Ok(part))) => parts.push(part),
                        Some(Ok(Err(e))) => { inflight.abort_all(); return Err(e); }
                        Some(Err(join)) => { inflight.abort_all(); return Err(AgentError::Storage(format!("part upload task failed: {join}"))); }
                        None => {}
                    }
                }
                chunk = rx.recv(), if !closed && inflight.len() < self.settings.concurrency => {
                    match chunk {
                        Some((data, lease)) => {
                            next_part += 1;
                            if next_part > 10_000 {
                                inflight.abort_all();
                                return Err(AgentError::Storage("more than 10000 parts: raise --s3-part-size".into()));
                            }
                            let store = self.clone();
                            let (key, id) = (key.to_string(), upload_id.to_string());
                            let n = next_part;
                            inflight.spawn(async move {
                                let done = store.upload_part(&key, &id, n, &data).await;
                                lease.give_back(data); // the writer may fill the buffer again
                                done
                            }.in_current_span());
                        }
                        None => closed = true,
                    }
                }
                else => break,
            }
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: &Bytes,
    ) -> Result<UploadedPart> {
        let digest = sha256_raw(data);
        let sum = base64::encode(digest);
        let size = data.len() as u64;
        // One span per part; its retries are events on it. The part's MD5, computed once if the server confirms no SHA-256 (its ETag is checked
        // against it, and the multipart ETag is built from it).
        let md5_cell: tokio::sync::OnceCell<[u8; 16]> = tokio::sync::OnceCell::new();
        let etags_are_md5 = self.etags_are_md5();
        let span = tracing::info_span!("upload_part", part = number, bytes = size);
        let (etag, md5) = crate::telemetry::otel::in_span(
            span,
            with_retries(&self.settings, &format!("UploadPart {number}"), || {
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(size as i64)
                .checksum_sha256(&sum)
                .body(ByteStream::from(data.clone()));
            let (sum, md5_cell) = (&sum, &md5_cell);
            async move {
                // The body is not hashed again for the signature: its SHA-256 travels in the
                // signed checksum header, which the server checks (or, where it ignores it,
                // the part's ETag is checked against its MD5 and the object confirmed after
                // completion), and age authenticates every block besides.
                let out = req
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| S3Fail::of(&e))?;
                let etag = out.e_tag().unwrap_or_default().to_string();
                match out.checksum_sha256() {
                    Some(returned) if returned == sum.as_str() => Ok((etag, None)),
                    Some(returned) => Err(S3Fail::new(
                        S3Fault::Mismatch,
                        format!(
                            "server computed checksum {returned} for part {number}, expected {sum}"
                        ),
                    )),
                    None => {
                        let md5 = *md5_cell
                            .get_or_init(|| async {
                                let owned = data.clone();
                                match tokio::task::spawn_blocking(move || md5_raw(&owned)).await {
                                    Ok(md5) => md5,
                                    Err(_) => md5_raw(data),
                                }
                            })
                            .await;
                        if etags_are_md5
                            && let EtagVerdict::Mismatch { got, expected } =
                                single_etag_verdict(Some(&etag), &md5)
                        {
                            return Err(S3Fail::new(
                                S3Fault::Mismatch,
                                format!(
                                    "the server's ETag {got} for part {number} differs from the part's MD5 {expected}"
                                ),
                            ));
                        }
                        Ok((etag, Some(md5)))
                    }
                }
            }
        })
        )
        .await?;
        tracing::debug!(part = number, bytes = size, "part uploaded");
        Ok(UploadedPart {
            number,
            etag,
            sha256: digest,
            sha256_b64: sum,
            md5,
            size,
        })
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) {
        let res = with_retries(&self.settings, "AbortMultipartUpload", || async {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.code() == Some("NoSuchUpload")) =>
                {
                    Ok(())
                }
                Err(e) => Err(S3Fail::of(&e)),
            }
        })
        .await;
        match res {
            Ok(()) => tracing::info!(bucket = %self.bucket, key, "multipart upload aborted"),
            Err(e) => {
                tracing::error!(bucket = %self.bucket, key, error = %e, "could not abort the multipart upload; a bucket lifecycle rule for incomplete uploads will clean it")
            }
        }
    }

    /// Stream an object into a blocking reader, resuming with a ranged GET after a broken
    /// connection.
    pub async fn open_reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DOWNLOAD_CHUNKS);
        let store = self.clone();
        let key = key.to_string();
        // Fail fast (before the caller touches any target) when the object is missing.
        let first = store.get_from(&key, 0).await?;
        tokio::spawn(async move {
            if let Err(e) = store.stream_into(&key, first, &tx).await {
                let _ = tx.send(Err(into_io(e))).await;
            }
        });
        Ok(Box::new(ChannelReader {
            rx,
            current: Bytes::new(),
        }))
    }

    async fn get_from(&self, key: &str, offset: u64) -> Result<ByteStream> {
        with_retries(&self.settings, "GET", || async {
            let mut req = self.client.get_object().bucket(&self.bucket).key(key);
            if offset > 0 {
                req = req.range(format!("bytes={offset}-"));
            }
            req.send()
                .await
                .map(|o| o.body)
                .map_err(|e| self.get_fail(key, &e))
        })
        .await
    }

    async fn stream_into(
        &self,
        key: &str,
        mut body: ByteStream,
        tx: &mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<()> {
        let mut offset = 0u64;
        let mut resumes = 0u32;
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    offset += chunk.len() as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(()); // the reader stopped; nothing more to do
                    }
                }
                Some(Err(e)) => {
                    resumes += 1;
                    if resumes > self.settings.retries {
                        return Err(AgentError::Storage(format!(
                            "download of s3://{}/{key} broke at byte {offset}: {e}",
                            self.bucket
                        )));
                    }
                    tracing::warn!(offset, error = %e, "download interrupted, resuming");
                    tokio::time::sleep(self.settings.backoff).await;
                    body = self.get_from(key, offset).await?;
                }
                None => return Ok(()),
            }
        }
    }
}

/// Body chunks a download holds ahead of its reader. The HTTP client hands over chunks of up
/// to about 400 KiB (its read buffer), so this bounds a download's buffer to ~1.6 MiB however
/// slow the restore tool is; 16 held up to ~6.5 MiB per download, which a parallel restore
/// multiplied by its jobs. The socket keeps the stream going while the reader catches up.
const DOWNLOAD_CHUNKS: usize = 4;

/// One uploaded part.
#[derive(Debug, Clone)]
struct UploadedPart {
    number: i32,
    etag: String,
    sha256: [u8; 32],
    sha256_b64: String,
    /// The part's MD5, when the server confirmed no SHA-256 for it.
    md5: Option<[u8; 16]>,
    size: u64,
}

/// What a HEAD says about an object.
#[derive(Debug, Clone)]
struct HeadInfo {
    size: u64,
    checksum_sha256: Option<String>,
    etag: Option<String>,
}

/// What an ETag says about the bytes the server holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EtagVerdict {
    /// It equals the one computed locally.
    Match,
    /// It has the shape of an MD5 ETag but another value: the server holds other bytes.
    Mismatch {
        /// The server's ETag.
        got: String,
        /// The one computed locally.
        expected: String,
    },
    /// It says nothing checkable (absent, weak, opaque, or a shape whose inputs are unknown).
    Unusable,
}

/// MD5 of `data`.
fn md5_raw(data: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(data).into()
}

/// An ETag without its quotes, lowercased; `None` for a weak ETag (`W/"…"`).
fn etag_value(etag: &str) -> Option<String> {
    let etag = etag.trim();
    if etag.starts_with("W/") {
        return None;
    }
    Some(etag.trim_matches('"').to_ascii_lowercase())
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A single-request object's (or one part's) ETag against the MD5 of its bytes.
fn single_etag_verdict(etag: Option<&str>, md5: &[u8; 16]) -> EtagVerdict {
    let Some(value) = etag.and_then(etag_value) else {
        return EtagVerdict::Unusable;
    };
    if !is_md5_hex(&value) {
        return EtagVerdict::Unusable;
    }
    let expected = hex::encode(md5);
    if value == expected {
        EtagVerdict::Match
    } else {
        EtagVerdict::Mismatch {
            got: value,
            expected,
        }
    }
}

/// The ETag S3 gives a multipart object: the MD5 of the concatenated part MD5s, in hex,
/// suffixed with `-<parts>`.
fn multipart_etag(md5s: &[[u8; 16]]) -> String {
    let concat: Vec<u8> = md5s.iter().flatten().copied().collect();
    format!("{}-{}", hex::encode(md5_raw(&concat)), md5s.len())
}

/// A multipart object's ETag against the one computed from its parts' MD5s. A plain MD5 (some
/// servers hash the whole object) cannot be checked without hashing the whole object again:
/// unusable, like an ETag of parts whose MD5 is unknown.
fn multipart_etag_verdict(etag: Option<&str>, parts: &[UploadedPart]) -> EtagVerdict {
    let Some(value) = etag.and_then(etag_value) else {
        return EtagVerdict::Unusable;
    };
    let Some((digest, count)) = value.rsplit_once('-') else {
        return EtagVerdict::Unusable;
    };
    if !is_md5_hex(digest) || count.parse::<usize>().is_err() {
        return EtagVerdict::Unusable;
    }
    let Some(md5s) = parts.iter().map(|p| p.md5).collect::<Option<Vec<_>>>() else {
        return EtagVerdict::Unusable;
    };
    let expected = multipart_etag(&md5s);
    if value == expected {
        EtagVerdict::Match
    } else {
        EtagVerdict::Mismatch {
            got: value,
            expected,
        }
    }
}

/// A part and the permit that accounts for its buffer.
type Part = (Bytes, PartLease);

/// Parts of one size before the size doubles. S3 allows 10,000 parts per upload: parts start at
/// the configured size and double every 1,000 parts (at most 9 times, never beyond S3's 5 GiB),
/// so an object of up to 1,023,000 first-size parts fits (≈ 4.9 TiB from 5 MiB) while the
/// agent's memory stays that of the first size for every object under 1,000 of them (≈ 4.9 GiB
/// stored from 5 MiB).
pub(crate) const PARTS_PER_SIZE: u32 = 1_000;

/// S3's largest part.
const MAX_PART: usize = 5 << 30;

/// The size of part `number` (from 1) of an upload whose parts start at `base` bytes.
pub(crate) fn part_size_for(base: usize, number: u32) -> usize {
    let doublings = (number.saturating_sub(1) / PARTS_PER_SIZE).min(9);
    base.saturating_mul(1 << doublings).min(MAX_PART)
}

/// The part buffers of a store: a permit per buffer that may exist, and the buffers given back
/// after their upload, filled again instead of being allocated (and faulted in) anew.
pub(crate) struct PartPool {
    permits: Arc<Semaphore>,
    free: std::sync::Mutex<Vec<BytesMut>>,
}

impl PartPool {
    pub(crate) fn new(buffers: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(buffers)),
            free: std::sync::Mutex::new(Vec::with_capacity(buffers)),
        })
    }

    /// A buffer with room for `size` bytes: one given back if it is large enough.
    fn buffer(&self, size: usize) -> BytesMut {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        match reused {
            Some(buf) if buf.capacity() >= size => buf,
            _ => BytesMut::with_capacity(size),
        }
    }
}

/// A part buffer's permit, travelling with its part until the part is uploaded (or dropped).
pub(crate) struct PartLease {
    _permit: OwnedSemaphorePermit,
    pool: Arc<PartPool>,
}

impl PartLease {
    /// The part is uploaded: keep its buffer for the next part (when nothing else holds it),
    /// then free the permit.
    fn give_back(self, data: Bytes) {
        if let Ok(mut buf) = data.try_into_mut() {
            buf.clear();
            if let Ok(mut free) = self.pool.free.lock() {
                free.push(buf);
            }
        }
    }
}

/// Bytes a [`PartWriter`] holds before it takes a part buffer's permit: a stream can write its
/// first bytes (the age header, the first compressed blocks) while other streams hold every
/// part buffer, so a stream never waits for a permit before it has read the start of its dump
/// (MySQL's parallel dumps signal that they are past their snapshot from it, under a lock).
const UNACCOUNTED_BYTES: usize = 64 << 10;

/// Cuts the stored stream into parts ([`part_size_for`]) and hands them to the uploader
/// (blocking side). A part buffer is only taken once a permit is free; the permits are the
/// store's pool (shared by the uploads under way), so at most that many parts exist, plus
/// [`UNACCOUNTED_BYTES`] per stream waiting for one.
struct PartWriter {
    buf: BytesMut,
    permit: Option<OwnedSemaphorePermit>,
    base_size: usize,
    /// The number of the part being filled (from 1).
    number: u32,
    pool: Arc<PartPool>,
    tx: mpsc::Sender<Part>,
}

impl PartWriter {
    fn new(base_size: usize, pool: Arc<PartPool>, tx: mpsc::Sender<Part>) -> Self {
        Self {
            buf: BytesMut::new(),
            permit: None,
            base_size,
            number: 1,
            pool,
            tx,
        }
    }

    fn part_size(&self) -> usize {
        part_size_for(self.base_size, self.number)
    }

    fn stopped() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the S3 uploader stopped")
    }

    /// Wait for a part buffer's permit and move the bytes held so far into a part buffer.
    fn take_permit(&mut self) -> io::Result<()> {
        let permit = futures::executor::block_on(Arc::clone(&self.pool.permits).acquire_owned())
            .map_err(|_| Self::stopped())?;
        self.permit = Some(permit);
        let mut part = self.pool.buffer(self.part_size());
        part.extend_from_slice(&self.buf);
        self.buf = part;
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.permit.is_none() {
            self.take_permit()?;
        }
        let data = std::mem::take(&mut self.buf).freeze();
        let permit = self.permit.take().ok_or_else(Self::stopped)?;
        let lease = PartLease {
            _permit: permit,
            pool: Arc::clone(&self.pool),
        };
        self.number += 1;
        self.tx
            .blocking_send((data, lease))
            .map_err(|_| Self::stopped())
    }
}

impl io::Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let part_size = self.part_size();
        if self.permit.is_none() {
            // Less than a part, so a part buffer always has room once its permit is taken.
            let allowance = UNACCOUNTED_BYTES.min(part_size.saturating_sub(1));
            let room = allowance.saturating_sub(self.buf.len());
            if room > 0 {
                let n = room.min(buf.len());
                self.buf.extend_from_slice(&buf[..n]);
                return Ok(n);
            }
            self.take_permit()?;
        }
        let room = part_size - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == part_size {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SinkWriter for PartWriter {
    fn close(mut self: Box<Self>) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// A multipart upload whose parts are (being) uploaded.
pub struct PendingUpload {
    store: S3Store,
    key: String,
    upload_id: String,
    task: tokio::task::JoinHandle<Result<Vec<UploadedPart>>>,
}

impl PendingUpload {
    /// Wait for the parts, complete the upload and confirm size and composite SHA-256.
    pub async fn commit(self, size: u64, sha256_hex: &str) -> Result<StoredObject> {
        let PendingUpload {
            store,
            key,
            upload_id,
            task,
        } = self;
        let parts = match task.await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                store.abort_upload(&key, &upload_id).await;
                return Err(e);
            }
            Err(join) => {
                store.abort_upload(&key, &upload_id).await;
                return Err(AgentError::Storage(format!("uploader task failed: {join}")));
            }
        };
        match Self::complete(&store, &key, &upload_id, &parts, size, sha256_hex).await {
            Ok(obj) => Ok(obj),
            Err(e) => {
                store.abort_upload(&key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn complete(
        store: &S3Store,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        size: u64,
        sha256_hex: &str,
    ) -> Result<StoredObject> {
        let uploaded: u64 = parts.iter().map(|p| p.size).sum();
        if uploaded != size {
            return Err(AgentError::Integrity(format!(
                "{uploaded} bytes were uploaded, {size} were written"
            )));
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .checksum_sha256(&p.sha256_b64)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let mut delay = store.settings.backoff;
        let mut attempt = 0u32;
        let mut confirmed = None;
        loop {
            attempt += 1;
            let sent = store
                .client
                .complete_multipart_upload()
                .bucket(&store.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(completed.clone())
                .send()
                .await;
            let fail = match sent {
                Ok(_) => break,
                Err(e) => S3Fail::of(&e),
            };
            let err = fail.text.clone();
            // The completion may have happened even though its response was lost or could not
            // be read: the object itself is the proof (size, and checksum, ETag or read-back).
            if let Some(c) = store.completed_anyway(key, size, parts, sha256_hex).await? {
                tracing::warn!(key, error = %err, confirmed_by = %c, "completion response unreadable; the object is confirmed");
                confirmed = Some(c);
                break;
            }
            if !fail.fault.retryable() || attempt > store.settings.retries {
                return Err(fail.into_error("CompleteMultipartUpload", attempt));
            }
            tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %err, "CompleteMultipartUpload failed, retrying");
            retry_event("CompleteMultipartUpload", attempt, delay, &err);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(8));
        }
        let confirmed_by = match confirmed {
            Some(c) => c,
            None => {
                let head = store.head(key).await?;
                if head.size != size {
                    return Err(AgentError::Integrity(format!(
                        "s3://{}/{key} holds {} bytes after upload, {size} were written",
                        store.bucket, head.size
                    )));
                }
                store
                    .verify_multipart(key, &head, parts, sha256_hex)
                    .await?
            }
        };
        store.ensure_retention(key).await?;
        tracing::info!(bucket = %store.bucket, key, bytes = size, parts = parts.len(), confirmed_by = %confirmed_by, "upload confirmed");
        Ok(StoredObject {
            location: format!("s3://{}/{key}", store.bucket),
            size,
            confirmed_by,
        })
    }

    /// Abort the multipart upload (after the uploader stopped).
    pub async fn abort(self) {
        let _ = self.abort_with_cause().await;
    }

    /// Abort the multipart upload and return the uploader's error, if it failed.
    pub async fn abort_with_cause(self) -> Option<AgentError> {
        let PendingUpload {
            store,
            key,
            upload_id,
            task,
        } = self;
        let cause = match task.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(join) => Some(AgentError::Storage(format!("uploader task failed: {join}"))),
        };
        store.abort_upload(&key, &upload_id).await;
        cause
    }
}

fn checksum_matches(got: &str, expected: &str, parts: usize) -> bool {
    got == expected || got == expected.trim_end_matches(&format!("-{parts}"))
}

/// The S3 composite checksum of a multipart object: SHA-256 over the concatenated part
/// digests, base64, suffixed with `-<parts>`.
fn composite_sha256(parts: &[UploadedPart]) -> String {
    let concat: Vec<u8> = parts.iter().flat_map(|p| p.sha256).collect();
    format!("{}-{}", base64::encode(sha256_raw(&concat)), parts.len())
}

/// Blocking reader over chunks received from the download task.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_checksum_matches_s3_definition() {
        let a = UploadedPart {
            number: 1,
            etag: String::new(),
            sha256: sha256_raw(b"a"),
            sha256_b64: String::new(),
            md5: None,
            size: 1,
        };
        let b = UploadedPart {
            number: 2,
            etag: String::new(),
            sha256: sha256_raw(b"b"),
            sha256_b64: String::new(),
            md5: None,
            size: 1,
        };
        let mut concat = sha256_raw(b"a").to_vec();
        concat.extend(sha256_raw(b"b"));
        assert_eq!(
            composite_sha256(&[a, b]),
            format!("{}-2", base64::encode(sha256_raw(&concat)))
        );
    }

    fn part(md5_of: Option<&[u8]>) -> UploadedPart {
        UploadedPart {
            number: 1,
            etag: String::new(),
            sha256: [0; 32],
            sha256_b64: String::new(),
            md5: md5_of.map(md5_raw),
            size: 1,
        }
    }

    #[test]
    fn etags_are_checked_against_locally_computed_md5s() {
        // RFC 1321 test vector.
        let abc = md5_raw(b"abc");
        assert_eq!(hex::encode(abc), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            single_etag_verdict(Some("\"900150983CD24FB0D6963F7D28E17F72\""), &abc),
            EtagVerdict::Match
        );
        assert!(matches!(
            single_etag_verdict(Some("\"00000000000000000000000000000000\""), &abc),
            EtagVerdict::Mismatch { .. }
        ));
        for unusable in [
            None,
            Some("W/\"900150983cd24fb0d6963f7d28e17f72\""),
            Some("\"opaque-etag\""),
            Some(""),
        ] {
            assert_eq!(
                single_etag_verdict(unusable, &abc),
                EtagVerdict::Unusable,
                "{unusable:?}"
            );
        }

        // Multipart: MD5 over the concatenated part MD5s, "-<parts>" (what S3, moto and
        // s3s-fs compute).
        let parts = [part(Some(b"a")), part(Some(b"b"))];
        let mut concat = md5_raw(b"a").to_vec();
        concat.extend(md5_raw(b"b"));
        let expected = format!("{}-2", hex::encode(md5_raw(&concat)));
        assert_eq!(multipart_etag(&[md5_raw(b"a"), md5_raw(b"b")]), expected);
        let quoted = format!("\"{expected}\"");
        assert_eq!(
            multipart_etag_verdict(Some(&quoted), &parts),
            EtagVerdict::Match
        );
        // Parts swapped, or another part count: the server assembled other bytes.
        let swapped = [part(Some(b"b")), part(Some(b"a"))];
        assert!(matches!(
            multipart_etag_verdict(Some(&quoted), &swapped),
            EtagVerdict::Mismatch { .. }
        ));
        let three = format!("\"{}-3\"", &expected[..32]);
        assert!(matches!(
            multipart_etag_verdict(Some(&three), &parts),
            EtagVerdict::Mismatch { .. }
        ));
        // A whole-object MD5, an opaque ETag, or parts whose MD5 is unknown: read back instead.
        let unknown = [part(Some(b"a")), part(None)];
        for (etag, parts) in [
            (Some("\"900150983cd24fb0d6963f7d28e17f72\""), &parts[..]),
            (Some("\"kms-encrypted-etag\""), &parts[..]),
            (None, &parts[..]),
            (Some(quoted.as_str()), &unknown[..]),
        ] {
            assert_eq!(
                multipart_etag_verdict(etag, parts),
                EtagVerdict::Unusable,
                "{etag:?}"
            );
        }
    }

    /// Every part the writer sent, in order (the writer runs on its own thread, as in a backup).
    fn cut(pool: Arc<PartPool>, base: usize, bytes: usize) -> Vec<usize> {
        let (tx, mut rx) = mpsc::channel::<Part>(1);
        let writer = std::thread::spawn(move || {
            let mut w: Box<dyn SinkWriter> = Box::new(PartWriter::new(base, pool, tx));
            let chunk = [7u8; 3];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                io::Write::write_all(&mut w, &chunk[..n]).unwrap();
                left -= n;
            }
            w.close().unwrap();
        });
        let mut sizes = Vec::new();
        while let Some((data, lease)) = rx.blocking_recv() {
            sizes.push(data.len());
            lease.give_back(data);
        }
        writer.join().unwrap();
        sizes
    }

    #[test]
    fn part_writer_cuts_exact_parts() {
        assert_eq!(cut(PartPool::new(8), 10, 25), vec![10, 10, 5]);
        assert_eq!(cut(PartPool::new(8), 10, 20), vec![10, 10]);
        assert_eq!(cut(PartPool::new(8), 10, 0), Vec::<usize>::new());
    }

    #[test]
    fn part_sizes_s3_cannot_take_are_refused() {
        let with = |part_size: usize, concurrency: usize| S3Settings {
            part_size,
            concurrency,
            ..S3Settings::default()
        };
        assert!(check_settings(&S3Settings::default()).is_ok());
        assert!(check_settings(&with(5 << 20, 1)).is_ok());
        assert!(check_settings(&with(5 << 30, 1)).is_ok());
        for (bad, says) in [
            (with((5 << 20) - 1, 2), "at least 5 MiB"),
            (with((5 << 30) + 1, 2), "at most 5 GiB"),
            (with(5 << 20, 0), "at least 1"),
        ] {
            let err = check_settings(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn parts_double_every_thousand_so_ten_thousand_reach_five_tib() {
        let mib = 1usize << 20;
        assert_eq!(part_size_for(5 * mib, 1), 5 * mib);
        assert_eq!(part_size_for(5 * mib, 1000), 5 * mib);
        assert_eq!(part_size_for(5 * mib, 1001), 10 * mib);
        assert_eq!(part_size_for(5 * mib, 2001), 20 * mib);
        assert_eq!(part_size_for(5 * mib, 10_000), 2560 * mib);
        let total: u64 = (1..=10_000).map(|n| part_size_for(5 * mib, n) as u64).sum();
        assert_eq!(
            total,
            5 * 1_023_000 * mib as u64,
            "≈ 4.9 TiB in 10,000 parts"
        );
        // Never beyond S3's largest part.
        assert_eq!(part_size_for(64 * mib, 10_000), MAX_PART);
        // The writer follows it: 1,000 parts of the first size, then twice that.
        let sizes = cut(PartPool::new(3), 10, 10 * 1000 + 25);
        assert_eq!(sizes.len(), 1002);
        assert!(sizes[..1000].iter().all(|&n| n == 10));
        assert_eq!(sizes[1000..], [20, 5]);
    }

    #[test]
    fn an_uploaded_part_s_buffer_is_filled_again() {
        let pool = PartPool::new(1);
        let (tx, mut rx) = mpsc::channel::<Part>(1);
        let mut w = PartWriter::new(10, Arc::clone(&pool), tx);
        io::Write::write_all(&mut w, &[1u8; 10]).unwrap();
        let (first, lease) = rx.try_recv().expect("a whole part is sent");
        let address = first.as_ptr();
        lease.give_back(first);
        io::Write::write_all(&mut w, &[2u8; 10]).unwrap();
        let (second, lease) = rx.try_recv().expect("the second part is sent");
        assert_eq!(
            second.as_ptr(),
            address,
            "the first part's buffer, filled again"
        );
        assert_eq!(&second[..], &[2u8; 10]);
        // A part still referenced elsewhere keeps its buffer: a new one is allocated.
        let held = second.clone();
        lease.give_back(second);
        io::Write::write_all(&mut w, &[3u8; 10]).unwrap();
        let (third, _lease) = rx.try_recv().expect("the third part is sent");
        assert_ne!(third.as_ptr(), held.as_ptr());
        assert_eq!(&held[..], &[2u8; 10], "a part in use is never overwritten");
        assert_eq!(&third[..], &[3u8; 10]);
    }

    #[test]
    fn part_buffers_are_shared_and_a_stream_starts_without_one() {
        // A pool of one part buffer for two uploads.
        let pool = PartPool::new(1);
        let permits = Arc::clone(&pool.permits);
        let (tx_a, mut rx_a) = mpsc::channel::<Part>(8);
        let (tx_b, mut rx_b) = mpsc::channel::<Part>(8);
        // A fills a whole part: the pool's permit travels with it until it is uploaded.
        let mut a = PartWriter::new(10, Arc::clone(&pool), tx_a);
        io::Write::write_all(&mut a, &[1u8; 10]).unwrap();
        let part_a = rx_a.try_recv().expect("A's part was sent");
        assert_eq!(part_a.0.len(), 10);
        assert_eq!(permits.available_permits(), 0);
        // B writes its first bytes without a permit, then waits for one.
        let (said, heard) = std::sync::mpsc::channel();
        let b = std::thread::spawn(move || {
            let mut b: Box<dyn SinkWriter> = Box::new(PartWriter::new(10, pool, tx_b));
            io::Write::write_all(&mut b, &[2u8; 9]).unwrap();
            said.send("started").unwrap();
            io::Write::write_all(&mut b, &[2u8; 6]).unwrap();
            said.send("wrote a part").unwrap();
            b.close().unwrap();
        });
        let wait = Duration::from_secs(10);
        assert_eq!(heard.recv_timeout(wait), Ok("started"));
        assert!(
            heard.recv_timeout(Duration::from_millis(300)).is_err(),
            "B must wait while A's part holds the only buffer"
        );
        drop(part_a); // uploaded: its buffer is free
        assert_eq!(heard.recv_timeout(wait), Ok("wrote a part"));
        // B's last part needs the buffer its first one holds until that one is uploaded.
        let mut sizes = Vec::new();
        while let Some((data, lease)) = rx_b.blocking_recv() {
            assert!(data.iter().all(|&x| x == 2));
            sizes.push(data.len());
            lease.give_back(data);
        }
        b.join().unwrap();
        assert_eq!(sizes, vec![10, 5]);
        assert_eq!(permits.available_permits(), 1);
    }
}
