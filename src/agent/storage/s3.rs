//! S3 store on aws-sdk-s3 with a rustls/ring HTTP client.
//!
//! Uploads are multipart: the pipeline thread cuts the stored stream into parts of a fixed
//! size and hands them over a bounded channel; up to `concurrency` parts are in flight at once,
//! each retried with exponential backoff. Every part carries its SHA-256 (`x-amz-checksum-sha256`),
//! which the server checks on receipt; after `CompleteMultipartUpload` a `HEAD` with checksum
//! mode confirms the size and the composite SHA-256 over the parts before success is reported.
//! Any failure aborts the multipart upload, so no invisible parts are left behind.

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

use super::{LockMode, S3Settings, SinkWriter, Sse, StoredObject};
use crate::agent::error::{AgentError, Result, into_io};
use crate::agent::hash::sha256_raw;
use crate::egress::cap::{CollectError, collect_capped};

/// A connected S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    settings: S3Settings,
}

/// The error text: the egress refusal or read cap, the S3 code and message, or the kind of
/// failure — never a reply body from the endpoint ([`crate::egress::s3::error_text`]).
fn err_text<E>(
    e: &SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    crate::egress::s3::error_text(e)
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

async fn with_retries<T, F, Fut>(settings: &S3Settings, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let mut delay = settings.backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt > settings.retries => {
                return Err(AgentError::Storage(format!(
                    "{what} failed after {attempt} attempts: {e}"
                )));
            }
            Err(e) => {
                tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "{what} failed, retrying");
                retry_event(what, attempt, delay, &e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
}

impl S3Store {
    /// Connect to `bucket` with `settings`.
    pub async fn connect(bucket: String, settings: S3Settings) -> Result<Self> {
        if settings.part_size < 5 << 20 {
            return Err(AgentError::Config(
                "S3 part size must be at least 5 MiB".into(),
            ));
        }
        if settings.concurrency == 0 {
            return Err(AgentError::Config(
                "S3 upload concurrency must be at least 1".into(),
            ));
        }
        let client = client(&settings).await;
        Ok(Self {
            client,
            bucket,
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
                Err(e) => Err(err_text(&e)),
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
            async move { req.send().await.map(|_| ()).map_err(|e| err_text(&e)) }
        })
        .await?;
        let head = self.head(key).await?;
        if head.0 != size {
            return Err(AgentError::Integrity(format!(
                "s3://{}/{key} holds {} bytes, {size} were written",
                self.bucket, head.0
            )));
        }
        Ok(StoredObject {
            location: format!("s3://{}/{key}", self.bucket),
            size,
        })
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
                .map_err(|e| err_text(&e))
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
                .map_err(|e| err_text(&e))
        })
        .await?;
        let head = with_retries(&self.settings, "HEAD", || async {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| err_text(&e))
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

    /// Whether `key` holds exactly `size` bytes with composite checksum `expected`.
    async fn confirm(&self, key: &str, size: u64, expected: &str, parts: usize) -> Result<bool> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        Ok(match out {
            Ok(o) => {
                o.content_length().unwrap_or(-1) == size as i64
                    && o.checksum_sha256()
                        .is_some_and(|c| checksum_matches(c, expected, parts))
            }
            Err(_) => false,
        })
    }

    async fn head(&self, key: &str) -> Result<(u64, Option<String>)> {
        with_retries(&self.settings, "HEAD", || async {
            let out = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .map_err(|e| err_text(&e))?;
            Ok((
                out.content_length().unwrap_or(-1).max(0) as u64,
                out.checksum_sha256().map(str::to_string),
            ))
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
                .map_err(|e| {
                    if e.as_service_error()
                        .is_some_and(|s| s.code() == Some("NoSuchKey"))
                    {
                        format!("s3://{}/{key} does not exist", self.bucket)
                    } else {
                        err_text(&e)
                    }
                })?;
            if out.content_length().unwrap_or(0) as u64 > limit as u64 {
                return Err(format!(
                    "s3://{}/{key} is larger than {limit} bytes",
                    self.bucket
                ));
            }
            // A reply without Content-Length (chunked) is read only up to the limit.
            collect_capped(out.body, limit as u64)
                .await
                .map_err(|e| match e {
                    CollectError::Cap(_) => {
                        format!("s3://{}/{key} is larger than {limit} bytes", self.bucket)
                    }
                    CollectError::Read(_) => format!(
                        "reading s3://{}/{key}: the reply broke off or exceeded a read cap",
                        self.bucket
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
                let out = req.send().await.map_err(|e| err_text(&e))?;
                out.upload_id()
                    .map(str::to_string)
                    .ok_or_else(|| "no upload id returned".to_string())
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
        // One part being filled plus `concurrency` parts queued or in flight: the memory bound.
        let writer = PartWriter::new(
            self.settings.part_size,
            Arc::new(Semaphore::new(self.settings.concurrency + 1)),
            tx,
        );
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
                        Some((data, permit)) => {
                            next_part += 1;
                            if next_part > 10_000 {
                                inflight.abort_all();
                                return Err(AgentError::Storage("more than 10000 parts: raise --s3-part-size".into()));
                            }
                            let store = self.clone();
                            let (key, id) = (key.to_string(), upload_id.to_string());
                            let n = next_part;
                            inflight.spawn(async move {
                                let done = store.upload_part(&key, &id, n, data).await;
                                drop(permit); // the part's buffer is gone: the writer may fill another
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
        data: Bytes,
    ) -> Result<UploadedPart> {
        let digest = sha256_raw(&data);
        let sum = base64::encode(digest);
        let size = data.len() as u64;
        // One span per part; its retries are events on it.
        let span = tracing::info_span!("upload_part", part = number, bytes = size);
        let etag = crate::telemetry::otel::in_span(
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
                let sum = &sum;
                async move {
                    let out = req.send().await.map_err(|e| err_text(&e))?;
                    if let Some(returned) = out.checksum_sha256()
                        && returned != sum.as_str()
                    {
                        return Err(format!(
                            "server computed checksum {returned} for part {number}, expected {sum}"
                        ));
                    }
                    Ok(out.e_tag().unwrap_or_default().to_string())
                }
            }),
        )
        .await?;
        tracing::debug!(part = number, bytes = size, "part uploaded");
        Ok(UploadedPart {
            number,
            etag,
            sha256: digest,
            sha256_b64: sum,
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
                Err(e) => Err(err_text(&e)),
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
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
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
            req.send().await.map(|o| o.body).map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.code() == Some("NoSuchKey"))
                {
                    format!("s3://{}/{key} does not exist", self.bucket)
                } else {
                    err_text(&e)
                }
            })
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

/// One uploaded part.
#[derive(Debug, Clone)]
struct UploadedPart {
    number: i32,
    etag: String,
    sha256: [u8; 32],
    sha256_b64: String,
    size: u64,
}

/// A part and the permit that accounts for its buffer.
type Part = (Bytes, OwnedSemaphorePermit);

/// Cuts the stored stream into parts and hands them to the uploader (blocking side). A part
/// buffer is only allocated once a permit is free, so at most `concurrency + 1` parts exist.
struct PartWriter {
    buf: BytesMut,
    permit: Option<OwnedSemaphorePermit>,
    part_size: usize,
    permits: Arc<Semaphore>,
    tx: mpsc::Sender<Part>,
}

impl PartWriter {
    fn new(part_size: usize, permits: Arc<Semaphore>, tx: mpsc::Sender<Part>) -> Self {
        Self {
            buf: BytesMut::new(),
            permit: None,
            part_size,
            permits,
            tx,
        }
    }

    fn stopped() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the S3 uploader stopped")
    }

    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf).freeze();
        let permit = self.permit.take().ok_or_else(Self::stopped)?;
        self.tx
            .blocking_send((data, permit))
            .map_err(|_| Self::stopped())
    }
}

impl io::Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.permit.is_none() {
            let permit = futures::executor::block_on(Arc::clone(&self.permits).acquire_owned())
                .map_err(|_| Self::stopped())?;
            self.permit = Some(permit);
            self.buf = BytesMut::with_capacity(self.part_size);
        }
        let room = self.part_size - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == self.part_size {
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
    pub async fn commit(self, size: u64, _sha256_hex: &str) -> Result<StoredObject> {
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
        match Self::complete(&store, &key, &upload_id, &parts, size).await {
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
        let expected = composite_sha256(parts);
        let mut delay = store.settings.backoff;
        let mut attempt = 0u32;
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
            let err = match sent {
                Ok(_) => break,
                Err(e) => err_text(&e),
            };
            // The completion may have happened even though its response was lost or could not
            // be read: the object itself is the proof (size and composite checksum).
            if let Ok(true) = store.confirm(key, size, &expected, parts.len()).await {
                tracing::warn!(key, error = %err, "completion response unreadable; the object is confirmed by HEAD");
                break;
            }
            if attempt > store.settings.retries {
                return Err(AgentError::Storage(format!(
                    "CompleteMultipartUpload failed after {attempt} attempts: {err}"
                )));
            }
            tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = %err, "CompleteMultipartUpload failed, retrying");
            retry_event("CompleteMultipartUpload", attempt, delay, &err);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(8));
        }
        let (stored_size, checksum) = store.head(key).await?;
        if stored_size != size {
            return Err(AgentError::Integrity(format!(
                "s3://{}/{key} holds {stored_size} bytes after upload, {size} were written",
                store.bucket
            )));
        }
        match checksum {
            Some(got) if checksum_matches(&got, &expected, parts.len()) => {}
            Some(got) => {
                return Err(AgentError::Integrity(format!(
                    "s3://{}/{key}: server checksum {got} differs from the uploaded parts' {expected}",
                    store.bucket
                )));
            }
            None => {
                return Err(AgentError::Integrity(format!(
                    "s3://{}/{key}: the server returned no SHA-256 checksum to confirm the upload",
                    store.bucket
                )));
            }
        }
        store.ensure_retention(key).await?;
        tracing::info!(bucket = %store.bucket, key, bytes = size, parts = parts.len(), "upload confirmed (size and checksum)");
        Ok(StoredObject {
            location: format!("s3://{}/{key}", store.bucket),
            size,
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
            size: 1,
        };
        let b = UploadedPart {
            number: 2,
            etag: String::new(),
            sha256: sha256_raw(b"b"),
            sha256_b64: String::new(),
            size: 1,
        };
        let mut concat = sha256_raw(b"a").to_vec();
        concat.extend(sha256_raw(b"b"));
        assert_eq!(
            composite_sha256(&[a, b]),
            format!("{}-2", base64::encode(sha256_raw(&concat)))
        );
    }

    #[test]
    fn part_writer_cuts_exact_parts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel::<Part>(8);
        let handle = std::thread::spawn(move || {
            let mut w: Box<dyn SinkWriter> =
                Box::new(PartWriter::new(10, Arc::new(Semaphore::new(8)), tx));
            io::Write::write_all(&mut w, &[1u8; 25]).unwrap();
            w.close().unwrap();
        });
        handle.join().unwrap();
        let sizes: Vec<usize> = rt.block_on(async {
            let mut v = Vec::new();
            while let Some(b) = rx.recv().await {
                v.push(b.0.len());
            }
            v
        });
        assert_eq!(sizes, vec![10, 10, 5]);
    }
}
