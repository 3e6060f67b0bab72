//! Consumer groups against one real chronik-server: librdkafka group consumers (rdkafka
//! crate) and raw group-protocol requests (kafka-protocol over a TcpStream).

use crate::common::raw;
use crate::common::Server;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const NONE: i16 = 0;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin")
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let r = block_on(admin(bootstrap).create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics");
    assert!(r[0].is_ok(), "create {name}: {:?}", r[0]);
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, per_partition: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for part in 0..partitions {
        for i in 0..per_partition {
            let v = format!("{part}-{i}");
            loop {
                match p.send(BaseRecord::<(), _>::to(topic).payload(&v).partition(part)) {
                    Ok(()) => break,
                    Err((_, _)) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn group_consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    if let Ok(d) = std::env::var("CHRONIK_TEST_RDKAFKA_DEBUG") {
        c.set("debug", d);
    }
    c.create().expect("consumer")
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer until `done` holds for their assignments (or panics after 60 s).
fn poll_until(cs: &[&BaseConsumer], what: &str, done: impl Fn(&[BTreeSet<i32>]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for c in cs {
            if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
                eprintln!("consumer error (retried): {e}");
            }
        }
        let a: Vec<BTreeSet<i32>> = cs.iter().map(|c| assigned(c)).collect();
        if done(&a) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: assignments {a:?}");
    }
}

/// Disjoint and covering 0..n.
fn partitions_shared(a: &[BTreeSet<i32>], n: i32) -> bool {
    let total: usize = a.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = a.iter().flatten().copied().collect();
    total == n as usize && union == (0..n).collect() && a.iter().all(|s| !s.is_empty())
}

#[test]
fn three_members_share_six_partitions_and_a_leaving_member_hands_over() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "share6", 6);
    let cs: Vec<BaseConsumer> = (0..3).map(|_| group_consumer(&b, "g-share", &[])).collect();
    for c in &cs {
        c.subscribe(&["share6"]).unwrap();
    }
    let refs: Vec<&BaseConsumer> = cs.iter().collect();
    poll_until(&refs, "3 members share 6 partitions", |a| {
        partitions_shared(a, 6)
    });
    let mut cs = cs;
    let gone = cs.pop().unwrap();
    drop(gone); // close: LeaveGroup
    let refs: Vec<&BaseConsumer> = cs.iter().collect();
    poll_until(&refs, "2 members take over", |a| partitions_shared(a, 6));
}

#[test]
fn cooperative_sticky_rebalance_splits_partitions() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "coop6", 6);
    let extra = [("partition.assignment.strategy", "cooperative-sticky")];
    let c1 = group_consumer(&b, "g-coop", &extra);
    c1.subscribe(&["coop6"]).unwrap();
    poll_until(&[&c1], "first member takes all", |a| {
        partitions_shared(a, 6)
    });
    let c2 = group_consumer(&b, "g-coop", &extra);
    c2.subscribe(&["coop6"]).unwrap();
    poll_until(&[&c1, &c2], "incremental rebalance", |a| {
        partitions_shared(a, 6) && a[0].len() == 3
    });
    // A third member arrives and cooperative rebalancing converges again.
    let c3 = group_consumer(&b, "g-coop", &extra);
    c3.subscribe(&["coop6"]).unwrap();
    poll_until(&[&c1, &c2, &c3], "three-way split", |a| {
        partitions_shared(a, 6) && a.iter().all(|s| s.len() == 2)
    });
}

