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
//! A running writer holds the same about each chain it writes: the head stands for the last
//! `tail_segments` segments (those read, then those written since, the oldest let go), and the
//! by-time rule moves on with them; the ids in the hour before them are among the ids the sink
//! wrote most recently (up to [`REMEMBERED`], across namespaces). Ids are held as 16 bytes
//! ([`super::ids`]). Two exceptions keep the rule true, both because records may then come in
//! no particular time order, so a record not written yet may be older than anything just
//! written: the head lets no segment go (and the by-time rule does not move on)
//! - until the watches' first lists are done ([`AuditSink::history_offered`]): a start offers
//!   the cluster's history in list order (a policy's runs, then the next policy's, older ones);
//! - after that, until `tail_segments` segments in a row held only records written within the
//!   hour of their time: while they come more than an hour late (a re-list after the storage
//!   or the API was away long enough for the watches to lose their place, a lagging watch),
//!   they are history offered again in list order.
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
use super::ids::{Id, IdList, IdSet, Recent};
use super::record::AuditRecord;
use super::spool::{Spool, SpoolError};

/// How the sink batches and remembers.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// How often queued records are written (a segment per namespace with records).
    pub flush_interval: Duration,
    /// At most this many records per segment.
    pub max_records_per_segment: usize,
    /// How many of a chain's last segments are read to find its head and the ids it holds (and
    /// how many a running writer keeps the ids of).
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
pub const REMEMBERED: usize = 200_000;

/// How much older than the tail's oldest record a record may be and still be compared by id
/// (when the records written came in order).
fn window_slack() -> chrono::Duration {
    chrono::Duration::hours(1)
}

/// What the head knows of one of its segments.
#[derive(Debug)]
struct SegmentIds {
    /// Its index in the chain.
    index: u64,
    ids: IdList,
    /// Its oldest record's time (`None`: no record, or the segment does not parse).
    oldest: Option<DateTime<Utc>>,
}

/// The head of one namespace's chain: where the next segment goes, and what its last segments
/// hold (those read from storage, then those written since).
#[derive(Debug)]
struct Head {
    next_index: u64,
    previous: String,
    /// Oldest first: the last `keep`, or more while the records written come late (see
    /// [`Head::push_written`]).
    segments: VecDeque<SegmentIds>,
    /// How many segments are kept.
    keep: usize,
    /// Whether the chain holds segments before those kept: then records older than what they
    /// cover were written before (otherwise every segment is known: compare by id only).
    older: bool,
    /// How many of the last segments written held only records written as they happened.
    on_time: usize,
    /// Whether it must be read from storage again before the next write (a write failed: it
    /// may have landed, or another writer's did). What it knows is kept until then.
    stale: bool,
}

impl Head {
    /// The head of a chain with no segment.
    fn empty(keep: usize) -> Self {
        Head {
            next_index: 0,
            previous: GENESIS.to_string(),
            segments: VecDeque::new(),
            keep: keep.max(1),
            older: false,
            on_time: 0,
            stale: false,
        }
    }

    /// This head was just read from storage again; `old` is what was known before. Keeps the
    /// segments `old` knew before those read, so a re-read lets nothing go that the head kept
    /// (during the history, or while records came late) and the by-time rule does not move
    /// on. A gap between them (another writer's segments) is compared by id only if `old` knew
    /// the chain from its start: at worst a record twice, never one taken as written.
    fn keep_known(&mut self, old: Head) {
        let first = self.segments.front().map_or(self.next_index, |s| s.index);
        let mut known: VecDeque<SegmentIds> = old
            .segments
            .into_iter()
            .filter(|s| s.index < first)
            .collect();
        known.append(&mut self.segments);
        self.segments = known;
        self.older &= old.older;
        // Whether the segments read were on time is not known: count again.
        self.on_time = 0;
    }

    /// Adds the next segment, letting the oldest go beyond `keep`.
    fn push(&mut self, segment: SegmentIds) {
        self.segments.push_back(segment);
        self.trim();
    }

    fn trim(&mut self) {
        while self.segments.len() > self.keep {
            self.segments.pop_front();
            self.older = true;
        }
    }

