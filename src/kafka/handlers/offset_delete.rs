//! OffsetDelete: removes committed offsets of topics the group no longer subscribes to.

use super::topic_name;
use crate::group::coordinator;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: OffsetDeleteRequest = decode(body, ctx.api_version)?;
    let group = req.group_id.0.to_string();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    if !shard.with_image(|i| subject.may(i, Operation::Delete, ResourceType::Group, &group)) {
        let mut resp = OffsetDeleteResponse::default();
        resp.error_code = errors::GROUP_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    // Topics the client may not READ are answered TOPIC_AUTHORIZATION_FAILED and not deleted.
    let (topics, refused): (Vec<_>, Vec<_>) = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .partition(|(t, _)| {
            shard.with_image(|i| subject.may(i, Operation::Read, ResourceType::Topic, t))
        });
    let g = group.clone();
    let (code, mut result) = shard
        .on_group_shard(&group, move |s| coordinator::delete_offsets(s, g, topics))
        .await
        .unwrap_or((errors::COORDINATOR_NOT_AVAILABLE, Vec::new()));
    result.extend(refused.into_iter().map(|(t, ps)| {
        let codes = ps
            .into_iter()
            .map(|p| (p, errors::TOPIC_AUTHORIZATION_FAILED))
            .collect();
        (t, codes)
    }));
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
