//! OffsetForLeaderEpoch: end offset of a leader epoch, for follower truncation and for
//! consumers checking for log divergence after a leader change.

use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use crate::shard::TopicPartition;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::rc::Rc;

/// (error, epoch, end offset)
pub async fn end_offset_local(
    shard: &Rc<Services>,
    tp: TopicPartition,
    current_epoch: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let p = match shard.replicas.get_or_open(&tp).await {
        Ok(p) => p,
        Err(c) => return (c, -1, -1),
    };
    if !p.is_leader() {
        return (errors::NOT_LEADER_OR_FOLLOWER, -1, -1);
    }
    let mine = p.leader_epoch();
    if current_epoch >= 0 && current_epoch < mine {
        return (errors::FENCED_LEADER_EPOCH, -1, -1);
    }
    if current_epoch > mine {
        return (errors::UNKNOWN_LEADER_EPOCH, -1, -1);
    }
    match p.log.end_offset_for_epoch(epoch) {
        Some((e, o)) => (errors::NONE, e, o),
        // No epoch at or below the one asked for: Kafka answers UNDEFINED (-1, -1).
        None => (errors::NONE, -1, -1),
    }
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: OffsetForLeaderEpochRequest = decode(body, ctx.api_version)?;
    let mut resp = OffsetForLeaderEpochResponse::default();
    // Followers (replica id >= 0) need CLUSTER_ACTION, clients DESCRIBE on the topic, as Kafka.
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let follower = req.replica_id.0 >= 0;
    let cluster_action = shard.with_image(|i| subject.may_on_cluster(i, Operation::ClusterAction));
    for t in req.topics {
        let name = t.topic.0.to_string();
        let may = if follower {
            cluster_action
        } else {
            shard.with_image(|i| subject.may(i, Operation::Describe, ResourceType::Topic, &name))
        };
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = topic_name(&name);
        for p in t.partitions {
            let tp = TopicPartition::new(&name, p.partition);
            let owner = shard.owner_of(&name, p.partition);
            let (cur, ep) = (p.current_leader_epoch, p.leader_epoch);
            let (error, epoch, end) = if !may {
                (errors::TOPIC_AUTHORIZATION_FAILED, -1, -1)
            } else {
                shard
                    .run_on(owner, move |s| async move {
                        end_offset_local(&s, tp, cur, ep).await
                    })
                    .await
                    .unwrap_or((errors::UNKNOWN_SERVER_ERROR, -1, -1))
            };
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.error_code = error;
            e.leader_epoch = epoch;
            e.end_offset = end;
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