#[test]
fn committed_offsets_survive_sigkill_and_a_new_member_resumes() {
    let mut s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "resume", 2);
    produce(&b, "resume", 2, 50);
    {
        let c = group_consumer(&b, "g-resume", &[]);
        c.subscribe(&["resume"]).unwrap();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen < 30 {
            assert!(Instant::now() < deadline, "consumed only {seen}");
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                seen += 1;
                c.commit_message(&m, CommitMode::Sync).expect("commit");
            }
        }
        let committed = c
            .committed(Duration::from_secs(10))
            .expect("committed offsets");
        let total: i64 = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum();
        assert_eq!(total, 30, "{committed:?}");
        // The member leaves before the broker is killed: a librdkafka client that keeps
        // reconnecting to a dead broker's loopback port can end up connected to itself on that
        // port (TCP self-connect) and keep the restarted broker from binding it. rdkafka's
        // BaseConsumer drop can block while fetched messages are still queued, so it closes
        // on its own thread.
        std::thread::spawn(move || drop(c));
        std::thread::sleep(Duration::from_secs(3));
    }
    s.restart(); // SIGKILL, start again on the same data dir
    let b = s.bootstrap();
    let c = group_consumer(&b, "g-resume", &[]);
    c.subscribe(&["resume"]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 70 {
        assert!(
            Instant::now() < deadline,
            "resumed only {} of 70",
            got.len()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((m.partition(), m.offset())),
            Some(Err(e)) => eprintln!("poll (retried): {e}"),
            None => {}
        }
    }
    // Exactly the uncommitted tail: nothing before the committed offsets is read again.
    assert_eq!(got.len(), 70);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("resume", 0);
    tpl.add_partition("resume", 1);
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    let mut total = 0;
    for e in committed.elements() {
        // A partition nothing was consumed from has no committed offset and starts at 0.
        let start = match e.offset() {
            Offset::Offset(o) => o,
            Offset::Invalid => 0,
            other => panic!("unexpected committed offset {other:?}"),
        };
        total += start;
        let first = got
            .iter()
            .filter(|(p, _)| *p == e.partition())
            .map(|x| x.1)
            .min();
        assert_eq!(
            first.unwrap_or(50),
            start,
            "partition {} resumed elsewhere",
            e.partition()
        );
    }
    assert_eq!(
        total, 30,
        "committed offsets after the restart: {committed:?}"
    );
}

// ---- raw protocol --------------------------------------------------------------------------

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A ConsumerProtocolSubscription v0 for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

