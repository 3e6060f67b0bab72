//! SyncGroup: the leader hands in the assignment; every member gets its own.

use super::str_bytes;
use crate::group::coordinator::{self, SyncParams};
use crate::group::state::SyncResult;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: SyncGroupRequest = decode(body, ctx.api_version)?;
    if !crate::acl::group_read_allowed(&shard, &ctx, &req.group_id.0) {
        let mut resp = SyncGroupResponse::default();
        resp.error_code = errors::GROUP_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let group_id = req.group_id.0.to_string();
    let params = SyncParams {
        group_id: group_id.clone(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let r = shard
        .on_group_shard(&group_id, move |s| coordinator::sync(s, params))
        .await
        .unwrap_or_else(|| SyncResult::error(errors::COORDINATOR_NOT_AVAILABLE));
    let mut resp = SyncGroupResponse::default();
    resp.error_code = r.error;
    resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
    resp.protocol_name = r.protocol.as_deref().map(str_bytes);
    resp.assignment = r.assignment;
    ctx.encode(&resp).map(Some)
}
