//! Writing a transaction's markers to its partitions: each partition's leader appends the
//! control batch with acks=all. Partitions led by this broker are written through their owner
//! shard; the others with one WriteTxnMarkers request per leader broker, on the inter-broker
//! path (a connection proving it is this broker; the handler refuses anyone else).
//!
//! The markers of one transaction are written to all its partitions at once.
//!
//! A marker that cannot be written yet (leader moving, not enough replicas) is retried until
//! it is written, the partition no longer exists, or this broker stops coordinating the
//! transaction: a Prepare state is only completed once every marker is in.

use crate::kafka::errors;
use crate::services::Services;
use crate::shard::TopicPartition;
use chronik_storage::TxnMarker;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::WriteTxnMarkersResponse;
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// How long one marker append waits for its replication.
pub const MARKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Marker writes in flight at once for one transaction.
const PARALLEL_WRITES: usize = 64;
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// What a transaction's markers say and who writes them.
#[derive(Debug, Clone, Copy)]
pub struct MarkerSpec {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

impl MarkerSpec {
    fn marker(&self) -> TxnMarker {
        TxnMarker {
            commit: self.commit,
            coordinator_epoch: self.coordinator_epoch,
        }
    }
}

/// Writes the marker to a partition this broker holds, on its owner shard: the Kafka error of
/// the append (after acks=all).
pub async fn write_local(shard: &Rc<Services>, tp: TopicPartition, spec: MarkerSpec) -> i16 {
    let owner = shard.owner_of(&tp.topic, tp.partition);
    shard
        .run_on(
            owner,
            move |s| async move { write_on_owner(&s, tp, spec).await },
        )
        .await
        .unwrap_or(errors::UNKNOWN_SERVER_ERROR)
}

async fn write_on_owner(s: &Rc<Services>, tp: TopicPartition, spec: MarkerSpec) -> i16 {
    let p = match s.replicas.get_or_open(&tp).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let out = p
        .append_marker(spec.producer_id, spec.producer_epoch, spec.marker())
        .await;
    if out.error != errors::NONE {
        return out.error;
    }
    if !p.wait_hw_above(out.last_offset, MARKER_TIMEOUT).await {
        return if p.is_leader() {
            errors::REQUEST_TIMED_OUT
        } else {
            errors::NOT_LEADER_OR_FOLLOWER
        };
    }
    if tp.topic.as_ref() == crate::group::OFFSETS_TOPIC {
        // Offsets committed in the transaction become visible (or are dropped) with it.
        crate::group::coordinator::complete_txn_offsets(
            &s.groups,
            tp.partition,
            spec.producer_id,
            spec.commit,
        );
    }
    errors::NONE
}

/// Whether a marker write failing with `code` is worth retrying.
fn retriable(code: i16) -> bool {
    !matches!(
        code,
        errors::NONE
            | errors::UNKNOWN_TOPIC_OR_PARTITION
            | errors::INVALID_PRODUCER_EPOCH
            | errors::INVALID_PRODUCER_ID_MAPPING
            // A newer coordinator wrote this producer's markers: this one is a zombie.
            | errors::TRANSACTION_COORDINATOR_FENCED
            | errors::CORRUPT_MESSAGE
            | errors::INVALID_RECORD
    )
}

/// Writes the markers to every partition of `partitions` until each is written or given up
/// (a partition that no longer exists, a newer producer epoch already there). False when
/// `still_coordinating` turned false first: the next coordinator finishes the job.
pub async fn write_all(
    shard: &Rc<Services>,
    spec: MarkerSpec,
    partitions: Vec<TopicPartition>,
    still_coordinating: impl Fn() -> bool,
) -> bool {
    let me = shard.config.node_id;
    let mut left = partitions;
    let mut attempt = 0u32;
    while !left.is_empty() {
        if !still_coordinating() || shard.shutting_down.get() {
            return false;
        }
        if attempt > 0 {
            glommio::timer::sleep(RETRY_BACKOFF * attempt.min(5)).await;
        }
        attempt += 1;
        // By leader per this shard's image; a partition without a leader waits for one.
        let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
        let mut next = Vec::new();
        for tp in left {
            let leader =
                shard.with_image(|i| i.partition(&tp.topic, tp.partition).map(|p| p.leader));
            match leader {
                None => {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, "transaction marker dropped: the partition no longer exists");
                }
                Some(l) if l < 0 => next.push(tp),
                Some(l) => by_leader.entry(l).or_default().push(tp),
            }
        }
        // Every partition at once (up to `PARALLEL_WRITES` at a time): one task per partition
        // of this broker (each on its owner shard, no network), one WriteTxnMarkers per other
        // leader; a round takes as long as its slowest marker, not their sum.
        let mut jobs: Vec<(i32, Vec<TopicPartition>)> = Vec::new();
        for (leader, tps) in by_leader {
            if leader == me {
                jobs.extend(tps.into_iter().map(|tp| (leader, vec![tp])));
            } else {
                jobs.push((leader, tps));
            }
        }
        for chunk in jobs.chunks(PARALLEL_WRITES) {
            let tasks: Vec<_> = chunk
                .iter()
                .cloned()
                .map(|(leader, tps)| {
                    let s = shard.clone();
                    glommio::spawn_local(async move {
                        if leader == s.config.node_id {
                            let mut out = Vec::with_capacity(tps.len());
                            for tp in tps {
                                let code = write_local(&s, tp.clone(), spec).await;
                                out.push((tp, code));
                            }
                            out
                        } else {
                            write_remote(&s, leader, spec, tps).await
                        }
                    })
                })
                .collect();
            for task in tasks {
                for (tp, code) in task.await {
                    if retriable(code) {
                        tracing::debug!(topic = %tp.topic, partition = tp.partition, code, "transaction marker not written yet");
                        next.push(tp);
                    } else if code != errors::NONE {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, code, "transaction marker refused");
                    }
                }
            }
        }
        left = next;
    }
    true
}

