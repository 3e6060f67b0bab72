//! Log cleaner benchmark: cleaning throughput on a keyed log where 10% of the records are the
//! latest of their key, and produce throughput / p99 append latency on another log of the same
//! executor while the cleaner runs (in a low-share task queue, as on a broker shard), as a
//! ratio to the same produce run without cleaning.
//!
//!   cargo run --release -p chronik-bench --bin cleaner_bench -- [--mib N] [--secs S]
//!       [--rounds R] [--shares N] [--io-max BYTES_PER_SEC] [--dir PATH]
//!
//! Defaults: a 256 MiB keyed log (scaled down from the 1 GiB for small shared
//! machines), 100-byte values, 10 versions of each key written in shuffled order. The produce
//! comparison runs R rounds (default 5), each a run without cleaning and a run while a fresh
//! copy of the dirty log is cleaned, in alternating order (the shared machine's speed drifts),
//! and reports each round's ratios and their medians.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use chronik_storage::testing::{build_batch, build_batch_of, Record};
use chronik_storage::{
    CleanerLimits, CleanerPace, CleanupPolicy, CompactionConfig, LogConfig, PartitionLog, ReadCache,
};
use clap::Parser;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;

const VERSIONS: usize = 10;
const VALUE: usize = 100;
const PER_BATCH: usize = 100;

/// Log cleaner benchmark (see the file's header).
#[derive(Parser)]
struct Args {
    /// Size of the keyed log to clean, MiB.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Length of each produce run, seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Rounds of (produce alone, produce while cleaning).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The cleaner's shares against the request path's 1000 (the broker's
    /// `--log-cleaner-shares`): its task queue and its pace under load.
    #[arg(long, default_value_t = 50)]
    shares: usize,
    /// Cap on the cleaner's I/O, bytes per second.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    io_max: Option<u64>,
    /// Where the logs go (must be on the disk to measure, not tmpfs).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
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

/// Copies a log directory and syncs the copy, so its writeback does not land in a produce run.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list").flatten() {
        let dst = to.join(e.file_name());
        std::fs::copy(e.path(), &dst).expect("copy");
        std::fs::File::open(&dst)
            .and_then(|f| f.sync_all())
            .expect("sync copy");
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

/// Produce for `secs` on `plog` while a low-share task cleans the dirty log at `dirty`;
/// whether the cleaner was still busy when the produce run ended.
async fn produce_while_cleaning(
    plog: Rc<PartitionLog>,
    dirty: &Path,
    limits: &CleanerLimits,
    shares: usize,
    secs: f64,
) -> (ProduceRun, bool) {
    let log = Rc::new(
        PartitionLog::open(dirty, compact_cfg(), ReadCache::new(1 << 20))
            .await
            .expect("open"),
    );
    let tq = glommio::executor().create_task_queue(
        Shares::Static(shares),
        Latency::NotImportant,
        "cleaner",
    );
    let cleaning = Rc::new(Cell::new(true));
    let (d, c, l) = (log.clone(), cleaning.clone(), limits.clone());
    let cleaner = glommio::spawn_local_into(
        async move {
            let r = d.clean(&l).await;
            c.set(false);
            r
        },
        tq,
    )
    .expect("spawn cleaner");
    let run = produce(plog, secs).await;
    let busy = cleaning.get();
    cleaner.await.expect("clean");
    // The cleaner's task is done, so this is the last reference.
    if let Ok(log) = Rc::try_unwrap(log) {
        log.close().await.expect("close");
    }
    (run, busy)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let args = Args::parse();
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
            let dirty_copy = root.join("dirty");
            copy_dir(&keyed, &dirty_copy);
            let limits = CleanerLimits {
                pace: CleanerPace::from_shares(args.shares, args.io_max),
                ..CleanerLimits::new(128 << 20, 1_800_000_000_000)
            };

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

            // 2. Produce on another log of the executor, without and with the cleaner running
            // (at `--shares`, default 50, as a broker shard runs it), in alternating order.
            let plog = Rc::new(
                PartitionLog::open(root.join("produce"), LogConfig::default(), ReadCache::new(64 << 20))
                    .await
                    .expect("open"),
            );
            let rate = |p: &ProduceRun| p.batches as f64 * 16.0 * 1024.0 / 1e6 / p.elapsed.as_secs_f64();
            let (mut tput, mut p99) = (Vec::new(), Vec::new());
            for round in 0..args.rounds {
                let fresh = root.join(format!("dirty-{round}"));
                copy_dir(&dirty_copy, &fresh);
                let mut runs: [Option<ProduceRun>; 2] = [None, None];
                let mut cleaner_ran = true;
                for which in [round % 2, 1 - round % 2] {
                    if which == 0 {
                        runs[0] = Some(produce(plog.clone(), args.secs).await);
                        continue;
                    }
                    let (run, ran) = produce_while_cleaning(plog.clone(), &fresh, &limits, args.shares, args.secs).await;
                    runs[1] = Some(run);
                    cleaner_ran = ran;
                }
                let _ = std::fs::remove_dir_all(&fresh);
                let [Some(alone), Some(during)] = runs else { unreachable!() };
                let (t, p) = (
                    rate(&during) / rate(&alone),
                    during.p99_us as f64 / alone.p99_us.max(1) as f64,
                );
                println!(
                    "round {round}: alone {:.1} MB/s p99 {} us; while cleaning {:.1} MB/s p99 {} us \
                     (cleaner {}); ratio throughput {t:.2}, p99 {p:.2}x",
                    rate(&alone),
                    alone.p99_us,
                    rate(&during),
                    during.p99_us,
                    if cleaner_ran { "busy the whole run" } else { "finished early" },
                );
                tput.push(t);
                p99.push(p);
            }
            println!(
                "median of {} rounds: throughput ratio {:.2}, p99 ratio {:.2}x",
                args.rounds,
                median(&mut tput),
                median(&mut p99)
            );
        })
        .expect("executor")
        .join()
        .expect("join");
    let _ = std::fs::remove_dir_all(cleanup);
}
