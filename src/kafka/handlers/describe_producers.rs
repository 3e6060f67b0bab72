//! DescribeProducers (API 61): the idempotent producers with state in each partition, answered
//! by the partition's leader (Kafka's ReplicaManager.activeProducerState).

use super::str_bytes;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::partition::producer_state::ActiveProducer;
use crate::services::Services;
use crate::shard::TopicPartition;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use std::rc::Rc;

/// Runs on the partition's owner shard.
async fn active_local(
    shard: &Rc<Services>,
    tp: TopicPartition,
) -> Result<Vec<ActiveProducer>, i16> {
    let p = shard.replicas.get_or_open(&tp).await?;
    if !p.is_leader() {
        return Err(errors::NOT_LEADER_OR_FOLLOWER);
    }
    Ok(p.active_producers())
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeProducersRequest = decode(body, ctx.api_version)?;
    let mut resp = DescribeProducersResponse::default();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for t in req.topics {
        // READ on the topic, as Kafka.
        let may =
            shard.with_image(|i| subject.may(i, Operation::Read, ResourceType::Topic, &t.name));
        let mut tr = TopicResponse::default();
        for index in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = index;
            let known = shard.with_image(|i| i.partition(&t.name, index).is_some());
            let r = if !may {
                Err(errors::TOPIC_AUTHORIZATION_FAILED)
            } else if known {
                let tp = TopicPartition::new(&t.name, index);
                let owner = shard.owner_of(&t.name, index);
                shard
                    .run_on(owner, move |s| async move { active_local(&s, tp).await })
                    .await
                    .unwrap_or(Err(errors::UNKNOWN_SERVER_ERROR))
            } else {
                Err(errors::UNKNOWN_TOPIC_OR_PARTITION)
            };
            match r {
                Ok(producers) => {
                    pr.active_producers = producers
                        .into_iter()
                        .map(|a| {
                            let mut s = ProducerState::default();
                            s.producer_id = ProducerId(a.producer_id);
                            s.producer_epoch = i32::from(a.epoch);
                            s.last_sequence = a.last_sequence;
                            s.last_timestamp = a.last_timestamp;
                            s.coordinator_epoch = -1;
                            s.current_txn_start_offset = a.txn_start_offset;
                            s
                        })
                        .collect();
                }
                Err(code) => {
                    pr.error_code = code;
                    if code == errors::NOT_LEADER_OR_FOLLOWER {
                        pr.error_message = Some(str_bytes("this broker is not the leader"));
                    }
                }
            }
            tr.partitions.push(pr);
        }
        tr.name = t.name;
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
