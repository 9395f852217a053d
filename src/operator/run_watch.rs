//! The operator's one watch over BackupRuns.
//!
//! Three controllers react to BackupRuns (the run reconciler, the policy reconciler and the
//! policy's automatic validations), and the fair queue, retention, run history and RPO read
//! every run. Each controller opening its own watch meant three initial lists of every run in
//! the cluster at each start and three copies in flight; instead one watcher feeds one cache
//! ([`Store`]) and fans the changes out as object references:
//!
//! - the run controller gets the run itself (created or changed);
//! - the policy controllers get the run's BackupPolicy (created, changed or deleted).
//!
//! The cache keeps finished runs slim ([`slim`]): a Succeeded or Failed run is history, and the
//! operator only ever reads its phase, times, outcome and artifact location from the cache. With
//! 10,000s of runs in a cluster that is most of the operator's memory.

use std::collections::HashSet;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::api::backup_policy::PIN_LABEL;
use crate::api::{BackupPolicy, BackupRun, BackupRunPhase};

/// The client-side-apply annotation kubectl writes: a copy of the whole object the operator
/// never reads.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the operator never reads from a cached object: `managedFields` (a tree per field
/// manager, most of a typical object's memory) and kubectl's last-applied annotation.
pub fn strip_metadata<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    o.annotations_mut().remove(LAST_APPLIED);
}

/// Trims a BackupRun for the cache: [`strip_metadata`], and for a finished run everything but
/// what the policy side reads (phase, a failure's reason and message, times, the artifact's
/// location, sizes and retain-until, verification, spec, the pin label). Active runs are kept
/// whole: their reconciler writes their status. Whoever needs a finished run in full (restores,
/// validations) reads it from the API.
pub fn slim(run: &mut BackupRun) {
    strip_metadata(run);
    let finished = run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(BackupRunPhase::is_finished);
    if !finished {
        return;
    }
    // A label map costs a ~0.5 KiB tree node however few labels it holds; of a finished run's
    // labels only the pin (retention) is ever read.
    let pin = run
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get_key_value(PIN_LABEL))
        .map(|(k, v)| (k.clone(), v.clone()));
    run.metadata.labels = pin.map(|kv| [kv].into());
    // Nothing reads a finished run's identity from the cache (deletes go by name; the watch
    // tracks resource versions before this runs).
    run.metadata.uid = None;
    run.metadata.resource_version = None;
    let Some(status) = run.status.as_mut() else {
        return;
    };
    status.conditions = Vec::new();
    status.progress = None;
    status.failed_attempts = Vec::new();
    status.duration = None;
    status.job_name = None;
    if status.phase == Some(BackupRunPhase::Succeeded) {
        // Only a failure's reason and message are shown on the policy (lastFailure).
        status.reason = None;
        status.message = None;
    }
    if let Some(a) = status.artifact.as_mut() {
        a.encryption = None;
        a.server_version = None;
        a.size = None;
        a.sha256 = String::new();
        a.compression = String::new();
        a.engine = String::new();
    }
}

/// A watch over every `K`, listed in pages of [`LIST_PAGE_SIZE`], retried with backoff, each
/// object trimmed by `trim` before it reaches a cache or a mapper.
pub fn trimmed_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    trim: fn(&mut K),
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, cfg.page_size(LIST_PAGE_SIZE))
        .default_backoff()
        .modify(trim)
}

/// The receiving ends of the fan-out, one per consumer.
pub struct RunWatch {
    /// Every BackupRun in the cluster (finished ones [`slim`]).
    pub store: Store<BackupRun>,
    /// Runs created or changed: for the run controller.
    pub runs: UnboundedReceiver<ObjectRef<BackupRun>>,
    /// The policies of runs created, changed or deleted: for the policy controller.
    pub policies: UnboundedReceiver<ObjectRef<BackupPolicy>>,
    /// The same, for the policy's automatic validations.
    pub policy_validations: UnboundedReceiver<ObjectRef<BackupPolicy>>,
}

struct Senders {
    runs: UnboundedSender<ObjectRef<BackupRun>>,
    policies: UnboundedSender<ObjectRef<BackupPolicy>>,
    policy_validations: UnboundedSender<ObjectRef<BackupPolicy>>,
}

