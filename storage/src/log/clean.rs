//! Log compaction (`cleanup.policy=compact`), as Kafka's log cleaner does it.
//!
//! One round: build a map key hash → latest offset over the dirty part of the log (from the
//! first dirty offset up to the active segment or `min.compaction.lag.ms`), bounded by the
//! dedupe buffer (when it fills, the round covers only what it mapped); then rewrite every
//! sealed segment up to where the map ends, keeping a record only if no later record has its
//! key (tombstones too, until `delete.retention.ms` has passed). Offsets never change, so the
//! log gets gaps; records with consecutive kept offsets stay together in one batch. The last
//! record of each segment is always kept so segment bounds (and the log end seen by recovery)
//! never move. A compressed batch is decompressed (bounded like produce validation) and its
//! kept records compressed again with its codec. Nothing at or past the partition's last
//! stable offset is cleaned (`CleanerLimits::upper_bound`): whole sealed segments below it
//! only. Aborted transactions' data, transaction markers and the batches producer state needs
//! are handled in `clean_txn`.
//!
//! Swap of one segment, crash-safe at every step: the new contents go to `<base>.log.cleaned`
//! (fsynced), which is renamed to `<base>.log.swap` (directory fsynced: from here the new
//! segment is the committed one), the old index files are removed, the swap file is renamed
//! over `<base>.log` (atomic), and new index files are written. `PartitionLog::open` removes a
//! `.cleaned` leftover and completes a `.swap` (`recovery::finish_interrupted_swaps`).
//! Cleaning reads and writes without the log's I/O lock; it holds the lock only to check the
//! segment is unchanged and swap it, so produce and fetch are never blocked behind a scan.

use std::collections::HashMap;

use glommio::io::{BufferedFile, OpenOptions};

use super::clean_txn::{AbortedRange, Plan, TxnContext, TxnRound};
use super::pacing::{pace, CleanerPace};
use super::*;
use crate::batch_validation::{decompress_records, DEFAULT_MAX_UNCOMPRESSED_BYTES};
use crate::compression::Codec;
use crate::error::glommio_io;
use crate::records::{build_empty, build_run, parse_records, RecordRef};
use crate::recovery::{CLEANED_SUFFIX, SWAP_SUFFIX};

/// Bytes one map entry costs (hash, offset and the hash table's overhead), for the budget.
const MAP_ENTRY_BYTES: usize = 40;
/// Reads and writes of the cleaner go in chunks of this size: small, because the cleaner
/// awaits one read at a time and a produce fdatasync queued behind it waits for all of it.
const CHUNK: usize = 128 << 10;
/// The cleaned copy is fdatasynced every this many bytes: one sync of a whole segment at the
/// end would queue up to a segment of writeback in front of the produce path's fsyncs.
const SYNC_EVERY: u64 = 8 << 20;
/// What a cleaning round may use.
#[derive(Debug, Clone)]
pub struct CleanerLimits {
    /// Memory for the key → offset map (Kafka's `log.cleaner.dedupe.buffer.size`).
    pub dedupe_buffer_bytes: usize,
    pub now_ms: i64,
    /// How the cleaner shares the shard with requests (`pacing`).
    pub pace: CleanerPace,
    /// Nothing at or past this offset is cleaned: the partition's last stable offset (Kafka's
    /// first uncleanable offset), so open transactions and records not yet replicated are
    /// left alone.
    pub upper_bound: i64,
    /// The partition's aborted transactions and producers.
    pub txns: TxnContext,
    /// Test hook: stop the swap after this step (1..=4) as a crash would.
    #[doc(hidden)]
    pub crash_after_step: Option<u8>,
}

impl CleanerLimits {
    pub fn new(dedupe_buffer_bytes: usize, now_ms: i64) -> CleanerLimits {
        CleanerLimits {
            dedupe_buffer_bytes,
            now_ms,
            pace: CleanerPace::default(),
            upper_bound: i64::MAX,
            txns: TxnContext::default(),
            crash_after_step: None,
        }
    }
}

/// What a cleaning round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Bytes of segments read (map building and rewriting).
    pub bytes_read: u64,
    /// Bytes of cleaned segments written.
    pub bytes_written: u64,
    pub segments_rewritten: usize,
    pub records_removed: u64,
    /// The first dirty offset after the round.
    pub clean_end: i64,
    /// Aborted transactions of `CleanerLimits::txns` of which no batch is left: the
    /// partition's index should forget them (only then may a later round remove their
    /// markers).
    pub aborted_without_data: Vec<AbortedRange>,
}

