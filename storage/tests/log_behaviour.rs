//! Behaviour of one partition log: append/read, roll, indexes, retention, truncation, time
//! lookups, the aligned tail rewrite, epochs, checkpoints, on both I/O paths.

mod common;

use std::rc::Rc;

use chronik_storage::{
    parse_header, validate_batch, BatchError, FlushPolicy, LogConfig, ReadCache, StorageError,
};
use common::*;

fn both_paths(f: fn(bool)) {
    f(false);
    f(true);
}

#[test]
fn append_assigns_contiguous_offsets_and_reads_back() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            // Budget 0: every read goes to disk (or the write queue).
            let log = open(dir.path(), cfg(buffered), 0).await;
            assert_eq!(log.is_direct_io(), !buffered);
            let mut expected = Vec::new();
            for i in 0..200u32 {
                let n = 1 + (i as usize % 7);
                let r = log
                    .append(batch(n, i, 1000 + i as i64), 1)
                    .await
                    .expect("append");
                assert_eq!(r.last_offset - r.base_offset + 1, n as i64);
                expected.push((r.base_offset, r.last_offset, i));
            }
            assert_eq!(log.log_end_offset(), expected.last().map_or(0, |e| e.1 + 1));
            for &(base, last, tag) in &expected {
                for o in [base, last, (base + last) / 2] {
                    let got = log.read(o, 1, log.log_end_offset()).await.expect("read");
                    assert_eq!(got.len(), 1, "first batch is returned whole");
                    let h = validate_batch(&got[0]).expect("stored batch valid");
                    assert_eq!((h.base_offset, h.last_offset()), (base, last));
                    let want = format!("tag{tag}-rec0");
                    assert!(got[0].windows(want.len()).any(|w| w == want.as_bytes()));
                }
            }
            let all = read_all(&log).await;
            assert_eq!(all.len(), expected.len());
            // max_bytes bounds the total except for the first batch; max_offset bounds batches.
            let some = log.read(0, 3000, i64::MAX).await.expect("read");
            assert!(some.iter().map(|b| b.len()).sum::<usize>() <= 3000);
            let hw_bound = log.read(0, 1 << 20, expected[5].1).await.expect("read");
            assert_eq!(hw_bound.len(), 5);
            let leo = log.log_end_offset();
            assert!(log
                .read(leo, 100, i64::MAX)
                .await
                .expect("read at LEO")
                .is_empty());
            assert!(matches!(
                log.read(leo + 1, 100, i64::MAX).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        });
    });
}

#[test]
fn reads_are_served_from_the_cache_when_it_has_room() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ReadCache::new(1 << 20);
        let log = open_shared(dir.path(), cfg(false), &cache).await;
        for i in 0..20 {
            log.append(batch(3, i, 0), 0).await.expect("append");
        }
        let (hits0, _) = cache.stats();
        let got = log.read(0, 1 << 20, i64::MAX).await.expect("read");
        assert_eq!(got.len(), 20);
        assert!(cache.stats().0 >= hits0 + 20);
        log.close().await.expect("close");
        assert_eq!(
            cache.used_bytes(),
            0,
            "closing a log releases its cache share"
        );
    });
}

#[test]
fn segments_roll_by_size_and_indexes_survive_reopen() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut c = cfg(buffered);
            c.segment_bytes = 16 << 10;
            c.index_interval_bytes = 512;
            let log = open(dir.path(), c.clone(), 0).await;
            for i in 0..300 {
                log.append(batch(8, i, i as i64), 0).await.expect("append");
            }
            let segs = log.segment_count();
            assert!(segs >= 3, "expected several segments, got {segs}");
            let leo = log.log_end_offset();
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .expect("ls")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().any(|n| n == "00000000000000000000.log"));
            assert!(names.iter().any(|n| n == "00000000000000000000.index"));
            assert!(names.iter().any(|n| n == "00000000000000000000.timeindex"));

            // Clean reopen uses the index files.
            let log = open(dir.path(), c.clone(), 0).await;
            assert_eq!(log.log_end_offset(), leo);
            assert_eq!(log.segment_count(), segs);
            assert_eq!(read_all(&log).await.len(), 300);
            log.check_consistency()
                .await
                .expect("consistent after clean reopen");
            drop(log); // crash-like: no index files for the active segment

            // Missing and damaged index files are rebuilt.
            std::fs::remove_file(dir.path().join("00000000000000000000.index")).expect("rm index");
            let victim = names
                .iter()
                .filter(|n| n.ends_with(".timeindex"))
                .nth(1)
                .expect("a second time index")
                .clone();
            std::fs::write(dir.path().join(&victim), b"garbage").expect("damage");
            let log = open(dir.path(), c, 0).await;
            assert_eq!(log.log_end_offset(), leo);
            log.check_consistency()
                .await
                .expect("consistent after rebuild");
            log.append(batch(1, 999, 5), 0)
                .await
                .expect("append after reopen");
            assert_eq!(read_all(&log).await.len(), 301);
            log.close().await.expect("close");
        });
    });
}

