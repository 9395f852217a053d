//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas are safe.
//!
//! The decision is pure ([`decide`]); [`LeaderElector`] does the API calls with optimistic
//! concurrency (`resourceVersion` on every replace), so two candidates can never both believe they
//! hold the lease: the loser of a race gets `409 Conflict` and stays a follower.
//!
//! The elector publishes an [`Election`]: whether this replica leads, who does, and what — if
//! anything — keeps it from taking part ([`LeaseProblem`]: a missing lease namespace, RBAC
//! refusing a verb on the Lease, an unreachable API server). `/readyz` shows the problem; the log
//! says it once (an error naming the flag or manifest that fixes a configuration problem), then
//! the elector retries quietly and carries on by itself once it is fixed.
//!
//! A follower retries every [`LeaseSettings::retry_period`] (2 s by default, like client-go), so
//! a lease released by a leader that stops (SIGTERM) is taken within that time, not after the
//! lease duration.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::telemetry::metrics::{LeaderLabels, Metrics};

/// The manifest that grants the operator its Lease (in the operator's namespace).
pub const LEADER_ELECTION_RBAC: &str = "config/rbac/leader_election_role.yaml";
/// The Role (and RoleBinding) in [`LEADER_ELECTION_RBAC`].
pub const LEADER_ELECTION_ROLE: &str = "dataguardian-leader-election";

/// What a candidate should do with the lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder's term expired): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live lease: wait.
    Follow {
        holder: String,
        expires_in: Duration,
    },
}

/// Decides from the lease's spec (None = no lease object yet) who should hold it at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(h) => h,
    };
    if holder == identity {
        return Decision::Renew;
    }
    let duration =
        SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1)));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match last {
        None => Decision::Acquire,
        Some(last) => {
            let expiry = last + duration;
            if expiry <= now {
                Decision::Acquire
            } else {
                let left = now.duration_until(expiry);
                Decision::Follow {
                    holder: holder.to_string(),
                    expires_in: Duration::try_from(left).unwrap_or_default(),
                }
            }
        }
    }
}

/// Builds the spec we write when acquiring or renewing.
pub fn desired_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    identity: &str,
    lease_seconds: i32,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    let mut spec = current.cloned().unwrap_or_default();
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(lease_seconds);
    spec.renew_time = Some(MicroTime(now));
    if *decision == Decision::Acquire {
        spec.acquire_time = Some(MicroTime(now));
        // A first acquisition of a fresh lease is not a transition; taking over a lease that
        // someone held (expired, or released on shutdown) is.
        let held_before = current.is_some_and(|s| {
            s.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) || s.acquire_time.is_some()
        });
        spec.lease_transitions = Some(if held_before {
            transitions + 1
        } else {
            transitions
        });
    }
    spec
}

/// Settings for leader election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a lease lives without renewal (a dead leader is replaced after this long).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How often a follower (or a replica that cannot reach its Lease) tries again.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings for a lease of `lease_duration_seconds` (at least 2): the leader renews every
    /// third of it, followers retry every 2 s (or as often as the leader renews, if that is
    /// more often).
    pub fn new(namespace: &str, name: &str, identity: &str, lease_duration_seconds: u64) -> Self {
        let renew_interval = Duration::from_secs((lease_duration_seconds / 3).max(1));
        LeaseSettings {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(lease_duration_seconds.max(2)),
            renew_interval,
            retry_period: renew_interval.min(Duration::from_secs(2)),
        }
    }
}

/// Errors of the election loop.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: {verb} failed: {source}")]
    Api {
        namespace: String,
        name: String,
        /// The RBAC verb of the call that failed (`get`, `create`, `update`).
        verb: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("lost the lease {namespace}/{name} to {holder}")]
    Lost {
        namespace: String,
        name: String,
        holder: String,
    },
}

/// What keeps this replica from taking part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseProblem {
    /// The lease namespace does not exist (the API server refused to create the Lease in it).
    NamespaceMissing { namespace: String },
    /// RBAC refuses `verb` on the Lease.
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        /// What the API server said (names the user it saw).
        message: String,
    },
    /// Anything else: the API server unreachable or failing.
    Unavailable {
        namespace: String,
        name: String,
        detail: String,
    },
}

