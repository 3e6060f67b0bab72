//! Log compaction: the cleaner keeps the latest record of each key, drops tombstones after
//! delete.retention.ms, keeps offsets, shrinks the log, and survives a crash at every step of
//! its segment swap.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chronik_storage::testing::{build_batch_with_timestamps, Record};
use chronik_storage::{
    parse_header, CleanerLimits, CleanupPolicy, CompactionConfig, LogConfig, PartitionLog,
};
use common::*;

const KEYS: usize = 100;
const VERSIONS: usize = 50;
/// Keys k0..k9 get a tombstone as their last version.
const TOMBSTONED: usize = 10;
const TS0: i64 = 1_700_000_000_000;

fn compact_cfg(buffered: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        cleanup: CleanupPolicy {
            delete: false,
            compact: true,
        },
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.01,
            delete_retention_ms: 60_000,
            ..CompactionConfig::default()
        },
        ..cfg(buffered)
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}
fn value(i: usize, v: usize) -> Vec<u8> {
    format!("k{i}-v{v}").into_bytes()
}

/// 100 keys × 50 versions in batches of 10 keys; the last version of k0..k9 is a tombstone.
/// A large keyless batch at the end rolls the log so all keyed data is in sealed segments.
async fn write_versions(log: &PartitionLog) {
    for v in 0..VERSIONS {
        for chunk in 0..KEYS / 10 {
            let keys: Vec<Vec<u8>> = (0..10).map(|j| key(chunk * 10 + j)).collect();
            let vals: Vec<Option<Vec<u8>>> = (0..10)
                .map(|j| {
                    let i = chunk * 10 + j;
                    (!(v == VERSIONS - 1 && i < TOMBSTONED)).then(|| value(i, v))
                })
                .collect();
            let recs: Vec<Record<'_>> = keys
                .iter()
                .zip(&vals)
                .map(|(k, val)| (Some(&k[..]), val.as_deref()))
                .collect();
            let ts = vec![TS0 + v as i64; 10];
            log.append(build_batch_with_timestamps(&recs, &ts), 0)
                .await
                .expect("append");
        }
    }
    roll(log).await;
}

/// A keyless batch larger than a segment's room: it goes to a new active segment.
async fn roll(log: &PartitionLog) {
    let filler = vec![0u8; 4000];
    let recs: Vec<Record<'_>> = vec![(None, Some(&filler[..]))];
    log.append(build_batch_with_timestamps(&recs, &[TS0]), 0)
        .await
        .expect("append filler");
}

/// Every keyed record from `from`, in offset order: (offset, key, value or None).
async fn read_records(log: &PartitionLog, from: i64) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut next = from;
    let leo = log.log_end_offset();
    let mut last_offset = -1;
    while next < leo {
        let batches = log.read(next, 64 << 10, leo).await.expect("read");
        assert!(
            !batches.is_empty(),
            "read at {next} below {leo} found nothing"
        );
        for b in batches {
            let h = chronik_storage::validate_batch(&b).expect("valid batch");
            assert!(h.last_offset() >= next, "batch before the read offset");
            for (off, k, v) in decode(&b, h.base_offset) {
                assert!(off > last_offset, "offsets increase");
                last_offset = off;
                if let Some(k) = k {
                    out.push((off, k, v));
                }
            }
            next = h.last_offset() + 1;
        }
    }
    out
}