/// A sealed segment as the cleaner found it.
#[derive(Clone)]
struct SegSnap {
    base: i64,
    next: i64,
    size: u64,
    max_ts: i64,
    file: Rc<SegFile>,
}

/// The part of the log a round may clean.
struct Cleanable {
    /// Sealed segments below the first uncleanable offset, oldest first.
    segs: Vec<SegSnap>,
    first_dirty: i64,
    active_base: i64,
    ratio: f64,
    forced: bool,
}

/// Batches of one segment read in chunks, each CRC-checked.
struct BatchReader<'a> {
    seg: &'a SegSnap,
    buf: Bytes,
    buf_pos: u64,
    pos: u64,
}

impl<'a> BatchReader<'a> {
    fn new(seg: &'a SegSnap) -> Self {
        BatchReader {
            seg,
            buf: Bytes::new(),
            buf_pos: 0,
            pos: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<(Bytes, batch::BatchHeader)>, StorageError> {
        let path = self.seg.file.path();
        if self.pos >= self.seg.size {
            return Ok(None);
        }
        let mut off = (self.pos - self.buf_pos) as usize;
        if self.pos < self.buf_pos || off + batch::BATCH_HEADER_LEN > self.buf.len() {
            let want = CHUNK.min((self.seg.size - self.pos) as usize);
            self.buf = self.seg.file.read(self.pos, want).await?;
            self.buf_pos = self.pos;
            off = 0;
        }
        let h = parse_header(&self.buf[off..])
            .map_err(|e| StorageError::corrupt(path, format!("at byte {}: {e}", self.pos)))?;
        let total = h.total_len();
        if self.pos + total as u64 > self.seg.size {
            return Err(StorageError::corrupt(path, "batch past the segment end"));
        }
        if off + total > self.buf.len() {
            let want = CHUNK.max(total).min((self.seg.size - self.pos) as usize);
            self.buf = self.seg.file.read(self.pos, want).await?;
            self.buf_pos = self.pos;
            off = 0;
            if self.buf.len() < total {
                return Err(StorageError::corrupt(path, "short read of a batch"));
            }
        }
        let bytes = self.buf.slice(off..off + total);
        batch::validate_batch(&bytes)
            .map_err(|e| StorageError::corrupt(path, format!("at byte {}: {e}", self.pos)))?;
        self.pos += total as u64;
        Ok(Some((bytes, h)))
    }
}

/// Whether the cleaner looks inside this batch's records (a control batch is decided by
/// `clean_txn` as a whole).
fn inspectable(h: &batch::BatchHeader) -> bool {
    h.compression() <= 4 && !h.is_control()
}

/// The batch in plain form for `parse_records`: itself when uncompressed, else its header
/// followed by its decompressed records, built in `scratch` (reused from batch to batch).
/// `None` when the cleaner keeps the batch whole (not inspectable, or its records cannot be
/// decompressed within the bound produce validation applies).
fn plain<'a>(
    bytes: &'a [u8],
    h: &batch::BatchHeader,
    scratch: &'a mut Vec<u8>,
) -> Option<(&'a [u8], batch::BatchHeader)> {
    if !inspectable(h) {
        return None;
    }
    if h.compression() == 0 {
        return Some((bytes, *h));
    }
    scratch.clear();
    scratch.extend_from_slice(bytes.get(..batch::BATCH_HEADER_LEN)?);
    decompress_records(bytes, h, DEFAULT_MAX_UNCOMPRESSED_BYTES, scratch).ok()?;
    let mut ph = *h;
    ph.batch_length = i32::try_from(scratch.len() - 12).ok()?;
    Some((&scratch[..], ph))
}

fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// The cleaned contents of one segment, written to its `.cleaned` file.
struct Rewritten {
    meta: SegmentMeta,
    path: PathBuf,
    removed: u64,
}

impl PartitionLog {
    /// The dirty ratio of a compacted log when it is due for cleaning (ratio at least
    /// `min.cleanable.dirty.ratio`, or a dirty segment older than `max.compaction.lag.ms`,
    /// reported as a ratio above 1 so it goes first); `None` when there is nothing to do.
    /// Only sealed segments wholly below `upper_bound` (the last stable offset) count.
    pub fn cleanable_ratio(&self, now_ms: i64, upper_bound: i64) -> Option<f64> {
        let c = self.inner.cleanable(now_ms, upper_bound)?;
        Some(if c.forced { 1.0 + c.ratio } else { c.ratio })
    }

