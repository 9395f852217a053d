//! The ReplicaSet controller: keeps `spec.replicas` pods of each ReplicaSet and its status,
//! using the pure decisions of [`super::rsplan`]. Like the Job controller it reads fresh state
//! from the API on every reconcile, so a pod it just created is never missed or created twice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::error::RunnerError;
use super::rsplan::{
    Claim, ManageError, availability_recheck, claim, controller_reference, is_active,
    plan_replica_set, pod_for_replica_set, rs_status,
};

const FIELD_MANAGER: &str = "kube-sim-replicaset-controller";

pub(crate) struct RsCtx {
    pub client: Client,
    pub events: super::events::Events,
}

/// Runs the ReplicaSet controller until its watches end.
pub(crate) async fn run(ctx: Arc<RsCtx>) -> Result<(), RunnerError> {
    let sets: Api<ReplicaSet> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "replicaset reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// Conflicts (a write raced another) are retried at once; other errors after a second.
pub(crate) fn retry_after(err: &RunnerError) -> Duration {
    match err {
        RunnerError::Api {
            source: kube::Error::Api(s),
            ..
        } if s.code == 409 => Duration::from_millis(100),
        _ => Duration::from_secs(1),
    }
}

fn error_policy(_rs: Arc<ReplicaSet>, err: &RunnerError, _ctx: Arc<RsCtx>) -> Action {
    debug!(error = %err, "replicaset controller: retrying");
    Action::requeue(retry_after(err))
}

/// Adds or removes this owner's controller reference on an object (strategic merge by uid, with
/// the object's uid and resourceVersion as preconditions), as `ControllerRefManager` does.
pub(crate) async fn set_controller_ref<K>(
    api: &Api<K>,
    obj: &K,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    release_uid: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let refs = match owner {
        Some(r) => json!([r]),
        None => json!([{"$patch": "delete", "uid": release_uid}]),
    };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": meta.uid,
        "resourceVersion": meta.resource_version,
    }});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(&obj.name_any(), &pp, &Patch::Strategic(patch))
        .await
        .map(|_| ())
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<RsCtx>) -> Result<Action, RunnerError> {
    let ns = rs.namespace().unwrap_or_else(|| "default".into());
    let name = rs.name_any();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let rs: ReplicaSet = match rs_api.get_opt(&name).await {
        Ok(Some(r)) if r.metadata.uid.as_deref() == Some(uid.as_str()) => r,
        Ok(_) => return Ok(Action::await_change()),
        Err(e) => {
            return Err(RunnerError::api(
                format!("reading replicaset {ns}/{name}"),
                e,
            ));
        }
    };
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let all = pods_api
        .list(&ListParams::default())
        .await
        .map_err(|e| RunnerError::api(format!("listing pods for replicaset {ns}/{name}"), e))?
        .items;
    let rs_ref = rs.object_ref(&());
    let mut owned: Vec<Pod> = Vec::new();
    for pod in all.into_iter().filter(is_active) {
        match claim(&uid, deleting, &rs.spec.selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                let owner = controller_reference("apps/v1", "ReplicaSet", &rs.metadata);
                match set_controller_ref(&pods_api, &pod, Some(owner), "").await {
                    Ok(()) => {
                        debug!(replicaset = %name, pod = %pod.name_any(), "adopted pod");
                        owned.push(pod);
                    }
                    Err(e) => debug!(replicaset = %name, error = %e, "cannot adopt pod"),
                }
            }
            Claim::Release => {
                if let Err(e) = set_controller_ref(&pods_api, &pod, None, &uid).await {
                    debug!(replicaset = %name, error = %e, "cannot release pod");
                }
            }
            Claim::Ignore => {}
        }
    }
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::now());
    let plan = plan_replica_set(&rs, &owned, now);
    let mut manage_error: Option<ManageError> = None;
    for _ in 0..plan.create {
        match pods_api
            .create(&PostParams::default(), &pod_for_replica_set(&rs))
            .await
        {
            Ok(p) => {
                info!(replicaset = %name, pod = %p.name_any(), "replicaset controller: created pod");
                ctx.events
                    .publish(
                        &rs_ref,
                        false,
                        "SuccessfulCreate",
                        "Create",
                        format!("Created pod: {}", p.name_any()),
                    )
                    .await;
            }
            Err(e) => {
                warn!(replicaset = %name, error = %e, "replicaset controller: cannot create pod");
                ctx.events
                    .publish(
                        &rs_ref,
                        true,
                        "FailedCreate",
                        "Create",
                        format!("Error creating: {e}"),
                    )
                    .await;
                manage_error = Some(ManageError {
                    reason: "FailedCreate".into(),
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    for pod_name in &plan.delete {
        match pods_api.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => {
                info!(replicaset = %name, pod = %pod_name, "replicaset controller: deleting pod");
                ctx.events
                    .publish(
                        &rs_ref,
                        false,
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted pod: {pod_name}"),
                    )
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                manage_error = Some(ManageError {
                    reason: "FailedDelete".into(),
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    let status = rs_status(&rs, &owned, manage_error.as_ref(), now);
    if rs.status.as_ref() != Some(&status) {
        let mut updated = rs.clone();
        updated.status = Some(status.clone());
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        rs_api
            .replace_status(&name, &pp, &updated)
            .await
            .map_err(|e| {
                RunnerError::api(format!("updating status of replicaset {ns}/{name}"), e)
            })?;
    }
    if let Some(e) = manage_error {
        return Err(RunnerError::Controller(format!(
            "replicaset {ns}/{name}: {}",
            e.message
        )));
    }
    Ok(match availability_recheck(&rs, &owned, now) {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}