fn varint(b: &[u8], p: &mut usize) -> i64 {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let x = b[*p];
        *p += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// (offset, key, value) of each record of an uncompressed batch.
fn decode(b: &[u8], base: i64) -> Vec<(i64, Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut p = 61;
    while p < b.len() {
        let len = varint(b, &mut p) as usize;
        let end = p + len;
        p += 1;
        varint(b, &mut p);
        let od = varint(b, &mut p);
        let kl = varint(b, &mut p);
        let k = (kl >= 0).then(|| {
            let s = String::from_utf8_lossy(&b[p..p + kl as usize]).into_owned();
            p += kl as usize;
            s
        });
        let vl = varint(b, &mut p);
        let v = (vl >= 0).then(|| String::from_utf8_lossy(&b[p..p + vl as usize]).into_owned());
        out.push((base + od, k, v));
        p = end;
    }
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// Checks the log holds exactly one record per key with its latest value, in offset order;
/// tombstones present or not as `tombstones_expected`.
async fn assert_latest_per_key(log: &PartitionLog, tombstones_expected: bool) {
    let recs = read_records(log, log.log_start_offset()).await;
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (_, k, v) in &recs {
        assert!(
            seen.insert(k.clone(), v.clone()).is_none(),
            "key {k} appears twice: {recs:?}"
        );
    }
    for i in 0..KEYS {
        let k = format!("k{i}");
        if i < TOMBSTONED {
            if tombstones_expected {
                assert_eq!(seen.get(&k), Some(&None), "tombstone of {k}");
            } else {
                assert!(!seen.contains_key(&k), "tombstone of {k} should be gone");
            }
        } else {
            let want = format!("k{i}-v{}", VERSIONS - 1);
            assert_eq!(seen.get(&k), Some(&Some(want)), "latest value of {k}");
        }
    }
}

#[test]
fn cleaning_keeps_exactly_the_latest_record_per_key_and_then_drops_tombstones() {
    for buffered in [true, false] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_path_buf();
        run(move || async move {
            let log = open(&dir, compact_cfg(buffered), 1 << 20).await;
            write_versions(&log).await;
            log.flush().await.expect("flush");
            let leo = log.log_end_offset();
            let before = dir_bytes(&dir);
            assert!(
                log.cleanable_ratio(TS0 + 100, i64::MAX).is_some(),
                "log is dirty"
            );
            // Tombstones are younger than delete.retention.ms: they stay.
            let stats = log
                .clean(&CleanerLimits::new(1 << 20, TS0 + 100))
                .await
                .expect("clean")
                .expect("a round ran");
            assert!(stats.records_removed > 0 && stats.segments_rewritten > 0);
            assert_eq!(log.log_end_offset(), leo, "the log end does not move");
            assert_latest_per_key(&log, true).await;
            let after = dir_bytes(&dir);
            assert!(after * 10 < before, "disk use drops: {before} -> {after}");
            log.check_consistency().await.expect("consistent");
            // Nothing new is dirty: no round.
            assert!(log.cleanable_ratio(TS0 + 100, i64::MAX).is_none());

            // New data, and time passes beyond delete.retention.ms: tombstones go.
            let k = key(50);
            let v = value(50, VERSIONS - 1);
            let recs: Vec<Record<'_>> = vec![(Some(&k[..]), Some(&v[..]))];
            log.append(build_batch_with_timestamps(&recs, &[TS0 + 1000]), 0)
                .await
                .expect("append");
            roll(&log).await;
            let later = TS0 + 10 * 60_000;
            log.clean(&CleanerLimits::new(1 << 20, later))
                .await
                .expect("clean")
                .expect("a round ran");
            assert_latest_per_key(&log, false).await;
            log.check_consistency().await.expect("consistent");

            // Reopen (clean close, then an unclean one: index files removed) and re-check.
            log.close().await.expect("close");
            let log = open(&dir, compact_cfg(buffered), 1 << 20).await;
            assert_latest_per_key(&log, false).await;
            drop(log);
            for e in std::fs::read_dir(&dir).expect("list").flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with("index") {
                    std::fs::remove_file(e.path()).expect("remove index");
                }
            }
            let log = open(&dir, compact_cfg(buffered), 1 << 20).await;
            assert_eq!(log.log_end_offset(), leo + 2);
            assert_latest_per_key(&log, false).await;
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        });
    }
}

#[test]
fn a_read_at_a_compacted_offset_returns_the_next_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let log = open(&dir, compact_cfg(true), 1 << 20).await;
        write_versions(&log).await;
        log.clean(&CleanerLimits::new(1 << 20, TS0 + 100))
            .await
            .expect("clean")
            .expect("a round ran");
        // Offset 0 (k0-v0) was removed: a read there starts at the first kept batch.
        let leo = log.log_end_offset();
        let batches = log.read(0, 1 << 20, leo).await.expect("read");
        let h = parse_header(&batches[0]).expect("header");
        assert!(h.base_offset > 0, "the first kept batch is past the gap");
        for o in [1, 37, 1234, 2490] {
            let batches = log.read(o, 1024, leo).await.expect("read");
            let h = parse_header(&batches[0]).expect("header");
            assert!(h.last_offset() >= o);
        }
        log.close().await.expect("close");
    });
}

#[test]
fn a_small_dedupe_buffer_cleans_in_several_rounds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let log = open(&dir, compact_cfg(true), 1 << 20).await;
        write_versions(&log).await;
        // Room for 50 of the 100 keys: the map fills before the dirty part ends.
        let limits = CleanerLimits::new(50 * 40, TS0 + 100);
        let mut rounds = 0;
        while let Some(s) = log.clean(&limits).await.expect("clean") {
            rounds += 1;
            assert!(rounds < 200, "cleaning makes progress: {s:?}");
        }
        assert!(rounds > 1, "the bounded map needed several rounds");
        assert_latest_per_key(&log, true).await;
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}

