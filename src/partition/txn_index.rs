//! Transaction state of one partition, derived from its log alone (so leader and followers,
//! which append the same batches, hold the same state): the open transaction of each producer
//! (its first offset), the transactions whose marker is written but not yet below the high
//! watermark, and the aborted transactions (producer id, first offset, marker offset) that
//! read_committed fetches must be told about.
//!
//! The last stable offset (LSO) is the first offset a read_committed consumer may not read
//! yet: the smallest first offset of a transaction that is open or whose marker is not yet
//! replicated (as Kafka's `firstUnstableOffset`), capped by the high watermark.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// An aborted transaction as Fetch reports it, with the offset of its abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// A transaction whose marker is in the log but maybe not yet below the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Completing {
    first_offset: i64,
    marker_offset: i64,
}

/// Bound on the aborted transactions one fetch answer lists (a consumer asking from the start
/// of a log with millions of aborts gets the first ones; it asks again from further on).
const MAX_ABORTED_PER_FETCH: usize = 10_000;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TxnIndex {
    /// Producer id → first offset of its open transaction.
    ongoing: BTreeMap<i64, i64>,
    completing: Vec<Completing>,
    /// Ordered by marker offset (the order markers are appended in).
    aborted: VecDeque<AbortedTxn>,
    /// Offset of the newest marker (-1: none), so a truncation above it can be applied
    /// without a replay.
    last_marker_offset: i64,
}

/// The serialised form written to `txn-state.snapshot` (versioned).
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u16,
    /// The index reflects every batch below this offset.
    end_offset: i64,
    index: TxnIndex,
}

impl TxnIndex {
    pub fn new() -> TxnIndex {
        TxnIndex {
            last_marker_offset: -1,
            ..TxnIndex::default()
        }
    }

    /// A transactional data batch of `producer_id` was appended at `base_offset`: it opens
    /// the producer's transaction here unless one is open already.
    pub fn on_data(&mut self, producer_id: i64, base_offset: i64) {
        self.ongoing.entry(producer_id).or_insert(base_offset);
    }

