//! Storage benchmark: append throughput of `chronik_storage::PartitionLog` against the raw
//! O_DIRECT write limit of the same disk, measured in the same run, plus read throughput.
//!
//!   cargo run --release -p chronik-bench --bin log_bench -- [--secs N] [--dir PATH]
//!
//! Batches are Kafka v2 record batches of 16 records × 1 KiB (≈16.5 KiB). Every scenario runs
//! for `--secs` seconds (default 3) on a fresh log in `--dir` (default: the system temp dir,
//! which must be on the disk you want to measure, not tmpfs).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chronik_storage::testing::build_batch_of;
use chronik_storage::{FlushPolicy, LogConfig, PartitionLog, ReadCache};
use clap::Parser;
use glommio::io::{DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};

const RECORDS: usize = 16;
const RECORD_BYTES: usize = 1024;

/// Storage benchmark (see the file's header).
#[derive(Parser)]
struct Args {
    /// Length of each scenario, seconds.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Where the logs go (must be on the disk to measure, not tmpfs).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
}

struct Figures {
    bytes: u64,
    batches: u64,
    fsyncs: u64,
    writes: u64,
    elapsed: Duration,
}

impl Figures {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(format!("chronik-log-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Sequential O_DIRECT writes of `size` bytes (QD1) into a preallocated file; optionally an
/// fdatasync after each write. This is the ceiling our append path is compared to.
async fn raw_writes(root: &Path, size: usize, sync_each: bool, secs: f64) -> Figures {
    let dir = fresh_dir(root, "raw");
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let path = dir.join("raw.dat");
    // glommio probes io_uring poll support on the first O_DIRECT file a thread opens on a
    // device by reading its first block; give it a block to read so the probe is truthful.
    std::fs::write(&path, vec![0u8; 4096]).expect("create raw file");
    let file: DmaFile = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .expect("open raw file");
    let _ = file.pre_allocate(4 << 30, true).await;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut pos, mut writes, mut fsyncs) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let mut buf = file.alloc_dma_buffer(size);
        buf.as_bytes_mut().fill(0x5a);
        let n = file.write_at(buf, pos).await.expect("raw write");
        pos += n as u64;
        writes += 1;
        if sync_each {
            file.fdatasync().await.expect("raw fdatasync");
            fsyncs += 1;
        }
    }
    let elapsed = start.elapsed();
    let _ = file.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Figures {
        bytes: pos,
        batches: writes,
        fsyncs,
        writes,
        elapsed,
    }
}

/// `appenders` tasks appending 16 × 1 KiB batches as fast as the log lets them.
async fn appends(root: &Path, flush: FlushPolicy, appenders: usize, secs: f64) -> Figures {
    let dir = fresh_dir(root, "append");
    let cfg = LogConfig {
        flush,
        ..LogConfig::default()
    };
    let log = Rc::new(
        PartitionLog::open(&dir, cfg, ReadCache::new(64 << 20))
            .await
            .expect("open log"),
    );
    let template = build_batch_of(RECORDS, RECORD_BYTES, 7, 0);
    let bytes = Rc::new(Cell::new(0u64));
    let batches = Rc::new(Cell::new(0u64));
    let fsync0 = log.fsync_count();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (log, template, bytes, batches) = (
            log.clone(),
            template.clone(),
            bytes.clone(),
            batches.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            while Instant::now() < deadline {
                // A fresh buffer per append, as a produce request would bring.
                let b = BytesMut::from(&template[..]);
                let len = b.len() as u64;
                log.append(b, 0).await.expect("append");
                bytes.set(bytes.get() + len);
                batches.set(batches.get() + 1);
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed();
    let fsyncs = log.fsync_count() - fsync0;
    let writes = log.write_count();
    if let Ok(log) = Rc::try_unwrap(log) {
        let _ = log.delete().await;
    }
    Figures {
        bytes: bytes.get(),
        batches: batches.get(),
        fsyncs,
        writes,
        elapsed,
    }
}

/// Writes ~`total` bytes, then reads the tail from the cache and the whole log cold from disk.
async fn reads(root: &Path, total: u64, secs: f64) -> (Figures, Figures) {
    let dir = fresh_dir(root, "read");
    let cfg = LogConfig::default();
    let cache_budget = 256 << 20;
    let log = PartitionLog::open(&dir, cfg.clone(), ReadCache::new(cache_budget))
        .await
        .expect("open log");
    let template = build_batch_of(RECORDS, RECORD_BYTES, 3, 0);
    let mut written = 0u64;
    while written < total {
        let b = BytesMut::from(&template[..]);
        written += b.len() as u64;
        log.append(b, 0).await.expect("append");
    }
    log.flush().await.expect("flush");
    let leo = log.log_end_offset();
    // Tail: the newest ~128 MiB, which the 256 MiB cache holds, read 1 MiB at a time.
    let tail_batches = (128u64 << 20) / template.len() as u64;
    let tail_start = leo - (tail_batches * RECORDS as u64) as i64;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut bytes, mut batches) = (0u64, 0u64);
    let mut next = tail_start;
    while Instant::now() < deadline {
        let got = log.read(next, 1 << 20, leo).await.expect("tail read");
        for b in &got {
            bytes += b.len() as u64;
        }
        batches += got.len() as u64;
        next += (got.len() * RECORDS) as i64;
        if next >= leo {
            next = tail_start;
        }
    }
    let tail = Figures {
        bytes,
        batches,
        fsyncs: 0,
        writes: 0,
        elapsed: start.elapsed(),
    };
    log.close().await.expect("close");
    // Cold: reopen with no cache; every read is an aligned O_DIRECT read (no page cache).
    let log = PartitionLog::open(&dir, cfg, ReadCache::new(0))
        .await
        .expect("reopen");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let (mut bytes, mut batches) = (0u64, 0u64);
    let mut next = 0i64;
    while next < leo && Instant::now() < deadline {
        let got = log.read(next, 1 << 20, leo).await.expect("cold read");
        for b in &got {
            bytes += b.len() as u64;
        }
        batches += got.len() as u64;
        next += (got.len() * RECORDS) as i64;
    }
    let cold = Figures {
        bytes,
        batches,
        fsyncs: 0,
        writes: 0,
        elapsed: start.elapsed(),
    };
    let _ = log.delete().await;
    (tail, cold)
}

fn main() {
    let args = Args::parse();
    let secs = args.secs;
    let root = args.dir.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let batch_len = build_batch_of(RECORDS, RECORD_BYTES, 0, 0).len();
            let raw_size = batch_len.div_ceil(4096) * 4096;
            println!("log_bench: {RECORDS} records x {RECORD_BYTES} B per batch = {batch_len} B; {secs} s per scenario; dir {}", root.display());
            println!();
            println!("{:<44} {:>9} {:>11} {:>10}", "raw O_DIRECT (glommio DmaFile, QD1)", "MB/s", "writes/s", "fsyncs/s");
            let raw = raw_writes(&root, raw_size, false, secs).await;
            println!("{:<44} {:>9.1} {:>11.0} {:>10}", format!("sequential {raw_size} B writes"), raw.mb_s(), raw.per_s(raw.batches), "-");
            let raw_sync = raw_writes(&root, raw_size, true, secs).await;
            println!(
                "{:<44} {:>9.1} {:>11.0} {:>10.0}",
                format!("sequential {raw_size} B writes + fdatasync"),
                raw_sync.mb_s(),
                raw_sync.per_s(raw_sync.batches),
                raw_sync.per_s(raw_sync.fsyncs)
            );
            let raw_big = raw_writes(&root, 1 << 20, false, secs).await;
            println!("{:<44} {:>9.1} {:>11.0} {:>10}", "sequential 1 MiB writes", raw_big.mb_s(), raw_big.per_s(raw_big.batches), "-");
            println!();
            println!(
                "{:<30} {:>9} {:>11} {:>10} {:>13} {:>13} {:>10}",
                "PartitionLog::append", "MB/s", "batches/s", "fsyncs/s", "vs raw 16K", "vs raw 1MiB", "KiB/write"
            );
            for (name, flush) in [("interval(1000ms)", FlushPolicy::IntervalMs(1000)), ("always", FlushPolicy::Always)] {
                for appenders in [1usize, 8, 64] {
                    let f = appends(&root, flush, appenders, secs).await;
                    println!(
                        "{:<30} {:>9.1} {:>11.0} {:>10.1} {:>12.0}% {:>12.0}% {:>10.0}",
                        format!("{name}, {appenders} appenders"),
                        f.mb_s(),
                        f.per_s(f.batches),
                        f.per_s(f.fsyncs),
                        100.0 * f.mb_s() / raw.mb_s(),
                        100.0 * f.mb_s() / raw_big.mb_s(),
                        f.bytes as f64 / f.writes.max(1) as f64 / 1024.0
                    );
                }
            }
            println!();
            let (tail, cold) = reads(&root, 512 << 20, secs).await;
            println!("{:<44} {:>9} {:>11}", "PartitionLog::read (1 MiB max_bytes)", "MB/s", "batches/s");
            println!("{:<44} {:>9.1} {:>11.0}", "tail, from the read cache", tail.mb_s(), tail.per_s(tail.batches));
            println!("{:<44} {:>9.1} {:>11.0}", "cold, aligned O_DIRECT reads from disk", cold.mb_s(), cold.per_s(cold.batches));
        })
        .expect("spawn executor")
        .join()
        .expect("executor");
}
