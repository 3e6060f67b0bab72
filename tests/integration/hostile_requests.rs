//! Hostile clients at the Kafka port of a real chronik-server: lying array counts and length
//! prefixes, silent connections, oversized fetches, strangers fetching as followers, wrong broker proofs. Each case
//! checks the answer Kafka gives, that nothing was written, and that the broker keeps serving.

#![allow(clippy::result_large_err)]

use crate::common::cluster_util::*;
use crate::common::{raw, Cluster, Server};
use chronik::net::broker_auth::ClientAuth;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::NewTopic;
use rdkafka::admin::TopicReplication;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CORES: &[&str] = &["--cores", "2"];

fn with_cores(extra: &[&'static str]) -> Vec<&'static str> {
    CORES.iter().chain(extra).copied().collect()
}

/// Reads until the server closes the connection (true) or `secs` pass (false).
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

fn still_serves(addr: &str) {
    let m = raw::metadata(addr, None).expect("the broker still answers Metadata");
    assert_eq!(m.brokers.len(), 1);
}

/// A request header for `key`/`version` (header v1: non-flexible) followed by `body`, framed.
fn frame_with_body(key: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    frame_with_body_key(key as i16, version, body)
}

/// `frame_with_body` for any key number.
fn frame_with_body_key(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&key.to_be_bytes());
    hdr.extend_from_slice(&version.to_be_bytes());
    hdr.extend_from_slice(&9i32.to_be_bytes());
    hdr.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    f.extend_from_slice(&((hdr.len() + body.len()) as i32).to_be_bytes());
    f.extend_from_slice(&hdr);
    f.extend_from_slice(body);
    f
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn array_counts_and_lengths_beyond_the_bytes_sent_close_only_that_connection() {
    let s = Server::start(CORES);
    let addr = s.bootstrap();
    // Metadata v1: topics array claiming 2^31-1 entries, in 4 bytes.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "metadata topics 2^31-1",
            frame_with_body(ApiKey::Metadata, 1, &i32::MAX.to_be_bytes()),
        ),
        (
            // CreateTopics v2: topics array claiming 2^31-1 entries.
            "create topics 2^31-1",
            frame_with_body(ApiKey::CreateTopics, 2, &i32::MAX.to_be_bytes()),
        ),
        (
            // SyncGroup v0: group "", generation 0, member "", one assignment whose bytes
            // claim 2 GiB.
            "bytes field 2^31-1",
            {
                let mut body = Vec::new();
                body.extend_from_slice(&0i16.to_be_bytes());
                body.extend_from_slice(&0i32.to_be_bytes());
                body.extend_from_slice(&0i16.to_be_bytes());
                body.extend_from_slice(&1i32.to_be_bytes());
                body.extend_from_slice(&0i16.to_be_bytes());
                body.extend_from_slice(&i32::MAX.to_be_bytes());
                frame_with_body(ApiKey::SyncGroup, 0, &body)
            },
        ),
        (
            // Metadata v9 (flexible; header v2 needs a tag buffer, so send one): compact
            // array length as a varint of 2^32-1.
            "compact array 2^32-1",
            {
                let mut body = vec![0u8]; // header tagged fields
                body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
                frame_with_body(ApiKey::Metadata, 9, &body)
            },
        ),
    ];
    for (what, bytes) in cases {
        let mut c = raw::connect(&addr).expect("connect");
        c.write_all(&bytes).expect("send");
        assert!(
            closed_within(&mut c, 10),
            "{what}: a request that cannot be decoded closes its connection"
        );
        still_serves(&addr);
    }
    // The process is alive and the same connection-less client still works.
    let mut srv = s;
    assert!(srv.child.as_mut().unwrap().try_wait().unwrap().is_none());
}

#[test]
fn a_huge_length_prefix_allocates_nothing_before_the_bytes_arrive() {
    let s = Server::start(CORES);
    let addr = s.bootstrap();
    let pid = s.child.as_ref().unwrap().id();
    still_serves(&addr);
    let before = vm_kib(pid, "VmData:");
    // 40 connections each announcing a 100 MB frame (just under the 100 MiB limit) and sending
    // 1 KiB of it: the broker must hold what arrived, not 4 GB.
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut c = raw::connect(&addr).expect("connect");
        c.write_all(&100_000_000i32.to_be_bytes()).unwrap();
        c.write_all(&[0u8; 1024]).unwrap();
        conns.push(c);
    }
    std::thread::sleep(Duration::from_secs(1));
    still_serves(&addr);
    let after = vm_kib(pid, "VmData:");
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 400,
        "40 announced 100 MB frames grew the broker's data by {grown_mib} MiB"
    );
}