#[test]
fn segment_ms_rolls_old_segments() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(false);
        c.segment_ms = Some(0);
        let log = open(dir.path(), c, 0).await;
        for i in 0..5 {
            log.append(batch(1, i, 0), 0).await.expect("append");
        }
        assert_eq!(
            log.segment_count(),
            5,
            "every write finds the active segment too old"
        );
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}

#[test]
fn retention_deletes_whole_non_active_segments() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(false);
        c.segment_bytes = 8 << 10;
        c.retention_ms = None;
        let log = open(dir.path(), c.clone(), 1 << 20).await;
        for i in 0..200 {
            log.append(batch(4, i, 10_000 + i as i64), 0)
                .await
                .expect("append");
        }
        let segs = log.segment_count();
        let size = log.size_bytes();
        assert_eq!(log.apply_retention(1_000_000).await.expect("noop"), 0);

        // By size: keep at least half of the bytes.
        c.retention_bytes = Some(size / 2);
        log.set_config(c.clone());
        let deleted = log.apply_retention(0).await.expect("retention by bytes");
        assert!(deleted > 0 && deleted < segs);
        assert!(log.size_bytes() >= size / 2);
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.read(start - 1, 100, i64::MAX).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log).await.first().map(|b| b.0), Some(start));

        // By time: everything is old, but the active segment always stays.
        c.retention_bytes = None;
        c.retention_ms = Some(1);
        log.set_config(c.clone());
        log.apply_retention(i64::MAX / 2)
            .await
            .expect("retention by time");
        assert_eq!(log.segment_count(), 1);
        let start = log.log_start_offset();
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
        let log = open(dir.path(), c, 0).await;
        assert_eq!(log.log_start_offset(), start);
        log.close().await.expect("close");
    });
}

#[test]
fn delete_records_advances_log_start_and_survives_reopen() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(false);
        c.segment_bytes = 8 << 10;
        let log = open(dir.path(), c.clone(), 0).await;
        for i in 0..100 {
            log.append(batch(5, i, 0), 0).await.expect("append");
        }
        let segs = log.segment_count();
        let start = log
            .delete_records_before(403)
            .await
            .expect("delete records");
        assert_eq!(start, 403);
        assert!(log.segment_count() < segs);
        // The batch containing the new start is still returned whole.
        let got = log.read(403, 1, i64::MAX).await.expect("read");
        let h = parse_header(&got[0]).expect("header");
        assert!(h.base_offset <= 403 && h.last_offset() >= 403);
        assert!(log
            .delete_records_before(log.log_end_offset() + 1)
            .await
            .is_err());
        assert_eq!(log.delete_records_before(100).await.expect("no-op"), 403);
        drop(log);
        let log = open(dir.path(), c, 0).await;
        assert_eq!(log.log_start_offset(), 403);
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}

#[test]
fn restart_at_beyond_the_end_empties_the_log_and_continues_there_after_a_crash() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut c = cfg(buffered);
            c.segment_bytes = 8 << 10;
            let cache = ReadCache::new(1 << 20);
            let log = open_shared(dir.path(), c.clone(), &cache).await;
            for i in 0..300 {
                log.append(batch(3, i, i as i64), 1).await.expect("append");
            }
            assert!(log.segment_count() > 1);
            assert_eq!(log.log_end_offset(), 900);
            assert!(log.restart_at(-1).await.is_err(), "a negative offset");
            log.restart_at(1500).await.expect("restart at 1500");
            assert_eq!(
                (
                    log.log_start_offset(),
                    log.log_end_offset(),
                    log.high_watermark()
                ),
                (1500, 1500, 1500)
            );
            assert_eq!(log.segment_count(), 1);
            assert_eq!(log.latest_epoch(), None, "no epoch covers an empty log");
            assert!(
                log.read(0, 1 << 20, i64::MAX).await.is_err(),
                "below the start"
            );
            // A follower's next batch keeps the leader's offsets and epoch.
            let mut b = batch(2, 9, 0);
            b[0..8].copy_from_slice(&1500i64.to_be_bytes());
            b[12..16].copy_from_slice(&4i32.to_be_bytes());
            log.append_replicated(b.freeze())
                .await
                .expect("append at 1500");
            assert_eq!(log.log_end_offset(), 1502);
            log.check_consistency().await.expect("consistent");
            // Dropped as a crash leaves it: the log starts at 1500 and holds the two records.
            drop(log);
            let log = open_shared(dir.path(), c.clone(), &cache).await;
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (1500, 1502));
            assert_eq!(log.end_offset_for_epoch(4), Some((4, 1502)));
            let all = read_all(&log).await;
            assert_eq!(
                all.iter().map(|(b, l, _)| (*b, *l)).collect::<Vec<_>>(),
                vec![(1500, 1501)]
            );
            log.close().await.expect("close");
        });
    });
}

