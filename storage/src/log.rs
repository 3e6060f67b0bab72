//! `PartitionLog`: the durable append-only log of one partition, owned by one glommio executor.
//!
//! Appends are assigned offsets synchronously and queued (`pending`); one writer at a time
//! (the `io_lock` holder) copies everything queued into a 4 KiB-aligned DMA buffer, rewriting
//! the partly filled last page, and issues one write. `Always` appenders then share one
//! fdatasync (group commit). Readers see queued batches through the read cache and the queue.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;

use crate::batch::{self, parse_header, validate_batch};
use crate::cache::ReadCache;
use crate::checkpoint::{LogState, EPOCH_FILE, LOG_STATE_FILE};
use crate::commit::{self, Progress};
use crate::config::{FlushPolicy, LogConfig};
use crate::epoch::EpochCache;
use crate::error::StorageError;
use crate::file::{self, align_down, align_up, SegFile};
use crate::index::OffsetIndex;
use crate::recovery::{scan_segment, ScanOptions};
use crate::segment::{index_name, log_path, time_index_name, BatchInfo, Segment, SegmentMeta};
use crate::time_index::TimeIndex;

/// Largest single write the writer issues; bigger queues are written in several.
const MAX_WRITE: u64 = 512 << 10;
/// Runs one appender writes for the others before handing the flusher role on.
const MAX_RUNS_PER_TURN: usize = 16;
/// fallocate granularity for the active segment.
const PREALLOC_CHUNK: u64 = 16 << 20;
/// Disk reads fetch at least this much so the index floor's slack is absorbed in one read.
const MIN_READ: usize = 64 << 10;
/// Minimum spacing of background high-watermark checkpoints (Kafka's default is 5 s).
const STATE_CHECKPOINT_MS: i64 = 5000;
/// How many failed-append ranges we remember for appenders still waiting.
const MAX_FAILED: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

pub struct PartitionLog {
    inner: Rc<Inner>,
}

struct Inner {
    dir: PathBuf,
    cfg: RefCell<LogConfig>,
    cache: Rc<ReadCache>,
    cache_id: u64,
    /// Serialises everything that touches files: writes, syncs, rolls, truncation, deletion.
    io_lock: Semaphore,
    st: RefCell<State>,
    fsyncs: Cell<u64>,
    writes: Cell<u64>,
    closed: Cell<bool>,
    truncating: Cell<bool>,
    progress: Progress,
    last_state_ckpt_ms: Cell<i64>,
}

/// A batch with assigned offsets that is not yet written to its segment.
struct Pending {
    seq: u64,
    base: i64,
    last: i64,
    max_ts: i64,
    offset_of_max_ts: i64,
    bytes: Bytes,
    /// The log-wide max timestamp before this append, to undo it if the write fails.
    prev_log_max: (i64, i64),
}

struct State {
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    leo: i64,
    hw: i64,
    pending: VecDeque<Pending>,
    pending_bytes: u64,
    /// Append sequence numbers: every seq < written_seq is written or failed; likewise durable.
    next_seq: u64,
    written_seq: u64,
    durable_seq: u64,
    unsynced_bytes: u64,
    failed: VecDeque<(u64, u64, StorageError)>,
    /// (max timestamp, its offset) over the whole log including pending.
    log_max_ts: (i64, i64),
    epochs: EpochCache,
    epochs_dirty: bool,
    state_dirty: bool,
    /// Where the last disk read stopped: (offset, segment base, position), saves an index walk.
    read_hint: Option<(i64, i64, u64)>,
}

