//! Controller benchmark: 3 controller nodes on loopback, in one process.
//!
//! 1. Latency: submit a 1-topic, 3-partition, RF 3 CreateTopics on a follower and wait until all
//!    three nodes have applied it; p50/p99 over 1,000 sequential creations.
//! 2. Throughput: 64 concurrent submitters spread over the three nodes, sustained commands/s
//!    (AllocateProducerIds, then single-topic CreateTopics).
//!
//! Run: cargo run --release -p chronik-raft --example controller_bench

use chronik_raft::{
    start_with, BrokerRegistration, Command, Controller, ControllerConfig, NewTopic, Tuning,
};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

fn topic(name: String, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name,
        num_partitions: partitions,
        replication_factor: rf,
        assignments: None,
        configs: BTreeMap::new(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let creations: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let per_submitter: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let quorum: Vec<(i32, String)> = (1..=3)
        .map(|i| (i, format!("127.0.0.1:{}", free_port())))
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut nodes: Vec<Controller> = Vec::new();
    let secret = chronik_raft::secret::ClusterSecret::generate();
    for (i, (id, addr)) in quorum.iter().enumerate() {
        let cfg = ControllerConfig {
            node_id: *id,
            raft_listen: addr.parse()?,
            quorum: quorum.clone(),
            data_dir: dirs[i].path().join("__raft"),
            broker: BrokerRegistration {
                id: *id,
                host: "127.0.0.1".into(),
                port: 9092 + *id as u16,
                rack: None,
                listeners: Vec::new(),
            },
            session_timeout_ms: 9000,
            heartbeat_interval_ms: 1000,
            default_num_partitions: 1,
            default_replication_factor: 1,
            cluster_id: String::new(),
            cluster_secret: secret.clone(),
            tls: None,
            pin_core: None,
        };
        nodes.push(start_with(cfg, Tuning::default())?);
    }
    let t0 = Instant::now();
    while nodes
        .iter()
        .any(|n| n.current_image().live_brokers().count() < 3)
    {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("brokers did not register".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let leader = nodes[0].raft_leader().ok_or("no leader")?;
    let follower = nodes
        .iter()
        .position(|n| n.node_id() != leader)
        .ok_or("no follower")?;
    println!(
        "3 nodes up; raft leader = node {leader}; submitting latency run on node {}",
        nodes[follower].node_id()
    );

    // 1. Latency.
    let mut hist = Histogram::<u64>::new(3)?;
    for i in 0..creations {
        let start = Instant::now();
        let s = block_on(nodes[follower].submit(Command::CreateTopics {
            topics: vec![topic(format!("lat-{i}"), 3, 3)],
            validate_only: false,
        }))?;
        for n in &nodes {
            block_on(n.wait_applied(s.index))?;
        }
        hist.record(start.elapsed().as_micros() as u64)?;
    }
    println!(
        "CreateTopics (1 topic, 3 partitions, RF 3) submit on follower -> applied on all 3: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        hist.len(),
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );

    // 2. Throughput.
    let nodes = Arc::new(nodes);
    for kind in ["AllocateProducerIds", "CreateTopics(1 partition, RF 3)"] {
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let threads: Vec<_> = (0..64)
            .map(|t| {
                let nodes = nodes.clone();
                let done = done.clone();
                let kind = kind.to_string();
                std::thread::spawn(move || -> Result<(), String> {
                    let n = &nodes[t % 3];
                    for i in 0..per_submitter {
                        let cmd = if kind.starts_with("Allocate") {
                            Command::AllocateProducerIds {
                                broker: n.node_id(),
                                count: 1000,
                            }
                        } else {
                            Command::CreateTopics {
                                topics: vec![topic(format!("tp-{t}-{i}"), 1, 3)],
                                validate_only: false,
                            }
                        };
                        block_on(n.submit(cmd)).map_err(|e| e.to_string())?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "submitter panicked")??;
        }
        let secs = start.elapsed().as_secs_f64();
        let total = done.load(Ordering::Relaxed);
        println!(
            "{kind}: 64 concurrent submitters over 3 nodes, {total} commands in {secs:.2} s = {:.0} commands/s",
            total as f64 / secs
        );
    }
    for n in nodes.iter() {
        n.shutdown();
    }
    Ok(())
}
