//! One partition replica on its owning shard: the log, idempotent-producer state, the high
//! watermark and the wake-ups fetchers and acks=all producers wait on.
//!
//! Its replica state (role, leader epoch, ISR, follower progress, high watermark) changes only
//! through the methods below, which refuse a change that breaks an invariant: the leader epoch
//! never goes back, the ISR is a subset of the replicas, a leader is in its own ISR, and the
//! high watermark never passes the log end. The shard's `manager::ReplicaManager` is the one
//! owner of the open partitions and calls them.

mod cleaning;
#[cfg(test)]
mod cleaning_tests;
pub mod log_config;
pub mod maintenance;
pub mod manager;
#[cfg(test)]
mod open_tests;
pub mod producer_state;
pub mod replay;
pub mod txn_index;
#[cfg(test)]
mod txn_tests;
pub mod verification;

use crate::kafka::errors;
use crate::shard::event::{LatchedEvent, LocalEvent};
use crate::shard::TopicPartition;
use bytes::{Bytes, BytesMut};
use chronik_raft::image::{BrokerId, TopicId};
use chronik_storage::{BatchError, PartitionLog, StorageError};
use producer_state::{ProducerStateTable, SeqCheck};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use txn_index::{AbortedTxn, TxnIndex};
use verification::Verification;

const PRODUCER_SNAPSHOT: &str = "producer-state.snapshot";
const PARTITION_METADATA: &str = "partition.metadata";
const TXN_SNAPSHOT: &str = "txn-state.snapshot";

/// What a produce to one partition ended with.
#[derive(Debug, Clone, Copy)]
pub struct ProduceOutcome {
    pub error: i16,
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    pub fn error(code: i16) -> Self {
        ProduceOutcome {
            error: code,
            base_offset: -1,
            last_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
        }
    }
}

/// A follower's replication progress as the leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    pub log_end_offset: i64,
    /// Last time the follower was caught up to the leader's LEO (Kafka's lastCaughtUpTime).
    pub caught_up_at: Instant,
    /// The leader's LEO and the time at the follower's previous fetch.
    last_fetch_leo: i64,
    last_fetch_at: Instant,
    /// The follower's log start offset as its last fetch said (-1: not said yet). DeleteRecords
    /// answers once every in-sync follower's has reached the offset asked for.
    pub log_start_offset: i64,
}

impl FollowerState {
    pub fn new(offset: i64, now: Instant) -> FollowerState {
        FollowerState {
            log_end_offset: offset,
            caught_up_at: now,
            last_fetch_leo: offset,
            last_fetch_at: now,
            log_start_offset: -1,
        }
    }

    /// Records a fetch at `offset` (the follower's log end) while the leader's LEO is `leo`.
    /// As Kafka: caught up now if it reached `leo`; otherwise caught up as of its previous
    /// fetch if it reached what the leader had then — under steady load new data always
    /// arrives between fetches, and a follower keeping pace must not look lagging.
    pub fn record_fetch(&mut self, offset: i64, leo: i64, now: Instant) {
        self.log_end_offset = offset;
        if offset >= leo {
            self.caught_up_at = self.caught_up_at.max(now);
        } else if offset >= self.last_fetch_leo {
            self.caught_up_at = self.caught_up_at.max(self.last_fetch_at);
        }
        self.last_fetch_leo = leo;
        self.last_fetch_at = now;
    }
}

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: TopicId,
    pub log: PartitionLog,
    pub dir: PathBuf,
    producers: RefCell<ProducerStateTable>,
    /// Open, completing and aborted transactions (from the log, as `producers`).
    txns: RefCell<TxnIndex>,
    /// Producers whose first transactional batch here is being verified with their
    /// transaction coordinator (KIP-890, `crate::txn::verify`), by producer id.
    verifying: RefCell<HashMap<i64, Rc<Verification>>>,
    /// Signalled when the high watermark moves (consumer fetch long-polls, acks=all waiters).
    pub hw_advanced: LocalEvent,
    /// Signalled when a leader append is written (follower fetch long-polls). Separate from
    /// `hw_advanced` because every follower fetch moves the HW: one event for both woke each
    /// parked follower fetch at the other followers' fetches, to find nothing new.
    pub appended: LocalEvent,
    /// Signalled when a follower reports a new log start offset (DeleteRecords waits on it).
    pub follower_log_start_moved: LocalEvent,
    /// -1 until the image first gives it a role.
    leader_epoch: Cell<i32>,
    is_leader: Cell<bool>,
    /// ISR and replicas from the metadata image, used for the high watermark and acks=all.
    isr: RefCell<Vec<BrokerId>>,
    replicas: RefCell<Vec<BrokerId>>,
    followers: RefCell<HashMap<BrokerId, FollowerState>>,
    pub local_broker: BrokerId,
    /// When this replica last became leader (followers not heard from since are judged by it).
    leader_since: Cell<Instant>,
    /// An AlterPartition proposal is in flight.
    pub isr_change_pending: Cell<bool>,
    /// On a follower: the leader's high watermark in its last fetch answer (-1: none yet), so
    /// DescribeLogDirs can report how far this replica trails it.
    leader_high_watermark: Cell<i64>,
    /// A leader write failed under this epoch (see `note_leader_write_failure`), and when the
    /// controller was last asked for a new one.
    write_failed: Cell<Option<WriteFailure>>,
    /// Notified when a leader write fails (the shard's ISR loop reports it); set by the replica
    /// manager.
    write_failure_signal: RefCell<Option<Rc<LatchedEvent>>>,
}

/// A leader write that failed under `epoch`: the log dropped queued batches (its log end went
/// back) that a follower may already have copied, since followers read what is queued.
/// Appending again under this epoch would give those offsets other data on the leader than on
/// that follower, at the same epoch, where no truncation can find it. So the partition takes
/// no appends until the controller gives it a new epoch (`Command::LeaderWriteFailed`), and
/// then followers truncate what the leader does not hold (OffsetForLeaderEpoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteFailure {
    epoch: i32,
    reported_at: Option<Instant>,
}

/// A replica state change refused because it would break an invariant (see the module doc).
/// The metadata image never asks for one (the controller checks the same rules); a refusal
/// means a stale image or a bug, and the partition keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaStateError {
    #[error("leader epoch {new} is older than the current {current}")]
    EpochWentBack { current: i32, new: i32 },
    #[error("ISR {isr:?} is not a subset of the replicas {replicas:?}")]
    IsrNotInReplicas {
        isr: Vec<BrokerId>,
        replicas: Vec<BrokerId>,
    },
    #[error("the leader {0} is not in the ISR {1:?}")]
    LeaderNotInIsr(BrokerId, Vec<BrokerId>),
    #[error("broker {0} holds no replica of this partition")]
    NotAReplica(BrokerId),
    #[error("this replica is not the leader")]
    NotLeader,
    #[error("this replica is the leader")]
    IsLeader,
    #[error("high watermark {hw} beyond the log end {leo}")]
    HwBeyondLeo { hw: i64, leo: i64 },
}

