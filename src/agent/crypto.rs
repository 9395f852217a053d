//! age encryption (X25519 recipients) on the backup side, decryption with an identity file on
//! the restore side. Only public keys and their fingerprints are ever logged or recorded.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::str::FromStr;

use super::error::{AgentError, Result};
use super::hash::sha256_hex;

/// The age recipients a backup is encrypted to.
#[derive(Clone, Default)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    texts: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.fingerprints()).finish()
    }
}

impl Recipients {
    /// Parse recipients from individual values (`age1…`) and recipients-file contents (one per
    /// line, `#` comments and blank lines ignored). Duplicates are removed.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut out = Recipients::default();
        for raw in values {
            for line in raw.lines().flat_map(|l| l.split(',')) {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line.starts_with("AGE-SECRET-KEY-") {
                    return Err(AgentError::Config(
                        "an age identity (secret key) was given where a recipient (public key) is expected; \
                         the backup side only ever needs public keys"
                            .into(),
                    ));
                }
                let key = age::x25519::Recipient::from_str(line).map_err(|e| {
                    AgentError::Config(format!("invalid age X25519 recipient {line:?}: {e}"))
                })?;
                if !out.texts.iter().any(|t| t == line) {
                    out.texts.push(line.to_string());
                    out.keys.push(key);
                }
            }
        }
        Ok(out)
    }

    /// Read a recipients file (one `age1…` key per line).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AgentError::Config(format!(
                "cannot read recipients file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse([text.as_str()])
    }

    /// Merge two recipient sets.
    pub fn extend(&mut self, other: Recipients) {
        for (t, k) in other.texts.into_iter().zip(other.keys) {
            if !self.texts.contains(&t) {
                self.texts.push(t);
                self.keys.push(k);
            }
        }
    }

    /// No recipients: the backup is not encrypted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Fingerprints of the recipients (`sha256:` + first 16 hex digits of the SHA-256 of the
    /// public key text), recorded in the manifest.
    pub fn fingerprints(&self) -> Vec<String> {
        self.texts.iter().map(|t| fingerprint(t)).collect()
    }

    /// The one recipient of an identity (a run's data key).
    pub fn of_identity(identity: &age::x25519::Identity) -> Self {
        let key = identity.to_public();
        Recipients {
            texts: vec![key.to_string()],
            keys: vec![key],
        }
    }

    /// Each recipient with its fingerprint.
    pub fn each(&self) -> impl Iterator<Item = (String, &age::x25519::Recipient)> {
        self.texts.iter().map(|t| fingerprint(t)).zip(&self.keys)
    }
}

/// Fingerprint of one age public key.
pub fn fingerprint(recipient: &str) -> String {
    format!("sha256:{}", &sha256_hex(recipient.trim().as_bytes())[..16])
}

/// An encrypting writer; [`EncryptWriter::finish`] writes the final chunk.
pub enum EncryptWriter<W: Write> {
    /// age STREAM encryption.
    Age(age::stream::StreamWriter<W>),
    /// Not encrypted.
    Plain(W),
}

impl<W: Write> EncryptWriter<W> {
    /// Encrypt to `recipients` (or pass through when there are none).
    pub fn new(inner: W, recipients: &Recipients) -> Result<Self> {
        if recipients.is_empty() {
            return Ok(EncryptWriter::Plain(inner));
        }
        let enc = age::Encryptor::with_recipients(
            recipients.keys.iter().map(|k| k as &dyn age::Recipient),
        )
        .map_err(|e| AgentError::Crypto(format!("cannot set up encryption: {e}")))?;
        let w = enc.wrap_output(inner)?;
        Ok(EncryptWriter::Age(w))
    }

    /// Finish the stream and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            EncryptWriter::Age(w) => w.finish(),
            EncryptWriter::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            EncryptWriter::Age(w) => w.write(buf),
            EncryptWriter::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            EncryptWriter::Age(w) => w.flush(),
            EncryptWriter::Plain(w) => w.flush(),
        }
    }
}

/// Decryption identities loaded from an age identity file.
pub struct Identities {
    ids: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} redacted)", self.ids.len())
    }
}