    /// After writing `batch` as the next segment (whose SHA-256 is `hash`) at `now`;
    /// `spooled[i]`: whether `batch[i]` came from the spool; `history`: whether the watches'
    /// first lists are done ([`AuditSink::history_offered`]).
    ///
    /// The head lets its oldest segments go only once the cluster's history was offered (until
    /// then the lists offer it in their order, not in time order: the next object listed may
    /// have older records than every segment written, in this namespace or any other) and the
    /// last `keep` segments written held only records written as they happened (at most
    /// [`window_slack`] after their time; a spooled record's time is when it was spooled, so
    /// it does not count). Records written later than that come from a re-list after a long
    /// outage (a storage down long enough for the watches to pause and lose their place), or
    /// a lagging watch: again in no particular order. While either holds, an unwritten record
    /// may be older than the kept segments, so the by-time rule must not move on, and the head
    /// keeps every id it wrote (16 bytes each).
    fn push_written(
        &mut self,
        hash: String,
        batch: &[AuditRecord],
        spooled: &[bool],
        now: DateTime<Utc>,
        history: bool,
    ) {
        let index = self.next_index;
        self.next_index += 1;
        self.previous = hash;
        let on_time = batch
            .iter()
            .zip(spooled)
            .all(|(r, s)| *s || r.time >= now - window_slack());
        self.on_time = if on_time { self.on_time + 1 } else { 0 };
        self.segments.push_back(SegmentIds {
            index,
            ids: IdList::new(batch.iter().map(|r| r.id.as_str())),
            oldest: batch.iter().map(|r| r.time).min(),
        });
        if history && self.on_time >= self.keep {
            self.trim();
        }
    }

    /// Records older than this were written before the segments kept (`None`: compare by id
    /// only).
    fn covered_from(&self) -> Option<DateTime<Utc>> {
        if !self.older {
            return None;
        }
        self.segments.iter().filter_map(|s| s.oldest).min()
    }

    /// Whether the kept segments hold `id`.
    fn holds(&self, id: Id<'_>) -> bool {
        self.segments.iter().any(|s| s.ids.contains(id))
    }

    /// Whether the chain holds `r` as far as the head tells: by id, or (a record not from the
    /// spool) by time.
    fn takes_as_written(&self, r: &AuditRecord, id: Id<'_>, spooled: bool) -> bool {
        self.holds(id)
            || (!spooled
                && self
                    .covered_from()
                    .is_some_and(|from| r.time < from - window_slack()))
    }

    /// The ids of the kept segments.
    fn ids(&self) -> impl Iterator<Item = Id<'_>> {
        self.segments.iter().flat_map(|s| s.ids.iter())
    }
}

struct State {
    /// Queued records per namespace, in the order offered.
    queued: BTreeMap<String, Vec<(AuditRecord, Instant)>>,
    queued_ids: IdSet,
    /// Ids written (by this process) or found in a chain, the most recent ones.
    written: Recent,
    heads: HashMap<String, Head>,
    /// Queued records that are in the spool (compared by id only).
    spooled: IdSet,
    /// Spooled records the chain holds (written, or found there): their entries can go.
    confirmed: Vec<String>,
    /// Whether the watches' first lists are done: until then no head lets a segment go.
    history: bool,
}

impl State {
    fn new(remembered: usize) -> Self {
        State {
            queued: BTreeMap::new(),
            queued_ids: IdSet::default(),
            written: Recent::new(remembered),
            heads: HashMap::new(),
            spooled: IdSet::default(),
            confirmed: Vec::new(),
            history: false,
        }
    }

    /// Queues the records not written yet (by id); `spooled`: they are in the spool. Returns
    /// how many were queued.
    fn queue(&mut self, records: Vec<AuditRecord>, spooled: bool, now: Instant) -> usize {
        let mut n = 0;
        for r in records {
            let id = Id::of(&r.id);
            if spooled {
                if self.written.contains(id) {
                    // Already in the chain: only its entry is left to remove.
                    if !self.confirmed.contains(&r.id) {
                        self.confirmed.push(r.id.clone());
                    }
                    continue;
                }
                self.spooled.insert(id);
            }
            if self.written.contains(id) || !self.queued_ids.insert(id) {
                continue;
            }
            self.queued
                .entry(r.namespace.clone())
                .or_default()
                .push((r, now));
            n += 1;
        }
        n
    }

