//! At-least-once delivery: each notification is recorded in its policy's
//! `status.pendingNotifications` (keyed by its idempotency key) **before** it is sent, and
//! removed once delivered or given up. An operator that dies in between finds it there after
//! restarting and sends it again with the same key.
//!
//! Why the policy's status: the rules that decide who hears an event live in the policy, the
//! operator already owns the policy's status (no new RBAC, no extra object to garbage-collect),
//! a pending notification is visible with `kubectl get backuppolicy -o yaml`, and it goes away
//! with the policy. The record holds what the message is made of (never a URL or credential:
//! those are read from their Secrets at each attempt). Entries are written with JSON merge
//! patches of single keys, so concurrent writers (the policy controller's server-side apply,
//! other deliveries) never overwrite each other.
//!
//! Storms: a run of identical failures (same rule, event and reason) within
//! [`FOLD_WINDOW`] is folded: the first is sent at once, the others are counted, and one digest
//! goes out when the window closes ([`Folder`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::message::{Details, Digest, Notification};
use crate::api::BackupPolicy;
use crate::api::backup_policy::PendingNotification;

/// The field manager of the pending-notification entries.
pub const FIELD_MANAGER: &str = "dataguardian-notify";
/// Identical failures within this window after the first are folded into one digest.
pub const FOLD_WINDOW: Duration = Duration::from_secs(600);
/// The most objects a digest names.
pub const DIGEST_NAMES: usize = 10;
/// The longest message kept in a record (status objects stay small).
const MAX_MESSAGE: usize = 2048;

/// The idempotency key of `n` for `rule`: the same transition always gets the same key (also
/// when it is recomputed after a restart), two transitions never do.
pub fn key(n: &Notification, rule: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        n.namespace.as_str(),
        n.policy.as_str(),
        rule,
        n.event.as_str(),
        n.kind.as_str(),
        n.name.as_str(),
        &n.time.to_rfc3339_opts(SecondsFormat::Millis, true),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    // A UUID-shaped string (CloudEvents ids and Message-IDs take any string; this one reads
    // well in logs and headers).
    let x = hex::encode(&digest[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The record of `n` for `rule`.
pub fn record(n: &Notification, rule: &str) -> PendingNotification {
    let d = &n.details;
    let mut details = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            details.insert(k.to_string(), v);
        }
    };
    put("database", d.database.clone());
    put("run", d.run.clone());
    put("sizeBytes", d.size_bytes.map(|b| b.to_string()));
    put("durationSeconds", d.duration_seconds.map(|s| s.to_string()));
    put("requester", d.requester.clone());
    put("traceId", d.trace_id.clone());
    if let Some(g) = &d.digest {
        put("digestCount", Some(g.count.to_string()));
        put("digestNames", Some(g.names.join(",")));
    }
    let mut message = n.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    PendingNotification {
        rule: rule.to_string(),
        event: n.event,
        kind: n.kind.clone(),
        name: n.name.clone(),
        reason: n.reason.clone(),
        message,
        time: n.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        details,
    }
}

/// The notification a record of policy `ns/policy` stands for (`None` if its time is
/// unreadable: a hand-edited status).
pub fn from_record(ns: &str, policy: &str, r: &PendingNotification) -> Option<Notification> {
    let time: DateTime<Utc> = DateTime::parse_from_rfc3339(&r.time)
        .ok()?
        .with_timezone(&Utc);
    let get = |k: &str| r.details.get(k).cloned();
    let digest = get("digestCount")
        .and_then(|c| c.parse().ok())
        .map(|count| Digest {
            count,
            names: get("digestNames")
                .map(|s| {
                    s.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        });
    Some(Notification {
        event: r.event,
        namespace: ns.to_string(),
        policy: policy.to_string(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        time,
        details: Details {
            database: get("database"),
            run: get("run"),
            size_bytes: get("sizeBytes").and_then(|s| s.parse().ok()),
            duration_seconds: get("durationSeconds").and_then(|s| s.parse().ok()),
            requester: get("requester"),
            trace_id: get("traceId"),
            digest,
        },
    })
}

/// Why the outbox could not be written.
#[derive(Debug, thiserror::Error)]
#[error("recording the notification in the policy's status failed: {0}")]
pub struct OutboxError(String);

fn patch_error(e: kube::Error) -> OutboxError {
    OutboxError(match e {
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.reason),
        _ => "API unreachable".into(),
    })
}

/// Records `records` (key → record) as pending on policy `ns/policy`.
pub async fn add(
    client: &kube::Client,
    ns: &str,
    policy: &str,
    records: &BTreeMap<String, PendingNotification>,
) -> Result<(), OutboxError> {
    if records.is_empty() {
        return Ok(());
    }
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), ns);
    let body = json!({"status": {"pendingNotifications": records}});
    api.patch_status(
        policy,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(&body),
    )
    .await
    .map_err(patch_error)?;
    Ok(())
}

/// Removes the pending record `key` of policy `ns/policy` (delivered or given up). A policy
/// that is gone has nothing to remove.
pub async fn remove(
    client: &kube::Client,
    ns: &str,
    policy: &str,
    key: &str,
) -> Result<(), OutboxError> {
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), ns);
    let body = json!({"status": {"pendingNotifications": {key: null}}});
    match api
        .patch_status(
            policy,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(patch_error(e)),
    }
}