#[test]
fn truncate_to_drops_the_tail_and_appends_continue() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut c = cfg(buffered);
            c.segment_bytes = 8 << 10;
            let cache = ReadCache::new(1 << 20);
            let log = open_shared(dir.path(), c.clone(), &cache).await;
            for i in 0..100 {
                let epoch = if i < 50 { 1 } else { 2 };
                log.append(batch(3, i, i as i64), epoch)
                    .await
                    .expect("append");
            }
            assert_eq!(log.end_offset_for_epoch(1), Some((1, 150)));
            // Mid-batch: rounds down to the batch start.
            log.truncate_to(271).await.expect("truncate");
            assert_eq!(log.log_end_offset(), 270);
            assert!(log.read(270, 100, i64::MAX).await.expect("read").is_empty());
            assert_eq!(log.latest_epoch(), Some(2));
            // Below every epoch-2 batch: epoch 2 disappears.
            log.truncate_to(120).await.expect("truncate");
            assert_eq!(log.log_end_offset(), 120);
            assert_eq!(log.latest_epoch(), Some(1));
            assert_eq!(log.end_offset_for_epoch(3), Some((1, 120)));
            log.set_high_watermark(1000);
            assert_eq!(log.high_watermark(), 120);
            let r = log
                .append(batch(2, 500, 0), 3)
                .await
                .expect("append after truncate");
            assert_eq!(r.base_offset, 120);
            let all = read_all(&log).await;
            assert_eq!(all.last().map(|b| b.1), Some(121));
            log.check_consistency().await.expect("consistent");
            drop(log);
            let log = open_shared(dir.path(), c.clone(), &cache).await;
            assert_eq!(log.log_end_offset(), 122);
            assert_eq!(log.end_offset_for_epoch(1), Some((1, 120)));
            assert_eq!(log.end_offset_for_epoch(3), Some((3, 122)));
            // At a segment boundary and below the log start.
            log.truncate_to(0).await.expect("truncate all");
            assert_eq!(log.log_end_offset(), 0);
            assert_eq!(log.segment_count(), 1);
            log.append(batch(1, 1, 0), 4).await.expect("append");
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        });
    });
}

#[test]
fn offset_for_time_finds_the_first_record_at_or_after() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(false);
        c.segment_bytes = 4096;
        c.index_interval_bytes = 256;
        let log = open(dir.path(), c.clone(), 0).await;
        // 100 batches of 5 records: batch i has timestamps 1000 + 10*i + {0, 2, 4, 6, 8}.
        for i in 0..100i64 {
            let ts: Vec<i64> = (0..5).map(|j| 1000 + 10 * i + 2 * j).collect();
            log.append(batch_ts(&ts), 0).await.expect("append");
        }
        for l in [&log] {
            assert_eq!(l.offset_for_time(0).await.expect("q"), Some((0, 1000)));
            assert_eq!(l.offset_for_time(1000).await.expect("q"), Some((0, 1000)));
            assert_eq!(l.offset_for_time(1003).await.expect("q"), Some((2, 1004)));
            assert_eq!(l.offset_for_time(1009).await.expect("q"), Some((5, 1010)));
            assert_eq!(l.offset_for_time(1995).await.expect("q"), Some((498, 1996)));
            assert_eq!(l.offset_for_time(1999).await.expect("q"), None);
            assert_eq!(l.max_timestamp_and_offset(), (1998, 499));
        }
        log.close().await.expect("close");
        let log = open(dir.path(), c, 0).await;
        assert_eq!(
            log.offset_for_time(1503).await.expect("q"),
            Some((252, 1504))
        );
        assert_eq!(log.max_timestamp_and_offset(), (1998, 499));
        log.close().await.expect("close");
    });
}

