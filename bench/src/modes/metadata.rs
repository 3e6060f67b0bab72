//! Metadata mode: create N topics with concurrency C; report creations/s and, per topic, the time
//! from the CreateTopics request until every bootstrap server's Metadata shows the topic with a
//! leader for each partition.
//!
//! The Metadata polls go over connections of their own: on the connection that carries the
//! CreateTopics requests, a poll would be answered only after every creation sent before it
//! (Kafka answers a connection's requests in order), and the time measured would be the other
//! clients' creations, not this topic's visibility.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cli::Args;
use crate::client::classify;
use crate::cpu::CpuTimes;
use crate::metadata::{topic_from_metadata, Cluster};
use crate::report::{spawn_progress, RunReport};
use crate::stats::{new_histogram, record_latency, LatencySummary, Stats};

use super::{base_report, connect, copy_errors};

pub async fn run(args: &Args) -> Result<RunReport> {
    let mut report = base_report(args, "metadata");
    report.acks = String::new();
    report.message_size = 0;
    let cluster = connect(args).await?;
    let watcher = connect(args).await?;
    let count = args.message_count.unwrap_or(100);
    let run_id = crate::payload::now_us() / 1_000_000;
    let prefix = format!("{}-{run_id}", args.topic);
    report.topic = format!("{prefix}-*");

    let stats = Arc::new(Stats::new(true));
    let create_latency = Arc::new(Mutex::new(new_histogram()));
    let created = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let cpu0 = CpuTimes::now();
    let deadline = t0 + args.run_duration();
    let progress = spawn_progress(
        "metadata (topics visible)",
        stats.clone(),
        args.report_interval(),
    );
    let mut handles = Vec::new();
    for _ in 0..args.concurrency {
        let (cluster, watcher, stats, create_latency, created, next) = (
            cluster.clone(),
            watcher.clone(),
            stats.clone(),
            create_latency.clone(),
            created.clone(),
            next.clone(),
        );
        let (prefix, partitions, rf, verbose) = (
            prefix.clone(),
            args.partitions,
            args.replication_factor,
            args.verbose,
        );
        let timeout = args.request_timeout();
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                let name = format!("{prefix}-{i}");
                let start = Instant::now();
                if let Err(e) = cluster.create_topic(&name, partitions, rf).await {
                    stats.record_error(&classify(&e), 1);
                    if verbose {
                        eprintln!("create {name}: {e:#}");
                    }
                    continue;
                }
                if let Ok(mut h) = create_latency.lock() {
                    record_latency(&mut h, start.elapsed());
                }
                if let Ok(mut c) = created.lock() {
                    c.push(name.clone());
                }
                match wait_visible_everywhere(&watcher, &name, partitions, timeout).await {
                    Ok(()) => stats.record_success(1, 0, Some(start.elapsed())),
                    Err(e) => {
                        stats.record_error("CLIENT_TOPIC_NOT_VISIBLE", 1);
                        if verbose {
                            eprintln!("{name}: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    drop(progress);
    let elapsed = t0.elapsed();
    let cpu = CpuTimes::now().since(&cpu0);
    let snap = stats.snapshot();
    report.set_throughput(snap.messages, 0, elapsed);
    report.set_latency("topic-visible", &snap.latency);
    copy_errors(&mut report, &snap);
    report.set_cpu(cpu, elapsed);
    let cl = create_latency
        .lock()
        .map(|h| LatencySummary::of(&h))
        .unwrap_or_default();
    report.notes.push(format!(
        "{} of {count} topics created and visible on all {} bootstrap server(s); msgs_per_sec is creations/s; CreateTopics response latency p50 {:.2} ms p99 {:.2} ms",
        snap.messages,
        cluster.bootstrap_servers().len(),
        cl.p50_ms,
        cl.p99_ms
    ));
    if snap.messages < count {
        report.fail(format!(
            "only {} of {count} topics were created and became visible",
            snap.messages
        ));
    }
    if args.delete_topic_after {
        let names = created.lock().map(|c| c.clone()).unwrap_or_default();
        if let Err(e) = cluster.delete_topics(&names).await {
            report
                .notes
                .push(format!("could not delete the created topics: {e:#}"));
        } else {
            eprintln!("deleted {} topics", names.len());
        }
    }
    Ok(report)
}

/// Polls Metadata on every bootstrap server until the topic is there with every partition led.
async fn wait_visible_everywhere(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let names = [topic.to_string()];
    for addr in cluster.bootstrap_servers() {
        loop {
            let conn = cluster.connection(addr).await?;
            if let Ok(resp) = cluster.metadata_from(&conn, Some(&names)).await {
                if let Some(t) = topic_from_metadata(&resp, topic) {
                    if t.is_ready() && t.partitions.len() as i32 == partitions {
                        break;
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("'{topic}' not visible on {addr} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}