impl State {
    fn active(&self) -> Option<&Segment> {
        self.segments.values().next_back()
    }
    fn active_mut(&mut self) -> Option<&mut Segment> {
        self.segments.values_mut().next_back()
    }
    fn outcome(&self, seq: u64, durable: bool) -> Option<Result<(), StorageError>> {
        if let Some((_, _, e)) = self.failed.iter().find(|(a, b, _)| (*a..*b).contains(&seq)) {
            return Some(Err(e.duplicate()));
        }
        let done = if durable {
            self.durable_seq
        } else {
            self.written_seq
        };
        (seq < done).then_some(Ok(()))
    }
    fn recompute_log_max(&mut self) {
        let mut best = (-1i64, -1i64);
        for s in self.segments.values() {
            if s.meta.max_timestamp > best.0 {
                best = (s.meta.max_timestamp, s.meta.offset_of_max_timestamp);
            }
        }
        for p in &self.pending {
            if p.max_ts > best.0 {
                best = (p.max_ts, p.offset_of_max_ts);
            }
        }
        self.log_max_ts = best;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A batch waiting in the writer's hands (cloned out of `pending` so no borrow is held).
struct RunItem {
    seq: u64,
    base: i64,
    last: i64,
    max_ts: i64,
    offset_of_max_ts: i64,
    bytes: Bytes,
}

impl PartitionLog {
    /// Opens the log in `dir` (created if missing), recovering it: sealed segments are loaded
    /// from their index files or rescanned, the active segment is checked batch by batch and a
    /// torn or corrupt tail is truncated.
    pub async fn open(
        dir: impl Into<PathBuf>,
        cfg: LogConfig,
        cache: Rc<ReadCache>,
    ) -> Result<PartitionLog, StorageError> {
        let dir: PathBuf = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(&dir, "create log directory", e))?;
        let mut bases = Vec::new();
        let mut others = Vec::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| StorageError::io(&dir, "list log directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(&dir, "list log directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                file::remove_if_exists(&entry.path())?;
            } else if let Some(stem) = name.strip_suffix(".log") {
                match stem.parse::<i64>() {
                    Ok(b) if stem.len() == 20 && b >= 0 => bases.push(b),
                    _ => {
                        tracing::warn!(file = %entry.path().display(), "ignoring unexpected file in log directory")
                    }
                }
            } else {
                others.push(name);
            }
        }
        bases.sort_unstable();
        // An empty newest segment is what a crash right after a roll leaves; it carries nothing.
        while bases.len() > 1 {
            let Some(&last) = bases.last() else { break };
            let p = log_path(&dir, last);
            let len = std::fs::metadata(&p)
                .map_err(|e| StorageError::io(&p, "stat segment", e))?
                .len();
            if len != 0 {
                break;
            }
            file::remove_if_exists(&p)?;
            bases.pop();
        }
        // Index files without a segment are leftovers of a deletion interrupted by a crash.
        for name in others {
            let stem = name
                .strip_suffix(".timeindex")
                .or_else(|| name.strip_suffix(".index"));
            if let Some(b) = stem.and_then(|s| s.parse::<i64>().ok()) {
                if bases.binary_search(&b).is_err() {
                    file::remove_if_exists(&dir.join(&name))?;
                }
            }
        }

        let saved_state = match file::read_small_file(&dir.join(LOG_STATE_FILE)).await? {
            Some(bytes) => match LogState::decode(&bytes) {
                Ok(s) => Some(s),
                Err(why) => {
                    tracing::warn!(dir = %dir.display(), %why, "ignoring unreadable {LOG_STATE_FILE}");
                    None
                }
            },
            None => None,
        };
        let mut epochs = match file::read_small_file(&dir.join(EPOCH_FILE)).await? {
            Some(bytes) => EpochCache::decode(&bytes).unwrap_or_else(|why| {
                tracing::warn!(dir = %dir.display(), %why, "ignoring unreadable {EPOCH_FILE}; rebuilding from batches");
                EpochCache::default()
            }),
            None => EpochCache::default(),
        };
        let mut epochs_dirty = false;

        let mut segments = BTreeMap::new();
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let (seg, seg_epochs) = load_segment(&dir, base, is_last, &cfg).await?;
            for (e, s) in seg_epochs {
                epochs_dirty |= epochs.assign(e, s);
            }
            if let Some((_, prev)) = segments.last_key_value() {
                let prev: &Segment = prev;
                if prev.meta.next_offset != base {
                    return Err(StorageError::corrupt(
                        seg.path(),
                        format!(
                            "segment starts at {base} but the previous one ends at {}",
                            prev.meta.next_offset
                        ),
                    ));
                }
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = saved_state.map_or(0, |s| s.log_start_offset.max(0));
            let seg = create_segment(&dir, base, &cfg).await?;
            segments.insert(base, seg);
        }
        let first_base = segments.keys().next().copied().unwrap_or(0);
        let leo = segments
            .values()
            .next_back()
            .map_or(0, |s| s.meta.next_offset);
        let log_start = saved_state
            .map_or(first_base, |s| s.log_start_offset.max(first_base))
            .min(leo);
        let hw = saved_state
            .map_or(log_start, |s| s.high_watermark)
            .clamp(log_start, leo);
        epochs_dirty |= epochs.truncate_from_end(leo);
        epochs_dirty |= epochs.truncate_from_start(log_start);

        let cache_id = cache.register();
        let mut st = State {
            segments,
            log_start,
            leo,
            hw,
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_seq: 0,
            written_seq: 0,
            durable_seq: 0,
            unsynced_bytes: 0,
            failed: VecDeque::new(),
            log_max_ts: (-1, -1),
            epochs,
            epochs_dirty,
            state_dirty: true,
            read_hint: None,
        };
        st.recompute_log_max();
        let inner = Rc::new(Inner {
            dir,
            cfg: RefCell::new(cfg),
            cache,
            cache_id,
            io_lock: Semaphore::new(1),
            st: RefCell::new(st),
            fsyncs: Cell::new(0),
            writes: Cell::new(0),
            closed: Cell::new(false),
            truncating: Cell::new(false),
            progress: Progress::default(),
            last_state_ckpt_ms: Cell::new(0),
        });
        spawn_background_flusher(Rc::downgrade(&inner));
        Ok(PartitionLog { inner })
    }

    /// Leader append. Offsets are assigned when this is called (before the returned future is
    /// first polled), so calls made in order get increasing offsets. The future resolves per
    /// the flush policy: `Always` after the fdatasync covering the batch, otherwise once the
    /// batch is written to the segment file.
    pub fn append(
        &self,
        batch: BytesMut,
        leader_epoch: i32,
    ) -> impl Future<Output = Result<AppendResult, StorageError>> + '_ {
        let queued = self.inner.enqueue(batch, Some(leader_epoch));
        async move {
            let (seq, res) = queued?;
            self.inner.wait_for(seq).await?;
            Ok(res)
        }
    }

    /// Follower append: the batch keeps its base offset (which must equal the log end offset)
    /// and its partition leader epoch.
    pub fn append_replicated(
        &self,
        batch: BytesMut,
    ) -> impl Future<Output = Result<AppendResult, StorageError>> + '_ {
        let queued = self.inner.enqueue(batch, None);
        async move {
            let (seq, res) = queued?;
            self.inner.wait_for(seq).await?;
            Ok(res)
        }
    }

    /// Whole batches starting with the one containing `offset`, at most `max_bytes` in total
    /// except that the first batch is always returned whole, and only batches whose last offset
    /// is below `max_offset_exclusive`.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Vec<Bytes>, StorageError> {
        self.inner
            .read(offset, max_bytes, max_offset_exclusive)
            .await
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.st.borrow().log_start
    }

    pub fn log_end_offset(&self) -> i64 {
        self.inner.st.borrow().leo
    }

    pub fn high_watermark(&self) -> i64 {
        self.inner.st.borrow().hw
    }

    /// Sets the high watermark, clamped to [log start, log end]. Persisted by the next
    /// background/explicit flush or close.
    pub fn set_high_watermark(&self, hw: i64) {
        let mut st = self.inner.st.borrow_mut();
        let hw = hw.clamp(st.log_start, st.leo);
        if hw != st.hw {
            st.hw = hw;
            st.state_dirty = true;
        }
        debug_assert!(st.hw <= st.leo, "HW must not pass LEO");
    }

    /// Kafka ListOffsets by timestamp: the first record with timestamp >= `timestamp_ms`,
    /// as (offset, timestamp). Record-exact for uncompressed batches; for compressed ones the
    /// batch's base offset and max timestamp.
    pub async fn offset_for_time(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        self.inner.offset_for_time(timestamp_ms).await
    }

    /// (max timestamp, offset of its record) over the log, (-1, -1) when empty.
    pub fn max_timestamp_and_offset(&self) -> (i64, i64) {
        self.inner.st.borrow().log_max_ts
    }

    /// Drops everything at and after `offset` (rounded down to the start of the batch that
    /// contains it). Below the log start, the log is emptied and restarts at `offset`.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        self.inner.truncate_to(offset).await
    }

    /// Advances the log start offset (DeleteRecords) and deletes segments wholly below it.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        self.inner.delete_records_before(offset).await
    }

    /// Deletes whole non-active segments past retention.ms / retention.bytes; returns how many.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        self.inner.apply_retention(now_ms).await
    }

    /// Writes and fdatasyncs everything appended so far, and the checkpoints.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush_all().await
    }

    pub fn set_config(&self, cfg: LogConfig) {
        *self.inner.cfg.borrow_mut() = cfg;
    }

    pub fn config(&self) -> LogConfig {
        self.inner.cfg.borrow().clone()
    }

    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let st = self.inner.st.borrow();
        st.epochs.end_offset_for(epoch, st.leo)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.st.borrow().epochs.latest()
    }

    pub fn fsync_count(&self) -> u64 {
        self.inner.fsyncs.get()
    }

    /// Segment writes issued so far (each covers one group of batches), for benchmarks.
    pub fn write_count(&self) -> u64 {
        self.inner.writes.get()
    }

    pub fn size_bytes(&self) -> u64 {
        let st = self.inner.st.borrow();
        st.segments.values().map(|s| s.meta.size).sum::<u64>() + st.pending_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.inner.st.borrow().segments.len()
    }

    /// Whether segment files use O_DIRECT (false on the buffered fallback).
    pub fn is_direct_io(&self) -> bool {
        self.inner
            .st
            .borrow()
            .active()
            .is_some_and(|s| s.file.is_direct())
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Re-reads every segment from disk and checks CRCs, offset contiguity and that every
    /// index entry points at the batch it names. For tests and operators; reads everything.
    pub async fn check_consistency(&self) -> Result<(), StorageError> {
        self.inner.check_consistency().await
    }

    /// Flushes, writes the active segment's indexes (so the next open needs no scan) and the
    /// checkpoints, and releases the files.
    pub async fn close(self) -> Result<(), StorageError> {
        let res = self.inner.close().await;
        self.inner.closed.set(true);
        self.inner.cache.remove_log(self.inner.cache_id);
        res
    }

    /// Removes the partition's directory (DeleteTopics).
    pub async fn delete(self) -> Result<(), StorageError> {
        let _permit = self.inner.lock().await?;
        self.inner.closed.set(true);
        self.inner.cache.remove_log(self.inner.cache_id);
        self.inner.st.borrow_mut().pending.clear();
        self.inner.close_files().await;
        std::fs::remove_dir_all(&self.inner.dir)
            .map_err(|e| StorageError::io(&self.inner.dir, "remove log directory", e))
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Stops the background flusher; a dropped (not closed) log recovers by scanning.
        self.inner.closed.set(true);
    }
}

