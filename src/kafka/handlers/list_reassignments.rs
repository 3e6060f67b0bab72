//! ListPartitionReassignments: the partitions whose replica set is moving (`cluster rebalance`,
//! `cluster remove-node`), with Kafka's replicas / adding / removing split, from this node's
//! MetadataImage. Partitions that are not moving (or do not exist) are left out, as in Kafka.

use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::image::{PartitionState, TopicImage};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: ListPartitionReassignmentsRequest = decode(body, ctx.api_version)?;
    if !crate::acl::cluster_allowed(&shard, &ctx, chronik_raft::acl::Operation::Describe) {
        let mut resp = ListPartitionReassignmentsResponse::default();
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let img = shard.image();
    let mut resp = ListPartitionReassignmentsResponse::default();
    let mut add = |name: &str, topic: &TopicImage, only: Option<&[i32]>| {
        let parts: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, p)| p.reassigning() && only.is_none_or(|o| o.contains(&(*i as i32))))
            .map(|(i, p)| ongoing(i as i32, p))
            .collect();
        if !parts.is_empty() {
            let mut t = OngoingTopicReassignment::default();
            t.name = topic_name(name);
            t.partitions = parts;
            resp.topics.push(t);
        }
    };
    match &req.topics {
        None => {
            let mut names: Vec<&String> = img.topics.keys().collect();
            names.sort();
            for name in names {
                if let Some(t) = img.topic(name) {
                    add(name, t, None);
                }
            }
        }
        Some(wanted) => {
            for w in wanted {
                if let Some(t) = img.topic(w.name.0.as_str()) {
                    add(w.name.0.as_str(), t, Some(&w.partition_indexes));
                }
            }
        }
    }
    ctx.encode(&resp).map(Some)
}

fn ongoing(index: i32, p: &PartitionState) -> OngoingPartitionReassignment {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut o = OngoingPartitionReassignment::default();
    o.partition_index = index;
    o.replicas = ids(&p.replicas);
    o.adding_replicas = ids(&p.adding);
    o.removing_replicas = ids(&p.removing);
    o
}