impl Senders {
    /// A run was created or changed. Finished runs are history: their reconciler has nothing
    /// to do, so only their policy hears of them.
    fn changed(&self, run: &BackupRun) {
        if needs_reconcile(run) {
            // A closed receiver is a controller that stopped (shutdown): nothing to tell it.
            let _ = self.runs.unbounded_send(ObjectRef::from_obj(run));
        }
        if let Some(policy) = policy_of(run) {
            self.policy(policy);
        }
    }

    fn policy(&self, policy: ObjectRef<BackupPolicy>) {
        let _ = self.policies.unbounded_send(policy.clone());
        let _ = self.policy_validations.unbounded_send(policy);
    }
}

/// Whether the run reconciler has work for this run: it is still to start or running (finished
/// and deleting runs are left alone).
pub fn needs_reconcile(run: &BackupRun) -> bool {
    run.meta().deletion_timestamp.is_none()
        && !run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(BackupRunPhase::is_finished)
}

/// Objects per page of the initial list. Every page is deserialized whole, `managedFields`
/// included (several times the object's size), before [`slim`] runs: small pages keep that
/// transient small.
pub const LIST_PAGE_SIZE: u32 = 50;

/// The BackupPolicy a run belongs to.
pub fn policy_of(run: &BackupRun) -> Option<ObjectRef<BackupPolicy>> {
    let ns = run.namespace()?;
    Some(ObjectRef::new(&run.spec.policy_ref.name).within(&ns))
}

/// The feeding end: the cache's writer and the senders of the fan-out.
pub struct Feed {
    writer: reflector::store::Writer<BackupRun>,
    senders: Senders,
}

/// The cache and the receivers (for the controllers) and the [`Feed`] that fills them once
/// [`Feed::spawn`]ed.
pub fn new() -> (RunWatch, Feed) {
    let (reader, writer) = reflector::store();
    let (runs_tx, runs) = unbounded();
    let (policies_tx, policies) = unbounded();
    let (validations_tx, policy_validations) = unbounded();
    (
        RunWatch {
            store: reader,
            runs,
            policies,
            policy_validations,
        },
        Feed {
            writer,
            senders: Senders {
                runs: runs_tx,
                policies: policies_tx,
                policy_validations: validations_tx,
            },
        },
    )
}

