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
