//! ListGroups: the groups this broker coordinates, gathered from every shard.

use super::str_bytes;
use crate::group::coordinator;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: ListGroupsRequest = decode(body, ctx.api_version)?;
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut resp = ListGroupsResponse::default();
    // As Kafka: DESCRIBE on the cluster lists every group, else those the client may describe.
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let all = shard.with_image(|i| subject.may_on_cluster(i, Operation::Describe));
    for id in 0..shard.nshards {
        let groups = shard
            .run_on(id, |s| async move { coordinator::list_local(&s.groups) })
            .await
            .unwrap_or_default();
        for (g, protocol_type, state) in groups {
            if !all
                && !shard
                    .with_image(|i| subject.may(i, Operation::Describe, ResourceType::Group, &g))
            {
                continue;
            }
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            // Every group here is a classic group.
            if !types.is_empty() && !types.iter().any(|t| t == "classic") {
                continue;
            }
            let mut lg = ListedGroup::default();
            lg.group_id = GroupId(str_bytes(&g));
            lg.protocol_type = str_bytes(&protocol_type);
            lg.group_state = str_bytes(state);
            lg.group_type = str_bytes("classic");
            resp.groups.push(lg);
        }
    }
    ctx.encode(&resp).map(Some)
}
