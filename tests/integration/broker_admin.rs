//! Admin APIs against real brokers: dynamic broker configs (DescribeConfigs,
//! IncrementalAlterConfigs and AlterConfigs on BROKER resources), DescribeProducers, and the
//! Kafka 4 versions of ApiVersions, Metadata, Produce, Fetch and ListOffsets.

use crate::common::cluster_util::{create, init_producer_id, produce_batch, wait_until};
use crate::common::{raw, Cluster, Server};
use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};

const MESSAGE_TOO_LARGE: i16 = 10;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_ID: i16 = 100;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One IncrementalAlterConfigs of `(key, op, value)` on broker resource `name`: its error code.
fn alter_broker(addr: &str, name: &str, changes: &[(&str, i8, &str)]) -> i16 {
    let mut c = raw::connect(addr).expect("connect");
    let mut res = AlterConfigsResource::default();
    res.resource_type = 4;
    res.resource_name = s(name);
    res.configs = changes
        .iter()
        .map(|(k, op, v)| {
            let mut a = AlterableConfig::default();
            a.name = s(k);
            a.config_operation = *op;
            a.value = Some(s(v));
            a
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    let r: IncrementalAlterConfigsResponse =
        raw::call(&mut c, ApiKey::IncrementalAlterConfigs, 1, &req).expect("answered");
    r.responses[0].error_code
}

/// DescribeConfigs (v4, with synonyms) of one resource.
fn describe(
    addr: &str,
    resource_type: i8,
    name: &str,
) -> describe_configs_response::DescribeConfigsResult {
    let mut c = raw::connect(addr).expect("connect");
    let mut res = DescribeConfigsResource::default();
    res.resource_type = resource_type;
    res.resource_name = s(name);
    res.configuration_keys = None;
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![res];
    req.include_synonyms = true;
    let mut r: DescribeConfigsResponse =
        raw::call(&mut c, ApiKey::DescribeConfigs, 4, &req).expect("answered");
    r.results.remove(0)
}

/// (value, source, read only, synonym sources) of `key` in a DescribeConfigs result.
fn entry(
    r: &describe_configs_response::DescribeConfigsResult,
    key: &str,
) -> (String, i8, bool, Vec<i8>) {
    let e = r
        .configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .unwrap_or_else(|| panic!("{key} described"));
    (
        e.value.as_deref().unwrap_or_default().to_string(),
        e.config_source,
        e.read_only,
        e.synonyms.iter().map(|y| y.source).collect(),
    )
}

/// A batch of one record with a value of `len` bytes.
fn record_of(len: usize) -> Bytes {
    chronik_storage::testing::build_batch_of(1, len, b'x', 1_700_000_000_000).freeze()
}

#[test]
fn dynamic_broker_configs_are_checked_take_effect_at_once_on_every_shard_and_survive_a_restart() {
    let mut srv = Server::start(&["--cores", "2"]);
    let b = srv.bootstrap();
    create(&b, NewTopic::new("dyn", 4, TopicReplication::Fixed(1)));
    for p in 0..4 {
        assert_eq!(produce_batch(&b, "dyn", p, 1, 5000, record_of(5000)).0, 0);
    }

    // Bad input changes nothing: unknown name, read-only, bad value, bad broker name.
    assert_eq!(
        alter_broker(&b, "", &[("no.such.config", 0, "1")]),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_broker(&b, "", &[("num.partitions", 0, "3")]),
        INVALID_REQUEST
    );
    assert_eq!(
        alter_broker(&b, "1", &[("log.dirs", 0, "/tmp")]),
        INVALID_REQUEST
    );
    assert_eq!(
        alter_broker(&b, "", &[("message.max.bytes", 0, "big")]),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_broker(&b, "", &[("message.max.bytes", 0, "-2")]),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_broker(&b, "", &[("message.max.bytes", 2, "5")]),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_broker(&b, "one", &[("message.max.bytes", 0, "5")]),
        INVALID_REQUEST
    );
    let me = describe(&b, 4, "1");
    assert_eq!(me.error_code, 0);
    let (v, source, ro, _) = entry(&me, "message.max.bytes");
    assert_eq!(
        (v.as_str(), source, ro),
        ("1048588", SOURCE_STATIC_BROKER, false)
    );
    assert!(
        entry(&me, "num.partitions").2,
        "num.partitions is read-only"
    );

    // A cluster-wide default: every shard refuses a larger batch at once.
    assert_eq!(alter_broker(&b, "", &[("message.max.bytes", 0, "2000")]), 0);
    let me = describe(&b, 4, "1");
    let (v, source, _, synonyms) = entry(&me, "message.max.bytes");
    assert_eq!(
        (v.as_str(), source),
        ("2000", SOURCE_DYNAMIC_DEFAULT_BROKER)
    );
    assert_eq!(
        synonyms,
        vec![SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_STATIC_BROKER]
    );
    let default = describe(&b, 4, "");
    assert_eq!(entry(&default, "message.max.bytes").0, "2000");
    // The topic default follows it (Kafka's topic config synonyms).
    let t = describe(&b, 2, "dyn");
    let (v, source, _, _) = entry(&t, "max.message.bytes");
    assert_eq!(
        (v.as_str(), source),
        ("2000", SOURCE_DYNAMIC_DEFAULT_BROKER)
    );
    for p in 0..4 {
        assert_eq!(
            produce_batch(&b, "dyn", p, 1, 5000, record_of(5000)).0,
            MESSAGE_TOO_LARGE,
            "partition {p}"
        );
        assert_eq!(produce_batch(&b, "dyn", p, 1, 5000, record_of(500)).0, 0);
    }

    // This broker's own value wins over the default; min.insync.replicas too.
    assert_eq!(
        alter_broker(
            &b,
            "1",
            &[
                ("message.max.bytes", 0, "8000"),
                ("log.retention.ms", 0, "3600000")
            ]
        ),
        0
    );
    let (v, source, _, synonyms) = entry(&describe(&b, 4, "1"), "message.max.bytes");
    assert_eq!((v.as_str(), source), ("8000", SOURCE_DYNAMIC_BROKER));
    assert_eq!(
        synonyms,
        vec![
            SOURCE_DYNAMIC_BROKER,
            SOURCE_DYNAMIC_DEFAULT_BROKER,
            SOURCE_STATIC_BROKER
        ]
    );
    assert_eq!(entry(&describe(&b, 2, "dyn"), "retention.ms").0, "3600000");

    // Committed in the metadata log: the same after a restart.
    srv.restart();
    let b = srv.bootstrap();
    let (v, source, _, _) = entry(&describe(&b, 4, "1"), "message.max.bytes");
    assert_eq!((v.as_str(), source), ("8000", SOURCE_DYNAMIC_BROKER));
    assert_eq!(
        entry(&describe(&b, 4, "1"), "log.retention.ms").0,
        "3600000"
    );
    wait_until("partitions serve after the restart", 30, || {
        produce_batch(&b, "dyn", 0, 1, 5000, record_of(500)).0 == 0
    });
    for p in 0..4 {
        assert_eq!(produce_batch(&b, "dyn", p, 1, 5000, record_of(5000)).0, 0);
        assert_eq!(
            produce_batch(&b, "dyn", p, 1, 5000, record_of(9000)).0,
            MESSAGE_TOO_LARGE
        );
    }

    // Deleting the broker's value falls back to the default; the legacy AlterConfigs with no
    // configs clears the default, and everything is as started.
    assert_eq!(alter_broker(&b, "1", &[("message.max.bytes", 1, "")]), 0);
    assert_eq!(entry(&describe(&b, 4, "1"), "message.max.bytes").0, "2000");
    let mut c = raw::connect(&b).expect("connect");
    let mut res = alter_configs_request::AlterConfigsResource::default();
    res.resource_type = 4;
    res.resource_name = s("");
    let mut req = AlterConfigsRequest::default();
    req.resources = vec![res];
    let r: AlterConfigsResponse = raw::call(&mut c, ApiKey::AlterConfigs, 1, &req).expect("legacy");
    assert_eq!(r.responses[0].error_code, 0);
    let (v, source, _, _) = entry(&describe(&b, 4, "1"), "message.max.bytes");
    assert_eq!((v.as_str(), source), ("1048588", SOURCE_STATIC_BROKER));
    assert_eq!(produce_batch(&b, "dyn", 1, 1, 5000, record_of(9000)).0, 0);
}

/// DescribeProducers of the given partitions of `topic`.
fn describe_producers(
    addr: &str,
    topic: &str,
    partitions: &[i32],
) -> Vec<describe_producers_response::PartitionResponse> {
    let mut c = raw::connect(addr).expect("connect");
    let mut t = TopicRequest::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = partitions.to_vec();
    let mut req = DescribeProducersRequest::default();
    req.topics = vec![t];
    let mut r: DescribeProducersResponse =
        raw::call(&mut c, ApiKey::DescribeProducers, 0, &req).expect("answered");
    r.topics.remove(0).partitions
}

#[test]
fn describe_producers_lists_an_idempotent_producer_and_refuses_unknown_partitions() {
    let srv = Server::start(&["--cores", "2"]);
    let b = srv.bootstrap();
    create(&b, NewTopic::new("idem", 2, TopicReplication::Fixed(1)));
    let (pid, epoch) = init_producer_id(&b);
    for seq in [0, 3] {
        let mut batch = chronik_storage::testing::build_batch_of(3, 10, b'x', 1_700_000_000_000);
        chronik_storage::testing::set_producer(&mut batch, pid, epoch, seq);
        assert_eq!(produce_batch(&b, "idem", 1, -1, 5000, batch.freeze()).0, 0);
    }
    let r = describe_producers(&b, "idem", &[0, 1, 7]);
    assert_eq!((r[0].error_code, r[0].active_producers.len()), (0, 0));
    assert_eq!(r[1].error_code, 0);
    let p = &r[1].active_producers;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].producer_id.0, p[0].producer_epoch, p[0].last_sequence),
        (pid, i32::from(epoch), 5)
    );
    assert!(p[0].last_timestamp >= 1_700_000_000_000, "{p:?}");
    assert_eq!(
        (p[0].coordinator_epoch, p[0].current_txn_start_offset),
        (-1, -1)
    );
    assert_eq!(r[2].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        describe_producers(&b, "no-such-topic", &[0])[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

fn topic_id(addr: &str, topic: &str) -> uuid::Uuid {
    let mut c = raw::connect(addr).expect("connect");
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(s(topic)));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    let r: MetadataResponse = raw::call(&mut c, ApiKey::Metadata, 13, &req).expect("metadata v13");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.topics[0].error_code, 0);
    r.topics[0].topic_id
}

