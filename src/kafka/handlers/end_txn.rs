//! EndTxn: commits or aborts the producer's open transaction at its coordinator (answered once
//! the Prepare state is persisted; the markers follow, see `crate::txn::markers`).

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: EndTxnRequest = decode(body, ctx.api_version)?;
    let id = req.transactional_id.0.to_string();
    let mut resp = EndTxnResponse::default();
    resp.producer_id = req.producer_id;
    resp.producer_epoch = req.producer_epoch;
    // WRITE on the transactional id, as Kafka.
    if !crate::acl::transactional_id_allowed(&shard, &ctx, &id) {
        resp.error_code = errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    resp.error_code =
        crate::txn::on_coordinator(&shard, &id.clone(), ctx.api_version, move |s| async move {
            crate::txn::coordinator::end_txn(&s, id, pid, epoch, commit).await
        })
        .await;
    ctx.encode(&resp).map(Some)
}
