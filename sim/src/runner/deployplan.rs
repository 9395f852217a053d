//! The Deployment controller's decisions as pure functions, after `pkg/controller/deployment`
//! of Kubernetes 1.32 (`sync.go`, `rolling.go`, `recreate.go`, `progress.go` and
//! `util/deployment_util.go`): the ReplicaSet per pod-template revision, scaling under
//! `maxSurge`/`maxUnavailable`, `Recreate`, proportional scaling, history cleanup, and the
//! status with its `Available`/`Progressing` conditions.
//!
//! [`plan_deployment`] plays one sync: given the Deployment, the ReplicaSets it owns and their
//! pods, it returns the ReplicaSet writes in order (the caller performs them and stops at the
//! first failure) and the Deployment (status and revision annotation) to write through
//! `/status`. Like upstream, one sync does one step (scale up, or scale down) and the next sync
//! is triggered by the ReplicaSet changes it causes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::rsplan::{controller_ref, controller_reference};
use crate::workloads::{POD_TEMPLATE_HASH_LABEL, scaled_value};

/// The revision of a ReplicaSet (and the Deployment's current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (rollbacks).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const MAX_REV_HISTORY_CHARS: usize = 2000;

/// `Progressing` reasons.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
/// `Progressing` reason when an existing ReplicaSet matches the template.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// `Progressing` reason of a finished rollout.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// `Progressing` reason while pods move.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// `Progressing` reason (status `False`) after `progressDeadlineSeconds` without progress.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// `Progressing` reason (status `False`) when the new ReplicaSet cannot be created.
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";

/// A write the Deployment controller makes to a ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub enum RsAction {
    /// Create the new ReplicaSet. `event`: the `ScalingReplicaSet` note, if it has replicas.
    Create {
        /// The ReplicaSet.
        rs: ReplicaSet,
        /// Event note.
        event: Option<String>,
    },
    /// Replace a ReplicaSet (replicas, annotations, minReadySeconds).
    Update {
        /// The ReplicaSet as it should be.
        rs: ReplicaSet,
        /// `ScalingReplicaSet` event note when it was scaled.
        event: Option<String>,
    },
    /// Delete an old ReplicaSet beyond `revisionHistoryLimit`.
    Delete {
        /// Its name.
        name: String,
    },
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeployPlan {
    /// ReplicaSet writes, in order.
    pub actions: Vec<RsAction>,
    /// The Deployment with its new status and annotations, when they changed.
    pub deployment: Option<Deployment>,
    /// When to sync again without a change (progress deadline, old pods terminating).
    pub requeue_after: Option<Duration>,
}

fn rs_name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The revision annotation of a ReplicaSet (0 when missing or not a number).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn d_replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn int_or_string(v: Option<&IntOrString>) -> Option<Value> {
    v.map(|v| match v {
        IntOrString::Int(i) => Value::from(*i),
        IntOrString::String(s) => Value::from(s.clone()),
    })
}

/// `ResolveFenceposts`: maxSurge rounded up, maxUnavailable rounded down, never both 0.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = i64::from(d_replicas(d));
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = int_or_string(ru.and_then(|r| r.max_surge.as_ref()))
        .and_then(|v| scaled_value(&v, desired, true))
        .unwrap_or(0) as i32;
    let mut unavailable = int_or_string(ru.and_then(|r| r.max_unavailable.as_ref()))
        .and_then(|v| scaled_value(&v, desired, false))
        .unwrap_or(0) as i32;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// `MaxSurge`: 0 unless RollingUpdate.
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

/// `MaxUnavailable`: 0 unless RollingUpdate with replicas, at most `replicas`.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || d_replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(d_replicas(d))
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .progress_deadline_seconds
        .is_some_and(|s| s != i32::MAX)
}

/// `ComputeHash`: FNV-32a of the template (here its JSON form; upstream hashes Go's dump of
/// the struct, so values differ) and the collision count, as `rand.SafeEncodeString` of the
/// decimal number.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        feed(&bytes);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// Drops nulls and empty lists/maps (Go's semantic equality treats nil and empty alike).
fn normalized(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalized(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalized).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// `EqualIgnoreHash`: the templates are equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(POD_TEMPLATE_HASH_LABEL);
        }
        normalized(serde_json::to_value(t).unwrap_or_default())
    };
    strip(a) == strip(b)
}