    /// Runs one cleaning round if the log is due; `None` if it was not.
    pub async fn clean(&self, limits: &CleanerLimits) -> Result<Option<CleanStats>, StorageError> {
        self.inner.clean(limits).await
    }
}

impl Inner {
    fn cleanable(&self, now_ms: i64, upper_bound: i64) -> Option<Cleanable> {
        let cfg = self.cfg.borrow();
        if !cfg.cleanup.compact || self.closed.get() {
            return None;
        }
        let cc = cfg.compaction;
        let st = self.st.borrow();
        let n = st.segments.len();
        let lag_limit = now_ms.saturating_sub(cc.min_compaction_lag_ms as i64);
        let segs: Vec<SegSnap> = st
            .segments
            .values()
            .take(n.saturating_sub(1))
            .take_while(|s| s.meta.next_offset <= upper_bound)
            .filter(|s| s.meta.next_offset > st.log_start && s.meta.size > 0)
            .take_while(|s| cc.min_compaction_lag_ms == 0 || s.meta.max_timestamp <= lag_limit)
            .map(|s| SegSnap {
                base: s.meta.base_offset,
                next: s.meta.next_offset,
                size: s.meta.size,
                max_ts: s.meta.max_timestamp,
                file: s.file.clone(),
            })
            .collect();
        let first_dirty = st.clean_end.max(st.log_start);
        let (mut clean, mut dirty) = (0u64, 0u64);
        for s in &segs {
            if s.next <= first_dirty {
                clean += s.size;
            } else {
                dirty += s.size;
            }
        }
        if dirty == 0 {
            return None;
        }
        let ratio = dirty as f64 / (clean + dirty) as f64;
        let forced = cc.max_compaction_lag_ms.is_some_and(|max| {
            segs.iter()
                .find(|s| s.next > first_dirty)
                .is_some_and(|s| s.max_ts < now_ms.saturating_sub(max as i64))
        });
        let active_base = st.active().map_or(st.leo, |a| a.meta.base_offset);
        (ratio >= cc.min_cleanable_dirty_ratio || forced).then_some(Cleanable {
            segs,
            first_dirty,
            active_base,
            ratio,
            forced,
        })
    }

    async fn clean(&self, limits: &CleanerLimits) -> Result<Option<CleanStats>, StorageError> {
        let Some(c) = self.cleanable(limits.now_ms, limits.upper_bound) else {
            return Ok(None);
        };
        let mut stats = CleanStats::default();
        let gen = self.st.borrow().clean_gen;
        let (map, map_end) = self.build_offset_map(&c, limits, &mut stats).await?;
        if map_end <= c.first_dirty {
            tracing::warn!(dir = %self.dir.display(), "log cleaner: the dedupe buffer cannot hold one batch's keys");
            return Ok(None);
        }
        let mut txns = TxnRound::new(&limits.txns, self.horizon(limits.now_ms));
        let mut all_swapped = true;
        for seg in c.segs.iter().filter(|s| s.base < map_end) {
            let Some(rw) = self
                .rewrite_segment(
                    seg,
                    &map,
                    map_end,
                    c.active_base,
                    limits,
                    &mut txns,
                    &mut stats,
                )
                .await?
            else {
                continue;
            };
            stats.records_removed += rw.removed;
            stats.bytes_written += rw.meta.size;
            if self.swap_in(seg, rw, limits.crash_after_step).await? {
                stats.segments_rewritten += 1;
            } else {
                all_swapped = false;
            }
            if limits.crash_after_step.is_some() {
                return Ok(Some(stats));
            }
        }
        // A segment left as it was (retention or a truncation changed it meanwhile) may
        // still hold batches this round removed from its copy.
        if all_swapped {
            stats.aborted_without_data = txns.aborted_without_data();
        }
        let mut st = self.st.borrow_mut();
        if st.clean_gen == gen && map_end > st.clean_end && map_end <= st.leo {
            st.clean_end = map_end;
            st.clean_dirty = true;
        }
        stats.clean_end = st.clean_end;
        Ok(Some(stats))
    }

