//! `PartitionLog`: the durable append-only log of one partition, owned by one glommio executor.
//!
//! Appends are assigned offsets synchronously and queued (`pending`). One appender at a time
//! is the flusher (`commit.rs`): under the I/O lock it copies everything queued into 4 KiB-aligned
//! DMA buffers, rewriting the partly filled last page, writes them, and for `Always` issues one
//! fdatasync for all (group commit). Readers see queued batches through the read cache and the
//! queue. Files: `write.rs` (append path), `read.rs`, `maintenance.rs` (truncate, retention,
//! DeleteRecords), `lifecycle.rs` (flush, background flusher, checkpoints, close), `open.rs`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use glommio::sync::Semaphore;

use crate::batch::{self, parse_header, ValidBatch};
use crate::cache::ReadCache;
use crate::checkpoint::{LogState, CLEANER_FILE, EPOCH_FILE, LOG_STATE_FILE};
use crate::commit::{self, Progress};
use crate::config::{FlushPolicy, LogConfig};
use crate::epoch::EpochCache;
use crate::error::StorageError;
use crate::file::{self, align_down, align_up, SegFile};
use crate::index::OffsetIndex;
use crate::journal::format::{EntryKind, Identity};
use crate::journal::{Journal, JournalOwner, JOURNAL_MAX_PENDING};
use crate::recovery::{scan_segment, ScanOptions};
use crate::segment::{index_name, log_path, time_index_name, BatchInfo, Segment, SegmentMeta};
use crate::time_index::TimeIndex;

mod checkpoint_pace;
pub mod clean;
pub mod clean_txn;
mod lifecycle;
mod maintenance;
mod open;
pub mod pacing;
mod read;
mod write;

use open::{create_segment, load_segment, write_index_files};

/// Largest single write the writer issues; bigger queues are written in several.
const MAX_WRITE: u64 = 512 << 10;
/// Runs one appender writes for the others before handing the flusher role on.
const MAX_RUNS_PER_TURN: usize = 16;
/// Most the active segment reserves ahead of its data with fallocate. It reserves as much as it
/// already holds (so reservations double), between these bounds: an empty partition reserves
/// nothing, so creating many partitions cannot fill a disk, and a busy one still writes into
/// preallocated blocks.
const PREALLOC_CHUNK: u64 = 16 << 20;
/// Least the active segment reserves ahead once it is written to.
const MIN_PREALLOC: u64 = 64 << 10;
/// Disk reads fetch at least this much so the index floor's slack is absorbed in one read.
const MIN_READ: usize = 64 << 10;
/// Largest read-ahead of a sequential reader (it reads ahead what it last asked for).
const MAX_READAHEAD: usize = 4 << 20;
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
    /// Set while the log's directory does not exist yet (`open_or_defer`): the file to write
    /// into it when it is created.
    deferred: RefCell<Option<DirMarker>>,
    /// The shard journal small rounds go to, and this log's identity in it (`use_journal`).
    journal: RefCell<Option<(Rc<Journal>, Rc<Identity>)>>,
    /// Whether anything of this log went to the journal in this process: its truncations and
    /// deletion are then recorded there first.
    journaled_ever: Cell<bool>,
    /// The journal needs a file back: write the journaled batches to the segment soon.
    journal_write_requested: Cell<bool>,
}

/// A small file a deferred log writes into its directory when it creates it (the partition
/// layer's topic id), so the directory never exists without it.
#[derive(Debug, Clone)]
pub struct DirMarker {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A batch with assigned offsets that is not yet written to its segment. The writer works on
/// clones of these (cheap: `bytes` is shared) so no borrow of the log state is held across I/O.
#[derive(Clone)]
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
    /// Every seq below this is in the segment or in the shard journal (acknowledged either
    /// way); the journaled ones are a prefix of `pending`.
    journaled_seq: u64,
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
    /// The disk read already issued for where a sequential reader will ask next.
    readahead: Option<ReadAhead>,
    /// Bumped whenever segments lose data; a read that started under an older value must not
    /// leave a hint or a read-ahead behind.
    read_gen: u64,
    /// The cleaner's first dirty offset: below it each key appears once (as of the last
    /// cleaning). Checkpointed to `cleaner-offset.checkpoint` with the other checkpoints.
    clean_end: i64,
    /// `clean_end` changed since it was last checkpointed.
    clean_dirty: bool,
    /// Bumped by every truncation: a cleaning round that saw an older value must not move
    /// `clean_end` (the offsets it mapped may hold other records now).
    clean_gen: u64,
}