    /// Takes `head` as `ns`'s (read from storage): its ids are remembered as written. A head
    /// known before (stale) leaves what it knew ([`Head::keep_known`]).
    fn set_head(&mut self, ns: &str, mut head: Head) {
        if let Some(old) = self.heads.remove(ns) {
            head.keep_known(old);
        }
        for id in head.ids() {
            self.written.insert(id);
        }
        self.heads.insert(ns.to_string(), head);
    }

    /// Drops the queued records of `ns` the chain holds (as its head tells) and returns the
    /// next segment: its index, the previous segment's hash and at most `max` records, oldest
    /// first. `None` when the head of `ns` is not known.
    fn next_batch(&mut self, ns: &str, max: usize) -> Option<(u64, String, Vec<AuditRecord>)> {
        let head = self.heads.get(ns).filter(|h| !h.stale)?;
        let queue = self.queued.remove(ns).unwrap_or_default();
        let mut keep = Vec::new();
        let mut dropped = Vec::new();
        for (r, t) in queue {
            // A spooled record is compared by id only: it may have waited in the spool for
            // longer than the tail covers, and its time is when it was spooled.
            let id = Id::of(&r.id);
            let held = self.written.contains(id)
                || head.takes_as_written(&r, id, self.spooled.contains(id));
            if held {
                dropped.push(r.id);
            } else {
                keep.push((r, t));
            }
        }
        let (index, previous) = (head.next_index, head.previous.clone());
        for id in dropped {
            self.queued_ids.remove(Id::of(&id));
            if self.spooled.remove(Id::of(&id)) {
                self.confirmed.push(id);
            }
        }
        let mut batch: Vec<AuditRecord> = keep.iter().take(max).map(|(r, _)| r.clone()).collect();
        if !keep.is_empty() {
            self.queued.insert(ns.to_string(), keep);
        }
        batch.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        Some((index, previous, batch))
    }

    /// After the segment `index` of `ns`'s chain holding `batch` (SHA-256 `hash`) was
    /// written at `now`: its records leave the queue and are remembered, the head moves on
    /// (unless it was forgotten meanwhile: then it is read again).
    fn segment_written(
        &mut self,
        ns: &str,
        index: u64,
        hash: String,
        batch: &[AuditRecord],
        now: DateTime<Utc>,
    ) {
        let ids: HashSet<&str> = batch.iter().map(|r| r.id.as_str()).collect();
        if let Some(q) = self.queued.get_mut(ns) {
            q.retain(|(r, _)| !ids.contains(r.id.as_str()));
            if q.is_empty() {
                self.queued.remove(ns);
            }
        }
        let mut spooled = Vec::with_capacity(batch.len());
        for r in batch {
            let id = Id::of(&r.id);
            self.queued_ids.remove(id);
            self.written.insert(id);
            let was = self.spooled.remove(id);
            if was {
                self.confirmed.push(r.id.clone());
            }
            spooled.push(was);
        }
        if let Some(head) = self.heads.get_mut(ns)
            && head.next_index == index
        {
            head.push_written(hash, batch, &spooled, now, self.history);
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
            state: Arc::new(Mutex::new(State::new(REMEMBERED))),
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

    /// Tells the sink that the cluster's history was offered: every audit watch has seen its
    /// first list through (kube's `InitDone`). Until then the lists offer records in their
    /// order, not in time order, so no chain head lets a segment go (and the by-time rule does
    /// not move on); from then on, records arriving are live events. A sink never told keeps
    /// every id it writes (16 bytes each): never a record lost.
    pub fn history_offered(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.history = true;
        }
    }

    /// Whether [`AuditSink::history_offered`] was called.
    pub fn history_was_offered(&self) -> bool {
        self.state.lock().map(|s| s.history).unwrap_or(false)
    }

    /// Whether this process wrote (or found in the chain) the record `id`.
    pub fn is_written(&self, id: &str) -> bool {
        self.state
            .lock()
            .map(|s| s.written.contains(Id::of(id)))
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
        let n = state.queue(records, spooled, Instant::now());
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
            for head in s.heads.values_mut() {
                head.stale = true;
            }
        }
    }