impl Identities {
    /// The identities of an in-memory key (a run's unwrapped data key).
    pub fn of_identity(identity: age::x25519::Identity) -> Self {
        Self {
            ids: vec![Box::new(identity)],
        }
    }

    /// Decrypt a small age file (binary or armored) held in memory; `Ok(None)` when none of the
    /// identities is one of its recipients.
    pub fn decrypt_small(&self, ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
        let dec = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(ciphertext))
            .map_err(|e| AgentError::Integrity(format!("not a valid age file: {e}")))?;
        match dec.decrypt(self.ids.iter().map(|i| i.as_ref() as &dyn age::Identity)) {
            Ok(mut reader) => {
                let mut out = Vec::new();
                reader
                    .read_to_end(&mut out)
                    .map_err(|e| AgentError::Integrity(format!("corrupt age file: {e}")))?;
                Ok(Some(out))
            }
            Err(age::DecryptError::NoMatchingKeys) => Ok(None),
            Err(e) => Err(AgentError::Crypto(format!("cannot decrypt: {e}"))),
        }
    }

    /// Load an age identity file (`AGE-SECRET-KEY-1…` lines). Its content is never echoed.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file =
            age::IdentityFile::from_file(path.to_string_lossy().into_owned()).map_err(|e| {
                AgentError::Config(format!(
                    "cannot read identity file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?;
        let ids = file.into_identities().map_err(|_| {
            AgentError::Crypto(format!(
                "identity file {} holds no usable age identity",
                path.display()
            ))
        })?;
        if ids.is_empty() {
            return Err(AgentError::Crypto(format!(
                "identity file {} holds no age identity",
                path.display()
            )));
        }
        Ok(Self { ids })
    }

    /// Wrap `inner` (an age file) in a decrypting reader.
    pub fn decrypt<'a, R: Read + Send + 'a>(&self, inner: R) -> Result<Box<dyn Read + Send + 'a>> {
        let dec = age::Decryptor::new_buffered(BufReader::with_capacity(256 << 10, inner))
            .map_err(|e| match e {
                age::DecryptError::Io(io) => super::error::from_io(io, |e| {
                    AgentError::Integrity(format!("cannot read the age header: {e}"))
                }),
                other => AgentError::Integrity(format!(
                    "the stored object is not a valid age file: {other}"
                )),
            })?;
        let reader = dec.decrypt(self.ids.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => AgentError::Crypto(
                "wrong identity: none of the identities in the identity file can decrypt this backup".into(),
            ),
            other => AgentError::Crypto(format!("cannot decrypt: {other}")),
        })?;
        Ok(Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_string(),
        )
    }

    #[test]
    fn encrypt_then_decrypt_with_identity_file() {
        let (public, secret) = keypair();
        let recipients = Recipients::parse([public.as_str()]).unwrap();
        assert_eq!(recipients.fingerprints().len(), 1);
        assert!(recipients.fingerprints()[0].starts_with("sha256:"));
        let mut w = EncryptWriter::new(Vec::new(), &recipients).unwrap();
        w.write_all(&vec![42u8; 200_000]).unwrap();
        let ct = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        std::fs::write(&path, format!("# created: now\n{secret}\n")).unwrap();
        let ids = Identities::from_file(&path).unwrap();
        let mut out = Vec::new();
        ids.decrypt(&ct[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![42u8; 200_000]);

        // A different identity is a clear crypto error.
        let (_, other) = keypair();
        std::fs::write(&path, format!("{other}\n")).unwrap();
        let wrong = Identities::from_file(&path).unwrap();
        let err = wrong.decrypt(&ct[..]).err().unwrap();
        assert_eq!(err.category(), "crypto");
        assert!(err.to_string().contains("wrong identity"));
        assert!(!format!("{wrong:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn refuses_secret_keys_and_garbage_as_recipients() {
        let (public, secret) = keypair();
        assert!(Recipients::parse([secret.as_str()]).is_err());
        assert!(Recipients::parse(["age1notakey"]).is_err());
        let r = Recipients::parse([format!("# team\n{public}\n\n{public}\n").as_str()]).unwrap();
        assert_eq!(r.fingerprints().len(), 1);
        assert!(Recipients::parse(Vec::<&str>::new()).unwrap().is_empty());
    }
}
