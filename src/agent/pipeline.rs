//! The streaming data path.
//!
//! Backup: dump stdout → compression → age encryption → SHA-256 → storage writer (S3 parts over
//! a bounded channel, or a temp file). Restore: storage reader → SHA-256 → age decryption →
//! decompression → the restore tool's stdin. Both run on one blocking thread with fixed-size
//! buffers, so memory does not depend on the database size: at most `concurrency + 1` S3 parts
//! (shared by every stream of a store), the zstd context (with its workers' jobs when zstd is
//! multi-threaded), and a few 256 KiB buffers.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::compress::{CompressWriter, Compression, decompress_reader};
use super::crypto::{EncryptWriter, Identities, Recipients};
use super::engine::mysql::RowCounter;
use super::error::{AgentError, Result, from_io};
use super::hash::{HashingReader, HashingWriter, Tally};
use super::progress::Progress;
use super::storage::SinkWriter;

/// Size of the read buffer between stages.
pub const BUFFER_SIZE: usize = 256 << 10;

/// What a finished backup stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes read from the dump.
    pub raw_bytes: u64,
    /// Bytes handed to storage.
    pub stored_bytes: u64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
}

struct CountingWriter {
    inner: Box<dyn SinkWriter>,
    progress: Arc<Progress>,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add_out(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn read_retry(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Run one backup stream to its end on the current (blocking) thread. The sink is closed
/// (last part sent, file fsynced) but not committed: the caller commits only after the dump
/// tool exited cleanly. `zstd_workers`: zstd's threads besides this one
/// ([`super::compress::zstd_workers`] of the streams running at once).
pub fn encode_stream(
    mut src: impl Read,
    sink: Box<dyn SinkWriter>,
    compression: Compression,
    zstd_workers: u32,
    recipients: &Recipients,
    progress: &Arc<Progress>,
    counter: Option<&mut RowCounter>,
) -> Result<StreamStats> {
    let storage_err = |e: io::Error| {
        from_io(e, |e| {
            AgentError::Storage(format!("writing the artifact: {e}"))
        })
    };
    let tally = Tally::default();
    let counted = CountingWriter {
        inner: sink,
        progress: Arc::clone(progress),
    };
    let hashing = HashingWriter::new(counted, tally.clone());
    let enc = EncryptWriter::new(hashing, recipients)?;
    let mut comp = CompressWriter::new(enc, compression, zstd_workers).map_err(storage_err)?;
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut raw = 0u64;
    let mut counter = counter;
    loop {
        let n = read_retry(&mut src, &mut buf)
            .map_err(|e| AgentError::Source(format!("reading the dump output: {e}")))?;
        if n == 0 {
            break;
        }
        if let Some(c) = counter.as_deref_mut() {
            c.feed(&buf[..n]);
        }
        comp.write_all(&buf[..n]).map_err(storage_err)?;
        raw += n as u64;
        progress.add_in(n as u64);
    }
    let enc = comp.finish().map_err(storage_err)?;
    let hashing = enc.finish().map_err(storage_err)?;
    let counted = hashing.into_inner();
    counted.inner.close().map_err(storage_err)?;
    let (sha256, stored_bytes) = tally.finish();
    Ok(StreamStats {
        raw_bytes: raw,
        stored_bytes,
        sha256,
    })
}

/// Where a restore stream's failure happened.
#[derive(Debug)]
pub enum DecodeError {
    /// Reading, checking, decrypting or decompressing the stored object.
    Source(AgentError),
    /// Writing to the restore tool (it probably exited: its own error explains why).
    Sink(io::Error),
}

/// What a restore stream read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeStats {
    /// Stored bytes read.
    pub stored_bytes: u64,
    /// Hex SHA-256 of the stored bytes read.
    pub sha256: String,
    /// Plain bytes written to the restore tool.
    pub raw_bytes: u64,
}

/// A transformation of the plain stream.
pub type Filter = Box<dyn FnOnce(Box<dyn Read + Send>) -> Box<dyn Read + Send> + Send>;

/// Options of one decode stream.
pub struct DecodeOptions {
    /// Compression of the artifact.
    pub compression: Compression,
    /// Identities when the artifact is encrypted.
    pub identities: Option<Arc<Identities>>,
    /// Wrap the plain stream (e.g. the PostgreSQL globals filter).
    pub filter: Option<Filter>,
}

fn classify_read(e: io::Error) -> AgentError {
    from_io(e, |e| match e.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::Other => AgentError::Integrity(format!(
            "the stored object is corrupt or was tampered with (decryption/decompression failed: {e})"
        )),
        _ => AgentError::Storage(format!("reading the artifact: {e}")),
    })
}

/// Run one restore stream (stored object → plain bytes into `dst`) on the current thread.
/// The SHA-256 is computed over every stored byte read; the caller compares it with the
/// manifest.
pub fn decode_stream(
    src: Box<dyn Read + Send>,
    opts: DecodeOptions,
    dst: &mut dyn Write,
    progress: &Arc<Progress>,
) -> Result<DecodeStats, DecodeError> {
    let tally = Tally::default();
    let counted = ProgressReader {
        inner: src,
        progress: Arc::clone(progress),
    };
    let hashed: Box<dyn Read + Send> = Box::new(HashingReader::new(counted, tally.clone()));
    let decrypted = match &opts.identities {
        Some(ids) => ids.decrypt(hashed).map_err(DecodeError::Source)?,
        None => hashed,
    };
    let plain = decompress_reader(decrypted, opts.compression)
        .map_err(|e| DecodeError::Source(classify_read(e)))?;
    let mut plain = match opts.filter {
        Some(f) => f(plain),
        None => plain,
    };
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut raw = 0u64;
    loop {
        let n =
            read_retry(&mut plain, &mut buf).map_err(|e| DecodeError::Source(classify_read(e)))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n]).map_err(DecodeError::Sink)?;
        raw += n as u64;
        progress.add_out(n as u64);
    }
    dst.flush().map_err(DecodeError::Sink)?;
    drop(plain);
    let (sha256, stored_bytes) = tally.finish();
    Ok(DecodeStats {
        stored_bytes,
        sha256,
        raw_bytes: raw,
    })
}