/// A disk read of `[pos, pos + len)` of segment `seg_base`, started before anyone asked for it.
/// A consumer reading old data sequentially asks for the next chunk only after it has
/// received the previous one; reading it meanwhile hides the disk's latency.
struct ReadAhead {
    seg_base: i64,
    pos: u64,
    task: glommio::task::JoinHandle<Result<Bytes, StorageError>>,
}

/// The cleaner's checkpointed first dirty offset, if the file is sound and the offset lies
/// within the log; otherwise the log start (the first round then covers the whole log). A
/// damaged or foreign file is logged and ignored, never trusted.
async fn load_first_dirty(dir: &Path, log_start: i64, leo: i64) -> i64 {
    let path = dir.join(CLEANER_FILE);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(_) => return log_start,
    };
    let why = if len > crate::checkpoint::CLEANER_FILE_MAX {
        format!("{len} bytes, too large")
    } else {
        match file::read_small_file(&path).await {
            Ok(Some(bytes)) => match crate::checkpoint::decode_first_dirty(&bytes) {
                Ok(o) if (log_start..=leo).contains(&o) => return o,
                Ok(o) => format!("offset {o} outside the log [{log_start}, {leo}]"),
                Err(why) => why,
            },
            Ok(None) => return log_start,
            Err(e) => e.to_string(),
        }
    };
    tracing::warn!(dir = %dir.display(), %why, "ignoring unreadable {CLEANER_FILE}; the cleaner rescans the log");
    log_start
}

