//! 3-node clusters of real chronik-server processes on loopback: replication, acks=all,
//! failover, rejoin and truncation.

#![allow(clippy::result_large_err)]

use crate::common::cluster_util::*;
use crate::common::raw;
use crate::common::tmpfs::Tmpfs;
use crate::common::Cluster;

use kafka_protocol::messages::{ApiKey, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

#[test]
fn three_nodes_replicate_acks_all_and_agree() {
    let c = Cluster::start(3, FAST);
    let n2 = c.nodes[1].bootstrap();
    create(&n2, NewTopic::new("rep", 3, TopicReplication::Fixed(3)));
    // visible on the other nodes as soon as the call returned
    for n in [&c.nodes[0], &c.nodes[2]] {
        let md = metadata(&n.bootstrap(), "rep");
        assert_eq!(md.topics[0].error_code, 0, "node {}", n.node_id);
        assert_eq!(md.topics[0].partitions.len(), 3);
    }
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..10_000 {
        loop {
            match p.send(
                BaseRecord::<str, str>::to("rep")
                    .payload(&i.to_string())
                    .partition(i % 3),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("all acknowledged");
    for part in 0..3 {
        wait_until("replicas agree on the log end", 20, || {
            c.nodes
                .iter()
                .all(|n| local_leo(&n.bootstrap(), "rep", part) == 3334 - i64::from(part > 0))
        });
        let leo = local_leo(&c.nodes[0].bootstrap(), "rep", part);
        let a = local_bytes(&c.nodes[0].bootstrap(), "rep", part, leo);
        for n in &c.nodes[1..] {
            assert!(
                a == local_bytes(&n.bootstrap(), "rep", part, leo),
                "node {} differs on p{part}",
                n.node_id
            );
        }
    }
    // Followers replicate in incremental fetch sessions: each leader holds one per follower
    // shard that fetches from it (three partitions on three nodes: at least two in all).
    let replica_sessions: f64 = c
        .nodes
        .iter()
        .map(|n| {
            let (_, text) = crate::metrics::get(&n.metrics(), "/metrics").expect("scrape");
            crate::metrics::sample(&text, "chronik_fetch_sessions{kind=\"replica\"}")
                .expect("the fetch sessions gauge")
        })
        .sum();
    assert!(
        replica_sessions >= 2.0,
        "replica sessions: {replica_sessions}"
    );
    // every node answers Metadata identically
    let view = |addr: &str| {
        let md = metadata(addr, "rep");
        let mut brokers: Vec<_> = md.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
        brokers.sort();
        let parts: Vec<_> = md.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.leader_id.0,
                    p.leader_epoch,
                    p.replica_nodes.clone(),
                    p.isr_nodes.clone(),
                )
            })
            .collect();
        (brokers, md.controller_id.0, parts)
    };
    let v1 = view(&c.nodes[0].bootstrap());
    assert_eq!(v1.0.len(), 3);
    for n in &c.nodes[1..] {
        assert_eq!(view(&n.bootstrap()), v1);
    }
    // Idle for longer than the followers' quiet delay (1 s), the partitions are fetched in
    // their quiet lanes: they stay in the ISR, and new records are replicated again.
    std::thread::sleep(Duration::from_millis(2500));
    for i in 0..300 {
        p.send(
            BaseRecord::<str, str>::to("rep")
                .payload(&i.to_string())
                .partition(i % 3),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
    }
    p.flush(Duration::from_secs(60))
        .expect("acknowledged after idling");
    for part in 0..3 {
        wait_until("replicas agree on the log end after idling", 20, || {
            c.nodes
                .iter()
                .all(|n| local_leo(&n.bootstrap(), "rep", part) == 3434 - i64::from(part > 0))
        });
    }
    let md = metadata(&c.nodes[0].bootstrap(), "rep");
    for part in &md.topics[0].partitions {
        assert_eq!(
            part.isr_nodes.len(),
            3,
            "partition {}",
            part.partition_index
        );
    }
}

#[test]
fn a_cluster_started_from_toml_files_replicates() {
    let c = Cluster::start_from_toml(3, "num-partitions = 2\ndefault-replication-factor = 3\n");
    let b2 = c.nodes[1].bootstrap();
    create(
        &b2,
        NewTopic::new("from-toml", 1, TopicReplication::Fixed(3)),
    );
    for n in &c.nodes {
        assert_eq!(metadata(&n.bootstrap(), "from-toml").brokers.len(), 3);
    }
    produce_range(&c.bootstrap(), "from-toml", "all", 1, 0..500);
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("every node has the records", 30, || {
            local_leo(&b, "from-toml", 0) == 500
        });
    }
    // The files' topic defaults are in force: an auto-created topic gets 2 partitions of 3
    // replicas (the built-in defaults are 1 partition of 1 replica).
    produce_range(&c.bootstrap(), "auto-from-toml", "all", 1, 0..10);
    let md = metadata(&b2, "auto-from-toml");
    assert_eq!(md.topics[0].error_code, 0);
    let parts = &md.topics[0].partitions;
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.replica_nodes.len() == 3));
}

