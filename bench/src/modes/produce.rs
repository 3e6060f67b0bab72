//! Produce mode: load, then trust but verify — ListOffsets before and after, and a run whose
//! partitions grew by less than it was acknowledged fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::{Args, ProducerModel};
use crate::consumer::{run_consumers, FetchLoop, Position};
use crate::metadata::{Cluster, LATEST};
use crate::payload::PayloadPool;
use crate::producer::{run_producers, ProduceConfig, ProduceRun, RunControl};
use crate::report::RunReport;
use crate::stats::Stats;
use crate::validate::{AckTracker, Validator};

use super::clock::{RunClock, Watch};
use super::{maybe_delete, record_run, start_producing};

pub fn produce_config(args: &Args, partitions: i32, stamp_header: bool) -> ProduceConfig {
    ProduceConfig {
        topic: args.topic.clone(),
        partitions,
        acks: args.acks.0,
        codec: args.compression.into(),
        message_size: args.message_size,
        batch_size: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        request_timeout: args.request_timeout(),
        message_timeout: args.message_timeout(),
        key_pattern: args.key_pattern,
        stamp_header,
        rate_per_task: if args.rate_limit == 0 {
            0.0
        } else {
            args.rate_limit as f64 / args.concurrency as f64
        },
        verbose: args.verbose,
        model: args.producer_model,
        max_in_flight: args.max_in_flight,
    }
}

/// What a produce latency sample measures in the chosen producer model.
pub fn produce_latency_label(args: &Args) -> &'static str {
    match args.producer_model {
        ProducerModel::Batch => "produce-batch",
        ProducerModel::Record => "produce-record",
    }
}

/// Ends the warm-up after `warmup` and remembers when measuring began.
pub fn start_warmup_timer(stats: Vec<Arc<Stats>>, warmup: Duration) -> Arc<Mutex<Instant>> {
    let measure_start = Arc::new(Mutex::new(Instant::now() + warmup));
    if !warmup.is_zero() {
        let ms = measure_start.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            for s in &stats {
                s.start_measuring();
            }
            if let Ok(mut m) = ms.lock() {
                *m = Instant::now();
            }
        });
    }
    measure_start
}

pub fn measured_elapsed(measure_start: &Mutex<Instant>) -> Duration {
    measure_start
        .lock()
        .map(|s| Instant::now().saturating_duration_since(*s))
        .unwrap_or_default()
}

/// End offsets minus start offsets, summed over partitions.
pub fn stored_between(start: &HashMap<i32, i64>, end: &HashMap<i32, i64>) -> i64 {
    end.iter()
        .map(|(p, e)| e - start.get(p).copied().unwrap_or(0))
        .sum()
}

/// Fails the report if the partitions grew by less than the broker acknowledged.
pub fn verify_stored(report: &mut RunReport, acks: i16, acknowledged: u64, stored: i64) {
    report.stored = Some(stored);
    if acks == 0 {
        report.notes.push(format!(
            "acks=0: {acknowledged} messages sent, {stored} stored"
        ));
        return;
    }
    report.acknowledged = Some(acknowledged);
    if stored < acknowledged as i64 {
        report.fail(format!(
            "the broker acknowledged {acknowledged} messages but its partitions grew by only {stored}: {} acknowledged messages are not stored",
            acknowledged as i64 - stored
        ));
    } else if stored > acknowledged as i64 {
        report.notes.push(format!(
            "{} more messages stored than acknowledged (timed-out requests that were stored anyway, retried duplicates, or other writers)",
            stored - acknowledged as i64
        ));
    }
}

pub async fn run(args: &Args) -> Result<RunReport> {
    let (mut report, cluster, part_ids, start_offsets) = start_producing(args, "produce").await?;
    let partitions = report.partitions;

    let stats = Arc::new(Stats::new(args.warmup_duration.is_zero()));
    let tracker = args.validate.then(|| Arc::new(AckTracker::default()));
    let cfg = Arc::new(produce_config(args, partitions, args.validate));
    let pool = Arc::new(PayloadPool::new(args.payload_pattern, args.message_size));
    let clock = RunClock::start();
    let control = clock.control(args);
    let measure_start = start_warmup_timer(vec![stats.clone()], args.warmup_duration);
    let watch = Watch::start("produce", &stats, &control, args);
    let run = ProduceRun {
        cfg,
        cluster: cluster.clone(),
        stats: stats.clone(),
        control,
        tracker: tracker.clone(),
        pool,
    };
    let (totals, txn) = if args.transactional {
        let (t, x) =
            crate::txn_producer::run_producers(args.concurrency, run, txn_config(args)).await?;
        (t, Some(x))
    } else {
        (run_producers(args.concurrency, run).await?, None)
    };
    watch.stop();
    let elapsed = measured_elapsed(&measure_start);
    let (wall, cpu) = clock.wall_and_cpu();

    let snap = stats.snapshot();
    record_run(
        &mut report,
        &snap,
        if txn.is_some() {
            "transaction"
        } else {
            produce_latency_label(args)
        },
        elapsed,
        cpu,
        wall,
    );
    if args.verbose {
        eprintln!(
            "generated {} messages, {} given up",
            totals.generated, totals.failed
        );
    }

    let mut end_offsets = cluster.list_offsets(&args.topic, &part_ids, LATEST).await?;
    if let Some(x) = &txn {
        // EndTxn is answered once the commit is decided; the markers reach the partitions just
        // after. Wait (5 s at most) until the log holds what the transactions wrote.
        let expected = (snap.all_messages + x.markers + x.aborted_records) as i64;
        let give_up = Instant::now() + Duration::from_secs(5);
        while stored_between(&start_offsets, &end_offsets) < expected && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
            end_offsets = cluster.list_offsets(&args.topic, &part_ids, LATEST).await?;
        }
    }
    let mut stored = stored_between(&start_offsets, &end_offsets);
    if let Some(x) = &txn {
        report.transactions_committed = Some(x.committed);
        report.transactions_aborted = Some(x.aborted);
        report.commit_latency_p50_ms = Some(x.commit_latency.p50_ms);
        report.commit_latency_p99_ms = Some(x.commit_latency.p99_ms);
        report.marker_wait_p50_ms = Some(x.marker_wait.p50_ms);
        report.marker_wait_p99_ms = Some(x.marker_wait.p99_ms);
        // The log also holds a marker per partition of each ended transaction, and the records
        // of aborted ones: neither is a committed message.
        stored -= (x.markers + x.aborted_records) as i64;
        report.notes.push(format!(
            "transactions: {} markers and {} aborted records in the log are not counted as stored",
            x.markers, x.aborted_records
        ));
    }
    verify_stored(&mut report, args.acks.0, snap.all_messages, stored);
    report.end_offsets = end_offsets.clone().into_iter().collect();
    // Reported, not judged: a follower may lag or be out of the ISR without anything being lost.
    match cluster.replica_log_ends(&args.topic, &part_ids).await {
        Ok(r) => report.replica_log_ends = r,
        Err(e) => report.notes.push(format!("replica log ends not read: {e}")),
    }
    if args.acks.0 != 0 && snap.all_messages == 0 {
        report.fail("no message was acknowledged".into());
    }

    if let Some(tracker) = tracker {
        let summary =
            read_back_and_validate(&cluster, args, &start_offsets, &end_offsets, &tracker).await?;
        report.set_validation(&summary);
    }
    maybe_delete(&cluster, args, &mut report).await;
    Ok(report)
}

