//! Which partitions of this shard changed lately, in order: appended to, high watermark moved,
//! leadership or log start changed. A follower's incremental fetch session asks for the
//! changes since its last fetch and reads only those of its partitions (and the ones its
//! request names), instead of every partition of the session at every fetch: with a thousand
//! partitions that per-fetch pass over all of them was most of a replica fetch's cost.
//!
//! One log per shard thread (partitions are owned by one shard, so a thread-local needs no
//! lock). It is bounded: a session whose last stamp fell out of it reads all its partitions
//! once, as a session without the log would.

use crate::shard::event::{Listen, LocalEvent};
use crate::shard::TopicPartition;
use std::cell::RefCell;
use std::collections::VecDeque;

/// Changes kept per shard: a few hundred milliseconds of a busy shard's appends and high
/// watermark moves (followers fetch far more often).
pub const CAPACITY: usize = 16_384;

/// What changed on this shard since a stamp.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// These partitions (each at most once), up to stamp `now`.
    Changed {
        partitions: Vec<TopicPartition>,
        now: u64,
    },
    /// The stamp is older than the log holds (or unknown): anything may have changed.
    Unknown { now: u64 },
}

struct Log {
    /// The stamp of the next change (stamps start at 1; 0 means "never asked").
    next: u64,
    /// (stamp, partition, whether records came or its leadership changed).
    ring: VecDeque<(u64, TopicPartition, bool)>,
    capacity: usize,
    /// The newest stamp handed to a reader: changes at or after it are still to be read.
    handed: u64,
}

impl Log {
    fn new(capacity: usize) -> Log {
        Log {
            next: 1,
            ring: VecDeque::new(),
            capacity,
            handed: 0,
        }
    }

    fn mark(&mut self, tp: &TopicPartition, records: bool) {
        // The same partition marked again right after itself (an append, then its high
        // watermark), with no reader asking in between, adds nothing a reader could miss.
        if let Some((at, last, r)) = self.ring.back_mut() {
            if *at >= self.handed && last == tp {
                *r |= records;
                return;
            }
        }
        if self.ring.len() >= self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back((self.next, tp.clone(), records));
        self.next += 1;
    }

    /// Whether records came (or leadership changed) at or after `stamp` (unknown: maybe).
    fn records_since(&self, stamp: u64) -> bool {
        let oldest = self.ring.front().map_or(self.next, |(s, ..)| *s);
        if stamp == 0 || stamp < oldest {
            return true;
        }
        let from = self.ring.partition_point(|(s, ..)| *s < stamp);
        self.ring.range(from..).any(|(_, _, records)| *records)
    }

    fn since(&mut self, stamp: u64) -> Since {
        let now = self.next;
        self.handed = now;
        // The oldest change still held; everything from `stamp` on must be in the ring.
        let oldest = self.ring.front().map_or(now, |(s, ..)| *s);
        if stamp == 0 || stamp < oldest || stamp > now {
            return Since::Unknown { now };
        }
        let from = self.ring.partition_point(|(s, ..)| *s < stamp);
        let mut partitions: Vec<TopicPartition> = self
            .ring
            .range(from..)
            .map(|(_, tp, _)| tp.clone())
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        Since::Changed { partitions, now }
    }
}

thread_local! {
    static LOG: RefCell<Log> = RefCell::new(Log::new(CAPACITY));
    /// Notified when records come (or leadership changes): a follower session's long poll
    /// waits on this, not on each of its partitions. (A moved high watermark alone does not
    /// end a long poll, as in Kafka.)
    static RECORDS: &'static LocalEvent = Box::leak(Box::new(LocalEvent::new()));
}

/// Records that `tp` (owned by this shard) changed: `records` when records were appended or
/// its leadership changed (waiting sessions wake), otherwise its offsets moved.
pub fn mark(tp: &TopicPartition, records: bool) {
    LOG.with(|l| l.borrow_mut().mark(tp, records));
    if records {
        RECORDS.with(|e| e.notify());
    }
}

/// The partitions of this shard that changed at or after `stamp` (0: never asked), and the
/// stamp to ask with next time.
pub fn since(stamp: u64) -> Since {
    LOG.with(|l| l.borrow_mut().since(stamp))
}

/// Whether records came to this shard (or leadership changed) at or after `stamp` (0: never
/// asked, so maybe).
pub fn records_since(stamp: u64) -> bool {
    LOG.with(|l| l.borrow().records_since(stamp))
}

/// Resolves at the next `mark` with records on this shard after the call.
pub fn listen() -> Listen<'static> {
    RECORDS.with(|e| e.listen())
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Log {
        fn mark_r(&mut self, tp: &TopicPartition) {
            self.mark(tp, true);
        }
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn changed(s: Since) -> (Vec<i32>, u64) {
        match s {
            Since::Changed { partitions, now } => {
                (partitions.iter().map(|t| t.partition).collect(), now)
            }
            Since::Unknown { .. } => panic!("expected changes, got {s:?}"),
        }
    }

    #[test]
    fn changes_since_a_stamp_are_listed_once_each_and_the_next_stamp_follows_them() {
        let mut l = Log::new(100);
        assert_eq!(
            l.since(0),
            Since::Unknown { now: 1 },
            "never asked: unknown"
        );
        let first = match l.since(0) {
            Since::Unknown { now } => now,
            _ => unreachable!(),
        };
        l.mark_r(&tp(3));
        l.mark_r(&tp(1));
        l.mark_r(&tp(3));
        let (parts, now) = changed(l.since(first));
        assert_eq!(parts, vec![1, 3]);
        assert_eq!(changed(l.since(now)), (vec![], now), "nothing since");
        l.mark_r(&tp(7));
        assert_eq!(changed(l.since(now)).0, vec![7]);
    }

    #[test]
    fn a_partition_marked_twice_in_a_row_is_kept_once() {
        let mut l = Log::new(100);
        l.mark_r(&tp(1));
        l.mark_r(&tp(1));
        assert_eq!(l.ring.len(), 1);
    }

    #[test]
    fn a_partition_changed_again_after_a_reader_asked_is_listed_again() {
        let mut l = Log::new(100);
        l.mark_r(&tp(1));
        let (_, now) = changed(l.since(1));
        l.mark_r(&tp(1));
        assert_eq!(changed(l.since(now)).0, vec![1]);
    }

    #[test]
    fn records_since_a_stamp_ignore_moved_offsets() {
        let mut l = Log::new(100);
        let start = 1;
        l.mark(&tp(1), false);
        assert!(!l.records_since(start), "only a high watermark moved");
        l.mark(&tp(2), true);
        assert!(l.records_since(start));
        let (_, now) = changed(l.since(start));
        assert!(!l.records_since(now));
        assert!(l.records_since(0), "never asked: maybe");
    }

    #[test]
    fn a_stamp_older_than_the_log_holds_or_from_the_future_is_unknown() {
        let mut l = Log::new(4);
        let start = 1;
        for p in 0..4 {
            l.mark_r(&tp(p));
        }
        assert_eq!(
            changed(l.since(start)).0,
            vec![0, 1, 2, 3],
            "all still held"
        );
        l.mark_r(&tp(9));
        assert!(
            matches!(l.since(start), Since::Unknown { .. }),
            "the first change fell out"
        );
        assert!(matches!(l.since(1_000), Since::Unknown { .. }));
        assert_eq!(changed(l.since(2)).0, vec![1, 2, 3, 9]);
    }
}