/// What `become_leader` changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    /// It was not the leader, or led under an older epoch: follower progress starts afresh.
    pub new_term: bool,
    /// It was already the leader and the ISR changed: the ISR before.
    pub isr_before: Option<Vec<BrokerId>>,
}

pub fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::InvalidBatch(_) => errors::CORRUPT_MESSAGE,
        StorageError::OffsetOutOfRange { .. } => errors::OFFSET_OUT_OF_RANGE,
        _ => errors::KAFKA_STORAGE_ERROR,
    }
}

/// The Kafka error for a batch that failed validation, as Kafka's produce path answers it:
/// a broken batch frame (size, magic, CRC) or undecodable compressed bytes are
/// CORRUPT_MESSAGE; wrong counts, offsets and record framing are INVALID_RECORD.
pub fn batch_error_code(e: &BatchError) -> i16 {
    match e {
        BatchError::TooShort
        | BatchError::BadLength
        | BatchError::CrcMismatch
        | BatchError::UnknownCompression(_)
        | BatchError::BadCompression => errors::CORRUPT_MESSAGE,
        // Produce v3+ carries only magic 2 (Kafka: InvalidRecordException); other values are
        // no magic at all (CorruptRecordException).
        BatchError::BadMagic(0 | 1) => errors::INVALID_RECORD,
        BatchError::BadMagic(_) => errors::CORRUPT_MESSAGE,
        BatchError::NotOneBatch
        | BatchError::BadRecordCount
        | BatchError::BadRecord
        | BatchError::InvalidRecord(_) => errors::INVALID_RECORD,
        BatchError::InvalidTimestamp(_) => errors::INVALID_TIMESTAMP,
        BatchError::TooLargeUncompressed => errors::MESSAGE_TOO_LARGE,
    }
}

