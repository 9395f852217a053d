//! The Deployment controller: claims ReplicaSets, runs one sync of [`plan_deployment`] and
//! performs its writes (ReplicaSet creates/updates/deletes, then the Deployment's status and
//! revision annotation through `/status`). Fresh state is read from the API every reconcile;
//! ReplicaSet writes carry resourceVersions, so a racing write is a 409 and a quick retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::deployplan::{
    FAILED_RS_CREATE, RsAction, equal_ignore_hash, plan_deployment, set_condition,
};
use super::error::RunnerError;
use super::replicaset::{retry_after, set_controller_ref};
use super::rsplan::{Claim, claim, controller_ref, controller_reference};
use crate::workloads::selector_string;

const FIELD_MANAGER: &str = "kube-sim-deployment-controller";

pub(crate) struct DeployCtx {
    pub client: Client,
    pub events: super::events::Events,
}

/// Runs the Deployment controller until its watches end.
pub(crate) async fn run(ctx: Arc<DeployCtx>) -> Result<(), RunnerError> {
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    let sets: Api<ReplicaSet> = Api::all(ctx.client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_d: Arc<Deployment>, err: &RunnerError, _ctx: Arc<DeployCtx>) -> Action {
    debug!(error = %err, "deployment controller: retrying");
    Action::requeue(retry_after(err))
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<DeployCtx>) -> Result<Action, RunnerError> {
    let ns = d.namespace().unwrap_or_else(|| "default".into());
    let name = d.name_any();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let api_err = |what: String| move |e| RunnerError::api(what, e);
    let d: Deployment = match d_api.get_opt(&name).await {
        Ok(Some(x)) if x.metadata.uid.as_deref() == Some(uid.as_str()) => x,
        Ok(_) => return Ok(Action::await_change()),
        Err(e) => {
            return Err(RunnerError::api(
                format!("reading deployment {ns}/{name}"),
                e,
            ));
        }
    };
    let deleting = d.metadata.deletion_timestamp.is_some();
    let all = rs_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(format!(
            "listing replicasets for deployment {ns}/{name}"
        )))?
        .items;
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in all {
        match claim(&uid, deleting, &d.spec.selector, &rs.metadata) {
            Claim::Owned => owned.push(rs),
            Claim::Adopt => {
                let owner = controller_reference("apps/v1", "Deployment", &d.metadata);
                match set_controller_ref(&rs_api, &rs, Some(owner), "").await {
                    Ok(()) => {
                        // Re-read it: the adoption changed its resourceVersion.
                        if let Ok(Some(r)) = rs_api.get_opt(&rs.name_any()).await {
                            owned.push(r);
                        }
                    }
                    Err(e) => debug!(deployment = %name, error = %e, "cannot adopt replicaset"),
                }
            }
            Claim::Release => {
                if let Err(e) = set_controller_ref(&rs_api, &rs, None, &uid).await {
                    debug!(deployment = %name, error = %e, "cannot release replicaset");
                }
            }
            Claim::Ignore => {}
        }
    }
    let selector = selector_string(serde_json::to_value(&d.spec.selector).ok().as_ref());
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_err(format!("listing pods of deployment {ns}/{name}")))?
        .items;
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::now());
    let plan = plan_deployment(&d, &owned, &pods, now);
    let d_ref = d.object_ref(&());

    // Each ReplicaSet write carries the latest resourceVersion this sync saw for it.
    let mut versions: HashMap<String, Option<String>> = owned
        .iter()
        .map(|r| (r.name_any(), r.metadata.resource_version.clone()))
        .collect();
    for action in plan.actions {
        match action {
            RsAction::Create { rs, event } => {
                let rs_name = rs.name_any();
                match rs_api.create(&post_params(), &rs).await {
                    Ok(created) => {
                        info!(deployment = %name, replicaset = %rs_name, "deployment controller: created replicaset");
                        versions.insert(rs_name, created.metadata.resource_version.clone());
                        if let Some(note) = event {
                            ctx.events
                                .publish(&d_ref, false, "ScalingReplicaSet", "Scale", note)
                                .await;
                        }
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        return collision(&d_api, &rs_api, &d, &rs).await;
                    }
                    Err(kube::Error::Api(s))
                        if s.code == 403 && s.message.contains("is being terminated") =>
                    {
                        return Ok(Action::await_change());
                    }
                    Err(e) => {
                        let msg = format!("Failed to create new replica set \"{rs_name}\": {e}");
                        warn!(deployment = %name, error = %e, "deployment controller: cannot create replicaset");
                        ctx.events
                            .publish(&d_ref, true, FAILED_RS_CREATE, "Create", msg.clone())
                            .await;
                        report_create_failure(&d_api, &d, msg).await;
                        return Err(RunnerError::api(
                            format!("creating replicaset {ns}/{rs_name}"),
                            e,
                        ));
                    }
                }
            }
            RsAction::Update { mut rs, event } => {
                let rs_name = rs.name_any();
                if let Some(rv) = versions.get(&rs_name) {
                    rs.metadata.resource_version = rv.clone();
                }
                let updated = rs_api
                    .replace(&rs_name, &post_params(), &rs)
                    .await
                    .map_err(api_err(format!("updating replicaset {ns}/{rs_name}")))?;
                versions.insert(rs_name, updated.metadata.resource_version.clone());
                if let Some(note) = event {
                    info!(deployment = %name, %note, "deployment controller");
                    ctx.events
                        .publish(&d_ref, false, "ScalingReplicaSet", "Scale", note)
                        .await;
                }
            }
            RsAction::Delete { name: rs_name } => {
                match rs_api.delete(&rs_name, &DeleteParams::default()).await {
                    Ok(_) => {
                        info!(deployment = %name, replicaset = %rs_name, "deployment controller: deleted old replicaset")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(RunnerError::api(
                            format!("deleting replicaset {ns}/{rs_name}"),
                            e,
                        ));
                    }
                }
            }
        }
    }
    if let Some(new_d) = plan.deployment {
        d_api
            .replace_status(&name, &post_params(), &new_d)
            .await
            .map_err(api_err(format!(
                "updating status of deployment {ns}/{name}"
            )))?;
    }
    Ok(match plan.requeue_after {
        Some(after) => Action::requeue(after.max(Duration::from_millis(100))),
        None => Action::await_change(),
    })
}