#[test]
fn tail_page_rewrite_keeps_earlier_bytes() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), cfg(buffered), 0).await;
            let mut expected = Vec::new();
            // Small batches: every write rewrites the partly filled page in front of it,
            // and several writes cross page boundaries.
            for i in 0..120 {
                let r = log.append(batch(1, i, 0), 0).await.expect("append");
                let got = log.read(r.base_offset, 1, i64::MAX).await.expect("read");
                expected.extend_from_slice(&got[0]);
            }
            assert!(expected.len() > 2 * 4096);
            drop(log); // no close: the file still carries its O_DIRECT zero padding
            let raw =
                std::fs::read(dir.path().join("00000000000000000000.log")).expect("read file");
            assert!(raw.len() >= expected.len());
            assert_eq!(
                &raw[..expected.len()],
                &expected[..],
                "file holds exactly the batches in order"
            );
            assert!(raw[expected.len()..].iter().all(|&b| b == 0));
            let log = open(dir.path(), cfg(buffered), 0).await;
            assert_eq!(log.log_end_offset(), 120);
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
            let raw =
                std::fs::read(dir.path().join("00000000000000000000.log")).expect("read file");
            assert_eq!(raw, expected, "close trims the padding");
        });
    });
}

#[test]
fn wait_appended_answers_once_the_original_append_is_written() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), cfg(buffered), 0).await;
            log.append(batch(3, 0, 1000), 0).await.expect("append");
            log.wait_appended(1).await.expect("written batch");
            // Queued, not yet written: a waiter on any of its offsets resolves only after the
            // write (a produce retry must not be acknowledged before the original is).
            let original = log.append(batch(2, 1, 1001), 0);
            assert_eq!(log.written_end_offset(), 3);
            let retry = log.wait_appended(4);
            retry.await.expect("original written");
            assert_eq!(log.written_end_offset(), 5);
            assert_eq!(original.await.expect("append").base_offset, 3);
            // Nothing was appended at the log end: that is a batch the log does not hold.
            let end = log.log_end_offset();
            assert!(matches!(
                log.wait_appended(end).await,
                Err(StorageError::NotWritten { offset }) if offset == end
            ));
        });
    });
}

#[test]
fn epoch_cache_follows_appends_and_persists() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), cfg(false), 0).await;
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(0), None);
        for (i, epoch) in [1, 1, 3, 3, 5].into_iter().enumerate() {
            log.append(batch(10, i as u32, 0), epoch)
                .await
                .expect("append");
        }
        assert_eq!(log.latest_epoch(), Some(5));
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 20)));
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 20)));
        assert_eq!(log.end_offset_for_epoch(4), Some((3, 40)));
        assert_eq!(log.end_offset_for_epoch(5), Some((5, 50)));
        assert_eq!(log.end_offset_for_epoch(0), None);
        let got = log.read(20, 1, i64::MAX).await.expect("read");
        assert_eq!(parse_header(&got[0]).expect("h").partition_leader_epoch, 3);
        log.close().await.expect("close");
        let log = open(dir.path(), cfg(false), 0).await;
        assert_eq!(log.end_offset_for_epoch(4), Some((3, 40)));
        drop(log);
        // Without the checkpoint the epochs are rebuilt from the active segment's batches.
        std::fs::remove_file(dir.path().join("leader-epoch.checkpoint")).expect("rm");
        let log = open(dir.path(), cfg(false), 0).await;
        assert_eq!(log.end_offset_for_epoch(4), Some((3, 40)));
        log.close().await.expect("close");
    });
}

