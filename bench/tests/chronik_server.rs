//! chronik-bench against a real chronik-server: start the broker on a free loopback port with a
//! temporary data dir, produce with --validate, consume it all back, and check the counts.
//!
//! The server comes from `support/chronik.rs`.

mod support;

use chronik_bench::modes;
use support::chronik::{args, args_for, start_cluster, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_validate_against_chronik_server() {
    let server = start_server(&[]);
    let produce = args(
        server.port,
        &[
            "-t",
            "it",
            "-p",
            "3",
            "--create-topic",
            "-n",
            "20000",
            "-c",
            "8",
            "-s",
            "512",
            "--acks",
            "all",
            "--validate",
        ],
    );
    let r = modes::run(&produce).await.expect("produce runs");
    println!("{}", r.text_summary());
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.messages, 20000);
    assert_eq!(r.acknowledged, Some(20000));
    assert_eq!(r.stored, Some(20000));
    assert_eq!(r.validation_passed, Some(true));
    // One broker: its own log end of each partition is the partition's end.
    assert_eq!(r.replica_log_ends.len(), 3, "{:?}", r.replica_log_ends);
    for rep in &r.replica_log_ends {
        assert_eq!(rep.broker, 1);
        assert_eq!(rep.log_end, r.end_offsets.get(&rep.partition).copied());
    }

    let consume = args(
        server.port,
        &[
            "-t",
            "it",
            "-m",
            "consume",
            "--stop-at-end",
            "-d",
            "60s",
            "-c",
            "3",
            "--validate",
        ],
    );
    let c = modes::run(&consume).await.expect("consume runs");
    println!("{}", c.text_summary());
    assert!(c.passed, "{}", c.text_summary());
    assert_eq!(c.messages, 20000);
    assert_eq!(c.bytes, 20000 * 512);

    let rt = args(
        server.port,
        &[
            "-t",
            "it",
            "-m",
            "round-trip",
            "-n",
            "5000",
            "-c",
            "4",
            "--validate",
        ],
    );
    let t = modes::run(&rt).await.expect("round-trip runs");
    println!("{}", t.text_summary());
    assert!(t.passed, "{}", t.text_summary());
    assert_eq!(t.messages, 5000);

    // The record model: 64 records in flight over a shared accumulator, each timed.
    let rec = args(
        server.port,
        &[
            "-t",
            "rec",
            "-p",
            "3",
            "--create-topic",
            "--producer-model",
            "record",
            "-n",
            "20000",
            "-c",
            "64",
            "--acks",
            "all",
            "--validate",
        ],
    );
    let r = modes::run(&rec).await.expect("record-model produce runs");
    println!("{}", r.text_summary());
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.acknowledged, Some(20000));
    assert_eq!(r.stored, Some(20000));
    assert_eq!(r.latency_count, 20000);
    assert_eq!(r.validation_passed, Some(true));
}

/// The issue-7 style run on three nodes: after an acks=all produce to an RF 3 topic, the report
/// carries every replica's own log end (each broker asked with replica id -2), and all nine equal
/// their partition's end, whose sum is what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_produce_run_reports_every_replicas_own_log_end() {
    let nodes = start_cluster(3, &[]).await;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let produce = args_for(
        &ports,
        &[
            "-t",
            "rf3",
            "-p",
            "3",
            "--replication-factor",
            "3",
            "--create-topic",
            "-n",
            "20000",
            "-c",
            "8",
            "-s",
            "512",
            "--acks",
            "all",
        ],
    );
    let r = modes::run(&produce).await.expect("produce runs");
    let text = r.text_summary();
    println!("{text}");
    assert!(r.passed, "{text}");
    assert_eq!(r.stored, Some(20000));
    assert_eq!(r.end_offsets.values().sum::<i64>(), 20000);
    assert_eq!(r.replica_log_ends.len(), 9, "{:?}", r.replica_log_ends);
    for p in 0..3 {
        let mut brokers: Vec<i32> = r
            .replica_log_ends
            .iter()
            .filter(|x| x.partition == p)
            .map(|x| x.broker)
            .collect();
        brokers.sort();
        assert_eq!(brokers, vec![1, 2, 3], "partition {p}");
    }
    for rep in &r.replica_log_ends {
        assert_eq!(rep.error, None, "{rep:?}");
        assert_eq!(
            rep.log_end,
            r.end_offsets.get(&rep.partition).copied(),
            "{rep:?}"
        );
    }
    assert!(
        text.contains(
            "every replica's own log end = its partition's end (9 replicas, 3 partitions)"
        ),
        "{text}"
    );
}

/// `--transactional`: four transactional producers commit every 100 records; every record counts
/// once committed, the EndTxn round trip is reported, and a read_committed read-back finds each
/// committed record exactly once (stored = acknowledged, the markers set aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_run_commits_every_record_and_reads_back_committed() {
    let server = start_server(&[]);
    let produce = args(
        server.port,
        &[
            "-t",
            "txn",
            "-p",
            "3",
            "--create-topic",
            "-n",
            "5000",
            "-c",
            "4",
            "-s",
            "256",
            "--acks",
            "all",
            "--transactional",
            "--transaction-size",
            "100",
            "--validate",
        ],
    );
    let r = modes::run(&produce)
        .await
        .expect("transactional produce runs");
    let text = r.text_summary();
    println!("{text}");
    assert!(r.passed, "{text}");
    assert_eq!(r.messages, 5000);
    assert_eq!(r.acknowledged, Some(5000));
    assert_eq!(r.stored, Some(5000), "{:?}", r.notes);
    assert_eq!(r.transactions_committed, Some(50));
    assert_eq!(r.transactions_aborted, Some(0));
    assert!(r.commit_latency_p50_ms.is_some_and(|p| p > 0.0));
    assert_eq!(r.validation_passed, Some(true));
    assert_eq!(r.latency_kind, "transaction");
    assert!(text.contains("50 committed"), "{text}");
    // 5000 records plus one marker per partition each transaction touched.
    assert!(r.end_offsets.values().sum::<i64>() > 5000);
}
