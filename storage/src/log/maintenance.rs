//! Truncation, DeleteRecords and retention: everything that removes data.

use super::lifecycle::EpochsCheckpoint;
use super::*;

impl Inner {
    pub(super) async fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        self.truncate_refusing_appends(offset, false).await
    }

    async fn truncate_refusing_appends(
        &self,
        offset: i64,
        afresh: bool,
    ) -> Result<(), StorageError> {
        let _permit = self.lock().await?;
        self.write_pending_locked().await?;
        // Recorded before the files change: a replay must not bring back what this removes.
        let kind = if afresh {
            EntryKind::Forget
        } else {
            EntryKind::TruncateTo
        };
        if afresh || offset < self.st.borrow().leo {
            self.journal_marker_locked(kind, offset).await?;
        }
        // Offsets handed out while the new end is being found would be wrong: refuse appends
        // until done (the broker only truncates a follower, which takes no produce traffic).
        self.truncating.set(true);
        let res = self.truncate_locked(offset, afresh).await;
        self.truncating.set(false);
        self.progress.notify_all();
        res
    }

    /// Empties the log and starts it at `offset`, which may lie beyond its end (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log ends below the leader's log start can
    /// only continue from there.
    pub(super) async fn restart_at(&self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            let st = self.st.borrow();
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: st.log_start,
                log_end: st.leo,
            });
        }
        self.truncate_refusing_appends(offset, true).await
    }

    /// Cuts the log at `offset`; with `afresh`, drops all of it and starts at `offset`.
    pub(super) async fn truncate_locked(
        &self,
        offset: i64,
        afresh: bool,
    ) -> Result<(), StorageError> {
        let (leo, log_start) = {
            let st = self.st.borrow();
            (st.leo, st.log_start)
        };
        if offset >= leo && !afresh {
            return Ok(());
        }
        self.create_deferred_dir_locked().await?;
        let forget_cleaned = {
            let mut st = self.st.borrow_mut();
            st.clean_gen += 1;
            let above = afresh || st.clean_end > offset;
            if above {
                st.clean_end = offset.max(0);
                st.clean_dirty = true;
            }
            above
        };
        if forget_cleaned {
            // Records written at the truncated offsets later are dirty: a crash before the
            // next checkpoint must not find the old first dirty offset.
            file::remove_if_exists(&self.dir.join(CLEANER_FILE))?;
            file::sync_dir(&self.dir).await?;
        }
        let cfg = self.cfg.borrow().clone();
        if afresh || offset <= log_start {
            // Nothing below the log start is readable: start afresh at `offset`. The old files
            // go first, so a crash in between never leaves a new segment below older ones.
            let base = offset.max(0);
            let old: Vec<Segment> = {
                let mut st = self.st.borrow_mut();
                st.forget_read_position();
                std::mem::take(&mut st.segments).into_values().collect()
            };
            for s in &old {
                self.remove_segment_files(s)?;
            }
            drop(old);
            let new_seg = create_segment(&self.dir, base, &cfg, false).await?;
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
            if afresh {
                // No record of the old log is left to be covered by its epochs.
                st.epochs = EpochCache::default();
            } else {
                st.epochs.truncate_from_end(leo);
            }
            st.epochs_dirty = true;
            st.state_dirty = true;
            st.forget_read_position();
            st.written_seq = st.next_seq;
            st.durable_seq = st.next_seq;
            st.unsynced_bytes = 0;
            st.recompute_log_max();
            self.cache.remove_from(self.cache_id, leo);
            if afresh {
                self.cache.remove_below(self.cache_id, leo);
            }
        }
        self.write_checkpoints_locked(true).await
    }

    pub(super) fn remove_segment_files(&self, s: &Segment) -> Result<(), StorageError> {
        file::remove_if_exists(s.path())?;
        file::remove_if_exists(&self.dir.join(index_name(s.meta.base_offset)))?;
        file::remove_if_exists(&self.dir.join(time_index_name(s.meta.base_offset)))
    }

    pub(super) async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let _permit = self.lock().await?;
        // A new log start beyond the segment's end: the queued (journaled) batches below it go
        // to the segment first, or a reopen would clamp the start back to the segment's end
        // and a journal replay would bring the deleted records back.
        let queued_below = self
            .st
            .borrow()
            .pending
            .front()
            .is_some_and(|p| p.base < offset);
        if queued_below {
            self.write_pending_locked().await?;
        }
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
    pub(super) fn delete_segments_below_start(&self) -> Result<usize, StorageError> {
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
                st.forget_read_position();
                st.segments.remove(&first)
            };
            if let Some(s) = seg {
                self.remove_segment_files(&s)?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub(super) async fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let _permit = self.lock().await?;
        let cfg = self.cfg.borrow().clone();
        let new_start = {
            let st = self.st.borrow();
            let mut total: u64 = st.segments.values().map(|s| s.meta.size).sum();
            let mut new_start = st.log_start;
            let segs: Vec<&Segment> = st.segments.values().collect();
            for pair in segs.windows(2) {
                let (s, next) = (pair[0], pair[1]);
                // Pure `compact` topics are bounded by the cleaner, not by age or size.
                let by_time = cfg.cleanup.delete
                    && cfg
                        .retention_ms
                        .is_some_and(|r| s.meta.max_timestamp < now_ms.saturating_sub(r));
                let by_size = cfg.cleanup.delete
                    && cfg
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
        // The new log start is durable before segments go. The epochs follow once they are
        // gone (a stale epoch file only lists epochs below the log start, which open drops), so
        // on a full disk one free page is enough for retention to free space.
        self.write_checkpoints_with(true, EpochsCheckpoint::Skip)
            .await?;
        let n = self.delete_segments_below_start()?;
        self.cache.remove_below(self.cache_id, new_start);
        self.st.borrow_mut().recompute_log_max();
        if let Err(e) = self.write_checkpoints_locked(false).await {
            // Still marked changed: the next background tick, roll or close writes them.
            tracing::warn!(dir = %self.dir.display(), %e, "checkpoints after retention");
        }
        Ok(n)
    }
}
