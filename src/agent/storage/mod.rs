//! Where artifacts live: S3 (multipart, parallel parts, per-part retry) or a directory
//! (temp file, fsync, atomic rename). Both expose the same operations to the pipeline.

use std::io::{self, Read, Write};
use std::time::Duration;

use super::error::{AgentError, Result};
pub use crate::contract::ConfirmedBy;
use crate::egress::EgressPolicy;

pub mod fault;
pub mod file;
pub mod s3;

/// A parsed `s3://bucket/prefix` or `file:///dir` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An S3 bucket and a key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix.
        prefix: String,
    },
    /// An absolute directory (or file, for a manifest) path.
    File {
        /// Absolute path.
        path: std::path::PathBuf,
    },
}

impl std::str::FromStr for Location {
    type Err = AgentError;

    /// Parses `s3://bucket/prefix` or `file:///absolute/path` literally: the rest after the
    /// bucket (or the path) is the key as it is, with no URL meaning for `%`, `?` or `#`, since
    /// the operator writes locations from keys as they are (a `pathTemplate` or a storage
    /// `prefix` may hold any of them) and [`Display`](std::fmt::Display) writes them back the
    /// same way. `.` and `..` segments are refused: a URL parser would fold them away and a
    /// file path would climb out of its directory.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = |why: &str| {
            AgentError::Config(format!(
                "invalid location {s:?}: {why} (expected s3://bucket/prefix or file:///dir)"
            ))
        };
        if let Some(rest) = strip_scheme(s, "s3") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(AgentError::Config(format!("location {s:?} has no bucket")));
            }
            if !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err(AgentError::Config(format!(
                    "location {s:?} must be s3://bucket/prefix only (a bucket name is letters, digits, '.', '-' and '_')"
                )));
            }
            if prefix.split('/').any(|seg| seg == "." || seg == "..") {
                return Err(invalid("'.' and '..' segments are not allowed"));
            }
            Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else if let Some(rest) = strip_scheme(s, "file") {
            let path = rest
                .strip_prefix("localhost")
                .filter(|p| p.starts_with('/'))
                .unwrap_or(rest);
            file_path(s, path)
        } else if let Some(path) = s
            .split_once(':')
            .filter(|(scheme, path)| scheme.eq_ignore_ascii_case("file") && path.starts_with('/'))
            .map(|(_, path)| path)
        {
            // `file:/dir`, the short form the operator writes.
            file_path(s, path)
        } else {
            let scheme = s.split_once(':').map(|(scheme, _)| scheme).unwrap_or(s);
            Err(AgentError::Config(format!(
                "unsupported location scheme {scheme:?} in {s:?} (use s3:// or file://)"
            )))
        }
    }
}

/// The path of a `file:` location `s`.
fn file_path(s: &str, path: &str) -> Result<Location> {
    if !path.starts_with('/') {
        return Err(AgentError::Config(format!(
            "file location {s:?} must be file:///absolute/path"
        )));
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(AgentError::Config(format!(
            "invalid location {s:?}: '.' and '..' segments are not allowed"
        )));
    }
    if path.contains('\0') {
        return Err(AgentError::Config(format!(
            "invalid location {s:?}: a path cannot hold a NUL character"
        )));
    }
    Ok(Location::File { path: path.into() })
}

/// `s` without `<scheme>://` (the scheme in any letter case).
fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let (head, rest) = s.split_once("://")?;
    head.eq_ignore_ascii_case(scheme).then_some(rest)
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

