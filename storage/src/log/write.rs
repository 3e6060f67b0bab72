//! The write path: group commit, runs of queued batches, rolls, failed-write rollback.

use super::*;

/// What one fdatasync of the active segment covers (see `prepare_sync_locked`).
pub(super) struct SyncTicket {
    file: Rc<SegFile>,
    /// Every append sequence number below this was written before the ticket was taken.
    target: u64,
    /// The bytes of those appends still counted as unsynced then.
    written_bytes: u64,
}

impl Inner {
    pub(super) async fn wait_for(self: &Rc<Self>, seq: u64) -> Result<(), StorageError> {
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
    pub(super) async fn wait_until(
        self: &Rc<Self>,
        seq: u64,
        durable: bool,
    ) -> Result<(), StorageError> {
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
                // A small round of a journaled log goes to the shard journal (one write for
                // every log of the shard); its segment gets the batches later, in bulk.
                if !durable && self.journal_pending_locked().await? {
                    return Ok(());
                }
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

    pub(super) async fn sync_active_locked(&self) -> Result<(), StorageError> {
        match self.prepare_sync_locked().await? {
            Some(ticket) => self.finish_sync(ticket).await,
            None => Ok(()),
        }
    }

    /// The part of a data sync that needs the I/O lock: the directory entry of a log's first
    /// segment (once, before its first data sync), and what the fdatasync must cover — every
    /// batch written so far. `None` when that is already durable.
    pub(super) async fn prepare_sync_locked(&self) -> Result<Option<SyncTicket>, StorageError> {
        let (file, target, dir_synced, written_bytes) = {
            let st = self.st.borrow();
            if st.durable_seq >= st.written_seq {
                return Ok(None);
            }
            match st.active() {
                Some(s) => (
                    s.file.clone(),
                    st.written_seq,
                    s.dir_synced,
                    st.unsynced_bytes.saturating_sub(st.pending_bytes),
                ),
                None => return Ok(None),
            }
        };
        if !dir_synced {
            // The first data of a new log: its segment's directory entry goes first, so the
            // synced bytes are found after a power loss (see `Segment::dir_synced`).
            file::sync_dir(&self.dir).await?;
            self.fsyncs.set(self.fsyncs.get() + 1);
            if let Some(a) = self.st.borrow_mut().active_mut() {
                a.dir_synced = true;
            }
        }
        Ok(Some(SyncTicket {
            file,
            target,
            written_bytes,
        }))
    }

    /// The fdatasync itself, which needs no lock: it covers what was written before the ticket
    /// was taken, whatever is appended, rolled or truncated meanwhile (a roll syncs the old
    /// segment itself; the ticket's file stays open while it is held).
    pub(super) async fn finish_sync(&self, ticket: SyncTicket) -> Result<(), StorageError> {
        ticket.file.fdatasync().await?;
        self.fsyncs.set(self.fsyncs.get() + 1);
        let mut st = self.st.borrow_mut();
        st.durable_seq = st.durable_seq.max(ticket.target);
        st.unsynced_bytes = st.unsynced_bytes.saturating_sub(ticket.written_bytes);
        Ok(())
    }

    /// Writes every queued batch; on failure, fails and forgets all queued batches so the
    /// log stays exactly what is on disk.
    pub(super) async fn write_pending_locked(&self) -> Result<(), StorageError> {
        self.write_pending_runs(usize::MAX).await
    }

    /// Writes queued batches, at most `max_runs` writes (an appender's turn as flusher is
    /// bounded so its own append is not held up indefinitely under load).
    pub(super) async fn write_pending_runs(&self, max_runs: usize) -> Result<(), StorageError> {
        match self.write_pending_inner(max_runs).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail_pending(&e).await;
                Err(e)
            }
        }
    }

    pub(super) async fn write_pending_inner(&self, max_runs: usize) -> Result<(), StorageError> {
        if !self.st.borrow().pending.is_empty() {
            self.create_deferred_dir_locked().await?;
        }
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
                // Journaled batches were appended before anything queued after them: an age
                // roll that is due comes after them (as it would have had each been written at
                // once), so they go to the current segment and the roll to the rest.
                let journaled = st.journaled_seq;
                let first_journaled = first.seq < journaled;
                let roll = active.meta.size > 0
                    && (active.meta.size + first.bytes.len() as u64 > seg_bytes
                        || (too_old && !first_journaled));
                let mut size = if roll { 0 } else { active.meta.size };
                let mut run_bytes = 0u64;
                let mut items = Vec::new();
                for p in &st.pending {
                    let len = p.bytes.len() as u64;
                    let roll_between = too_old && first_journaled && p.seq >= journaled;
                    if !items.is_empty()
                        && (size + len > seg_bytes || run_bytes + len > MAX_WRITE || roll_between)
                    {
                        break;
                    }
                    items.push(p.clone());
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
    pub(super) async fn roll_locked(&self, new_base: i64) -> Result<(), StorageError> {
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
        let new_seg = create_segment(&self.dir, new_base, &cfg, false).await?;
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
        // The old segment's epochs are read from the checkpoint once it has index files (it is
        // not scanned at open): the checkpoint holds them first. Without it, no index files:
        // the segment is then scanned at open and its epochs found there.
        if self.st.borrow().epochs_dirty {
            if let Err(e) = self.write_checkpoints_locked(false).await {
                tracing::warn!(dir = %self.dir.display(), %e, "leader-epoch checkpoint at a roll failed; the sealed segment will be rescanned at open");
                return Ok(());
            }
        }
        write_index_files(&self.dir, &meta).await;
        Ok(())
    }

    /// Writes one run of queued batches into the active segment in one DMA write, rewriting
    /// the partly filled last page in front of them.
    pub(super) async fn write_run_locked(&self, items: Vec<Pending>) -> Result<(), StorageError> {
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
            let ahead = align_up(end).clamp(MIN_PREALLOC, PREALLOC_CHUNK);
            let want = (align_up(end) + ahead).min(seg_bytes.max(align_up(end)));
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
    pub(super) async fn fail_pending(&self, err: &StorageError) {
        let (file, size) = {
            let mut st = self.st.borrow_mut();
            // Journaled batches were acknowledged: they stay queued for the next write.
            let keep = st.journaled_count();
            let Some(first) = st.pending.get(keep) else {
                return;
            };
            let (first_seq, new_leo, prev_max) = (first.seq, first.base, first.prev_log_max);
            let next_seq = st.next_seq;
            st.failed.push_back((first_seq, next_seq, err.duplicate()));
            while st.failed.len() > MAX_FAILED {
                st.failed.pop_front();
            }
            let dropped: u64 = st.pending.range(keep..).map(|p| p.bytes.len() as u64).sum();
            st.unsynced_bytes = st.unsynced_bytes.saturating_sub(dropped);
            st.pending.truncate(keep);
            st.pending_bytes -= dropped;
            st.leo = new_leo;
            if st.hw > new_leo {
                st.hw = new_leo;
                st.state_dirty = true;
            }
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
}
