//! Job controller decisions (pure): pod template, counts, retries, deadline, completion, TTL.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_sim::runner::jobplan::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, job_status_patch, plan_job, pod_backoff, pod_for_job,
};
use serde_json::json;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ts(secs: i64) -> String {
    t(secs).to_string()
}

fn job(spec_extra: serde_json::Value, status: serde_json::Value) -> Job {
    let mut spec = json!({
        "template": {
            "metadata": {"labels": {"app": "agent"}, "annotations": {"a": "b"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}
        }
    });
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "backup-1", "namespace": "shop", "uid": "job-uid"},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn pod(name: &str, phase: &str, finished: Option<i64>) -> Pod {
    let mut status = json!({"phase": phase});
    if let Some(f) = finished {
        status["containerStatuses"] = json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": if phase == "Succeeded" {0} else {1}, "finishedAt": ts(f)}}
        }]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "backup-1",
                                 "uid": "job-uid", "controller": true}]},
        "status": status,
    }))
    .unwrap()
}

fn ready_pod(name: &str) -> Pod {
    let mut p = pod(name, "Running", None);
    p.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(json!({"type": "Ready", "status": "True"})).unwrap(),
    ]);
    p
}

fn cond<'a>(
    job_status: &'a k8s_openapi::api::batch::v1::JobStatus,
    t: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job_status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
}

const BASE: Duration = Duration::from_secs(10);

#[test]
fn pod_for_job_has_kubernetes_names_labels_and_owner() {
    let j = job(json!({}), json!({}));
    let p = pod_for_job(&j);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("backup-1-"));
    assert_eq!(p.metadata.name, None);
    assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
    let labels = p.metadata.labels.unwrap();
    assert_eq!(labels[JOB_NAME_LABEL], "backup-1");
    assert_eq!(labels["job-name"], "backup-1");
    assert_eq!(labels[CONTROLLER_UID_LABEL], "job-uid");
    assert_eq!(labels["controller-uid"], "job-uid");
    assert_eq!(labels["app"], "agent");
    assert_eq!(p.metadata.annotations.unwrap()["a"], "b");
    let owner = &p.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Job", "backup-1", "job-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    assert_eq!(
        p.spec.unwrap().containers[0].image.as_deref(),
        Some("busybox")
    );
}

#[test]
fn long_job_names_are_truncated_like_the_apiserver() {
    let mut j = job(json!({}), json!({}));
    j.metadata.name = Some("x".repeat(70));
    let p = pod_for_job(&j);
    assert_eq!(p.metadata.generate_name.unwrap().len(), 58);
}

#[test]
fn new_job_gets_start_time_and_one_pod() {
    let plan = plan_job(&job(json!({}), json!({})), &[], t(0), BASE);
    assert_eq!(plan.create_pods, 1);
    assert_eq!(plan.status.active, Some(1));
    assert_eq!(plan.status.start_time.as_ref().unwrap().0, t(0));
    assert_eq!(plan.status.ready, Some(0));
    assert!(plan.status.conditions.is_none());
}

#[test]
fn running_pod_is_counted_and_not_duplicated() {
    let j = job(json!({}), json!({"startTime": ts(0), "active": 1}));
    let plan = plan_job(&j, &[ready_pod("backup-1-abcde")], t(5), BASE);
    assert_eq!(plan.create_pods, 0);
    assert_eq!(plan.status.active, Some(1));
    assert_eq!(plan.status.ready, Some(1));
    assert!(plan.delete_pods.is_empty());
}

#[test]
fn pods_of_other_jobs_are_ignored() {
    let mut other = ready_pod("other");
    other.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
    let plan = plan_job(
        &job(json!({}), json!({"startTime": ts(0)})),
        &[other],
        t(1),
        BASE,
    );
    assert_eq!(plan.create_pods, 1);
}

