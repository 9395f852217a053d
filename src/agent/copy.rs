//! `dataguardian agent copy`: copies one confirmed backup — every artifact its manifest lists,
//! then the manifest itself — from one storage to another (a policy's secondary storage).
//!
//! Artifacts are already encrypted, so a copy never needs a key. Each artifact is streamed
//! object to object (bounded memory: the S3 reader's channel and the uploader's parts) while its
//! SHA-256 and size are computed; an artifact whose bytes do not match what the manifest lists
//! is never committed at the destination, and the copy fails as an integrity error. The
//! manifest is written last (the commit marker): a destination without it holds no backup.
//!
//! With `manifest_sha256` (the digest the operator recorded when it confirmed the run) a source
//! manifest with other bytes copies nothing. A destination that already holds the identical
//! manifest is left alone (an interrupted Job is simply run again); a destination manifest with
//! other bytes is refused, never overwritten.

use std::io::{Read, Write};

use super::error::{AgentError, Result};
use super::hash::{Tally, sha256_hex};
use super::storage::{Location, S3Settings, Store};
use crate::contract::{ArtifactPin, ManifestView};

/// Largest manifest read.
const MANIFEST_LIMIT: usize = 16 << 20;

/// One copy to make.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// The source manifest (`s3://…/manifest.json`, `file:///…/manifest.json`).
    pub from: Location,
    /// Where the copy's manifest goes; artifacts go below its directory under the same keys.
    pub to: Location,
    /// Connection settings of the source (S3 only).
    pub from_s3: S3Settings,
    /// Connection and write settings of the destination (Object Lock, SSE, storage class).
    pub to_s3: S3Settings,
    /// The digest the source manifest must have.
    pub manifest_sha256: Option<String>,
    /// Refresh mode (after a key rotation re-wrapped the source's manifest): the destination
    /// already holds this backup with a manifest of this digest (the one recorded for the
    /// copy); only the manifest is copied over it, and only when the source's describes the same
    /// backup with other wraps (every field but `dataKey` and `encryption` equal, the same data
    /// key). Artifacts are neither read nor written.
    pub replace_manifest_sha256: Option<String>,
}

/// One artifact copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedArtifact {
    /// Key relative to the manifest's directory.
    pub key: String,
    /// Bytes copied (equal to the manifest's size).
    pub size_bytes: u64,
    /// SHA-256 computed while copying (equal to the manifest's).
    pub sha256: String,
    /// How the destination confirmed the upload.
    pub confirmed_by: super::storage::ConfirmedBy,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutcome {
    /// The source manifest.
    pub from: String,
    /// The destination manifest.
    pub to: String,
    /// SHA-256 of the manifest copied (identical bytes at both places).
    pub manifest_sha256: String,
    /// The artifacts, in manifest order; empty when the destination already held the copy.
    pub artifacts: Vec<CopiedArtifact>,
    /// Whether the destination already held this exact manifest (nothing was written).
    pub already_present: bool,
}

impl CopyOutcome {
    /// Bytes copied over all artifacts.
    pub fn size_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size_bytes).sum()
    }
}

/// Checks a key the manifest lists: plain and relative to its directory.
fn checked_key(key: &str) -> Result<&str> {
    if crate::contract::manifest::is_plain_relative_key(key) {
        Ok(key)
    } else {
        Err(AgentError::Integrity(format!(
            "manifest lists {key:?}, which is not a plain key below its directory"
        )))
    }
}

