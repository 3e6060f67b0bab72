//! Helpers for tests against clusters of real nodes: metadata lookups, each node's own copy
//! of a partition (debug replica id -2), and reading a partition back with librdkafka.

use super::raw;
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FAST: &[&str] = &[
    "--broker-session-timeout-ms",
    "1500",
    "--broker-heartbeat-interval-ms",
    "200",
    "--replica-lag-time-max-ms",
    "4000",
];

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin")
}

pub fn create(bootstrap: &str, topic: NewTopic) {
    let r = block_on(admin(bootstrap).create_topics(
        &[topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(15))),
    ))
    .expect("create_topics");
    assert!(r[0].is_ok(), "{r:?}");
}

pub fn delete(bootstrap: &str, topic: &str) {
    let r = block_on(admin(bootstrap).delete_topics(
        &[topic],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("delete_topics");
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
}

pub fn metadata(addr: &str, topic: &str) -> MetadataResponse {
    raw::metadata(addr, Some(vec![topic])).expect("metadata")
}

pub fn leader_of(addr: &str, topic: &str, partition: i32) -> i32 {
    metadata(addr, topic).topics[0].partitions[partition as usize]
        .leader_id
        .0
}

pub fn isr_of(addr: &str, topic: &str, partition: i32) -> Vec<i32> {
    let mut v: Vec<i32> = metadata(addr, topic).topics[0].partitions[partition as usize]
        .isr_nodes
        .iter()
        .map(|b| b.0)
        .collect();
    v.sort();
    v
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() + Duration::from_millis(150) >= deadline {
            eprintln!("still waiting for: {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This node's own log end offset for a partition (debug replica id -2), leader or follower.
pub fn local_leo(addr: &str, topic: &str, partition: i32) -> i64 {
    let Ok(mut s) = raw::connect(addr) else {
        return -1;
    };
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-2);
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.into()));
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = -1;
    p.current_leader_epoch = -1;
    t.partitions = vec![p];
    req.topics = vec![t];
    match raw::call::<_, ListOffsetsResponse>(&mut s, ApiKey::ListOffsets, 4, &req) {
        Ok(r) if r.topics[0].partitions[0].error_code == 0 => r.topics[0].partitions[0].offset,
        _ => -1,
    }
}

/// This node's raw copy of a partition below `until` (debug fetch), batch bytes concatenated.
pub fn local_bytes(addr: &str, topic: &str, partition: i32, until: i64) -> Vec<u8> {
    local_bytes_from(addr, topic, partition, 0, until)
}

/// `local_bytes` from offset `from` (a log whose start is above 0).
pub fn local_bytes_from(addr: &str, topic: &str, partition: i32, from: i64, until: i64) -> Vec<u8> {
    let mut s = raw::connect(addr).expect("connect");
    let mut out = Vec::new();
    let mut offset = from;
    while offset < until {
        let pd = fetch_once(&mut s, -2, topic, partition, offset);
        assert_eq!(pd.error_code, 0);
        let recs: Bytes = pd.records.clone().unwrap_or_default();
        assert!(!recs.is_empty(), "no data at offset {offset} below {until}");
        // advance past the last whole batch
        let mut b = &recs[..];
        while b.len() >= 61 {
            let base = i64::from_be_bytes(b[0..8].try_into().unwrap());
            let len = i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
            let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap());
            if b.len() < 12 + len || base >= until {
                break;
            }
            out.extend_from_slice(&b[..12 + len]);
            offset = base + i64::from(last_delta) + 1;
            b = &b[12 + len..];
        }
    }
    out
}

/// One Fetch (v11) of a partition at `offset` as `replica_id` (-1: a consumer, -2: this node's
/// own copy), answered at once.
pub fn fetch_once(
    s: &mut std::net::TcpStream,
    replica_id: i32,
    topic: &str,
    partition: i32,
    offset: i64,
) -> PartitionData {
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(replica_id);
    req.max_wait_ms = 0;
    req.max_bytes = 8 << 20;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.into()));
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.current_leader_epoch = -1;
    p.partition_max_bytes = 8 << 20;
    t.partitions = vec![p];
    req.topics = vec![t];
    let mut r: FetchResponse = raw::call(s, ApiKey::Fetch, 11, &req).expect("fetch");
    r.responses.remove(0).partitions.remove(0)
}

/// One Produce (v9) of a batch of `records` small records; returns (error code, base offset).
pub fn produce_once(
    addr: &str,
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    records: usize,
) -> (i16, i64) {
    let batch = chronik_storage::testing::build_batch_of(records, 10, b'x', 1_700_000_000_000);
    produce_batch(addr, topic, partition, acks, timeout_ms, batch.freeze())
}

/// One Produce (v9) of `batch`; returns (error code, base offset).
pub fn produce_batch(
    addr: &str,
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    batch: Bytes,
) -> (i16, i64) {
    produce_batch_as(addr, None, topic, partition, acks, timeout_ms, batch)
}

/// `produce_batch` with the request's transactional id (transactional batches carry one).
pub fn produce_batch_as(
    addr: &str,
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    acks: i16,
    timeout_ms: i32,
    batch: Bytes,
) -> (i16, i64) {
    let mut s = raw::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_millis(
        timeout_ms as u64 + 30_000,
    )))
    .unwrap();
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(batch);
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_string(topic.into()));
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.transactional_id =
        transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string())));
    req.acks = acks;
    req.timeout_ms = timeout_ms;
    req.topic_data = vec![td];
    let r: ProduceResponse = raw::call(&mut s, ApiKey::Produce, 9, &req).expect("produce");
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A new idempotent producer id and epoch (InitProducerId v4, no transactional id).
pub fn init_producer_id(addr: &str) -> (i64, i16) {
    let mut s = raw::connect(addr).expect("connect");
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let r: InitProducerIdResponse =
        raw::call(&mut s, ApiKey::InitProducerId, 4, &req).expect("init producer id");
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

pub fn consume_values(bootstrap: &str, topic: &str, partition: i32, expect: usize) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "verify")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let v = std::str::from_utf8(m.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            out.push(v);
        }
    }
    // and nothing beyond
    let extra_deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < extra_deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(
                std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
        }
    }
    out
}