/// A ConsumerProtocolAssignment v0.
fn assignment(topic: &str, parts: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(parts.len() as i32);
    for p in parts {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

fn coordinator_conn(bootstrap: &str, group: &str) -> TcpStream {
    let mut s = raw::connect(bootstrap).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = FindCoordinatorRequest::default();
        req.key = sb(group);
        let r: FindCoordinatorResponse =
            raw::call(&mut s, ApiKey::FindCoordinator, 3, &req).unwrap();
        if r.error_code == NONE {
            assert_eq!(format!("127.0.0.1:{}", r.port), bootstrap);
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "FindCoordinator: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn join(
    s: &mut TcpStream,
    group: &str,
    member: &str,
    instance: Option<&str>,
    topics: &[&str],
) -> JoinGroupResponse {
    let mut req = JoinGroupRequest::default();
    req.group_id = GroupId(sb(group));
    req.session_timeout_ms = 6000;
    req.rebalance_timeout_ms = 10000;
    req.member_id = sb(member);
    req.group_instance_id = instance.map(sb);
    req.protocol_type = sb("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = sb("range");
    p.metadata = subscription(topics);
    req.protocols.push(p);
    loop {
        let r: JoinGroupResponse = raw::call(s, ApiKey::JoinGroup, 5, &req).unwrap();
        // The coordinator may still be loading its partition right after start.
        if r.error_code != 14 {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sync(
    s: &mut TcpStream,
    group: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
    assignments: Vec<(String, Bytes)>,
) -> SyncGroupResponse {
    let mut req = SyncGroupRequest::default();
    req.group_id = GroupId(sb(group));
    req.generation_id = generation;
    req.member_id = sb(member);
    req.group_instance_id = instance.map(sb);
    for (m, a) in assignments {
        let mut x = SyncGroupRequestAssignment::default();
        x.member_id = sb(&m);
        x.assignment = a;
        req.assignments.push(x);
    }
    raw::call(s, ApiKey::SyncGroup, 3, &req).unwrap()
}

fn heartbeat(
    s: &mut TcpStream,
    group: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
) -> i16 {
    let mut req = HeartbeatRequest::default();
    req.group_id = GroupId(sb(group));
    req.generation_id = generation;
    req.member_id = sb(member);
    req.group_instance_id = instance.map(sb);
    let r: HeartbeatResponse = raw::call(s, ApiKey::Heartbeat, 3, &req).unwrap();
    r.error_code
}

fn commit(s: &mut TcpStream, group: &str, generation: i32, member: &str, offset: i64) -> i16 {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(sb(group));
    req.generation_id_or_member_epoch = generation;
    req.member_id = sb(member);
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(sb("raw"));
    let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_metadata = Some(sb("meta"));
    t.partitions.push(p);
    req.topics.push(t);
    let r: OffsetCommitResponse = raw::call(s, ApiKey::OffsetCommit, 7, &req).unwrap();
    r.topics[0].partitions[0].error_code
}

fn fetch_committed(s: &mut TcpStream, group: &str) -> (i64, Option<String>) {
    let mut req = OffsetFetchRequest::default();
    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
    g.group_id = GroupId(sb(group));
    g.topics = None; // all
    req.groups.push(g);
    let r: OffsetFetchResponse = raw::call(s, ApiKey::OffsetFetch, 8, &req).unwrap();
    assert_eq!(r.groups[0].error_code, NONE);
    let Some(t) = r.groups[0].topics.first() else {
        return (-1, None);
    };
    let p = &t.partitions[0];
    (
        p.committed_offset,
        p.metadata.as_ref().map(|m| m.to_string()),
    )
}

/// Joins a one-member group (MEMBER_ID_REQUIRED first) and syncs; returns (member, generation).
fn join_alone(s: &mut TcpStream, group: &str) -> (String, i32) {
    let r = join(s, group, "", None, &["raw"]);
    assert_eq!(
        r.error_code, MEMBER_ID_REQUIRED,
        "first join of a dynamic member"
    );
    let member = r.member_id.to_string();
    assert!(!member.is_empty());
    let r = join(s, group, &member, None, &["raw"]);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.member_id.to_string(), member);
    assert_eq!(r.leader.to_string(), member, "the only member leads");
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    let gen = r.generation_id;
    assert!(gen >= 1);
    let a = assignment("raw", &[0]);
    let sr = sync(
        s,
        group,
        gen,
        &member,
        None,
        vec![(member.clone(), a.clone())],
    );
    assert_eq!(sr.error_code, NONE);
    assert_eq!(sr.assignment, a);
    (member, gen)
}

#[test]
fn generations_member_ids_and_commit_validation() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "raw", 1);
    let mut c = coordinator_conn(&b, "g-raw");
    let (member, gen) = join_alone(&mut c, "g-raw");
    assert_eq!(heartbeat(&mut c, "g-raw", gen, &member, None), NONE);
    assert_eq!(
        heartbeat(&mut c, "g-raw", gen + 1, &member, None),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut c, "g-raw", gen, "nobody", None),
        UNKNOWN_MEMBER_ID
    );
    let r = sync(&mut c, "g-raw", gen, "nobody", None, vec![]);
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
    assert_eq!(
        commit(&mut c, "g-raw", gen + 1, &member, 5),
        ILLEGAL_GENERATION
    );
    assert_eq!(commit(&mut c, "g-raw", gen, "nobody", 5), UNKNOWN_MEMBER_ID);
    assert_eq!(fetch_committed(&mut c, "g-raw").0, -1);
    assert_eq!(commit(&mut c, "g-raw", gen, &member, 5), NONE);
    assert_eq!(fetch_committed(&mut c, "g-raw"), (5, Some("meta".into())));
    // Unknown member rejoining an existing group with a made-up id.
    let r = join(&mut c, "g-raw", "made-up", None, &["raw"]);
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);

    // Deleting a group with a live member is refused.
    let res = block_on(admin(&b).delete_groups(&["g-raw"], &AdminOptions::new())).unwrap();
    assert_eq!(
        res[0].as_ref().unwrap_err().1,
        rdkafka::types::RDKafkaErrorCode::NonEmptyGroup
    );

    // A second member joining starts a new generation; the first learns by heartbeat.
    let mut c2 = coordinator_conn(&b, "g-raw");
    let h = std::thread::spawn(move || {
        let r = join(&mut c2, "g-raw", "", None, &["raw"]);
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
        let id = r.member_id.to_string();
        let r = join(&mut c2, "g-raw", &id, None, &["raw"]);
        (
            r.error_code,
            r.generation_id,
            r.leader.to_string(),
            r.members.len(),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = heartbeat(&mut c, "g-raw", gen, &member, None);
        if code == REBALANCE_IN_PROGRESS {
            break;
        }
        assert_eq!(code, NONE);
        assert!(Instant::now() < deadline, "no rebalance signalled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = join(&mut c, "g-raw", &member, None, &["raw"]);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.generation_id, gen + 1);
    assert_eq!(r.leader.to_string(), member, "the old leader stays leader");
    assert_eq!(r.members.len(), 2);
    let (code, gen2, leader, n) = h.join().unwrap();
    assert_eq!(
        (code, gen2, leader.as_str(), n),
        (NONE, gen + 1, member.as_str(), 0)
    );
    // The old generation is fenced now.
    assert_eq!(commit(&mut c, "g-raw", gen, &member, 6), ILLEGAL_GENERATION);
}

#[test]
fn static_member_rejoins_without_rebalance_and_fences_its_old_id() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "raw", 1);
    let mut c = coordinator_conn(&b, "g-static");
    // Static members get their id at once (no MEMBER_ID_REQUIRED round).
    let r = join(&mut c, "g-static", "", Some("inst-1"), &["raw"]);
    assert_eq!(r.error_code, NONE);
    let old = r.member_id.to_string();
    let gen = r.generation_id;
    let a = assignment("raw", &[0]);
    let sr = sync(
        &mut c,
        "g-static",
        gen,
        &old,
        Some("inst-1"),
        vec![(old.clone(), a.clone())],
    );
    assert_eq!(sr.error_code, NONE);
    // The same instance restarts (unknown member id, same protocols): it replaces the old member.
    let r = join(&mut c, "g-static", "", Some("inst-1"), &["raw"]);
    assert_eq!(r.error_code, NONE);
    let new = r.member_id.to_string();
    assert_ne!(new, old);
    assert_eq!(r.generation_id, gen, "no rebalance for a static rejoin");
    let sr = sync(&mut c, "g-static", gen, &new, Some("inst-1"), vec![]);
    assert_eq!(sr.error_code, NONE);
    assert_eq!(sr.assignment, a, "keeps its assignment");
    assert_eq!(
        heartbeat(&mut c, "g-static", gen, &new, Some("inst-1")),
        NONE
    );
    assert_eq!(
        heartbeat(&mut c, "g-static", gen, &old, Some("inst-1")),
        FENCED_INSTANCE_ID
    );
    assert_eq!(
        heartbeat(&mut c, "g-static", gen, &old, None),
        UNKNOWN_MEMBER_ID
    );
}

#[test]
fn a_member_that_stops_heartbeating_is_expired_and_its_partitions_move() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "expire6", 6);
    let c1 = group_consumer(&b, "g-expire", &[]);
    c1.subscribe(&["expire6"]).unwrap();
    poll_until(&[&c1], "first member takes all", |a| {
        partitions_shared(a, 6)
    });
    // A raw member joins (librdkafka always leaves on close, so it cannot simulate a crash).
    let b2 = b.clone();
    let raw_member = std::thread::spawn(move || {
        let mut c = coordinator_conn(&b2, "g-expire");
        let r = join(&mut c, "g-expire", "", None, &["expire6"]);
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
        let id = r.member_id.to_string();
        let r = join(&mut c, "g-expire", &id, None, &["expire6"]);
        assert_eq!(r.error_code, NONE);
        let sr = sync(&mut c, "g-expire", r.generation_id, &id, None, vec![]);
        assert_eq!(sr.error_code, NONE);
        // ...and then goes silent: no heartbeat, no leave.
        sr.assignment.len()
    });
    poll_until(&[&c1], "raw member gets a share", |a| a[0].len() == 3);
    assert!(
        raw_member.join().unwrap() > 0,
        "raw member got an assignment"
    );
    poll_until(&[&c1], "expired member's partitions return", |a| {
        partitions_shared(a, 6)
    });
}

#[test]
fn list_describe_and_delete_groups() {
    let s = Server::start(&[]);
    let b = s.bootstrap();
    create_topic(&b, "adm", 2);
    produce(&b, "adm", 2, 5);
    {
        let c = group_consumer(&b, "g-admin", &[]);
        c.subscribe(&["adm"]).unwrap();
        poll_until(&[&c], "assigned", |a| partitions_shared(a, 2));
        // Describe while stable: one member with an assignment.
        let mut conn = coordinator_conn(&b, "g-admin");
        let mut req = DescribeGroupsRequest::default();
        req.groups.push(GroupId(sb("g-admin")));
        req.groups.push(GroupId(sb("no-such-group")));
        let r: DescribeGroupsResponse =
            raw::call(&mut conn, ApiKey::DescribeGroups, 5, &req).unwrap();
        assert_eq!(r.groups[0].error_code, NONE);
        assert_eq!(r.groups[0].group_state.to_string(), "Stable");
        assert_eq!(r.groups[0].protocol_type.to_string(), "consumer");
        assert_eq!(r.groups[0].members.len(), 1);
        assert!(!r.groups[0].members[0].member_assignment.is_empty());
        // Kafka reports the member's address as InetAddress.toString(): "/<ip>".
        assert_eq!(r.groups[0].members[0].client_host.to_string(), "/127.0.0.1");
        assert_eq!(r.groups[1].group_state.to_string(), "Dead");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("adm", 0, Offset::Offset(3))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).expect("commit");
    }
    let mut conn = raw::connect(&b).unwrap();
    let list = |conn: &mut TcpStream| -> Vec<(String, String, String)> {
        let mut req = ListGroupsRequest::default();
        req.states_filter = vec![];
        let r: ListGroupsResponse = raw::call(conn, ApiKey::ListGroups, 4, &req).unwrap();
        assert_eq!(r.error_code, NONE);
        r.groups
            .iter()
            .map(|g| {
                (
                    g.group_id.0.to_string(),
                    g.protocol_type.to_string(),
                    g.group_state.to_string(),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = list(&mut conn);
        if l.contains(&("g-admin".into(), "consumer".into(), "Empty".into())) {
            break;
        }
        assert!(Instant::now() < deadline, "ListGroups: {l:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let res = block_on(admin(&b).delete_groups(&["g-admin"], &AdminOptions::new())).unwrap();
    assert!(res[0].is_ok(), "{res:?}");
    assert!(!list(&mut conn).iter().any(|g| g.0 == "g-admin"));
    let mut conn = coordinator_conn(&b, "g-admin");
    let mut req = DeleteGroupsRequest::default();
    req.groups_names.push(GroupId(sb("g-admin")));
    let r: DeleteGroupsResponse = raw::call(&mut conn, ApiKey::DeleteGroups, 2, &req).unwrap();
    assert_eq!(r.results[0].error_code, GROUP_ID_NOT_FOUND);
    // Its offsets went with it.
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(sb("g-admin"));
    req.topics = None;
    let r: OffsetFetchResponse = raw::call(&mut conn, ApiKey::OffsetFetch, 7, &req).unwrap();
    assert!(r.topics.is_empty(), "{r:?}");
    let _ = NON_EMPTY_GROUP;
}

// ---- durable offsets: expiry and compaction -------------------------------------------------

/// Commits `offsets` of `topic` for `group`; per partition error codes.
fn commit_offsets(
    s: &mut TcpStream,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(sb(group));
    req.generation_id_or_member_epoch = generation;
    req.member_id = sb(member);
    let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(sb(topic));
    for &(partition, offset) in offsets {
        let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = offset;
        t.partitions.push(p);
    }
    req.topics.push(t);
    let r: OffsetCommitResponse = raw::call(s, ApiKey::OffsetCommit, 7, &req).unwrap();
    r.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// Every committed offset of `group` as (topic, partition) → offset, or the group-level error
/// (COORDINATOR_LOAD_IN_PROGRESS while a restarted coordinator loads).
fn committed_offsets(
    s: &mut TcpStream,
    group: &str,
) -> Result<std::collections::BTreeMap<(String, i32), i64>, i16> {
    let mut req = OffsetFetchRequest::default();
    let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
    g.group_id = GroupId(sb(group));
    g.topics = None;
    req.groups.push(g);
    let r: OffsetFetchResponse = raw::call(s, ApiKey::OffsetFetch, 8, &req).unwrap();
    if r.groups[0].error_code != NONE {
        return Err(r.groups[0].error_code);
    }
    Ok(r.groups[0]
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| ((t.name.to_string(), p.partition_index), p.committed_offset))
        })
        .collect())
}

/// ListOffsets of one partition: -2 earliest (the log start offset), -1 latest. Retried while
/// a just restarted broker has no leader for it yet.
fn list_offset(bootstrap: &str, topic: &str, partition: i32, timestamp: i64) -> i64 {
    let mut offset = -1;
    wait_for("ListOffsets to answer", || {
        match try_list_offset(bootstrap, topic, partition, timestamp) {
            Ok(o) => {
                offset = o;
                true
            }
            Err(code) => {
                eprintln!("ListOffsets {topic}-{partition}: error {code} (retried)");
                false
            }
        }
    });
    offset
}

fn try_list_offset(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<i64, i16> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut s = raw::connect(bootstrap).unwrap();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(sb(topic));
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    p.current_leader_epoch = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    let r: ListOffsetsResponse = raw::call(&mut s, ApiKey::ListOffsets, 4, &req).unwrap();
    let p = &r.topics[0].partitions[0];
    match p.error_code {
        NONE => Ok(p.offset),
        code => Err(code),
    }
}

/// Polls `check` every 200 ms until it returns true, failing after 60 s with `what`.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn offsets_of_an_empty_group_expire_and_a_live_groups_do_not() {
    let s = Server::start(&[
        "--offsets-retention-ms",
        "1500",
        "--offsets-retention-check-interval-ms",
        "200",
    ]);
    let b = s.bootstrap();
    create_topic(&b, "raw", 1);
    // A group with a live member commits first...
    let mut live = coordinator_conn(&b, "g-live");
    let (member, gen) = join_alone(&mut live, "g-live");
    assert_eq!(commit(&mut live, "g-live", gen, &member, 5), NONE);
    // ...then a group without members (a consumer using assign(), generation -1).
    let mut idle = coordinator_conn(&b, "g-idle");
    assert_eq!(commit(&mut idle, "g-idle", -1, "", 7), NONE);
    assert_eq!(fetch_committed(&mut idle, "g-idle").0, 7);

    wait_for("the empty group's offsets to expire", || {
        assert_eq!(heartbeat(&mut live, "g-live", gen, &member, None), NONE);
        fetch_committed(&mut idle, "g-idle").0 == -1
    });
    // The live group's commit is older than the expired one, and still there.
    assert_eq!(fetch_committed(&mut live, "g-live").0, 5);
    // A group left with no offsets and no members is removed.
    let mut req = DescribeGroupsRequest::default();
    req.groups.push(GroupId(sb("g-idle")));
    let r: DescribeGroupsResponse = raw::call(&mut idle, ApiKey::DescribeGroups, 5, &req).unwrap();
    assert_eq!(r.groups[0].group_state.to_string(), "Dead");

    // Once its member leaves, the live group is empty and its offsets expire too (retention
    // counts from the later of the commit and the moment the group became empty).
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(sb("g-live"));
    let mut m = leave_group_request::MemberIdentity::default();
    m.member_id = sb(&member);
    req.members.push(m);
    let r: LeaveGroupResponse = raw::call(&mut live, ApiKey::LeaveGroup, 4, &req).unwrap();
    assert_eq!(r.error_code, NONE);
    assert_eq!(fetch_committed(&mut live, "g-live").0, 5);
    wait_for("the left group's offsets to expire", || {
        fetch_committed(&mut live, "g-live").0 == -1
    });
}

#[test]
fn offsets_log_is_compacted_and_the_latest_commits_survive_sigkill() {
    let mut s = Server::start(&[
        "--offsets-topic-num-partitions",
        "1",
        "--offsets-topic-segment-bytes",
        "4096",
        "--log-cleaner-backoff-ms",
        "100",
    ]);
    let b = s.bootstrap();
    create_topic(&b, "compact", 4);
    let groups = ["g-c0", "g-c1", "g-c2"];
    let mut conn = coordinator_conn(&b, groups[0]);
    let round = |conn: &mut TcpStream, r: i64| {
        for (gi, g) in groups.iter().enumerate() {
            let offsets: Vec<(i32, i64)> = (0..4)
                .map(|p| (p, r * 100 + gi as i64 * 10 + p as i64))
                .collect();
            let codes = commit_offsets(conn, g, -1, "", "compact", &offsets);
            assert_eq!(codes, vec![NONE; 4], "round {r}, {g}");
        }
    };
    // 3 groups x 4 partitions = 12 live keys; 150 rounds write 1,800 offset records.
    for r in 1..=150 {
        round(&mut conn, r);
    }
    let written = list_offset(&b, "__consumer_offsets", 0, -1);
    assert!(written >= 1800, "{written} records in __consumer_offsets");
    // The log cleaner keeps the latest record of each of the 12 keys in the sealed segments:
    // what is left is about those plus the active segment (at most 4 KiB).
    let dir = s.data_dir.join("__consumer_offsets-0");
    let on_disk = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    wait_for("__consumer_offsets to be compacted", || {
        on_disk(&dir) < 16 << 10
    });
    // Commits after the compaction replay on top of it.
    round(&mut conn, 151);
    let start_before = list_offset(&b, "__consumer_offsets", 0, -2);
    // Our connection closes first, so no server-side socket of the killed broker lingers on
    // its port (the restarted broker binds it again).
    drop(conn);
    std::thread::sleep(Duration::from_millis(500));
    s.restart(); // SIGKILL, start again on the same data dir
    let b = s.bootstrap();
    assert!(
        list_offset(&b, "__consumer_offsets", 0, -2) >= start_before,
        "the log start offset is durable"
    );
    let mut conn = coordinator_conn(&b, groups[0]);
    for (gi, g) in groups.iter().enumerate() {
        let mut got = Err(0);
        wait_for("the coordinator to load", || {
            got = committed_offsets(&mut conn, g);
            got != Err(COORDINATOR_LOAD_IN_PROGRESS)
        });
        let expected: std::collections::BTreeMap<(String, i32), i64> = (0..4)
            .map(|p| {
                (
                    ("compact".to_string(), p),
                    15100 + gi as i64 * 10 + p as i64,
                )
            })
            .collect();
        assert_eq!(got, Ok(expected), "{g} after the restart");
    }
}
