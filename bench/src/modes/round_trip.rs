//! Round-trip mode: producers and consumers at once; latency is produce-to-consume per message,
//! from the timestamp each value carries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::Args;
use crate::consumer::{run_consumers, FetchLoop, Position};
use crate::cpu::CpuTimes;
use crate::metadata::LATEST;
use crate::payload::PayloadPool;
use crate::producer::{run_producers, ProduceRun, RunControl};
use crate::report::{spawn_progress, RunReport};
use crate::stats::Stats;
use crate::validate::{AckTracker, Validator};

use super::produce::{
    measured_elapsed, produce_config, produce_latency_label, start_warmup_timer, stop_on_ctrl_c,
    stored_between, verify_stored,
};
use super::{copy_errors, maybe_delete, start_producing};

pub async fn run(args: &Args) -> Result<RunReport> {
    let (mut report, cluster, part_ids, start_offsets) =
        start_producing(args, "round-trip").await?;
    let partitions = report.partitions;

    let measuring = args.warmup_duration.is_zero();
    let produce_stats = Arc::new(Stats::new(measuring));
    let consume_stats = Arc::new(Stats::new(measuring));
    let tracker = args.validate.then(|| Arc::new(AckTracker::default()));
    let validator = args.validate.then(|| Arc::new(Validator::default()));
    let t0 = Instant::now();
    let cpu0 = CpuTimes::now();
    let deadline = t0 + args.warmup_duration + args.run_duration();
    let produce_control = Arc::new(RunControl::new(deadline, args.message_count));
    // Consumers get a grace period after the producers stop to read the tail.
    let grace = args.request_timeout().min(Duration::from_secs(10));
    let consume_control = Arc::new(RunControl::new(
        deadline + args.request_timeout() + grace,
        None,
    ));

    let positions: Vec<Position> = part_ids
        .iter()
        .map(|&p| Position {
            partition: p,
            offset: start_offsets.get(&p).copied().unwrap_or(0),
            end: None,
        })
        .collect();
    let fetch = Arc::new(FetchLoop {
        cluster: cluster.clone(),
        cfg: super::consume_config(args, positions.len(), Duration::from_millis(50), true),
        stats: consume_stats.clone(),
        control: consume_control.clone(),
        validator: validator.clone(),
    });
    let consumer_tasks = args.concurrency.min(positions.len()).max(1);
    let consumers = tokio::spawn(run_consumers(consumer_tasks, fetch, positions));

    let measure_start = start_warmup_timer(
        vec![produce_stats.clone(), consume_stats.clone()],
        args.warmup_duration,
    );
    let progress = spawn_progress(
        "round-trip (consumed)",
        consume_stats.clone(),
        args.report_interval(),
    );
    let ctrl_c = stop_on_ctrl_c(produce_control.clone());
    let cfg = Arc::new(produce_config(args, partitions, true));
    let pool = Arc::new(PayloadPool::new(args.payload_pattern, args.message_size));
    run_producers(
        args.concurrency,
        ProduceRun {
            cfg,
            cluster: cluster.clone(),
            stats: produce_stats.clone(),
            control: produce_control,
            tracker: tracker.clone(),
            pool,
        },
    )
    .await?;
    let produce_elapsed = measured_elapsed(&measure_start);

    // Let consumers catch up with everything acknowledged, within the grace period.
    let catch_up_deadline = Instant::now() + grace;
    while consume_stats.all_messages() < produce_stats.all_messages()
        && Instant::now() < catch_up_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consume_control.stop();
    consumers.await??;
    drop(progress);
    ctrl_c.abort();
    let elapsed = produce_elapsed.max(Duration::from_millis(1));
    let wall = t0.elapsed();
    let cpu = CpuTimes::now().since(&cpu0);

    let c = consume_stats.snapshot();
    let p = produce_stats.snapshot();
    report.set_throughput(c.messages, c.bytes, elapsed);
    report.set_latency("end-to-end", &c.latency);
    copy_errors(&mut report, &p);
    copy_errors(&mut report, &c);
    report.set_cpu(cpu, wall);
    report.notes.push(format!(
        "produced {} acknowledged messages; {} latency p50 {:.2} ms p99 {:.2} ms",
        p.messages,
        produce_latency_label(args),
        p.latency.p50_ms,
        p.latency.p99_ms
    ));
    if c.all_messages < p.all_messages {
        report.notes.push(format!(
            "consumers read {} of {} acknowledged messages before the grace period ended",
            c.all_messages, p.all_messages
        ));
    }
    let end_offsets = cluster.list_offsets(&args.topic, &part_ids, LATEST).await?;
    verify_stored(
        &mut report,
        args.acks.0,
        p.all_messages,
        stored_between(&start_offsets, &end_offsets),
    );
    if args.acks.0 != 0 && p.all_messages == 0 {
        report.fail("no message was acknowledged".into());
    }
    if let (Some(v), Some(t)) = (validator, tracker) {
        let summary = v.summary(Some(&t));
        report.set_validation(&summary);
    }
    maybe_delete(&cluster, args, &mut report).await;
    Ok(report)
}
