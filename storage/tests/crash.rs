//! Crash safety: a writer process appends with `FlushPolicy::Always` from several concurrent
//! appenders and prints every acknowledged batch; we SIGKILL it at random moments, reopen the
//! log, and check every acknowledged batch is present and intact, offsets are contiguous and
//! the indexes point at real batch starts. The writer is this test binary re-invoked with
//! CHRONIK_CRASH_DIR set (see `crash_writer_child`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use chronik_storage::{
    parse_header, validate_batch, FlushPolicy, LogConfig, PartitionLog, ReadCache,
};
use common::*;
use rand::Rng;

const ITERATIONS: usize = 50;

fn crash_cfg(buffered: bool) -> LogConfig {
    LogConfig {
        // Small enough for hundreds of rolls, large enough that the segments of ~100 MB of
        // appends fit the fd limit: a verify that drops the log unclosed leaves its files to
        // glommio's deferred close, which never runs once that executor is gone.
        segment_bytes: 256 << 10,
        flush: FlushPolicy::Always,
        index_interval_bytes: 1024,
        force_buffered_io: buffered,
        ..LogConfig::default()
    }
}

/// The writer half. A no-op unless started by `sigkill_never_loses_acknowledged_appends`.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var("CHRONIK_CRASH_DIR") else {
        return;
    };
    let buffered = std::env::var("CHRONIK_CRASH_BUFFERED").is_ok();
    run(move || async move {
        let log = PartitionLog::open(
            PathBuf::from(dir),
            crash_cfg(buffered),
            ReadCache::new(1 << 20),
        )
        .await
        .expect("open");
        let log = Rc::new(log);
        let mut tasks = Vec::new();
        for w in 0..4u8 {
            tasks.push(glommio::spawn_local(append_and_report_forever(
                log.clone(),
                w,
                12,
                700,
                String::new(),
            )));
        }
        for t in tasks {
            t.await;
        }
    });
}

/// Reopens the log and checks it against everything acknowledged so far.
fn verify(dir: &Path, acked: &[(i64, i64, u32)], clean_close: bool) -> usize {
    let dir = dir.to_path_buf();
    let acked = acked.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    run(move || async move {
        let log = PartitionLog::open(&dir, crash_cfg(false), ReadCache::new(0))
            .await
            .expect("reopen after SIGKILL");
        let all = read_all(&log).await;
        let mut by_base = HashMap::new();
        for (base, last, bytes) in &all {
            let h = validate_batch(bytes).expect("every stored batch is intact");
            by_base.insert(*base, (*last, h.crc));
        }
        for &(base, last, crc) in &acked {
            assert_eq!(
                by_base.get(&base),
                Some(&(last, crc)),
                "acknowledged batch {base}..={last} missing or different after crash"
            );
        }
        let max_acked = acked.iter().map(|a| a.1 + 1).max().unwrap_or(0);
        assert!(log.log_end_offset() >= max_acked);
        assert_eq!(
            all.first().map_or(log.log_end_offset(), |b| b.0),
            log.log_start_offset()
        );
        log.check_consistency()
            .await
            .expect("indexes and offsets consistent");
        // Random reads through the indexes land on the right batch.
        for &(base, last, _) in acked.iter().rev().take(50) {
            let mid = (base + last) / 2;
            let got = log.read(mid, 1, i64::MAX).await.expect("read");
            let h = parse_header(&got[0]).expect("header");
            assert_eq!((h.base_offset, h.last_offset()), (base, last));
        }
        let n = all.len();
        if clean_close {
            log.close().await.expect("close");
        } else {
            drop(log);
        }
        let _ = tx.send(n);
    });
    rx.recv().expect("verify result")
}

#[test]
fn sigkill_never_loses_acknowledged_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: Vec<(i64, i64, u32)> = Vec::new();
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    for iter in 0..ITERATIONS {
        let buffered = iter % 3 == 2;
        let mut env = vec![("CHRONIK_CRASH_DIR", dir.path().display().to_string())];
        if buffered {
            env.push(("CHRONIK_CRASH_BUFFERED", "1".to_string()));
        }
        let delay = Duration::from_millis(rng.gen_range(40..400));
        let new: Vec<(i64, i64, u32)> = kill_writer_after("crash_writer_child", &env, delay)
            .into_iter()
            .filter_map(|f| match &f[..] {
                [b, l, c] => Some((b.parse().ok()?, l.parse().ok()?, c.parse().ok()?)),
                _ => None,
            })
            .collect();
        acked.extend(new);
        let stored = verify(dir.path(), &acked, iter % 2 == 0);
        assert!(stored >= acked.len());
    }
    println!(
        "{ITERATIONS} SIGKILLs, {} acknowledged batches all present, {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(!acked.is_empty(), "the writer never acknowledged anything");
}