impl LeaseProblem {
    /// The problem behind a failed round.
    pub fn of(error: &LeaderError) -> LeaseProblem {
        let (namespace, name) = match error {
            LeaderError::Api {
                namespace, name, ..
            }
            | LeaderError::Lost {
                namespace, name, ..
            } => (namespace.clone(), name.clone()),
        };
        let LeaderError::Api { verb, source, .. } = error else {
            return LeaseProblem::Unavailable {
                namespace,
                name,
                detail: error.to_string(),
            };
        };
        match source {
            kube::Error::Api(status) if status.code == 404 && names_namespaces(status) => {
                LeaseProblem::NamespaceMissing { namespace }
            }
            kube::Error::Api(status) if status.code == 403 => LeaseProblem::Forbidden {
                verb,
                namespace,
                name,
                message: status.message.clone(),
            },
            kube::Error::Api(status) => LeaseProblem::Unavailable {
                namespace,
                name,
                detail: format!("HTTP {} {}: {}", status.code, status.reason, status.message),
            },
            other => LeaseProblem::Unavailable {
                namespace,
                name,
                detail: other.to_string(),
            },
        }
    }

    /// The short reason `/readyz` gives.
    pub fn summary(&self) -> String {
        match self {
            LeaseProblem::NamespaceMissing { namespace } => {
                format!("lease namespace {namespace:?} not found")
            }
            LeaseProblem::Forbidden {
                verb,
                namespace,
                name,
                ..
            } => format!(
                "forbidden to {verb} Lease {name:?} in namespace {namespace:?} (coordination.k8s.io)"
            ),
            LeaseProblem::Unavailable {
                namespace,
                name,
                detail,
            } => format!("cannot reach Lease {namespace}/{name}: {detail}"),
        }
    }

    /// What fixes it.
    pub fn remedy(&self) -> String {
        match self {
            LeaseProblem::NamespaceMissing { namespace } => format!(
                "create it (kubectl create namespace {namespace}) or start the operator with \
                 --lease-namespace / POD_NAMESPACE set to an existing namespace (in a pod, \
                 POD_NAMESPACE comes from the downward API: fieldRef metadata.namespace); the \
                 operator keeps trying and starts by itself once the namespace exists"
            ),
            LeaseProblem::Forbidden {
                namespace, message, ..
            } => format!(
                "the operator's ServiceAccount needs get, create and update on \
                 coordination.k8s.io leases in namespace {namespace:?}: apply the Role and \
                 RoleBinding {LEADER_ELECTION_ROLE} ({LEADER_ELECTION_RBAC}, or the Helm chart's) \
                 in that namespace, bound to the operator's ServiceAccount; the operator keeps \
                 trying and starts by itself once it may (API server: {message})"
            ),
            LeaseProblem::Unavailable { .. } => "retrying".to_string(),
        }
    }

    /// A problem an administrator must fix (logged as an error), not a transient failure.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, LeaseProblem::Unavailable { .. })
    }

    /// Whether `other` is the same problem (ignoring details that change from round to round),
    /// so that it is not logged again.
    fn same_as(&self, other: &LeaseProblem) -> bool {
        match (self, other) {
            (
                LeaseProblem::Forbidden {
                    verb: a,
                    namespace: na,
                    ..
                },
                LeaseProblem::Forbidden {
                    verb: b,
                    namespace: nb,
                    ..
                },
            ) => a == b && na == nb,
            (LeaseProblem::Unavailable { .. }, LeaseProblem::Unavailable { .. }) => true,
            (a, b) => a == b,
        }
    }
}

impl std::fmt::Display for LeaseProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.summary(), self.remedy())
    }
}

/// Whether a 404 is about the namespace (`namespaces "x" not found`), not the object.
fn names_namespaces(status: &kube::core::Status) -> bool {
    status
        .details
        .as_ref()
        .is_some_and(|d| d.kind == "namespaces")
        || status.message.starts_with("namespaces ")
}