#[test]
fn idle_connections_close_after_connections_max_idle_ms_and_busy_ones_stay() {
    let s = Server::start(&with_cores(&["--connections-max-idle-ms", "2000"]));
    let addr = s.bootstrap();
    let mut idle = raw::connect(&addr).expect("connect");
    let mut busy = raw::connect(&addr).expect("connect");
    // The busy one asks for metadata every 300 ms for 6 s.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let req = kafka_protocol::messages::MetadataRequest::default();
        let r: kafka_protocol::messages::MetadataResponse =
            raw::call(&mut busy, ApiKey::Metadata, 9, &req).expect("busy connection is served");
        assert_eq!(r.brokers.len(), 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        closed_within(&mut idle, 5),
        "a connection silent past connections.max.idle.ms is closed"
    );
    still_serves(&addr);
}

#[test]
fn idle_connections_give_back_their_read_buffers() {
    let s = Server::start(CORES);
    let addr = s.bootstrap();
    let pid = s.child.as_ref().unwrap().id();
    still_serves(&addr);
    std::thread::sleep(Duration::from_secs(3));
    let before = vm_kib(pid, "VmRSS:");
    let mut conns = Vec::new();
    for _ in 0..400 {
        let mut c = raw::connect(&addr).expect("connect");
        let req = kafka_protocol::messages::MetadataRequest::default();
        let _: kafka_protocol::messages::MetadataResponse =
            raw::call(&mut c, ApiKey::Metadata, 9, &req).expect("metadata");
        conns.push(c);
    }
    // Two sweeper ticks release the buffers of the now silent connections, a third hands
    // the memory back. On a loaded host the ticks come late, so look for up to 30 s.
    let per_conn = || vm_kib(pid, "VmRSS:").saturating_sub(before) * 1024 / conns.len() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    std::thread::sleep(Duration::from_secs(5));
    while per_conn() >= 64 * 1024 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    let per_conn = per_conn();
    eprintln!("resident memory per idle connection: {per_conn} bytes");
    assert!(
        per_conn < 64 * 1024,
        "an idle connection costs {per_conn} bytes of resident memory"
    );
    still_serves(&addr);
}

/// One Fetch (v11) of `topic`-0 from offset 10, claiming replica id `claimed`, on `s`.
fn follower_fetch(s: &mut std::net::TcpStream, topic: &str, claimed: i32) -> FetchResponse {
    raw::call(
        s,
        ApiKey::Fetch,
        11,
        &fetch_request(topic, claimed, 10, 1 << 20),
    )
    .expect("fetch")
}

fn fetch_request(topic: &str, replica_id: i32, offset: i64, max_bytes: i32) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(replica_id);
    req.max_wait_ms = 0;
    req.max_bytes = max_bytes;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.into()));
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.current_leader_epoch = -1;
    p.partition_max_bytes = max_bytes;
    t.partitions = vec![p];
    req.topics = vec![t];
    req
}

#[test]
fn fetch_answers_are_capped_by_the_brokers_fetch_max_bytes() {
    let s = Server::start(&with_cores(&["--fetch-max-bytes", "1048576"]));
    let addr = s.bootstrap();
    create(
        &addr,
        NewTopic::new("big", 1, TopicReplication::Fixed(1)).set("max.message.bytes", "300000"),
    );
    // 16 batches of ~200 KB: 3.2 MB in the partition.
    for _ in 0..16 {
        let batch = chronik_storage::testing::build_batch_of(20, 10_000, b'z', 1_700_000_000_000);
        let (err, _) = produce_batch(&addr, "big", 0, 1, 5000, batch.freeze());
        assert_eq!(err, 0);
    }
    let mut c = raw::connect(&addr).expect("connect");
    let r: FetchResponse = raw::call(
        &mut c,
        ApiKey::Fetch,
        11,
        &fetch_request("big", -1, 0, i32::MAX),
    )
    .expect("fetch");
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    let got = p.records.as_ref().map_or(0, |b| b.len());
    assert!(got > 0, "some records come back");
    // fetch.max.bytes, plus at most the one batch that crosses it.
    assert!(
        got <= 1_048_576 + 210_000,
        "a fetch asking for 2^31-1 bytes got {got} bytes past fetch.max.bytes"
    );
    // A consumer that asks for less gets no more than it asked (but at least one batch).
    let r: FetchResponse = raw::call(
        &mut c,
        ApiKey::Fetch,
        11,
        &fetch_request("big", -1, 0, 1000),
    )
    .expect("fetch");
    let got = r.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, |b| b.len());
    assert!(got > 0 && got < 210_000, "one batch for a tiny max: {got}");
}

