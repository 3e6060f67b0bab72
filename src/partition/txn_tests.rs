//! A partition's transaction state through its public methods: transactional appends,
//! markers, the LSO, the aborted list, and the same state rebuilt from the log on reopen and
//! on a follower that appends the leader's batches.

use super::Partition;
use crate::kafka::errors;
use crate::shard::TopicPartition;
use bytes::BytesMut;
use chronik_storage::TxnMarker;
use std::path::Path;
use std::time::Instant;

async fn open(dir: &Path, broker: i32) -> Partition {
    Partition::open(
        TopicPartition::new("t", 0),
        [7; 16],
        dir.join("t-0"),
        Default::default(),
        chronik_storage::ReadCache::new(1 << 20),
        None,
        broker,
    )
    .await
    .expect("open")
}

/// A transactional batch of `n` records of producer `pid` (epoch 0) at sequence `seq`.
fn txn_batch(pid: i64, seq: i32, n: usize) -> BytesMut {
    let mut b = chronik_storage::testing::build_batch_of(n, 10, 1, 0);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // attributes: transactional
    chronik_storage::testing::set_producer(&mut b, pid, 0, seq);
    b
}

fn marker(commit: bool) -> TxnMarker {
    TxnMarker {
        commit,
        coordinator_epoch: 0,
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join");
}

#[test]
fn an_open_transaction_holds_the_lso_until_its_marker_is_written_and_replicated() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(0, &[1], &[1, 2], Instant::now()).is_ok());
        let plain = chronik_storage::testing::build_batch_of(2, 10, 1, 0);
        assert_eq!(p.append_as_leader(plain).await.error, errors::NONE);
        assert_eq!(
            p.append_as_leader(txn_batch(5, 0, 3)).await.error,
            errors::NONE
        );
        assert_eq!(p.high_watermark(), 5);
        assert_eq!(
            p.last_stable_offset(),
            2,
            "producer 5's transaction opened at 2"
        );
        let out = p.append_marker(5, 0, marker(false)).await;
        assert_eq!((out.error, out.base_offset), (errors::NONE, 5));
        assert_eq!(p.last_stable_offset(), 6);
        let aborted = p.aborted_between(0, 6);
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (
                aborted[0].producer_id,
                aborted[0].first_offset,
                aborted[0].last_offset
            ),
            (5, 2, 5)
        );
        // A committed one is not listed.
        assert_eq!(
            p.append_as_leader(txn_batch(5, 3, 1)).await.error,
            errors::NONE
        );
        assert_eq!(p.last_stable_offset(), 6);
        assert_eq!(
            p.append_marker(5, 0, marker(true)).await.error,
            errors::NONE
        );
        assert_eq!(p.last_stable_offset(), 8);
        assert_eq!(p.aborted_between(6, 8), vec![]);
        p.close().await;
    });
}

#[test]
fn a_marker_of_an_older_epoch_is_refused_and_a_newer_one_fences_the_producer() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
        let mut b = txn_batch(9, 0, 1);
        chronik_storage::testing::set_producer(&mut b, 9, 3, 0);
        assert_eq!(p.append_as_leader(b).await.error, errors::NONE);
        assert_eq!(
            p.append_marker(9, 2, marker(true)).await.error,
            errors::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            p.append_marker(9, 4, marker(false)).await.error,
            errors::NONE
        );
        let mut zombie = txn_batch(9, 1, 1);
        chronik_storage::testing::set_producer(&mut zombie, 9, 3, 1);
        assert_eq!(
            p.append_as_leader(zombie).await.error,
            errors::INVALID_PRODUCER_EPOCH,
            "the fenced epoch may not write"
        );
        assert_eq!(
            p.append_marker(-1, 0, marker(true)).await.error,
            errors::INVALID_PRODUCER_ID_MAPPING
        );
        p.close().await;
    });
}

#[test]
fn a_transactional_batch_without_a_producer_id_is_an_invalid_record() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
        let mut b = chronik_storage::testing::build_batch_of(1, 10, 1, 0);
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        chronik_storage::testing::set_producer(&mut b, -1, -1, -1);
        assert_eq!(p.append_as_leader(b).await.error, errors::INVALID_RECORD);
        p.close().await;
    });
}

