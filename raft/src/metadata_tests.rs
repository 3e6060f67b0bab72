//! Deterministic tests of command application: no Raft, just the state machine's rules.

use super::*;
use crate::command::{
    codes, BrokerRegistration, Command, CommandOutcome, NewTopic, PartitionRef, ProposedCommand,
};
use crate::image::NO_LEADER;
use std::collections::BTreeMap;

const D: Defaults = Defaults {
    num_partitions: 1,
    replication_factor: 1,
};

fn apply(s: &mut MetaState, cmd: Command) -> CommandOutcome {
    s.apply(&ProposedCommand::new(cmd), D)
}

fn reg(id: BrokerId, rack: Option<&str>) -> Command {
    Command::RegisterBroker(BrokerRegistration {
        id,
        host: "h".into(),
        port: 9092,
        rack: rack.map(String::from),
        listeners: Vec::new(),
    })
}

fn topic(name: &str, p: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: p,
        replication_factor: rf,
        assignments: None,
        configs: BTreeMap::new(),
    }
}

fn create(s: &mut MetaState, t: NewTopic) -> CommandOutcome {
    apply(
        s,
        Command::CreateTopics {
            topics: vec![t],
            validate_only: false,
        },
    )
}

fn cluster(n: i32) -> MetaState {
    let mut s = MetaState::default();
    for id in 1..=n {
        assert_eq!(apply(&mut s, reg(id, None)), CommandOutcome::Done);
    }
    s
}

fn topic_error(o: &CommandOutcome) -> Option<i16> {
    match o {
        CommandOutcome::Topics(r) => r[0].1.as_ref().err().map(|e| e.code),
        _ => None,
    }
}

fn part(s: &MetaState, t: &str, p: i32) -> PartitionState {
    s.image.partition(t, p).cloned().expect("partition")
}

