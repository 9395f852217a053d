//! Writing the audit trail: records are queued per namespace, and a background task writes each
//! namespace's queue as the next segment of its chain ([`super::chain`]), with Object Lock
//! retention when the bucket supports it. Delivery is at least once: a record leaves the queue
//! only once the segment holding it was written; a failed write keeps it queued (counted in
//! `dataguardian_audit_records_failed_total`) and the chain's head is re-read from storage
//! before the next attempt, so a write that did land is never written twice.
//!
//! After a restart the queue is empty; the reconcilers offer again every record their objects'
//! status shows ([`super::record::Audited`]) and the sink drops those the chain already holds:
//! by id against the last [`SinkSettings::tail_segments`] segments, and by time for records
//! older than what those segments cover (they were written before).
//!
//! Records no status shows afterwards go through the write-ahead [`Spool`] first
//! ([`AuditSink::offer_durably`]): the sink remembers which queued records are spooled, compares
//! them by id only (a spooled record may have waited for days: its time says nothing about the
//! chain), and removes their spool entries once a segment holding them was confirmed or the
//! chain was found to hold them already ([`AuditSink::release_confirmed`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::api::backup_storage::ObjectLock;
use crate::controller::common::storage_access::{AccessError, StorageAccess};
use crate::telemetry::metrics::Metrics;

use super::chain::{self, GENESIS};
use super::record::AuditRecord;
use super::spool::{Spool, SpoolError};

/// How the sink batches and remembers.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// How often queued records are written (a segment per namespace with records).
    pub flush_interval: Duration,
    /// At most this many records per segment.
    pub max_records_per_segment: usize,
    /// How many of a chain's last segments are read to find its head and the ids it holds.
    pub tail_segments: usize,
    /// How long after a failed write the next attempt waits (doubling up to 16×).
    pub retry_after: Duration,
}

impl Default for SinkSettings {
    fn default() -> Self {
        SinkSettings {
            flush_interval: Duration::from_secs(5),
            max_records_per_segment: 500,
            tail_segments: 16,
            retry_after: Duration::from_secs(2),
        }
    }
}

/// Ids remembered as written, per process (bounded; older ones are found in the chain's tail).
const REMEMBERED: usize = 200_000;

/// How much older than the tail's oldest record a record may be and still be compared by id.
fn window_slack() -> chrono::Duration {
    chrono::Duration::hours(1)
}

/// The head of one namespace's chain, as read from storage.
#[derive(Debug, Clone)]
struct Head {
    next_index: u64,
    previous: String,
    /// Ids in the segments read.
    ids: HashSet<String>,
    /// Records older than this were written before the segments read (`None`: every segment
    /// was read, compare by id only).
    covered_from: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    /// Queued records per namespace, in the order offered.
    queued: BTreeMap<String, Vec<(AuditRecord, Instant)>>,
    queued_ids: HashSet<String>,
    /// Ids written (by this process) or found in a chain.
    written: HashSet<String>,
    written_order: VecDeque<String>,
    heads: HashMap<String, Head>,
    /// Queued records that are in the spool (compared by id only).
    spooled: HashSet<String>,
    /// Spooled records the chain holds (written, or found there): their entries can go.
    confirmed: Vec<String>,
}

impl State {
    fn remember(&mut self, id: String) {
        if self.written.insert(id.clone()) {
            self.written_order.push_back(id);
            while self.written_order.len() > REMEMBERED {
                if let Some(old) = self.written_order.pop_front() {
                    self.written.remove(&old);
                }
            }
        }
    }
}

/// Where the trail goes.
#[derive(Clone)]
pub struct AuditTarget {
    pub access: StorageAccess,
    /// The Object Lock of every segment (`None`: the bucket has none).
    pub lock: Option<ObjectLock>,
}

/// Why a segment write failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("the audit storage is not open yet")]
    NotOpen,
    /// Another writer (a previous leader) wrote the segment this one was about to write.
    #[error("audit segment {0} was written by another writer; continuing after it")]
    Taken(String),
}

