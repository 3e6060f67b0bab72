//! Controller clusters over loopback TCP in one process.

mod common;

use chronik_raft::image::{MetadataImage, NO_LEADER};
use common::*;

/// The parts of an image every node must agree on (controller id and timing aside).
fn replicated(
    img: &MetadataImage,
) -> (
    u64,
    String,
    Vec<(String, chronik_raft::image::TopicImage)>,
    Vec<chronik_raft::image::BrokerInfo>,
) {
    let mut topics: Vec<_> = img
        .topics
        .iter()
        .map(|(n, t)| (n.clone(), (**t).clone()))
        .collect();
    topics.sort_by(|a, b| a.0.cmp(&b.0));
    (
        img.applied_index,
        img.cluster_id.clone(),
        topics,
        img.brokers.values().cloned().collect(),
    )
}

#[test]
fn single_node_cluster_creates_topics() {
    let c = Cluster::start(1);
    c.wait_brokers_live(1);
    let s = create(c.node(0), "orders", 3, 1);
    assert_created(&s, "orders");
    block_on(c.node(0).wait_applied(s.index)).expect("applied");
    let img = c.node(0).current_image();
    let t = img.topic("orders").expect("topic in image");
    assert_eq!(t.partitions.len(), 3);
    assert!(t
        .partitions
        .iter()
        .all(|p| p.leader == 1 && p.isr == vec![1]));
    assert_eq!(
        img.topic_by_id(&t.id).map(|t| t.name.as_str()),
        Some("orders")
    );
    assert_eq!(img.controller_id, Some(1));
    assert!(!img.cluster_id.is_empty());
}

#[test]
fn topics_created_on_a_follower_appear_identically_on_all_three_nodes() {
    let c = Cluster::start(3);
    c.wait_brokers_live(3);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    let mut last = 0;
    for i in 0..10 {
        let s = create(c.node(follower), &format!("t{i}"), 3, 3);
        assert_created(&s, &format!("t{i}"));
        last = s.index;
    }
    c.wait_applied_everywhere(last);
    // The follower's own image reflects the topic as soon as wait_applied returns.
    let img = c.node(follower).current_image();
    for i in 0..10 {
        let t = img.topic(&format!("t{i}")).expect("topic on follower");
        for p in &t.partitions {
            assert_eq!(p.replicas.len(), 3);
            assert_eq!(p.isr.len(), 3);
            assert!(p.isr.contains(&p.leader));
        }
    }
    wait_until("identical images", || {
        let imgs: Vec<_> = c
            .running()
            .map(|(_, n)| replicated(&n.current_image()))
            .collect();
        imgs.windows(2).all(|w| w[0] == w[1])
    });
}

#[test]
fn leader_failover_restart_and_catch_up() {
    let mut c = Cluster::start(3);
    c.wait_brokers_live(3);
    let s = create(c.node(0), "before", 3, 3);
    assert_created(&s, "before");
    c.wait_applied_everywhere(s.index);

    let old = c.leader();
    c.stop(old);
    let new = c.leader();
    assert_ne!(new, old);
    // Creation resumes through the new leader, submitted on either survivor. RF 2: the stopped
    // broker may already be fenced.
    let mut last = 0;
    for (i, (_, n)) in c.running().enumerate() {
        let s = create(n, &format!("during{i}"), 2, 2);
        assert_created(&s, &format!("during{i}"));
        last = s.index;
    }
    // The node that was down while topics were created learns them after restart.
    c.restart(old);
    let back = c.node(old);
    block_on(back.wait_applied(last)).expect("restarted node catches up");
    let img = back.current_image();
    for name in ["before", "during0", "during1"] {
        assert!(img.topic(name).is_some(), "restarted node misses {name}");
    }
    // It re-registers and is unfenced again.
    c.wait_brokers_live(3);
    // And a restart of every node recovers all state from disk.
    c.shutdown_all();
    for i in 0..3 {
        c.restart(i);
    }
    c.leader();
    for (_, n) in c.running() {
        wait_until("recovered topics", || {
            let img = n.current_image();
            ["before", "during0", "during1"]
                .iter()
                .all(|t| img.topic(t).is_some())
        });
    }
}

