//! Fetch for consumers and follower replicas, with long-poll on min_bytes/max_wait_ms that
//! sleeps until a partition's high watermark moves (no polling loop).

use crate::kafka::{decode, errors, ProtocolError, RequestContext, Response};
use crate::partition::{storage_error_code, FollowerState};
use crate::shard::images::get_or_open;
use crate::shard::{Shard, TopicPartition};
use bytes::{Bytes, BytesMut};
use chronik_raft::image::BrokerId;
use kafka_protocol::messages::FetchRequest;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (name if known, topic id, [(partition, fetch offset, partition max bytes, leader epoch)])
type FetchTopicSpec = (Option<String>, uuid::Uuid, Vec<(i32, i64, usize, i32)>);

/// Kafka's replica id for debugging reads of a follower's copy.
pub const DEBUG_REPLICA_ID: i32 = -2;

/// What one partition read produced.
#[derive(Debug, Clone, Default)]
pub struct PartitionRead {
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
    /// Fetch v16+ (KIP-951): the current leader and its epoch, on NOT_LEADER_OR_FOLLOWER and
    /// FENCED_LEADER_EPOCH.
    pub current_leader: Option<(i32, i32)>,
}

impl PartitionRead {
    fn error(code: i16) -> Self {
        PartitionRead {
            error: code,
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
            current_leader: None,
        }
    }
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: i32,
    /// Set for follower fetches: the follower's broker id.
    pub replica: Option<BrokerId>,
    /// Kafka's debug replica id (-2): read this node's copy, leader or not, up to its LEO.
    pub debug: bool,
}

/// Runs on the owning shard.
pub async fn read_local(shard: &Rc<Shard>, spec: ReadSpec) -> PartitionRead {
    let p = match get_or_open(shard, &spec.tp).await {
        Ok(p) => p,
        Err(code) => return PartitionRead::error(code),
    };
    if spec.debug {
        let leo = p.log.log_end_offset();
        let mut r = PartitionRead {
            error: errors::NONE,
            high_watermark: p.high_watermark(),
            log_start_offset: p.log.log_start_offset(),
            batches: Vec::new(),
            current_leader: None,
        };
        if spec.offset < leo {
            match p.log.read(spec.offset, spec.max_bytes, leo).await {
                Ok(b) => r.batches = b,
                Err(e) => r.error = storage_error_code(&e),
            }
        }
        return r;
    }
    if !p.is_leader.get() {
        return PartitionRead::error(errors::NOT_LEADER_OR_FOLLOWER);
    }
    let epoch = p.leader_epoch.get();
    if spec.current_leader_epoch >= 0 {
        if spec.current_leader_epoch < epoch {
            return PartitionRead::error(errors::FENCED_LEADER_EPOCH);
        }
        if spec.current_leader_epoch > epoch {
            return PartitionRead::error(errors::UNKNOWN_LEADER_EPOCH);
        }
    }
    let leo = p.log.log_end_offset();
    let start = p.log.log_start_offset();
    if spec.offset < start || spec.offset > leo {
        let mut r = PartitionRead::error(errors::OFFSET_OUT_OF_RANGE);
        r.high_watermark = p.high_watermark();
        r.log_start_offset = start;
        return r;
    }
    let upper = match spec.replica {
        // Only a broker that holds a replica of the partition may fetch as its follower (and
        // so move its high watermark); Kafka answers another broker NOT_LEADER_OR_FOLLOWER.
        // (Who the broker is was checked by `handle`: the connection proved it.)
        Some(follower) if !is_follower_of(shard, &spec.tp, follower) => {
            return PartitionRead::error(errors::NOT_LEADER_OR_FOLLOWER);
        }
        Some(follower) => {
            // A follower's fetch offset is its log end offset: record it and move the HW.
            let now = Instant::now();
            let mut fs = p.followers.borrow_mut();
            fs.entry(follower)
                .or_insert_with(|| FollowerState::new(spec.offset, now))
                .record_fetch(spec.offset, leo, now);
            drop(fs);
            p.maybe_advance_hw();
            leo
        }
        None => p.high_watermark(),
    };
    let mut r = PartitionRead {
        error: errors::NONE,
        high_watermark: p.high_watermark(),
        log_start_offset: start,
        batches: Vec::new(),
        current_leader: None,
    };
    if spec.offset >= upper || spec.max_bytes == 0 {
        return r;
    }
    match p.log.read(spec.offset, spec.max_bytes, upper).await {
        Ok(b) => r.batches = b,
        Err(e) => r.error = storage_error_code(&e),
    }
    r
}

