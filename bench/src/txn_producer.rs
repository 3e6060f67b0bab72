//! Transactional producer tasks (`--transactional`). Each task is one transactional producer, as
//! a Kafka client with its own `transactional.id` is: it finds its transaction coordinator
//! (FindCoordinator key type 1), gets a producer id and epoch (InitProducerId), and then loops:
//! generate `--transaction-size` records, register the partitions they go to
//! (AddPartitionsToTxn), send them as transactional batches carrying the producer id, epoch and
//! per-partition sequence, and commit (EndTxn). A record counts only once its transaction is
//! committed. Any failure inside a transaction aborts it, gives its records up, and starts the
//! producer afresh with InitProducerId (which bumps the epoch and restarts the sequences).
//!
//! The coordinator gets the task's own connection, as a Kafka producer has its own: a broker
//! answers one connection's requests in order, and an EndTxn waiting for its markers must not
//! hold back other tasks' produce requests. Produce requests go over the shared connections.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ProduceRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::batch::{BatchBuilder, BatchProducer};
use crate::client::errors::error_name;
use crate::client::Connection;
use crate::partitioner::{partition_for_key, KeyGenerator};
use crate::payload;
use crate::producer::{judge_partition, produce_request, ProduceRun, ProducerTotals, Verdict};
use crate::stats::{new_histogram, record_latency, LatencySummary};

/// Kafka error codes the transactional steps retry after a short back-off.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const CONCURRENT_TRANSACTIONS: i16 = 51;

/// The transaction settings of a run.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// Records per transaction (`--transaction-size`).
    pub transaction_size: u64,
    /// `transaction.timeout.ms` sent with InitProducerId.
    pub transaction_timeout_ms: i32,
    /// Prefix of each task's `transactional.id` (the task number is appended).
    pub transactional_id_prefix: String,
    /// How long to wait before retrying a retriable step, CONCURRENT_TRANSACTIONS above all (the
    /// previous transaction's markers are still being written). Kafka's Java producer waits 20 ms.
    pub retry_backoff: Duration,
}

/// What the transactional tasks of a run did, beyond the message counts.
#[derive(Debug, Default)]
pub struct TxnTotals {
    pub committed: u64,
    pub aborted: u64,
    /// Control batches (markers) the committed and aborted transactions wrote: one per
    /// partition a transaction registered.
    pub markers: u64,
    /// Records sent in transactions that were aborted (stored, but never visible to
    /// read_committed readers).
    pub aborted_records: u64,
    /// EndTxn(commit) round trips, measured transactions only.
    pub commit_latency: LatencySummary,
    /// From a commit's EndTxn answer to the next transaction's AddPartitionsToTxn accepted: how
    /// long a producer waits for the previous transaction's markers (CONCURRENT_TRANSACTIONS).
    pub marker_wait: LatencySummary,
}

/// Counters the tasks share.
struct Shared {
    commit_latency: Mutex<Histogram<u64>>,
    marker_wait: Mutex<Histogram<u64>>,
    committed: std::sync::atomic::AtomicU64,
    aborted: std::sync::atomic::AtomicU64,
    markers: std::sync::atomic::AtomicU64,
    aborted_records: std::sync::atomic::AtomicU64,
}

/// The records of one transaction for one partition, split into batches of `--batch-size`.
struct PartitionTxn {
    batches: Vec<(Bytes, u64)>,
    /// First payload sequence (the validator's per-task sequence) of the transaction here.
    first_payload_seq: u64,
    count: u64,
    value_bytes: u64,
}

pub struct TxnProducerTask {
    id: u32,
    run: ProduceRun,
    txn: Arc<TxnConfig>,
    shared: Arc<Shared>,
    transactional_id: String,
    keys: KeyGenerator,
    rng: StdRng,
    coordinator: Option<Arc<Connection>>,
    producer_id: i64,
    epoch: i16,
    /// Next broker sequence per partition, for this producer id and epoch.
    sequence: Vec<i32>,
    /// Next payload sequence per partition; rolled back when a transaction aborts, so the
    /// committed records of a task form one gap-free sequence per partition.
    payload_seq: Vec<u64>,
    generated: u64,
    failed: u64,
    /// When the last commit's EndTxn was answered.
    last_commit: Option<Instant>,
}

