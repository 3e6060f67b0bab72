//! WriteTxnMarkers: a transaction coordinator on another broker has this broker's partitions
//! append a transaction's markers. Only a connection that proved it is a broker of the
//! cluster (`net::broker_auth`) may: anyone else gets CLUSTER_AUTHORIZATION_FAILED on every
//! partition, as Kafka answers without ClusterAction.

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use crate::shard::TopicPartition;
use crate::txn::markers::{write_local, MarkerSpec};
use bytes::BytesMut;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: WriteTxnMarkersRequest = decode(body, ctx.api_version)?;
    let from_broker = ctx.broker.is_some();
    let mut resp = WriteTxnMarkersResponse::default();
    for m in req.markers {
        let spec = MarkerSpec {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        for t in m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            for p in t.partition_indexes {
                let code = if !from_broker {
                    errors::CLUSTER_AUTHORIZATION_FAILED
                } else if shard.with_image(|i| i.partition(t.name.0.as_str(), p).is_none()) {
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    write_local(&shard, TopicPartition::new(t.name.0.as_str(), p), spec).await
                };
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = code;
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            mr.topics.push(tr);
        }
        resp.markers.push(mr);
    }
    ctx.encode(&resp).map(Some)
}
