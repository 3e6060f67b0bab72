//! The group coordinator: Kafka's classic consumer-group protocol and committed offsets.
//!
//! Groups are spread over the partitions of the internal topic `__consumer_offsets` (50 by
//! default) exactly as Kafka does: group G belongs to partition
//! `abs(javaStringHash(G)) % partitions`, and its coordinator is that partition's leader. On
//! this broker the group lives on the shard that owns the partition; every group request is
//! routed there with `Services::on_group_shard`, so there is no lock anywhere.
//!
//! The protocol's decisions are pure functions (`machine`, over the data in `state`) of the
//! group, the request and an injected clock and member-id source; the shell around them does
//! the I/O: parking and answering requests, timers, writing the offsets partition.
//!
//! - `state`: a group and its members (in memory, per shard).
//! - `machine`: the classic protocol's transitions (join, sync, heartbeat, leave, session and
//!   rebalance expiry, commit checks), pure and unit-tested.
//! - `rebalance`: the shell of JoinGroup, SyncGroup, Heartbeat and LeaveGroup.
//! - `offsets`: OffsetCommit and OffsetFetch.
//! - `admin`: ListGroups, DescribeGroups, DeleteGroups, OffsetDelete, the lag metric's view.
//! - `offsets_partition`: the offsets partitions this shard leads, their groups, loading and
//!   appending.
//! - `background`: eager loading on leadership change, session timers, offset expiry.
//! - `host`: the only module that touches the shard, the image and partitions.
//! - `coordinator`: the entry points the handlers call.
//! - `offsets_log`: the Kafka record format of `__consumer_offsets`.
//! - settings: `crate::config::GroupConfig` (flags, TOML keys, environment).
//!
//! Durability: commits and group metadata are appended to the offsets partition with acks=all
//! and answered only once the high watermark passed them. Load time is bounded by log
//! compaction: `__consumer_offsets` is `cleanup.policy=compact`, so the shard's log cleaner
//! keeps only the latest record of each key in its sealed segments (segments of
//! `offsets.topic.segment.bytes`), and a new leader replays about one record per live key plus
//! the active segment.

pub mod admin;
pub mod append;
pub mod background;
pub mod coordinator;
pub mod effects;
pub mod host;
pub mod machine;
pub mod offsets;
pub mod offsets_log;
pub mod offsets_partition;
pub mod partitions;
pub mod rebalance;
pub mod state;
pub mod txn_offsets;

// The settings are declared with every other one in `crate::config`.
pub use crate::config::GroupConfig;
pub use coordinator::{committed_offsets, GroupCoordinator};

pub use host::GroupShard;
use host::Shard;
use std::rc::Rc;

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
pub fn route(shard: &Shard, group: &str) -> (i32, usize) {
    let n = host::offsets_partition_count(shard)
        .unwrap_or(host::coordinator(shard).config.offsets_partitions);
    let p = partition_for(group, n);
    (p, host::offsets_partition_owner(shard, p))
}

/// The per-shard background work: eager loading of the offsets partitions this broker leads
/// and offset expiry (session expiry runs on per-group timers).
pub async fn run(shard: Rc<Shard>) {
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