/// Reads [start, end) of every partition back and checks each acknowledged message.
pub async fn read_back_and_validate(
    cluster: &Arc<Cluster>,
    args: &Args,
    start: &HashMap<i32, i64>,
    end: &HashMap<i32, i64>,
    tracker: &AckTracker,
) -> Result<crate::validate::ValidationSummary> {
    eprintln!("validating: reading back what was produced ...");
    let validator = Arc::new(Validator::default());
    let positions: Vec<Position> = end
        .iter()
        .map(|(&p, &e)| Position {
            partition: p,
            offset: start.get(&p).copied().unwrap_or(0),
            end: Some(e),
        })
        .collect();
    let stats = Arc::new(Stats::new(true));
    let fetch = Arc::new(FetchLoop {
        cluster: cluster.clone(),
        cfg: read_back_config(args, positions.len()),
        stats: stats.clone(),
        // Bounded: reading back gets as long as the run itself, and at least a minute.
        control: Arc::new(RunControl::new(
            Instant::now() + args.run_duration().max(Duration::from_secs(60)),
            None,
        )),
        validator: Some(validator.clone()),
    });
    let final_positions = run_consumers(args.concurrency.max(1), fetch, positions).await?;
    let unfinished: Vec<_> = final_positions.iter().filter(|p| !p.done()).collect();
    if !unfinished.is_empty() {
        // Why it stopped short: the errors its fetches met (none: the broker answered
        // without the records, or not at all).
        let snap = stats.snapshot();
        eprintln!(
            "validation read-back did not reach the end of: {unfinished:?}; its fetches read {} messages and met {} errors: {:?}",
            snap.all_messages, snap.error_count, snap.errors
        );
    }
    Ok(validator.summary(Some(tracker)))
}

/// How the read-back fetches: read_committed after a transactional run, so only committed
/// records count (and the aborted ones of a failed transaction are dropped).
fn read_back_config(args: &Args, partitions: usize) -> Arc<crate::consumer::ConsumeConfig> {
    let cfg = super::consume_config(args, partitions, Duration::from_millis(100), false);
    let mut cfg = Arc::unwrap_or_clone(cfg);
    if args.transactional {
        cfg.isolation_level = 1;
    }
    Arc::new(cfg)
}

/// The transactional producers' settings (`--transactional`).
pub fn txn_config(args: &Args) -> crate::txn_producer::TxnConfig {
    crate::txn_producer::TxnConfig {
        transaction_size: args.transaction_size,
        transaction_timeout_ms: args.transaction_timeout_ms,
        transactional_id_prefix: format!("chronik-bench-{}-{}", args.topic, std::process::id()),
        retry_backoff: Duration::from_millis(args.transaction_retry_backoff_ms),
    }
}

/// Ctrl-C ends the run early (it still verifies and reports).
pub fn stop_on_ctrl_c(control: Arc<RunControl>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing in-flight requests and reporting");
            control.stop();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_stored_than_acknowledged_fails_the_run() {
        let mut r = RunReport {
            passed: true,
            ..Default::default()
        };
        verify_stored(&mut r, 1, 1000, 400);
        assert!(!r.passed);
        assert!(r
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("600 acknowledged messages are not stored")));

        let mut ok = RunReport {
            passed: true,
            ..Default::default()
        };
        verify_stored(&mut ok, -1, 1000, 1003);
        assert!(ok.passed);
        assert_eq!(ok.acknowledged, Some(1000));

        let mut zero = RunReport {
            passed: true,
            ..Default::default()
        };
        verify_stored(&mut zero, 0, 1000, 10);
        assert!(zero.passed && zero.acknowledged.is_none());
    }

    #[test]
    fn stored_is_the_growth_of_end_offsets() {
        let start: HashMap<i32, i64> = [(0, 10), (1, 0)].into_iter().collect();
        let end: HashMap<i32, i64> = [(0, 110), (1, 50)].into_iter().collect();
        assert_eq!(stored_between(&start, &end), 150);
    }
}
