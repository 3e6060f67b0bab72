//! Leader-epoch cache (Kafka's leader-epoch-checkpoint): the start offset of every leader epoch
//! seen in this log. Answers OffsetForLeaderEpoch and guides truncation after a leader change.

use zerocopy::little_endian::{I32, I64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::disk_format::{self, FileKind};

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct EpochEntry {
    epoch: I32,
    start_offset: I64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Records that `epoch` starts at `start_offset` if it is newer than the latest one.
    /// Returns whether anything changed (the checkpoint then needs rewriting).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(e, s)) if e >= epoch || s > start_offset => false,
            Some(&(_, s)) if s == start_offset => {
                // An epoch that never got a record is superseded by the new one.
                self.entries.pop();
                self.entries.push((epoch, start_offset));
                true
            }
            _ => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Kafka semantics: the largest epoch <= `requested` and its end offset (start of the next
    /// epoch, or the log end offset for the latest).
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> Option<(i32, i64)> {
        let i = self.entries.partition_point(|&(e, _)| e <= requested);
        if i == 0 {
            return None;
        }
        let epoch = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        Some((epoch, end))
    }

    /// Drops epochs starting at or after `log_end` (after truncation). Returns whether changed.
    pub fn truncate_from_end(&mut self, log_end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < log_end);
        before != self.entries.len()
    }

    /// Moves the first epoch's start up to `log_start`, dropping epochs wholly below it.
    pub fn truncate_from_start(&mut self, log_start: i64) -> bool {
        let below = self.entries.partition_point(|&(_, s)| s <= log_start);
        if below == 0 {
            return false;
        }
        let keep_epoch = self.entries[below - 1].0;
        let changed = below > 1 || self.entries[0].1 != log_start;
        self.entries.drain(..below);
        self.entries.insert(0, (keep_epoch, log_start));
        changed
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * 12);
        for &(e, s) in &self.entries {
            body.extend_from_slice(
                EpochEntry {
                    epoch: I32::new(e),
                    start_offset: I64::new(s),
                }
                .as_bytes(),
            );
        }
        disk_format::encode(FileKind::LeaderEpochs, 0, &body)
    }

    pub fn decode(bytes: &[u8]) -> Result<EpochCache, String> {
        let (_, body) = disk_format::decode(FileKind::LeaderEpochs, bytes)?;
        let entries =
            <[EpochEntry]>::ref_from_bytes(body).map_err(|_| "ragged entries".to_string())?;
        let mut c = EpochCache::default();
        for e in entries {
            let (ep, s) = (e.epoch.get(), e.start_offset.get());
            if c.entries.last().is_some_and(|&(le, ls)| le >= ep || ls > s) {
                return Err("epochs not increasing".into());
            }
            c.entries.push((ep, s));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let mut c = EpochCache::default();
        assert!(c.assign(1, 0));
        assert!(!c.assign(1, 10));
        assert!(c.assign(3, 100));
        assert!(c.assign(5, 250));
        assert!(!c.assign(4, 300)); // older epoch never goes back
        assert_eq!(c.latest(), Some(5));
        assert_eq!(c.end_offset_for(0, 400), None);
        assert_eq!(c.end_offset_for(1, 400), Some((1, 100)));
        assert_eq!(c.end_offset_for(2, 400), Some((1, 100)));
        assert_eq!(c.end_offset_for(3, 400), Some((3, 250)));
        assert_eq!(c.end_offset_for(5, 400), Some((5, 400)));
        assert_eq!(c.end_offset_for(9, 400), Some((5, 400)));
    }

    #[test]
    fn truncation_from_both_ends_and_persistence() {
        let mut c = EpochCache::default();
        c.assign(1, 0);
        c.assign(2, 50);
        c.assign(4, 120);
        assert!(c.truncate_from_end(120));
        assert_eq!(c.latest(), Some(2));
        assert!(c.truncate_from_start(60));
        assert_eq!(c.end_offset_for(2, 120), Some((2, 120)));
        assert_eq!(c.end_offset_for(1, 120), None);
        let back = EpochCache::decode(&c.encode()).expect("decode");
        assert_eq!(back, c);
    }
}
