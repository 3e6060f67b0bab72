//! Kafka admin APIs that tools (kafka-ui, Cruise Control, `kafka-*.sh`) call: DescribeLogDirs,
//! ElectLeaders, AlterPartitionReassignments / ListPartitionReassignments and DescribeQuorum,
//! against real nodes, with the error codes Apache Kafka returns for bad input.

use crate::common::cluster_util::*;
use crate::common::{raw, Cluster, Server};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use std::collections::BTreeMap;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_n(addr: &str, topic: &str, partition: i32, n: usize) {
    let (err, _) = produce_once(addr, topic, partition, -1, 10_000, n);
    assert_eq!(err, NONE, "produce to {topic}-{partition}");
}

/// (topic, partition) -> (size, offset lag).
type Replicas = BTreeMap<(String, i32), (i64, i64)>;

/// One broker's DescribeLogDirs, and its replicas.
fn log_dirs(
    addr: &str,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> (DescribeLogDirsResponse, Replicas) {
    let mut req = DescribeLogDirsRequest::default();
    req.topics = topics.map(|ts| {
        ts.into_iter()
            .map(|(t, ps)| {
                let mut d = DescribableLogDirTopic::default();
                d.topic = name(t);
                d.partitions = ps;
                d
            })
            .collect()
    });
    let mut s = raw::connect(addr).expect("connect");
    let r: DescribeLogDirsResponse =
        raw::call(&mut s, ApiKey::DescribeLogDirs, version, &req).expect("DescribeLogDirs");
    let mut m = BTreeMap::new();
    for d in &r.results {
        for t in &d.topics {
            for p in &t.partitions {
                m.insert(
                    (t.name.0.to_string(), p.partition_index),
                    (p.partition_size, p.offset_lag),
                );
            }
        }
    }
    (r, m)
}

#[test]
fn describe_log_dirs_lists_the_data_dir_with_each_replica_and_the_disk_size() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create(&b, NewTopic::new("dirs", 2, TopicReplication::Fixed(1)));
    produce_n(&b, "dirs", 0, 20);
    for version in 1..=4 {
        let (r, parts) = log_dirs(&b, version, None);
        assert_eq!(r.error_code, NONE);
        assert_eq!(r.results.len(), 1, "one log dir");
        let d = &r.results[0];
        assert_eq!(d.error_code, NONE);
        let want = std::fs::canonicalize(&s.data_dir).expect("data dir");
        assert_eq!(d.log_dir.as_str(), want.display().to_string());
        let (size0, lag0) = parts[&("dirs".to_string(), 0)];
        let (size1, _) = parts[&("dirs".to_string(), 1)];
        assert!(size0 > size1, "the written partition is larger: {parts:?}");
        assert_eq!(lag0, 0, "a leader has no lag");
        if version >= 4 {
            assert!(d.total_bytes > 0 && d.usable_bytes > 0 && d.usable_bytes <= d.total_bytes);
        }
    }
    // Asked for one partition and an unknown topic: only what exists is listed.
    let (r, parts) = log_dirs(&b, 4, Some(vec![("dirs", vec![1]), ("nope", vec![0])]));
    assert_eq!(r.error_code, NONE);
    assert_eq!(
        parts.keys().collect::<Vec<_>>(),
        vec![&("dirs".to_string(), 1)]
    );
}

fn elect(
    addr: &str,
    version: i16,
    election_type: i8,
    parts: Option<Vec<(&str, Vec<i32>)>>,
) -> (i16, BTreeMap<(String, i32), i16>) {
    let mut req = ElectLeadersRequest::default();
    req.election_type = election_type;
    req.timeout_ms = 30_000;
    req.topic_partitions = parts.map(|ps| {
        ps.into_iter()
            .map(|(t, p)| {
                let mut x = TopicPartitions::default();
                x.topic = name(t);
                x.partitions = p;
                x
            })
            .collect()
    });
    let mut s = raw::connect(addr).expect("connect");
    let r: ElectLeadersResponse =
        raw::call(&mut s, ApiKey::ElectLeaders, version, &req).expect("ElectLeaders");
    let mut m = BTreeMap::new();
    for t in &r.replica_election_results {
        for p in &t.partition_result {
            m.insert((t.topic.0.to_string(), p.partition_id), p.error_code);
        }
    }
    (r.error_code, m)
}

