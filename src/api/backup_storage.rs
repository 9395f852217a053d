//! BackupStorage: where artifacts live, and whether that place is healthy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;

/// Where backup artifacts are stored: an S3 (or S3-compatible) bucket or a PersistentVolumeClaim.
/// The operator probes it on an interval (write, read and delete a probe object) and records
/// the results in status, so that a broken bucket is noticed before the next backup needs it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "dataguardian.io",
    version = "v1alpha1",
    kind = "BackupStorage",
    plural = "backupstorages",
    namespaced,
    status = "BackupStorageStatus",
    shortname = "bs",
    category = "dataguardian",
    doc = "Where backup artifacts are stored (S3 bucket or PVC), and whether that place is healthy.",
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.s3.bucket"}"#,
    printcolumn = r#"{"name":"Claim","type":"string","jsonPath":".spec.filesystem.claimName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Latency(ms)","type":"integer","jsonPath":".status.lastProbe.latencyMillis"}"#,
    printcolumn = r#"{"name":"Last Probe","type":"date","jsonPath":".status.lastProbe.time"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.filesystem)")
    .message("exactly one of s3 or filesystem must be set"))]
pub struct BackupStorageSpec {
    /// An S3 bucket (AWS or an S3-compatible server such as MinIO or Ceph RGW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    /// A directory on a PersistentVolumeClaim in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,
    /// How the operator checks the storage's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
}

/// An S3 bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1))]
    pub region: String,
    /// Endpoint URL for S3-compatible servers, e.g. `https://minio.example:9000`. Absent means
    /// AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')")
        .message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Address the bucket as `endpoint/bucket` instead of `bucket.endpoint` (most S3-compatible
    /// servers need this).
    #[serde(default)]
    pub force_path_style: bool,
    /// Key prefix inside the bucket under which every artifact is written, e.g. `shop/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')")
        .message("prefix must not start with '/'"))]
    pub prefix: Option<String>,
    /// Secret holding `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`. Absent means ambient credentials (IRSA, EKS Pod Identity, instance
    /// profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Storage class of uploaded objects, e.g. `STANDARD_IA`. Absent means the bucket default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub storage_class: Option<String>,
    /// Write every artifact with an Object Lock retention (WORM): nobody, including the
    /// operator, can delete or overwrite it before its retain-until date. The bucket must have
    /// Object Lock enabled (the probe checks this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
    /// Server-side encryption of uploaded objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// Object Lock retention mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ObjectLockMode {
    /// Users with `s3:BypassGovernanceRetention` can still delete early.
    Governance,
    /// Nobody can delete before the retain-until date, not even the root account.
    Compliance,
}

impl ObjectLockMode {
    /// The S3 spelling (`GOVERNANCE`, `COMPLIANCE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectLockMode::Governance => "GOVERNANCE",
            ObjectLockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// Object Lock retention for every artifact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ObjectLock {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: ObjectLockMode,
    /// Days each artifact is retained from its upload. Retention pruning never deletes an
    /// artifact before this date.
    #[schemars(range(min = 1, max = 36500))]
    pub days: u32,
}

/// Server-side encryption algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SseAlgorithm {
    /// S3-managed keys (SSE-S3).
    #[serde(rename = "AES256")]
    Aes256,
    /// KMS-managed keys (SSE-KMS).
    #[serde(rename = "aws:kms")]
    AwsKms,
}

/// Server-side encryption settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.kmsKeyId) || self.algorithm == 'aws:kms'")
    .message("kmsKeyId is only valid with algorithm aws:kms"))]
pub struct ServerSideEncryption {
    /// `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub algorithm: SseAlgorithm,
    /// KMS key id or ARN for `aws:kms`; absent means the account's default S3 key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

/// A directory on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemStorage {
    /// Name of the PersistentVolumeClaim (same namespace). It must be mountable by the backup
    /// Jobs (ReadWriteMany, or ReadWriteOnce when Jobs run on one node).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Directory inside the volume under which artifacts are written.
    #[serde(default = "default_fs_path")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.contains('..')")
        .message("path must be absolute and must not contain '..'"))]
    pub path: String,
}

fn default_fs_path() -> String {
    "/".to_string()
}

/// Health probing of a storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Seconds between probes.
    #[serde(default = "default_probe_interval")]
    #[schemars(range(min = 10, max = 86400))]
    pub interval_seconds: u32,
    /// Seconds after which a probe counts as failed.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u32,
    /// How many probe results `status.history` keeps.
    #[serde(default = "default_probe_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            interval_seconds: default_probe_interval(),
            timeout_seconds: default_probe_timeout(),
            history_limit: default_probe_history(),
        }
    }
}

fn default_probe_interval() -> u32 {
    300
}
fn default_probe_timeout() -> u32 {
    30
}
fn default_probe_history() -> u32 {
    20
}

/// Observed state of a BackupStorage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageStatus {
    /// `Ready` is True when the last probe succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The most recent probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeResult>,
    /// Recent probes, newest first, at most `spec.probe.historyLimit` entries: the durable
    /// health history of this storage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub history: Vec<ProbeResult>,
    /// Space used by DataGuardian artifacts, where cheap to measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<StorageUsage>,
}

/// The outcome of one probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// When the probe ran.
    pub time: Time,
    /// Whether writing, reading back and deleting the probe object all worked.
    pub success: bool,
    /// Round-trip time of the whole probe in milliseconds.
    #[serde(default)]
    pub latency_millis: u64,
    /// Whether the bucket reported Object Lock enabled (only for S3 with `objectLock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_enabled: Option<bool>,
    /// Machine-readable failure reason, e.g. `AccessDenied`, `NoSuchBucket`, `Timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Space used in a storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageUsage {
    /// Number of artifacts.
    pub artifacts: u64,
    /// Total bytes of all artifacts.
    pub bytes: u64,
    /// When these figures were measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
}

impl BackupStorageSpec {
    /// The probe settings, with defaults when `spec.probe` is absent.
    pub fn probe_or_default(&self) -> ProbeSpec {
        self.probe.clone().unwrap_or_default()
    }
}
