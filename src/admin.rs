//! `chronik-server cluster …`: admin commands that talk to a running broker over the Kafka
//! protocol (blocking std sockets: this is a CLI, not shard code).

use crate::kafka::client;
use kafka_protocol::messages::list_partition_reassignments_response::OngoingPartitionReassignment;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    corr: i32,
    req: &Req,
) -> Result<Resp, String> {
    let frame = client::encode_request(key, version, corr, "chronik-admin", req)?;
    s.write_all(&frame).map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let n = client::check_response_size(i32::from_be_bytes(len), 64 << 20)?;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    client::decode_response(key, version, corr, bytes::Bytes::from(buf))
}

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
    let mut s = TcpStream::connect(bootstrap).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let cluster: DescribeClusterResponse = call(
        &mut s,
        ApiKey::DescribeCluster,
        0,
        1,
        &DescribeClusterRequest::default(),
    )?;
    let mut mreq = MetadataRequest::default();
    mreq.topics = None;
    let meta: MetadataResponse = call(&mut s, ApiKey::Metadata, 9, 2, &mreq)?;
    // Replica moves in progress (rebalance, remove-node): (topic, partition) → (adding, removing).
    let moving: ListPartitionReassignmentsResponse = call(
        &mut s,
        ApiKey::ListPartitionReassignments,
        0,
        3,
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
    let mut conns: Vec<(i32, Option<TcpStream>)> = cluster
        .brokers
        .iter()
        .filter(|b| !b.is_fenced)
        .map(|b| {
            let c = TcpStream::connect((b.host.as_str(), b.port as u16)).ok();
            if let Some(c) = &c {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            }
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
fn replica_leo(s: &mut TcpStream, topic: &str, partition: i32) -> Option<i64> {
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
    let r: ListOffsetsResponse = call(s, ApiKey::ListOffsets, 4, 3, &req).ok()?;
    let p = r.topics.first()?.partitions.first()?;
    (p.error_code == 0).then_some(p.offset)
}
