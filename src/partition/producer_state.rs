//! Idempotent-producer state of one partition: the last five batches (sequence ranges and offsets)
//! per producer id, as Kafka keeps them, so retries are answered with the original offset and gaps
//! are refused; and the coordinator epoch of the producer's last transaction marker, so a marker
//! from a coordinator that has since been replaced is refused (TRANSACTION_COORDINATOR_FENCED).

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Kafka keeps the metadata of the last 5 batches per producer (max.in.flight ≤ 5).
const CACHED_BATCHES: usize = 5;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// The coordinator epoch (the `__transaction_state` partition's leader epoch) of the
    /// newest marker written for this producer; -1: none yet.
    pub coordinator_epoch: i32,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
        }
    }
}

/// Version 1 snapshots, from before the coordinator epoch was kept: still read, with no
/// coordinator epoch known (-1) until the producer's next marker.
#[derive(Deserialize)]
struct ProducerEntryV1 {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

#[derive(Deserialize)]
struct SnapshotV1 {
    #[allow(dead_code)]
    version: u16,
    end_offset: i64,
    producers: Vec<(i64, ProducerEntryV1)>,
}

/// Written snapshots' version.
const SNAPSHOT_VERSION: u16 = 2;

#[derive(Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// Not idempotent (producer id -1): no bookkeeping.
    NotIdempotent,
    /// Append it.
    Accept,
    /// Already written: answer with this base offset and do not append.
    Duplicate { base_offset: i64 },
    /// Refuse with this Kafka error code.
    Reject(i16),
}

/// The serialised form written to `producer-state.snapshot` (versioned).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u16,
    /// Entries reflect every batch below this offset.
    end_offset: i64,
    producers: Vec<(i64, ProducerEntry)>,
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Newest batch max-timestamp per producer, for DescribeProducers. Not in the snapshot
    /// (its format stays as it is): after a restart it is known again from the next batch, or
    /// from the batches replayed past the snapshot.
    last_timestamps: HashMap<i64, i64>,
}

/// One active producer as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// -1 when not known.
    pub last_timestamp: i64,
    /// First offset of its open transaction here (-1: none).
    pub txn_start_offset: i64,
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