#[test]
fn epochs_survive_a_crash_without_a_checkpoint_and_a_roll_checkpoints_them_before_sealing() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = LogConfig {
            segment_bytes: 4 << 10,
            flush: FlushPolicy::IntervalMs(3_600_000),
            ..cfg(false)
        };
        let log = open(dir.path(), c.clone(), 0).await;
        for (i, epoch) in [1, 1, 3].into_iter().enumerate() {
            log.append(batch(2, i as u32, 0), epoch)
                .await
                .expect("append");
        }
        // One segment: no checkpoint is owed; a crash (drop without close) rebuilds the epochs
        // from the active segment, which open always scans.
        assert!(!dir.path().join("leader-epoch.checkpoint").exists());
        drop(log);
        let log = open(dir.path(), c.clone(), 0).await;
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 4)));
        // Past one segment: the roll writes the checkpoint before the sealed segment gets its
        // index files (after which open reads its epochs from the checkpoint, not its batches).
        let mut i = 3;
        while log.segment_count() < 2 {
            log.append(batch(20, i, 0), 5).await.expect("append");
            i += 1;
        }
        assert!(dir.path().join("leader-epoch.checkpoint").exists());
        drop(log);
        let log = open(dir.path(), c, 0).await;
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 4)));
        assert_eq!(log.end_offset_for_epoch(4), Some((3, 6)));
        assert_eq!(log.latest_epoch(), Some(5));
        log.close().await.expect("close");
    });
}

#[test]
fn concurrent_always_appends_share_fdatasyncs() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Rc::new(open(dir.path(), cfg(false), 0).await);
        let before = log.fsync_count();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                log.append(batch(2, i, 0), 0).await.expect("append")
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        let syncs = log.fsync_count() - before;
        assert!(syncs < 16, "64 concurrent appends took {syncs} fdatasyncs");
        results.sort_by_key(|r| r.base_offset);
        for w in results.windows(2) {
            assert_eq!(w[0].last_offset + 1, w[1].base_offset);
        }
        let log = Rc::try_unwrap(log).ok().expect("sole owner");
        log.close().await.expect("close");
    });
}

#[test]
fn offsets_are_assigned_in_call_order() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), cfg(false), 0).await;
        let f1 = log.append(batch(3, 1, 0), 0);
        let f2 = log.append(batch(3, 2, 0), 0);
        // Polled in reverse order, still numbered in call order.
        let r2 = f2.await.expect("append");
        let r1 = f1.await.expect("append");
        assert_eq!((r1.base_offset, r2.base_offset), (0, 3));
        log.close().await.expect("close");
    });
}

#[test]
fn the_written_end_trails_the_log_end_until_the_write_completes() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), cfg(buffered), 0).await;
            log.append(batch(2, 0, 0), 0).await.expect("append");
            assert_eq!((log.written_end_offset(), log.log_end_offset()), (2, 2));
            let f1 = log.append(batch(3, 1, 0), 0);
            let f2 = log.append(batch(4, 2, 0), 0);
            // Queued (offsets assigned, readable from the cache) but not yet written.
            assert_eq!((log.written_end_offset(), log.log_end_offset()), (2, 9));
            f1.await.expect("append");
            f2.await.expect("append");
            assert_eq!((log.written_end_offset(), log.log_end_offset()), (9, 9));
            log.close().await.expect("close");
        });
    });
}

#[test]
fn replicated_appends_keep_offsets_and_epochs() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let leader = open(leader_dir.path(), cfg(false), 0).await;
        let follower = open(dir.path(), cfg(false), 0).await;
        for i in 0..10 {
            leader.append(batch(2, i, 0), 7).await.expect("append");
        }
        let batches = leader.read(0, 1 << 20, i64::MAX).await.expect("read");
        let mut it = batches.into_iter();
        let first = it.next().expect("batch");
        let second = it.next().expect("batch");
        follower
            .append_replicated(bytes::BytesMut::from(&first[..]))
            .await
            .expect("replicate");
        // A batch behind the log end is refused (a gap ahead is not: compacted leaders
        // have them, see tests/compaction.rs).
        assert!(matches!(
            follower
                .append_replicated(bytes::BytesMut::from(&first[..]))
                .await,
            Err(StorageError::NonContiguous {
                expected: 2,
                got: 0
            })
        ));
        follower
            .append_replicated(bytes::BytesMut::from(&second[..]))
            .await
            .expect("replicate");
        for b in it {
            follower
                .append_replicated(bytes::BytesMut::from(&b[..]))
                .await
                .expect("replicate");
        }
        assert_eq!(follower.log_end_offset(), 20);
        assert_eq!(follower.end_offset_for_epoch(7), Some((7, 20)));
        leader.close().await.expect("close");
        follower.close().await.expect("close");
    });
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), cfg(false), 0).await;
        let mut bad = batch(3, 0, 0);
        let n = bad.len();
        bad[n - 1] ^= 0x55;
        assert!(matches!(
            log.append(bad, 0).await,
            Err(StorageError::InvalidBatch(BatchError::CrcMismatch))
        ));
        let mut short = batch(3, 0, 0);
        short.truncate(30);
        assert!(matches!(
            log.append(short, 0).await,
            Err(StorageError::InvalidBatch(BatchError::TooShort))
        ));
        assert_eq!(log.log_end_offset(), 0);
        log.append(batch(1, 0, 0), 0).await.expect("good append");
        log.close().await.expect("close");
    });
}