    /// Maps each key of the dirty part to its latest offset. Returns the map and the offset
    /// where mapping stopped (everything below it was mapped).
    async fn build_offset_map(
        &self,
        c: &Cleanable,
        limits: &CleanerLimits,
        stats: &mut CleanStats,
    ) -> Result<(HashMap<u128, i64>, i64), StorageError> {
        let max_entries = limits.dedupe_buffer_bytes / MAP_ENTRY_BYTES;
        // Records of aborted transactions never count as a key's latest.
        let fates = TxnRound::new(&limits.txns, i64::MIN);
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut scratch = Vec::new();
        let mut end = c.first_dirty;
        for seg in c.segs.iter().filter(|s| s.next > c.first_dirty) {
            let mut reader = BatchReader::new(seg);
            while let Some((bytes, h)) = reader.next().await? {
                pace(&limits.pace, bytes.len() as u64).await;
                stats.bytes_read += bytes.len() as u64;
                if h.last_offset() < c.first_dirty {
                    continue;
                }
                let aborted = fates.aborted_txn(&h).is_some();
                if let Some((view, vh)) = plain(&bytes, &h, &mut scratch).filter(|_| !aborted) {
                    if let Ok(recs) = parse_records(view, &vh) {
                        let hashes: Vec<(u128, i64)> = recs
                            .iter()
                            .filter_map(|r| {
                                Some((key_hash(r.key?), h.base_offset + r.offset_delta))
                            })
                            .collect();
                        // Whole batches only, so "mapped up to `end`" stays exact.
                        let new = hashes.iter().filter(|(k, _)| !map.contains_key(k)).count();
                        if map.len() + new > max_entries {
                            return Ok((map, end.max(h.base_offset)));
                        }
                        map.extend(hashes);
                    }
                }
                end = h.last_offset() + 1;
            }
            end = end.max(seg.next);
        }
        Ok((map, end))
    }

    /// Tombstones (and transaction markers) older than this may go: `delete.retention.ms`.
    fn horizon(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.cfg.borrow().compaction.delete_retention_ms as i64)
    }

