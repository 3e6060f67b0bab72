//! chronik-bench: a Kafka-protocol load generator that works against any Kafka-compatible broker.
//!
//! The binary (`src/main.rs`) is a thin shell over [`modes::run`]; everything else is a library so
//! that the integration tests can drive it in-process.

pub mod batch;
pub mod cli;
pub mod client;
pub mod consumer;
pub mod control;
pub mod cpu;
pub mod duration;
pub mod group;
pub mod metadata;
pub mod modes;
pub mod partitioner;
pub mod payload;
pub mod producer;
pub mod record_producer;
pub mod report;
pub mod stats;
pub mod txn_producer;
pub mod validate;