#[test]
fn a_crash_at_any_step_of_the_swap_loses_nothing_and_duplicates_nothing() {
    for step in 0..=4u8 {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_path_buf();
        run(move || async move {
            let log = open(&dir, compact_cfg(true), 1 << 20).await;
            write_versions(&log).await;
            log.flush().await.expect("flush");
            let leo = log.log_end_offset();
            let before = read_records(&log, 0).await;
            let mut limits = CleanerLimits::new(1 << 20, TS0 + 100);
            limits.crash_after_step = Some(step);
            if step == 0 {
                // A crash while the cleaned file is written leaves a partial `.cleaned` file.
                let name = format!("{:020}.log.cleaned", 0);
                std::fs::write(dir.join(name), b"partial garbage").expect("write");
            } else {
                log.clean(&limits).await.expect("clean").expect("ran");
            }
            // The process dies: no close.
            drop(log);
            let log = open(&dir, compact_cfg(true), 1 << 20).await;
            assert_eq!(log.log_end_offset(), leo, "step {step}: log end kept");
            log.check_consistency().await.expect("consistent");
            let after = read_records(&log, 0).await;
            // Only removals, and every key's latest record is there.
            let mut latest: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
            for (o, k, v) in &before {
                latest.insert(k.clone(), (*o, v.clone()));
            }
            let mut seen = std::collections::HashSet::new();
            for (o, k, v) in &after {
                assert!(seen.insert(*o), "step {step}: offset {o} twice");
                assert!(
                    before
                        .iter()
                        .any(|(bo, bk, bv)| bo == o && bk == k && bv == v),
                    "step {step}: record at {o} was not in the log"
                );
            }
            for (k, (o, _)) in &latest {
                assert!(
                    after.iter().any(|(ao, ak, _)| ao == o && ak == k),
                    "step {step}: latest record of {k} lost"
                );
            }
            assert!(
                !std::fs::read_dir(&dir)
                    .expect("list")
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".log.")),
                "step {step}: no swap leftovers"
            );
            // A full round afterwards still converges.
            log.clean(&CleanerLimits::new(1 << 20, TS0 + 100))
                .await
                .expect("clean");
            assert_latest_per_key(&log, true).await;
            log.close().await.expect("close");
        });
    }
}

#[test]
fn the_first_dirty_offset_survives_a_restart_and_a_damaged_checkpoint_only_costs_a_rescan() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    run(move || async move {
        let ckpt = dir.join("cleaner-offset.checkpoint");
        let log = open(&dir, compact_cfg(true), 1 << 20).await;
        write_versions(&log).await;
        let stats = log
            .clean(&CleanerLimits::new(1 << 20, TS0 + 100))
            .await
            .expect("clean")
            .expect("a round ran");
        assert!(stats.clean_end > 0);
        log.close().await.expect("close");
        assert!(ckpt.exists(), "the checkpoint is written at close");
        let good = std::fs::read(&ckpt).expect("read checkpoint");

        // Reopened, the cleaned part is known clean: nothing to do until new data.
        let log = open(&dir, compact_cfg(true), 1 << 20).await;
        assert!(
            log.cleanable_ratio(TS0 + 100, i64::MAX).is_none(),
            "no rescan"
        );
        log.close().await.expect("close");

        // Damaged, foreign, oversized or out-of-range checkpoints are ignored: one full rescan.
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let short = good[..good.len() - 3].to_vec();
        let huge = vec![7u8; 1 << 20];
        for bad in [flipped, short, huge, b"garbage".to_vec(), Vec::new()] {
            std::fs::write(&ckpt, &bad).expect("write bad checkpoint");
            let log = open(&dir, compact_cfg(true), 1 << 20).await;
            assert!(
                log.cleanable_ratio(TS0 + 100, i64::MAX).is_some(),
                "a bad checkpoint ({} bytes) means a rescan",
                bad.len()
            );
            assert_latest_per_key(&log, true).await;
            log.close().await.expect("close");
        }

        // A truncation below the first dirty offset forgets the checkpoint.
        std::fs::write(&ckpt, &good).expect("restore checkpoint");
        let log = open(&dir, compact_cfg(true), 1 << 20).await;
        assert!(log.cleanable_ratio(TS0 + 100, i64::MAX).is_none());
        log.truncate_to(10).await.expect("truncate");
        assert_ne!(
            std::fs::read(&ckpt).ok(),
            Some(good),
            "the truncation removed or lowered the checkpoint"
        );
        // The offsets written again are dirty: a round maps and cleans them.
        write_versions(&log).await;
        log.close().await.expect("close");
        let log = open(&dir, compact_cfg(true), 1 << 20).await;
        log.clean(&CleanerLimits::new(1 << 20, TS0 + 100))
            .await
            .expect("clean")
            .expect("a round ran");
        assert_latest_per_key(&log, true).await;
        log.close().await.expect("close");
    });
}
