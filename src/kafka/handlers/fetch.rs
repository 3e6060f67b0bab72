//! Fetch for consumers and follower replicas, with long-poll on min_bytes/max_wait_ms that
//! sleeps until a partition's high watermark moves (no polling loop).

pub use super::fetch_response::PartitionRead;
use super::fetch_session::{
    Plan, Sent, SessionRequest, TopicKey, Wanted, FETCH_SESSION_ID_NOT_FOUND, FINAL_EPOCH,
    INITIAL_EPOCH, NO_SESSION,
};
use crate::kafka::{decode, errors, ProtocolError, RequestContext, Response};
use crate::partition::storage_error_code;
use crate::services::Services;
use crate::shard::TopicPartition;
use bytes::{Bytes, BytesMut};
use chronik_raft::acl::ResourceType::Topic;
use chronik_raft::image::BrokerId;
use kafka_protocol::messages::FetchRequest;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (name if known, topic id, [(partition, fetch offset, partition max bytes, leader epoch)])
type FetchTopicSpec = (Option<String>, uuid::Uuid, Vec<(i32, Wanted)>);

/// Kafka's replica id for debugging reads of a follower's copy.
pub const DEBUG_REPLICA_ID: i32 = -2;

#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: i32,
    /// Set for follower fetches: the follower's broker id.
    pub replica: Option<BrokerId>,
    /// A follower's log start offset, as its fetch says (-1: not said).
    pub replica_log_start: i64,
    /// Kafka's debug replica id (-2): read this node's copy, leader or not, up to its LEO.
    pub debug: bool,
    /// isolation_level 1: read only below the last stable offset.
    pub read_committed: bool,
}

/// Runs on the owning shard.
pub async fn read_local(shard: &Rc<Services>, spec: ReadSpec) -> PartitionRead {
    let p = match shard.replicas.get_or_open(&spec.tp).await {
        Ok(p) => p,
        Err(code) => return PartitionRead::error(code),
    };
    if spec.debug {
        let leo = p.log.log_end_offset();
        let mut r = PartitionRead {
            error: errors::NONE,
            high_watermark: p.high_watermark(),
            last_stable_offset: p.last_stable_offset(),
            log_start_offset: p.log.log_start_offset(),
            batches: Vec::new(),
            aborted: None,
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
    if !p.is_leader() {
        return PartitionRead::error(errors::NOT_LEADER_OR_FOLLOWER);
    }
    let epoch = p.leader_epoch();
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
        r.last_stable_offset = p.last_stable_offset();
        r.log_start_offset = start;
        return r;
    }
    let upper = match spec.replica {
        Some(follower) => {
            // A follower's fetch offset is its log end offset: record it and move the HW.
            // Only another broker in the partition's replica set may (the partition checks,
            // against the assignment it was given from the image); Kafka answers any other
            // NOT_LEADER_OR_FOLLOWER. (Who the broker is was checked by `handle`: the
            // connection proved it.)
            if shard
                .replicas
                .follower_fetched(
                    &p,
                    follower,
                    spec.offset,
                    spec.replica_log_start,
                    Instant::now(),
                )
                .is_err()
            {
                return PartitionRead::error(errors::NOT_LEADER_OR_FOLLOWER);
            }
            leo
        }
        None if spec.read_committed => p.last_stable_offset(),
        None => p.high_watermark(),
    };
    let mut r = PartitionRead {
        error: errors::NONE,
        high_watermark: p.high_watermark(),
        last_stable_offset: p.last_stable_offset(),
        log_start_offset: start,
        batches: Vec::new(),
        aborted: None,
        current_leader: None,
    };
    if spec.read_committed && spec.replica.is_none() {
        // Kafka lists the aborted transactions overlapping the range read; the whole range
        // up to the LSO is a superset the consumer filters the same way.
        r.aborted = Some(p.aborted_between(spec.offset, upper));
    }
    if spec.offset >= upper || spec.max_bytes == 0 {
        return r;
    }
    match p.log.read(spec.offset, spec.max_bytes, upper).await {
        Ok(b) => r.batches = b,
        Err(e) => r.error = storage_error_code(&e),
    }
    r
}

/// Waits (on the owner shard) until any of `tps` has something to read at its fetch offset
/// (for a follower: records beyond it; for a consumer: a high watermark, or with
/// `read_committed` a last stable offset, beyond it), or the deadline.
async fn wait_any_local(
    shard: &Rc<Services>,
    tps: Vec<(TopicPartition, i64)>,
    replica: bool,
    read_committed: bool,
    deadline: Instant,
) {
    let parts: Vec<_> = tps
        .iter()
        .filter_map(|(tp, offset)| shard.replicas.get(tp).map(|p| (p, *offset)))
        .collect();
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
        .map(|(p, _)| {
            if replica {
                p.appended.listen()
            } else {
                p.hw_advanced.listen()
            }
        })
        .collect();
    // Listening first, then looking: records that arrived after this fetch read (on this
    // shard, or while the wait hopped here from the connection's shard) would otherwise wake
    // nobody, and the fetch slept to its deadline (250 ms for a follower), holding every
    // acks=all produce of the partition that long once the producer's in-flight limit was
    // reached (the 3-node run's ~255 ms maximum, issue 24).
    let readable = parts.iter().any(|(p, offset)| {
        let upper = if replica {
            p.log.log_end_offset()
        } else if read_committed {
            p.last_stable_offset()
        } else {
            p.high_watermark()
        };
        upper > *offset
    });
    if readable {
        return;
    }
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

/// Runs the planned reads: each owner shard's reads in order on that shard, the shards at
/// once. Each shard counts `max_bytes` over its own reads only, so it reads at least what the
/// request-wide budget allows; the caller trims to that (`trim_to_budget`).
async fn read_planned(
    shard: &Rc<Services>,
    mut plan: BTreeMap<usize, Vec<(usize, ReadSpec)>>,
    max_bytes: usize,
) -> Vec<(usize, PartitionRead)> {
    let read_on_owner = |owner: usize, specs: Vec<(usize, ReadSpec)>| {
        let slots: Vec<usize> = specs.iter().map(|(slot, _)| *slot).collect();
        let s = shard.clone();
        async move {
            let reads = s
                .run_on(owner, move |s| async move {
                    let mut total = 0usize;
                    let mut out = Vec::with_capacity(specs.len());
                    for (_, mut spec) in specs {
                        spec.max_bytes = spec.max_bytes.min(max_bytes.saturating_sub(total));
                        let r = read_local(&s, spec).await;
                        total += r.bytes();
                        out.push(r);
                    }
                    out
                })
                .await
                .unwrap_or_default();
            // A shard that did not answer leaves its slots empty (UNKNOWN_SERVER_ERROR).
            slots.into_iter().zip(reads).collect::<Vec<_>>()
        }
    };
    if plan.len() <= 1 {
        // One owner (always so with one shard per node): read in place, no task.
        return match plan.pop_first() {
            Some((owner, specs)) => read_on_owner(owner, specs).await,
            None => Vec::new(),
        };
    }
    let tasks: Vec<_> = plan
        .into_iter()
        .map(|(owner, specs)| glommio::spawn_local(read_on_owner(owner, specs)).detach())
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap_or_default());
    }
    out
}