/// The new ReplicaSet's name is taken: ours with the same template (a stale read) is fine;
/// anything else is a hash collision, counted in `status.collisionCount` so the next sync
/// hashes differently.
async fn collision(
    d_api: &Api<Deployment>,
    rs_api: &Api<ReplicaSet>,
    d: &Deployment,
    wanted: &ReplicaSet,
) -> Result<Action, RunnerError> {
    let name = wanted.name_any();
    let existing = rs_api
        .get_opt(&name)
        .await
        .map_err(|e| RunnerError::api(format!("reading replicaset {name}"), e))?;
    if let Some(rs) = existing {
        let ours =
            controller_ref(&rs.metadata).map(|r| r.uid.as_str()) == d.metadata.uid.as_deref();
        let same = equal_ignore_hash(
            &rs.spec.template.clone().unwrap_or_default(),
            &d.spec.template,
        );
        if ours && same {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
    }
    let mut new_d = d.clone();
    let status = new_d.status.get_or_insert_with(Default::default);
    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
    d_api
        .replace_status(&d.name_any(), &post_params(), &new_d)
        .await
        .map_err(|e| RunnerError::api(format!("counting a hash collision of {name}"), e))?;
    Ok(Action::requeue(Duration::from_millis(100)))
}

/// Records `ReplicaSetCreateError` in the `Progressing` condition (best effort).
async fn report_create_failure(d_api: &Api<Deployment>, d: &Deployment, msg: String) {
    if d.spec
        .progress_deadline_seconds
        .is_none_or(|s| s == i32::MAX)
    {
        return;
    }
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::now());
    let mut new_d = d.clone();
    let status = new_d.status.get_or_insert_with(Default::default);
    set_condition(
        status,
        k8s_openapi::api::apps::v1::DeploymentCondition {
            type_: Some("Progressing".into()),
            status: Some("False".into()),
            reason: Some(FAILED_RS_CREATE.into()),
            message: Some(msg),
            last_update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        },
    );
    if let Err(e) = d_api
        .replace_status(&d.name_any(), &post_params(), &new_d)
        .await
    {
        debug!(error = %e, "cannot record the replicaset create failure");
    }
}
