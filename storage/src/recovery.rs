//! Scanning a segment batch by batch (length, offsets, CRC-32C) to rebuild its indexes and
//! find where its valid data ends.

use std::collections::HashMap;

use bytes::Bytes;

use crate::batch::{self, parse_header, validate_batch, BATCH_HEADER_LEN};
use crate::error::StorageError;
use crate::file::SegFile;
use crate::segment::{BatchInfo, SegmentMeta};

const CHUNK: usize = 1 << 20;

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    pub position: u64,
    pub reason: String,
    /// Zero padding after the last batch (O_DIRECT page tail), or the requested stop point.
    pub clean: bool,
}

pub(crate) struct Scan {
    pub meta: SegmentMeta,
    /// (epoch, first offset) for every epoch increase seen.
    pub epochs: Vec<(i32, i64)>,
    pub stop: Option<Stop>,
    /// Batch start positions → base offset (only when asked, for consistency checks).
    pub positions: HashMap<u64, i64>,
}

pub(crate) struct ScanOptions {
    pub verify_crc: bool,
    /// Stop at the first batch whose last offset is >= this (truncation).
    pub stop_at_offset: Option<i64>,
    pub index_interval: u32,
    pub collect_positions: bool,
}

pub(crate) async fn scan_segment(
    file: &SegFile,
    base_offset: i64,
    file_size: u64,
    opts: &ScanOptions,
) -> Result<Scan, StorageError> {
    let mut meta = SegmentMeta::new(base_offset);
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    let mut positions = HashMap::new();
    let mut buf = Bytes::new();
    let mut buf_pos = 0u64;
    let mut pos = 0u64;
    let stop = loop {
        if pos >= file_size {
            break None;
        }
        let in_buf = pos >= buf_pos && pos + BATCH_HEADER_LEN as u64 <= buf_pos + buf.len() as u64;
        if !in_buf {
            let want = CHUNK.min((file_size - pos) as usize);
            buf = file.read(pos, want).await?;
            buf_pos = pos;
        }
        let avail = &buf[(pos - buf_pos) as usize..];
        if avail.len() < BATCH_HEADER_LEN {
            let clean = avail.iter().all(|&b| b == 0);
            break Some(Stop {
                position: pos,
                reason: format!(
                    "{} trailing bytes, shorter than a batch header",
                    avail.len()
                ),
                clean,
            });
        }
        if avail[..12].iter().all(|&b| b == 0) {
            let clean = avail.iter().all(|&b| b == 0);
            break Some(Stop {
                position: pos,
                reason: if clean {
                    "zero padding".into()
                } else {
                    "zero batch length followed by data".into()
                },
                clean,
            });
        }
        let h = match parse_header(avail) {
            Ok(h) => h,
            Err(e) => {
                break Some(Stop {
                    position: pos,
                    reason: format!("bad batch header: {e}"),
                    clean: false,
                })
            }
        };
        let total = h.total_len() as u64;
        if pos + total > file_size {
            break Some(Stop {
                position: pos,
                reason: format!(
                    "batch of {total} bytes extends past the end of the file (torn write)"
                ),
                clean: false,
            });
        }
        if (avail.len() as u64) < total {
            // Re-read so the whole batch is in the buffer.
            let want = CHUNK.max(total as usize).min((file_size - pos) as usize);
            buf = file.read(pos, want).await?;
            buf_pos = pos;
            if (buf.len() as u64) < total {
                break Some(Stop {
                    position: pos,
                    reason: "short read inside the file".into(),
                    clean: false,
                });
            }
            continue;
        }
        let bytes = &avail[..total as usize];
        // Gaps are fine (compaction removes records); going back is not.
        if h.base_offset < meta.next_offset {
            break Some(Stop {
                position: pos,
                reason: format!(
                    "expected base offset at least {}, found {}",
                    meta.next_offset, h.base_offset
                ),
                clean: false,
            });
        }
        if opts.verify_crc {
            if let Err(e) = validate_batch(bytes) {
                break Some(Stop {
                    position: pos,
                    reason: format!("batch at offset {}: {e}", h.base_offset),
                    clean: false,
                });
            }
        }
        if opts.stop_at_offset.is_some_and(|s| h.last_offset() >= s) {
            break Some(Stop {
                position: pos,
                reason: "truncation point".into(),
                clean: true,
            });
        }
        let epoch = h.partition_leader_epoch;
        if epoch >= 0 && epochs.last().is_none_or(|&(e, _)| e < epoch) {
            epochs.push((epoch, h.base_offset));
        }
        if opts.collect_positions {
            positions.insert(pos, h.base_offset);
        }
        let off_max = batch::offset_of_max_timestamp(bytes, &h);
        let info = BatchInfo {
            base: h.base_offset,
            last: h.last_offset(),
            max_ts: h.max_timestamp,
            offset_of_max_ts: off_max,
        };
        meta.record_batch(&info, pos, total, opts.index_interval);
        pos += total;
    };
    Ok(Scan {
        meta,
        epochs,
        stop,
        positions,
    })
}

/// Suffix of a cleaned segment being written (incomplete until renamed to `SWAP_SUFFIX`).
pub(crate) const CLEANED_SUFFIX: &str = ".log.cleaned";
/// Suffix of a cleaned segment that is complete and durable, replacing `<base>.log`.
pub(crate) const SWAP_SUFFIX: &str = ".log.swap";

/// Finishes what a crash interrupted in the cleaner's segment swap (see `log/clean.rs`):
/// a `.cleaned` file may be partial and is removed (the original segment is intact); a
/// `.swap` file is complete and fsynced, so it replaces its segment, whose index files are
/// removed first (they describe the old contents). Returns whether anything changed.
pub(crate) fn finish_interrupted_swaps(dir: &std::path::Path) -> Result<bool, StorageError> {
    use crate::file::remove_if_exists;
    use crate::segment::{index_name, log_path, time_index_name};
    let mut changed = false;
    let entries =
        std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, "list log directory", e))?;
    let mut swaps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, "list log directory", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(CLEANED_SUFFIX) {
            remove_if_exists(&entry.path())?;
            changed = true;
        } else if let Some(stem) = name.strip_suffix(SWAP_SUFFIX) {
            match stem.parse::<i64>() {
                Ok(b) if stem.len() == 20 && b >= 0 => swaps.push((b, entry.path())),
                _ => {
                    tracing::warn!(file = %entry.path().display(), "ignoring unexpected file in log directory")
                }
            }
        }
    }
    for (base, swap) in swaps {
        tracing::info!(base, dir = %dir.display(), "completing an interrupted cleaner swap");
        remove_if_exists(&dir.join(index_name(base)))?;
        remove_if_exists(&dir.join(time_index_name(base)))?;
        // rename(2) replaces the old segment atomically, if it is still there.
        let target = log_path(dir, base);
        std::fs::rename(&swap, &target)
            .map_err(|e| StorageError::io(&swap, "rename cleaned segment", e))?;
        changed = true;
    }
    Ok(changed)
}
