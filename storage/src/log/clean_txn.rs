//! What the log cleaner does with transactional data and transaction markers, as Kafka's
//! cleaner does it (`CleanedTransactionMetadata`, `LogCleaner.checkBatchRetention`):
//!
//! - A transactional batch inside an aborted transaction (the partition's aborted-transaction
//!   index lists it: producer id, first offset, marker offset) is removed whole, and its
//!   records never enter the key → offset map. Any other transactional batch below the last
//!   stable offset belongs to a committed transaction and is compacted like any batch.
//! - A marker (commit or abort control batch) goes once no batch of its transaction is left
//!   below it: not in the round that removes the transaction's last data (that round sees
//!   it), but in a later one, and only when its timestamp is older than `delete.retention.ms`
//!   (so a consumer that read the data has time to read the marker too). An abort marker also
//!   stays while the partition's index still lists its transaction: the index must forget it
//!   first (the round reports the aborted transactions it left without data), or a
//!   read_committed consumer told of the transaction would wait for a marker that is gone.
//! - What the producer state needs after a restart stays: the producer's last data batch
//!   (as a header without records if its records go, Kafka's RETAIN_EMPTY), and a marker that
//!   is the producer's last entry at its current epoch (it carries the epoch that fences).

use std::collections::{HashMap, HashSet};

use crate::batch::BatchHeader;
use crate::control::parse_marker;
use crate::records::RecordRef;

/// An aborted transaction as the partition's index lists it: `producer_id`'s batches in
/// `[first_offset, marker_offset)` were aborted by the marker at `marker_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbortedRange {
    pub producer_id: i64,
    pub first_offset: i64,
    pub marker_offset: i64,
}

/// What the partition's producer state holds of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerTail {
    pub epoch: i16,
    /// Last offset of its newest data batch (None: its newest entry is a marker).
    pub last_data_offset: Option<i64>,
}

/// The partition's transaction state a cleaning round needs (empty: no transactions).
#[derive(Debug, Clone, Default)]
pub struct TxnContext {
    /// The aborted transactions of the log, as the partition's index lists them.
    pub aborted: Vec<AbortedRange>,
    /// Producer id → its tail, for the batches kept so producer state survives recovery.
    pub producers: HashMap<i64, ProducerTail>,
}

/// What happens to one batch in a segment's rewrite; decided once, in the first pass over the
/// segment (the pass that also moves the round's transaction state), and applied in the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Written as it is.
    Keep,
    /// Gone with all its records.
    Drop,
    /// Its header alone, without records.
    Empty,
    /// Its records that the key map keeps (`Filter.last_of_producer`: keep the batch's last
    /// offset and sequence with an empty batch if its last record goes).
    Filter { last_of_producer: bool },
}

/// The transaction state of one cleaning round, carried from batch to batch in offset order.
pub(super) struct TxnRound<'a> {
    /// Producer id → its aborted transactions, by first offset.
    aborted: HashMap<i64, Vec<AbortedRange>>,
    producers: &'a HashMap<i64, ProducerTail>,
    /// Markers older than this may go.
    marker_horizon: i64,
    /// Producers with a batch of a committed (not aborted) transaction seen since their last
    /// marker.
    committed_seen: HashSet<i64>,
    /// Aborted transactions with a batch seen in this round (removed or not).
    aborted_seen: HashSet<AbortedRange>,
    /// Aborted transactions with a batch still in the log after this round.
    aborted_kept: HashSet<AbortedRange>,
    /// Aborted transactions whose marker this round saw.
    markers_seen: Vec<AbortedRange>,
}

