//! Rebalance timing bookkeeping: when each member got an assignment for which generation, and
//! when it noticed a rebalance (a heartbeat answered REBALANCE_IN_PROGRESS). The rebalance mode
//! reads it to time "a member joins → every member holds its assignment for the new
//! generation".

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::stats::{new_histogram, record_latency, LatencySummary};

/// One completed join + sync of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub generation: i32,
    pub at: Instant,
    pub partitions: Vec<i32>,
}

#[derive(Default)]
struct Entries {
    held: BTreeMap<String, Vec<Held>>,
    noticed: BTreeMap<String, Vec<Instant>>,
}

/// Shared by the members of a run (they record) and the rebalance driver (it waits and reads).
#[derive(Default)]
pub struct SyncBoard {
    entries: Mutex<Entries>,
    changed: Notify,
}

impl SyncBoard {
    /// `member` holds `partitions` for `generation` since `at`.
    pub fn record(&self, member: &str, generation: i32, at: Instant, partitions: Vec<i32>) {
        if let Ok(mut e) = self.entries.lock() {
            e.held.entry(member.to_string()).or_default().push(Held {
                generation,
                at,
                partitions,
            });
        }
        self.changed.notify_waiters();
    }

    /// `member` learned at `at` that the group is rebalancing.
    pub fn noticed(&self, member: &str, at: Instant) {
        if let Ok(mut e) = self.entries.lock() {
            e.noticed.entry(member.to_string()).or_default().push(at);
        }
    }

    /// Once every one of `members` holds an assignment for `generation` or a later one: the
    /// latest of the moments each first did. None while any has not.
    pub fn reached(&self, members: &[String], generation: i32) -> Option<Instant> {
        let e = self.entries.lock().ok()?;
        let mut latest: Option<Instant> = None;
        for m in members {
            let first = e.held.get(m)?.iter().find(|h| h.generation >= generation)?;
            latest = Some(latest.map_or(first.at, |l| l.max(first.at)));
        }
        latest
    }

    /// The generation all of `members` hold now, when it is the same one for all of them.
    pub fn common_generation(&self, members: &[String]) -> Option<i32> {
        let e = self.entries.lock().ok()?;
        let mut common = None;
        for m in members {
            let g = e.held.get(m)?.last()?.generation;
            match common {
                None => common = Some(g),
                Some(c) if c == g => {}
                Some(_) => return None,
            }
        }
        common
    }

    /// What each of `members` was assigned in exactly `generation` (None if any was not in it).
    pub fn assignments_in(&self, members: &[String], generation: i32) -> Option<Vec<Vec<i32>>> {
        let e = self.entries.lock().ok()?;
        members
            .iter()
            .map(|m| {
                e.held
                    .get(m)?
                    .iter()
                    .find(|h| h.generation == generation)
                    .map(|h| h.partitions.clone())
            })
            .collect()
    }

    /// The moment the last of `members` noticed a rebalance at or after `since`.
    pub fn last_notice_since(&self, members: &[String], since: Instant) -> Option<Instant> {
        let e = self.entries.lock().ok()?;
        let mut latest: Option<Instant> = None;
        for m in members {
            let first = e.noticed.get(m)?.iter().find(|&&t| t >= since)?;
            latest = Some(latest.map_or(*first, |l| l.max(*first)));
        }
        latest
    }

    /// Waits (until `deadline`) for [`Self::reached`].
    pub async fn wait_reached(
        &self,
        members: &[String],
        generation: i32,
        deadline: Instant,
    ) -> Option<Instant> {
        self.wait(deadline, || self.reached(members, generation))
            .await
    }

    /// Waits (until `deadline`) for [`Self::common_generation`].
    pub async fn wait_common(&self, members: &[String], deadline: Instant) -> Option<i32> {
        self.wait(deadline, || self.common_generation(members))
            .await
    }

    async fn wait<T>(&self, deadline: Instant, check: impl Fn() -> Option<T>) -> Option<T> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a record in between is not missed.
            changed.as_mut().enable();
            if let Some(v) = check() {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

/// Whether `assignments` hand out each of `0..partitions` exactly once.
pub fn covers_each_partition_once(assignments: &[Vec<i32>], partitions: i32) -> bool {
    let mut all: Vec<i32> = assignments.iter().flatten().copied().collect();
    all.sort_unstable();
    all == (0..partitions).collect::<Vec<_>>()
}

/// p50/p99/max of a few durations (the 20 rebalances of a run), through the same histogram as
/// every other latency of the bench.
pub fn summarize(samples: &[Duration]) -> LatencySummary {
    let mut h = new_histogram();
    for s in samples {
        record_latency(&mut h, *s);
    }
    LatencySummary::of(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reached_is_the_latest_first_sync_at_or_after_the_generation() {
        let b = SyncBoard::default();
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        b.record("a", 1, ms(0), vec![0, 1]);
        b.record("b", 1, ms(1), vec![2, 3]);
        let ab = names(&["a", "b"]);
        assert_eq!(b.common_generation(&ab), Some(1));
        assert_eq!(b.reached(&ab, 2), None);
        b.record("a", 2, ms(10), vec![0]);
        assert_eq!(b.reached(&ab, 2), None, "b is not in generation 2 yet");
        assert_eq!(b.common_generation(&ab), None);
        // b skipped generation 2 (another rebalance followed at once): its first ≥ 2 counts.
        b.record("b", 3, ms(30), vec![1]);
        b.record("a", 3, ms(31), vec![0]);
        assert_eq!(b.reached(&ab, 2), Some(ms(30)));
        assert_eq!(b.reached(&ab, 3), Some(ms(31)));
        assert_eq!(b.common_generation(&ab), Some(3));
        assert_eq!(b.assignments_in(&ab, 2), None);
        assert_eq!(b.assignments_in(&ab, 1), Some(vec![vec![0, 1], vec![2, 3]]));
        assert_eq!(b.reached(&names(&["a", "nobody"]), 1), None);
    }

    #[test]
    fn the_last_notice_counts() {
        let b = SyncBoard::default();
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        b.noticed("a", ms(1));
        b.noticed("a", ms(100));
        b.noticed("b", ms(120));
        let ab = names(&["a", "b"]);
        assert_eq!(b.last_notice_since(&ab, ms(50)), Some(ms(120)));
        assert_eq!(b.last_notice_since(&ab, ms(0)), Some(ms(120)));
        assert_eq!(b.last_notice_since(&ab, ms(121)), None);
    }

    #[tokio::test]
    async fn waiting_ends_on_a_record_or_at_the_deadline() {
        let b = std::sync::Arc::new(SyncBoard::default());
        let ab = names(&["a", "b"]);
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(b.wait_reached(&ab, 1, soon).await, None);
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            b2.wait_reached(
                &names(&["a", "b"]),
                1,
                Instant::now() + Duration::from_secs(30),
            )
            .await
        });
        let at = Instant::now();
        b.record("a", 1, at, vec![]);
        tokio::task::yield_now().await;
        b.record("b", 1, at, vec![]);
        assert_eq!(waiter.await.expect("task"), Some(at));
    }

    #[test]
    fn coverage_and_percentiles() {
        assert!(covers_each_partition_once(
            &[vec![0, 1, 2], vec![5, 3], vec![4]],
            6
        ));
        assert!(!covers_each_partition_once(&[vec![0, 1], vec![1, 2]], 3));
        assert!(!covers_each_partition_once(&[vec![0]], 2));
        let samples: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let s = summarize(&samples);
        assert_eq!(s.count, 20);
        assert!((s.p50_ms - 10.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 20.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 20.0).abs() < 0.1, "{s:?}");
    }
}
