//! ReplicaSet and Deployment controller decisions (pure): claiming, pod creation and deletion
//! order, ReplicaSet status, rolling/recreate steps, scaling, revisions, history, conditions.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_sim::runner::deployplan::{
    DeployPlan, RsAction, equal_ignore_hash, fenceposts, plan_deployment, pod_template_hash,
    revision,
};
use kube_sim::runner::rsplan::{
    Claim, ManageError, availability_recheck, claim, plan_replica_set, pod_for_replica_set,
    pods_to_delete, rs_status,
};
use serde_json::{Value, json};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn ts(secs: i64) -> String {
    t(secs).to_string()
}

fn template(version: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": format!("web:{version}")}]},
    })
}

fn deployment(replicas: i32, strategy: Value, version: &str, status: Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "d-uid", "generation": 1,
                     "annotations": {"team": "a"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": template(version),
        },
        "status": status,
    }))
    .unwrap()
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// A ReplicaSet of the Deployment for `version`, with `spec` replicas and `available` of them
/// available, created at `created`, of revision `rev`.
fn rs(
    version: &str,
    spec: i32,
    available: i32,
    created: i64,
    rev: u32,
    desired: i32,
) -> ReplicaSet {
    let d = deployment(1, json!({}), version, json!({}));
    let hash = pod_template_hash(&d.spec.template, None);
    let mut tmpl = template(version);
    tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("web-{hash}"), "namespace": "shop", "uid": format!("rs-{version}"),
            "generation": 1, "resourceVersion": "7",
            "creationTimestamp": ts(created),
            "labels": {"app": "web", "pod-template-hash": hash},
            "annotations": {
                "deployment.kubernetes.io/revision": rev.to_string(),
                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                "deployment.kubernetes.io/max-replicas": (desired + 1).to_string(),
                "team": "a",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": "d-uid", "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "replicas": spec,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
            "template": tmpl,
        },
        "status": {"replicas": spec, "readyReplicas": available, "availableReplicas": available,
                   "observedGeneration": 1},
    }))
    .unwrap()
}

fn updates(plan: &DeployPlan) -> Vec<(String, i32)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            RsAction::Update { rs, .. } | RsAction::Create { rs, .. } => {
                Some((rs.metadata.name.clone().unwrap(), rs.spec.replicas.unwrap()))
            }
            RsAction::Delete { .. } => None,
        })
        .collect()
}

fn events(plan: &DeployPlan) -> Vec<String> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            RsAction::Update { event, .. } | RsAction::Create { event, .. } => event.clone(),
            RsAction::Delete { .. } => None,
        })
        .collect()
}