#[test]
fn success_sets_success_criteria_complete_and_completion_time() {
    let j = job(json!({}), json!({"startTime": ts(0), "active": 1}));
    let plan = plan_job(&j, &[pod("p1", "Succeeded", Some(3))], t(4), BASE);
    let s = &plan.status;
    assert_eq!(s.succeeded, Some(1));
    assert_eq!(s.active, None);
    assert_eq!(plan.create_pods, 0);
    assert_eq!(
        cond(s, "SuccessCriteriaMet").unwrap().reason.as_deref(),
        Some("CompletionsReached")
    );
    assert_eq!(
        cond(s, "Complete").unwrap().reason.as_deref(),
        Some("CompletionsReached")
    );
    assert_eq!(s.completion_time.as_ref().unwrap().0, t(4));
    assert!(cond(s, "Failed").is_none());
}

#[test]
fn failed_pod_is_replaced_after_backoff() {
    let j = job(
        json!({"backoffLimit": 2}),
        json!({"startTime": ts(0), "active": 1}),
    );
    let pods = [pod("p1", "Failed", Some(10))];
    // Within the first backoff (10 s after the failure): wait.
    let plan = plan_job(&j, &pods, t(15), BASE);
    assert_eq!(plan.create_pods, 0);
    assert_eq!(plan.status.failed, Some(1));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(5)));
    // After it: a new pod.
    let plan = plan_job(&j, &pods, t(20), BASE);
    assert_eq!(plan.create_pods, 1);
    assert_eq!(plan.status.active, Some(1));
    assert!(plan.status.conditions.is_none());
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(pod_backoff(BASE, 0), Duration::ZERO);
    assert_eq!(pod_backoff(BASE, 1), Duration::from_secs(10));
    assert_eq!(pod_backoff(BASE, 2), Duration::from_secs(20));
    assert_eq!(pod_backoff(BASE, 3), Duration::from_secs(40));
    assert_eq!(pod_backoff(BASE, 30), Duration::from_secs(360));
}

#[test]
fn exceeding_backoff_limit_fails_the_job() {
    let j = job(json!({"backoffLimit": 2}), json!({"startTime": ts(0)}));
    let pods = [
        pod("p1", "Failed", Some(1)),
        pod("p2", "Failed", Some(20)),
        pod("p3", "Failed", Some(60)),
    ];
    let plan = plan_job(&j, &pods, t(61), BASE);
    assert_eq!(plan.create_pods, 0);
    assert_eq!(plan.status.failed, Some(3));
    let failed = cond(&plan.status, "Failed").expect("Failed condition");
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert!(cond(&plan.status, "FailureTarget").is_some());
    assert!(plan.status.completion_time.is_none());
}

#[test]
fn backoff_limit_zero_fails_on_first_failure() {
    let j = job(json!({"backoffLimit": 0}), json!({"startTime": ts(0)}));
    let plan = plan_job(&j, &[pod("p1", "Failed", Some(1))], t(2), BASE);
    assert_eq!(
        cond(&plan.status, "Failed").unwrap().reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
}

#[test]
fn at_backoff_limit_still_retries() {
    let j = job(json!({"backoffLimit": 1}), json!({"startTime": ts(0)}));
    let plan = plan_job(&j, &[pod("p1", "Failed", Some(1))], t(100), BASE);
    assert!(cond(&plan.status, "Failed").is_none());
    assert_eq!(plan.create_pods, 1);
}

#[test]
fn deadline_kills_pods_then_fails() {
    let j = job(
        json!({"activeDeadlineSeconds": 30}),
        json!({"startTime": ts(0), "active": 1}),
    );
    let pods = [ready_pod("p1")];
    // Before the deadline: requeue for it.
    let plan = plan_job(&j, &pods, t(10), BASE);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(20)));
    assert!(plan.delete_pods.is_empty());
    // At the deadline: FailureTarget, pods deleted, not Failed yet while the pod runs.
    let plan = plan_job(&j, &pods, t(30), BASE);
    assert_eq!(plan.delete_pods, vec!["p1".to_string()]);
    assert_eq!(
        cond(&plan.status, "FailureTarget")
            .unwrap()
            .reason
            .as_deref(),
        Some("DeadlineExceeded")
    );
    assert!(cond(&plan.status, "Failed").is_none());
    // Once the pod is gone: Failed with DeadlineExceeded.
    let mut j2 = j.clone();
    j2.status = Some(plan.status.clone());
    let plan = plan_job(&j2, &[], t(31), BASE);
    let failed = cond(&plan.status, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    assert_eq!(plan.create_pods, 0);
    assert_eq!(plan.status.active, None);
}

