//! `--producer-model record`: each task sends one record at a time and awaits its
//! acknowledgement, the way an application drives a Kafka client's future-returning `send`
//! (and the way chronik-stream's bench drives librdkafka). The records of all tasks go into one
//! shared accumulator with an open batch per partition, as in a Kafka client's producer, and a
//! dispatcher sends them the way the Java client's sender thread does: a broker is ready once
//! one of the partitions it leads holds a full batch or one whose linger has passed; one request
//! to it then takes a batch from every partition it leads that holds one (up to
//! `MAX_REQUEST_BYTES`), with up to `--max-in-flight` requests outstanding per broker and per
//! partition. Over many partitions a request therefore carries many partitions' batches, as a
//! Kafka client's would (one request per batch made 1,000-partition runs measure request count,
//! not the broker). Concurrency is the number of records in flight, and latency is measured per
//! record, from `send` to its acknowledgement.
//!
//! Each task has one record in flight, so every task's records stay in order per partition
//! whatever order batches complete in: a task is one validation stream.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::batch::BatchBuilder;
use crate::partitioner::{partition_for_key, KeyGenerator};
use crate::payload::{self, PayloadHeader};
use crate::producer::{
    judge_partition, note_request_failure, produce_request, ProduceRun, ProducerTotals, Verdict,
};

/// Bytes of batches one produce request carries at most (the Java client's `max.request.size`).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// One record waiting for its batch's answer.
struct Waiter {
    done: oneshot::Sender<bool>,
    sent: Instant,
    task: u32,
    seq: u64,
}

/// A batch being filled or waiting to be sent.
struct Pending {
    builder: BatchBuilder,
    created: Instant,
    waiters: Vec<Waiter>,
}

/// A batch taken for sending, encoded.
struct Encoded {
    partition: usize,
    records: Bytes,
    created: Instant,
    waiters: Vec<Waiter>,
}

/// One partition's share of the accumulator.
#[derive(Default)]
struct Queue {
    open: Option<Pending>,
    full: VecDeque<Pending>,
    /// Batches taken and not yet answered (acknowledged or given up).
    in_flight: usize,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.open.is_none() && self.full.is_empty()
    }

    /// When this partition's next batch is ready to go: at once for a full batch (or when the
    /// run is flushing), at the open batch's linger otherwise; `None` without a batch.
    fn ready_at(&self, linger: Duration, flush: bool) -> Option<Instant> {
        if let Some(b) = self.full.front() {
            return Some(b.created);
        }
        self.open
            .as_ref()
            .map(|b| if flush { b.created } else { b.created + linger })
    }
}

/// Everything the tasks and the dispatcher share.
struct Shared {
    run: ProduceRun,
    // The bench runs on tokio's multi-thread runtime; these locks are held only to append one
    // record or take a batch (never across an await). Lock order: a partition's queue, then
    // `holding`.
    partitions: Vec<Mutex<Queue>>,
    /// Partitions whose queue holds a batch: the dispatcher looks at these only.
    holding: Mutex<BTreeSet<usize>>,
    /// Wakes the dispatcher: a new or full batch, an answered request.
    wake: Notify,
    /// Set once every task has finished: the dispatcher drains and exits.
    closed: AtomicBool,
    failed: AtomicUsize,
}

impl Shared {
    /// Appends one record to its partition's open batch; the receiver answers whether it was
    /// acknowledged.
    fn append(
        &self,
        partition: usize,
        key: &[u8],
        value: &[u8],
        header: Option<PayloadHeader>,
    ) -> Option<oneshot::Receiver<bool>> {
        let pq = self.partitions.get(partition)?;
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let wake = {
            let Ok(mut q) = pq.lock() else {
                return None;
            };
            if q.is_empty() {
                if let Ok(mut h) = self.holding.lock() {
                    h.insert(partition);
                }
            }
            let open = q.open.get_or_insert_with(|| Pending {
                builder: BatchBuilder::new(
                    self.run.cfg.codec,
                    self.run.cfg.batch_size.min(8 * 1024 * 1024),
                ),
                created: now,
                waiters: Vec::new(),
            });
            let now_ms = payload::now_us() / 1000;
            open.builder
                .append_with(now_ms, Some(key), value.len(), |dst| {
                    dst.copy_from_slice(value);
                    if let Some(h) = header {
                        payload::stamp(dst, h);
                    }
                });
            open.waiters.push(Waiter {
                done: tx,
                sent: now,
                task: header.map_or(0, |h| h.producer),
                seq: header.map_or(0, |h| h.seq),
            });
            let next = BatchBuilder::record_size_estimate(key.len(), value.len());
            if open.builder.size_bytes() + next > self.run.cfg.batch_size {
                if let Some(b) = q.open.take() {
                    q.full.push_back(b);
                }
                true
            } else {
                // The first record of a batch starts its linger: the dispatcher must learn of it.
                open.waiters.len() == 1
            }
        };
        if wake {
            self.wake.notify_one();
        }
        Some(rx)
    }

