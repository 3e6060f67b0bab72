//! The trust boundary: hostile commands are refused before proposing and, if they reach the log
//! anyway, by apply — with Kafka's error codes, without a panic or a large allocation.

use super::*;
use crate::command::{BrokerRegistration, ProposedCommand};

const D: Defaults = Defaults {
    num_partitions: 1,
    replication_factor: 1,
};

fn cluster(n: i32) -> MetaState {
    let mut s = MetaState::default();
    for id in 1..=n {
        let reg = Command::RegisterBroker(BrokerRegistration {
            id,
            host: "h".into(),
            port: 9092,
            rack: None,
            listeners: Vec::new(),
        });
        assert_eq!(s.apply(&ProposedCommand::new(reg), D), CommandOutcome::Done);
    }
    s
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

fn create(topics: Vec<NewTopic>, validate_only: bool) -> Command {
    Command::CreateTopics {
        topics,
        validate_only,
    }
}

/// Per-topic error codes (0 for success) of an outcome.
fn codes_of(o: &CommandOutcome) -> Vec<i16> {
    match o {
        CommandOutcome::Topics(v) => v
            .iter()
            .map(|(_, r)| r.as_ref().err().map_or(0, |e| e.code))
            .collect(),
        other => panic!("not a per-topic outcome: {other:?}"),
    }
}

fn apply(s: &mut MetaState, cmd: Command) -> CommandOutcome {
    s.apply(&ProposedCommand::new(cmd), D)
}

#[test]
fn hostile_create_topics_are_refused_by_apply_with_kafka_codes_and_change_nothing() {
    let mut s = cluster(3);
    let before = s.clone();
    let mut dup = topic("dup", -1, -1);
    dup.assignments = Some(vec![vec![1, 1]]);
    let mut unknown_broker = topic("unknown-broker", -1, -1);
    unknown_broker.assignments = Some(vec![vec![1, 99]]);
    let mut uneven = topic("uneven", -1, -1);
    uneven.assignments = Some(vec![vec![1, 2], vec![3]]);
    let mut too_many = topic("too-many-assigned", -1, -1);
    too_many.assignments = Some(vec![vec![1]; MAX_PARTITIONS_PER_TOPIC + 1]);
    let mut both = topic("both", 3, -1);
    both.assignments = Some(vec![vec![1]]);
    let mut huge_config = topic("huge-config", 1, 1);
    huge_config
        .configs
        .insert("retention.ms".into(), "1".repeat(MAX_CONFIG_VALUE_LEN + 1));
    let mut unknown_config = topic("unknown-config", 1, 1);
    unknown_config.configs.insert("no.such".into(), "1".into());
    let mut bad_value = topic("bad-value", 1, 1);
    bad_value
        .configs
        .insert("retention.ms".into(), "soon".into());
    let mut many_configs = topic("many-configs", 1, 1);
    for i in 0..=MAX_CONFIGS {
        many_configs
            .configs
            .insert(format!("chronik.k{i}"), "v".into());
    }
    let cases = vec![
        (topic("max", i32::MAX, 1), codes::INVALID_PARTITIONS),
        (topic("zero", 0, 1), codes::INVALID_PARTITIONS),
        (topic("negative", -2, 1), codes::INVALID_PARTITIONS),
        (
            topic("just-over", MAX_PARTITIONS_PER_TOPIC as i32 + 1, 1),
            codes::INVALID_PARTITIONS,
        ),
        (
            topic("rf-max", 1, i16::MAX),
            codes::INVALID_REPLICATION_FACTOR,
        ),
        (topic("rf-zero", 1, 0), codes::INVALID_REPLICATION_FACTOR),
        (topic("rf-4-of-3", 1, 4), codes::INVALID_REPLICATION_FACTOR),
        (
            topic(&"x".repeat(32 * 1024), 1, 1),
            codes::INVALID_TOPIC_EXCEPTION,
        ),
        (topic("", 1, 1), codes::INVALID_TOPIC_EXCEPTION),
        (topic("..", 1, 1), codes::INVALID_TOPIC_EXCEPTION),
        (topic("a/b", 1, 1), codes::INVALID_TOPIC_EXCEPTION),
        (dup, codes::INVALID_REPLICA_ASSIGNMENT),
        (unknown_broker, codes::INVALID_REPLICA_ASSIGNMENT),
        (uneven, codes::INVALID_REPLICA_ASSIGNMENT),
        (too_many, codes::INVALID_PARTITIONS),
        (both, codes::INVALID_REQUEST),
        (huge_config, codes::INVALID_CONFIG),
        (unknown_config, codes::INVALID_CONFIG),
        (bad_value, codes::INVALID_CONFIG),
        (many_configs, codes::INVALID_CONFIG),
    ];
    for validate_only in [true, false] {
        for (t, code) in &cases {
            let o = apply(&mut s, create(vec![t.clone()], validate_only));
            assert_eq!(codes_of(&o), vec![*code], "{}", shown(&t.name));
            if let CommandOutcome::Topics(v) = &o {
                let msg = &v[0].1.as_ref().err().map(|e| e.message.clone());
                assert!(
                    msg.as_ref().is_some_and(|m| m.len() < 1024),
                    "short message for {}",
                    shown(&t.name)
                );
            }
        }
    }
    assert_eq!(s, before, "nothing changed");
}

#[test]
fn the_cluster_partition_cap_counts_the_topics_of_the_same_request() {
    let mut s = cluster(1);
    let half = (MAX_PARTITIONS_PER_CLUSTER / 2) as i32;
    // Per-topic cap first: split into topics of at most MAX_PARTITIONS_PER_TOPIC.
    let per = MAX_PARTITIONS_PER_TOPIC as i32;
    let n = half / per;
    let topics: Vec<NewTopic> = (0..n).map(|i| topic(&format!("t{i}"), per, 1)).collect();
    assert!(codes_of(&apply(&mut s, create(topics, false)))
        .iter()
        .all(|c| *c == 0));
    assert_eq!(total_partitions(&s.image), (n * per) as usize);
    // The rest fits exactly; one more does not, within one request.
    let topics: Vec<NewTopic> = (0..n)
        .map(|i| topic(&format!("u{i}"), per, 1))
        .chain(std::iter::once(topic("over", 1, 1)))
        .collect();
    let codes = codes_of(&apply(&mut s, create(topics, false)));
    assert!(codes[..n as usize].iter().all(|c| *c == 0));
    assert_eq!(codes[n as usize], codes::POLICY_VIOLATION);
    assert_eq!(total_partitions(&s.image), MAX_PARTITIONS_PER_CLUSTER);
}

#[test]
fn topic_names_that_collide_after_dot_to_underscore_are_refused() {
    let mut s = cluster(1);
    assert_eq!(
        codes_of(&apply(&mut s, create(vec![topic("a.b", 1, 1)], false))),
        vec![0]
    );
    assert_eq!(
        codes_of(&apply(&mut s, create(vec![topic("a_b", 1, 1)], false))),
        vec![codes::INVALID_TOPIC_EXCEPTION]
    );
    assert_eq!(
        codes_of(&apply(&mut s, create(vec![topic("a.b", 1, 1)], false))),
        vec![codes::TOPIC_ALREADY_EXISTS]
    );
}

#[test]
fn hostile_create_partitions_and_alter_configs_are_refused_by_apply() {
    let mut s = cluster(2);
    assert_eq!(
        codes_of(&apply(&mut s, create(vec![topic("t", 2, 2)], false))),
        vec![0]
    );
    let before = s.clone();
    let grow = |count: i32, a: Option<Vec<Vec<BrokerId>>>| Command::CreatePartitions {
        topics: vec![("t".into(), count, a)],
        validate_only: false,
    };
    for (cmd, code) in [
        (grow(i32::MAX, None), codes::INVALID_PARTITIONS),
        (grow(2, None), codes::INVALID_PARTITIONS),
        (grow(-5, None), codes::INVALID_PARTITIONS),
        (
            grow(3, Some(vec![vec![1, 1]])),
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            grow(3, Some(vec![vec![1]])),
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            grow(3, Some(vec![vec![1, 7]])),
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            grow(4, Some(vec![vec![1, 2]; 3])),
            codes::INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            Command::CreatePartitions {
                topics: vec![("nope".into(), 3, None)],
                validate_only: false,
            },
            codes::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            Command::AlterConfigs {
                topic: "t".into(),
                set: BTreeMap::from([("retention.ms".into(), "x".repeat(100_000))]),
                delete: vec![],
                validate_only: false,
            },
            codes::INVALID_CONFIG,
        ),
        (
            Command::AlterConfigs {
                topic: "t".into(),
                set: BTreeMap::new(),
                delete: vec!["no.such.key".into()],
                validate_only: false,
            },
            codes::INVALID_CONFIG,
        ),
    ] {
        assert_eq!(codes_of(&apply(&mut s, cmd.clone())), vec![code], "{cmd:?}");
    }
    assert_eq!(s, before, "nothing changed");
}

#[test]
fn precheck_answers_validate_only_and_all_refused_requests_without_proposing() {
    let s = cluster(1);
    let ok = create(vec![topic("fine", 1, 1)], true);
    match precheck(&s.image, ok, D) {
        Precheck::Answer(o) => assert_eq!(codes_of(&o), vec![0]),
        other => panic!("validate-only must not be proposed: {other:?}"),
    }
    let bad = create(vec![topic("huge", i32::MAX, 1)], false);
    match precheck(&s.image, bad, D) {
        Precheck::Answer(o) => assert_eq!(codes_of(&o), vec![codes::INVALID_PARTITIONS]),
        other => panic!("a refused request must not be proposed: {other:?}"),
    }
    let mixed = create(
        vec![topic("a", 1, 1), topic("b", 0, 1), topic("c", 1, 1)],
        false,
    );
    let Precheck::Propose { cmd, early } = precheck(&s.image, mixed, D) else {
        panic!("the valid topics are proposed");
    };
    let Command::CreateTopics { topics, .. } = &cmd else {
        panic!("still CreateTopics");
    };
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["a", "c"]);
    // The committed outcome of the reduced command merges back in request order.
    let mut s2 = s.clone();
    let committed = apply(&mut s2, cmd);
    let merged = merge(early, committed);
    assert_eq!(codes_of(&merged), vec![0, codes::INVALID_PARTITIONS, 0]);
    let CommandOutcome::Topics(v) = merged else {
        unreachable!()
    };
    let order: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, vec!["a", "b", "c"]);
}