/// The audit sink. Cheap to clone; [`AuditSink::offer`] never blocks on storage.
#[derive(Clone)]
pub struct AuditSink {
    target: Arc<Mutex<Option<AuditTarget>>>,
    settings: SinkSettings,
    state: Arc<Mutex<State>>,
    wake: Arc<tokio::sync::Notify>,
    /// Told whenever the queue may have shrunk ([`AuditSink::wait_for_room`]).
    room: Arc<tokio::sync::Notify>,
    metrics: Metrics,
    spool: Option<Spool>,
}

impl AuditSink {
    /// A sink writing to `target`.
    pub fn new(target: AuditTarget, settings: SinkSettings, metrics: Metrics) -> Self {
        let sink = Self::unopened(settings, metrics);
        sink.open_with(target);
        sink
    }

    /// A sink that queues records until [`AuditSink::open_with`] gives it its storage.
    pub fn unopened(settings: SinkSettings, metrics: Metrics) -> Self {
        AuditSink {
            target: Arc::default(),
            settings,
            state: Arc::default(),
            wake: Arc::default(),
            room: Arc::default(),
            metrics,
            spool: None,
        }
    }

    /// Makes records offered with [`AuditSink::offer_durably`] durable in `spool` first.
    pub fn with_spool(mut self, spool: Spool) -> Self {
        self.spool = Some(spool);
        self
    }

