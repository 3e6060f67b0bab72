//! The controller: its thread and runtime, the submit path (batching and forwarding), broker
//! registration and heartbeats, fencing, and the handle the broker holds.
//!
//! Threading: openraft needs tokio, so the controller owns one thread running a current-thread
//! tokio runtime (pinned to a core when asked). The broker's glommio shards talk to it only
//! through async-channel (submissions, replies, images), whose futures need no tokio reactor.
//!
//! Submit path: `submit` queues a command; the dispatcher drains everything queued and delivers
//! it as one batch — to the local proposer if this node leads, else in one Forward RPC to the
//! leader. On the leader, the proposer drains its queue (local and forwarded commands alike) and
//! proposes all of it as ONE log entry, so commands arriving together share one fsync.
//!
//! Modules: `start` (thread, runtime, Raft and the tasks), `handle` (the `Controller` the broker
//! holds), `node` (state shared on the controller thread, the RPCs it serves, leader tracking),
//! `submit` (checking, batching and forwarding submissions), `propose` (the leader's proposer
//! and membership changes), `broker_loops` (registration, heartbeats, fencing, preferred-leader
//! rebalance), `queries` (served-everywhere waits and quorum status), `cluster_id`.

mod broker_loops;
mod cluster_id;
mod handle;
mod node;
mod propose;
mod queries;
mod start;
mod submit;

pub use crate::error::ControllerError;
pub use cluster_id::derive_cluster_id;
pub use handle::Controller;
pub use start::{start, start_with};

use crate::command::{BrokerRegistration, CommandOutcome};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the broker configures about its controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// This node's id; equal to its broker id.
    pub node_id: i32,
    /// Where our Raft RPC listens.
    pub raft_listen: SocketAddr,
    /// Initial voters as (node id, "host:port"). One entry: a single-node cluster (same code).
    pub quorum: Vec<(i32, String)>,
    /// Raft log and snapshots live here.
    pub data_dir: PathBuf,
    /// This node's Kafka endpoint; the controller registers it and heartbeats for it.
    pub broker: BrokerRegistration,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub default_num_partitions: i32,
    pub default_replication_factor: i16,
    /// Empty: derived from the initial quorum and persisted in the data dir.
    pub cluster_id: String,
    /// Every controller RPC connection, both ways, proves knowledge of this (network.rs).
    pub cluster_secret: crate::secret::ClusterSecret,
    /// `--controller-tls`: every controller connection is mutual TLS (`rpc_tls`).
    pub tls: Option<std::sync::Arc<crate::rpc_tls::ControllerTls>>,
    pub pin_core: Option<usize>,
}

/// Knobs with sensible defaults that the broker need not set.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Take a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (lets slightly lagging followers catch up
    /// without a snapshot transfer).
    pub keep_after_snapshot: u64,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long `submit` keeps retrying across leader changes, and `wait_applied` waits.
    pub request_timeout: Duration,
    /// Most commands in one log entry.
    pub max_batch: usize,
    /// How often the active controller moves leadership back to preferred replicas that are
    /// live and in sync (Kafka's auto.leader.rebalance); None disables it.
    pub leader_rebalance_interval: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            raft_heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            request_timeout: Duration::from_secs(30),
            max_batch: 4096,
            leader_rebalance_interval: Some(Duration::from_secs(60)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Log index of the entry that carried the command; `wait_applied(index)` then guarantees
    /// this node's image reflects it.
    pub index: u64,
    pub outcome: CommandOutcome,
}
