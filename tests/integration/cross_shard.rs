//! Requests that cross shards, on nodes with four shards. A connection lands on whichever shard
//! the kernel's SO_REUSEPORT hash picks, so each test names, over one connection, a partition
//! (or group) on every one of the four shards, chosen with the broker's own owner function
//! (`chronik::shard::owner_shard`, `chronik::group::partition_for`): whatever shard serves the
//! connection, at least three of the four are owned by another shard.

use crate::common::cluster_util::{self, local_bytes, local_leo, proven_as, wait_until, FAST};
use crate::common::{raw, Cluster, Server};
use bytes::{Bytes, BytesMut};
use chronik::group::{partition_for, OFFSETS_TOPIC};
use chronik::shard::owner_shard;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest,
    FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, JoinGroupRequest,
    JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, ProduceRequest, ProduceResponse, SyncGroupRequest, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use rdkafka::admin::{NewTopic, TopicReplication};
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SHARDS: usize = 4;
const CORES: &[&str] = &["--cores", "4"];

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Asserts the partitions `ps` of `topic` are owned by every one of the shards.
fn assert_on_every_shard(topic: &str, ps: &[i32]) {
    let owners: BTreeSet<usize> = ps.iter().map(|p| owner_shard(topic, *p, SHARDS)).collect();
    assert_eq!(
        owners.len(),
        SHARDS,
        "{topic} {ps:?} are owned by {owners:?}"
    );
}