/// Whether `broker` is another broker in the replica set of `tp` in this shard's image.
fn is_follower_of(shard: &Shard, tp: &TopicPartition, broker: BrokerId) -> bool {
    broker != shard.config.node_id
        && shard.with_image(|img| {
            img.topic(&tp.topic)
                .and_then(|t| t.partitions.get(usize::try_from(tp.partition).ok()?))
                .is_some_and(|ps| ps.replicas.contains(&broker))
        })
}

/// Waits (on the owner shard) until any of `tps` moves its high watermark (for a follower:
/// gets new data), or the deadline.
async fn wait_any_local(
    shard: &Rc<Shard>,
    tps: Vec<TopicPartition>,
    replica: bool,
    deadline: Instant,
) {
    let parts: Vec<_> = tps.iter().filter_map(|tp| shard.partition(tp)).collect();
    let now = Instant::now();
    if parts.is_empty() || now >= deadline {
        if now < deadline {
            glommio::timer::sleep(deadline - now).await;
        }
        return;
    }
    // Polled in place (no task per partition: this runs for a large share of follower fetches).
    let mut listens: Vec<_> = parts
        .iter()
        .map(|p| {
            if replica {
                p.appended.listen()
            } else {
                p.hw_advanced.listen()
            }
        })
        .collect();
    let any = std::future::poll_fn(|cx| {
        for l in listens.iter_mut() {
            if std::future::Future::poll(std::pin::Pin::new(l), cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    });
    futures_lite::future::or(any, glommio::timer::sleep(deadline - now)).await;
}

pub async fn handle(
    shard: Rc<Shard>,
    ctx: RequestContext,
    body: BytesMut,
) -> Result<Option<Response>, ProtocolError> {
    let req: FetchRequest = decode(body, ctx.api_version)?;
    let replica_id = if ctx.api_version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    // Only a connection that proved it is this broker (`net::broker_auth`) fetches as its
    // replica. Kafka answers a follower fetch without ClusterAction TOPIC_AUTHORIZATION_FAILED
    // on every partition, and reads nothing.
    let unauthorized = replica.is_some() && ctx.broker != replica;
    let debug = replica_id == DEBUG_REPLICA_ID;
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, 60_000) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    // fetch.max.bytes caps what a client may ask for (a request for 2^31-1 bytes would
    // otherwise be served as asked).
    let broker_max = shard.config.fetch_max_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        broker_max
    } else {
        (req.max_bytes as usize).min(broker_max)
    };

    // Resolve names (v13+ sends topic ids).
    let mut topics: Vec<FetchTopicSpec> = Vec::new();
    for t in &req.topics {
        let name = if ctx.api_version >= 13 {
            shard.with_image(|i| i.topic_by_id(t.topic_id.as_bytes()).map(|x| x.name.clone()))
        } else {
            Some(t.topic.0.to_string())
        };
        let parts = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes.max(0) as usize,
                    p.current_leader_epoch,
                )
            })
            .collect();
        topics.push((name, t.topic_id, parts));
    }

    let mut results: Vec<Vec<PartitionRead>>;
    loop {
        results = Vec::with_capacity(topics.len());
        let mut total = 0usize;
        let mut any_error = false;
        for (name, _, parts) in &topics {
            let mut out = Vec::with_capacity(parts.len());
            for (partition, offset, pmax, epoch) in parts {
                if unauthorized {
                    out.push(PartitionRead::error(errors::TOPIC_AUTHORIZATION_FAILED));
                    any_error = true;
                    continue;
                }
                let Some(name) = name else {
                    out.push(PartitionRead::error(errors::UNKNOWN_TOPIC_ID));
                    any_error = true;
                    continue;
                };
                // Kafka: the first batch is returned even beyond max_bytes so progress is
                // always possible (the log read returns at least one batch); after that the
                // request budget applies.
                let budget = (*pmax).min(max_bytes.saturating_sub(total));
                let spec = ReadSpec {
                    tp: TopicPartition::new(name, *partition),
                    offset: *offset,
                    max_bytes: budget,
                    current_leader_epoch: *epoch,
                    replica,
                    debug,
                };
                let owner = shard.owner_of(name, *partition);
                let r = shard
                    .run_on(owner, move |s| async move { read_local(&s, spec).await })
                    .await
                    .unwrap_or_else(|| PartitionRead::error(errors::UNKNOWN_SERVER_ERROR));
                any_error |= r.error != errors::NONE;
                total += r.bytes();
                out.push(r);
            }
            results.push(out);
        }
        if total >= min_bytes || any_error || Instant::now() >= deadline {
            break;
        }
        // Long-poll: sleep until one of the partitions gets new data, on each owner shard.
        let mut by_owner: std::collections::BTreeMap<usize, Vec<TopicPartition>> =
            Default::default();
        for (name, _, parts) in &topics {
            if let Some(name) = name {
                for (partition, ..) in parts {
                    by_owner
                        .entry(shard.owner_of(name, *partition))
                        .or_default()
                        .push(TopicPartition::new(name, *partition));
                }
            }
        }
        // Nothing that could wake this fetch (it names no partitions, as the one a consumer
        // sends to close its fetch session): answer now, as Kafka does, instead of holding the
        // connection.
        if by_owner.is_empty() {
            break;
        }
        let is_replica = replica.is_some();
        // One owner shard (always so with one shard per node): wait on it directly (run_on runs
        // in place when it is this shard). Several: race one wait per owner.
        if by_owner.len() == 1 {
            if let Some((owner, tps)) = by_owner.pop_first() {
                shard
                    .run_on(owner, move |s| async move {
                        wait_any_local(&s, tps, is_replica, deadline).await
                    })
                    .await;
            }
            continue;
        }
        let (tx, rx) = async_channel::bounded::<()>(1);
        let mut waits = Vec::new();
        for (owner, tps) in by_owner {
            let tx = tx.clone();
            let s = shard.clone();
            waits.push(
                glommio::spawn_local(async move {
                    s.run_on(owner, move |s| async move {
                        wait_any_local(&s, tps, is_replica, deadline).await
                    })
                    .await;
                    let _ = tx.try_send(());
                })
                .detach(),
            );
        }
        let _ = rx.recv().await;
        for w in waits {
            w.cancel();
        }
    }

    if replica.is_none() && !debug {
        for ((name, _, _), reads) in topics.iter().zip(&results) {
            if let Some(name) = name {
                let (records, bytes) = reads.iter().fold((0, 0), |(r, b), p| {
                    let (r2, b2) = crate::metrics::count_records(&p.batches);
                    (r + r2, b + b2)
                });
                if bytes > 0 {
                    shard
                        .metrics
                        .fetched(&Arc::from(name.as_str()), records, bytes);
                }
            }
        }
    }
    let img = shard.image();
    // KIP-951 (v16+): point the client at the current leader of partitions this broker does
    // not lead, with that leader's endpoint.
    let mut leaders = Vec::new();
    if ctx.api_version >= 16 {
        for ((name, _, parts), reads) in topics.iter().zip(results.iter_mut()) {
            let Some(name) = name else { continue };
            for ((partition, ..), r) in parts.iter().zip(reads.iter_mut()) {
                if r.error == errors::NOT_LEADER_OR_FOLLOWER
                    || r.error == errors::FENCED_LEADER_EPOCH
                {
                    r.current_leader = super::current_leader(&shard, name, *partition);
                    leaders.extend(r.current_leader.map(|(l, _)| l));
                }
            }
        }
    }
    let endpoints = super::node_endpoints(&shard, leaders);
    let mut out = Vec::with_capacity(topics.len());
    for ((name, id, parts), reads) in topics.iter().zip(results) {
        let id = name
            .as_ref()
            .and_then(|n| img.topic(n))
            .map_or(*id.as_bytes(), |t| t.id);
        out.push(super::fetch_response::TopicReads {
            name: name.as_deref().unwrap_or(""),
            id,
            partitions: parts.iter().map(|p| p.0).zip(reads).collect(),
        });
    }
    Ok(Some(super::fetch_response::encode(&ctx, &out, &endpoints)))
}