/// What to do with a notification, storm-wise.
#[derive(Debug, Clone, PartialEq)]
pub enum Fold {
    /// Send it (the first of its kind in the window, or not a failure).
    Send,
    /// Send it, and this is the first of a new window: a digest is due at `FOLD_WINDOW` later.
    SendAndOpen,
    /// Do not send it: counted into the window's digest.
    Folded,
}

/// Which failures are "identical": same policy, rule, event and reason.
pub type FoldKey = (String, String, String, String, String);

/// The storm folder's state (in memory: a restart in the middle of a window sends the next
/// failure again, which opens a new window).
#[derive(Debug, Default)]
pub struct Folder {
    windows: HashMap<FoldKey, Window>,
}

#[derive(Debug)]
struct Window {
    opened: DateTime<Utc>,
    folded: u32,
    names: Vec<String>,
    /// The newest folded notification (the digest is made from it).
    last: Option<Notification>,
}

/// The fold key of `n` for `rule`.
pub fn fold_key(n: &Notification, rule: &str) -> FoldKey {
    (
        n.namespace.clone(),
        n.policy.clone(),
        rule.to_string(),
        n.event.as_str().to_string(),
        n.reason.clone(),
    )
}

impl Folder {
    /// Decides about `n` for `rule` at `now`, for storm windows of `window`. Only failures
    /// fold; a digest is never folded.
    pub fn offer(
        &mut self,
        n: &Notification,
        rule: &str,
        now: DateTime<Utc>,
        window: Duration,
    ) -> Fold {
        if !n.event.is_failure() || n.details.digest.is_some() {
            return Fold::Send;
        }
        let key = fold_key(n, rule);
        let window = chrono::Duration::from_std(window).unwrap_or_default();
        match self.windows.get_mut(&key) {
            Some(w) if now - w.opened < window => {
                w.folded += 1;
                if w.names.len() < DIGEST_NAMES {
                    w.names.push(n.name.clone());
                }
                w.last = Some(n.clone());
                Fold::Folded
            }
            _ => {
                self.windows.insert(
                    key,
                    Window {
                        opened: now,
                        folded: 0,
                        names: Vec::new(),
                        last: None,
                    },
                );
                Fold::SendAndOpen
            }
        }
    }