fn cond(plan: &DeployPlan, type_: &str) -> Option<(String, String, String)> {
    let d = plan.deployment.as_ref()?;
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
        .map(|c| {
            (
                c.status.clone().unwrap(),
                c.reason.clone().unwrap(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn annotation(meta: &kube::api::ObjectMeta, k: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(k).cloned()
}

#[test]
fn fenceposts_round_surge_up_and_unavailable_down() {
    let d = deployment(2, rolling(json!("25%"), json!("25%")), "1", json!({}));
    assert_eq!(fenceposts(&d), (1, 0));
    let d = deployment(10, rolling(json!("25%"), json!("25%")), "1", json!({}));
    assert_eq!(fenceposts(&d), (3, 2));
    let d = deployment(3, rolling(json!(0), json!("10%")), "1", json!({}));
    assert_eq!(fenceposts(&d), (0, 1), "never both zero");
}

#[test]
fn pod_template_hash_is_stable_and_moves_with_the_collision_count() {
    let d = deployment(1, json!({}), "1", json!({}));
    let h = pod_template_hash(&d.spec.template, None);
    assert_eq!(h, pod_template_hash(&d.spec.template, None));
    assert!(
        h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{h}"
    );
    assert_ne!(h, pod_template_hash(&d.spec.template, Some(1)));
    let other = deployment(1, json!({}), "2", json!({}));
    assert_ne!(h, pod_template_hash(&other.spec.template, None));
    let r = rs("1", 1, 1, 0, 1, 1);
    assert!(equal_ignore_hash(
        r.spec.template.as_ref().unwrap(),
        &d.spec.template
    ));
    assert!(!equal_ignore_hash(
        r.spec.template.as_ref().unwrap(),
        &other.spec.template
    ));
}

#[test]
fn a_new_deployment_creates_its_first_replica_set() {
    let d = deployment(2, rolling(json!("25%"), json!("25%")), "1", json!({}));
    let plan = plan_deployment(&d, &[], &[], t(0));
    let [RsAction::Create { rs, event }] = plan.actions.as_slice() else {
        panic!("{:?}", plan.actions)
    };
    let hash = pod_template_hash(&d.spec.template, None);
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(rs.spec.replicas, Some(2));
    assert_eq!(
        rs.spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    let labels = rs
        .spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(labels["pod-template-hash"], hash);
    assert_eq!(labels["app"], "web");
    assert_eq!(
        annotation(&rs.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );
    assert_eq!(
        annotation(&rs.metadata, "deployment.kubernetes.io/desired-replicas").as_deref(),
        Some("2")
    );
    assert_eq!(
        annotation(&rs.metadata, "deployment.kubernetes.io/max-replicas").as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(&rs.metadata, "team").as_deref(),
        Some("a"),
        "deployment annotations are copied"
    );
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.uid.as_str(),
            owner.controller,
            owner.block_owner_deletion
        ),
        ("d-uid", Some(true), Some(true))
    );
    assert_eq!(
        event.as_deref(),
        Some(format!("Scaled up replica set web-{hash} from 0 to 2").as_str())
    );
    let new_d = plan.deployment.as_ref().unwrap();
    assert_eq!(
        annotation(&new_d.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );
    assert_eq!(
        cond(&plan, "Progressing"),
        Some((
            "True".into(),
            "NewReplicaSetCreated".into(),
            format!("Created new replica set \"web-{hash}\"")
        ))
    );
    assert_eq!(
        cond(&plan, "Available").map(|c| (c.0, c.1)),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
    let st = new_d.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.unavailable_replicas, Some(2));
}

#[test]
fn rolling_update_surges_then_scales_old_down_as_new_pods_become_available() {
    // 2 replicas, maxSurge 1, maxUnavailable 0; revision 1 fully available.
    let status = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
    let d = deployment(2, rolling(json!("25%"), json!("25%")), "2", status);
    let old = rs("1", 2, 2, 0, 1, 2);
    let plan = plan_deployment(&d, std::slice::from_ref(&old), &[], t(10));
    let new_name = format!("web-{}", pod_template_hash(&d.spec.template, None));
    assert_eq!(
        updates(&plan),
        [(new_name.clone(), 1)],
        "one surge pod, old untouched"
    );
    assert_eq!(
        annotation(
            &plan.deployment.as_ref().unwrap().metadata,
            "deployment.kubernetes.io/revision"
        )
        .as_deref(),
        Some("2")
    );

    // The new pod is available: one old pod may go.
    let new = rs("2", 1, 1, 5, 2, 2);
    let plan = plan_deployment(&d, &[old.clone(), new.clone()], &[], t(20));
    assert_eq!(updates(&plan), [(old.metadata.name.clone().unwrap(), 1)]);
    assert_eq!(
        events(&plan),
        [format!(
            "Scaled down replica set {} from 2 to 1",
            old.metadata.name.as_deref().unwrap()
        )]
    );
    assert_eq!(
        cond(&plan, "Progressing").map(|c| (c.0, c.1)),
        Some(("True".into(), "ReplicaSetUpdated".into()))
    );

    // Not yet available: nothing moves (availability would drop below 2).
    let new_unready = rs("2", 1, 0, 5, 2, 2);
    let plan = plan_deployment(&d, &[old.clone(), new_unready], &[], t(20));
    assert_eq!(updates(&plan), Vec::<(String, i32)>::new());

    // Old at 1, new at 1 available: the new one grows to 2.
    let old1 = rs("1", 1, 1, 0, 1, 2);
    let plan = plan_deployment(&d, &[old1.clone(), new.clone()], &[], t(30));
    assert_eq!(updates(&plan), [(new.metadata.name.clone().unwrap(), 2)]);

    // Both new pods available: the last old pod goes, then the rollout is complete.
    let new2 = rs("2", 2, 2, 5, 2, 2);
    let plan = plan_deployment(&d, &[old1, new2.clone()], &[], t(40));
    assert_eq!(updates(&plan), [(old.metadata.name.clone().unwrap(), 0)]);
    let old0 = rs("1", 0, 0, 0, 1, 2);
    let mut d_done = d.clone();
    d_done.status = plan.deployment.as_ref().unwrap().status.clone();
    let plan = plan_deployment(&d_done, &[old0, new2.clone()], &[], t(50));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(
        cond(&plan, "Progressing"),
        Some((
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!(
                "ReplicaSet \"{}\" has successfully progressed.",
                new2.metadata.name.as_deref().unwrap()
            )
        ))
    );
    assert_eq!(
        cond(&plan, "Available").map(|c| (c.0, c.1)),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    let st = plan.deployment.unwrap().status.unwrap();
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
        (Some(2), Some(2), Some(2), None)
    );
}

#[test]
fn max_unavailable_without_surge_scales_old_down_first() {
    let status = json!({"observedGeneration": 1, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4});
    let d = deployment(4, rolling(json!(0), json!(1)), "2", status);
    let old = rs("1", 4, 4, 0, 1, 4);
    let plan = plan_deployment(&d, std::slice::from_ref(&old), &[], t(10));
    let new_name = format!("web-{}", pod_template_hash(&d.spec.template, None));
    assert_eq!(
        updates(&plan),
        [(new_name, 0), (old.metadata.name.clone().unwrap(), 3)],
        "the new set starts empty; one old pod may be unavailable"
    );
}

#[test]
fn unhealthy_old_pods_are_scaled_down_first() {
    // Old revision has 2 of 3 available; maxUnavailable 1, no surge: the unhealthy one goes.
    let status = json!({"observedGeneration": 1, "replicas": 3});
    let d = deployment(3, rolling(json!(0), json!(1)), "2", status);
    let old = rs("1", 3, 2, 0, 1, 3);
    let new = rs("2", 0, 0, 5, 2, 3);
    let plan = plan_deployment(&d, &[old.clone(), new], &[], t(10));
    assert_eq!(updates(&plan), [(old.metadata.name.clone().unwrap(), 2)]);
}

fn pod_of(rs_uid: &str, name: &str, phase: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x",
                                          "uid": rs_uid, "controller": true}]},
        "status": {"phase": phase},
    }))
    .unwrap()
}

