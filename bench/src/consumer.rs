//! Fetch loops. A consumer task owns some partitions, asks each partition's leader for data with
//! bounded sizes (partition_max_bytes, max_bytes, and a hard frame limit in the connection, so a
//! broker that ignores max_bytes cannot make us allocate without bound), and stops at the
//! deadline even when no data arrives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use crate::batch;
use crate::client::errors::{classify, error_name, needs_metadata_refresh};
use crate::metadata::{topic_name, Cluster, EARLIEST};
use crate::payload::{self, PayloadCheck};
use crate::producer::RunControl;
use crate::stats::{new_histogram, record_latency, Stats};
use crate::validate::Validator;

#[derive(Debug, Clone)]
pub struct ConsumeConfig {
    pub topic: String,
    pub request_timeout: Duration,
    /// How long the broker may hold a fetch waiting for data.
    pub max_wait: Duration,
    pub partition_max_bytes: i32,
    pub max_bytes: i32,
    /// Record produce-to-consume latency from the payload timestamp.
    pub end_to_end: bool,
    pub verbose: bool,
    /// Fetch isolation: 0 read_uncommitted, 1 read_committed (records below the last stable
    /// offset, aborted transactions' records dropped).
    pub isolation_level: i8,
}

impl ConsumeConfig {
    /// Fetch sizes for messages of `message_size`: at least 1 MiB per partition, and room for a
    /// full batch of the biggest messages.
    pub fn sizes_for(message_size: usize, partitions: usize) -> (i32, i32) {
        let per_partition =
            (message_size.saturating_mul(4) + 64 * 1024).clamp(1024 * 1024, 64 * 1024 * 1024);
        let total = per_partition
            .saturating_mul(partitions.max(1))
            .clamp(per_partition, 64 * 1024 * 1024);
        (per_partition as i32, total as i32)
    }
}

/// Where one partition is being read from, and where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
    /// Stop once `offset` reaches this (exclusive end).
    pub end: Option<i64>,
}

impl Position {
    pub fn done(&self) -> bool {
        self.end.is_some_and(|e| self.offset >= e)
    }
}

/// Reads until the deadline, the message budget, or every partition reaching its end.
pub struct FetchLoop {
    pub cluster: Arc<Cluster>,
    pub cfg: Arc<ConsumeConfig>,
    pub stats: Arc<Stats>,
    pub control: Arc<RunControl>,
    pub validator: Option<Arc<Validator>>,
}