impl Partition {
    /// Opens (or creates) the partition's log, checks its topic id, and rebuilds producer state.
    pub async fn open(
        tp: TopicPartition,
        topic_id: TopicId,
        dir: PathBuf,
        cfg: chronik_storage::LogConfig,
        cache: std::rc::Rc<chronik_storage::ReadCache>,
        journal: Option<std::rc::Rc<chronik_storage::Journal>>,
        local_broker: BrokerId,
    ) -> Result<Partition, String> {
        // A directory left by a deleted topic of the same name must not be adopted.
        let meta_path = dir.join(PARTITION_METADATA);
        let existing = std::fs::read(&meta_path).ok();
        if let Some(existing) = &existing {
            if existing.len() != topic_id.len() {
                // Not an id at all (a file cut short by an older version's non-atomic write):
                // no proof of another topic, and removing would lose the log.
                tracing::warn!(dir = %dir.display(), len = existing.len(), "adopting a log whose topic id file is cut short");
            } else if existing.as_slice() != topic_id.as_slice() {
                tracing::info!(dir = %dir.display(), "removing log of an older topic with the same name");
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| format!("remove stale {}: {e}", dir.display()))?;
            }
        }
        // A partition's directory is created with its first record (with the topic id file
        // in it): creating a topic touches no disk, and an idle partition holds no file.
        let marker = chronik_storage::DirMarker {
            name: PARTITION_METADATA.to_string(),
            bytes: topic_id.to_vec(),
        };
        let log = PartitionLog::open_or_defer(dir.clone(), cfg, cache, marker.clone())
            .await
            .map_err(|e| format!("open log {}: {e}", dir.display()))?;
        // Small rounds of appends go to the shard journal (one write for all partitions of
        // the shard); the topic id file names the log there.
        if let Some(journal) = journal {
            log.use_journal(journal, &marker);
        }
        // Written only when it is missing, and whole (a temp file renamed over it): a file cut
        // short by a SIGKILL while being rewritten at an open would name no topic, and the next
        // start would remove the partition's log as an older topic's.
        if log.dir_created() && existing.as_deref() != Some(topic_id.as_slice()) {
            let tmp = dir.join("partition.metadata.tmp");
            std::fs::write(&tmp, topic_id)
                .and_then(|()| std::fs::rename(&tmp, &meta_path))
                .map_err(|e| format!("write {}: {e}", meta_path.display()))?;
        }
        let p = Partition {
            tp,
            topic_id,
            log,
            dir,
            producers: RefCell::new(ProducerStateTable::default()),
            txns: RefCell::new(TxnIndex::new()),
            verifying: RefCell::new(HashMap::new()),
            hw_advanced: LocalEvent::new(),
            follower_log_start_moved: LocalEvent::new(),
            appended: LocalEvent::new(),
            leader_epoch: Cell::new(-1),
            is_leader: Cell::new(false),
            isr: RefCell::new(Vec::new()),
            replicas: RefCell::new(Vec::new()),
            followers: RefCell::new(HashMap::new()),
            local_broker,
            leader_since: Cell::new(Instant::now()),
            isr_change_pending: Cell::new(false),
            leader_high_watermark: Cell::new(-1),
            write_failed: Cell::new(None),
            write_failure_signal: RefCell::new(None),
        };
        p.rebuild_producer_state().await;
        Ok(p)
    }

    /// Loads the producer and transaction snapshots and replays the batches written after
    /// each (a missing or unusable snapshot: from the log start).
    async fn rebuild_producer_state(&self) {
        let leo = self.log.log_end_offset();
        let start = self.log.log_start_offset();
        let snap = std::fs::read(self.dir.join(PRODUCER_SNAPSHOT))
            .ok()
            .and_then(|b| ProducerStateTable::decode_snapshot(&b));
        let (table, producers_from) = match snap {
            Some((t, end)) if end <= leo => (t, end),
            _ => (ProducerStateTable::default(), start),
        };
        *self.producers.borrow_mut() = table;
        let snap = std::fs::read(self.dir.join(TXN_SNAPSHOT))
            .ok()
            .and_then(|b| TxnIndex::decode_snapshot(&b));
        let (txns, txns_from) = match snap {
            Some((t, end)) if end <= leo => (t, end),
            _ => (TxnIndex::new(), start),
        };
        *self.txns.borrow_mut() = txns;
        self.replay(producers_from.max(start), txns_from.max(start))
            .await;
    }

    /// Replays batch headers from the log up to its end: producer state from
    /// `producers_from`, transaction state from `txns_from`.
    async fn replay(&self, producers_from: i64, txns_from: i64) {
        let mut offset = producers_from.min(txns_from);
        let end = self.log.log_end_offset();
        while offset < end {
            let before = offset;
            let batches = match self.log.read(offset, 1 << 20, end).await {
                Ok(b) if !b.is_empty() => b,
                _ => break,
            };
            for b in &batches {
                // A read returns whole batches, possibly several in one buffer.
                let mut rest: &[u8] = b;
                while let Ok(h) = chronik_storage::parse_header(rest) {
                    let len = h.total_len().min(rest.len());
                    let batch = &rest[..len];
                    let marker = if h.is_control() {
                        chronik_storage::parse_marker(batch, &h)
                    } else {
                        None
                    };
                    if h.base_offset >= producers_from {
                        self.note_producer(&h, marker);
                    }
                    if h.base_offset >= txns_from {
                        self.note_txn(&h, marker);
                    }
                    offset = offset.max(h.last_offset() + 1);
                    rest = &rest[len..];
                }
            }
            if offset == before {
                break; // nothing parsed: a corrupt tail the log recovery did not cut
            }
        }
    }

    pub async fn close(self) {
        if !self.log.dir_created() {
            // Records still queued create the directory when written; a log that never got
            // one has no directory and nothing to snapshot.
            if let Err(e) = self.log.flush().await {
                tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, "close: {e}");
            }
        }
        if self.log.dir_created() {
            self.write_snapshots();
        }
        if let Err(e) = self.log.close().await {
            tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, "close: {e}");
        }
    }

    /// The producer and transaction snapshots a clean close leaves, so the next open need not
    /// replay the log.
    fn write_snapshots(&self) {
        let snap = self
            .producers
            .borrow()
            .encode_snapshot(self.log.log_end_offset());
        let path = self.dir.join(PRODUCER_SNAPSHOT);
        // Unchanged since it was written (an idle partition): a stop with thousands of them
        // should not rewrite each one.
        let unchanged = std::fs::read(&path).is_ok_and(|old| old == snap);
        let tmp = self.dir.join("producer-state.snapshot.tmp");
        if !unchanged && std::fs::write(&tmp, snap).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        let txn_path = self.dir.join(TXN_SNAPSHOT);
        // Written even when empty: without it the next open replays the whole log.
        let snap = self
            .txns
            .borrow()
            .encode_snapshot(self.log.log_end_offset());
        let unchanged = std::fs::read(&txn_path).is_ok_and(|old| old == snap);
        let tmp = self.dir.join("txn-state.snapshot.tmp");
        if !unchanged && std::fs::write(&tmp, snap).is_ok() {
            let _ = std::fs::rename(&tmp, &txn_path);
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Leader append of one batch. The batch has already been checked for size.
    pub async fn append_as_leader(&self, batch: BytesMut) -> ProduceOutcome {
        // Kafka answers CORRUPT_MESSAGE for a bad CRC or a malformed batch header.
        // The validated batch goes to the log as is, so its CRC is computed once.
        let Ok(batch) = chronik_storage::ValidBatch::new(batch) else {
            return ProduceOutcome::error(errors::CORRUPT_MESSAGE);
        };
        self.append_valid_as_leader(batch).await
    }

    /// Leader append of a batch already validated (a client's by `ValidBatch::from_client`).
    pub async fn append_valid_as_leader(
        &self,
        batch: chronik_storage::ValidBatch,
    ) -> ProduceOutcome {
        if self.awaits_new_epoch() {
            // Kafka answers a partition on a failed log directory so; clients refresh their
            // metadata and retry, by then at the next leader.
            return ProduceOutcome::error(errors::KAFKA_STORAGE_ERROR);
        }
        let header = *batch.header();
        if header.is_transactional() && header.producer_id < 0 {
            // Kafka: a transactional batch must carry a producer id.
            return ProduceOutcome::error(errors::INVALID_RECORD);
        }
        // A coordinator's own transactional batch (TxnOffsetCommit records written by the group
        // coordinator) carries the producer's id and epoch but no sequence, and is not checked
        // against the producer's sequences (Kafka's AppendOrigin.COORDINATOR). Clients cannot
        // send such a batch: `check_client_batch` demands a sequence with a producer id.
        if header.is_transactional() && header.base_sequence < 0 {
            return self.append_coordinator_txn_batch(batch).await;
        }
        // Sequence check and bookkeeping happen before the append is issued and without an
        // await in between, so pipelined batches of one producer are checked in arrival order.
        let check = self.producers.borrow().check(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            header.records_count,
        );
        let recorded_at = match check {
            SeqCheck::Reject(code) => return ProduceOutcome::error(code),
            SeqCheck::Duplicate { base_offset } => {
                // As Kafka: a retried batch is answered as the original was (its offsets, no
                // error), and an acks=all retry still waits for the high watermark to pass it.
                // If the original is still being written, the answer waits for its outcome.
                if let Err(e) = self.log.wait_appended(base_offset).await {
                    return ProduceOutcome::error(storage_error_code(&e));
                }
                return ProduceOutcome {
                    error: errors::NONE,
                    base_offset,
                    last_offset: base_offset + i64::from(header.records_count) - 1,
                    log_append_time: -1,
                    log_start_offset: self.log.log_start_offset(),
                };
            }
            SeqCheck::Accept => {
                let base = self.log.log_end_offset();
                let mut producers = self.producers.borrow_mut();
                producers.record(
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.records_count,
                    base,
                );
                producers.note_timestamp(header.producer_id, header.max_timestamp);
                if header.is_transactional() {
                    self.txns.borrow_mut().on_data(header.producer_id, base);
                }
                Some(base)
            }
            SeqCheck::NotIdempotent => None,
        };
        match self.append_leader_batch(batch).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(topic = %self.tp.topic, partition = self.tp.partition, "append failed: {e}");
                // The log dropped this batch: a retry must append it, not find a duplicate.
                if let Some(base) = recorded_at {
                    self.txns.borrow_mut().forget_data(header.producer_id, base);
                    self.producers
                        .borrow_mut()
                        .forget_from(header.producer_id, base);
                }
                ProduceOutcome::error(storage_error_code(&e))
            }
        }
    }

    /// Appends a checked batch at the leader's epoch; on success the high watermark may move
    /// and fetchers waiting for data wake. The caller undoes its own bookkeeping on error.
    async fn append_leader_batch(
        &self,
        batch: chronik_storage::ValidBatch,
    ) -> Result<ProduceOutcome, chronik_storage::StorageError> {
        let r = match self
            .log
            .append_valid(batch, self.leader_epoch.get().max(0))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.note_leader_write_failure(&e);
                return Err(e);
            }
        };
        self.maybe_advance_hw();
        self.appended.notify();
        Ok(ProduceOutcome {
            error: errors::NONE,
            base_offset: r.base_offset,
            last_offset: r.last_offset,
            log_append_time: -1,
            log_start_offset: self.log.log_start_offset(),
        })
    }

    async fn append_coordinator_txn_batch(
        &self,
        batch: chronik_storage::ValidBatch,
    ) -> ProduceOutcome {
        let header = *batch.header();
        if self
            .producers
            .borrow()
            .epoch_of(header.producer_id)
            .is_some_and(|known| header.producer_epoch < known)
        {
            return ProduceOutcome::error(errors::INVALID_PRODUCER_EPOCH);
        }
        let base = self.log.log_end_offset();
        self.txns.borrow_mut().on_data(header.producer_id, base);
        match self.append_leader_batch(batch).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.txns.borrow_mut().forget_data(header.producer_id, base);
                ProduceOutcome::error(storage_error_code(&e))
            }
        }
    }

    /// Where a failed leader write is announced (the shard's ISR loop listens).
    pub fn set_write_failure_signal(&self, signal: Rc<LatchedEvent>) {
        *self.write_failure_signal.borrow_mut() = Some(signal);
    }

    /// After a leader append failed: unless no other replica could have copied what the log
    /// dropped (this broker holds the only replica) or the error left the queue alone (a
    /// refused batch), the partition waits for a new leader epoch (`WriteFailure`).
    fn note_leader_write_failure(&self, e: &StorageError) {
        if storage_error_code(e) != errors::KAFKA_STORAGE_ERROR || !self.is_leader.get() {
            return;
        }
        if !self
            .replicas
            .borrow()
            .iter()
            .any(|b| *b != self.local_broker)
        {
            return;
        }
        let epoch = self.leader_epoch.get();
        if self.write_failed.get().is_some_and(|f| f.epoch == epoch) {
            return;
        }
        tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, epoch, "leader write failed; no appends until the controller gives a new leader epoch");
        self.write_failed.set(Some(WriteFailure {
            epoch,
            reported_at: None,
        }));
        if let Some(signal) = self.write_failure_signal.borrow().as_ref() {
            signal.raise();
        }
    }

    /// Whether appends wait for a new epoch after a failed write under the current one.
    pub fn awaits_new_epoch(&self) -> bool {
        self.write_failed
            .get()
            .is_some_and(|f| f.epoch == self.leader_epoch.get())
    }

    /// The failed write to report to the controller now: one under the current epoch, on the
    /// leader, not reported within `every`. Marks it reported at `now`.
    pub fn write_failure_to_report(&self, now: Instant, every: Duration) -> Option<i32> {
        let f = self.write_failed.get()?;
        if !self.is_leader.get() || f.epoch != self.leader_epoch.get() {
            return None;
        }
        if f.reported_at
            .is_some_and(|at| now.saturating_duration_since(at) < every)
        {
            return None;
        }
        self.write_failed.set(Some(WriteFailure {
            reported_at: Some(now),
            ..f
        }));
        Some(f.epoch)
    }

    /// Wakes every waiter of either event: leadership or the partition itself changed.
    pub fn notify_all(&self) {
        self.hw_advanced.notify();
        self.appended.notify();
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.get()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    pub fn isr_len(&self) -> usize {
        self.isr.borrow().len()
    }

    /// When this replica last became leader.
    pub fn leader_since(&self) -> Instant {
        self.leader_since.get()
    }

    /// On the leader: `follower` is outside the ISR and has reached the high watermark, so the
    /// ISR check may take it back in (it is asked at once instead of at its next sweep).
    pub fn could_rejoin_isr(&self, follower: BrokerId) -> bool {
        self.is_leader.get()
            && !self.isr.borrow().contains(&follower)
            && self
                .followers
                .borrow()
                .get(&follower)
                .is_some_and(|f| f.log_end_offset >= self.log.high_watermark())
    }

    /// A copy of the followers' progress (for the ISR decision).
    pub fn follower_states(&self) -> HashMap<BrokerId, FollowerState> {
        self.followers.borrow().clone()
    }

    /// On a follower: the leader's last reported high watermark (-1: none yet).
    pub fn leader_high_watermark(&self) -> i64 {
        self.leader_high_watermark.get()
    }

    /// The checks both roles share: the epoch does not go back, ISR ⊆ replicas, this broker
    /// holds a replica.
    fn check_role(
        &self,
        epoch: i32,
        isr: &[BrokerId],
        replicas: &[BrokerId],
    ) -> Result<(), ReplicaStateError> {
        let current = self.leader_epoch.get();
        if epoch < current {
            return Err(ReplicaStateError::EpochWentBack {
                current,
                new: epoch,
            });
        }
        if !isr.iter().all(|b| replicas.contains(b)) {
            return Err(ReplicaStateError::IsrNotInReplicas {
                isr: isr.to_vec(),
                replicas: replicas.to_vec(),
            });
        }
        if !replicas.contains(&self.local_broker) {
            return Err(ReplicaStateError::NotAReplica(self.local_broker));
        }
        Ok(())
    }

    /// Makes this replica the leader at `epoch` with the image's ISR and replicas (also an ISR
    /// update under the same epoch). Refused if the epoch goes back, the ISR is not within the
    /// replicas, or this broker is not in the ISR.
    pub fn become_leader(
        &self,
        epoch: i32,
        isr: &[BrokerId],
        replicas: &[BrokerId],
        now: Instant,
    ) -> Result<LeaderChange, ReplicaStateError> {
        self.check_role(epoch, isr, replicas)?;
        if !isr.contains(&self.local_broker) {
            return Err(ReplicaStateError::LeaderNotInIsr(
                self.local_broker,
                isr.to_vec(),
            ));
        }
        let was_leader = self.is_leader.get();
        let new_term = !was_leader || self.leader_epoch.get() != epoch;
        let isr_before = (was_leader && *self.isr.borrow() != isr)
            .then(|| std::mem::replace(&mut *self.isr.borrow_mut(), isr.to_vec()));
        if isr_before.is_none() {
            set_if_differs(&self.isr, isr);
        }
        set_if_differs(&self.replicas, replicas);
        self.leader_epoch.set(epoch);
        self.is_leader.set(true);
        if new_term {
            // A new term: follower progress is learnt afresh from their fetches.
            self.followers.borrow_mut().clear();
            self.leader_since.set(now);
        }
        self.maybe_advance_hw();
        if !was_leader {
            // Wake waiters so fetchers re-check leadership.
            self.notify_all();
        }
        Ok(LeaderChange {
            new_term,
            isr_before,
        })
    }

    /// Makes this replica a follower at `epoch` (of a leader elsewhere, or of none). Refused if
    /// the epoch goes back or the ISR is not within the replicas. True when it was the leader.
    pub fn become_follower(
        &self,
        epoch: i32,
        isr: &[BrokerId],
        replicas: &[BrokerId],
    ) -> Result<bool, ReplicaStateError> {
        self.check_role(epoch, isr, replicas)?;
        let was_leader = self.is_leader.replace(false);
        self.leader_epoch.set(epoch);
        set_if_differs(&self.isr, isr);
        set_if_differs(&self.replicas, replicas);
        if was_leader {
            // Wake waiters so acks=all producers and fetchers see they lost leadership.
            self.notify_all();
        }
        Ok(was_leader)
    }

    /// The partition leaves this broker (topic deleted or replica moved away): it stops
    /// serving, and whoever waits on it finds out.
    pub fn retire(&self) {
        self.is_leader.set(false);
        self.notify_all();
    }

    /// On the leader: a follower fetched at `offset` (its log end); records its progress and
    /// moves the high watermark. Refused on a follower and for a broker outside the replicas.
    pub fn record_follower_fetch(
        &self,
        follower: BrokerId,
        offset: i64,
        now: Instant,
    ) -> Result<(), ReplicaStateError> {
        if !self.is_leader.get() {
            return Err(ReplicaStateError::NotLeader);
        }
        if follower == self.local_broker || !self.replicas.borrow().contains(&follower) {
            return Err(ReplicaStateError::NotAReplica(follower));
        }
        let leo = self.log.log_end_offset();
        self.followers
            .borrow_mut()
            .entry(follower)
            .or_insert_with(|| FollowerState::new(offset, now))
            .record_fetch(offset, leo, now);
        self.maybe_advance_hw();
        Ok(())
    }

    /// On the leader: a follower's log start offset from its fetch (after `record_follower_fetch`
    /// accepted the fetch). A fetch that does not say (-1, Fetch before v5) changes nothing.
    pub fn record_follower_log_start(&self, follower: BrokerId, log_start: i64) {
        if log_start < 0 {
            return;
        }
        let moved = self
            .followers
            .borrow_mut()
            .get_mut(&follower)
            .is_some_and(|f| std::mem::replace(&mut f.log_start_offset, log_start) != log_start);
        if moved {
            self.follower_log_start_moved.notify();
        }
    }

    /// On the leader: Kafka's low watermark, the smallest log start offset over this replica and
    /// the in-sync followers (-1 while one of them has not said its own; a follower out of the
    /// ISR does not hold DeleteRecords up, as in Kafka a dead one does not). -1 on a follower.
    pub fn low_watermark(&self) -> i64 {
        if !self.is_leader.get() {
            return -1;
        }
        let mut low = self.log.log_start_offset();
        let isr = self.isr.borrow();
        let followers = self.followers.borrow();
        for b in isr.iter().filter(|b| **b != self.local_broker) {
            low = low.min(followers.get(b).map_or(-1, |f| f.log_start_offset));
        }
        low
    }

    /// On a follower: the leader's high watermark from a fetch answer. Ours moves to it, capped
    /// at our log end (never past what we hold), and never back. Refused on the leader, whose
    /// high watermark follows its ISR.
    pub fn update_high_watermark(&self, leader_hw: i64) -> Result<(), ReplicaStateError> {
        if self.is_leader.get() {
            return Err(ReplicaStateError::IsLeader);
        }
        self.leader_high_watermark.set(leader_hw);
        let leo = self.log.log_end_offset();
        let hw = leader_hw.min(leo);
        if hw > self.log.high_watermark() {
            self.set_hw(hw)?;
        }
        Ok(())
    }

    /// The one place the high watermark is written: refused beyond the log end.
    fn set_hw(&self, hw: i64) -> Result<(), ReplicaStateError> {
        let leo = self.log.log_end_offset();
        if hw > leo {
            return Err(ReplicaStateError::HwBeyondLeo { hw, leo });
        }
        self.log.set_high_watermark(hw);
        self.hw_advanced.notify();
        Ok(())
    }

    /// On the leader: high watermark = smallest log end offset over the ISR (its own
    /// included). Does nothing on a follower.
    pub fn maybe_advance_hw(&self) {
        if !self.is_leader.get() {
            return;
        }
        // Our own share is what is written, not what is queued: the HW is what every ISR
        // member holds in its files (followers report their end after their writes).
        let mut hw = self.log.written_end_offset();
        {
            let isr = self.isr.borrow();
            let followers = self.followers.borrow();
            for b in isr.iter().filter(|b| **b != self.local_broker) {
                match followers.get(b) {
                    Some(f) => hw = hw.min(f.log_end_offset),
                    // An ISR member we have not heard from yet holds the HW where it is.
                    None => hw = hw.min(self.log.high_watermark()),
                }
            }
        }
        if hw > self.log.high_watermark() {
            // Capped by our own written end above, so never past the log end.
            let set = self.set_hw(hw);
            debug_assert!(set.is_ok(), "{set:?}");
        }
    }

    /// Waits until the high watermark passes `offset` or the timeout ends. True when it passed.
    /// One timer for the whole wait (not one per wake-up: every HW move wakes every waiter).
    pub async fn wait_hw_above(&self, offset: i64, timeout: Duration) -> bool {
        let timer = glommio::timer::sleep(timeout);
        futures_lite::pin!(timer);
        loop {
            if self.log.high_watermark() > offset {
                return true;
            }
            if !self.is_leader.get() {
                return false;
            }
            let timed_out = futures_lite::future::or(
                async {
                    self.hw_advanced.listen().await;
                    false
                },
                async {
                    (&mut timer).await;
                    true
                },
            )
            .await;
            if timed_out {
                return self.log.high_watermark() > offset;
            }
        }
    }

    /// Consumer read: whole batches from `offset`, below the high watermark.
    pub async fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, StorageError> {
        self.log
            .read(offset, max_bytes, self.log.high_watermark())
            .await
    }

    /// Bookkeeping for a batch a follower copied from its leader (`marker`: what it says if it
    /// is a transaction marker), so a follower that becomes leader detects duplicates of
    /// batches written before the failover and knows the same transactions.
    pub fn record_replicated(
        &self,
        h: &chronik_storage::BatchHeader,
        marker: Option<chronik_storage::TxnMarker>,
    ) {
        self.note_producer(h, marker);
        self.note_txn(h, marker);
    }

    fn note_producer(
        &self,
        h: &chronik_storage::BatchHeader,
        marker: Option<chronik_storage::TxnMarker>,
    ) {
        if h.is_transactional() && !h.is_control() && h.base_sequence < 0 {
            return; // a coordinator's batch: no sequences (see `append_valid_as_leader`)
        }
        let mut producers = self.producers.borrow_mut();
        if h.is_control() {
            // A control batch that is no transaction marker carries no coordinator epoch.
            let coordinator_epoch = marker.map_or(-1, |m| m.coordinator_epoch);
            producers.record_marker(h.producer_id, h.producer_epoch, coordinator_epoch);
            return;
        }
        // From the offsets, not the record count: a batch the cleaner emptied keeps its
        // offsets and sequences but holds no records.
        producers.record(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.last_offset_delta.saturating_add(1),
            h.base_offset,
        );
        producers.note_timestamp(h.producer_id, h.max_timestamp);
    }

    fn note_txn(
        &self,
        h: &chronik_storage::BatchHeader,
        marker: Option<chronik_storage::TxnMarker>,
    ) {
        if !h.is_transactional() || h.producer_id < 0 {
            return;
        }
        if h.is_control() {
            self.void_verification(h.producer_id);
        }
        let mut txns = self.txns.borrow_mut();
        match (h.is_control(), marker) {
            (false, _) => txns.on_data(h.producer_id, h.base_offset),
            (true, Some(m)) => {
                txns.on_marker(h.producer_id, m.commit, h.base_offset);
            }
            // A control batch that is no transaction marker ends nothing.
            (true, None) => {}
        }
    }

    /// On the leader: writes the marker ending `producer_id`'s transaction here (the
    /// transaction coordinator's WriteTxnMarkers). A marker of an epoch older than the one this
    /// partition knows the producer by is refused with INVALID_PRODUCER_EPOCH (a zombie
    /// producer's), one from a coordinator older than the one that wrote the producer's last
    /// marker with TRANSACTION_COORDINATOR_FENCED (a zombie coordinator's); a newer epoch
    /// fences the producer's older batches.
    pub async fn append_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: chronik_storage::TxnMarker,
    ) -> ProduceOutcome {
        if producer_id < 0 || epoch < 0 {
            return ProduceOutcome::error(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if !self.is_leader.get() {
            return ProduceOutcome::error(errors::NOT_LEADER_OR_FOLLOWER);
        }
        if self.awaits_new_epoch() {
            return ProduceOutcome::error(errors::KAFKA_STORAGE_ERROR);
        }
        if let Err(code) =
            self.producers
                .borrow()
                .check_marker(producer_id, epoch, marker.coordinator_epoch)
        {
            return ProduceOutcome::error(code);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let bytes = chronik_storage::build_marker_batch(producer_id, epoch, marker, now_ms);
        let Ok(batch) = chronik_storage::ValidBatch::new(bytes) else {
            return ProduceOutcome::error(errors::UNKNOWN_SERVER_ERROR);
        };
        // Bookkeeping before the append is issued, as for data batches: the state follows
        // the order batches take in the log.
        let at = self.log.log_end_offset();
        self.void_verification(producer_id);
        let ended = self
            .txns
            .borrow_mut()
            .on_marker(producer_id, marker.commit, at);
        self.producers
            .borrow_mut()
            .record_marker(producer_id, epoch, marker.coordinator_epoch);
        match self.append_leader_batch(batch).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(topic = %self.tp.topic, partition = self.tp.partition, "marker append failed: {e}");
                if let Some(first) = ended {
                    self.txns.borrow_mut().forget_marker(producer_id, first, at);
                }
                ProduceOutcome::error(storage_error_code(&e))
            }
        }
    }

    /// The last stable offset: what read_committed consumers may read up to.
    pub fn last_stable_offset(&self) -> i64 {
        self.txns
            .borrow_mut()
            .last_stable_offset(self.log.high_watermark())
    }

    /// The aborted transactions overlapping `[from, to)` (Fetch with read_committed).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let mut txns = self.txns.borrow_mut();
        txns.trim_before(self.log.log_start_offset());
        txns.aborted_between(from, to)
    }

    /// The verification in flight for `producer_id`'s first transactional batch here.
    pub fn verification(&self, producer_id: i64) -> Option<Rc<Verification>> {
        self.verifying.borrow().get(&producer_id).cloned()
    }

    /// A verification of `producer_id`'s first transactional batch starts (replacing one of
    /// another epoch).
    pub fn begin_verification(&self, producer_id: i64, v: Rc<Verification>) {
        self.verifying.borrow_mut().insert(producer_id, v);
    }

    /// The verification `v` ended: it no longer stands for the producer.
    pub fn end_verification(&self, producer_id: i64, v: &Rc<Verification>) {
        let mut verifying = self.verifying.borrow_mut();
        if verifying
            .get(&producer_id)
            .is_some_and(|cur| Rc::ptr_eq(cur, v))
        {
            verifying.remove(&producer_id);
        }
    }

    /// A marker of `producer_id` is written: a verification in flight is void.
    fn void_verification(&self, producer_id: i64) {
        if let Some(v) = self.verifying.borrow().get(&producer_id) {
            v.void();
        }
    }

    /// The first offset of `producer_id`'s open transaction here (DescribeProducers).
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.txns.borrow().open_transaction(producer_id)
    }

    /// The idempotent producers with state in this partition (DescribeProducers).
    pub fn active_producers(&self) -> Vec<producer_state::ActiveProducer> {
        let mut out = self.producers.borrow().active();
        let txns = self.txns.borrow();
        for a in &mut out {
            a.txn_start_offset = txns.open_transaction(a.producer_id).unwrap_or(-1);
        }
        out
    }

    /// The log was truncated to `offset` (a follower's divergent tail): producer and
    /// transaction state follow. A cut marker reopens its transaction: the transaction state
    /// is then replayed from the log.
    pub async fn truncate_state(&self, offset: i64) {
        self.producers.borrow_mut().truncate_to(offset);
        let kept = self.txns.borrow_mut().truncate_to(offset);
        if !kept {
            *self.txns.borrow_mut() = TxnIndex::new();
            let start = self.log.log_start_offset();
            self.replay(i64::MAX, start).await;
        }
    }
}

