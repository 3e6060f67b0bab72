//! DescribeCluster: brokers (fenced ones marked), controller and cluster id.

use super::str_bytes;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::ResourceType;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeClusterRequest = decode(body, ctx.api_version)?;
    if !crate::acl::cluster_allowed(&shard, &ctx, chronik_raft::acl::Operation::Describe) {
        let mut resp = DescribeClusterResponse::default();
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    let img = shard.image();
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&img.cluster_id);
    resp.controller_id = BrokerId(img.controller_id.unwrap_or(-1));
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = if req.include_cluster_authorized_operations {
        let subject = crate::acl::Subject::of(&shard, &ctx);
        subject.operations(&img, ResourceType::Cluster, crate::acl::CLUSTER_NAME)
    } else {
        crate::acl::OPERATIONS_NOT_REQUESTED
    };
    resp.brokers = img
        .brokers
        .values()
        .filter_map(|b| {
            let (host, port) = super::address_on(ctx.listener.as_deref(), b)?;
            let mut d = DescribeClusterBroker::default();
            d.broker_id = BrokerId(b.id);
            d.host = str_bytes(host);
            d.port = i32::from(port);
            d.rack = b.rack.as_deref().map(str_bytes);
            d.is_fenced = b.fenced;
            Some(d)
        })
        .collect();
    ctx.encode(&resp).map(Some)
}