fn quorum(addr: &str, version: i16) -> DescribeQuorumResponse {
    let mut req = DescribeQuorumRequest::default();
    let mut t = TopicData::default();
    t.topic_name = name("__cluster_metadata");
    t.partitions.push(PartitionData::default());
    req.topics.push(t);
    let mut s = raw::connect(addr).expect("connect");
    raw::call(&mut s, ApiKey::DescribeQuorum, version, &req).expect("DescribeQuorum")
}

/// Preferred and unclean elections with Kafka's per-partition answers, the metadata quorum as
/// every node reports it, and follower replicas in DescribeLogDirs, on one 3-node cluster.
#[test]
fn elect_leaders_restores_the_preferred_leader_and_answers_kafkas_errors() {
    let mut extra: Vec<&str> = FAST.to_vec();
    // No automatic preferred-leader elections: this test makes them.
    extra.extend(["--leader-imbalance-check-interval-ms", "0"]);
    let mut c = Cluster::start(3, &extra);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("el", 1, TopicReplication::Fixed(3)));
    produce_n(&b1, "el", 0, 10);
    let one = Some(vec![("el", vec![0])]);

    // Led by its preferred replica already: nothing to do, for either kind.
    for v in 0..=2 {
        let (top, r) = elect(&b1, v, 0, one.clone());
        assert_eq!(top, NONE);
        assert_eq!(r[&("el".to_string(), 0)], ELECTION_NOT_NEEDED, "v{v}");
    }
    let (_, r) = elect(&b1, 2, 1, one.clone());
    assert_eq!(r[&("el".to_string(), 0)], ELECTION_NOT_NEEDED);
    // Unknown topics and partitions.
    let (_, r) = elect(&b1, 2, 0, Some(vec![("nope", vec![0]), ("el", vec![7])]));
    assert_eq!(r[&("nope".to_string(), 0)], UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(r[&("el".to_string(), 7)], UNKNOWN_TOPIC_OR_PARTITION);
    // All partitions: those already led by the right replica are left out, as in Kafka.
    let (top, r) = elect(&b1, 2, 0, None);
    assert_eq!((top, r.len()), (NONE, 0), "{r:?}");

    // The preferred leader goes away: leadership moves, and electing it is not possible.
    let preferred = replicas_of(&b1, "el")[0];
    let other = (1..=3).find(|n| *n != preferred).expect("another node");
    let ask = c.node(other).bootstrap();
    c.node(preferred).kill();
    wait_until("leadership to move", 30, || {
        let l = leader_of(&ask, "el", 0);
        l != preferred && l > 0
    });
    let (_, r) = elect(&ask, 2, 0, one.clone());
    assert_eq!(r[&("el".to_string(), 0)], PREFERRED_LEADER_NOT_AVAILABLE);

    // Back and in sync: a preferred election gives it leadership again.
    c.node(preferred).restart();
    wait_until("the preferred replica to rejoin the ISR", 60, || {
        isr_of(&ask, "el", 0).contains(&preferred)
    });
    let (_, r) = elect(&ask, 2, 0, one.clone());
    assert_eq!(r[&("el".to_string(), 0)], NONE);
    assert_eq!(leader_of(&ask, "el", 0), preferred);

    // Every replica lists the partition; followers report a lag of zero or more.
    for n in 1..=3 {
        let (r, parts) = log_dirs(&c.node(n).bootstrap(), 4, None);
        assert_eq!(r.error_code, NONE);
        let (size, lag) = parts[&("el".to_string(), 0)];
        assert!(size > 0 && lag >= 0, "node {n}: {parts:?}");
    }

    // The quorum, from every node: three voters, one leader, its epoch and high watermark.
    let mut leaders = Vec::new();
    for n in 1..=3 {
        let q = quorum(&c.node(n).bootstrap(), 2);
        assert_eq!(q.error_code, NONE);
        let p = &q.topics[0].partitions[0];
        assert_eq!(p.error_code, NONE, "{:?}", p.error_message);
        let mut voters: Vec<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
        voters.sort();
        assert_eq!(voters, vec![1, 2, 3]);
        assert!(p.leader_epoch > 0 && p.high_watermark > 0);
        let leader = p
            .current_voters
            .iter()
            .find(|v| v.replica_id == p.leader_id)
            .expect("the leader is a voter");
        assert!(leader.log_end_offset >= p.high_watermark);
        assert!(leader.last_caught_up_timestamp > 0);
        let mut nodes: Vec<i32> = q.nodes.iter().map(|n| n.node_id.0).collect();
        nodes.sort();
        assert_eq!(nodes, vec![1, 2, 3]);
        leaders.push(p.leader_id.0);
        // v0 and v1 decode too.
        assert_eq!(
            quorum(&c.node(n).bootstrap(), 0).topics[0].partitions[0].error_code,
            NONE
        );
    }
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    // Only the metadata partition has a quorum.
    let mut req = DescribeQuorumRequest::default();
    let mut t = TopicData::default();
    t.topic_name = name("el");
    t.partitions.push(PartitionData::default());
    req.topics.push(t);
    let mut s = raw::connect(&b1).expect("connect");
    let q: DescribeQuorumResponse =
        raw::call(&mut s, ApiKey::DescribeQuorum, 2, &req).expect("DescribeQuorum");
    assert_eq!(
        q.topics[0].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

fn replicas_of(addr: &str, topic: &str) -> Vec<i32> {
    metadata(addr, topic).topics[0].partitions[0]
        .replica_nodes
        .iter()
        .map(|b| b.0)
        .collect()
}

/// One partition's reassignment (None: cancel) → its error code.
fn reassign(
    addr: &str,
    version: i16,
    allow_rf_change: bool,
    moves: Vec<(&str, i32, Option<Vec<i32>>)>,
) -> BTreeMap<(String, i32), i16> {
    let mut req = AlterPartitionReassignmentsRequest::default();
    req.timeout_ms = 30_000;
    req.allow_replication_factor_change = allow_rf_change;
    for (t, p, r) in moves {
        let mut rp = ReassignablePartition::default();
        rp.partition_index = p;
        rp.replicas = r.map(|v| v.into_iter().map(BrokerId).collect());
        match req.topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(rp),
            None => {
                let mut x = ReassignableTopic::default();
                x.name = name(t);
                x.partitions.push(rp);
                req.topics.push(x);
            }
        }
    }
    let mut s = raw::connect(addr).expect("connect");
    // The answer waits until every live broker serves the change: a paused one is waited for
    // up to the request's timeout.
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("read timeout");
    let r: AlterPartitionReassignmentsResponse =
        raw::call(&mut s, ApiKey::AlterPartitionReassignments, version, &req)
            .expect("AlterPartitionReassignments");
    assert_eq!(r.error_code, NONE);
    let mut m = BTreeMap::new();
    for t in &r.responses {
        for p in &t.partitions {
            m.insert((t.name.0.to_string(), p.partition_index), p.error_code);
        }
    }
    m
}

fn moving(addr: &str, topics: Option<Vec<(&str, Vec<i32>)>>) -> Vec<(String, i32, Vec<i32>)> {
    let mut req = ListPartitionReassignmentsRequest::default();
    req.timeout_ms = 10_000;
    req.topics = topics.map(|ts| {
        ts.into_iter()
            .map(|(t, ps)| {
                let mut x = ListPartitionReassignmentsTopics::default();
                x.name = name(t);
                x.partition_indexes = ps;
                x
            })
            .collect()
    });
    let mut s = raw::connect(addr).expect("connect");
    let r: ListPartitionReassignmentsResponse =
        raw::call(&mut s, ApiKey::ListPartitionReassignments, 0, &req)
            .expect("ListPartitionReassignments");
    assert_eq!(r.error_code, NONE);
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.adding_replicas.iter().map(|b| b.0).collect(),
                )
            })
        })
        .collect()
}