impl Location {
    /// The location of `rel` below this one.
    pub fn join(&self, rel: &str) -> Location {
        let rel = rel.trim_matches('/');
        match self {
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    rel.to_string()
                } else {
                    format!("{prefix}/{rel}")
                },
            },
            Location::File { path } => Location::File {
                path: path.join(rel),
            },
        }
    }

    /// Split a manifest location into its directory and file name.
    pub fn split_last(&self) -> Result<(Location, String)> {
        match self {
            Location::S3 { bucket, prefix } => {
                let (dir, name) = prefix.rsplit_once('/').unwrap_or(("", prefix.as_str()));
                if name.is_empty() {
                    return Err(AgentError::Config(format!(
                        "{self} does not name an object"
                    )));
                }
                Ok((
                    Location::S3 {
                        bucket: bucket.clone(),
                        prefix: dir.to_string(),
                    },
                    name.to_string(),
                ))
            }
            Location::File { path } => {
                let name = path
                    .file_name()
                    .ok_or_else(|| AgentError::Config(format!("{self} does not name a file")))?
                    .to_string_lossy()
                    .into_owned();
                let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
                Ok((Location::File { path: dir }, name))
            }
        }
    }
}

/// S3 connection and upload settings.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Custom endpoint (S3-compatible servers), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region (default: from the environment, else `us-east-1`).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`).
    pub path_style: bool,
    /// Size of the first 1,000 multipart parts in bytes (5 MiB to 5 GiB); later parts double
    /// every 1,000 (`s3::part_size_for`).
    pub part_size: usize,
    /// Parts uploaded in parallel.
    pub concurrency: usize,
    /// Retries per part (and per other request) after the first attempt.
    pub retries: u32,
    /// First backoff between retries; doubles on each retry, capped at 8 s.
    pub backoff: Duration,
    /// Timeout of one request attempt.
    pub attempt_timeout: Duration,
    /// Object Lock retention for every object written.
    pub object_lock: Option<ObjectLock>,
    /// Server-side encryption for every object written.
    pub sse: Option<Sse>,
    /// Storage class for every object written.
    pub storage_class: Option<String>,
    /// Which internal address ranges the endpoint may resolve to (from the operator).
    pub egress: EgressPolicy,
    /// Explicit credentials (a copy reads one storage and writes another, each with its own
    /// Secret); `None`: the standard AWS chain (environment, IRSA, profile, metadata).
    pub credentials: Option<aws_sdk_s3::config::Credentials>,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            path_style: false,
            part_size: 5 << 20,
            concurrency: 2,
            retries: 4,
            backoff: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(120),
            object_lock: None,
            sse: None,
            storage_class: None,
            egress: EgressPolicy::default(),
            credentials: None,
        }
    }
}

/// Object Lock mode and retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// GOVERNANCE or COMPLIANCE.
    pub mode: LockMode,
    /// Retention in days from the time of writing.
    pub days: u32,
}

/// Object Lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum LockMode {
    /// Users with special permission may shorten the retention.
    Governance,
    /// Nobody can delete the object before its retain-until date.
    Compliance,
}

/// Server-side encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS, optionally with a key id.
    Kms {
        /// KMS key id or ARN (default key when absent).
        key_id: Option<String>,
    },
}

/// The open store behind a location.
// One or two stores per agent run: boxing the S3 variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    /// S3 bucket.
    S3(s3::S3Store),
    /// Local directory.
    File(file::FileStore),
}

/// A confirmed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Full location.
    pub location: String,
    /// Size confirmed by the store.
    pub size: u64,
    /// How the store confirmed the bytes.
    pub confirmed_by: ConfirmedBy,
}

