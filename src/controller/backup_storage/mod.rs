//! The BackupStorage reconciler: probes each storage on its interval (write, read back, delete a
//! probe object; latency), keeps a bounded probe history in status (the durable health history),
//! sets `Ready`, and emits an Event when readiness changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};

use crate::telemetry::metrics::StorageLabels;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::BackupStorage;
use crate::api::backup_storage::{BackupStorageStatus, ProbeResult};
use crate::api::common::{find_condition, set_condition, time_from_chrono, time_to_chrono};

use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};
use crate::controller::common::storage_access::{
    AMBIENT_CREDENTIALS_REFUSED, AccessError, StorageAccess,
};

/// Field manager of the status this controller writes.
pub const FIELD_MANAGER: &str = "dataguardian-backupstorage";

/// The outcome of one probe, before it becomes a [`ProbeResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub success: bool,
    pub latency: Duration,
    pub object_lock_enabled: Option<bool>,
    pub reason: String,
    pub message: String,
}

/// Whether a probe is due: never probed, spec changed since, or the interval elapsed.
pub fn probe_due(storage: &BackupStorage, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let interval = Duration::from_secs(u64::from(storage.spec.probe_or_default().interval_seconds));
    let status = storage.status.as_ref();
    let last = status.and_then(|s| s.last_probe.as_ref())?;
    if status.and_then(|s| s.observed_generation) != storage.metadata.generation {
        return None;
    }
    let age = (now - time_to_chrono(&last.time))
        .to_std()
        .unwrap_or_default();
    (age < interval).then(|| interval - age)
}

/// Appends a probe to the status history, keeping the newest `limit`, and sets `Ready`.
pub fn record_probe(
    status: &mut BackupStorageStatus,
    probe: &Probe,
    limit: usize,
    generation: Option<i64>,
    now: chrono::DateTime<Utc>,
) {
    let result = ProbeResult {
        time: time_from_chrono(now),
        success: probe.success,
        latency_millis: probe.latency.as_millis() as u64,
        object_lock_enabled: probe.object_lock_enabled,
        reason: Some(probe.reason.clone()),
        message: Some(probe.message.clone()),
    };
    status.last_probe = Some(result.clone());
    status.history.push(result);
    let excess = status.history.len().saturating_sub(limit.max(1));
    status.history.drain(..excess);
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        Condition {
            type_: "Ready".into(),
            status: if probe.success { "True" } else { "False" }.into(),
            reason: probe.reason.clone(),
            message: probe.message.clone(),
            last_transition_time: time_from_chrono(now),
            observed_generation: generation,
        },
    );
}

#[tracing::instrument(name = "storage_probe", skip_all, fields(storage = %storage.name_any(), kind = "s3"))]
async fn probe_s3(ctx: &Context, ns: &str, storage: &BackupStorage) -> Probe {
    let started = Instant::now();
    let fail = |reason: &str, message: String, started: Instant| Probe {
        success: false,
        latency: started.elapsed(),
        object_lock_enabled: None,
        reason: reason.into(),
        message,
    };
    let allow = ctx.settings.allows_ambient_credentials(ns);
    let access =
        match StorageAccess::open(&ctx.client, ns, storage, &ctx.settings.egress, allow).await {
            Ok(a) => a,
            Err(e @ AccessError::AmbientCredentialsRefused(_)) => {
                return fail(AMBIENT_CREDENTIALS_REFUSED, e.to_string(), started);
            }
            Err(e) => return fail("CredentialsUnavailable", e.to_string(), started),
        };
    let uid = storage.metadata.uid.clone().unwrap_or_default();
    let key = access.key(&format!(
        ".dataguardian-probe/{uid}-{}",
        Utc::now().timestamp_millis()
    ));
    let payload = format!("dataguardian probe {}", Utc::now().to_rfc3339()).into_bytes();
    if let Err(e) = access.put(&key, payload.clone()).await {
        return fail("WriteFailed", e.to_string(), started);
    }
    match access.get(&key, 1 << 16).await {
        Ok(read) if read == payload => {}
        Ok(_) => {
            return fail(
                "ReadMismatch",
                format!("probe object {key} read back different bytes"),
                started,
            );
        }
        Err(e) => return fail("ReadFailed", e.to_string(), started),
    }
    if let Err(e) = access.delete(&key).await {
        return fail("DeleteFailed", e.to_string(), started);
    }
    let latency = started.elapsed();
    let wants_lock = storage
        .spec
        .s3
        .as_ref()
        .is_some_and(|s| s.object_lock.is_some());
    let lock = if wants_lock {
        match access.object_lock_enabled().await {
            Ok(enabled) => Some(enabled),
            Err(e) => return fail("ObjectLockUnknown", e.to_string(), started),
        }
    } else {
        None
    };
    if lock == Some(false) {
        return Probe {
            success: false,
            latency,
            object_lock_enabled: Some(false),
            reason: "ObjectLockNotEnabled".into(),
            message: format!(
                "spec.s3.objectLock is set but bucket {} has no Object Lock enabled",
                access.bucket()
            ),
        };
    }
    Probe {
        success: true,
        latency,
        object_lock_enabled: lock,
        reason: "ProbeSucceeded".into(),
        message: format!(
            "wrote, read back and deleted a probe object in {} ms",
            latency.as_millis()
        ),
    }
}

