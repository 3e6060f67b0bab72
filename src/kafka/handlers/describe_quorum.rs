//! DescribeQuorum: the metadata Raft group (Kafka's `__cluster_metadata` partition 0) as its
//! leader reports it — voters and observers (Raft learners) with their log end offsets, the
//! leader id, its epoch (the Raft term) and high watermark (the commit point). Any node answers:
//! a follower asks the Raft leader over controller RPC, as a Kafka broker forwards the request
//! to the active controller. openraft tracks when followers last fetched or caught up only as
//! far as the leader's own progress, so those timestamps are -1 (unknown) for followers. From
//! v2, each member's controller listener (its Raft address) under `nodes`.

use super::{str_bytes, topic_name};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::quorum::{QuorumStatus, ReplicaStatus};
use chronik_raft::ControllerError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use std::rc::Rc;
use std::time::Duration;

/// Kafka's name for the metadata log.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// The name Kafka's controllers give their listener.
const CONTROLLER_LISTENER: &str = "CONTROLLER";
const QUORUM_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeQuorumRequest = decode(body, ctx.api_version)?;
    if !crate::acl::cluster_allowed(&shard, &ctx, chronik_raft::acl::Operation::Describe) {
        let mut resp = DescribeQuorumResponse::default();
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let v = ctx.api_version;
    let mut resp = DescribeQuorumResponse::default();
    resp.error_code = errors::NONE;
    let valid = req.topics.len() == 1
        && req.topics[0].topic_name.0.as_str() == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !valid {
        // Kafka echoes every topic and partition asked for with this error.
        for t in &req.topics {
            let mut td = TopicData::default();
            td.topic_name = t.topic_name.clone();
            for p in &t.partitions {
                td.partitions.push(partition_error(
                    v,
                    p.partition_index,
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    "only __cluster_metadata partition 0 has a quorum",
                ));
            }
            resp.topics.push(td);
        }
        return ctx.encode(&resp).map(Some);
    }
    let partition = match shard.controller.quorum(QUORUM_TIMEOUT).await {
        Ok(q) => {
            if v >= 2 {
                resp.nodes = nodes(&q);
            }
            describe(v, &q)
        }
        Err(ControllerError::Timeout) => partition_error(
            v,
            0,
            errors::REQUEST_TIMED_OUT,
            "the metadata leader did not answer in time",
        ),
        Err(e) => partition_error(
            v,
            0,
            errors::NOT_LEADER_OR_FOLLOWER,
            &format!("no metadata leader to describe the quorum: {e}"),
        ),
    };
    let mut td = TopicData::default();
    td.topic_name = topic_name(METADATA_TOPIC);
    td.partitions.push(partition);
    resp.topics.push(td);
    ctx.encode(&resp).map(Some)
}

/// Fields a version does not carry stay at their defaults (the encoder refuses them).
fn describe(version: i16, q: &QuorumStatus) -> PartitionData {
    let replica = |r: &ReplicaStatus| {
        let mut s = ReplicaState::default();
        s.replica_id = BrokerId(r.id);
        s.log_end_offset = r.log_end_offset;
        if version >= 1 {
            s.last_fetch_timestamp = r.last_fetch_ms;
            s.last_caught_up_timestamp = r.last_caught_up_ms;
        }
        s
    };
    let mut p = PartitionData::default();
    p.partition_index = 0;
    p.error_code = errors::NONE;
    p.leader_id = BrokerId(q.leader_id);
    p.leader_epoch = q.leader_epoch;
    p.high_watermark = q.high_watermark;
    p.current_voters = q.voters.iter().map(replica).collect();
    p.observers = q.observers.iter().map(replica).collect();
    p
}

/// Each member's controller listener, from its Raft address (`host:port`, IPv6 in brackets).
fn nodes(q: &QuorumStatus) -> Vec<Node> {
    q.nodes
        .iter()
        .filter_map(|(id, addr)| {
            let (host, port) = addr.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let mut l = Listener::default();
            l.name = str_bytes(CONTROLLER_LISTENER);
            l.host = str_bytes(host);
            l.port = port;
            let mut n = Node::default();
            n.node_id = BrokerId(*id);
            n.listeners.push(l);
            Some(n)
        })
        .collect()
}

fn partition_error(version: i16, index: i32, code: i16, message: &str) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = index;
    p.error_code = code;
    if version >= 2 {
        p.error_message = Some(str_bytes(message));
    }
    p.leader_id = BrokerId(-1);
    p.leader_epoch = -1;
    p.high_watermark = -1;
    p
}
