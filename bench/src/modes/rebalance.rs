//! Rebalance mode: how long a consumer group takes to rebalance when a member joins.
//!
//! A group of -c members (`crate::group::runner`) reads the topic (from the group's committed
//! offsets, else from the end of the log) and heartbeats. Once all of them hold the same
//! generation, a new member joins --rebalance-joins times. Each time the bench waits a random
//! part of one heartbeat interval (so the join lands at a random point of the members'
//! heartbeat cycles), then measures from the new member's first JoinGroup until every member,
//! the new one included, holds its assignment for the new generation. Then, after another
//! random pause, the new member leaves, and the bench waits until the group has settled on the
//! next generation (that rebalance is timed too) before the next join.
//!
//! Members learn of a rebalance from a heartbeat, so a rebalance takes up to one heartbeat
//! interval before the broker can finish it; the report splits the time into "until the last
//! member noticed" and "after that" (the coordinator's and the protocol's share).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rand::Rng;

use crate::cli::Args;
use crate::control::RunControl;
use crate::cpu::CpuTimes;
use crate::group::board::{covers_each_partition_once, summarize, SyncBoard};
use crate::group::consumed::ConsumedRanges;
use crate::group::runner::{GroupRun, MemberSummary, OffsetReset};
use crate::group::{GroupMember, MemberSettings};
use crate::report::{spawn_progress, RunReport};
use crate::stats::{LatencySummary, Stats};

use super::group_consume::{
    consume_config, finish_members, member_notes, member_settings, start_members,
};
use super::produce::stop_on_ctrl_c;
use super::{base_report, connect, copy_errors, maybe_delete, prepare_topic};

/// One measured join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTiming {
    /// First JoinGroup of the new member → every member holds the new generation.
    pub total: Duration,
    /// First JoinGroup → the last existing member noticed the rebalance (heartbeat).
    pub until_noticed: Option<Duration>,
    /// The leave that followed: LeaveGroup → every remaining member holds the next generation.
    pub leave: Duration,
    /// Whether the new generation's assignments covered every partition exactly once.
    pub assignment_ok: bool,
}

/// What a rebalance run found, beyond its report (the integration tests read it).
pub struct RebalanceOutcome {
    pub report: RunReport,
    pub group: String,
    pub joins: Vec<JoinTiming>,
    pub members: Vec<MemberSummary>,
    pub consumed: Arc<ConsumedRanges>,
}

pub async fn run(args: &Args) -> Result<RunReport> {
    Ok(run_rebalance(args).await?.report)
}

fn fresh_group_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("chronik-bench-rebalance-{}-{nanos}", std::process::id())
}

pub async fn run_rebalance(args: &Args) -> Result<RebalanceOutcome> {
    let mut report = base_report(args, "rebalance");
    report.acks = String::new();
    // A fresh group by default: members left over from an earlier run would join the count.
    let group = args.consumer_group.clone().unwrap_or_else(fresh_group_name);
    let cluster = connect(args).await?;
    let info = prepare_topic(&cluster, args).await?;
    let partitions = info.partitions.len() as i32;
    report.partitions = partitions;
    let settings = member_settings(args, &group, partitions);

    let stats = Arc::new(Stats::new(true));
    let t0 = Instant::now();
    let cpu0 = CpuTimes::now();
    let control = Arc::new(RunControl::new(t0 + args.run_duration(), None));
    let board = Arc::new(SyncBoard::default());
    let consumed = Arc::new(ConsumedRanges::default());
    let run = Arc::new(GroupRun {
        cluster: cluster.clone(),
        settings: settings.clone(),
        consume: consume_config(args, partitions as usize),
        stats: stats.clone(),
        control: control.clone(),
        validator: None,
        board: board.clone(),
        consumed: consumed.clone(),
        heartbeat_interval: args.heartbeat_interval(),
        reset: OffsetReset::Latest,
        bounds: None,
        first_assignment: OnceLock::new(),
        finished_reading: OnceLock::new(),
    });
    let progress = spawn_progress("rebalance", stats.clone(), args.report_interval());
    let ctrl_c = stop_on_ctrl_c(control.clone());
    let (names, handles) = start_members(&run, args.concurrency);

    let joins = measure_joins(
        args, &cluster, &settings, &board, &names, &control, partitions,
    )
    .await;
    control.stop();
    let members = finish_members(handles, &mut report).await;
    drop(progress);
    ctrl_c.abort();
    let wall = t0.elapsed();
    let snap = stats.snapshot();
    report.set_throughput(snap.messages, snap.bytes, wall);
    copy_errors(&mut report, &snap);
    report.set_cpu(CpuTimes::now().since(&cpu0), wall);

    let (joins, failure) = match joins {
        Ok(j) => (j, None),
        Err((j, e)) => (j, Some(e)),
    };
    describe(&mut report, args, &group, &joins);
    if let Some(e) = failure {
        report.fail(format!(
            "rebalance {} of {}: {e:#}",
            joins.len() + 1,
            args.rebalance_joins
        ));
    } else if joins.len() < args.rebalance_joins as usize {
        report.fail(format!(
            "measured {} of {} rebalances before the run's deadline (-d)",
            joins.len(),
            args.rebalance_joins
        ));
    }
    if let Some(bad) = joins.iter().position(|j| !j.assignment_ok) {
        report.fail(format!(
            "join {}: the new generation's assignments did not cover every partition exactly once",
            bad + 1
        ));
    }
    // Whatever arrived during the run was read by whoever held its partition at the time:
    // across all those rebalances, each offset exactly once.
    match consumed.check_exactly_once(&consumed.first_starts(), None) {
        Ok(()) => report.notes.push(format!(
            "{} records read during the rebalances, each offset exactly once",
            snap.messages
        )),
        Err(why) => report.fail(format!("consumer group '{group}': {why}")),
    }
    member_notes(&mut report, &group, &members);
    maybe_delete(&cluster, args, &mut report).await;
    Ok(RebalanceOutcome {
        report,
        group,
        joins,
        members,
        consumed,
    })
}

