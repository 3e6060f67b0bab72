//! Log cleaner benchmark: cleaning throughput on a keyed log where 10% of the records are the
//! latest of their key, and produce throughput / p99 append latency on another log of the same
//! executor while the cleaner runs (in a low-share task queue, as on a broker shard), as a
//! ratio to the same produce run without cleaning.
//!
//!   cargo run --release -p chronik-bench --bin cleaner_bench -- [--mib N] [--secs S] [--dir PATH]
//!
//! Defaults: a 256 MiB keyed log (scaled down from the 1 GiB for small shared
//! machines), 100-byte values, 10 versions of each key written in shuffled order.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use chronik_storage::testing::{build_batch, build_batch_of, Record};
use chronik_storage::{
    CleanerLimits, CleanupPolicy, CompactionConfig, LogConfig, PartitionLog, ReadCache,
};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;

const VERSIONS: usize = 10;
const VALUE: usize = 100;
const PER_BATCH: usize = 100;

struct Args {
    mib: u64,
    secs: f64,
    dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mib: 256,
        secs: 5.0,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match x.as_str() {
            "--mib" => a.mib = val("--mib")?.parse().map_err(|_| "bad --mib")?,
            "--secs" => a.secs = val("--secs")?.parse().map_err(|_| "bad --secs")?,
            "--dir" => a.dir = PathBuf::from(val("--dir")?),
            _ => return Err("usage: cleaner_bench [--mib N] [--secs S] [--dir PATH]".into()),
        }
    }
    Ok(a)
}

fn compact_cfg() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        cleanup: CleanupPolicy {
            delete: false,
            compact: true,
        },
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        },
        ..LogConfig::default()
    }
}

/// Writes about `mib` MiB of keyed records, each key `VERSIONS` times, then rolls the log.
async fn write_keyed(dir: &Path, mib: u64) -> u64 {
    let log = PartitionLog::open(dir, compact_cfg(), ReadCache::new(1 << 20))
        .await
        .expect("open");
    let per_record = VALUE + 30;
    let records = (mib << 20) / per_record as u64;
    let keys = (records / VERSIONS as u64).max(1);
    let mut rng = rand::thread_rng();
    let value = [b'v'; VALUE];
    let mut order: Vec<u64> = (0..keys).collect();
    for _ in 0..VERSIONS {
        order.shuffle(&mut rng);
        for chunk in order.chunks(PER_BATCH) {
            let ks: Vec<Vec<u8>> = chunk
                .iter()
                .map(|k| format!("key-{k:012}").into_bytes())
                .collect();
            let recs: Vec<Record<'_>> = ks
                .iter()
                .map(|k| (Some(&k[..]), Some(&value[..])))
                .collect();
            log.append(build_batch(&recs, 1_700_000_000_000), 0)
                .await
                .expect("append");
        }
    }
    // A batch in a fresh segment, so all keyed data is sealed (cleanable).
    let mut cfg = compact_cfg();
    cfg.segment_ms = Some(0);
    log.set_config(cfg);
    log.append(build_batch_of(1, 10, 0, 0), 0)
        .await
        .expect("roll");
    log.set_config(compact_cfg());
    let size = log.size_bytes();
    log.close().await.expect("close");
    size
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

struct ProduceRun {
    batches: u64,
    elapsed: Duration,
    p99_us: u64,
}

/// Four appenders on `log` for `secs`, 16 × 1 KiB records a batch; latency of each append.
async fn produce(log: Rc<PartitionLog>, secs: f64) -> ProduceRun {
    let hist = Rc::new(std::cell::RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let count = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let (log, hist, count) = (log.clone(), hist.clone(), count.clone());
        tasks.push(glommio::spawn_local(async move {
            while Instant::now() < until {
                let b = build_batch_of(16, 1024, w, 0);
                let t = Instant::now();
                log.append(b, 0).await.expect("append");
                let _ = hist.borrow_mut().record(t.elapsed().as_micros() as u64);
                count.set(count.get() + 1);
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let p99_us = hist.borrow().value_at_quantile(0.99);
    ProduceRun {
        batches: count.get(),
        elapsed: start.elapsed(),
        p99_us,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let root = args
        .dir
        .join(format!("cleaner-bench-{}", std::process::id()));
    let cleanup = root.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let keyed = root.join("keyed");
            let t = Instant::now();
            let size = write_keyed(&keyed, args.mib).await;
            println!(
                "wrote keyed log: {:.1} MiB in {:.1} s",
                size as f64 / 1048576.0,
                t.elapsed().as_secs_f64()
            );
            copy_dir(&keyed, &root.join("keyed-2"));
            let limits = CleanerLimits::new(128 << 20, 1_800_000_000_000);

            // 1. Cleaner alone.
            let log = PartitionLog::open(&keyed, compact_cfg(), ReadCache::new(1 << 20))
                .await
                .expect("open");
            let t = Instant::now();
            let s = log.clean(&limits).await.expect("clean").expect("ran");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "cleaner alone: {:.1} s; log {:.1} MiB -> {:.1} MiB; {:.1} MB/s of log cleaned, \
                 {:.1} MB/s read (map + two passes), {:.1} MB/s written; {} records removed",
                secs,
                size as f64 / 1048576.0,
                log.size_bytes() as f64 / 1048576.0,
                size as f64 / 1e6 / secs,
                s.bytes_read as f64 / 1e6 / secs,
                s.bytes_written as f64 / 1e6 / secs,
                s.records_removed
            );
            log.close().await.expect("close");

            // 2. Produce alone, then 3. produce while the cleaner runs at 50 shares.
            let plog = Rc::new(
                PartitionLog::open(root.join("produce"), LogConfig::default(), ReadCache::new(64 << 20))
                    .await
                    .expect("open"),
            );
            let alone = produce(plog.clone(), args.secs).await;
            let dirty = Rc::new(
                PartitionLog::open(root.join("keyed-2"), compact_cfg(), ReadCache::new(1 << 20))
                    .await
                    .expect("open"),
            );
            let tq = glommio::executor().create_task_queue(
                Shares::Static(50),
                Latency::NotImportant,
                "cleaner",
            );
            let cleaning = Rc::new(Cell::new(true));
            let (d, c) = (dirty.clone(), cleaning.clone());
            let cleaner = glommio::spawn_local_into(
                async move {
                    let t = Instant::now();
                    let r = d.clean(&limits).await;
                    c.set(false);
                    (r, t.elapsed())
                },
                tq,
            )
            .expect("spawn cleaner");
            let during = produce(plog.clone(), args.secs).await;
            let still = cleaning.get();
            let (r, took) = cleaner.await;
            r.expect("clean");
            let rate = |p: &ProduceRun| p.batches as f64 * 16.0 * 1024.0 / 1e6 / p.elapsed.as_secs_f64();
            println!(
                "produce alone: {:.1} MB/s, p99 {} us",
                rate(&alone),
                alone.p99_us
            );
            println!(
                "produce while cleaning: {:.1} MB/s, p99 {} us (cleaner {} the whole run; it took {:.1} s)",
                rate(&during),
                during.p99_us,
                if still { "ran" } else { "did not run" },
                took.as_secs_f64()
            );
            println!(
                "ratio: throughput {:.2}, p99 {:.2}x",
                rate(&during) / rate(&alone),
                during.p99_us as f64 / alone.p99_us.max(1) as f64
            );
        })
        .expect("executor")
        .join()
        .expect("join");
    let _ = std::fs::remove_dir_all(cleanup);
}
