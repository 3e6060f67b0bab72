//! The coordinator's public face: the entry points the Kafka handlers call, gathered from the
//! modules that hold them (so callers keep one path, `group::coordinator::…`).

pub use super::admin::{
    committed_offsets, delete_group, delete_offsets, describe, list_local, loaded_group_count,
    Described, DescribedMember,
};
pub use super::background::run_background;
pub use super::machine::{JoinParams, SyncParams};
pub use super::offsets::{
    commit, fetch_offsets, fetch_offsets_stable, CommitParams, CommitPartition, FetchedOffset,
};
pub use super::offsets_partition::acquire;
pub use super::partitions::{GroupCoordinator, GroupRef, OffsetsPartition};
pub use super::rebalance::{heartbeat, join, leave, sync};
pub use super::txn_offsets::{complete_txn_offsets, txn_commit, TxnCommitParams};