/// Makes the copy.
pub async fn run(req: CopyRequest) -> Result<CopyOutcome> {
    let (from_dir, _) = req.from.split_last()?;
    let (to_dir, _) = req.to.split_last()?;
    if req.from == req.to {
        return Err(AgentError::Config(
            "the copy's destination is its source".into(),
        ));
    }
    let source = Store::open(&req.from, &req.from_s3).await?;
    let dest = Store::open(&req.to, &req.to_s3).await?;

    let manifest = source.get_small(&req.from, MANIFEST_LIMIT).await?;
    let pin = ArtifactPin {
        manifest_sha256: req.manifest_sha256.clone(),
        ..Default::default()
    };
    pin.check_bytes(&manifest)
        .map_err(|e| AgentError::Integrity(format!("{}: {e}", req.from)))?;
    let digest = sha256_hex(&manifest);
    let view = ManifestView::parse(&manifest)
        .map_err(|e| AgentError::Integrity(format!("{} is not a manifest: {e}", req.from)))?;
    if view.artifacts.is_empty() {
        return Err(AgentError::Integrity(format!(
            "{} lists no artifacts",
            req.from
        )));
    }
    for a in &view.artifacts {
        checked_key(&a.key)?;
    }

    if let Some(old) = &req.replace_manifest_sha256 {
        return refresh_manifest(&req, &dest, manifest, digest, old).await;
    }

    // A destination manifest is either this one (done before) or something else (refused).
    if dest.exists(&req.to).await? {
        let there = dest.get_small(&req.to, MANIFEST_LIMIT).await?;
        if there == manifest {
            tracing::info!(to = %req.to, "the destination already holds this backup");
            return Ok(CopyOutcome {
                from: req.from.to_string(),
                to: req.to.to_string(),
                manifest_sha256: digest,
                artifacts: Vec::new(),
                already_present: true,
            });
        }
        return Err(AgentError::Integrity(format!(
            "{} already holds another manifest (sha256 {}); it is not overwritten",
            req.to,
            sha256_hex(&there)
        )));
    }

    let mut artifacts = Vec::with_capacity(view.artifacts.len());
    for a in &view.artifacts {
        let src = from_dir.join(&a.key);
        let dst = to_dir.join(&a.key);
        let reader = source.open_reader(&src).await?;
        let (writer, pending) = dest.begin_upload(&dst).await?;
        let tally = Tally::default();
        let t = tally.clone();
        let streamed = super::blocking(move || stream(reader, writer, &t)).await;
        let (sha, size) = tally.finish();
        if let Err(e) = streamed {
            let cause = pending.abort_with_cause().await;
            return Err(cause.unwrap_or(e));
        }
        if size != a.size_bytes || !sha.eq_ignore_ascii_case(&a.sha256) {
            pending.abort().await;
            return Err(AgentError::Integrity(format!(
                "{src} has {size} bytes with sha256 {sha}, the manifest lists {} bytes with sha256 {}: not copied",
                a.size_bytes, a.sha256
            )));
        }
        let stored = pending.commit(size, &sha).await?;
        tracing::info!(from = %src, to = %stored.location, bytes = size, "artifact copied");
        artifacts.push(CopiedArtifact {
            key: a.key.clone(),
            size_bytes: size,
            sha256: sha,
            confirmed_by: stored.confirmed_by,
        });
    }
    // Last: the commit marker.
    dest.put_small(&req.to, manifest).await?;
    Ok(CopyOutcome {
        from: req.from.to_string(),
        to: req.to.to_string(),
        manifest_sha256: digest,
        artifacts,
        already_present: false,
    })
}

/// The refresh mode of [`run`]: the re-wrapped `manifest` replaces the destination's, which must
/// hash to `old` (or already be `manifest`: done before). On a versioned (Object Lock) bucket it
/// is a new version with the destination's retention; the locked old version stays.
async fn refresh_manifest(
    req: &CopyRequest,
    dest: &Store,
    manifest: Vec<u8>,
    digest: String,
    old: &str,
) -> Result<CopyOutcome> {
    let outcome = |already_present: bool, digest: String| CopyOutcome {
        from: req.from.to_string(),
        to: req.to.to_string(),
        manifest_sha256: digest,
        artifacts: Vec::new(),
        already_present,
    };
    let there = dest.get_small(&req.to, MANIFEST_LIMIT).await?;
    if there == manifest {
        tracing::info!(to = %req.to, "the destination already holds this manifest");
        return Ok(outcome(true, digest));
    }
    let there_digest = sha256_hex(&there);
    if !there_digest.eq_ignore_ascii_case(old) {
        return Err(AgentError::Integrity(format!(
            "{} holds a manifest with sha256 {there_digest}, not the recorded {old}: it is not \
             replaced",
            req.to
        )));
    }
    same_backup(&there, &manifest).map_err(|why| {
        AgentError::Integrity(format!(
            "{} does not describe the backup {} holds ({why}): not copied",
            req.from, req.to
        ))
    })?;
    dest.put_small(&req.to, manifest).await?;
    tracing::info!(from = %req.from, to = %req.to, "re-wrapped manifest copied; artifacts untouched");
    Ok(outcome(false, digest))
}

