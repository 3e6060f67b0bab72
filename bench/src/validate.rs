//! `--validate`: every acknowledged message must come back exactly once, intact (payload CRC),
//! and in order within its (partition, producer) stream — the strongest order a partition written
//! by several concurrent producers promises.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::payload::{self, PayloadCheck};

/// A growable bit set of sequence numbers.
#[derive(Default, Clone)]
struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Sets `seq`; returns whether it was already set.
    fn insert(&mut self, seq: u64) -> bool {
        let w = (seq / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        let was = self.words[w] & bit != 0;
        self.words[w] |= bit;
        was
    }

    fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }
}

/// Which sequence numbers each producer had acknowledged, per partition.
/// (partition, producer) — one ordered stream of sequence numbers.
type StreamKey = (i32, u32);

#[derive(Default)]
pub struct AckTracker {
    /// Acknowledged [start, end) sequence ranges per stream.
    acked: Mutex<HashMap<StreamKey, Vec<(u64, u64)>>>,
}

impl AckTracker {
    /// Records that `count` messages from `first_seq` on were acknowledged.
    pub fn ack(&self, partition: i32, producer: u32, first_seq: u64, count: u64) {
        if count == 0 {
            return;
        }
        if let Ok(mut m) = self.acked.lock() {
            let ranges = m.entry((partition, producer)).or_default();
            match ranges.last_mut() {
                Some(last) if last.1 == first_seq => last.1 = first_seq + count,
                _ => ranges.push((first_seq, first_seq + count)),
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.acked
            .lock()
            .map(|m| m.values().flat_map(|r| r.iter()).map(|(a, b)| b - a).sum())
            .unwrap_or(0)
    }
}

#[derive(Default)]
struct Stream {
    last: Option<u64>,
    seen: SeqSet,
}

/// Outcome of a validation.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ValidationSummary {
    pub checked: u64,
    pub intact: u64,
    pub corrupt: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Values without the bench's header (not written by `chronik-bench --validate`).
    pub foreign: u64,
    /// Batches whose CRC-32C did not match.
    pub bad_batch_crc: u64,
    /// Acknowledged but never read back (only known when this run produced the data).
    pub lost: Option<u64>,
}

impl ValidationSummary {
    pub fn passed(&self) -> bool {
        self.corrupt == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.foreign == 0
            && self.bad_batch_crc == 0
            && self.lost.unwrap_or(0) == 0
    }

    pub fn describe(&self) -> String {
        format!(
            "checked {} messages: {} intact, {} corrupt, {} duplicate, {} out of order, {} foreign, {} bad batch CRC{}",
            self.checked,
            self.intact,
            self.corrupt,
            self.duplicates,
            self.out_of_order,
            self.foreign,
            self.bad_batch_crc,
            self.lost.map(|l| format!(", {l} acknowledged but lost")).unwrap_or_default()
        )
    }
}

/// Checks messages as consumers read them.
#[derive(Default)]
pub struct Validator {
    inner: Mutex<(HashMap<StreamKey, Stream>, ValidationSummary)>,
}

impl Validator {
    /// Checks the values read from one partition, in offset order.
    pub fn check_values<'a, I: IntoIterator<Item = &'a [u8]>>(&self, partition: i32, values: I) {
        let Ok(mut guard) = self.inner.lock() else {
            return;
        };
        let (streams, summary) = &mut *guard;
        for v in values {
            summary.checked += 1;
            match payload::check(v) {
                PayloadCheck::Foreign => summary.foreign += 1,
                PayloadCheck::Corrupt => summary.corrupt += 1,
                PayloadCheck::Intact(h) => {
                    let s = streams.entry((partition, h.producer)).or_default();
                    if s.seen.insert(h.seq) {
                        summary.duplicates += 1;
                    } else if s.last.is_some_and(|last| h.seq < last) {
                        summary.out_of_order += 1;
                    } else {
                        summary.intact += 1;
                    }
                    s.last = Some(s.last.map_or(h.seq, |l| l.max(h.seq)));
                }
            }
        }
    }

    pub fn bad_batch_crc(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.1.bad_batch_crc += 1;
        }
    }

    /// The summary; with a tracker, also counts acknowledged messages never seen.
    pub fn summary(&self, tracker: Option<&AckTracker>) -> ValidationSummary {
        let Ok(guard) = self.inner.lock() else {
            return ValidationSummary::default();
        };
        let (streams, summary) = &*guard;
        let mut out = summary.clone();
        if let Some(t) = tracker {
            let mut lost = 0;
            if let Ok(acked) = t.acked.lock() {
                for (key, ranges) in acked.iter() {
                    let stream = streams.get(key);
                    for &(a, b) in ranges {
                        for seq in a..b {
                            if !stream.is_some_and(|s| s.seen.contains(seq)) {
                                lost += 1;
                            }
                        }
                    }
                }
            }
            out.lost = Some(lost);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{stamp, PayloadHeader};

    fn value(producer: u32, seq: u64) -> Vec<u8> {
        let mut v = vec![7u8; 64];
        stamp(
            &mut v,
            PayloadHeader {
                producer,
                seq,
                timestamp_us: 1,
            },
        );
        v
    }

    #[test]
    fn a_clean_stream_passes() {
        let tracker = AckTracker::default();
        tracker.ack(0, 1, 0, 3);
        tracker.ack(0, 1, 3, 2);
        tracker.ack(1, 2, 0, 1);
        let v = Validator::default();
        let vals: Vec<Vec<u8>> = (0..5).map(|s| value(1, s)).collect();
        v.check_values(0, vals.iter().map(|x| x.as_slice()));
        v.check_values(1, [value(2, 0).as_slice()]);
        let s = v.summary(Some(&tracker));
        assert!(s.passed(), "{s:?}");
        assert_eq!(s.intact, 6);
        assert_eq!(tracker.total(), 6);
    }

    #[test]
    fn duplicates_gaps_reordering_and_damage_fail() {
        let tracker = AckTracker::default();
        tracker.ack(0, 1, 0, 4);
        let v = Validator::default();
        let mut damaged = value(1, 3);
        damaged[40] ^= 1;
        let vals = [
            value(1, 0),
            value(1, 2),
            value(1, 1),
            value(1, 2),
            damaged,
            b"hello world".to_vec(),
        ];
        v.check_values(0, vals.iter().map(|x| x.as_slice()));
        let s = v.summary(Some(&tracker));
        assert!(!s.passed());
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.out_of_order, 1);
        assert_eq!(s.corrupt, 1);
        assert_eq!(s.foreign, 1);
        assert_eq!(s.lost, Some(1)); // seq 3 was damaged, so never seen intact
    }
}
