//! chronik-bench against a real chronik-server: start the broker on a free loopback port with a
//! temporary data dir, produce with --validate, consume it all back, and check the counts.
//!
//! The server comes from `support/chronik.rs`.

mod support;

use chronik_bench::modes;
use support::chronik::{args, start_server};

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
