//! Cluster membership with real processes: a node joins (`cluster add-node`), replicas move to
//! it with their data (`cluster rebalance`), a node is drained and removed (`cluster
//! remove-node`), and a node whose disk was wiped rejoins as a fresh replica.

use crate::common::cluster_util::*;
use crate::common::raw;
use crate::common::Cluster;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Produces `values` (acks=all, idempotent) round-robin over `partitions`; returns what was
/// acknowledged per partition, in order.
fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    values: std::ops::Range<u32>,
) -> BTreeMap<i32, Vec<String>> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .expect("producer");
    let mut acked: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let futures: Vec<_> = values
        .map(|i| {
            let v = format!("v-{i}");
            let part = (i % partitions as u32) as i32;
            let f = p
                .send_result(
                    FutureRecord::<str, str>::to(topic)
                        .payload(&v)
                        .partition(part),
                )
                .map_err(|(e, _)| e);
            (part, v.clone(), f)
        })
        .collect();
    for (part, v, f) in futures {
        let f = f.expect("queue");
        futures_lite::future::block_on(f)
            .expect("delivery")
            .expect("acknowledged");
        acked.entry(part).or_default().push(v);
    }
    acked
}

/// Every value of a partition, read from the beginning through the cluster.
fn read_all(bootstrap: &str, topic: &str, partition: i32, expect: usize) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "membership-verify")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

fn replicas(addr: &str, topic: &str) -> Vec<Vec<i32>> {
    metadata(addr, topic).topics[0]
        .partitions
        .iter()
        .map(|p| p.replica_nodes.iter().map(|b| b.0).collect())
        .collect()
}

fn brokers(addr: &str) -> BTreeSet<i32> {
    raw::metadata(addr, None)
        .expect("metadata")
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .collect()
}

/// Every replica of every partition holds the leader's bytes.
fn assert_replicas_match(c: &Cluster, topic: &str) {
    let b = c.nodes[0].bootstrap();
    for (p, reps) in replicas(&b, topic).iter().enumerate() {
        let p = p as i32;
        let leader = leader_of(&b, topic, p);
        let laddr = c.nodes[(leader - 1) as usize].bootstrap();
        wait_until("replicas to reach the leader's end", 60, || {
            let end = local_leo(&laddr, topic, p);
            reps.iter()
                .all(|r| local_leo(&c.nodes[(*r - 1) as usize].bootstrap(), topic, p) == end)
        });
        let end = local_leo(&laddr, topic, p);
        let want = local_bytes(&laddr, topic, p, end);
        for r in reps {
            let got = local_bytes(&c.nodes[(*r - 1) as usize].bootstrap(), topic, p, end);
            assert!(
                got == want,
                "{topic}-{p}: replica {r} differs from leader {leader}"
            );
        }
    }
}

#[test]
fn add_node_rebalance_and_remove_node_move_data_before_switching() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("mv", 6, TopicReplication::Fixed(2)));
    let mut acked = produce(&c.bootstrap(), "mv", 6, 0..600);

    // A fourth node starts with the cluster's quorum and is let in.
    let id = c.spawn_new_node();
    let_in(&mut c, id);
    // The new node learnt the topic from the metadata log.
    assert_eq!(replicas(&c.nodes[3].bootstrap(), "mv").len(), 6);

    // Rebalance: 12 replicas over 4 brokers, 3 each, with the data copied to node 4.
    let (code, out) = c.admin_cli(&["rebalance"]);
    assert_eq!(code, 0, "{out}");
    // The CLI follows the moves on the controller; node 1's image may apply the last step a
    // moment later (and before the rebalance, every partition also had 2 replicas).
    let balanced = BTreeMap::from([(1, 3), (2, 3), (3, 3), (4, 3)]);
    let mut reps = Vec::new();
    wait_until("node 1 to see every move done", 30, || {
        reps = replicas(&b1, "mv");
        reps.iter().all(|r| r.len() == 2) && replica_load(&reps) == balanced
    });
    assert_eq!(replica_load(&reps), balanced, "{reps:?}");
    assert_replicas_match(&c, "mv");

    // Writes keep working on the moved partitions.
    for (p, v) in produce(&c.bootstrap(), "mv", 6, 600..660) {
        acked.entry(p).or_default().extend(v);
    }

    // Drain and remove node 2: its replicas move first, then it leaves.
    let (code, out) = c.admin_cli(&["remove-node", "--node-id", "2"]);
    assert_eq!(code, 0, "{out}");
    // The CLI waited for node 1's controller; its shards serve the image a moment later.
    wait_until("node 1 to see broker 2 drained", 30, || {
        replicas(&b1, "mv")
            .iter()
            .all(|r| !r.contains(&2) && r.len() == 2)
    });
    wait_until("broker 2 to leave the broker list", 30, || {
        !brokers(&b1).contains(&2)
    });
    assert_replicas_match(&c, "mv");
    // Node 2 deleted its copies of the partitions it gave away.
    let node2_dir = c.nodes[1].data_dir.clone();
    wait_until("node 2 to delete its moved partitions", 30, || {
        !walk_names(&node2_dir).iter().any(|n| n.starts_with("mv-"))
    });
    c.node(2).kill();

    // Nothing acknowledged was lost or duplicated by the moves.
    let b = c.bootstrap();
    for (p, want) in &acked {
        let got = read_all(&b, "mv", *p, want.len());
        assert_eq!(&got, want, "partition {p}");
    }
}

