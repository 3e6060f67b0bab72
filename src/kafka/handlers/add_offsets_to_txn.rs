//! AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the producer's open
//! transaction, so the transaction's marker reaches the offsets it commits (TxnOffsetCommit).

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: AddOffsetsToTxnRequest = decode(body, ctx.api_version)?;
    let mut resp = AddOffsetsToTxnResponse::default();
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        resp.error_code = errors::INVALID_GROUP_ID;
        return ctx.encode(&resp).map(Some);
    }
    // WRITE on the transactional id and READ on the group, as Kafka.
    let id = req.transactional_id.0.to_string();
    if !crate::acl::transactional_id_allowed(&shard, &ctx, &id) {
        resp.error_code = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    if !crate::acl::allowed(&shard, &ctx, Operation::Read, ResourceType::Group, &group) {
        resp.error_code = errors::GROUP_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let ensured = super::topics::ensure_offsets_topic(&shard).await;
    if ensured != errors::NONE {
        resp.error_code = ensured;
        return ctx.encode(&resp).map(Some);
    }
    let (index, _) = crate::group::route(&shard.groups, &group);
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let parts = vec![(crate::group::OFFSETS_TOPIC.to_string(), index)];
    resp.error_code =
        crate::txn::on_coordinator(&shard, &id.clone(), ctx.api_version, move |s| async move {
            crate::txn::coordinator::add_partitions(&s, id, pid, epoch, parts).await
        })
        .await;
    ctx.encode(&resp).map(Some)
}