fn template_of(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec.template.clone().unwrap_or_default()
}

fn creation(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// `ReplicaSetsByCreationTimestamp` (a ReplicaSet not created yet is the newest).
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    let key = |r: &ReplicaSet| (creation(r).is_none(), creation(r), rs_name(r));
    key(a).cmp(&key(b))
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some(type_))
}

/// `SetDeploymentCondition`: same status and reason → unchanged; same status → keeps the
/// transition time; the condition moves to the end.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let type_ = cond.type_.clone().unwrap_or_default();
    if let Some(cur) = get_condition(status, &type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_.as_deref() != Some(type_));
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

fn set_annotation(meta: &mut ObjectMeta, key: &str, value: String) -> bool {
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    if a.get(key) == Some(&value) {
        return false;
    }
    a.insert(key.into(), value);
    true
}

/// `SetReplicasAnnotations`.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = set_annotation(&mut rs.metadata, DESIRED_REPLICAS, desired.to_string());
    let b = set_annotation(&mut rs.metadata, MAX_REPLICAS, max.to_string());
    a || b
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS) != Some(max.to_string().as_str())
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// `SetNewReplicaSetAnnotations`: the Deployment's annotations (but the controller's own and
/// kubectl's last-applied), the revision (never lowered; a re-used ReplicaSet remembers its
/// earlier revisions), and for a new ReplicaSet the replicas annotations.
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) {
            continue;
        }
        changed |= set_annotation(&mut rs.metadata, k, v.clone());
    }
    let old = annotation(&rs.metadata, REVISION).map(str::to_string);
    let old_int = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_int < new_revision {
        set_annotation(&mut rs.metadata, REVISION, new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotation(&rs.metadata, REVISION_HISTORY)
                .unwrap_or("")
                .to_string();
            if history.is_empty() {
                set_annotation(&mut rs.metadata, REVISION_HISTORY, old);
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < revs.len() {
                    total -= revs[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    revs = revs[start..].to_vec();
                    revs.push(&old);
                    let joined = revs.join(",");
                    set_annotation(&mut rs.metadata, REVISION_HISTORY, joined);
                }
            }
        }
    }
    if !exists {
        let r = d_replicas(d);
        changed |= set_replicas_annotations(rs, r, r + max_surge(d));
    }
    changed
}

/// `DeploymentComplete`.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = d_replicas(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, ready or available pods, or fewer old ones.
fn deployment_progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let g = |x: Option<i32>| x.unwrap_or(0);
    let new_old = g(s.replicas) - g(s.updated_replicas);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    g(s.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(s.ready_replicas) > g(old.ready_replicas)
        || g(s.available_replicas) > g(old.available_replicas)
}

/// `DeploymentTimedOut`.
fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = get_condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| {
            let deadline = i64::from(d.spec.progress_deadline_seconds.unwrap_or(600));
            t.0 + SignedDuration::from_secs(deadline) < now
        }),
    }
}

/// `calculateStatus`: counts over the ReplicaSets and the `Available` condition.
fn calculate_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|r| available_replicas(r)).sum();
    let total: i32 = all.iter().map(|r| spec_replicas(r)).sum();
    let unavailable = (total - available).max(0);
    let nz = |n: i32| (n != 0).then_some(n);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(all.iter().map(|r| status_replicas(r)).sum()),
        updated_replicas: nz(new.map_or(0, status_replicas)),
        ready_replicas: nz(all.iter().map(|r| ready_replicas(r)).sum()),
        available_replicas: nz(available),
        unavailable_replicas: nz(unavailable),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= d_replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

struct Planner<'a> {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    pods: &'a [Pod],
    now: Timestamp,
    actions: Vec<RsAction>,
    requeue: Option<Duration>,
    /// A hash collision was found: only the collision count is written this sync.
    collided: bool,
}