#[test]
fn a_topic_deleted_and_created_again_starts_empty_on_every_node() {
    let c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("again", 1, TopicReplication::Fixed(3)));
    produce_range(&c.bootstrap(), "again", "all", 1, 0..300);
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("old records on every node", 30, || {
            local_leo(&b, "again", 0) == 300
        });
    }
    delete(&c.nodes[1].bootstrap(), "again");
    create(
        &c.nodes[2].bootstrap(),
        NewTopic::new("again", 1, TopicReplication::Fixed(3)),
    );
    produce_range(&c.bootstrap(), "again", "all", 1, 1000..1010);
    // The new topic holds only the new records, from offset 0, on all three nodes.
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("the new topic replicated", 30, || {
            local_leo(&b, "again", 0) == 10
        });
    }
    let leader = leader_of(&b1, "again", 0);
    let lb = c.nodes[(leader - 1) as usize].bootstrap();
    let want = local_bytes(&lb, "again", 0, 10);
    for n in &c.nodes {
        assert_eq!(
            local_bytes(&n.bootstrap(), "again", 0, 10),
            want,
            "node {}",
            n.node_id
        );
    }
    assert_eq!(
        consume_values(&c.bootstrap(), "again", 0, 10),
        (1000..1010).collect::<Vec<i64>>()
    );
}