/// How many replicas each broker holds.
fn replica_load(reps: &[Vec<i32>]) -> BTreeMap<i32, usize> {
    let mut load = BTreeMap::new();
    for b in reps.iter().flatten() {
        *load.entry(*b).or_default() += 1;
    }
    load
}

/// `cluster add-node` for the just-spawned node `id` (ids 1..id-1 already serve); waits until
/// every node lists it as a broker.
fn let_in(c: &mut Cluster, id: i32) {
    let i = (id - 1) as usize;
    let ctl = format!("127.0.0.1:{}", c.nodes[i].controller_port);
    let (code, out) = c.admin_cli(&[
        "add-node",
        "--node-id",
        &id.to_string(),
        "--node-controller",
        &ctl,
    ]);
    assert_eq!(code, 0, "{out}");
    c.nodes[i].wait_ready(id as usize);
    assert_eq!(
        brokers(&c.nodes[0].bootstrap()),
        (1..=id).collect::<BTreeSet<i32>>()
    );
}

/// The cluster id as `chronik-server cluster status` prints it (first line: `cluster ID  controller N`).
fn cluster_id_from_status(bootstrap: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronik-server"))
        .args(["cluster", "status", "--bootstrap", bootstrap])
        .output()
        .expect("run chronik-server cluster status");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "cluster status failed: {text}");
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("cluster "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cluster id in {text}"))
        .to_string()
}

/// A cluster outlives its first voters: a node joining later is given the quorum as it is now
/// (here just node 2, not the string the cluster was started with) and the cluster id that
/// `cluster status` prints. Without `--cluster-id` the joiner would derive another id from that
/// quorum and the controller leader's connections to it would be refused.
#[test]
fn a_node_given_the_cluster_id_joins_with_a_different_quorum() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("j", 2, TopicReplication::Fixed(3)));
    let id = cluster_id_from_status(&b1);
    assert!(!id.is_empty());

    let quorum_now = format!("2@127.0.0.1:{}", c.nodes[1].controller_port);
    let new = c.spawn_new_node_with(&quorum_now, &["--cluster-id", &id]);
    let_in(&mut c, new);
    let b4 = c.nodes[3].bootstrap();
    assert_eq!(replicas(&b4, "j").len(), 2, "the new node learnt the topic");
    assert_eq!(cluster_id_from_status(&b4), id);

    // Restarted with a different id over its data dir, it refuses to start.
    c.nodes[3].kill();
    c.nodes[3].extra = FAST
        .iter()
        .map(|s| s.to_string())
        .chain(["--cluster-id".to_string(), "some-other-cluster".to_string()])
        .collect();
    c.nodes[3].spawn();
    let code = c.nodes[3].wait_exit(30);
    assert_ne!(
        code,
        Some(0),
        "a node started over another cluster's data dir"
    );
    let log = std::fs::read_to_string(c.nodes[3].log_path()).unwrap_or_default();
    assert!(
        log.contains("belongs to cluster") && log.contains("some-other-cluster"),
        "the refusal names both ids: {log}"
    );
}

/// File and directory names under `dir`, recursively.
fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.path().is_dir() {
                out.extend(walk_names(&e.path()));
            }
        }
    }
    out
}

