//! Broker metrics for Prometheus. Each shard counts in plain `Cell`s it alone touches
//! (`ShardMetrics`, no atomics or locks on the request path); a scrape sends every shard a task
//! that copies its counters into a `ShardSnapshot`, and `scrape` sums the copies and adds what
//! the metadata image and the controller say. `http` serves them on `--metrics-listen`.

pub mod exposition;
pub mod http;
pub mod scrape;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bounds of the request latency histogram, seconds (Prometheus' defaults, widened
/// down to 0.5 ms: most requests take well under a millisecond).
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LATENCY_BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// One slot per bound plus +Inf.
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// The `error` label of `chronik_requests_total`: how the request ended, as a Kafka error name.
/// Errors inside an answered response (per partition, per group) are part of the answer and
/// count as NONE here.
pub const REQUEST_OUTCOMES: [&str; 4] = [
    "NONE",
    "UNSUPPORTED_VERSION",
    "INVALID_REQUEST",
    "UNKNOWN_SERVER_ERROR",
];

/// Kafka API keys are small (the highest is below 100 today); anything above is not counted.
const MAX_API_KEYS: usize = 128;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounters {
    pub records_produced: u64,
    pub bytes_produced: u64,
    pub records_fetched: u64,
    pub bytes_fetched: u64,
}

#[derive(Default)]
struct ApiStats {
    buckets: [Cell<u64>; BUCKETS],
    sum_ns: Cell<u64>,
    outcomes: [Cell<u64>; REQUEST_OUTCOMES.len()],
}

/// What one API's requests on one shard added up to.
#[derive(Debug, Clone, Default)]
pub struct ApiSnapshot {
    /// Per bucket, not cumulative; the last is +Inf.
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
    pub outcomes: [u64; REQUEST_OUTCOMES.len()],
}

impl ApiSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn add(&mut self, o: &ApiSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_ns += o.sum_ns;
        for (a, b) in self.outcomes.iter_mut().zip(o.outcomes) {
            *a += b;
        }
    }
}

/// A shard's counters. Only its own executor touches them.
pub struct ShardMetrics {
    topics: RefCell<HashMap<Arc<str>, TopicCounters>>,
    apis: Box<[ApiStats]>,
    pub isr_shrinks: Cell<u64>,
    pub isr_expands: Cell<u64>,
    /// When the busy ratio was last sampled (glommio's executor stats reset when read).
    busy_sampled_at: Cell<Instant>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            topics: RefCell::new(HashMap::new()),
            apis: (0..MAX_API_KEYS).map(|_| ApiStats::default()).collect(),
            isr_shrinks: Cell::new(0),
            isr_expands: Cell::new(0),
            busy_sampled_at: Cell::new(Instant::now()),
        }
    }
}

impl ShardMetrics {
    fn topic(&self, topic: &Arc<str>, f: impl FnOnce(&mut TopicCounters)) {
        let mut topics = self.topics.borrow_mut();
        match topics.get_mut(topic) {
            Some(c) => f(c),
            None => f(topics.entry(topic.clone()).or_default()),
        }
    }

    /// A batch appended by this shard as leader.
    pub fn produced(&self, topic: &Arc<str>, records: u64, bytes: u64) {
        self.topic(topic, |c| {
            c.records_produced += records;
            c.bytes_produced += bytes;
        });
    }

    /// Record batches a consumer Fetch answered with (follower fetches are replication, not
    /// counted here).
    pub fn fetched(&self, topic: &Arc<str>, records: u64, bytes: u64) {
        self.topic(topic, |c| {
            c.records_fetched += records;
            c.bytes_fetched += bytes;
        });
    }

    /// One request of API `key` served in `took`; `outcome` indexes `REQUEST_OUTCOMES`.
    pub fn request(&self, key: i16, took: Duration, outcome: usize) {
        let Some(api) = usize::try_from(key).ok().and_then(|k| self.apis.get(k)) else {
            return;
        };
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let slot = LATENCY_BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(BUCKETS - 1);
        let bump = |c: &Cell<u64>, n: u64| c.set(c.get().wrapping_add(n));
        bump(&api.buckets[slot], 1);
        bump(&api.sum_ns, ns);
        if let Some(o) = api.outcomes.get(outcome) {
            bump(o, 1);
        }
    }

