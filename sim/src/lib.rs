//! A Kubernetes API stand-in for DataGuardian's end-to-end tests (test infrastructure only).
//!
//! It serves built-in kinds and the CRDs from a directory over HTTPS on loopback (a CA made at
//! start, bearer-token authentication, RBAC on every request), with the
//! semantics the operator relies on: resourceVersion and 409 conflicts, generation, the status
//! subresource split, finalizers, ownerReference garbage collection, label/field selectors,
//! watches with resume and bookmarks, every patch type including server-side apply, discovery,
//! printer-column tables for kubectl, protobuf bodies from kubectl's generators, and pod logs.
//! See `sim/README.md` for what differs from a real kube-apiserver.

pub mod admission_policy;
pub mod apply;
pub mod auth;
pub mod builtin;
pub mod crds;
pub mod discovery;
pub mod error;
pub mod gc;
pub mod http;
pub mod logs;
pub mod openapi;
pub mod ops;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod runner;
pub mod scale;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod types;
pub mod validation;
pub mod watch;
pub mod webhooks;
pub mod workloads;

pub use auth::StaticUser;
pub use server::{RunningServer, Server, ServerError, ServerOptions};