/// One WriteTxnMarkers request to broker `leader` for `tps`: each partition's error code
/// (all retriable when the broker cannot be reached).
async fn write_remote(
    shard: &Rc<Services>,
    leader: i32,
    spec: MarkerSpec,
    tps: Vec<TopicPartition>,
) -> Vec<(TopicPartition, i16)> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in &tps {
        by_topic
            .entry(tp.topic.to_string())
            .or_default()
            .push(tp.partition);
    }
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(spec.producer_id);
    m.producer_epoch = spec.producer_epoch;
    m.transaction_result = spec.commit;
    m.coordinator_epoch = spec.coordinator_epoch;
    m.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut wt = WritableTxnMarkerTopic::default();
            wt.name = TopicName(StrBytes::from_string(t));
            wt.partition_indexes = ps;
            wt
        })
        .collect();
    let mut req = WriteTxnMarkersRequest::default();
    req.markers = vec![m];
    let resp: std::io::Result<WriteTxnMarkersResponse> = shard
        .fetchers
        .call_broker(
            &shard.shard,
            leader,
            ApiKey::WriteTxnMarkers,
            WRITE_TXN_MARKERS_VERSION,
            &req,
            MARKER_TIMEOUT + Duration::from_secs(5),
        )
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(leader, "WriteTxnMarkers: {e}");
            return tps
                .into_iter()
                .map(|tp| (tp, errors::COORDINATOR_NOT_AVAILABLE))
                .collect();
        }
    };
    tps.into_iter()
        .map(|tp| {
            let code = resp
                .markers
                .iter()
                .flat_map(|m| m.topics.iter())
                .filter(|t| t.name.0.as_str() == tp.topic.as_ref())
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == tp.partition)
                .map_or(errors::UNKNOWN_SERVER_ERROR, |p| p.error_code);
            (tp, code)
        })
        .collect()
}
