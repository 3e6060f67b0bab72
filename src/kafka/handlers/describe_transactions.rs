//! DescribeTransactions: the state of transactional ids this broker coordinates
//! (NOT_COORDINATOR for the others, TRANSACTIONAL_ID_NOT_FOUND for unknown ids).

use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::{decode, errors, RequestContext};
use crate::services::Services;
use bytes::BytesMut;
use chronik_raft::acl::{Operation, ResourceType};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};
use std::rc::Rc;

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req: DescribeTransactionsRequest = decode(body, ctx.api_version)?;
    let mut resp = DescribeTransactionsResponse::default();
    // DESCRIBE on each transactional id, as Kafka.
    for tid in req.transactional_ids {
        let id = tid.0.to_string();
        let (_, owner) = crate::txn::route(&shard, &id);
        let r = if crate::acl::allowed(
            &shard,
            &ctx,
            Operation::Describe,
            ResourceType::TransactionalId,
            &id,
        ) {
            shard
                .run_on(owner, move |s| async move {
                    crate::txn::coordinator::describe(&s, id).await
                })
                .await
                .unwrap_or(Err(errors::UNKNOWN_SERVER_ERROR))
        } else {
            Err(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        };
        let mut st = TransactionState::default();
        st.transactional_id = tid;
        st.producer_id = ProducerId(-1);
        st.producer_epoch = -1;
        st.transaction_start_time_ms = -1;
        st.transaction_state = super::str_bytes("");
        match r {
            Ok(m) => {
                st.transaction_state = super::str_bytes(m.state.name());
                st.transaction_timeout_ms = m.timeout_ms;
                st.transaction_start_time_ms = m.start_ms;
                st.producer_id = ProducerId(m.producer_id);
                st.producer_epoch = m.producer_epoch;
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in m.partitions {
                    by_topic.entry(t).or_default().push(p);
                }
                st.topics = by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut d = TopicData::default();
                        d.topic = topic_name(&t);
                        d.partitions = ps;
                        d
                    })
                    .collect();
            }
            Err(code) => st.error_code = code,
        }
        resp.transaction_states.push(st);
    }
    ctx.encode(&resp).map(Some)
}