#[test]
fn a_partition_that_cannot_be_opened_answers_storage_error_at_once_and_logs_it_once() {
    let s = Server::start(CORES);
    let addr = s.bootstrap();
    // A file where the partition's directory would go: its log cannot be opened.
    std::fs::write(s.data_dir.join("blocked-0"), b"not a directory").unwrap();
    create(
        &addr,
        NewTopic::new("blocked", 1, TopicReplication::Fixed(1)),
    );
    for _ in 0..10 {
        let started = Instant::now();
        let (err, _) = produce_once(&addr, "blocked", 0, 1, 5000, 1);
        assert_eq!(err, 56, "KAFKA_STORAGE_ERROR");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the produce is answered at once"
        );
    }
    still_serves(&addr);
    let log = std::fs::read_to_string(s.log_path()).unwrap_or_default();
    let times = log.matches("cannot open partition").count();
    if times != 1 {
        s.print_log_tail(40);
    }
    assert_eq!(times, 1, "the reason is logged once");
    // Another topic on the same broker is unaffected.
    create(&addr, NewTopic::new("fine", 1, TopicReplication::Fixed(1)));
    assert_eq!(produce_once(&addr, "fine", 0, 1, 5000, 3), (0, 0));
}

/// A connection that proved to broker `leader` that it is broker `me`, with `secret`.
fn cluster_secret(c: &Cluster) -> chronik_raft::secret::ClusterSecret {
    chronik_raft::secret::ClusterSecret::read_file(&c.secret_file).expect("the cluster's secret")
}

/// The committed high watermark as a consumer sees it.
fn consumer_hw(addr: &str, topic: &str) -> i64 {
    let mut s = raw::connect(addr).unwrap();
    fetch_once(&mut s, -1, topic, 0, 0).high_watermark
}

#[test]
fn only_proven_brokers_in_the_replica_set_may_fetch_as_followers() {
    let mut c = Cluster::start(3, &with_cores(&[]));
    let b1 = c.node(1).bootstrap();
    // Replicas on brokers 1 (leader) and 2; broker 3 holds none.
    create(
        &b1,
        NewTopic::new("guarded", 1, TopicReplication::Variable(&[&[1, 2]])),
    );
    wait_until("leader 1", 30, || leader_of(&b1, "guarded", 0) == 1);
    assert_eq!(produce_once(&b1, "guarded", 0, -1, 10_000, 5), (0, 0));
    // Freeze the real follower: the high watermark can only move by a follower's fetch now.
    c.node(2).signal(libc::SIGSTOP);
    assert_eq!(produce_once(&b1, "guarded", 0, 1, 10_000, 5).0, 0);
    assert_eq!(consumer_hw(&b1, "guarded"), 5);
    // Unproven connections claiming any broker id, the real follower's included: Kafka's
    // answer to a follower fetch without ClusterAction, TOPIC_AUTHORIZATION_FAILED.
    for claimed in [2, 3, 1, 99] {
        let mut s = raw::connect(&b1).unwrap();
        let r = follower_fetch(&mut s, "guarded", claimed);
        let p = &r.responses[0].partitions[0];
        assert_eq!(
            p.error_code, 29,
            "replica id {claimed}: TOPIC_AUTHORIZATION_FAILED"
        );
        assert!(
            p.records.as_ref().is_none_or(|r| r.is_empty()),
            "nothing read"
        );
    }
    // Proven brokers: broker 3 is no replica (NOT_LEADER_OR_FOLLOWER), and a connection proven
    // as 3 may not fetch as 2.
    let secret = cluster_secret(&c);
    let mut s = proven_as(&b1, &secret, 3, 1);
    for (claimed, code) in [(3, 6), (2, 29)] {
        let r = follower_fetch(&mut s, "guarded", claimed);
        assert_eq!(
            r.responses[0].partitions[0].error_code, code,
            "replica id {claimed} on a connection proven as 3"
        );
    }
    // ListOffsets claiming the follower reads the committed end, not the log end.
    let mut req = kafka_protocol::messages::ListOffsetsRequest::default();
    req.replica_id = BrokerId(2);
    let mut t = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_static_str("guarded"));
    let mut p = kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    let mut s = raw::connect(&b1).unwrap();
    let r: kafka_protocol::messages::ListOffsetsResponse =
        raw::call(&mut s, ApiKey::ListOffsets, 4, &req).expect("list offsets");
    assert_eq!(
        r.topics[0].partitions[0].offset, 5,
        "the high watermark, not the log end (10)"
    );
    assert_eq!(
        consumer_hw(&b1, "guarded"),
        5,
        "no stranger's fetch moved the high watermark"
    );
    // The real follower, back, proves itself and replicates: the high watermark moves, acks=all
    // goes on and it stays in the ISR.
    c.node(2).signal(libc::SIGCONT);
    wait_until("high watermark 10", 30, || {
        consumer_hw(&b1, "guarded") == 10
    });
    assert_eq!(produce_once(&b1, "guarded", 0, -1, 10_000, 5), (0, 10));
    assert_eq!(consumer_hw(&b1, "guarded"), 15);
    let mut isr = isr_of(&b1, "guarded", 0);
    isr.sort();
    assert_eq!(isr, vec![1, 2]);
}

