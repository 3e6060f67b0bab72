//! Counters and latency histograms shared by the load tasks. Latencies are microseconds in an
//! `hdrhistogram` (3 significant digits); tasks that see many values (consumers) fill a local
//! histogram and merge it in once per response.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track: one hour in microseconds (larger values saturate).
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 ≤ low, high ≥ 2·low, 3 significant digits): this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

pub fn record_latency(h: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    h.saturating_record(us);
}

/// Adds `local` to `h`. Same bounds everywhere, so add cannot fail; saturate rather than drop if
/// it ever did.
fn merge_into(h: &mut Histogram<u64>, local: &Histogram<u64>) {
    if h.add(local).is_err() {
        for v in local.iter_recorded() {
            h.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What one side of a run (producers or consumers) has done so far.
pub struct Stats {
    measuring: AtomicBool,
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Every message counted, warm-up included (the acknowledged total for stored-vs-acked).
    all_messages: AtomicU64,
    error_count: AtomicU64,
    /// Messages given up for good (non-retriable error or message timeout).
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    /// The latencies since the last progress line (warm-up included), so a line can show the
    /// tail of its own interval: the run's histogram only says that a stall happened, not when.
    window: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(true)
    }
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    pub messages: u64,
    pub bytes: u64,
    pub all_messages: u64,
    pub error_count: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: LatencySummary,
}

impl Stats {
    /// `measuring` false means warm-up: successes count toward `all_messages` only.
    pub fn new(measuring: bool) -> Stats {
        Stats {
            measuring: AtomicBool::new(measuring),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            all_messages: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(new_histogram()),
            window: Mutex::new(new_histogram()),
        }
    }

    /// Ends the warm-up: from now on successes are measured.
    pub fn start_measuring(&self) {
        self.measuring.store(true, Ordering::SeqCst);
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    /// Counts acknowledged messages; false during warm-up (only `all_messages` counts then).
    fn count_success(&self, messages: u64, bytes: u64) -> bool {
        self.all_messages.fetch_add(messages, Ordering::Relaxed);
        if !self.is_measuring() {
            return false;
        }
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    pub fn record_success(&self, messages: u64, bytes: u64, latency: Option<Duration>) {
        let measured = self.count_success(messages, bytes);
        if let Some(l) = latency {
            if measured {
                if let Ok(mut h) = self.latency.lock() {
                    record_latency(&mut h, l);
                }
            }
            if let Ok(mut w) = self.window.lock() {
                record_latency(&mut w, l);
            }
        }
    }

    /// Counts one message per latency (each `bytes` long), recording the latencies if `timed`.
    pub fn record_each(&self, bytes: u64, timed: bool, latencies: &[Duration]) {
        let n = latencies.len() as u64;
        let measured = self.count_success(n, n * bytes);
        if !timed {
            return;
        }
        if measured {
            if let Ok(mut h) = self.latency.lock() {
                for l in latencies {
                    record_latency(&mut h, *l);
                }
            }
        }
        if let Ok(mut w) = self.window.lock() {
            for l in latencies {
                record_latency(&mut w, *l);
            }
        }
    }

    /// Merges a task-local histogram (ignored during warm-up).
    pub fn merge_latencies(&self, local: &Histogram<u64>) {
        if local.is_empty() {
            return;
        }
        if let Ok(mut w) = self.window.lock() {
            merge_into(&mut w, local);
        }
        if !self.is_measuring() {
            return;
        }
        if let Ok(mut h) = self.latency.lock() {
            merge_into(&mut h, local);
        }
    }

    /// The latencies recorded since the last call (warm-up included), and a fresh window.
    pub fn take_window(&self) -> LatencySummary {
        self.window
            .lock()
            .map(|mut w| {
                let summary = LatencySummary::of(&w);
                w.reset();
                summary
            })
            .unwrap_or_default()
    }

    pub fn record_error(&self, name: &str, count: u64) {
        self.error_count.fetch_add(count, Ordering::Relaxed);
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(name.to_string()).or_insert(0) += count;
        }
    }

    pub fn record_failed(&self, messages: u64) {
        self.failed.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn error_count(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }

    pub fn all_messages(&self) -> u64 {
        self.all_messages.load(Ordering::Relaxed)
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let latency = self
            .latency
            .lock()
            .map(|h| LatencySummary::of(&h))
            .unwrap_or_default();
        StatsSnapshot {
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            all_messages: self.all_messages.load(Ordering::Relaxed),
            error_count: self.error_count.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_values() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        let mut all = new_histogram();
        for i in 1..=1000u64 {
            let d = Duration::from_micros(i * 37 % 5000 + 1);
            if i % 3 == 0 {
                record_latency(&mut a, d);
            } else {
                record_latency(&mut b, d);
            }
            record_latency(&mut all, d);
        }
        let stats = Stats::new(true);
        stats.merge_latencies(&a);
        stats.merge_latencies(&b);
        let merged = stats.snapshot().latency;
        assert_eq!(merged, LatencySummary::of(&all));
        assert_eq!(merged.count, 1000);
    }

    #[test]
    fn each_progress_window_holds_only_the_latencies_since_the_last_one() {
        let stats = Stats::new(false);
        stats.record_success(1, 10, Some(Duration::from_millis(200)));
        let warm = stats.take_window();
        assert_eq!(warm.count, 1, "warm-up latencies show in their interval");
        assert!((warm.max_ms - 200.0).abs() < 0.5, "{warm:?}");
        assert_eq!(
            stats.snapshot().latency.count,
            0,
            "but not in the run's figures"
        );
        stats.start_measuring();
        stats.record_each(
            10,
            true,
            &[Duration::from_millis(3), Duration::from_millis(5)],
        );
        let next = stats.take_window();
        assert_eq!(next.count, 2);
        assert!((next.max_ms - 5.0).abs() < 0.1, "{next:?}");
        assert_eq!(
            stats.take_window().count,
            0,
            "a window is emptied when taken"
        );
        assert_eq!(stats.snapshot().latency.count, 2);
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = new_histogram();
        for ms in 1..=100u64 {
            record_latency(&mut h, Duration::from_millis(ms));
        }
        let s = LatencySummary::of(&h);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn warmup_counts_only_toward_the_total() {
        let stats = Stats::new(false);
        stats.record_success(10, 1000, Some(Duration::from_millis(1)));
        stats.record_error("REQUEST_TIMED_OUT", 1);
        stats.start_measuring();
        stats.record_success(5, 500, Some(Duration::from_millis(2)));
        stats.record_error("REQUEST_TIMED_OUT", 2);
        stats.record_error("NOT_LEADER_OR_FOLLOWER", 1);
        let s = stats.snapshot();
        assert_eq!((s.messages, s.bytes, s.all_messages), (5, 500, 15));
        assert_eq!(s.latency.count, 1);
        assert_eq!(s.error_count, 4);
        assert_eq!(s.errors.get("REQUEST_TIMED_OUT"), Some(&3));
    }
}
