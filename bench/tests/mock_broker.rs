//! End-to-end runs of chronik-bench's modes against an in-memory mock broker on loopback
//! (tests/support/mock_broker.rs). These pin the client behaviour — routing, retries, counting
//! only acknowledged messages, stored-vs-acknowledged verification, validation — independently of
//! the state of the real broker. `chronik_server.rs` runs the same flows against chronik-server.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;

use chronik_bench::cli::Args;
use chronik_bench::modes;
use support::mock_broker::MockBroker;

fn args(broker: &MockBroker, extra: &[&str]) -> Args {
    let addr = broker.addr();
    let mut v = vec![
        "chronik-bench",
        "-b",
        addr.as_str(),
        "--report-interval-secs",
        "60",
        // Most flows here were written for the batch model (many records per task in flight);
        // the record-model tests pass `--producer-model record`, which overrides this.
        "--producer-model",
        "batch",
    ];
    v.extend_from_slice(extra);
    let a = Args::try_parse_from(v).expect("arguments parse");
    a.check().expect("arguments are consistent");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_validates_every_message() {
    let broker = MockBroker::start().await;
    let produce = args(
        &broker,
        &[
            "-t",
            "v",
            "-p",
            "3",
            "--create-topic",
            "-n",
            "5000",
            "-c",
            "4",
            "-s",
            "200",
            "--validate",
            "--linger-ms",
            "1",
        ],
    );
    let r = modes::run(&produce).await.expect("produce runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.messages, 5000);
    assert_eq!(r.acknowledged, Some(5000));
    assert_eq!(r.stored, Some(5000));
    assert_eq!(r.validation_passed, Some(true), "{}", r.text_summary());
    assert_eq!(broker.stored("v"), 5000);
    assert!(r.latency_count > 0);

    let consume = args(
        &broker,
        &[
            "-t",
            "v",
            "-m",
            "consume",
            "--stop-at-end",
            "-d",
            "20s",
            "-c",
            "2",
            "--validate",
        ],
    );
    let c = modes::run(&consume).await.expect("consume runs");
    assert!(c.passed, "{}", c.text_summary());
    assert_eq!(c.messages, 5000);
    assert_eq!(c.bytes, 5000 * 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_produces_and_validates() {
    let broker = MockBroker::start().await;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("c-{codec}");
        let a = args(
            &broker,
            &[
                "-t",
                &topic,
                "--create-topic",
                "-n",
                "500",
                "-c",
                "2",
                "--compression",
                codec,
                "--validate",
                "--payload-pattern",
                "text",
            ],
        );
        let r = modes::run(&a).await.expect("runs");
        assert!(r.passed, "{codec}: {}", r.text_summary());
        assert_eq!(r.stored, Some(500), "{codec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_acknowledges_without_storing_fails_the_run() {
    let broker = MockBroker::start().await;
    broker.create("lie", 2);
    broker.faults.lie.store(true, Ordering::SeqCst);
    let r = modes::run(&args(&broker, &["-t", "lie", "-n", "1000"]))
        .await
        .expect("runs");
    assert!(!r.passed);
    let why = r.failure.clone().unwrap_or_default();
    assert!(
        why.contains("acknowledged 1000") && why.contains("not stored"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_without_a_base_offset_is_an_error() {
    let broker = MockBroker::start().await;
    broker.create("nooff", 1);
    broker.faults.no_offset.store(true, Ordering::SeqCst);
    let r = modes::run(&args(&broker, &["-t", "nooff", "-n", "100"]))
        .await
        .expect("runs");
    assert_eq!(r.messages, 0);
    assert!(
        r.errors.contains_key("CLIENT_NO_BASE_OFFSET(-1)"),
        "{:?}",
        r.errors
    );
    assert!(!r.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_errors_are_retried_and_counted() {
    let broker = MockBroker::start().await;
    for (topic, model, tasks) in [("nl", "batch", "3"), ("rnl", "record", "16")] {
        broker.create(topic, 3);
        broker.faults.not_leader.store(5, Ordering::SeqCst);
        let r = modes::run(&args(
            &broker,
            &[
                "-t",
                topic,
                "--producer-model",
                model,
                "-n",
                "3000",
                "-c",
                tasks,
                "--validate",
                "-s",
                "64",
            ],
        ))
        .await
        .expect("runs");
        assert!(r.passed, "{model}: {}", r.text_summary());
        assert_eq!(r.messages, 3000);
        assert_eq!(
            r.errors.get("NOT_LEADER_OR_FOLLOWER(6)"),
            Some(&5),
            "{model}"
        );
        assert_eq!(r.validation_passed, Some(true), "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_measures_end_to_end_latency() {
    let broker = MockBroker::start().await;
    let r = modes::run(&args(
        &broker,
        &[
            "-t",
            "rt",
            "-m",
            "round-trip",
            "--create-topic",
            "-p",
            "2",
            "-n",
            "2000",
            "-c",
            "2",
            "--validate",
            "--rate-limit",
            "20000",
        ],
    ))
    .await
    .expect("runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.messages, 2000);
    assert_eq!(r.latency_kind, "end-to-end");
    assert_eq!(r.latency_count, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_stops_at_the_duration_when_no_data_arrives() {
    let broker = MockBroker::start().await;
    broker.create("empty", 2);
    let start = Instant::now();
    let r = modes::run(&args(
        &broker,
        &["-t", "empty", "-m", "consume", "-d", "700ms"],
    ))
    .await
    .expect("runs");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(r.messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_duration_bound_the_run() {
    let broker = MockBroker::start().await;
    // In the record model each task awaits its record (≥ the 5 ms linger here), so it takes 32
    // tasks, not 2, to reach 2000/s.
    for (topic, model, tasks) in [("rl", "batch", "2"), ("rrl", "record", "32")] {
        broker.create(topic, 1);
        let start = Instant::now();
        let r = modes::run(&args(
            &broker,
            &[
                "-t",
                topic,
                "--producer-model",
                model,
                "-d",
                "1s",
                "--rate-limit",
                "2000",
                "-c",
                tasks,
            ],
        ))
        .await
        .expect("runs");
        assert!(start.elapsed() < Duration::from_secs(5), "{model}");
        assert!(r.passed, "{model}: {}", r.text_summary());
        assert!(
            (1500..=2600).contains(&r.messages),
            "{model}: {} messages at 2000/s for 1s",
            r.messages
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_mode_creates_topics_and_waits_until_visible() {
    let broker = MockBroker::start().await;
    let r = modes::run(&args(
        &broker,
        &[
            "-t",
            "meta",
            "-m",
            "metadata",
            "-n",
            "30",
            "-c",
            "4",
            "-p",
            "2",
            "--delete-topic-after",
        ],
    ))
    .await
    .expect("runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.messages, 30);
    assert_eq!(r.latency_kind, "topic-visible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_counts_sent_and_still_checks_storage() {
    let broker = MockBroker::start().await;
    broker.create("a0", 1);
    let r = modes::run(&args(&broker, &["-t", "a0", "-n", "1000", "--acks", "0"]))
        .await
        .expect("runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.acknowledged, None);
    assert_eq!(r.messages, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bootstrap_server_is_a_clear_error() {
    let a = Args::try_parse_from([
        "chronik-bench",
        "-b",
        "127.0.0.1:1",
        "-n",
        "1",
        "--request-timeout-ms",
        "500",
    ])
    .expect("parses");
    let err = modes::run(&a).await.expect_err("fails");
    assert!(
        format!("{err:#}").contains("cannot reach any of 127.0.0.1:1"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_joins_consumes_and_commits() {
    let broker = MockBroker::start().await;
    let p = modes::run(&args(
        &broker,
        &[
            "-t",
            "g",
            "-p",
            "4",
            "--create-topic",
            "-n",
            "4000",
            "-c",
            "4",
        ],
    ))
    .await
    .expect("runs");
    assert!(p.passed, "{}", p.text_summary());
    let c = modes::run(&args(
        &broker,
        &[
            "-t",
            "g",
            "-m",
            "consume",
            "--consumer-group",
            "bench-group",
            "--stop-at-end",
            "-d",
            "20s",
            // The mock's group has one member (the group logic is tested against chronik).
            "-c",
            "1",
        ],
    ))
    .await
    .expect("runs");
    assert!(c.passed, "{}", c.text_summary());
    assert_eq!(c.messages, 4000);
    let committed: i64 = broker.committed.lock().expect("lock").values().sum();
    assert_eq!(committed, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_groups_fails_the_group_path_clearly() {
    let broker = MockBroker::start().await;
    broker.faults.no_groups.store(true, Ordering::SeqCst);
    broker.create("ng", 1);
    let err = modes::run(&args(
        &broker,
        &[
            "-t",
            "ng",
            "-m",
            "consume",
            "--consumer-group",
            "x",
            "-d",
            "2s",
        ],
    ))
    .await
    .expect_err("fails");
    let text = format!("{err:#}");
    assert!(
        text.contains("consumer group 'x': the group path failed")
            && text.contains("FindCoordinator"),
        "{text}"
    );
}

/// The client's own ceiling: produce 1 KiB messages for a few seconds against the mock broker,
/// which acknowledges at once and keeps nothing. Not a benchmark of any broker, and the mock runs
/// in this same process (its CPU is included). Run with:
/// `cargo test --release -p chronik-bench --test mock_broker client_ceiling -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test: prints the client's throughput against an instant-ack mock"]
async fn client_ceiling_against_an_instant_ack_mock() {
    let broker = MockBroker::start().await;
    broker.create("ceiling", 3);
    broker.faults.discard.store(true, Ordering::SeqCst);
    for (size, extra) in [("1024", "none"), ("100", "none"), ("1024", "lz4")] {
        let a = args(
            &broker,
            &[
                "-t",
                "ceiling",
                "-d",
                "4s",
                "-c",
                "64",
                "-s",
                size,
                "--compression",
                extra,
                "-p",
                "3",
            ],
        );
        let r = modes::run(&a).await.expect("runs");
        println!("{}", r.text_summary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_model_keeps_concurrency_records_in_flight_and_times_each() {
    let broker = MockBroker::start().await;
    let common = [
        "-p",
        "2",
        "--create-topic",
        "-n",
        "4000",
        "-c",
        "4",
        "-s",
        "100",
        "--validate",
        "--linger-ms",
        "2",
    ];
    let mut rec = vec!["-t", "rec", "--producer-model", "record"];
    rec.extend_from_slice(&common);
    let r = modes::run(&args(&broker, &rec)).await.expect("record run");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.messages, 4000);
    assert_eq!(r.stored, Some(4000));
    assert_eq!(r.validation_passed, Some(true), "{}", r.text_summary());
    // One latency per record, and never more records in one batch than tasks awaiting them.
    assert_eq!(r.latency_count, 4000);
    let most = broker.max_batch_records.swap(0, Ordering::SeqCst);
    assert!((1..=4).contains(&most), "a batch held {most} records");

    // The batch model, same flags: each task fills its own batches.
    let mut bat = vec!["-t", "bat"];
    bat.extend_from_slice(&common);
    let b = modes::run(&args(&broker, &bat)).await.expect("batch run");
    assert!(b.passed, "{}", b.text_summary());
    assert!(b.latency_count < 4000);
    assert!(broker.max_batch_records.load(Ordering::SeqCst) > 4);
}

/// As a Kafka client's sender: once a partition's batch is ready, one request to its leader
/// carries the batches of every partition that holds one, instead of one request per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_model_sends_every_partitions_batch_to_a_broker_in_one_request() {
    let broker = MockBroker::start().await;
    let r = modes::run(&args(
        &broker,
        &[
            "-t",
            "spread",
            "--producer-model",
            "record",
            "-p",
            "64",
            "--create-topic",
            "-n",
            "3200",
            "-c",
            "32",
            "-s",
            "100",
            "--validate",
            "--linger-ms",
            "20",
        ],
    ))
    .await
    .expect("record run");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.stored, Some(3200));
    assert_eq!(r.validation_passed, Some(true), "{}", r.text_summary());
    let widest = broker.max_request_partitions.load(Ordering::SeqCst);
    assert!(widest > 1, "every request carried one partition");
    let requests = broker.produce_requests.load(Ordering::SeqCst);
    assert!(
        requests < 3200 / 2,
        "{requests} requests for 3200 records over 32 tasks"
    );
}
