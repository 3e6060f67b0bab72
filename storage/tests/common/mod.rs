#![allow(dead_code)]
//! Helpers shared by the storage integration tests.

use std::future::Future;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use chronik_storage::testing::{build_batch, build_batch_with_timestamps};
use chronik_storage::{parse_header, FlushPolicy, LogConfig, PartitionLog, ReadCache};
use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a fresh glommio executor thread.
///
/// A ticker task keeps a timer armed while `f` runs: glommio 0.9.0 can park the executor while a
/// task queue is still runnable (when its preemption check fires before anything ran; fixed
/// upstream in glommio/glommio#53, not released on crates.io), and with no timer or I/O pending
/// nothing wakes it. The crash test hung that way for minutes; the timer bounds such a stall.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let done = Rc::new(std::cell::Cell::new(false));
            let ticking = done.clone();
            let ticker = glommio::spawn_local(async move {
                while !ticking.get() {
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                }
            });
            f().await;
            done.set(true);
            ticker.await;
        })
        .expect("spawn executor")
        .join()
        .expect("executor thread");
}

/// A batch of `n` records whose values identify (`tag`, record index).
pub fn batch(n: usize, tag: u32, ts: i64) -> BytesMut {
    let vals: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("tag{tag}-rec{i}").into_bytes())
        .collect();
    let recs: Vec<chronik_storage::testing::Record<'_>> =
        vals.iter().map(|v| (None, Some(&v[..]))).collect();
    build_batch(&recs, ts)
}

pub fn batch_ts(timestamps: &[i64]) -> BytesMut {
    let recs: Vec<chronik_storage::testing::Record<'_>> = timestamps
        .iter()
        .map(|_| (Some(&b"k"[..]), Some(&b"v"[..])))
        .collect();
    build_batch_with_timestamps(&recs, timestamps)
}

pub fn cfg(buffered: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        flush: FlushPolicy::Always,
        index_interval_bytes: 1024,
        force_buffered_io: buffered,
        ..LogConfig::default()
    }
}

pub async fn open(dir: &std::path::Path, cfg: LogConfig, cache_budget: usize) -> PartitionLog {
    PartitionLog::open(dir, cfg, ReadCache::new(cache_budget))
        .await
        .expect("open log")
}

pub async fn open_shared(
    dir: &std::path::Path,
    cfg: LogConfig,
    cache: &Rc<ReadCache>,
) -> PartitionLog {
    PartitionLog::open(dir, cfg, cache.clone())
        .await
        .expect("open log")
}

/// Reads the whole log from its start and checks batch offsets are contiguous; returns
/// (base, last) of every batch.
pub async fn read_all(log: &PartitionLog) -> Vec<(i64, i64, Bytes)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    let leo = log.log_end_offset();
    while next < leo {
        let batches = log.read(next, 256 << 10, leo).await.expect("read");
        assert!(
            !batches.is_empty(),
            "read at {next} below LEO {leo} returned nothing"
        );
        for b in batches {
            let h = parse_header(&b).expect("header");
            if let Some(&(_, prev_last, _)) = out.last() {
                assert_eq!(h.base_offset, prev_last + 1, "offsets must be contiguous");
            } else {
                assert!(h.base_offset <= next && next <= h.last_offset());
            }
            next = h.last_offset() + 1;
            out.push((h.base_offset, h.last_offset(), b));
        }
    }
    out
}

/// Polls all `futs` together (on this task) and returns their outputs in order: concurrent
/// appends from one test task without spawning.
pub async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The record values `batch` made with `batch()` carries ("tag{t}-rec{i}"), found in its
/// uncompressed bytes in order.
pub fn values(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 <= b.len() {
        if &b[i..i + 3] == b"tag" {
            let mut j = i + 3;
            let digits = |j: &mut usize| {
                let s = *j;
                while *j < b.len() && b[*j].is_ascii_digit() {
                    *j += 1;
                }
                *j > s
            };
            if digits(&mut j) && b[j..].starts_with(b"-rec") {
                j += 4;
                if digits(&mut j) {
                    out.push(b[i..j].to_vec());
                    i = j;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}
