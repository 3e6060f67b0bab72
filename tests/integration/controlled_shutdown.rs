//! Controlled shutdown on real 3-node clusters: a SIGTERMed broker hands its partition
//! leaderships to other in-sync replicas before it exits, so a rolling restart under acks=all
//! idempotent load fails no request and loses nothing.
//!
//! These clusters keep the default 9 s broker session timeout: without the hand-over, a stopped
//! leader's partitions would stay leaderless until it is fenced.

#![allow(clippy::result_large_err)]

use crate::common::cluster_util::*;
use crate::common::Cluster;

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;
/// How long each node stays down in a rolling restart: longer than the 9 s session timeout.
const DOWN: Duration = Duration::from_secs(10);

/// Every partition of `topic` as `addr` sees it: (leader, ISR).
fn leaders_and_isrs(addr: &str, topic: &str) -> Vec<(i32, Vec<i32>)> {
    metadata(addr, topic).topics[0]
        .partitions
        .iter()
        .map(|p| (p.leader_id.0, p.isr_nodes.iter().map(|b| b.0).collect()))
        .collect()
}

fn isr_full(addr: &str, topic: &str) -> bool {
    crate::common::raw::metadata(addr, Some(vec![topic])).is_ok_and(|md| {
        md.topics[0].error_code == 0
            && md.topics[0].partitions.len() == PARTITIONS as usize
            && md.topics[0]
                .partitions
                .iter()
                .all(|p| p.isr_nodes.len() == 3 && p.leader_id.0 > 0)
    })
}

/// SIGTERM and wait (bounded) for the process to exit; returns its exit code and how long it
/// took.
fn sigterm_and_wait(c: &mut Cluster, id: i32, secs: u64) -> (Option<i32>, Duration) {
    let node = c.node(id);
    let t = Instant::now();
    node.signal(libc::SIGTERM);
    let code = node.wait_exit(secs);
    (code, t.elapsed())
}

#[test]
fn a_stopping_broker_hands_its_leaderships_to_other_replicas_before_it_exits() {
    let mut c = Cluster::start(3, &[]);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("handover", PARTITIONS, TopicReplication::Fixed(3)),
    );
    wait_until("every ISR is full", 30, || isr_full(&b1, "handover"));
    let victim = leader_of(&b1, "handover", 0);
    let led: Vec<usize> = leaders_and_isrs(&b1, "handover")
        .iter()
        .enumerate()
        .filter(|(_, (l, _))| *l == victim)
        .map(|(i, _)| i)
        .collect();
    assert!(!led.is_empty());
    // Bound 30 s (the default) plus the stop itself; a hang fails here.
    let (code, took) = sigterm_and_wait(&mut c, victim, 45);
    // Read right after the exit: well inside the 9 s session timeout, so only the hand-over can
    // have moved these leaders.
    let other = c
        .nodes
        .iter()
        .find(|n| n.node_id != victim)
        .expect("another node")
        .bootstrap();
    let after = leaders_and_isrs(&other, "handover");
    eprintln!("node {victim} led partitions {led:?}; it exited in {took:?}; now: {after:?}");
    assert_eq!(code, Some(0), "a clean exit");
    for (i, (leader, isr)) in after.iter().enumerate() {
        assert!(
            *leader != victim && *leader > 0,
            "partition {i} is led by another live replica: {after:?}"
        );
        assert!(!isr.contains(&victim), "partition {i}: {after:?}");
    }
    // It comes back as a follower and rejoins every ISR.
    c.node(victim).spawn();
    c.node(victim).wait_ready(1);
    wait_until("the restarted broker is back in every ISR", 60, || {
        isr_full(&other, "handover")
    });
}

#[test]
fn a_stopping_broker_without_a_controller_quorum_stops_after_its_bound() {
    let mut c = Cluster::start(3, &["--controlled-shutdown-timeout-ms", "3000"]);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("alone", PARTITIONS, TopicReplication::Fixed(3)),
    );
    wait_until("every ISR is full", 30, || isr_full(&b1, "alone"));
    // Two of three gone at once: no Raft quorum, so the hand-over cannot commit.
    c.node(2).kill();
    c.node(3).kill();
    let (code, took) = sigterm_and_wait(&mut c, 1, 40);
    eprintln!("with no controller quorum, node 1 exited in {took:?}");
    assert_eq!(
        code,
        Some(0),
        "exits cleanly after its bound instead of hanging"
    );
    let log = std::fs::read_to_string(c.nodes[0].log_path()).unwrap_or_default();
    assert!(
        log.contains("controlled shutdown did not complete"),
        "says why it stopped without the hand-over"
    );
}