/// Whether two manifests describe the same backup and differ at most in who its data key is
/// wrapped for: every field but `dataKey` and `encryption` equal, and the same data key.
fn same_backup(a: &[u8], b: &[u8]) -> std::result::Result<(), String> {
    let parse =
        |bytes: &[u8]| -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
            match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(serde_json::Value::Object(m)) => Ok(m),
                _ => Err("not a JSON object".into()),
            }
        };
    let (mut a, mut b) = (parse(a)?, parse(b)?);
    let key_a = a.remove("dataKey");
    let key_b = b.remove("dataKey");
    let fingerprint = |k: &Option<serde_json::Value>| {
        k.as_ref()
            .and_then(|k| k.get("fingerprint"))
            .and_then(|f| f.as_str())
            .map(str::to_string)
    };
    match (fingerprint(&key_a), fingerprint(&key_b)) {
        (Some(x), Some(y)) if x == y => {}
        (x, y) => return Err(format!("data key {x:?} against {y:?}")),
    }
    a.remove("encryption");
    b.remove("encryption");
    if a != b {
        return Err("other fields differ".into());
    }
    Ok(())
}

/// Streams `reader` into `writer`, hashing on the way (blocking side).
fn stream(
    mut reader: Box<dyn Read + Send>,
    writer: Box<dyn super::storage::SinkWriter>,
    tally: &Tally,
) -> Result<()> {
    let mut writer = super::hash::HashingWriter::new(writer, tally.clone());
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AgentError::Storage(format!("reading the source: {e}"))),
        };
        writer
            .write_all(&buf[..n])
            .map_err(|e| AgentError::Storage(format!("writing the copy: {e}")))?;
    }
    writer
        .into_inner()
        .close()
        .map_err(|e| AgentError::Storage(format!("finishing the copy: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(artifacts: &[(&str, &[u8])]) -> Vec<u8> {
        let list: Vec<serde_json::Value> = artifacts
            .iter()
            .map(|(k, b)| {
                serde_json::json!({"key": k, "sizeBytes": b.len(), "sha256": sha256_hex(b)})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"artifacts": list})).unwrap()
    }

    fn request(from: &std::path::Path, to: &std::path::Path) -> CopyRequest {
        CopyRequest {
            from: format!("file://{}/manifest.json", from.display())
                .parse()
                .unwrap(),
            to: format!("file://{}/manifest.json", to.display())
                .parse()
                .unwrap(),
            from_s3: S3Settings::default(),
            to_s3: S3Settings::default(),
            manifest_sha256: None,
            replace_manifest_sha256: None,
        }
    }

    fn wrapped(artifacts: &[(&str, &[u8])], data_key: &str, wrap: &str) -> Vec<u8> {
        let mut m: serde_json::Value = serde_json::from_slice(&manifest(artifacts)).unwrap();
        m["dataKey"] = serde_json::json!({"fingerprint": data_key, "age": [{"recipient": wrap, "wrapped": wrap}]});
        m["encryption"] =
            serde_json::json!({"scheme": "age-x25519-envelope", "recipients": [wrap]});
        serde_json::to_vec(&m).unwrap()
    }

    #[tokio::test]
    async fn a_refresh_replaces_only_the_recorded_manifest_of_the_same_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        for d in [&src, &dst] {
            std::fs::create_dir_all(d.join("databases")).unwrap();
        }
        let data: &[u8] = b"encrypted bytes";
        let arts = [("databases/shop.pgdump", data)];
        let old = wrapped(&arts, "sha256:dk", "sha256:a");
        let new = wrapped(&arts, "sha256:dk", "sha256:b");
        std::fs::write(src.join("manifest.json"), &new).unwrap();
        std::fs::write(dst.join("manifest.json"), &old).unwrap();
        // The copy's artifact: never read nor written by a refresh (even when it differs).
        std::fs::write(dst.join("databases/shop.pgdump"), b"copy's own bytes").unwrap();

        // The destination must hold the recorded digest.
        let mut req = request(&src, &dst);
        req.replace_manifest_sha256 = Some("0".repeat(64));
        let err = run(req.clone()).await.unwrap_err();
        assert!(err.to_string().contains("not the recorded"), "{err}");
        assert_eq!(std::fs::read(dst.join("manifest.json")).unwrap(), old);

        // Another backup (another data key, or other artifacts) is refused.
        for other in [
            wrapped(&arts, "sha256:other", "sha256:b"),
            wrapped(&[("databases/x.pgdump", data)], "sha256:dk", "sha256:b"),
        ] {
            std::fs::write(src.join("manifest.json"), &other).unwrap();
            req.replace_manifest_sha256 = Some(sha256_hex(&old));
            let err = run(req.clone()).await.unwrap_err();
            assert!(matches!(err, AgentError::Integrity(_)), "{err}");
            assert_eq!(std::fs::read(dst.join("manifest.json")).unwrap(), old);
        }

        // The same backup re-wrapped: only the manifest is replaced; again: already there.
        std::fs::write(src.join("manifest.json"), &new).unwrap();
        let out = run(req.clone()).await.unwrap();
        assert!(!out.already_present && out.artifacts.is_empty());
        assert_eq!(out.manifest_sha256, sha256_hex(&new));
        assert_eq!(std::fs::read(dst.join("manifest.json")).unwrap(), new);
        assert_eq!(
            std::fs::read(dst.join("databases/shop.pgdump")).unwrap(),
            b"copy's own bytes"
        );
        assert!(run(req).await.unwrap().already_present);
    }

    #[tokio::test]
    async fn copies_artifacts_then_the_manifest_and_refuses_tampered_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("databases")).unwrap();
        let data: &[u8] = b"encrypted bytes";
        std::fs::write(src.join("databases/shop.pgdump"), data).unwrap();
        let m = manifest(&[("databases/shop.pgdump", data)]);
        std::fs::write(src.join("manifest.json"), &m).unwrap();

        // A pinned digest that differs: nothing is copied.
        let mut req = request(&src, &tmp.path().join("pinned"));
        req.manifest_sha256 = Some("0".repeat(64));
        assert!(matches!(
            run(req).await.unwrap_err(),
            AgentError::Integrity(_)
        ));
        assert!(!tmp.path().join("pinned").exists());

        let dst = tmp.path().join("dst");
        let mut req = request(&src, &dst);
        req.manifest_sha256 = Some(sha256_hex(&m));
        let out = run(req.clone()).await.unwrap();
        assert_eq!(out.size_bytes(), data.len() as u64);
        assert_eq!(
            std::fs::read(dst.join("databases/shop.pgdump")).unwrap(),
            data
        );
        assert_eq!(std::fs::read(dst.join("manifest.json")).unwrap(), m);
        // Again: already there, nothing written.
        assert!(run(req).await.unwrap().already_present);

        // A tampered source artifact is not committed and no manifest is written.
        std::fs::write(src.join("databases/shop.pgdump"), b"tampered bytes!").unwrap();
        let other = tmp.path().join("other");
        let err = run(request(&src, &other)).await.unwrap_err();
        assert!(matches!(err, AgentError::Integrity(_)), "{err}");
        assert!(!other.join("manifest.json").exists());
        assert!(!other.join("databases/shop.pgdump").exists());

        // A destination holding another manifest is not overwritten.
        std::fs::write(src.join("databases/shop.pgdump"), data).unwrap();
        std::fs::write(dst.join("manifest.json"), b"{\"artifacts\":[]}").unwrap();
        let err = run(request(&src, &dst)).await.unwrap_err();
        assert!(err.to_string().contains("not overwritten"), "{err}");
    }

    #[tokio::test]
    async fn a_manifest_listing_a_key_outside_its_directory_copies_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("manifest.json"),
            manifest(&[("../escape", b"x".as_slice())]),
        )
        .unwrap();
        let err = run(request(&src, &tmp.path().join("dst")))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Integrity(_)), "{err}");
    }
}
