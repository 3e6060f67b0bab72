//! AddPartitionsToTxn: v0–v3 (a producer's): the partitions join its open transaction at the
//! transaction coordinator (`crate::txn`). Unknown partitions are refused and the others
//! answered OPERATION_NOT_ATTEMPTED, as Kafka does. v4 (brokers only, KIP-890): several
//! transactions in one request, each adding partitions or verifying them (`verify_only`).

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use std::rc::Rc;

const OPERATION_NOT_ATTEMPTED: i16 = 55;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: AddPartitionsToTxnRequest = decode(body, ctx.api_version)?;
    if ctx.api_version >= 4 {
        return handle_batched(shard, ctx, req).await;
    }
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

/// AddPartitionsToTxn v4+ (KIP-890): transactions batched in one request, each adding its
/// partitions or, with `verify_only`, asking whether they are in its open transaction. Only
/// brokers send it (a partition leader verifying a transactional write): anyone else gets
/// CLUSTER_AUTHORIZATION_FAILED, as Kafka answers without ClusterAction.
async fn handle_batched(
    shard: Rc<Services>,
    ctx: RequestContext,
    req: AddPartitionsToTxnRequest,
) -> HandlerResult {
    let mut resp = AddPartitionsToTxnResponse::default();
    if ctx.broker.is_none() {
        resp.error_code = errors::CLUSTER_AUTHORIZATION_FAILED;
        return ctx.encode(&resp).map(Some);
    }
    for t in req.transactions {
        let id = t.transactional_id.0.to_string();
        let parts: Vec<(String, i32)> = t
            .topics
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(|p| (tp.name.0.to_string(), *p)))
            .collect();
        let (pid, epoch, verify_only) = (t.producer_id.0, t.producer_epoch, t.verify_only);
        let unknown = parts.iter().any(|(topic, p)| {
            topic == crate::txn::TXN_TOPIC
                || !shard.with_image(|i| i.partition(topic, *p).is_some())
        });
        let codes: Vec<i16> = if unknown && !verify_only {
            parts
                .iter()
                .map(|(topic, p)| {
                    if topic == crate::txn::TXN_TOPIC
                        || !shard.with_image(|i| i.partition(topic, *p).is_some())
                    {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        OPERATION_NOT_ATTEMPTED
                    }
                })
                .collect()
        } else {
            let n = parts.len();
            let (_, owner) = crate::txn::route(&shard, &id);
            let ask = parts.clone();
            let id2 = id.clone();
            shard
                .run_on(owner, move |s| async move {
                    if verify_only {
                        crate::txn::coordinator::verify(&s, id2, pid, epoch, ask)
                            .await
                            .unwrap_or_else(|code| vec![code; n])
                    } else {
                        let code =
                            crate::txn::coordinator::add_partitions(&s, id2, pid, epoch, ask).await;
                        vec![code; n]
                    }
                })
                .await
                .unwrap_or_else(|| vec![errors::UNKNOWN_SERVER_ERROR; n])
        };
        let mut r = AddPartitionsToTxnResult::default();
        r.transactional_id = t.transactional_id.clone();
        let mut codes = codes.into_iter();
        for tp in &t.topics {
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = tp.name.clone();
            tr.results_by_partition = tp
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR);
                    pr
                })
                .collect();
            r.topic_results.push(tr);
        }
        resp.results_by_transaction.push(r);
    }
    ctx.encode(&resp).map(Some)
}
