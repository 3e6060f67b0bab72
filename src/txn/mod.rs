//! The transaction coordinator (KIP-98): transactional ids are spread over the partitions of
//! the internal topic `__transaction_state` as groups are over `__consumer_offsets` (id T
//! belongs to partition `abs(javaStringHash(T)) % partitions`), and T's coordinator is that
//! partition's leader; its requests run on the shard owning the partition, so there is no
//! lock.
//!
//! - `state`: a transactional id's state and the transitions of the transaction APIs, pure.
//! - `log`: the record format of `__transaction_state`.
//! - `partitions`: the coordinator's state, the partitions this shard leads and their ids.
//! - `coordinator`: the shell: loading a partition when this broker leads it, persisting each
//!   new state with acks=all before acting on it, resuming transactions left in a Prepare
//!   state by a previous coordinator, and aborting transactions past their timeout.
//! - `verify`: a partition leader's check, before a producer's first transactional batch,
//!   that the coordinator registered the partition in the producer's transaction (KIP-890).
//! - `markers`: writing the commit/abort markers to every partition of a transaction, on this
//!   broker through the partition's shard, on others with WriteTxnMarkers.
//!
//! The partitions' side (transactional batches, markers, the last stable offset, aborted
//! transactions, read_committed fetches) is in `crate::partition`.

pub mod coordinator;
pub mod log;
pub mod markers;
pub mod partitions;
pub mod state;
pub mod verify;

use crate::services::Services;
use std::rc::Rc;

pub const TXN_TOPIC: &str = "__transaction_state";

/// Longest transactional id accepted (ids are keys of `__transaction_state` records).
pub const MAX_TRANSACTIONAL_ID_LEN: usize = 4096;

/// The `__transaction_state` partition of `transactional_id` per this shard's image (or the
/// configured count while the topic does not exist yet), and the shard that owns it.
pub fn route(shard: &Services, transactional_id: &str) -> (i32, usize) {
    let n = shard
        .with_image(|i| i.topic(TXN_TOPIC).map(|t| t.partitions.len() as i32))
        .unwrap_or(shard.config.groups.txn_partitions);
    let p = crate::group::partition_for(transactional_id, n);
    (p, shard.owner_of(TXN_TOPIC, p))
}

/// Runs `f` on the shard that coordinates `id` and returns its error code as a request of
/// `api_version` answers it: before v2 of AddPartitionsToTxn, AddOffsetsToTxn and EndTxn,
/// clients do not know PRODUCER_FENCED and get INVALID_PRODUCER_EPOCH.
pub async fn on_coordinator<F, Fut>(shard: &Rc<Services>, id: &str, api_version: i16, f: F) -> i16
where
    F: FnOnce(Rc<Services>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = i16> + 'static,
{
    let (_, owner) = route(shard, id);
    let code = shard
        .run_on(owner, f)
        .await
        .unwrap_or(crate::kafka::errors::UNKNOWN_SERVER_ERROR);
    if code == crate::kafka::errors::PRODUCER_FENCED && api_version < 2 {
        crate::kafka::errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
