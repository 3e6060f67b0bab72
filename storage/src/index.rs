//! Sparse offset index of one segment: (offset relative to the segment base, byte position)
//! of a batch every `index_interval_bytes`. Kept in memory; written to `<base>.index` when a
//! segment is sealed or the log closes cleanly.

use zerocopy::little_endian::{I64, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::disk_format::{self, FileKind};

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct IndexEntry {
    rel_offset: U32,
    position: U32,
}

/// What a clean index file also remembers about its segment, so reopening needs no scan.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct SegmentSummary {
    pub size: U64,
    pub next_offset: I64,
    pub max_timestamp: I64,
    pub offset_of_max_timestamp: I64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, rel_offset: u32, position: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|&(o, p)| o < rel_offset && p < position));
        self.entries.push((rel_offset, position));
    }

    /// Byte position of the last indexed batch starting at or before `rel_offset` (0 if none).
    pub fn lookup(&self, rel_offset: u32) -> (u32, u32) {
        let i = self.entries.partition_point(|&(o, _)| o <= rel_offset);
        if i == 0 {
            (0, 0)
        } else {
            self.entries[i - 1]
        }
    }

    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    pub fn encode(&self, base_offset: i64, summary: SegmentSummary) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + self.entries.len() * 8);
        body.extend_from_slice(summary.as_bytes());
        for &(o, p) in &self.entries {
            body.extend_from_slice(
                IndexEntry {
                    rel_offset: U32::new(o),
                    position: U32::new(p),
                }
                .as_bytes(),
            );
        }
        disk_format::encode(FileKind::OffsetIndex, base_offset, &body)
    }

    pub fn decode(base_offset: i64, bytes: &[u8]) -> Result<(OffsetIndex, SegmentSummary), String> {
        let (h, body) = disk_format::decode(FileKind::OffsetIndex, bytes)?;
        if h.base_offset.get() != base_offset {
            return Err(format!("index is for base offset {}", h.base_offset.get()));
        }
        let (summary, rest) = SegmentSummary::read_from_prefix(body)
            .map_err(|_| "missing segment summary".to_string())?;
        let entries =
            <[IndexEntry]>::ref_from_bytes(rest).map_err(|_| "ragged entries".to_string())?;
        let mut idx = OffsetIndex::default();
        for e in entries {
            let (o, p) = (e.rel_offset.get(), e.position.get());
            if idx
                .entries
                .last()
                .is_some_and(|&(lo, lp)| lo >= o || lp >= p)
            {
                return Err("entries not increasing".into());
            }
            if p as u64 >= summary.size.get() {
                return Err("entry points past the segment end".into());
            }
            idx.entries.push((o, p));
        }
        Ok((idx, summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_floor_entry() {
        let mut idx = OffsetIndex::default();
        idx.push(10, 4100);
        idx.push(20, 8300);
        idx.push(35, 12500);
        assert_eq!(idx.lookup(0), (0, 0));
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 4100));
        assert_eq!(idx.lookup(19), (10, 4100));
        assert_eq!(idx.lookup(34), (20, 8300));
        assert_eq!(idx.lookup(1000), (35, 12500));
    }

    #[test]
    fn encode_decode_and_reject_foreign_base() {
        let mut idx = OffsetIndex::default();
        idx.push(3, 100);
        idx.push(9, 900);
        let summary = SegmentSummary {
            size: U64::new(1000),
            next_offset: I64::new(112),
            max_timestamp: I64::new(5),
            offset_of_max_timestamp: I64::new(111),
        };
        let enc = idx.encode(100, summary);
        let (back, s) = OffsetIndex::decode(100, &enc).expect("decode");
        assert_eq!(back, idx);
        assert_eq!(s.next_offset.get(), 112);
        assert!(OffsetIndex::decode(101, &enc).is_err());
    }
}
