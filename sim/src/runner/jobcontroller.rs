//! The Job controller: creates Pods for Jobs and keeps Job status, using [`plan_job`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::error::RunnerError;
use super::jobplan::{CONTROLLER_UID_LABEL, job_status_patch, plan_job, pod_for_job};

const FIELD_MANAGER: &str = "kube-sim-job-controller";

pub(crate) struct JobCtx {
    pub client: Client,
    pub events: super::events::Events,
    pub backoff_base: Duration,
}

/// Runs the Job controller until its watches end.
pub(crate) async fn run(ctx: Arc<JobCtx>) -> Result<(), RunnerError> {
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "job reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_job: Arc<Job>, err: &RunnerError, _ctx: Arc<JobCtx>) -> Action {
    warn!(error = %err, "job controller: retrying");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<JobCtx>) -> Result<Action, RunnerError> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);

    // Read fresh state from the API (not a cache), so a pod just created is always seen.
    let job: Job = match jobs_api.get_opt(&name).await {
        Ok(Some(j)) if j.metadata.uid.as_deref() == Some(uid.as_str()) => j,
        Ok(_) => return Ok(Action::await_change()),
        Err(e) => return Err(RunnerError::api(format!("reading job {ns}/{name}"), e)),
    };
    let pods = pods_api
        .list(&ListParams::default().labels(&format!("{CONTROLLER_UID_LABEL}={uid}")))
        .await
        .map_err(|e| RunnerError::api(format!("listing pods of job {ns}/{name}"), e))?
        .items;

    let plan = plan_job(&job, &pods, Timestamp::now(), ctx.backoff_base);
    let job_ref = job.object_ref(&());

    for pod_name in &plan.delete_pods {
        match pods_api.delete(pod_name, &DeleteParams::default()).await {
            Ok(_) => {
                debug!(job = %name, pod = %pod_name, "job controller: deleting pod");
                ctx.events
                    .publish(
                        &job_ref,
                        false,
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted pod: {pod_name}"),
                    )
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(RunnerError::api(format!("deleting pod {ns}/{pod_name}"), e)),
        }
    }
    let mut status = plan.status.clone();
    for _ in 0..plan.create_pods {
        let pod = pod_for_job(&job);
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                info!(job = %name, pod = %p.name_any(), "job controller: created pod");
                ctx.events
                    .publish(
                        &job_ref,
                        false,
                        "SuccessfulCreate",
                        "Create",
                        format!("Created pod: {}", p.name_any()),
                    )
                    .await;
            }
            Err(e) => {
                status.active = status.active.map(|a| a - 1).filter(|a| *a > 0);
                warn!(job = %name, error = %e, "job controller: cannot create pod");
            }
        }
    }
    if job.status.as_ref() != Some(&status) {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        jobs_api
            .patch_status(&name, &pp, &Patch::Merge(&job_status_patch(&status)))
            .await
            .map_err(|e| RunnerError::api(format!("updating status of job {ns}/{name}"), e))?;
        let was = |t: &str| has_condition(job.status.as_ref(), t);
        let is = |t: &str| has_condition(Some(&status), t);
        if is("Complete") && !was("Complete") {
            ctx.events
                .publish(
                    &job_ref,
                    false,
                    "Completed",
                    "Complete",
                    "Job completed".into(),
                )
                .await;
        }
        if is("Failed")
            && !was("Failed")
            && let Some(c) = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed")
        {
            let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
            ctx.events
                .publish(
                    &job_ref,
                    true,
                    &reason,
                    "Fail",
                    c.message.clone().unwrap_or_default(),
                )
                .await;
        }
    }
    if plan.delete_job {
        info!(job = %name, "job controller: TTL after finished expired, deleting job");
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        if let Err(e) = jobs_api.delete(&name, &dp).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404)
        {
            return Err(RunnerError::api(format!("deleting job {ns}/{name}"), e));
        }
        return Ok(Action::await_change());
    }
    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

fn has_condition(status: Option<&k8s_openapi::api::batch::v1::JobStatus>, t: &str) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
}