#[tracing::instrument(
    name = "storage_probe",
    skip_all,
    fields(storage = %storage.name_any(), kind = "filesystem")
)]
async fn probe_filesystem(ctx: &Context, ns: &str, storage: &BackupStorage) -> Result<Probe> {
    let started = Instant::now();
    let Some(fs) = &storage.spec.filesystem else {
        return Err(Error::InvalidSpec(
            "neither s3 nor filesystem is set".into(),
        ));
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let probe = match pvcs.get_opt(&fs.claim_name).await? {
        None => Probe {
            success: false,
            latency: started.elapsed(),
            object_lock_enabled: None,
            reason: "ClaimNotFound".into(),
            message: format!(
                "PersistentVolumeClaim {} not found in namespace {ns}",
                fs.claim_name
            ),
        },
        Some(pvc) => {
            let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
            // A claim waiting for its first consumer is usable: the backup pod binds it.
            let usable = phase == "Bound" || phase == "Pending";
            Probe {
                success: usable,
                latency: started.elapsed(),
                object_lock_enabled: None,
                reason: if usable {
                    "ClaimAvailable".into()
                } else {
                    "ClaimNotBound".into()
                },
                message: format!(
                    "PersistentVolumeClaim {} is {phase}; its contents are checked by backup Jobs, which mount it",
                    fs.claim_name
                ),
            }
        }
    };
    Ok(probe)
}

/// Reconciles one BackupStorage.
pub async fn reconcile(storage: Arc<BackupStorage>, ctx: Arc<Context>) -> Result<Action> {
    let ns = storage
        .namespace()
        .ok_or(Error::MissingObjectField("metadata.namespace"))?;
    let now = Utc::now();
    if let Some(wait) = probe_due(&storage, now) {
        return Ok(Action::requeue(wait));
    }
    let probe = if storage.spec.s3.is_some() {
        probe_s3(&ctx, &ns, &storage).await
    } else {
        probe_filesystem(&ctx, &ns, &storage).await?
    };
    let labels = StorageLabels {
        namespace: ns.clone(),
        storage: storage.name_any(),
    };
    ctx.metrics
        .storage_probe_duration
        .get_or_create(&labels)
        .observe(probe.latency.as_secs_f64());
    ctx.metrics
        .storage_up
        .get_or_create(&labels)
        .set(i64::from(probe.success));
    let settings = storage.spec.probe_or_default();
    let before = storage
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .map(|c| c.status.clone());
    let mut status = storage.status.clone().unwrap_or_default();
    record_probe(
        &mut status,
        &probe,
        settings.history_limit as usize,
        storage.metadata.generation,
        now,
    );
    let api: Api<BackupStorage> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({"apiVersion": BackupStorage::api_version(&()), "kind": BackupStorage::kind(&()), "status": status});
    api.patch_status(
        &storage.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    let now_ready = if probe.success { "True" } else { "False" };
    if before.as_deref() != Some(now_ready) {
        let (type_, reason) = if probe.success {
            (EventType::Normal, "Ready")
        } else {
            (EventType::Warning, "NotReady")
        };
        ctx.event(
            storage.as_ref(),
            type_,
            reason,
            "Probe",
            format!("{}: {}", probe.reason, probe.message),
        )
        .await;
    }
    // On failure, probe again sooner (at most every 30 s) so that recovery shows quickly.
    let interval = Duration::from_secs(u64::from(settings.interval_seconds));
    Ok(Action::requeue(if probe.success {
        interval
    } else {
        interval.min(Duration::from_secs(30))
    }))
}

#[cfg(test)]
mod tests;