#[test]
fn a_node_down_while_its_topic_is_replaced_drops_the_old_log() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("swap", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    produce_range(&c.bootstrap(), "swap", "all", 1, 0..300);
    let b3 = c.nodes[2].bootstrap();
    wait_until("node 3 has the old records", 30, || {
        local_leo(&b3, "swap", 0) == 300
    });
    c.node(3).kill();
    wait_until("node 3 fenced", 20, || {
        raw::metadata_broker_count(&b1).unwrap_or(3) == 2
    });
    delete(&b1, "swap");
    // Same name, same replicas, new topic: node 3 still holds the old one's log on disk.
    create(
        &b1,
        NewTopic::new("swap", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    produce_range(&b1, "swap", "1", 1, 1000..1010);
    c.node(3).spawn();
    c.node(3).wait_ready(3);
    let leader = leader_of(&b1, "swap", 0);
    let lb = c.nodes[(leader - 1) as usize].bootstrap();
    wait_until("node 3 holds exactly the new topic's records", 30, || {
        local_leo(&b3, "swap", 0) == 10
    });
    assert_eq!(
        local_bytes(&b3, "swap", 0, 10),
        local_bytes(&lb, "swap", 0, 10)
    );
    wait_until("node 3 back in the ISR", 30, || {
        isr_of(&b1, "swap", 0).len() == 3
    });
}

#[test]
fn partitions_added_to_a_replicated_topic_are_replicated() {
    let c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("grow", 1, TopicReplication::Fixed(3)));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let r = block_on(
        admin(&c.nodes[2].bootstrap())
            .create_partitions(&[rdkafka::admin::NewPartitions::new("grow", 3)], &opts),
    )
    .unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    for n in &c.nodes {
        let md = metadata(&n.bootstrap(), "grow");
        assert_eq!(md.topics[0].partitions.len(), 3, "node {}", n.node_id);
        assert!(md.topics[0]
            .partitions
            .iter()
            .all(|p| p.replica_nodes.len() == 3 && p.isr_nodes.len() == 3));
    }
    produce_range(&c.bootstrap(), "grow", "all", 3, 0..300);
    for part in 0..3 {
        for n in &c.nodes {
            let b = n.bootstrap();
            wait_until("every node has every partition", 30, || {
                local_leo(&b, "grow", part) == 100
            });
        }
    }
}

/// Produces 0..n with an idempotent acks=all producer, killing `victim(cluster)` after `kill_at`.
fn produce_through_kill(
    c: &mut Cluster,
    topic: &str,
    n: i64,
    kill_at: i64,
    victim: i32,
) -> Vec<i64> {
    let bootstrap = c.bootstrap();
    produce_through(&bootstrap, topic, n, kill_at, || c.node(victim).kill())
}

fn check_exactly(c: &Cluster, topic: &str, acked: &[i64]) {
    check_exactly_at(&c.bootstrap(), topic, acked);
}

#[test]
fn killing_the_partition_leader_loses_and_duplicates_nothing() {
    let mut c = Cluster::start(3, FAST);
    create(
        &c.nodes[0].bootstrap(),
        NewTopic::new("failover", 1, TopicReplication::Fixed(3)),
    );
    let leader = leader_of(&c.nodes[0].bootstrap(), "failover", 0);
    let acked = produce_through_kill(&mut c, "failover", 4000, 1500, leader);
    assert_eq!(
        acked.len(),
        4000,
        "every message acknowledged after failover"
    );
    let new_leader = leader_of(c.bootstrap().split(',').next().unwrap(), "failover", 0);
    assert_ne!(new_leader, leader);
    check_exactly(&c, "failover", &acked);
}

#[test]
fn killing_the_controller_that_also_leads_loses_nothing() {
    let mut c = Cluster::start(3, FAST);
    let b = c.nodes[0].bootstrap();
    let ctrl = metadata(&b, "x").controller_id.0;
    assert!(ctrl >= 1);
    let others: Vec<i32> = (1..=3).filter(|i| *i != ctrl).collect();
    let assignment = [ctrl, others[0], others[1]];
    create(
        &b,
        NewTopic::new("both", 1, TopicReplication::Variable(&[&assignment])),
    );
    assert_eq!(leader_of(&b, "both", 0), ctrl);
    let acked = produce_through_kill(&mut c, "both", 3000, 1000, ctrl);
    assert_eq!(acked.len(), 3000);
    check_exactly(&c, "both", &acked);
    // the remaining nodes elected a new controller and still create topics
    let alive = c.bootstrap();
    let first = alive.split(',').next().unwrap().to_string();
    create(
        &first,
        NewTopic::new("after", 1, TopicReplication::Fixed(2)),
    );
}

#[test]
fn killing_the_controller_leader_alone_loses_nothing() {
    let mut c = Cluster::start(3, FAST);
    let b = c.nodes[0].bootstrap();
    let ctrl = metadata(&b, "x").controller_id.0;
    assert!(ctrl >= 1);
    let others: Vec<i32> = (1..=3).filter(|i| *i != ctrl).collect();
    // The partition is led by another node; the controller is only a follower of it.
    let assignment = [others[0], others[1], ctrl];
    create(
        &b,
        NewTopic::new("ctrl-only", 1, TopicReplication::Variable(&[&assignment])),
    );
    assert_eq!(leader_of(&b, "ctrl-only", 0), others[0]);
    let acked = produce_through_kill(&mut c, "ctrl-only", 3000, 1000, ctrl);
    assert_eq!(acked.len(), 3000, "every message acknowledged");
    check_exactly(&c, "ctrl-only", &acked);
    // A new controller was elected among the survivors; it fenced the dead node (which left
    // the ISR) and still serves metadata changes.
    let first = c.bootstrap().split(',').next().unwrap().to_string();
    wait_until(
        "a new controller and the dead node out of the ISR",
        30,
        || {
            let md = metadata(&first, "ctrl-only");
            let new_ctrl = md.controller_id.0;
            new_ctrl != ctrl
                && others.contains(&new_ctrl)
                && !isr_of(&first, "ctrl-only", 0).contains(&ctrl)
        },
    );
    assert_eq!(
        leader_of(&first, "ctrl-only", 0),
        others[0],
        "the partition kept its leader"
    );
    create(
        &first,
        NewTopic::new("after-ctrl", 1, TopicReplication::Fixed(2)),
    );
}

/// Sends `values` (as text) round-robin over partitions `0..partitions` with `acks` and waits
/// for every acknowledgement.
fn produce_range(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    partitions: i64,
    values: std::ops::Range<i64>,
) {
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    for i in values {
        p.send(
            BaseRecord::<str, str>::to(topic)
                .payload(&i.to_string())
                .partition((i % partitions) as i32),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

#[test]
fn the_preferred_leader_returns_after_its_broker_comes_back() {
    let mut extra = FAST.to_vec();
    extra.extend(["--leader-imbalance-check-interval-ms", "500"]);
    let mut c = Cluster::start(3, &extra);
    let b1 = c.nodes[0].bootstrap();
    // Node 2 is the preferred leader (first replica).
    create(
        &b1,
        NewTopic::new("pref", 1, TopicReplication::Variable(&[&[2, 1, 3]])),
    );
    assert_eq!(leader_of(&b1, "pref", 0), 2);
    produce_range(&c.bootstrap(), "pref", "all", 1, 0..100);
    c.node(2).kill();
    wait_until("another leader", 30, || {
        matches!(leader_of(&b1, "pref", 0), 1 | 3)
    });
    produce_range(&c.bootstrap(), "pref", "all", 1, 100..200);
    c.node(2).spawn();
    c.node(2).wait_ready(3);
    // Back in the ISR after catching up, then elected again by the controller's periodic
    // preferred-leader check, with no admin action.
    wait_until("node 2 leads again", 60, || {
        leader_of(&b1, "pref", 0) == 2 && isr_of(&b1, "pref", 0).len() == 3
    });
    produce_range(&c.bootstrap(), "pref", "all", 1, 200..300);
    assert_eq!(
        consume_values(&c.bootstrap(), "pref", 0, 300),
        (0..300).collect::<Vec<i64>>()
    );
}

/// Session and lag timeouts long enough that followers frozen with SIGSTOP stay registered
/// and in the ISR for a whole test.
const FROZEN_STAY_IN_ISR: &[&str] = &[
    "--broker-session-timeout-ms",
    "60000",
    "--replica-lag-time-max-ms",
    "60000",
];
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;

#[test]
fn non_leaders_refuse_and_consumers_see_only_what_the_isr_has() {
    let mut c = Cluster::start(3, FROZEN_STAY_IN_ISR);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("hw", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    produce_range(&b1, "hw", "all", 1, 0..100);
    // Produce and Fetch sent to a follower are refused, as Kafka does; clients bootstrapped
    // from a follower still find the leader.
    for follower in [&c.nodes[1], &c.nodes[2]] {
        let b = follower.bootstrap();
        assert_eq!(
            produce_once(&b, "hw", 0, 1, 5000, 1).0,
            NOT_LEADER_OR_FOLLOWER
        );
        let mut s = raw::connect(&b).unwrap();
        assert_eq!(
            fetch_once(&mut s, -1, "hw", 0, 0).error_code,
            NOT_LEADER_OR_FOLLOWER
        );
    }
    produce_range(&c.nodes[2].bootstrap(), "hw", "all", 1, 100..110);
    wait_until("followers caught up", 30, || {
        local_leo(&c.nodes[1].bootstrap(), "hw", 0) == 110
            && local_leo(&c.nodes[2].bootstrap(), "hw", 0) == 110
    });
    // Records only the leader has are above the high watermark: not served to consumers.
    c.node(2).signal(libc::SIGSTOP);
    c.node(3).signal(libc::SIGSTOP);
    assert_eq!(produce_once(&b1, "hw", 0, 1, 5000, 5), (0, 110));
    assert_eq!(local_leo(&b1, "hw", 0), 115);
    let mut s = raw::connect(&b1).unwrap();
    let pd = fetch_once(&mut s, -1, "hw", 0, 110);
    assert_eq!(pd.error_code, 0);
    assert_eq!(pd.high_watermark, 110);
    assert!(
        pd.records.unwrap_or_default().is_empty(),
        "served above the HW"
    );
    // acks=all cannot complete while the followers are away (both still in the ISR).
    assert_eq!(produce_once(&b1, "hw", 0, -1, 1000, 1).0, 7); // REQUEST_TIMED_OUT
    c.node(2).signal(libc::SIGCONT);
    c.node(3).signal(libc::SIGCONT);
    wait_until("the HW passes the new records", 30, || {
        let pd = fetch_once(&mut s, -1, "hw", 0, 110);
        pd.high_watermark == 116 && !pd.records.unwrap_or_default().is_empty()
    });
}

#[test]
fn a_retried_idempotent_batch_is_answered_like_the_original_and_waits_for_the_isr() {
    let mut c = Cluster::start(3, FROZEN_STAY_IN_ISR);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("retry", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    let (pid, epoch) = init_producer_id(&b1);
    let batch = |seq: i32| {
        let mut b = chronik_storage::testing::build_batch_of(5, 10, b'r', 1_700_000_000_000);
        chronik_storage::testing::set_producer(&mut b, pid, epoch, seq);
        b.freeze()
    };
    assert_eq!(produce_batch(&b1, "retry", 0, -1, 30_000, batch(0)), (0, 0));
    // The retry of an acknowledged batch gets the original's answer and is not appended again.
    assert_eq!(produce_batch(&b1, "retry", 0, -1, 30_000, batch(0)), (0, 0));
    assert_eq!(local_leo(&b1, "retry", 0), 5);
    // A batch the ISR has not got yet: its retry is not acknowledged either.
    c.node(3).signal(libc::SIGSTOP);
    assert_eq!(produce_batch(&b1, "retry", 0, -1, 1000, batch(5)).0, 7); // REQUEST_TIMED_OUT
    assert_eq!(produce_batch(&b1, "retry", 0, -1, 1000, batch(5)).0, 7);
    assert_eq!(local_leo(&b1, "retry", 0), 10, "appended once");
    c.node(3).signal(libc::SIGCONT);
    assert_eq!(produce_batch(&b1, "retry", 0, -1, 30_000, batch(5)), (0, 5));
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("both batches, once, on every node", 30, || {
            local_leo(&b, "retry", 0) == 10
        });
    }
}

#[test]
fn an_isr_shrinking_under_a_waiting_acks_all_produce_answers_after_append() {
    let mut c = Cluster::start(
        3,
        &[
            "--broker-session-timeout-ms",
            "60000",
            "--broker-heartbeat-interval-ms",
            "200",
            "--replica-lag-time-max-ms",
            "2000",
        ],
    );
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("shrink", 1, TopicReplication::Variable(&[&[1, 2, 3]]))
            .set("min.insync.replicas", "3"),
    );
    produce_range(&b1, "shrink", "all", 1, 0..10);
    // Freeze one follower, not the controller, so the controller can still shrink the ISR.
    let ctrl = metadata(&b1, "shrink").controller_id.0;
    let frozen = if ctrl == 2 { 3 } else { 2 };
    c.node(frozen).signal(libc::SIGSTOP);
    // Appended on the leader, then the ISR drops to two, below min.insync.replicas = 3.
    assert_eq!(
        produce_once(&b1, "shrink", 0, -1, 30_000, 1),
        (NOT_ENOUGH_REPLICAS_AFTER_APPEND, 10)
    );
    assert_eq!(isr_of(&b1, "shrink", 0).len(), 2);
    // Now refused before appending; acks=1 still works.
    assert_eq!(
        produce_once(&b1, "shrink", 0, -1, 30_000, 1).0,
        NOT_ENOUGH_REPLICAS
    );
    assert_eq!(local_leo(&b1, "shrink", 0), 11);
    assert_eq!(produce_once(&b1, "shrink", 0, 1, 30_000, 1), (0, 11));
    c.node(frozen).signal(libc::SIGCONT);
    wait_until("the follower back in the ISR", 30, || {
        isr_of(&b1, "shrink", 0).len() == 3
    });
    assert_eq!(produce_once(&b1, "shrink", 0, -1, 30_000, 1), (0, 12));
}

#[test]
fn follower_restart_learns_topics_catches_up_and_rejoins_isr() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    c.node(3).kill();
    wait_until("node 3 fenced", 20, || {
        raw::metadata_broker_count(&b1).unwrap_or(3) == 2
    });
    create(
        &b1,
        NewTopic::new("while-down", 1, TopicReplication::Fixed(2)),
    );
    // RF 2 with node 3 down lands on 1 and 2; reassigning to include 3 is not needed: use RF 3
    // topic created before? Create one that includes node 3 once it is back instead.
    produce_range(&c.bootstrap(), "while-down", "all", 1, 0..1000);
    c.node(3).spawn();
    c.node(3).wait_ready(3);
    let b3 = c.nodes[2].bootstrap();
    // node 3 learnt the topic created while it was down
    assert_eq!(metadata(&b3, "while-down").topics[0].error_code, 0);
    // an RF 3 topic now includes node 3; produce, and node 3 catches up and is in the ISR
    create(
        &b1,
        NewTopic::new("with-three", 1, TopicReplication::Fixed(3)),
    );
    produce_range(&c.bootstrap(), "with-three", "all", 1, 0..1000);
    wait_until("node 3 caught up", 30, || {
        local_leo(&b3, "with-three", 0) == 1000
    });
    wait_until("node 3 in ISR", 30, || {
        isr_of(&b1, "with-three", 0) == vec![1, 2, 3]
    });
}

#[test]
fn isr_shrinks_below_min_insync_then_produce_recovers() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    let mut t = NewTopic::new("strict", 1, TopicReplication::Variable(&[&[1, 2, 3]]));
    t = t.set("min.insync.replicas", "3");
    create(&b1, t);
    let p: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b1)
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .set("retries", "0")
        .create()
        .unwrap();
    let send = |v: &str| {
        block_on(
            p.send(
                rdkafka::producer::FutureRecord::<str, str>::to("strict")
                    .payload(v)
                    .partition(0),
                Duration::from_secs(5),
            ),
        )
    };
    assert!(send("all three up").is_ok());
    c.node(3).kill();
    wait_until("ISR shrinks to two", 30, || {
        isr_of(&b1, "strict", 0) == vec![1, 2]
    });
    let err = send("two up").expect_err("acks=all must fail with 2 < min.insync.replicas");
    assert_eq!(
        err.0.rdkafka_error_code(),
        Some(RDKafkaErrorCode::NotEnoughReplicas),
        "{:?}",
        err.0
    );
    // nothing half-written: the log end did not move
    assert_eq!(local_leo(&b1, "strict", 0), 1);
    c.node(3).spawn();
    c.node(3).wait_ready(3);
    wait_until("node 3 back in the ISR", 30, || {
        isr_of(&b1, "strict", 0) == vec![1, 2, 3]
    });
    assert!(send("three again").is_ok());
}

#[test]
fn divergent_tail_of_a_failed_leader_is_truncated() {
    let mut c = Cluster::start(
        3,
        &[
            "--broker-session-timeout-ms",
            "2000",
            "--broker-heartbeat-interval-ms",
            "200",
            "--replica-lag-time-max-ms",
            "30000",
        ],
    );
    let b1 = c.nodes[0].bootstrap();
    // leader on node 1 (not necessarily the controller)
    create(
        &b1,
        NewTopic::new("diverge", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    let p: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b1)
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..100 {
        block_on(
            p.send(
                rdkafka::producer::FutureRecord::<str, str>::to("diverge")
                    .payload(&i.to_string())
                    .partition(0),
                Duration::from_secs(10),
            ),
        )
        .expect("acks=all");
    }
    drop(p);
    // Freeze the followers, write acks=1 data only the leader gets, kill the leader.
    c.node(2).signal(libc::SIGSTOP);
    c.node(3).signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(100));
    let p1: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &b1)
        .set("acks", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..50 {
        block_on(
            p1.send(
                rdkafka::producer::FutureRecord::<str, str>::to("diverge")
                    .payload(&format!("lost-{i}"))
                    .partition(0),
                Duration::from_secs(10),
            ),
        )
        .expect("acks=1 on the leader alone");
    }
    drop(p1);
    assert_eq!(local_leo(&b1, "diverge", 0), 150);
    c.node(1).kill();
    c.node(2).signal(libc::SIGCONT);
    c.node(3).signal(libc::SIGCONT);
    let b2 = c.nodes[1].bootstrap();
    wait_until("a new leader", 30, || {
        matches!(leader_of(&b2, "diverge", 0), 2 | 3)
    });
    let p2: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            format!("{b2},{}", c.nodes[2].bootstrap()),
        )
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..20 {
        block_on(
            p2.send(
                rdkafka::producer::FutureRecord::<str, str>::to("diverge")
                    .payload(&format!("new-{i}"))
                    .partition(0),
                Duration::from_secs(20),
            ),
        )
        .expect("produce to the new leader");
    }
    // The old leader returns: its 50 unreplicated records are cut and it copies the new tail.
    c.node(1).spawn();
    c.node(1).wait_ready(3);
    let leader_now = leader_of(&b2, "diverge", 0);
    let lb = c.nodes[(leader_now - 1) as usize].bootstrap();
    let new_end = local_leo(&lb, "diverge", 0);
    // A follower fetch in flight when the followers were frozen may have copied a few acks=1
    // records; the rest of the 50 are not on the new leader.
    assert!((120..150).contains(&new_end), "new leader's end {new_end}");
    wait_until("old leader converges", 30, || {
        local_leo(&b1, "diverge", 0) == new_end
    });
    assert_eq!(
        local_bytes(&b1, "diverge", 0, new_end),
        local_bytes(&lb, "diverge", 0, new_end)
    );
}

