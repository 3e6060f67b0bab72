//! Incremental fetch sessions (KIP-227) at the Kafka port, in raw Fetch v12 frames: a full
//! fetch opens a session, incremental fetches list only partitions with news, and bad epochs
//! or unknown session ids get Kafka's error codes.

use crate::common::cluster_util::*;
use crate::common::{raw, Server};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use std::net::TcpStream;

const TOPIC: &str = "sessions";
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// The topic's id (Metadata v12).
fn topic_id(addr: &str, topic: &str) -> uuid::Uuid {
    let mut s = raw::connect(addr).expect("connect");
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let md: MetadataResponse = raw::call(&mut s, ApiKey::Metadata, 12, &req).expect("metadata");
    md.topics[0].topic_id
}

/// A consumer Fetch in session `id` at `epoch`, of `parts` (partition, offset) of the topic
/// `topic` names (by name or by id; the caller sets it), waiting at most `max_wait_ms`.
fn session_request(
    id: i32,
    epoch: i32,
    mut topic: FetchTopic,
    parts: &[(i32, i64)],
    max_wait_ms: i32,
) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 1 << 20;
    req.session_id = id;
    req.session_epoch = epoch;
    if !parts.is_empty() {
        topic.partitions = parts
            .iter()
            .map(|(p, offset)| {
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.fetch_offset = *offset;
                fp.current_leader_epoch = -1;
                fp.partition_max_bytes = 1 << 20;
                fp
            })
            .collect();
        req.topics = vec![topic];
    }
    req
}

/// A consumer Fetch v13 (topics by id) of `parts` (partition, offset) in session `id`.
fn fetch_by_id(
    s: &mut TcpStream,
    topic: uuid::Uuid,
    id: i32,
    epoch: i32,
    parts: &[(i32, i64)],
) -> FetchResponse {
    let mut t = FetchTopic::default();
    t.topic_id = topic;
    let req = session_request(id, epoch, t, parts, 0);
    raw::call(s, ApiKey::Fetch, 13, &req).expect("fetch")
}

/// A consumer Fetch v12 of `parts` (partition, offset) in session `id` at `epoch`, forgetting
/// `forget`.
fn fetch(
    s: &mut TcpStream,
    id: i32,
    epoch: i32,
    parts: &[(i32, i64)],
    forget: &[i32],
    max_wait_ms: i32,
) -> FetchResponse {
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str(TOPIC));
    let mut req = session_request(id, epoch, t, parts, max_wait_ms);
    if !forget.is_empty() {
        let mut f = ForgottenTopic::default();
        f.topic = TopicName(StrBytes::from_static_str(TOPIC));
        f.partitions = forget.to_vec();
        req.forgotten_topics_data = vec![f];
    }
    raw::call(s, ApiKey::Fetch, 12, &req).expect("fetch")
}

