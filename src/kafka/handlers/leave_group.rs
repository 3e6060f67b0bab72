//! LeaveGroup: one member (v0–2) or a batch of members by id or group.instance.id (v3+).

use super::str_bytes;
use crate::group::coordinator;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let v = ctx.api_version;
    let req: LeaveGroupRequest = decode(body, v)?;
    if !crate::acl::group_read_allowed(&shard, &ctx, &req.group_id.0) {
        let mut resp = LeaveGroupResponse::default();
        resp.error_code = errors::GROUP_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let group_id = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let (g, ms) = (group_id.clone(), members.clone());
    let (top, codes) = shard
        .on_group_shard(&group_id, move |s| coordinator::leave(s, g, ms))
        .await
        .unwrap_or_else(|| {
            let c = errors::COORDINATOR_NOT_AVAILABLE;
            (c, vec![c; members.len()])
        });
    let mut resp = LeaveGroupResponse::default();
    if v >= 3 {
        resp.error_code = top;
        for ((id, inst), code) in members.iter().zip(codes) {
            let mut m = MemberResponse::default();
            m.member_id = str_bytes(id);
            m.group_instance_id = inst.as_deref().map(str_bytes);
            m.error_code = code;
            resp.members.push(m);
        }
    } else {
        resp.error_code = if top != errors::NONE {
            top
        } else {
            codes.first().copied().unwrap_or(errors::NONE)
        };
    }
    ctx.encode(&resp).map(Some)
}
