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

/// The Job condition reason the watchers report when the agent container of the newest failed
/// Pod was killed for its memory limit (the Job itself only says `BackoffLimitExceeded`).
pub const OOM_KILLED: &str = "OOMKilled";

/// Why `pod`'s agent container was killed for exceeding its memory limit, when it was
/// (`OOMKilled` in its current or last state), naming the limit (pure).
pub fn out_of_memory(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let agent = statuses.iter().find(|c| c.name == AGENT_CONTAINER)?;
    let killed = [agent.state.as_ref(), agent.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|s| s.terminated.as_ref())
        .any(|t| t.reason.as_deref() == Some(OOM_KILLED));
    if !killed {
        return None;
    }
    let limit = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == AGENT_CONTAINER))
        .and_then(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get("memory")
                .cloned()
        })
        .map(|q| q.0);
    Some(match limit {
        Some(limit) => format!(
            "the agent was killed for exceeding its memory limit of {limit} (OOMKilled); raise jobTemplate.resources.limits.memory"
        ),
        None => "the agent was killed for running out of memory (OOMKilled); set or raise jobTemplate.resources.limits.memory".into(),
    })
}

/// The newest failed Pod's out-of-memory kill, if the Job failed without an agent report.
pub fn failed_out_of_memory(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .rev()
        .find(|p| pod_phase(p) == "Failed")
        .filter(|p| termination_message(p).is_none())
        .and_then(out_of_memory)
}

/// The reason and message a failed Job is reported with: its condition's, unless the agent
/// left no report and the newest failed Pod's agent was OOM-killed ([`OOM_KILLED`], naming the
/// limit).
pub fn failure_cause(
    pods: &[Pod],
    reported: bool,
    condition_reason: Option<String>,
    condition_message: Option<String>,
) -> (String, String) {
    match (!reported).then(|| failed_out_of_memory(pods)).flatten() {
        Some(why) => (OOM_KILLED.to_string(), why),
        None => (
            condition_reason.unwrap_or_default(),
            condition_message.unwrap_or_default(),
        ),
    }
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
        let (reason, message) = failure_cause(
            &pod_list,
            succeeded || termination_message.is_some(),
            c.reason,
            c.message,
        );
        return Ok(Observed::Finished {
            attempts,
            succeeded,
            reason,
            message,
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

/// Why a finished Job failed, for Events: the agent's own error from its termination message,
/// else the Job's condition message.
pub fn failure_detail(termination_message: Option<&str>, message: String) -> String {
    termination_message
        .and_then(<crate::contract::AgentReport as crate::contract::Report>::parse)
        .and_then(|r| r.error)
        .unwrap_or(message)
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

#[cfg(test)]
mod oom_tests {
    use super::*;

    fn pod(phase: &str, agent_state: serde_json::Value, limit: Option<&str>) -> Pod {
        let resources = match limit {
            Some(l) => serde_json::json!({"limits": {"memory": l}}),
            None => serde_json::json!({}),
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": AGENT_CONTAINER, "resources": resources}]},
            "status": {"phase": phase, "containerStatuses": [{
                "name": AGENT_CONTAINER, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                "state": agent_state
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn an_oom_killed_agent_names_its_memory_limit() {
        let killed = serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
        let why = out_of_memory(&pod("Failed", killed.clone(), Some("64Mi"))).unwrap();
        assert!(why.contains("64Mi") && why.contains("OOMKilled"), "{why}");
        assert!(out_of_memory(&pod("Failed", killed.clone(), None)).is_some());
        let plain = serde_json::json!({"terminated": {"exitCode": 10, "reason": "Error"}});
        assert_eq!(
            out_of_memory(&pod("Failed", plain.clone(), Some("64Mi"))),
            None
        );
        // The newest failed pod decides; one with a report (termination message) is no OOM.
        let pods = [
            pod("Failed", killed.clone(), Some("64Mi")),
            pod("Failed", plain, Some("64Mi")),
        ];
        assert_eq!(failed_out_of_memory(&pods), None);
        let reported = serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "{}"}});
        assert_eq!(failed_out_of_memory(&[pod("Failed", reported, None)]), None);
        assert!(failed_out_of_memory(&[pod("Failed", killed, Some("1Gi"))]).is_some());
    }
}
