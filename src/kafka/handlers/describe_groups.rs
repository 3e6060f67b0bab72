//! DescribeGroups: state, protocol and members (with metadata and assignment when stable).

use super::str_bytes;
use crate::group::coordinator::{self, Described};
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeGroupsRequest = decode(body, ctx.api_version)?;
    let mut resp = DescribeGroupsResponse::default();
    let subject = crate::acl::Subject::of(&shard, &ctx);
    for gid in &req.groups {
        let group = gid.0.to_string();
        let (may, ops) = shard.with_image(|i| {
            (
                subject.may(i, Operation::Describe, ResourceType::Group, &group),
                subject.operations(i, ResourceType::Group, &group),
            )
        });
        if !may {
            let mut dg = DescribedGroup::default();
            dg.group_id = GroupId(gid.0.clone());
            dg.error_code = errors::GROUP_AUTHORIZATION_FAILED;
            dg.authorized_operations = crate::acl::OPERATIONS_NOT_REQUESTED;
            resp.groups.push(dg);
            continue;
        }
        let g = group.clone();
        let d = shard
            .on_group_shard(&group, move |s| coordinator::describe(s, g))
            .await
            .unwrap_or(Described {
                error: errors::COORDINATOR_NOT_AVAILABLE,
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        let mut dg = DescribedGroup::default();
        dg.group_id = GroupId(gid.0.clone());
        dg.error_code = d.error;
        dg.group_state = str_bytes(d.state);
        dg.protocol_type = str_bytes(&d.protocol_type);
        dg.protocol_data = str_bytes(&d.protocol);
        dg.authorized_operations = if req.include_authorized_operations {
            ops
        } else {
            crate::acl::OPERATIONS_NOT_REQUESTED
        };
        for m in d.members {
            let mut dm = DescribedGroupMember::default();
            dm.member_id = str_bytes(&m.member_id);
            dm.group_instance_id = m.instance_id.as_deref().map(str_bytes);
            dm.client_id = str_bytes(&m.client_id);
            dm.client_host = str_bytes(&m.client_host);
            dm.member_metadata = m.metadata;
            dm.member_assignment = m.assignment;
            dg.members.push(dm);
        }
        resp.groups.push(dg);
    }
    ctx.encode(&resp).map(Some)
}
