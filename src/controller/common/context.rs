//! What every reconciler shares: the client, metrics, the event recorder and settings.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

use crate::api::backup_policy::NotificationRule;
use crate::api::{BackupPolicy, RestoreRun, RestoreValidation};
use crate::controller::common::run_cache::RunCache;
use crate::egress::EgressPolicy;
use crate::jobs::shell::{ImageAllowList, JobDefaults};
use crate::notify::deliver::{DeliveryError, Webhooks};
use crate::notify::message::{Notification, rules_for};
use crate::notify::outbox::{self, Fold, FoldKey, Folder, fold_key};
use crate::telemetry::metrics::{Metrics, NotificationLabels};

/// Operator-wide settings (from flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of the agent that backup/restore/validation Jobs run.
    pub agent_image: String,
    /// The registry replacing that of the agent and default sandbox images (`--image-registry`).
    pub image_registry: Option<String>,
    /// The images Jobs may run (`--allowed-images`); empty = the agent image and the default
    /// sandbox images.
    pub allowed_images: Vec<String>,
    /// At most this many backups run at once across the cluster (`None` = unlimited).
    pub max_concurrent_backups: Option<NonZeroUsize>,
    /// At most this many restores run at once across the cluster (`None` = unlimited).
    pub max_concurrent_restores: Option<NonZeroUsize>,
    /// At most this many restore validations run at once across the cluster (`None` =
    /// unlimited): each one runs a sandbox database.
    pub max_concurrent_validations: Option<NonZeroUsize>,
    /// How long a finished Job stays for `kubectl logs` before Kubernetes deletes it.
    pub job_ttl_seconds: i32,
    /// Default stall timeout when a policy sets none.
    pub default_stall_timeout: Duration,
    /// Which internal address ranges tenant endpoints (S3, webhooks) may reach, for the
    /// operator and, passed on, its agent Jobs (`--egress-allow-cidrs`).
    pub egress: EgressPolicy,
    /// Namespaces whose BackupStorages may go without `credentialsSecretRef`, i.e. use the
    /// cloud identity of the operator (and of the Job pods): the platform team's explicit
    /// choice, per namespace. Empty (the default): every storage needs its own credentials.
    pub ambient_credentials_namespaces: Vec<String>,
    /// Whether this operator's admission webhook records who asks for runs: only then is the
    /// `dataguardian.io/requested-by` annotation trusted (without the webhook anyone who may
    /// create a run could write it).
    pub requester_recorded: bool,
    /// Which restores need a second person's approval when their policy says nothing
    /// (`--restore-approval`).
    pub restore_approval: crate::api::backup_policy::ApprovalRequirement,
    /// How long an approval holds when the policy says nothing
    /// (`--restore-approval-valid-for`).
    pub restore_approval_valid_for: Duration,
}

impl Settings {
    /// Whether storages in `ns` may use ambient (the operator's) cloud credentials.
    pub fn allows_ambient_credentials(&self, ns: &str) -> bool {
        self.ambient_credentials_namespaces.iter().any(|n| n == ns)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            agent_image: format!(
                "ghcr.io/dataguardian/dataguardian:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_registry: None,
            allowed_images: Vec::new(),
            max_concurrent_backups: NonZeroUsize::new(10),
            max_concurrent_restores: NonZeroUsize::new(4),
            max_concurrent_validations: NonZeroUsize::new(2),
            job_ttl_seconds: 86_400,
            default_stall_timeout: Duration::from_secs(600),
            egress: EgressPolicy::default(),
            ambient_credentials_namespaces: Vec::new(),
            requester_recorded: false,
            restore_approval: crate::api::backup_policy::ApprovalRequirement::Never,
            restore_approval_valid_for: Duration::from_secs(3600),
        }
    }
}

impl From<&Settings> for JobDefaults {
    fn from(settings: &Settings) -> Self {
        let registry = settings.image_registry.as_deref();
        let agent_image = crate::jobs::shell::with_registry(&settings.agent_image, registry);
        let allowed_images = if settings.allowed_images.is_empty() {
            ImageAllowList::default_for_registry(&agent_image, registry)
        } else {
            ImageAllowList::new(settings.allowed_images.iter().cloned())
        };
        JobDefaults {
            agent_image,
            image_registry: settings.image_registry.clone(),
            ttl_seconds_after_finished: settings.job_ttl_seconds,
            egress: settings.egress.clone(),
            allowed_images,
        }
    }
}

