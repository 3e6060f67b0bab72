//! One table from API key to handler and the versions we serve.

use super::handlers::*;
use super::{ProtocolError, RequestContext, Response};
use crate::services::Services;
use crate::shard::LocalBoxFuture;
use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use std::rc::Rc;

/// A response frame, or None for requests that get no answer (Produce with acks=0).
pub type HandlerResult = Result<Option<BytesMut>, ProtocolError>;
/// What the connection writer gets: handlers return a `BytesMut` frame or, where it saves a
/// copy (Fetch), a `Response` of pieces.
pub type DispatchResult = Result<Option<Response>, ProtocolError>;
pub type HandlerFn = fn(Rc<Services>, RequestContext, BytesMut) -> LocalBoxFuture<DispatchResult>;

pub struct ApiSpec {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub handler: HandlerFn,
}

macro_rules! api {
    ($key:ident, $min:expr, $max:expr, $module:ident :: $f:ident) => {
        ApiSpec {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            handler: |s, c, b| {
                Box::pin(async move { $module::$f(s, c, b).await.map(|r| r.map(Response::from)) })
            },
        }
    };
    ($key:ident, $min:expr, $max:expr, $module:ident) => {
        ApiSpec {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            handler: |s, c, b| {
                Box::pin(async move {
                    $module::handle(s, c, b)
                        .await
                        .map(|r| r.map(Response::from))
                })
            },
        }
    };
}

pub static APIS: &[ApiSpec] = &[
    api!(Produce, 3, 13, produce),
    api!(Fetch, 4, 18, fetch),
    api!(ListOffsets, 1, 10, list_offsets),
    api!(Metadata, 0, 13, metadata),
    api!(ApiVersions, 0, 4, api_versions),
    api!(CreateTopics, 2, 7, create_topics),
    api!(DeleteTopics, 1, 6, delete_topics),
    api!(CreatePartitions, 0, 3, create_partitions),
    api!(DescribeConfigs, 1, 4, describe_configs),
    api!(IncrementalAlterConfigs, 0, 1, alter_configs),
    api!(AlterConfigs, 0, 2, alter_configs::handle_legacy),
    api!(DescribeCluster, 0, 1, describe_cluster),
    api!(InitProducerId, 0, 4, init_producer_id),
    api!(OffsetForLeaderEpoch, 2, 4, offset_for_leader_epoch),
    api!(DeleteRecords, 0, 2, delete_records),
    api!(SaslHandshake, 0, 1, sasl),
    api!(SaslAuthenticate, 0, 2, sasl),
    api!(FindCoordinator, 0, 4, find_coordinator),
    api!(JoinGroup, 0, 9, join_group),
    api!(SyncGroup, 0, 5, sync_group),
    api!(Heartbeat, 0, 4, heartbeat),
    api!(LeaveGroup, 0, 5, leave_group),
    api!(OffsetCommit, 2, 9, offset_commit),
    api!(OffsetFetch, 1, 9, offset_fetch),
    api!(ListGroups, 0, 5, list_groups),
    api!(DescribeGroups, 0, 5, describe_groups),
    api!(DeleteGroups, 0, 2, delete_groups),
    api!(OffsetDelete, 0, 0, offset_delete),
    api!(ListPartitionReassignments, 0, 0, list_reassignments),
    api!(DescribeLogDirs, 1, 4, describe_log_dirs),
    api!(ElectLeaders, 0, 2, elect_leaders),
    api!(AlterPartitionReassignments, 0, 1, alter_reassignments),
    api!(DescribeQuorum, 0, 2, describe_quorum),
    api!(DescribeProducers, 0, 0, describe_producers),
    api!(CreateAcls, 1, 3, acls::create),
    api!(DescribeAcls, 1, 3, acls::describe),
    api!(DeleteAcls, 1, 3, acls::delete),
    api!(AddPartitionsToTxn, 0, 4, add_partitions_to_txn),
    api!(AddOffsetsToTxn, 0, 3, add_offsets_to_txn),
    api!(EndTxn, 0, 3, end_txn),
    api!(TxnOffsetCommit, 0, 3, txn_offset_commit),
    api!(WriteTxnMarkers, 0, 1, write_txn_markers),
    api!(DescribeTransactions, 0, 0, describe_transactions),
    api!(ListTransactions, 0, 1, list_transactions),
    api!(
        DescribeUserScramCredentials,
        0,
        0,
        scram_credentials::handle_describe
    ),
    api!(
        AlterUserScramCredentials,
        0,
        0,
        scram_credentials::handle_alter
    ),
];

pub fn find(key: ApiKey) -> Option<&'static ApiSpec> {
    APIS.iter().find(|a| a.key == key)
}

/// Serves one request frame (header already parsed), and counts it for the metrics.
pub async fn dispatch(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> DispatchResult {
    let (key, start) = (ctx.api_key as i16, std::time::Instant::now());
    let r = serve(shard.clone(), ctx, body).await;
    let outcome = match &r {
        Ok(_) => 0,
        Err(ProtocolError::UnsupportedVersion { .. } | ProtocolError::UnknownApiKey(_)) => 1,
        Err(ProtocolError::Malformed(_)) => 2,
        Err(ProtocolError::Encode(_)) => 3,
    };
    shard.metrics.request(key, start.elapsed(), outcome);
    r
}

async fn serve(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> DispatchResult {
    let Some(spec) = find(ctx.api_key) else {
        return Err(ProtocolError::UnknownApiKey(ctx.api_key as i16));
    };
    if ctx.api_version < spec.min || ctx.api_version > spec.max {
        if ctx.api_key == ApiKey::ApiVersions {
            // Kafka answers an ApiVersions it cannot parse with v0 UNSUPPORTED_VERSION and the
            // list, so the client can pick a version.
            return api_versions::unsupported(&ctx).map(|f| Some(f.into()));
        }
        return Err(ProtocolError::UnsupportedVersion {
            key: ctx.api_key as i16,
            version: ctx.api_version,
        });
    }
    let (key, version, corr) = (ctx.api_key, ctx.api_version, ctx.correlation_id);
    let r = (spec.handler)(shard, ctx, body).await;
    // Off by default (RUST_LOG=chronik=trace): which requests a client sent and got answered.
    tracing::trace!(?key, version, corr, ok = r.is_ok(), "handled");
    r
}
