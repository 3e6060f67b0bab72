//! Consume mode with `--consumer-group G`: -c real group members (see `crate::group`), each
//! reading only the partitions the group's leader assigned it. The run starts every partition
//! at its earliest offset (it first commits those for the group, as an admin resetting offsets
//! does), so repeated runs do the same work; members resume from the group's committed offsets
//! after every rebalance. At the end the run checks that, across members and rebalances, every
//! offset was read exactly once.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::Args;
use crate::consumer::ConsumeConfig;
use crate::group::board::SyncBoard;
use crate::group::consumed::ConsumedRanges;
use crate::group::member::commit_as_admin;
use crate::group::runner::{run_member, Bounds, GroupRun, MemberSummary, OffsetReset};
use crate::group::MemberSettings;
use crate::metadata::{Cluster, EARLIEST, LATEST};
use crate::report::RunReport;
use crate::stats::Stats;
use crate::validate::Validator;

use super::clock::{RunClock, Watch};
use super::produce::start_warmup_timer;
use super::{base_report, connect, maybe_delete, prepare_topic, record_run};

/// How long a member may take to rejoin before the coordinator drops it from a rebalance
/// (Kafka takes max.poll.interval.ms; ours never blocks between polls that long).
pub const REBALANCE_TIMEOUT_MS: i32 = 60_000;

/// What a group consume run found, beyond its report (the integration tests read it).
pub struct GroupConsumeOutcome {
    pub report: RunReport,
    pub consumed: Arc<ConsumedRanges>,
    pub starts: HashMap<i32, i64>,
    pub ends: Option<HashMap<i32, i64>>,
    pub members: Vec<MemberSummary>,
}

pub fn member_settings(args: &Args, group: &str, partitions: i32) -> Arc<MemberSettings> {
    Arc::new(MemberSettings {
        group: group.to_string(),
        topic: args.topic.clone(),
        partitions,
        session_timeout_ms: args.session_timeout_ms.min(i32::MAX as u64) as i32,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        request_timeout: args.request_timeout(),
        verbose: args.verbose,
    })
}

/// Group members fetch as the consume mode does.
pub fn consume_config(args: &Args, partitions: usize) -> Arc<ConsumeConfig> {
    super::consume_config(args, partitions, Duration::from_millis(250), false)
}

/// Starts `n` members named member-0… ; a member that fails stops the whole run.
pub fn start_members(
    run: &Arc<GroupRun>,
    n: usize,
) -> (
    Vec<String>,
    Vec<tokio::task::JoinHandle<Result<MemberSummary>>>,
) {
    let names: Vec<String> = (0..n).map(|i| format!("member-{i}")).collect();
    let handles = names
        .iter()
        .map(|name| {
            let run = run.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let r = run_member(run.clone(), name).await;
                if r.is_err() {
                    run.control.stop();
                }
                r
            })
        })
        .collect();
    (names, handles)
}

/// Waits for the members; the first failure fails the report.
pub async fn finish_members(
    handles: Vec<tokio::task::JoinHandle<Result<MemberSummary>>>,
    report: &mut RunReport,
) -> Vec<MemberSummary> {
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(s)) => out.push(s),
            Ok(Err(e)) => report.fail(format!("group member failed: {e:#}")),
            Err(e) => report.fail(format!("group member task: {e}")),
        }
    }
    out
}

/// One note per member: generations, the last assignment, errors it met and handled.
pub fn member_notes(report: &mut RunReport, group: &str, members: &[MemberSummary]) {
    for m in members {
        let last = m
            .last
            .as_ref()
            .map(|a| {
                format!(
                    "generation {} partitions {:?}{}",
                    a.generation,
                    a.partitions,
                    if a.leader { " (leader)" } else { "" }
                )
            })
            .unwrap_or_else(|| "never assigned".into());
        let handled = if m.handled.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = m.handled.iter().map(|(k, v)| format!("{k} x{v}")).collect();
            format!("; handled {}", list.join(", "))
        };
        let commits = if m.failed_commits > 0 {
            format!("; {} failed commits", m.failed_commits)
        } else {
            String::new()
        };
        report.notes.push(format!(
            "group '{group}' {}: {} generation(s), last {last}{handled}{commits}",
            m.name, m.generations
        ));
    }
}

pub async fn run(args: &Args, group: &str) -> Result<RunReport> {
    Ok(run_group_consume(args, group).await?.report)
}

