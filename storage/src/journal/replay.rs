//! Applying the journals of a crashed process to their logs, before anything opens them.
//! Only `*.journal` files are read: a recycled file waiting for reuse (`recycle.free`) holds
//! nothing a log needs, and is removed with its shard's directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::format::{decode_file, EntryKind, Identity, MAX_ENTRY_LEN};
use super::JOURNAL_FILE_BYTES;
use crate::cache::ReadCache;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::log::PartitionLog;

/// What `recover` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub files: usize,
    pub entries: usize,
    /// Batches appended to logs that lacked them.
    pub applied: usize,
    /// Logs that received batches.
    pub logs: usize,
    /// Logs that could not be opened to take their batches.
    pub failed_logs: usize,
}

/// Applies every journal under `root` (one directory per shard, files in name order) to the
/// logs in `data_dir`, closes those logs, then removes the journals. Batches a log already
/// holds are skipped; a log whose directory is gone or whose marker file differs (another
/// topic of the same name) takes nothing. A torn entry ends its file (it was never
/// acknowledged), as does an entry of a recycled file's earlier life. Must run on a glommio executor before the logs are opened by anyone else.
pub async fn recover(
    root: &Path,
    data_dir: &Path,
    cfg: LogConfig,
) -> Result<ReplayReport, StorageError> {
    let mut report = ReplayReport::default();
    let shards = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(StorageError::io(root, "list journal directory", e)),
    };
    let mut shard_dirs: Vec<PathBuf> = Vec::new();
    for entry in shards {
        let entry = entry.map_err(|e| StorageError::io(root, "list journal directory", e))?;
        if entry.path().is_dir() {
            shard_dirs.push(entry.path());
        }
    }
    shard_dirs.sort();
    // Per log directory, its batches in journal order, with the markers applied.
    let mut logs: HashMap<String, Vec<Journaled>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for shard in &shard_dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(shard)
            .map_err(|e| StorageError::io(shard, "list journal directory", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "journal"))
            .collect();
        files.sort();
        for path in files {
            // The CRCs of a file's entries are seeded with the number in its name.
            let Some(no) = file_number(&path) else {
                tracing::warn!(path = %path.display(), "ignoring a journal file whose name is not a journal file number");
                continue;
            };
            let len = std::fs::metadata(&path)
                .map_err(|e| StorageError::io(&path, "stat journal file", e))?
                .len();
            if len > JOURNAL_FILE_BYTES + MAX_ENTRY_LEN as u64 {
                tracing::warn!(path = %path.display(), len, "ignoring a journal file larger than any the broker writes");
                continue;
            }
            let bytes = Bytes::from(
                std::fs::read(&path)
                    .map_err(|e| StorageError::io(&path, "read journal file", e))?,
            );
            report.files += 1;
            let (entries, stop) = decode_file(&bytes, no);
            if let Some(why) = stop {
                tracing::warn!(path = %path.display(), %why, "journal file ends early (a write cut short by the crash, or a recycled file's earlier entries)");
            }
            report.entries += entries.len();
            for e in entries {
                let list = logs.entry(e.id.dir.clone()).or_insert_with(|| {
                    order.push(e.id.dir.clone());
                    Vec::new()
                });
                match e.kind {
                    EntryKind::Batch => list.push(Journaled {
                        id: e.id,
                        base: e.offset,
                        end_before: None,
                        batch: e.payload,
                    }),
                    EntryKind::BatchAfter => match crate::batch::parse_header(&e.payload) {
                        Ok(h) => list.push(Journaled {
                            id: e.id,
                            base: h.base_offset,
                            end_before: Some(e.offset),
                            batch: e.payload,
                        }),
                        // A sound entry (its CRC held) whose payload is no batch: nothing a
                        // broker writes. Its log takes nothing after it.
                        Err(_) => list.push(Journaled {
                            id: e.id,
                            base: i64::MAX,
                            end_before: Some(i64::MAX),
                            batch: Bytes::new(),
                        }),
                    },
                    EntryKind::TruncateTo => {
                        list.retain(|j| last_offset(j.base, &j.batch) < e.offset)
                    }
                    EntryKind::Forget => list.clear(),
                }
            }
        }
    }
    let cache = ReadCache::new(1 << 20);
    for dir_name in order {
        let Some(list) = logs.remove(&dir_name) else {
            continue;
        };
        if list.is_empty() {
            continue;
        }
        let dir = data_dir.join(&dir_name);
        if !dir.is_dir() {
            continue;
        }
        let batches = list.len();
        match apply(&dir, list, cfg.clone(), cache.clone()).await {
            Ok(0) => {}
            Ok(applied) => {
                report.applied += applied;
                report.logs += 1;
            }
            // A log that cannot be opened is damaged: the broker reports it when it opens the
            // partition (KAFKA_STORAGE_ERROR for it alone), and the other logs still get theirs.
            Err(e) => {
                report.failed_logs += 1;
                tracing::error!(dir = %dir.display(), batches, %e, "cannot apply the journal to this log; its journaled batches are lost");
            }
        }
    }
    for shard in &shard_dirs {
        std::fs::remove_dir_all(shard)
            .map_err(|e| StorageError::io(shard, "remove applied journal", e))?;
    }
    crate::file::sync_dir(root).await?;
    if report.applied > 0 {
        tracing::info!(?report, "applied the journal of the previous run");
    }
    Ok(report)
}

