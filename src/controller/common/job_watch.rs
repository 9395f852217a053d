//! Observing a Job: its state, the agent's termination message, and the newest progress line of
//! its log; and deleting one. Shared by the reconcilers that launch Jobs.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PropagationPolicy};

use crate::contract::{AGENT_CONTAINER, ProgressSample, last_progress};
use crate::controller::common::context::Context;
use crate::controller::common::error::{Error, Result};

/// Deletes the Job `name` and its Pods; a Job already gone is fine.
pub async fn delete(ctx: &Context, ns: &str, name: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Server-side applies `job` under `field_manager` and returns its name. The apply is
/// idempotent: re-applying after a crash finds the Job already created and changes nothing.
pub async fn apply(ctx: &Context, ns: &str, field_manager: &str, job: &Job) -> Result<String> {
    let name = job
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectField("job name"))?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    jobs.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(job),
    )
    .await?;
    Ok(name)
}

/// A Job as observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// No Job recorded in status yet.
    NotCreated,
    /// The recorded Job is gone.
    Vanished {
        /// Its name.
        name: String,
    },
    /// Running or waiting for its Pod.
    Active {
        /// Pods started so far.
        attempts: u32,
        /// Newest progress sample of the running Pod.
        progress: Option<ProgressSample>,
    },
    /// Finished (`Complete` or `Failed` condition).
    Finished {
        /// Pods started.
        attempts: u32,
        /// Whether the Job completed.
        succeeded: bool,
        /// The Job condition's reason (e.g. `DeadlineExceeded`, `BackoffLimitExceeded`).
        reason: String,
        /// The Job condition's message.
        message: String,
        /// The agent container's termination message in the newest finished Pod.
        termination_message: Option<String>,
    },
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn termination_message(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let agent = statuses.iter().find(|c| c.name == AGENT_CONTAINER)?;
    agent.state.as_ref()?.terminated.as_ref()?.message.clone()
}

/// Reads the Job `job_name` (from status) and its Pods.
pub async fn observe(ctx: &Context, ns: &str, job_name: Option<&str>) -> Result<Observed> {
    let Some(job_name) = job_name else {
        return Ok(Observed::NotCreated);
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let Some(job) = jobs.get_opt(job_name).await? else {
        return Ok(Observed::Vanished {
            name: job_name.to_string(),
        });
    };
    let st = job.status.clone().unwrap_or_default();
    let attempts =
        (st.failed.unwrap_or(0) + st.succeeded.unwrap_or(0) + st.active.unwrap_or(0)).max(1) as u32;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut pod_list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}")))
        .await?
        .items;
    pod_list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let condition = |type_: &str| {
        st.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
            .cloned()
    };
    let finished = condition("Complete")
        .map(|c| (true, c))
        .or_else(|| condition("Failed").map(|c| (false, c)));
    if let Some((succeeded, c)) = finished {
        let wanted = if succeeded { "Succeeded" } else { "Failed" };
        let termination_message = pod_list
            .iter()
            .rev()
            .filter(|p| pod_phase(p) == wanted || pod_phase(p) == "Failed")
            .find_map(termination_message);
        return Ok(Observed::Finished {
            attempts,
            succeeded,
            reason: c.reason.unwrap_or_default(),
            message: c.message.unwrap_or_default(),
            termination_message,
        });
    }
    let progress = match pod_list.iter().rev().find(|p| pod_phase(p) == "Running") {
        Some(pod) => {
            let params = progress_log_params();
            match pods.logs(&pod.name_any(), &params).await {
                Ok(log) => last_progress(&log),
                Err(e) => {
                    tracing::debug!(error = %e, pod = %pod.name_any(), "could not read agent progress");
                    None
                }
            }
        }
        None => None,
    };
    Ok(Observed::Active { attempts, progress })
}

/// Most bytes of agent log read per look at a running pod: the newest progress line is among
/// the last lines, and a container that writes endless lines costs no more than this.
pub const PROGRESS_LOG_LIMIT_BYTES: i64 = 64 << 10;

/// How the operator reads a running agent's log for its progress: the agent container's last
/// 50 lines, at most [`PROGRESS_LOG_LIMIT_BYTES`] (`limitBytes`, enforced by the API server).
pub fn progress_log_params() -> LogParams {
    LogParams {
        container: Some(AGENT_CONTAINER.into()),
        tail_lines: Some(50),
        limit_bytes: Some(PROGRESS_LOG_LIMIT_BYTES),
        ..Default::default()
    }
}

#[cfg(test)]
mod log_cap_tests {
    use super::*;

    #[test]
    fn progress_reads_are_capped_by_the_api_server() {
        let p = progress_log_params();
        assert_eq!(p.limit_bytes, Some(PROGRESS_LOG_LIMIT_BYTES));
        assert_eq!(p.container.as_deref(), Some(AGENT_CONTAINER));
        assert!(!p.follow);
    }
}
