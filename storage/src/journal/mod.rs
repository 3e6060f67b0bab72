//! The shard journal: one stream of O_DIRECT files per shard that takes the small appends of
//! all the shard's logs, one write per round for all of them.
//!
//! Why: every log is its own segment file, so a round of appends spread over many partitions
//! (one record each, at 1,000 partitions) cost one device write per partition, and the disk's
//! small-write rate became the broker's limit. A log whose queued bytes are small hands them to
//! the journal instead; the journal group-commits every log's entries of the round into one
//! write and the appends are acknowledged when it completes (durable against a process kill,
//! as a segment write is). The batches stay queued in their logs (readable as before) and are
//! written to the segment later in one larger write: once a log has `JOURNAL_MAX_PENDING` bytes
//! queued, when the journal needs a file back, or at close.
//!
//! A file is released once every log with entries in it has those batches in its segment and
//! fdatasynced. Truncations and deletions of a log that used the journal are recorded as
//! marker entries before they happen, so a replay never brings back what they removed. After a
//! crash, `replay::recover` applies the journal to the logs before anything opens them, then
//! removes it. The journal is an optimisation: when it cannot take a round (its files are at
//! their limit, a write failed) the logs write their segments themselves.
//!
//! Files are recycled: one released file is kept (renamed at once to `recycle.free`, which
//! replay never reads) and becomes the next file, overwritten in place; the others are
//! deleted. Deleting a 32 MiB file on a disk mounted with `discard` stalled the device's other
//! writes for up to ~80 ms, and every write into a newly preallocated file converts unwritten
//! extents (metadata at the fdatasync, and ext4 hands such O_DIRECT writes to io_uring worker
//! threads); an overwrite does neither (PostgreSQL and RocksDB recycle their logs for the same
//! reasons). What a recycled file holds from its earlier lives stays in it: entries' CRCs are
//! seeded with their file's number (`format`), so those fail the new number's and end the file
//! at replay, as a torn write does.

pub(crate) mod format;
pub mod replay;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;

use crate::commit::{self, Progress};
use crate::error::StorageError;
use crate::file::{self, align_up, SegFile};
use format::{encode_entry, entry_len, EntryKind, Identity};

/// Size of one journal file (preallocated when created).
pub const JOURNAL_FILE_BYTES: u64 = 32 << 20;
/// Journal files a shard may hold at once; at the limit, logs write their segments directly
/// until older files are released.
pub const JOURNAL_MAX_FILES: usize = 4;
/// A log journals a round only while its queued (unwritten) bytes stay below this; beyond it,
/// the segment write is large enough to pay for itself.
pub const JOURNAL_MAX_PENDING: u64 = 64 << 10;
/// Failed round ranges remembered for waiters that have not looked yet.
const MAX_FAILED: usize = 1024;
/// The name a released file waits under to be reused; replay reads only `*.journal` files.
const RECYCLE_NAME: &str = "recycle.free";

/// What the journal asks of a log that has entries in it.
pub(crate) trait JournalOwner {
    /// Whether every batch the log journaled with a sequence number up to `seq` is in its
    /// segment and fdatasynced, or no longer matters (the log is closed or gone).
    fn covers(&self, seq: u64) -> bool;
    /// Asks the log to write its journaled batches to its segment and sync them soon.
    fn request_write(&self);
}

/// The owner a round's entries belong to, and its last sequence number in them.
type OwnerRef = (usize, Weak<dyn JournalOwner>, u64);

struct Group {
    ticket: u64,
    id: Rc<Identity>,
    entries: Vec<(EntryKind, i64, Bytes)>,
    owner: Option<OwnerRef>,
    /// Markers are written even when the files are at their limit.
    must: bool,
    len: usize,
}

struct OpenFile {
    file: Rc<SegFile>,
    /// The number in its name: files are used, and replayed, in this order.
    no: u64,
    path: PathBuf,
    pos: u64,
    owners: HashMap<usize, (Weak<dyn JournalOwner>, u64)>,
}

struct SealedFile {
    path: PathBuf,
    owners: HashMap<usize, (Weak<dyn JournalOwner>, u64)>,
}