/// The number of a journal file named `{no:020}.journal`.
fn file_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A journaled batch of one log, in journal order.
struct Journaled {
    id: Identity,
    base: i64,
    /// Where the log ended when the batch was appended (`None` from an older binary's entry).
    end_before: Option<i64>,
    batch: Bytes,
}

/// The last offset of a batch at `base` (its header's last offset delta), or `base`.
fn last_offset(base: i64, batch: &Bytes) -> i64 {
    crate::batch::parse_header(batch).map_or(base, |h| base + h.last_offset_delta as i64)
}

/// Appends to the log in `dir` the batches it lacks, in order, up to the first one that would
/// follow a hole: a batch appended when the log ended later than it ends now means an entry
/// between was lost (a power cut kept a later write of the journal and not an earlier one).
/// Kafka's recovery likewise keeps a log only up to its first missing or damaged batch.
async fn apply(
    dir: &Path,
    list: Vec<Journaled>,
    cfg: LogConfig,
    cache: Rc<ReadCache>,
) -> Result<usize, StorageError> {
    let log = PartitionLog::open(dir, cfg, cache).await?;
    let mut applied = 0;
    let mut marker_ok: HashMap<(String, Vec<u8>), bool> = HashMap::new();
    for j in list {
        let id = &j.id;
        let ok = *marker_ok
            .entry((id.marker_name.clone(), id.marker.clone()))
            .or_insert_with(|| {
                std::fs::read(dir.join(&id.marker_name)).is_ok_and(|b| b == id.marker)
            });
        let end = log.log_end_offset();
        if !ok || j.base < end {
            continue;
        }
        if j.end_before.is_some_and(|before| before > end) {
            tracing::warn!(dir = %dir.display(), log_end = end, next_batch = j.base, ended_before_it = j.end_before, "the journal lacks this log's batches from its end on (lost to a power cut); the log keeps what it has");
            break;
        }
        let base = j.base;
        match log.append_replicated(j.batch).await {
            Ok(_) => applied += 1,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), base, %e, "journal batch not applied; the log keeps what it has");
                break;
            }
        }
    }
    log.close().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_file_is_numbered_by_its_name_alone() {
        let named = |n: &str| file_number(Path::new(n));
        assert_eq!(named("/j/shard-0/00000000000000000042.journal"), Some(42));
        assert_eq!(named("00000000000000000000.journal"), Some(0));
        assert_eq!(named("18446744073709551615.journal"), Some(u64::MAX));
        for bad in [
            "42.journal",
            "+0000000000000000042.journal",
            "0000000000000000004x.journal",
            "99999999999999999999.journal",
            "recycle.free",
        ] {
            assert_eq!(named(bad), None, "{bad}");
        }
    }
}
