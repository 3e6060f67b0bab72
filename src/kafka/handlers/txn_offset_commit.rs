//! TxnOffsetCommit: offsets committed in a transaction, held by the group coordinator until
//! the transaction's marker reaches the offsets partition (`group::txn_offsets`).

use super::topic_name;
use crate::group::coordinator::{self, TxnCommitParams};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: TxnOffsetCommitRequest = decode(body, ctx.api_version)?;
    let group_id = req.group_id.0.to_string();
    let params = TxnCommitParams {
        group_id: group_id.clone(),
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        generation: if ctx.api_version >= 3 {
            req.generation_id
        } else {
            -1
        },
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        topics: super::commit_partitions!(req.topics),
    };
    // WRITE on the transactional id, READ on the group and on each topic, as Kafka.
    let refusal =
        if group_id.is_empty() {
            Some(errors::INVALID_GROUP_ID)
        } else if !crate::acl::transactional_id_allowed(&shard, &ctx, &req.transactional_id.0) {
            Some(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else if !crate::acl::allowed(
            &shard,
            &ctx,
            Operation::Read,
            ResourceType::Group,
            &group_id,
        ) {
            Some(errors::GROUP_AUTHORIZATION_FAILED)
        } else if params.topics.iter().any(|(t, _)| {
            !crate::acl::allowed(&shard, &ctx, Operation::Read, ResourceType::Topic, t)
        }) {
            Some(errors::TOPIC_AUTHORIZATION_FAILED)
        } else {
            None
        };
    let results = if let Some(code) = refusal {
        params
            .topics
            .iter()
            .map(|(t, ps)| {
                let codes = ps.iter().map(|p| (p.partition, code)).collect();
                (t.clone(), codes)
            })
            .collect()
    } else {
        shard
            .on_group_shard(&group_id, move |g| coordinator::txn_commit(g, params))
            .await
            .unwrap_or_default()
    };
    let mut resp = TxnOffsetCommitResponse::default();
    resp.topics = results
        .into_iter()
        .map(|(t, codes)| {
            let mut rt = TxnOffsetCommitResponseTopic::default();
            rt.name = topic_name(&t);
            rt.partitions = codes
                .into_iter()
                .map(|(p, c)| {
                    let mut rp = TxnOffsetCommitResponsePartition::default();
                    rp.partition_index = p;
                    rp.error_code = c;
                    rp
                })
                .collect();
            rt
        })
        .collect();
    ctx.encode(&resp).map(Some)
}