    fn forget_head(&self, ns: &str) {
        if let Ok(mut s) = self.state.lock()
            && let Some(head) = s.heads.get_mut(ns)
        {
            head.stale = true;
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
            .map(|s| s.heads.get(ns).is_some_and(|h| !h.stale))
            .unwrap_or(false);
        if !known {
            let head = self.read_head(&target.access, ns).await?;
            if let Ok(mut s) = self.state.lock() {
                s.set_head(ns, head);
            }
        }
        // The batch: queued records the chain does not hold, oldest first.
        let Some((index, previous, batch)) = self
            .state
            .lock()
            .ok()
            .and_then(|mut s| s.next_batch(ns, self.settings.max_records_per_segment))
        else {
            return Ok(0);
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let bytes = chain::encode_segment(ns, index, &previous, &batch, Utc::now());
        let hash = chain::sha256_hex(&bytes);
        let key = target.access.key(&chain::segment_key(ns, index));
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
            segment = index,
            records = batch.len(),
            "audit segment written"
        );
        if let Ok(mut s) = self.state.lock() {
            s.segment_written(ns, index, hash, &batch, Utc::now());
            self.publish(&s);
        }
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
        let mut head = Head::empty(self.settings.tail_segments);
        let Some((last, _)) = indices.last().cloned() else {
            return Ok(head);
        };
        let tail_from = indices.len().saturating_sub(head.keep);
        for (i, key) in &indices[tail_from..] {
            let bytes = access.get(key, 64 << 20).await?;
            if *i == last {
                head.previous = chain::sha256_hex(&bytes);
            }
            let segment = match chain::parse_segment(&bytes) {
                Ok((_, records)) => SegmentIds {
                    index: *i,
                    ids: IdList::new(records.iter().map(|r| r.id.as_str())),
                    oldest: records.iter().map(|r| r.time).min(),
                },
                Err(e) => {
                    tracing::warn!(namespace = ns, segment = i, error = %e, location = %access.location(key), "an audit segment does not verify; the chain continues after it (kubectl dataguardian audit verify)");
                    SegmentIds {
                        index: *i,
                        ids: IdList::default(),
                        oldest: None,
                    }
                }
            };
            head.push(segment);
        }
        head.next_index = last + 1;
        head.older = tail_from > 0;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditAction, record_id};
    use chrono::TimeZone;

    const NS: &str = "shop";

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn hours(h: i64) -> chrono::Duration {
        chrono::Duration::hours(h)
    }

    fn record(uid: &str, time: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            id: record_id(uid, AuditAction::RunCreated, ""),
            time,
            action: AuditAction::RunCreated,
            namespace: NS.into(),
            kind: "BackupRun".into(),
            name: uid.into(),
            uid: uid.into(),
            actor: None,
            approver: None,
            outcome: None,
            reason: None,
            detail: None,
        }
    }

    /// The sink's bookkeeping writing into a chain held in memory (what `flush` does, without
    /// S3): the head of `NS` keeps `keep` segments, the sink remembers `remembered` ids, and
    /// the clock reads `now`.
    struct Writer {
        state: State,
        chain: Vec<Vec<AuditRecord>>,
        keep: usize,
        max: usize,
        now: DateTime<Utc>,
    }

    impl Writer {
        /// A writer whose watches have offered the history already (see
        /// [`Writer::restarted`] for one whose have not).
        fn new(keep: usize, remembered: usize, max: usize) -> Self {
            let mut state = State::new(remembered);
            state.history = true;
            state.set_head(NS, Head::empty(keep));
            Writer {
                state,
                chain: Vec::new(),
                keep,
                max,
                now: at(0),
            }
        }

        fn offer(&mut self, records: Vec<AuditRecord>) -> usize {
            self.state.queue(records, false, Instant::now())
        }

        fn offer_spooled(&mut self, records: Vec<AuditRecord>) -> usize {
            self.state.queue(records, true, Instant::now())
        }

        /// Writes segments while records are queued; returns how many records were written.
        fn flush(&mut self) -> usize {
            let mut written = 0;
            loop {
                let (index, previous, batch) = self.state.next_batch(NS, self.max).expect("a head");
                if batch.is_empty() {
                    return written;
                }
                assert_eq!(index as usize, self.chain.len());
                let expected_previous = match index {
                    0 => GENESIS.to_string(),
                    i => format!("hash-{}", i - 1),
                };
                assert_eq!(previous, expected_previous);
                written += batch.len();
                self.chain.push(batch.clone());
                self.state
                    .segment_written(NS, index, format!("hash-{index}"), &batch, self.now);
            }
        }