#[test]
fn recreate_scales_old_to_zero_and_waits_for_its_pods() {
    let status = json!({"observedGeneration": 1, "replicas": 2, "availableReplicas": 2});
    let d = deployment(2, json!({"type": "Recreate"}), "2", status);
    let old = rs("1", 2, 2, 0, 1, 2);
    let plan = plan_deployment(&d, std::slice::from_ref(&old), &[], t(10));
    assert_eq!(
        updates(&plan),
        [(old.metadata.name.clone().unwrap(), 0)],
        "no new set yet"
    );

    // Scaled to 0 but a pod is still terminating: wait (and look again).
    let old0 = rs("1", 0, 0, 0, 1, 2);
    let terminating = pod_of("rs-1", "web-old-1", "Running");
    let plan = plan_deployment(&d, std::slice::from_ref(&old0), &[terminating], t(11));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(1)));
    assert_eq!(
        cond(&plan, "Available").map(|c| (c.0, c.1)),
        Some(("False".into(), "MinimumReplicasUnavailable".into())),
        "Recreate allows no unavailability"
    );

    // Old pods gone (a failed one does not count): the new set gets every replica at once.
    let failed = pod_of("rs-1", "web-old-2", "Failed");
    let plan = plan_deployment(&d, std::slice::from_ref(&old0), &[failed], t(12));
    let new_name = format!("web-{}", pod_template_hash(&d.spec.template, None));
    assert_eq!(updates(&plan), [(new_name, 2)]);
}