/// The values of every record in a partition's fetched record batches, in order.
fn values(records: Option<Bytes>) -> Vec<String> {
    let mut buf = records.unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("fetched batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap())
        .collect()
}

fn record_values(partition: i32, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{partition}-r{i}")).collect()
}

fn batch_of(vals: &[String]) -> Bytes {
    let recs: Vec<chronik_storage::testing::Record> =
        vals.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    chronik_storage::testing::build_batch(&recs, 1_700_000_000_000).freeze()
}

/// One Fetch (v11) of every partition in `ps` from offset 0, as `replica_id`.
fn fetch_all(s: &mut TcpStream, replica_id: i32, topic: &str, ps: &[i32]) -> FetchResponse {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(replica_id);
    req.max_wait_ms = 0;
    req.max_bytes = 8 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(sb(topic));
    for p in ps {
        let mut fp = FetchPartition::default();
        fp.partition = *p;
        fp.fetch_offset = 0;
        fp.current_leader_epoch = -1;
        fp.partition_max_bytes = 1 << 20;
        t.partitions.push(fp);
    }
    req.topics = vec![t];
    raw::call(s, ApiKey::Fetch, 11, &req).expect("fetch")
}

#[test]
fn one_connection_produces_to_and_fetches_from_partitions_owned_by_every_shard() {
    let s = Server::start(CORES);
    let addr = s.bootstrap();
    let topic = "spread";
    let ps: Vec<i32> = (0..SHARDS as i32).collect();
    assert_on_every_shard(topic, &ps);
    cluster_util::create(
        &addr,
        NewTopic::new(topic, SHARDS as i32, TopicReplication::Fixed(1)),
    );

    let mut conn = raw::connect(&addr).expect("connect");
    let mut td = TopicProduceData::default();
    td.name = TopicName(sb(topic));
    for p in &ps {
        let mut pd = PartitionProduceData::default();
        pd.index = *p;
        pd.records = Some(batch_of(&record_values(*p, 3 + *p as usize)));
        td.partition_data.push(pd);
    }
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data = vec![td];
    let r: ProduceResponse = raw::call(&mut conn, ApiKey::Produce, 9, &req).expect("produce");
    let answered = &r.responses[0].partition_responses;
    assert_eq!(answered.len(), SHARDS);
    for pr in answered {
        assert_eq!(pr.error_code, 0, "partition {}", pr.index);
        assert_eq!(pr.base_offset, 0, "partition {}", pr.index);
    }

    let r = fetch_all(&mut conn, -1, topic, &ps);
    let parts = &r.responses[0].partitions;
    assert_eq!(parts.len(), SHARDS);
    for pd in parts {
        let p = pd.partition_index;
        assert_eq!(pd.error_code, 0, "partition {p}");
        assert_eq!(pd.high_watermark, 3 + i64::from(p), "partition {p}");
        assert_eq!(
            values(pd.records.clone()),
            record_values(p, 3 + p as usize),
            "partition {p} reads back what was produced"
        );
    }
}

// ---- groups --------------------------------------------------------------------------------

/// A ConsumerProtocol message: its version, then the message at that version.
fn consumer_protocol<M: Encodable>(m: &M) -> Bytes {
    let mut b = BytesMut::new();
    b.extend_from_slice(&0i16.to_be_bytes());
    m.encode(&mut b, 0).expect("encode");
    b.freeze()
}

fn join(s: &mut TcpStream, group: &str, member: &str, topic: &str) -> JoinGroupResponse {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = vec![sb(topic)];
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(sb(group));
    req.session_timeout_ms = 30_000;
    req.rebalance_timeout_ms = 10_000;
    req.member_id = sb(member);
    req.protocol_type = sb("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = sb("range");
    p.metadata = consumer_protocol(&sub);
    req.protocols.push(p);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: JoinGroupResponse = raw::call(s, ApiKey::JoinGroup, 5, &req).expect("join");
        // COORDINATOR_LOAD_IN_PROGRESS while the coordinator loads its offsets partition.
        if r.error_code != 14 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// FindCoordinator, join (twice: MEMBER_ID_REQUIRED first), sync, commit `offset` for
/// `topic`-0 and fetch it back, all on `s`.
fn group_round_trip(s: &mut TcpStream, addr: &str, group: &str, topic: &str, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = FindCoordinatorRequest::default();
        req.key = sb(group);
        let r: FindCoordinatorResponse =
            raw::call(s, ApiKey::FindCoordinator, 3, &req).expect("find coordinator");
        if r.error_code == 0 {
            assert_eq!(format!("127.0.0.1:{}", r.port), addr);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "FindCoordinator: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = join(s, group, "", topic);
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED for {group}");
    let member = first.member_id.to_string();
    let joined = join(s, group, &member, topic);
    assert_eq!(joined.error_code, 0, "join {group}");
    assert_eq!(joined.leader.to_string(), member);
    let generation = joined.generation_id;

    let mut assigned = ConsumerProtocolAssignment::default();
    let mut tp = AssignedPartitions::default();
    tp.topic = TopicName(sb(topic));
    tp.partitions = vec![0];
    assigned.assigned_partitions = vec![tp];
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = sb(&member);
    a.assignment = consumer_protocol(&assigned);
    let mut req = SyncGroupRequest::default();
    req.group_id = GroupId(sb(group));
    req.generation_id = generation;
    req.member_id = sb(&member);
    req.assignments = vec![a.clone()];
    let r: SyncGroupResponse = raw::call(s, ApiKey::SyncGroup, 3, &req).expect("sync");
    assert_eq!(r.error_code, 0, "sync {group}");
    assert_eq!(
        r.assignment, a.assignment,
        "{group} gets its assignment back"
    );

    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_metadata = Some(sb(group));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(sb(topic));
    t.partitions = vec![p];
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(sb(group));
    req.generation_id_or_member_epoch = generation;
    req.member_id = sb(&member);
    req.topics = vec![t];
    let r: OffsetCommitResponse = raw::call(s, ApiKey::OffsetCommit, 7, &req).expect("commit");
    assert_eq!(r.topics[0].partitions[0].error_code, 0, "commit {group}");

    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(sb(group));
    g.topics = None;
    let mut req = OffsetFetchRequest::default();
    req.groups = vec![g];
    let r: OffsetFetchResponse = raw::call(s, ApiKey::OffsetFetch, 8, &req).expect("fetch");
    let g = &r.groups[0];
    assert_eq!(g.error_code, 0, "offset fetch {group}");
    let p = &g.topics[0].partitions[0];
    assert_eq!(
        (p.committed_offset, p.metadata.as_deref()),
        (offset, Some(group)),
        "{group} reads back its commit"
    );
}

#[test]
fn one_connection_joins_syncs_and_commits_through_group_coordinators_on_every_shard() {
    const OFFSETS_PARTITIONS: i32 = 8;
    let mut args = CORES.to_vec();
    args.extend(["--offsets-topic-num-partitions", "8"]);
    let s = Server::start(&args);
    let addr = s.bootstrap();
    let topic = "consumed";
    cluster_util::create(&addr, NewTopic::new(topic, 1, TopicReplication::Fixed(1)));

    // The first group names whose coordinator (the owner of their offsets partition) is on
    // each shard, as the broker routes them (`group::route`).
    let mut groups: Vec<Option<String>> = vec![None; SHARDS];
    for i in 0..1000 {
        let g = format!("group-{i}");
        let shard = owner_shard(OFFSETS_TOPIC, partition_for(&g, OFFSETS_PARTITIONS), SHARDS);
        groups[shard].get_or_insert(g);
    }
    let groups: Vec<String> = groups
        .into_iter()
        .map(|g| g.expect("a group name for every shard"))
        .collect();

    let mut conn = raw::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    for (i, g) in groups.iter().enumerate() {
        group_round_trip(&mut conn, &addr, g, topic, 100 + i as i64);
    }
    // Each commit is still there when read again after the others (no shard mixed them up).
    for (i, g) in groups.iter().enumerate() {
        let mut gr = OffsetFetchRequestGroup::default();
        gr.group_id = GroupId(sb(g));
        gr.topics = None;
        let mut req = OffsetFetchRequest::default();
        req.groups = vec![gr];
        let r: OffsetFetchResponse =
            raw::call(&mut conn, ApiKey::OffsetFetch, 8, &req).expect("offset fetch");
        assert_eq!(
            r.groups[0].topics[0].partitions[0].committed_offset,
            100 + i as i64,
            "{g}"
        );
    }
}

// ---- replication ---------------------------------------------------------------------------

#[test]
fn followers_replicate_partitions_led_on_every_shard_of_each_leader_to_the_same_log_end() {
    let mut args = CORES.to_vec();
    args.extend(FAST);
    let mut c = Cluster::start(3, &args);
    let b1 = c.node(1).bootstrap();
    let topic = "replicated";
    const PARTITIONS: i32 = 12;
    cluster_util::create(
        &b1,
        NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(3)),
    );
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.bootstrap()).collect();
    wait_until("every partition has a leader and a full ISR", 60, || {
        (0..PARTITIONS).all(|p| {
            cluster_util::leader_of(&b1, topic, p) > 0
                && cluster_util::isr_of(&b1, topic, p).len() == 3
        })
    });
    let leaders: Vec<i32> = (0..PARTITIONS)
        .map(|p| cluster_util::leader_of(&b1, topic, p))
        .collect();

    // acks=all: a partition's produce is answered once both followers, fetching it on the
    // shard that owns it, hold the records.
    for p in 0..PARTITIONS {
        let leader = &addrs[(leaders[p as usize] - 1) as usize];
        let (err, base) = cluster_util::produce_once(leader, topic, p, -1, 10_000, 5 + p as usize);
        assert_eq!((err, base), (0, 0), "produce to partition {p}");
    }
    wait_until("every replica reaches the leader's log end", 60, || {
        (0..PARTITIONS).all(|p| {
            addrs
                .iter()
                .all(|a| local_leo(a, topic, p) == 5 + i64::from(p))
        })
    });
    for p in 0..PARTITIONS {
        let leader = &addrs[(leaders[p as usize] - 1) as usize];
        let want = local_bytes(leader, topic, p, 5 + i64::from(p));
        for a in &addrs {
            assert_eq!(
                local_bytes(a, topic, p, 5 + i64::from(p)),
                want,
                "partition {p} on {a} is the leader's copy byte for byte"
            );
        }
    }

    // One follower fetch, on one proven connection, of a partition on every shard of a
    // leader: each answered with its records.
    let leader = leaders[0];
    let led: Vec<i32> = (0..PARTITIONS)
        .filter(|p| leaders[*p as usize] == leader)
        .collect();
    let mut one_per_shard: Vec<Option<i32>> = vec![None; SHARDS];
    for p in &led {
        one_per_shard[owner_shard(topic, *p, SHARDS)].get_or_insert(*p);
    }
    let ps: Vec<i32> = one_per_shard.into_iter().flatten().collect();
    assert_on_every_shard(topic, &ps);
    let follower = if leader == 1 { 2 } else { 1 };
    let addr = addrs[(leader - 1) as usize].clone();
    let secret =
        chronik_raft::secret::ClusterSecret::read_file(&c.secret_file).expect("the secret");
    let mut s = proven_as(&addr, &secret, follower, leader);
    let r = fetch_all(&mut s, follower, topic, &ps);
    let parts = &r.responses[0].partitions;
    assert_eq!(parts.len(), ps.len());
    for pd in parts {
        let p = pd.partition_index;
        assert_eq!(pd.error_code, 0, "partition {p}");
        assert_eq!(
            values(pd.records.clone()).len(),
            5 + p as usize,
            "partition {p}"
        );
    }
}