        /// Offers `records` as they happen (the clock at the newest), then writes them.
        fn live(&mut self, records: Vec<AuditRecord>) -> usize {
            if let Some(t) = records.iter().map(|r| r.time).max() {
                self.now = self.now.max(t + chrono::Duration::seconds(5));
            }
            self.offer(records);
            self.flush()
        }

        fn head(&self) -> &Head {
            self.state.heads.get(NS).expect("a head")
        }

        /// The head a restarted writer reads from this chain (`read_head` on S3).
        fn read_again(&self) -> Head {
            let mut head = Head::empty(self.keep);
            let from = self.chain.len().saturating_sub(self.keep);
            for (i, segment) in self.chain.iter().enumerate().skip(from) {
                head.push(SegmentIds {
                    index: i as u64,
                    ids: IdList::new(segment.iter().map(|r| r.id.as_str())),
                    oldest: segment.iter().map(|r| r.time).min(),
                });
            }
            head.next_index = self.chain.len() as u64;
            if let Some(last) = self.chain.len().checked_sub(1) {
                head.previous = format!("hash-{last}");
            }
            head.older = from > 0;
            head
        }

        /// A write failed (`forget_head`): the next flush reads the head again.
        fn read_again_after_a_failed_write(&mut self) {
            self.state.heads.get_mut(NS).expect("a head").stale = true;
            assert!(self.state.next_batch(NS, self.max).is_none());
            let head = self.read_again();
            self.state.set_head(NS, head);
        }

        /// A new process over the same chain: it reads the head, remembers `remembered` ids,
        /// and its watches have not offered the history yet.
        fn restarted(&self, remembered: usize) -> Writer {
            let mut state = State::new(remembered);
            state.set_head(NS, self.read_again());
            Writer {
                state,
                chain: self.chain.clone(),
                keep: self.keep,
                max: self.max,
                now: self.now,
            }
        }

        /// Asserts that the chain holds each of `expected` exactly once, and nothing else.
        fn assert_each_once(&self, expected: &[AuditRecord]) {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for r in self.chain.iter().flatten() {
                *counts.entry(r.id.as_str()).or_default() += 1;
            }
            for r in expected {
                assert_eq!(
                    counts.get(r.id.as_str()),
                    Some(&1),
                    "{} ({})",
                    r.name,
                    r.time
                );
            }
            assert_eq!(counts.len(), expected.len(), "nothing else in the chain");
        }
    }

