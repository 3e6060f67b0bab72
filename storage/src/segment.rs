//! One segment: `<base offset, 20 digits>.log` plus its in-memory sparse indexes.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use zerocopy::little_endian::{I64, U64};

use crate::file::SegFile;
use crate::index::{OffsetIndex, SegmentSummary};
use crate::time_index::TimeIndex;

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_name(base: i64) -> String {
    format!("{base:020}.index")
}
pub(crate) fn time_index_name(base: i64) -> String {
    format!("{base:020}.timeindex")
}

/// Offsets and timestamps of one batch, as the indexes need them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    pub base: i64,
    pub last: i64,
    pub max_ts: i64,
    pub offset_of_max_ts: i64,
}

/// What we know about a segment's contents: sizes, offsets, indexes, max timestamp.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub base_offset: i64,
    pub next_offset: i64,
    /// Bytes of whole batches written (the logical size; the file may be longer by padding).
    pub size: u64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    bytes_since_index: u64,
}

impl SegmentMeta {
    pub fn new(base_offset: i64) -> SegmentMeta {
        SegmentMeta {
            base_offset,
            next_offset: base_offset,
            size: 0,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset - 1,
            bytes_since_index: 0,
        }
    }

    pub fn rel(&self, offset: i64) -> u32 {
        debug_assert!(offset >= self.base_offset);
        (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32
    }

    /// Accounts for a batch written at `pos`, adding sparse index entries as needed.
    pub fn record_batch(&mut self, b: &BatchInfo, pos: u64, len: u64, interval: u32) {
        let BatchInfo {
            base,
            last,
            max_ts,
            offset_of_max_ts,
        } = *b;
        // Offsets increase; a cleaned (compacted) segment has gaps between batches.
        debug_assert!(base >= self.next_offset, "offsets must increase");
        debug_assert_eq!(pos, self.size, "batches must be contiguous");
        if pos > 0 && self.bytes_since_index >= interval as u64 {
            self.index.push(self.rel(base), pos as u32);
            // Everything before this batch has timestamps <= the current max.
            if self.max_timestamp >= 0 {
                let rel = self.rel(self.offset_of_max_timestamp.max(self.base_offset));
                self.time_index.maybe_push(self.max_timestamp, rel);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += len;
        if max_ts > self.max_timestamp {
            self.max_timestamp = max_ts;
            self.offset_of_max_timestamp = offset_of_max_ts;
        }
        self.next_offset = last + 1;
        self.size = pos + len;
    }

    /// Final time-index entry when the segment is sealed, like Kafka's roll.
    pub fn seal_time_index(&mut self) {
        if self.max_timestamp >= 0 && self.offset_of_max_timestamp >= self.base_offset {
            let rel = self.rel(self.offset_of_max_timestamp);
            self.time_index.maybe_push(self.max_timestamp, rel);
        }
    }

    pub fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            size: U64::new(self.size),
            next_offset: I64::new(self.next_offset),
            max_timestamp: I64::new(self.max_timestamp),
            offset_of_max_timestamp: I64::new(self.offset_of_max_timestamp),
        }
    }

    pub fn from_files(
        base: i64,
        index: OffsetIndex,
        summary: SegmentSummary,
        time_index: TimeIndex,
    ) -> SegmentMeta {
        SegmentMeta {
            base_offset: base,
            next_offset: summary.next_offset.get(),
            size: summary.size.get(),
            index,
            time_index,
            max_timestamp: summary.max_timestamp.get(),
            offset_of_max_timestamp: summary.offset_of_max_timestamp.get(),
            // Start a fresh interval; a slightly denser index is harmless.
            bytes_since_index: 0,
        }
    }
}

pub(crate) struct Segment {
    pub meta: SegmentMeta,
    pub file: Rc<SegFile>,
    /// Wall-clock ms when this segment was created or opened (segment.ms roll).
    pub created_ms: i64,
    pub sealed: bool,
    /// The written bytes of the last partial page, rewritten with the next O_DIRECT write.
    pub tail_page: Vec<u8>,
    /// Bytes reserved with fallocate.
    pub allocated: u64,
    /// Whether the file's directory entry is known durable. The first segment of a new log
    /// leaves that to its first data sync (`sync_active_locked`): a partition that never gets
    /// a record costs no directory fsync, and creating thousands of them no disk round trip
    /// each.
    pub dir_synced: bool,
}

impl Segment {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}