/// ApiVersions v3's key list.
fn advertised_keys(addr: &str) -> Vec<i16> {
    let mut s = raw::connect(addr).unwrap();
    let r: kafka_protocol::messages::ApiVersionsResponse = raw::call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    )
    .expect("api versions");
    r.api_keys.iter().map(|k| k.api_key).collect()
}

/// The error code of an answer of the broker-authentication API (after the length).
fn auth_error(answer: &[u8]) -> i16 {
    i16::from_be_bytes([answer[4], answer[5]])
}

#[test]
fn broker_authentication_needs_the_cluster_secret_and_a_wrong_proof_closes_the_connection() {
    let s = Server::start(CORES);
    let addr = s.bootstrap();
    assert!(
        !advertised_keys(&addr).contains(&chronik::net::broker_auth::API_KEY),
        "ApiVersions does not advertise the internal API"
    );
    // A wrong secret: the proof is answered SASL_AUTHENTICATION_FAILED, then the connection
    // closes.
    let stranger = chronik_raft::secret::ClusterSecret::generate();
    let mut c = raw::connect(&addr).unwrap();
    let mut auth = ClientAuth::new(2, 1);
    c.write_all(&auth.hello(1)).unwrap();
    let answer = raw::read_response(&mut c).expect("challenge");
    assert_eq!(auth_error(&answer), 0);
    c.write_all(&auth.proof(&stranger, 1, &answer).unwrap())
        .unwrap();
    let answer = raw::read_response(&mut c).expect("answer");
    assert_eq!(auth_error(&answer), 58, "SASL_AUTHENTICATION_FAILED");
    assert!(closed_within(&mut c, 10), "closed after a wrong proof");
    // A proof with no challenge before it: ILLEGAL_SASL_STATE, closed.
    let mut c = raw::connect(&addr).unwrap();
    let mut body = vec![1u8];
    body.extend_from_slice(&[0; 32]);
    c.write_all(&frame_with_body_key(
        chronik::net::broker_auth::API_KEY,
        0,
        &body,
    ))
    .unwrap();
    let answer = raw::read_response(&mut c).expect("answer");
    assert_eq!(auth_error(&answer), 34, "ILLEGAL_SASL_STATE");
    assert!(closed_within(&mut c, 10));
    // An oversized hello: INVALID_REQUEST, closed.
    let mut c = raw::connect(&addr).unwrap();
    c.write_all(&frame_with_body_key(
        chronik::net::broker_auth::API_KEY,
        0,
        &[0; 4096],
    ))
    .unwrap();
    let answer = raw::read_response(&mut c).expect("answer");
    assert_eq!(auth_error(&answer), 42, "INVALID_REQUEST");
    assert!(closed_within(&mut c, 10));
    // The node's own secret (a single node generates it in its data dir) is accepted and the
    // connection goes on serving Kafka requests.
    let secret = chronik_raft::secret::ClusterSecret::read_file(
        &s.data_dir.join(chronik_raft::secret::SECRET_FILE),
    )
    .expect("the node's secret");
    let mut c = proven_as(&addr, &secret, 2, 1);
    let m: kafka_protocol::messages::MetadataResponse = raw::call(
        &mut c,
        ApiKey::Metadata,
        9,
        &kafka_protocol::messages::MetadataRequest::default(),
    )
    .expect("metadata on a proven connection");
    assert_eq!(m.brokers.len(), 1);
    still_serves(&addr);
}