    /// Closes the window of `key`: the digest to send, if anything was folded in it.
    pub fn close(&mut self, key: &FoldKey) -> Option<Notification> {
        let w = self.windows.remove(key)?;
        let mut n = w.last?;
        n.details.digest = Some(Digest {
            count: w.folded,
            names: w.names,
        });
        n.message = format!(
            "{} more {} ({}) since {}; the newest: {}",
            w.folded,
            n.event.as_str(),
            n.reason,
            w.opened.to_rfc3339_opts(SecondsFormat::Secs, true),
            n.message
        );
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backup_policy::NotificationEvent;

    fn n(name: &str, event: NotificationEvent, reason: &str, at: &str) -> Notification {
        Notification {
            event,
            namespace: "shop".into(),
            policy: "nightly".into(),
            kind: "BackupRun".into(),
            name: name.into(),
            reason: reason.into(),
            message: "pg_dump exited 1".into(),
            time: at.parse().unwrap(),
            details: Details {
                database: Some("postgres shop on db".into()),
                run: Some(name.into()),
                size_bytes: Some(1234),
                duration_seconds: Some(1.5),
                requester: None,
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                digest: None,
            },
        }
    }

    #[test]
    fn a_key_is_stable_and_distinct() {
        let a = n(
            "r1",
            NotificationEvent::BackupFailed,
            "DumpFailed",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(key(&a, "ops"), key(&a.clone(), "ops"));
        assert_eq!(key(&a, "ops").len(), 36);
        assert_ne!(key(&a, "ops"), key(&a, "team"));
        let mut b = a.clone();
        b.time = "2026-01-01T00:00:00.001Z".parse().unwrap();
        assert_ne!(key(&a, "ops"), key(&b, "ops"));
        b = a.clone();
        b.event = NotificationEvent::BackupSucceeded;
        assert_ne!(key(&a, "ops"), key(&b, "ops"));
    }

    #[test]
    fn a_record_round_trips_and_stays_small() {
        let mut a = n(
            "r1",
            NotificationEvent::BackupFailed,
            "DumpFailed",
            "2026-01-01T00:00:00.250Z",
        );
        a.details.digest = Some(Digest {
            count: 3,
            names: vec!["r2".into(), "r3".into()],
        });
        let r = record(&a, "ops");
        assert_eq!(r.rule, "ops");
        // Through the API's JSON and back.
        let r: PendingNotification =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(from_record("shop", "nightly", &r).unwrap(), a);
        a.message = "é".repeat(5000);
        let r = record(&a, "ops");
        assert!(r.message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(r.message.ends_with('…'));
        let mut bad = r.clone();
        bad.time = "yesterday".into();
        assert!(from_record("shop", "nightly", &bad).is_none());
    }

    #[test]
    fn a_storm_of_identical_failures_is_one_message_and_one_digest() {
        let mut f = Folder::default();
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let fail = |name: &str| {
            n(
                name,
                NotificationEvent::BackupFailed,
                "DumpFailed",
                "2026-01-01T00:00:00Z",
            )
        };
        assert_eq!(
            f.offer(&fail("r1"), "ops", at(0), FOLD_WINDOW),
            Fold::SendAndOpen
        );
        for (i, name) in ["r2", "r3", "r4"].iter().enumerate() {
            assert_eq!(
                f.offer(&fail(name), "ops", at(10 * i as i64 + 10), FOLD_WINDOW),
                Fold::Folded
            );
        }
        // Another rule, another reason, another event, or good news: not the same storm.
        assert_eq!(
            f.offer(&fail("r5"), "team", at(20), FOLD_WINDOW),
            Fold::SendAndOpen
        );
        let other = n(
            "r6",
            NotificationEvent::BackupFailed,
            "UploadFailed",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(
            f.offer(&other, "ops", at(20), FOLD_WINDOW),
            Fold::SendAndOpen
        );
        let good = n(
            "r7",
            NotificationEvent::BackupSucceeded,
            "Succeeded",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(f.offer(&good, "ops", at(20), FOLD_WINDOW), Fold::Send);
        assert_eq!(f.offer(&good, "ops", at(21), FOLD_WINDOW), Fold::Send);

        let digest = f.close(&fold_key(&fail("x"), "ops")).unwrap();
        let d = digest.details.digest.clone().unwrap();
        assert_eq!(d.count, 3);
        assert_eq!(d.names, ["r2", "r3", "r4"]);
        assert_eq!(digest.name, "r4");
        assert!(
            digest
                .message
                .starts_with("3 more BackupFailed (DumpFailed) since 2026-01-01T00:00:00Z"),
            "{}",
            digest.message
        );
        // A digest is never folded itself, and a window with nothing folded sends none.
        assert_eq!(f.offer(&digest, "ops", at(30), FOLD_WINDOW), Fold::Send);
        assert!(f.close(&fold_key(&fail("x"), "team")).is_none());
        // After the window, the next failure is sent again.
        assert_eq!(
            f.offer(&fail("r8"), "ops", at(700), FOLD_WINDOW),
            Fold::SendAndOpen
        );
        assert_eq!(
            f.offer(&fail("r9"), "ops", at(1400), FOLD_WINDOW),
            Fold::SendAndOpen
        );
    }
}