#[test]
fn high_watermark_is_clamped_and_checkpointed() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), cfg(false), 0).await;
        for i in 0..10 {
            log.append(batch(1, i, 0), 0).await.expect("append");
        }
        log.set_high_watermark(100);
        assert_eq!(log.high_watermark(), 10);
        log.set_high_watermark(7);
        log.flush().await.expect("flush");
        drop(log);
        let log = open(dir.path(), cfg(false), 0).await;
        assert_eq!(log.high_watermark(), 7);
        log.close().await.expect("close");
    });
}

#[test]
fn the_background_flusher_checkpoints_the_high_watermark_and_a_delete_between_its_ticks_leaves_no_directory(
) {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("topic-0");
        let c = LogConfig {
            flush: FlushPolicy::IntervalMs(5),
            ..cfg(false)
        };
        let log = open(&path, c.clone(), 0).await;
        for i in 0..10 {
            log.append(batch(1, i, 0), 0).await.expect("append");
        }
        log.set_high_watermark(10);
        // The background flusher writes the checkpoints while appends go on; what it wrote
        // is what a crash (a drop without close) recovers.
        let mut next = 10;
        for _ in 0..1000 {
            if path.join("log-state.checkpoint").exists() {
                break;
            }
            log.append(batch(1, next, 0), 0).await.expect("append");
            next += 1;
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(path.join("log-state.checkpoint").exists());
        drop(log);
        let log = open(&path, c.clone(), 0).await;
        assert_eq!(log.log_end_offset(), i64::from(next));
        assert!(
            log.high_watermark() >= 10,
            "recovered {}",
            log.high_watermark()
        );
        // A delete during background checkpoints leaves no directory behind.
        for i in 0..20 {
            log.append(batch(1, next + i, 0), 0).await.expect("append");
            log.set_high_watermark(i64::from(next + i + 1));
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        log.delete().await.expect("delete");
        assert!(!path.exists());
    });
}

#[test]
fn interval_and_bytes_policies_resolve_after_the_write() {
    for policy in [FlushPolicy::IntervalMs(20), FlushPolicy::Bytes(2_000)] {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let c = LogConfig {
                flush: policy,
                ..cfg(false)
            };
            let log = open(dir.path(), c.clone(), 0).await;
            for i in 0..50 {
                log.append(batch(5, i, 0), 0).await.expect("append");
            }
            if let FlushPolicy::Bytes(_) = policy {
                assert!(log.fsync_count() > 0, "size-triggered fdatasync");
            } else {
                // The background flusher syncs within its interval.
                for _ in 0..500 {
                    if log.fsync_count() > 0 {
                        break;
                    }
                    glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                }
                assert!(log.fsync_count() > 0, "interval fdatasync happened");
            }
            drop(log);
            let log = open(dir.path(), c, 0).await;
            assert_eq!(log.log_end_offset(), 250);
            log.close().await.expect("close");
        });
    }
}

#[test]
fn delete_removes_the_directory() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("topic-0");
        let log = open(&path, cfg(false), 0).await;
        log.append(batch(1, 0, 0), 0).await.expect("append");
        log.delete().await.expect("delete");
        assert!(!path.exists());
    });
}

#[test]
fn tmpfs_o_direct_support_is_reported() {
    // Linux >= 6.6 accepts O_DIRECT on tmpfs, so tmpfs no longer exercises the fallback on
    // its own; `force_buffered_io` does (see the both-paths tests). This records what we saw.
    run(|| async {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            println!("no /dev/shm here; skipping");
            return;
        };
        let log = open(dir.path(), cfg(false), 0).await;
        println!("tmpfs segment uses O_DIRECT path: {}", log.is_direct_io());
        log.append(batch(1, 0, 0), 0)
            .await
            .expect("append on tmpfs");
        log.close().await.expect("close");
    });
}