/// The ids of the records the brokers acknowledged.
#[derive(Clone, Default)]
pub struct Acks(Arc<Mutex<Vec<i64>>>);

impl Acks {
    /// How many records were acknowledged so far.
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = Box<i64>;
    fn delivery(&self, r: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        if r.is_ok() {
            self.0.lock().unwrap().push(*id);
        }
    }
}

/// Produces 0..n (as text) to partition 0 with an idempotent acks=all producer, calling `kill`
/// before record `kill_at`; returns the acknowledged ones.
pub fn produce_through(
    bootstrap: &str,
    topic: &str,
    n: i64,
    kill_at: i64,
    mut kill: impl FnMut(),
) -> Vec<i64> {
    let acks = Acks::default();
    let p: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "100")
        .create_with_context(acks.clone())
        .unwrap();
    for i in 0..n {
        if i == kill_at {
            kill();
        }
        loop {
            match p.send(
                BaseRecord::<str, str, Box<i64>>::with_opaque_to(topic, Box::new(i))
                    .payload(&i.to_string())
                    .partition(0),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    p.flush(Duration::from_secs(90))
        .expect("producer finishes after failover");
    let got = acks.0.lock().unwrap().clone();
    got
}

/// Partition 0 of `topic` holds exactly the `acked` values, in order, nothing lost or doubled.
pub fn check_exactly_at(bootstrap: &str, topic: &str, acked: &[i64]) {
    let mut acked = acked.to_vec();
    acked.sort();
    let got = consume_values(bootstrap, topic, 0, acked.len());
    assert_eq!(got.len(), acked.len(), "no loss, no duplicates");
    assert_eq!(got, acked, "exactly the acknowledged sequence, in order");
}

/// A connection to `addr` that has proven to be broker `me` to broker `leader`
/// (`net::broker_auth`), as a replica fetcher's: it may fetch as that broker.
pub fn proven_as(
    addr: &str,
    secret: &chronik_raft::secret::ClusterSecret,
    me: i32,
    leader: i32,
) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = raw::connect(addr).expect("connect");
    let mut auth = chronik::net::broker_auth::ClientAuth::new(me, leader);
    s.write_all(&auth.hello(1)).unwrap();
    let answer = raw::read_response(&mut s).expect("challenge");
    let proof = auth.proof(secret, 1, &answer).expect("a challenge");
    s.write_all(&proof).unwrap();
    let answer = raw::read_response(&mut s).expect("answer to the proof");
    auth.check_accepted(secret, 1, &answer).expect("accepted");
    s
}

/// Two nodes of one new cluster, each with a Kafka port and a second listener port:
/// `flags(id, port, second_port)` gives a node's listener flags (`FAST` is added). Returns the
/// nodes, serving, and their second ports.
pub fn start_two_nodes_with_two_listeners(
    dir: &std::path::Path,
    flags: impl Fn(i32, u16, u16) -> Vec<String>,
) -> (Vec<super::Server>, Vec<u16>) {
    start_nodes_with_two_listeners(2, dir, flags)
}

/// `start_two_nodes_with_two_listeners` with `n` nodes.
pub fn start_nodes_with_two_listeners(
    n: usize,
    dir: &std::path::Path,
    flags: impl Fn(i32, u16, u16) -> Vec<String>,
) -> (Vec<super::Server>, Vec<u16>) {
    let secret = dir.join("cluster.secret");
    super::new_secret_file(&secret);
    let ports: Vec<(u16, u16, u16)> = (0..n)
        .map(|_| (super::free_port(), super::free_port(), super::free_port()))
        .collect();
    let quorum = ports
        .iter()
        .enumerate()
        .map(|(i, (_, _, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, (port, second, controller)) in ports.iter().enumerate() {
        let id = i as i32 + 1;
        let own = flags(id, *port, *second);
        let mut args: Vec<&str> = own.iter().map(String::as_str).collect();
        args.extend_from_slice(FAST);
        let node_dir = dir.join(format!("node-{id}"));
        let mut s = super::Server::node(id, *port, *controller, &quorum, node_dir, &args);
        s.secret_file = Some(secret.clone());
        s.spawn();
        nodes.push(s);
    }
    for s in nodes.iter_mut() {
        s.wait_ready(n);
    }
    (nodes, ports.iter().map(|p| p.1).collect())
}

/// On two nodes: a 1-partition topic of replication factor 2 is created, 5 records are produced
/// to its leader with acks=all, and the follower's log reaches them.
pub fn replicate_five_records(nodes: &[super::Server], topic: &str) {
    let bootstrap = nodes[0].bootstrap();
    create(
        &bootstrap,
        NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(2)),
    );
    wait_until("a leader", 20, || leader_of(&bootstrap, topic, 0) > 0);
    let leader = leader_of(&bootstrap, topic, 0);
    let leader_addr = nodes[(leader - 1) as usize].bootstrap();
    let (err, _) = produce_once(&leader_addr, topic, 0, -1, 10_000, 5);
    assert_eq!(err, 0, "acks=all produce");
    let follower = nodes[(2 - leader) as usize].bootstrap();
    wait_until("the follower caught up", 20, || {
        local_leo(&follower, topic, 0) == 5
    });
}
