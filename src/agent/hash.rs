//! SHA-256 over the stored bytes, on both the write side and the read side.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// A running SHA-256 and byte count, shareable between the pipeline stage that feeds it and
/// the code that reads the result at the end.
#[derive(Clone, Default)]
pub struct Tally {
    inner: Arc<Mutex<(Sha256, u64)>>,
}

impl Tally {
    /// Feed bytes.
    pub fn update(&self, data: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.update(data);
        g.1 += data.len() as u64;
    }

    /// Hex digest and byte count of everything fed so far.
    pub fn finish(&self) -> (String, u64) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (hex::encode(g.0.clone().finalize()), g.1)
    }
}

/// A writer that hashes and counts everything passing through it.
pub struct HashingWriter<W> {
    inner: W,
    tally: Tally,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`; the result is available from `tally`.
    pub fn new(inner: W, tally: Tally) -> Self {
        Self { inner, tally }
    }

    /// Return the inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tally.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    tally: Tally,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`; the result is available from `tally`.
    pub fn new(inner: R, tally: Tally) -> Self {
        Self { inner, tally }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.update(&buf[..n]);
        Ok(n)
    }
}

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Raw SHA-256 of a byte slice.
pub fn sha256_raw(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree_with_known_digest() {
        let tally = Tally::default();
        let mut w = HashingWriter::new(Vec::new(), tally.clone());
        w.write_all(b"abc").unwrap();
        let (hex, n) = tally.finish();
        assert_eq!(n, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let rt = Tally::default();
        let mut r = HashingReader::new(&b"abc"[..], rt.clone());
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(rt.finish(), (hex.clone(), 3));
        assert_eq!(sha256_hex(b"abc"), hex);
    }
}
