//! Opening a partition over a directory that is already there: the topic id file decides
//! whether its log is this topic's (kept) or a deleted namesake's (removed).

use super::{Partition, PARTITION_METADATA};
use crate::kafka::errors;
use crate::shard::TopicPartition;
use std::path::Path;
use std::time::Instant;

async fn open(dir: &Path, topic_id: [u8; 16]) -> Partition {
    Partition::open(
        TopicPartition::new("t", 0),
        topic_id,
        dir.join("t-0"),
        Default::default(),
        chronik_storage::ReadCache::new(1 << 20),
        None,
        1,
    )
    .await
    .expect("open")
}

/// Opens the partition with `topic_id`, appends 2 records and closes it.
async fn two_records(dir: &Path, topic_id: [u8; 16]) {
    let p = open(dir, topic_id).await;
    assert!(p.become_leader(0, &[1], &[1], Instant::now()).is_ok());
    let batch = chronik_storage::testing::build_batch_of(2, 10, 1, 0);
    assert_eq!(p.append_as_leader(batch).await.error, errors::NONE);
    p.close().await;
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("join");
}

#[test]
fn a_log_is_kept_under_its_own_topic_id_and_removed_under_another() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        two_records(dir.path(), [7; 16]).await;
        let p = open(dir.path(), [7; 16]).await;
        assert_eq!(p.log_end_offset(), 2, "same topic id: the log is kept");
        p.close().await;
        let p = open(dir.path(), [8; 16]).await;
        assert_eq!(p.log_end_offset(), 0, "another topic's log is removed");
        p.close().await;
        // The new topic's partition creates its directory with its first record.
        assert!(!dir.path().join("t-0").exists());
        two_records(dir.path(), [8; 16]).await;
        let meta = std::fs::read(dir.path().join("t-0").join(PARTITION_METADATA)).expect("meta");
        assert_eq!(meta, [8; 16]);
        let p = open(dir.path(), [8; 16]).await;
        assert_eq!(p.log_end_offset(), 2);
        p.close().await;
    });
}

#[test]
fn a_log_whose_topic_id_file_was_cut_short_is_kept() {
    run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        two_records(dir.path(), [7; 16]).await;
        let meta = dir.path().join("t-0").join(PARTITION_METADATA);
        std::fs::write(&meta, b"").expect("cut the file short");
        let p = open(dir.path(), [7; 16]).await;
        assert_eq!(p.log_end_offset(), 2);
        p.close().await;
        assert_eq!(
            std::fs::read(&meta).expect("meta"),
            [7; 16],
            "rewritten whole"
        );
    });
}
