//! Snapshots, log compaction and membership changes, end to end.

mod common;

use chronik_raft::{Command, CommandOutcome, ControllerError, Tuning};
use common::*;

fn small_snapshots() -> Tuning {
    Tuning {
        snapshot_every: 20,
        keep_after_snapshot: 5,
        ..Tuning::default()
    }
}

#[test]
fn a_node_far_behind_catches_up_from_a_snapshot_and_restarts_from_its_own() {
    let mut c = Cluster::start_tuned(3, small_snapshots());
    c.wait_brokers_live(3);
    let leader = c.leader();
    let lagger = (leader + 1) % 3;
    c.stop(lagger);
    let survivor = (leader + 2) % 3;
    let mut last = 0;
    for i in 0..120 {
        last = create(c.node(survivor), &format!("s{i}"), 1, 1).index;
    }
    // The leader has snapshotted and purged the log the lagger needs: it must install a snapshot.
    c.restart(lagger);
    block_on(c.node(lagger).wait_applied(last)).expect("lagger catches up");
    let img = c.node(lagger).current_image();
    assert_eq!(
        (0..120)
            .filter(|i| img.topic(&format!("s{i}")).is_some())
            .count(),
        120
    );
    // Everyone restarts from snapshot + log on disk.
    c.shutdown_all();
    for i in 0..3 {
        c.restart(i);
    }
    for (_, n) in c.running() {
        wait_until("state recovered", || {
            let img = n.current_image();
            (0..120).all(|i| img.topic(&format!("s{i}")).is_some())
        });
    }
    // And producer-id allocation continues without reusing a block.
    let a = block_on(c.node(0).submit(Command::AllocateProducerIds {
        broker: 1,
        count: 10,
    }))
    .expect("alloc");
    let b = block_on(c.node(1).submit(Command::AllocateProducerIds {
        broker: 2,
        count: 10,
    }))
    .expect("alloc");
    match (a.outcome, b.outcome) {
        (CommandOutcome::ProducerIds(Ok(x)), CommandOutcome::ProducerIds(Ok(y))) => {
            assert!(x + 10 <= y || y + 10 <= x)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_joins_as_learner_is_promoted_and_can_be_removed() {
    let mut c = Cluster::start(2);
    c.wait_brokers_live(2);
    let s = create(c.node(0), "before-join", 2, 2);
    // A third node outside the initial quorum: it waits to be added.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    c.quorum.push((3, addr.clone()));
    c.dirs.push(tempfile::tempdir().expect("tempdir"));
    let mut cfg = c.config(2);
    cfg.quorum.pop();
    c.nodes.push(Some(
        chronik_raft::start_with(cfg, c.tuning.clone()).expect("start node 3"),
    ));
    let r = block_on(c.node(1).submit(Command::AddNode {
        id: 3,
        raft_addr: addr,
        voter: true,
    }))
    .expect("add node");
    assert_eq!(r.outcome, CommandOutcome::Done);
    block_on(c.node(2).wait_applied(s.index)).expect("new node catches up");
    assert!(c.node(2).current_image().topic("before-join").is_some());
    c.wait_brokers_live(3);
    let r = block_on(c.node(0).submit(Command::RemoveNode { id: 3 })).expect("remove node");
    assert_eq!(r.outcome, CommandOutcome::Done);
}

/// A restarted node's image is first the one recovered from disk, which still shows its previous
/// (unfenced) registration. `registration_applied` is about this life's registration: once true,
/// the image holds everything committed while the node was down (the broker serves clients only
/// from then on).
#[test]
fn registration_applied_means_caught_up_with_what_was_missed() {
    let mut c = Cluster::start(3);
    c.wait_brokers_live(3);
    let leader = c.leader();
    let down = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    wait_until("first registration applied", || {
        c.node(down).registration_applied()
    });
    c.stop(down);
    for i in 0..50 {
        assert_created(
            &create(c.node(other), &format!("missed{i}"), 1, 1),
            &format!("missed{i}"),
        );
    }
    c.restart(down);
    let n = c.node(down);
    wait_until("registration applied after restart", || {
        n.registration_applied()
    });
    let img = n.current_image();
    let id = c.quorum[down].0;
    assert_eq!(img.broker(id).map(|b| b.fenced), Some(false));
    assert_eq!(
        (0..50)
            .filter(|i| img.topic(&format!("missed{i}")).is_some())
            .count(),
        50,
        "every topic created while the node was down"
    );
}

#[test]
fn the_cluster_id_is_kept_in_the_data_dir_and_a_different_one_is_refused() {
    let mut c = Cluster::start(1);
    c.wait_brokers_live(1);
    let derived = c.node(0).current_image().cluster_id.clone();
    assert_eq!(
        derived,
        chronik_raft::controller::derive_cluster_id(&c.quorum)
    );
    c.stop(0);

    // Restarted with another id, the node refuses to start rather than join that cluster.
    let mut cfg = c.config(0);
    cfg.cluster_id = "another-cluster".into();
    match chronik_raft::start_with(cfg.clone(), Tuning::default()) {
        Err(ControllerError::InconsistentClusterId { stored, configured }) => {
            assert_eq!(
                (stored.as_str(), configured.as_str()),
                (derived.as_str(), "another-cluster")
            );
        }
        Err(e) => panic!("expected InconsistentClusterId, got {e}"),
        Ok(_) => panic!("a node started with another cluster's id over its data dir"),
    }
    // The refusal did not overwrite the stored id: a plain restart and a restart naming the
    // stored id both work.
    c.restart(0);
    assert_eq!(c.node(0).current_image().cluster_id, derived);
    c.stop(0);
    cfg.cluster_id = derived.clone();
    let n = boot(cfg, &Tuning::default());
    assert_eq!(n.current_image().cluster_id, derived);
    n.shutdown();

    // A fresh data dir takes the configured id instead of deriving one from its quorum.
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut cfg = c.config(0);
    cfg.data_dir = fresh.path().join("__raft");
    cfg.cluster_id = "given-by-the-operator".into();
    let n = boot(cfg.clone(), &Tuning::default());
    assert_eq!(n.current_image().cluster_id, "given-by-the-operator");
    n.shutdown();
    cfg.cluster_id = String::new();
    let n = boot(cfg, &Tuning::default());
    assert_eq!(n.current_image().cluster_id, "given-by-the-operator");
    n.shutdown();
}

#[test]
fn a_snapshot_that_cannot_be_written_is_retried_and_the_controller_keeps_serving() {
    let mut c = Cluster::start_tuned(1, small_snapshots());
    c.wait_brokers_live(1);
    let snaps = c.config(0).data_dir.join("snapshots");
    // A directory where the snapshot's temp file goes: every snapshot write fails, as on a
    // full disk.
    let blocker = snaps.join("current.snap.tmp");
    std::fs::create_dir_all(&blocker).expect("block snapshot writes");
    let mut last = 0;
    for i in 0..60 {
        last = create(c.node(0), &format!("b{i}"), 1, 1).index;
    }
    assert!(
        !snaps.join("current.snap").exists(),
        "no snapshot could be written"
    );
    block_on(c.node(0).wait_applied(last)).expect("the controller still commits and applies");
    // Space returns: a later build (after the retry delay) writes the snapshot.
    std::fs::remove_dir(&blocker).expect("unblock");
    let mut i = 60;
    wait_until("a snapshot is written", || {
        last = create(c.node(0), &format!("b{i}"), 1, 1).index;
        i += 1;
        snaps.join("current.snap").exists()
    });
    // And it restarts from snapshot + log with everything.
    c.shutdown_all();
    c.restart(0);
    let n = c.node(0);
    wait_until("state recovered", || {
        let img = n.current_image();
        (0..i).all(|k| img.topic(&format!("b{k}")).is_some())
    });
}