impl Store {
    /// Open the store a location points into.
    pub async fn open(location: &Location, settings: &S3Settings) -> Result<Store> {
        match location {
            Location::S3 { bucket, .. } => Ok(Store::S3(
                s3::S3Store::connect(bucket.clone(), settings.clone()).await?,
            )),
            Location::File { .. } => Ok(Store::File(file::FileStore)),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, at: &Location) -> Result<bool> {
        match (self, at) {
            (Store::S3(s), Location::S3 { prefix, .. }) => s.exists(prefix).await,
            (Store::File(f), Location::File { path }) => f.exists(path),
            _ => Err(mismatch()),
        }
    }

    /// Write a small object (the manifest) atomically and confirm it.
    pub async fn put_small(&self, at: &Location, bytes: Vec<u8>) -> Result<StoredObject> {
        match (self, at) {
            (Store::S3(s), Location::S3 { prefix, .. }) => s.put_small(prefix, bytes).await,
            (Store::File(f), Location::File { path }) => f.put_small(path, &bytes),
            _ => Err(mismatch()),
        }
    }

    /// Read a small object (the manifest), at most `limit` bytes.
    pub async fn get_small(&self, at: &Location, limit: usize) -> Result<Vec<u8>> {
        match (self, at) {
            (Store::S3(s), Location::S3 { prefix, .. }) => s.get_small(prefix, limit).await,
            (Store::File(f), Location::File { path }) => f.get_small(path, limit),
            _ => Err(mismatch()),
        }
    }

    /// Start writing an object: returns the writer the pipeline thread fills and the pending
    /// upload to commit (confirm size and checksum) or abort afterwards.
    pub async fn begin_upload(&self, at: &Location) -> Result<(Box<dyn SinkWriter>, Pending)> {
        match (self, at) {
            (Store::S3(s), Location::S3 { prefix, .. }) => {
                let (w, p) = s.begin_upload(prefix).await?;
                Ok((w, Pending::S3(Box::new(p))))
            }
            (Store::File(f), Location::File { path }) => {
                let (w, p) = f.begin_upload(path)?;
                Ok((w, Pending::File(p)))
            }
            _ => Err(mismatch()),
        }
    }

    /// Open an object as a blocking reader (used from the pipeline thread).
    pub async fn open_reader(&self, at: &Location) -> Result<Box<dyn Read + Send>> {
        match (self, at) {
            (Store::S3(s), Location::S3 { prefix, .. }) => s.open_reader(prefix).await,
            (Store::File(f), Location::File { path }) => f.open_reader(path),
            _ => Err(mismatch()),
        }
    }
}

fn mismatch() -> AgentError {
    AgentError::Config("location does not belong to this store".into())
}

/// The writing end of an upload, filled by the pipeline thread.
pub trait SinkWriter: Write + Send {
    /// Flush everything (last part, fsync) after the last byte was written.
    fn close(self: Box<Self>) -> io::Result<()>;
}

/// An upload whose bytes were written but which is not yet committed.
pub enum Pending {
    /// S3 multipart upload.
    S3(Box<s3::PendingUpload>),
    /// Temp file.
    File(file::PendingFile),
}

impl Pending {
    /// Make the object visible and confirm it holds `size` bytes with SHA-256 `sha256_hex`.
    /// One `confirm` span.
    pub async fn commit(self, size: u64, sha256_hex: &str) -> Result<StoredObject> {
        let span = tracing::info_span!("confirm", bytes = size);
        crate::telemetry::otel::in_span(span, async move {
            match self {
                Pending::S3(p) => p.commit(size, sha256_hex).await,
                Pending::File(p) => p.commit(size),
            }
        })
        .await
    }

    /// Discard the upload and return the uploader's own error, if it failed (the pipeline only
    /// sees a closed channel when an upload fails).
    pub async fn abort_with_cause(self) -> Option<AgentError> {
        match self {
            Pending::S3(p) => p.abort_with_cause().await,
            Pending::File(p) => {
                p.abort();
                None
            }
        }
    }

    /// Discard the upload (abort the multipart upload, remove the temp file).
    pub async fn abort(self) {
        match self {
            Pending::S3(p) => p.abort().await,
            Pending::File(p) => p.abort(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        let l: Location = "s3://bkt/a/b/".parse().unwrap();
        assert_eq!(
            l,
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            l.join("run1/manifest.json").to_string(),
            "s3://bkt/a/b/run1/manifest.json"
        );
        let l: Location = "s3://bkt".parse().unwrap();
        assert_eq!(l.join("x").to_string(), "s3://bkt/x");
        let (dir, name) = "s3://bkt/p/r/manifest.json"
            .parse::<Location>()
            .unwrap()
            .split_last()
            .unwrap();
        assert_eq!(
            (dir.to_string(), name.as_str()),
            ("s3://bkt/p/r".into(), "manifest.json")
        );
        let f: Location = "file:///var/backups".parse().unwrap();
        assert_eq!(
            f,
            Location::File {
                path: "/var/backups".into()
            }
        );
        assert!("http://x/y".parse::<Location>().is_err());
        assert!("s3:///nobucket".parse::<Location>().is_err());
        assert!("s3://u:p@bkt/x".parse::<Location>().is_err());
        assert!("file://remotehost/x".parse::<Location>().is_err());
    }
}

/// Properties of the location parser: it never panics, and what it prints reads back as the
/// same location, whatever characters a key holds.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        crate::proptest_config(256)
    }