    /// A marker of `producer_id` was appended at `marker_offset`. Returns the first offset of
    /// the transaction it ended (None: the producer had none open here, the marker ends
    /// nothing).
    pub fn on_marker(&mut self, producer_id: i64, commit: bool, marker_offset: i64) -> Option<i64> {
        self.last_marker_offset = self.last_marker_offset.max(marker_offset);
        let first_offset = self.ongoing.remove(&producer_id)?;
        self.completing.push(Completing {
            first_offset,
            marker_offset,
        });
        if !commit {
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: marker_offset,
            });
        }
        Some(first_offset)
    }

    /// Undoes `on_data` for a batch whose append failed (it opened the transaction at
    /// `base_offset`).
    pub fn forget_data(&mut self, producer_id: i64, base_offset: i64) {
        if self.ongoing.get(&producer_id) == Some(&base_offset) {
            self.ongoing.remove(&producer_id);
        }
    }

    /// Undoes `on_marker` for a marker whose append failed: the transaction is open again.
    pub fn forget_marker(&mut self, producer_id: i64, first_offset: i64, marker_offset: i64) {
        self.completing.retain(|c| c.marker_offset != marker_offset);
        if self
            .aborted
            .back()
            .is_some_and(|a| a.last_offset == marker_offset)
        {
            self.aborted.pop_back();
        }
        self.ongoing.insert(producer_id, first_offset);
    }

    /// The open transaction of `producer_id` here: its first offset.
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.ongoing.get(&producer_id).copied()
    }

    /// The LSO for high watermark `hw`; forgets completed transactions whose marker is below
    /// it (they no longer hold anything back).
    pub fn last_stable_offset(&mut self, hw: i64) -> i64 {
        self.completing.retain(|c| c.marker_offset >= hw);
        self.ongoing
            .values()
            .copied()
            .chain(self.completing.iter().map(|c| c.first_offset))
            .fold(hw, i64::min)
    }

    /// The aborted transactions a read of `[from, to)` must know about: those that end at or
    /// after `from` and start before `to`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        // Markers are in offset order: skip those that end before `from`.
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted
            .iter()
            .skip(start)
            .filter(|a| a.first_offset < to)
            .take(MAX_ABORTED_PER_FETCH)
            .copied()
            .collect()
    }

    /// Every aborted transaction the index lists, by marker offset.
    pub fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.iter()
    }

    /// Forgets the aborted transactions `gone` ((producer id, marker offset) each): the log
    /// cleaner removed all their data.
    pub fn forget_aborted(&mut self, gone: &[(i64, i64)]) {
        let gone: std::collections::HashSet<&(i64, i64)> = gone.iter().collect();
        self.aborted
            .retain(|a| !gone.contains(&(a.producer_id, a.last_offset)));
    }

    /// The log start moved to `log_start`: aborted transactions wholly before it are gone.
    pub fn trim_before(&mut self, log_start: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start)
        {
            self.aborted.pop_front();
        }
    }

    /// The log was truncated to `offset`. False when a marker at or past `offset` was cut,
    /// which reopens its transaction: the caller must then rebuild the index from the log.
    #[must_use]
    pub fn truncate_to(&mut self, offset: i64) -> bool {
        if self.last_marker_offset >= offset {
            return false;
        }
        self.ongoing.retain(|_, first| *first < offset);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.ongoing.is_empty() && self.completing.is_empty() && self.aborted.is_empty()
    }

    pub fn encode_snapshot(&self, end_offset: i64) -> Vec<u8> {
        let snap = Snapshot {
            version: 1,
            end_offset,
            index: self.clone(),
        };
        bincode::serialize(&snap).unwrap_or_default()
    }

    /// The index and the offset from which the log must be replayed.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<(TxnIndex, i64)> {
        let snap: Snapshot = bincode::deserialize(bytes).ok()?;
        (snap.version == 1).then_some((snap.index, snap.end_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lso_stops_at_the_first_open_transaction_and_never_passes_the_high_watermark() {
        let mut t = TxnIndex::new();
        assert_eq!(t.last_stable_offset(10), 10, "no transactions: the HW");
        t.on_data(7, 3);
        t.on_data(7, 5); // same transaction
        t.on_data(9, 4);
        assert_eq!(t.last_stable_offset(10), 3);
        assert_eq!(t.last_stable_offset(2), 2, "capped by the HW");
        assert_eq!(t.on_marker(7, true, 8), Some(3));
        assert_eq!(
            t.last_stable_offset(8),
            3,
            "the commit marker is not replicated yet"
        );
        assert_eq!(t.last_stable_offset(9), 4, "producer 9 still open");
        assert_eq!(t.on_marker(9, true, 9), Some(4));
        assert_eq!(t.last_stable_offset(10), 10);
    }

    #[test]
    fn aborted_transactions_are_listed_for_the_reads_they_overlap() {
        let mut t = TxnIndex::new();
        t.on_data(1, 0);
        t.on_data(2, 2);
        assert_eq!(t.on_marker(1, false, 5), Some(0));
        assert_eq!(t.on_marker(2, true, 6), Some(2));
        t.on_data(1, 7);
        t.on_marker(1, false, 9);
        let a = |first, last| AbortedTxn {
            producer_id: 1,
            first_offset: first,
            last_offset: last,
        };
        assert_eq!(t.aborted_between(0, 100), vec![a(0, 5), a(7, 9)]);
        assert_eq!(t.aborted_between(6, 100), vec![a(7, 9)]);
        assert_eq!(t.aborted_between(0, 7), vec![a(0, 5)]);
        assert_eq!(t.aborted_between(10, 100), vec![]);
        t.trim_before(6);
        assert_eq!(t.aborted_between(0, 100), vec![a(7, 9)]);
    }

    #[test]
    fn a_marker_without_an_open_transaction_ends_nothing() {
        let mut t = TxnIndex::new();
        assert_eq!(t.on_marker(4, false, 0), None);
        assert!(t.aborted_between(0, 10).is_empty());
        assert_eq!(t.last_stable_offset(1), 1);
    }

    #[test]
    fn a_failed_append_is_forgotten() {
        let mut t = TxnIndex::new();
        t.on_data(1, 0);
        t.forget_data(1, 0);
        assert_eq!(t.open_transaction(1), None);
        t.on_data(1, 3);
        let first = t.on_marker(1, false, 4).expect("open");
        t.forget_marker(1, first, 4);
        assert_eq!(t.open_transaction(1), Some(3));
        assert!(t.aborted_between(0, 10).is_empty());
        assert_eq!(t.last_stable_offset(10), 3);
    }

    #[test]
    fn truncation_below_a_marker_asks_for_a_rebuild() {
        let mut t = TxnIndex::new();
        t.on_data(1, 0);
        t.on_marker(1, true, 2);
        t.on_data(2, 3);
        t.on_data(3, 6);
        assert!(t.truncate_to(5), "no marker cut");
        assert_eq!(t.open_transaction(3), None, "its first batch was cut");
        assert_eq!(t.open_transaction(2), Some(3));
        assert!(!t.truncate_to(2), "the marker at 2 was cut");
    }

    #[test]
    fn the_snapshot_round_trips() {
        let mut t = TxnIndex::new();
        t.on_data(1, 0);
        t.on_data(2, 1);
        t.on_marker(2, false, 3);
        let (mut u, end) = TxnIndex::decode_snapshot(&t.encode_snapshot(4)).expect("decodes");
        assert_eq!(end, 4);
        assert_eq!(u.open_transaction(1), Some(0));
        assert_eq!(u.aborted_between(0, 10).len(), 1);
        assert_eq!(u.last_stable_offset(4), 0);
        assert!(TxnIndex::decode_snapshot(b"garbage").is_none());
    }
}
