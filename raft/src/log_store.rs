//! The Raft log on disk: one append-only file of checksummed records, fsynced by a writer thread.
//!
//! Why this shape:
//! - openraft's `append` hands us a `LogFlushed` callback. We queue the records to a dedicated
//!   writer thread and return at once; the thread writes everything queued since its last fsync,
//!   calls `fdatasync` once, and only then completes the callbacks. Appends that arrive while an
//!   fsync is in flight share the next one (group commit), so metadata throughput is not one
//!   fsync per command, and the Raft task never blocks on the disk.
//! - Votes, the committed id, truncations and purges are records in the same file, so replaying
//!   the file in order rebuilds exactly the state that was durable. A vote must be durable before
//!   we answer, so `save_vote` waits for its fsync.
//! - Entries are also kept in memory (the metadata log between snapshots is small), so reads never
//!   touch the disk and see appended entries before they are durable, as openraft allows.
//! - Record = `len u32 | crc32 u32 | bincode(LogRecord)`. Recovery stops at the first short or
//!   corrupt record (a torn write from a crash) and cuts the file there.
//! - After purges leave most of the file dead, the writer rewrites the live records into a new
//!   file and renames it over the old one.

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"CHRLOG01";
const LOG_FILE: &str = "raft.log";
/// A record larger than this is taken as corruption rather than allocated.
const MAX_RECORD: usize = 256 << 20;
/// Rewrite the file when it holds this many records more than the live ones.
const COMPACT_DEAD_RECORDS: usize = 10_000;

#[derive(Serialize, Deserialize)]
enum LogRecord {
    Entry(Entry),
    Vote(Vote),
    Committed(Option<LogId>),
    /// Remove entries at and after this index.
    Truncate(u64),
    /// Remove entries up to and including this id.
    Purge(LogId),
}

#[derive(Default)]
struct LogMemory {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl LogMemory {
    fn replay(&mut self, rec: LogRecord) {
        match rec {
            LogRecord::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            LogRecord::Vote(v) => self.vote = Some(v),
            LogRecord::Committed(c) => self.committed = c,
            LogRecord::Truncate(i) => {
                self.entries.split_off(&i);
            }
            LogRecord::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
        }
    }
}

enum WriteOp {
    Records(Vec<Vec<u8>>, Option<Completion>),
    /// Rewrite the file with only these records (built from memory after a purge).
    Rewrite(Vec<Vec<u8>>),
    Stop,
}

enum Completion {
    Flushed(LogFlushed<TypeConfig>),
    Waiter(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Completion {
    fn complete(self, r: &io::Result<()>) {
        let r2 = match r {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Completion::Flushed(cb) => cb.log_io_completed(r2),
            Completion::Waiter(tx) => {
                let _ = tx.send(r2);
            }
        }
    }
}

/// The log store handed to openraft; clones share the same log (one is the log reader).
#[derive(Clone)]
pub struct LogStore {
    mem: Arc<Mutex<LogMemory>>,
    writer: mpsc::Sender<WriteOp>,
    /// Records in the file that are no longer live, to decide when to rewrite.
    stats: Arc<Mutex<FileStats>>,
}

#[derive(Default)]
struct FileStats {
    records: usize,
}

impl LogStore {
    /// Open (or create) the log in `dir`, replaying what survived.
    pub fn open(dir: &Path) -> io::Result<(LogStore, LogWriterHandle)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let (mem, records, good_len) = recover(&path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        if len < MAGIC.len() as u64 {
            file.set_len(0)?;
            file.write_all(MAGIC)?;
            file.sync_all()?;
            sync_dir(dir)?;
        } else if good_len < len {
            tracing::warn!(path = %path.display(), good_len, len, "raft log: cutting a torn tail");
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        use std::io::Seek;
        let end = file.seek(io::SeekFrom::End(0))?;
        let (tx, rx) = mpsc::channel();
        let dir2 = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("chronik-raft-log".into())
            .spawn(move || writer_loop(file, end, dir2, rx))?;
        let store = LogStore {
            mem: Arc::new(Mutex::new(mem)),
            writer: tx.clone(),
            stats: Arc::new(Mutex::new(FileStats { records })),
        };
        Ok((
            store,
            LogWriterHandle {
                tx,
                thread: Some(thread),
            },
        ))
    }

    fn mem(&self) -> MutexGuard<'_, LogMemory> {
        // A poisoned lock means a panic mid-update elsewhere; the data is still consistent
        // record-wise, so keep going rather than cascade the panic.
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, records: Vec<Vec<u8>>, done: Option<Completion>) -> Result<(), StorageError> {
        let n = records.len();
        self.writer
            .send(WriteOp::Records(records, done))
            .map_err(|_| {
                write_err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "raft log writer stopped",
                ))
            })?;
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        st.records += n;
        Ok(())
    }

