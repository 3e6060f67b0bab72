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

/// A crash test's writer loop: appends batches of 1..`max_records` records of 8..`max_len`
/// bytes to `log` for ever, printing "ACK {label}{base} {last} {crc}" for each acknowledged
/// one (flushed at once: the process is killed at any moment).
pub async fn append_and_report_forever(
    log: Rc<PartitionLog>,
    writer: u8,
    max_records: usize,
    max_len: usize,
    label: String,
) {
    use rand::Rng;
    use std::io::Write;
    let mut seq = 0i64;
    loop {
        let (n, len) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(1..max_records), rng.gen_range(8..max_len))
        };
        let b =
            chronik_storage::testing::build_batch_of(n, len, writer.wrapping_add(seq as u8), seq);
        let crc = parse_header(&b).expect("header").crc;
        let r = log.append(b, 1).await.expect("append");
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "ACK {label}{} {} {}",
            r.base_offset, r.last_offset, crc
        );
        let _ = out.flush();
        seq += 1;
    }
}

/// Runs this test binary's test `child` as a writer process with `env`, SIGKILLs it after
/// `delay`, and returns the fields after "ACK" of every line it printed.
pub fn kill_writer_after(
    child: &str,
    env: &[(&str, String)],
    delay: std::time::Duration,
) -> Vec<Vec<String>> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([child, "--exact", "--nocapture", "--test-threads=1"])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = cmd.spawn().expect("spawn writer");
    let stdout = proc.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                (f.next() == Some("ACK")).then(|| f.map(str::to_string).collect())
            })
            .collect::<Vec<Vec<String>>>()
    });
    std::thread::sleep(delay);
    proc.kill().expect("SIGKILL writer");
    let status = proc.wait().expect("wait writer");
    assert!(
        !status.success(),
        "writer must have been killed, not have exited"
    );
    reader.join().expect("reader thread")
}