fn produce_v(
    addr: &str,
    version: i16,
    name: &str,
    id: uuid::Uuid,
    partition: i32,
) -> produce_response::PartitionProduceResponse {
    let mut c = raw::connect(addr).expect("connect");
    let mut pd = PartitionProduceData::default();
    pd.index = partition;
    pd.records = Some(record_of(10));
    let mut td = TopicProduceData::default();
    if version >= 13 {
        td.topic_id = id;
    } else {
        td.name = TopicName(s(name));
    }
    td.partition_data = vec![pd];
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 5000;
    req.topic_data = vec![td];
    let mut r: ProduceResponse =
        raw::call(&mut c, ApiKey::Produce, version, &req).expect("produce");
    r.responses.remove(0).partition_responses.remove(0)
}

fn fetch_v(addr: &str, version: i16, id: uuid::Uuid, partition: i32) -> FetchResponse {
    let mut c = raw::connect(addr).expect("connect");
    let mut req = FetchRequest::default();
    req.replica_state.replica_id = BrokerId(-1);
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic_id = id;
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.current_leader_epoch = -1;
    p.partition_max_bytes = 1 << 20;
    t.partitions = vec![p];
    req.topics = vec![t];
    raw::call(&mut c, ApiKey::Fetch, version, &req).expect("fetch")
}

