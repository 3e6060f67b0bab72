//! `chronik-server cluster status`: brokers, the controller and per-partition leader/ISR, each
//! replica's own log end offset and the replica moves in progress, over the Kafka protocol.

use crate::cli::conn::Conn;
use kafka_protocol::messages::list_partition_reassignments_response::OngoingPartitionReassignment;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::HashMap;

pub fn cluster_status(bootstrap: &str) -> i32 {
    match status(bootstrap) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("cluster status: {bootstrap}: {e}");
            1
        }
    }
}

fn status(bootstrap: &str) -> Result<String, String> {
    let mut s = Conn::connect(bootstrap)?;
    let cluster: DescribeClusterResponse = s.call(
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    )?;
    let mut mreq = MetadataRequest::default();
    mreq.topics = None;
    let meta: MetadataResponse = s.call(ApiKey::Metadata, 9, &mreq)?;
    // Replica moves in progress (rebalance, remove-node): (topic, partition) → (adding, removing).
    let moving: ListPartitionReassignmentsResponse = s.call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default(),
    )?;
    let moving: HashMap<(String, i32), &OngoingPartitionReassignment> = moving
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| ((t.name.0.to_string(), p.partition_index), p))
        })
        .collect();
    let mut out = String::new();
    out.push_str(&format!(
        "cluster {}  controller {}\n\nbrokers:\n",
        cluster.cluster_id.as_str(),
        cluster.controller_id.0
    ));
    for b in &cluster.brokers {
        out.push_str(&format!(
            "  {:>4}  {}:{}  {}\n",
            b.broker_id.0,
            b.host.as_str(),
            b.port,
            if b.is_fenced { "FENCED" } else { "alive" }
        ));
    }
    out.push_str("\ntopics:\n");
    let mut topics: Vec<_> = meta.topics.iter().collect();
    topics.sort_by_key(|t| t.name.as_ref().map(|n| n.0.to_string()));
    // One connection per live broker, to read each replica's own log end offset.
    let mut conns: Vec<(i32, Option<Conn>)> = cluster
        .brokers
        .iter()
        .filter(|b| !b.is_fenced)
        .map(|b| {
            let c = Conn::connect(&format!("{}:{}", b.host.as_str(), b.port)).ok();
            (b.broker_id.0, c)
        })
        .collect();
    for t in topics {
        let name = t.name.as_ref().map_or("?".to_string(), |n| n.0.to_string());
        out.push_str(&format!("  {name}\n"));
        for p in &t.partitions {
            let leos: Vec<String> = p
                .replica_nodes
                .iter()
                .map(|r| {
                    let leo = conns
                        .iter_mut()
                        .find(|(id, _)| *id == r.0)
                        .and_then(|(_, c)| c.as_mut())
                        .and_then(|c| replica_leo(c, &name, p.partition_index));
                    format!("{}:{}", r.0, leo.map_or("?".into(), |o| o.to_string()))
                })
                .collect();
            let under = p.isr_nodes.len() < p.replica_nodes.len();
            let ids = |v: &Vec<kafka_protocol::messages::BrokerId>| {
                v.iter()
                    .map(|b| b.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let reassign =
                moving
                    .get(&(name.clone(), p.partition_index))
                    .map_or(String::new(), |r| {
                        format!(
                            "  REASSIGNING adding [{}] removing [{}]",
                            ids(&r.adding_replicas),
                            ids(&r.removing_replicas)
                        )
                    });
            out.push_str(&format!(
                "    p{:<4} leader {:>3}  epoch {:>3}  replicas [{}]  isr [{}]  log end [{}]{}{}\n",
                p.partition_index,
                p.leader_id.0,
                p.leader_epoch,
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                leos.join(" "),
                if under { "  UNDER-REPLICATED" } else { "" },
                reassign
            ));
        }
    }
    Ok(out)
}

/// A replica's own log end offset (ListOffsets latest with the debug replica id -2).
fn replica_leo(s: &mut Conn, topic: &str, partition: i32) -> Option<i64> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
    let mut req = ListOffsetsRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-2);
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    let r: ListOffsetsResponse = s.call(ApiKey::ListOffsets, 4, &req).ok()?;
    let p = r.topics.first()?.partitions.first()?;
    (p.error_code == 0).then_some(p.offset)
}
