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

/// Markers written at once for one request (a peer's request may name any number of
/// partitions).
const PARALLEL_WRITES: usize = 64;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: WriteTxnMarkersRequest = decode(body, ctx.api_version)?;
    let from_broker = ctx.broker.is_some();
    let mut resp = WriteTxnMarkersResponse::default();
    // The partitions' markers are written at once (each on its owner shard), up to
    // `PARALLEL_WRITES` at a time; the answer lists them in the request's order.
    for m in req.markers {
        let spec = MarkerSpec {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        let wanted: Vec<(usize, i32)> = m
            .topics
            .iter()
            .enumerate()
            .flat_map(|(ti, t)| t.partition_indexes.iter().map(move |p| (ti, *p)))
            .collect();
        let mut codes = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(PARALLEL_WRITES) {
            let mut writes = Vec::with_capacity(chunk.len());
            for &(ti, p) in chunk {
                let topic = m.topics[ti].name.0.as_str();
                writes.push(if !from_broker {
                    Err(errors::CLUSTER_AUTHORIZATION_FAILED)
                } else if shard.with_image(|i| i.partition(topic, p).is_none()) {
                    Err(errors::UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    let (s, tp) = (shard.clone(), TopicPartition::new(topic, p));
                    Ok(glommio::spawn_local(async move {
                        write_local(&s, tp, spec).await
                    }))
                });
            }
            for w in writes {
                codes.push(match w {
                    Ok(task) => task.await,
                    Err(code) => code,
                });
            }
        }
        let mut codes = codes.into_iter();
        for t in m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            for p in t.partition_indexes {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR);
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            mr.topics.push(tr);
        }
        resp.markers.push(mr);
    }
    ctx.encode(&resp).map(Some)
}
