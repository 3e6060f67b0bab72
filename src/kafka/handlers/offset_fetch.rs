//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+); all partitions when
//! the topic list is null (v2+).

use super::{str_bytes, topic_name};
use crate::group::coordinator::{self, FetchedOffset};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use std::rc::Rc;

type Fetched = (i16, Vec<(String, Vec<FetchedOffset>)>);

async fn fetch_one(
    shard: &Rc<Services>,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Fetched {
    let (g, t) = (group.clone(), topics.clone());
    shard
        .on_group_shard(&group, move |s| {
            coordinator::fetch_offsets_stable(s, g, t, require_stable)
        })
        .await
        .unwrap_or_else(|| (errors::COORDINATOR_NOT_AVAILABLE, Vec::new()))
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let v = ctx.api_version;
    let req: OffsetFetchRequest = decode(body, v)?;
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (code, result) =
                fetch_one(&shard, g.group_id.0.to_string(), topics, req.require_stable).await;
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
        let topics = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let (code, result) = fetch_one(
            &shard,
            req.group_id.0.to_string(),
            topics,
            v >= 7 && req.require_stable,
        )
        .await;
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