    /// The write-ahead spool, if any.
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    /// Writes to `target` from now on.
    pub fn open_with(&self, target: AuditTarget) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(target);
        }
        self.wake.notify_one();
    }

    fn target(&self) -> Result<AuditTarget, SinkError> {
        self.target
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .ok_or(SinkError::NotOpen)
    }

    /// Queues the records not written yet (by id). Returns how many were queued.
    pub fn offer(&self, records: Vec<AuditRecord>) -> usize {
        self.queue(records, false)
    }

    /// Queues records read back from the spool (they are in it): compared by id only, and their
    /// entries are removed once the chain holds them. Returns how many were queued.
    pub fn offer_spooled(&self, records: Vec<AuditRecord>) -> usize {
        self.queue(records, true)
    }

    /// Makes `record` durable before the caller acts: writes it to the spool (when the sink
    /// has one), then queues it. An error means it is not durable: the caller must not act
    /// yet. A record this process already wrote to the chain needs nothing.
    pub async fn offer_durably(&self, record: AuditRecord) -> Result<(), SpoolError> {
        if self.is_written(&record.id) {
            return Ok(());
        }
        match &self.spool {
            Some(spool) => {
                spool.write(&record).await?;
                self.offer_spooled(vec![record]);
            }
            None => {
                self.offer(vec![record]);
            }
        }
        self.publish_spool();
        Ok(())
    }

    /// Whether this process wrote (or found in the chain) the record `id`.
    pub fn is_written(&self, id: &str) -> bool {
        self.state
            .lock()
            .map(|s| s.written.contains(id))
            .unwrap_or(false)
    }

    /// Removes the spool entries of the records the chain holds now. Those that cannot be
    /// removed are tried again next time (the worst case is a record spooled twice: the chain
    /// drops it by id, or, beyond the tail it reads, holds it twice; never a loss).
    pub async fn release_confirmed(&self) -> Result<usize, SpoolError> {
        let Some(spool) = &self.spool else {
            return Ok(0);
        };
        let ids = self
            .state
            .lock()
            .map(|mut s| std::mem::take(&mut s.confirmed))
            .unwrap_or_default();
        let mut released = 0;
        let mut failed = None;
        let mut left = Vec::new();
        for id in ids {
            if failed.is_some() {
                left.push(id);
                continue;
            }
            match spool.remove(&id).await {
                Ok(()) => released += 1,
                Err(e) => {
                    failed = Some(e);
                    left.push(id);
                }
            }
        }
        if !left.is_empty()
            && let Ok(mut s) = self.state.lock()
        {
            s.confirmed.extend(left);
        }
        self.publish_spool();
        match failed {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }

    fn publish_spool(&self) {
        if let Some(spool) = &self.spool {
            self.metrics.audit_spool_entries.set(spool.len() as i64);
        }
    }

    fn queue(&self, records: Vec<AuditRecord>, spooled: bool) -> usize {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        let now = Instant::now();
        let mut n = 0;
        for r in records {
            if spooled {
                if state.written.contains(&r.id) {
                    // Already in the chain: only its entry is left to remove.
                    if !state.confirmed.contains(&r.id) {
                        state.confirmed.push(r.id.clone());
                    }
                    continue;
                }
                state.spooled.insert(r.id.clone());
            }
            if state.written.contains(&r.id) || state.queued_ids.contains(&r.id) {
                continue;
            }
            state.queued_ids.insert(r.id.clone());
            state
                .queued
                .entry(r.namespace.clone())
                .or_default()
                .push((r, now));
            n += 1;
        }
        self.publish(&state);
        n
    }

    /// Waits until fewer than `limit` records are queued, waking the writer meanwhile. For
    /// offers that can wait (the audit watches: what they would offer is in the objects'
    /// status and offered again after a re-list), so that a first start over a cluster's
    /// whole history, or a storage down for days, does not hold every record in memory.
    pub async fn wait_for_room(&self, limit: usize) {
        loop {
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.pending() < limit {
                return;
            }
            self.flush_soon();
            notified.await;
        }
    }

    /// Records queued, not yet confirmed.
    pub fn pending(&self) -> usize {
        self.state.lock().map(|s| s.queued_ids.len()).unwrap_or(0)
    }

    /// Forgets every chain head read so far: the next write of each namespace reads it from
    /// storage again (before a last flush whose writer may have been stopped mid-write).
    pub fn forget_heads(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.heads.clear();
        }
    }

    fn forget_head(&self, ns: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.heads.remove(ns);
        }
    }

    /// Wakes the writer (tests, shutdown).
    pub fn flush_soon(&self) {
        self.wake.notify_one();
    }

    fn publish(&self, state: &State) {
        self.room.notify_waiters();
        self.metrics
            .audit_pending
            .set(state.queued_ids.len() as i64);
        let oldest = state
            .queued
            .values()
            .flat_map(|q| q.iter().map(|(_, t)| *t))
            .min();
        self.metrics
            .audit_oldest_pending
            .set(oldest.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0));
    }

    /// Writes queued records until the task is dropped: every `flush_interval`, or sooner when
    /// woken; after a failure, backs off.
    pub async fn run(self) {
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 {
                self.settings.flush_interval
            } else {
                self.settings.retry_after * 2u32.pow(failures.min(4))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified(), if failures == 0 => {}
            }
            match self.flush().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, pending = self.pending(), "audit records not written yet; retrying");
                }
            }
            if let Err(e) = self.release_confirmed().await {
                tracing::warn!(error = %e, "audit spool entries not removed yet; retrying");
            }
            if let Ok(state) = self.state.lock() {
                self.publish(&state);
            }
        }
    }

    /// Writes one segment per namespace with queued records (more while records remain).
    /// Returns how many records were written; the first failure stops the pass.
    pub async fn flush(&self) -> Result<usize, SinkError> {
        let namespaces: Vec<String> = self
            .state
            .lock()
            .map(|s| s.queued.keys().cloned().collect())
            .unwrap_or_default();
        let mut written = 0;
        for ns in namespaces {
            loop {
                let n = self.flush_namespace(&ns).await?;
                written += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(written)
    }

    async fn flush_namespace(&self, ns: &str) -> Result<usize, SinkError> {
        let target = self.target()?;
        let known = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.heads.get(ns).cloned());
        let head = match known {
            Some(h) => h,
            None => {
                let head = self.read_head(&target.access, ns).await?;
                if let Ok(mut s) = self.state.lock() {
                    for id in &head.ids {
                        s.remember(id.clone());
                    }
                    s.heads.insert(ns.to_string(), head.clone());
                }
                head
            }
        };
        // The batch: queued records the chain does not hold, oldest first.
        let batch: Vec<AuditRecord> = {
            let Ok(mut s) = self.state.lock() else {
                return Ok(0);
            };
            let queue = s.queued.remove(ns).unwrap_or_default();
            let mut keep = Vec::new();
            let mut dropped = Vec::new();
            for (r, t) in queue {
                // A spooled record is compared by id only: it may have waited in the spool for
                // longer than the tail covers, and its time is when it was spooled.
                let held = s.written.contains(&r.id)
                    || head.ids.contains(&r.id)
                    || (!s.spooled.contains(&r.id)
                        && head
                            .covered_from
                            .is_some_and(|from| r.time < from - window_slack()));
                if held {
                    dropped.push(r.id);
                } else {
                    keep.push((r, t));
                }
            }
            for id in dropped {
                s.queued_ids.remove(&id);
                if s.spooled.remove(&id) {
                    s.confirmed.push(id);
                }
            }
            let mut batch: Vec<AuditRecord> = keep
                .iter()
                .take(self.settings.max_records_per_segment)
                .map(|(r, _)| r.clone())
                .collect();
            if !keep.is_empty() {
                s.queued.insert(ns.to_string(), keep);
            }
            batch.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
            batch
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let bytes = chain::encode_segment(ns, head.next_index, &head.previous, &batch, Utc::now());
        let hash = chain::sha256_hex(&bytes);
        let key = target.access.key(&chain::segment_key(ns, head.next_index));
        // A segment is written once: never over an existing key (a previous leader's write
        // that this one's cached head does not know of).
        let written = target
            .access
            .put_new_locked(&key, bytes, target.lock.as_ref())
            .await;
        if !matches!(written, Ok(true)) {
            self.metrics.audit_failed.inc_by(batch.len() as u64);
            // The write may have landed, or another one did: read the head again first.
            self.forget_head(ns);
            return Err(match written {
                Err(e) => e.into(),
                _ => SinkError::Taken(target.access.location(&key)),
            });
        }
        self.metrics.audit_written.inc_by(batch.len() as u64);
        tracing::debug!(
            namespace = ns,
            segment = head.next_index,
            records = batch.len(),
            "audit segment written"
        );
        let Ok(mut s) = self.state.lock() else {
            return Ok(batch.len());
        };
        let ids: HashSet<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        if let Some(q) = s.queued.get_mut(ns) {
            q.retain(|(r, _)| !ids.contains(r.id.as_str()));
            if q.is_empty() {
                s.queued.remove(ns);
            }
        }
        for r in &batch {
            s.queued_ids.remove(&r.id);
            s.remember(r.id.clone());
            if s.spooled.remove(&r.id) {
                s.confirmed.push(r.id.clone());
            }
        }
        let mut next = head;
        next.next_index += 1;
        next.previous = hash;
        next.ids.extend(batch.iter().map(|r| r.id.clone()));
        s.heads.insert(ns.to_string(), next);
        self.publish(&s);
        Ok(batch.len())
    }

    /// Reads the head of `ns`'s chain: the next index, the hash of the last segment, and the
    /// ids of the last segments.
    async fn read_head(&self, access: &StorageAccess, ns: &str) -> Result<Head, SinkError> {
        let prefix = access.key(&chain::namespace_prefix(ns));
        let root = access.key("");
        let mut indices: Vec<(u64, String)> = access
            .list(&prefix, usize::MAX)
            .await?
            .into_iter()
            .filter_map(|k| {
                let rel = k.strip_prefix(&root).unwrap_or(&k).trim_start_matches('/');
                chain::parse_key(rel)
                    .filter(|(n, _)| n == ns)
                    .map(|(_, i)| (i, k.clone()))
            })
            .collect();
        indices.sort();
        let Some((last, _)) = indices.last().cloned() else {
            return Ok(Head {
                next_index: 0,
                previous: GENESIS.to_string(),
                ids: HashSet::new(),
                covered_from: None,
            });
        };
        let tail_from = indices
            .len()
            .saturating_sub(self.settings.tail_segments.max(1));
        let mut ids = HashSet::new();
        let mut oldest: Option<DateTime<Utc>> = None;
        let mut previous = GENESIS.to_string();
        for (i, key) in &indices[tail_from..] {
            let bytes = access.get(key, 64 << 20).await?;
            if *i == last {
                previous = chain::sha256_hex(&bytes);
            }
            match chain::parse_segment(&bytes) {
                Ok((_, records)) => {
                    for r in records {
                        oldest = Some(oldest.map_or(r.time, |o| o.min(r.time)));
                        ids.insert(r.id);
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = ns, segment = i, error = %e, location = %access.location(key), "an audit segment does not verify; the chain continues after it (kubectl dataguardian audit verify)");
                }
            }
        }
        Ok(Head {
            next_index: last + 1,
            previous,
            ids,
            covered_from: if tail_from > 0 { oldest } else { None },
        })
    }
}
