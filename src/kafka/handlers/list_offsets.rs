//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), latest
//! tiered (-5, v9+), by time. v10's timeout bounds remote-storage lookups, which there are none.

use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::partition::storage_error_code;
use crate::services::Services;
use crate::shard::TopicPartition;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::rc::Rc;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

#[derive(Debug, Clone, Copy)]
struct Answer {
    error: i16,
    offset: i64,
    timestamp: i64,
    epoch: i32,
}

fn err(code: i16) -> Answer {
    Answer {
        error: code,
        offset: -1,
        timestamp: -1,
        epoch: -1,
    }
}

async fn lookup(
    shard: &Rc<Services>,
    tp: TopicPartition,
    ts: i64,
    current_epoch: i32,
    from_replica: Option<i32>,
    read_committed: bool,
) -> Answer {
    let p = match shard.replicas.get_or_open(&tp).await {
        Ok(p) => p,
        Err(c) => return err(c),
    };
    if from_replica == Some(super::fetch::DEBUG_REPLICA_ID) && (ts == LATEST || ts == EARLIEST) {
        // Debug read of this node's copy (leader or follower): its log end or start offset.
        return Answer {
            error: errors::NONE,
            offset: if ts == LATEST {
                p.log.log_end_offset()
            } else {
                p.log.log_start_offset()
            },
            timestamp: -1,
            epoch: p.leader_epoch(),
        };
    }
    if !p.is_leader() {
        return err(errors::NOT_LEADER_OR_FOLLOWER);
    }
    let epoch = p.leader_epoch();
    if current_epoch >= 0 && current_epoch < epoch {
        return err(errors::FENCED_LEADER_EPOCH);
    }
    if current_epoch > epoch {
        return err(errors::UNKNOWN_LEADER_EPOCH);
    }
    // READ_COMMITTED (isolation level 1) sees the log up to the last stable offset.
    let visible = if read_committed {
        p.last_stable_offset()
    } else {
        p.high_watermark()
    };
    let ok = |offset, timestamp| Answer {
        error: errors::NONE,
        offset,
        timestamp,
        epoch,
    };
    match ts {
        LATEST if from_replica.is_some_and(|r| r >= 0) => ok(p.log.log_end_offset(), -1),
        LATEST => ok(visible, -1),
        EARLIEST | EARLIEST_LOCAL => ok(p.log.log_start_offset(), -1),
        // Nothing is tiered: Kafka answers offset -1, timestamp -1, epoch -1 without remote
        // storage.
        LATEST_TIERED => Answer {
            epoch: -1,
            ..ok(-1, -1)
        },
        MAX_TIMESTAMP => {
            let (t, o) = p.log.max_timestamp_and_offset();
            if o < 0 || o >= visible {
                ok(-1, -1)
            } else {
                ok(o, t)
            }
        }
        t if t >= 0 => match p.log.offset_for_time(t).await {
            Ok(Some((o, ts))) if o < visible => ok(o, ts),
            Ok(_) => ok(-1, -1),
            Err(e) => err(storage_error_code(&e)),
        },
        _ => err(errors::INVALID_REQUEST),
    }
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: ListOffsetsRequest = decode(body, ctx.api_version)?;
    // A replica id >= 0 reads up to the log end instead of the high watermark: only from a
    // connection that proved it is that broker (`net::broker_auth`); anyone else is answered
    // as the consumer it is.
    let claimed = req.replica_id.0;
    let from_replica = match claimed {
        -1 => None,
        r if r >= 0 && ctx.broker != Some(r) => None,
        r => Some(r),
    };
    let read_committed = ctx.api_version >= 2 && req.isolation_level == 1;
    let mut resp = ListOffsetsResponse::default();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for t in req.topics {
        let name = t.name.0.to_string();
        // DESCRIBE on the topic, as Kafka.
        let may =
            shard.with_image(|i| subject.may(i, Operation::Describe, ResourceType::Topic, &name));
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = topic_name(&name);
        for p in t.partitions {
            let tp = TopicPartition::new(&name, p.partition_index);
            let owner = shard.owner_of(&name, p.partition_index);
            let (mut ts, epoch) = (p.timestamp, p.current_leader_epoch);
            if ts == LATEST_TIERED && ctx.api_version < 9 {
                ts = i64::MIN; // not a target before v9: INVALID_REQUEST below
            }
            let a = if !may {
                err(errors::TOPIC_AUTHORIZATION_FAILED)
            } else {
                shard
                    .run_on(owner, move |s| async move {
                        lookup(&s, tp, ts, epoch, from_replica, read_committed).await
                    })
                    .await
                    .unwrap_or_else(|| err(errors::UNKNOWN_SERVER_ERROR))
            };
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_code = a.error;
            pr.offset = a.offset;
            pr.timestamp = a.timestamp;
            if ctx.api_version >= 4 {
                pr.leader_epoch = a.epoch;
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
