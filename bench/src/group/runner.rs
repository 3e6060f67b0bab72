//! A group member at work, as a Kafka consumer behaves with the eager protocol: join and sync,
//! read the assigned partitions from their committed offsets, heartbeat every interval, and when
//! a heartbeat says REBALANCE_IN_PROGRESS stop reading, commit what was read, and rejoin. At
//! the end of the run it commits and leaves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::board::SyncBoard;
use super::consumed::ConsumedRanges;
use super::member::{
    coordinator_moved, Assignment, GroupMember, MemberSettings, ILLEGAL_GENERATION, NONE,
    REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};
use crate::client::errors::{classify, error_name};
use crate::consumer::{ConsumeConfig, FetchLoop, Position};
use crate::control::RunControl;
use crate::metadata::{Cluster, EARLIEST, LATEST};
use crate::stats::Stats;
use crate::validate::Validator;

/// Where a partition with no committed offset starts (Kafka's auto.offset.reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

/// What the members of one run share.
pub struct GroupRun {
    pub cluster: Arc<Cluster>,
    pub settings: Arc<MemberSettings>,
    pub consume: Arc<ConsumeConfig>,
    pub stats: Arc<Stats>,
    pub control: Arc<RunControl>,
    pub validator: Option<Arc<Validator>>,
    pub board: Arc<SyncBoard>,
    pub consumed: Arc<ConsumedRanges>,
    pub heartbeat_interval: Duration,
    pub reset: OffsetReset,
    /// With --stop-at-end: where each partition starts and ends; the run stops once every
    /// partition was read to its end.
    pub bounds: Option<Bounds>,
    /// When the first member got its first assignment: no record is read before, so
    /// throughput counts from here (the join, with the broker's initial rebalance delay, is
    /// reported apart, as kafka-consumer-perf-test does).
    pub first_assignment: OnceLock<Instant>,
    /// When the last partition reached its end (--stop-at-end), before commits and leaves.
    pub finished_reading: OnceLock<Instant>,
}

/// Start and end offset of every partition.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub starts: Arc<HashMap<i32, i64>>,
    pub ends: Arc<HashMap<i32, i64>>,
}

/// One member's account of the run, for the report.
#[derive(Debug, Clone, Default)]
pub struct MemberSummary {
    pub name: String,
    pub generations: u32,
    pub last: Option<Assignment>,
    pub handled: BTreeMap<String, u64>,
    pub failed_commits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GenerationEnd {
    /// The group is rebalancing: commit and rejoin.
    Rejoin,
    /// This member is no longer in the generation (expired, fenced): rejoin without committing.
    Fenced,
    /// The run is over: commit and leave.
    Stop,
}

/// Runs one member until the run stops; fails only on errors a Kafka client would not retry.
pub async fn run_member(run: Arc<GroupRun>, name: String) -> Result<MemberSummary> {
    // Fetches go over connections of their own, never in front of the coordinator traffic.
    let fetch_cluster = run.cluster.fork().await?;
    let mut member = GroupMember::new(run.cluster.clone(), run.settings.clone());
    let mut summary = MemberSummary {
        name: name.clone(),
        ..MemberSummary::default()
    };
    while !run.control.should_stop() {
        // A JoinGroup parks until the join phase ends; the end of the run does not wait for it.
        let joined = tokio::select! {
            r = member.join(run.control.deadline()) => r,
            _ = run.control.stopped() => {
                // The abandoned JoinGroup's answer would come first on that connection.
                member.drop_connection();
                break;
            }
        };
        let a = match joined {
            Ok(a) => a,
            Err(_) if run.control.should_stop() => break,
            Err(e) => return Err(e.context(format!("{name}: joining"))),
        };
        let now = Instant::now();
        run.first_assignment.get_or_init(|| now);
        run.board
            .record(&name, a.generation, now, a.partitions.clone());
        summary.generations += 1;
        let end = run_generation(&run, &name, &mut member, &fetch_cluster, &a, &mut summary)
            .await
            .with_context(|| format!("{name}: generation {}", a.generation))?;
        summary.last = Some(a);
        if end == GenerationEnd::Stop {
            break;
        }
    }
    if let Err(e) = member.leave().await {
        *summary
            .handled
            .entry(format!("LeaveGroup: {}", classify(&e)))
            .or_insert(0) += 1;
    }
    for (k, v) in &member.handled {
        *summary.handled.entry(k.clone()).or_insert(0) += v;
    }
    Ok(summary)
}

/// Start positions of the assigned partitions: the committed offsets, else the reset policy.
async fn start_positions(
    run: &GroupRun,
    member: &mut GroupMember,
    cluster: &Cluster,
    partitions: &[i32],
) -> Result<Vec<Position>> {
    let committed = member
        .fetch_committed(partitions, run.control.deadline())
        .await?;
    let missing: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| !committed.contains_key(p))
        .collect();
    let reset = if missing.is_empty() {
        HashMap::new()
    } else {
        let ts = match run.reset {
            OffsetReset::Earliest => EARLIEST,
            OffsetReset::Latest => LATEST,
        };
        cluster
            .list_offsets(&run.consume.topic, &missing, ts)
            .await?
    };
    let ends = run.bounds.as_ref().map(|b| b.ends.clone());
    Ok(partitions
        .iter()
        .map(|&p| Position {
            partition: p,
            offset: committed
                .get(&p)
                .or_else(|| reset.get(&p))
                .copied()
                .unwrap_or(0),
            end: ends.as_ref().and_then(|e| e.get(&p).copied()),
        })
        .collect())
}