#[test]
fn precheck_refuses_a_controlled_shutdown_of_an_unknown_or_older_broker_without_proposing() {
    let s = cluster(2);
    let current = s.image.broker(2).map(|b| b.incarnation).expect("2");
    for (id, incarnation, code) in [
        (3, current, codes::BROKER_ID_NOT_REGISTERED),
        (-7, current, codes::BROKER_ID_NOT_REGISTERED),
        (2, current + 1, codes::STALE_BROKER_EPOCH),
    ] {
        match precheck(&s.image, Command::ControlledShutdown { id, incarnation }, D) {
            Precheck::Answer(CommandOutcome::Rejected(e)) => assert_eq!(e.code, code),
            other => panic!("{id}/{incarnation} must not be proposed: {other:?}"),
        }
    }
    let ok = Command::ControlledShutdown {
        id: 2,
        incarnation: current,
    };
    assert!(matches!(
        precheck(&s.image, ok, D),
        Precheck::Propose { early, .. } if early.is_empty()
    ));
}

#[test]
fn clients_may_not_create_or_grow_internal_topics() {
    for name in INTERNAL_TOPICS {
        assert_eq!(
            client_may_create(name).expect_err(name).code,
            codes::INVALID_REQUEST
        );
        assert_eq!(
            client_may_grow(name).expect_err(name).code,
            codes::INVALID_REQUEST
        );
    }
    assert!(client_may_create("orders").is_ok());
}