/// Shared by all reconcilers.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Every BackupRun in the cluster: active ones whole (the fair backup queue), finished ones
    /// as records by policy (status, retention, RPO, automatic validations).
    pub runs: RunCache,
    /// Every RestoreValidation in the cluster (for the validation queue); empty until
    /// [`Context::with_validations`] supplies the RestoreValidation controller's store.
    pub validations: Store<RestoreValidation>,
    /// Wakes the RestoreValidation controller for a validation (queued ones, when a slot frees).
    validation_wake: Option<UnboundedSender<ObjectRef<RestoreValidation>>>,
    /// Every RestoreRun in the cluster (for the restore queue); empty until
    /// [`Context::with_restore_runs`] supplies the RestoreRun controller's store.
    pub restore_runs: Store<RestoreRun>,
    /// Set once the BackupRun cache holds its first full list. Reconcilers that read other
    /// objects' runs from it (policies: status, retention, RPO) wait for it, so that a fresh
    /// start never reports a policy as having no backups.
    runs_synced: Arc<AtomicBool>,
    /// The notification client, under [`Settings::egress`].
    pub webhooks: Webhooks,
    /// Notifications being delivered and storms being folded.
    pub notifications: Notifications,
    /// The audit trail's writer (`--audit-storage`), on the leader only; `None`: no trail.
    pub audit: Option<crate::audit::sink::AuditSink>,
}

/// The name DataGuardian reports its Events under.
pub const REPORTER: &str = "dataguardian-operator";

