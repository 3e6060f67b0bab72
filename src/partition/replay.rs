//! Reading a whole partition this node leads, from its log start to its end: how the group and
//! transaction coordinators load their internal topic (`__consumer_offsets`,
//! `__transaction_state`) when they become its leader.

use super::manager::ReplicaManager;
use crate::kafka::errors;
use crate::shard::TopicPartition;
use bytes::Bytes;
use chronik_storage::BatchHeader;
use std::rc::Rc;

/// Reads at most this much per log read.
const READ_BYTES: usize = 1 << 20;

/// Calls `visit` with each batch of `tp` in offset order (its header and bytes). Errors are
/// what a coordinator answers: COORDINATOR_NOT_AVAILABLE (the log cannot be opened),
/// NOT_COORDINATOR (this node no longer leads it), COORDINATOR_LOAD_IN_PROGRESS (a read
/// failed; the client retries).
pub async fn replay_led_partition(
    replicas: &Rc<ReplicaManager>,
    tp: &TopicPartition,
    mut visit: impl FnMut(&BatchHeader, Bytes),
) -> Result<(), i16> {
    let p = replicas
        .get_or_open(tp)
        .await
        .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
    if !p.is_leader() {
        return Err(errors::NOT_COORDINATOR);
    }
    let end = p.log.log_end_offset();
    let mut offset = p.log.log_start_offset();
    while offset < end {
        let before = offset;
        let batches = match p.log.read(offset, READ_BYTES, end).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, "loading: {e}");
                return Err(errors::COORDINATOR_LOAD_IN_PROGRESS);
            }
        };
        for b in &batches {
            let mut rest = b.clone();
            while let Ok(h) = chronik_storage::parse_header(&rest) {
                let batch = rest.split_to(h.total_len().min(rest.len()));
                offset = offset.max(h.last_offset() + 1);
                visit(&h, batch);
            }
        }
        // A read that did not move (nothing parsable) ends the replay instead of spinning.
        if offset == before {
            break;
        }
    }
    Ok(())
}

/// The loaded copies a coordinator keeps of the internal partitions it leads, by index.
pub type LoadedParts<P> = std::cell::RefCell<std::collections::HashMap<i32, Rc<P>>>;

/// A coordinator of an internal topic (groups, transactions): the copies it loaded of the
/// partitions it leads, and how it lets one go.
pub trait LoadingCoordinator {
    type Part: LedAtEpoch;
    fn parts(&self) -> &LoadedParts<Self::Part>;
    fn unload_part(&self, index: i32);
}

/// A loaded copy of an internal partition: the leader epoch it was loaded at.
pub trait LedAtEpoch {
    fn leader_epoch(&self) -> i32;
}

/// What `coord` already holds of internal partition `index`, which `leader` leads at `epoch`:
/// Some for a copy loaded (or loading) at that epoch, None when it must load one (a copy of an
/// older epoch is unloaded first). When this node (`me`) does not lead it, what it held goes
/// and the error is COORDINATOR_NOT_AVAILABLE without a leader, NOT_COORDINATOR with another.
pub fn held_at_epoch<C: LoadingCoordinator>(
    coord: &C,
    index: i32,
    (leader, epoch): (i32, i32),
    me: i32,
) -> Result<Option<Rc<C::Part>>, i16> {
    if leader != me {
        coord.unload_part(index);
        return Err(if leader < 0 {
            errors::COORDINATOR_NOT_AVAILABLE
        } else {
            errors::NOT_COORDINATOR
        });
    }
    let existing = coord.parts().borrow().get(&index).cloned();
    match existing {
        Some(p) if p.leader_epoch() == epoch => Ok(Some(p)),
        Some(_) => {
            coord.unload_part(index);
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Unloads every copy `coord` holds whose (index, leader epoch) is not `still_led` here.
pub fn unload_not_led<C: LoadingCoordinator>(coord: &C, still_led: impl Fn(i32, i32) -> bool) {
    let current: Vec<(i32, i32)> = coord
        .parts()
        .borrow()
        .iter()
        .map(|(i, p)| (*i, p.leader_epoch()))
        .collect();
    for (idx, epoch) in current {
        if !still_led(idx, epoch) {
            coord.unload_part(idx);
        }
    }
}

/// Forgets `part` after its load failed, unless a newer copy has taken its place meanwhile.
pub fn forget_failed_load<P>(parts: &LoadedParts<P>, index: i32, part: &Rc<P>) {
    let mut parts = parts.borrow_mut();
    if parts.get(&index).is_some_and(|p| Rc::ptr_eq(p, part)) {
        parts.remove(&index);
    }
}