/// Opens one existing segment. Returns it with the leader epochs seen while scanning it.
async fn load_segment(
    dir: &Path,
    base: i64,
    is_last: bool,
    cfg: &LogConfig,
) -> Result<(Segment, Vec<(i32, i64)>), StorageError> {
    let path = log_path(dir, base);
    let file = Rc::new(SegFile::open(&path, false, cfg.force_buffered_io).await?);
    let file_size = file.size().await?;
    let mut epochs = Vec::new();
    let meta = match load_index_files(dir, base, file_size).await {
        Some(meta) => meta,
        None => {
            let opts = ScanOptions {
                verify_crc: true,
                stop_at_offset: None,
                index_interval: cfg.index_interval_bytes,
                collect_positions: false,
            };
            let scan = scan_segment(&file, base, file_size, &opts).await?;
            if let Some(stop) = &scan.stop {
                if !stop.clean {
                    if !is_last {
                        return Err(StorageError::corrupt(
                            &path,
                            format!(
                                "invalid data at byte {} of a sealed segment: {}",
                                stop.position, stop.reason
                            ),
                        ));
                    }
                    tracing::warn!(
                        file = %path.display(),
                        position = stop.position,
                        dropped_bytes = file_size - stop.position,
                        reason = %stop.reason,
                        "truncating torn or corrupt tail of the active segment"
                    );
                }
            }
            if scan.meta.size < file_size {
                file.truncate(scan.meta.size).await?;
            }
            if is_last {
                // Recovered bytes may only be in the page cache (process crash): make them
                // durable before anything is appended after them.
                file.fdatasync().await?;
            }
            if !is_last {
                write_index_files(dir, &scan.meta).await;
            }
            epochs = scan.epochs;
            scan.meta
        }
    };
    let mut tail_page = Vec::new();
    if is_last {
        // Index files of the active segment go stale with the first append: a crash must rescan.
        file::remove_if_exists(&dir.join(index_name(base)))?;
        file::remove_if_exists(&dir.join(time_index_name(base)))?;
        let page_start = align_down(meta.size);
        if meta.size > page_start {
            let tail = file
                .read(page_start, (meta.size - page_start) as usize)
                .await?;
            if tail.len() as u64 != meta.size - page_start {
                return Err(StorageError::corrupt(&path, "short read of the last page"));
            }
            tail_page = tail.to_vec();
        }
    }
    let seg = Segment {
        meta,
        file,
        created_ms: now_ms(),
        sealed: !is_last,
        tail_page,
        allocated: file_size,
    };
    Ok((seg, epochs))
}

/// Loads `<base>.index` and `<base>.timeindex` if both are intact and describe a segment of
/// exactly `file_size` bytes; otherwise `None` and the caller rescans.
async fn load_index_files(dir: &Path, base: i64, file_size: u64) -> Option<SegmentMeta> {
    let idx_bytes = file::read_small_file(&dir.join(index_name(base)))
        .await
        .ok()??;
    let ti_bytes = file::read_small_file(&dir.join(time_index_name(base)))
        .await
        .ok()??;
    let (index, summary) = match OffsetIndex::decode(base, &idx_bytes) {
        Ok(v) => v,
        Err(why) => {
            tracing::info!(base, %why, "rebuilding offset index");
            return None;
        }
    };
    let time_index = match TimeIndex::decode(base, &ti_bytes) {
        Ok(v) => v,
        Err(why) => {
            tracing::info!(base, %why, "rebuilding time index");
            return None;
        }
    };
    if summary.size.get() != file_size || summary.next_offset.get() < base {
        tracing::info!(base, "index does not match the segment size; rebuilding");
        return None;
    }
    Some(SegmentMeta::from_files(base, index, summary, time_index))
}

/// Index files are a cache of the segment: failing to write them (disk full) only costs a
/// rescan at the next open, so it is logged, not returned.
async fn write_index_files(dir: &Path, meta: &SegmentMeta) {
    let base = meta.base_offset;
    let idx = meta.index.encode(base, meta.summary());
    let ti = meta.time_index.encode(base);
    for (name, bytes) in [(index_name(base), idx), (time_index_name(base), ti)] {
        if let Err(e) = file::write_small_file(dir, &name, bytes).await {
            tracing::warn!(%e, "could not write index file; it will be rebuilt on open");
            let _ = file::remove_if_exists(&dir.join(&name));
        }
    }
}