#[test]
fn every_invalid_command_returns_its_error_and_changes_nothing() {
    let mut s = cluster(3);
    assert!(topic_error(&create(&mut s, topic("t", 3, 3))).is_none());
    let p0 = part(&s, "t", 0);
    let mut bad_cfg = topic("c", 1, 1);
    bad_cfg
        .configs
        .insert("retention.ms".into(), "forever".into());
    let mut both = topic("both", 2, 1);
    both.assignments = Some(vec![vec![1]]);
    let mut bad_assign = topic("ba", -1, -1);
    bad_assign.assignments = Some(vec![vec![1, 1]]);
    let mut unknown_broker = topic("ub", -1, -1);
    unknown_broker.assignments = Some(vec![vec![1, 42]]);
    let topic_cases: Vec<(Command, i16)> = vec![
        (
            Command::CreateTopics {
                topics: vec![topic("t", 1, 1)],
                validate_only: false,
            },
            codes::TOPIC_ALREADY_EXISTS,
        ),
        (
            Command::CreateTopics {
                topics: vec![topic("bad name", 1, 1)],
                validate_only: false,
            },
            codes::INVALID_TOPIC_EXCEPTION,
        ),
        (
            Command::CreateTopics {
                topics: vec![topic("..", 1, 1)],
                validate_only: false,
            },
            codes::INVALID_TOPIC_EXCEPTION,
        ),
        (
            Command::CreateTopics {
                topics: vec![topic("x", 0, 1)],
                validate_only: false,
            },
            codes::INVALID_PARTITIONS,
        ),
        (
            Command::CreateTopics {
                topics: vec![topic("x", -5, 1)],
                validate_only: false,
            },
            codes::INVALID_PARTITIONS,
        ),
        (
            Command::CreateTopics {
                topics: vec![topic("x", 1, 4)],
                validate_only: false,
            },
            codes::INVALID_REPLICATION_FACTOR,
        ),
        (
            Command::CreateTopics {
                topics: vec![topic("x", 1, 0)],
                validate_only: false,
            },
            codes::INVALID_REPLICATION_FACTOR,
        ),
        (
            Command::CreateTopics {
                topics: vec![bad_cfg],
                validate_only: false,
            },
            codes::INVALID_CONFIG,
        ),
        (
            Command::CreateTopics {
                topics: vec![both],
                validate_only: false,
            },
            codes::INVALID_REQUEST,
        ),
        (
            Command::CreateTopics {
                topics: vec![bad_assign],
                validate_only: false,
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            Command::CreateTopics {
                topics: vec![unknown_broker],
                validate_only: false,
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            Command::DeleteTopics {
                names: vec!["nope".into()],
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            Command::CreatePartitions {
                topics: vec![("t".into(), 3, None)],
                validate_only: false,
            },
            codes::INVALID_PARTITIONS,
        ),
        (
            Command::CreatePartitions {
                topics: vec![("t".into(), 2, None)],
                validate_only: false,
            },
            codes::INVALID_PARTITIONS,
        ),
        (
            Command::CreatePartitions {
                topics: vec![("nope".into(), 5, None)],
                validate_only: false,
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            Command::CreatePartitions {
                topics: vec![("t".into(), 4, Some(vec![vec![1, 2]]))],
                validate_only: false,
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            Command::AlterConfigs {
                topic: "t".into(),
                set: BTreeMap::from([("min.insync.replicas".into(), "zero".into())]),
                delete: vec![],
                validate_only: false,
            },
            codes::INVALID_CONFIG,
        ),
        (
            Command::AlterConfigs {
                topic: "nope".into(),
                set: BTreeMap::new(),
                delete: vec![],
                validate_only: false,
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
    ];
    for (cmd, code) in topic_cases {
        let before = s.clone();
        let o = apply(&mut s, cmd.clone());
        assert_eq!(topic_error(&o), Some(code), "{cmd:?} gave {o:?}");
        assert_eq!(s, before, "{cmd:?} changed the state");
    }
    let alter = |leader, le, pe, isr: Vec<BrokerId>| Command::AlterPartition {
        topic: "t".into(),
        partition: 0,
        leader,
        leader_epoch: le,
        partition_epoch: pe,
        new_isr: isr,
    };
    let l = p0.leader;
    let other_cases: Vec<(Command, i16)> = vec![
        (
            alter(l, p0.leader_epoch + 1, p0.partition_epoch, vec![l]),
            codes::FENCED_LEADER_EPOCH,
        ),
        (
            alter(l, p0.leader_epoch, p0.partition_epoch + 1, vec![l]),
            codes::INVALID_UPDATE_VERSION,
        ),
        (
            alter(l, p0.leader_epoch, p0.partition_epoch, vec![p0.replicas[1]]),
            codes::INELIGIBLE_REPLICA,
        ),
        (
            alter(l, p0.leader_epoch, p0.partition_epoch, vec![l, 42]),
            codes::INELIGIBLE_REPLICA,
        ),
        (
            alter(l, p0.leader_epoch, p0.partition_epoch, vec![l, l]),
            codes::INVALID_REQUEST,
        ),
        (
            Command::AlterPartition {
                topic: "t".into(),
                partition: 9,
                leader: l,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![l],
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            Command::FenceBroker { id: 42 },
            codes::BROKER_ID_NOT_REGISTERED,
        ),
        (
            Command::UnfenceBroker { id: 42 },
            codes::BROKER_ID_NOT_REGISTERED,
        ),
        (reg(-3, None), codes::INVALID_REQUEST),
        (
            Command::AllocateProducerIds {
                broker: 42,
                count: 10,
            },
            codes::BROKER_ID_NOT_REGISTERED,
        ),
        (
            Command::AllocateProducerIds {
                broker: 1,
                count: 0,
            },
            codes::INVALID_REQUEST,
        ),
        (
            Command::ReassignPartitions {
                topic: "t".into(),
                partition: 0,
                replicas: vec![],
            },
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            Command::ReassignPartitions {
                topic: "nope".into(),
                partition: 0,
                replicas: vec![1],
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            Command::ElectLeaders {
                partitions: vec![PartitionRef {
                    topic: "t".into(),
                    partition: 0,
                }],
                preferred: true,
            },
            codes::ELECTION_NOT_NEEDED,
        ),
        (
            Command::ElectLeaders {
                partitions: vec![PartitionRef {
                    topic: "nope".into(),
                    partition: 0,
                }],
                preferred: true,
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            Command::AddNode {
                id: 9,
                raft_addr: "x:1".into(),
                voter: true,
            },
            codes::INVALID_REQUEST,
        ),
    ];
    for (cmd, code) in other_cases {
        let before = s.clone();
        let o = apply(&mut s, cmd.clone());
        let got = match &o {
            CommandOutcome::Partition(Err(e))
            | CommandOutcome::ProducerIds(Err(e))
            | CommandOutcome::Rejected(e) => Some(e.code),
            CommandOutcome::Partitions(r) => r[0].1.as_ref().err().map(|e| e.code),
            _ => None,
        };
        assert_eq!(got, Some(code), "{cmd:?} gave {o:?}");
        assert_eq!(s, before, "{cmd:?} changed the state");
    }
}

#[test]
fn create_topics_is_per_topic_and_validate_only_changes_nothing() {
    let mut s = cluster(3);
    let o = apply(
        &mut s,
        Command::CreateTopics {
            topics: vec![topic("a", 2, 2), topic("a", 1, 1), topic("b", 1, 5)],
            validate_only: false,
        },
    );
    let CommandOutcome::Topics(r) = o else {
        panic!("outcome")
    };
    assert!(r[0].1.is_ok());
    assert!(r[1].1.is_err());
    assert_eq!(
        r[2].1.as_ref().err().map(|e| e.code),
        Some(codes::INVALID_REPLICATION_FACTOR)
    );
    assert!(s.image.topic("a").is_some() && s.image.topic("b").is_none());
    let before = s.clone();
    let o = apply(
        &mut s,
        Command::CreateTopics {
            topics: vec![topic("v", 3, 3)],
            validate_only: true,
        },
    );
    assert!(topic_error(&o).is_none());
    assert_eq!(s, before);
    // -1 takes the cluster defaults.
    create(&mut s, topic("d", -1, -1));
    assert_eq!(s.image.topic("d").map(|t| t.partitions.len()), Some(1));
}

#[test]
fn fencing_moves_leadership_to_a_live_isr_member_and_bumps_epochs() {
    let mut s = cluster(3);
    create(&mut s, topic("t", 6, 3));
    let before = s.image.topic("t").cloned().expect("t");
    assert_eq!(
        apply(&mut s, Command::FenceBroker { id: 2 }),
        CommandOutcome::Done
    );
    let after = s.image.topic("t").cloned().expect("t");
    for (old, new) in before.partitions.iter().zip(&after.partitions) {
        assert!(!new.isr.contains(&2));
        assert!(new.isr.contains(&new.leader));
        if old.leader == 2 {
            let expected = old
                .isr
                .iter()
                .copied()
                .find(|b| *b != 2)
                .expect("another ISR member");
            assert_eq!(new.leader, expected, "first live ISR member");
            assert_eq!(new.leader_epoch, old.leader_epoch + 1);
        } else {
            assert_eq!(new.leader_epoch, old.leader_epoch);
        }
        assert_eq!(new.partition_epoch, old.partition_epoch + 1);
    }
    assert!(s.image.broker(2).map(|b| b.fenced).unwrap_or(false));
    // Fencing the last ISR member leaves it as the ISR with no leader.
    apply(&mut s, Command::FenceBroker { id: 1 });
    apply(&mut s, Command::FenceBroker { id: 3 });
    for p in &s.image.topic("t").expect("t").partitions {
        assert_eq!(p.leader, NO_LEADER);
        assert_eq!(p.isr.len(), 1);
    }
    // The last ISR member returning gets its partitions back; others stay leaderless.
    apply(&mut s, reg(3, None));
    for p in &s.image.topic("t").expect("t").partitions {
        if p.isr == vec![3] {
            assert_eq!(p.leader, 3);
        } else {
            assert_eq!(p.leader, NO_LEADER, "no unclean election by default: {p:?}");
        }
    }
    assert_eq!(
        s.image.broker(3).map(|b| (b.fenced, b.incarnation)),
        Some((false, 2))
    );
}

#[test]
fn unclean_election_only_with_the_topic_config() {
    let mut s = cluster(2);
    let mut t = topic("u", 1, 2);
    t.configs
        .insert("unclean.leader.election.enable".into(), "true".into());
    create(&mut s, t);
    let p = part(&s, "u", 0);
    let follower = p.replicas[1];
    // Shrink the ISR to the leader, then lose the leader: the out-of-sync follower may lead.
    apply(
        &mut s,
        Command::AlterPartition {
            topic: "u".into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![p.leader],
        },
    );
    apply(&mut s, Command::FenceBroker { id: p.leader });
    let q = part(&s, "u", 0);
    assert_eq!(q.leader, follower);
    assert_eq!(q.isr, vec![follower]);
}

#[test]
fn alter_partition_checks_epochs_and_preferred_election_restores_the_leader() {
    let mut s = cluster(3);
    create(&mut s, topic("t", 1, 3));
    let p = part(&s, "t", 0);
    let o = apply(
        &mut s,
        Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![p.leader],
        },
    );
    let CommandOutcome::Partition(Ok(q)) = o else {
        panic!("{o:?}")
    };
    assert_eq!(q.isr, vec![p.leader]);
    assert_eq!(q.partition_epoch, p.partition_epoch + 1);
    // Back to full ISR, fence the preferred leader, bring it back, elect it preferred.
    apply(
        &mut s,
        Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: q.leader,
            leader_epoch: q.leader_epoch,
            partition_epoch: q.partition_epoch,
            new_isr: p.replicas.clone(),
        },
    );
    let preferred = p.replicas[0];
    apply(&mut s, Command::FenceBroker { id: preferred });
    assert_ne!(part(&s, "t", 0).leader, preferred);
    apply(&mut s, reg(preferred, None));
    let cur = part(&s, "t", 0);
    apply(
        &mut s,
        Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: cur.leader,
            leader_epoch: cur.leader_epoch,
            partition_epoch: cur.partition_epoch,
            new_isr: p.replicas.clone(),
        },
    );
    let o = apply(
        &mut s,
        Command::ElectLeaders {
            partitions: vec![],
            preferred: true,
        },
    );
    let CommandOutcome::Partitions(r) = o else {
        panic!("{o:?}")
    };
    assert!(r[0].1.is_ok(), "{r:?}");
    assert_eq!(part(&s, "t", 0).leader, preferred);
}

#[test]
fn producer_id_blocks_are_unique_and_partitions_can_be_added() {
    let mut s = cluster(3);
    let a = apply(
        &mut s,
        Command::AllocateProducerIds {
            broker: 1,
            count: 1000,
        },
    );
    let b = apply(
        &mut s,
        Command::AllocateProducerIds {
            broker: 2,
            count: 1000,
        },
    );
    assert_eq!(a, CommandOutcome::ProducerIds(Ok(0)));
    assert_eq!(b, CommandOutcome::ProducerIds(Ok(1000)));
    create(&mut s, topic("t", 2, 2));
    let o = apply(
        &mut s,
        Command::CreatePartitions {
            topics: vec![("t".into(), 5, None)],
            validate_only: false,
        },
    );
    assert!(topic_error(&o).is_none());
    let t = s.image.topic("t").expect("t");
    assert_eq!(t.partitions.len(), 5);
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 2));
    let o = apply(
        &mut s,
        Command::DeleteTopics {
            names: vec!["t".into()],
        },
    );
    assert!(topic_error(&o).is_none());
    assert!(s.image.topics.is_empty() && s.image.topic_names_by_id.is_empty());
}

fn alter_isr(s: &mut MetaState, t: &str, p: i32, isr: Vec<BrokerId>) -> PartitionState {
    let cur = part(s, t, p);
    match apply(
        s,
        Command::AlterPartition {
            topic: t.into(),
            partition: p,
            leader: cur.leader,
            leader_epoch: cur.leader_epoch,
            partition_epoch: cur.partition_epoch,
            new_isr: isr,
        },
    ) {
        CommandOutcome::Partition(Ok(p)) => p,
        other => panic!("alter partition: {other:?}"),
    }
}

#[test]
fn reassignment_copies_first_and_switches_when_the_targets_are_in_sync() {
    let mut s = cluster(4);
    let mut t = topic("m", -1, -1);
    t.assignments = Some(vec![vec![1, 2]]);
    create(&mut s, t);
    let o = apply(
        &mut s,
        Command::ReassignPartitions {
            topic: "m".into(),
            partition: 0,
            replicas: vec![3, 4],
        },
    );
    let CommandOutcome::Partitions(r) = o else {
        panic!("{o:?}")
    };
    let p = r[0].1.clone().expect("started");
    // Widened: target first, then the replicas being removed; leader and ISR untouched.
    assert_eq!(p.replicas, vec![3, 4, 1, 2]);
    assert_eq!(p.adding, vec![3, 4]);
    assert_eq!(p.removing, vec![1, 2]);
    assert_eq!(p.leader, 1);
    assert_eq!(p.isr, vec![1, 2]);
    // The same target again changes nothing.
    let o = apply(
        &mut s,
        Command::ReassignPartitions {
            topic: "m".into(),
            partition: 0,
            replicas: vec![3, 4],
        },
    );
    assert!(matches!(o, CommandOutcome::Partitions(ref r) if r[0].1.as_ref() == Ok(&p)));
    // One new replica caught up: still copying.
    let p = alter_isr(&mut s, "m", 0, vec![1, 2, 3]);
    assert!(p.reassigning());
    assert_eq!(p.leader, 1);
    // The last one caught up: the move completes in the same step, leadership moves to 3.
    let epoch = p.leader_epoch;
    let p = alter_isr(&mut s, "m", 0, vec![1, 2, 3, 4]);
    assert!(!p.reassigning());
    assert_eq!(p.replicas, vec![3, 4]);
    assert_eq!(p.isr, vec![3, 4]);
    assert_eq!(p.leader, 3);
    assert_eq!(p.leader_epoch, epoch + 1);
}

#[test]
fn a_reorder_or_shrink_within_the_isr_completes_at_once() {
    let mut s = cluster(3);
    let mut t = topic("r", -1, -1);
    t.assignments = Some(vec![vec![1, 2, 3]]);
    create(&mut s, t);
    let o = apply(
        &mut s,
        Command::ReassignPartitions {
            topic: "r".into(),
            partition: 0,
            replicas: vec![3, 2, 1],
        },
    );
    assert!(matches!(o, CommandOutcome::Partitions(ref r) if r[0].1.is_ok()));
    let p = part(&s, "r", 0);
    assert_eq!(p.replicas, vec![3, 2, 1]);
    assert!(!p.reassigning());
    assert_eq!(p.leader, 1, "a reorder alone does not move leadership");
}

#[test]
fn draining_a_broker_moves_its_replicas_and_then_it_can_be_unregistered() {
    let mut s = cluster(3);
    let mut t = topic("d", -1, -1);
    t.assignments = Some(vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
    create(&mut s, t);
    // Not drained yet: unregistering is refused.
    assert!(matches!(
        apply(&mut s, Command::UnregisterBroker { id: 1 }),
        CommandOutcome::Rejected(_)
    ));
    // With only 3 brokers and RF 2, broker 1's replicas can move to the one broker lacking them.
    let o = apply(&mut s, Command::DecommissionBroker { id: 1 });
    let CommandOutcome::Partitions(r) = o else {
        panic!("{o:?}")
    };
    assert_eq!(r.len(), 2, "partitions 0 and 2 held broker 1: {r:?}");
    assert!(s.image.brokers[&1].decommissioned);
    for p in [0, 2] {
        let ps = part(&s, "d", p);
        assert!(ps.removing == vec![1], "{ps:?}");
        let target = ps.target_replicas();
        assert!(!target.contains(&1));
        let mut isr = ps.isr.clone();
        for b in &target {
            if !isr.contains(b) {
                isr.push(*b);
            }
        }
        alter_isr(&mut s, "d", p, isr);
        assert!(!part(&s, "d", p).replicas.contains(&1));
    }
    // New topics avoid the drained broker even though it is live.
    create(&mut s, topic("after", 6, 2));
    let t = s.image.topic("after").expect("topic");
    assert!(t.partitions.iter().all(|p| !p.replicas.contains(&1)));
    assert_eq!(
        apply(&mut s, Command::UnregisterBroker { id: 1 }),
        CommandOutcome::Done
    );
    assert!(!s.image.brokers.contains_key(&1));
}

#[test]
fn draining_is_refused_when_no_broker_can_take_the_replicas() {
    let mut s = cluster(2);
    create(&mut s, topic("full", 1, 2));
    let before = s.clone();
    assert!(matches!(
        apply(&mut s, Command::DecommissionBroker { id: 1 }),
        CommandOutcome::Rejected(e) if e.code == codes::INVALID_REPLICATION_FACTOR
    ));
    assert_eq!(s, before);
}

#[test]
fn rebalance_spreads_replicas_and_preferred_leaders_over_a_new_broker() {
    let mut s = cluster(2);
    create(&mut s, topic("b", 6, 2));
    assert_eq!(apply(&mut s, reg(3, None)), CommandOutcome::Done);
    let o = apply(&mut s, Command::Rebalance);
    let CommandOutcome::Partitions(r) = o else {
        panic!("{o:?}")
    };
    assert!(r.iter().all(|(_, x)| x.is_ok()), "{r:?}");
    // Targets: 12 replicas over 3 brokers = 4 each; 6 preferred leaders = 2 each.
    let mut replicas = BTreeMap::new();
    let mut preferred = BTreeMap::new();
    let t = s.image.topic("b").expect("topic").clone();
    for p in &t.partitions {
        for b in p.target_replicas() {
            *replicas.entry(b).or_insert(0) += 1;
        }
        *preferred.entry(p.target_replicas()[0]).or_insert(0) += 1;
    }
    assert_eq!(
        replicas.values().copied().collect::<Vec<_>>(),
        vec![4, 4, 4]
    );
    assert_eq!(
        preferred.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    // Deterministic: the same state gives the same plan.
    let mut s2 = cluster(2);
    create(&mut s2, topic("b", 6, 2));
    apply(&mut s2, reg(3, None));
    apply(&mut s2, Command::Rebalance);
    assert_eq!(
        s2.image.topic("b").map(|t| t.partitions.clone()),
        s.image.topic("b").map(|t| t.partitions.clone())
    );
}

#[test]
fn a_restarted_broker_leaves_the_isrs_it_shares_and_gives_up_leadership() {
    let mut s = cluster(3);
    let mut t = topic("x", -1, -1);
    t.assignments = Some(vec![vec![1, 2, 3], vec![2, 3, 1]]);
    create(&mut s, t);
    let mut solo = topic("solo", -1, -1);
    solo.assignments = Some(vec![vec![1]]);
    create(&mut s, solo);
    apply(&mut s, reg(1, None));
    let p0 = part(&s, "x", 0);
    assert_eq!(p0.isr, vec![2, 3]);
    assert_eq!(p0.leader, 2);
    assert_eq!(part(&s, "x", 1).isr, vec![2, 3]);
    // The only replica keeps its partition.
    let solo = part(&s, "solo", 0);
    assert_eq!((solo.leader, solo.isr.clone()), (1, vec![1]));
}

#[test]
fn a_controlled_shutdown_moves_leaders_and_leaves_shared_isrs_in_one_step() {
    let mut s = cluster(3);
    let mut t = topic("x", -1, -1);
    t.assignments = Some(vec![vec![1, 2, 3], vec![2, 1, 3], vec![3, 2, 1]]);
    create(&mut s, t);
    let mut solo = topic("solo", -1, -1);
    solo.assignments = Some(vec![vec![1]]);
    create(&mut s, solo);
    let before = s.image.topic("x").cloned().expect("x");
    let incarnation = s.image.broker(1).map(|b| b.incarnation).expect("1");
    assert_eq!(
        apply(&mut s, Command::ControlledShutdown { id: 1, incarnation }),
        CommandOutcome::Done
    );
    let after = s.image.topic("x").cloned().expect("x");
    for (old, new) in before.partitions.iter().zip(&after.partitions) {
        assert_ne!(new.leader, 1, "{new:?}");
        assert!(!new.isr.contains(&1), "{new:?}");
        assert!(new.isr.contains(&new.leader));
        if old.leader == 1 {
            assert_eq!(new.leader_epoch, old.leader_epoch + 1);
        } else {
            assert_eq!(new.leader, old.leader, "other leaders stay");
        }
    }
    // Its sole-replica partition has nowhere to go: leaderless until it returns, as on a fence.
    assert_eq!(part(&s, "solo", 0).leader, NO_LEADER);
    assert!(s.image.broker(1).is_some_and(|b| b.fenced));
    // The same request again changes nothing.
    let snapshot = s.clone();
    assert_eq!(
        apply(&mut s, Command::ControlledShutdown { id: 1, incarnation }),
        CommandOutcome::Done
    );
    assert_eq!(s, snapshot);
    // Back from the restart, it leads its sole-replica partition again.
    apply(&mut s, reg(1, None));
    assert_eq!(part(&s, "solo", 0).leader, 1);
}

#[test]
fn a_controlled_shutdown_from_an_older_incarnation_or_unknown_broker_changes_nothing() {
    let mut s = cluster(3);
    create(&mut s, topic("t", 3, 3));
    // Broker 2 restarted: a shutdown request of its previous life commits late.
    apply(&mut s, reg(2, None));
    let old = s.image.broker(2).map(|b| b.incarnation).expect("2") - 1;
    let before = s.clone();
    let cases = [
        (2, old, codes::STALE_BROKER_EPOCH),
        (2, u64::MAX, codes::STALE_BROKER_EPOCH),
        (42, 1, codes::BROKER_ID_NOT_REGISTERED),
        (-1, 0, codes::BROKER_ID_NOT_REGISTERED),
        (i32::MIN, u64::MAX, codes::BROKER_ID_NOT_REGISTERED),
    ];
    for (id, incarnation, code) in cases {
        match apply(&mut s, Command::ControlledShutdown { id, incarnation }) {
            CommandOutcome::Rejected(e) => assert_eq!(e.code, code, "{id}/{incarnation}"),
            other => panic!("{id}/{incarnation}: {other:?}"),
        }
        assert_eq!(s, before, "{id}/{incarnation} changed the state");
    }
}

#[test]
fn a_new_target_replaces_a_move_in_progress_as_in_kafka() {
    let mut s = cluster(4);
    let mut t = topic("m", -1, -1);
    t.assignments = Some(vec![vec![1, 2]]);
    create(&mut s, t);
    let mv = |s: &mut MetaState, replicas: Vec<BrokerId>| {
        apply(
            s,
            Command::ReassignPartitions {
                topic: "m".into(),
                partition: 0,
                replicas,
            },
        )
    };
    assert!(matches!(mv(&mut s, vec![3, 4]), CommandOutcome::Partitions(ref r) if r[0].1.is_ok()));
    assert!(matches!(mv(&mut s, vec![2, 3]), CommandOutcome::Partitions(ref r) if r[0].1.is_ok()));
    let p = part(&s, "m", 0);
    // 3 was being added by the first move and still is; 4 (added) and 1 are now removed.
    assert_eq!(p.target_replicas(), vec![2, 3]);
    assert_eq!(p.adding, vec![3]);
    assert_eq!(p.removing, vec![4, 1]);
    let p = alter_isr(&mut s, "m", 0, vec![1, 2, 3]);
    assert!(!p.reassigning());
    assert_eq!(p.replicas, vec![2, 3]);
    assert_eq!(p.isr, vec![2, 3]);
}

#[test]
fn cancelling_a_move_restores_the_original_replicas_and_needs_one_in_progress() {
    let mut s = cluster(4);
    let mut t = topic("c", -1, -1);
    t.assignments = Some(vec![vec![1, 2]]);
    create(&mut s, t);
    let cancel = |s: &mut MetaState| match apply(
        s,
        Command::CancelReassignment {
            topic: "c".into(),
            partition: 0,
        },
    ) {
        CommandOutcome::Partitions(mut r) => r.remove(0).1,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        cancel(&mut s).err().map(|e| e.code),
        Some(codes::NO_REASSIGNMENT_IN_PROGRESS)
    );
    apply(
        &mut s,
        Command::ReassignPartitions {
            topic: "c".into(),
            partition: 0,
            replicas: vec![2, 3, 4],
        },
    );
    let before = part(&s, "c", 0);
    // 3 caught up, 4 not yet: the cancel drops both.
    alter_isr(&mut s, "c", 0, vec![1, 2, 3]);
    let p = cancel(&mut s).expect("cancelled");
    // As Kafka's revert: the widened list minus the added replicas, in its order.
    assert_eq!(p.replicas, vec![2, 1]);
    assert_eq!(p.isr, vec![1, 2]);
    assert!(!p.reassigning());
    assert_eq!(p.leader, 1);
    assert!(p.partition_epoch > before.partition_epoch);
    assert_eq!(
        apply(
            &mut s,
            Command::CancelReassignment {
                topic: "nope".into(),
                partition: 0,
            },
        ),
        CommandOutcome::Partitions(vec![(
            PartitionRef {
                topic: "nope".into(),
                partition: 0
            },
            Err(MetaError::new(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                "unknown partition nope-0"
            ))
        )])
    );
}

#[test]
fn a_registration_from_a_log_of_before_listeners_still_applies() {
    // Variant 0 as older logs hold it: the registration without listeners.
    #[derive(serde::Serialize)]
    enum OldCommand {
        RegisterBroker(crate::command::BrokerRegistrationV1),
    }
    let old = OldCommand::RegisterBroker(crate::command::BrokerRegistrationV1 {
        id: 3,
        host: "h3".into(),
        port: 9094,
        rack: None,
    });
    let bytes = bincode::serialize(&old).expect("encode");
    let cmd: Command = crate::codec::decode(&bytes).expect("decode");
    assert!(matches!(&cmd, Command::RegisterBrokerV1(r) if r.id == 3));
    let mut s = MetaState::default();
    assert_eq!(apply(&mut s, cmd), CommandOutcome::Done);
    let b = s.image.broker(3).expect("registered");
    assert_eq!((b.host.as_str(), b.port), ("h3", 9094));
    assert!(b.listeners.is_empty());
}

#[test]
fn a_registration_with_a_nameless_or_portless_listener_is_rejected() {
    let mut s = MetaState::default();
    for (name, port) in [("", 9092), ("PLAINTEXT", 0)] {
        let cmd = Command::RegisterBroker(BrokerRegistration {
            id: 1,
            host: "h".into(),
            port: 9092,
            rack: None,
            listeners: vec![crate::image::ListenerEndpoint {
                name: name.into(),
                host: "h".into(),
                port,
            }],
        });
        assert!(matches!(apply(&mut s, cmd), CommandOutcome::Rejected(_)));
    }
    assert!(s.image.broker(1).is_none());
}

fn write_failed(p: &crate::image::PartitionState, leader: BrokerId) -> Command {
    Command::LeaderWriteFailed {
        topic: "t".into(),
        partition: 0,
        leader,
        leader_epoch: p.leader_epoch,
    }
}

#[test]
fn a_leader_write_failure_moves_leadership_to_a_live_isr_member_under_a_new_epoch() {
    let mut s = cluster(3);
    create(&mut s, topic("t", 1, 3));
    let p = part(&s, "t", 0);
    let o = apply(&mut s, write_failed(&p, p.leader));
    let CommandOutcome::Partition(Ok(q)) = o else {
        panic!("{o:?}")
    };
    assert_ne!(q.leader, p.leader);
    assert!(p.isr.contains(&q.leader));
    assert_eq!(q.leader_epoch, p.leader_epoch + 1);
    assert_eq!(q.partition_epoch, p.partition_epoch + 1);
    assert_eq!(
        q.isr, p.isr,
        "the old leader keeps what it holds and stays in the ISR"
    );
    assert_eq!(part(&s, "t", 0), q);
}

#[test]
fn a_leader_write_failure_with_no_other_live_isr_member_keeps_the_leader_under_a_new_epoch() {
    let mut s = cluster(3);
    create(&mut s, topic("t", 1, 3));
    let p = part(&s, "t", 0);
    for b in p.replicas.iter().filter(|b| **b != p.leader) {
        apply(&mut s, Command::FenceBroker { id: *b });
    }
    let p = part(&s, "t", 0);
    let o = apply(&mut s, write_failed(&p, p.leader));
    let CommandOutcome::Partition(Ok(q)) = o else {
        panic!("{o:?}")
    };
    assert_eq!(q.leader, p.leader);
    assert_eq!(q.leader_epoch, p.leader_epoch + 1);
}

#[test]
fn a_stale_or_foreign_leader_write_failure_report_changes_nothing() {
    let mut s = cluster(3);
    create(&mut s, topic("t", 1, 3));
    let p = part(&s, "t", 0);
    let follower = p
        .replicas
        .iter()
        .copied()
        .find(|b| *b != p.leader)
        .unwrap_or(NO_LEADER);
    let mut stale = write_failed(&p, p.leader);
    if let Command::LeaderWriteFailed { leader_epoch, .. } = &mut stale {
        *leader_epoch -= 1;
    }
    let unknown = Command::LeaderWriteFailed {
        topic: "t".into(),
        partition: 7,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
    };
    for (cmd, code) in [
        (stale, codes::FENCED_LEADER_EPOCH),
        (write_failed(&p, follower), codes::NOT_LEADER_OR_FOLLOWER),
        (unknown, codes::UNKNOWN_TOPIC_OR_PARTITION),
    ] {
        let before = s.clone();
        let o = apply(&mut s, cmd.clone());
        assert!(
            matches!(&o, CommandOutcome::Partition(Err(e)) if e.code == code),
            "{cmd:?} gave {o:?}"
        );
        assert_eq!(s, before, "{cmd:?} changed the state");
    }
}
