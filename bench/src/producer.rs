//! Producer tasks. Each task generates records from a pre-built payload pool, batches them per
//! partition (linger, batch size), sends each round of ready batches to the partitions' leaders
//! over the shared per-broker connections, and counts a message only when its produce response
//! acknowledges it. Many tasks share one connection, so a connection carries many requests in
//! flight. A task keeps at most one batch per partition in flight, so its messages stay in order
//! per partition even across retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::batch::{BatchBuilder, Codec};
use crate::cli::KeyPattern;
use crate::client::errors::{classify, error_name, is_retriable, needs_metadata_refresh};
use crate::metadata::{topic_name, Cluster};
use crate::partitioner::{partition_for_key, KeyGenerator};
use crate::payload::{self, PayloadPool};
use crate::stats::Stats;
use crate::validate::AckTracker;

#[derive(Debug, Clone)]
pub struct ProduceConfig {
    pub topic: String,
    pub partitions: i32,
    pub acks: i16,
    pub codec: Codec,
    pub message_size: usize,
    pub batch_size: usize,
    pub linger: Duration,
    pub request_timeout: Duration,
    pub message_timeout: Duration,
    pub key_pattern: KeyPattern,
    /// Put the validation/timestamp header in each value.
    pub stamp_header: bool,
    /// Messages per second for this task (0 = unlimited).
    pub rate_per_task: f64,
    pub verbose: bool,
    /// How tasks drive the producer (`--producer-model`).
    pub model: ProducerModel,
    /// Requests outstanding per broker and per partition in the record model (`--max-in-flight`).
    pub max_in_flight: usize,
}

pub use crate::cli::ProducerModel;

pub use crate::control::RunControl;

/// What every producer task of a run shares.
#[derive(Clone)]
pub struct ProduceRun {
    pub cfg: Arc<ProduceConfig>,
    pub cluster: Arc<Cluster>,
    pub stats: Arc<Stats>,
    pub control: Arc<RunControl>,
    pub tracker: Option<Arc<AckTracker>>,
    pub pool: Arc<PayloadPool>,
}

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    first_seq: u64,
    count: u64,
    value_bytes: u64,
}

struct ReadyBatch {
    partition: i32,
    records: Bytes,
    created: Instant,
    first_seq: u64,
    count: u64,
    value_bytes: u64,
    attempts: u32,
}

pub struct ProducerTask {
    id: u32,
    run: ProduceRun,
    keys: KeyGenerator,
    rng: StdRng,
    open: Vec<Option<OpenBatch>>,
    retries: Vec<ReadyBatch>,
    next_seq: Vec<u64>,
    generated: u64,
    local_budget: u64,
    budget_spent: bool,
    started: Instant,
}

/// Totals of one task, for the run summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProducerTotals {
    pub generated: u64,
    pub failed: u64,
}

impl ProducerTask {
    pub fn new(id: u32, run: ProduceRun) -> ProducerTask {
        let partitions = run.cfg.partitions.max(1) as usize;
        ProducerTask {
            id,
            keys: KeyGenerator::new(run.cfg.key_pattern, id),
            rng: StdRng::seed_from_u64(0xbe7c_0000 + id as u64),
            open: (0..partitions).map(|_| None).collect(),
            retries: Vec::new(),
            next_seq: vec![0; partitions],
            generated: 0,
            local_budget: 0,
            budget_spent: false,
            started: Instant::now(),
            run,
        }
    }

