//! A log opened with `open_or_defer` on a directory that does not exist: nothing is created
//! until it writes, then its directory, marker and segment exist and hold what was written.

mod common;

use chronik_storage::{DirMarker, PartitionLog, ReadCache};
use common::*;

fn marker() -> DirMarker {
    DirMarker {
        name: "partition.metadata".into(),
        bytes: b"0123456789abcdef".to_vec(),
    }
}

async fn open_deferred(dir: &std::path::Path, buffered: bool) -> PartitionLog {
    PartitionLog::open_or_defer(dir, cfg(buffered), ReadCache::new(1 << 20), marker())
        .await
        .expect("open_or_defer")
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_log_on_a_missing_directory_creates_nothing_until_its_first_record() {
    for buffered in [false, true] {
        run(move || async move {
            let root = tempfile::tempdir().expect("tempdir");
            let dir = root.path().join("t-0");
            let log = open_deferred(&dir, buffered).await;
            assert!(!log.dir_created());
            assert_eq!(
                (log.log_start_offset(), log.log_end_offset()),
                (0, 0),
                "empty at offset 0"
            );
            assert!(log.read(0, 1 << 20, 0).await.expect("read").is_empty());
            log.flush().await.expect("flush of nothing");
            assert!(!dir.exists(), "nothing written, nothing created");

            let r = log.append(batch(3, 1, 1000), 7).await.expect("append");
            assert_eq!((r.base_offset, r.last_offset), (0, 2));
            assert!(log.dir_created());
            let names = entries(&dir);
            assert!(
                names.contains(&"partition.metadata".to_string()),
                "{names:?}"
            );
            assert!(names.contains(&format!("{:020}.log", 0)), "{names:?}");
            assert_eq!(
                std::fs::read(dir.join("partition.metadata")).expect("marker"),
                b"0123456789abcdef"
            );
            log.append(batch(2, 2, 1001), 7).await.expect("append");
            log.close().await.expect("close");

            // Opened again, the directory exists: it is an ordinary log with both batches.
            let log = open_deferred(&dir, buffered).await;
            assert!(log.dir_created());
            let got = read_all(&log).await;
            assert_eq!(
                got.iter().map(|(b, l, _)| (*b, *l)).collect::<Vec<_>>(),
                vec![(0, 2), (3, 4)]
            );
            assert_eq!(log.latest_epoch(), Some(7));
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        });
    }
}

#[test]
fn a_log_that_never_gets_a_record_leaves_no_directory_behind() {
    run(|| async {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("idle-0");
        let log = open_deferred(&dir, false).await;
        // Operations that change nothing on an empty log create nothing either.
        log.truncate_to(0).await.expect("truncate to the end");
        assert_eq!(log.delete_records_before(0).await.expect("no-op"), 0);
        assert!(
            log.delete_records_before(1).await.is_err(),
            "beyond the end"
        );
        assert_eq!(log.apply_retention(i64::MAX).await.expect("retention"), 0);
        log.set_high_watermark(0);
        log.close().await.expect("close");
        assert!(!dir.exists(), "a clean stop of an idle log writes nothing");

        let log = open_deferred(&dir, false).await;
        log.delete()
            .await
            .expect("delete of a log that has no directory");
        assert!(!dir.exists());
    });
}

#[test]
fn a_deferred_log_written_then_deleted_removes_its_directory() {
    run(|| async {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("gone-0");
        let log = open_deferred(&dir, false).await;
        log.append(batch(1, 1, 1), 0).await.expect("append");
        assert!(dir.exists());
        log.delete().await.expect("delete");
        assert!(!dir.exists());
    });
}

#[test]
fn a_follower_append_to_a_deferred_log_creates_it_and_survives_a_crash() {
    run(|| async {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("f-0");
        let log = open_deferred(&dir, false).await;
        // The leader's batch keeps its offsets and epoch.
        let mut b = batch(4, 9, 5);
        b[12..16].copy_from_slice(&3i32.to_be_bytes());
        log.append_replicated(b.freeze())
            .await
            .expect("replicated append");
        assert_eq!(log.log_end_offset(), 4);
        // Dropped without close, as a SIGKILL leaves it: recovery finds the records.
        drop(log);
        let log = open_deferred(&dir, false).await;
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(log.latest_epoch(), Some(3));
        log.check_consistency().await.expect("consistent");
        log.close().await.expect("close");
    });
}

#[test]
fn a_deferred_log_restarted_at_a_later_offset_creates_its_directory_there() {
    run(|| async {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("late-0");
        let log = open_deferred(&dir, false).await;
        log.restart_at(300).await.expect("restart at 300");
        assert!(log.dir_created(), "the new log start is written to disk");
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (300, 300));
        drop(log);
        let log = open_deferred(&dir, false).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (300, 300));
        log.close().await.expect("close");
    });
}