#[test]
fn steady_concurrent_appenders_group_their_fdatasyncs() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Rc::new(open(dir.path(), cfg(false), 0).await);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                for j in 0..25 {
                    log.append(batch(2, i * 100 + j, 0), 0)
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let syncs = log.fsync_count();
        println!("8 appenders x 25 appends: {syncs} fdatasyncs");
        assert!(
            syncs < 100,
            "200 appends from 8 appenders took {syncs} fdatasyncs"
        );
        let log = Rc::try_unwrap(log).ok().expect("sole owner");
        log.close().await.expect("close");
    });
}

#[test]
fn a_dropped_append_future_still_lands_in_the_log() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), cfg(false), 0).await;
        log.append(batch(2, 0, 0), 0).await.expect("append");
        // Offsets are assigned at the call; a caller that gives up does not un-assign them.
        drop(log.append(batch(3, 1, 0), 0));
        assert_eq!(log.log_end_offset(), 5);
        assert_eq!(log.read(2, 1, i64::MAX).await.expect("read").len(), 1);
        log.close().await.expect("close");
        let log = open(dir.path(), cfg(false), 0).await;
        assert_eq!(log.log_end_offset(), 5);
        log.close().await.expect("close");
    });
}

#[test]
fn reads_mix_cache_and_disk_when_the_cache_holds_only_recent_batches() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = batch(4, 0, 0).len();
        // Room for about five batches: older ones come from disk, the newest from the cache.
        let cache = ReadCache::new(5 * one + one / 2);
        let mut c = cfg(false);
        c.segment_bytes = 4 << 10;
        let log = open_shared(dir.path(), c, &cache).await;
        for i in 0..60 {
            log.append(batch(4, i, 0), 0).await.expect("append");
        }
        let all = read_all(&log).await;
        assert_eq!(all.len(), 60);
        for (i, (_, _, b)) in all.iter().enumerate() {
            let want = format!("tag{i}-rec3");
            assert!(
                b.windows(want.len()).any(|w| w == want.as_bytes()),
                "batch {i} content"
            );
        }
        let (hits, misses) = cache.stats();
        assert!(misses > 0, "old batches came from disk");
        // The newest batches are served from the cache.
        let recent = all[57].0;
        let got = log
            .read(recent, 1 << 20, i64::MAX)
            .await
            .expect("read recent");
        assert_eq!(got.len(), 3);
        assert!(cache.stats().0 >= hits + 3);
        log.close().await.expect("close");
    });
}

/// A reader walking old data in small steps gets its next chunk read ahead; what it reads
/// must still be exactly what was appended, and after a truncation and new appends at the same
/// offsets (and file positions) it must see the new batches, never the read-ahead old bytes.
#[test]
fn sequential_disk_reads_match_appends_and_never_outlive_a_truncation() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut c = cfg(buffered);
            c.segment_bytes = 4 << 20;
            c.flush = FlushPolicy::IntervalMs(1000);
            // Every batch indexed: after the truncation a lookup lands exactly where the
            // read-ahead was issued.
            c.index_interval_bytes = 1;
            // No cache: every read goes to the segment file.
            let log = open(dir.path(), c, 0).await;
            let mut sent = Vec::new();
            for i in 0..300u32 {
                let b = batch(4, i, i64::from(i));
                sent.push(b[16..].to_vec());
                log.append(b, 1).await.expect("append");
            }
            // Small steps: each read is sequential to the previous one. The limit (as a high
            // watermark would) makes the reader stop exactly at offset 600.
            let mut next = 0;
            let mut seen = 0usize;
            while next < 600 {
                let got = log.read(next, 2 << 10, 600).await.expect("read");
                assert!(!got.is_empty(), "read at {next} returned nothing");
                for b in &got {
                    let h = parse_header(b).expect("header");
                    assert_eq!(h.base_offset, next);
                    assert_eq!(&b[16..], &sent[seen][..], "batch {seen} differs");
                    next = h.last_offset() + 1;
                    seen += 1;
                }
            }
            // The reader's next position (600) had a read-ahead issued; replace the data there.
            log.truncate_to(600).await.expect("truncate");
            for i in 0..10u32 {
                log.append(batch(7, 1000 + i, 0), 2).await.expect("append");
            }
            let got = log
                .read(600, 2 << 10, log.log_end_offset())
                .await
                .expect("read");
            let fresh = batch(7, 1000, 0);
            assert_eq!(
                &got[0][16..],
                &fresh[16..],
                "read-ahead served truncated bytes"
            );
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        });
    });
}

