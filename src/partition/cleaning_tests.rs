//! The log cleaner on a partition with transactions: the aborted transactions it empties are
//! forgotten by the partition's index and its snapshot, before their markers may go.

use super::{Partition, TXN_SNAPSHOT};
use crate::kafka::errors;
use crate::shard::TopicPartition;
use bytes::BytesMut;
use chronik_storage::{CleanerLimits, CleanupPolicy, CompactionConfig, LogConfig, TxnMarker};
use std::path::Path;
use std::time::Instant;

fn compact() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        cleanup: CleanupPolicy {
            delete: false,
            compact: true,
        },
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.01,
            ..CompactionConfig::default()
        },
        ..LogConfig::default()
    }
}

async fn open(dir: &Path) -> Partition {
    Partition::open(
        TopicPartition::new("t", 0),
        [7; 16],
        dir.join("t-0"),
        compact(),
        chronik_storage::ReadCache::new(1 << 20),
        None,
        1,
    )
    .await
    .expect("open")
}

/// A transactional batch of producer `pid` (epoch 0) at sequence 0 with one keyed record.
fn txn_batch(pid: i64) -> BytesMut {
    let mut b = chronik_storage::testing::build_batch(&[(Some(b"k"), Some(b"aborted"))], 0);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // attributes: transactional
    chronik_storage::testing::set_producer(&mut b, pid, 0, 0);
    b
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join");
}

#[test]
fn an_aborted_transaction_the_cleaner_emptied_is_forgotten_by_the_index_and_stays_forgotten() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path()).await;
        assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
        assert_eq!(p.append_as_leader(txn_batch(5)).await.error, errors::NONE);
        let abort = TxnMarker {
            commit: false,
            coordinator_epoch: 0,
        };
        assert_eq!(p.append_marker(5, 0, abort).await.error, errors::NONE);
        // Producer 5 writes again (so the aborted batch is not its last), then a large
        // batch rolls the log.
        let later = chronik_storage::testing::build_batch(&[(Some(b"k"), Some(b"later"))], 0);
        let mut later = later;
        chronik_storage::testing::set_producer(&mut later, 5, 0, 1);
        assert_eq!(p.append_as_leader(later).await.error, errors::NONE);
        let filler = chronik_storage::testing::build_batch_of(1, 4000, 0, 0);
        assert_eq!(p.append_as_leader(filler).await.error, errors::NONE);
        let leo = p.log.log_end_offset();
        assert_eq!(p.last_stable_offset(), leo);
        assert_eq!(p.aborted_between(0, leo).len(), 1);
        p.close().await;

        let p = open(dir.path()).await;
        assert!(p.become_leader(1, &[1], &[1], Instant::now()).is_ok());
        assert!(dir.path().join("t-0").join(TXN_SNAPSHOT).exists());
        let limits = CleanerLimits {
            upper_bound: p.last_stable_offset(),
            txns: p.cleaner_txn_context(),
            ..CleanerLimits::new(1 << 20, 0)
        };
        let stats = p.log.clean(&limits).await.expect("clean").expect("ran");
        assert_eq!(stats.aborted_without_data.len(), 1);
        p.forget_cleaned_aborts(&stats.aborted_without_data);
        assert!(p.aborted_between(0, leo).is_empty());
        assert!(
            !dir.path().join("t-0").join(TXN_SNAPSHOT).exists(),
            "the snapshot that listed it is gone"
        );
        // A crash (no close): the state replayed from the cleaned log agrees.
        drop(p);
        let p = open(dir.path()).await;
        assert!(p.become_leader(2, &[1], &[1], Instant::now()).is_ok());
        assert!(p.aborted_between(0, leo).is_empty());
        assert_eq!(p.open_transaction(5), None);
        assert_eq!(p.last_stable_offset(), leo);
        p.close().await;
    });
}
