//! Hostile clients at the Kafka port of a real chronik-server: lying array counts and length
//! prefixes, silent connections, oversized fetches, strangers fetching as followers. Each case
//! checks the answer Kafka gives, that nothing was written, and that the broker keeps serving.

#![allow(clippy::result_large_err)]

mod common;

use common::cluster_util::*;
use common::{raw, Cluster, Server};
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
    let mut f = Vec::new();
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&(key as i16).to_be_bytes());
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
    // the memory back.
    std::thread::sleep(Duration::from_secs(5));
    let after = vm_kib(pid, "VmRSS:");
    let per_conn = after.saturating_sub(before) * 1024 / conns.len() as u64;
    eprintln!("resident memory per idle connection: {per_conn} bytes");
    assert!(
        per_conn < 64 * 1024,
        "an idle connection costs {per_conn} bytes of resident memory"
    );
    still_serves(&addr);
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

#[test]
fn only_brokers_in_the_replica_set_may_fetch_as_followers() {
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
    let hw_before = {
        let mut s = raw::connect(&b1).unwrap();
        fetch_once(&mut s, -1, "guarded", 0, 0).high_watermark
    };
    assert_eq!(hw_before, 5);
    for stranger in [3, 1, 99] {
        let mut s = raw::connect(&b1).unwrap();
        let r: FetchResponse = raw::call(
            &mut s,
            ApiKey::Fetch,
            11,
            &fetch_request("guarded", stranger, 10, 1 << 20),
        )
        .expect("fetch");
        assert_eq!(
            r.responses[0].partitions[0].error_code, 6,
            "replica id {stranger}: NOT_LEADER_OR_FOLLOWER"
        );
    }
    let hw_after = {
        let mut s = raw::connect(&b1).unwrap();
        fetch_once(&mut s, -1, "guarded", 0, 0).high_watermark
    };
    assert_eq!(
        hw_after, 5,
        "a stranger's fetch did not move the high watermark"
    );
    c.node(2).signal(libc::SIGCONT);
    wait_until("high watermark 10", 30, || {
        let mut s = raw::connect(&b1).unwrap();
        fetch_once(&mut s, -1, "guarded", 0, 0).high_watermark == 10
    });
}