    /// The ISR of a partition this shard leads changed in the metadata image.
    pub fn isr_changed(&self, old: &[i32], new: &[i32]) {
        if old.iter().any(|b| !new.contains(b)) {
            self.isr_shrinks.set(self.isr_shrinks.get() + 1);
        }
        if new.iter().any(|b| !old.contains(b)) {
            self.isr_expands.set(self.isr_expands.get() + 1);
        }
    }

    fn busy_ratio(&self) -> f64 {
        let now = Instant::now();
        let wall = now.duration_since(self.busy_sampled_at.replace(now));
        // Time spent running tasks and polling I/O since the last call (the call resets it).
        let busy = glommio::executor().executor_stats().total_runtime();
        if wall.is_zero() {
            return 0.0;
        }
        (busy.as_secs_f64() / wall.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// Copies of one shard's counters, sent to the scraper.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub topics: Vec<(String, TopicCounters)>,
    pub apis: Vec<(i16, ApiSnapshot)>,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub connections: u64,
    /// Open fetch sessions (KIP-227): (client, replica).
    pub fetch_sessions: (u64, u64),
    pub busy_ratio: f64,
    /// Bytes on disk per topic, over the partitions this shard holds.
    pub log_bytes: Vec<(String, u64)>,
    /// High watermark of every partition this shard holds (leader or follower).
    pub high_watermarks: Vec<(String, i32, i64)>,
    /// (group, topic, partition, committed offset) of the groups this shard coordinates.
    pub committed: Vec<(String, String, i32, i64)>,
}

/// Runs on the shard: a copy of its counters. Topics for which `topic_exists` says no (gone
/// from the shard's image) are forgotten here, so deleted topics leave the scrape. What the
/// shard holds (partitions, connections, groups) is filled in by its services.
pub fn snapshot(
    m: &ShardMetrics,
    shard: usize,
    topic_exists: impl Fn(&str) -> bool,
) -> ShardSnapshot {
    m.topics.borrow_mut().retain(|t, _| topic_exists(t));
    let topics = m
        .topics
        .borrow()
        .iter()
        .map(|(t, c)| (t.to_string(), *c))
        .collect();
    let apis = m
        .apis
        .iter()
        .enumerate()
        .filter_map(|(k, a)| {
            let s = ApiSnapshot {
                buckets: std::array::from_fn(|i| a.buckets[i].get()),
                sum_ns: a.sum_ns.get(),
                outcomes: std::array::from_fn(|i| a.outcomes[i].get()),
            };
            (s.count() > 0).then_some((k as i16, s))
        })
        .collect();
    ShardSnapshot {
        shard,
        topics,
        apis,
        isr_shrinks: m.isr_shrinks.get(),
        isr_expands: m.isr_expands.get(),
        busy_ratio: m.busy_ratio(),
        ..ShardSnapshot::default()
    }
}

/// Record count and bytes of the record batches in `chunks` (whole Kafka v2 batches, as the
/// log serves them). Walks only the batch headers; stops at anything that is not a batch.
pub fn count_records(chunks: &[bytes::Bytes]) -> (u64, u64) {
    // baseOffset(8) batchLength(4) … recordsCount at 57..61 (Kafka's DefaultRecordBatch).
    const RECORDS_COUNT_AT: usize = 57;
    const HEADER: usize = 61;
    let (mut records, mut bytes) = (0u64, 0u64);
    for c in chunks {
        bytes += c.len() as u64;
        let mut pos = 0usize;
        while let Some(h) = c.get(pos..pos + HEADER) {
            let len = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            let n = i32::from_be_bytes([
                h[RECORDS_COUNT_AT],
                h[RECORDS_COUNT_AT + 1],
                h[RECORDS_COUNT_AT + 2],
                h[RECORDS_COUNT_AT + 3],
            ]);
            let Ok(len) = usize::try_from(len) else { break };
            if len + 12 < HEADER {
                break;
            }
            records += u64::try_from(n).unwrap_or(0);
            pos += len + 12;
        }
    }
    (records, bytes)
}

/// Sums shard snapshots.
#[derive(Debug, Default)]
pub struct Totals {
    pub topics: std::collections::BTreeMap<String, TopicCounters>,
    pub apis: std::collections::BTreeMap<i16, ApiSnapshot>,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub connections: u64,
    pub fetch_sessions: (u64, u64),
    /// Partition logs open on this node (each shard's held partitions).
    pub open_logs: u64,
    pub busy: Vec<(usize, f64)>,
    pub log_bytes: std::collections::BTreeMap<String, u64>,
    /// (group, topic) → summed lag over the partitions whose high watermark is known here.
    pub group_lag: std::collections::BTreeMap<(String, String), i64>,
}

impl Totals {
    pub fn of(snaps: Vec<ShardSnapshot>) -> Totals {
        let mut t = Totals::default();
        let mut hw: HashMap<(String, i32), i64> = HashMap::new();
        let mut committed = Vec::new();
        for s in snaps {
            for (name, c) in s.topics {
                let e = t.topics.entry(name).or_default();
                e.records_produced += c.records_produced;
                e.bytes_produced += c.bytes_produced;
                e.records_fetched += c.records_fetched;
                e.bytes_fetched += c.bytes_fetched;
            }
            for (k, a) in s.apis {
                t.apis.entry(k).or_default().add(&a);
            }
            t.isr_shrinks += s.isr_shrinks;
            t.isr_expands += s.isr_expands;
            t.connections += s.connections;
            t.fetch_sessions.0 += s.fetch_sessions.0;
            t.fetch_sessions.1 += s.fetch_sessions.1;
            t.busy.push((s.shard, s.busy_ratio));
            for (name, b) in s.log_bytes {
                *t.log_bytes.entry(name).or_default() += b;
            }
            t.open_logs += s.high_watermarks.len() as u64;
            for (topic, p, h) in s.high_watermarks {
                hw.insert((topic, p), h);
            }
            committed.extend(s.committed);
        }
        for (group, topic, p, offset) in committed {
            if let Some(h) = hw.get(&(topic.clone(), p)) {
                *t.group_lag.entry((group, topic)).or_default() += (h - offset).max(0);
            }
        }
        t.busy.sort_by_key(|(s, _)| *s);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let m = ShardMetrics::default();
        m.request(0, Duration::from_micros(100), 0);
        m.request(0, Duration::from_millis(1), 0);
        m.request(0, Duration::from_secs(60), 2);
        let a = &m.apis[0];
        assert_eq!(a.buckets[0].get(), 1);
        assert_eq!(a.buckets[1].get(), 1);
        assert_eq!(a.buckets[BUCKETS - 1].get(), 1);
        assert_eq!(a.outcomes[0].get(), 2);
        assert_eq!(a.outcomes[2].get(), 1);
        // Keys out of range are ignored, not a panic.
        m.request(-1, Duration::ZERO, 0);
        m.request(i16::MAX, Duration::ZERO, 99);
    }

    #[test]
    fn an_isr_change_counts_as_shrink_expand_or_both() {
        let m = ShardMetrics::default();
        m.isr_changed(&[1, 2, 3], &[1, 2]);
        m.isr_changed(&[1, 2], &[1, 2, 3]);
        m.isr_changed(&[1, 2], &[1, 3]);
        assert_eq!((m.isr_shrinks.get(), m.isr_expands.get()), (2, 2));
    }

    fn batch(records: i32, payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; 61 + payload];
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[57..61].copy_from_slice(&records.to_be_bytes());
        b
    }

    #[test]
    fn record_counting_walks_every_batch_of_a_chunk_and_stops_at_garbage() {
        let mut chunk = batch(3, 10);
        chunk.extend(batch(5, 0));
        let other = batch(2, 7);
        let (r, b) = count_records(&[chunk.clone().into(), other.clone().into()]);
        assert_eq!(r, 10);
        assert_eq!(b, (chunk.len() + other.len()) as u64);
        // A negative or too-short length ends the walk of that chunk.
        let mut bad = batch(4, 0);
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(count_records(&[bad.into()]).0, 0);
        let mut short = batch(4, 0);
        short[8..12].copy_from_slice(&1i32.to_be_bytes());
        assert_eq!(count_records(&[short.into()]).0, 0);
        // A truncated tail (partial header) is not read.
        assert_eq!(count_records(&[bytes::Bytes::from(vec![0u8; 30])]).0, 0);
    }
}