/// The released file kept for reuse.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Recycle {
    #[default]
    None,
    /// Being renamed to `RECYCLE_NAME`.
    Renaming,
    /// Waiting under `RECYCLE_NAME`, as long as a file.
    Ready,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Group>,
    next_ticket: u64,
    /// Tickets below this are written or failed.
    done: u64,
    failed: VecDeque<(u64, u64)>,
    current: Option<OpenFile>,
    sealed: VecDeque<SealedFile>,
    next_file: u64,
    /// The next file, created and preallocated ahead of need (not counted in the file limit).
    spare: Option<(u64, PathBuf, SegFile)>,
    spare_busy: bool,
    /// At most one released file is kept (not counted in the file limit either).
    recycle: Recycle,
    closed: bool,
    unsynced: bool,
    started: bool,
}

/// One shard's journal. `!Send`: owned by the shard's executor, shared by its logs.
pub struct Journal {
    dir: PathBuf,
    sync_every: Duration,
    file_bytes: u64,
    st: RefCell<State>,
    progress: Progress,
    /// Notified when the spare's creation or a recycling rename ends (`close` waits for them).
    background: Progress,
    writes: Cell<u64>,
    me: Weak<Journal>,
}

impl Journal {
    /// A journal writing its files in `dir` (created with the first entry), fdatasynced every
    /// `sync_every` while written to. `dir` must hold no older journal: `replay::recover`
    /// applies and removes those before the shard starts.
    pub fn new(dir: impl Into<PathBuf>, sync_every: Duration) -> Rc<Journal> {
        Self::with_file_bytes(dir, sync_every, JOURNAL_FILE_BYTES)
    }

