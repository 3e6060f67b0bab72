//! Bytes as a Raft log entry's payload, decoded as the log store and snapshot loader decode
//! them (`chronik_raft::codec::decode`, bincode bounded by the input), then every command
//! checked as the proposing node checks it (`validate::precheck`) and applied as every node
//! applies it (`MetaState::apply`) to a state seeded with brokers and topics.
//!
//! Asserts after each command: nothing panicked or allocated past libFuzzer's limit; apply is
//! deterministic (two copies reach the same state and outcome); a rejected command, a
//! validate-only request, and a per-topic request refused for every topic leave the state
//! unchanged; and the partition invariants hold: ISR non-empty and within the replicas,
//! leader in the ISR (or none), replicas distinct, reassignment sets within the replicas,
//! and the id index matching the topics.

#![no_main]

use chronik_raft::command::{
    BrokerRegistration, Command, CommandBatch, CommandOutcome, NewTopic, ProposedCommand,
};
use chronik_raft::image::NO_LEADER;
use chronik_raft::metadata::{Defaults, MetaState};
use chronik_raft::snapshot::StoredSnapshot;
use chronik_raft::types::Entry;
use chronik_raft::{codec, validate};
use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

const DEFAULTS: Defaults = Defaults {
    num_partitions: 2,
    replication_factor: 2,
};

fuzz_target!(|data: &[u8]| {
    // The payload of a normal entry, as the state machine receives it.
    if let Ok(batch) = codec::decode::<CommandBatch>(data) {
        apply_all(&batch);
    }
    // A whole log record's entry, as log replay decodes it.
    if let Ok(entry) = codec::decode::<Entry>(data) {
        if let EntryPayload::Normal(batch) = &entry.payload {
            apply_all(batch);
        }
    }
    // A snapshot's payload (the state itself), as a restarting node or a follower decodes it.
    let _ = codec::decode::<StoredSnapshot>(data);
});

fn apply_all(batch: &CommandBatch) {
    let mut state = seeded().clone();
    for pc in &batch.commands {
        // The leader's check before proposing: total on any command.
        let _ = validate::precheck(&state.image, pc.cmd.clone(), DEFAULTS);
        let before = state.clone();
        let outcome = state.apply(pc, DEFAULTS);
        let mut twin = before.clone();
        assert_eq!(
            twin.apply(pc, DEFAULTS),
            outcome,
            "apply is not deterministic"
        );
        assert!(twin == state, "apply is not deterministic: {:?}", pc.cmd);
        if leaves_state_unchanged(&pc.cmd, &outcome) {
            assert!(
                state == before,
                "{:?} -> {outcome:?} changed the state",
                pc.cmd
            );
        }
        check_invariants(&state);
    }
}

fn leaves_state_unchanged(cmd: &Command, outcome: &CommandOutcome) -> bool {
    let validate_only = matches!(
        cmd,
        Command::CreateTopics {
            validate_only: true,
            ..
        } | Command::CreatePartitions {
            validate_only: true,
            ..
        } | Command::AlterConfigs {
            validate_only: true,
            ..
        }
    );
    match outcome {
        CommandOutcome::Rejected(_) => true,
        CommandOutcome::Topics(results) => validate_only || results.iter().all(|(_, r)| r.is_err()),
        CommandOutcome::Partition(Err(_)) | CommandOutcome::ProducerIds(Err(_)) => true,
        // A bootstrap marks the cluster bootstrapped even when every user is refused.
        CommandOutcome::Users(results) => {
            matches!(cmd, Command::AlterScramCredentials { .. })
                && results.iter().all(|(_, r)| r.is_err())
        }
        _ => false,
    }
}

fn check_invariants(state: &MetaState) {
    let img = &state.image;
    assert_eq!(img.topics.len(), img.topic_names_by_id.len());
    for (name, t) in img.topics.iter() {
        assert_eq!(name, &t.name);
        assert_eq!(img.topic_names_by_id.get(&t.id), Some(name));
        for (i, p) in t.partitions.iter().enumerate() {
            let replicas: BTreeSet<_> = p.replicas.iter().collect();
            let at = || format!("{name}-{i}: {p:?}");
            assert!(!p.replicas.is_empty(), "no replicas in {}", at());
            assert_eq!(
                replicas.len(),
                p.replicas.len(),
                "duplicate replica in {}",
                at()
            );
            assert!(!p.isr.is_empty(), "empty ISR in {}", at());
            assert!(
                p.isr.iter().all(|b| replicas.contains(b)),
                "ISR outside the replicas in {}",
                at()
            );
            assert!(
                p.leader == NO_LEADER || p.isr.contains(&p.leader),
                "leader outside the ISR in {}",
                at()
            );
            assert!(
                p.adding
                    .iter()
                    .chain(&p.removing)
                    .all(|b| replicas.contains(b)),
                "reassignment outside the replicas in {}",
                at()
            );
        }
    }
}

/// Four brokers on three racks (broker 4 fenced) and three topics, the last with explicit
/// replica lists: the state the seed corpus's commands are written against.
fn seeded() -> &'static MetaState {
    static STATE: OnceLock<MetaState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut s = MetaState::default();
        let mut run = |cmd: Command, ids: Vec<[u8; 16]>| {
            let outcome = s.apply(
                &ProposedCommand {
                    cmd,
                    topic_ids: ids,
                },
                DEFAULTS,
            );
            assert!(
                !matches!(outcome, CommandOutcome::Rejected(_)),
                "seed: {outcome:?}"
            );
        };
        for (id, rack) in [(1, "a"), (2, "b"), (3, "c"), (4, "a")] {
            run(
                Command::RegisterBroker(BrokerRegistration {
                    id,
                    host: format!("broker{id}"),
                    port: 9092,
                    rack: Some(rack.into()),
                    listeners: Vec::new(),
                }),
                vec![],
            );
        }
        let topic = |name: &str, partitions, rf, assignments| NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: rf,
            assignments,
            configs: BTreeMap::from([("retention.ms".into(), "60000".into())]),
        };
        run(
            Command::CreateTopics {
                topics: vec![
                    topic("t0", 3, 3, None),
                    topic("t1", 1, 1, None),
                    topic("t2", -1, -1, Some(vec![vec![1, 2], vec![2, 3], vec![3, 4]])),
                ],
                validate_only: false,
            },
            vec![[1; 16], [2; 16], [3; 16]],
        );
        run(Command::FenceBroker { id: 4 }, vec![]);
        s
    })
}
