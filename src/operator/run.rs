//! Starts the operator: health/metrics server, leader election, then the controllers once this
//! replica leads. Losing the lease stops the process (nothing acts on a stale belief of leading).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{
    BackupPolicy, BackupRun, BackupStorage, RestoreRun, RestoreRunPhase, RestoreValidation,
};
use crate::controller::common::context::{Context, Settings};
use crate::controller::common::reconcile::{ControllerKind, error_policy, instrumented};
use crate::controller::{
    backup_policy, backup_run, backup_storage, restore_run, restore_validation,
};
use crate::telemetry::metrics::Metrics;

use super::health::{self, Readiness};
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
}

/// Errors that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("health server: {0}")]
    Health(#[source] std::io::Error),
    #[error(transparent)]
    Leader(#[from] super::leader::LeaderError),
}

/// Runs the operator until SIGTERM/SIGINT or the loss of the lease.
pub async fn run(args: OperatorConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("dataguardian-{}", std::process::id()));
    let metrics = Metrics::new();
    let lease = LeaseSettings {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        lease_duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
        renew_interval: Duration::from_secs((args.lease_duration_seconds / 3).max(1)),
    };
    let (elector, mut leading) = LeaderElector::new(client.clone(), lease.clone());
    let readiness = Readiness::new(leading.clone());

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(RunError::Health)?;
    tracing::info!(addr = %listener.local_addr().map_err(RunError::Health)?, identity, "operator starting");
    let app = health::router(readiness.clone(), metrics.clone());
    let health_task = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut election = tokio::spawn(elector.run());

    // Wait for leadership (or a signal, or the election failing).
    loop {
        if *leading.borrow() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => { if changed.is_err() { break; } }
            res = &mut election => {
                health_task.abort();
                return match res { Ok(r) => r.map_err(RunError::from), Err(e) => Err(RunError::Leader(super::leader::LeaderError::Lost { namespace: lease.namespace.clone(), name: lease.name.clone(), holder: e.to_string() })) };
            }
            _ = shutdown_signal() => { health_task.abort(); return Ok(()); }
        }
    }
    tracing::info!("leading: starting controllers");

    let settings = args.settings.clone();
    let runs_api: Api<BackupRun> = Api::all(client.clone());
    // One watch over BackupRuns feeds the run cache and wakes the three controllers that care
    // (started below, once the context exists).
    let (run_watch, run_feed) = run_watch::new();
    let runs_cache = run_watch.cache.clone();
    // The run controller reconciles active runs: those are whole in the cache.
    let run_controller = fed_controller(runs_cache.active().clone())
        .reconcile_on(run_watch.runs)
        .owns_stream(
            slim_watch(
                Api::<Job>::all(client.clone()),
                watcher::Config::default().labels(crate::contract::JOB_SELECTOR),
            )
            .touched_objects(),
        );
    // Restores: the reflector feeds the restore queue; a finished restore wakes the queued ones.
    let restores_api: Api<RestoreRun> = Api::all(client.clone());
    let restore_controller = slim_controller(
        restores_api.clone(),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(crate::contract::JOB_SELECTOR),
    );
    let restore_store = restore_controller.store();
    let queued = restore_store.clone();
    let restore_controller = restore_controller.watches(
        restores_api,
        watcher::Config::default().any_semantic(),
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
    let validations_api: Api<RestoreValidation> = Api::all(client.clone());
    // A finished validation wakes the queued ones through this channel.
    let (validation_wake, validation_woken) = futures::channel::mpsc::unbounded();
    let validation_controller = slim_controller(
        validations_api.clone(),
        watcher::Config::default().any_semantic(),
    )
    .owns(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(crate::contract::JOB_SELECTOR),
    )
    .reconcile_on(validation_woken);
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            settings,
            runs_cache.clone(),
        )
        .with_restore_runs(restore_store)
        .with_validations(validation_controller.store(), validation_wake),
    );
    let run_watch_task = {
        let (ctx, readiness) = (ctx.clone(), readiness.clone());
        run_feed.spawn(runs_api.clone(), move || {
            ctx.mark_runs_synced();
            readiness.mark_caches_synced();
            tracing::info!("BackupRun cache synced; ready");
        })
    };
    // BackupPolicies: one watch and cache for the policy controller and the policy's automatic
    // validations. Both controllers wait for the same cache to fill; they are polled together
    // (one `join!` below), so the cache's ready signal reaches both.
    let mut policy_watch = shared_watch::spawn(Api::<BackupPolicy>::all(client.clone()), 2);
    let (Some(policy_refs_for_validations), Some(policy_refs)) =
        (policy_watch.consumers.pop(), policy_watch.consumers.pop())
    else {
        unreachable!("two consumers were asked for");
    };
    // A policy's automatic validations: woken by its BackupRuns and RestoreValidations.
    let runs_by_name = runs_cache.clone();
    let policy_validation_controller = fed_controller(policy_watch.store.clone())
        .reconcile_on(policy_refs_for_validations)
        .reconcile_on(run_watch.policy_validations)
        .watches(
            validations_api,
            watcher::Config::default().any_semantic(),
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
                Some(ObjectRef::<BackupPolicy>::new(&policy).within(&ns))
            },
        );

    let policies_store = policy_watch.store.clone();
    let policy_controller = fed_controller(policy_watch.store.clone())
        .reconcile_on(policy_refs)
        .reconcile_on(run_watch.policies)
        .watches(
            Api::<BackupStorage>::all(client.clone()),
            watcher::Config::default().any_semantic(),
            move |s: BackupStorage| {
                // A storage's readiness feeds the StorageReady condition of the policies using it.
                let (ns, name) = (s.namespace(), s.name_any());
                policies_store
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == ns && p.spec.storage_ref.name == name)
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    let storage_controller = slim_controller(
        Api::<BackupStorage>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );

    let runs = run_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| instrumented(ControllerKind::BackupRun, obj, ctx, backup_run::reconcile),
            |obj, err, ctx| error_policy(ControllerKind::BackupRun, obj.as_ref(), err, &ctx),
            ctx.clone(),
        )
        .for_each(|r| log_result("backuprun", r));
    let policies = policy_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| {
                instrumented(
                    ControllerKind::BackupPolicy,
                    obj,
                    ctx,
                    backup_policy::reconcile,
                )
            },
            |obj, err, ctx| error_policy(ControllerKind::BackupPolicy, obj.as_ref(), err, &ctx),
            ctx.clone(),
        )
        .for_each(|r| log_result("backuppolicy", r));
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
    let policy_validations = policy_validation_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx| {
                instrumented(
                    ControllerKind::PolicyValidation,
                    obj,
                    ctx,
                    backup_policy::validation::reconcile_policy,
                )
            },
            |obj, err, ctx| error_policy(ControllerKind::PolicyValidation, obj.as_ref(), err, &ctx),
            ctx.clone(),
        )
        .for_each(|r| log_result("policyvalidation", r));

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
    let result = tokio::select! {
        _ = controllers => Ok(()),
        res = &mut election => match res {
            Ok(Err(e)) => Err(RunError::from(e)),
            _ => Ok(()),
        },
    };
    run_watch_task.abort();
    policy_watch.task.abort();
    let leases = Api::namespaced(client.clone(), &lease.namespace);
    if let Err(e) = LeaderElector::release(&leases, &lease.name, &lease.identity).await {
        tracing::warn!(error = %e, "could not release the lease");
    }
    health_task.abort();
    result
}

/// Reconciles in flight per controller.
const RECONCILE_CONCURRENCY: u16 = 16;

/// Bounded parallelism: a cold start with 1,000 policies must not fire 1,000 reconciles (and
/// their API calls) at once.
fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY)
}

/// A watch whose objects lose what the operator never reads ([`run_watch::strip_metadata`])
/// before they reach a cache or a mapper.
fn slim_watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    run_watch::trimmed_watch(api, cfg, run_watch::strip_metadata::<K>)
}

/// A controller whose cache holds slimmed objects ([`slim_watch`]).
fn slim_controller<K>(api: Api<K>, cfg: watcher::Config) -> Controller<K>
where
    K: Watched,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, slim_watch(api, cfg)).applied_objects();
    Controller::for_stream(stream, reader).with_config(controller_config())
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