impl Context {
    pub fn new(client: Client, metrics: Metrics, settings: Settings, runs: RunCache) -> Self {
        let instance = std::env::var("POD_NAME").ok();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance,
            },
        );
        Context {
            client,
            metrics,
            recorder,
            webhooks: Webhooks::new(settings.egress.clone()),
            notifications: Notifications::default(),
            settings,
            runs,
            restore_runs: kube::runtime::reflector::store::Writer::default().as_reader(),
            validations: kube::runtime::reflector::store::Writer::default().as_reader(),
            validation_wake: None,
            runs_synced: Arc::new(AtomicBool::new(false)),
            audit: None,
        }
    }

    /// Writes audited actions to `sink` ([`Context::audit_durably`]).
    pub fn with_audit(mut self, sink: crate::audit::sink::AuditSink) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Makes `record` durable in the audit trail's write-ahead spool before the caller carries
    /// out the action it describes (an action no status shows afterwards: a retention deletion,
    /// a key rotation). `Err`: the record is not durable (spool full or unwritable) and the
    /// caller must wait. Nothing to do without `--audit-storage`.
    pub async fn audit_durably(
        &self,
        record: Option<crate::audit::record::AuditRecord>,
    ) -> std::result::Result<(), crate::audit::spool::SpoolError> {
        match (&self.audit, record) {
            (Some(sink), Some(record)) => sink.offer_durably(record).await,
            _ => Ok(()),
        }
    }

    /// Marks the BackupRun cache as synced (see [`Context::runs_synced`]).
    pub fn mark_runs_synced(&self) {
        self.runs_synced.store(true, Ordering::SeqCst);
    }

    /// Uses `flag` as the BackupRun cache's sync flag: the operator's BackupRun feed, started
    /// before this context (on every replica), sets it.
    pub fn with_runs_synced(mut self, flag: Arc<AtomicBool>) -> Self {
        self.runs_synced = flag;
        self
    }

    /// Whether the BackupRun cache holds its first full list.
    pub fn runs_synced(&self) -> bool {
        self.runs_synced.load(Ordering::SeqCst)
    }

    /// Uses `store` (the RestoreRun controller's reflector) for the restore queue.
    pub fn with_restore_runs(mut self, store: Store<RestoreRun>) -> Self {
        self.restore_runs = store;
        self
    }

    /// Uses `store` (the RestoreValidation controller's reflector) for the validation queue.
    /// `wake` reaches the same controller (its `reconcile_on`).
    pub fn with_validations(
        mut self,
        store: Store<RestoreValidation>,
        wake: UnboundedSender<ObjectRef<RestoreValidation>>,
    ) -> Self {
        self.validations = store;
        self.validation_wake = Some(wake);
        self
    }

    /// Wakes every validation waiting in the queue (a slot just freed).
    pub fn wake_queued_validations(&self) {
        let Some(wake) = &self.validation_wake else {
            return;
        };
        for v in self.validations.state() {
            let queued = v
                .status
                .as_ref()
                .is_some_and(|s| s.queue_position.is_some() && s.job_name.is_none());
            if queued {
                // A closed channel is a controller shutting down: nobody to wake.
                let _ = wake.unbounded_send(ObjectRef::from_obj(v.as_ref()));
            }
        }
    }

    /// Publishes an Event about `obj`. Event failures are logged, never fatal: the status is the
    /// durable audit trail, Events are its live feed.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Sends `n` to the channels of `policy` that hear its event, at least once: each
    /// (notification, rule) is recorded in the policy's status first, then delivered on a task
    /// of its own (a slow receiver never holds up a reconcile), then removed. A storm of
    /// identical failures is folded into the first message and one digest. Failures become a
    /// Warning Event on the policy; every outcome is counted.
    pub fn notify(&self, policy: &BackupPolicy, n: Notification) {
        let rules: Vec<_> = rules_for(&policy.spec.notifications, n.event)
            .into_iter()
            .cloned()
            .collect();
        if rules.is_empty() {
            return;
        }
        let ctx = self.clone();
        let policy = policy.clone();
        tokio::spawn(async move { ctx.enqueue(&policy, rules, n).await });
    }

    async fn enqueue(&self, policy: &BackupPolicy, rules: Vec<NotificationRule>, n: Notification) {
        let now = chrono::Utc::now();
        let mut sends = Vec::new();
        for rule in rules {
            let fold = self
                .notifications
                .folder
                .lock()
                .map(|mut f| f.offer(&n, &rule.name, now, self.notifications.fold_window))
                .unwrap_or(Fold::Send);
            match fold {
                Fold::Folded => {
                    self.count_notification(&n, "folded");
                    continue;
                }
                Fold::SendAndOpen => self.close_fold_later(fold_key(&n, &rule.name)),
                Fold::Send => {}
            }
            let key = outbox::key(&n, &rule.name);
            if self.notifications.claim(&key) {
                sends.push((key, rule));
            }
        }
        if sends.is_empty() {
            return;
        }
        let records = sends
            .iter()
            .map(|(key, rule)| (key.clone(), outbox::record(&n, &rule.name)))
            .collect();
        if let Err(e) = outbox::add(&self.client, &n.namespace, &n.policy, &records).await {
            // Sent anyway: only an operator restart before delivery would lose it now.
            tracing::warn!(
                namespace = %n.namespace, policy = %n.policy, error = %e,
                "notification not recorded before sending"
            );
        }
        for (key, rule) in sends {
            let ctx = self.clone();
            let policy = policy.clone();
            let n = n.clone();
            tokio::spawn(
                async move { ctx.deliver(&policy, &rule, &n, &key).await }.in_current_span(),
            );
        }
    }

    /// When the storm window of `key` closes, sends its digest (if anything was folded).
    fn close_fold_later(&self, key: FoldKey) {
        let ctx = self.clone();
        let (ns, name) = (key.0.clone(), key.1.clone());
        let rule_name = key.2.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ctx.notifications.fold_window).await;
            let digest = ctx
                .notifications
                .folder
                .lock()
                .ok()
                .and_then(|mut f| f.close(&key));
            let Some(digest) = digest else {
                return;
            };
            // The policy as it is now (its rules may have changed).
            let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
            let Ok(Some(policy)) = policies.get_opt(&name).await else {
                return;
            };
            let rules: Vec<_> = rules_for(&policy.spec.notifications, digest.event)
                .into_iter()
                .filter(|r| r.name == rule_name)
                .cloned()
                .collect();
            if !rules.is_empty() {
                ctx.enqueue(&policy, rules, digest).await;
            }
        });
    }

    /// Sends again what `policy`'s status still records as pending and no task of this
    /// process is sending (after an operator restart), with the same idempotency keys. A
    /// record whose rule is gone is dropped.
    pub fn resume_notifications(&self, policy: &BackupPolicy) {
        let Some(status) = &policy.status else {
            return;
        };
        let ns = policy.namespace().unwrap_or_default();
        let name = policy.name_any();
        for (key, record) in &status.pending_notifications {
            if self.notifications.finished_recently(key) {
                // Finished here: this is a policy read before the removal, or the removal
                // failed. Remove it (again); never send it twice from one process.
                let (client, ns, name, key) =
                    (self.client.clone(), ns.clone(), name.clone(), key.clone());
                tokio::spawn(async move { outbox::remove(&client, &ns, &name, &key).await });
                continue;
            }
            if !self.notifications.claim(key) {
                continue;
            }
            let rule = policy
                .spec
                .notifications
                .iter()
                .find(|r| r.name == record.rule)
                .cloned();
            let n = outbox::from_record(&ns, &name, record);
            let (ns, name) = (ns.clone(), name.clone());
            let ctx = self.clone();
            let policy = policy.clone();
            let key = key.clone();
            tokio::spawn(async move {
                match (rule, n) {
                    (Some(rule), Some(n)) => {
                        tracing::info!(
                            namespace = %n.namespace, policy = %n.policy, rule = %rule.name,
                            event = n.event.as_str(), object = %n.name, key = %key,
                            "sending a pending notification again"
                        );
                        ctx.deliver(&policy, &rule, &n, &key).await;
                    }
                    _ => {
                        let _ = outbox::remove(&ctx.client, &ns, &name, &key).await;
                        ctx.notifications.release(&key, true);
                    }
                }
            });
        }
    }

    /// Delivers one recorded notification, then removes its record, counts it, and reports
    /// a failure as an Event.
    #[tracing::instrument(
        name = "notify",
        skip_all,
        fields(policy = %n.policy, rule = %rule.name, event = ?n.event)
    )]
    async fn deliver(
        &self,
        policy: &BackupPolicy,
        rule: &NotificationRule,
        n: &Notification,
        key: &str,
    ) {
        let outcome = crate::notify::deliver(
            &self.client,
            &self.webhooks,
            rule,
            n,
            key,
            self.notifications.backoff,
        )
        .await;
        if let Err(e) = outbox::remove(&self.client, &n.namespace, &n.policy, key).await {
            tracing::warn!(
                namespace = %n.namespace, policy = %n.policy, error = %e,
                "a delivered notification is still recorded as pending"
            );
        }
        self.notifications.release(key, true);
        let rule = &rule.name;
        match outcome {
            Ok(attempts) => {
                self.count_notification(n, "delivered");
                tracing::info!(
                    namespace = %n.namespace, policy = %n.policy, rule = %rule,
                    event = n.event.as_str(), object = %n.name, key, attempts,
                    "notification delivered"
                );
            }
            Err(e) => {
                self.count_notification(n, e.category());
                tracing::warn!(
                    namespace = %n.namespace, policy = %n.policy, rule = %rule,
                    event = n.event.as_str(), key, error = %e, "notification not delivered"
                );
                let reason = match e {
                    DeliveryError::Template(_) => "NotificationTemplateInvalid",
                    _ => "NotificationFailed",
                };
                self.event(
                    policy,
                    EventType::Warning,
                    reason,
                    "Notify",
                    format!(
                        "rule {rule}: {} about {} {}: {e}",
                        n.event.as_str(),
                        n.kind,
                        n.name
                    ),
                )
                .await;
            }
        }
    }

    fn count_notification(&self, n: &Notification, result: &str) {
        self.metrics
            .notifications
            .get_or_create(&NotificationLabels {
                namespace: n.namespace.clone(),
                policy: n.policy.clone(),
                event: n.event.as_str().into(),
                result: result.into(),
            })
            .inc();
    }

    /// [`Context::notify`] for the policy `ns/name`, read from the API (restores and
    /// validations know their policy by name only). Nothing is sent when it is gone.
    pub async fn notify_policy_named(&self, ns: &str, name: &str, n: Notification) {
        if name.is_empty() {
            return;
        }
        let policies: Api<BackupPolicy> = Api::namespaced(self.client.clone(), ns);
        match policies.get_opt(name).await {
            Ok(Some(policy)) => self.notify(&policy, n),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                namespace = ns, policy = name, error = %e,
                "notification skipped: the policy could not be read"
            ),
        }
    }
}

