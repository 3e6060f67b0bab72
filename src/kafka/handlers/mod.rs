//! One module per Kafka API: decode the request, call the shard or controller, encode the response.

pub mod acls;
pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_reassignments;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod fetch_response;
pub mod fetch_session;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_commands;
pub mod produce;
pub mod sasl;
pub mod scram_credentials;
pub mod sync_group;
pub mod topics;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

/// The offsets an OffsetCommit or TxnOffsetCommit request carries, per topic, as the group
/// coordinator takes them. A macro because the two requests' topic types differ (same fields).
macro_rules! commit_partitions {
    ($topics:expr) => {
        $topics
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions
                        .iter()
                        .map(|p| crate::group::coordinator::CommitPartition {
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                        .collect(),
                )
            })
            .collect()
    };
}
pub(crate) use commit_partitions;

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn uuid(id: &chronik_raft::image::TopicId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id)
}

/// A broker endpoint as NodeEndpoints carry it: id, host, port, rack.
pub(crate) type Endpoint = (i32, String, i32, Option<String>);

/// KIP-951: a partition's current leader and leader epoch, for a NOT_LEADER_OR_FOLLOWER
/// answer (Produce v10+, Fetch v16+). None when it has no leader.
pub(crate) fn current_leader(
    shard: &crate::services::Services,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32)> {
    shard.with_image(|i| {
        i.partition(topic, partition)
            .filter(|p| p.leader != chronik_raft::image::NO_LEADER)
            .map(|p| (p.leader, p.leader_epoch))
    })
}

/// Where a client that came in on `listener` reaches broker `b`: its endpoint of the same name,
/// as Kafka answers (None: `b` has no such listener and is left out). A broker registered
/// without listeners, or a request with no listener (tests), gets the inter-broker endpoint.
pub(crate) fn address_on<'a>(
    listener: Option<&str>,
    b: &'a chronik_raft::image::BrokerInfo,
) -> Option<(&'a str, u16)> {
    match listener {
        Some(name) if !b.listeners.is_empty() => b.endpoint(name),
        _ => Some((b.host.as_str(), b.port)),
    }
}

/// The endpoints (id, host, port, rack) of the given brokers on the client's listener, each
/// once, as the NodeEndpoints of Produce v10+ and Fetch v16+ responses list them.
pub(crate) fn node_endpoints(
    shard: &crate::services::Services,
    listener: Option<&str>,
    mut ids: Vec<i32>,
) -> Vec<Endpoint> {
    ids.sort_unstable();
    ids.dedup();
    shard.with_image(|i| {
        ids.iter()
            .filter_map(|id| i.broker(*id).filter(|b| !b.fenced))
            .filter_map(|b| {
                let (host, port) = address_on(listener, b)?;
                Some((b.id, host.to_string(), i32::from(port), b.rack.clone()))
            })
            .collect()
    })
}
