//! Produce. The request is parsed by hand: each partition's records are split out of the
//! request frame as `BytesMut` views of the same allocation, so the payload is not copied
//! between the socket buffer and the log's write buffer. Each batch is validated in place
//! (`chronik_storage::batch_validation`) on the shard that read it, before it is routed to the
//! partition's owner; internal topics are written only by their coordinators.

use super::topic_name;
use crate::kafka::dispatch::HandlerResult;
use crate::kafka::wire::Reader;
use crate::kafka::{errors, ProtocolError, RequestContext};
use crate::partition::ProduceOutcome;
use crate::services::Services;
use crate::shard::TopicPartition;
use bytes::{Buf, BytesMut};
use chronik_raft::acl::{Operation, ResourceType, ResourceType::Topic};
use chronik_storage::batch_validation::Limits;
use chronik_storage::ValidBatch;
use kafka_protocol::messages::produce_response::{
    NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;
use std::time::Duration;

const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const ZSTD: i16 = 4;

thread_local! {
    /// Benchmark knob, not a setting: `CHRONIK_BENCH_SKIP_RECORD_VALIDATION=1` checks only a
    /// produced batch's frame and CRC (the broker before record validation), so the cost of
    /// validation can be measured with one binary (bench/README.md). Never for production.
    static BENCH_SKIP_RECORD_VALIDATION: bool =
        std::env::var_os("CHRONIK_BENCH_SKIP_RECORD_VALIDATION").is_some_and(|v| v == "1");
}

/// Kafka's internal topics: written only by their coordinators, never by a client's Produce,
/// DeleteTopics or DeleteRecords.
pub(crate) fn is_internal_topic(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC || name == "__transaction_state"
}

pub struct ProducePartition {
    pub index: i32,
    pub records: Option<BytesMut>,
}

pub struct ProduceTopic {
    /// Empty for v13+, which names topics by id.
    pub name: String,
    /// v13+.
    pub id: Option<[u8; 16]>,
    pub partitions: Vec<ProducePartition>,
}

pub struct ParsedProduce {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<ProduceTopic>,
}

/// Parses Produce v3–v13 (v9+ is flexible: compact strings/arrays and tagged fields; v13 names
/// topics by id).
pub fn parse(mut body: BytesMut, version: i16) -> Result<ParsedProduce, ProtocolError> {
    let flexible = version >= 9;
    let by_id = version >= 13;
    // First pass over a borrowed reader records where each records field lies.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    // (topic, [(partition index, slot in `spans` if records were present)])
    type Shape = Vec<(String, Option<[u8; 16]>, Vec<(i32, Option<usize>)>)>;
    let mut shape: Shape = Vec::new();
    let (transactional_id, acks, timeout_ms) = {
        let mut r = Reader::new(&body[..]);
        let tid = if flexible {
            r.compact_nullable_string()?
        } else {
            r.nullable_string()?
        }
        .map(str::to_string);
        let acks = r.i16()?;
        let timeout = r.i32()?;
        let ntopics = r.array_len(flexible)?;
        for _ in 0..ntopics {
            let (name, id) = if by_id {
                (String::new(), Some(r.uuid()?))
            } else if flexible {
                (r.compact_string()?.to_string(), None)
            } else {
                (r.string()?.to_string(), None)
            };
            let nparts = r.array_len(flexible)?;
            let mut parts = Vec::with_capacity(nparts);
            for _ in 0..nparts {
                let index = r.i32()?;
                let span = r.bytes_span(flexible)?;
                let slot = span.map(|s| {
                    spans.push(s);
                    spans.len() - 1
                });
                parts.push((index, slot));
                if flexible {
                    r.skip_tagged_fields()?;
                }
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
            shape.push((name, id, parts));
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
        (tid, acks, timeout)
    };
    // Second pass: cut the record spans out of the frame, in order, without copying.
    let mut cut = 0usize;
    let mut records: Vec<Option<BytesMut>> = Vec::with_capacity(spans.len());
    for (start, len) in spans {
        body.advance(start - cut);
        records.push(Some(body.split_to(len)));
        cut = start + len;
    }
    let topics = shape
        .into_iter()
        .map(|(name, id, parts)| ProduceTopic {
            name,
            id,
            partitions: parts
                .into_iter()
                .map(|(index, slot)| ProducePartition {
                    index,
                    records: slot.and_then(|i| records.get_mut(i).and_then(Option::take)),
                })
                .collect(),
        })
        .collect();
    Ok(ParsedProduce {
        transactional_id,
        acks,
        timeout_ms,
        topics,
    })
}

pub async fn handle(shard: Rc<Services>, ctx: RequestContext, body: BytesMut) -> HandlerResult {
    let req = parse(body, ctx.api_version)?;
    let acks = req.acks;
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let mut tasks = Vec::new();
    let mut auto_created = false;
    let subject = crate::acl::Subject::of(&shard, &ctx);
    // A transactional produce needs WRITE on its transactional id (Kafka's check).
    let may_transact = req.transactional_id.as_ref().is_none_or(|id| {
        shard.with_image(|i| subject.may(i, Operation::Write, ResourceType::TransactionalId, id))
    });
    let txn_id: Option<std::sync::Arc<str>> = req.transactional_id.as_deref().map(Into::into);
    for mut t in req.topics {
        // v13: the topic by its id; an unknown id is UNKNOWN_TOPIC_ID (no auto-creation).
        let unknown_id = match t.id {
            Some(id) => match shard.with_image(|i| i.topic_by_id(&id).map(|x| x.name.clone())) {
                Some(name) => {
                    t.name = name;
                    false
                }
                None => true,
            },
            None => false,
        };
        let internal = is_internal_topic(&t.name);
        let may_write = shard.with_image(|i| subject.may(i, Operation::Write, Topic, &t.name));
        // Produce to an unknown topic auto-creates it (when enabled), like Kafka's Metadata path,
        // for a client that may write it and create it.
        if !internal
            && !unknown_id
            && may_write
            && !auto_created
            && shard.with_image(|i| crate::acl::may_create_topic(&subject, i, &t.name))
            && shard.config.auto_create_topics_enable
            && shard.with_image(|i| i.topic(&t.name).is_none())
            && super::topics::valid_topic_name(&t.name)
        {
            super::topics::auto_create(&shard, vec![t.name.clone()]).await;
            auto_created = true;
        }
        let name: std::sync::Arc<str> = std::sync::Arc::from(t.name.as_str());
        let mut parts = Vec::new();
        for p in t.partitions {
            let tp = TopicPartition {
                topic: name.clone(),
                partition: p.index,
            };
            let task: glommio::task::JoinHandle<Answer> = if unknown_id {
                glommio::spawn_local(async { refused(errors::UNKNOWN_TOPIC_ID) }).detach()
            } else if !(acks == 0 || acks == 1 || acks == -1) {
                glommio::spawn_local(async { refused(errors::INVALID_REQUIRED_ACKS) }).detach()
            } else if !may_transact {
                glommio::spawn_local(async {
                    refused(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                })
                .detach()
            } else if !may_write {
                glommio::spawn_local(async { refused(errors::TOPIC_AUTHORIZATION_FAILED) }).detach()
            } else if internal {
                // As Kafka's ReplicaManager: clients never append to internal topics.
                let why = format!("Cannot append to internal topic {}", t.name);
                glommio::spawn_local(async move {
                    (
                        ProduceOutcome::error(errors::INVALID_TOPIC_EXCEPTION),
                        Some(why),
                    )
                })
                .detach()
            } else {
                let shard2 = shard.clone();
                let records = p.records;
                let version = ctx.api_version;
                let txn_id = txn_id.clone();
                glommio::spawn_local(async move {
                    produce_routed(&shard2, tp, records, acks, timeout, version, txn_id).await
                })
                .detach()
            };
            parts.push((p.index, task));
        }
        tasks.push((name, t.id, parts));
    }
    let mut resp = ProduceResponse::default();
    let mut leaders = Vec::new();
    for (name, id, parts) in tasks {
        let mut tr = TopicProduceResponse::default();
        match id {
            Some(id) => tr.topic_id = uuid::Uuid::from_bytes(id),
            None => tr.name = topic_name(&name),
        }
        for (index, task) in parts {
            let (o, why) = task
                .await
                .unwrap_or_else(|| refused(errors::UNKNOWN_SERVER_ERROR));
            let mut pr = PartitionProduceResponse::default();
            pr.index = index;
            pr.error_code = o.error;
            if ctx.api_version >= 8 {
                pr.error_message = why.map(StrBytes::from_string);
            }
            pr.base_offset = o.base_offset;
            pr.log_append_time_ms = o.log_append_time;
            if ctx.api_version >= 5 {
                pr.log_start_offset = o.log_start_offset;
            }
            // KIP-951 (v10+): where the partition's leader is now, so the client need not
            // refresh its metadata first.
            if ctx.api_version >= 10 && o.error == errors::NOT_LEADER_OR_FOLLOWER {
                if let Some((leader, epoch)) = super::current_leader(&shard, &name, index) {
                    pr.current_leader.leader_id = BrokerId(leader);
                    pr.current_leader.leader_epoch = epoch;
                    leaders.push(leader);
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if acks == 0 {
        return Ok(None);
    }
    for (node_id, host, port, rack) in
        super::node_endpoints(&shard, ctx.listener.as_deref(), leaders)
    {
        let mut e = NodeEndpoint::default();
        e.node_id = BrokerId(node_id);
        e.host = StrBytes::from_string(host);
        e.port = port;
        e.rack = rack.map(StrBytes::from_string);
        resp.node_endpoints.push(e);
    }
    ctx.encode(&resp).map(Some)
}

/// A partition's outcome and, for a refusal, the message Produce v8+ carries.
type Answer = (ProduceOutcome, Option<String>);

fn refused(code: i16) -> Answer {
    (ProduceOutcome::error(code), None)
}

/// Validates the batch on this shard, then sends it to the shard that owns the partition.
async fn produce_routed(
    shard: &Rc<Services>,
    tp: TopicPartition,
    records: Option<BytesMut>,
    acks: i16,
    timeout: Duration,
    version: i16,
    transactional_id: Option<std::sync::Arc<str>>,
) -> Answer {
    // As Kafka for Produce v3+: a partition must carry one record batch.
    let Some(batch) = records.filter(|r| !r.is_empty()) else {
        return refused(errors::INVALID_RECORD);
    };
    // As Kafka's ProduceRequest.validateRecords: zstd needs Produce v7.
    if version < 7 && batch.len() > 22 && i16::from_be_bytes([batch[21], batch[22]]) & 7 == ZSTD {
        return refused(UNSUPPORTED_COMPRESSION_TYPE);
    }
    let max = shard.with_image(|i| {
        i.topic(&tp.topic)
            .and_then(|t| t.config("max.message.bytes"))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| crate::dynamic_config::message_max_bytes(&shard.config, i))
    });
    if batch.len() > max {
        return refused(errors::MESSAGE_TOO_LARGE);
    }
    // In place on the request bytes: uncompressed records are walked where they lie, compressed
    // ones streamed through a small per-shard buffer within the bound.
    let checked = if BENCH_SKIP_RECORD_VALIDATION.with(|skip| *skip) {
        ValidBatch::new(batch)
    } else {
        ValidBatch::from_client(batch, &Limits::for_max_message_bytes(max))
    };
    let batch = match checked {
        Ok(b) => b,
        Err(e) => {
            return (
                ProduceOutcome::error(crate::partition::batch_error_code(&e)),
                Some(e.to_string()),
            )
        }
    };
    let owner = shard.owner_of(&tp.topic, tp.partition);
    let out = shard
        .run_on(owner, move |s| async move {
            // A transactional batch is verified with its coordinator first (KIP-890).
            crate::txn::verify::append(&s, tp, batch, acks, timeout, transactional_id).await
        })
        .await
        .unwrap_or_else(|| ProduceOutcome::error(errors::UNKNOWN_SERVER_ERROR));
    (out, None)
}