    /// `new` with files of `file_bytes` (at least 256 KiB, at most `JOURNAL_FILE_BYTES`), so
    /// tests can fill files quickly.
    pub fn with_file_bytes(
        dir: impl Into<PathBuf>,
        sync_every: Duration,
        file_bytes: u64,
    ) -> Rc<Journal> {
        let dir = dir.into();
        Rc::new_cyclic(|me| Journal {
            dir,
            sync_every,
            file_bytes: align_up(file_bytes.clamp(256 << 10, JOURNAL_FILE_BYTES)),
            st: RefCell::new(State::default()),
            progress: Progress::default(),
            background: Progress::default(),
            writes: Cell::new(0),
            me: me.clone(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the next file is already created and preallocated, so the next rotation does
    /// no file system work in the appends' way.
    pub fn spare_ready(&self) -> bool {
        self.st.borrow().spare.is_some()
    }

    /// Journal writes issued so far (each covers one round of many logs), for benchmarks.
    pub fn write_count(&self) -> u64 {
        self.writes.get()
    }

    /// Whether a released file waits to be reused as the next one.
    pub fn recycled_ready(&self) -> bool {
        self.st.borrow().recycle == Recycle::Ready
    }

    /// Journal files currently kept.
    pub fn file_count(&self) -> usize {
        let st = self.st.borrow();
        st.sealed.len() + usize::from(st.current.is_some())
    }

    /// Writes `entries` of the log `id` in the next round; true once they are written, false
    /// when the journal could not take them (the caller writes its segment instead).
    pub(crate) async fn write(
        &self,
        id: Rc<Identity>,
        entries: Vec<(EntryKind, i64, Bytes)>,
        owner: Option<OwnerRef>,
    ) -> bool {
        let must = owner.is_none();
        let len = entries
            .iter()
            .map(|(_, _, p)| entry_len(&id, p.len()))
            .sum::<usize>();
        if len as u64 > self.file_bytes / 4 {
            return false;
        }
        let ticket = {
            let mut st = self.st.borrow_mut();
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.queue.push_back(Group {
                ticket,
                id,
                entries,
                owner,
                must,
                len,
            });
            ticket
        };
        loop {
            {
                let st = self.st.borrow();
                if ticket < st.done {
                    return !st.failed.iter().any(|(a, b)| (*a..*b).contains(&ticket));
                }
            }
            let Some(_flusher) = self.progress.try_become_flusher() else {
                self.progress.changed().await;
                continue;
            };
            // Logs woken by the previous round get to queue their entries first.
            commit::yield_now().await;
            self.write_round().await;
        }
    }

    /// Writes what is queued that fits the current file (rotating to a new one when the next
    /// group does not fit); fails the groups it cannot take.
    async fn write_round(&self) {
        let first_len = match self.st.borrow().queue.front() {
            Some(g) => g.len as u64,
            None => return,
        };
        let fits = {
            let st = self.st.borrow();
            st.current
                .as_ref()
                .is_some_and(|c| c.pos + first_len <= self.file_bytes)
        };
        if !fits {
            if let Err(e) = self.rotate().await {
                self.fail_queued(&e);
                return;
            }
        }
        let (file, no, pos, groups) = {
            let mut st = self.st.borrow_mut();
            let Some(cur) = st.current.as_ref() else {
                drop(st);
                self.fail_queued(&StorageError::Closed);
                return;
            };
            let (file, no, pos) = (cur.file.clone(), cur.no, cur.pos);
            let mut room = self.file_bytes - pos;
            let mut groups = Vec::new();
            while let Some(g) = st.queue.front() {
                if g.len as u64 > room {
                    break;
                }
                room -= g.len as u64;
                if let Some(g) = st.queue.pop_front() {
                    groups.push(g);
                }
            }
            (file, no, pos, groups)
        };
        let Some(last_ticket) = groups.last().map(|g| g.ticket) else {
            return;
        };
        let total: usize = groups.iter().map(|g| g.len).sum();
        let mut buf = glommio::allocate_dma_buffer(align_up(total as u64) as usize);
        {
            let out = buf.as_bytes_mut();
            let mut at = 0;
            for g in &groups {
                for (kind, offset, payload) in &g.entries {
                    encode_entry(&mut out[at..], no, *kind, *offset, &g.id, payload);
                    at += entry_len(&g.id, payload.len());
                }
            }
            out[at..].fill(0);
        }
        let written = buf.len() as u64;
        let res = file.write_pages(pos, buf, 0, total).await;
        self.writes.set(self.writes.get() + 1);
        let mut st = self.st.borrow_mut();
        let first_ticket = groups[0].ticket;
        match res {
            Ok(()) => {
                st.unsynced = true;
                if let Some(cur) = st.current.as_mut() {
                    cur.pos = pos + written;
                    for g in groups {
                        if let Some((key, weak, seq)) = g.owner {
                            cur.owners.insert(key, (weak, seq));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), %e, "journal write failed; the logs write their segments");
                st.failed.push_back((first_ticket, last_ticket + 1));
                while st.failed.len() > MAX_FAILED {
                    st.failed.pop_front();
                }
            }
        }
        st.done = st.done.max(last_ticket + 1);
    }

    /// Fails every queued group (their logs write their segments themselves).
    fn fail_queued(&self, why: &StorageError) {
        let mut st = self.st.borrow_mut();
        let (Some(first), Some(last)) = (
            st.queue.front().map(|g| g.ticket),
            st.queue.back().map(|g| g.ticket),
        ) else {
            return;
        };
        // Markers at the limit: the caller learns it and fails its truncation, to retry.
        tracing::debug!(dir = %self.dir.display(), %why, "journal cannot take a round");
        st.queue.clear();
        st.failed.push_back((first, last + 1));
        while st.failed.len() > MAX_FAILED {
            st.failed.pop_front();
        }
        st.done = st.done.max(last + 1);
    }

    /// Seals the current file and switches to the next, if the file limit allows (markers
    /// may exceed it: they are tiny and a truncation must not wait on other logs).
    ///
    /// This runs in a round's flusher, so every append of the shard waits for it: the next
    /// file is normally the spare made ready in the background (`prepare_spare`), and the
    /// sealed file's fdatasync runs in its own task. Done inline (an fdatasync, a file
    /// creation, a 32 MiB preallocation and a directory sync) it stalled the shard's appends
    /// for tens of milliseconds at every rotation, every second or two under load (issue 24).
    async fn rotate(&self) -> Result<(), StorageError> {
        self.reclaim();
        let must = self.st.borrow().queue.front().is_some_and(|g| g.must);
        if self.file_count() >= JOURNAL_MAX_FILES && !must {
            return Err(StorageError::Io {
                path: self.dir.clone(),
                op: "journal at its file limit",
                source: std::io::Error::new(std::io::ErrorKind::WouldBlock, "journal full"),
            });
        }
        let spare = self.st.borrow_mut().spare.take();
        let (no, path, file) = match spare {
            Some(s) => s,
            None => self.create_file(!must).await?,
        };
        let old = self.st.borrow_mut().current.take();
        if let Some(old) = old {
            debug_assert!(
                old.no < no,
                "journal files are used in the order of their names"
            );
            self.st.borrow_mut().sealed.push_back(SealedFile {
                path: old.path.clone(),
                owners: old.owners,
            });
            // The sealed file's entries get the same power-cut window as the current one's.
            let dir = self.dir.clone();
            glommio::spawn_local(async move {
                if let Err(e) = old.file.fdatasync().await {
                    tracing::warn!(dir = %dir.display(), %e, "journal fdatasync failed");
                }
                if let Ok(f) = Rc::try_unwrap(old.file) {
                    f.close().await;
                }
            })
            .detach();
        }
        let start = {
            let mut st = self.st.borrow_mut();
            st.current = Some(OpenFile {
                file: Rc::new(file),
                no,
                path,
                pos: 0,
                owners: HashMap::new(),
            });
            !std::mem::replace(&mut st.started, true)
        };
        if start {
            spawn_background(self.me.clone());
        }
        self.prepare_spare();
        Ok(())
    }

    /// Makes the next file ready in the background, unless one is ready or being made.
    fn prepare_spare(&self) {
        {
            let mut st = self.st.borrow_mut();
            if st.spare.is_some() || st.spare_busy || st.closed {
                return;
            }
            st.spare_busy = true;
        }
        let weak = self.me.clone();
        glommio::spawn_local(async move {
            let Some(j) = weak.upgrade() else { return };
            match j.create_file(true).await {
                Ok(spare) => {
                    // Kept only if still newer than the current file (a rotation that found no
                    // spare made its own meanwhile, with a higher number) and still wanted.
                    let unwanted = {
                        let mut st = j.st.borrow_mut();
                        if !st.closed && st.current.as_ref().is_none_or(|c| c.no < spare.0) {
                            st.spare = Some(spare);
                            None
                        } else {
                            Some(spare)
                        }
                    };
                    if let Some((_, path, file)) = unwanted {
                        file.close().await;
                        // Awaited: `close` waits for this task and leaves no file behind.
                        j.recycle_or_remove(path).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(dir = %j.dir.display(), %e, "cannot prepare the next journal file")
                }
            }
            j.st.borrow_mut().spare_busy = false;
            j.background.notify_all();
        })
        .detach();
    }

    /// Makes the next journal file and its directory entry durable: the released file kept for
    /// reuse if there is one, else a new file, preallocated. With `only_if_roomy`, a new file
    /// only while the disk keeps room after it (`disk_has_room`): the journal is a speed-up the
    /// logs can do without (a group it cannot take goes to its log's segment); only a
    /// truncation marker (`must`) may take the disk's last bytes. A reused file takes no room.
    async fn create_file(
        &self,
        only_if_roomy: bool,
    ) -> Result<(u64, PathBuf, SegFile), StorageError> {
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| StorageError::io(&self.dir, "create journal directory", e))?;
            // The new directories' entries are durable before anything is acknowledged from
            // a file in them.
            for d in self.dir.ancestors().skip(1).take(2) {
                file::sync_dir(d).await?;
            }
        }
        let (no, path, f) = match self.reuse_recycled().await {
            Some(reused) => reused,
            None => {
                if only_if_roomy && !self.disk_has_room() {
                    return Err(StorageError::DiskFull {
                        path: self.dir.clone(),
                    });
                }
                let (no, path) = self.next_name();
                let f = SegFile::open(&path, true, false).await?;
                if let Err(e) = f.pre_allocate(self.file_bytes).await {
                    f.close().await;
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                (no, path, f)
            }
        };
        if let Err(e) = file::sync_dir(&self.dir).await {
            f.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok((no, path, f))
    }

    /// The next file's number and path.
    fn next_name(&self) -> (u64, PathBuf) {
        let no = {
            let mut st = self.st.borrow_mut();
            st.next_file += 1;
            st.next_file
        };
        (no, self.dir.join(format!("{no:020}.journal")))
    }

    /// The released file kept for reuse, renamed to the next file's name and opened, if there
    /// is one (a rename to `RECYCLE_NAME` under way is waited for: it takes less time than
    /// making a file). `None` when there is none or it cannot be used; then it is removed and
    /// the caller makes a new file. Its old entries stay in it: their CRCs, seeded with its
    /// earlier numbers, keep a replay from taking them as the new number's.
    async fn reuse_recycled(&self) -> Option<(u64, PathBuf, SegFile)> {
        loop {
            let changed = self.background.changed();
            {
                let mut st = self.st.borrow_mut();
                match st.recycle {
                    Recycle::None => return None,
                    Recycle::Renaming => {}
                    Recycle::Ready => {
                        st.recycle = Recycle::None;
                        break;
                    }
                }
            }
            changed.await;
        }
        let (no, path) = self.next_name();
        let free = self.dir.join(RECYCLE_NAME);
        let to = path.clone();
        let renamed = file::off_thread(move || {
            let res = std::fs::rename(&free, &to);
            if res.is_err() {
                let _ = std::fs::remove_file(&free);
            }
            res
        })
        .await;
        if let Err(e) = renamed {
            tracing::warn!(dir = %self.dir.display(), %e, "cannot reuse a released journal file; making a new one");
            return None;
        }
        match self.open_recycled(&path).await {
            Ok(f) => Some((no, path, f)),
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "cannot reuse a released journal file; making a new one");
                remove_file(path).await;
                None
            }
        }
    }

    /// Opens a reused file, which must be as long as a file (`recycle` made it so): then no
    /// write of its new life moves its end, and its blocks are the ones preallocated when it
    /// was made.
    async fn open_recycled(&self, path: &Path) -> Result<SegFile, StorageError> {
        let f = SegFile::open(path, false, false).await?;
        let len = match f.size().await {
            Ok(len) => len,
            Err(e) => {
                f.close().await;
                return Err(e);
            }
        };
        if len != self.file_bytes {
            f.close().await;
            return Err(StorageError::io(
                path,
                "reuse journal file",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{len} bytes, not {}", self.file_bytes),
                ),
            ));
        }
        Ok(f)
    }

    /// Claims the place of the file kept for reuse, if it is free, the journal is open and the
    /// disk has room to spare: on a nearly full disk a released file's space goes back to the
    /// logs, as a new file's would not be taken from them (`disk_has_room`).
    fn claim_recycle(&self) -> bool {
        {
            let st = self.st.borrow();
            if st.recycle != Recycle::None || st.closed {
                return false;
            }
        }
        if !self.disk_has_room() {
            return false;
        }
        self.st.borrow_mut().recycle = Recycle::Renaming;
        true
    }

    /// Keeps the released file at `path` for reuse (the place claimed with `claim_recycle`):
    /// renamed at once to `RECYCLE_NAME`, so a replay never reads it, and made as long as a
    /// file. Off the shard thread, as a removal is. On failure it is removed.
    async fn recycle(&self, path: PathBuf) {
        let free = self.dir.join(RECYCLE_NAME);
        let file_bytes = self.file_bytes;
        let shown = path.clone();
        let res = file::off_thread(move || {
            let res = std::fs::rename(&path, &free).and_then(|()| {
                // Preallocated with the size kept, a file ends where its last write did. Made
                // full length, its next life's writes never move its end: no size update at
                // their fdatasyncs. (Never shortened: that would free blocks, a discard.)
                let f = std::fs::OpenOptions::new().write(true).open(&free)?;
                if f.metadata()?.len() < file_bytes {
                    f.set_len(file_bytes)?;
                }
                Ok(())
            });
            if res.is_err() {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&free);
            }
            res
        })
        .await;
        if let Err(e) = &res {
            tracing::warn!(path = %shown.display(), %e, "cannot keep a released journal file for reuse; removed it");
        }
        self.st.borrow_mut().recycle = if res.is_ok() {
            Recycle::Ready
        } else {
            Recycle::None
        };
        self.background.notify_all();
    }

    /// `recycle` if the place is free, else removes the file; both awaited.
    async fn recycle_or_remove(&self, path: PathBuf) {
        if self.claim_recycle() {
            self.recycle(path).await;
        } else {
            remove_file(path).await;
        }
    }

    /// Whether a new file leaves the disk room for one more and 5% of itself: on a small or
    /// nearly full disk the space goes to the logs. (On a 64 MiB disk the preallocation of a
    /// spare file filled the disk for a moment and a log's write failed.) A disk that cannot be
    /// looked at is given the benefit of the doubt: the preallocation reports a full one.
    fn disk_has_room(&self) -> bool {
        match crate::disk::free_and_total(&self.dir) {
            Ok((free, total)) => free >= 2 * self.file_bytes + total / 20,
            Err(_) => true,
        }
    }

    /// Releases the oldest sealed files whose logs all have their entries in their segments
    /// (one is kept for reuse, the others are deleted, in the background); asks the logs
    /// holding up the oldest one to write theirs.
    fn reclaim(&self) {
        for path in self.released() {
            if !self.claim_recycle() {
                file::remove_in_background(path);
                continue;
            }
            let weak = self.me.clone();
            glommio::spawn_local(async move {
                match weak.upgrade() {
                    Some(j) => j.recycle(path).await,
                    None => file::remove_in_background(path),
                }
            })
            .detach();
        }
    }

    /// Takes the oldest sealed files whose logs all have their entries in their segments off
    /// the list and returns their paths (for the caller to remove); asks the logs holding up
    /// the oldest one to write theirs.
    fn released(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        loop {
            let pending: Vec<Rc<dyn JournalOwner>> = {
                let st = self.st.borrow();
                let Some(f) = st.sealed.front() else {
                    return out;
                };
                f.owners
                    .values()
                    .filter_map(|(w, seq)| w.upgrade().filter(|o| !o.covers(*seq)))
                    .collect()
            };
            if !pending.is_empty() {
                for o in pending {
                    o.request_write();
                }
                return out;
            }
            let Some(f) = self.st.borrow_mut().sealed.pop_front() else {
                return out;
            };
            out.push(f.path);
        }
    }

    /// The periodic fdatasync of the current file (the power-cut window of journaled appends,
    /// like the segments' interval flush) and reclaiming.
    async fn tick(&self) {
        let target = {
            let mut st = self.st.borrow_mut();
            let unsynced = std::mem::take(&mut st.unsynced);
            st.current
                .as_ref()
                .filter(|_| unsynced)
                .map(|c| c.file.clone())
        };
        if let Some(f) = target {
            if let Err(e) = f.fdatasync().await {
                self.st.borrow_mut().unsynced = true;
                tracing::warn!(dir = %self.dir.display(), %e, "journal fdatasync failed");
            }
        }
        self.reclaim();
    }

    /// Releases every file once its logs no longer need it (a clean shutdown: every log is
    /// closed first, so all of them are released) and removes them, the file kept for reuse
    /// too.
    pub async fn close(&self) {
        let (cur, spare) = {
            let mut st = self.st.borrow_mut();
            st.closed = true;
            (st.current.take(), st.spare.take())
        };
        if let Some(cur) = cur {
            let _ = cur.file.fdatasync().await;
            self.st.borrow_mut().sealed.push_back(SealedFile {
                path: cur.path,
                owners: cur.owners,
            });
            if let Ok(f) = Rc::try_unwrap(cur.file) {
                f.close().await;
            }
        }
        let mut gone = self.released();
        if let Some((_, path, file)) = spare {
            file.close().await;
            gone.push(path);
        }
        // A spare being made removes its file itself once it sees the journal closed; a file
        // being renamed for reuse is removed below.
        loop {
            let changed = self.background.changed();
            {
                let st = self.st.borrow();
                if !st.spare_busy && st.recycle != Recycle::Renaming {
                    break;
                }
            }
            changed.await;
        }
        if std::mem::take(&mut self.st.borrow_mut().recycle) == Recycle::Ready {
            gone.push(self.dir.join(RECYCLE_NAME));
        }
        // Awaited: a clean stop leaves no journal file for the next start to replay.
        for path in gone {
            remove_file(path).await;
        }
    }
}

/// Removes a released journal file off the shard thread, and waits for it.
async fn remove_file(path: PathBuf) {
    let shown = path.clone();
    match file::off_thread(move || std::fs::remove_file(&path)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %shown.display(), %e, "cannot remove a released journal file")
        }
    }
}

fn spawn_background(weak: Weak<Journal>) {
    glommio::spawn_local(async move {
        loop {
            let period = match weak.upgrade() {
                Some(j) => j.sync_every,
                None => return,
            };
            glommio::timer::sleep(period).await;
            let Some(j) = weak.upgrade() else { return };
            j.tick().await;
        }
    })
    .detach();
}