#[test]
fn changing_replicas_is_a_scaling_event_not_a_rollout() {
    let status = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
    let mut d = deployment(3, rolling(json!("25%"), json!("25%")), "1", status);
    d.metadata.generation = Some(2);
    let cur = rs("1", 2, 2, 0, 1, 2);
    let plan = plan_deployment(&d, std::slice::from_ref(&cur), &[], t(10));
    let [RsAction::Update { rs: scaled, event }] = plan.actions.as_slice() else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(scaled.spec.replicas, Some(3));
    assert_eq!(
        annotation(
            &scaled.metadata,
            "deployment.kubernetes.io/desired-replicas"
        )
        .as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(&scaled.metadata, "deployment.kubernetes.io/max-replicas").as_deref(),
        Some("4")
    );
    assert_eq!(
        event.as_deref(),
        Some(
            format!(
                "Scaled up replica set {} from 2 to 3",
                cur.metadata.name.as_deref().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(
        plan.deployment.unwrap().status.unwrap().observed_generation,
        Some(2)
    );
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    // 2 replicas (max 3) mid-rollout: old 2, new 1. Scaled to 4 (max 5): +2 shared 1/1.
    let status = json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2});
    let d = deployment(4, rolling(json!("25%"), json!("25%")), "2", status);
    let old = rs("1", 2, 2, 0, 1, 2);
    let new = rs("2", 1, 0, 5, 2, 2);
    let plan = plan_deployment(&d, &[old.clone(), new.clone()], &[], t(10));
    let mut got = updates(&plan);
    got.sort();
    let mut want = vec![
        (old.metadata.name.clone().unwrap(), 3),
        (new.metadata.name.clone().unwrap(), 2),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let status = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    let mut d = deployment(1, rolling(json!(1), json!(0)), "4", status);
    d.spec.revision_history_limit = Some(1);
    let sets = [
        rs("1", 0, 0, 0, 1, 1),
        rs("2", 0, 0, 1, 2, 1),
        rs("3", 0, 0, 2, 3, 1),
        rs("4", 1, 1, 3, 4, 1),
    ];
    let plan = plan_deployment(&d, &sets, &[], t(10));
    let deleted: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            RsAction::Delete { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        [
            sets[0].metadata.name.clone().unwrap(),
            sets[1].metadata.name.clone().unwrap()
        ]
    );
}

#[test]
fn rollback_reuses_the_old_replica_set_with_a_new_revision() {
    let status = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    let d = deployment(1, rolling(json!(1), json!(0)), "1", status);
    let v1 = rs("1", 0, 0, 0, 1, 1);
    let v2 = rs("2", 1, 1, 1, 2, 1);
    let plan = plan_deployment(&d, &[v1.clone(), v2], &[], t(10));
    let RsAction::Update { rs: reused, .. } = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    assert_eq!(reused.metadata.name, v1.metadata.name);
    assert_eq!(revision(reused), 3);
    assert_eq!(
        annotation(
            &reused.metadata,
            "deployment.kubernetes.io/revision-history"
        )
        .as_deref(),
        Some("1")
    );
}

#[test]
fn a_stalled_rollout_times_out_after_the_progress_deadline() {
    let status = json!({
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1, "unavailableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "x", "lastUpdateTime": ts(0), "lastTransitionTime": ts(0)},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
             "message": "x", "lastUpdateTime": ts(0), "lastTransitionTime": ts(0)},
        ],
    });
    let mut d = deployment(1, rolling(json!(1), json!(0)), "2", status);
    d.spec.progress_deadline_seconds = Some(30);
    d.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("deployment.kubernetes.io/revision".into(), "2".into());
    let old = rs("1", 1, 1, 0, 1, 1);
    let new = rs("2", 1, 0, 5, 2, 1);
    let plan = plan_deployment(&d, &[old.clone(), new.clone()], &[], t(10));
    assert_eq!(
        plan.deployment.as_ref().map(|d| d.status.clone()),
        None,
        "nothing changed yet"
    );
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(21)),
        "looks again at the deadline"
    );
    let plan = plan_deployment(&d, &[old, new.clone()], &[], t(40));
    assert_eq!(
        cond(&plan, "Progressing"),
        Some((
            "False".into(),
            "ProgressDeadlineExceeded".into(),
            format!(
                "ReplicaSet \"{}\" has timed out progressing.",
                new.metadata.name.as_deref().unwrap()
            )
        ))
    );
}