impl Planner<'_> {
    fn get(&self, name: &str) -> &ReplicaSet {
        self.rss
            .iter()
            .find(|r| rs_name(r) == name)
            .expect("a ReplicaSet of the working set")
    }

    fn put(&mut self, rs: ReplicaSet, event: Option<String>) {
        let name = rs_name(&rs);
        if let Some(slot) = self.rss.iter_mut().find(|r| rs_name(r) == name) {
            *slot = rs.clone();
        }
        self.actions.push(RsAction::Update { rs, event });
    }

    fn refs<'b>(&'b self, names: &[String]) -> Vec<&'b ReplicaSet> {
        names.iter().map(|n| self.get(n)).collect()
    }

    fn all_refs(&self, new: Option<&String>, old: &[String]) -> Vec<&ReplicaSet> {
        let mut v = self.refs(old);
        if let Some(n) = new {
            v.push(self.get(n));
        }
        v
    }

    fn sorted_by_creation(&self, names: &[String]) -> Vec<String> {
        let mut v: Vec<&ReplicaSet> = self.refs(names);
        v.sort_by(|a, b| by_creation(a, b));
        v.into_iter().map(rs_name).collect()
    }

    fn active(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|n| spec_replicas(self.get(n)) > 0)
            .cloned()
            .collect()
    }

    /// `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's.
    fn find_new(&self) -> Option<String> {
        let mut v: Vec<&ReplicaSet> = self.rss.iter().collect();
        v.sort_by(|a, b| by_creation(a, b));
        v.into_iter()
            .find(|r| equal_ignore_hash(&template_of(r), &self.d.spec.template))
            .map(rs_name)
    }

    /// `getAllReplicaSetsAndSyncRevision` (and `getNewReplicaSet`): the new ReplicaSet (created
    /// when `create` and missing) and all old ones.
    fn all_and_sync_revision(&mut self, create: bool) -> (Option<String>, Vec<String>) {
        let new = self.find_new();
        let old: Vec<String> = self
            .rss
            .iter()
            .map(rs_name)
            .filter(|n| Some(n) != new.as_ref())
            .collect();
        let max_old = old.iter().map(|n| revision(self.get(n))).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(n) = new {
            let mut rs = self.get(&n).clone();
            let annotated = set_new_rs_annotations(&self.d, &mut rs, new_revision, true);
            let min_ready = self.d.spec.min_ready_seconds.unwrap_or(0);
            if annotated || rs.spec.min_ready_seconds.unwrap_or(0) != min_ready {
                rs.spec.min_ready_seconds = self.d.spec.min_ready_seconds;
                self.put(rs, None);
                return (Some(n), old);
            }
            let rev = annotation(&rs.metadata, REVISION).unwrap_or("").to_string();
            set_annotation(&mut self.d.metadata, REVISION, rev);
            if has_progress_deadline(&self.d) {
                let now = self.now;
                let status = self.d.status.get_or_insert_with(Default::default);
                if get_condition(status, "Progressing").is_none() {
                    let cond = new_condition(
                        "Progressing",
                        "True",
                        FOUND_NEW_RS,
                        format!("Found new replica set \"{n}\""),
                        now,
                    );
                    set_condition(status, cond);
                }
            }
            return (Some(n), old);
        }
        if !create {
            return (None, old);
        }
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&self.d.spec.template, collision_count);
        let name = format!(
            "{}-{hash}",
            self.d.metadata.name.clone().unwrap_or_default()
        );
        if self.rss.iter().any(|r| rs_name(r) == name) {
            // An owned ReplicaSet with this name but another template: a hash collision.
            let status = self.d.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collision_count.unwrap_or(0) + 1);
            self.collided = true;
            return (None, old);
        }
        let mut template = self.d.spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector = self.d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                owner_references: Some(vec![controller_reference(
                    "apps/v1",
                    "Deployment",
                    &self.d.metadata,
                )]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        let new_replicas = {
            let all: Vec<&ReplicaSet> = self.refs(&old).into_iter().chain([&rs]).collect();
            new_rs_new_replicas(&self.d, &all, &rs)
        };
        rs.spec.replicas = Some(new_replicas);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        let event = (new_replicas > 0)
            .then(|| format!("Scaled up replica set {name} from 0 to {new_replicas}"));
        self.rss.push(rs.clone());
        self.actions.push(RsAction::Create { rs, event });
        set_annotation(&mut self.d.metadata, REVISION, new_revision.to_string());
        if has_progress_deadline(&self.d) {
            let cond = new_condition(
                "Progressing",
                "True",
                NEW_RS_CREATED,
                format!("Created new replica set \"{name}\""),
                self.now,
            );
            set_condition(self.d.status.get_or_insert_with(Default::default), cond);
        }
        (Some(name), old)
    }

    /// `scaleReplicaSet`: writes the size and the replicas annotations when either changed.
    fn scale_rs(&mut self, name: &str, new_scale: i32, op: &str) -> bool {
        let rs = self.get(name).clone();
        let desired = d_replicas(&self.d);
        let max = desired + max_surge(&self.d);
        let size_changes = spec_replicas(&rs) != new_scale;
        if !size_changes && !replicas_annotations_need_update(&rs, desired, max) {
            return false;
        }
        let old_scale = spec_replicas(&rs);
        let mut copy = rs;
        copy.spec.replicas = Some(new_scale);
        set_replicas_annotations(&mut copy, desired, max);
        let event = size_changes
            .then(|| format!("Scaled {op} replica set {name} from {old_scale} to {new_scale}"));
        self.put(copy, event);
        size_changes
    }

    /// `scaleReplicaSetAndRecordEvent`.
    fn scale_and_record(&mut self, name: &str, new_scale: i32) -> bool {
        let cur = spec_replicas(self.get(name));
        if cur == new_scale {
            return false;
        }
        let op = if cur < new_scale { "up" } else { "down" };
        self.scale_rs(name, new_scale, op)
    }

    /// `isScalingEvent`: an active ReplicaSet was sized for another `spec.replicas`.
    fn is_scaling_event(&mut self) -> bool {
        let (new, old) = self.all_and_sync_revision(false);
        let all: Vec<String> = old.iter().cloned().chain(new).collect();
        let replicas = d_replicas(&self.d);
        self.active(&all).iter().any(|n| {
            annotation(&self.get(n).metadata, DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|desired| desired != replicas)
        })
    }

    /// `scale`: one active ReplicaSet takes the new size; a saturated new one makes the old go;
    /// otherwise the change is spread proportionally (RollingUpdate).
    fn scale(&mut self, new: Option<&String>, old: &[String]) {
        let replicas = d_replicas(&self.d);
        if let Some(target) = self.active_or_latest(new, old) {
            if spec_replicas(self.get(&target)) != replicas {
                self.scale_and_record(&target, replicas);
            }
            return;
        }
        if new.is_some_and(|n| self.is_saturated(n)) {
            for o in self.active(old) {
                self.scale_and_record(&o, 0);
            }
            return;
        }
        if !is_rolling(&self.d) {
            return;
        }
        let all_names: Vec<String> = old.iter().cloned().chain(new.cloned()).collect();
        let mut all = self.active(&all_names);
        let all_replicas: i32 = all.iter().map(|n| spec_replicas(self.get(n))).sum();
        let allowed = if replicas > 0 {
            replicas + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - all_replicas;
        let op = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => {
                // ReplicaSetsBySizeNewer: larger first, newer first on ties.
                all.sort_by(|a, b| {
                    let (ra, rb) = (self.get(a), self.get(b));
                    spec_replicas(rb)
                        .cmp(&spec_replicas(ra))
                        .then_with(|| by_creation(rb, ra))
                });
                "up"
            }
            std::cmp::Ordering::Less => {
                // ReplicaSetsBySizeOlder: larger first, older first on ties.
                all.sort_by(|a, b| {
                    let (ra, rb) = (self.get(a), self.get(b));
                    spec_replicas(rb)
                        .cmp(&spec_replicas(ra))
                        .then_with(|| by_creation(ra, rb))
                });
                "down"
            }
            std::cmp::Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes: Vec<(String, i32)> = Vec::new();
        for n in &all {
            let rs = self.get(n);
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                sizes.push((n.clone(), spec_replicas(rs) + p));
                added += p;
            } else {
                sizes.push((n.clone(), spec_replicas(rs)));
            }
        }
        for (i, (n, size)) in sizes.into_iter().enumerate() {
            let mut size = size;
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_rs(&n, size, op);
        }
    }

    /// `GetReplicaSetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// `getReplicaSetFraction`.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let replicas = d_replicas(&self.d);
        if replicas == 0 {
            return -spec_replicas(rs);
        }
        let max = replicas + max_surge(&self.d);
        let before = annotation(&rs.metadata, MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|v| *v != 0)
            .unwrap_or_else(|| self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if before == 0 {
            return 0;
        }
        let size = f64::from(spec_replicas(rs)) * f64::from(max) / f64::from(before);
        size.round() as i32 - spec_replicas(rs)
    }

    /// `FindActiveOrLatest`.
    fn active_or_latest(&self, new: Option<&String>, old: &[String]) -> Option<String> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut olds = self.sorted_by_creation(old);
        olds.reverse();
        let all: Vec<String> = olds.iter().cloned().chain(new.cloned()).collect();
        let active = self.active(&all);
        match active.len() {
            0 => new.cloned().or_else(|| olds.first().cloned()),
            1 => Some(active[0].clone()),
            _ => None,
        }
    }

    /// `IsSaturated`.
    fn is_saturated(&self, name: &str) -> bool {
        let rs = self.get(name);
        let replicas = d_replicas(&self.d);
        let desired =
            annotation(&rs.metadata, DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok());
        spec_replicas(rs) == replicas
            && desired == Some(replicas)
            && available_replicas(rs) == replicas
    }

    /// `cleanupDeployment`: old ReplicaSets beyond `revisionHistoryLimit` that have no pods,
    /// oldest revision first.
    fn cleanup(&mut self, old: &[String]) {
        let Some(limit) = self.d.spec.revision_history_limit else {
            return;
        };
        let mut cleanable: Vec<&ReplicaSet> = self
            .refs(old)
            .into_iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none() && r.metadata.uid.is_some())
            .collect();
        let diff = cleanable.len() as i32 - limit;
        if diff <= 0 {
            return;
        }
        cleanable.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| by_creation(a, b))
        });
        let doomed: Vec<String> = cleanable
            .into_iter()
            .take(diff as usize)
            .filter(|r| {
                status_replicas(r) == 0
                    && spec_replicas(r) == 0
                    && r.metadata.generation.unwrap_or(0)
                        <= r.status
                            .as_ref()
                            .and_then(|s| s.observed_generation)
                            .unwrap_or(0)
            })
            .map(rs_name)
            .collect();
        for name in doomed {
            self.rss.retain(|r| rs_name(r) != name);
            self.actions.push(RsAction::Delete { name });
        }
    }

    /// `syncDeploymentStatus`: the counts, without progress estimation.
    fn sync_deployment_status(&mut self, new: Option<&String>, old: &[String]) {
        let status = {
            let all = self.all_refs(new, old);
            let new_rs = new.map(|n| self.get(n));
            calculate_status(&all, new_rs, &self.d, self.now)
        };
        self.d.status = Some(status);
    }

    /// `syncRolloutStatus`: the counts and the `Progressing` condition.
    fn sync_rollout_status(&mut self, new: Option<&String>, old: &[String]) {
        let now = self.now;
        let mut status = {
            let all = self.all_refs(new, old);
            let new_rs = new.map(|n| self.get(n));
            calculate_status(&all, new_rs, &self.d, now)
        };
        if !has_progress_deadline(&self.d) {
            remove_condition(&mut status, "Progressing");
        }
        let current = self
            .d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, "Progressing"))
            .cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let rs_word = |what: &str| match new {
            Some(n) => format!("ReplicaSet \"{n}\" {what}"),
            None => format!(
                "Deployment \"{}\" {what}",
                self.d.metadata.name.as_deref().unwrap_or("")
            ),
        };
        if has_progress_deadline(&self.d) && !complete_before {
            if deployment_complete(&self.d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        NEW_RS_AVAILABLE,
                        rs_word("has successfully progressed."),
                        now,
                    ),
                );
            } else if deployment_progressing(&self.d, &status) {
                let mut cond = new_condition(
                    "Progressing",
                    "True",
                    RS_UPDATED,
                    rs_word("is progressing."),
                    now,
                );
                if let Some(cur) = &current {
                    if cur.status.as_deref() == Some("True") {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, cond);
            } else if deployment_timed_out(&self.d, &status, now) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        TIMED_OUT,
                        rs_word("has timed out progressing."),
                        now,
                    ),
                );
            }
        }
        // ReplicaFailure conditions of the new ReplicaSet win over the old ones'.
        let failure = {
            let from = |r: &ReplicaSet| {
                r.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
                    .cloned()
            };
            new.and_then(|n| from(self.get(n)))
                .or_else(|| self.all_refs(new, old).into_iter().find_map(from))
        };
        match failure {
            Some(c) => set_condition(
                &mut status,
                DeploymentCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_update_time: c.last_transition_time.clone(),
                    last_transition_time: c.last_transition_time,
                },
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        // requeueStuckDeployment: look again when the deadline would pass.
        if let Some(cur) = get_condition(&status, "Progressing")
            && has_progress_deadline(&self.d)
            && !deployment_complete(&self.d, &status)
            && cur.reason.as_deref() != Some(TIMED_OUT)
            && let Some(t) = &cur.last_update_time
        {
            let deadline = i64::from(self.d.spec.progress_deadline_seconds.unwrap_or(600));
            let at = t.0 + SignedDuration::from_secs(deadline + 1);
            let after = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
            self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
        }
        self.d.status = Some(status);
    }

    /// `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, new: &str, old: &[String]) -> bool {
        let replicas = d_replicas(&self.d);
        let cur = spec_replicas(self.get(new));
        if cur == replicas {
            return false;
        }
        if cur > replicas {
            return self.scale_and_record(new, replicas);
        }
        let n = {
            let all = self.all_refs(Some(&new.to_string()), old);
            new_rs_new_replicas(&self.d, &all, self.get(new))
        };
        self.scale_and_record(new, n)
    }

    /// `reconcileOldReplicaSets`: scale down old ReplicaSets as far as `maxUnavailable` allows,
    /// unhealthy replicas first.
    fn reconcile_old(&mut self, new: &str, old_active: &[String], all_old: &[String]) -> bool {
        let old_count: i32 = old_active.iter().map(|n| spec_replicas(self.get(n))).sum();
        if old_count == 0 {
            return false;
        }
        let all_count: i32 = self
            .all_refs(Some(&new.to_string()), all_old)
            .iter()
            .map(|r| spec_replicas(r))
            .sum();
        let min_available = d_replicas(&self.d) - max_unavailable(&self.d);
        let new_rs = self.get(new);
        let new_unavailable = spec_replicas(new_rs) - available_replicas(new_rs);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        // cleanupUnhealthyReplicas
        let mut cleaned = 0;
        for n in self.sorted_by_creation(old_active) {
            if cleaned >= max_scaled_down {
                break;
            }
            let rs = self.get(&n);
            let (spec, avail) = (spec_replicas(rs), available_replicas(rs));
            if spec == 0 || spec == avail {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(spec - avail);
            self.scale_and_record(&n, spec - down);
            cleaned += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available: i32 = self
            .all_refs(Some(&new.to_string()), old_active)
            .iter()
            .map(|r| available_replicas(r))
            .sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for n in self.sorted_by_creation(old_active) {
                if scaled >= total {
                    break;
                }
                let spec = spec_replicas(self.get(&n));
                if spec == 0 {
                    continue;
                }
                let down = spec.min(total - scaled);
                self.scale_and_record(&n, spec - down);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    /// `oldPodsRunning`: old ReplicaSets still report pods, or pods of old ReplicaSets are not
    /// terminal (terminating pods count).
    fn old_pods_running(&self, new: Option<&String>, old: &[String]) -> bool {
        if self
            .refs(old)
            .iter()
            .map(|r| status_replicas(r))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        let old_uids: Vec<String> = self
            .refs(old)
            .iter()
            .filter_map(|r| r.metadata.uid.clone())
            .filter(|u| new.is_none_or(|n| self.get(n).metadata.uid.as_ref() != Some(u)))
            .collect();
        self.pods.iter().any(|p| {
            controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    fn rollout_rolling(&mut self) {
        let (new, old) = self.all_and_sync_revision(true);
        if self.collided {
            return;
        }
        let Some(new) = new else { return };
        if self.reconcile_new(&new, &old) {
            self.sync_rollout_status(Some(&new), &old);
            return;
        }
        let old_active = self.active(&old);
        if self.reconcile_old(&new, &old_active, &old) {
            self.sync_rollout_status(Some(&new), &old);
            return;
        }
        if deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&old);
        }
        let old: Vec<String> = old
            .into_iter()
            .filter(|n| self.rss.iter().any(|r| &rs_name(r) == n))
            .collect();
        self.sync_rollout_status(Some(&new), &old);
    }

    fn rollout_recreate(&mut self) {
        let (mut new, mut old) = self.all_and_sync_revision(false);
        let mut scaled = false;
        for n in self.active(&old) {
            if spec_replicas(self.get(&n)) != 0 {
                scaled |= self.scale_and_record(&n, 0);
            }
        }
        if scaled {
            self.sync_rollout_status(new.as_ref(), &old);
            return;
        }
        if self.old_pods_running(new.as_ref(), &old) {
            // Upstream is woken by the pod deletions; here: look again shortly.
            self.requeue = Some(Duration::from_secs(1));
            self.sync_rollout_status(new.as_ref(), &old);
            return;
        }
        if new.is_none() {
            (new, old) = self.all_and_sync_revision(true);
            if self.collided {
                return;
            }
        }
        if let Some(n) = &new {
            let replicas = d_replicas(&self.d);
            self.scale_and_record(n, replicas);
        }
        if deployment_complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&old);
        }
        let old: Vec<String> = old
            .into_iter()
            .filter(|n| self.rss.iter().any(|r| &rs_name(r) == n))
            .collect();
        self.sync_rollout_status(new.as_ref(), &old);
    }

    /// `sync`: scaling (and, paused, history cleanup) without a rollout.
    fn sync(&mut self) {
        let (new, old) = self.all_and_sync_revision(false);
        self.scale(new.as_ref(), &old);
        let mut old = old;
        if self.d.spec.paused == Some(true) {
            self.cleanup(&old);
            old.retain(|n| self.rss.iter().any(|r| &rs_name(r) == n));
        }
        self.sync_deployment_status(new.as_ref(), &old);
    }

    /// `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if !has_progress_deadline(&self.d) {
            return;
        }
        let status = self.d.status.get_or_insert_with(Default::default);
        let cond = get_condition(status, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
            return;
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
        let paused = self.d.spec.paused == Some(true);
        if paused && !paused_cond {
            let c = new_condition(
                "Progressing",
                "Unknown",
                PAUSED,
                "Deployment is paused".into(),
                self.now,
            );
            set_condition(status, c);
        } else if !paused && paused_cond {
            let c = new_condition(
                "Progressing",
                "Unknown",
                RESUMED,
                "Deployment is resumed".into(),
                self.now,
            );
            set_condition(status, c);
        }
    }
}

/// `NewRSNewReplicas`: how big the new ReplicaSet may be now (RollingUpdate: up to
/// `replicas + maxSurge` pods in all; Recreate: `replicas`).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let replicas = d_replicas(d);
    if !is_rolling(d) {
        return replicas;
    }
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let surge = int_or_string(ru.and_then(|r| r.max_surge.as_ref()))
        .and_then(|v| scaled_value(&v, i64::from(replicas), true))
        .unwrap_or(0) as i32;
    let current: i32 = all.iter().map(|r| spec_replicas(r)).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return spec_replicas(new);
    }
    let up = (max_total - current).min(replicas - spec_replicas(new));
    spec_replicas(new) + up
}