#[test]
fn random_hostile_commands_never_panic_and_leave_the_invariants_intact() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let mut s = cluster(3);
    let ints = [
        i32::MIN,
        -2,
        -1,
        0,
        1,
        2,
        3,
        9_999,
        10_000,
        10_001,
        i32::MAX,
    ];
    let names = ["a", "b.c", "b_c", "", "..", "__consumer_offsets", "x y"];
    for _ in 0..3000 {
        let name = names[rng.gen_range(0..names.len())].to_string();
        let n = ints[rng.gen_range(0..ints.len())];
        let assignment = || -> Option<Vec<Vec<BrokerId>>> {
            let mut r = rand::rngs::StdRng::seed_from_u64(n as u64);
            if r.gen_bool(0.5) {
                return None;
            }
            Some(
                (0..r.gen_range(0..4))
                    .map(|_| (0..r.gen_range(0..4)).map(|_| r.gen_range(-1..5)).collect())
                    .collect(),
            )
        };
        let cmd = match rng.gen_range(0..8) {
            0 => create(
                vec![NewTopic {
                    name,
                    num_partitions: n,
                    replication_factor: rng.gen_range(-2..5),
                    assignments: assignment(),
                    configs: BTreeMap::new(),
                }],
                rng.gen_bool(0.3),
            ),
            1 => Command::CreatePartitions {
                topics: vec![(name, n, assignment())],
                validate_only: rng.gen_bool(0.3),
            },
            2 => Command::ReassignPartitions {
                topic: name,
                partition: n,
                replicas: assignment().unwrap_or_default().concat(),
            },
            3 => Command::DeleteTopics { names: vec![name] },
            // Brokers stop on purpose (any id, any incarnation) and come back.
            4 => Command::ControlledShutdown {
                id: if rng.gen_bool(0.5) {
                    n
                } else {
                    rng.gen_range(1..4)
                },
                incarnation: rng.gen_range(0..4),
            },
            5 => Command::CancelReassignment {
                topic: name,
                partition: n,
            },
            6 => Command::ElectLeaders {
                partitions: vec![crate::command::PartitionRef {
                    topic: name,
                    partition: n,
                }],
                preferred: rng.gen_bool(0.5),
            },
            _ => Command::RegisterBroker(BrokerRegistration {
                id: rng.gen_range(1..4),
                host: "h".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            }),
        };
        // Apply checks the image's invariants itself in debug builds.
        let _ = apply(&mut s, cmd);
        assert!(total_partitions(&s.image) <= MAX_PARTITIONS_PER_CLUSTER);
    }
}