#[test]
fn a_paused_deployment_does_not_roll() {
    let status = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    let mut d = deployment(1, rolling(json!(1), json!(0)), "2", status);
    d.spec.paused = Some(true);
    let old = rs("1", 1, 1, 0, 1, 1);
    let plan = plan_deployment(&d, &[old], &[], t(10));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(
        cond(&plan, "Progressing"),
        Some((
            "Unknown".into(),
            "DeploymentPaused".into(),
            "Deployment is paused".into()
        ))
    );
}

#[test]
fn a_hash_collision_bumps_the_collision_count() {
    let d = deployment(1, json!({}), "2", json!({}));
    let hash = pod_template_hash(&d.spec.template, None);
    // An owned ReplicaSet with the new name but another template.
    let mut other = rs("1", 0, 0, 0, 1, 1);
    other.metadata.name = Some(format!("web-{hash}"));
    let plan = plan_deployment(&d, &[other], &[], t(10));
    assert!(plan.actions.is_empty());
    assert_eq!(
        plan.deployment.unwrap().status.unwrap().collision_count,
        Some(1)
    );
    assert_eq!(plan.requeue_after, Some(Duration::ZERO));
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet controller.

fn rset(replicas: i32, min_ready: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-abc", "namespace": "shop", "uid": "rs-uid", "generation": 3},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web", "tier": "x"}, "annotations": {"a": "b"}},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
        },
    }))
    .unwrap()
}

fn rpod(name: &str, opts: Value) -> Pod {
    let get = |k: &str| opts.get(k).cloned();
    let mut status = json!({"phase": get("phase").unwrap_or(json!("Running"))});
    if let Some(since) = get("ready").and_then(|v| v.as_i64()) {
        status["conditions"] =
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": ts(since)}]);
    }
    if let Some(r) = get("restarts") {
        status["containerStatuses"] = json!([{"name": "web", "image": "web:1", "imageID": "", "ready": true, "restartCount": r}]);
    }
    let mut meta = json!({
        "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
        "labels": get("labels").unwrap_or(json!({"app": "web", "tier": "x"})),
        "creationTimestamp": ts(get("created").and_then(|v| v.as_i64()).unwrap_or(0)),
    });
    if let Some(cost) = get("cost") {
        meta["annotations"] = json!({"controller.kubernetes.io/pod-deletion-cost": cost});
    }
    if get("orphan").is_none() {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc",
                                         "uid": get("owner").unwrap_or(json!("rs-uid")), "controller": true}]);
    }
    let node = if get("unscheduled").is_some() {
        Value::Null
    } else {
        json!("sim-node")
    };
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "web", "image": "web:1"}]},
        "status": status,
    }))
    .unwrap()
}

#[test]
fn claiming_owns_adopts_releases_and_ignores() {
    let r = rset(1, 0);
    let sel = &r.spec.selector;
    assert_eq!(
        claim("rs-uid", false, sel, &rpod("a", json!({})).metadata),
        Claim::Owned
    );
    assert_eq!(
        claim(
            "rs-uid",
            false,
            sel,
            &rpod("b", json!({"orphan": true})).metadata
        ),
        Claim::Adopt
    );
    assert_eq!(
        claim(
            "rs-uid",
            true,
            sel,
            &rpod("b", json!({"orphan": true})).metadata
        ),
        Claim::Ignore
    );
    let moved = rpod("c", json!({"labels": {"app": "other"}}));
    assert_eq!(claim("rs-uid", false, sel, &moved.metadata), Claim::Release);
    assert_eq!(
        claim(
            "rs-uid",
            false,
            sel,
            &rpod("d", json!({"owner": "someone"})).metadata
        ),
        Claim::Ignore
    );
}