pub async fn run_group_consume(args: &Args, group: &str) -> Result<GroupConsumeOutcome> {
    let mut report = base_report(args, "consume");
    report.acks = String::new();
    let cluster: Arc<Cluster> = connect(args).await?;
    let info = prepare_topic(&cluster, args).await?;
    let partitions = info.partitions.len() as i32;
    report.partitions = partitions;
    let all: Vec<i32> = (0..partitions).collect();
    let starts = cluster.list_offsets(&args.topic, &all, EARLIEST).await?;
    let ends = if args.stop_at_end {
        Some(cluster.list_offsets(&args.topic, &all, LATEST).await?)
    } else {
        None
    };
    let settings = member_settings(args, group, partitions);
    let mut reset: Vec<(i32, i64)> = starts.iter().map(|(&p, &o)| (p, o)).collect();
    reset.sort_unstable();
    commit_as_admin(
        &cluster,
        &settings,
        &reset,
        Instant::now() + args.request_timeout().max(Duration::from_secs(30)),
    )
    .await
    .with_context(|| {
        format!(
            "consumer group '{group}': the group path failed (does the broker support consumer groups?): resetting its offsets to the earliest"
        )
    })?;

    let stats = Arc::new(Stats::new(args.warmup_duration.is_zero()));
    let validator = args.validate.then(|| Arc::new(Validator::default()));
    let clock = RunClock::start();
    let t0 = clock.t0;
    let control = clock.control(args);
    let consumed = Arc::new(ConsumedRanges::default());
    let run = Arc::new(GroupRun {
        cluster: cluster.clone(),
        settings,
        consume: consume_config(args, partitions as usize),
        stats: stats.clone(),
        control: control.clone(),
        validator: validator.clone(),
        board: Arc::new(SyncBoard::default()),
        consumed: consumed.clone(),
        heartbeat_interval: args.heartbeat_interval(),
        reset: OffsetReset::Earliest,
        bounds: ends.as_ref().map(|e| Bounds {
            starts: Arc::new(starts.clone()),
            ends: Arc::new(e.clone()),
        }),
        first_assignment: OnceLock::new(),
        finished_reading: OnceLock::new(),
    });
    let measure_start = start_warmup_timer(vec![stats.clone()], args.warmup_duration);
    let watch = Watch::start("consume", &stats, &control, args);
    let (_, handles) = start_members(&run, args.concurrency);
    let members = finish_members(handles, &mut report).await;
    watch.stop();
    // Reading time: from the later of the warm-up's end and the first assignment, to the
    // moment the last partition reached its end (or now).
    let read_from = run.first_assignment.get().copied();
    let read_until = run
        .finished_reading
        .get()
        .copied()
        .unwrap_or_else(Instant::now);
    let elapsed = match read_from {
        Some(from) => {
            let measuring_since = measure_start.lock().map_or(t0, |m| *m);
            read_until.saturating_duration_since(from.max(measuring_since))
        }
        None => Duration::ZERO,
    };
    let (wall, cpu) = clock.wall_and_cpu();
    let snap = stats.snapshot();
    record_run(&mut report, &snap, "fetch-request", elapsed, cpu, wall);
    if let Some(from) = read_from {
        report.notes.push(format!(
            "joining took {} ms (start → first assignment, the broker's initial rebalance delay included); throughput counts from the first assignment until every partition was read",
            from.saturating_duration_since(t0).as_millis()
        ));
    }
    member_notes(&mut report, group, &members);

    // A budget (-n) or the deadline may stop reading mid-partition: then only overlaps and gaps
    // count, not reaching the end.
    let complete = ends.as_ref().filter(|e| consumed.reached_end(&starts, e));
    match consumed.check_exactly_once(&starts, complete) {
        Ok(()) => report.notes.push(format!(
            "group '{group}': every offset read exactly once across {} members ({})",
            members.len(),
            consumed
                .readers()
                .iter()
                .map(|(p, r)| format!("p{p}: {}", r.iter().cloned().collect::<Vec<_>>().join("+")))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(why) => report.fail(format!("consumer group '{group}': {why}")),
    }
    if let Some(e) = &ends {
        if complete.is_none() {
            report.notes.push(format!(
                "--stop-at-end: not all partitions reached their end ({} partitions, stopped by the deadline or -n)",
                e.len()
            ));
        }
    }
    if let Some(v) = validator {
        let summary = v.summary(None);
        report.set_validation(&summary);
    }
    maybe_delete(&cluster, args, &mut report).await;
    Ok(GroupConsumeOutcome {
        report,
        consumed,
        starts,
        ends,
        members,
    })
}
