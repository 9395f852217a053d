//! The Job controller's decisions as pure functions: the Pod a Job creates, and what to do next
//! (create, delete, status, TTL) given the Job and its Pods.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobStatus, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
    UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Label with the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Legacy label with the Job's name.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// Label with the Job's UID.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Legacy label with the Job's UID.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

/// Kubernetes' default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// Upper bound of the delay before a failed pod is replaced (Kubernetes: 6 minutes).
pub const MAX_POD_BACKOFF: Duration = Duration::from_secs(360);

/// The Pod the Job controller creates for a Job (name from `generateName: <job>-`).
pub fn pod_for_job(job: &Job) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
    labels.insert(JOB_NAME_LABEL.into(), name.clone());
    labels.insert(LEGACY_JOB_NAME_LABEL.into(), name.clone());
    labels.insert(CONTROLLER_UID_LABEL.into(), uid.clone());
    labels.insert(LEGACY_CONTROLLER_UID_LABEL.into(), uid.clone());
    // apiserver's SimpleNameGenerator keeps 58 characters of the base and appends 5 random ones.
    let mut generate_name = format!("{name}-");
    if generate_name.len() > 58 {
        generate_name.truncate(58);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: None,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

/// Whether a Pod is controlled by the Job with this UID.
pub fn is_owned_by(pod: &Pod, job_uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == job_uid)
}

/// What the Job controller should do now.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// The Job's new status.
    pub status: JobStatus,
    /// How many Pods to create.
    pub create_pods: u32,
    /// Names of Pods to delete.
    pub delete_pods: Vec<String>,
    /// Whether the Job's TTL after finishing expired: delete it.
    pub delete_job: bool,
    /// When to look again even if nothing changes.
    pub requeue_after: Option<Duration>,
}

/// Pod phase helpers.
fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn is_deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// When a failed Pod finished: its latest container `finishedAt`, else its Ready condition change.
pub fn pod_finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let from_containers = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    from_containers.or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    })
}

/// The first rule of the Job's `podFailurePolicy` a failed Pod matches, with its index.
/// `onExitCodes` looks at the terminated containers (init and regular) with a non-zero exit code,
/// only the named one when `containerName` is set; `onPodConditions` at the Pod's conditions.
fn matching_rule<'a>(
    spec: &'a k8s_openapi::api::batch::v1::JobSpec,
    pod: &Pod,
) -> Option<(usize, &'a PodFailurePolicyRule)> {
    let rules = &spec.pod_failure_policy.as_ref()?.rules;
    rules.iter().enumerate().find(|(_, rule)| {
        let exit_match = rule
            .on_exit_codes
            .as_ref()
            .is_some_and(|req| failed_exit_code(pod, req).is_some());
        let condition_match = rule.on_pod_conditions.iter().flatten().any(|pattern| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == pattern.type_
                            && c.status == pattern.status.as_deref().unwrap_or("True")
                    })
                })
        });
        exit_match || condition_match
    })
}

/// The container of `pod` and its exit code satisfying `req`, if any (exit code 0 never does).
fn failed_exit_code(
    pod: &Pod,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter(|c| req.container_name.as_ref().is_none_or(|n| *n == c.name))
        .filter_map(|c| {
            let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
            (code != 0).then(|| (c.name.clone(), code))
        })
        .find(|(_, code)| match req.operator.as_str() {
            "In" => req.values.contains(code),
            "NotIn" => !req.values.contains(code),
            _ => false,
        })
}

/// Upstream's message of a Job failed by a `FailJob` rule.
fn fail_job_message(pod: &Pod, index: usize, rule: &PodFailurePolicyRule) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    match rule
        .on_exit_codes
        .as_ref()
        .and_then(|req| failed_exit_code(pod, req))
    {
        Some((container, code)) => format!(
            "Container {container} for pod {ns}/{name} failed with exit code {code} matching \
             FailJob rule at index {index}"
        ),
        None => format!("Pod {ns}/{name} has condition matching FailJob rule at index {index}"),
    }
}

fn condition<'a>(conds: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == "True"
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return;
        }
        if c.status != "True" {
            c.last_transition_time = Some(Time(now));
        }
        c.status = "True".into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
    } else {
        conds.push(JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        });
    }
}

