//! The operator's one watch over BackupRuns.
//!
//! Three controllers react to BackupRuns (the run reconciler, the policy reconciler and the
//! policy's automatic validations), and the fair queue, retention, run history and RPO read
//! every run. Each controller opening its own watch meant three initial lists of every run in
//! the cluster at each start and three copies in flight; instead one watcher feeds one cache
//! ([`RunCache`]: active runs whole, finished runs as compact records) and fans the changes out
//! as object references:
//!
//! - the run controller gets the run itself (created or changed, while it is active);
//! - the policy controllers get the run's BackupPolicy (created, changed or deleted).

use std::collections::HashSet;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::api::{BackupPolicy, BackupRun, BackupRunPhase};
use crate::controller::common::run_cache::{self, RunCache, RunCacheWriter};

use super::lean::Lean;

/// A kind the operator watches and caches (a shorthand for the bounds watches and controllers
/// need).
pub trait Watched:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// The client-side-apply annotation kubectl writes: a copy of the whole object the operator
/// never reads.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the operator never reads from a cached object: `managedFields` (a tree per field
/// manager, most of a typical object's memory) and kubectl's last-applied annotation.
///
/// The list itself goes, not only its entries: `Vec::clear` would keep the allocation (one
/// entry's worth, ~170 bytes, per field manager) for as long as the object stays cached.
pub fn strip_metadata<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    if let Some(annotations) = o.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A watch over every `K` in every namespace, listed in pages of [`LIST_PAGE_SIZE`], retried
/// with backoff, each object read without its managedFields' field sets ([`Lean`]) and trimmed
/// by `trim` before it reaches a cache or a mapper.
pub fn trimmed_watch<K>(
    client: kube::Client,
    cfg: watcher::Config,
    trim: fn(&mut K),
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    watcher(
        Api::<Lean<K>>::all_with(client, &()),
        cfg.page_size(LIST_PAGE_SIZE),
    )
    .default_backoff()
    .map(|event| event.map(unlean))
    .modify(trim)
}

/// The event of a [`Lean`] watch, with the objects it carries.
fn unlean<K>(event: watcher::Event<Lean<K>>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.into_inner()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.into_inner()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.into_inner()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// `events`, marking `synced` when the first complete list has been seen (`InitDone`).
///
/// (Not `Store::wait_until_ready`: its one-shot wakes a single waiter, and the controller
/// reading the same store is already waiting on it.)
pub fn marking_synced<K, S>(
    events: S,
    synced: crate::operator::health::Synced,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events.inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            synced.mark();
        }
    })
}

/// The receiving ends of the fan-out, one per consumer.
pub struct RunWatch {
    /// Every BackupRun in the cluster.
    pub cache: RunCache,
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

/// Objects per page of the initial list (kube's default page size).
///
/// Every page is held whole while it is deserialized (its JSON, then its typed objects, read
/// without their field sets: [`Lean`]): at 500 BackupRuns a transient of ~1–2 MB. Pages of 50 made a restart over
/// 100,000 runs 2,000 sequential round trips (each also a paged read on the API server); 500
/// makes it 200. (Measured in docs/benchmarks.md, "At 10,000 policies and 100,000 runs".)
pub const LIST_PAGE_SIZE: u32 = 500;

/// The BackupPolicy a run belongs to.
pub fn policy_of(run: &BackupRun) -> Option<ObjectRef<BackupPolicy>> {
    let ns = run.namespace()?;
    Some(ObjectRef::new(&run.spec.policy_ref.name).within(&ns))
}

/// The feeding end: the cache's writer and the senders of the fan-out.
pub struct Feed {
    writer: RunCacheWriter,
    senders: Senders,
    cache: RunCache,
}

/// The cache and the receivers (for the controllers) and the [`Feed`] that fills them once
/// [`Feed::spawn`]ed.
pub fn new() -> (RunWatch, Feed) {
    let (cache, writer) = run_cache::new();
    let (runs_tx, runs) = unbounded();
    let (policies_tx, policies) = unbounded();
    let (validations_tx, policy_validations) = unbounded();
    (
        RunWatch {
            cache: cache.clone(),
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
            cache,
        },
    )
}

impl Feed {
    /// Starts the watch on a task of its own. The cache is filled at once, on every replica;
    /// the controllers hear of changes only while `act` is true (this replica leads): when it
    /// turns true, every run still to reconcile is sent once, so nothing that changed while
    /// standing by is missed. `on_synced` is called each time the cache holds a complete list
    /// (after the first list, and after a re-list).
    pub fn spawn(
        self,
        client: kube::Client,
        mut act: tokio::sync::watch::Receiver<bool>,
        on_synced: impl Fn() + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let Feed {
            mut writer,
            senders,
            cache,
        } = self;
        let events = trimmed_watch(
            client,
            watcher::Config::default().any_semantic(),
            strip_metadata,
        );
        let active = cache.active().clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            // During a (re-)list, each policy is told once, at the end, not once per run.
            let mut listed: HashSet<ObjectRef<BackupPolicy>> = HashSet::new();
            let mut acting = *act.borrow_and_update();
            loop {
                let event = tokio::select! {
                    changed = act.changed(), if !acting => {
                        if changed.is_err() {
                            // The operator stopped: the cache has nobody to serve.
                            return;
                        }
                        acting = *act.borrow_and_update();
                        if acting {
                            for run in active.state() {
                                if needs_reconcile(&run) {
                                    let _ = senders.runs.unbounded_send(ObjectRef::from_obj(run.as_ref()));
                                }
                            }
                        }
                        continue;
                    }
                    event = events.next() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                if let Ok(event) = &event {
                    writer.apply(event);
                }
                match event {
                    Ok(watcher::Event::Apply(run)) if acting => senders.changed(&run),
                    Ok(watcher::Event::InitApply(run)) if acting => {
                        if needs_reconcile(&run) {
                            let _ = senders.runs.unbounded_send(ObjectRef::from_obj(&run));
                        }
                        listed.extend(policy_of(&run));
                    }
                    Ok(watcher::Event::Delete(run)) if acting => {
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
                    // Standing by: the cache is up to date, the controllers are not running.
                    Ok(_) => {}
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
    use crate::api::backup_policy::PIN_LABEL;
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
    fn cached_objects_lose_managed_fields_and_the_last_applied_copy() {
        let mut r = run(BackupRunPhase::Running);
        strip_metadata(&mut r);
        assert!(
            r.metadata.managed_fields.is_none(),
            "the list is dropped, not emptied (an empty Vec keeps its allocation)"
        );
        let ann = r.metadata.annotations.as_ref().unwrap();
        assert!(!ann.contains_key(LAST_APPLIED));
        assert_eq!(ann.get("keep").map(String::as_str), Some("me"));
        assert_eq!(r.metadata.labels.as_ref().unwrap().len(), 2);
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
