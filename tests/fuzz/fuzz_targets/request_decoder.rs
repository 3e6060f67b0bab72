//! A Kafka request frame (what follows the 4-byte length prefix) through the broker's own
//! decode path: `parse_header`, the dispatch table's version check, then the body decoder the
//! API's handler calls (kafka-protocol's, bounded by our patch, or the hand-written Produce
//! parse) and the in-place checks a handler runs on what it decoded (record batches of a
//! Produce, consumer subscriptions of a JoinGroup).
//!
//! Asserts: nothing panics or allocates past libFuzzer's limit; the hand-written Produce parse
//! agrees with kafka-protocol's decoder whenever both accept a frame.

#![no_main]

use bytes::{Bytes, BytesMut};
use chronik::kafka::handlers::{api_versions, produce};
use chronik::kafka::{decode, dispatch, parse_header, RequestContext};
use chronik_storage::batch_validation::Limits;
use chronik_storage::ValidBatch;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut frame = BytesMut::from(data);
    let Ok(ctx) = parse_header(&mut frame, None) else {
        return;
    };
    // As `dispatch::dispatch`: only keys and versions in the table reach a handler.
    let Some(spec) = dispatch::find(ctx.api_key) else {
        return;
    };
    if ctx.api_version < spec.min || ctx.api_version > spec.max {
        if ctx.api_key == ApiKey::ApiVersions {
            api_versions::unsupported(&ctx).expect("the UNSUPPORTED_VERSION answer encodes");
        }
        return;
    }
    body(&ctx, frame);
});

/// The body decoder each handler in `src/kafka/handlers/` calls for its API.
fn body(ctx: &RequestContext, body: BytesMut) {
    let v = ctx.api_version;
    match ctx.api_key {
        ApiKey::Produce => {
            let _ = produce_body(body, v);
        }
        ApiKey::Fetch => check::<FetchRequest>(body, v),
        ApiKey::ListOffsets => check::<ListOffsetsRequest>(body, v),
        ApiKey::Metadata => check::<MetadataRequest>(body, v),
        ApiKey::CreateTopics => check::<CreateTopicsRequest>(body, v),
        ApiKey::DeleteTopics => check::<DeleteTopicsRequest>(body, v),
        ApiKey::CreatePartitions => check::<CreatePartitionsRequest>(body, v),
        ApiKey::DescribeConfigs => check::<DescribeConfigsRequest>(body, v),
        ApiKey::IncrementalAlterConfigs => check::<IncrementalAlterConfigsRequest>(body, v),
        ApiKey::DescribeCluster => check::<DescribeClusterRequest>(body, v),
        ApiKey::InitProducerId => check::<InitProducerIdRequest>(body, v),
        ApiKey::OffsetForLeaderEpoch => check::<OffsetForLeaderEpochRequest>(body, v),
        ApiKey::DeleteRecords => check::<DeleteRecordsRequest>(body, v),
        ApiKey::FindCoordinator => check::<FindCoordinatorRequest>(body, v),
        ApiKey::JoinGroup => {
            if let Some(req) = decoded::<JoinGroupRequest>(body, v) {
                // The coordinator reads the topics of consumer subscriptions.
                for p in &req.protocols {
                    let _ = chronik::group::state::parse_subscription_topics(&p.metadata);
                }
            }
        }
        ApiKey::SyncGroup => check::<SyncGroupRequest>(body, v),
        ApiKey::Heartbeat => check::<HeartbeatRequest>(body, v),
        ApiKey::LeaveGroup => check::<LeaveGroupRequest>(body, v),
        ApiKey::OffsetCommit => check::<OffsetCommitRequest>(body, v),
        ApiKey::OffsetFetch => check::<OffsetFetchRequest>(body, v),
        ApiKey::ListGroups => check::<ListGroupsRequest>(body, v),
        ApiKey::DescribeGroups => check::<DescribeGroupsRequest>(body, v),
        ApiKey::DeleteGroups => check::<DeleteGroupsRequest>(body, v),
        ApiKey::OffsetDelete => check::<OffsetDeleteRequest>(body, v),
        ApiKey::ListPartitionReassignments => check::<ListPartitionReassignmentsRequest>(body, v),
        ApiKey::AddPartitionsToTxn => check::<AddPartitionsToTxnRequest>(body, v),
        ApiKey::AddOffsetsToTxn => check::<AddOffsetsToTxnRequest>(body, v),
        ApiKey::EndTxn => check::<EndTxnRequest>(body, v),
        ApiKey::TxnOffsetCommit => check::<TxnOffsetCommitRequest>(body, v),
        ApiKey::WriteTxnMarkers => check::<WriteTxnMarkersRequest>(body, v),
        ApiKey::DescribeTransactions => check::<DescribeTransactionsRequest>(body, v),
        ApiKey::ListTransactions => check::<ListTransactionsRequest>(body, v),
        // ApiVersions and the SASL APIs answer without reading the body.
        _ => {}
    }
}

fn check<T: Decodable>(body: BytesMut, v: i16) {
    let _ = decoded::<T>(body, v);
}

/// Decodes as the handler does. (No encode/decode round trip: kafka-protocol re-encodes an
/// unknown tagged field with a tag of 2^31 or more wrongly, which the broker never does, as it
/// never re-encodes a request.)
fn decoded<T: Decodable>(body: BytesMut, v: i16) -> Option<T> {
    decode(body, v).ok()
}

/// Produce: the hand-written zero-copy parse, checked against kafka-protocol's decoder, then
/// each partition's batch through the validation the handler runs before routing it.
fn produce_body(body: BytesMut, v: i16) -> Option<()> {
    let reference = ProduceRequest::decode(&mut Bytes::copy_from_slice(&body), v).ok();
    let parsed = produce::parse(body, v).ok()?;
    if let Some(r) = reference {
        assert_eq!(
            parsed.transactional_id.as_deref(),
            r.transactional_id.as_deref().map(|s| s.as_str())
        );
        assert_eq!(parsed.acks, r.acks);
        assert_eq!(parsed.timeout_ms, r.timeout_ms);
        assert_eq!(parsed.topics.len(), r.topic_data.len());
        for (t, rt) in parsed.topics.iter().zip(&r.topic_data) {
            assert_eq!(t.name.as_str(), rt.name.as_str());
            assert_eq!(t.partitions.len(), rt.partition_data.len());
            for (p, rp) in t.partitions.iter().zip(&rt.partition_data) {
                assert_eq!(p.index, rp.index);
                assert_eq!(p.records.as_deref(), rp.records.as_deref());
            }
        }
    }
    for t in parsed.topics {
        for p in t.partitions {
            if let Some(batch) = p.records.filter(|r| !r.is_empty()) {
                let _ = ValidBatch::from_client(batch, &Limits::default());
            }
        }
    }
    Some(())
}
