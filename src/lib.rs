//! chronik: a Kafka-wire-compatible broker, thread-per-core on glommio.
//!
//! `server` starts the controller (metadata Raft, crate `chronik-raft`) and one shard per core;
//! each shard serves connections (`net`), answers Kafka APIs (`kafka`), and owns partitions
//! (`partition`, on top of crate `chronik-storage`).

pub mod acl;
pub mod cli;
pub mod config;
pub mod disk_space;
pub mod dynamic_config;
pub mod group;
pub mod kafka;
pub mod metrics;
pub mod net;
pub mod partition;
pub mod replication;
pub mod sasl;
pub mod server;
pub mod services;
pub mod shard;
pub mod txn;
