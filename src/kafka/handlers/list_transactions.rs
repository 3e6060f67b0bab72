//! ListTransactions (v0–v1): the transactional ids this broker coordinates, filtered by state,
//! producer id and (v1) how long they have been open. State filters Kafka does not know are
//! returned as unknown.

use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, RequestContext};
use crate::services::Services;
use crate::txn::state::TxnState;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: ListTransactionsRequest = decode(body, ctx.api_version)?;
    let known: Vec<&str> = (0..=7)
        .filter_map(TxnState::from_i8)
        .map(TxnState::name)
        .collect();
    let mut resp = ListTransactionsResponse::default();
    let mut states = Vec::new();
    for s in &req.state_filters {
        if known.contains(&s.as_str()) {
            states.push(s.to_string());
        } else {
            resp.unknown_state_filters.push(s.clone());
        }
    }
    // Only unknown states asked for: nothing can match.
    if states.is_empty() && !req.state_filters.is_empty() {
        return ctx.encode(&resp).map(Some);
    }
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let min_duration = if ctx.api_version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    // Only the transactional ids this client may DESCRIBE are listed, as Kafka.
    for id in 0..shard.nshards {
        let (states, pids) = (states.clone(), pids.clone());
        let found = shard
            .run_on(id, move |s| async move {
                crate::txn::coordinator::list_local(&s, &states, &pids, min_duration)
            })
            .await
            .unwrap_or_default();
        for (tid, pid, state) in found {
            if !crate::acl::allowed(
                &shard,
                &ctx,
                Operation::Describe,
                ResourceType::TransactionalId,
                &tid,
            ) {
                continue;
            }
            let mut st = TransactionState::default();
            st.transactional_id = TransactionalId(super::str_bytes(&tid));
            st.producer_id = ProducerId(pid);
            st.transaction_state = super::str_bytes(state);
            resp.transaction_states.push(st);
        }
    }
    ctx.encode(&resp).map(Some)
}
