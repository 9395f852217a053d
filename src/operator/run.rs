//! Starts the operator: health/metrics server, leader election and the standby watches on every
//! replica, then the controllers once this replica leads. Losing the lease stops the process
//! (nothing acts on a stale belief of leading); SIGTERM stops the controllers (in-flight
//! reconciles get [`SHUTDOWN_GRACE`]) and releases the lease so that a standby replica takes
//! over within its retry period (2 s), not after the lease duration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use crate::api::{BackupPolicy, BackupStorage, RestoreRun, RestoreRunPhase, RestoreValidation};
use crate::audit::sink::{AuditSink, SinkSettings};
use crate::audit::spool::{Spool, SpoolLimits};
use crate::controller::common::context::{Context, Settings};
use crate::controller::common::error::Error as ReconcileError;
use crate::controller::common::reconcile::{ControllerKind, RunTraced, error_policy, instrumented};
use crate::controller::{
    backup_policy, backup_run, backup_storage, restore_run, restore_validation,
};
use crate::telemetry::metrics::Metrics;

use super::compact::{Compact, compact_ref};
use super::health::{self, CacheRole, Readiness, Synced};
use super::leader::{LeaderElector, LeaseSettings};
use super::run_watch::Watched;
use super::{run_watch, shared_watch};

/// What the operator runs with (built from the `dataguardian operator` flags).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Address of the /healthz, /readyz and /metrics server.
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease (`None`: the host name, then the process id).
    pub identity: Option<String>,
    /// Lease duration in seconds.
    pub lease_duration_seconds: u64,
    /// Settings every reconciler reads.
    pub settings: Settings,
    /// The admission webhook (`None`: not served).
    pub webhook: Option<crate::admission::WebhookConfig>,
    /// The BackupStorage the leader writes the audit trail to (`None`: no trail).
    pub audit_storage: Option<crate::audit::StorageRef>,
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("health server: {0}")]
    Health(#[source] std::io::Error),
    #[error("admission webhook server: {0}")]
    Webhook(#[source] std::io::Error),
    #[error(transparent)]
    Leader(#[from] super::leader::LeaderError),
}

/// How long in-flight reconciles may run on after SIGTERM before they are stopped and the
/// lease released (well inside Kubernetes' default 30 s termination grace period).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the operator until SIGTERM/SIGINT or the loss of the lease.
///
/// Every replica starts the health server, the election and the standby watches (BackupRuns and
/// BackupPolicies: the caches a replica needs to take over at once; `/readyz` turns 200 once
/// they are synced). Only the leader starts the controllers (and the watches only they need),
/// and only then do the standby watches wake them.
pub async fn run(args: OperatorConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("dataguardian-{}", std::process::id()));
    let metrics = Metrics::new();
    let lease = LeaseSettings::new(
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        args.lease_duration_seconds,
    );
    let (elector, mut election) =
        LeaderElector::new(client.clone(), lease.clone(), metrics.clone());
    let readiness = Readiness::new(election.clone());

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(RunError::Health)?;
    tracing::info!(addr = %listener.local_addr().map_err(RunError::Health)?, identity, lease_namespace = %lease.namespace, lease = %lease.name, "operator starting");
    let app = health::router(readiness.clone(), metrics.clone());
    let health_task = tokio::spawn(async move { axum::serve(listener, app).await });
    let webhook_task = match args.webhook.clone() {
        Some(config) => {
            let ready = readiness
                .require("the admission webhook serves no certificate yet (the log says why)");
            let (_, task) = crate::admission::run(client.clone(), config, ready.flag())
                .await
                .map_err(RunError::Webhook)?;
            Some(task)
        }
        None => None,
    };
    let mut election_task = tokio::spawn(elector.run());
    let stopping_task = {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            readiness.mark_stopping();
        })
    };

    // The standby watches, on every replica. Their controllers are told about changes once
    // `act` turns true (this replica leads and the controllers exist).
    let (act_tx, act) = tokio::sync::watch::channel(false);
    // One watch over BackupRuns feeds the run cache and wakes the three controllers that care.
    let (run_watch, run_feed) = run_watch::new();
    let runs_cache = run_watch.cache.clone();
    let runs_synced = readiness.track("BackupRun", CacheRole::Standby);
    // The policy controllers start once the run cache holds its first list (see
    // `after_runs_listed`).
    let (runs_listed_tx, runs_listed) = tokio::sync::watch::channel(false);
    let run_watch_task = {
        let synced = runs_synced.clone();
        run_feed.spawn(client.clone(), act.clone(), move || {
            if !synced.get() {
                tracing::info!("BackupRun cache synced");
            }
            synced.mark();
            runs_listed_tx.send_replace(true);
            super::memory::release_free_memory();
        })
    };
    // BackupPolicies: one watch and cache for the policy controller and the policy's automatic
    // validations. Both controllers wait for the same cache to fill; they are polled together
    // (one `join!` below), so the cache's ready signal reaches both.
    // (Kept as compact JSON: at 10,000 policies the typed objects were a quarter of the heap.)
    let mut policy_watch = shared_watch::spawn::<Compact<BackupPolicy>>(
        client.clone(),
        2,
        act.clone(),
        readiness.track("BackupPolicy", CacheRole::Standby),
    );
    let mut background = vec![run_watch_task, policy_watch.task, stopping_task];
    background.extend(webhook_task);
    let stop = |background: &mut Vec<tokio::task::JoinHandle<()>>| {
        for task in background.drain(..) {
            task.abort();
        }
        health_task.abort();
    };

    // Wait for leadership (or a signal, or the election failing).
    loop {
        if election.borrow_and_update().leading {
            break;
        }
        tokio::select! {
            changed = election.changed() => {
                if changed.is_err() {
                    // The elector stopped: its task says why (next iteration).
                    tokio::task::yield_now().await;
                }
            }
            res = &mut election_task => {
                stop(&mut background);
                return match res {
                    Ok(r) => r.map_err(RunError::from),
                    Err(e) => Err(RunError::Leader(super::leader::LeaderError::Lost {
                        namespace: lease.namespace.clone(),
                        name: lease.name.clone(),
                        holder: e.to_string(),
                    })),
                };
            }
            _ = shutdown_signal() => {
                readiness.mark_stopping();
                tracing::info!("stopping (standing by, nothing to hand over)");
                stop(&mut background);
                return Ok(());
            }
        }
    }
    tracing::info!("leading: starting controllers");

    let settings = args.settings.clone();
    // The run controller reconciles active runs: those are whole in the cache.
    let run_controller = fed_controller(runs_cache.active().clone())
        .reconcile_on(run_watch.runs)
        .owns_stream(
            slim_watch::<Job>(
                client.clone(),
                watcher::Config::default().labels(crate::contract::JOB_SELECTOR),
            )
            .touched_objects(),
        );
    // Restores: the reflector feeds the restore queue; a finished restore wakes the queued ones.
    let restore_controller = slim_controller::<RestoreRun>(
        client.clone(),
        watcher::Config::default().any_semantic(),
        readiness.track("RestoreRun", CacheRole::Leader),
    )
    .owns_stream(
        slim_watch::<Job>(
            client.clone(),
            watcher::Config::default().labels(crate::contract::JOB_SELECTOR),
        )
        .touched_objects(),
    );
    let restore_store = restore_controller.store();
    let queued = restore_store.clone();
    let restore_controller = restore_controller.watches_stream(
        slim_watch::<RestoreRun>(client.clone(), watcher::Config::default().any_semantic())
            .touched_objects(),
        move |r: RestoreRun| {
            if !r
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RestoreRunPhase::is_finished)
            {
                return Vec::new();
            }
            queued
                .state()
                .into_iter()
                .filter(|q| {
                    q.status.as_ref().and_then(|s| s.phase) == Some(RestoreRunPhase::Queued)
                })
                .map(|q| ObjectRef::from_obj(q.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    // Validations: the reflector feeds the validation queue.
    // A finished validation wakes the queued ones through this channel.
    let (validation_wake, validation_woken) = futures::channel::mpsc::unbounded();
    let validation_controller = slim_controller::<RestoreValidation>(
        client.clone(),
        watcher::Config::default().any_semantic(),
        readiness.track("RestoreValidation", CacheRole::Leader),
    )
    .owns_stream(
        slim_watch::<Job>(
            client.clone(),
            watcher::Config::default().labels(crate::contract::JOB_SELECTOR),
        )
        .touched_objects(),
    )
    .reconcile_on(validation_woken);
    // The audit trail: written by the leader only (this replica, from now on).
    let audit = args.audit_storage.clone().map(|storage| {
        // The write-ahead spool lives in the operator's own namespace (the Lease's).
        let spool = Spool::new(client.clone(), &lease.namespace, SpoolLimits::default());
        let sink = AuditSink::unopened(SinkSettings::default(), metrics.clone()).with_spool(spool);
        background.extend(super::audit::spawn(
            client.clone(),
            storage,
            settings.egress.clone(),
            sink.clone(),
            settings.requester_recorded,
        ));
        sink
    });
    let mut ctx = Context::new(
        client.clone(),
        metrics.clone(),
        settings,
        runs_cache.clone(),
    )
    .with_runs_synced(runs_synced.flag())
    .with_restore_runs(restore_store)
    .with_validations(validation_controller.store(), validation_wake);
    if let Some(sink) = &audit {
        ctx = ctx.with_audit(sink.clone());
    }
    let ctx = Arc::new(ctx);
    let (Some(policy_refs_for_validations), Some(policy_refs)) =
        (policy_watch.consumers.pop(), policy_watch.consumers.pop())
    else {
        unreachable!("two consumers were asked for");
    };
    // A policy's automatic validations: woken by its BackupRuns and RestoreValidations.
    let runs_by_name = runs_cache.clone();
    let policy_validation_controller = fed_controller(policy_watch.store.clone())
        .reconcile_on(futures::stream::select(
            policy_refs_for_validations,
            run_watch.policy_validations.map(compact_ref),
        ))
        .watches_stream(
            slim_watch::<RestoreValidation>(
                client.clone(),
                watcher::Config::default().any_semantic(),
            )
            .touched_objects(),
            move |v: RestoreValidation| {
                let ns = v.namespace()?;
                let policy = v
                    .labels()
                    .get(crate::api::backup_policy::POLICY_LABEL)
                    .cloned()
                    .or_else(|| v.spec.policy_ref.as_ref().map(|p| p.name.clone()))
                    .or_else(|| {
                        let run = v
                            .status
                            .as_ref()
                            .and_then(|s| s.backup_run_name.clone())
                            .or_else(|| v.spec.backup_run_ref.as_ref().map(|r| r.name.clone()))?;
                        runs_by_name.policy_of_run(&ns, &run)
                    })?;
                Some(ObjectRef::<Compact<BackupPolicy>>::new(&policy).within(&ns))
            },
        );

    let policies_store = policy_watch.store.clone();
    let policy_controller = fed_controller(policy_watch.store.clone())
        .reconcile_on(futures::stream::select(
            policy_refs,
            run_watch.policies.map(compact_ref),
        ))
        .watches_stream(
            slim_watch::<BackupStorage>(client.clone(), watcher::Config::default().any_semantic())
                .touched_objects(),
            move |s: BackupStorage| {
                // A storage's readiness feeds the StorageReady condition of the policies using it,
                // and a secondary storage that is back lets their copies catch up at once.
                let (ns, name) = (s.namespace(), s.name_any());
                // Only the namespace's policies are unpacked. One that cannot be read is
                // reconciled: its reconcile reports why.
                policies_store
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == ns)
                    .filter(|p| {
                        p.unpack().map_or(true, |p| {
                            p.spec.storage_ref.name == name
                                || p.spec.secondary_storage_refs.iter().any(|r| r.name == name)
                        })
                    })
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    let storage_controller = slim_controller::<BackupStorage>(
        client.clone(),
        watcher::Config::default().any_semantic(),
        readiness.track("BackupStorage", CacheRole::Leader),
    );

    let runs = run_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| instrumented(ControllerKind::BackupRun, obj, ctx, backup_run::reconcile),
            |obj, err, ctx| error_policy(ControllerKind::BackupRun, obj.as_ref(), err, &ctx),
            ctx.clone(),
        )
        .for_each(|r| log_result("backuprun", r));
    let policies = after_runs_listed(
        runs_listed.clone(),
        policy_controller
            .graceful_shutdown_on(shutdown_signal())
            .run(
                |obj, ctx| {
                    unpacked(
                        ControllerKind::BackupPolicy,
                        obj,
                        ctx,
                        backup_policy::reconcile,
                    )
                },
                |obj, err, ctx| error_policy(ControllerKind::BackupPolicy, obj.as_ref(), err, &ctx),
                ctx.clone(),
            )
            .for_each(|r| log_result("backuppolicy", r)),
    );
    let storages = storage_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| {
                instrumented(
                    ControllerKind::BackupStorage,
                    obj,
                    ctx,
                    backup_storage::reconcile,
                )
            },
            |obj, err, ctx| error_policy(ControllerKind::BackupStorage, obj.as_ref(), err, &ctx),
            ctx.clone(),
        )
        .for_each(|r| log_result("backupstorage", r));

    let restores = restore_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| instrumented(ControllerKind::RestoreRun, obj, ctx, restore_run::reconcile),
            |obj, err, ctx| error_policy(ControllerKind::RestoreRun, obj.as_ref(), err, &ctx),
            ctx.clone(),
        )
        .for_each(|r| log_result("restorerun", r));
    let validations = validation_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| {
                instrumented(
                    ControllerKind::RestoreValidation,
                    obj,
                    ctx,
                    restore_validation::reconcile,
                )
            },
            |obj, err, ctx| {
                error_policy(ControllerKind::RestoreValidation, obj.as_ref(), err, &ctx)
            },
            ctx.clone(),
        )
        .for_each(|r| log_result("restorevalidation", r));
    let policy_validations = after_runs_listed(
        runs_listed,
        policy_validation_controller
            .graceful_shutdown_on(shutdown_signal())
            .run(
                |obj, ctx| {
                    unpacked(
                        ControllerKind::PolicyValidation,
                        obj,
                        ctx,
                        backup_policy::validation::reconcile_policy,
                    )
                },
                |obj, err, ctx| {
                    error_policy(ControllerKind::PolicyValidation, obj.as_ref(), err, &ctx)
                },
                ctx.clone(),
            )
            .for_each(|r| log_result("policyvalidation", r)),
    );

    let controllers = async {
        tokio::join!(
            runs,
            policies,
            storages,
            restores,
            validations,
            policy_validations
        )
    };
    // Everything exists: from now on the standby watches wake the controllers (and replay
    // what they cached while standing by).
    act_tx.send_replace(true);
    readiness.mark_controllers_started();
    let result = {
        let mut controllers = std::pin::pin!(controllers);
        tokio::select! {
            _ = &mut controllers => Ok(()),
            res = &mut election_task => match res {
                Ok(Err(e)) => Err(RunError::from(e)),
                _ => Ok(()),
            },
            _ = async {
                shutdown_signal().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the shutdown grace period; stopping them");
                Ok(())
            }
        }
        // Dropping the controllers here cancels what still runs, before the lease goes.
    };
    election_task.abort();
    stop(&mut background);
    if let Some(sink) = &audit {
        // Whatever is still queued gets one last chance before another replica leads (which
        // re-sends from status anyway).
        // The writer was stopped, perhaps mid-write: read each chain's head again.
        sink.forget_heads();
        match tokio::time::timeout(AUDIT_FINAL_FLUSH, sink.flush()).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(records = n, "wrote the last audit records");
                if let Err(e) = sink.release_confirmed().await {
                    tracing::warn!(error = %e, "audit spool entries of written records not removed; the next leader finds them in the chain")
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, pending = sink.pending(), "last audit records not written; the next leader re-sends them from status")
            }
            Err(_) => {
                tracing::warn!(
                    pending = sink.pending(),
                    "last audit records not written in time; the next leader re-sends them from status"
                )
            }
        }
    }
    let leases = Api::namespaced(client.clone(), &lease.namespace);
    match LeaderElector::release(&leases, &lease.name, &lease.identity).await {
        Ok(()) => tracing::info!(lease = %lease.name, "released the lease"),
        Err(e) => tracing::warn!(error = %e, "could not release the lease"),
    }
    result
}