/// How long a finished notification's key is remembered (see [`Notifications::claim`]).
const FINISHED_MEMORY: Duration = Duration::from_secs(600);

/// The base pause before a notification's retries (doubled per retry, jittered).
const NOTIFY_BACKOFF: Duration = Duration::from_secs(1);

/// The notification state of this operator process.
#[derive(Clone)]
pub struct Notifications {
    /// Keys some task of this process is delivering (a pending record seen again by a
    /// reconcile is not sent twice at once).
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Keys this process finished (delivered or gave up) recently, with when: a reconcile of a
    /// policy read before the record's removal reached the cache must not send it again.
    finished: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// Storm folding windows.
    folder: Arc<Mutex<Folder>>,
    /// Base pause between attempts.
    pub backoff: Duration,
    /// How long identical failures after the first are folded into a digest.
    pub fold_window: Duration,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            in_flight: Arc::default(),
            finished: Arc::default(),
            folder: Arc::default(),
            backoff: NOTIFY_BACKOFF,
            fold_window: crate::notify::outbox::FOLD_WINDOW,
        }
    }
}

impl Notifications {
    /// Marks `key` as being delivered by this process; false if it already is, or finished
    /// within [`FINISHED_MEMORY`].
    fn claim(&self, key: &str) -> bool {
        if self.finished_recently(key) {
            return false;
        }
        self.in_flight
            .lock()
            .map(|mut s| s.insert(key.to_string()))
            .unwrap_or(false)
    }

    /// Whether this process finished `key` within [`FINISHED_MEMORY`] (and forgets older ones).
    fn finished_recently(&self, key: &str) -> bool {
        let Ok(mut done) = self.finished.lock() else {
            return false;
        };
        done.retain(|_, at| at.elapsed() < FINISHED_MEMORY);
        done.contains_key(key)
    }

    /// `key` is no longer being delivered; `finished`: delivered or given up.
    fn release(&self, key: &str, finished: bool) {
        if finished && let Ok(mut done) = self.finished.lock() {
            done.insert(key.to_string(), std::time::Instant::now());
        }
        if let Ok(mut s) = self.in_flight.lock() {
            s.remove(key);
        }
    }
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod notify_tests;