impl TxnProducerTask {
    fn new(id: u32, run: ProduceRun, txn: Arc<TxnConfig>, shared: Arc<Shared>) -> Self {
        let partitions = run.cfg.partitions.max(1) as usize;
        TxnProducerTask {
            id,
            transactional_id: format!("{}-{id}", txn.transactional_id_prefix),
            keys: KeyGenerator::new(run.cfg.key_pattern, id),
            rng: StdRng::seed_from_u64(0x7c70_0000 + id as u64),
            coordinator: None,
            producer_id: -1,
            epoch: -1,
            sequence: vec![0; partitions],
            payload_seq: vec![0; partitions],
            generated: 0,
            failed: 0,
            last_commit: None,
            run,
            txn,
            shared,
        }
    }

    fn deadline(&self) -> Instant {
        self.run.control.deadline() + self.run.cfg.request_timeout
    }

    async fn run(mut self) -> ProducerTotals {
        // Bounded: each transaction claims its records from the run's budget and stops at the
        // deadline; every retry loop below gives up at the deadline plus a request timeout.
        let mut initialised = false;
        while !self.run.control.should_stop() {
            if !initialised {
                match self.init().await {
                    Ok(()) => initialised = true,
                    Err(e) => {
                        self.note("InitProducerId", &e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let want = self.txn.transaction_size;
            let got = self.run.control.claim(want);
            if got == 0 {
                break;
            }
            self.generated += got;
            if let Err(e) = self.one_transaction(got).await {
                self.note("transaction", &e);
                self.failed += got;
                self.run.stats.record_failed(got);
                initialised = false;
            }
        }
        ProducerTotals {
            generated: self.generated,
            failed: self.failed,
        }
    }

    fn note(&self, step: &str, e: &anyhow::Error) {
        self.run.stats.record_error(&crate::client::classify(e), 1);
        if self.run.cfg.verbose {
            eprintln!("transactional producer {}: {step}: {e:#}", self.id);
        }
    }

    /// The coordinator connection, found and opened when needed.
    async fn coordinator(&mut self) -> Result<Arc<Connection>> {
        if let Some(c) = &self.coordinator {
            if !c.is_broken() {
                return Ok(c.clone());
            }
        }
        let timeout = self.run.cfg.request_timeout;
        loop {
            let any = self.run.cluster.any_connection().await?;
            let v = any.version_of::<FindCoordinatorRequest>(1, 3)?;
            let mut fc = FindCoordinatorRequest::default();
            fc.key = StrBytes::from_string(self.transactional_id.clone());
            fc.key_type = 1;
            let resp = any.call(&fc, v, timeout).await?;
            if resp.error_code != 0 {
                self.retry_or_fail(resp.error_code, "FindCoordinator")
                    .await?;
                continue;
            }
            let addr = format!("{}:{}", resp.host.as_str(), resp.port);
            let conn = Connection::connect(&addr, "chronik-bench", timeout, any.security())
                .await
                .with_context(|| format!("connecting to transaction coordinator at {addr}"))?;
            self.coordinator = Some(conn.clone());
            return Ok(conn);
        }
    }

    /// Sleeps and returns Ok for the errors worth retrying, until the deadline.
    async fn retry_or_fail(&mut self, code: i16, step: &str) -> Result<()> {
        let retriable = matches!(
            code,
            COORDINATOR_LOAD_IN_PROGRESS
                | COORDINATOR_NOT_AVAILABLE
                | NOT_COORDINATOR
                | CONCURRENT_TRANSACTIONS
        );
        if !retriable || Instant::now() >= self.deadline() {
            bail!("{step}: {}", error_name(code));
        }
        self.run.stats.record_error(&error_name(code), 1);
        if code != CONCURRENT_TRANSACTIONS {
            self.coordinator = None;
        }
        tokio::time::sleep(self.txn.retry_backoff).await;
        Ok(())
    }

    /// InitProducerId: a new epoch for this transactional id; sequences restart at 0.
    async fn init(&mut self) -> Result<()> {
        loop {
            let conn = self.coordinator().await?;
            let v = conn.version_of::<InitProducerIdRequest>(0, 4)?;
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = Some(TransactionalId(StrBytes::from_string(
                self.transactional_id.clone(),
            )));
            req.transaction_timeout_ms = self.txn.transaction_timeout_ms;
            req.producer_id = ProducerId(-1);
            req.producer_epoch = -1;
            let resp = conn.call(&req, v, self.run.cfg.request_timeout).await?;
            if resp.error_code != 0 {
                self.retry_or_fail(resp.error_code, "InitProducerId")
                    .await?;
                continue;
            }
            self.producer_id = resp.producer_id.0;
            self.epoch = resp.producer_epoch;
            self.sequence.iter_mut().for_each(|s| *s = 0);
            self.last_commit = None;
            return Ok(());
        }
    }

    /// Generates `count` records, sends them in one transaction and commits it.
    async fn one_transaction(&mut self, count: u64) -> Result<()> {
        let started = Instant::now();
        let rollback = self.payload_seq.clone();
        let parts = self.generate(count)?;
        let result = self.send_and_commit(&parts).await;
        match result {
            Ok(commit_latency) => {
                self.shared
                    .committed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.shared
                    .markers
                    .fetch_add(parts.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if self.run.stats.is_measuring() {
                    if let Ok(mut h) = self.shared.commit_latency.lock() {
                        record_latency(&mut h, commit_latency);
                    }
                }
                let (mut messages, mut bytes) = (0, 0);
                for (&p, t) in &parts {
                    messages += t.count;
                    bytes += t.value_bytes;
                    if let Some(tr) = &self.run.tracker {
                        tr.ack(p, self.id, t.first_payload_seq, t.count);
                    }
                }
                self.run
                    .stats
                    .record_success(messages, bytes, Some(started.elapsed()));
                Ok(())
            }
            Err(e) => {
                self.payload_seq = rollback;
                let sent: u64 = parts.values().map(|t| t.count).sum();
                // Best effort: the coordinator aborts it after its timeout otherwise.
                if self.end_txn(false).await.is_ok() {
                    self.shared
                        .markers
                        .fetch_add(parts.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                self.shared
                    .aborted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.shared
                    .aborted_records
                    .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Builds the transaction's batches, per partition, split at `--batch-size`.
    fn generate(&mut self, count: u64) -> Result<BTreeMap<i32, PartitionTxn>> {
        let cfg = self.run.cfg.clone();
        let mut open: BTreeMap<i32, (BatchBuilder, u64)> = BTreeMap::new();
        let mut parts: BTreeMap<i32, PartitionTxn> = BTreeMap::new();
        let value_len = cfg.message_size;
        for _ in 0..count {
            let key = self.keys.next_key(&mut self.rng);
            let partition = partition_for_key(key, cfg.partitions);
            let p = partition as usize;
            let seq = self.payload_seq[p];
            let t = parts.entry(partition).or_insert_with(|| PartitionTxn {
                batches: Vec::new(),
                first_payload_seq: seq,
                count: 0,
                value_bytes: 0,
            });
            let full = open.get(&partition).is_some_and(|(b, _)| {
                b.size_bytes() + BatchBuilder::record_size_estimate(key.len(), value_len)
                    > cfg.batch_size
            });
            if full {
                if let Some((b, n)) = open.remove(&partition) {
                    t.batches.push((b.finish()?, n));
                }
            }
            let producer = BatchProducer {
                id: self.producer_id,
                epoch: self.epoch,
                base_sequence: self.sequence[p],
                transactional: true,
            };
            let (builder, n) = open.entry(partition).or_insert_with(|| {
                let b = BatchBuilder::new(cfg.codec, cfg.batch_size.min(8 * 1024 * 1024));
                (b.with_producer(producer), 0)
            });
            let src = self.run.pool.get(self.generated + t.count);
            let stamp = cfg.stamp_header;
            let producer = self.id;
            builder.append_with(payload::now_us() / 1000, Some(key), value_len, |dst| {
                payload::fill(dst, src, stamp, producer, seq)
            });
            *n += 1;
            // The broker sequence: the next batch of this partition starts after this record.
            self.sequence[p] = self.sequence[p].wrapping_add(1);
            t.count += 1;
            t.value_bytes += value_len as u64;
            self.payload_seq[p] += 1;
        }
        for (partition, (b, n)) in open {
            if let Some(t) = parts.get_mut(&partition) {
                t.batches.push((b.finish()?, n));
            }
        }
        Ok(parts)
    }

    /// AddPartitionsToTxn, the produce requests, EndTxn(commit). Returns the commit round trip.
    async fn send_and_commit(&mut self, parts: &BTreeMap<i32, PartitionTxn>) -> Result<Duration> {
        self.add_partitions(parts.keys().copied()).await?;
        self.produce(parts).await?;
        let t = Instant::now();
        self.end_txn(true).await?;
        let now = Instant::now();
        self.last_commit = Some(now);
        Ok(now - t)
    }

    async fn add_partitions(&mut self, partitions: impl Iterator<Item = i32>) -> Result<()> {
        let partitions: Vec<i32> = partitions.collect();
        loop {
            let conn = self.coordinator().await?;
            let v = conn.version_of::<AddPartitionsToTxnRequest>(0, 3)?;
            let mut topic = AddPartitionsToTxnTopic::default();
            topic.name = crate::metadata::topic_name(&self.run.cfg.topic);
            topic.partitions = partitions.clone();
            let mut req = AddPartitionsToTxnRequest::default();
            req.v3_and_below_transactional_id =
                TransactionalId(StrBytes::from_string(self.transactional_id.clone()));
            req.v3_and_below_producer_id = ProducerId(self.producer_id);
            req.v3_and_below_producer_epoch = self.epoch;
            req.v3_and_below_topics = vec![topic];
            let resp = conn.call(&req, v, self.run.cfg.request_timeout).await?;
            let code = if resp.error_code != 0 {
                resp.error_code
            } else {
                resp.results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| t.results_by_partition.iter())
                    .map(|p| p.partition_error_code)
                    .find(|&c| c != 0)
                    .unwrap_or(0)
            };
            if code == 0 {
                if let Some(t) = self.last_commit.take() {
                    if self.run.stats.is_measuring() {
                        if let Ok(mut h) = self.shared.marker_wait.lock() {
                            record_latency(&mut h, t.elapsed());
                        }
                    }
                }
                return Ok(());
            }
            self.retry_or_fail(code, "AddPartitionsToTxn").await?;
        }
    }

    /// Sends the batches: one request per leader per round, each round carrying the next batch
    /// of every partition (a request holds one batch per partition), all leaders in flight.
    async fn produce(&mut self, parts: &BTreeMap<i32, PartitionTxn>) -> Result<()> {
        let cfg = self.run.cfg.clone();
        let info = self
            .run
            .cluster
            .topic(&cfg.topic)
            .ok_or_else(|| anyhow!("no metadata for topic {}", cfg.topic))?;
        let rounds = parts.values().map(|t| t.batches.len()).max().unwrap_or(0);
        for round in 0..rounds {
            let mut by_leader: BTreeMap<i32, Vec<(i32, Bytes)>> = BTreeMap::new();
            for (&p, t) in parts {
                let Some((records, _)) = t.batches.get(round) else {
                    continue;
                };
                let leader = info
                    .leader(p)
                    .ok_or_else(|| anyhow!("no leader for partition {p}"))?;
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((p, records.clone()));
            }
            let mut in_flight = Vec::with_capacity(by_leader.len());
            for (leader, batches) in by_leader {
                let conn = self.run.cluster.broker_connection(leader).await?;
                let v = conn.version_of::<ProduceRequest>(3, 9)?;
                let mut req = produce_request(&cfg, &batches);
                req.transactional_id = Some(TransactionalId(StrBytes::from_string(
                    self.transactional_id.clone(),
                )));
                let fut = conn.start(&req, v, cfg.request_timeout).await?;
                in_flight.push((batches, fut));
            }
            for (batches, fut) in in_flight {
                let resp = fut.await?;
                for (p, _) in batches {
                    match judge_partition(&self.run.stats, &cfg, &resp, p) {
                        Verdict::Stored => {}
                        _ => bail!("produce to partition {p} failed"),
                    }
                }
            }
        }
        Ok(())
    }

    async fn end_txn(&mut self, commit: bool) -> Result<()> {
        loop {
            let conn = self.coordinator().await?;
            let v = conn.version_of::<EndTxnRequest>(0, 4)?;
            let mut req = EndTxnRequest::default();
            req.transactional_id =
                TransactionalId(StrBytes::from_string(self.transactional_id.clone()));
            req.producer_id = ProducerId(self.producer_id);
            req.producer_epoch = self.epoch;
            req.committed = commit;
            let resp = conn.call(&req, v, self.run.cfg.request_timeout).await?;
            if resp.error_code == 0 {
                return Ok(());
            }
            self.retry_or_fail(resp.error_code, "EndTxn").await?;
        }
    }
}

/// Runs `concurrency` transactional producers to completion.
pub async fn run_producers(
    concurrency: usize,
    run: ProduceRun,
    txn: TxnConfig,
) -> Result<(ProducerTotals, TxnTotals)> {
    let txn = Arc::new(txn);
    let shared = Arc::new(Shared {
        commit_latency: Mutex::new(new_histogram()),
        marker_wait: Mutex::new(new_histogram()),
        committed: Default::default(),
        aborted: Default::default(),
        markers: Default::default(),
        aborted_records: Default::default(),
    });
    let handles: Vec<_> = (0..concurrency)
        .map(|id| {
            tokio::spawn(
                TxnProducerTask::new(id as u32, run.clone(), txn.clone(), shared.clone()).run(),
            )
        })
        .collect();
    let totals = crate::producer::sum_totals(handles).await?;
    use std::sync::atomic::Ordering::Relaxed;
    let commit_latency = shared
        .commit_latency
        .lock()
        .map(|h| LatencySummary::of(&h))
        .unwrap_or_default();
    let marker_wait = shared
        .marker_wait
        .lock()
        .map(|h| LatencySummary::of(&h))
        .unwrap_or_default();
    Ok((
        totals,
        TxnTotals {
            committed: shared.committed.load(Relaxed),
            aborted: shared.aborted.load(Relaxed),
            markers: shared.markers.load(Relaxed),
            aborted_records: shared.aborted_records.load(Relaxed),
            commit_latency,
            marker_wait,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{split_batches, Codec};

    #[test]
    fn a_transactional_batch_carries_the_producer_fields_under_a_valid_crc() {
        let mut b = BatchBuilder::new(Codec::None, 1024).with_producer(BatchProducer {
            id: 42,
            epoch: 3,
            base_sequence: 7,
            transactional: true,
        });
        b.append(1, Some(b"k"), b"value");
        let stamped = b.finish().expect("seals");
        let batches = split_batches(stamped.clone()).expect("splits");
        assert_eq!(batches.len(), 1);
        assert!(batches[0].crc_ok);
        assert!(batches[0].is_transactional);
        assert_eq!(batches[0].producer_id, 42);
        assert_eq!(i16::from_be_bytes([stamped[51], stamped[52]]), 3);
        assert_eq!(
            i32::from_be_bytes([stamped[53], stamped[54], stamped[55], stamped[56]]),
            7
        );
    }

    #[test]
    fn a_plain_batch_has_no_producer_and_no_transactional_bit() {
        let mut b = BatchBuilder::new(Codec::None, 1024);
        b.append(1, None, b"v");
        let batches = split_batches(b.finish().expect("seals")).expect("splits");
        assert!(!batches[0].is_transactional);
        assert_eq!(batches[0].producer_id, -1);
    }
}
