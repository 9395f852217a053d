//! Real services for tests, started on loopback ports in temp dirs and stopped on drop.
//!
//! Every server this crate starts runs in its own process group inside its own temp dir.
//! Dropping the handle (also while a test unwinds from a panic) stops the server, kills
//! anything left in its process group and removes the temp dir. Only loopback addresses
//! (127.0.0.0/8, ::1) are accepted as listen addresses.
//!
//! - [`Postgres`]: PostgreSQL 15 (`initdb` + `postgres` as the `postgres` OS user), SCRAM
//!   password auth on TCP, superuser `postgres` with a random password, [`Postgres::psql`].
//! - [`MariaDb`]: `mariadb-install-db` + `mariadbd` (as the `mysql` OS user), account
//!   `testkit` with a random password and all privileges over TCP, [`MariaDb::sql`].
//! - [`Moto`]: `moto_server` (S3 with versioning and Object Lock), blocking bucket/object
//!   helpers and [`s3_client`] for an `aws_sdk_s3::Client` (path-style, plain HTTP).
//! - [`S3sFs`]: `s3s-fs` (`cargo install s3s-fs`), a fast S3 server that enforces SigV4 and has
//!   no checksum extension for multipart uploads; objects are plain files ([`S3sFs::object_path`]).
//! - [`S3TamperProxy`]: an HTTP proxy in front of an S3 server that hides checksums, rewrites
//!   ETags, corrupts GET bodies or injects error replies (throttling, 5xx, access denied),
//!   following a [`TamperPlan`].
//! - [`FaultyProxy`]: a TCP proxy that cuts connections after N bytes or N HTTP requests,
//!   or refuses everything, following a [`FaultPlan`] that can change at run time.
//! - [`chart`]: the Helm chart rendered like `helm template` (tools/helm-template), and the
//!   copies of CRDs, RBAC, alert rules and dashboards that `make chart` generates.
//! - [`TestCertificates`]: a throwaway CA and server certificate (openssl) for HTTPS test
//!   servers, e.g. moto with [`MotoBuilder::tls`].
//! - [`kubectl`]: the installed kubectl with a given kubeconfig and stdin.
//! - [`SmtpServer`]: aiosmtpd with STARTTLS or implicit TLS and optional AUTH; every accepted
//!   message parsed by Python's `email` package ([`ReceivedMail`]).
//! - [`ForwardProxy`]: an HTTP forward proxy (`CONNECT` tunnels, absolute-form requests,
//!   optional Basic credentials) that records what went through it.
//! - Helpers: [`free_port`], [`free_port_on`], [`wait_for_port`], [`TempDir`].
//!
//! Each service has a `builder()` with `.listen("127.0.x.y")` to bind a simulated pod IP.
//! A missing program fails loudly with an install hint, e.g.
//! `mariadbd not found: apt-get install mariadb-server`.
//!
//! ```no_run
//! let pg = testkit::Postgres::start()?;
//! pg.create_database("shop")?;
//! assert_eq!(pg.psql("shop", "SELECT 1")?, "1");
//! # Ok::<(), testkit::Error>(())
//! ```

pub mod chart;
mod error;
mod forward_proxy;
mod http_framing;
pub mod images;
mod kms;
mod kubectl;
mod mariadb;
mod moto;
mod net;
mod otlp;
mod postgres;
mod process;
mod proxy;
mod s3_tamper;
mod s3s;
mod smtp;
mod tls;

pub use error::{Error, Result};
pub use forward_proxy::{ForwardProxy, ProxiedRequest};
pub use kms::KmsKeyStateProxy;
pub use kubectl::{KubectlOutput, kubectl};
pub use mariadb::{MariaDb, MariaDbBuilder};
pub use moto::{ACCESS_KEY_ID, Moto, MotoBuilder, REGION, SECRET_ACCESS_KEY, s3_client};
pub use net::{LOCALHOST, free_port, free_port_on, parse_loopback, port_is_closed, wait_for_port};
pub use otlp::{OtlpReceiver, ReceivedSpan, Transport as OtlpTransport};
pub use postgres::{DEFAULT_BIN_DIR as POSTGRES_BIN_DIR, Postgres, PostgresBuilder};
pub use process::{
    OsUser, ServiceProcess, TempDir, find_binary, group_alive, pid_alive, random_password,
    wait_group_gone,
};
pub use proxy::{FaultPlan, FaultyProxy, ProxyStats};
pub use s3_tamper::{EtagRewrite, Injection, S3TamperProxy, TamperPlan, TamperStats};
pub use s3s::{S3sFs, S3sFsBuilder};
pub use smtp::{ReceivedMail, SmtpMode, SmtpServer, SmtpServerBuilder};
pub use tls::TestCertificates;