#[test]
fn the_kafka_4_versions_of_api_versions_metadata_produce_fetch_and_list_offsets_are_served() {
    let srv = Server::start(&["--cores", "2"]);
    let b = srv.bootstrap();
    let mut c = raw::connect(&b).expect("connect");
    let mut req = ApiVersionsRequest::default();
    req.client_software_name = s("test");
    req.client_software_version = s("1");
    let r: ApiVersionsResponse = raw::call(&mut c, ApiKey::ApiVersions, 4, &req).expect("v4");
    assert_eq!(r.error_code, 0);
    let max = |k: ApiKey| {
        r.api_keys
            .iter()
            .find(|a| a.api_key == k as i16)
            .map(|a| a.max_version)
    };
    assert_eq!(max(ApiKey::Produce), Some(13));
    assert_eq!(max(ApiKey::Fetch), Some(18));
    assert_eq!(max(ApiKey::ListOffsets), Some(10));
    assert_eq!(max(ApiKey::Metadata), Some(13));
    assert_eq!(max(ApiKey::ApiVersions), Some(4));
    assert_eq!(max(ApiKey::DescribeProducers), Some(0));

    create(&b, NewTopic::new("v4", 2, TopicReplication::Fixed(1)));
    let id = topic_id(&b, "v4");
    for (i, v) in [10i16, 11, 12, 13].into_iter().enumerate() {
        let p = produce_v(&b, v, "v4", id, 1);
        assert_eq!((p.error_code, p.base_offset), (0, i as i64), "produce v{v}");
    }
    // v13 names the topic by id: an unknown id is UNKNOWN_TOPIC_ID.
    let p = produce_v(&b, 13, "", uuid::Uuid::from_bytes([9; 16]), 0);
    assert_eq!(p.error_code, UNKNOWN_TOPIC_ID);
    for v in 14..=18 {
        let r = fetch_v(&b, v, id, 1);
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 4), "fetch v{v}");
        assert!(
            p.records.as_ref().is_some_and(|r| r.len() > 61),
            "fetch v{v}"
        );
    }
    for (v, ts, offset) in [(9i16, -5i64, -1i64), (9, -1, 4), (10, -1, 4), (10, -2, 0)] {
        let mut c = raw::connect(&b).expect("connect");
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 1;
        p.timestamp = ts;
        p.current_leader_epoch = -1;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(s("v4"));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.timeout_ms = 1000;
        req.topics = vec![t];
        let r: ListOffsetsResponse = raw::call(&mut c, ApiKey::ListOffsets, v, &req).expect("lo");
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset),
            (0, offset),
            "list offsets v{v} at {ts}"
        );
    }
}