/// Bytes of disk the files under `dir` occupy (allocated blocks, not their lengths).
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let md = e.metadata().expect("metadata");
        total += if md.is_dir() {
            disk_usage(&e.path())
        } else {
            md.blocks() * 512
        };
    }
    total
}

#[test]
fn disk_is_reserved_in_proportion_to_what_a_partition_holds() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let cfg = LogConfig {
                segment_bytes: 1 << 30,
                ..cfg(buffered)
            };
            let log = open(dir.path(), cfg, 0).await;
            let empty = disk_usage(dir.path());
            assert!(
                empty <= 64 << 10,
                "an empty partition occupies {empty} bytes"
            );
            log.append(batch(1, 0, 0), 1).await.expect("append");
            let small = disk_usage(dir.path());
            assert!(small <= 1 << 20, "one small batch occupies {small} bytes");
            // ~4 MiB of data: the reservation ahead is at most what is already written.
            let mut written = 0u64;
            let mut i = 0;
            while written < 4 << 20 {
                let b = batch(500, i, 0);
                written += b.len() as u64;
                log.append(b, 1).await.expect("append");
                i += 1;
            }
            let busy = disk_usage(dir.path());
            assert!(
                busy <= 2 * written + (1 << 20),
                "{written} bytes of data occupy {busy} bytes"
            );
            log.close().await.expect("close");
        });
    });
}

/// Modification times of the partition's files, to see what a close rewrote.
fn file_times(dir: &std::path::Path) -> Vec<(String, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| {
            let e = e.expect("entry");
            let t = e.metadata().expect("stat").modified().expect("mtime");
            (e.file_name().to_string_lossy().into_owned(), t)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn closing_a_log_untouched_since_open_rewrites_nothing_and_reopens_the_same() {
    both_paths(|buffered| {
        run(move || async move {
            let dir = tempfile::tempdir().expect("tempdir");
            // An empty log: closed, reopened and closed again without a single write.
            let log = open(dir.path(), cfg(buffered), 0).await;
            log.close().await.expect("close");
            let empty = file_times(dir.path());
            std::thread::sleep(std::time::Duration::from_millis(20));
            let log = open(dir.path(), cfg(buffered), 0).await;
            assert_eq!(log.log_end_offset(), 0);
            log.close().await.expect("close");
            assert_eq!(
                file_times(dir.path()),
                empty,
                "an idle empty log is not rewritten"
            );

            // With data: the checkpoints of an untouched log stay as they were.
            let log = open(dir.path(), cfg(buffered), 0).await;
            for i in 0..20 {
                log.append(batch(2, i, 0), 0).await.expect("append");
            }
            log.set_high_watermark(30);
            log.close().await.expect("close");
            let before = file_times(dir.path());
            std::thread::sleep(std::time::Duration::from_millis(20));
            let log = open(dir.path(), cfg(buffered), 0).await;
            log.close().await.expect("close");
            let after = file_times(dir.path());
            for name in ["log-state.checkpoint", "leader-epoch.checkpoint"] {
                let find = |v: &Vec<(String, std::time::SystemTime)>| {
                    v.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
                };
                assert!(find(&before).is_some(), "{name} written by the first close");
                assert_eq!(find(&before), find(&after), "{name} not rewritten");
            }
            let log = open(dir.path(), cfg(buffered), 0).await;
            assert_eq!(log.log_end_offset(), 40);
            assert_eq!(log.high_watermark(), 30);
            assert_eq!(read_all(&log).await.len(), 20);
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        });
    });
}

#[test]
fn a_new_log_costs_no_fsync_until_its_first_record_and_keeps_that_record() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        // A short interval so the background flusher runs many times while the log is idle.
        let interval = LogConfig {
            flush: FlushPolicy::IntervalMs(5),
            ..cfg(false)
        };
        let log = open(dir.path(), interval.clone(), 0).await;
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(log.fsync_count(), 0, "an idle new log synced something");
        assert!(
            !dir.path().join("log-state.checkpoint").exists(),
            "an empty log wrote a checkpoint that says what its absence says"
        );
        log.close().await.expect("close");
        // The first record of a new log syncs the segment's directory entry with its bytes.
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), cfg(false), 0).await;
        log.append(batch(3, 7, 0), 0).await.expect("append");
        assert_eq!(log.fsync_count(), 2, "directory and data synced");
        log.close().await.expect("close");
        let log = open(dir.path(), cfg(false), 0).await;
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(read_all(&log).await.len(), 1);
        log.close().await.expect("close");
    });
}
