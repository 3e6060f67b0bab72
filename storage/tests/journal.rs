//! The shard journal: small appends of many logs share its writes, are acknowledged from it,
//! reach their segments later, and a crash is repaired by replaying it before the logs open.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use chronik_storage::journal::JOURNAL_MAX_FILES;
use chronik_storage::{
    parse_header, replay_journals, DirMarker, FlushPolicy, Journal, LogConfig, PartitionLog,
    ReadCache,
};
use common::*;

fn jcfg(interval_ms: u64) -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        flush: FlushPolicy::IntervalMs(interval_ms),
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

fn marker(topic_id: u8) -> DirMarker {
    DirMarker {
        name: "partition.metadata".into(),
        bytes: vec![topic_id; 16],
    }
}

struct Paths {
    _root: tempfile::TempDir,
    data: PathBuf,
    journals: PathBuf,
}

fn paths() -> Paths {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let journals = data.join(".journal");
    Paths {
        data,
        journals,
        _root: root,
    }
}

async fn open_journaled(
    data: &Path,
    name: &str,
    topic_id: u8,
    cfg: LogConfig,
    cache: &Rc<ReadCache>,
    journal: &Rc<Journal>,
) -> PartitionLog {
    let m = marker(topic_id);
    let log = PartitionLog::open_or_defer(data.join(name), cfg, cache.clone(), m.clone())
        .await
        .expect("open_or_defer");
    log.use_journal(journal.clone(), &m);
    log
}

/// Every record value of the log, in offset order, with its batch's base offset and epoch.
async fn contents(log: &PartitionLog) -> Vec<(i64, i32, Vec<u8>)> {
    let mut out = Vec::new();
    let end = log.log_end_offset();
    let mut at = log.log_start_offset();
    while at < end {
        let batches = log.read(at, 1 << 20, end).await.expect("read");
        assert!(!batches.is_empty(), "read at {at} below the end {end}");
        for b in batches {
            let h = parse_header(&b).expect("header");
            for v in values(&b) {
                out.push((h.base_offset, h.partition_leader_epoch, v));
            }
            at = h.base_offset + h.last_offset_delta as i64 + 1;
        }
    }
    out
}

#[test]
fn small_appends_of_many_logs_share_journal_writes_and_reach_their_segments_at_close() {
    run(|| async {
        let p = paths();
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::new(p.journals.join("shard-0"), Duration::from_millis(1000));
        let mut logs = Vec::new();
        for i in 0..24 {
            logs.push(
                open_journaled(&p.data, &format!("t-{i}"), 1, jcfg(1000), &cache, &journal).await,
            );
        }
        for round in 0..5u32 {
            let acks = join_all(
                logs.iter()
                    .enumerate()
                    .map(|(i, l)| l.append(batch(1, round * 100 + i as u32, 1000), 3)),
            )
            .await;
            for a in acks {
                assert_eq!(a.expect("append").base_offset, round as i64);
            }
        }
        let journal_writes = journal.write_count();
        assert!(
            journal_writes <= 10,
            "120 appends of 24 logs took {journal_writes} journal writes"
        );
        for l in &logs {
            assert_eq!(l.write_count(), 0, "no segment write yet");
            assert_eq!(l.written_end_offset(), 5, "journaled counts as written");
            assert_eq!(contents(l).await.len(), 5);
        }
        assert_eq!(journal.file_count(), 1);
        for l in logs {
            l.close().await.expect("close");
        }
        journal.close().await;
        assert_eq!(
            journal.file_count(),
            0,
            "every file released after the logs closed"
        );
        for i in 0..24u32 {
            let log = PartitionLog::open(p.data.join(format!("t-{i}")), jcfg(1000), cache.clone())
                .await
                .expect("reopen");
            let got = contents(&log).await;
            let want: Vec<(i64, i32, Vec<u8>)> = (0..5u32)
                .map(|r| (r as i64, 3, format!("tag{}-rec0", r * 100 + i).into_bytes()))
                .collect();
            assert_eq!(got, want);
            log.check_consistency().await.expect("consistent");
        }
        let report = replay_journals(&p.journals, &p.data, jcfg(1000))
            .await
            .expect("replay");
        assert_eq!(
            report.applied, 0,
            "nothing left to apply after a clean close"
        );
    });
}

