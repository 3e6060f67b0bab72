//! OffsetDelete: removes committed offsets of topics the group no longer subscribes to.

use super::topic_name;
use crate::group::coordinator;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: OffsetDeleteRequest = decode(body, ctx.api_version)?;
    let group = req.group_id.0.to_string();
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let g = group.clone();
    let (code, result) = shard
        .on_group_shard(&group, move |s| coordinator::delete_offsets(s, g, topics))
        .await
        .unwrap_or((errors::COORDINATOR_NOT_AVAILABLE, Vec::new()));
    let mut resp = OffsetDeleteResponse::default();
    resp.error_code = code;
    for (t, parts) in result {
        let mut tr = OffsetDeleteResponseTopic::default();
        tr.name = topic_name(&t);
        for (p, c) in parts {
            let mut pr = OffsetDeleteResponsePartition::default();
            pr.partition_index = p;
            pr.error_code = c;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
