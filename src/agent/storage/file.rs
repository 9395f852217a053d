//! Filesystem store: every object is written to a temp file in the target directory, fsynced,
//! and renamed into place (then the directory is fsynced), so a reader never sees half an
//! object.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{ConfirmedBy, SinkWriter, StoredObject};
use crate::agent::error::{AgentError, Result};

/// The local-directory store (stateless: paths are absolute).
pub struct FileStore;

fn storage_err(what: &str, path: &Path, e: io::Error) -> AgentError {
    AgentError::Storage(format!("{what} {}: {e}", path.display()))
}

fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| AgentError::Config(format!("{} has no file name", path.display())))?
        .to_string_lossy()
        .into_owned();
    let nonce: u64 = rand_u64();
    Ok(path.with_file_name(format!(
        ".{name}.partial-{}-{nonce:016x}",
        std::process::id()
    )))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FileStore {
    /// Whether the file exists.
    pub fn exists(&self, path: &Path) -> Result<bool> {
        match fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(storage_err("cannot stat", path, e)),
        }
    }

    /// Write a small file atomically.
    pub fn put_small(&self, path: &Path, bytes: &[u8]) -> Result<StoredObject> {
        let (mut w, pending) = self.begin_upload(path)?;
        w.write_all(bytes)
            .map_err(|e| storage_err("cannot write", path, e))?;
        w.close()
            .map_err(|e| storage_err("cannot write", path, e))?;
        pending.commit(bytes.len() as u64)
    }

    /// Read a small file.
    pub fn get_small(&self, path: &Path, limit: usize) -> Result<Vec<u8>> {
        let f = File::open(path).map_err(|e| storage_err("cannot open", path, e))?;
        let mut buf = Vec::new();
        f.take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| storage_err("cannot read", path, e))?;
        if buf.len() > limit {
            return Err(AgentError::Storage(format!(
                "{} is larger than {limit} bytes",
                path.display()
            )));
        }
        Ok(buf)
    }

    /// Open a temp file next to `path`.
    pub fn begin_upload(&self, path: &Path) -> Result<(Box<dyn SinkWriter>, PendingFile)> {
        let dir = path
            .parent()
            .ok_or_else(|| AgentError::Config(format!("{} has no parent", path.display())))?;
        fs::create_dir_all(dir).map_err(|e| storage_err("cannot create directory", dir, e))?;
        let temp = temp_path(path)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| storage_err("cannot create", &temp, e))?;
        let writer = FileWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
        };
        Ok((
            Box::new(writer),
            PendingFile {
                temp,
                target: path.to_path_buf(),
            },
        ))
    }

    /// Open a file for streaming reads.
    pub fn open_reader(&self, path: &Path) -> Result<Box<dyn Read + Send>> {
        let f = File::open(path).map_err(|e| storage_err("cannot open", path, e))?;
        Ok(Box::new(f))
    }
}

struct FileWriter {
    inner: BufWriter<File>,
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SinkWriter for FileWriter {
    fn close(self: Box<Self>) -> io::Result<()> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

/// A fully written, fsynced temp file waiting to be renamed into place.
#[derive(Debug)]
pub struct PendingFile {
    temp: PathBuf,
    target: PathBuf,
}

impl PendingFile {
    /// Check the size, rename into place, fsync the directory.
    pub fn commit(self, size: u64) -> Result<StoredObject> {
        let actual = fs::metadata(&self.temp)
            .map_err(|e| storage_err("cannot stat", &self.temp, e))?
            .len();
        if actual != size {
            let err = AgentError::Integrity(format!(
                "{} holds {actual} bytes, {size} were written",
                self.target.display()
            ));
            self.abort();
            return Err(err);
        }
        if let Err(e) = fs::rename(&self.temp, &self.target) {
            let err = storage_err("cannot rename into", &self.target, e);
            self.abort();
            return Err(err);
        }
        if let Some(dir) = self.target.parent() {
            sync_dir(dir).map_err(|e| storage_err("cannot fsync directory", dir, e))?;
        }
        Ok(StoredObject {
            location: format!("file://{}", self.target.display()),
            size,
            confirmed_by: ConfirmedBy::LocalFile,
        })
    }

    /// Remove the temp file.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_commit_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("run/a.bin");
        let store = FileStore;
        let (mut w, p) = store.begin_upload(&target).unwrap();
        w.write_all(b"hello").unwrap();
        w.close().unwrap();
        assert!(!store.exists(&target).unwrap(), "invisible before commit");
        let obj = p.commit(5).unwrap();
        assert_eq!(obj.size, 5);
        assert_eq!(store.get_small(&target, 100).unwrap(), b"hello");
        assert!(store.get_small(&target, 2).is_err());

        let other = dir.path().join("run/b.bin");
        let (mut w, p) = store.begin_upload(&other).unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        p.abort();
        assert!(!store.exists(&other).unwrap());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("run")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the committed file remains");

        let (mut w, p) = store.begin_upload(&other).unwrap();
        w.write_all(b"abc").unwrap();
        w.close().unwrap();
        assert_eq!(p.commit(4).unwrap_err().category(), "integrity");
    }
}
