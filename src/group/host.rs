//! The group coordinator's only door to the rest of the broker: the shard it runs on, the
//! metadata image, and the `__consumer_offsets` partitions (append with acks=all, replay).
//!
//! Everything else in `group` goes through these few functions, so a change to the shard,
//! the partition or the produce path touches this file only.

use super::coordinator::GroupCoordinator;
use super::OFFSETS_TOPIC;
use crate::kafka::errors;
use crate::kafka::handlers::produce::produce_local;
use crate::shard::images::get_or_open;
use crate::shard::TopicPartition;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;
use std::time::Duration;

pub use crate::shard::Shard;

/// This shard's group coordinator state.
pub fn coordinator(shard: &Shard) -> &GroupCoordinator {
    &shard.groups
}

pub fn node_id(shard: &Shard) -> i32 {
    shard.config.node_id
}

pub fn shutting_down(shard: &Shard) -> bool {
    shard.shutting_down.get()
}

/// The number of offsets partitions per this shard's image (None while the topic does not
/// exist yet).
pub fn offsets_partition_count(shard: &Shard) -> Option<i32> {
    shard.with_image(|i| i.topic(OFFSETS_TOPIC).map(|t| t.partitions.len() as i32))
}

/// The shard that owns offsets partition `index`.
pub fn offsets_partition_owner(shard: &Shard, index: i32) -> usize {
    shard.owner_of(OFFSETS_TOPIC, index)
}

/// (leader, leader epoch) of offsets partition `index`, if it exists.
pub fn offsets_partition_leader(shard: &Shard, index: i32) -> Option<(i32, i32)> {
    shard.with_image(|i| {
        i.partition(OFFSETS_TOPIC, index)
            .map(|p| (p.leader, p.leader_epoch))
    })
}

/// The offsets partitions this shard owns: (index, leader epoch if this broker leads it).
pub fn owned_offsets_partitions(shard: &Shard) -> Vec<(i32, Option<i32>)> {
    let me = node_id(shard);
    shard.with_image(|i| {
        i.topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(idx, _)| shard.owner_of(OFFSETS_TOPIC, *idx as i32) == shard.id)
                    .map(|(idx, p)| (idx as i32, (p.leader == me).then_some(p.leader_epoch)))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The Raft index of this shard's current metadata image.
pub fn image_index(shard: &Shard) -> u64 {
    shard.with_image(|i| i.applied_index)
}

/// Waits for an image newer than `seen`, at most `timeout`.
pub async fn wait_for_newer_image(shard: &Shard, seen: u64, timeout: Duration) {
    shard.wait_for_image(seen + 1, timeout).await;
}

/// Runs `f` on shard `target`.
pub async fn run_on<T, F, Fut>(shard: &Rc<Shard>, target: usize, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    shard.run_on(target, f).await
}

/// Appends `batch` to offsets partition `index` with acks=all; the produce error code.
pub async fn append(shard: &Rc<Shard>, index: i32, batch: BytesMut, timeout: Duration) -> i16 {
    let tp = TopicPartition::new(OFFSETS_TOPIC, index);
    produce_local(shard, tp, batch, -1, timeout).await.error
}

/// Reads offsets partition `index` from its log start to its end (this broker must lead it),
/// handing every keyed record to `visit`. Returns the number of records.
pub async fn replay(
    shard: &Rc<Shard>,
    index: i32,
    mut visit: impl FnMut(&Bytes, Option<&Bytes>),
) -> Result<u64, i16> {
    let tp = TopicPartition::new(OFFSETS_TOPIC, index);
    let p = get_or_open(shard, &tp)
        .await
        .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
    if !p.is_leader.get() {
        return Err(errors::NOT_COORDINATOR);
    }
    let end = p.log.log_end_offset();
    let mut offset = p.log.log_start_offset();
    let mut records = 0u64;
    while offset < end {
        let batches = match p.log.read(offset, 1 << 20, end).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(partition = index, "loading offsets: {e}");
                return Err(errors::COORDINATOR_LOAD_IN_PROGRESS);
            }
        };
        for b in &batches {
            let Ok(h) = chronik_storage::parse_header(b) else {
                offset = end;
                break;
            };
            offset = h.last_offset() + 1;
            for (k, v) in super::offsets_log::batch_records(b) {
                if let Some(k) = k {
                    visit(&k, v.as_ref());
                    records += 1;
                }
            }
        }
    }
    Ok(records)
}