impl<'a> TxnRound<'a> {
    pub fn new(ctx: &'a TxnContext, marker_horizon: i64) -> TxnRound<'a> {
        let mut aborted: HashMap<i64, Vec<AbortedRange>> = HashMap::new();
        for a in &ctx.aborted {
            aborted.entry(a.producer_id).or_default().push(*a);
        }
        for v in aborted.values_mut() {
            v.sort_by_key(|a| a.first_offset);
        }
        TxnRound {
            aborted,
            producers: &ctx.producers,
            marker_horizon,
            committed_seen: HashSet::new(),
            aborted_seen: HashSet::new(),
            aborted_kept: HashSet::new(),
            markers_seen: Vec::new(),
        }
    }

    /// The aborted transaction the data batch `h` belongs to, if any.
    pub fn aborted_txn(&self, h: &BatchHeader) -> Option<AbortedRange> {
        if !h.is_transactional() || h.is_control() {
            return None;
        }
        let ranges = self.aborted.get(&h.producer_id)?;
        let at = ranges.partition_point(|a| a.first_offset <= h.base_offset);
        let a = ranges.get(at.checked_sub(1)?)?;
        (h.base_offset < a.marker_offset).then_some(*a)
    }

    fn listed(&self, producer_id: i64, marker_offset: i64) -> Option<AbortedRange> {
        self.aborted
            .get(&producer_id)?
            .iter()
            .find(|a| a.marker_offset == marker_offset)
            .copied()
    }

    /// Whether `h` is the producer's newest data batch.
    fn last_of_producer(&self, h: &BatchHeader) -> bool {
        h.producer_id >= 0
            && self
                .producers
                .get(&h.producer_id)
                .and_then(|t| t.last_data_offset)
                == Some(h.last_offset())
    }

    /// Whether the marker `h` is the producer's newest entry at its current epoch.
    fn fencing_marker(&self, h: &BatchHeader) -> bool {
        self.producers.get(&h.producer_id).is_some_and(|t| {
            t.epoch == h.producer_epoch && t.last_data_offset.is_none_or(|d| d < h.base_offset)
        })
    }

    /// Decides the batch `h` (`bytes`; `records`: its records if the cleaner can read them;
    /// `keep`: whether the key map keeps a record; `pinned`: an offset that must stay) and
    /// returns the plan with the number of records it removes.
    pub fn plan(
        &mut self,
        bytes: &[u8],
        h: &BatchHeader,
        records: Option<&[RecordRef<'_>]>,
        keep: impl Fn(&RecordRef<'_>) -> bool,
        pinned: i64,
    ) -> (Plan, u64) {
        let holds_pinned = h.base_offset <= pinned && pinned <= h.last_offset();
        if h.is_control() {
            return (self.plan_marker(bytes, h, holds_pinned), 0);
        }
        if let Some(a) = self.aborted_txn(h) {
            self.aborted_seen.insert(a);
            let removed = h.records_count.max(0) as u64;
            if self.last_of_producer(h) || holds_pinned {
                self.aborted_kept.insert(a);
                return (Plan::Empty, removed);
            }
            return (Plan::Drop, removed);
        }
        if h.is_transactional() {
            self.committed_seen.insert(h.producer_id);
        }
        let Some(records) = records else {
            return (Plan::Keep, 0);
        };
        let removed = records.iter().filter(|r| !keep(r)).count() as u64;
        if removed == 0 {
            return (Plan::Keep, 0);
        }
        let last_of_producer = self.last_of_producer(h);
        (Plan::Filter { last_of_producer }, removed)
    }

    fn plan_marker(&mut self, bytes: &[u8], h: &BatchHeader, holds_pinned: bool) -> Plan {
        let Some(marker) = parse_marker(bytes, h) else {
            return Plan::Keep; // not a transaction marker
        };
        let mut data_seen = self.committed_seen.remove(&h.producer_id);
        let mut listed = false;
        if !marker.commit {
            if let Some(a) = self.listed(h.producer_id, h.base_offset) {
                listed = true;
                data_seen |= self.aborted_seen.contains(&a);
                self.markers_seen.push(a);
            }
        }
        let removable = !data_seen
            && !listed
            && !holds_pinned
            && h.max_timestamp < self.marker_horizon
            && !self.fencing_marker(h);
        if removable {
            Plan::Drop
        } else {
            Plan::Keep
        }
    }

    /// The listed aborted transactions that no batch is left of after this round (their
    /// marker was seen): the partition's index may forget them.
    pub fn aborted_without_data(&self) -> Vec<AbortedRange> {
        self.markers_seen
            .iter()
            .filter(|a| !self.aborted_kept.contains(a))
            .copied()
            .collect()
    }
}