impl FetchLoop {
    pub async fn run(&self, mut positions: Vec<Position>) -> Vec<Position> {
        let mut latencies = new_histogram();
        loop {
            if self.control.should_stop() {
                break;
            }
            let active: Vec<usize> = (0..positions.len())
                .filter(|&i| !positions[i].done())
                .collect();
            if active.is_empty() {
                break;
            }
            let generation = self.cluster.generation();
            let info = self.cluster.topic(&self.cfg.topic);
            let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
            let mut refresh = false;
            for i in active {
                match info.as_ref().and_then(|t| t.leader(positions[i].partition)) {
                    Some(l) => by_leader.entry(l).or_default().push(i),
                    None => refresh = true,
                }
            }
            let mut in_flight = Vec::new();
            for (leader, idxs) in by_leader {
                let conn = match self.cluster.broker_connection(leader).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.stats.record_error(&classify(&e), 1);
                        refresh = true;
                        continue;
                    }
                };
                let version = match conn.version_of::<FetchRequest>(4, 12) {
                    Ok(v) => v,
                    Err(e) => {
                        self.stats.record_error(&classify(&e), 1);
                        if self.cfg.verbose {
                            eprintln!("fetch: {e:#}");
                        }
                        continue;
                    }
                };
                let req = self.fetch_request(&positions, &idxs);
                // Never wait past the deadline, whatever the broker does with max_wait.
                let remaining = self
                    .control
                    .deadline()
                    .saturating_duration_since(Instant::now());
                let timeout = self
                    .cfg
                    .request_timeout
                    .min(remaining + Duration::from_millis(50));
                let sent = Instant::now();
                match conn.start(&req, version, timeout).await {
                    Ok(fut) => in_flight.push((idxs, sent, fut)),
                    Err(e) => {
                        self.stats.record_error(&classify(&e), 1);
                        refresh = true;
                    }
                }
            }
            let mut progressed = false;
            for (idxs, sent, fut) in in_flight {
                // A stop (the deadline, or a rebalance revoking this member's partitions) does
                // not wait for a long-polling fetch; its data is dropped uncounted and the
                // positions stay where they were.
                let result = tokio::select! {
                    r = fut => r,
                    _ = self.control.stopped() => break,
                };
                match result {
                    Ok(resp) => {
                        if !self.cfg.end_to_end {
                            record_latency(&mut latencies, sent.elapsed());
                        }
                        let (p, r) = self
                            .handle_response(&resp, &mut positions, &idxs, &mut latencies)
                            .await;
                        progressed |= p;
                        refresh |= r;
                    }
                    Err(e) => {
                        if self.control.should_stop() {
                            break;
                        }
                        self.stats.record_error(&classify(&e), 1);
                        if self.cfg.verbose {
                            eprintln!("fetch failed: {e:#}");
                        }
                        refresh = true;
                    }
                }
            }
            self.stats.merge_latencies(&latencies);
            latencies.reset();
            if refresh {
                let _ = self
                    .cluster
                    .refresh(std::slice::from_ref(&self.cfg.topic), Some(generation))
                    .await;
                if !progressed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        positions
    }

    fn fetch_request(&self, positions: &[Position], idxs: &[usize]) -> FetchRequest {
        let mut topic = FetchTopic::default();
        topic.topic = topic_name(&self.cfg.topic);
        topic.partitions = idxs
            .iter()
            .map(|&i| {
                let mut p = FetchPartition::default();
                p.partition = positions[i].partition;
                p.fetch_offset = positions[i].offset;
                p.partition_max_bytes = self.cfg.partition_max_bytes;
                p
            })
            .collect();
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = self.cfg.max_wait.as_millis().min(i32::MAX as u128) as i32;
        req.min_bytes = 1;
        req.max_bytes = self.cfg.max_bytes;
        req.isolation_level = self.cfg.isolation_level;
        req.session_id = 0;
        req.session_epoch = -1;
        req.topics = vec![topic];
        req
    }

