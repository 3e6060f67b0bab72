//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use crate::group::coordinator;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: HeartbeatRequest = decode(body, ctx.api_version)?;
    if !crate::acl::group_read_allowed(&shard, &ctx, &req.group_id.0) {
        let mut resp = HeartbeatResponse::default();
        resp.error_code = errors::GROUP_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let group_id = req.group_id.0.to_string();
    let (g, generation) = (group_id.clone(), req.generation_id);
    let member = req.member_id.to_string();
    let inst = req.group_instance_id.as_ref().map(|s| s.to_string());
    let code = shard
        .on_group_shard(&group_id, move |s| {
            coordinator::heartbeat(s, g, generation, member, inst)
        })
        .await
        .unwrap_or(errors::COORDINATOR_NOT_AVAILABLE);
    let mut resp = HeartbeatResponse::default();
    resp.error_code = code;
    ctx.encode(&resp).map(Some)
}