#[test]
fn terminating_pods_delay_the_terminal_condition() {
    let j = job(
        json!({"activeDeadlineSeconds": 5}),
        json!({"startTime": ts(0)}),
    );
    let mut p = ready_pod("p1");
    p.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(6)));
    let plan = plan_job(&j, &[p], t(7), BASE);
    assert_eq!(plan.status.terminating, Some(1));
    assert!(cond(&plan.status, "FailureTarget").is_some());
    assert!(cond(&plan.status, "Failed").is_none());
}

#[test]
fn finished_job_is_left_alone_until_ttl() {
    let status = json!({
        "startTime": ts(0), "completionTime": ts(10), "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": ts(10)}]
    });
    let j = job(json!({"ttlSecondsAfterFinished": 60}), status);
    let plan = plan_job(&j, &[pod("p1", "Succeeded", Some(9))], t(20), BASE);
    assert_eq!(plan.create_pods, 0);
    assert!(!plan.delete_job);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(50)));
    assert_eq!(plan.status.succeeded, Some(1));
    let plan = plan_job(&j, &[], t(70), BASE);
    assert!(plan.delete_job);
    // Without a TTL, a finished job stays.
    let status = json!({"startTime": ts(0), "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": ts(10)}]});
    let plan = plan_job(&job(json!({}), status), &[], t(1000), BASE);
    assert!(!plan.delete_job);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn counts_never_go_down_when_pods_disappear() {
    let j = job(
        json!({"backoffLimit": 6}),
        json!({"startTime": ts(0), "failed": 2}),
    );
    let plan = plan_job(&j, &[], t(1000), BASE);
    assert_eq!(plan.status.failed, Some(2));
}

#[test]
fn completions_and_parallelism() {
    let j = job(
        json!({"completions": 3, "parallelism": 2}),
        json!({"startTime": ts(0)}),
    );
    let plan = plan_job(&j, &[], t(1), BASE);
    assert_eq!(plan.create_pods, 2);
    let plan = plan_job(
        &j,
        &[pod("a", "Succeeded", Some(1)), ready_pod("b")],
        t(2),
        BASE,
    );
    assert_eq!(plan.create_pods, 1);
    let plan = plan_job(
        &j,
        &[
            pod("a", "Succeeded", Some(1)),
            pod("b", "Succeeded", Some(2)),
            pod("c", "Succeeded", Some(3)),
        ],
        t(4),
        BASE,
    );
    assert!(cond(&plan.status, "Complete").is_some());
    assert_eq!(plan.status.succeeded, Some(3));
}

#[test]
fn suspended_job_runs_nothing() {
    let j = job(json!({"suspend": true}), json!({}));
    let plan = plan_job(&j, &[ready_pod("p1")], t(1), BASE);
    assert_eq!(plan.create_pods, 0);
    assert_eq!(plan.delete_pods, vec!["p1".to_string()]);
    assert_eq!(
        cond(&plan.status, "Suspended").unwrap().reason.as_deref(),
        Some("JobSuspended")
    );
}

