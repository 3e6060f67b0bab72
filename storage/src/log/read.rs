//! The read path: cache, write queue, then aligned reads from segment files; time lookups.

use super::*;

impl Inner {
    pub(super) async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Vec<Bytes>, StorageError> {
        super::pacing::note_foreground();
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
                // A queued batch after a gap (a follower copying a compacted log) answers a
                // read in that gap once the files hold nothing at or after `next`.
                let written_end = st.active().map_or(st.log_start, |a| a.meta.next_offset);
                st.pending
                    .get(i)
                    .filter(|p| p.base <= next || next >= written_end)
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
                // The rest of the segment was compacted away: go on with the next one.
                _ if more => {
                    let st = self.st.borrow();
                    match st.segments.range(next + 1..).next() {
                        Some((&base, _)) => next = base,
                        None => break,
                    }
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
    /// caller may continue (false once `max_bytes` or `limit` is reached). A reader that
    /// continues where the previous disk read stopped is sequential: its next chunk is read
    /// ahead, to be ready when it asks.
    pub(super) async fn read_from_disk(
        &self,
        next: i64,
        limit: i64,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
        total: &mut usize,
    ) -> Result<bool, StorageError> {
        let (file, seg_base, mut pos, seg_end, gen, mut sequential) = {
            let st = self.st.borrow();
            // The segment holding `next`, or (when `next` fell in a gap left by compaction at
            // a segment's end) the next one: a read in a gap returns the batch after it.
            let holding = st
                .segments
                .range(..=next)
                .next_back()
                .map(|(_, s)| s)
                .filter(|s| next < s.meta.next_offset);
            let Some(seg) =
                holding.or_else(|| st.segments.range(next + 1..).map(|(_, s)| s).next())
            else {
                return Ok(false);
            };
            let (pos, sequential) = match st.read_hint {
                Some((o, b, p)) if o == next && b == seg.meta.base_offset => (p, true),
                _ => (
                    seg.meta
                        .index
                        .lookup(seg.meta.rel(next.max(seg.meta.base_offset)))
                        .1 as u64,
                    false,
                ),
            };
            (
                seg.file.clone(),
                seg.meta.base_offset,
                pos,
                seg.meta.size,
                st.read_gen,
                sequential,
            )
        };
        let readahead_len = max_bytes.clamp(MIN_READ, MAX_READAHEAD);
        let mut next = next;
        while pos < seg_end {
            let room = max_bytes.saturating_sub(*total);
            let want = room.max(MIN_READ).min((seg_end - pos) as usize);
            let ahead = match self.take_readahead(seg_base, pos, gen) {
                Some(pending) => pending.await,
                None => None,
            };
            let chunk = match ahead {
                Some(chunk) => {
                    sequential = true;
                    chunk
                }
                None => file.read(pos, want).await?,
            };
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
                if h.last_offset() >= limit || !(out.is_empty() || *total + len <= max_bytes) {
                    let stop = pos + at as u64;
                    self.stopped_at(next, seg_base, stop, gen);
                    if sequential {
                        self.start_readahead(&file, seg_base, stop, seg_end, readahead_len, gen);
                    }
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
            self.stopped_at(next, seg_base, pos, gen);
            if *total >= max_bytes {
                if sequential {
                    self.start_readahead(&file, seg_base, pos, seg_end, readahead_len, gen);
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records where a disk read stopped, unless segments lost data since it began.
    fn stopped_at(&self, next: i64, seg_base: i64, pos: u64, gen: u64) {
        let mut st = self.st.borrow_mut();
        if st.read_gen == gen {
            st.read_hint = Some((next, seg_base, pos));
        }
    }

    /// The read-ahead chunk starting at `pos`, if one was issued there (it may still be in
    /// flight: this waits for it). A failed or cancelled read-ahead yields None, and the
    /// caller reads as usual.
    fn take_readahead(
        &self,
        seg_base: i64,
        pos: u64,
        gen: u64,
    ) -> Option<impl Future<Output = Option<Bytes>>> {
        let ra = {
            let mut st = self.st.borrow_mut();
            match &st.readahead {
                Some(ra) if ra.seg_base == seg_base && ra.pos == pos && st.read_gen == gen => {
                    st.readahead.take()
                }
                _ => None,
            }
        }?;
        Some(async move {
            match ra.task.await {
                Some(Ok(b)) if b.len() >= crate::BATCH_HEADER_LEN => Some(b),
                _ => None,
            }
        })
    }

    /// Starts reading `[pos, pos + len)` (within the segment's written bytes) in the
    /// background, replacing any earlier read-ahead of this log.
    fn start_readahead(
        &self,
        file: &Rc<SegFile>,
        seg_base: i64,
        pos: u64,
        seg_end: u64,
        len: usize,
        gen: u64,
    ) {
        let len = len.min(seg_end.saturating_sub(pos) as usize);
        if len < crate::BATCH_HEADER_LEN {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.read_gen != gen {
            return;
        }
        let file = file.clone();
        let task = glommio::spawn_local(async move { file.read(pos, len).await }).detach();
        if let Some(old) = st.readahead.replace(ReadAhead {
            seg_base,
            pos,
            task,
        }) {
            old.task.cancel();
        }
    }

    pub(super) async fn offset_for_time(
        &self,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
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
}