/// Cuts a partition's batches to what a read with `budget` bytes returns: whole batches, the
/// first always (when `budget` > 0), the next ones while the total stays within `budget`.
/// A log read returns that prefix of a read with a larger budget, so trimming a read made with
/// more budget gives what the smaller read would have.
fn trim_to_budget(batches: &mut Vec<Bytes>, budget: usize) {
    if budget == 0 {
        batches.clear();
        return;
    }
    let mut total = 0usize;
    let mut first = true;
    for i in 0..batches.len() {
        let chunk = &batches[i];
        let mut pos = 0usize;
        while pos < chunk.len() {
            let Some(len) = chunk
                .get(pos + 8..pos + 12)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .and_then(|n| usize::try_from(n).ok())
            else {
                return; // not a batch: leave the rest as read
            };
            let size = (12 + len).min(chunk.len() - pos);
            if !first && total + size > budget {
                let keep = chunk.slice(..pos);
                batches.truncate(i);
                if !keep.is_empty() {
                    batches.push(keep);
                }
                return;
            }
            first = false;
            total += size;
            pos += size;
        }
    }
}

pub async fn handle(
    shard: Rc<Services>,
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
    let read_committed = ctx.api_version >= 4 && req.isolation_level == 1;
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

    // The request's partitions, keyed as a session keeps them (v13+ names topics by id).
    let uses_ids = ctx.api_version >= 13;
    let key_of = |name: &str, id: uuid::Uuid| {
        if uses_ids {
            TopicKey::Id(id)
        } else {
            TopicKey::Name(Rc::from(name))
        }
    };
    let requested: Vec<(TopicKey, Vec<(i32, Wanted)>)> = req
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let wanted = Wanted {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                        current_leader_epoch: p.current_leader_epoch,
                        log_start_offset: p.log_start_offset,
                    };
                    (p.partition, wanted)
                })
                .collect();
            (key_of(t.topic.0.as_str(), t.topic_id), parts)
        })
        .collect();
    let plan = match &ctx.fetch_sessions {
        Some(sessions) => {
            let forgotten: Vec<(TopicKey, Vec<i32>)> = req
                .forgotten_topics_data
                .iter()
                .map(|t| (key_of(t.topic.0.as_str(), t.topic_id), t.partitions.clone()))
                .collect();
            sessions.begin(&SessionRequest {
                session_id: req.session_id,
                epoch: req.session_epoch,
                uses_ids,
                broker: ctx.broker.is_some(),
                partitions: &requested,
                forgotten: &forgotten,
            })
        }
        // Outside a connection (no session state): full fetches only.
        None if req.session_epoch == INITIAL_EPOCH || req.session_epoch == FINAL_EPOCH => {
            Plan::Sessionless
        }
        None => Plan::Error(FETCH_SESSION_ID_NOT_FOUND),
    };
    let (session_id, incremental, keyed) = match plan {
        Plan::Error(code) => {
            return Ok(Some(super::fetch_response::encode(
                &ctx,
                code,
                NO_SESSION,
                &[],
                &[],
            )));
        }
        Plan::Sessionless => (NO_SESSION, false, requested),
        Plan::Full { id } => (id, false, requested),
        Plan::Incremental { id, topics } => (id, true, topics),
    };

    // Resolve names (v13+ sends topic ids).
    let mut topics: Vec<FetchTopicSpec> = Vec::with_capacity(keyed.len());
    for (key, parts) in &keyed {
        let (name, id) = match key {
            TopicKey::Name(n) => (Some(n.to_string()), uuid::Uuid::nil()),
            TopicKey::Id(id) => (
                shard.with_image(|i| i.topic_by_id(id.as_bytes()).map(|x| x.name.clone())),
                *id,
            ),
        };
        let parts = parts.iter().map(|(p, w)| (*p, *w)).collect();
        topics.push((name, id, parts));
    }

    // READ on each topic (a proven broker, a super user, or the authorizer off: all).
    let subject = crate::acl::Subject::of(&shard, &ctx);
    let readable: Vec<bool> = shard.with_image(|i| {
        topics
            .iter()
            .map(|(name, _, _)| {
                name.as_deref()
                    .is_none_or(|n| subject.may(i, chronik_raft::acl::Operation::Read, Topic, n))
            })
            .collect()
    });

    let mut results: Vec<Vec<PartitionRead>>;
    loop {
        // Planned per shard: the reads grouped by owner shard, each group read in request
        // order on its owner, all groups at once; then merged in request order.
        let mut plan: BTreeMap<usize, Vec<(usize, ReadSpec)>> = BTreeMap::new();
        let mut slots: Vec<Option<PartitionRead>> = Vec::new();
        let mut limits: Vec<usize> = Vec::new();
        for ((name, _, parts), readable) in topics.iter().zip(&readable) {
            for (partition, w) in parts {
                let (offset, pmax, epoch) =
                    (&w.fetch_offset, &w.max_bytes, &w.current_leader_epoch);
                let slot = slots.len();
                limits.push(*pmax);
                if unauthorized || !readable {
                    slots.push(Some(PartitionRead::error(
                        errors::TOPIC_AUTHORIZATION_FAILED,
                    )));
                    continue;
                }
                let Some(name) = name else {
                    slots.push(Some(PartitionRead::error(errors::UNKNOWN_TOPIC_ID)));
                    continue;
                };
                slots.push(None);
                let spec = ReadSpec {
                    tp: TopicPartition::new(name, *partition),
                    offset: *offset,
                    max_bytes: *pmax,
                    current_leader_epoch: *epoch,
                    replica,
                    replica_log_start: w.log_start_offset,
                    debug,
                    read_committed,
                };
                plan.entry(shard.owner_of(name, *partition))
                    .or_default()
                    .push((slot, spec));
            }
        }
        for (slot, r) in read_planned(&shard, plan, max_bytes).await {
            if let Some(s) = slots.get_mut(slot) {
                *s = Some(r);
            }
        }
        // Kafka: the first batch is returned even beyond max_bytes so progress is always
        // possible (the log read returns at least one batch); after that the request budget
        // applies, over the partitions in request order.
        let mut total = 0usize;
        let mut any_error = false;
        let mut reads = slots.into_iter().zip(limits).map(|(r, pmax)| {
            let mut r = r.unwrap_or_else(|| PartitionRead::error(errors::UNKNOWN_SERVER_ERROR));
            if r.error == errors::NONE {
                trim_to_budget(&mut r.batches, pmax.min(max_bytes.saturating_sub(total)));
            }
            any_error |= r.error != errors::NONE;
            total += r.bytes();
            r
        });
        results = topics
            .iter()
            .map(|(_, _, parts)| reads.by_ref().take(parts.len()).collect())
            .collect();
        drop(reads);
        if total >= min_bytes || any_error || Instant::now() >= deadline {
            break;
        }
        // Long-poll: sleep until one of the partitions gets new data, on each owner shard.
        let mut by_owner: std::collections::BTreeMap<usize, Vec<(TopicPartition, i64)>> =
            Default::default();
        for (name, _, parts) in &topics {
            if let Some(name) = name {
                for (partition, w) in parts {
                    let (offset, pmax) = (&w.fetch_offset, &w.max_bytes);
                    // A partition asked for no bytes reads nothing whatever it holds: it still
                    // wakes the wait, but never counts as readable at once.
                    let offset = if *pmax == 0 { i64::MAX } else { *offset };
                    by_owner
                        .entry(shard.owner_of(name, *partition))
                        .or_default()
                        .push((TopicPartition::new(name, *partition), offset));
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
                        wait_any_local(&s, tps, is_replica, read_committed, deadline).await
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
                        wait_any_local(&s, tps, is_replica, read_committed, deadline).await
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
    // A session's response: remember what it says of each partition; an incremental one
    // lists only the partitions with news (KIP-227).
    let listed: Option<Vec<bool>> = match (&ctx.fetch_sessions, session_id) {
        (Some(sessions), id) if id != NO_SESSION => {
            let mut seen = Vec::new();
            for ((key, parts), reads) in keyed.iter().zip(&results) {
                for ((p, _), r) in parts.iter().zip(reads) {
                    let now = Sent {
                        high_watermark: r.high_watermark,
                        last_stable_offset: r.last_stable_offset,
                        log_start_offset: r.log_start_offset,
                    };
                    seen.push((key, *p, now, r.error, !r.batches.is_empty()));
                }
            }
            Some(sessions.finish(id, !incremental, &seen))
        }
        _ => None,
    };
    let mut listed = listed.into_iter().flatten();
    let endpoints = super::node_endpoints(&shard, ctx.listener.as_deref(), leaders);
    let mut out = Vec::with_capacity(topics.len());
    for ((name, id, parts), reads) in topics.iter().zip(results) {
        let id = name
            .as_ref()
            .and_then(|n| img.topic(n))
            .map_or(*id.as_bytes(), |t| t.id);
        let partitions: Vec<(i32, PartitionRead)> = parts
            .iter()
            .map(|p| p.0)
            .zip(reads)
            .filter(|_| listed.next().unwrap_or(true))
            .collect();
        if incremental && partitions.is_empty() {
            continue;
        }
        out.push(super::fetch_response::TopicReads {
            name: name.as_deref().unwrap_or(""),
            id,
            partitions,
        });
    }
    Ok(Some(super::fetch_response::encode(
        &ctx,
        errors::NONE,
        session_id,
        &out,
        &endpoints,
    )))
}

#[cfg(test)]
mod tests {
    use super::trim_to_budget;
    use bytes::{BufMut, Bytes, BytesMut};

    /// A stand-in batch of `size` bytes: what the trim reads is the length at bytes 8..12.
    fn batch(size: usize) -> BytesMut {
        let mut b = BytesMut::with_capacity(size);
        b.put_i64(0);
        b.put_i32((size - 12) as i32);
        b.resize(size, 0);
        b
    }

    fn chunk(sizes: &[usize]) -> Bytes {
        let mut c = BytesMut::new();
        for s in sizes {
            c.extend_from_slice(&batch(*s));
        }
        c.freeze()
    }

    fn sizes(batches: &[Bytes]) -> Vec<usize> {
        batches.iter().map(Bytes::len).collect()
    }

    #[test]
    fn a_read_is_trimmed_to_whole_batches_within_the_budget_the_first_always_kept() {
        let read = vec![chunk(&[20, 20]), chunk(&[20])];
        let mut r = read.clone();
        trim_to_budget(&mut r, 60);
        assert_eq!(sizes(&r), vec![40, 20], "everything fits");
        let mut r = read.clone();
        trim_to_budget(&mut r, 59);
        assert_eq!(sizes(&r), vec![40]);
        let mut r = read.clone();
        trim_to_budget(&mut r, 39);
        assert_eq!(sizes(&r), vec![20], "cut inside the first chunk");
        let mut r = read.clone();
        trim_to_budget(&mut r, 1);
        assert_eq!(
            sizes(&r),
            vec![20],
            "the first batch even beyond the budget"
        );
        let mut r = read;
        trim_to_budget(&mut r, 0);
        assert!(r.is_empty(), "no budget left: nothing");
    }
}
