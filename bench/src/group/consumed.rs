//! Which offset ranges of which partitions each member read in each generation, so a run can
//! prove that across members and rebalances every record was read exactly once: per partition
//! the ranges must follow each other without overlap or gap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// Offsets [start, end) of one partition read by one member in one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    pub start: i64,
    pub end: i64,
    pub member: String,
    pub generation: i32,
}

#[derive(Default)]
pub struct ConsumedRanges {
    ranges: Mutex<BTreeMap<i32, Vec<ReadRange>>>,
}

impl ConsumedRanges {
    pub fn record(&self, partition: i32, start: i64, end: i64, member: &str, generation: i32) {
        if end <= start {
            return; // nothing read
        }
        if let Ok(mut r) = self.ranges.lock() {
            r.entry(partition).or_default().push(ReadRange {
                start,
                end,
                member: member.to_string(),
                generation,
            });
        }
    }

    pub fn ranges(&self) -> BTreeMap<i32, Vec<ReadRange>> {
        self.ranges.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The members that read from each partition.
    pub fn readers(&self) -> BTreeMap<i32, BTreeSet<String>> {
        self.ranges()
            .into_iter()
            .map(|(p, rs)| (p, rs.into_iter().map(|r| r.member).collect()))
            .collect()
    }

    /// Where reading began in each partition that was read (the lowest range start), for runs
    /// that start from the end of the log and know no start offsets in advance.
    pub fn first_starts(&self) -> HashMap<i32, i64> {
        self.ranges()
            .into_iter()
            .filter_map(|(p, rs)| rs.iter().map(|r| r.start).min().map(|s| (p, s)))
            .collect()
    }

    /// Whether every partition of `ends` was read up to its end.
    pub fn reached_end(&self, starts: &HashMap<i32, i64>, ends: &HashMap<i32, i64>) -> bool {
        let r = match self.ranges.lock() {
            Ok(r) => r,
            Err(_) => return false,
        };
        ends.iter().all(|(p, &end)| {
            let from = starts.get(p).copied().unwrap_or(0);
            end <= from || r.get(p).is_some_and(|rs| rs.iter().any(|x| x.end >= end))
        })
    }

    /// Checks that each partition was read from its start without overlap or gap (and, with
    /// `ends`, up to its end). Names the first partition that was not.
    pub fn check_exactly_once(
        &self,
        starts: &HashMap<i32, i64>,
        ends: Option<&HashMap<i32, i64>>,
    ) -> Result<(), String> {
        let all = self.ranges();
        let mut partitions: BTreeSet<i32> = all.keys().copied().collect();
        if let Some(e) = ends {
            partitions.extend(e.keys().copied());
        }
        for p in partitions {
            let mut rs = all.get(&p).cloned().unwrap_or_default();
            rs.sort_by_key(|r| (r.start, r.end));
            let mut at = starts.get(&p).copied().unwrap_or(0);
            for r in &rs {
                if r.start < at {
                    return Err(format!(
                        "partition {p}: offsets {}..{} read again by {} (generation {}) after {} had been read",
                        r.start, r.end, r.member, r.generation, at
                    ));
                }
                if r.start > at {
                    return Err(format!(
                        "partition {p}: offsets {at}..{} never read ({} started at {} in generation {})",
                        r.start, r.member, r.start, r.generation
                    ));
                }
                at = r.end;
            }
            if let Some(end) = ends.and_then(|e| e.get(&p)) {
                if at < *end {
                    return Err(format!("partition {p}: read up to {at} of {end}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &[(i32, i64)]) -> HashMap<i32, i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn ranges_handed_over_at_a_rebalance_count_once() {
        let c = ConsumedRanges::default();
        c.record(0, 0, 40, "a", 1);
        c.record(0, 40, 100, "b", 2);
        c.record(1, 5, 50, "b", 1);
        c.record(1, 50, 50, "c", 2); // empty: ignored
        let starts = map(&[(0, 0), (1, 5)]);
        let ends = map(&[(0, 100), (1, 50)]);
        assert!(c.reached_end(&starts, &ends));
        assert_eq!(c.check_exactly_once(&starts, Some(&ends)), Ok(()));
        assert_eq!(c.readers()[&0].len(), 2);
        assert_eq!(c.first_starts(), starts);
    }

    #[test]
    fn overlap_gap_and_a_short_read_are_named() {
        let starts = map(&[(0, 0)]);
        let ends = map(&[(0, 100)]);
        let overlap = ConsumedRanges::default();
        overlap.record(0, 0, 60, "a", 1);
        overlap.record(0, 40, 100, "b", 2);
        let e = overlap
            .check_exactly_once(&starts, Some(&ends))
            .unwrap_err();
        assert!(e.contains("read again by b"), "{e}");

        let gap = ConsumedRanges::default();
        gap.record(0, 0, 30, "a", 1);
        gap.record(0, 40, 100, "b", 2);
        let e = gap.check_exactly_once(&starts, Some(&ends)).unwrap_err();
        assert!(e.contains("30..40 never read"), "{e}");

        let short = ConsumedRanges::default();
        short.record(0, 0, 30, "a", 1);
        assert!(!short.reached_end(&starts, &ends));
        let e = short.check_exactly_once(&starts, Some(&ends)).unwrap_err();
        assert!(e.contains("read up to 30 of 100"), "{e}");
        assert_eq!(short.check_exactly_once(&starts, None), Ok(()));

        let none = ConsumedRanges::default();
        assert!(none.check_exactly_once(&starts, Some(&ends)).is_err());
        assert!(
            none.reached_end(&map(&[(0, 7)]), &map(&[(0, 7)])),
            "empty partition"
        );
    }
}