#[test]
fn precheck_keeps_elections_and_moves_that_change_nothing_out_of_the_log() {
    let mut s = cluster(3);
    apply(&mut s, create(vec![topic("e", 2, 3)], false));
    let part = |p| crate::command::PartitionRef {
        topic: "e".into(),
        partition: p,
    };
    // Both partitions are led by their preferred replica: nothing to elect.
    let elect = Command::ElectLeaders {
        partitions: vec![part(0), part(1)],
        preferred: true,
    };
    match precheck(&s.image, elect, D) {
        Precheck::Answer(CommandOutcome::Partitions(v)) => {
            assert!(v
                .iter()
                .all(|(_, r)| r.as_ref().err().map(|e| e.code) == Some(codes::ELECTION_NOT_NEEDED)))
        }
        other => panic!("an election that changes nothing must not be proposed: {other:?}"),
    }
    let bad_move = Command::ReassignPartitions {
        topic: "e".into(),
        partition: 0,
        replicas: vec![1, 1, 9],
    };
    assert!(matches!(
        precheck(&s.image, bad_move, D),
        Precheck::Answer(CommandOutcome::Partitions(ref v))
            if v[0].1.as_ref().err().map(|e| e.code) == Some(codes::INVALID_REPLICA_ASSIGNMENT)
    ));
    let no_move = Command::CancelReassignment {
        topic: "e".into(),
        partition: 1,
    };
    assert!(matches!(
        precheck(&s.image, no_move, D),
        Precheck::Answer(CommandOutcome::Partitions(ref v))
            if v[0].1.as_ref().err().map(|e| e.code) == Some(codes::NO_REASSIGNMENT_IN_PROGRESS)
    ));
    let good_move = Command::ReassignPartitions {
        topic: "e".into(),
        partition: 0,
        replicas: vec![3, 2, 1],
    };
    assert!(matches!(
        precheck(&s.image, good_move, D),
        Precheck::Propose { .. }
    ));
}

#[test]
fn precheck_answers_scram_changes_refused_for_every_user_and_a_second_bootstrap_without_proposing()
{
    use crate::scram::{ScramCredential, ScramDelete, ScramMechanism, ScramUpsert};
    let mut s = cluster(1);
    let up = |user: &str, iterations| ScramUpsert {
        user: user.into(),
        mechanism: ScramMechanism::Sha256,
        credential: ScramCredential {
            salt: b"salt".to_vec(),
            iterations,
            stored_key: vec![1; 32],
            server_key: vec![2; 32],
        },
    };
    let refused = Command::AlterScramCredentials {
        upserts: vec![up("a", 10)],
        deletes: vec![ScramDelete {
            user: "nobody".into(),
            mechanism: ScramMechanism::Sha512,
        }],
    };
    assert!(matches!(
        precheck(&s.image, refused, D),
        Precheck::Answer(CommandOutcome::Users(_))
    ));
    let good = Command::AlterScramCredentials {
        upserts: vec![up("a", 4096)],
        deletes: Vec::new(),
    };
    assert!(matches!(
        precheck(&s.image, good, D),
        Precheck::Propose { .. }
    ));
    let boot = Command::BootstrapScramUsers {
        upserts: vec![up("admin", 4096)],
    };
    assert!(matches!(
        precheck(&s.image, boot.clone(), D),
        Precheck::Propose { .. }
    ));
    apply(&mut s, boot.clone());
    assert!(s.image.scram.get("admin", ScramMechanism::Sha256).is_some());
    assert_eq!(
        precheck(&s.image, boot, D),
        Precheck::Answer(CommandOutcome::Users(Vec::new()))
    );
}