    /// Writes the cleaned copy of `seg` to `<base>.log.cleaned`; `None` if nothing would be
    /// removed (the segment is left as it is).
    #[allow(clippy::too_many_arguments)]
    async fn rewrite_segment(
        &self,
        seg: &SegSnap,
        map: &HashMap<u128, i64>,
        map_end: i64,
        active_base: i64,
        limits: &CleanerLimits,
        txns: &mut TxnRound<'_>,
        stats: &mut CleanStats,
    ) -> Result<Option<Rewritten>, StorageError> {
        let pacing = &limits.pace;
        let horizon = self.horizon(limits.now_ms);
        // The last record before the active segment stays: if a crash leaves the active
        // segment empty, recovery drops it and takes the log end from this one.
        let pinned = if seg.next == active_base {
            seg.next - 1
        } else {
            -1
        };
        let keep = |h: &batch::BatchHeader, r: &RecordRef<'_>| -> bool {
            let offset = h.base_offset + r.offset_delta;
            let Some(k) = r.key else { return true };
            if offset == pinned {
                return true;
            }
            if map.get(&key_hash(k)).is_some_and(|&latest| latest > offset) {
                return false;
            }
            let ts = h.base_timestamp.wrapping_add(r.timestamp_delta);
            !(r.tombstone && offset < map_end && ts < horizon)
        };
        // First pass decides each batch's plan (and moves the round's transaction state),
        // without writing.
        let mut removable = 0u64;
        let mut plans = Vec::new();
        let mut scratch = Vec::new();
        let mut reader = BatchReader::new(seg);
        while let Some((bytes, h)) = reader.next().await? {
            pace(pacing, bytes.len() as u64).await;
            stats.bytes_read += bytes.len() as u64;
            let recs = plain(&bytes, &h, &mut scratch)
                .and_then(|(view, vh)| parse_records(view, &vh).ok());
            let (plan, removed) = txns.plan(&bytes, &h, recs.as_deref(), |r| keep(&h, r), pinned);
            removable += removed;
            // A marker that goes removes no record but still needs a rewrite.
            if plan == Plan::Drop && removed == 0 {
                removable += 1;
            }
            plans.push(plan);
        }
        if removable == 0 {
            return Ok(None);
        }
        let path = self.dir.join(format!("{:020}{CLEANED_SUFFIX}", seg.base));
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&path)
            .await
            .map_err(|e| StorageError::io(&path, "create cleaned segment", glommio_io(e)))?;
        let res = self
            .write_cleaned(seg, &out, &path, &plans, keep, pacing, stats)
            .await;
        let _ = out.close().await;
        match res {
            Ok(meta) => Ok(Some(Rewritten {
                meta,
                path,
                removed: removable,
            })),
            Err(e) => {
                let _ = file::remove_if_exists(&path);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_cleaned(
        &self,
        seg: &SegSnap,
        out: &BufferedFile,
        path: &Path,
        plans: &[Plan],
        keep: impl Fn(&batch::BatchHeader, &RecordRef<'_>) -> bool,
        pacing: &CleanerPace,
        stats: &mut CleanStats,
    ) -> Result<SegmentMeta, StorageError> {
        let interval = self.cfg.borrow().index_interval_bytes;
        let rebuild_err =
            |e: batch::BatchError| StorageError::corrupt(path, format!("rebuilding a batch: {e}"));
        let mut meta = SegmentMeta::new(seg.base);
        let mut buf = BytesMut::with_capacity(CHUNK + 64 * 1024);
        let mut written = 0u64;
        let mut synced = 0u64;
        let mut scratch = Vec::new();
        let mut reader = BatchReader::new(seg);
        let mut plans = plans.iter();
        while let Some((bytes, h)) = reader.next().await? {
            pace(pacing, bytes.len() as u64).await;
            stats.bytes_read += bytes.len() as u64;
            // The segment was read the same way a moment ago; a different batch count means
            // it changed under the cleaner.
            let Some(&plan) = plans.next() else {
                return Err(StorageError::corrupt(path, "segment changed while cleaned"));
            };
            let start = buf.len();
            match plan {
                Plan::Keep => buf.extend_from_slice(&bytes),
                Plan::Drop => {}
                Plan::Empty => build_empty(
                    &h,
                    h.base_offset,
                    h.last_offset_delta,
                    h.base_sequence,
                    &mut buf,
                ),
                Plan::Filter { last_of_producer } => {
                    let codec = Codec::of(&bytes, &h);
                    let Some(recs) = plain(&bytes, &h, &mut scratch)
                        .and_then(|(view, vh)| parse_records(view, &vh).ok())
                    else {
                        return Err(StorageError::corrupt(path, "batch changed while cleaned"));
                    };
                    write_kept_records(&h, codec, &recs, |r| keep(&h, r), &mut buf)
                        .map_err(rebuild_err)?;
                    let last_kept = recs.last().is_some_and(|r| {
                        r.offset_delta == i64::from(h.last_offset_delta) && keep(&h, r)
                    });
                    if last_of_producer && !last_kept {
                        // The producer's last offset and sequence survive in an empty batch:
                        // the original header if nothing is left, else one at the last offset.
                        if !recs.iter().any(|r| keep(&h, r)) {
                            build_empty(
                                &h,
                                h.base_offset,
                                h.last_offset_delta,
                                h.base_sequence,
                                &mut buf,
                            );
                        } else {
                            let seq = if h.base_sequence >= 0 {
                                ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta))
                                    % (i64::from(i32::MAX) + 1))
                                    as i32
                            } else {
                                h.base_sequence
                            };
                            build_empty(&h, h.last_offset(), 0, seq, &mut buf);
                        }
                    }
                }
            }
            // Index the batches just added.
            let mut at = start;
            while at < buf.len() {
                let nb = &buf[at..];
                let nh = parse_header(nb)
                    .map_err(|e| StorageError::corrupt(path, format!("rebuilt batch: {e}")))?;
                let len = nh.total_len();
                let info = BatchInfo {
                    base: nh.base_offset,
                    last: nh.last_offset(),
                    max_ts: nh.max_timestamp,
                    offset_of_max_ts: batch::offset_of_max_timestamp(&nb[..len], &nh),
                };
                meta.record_batch(&info, written + at as u64, len as u64, interval);
                at += len;
            }
            if buf.len() >= CHUNK {
                let n = write_all(out, path, written, &buf).await?;
                written += n;
                buf.clear();
                pace(pacing, n).await;
                if written - synced >= SYNC_EVERY {
                    out.fdatasync().await.map_err(|e| {
                        StorageError::io(path, "fdatasync cleaned segment", glommio_io(e))
                    })?;
                    synced = written;
                }
            }
        }
        if !buf.is_empty() {
            written += write_all(out, path, written, &buf).await?;
        }
        debug_assert_eq!(written, meta.size);
        out.fdatasync()
            .await
            .map_err(|e| StorageError::io(path, "fdatasync cleaned segment", glommio_io(e)))?;
        self.fsyncs.set(self.fsyncs.get() + 1);
        meta.seal_time_index();
        if meta.next_offset > seg.next {
            return Err(StorageError::corrupt(
                path,
                "cleaned segment ends after the original",
            ));
        }
        // The segment still ends where it did (the next one starts there), gap or not.
        meta.next_offset = seg.next;
        Ok(meta)
    }

    /// Replaces `seg` by its cleaned copy if the log still holds it unchanged (retention or a
    /// truncation may have removed or cut it meanwhile; then the copy is dropped). Returns
    /// whether it was swapped in.
    async fn swap_in(
        &self,
        seg: &SegSnap,
        rw: Rewritten,
        crash_after: Option<u8>,
    ) -> Result<bool, StorageError> {
        let crash = |step: u8| crash_after.is_some_and(|s| s <= step);
        let _permit = self.lock().await?;
        let unchanged = {
            let st = self.st.borrow();
            let is_active = st.segments.keys().next_back() == Some(&seg.base);
            st.segments.get(&seg.base).is_some_and(|s| {
                Rc::ptr_eq(&s.file, &seg.file) && s.meta.size == seg.size && s.sealed && !is_active
            })
        };
        if !unchanged || self.closed.get() {
            file::remove_if_exists(&rw.path)?;
            return Ok(false);
        }
        let swap = self.dir.join(format!("{:020}{SWAP_SUFFIX}", seg.base));
        let target = log_path(&self.dir, seg.base);
        std::fs::rename(&rw.path, &swap)
            .map_err(|e| StorageError::io(&swap, "rename cleaned segment", e))?;
        file::sync_dir(&self.dir).await?;
        if crash(1) {
            return Ok(true);
        }
        // The new segment is committed: the old index files describe the old contents.
        file::remove_if_exists(&self.dir.join(index_name(seg.base)))?;
        file::remove_if_exists(&self.dir.join(time_index_name(seg.base)))?;
        if crash(2) {
            return Ok(true);
        }
        std::fs::rename(&swap, &target)
            .map_err(|e| StorageError::io(&target, "rename cleaned segment into place", e))?;
        file::sync_dir(&self.dir).await?;
        if crash(3) {
            return Ok(true);
        }
        let cfg = self.cfg.borrow().clone();
        let new_file = Rc::new(SegFile::open(&target, false, cfg.force_buffered_io).await?);
        write_index_files(&self.dir, &rw.meta).await;
        if crash(4) {
            return Ok(true);
        }
        let old = {
            let mut st = self.st.borrow_mut();
            st.forget_read_position();
            let old = st.segments.get_mut(&seg.base).map(|s| {
                s.allocated = rw.meta.size;
                s.meta = rw.meta;
                std::mem::replace(&mut s.file, new_file)
            });
            st.recompute_log_max();
            old
        };
        // Cached batches of the segment hold records that are gone now.
        self.cache.remove_below(self.cache_id, seg.next);
        if let Some(f) = old.and_then(|f| Rc::try_unwrap(f).ok()) {
            f.close().await;
        }
        Ok(true)
    }
}

