//! chronik-bench's consumer groups against a real chronik-server: four members share twelve
//! partitions and read every record exactly once, and the rebalance mode measures twenty joins.
//! No timing is asserted; the figures are printed.

mod support;

use std::collections::BTreeSet;

use chronik_bench::modes;
use chronik_bench::modes::group_consume::run_group_consume;
use chronik_bench::modes::rebalance::run_rebalance;
use support::chronik::{args, start_server};

const PARTITIONS: i32 = 12;
const MESSAGES: u64 = 24_000;

async fn produce(port: u16, topic: &str) {
    let p = args(
        port,
        &[
            "-t",
            topic,
            "-p",
            "12",
            "--create-topic",
            "-n",
            "24000",
            "-c",
            "4",
            "-s",
            "256",
            "--acks",
            "all",
            "--validate",
        ],
    );
    let r = modes::run(&p).await.expect("produce runs");
    assert!(r.passed, "{}", r.text_summary());
    assert_eq!(r.stored, Some(MESSAGES as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_read_twelve_partitions_exactly_once() {
    let server = start_server(&[]);
    produce(server.port, "grp12").await;
    let a = args(
        server.port,
        &[
            "-t",
            "grp12",
            "-m",
            "consume",
            "--consumer-group",
            "bench-four",
            "-c",
            "4",
            "--stop-at-end",
            "-d",
            "120s",
            "--heartbeat-interval-ms",
            "500",
            "--session-timeout-ms",
            "10000",
            "--validate",
        ],
    );
    let out = run_group_consume(&a, "bench-four")
        .await
        .expect("group consume runs");
    println!("{}", out.report.text_summary());
    assert!(out.report.passed, "{}", out.report.text_summary());
    assert_eq!(out.report.messages, MESSAGES);
    assert_eq!(out.report.validation_passed, Some(true));
    assert_eq!(out.members.len(), 4);

    // Every partition was read, from its start to its end, with no offset read twice: the
    // ranges each member read in each generation follow each other exactly.
    let ends = out.ends.clone().expect("--stop-at-end knows the ends");
    assert_eq!(ends.len(), PARTITIONS as usize);
    assert_eq!(
        out.consumed.check_exactly_once(&out.starts, Some(&ends)),
        Ok(())
    );
    let ranges = out.consumed.ranges();
    let mut total = 0;
    for p in 0..PARTITIONS {
        let read: i64 = ranges[&p].iter().map(|r| r.end - r.start).sum();
        assert_eq!(read, ends[&p] - out.starts[&p], "partition {p}");
        assert!(read > 0, "partition {p} had records");
        total += read;
    }
    assert_eq!(total, MESSAGES as i64);

    // Each member held a share of the partitions; the shares of the last generation everybody
    // was in cover the topic once (a member that joined late may have forced a rebalance).
    let last: Vec<_> = out
        .members
        .iter()
        .map(|m| m.last.clone().expect("every member got an assignment"))
        .collect();
    let final_gen = last.iter().map(|a| a.generation).max().expect("members");
    let in_final: Vec<_> = last.iter().filter(|a| a.generation == final_gen).collect();
    if in_final.len() == 4 {
        let mut all: Vec<i32> = in_final.iter().flat_map(|a| a.partitions.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..PARTITIONS).collect::<Vec<_>>());
        assert!(in_final.iter().all(|a| a.partitions.len() == 3), "{last:?}");
    }
    // Without a rebalance (all four joined the first generation, as the broker's initial
    // rebalance delay arranges), each member read exactly its own three partitions.
    if out.members.iter().all(|m| m.generations == 1) {
        let readers = out.consumed.readers();
        for m in &out.members {
            let own: BTreeSet<i32> = readers
                .iter()
                .filter(|(_, r)| r.contains(&m.name))
                .map(|(p, _)| *p)
                .collect();
            let assigned: BTreeSet<i32> = m
                .last
                .as_ref()
                .expect("assigned")
                .partitions
                .iter()
                .copied()
                .collect();
            assert_eq!(own, assigned, "{}", m.name);
            assert_eq!(own.len(), 3, "{}", m.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_mode_measures_twenty_joins() {
    let server = start_server(&[]);
    produce(server.port, "reb12").await;
    // Records keep arriving while the group rebalances 40 times (20 joins, 20 leaves).
    let more = args(
        server.port,
        &[
            "-t",
            "reb12",
            "-d",
            "8s",
            "--rate-limit",
            "2000",
            "-c",
            "2",
            "-s",
            "256",
        ],
    );
    let producer = tokio::spawn(async move { modes::run(&more).await });
    let a = args(
        server.port,
        &[
            "-t",
            "reb12",
            "-m",
            "rebalance",
            "-c",
            "4",
            "--rebalance-joins",
            "20",
            "--heartbeat-interval-ms",
            "200",
            "--session-timeout-ms",
            "10000",
            "-d",
            "300s",
        ],
    );
    let out = run_rebalance(&a).await.expect("rebalance mode runs");
    println!("{}", out.report.text_summary());
    let p = producer.await.expect("task").expect("produce runs");
    assert!(p.passed, "{}", p.text_summary());
    assert!(out.report.passed, "{}", out.report.text_summary());
    assert_eq!(out.joins.len(), 20);
    assert_eq!(out.report.latency_count, 20);
    assert!(out.joins.iter().all(|j| j.assignment_ok), "{:?}", out.joins);
    assert_eq!(out.members.len(), 4);
    // What arrived meanwhile was read, each offset once, though partitions changed hands.
    assert!(out.report.messages > 0, "{}", out.report.text_summary());
    let starts = out.consumed.first_starts();
    assert_eq!(out.consumed.check_exactly_once(&starts, None), Ok(()));
    let handed_over = out
        .consumed
        .readers()
        .values()
        .filter(|r| r.len() > 1)
        .count();
    assert!(
        handed_over > 0,
        "no partition changed hands while records arrived"
    );
    // Every existing member went through a rebalance for each join and each leave.
    for m in &out.members {
        assert!(
            m.generations >= 41,
            "{}: {} generations",
            m.name,
            m.generations
        );
    }
}