/// The joins, or those measured before a failure and the failure.
async fn measure_joins(
    args: &Args,
    cluster: &Arc<crate::metadata::Cluster>,
    settings: &Arc<MemberSettings>,
    board: &SyncBoard,
    names: &[String],
    control: &RunControl,
    partitions: i32,
) -> std::result::Result<Vec<JoinTiming>, (Vec<JoinTiming>, anyhow::Error)> {
    let mut joins = Vec::new();
    // How long one step may take: a member rejoins within a heartbeat interval, the coordinator
    // waits at most the rebalance timeout for it, and an empty group's first join phase
    // waits group.initial.rebalance.delay.ms (3 s on Kafka) on top.
    let step = Duration::from_millis(settings.rebalance_timeout_ms as u64)
        + args.heartbeat_interval() * 2
        + Duration::from_secs(10);
    let step_deadline = || (Instant::now() + step).min(control.deadline());
    let settled = tokio::select! {
        g = board.wait_common(names, step_deadline()) => g,
        _ = control.stopped() => None,
    };
    if settled.is_none() {
        return Err((
            joins,
            anyhow!(
                "the {} members did not settle on one generation",
                names.len()
            ),
        ));
    }
    for _ in 0..args.rebalance_joins {
        if control.should_stop() {
            break;
        }
        let pause = rand::thread_rng().gen_range(0..args.heartbeat_interval_ms.max(1));
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let measured = tokio::select! {
            r = one_join(cluster, settings, board, names, &step_deadline, partitions, args.heartbeat_interval()) => r,
            // A member failed (it stops the run) or the deadline passed.
            _ = control.stopped() => Err(anyhow!("the run stopped")),
        };
        match measured {
            Ok(j) => {
                if args.verbose {
                    eprintln!("join {}: {j:?}", joins.len() + 1);
                }
                joins.push(j);
            }
            Err(e) => return Err((joins, e)),
        }
    }
    Ok(joins)
}

async fn one_join(
    cluster: &Arc<crate::metadata::Cluster>,
    settings: &Arc<MemberSettings>,
    board: &SyncBoard,
    names: &[String],
    step_deadline: &impl Fn() -> Instant,
    partitions: i32,
    heartbeat_interval: Duration,
) -> Result<JoinTiming> {
    let mut joiner = GroupMember::new(cluster.clone(), settings.clone());
    joiner.ensure_coordinator(step_deadline()).await?;
    let started = Instant::now();
    let a = joiner.join(step_deadline()).await?;
    let joiner_synced = Instant::now();
    let all = board
        .wait_reached(names, a.generation, step_deadline())
        .await
        .ok_or_else(|| {
            anyhow!(
                "the members did not all reach generation {} (the new member's)",
                a.generation
            )
        })?;
    let total = all.max(joiner_synced).saturating_duration_since(started);
    let until_noticed = board
        .last_notice_since(names, started)
        .map(|t| t.saturating_duration_since(started));
    let assignment_ok = match board.assignments_in(names, a.generation) {
        Some(mut each) => {
            each.push(a.partitions.clone());
            covers_each_partition_once(&each, partitions)
        }
        // A member went straight to a later generation (another rebalance followed): nothing
        // to compare for this one.
        None => true,
    };
    // Members schedule their next heartbeat one interval after their sync: leaving at once
    // would always meet them a full interval away.
    let pause = rand::thread_rng().gen_range(0..heartbeat_interval.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let leaving = Instant::now();
    joiner.leave().await?;
    let settled = board
        .wait_reached(names, a.generation + 1, step_deadline())
        .await
        .ok_or_else(|| anyhow!("the group did not settle after the new member left"))?;
    Ok(JoinTiming {
        total,
        until_noticed,
        leave: settled.saturating_duration_since(leaving),
        assignment_ok,
    })
}

fn ms(s: &LatencySummary) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.p50_ms, s.p99_ms, s.max_ms
    )
}

/// Join times go in the latency fields (kind "rebalance-join"); the rest in notes.
fn describe(report: &mut RunReport, args: &Args, group: &str, joins: &[JoinTiming]) {
    let totals: Vec<Duration> = joins.iter().map(|j| j.total).collect();
    report.set_latency("rebalance-join", &summarize(&totals));
    let noticed: Vec<Duration> = joins.iter().filter_map(|j| j.until_noticed).collect();
    let after: Vec<Duration> = joins
        .iter()
        .filter_map(|j| j.until_noticed.map(|n| j.total.saturating_sub(n)))
        .collect();
    let leaves: Vec<Duration> = joins.iter().map(|j| j.leave).collect();
    report.notes.push(format!(
        "group '{group}': {} members + 1 joining, {} of {} joins measured; heartbeat interval {} ms, session timeout {} ms",
        args.concurrency,
        joins.len(),
        args.rebalance_joins,
        args.heartbeat_interval_ms,
        args.session_timeout_ms
    ));
    if !joins.is_empty() {
        report.notes.push(format!(
            "join → all members assigned: {}",
            ms(&summarize(&totals))
        ));
        if !noticed.is_empty() {
            report.notes.push(format!(
                "  of which until the last member noticed (heartbeat): {}; after that: {}",
                ms(&summarize(&noticed)),
                ms(&summarize(&after))
            ));
        }
        report.notes.push(format!(
            "leave → remaining members assigned: {}",
            ms(&summarize(&leaves))
        ));
        report.notes.push(format!(
            "each join (ms): {}",
            totals
                .iter()
                .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
}