#[test]
fn replica_set_pods_come_from_the_template() {
    let p = pod_for_replica_set(&rset(1, 0));
    assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["tier"], "x");
    assert_eq!(p.metadata.annotations.as_ref().unwrap()["a"], "b");
    let o = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            o.kind.as_str(),
            o.uid.as_str(),
            o.controller,
            o.block_owner_deletion
        ),
        ("ReplicaSet", "rs-uid", Some(true), Some(true))
    );
}

#[test]
fn replica_sets_create_and_delete_the_difference() {
    let r = rset(3, 0);
    let pods = [rpod("a", json!({}))];
    let plan = plan_replica_set(&r, &pods, t(0));
    assert_eq!((plan.create, plan.delete.len()), (2, 0));
    let r1 = rset(1, 0);
    let pods = [
        rpod("a", json!({"ready": 0})),
        rpod("b", json!({"ready": 0})),
        rpod("c", json!({})),
    ];
    let plan = plan_replica_set(&r1, &pods, t(100));
    assert_eq!(
        plan.delete,
        ["c", "a"],
        "not ready first, then the first of equals"
    );
    let mut deleting = rset(0, 0);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(0)));
    assert_eq!(plan_replica_set(&deleting, &pods, t(0)), Default::default());
}

#[test]
fn scale_down_deletes_the_least_valuable_pods_first() {
    let now = t(10_000);
    let pods = [
        rpod("old-ready", json!({"ready": 0, "created": 0})),
        rpod("new-ready", json!({"ready": 9_000, "created": 8_000})),
        rpod("not-ready", json!({"created": 0})),
        rpod("pending", json!({"phase": "Pending"})),
        rpod(
            "unscheduled",
            json!({"phase": "Pending", "unscheduled": true}),
        ),
        rpod("costly-not-ready", json!({"cost": "100"})),
        rpod(
            "restarting",
            json!({"ready": 0, "created": 0, "restarts": 5}),
        ),
    ];
    assert_eq!(
        pods_to_delete(&pods, 7, now),
        [
            "unscheduled",
            "pending",
            "not-ready",
            "costly-not-ready",
            "new-ready",
            "restarting",
            "old-ready"
        ]
    );
}

#[test]
fn replica_set_status_counts_ready_available_and_failures() {
    let r = rset(3, 10);
    let now = t(100);
    let pods = [
        rpod("a", json!({"ready": 0})),
        rpod("b", json!({"ready": 95})),
        rpod("c", json!({"labels": {"app": "web"}})),
    ];
    let st = rs_status(&r, &pods, None, now);
    assert_eq!(st.replicas, 3);
    assert_eq!(st.fully_labeled_replicas, Some(2));
    assert_eq!(st.ready_replicas, Some(2));
    assert_eq!(
        st.available_replicas,
        Some(1),
        "b is ready for 5 s of the 10 needed"
    );
    assert_eq!(st.observed_generation, Some(3));
    assert_eq!(st.conditions, None);
    assert_eq!(
        availability_recheck(&r, &pods, now),
        Some(Duration::from_secs(6))
    );
    let err = ManageError {
        reason: "FailedCreate".into(),
        message: "pods \"x\" is forbidden".into(),
    };
    let mut failing = r.clone();
    failing.status = Some(rs_status(&r, &[], Some(&err), now));
    let c = &failing
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (c.type_.as_deref(), c.status.as_deref(), c.reason.as_deref()),
        (Some("ReplicaFailure"), Some("True"), Some("FailedCreate"))
    );
    assert_eq!(
        rs_status(&failing, &[], None, now).conditions,
        None,
        "cleared after success"
    );
    assert_eq!(
        rs_status(&rset(1, 0), &[], None, now).available_replicas,
        None
    );
}