/// A replica moves to another broker and the move completes; a move whose new replica cannot
/// copy (its node is paused) is listed and can be cancelled; bad requests get Kafka's errors.
#[test]
fn a_reassignment_moves_a_replica_and_bad_ones_get_kafkas_errors() {
    let mut c = Cluster::start(3, FAST);
    let b1 = c.nodes[0].bootstrap();
    create(&b1, NewTopic::new("mv", 2, TopicReplication::Fixed(1)));
    produce_n(&b1, "mv", 0, 30);
    let from = replicas_of(&b1, "mv")[0];
    let to = (1..=3).find(|n| *n != from).expect("another node");

    // Bad input first: nothing of it reaches the cluster.
    let key = |t: &str, p: i32| (t.to_string(), p);
    let r = reassign(
        &b1,
        1,
        true,
        vec![
            ("nope", 0, Some(vec![to])),
            ("mv", 9, Some(vec![to])),
            ("mv", 0, Some(vec![42])),
            ("mv", 0, Some(vec![to, to])),
            ("mv", 0, Some(vec![])),
            ("mv", 1, None),
        ],
    );
    assert_eq!(r[&key("nope", 0)], UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(r[&key("mv", 9)], UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(r[&key("mv", 0)], INVALID_REPLICA_ASSIGNMENT);
    assert_eq!(r[&key("mv", 1)], NO_REASSIGNMENT_IN_PROGRESS);
    let r = reassign(&b1, 1, false, vec![("mv", 0, Some(vec![from, to]))]);
    assert_eq!(r[&key("mv", 0)], INVALID_REPLICATION_FACTOR);
    assert!(moving(&b1, None).is_empty());
    assert_eq!(replicas_of(&b1, "mv"), vec![from]);

    // A real move (v0: any replication factor), answered once started; it then completes.
    let r = reassign(&b1, 0, true, vec![("mv", 0, Some(vec![to]))]);
    assert_eq!(r[&key("mv", 0)], NONE);
    wait_until("the move to complete", 60, || moving(&b1, None).is_empty());
    wait_until("the new replica set", 20, || {
        replicas_of(&b1, "mv") == vec![to]
    });
    let to_addr = c.node(to).bootstrap();
    wait_until("the new replica to hold every record", 20, || {
        local_leo(&to_addr, "mv", 0) == 30
    });

    // A move to a paused node stays open: listed (also when asked by partition), cancelled.
    let controller = raw::metadata(&b1, None).expect("metadata").controller_id.0;
    let Some(paused) = (1..=3).find(|n| *n != to && *n != controller) else {
        return; // the only other node leads the controller: nothing to pause safely
    };
    let ask = c.node(to).bootstrap();
    c.node(paused).signal(libc::SIGSTOP);
    let r = reassign(&ask, 1, true, vec![("mv", 0, Some(vec![to, paused]))]);
    assert_eq!(r[&key("mv", 0)], NONE);
    let listed = vec![("mv".to_string(), 0, vec![paused])];
    assert_eq!(moving(&ask, None), listed);
    assert_eq!(moving(&ask, Some(vec![("mv", vec![0, 1])])), listed);
    assert!(moving(&ask, Some(vec![("mv", vec![1])])).is_empty());
    let r = reassign(&ask, 1, true, vec![("mv", 0, None)]);
    assert_eq!(r[&key("mv", 0)], NONE);
    assert!(moving(&ask, None).is_empty());
    assert_eq!(replicas_of(&ask, "mv"), vec![to]);
    c.node(paused).signal(libc::SIGCONT);
}
