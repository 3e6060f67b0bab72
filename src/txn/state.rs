//! A transactional id's state at its coordinator and the transitions the transaction APIs make
//! on it, as pure functions: each returns the new state to persist (and what to do next) or
//! the Kafka error code the request is refused with. Illegal transitions are refused here, so
//! the shell (`coordinator`) only persists and acts.
//!
//! Empty → Ongoing (AddPartitionsToTxn / AddOffsetsToTxn) → PrepareCommit | PrepareAbort
//! (EndTxn; markers are written once this is persisted) → CompleteCommit | CompleteAbort
//! (all markers written) → Ongoing again with the next transaction.

use crate::kafka::errors;
use std::collections::BTreeSet;

/// Kafka's `TransactionState` ids, as `__transaction_state` stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    pub fn from_i8(v: i8) -> Option<TxnState> {
        Some(match v {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names (DescribeTransactions / ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the transaction is neither open nor done.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

pub type TopicPartitionName = (String, i32);

/// One transactional id at its coordinator (what a `__transaction_state` record holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartitionName>,
    pub start_ms: i64,
    pub update_ms: i64,
}

/// What InitProducerId decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// Persist this state and answer with its producer id and epoch.
    Ready(TxnMeta),
    /// A transaction is open: abort it first with this state (PrepareAbort under a bumped
    /// epoch, which fences the old producer), then init again.
    AbortFirst(TxnMeta),
}

/// The epoch after `e`, or None when it would overflow (a new producer id is then needed).
fn next_epoch(e: i16) -> Option<i16> {
    (e < i16::MAX - 1).then_some(e + 1)
}

/// InitProducerId for a transactional id: `current` is its state (None: unknown),
/// `fresh_pid` a newly allocated producer id for when one is needed.
pub fn init_producer(
    current: Option<&TxnMeta>,
    timeout_ms: i32,
    max_timeout_ms: i32,
    fresh_pid: i64,
    now_ms: i64,
) -> Result<InitPlan, i16> {
    if timeout_ms <= 0 || timeout_ms > max_timeout_ms {
        return Err(errors::INVALID_TRANSACTION_TIMEOUT);
    }
    let Some(m) = current else {
        return Ok(InitPlan::Ready(TxnMeta {
            producer_id: fresh_pid,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            update_ms: now_ms,
        }));
    };
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
            Err(errors::CONCURRENT_TRANSACTIONS)
        }
        TxnState::Ongoing => {
            let (pid, epoch) = match next_epoch(m.producer_epoch) {
                Some(e) => (m.producer_id, e),
                // Kafka aborts at the last epoch and moves to a new id on the next init.
                None => (m.producer_id, m.producer_epoch),
            };
            Ok(InitPlan::AbortFirst(TxnMeta {
                producer_id: pid,
                producer_epoch: epoch,
                state: TxnState::PrepareAbort,
                update_ms: now_ms,
                ..m.clone()
            }))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Dead => {
            let (pid, epoch) = match next_epoch(m.producer_epoch) {
                Some(e) => (m.producer_id, e),
                None => (fresh_pid, 0),
            };
            Ok(InitPlan::Ready(TxnMeta {
                producer_id: pid,
                producer_epoch: epoch,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                update_ms: now_ms,
            }))
        }
    }
}

/// The checks every request of a running producer passes: its id and epoch are current.
pub fn check_producer(m: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), i16> {
    if m.producer_id != producer_id {
        return Err(errors::INVALID_PRODUCER_ID_MAPPING);
    }
    if epoch < m.producer_epoch {
        return Err(errors::PRODUCER_FENCED);
    }
    if epoch > m.producer_epoch {
        return Err(errors::INVALID_PRODUCER_EPOCH);
    }
    Ok(())
}

/// AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the transaction, which opens if
/// it was not. Ok(None): nothing new to persist (all already in an open transaction).
pub fn add_partitions(
    current: Option<&TxnMeta>,
    producer_id: i64,
    epoch: i16,
    parts: &[TopicPartitionName],
    now_ms: i64,
) -> Result<Option<TxnMeta>, i16> {
    let m = current.ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
    check_producer(m, producer_id, epoch)?;
    match m.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
            return Err(errors::CONCURRENT_TRANSACTIONS)
        }
        TxnState::Dead => return Err(errors::INVALID_TXN_STATE),
        _ => {}
    }
    if m.state == TxnState::Ongoing && parts.iter().all(|p| m.partitions.contains(p)) {
        return Ok(None);
    }
    let mut next = m.clone();
    if m.state != TxnState::Ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
    }
    next.state = TxnState::Ongoing;
    next.partitions.extend(parts.iter().cloned());
    next.update_ms = now_ms;
    Ok(Some(next))
}

/// What EndTxn decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndPlan {
    /// Persist this Prepare state, then write the markers.
    Prepare(TxnMeta),
    /// A retry of an EndTxn already done: answer success.
    AlreadyDone,
}

/// EndTxn: an open transaction moves to PrepareCommit or PrepareAbort.
pub fn end_txn(
    current: Option<&TxnMeta>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndPlan, i16> {
    let m = current.ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
    check_producer(m, producer_id, epoch)?;
    let done = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    let preparing = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    match m.state {
        TxnState::Ongoing => Ok(EndPlan::Prepare(TxnMeta {
            state: preparing,
            update_ms: now_ms,
            ..m.clone()
        })),
        s if s == done => Ok(EndPlan::AlreadyDone),
        s if s == preparing => Err(errors::CONCURRENT_TRANSACTIONS),
        // Ending a transaction that never started, or the other way than it is ending.
        _ => Err(errors::INVALID_TXN_STATE),
    }
}

/// Every marker of a Prepare state is written: the transaction is complete and holds no
/// partitions any more. None for any other state (nothing to complete).
pub fn complete(m: &TxnMeta, now_ms: i64) -> Option<TxnMeta> {
    let state = match m.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        _ => return None,
    };
    Some(TxnMeta {
        state,
        partitions: BTreeSet::new(),
        update_ms: now_ms,
        ..m.clone()
    })
}