struct ProgressReader<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add_in(n as u64);
        Ok(n)
    }
}

/// Compare what was read with the manifest.
pub fn check_digest(what: &str, stats: &DecodeStats, size: u64, sha256: &str) -> Result<()> {
    if stats.stored_bytes != size {
        return Err(AgentError::Integrity(format!(
            "{what}: read {} bytes, the manifest records {size}",
            stats.stored_bytes
        )));
    }
    if !stats.sha256.eq_ignore_ascii_case(sha256) {
        return Err(AgentError::Integrity(format!(
            "{what}: SHA-256 mismatch (stored object {}, manifest {sha256})",
            stats.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecSink(Arc<std::sync::Mutex<Vec<u8>>>, bool);
    impl Write for VecSink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl SinkWriter for VecSink {
        fn close(self: Box<Self>) -> io::Result<()> {
            if self.1 {
                Err(io::Error::other("close failed"))
            } else {
                Ok(())
            }
        }
    }

    fn encode(data: &[u8], c: Compression, r: &Recipients) -> (Vec<u8>, StreamStats) {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let p = Progress::new("backup");
        let stats = encode_stream(
            data,
            Box::new(VecSink(out.clone(), false)),
            c,
            1,
            r,
            &p,
            None,
        )
        .unwrap();
        assert_eq!(p.snapshot().bytes_in, data.len() as u64);
        assert_eq!(p.snapshot().bytes_out, stats.stored_bytes);
        let v = out.lock().unwrap().clone();
        (v, stats)
    }

    fn sample() -> Vec<u8> {
        (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x3f)
            .collect()
    }

    #[test]
    fn round_trip_encrypted_zstd_and_digest() {
        let id = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let idf = dir.path().join("id");
        use age::secrecy::ExposeSecret;
        std::fs::write(&idf, id.to_string().expose_secret()).unwrap();
        let ids = Arc::new(Identities::from_file(&idf).unwrap());
        let r = Recipients::parse([id.to_public().to_string().as_str()]).unwrap();
        let data = sample();
        for c in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 1 },
            Compression::None,
        ] {
            let (stored, stats) = encode(&data, c, &r);
            assert_eq!(stats.raw_bytes, data.len() as u64);
            assert_eq!(stats.sha256, crate::agent::hash::sha256_hex(&stored));
            let mut out = Vec::new();
            let p = Progress::new("restore");
            let opts = DecodeOptions {
                compression: c,
                identities: Some(ids.clone()),
                filter: None,
            };
            let d = decode_stream(
                Box::new(io::Cursor::new(stored.clone())),
                opts,
                &mut out,
                &p,
            )
            .unwrap();
            assert_eq!(out, data);
            check_digest("x", &d, stats.stored_bytes, &stats.sha256).unwrap();
        }
    }

    #[test]
    fn flipped_byte_is_an_integrity_error() {
        let data = sample();
        let r = Recipients::default();
        let (mut stored, stats) = encode(&data, Compression::None, &r);
        stored[1000] ^= 1;
        let mut out = Vec::new();
        let p = Progress::new("verify");
        let opts = DecodeOptions {
            compression: Compression::None,
            identities: None,
            filter: None,
        };
        let d = decode_stream(
            Box::new(io::Cursor::new(stored.clone())),
            opts,
            &mut out,
            &p,
        )
        .unwrap();
        let e = check_digest("x", &d, stats.stored_bytes, &stats.sha256).unwrap_err();
        assert_eq!(e.category(), "integrity");
        // With zstd the frame checksum already catches it while streaming.
        let (mut stored, _) = encode(&data, Compression::Zstd { level: 3 }, &r);
        let mid = stored.len() / 2;
        stored[mid] ^= 0x55;
        let opts = DecodeOptions {
            compression: Compression::Zstd { level: 3 },
            identities: None,
            filter: None,
        };
        match decode_stream(
            Box::new(io::Cursor::new(stored.clone())),
            opts,
            &mut io::sink(),
            &p,
        ) {
            Err(DecodeError::Source(e)) => assert_eq!(e.category(), "integrity"),
            Ok(d) => assert!(check_digest("x", &d, 0, "").is_err()),
            Err(DecodeError::Sink(e)) => panic!("unexpected sink error {e}"),
        }
    }

    #[test]
    fn a_failing_sink_fails_the_stream() {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let p = Progress::new("backup");
        let e = encode_stream(
            &b"abc"[..],
            Box::new(VecSink(out, true)),
            Compression::None,
            0,
            &Recipients::default(),
            &p,
            None,
        )
        .unwrap_err();
        assert_eq!(e.category(), "storage");
    }
}