/// (partition, high watermark, has records) of every partition a response lists.
fn listed(r: &FetchResponse) -> Vec<(i32, i64, bool)> {
    let mut out: Vec<_> = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
            let records = p.records.as_ref().is_some_and(|b| !b.is_empty());
            (p.partition_index, p.high_watermark, records)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn an_incremental_fetch_lists_only_the_partition_with_new_data_and_bad_sessions_get_kafkas_errors()
{
    let server = Server::start(&[]);
    let addr = server.bootstrap();
    create(&addr, NewTopic::new(TOPIC, 3, TopicReplication::Fixed(1)));
    assert_eq!(produce_once(&addr, TOPIC, 0, 1, 5000, 2).0, 0);

    let mut s = raw::connect(&addr).expect("connect");
    // A full fetch at epoch 0 opens a session and lists every partition.
    let full = fetch(&mut s, 0, 0, &[(0, 0), (1, 0), (2, 0)], &[], 0);
    assert_eq!(full.error_code, 0);
    let id = full.session_id;
    assert!(id > 0, "a session was granted");
    assert_eq!(
        listed(&full),
        vec![(0, 2, true), (1, 0, false), (2, 0, false)]
    );

    // Partition 0 moves on to its end: nothing is new anywhere, so nothing is listed (after
    // the long poll).
    let quiet = fetch(&mut s, id, 1, &[(0, 2)], &[], 200);
    assert_eq!((quiet.error_code, quiet.session_id), (0, id));
    assert_eq!(listed(&quiet), vec![]);

    // New data on partition 2 only: the next fetch names no partition and lists just that one.
    assert_eq!(produce_once(&addr, TOPIC, 2, 1, 5000, 3).0, 0);
    let news = fetch(&mut s, id, 2, &[], &[], 5000);
    assert_eq!((news.error_code, news.session_id), (0, id));
    assert_eq!(listed(&news), vec![(2, 3, true)]);

    // A wrong epoch: INVALID_FETCH_SESSION_EPOCH, top level, nothing listed; the session stays.
    for bad in [2, 7, -5] {
        let r = fetch(&mut s, id, bad, &[], &[], 0);
        assert_eq!(
            (r.error_code, r.session_id, r.responses.len()),
            (INVALID_FETCH_SESSION_EPOCH, 0, 0),
            "epoch {bad}"
        );
    }
    // An unknown session id: FETCH_SESSION_ID_NOT_FOUND.
    let other = if id == i32::MAX { 1 } else { id + 1 };
    let r = fetch(&mut s, other, 1, &[], &[], 0);
    assert_eq!(
        (r.error_code, r.responses.len()),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );
    // Sessions belong to their connection: another one does not know it.
    let mut s2 = raw::connect(&addr).expect("connect");
    let r = fetch(&mut s2, id, 3, &[], &[], 0);
    assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND);

    // Forgetting partition 2 (and moving it to its end): its new data is not listed any more.
    let r = fetch(&mut s, id, 3, &[], &[2], 0);
    assert_eq!(r.error_code, 0);
    assert_eq!(listed(&r), vec![], "nothing new in what is left");
    assert_eq!(produce_once(&addr, TOPIC, 2, 1, 5000, 1).0, 0);
    assert_eq!(produce_once(&addr, TOPIC, 1, 1, 5000, 1).0, 0);
    let r = fetch(&mut s, id, 4, &[], &[], 5000);
    assert_eq!(
        listed(&r),
        vec![(1, 1, true)],
        "only the partition still in the session"
    );

    // Epoch -1 closes the session and answers in full, sessionless.
    let r = fetch(&mut s, id, -1, &[(0, 0)], &[], 0);
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(listed(&r), vec![(0, 2, true)]);
    let r = fetch(&mut s, id, 5, &[], &[], 0);
    assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND);
}

#[test]
fn a_session_of_fetch_v13_keeps_topics_by_id_and_refuses_a_fetch_by_name() {
    let server = Server::start(&[]);
    let addr = server.bootstrap();
    create(&addr, NewTopic::new(TOPIC, 2, TopicReplication::Fixed(1)));
    let topic = topic_id(&addr, TOPIC);
    assert!(!topic.is_nil());
    assert_eq!(produce_once(&addr, TOPIC, 1, 1, 5000, 2).0, 0);

    let mut s = raw::connect(&addr).expect("connect");
    let full = fetch_by_id(&mut s, topic, 0, 0, &[(0, 0), (1, 2)]);
    assert_eq!(full.error_code, 0);
    let id = full.session_id;
    assert!(id > 0);
    assert_eq!(full.responses[0].topic_id, topic);
    assert_eq!(listed(&full), vec![(0, 0, false), (1, 2, false)]);

    assert_eq!(produce_once(&addr, TOPIC, 0, 1, 5000, 1).0, 0);
    let news = fetch_by_id(&mut s, topic, id, 1, &[]);
    assert_eq!((news.error_code, news.session_id), (0, id));
    assert_eq!(news.responses[0].topic_id, topic);
    assert_eq!(listed(&news), vec![(0, 1, true)]);

    // The same session named by a fetch that names topics by name: Kafka's
    // FETCH_SESSION_TOPIC_ID_ERROR.
    let r = fetch(&mut s, id, 2, &[], &[], 0);
    assert_eq!(r.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
    // An id the broker does not know stays in the session with UNKNOWN_TOPIC_ID.
    let unknown = uuid::Uuid::from_u128(7);
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.session_id = id;
    req.session_epoch = 2;
    let mut t = FetchTopic::default();
    t.topic_id = unknown;
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.current_leader_epoch = -1;
    t.partitions = vec![fp];
    req.topics = vec![t];
    let r: FetchResponse = raw::call(&mut s, ApiKey::Fetch, 13, &req).expect("fetch");
    assert_eq!(r.error_code, 0);
    let errs: Vec<(uuid::Uuid, i16)> = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, p.error_code)))
        .collect();
    assert!(errs.contains(&(unknown, 100)), "{errs:?}");
}
