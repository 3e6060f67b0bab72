//! DeleteRecords: advance a partition's log start offset (-1 means up to the high watermark).
//! Internal topics are refused (INVALID_TOPIC_EXCEPTION), as Kafka's ReplicaManager does.
//! As Kafka's DelayedDeleteRecords, a partition is answered once its low watermark (the least
//! log start over the leader and its in-sync followers, which move theirs at their next fetch)
//! reaches the offset, or with REQUEST_TIMED_OUT when the request's timeout passes first: a
//! success means no in-sync replica that could lead next still serves the deleted records.

use super::produce::is_internal_topic;
use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::partition::storage_error_code;
use crate::services::Services;
use crate::shard::TopicPartition;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often a wait for the low watermark looks again without a wake-up (an ISR change can
/// lower what it waits for without a follower's fetch).
const RECHECK: Duration = Duration::from_millis(100);

async fn delete_local(
    shard: &Rc<Services>,
    tp: TopicPartition,
    offset: i64,
    deadline: Instant,
) -> (i16, i64) {
    let p = match shard.replicas.get_or_open(&tp).await {
        Ok(p) => p,
        Err(c) => return (c, -1),
    };
    if !p.is_leader() {
        return (errors::NOT_LEADER_OR_FOLLOWER, -1);
    }
    let hw = p.high_watermark();
    let target = if offset == -1 { hw } else { offset };
    if target < 0 || target > hw {
        return (errors::OFFSET_OUT_OF_RANGE, -1);
    }
    if let Err(e) = p.log.delete_records_before(target).await {
        return (storage_error_code(&e), -1);
    }
    loop {
        if !p.is_leader() {
            return (errors::NOT_LEADER_OR_FOLLOWER, -1);
        }
        let low = p.low_watermark();
        if low >= target {
            return (errors::NONE, low);
        }
        let now = Instant::now();
        if now >= deadline {
            return (errors::REQUEST_TIMED_OUT, low);
        }
        futures_lite::future::or(
            p.follower_log_start_moved.listen(),
            glommio::timer::sleep((deadline - now).min(RECHECK)),
        )
        .await;
    }
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DeleteRecordsRequest = decode(body, ctx.api_version)?;
    let mut resp = DeleteRecordsResponse::default();
    // Shared by the request's partitions, so the whole answer comes within the timeout.
    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for t in req.topics {
        let name = t.name.0.to_string();
        // DELETE on the topic, as Kafka.
        let may =
            shard.with_image(|i| subject.may(i, Operation::Delete, ResourceType::Topic, &name));
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = topic_name(&name);
        for p in t.partitions {
            let tp = TopicPartition::new(&name, p.partition_index);
            let owner = shard.owner_of(&name, p.partition_index);
            let off = p.offset;
            let (error, low) = if !may {
                (errors::TOPIC_AUTHORIZATION_FAILED, -1)
            } else if is_internal_topic(&name) {
                (errors::INVALID_TOPIC_EXCEPTION, -1)
            } else {
                shard
                    .run_on(owner, move |s| async move {
                        delete_local(&s, tp, off, deadline).await
                    })
                    .await
                    .unwrap_or((errors::UNKNOWN_SERVER_ERROR, -1))
            };
            let mut r = DeleteRecordsPartitionResult::default();
            r.partition_index = p.partition_index;
            r.error_code = error;
            r.low_watermark = low;
            tr.partitions.push(r);
        }
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