    async fn send_and_wait(&self, records: Vec<Vec<u8>>) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(records, Some(Completion::Waiter(tx)))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_err(e)),
            Err(_) => Err(write_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "raft log writer stopped",
            ))),
        }
    }

    /// Rewrite the file from memory when it is mostly dead records.
    fn maybe_compact(&self) -> Result<(), StorageError> {
        let mem = self.mem();
        let live = mem.entries.len() + 3;
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if st.records < live + COMPACT_DEAD_RECORDS {
            return Ok(());
        }
        let mut recs = Vec::with_capacity(live);
        if let Some(v) = &mem.vote {
            recs.push(encode(&LogRecord::Vote(*v))?);
        }
        recs.push(encode(&LogRecord::Committed(mem.committed))?);
        if let Some(p) = &mem.last_purged {
            recs.push(encode(&LogRecord::Purge(*p))?);
        }
        for e in mem.entries.values() {
            recs.push(encode(&LogRecord::Entry(e.clone()))?);
        }
        st.records = recs.len();
        self.writer.send(WriteOp::Rewrite(recs)).map_err(|_| {
            write_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "raft log writer stopped",
            ))
        })
    }
}

/// Owns the writer thread; dropping it (or `stop`) finishes queued writes and joins the thread.
pub struct LogWriterHandle {
    tx: mpsc::Sender<WriteOp>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogWriterHandle {
    pub fn stop(&mut self) {
        let _ = self.tx.send(WriteOp::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LogWriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(rec: &LogRecord) -> Result<Vec<u8>, StorageError> {
    let payload = bincode::serialize(rec)
        .map_err(|e| write_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn write_err(e: io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// Replay the file. Returns the memory, the record count, and the length of the good prefix.
fn recover(path: &Path) -> io::Result<(LogMemory, usize, u64)> {
    let mut mem = LogMemory::default();
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((mem, 0, 0)),
        Err(e) => return Err(e),
    }
    if buf.len() < MAGIC.len() {
        return Ok((mem, 0, 0));
    }
    if &buf[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a chronik raft log", path.display()),
        ));
    }
    let mut pos = MAGIC.len();
    let mut records = 0;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]);
        if len > MAX_RECORD || pos + 8 + len > buf.len() {
            break;
        }
        let payload = &buf[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        // A record whose checksum holds was written whole: failing to decode it is not a torn
        // tail but a format this version cannot read. Cutting there would drop committed
        // entries, so refuse to start (an error, never a panic).
        match crate::codec::decode::<LogRecord>(payload) {
            Ok(rec) => mem.replay(rec),
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: undecodable record at byte {pos}: {e}", path.display()),
                ))
            }
        }
        records += 1;
        pos += 8 + len;
    }
    Ok((mem, records, pos as u64))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Longest pause between two tries of a failed write.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Writes what is queued, one fsync per round. A failed write (a full disk, most often) is not
/// reported to openraft — a storage error stops its Raft core for good, and the controller with
/// it, until a restart. Instead the writer cuts the file back to its last good length and
/// retries with back-off until the write succeeds: the Raft core waits for the flush meanwhile
/// (callers time out; peers elect another leader), and carries on by itself once space returns.
fn writer_loop(mut file: File, mut good_len: u64, dir: PathBuf, rx: mpsc::Receiver<WriteOp>) {
    let mut deferred: VecDeque<WriteOp> = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return,
            },
        };
        // Take everything queued so one fsync covers it all.
        let mut ops = vec![first];
        ops.extend(deferred.drain(..));
        while let Ok(op) = rx.try_recv() {
            ops.push(op);
        }
        let mut waiting = Vec::new();
        let mut buf = Vec::new();
        let mut stopping = false;
        let mut ok = true;
        for op in ops {
            match op {
                WriteOp::Records(recs, done) => {
                    for r in recs {
                        buf.extend_from_slice(&r);
                    }
                    if let Some(d) = done {
                        waiting.push(d);
                    }
                }
                WriteOp::Rewrite(recs) => {
                    // Everything before the rewrite request is in memory (and so in `recs`);
                    // still, write it to the old file first, which stays complete if the
                    // rewrite fails.
                    if !ok {
                        continue;
                    }
                    ok = write_until_done(
                        &mut file,
                        &mut good_len,
                        &buf,
                        stopping,
                        &rx,
                        &mut deferred,
                    );
                    buf.clear();
                    if ok {
                        match rewrite(&dir, &recs) {
                            Ok((f, len)) => {
                                file = f;
                                good_len = len;
                            }
                            Err(e) => {
                                // The old file is intact and still complete: keep using it.
                                tracing::warn!(error = %e, "raft log: rewrite failed, keeping the old file");
                            }
                        }
                    }
                }
                WriteOp::Stop => stopping = true,
            }
        }
        if ok && (!buf.is_empty() || !waiting.is_empty()) {
            ok = write_until_done(&mut file, &mut good_len, &buf, stopping, &rx, &mut deferred);
        }
        let result = if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "raft log writer stopped before the write succeeded",
            ))
        };
        for d in waiting {
            d.complete(&result);
        }
        if stopping || !ok {
            return;
        }
    }
}

