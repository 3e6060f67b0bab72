//! Metadata benchmark: what a cluster's metadata costs the controller at many partitions. It
//! applies the same commands the Raft state machine applies (3 brokers, then topics of RF 3) to
//! a fresh `MetaState` and reports, per shape (one topic of N partitions, N/10 topics of 10):
//! apply time, the process's resident memory growth, the Raft snapshot's size, and the time to
//! encode and decode that snapshot (what a new or lagging node receives).
//!
//!   cargo run --release -p chronik-bench --bin metadata_bench -- [--partitions N]

use std::collections::BTreeMap;
use std::time::Instant;

use chronik_raft::command::{
    BrokerRegistration, Command, CommandOutcome, NewTopic, ProposedCommand,
};
use chronik_raft::metadata::{Defaults, MetaState};
use chronik_raft::snapshot::{self, StoredSnapshot};
use chronik_raft::types::SnapshotMeta;
use clap::Parser;

/// Metadata benchmark (see the file's header).
#[derive(Parser)]
struct Args {
    /// Partitions in all (RF 3 over 3 brokers).
    #[arg(long, default_value_t = 10_000)]
    partitions: i32,
}

const DEFAULTS: Defaults = Defaults {
    num_partitions: 1,
    replication_factor: 3,
};

/// Resident memory of this process, bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn apply(s: &mut MetaState, cmd: Command) -> CommandOutcome {
    s.apply(&ProposedCommand::new(cmd), DEFAULTS)
}

fn topic(name: String, partitions: i32) -> NewTopic {
    NewTopic {
        name,
        num_partitions: partitions,
        replication_factor: 3,
        assignments: None,
        configs: BTreeMap::new(),
    }
}

fn measure(label: &str, partitions: i32, topics: Vec<NewTopic>) {
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut s = MetaState::default();
    for id in 1..=3 {
        apply(
            &mut s,
            Command::RegisterBroker(BrokerRegistration {
                id,
                host: "127.0.0.1".into(),
                port: 9092 + id as u16,
                rack: None,
                listeners: Vec::new(),
            }),
        );
    }
    // CreateTopics requests of at most 1,000 topics each, as a client would send them.
    let mut topics = topics;
    while !topics.is_empty() {
        let rest = topics.split_off(topics.len().min(1000));
        let outcome = apply(
            &mut s,
            Command::CreateTopics {
                topics: std::mem::replace(&mut topics, rest),
                validate_only: false,
            },
        );
        if let CommandOutcome::Topics(results) = outcome {
            if let Some((name, Err(e))) = results.into_iter().find(|(_, r)| r.is_err()) {
                println!("{label:<28} refused: topic {name}: {e:?}");
                return;
            }
        }
    }
    let applied = t0.elapsed();
    let held = rss_bytes().saturating_sub(rss0);
    let created: usize = s.image.topics.values().map(|t| t.partitions.len()).sum();
    assert_eq!(created, partitions as usize, "every partition was created");
    let snap = StoredSnapshot {
        meta: SnapshotMeta::default(),
        state: s,
    };
    let t1 = Instant::now();
    let bytes = snapshot::encode(&snap).expect("the snapshot encodes");
    let encoded = t1.elapsed();
    let t2 = Instant::now();
    let back = snapshot::decode(&bytes).expect("the snapshot decodes");
    let decoded = t2.elapsed();
    assert_eq!(back.state.image.topics.len(), snap.state.image.topics.len());
    println!(
        "{label:<28} apply {:>7.1} ms  RSS +{:>6.1} MiB ({:>4} B/partition)  snapshot {:>6.2} MiB \
         ({:>3} B/partition)  encode {:>6.1} ms  decode {:>6.1} ms",
        applied.as_secs_f64() * 1e3,
        held as f64 / (1 << 20) as f64,
        held / partitions.max(1) as u64,
        bytes.len() as f64 / (1 << 20) as f64,
        bytes.len() / partitions.max(1) as usize,
        encoded.as_secs_f64() * 1e3,
        decoded.as_secs_f64() * 1e3,
    );
}

fn main() {
    let args = Args::parse();
    let n = args.partitions.max(10);
    println!("metadata of {n} partitions, RF 3 over 3 brokers:");
    measure(&format!("1 topic of {n}"), n, vec![topic("big".into(), n)]);
    measure(
        &format!("{} topics of 10", n / 10),
        n / 10 * 10,
        (0..n / 10).map(|i| topic(format!("t{i}"), 10)).collect(),
    );
}