#[test]
fn restart_on_failure_counts_restarts_against_backoff_limit() {
    let mut j = job(json!({"backoffLimit": 2}), json!({"startTime": ts(0)}));
    j.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("OnFailure".into());
    let mut p = ready_pod("p1");
    p.status.as_mut().unwrap().container_statuses = Some(vec![
        serde_json::from_value(json!({
            "name": "main", "image": "busybox", "imageID": "", "ready": true, "restartCount": 2
        }))
        .unwrap(),
    ]);
    let plan = plan_job(&j, &[p], t(5), BASE);
    assert_eq!(
        cond(&plan.status, "FailureTarget")
            .unwrap()
            .reason
            .as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(plan.delete_pods, vec!["p1".to_string()]);
}

#[test]
fn status_patch_clears_absent_counts() {
    let j = job(json!({}), json!({"startTime": ts(0), "active": 1}));
    let plan = plan_job(&j, &[pod("p1", "Succeeded", Some(1))], t(2), BASE);
    let patch = job_status_patch(&plan.status);
    assert_eq!(patch["status"]["active"], serde_json::Value::Null);
    assert!(patch["status"].as_object().unwrap().contains_key("active"));
    assert_eq!(patch["status"]["succeeded"], 1);
}

#[test]
fn plan_is_stable_once_decided() {
    // Re-planning a job whose status is already up to date changes nothing (no update loop).
    let j = job(json!({}), json!({}));
    let plan = plan_job(&j, &[ready_pod("p1")], t(1), BASE);
    let mut j2 = j.clone();
    j2.status = Some(plan.status.clone());
    let again = plan_job(&j2, &[ready_pod("p1")], t(2), BASE);
    assert_eq!(again.status, plan.status);
}

/// A failed pod whose container `main` exited with `code`.
fn failed_with(name: &str, code: i32, finished: i64) -> Pod {
    let mut p = pod(name, "Failed", Some(finished));
    let s = p.status.as_mut().unwrap();
    let c = &mut s.container_statuses.as_mut().unwrap()[0];
    c.state
        .as_mut()
        .unwrap()
        .terminated
        .as_mut()
        .unwrap()
        .exit_code = code;
    p
}

fn failure_policy() -> serde_json::Value {
    json!({"podFailurePolicy": {"rules": [
        {"action": "FailJob",
         "onExitCodes": {"containerName": "main", "operator": "In", "values": [2, 14]}},
        {"action": "Ignore",
         "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]}})
}

#[test]
fn a_fail_job_exit_code_fails_the_job_at_once_without_retry() {
    let mut extra = failure_policy();
    extra["backoffLimit"] = json!(2);
    let j = job(extra, json!({"startTime": ts(0)}));
    let plan = plan_job(&j, &[failed_with("p1", 14, 1)], t(100), BASE);
    assert_eq!(plan.create_pods, 0, "no replacement pod");
    assert_eq!(plan.status.failed, Some(1));
    let failed = cond(&plan.status, "Failed").expect("Failed condition");
    assert_eq!(failed.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        failed.message.as_deref(),
        Some(
            "Container main for pod shop/p1 failed with exit code 14 matching FailJob rule at \
             index 0"
        )
    );
    assert!(cond(&plan.status, "FailureTarget").is_some());
}

#[test]
fn other_exit_codes_and_other_containers_are_retried_as_before() {
    let mut extra = failure_policy();
    extra["backoffLimit"] = json!(2);
    let j = job(extra.clone(), json!({"startTime": ts(0)}));
    // Exit code 12 is not in the rule: counted and replaced.
    let plan = plan_job(&j, &[failed_with("p1", 12, 1)], t(100), BASE);
    assert!(cond(&plan.status, "Failed").is_none());
    assert_eq!(plan.create_pods, 1);
    // The rule names another container: no match.
    extra["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"] = json!("other");
    let j = job(extra, json!({"startTime": ts(0)}));
    let plan = plan_job(&j, &[failed_with("p1", 14, 1)], t(100), BASE);
    assert!(cond(&plan.status, "Failed").is_none());
    assert_eq!(plan.create_pods, 1);
}

#[test]
fn ignored_failures_do_not_count_towards_the_backoff_limit() {
    let mut extra = failure_policy();
    extra["backoffLimit"] = json!(0);
    let j = job(extra, json!({"startTime": ts(0)}));
    let mut evicted = failed_with("p1", 137, 1);
    evicted.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(json!({"type": "DisruptionTarget", "status": "True"})).unwrap(),
    ]);
    let plan = plan_job(&j, &[evicted], t(100), BASE);
    assert!(cond(&plan.status, "Failed").is_none(), "{:?}", plan.status);
    assert_eq!(plan.status.failed, None);
    assert_eq!(plan.create_pods, 1);
}