/// Writes `buf` at `good_len` and fsyncs, retrying with back-off until it succeeds. Returns
/// false when asked to stop meanwhile (or, when `stopping` already, after one failed try, so a
/// shutdown never waits for disk space); operations that arrive while it waits are kept in
/// `deferred`, in order.
fn write_until_done(
    file: &mut File,
    good_len: &mut u64,
    buf: &[u8],
    stopping: bool,
    rx: &mpsc::Receiver<WriteOp>,
    deferred: &mut VecDeque<WriteOp>,
) -> bool {
    let mut pause = Duration::from_millis(10);
    let mut failing = false;
    loop {
        match write_at(file, *good_len, buf) {
            Ok(()) => {
                *good_len += buf.len() as u64;
                if failing {
                    tracing::warn!("raft log: writes succeed again");
                }
                return true;
            }
            Err(e) => {
                if stopping {
                    tracing::error!(error = %e, "raft log: write failed while stopping");
                    return false;
                }
                if !failing {
                    tracing::error!(
                        error = %e,
                        "raft log: write failed; metadata changes wait until it succeeds (is the disk full?)"
                    );
                    failing = true;
                }
                let until = Instant::now() + pause;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match rx.recv_timeout(left) {
                        Ok(WriteOp::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return false
                        }
                        Ok(op) => deferred.push_back(op),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                    }
                }
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}

/// One try: write at `at`, fsync. On failure the file is cut back to `at`, so a retry writes
/// whole records after the good prefix and never leaves half a record in the middle.
fn write_at(file: &mut File, at: u64, buf: &[u8]) -> io::Result<()> {
    use std::io::Seek;
    let r = (|| {
        file.seek(io::SeekFrom::Start(at))?;
        file.write_all(buf)?;
        file.sync_data()
    })();
    if r.is_err() {
        let _ = file.set_len(at);
    }
    r
}

fn rewrite(dir: &Path, recs: &[Vec<u8>]) -> io::Result<(File, u64)> {
    let tmp = dir.join(format!("{LOG_FILE}.tmp"));
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(MAGIC)?;
    for r in recs {
        f.write_all(r)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(LOG_FILE))?;
    sync_dir(dir)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(LOG_FILE))?;
    use std::io::Seek;
    let len = f.seek(io::SeekFrom::End(0))?;
    Ok((f, len))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mem = self.mem();
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem();
        let last = mem
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(mem.last_purged);
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let rec = encode(&LogRecord::Vote(*vote))?;
        self.mem().vote = Some(*vote);
        // A vote must survive a crash before we act on it.
        self.send_and_wait(vec![rec]).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.mem().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not waited for: it only lets a restarted node re-apply committed entries without a
        // leader; later records' fsync makes it durable.
        let rec = encode(&LogRecord::Committed(committed))?;
        self.mem().committed = committed;
        self.send(vec![rec], None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mem().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut recs = Vec::new();
        {
            let mut mem = self.mem();
            for e in entries {
                recs.push(encode(&LogRecord::Entry(e.clone()))?);
                mem.entries.insert(e.log_id.index, e);
            }
        }
        // The callback fires from the writer thread after fdatasync.
        self.send(recs, Some(Completion::Flushed(callback)))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Ordered before any later append in the same file, so no wait is needed for safety.
        let rec = encode(&LogRecord::Truncate(log_id.index))?;
        self.mem().entries.split_off(&log_id.index);
        self.send(vec![rec], None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let rec = encode(&LogRecord::Purge(log_id))?;
        {
            let mut mem = self.mem();
            mem.replay(LogRecord::Purge(log_id));
        }
        self.send(vec![rec], None)?;
        self.maybe_compact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandBatch;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(CommandBatch::default()),
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    async fn write_entries(store: &LogStore, entries: Vec<Entry>) {
        let recs = entries
            .iter()
            .map(|e| encode(&LogRecord::Entry(e.clone())).expect("encode"))
            .collect();
        for e in entries {
            store.mem().entries.insert(e.log_id.index, e);
        }
        store.send_and_wait(recs).await.expect("durable");
    }

    #[test]
    fn log_survives_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut store, _w) = LogStore::open(dir.path()).expect("open");
            block_on(async {
                write_entries(&store, (1..=5).map(|i| entry(1, i)).collect()).await;
                store.save_vote(&Vote::new(2, 1)).await.expect("vote");
                store
                    .truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
                    .await
                    .expect("truncate");
                write_entries(&store, vec![entry(2, 4)]).await;
                store
                    .purge(LogId::new(CommittedLeaderId::new(1, 1), 1))
                    .await
                    .expect("purge");
            });
        }
        // A crash mid-write leaves half a record behind.
        let path = dir.path().join(LOG_FILE);
        let good = std::fs::metadata(&path).expect("meta").len();
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open for append");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).expect("garbage");
        drop(f);
        let (mut store, _w) = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good);
        block_on(async {
            assert_eq!(
                store.read_vote().await.expect("vote"),
                Some(Vote::new(2, 1))
            );
            let entries = store.try_get_log_entries(0..100).await.expect("read");
            let ids: Vec<(u64, u64)> = entries
                .iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect();
            assert_eq!(ids, vec![(1, 2), (1, 3), (2, 4)]);
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(1));
            assert_eq!(st.last_log_id.map(|l| l.index), Some(4));
        });
    }
}