#[test]
fn the_transaction_state_is_rebuilt_from_the_log_on_reopen_and_on_a_follower() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
        assert_eq!(
            p.append_as_leader(txn_batch(1, 0, 2)).await.error,
            errors::NONE
        );
        assert_eq!(
            p.append_as_leader(txn_batch(2, 0, 2)).await.error,
            errors::NONE
        );
        assert_eq!(
            p.append_marker(1, 0, marker(false)).await.error,
            errors::NONE
        );
        let (lso, aborted) = (p.last_stable_offset(), p.aborted_between(0, 100));
        assert_eq!(lso, 2, "producer 2 still open");
        // A follower appending the same batches ends up in the same state.
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let f = open(follower_dir.path(), 2).await;
        assert_eq!(f.become_follower(0, &[1], &[1, 2]), Ok(false));
        let end = p.log.log_end_offset();
        for chunk in p.log.read(0, 1 << 20, end).await.expect("read") {
            let mut rest = chunk;
            while let Ok(h) = chronik_storage::parse_header(&rest) {
                let batch = rest.split_to(h.total_len());
                let m = chronik_storage::parse_marker(&batch, &h);
                f.log.append_replicated(batch).await.expect("append");
                f.record_replicated(&h, m);
            }
        }
        f.update_high_watermark(end).expect("follower HW");
        assert_eq!(f.last_stable_offset(), lso);
        assert_eq!(f.aborted_between(0, 100), aborted);
        f.close().await;
        // Reopened from the snapshot, and without it (replayed from the log start).
        p.close().await;
        for without_snapshot in [false, true] {
            if without_snapshot {
                std::fs::remove_file(dir.path().join("t-0").join(super::TXN_SNAPSHOT))
                    .expect("snapshot written at close");
            }
            let q = open(dir.path(), 1).await;
            assert!(q.become_leader(1, &[1], &[1], Instant::now()).is_ok());
            assert_eq!(
                q.last_stable_offset(),
                lso,
                "snapshot removed: {without_snapshot}"
            );
            assert_eq!(q.aborted_between(0, 100), aborted);
            assert_eq!(q.open_transaction(2), Some(2));
            q.close().await;
        }
    });
}

#[test]
fn a_truncated_marker_reopens_its_transaction() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
        assert_eq!(
            p.append_as_leader(txn_batch(1, 0, 2)).await.error,
            errors::NONE
        );
        assert_eq!(
            p.append_marker(1, 0, marker(true)).await.error,
            errors::NONE
        );
        assert_eq!(p.open_transaction(1), None);
        assert_eq!(p.become_follower(1, &[2], &[1, 2]), Ok(true));
        p.log.truncate_to(2).await.expect("truncate");
        p.truncate_state(2).await;
        assert_eq!(p.open_transaction(1), Some(0));
        p.close().await;
    });
}

#[test]
fn a_marker_from_an_older_coordinator_is_fenced_also_after_a_restart_or_without_a_snapshot() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = |commit, coordinator_epoch| TxnMarker {
            commit,
            coordinator_epoch,
        };
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
        assert_eq!(
            p.append_as_leader(txn_batch(4, 0, 2)).await.error,
            errors::NONE
        );
        assert_eq!(
            p.append_marker(4, 0, from(true, 7)).await.error,
            errors::NONE
        );
        assert_eq!(
            p.append_as_leader(txn_batch(4, 2, 1)).await.error,
            errors::NONE
        );
        let before = p.log_end_offset();
        assert_eq!(
            p.append_marker(4, 0, from(false, 6)).await.error,
            errors::TRANSACTION_COORDINATOR_FENCED,
            "a coordinator older than the last one"
        );
        assert_eq!(p.log_end_offset(), before, "nothing appended");
        p.close().await;
        // Kept in the producer state snapshot.
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(1, &[1], &[1], Instant::now()).is_ok());
        assert_eq!(
            p.append_marker(4, 0, from(false, 6)).await.error,
            errors::TRANSACTION_COORDINATOR_FENCED
        );
        p.close().await;
        // And rebuilt from the markers in the log when the snapshot is gone.
        std::fs::remove_file(dir.path().join("t-0").join(super::PRODUCER_SNAPSHOT))
            .expect("snapshot written at close");
        let p = open(dir.path(), 1).await;
        assert!(p.become_leader(2, &[1], &[1], Instant::now()).is_ok());
        assert_eq!(
            p.append_marker(4, 0, from(false, 6)).await.error,
            errors::TRANSACTION_COORDINATOR_FENCED
        );
        assert_eq!(
            p.append_marker(4, 0, from(true, 8)).await.error,
            errors::NONE
        );
        p.close().await;
    });
}