    /// Returns (made progress, needs metadata refresh).
    async fn handle_response(
        &self,
        resp: &FetchResponse,
        positions: &mut [Position],
        idxs: &[usize],
        latencies: &mut hdrhistogram::Histogram<u64>,
    ) -> (bool, bool) {
        let mut progressed = false;
        let mut refresh = false;
        if resp.error_code != 0 {
            self.stats.record_error(&error_name(resp.error_code), 1);
            return (false, true);
        }
        let now_us = payload::now_us();
        for t in resp
            .responses
            .iter()
            .filter(|t| t.topic.0.as_str() == self.cfg.topic)
        {
            for pd in &t.partitions {
                let Some(&i) = idxs
                    .iter()
                    .find(|&&i| positions[i].partition == pd.partition_index)
                else {
                    continue;
                };
                if pd.error_code != 0 {
                    self.stats.record_error(&error_name(pd.error_code), 1);
                    if pd.error_code == 1 {
                        // OFFSET_OUT_OF_RANGE: start again from the log start.
                        if let Ok(offs) = self
                            .cluster
                            .list_offsets(&self.cfg.topic, &[pd.partition_index], EARLIEST)
                            .await
                        {
                            if let Some(&o) = offs.get(&pd.partition_index) {
                                positions[i].offset = o;
                            }
                        }
                    } else if needs_metadata_refresh(pd.error_code) {
                        refresh = true;
                    }
                    continue;
                }
                let Some(records) = pd.records.clone() else {
                    continue;
                };
                let batches = match batch::split_batches(records) {
                    Ok(b) => b,
                    Err(e) => {
                        self.stats.record_error("CLIENT_BAD_RECORD_BATCH", 1);
                        if self.cfg.verbose {
                            eprintln!("{}-{}: {e:#}", self.cfg.topic, pd.partition_index);
                        }
                        continue;
                    }
                };
                let mut messages = 0u64;
                let mut bytes = 0u64;
                let mut values: Vec<bytes::Bytes> = Vec::new();
                let want_values = self.validator.is_some() || self.cfg.end_to_end;
                let mut aborted = AbortedFilter::new(pd.aborted_transactions.as_deref());
                for b in batches {
                    let pos = &mut positions[i];
                    let skip_aborted = aborted.skips(&b);
                    if b.next_offset() <= pos.offset {
                        continue; // an older batch the broker sent back with the one we asked for
                    }
                    if !b.crc_ok {
                        self.stats.record_error("CLIENT_BATCH_CRC_MISMATCH", 1);
                        if let Some(v) = &self.validator {
                            v.bad_batch_crc();
                        }
                    }
                    if !b.is_control && !skip_aborted {
                        match batch::records(&b) {
                            Ok(recs) => {
                                for r in recs.into_iter().filter(|r| r.offset >= pos.offset) {
                                    if pos.end.is_some_and(|e| r.offset >= e) {
                                        continue; // past the range this reader was asked for
                                    }
                                    messages += 1;
                                    if let Some(v) = r.value {
                                        bytes += v.len() as u64;
                                        if want_values {
                                            values.push(v);
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                self.stats.record_error("CLIENT_BAD_RECORD_BATCH", 1);
                                if self.cfg.verbose {
                                    eprintln!("{}-{}: {e:#}", self.cfg.topic, pd.partition_index);
                                }
                            }
                        }
                    }
                    pos.offset = b.next_offset();
                    progressed = true;
                }
                if self.cfg.end_to_end {
                    for v in &values {
                        if let PayloadCheck::Intact(h) = payload::check(v) {
                            record_latency(
                                latencies,
                                Duration::from_micros((now_us - h.timestamp_us).max(0) as u64),
                            );
                        }
                    }
                }
                if let Some(val) = &self.validator {
                    val.check_values(pd.partition_index, values.iter().map(|v| v.as_ref()));
                }
                if messages > 0 {
                    self.stats.record_success(messages, bytes, None);
                    if self.control.claim(messages) < messages {
                        self.control.stop();
                    }
                }
            }
        }
        (progressed, refresh)
    }
}

/// Splits positions over up to `tasks` fetch loops and runs them; returns the final positions.
pub async fn run_consumers(
    tasks: usize,
    fetch: Arc<FetchLoop>,
    positions: Vec<Position>,
) -> Result<Vec<Position>> {
    let tasks = tasks.clamp(1, positions.len().max(1));
    let mut groups: Vec<Vec<Position>> = vec![Vec::new(); tasks];
    for (i, p) in positions.into_iter().enumerate() {
        groups[i % tasks].push(p);
    }
    let mut handles = Vec::new();
    for g in groups.into_iter().filter(|g| !g.is_empty()) {
        let f = Arc::new(FetchLoop {
            cluster: fetch.cluster.fork().await?,
            cfg: fetch.cfg.clone(),
            stats: fetch.stats.clone(),
            control: fetch.control.clone(),
            validator: fetch.validator.clone(),
        });
        handles.push(tokio::spawn(async move { f.run(g).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await?);
    }
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// Drops the records of aborted transactions from a read_committed fetch, as Kafka's consumer
/// does: a transaction's batches are aborted from the first offset the broker lists for its
/// producer until that producer's next control batch (its abort marker).
pub struct AbortedFilter {
    /// (first offset, producer id), by first offset: not yet reached.
    pending: Vec<(i64, i64)>,
    /// Producers whose aborted transaction is open at the current batch.
    open: Vec<i64>,
}

impl AbortedFilter {
    pub fn new(
        list: Option<&[kafka_protocol::messages::fetch_response::AbortedTransaction]>,
    ) -> AbortedFilter {
        let mut pending: Vec<(i64, i64)> = list
            .unwrap_or_default()
            .iter()
            .map(|a| (a.first_offset, a.producer_id.0))
            .collect();
        // Reversed, so the next one to reach is popped from the end.
        pending.sort_unstable_by(|a, b| b.cmp(a));
        AbortedFilter {
            pending,
            open: Vec::new(),
        }
    }

    /// Whether this batch (seen in offset order) holds aborted records.
    pub fn skips(&mut self, b: &batch::FetchedBatch) -> bool {
        let last = b.next_offset() - 1;
        while self.pending.last().is_some_and(|&(first, _)| first <= last) {
            if let Some((_, pid)) = self.pending.pop() {
                self.open.push(pid);
            }
        }
        if b.is_control {
            self.open.retain(|&p| p != b.producer_id);
            return false;
        }
        b.is_transactional && self.open.contains(&b.producer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{split_batches, BatchBuilder, BatchProducer, Codec};
    use kafka_protocol::messages::fetch_response::AbortedTransaction;
    use kafka_protocol::messages::ProducerId;

    /// A sealed one-record batch of producer `pid` at `offset` (transactional unless `pid` < 0).
    fn batch_at(offset: i64, pid: i64) -> batch::FetchedBatch {
        let mut b = BatchBuilder::new(Codec::None, 256).with_producer(BatchProducer {
            id: pid,
            epoch: 0,
            base_sequence: 0,
            transactional: pid >= 0,
        });
        b.append(0, None, b"v");
        let mut bytes = b.finish().expect("seals").to_vec();
        bytes[0..8].copy_from_slice(&offset.to_be_bytes());
        split_batches(bytes::Bytes::from(bytes))
            .expect("splits")
            .remove(0)
    }

    fn control_at(offset: i64, pid: i64) -> batch::FetchedBatch {
        let mut b = batch_at(offset, pid);
        b.is_control = true;
        b
    }

    #[test]
    fn read_committed_drops_an_aborted_transaction_until_its_marker_and_keeps_the_rest() {
        let mut aborted = AbortedTransaction::default();
        aborted.producer_id = ProducerId(7);
        aborted.first_offset = 1;
        let list = vec![aborted];
        let mut f = AbortedFilter::new(Some(&list));
        assert!(!f.skips(&batch_at(0, 7)), "before its first offset");
        assert!(f.skips(&batch_at(1, 7)), "the aborted transaction");
        assert!(
            !f.skips(&batch_at(2, 8)),
            "another producer's committed records"
        );
        assert!(!f.skips(&batch_at(3, -1)), "a plain batch");
        assert!(!f.skips(&control_at(4, 7)), "its abort marker");
        assert!(!f.skips(&batch_at(5, 7)), "its next transaction");
        let mut none = AbortedFilter::new(None);
        assert!(!none.skips(&batch_at(0, 7)));
    }

    #[test]
    fn fetch_sizes_stay_bounded() {
        let (p, t) = ConsumeConfig::sizes_for(1024, 3);
        assert_eq!(p, 1024 * 1024);
        assert_eq!(t, 3 * 1024 * 1024);
        let (p, t) = ConsumeConfig::sizes_for(10 * 1024 * 1024, 100);
        assert!(p >= 40 * 1024 * 1024 && t <= 64 * 1024 * 1024 && t >= p);
    }

    #[test]
    fn a_position_is_done_at_its_end() {
        let mut p = Position {
            partition: 0,
            offset: 5,
            end: Some(10),
        };
        assert!(!p.done());
        p.offset = 10;
        assert!(p.done());
        assert!(!Position {
            partition: 0,
            offset: 99,
            end: None
        }
        .done());
    }
}