/// The records of `recs` that `keep` keeps, in runs of consecutive offsets, one batch each.
fn write_kept_records(
    h: &batch::BatchHeader,
    codec: Codec,
    recs: &[RecordRef<'_>],
    keep: impl Fn(&RecordRef<'_>) -> bool,
    buf: &mut BytesMut,
) -> Result<(), batch::BatchError> {
    let mut run: Vec<RecordRef<'_>> = Vec::new();
    for r in recs {
        if !keep(r) {
            build_run(h, codec, &run, buf)?;
            run.clear();
            continue;
        }
        if run
            .last()
            .is_some_and(|p| p.offset_delta + 1 != r.offset_delta)
        {
            build_run(h, codec, &run, buf)?;
            run.clear();
        }
        run.push(*r);
    }
    build_run(h, codec, &run, buf)
}

async fn write_all(
    out: &BufferedFile,
    path: &Path,
    pos: u64,
    data: &[u8],
) -> Result<u64, StorageError> {
    let mut done = 0usize;
    while done < data.len() {
        let n = out
            .write_at(data[done..].to_vec(), pos + done as u64)
            .await
            .map_err(|e| StorageError::io(path, "write cleaned segment", glommio_io(e)))?;
        if n == 0 {
            return Err(StorageError::io(
                path,
                "write cleaned segment",
                std::io::Error::new(std::io::ErrorKind::WriteZero, "zero-length write"),
            ));
        }
        done += n;
    }
    Ok(done as u64)
}