fn last_seq(first: i32, count: i32) -> i32 {
    // sequences wrap at i32::MAX like Kafka's
    ((i64::from(first) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerStateTable {
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, count: i32) -> SeqCheck {
        use crate::kafka::errors::*;
        if producer_id < 0 {
            return SeqCheck::NotIdempotent;
        }
        let lseq = last_seq(first_seq, count);
        match self.producers.get(&producer_id) {
            // As Kafka: a producer we hold no state for (never seen, or its batches were
            // truncated, deleted or forgotten after a failed write) may continue at any sequence.
            None => SeqCheck::Accept,
            Some(e) if epoch < e.epoch => SeqCheck::Reject(INVALID_PRODUCER_EPOCH),
            Some(e) if epoch > e.epoch => {
                if first_seq == 0 {
                    SeqCheck::Accept
                } else {
                    SeqCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
                }
            }
            Some(e) => {
                if let Some(b) = e
                    .batches
                    .iter()
                    .find(|b| b.first_seq == first_seq && b.last_seq == lseq)
                {
                    return SeqCheck::Duplicate {
                        base_offset: b.base_offset,
                    };
                }
                match e.batches.back() {
                    Some(last) if first_seq != next_seq(last.last_seq) => {
                        SeqCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
                    }
                    // No batch cached (only a transaction marker set the epoch): as with no
                    // state at all, any sequence may continue.
                    _ => SeqCheck::Accept,
                }
            }
        }
    }

    /// Records an appended batch (also used when replaying the log on open).
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        count: i32,
        base_offset: i64,
    ) {
        if producer_id < 0 {
            return;
        }
        let e = self.producers.entry(producer_id).or_default();
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq,
            last_seq: last_seq(first_seq, count),
            base_offset,
            last_offset: base_offset + i64::from(count) - 1,
        });
        while e.batches.len() > CACHED_BATCHES {
            e.batches.pop_front();
        }
    }

    /// Whether a marker of `producer_id` at `epoch` from a coordinator at `coordinator_epoch`
    /// may be written, as Kafka checks it: INVALID_PRODUCER_EPOCH for an epoch older than the
    /// producer's here, TRANSACTION_COORDINATOR_FENCED for a coordinator older than the one
    /// that wrote the producer's last marker (a zombie coordinator's).
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), i16> {
        let Some(e) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < e.epoch {
            return Err(crate::kafka::errors::INVALID_PRODUCER_EPOCH);
        }
        if coordinator_epoch < e.coordinator_epoch {
            return Err(crate::kafka::errors::TRANSACTION_COORDINATOR_FENCED);
        }
        Ok(())
    }

    /// A transaction marker of `producer_id` at `epoch`, from a coordinator at
    /// `coordinator_epoch`, was appended. A newer epoch (the coordinator fenced the producer)
    /// replaces the old one, so batches of the fenced epoch are refused from now on; its
    /// cached batches go, as Kafka resets them on a new epoch.
    pub fn record_marker(&mut self, producer_id: i64, epoch: i16, coordinator_epoch: i32) {
        if producer_id < 0 {
            return;
        }
        let e = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                ..ProducerEntry::default()
            });
        if epoch > e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.coordinator_epoch = e.coordinator_epoch.max(coordinator_epoch);
    }

    /// The epoch this partition knows `producer_id` by (None: no state here).
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Forgets `producer_id`'s batches from `base_offset` on: their append failed, so a retry
    /// must be appended again, not answered as a duplicate of records the log does not hold.
    pub fn forget_from(&mut self, producer_id: i64, base_offset: i64) {
        if let Some(e) = self.producers.get_mut(&producer_id) {
            e.batches.retain(|b| b.base_offset < base_offset);
            if e.batches.is_empty() {
                self.producers.remove(&producer_id);
                self.last_timestamps.remove(&producer_id);
            }
        }
    }

    /// Drops what lies at or after `offset` (log truncation).
    pub fn truncate_to(&mut self, offset: i64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
        let producers = &self.producers;
        self.last_timestamps
            .retain(|id, _| producers.contains_key(id));
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Remembers the max timestamp of a producer's newest batch.
    pub fn note_timestamp(&mut self, producer_id: i64, max_timestamp: i64) {
        if self.producers.contains_key(&producer_id) {
            self.last_timestamps.insert(producer_id, max_timestamp);
        }
    }

    /// The producers with state in this partition, by id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .filter_map(|(id, e)| {
                Some(ActiveProducer {
                    producer_id: *id,
                    epoch: e.epoch,
                    last_sequence: e.batches.back()?.last_seq,
                    last_timestamp: self.last_timestamps.get(id).copied().unwrap_or(-1),
                    txn_start_offset: -1,
                })
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// (producer id, epoch, last offset of its newest cached batch) of each producer: what
    /// the log cleaner keeps of a producer so this state survives a replay of the log.
    pub fn tails(&self) -> impl Iterator<Item = (i64, i16, Option<i64>)> + '_ {
        self.producers
            .iter()
            .map(|(id, e)| (*id, e.epoch, e.batches.back().map(|b| b.last_offset)))
    }

    pub fn encode_snapshot(&self, end_offset: i64) -> Vec<u8> {
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            end_offset,
            producers: self
                .producers
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        };
        bincode::serialize(&snap).unwrap_or_default()
    }

    /// Returns the table and the offset from which the log must be replayed.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(ProducerStateTable, i64)> {
        // The version leads either layout. bincode bounds what it allocates by the bytes
        // present, so a lying length fails to decode instead of allocating.
        let version: u16 = bincode::deserialize(bytes).ok()?;
        let (producers, end_offset): (HashMap<i64, ProducerEntry>, i64) = match version {
            1 => {
                let snap: SnapshotV1 = bincode::deserialize(bytes).ok()?;
                let producers = snap.producers.into_iter().map(|(id, e)| {
                    let entry = ProducerEntry {
                        epoch: e.epoch,
                        batches: e.batches,
                        coordinator_epoch: -1,
                    };
                    (id, entry)
                });
                (producers.collect(), snap.end_offset)
            }
            SNAPSHOT_VERSION => {
                let snap: Snapshot = bincode::deserialize(bytes).ok()?;
                (snap.producers.into_iter().collect(), snap.end_offset)
            }
            _ => return None,
        };
        Some((
            ProducerStateTable {
                producers,
                last_timestamps: HashMap::new(),
            },
            end_offset,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::errors::*;

    #[test]
    fn active_producers_report_their_last_sequence_and_timestamp() {
        let mut t = ProducerStateTable::default();
        t.record(9, 2, 0, 3, 0);
        t.note_timestamp(9, 1234);
        t.record(9, 2, 3, 4, 3);
        t.record(4, 0, 0, 1, 7);
        assert_eq!(
            t.active(),
            vec![
                ActiveProducer {
                    producer_id: 4,
                    epoch: 0,
                    last_sequence: 0,
                    last_timestamp: -1,
                    txn_start_offset: -1
                },
                ActiveProducer {
                    producer_id: 9,
                    epoch: 2,
                    last_sequence: 6,
                    last_timestamp: 1234,
                    txn_start_offset: -1
                },
            ]
        );
        t.truncate_to(3);
        assert_eq!(t.active().len(), 1);
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_out_of_order() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(7, 0, 0, 10), SeqCheck::Accept);
        t.record(7, 0, 0, 10, 100);
        assert_eq!(t.check(7, 0, 10, 5), SeqCheck::Accept);
        t.record(7, 0, 10, 5, 110);
        assert_eq!(
            t.check(7, 0, 0, 10),
            SeqCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            t.check(7, 0, 20, 5),
            SeqCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            t.check(7, -1, 15, 1),
            SeqCheck::Reject(INVALID_PRODUCER_EPOCH)
        );
        // A producer without state here continues at any sequence, as in Kafka.
        assert_eq!(t.check(8, 0, 3, 1), SeqCheck::Accept);
        assert_eq!(t.check(-1, -1, -1, 3), SeqCheck::NotIdempotent);
    }

    #[test]
    fn a_batch_whose_append_failed_is_appended_again_on_retry() {
        let mut t = ProducerStateTable::default();
        t.record(7, 0, 0, 10, 100);
        t.record(7, 0, 10, 5, 110); // queued, then its write failed
        t.record(9, 0, 0, 5, 110); // another producer's batch took offset 110 afterwards
        t.forget_from(7, 110);
        assert_eq!(t.check(7, 0, 10, 5), SeqCheck::Accept, "not a duplicate");
        assert_eq!(
            t.check(7, 0, 0, 10),
            SeqCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            t.check(9, 0, 0, 5),
            SeqCheck::Duplicate { base_offset: 110 }
        );
        // Every batch of a producer failed: it may start over where its retry begins.
        t.forget_from(9, 110);
        assert_eq!(t.check(9, 0, 0, 5), SeqCheck::Accept);
    }

    #[test]
    fn new_epoch_restarts_at_zero_and_snapshot_roundtrips() {
        let mut t = ProducerStateTable::default();
        t.record(1, 0, 0, 3, 0);
        assert_eq!(t.check(1, 1, 0, 1), SeqCheck::Accept);
        assert_eq!(
            t.check(1, 1, 5, 1),
            SeqCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let bytes = t.encode_snapshot(3);
        let (u, end) = ProducerStateTable::decode_snapshot(&bytes).unwrap();
        assert_eq!(end, 3);
        assert_eq!(u.check(1, 0, 0, 3), SeqCheck::Duplicate { base_offset: 0 });
    }

    #[test]
    fn a_marker_from_an_older_coordinator_is_fenced_and_the_epoch_survives_a_snapshot() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check_marker(3, 0, 0), Ok(()), "no state: any marker");
        t.record(3, 0, 0, 2, 0);
        t.record_marker(3, 0, 5);
        assert_eq!(
            t.check_marker(3, 0, 5),
            Ok(()),
            "the same coordinator again"
        );
        assert_eq!(t.check_marker(3, 0, 6), Ok(()), "a newer coordinator");
        assert_eq!(t.check_marker(3, 0, 4), Err(TRANSACTION_COORDINATOR_FENCED));
        assert_eq!(t.check_marker(3, -1, 9), Err(INVALID_PRODUCER_EPOCH));
        // An older coordinator's marker never lowers what was seen.
        t.record_marker(3, 0, 2);
        assert_eq!(t.check_marker(3, 0, 4), Err(TRANSACTION_COORDINATOR_FENCED));
        let (u, _) = ProducerStateTable::decode_snapshot(&t.encode_snapshot(3)).expect("decodes");
        assert_eq!(u.check_marker(3, 0, 4), Err(TRANSACTION_COORDINATOR_FENCED));
        assert_eq!(u.check_marker(3, 0, 5), Ok(()));
    }

    #[test]
    fn a_version_1_snapshot_is_still_read() {
        #[derive(Serialize)]
        struct V1 {
            version: u16,
            end_offset: i64,
            producers: Vec<(i64, (i16, VecDeque<BatchMeta>))>,
        }
        let batch = BatchMeta {
            first_seq: 0,
            last_seq: 2,
            base_offset: 10,
            last_offset: 12,
        };
        let old = V1 {
            version: 1,
            end_offset: 13,
            producers: vec![(8, (1, VecDeque::from(vec![batch])))],
        };
        let bytes = bincode::serialize(&old).expect("encodes");
        let (t, end) = ProducerStateTable::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(end, 13);
        assert_eq!(t.check(8, 1, 0, 3), SeqCheck::Duplicate { base_offset: 10 });
        assert_eq!(t.check_marker(8, 1, 0), Ok(()));
        assert!(
            ProducerStateTable::decode_snapshot(&[9, 0]).is_none(),
            "unknown version"
        );
        let mut lying = bytes.clone();
        lying[10..18].copy_from_slice(&u64::MAX.to_le_bytes()); // the producer count
        assert!(ProducerStateTable::decode_snapshot(&lying).is_none());
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(1, 0, i, 1, i64::from(i));
        }
        // batch 0 fell out of the window: it is no longer a duplicate, just out of order
        assert_eq!(
            t.check(1, 0, 0, 1),
            SeqCheck::Reject(OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(t.check(1, 0, 6, 1), SeqCheck::Duplicate { base_offset: 6 });
        t.truncate_to(5);
        assert_eq!(t.check(1, 0, 5, 1), SeqCheck::Accept);
    }
}
