//! `--producer-model record`: each task sends one record at a time and awaits its
//! acknowledgement, the way an application drives a Kafka client's future-returning `send`
//! (and the way chronik-stream's bench drives librdkafka). The records of all tasks go into one
//! shared accumulator with an open batch per partition, as in a Kafka client's producer; a sender
//! per partition ships a batch when it is full or its linger has passed, with up to
//! `--max-in-flight` requests per partition outstanding. Concurrency is therefore the number of
//! records in flight, and latency is measured per record, from `send` to its acknowledgement.
//!
//! Each task has one record in flight, so every task's records stay in order per partition
//! whatever order batches complete in: a task is one validation stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::batch::BatchBuilder;
use crate::partitioner::{partition_for_key, KeyGenerator};
use crate::payload::{self, PayloadHeader};
use crate::producer::{
    judge_partition, note_request_failure, produce_request, ProduceRun, ProducerTotals, Verdict,
};

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

#[derive(Default)]
struct Queue {
    open: Option<Pending>,
    full: VecDeque<Pending>,
}

/// One partition's share of the accumulator.
struct PartitionQueue {
    // The bench runs on tokio's multi-thread runtime; this lock is held only to append one record
    // or take a batch (never across an await).
    queue: Mutex<Queue>,
    wake: Notify,
}

/// Everything the tasks and senders share.
struct Shared {
    run: ProduceRun,
    partitions: Vec<PartitionQueue>,
    /// Set once every task has finished: senders drain and exit.
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
        let full = {
            let Ok(mut q) = pq.queue.lock() else {
                return None;
            };
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
                // The first record of a batch starts its linger: the sender must learn of it.
                open.waiters.len() == 1
            }
        };
        if full {
            pq.wake.notify_one();
        }
        Some(rx)
    }

    /// Takes the next batch to send: a full one, or the open one once its linger has passed (at
    /// once when the run is stopping). Otherwise tells when to look again.
    fn take(&self, partition: usize) -> Result<Pending, Option<Instant>> {
        let Some(pq) = self.partitions.get(partition) else {
            return Err(None);
        };
        let Ok(mut q) = pq.queue.lock() else {
            return Err(None);
        };
        if let Some(b) = q.full.pop_front() {
            return Ok(b);
        }
        let flush = self.run.control.should_stop() || self.closed.load(Ordering::SeqCst);
        match q.open.as_ref() {
            Some(b) if flush || b.created + self.run.cfg.linger <= Instant::now() => {
                q.open.take().ok_or(None)
            }
            Some(b) => Err(Some(b.created + self.run.cfg.linger)),
            None => Err(None),
        }
    }
}

/// Runs `concurrency` record-at-a-time tasks over one shared accumulator to completion.
pub async fn run(concurrency: usize, run: ProduceRun) -> Result<ProducerTotals> {
    let partitions = run.cfg.partitions.max(1) as usize;
    let shared = Arc::new(Shared {
        partitions: (0..partitions)
            .map(|_| PartitionQueue {
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
            })
            .collect(),
        run,
        closed: AtomicBool::new(false),
        failed: AtomicUsize::new(0),
    });
    let senders: Vec<_> = (0..partitions)
        .map(|p| tokio::spawn(sender(shared.clone(), p)))
        .collect();
    let tasks: Vec<_> = (0..concurrency)
        .map(|id| tokio::spawn(task(shared.clone(), id as u32)))
        .collect();
    let mut totals = ProducerTotals::default();
    for t in tasks {
        totals.generated += t.await?;
    }
    shared.closed.store(true, Ordering::SeqCst);
    for pq in &shared.partitions {
        pq.wake.notify_one();
    }
    for s in senders {
        s.await?;
    }
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

/// Ships one partition's batches, keeping up to `max_in_flight` requests outstanding.
async fn sender(shared: Arc<Shared>, partition: usize) {
    let max = shared.run.cfg.max_in_flight.max(1);
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let batch = match shared.take(partition) {
            Ok(b) => b,
            Err(next) => {
                if shared.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Some(pq) = shared.partitions.get(partition) else {
                    break;
                };
                // Wake on a new batch, at the open batch's linger, or to notice the run's end
                // (once it has ended, `stopped` is always ready: polling it would spin).
                let stopping = shared.run.control.should_stop();
                let idle = Duration::from_millis(if stopping { 5 } else { 50 });
                let wait = next.unwrap_or_else(|| Instant::now() + idle);
                tokio::select! {
                    _ = pq.wake.notified() => {}
                    _ = tokio::time::sleep_until(wait.into()) => {}
                    _ = shared.run.control.stopped(), if !stopping => {}
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            send_until_done(&shared, partition as i32, batch).await;
            drop(permit);
        });
    }
    // Wait for the requests still out.
    let _all = permits.acquire_many(max as u32).await;
}

/// Sends one batch, retrying what Kafka says to retry, until it is acknowledged, fails for good,
/// or passes --message-timeout-ms; then answers its records.
async fn send_until_done(shared: &Shared, partition: i32, batch: Pending) {
    let cfg = &shared.run.cfg;
    let records = match batch.builder.finish() {
        Ok(r) => r,
        Err(e) => {
            shared
                .run
                .stats
                .record_error("CLIENT_BATCH_ENCODE_ERROR", 1);
            if cfg.verbose {
                eprintln!("partition {partition}: cannot encode batch: {e:#}");
            }
            return give_up(shared, batch.waiters);
        }
    };
    let parts = [(partition, records)];
    let mut attempt = 0u32;
    loop {
        if attempt > 0 {
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
            let ms = (50u64 << attempt.min(5)).min(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        attempt += 1;
        let leader = shared
            .run
            .cluster
            .topic(&cfg.topic)
            .and_then(|t| t.leader(partition));
        let Some(leader) = leader else {
            shared.run.stats.record_error("CLIENT_NO_LEADER", 1);
            continue;
        };
        let conn = match shared.run.cluster.broker_connection(leader).await {
            Ok(c) => c,
            Err(e) => {
                note_request_failure(&shared.run.stats, cfg, &e, leader);
                continue;
            }
        };
        let version = match conn.version_of::<kafka_protocol::messages::ProduceRequest>(3, 9) {
            Ok(v) => v,
            Err(e) => {
                note_request_failure(&shared.run.stats, cfg, &e, leader);
                return give_up(shared, batch.waiters);
            }
        };
        let req = produce_request(cfg, &parts);
        if cfg.acks == 0 {
            match conn.send_no_response(&req, version).await {
                Ok(()) => return acknowledge(shared, partition, batch.waiters),
                Err(e) => {
                    note_request_failure(&shared.run.stats, cfg, &e, leader);
                    continue;
                }
            }
        }
        let resp = match conn.start(&req, version, cfg.request_timeout).await {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                note_request_failure(&shared.run.stats, cfg, &e, leader);
                continue;
            }
        };
        // A retry refreshes metadata anyway, so the verdict's refresh flag is not needed here.
        match judge_partition(&shared.run.stats, cfg, &resp, partition) {
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