#[test]
fn a_broker_that_does_not_lead_a_partition_points_clients_at_its_leader() {
    let mut cluster = Cluster::start(2, &["--cores", "2"]);
    let b = cluster.bootstrap();
    create(&b, NewTopic::new("led", 2, TopicReplication::Fixed(1)));
    let addr = |c: &mut Cluster, id: i32| c.node(id).bootstrap();
    let one = addr(&mut cluster, 1);
    let leader = crate::common::cluster_util::leader_of(&one, "led", 0);
    let other = if leader == 1 { 2 } else { 1 };
    let (leader_addr, other_addr) = (addr(&mut cluster, leader), addr(&mut cluster, other));
    let id = topic_id(&leader_addr, "led");
    wait_until("the other broker knows the topic", 30, || {
        crate::common::cluster_util::metadata(&other_addr, "led").topics[0].error_code == 0
    });

    let p = produce_v(&other_addr, 12, "led", id, 0);
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id.0, leader);
    assert!(p.current_leader.leader_epoch >= 0);
    let c = raw::connect(&other_addr).expect("connect");
    // Produce v9 has no hint.
    let p9 = produce_v(&other_addr, 9, "led", id, 0);
    assert_eq!(
        (p9.error_code, p9.current_leader.leader_id.0),
        (NOT_LEADER_OR_FOLLOWER, -1)
    );
    drop(c.shutdown(std::net::Shutdown::Both));

    let r = fetch_v(&other_addr, 16, id, 0);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id.0, leader);
    assert_eq!(r.node_endpoints.len(), 1);
    let port: i32 = leader_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_eq!(
        (r.node_endpoints[0].node_id.0, r.node_endpoints[0].port),
        (leader, port)
    );

    let r = describe_producers(&other_addr, "led", &[0]);
    assert_eq!(r[0].error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        describe_producers(&leader_addr, "led", &[0])[0].error_code,
        0
    );

    // A dynamic default set on one broker applies on the other.
    assert_eq!(
        alter_broker(&other_addr, "", &[("message.max.bytes", 0, "2000")]),
        0
    );
    let (v, source, _, _) = entry(
        &describe(&leader_addr, 4, &leader.to_string()),
        "message.max.bytes",
    );
    assert_eq!(
        (v.as_str(), source),
        ("2000", SOURCE_DYNAMIC_DEFAULT_BROKER)
    );
    assert_eq!(
        produce_batch(&leader_addr, "led", 0, 1, 5000, record_of(5000)).0,
        MESSAGE_TOO_LARGE
    );
}
