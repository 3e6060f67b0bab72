//! One partition replica on its owning shard: the log, idempotent-producer state, the high
//! watermark and the wake-ups fetchers and acks=all producers wait on.

pub mod producer_state;

use crate::kafka::errors;
use crate::shard::event::LocalEvent;
use crate::shard::TopicPartition;
use bytes::{Bytes, BytesMut};
use chronik_raft::image::{BrokerId, TopicId};
use chronik_storage::{PartitionLog, StorageError};
use producer_state::{ProducerStateTable, SeqCheck};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PRODUCER_SNAPSHOT: &str = "producer-state.snapshot";
const PARTITION_METADATA: &str = "partition.metadata";

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
}

impl FollowerState {
    pub fn new(offset: i64, now: Instant) -> FollowerState {
        FollowerState {
            log_end_offset: offset,
            caught_up_at: now,
            last_fetch_leo: offset,
            last_fetch_at: now,
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
    /// Signalled when the high watermark moves (consumer fetch long-polls, acks=all waiters).
    pub hw_advanced: LocalEvent,
    /// Signalled when a leader append is written (follower fetch long-polls). Separate from
    /// `hw_advanced` because every follower fetch moves the HW: one event for both woke each
    /// parked follower fetch at the other followers' fetches, to find nothing new.
    pub appended: LocalEvent,
    pub leader_epoch: Cell<i32>,
    pub is_leader: Cell<bool>,
    /// ISR from the metadata image, used for the high watermark and acks=all.
    pub isr: RefCell<Vec<BrokerId>>,
    pub followers: RefCell<HashMap<BrokerId, FollowerState>>,
    pub local_broker: BrokerId,
    /// When this replica last became leader (followers not heard from since are judged by it).
    pub leader_since: Cell<Instant>,
    /// An AlterPartition proposal is in flight.
    pub isr_change_pending: Cell<bool>,
    /// On a follower: the leader's high watermark in its last fetch answer (-1: none yet), so
    /// DescribeLogDirs can report how far this replica trails it.
    pub leader_high_watermark: Cell<i64>,
}

pub fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::InvalidBatch(_) => errors::CORRUPT_MESSAGE,
        StorageError::OffsetOutOfRange { .. } => errors::OFFSET_OUT_OF_RANGE,
        _ => errors::KAFKA_STORAGE_ERROR,
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
        local_broker: BrokerId,
    ) -> Result<Partition, String> {
        // A directory left by a deleted topic of the same name must not be adopted.
        let meta_path = dir.join(PARTITION_METADATA);
        if let Ok(existing) = std::fs::read(&meta_path) {
            if existing.as_slice() != topic_id.as_slice() {
                tracing::info!(dir = %dir.display(), "removing log of an older topic with the same name");
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| format!("remove stale {}: {e}", dir.display()))?;
            }
        }
        let log = PartitionLog::open(dir.clone(), cfg, cache)
            .await
            .map_err(|e| format!("open log {}: {e}", dir.display()))?;
        std::fs::write(&meta_path, topic_id)
            .map_err(|e| format!("write {}: {e}", meta_path.display()))?;
        let p = Partition {
            tp,
            topic_id,
            log,
            dir,
            producers: RefCell::new(ProducerStateTable::default()),
            hw_advanced: LocalEvent::new(),
            appended: LocalEvent::new(),
            leader_epoch: Cell::new(-1),
            is_leader: Cell::new(false),
            isr: RefCell::new(Vec::new()),
            followers: RefCell::new(HashMap::new()),
            local_broker,
            leader_since: Cell::new(Instant::now()),
            isr_change_pending: Cell::new(false),
            leader_high_watermark: Cell::new(-1),
        };
        p.rebuild_producer_state().await;
        Ok(p)
    }

    /// Loads the producer snapshot and replays batch headers written after it.
    async fn rebuild_producer_state(&self) {
        let snap = std::fs::read(self.dir.join(PRODUCER_SNAPSHOT))
            .ok()
            .and_then(|b| ProducerStateTable::decode_snapshot(&b));
        let (table, from) = match snap {
            Some((t, end)) if end <= self.log.log_end_offset() => (t, end),
            _ => (ProducerStateTable::default(), self.log.log_start_offset()),
        };
        *self.producers.borrow_mut() = table;
        let mut offset = from.max(self.log.log_start_offset());
        let end = self.log.log_end_offset();
        while offset < end {
            let batches = match self.log.read(offset, 1 << 20, end).await {
                Ok(b) if !b.is_empty() => b,
                _ => break,
            };
            for b in &batches {
                if let Ok(h) = chronik_storage::parse_header(b) {
                    self.record_replicated_producer(&h);
                    offset = h.last_offset() + 1;
                } else {
                    offset = end;
                }
            }
        }
    }

    pub async fn close(self) {
        let snap = self
            .producers
            .borrow()
            .encode_snapshot(self.log.log_end_offset());
        let path = self.dir.join(PRODUCER_SNAPSHOT);
        let tmp = self.dir.join("producer-state.snapshot.tmp");
        if std::fs::write(&tmp, snap).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        if let Err(e) = self.log.close().await {
            tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, "close: {e}");
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
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
        let header = *batch.header();
        if header.is_transactional() {
            // Transactions are not supported yet; InitProducerId refuses transactional ids.
            return ProduceOutcome::error(errors::INVALID_TXN_STATE);
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
                Some(base)
            }
            SeqCheck::NotIdempotent => None,
        };
        match self
            .log
            .append_valid(batch, self.leader_epoch.get().max(0))
            .await
        {
            Ok(r) => {
                self.maybe_advance_hw();
                self.appended.notify();
                ProduceOutcome {
                    error: errors::NONE,
                    base_offset: r.base_offset,
                    last_offset: r.last_offset,
                    log_append_time: -1,
                    log_start_offset: self.log.log_start_offset(),
                }
            }
            Err(e) => {
                tracing::error!(topic = %self.tp.topic, partition = self.tp.partition, "append failed: {e}");
                // The log dropped this batch: a retry must append it, not find a duplicate.
                if let Some(base) = recorded_at {
                    self.producers
                        .borrow_mut()
                        .forget_from(header.producer_id, base);
                }
                ProduceOutcome::error(storage_error_code(&e))
            }
        }
    }

    /// Wakes every waiter of either event: leadership or the partition itself changed.
    pub fn notify_all(&self) {
        self.hw_advanced.notify();
        self.appended.notify();
    }

    /// High watermark = smallest log end offset over the ISR (the leader's own included).
    pub fn maybe_advance_hw(&self) {
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
            self.log.set_high_watermark(hw);
            debug_assert!(self.log.high_watermark() <= self.log.log_end_offset());
            self.hw_advanced.notify();
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

    /// Producer bookkeeping for a batch a follower copied from its leader (or one replayed from
    /// the log at open), so a follower that becomes leader detects duplicates of batches written
    /// before the failover.
    pub fn record_replicated_producer(&self, h: &chronik_storage::BatchHeader) {
        let mut producers = self.producers.borrow_mut();
        producers.record(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.records_count,
            h.base_offset,
        );
        producers.note_timestamp(h.producer_id, h.max_timestamp);
    }

    /// The idempotent producers with state in this partition (DescribeProducers).
    pub fn active_producers(&self) -> Vec<producer_state::ActiveProducer> {
        self.producers.borrow().active()
    }

    pub fn truncate_producers(&self, offset: i64) {
        self.producers.borrow_mut().truncate_to(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::{FollowerState, Partition};
    use crate::kafka::errors;
    use crate::shard::TopicPartition;
    use std::time::{Duration, Instant};

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