    /// Takes `partition`'s next batch for a request (a full one first, else the open one,
    /// lingered or not: it rides along with a request its broker sends anyway).
    fn take(&self, partition: usize) -> Option<Pending> {
        let mut q = self.partitions.get(partition)?.lock().ok()?;
        let b = q.full.pop_front().or_else(|| q.open.take())?;
        q.in_flight += 1;
        if q.is_empty() {
            if let Ok(mut h) = self.holding.lock() {
                h.remove(&partition);
            }
        }
        Some(b)
    }

    /// A batch of `partition` taken by `take` has its answer.
    fn answered(&self, partition: usize) {
        if let Some(Ok(mut q)) = self.partitions.get(partition).map(|m| m.lock()) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        self.wake.notify_one();
    }
}

/// Runs `concurrency` record-at-a-time tasks over one shared accumulator to completion.
pub async fn run(concurrency: usize, run: ProduceRun) -> Result<ProducerTotals> {
    let partitions = run.cfg.partitions.max(1) as usize;
    let shared = Arc::new(Shared {
        partitions: (0..partitions)
            .map(|_| Mutex::new(Queue::default()))
            .collect(),
        holding: Mutex::new(BTreeSet::new()),
        wake: Notify::new(),
        run,
        closed: AtomicBool::new(false),
        failed: AtomicUsize::new(0),
    });
    let dispatcher = tokio::spawn(dispatch(shared.clone()));
    let tasks: Vec<_> = (0..concurrency)
        .map(|id| tokio::spawn(task(shared.clone(), id as u32)))
        .collect();
    let mut totals = ProducerTotals::default();
    for t in tasks {
        totals.generated += t.await?;
    }
    shared.closed.store(true, Ordering::SeqCst);
    shared.wake.notify_one();
    dispatcher.await?;
    totals.failed = shared.failed.load(Ordering::Relaxed) as u64;
    Ok(totals)
}

/// One application thread: send a record, await its answer, repeat. Returns records generated.
async fn task(shared: Arc<Shared>, id: u32) -> u64 {
    let cfg = shared.run.cfg.clone();
    let mut keys = KeyGenerator::new(cfg.key_pattern, id);
    let mut rng = StdRng::seed_from_u64(0xbe7c_0000 + id as u64);
    let mut next_seq = vec![0u64; shared.partitions.len()];
    let mut generated = 0u64;
    let started = Instant::now();
    // Bounded: the deadline or the message budget ends the loop, and every record's answer
    // comes (acknowledged, failed, or expired by --message-timeout-ms).
    while !shared.run.control.should_stop() {
        if cfg.rate_per_task > 0.0 {
            let due = started + Duration::from_secs_f64(generated as f64 / cfg.rate_per_task);
            if due > Instant::now() {
                tokio::time::sleep_until(due.min(shared.run.control.deadline()).into()).await;
                continue;
            }
        }
        if shared.run.control.claim(1) == 0 {
            break;
        }
        let key = keys.next_key(&mut rng);
        let partition = partition_for_key(key, cfg.partitions) as usize;
        let seq = next_seq.get(partition).copied().unwrap_or(0);
        let header = cfg.stamp_header.then(|| PayloadHeader {
            producer: id,
            seq,
            timestamp_us: payload::now_us(),
        });
        let Some(rx) = shared.append(partition, key, shared.run.pool.get(generated), header) else {
            break;
        };
        generated += 1;
        if let Some(s) = next_seq.get_mut(partition) {
            *s += 1;
        }
        // A dropped sender means the record was given up (counted by the sender).
        let _acked = rx.await.unwrap_or(false);
    }
    generated
}

