//! The five modes. Each returns a [`RunReport`]; `passed == false` means a non-zero exit.

pub mod clock;
pub mod consume;
pub mod group_consume;
pub mod metadata;
pub mod produce;
pub mod rebalance;
pub mod round_trip;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::{Args, Mode};
use crate::metadata::{Cluster, CreateOutcome, TopicInfo};
use crate::report::RunReport;

pub async fn run(args: &Args) -> Result<RunReport> {
    match args.mode {
        Mode::Produce => produce::run(args).await,
        Mode::Consume => consume::run(args).await,
        Mode::RoundTrip => round_trip::run(args).await,
        Mode::Metadata => metadata::run(args).await,
        Mode::Rebalance => rebalance::run(args).await,
    }
}

/// The report fields every mode fills the same way.
pub fn base_report(args: &Args, mode: &str) -> RunReport {
    RunReport {
        mode: mode.to_string(),
        bootstrap_servers: args.bootstrap_servers.clone(),
        topic: args.topic.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        message_size: args.message_size,
        concurrency: args.concurrency,
        acks: match args.acks.0 {
            -1 => "all".into(),
            n => n.to_string(),
        },
        compression: format!("{:?}", args.compression).to_lowercase(),
        batch_size: args.batch_size,
        linger_ms: args.linger_ms,
        client_cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        passed: true,
        ..RunReport::default()
    }
}

pub async fn connect(args: &Args) -> Result<Arc<Cluster>> {
    Cluster::bootstrap(
        args.bootstrap_list(),
        args.security()?,
        args.request_timeout(),
        args.verbose,
    )
    .await
    .with_context(|| format!("cannot reach any of {}", args.bootstrap_servers))
}

/// Creates the topic when asked, then waits until every partition has a leader.
pub async fn prepare_topic(cluster: &Cluster, args: &Args) -> Result<Arc<TopicInfo>> {
    if args.create_topic {
        match cluster
            .create_topic(&args.topic, args.partitions, args.replication_factor)
            .await?
        {
            CreateOutcome::Created => eprintln!(
                "created topic '{}' ({} partitions, replication factor {})",
                args.topic, args.partitions, args.replication_factor
            ),
            CreateOutcome::AlreadyExists => {
                eprintln!("topic '{}' already exists; using it as it is", args.topic)
            }
        }
    }
    let wait = args.request_timeout().max(Duration::from_secs(30));
    let info = cluster.wait_for_topic(&args.topic, wait).await?;
    if args.verbose {
        eprintln!(
            "topic '{}': {} partitions, leaders {:?}",
            args.topic,
            info.partitions.len(),
            info.partitions
        );
    }
    Ok(info)
}

pub async fn maybe_delete(cluster: &Cluster, args: &Args, report: &mut RunReport) {
    if args.delete_topic_after {
        match cluster
            .delete_topics(std::slice::from_ref(&args.topic))
            .await
        {
            Ok(()) => eprintln!("deleted topic '{}'", args.topic),
            Err(e) => report
                .notes
                .push(format!("could not delete topic '{}': {e:#}", args.topic)),
        }
    }
}

/// The start of a run that produces: its report, the cluster, the topic's partitions (the
/// topic created first if asked) and their end offsets now, to count what the run stored.
pub async fn start_producing(
    args: &Args,
    mode: &str,
) -> Result<(RunReport, Arc<Cluster>, Vec<i32>, HashMap<i32, i64>)> {
    let mut report = base_report(args, mode);
    let cluster = connect(args).await?;
    let info = prepare_topic(&cluster, args).await?;
    let partitions = info.partitions.len() as i32;
    report.partitions = partitions;
    let part_ids: Vec<i32> = (0..partitions).collect();
    let start_offsets = cluster
        .list_offsets(&args.topic, &part_ids, crate::metadata::LATEST)
        .await?;
    Ok((report, cluster, part_ids, start_offsets))
}

/// A measured run's figures into its report: throughput over `elapsed`, the latency histogram
/// (of kind `latency`), the errors, and the client's CPU time over `wall`.
pub fn record_run(
    report: &mut RunReport,
    snap: &crate::stats::StatsSnapshot,
    latency: &str,
    elapsed: Duration,
    cpu: crate::cpu::CpuTimes,
    wall: Duration,
) {
    report.set_throughput(snap.messages, snap.bytes, elapsed);
    report.set_latency(latency, &snap.latency);
    copy_errors(report, snap);
    report.set_cpu(cpu, wall);
}

/// How a run's fetch tasks read `partitions` partitions: fetch sizes from the message size, the
/// broker may hold each fetch up to `max_wait`.
pub fn consume_config(
    args: &Args,
    partitions: usize,
    max_wait: Duration,
    end_to_end: bool,
) -> Arc<crate::consumer::ConsumeConfig> {
    let (partition_max_bytes, max_bytes) =
        crate::consumer::ConsumeConfig::sizes_for(args.message_size, partitions);
    Arc::new(crate::consumer::ConsumeConfig {
        topic: args.topic.clone(),
        request_timeout: args.request_timeout(),
        max_wait,
        partition_max_bytes,
        max_bytes,
        end_to_end,
        verbose: args.verbose,
        isolation_level: 0,
    })
}

pub fn copy_errors(report: &mut RunReport, snap: &crate::stats::StatsSnapshot) {
    report.errors_total += snap.error_count;
    report.failed_messages += snap.failed;
    for (k, v) in &snap.errors {
        *report.errors.entry(k.clone()).or_insert(0) += v;
    }
}