impl State {
    /// Forgets where readers were (segments changed: truncation, deletion); a read-ahead in
    /// flight may hold bytes that are no longer the log's.
    fn forget_read_position(&mut self) {
        self.read_gen += 1;
        self.read_hint = None;
        if let Some(ra) = self.readahead.take() {
            ra.task.cancel();
        }
    }
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
            self.written_seq.max(self.journaled_seq)
        };
        (seq < done).then_some(Ok(()))
    }
    /// How many queued batches (a prefix) are already in the journal. O(1) in the usual
    /// cases (none or all of them): it is asked per partition of every fetch.
    fn journaled_count(&self) -> usize {
        match (self.pending.front(), self.pending.back()) {
            (Some(f), Some(b)) if f.seq < self.journaled_seq => {
                if b.seq < self.journaled_seq {
                    self.pending.len()
                } else {
                    self.pending.partition_point(|p| p.seq < self.journaled_seq)
                }
            }
            _ => 0,
        }
    }
    /// Whether changed leader epochs must be checkpointed by the background flusher: only for a
    /// log of several segments. A log of one segment gets back every epoch it holds from the
    /// scan of its active segment after a crash (the active segment's index files are removed
    /// at open, so it is always scanned), and `close`, a roll, a truncation and a log start
    /// move write the checkpoint themselves. On a new 1,000-partition topic the first record
    /// of each of 3,000 replicas otherwise cost a checkpoint's two fsyncs (issue 24).
    fn epochs_owed(&self) -> bool {
        self.epochs_dirty && self.segments.len() > 1
    }
    /// Whether a queued batch is not in the journal yet.
    fn has_unjournaled(&self) -> bool {
        self.pending
            .back()
            .is_some_and(|b| b.seq >= self.journaled_seq)
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

impl PartitionLog {
    /// Opens the log in `dir` (created if missing), recovering it: sealed segments are loaded
    /// from their index files or rescanned, the active segment is checked batch by batch and a
    /// torn or corrupt tail is truncated. Must run on a glommio executor: the log spawns its
    /// background flusher (interval fdatasync, checkpoints) there.
    pub async fn open(
        dir: impl Into<PathBuf>,
        cfg: LogConfig,
        cache: Rc<ReadCache>,
    ) -> Result<PartitionLog, StorageError> {
        let dir: PathBuf = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(&dir, "create log directory", e))?;
        // A cleaner swap cut short by a crash is completed or rolled back first.
        if crate::recovery::finish_interrupted_swaps(&dir)? {
            file::sync_dir(&dir).await?;
        }
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
                if prev.meta.next_offset > base {
                    return Err(StorageError::corrupt(
                        seg.path(),
                        format!(
                            "segment starts at {base} but the previous one ends at {}",
                            prev.meta.next_offset
                        ),
                    ));
                }
            }
            // A segment whose last records were compacted away (its index files lost) ends
            // where the next one starts.
            if let Some((_, prev)) = segments.iter_mut().next_back() {
                prev.meta.next_offset = base;
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = saved_state.map_or(0, |s| s.log_start_offset.max(0));
            let seg = create_segment(&dir, base, &cfg, true).await?;
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
        // Sealed segments scanned just now got their index files (`load_segment`), so from the
        // next open on their epochs come from the checkpoint: it holds them before anything
        // else happens (on failure the background flusher tries again).
        if epochs_dirty && segments.len() > 1 {
            match file::write_small_file(&dir, EPOCH_FILE, epochs.encode()).await {
                Ok(()) => epochs_dirty = false,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), %e, "leader-epoch checkpoint at open")
                }
            }
        }

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
            journaled_seq: 0,
            durable_seq: 0,
            unsynced_bytes: 0,
            failed: VecDeque::new(),
            log_max_ts: (-1, -1),
            epochs,
            epochs_dirty,
            // Unchanged since the last checkpoint: nothing to rewrite until it moves. Without
            // a checkpoint, one is owed only if it would say more than its absence does (the
            // log start at the first segment, the high watermark there): a new, empty log
            // writes none, so creating many partitions costs no checkpoint fsyncs.
            state_dirty: saved_state.unwrap_or(LogState {
                log_start_offset: first_base.min(leo),
                high_watermark: first_base.min(leo),
            }) != LogState {
                log_start_offset: log_start,
                high_watermark: hw,
            },
            read_hint: None,
            readahead: None,
            read_gen: 0,
            clean_end: load_first_dirty(&dir, log_start, leo).await,
            clean_dirty: false,
            clean_gen: 0,
        };
        st.recompute_log_max();
        Ok(Self::start(dir, cfg, cache, cache_id, st, None))
    }

    /// The log over its recovered state, its background flusher running.
    fn start(
        dir: PathBuf,
        cfg: LogConfig,
        cache: Rc<ReadCache>,
        cache_id: u64,
        st: State,
        deferred: Option<DirMarker>,
    ) -> PartitionLog {
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
            deferred: RefCell::new(deferred),
            journal: RefCell::new(None),
            journaled_ever: Cell::new(false),
            journal_write_requested: Cell::new(false),
        });
        spawn_background_flusher(Rc::downgrade(&inner));
        PartitionLog { inner }
    }

    /// Like `open`, but when `dir` does not exist yet the log starts empty at offset 0 without
    /// creating anything: its directory, `marker` and first segment are created just before
    /// the first thing it writes (a record, a checkpoint, a truncation). Creating thousands of
    /// partitions then costs no file system work until they get records (three inode
    /// allocations each were most of a CreateTopics' CPU), and an idle one holds no file
    /// descriptor. When `dir` exists this is `open`; `marker` is then the caller's business.
    pub async fn open_or_defer(
        dir: impl Into<PathBuf>,
        cfg: LogConfig,
        cache: Rc<ReadCache>,
        marker: DirMarker,
    ) -> Result<PartitionLog, StorageError> {
        let dir: PathBuf = dir.into();
        match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return Self::open(dir, cfg, cache).await,
        }
        let segment = Segment {
            meta: SegmentMeta::new(0),
            file: Rc::new(SegFile::NotCreated {
                path: log_path(&dir, 0),
            }),
            created_ms: now_ms(),
            sealed: false,
            tail_page: Vec::new(),
            allocated: 0,
            dir_synced: false,
        };
        let cache_id = cache.register();
        let st = State {
            segments: BTreeMap::from([(0, segment)]),
            log_start: 0,
            leo: 0,
            hw: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_seq: 0,
            written_seq: 0,
            journaled_seq: 0,
            durable_seq: 0,
            unsynced_bytes: 0,
            failed: VecDeque::new(),
            log_max_ts: (-1, -1),
            epochs: EpochCache::default(),
            epochs_dirty: false,
            state_dirty: false,
            read_hint: None,
            readahead: None,
            read_gen: 0,
            clean_end: 0,
            clean_dirty: false,
            clean_gen: 0,
        };
        Ok(Self::start(dir, cfg, cache, cache_id, st, Some(marker)))
    }

    /// Lets the log hand small rounds of appends to the shard's `journal` (flush policy
    /// `IntervalMs` only), naming itself by its directory and `marker`, the file in it that
    /// proves the directory is still this log (the broker's topic id). Replaying a journal
    /// after a crash needs the directory to sit in the data directory `journal::replay`
    /// is given. Without a usable name the log keeps writing its segment directly.
    pub fn use_journal(&self, journal: Rc<Journal>, marker: &DirMarker) {
        let name = self.inner.dir.file_name().and_then(|n| n.to_str());
        match name.and_then(|n| Identity::new(n, &marker.name, &marker.bytes)) {
            Some(id) => *self.inner.journal.borrow_mut() = Some((journal, Rc::new(id))),
            None => {
                tracing::debug!(dir = %self.inner.dir.display(), "log not journaled: its name does not fit the journal")
            }
        }
    }

    /// Whether the log's directory exists (false while `open_or_defer` has deferred it).
    pub fn dir_created(&self) -> bool {
        self.inner.deferred.borrow().is_none()
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
        let queued = ValidBatch::new(batch)
            .map_err(StorageError::from)
            .and_then(|b| self.inner.enqueue(b, leader_epoch));
        async move {
            let (seq, res) = queued?;
            self.inner.wait_for(seq).await?;
            Ok(res)
        }
    }

    /// `append` of a batch the caller has already validated (no second CRC pass).
    pub fn append_valid(
        &self,
        batch: ValidBatch,
        leader_epoch: i32,
    ) -> impl Future<Output = Result<AppendResult, StorageError>> + '_ {
        let queued = self.inner.enqueue(batch, leader_epoch);
        async move {
            let (seq, res) = queued?;
            self.inner.wait_for(seq).await?;
            Ok(res)
        }
    }

    /// Waits for the append that placed a batch at `base` earlier to finish, as that append
    /// itself waits (flush policy included): a retry of a batch still in flight must not be
    /// acknowledged before the original is. Err when the original's write failed (the log
    /// dropped it). A batch already written is done; one queued is waited for by its sequence.
    pub fn wait_appended(&self, base: i64) -> impl Future<Output = Result<(), StorageError>> + '_ {
        let seq = {
            let st = self.inner.st.borrow();
            match st.pending.iter().find(|p| p.base <= base && base <= p.last) {
                Some(p) => Ok(Some(p.seq)),
                None if base < st.leo => Ok(None),
                None => Err(StorageError::NotWritten { offset: base }),
            }
        };
        async move {
            match seq? {
                Some(seq) => self.inner.wait_for(seq).await,
                None => Ok(()),
            }
        }
    }

    /// Follower append: the batch keeps its base offset (which must equal the log end offset)
    /// and its partition leader epoch. It is taken as it came (a slice of the fetch response
    /// is stored and cached without a copy: followers handle most of the bytes a node writes).
    pub fn append_replicated(
        &self,
        batch: impl Into<Bytes>,
    ) -> impl Future<Output = Result<AppendResult, StorageError>> + '_ {
        let batch: Bytes = batch.into();
        let queued = batch::validate_batch(&batch)
            .map_err(StorageError::from)
            .and_then(|h| self.inner.enqueue_replicated(batch, h));
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

    /// The end of what the segment files hold: the log end offset less the batches still
    /// queued for the writer. A leader counts itself in the high watermark only up to here, so
    /// consumers never read a record that a crash could still take back.
    pub fn written_end_offset(&self) -> i64 {
        let st = self.inner.st.borrow();
        st.pending
            .get(st.journaled_count())
            .map_or(st.leo, |p| p.base)
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

    /// Drops the whole log and starts it empty at `offset`, which may be beyond its end (a
    /// follower below the leader's log start continues from there). Log start, end and high
    /// watermark become `offset`; the leader-epoch cache is cleared.
    pub async fn restart_at(&self, offset: i64) -> Result<(), StorageError> {
        self.inner.restart_at(offset).await
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
        // A replay must not bring the deleted batches back into a later log of this name.
        if let Err(e) = self.inner.journal_marker_locked(EntryKind::Forget, 0).await {
            tracing::warn!(dir = %self.inner.dir.display(), %e, "deleting a log whose deletion the journal could not record");
        }
        self.inner.closed.set(true);
        self.inner.cache.remove_log(self.inner.cache_id);
        self.inner.st.borrow_mut().pending.clear();
        self.inner.close_files().await;
        if self.inner.deferred.borrow().is_some() {
            return Ok(());
        }
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

impl JournalOwner for Inner {
    fn covers(&self, seq: u64) -> bool {
        self.closed.get() || seq < self.st.borrow().durable_seq
    }
    fn request_write(&self) {
        self.journal_write_requested.set(true);
    }
}

impl Inner {
    /// Records a truncation or deletion in the journal before it happens, if this log ever
    /// journaled anything (otherwise there is nothing a replay could bring back).
    async fn journal_marker_locked(
        &self,
        kind: EntryKind,
        offset: i64,
    ) -> Result<(), StorageError> {
        if !self.journaled_ever.get() {
            return Ok(());
        }
        let Some((journal, id)) = self.journal.borrow().clone() else {
            return Ok(());
        };
        if journal
            .write(id, vec![(kind, offset, Bytes::new())], None)
            .await
        {
            Ok(())
        } else {
            Err(StorageError::Io {
                path: self.dir.clone(),
                op: "record a truncation in the journal",
                source: std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "journal unavailable; retry",
                ),
            })
        }
    }

    /// Hands the queued batches not yet journaled to the shard journal, if the log uses one
    /// and its queue is small; true when everything queued is then journaled (or written).
    async fn journal_pending_locked(self: &Rc<Self>) -> Result<bool, StorageError> {
        let Some((journal, id)) = self.journal.borrow().clone() else {
            return Ok(false);
        };
        if !matches!(self.cfg.borrow().flush, FlushPolicy::IntervalMs(_)) {
            return Ok(false);
        }
        let (entries, last_seq) = {
            let st = self.st.borrow();
            if st.pending_bytes >= JOURNAL_MAX_PENDING {
                return Ok(false);
            }
            // A roll that is due happens at a segment write, as without the journal: rolls
            // (by size or age) are what retention and the cleaner work on.
            let cfg = self.cfg.borrow();
            let roll_due = st.active().is_some_and(|a| {
                a.meta.size + st.pending_bytes > cfg.effective_segment_bytes()
                    || cfg
                        .segment_ms
                        .is_some_and(|ms| now_ms() - a.created_ms >= ms as i64)
            });
            if roll_due {
                return Ok(false);
            }
            let from = st.journaled_count();
            // Each batch is journaled with the log end before it (the end of the batch before
            // it, queued or written), so a replay that lacks an entry (lost to a power cut)
            // stops that log there instead of appending past a hole; a gap a compacted
            // leader's batches leave is not a hole, as the entry says where the log ended.
            let mut end_before = match from.checked_sub(1).and_then(|i| st.pending.get(i)) {
                Some(p) => p.last + 1,
                None => st.active().map_or(st.log_start, |a| a.meta.next_offset),
            };
            let entries: Vec<(EntryKind, i64, Bytes)> = st
                .pending
                .range(from..)
                .map(|p| {
                    let e = (EntryKind::BatchAfter, end_before, p.bytes.clone());
                    end_before = p.last + 1;
                    e
                })
                .collect();
            match st.pending.back() {
                Some(last) if !entries.is_empty() => (entries, last.seq),
                _ => return Ok(true),
            }
        };
        // The directory (with its marker) exists before the journal names it. Its entry is
        // synced by the background flush, within the interval the journal itself is synced
        // in (the power-cut window of an acknowledged append), not on this append's path.
        self.create_deferred_dir_locked().await?;
        let me: Weak<dyn JournalOwner> = Rc::downgrade(self) as Weak<dyn JournalOwner>;
        let key = Rc::as_ptr(self) as usize;
        if !journal.write(id, entries, Some((key, me, last_seq))).await {
            return Ok(false);
        }
        self.journaled_ever.set(true);
        let mut st = self.st.borrow_mut();
        st.journaled_seq = st.journaled_seq.max(last_seq + 1);
        Ok(true)
    }

    /// Creates a deferred log's directory, marker and first segment (under the I/O lock,
    /// before anything is written there). On failure nothing is marked created, and the next
    /// write tries again.
    async fn create_deferred_dir_locked(&self) -> Result<(), StorageError> {
        let Some(marker) = self.deferred.borrow().clone() else {
            return Ok(());
        };
        // Off the shard's thread: each of these may wait for the file system's journal commit.
        let dir = self.dir.clone();
        let made = file::off_thread(move || -> Result<(), StorageError> {
            std::fs::create_dir_all(&dir)
                .map_err(|e| StorageError::io(&dir, "create log directory", e))?;
            let tmp = dir.join(format!("{}.tmp", marker.name));
            let dst = dir.join(&marker.name);
            std::fs::write(&tmp, &marker.bytes)
                .and_then(|()| std::fs::rename(&tmp, &dst))
                .map_err(|e| StorageError::io(&dst, "write directory marker", e))
        });
        made.await?;
        let cfg = self.cfg.borrow().clone();
        // Its directory entry is synced with its first data (`sync_active_locked`), as for any
        // new log.
        let seg = create_segment(&self.dir, 0, &cfg, true).await?;
        let mut st = self.st.borrow_mut();
        let Some(active) = st.segments.get_mut(&0) else {
            return Err(StorageError::Closed);
        };
        debug_assert_eq!(active.meta.size, 0, "a deferred segment holds no bytes");
        active.file = seg.file;
        active.created_ms = seg.created_ms;
        drop(st);
        *self.deferred.borrow_mut() = None;
        Ok(())
    }

    async fn lock(&self) -> Result<glommio::sync::Permit<'_>, StorageError> {
        self.io_lock
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)
    }

    /// Synchronous half of a leader append: offsets and epoch are written into the batch
    /// (outside its CRC), then it is queued and cached.
    fn enqueue(
        &self,
        batch: ValidBatch,
        leader_epoch: i32,
    ) -> Result<(u64, AppendResult), StorageError> {
        self.check_accepting()?;
        let (mut batch, h) = batch.into_parts();
        let base = self.st.borrow().leo;
        batch::assign_offset_and_epoch(&mut batch, base, leader_epoch);
        let h = batch::BatchHeader {
            base_offset: base,
            partition_leader_epoch: leader_epoch,
            ..h
        };
        self.queue(batch.freeze(), h)
    }

    /// Synchronous half of a follower append: the batch keeps the leader's offsets and epoch,
    /// which must continue this log; it is stored as given (no copy).
    fn enqueue_replicated(
        &self,
        batch: Bytes,
        h: batch::BatchHeader,
    ) -> Result<(u64, AppendResult), StorageError> {
        self.check_accepting()?;
        let expected = self.st.borrow().leo;
        // A compacted leader's log has offset gaps, which the follower's copy keeps.
        if h.base_offset < expected {
            return Err(StorageError::NonContiguous {
                expected,
                got: h.base_offset,
            });
        }
        self.queue(batch, h)
    }

    fn check_accepting(&self) -> Result<(), StorageError> {
        if self.closed.get() {
            return Err(StorageError::Closed);
        }
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
        Ok(())
    }

    /// Queues a batch whose header holds its final offsets and epoch; moves the log end.
    fn queue(
        &self,
        bytes: Bytes,
        h: batch::BatchHeader,
    ) -> Result<(u64, AppendResult), StorageError> {
        pacing::note_foreground();
        let mut st = self.st.borrow_mut();
        let (base, epoch) = (h.base_offset, h.partition_leader_epoch);
        debug_assert!(
            base >= st.leo,
            "a queued batch continues the log (gaps: compaction)"
        );
        let last = base + h.last_offset_delta as i64;
        let offset_of_max_ts = batch::offset_of_max_timestamp(&bytes, &h);
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
}
