//! JoinGroup: parks until the join phase of the group's rebalance ends.

use super::str_bytes;
use crate::group::coordinator::{self, JoinParams};
use crate::group::state::JoinResult;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let v = ctx.api_version;
    let req: JoinGroupRequest = decode(body, v)?;
    if !crate::acl::group_read_allowed(&shard, &ctx, &req.group_id.0) {
        let mut resp = JoinGroupResponse::default();
        resp.error_code = errors::GROUP_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let group_id = req.group_id.0.to_string();
    let params = JoinParams {
        group_id: group_id.clone(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.client_host(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member: v >= 4,
    };
    let member_id = params.member_id.clone();
    let r = shard
        .on_group_shard(&group_id, move |s| coordinator::join(s, params))
        .await
        .unwrap_or_else(|| JoinResult::error(errors::COORDINATOR_NOT_AVAILABLE, &member_id));
    let mut resp = JoinGroupResponse::default();
    resp.error_code = r.error;
    resp.generation_id = r.generation;
    resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
    // Before v7 the protocol name is not nullable.
    resp.protocol_name = match r.protocol.as_deref() {
        Some(p) => Some(str_bytes(p)),
        None if v < 7 => Some(str_bytes("")),
        None => None,
    };
    resp.leader = str_bytes(&r.leader);
    resp.skip_assignment = r.skip_assignment && v >= 9;
    resp.member_id = str_bytes(&r.member_id);
    for (id, inst, meta) in r.members {
        let mut m = JoinGroupResponseMember::default();
        m.member_id = str_bytes(&id);
        if v >= 5 {
            m.group_instance_id = inst.as_deref().map(str_bytes);
        }
        m.metadata = meta;
        resp.members.push(m);
    }
    ctx.encode(&resp).map(Some)
}