async fn run_generation(
    run: &Arc<GroupRun>,
    name: &str,
    member: &mut GroupMember,
    cluster: &Arc<Cluster>,
    a: &Assignment,
    summary: &mut MemberSummary,
) -> Result<GenerationEnd> {
    // The run's cluster view knows the topic (a fork learns it on its first refresh).
    let positions = start_positions(run, member, &run.cluster, &a.partitions).await?;
    let starts: HashMap<i32, i64> = positions.iter().map(|p| (p.partition, p.offset)).collect();
    let gen_control = Arc::new(RunControl::child(&run.control));
    let fetch = FetchLoop {
        cluster: cluster.clone(),
        cfg: run.consume.clone(),
        stats: run.stats.clone(),
        control: gen_control.clone(),
        validator: run.validator.clone(),
    };
    let mut fetching = Some(tokio::spawn(async move { fetch.run(positions).await }));
    let mut read: Option<Vec<Position>> = None;
    let record_read = |read: &[Position]| {
        for p in read {
            if let Some(&s) = starts.get(&p.partition) {
                run.consumed
                    .record(p.partition, s, p.offset, name, a.generation);
            }
        }
    };
    let interval = run.heartbeat_interval;
    let session = Duration::from_millis(run.settings.session_timeout_ms.max(0) as u64);
    let mut next_heartbeat = tokio::time::Instant::now() + interval;
    let mut last_heartbeat_ok = Instant::now();
    let end = loop {
        tokio::select! {
            done = async {
                match fetching.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            }, if fetching.is_some() => {
                // Every assigned partition reached its end (or the run stopped): keep
                // heartbeating so the group stays as it is until the run ends.
                fetching = None;
                let positions = done.map_err(|e| anyhow!("fetch task: {e}"))?;
                record_read(&positions);
                read = Some(positions);
                if let Some(b) = &run.bounds {
                    if run.consumed.reached_end(&b.starts, &b.ends) {
                        run.finished_reading.get_or_init(Instant::now);
                        run.control.stop();
                    }
                }
            }
            _ = tokio::time::sleep_until(next_heartbeat) => {
                next_heartbeat = tokio::time::Instant::now() + interval;
                match member.heartbeat().await {
                    Ok(NONE) => last_heartbeat_ok = Instant::now(),
                    Ok(REBALANCE_IN_PROGRESS) => {
                        run.board.noticed(name, Instant::now());
                        break GenerationEnd::Rejoin;
                    }
                    Ok(code @ (ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID)) => {
                        *summary.handled.entry(format!("Heartbeat: {}", error_name(code))).or_insert(0) += 1;
                        if code == UNKNOWN_MEMBER_ID {
                            member.member_id.clear();
                        }
                        break GenerationEnd::Fenced;
                    }
                    Ok(code) if coordinator_moved(code) => {
                        // Found again at the next heartbeat; the session decides if we are out.
                        *summary.handled.entry(format!("Heartbeat: {}", error_name(code))).or_insert(0) += 1;
                    }
                    Ok(code) => return Err(anyhow!("Heartbeat failed: {}", error_name(code))),
                    Err(e) => {
                        run.stats.record_error(&format!("HEARTBEAT_{}", classify(&e)), 1);
                    }
                }
                if last_heartbeat_ok.elapsed() > session {
                    // The coordinator has expired us by now; a rejoin gets a new member id.
                    break GenerationEnd::Fenced;
                }
            }
            _ = run.control.stopped() => break GenerationEnd::Stop,
        }
    };
    gen_control.stop();
    let positions = match (read, fetching.take()) {
        (Some(p), _) => p,
        (None, Some(h)) => {
            let p = h.await.map_err(|e| anyhow!("fetch task: {e}"))?;
            record_read(&p);
            p
        }
        (None, None) => Vec::new(),
    };
    if end != GenerationEnd::Fenced {
        // Committed before rejoining: the next owner of a partition starts where we stopped.
        let offsets: Vec<(i32, i64)> = positions.iter().map(|p| (p.partition, p.offset)).collect();
        match member.commit(&offsets).await {
            Ok(NONE) => {}
            Ok(code) => {
                summary.failed_commits += 1;
                run.stats
                    .record_error(&format!("COMMIT_{}", error_name(code)), 1);
            }
            Err(e) => {
                summary.failed_commits += 1;
                run.stats
                    .record_error(&format!("COMMIT_{}", classify(&e)), 1);
            }
        }
    }
    Ok(end)
}