/// How long a stopping leader tries to write its queued audit records.
const AUDIT_FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Reconciles in flight per controller.
const RECONCILE_CONCURRENCY: u16 = 16;

/// Bounded parallelism: a cold start with 1,000 policies must not fire 1,000 reconciles (and
/// their API calls) at once.
fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY)
}

/// Runs `controller` (a policy controller's future) once the BackupRun cache holds its first
/// full list, or not at all if the operator stops first.
///
/// A policy's reconcile reads its runs from that cache; before it is listed there is nothing
/// to act on. Started at once, the two policy controllers re-queued every policy every
/// [`RUNS_CACHE_WAIT`](crate::controller::common::reconcile::RUNS_CACHE_WAIT) while the runs
/// were listed: at 10,000 policies, tens of thousands of empty reconciles a second competing
/// for the CPU with the list they waited for (docs/benchmarks.md, "At 10,000 policies and
/// 100,000 runs"). Their triggers wait meanwhile in the channels that feed them; the run
/// cache's first list then wakes every policy once.
async fn after_runs_listed(
    mut listed: tokio::sync::watch::Receiver<bool>,
    controller: impl std::future::Future<Output = ()>,
) {
    if until_listed(&mut listed).await {
        controller.await;
    }
}

/// Waits until `listed` turns true (`true`), or the operator is asked to stop or the cache's
/// feeder goes away first (`false`).
async fn until_listed(listed: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        res = listed.wait_for(|l| *l) => res.is_ok(),
        _ = shutdown_signal() => false,
    }
}

