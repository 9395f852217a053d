//! The ReplicaSet controller's decisions as pure functions (`pkg/controller/replicaset` and the
//! helpers of `pkg/controller/controller_utils.go` it uses): which objects a controller owns,
//! adopts or releases, the Pod it creates, which pods go first on scale-down, and the status.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::workloads::selector_matches;

/// Upstream's `burstReplicas`: at most this many pods are created or deleted per sync.
pub const BURST_REPLICAS: usize = 500;
/// Annotation ranking pods for deletion on scale-down (lower cost goes first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Whether `labels` match a typed label selector (`LabelSelectorAsSelector`).
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let sel = serde_json::to_value(selector).unwrap_or_default();
    let labels = labels.map(|l| serde_json::to_value(l).unwrap_or_default());
    selector_matches(Some(&sel), labels.as_ref())
}

/// The controller reference of an object (the owner with `controller: true`).
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// What a controller does with an object it lists (`ControllerRefManager.ClaimObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by this owner and selected: it counts.
    Owned,
    /// An orphan the selector matches: set this owner as its controller, then it counts.
    Adopt,
    /// Controlled by this owner but no longer selected: remove the reference.
    Release,
    /// Someone else's, or nothing to do.
    Ignore,
}

/// Decides about one object for an owner with `owner_uid` (`owner_deleting`: the owner has a
/// deletionTimestamp and neither adopts nor releases).
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &LabelSelector,
    meta: &ObjectMeta,
) -> Claim {
    let selected = matches(selector, meta.labels.as_ref());
    match controller_ref(meta) {
        Some(r) if r.uid != owner_uid => Claim::Ignore,
        Some(_) if selected => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !selected || meta.deletion_timestamp.is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// A controller reference to `(api_version, kind, name, uid)` with `blockOwnerDeletion`.
pub fn controller_reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Neither terminal nor being deleted (`controller.IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod became ready (its `Ready` condition's transition time), if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` (`podutil.IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod)
        .is_some_and(|t| t + SignedDuration::from_secs(i64::from(min_ready_seconds)) < now)
}

/// The Pod the ReplicaSet controller creates (`GetPodFromTemplate`): `generateName: <rs>-`, the
/// template's labels, annotations and finalizers, a controller reference to the ReplicaSet.
pub fn pod_for_replica_set(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_reference(
                "apps/v1",
                "ReplicaSet",
                &rs.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

/// What one sync of a ReplicaSet does to its pods.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RsPlan {
    /// Pods to create from the template.
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
}

/// `manageReplicas`: the difference between the active pods the ReplicaSet owns and
/// `spec.replicas`, capped at [`BURST_REPLICAS`]. A ReplicaSet being deleted is left alone.
pub fn plan_replica_set(rs: &ReplicaSet, owned_active: &[Pod], now: Timestamp) -> RsPlan {
    if rs.metadata.deletion_timestamp.is_some() {
        return RsPlan::default();
    }
    let want = replicas(rs).max(0) as usize;
    let have = owned_active.len();
    if have < want {
        RsPlan {
            create: (want - have).min(BURST_REPLICAS),
            delete: Vec::new(),
        }
    } else if have > want {
        RsPlan {
            create: 0,
            delete: pods_to_delete(owned_active, (have - want).min(BURST_REPLICAS), now),
        }
    } else {
        RsPlan::default()
    }
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// `logarithmicRankDiff`: compares how long ago two times were on a log2 scale.
fn log_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    let rank = |t: Timestamp| {
        let d = now.duration_since(t).as_nanos();
        if d > 0 { (d as f64).log2() as i64 } else { -1 }
    };
    rank(t1) - rank(t2)
}

/// `afterOrZero`: `t1` is zero or later than `t2` (zero sorts first).
fn after_or_zero(t1: Option<Timestamp>, t2: Option<Timestamp>) -> bool {
    match (t1, t2) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a > b,
    }
}

/// `ActivePodsWithRanks.Less` with LogarithmicScaleDown (default on in 1.32): the pod to
/// delete first sorts first.
fn delete_first(a: &Pod, b: &Pod, rank_a: usize, rank_b: usize, now: Timestamp) -> Ordering {
    let less = |x: bool| if x { Ordering::Less } else { Ordering::Greater };
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let (na, nb) = (node(a), node(b));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return less(na.is_empty());
    }
    if phase_rank(a) != phase_rank(b) {
        return less(phase_rank(a) < phase_rank(b));
    }
    if is_ready(a) != is_ready(b) {
        return less(!is_ready(a));
    }
    if deletion_cost(a) != deletion_cost(b) {
        return less(deletion_cost(a) < deletion_cost(b));
    }
    if rank_a != rank_b {
        return less(rank_a > rank_b);
    }
    if is_ready(a) && is_ready(b) {
        let (ta, tb) = (ready_since(a), ready_since(b));
        if ta != tb {
            return match (ta, tb) {
                (Some(x), Some(y)) => match log_rank_diff(x, y, now) {
                    0 => a.metadata.uid.cmp(&b.metadata.uid),
                    d => less(d < 0),
                },
                _ => less(after_or_zero(ta, tb)),
            };
        }
    }
    if max_restarts(a) != max_restarts(b) {
        return less(max_restarts(a) > max_restarts(b));
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let (ca, cb) = (created(a), created(b));
    if ca != cb {
        return match (ca, cb) {
            (Some(x), Some(y)) => match log_rank_diff(x, y, now) {
                0 => a.metadata.uid.cmp(&b.metadata.uid),
                d => less(d < 0),
            },
            _ => less(after_or_zero(ca, cb)),
        };
    }
    Ordering::Equal
}

/// `getPodsToDelete`: the `n` pods to delete first — unscheduled before scheduled, pending
/// before running, not ready before ready, lower `pod-deletion-cost` first, doubled-up nodes
/// first, ready for less time first, more restarts first, newer first.
pub fn pods_to_delete(pods: &[Pod], n: usize, now: Timestamp) -> Vec<String> {
    // Rank: how many ready pods of this set share the pod's node.
    let mut on_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.iter().filter(|p| is_ready(p)) {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *on_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| on_node.get(n).copied())
            .unwrap_or(0)
    };
    let mut ranked: Vec<(&Pod, usize)> = pods.iter().map(|p| (p, rank(p))).collect();
    ranked.sort_by(|(a, ra), (b, rb)| delete_first(a, b, *ra, *rb, now));
    ranked
        .into_iter()
        .take(n)
        .filter_map(|(p, _)| p.metadata.name.clone())
        .collect()
}

/// A failure of `manageReplicas` for the `ReplicaFailure` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ManageError {
    /// `FailedCreate` or `FailedDelete`.
    pub reason: String,
    /// The error.
    pub message: String,
}

/// `calculateStatus` + `updateReplicaSetStatus`: counts of the owned active pods, the
/// `ReplicaFailure` condition, `observedGeneration`.
pub fn rs_status(
    rs: &ReplicaSet,
    owned_active: &[Pod],
    manage_error: Option<&ManageError>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let template_labels = rs
        .spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let fully_labeled = owned_active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count() as i32;
    let ready = owned_active.iter().filter(|p| is_ready(p)).count() as i32;
    let available = owned_active
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count() as i32;
    let mut conditions = status.conditions.take().unwrap_or_default();
    let is_failure = |c: &ReplicaSetCondition| c.type_.as_deref() == Some("ReplicaFailure");
    let has_failure = conditions.iter().any(is_failure);
    match manage_error {
        Some(e) if !has_failure => conditions.push(ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some(e.reason.clone()),
            message: Some(e.message.clone()),
            last_transition_time: Some(Time(now)),
        }),
        None if has_failure => conditions.retain(|c| !is_failure(c)),
        _ => {}
    }
    let nz = |n: i32| (n != 0).then_some(n);
    ReplicaSetStatus {
        replicas: owned_active.len() as i32,
        fully_labeled_replicas: nz(fully_labeled),
        ready_replicas: nz(ready),
        available_replicas: nz(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// When to look again for pods that are ready but not yet available (`minReadySeconds`).
pub fn availability_recheck(
    rs: &ReplicaSet,
    owned_active: &[Pod],
    now: Timestamp,
) -> Option<Duration> {
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    owned_active
        .iter()
        .filter(|p| is_ready(p) && !is_available(p, min_ready, now))
        .filter_map(ready_since)
        .map(|t| {
            let at = t + SignedDuration::from_secs(i64::from(min_ready) + 1);
            Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
        })
        .min()
}
