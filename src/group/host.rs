//! The group coordinator's only door to the rest of the broker: the shard it runs on, the
//! metadata image, and the `__consumer_offsets` partitions (append with acks=all, replay).
//!
//! Everything else in `group` goes through these few functions, so a change to the shard,
//! the partition or the produce path touches this file only.

use super::partitions::{GroupCoordinator, PendingTxnRecords};
use super::OFFSETS_TOPIC;
use crate::shard::TopicPartition;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;
use std::time::Duration;

use crate::partition::manager::ReplicaManager;

/// The coordinator's name for what it runs on.
pub type Shard = GroupShard;

/// What the coordinator runs on, per shard: the shard's runtime, its replica manager (the
/// offsets partitions are read and appended through it) and the groups it coordinates.
pub struct GroupShard {
    pub shard: Rc<crate::shard::Shard>,
    pub replicas: Rc<ReplicaManager>,
    pub groups: GroupCoordinator,
}

/// The coordinator reads the runtime's image, settings and identity as its own.
impl std::ops::Deref for GroupShard {
    type Target = crate::shard::Shard;
    fn deref(&self) -> &crate::shard::Shard {
        &self.shard
    }
}

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

/// Appends `batch` to offsets partition `index` with acks=all; the produce error code.
pub async fn append(shard: &Rc<Shard>, index: i32, batch: BytesMut, timeout: Duration) -> i16 {
    let tp = TopicPartition::new(OFFSETS_TOPIC, index);
    shard
        .replicas
        .append_internal(tp, batch, -1, timeout)
        .await
        .error
}

/// Reads offsets partition `index` from its log start to its end (this broker must lead it),
/// handing every keyed record to `visit`. Returns the number of records. Records of a
/// transaction (TxnOffsetCommit) are handed over only once its commit marker is met, dropped at
/// its abort marker, and left in `pending` when the log ends before either.
pub async fn replay(
    shard: &Rc<Shard>,
    index: i32,
    pending: &mut PendingTxnRecords,
    mut visit: impl FnMut(&Bytes, Option<&Bytes>),
) -> Result<u64, i16> {
    let tp = TopicPartition::new(OFFSETS_TOPIC, index);
    let mut records = 0u64;
    crate::partition::replay::replay_led_partition(&shard.replicas, &tp, |h, batch| {
        if h.is_control() {
            let commit = chronik_storage::parse_marker(&batch, h).map(|m| m.commit);
            if let (Some(commit), Some(held)) = (commit, pending.remove(&h.producer_id)) {
                if commit {
                    for (k, v) in &held {
                        visit(k, v.as_ref());
                        records += 1;
                    }
                }
            }
            return;
        }
        for (k, v) in super::offsets_log::batch_records(&batch) {
            let Some(k) = k else { continue };
            if h.is_transactional() {
                pending.entry(h.producer_id).or_default().push((k, v));
            } else {
                visit(&k, v.as_ref());
                records += 1;
            }
        }
    })
    .await?;
    Ok(records)
}