#[test]
fn a_thousand_topics_from_create_and_auto_create_are_visible_everywhere() {
    // 1 MiB segments keep the 1,000 preallocated logs small on disk.
    let c = Cluster::start(3, &["--log-segment-bytes", "1048576"]);
    let names: Vec<String> = (0..1000).map(|i| format!("many-{i:04}")).collect();
    for (chunk_no, chunk) in names.chunks(50).enumerate() {
        let node = &c.nodes[chunk_no % 3];
        if chunk_no % 2 == 0 {
            let topics: Vec<NewTopic> = chunk
                .iter()
                .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
                .collect();
            let r = block_on(admin(&node.bootstrap()).create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("create_topics");
            assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
        } else {
            // auto-create through Metadata (allow_auto_topic_creation)
            let mut s = raw::connect(&node.bootstrap()).unwrap();
            let mut req = kafka_protocol::messages::MetadataRequest::default();
            req.allow_auto_topic_creation = true;
            req.topics = Some(
                chunk
                    .iter()
                    .map(|n| {
                        let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
                        t.name = Some(TopicName(StrBytes::from_string(n.clone())));
                        t
                    })
                    .collect(),
            );
            let r: MetadataResponse = raw::call(&mut s, ApiKey::Metadata, 9, &req).unwrap();
            assert!(
                r.topics.iter().all(|t| t.error_code == 0),
                "auto-create on node {}",
                node.node_id
            );
        }
    }
    for n in &c.nodes {
        let md = raw::metadata(&n.bootstrap(), None).unwrap();
        let mut seen: Vec<String> = md
            .topics
            .iter()
            .filter(|t| t.partitions.len() == 1 && t.partitions[0].leader_id.0 > 0)
            .filter_map(|t| t.name.as_ref().map(|x| x.0.to_string()))
            .filter(|x| x.starts_with("many-"))
            .collect();
        seen.sort();
        let missing: Vec<String> = names
            .iter()
            .filter(|x| seen.binary_search(x).is_err())
            .map(|x| {
                let t = md
                    .topics
                    .iter()
                    .find(|t| t.name.as_ref().map(|y| y.0.as_str()) == Some(x.as_str()));
                format!("{x}: {:?}", t.map(|t| (t.error_code, t.partitions.clone())))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "node {} does not see these topics with a leader: {missing:?}",
            n.node_id
        );
    }
}

#[test]
fn committed_offsets_survive_killing_the_group_coordinator() {
    let mut c = Cluster::start(3, FAST);
    let b = c.bootstrap();
    create(&b, NewTopic::new("gfo", 1, TopicReplication::Fixed(3)));
    let group = "gfo-group";
    // Commit offset 60 (acks=all into the replicated __consumer_offsets).
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("gfo", 0, Offset::Offset(60))
        .unwrap();
    let mut committed = false;
    for _ in 0..50 {
        if committer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .is_ok()
        {
            committed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(committed, "commit accepted");
    drop(committer);
    // Which node coordinates the group?
    let mut s = raw::connect(&c.nodes[0].bootstrap()).unwrap();
    let mut req = kafka_protocol::messages::FindCoordinatorRequest::default();
    req.key = StrBytes::from_static_str("gfo-group");
    let r: kafka_protocol::messages::FindCoordinatorResponse =
        raw::call(&mut s, ApiKey::FindCoordinator, 3, &req).unwrap();
    assert_eq!(r.error_code, 0);
    let coordinator = r.node_id.0;
    assert!((1..=3).contains(&coordinator));
    c.node(coordinator).kill();
    // A new member, on the surviving nodes, finds the committed offset at the new coordinator.
    let survivors = c.bootstrap();
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &survivors)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut q = TopicPartitionList::new();
    q.add_partition("gfo", 0);
    let mut seen = None;
    wait_until("committed offset served by the new coordinator", 60, || {
        if let Ok(r) = reader.committed_offsets(q.clone(), Duration::from_secs(5)) {
            seen = r.find_partition("gfo", 0).map(|e| e.offset());
        }
        seen == Some(Offset::Offset(60))
    });
}

/// Lines of a node's log that contain `what`.
fn log_lines(c: &Cluster, node: usize, what: &str) -> usize {
    std::fs::read_to_string(c.nodes[node].log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

#[test]
fn a_follower_whose_disk_fills_backs_off_leaves_the_isr_and_catches_up_when_space_returns() {
    let mut c = Cluster::start(3, FAST);
    // Node 3's copy of the partition lives on a 4 MiB file system of its own.
    let Some(disk) = Tmpfs::mount(&c.nodes[2].data_dir.join("full-0"), "4m") else {
        println!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    let b1 = c.nodes[0].bootstrap();
    let b3 = c.nodes[2].bootstrap();
    create(
        &b1,
        NewTopic::new("full", 1, TopicReplication::Variable(&[&[1, 2, 3]]))
            .set("segment.bytes", "262144"),
    );
    // 12 MB with acks=1: the leader and node 2 take it all, node 3 runs out of space.
    let value = "x".repeat(1000);
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "1")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    for _ in 0..12_000 {
        p.send(
            BaseRecord::<str, str>::to("full")
                .payload(&value)
                .partition(0),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(local_leo(&b1, "full", 0), 12_000);
    wait_until("node 2 has everything", 30, || {
        local_leo(&c.nodes[1].bootstrap(), "full", 0) == 12_000
    });
    wait_until("node 3 to hit the full disk", 30, || {
        log_lines(&c, 2, "replica append") > 0
    });
    // It drops out of the ISR (replica.lag.time.max.ms is 4 s here) and acks=all goes on.
    wait_until("node 3 out of the ISR", 30, || {
        isr_of(&b1, "full", 0) == vec![1, 2]
    });
    produce_range(&c.bootstrap(), "full", "all", 1, 0..1000);
    // Meanwhile it retried about once a second, warning once, not once per attempt (before the
    // back-off it retried at once: thousands of warnings a second).
    let warnings = log_lines(&c, 2, "replica append");
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} replica-append warnings from node 3"
    );
    // Its log stayed consistent and readable up to where the writes stopped. (Its log end
    // counts batches queued for a write too, so a sample taken while a retry is being written
    // reads high for a moment: take the lowest of a few.)
    let written = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            local_leo(&b3, "full", 0)
        })
        .min()
        .unwrap_or(-1);
    assert!((1..12_000).contains(&written), "node 3 at {written}");
    assert_eq!(
        local_bytes(&b3, "full", 0, written),
        local_bytes(&b1, "full", 0, written)
    );

    // Space returns: node 3 catches up, says so, and rejoins the ISR.
    disk.resize("64m");
    wait_until("node 3 caught up", 60, || {
        local_leo(&b3, "full", 0) == 13_000
    });
    wait_until("node 3 back in the ISR", 30, || {
        isr_of(&b1, "full", 0) == vec![1, 2, 3]
    });
    assert_eq!(log_lines(&c, 2, "replica appends succeed again"), 1);
    assert_eq!(
        local_bytes(&b3, "full", 0, 13_000),
        local_bytes(&b1, "full", 0, 13_000),
        "node 3's copy matches the leader's"
    );
    c.node(3).kill();
}

fn leader_epoch_of(addr: &str, topic: &str) -> i32 {
    metadata(addr, topic).topics[0].partitions[0].leader_epoch
}

#[test]
fn a_leader_whose_disk_fills_hands_leadership_on_under_a_new_epoch_and_no_replica_diverges() {
    let mut c = Cluster::start(3, FAST);
    // Node 1, the preferred leader, keeps its copy on a 4 MiB file system of its own.
    let Some(disk) = Tmpfs::mount(&c.nodes[0].data_dir.join("lfull-0"), "4m") else {
        println!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("lfull", 1, TopicReplication::Variable(&[&[1, 2, 3]]))
            .set("segment.bytes", "262144"),
    );
    wait_until("node 1 leads", 30, || leader_of(&b1, "lfull", 0) == 1);
    let epoch_before = leader_epoch_of(&b1, "lfull");
    // 12 MB, idempotent acks=all: node 1's disk fills a third of the way. Its failed write
    // must not stop the partition (before, it refused every produce from then on) nor let a
    // follower keep batches the leader dropped.
    let acks = Acks::default();
    let p: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "90000")
        .set("retry.backoff.ms", "100")
        .create_with_context(acks.clone())
        .unwrap();
    let pad = "x".repeat(1000);
    for i in 0..12_000i64 {
        let value = format!("{i:08}{pad}");
        loop {
            match p.send(
                BaseRecord::<str, str, Box<i64>>::with_opaque_to("lfull", Box::new(i))
                    .payload(&value)
                    .partition(0),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
    }
    p.flush(Duration::from_secs(120))
        .expect("every record delivered after the leader's disk filled");
    let acked = acks.count();
    assert_eq!(acked, 12_000, "every record acknowledged");
    assert!(
        log_lines(&c, 0, "leader write failed") >= 1,
        "node 1's write failed as its leader"
    );
    assert!(
        leader_epoch_of(&b1, "lfull") > epoch_before,
        "a new leader epoch after the failed write"
    );
    // Space returns: every replica ends at exactly the acknowledged records (idempotent: no
    // duplicates), and all three copies are the same bytes.
    disk.resize("64m");
    for node in &c.nodes {
        let b = node.bootstrap();
        wait_until("every replica has every record", 90, || {
            local_leo(&b, "lfull", 0) == 12_000
        });
    }
    let reference = local_bytes(&c.nodes[1].bootstrap(), "lfull", 0, 12_000);
    for node in [&c.nodes[0], &c.nodes[2]] {
        assert!(
            local_bytes(&node.bootstrap(), "lfull", 0, 12_000) == reference,
            "a replica diverged"
        );
    }
    c.node(1).kill();
}

/// DeleteRecords on `addr` (the partition's leader): every record of `topic`-0 below `offset`.
fn delete_records_before(addr: &str, topic: &str, offset: i64) -> (i16, i64) {
    delete_records_within(addr, topic, offset, 10_000)
}

/// `delete_records_before` with the request's `timeout_ms`.
fn delete_records_within(addr: &str, topic: &str, offset: i64, timeout_ms: i32) -> (i16, i64) {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
    let mut s = raw::connect(addr).expect("connect");
    let mut p = DeleteRecordsPartition::default();
    p.partition_index = 0;
    p.offset = offset;
    let mut t = DeleteRecordsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    t.partitions = vec![p];
    let mut req = DeleteRecordsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = timeout_ms;
    let r: DeleteRecordsResponse =
        raw::call(&mut s, ApiKey::DeleteRecords, 2, &req).expect("delete records");
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

#[test]
fn a_follower_whose_log_ends_below_the_leaders_log_start_starts_over_there_and_rejoins_the_isr() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("behind", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    produce_range(&c.bootstrap(), "behind", "all", 1, 0..20);
    let b3 = c.nodes[2].bootstrap();
    wait_until("node 3 has the first records", 30, || {
        local_leo(&b3, "behind", 0) == 20
    });
    c.node(3).kill();
    wait_until("node 3 out of the ISR", 30, || {
        !isr_of(&b1, "behind", 0).contains(&3)
    });
    // While node 3 is down the leader writes on and its log start moves past node 3's end.
    produce_range(&b1, "behind", "all", 1, 20..300);
    let leader = leader_of(&b1, "behind", 0);
    let lb = c.nodes[(leader - 1) as usize].bootstrap();
    assert_eq!(delete_records_before(&lb, "behind", 250), (0, 250));
    c.node(3).spawn();
    c.node(3).wait_ready(3);
    wait_until("node 3 holds the leader's log from its start", 60, || {
        local_leo(&b3, "behind", 0) == 300
    });
    assert_eq!(
        local_bytes_from(&b3, "behind", 0, 250, 300),
        local_bytes_from(&lb, "behind", 0, 250, 300),
        "the same records from offset 250 on"
    );
    wait_until("node 3 back in the ISR", 30, || {
        isr_of(&b1, "behind", 0).len() == 3
    });
    // Every replica's log starts where the leader's does, so whichever leads next serves no
    // deleted record.
    for n in &c.nodes {
        let b = n.bootstrap();
        wait_until("the replica's log start follows the leader's", 30, || {
            local_log_start(&b, "behind", 0) == 250
        });
    }
}

#[test]
fn delete_records_answers_once_every_in_sync_replica_has_moved_its_log_start() {
    let mut c = Cluster::start(3, FROZEN_STAY_IN_ISR);
    let b1 = c.nodes[0].bootstrap();
    create(
        &b1,
        NewTopic::new("trimmed", 1, TopicReplication::Variable(&[&[1, 2, 3]])),
    );
    produce_range(&b1, "trimmed", "all", 1, 0..100);
    let leader = leader_of(&b1, "trimmed", 0);
    let lb = c.nodes[(leader - 1) as usize].bootstrap();
    assert_eq!(delete_records_before(&lb, "trimmed", 60), (0, 60));
    // Answered only now: no replica that could lead next still serves the deleted records.
    for n in &c.nodes {
        assert_eq!(local_log_start(&n.bootstrap(), "trimmed", 0), 60);
    }
    // A frozen follower stays in the ISR (long lag time) and cannot move its log start: the
    // request times out, as Kafka's does, with the low watermark where that follower holds it.
    let frozen = if leader == 3 { 2 } else { 3 };
    c.node(frozen).signal(libc::SIGSTOP);
    assert_eq!(
        delete_records_within(&lb, "trimmed", 80, 500),
        (REQUEST_TIMED_OUT, 60)
    );
    assert_eq!(local_log_start(&lb, "trimmed", 0), 80, "the leader's moved");
    c.node(frozen).signal(libc::SIGCONT);
    assert_eq!(delete_records_before(&lb, "trimmed", 90), (0, 90));
    for n in &c.nodes {
        assert_eq!(local_log_start(&n.bootstrap(), "trimmed", 0), 90);
    }
}

/// This node's own log start offset for a partition (debug replica id -2).
fn local_log_start(addr: &str, topic: &str, partition: i32) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse};
    let Ok(mut s) = raw::connect(addr) else {
        return -1;
    };
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -2;
    p.current_leader_epoch = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-2);
    req.topics = vec![t];
    match raw::call::<_, ListOffsetsResponse>(&mut s, ApiKey::ListOffsets, 4, &req) {
        Ok(r) if r.topics[0].partitions[0].error_code == 0 => r.topics[0].partitions[0].offset,
        _ => -1,
    }
}
