//! Consume mode: every partition from the earliest offset, spread over -c fetch tasks (with
//! --consumer-group: `group_consume`, real group members); stops at --duration (even with no
//! data), at -n messages, or with --stop-at-end at the end offsets the partitions had when the
//! run began.

use std::sync::Arc;

use anyhow::Result;

use crate::cli::Args;
use crate::consumer::{run_consumers, FetchLoop, Position};
use crate::metadata::{EARLIEST, LATEST};
use crate::report::RunReport;
use crate::stats::Stats;
use crate::validate::Validator;

use super::clock::{RunClock, Watch};
use super::produce::{measured_elapsed, start_warmup_timer};
use super::{base_report, connect, maybe_delete, prepare_topic, record_run};

pub async fn run(args: &Args) -> Result<RunReport> {
    if let Some(group) = &args.consumer_group {
        return super::group_consume::run(args, group).await;
    }
    let mut report = base_report(args, "consume");
    report.acks = String::new();
    let cluster = connect(args).await?;
    let info = prepare_topic(&cluster, args).await?;
    let partitions = info.partitions.len() as i32;
    report.partitions = partitions;
    let part_ids: Vec<i32> = (0..partitions).collect();
    let starts = cluster
        .list_offsets(&args.topic, &part_ids, EARLIEST)
        .await?;
    let ends = if args.stop_at_end {
        Some(cluster.list_offsets(&args.topic, &part_ids, LATEST).await?)
    } else {
        None
    };
    let positions: Vec<Position> = part_ids
        .iter()
        .map(|&p| Position {
            partition: p,
            offset: starts.get(&p).copied().unwrap_or(0),
            end: ends.as_ref().and_then(|e| e.get(&p).copied()),
        })
        .collect();

    let stats = Arc::new(Stats::new(args.warmup_duration.is_zero()));
    let validator = args.validate.then(|| Arc::new(Validator::default()));
    let clock = RunClock::start();
    let control = clock.control(args);
    let fetch = Arc::new(FetchLoop {
        cluster: cluster.clone(),
        cfg: super::group_consume::consume_config(args, positions.len()),
        stats: stats.clone(),
        control: control.clone(),
        validator: validator.clone(),
    });
    let measure_start = start_warmup_timer(vec![stats.clone()], args.warmup_duration);
    let watch = Watch::start("consume", &stats, &control, args);
    let final_positions = run_consumers(args.concurrency, fetch, positions).await?;
    watch.stop();
    let elapsed = measured_elapsed(&measure_start);
    let (wall, cpu) = clock.wall_and_cpu();
    let snap = stats.snapshot();
    record_run(&mut report, &snap, "fetch-request", elapsed, cpu, wall);

    if let Some(v) = validator {
        let summary = v.summary(None);
        report.set_validation(&summary);
    }
    if let Some(ends) = ends {
        let behind: Vec<String> = final_positions
            .iter()
            .filter(|p| !p.done())
            .map(|p| {
                format!(
                    "{}: at {} of {}",
                    p.partition,
                    p.offset,
                    ends.get(&p.partition).copied().unwrap_or(-1)
                )
            })
            .collect();
        if !behind.is_empty() {
            report.notes.push(format!(
                "--stop-at-end: not all partitions reached their end ({})",
                behind.join(", ")
            ));
        }
    }
    maybe_delete(&cluster, args, &mut report).await;
    Ok(report)
}