    /// A key segment: any characters but `/` (URL-special ones, spaces and non-ASCII
    /// included), never `.` or `..`.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9._-]{1,12}",
            "[ -.0-~]{1,12}",
            proptest::collection::vec(any::<char>().prop_filter("no slash", |c| *c != '/'), 1..8)
                .prop_map(|c| c.into_iter().collect::<String>()),
        ]
        .prop_filter("no dot segments", |s| s != "." && s != "..")
    }

    fn key() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 0..6).prop_map(|s| s.join("/"))
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_string_parses_or_is_refused_without_panicking(s in any::<String>()) {
            let _ = s.parse::<Location>();
        }

        #[test]
        fn scheme_shaped_strings_never_panic(
            scheme in prop_oneof![Just("s3"), Just("file"), Just("S3"), Just("http")],
            rest in any::<String>(),
        ) {
            if let Ok(l) = format!("{scheme}://{rest}").parse::<Location>() {
                let _ = (l.to_string(), l.split_last().is_ok(), l.join("x"));
            }
        }

        /// `s3://bucket/prefix` prints and reads back as the same bucket and prefix: `%`, `#`,
        /// `?` and spaces are part of the key, as the operator writes them.
        #[test]
        fn an_s3_location_reads_back_as_printed(
            bucket in "[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]",
            prefix in key(),
        ) {
            let l = Location::S3 { bucket, prefix };
            let back: Location = l.to_string().parse().unwrap();
            prop_assert_eq!(&back, &l);
            // Joining a relative key and splitting the manifest name off again is the identity.
            let manifest = l.join("manifest.json");
            let (dir, name) = manifest.split_last().unwrap();
            prop_assert_eq!(dir, l);
            prop_assert_eq!(name, "manifest.json");
        }

        #[test]
        fn a_file_location_reads_back_as_printed(
            path in key().prop_filter("no NUL", |k| !k.contains('\0')),
        ) {
            let l = Location::File { path: format!("/{path}").into() };
            let back: Location = l.to_string().parse().unwrap();
            prop_assert_eq!(back, l);
        }

        /// `.` and `..` segments are refused anywhere in a location.
        #[test]
        fn dot_segments_are_refused(
            before in key(),
            dots in prop_oneof![Just("."), Just("..")],
            after in key(),
        ) {
            let rel = [before.as_str(), dots, after.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            let s3 = format!("s3://bkt/{rel}").parse::<Location>();
            let file = format!("file:///{rel}").parse::<Location>();
            prop_assert!(s3.is_err(), "{:?}", s3);
            prop_assert!(file.is_err(), "{:?}", file);
        }
    }

    #[test]
    fn url_characters_are_part_of_the_key() {
        let l: Location = "s3://bkt/nightly #1/100%/a?b".parse().unwrap();
        assert_eq!(
            l,
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "nightly #1/100%/a?b".into()
            }
        );
        let short: Location = "file:/backup/x".parse().unwrap();
        assert_eq!(short.to_string(), "file:///backup/x");
        let f: Location = "file:///backup/x#y/%41".parse().unwrap();
        assert_eq!(
            f,
            Location::File {
                path: "/backup/x#y/%41".into()
            }
        );
        assert!("file:///backup/../etc".parse::<Location>().is_err());
        assert!("s3://bkt/a/./b".parse::<Location>().is_err());
    }
}