    fn ids_of(head: &Head) -> Vec<String> {
        let mut out: Vec<String> = head
            .ids()
            .map(|id| match id {
                Id::Digest(d) => d.to_string(),
                Id::Other(s) => s.to_string(),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_running_head_keeps_the_last_segments_and_still_drops_every_record_written() {
        // Records as they happen, 10 minutes apart, 5 a segment: 30 segments. The head keeps 3
        // (15 ids), the sink remembers 25 ids: the hour before the kept segments (6 records)
        // and the head's own. Everything older is dropped by time.
        let mut w = Writer::new(3, 25, 5);
        let all: Vec<AuditRecord> = (0..150)
            .map(|n| record(&format!("run-{n}"), at(10 * n)))
            .collect();
        for chunk in all.chunks(5) {
            assert_eq!(w.live(chunk.to_vec()), 5);
        }
        assert_eq!(w.chain.len(), 30);
        let head = w.head();
        assert_eq!(head.segments.len(), 3, "bounded to the tail");
        assert_eq!(head.ids().count(), 15);
        assert_eq!(head.next_index, 30);
        assert_eq!(head.previous, "hash-29");
        assert_eq!(head.covered_from(), Some(all[135].time));
        assert_eq!(w.state.written.len(), 25);
        // What a restarted writer would read: the same ids, the same rule.
        let again = w.read_again();
        assert_eq!(ids_of(head), ids_of(&again));
        assert_eq!(head.covered_from(), again.covered_from());

        // Everything offered again (a re-list), and one new record: only that one is written.
        let new = record("run-150", at(1500));
        let mut offered = all.clone();
        offered.push(new.clone());
        assert_eq!(w.offer(offered), 126, "the 25 remembered are not queued");
        w.now = at(1501);
        assert_eq!(w.flush(), 1);
        assert_eq!(w.chain.last().unwrap(), &vec![new.clone()]);
        let mut expected = all.clone();
        expected.push(new.clone());
        w.assert_each_once(&expected);
        assert_eq!(w.state.queued_ids.len(), 0);
        assert!(w.state.queued.is_empty());

        // A record never written, within the hour before what the kept segments cover:
        // compared by id, so written; the by-time rule takes only what is older than that.
        let from = w.head().covered_from().unwrap();
        assert_eq!(from, all[140].time);
        let close = record("close", from - chrono::Duration::minutes(59));
        let ancient = record("ancient", from - hours(5));
        assert_eq!(w.offer(vec![close.clone(), ancient.clone()]), 2);
        assert_eq!(w.flush(), 1);
        assert_eq!(w.chain.last().unwrap(), &vec![close]);
    }

    #[test]
    fn until_the_history_is_offered_no_head_lets_a_segment_go() {
        // Before a restart: 20 segments of records as they happened, 10 minutes apart.
        let mut before = Writer::new(2, 1000, 5);
        let written: Vec<AuditRecord> = (0..100)
            .map(|n| record(&format!("run-{n}"), at(6000 + 10 * n)))
            .collect();
        for chunk in written.chunks(5) {
            before.live(chunk.to_vec());
        }
        // The process stopped before writing what happened next (from minute 7000 on). The
        // new one reads the last 2 segments: the by-time rule takes what is older than
        // minute 6900 - 1 h as written.
        let missing: Vec<AuditRecord> = (0..5)
            .map(|n| record(&format!("missing-{n}"), at(7000 + n)))
            .collect();
        let mut w = before.restarted(1000);
        w.now = at(7200);
        let from = at(6900);
        assert_eq!(w.head().covered_from(), Some(from));
        // Live records in the namespace come first (the policies' watch listed sooner than the
        // runs' watch reached this namespace): 3 segments, each on time.
        let mut live: Vec<AuditRecord> = (0..15)
            .map(|n| record(&format!("live-{n}"), at(7200 + n)))
            .collect();
        for chunk in live.chunks(5) {
            assert_eq!(w.live(chunk.to_vec()), 5);
        }
        // Had the head let the read segments go (2 on-time segments in a row), the missing
        // records (3 h before the live ones) would be taken as written.
        assert_eq!(w.head().segments.len(), 5, "every segment kept");
        assert_eq!(w.head().covered_from(), Some(from), "not moved on");
        // Nor when a write fails and the head is read again (the last 2 segments).
        w.read_again_after_a_failed_write();
        assert_eq!(w.head().segments.len(), 5, "every segment still kept");
        assert_eq!(w.head().covered_from(), Some(from), "not moved on");
        // The list reaches them: they are written.
        assert_eq!(w.offer(missing.clone()), 5);
        assert_eq!(w.flush(), 5);
        let mut everything = written.clone();
        everything.extend(missing.clone());
        everything.extend(live.clone());
        w.assert_each_once(&everything);
        assert_eq!(w.head().segments.len(), 6);

        // The history offered: records arriving are live events, and once 2 segments in a row
        // were on time (the missing ones came late), the head keeps only the last 2.
        w.state.history = true;
        let more: Vec<AuditRecord> = (0..2)
            .map(|n| record(&format!("more-{n}"), at(7300 + n)))
            .collect();
        w.live(vec![more[0].clone()]);
        assert_eq!(w.head().segments.len(), 7);
        w.live(vec![more[1].clone()]);
        assert_eq!(w.head().segments.len(), 2);
        assert_eq!(w.head().covered_from(), Some(more[0].time));
        live.extend(more);
        everything.extend(live[15..].iter().cloned());
        w.offer(everything.clone());
        assert_eq!(w.flush(), 0);
        w.assert_each_once(&everything);
    }

    #[test]
    fn a_policy_generation_made_while_the_operator_was_down_is_written_after_the_restart() {
        use crate::admission::{LAST_CHANGED_AT, LAST_CHANGED_BY};
        use crate::api::BackupPolicy;
        use crate::audit::record::Audited;
        // The chain before the restart: 20 segments, minutes 0 to 990.
        let mut before = Writer::new(2, 1000, 5);
        let written: Vec<AuditRecord> = (0..100)
            .map(|n| record(&format!("run-{n}"), at(10 * n)))
            .collect();
        for chunk in written.chunks(5) {
            before.live(chunk.to_vec());
        }
        // Meanwhile (minute 1000, the operator and its webhook down) the policy, created long
        // before, got generation 5 by `kubectl edit`: its stamp is the previous change's.
        let rfc = |m: i64| at(m).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let policy: BackupPolicy = crate::audit::record::tests::policy_with(serde_json::json!({
            "name": "nightly", "namespace": NS, "uid": "u-policy", "generation": 5,
            "creationTimestamp": rfc(-10_000),
            "annotations": {LAST_CHANGED_BY: "bob", LAST_CHANGED_AT: rfc(-9_000)},
            "managedFields": [
                {"manager": "kubectl-edit", "operation": "Update",
                 "apiVersion": "dataguardian.io/v1alpha1", "time": rfc(1000),
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:schedule": {}}}}
            ]
        }));
        for recorded in [true, false] {
            let mut w = before.restarted(1000);
            w.state.history = true;
            w.now = at(1100);
            assert_eq!(w.head().covered_from(), Some(at(900)));
            let change = policy.audit_records(recorded);
            assert_eq!(w.offer(change.clone()), 1);
            assert_eq!(w.flush(), 1, "not taken as written (recorded: {recorded})");
            let mut everything = written.clone();
            everything.extend(change.clone());
            w.assert_each_once(&everything);
            // Offered again after another restart: found, not written twice.
            let mut again = w.restarted(1000);
            again.offer(policy.audit_records(recorded));
            assert_eq!(again.flush(), 0);
        }
    }

    #[test]
    fn a_sink_told_the_history_was_offered_lets_its_heads_trim() {
        let sink = AuditSink::unopened(SinkSettings::default(), Metrics::new());
        assert!(!sink.history_was_offered());
        sink.history_offered();
        assert!(sink.history_was_offered());
    }

    #[test]
    fn history_offered_again_in_no_order_is_written_once() {
        // After the first lists (the history offered), a re-list after a long outage offers
        // the history of three policies one policy after the other (the list's order), each
        // over the same 20 hours and written days later: every policy's first records are
        // older than the segments written just before. The head keeps 2 segments, the sink
        // remembers 4 ids.
        let mut w = Writer::new(2, 4, 5);
        w.now = at(10_000);
        let history: Vec<AuditRecord> = (0..3)
            .flat_map(|p| (0..20).map(move |h| record(&format!("p{p}-run-{h}"), at(60 * h))))
            .collect();
        for chunk in history.chunks(5) {
            w.offer(chunk.to_vec());
            w.flush();
        }
        // Had the head let its oldest segments go, the second and third policies' first
        // records (10 hours older than the last two segments) would have been taken as written.
        w.assert_each_once(&history);
        assert_eq!(
            w.head().segments.len(),
            12,
            "every segment of the catch-up kept"
        );
        assert_eq!(w.head().covered_from(), None, "the whole chain is known");

        // Caught up: records as they happen. Once the last 2 segments were on time, the head
        // lets the older ones go, and a re-list writes nothing twice.
        let live: Vec<AuditRecord> = (0..3)
            .map(|n| record(&format!("live-{n}"), at(10_000 + n)))
            .collect();
        w.live(vec![live[0].clone()]);
        assert_eq!(w.head().segments.len(), 13);
        w.live(vec![live[1].clone()]);
        assert_eq!(w.head().segments.len(), 2);
        assert_eq!(w.head().covered_from(), Some(live[0].time));
        w.live(vec![live[2].clone()]);
        assert_eq!(w.head().segments.len(), 2);
        let mut everything = history.clone();
        everything.extend(live);
        w.offer(everything.clone());
        assert_eq!(w.flush(), 0);
        w.assert_each_once(&everything);

        // A record written more than an hour after its time again (a lagging watch): the head
        // keeps every segment from then on until 2 in a row are on time.
        let from = w.head().covered_from().unwrap();
        let lagging = record("lagging", from - hours(1));
        assert!(lagging.time < w.now - hours(1));
        assert_eq!(w.live(vec![lagging]), 1);
        assert_eq!(w.head().segments.len(), 3);
        assert_eq!(w.head().covered_from(), Some(from - hours(1)));
        w.live(vec![record("live-3", w.now)]);
        assert_eq!(w.head().segments.len(), 4);
        w.live(vec![record("live-4", w.now)]);
        assert_eq!(w.head().segments.len(), 2);
    }

    #[test]
    fn a_spooled_record_older_than_the_tail_is_chained_exactly_once() {
        // The head keeps 2 segments of records from hour 100 on, as they happen; a retention
        // deletion spooled at hour 80 (the storage was down) is compared by id only.
        let mut w = Writer::new(2, 1000, 5);
        let status: Vec<AuditRecord> = (0..40)
            .map(|n| record(&format!("run-{n}"), at(6000 + 10 * n)))
            .collect();
        for chunk in status.chunks(5) {
            w.live(chunk.to_vec());
        }
        assert_eq!(w.head().segments.len(), 2);
        assert_eq!(w.head().covered_from(), Some(status[30].time));
        let deletion = AuditRecord {
            id: record_id("policy", AuditAction::RetentionDeletion, "run-0"),
            action: AuditAction::RetentionDeletion,
            ..record("policy", at(80 * 60))
        };
        // The same time from status would be taken as written; from the spool it is not.
        let from_status = AuditRecord {
            id: record_id("policy", AuditAction::RetentionDeletion, "run-1"),
            ..deletion.clone()
        };
        assert_eq!(w.offer(vec![from_status]), 1);
        assert_eq!(w.offer_spooled(vec![deletion.clone()]), 1);
        assert_eq!(w.flush(), 1);
        assert_eq!(w.chain.last().unwrap(), &vec![deletion.clone()]);
        assert_eq!(w.state.confirmed, vec![deletion.id.clone()]);
        assert!(w.state.spooled.is_empty());
        // Its time is the spool's: it does not count as late, the head still keeps 2.
        assert_eq!(w.head().segments.len(), 2);

        // More segments: the head lets the deletion's go. Spooled again (retention retried),
        // it is found written, its entry released again, and not chained twice.
        let more: Vec<AuditRecord> = (40..60)
            .map(|n| record(&format!("run-{n}"), at(6000 + 10 * n)))
            .collect();
        for chunk in more.chunks(5) {
            w.live(chunk.to_vec());
        }
        assert!(!w.head().holds(Id::of(&deletion.id)));
        w.state.confirmed.clear();
        assert_eq!(w.offer_spooled(vec![deletion.clone()]), 0);
        assert_eq!(w.state.confirmed, vec![deletion.id.clone()]);
        assert_eq!(w.flush(), 0);
        let mut expected = status;
        expected.extend(more);
        expected.push(deletion);
        w.assert_each_once(&expected);
    }

    #[test]
    fn ids_of_another_form_in_a_chain_are_compared_as_they_are() {
        // A chain whose tail holds ids record_id does not make: one is the upper-case spelling
        // of a real id (the same 16 bytes if it were parsed leniently).
        let real = record("run-1", at(1));
        let legacy = AuditRecord {
            id: "legacy-7".into(),
            ..record("run-2", at(2))
        };
        let mut state = State::new(100);
        let mut head = Head::empty(4);
        head.push(SegmentIds {
            index: 0,
            ids: IdList::new([real.id.to_uppercase().as_str(), "legacy-7"]),
            oldest: Some(at(1)),
        });
        head.next_index = 1;
        head.previous = "hash-0".into();
        state.set_head(NS, head);
        let mut w = Writer {
            state,
            chain: vec![Vec::new()],
            keep: 4,
            max: 5,
            now: at(3),
        };
        assert_eq!(w.offer(vec![legacy.clone()]), 0, "remembered from the read");
        assert_eq!(w.offer(vec![real.clone()]), 1);
        assert_eq!(w.flush(), 1);
        assert_eq!(w.chain.last().unwrap(), &vec![real.clone()]);
        // The head now holds both spellings, each for itself.
        assert!(w.head().holds(Id::of(&real.id)));
        assert!(w.head().holds(Id::Other(&real.id.to_uppercase())));
        assert!(w.head().holds(Id::Other("legacy-7")));
    }
}
