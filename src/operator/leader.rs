//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas are safe.
//!
//! The decision is pure ([`decide`]); [`LeaderElector`] does the API calls with optimistic
//! concurrency (`resourceVersion` on every replace), so two candidates can never both believe they
//! hold the lease: the loser of a race gets `409 Conflict` and stays a follower.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

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
        // A first acquisition of a fresh lease is not a transition.
        let had_holder = current
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| !h.is_empty());
        spec.lease_transitions = Some(if had_holder {
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
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

/// Errors of the election loop.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {namespace}/{name}: API error: {source}")]
    Api {
        namespace: String,
        name: String,
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

/// Runs the election; publishes `true` on the watch channel while this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    tx: watch::Sender<bool>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> (Self, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let api = Api::namespaced(client, &settings.namespace);
        (Self { api, settings, tx }, rx)
    }

    fn api_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    /// One round: returns whether we lead after it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let s = &self.settings;
        let lease_seconds = i32::try_from(s.lease_duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1);
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&s.name)
            .await
            .map_err(|e| self.api_err(e))?;
        let Some(current) = current else {
            let spec = desired_spec(None, &Decision::Acquire, &s.identity, lease_seconds, now);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.api_err(e)),
            };
        };
        let decision = decide(current.spec.as_ref(), &s.identity, now);
        if let Decision::Follow { .. } = decision {
            return Ok(false);
        }
        let mut next = current.clone();
        next.spec = Some(desired_spec(
            current.spec.as_ref(),
            &decision,
            &s.identity,
            lease_seconds,
            now,
        ));
        match self
            .api
            .replace(&s.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote the lease since we read it: they won this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.api_err(e)),
        }
    }

    /// Campaigns until leadership is won, then renews; returns an error if leadership is lost
    /// (the process should then exit so that nothing acts on a stale belief of leading).
    pub async fn run(self) -> Result<(), LeaderError> {
        let mut leading = false;
        let mut last_renew = tokio::time::Instant::now();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    if !leading {
                        tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired leadership");
                        leading = true;
                        self.tx.send_replace(true);
                    }
                    last_renew = tokio::time::Instant::now();
                }
                Ok(false) if leading => {
                    self.tx.send_replace(false);
                    let holder = self
                        .api
                        .get_opt(&self.settings.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
                        .unwrap_or_default();
                    return Err(LeaderError::Lost {
                        namespace: self.settings.namespace.clone(),
                        name: self.settings.name.clone(),
                        holder,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    if leading && last_renew.elapsed() >= self.settings.lease_duration {
                        self.tx.send_replace(false);
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(self.settings.renew_interval).await;
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
}