/// What the elector knows, published on a watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Election {
    /// At least one election round has run (until then nothing is known about the Lease).
    pub checked: bool,
    /// This replica holds the lease.
    pub leading: bool,
    /// Who held the lease when it was last read (`None`: nobody, or not read yet).
    pub holder: Option<String>,
    /// Why the last round failed, if it did.
    pub problem: Option<LeaseProblem>,
}

/// The outcome of one successful round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// We hold the lease after it.
    pub leading: bool,
    /// The holder as written or read.
    pub holder: Option<String>,
}

/// Runs the election; publishes an [`Election`] on the watch channel after every round that
/// changed it.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    tx: watch::Sender<Election>,
    metrics: Metrics,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        settings: LeaseSettings,
        metrics: Metrics,
    ) -> (Self, watch::Receiver<Election>) {
        let (tx, rx) = watch::channel(Election::default());
        let api = Api::namespaced(client, &settings.namespace);
        metrics
            .leader
            .get_or_create(&LeaderLabels {
                identity: settings.identity.clone(),
            })
            .set(0);
        (
            Self {
                api,
                settings,
                tx,
                metrics,
            },
            rx,
        )
    }

    fn api_err(&self, verb: &'static str, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            verb,
            source,
        }
    }

    fn observed(&self, spec: Option<&LeaseSpec>) {
        if let Some(t) = spec.and_then(|s| s.lease_transitions) {
            self.metrics.lease_transitions.set(i64::from(t));
        }
    }

    /// One round: whether we lead after it, and who holds the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Round, LeaderError> {
        let s = &self.settings;
        let lease_seconds = i32::try_from(s.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&s.name)
            .await
            .map_err(|e| self.api_err("get", e))?;
        let ours = Round {
            leading: true,
            holder: Some(s.identity.clone()),
        };
        let Some(current) = current else {
            let spec = desired_spec(None, &Decision::Acquire, &s.identity, lease_seconds, now);
            self.observed(Some(&spec));
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(ours),
                // Another replica created it first: it won this round.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round {
                    leading: false,
                    holder: None,
                }),
                Err(e) => Err(self.api_err("create", e)),
            };
        };
        self.observed(current.spec.as_ref());
        let decision = decide(current.spec.as_ref(), &s.identity, now);
        if let Decision::Follow { holder, .. } = decision {
            return Ok(Round {
                leading: false,
                holder: Some(holder),
            });
        }
        let mut next = current.clone();
        let spec = desired_spec(
            current.spec.as_ref(),
            &decision,
            &s.identity,
            lease_seconds,
            now,
        );
        next.spec = Some(spec);
        match self
            .api
            .replace(&s.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observed(written.spec.as_ref());
                Ok(ours)
            }
            // Someone else wrote the lease since we read it: they won this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round {
                leading: false,
                holder: None,
            }),
            Err(e) => Err(self.api_err("update", e)),
        }
    }

    fn publish(&self, election: Election) {
        self.metrics
            .leader
            .get_or_create(&LeaderLabels {
                identity: self.settings.identity.clone(),
            })
            .set(i64::from(election.leading));
        self.tx.send_if_modified(|current| {
            if *current == election {
                false
            } else {
                *current = election;
                true
            }
        });
    }

    /// Campaigns until leadership is won, then renews; returns an error if leadership is lost
    /// (the process should then exit so that nothing acts on a stale belief of leading).
    pub async fn run(self) -> Result<(), LeaderError> {
        let mut leading = false;
        let mut holder: Option<String> = None;
        let mut last_renew = tokio::time::Instant::now();
        // The problem last logged, so that a repeated failure is logged once.
        let mut reported: Option<LeaseProblem> = None;
        let s = &self.settings;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(round) => {
                    if let Some(problem) = reported.take() {
                        tracing::info!(lease = %s.name, namespace = %s.namespace, was = %problem.summary(), "the lease is reachable again; taking part in the election");
                    }
                    if round.leading {
                        if !leading {
                            tracing::info!(lease = %s.name, identity = %s.identity, "acquired leadership");
                            leading = true;
                        }
                        last_renew = tokio::time::Instant::now();
                    } else if leading {
                        self.publish(Election {
                            checked: true,
                            leading: false,
                            holder: round.holder.clone(),
                            problem: None,
                        });
                        let holder = match round.holder {
                            Some(h) => h,
                            None => self
                                .api
                                .get_opt(&s.name)
                                .await
                                .ok()
                                .flatten()
                                .and_then(|l| l.spec.and_then(|s| s.holder_identity))
                                .unwrap_or_default(),
                        };
                        return Err(LeaderError::Lost {
                            namespace: s.namespace.clone(),
                            name: s.name.clone(),
                            holder,
                        });
                    }
                    if round.holder.is_some() {
                        holder = round.holder;
                    }
                    self.publish(Election {
                        checked: true,
                        leading,
                        holder: holder.clone(),
                        problem: None,
                    });
                }
                Err(e) => {
                    let problem = LeaseProblem::of(&e);
                    let new = reported.as_ref().is_none_or(|r| !r.same_as(&problem));
                    if !new {
                        tracing::debug!(error = %e, "leader election round failed again");
                    } else if problem.is_configuration() {
                        tracing::error!(lease = %s.name, namespace = %s.namespace, "cannot take part in leader election: {problem}");
                    } else {
                        tracing::warn!(error = %e, "leader election round failed; retrying");
                    }
                    reported = Some(problem.clone());
                    let expired = leading && last_renew.elapsed() >= s.lease_duration;
                    self.publish(Election {
                        checked: true,
                        leading: leading && !expired,
                        holder: holder.clone(),
                        problem: Some(problem),
                    });
                    if expired {
                        return Err(e);
                    }
                }
            }
            let pause = if leading {
                s.renew_interval
            } else {
                s.retry_period
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Gives the lease up (on shutdown) so that another replica takes over at once.
    pub async fn release(api: &Api<Lease>, name: &str, identity: &str) -> Result<(), kube::Error> {
        if let Some(mut lease) = api.get_opt(name).await?
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(identity)
        {
            spec.holder_identity = None;
            api.replace(name, &PostParams::default(), &lease).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(holder: Option<&str>, renew: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(at(renew))),
            lease_duration_seconds: Some(secs),
            lease_transitions: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_or_holder_means_acquire() {
        let now = at("2026-11-22T10:00:00Z");
        assert_eq!(decide(None, "a", now), Decision::Acquire);
        assert_eq!(
            decide(Some(&spec(None, "2026-11-22T09:59:59Z", 15)), "a", now),
            Decision::Acquire
        );
    }

    #[test]
    fn live_lease_of_other_means_follow_until_expiry() {
        let now = at("2026-11-22T10:00:00Z");
        let s = spec(Some("b"), "2026-11-22T09:59:50Z", 15);
        assert_eq!(
            decide(Some(&s), "a", now),
            Decision::Follow {
                holder: "b".into(),
                expires_in: Duration::from_secs(5)
            }
        );
        assert_eq!(decide(Some(&s), "b", now), Decision::Renew);
    }

    #[test]
    fn expired_lease_is_taken_over_and_counts_a_transition() {
        let now = at("2026-11-22T10:00:00Z");
        let s = spec(Some("b"), "2026-11-22T09:59:45Z", 15);
        let d = decide(Some(&s), "a", now);
        assert_eq!(d, Decision::Acquire);
        let next = desired_spec(Some(&s), &d, "a", 15, now);
        assert_eq!(next.holder_identity.as_deref(), Some("a"));
        assert_eq!(next.lease_transitions, Some(3));
        assert_eq!(next.acquire_time, Some(MicroTime(now)));
    }

    #[test]
    fn renew_keeps_acquire_time_and_transitions() {
        let now = at("2026-11-22T10:00:00Z");
        let mut s = spec(Some("a"), "2026-11-22T09:59:55Z", 15);
        s.acquire_time = Some(MicroTime(at("2026-11-22T09:00:00Z")));
        let next = desired_spec(Some(&s), &Decision::Renew, "a", 15, now);
        assert_eq!(next.acquire_time, s.acquire_time);
        assert_eq!(next.lease_transitions, Some(2));
        assert_eq!(next.renew_time, Some(MicroTime(now)));
    }

    #[test]
    fn a_released_lease_taken_over_counts_a_transition() {
        let now = at("2026-11-22T10:00:00Z");
        let mut released = spec(None, "2026-11-22T09:59:59Z", 15);
        released.acquire_time = Some(MicroTime(at("2026-11-22T09:00:00Z")));
        let d = decide(Some(&released), "b", now);
        assert_eq!(d, Decision::Acquire, "a released lease is free at once");
        assert_eq!(
            desired_spec(Some(&released), &d, "b", 15, now).lease_transitions,
            Some(3)
        );
        // A lease object nobody ever held is not a transition.
        let fresh = LeaseSpec::default();
        assert_eq!(
            desired_spec(Some(&fresh), &Decision::Acquire, "b", 15, now).lease_transitions,
            Some(0)
        );
        assert_eq!(
            desired_spec(None, &Decision::Acquire, "b", 15, now).lease_transitions,
            Some(0)
        );
    }

    fn api_error(
        verb: &'static str,
        code: u16,
        reason: &str,
        message: &str,
        kind: &str,
    ) -> LeaderError {
        LeaderError::Api {
            namespace: "dg".into(),
            name: "dataguardian-operator".into(),
            verb,
            source: kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: message.into(),
                details: Some(kube::core::response::StatusDetails {
                    name: "dg".into(),
                    group: String::new(),
                    kind: kind.into(),
                    uid: String::new(),
                    causes: Vec::new(),
                    retry_after_seconds: 0,
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn failed_rounds_name_what_is_missing_and_what_fixes_it() {
        // kube-apiserver creating an object in a namespace that does not exist.
        let missing = LeaseProblem::of(&api_error(
            "create",
            404,
            "NotFound",
            "namespaces \"dg\" not found",
            "namespaces",
        ));
        assert_eq!(
            missing,
            LeaseProblem::NamespaceMissing {
                namespace: "dg".into()
            }
        );
        let text = missing.to_string();
        for needle in [
            "lease namespace \"dg\" not found",
            "kubectl create namespace dg",
            "--lease-namespace",
            "POD_NAMESPACE",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(missing.is_configuration());

        let forbidden = LeaseProblem::of(&api_error(
            "update",
            403,
            "Forbidden",
            "leases.coordination.k8s.io \"dataguardian-operator\" is forbidden: User \"system:serviceaccount:dg:dataguardian\" cannot update resource \"leases\"",
            "leases",
        ));
        let text = forbidden.to_string();
        for needle in [
            "forbidden to update Lease \"dataguardian-operator\" in namespace \"dg\"",
            LEADER_ELECTION_RBAC,
            LEADER_ELECTION_ROLE,
            "system:serviceaccount:dg:dataguardian",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(forbidden.is_configuration());

        // A 404 about the Lease itself, or a server error, is not a configuration problem.
        let other = LeaseProblem::of(&api_error(
            "update",
            500,
            "InternalError",
            "etcd timeout",
            "leases",
        ));
        assert!(!other.is_configuration());
        assert!(other.summary().contains("HTTP 500"), "{}", other.summary());
        let lease_gone = LeaseProblem::of(&api_error(
            "update",
            404,
            "NotFound",
            "leases.coordination.k8s.io \"dataguardian-operator\" not found",
            "leases",
        ));
        assert!(!lease_gone.is_configuration());

        // Repeats of one problem are one problem (logged once), whatever their details.
        let again = LeaseProblem::of(&api_error(
            "update",
            503,
            "ServiceUnavailable",
            "try later",
            "leases",
        ));
        assert!(other.same_as(&again));
        assert!(!other.same_as(&missing));
        assert!(missing.same_as(&missing.clone()));
    }
}