/// Sends ready batches as the Java client's sender does: each broker with a ready partition
/// (a full batch, or an open one past its linger) and a free request slot gets one request with
/// a batch from every partition it leads that holds one and has a slot of its own.
async fn dispatch(shared: Arc<Shared>) {
    let cfg = shared.run.cfg.clone();
    let max = cfg.max_in_flight.max(1);
    let mut slots: HashMap<i32, Arc<Semaphore>> = HashMap::new();
    let mut requests = JoinSet::new();
    loop {
        while requests.try_join_next().is_some() {}
        let closed = shared.closed.load(Ordering::SeqCst);
        let flush = closed || shared.run.control.should_stop();
        let holding: Vec<usize> = shared
            .holding
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        if closed && holding.is_empty() {
            break;
        }
        let now = Instant::now();
        let topic = shared.run.cluster.topic(&cfg.topic);
        // Per leader (-1: none known): whether one of its partitions is ready, and the
        // partitions with a batch and a free slot.
        let mut leaders: BTreeMap<i32, (bool, Vec<usize>)> = BTreeMap::new();
        let mut next: Option<Instant> = None;
        for p in holding {
            let Some(Ok(q)) = shared.partitions.get(p).map(|m| m.lock()) else {
                continue;
            };
            if q.in_flight >= max {
                continue; // an answer wakes the dispatcher
            }
            let Some(at) = q.ready_at(cfg.linger, flush) else {
                continue;
            };
            let ready = at <= now;
            if !ready {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            let leader = topic
                .as_ref()
                .and_then(|t| t.leader(p as i32))
                .unwrap_or(-1);
            let e = leaders.entry(leader).or_default();
            e.0 |= ready;
            e.1.push(p);
        }
        for (leader, (ready, parts)) in leaders {
            if !ready {
                continue;
            }
            let slot = slots
                .entry(leader)
                .or_insert_with(|| Arc::new(Semaphore::new(max)))
                .clone();
            let Ok(permit) = slot.try_acquire_owned() else {
                continue; // an answer wakes the dispatcher
            };
            let mut batches = Vec::new();
            let mut bytes = 0;
            for p in parts {
                if bytes >= MAX_REQUEST_BYTES {
                    break;
                }
                if let Some(b) = shared.take(p) {
                    bytes += b.builder.size_bytes();
                    batches.push((p, b));
                }
            }
            if !batches.is_empty() {
                let shared = shared.clone();
                requests.spawn(async move { send_request(shared, leader, batches, permit).await });
            }
        }
        // Wake on a new batch or an answer, at the next linger, or to notice the run's end
        // (once it has ended, `stopped` is always ready: polling it would spin).
        let idle = Duration::from_millis(if flush { 5 } else { 50 });
        let wait = next.unwrap_or(now + idle);
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(wait.into()) => {}
            _ = shared.run.control.stopped(), if !flush => {}
        }
    }
    while requests.join_next().await.is_some() {}
}

/// How one attempt at a produce request ended.
enum Attempt {
    Answered(ProduceResponse),
    /// acks=0: sent, no answer to wait for.
    Sent,
    Retry,
    Fail,
}

/// Sends one request with `parts` to `leader` (-1: unknown) and waits for its answer.
async fn attempt(shared: &Shared, leader: i32, parts: &[(i32, Bytes)]) -> Attempt {
    let cfg = &shared.run.cfg;
    if leader < 0 {
        shared.run.stats.record_error("CLIENT_NO_LEADER", 1);
        return Attempt::Retry;
    }
    let conn = match shared.run.cluster.broker_connection(leader).await {
        Ok(c) => c,
        Err(e) => {
            note_request_failure(&shared.run.stats, cfg, &e, leader);
            return Attempt::Retry;
        }
    };
    let version = match conn.version_of::<ProduceRequest>(3, 9) {
        Ok(v) => v,
        Err(e) => {
            note_request_failure(&shared.run.stats, cfg, &e, leader);
            return Attempt::Fail;
        }
    };
    let req = produce_request(cfg, parts);
    if cfg.acks == 0 {
        return match conn.send_no_response(&req, version).await {
            Ok(()) => Attempt::Sent,
            Err(e) => {
                note_request_failure(&shared.run.stats, cfg, &e, leader);
                Attempt::Retry
            }
        };
    }
    let resp = match conn.start(&req, version, cfg.request_timeout).await {
        Ok(fut) => fut.await,
        Err(e) => Err(e),
    };
    match resp {
        Ok(r) => Attempt::Answered(r),
        Err(e) => {
            note_request_failure(&shared.run.stats, cfg, &e, leader);
            Attempt::Retry
        }
    }
}