impl Feed {
    /// Starts the watch on a task of its own. `on_synced` is called each time the cache holds a
    /// complete list (after the first list, and after a re-list).
    pub fn spawn(
        self,
        api: Api<BackupRun>,
        on_synced: impl Fn() + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let Feed { writer, senders } = self;
        let events =
            trimmed_watch(api, watcher::Config::default().any_semantic(), slim).reflect(writer);
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            // During a (re-)list, each policy is told once, at the end, not once per run.
            let mut listed: HashSet<ObjectRef<BackupPolicy>> = HashSet::new();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(run)) => senders.changed(&run),
                    Ok(watcher::Event::InitApply(run)) => {
                        if needs_reconcile(&run) {
                            let _ = senders.runs.unbounded_send(ObjectRef::from_obj(&run));
                        }
                        listed.extend(policy_of(&run));
                    }
                    Ok(watcher::Event::Delete(run)) => {
                        if let Some(policy) = policy_of(&run) {
                            senders.policy(policy);
                        }
                    }
                    Ok(watcher::Event::Init) => listed.clear(),
                    Ok(watcher::Event::InitDone) => {
                        on_synced();
                        for policy in std::mem::take(&mut listed) {
                            senders.policy(policy);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "BackupRun watch failed; retrying"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupRunSpec;
    use crate::api::backup_run::{Artifact, BackupRunStatus, Trigger};
    use crate::api::common::LocalObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn run(phase: BackupRunPhase) -> BackupRun {
        let mut r = BackupRun::new(
            "r1",
            BackupRunSpec {
                policy_ref: LocalObjectReference::new("p1"),
                trigger: Trigger::Manual,
                scheduled_time: None,
                reason: None,
                compression: None,
                active_deadline_seconds: None,
            },
        );
        r.metadata.namespace = Some("ns".into());
        r.metadata.labels = Some(
            [
                ("dataguardian.io/policy".to_string(), "p1".to_string()),
                (PIN_LABEL.to_string(), "true".to_string()),
            ]
            .into(),
        );
        r.metadata.managed_fields = Some(vec![Default::default()]);
        r.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{...}".to_string()),
                ("keep".to_string(), "me".to_string()),
            ]
            .into(),
        );
        r.status = Some(BackupRunStatus {
            phase: Some(phase),
            reason: Some("DumpFailed".into()),
            message: Some("pg_dump exited 1".into()),
            duration: Some("1m".into()),
            progress: Some(Default::default()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "DumpFailed".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            }],
            artifact: Some(Box::new(Artifact {
                storage: "s3".into(),
                key: "k".into(),
                size: Some("1 MiB".into()),
                server_version: Some("15.4".into()),
                ..Default::default()
            })),
            ..Default::default()
        });
        r
    }

    #[test]
    fn finished_runs_keep_what_the_policy_side_reads() {
        for phase in [BackupRunPhase::Succeeded, BackupRunPhase::Failed] {
            let mut r = run(phase);
            slim(&mut r);
            assert!(r.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
            let ann = r.metadata.annotations.as_ref().unwrap();
            assert!(!ann.contains_key(LAST_APPLIED));
            assert_eq!(ann.get("keep").map(String::as_str), Some("me"));
            let s = r.status.as_ref().unwrap();
            assert_eq!(s.phase, Some(phase));
            if phase == BackupRunPhase::Failed {
                assert_eq!(s.reason.as_deref(), Some("DumpFailed"));
                assert_eq!(s.message.as_deref(), Some("pg_dump exited 1"));
            } else {
                assert!(s.reason.is_none() && s.message.is_none());
            }
            assert!(s.conditions.is_empty() && s.progress.is_none() && s.duration.is_none());
            let a = s.artifact.as_ref().unwrap();
            assert_eq!((a.storage.as_str(), a.key.as_str()), ("s3", "k"));
            let labels = r.metadata.labels.as_ref().unwrap();
            assert_eq!(labels.len(), 1, "only the pin is kept: {labels:?}");
            assert_eq!(labels.get(PIN_LABEL).map(String::as_str), Some("true"));
            assert!(a.size.is_none() && a.server_version.is_none());
        }
    }

    #[test]
    fn active_runs_are_kept_whole() {
        for phase in [BackupRunPhase::Pending, BackupRunPhase::Running] {
            let mut r = run(phase);
            slim(&mut r);
            assert!(r.metadata.managed_fields.as_ref().is_none_or(Vec::is_empty));
            let s = r.status.as_ref().unwrap();
            assert_eq!(s.conditions.len(), 1);
            assert!(s.progress.is_some() && s.duration.is_some());
            assert!(s.artifact.as_ref().unwrap().size.is_some());
            assert_eq!(r.metadata.labels.as_ref().unwrap().len(), 2);
        }
        let mut unpinned = run(BackupRunPhase::Succeeded);
        unpinned.metadata.labels.as_mut().unwrap().remove(PIN_LABEL);
        slim(&mut unpinned);
        assert!(unpinned.metadata.labels.is_none());
    }

    #[test]
    fn only_active_runs_wake_the_run_reconciler() {
        assert!(needs_reconcile(&run(BackupRunPhase::Pending)));
        assert!(needs_reconcile(&run(BackupRunPhase::Running)));
        let mut fresh = run(BackupRunPhase::Pending);
        fresh.status = None;
        assert!(needs_reconcile(&fresh), "a run without status is new");
        assert!(!needs_reconcile(&run(BackupRunPhase::Succeeded)));
        assert!(!needs_reconcile(&run(BackupRunPhase::Failed)));
        let mut deleting = run(BackupRunPhase::Running);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!needs_reconcile(&deleting));
    }

    #[test]
    fn a_run_names_its_policy() {
        let r = run(BackupRunPhase::Running);
        assert_eq!(policy_of(&r), Some(ObjectRef::new("p1").within("ns")));
    }
}
