//! TxnOffsetCommit (KIP-98, KIP-447): offsets committed inside a transaction are written to
//! the offsets partition as a transactional batch of the producer, held pending, and applied
//! to the group only when the transaction's commit marker reaches the partition (dropped at
//! an abort marker). A coordinator reloading the partition does the same from the log
//! (`host::replay`).

use super::append::map_write_error;
use super::host::{self, Shard};
use super::offsets::{
    check_member, commit_records, every_partition, fail_accepted, CommitPartition, CommitRecords,
};
use super::offsets_log;
use super::offsets_partition::acquire;
use super::partitions::apply_record;
use super::state::now_ms;
use crate::kafka::errors;
use std::rc::Rc;
use std::time::Duration;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TxnCommitParams {
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// v3+ (KIP-447): the member's generation and id, checked when the group is managed.
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// Per topic, per partition error codes in request order.
pub async fn txn_commit(shard: Rc<Shard>, req: TxnCommitParams) -> Vec<(String, Vec<(i32, i16)>)> {
    if req.producer_id < 0 || req.producer_epoch < 0 {
        return every_partition(&req.topics, errors::INVALID_PRODUCER_ID_MAPPING);
    }
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return every_partition(&req.topics, c),
    };
    if let Some(g) = part.group(&req.group_id) {
        if req.generation >= 0 {
            if let Err(c) = check_member(&g, req.generation, &req.member_id, &req.instance_id) {
                return every_partition(&req.topics, c);
            }
        }
    }
    let max_meta = host::coordinator(&shard).config.max_metadata_bytes;
    let now = now_ms();
    let CommitRecords {
        records,
        mut result,
        ..
    } = commit_records(&req.group_id, &req.topics, max_meta, now);
    if records.is_empty() {
        return result;
    }
    // The producer's transactional batch, without a sequence (a coordinator's write).
    let mut batch = offsets_log::build_batch(&records, now);
    batch[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    chronik_storage::testing::set_producer(&mut batch, req.producer_id, req.producer_epoch, -1);
    let code = map_write_error(host::append(&shard, part.index, batch, WRITE_TIMEOUT).await);
    if code == errors::NONE {
        part.txn_pending
            .borrow_mut()
            .entry(req.producer_id)
            .or_default()
            .extend(records);
    } else {
        fail_accepted(&mut result, code);
    }
    result
}

/// A transaction marker of `producer_id` was written to offsets partition `index`: its pending
/// offsets are applied (commit) or dropped (abort). A partition this shard has not loaded
/// finds the same from the log when it loads.
pub fn complete_txn_offsets(shard: &Shard, index: i32, producer_id: i64, commit: bool) {
    let part = host::coordinator(shard).parts.borrow().get(&index).cloned();
    let Some(part) = part else { return };
    let held = part.txn_pending.borrow_mut().remove(&producer_id);
    if let (true, Some(held)) = (commit, held) {
        for (k, v) in &held {
            apply_record(&part, k, v.as_ref());
        }
    }
}
