//! chronik-raft: cluster metadata replicated with openraft, published as immutable images.
// openraft's StorageError is large and its signatures are fixed; the CreatePartitions tuple shape
// is part of the public API the broker codes against.
#![allow(clippy::result_large_err, clippy::type_complexity)]

pub mod acl;
pub mod broker_config;
pub mod codec;
pub mod command;
pub mod controller;
pub mod error;
pub mod hub;
pub mod image;
pub mod liveness;
pub mod log_store;
pub mod metadata;
pub mod network;
pub mod placement;
pub mod quorum;
pub mod rpc_tls;
pub mod scram;
pub mod secret;
pub mod shutdown;
pub mod snapshot;
pub mod state_machine;
pub mod topic_config;
pub mod types;
pub mod validate;

pub use command::{BrokerRegistration, Command, CommandOutcome, MetaError, NewTopic, PartitionRef};
pub use controller::{
    start, start_with, Controller, ControllerConfig, ControllerError, Submitted, Tuning,
};