/// Runs `f` with a cache and a shard journal on its own executor and lets that executor end
/// without closing anything: what the disk holds afterwards is what a process kill at that
/// moment leaves.
fn crash_after<F, Fut>(p: &Paths, f: F)
where
    F: FnOnce(PathBuf, Rc<ReadCache>, Rc<Journal>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (data, journals) = (p.data.clone(), p.journals.clone());
    run(move || async move {
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::new(journals.join("shard-0"), Duration::from_millis(1000));
        f(data, cache, journal).await
    })
}

/// Replays the journals as the broker's start does (on a fresh executor), then returns what
/// log `name` holds.
fn replayed(p: &Paths, name: &'static str) -> Vec<(i64, i32, Vec<u8>)> {
    let (data, journals) = (p.data.clone(), p.journals.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        replay_journals(&journals, &data, jcfg(1000))
            .await
            .expect("replay");
        let log = PartitionLog::open(data.join(name), jcfg(1000), ReadCache::new(1 << 20))
            .await
            .expect("reopen");
        tx.send(contents(&log).await).expect("send");
    });
    rx.recv().expect("contents")
}

#[test]
fn a_crash_loses_no_journaled_append_once_the_journal_is_replayed() {
    let p = paths();
    let (data, journals) = (p.data.clone(), p.journals.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    crash_after(&p, move |d, cache, journal| async move {
        let mut logs = Vec::new();
        for i in 0..10 {
            logs.push(open_journaled(&d, &format!("c-{i}"), 2, jcfg(1000), &cache, &journal).await);
        }
        let mut done = Vec::new();
        for round in 0..7u32 {
            let acks = join_all(
                logs.iter()
                    .enumerate()
                    .map(|(i, l)| l.append(batch(1 + i % 3, round * 10 + i as u32, 1000), 5)),
            )
            .await;
            for (i, a) in acks.into_iter().enumerate() {
                let a = a.expect("append");
                done.push((i, a.base_offset, a.last_offset));
            }
        }
        for l in &logs {
            assert_eq!(l.write_count(), 0, "everything is only in the journal");
        }
        tx.send(done).expect("send");
        std::mem::forget(logs);
    });
    let done = rx.recv().expect("acked");
    assert!(
        journals
            .join("shard-0")
            .read_dir()
            .expect("journal")
            .count()
            > 0
    );
    run(move || async move {
        let report = replay_journals(&journals, &data, jcfg(1000))
            .await
            .expect("replay");
        assert_eq!(report.logs, 10, "{report:?}");
        assert_eq!(report.applied, 70, "{report:?}");
        assert!(
            !journals.join("shard-0").exists(),
            "an applied journal is removed"
        );
        let cache = ReadCache::new(8 << 20);
        for i in 0..10usize {
            let log = PartitionLog::open(data.join(format!("c-{i}")), jcfg(1000), cache.clone())
                .await
                .expect("reopen");
            let got = contents(&log).await;
            let mut want = Vec::new();
            for &(li, base, last) in done.iter().filter(|d| d.0 == i) {
                let round = (want.len() as i64 / (1 + i as i64 % 3)) as u32;
                for r in 0..=(last - base) {
                    want.push((
                        base,
                        5,
                        format!("tag{}-rec{r}", round * 10 + li as u32).into_bytes(),
                    ));
                }
            }
            assert_eq!(got, want, "log c-{i}");
            log.check_consistency().await.expect("consistent");
        }
    });
}

#[test]
fn a_truncation_recorded_in_the_journal_keeps_a_replay_from_restoring_what_it_cut() {
    let p = paths();
    crash_after(&p, |data, cache, journal| async move {
        let log = open_journaled(&data, "f-0", 3, jcfg(1000), &cache, &journal).await;
        for r in 0..5u32 {
            log.append(batch(1, r, 1000), 1).await.expect("append");
        }
        // A follower's divergent tail: cut at 2, then the new leader's records there.
        log.truncate_to(2).await.expect("truncate");
        for r in 0..2u32 {
            log.append(batch(1, 50 + r, 1000), 2).await.expect("append");
        }
        // Journaled again after the cut: the segment holds only offsets 0 and 1.
        assert_eq!(log.written_end_offset(), 4);
        std::mem::forget(log);
    });
    assert_eq!(
        replayed(&p, "f-0"),
        vec![
            (0, 1, b"tag0-rec0".to_vec()),
            (1, 1, b"tag1-rec0".to_vec()),
            (2, 2, b"tag50-rec0".to_vec()),
            (3, 2, b"tag51-rec0".to_vec()),
        ]
    );
}

#[test]
fn a_replay_stops_a_log_at_a_hole_in_its_journaled_batches_instead_of_appending_past_it() {
    let p = paths();
    crash_after(&p, |data, cache, journal| async move {
        let log = open_journaled(&data, "h-0", 6, jcfg(1000), &cache, &journal).await;
        log.append(batch(1, 0, 1000), 1).await.expect("append");
        assert_eq!(log.write_count(), 0, "offset 0 is only in the journal");
        // A round too large for the journal goes to the segment, with offset 0 before it.
        let big = log.append(batch(6000, 1, 1000), 1).await.expect("append");
        assert_eq!((big.base_offset, big.last_offset), (1, 6000));
        assert!(
            log.write_count() > 0,
            "the large round was written to the segment"
        );
        let after = log.append(batch(1, 2, 1000), 1).await.expect("append");
        assert_eq!(after.base_offset, 6001);
        std::mem::forget(log);
    });
    // A power cut loses the segment's write (never synced) and keeps the journal's entries of
    // offsets 0 and 6001: the log is recovered with offset 0 only, not 0 and then 6001.
    for f in std::fs::read_dir(p.data.join("h-0")).expect("log dir") {
        let f = f.expect("entry").path();
        if f.extension().is_some_and(|x| x == "log") {
            let len = std::fs::metadata(&f).expect("stat").len();
            std::fs::write(&f, vec![0u8; len as usize]).expect("zero the segment");
        }
    }
    assert_eq!(replayed(&p, "h-0"), vec![(0, 1, b"tag0-rec0".to_vec())]);
}

#[test]
fn a_replay_keeps_the_gaps_a_follower_copied_from_a_compacted_leader() {
    let p = paths();
    crash_after(&p, |data, cache, journal| async move {
        let log = open_journaled(&data, "k-0", 7, jcfg(1000), &cache, &journal).await;
        for (base, tag) in [(0i64, 0u32), (10, 1), (25, 2)] {
            let mut b = batch(2, tag, 1000);
            b[0..8].copy_from_slice(&base.to_be_bytes());
            b[12..16].copy_from_slice(&3i32.to_be_bytes());
            log.append_replicated(b.freeze()).await.expect("append");
        }
        assert_eq!(log.write_count(), 0, "all in the journal");
        assert_eq!(log.log_end_offset(), 27);
        std::mem::forget(log);
    });
    let got: Vec<i64> = replayed(&p, "k-0").iter().map(|r| r.0).collect();
    assert_eq!(got, vec![0, 0, 10, 10, 25, 25]);
}

#[test]
fn a_log_deleted_and_created_again_under_its_name_takes_none_of_the_old_entries() {
    for same_topic in [true, false] {
        let p = paths();
        crash_after(&p, move |data, cache, journal| async move {
            let old = open_journaled(&data, "g-0", 4, jcfg(1000), &cache, &journal).await;
            for r in 0..3u32 {
                old.append(batch(1, r, 1000), 1).await.expect("append");
            }
            old.delete().await.expect("delete");
            let id = if same_topic { 4 } else { 5 };
            let new = open_journaled(&data, "g-0", id, jcfg(1000), &cache, &journal).await;
            new.append(batch(1, 90, 1000), 1).await.expect("append");
            std::mem::forget(new);
        });
        assert_eq!(
            replayed(&p, "g-0"),
            vec![(0, 1, b"tag90-rec0".to_vec())],
            "same topic id: {same_topic}"
        );
    }
}

#[test]
fn a_log_that_cannot_be_opened_does_not_keep_the_others_from_their_journaled_batches() {
    let p = paths();
    crash_after(&p, |data, cache, journal| async move {
        for name in ["bad-0", "ok-0"] {
            let log = open_journaled(&data, name, 8, jcfg(1000), &cache, &journal).await;
            log.append(batch(1, 1, 1000), 1).await.expect("append");
            std::mem::forget(log);
        }
    });
    // The damaged log's segment is not a file any more: it cannot be opened.
    let seg = p.data.join("bad-0").join(format!("{:020}.log", 0));
    std::fs::remove_file(&seg).expect("remove segment");
    std::fs::create_dir(&seg).expect("directory in its place");
    let (data, journals) = (p.data.clone(), p.journals.clone());
    run(move || async move {
        let report = replay_journals(&journals, &data, jcfg(1000))
            .await
            .expect("replay goes on past a damaged log");
        assert_eq!((report.logs, report.failed_logs), (1, 1), "{report:?}");
    });
    assert_eq!(replayed(&p, "ok-0"), vec![(0, 1, b"tag1-rec0".to_vec())]);
}

#[test]
fn a_journaled_log_still_rolls_its_segments_by_size_and_by_age() {
    run(|| async {
        let p = paths();
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::new(p.journals.join("shard-0"), Duration::from_millis(1000));
        let by_size = LogConfig {
            segment_bytes: 4096,
            ..jcfg(1000)
        };
        let by_age = LogConfig {
            segment_ms: Some(50),
            ..jcfg(1000)
        };
        let sized = open_journaled(&p.data, "s-0", 9, by_size, &cache, &journal).await;
        let aged = open_journaled(&p.data, "a-0", 9, by_age, &cache, &journal).await;
        for r in 0..40u32 {
            sized.append(batch(20, r, 1000), 1).await.expect("append");
            aged.append(batch(1, r, 1000), 1).await.expect("append");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        // Retention and the cleaner work on sealed segments: the journal must not keep a log
        // in one segment.
        assert!(
            sized.segment_count() > 2,
            "by size: {}",
            sized.segment_count()
        );
        assert!(aged.segment_count() > 2, "by age: {}", aged.segment_count());
        for l in [sized, aged] {
            assert_eq!(contents(&l).await.len() % 40, 0);
            l.check_consistency().await.expect("consistent");
            l.close().await.expect("close");
        }
    });
}

#[test]
fn an_append_after_an_age_roll_is_due_seals_the_journaled_batches_before_it() {
    run(|| async {
        let p = paths();
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::new(p.journals.join("shard-0"), Duration::from_millis(1000));
        let cfg = LogConfig {
            segment_ms: Some(100),
            ..jcfg(1000)
        };
        let log = open_journaled(&p.data, "o-0", 9, cfg, &cache, &journal).await;
        for r in 0..5u32 {
            log.append(batch(1, r, 1000), 1).await.expect("append");
        }
        assert_eq!(log.write_count(), 0, "all journaled");
        glommio::timer::sleep(Duration::from_millis(150)).await;
        log.append(batch(1, 99, 1000), 1).await.expect("append");
        // As without the journal: what came before the due roll is in the sealed segment (the
        // cleaner and retention can take it), the append that found it due starts the next.
        assert_eq!(log.segment_count(), 2);
        assert!(
            p.data.join("o-0").join(format!("{:020}.log", 5)).exists(),
            "the segment after the roll starts at the new append"
        );
        log.close().await.expect("close");
        let log = PartitionLog::open(p.data.join("o-0"), jcfg(1000), cache.clone())
            .await
            .expect("reopen");
        assert_eq!(log.segment_count(), 2);
        assert_eq!(contents(&log).await.len(), 6);
    });
}

#[test]
fn a_batch_queued_without_a_waiting_appender_goes_to_the_journal_at_the_background_flush() {
    run(|| async {
        let p = paths();
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::new(p.journals.join("shard-0"), Duration::from_millis(1000));
        let log = open_journaled(&p.data, "q-0", 7, jcfg(20), &cache, &journal).await;
        log.append(batch(1, 0, 1000), 1).await.expect("append");
        // Queued, then its appender went away before its round was written (as when the
        // background flush runs between an append and its flusher): the background flush
        // hands it to the journal like any small round, not to the segment.
        drop(log.append(batch(1, 1, 1000), 1));
        let mut waited = 0;
        while log.written_end_offset() < 2 && waited < 200 {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert_eq!(log.written_end_offset(), 2, "the queued batch was taken");
        assert_eq!(log.write_count(), 0, "by the journal, not the segment");
        assert!(journal.write_count() >= 2);
        assert_eq!(contents(&log).await.len(), 2);
        log.close().await.expect("close");
        journal.close().await;
        let log = PartitionLog::open(p.data.join("q-0"), jcfg(20), cache.clone())
            .await
            .expect("reopen");
        assert_eq!(
            contents(&log).await.len(),
            2,
            "both in the segment after close"
        );
    });
}

#[test]
fn logs_write_their_segments_themselves_when_the_journal_cannot_write() {
    run(|| async {
        let p = paths();
        // The journal's directory cannot be created: a file is in the way.
        std::fs::write(&p.journals, b"not a directory").expect("block");
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::new(p.journals.join("shard-0"), Duration::from_millis(1000));
        let log = open_journaled(&p.data, "h-0", 6, jcfg(1000), &cache, &journal).await;
        for r in 0..3u32 {
            log.append(batch(1, r, 1000), 1)
                .await
                .expect("append still succeeds");
        }
        assert!(log.write_count() >= 1, "written to the segment instead");
        assert_eq!(log.written_end_offset(), 3);
        log.close().await.expect("close");
    });
}

#[test]
fn full_journal_files_are_released_once_their_logs_have_written_and_synced() {
    run(|| async {
        let p = paths();
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::with_file_bytes(
            p.journals.join("shard-0"),
            Duration::from_millis(20),
            256 << 10,
        );
        let mut logs = Vec::new();
        for i in 0..8 {
            logs.push(
                open_journaled(&p.data, &format!("r-{i}"), 7, jcfg(20), &cache, &journal).await,
            );
        }
        let mut max_files = 0;
        let mut total = [0i64; 8];
        // ~4 MiB through 256 KiB files: rotations, release requests, background writes.
        for round in 0..128u32 {
            let acks = join_all(logs.iter().map(|l| l.append(batch(4, round, 1000), 1))).await;
            for (i, a) in acks.into_iter().enumerate() {
                a.expect("append");
                total[i] += 4;
            }
            max_files = max_files.max(journal.file_count());
            if round % 16 == 0 {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
        assert!(max_files <= 4, "at most the file limit: {max_files}");
        // The logs write at their next ticks, the journal releases at its next: wait for it
        // (bounded), whatever the host's speed.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let on_disk = || {
            std::fs::read_dir(p.journals.join("shard-0"))
                .expect("list")
                .count()
        };
        // (Released files are removed, or one is kept for reuse, in the background.)
        let kept =
            || 1 + usize::from(journal.spare_ready()) + usize::from(journal.recycled_ready());
        while (journal.file_count() > 1 || on_disk() > kept())
            && std::time::Instant::now() < deadline
        {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            journal.file_count(),
            1,
            "every sealed file is released: only the current one is left"
        );
        assert_eq!(
            on_disk(),
            kept(),
            "on disk: the current file, the next one made ready and one kept for reuse"
        );
        for (i, l) in logs.iter().enumerate() {
            assert_eq!(l.log_end_offset(), total[i]);
            assert!(l.write_count() > 0, "segments written in bulk");
        }
        for l in logs {
            l.check_consistency().await.expect("consistent");
            l.close().await.expect("close");
        }
    });
}

#[test]
fn rotations_take_the_file_made_ready_beforehand_and_a_crash_among_them_loses_nothing() {
    let p = paths();
    let (data, journals) = (p.data.clone(), p.journals.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::with_file_bytes(
            journals.join("shard-0"),
            Duration::from_millis(1000),
            256 << 10,
        );
        let mut logs = Vec::new();
        for i in 0..8 {
            logs.push(
                open_journaled(&data, &format!("s-{i}"), 4, jcfg(20), &cache, &journal).await,
            );
        }
        let mut spare_seen = false;
        let mut ends = [0i64; 8];
        // ~2 MiB through 256 KiB files: rotations while the spare is ready, and some while the
        // journal is at its file limit (the logs write their segments then).
        for round in 0..64u32 {
            let acks = join_all(logs.iter().map(|l| l.append(batch(4, round, 1000), 1))).await;
            for (i, a) in acks.into_iter().enumerate() {
                ends[i] = a.expect("append").last_offset + 1;
            }
            if round % 8 == 0 {
                // The spare is made in the background: give it a turn (bounded).
                for _ in 0..100 {
                    if journal.spare_ready() {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            }
            spare_seen |= journal.spare_ready();
        }
        assert!(
            spare_seen,
            "the next file was made ready ahead of a rotation"
        );
        let mut names: Vec<String> = std::fs::read_dir(journals.join("shard-0"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        assert!(
            names.len() >= 2,
            "a sealed or spare file beside the current: {names:?}"
        );
        tx.send(ends).expect("send");
        // A crash: nothing is closed, the spare stays on disk beside the written files.
        std::mem::forget(logs);
        std::mem::forget(journal);
    });
    let ends = rx.recv().expect("acked");
    let (data, journals) = (p.data.clone(), p.journals.clone());
    run(move || async move {
        replay_journals(&journals, &data, jcfg(1000))
            .await
            .expect("replay");
        let cache = ReadCache::new(8 << 20);
        for (i, end) in ends.iter().enumerate() {
            let log = PartitionLog::open(data.join(format!("s-{i}")), jcfg(1000), cache.clone())
                .await
                .expect("reopen");
            assert_eq!(
                log.log_end_offset(),
                *end,
                "log s-{i} keeps every acknowledged record"
            );
            let got = contents(&log).await;
            assert_eq!(got.len() as i64, *end, "log s-{i}");
            for (round, chunk) in got.chunks(4).enumerate() {
                assert_eq!(
                    chunk[0].2,
                    format!("tag{round}-rec0").into_bytes(),
                    "log s-{i}"
                );
            }
            log.check_consistency().await.expect("consistent");
        }
    });
}

/// Journal writes a 256 KiB journal file takes when each is one entry on one 4 KiB page.
const PAGES_PER_FILE: u64 = (256 << 10) / 4096;

/// The number of files a journal has used after `writes` one-page writes (a file takes its
/// next write only if it fits, so each takes exactly `PAGES_PER_FILE`).
fn files_used(writes: u64) -> u64 {
    writes.div_ceil(PAGES_PER_FILE)
}

/// A file whatever its name: its inode and birth time (a removed file's inode number may be
/// given to a new file, never with the same birth time).
type FileId = (u64, Option<u128>);

/// The names in a shard journal's directory with their files (a reused file keeps its
/// identity under each of its names).
fn listing(dir: &Path) -> Vec<(String, FileId)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let m = e.metadata().ok()?;
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        Some((
            e.file_name().to_string_lossy().into_owned(),
            (m.ino(), born),
        ))
    })
    .collect()
}

/// Waits (bounded) until `done`, whatever the host's speed; false if it never was.
async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// What the writer of the recycling test leaves for the check after its crash.
struct RecycleRun {
    /// Per log `u-{i}`, the tags of its acknowledged batches, in order.
    acked: Vec<Vec<u32>>,
    /// The journal's writes and files (current and sealed) at the crash.
    writes: u64,
    files: usize,
}

#[test]
fn a_journal_reuses_its_released_files_and_a_crash_replays_none_of_their_earlier_entries() {
    let p = paths();
    let (data, journals) = (p.data.clone(), p.journals.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        let shard = journals.join("shard-0");
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::with_file_bytes(&shard, Duration::from_millis(20), 256 << 10);
        // Appends one at a time: each is alone in its journal write, one entry on one page.
        let mut logs = Vec::new();
        for i in 0..8 {
            logs.push(
                open_journaled(&data, &format!("u-{i}"), 6, jcfg(20), &cache, &journal).await,
            );
        }
        let mut acked: Vec<Vec<u32>> = vec![Vec::new(); 8];
        let mut tag = 0u32;
        // Every name each file had.
        let mut names_of: HashMap<FileId, BTreeSet<String>> = HashMap::new();
        let observe = |names_of: &mut HashMap<FileId, BTreeSet<String>>| {
            for (name, ino) in listing(&shard) {
                if name.ends_with(".journal") {
                    names_of.entry(ino).or_default().insert(name);
                }
            }
        };
        // Three times the file limit's worth of files, released as the logs write their
        // segments (every 20 ms).
        let target = 3 * JOURNAL_MAX_FILES as u64 * PAGES_PER_FILE;
        for round in 0..4000 {
            if journal.write_count() >= target {
                break;
            }
            for (i, l) in logs.iter().enumerate() {
                l.append(batch(1, tag, 1000), 1).await.expect("append");
                acked[i].push(tag);
                tag += 1;
            }
            assert!(journal.file_count() <= JOURNAL_MAX_FILES);
            observe(&mut names_of);
            if round % 8 == 7 {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
        assert!(journal.write_count() >= target, "{}", journal.write_count());
        assert!(
            names_of.values().any(|n| n.len() > 1),
            "a released file came back as a later one: {names_of:?}"
        );
        // The entries u-7 wrote stay in the files' earlier lives; a log of the same name and
        // topic takes its place below, at lower offsets than they have.
        let old = logs.pop().expect("u-7");
        old.delete().await.expect("delete");
        let filler = logs.remove(0);
        for l in logs {
            l.close().await.expect("close");
        }
        assert!(
            wait_until(|| journal.file_count() == 1
                && journal.spare_ready()
                && journal.recycled_ready())
            .await,
            "everything sealed released, a file kept for reuse, the next one ready"
        );
        let reused = listing(&shard)
            .into_iter()
            .find(|(n, _)| n == "recycle.free")
            .expect("the file kept for reuse")
            .1;
        // Two more files: the spare made ready before, then the next one, made from the file
        // kept for reuse (with its earlier lives' entries after the ones written below). The
        // filler's write that starts it is its first entry.
        let first = files_used(journal.write_count());
        while files_used(journal.write_count()) < first + 2 {
            let before = journal.write_count();
            if before.is_multiple_of(PAGES_PER_FILE) {
                // This write starts a file: the spare takes it.
                assert!(wait_until(|| journal.spare_ready()).await, "spare made");
            }
            filler.append(batch(1, tag, 1000), 1).await.expect("append");
            acked[0].push(tag);
            tag += 1;
            // Or none: a batch queued when the journal asks for its file back goes to the
            // segment.
            assert!(journal.write_count() <= before + 1, "one entry per write");
        }
        observe(&mut names_of);
        assert!(
            names_of.get(&reused).is_some_and(|n| !n.is_empty()),
            "the file kept for reuse is the current one: {names_of:?}"
        );
        let witness = open_journaled(
            &data,
            "u-7",
            6,
            LogConfig {
                flush: FlushPolicy::IntervalMs(60_000),
                ..jcfg(1000)
            },
            &cache,
            &journal,
        )
        .await;
        for r in 0..10u32 {
            let a = witness
                .append(batch(1, 1000 + r, 1000), 1)
                .await
                .expect("append");
            assert_eq!(a.base_offset, r as i64);
        }
        assert_eq!(
            witness.write_count(),
            0,
            "the new u-7 is only in the journal"
        );
        filler.close().await.expect("close");
        // Released as soon as the filler is closed: the file it filled, kept for reuse.
        assert!(
            wait_until(|| journal.file_count() == 1
                && journal.spare_ready()
                && journal.recycled_ready()
                && listing(&shard).len() == 3)
            .await,
            "{:?}",
            listing(&shard)
        );
        let mut on_disk: Vec<String> = listing(&shard).into_iter().map(|e| e.0).collect();
        on_disk.sort();
        assert_eq!(
            on_disk.len(),
            journal.file_count() + 2,
            "on disk: the current file, the next one and the one kept for reuse: {on_disk:?}"
        );
        assert!(on_disk.contains(&"recycle.free".to_string()));
        tx.send(RecycleRun {
            acked,
            writes: journal.write_count(),
            files: journal.file_count(),
        })
        .expect("send");
        // A crash: the new u-7 is not closed, its batches are only in the journal.
        std::mem::forget(witness);
        std::mem::forget(journal);
    });
    let got = rx.recv().expect("run");
    // Only the entries of the current file's present life: a filler batch and the new u-7's.
    let present = got.writes - PAGES_PER_FILE * (files_used(got.writes) - got.files as u64);
    assert_eq!(present, 11);
    let (data, journals) = (p.data.clone(), p.journals.clone());
    run(move || async move {
        let report = replay_journals(&journals, &data, jcfg(1000))
            .await
            .expect("replay");
        assert_eq!(
            (report.files, report.entries),
            (2, present as usize),
            "the current file and the next one, only their present entries: {report:?}"
        );
        assert_eq!(
            (report.applied, report.logs),
            (10, 1),
            "only the new u-7's batches: {report:?}"
        );
        assert!(
            !journals.join("shard-0").exists(),
            "removed, the kept file too"
        );
        let cache = ReadCache::new(8 << 20);
        for (i, tags) in got.acked.iter().enumerate().take(7) {
            let log = PartitionLog::open(data.join(format!("u-{i}")), jcfg(1000), cache.clone())
                .await
                .expect("reopen");
            let want: Vec<(i64, i32, Vec<u8>)> = tags
                .iter()
                .enumerate()
                .map(|(o, t)| (o as i64, 1, format!("tag{t}-rec0").into_bytes()))
                .collect();
            assert_eq!(contents(&log).await, want, "log u-{i}");
            log.check_consistency().await.expect("consistent");
        }
        let log = PartitionLog::open(data.join("u-7"), jcfg(1000), cache.clone())
            .await
            .expect("reopen");
        let want: Vec<(i64, i32, Vec<u8>)> = (0..10u32)
            .map(|r| (r as i64, 1, format!("tag{}-rec0", 1000 + r).into_bytes()))
            .collect();
        assert_eq!(
            contents(&log).await,
            want,
            "the new u-7, none of the old one's"
        );
        log.check_consistency().await.expect("consistent");
    });
}

#[test]
fn a_clean_close_leaves_the_journal_directory_without_files() {
    run(|| async {
        let p = paths();
        let shard = p.journals.join("shard-0");
        let cache = ReadCache::new(8 << 20);
        let journal = Journal::with_file_bytes(&shard, Duration::from_millis(20), 256 << 10);
        let mut logs = Vec::new();
        for i in 0..4 {
            logs.push(
                open_journaled(&p.data, &format!("k-{i}"), 5, jcfg(20), &cache, &journal).await,
            );
        }
        let mut tag = 0u32;
        for round in 0..4000 {
            if journal.write_count() >= 2 * JOURNAL_MAX_FILES as u64 * PAGES_PER_FILE {
                break;
            }
            for l in &logs {
                l.append(batch(1, tag, 1000), 1).await.expect("append");
                tag += 1;
            }
            if round % 8 == 7 {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
        }
        assert!(
            wait_until(|| journal.recycled_ready() && journal.spare_ready()).await,
            "a file kept for reuse and a spare, both to be removed"
        );
        for l in logs {
            l.close().await.expect("close");
        }
        journal.close().await;
        assert_eq!(journal.file_count(), 0);
        assert!(!journal.spare_ready() && !journal.recycled_ready());
        assert_eq!(listing(&shard), vec![], "nothing left for a replay");
        let report = replay_journals(&p.journals, &p.data, jcfg(1000))
            .await
            .expect("replay");
        assert_eq!(report.files, 0, "{report:?}");
    });
}