#[test]
fn a_silent_broker_is_fenced_and_its_partitions_move_within_the_isr() {
    let mut c = Cluster::start(3);
    c.wait_brokers_live(3);
    let s = create(c.node(0), "fenced", 6, 3);
    assert_created(&s, "fenced");
    c.wait_applied_everywhere(s.index);
    let before = c
        .node(0)
        .current_image()
        .topic("fenced")
        .cloned()
        .expect("topic");
    // Stop a broker that is not the Raft leader, then (separately) it does not matter which.
    let victim = (c.leader() + 1) % 3;
    let victim_id = victim as i32 + 1;
    assert!(
        before.partitions.iter().any(|p| p.leader == victim_id),
        "victim leads something"
    );
    c.stop(victim);
    let watcher = (victim + 1) % 3;
    wait_until("victim fenced", || {
        c.node(watcher)
            .current_image()
            .broker(victim_id)
            .map(|b| b.fenced)
            .unwrap_or(false)
    });
    let img = c.node(watcher).current_image();
    let after = img.topic("fenced").expect("topic");
    for (old, new) in before.partitions.iter().zip(&after.partitions) {
        assert!(
            !new.isr.contains(&victim_id),
            "fenced broker still in ISR: {new:?}"
        );
        assert!(
            new.leader == NO_LEADER || new.isr.contains(&new.leader),
            "leader outside ISR: {new:?}"
        );
        assert!(
            old.isr.contains(&new.leader),
            "leader not from the old ISR: {new:?}"
        );
        if old.leader == victim_id {
            assert_ne!(new.leader, victim_id);
            assert_eq!(new.leader_epoch, old.leader_epoch + 1);
            assert!(new.partition_epoch > old.partition_epoch);
        } else {
            assert_eq!(new.leader, old.leader);
            assert_eq!(new.leader_epoch, old.leader_epoch);
        }
    }
    // The broker comes back: it re-registers and is unfenced.
    c.restart(victim);
    c.wait_brokers_live(3);
}

/// A controller listening where another cluster expects one of its nodes (a reused port, a
/// wrong quorum string) is not fed that cluster's log: its connections name another cluster id
/// and are refused, and both clusters carry on.
#[test]
fn a_controller_refuses_the_raft_traffic_of_another_cluster() {
    let mut b = Cluster::start(3);
    b.wait_brokers_live(3);
    let leader = b.leader();
    let gone = (leader + 1) % 3;
    b.stop(gone);
    // A one-node cluster now listens at the stopped node's address, with the same node id.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = b.config(gone);
    cfg.quorum = vec![b.quorum[gone].clone()];
    cfg.data_dir = dir.path().join("__raft");
    let me = cfg.node_id;
    let a = boot(cfg, &b.tuning);
    wait_until(
        "the one-node cluster leads itself, its broker registered",
        || a.raft_leader() == Some(me) && a.current_image().live_brokers().count() == 1,
    );
    assert_created(&create(&a, "only-a", 1, 1), "only-a");
    // The three-node cluster still commits with two of three, and its leader keeps trying to
    // replicate to that address (every heartbeat) meanwhile.
    assert_created(&create(b.node(leader), "only-b", 1, 1), "only-b");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let img = a.current_image();
        assert!(
            img.topic("only-b").is_none(),
            "took the other cluster's log"
        );
        assert!(img.topic("only-a").is_some(), "lost its own log");
        assert_eq!(a.raft_leader(), Some(me), "deposed by the other cluster");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_created(&create(b.node(leader), "b-again", 1, 1), "b-again");
    assert_created(&create(&a, "a-again", 1, 1), "a-again");
    a.shutdown();
}