/// Sends one request carrying `batches` to `leader`, holding one of its request slots until
/// the answer; a batch the answer says to retry is retried on its own.
async fn send_request(
    shared: Arc<Shared>,
    leader: i32,
    batches: Vec<(usize, Pending)>,
    slot: OwnedSemaphorePermit,
) {
    let mut encoded = Vec::with_capacity(batches.len());
    for (partition, batch) in batches {
        match batch.builder.finish() {
            Ok(records) => encoded.push(Encoded {
                partition,
                records,
                created: batch.created,
                waiters: batch.waiters,
            }),
            Err(e) => {
                shared
                    .run
                    .stats
                    .record_error("CLIENT_BATCH_ENCODE_ERROR", 1);
                if shared.run.cfg.verbose {
                    eprintln!("partition {partition}: cannot encode batch: {e:#}");
                }
                give_up(&shared, batch.waiters);
                shared.answered(partition);
            }
        }
    }
    if encoded.is_empty() {
        return;
    }
    let parts: Vec<(i32, Bytes)> = encoded
        .iter()
        .map(|e| (e.partition as i32, e.records.clone()))
        .collect();
    let outcome = attempt(&shared, leader, &parts).await;
    drop(slot);
    for e in encoded {
        let verdict = match &outcome {
            Attempt::Answered(resp) => {
                judge_partition(&shared.run.stats, &shared.run.cfg, resp, e.partition as i32)
            }
            Attempt::Sent => Verdict::Stored,
            Attempt::Retry => Verdict::Retry { refresh: true },
            Attempt::Fail => Verdict::Failed,
        };
        let partition = e.partition;
        match verdict {
            Verdict::Stored => acknowledge(&shared, partition as i32, e.waiters),
            Verdict::Failed => give_up(&shared, e.waiters),
            Verdict::Retry { .. } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    retry_until_done(&shared, e).await;
                    shared.answered(partition);
                });
                continue;
            }
        }
        shared.answered(partition);
    }
}

/// Retries one batch on its own, as Kafka says to retry (metadata refreshed, backoff), until it
/// is acknowledged, fails for good, or passes --message-timeout-ms; then answers its records.
async fn retry_until_done(shared: &Shared, batch: Encoded) {
    let cfg = &shared.run.cfg;
    let partition = batch.partition as i32;
    let parts = [(partition, batch.records.clone())];
    let mut attempt_no = 1u32;
    loop {
        if batch.created.elapsed() >= cfg.message_timeout
            || Instant::now() >= shared.run.control.deadline() + cfg.request_timeout
        {
            shared.run.stats.record_error("CLIENT_MESSAGE_TIMEOUT", 1);
            return give_up(shared, batch.waiters);
        }
        let generation = shared.run.cluster.generation();
        let _ = shared
            .run
            .cluster
            .refresh(std::slice::from_ref(&cfg.topic), Some(generation))
            .await;
        let ms = (50u64 << attempt_no.min(5)).min(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        attempt_no += 1;
        let leader = shared
            .run
            .cluster
            .topic(&cfg.topic)
            .and_then(|t| t.leader(partition))
            .unwrap_or(-1);
        let verdict = match attempt(shared, leader, &parts).await {
            Attempt::Answered(resp) => judge_partition(&shared.run.stats, cfg, &resp, partition),
            Attempt::Sent => Verdict::Stored,
            Attempt::Retry => Verdict::Retry { refresh: true },
            Attempt::Fail => Verdict::Failed,
        };
        match verdict {
            Verdict::Stored => return acknowledge(shared, partition, batch.waiters),
            Verdict::Retry { .. } => {}
            Verdict::Failed => return give_up(shared, batch.waiters),
        }
    }
}

fn acknowledge(shared: &Shared, partition: i32, waiters: Vec<Waiter>) {
    let now = Instant::now();
    let latencies: Vec<Duration> = waiters.iter().map(|w| now - w.sent).collect();
    shared.run.stats.record_each(
        shared.run.cfg.message_size as u64,
        shared.run.cfg.acks != 0,
        &latencies,
    );
    for w in waiters {
        if let Some(t) = &shared.run.tracker {
            t.ack(partition, w.task, w.seq, 1);
        }
        let _ = w.done.send(true);
    }
}

fn give_up(shared: &Shared, waiters: Vec<Waiter>) {
    shared.run.stats.record_failed(waiters.len() as u64);
    shared.failed.fetch_add(waiters.len(), Ordering::Relaxed);
    for w in waiters {
        let _ = w.done.send(false);
    }
}
