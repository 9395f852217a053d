//! A throwaway certificate authority and a server certificate for `127.0.0.1` and
//! `localhost`, made with the `openssl` command line tool, for HTTPS test servers
//! ([`crate::MotoBuilder::tls`]). Clients trust [`TestCertificates::ca`] (e.g. through
//! `SSL_CERT_FILE`, which rustls-native-certs reads).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::process::{TempDir, find_binary};

/// The files of a test CA and of a server certificate it signed; removed on drop.
#[derive(Debug)]
pub struct TestCertificates {
    dir: TempDir,
}

impl TestCertificates {
    /// A new CA (P-256) and a server certificate for `IP:127.0.0.1` and `DNS:localhost`,
    /// valid for two days.
    pub fn generate() -> Result<TestCertificates> {
        let openssl = find_binary("openssl", "apt-get install openssl")?;
        let dir = TempDir::new("tls")?;
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n",
        )
        .context(|| "writing server.ext".to_owned())?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=testkit CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(d)
                .output()
                .context(|| "running openssl".to_owned())?;
            if !out.status.success() {
                return Err(Error::CommandFailed {
                    tool: "openssl".into(),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        Ok(TestCertificates { dir })
    }

    /// The CA certificate (PEM): what clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