/// Delivery reports of the load: (partition, value) acknowledged, per-record latency, and any
/// delivery or client error.
#[derive(Clone, Default)]
struct Load {
    acked: Arc<Mutex<Vec<(i32, i64)>>>,
    /// (when the record was sent, how long until it was acknowledged).
    latencies: Arc<Mutex<Vec<(Instant, Duration)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    fatal: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Load {
    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors while a broker restarts are expected and retried; a fatal one (the
        // idempotent producer gave up on its guarantees) is not.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fatal
                .lock()
                .unwrap()
                .push(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for Load {
    type DeliveryOpaque = Box<(i64, Instant)>;
    fn delivery(&self, r: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (value, sent) = *opaque;
        match r {
            Ok(m) => {
                self.latencies.lock().unwrap().push((sent, sent.elapsed()));
                self.acked.lock().unwrap().push((m.partition(), value));
            }
            Err((e, _)) => self.failed.lock().unwrap().push(format!("{value}: {e}")),
        }
    }
}

struct RollingReport {
    sent: i64,
    acked: Vec<(i32, i64)>,
    failed: Vec<String>,
    fatal: Vec<String>,
    max_latency: Duration,
    p50_latency: Duration,
    p99_latency: Duration,
    stop_times: Vec<Duration>,
    /// What happened when (seconds since the load started), and the slowest records then.
    timeline: Vec<String>,
}

/// Restarts each of the three nodes in turn (SIGTERM, wait for the exit, start it again, wait
/// for full ISRs) while one idempotent acks=all producer writes to every partition.
fn rolling_restart_under_load(
    topic: &str,
    extra: &[&str],
    down: Duration,
) -> (Cluster, RollingReport) {
    let mut c = Cluster::start(3, extra);
    let all = c.bootstrap();
    create(
        &all,
        NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(3)),
    );
    wait_until("every ISR is full", 30, || {
        isr_full(&c.nodes[0].bootstrap(), topic)
    });
    let load = Load::default();
    let producer: ThreadedProducer<Load> = ClientConfig::new()
        .set("bootstrap.servers", &all)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("retry.backoff.ms", "50")
        .create_with_context(load.clone())
        .expect("producer");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // The load: one record a millisecond, round-robin over the partitions, bounded in count
    // and time.
    let writer = {
        let stop = stop.clone();
        let topic = topic.to_string();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) && i < 300_000 && Instant::now() < deadline {
                let value = i.to_string();
                let rec = BaseRecord::<str, str, Box<(i64, Instant)>>::with_opaque_to(
                    &topic,
                    Box::new((i, Instant::now())),
                )
                .payload(&value)
                .partition((i % PARTITIONS as i64) as i32);
                match producer.send(rec) {
                    Ok(()) => i += 1,
                    Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {}
                    Err((e, _)) => panic!("send: {e}"),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            producer
                .flush(Duration::from_secs(120))
                .expect("every record acknowledged or failed");
            i
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let mut stop_times = Vec::new();
    let mut timeline = Vec::new();
    let at = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    let mut sigterms = Vec::new();
    for id in 1..=3 {
        sigterms.push((id, Instant::now()));
        timeline.push(format!("{:7.2} s  SIGTERM node {id}", at(Instant::now())));
        let (code, took) = sigterm_and_wait(&mut c, id, 60);
        assert_eq!(code, Some(0), "node {id} exits cleanly");
        stop_times.push(took);
        timeline.push(format!("{:7.2} s  node {id} exited", at(Instant::now())));
        // Down for longer than the session timeout, as during an upgrade: without the
        // hand-over its partitions wait for the fence.
        std::thread::sleep(down);
        c.node(id).spawn();
        c.node(id).wait_ready(1);
        let watch = c.nodes[(id as usize) % 3].bootstrap();
        timeline.push(format!("{:7.2} s  node {id} restarted", at(Instant::now())));
        wait_until("the restarted node is back in every ISR", 120, || {
            isr_full(&watch, topic)
        });
        timeline.push(format!("{:7.2} s  every ISR full", at(Instant::now())));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("the load thread");
    let mut slowest = load.latencies.lock().unwrap().clone();
    slowest.sort_by_key(|(_, l)| std::cmp::Reverse(*l));
    for (sent, l) in slowest.iter().take(3) {
        timeline.push(format!("{:7.2} s  a record sent now took {l:?}", at(*sent)));
    }
    // The slowest record sent around each stop (from 2 s before the SIGTERM to 5 s after).
    for (id, t) in &sigterms {
        let worst = slowest
            .iter()
            .filter(|(sent, _)| {
                *sent + Duration::from_secs(2) >= *t && *sent <= *t + Duration::from_secs(5)
            })
            .map(|(_, l)| *l)
            .max()
            .unwrap_or_default();
        timeline.push(format!(
            "{:7.2} s  slowest record around the stop of node {id}: {worst:?}",
            at(*t)
        ));
    }
    // Every line starts with its time in a fixed-width field: text order is time order.
    timeline.sort();
    let mut latencies: Vec<Duration> = slowest.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let report = RollingReport {
        sent,
        acked: load.acked.lock().unwrap().clone(),
        failed: load.failed.lock().unwrap().clone(),
        fatal: load.fatal.lock().unwrap().clone(),
        max_latency: latencies.last().copied().unwrap_or_default(),
        p50_latency: pick(0.5),
        p99_latency: pick(0.99),
        stop_times,
        timeline,
    };
    (c, report)
}

/// Every acknowledged record is in its partition exactly once, in the order it was sent.
fn check_exactly_once_in_order(c: &Cluster, topic: &str, acked: &[(i32, i64)]) {
    for p in 0..PARTITIONS {
        let mut want: Vec<i64> = acked
            .iter()
            .filter(|(part, _)| *part == p)
            .map(|(_, v)| *v)
            .collect();
        want.sort();
        let got = consume_values(&c.bootstrap(), topic, p, want.len());
        assert_eq!(
            got.len(),
            want.len(),
            "partition {p}: no loss, no duplicate"
        );
        assert!(
            got == want,
            "partition {p}: the acknowledged records, in order"
        );
    }
}

impl RollingReport {
    /// Prints the figures and the timeline of the slowest records (`what`: which restart).
    fn print(&self, what: &str) {
        eprintln!(
            "rolling restart {what}: {} records sent, {} acknowledged; per-record latency max \
             {:?}, p50 {:?}, p99 {:?}; each node stopped in {:?}",
            self.sent,
            self.acked.len(),
            self.max_latency,
            self.p50_latency,
            self.p99_latency,
            self.stop_times
        );
        eprintln!("{}", self.timeline.join("\n"));
    }

    /// No fatal producer error, and every record delivered (only retriable errors happened).
    fn assert_no_failure(&self) {
        assert!(
            self.fatal.is_empty(),
            "fatal producer errors: {:?}",
            self.fatal
        );
        assert!(
            self.failed.is_empty(),
            "every record is delivered (only retriable errors happened): {:?}",
            &self.failed[..self.failed.len().min(10)]
        );
    }
}

#[test]
fn a_rolling_restart_under_acks_all_idempotent_load_fails_and_loses_nothing() {
    let (c, r) = rolling_restart_under_load("rolling", &[], DOWN);
    r.print("with controlled shutdown");
    r.assert_no_failure();
    assert_eq!(r.acked.len() as i64, r.sent);
    check_exactly_once_in_order(&c, "rolling", &r.acked);
}

/// The same restart without the hand-over, for comparison: nothing is lost either, but a
/// stopped leader's partitions wait for the session timeout. Its latency is only reported.
#[test]
fn a_rolling_restart_without_controlled_shutdown_loses_nothing_but_waits_for_fencing() {
    let (c, r) = rolling_restart_under_load(
        "rolling-abrupt",
        &["--controlled-shutdown-timeout-ms", "0"],
        DOWN,
    );
    r.print("WITHOUT controlled shutdown");
    r.assert_no_failure();
    check_exactly_once_in_order(&c, "rolling-abrupt", &r.acked);
}
