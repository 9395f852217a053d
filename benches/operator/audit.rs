//! The audit trail's share (`DG_BENCH_AUDIT=1`): a local moto S3 server with an Object Lock
//! bucket, a BackupStorage on it in the operator's namespace, and the operator started with
//! `--audit-storage` (`DG_AUDIT_STORAGE`). The leader then watches BackupRuns, RestoreRuns,
//! RestoreValidations and BackupPolicies a second time and writes every record their status
//! shows: at the first start, the whole history of the loaded objects.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use dataguardian::api::BackupStorage;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use testkit::Moto;

use crate::process::{OperatorProcess, http_get};

/// The BackupStorage (and its bucket) the audit trail goes to.
pub const STORAGE: &str = "audit";
const BUCKET: &str = "audit";
const CREDENTIALS: &str = "audit-s3-creds";

/// A running moto server with the audit bucket.
pub struct AuditServer {
    moto: Moto,
}

impl AuditServer {
    /// Starts moto and creates the Object Lock bucket (moto's client helpers block: run them
    /// off the async workers).
    pub async fn start() -> Result<AuditServer> {
        tokio::task::spawn_blocking(|| -> Result<AuditServer> {
            let moto = Moto::start().context("starting moto (pip install 'moto[server]')")?;
            moto.create_bucket_with_object_lock(BUCKET)
                .context("creating the audit bucket")?;
            Ok(AuditServer { moto })
        })
        .await?
    }

    /// The credentials Secret and the BackupStorage in `ns`; returns `NS/NAME` for
    /// `--audit-storage`.
    pub async fn create_storage(&self, client: &Client, ns: &str) -> Result<String> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": CREDENTIALS},
            "stringData": {
                "AWS_ACCESS_KEY_ID": testkit::ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": testkit::SECRET_ACCESS_KEY,
            }
        }))?;
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .context("audit credentials secret")?;
        let storages: Api<BackupStorage> = Api::namespaced(client.clone(), ns);
        let storage: BackupStorage = serde_json::from_value(json!({
            "apiVersion": "dataguardian.io/v1alpha1", "kind": "BackupStorage",
            "metadata": {"name": STORAGE, "namespace": ns},
            "spec": {
                "s3": {"bucket": BUCKET, "region": testkit::REGION,
                       "endpoint": self.moto.endpoint(), "forcePathStyle": true,
                       "credentialsSecretRef": {"name": CREDENTIALS}},
            }
        }))?;
        storages
            .create(&PostParams::default(), &storage)
            .await
            .context("audit BackupStorage")?;
        Ok(format!("{ns}/{STORAGE}"))
    }
}

/// The operator's audit figures from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditFigures {
    pub pending: f64,
    pub written: f64,
    pub failed: f64,
}

impl AuditFigures {
    async fn read(op: &OperatorProcess) -> Result<AuditFigures> {
        let (code, body) = http_get(&op.metrics_addr, "/metrics").await?;
        anyhow::ensure!(code == 200, "/metrics answered {code}");
        let value = |name: &str| {
            body.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == name).then(|| v.trim().parse::<f64>().ok())?
                })
                .unwrap_or(0.0)
        };
        Ok(AuditFigures {
            pending: value("dataguardian_audit_records_pending"),
            written: value("dataguardian_audit_records_written_total"),
            failed: value("dataguardian_audit_records_failed_total"),
        })
    }
}

/// Waits until the operator has no audit record left to write (after at least one offer was
/// seen, or `quiet` with nothing pending). Returns the time it took and the figures then.
pub async fn wait_drained(
    op: &mut OperatorProcess,
    quiet: Duration,
    timeout: Duration,
) -> Result<(Duration, AuditFigures)> {
    let started = Instant::now();
    let mut empty_since: Option<Instant> = None;
    loop {
        op.ensure_running()?;
        let f = AuditFigures::read(op).await?;
        if f.pending == 0.0 {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= quiet {
                return Ok((started.elapsed(), f));
            }
        } else {
            empty_since = None;
        }
        if started.elapsed() > timeout {
            bail!(
                "audit records still pending after {timeout:?}: {f:?}; log tail:\n{}",
                op.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
