//! DeleteGroups: removes empty groups and their committed offsets.

use crate::group::coordinator;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DeleteGroupsRequest = decode(body, ctx.api_version)?;
    let mut resp = DeleteGroupsResponse::default();
    for gid in &req.groups_names {
        let group = gid.0.to_string();
        let g = group.clone();
        let code =
            if !crate::acl::allowed(&shard, &ctx, Operation::Delete, ResourceType::Group, &group) {
                errors::GROUP_AUTHORIZATION_FAILED
            } else {
                shard
                    .on_group_shard(&group, move |s| coordinator::delete_group(s, g))
                    .await
                    .unwrap_or(errors::COORDINATOR_NOT_AVAILABLE)
            };
        let mut r = DeletableGroupResult::default();
        r.group_id = GroupId(gid.0.clone());
        r.error_code = code;
        resp.results.push(r);
    }
    ctx.encode(&resp).map(Some)
}