    pub async fn run(mut self) -> ProducerTotals {
        let mut failed = 0u64;
        // Bounded: generation stops at the deadline or when the budget is spent, and every batch
        // either succeeds, fails for good, or expires after --message-timeout-ms.
        loop {
            let generating = !self.run.control.should_stop() && !self.budget_spent;
            if generating {
                self.fill().await;
            }
            let flush_all = self.run.control.should_stop() || self.budget_spent;
            let ready = self.take_ready(flush_all);
            if ready.is_empty() {
                if flush_all && self.retries.is_empty() && self.open.iter().all(|b| b.is_none()) {
                    break;
                }
                if !generating {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            failed += self.send_round(ready).await;
        }
        ProducerTotals {
            generated: self.generated,
            failed,
        }
    }

    /// Generates records until a batch is full, a linger expires, or the run ends.
    async fn fill(&mut self) {
        let rate = self.run.cfg.rate_per_task;
        let mut since_check = 0u32;
        loop {
            since_check += 1;
            if since_check >= 16 {
                since_check = 0;
                if self.run.control.should_stop() {
                    return;
                }
                if self.linger_expired(Instant::now()) {
                    return;
                }
            }
            if rate > 0.0 {
                let due = self.started + Duration::from_secs_f64(self.generated as f64 / rate);
                let now = Instant::now();
                if due > now {
                    let linger_due = self.earliest_linger_deadline();
                    if let Some(l) = linger_due {
                        if l <= now {
                            return;
                        }
                    }
                    let wake = linger_due
                        .map_or(due, |l| l.min(due))
                        .min(self.run.control.deadline());
                    tokio::time::sleep_until(wake.into()).await;
                    if self.run.control.should_stop() {
                        return;
                    }
                    continue;
                }
            }
            if self.local_budget == 0 {
                self.local_budget = self.run.control.claim(64);
                if self.local_budget == 0 {
                    self.budget_spent = true;
                    return;
                }
            }
            self.local_budget -= 1;
            if self.append_one() {
                return; // a batch is full
            }
        }
    }

    /// Appends one generated record; returns true if its batch is now full.
    fn append_one(&mut self) -> bool {
        let key = self.keys.next_key(&mut self.rng);
        let partition = match self.run.cfg.key_pattern {
            // Keyed like Kafka's default partitioner; sequential keys spread round-robin-like.
            KeyPattern::Fixed | KeyPattern::Random | KeyPattern::Sequential => {
                partition_for_key(key, self.run.cfg.partitions)
            }
        } as usize;
        let value_len = self.run.cfg.message_size;
        let now_ms = payload::now_us() / 1000;
        let seq = self.next_seq[partition];
        let slot = &mut self.open[partition];
        if slot.is_none() {
            *slot = Some(OpenBatch {
                builder: BatchBuilder::new(
                    self.run.cfg.codec,
                    self.run.cfg.batch_size.min(8 * 1024 * 1024),
                ),
                created: Instant::now(),
                first_seq: seq,
                count: 0,
                value_bytes: 0,
            });
        }
        let Some(open) = slot.as_mut() else {
            return false;
        };
        let src = self.run.pool.get(self.generated);
        let stamp = self.run.cfg.stamp_header;
        let producer = self.id;
        open.builder
            .append_with(now_ms, Some(key), value_len, |dst| {
                payload::fill(dst, src, stamp, producer, seq)
            });
        open.count += 1;
        open.value_bytes += value_len as u64;
        self.next_seq[partition] += 1;
        self.generated += 1;
        let next_size = BatchBuilder::record_size_estimate(key.len(), value_len);
        open.builder.size_bytes() + next_size > self.run.cfg.batch_size
    }

    fn earliest_linger_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .flatten()
            .map(|b| b.created + self.run.cfg.linger)
            .min()
    }

    fn linger_expired(&self, now: Instant) -> bool {
        self.earliest_linger_deadline().is_some_and(|d| d <= now)
    }

    /// Retries first; then open batches that are full or lingered long enough (all, when flushing).
    /// At most one batch per partition.
    fn take_ready(&mut self, flush_all: bool) -> Vec<ReadyBatch> {
        let now = Instant::now();
        let mut ready: Vec<ReadyBatch> = std::mem::take(&mut self.retries);
        let mut busy: Vec<bool> = vec![false; self.open.len()];
        for r in &ready {
            if let Some(b) = busy.get_mut(r.partition as usize) {
                *b = true;
            }
        }
        for (p, slot) in self.open.iter_mut().enumerate() {
            if busy[p] {
                continue;
            }
            let take = match slot {
                Some(b) => {
                    flush_all
                        || b.created + self.run.cfg.linger <= now
                        || b.builder.size_bytes()
                            + BatchBuilder::record_size_estimate(16, self.run.cfg.message_size)
                            > self.run.cfg.batch_size
                }
                None => false,
            };
            if !take {
                continue;
            }
            let Some(b) = slot.take() else { continue };
            match b.builder.finish() {
                Ok(records) => ready.push(ReadyBatch {
                    partition: p as i32,
                    records,
                    created: b.created,
                    first_seq: b.first_seq,
                    count: b.count,
                    value_bytes: b.value_bytes,
                    attempts: 0,
                }),
                Err(e) => {
                    self.run.stats.record_error("CLIENT_BATCH_ENCODE_ERROR", 1);
                    self.run.stats.record_failed(b.count);
                    if self.run.cfg.verbose {
                        eprintln!("producer {}: cannot encode batch: {e:#}", self.id);
                    }
                }
            }
        }
        ready
    }

    /// Sends one round of batches (one request per leader, all in flight together) and handles
    /// the responses. Returns the number of messages given up for good.
    async fn send_round(&mut self, ready: Vec<ReadyBatch>) -> u64 {
        let cfg = self.run.cfg.clone();
        let generation = self.run.cluster.generation();
        let mut failed = 0u64;
        let mut needs_refresh = false;
        let mut by_leader: HashMap<i32, Vec<ReadyBatch>> = HashMap::new();
        let info = self.run.cluster.topic(&cfg.topic);
        for b in ready {
            match info.as_ref().and_then(|t| t.leader(b.partition)) {
                Some(leader) => by_leader.entry(leader).or_default().push(b),
                None => {
                    needs_refresh = true;
                    self.run.stats.record_error("CLIENT_NO_LEADER", 1);
                    failed += self.requeue(b);
                }
            }
        }
        let mut in_flight = Vec::with_capacity(by_leader.len());
        for (leader, batches) in by_leader {
            let conn = match self.run.cluster.broker_connection(leader).await {
                Ok(c) => c,
                Err(e) => {
                    self.note_failure(&e, leader);
                    needs_refresh = true;
                    for b in batches {
                        failed += self.requeue(b);
                    }
                    continue;
                }
            };
            let version = match conn.version_of::<ProduceRequest>(3, 9) {
                Ok(v) => v,
                Err(e) => {
                    self.note_failure(&e, leader);
                    for b in batches {
                        self.run.stats.record_failed(b.count);
                        failed += b.count;
                    }
                    continue;
                }
            };
            let parts: Vec<(i32, Bytes)> = batches
                .iter()
                .map(|b| (b.partition, b.records.clone()))
                .collect();
            let req = produce_request(&cfg, &parts);
            if cfg.acks == 0 {
                match conn.send_no_response(&req, version).await {
                    Ok(()) => {
                        for b in &batches {
                            self.run.stats.record_success(b.count, b.value_bytes, None);
                        }
                    }
                    Err(e) => {
                        self.note_failure(&e, leader);
                        for b in batches {
                            failed += self.requeue(b);
                        }
                    }
                }
                continue;
            }
            match conn.start(&req, version, cfg.request_timeout).await {
                Ok(fut) => in_flight.push((leader, batches, fut)),
                Err(e) => {
                    self.note_failure(&e, leader);
                    needs_refresh = true;
                    for b in batches {
                        failed += self.requeue(b);
                    }
                }
            }
        }
        let mut backoff_attempt = 0u32;
        for (leader, batches, fut) in in_flight {
            match fut.await {
                Ok(resp) => {
                    for b in batches {
                        match self.handle_partition(&resp, b) {
                            Outcome::Acked => {}
                            Outcome::Failed(n) => failed += n,
                            Outcome::Retry(b, refresh) => {
                                needs_refresh |= refresh;
                                backoff_attempt = backoff_attempt.max(b.attempts + 1);
                                failed += self.requeue(b);
                            }
                        }
                    }
                }
                Err(e) => {
                    self.note_failure(&e, leader);
                    needs_refresh = true;
                    for b in batches {
                        backoff_attempt = backoff_attempt.max(b.attempts + 1);
                        failed += self.requeue(b);
                    }
                }
            }
        }
        if needs_refresh {
            if let Err(e) = self
                .run
                .cluster
                .refresh(std::slice::from_ref(&cfg.topic), Some(generation))
                .await
            {
                if cfg.verbose {
                    eprintln!("producer {}: metadata refresh failed: {e:#}", self.id);
                }
            }
        }
        if !self.retries.is_empty() {
            let ms = (50u64 << backoff_attempt.min(5)).min(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        failed
    }

    fn note_failure(&self, e: &anyhow::Error, leader: i32) {
        note_request_failure(&self.run.stats, &self.run.cfg, e, leader);
    }

    fn handle_partition(&self, resp: &ProduceResponse, b: ReadyBatch) -> Outcome {
        match judge_partition(&self.run.stats, &self.run.cfg, resp, b.partition) {
            Verdict::Stored => {
                self.run
                    .stats
                    .record_success(b.count, b.value_bytes, Some(b.created.elapsed()));
                if let Some(t) = &self.run.tracker {
                    t.ack(b.partition, self.id, b.first_seq, b.count);
                }
                Outcome::Acked
            }
            Verdict::Retry { refresh } => Outcome::Retry(b, refresh),
            Verdict::Failed => {
                self.run.stats.record_failed(b.count);
                Outcome::Failed(b.count)
            }
        }
    }

    /// Queues a batch for another attempt, unless it is past --message-timeout-ms or the run is
    /// over by more than a request timeout. Returns the messages given up.
    fn requeue(&mut self, mut b: ReadyBatch) -> u64 {
        let expired = b.created.elapsed() >= self.run.cfg.message_timeout
            || Instant::now() >= self.run.control.deadline() + self.run.cfg.request_timeout;
        if expired {
            self.run.stats.record_error("CLIENT_MESSAGE_TIMEOUT", 1);
            self.run.stats.record_failed(b.count);
            return b.count;
        }
        b.attempts += 1;
        self.retries.push(b);
        0
    }
}

/// Counts a failed request (and says why with --verbose).
pub fn note_request_failure(stats: &Stats, cfg: &ProduceConfig, e: &anyhow::Error, leader: i32) {
    stats.record_error(&classify(e), 1);
    if cfg.verbose {
        eprintln!("request to broker {leader} failed: {e:#}");
    }
}

/// The answer for one partition of the topic, if the response has it.
fn partition_response<'a>(
    resp: &'a ProduceResponse,
    topic: &str,
    partition: i32,
) -> Option<&'a PartitionProduceResponse> {
    resp.responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
}

/// What a produce response says of one partition's batch, in either producer model.
pub enum Verdict {
    Stored,
    Retry { refresh: bool },
    Failed,
}

/// Judges one partition's answer and counts its error, if any.
pub fn judge_partition(
    stats: &Stats,
    cfg: &ProduceConfig,
    resp: &ProduceResponse,
    partition: i32,
) -> Verdict {
    let Some(pr) = partition_response(resp, &cfg.topic, partition) else {
        stats.record_error("CLIENT_MISSING_PARTITION_IN_RESPONSE", 1);
        return Verdict::Retry { refresh: true };
    };
    if pr.error_code == 0 {
        if pr.base_offset < 0 {
            // "Success" without an offset is not success: nothing says the data was stored.
            stats.record_error("CLIENT_NO_BASE_OFFSET(-1)", 1);
            return Verdict::Failed;
        }
        return Verdict::Stored;
    }
    stats.record_error(&error_name(pr.error_code), 1);
    if cfg.verbose {
        eprintln!(
            "{}-{partition}: {}{}",
            cfg.topic,
            error_name(pr.error_code),
            pr.error_message
                .as_ref()
                .map(|m| format!(": {}", m.as_str()))
                .unwrap_or_default()
        );
    }
    if is_retriable(pr.error_code) || needs_metadata_refresh(pr.error_code) {
        return Verdict::Retry {
            refresh: needs_metadata_refresh(pr.error_code),
        };
    }
    Verdict::Failed
}

enum Outcome {
    Acked,
    Failed(u64),
    Retry(ReadyBatch, bool),
}

/// One request carrying a batch for each (partition, records) pair.
pub fn produce_request(cfg: &ProduceConfig, batches: &[(i32, Bytes)]) -> ProduceRequest {
    let mut topic = TopicProduceData::default();
    topic.name = topic_name(&cfg.topic);
    topic.partition_data = batches
        .iter()
        .map(|(partition, records)| {
            let mut p = PartitionProduceData::default();
            p.index = *partition;
            p.records = Some(records.clone());
            p
        })
        .collect();
    let mut req = ProduceRequest::default();
    req.acks = cfg.acks;
    req.timeout_ms = cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32;
    req.topic_data = vec![topic];
    req
}

/// Runs `concurrency` producer tasks to completion, in the configured model.
pub async fn run_producers(concurrency: usize, run: ProduceRun) -> Result<ProducerTotals> {
    if run.cfg.model == ProducerModel::Record {
        return crate::record_producer::run(concurrency, run).await;
    }
    let handles: Vec<_> = (0..concurrency)
        .map(|id| tokio::spawn(ProducerTask::new(id as u32, run.clone()).run()))
        .collect();
    sum_totals(handles).await
}

/// The totals of every producer task, once all have finished.
pub async fn sum_totals(
    handles: Vec<tokio::task::JoinHandle<ProducerTotals>>,
) -> Result<ProducerTotals> {
    let mut totals = ProducerTotals::default();
    for h in handles {
        let t = h.await?;
        totals.generated += t.generated;
        totals.failed += t.failed;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_never_overdrawn() {
        let c = RunControl::new(Instant::now() + Duration::from_secs(60), Some(100));
        assert_eq!(c.claim(64), 64);
        assert_eq!(c.claim(64), 36);
        assert_eq!(c.claim(64), 0);
        let unlimited = RunControl::new(Instant::now() + Duration::from_secs(60), None);
        assert_eq!(unlimited.claim(64), 64);
        assert!(!unlimited.should_stop());
        unlimited.stop();
        assert!(unlimited.should_stop());
    }
}