/// Creates an empty segment file at `base`, preallocated, with its directory entry durable.
async fn create_segment(dir: &Path, base: i64, cfg: &LogConfig) -> Result<Segment, StorageError> {
    let path = log_path(dir, base);
    let file = SegFile::open(&path, true, cfg.force_buffered_io).await?;
    let setup = async {
        // A stale file of that name (from before a truncation) holds nothing we want.
        file.truncate(0).await?;
        let want = PREALLOC_CHUNK.min(cfg.effective_segment_bytes());
        let allocated = match file.pre_allocate(want).await {
            Ok(()) => want,
            Err(StorageError::DiskFull { .. }) => 0,
            Err(e) => return Err(e),
        };
        file::sync_dir(dir).await?;
        Ok(allocated)
    };
    match setup.await {
        Ok(allocated) => Ok(Segment {
            meta: SegmentMeta::new(base),
            file: Rc::new(file),
            created_ms: now_ms(),
            sealed: false,
            tail_page: Vec::new(),
            allocated,
        }),
        Err(e) => {
            let _ = file::remove_if_exists(&path);
            Err(e)
        }
    }
}

fn spawn_background_flusher(weak: Weak<Inner>) {
    glommio::spawn_local(async move {
        loop {
            let period = match weak.upgrade() {
                Some(inner) if !inner.closed.get() => inner.background_period(),
                _ => return,
            };
            glommio::timer::sleep(period).await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.get() {
                return;
            }
            if let Err(e) = inner.background_flush().await {
                tracing::warn!(dir = %inner.dir.display(), %e, "background flush failed");
            }
        }
    })
    .detach();
}

