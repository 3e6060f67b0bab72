//! AddPartitionsToTxn (v0–v3, a producer's): the partitions join its open transaction at the
//! transaction coordinator (`crate::txn`). Unknown partitions are refused and the others
//! answered OPERATION_NOT_ATTEMPTED, as Kafka does.

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use std::rc::Rc;

const OPERATION_NOT_ATTEMPTED: i16 = 55;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: AddPartitionsToTxnRequest = decode(body, ctx.api_version)?;
    let id = req.v3_and_below_transactional_id.0.to_string();
    let (pid, epoch) = (
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
    );
    let wanted: Vec<(String, Vec<i32>)> = req
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.clone()))
        .collect();
    // Partitions that do not exist (or internal ones a producer may not write) are refused.
    let unknown = |t: &str, p: i32| {
        t == crate::txn::TXN_TOPIC
            || t == crate::group::OFFSETS_TOPIC
            || !shard.with_image(|i| i.partition(t, p).is_some())
    };
    let any_unknown = wanted
        .iter()
        .any(|(t, ps)| ps.iter().any(|p| unknown(t, *p)));
    // WRITE on the transactional id, and on each topic, as Kafka.
    let may_transact = crate::acl::transactional_id_allowed(&shard, &ctx, &id);
    let may_write =
        |t: &str| crate::acl::allowed(&shard, &ctx, Operation::Write, ResourceType::Topic, t);
    let any_refused = wanted.iter().any(|(t, _)| !may_write(t));
    // None: not asked (a partition was refused, the rest are not attempted).
    let coordinator_code = if !may_transact {
        Some(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if any_unknown || any_refused {
        None
    } else {
        let parts: Vec<(String, i32)> = wanted
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        let code =
            crate::txn::on_coordinator(&shard, &id.clone(), ctx.api_version, move |s| async move {
                crate::txn::coordinator::add_partitions(&s, id, pid, epoch, parts).await
            })
            .await;
        Some(code)
    };
    let code_for = |t: &str, p: i32| match coordinator_code {
        Some(code) => code,
        None if !may_write(t) => errors::TOPIC_AUTHORIZATION_FAILED,
        None if unknown(t, p) => errors::UNKNOWN_TOPIC_OR_PARTITION,
        None => OPERATION_NOT_ATTEMPTED,
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    resp.results_by_topic_v3_and_below = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let mut r = AddPartitionsToTxnTopicResult::default();
            r.name = t.name.clone();
            r.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = code_for(t.name.0.as_str(), *p);
                    pr
                })
                .collect();
            r
        })
        .collect();
    ctx.encode(&resp).map(Some)
}