#[test]
fn a_broker_whose_disk_was_wiped_rejoins_and_copies_everything() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("wipe", 2, TopicReplication::Fixed(3)));
    let acked = produce(&c.bootstrap(), "wipe", 2, 0..400);

    c.node(3).kill();
    let dir = c.nodes[2].data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe node 3");
    c.node(3).spawn();
    c.node(3).wait_ready(3);
    // It rejoins every ISR once it has copied the partitions again.
    for p in 0..2 {
        wait_until("node 3 back in the ISR", 60, || {
            isr_of(&b1, "wipe", p) == vec![1, 2, 3]
        });
    }
    assert_replicas_match(&c, "wipe");

    // With node 1 down, nodes 2 and 3 serve every acknowledged record.
    c.node(1).kill();
    let b3 = c.nodes[2].bootstrap();
    for p in 0..2 {
        wait_until("a leader other than node 1", 30, || {
            let l = leader_of(&b3, "wipe", p);
            l == 2 || l == 3
        });
    }
    for (p, want) in &acked {
        let got = read_all(&c.bootstrap(), "wipe", *p, want.len());
        assert_eq!(&got, want, "partition {p}");
    }
}

/// (topic, partition, replicas, adding, removing) of one listed move.
type Moving = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// ListPartitionReassignments (Kafka API 46) and `cluster status` show a replica move while it
/// is in progress: here the new replica's node is paused (SIGSTOP), so it cannot copy the log
/// and the move stays open until it resumes.
#[test]
fn a_move_in_progress_is_listed_until_it_completes() {
    use chronik_raft::network::{blocking_call, RpcRequest, RpcResponse};
    use kafka_protocol::messages::{
        ApiKey, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    };

    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("rs", 1, TopicReplication::Fixed(1)));
    produce(&c.bootstrap(), "rs", 1, 0..50);
    let from = replicas(&b1, "rs")[0][0];
    // The new home: neither the current replica nor the controller leader (a paused leader
    // would hold up the command itself). Another node answers our queries.
    let controller = raw::metadata(&b1, None).expect("metadata").controller_id.0;
    let to = (1..=3)
        .find(|n| *n != from && *n != controller)
        .expect("a third node");
    let ask = (1..=3).find(|n| *n != to).expect("a node to ask");
    let asked = c.node(ask).bootstrap();
    let ctl = format!("127.0.0.1:{}", c.node(ask).controller_port);
    c.node(to).signal(libc::SIGSTOP);

    let cmd = chronik_raft::Command::ReassignPartitions {
        topic: "rs".into(),
        partition: 0,
        replicas: vec![to],
    };
    let secret = chronik_raft::secret::ClusterSecret::read_file(&c.secret_file).expect("secret");
    match blocking_call(
        &ctl,
        &secret,
        None,
        &RpcRequest::Submit(cmd),
        Duration::from_secs(30),
    ) {
        Ok(RpcResponse::Submit(Ok((_, outcome)))) => {
            assert!(
                !matches!(outcome, chronik_raft::CommandOutcome::Partition(Err(_))),
                "reassignment refused: {outcome:?}"
            );
        }
        Ok(RpcResponse::Submit(Err(e))) => panic!("reassignment not committed: {e}"),
        Ok(_) => panic!("unexpected controller answer"),
        Err(e) => panic!("reassignment not submitted: {e}"),
    }

    let list = |addr: &str| -> Vec<Moving> {
        let mut s = raw::connect(addr).expect("connect");
        let r: ListPartitionReassignmentsResponse = raw::call(
            &mut s,
            ApiKey::ListPartitionReassignments,
            0,
            &ListPartitionReassignmentsRequest::default(),
        )
        .expect("ListPartitionReassignments");
        assert_eq!(r.error_code, 0);
        let ids = |v: &Vec<kafka_protocol::messages::BrokerId>| v.iter().map(|b| b.0).collect();
        r.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.0.to_string(),
                        p.partition_index,
                        ids(&p.replicas),
                        ids(&p.adding_replicas),
                        ids(&p.removing_replicas),
                    )
                })
            })
            .collect()
    };
    wait_until("the move to be listed", 20, || !list(&asked).is_empty());
    assert_eq!(
        list(&asked),
        vec![("rs".to_string(), 0, vec![to, from], vec![to], vec![from])]
    );
    let status = |addr: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chronik-server"))
            .args(["cluster", "status", "--bootstrap", addr])
            .output()
            .expect("run cluster status");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = status(&asked);
    let want = format!("REASSIGNING adding [{to}] removing [{from}]");
    assert!(text.contains(&want), "{text}");

    // Resumed, the new replica copies the log, joins the ISR and the move completes.
    c.node(to).signal(libc::SIGCONT);
    wait_until("the move to complete", 60, || list(&asked).is_empty());
    wait_until("replicas to be the target", 20, || {
        replicas(&asked, "rs") == vec![vec![to]]
    });
    assert!(!status(&asked).contains("REASSIGNING"));
}