/// An open transaction past its timeout (the coordinator aborts it).
pub fn is_expired(m: &TxnMeta, now_ms: i64) -> bool {
    m.state == TxnState::Ongoing && now_ms.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: i32 = 900_000;

    fn ready(p: Result<InitPlan, i16>) -> TxnMeta {
        match p {
            Ok(InitPlan::Ready(m)) => m,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    fn tp(t: &str, p: i32) -> TopicPartitionName {
        (t.to_string(), p)
    }

    #[test]
    fn a_new_id_starts_empty_at_epoch_zero_and_each_init_bumps_the_epoch() {
        let m = ready(init_producer(None, 60_000, MAX, 100, 1));
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (100, 0, TxnState::Empty)
        );
        let m2 = ready(init_producer(Some(&m), 60_000, MAX, 200, 2));
        assert_eq!((m2.producer_id, m2.producer_epoch), (100, 1));
        // At the last epoch a new producer id is taken.
        let worn = TxnMeta {
            producer_epoch: i16::MAX - 1,
            ..m2
        };
        let m3 = ready(init_producer(Some(&worn), 60_000, MAX, 200, 3));
        assert_eq!((m3.producer_id, m3.producer_epoch), (200, 0));
    }

    #[test]
    fn a_timeout_beyond_the_maximum_is_refused() {
        assert_eq!(
            init_producer(None, MAX + 1, MAX, 1, 0),
            Err(errors::INVALID_TRANSACTION_TIMEOUT)
        );
        assert_eq!(
            init_producer(None, 0, MAX, 1, 0),
            Err(errors::INVALID_TRANSACTION_TIMEOUT)
        );
    }

    #[test]
    fn a_full_transaction_goes_ongoing_prepare_complete() {
        let m = ready(init_producer(None, 60_000, MAX, 7, 0));
        let m = add_partitions(Some(&m), 7, 0, &[tp("a", 0)], 10)
            .expect("add")
            .expect("changed");
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 10));
        assert_eq!(
            add_partitions(Some(&m), 7, 0, &[tp("a", 0)], 11),
            Ok(None),
            "already in"
        );
        let m = add_partitions(Some(&m), 7, 0, &[tp("b", 1)], 12)
            .expect("add")
            .expect("changed");
        assert_eq!(m.partitions.len(), 2);
        assert_eq!(
            m.start_ms, 10,
            "the transaction started at its first partition"
        );
        let EndPlan::Prepare(p) = end_txn(Some(&m), 7, 0, true, 20).expect("end") else {
            panic!("expected Prepare");
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(
            add_partitions(Some(&p), 7, 0, &[tp("c", 0)], 21),
            Err(errors::CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            end_txn(Some(&p), 7, 0, true, 21),
            Err(errors::CONCURRENT_TRANSACTIONS)
        );
        let c = complete(&p, 30).expect("completes");
        assert_eq!(c.state, TxnState::CompleteCommit);
        assert!(c.partitions.is_empty());
        assert_eq!(end_txn(Some(&c), 7, 0, true, 31), Ok(EndPlan::AlreadyDone));
        assert_eq!(
            end_txn(Some(&c), 7, 0, false, 31),
            Err(errors::INVALID_TXN_STATE)
        );
        // The next transaction starts afresh.
        let n = add_partitions(Some(&c), 7, 0, &[tp("z", 0)], 40)
            .expect("add")
            .expect("changed");
        assert_eq!(n.partitions.len(), 1);
        assert_eq!(n.start_ms, 40);
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let m = ready(init_producer(None, 60_000, MAX, 7, 0));
        assert_eq!(
            end_txn(Some(&m), 7, 0, true, 1),
            Err(errors::INVALID_TXN_STATE),
            "nothing to end"
        );
        assert_eq!(
            end_txn(None, 7, 0, true, 1),
            Err(errors::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(complete(&m, 1), None);
        let open = add_partitions(Some(&m), 7, 0, &[tp("a", 0)], 1)
            .expect("add")
            .expect("changed");
        assert_eq!(complete(&open, 1), None, "only a Prepare state completes");
    }

    #[test]
    fn old_epochs_are_fenced_and_unknown_producer_ids_refused() {
        let m = ready(init_producer(None, 60_000, MAX, 7, 0));
        let m = ready(init_producer(Some(&m), 60_000, MAX, 8, 0));
        assert_eq!(m.producer_epoch, 1);
        assert_eq!(
            add_partitions(Some(&m), 7, 0, &[tp("a", 0)], 1),
            Err(errors::PRODUCER_FENCED)
        );
        assert_eq!(
            add_partitions(Some(&m), 7, 2, &[tp("a", 0)], 1),
            Err(errors::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            add_partitions(Some(&m), 99, 1, &[tp("a", 0)], 1),
            Err(errors::INVALID_PRODUCER_ID_MAPPING)
        );
        assert_eq!(
            end_txn(Some(&m), 7, 0, false, 1),
            Err(errors::PRODUCER_FENCED)
        );
    }

    #[test]
    fn init_during_an_open_transaction_aborts_it_under_a_bumped_epoch() {
        let m = ready(init_producer(None, 60_000, MAX, 7, 0));
        let open = add_partitions(Some(&m), 7, 0, &[tp("a", 0)], 1)
            .expect("add")
            .expect("changed");
        let Ok(InitPlan::AbortFirst(a)) = init_producer(Some(&open), 60_000, MAX, 8, 2) else {
            panic!("expected AbortFirst");
        };
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 1));
        assert_eq!(
            a.partitions, open.partitions,
            "markers go where the data went"
        );
        assert_eq!(
            init_producer(Some(&a), 60_000, MAX, 8, 3),
            Err(errors::CONCURRENT_TRANSACTIONS)
        );
        let done = complete(&a, 4).expect("complete");
        let again = ready(init_producer(Some(&done), 60_000, MAX, 8, 5));
        assert_eq!((again.producer_id, again.producer_epoch), (7, 2));
    }

    #[test]
    fn only_an_open_transaction_past_its_timeout_expires() {
        let m = ready(init_producer(None, 1_000, MAX, 7, 0));
        assert!(!is_expired(&m, 10_000));
        let open = add_partitions(Some(&m), 7, 0, &[tp("a", 0)], 100)
            .expect("add")
            .expect("changed");
        assert!(!is_expired(&open, 1_100));
        assert!(is_expired(&open, 1_101));
    }
}
