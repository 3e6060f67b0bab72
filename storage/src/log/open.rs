//! Opening segment files: loading or rebuilding their indexes, creating new ones.

use super::*;

/// Opens one existing segment. Returns it with the leader epochs seen while scanning it.
pub(super) async fn load_segment(
    dir: &Path,
    base: i64,
    is_last: bool,
    cfg: &LogConfig,
) -> Result<(Segment, Vec<(i32, i64)>), StorageError> {
    let path = log_path(dir, base);
    let file = Rc::new(SegFile::open(&path, false, cfg.force_buffered_io).await?);
    let file_size = file.size().await?;
    let mut epochs = Vec::new();
    // Blocks reserved past the data (preallocation) count as allocated until trimmed.
    let mut allocated = file_size;
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
                allocated = scan.meta.size;
            }
            if is_last && scan.meta.size > 0 {
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
        allocated,
        dir_synced: true,
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
pub(super) async fn write_index_files(dir: &Path, meta: &SegmentMeta) {
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

/// Creates an empty segment file at `base`, with its directory entry durable unless
/// `defer_dir_sync` (the first segment of a new log: synced before its first data is, see
/// `Segment::dir_synced`). Nothing is reserved yet: the first write reserves in proportion to
/// what it writes (`write.rs`).
pub(super) async fn create_segment(
    dir: &Path,
    base: i64,
    cfg: &LogConfig,
    defer_dir_sync: bool,
) -> Result<Segment, StorageError> {
    let path = log_path(dir, base);
    let file = SegFile::open(&path, true, cfg.force_buffered_io).await?;
    let setup = async {
        // A stale file of that name (from before a truncation) holds nothing we want.
        file.truncate(0).await?;
        if !defer_dir_sync {
            file::sync_dir(dir).await?;
        }
        Ok(0)
    };
    match setup.await {
        Ok(allocated) => Ok(Segment {
            meta: SegmentMeta::new(base),
            file: Rc::new(file),
            created_ms: now_ms(),
            sealed: false,
            tail_page: Vec::new(),
            allocated,
            dir_synced: !defer_dir_sync,
        }),
        Err(e) => {
            let _ = file::remove_if_exists(&path);
            Err(e)
        }
    }
}