/// The delay before replacing the `failed`-th failed Pod: `base * 2^(failed-1)`, capped at
/// [`MAX_POD_BACKOFF`] (Kubernetes uses a 10 s base).
pub fn pod_backoff(base: Duration, failed: i32) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let exp = (failed - 1).min(16) as u32;
    base.saturating_mul(1u32 << exp).min(MAX_POD_BACKOFF)
}

fn to_std(d: SignedDuration) -> Duration {
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Decides the Job's next step from its spec, current status and Pods (Pods not controlled by
/// the Job are ignored). `backoff_base` is the first replacement delay after a failure.
pub fn plan_job(job: &Job, pods: &[Pod], now: Timestamp, backoff_base: Duration) -> JobPlan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods: Vec<&Pod> = pods.iter().filter(|p| is_owned_by(p, &uid)).collect();

    let active: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| !is_terminal(p) && !is_deleting(p))
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| !is_terminal(p) && is_deleting(p))
        .count() as i32;
    let succeeded = (pods.iter().filter(|p| phase(p) == "Succeeded").count() as i32)
        .max(old.succeeded.unwrap_or(0));
    // The pod failure policy's verdict on each failed pod (first matching rule, in order).
    let verdicts: Vec<(&Pod, Option<(usize, &PodFailurePolicyRule)>)> = pods
        .iter()
        .copied()
        .filter(|p| phase(p) == "Failed")
        .map(|p| (p, matching_rule(&spec, p)))
        .collect();
    // `Ignore`d failures do not count towards `backoffLimit`.
    let failed = (verdicts
        .iter()
        .filter(|(_, rule)| rule.is_none_or(|(_, r)| r.action != "Ignore"))
        .count() as i32)
        .max(old.failed.unwrap_or(0));
    let fail_job = verdicts.iter().find_map(|(p, rule)| match rule {
        Some((index, r)) if r.action == "FailJob" => Some(fail_job_message(p, *index, r)),
        _ => None,
    });
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;

    let mut conditions = old.conditions.clone().unwrap_or_default();
    let mut plan = JobPlan {
        status: JobStatus::default(),
        create_pods: 0,
        delete_pods: Vec::new(),
        delete_job: false,
        requeue_after: None,
    };
    let mut start_time = old.start_time.clone();
    let mut completion_time = old.completion_time.clone();
    let active_names = |ps: &[&Pod]| -> Vec<String> {
        ps.iter().filter_map(|p| p.metadata.name.clone()).collect()
    };

    let finished =
        condition(&conditions, "Complete").is_some() || condition(&conditions, "Failed").is_some();
    let mut active_count = active.len() as i32;

    if finished {
        plan.delete_pods = active_names(&active);
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let finish = completion_time.as_ref().map(|t| t.0).or_else(|| {
                conditions
                    .iter()
                    .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
                    .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
            });
            if let Some(finish) = finish {
                let expire = finish + SignedDuration::from_secs(ttl as i64);
                if now >= expire {
                    plan.delete_job = true;
                } else {
                    plan.requeue_after = Some(to_std(expire.duration_since(now)));
                }
            }
        }
    } else if spec.suspend == Some(true) {
        plan.delete_pods = active_names(&active);
        active_count = 0;
        set_condition(
            &mut conditions,
            "Suspended",
            "JobSuspended",
            "Job suspended",
            now,
        );
        start_time = None;
    } else {
        if let Some(c) = conditions
            .iter_mut()
            .find(|c| c.type_ == "Suspended" && c.status == "True")
        {
            c.status = "False".into();
            c.reason = Some("JobResumed".into());
            c.message = Some("Job resumed".into());
            c.last_transition_time = Some(Time(now));
        }
        let start = start_time.get_or_insert(Time(now)).0;

        // Has a terminal decision already been taken (k8s 1.31+ interim conditions)?
        let mut failure = condition(&conditions, "FailureTarget").map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
        let mut success = condition(&conditions, "SuccessCriteriaMet").is_some();
        if failure.is_none()
            && !success
            && let Some(message) = fail_job
        {
            set_condition(
                &mut conditions,
                "FailureTarget",
                "PodFailurePolicy",
                &message,
                now,
            );
            failure = Some(("PodFailurePolicy".into(), message));
        }

        if failure.is_none() && !success {
            let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
            let restart_on_failure = spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("OnFailure");
            let restarts: i32 = if restart_on_failure {
                active
                    .iter()
                    .filter_map(|p| p.status.as_ref())
                    .flat_map(|s| {
                        s.container_statuses
                            .iter()
                            .flatten()
                            .chain(s.init_container_statuses.iter().flatten())
                    })
                    .map(|c| c.restart_count)
                    .sum()
            } else {
                0
            };
            let past_restart_limit = restart_on_failure
                && if backoff_limit == 0 {
                    restarts > 0
                } else {
                    restarts >= backoff_limit
                };
            let deadline = spec
                .active_deadline_seconds
                .map(|s| start + SignedDuration::from_secs(s));
            let completions = spec.completions;
            let reached = match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            };
            if failed > backoff_limit || past_restart_limit {
                failure = Some((
                    "BackoffLimitExceeded".into(),
                    "Job has reached the specified backoff limit".into(),
                ));
            } else if deadline.is_some_and(|d| now >= d) {
                failure = Some((
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else if reached {
                success = true;
            }
            if let Some((reason, message)) = &failure {
                set_condition(&mut conditions, "FailureTarget", reason, message, now);
            } else if success {
                set_condition(
                    &mut conditions,
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
            } else {
                if let Some(d) = deadline {
                    plan.requeue_after =
                        earliest(plan.requeue_after, to_std(d.duration_since(now)));
                }
                let parallelism = spec.parallelism.unwrap_or(1).max(0);
                let wanted = match completions {
                    Some(c) => parallelism.min((c - succeeded).max(0)),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                };
                let mut missing = wanted - active_count;
                if missing > 0 && failed > 0 {
                    let last_failure = pods
                        .iter()
                        .filter(|p| phase(p) == "Failed")
                        .filter_map(|p| pod_finish_time(p))
                        .max();
                    if let Some(last) = last_failure {
                        let ready_at = last
                            + SignedDuration::try_from(pod_backoff(backoff_base, failed))
                                .unwrap_or(SignedDuration::MAX);
                        if now < ready_at {
                            plan.requeue_after =
                                earliest(plan.requeue_after, to_std(ready_at.duration_since(now)));
                            missing = 0;
                        }
                    }
                }
                if missing > 0 {
                    plan.create_pods = missing as u32;
                    active_count += missing;
                } else if missing < 0 {
                    // Too many pods (parallelism lowered): delete the newest extras.
                    let mut extra: Vec<&Pod> = active.clone();
                    extra.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
                    plan.delete_pods = active_names(&extra[..(-missing) as usize]);
                }
            }
        }

        if failure.is_some() || success {
            // Terminal decision taken: stop what still runs; finish once nothing runs.
            plan.delete_pods = active_names(&active);
            let still_running = !active.is_empty() || terminating > 0;
            active_count = active.len() as i32;
            if !still_running {
                if let Some((reason, message)) = &failure {
                    set_condition(&mut conditions, "Failed", reason, message, now);
                } else {
                    set_condition(
                        &mut conditions,
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                        now,
                    );
                    completion_time.get_or_insert(Time(now));
                }
                if let Some(ttl) = spec.ttl_seconds_after_finished {
                    plan.requeue_after =
                        earliest(plan.requeue_after, Duration::from_secs(ttl.max(0) as u64));
                }
            }
        }
    }

    let nonzero = |n: i32| (n > 0).then_some(n);
    plan.status = JobStatus {
        active: nonzero(active_count),
        succeeded: nonzero(succeeded),
        failed: nonzero(failed),
        ready: Some(ready),
        terminating: Some(terminating),
        start_time,
        completion_time,
        conditions: (!conditions.is_empty()).then_some(conditions),
        uncounted_terminated_pods: Some(UncountedTerminatedPods::default()),
        ..old
    };
    plan
}

/// A JSON merge patch body that sets `status` to exactly `status`: fields that are `None` are
/// sent as `null` so that stale values are removed.
pub fn job_status_patch(status: &JobStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = value.as_object_mut() {
        for key in [
            "active",
            "succeeded",
            "failed",
            "completionTime",
            "startTime",
            "conditions",
        ] {
            obj.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}