/// One sync of a Deployment (`syncDeployment`). `rss` are the ReplicaSets it controls (after
/// adoption), `pods` the pods its selector matches, `now` truncated to seconds (the precision
/// the API keeps).
pub fn plan_deployment(
    d: &Deployment,
    rss: &[ReplicaSet],
    pods: &[Pod],
    now: Timestamp,
) -> DeployPlan {
    let mut p = Planner {
        d: d.clone(),
        rss: rss.to_vec(),
        pods,
        now,
        actions: Vec::new(),
        requeue: None,
        collided: false,
    };
    if d.metadata.deletion_timestamp.is_some() {
        let (new, old) = p.all_and_sync_revision(false);
        p.sync_deployment_status(new.as_ref(), &old);
    } else {
        p.check_paused_conditions();
        if p.d.spec.paused == Some(true) || p.is_scaling_event() {
            p.sync();
        } else if is_rolling(&p.d) {
            p.rollout_rolling();
        } else {
            p.rollout_recreate();
        }
    }
    let changed = p.d.status != d.status || p.d.metadata.annotations != d.metadata.annotations;
    DeployPlan {
        actions: if p.collided { Vec::new() } else { p.actions },
        deployment: changed.then_some(p.d),
        requeue_after: if p.collided {
            Some(Duration::ZERO)
        } else {
            p.requeue
        },
    }
}
