//! Crash safety of journaled appends: a writer process appends from many tasks to logs that
//! share a shard journal (small files, so it rotates and releases files while it runs) and
//! prints every acknowledged batch; we SIGKILL it at random moments, replay the journal as the
//! broker's start does, reopen every log and check every acknowledged batch is there, intact.
//! The writer is this test binary re-invoked with CHRONIK_JOURNAL_CRASH_DIR set.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use chronik_storage::{
    replay_journals, validate_batch, DirMarker, FlushPolicy, Journal, LogConfig, PartitionLog,
    ReadCache,
};
use common::*;
use rand::Rng;

const ITERATIONS: usize = 20;
const LOGS: usize = 8;

fn cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        // A short interval: background writes, syncs and journal releases happen during the run.
        flush: FlushPolicy::IntervalMs(30),
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

fn marker() -> DirMarker {
    DirMarker {
        name: "partition.metadata".into(),
        bytes: b"journal-crash-id".to_vec(),
    }
}

/// The writer half. A no-op unless started by `sigkill_never_loses_a_journaled_append`.
#[test]
fn journal_crash_writer_child() {
    let Ok(dir) = std::env::var("CHRONIK_JOURNAL_CRASH_DIR") else {
        return;
    };
    run(move || async move {
        let data = PathBuf::from(dir);
        let cache = ReadCache::new(1 << 20);
        let journal = Journal::with_file_bytes(
            data.join(".journal").join("shard-0"),
            Duration::from_millis(30),
            256 << 10,
        );
        let mut tasks = Vec::new();
        for l in 0..LOGS {
            let log = PartitionLog::open_or_defer(
                data.join(format!("p-{l}")),
                cfg(),
                cache.clone(),
                marker(),
            )
            .await
            .expect("open");
            log.use_journal(journal.clone(), &marker());
            let log = Rc::new(log);
            for w in 0..2u8 {
                tasks.push(glommio::spawn_local(append_and_report_forever(
                    log.clone(),
                    w,
                    4,
                    600,
                    format!("{l} "),
                )));
            }
        }
        for t in tasks {
            t.await;
        }
    });
}

type Acked = Vec<(usize, i64, i64, u32)>;

/// Replays the journal, reopens every log and checks it against everything acknowledged.
fn verify(dir: &Path, acked: &Acked) {
    let dir = dir.to_path_buf();
    let acked = acked.clone();
    run(move || async move {
        replay_journals(&dir.join(".journal"), &dir, cfg())
            .await
            .expect("replay");
        for l in 0..LOGS {
            let path = dir.join(format!("p-{l}"));
            if !path.exists() {
                assert!(
                    acked.iter().all(|a| a.0 != l),
                    "log {l} acknowledged batches but has no directory"
                );
                continue;
            }
            let log = PartitionLog::open(&path, cfg(), ReadCache::new(0))
                .await
                .expect("reopen after SIGKILL");
            let mut by_base = HashMap::new();
            for (base, last, bytes) in read_all(&log).await {
                let h = validate_batch(&bytes).expect("every stored batch is intact");
                by_base.insert(base, (last, h.crc));
            }
            for &(_, base, last, crc) in acked.iter().filter(|a| a.0 == l) {
                assert_eq!(
                    by_base.get(&base),
                    Some(&(last, crc)),
                    "log {l}: acknowledged batch {base}..={last} missing or different after crash"
                );
            }
            log.check_consistency().await.expect("consistent");
            log.close().await.expect("close");
        }
    });
}

#[test]
fn sigkill_never_loses_a_journaled_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: Acked = Vec::new();
    let mut rng = rand::thread_rng();
    for _ in 0..ITERATIONS {
        let env = [(
            "CHRONIK_JOURNAL_CRASH_DIR",
            dir.path().display().to_string(),
        )];
        let delay = Duration::from_millis(rng.gen_range(60..500));
        let new: Acked = kill_writer_after("journal_crash_writer_child", &env, delay)
            .into_iter()
            .filter_map(|f| match &f[..] {
                [l, b, e, c] => Some((
                    l.parse().ok()?,
                    b.parse().ok()?,
                    e.parse().ok()?,
                    c.parse().ok()?,
                )),
                _ => None,
            })
            .collect();
        acked.extend(new);
        verify(dir.path(), &acked);
    }
    assert!(!acked.is_empty(), "the writer never acknowledged anything");
    println!(
        "{ITERATIONS} SIGKILLs, {} acknowledged journaled batches all present",
        acked.len()
    );
}