/// A watch whose objects lose what the operator never reads ([`run_watch::strip_metadata`])
/// before they reach a cache or a mapper.
fn slim_watch<K>(
    client: Client,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Watched,
{
    run_watch::trimmed_watch(client, cfg, run_watch::strip_metadata::<K>)
}

/// A controller whose cache holds slimmed objects ([`slim_watch`]); `synced` is marked once the
/// cache holds its first full list.
fn slim_controller<K>(client: Client, cfg: watcher::Config, synced: Synced) -> Controller<K>
where
    K: Watched,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        run_watch::marking_synced(slim_watch(client, cfg), synced),
    )
    .applied_objects();
    Controller::for_stream(stream, reader).with_config(controller_config())
}

/// [`instrumented`] `reconcile` of the whole object a [`Compact`] cache entry holds. (Unpacking
/// reads back JSON this process wrote; a failure would be a bug, reported as a JSON error.)
async fn unpacked<K, F, Fut>(
    kind: ControllerKind,
    obj: Arc<Compact<K>>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, ReconcileError>
where
    K: RunTraced + serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>>,
{
    let whole = obj
        .unpack()
        .map_err(|e| ReconcileError::Kube(kube::Error::SerdeError(e)))?;
    instrumented(kind, Arc::new(whole), ctx, reconcile).await
}

/// A controller over a cache another task fills (a shared watch): it reconciles only what it is
/// told through `reconcile_on`, and the streams it `owns`/`watches`.
fn fed_controller<K>(store: reflector::Store<K>) -> Controller<K>
where
    K: Watched,
{
    Controller::for_stream(futures::stream::empty::<Result<K, watcher::Error>>(), store)
        .with_config(controller_config())
}

async fn log_result<T, E: std::fmt::Display>(controller: &'static str, res: Result<T, E>) {
    if let Err(e) = res {
        tracing::debug!(controller, error = %e, "reconcile error");
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A stand-in for a controller's future, and the flag it sets when it runs.
    fn recording_controller() -> (Arc<AtomicBool>, impl std::future::Future<Output = ()>) {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        (ran, async move { flag.store(true, Ordering::SeqCst) })
    }

    #[tokio::test]
    async fn a_policy_controller_runs_only_once_the_runs_are_listed() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (ran, controller) = recording_controller();
        let task = tokio::spawn(after_runs_listed(rx, controller));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !ran.load(Ordering::SeqCst),
            "started before the run cache was listed"
        );
        tx.send_replace(true);
        task.await.unwrap();
        assert!(ran.load(Ordering::SeqCst), "the first list starts it");
    }

    #[tokio::test]
    async fn a_policy_controller_never_runs_if_the_run_cache_goes_away_unlisted() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (ran, controller) = recording_controller();
        let task = tokio::spawn(after_runs_listed(rx, controller));
        drop(tx);
        task.await.unwrap();
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_cache_listed_before_the_controllers_start_lets_them_run_at_once() {
        // A follower that takes over has listed its runs long before it leads.
        let (_tx, rx) = tokio::sync::watch::channel(true);
        let mut rx2 = rx.clone();
        assert!(until_listed(&mut rx2).await);
        let (ran, controller) = recording_controller();
        after_runs_listed(rx, controller).await;
        assert!(ran.load(Ordering::SeqCst));
    }
}
