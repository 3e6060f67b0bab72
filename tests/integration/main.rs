//! The broker's integration tests: real `chronik-server` processes on random loopback ports with
//! temp data dirs, driven by librdkafka (the `rdkafka` crate) and raw Kafka frames. One test
//! binary with a module per area, so the suite links once instead of once per file.

mod common;

mod acls;
mod admin_apis;
mod broker_admin;
mod cli;
mod cluster;
mod compaction;
mod controlled_shutdown;
mod controller_auth;
mod cross_shard;
mod executor_patch;
mod fetch_sessions;
mod groups;
mod hostile_metadata;
mod hostile_produce;
mod hostile_requests;
mod layering;
mod listeners;
mod membership;
mod metrics;
mod readme;
mod sasl;
mod single_node;
mod tls;
mod topic_configs;
mod transactions;
