//! Damaged files: a torn or corrupt tail of the active segment is truncated at the first bad
//! batch; damage in a sealed segment is reported naming the file.

mod common;

use std::path::PathBuf;

use chronik_storage::StorageError;
use common::*;

/// Writes `n` batches into one segment, drops the log without closing (as a crash would) and
/// returns the segment path and each batch's (base, byte position, length).
fn write_batches(dir: PathBuf, n: u32) -> (PathBuf, Vec<(i64, usize, usize)>) {
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        let log = open(&dir, cfg(false), 0).await;
        let mut layout = Vec::new();
        let mut pos = 0usize;
        for i in 0..n {
            let r = log.append(batch(3, i, 0), 0).await.expect("append");
            let len = log.read(r.base_offset, 1, i64::MAX).await.expect("read")[0].len();
            layout.push((r.base_offset, pos, len));
            pos += len;
        }
        assert_eq!(log.segment_count(), 1);
        drop(log);
        let _ = tx.send((dir.join("00000000000000000000.log"), layout));
    });
    rx.recv().expect("layout")
}

fn reopen_and_check(dir: PathBuf, expect_leo: i64) {
    run(move || async move {
        let log = open(&dir, cfg(false), 0).await;
        assert_eq!(log.log_end_offset(), expect_leo);
        let all = read_all(&log).await;
        assert_eq!(all.last().map_or(0, |b| b.1 + 1), expect_leo);
        log.check_consistency().await.expect("consistent");
        let r = log
            .append(batch(1, 9999, 0), 0)
            .await
            .expect("append after recovery");
        assert_eq!(r.base_offset, expect_leo);
        log.close().await.expect("close");
    });
}

#[test]
fn flipped_bytes_in_the_tail_truncate_at_the_first_bad_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, layout) = write_batches(dir.path().to_path_buf(), 40);
    let mut raw = std::fs::read(&seg).expect("read segment");
    // Damage batch 30's records (covered by its CRC) and batch 35's header.
    let (base30, pos30, len30) = layout[30];
    raw[pos30 + len30 - 3] ^= 0xFF;
    let (_, pos35, _) = layout[35];
    raw[pos35 + 20] ^= 0x01;
    std::fs::write(&seg, &raw).expect("write damaged segment");
    reopen_and_check(dir.path().to_path_buf(), base30);
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, layout) = write_batches(dir.path().to_path_buf(), 25);
    let (base_last, pos_last, len_last) = layout[24];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len((pos_last + len_last / 2) as u64)
        .expect("cut the last batch in half");
    drop(f);
    reopen_and_check(dir.path().to_path_buf(), base_last);
}

#[test]
fn garbage_after_the_last_batch_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seg, layout) = write_batches(dir.path().to_path_buf(), 10);
    let (_, pos, len) = layout[9];
    let mut raw = std::fs::read(&seg).expect("read");
    raw.truncate(pos + len);
    raw.extend_from_slice(&[0x42; 300]);
    std::fs::write(&seg, &raw).expect("write");
    reopen_and_check(dir.path().to_path_buf(), layout[9].0 + 3);
}

#[test]
fn damage_in_a_sealed_segment_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(false);
        c.segment_bytes = 4096;
        let log = open(&path, c.clone(), 0).await;
        for i in 0..100 {
            log.append(batch(3, i, 0), 0).await.expect("append");
        }
        assert!(log.segment_count() > 2);
        log.close().await.expect("close");
        // Without its index the sealed first segment is rescanned and the damage is found.
        let seg = path.join("00000000000000000000.log");
        std::fs::remove_file(path.join("00000000000000000000.index")).expect("rm index");
        let mut raw = std::fs::read(&seg).expect("read");
        raw[200] ^= 0xFF;
        std::fs::write(&seg, &raw).expect("write");
        match chronik_storage::PartitionLog::open(&path, c, chronik_storage::ReadCache::new(0))
            .await
        {
            Err(StorageError::Corrupt { path: p, reason }) => {
                assert_eq!(p, seg);
                assert!(!reason.is_empty());
                println!("refused to open: {reason}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a damaged sealed segment must not open silently"),
        }
    });
}
