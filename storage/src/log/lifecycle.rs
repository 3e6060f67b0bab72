//! Flushing, the background flusher, checkpoints, close and the consistency check.

use super::checkpoint_pace;
use super::*;

/// Which leader-epoch checkpoint a checkpoint write includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EpochsCheckpoint {
    Forced,
    IfChanged,
    /// Only if `State::epochs_owed` (the background flusher).
    IfOwed,
    Skip,
}

impl Inner {
    pub(super) async fn flush_all(&self) -> Result<(), StorageError> {
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

    pub(super) fn background_period(&self) -> Duration {
        match self.cfg.borrow().flush {
            FlushPolicy::IntervalMs(ms) => Duration::from_millis(ms.max(1)),
            _ => Duration::from_millis(1000),
        }
    }

    pub(super) async fn background_flush(self: &Rc<Self>) -> Result<(), StorageError> {
        let interval = matches!(self.cfg.borrow().flush, FlushPolicy::IntervalMs(_));
        // The high watermark moves with every acknowledged produce; rewriting its checkpoint
        // more often than Kafka's 5 s default would cost an fsync per partition per interval.
        let hw_due = now_ms() - self.last_state_ckpt_ms.get() >= STATE_CHECKPOINT_MS;
        let requested = self.journal_write_requested.get();
        let (queued, unsynced, dirty_ckpt) = {
            let st = self.st.borrow();
            // Journaled batches wait for a larger write, unless the journal wants its file.
            let unjournaled = st.has_unjournaled();
            (
                unjournaled || (requested && !st.pending.is_empty()),
                st.durable_seq < st.written_seq,
                (st.state_dirty && hw_due && checkpoint_pace::take_token())
                    || st.epochs_owed()
                    || st.clean_dirty,
            )
        };
        // Batches queued by appenders whose futures were dropped are written here too.
        let data = queued || (interval && unsynced);
        // A log that so far wrote only to the journal still owes its directory entry a sync.
        let dir_owed = self.journaled_ever.get()
            && self.st.borrow().active().is_some_and(|a| !a.dir_synced)
            && self.deferred.borrow().is_none();
        if !data && !dirty_ckpt && !dir_owed {
            return Ok(());
        }
        let permit = self.lock().await?;
        if self.closed.get() {
            return Ok(());
        }
        if dir_owed {
            file::sync_dir(&self.dir).await?;
            self.fsyncs.set(self.fsyncs.get() + 1);
            if let Some(a) = self.st.borrow_mut().active_mut() {
                a.dir_synced = true;
            }
        }
        let mut ticket = None;
        if data {
            let requested = self.journal_write_requested.replace(false);
            // Decided before the lock: an appender may have journaled the queue meanwhile, or
            // still be about to. Batches that can go to the journal go there (an appender
            // that queued them is waiting for exactly that write); the segment gets them in
            // bulk later, unless the journal wants its file back or cannot take them.
            let journaled = !requested && self.journal_pending_locked().await.unwrap_or(false);
            let res = async {
                if !journaled {
                    self.write_pending_locked().await?;
                }
                self.prepare_sync_locked().await
            }
            .await;
            self.progress.notify_all();
            ticket = res?;
        }
        // The fdatasync runs without the lock: appends to this log go on meanwhile. Held, it
        // stopped them for the whole sync (tens of ms on a busy disk) once a second, which was
        // most of the 3-node acks=all run's p99.9 (issue 24).
        drop(permit);
        if let Some(ticket) = ticket {
            let res = self.finish_sync(ticket).await;
            self.progress.notify_all();
            res?;
        }
        if dirty_ckpt {
            let _permit = self.lock().await?;
            if self.closed.get() {
                return Ok(());
            }
            self.write_checkpoints_with(false, EpochsCheckpoint::IfOwed)
                .await?;
        }
        Ok(())
    }

    /// Writes the log-state and leader-epoch checkpoints if they changed (or `force`).
    pub(super) async fn write_checkpoints_locked(&self, force: bool) -> Result<(), StorageError> {
        let epochs = if force {
            EpochsCheckpoint::Forced
        } else {
            EpochsCheckpoint::IfChanged
        };
        self.write_checkpoints_with(force, epochs).await
    }

    /// `write_checkpoints_locked` with the leader-epoch checkpoint as `epochs` says: the log
    /// state is written if changed or `force`d; the cleaner's if changed, unless epochs are
    /// `Skip`ped (a write that must take as few pages as it can).
    pub(super) async fn write_checkpoints_with(
        &self,
        force: bool,
        epochs: EpochsCheckpoint,
    ) -> Result<(), StorageError> {
        let (state, epochs, cleaner) = {
            let mut st = self.st.borrow_mut();
            let epochs_due = match epochs {
                EpochsCheckpoint::Forced => true,
                EpochsCheckpoint::IfChanged => st.epochs_dirty,
                EpochsCheckpoint::IfOwed => st.epochs_owed(),
                EpochsCheckpoint::Skip => false,
            };
            let skip_cleaner = epochs == EpochsCheckpoint::Skip;
            let state = (force || st.state_dirty).then(|| {
                LogState {
                    log_start_offset: st.log_start,
                    high_watermark: st.hw,
                }
                .encode()
            });
            let epochs = epochs_due.then(|| st.epochs.encode());
            let cleaner = (st.clean_dirty && !skip_cleaner)
                .then(|| crate::checkpoint::encode_first_dirty(st.clean_end));
            st.state_dirty = false;
            st.epochs_dirty &= epochs.is_none();
            st.clean_dirty &= cleaner.is_none();
            (state, epochs, cleaner)
        };
        if state.is_some() || epochs.is_some() || cleaner.is_some() {
            if let Err(e) = self.create_deferred_dir_locked().await {
                let mut st = self.st.borrow_mut();
                st.state_dirty |= state.is_some();
                st.epochs_dirty |= epochs.is_some();
                st.clean_dirty |= cleaner.is_some();
                return Err(e);
            }
        }
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
        if let Some(bytes) = cleaner {
            if let Err(e) = file::write_small_file(&self.dir, CLEANER_FILE, bytes).await {
                self.st.borrow_mut().clean_dirty = true;
                res = res.and(Err(e));
            }
        }
        res
    }

    pub(super) async fn close(&self) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        self.write_pending_locked().await?;
        self.sync_active_locked().await?;
        if self.deferred.borrow().is_some() {
            // Never written to: nothing on disk to finish, and nothing to create now.
            self.closed.set(true);
            self.close_files().await;
            return Ok(());
        }
        let (file, meta) = {
            let st = self.st.borrow();
            let Some(a) = st.active() else { return Ok(()) };
            (a.file.clone(), a.meta.clone())
        };
        // Trim the O_DIRECT padding and preallocation so the index summary matches the size.
        // A segment already at its size (untouched since open) needs neither: with thousands of
        // idle partitions, a shutdown would otherwise spend an fsync on each for nothing.
        if file.size().await? != meta.size {
            file.truncate(meta.size).await?;
            file.fdatasync().await?;
            self.fsyncs.set(self.fsyncs.get() + 1);
        }
        // Rewritten only if changed, or missing (a log created before its first checkpoint).
        // Before the index files: with them the segment is not scanned at open, so its epochs
        // come from the checkpoint.
        let missing = [LOG_STATE_FILE, EPOCH_FILE]
            .iter()
            .any(|name| !self.dir.join(name).exists());
        self.write_checkpoints_locked(missing).await?;
        // An empty segment is rescanned at open for free; its index files would cost two
        // fsyncs each.
        if meta.size > 0 {
            write_index_files(&self.dir, &meta).await;
        }
        self.closed.set(true);
        drop(file);
        self.close_files().await;
        Ok(())
    }

    pub(super) async fn close_files(&self) {
        let segs = std::mem::take(&mut self.st.borrow_mut().segments);
        for (_, s) in segs {
            if let Ok(f) = Rc::try_unwrap(s.file) {
                f.close().await;
            }
        }
    }

    pub(super) async fn check_consistency(&self) -> Result<(), StorageError> {
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
            // A cleaned segment may end in a gap: its batches stop before its end offset.
            if scan.meta.next_offset > meta.next_offset || scan.meta.size != meta.size {
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
