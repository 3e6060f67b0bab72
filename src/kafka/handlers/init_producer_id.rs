//! InitProducerId for idempotent producers: ids come from blocks the controller allocates, so
//! they are unique across the cluster; the shard hands them out from its current block.

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: InitProducerIdRequest = decode(body, ctx.api_version)?;
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) {
        // WRITE on the transactional id, as Kafka.
        if !crate::acl::transactional_id_allowed(&shard, &ctx, &id) {
            resp.error_code = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            return ctx.encode(&resp).map(Some);
        }
        // A transactional producer: its coordinator gives it the id and a bumped epoch.
        let timeout = req.transaction_timeout_ms;
        let (_, owner) = crate::txn::route(&shard, &id);
        let r = shard
            .run_on(owner, move |s| async move {
                crate::txn::coordinator::init_producer_id(&s, id, timeout).await
            })
            .await
            .unwrap_or(Err(errors::UNKNOWN_SERVER_ERROR));
        match r {
            Ok((pid, epoch)) => {
                resp.producer_id = ProducerId(pid);
                resp.producer_epoch = epoch;
            }
            Err(code) if code == errors::PRODUCER_FENCED && ctx.api_version < 4 => {
                resp.error_code = errors::INVALID_PRODUCER_EPOCH;
            }
            Err(code) => resp.error_code = code,
        }
        return ctx.encode(&resp).map(Some);
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic
    // (Kafka 2.8+).
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let may = shard.with_image(|i| {
        subject.may_on_cluster(i, Operation::IdempotentWrite)
            || subject.may_on_some(i, Operation::Write, ResourceType::Topic)
    });
    if !may {
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    if req.producer_id.0 >= 0 {
        // KIP-360: an existing idempotent producer bumps its epoch and keeps its id.
        if req.producer_epoch < i16::MAX - 1 {
            resp.producer_id = req.producer_id;
            resp.producer_epoch = req.producer_epoch + 1;
            return ctx.encode(&resp).map(Some);
        }
    }
    match shard.next_producer_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(code) => resp.error_code = code,
    }
    ctx.encode(&resp).map(Some)
}
