//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+); all partitions when
//! the topic list is null (v2+).

use super::{str_bytes, topic_name};
use crate::acl::Subject;
use crate::group::coordinator::{self, FetchedOffset};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{
    Operation,
    ResourceType::{Group, Topic},
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use std::rc::Rc;

/// The requested (topic, partitions), `None` for every topic. The v8+ group entry and the older
/// request name their topic structs differently but alike.
macro_rules! requested_topics {
    ($topics:expr) => {
        $topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        })
    };
}

type Fetched = (i16, Vec<(String, Vec<FetchedOffset>)>);

/// One group's offsets, as Kafka authorizes them: DESCRIBE on the group (else
/// GROUP_AUTHORIZATION_FAILED), and on each topic (named ones answer TOPIC_AUTHORIZATION_FAILED,
/// and a fetch of every topic leaves the others out).
async fn fetch_one(
    shard: &Rc<Services>,
    subject: &Subject<'_>,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Fetched {
    let may = |op, rt, name: &str| shard.with_image(|i| subject.may(i, op, rt, name));
    if !may(Operation::Describe, Group, &group) {
        return (errors::GROUP_AUTHORIZATION_FAILED, Vec::new());
    }
    let (topics, refused): (Option<Vec<_>>, Vec<_>) = match topics {
        None => (None, Vec::new()),
        Some(ts) => {
            let (ok, not): (Vec<_>, Vec<_>) = ts
                .into_iter()
                .partition(|(t, _)| may(Operation::Describe, Topic, t));
            (Some(ok), not)
        }
    };
    let (g, t) = (group.clone(), topics.clone());
    let (code, mut result) = if topics.as_ref().is_some_and(|t| t.is_empty()) && !refused.is_empty()
    {
        (errors::NONE, Vec::new())
    } else {
        shard
            .on_group_shard(&group, move |s| {
                coordinator::fetch_offsets_stable(s, g, t, require_stable)
            })
            .await
            .unwrap_or_else(|| (errors::COORDINATOR_NOT_AVAILABLE, Vec::new()))
    };
    if topics.is_none() {
        result.retain(|(t, _)| may(Operation::Describe, Topic, t));
    }
    result.extend(refused.into_iter().map(|(t, parts)| {
        let parts = parts
            .into_iter()
            .map(|p| (p, -1, -1, None, errors::TOPIC_AUTHORIZATION_FAILED))
            .collect();
        (t, parts)
    }));
    (code, result)
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let v = ctx.api_version;
    let req: OffsetFetchRequest = decode(body, v)?;
    let subject = Subject::of(&shard, &ctx);
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in &req.groups {
            let topics = requested_topics!(g.topics);
            let group = g.group_id.0.to_string();
            let (code, result) =
                fetch_one(&shard, &subject, group, topics, req.require_stable).await;
            let mut gr = OffsetFetchResponseGroup::default();
            gr.group_id = GroupId(g.group_id.0.clone());
            gr.error_code = code;
            for (t, parts) in result {
                let mut tr = OffsetFetchResponseTopics::default();
                tr.name = topic_name(&t);
                for (p, offset, epoch, meta, err) in parts {
                    let mut pr = OffsetFetchResponsePartitions::default();
                    pr.partition_index = p;
                    pr.committed_offset = offset;
                    pr.committed_leader_epoch = epoch;
                    pr.metadata = meta.as_deref().map(str_bytes);
                    pr.error_code = err;
                    tr.partitions.push(pr);
                }
                gr.topics.push(tr);
            }
            resp.groups.push(gr);
        }
    } else {
        let topics = requested_topics!(req.topics);
        let group = req.group_id.0.to_string();
        let stable = v >= 7 && req.require_stable;
        let (code, result) = fetch_one(&shard, &subject, group, topics, stable).await;
        if v >= 2 {
            resp.error_code = code;
        }
        for (t, parts) in result {
            let mut tr = OffsetFetchResponseTopic::default();
            tr.name = topic_name(&t);
            for (p, offset, epoch, meta, err) in parts {
                let mut pr = OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = offset;
                pr.committed_leader_epoch = epoch;
                pr.metadata = meta.as_deref().map(str_bytes);
                // v1 has no top-level error: it is reported per partition.
                pr.error_code = if v < 2 && code != errors::NONE {
                    code
                } else {
                    err
                };
                tr.partitions.push(pr);
            }
            resp.topics.push(tr);
        }
    }
    ctx.encode(&resp).map(Some)
}
