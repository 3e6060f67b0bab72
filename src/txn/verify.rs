//! KIP-890 part 1: a partition leader appends a transactional batch of a producer only if the
//! producer's transaction coordinator has this partition in its open transaction. Without the
//! check, a batch that arrives late (after its transaction's marker, or from a producer that
//! never called AddPartitionsToTxn) opens a transaction no coordinator knows of, and nothing
//! ever ends it: the partition's last stable offset is stuck.
//!
//! The check runs on the first transactional batch of a producer while it has no transaction
//! open here. Once that batch is appended the transaction is open in the partition's own state
//! (`TxnIndex`), and the producer's next batches are appended without asking again until its
//! marker ends it. Batches of the same producer that arrive while the check is in flight wait
//! for its outcome, so they keep their order; a marker written meanwhile voids the check (the
//! batch then belongs to a transaction that has ended), as Kafka's verification guard does.
//!
//! The coordinator is asked on its shard when this broker leads the `__transaction_state`
//! partition, otherwise with AddPartitionsToTxn v4 `verify_only` over the inter-broker path.

use super::{coordinator, route, TXN_TOPIC};
use crate::kafka::errors;
use crate::partition::verification::Verification;
use crate::partition::{Partition, ProduceOutcome};
use crate::services::Services;
use crate::shard::TopicPartition;
use chronik_storage::ValidBatch;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long a verification may take (the coordinator answers from memory; this bounds a
/// broker that does not answer).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// The AddPartitionsToTxn version brokers verify with (the first with `verify_only`).
pub const VERIFY_VERSION: i16 = 4;

/// Appends a client's batch to partition `tp` of this shard, verifying a transactional one
/// first when its producer has no transaction open here.
pub async fn append(
    s: &Rc<Services>,
    tp: TopicPartition,
    batch: ValidBatch,
    acks: i16,
    timeout: Duration,
    transactional_id: Option<Arc<str>>,
) -> ProduceOutcome {
    let h = *batch.header();
    if !h.is_transactional() || h.is_control() || h.producer_id < 0 || h.base_sequence < 0 {
        return s.replicas.append(tp, batch, acks, timeout).await;
    }
    let Some(id) = transactional_id else {
        // As Kafka: transactional records need a transactional id to be authorised against.
        return ProduceOutcome::error(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    };
    let p = match s.replicas.get_or_open(&tp).await {
        Ok(p) => p,
        Err(code) => return ProduceOutcome::error(code),
    };
    // Bounded: each turn either appends, fails, or waits for a verification that ends within
    // VERIFY_TIMEOUT; three turns cover a wait for another batch's check and one of our own.
    for _ in 0..3 {
        if !p.is_leader() {
            return ProduceOutcome::error(errors::NOT_LEADER_OR_FOLLOWER);
        }
        if p.open_transaction(h.producer_id).is_some() {
            // Verified when it opened (or replicated from a leader that verified it).
            return s.replicas.append(tp, batch, acks, timeout).await;
        }
        if let Some(v) = p.verification(h.producer_id) {
            if v.epoch == h.producer_epoch {
                // Another batch of the producer is being checked: its outcome is ours.
                match v.outcome_within(VERIFY_TIMEOUT).await {
                    Some(errors::NONE) | None => continue,
                    Some(code) => return ProduceOutcome::error(code),
                }
            }
        }
        return verify_and_append(s, &p, tp, batch, acks, timeout, &id).await;
    }
    ProduceOutcome::error(errors::NOT_ENOUGH_REPLICAS)
}

async fn verify_and_append(
    s: &Rc<Services>,
    p: &Rc<Partition>,
    tp: TopicPartition,
    batch: ValidBatch,
    acks: i16,
    timeout: Duration,
    id: &str,
) -> ProduceOutcome {
    let h = *batch.header();
    let v = Verification::new(h.producer_epoch);
    p.begin_verification(h.producer_id, v.clone());
    let mut code = ask_coordinator(s, id, h.producer_id, h.producer_epoch, &tp).await;
    p.end_verification(h.producer_id, &v);
    if code == errors::NONE && !v.is_valid() {
        code = errors::INVALID_TXN_STATE;
    }
    if code != errors::NONE {
        v.finish(code);
        return ProduceOutcome::error(code);
    }
    // The append is issued at its first poll (the partition assigns the offset and opens the
    // transaction then); only then are the producer's waiting batches let go, so they follow
    // this one in the log.
    let mut write = Box::pin(s.replicas.append(tp, batch, acks, timeout));
    let first = futures_lite::future::poll_once(&mut write).await;
    v.finish(errors::NONE);
    match first {
        Some(out) => out,
        None => write.await,
    }
}

/// Whether the coordinator of `id` has `tp` in the open transaction of (`producer_id`,
/// `epoch`): NONE, or the error the produce is answered with.
async fn ask_coordinator(
    s: &Rc<Services>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    tp: &TopicPartition,
) -> i16 {
    let (index, owner) = route(s, id);
    let leader = s.with_image(|i| i.partition(TXN_TOPIC, index).map(|p| p.leader));
    let code = match leader {
        // No transaction state at all: nothing can have registered this write.
        None if s.with_image(|i| i.topic(TXN_TOPIC).is_none()) => errors::INVALID_TXN_STATE,
        None => errors::COORDINATOR_NOT_AVAILABLE,
        Some(l) if l == s.config.node_id => {
            let (id, part) = (id.to_string(), (tp.topic.to_string(), tp.partition));
            s.run_on(owner, move |s| async move {
                match coordinator::verify(&s, id, producer_id, epoch, vec![part]).await {
                    Ok(codes) => codes
                        .first()
                        .copied()
                        .unwrap_or(errors::UNKNOWN_SERVER_ERROR),
                    Err(code) => code,
                }
            })
            .await
            .unwrap_or(errors::COORDINATOR_NOT_AVAILABLE)
        }
        Some(l) if l >= 0 => ask_remote(s, l, id, producer_id, epoch, tp).await,
        Some(_) => errors::COORDINATOR_NOT_AVAILABLE,
    };
    produce_error(code)
}

/// The produce's answer for a verification's: the coordinator being unavailable is
/// retriable for the producer (Kafka answers NOT_ENOUGH_REPLICAS to clients that predate
/// KIP-890), a fenced epoch is INVALID_PRODUCER_EPOCH, anything else INVALID_TXN_STATE.
fn produce_error(code: i16) -> i16 {
    match code {
        errors::NONE => errors::NONE,
        errors::COORDINATOR_NOT_AVAILABLE
        | errors::NOT_COORDINATOR
        | errors::COORDINATOR_LOAD_IN_PROGRESS
        | errors::CONCURRENT_TRANSACTIONS
        | errors::REQUEST_TIMED_OUT
        | errors::UNKNOWN_SERVER_ERROR => errors::NOT_ENOUGH_REPLICAS,
        errors::PRODUCER_FENCED | errors::INVALID_PRODUCER_EPOCH => errors::INVALID_PRODUCER_EPOCH,
        _ => errors::INVALID_TXN_STATE,
    }
}

async fn ask_remote(
    s: &Rc<Services>,
    leader: i32,
    id: &str,
    producer_id: i64,
    epoch: i16,
    tp: &TopicPartition,
) -> i16 {
    let mut topic = AddPartitionsToTxnTopic::default();
    topic.name = TopicName(StrBytes::from_string(tp.topic.to_string()));
    topic.partitions = vec![tp.partition];
    let mut t = AddPartitionsToTxnTransaction::default();
    t.transactional_id = TransactionalId(StrBytes::from_string(id.to_string()));
    t.producer_id = ProducerId(producer_id);
    t.producer_epoch = epoch;
    t.verify_only = true;
    t.topics = vec![topic];
    let mut req = AddPartitionsToTxnRequest::default();
    req.transactions = vec![t];
    let resp: std::io::Result<AddPartitionsToTxnResponse> = s
        .fetchers
        .call_broker(
            &s.shard,
            leader,
            ApiKey::AddPartitionsToTxn,
            VERIFY_VERSION,
            &req,
            VERIFY_TIMEOUT,
        )
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(leader, "AddPartitionsToTxn verify: {e}");
            return errors::COORDINATOR_NOT_AVAILABLE;
        }
    };
    if resp.error_code != errors::NONE {
        return resp.error_code;
    }
    resp.results_by_transaction
        .iter()
        .filter(|r| r.transactional_id.0.as_str() == id)
        .flat_map(|r| r.topic_results.iter())
        .filter(|t| t.name.0.as_str() == tp.topic.as_ref())
        .flat_map(|t| t.results_by_partition.iter())
        .find(|p| p.partition_index == tp.partition)
        .map_or(errors::UNKNOWN_SERVER_ERROR, |p| p.partition_error_code)
}
