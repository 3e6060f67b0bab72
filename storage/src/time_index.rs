//! Sparse time index of one segment: (max timestamp so far, offset of that record), appended at
//! index points only when the max grows, so both columns increase. `<base>.timeindex` on disk.

use zerocopy::little_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::disk_format::{self, FileKind};

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct TimeEntry {
    timestamp: I64,
    rel_offset: U32,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry if `timestamp` is a new maximum.
    pub fn maybe_push(&mut self, timestamp: i64, rel_offset: u32) {
        match self.entries.last() {
            Some(&(ts, o)) if ts >= timestamp || o >= rel_offset => {}
            _ => self.entries.push((timestamp, rel_offset)),
        }
    }

    /// Every record at or before the returned relative offset has a timestamp < `target`,
    /// so a search for the first timestamp >= target can start right after it.
    pub fn all_before(&self, target: i64) -> Option<u32> {
        let i = self.entries.partition_point(|&(ts, _)| ts < target);
        if i == 0 {
            None
        } else {
            Some(self.entries[i - 1].1)
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn encode(&self, base_offset: i64) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * 12);
        for &(ts, o) in &self.entries {
            body.extend_from_slice(
                TimeEntry {
                    timestamp: I64::new(ts),
                    rel_offset: U32::new(o),
                }
                .as_bytes(),
            );
        }
        disk_format::encode(FileKind::TimeIndex, base_offset, &body)
    }

    pub fn decode(base_offset: i64, bytes: &[u8]) -> Result<TimeIndex, String> {
        let (h, body) = disk_format::decode(FileKind::TimeIndex, bytes)?;
        if h.base_offset.get() != base_offset {
            return Err(format!(
                "time index is for base offset {}",
                h.base_offset.get()
            ));
        }
        let entries =
            <[TimeEntry]>::ref_from_bytes(body).map_err(|_| "ragged entries".to_string())?;
        let mut ti = TimeIndex::default();
        for e in entries {
            let (ts, o) = (e.timestamp.get(), e.rel_offset.get());
            if ti
                .entries
                .last()
                .is_some_and(|&(lt, lo)| lt >= ts || lo >= o)
            {
                return Err("entries not increasing".into());
            }
            ti.entries.push((ts, o));
        }
        Ok(ti)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_maxima_are_indexed_and_search_start_is_safe() {
        let mut ti = TimeIndex::default();
        ti.maybe_push(100, 0);
        ti.maybe_push(90, 5); // not a new max
        ti.maybe_push(200, 10);
        ti.maybe_push(300, 20);
        assert_eq!(ti.len(), 3);
        assert_eq!(ti.all_before(50), None);
        assert_eq!(ti.all_before(100), None);
        assert_eq!(ti.all_before(101), Some(0));
        assert_eq!(ti.all_before(250), Some(10));
        assert_eq!(ti.all_before(1000), Some(20));
        let back = TimeIndex::decode(7, &ti.encode(7)).expect("decode");
        assert_eq!(back, ti);
    }
}