/// Replaces a small list only when it changed (the image repeats it on most updates).
fn set_if_differs(cell: &RefCell<Vec<BrokerId>>, new: &[BrokerId]) {
    if *cell.borrow() != new {
        *cell.borrow_mut() = new.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::{FollowerState, LeaderChange, Partition, ReplicaStateError};
    use crate::kafka::errors;
    use crate::shard::TopicPartition;
    use std::future::Future;
    use std::time::{Duration, Instant};

    /// Runs `f` on a fresh partition "t-0" of broker 1 in a glommio executor.
    fn with_partition<F, Fut>(f: F)
    where
        F: FnOnce(Partition) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let p = Partition::open(
                    TopicPartition::new("t", 0),
                    [7; 16],
                    dir.path().join("t-0"),
                    Default::default(),
                    chronik_storage::ReadCache::new(1 << 20),
                    None,
                    1,
                )
                .await
                .expect("open");
                f(p).await;
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn a_leader_epoch_going_back_is_refused_and_the_state_kept() {
        with_partition(|p| async move {
            let now = Instant::now();
            assert!(p.become_leader(5, &[1, 2], &[1, 2, 3], now).is_ok());
            assert_eq!(
                p.become_follower(4, &[1, 2], &[1, 2, 3]),
                Err(ReplicaStateError::EpochWentBack { current: 5, new: 4 })
            );
            assert_eq!(
                p.become_leader(4, &[1, 2], &[1, 2, 3], now),
                Err(ReplicaStateError::EpochWentBack { current: 5, new: 4 })
            );
            assert!(p.is_leader());
            assert_eq!(p.leader_epoch(), 5);
            // The same epoch again is an ISR update, and a newer one a change of leader.
            assert!(p.become_leader(5, &[1], &[1, 2, 3], now).is_ok());
            assert_eq!(p.isr_len(), 1);
            assert_eq!(p.become_follower(6, &[2], &[1, 2, 3]), Ok(true));
            assert!(!p.is_leader());
            assert_eq!(p.leader_epoch(), 6);
            p.close().await;
        });
    }

    #[test]
    fn an_isr_outside_the_replicas_or_a_leader_outside_its_isr_is_refused() {
        with_partition(|p| async move {
            let now = Instant::now();
            assert!(matches!(
                p.become_leader(1, &[1, 4], &[1, 2, 3], now),
                Err(ReplicaStateError::IsrNotInReplicas { .. })
            ));
            assert!(matches!(
                p.become_follower(1, &[2, 4], &[1, 2, 3]),
                Err(ReplicaStateError::IsrNotInReplicas { .. })
            ));
            assert_eq!(
                p.become_leader(1, &[2, 3], &[1, 2, 3], now),
                Err(ReplicaStateError::LeaderNotInIsr(1, vec![2, 3]))
            );
            // A broker that holds no replica cannot take either role.
            assert_eq!(
                p.become_follower(1, &[2], &[2, 3]),
                Err(ReplicaStateError::NotAReplica(1))
            );
            // Nothing was applied: still the state of a freshly opened replica.
            assert!(!p.is_leader());
            assert_eq!(p.leader_epoch(), -1);
            assert_eq!(p.isr_len(), 0);
            p.close().await;
        });
    }

    #[test]
    fn the_high_watermark_never_passes_the_log_end() {
        with_partition(|p| async move {
            assert_eq!(p.become_follower(0, &[1, 2], &[1, 2]), Ok(false));
            // The leader is ahead of this empty replica: ours stays at our log end.
            assert_eq!(p.update_high_watermark(100), Ok(()));
            assert_eq!(p.high_watermark(), 0);
            assert_eq!(p.leader_high_watermark(), 100);
            assert_eq!(
                p.set_hw(5),
                Err(ReplicaStateError::HwBeyondLeo { hw: 5, leo: 0 })
            );
            assert_eq!(p.high_watermark(), 0);
            // A leader's high watermark follows its ISR, not what it is told.
            assert!(p.become_leader(1, &[1, 2], &[1, 2], Instant::now()).is_ok());
            assert_eq!(
                p.update_high_watermark(100),
                Err(ReplicaStateError::IsLeader)
            );
            p.close().await;
        });
    }

    #[test]
    fn the_leader_moves_the_high_watermark_when_its_isr_has_the_data() {
        with_partition(|p| async move {
            let change = p.become_leader(0, &[1, 2], &[1, 2, 3], Instant::now());
            assert_eq!(
                change,
                Ok(LeaderChange {
                    new_term: true,
                    isr_before: None
                })
            );
            let batch = chronik_storage::testing::build_batch_of(3, 100, 1, 0);
            let out = p.append_as_leader(batch).await;
            assert_eq!((out.error, out.last_offset), (errors::NONE, 2));
            assert_eq!(
                p.high_watermark(),
                0,
                "follower 2 of the ISR has not fetched"
            );
            // Only the leader records follower fetches, and only from replicas.
            assert_eq!(
                p.record_follower_fetch(9, 3, Instant::now()),
                Err(ReplicaStateError::NotAReplica(9))
            );
            assert_eq!(
                p.record_follower_fetch(1, 3, Instant::now()),
                Err(ReplicaStateError::NotAReplica(1))
            );
            assert_eq!(p.record_follower_fetch(2, 3, Instant::now()), Ok(()));
            assert_eq!(p.high_watermark(), 3);
            // An ISR change under the same epoch reports the ISR before.
            let change = p.become_leader(0, &[1], &[1, 2, 3], Instant::now());
            assert_eq!(
                change,
                Ok(LeaderChange {
                    new_term: false,
                    isr_before: Some(vec![1, 2])
                })
            );
            assert_eq!(p.become_follower(1, &[2], &[1, 2, 3]), Ok(true));
            assert_eq!(
                p.record_follower_fetch(2, 3, Instant::now()),
                Err(ReplicaStateError::NotLeader)
            );
            p.close().await;
        });
    }

    fn write_error() -> chronik_storage::StorageError {
        chronik_storage::StorageError::Io {
            path: "t-0".into(),
            op: "write",
            source: std::io::Error::other("injected"),
        }
    }

    #[test]
    fn a_leader_whose_write_failed_takes_no_appends_until_a_new_epoch() {
        with_partition(|p| async move {
            let t0 = Instant::now();
            assert!(p.become_leader(5, &[1, 2], &[1, 2, 3], t0).is_ok());
            let batch = || chronik_storage::testing::build_batch_of(3, 100, 1, 0);
            assert_eq!(p.append_as_leader(batch()).await.error, errors::NONE);
            assert_eq!(p.write_failure_to_report(t0, Duration::from_secs(1)), None);
            p.note_leader_write_failure(&write_error());
            assert!(p.awaits_new_epoch());
            let refused = p.append_as_leader(batch()).await;
            assert_eq!(refused.error, errors::KAFKA_STORAGE_ERROR);
            assert_eq!(
                p.log_end_offset(),
                3,
                "nothing appended under the failed epoch"
            );
            // Reported at once, then again only after the interval (an unanswered report).
            let every = Duration::from_secs(1);
            assert_eq!(p.write_failure_to_report(t0, every), Some(5));
            assert_eq!(p.write_failure_to_report(t0 + every / 2, every), None);
            assert_eq!(p.write_failure_to_report(t0 + every, every), Some(5));
            // The controller's new epoch (same leader here) opens it again.
            assert!(p.become_leader(6, &[1, 2], &[1, 2, 3], t0).is_ok());
            assert!(!p.awaits_new_epoch());
            assert_eq!(p.write_failure_to_report(t0 + 3 * every, every), None);
            let out = p.append_as_leader(batch()).await;
            assert_eq!((out.error, out.base_offset), (errors::NONE, 3));
            p.close().await;
        });
    }

    #[test]
    fn a_failed_write_needs_no_new_epoch_on_the_only_replica_or_after_leadership_moved() {
        with_partition(|p| async move {
            let t0 = Instant::now();
            assert!(p.become_leader(0, &[1], &[1], t0).is_ok());
            p.note_leader_write_failure(&write_error());
            assert!(
                !p.awaits_new_epoch(),
                "no other replica can hold what was dropped"
            );
            assert!(p.become_leader(1, &[1, 2], &[1, 2], t0).is_ok());
            p.note_leader_write_failure(&write_error());
            assert!(p.awaits_new_epoch());
            // Leadership moved away (the controller's answer): nothing left to report.
            assert_eq!(p.become_follower(2, &[1, 2], &[1, 2]), Ok(true));
            assert!(!p.awaits_new_epoch());
            assert_eq!(p.write_failure_to_report(t0, Duration::from_secs(1)), None);
            p.close().await;
        });
    }

    #[test]
    fn the_low_watermark_is_the_least_log_start_over_the_leader_and_its_in_sync_followers() {
        with_partition(|p| async move {
            assert!(p
                .become_leader(0, &[1, 2], &[1, 2, 3], Instant::now())
                .is_ok());
            let batch = chronik_storage::testing::build_batch_of(10, 100, 1, 0);
            assert_eq!(p.append_as_leader(batch).await.error, errors::NONE);
            assert_eq!(p.record_follower_fetch(2, 10, Instant::now()), Ok(()));
            assert_eq!(p.record_follower_fetch(3, 4, Instant::now()), Ok(()));
            assert_eq!(p.log.delete_records_before(6).await.ok(), Some(6));
            assert_eq!(
                p.low_watermark(),
                -1,
                "follower 2 has not said its log start"
            );
            p.record_follower_log_start(2, 4);
            assert_eq!(p.low_watermark(), 4);
            // Follower 3 is out of the ISR: it does not hold the low watermark back.
            p.record_follower_log_start(3, 0);
            assert_eq!(p.low_watermark(), 4);
            p.record_follower_log_start(2, 8);
            assert_eq!(p.low_watermark(), 6, "the leader's own log start");
            // A fetch that does not say (-1) changes nothing.
            p.record_follower_log_start(2, -1);
            assert_eq!(p.low_watermark(), 6);
            // An unknown broker is not recorded.
            p.record_follower_log_start(9, 0);
            assert_eq!(p.low_watermark(), 6);
            assert_eq!(p.become_follower(1, &[2], &[1, 2, 3]), Ok(true));
            assert_eq!(p.low_watermark(), -1, "only a leader has one");
            p.close().await;
        });
    }

    #[test]
    fn a_follower_outside_the_isr_may_rejoin_once_it_reaches_the_high_watermark() {
        with_partition(|p| async move {
            assert!(p.become_leader(0, &[1], &[1, 2, 3], Instant::now()).is_ok());
            let batch = chronik_storage::testing::build_batch_of(3, 100, 1, 0);
            assert_eq!(p.append_as_leader(batch).await.error, errors::NONE);
            assert_eq!(p.high_watermark(), 3, "the leader alone is the ISR");
            assert!(!p.could_rejoin_isr(2), "not heard from yet");
            assert_eq!(p.record_follower_fetch(2, 1, Instant::now()), Ok(()));
            assert!(!p.could_rejoin_isr(2), "behind the high watermark");
            assert_eq!(p.record_follower_fetch(2, 3, Instant::now()), Ok(()));
            assert!(p.could_rejoin_isr(2));
            // Once back in the ISR (the image says so) there is nothing to rejoin.
            assert!(p
                .become_leader(0, &[1, 2], &[1, 2, 3], Instant::now())
                .is_ok());
            assert!(!p.could_rejoin_isr(2));
            assert_eq!(p.become_follower(1, &[2], &[1, 2, 3]), Ok(true));
            assert!(!p.could_rejoin_isr(3), "only a leader decides");
            p.close().await;
        });
    }

    /// An idempotent producer's retry that arrives while the original batch is still being
    /// written is answered only once the write is done, with the original's offsets.
    #[test]
    fn a_retry_of_a_batch_in_flight_waits_for_its_write() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async {
                let dir = tempfile::tempdir().expect("tempdir");
                let tp = TopicPartition {
                    topic: "t".into(),
                    partition: 0,
                };
                let cache = chronik_storage::ReadCache::new(1 << 20);
                let p = Partition::open(
                    tp,
                    [7; 16],
                    dir.path().join("t-0"),
                    Default::default(),
                    cache,
                    None,
                    1,
                )
                .await
                .expect("open");
                let mut batch = chronik_storage::testing::build_batch_of(3, 100, 1, 0);
                chronik_storage::testing::set_producer(&mut batch, 42, 0, 0);

                {
                    let original = p.append_as_leader(batch.clone());
                    futures_lite::pin!(original);
                    assert!(
                        futures_lite::future::poll_once(&mut original)
                            .await
                            .is_none(),
                        "the first poll queues the write and waits for it"
                    );
                    assert_eq!(p.log.written_end_offset(), 0);
                    let retry = p.append_as_leader(batch);
                    futures_lite::pin!(retry);
                    assert!(
                        futures_lite::future::poll_once(&mut retry).await.is_none(),
                        "a retry must not be answered before the original is written"
                    );
                    let (o, r) = futures_lite::future::zip(original, retry).await;
                    assert_eq!(
                        (o.error, o.base_offset, o.last_offset),
                        (errors::NONE, 0, 2)
                    );
                    assert_eq!(
                        (r.error, r.base_offset, r.last_offset),
                        (errors::NONE, 0, 2)
                    );
                }
                assert_eq!(p.log.log_end_offset(), 3, "stored once");
                assert_eq!(p.log.written_end_offset(), 3);
                p.close().await;
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn a_follower_keeping_pace_under_steady_load_stays_caught_up() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut f = FollowerState::new(0, t0);
        // Every fetch brings the follower to where the leader was at its previous fetch, and
        // new data has always arrived in between: never equal to the current LEO.
        for i in 1..=100u64 {
            f.record_fetch(100 * (i as i64 - 1), 100 * i as i64, ms(10 * i));
        }
        assert_eq!(
            f.caught_up_at,
            ms(990),
            "caught up as of its previous fetch"
        );
        // A follower that stops making progress is not: the time stays where it was.
        for i in 101..=200u64 {
            f.record_fetch(9_900, 100 * i as i64, ms(10 * i));
        }
        assert_eq!(f.caught_up_at, ms(990));
        // Reaching the LEO counts at once.
        f.record_fetch(20_000, 20_000, ms(2_500));
        assert_eq!(f.caught_up_at, ms(2_500));
    }
}
