//! The group coordinator: Kafka's classic consumer-group protocol and committed offsets.
//!
//! Groups are spread over the partitions of the internal topic `__consumer_offsets` (50 by
//! default) exactly as Kafka does: group G belongs to partition
//! `abs(javaStringHash(G)) % partitions`, and its coordinator is that partition's leader. On
//! this broker the group lives on the shard that owns the partition; every group request is
//! routed there with `Services::on_group_shard`, so there is no lock anywhere.
//!
//! - `state`: a group, its members and the join/sync waiters (in memory, per shard).
//! - `coordinator`: the protocol (join, sync, heartbeat, leave, commit, fetch, admin), loading a
//!   partition's groups when this broker becomes its leader, session expiry and offset expiry.
//! - `offsets_log`: the Kafka record format of `__consumer_offsets`.
//! - `config`: the coordinator's settings (flags, TOML keys, environment).
//!
//! Durability: commits and group metadata are appended to the offsets partition with acks=all
//! and answered only once the high watermark passed them. Load time is bounded by log
//! compaction: `__consumer_offsets` is `cleanup.policy=compact`, so the shard's log cleaner
//! keeps only the latest record of each key in its sealed segments (segments of
//! `offsets.topic.segment.bytes`), and a new leader replays about one record per live key plus
//! the active segment.

pub mod config;
pub mod coordinator;
pub mod offsets_log;
pub mod state;

pub use config::GroupConfig;
pub use coordinator::{committed_offsets, GroupCoordinator};

use crate::partition::manager::ReplicaManager;
use crate::shard::Shard;
use std::rc::Rc;

/// What the coordinator runs on, per shard: the shard's runtime, its replica manager (the
/// offsets partitions are read and appended through it) and the groups it coordinates.
pub struct GroupShard {
    pub shard: Rc<Shard>,
    pub replicas: Rc<ReplicaManager>,
    pub groups: GroupCoordinator,
}

/// The coordinator reads the runtime's image, settings and identity as its own.
impl std::ops::Deref for GroupShard {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` (over UTF-16 code units), as Kafka uses for group placement.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

/// Kafka's `Utils.abs(groupId.hashCode) % partitions`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The offsets partition of `group` per this shard's image (or the configured count while
/// the topic does not exist yet), and the shard that owns it.
pub fn route(shard: &GroupShard, group: &str) -> (i32, usize) {
    let n = shard
        .with_image(|i| i.topic(OFFSETS_TOPIC).map(|t| t.partitions.len() as i32))
        .unwrap_or(shard.groups.config.offsets_partitions);
    let p = partition_for(group, n);
    (p, shard.owner_of(OFFSETS_TOPIC, p))
}

/// The per-shard background work: session expiry, eager loading of the offsets partitions this
/// broker leads, offset expiry and compaction.
pub async fn run(shard: Rc<GroupShard>) {
    coordinator::run_background(shard).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_java() {
        // Values computed with java.lang.String#hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(java_string_hash("my-group"), -1906497762);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn placement_is_in_range_and_handles_min_hash() {
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        for g in ["a", "group-1", "консьюмер", "😀"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p));
        }
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
    }
}