impl Inner {
    async fn lock(&self) -> Result<glommio::sync::Permit<'_>, StorageError> {
        self.io_lock
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)
    }

    /// Synchronous half of an append: validate, assign offsets, queue, cache.
    fn enqueue(
        &self,
        mut batch: BytesMut,
        leader_epoch: Option<i32>,
    ) -> Result<(u64, AppendResult), StorageError> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
        let h = validate_batch(&batch)?;
        if self.truncating.get() {
            return Err(StorageError::Io {
                path: self.dir.clone(),
                op: "append during truncation",
                source: std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the log is being truncated; retry",
                ),
            });
        }
        let mut st = self.st.borrow_mut();
        let base = st.leo;
        let epoch = match leader_epoch {
            Some(e) => {
                batch::assign_offset_and_epoch(&mut batch, base, e);
                e
            }
            None => {
                if h.base_offset != base {
                    return Err(StorageError::NonContiguous {
                        expected: base,
                        got: h.base_offset,
                    });
                }
                h.partition_leader_epoch
            }
        };
        let last = base + h.last_offset_delta as i64;
        let h = batch::BatchHeader {
            base_offset: base,
            partition_leader_epoch: epoch,
            ..h
        };
        let offset_of_max_ts = batch::offset_of_max_timestamp(&batch, &h);
        let bytes = batch.freeze();
        let seq = st.next_seq;
        st.next_seq += 1;
        let prev_log_max = st.log_max_ts;
        if h.max_timestamp > st.log_max_ts.0 {
            st.log_max_ts = (h.max_timestamp, offset_of_max_ts);
        }
        if st.epochs.assign(epoch, base) {
            st.epochs_dirty = true;
        }
        st.pending_bytes += bytes.len() as u64;
        st.unsynced_bytes += bytes.len() as u64;
        self.cache.insert(self.cache_id, base, last, bytes.clone());
        st.pending.push_back(Pending {
            seq,
            base,
            last,
            max_ts: h.max_timestamp,
            offset_of_max_ts,
            bytes,
            prev_log_max,
        });
        debug_assert!(last >= base);
        st.leo = last + 1;
        Ok((
            seq,
            AppendResult {
                base_offset: base,
                last_offset: last,
                max_timestamp: h.max_timestamp,
            },
        ))
    }

    async fn wait_for(&self, seq: u64) -> Result<(), StorageError> {
        let policy = self.cfg.borrow().flush;
        match policy {
            FlushPolicy::Always => self.wait_until(seq, true).await,
            FlushPolicy::IntervalMs(_) => self.wait_until(seq, false).await,
            FlushPolicy::Bytes(n) => {
                self.wait_until(seq, false).await?;
                if self.st.borrow().unsynced_bytes >= n {
                    self.wait_until(seq, true).await?;
                }
                Ok(())
            }
        }
    }

    /// Resolves once batch `seq` is written (and, if `durable`, covered by an fdatasync).
    /// One waiter at a time becomes the flusher and writes/syncs everything queued; the rest
    /// wait for it (group commit).
    async fn wait_until(&self, seq: u64, durable: bool) -> Result<(), StorageError> {
        loop {
            if let Some(r) = self.st.borrow().outcome(seq, durable) {
                return r;
            }
            let Some(_flusher) = self.progress.try_become_flusher() else {
                self.progress.changed().await;
                continue;
            };
            // Appenders woken by the previous round get to queue their next batches first.
            commit::yield_now().await;
            let res = async {
                let _permit = self.lock().await?;
                self.write_pending_runs(MAX_RUNS_PER_TURN).await?;
                if durable {
                    self.sync_active_locked().await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = res {
                return self.st.borrow().outcome(seq, durable).unwrap_or(Err(e));
            }
        }
    }

    async fn sync_active_locked(&self) -> Result<(), StorageError> {
        let (file, target) = {
            let st = self.st.borrow();
            if st.durable_seq >= st.written_seq {
                return Ok(());
            }
            match st.active() {
                Some(s) => (s.file.clone(), st.written_seq),
                None => return Ok(()),
            }
        };
        file.fdatasync().await?;
        self.fsyncs.set(self.fsyncs.get() + 1);
        let mut st = self.st.borrow_mut();
        st.durable_seq = st.durable_seq.max(target);
        st.unsynced_bytes = st.pending_bytes;
        Ok(())
    }

    /// Writes every queued batch; on failure, fails and forgets all queued batches so the
    /// log stays exactly what is on disk.
    async fn write_pending_locked(&self) -> Result<(), StorageError> {
        self.write_pending_runs(usize::MAX).await
    }

    /// Writes queued batches, at most `max_runs` writes (an appender's turn as flusher is
    /// bounded so its own append is not held up indefinitely under load).
    async fn write_pending_runs(&self, max_runs: usize) -> Result<(), StorageError> {
        match self.write_pending_inner(max_runs).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail_pending(&e).await;
                Err(e)
            }
        }
    }

    async fn write_pending_inner(&self, max_runs: usize) -> Result<(), StorageError> {
        for _ in 0..max_runs {
            let (roll, items) = {
                let st = self.st.borrow();
                let cfg = self.cfg.borrow();
                let Some(first) = st.pending.front() else {
                    return Ok(());
                };
                let Some(active) = st.active() else {
                    return Err(StorageError::Closed);
                };
                let seg_bytes = cfg.effective_segment_bytes();
                let too_old = cfg
                    .segment_ms
                    .is_some_and(|ms| now_ms() - active.created_ms >= ms as i64);
                let roll = active.meta.size > 0
                    && (active.meta.size + first.bytes.len() as u64 > seg_bytes || too_old);
                let mut size = if roll { 0 } else { active.meta.size };
                let mut run_bytes = 0u64;
                let mut items = Vec::new();
                for p in &st.pending {
                    let len = p.bytes.len() as u64;
                    if !items.is_empty() && (size + len > seg_bytes || run_bytes + len > MAX_WRITE)
                    {
                        break;
                    }
                    items.push(RunItem {
                        seq: p.seq,
                        base: p.base,
                        last: p.last,
                        max_ts: p.max_ts,
                        offset_of_max_ts: p.offset_of_max_ts,
                        bytes: p.bytes.clone(),
                    });
                    size += len;
                    run_bytes += len;
                }
                (roll, items)
            };
            if roll {
                self.roll_locked(items[0].base).await?;
            }
            self.write_run_locked(items).await?;
            // Appenders resolved by this write queue their next batches while the next run
            // is being written: their CPU work overlaps our I/O.
            self.progress.notify_all();
        }
        Ok(())
    }

    /// Seals the active segment (trim, fdatasync, index files) and starts one at `new_base`.
    async fn roll_locked(&self, new_base: i64) -> Result<(), StorageError> {
        let cfg = self.cfg.borrow().clone();
        let (old_file, old_size) = {
            let st = self.st.borrow();
            let Some(a) = st.active() else {
                return Err(StorageError::Closed);
            };
            debug_assert_eq!(a.meta.next_offset, new_base, "roll must not leave a gap");
            (a.file.clone(), a.meta.size)
        };
        // The old segment is complete on disk before the new file exists, so recovery never
        // sees a newer segment behind a torn older one.
        old_file.truncate(old_size).await?;
        old_file.fdatasync().await?;
        self.fsyncs.set(self.fsyncs.get() + 1);
        {
            let mut st = self.st.borrow_mut();
            st.durable_seq = st.written_seq;
            st.unsynced_bytes = st.pending_bytes;
            if let Some(a) = st.active_mut() {
                a.allocated = old_size;
            }
        }
        // If this fails the old segment simply stays the active one.
        let new_seg = create_segment(&self.dir, new_base, &cfg).await?;
        let meta = {
            let mut st = self.st.borrow_mut();
            let Some(a) = st.active_mut() else {
                return Err(StorageError::Closed);
            };
            a.meta.seal_time_index();
            a.sealed = true;
            a.tail_page = Vec::new();
            let meta = a.meta.clone();
            st.segments.insert(new_base, new_seg);
            meta
        };
        write_index_files(&self.dir, &meta).await;
        Ok(())
    }

    /// Writes one run of queued batches into the active segment in one DMA write, rewriting
    /// the partly filled last page in front of them.
    async fn write_run_locked(&self, items: Vec<RunItem>) -> Result<(), StorageError> {
        let (file, size, tail, allocated, seg_bytes) = {
            let st = self.st.borrow();
            let Some(a) = st.active() else {
                return Err(StorageError::Closed);
            };
            (
                a.file.clone(),
                a.meta.size,
                a.tail_page.clone(),
                a.allocated,
                self.cfg.borrow().effective_segment_bytes(),
            )
        };
        let page_start = align_down(size);
        debug_assert_eq!(
            page_start + tail.len() as u64,
            size,
            "tail page must end at the segment end"
        );
        let data_len: usize = items.iter().map(|i| i.bytes.len()).sum();
        let end = size + data_len as u64;
        if end > allocated {
            let want = (align_up(end) + PREALLOC_CHUNK).min(seg_bytes.max(align_up(end)));
            let allocated = match file.pre_allocate(want).await {
                Ok(()) => want,
                // Near a full disk, reserve only what this write needs.
                Err(StorageError::DiskFull { .. }) => {
                    file.pre_allocate(align_up(end)).await?;
                    align_up(end)
                }
                Err(e) => return Err(e),
            };
            if let Some(a) = self.st.borrow_mut().active_mut() {
                a.allocated = allocated;
            }
        }
        let rel_end = tail.len() + data_len;
        let mut buf = glommio::allocate_dma_buffer(align_up(rel_end as u64) as usize);
        {
            let out = buf.as_bytes_mut();
            out[..tail.len()].copy_from_slice(&tail);
            let mut at = tail.len();
            for it in &items {
                out[at..at + it.bytes.len()].copy_from_slice(&it.bytes);
                at += it.bytes.len();
            }
            out[at..].fill(0);
        }
        let new_tail = buf.as_bytes()[align_down(rel_end as u64) as usize..rel_end].to_vec();
        file.write_pages(page_start, buf, tail.len(), data_len)
            .await?;
        self.writes.set(self.writes.get() + 1);

        let mut st = self.st.borrow_mut();
        let interval = self.cfg.borrow().index_interval_bytes;
        let Some(a) = st.active_mut() else {
            return Err(StorageError::Closed);
        };
        let mut pos = size;
        for it in &items {
            let len = it.bytes.len() as u64;
            let info = BatchInfo {
                base: it.base,
                last: it.last,
                max_ts: it.max_ts,
                offset_of_max_ts: it.offset_of_max_ts,
            };
            a.meta.record_batch(&info, pos, len, interval);
            pos += len;
        }
        a.tail_page = new_tail;
        for it in &items {
            let p = st.pending.pop_front();
            debug_assert_eq!(
                p.as_ref().map(|p| p.seq),
                Some(it.seq),
                "writer must own the queue head"
            );
            if let Some(p) = p {
                st.pending_bytes -= p.bytes.len() as u64;
            }
        }
        if let Some(last) = items.last() {
            st.written_seq = last.seq + 1;
        }
        Ok(())
    }

    /// Forgets every queued batch after a failed write: LEO, epochs, cache and max timestamp
    /// go back to what is on disk, and the waiting appenders get the error.
    async fn fail_pending(&self, err: &StorageError) {
        let (file, size) = {
            let mut st = self.st.borrow_mut();
            let Some(first) = st.pending.front() else {
                return;
            };
            let (first_seq, new_leo, prev_max) = (first.seq, first.base, first.prev_log_max);
            let next_seq = st.next_seq;
            st.failed.push_back((first_seq, next_seq, err.duplicate()));
            while st.failed.len() > MAX_FAILED {
                st.failed.pop_front();
            }
            st.unsynced_bytes = st.unsynced_bytes.saturating_sub(st.pending_bytes);
            st.pending.clear();
            st.pending_bytes = 0;
            st.leo = new_leo;
            st.hw = st.hw.min(new_leo);
            st.log_max_ts = prev_max;
            if st.epochs.truncate_from_end(new_leo) {
                st.epochs_dirty = true;
            }
            self.cache.remove_from(self.cache_id, new_leo);
            match st.active_mut() {
                Some(a) => {
                    a.allocated = a.meta.size;
                    (a.file.clone(), a.meta.size)
                }
                None => return,
            }
        };
        // A partial write may have left whole batches past the logical end; they must not
        // reappear after a crash, since their appenders were told they failed.
        if let Err(e) = file.truncate(size).await {
            tracing::warn!(%e, "could not trim segment after a failed write");
        }
    }

    async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Vec<Bytes>, StorageError> {
        let limit = {
            let st = self.st.borrow();
            if offset < st.log_start || offset > st.leo {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: st.log_start,
                    log_end: st.leo,
                });
            }
            max_offset_exclusive.min(st.leo)
        };
        let mut out: Vec<Bytes> = Vec::new();
        let mut total = 0usize;
        let mut next = offset;
        while next < limit {
            let fits = |len: usize, total: usize, out: &Vec<Bytes>| {
                out.is_empty() || total + len <= max_bytes
            };
            // Recent batches: the cache, then the write queue.
            let hit = self.cache.get(self.cache_id, next).or_else(|| {
                let st = self.st.borrow();
                let i = st.pending.partition_point(|p| p.last < next);
                st.pending
                    .get(i)
                    .filter(|p| p.base <= next)
                    .map(|p| (p.base, p.last, p.bytes.clone()))
            });
            if let Some((_, last, bytes)) = hit {
                if last >= limit || !fits(bytes.len(), total, &out) {
                    break;
                }
                total += bytes.len();
                out.push(bytes);
                next = last + 1;
                continue;
            }
            let before = out.len();
            let more = self
                .read_from_disk(next, limit, max_bytes, &mut out, &mut total)
                .await?;
            match out.last() {
                Some(b) if out.len() > before => {
                    let h = parse_header(b)
                        .map_err(|e| StorageError::corrupt(&self.dir, e.to_string()))?;
                    next = h.last_offset() + 1;
                }
                _ => break,
            }
            if !more {
                break;
            }
        }
        // A concurrent truncation may have removed what we read.
        let leo = self.st.borrow().leo;
        while let Some(b) = out.last() {
            match parse_header(b) {
                Ok(h) if h.last_offset() < leo => break,
                _ => {
                    out.pop();
                }
            }
        }
        Ok(out)
    }

    /// Reads batches of the segment holding `next` from disk into `out`. Returns whether the
    /// caller may continue (false once `max_bytes` or `limit` is reached).
    async fn read_from_disk(
        &self,
        next: i64,
        limit: i64,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
        total: &mut usize,
    ) -> Result<bool, StorageError> {
        let (file, seg_base, mut pos, seg_end) = {
            let st = self.st.borrow();
            let Some(seg) = st.segments.range(..=next).next_back().map(|(_, s)| s) else {
                return Ok(false);
            };
            if next >= seg.meta.next_offset {
                return Ok(false);
            }
            let pos = match st.read_hint {
                Some((o, b, p)) if o == next && b == seg.meta.base_offset => p,
                _ => seg.meta.index.lookup(seg.meta.rel(next)).1 as u64,
            };
            (seg.file.clone(), seg.meta.base_offset, pos, seg.meta.size)
        };
        let mut next = next;
        while pos < seg_end {
            let room = max_bytes.saturating_sub(*total);
            let want = room.max(MIN_READ).min((seg_end - pos) as usize);
            let chunk = file.read(pos, want).await?;
            let mut at = 0usize;
            let mut progressed = false;
            while at + crate::BATCH_HEADER_LEN <= chunk.len() {
                let h = parse_header(&chunk[at..]).map_err(|e| {
                    StorageError::corrupt(
                        file.path(),
                        format!("bad batch at byte {}: {e}", pos + at as u64),
                    )
                })?;
                let len = h.total_len();
                if h.last_offset() < next {
                    at += len;
                    progressed = true;
                    continue;
                }
                if h.base_offset > next {
                    return Err(StorageError::corrupt(
                        file.path(),
                        format!(
                            "expected a batch containing offset {next}, found {}",
                            h.base_offset
                        ),
                    ));
                }
                if h.last_offset() >= limit || !(out.is_empty() || *total + len <= max_bytes) {
                    self.st.borrow_mut().read_hint = Some((next, seg_base, pos + at as u64));
                    return Ok(false);
                }
                let whole = if at + len <= chunk.len() {
                    chunk.slice(at..at + len)
                } else {
                    // The first batch is returned whole however large it is.
                    let b = file.read(pos + at as u64, len).await?;
                    if b.len() < len {
                        return Err(StorageError::corrupt(
                            file.path(),
                            "batch extends past the end of the file",
                        ));
                    }
                    b
                };
                *total += len;
                out.push(whole);
                at += len;
                next = h.last_offset() + 1;
                progressed = true;
            }
            if !progressed {
                return Err(StorageError::corrupt(
                    file.path(),
                    format!("no batch could be parsed at byte {pos}"),
                ));
            }
            pos += at as u64;
            self.st.borrow_mut().read_hint = Some((next, seg_base, pos));
            if *total >= max_bytes {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn offset_for_time(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let mut start = {
            let st = self.st.borrow();
            let seg = st.segments.values().find(|s| s.meta.max_timestamp >= ts);
            match seg {
                Some(s) => match s.meta.time_index.all_before(ts) {
                    Some(rel) => s.meta.base_offset + rel as i64 + 1,
                    None => s.meta.base_offset,
                },
                None => match st.pending.iter().find(|p| p.max_ts >= ts) {
                    Some(p) => p.base,
                    None => return Ok(None),
                },
            }
        };
        loop {
            let (log_start, leo) = {
                let st = self.st.borrow();
                (st.log_start, st.leo)
            };
            start = start.max(log_start);
            if start >= leo {
                return Ok(None);
            }
            let batches = self.read(start, 1 << 20, leo).await?;
            if batches.is_empty() {
                return Ok(None);
            }
            for b in &batches {
                let h =
                    parse_header(b).map_err(|e| StorageError::corrupt(&self.dir, e.to_string()))?;
                if h.max_timestamp >= ts {
                    let (o, t) = batch::first_record_at_or_after(b, &h, ts);
                    return Ok(Some((o.max(log_start), t)));
                }
                start = h.last_offset() + 1;
            }
        }
    }

    async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        self.write_pending_locked().await?;
        // Offsets handed out while the new end is being found would be wrong: refuse appends
        // until done (the broker only truncates a follower, which takes no produce traffic).
        self.truncating.set(true);
        let res = self.truncate_locked(offset).await;
        self.truncating.set(false);
        self.progress.notify_all();
        res
    }

    async fn truncate_locked(&self, offset: i64) -> Result<(), StorageError> {
        let (leo, log_start) = {
            let st = self.st.borrow();
            (st.leo, st.log_start)
        };
        if offset >= leo {
            return Ok(());
        }
        let cfg = self.cfg.borrow().clone();
        if offset <= log_start {
            // Nothing below the log start is readable: start afresh at `offset`. The old files
            // go first, so a crash in between never leaves a new segment below older ones.
            let base = offset.max(0);
            let old: Vec<Segment> = {
                let mut st = self.st.borrow_mut();
                st.read_hint = None;
                std::mem::take(&mut st.segments).into_values().collect()
            };
            for s in &old {
                self.remove_segment_files(s)?;
            }
            drop(old);
            let new_seg = create_segment(&self.dir, base, &cfg).await?;
            let mut st = self.st.borrow_mut();
            st.segments.insert(base, new_seg);
            st.log_start = base;
            st.leo = base;
            st.hw = base;
        } else {
            let (keep, drop_later) = {
                let st = self.st.borrow();
                let keep = st
                    .segments
                    .range(..offset)
                    .next_back()
                    .map(|(b, _)| *b)
                    .unwrap_or(log_start);
                let later: Vec<i64> = st.segments.range(keep + 1..).map(|(b, _)| *b).collect();
                (keep, later)
            };
            for b in drop_later {
                let seg = self.st.borrow_mut().segments.remove(&b);
                if let Some(s) = seg {
                    self.remove_segment_files(&s)?;
                }
            }
            let (file, size) = {
                let st = self.st.borrow();
                let Some(s) = st.segments.get(&keep) else {
                    return Err(StorageError::Closed);
                };
                (s.file.clone(), s.meta.size)
            };
            let opts = ScanOptions {
                verify_crc: false,
                stop_at_offset: Some(offset),
                index_interval: cfg.index_interval_bytes,
                collect_positions: false,
            };
            let scan = scan_segment(&file, keep, size, &opts).await?;
            let new_size = scan.meta.size;
            file.truncate(new_size).await?;
            file.fdatasync().await?;
            self.fsyncs.set(self.fsyncs.get() + 1);
            let page_start = align_down(new_size);
            let tail = file
                .read(page_start, (new_size - page_start) as usize)
                .await?;
            if tail.len() as u64 != new_size - page_start {
                return Err(StorageError::corrupt(
                    file.path(),
                    "short read of the last page",
                ));
            }
            file::remove_if_exists(&self.dir.join(index_name(keep)))?;
            file::remove_if_exists(&self.dir.join(time_index_name(keep)))?;
            let mut st = self.st.borrow_mut();
            let Some(s) = st.segments.get_mut(&keep) else {
                return Err(StorageError::Closed);
            };
            s.meta = scan.meta;
            s.sealed = false;
            s.tail_page = tail.to_vec();
            s.allocated = new_size;
            st.leo = st
                .segments
                .get(&keep)
                .map_or(offset, |s| s.meta.next_offset);
            st.hw = st.hw.min(st.leo);
        }
        {
            let mut st = self.st.borrow_mut();
            let leo = st.leo;
            debug_assert!(leo <= offset.max(st.log_start));
            debug_assert!(
                st.pending.is_empty(),
                "appends are refused while truncating"
            );
            st.epochs.truncate_from_end(leo);
            st.epochs_dirty = true;
            st.state_dirty = true;
            st.read_hint = None;
            st.written_seq = st.next_seq;
            st.durable_seq = st.next_seq;
            st.unsynced_bytes = 0;
            st.recompute_log_max();
            self.cache.remove_from(self.cache_id, leo);
        }
        self.write_checkpoints_locked(true).await
    }

    fn remove_segment_files(&self, s: &Segment) -> Result<(), StorageError> {
        file::remove_if_exists(s.path())?;
        file::remove_if_exists(&self.dir.join(index_name(s.meta.base_offset)))?;
        file::remove_if_exists(&self.dir.join(time_index_name(s.meta.base_offset)))
    }

    async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let _permit = self.lock().await?;
        {
            let mut st = self.st.borrow_mut();
            if offset > st.leo || offset < 0 {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start: st.log_start,
                    log_end: st.leo,
                });
            }
            if offset <= st.log_start {
                return Ok(st.log_start);
            }
            st.log_start = offset;
            st.hw = st.hw.max(offset);
            st.epochs.truncate_from_start(offset);
            st.epochs_dirty = true;
            st.state_dirty = true;
        }
        // The new log start is durable before any segment disappears.
        self.write_checkpoints_locked(true).await?;
        self.delete_segments_below_start()?;
        self.cache.remove_below(self.cache_id, offset);
        Ok(offset)
    }

    /// Deletes segments whose successor starts at or below the log start (never the active).
    fn delete_segments_below_start(&self) -> Result<usize, StorageError> {
        let mut n = 0;
        loop {
            let seg = {
                let mut st = self.st.borrow_mut();
                let mut keys = st.segments.keys();
                let (Some(&first), Some(&second)) = (keys.next(), keys.next()) else {
                    break;
                };
                if second > st.log_start {
                    break;
                }
                st.read_hint = None;
                st.segments.remove(&first)
            };
            if let Some(s) = seg {
                self.remove_segment_files(&s)?;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let _permit = self.lock().await?;
        let cfg = self.cfg.borrow().clone();
        let new_start = {
            let st = self.st.borrow();
            let mut total: u64 = st.segments.values().map(|s| s.meta.size).sum();
            let mut new_start = st.log_start;
            let segs: Vec<&Segment> = st.segments.values().collect();
            for pair in segs.windows(2) {
                let (s, next) = (pair[0], pair[1]);
                let by_time = cfg
                    .retention_ms
                    .is_some_and(|r| s.meta.max_timestamp < now_ms.saturating_sub(r));
                let by_size = cfg
                    .retention_bytes
                    .is_some_and(|r| total.saturating_sub(s.meta.size) >= r);
                if !(by_time || by_size) {
                    break;
                }
                total -= s.meta.size;
                new_start = new_start.max(next.meta.base_offset);
            }
            new_start
        };
        if new_start <= self.st.borrow().log_start {
            return Ok(0);
        }
        {
            let mut st = self.st.borrow_mut();
            st.log_start = new_start;
            st.hw = st.hw.max(new_start);
            st.epochs.truncate_from_start(new_start);
            st.epochs_dirty = true;
            st.state_dirty = true;
        }
        self.write_checkpoints_locked(true).await?;
        let n = self.delete_segments_below_start()?;
        self.cache.remove_below(self.cache_id, new_start);
        let mut st = self.st.borrow_mut();
        st.recompute_log_max();
        Ok(n)
    }

    async fn flush_all(&self) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        let res = async {
            self.write_pending_locked().await?;
            self.sync_active_locked().await?;
            self.write_checkpoints_locked(false).await
        }
        .await;
        self.progress.notify_all();
        res
    }

    fn background_period(&self) -> Duration {
        match self.cfg.borrow().flush {
            FlushPolicy::IntervalMs(ms) => Duration::from_millis(ms.max(1)),
            _ => Duration::from_millis(1000),
        }
    }

    async fn background_flush(&self) -> Result<(), StorageError> {
        let interval = matches!(self.cfg.borrow().flush, FlushPolicy::IntervalMs(_));
        // The high watermark moves with every acknowledged produce; rewriting its checkpoint
        // more often than Kafka's 5 s default would cost an fsync per partition per interval.
        let hw_due = now_ms() - self.last_state_ckpt_ms.get() >= STATE_CHECKPOINT_MS;
        let (queued, unsynced, dirty_ckpt) = {
            let st = self.st.borrow();
            (
                !st.pending.is_empty(),
                st.durable_seq < st.written_seq,
                (st.state_dirty && hw_due) || st.epochs_dirty,
            )
        };
        // Batches queued by appenders whose futures were dropped are written here too.
        let data = queued || (interval && unsynced);
        if !data && !dirty_ckpt {
            return Ok(());
        }
        let _permit = self.lock().await?;
        if self.closed.get() {
            return Ok(());
        }
        if data {
            let res = async {
                self.write_pending_locked().await?;
                self.sync_active_locked().await
            }
            .await;
            self.progress.notify_all();
            res?;
        }
        if dirty_ckpt {
            self.write_checkpoints_locked(false).await?;
        }
        Ok(())
    }

    /// Writes the log-state and leader-epoch checkpoints if they changed (or `force`).
    async fn write_checkpoints_locked(&self, force: bool) -> Result<(), StorageError> {
        let (state, epochs) = {
            let mut st = self.st.borrow_mut();
            let state = (force || st.state_dirty).then(|| {
                LogState {
                    log_start_offset: st.log_start,
                    high_watermark: st.hw,
                }
                .encode()
            });
            let epochs = (force || st.epochs_dirty).then(|| st.epochs.encode());
            st.state_dirty = false;
            st.epochs_dirty = false;
            (state, epochs)
        };
        let mut res = Ok(());
        if let Some(bytes) = state {
            self.last_state_ckpt_ms.set(now_ms());
            if let Err(e) = file::write_small_file(&self.dir, LOG_STATE_FILE, bytes).await {
                self.st.borrow_mut().state_dirty = true;
                res = Err(e);
            }
        }
        if let Some(bytes) = epochs {
            if let Err(e) = file::write_small_file(&self.dir, EPOCH_FILE, bytes).await {
                self.st.borrow_mut().epochs_dirty = true;
                res = res.and(Err(e));
            }
        }
        res
    }

    async fn close(&self) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        self.write_pending_locked().await?;
        self.sync_active_locked().await?;
        let (file, meta) = {
            let st = self.st.borrow();
            let Some(a) = st.active() else { return Ok(()) };
            (a.file.clone(), a.meta.clone())
        };
        // Trim the O_DIRECT padding and preallocation so the index summary matches the size.
        file.truncate(meta.size).await?;
        file.fdatasync().await?;
        self.fsyncs.set(self.fsyncs.get() + 1);
        write_index_files(&self.dir, &meta).await;
        self.write_checkpoints_locked(true).await?;
        self.closed.set(true);
        drop(file);
        self.close_files().await;
        Ok(())
    }

    async fn close_files(&self) {
        let segs = std::mem::take(&mut self.st.borrow_mut().segments);
        for (_, s) in segs {
            if let Ok(f) = Rc::try_unwrap(s.file) {
                f.close().await;
            }
        }
    }

    async fn check_consistency(&self) -> Result<(), StorageError> {
        let segs: Vec<(Rc<SegFile>, SegmentMeta)> = {
            let st = self.st.borrow();
            st.segments
                .values()
                .map(|s| (s.file.clone(), s.meta.clone()))
                .collect()
        };
        let interval = self.cfg.borrow().index_interval_bytes;
        let mut expected_next: Option<i64> = None;
        for (file, meta) in segs {
            let path = file.path().to_path_buf();
            if let Some(n) = expected_next {
                if meta.base_offset != n {
                    return Err(StorageError::corrupt(
                        &path,
                        format!("segment base {} but previous ends at {n}", meta.base_offset),
                    ));
                }
            }
            let opts = ScanOptions {
                verify_crc: true,
                stop_at_offset: None,
                index_interval: interval,
                collect_positions: true,
            };
            let scan = scan_segment(&file, meta.base_offset, meta.size, &opts).await?;
            if let Some(stop) = scan.stop {
                return Err(StorageError::corrupt(
                    &path,
                    format!("at byte {}: {}", stop.position, stop.reason),
                ));
            }
            if scan.meta.next_offset != meta.next_offset || scan.meta.size != meta.size {
                return Err(StorageError::corrupt(
                    &path,
                    format!(
                        "in-memory end ({}, {} bytes) differs from disk ({}, {} bytes)",
                        meta.next_offset, meta.size, scan.meta.next_offset, scan.meta.size
                    ),
                ));
            }
            for &(rel, pos) in meta.index.entries() {
                if scan.positions.get(&(pos as u64)) != Some(&(meta.base_offset + rel as i64)) {
                    return Err(StorageError::corrupt(
                        &path,
                        format!("index entry ({rel}, {pos}) is not a batch start"),
                    ));
                }
            }
            if scan.meta.max_timestamp != meta.max_timestamp {
                return Err(StorageError::corrupt(
                    &path,
                    "max timestamp differs from disk",
                ));
            }
            expected_next = Some(meta.next_offset);
        }
        Ok(())
    }
}
