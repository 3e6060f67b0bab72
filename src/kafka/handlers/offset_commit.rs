//! OffsetCommit: written to `__consumer_offsets` with acks=all before it is answered.

use super::topic_name;
use crate::group::coordinator::{self, CommitParams};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{
    Operation,
    ResourceType::{Group, Topic},
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: OffsetCommitRequest = decode(body, ctx.api_version)?;
    let group_id = req.group_id.0.to_string();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let group_ok = shard.with_image(|i| subject.may(i, Operation::Read, Group, &group_id));
    let mut params = CommitParams {
        group_id: group_id.clone(),
        generation: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        topics: super::commit_partitions!(req.topics),
    };
    let fallback: Vec<(String, Vec<(i32, i16)>)> = params
        .topics
        .iter()
        .map(|(t, ps)| {
            let codes = ps
                .iter()
                .map(|p| (p.partition, errors::COORDINATOR_NOT_AVAILABLE))
                .collect();
            (t.clone(), codes)
        })
        .collect();
    // As Kafka: without READ on the group every partition is refused; without READ on a
    // topic, that topic's partitions.
    let (mut refused, mut result) = (Vec::new(), Vec::new());
    if group_ok {
        let (ok, not): (Vec<_>, Vec<_>) = std::mem::take(&mut params.topics)
            .into_iter()
            .partition(|(t, _)| shard.with_image(|i| subject.may(i, Operation::Read, Topic, t)));
        params.topics = ok;
        refused.extend(not.into_iter().map(|(t, ps)| {
            let codes = ps
                .iter()
                .map(|p| (p.partition, errors::TOPIC_AUTHORIZATION_FAILED))
                .collect();
            (t, codes)
        }));
        if !params.topics.is_empty() {
            result = shard
                .on_group_shard(&group_id, move |s| coordinator::commit(s, params))
                .await
                .unwrap_or(fallback);
        }
    } else {
        result = fallback
            .into_iter()
            .map(|(t, ps)| {
                let codes = ps
                    .into_iter()
                    .map(|(p, _)| (p, errors::GROUP_AUTHORIZATION_FAILED))
                    .collect();
                (t, codes)
            })
            .collect();
    }
    result.extend(refused);
    let mut resp = OffsetCommitResponse::default();
    for (t, codes) in result {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = topic_name(&t);
        for (p, code) in codes {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p;
            pr.error_code = code;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    ctx.encode(&resp).map(Some)
}
