//! Writes the seed inputs of tests/fuzz/corpus/: real encodings, made by the encoders clients
//! and the broker use, so the fuzzers start from inputs that reach deep into each decoder.
//!
//!   cd tests/fuzz && CARGO_TARGET_DIR=../../target cargo run --example seed_corpus
//!
//! Seeds are named `seed-*` and rewritten on each run; inputs the fuzzers found (named by
//! their SHA-1) are left alone.

use bytes::{BufMut, Bytes, BytesMut};
use chronik::group::offsets_log::{self, GroupValue, MemberValue, OffsetValue};
use chronik::kafka::dispatch::APIS;
use chronik_raft::command::{
    BrokerRegistration, Command, CommandBatch, NewTopic, PartitionRef, ProposedCommand,
};
use chronik_raft::metadata::MetaState;
use chronik_raft::snapshot::StoredSnapshot;
use chronik_raft::types::{Entry, LogId};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::collections::BTreeMap;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut n = 0;
    let mut write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        n += 1;
    };
    for (name, frame) in request_frames() {
        write("request_decoder", &name, &frame);
    }
    for (name, input) in batch_inputs() {
        write("record_batch", &name, &input);
    }
    for (name, input) in raft_inputs() {
        write("raft_apply", &name, &input);
    }
    println!("wrote {n} seeds under {}", root.display());
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

// ---------------------------------------------------------------------------------------------
// Kafka request frames

/// One frame per API of the dispatch table and per version it serves: header + populated body.
fn request_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for spec in APIS {
        for v in spec.min..=spec.max {
            let Some(body) = body(spec.key, v) else {
                continue;
            };
            let mut header = RequestHeader::default();
            header.request_api_key = spec.key as i16;
            header.request_api_version = v;
            header.correlation_id = 7;
            header.client_id = Some(s("rdkafka"));
            let mut frame = BytesMut::new();
            header
                .encode(&mut frame, spec.key.request_header_version(v))
                .expect("header");
            frame.extend_from_slice(&body);
            out.push((format!("{:?}-v{v}", spec.key), frame.to_vec()));
        }
    }
    out
}

fn enc<T: Encodable + Default>(populated: T, v: i16) -> Option<BytesMut> {
    let mut b = BytesMut::new();
    if populated.encode(&mut b, v).is_ok() {
        return Some(b);
    }
    // A field this version lacks: the empty request still gives the decoder the shape.
    let mut b = BytesMut::new();
    T::default().encode(&mut b, v).ok().map(|()| b)
}

fn body(key: ApiKey, v: i16) -> Option<BytesMut> {
    match key {
        ApiKey::Produce => {
            let mut p = produce_request::PartitionProduceData::default();
            p.index = 0;
            p.records = Some(record_batch(Compression::None, 3).freeze());
            let mut t = produce_request::TopicProduceData::default();
            t.name = topic("t0");
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.timeout_ms = 30_000;
            r.topic_data = vec![t];
            enc(r, v)
        }
        ApiKey::Fetch => {
            let mut p = fetch_request::FetchPartition::default();
            p.partition = 0;
            p.fetch_offset = 10;
            p.partition_max_bytes = 1 << 20;
            p.current_leader_epoch = 1;
            let mut t = fetch_request::FetchTopic::default();
            if v >= 13 {
                t.topic_id = uuid::Uuid::from_bytes([1; 16]);
            } else {
                t.topic = topic("t0");
            }
            t.partitions = vec![p];
            let mut r = FetchRequest::default();
            r.replica_id = BrokerId(-1);
            r.max_wait_ms = 500;
            r.min_bytes = 1;
            r.max_bytes = 50 << 20;
            r.topics = vec![t];
            if v >= 11 {
                r.rack_id = s("a");
            }
            enc(r, v)
        }
        ApiKey::ListOffsets => {
            let mut p = list_offsets_request::ListOffsetsPartition::default();
            p.partition_index = 0;
            p.timestamp = -1;
            let mut t = list_offsets_request::ListOffsetsTopic::default();
            t.name = topic("t0");
            t.partitions = vec![p];
            let mut r = ListOffsetsRequest::default();
            r.replica_id = BrokerId(-1);
            r.topics = vec![t];
            enc(r, v)
        }
        ApiKey::Metadata => {
            let mut t = metadata_request::MetadataRequestTopic::default();
            t.name = Some(topic("t0"));
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t]);
            r.allow_auto_topic_creation = v >= 4;
            enc(r, v)
        }
        ApiKey::CreateTopics => {
            let mut c = create_topics_request::CreatableTopicConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("60000"));
            let mut t = create_topics_request::CreatableTopic::default();
            t.name = topic("new-topic");
            t.num_partitions = 3;
            t.replication_factor = 1;
            t.configs = vec![c];
            let mut a = create_topics_request::CreatableReplicaAssignment::default();
            a.partition_index = 0;
            a.broker_ids = vec![BrokerId(1), BrokerId(2)];
            let mut t2 = create_topics_request::CreatableTopic::default();
            t2.name = topic("assigned");
            t2.num_partitions = -1;
            t2.replication_factor = -1;
            t2.assignments = vec![a];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t, t2];
            r.timeout_ms = 30_000;
            enc(r, v)
        }
        ApiKey::DeleteTopics => {
            let mut r = DeleteTopicsRequest::default();
            if v >= 6 {
                let mut t = delete_topics_request::DeleteTopicState::default();
                t.name = Some(topic("t0"));
                r.topics = vec![t];
            } else {
                r.topic_names = vec![topic("t0"), topic("t1")];
            }
            r.timeout_ms = 30_000;
            enc(r, v)
        }
        ApiKey::CreatePartitions => {
            let mut a = create_partitions_request::CreatePartitionsAssignment::default();
            a.broker_ids = vec![BrokerId(1)];
            let mut t = create_partitions_request::CreatePartitionsTopic::default();
            t.name = topic("t0");
            t.count = 4;
            t.assignments = Some(vec![a]);
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 30_000;
            enc(r, v)
        }
        ApiKey::DescribeConfigs => {
            let mut res = describe_configs_request::DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("t0");
            res.configuration_keys = Some(vec![s("retention.ms")]);
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![res];
            enc(r, v)
        }
        ApiKey::IncrementalAlterConfigs => {
            let mut c = incremental_alter_configs_request::AlterableConfig::default();
            c.name = s("retention.ms");
            c.config_operation = 0;
            c.value = Some(s("1000"));
            let mut res = incremental_alter_configs_request::AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("t0");
            res.configs = vec![c];
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![res];
            enc(r, v)
        }
        ApiKey::DescribeCluster => enc(DescribeClusterRequest::default(), v),
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transaction_timeout_ms = 60_000;
            r.producer_id = ProducerId(-1);
            r.producer_epoch = -1;
            enc(r, v)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let mut p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
            p.partition = 0;
            p.leader_epoch = 1;
            p.current_leader_epoch = 2;
            let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
            t.topic = topic("t0");
            t.partitions = vec![p];
            let mut r = OffsetForLeaderEpochRequest::default();
            r.replica_id = BrokerId(1);
            r.topics = vec![t];
            enc(r, v)
        }
        ApiKey::DeleteRecords => {
            let mut p = delete_records_request::DeleteRecordsPartition::default();
            p.partition_index = 0;
            p.offset = 5;
            let mut t = delete_records_request::DeleteRecordsTopic::default();
            t.name = topic("t0");
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            r.timeout_ms = 30_000;
            enc(r, v)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if v >= 4 {
                r.coordinator_keys = vec![s("g1"), s("g2")];
            } else {
                r.key = s("g1");
            }
            enc(r, v)
        }
        ApiKey::JoinGroup => {
            let mut p = join_group_request::JoinGroupRequestProtocol::default();
            p.name = s("range");
            p.metadata = subscription(&["t0", "t1"]);
            let mut r = JoinGroupRequest::default();
            r.group_id = group("g1");
            r.session_timeout_ms = 10_000;
            r.rebalance_timeout_ms = 30_000;
            r.protocol_type = s("consumer");
            r.protocols = vec![p];
            if v >= 5 {
                r.group_instance_id = Some(s("i1"));
            }
            enc(r, v)
        }
        ApiKey::SyncGroup => {
            let mut a = sync_group_request::SyncGroupRequestAssignment::default();
            a.member_id = s("m1");
            a.assignment = Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 2, b't', b'0', 0, 0, 0, 0]);
            let mut r = SyncGroupRequest::default();
            r.group_id = group("g1");
            r.generation_id = 1;
            r.member_id = s("m1");
            r.assignments = vec![a];
            if v >= 5 {
                r.protocol_type = Some(s("consumer"));
                r.protocol_name = Some(s("range"));
            }
            enc(r, v)
        }
        ApiKey::Heartbeat => {
            let mut r = HeartbeatRequest::default();
            r.group_id = group("g1");
            r.generation_id = 1;
            r.member_id = s("m1");
            enc(r, v)
        }
        ApiKey::LeaveGroup => {
            let mut r = LeaveGroupRequest::default();
            r.group_id = group("g1");
            if v >= 3 {
                let mut m = leave_group_request::MemberIdentity::default();
                m.member_id = s("m1");
                r.members = vec![m];
            } else {
                r.member_id = s("m1");
            }
            enc(r, v)
        }
        ApiKey::OffsetCommit => {
            let mut p = offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = 0;
            p.committed_offset = 42;
            p.committed_metadata = Some(s("meta"));
            let mut t = offset_commit_request::OffsetCommitRequestTopic::default();
            t.name = topic("t0");
            t.partitions = vec![p];
            let mut r = OffsetCommitRequest::default();
            r.group_id = group("g1");
            r.generation_id_or_member_epoch = 1;
            r.member_id = s("m1");
            r.topics = vec![t];
            enc(r, v)
        }
        ApiKey::OffsetFetch => {
            let mut r = OffsetFetchRequest::default();
            if v >= 8 {
                let mut t = offset_fetch_request::OffsetFetchRequestTopics::default();
                t.name = topic("t0");
                t.partition_indexes = vec![0, 1];
                let mut g = offset_fetch_request::OffsetFetchRequestGroup::default();
                g.group_id = group("g1");
                g.topics = Some(vec![t]);
                r.groups = vec![g];
            } else {
                let mut t = offset_fetch_request::OffsetFetchRequestTopic::default();
                t.name = topic("t0");
                t.partition_indexes = vec![0, 1];
                r.group_id = group("g1");
                r.topics = Some(vec![t]);
            }
            enc(r, v)
        }
        ApiKey::ListGroups => {
            let mut r = ListGroupsRequest::default();
            if v >= 4 {
                r.states_filter = vec![s("Stable")];
            }
            enc(r, v)
        }
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![group("g1"), group("g2")];
            enc(r, v)
        }
        ApiKey::DeleteGroups => {
            let mut r = DeleteGroupsRequest::default();
            r.groups_names = vec![group("g1")];
            enc(r, v)
        }
        ApiKey::OffsetDelete => {
            let mut p = offset_delete_request::OffsetDeleteRequestPartition::default();
            p.partition_index = 0;
            let mut t = offset_delete_request::OffsetDeleteRequestTopic::default();
            t.name = topic("t0");
            t.partitions = vec![p];
            let mut r = OffsetDeleteRequest::default();
            r.group_id = group("g1");
            r.topics = vec![t];
            enc(r, v)
        }
        ApiKey::ListPartitionReassignments => {
            let mut t =
                list_partition_reassignments_request::ListPartitionReassignmentsTopics::default();
            t.name = topic("t0");
            t.partition_indexes = vec![0];
            let mut r = ListPartitionReassignmentsRequest::default();
            r.timeout_ms = 30_000;
            r.topics = Some(vec![t]);
            enc(r, v)
        }
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if v >= 3 {
                r.client_software_name = s("librdkafka");
                r.client_software_version = s("2.3.0");
            }
            enc(r, v)
        }
        ApiKey::SaslHandshake => {
            let mut r = SaslHandshakeRequest::default();
            r.mechanism = s("PLAIN");
            enc(r, v)
        }
        ApiKey::SaslAuthenticate => {
            let mut r = SaslAuthenticateRequest::default();
            r.auth_bytes = Bytes::from_static(b"\0user\0pass");
            enc(r, v)
        }
        _ => None,
    }
}

/// A ConsumerProtocolSubscription v0: version, topics, user data.
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

// ---------------------------------------------------------------------------------------------
// Record batches

/// A producer's batch of `n` records (keys, values, a header), as kafka-protocol encodes it.
fn record_batch(compression: Compression, n: i64) -> BytesMut {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}-").repeat(4))),
            headers: IndexMap::from([(s("h"), Some(Bytes::from_static(b"v")))]),
        })
        .collect();
    let mut b = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut b,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    b
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(bytes);
    v
}

fn batch_inputs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    for (name, c) in codecs {
        let b = record_batch(c, 3);
        out.push((format!("batch-{name}"), with_mode(0, &b)));
        out.push((format!("batch-{name}-fixup"), with_mode(1, &b)));
    }
    // The Java client's snappy: xerial framing around one raw block.
    let plain = record_batch(Compression::None, 3);
    let mut xerial = plain[..61].to_vec();
    xerial[22] = (xerial[22] & !7) | 2;
    let block = snap::raw::Encoder::new()
        .compress_vec(&plain[61..])
        .expect("snappy");
    xerial.extend_from_slice(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
    xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
    xerial.extend_from_slice(&block);
    out.push(("batch-snappy-xerial-fixup".into(), with_mode(1, &xerial)));
    // Header + plain records for the harness to compress with each codec (mode 2).
    for codec in 0..5u8 {
        out.push((
            format!("records-codec{codec}"),
            with_mode(2 | (codec << 2), &plain),
        ));
    }
    // A batch of one small record, and the broker's own uncompressed encoding.
    out.push((
        "batch-one".into(),
        with_mode(0, &record_batch(Compression::None, 1)),
    ));
    let own = chronik_storage::testing::build_batch(&[(Some(b"k"), Some(b"v")), (None, None)], 1);
    out.push(("batch-storage".into(), with_mode(0, &own)));
    // __consumer_offsets batches as the group coordinator writes them, and single records.
    let offset = OffsetValue {
        offset: 42,
        leader_epoch: 3,
        metadata: "m".into(),
        commit_timestamp: 1_700_000_000_000,
    };
    let members = vec![MemberValue {
        member_id: "m1".into(),
        group_instance_id: Some("i1".into()),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        rebalance_timeout_ms: 30_000,
        session_timeout_ms: 10_000,
        subscription: subscription(&["t0"]),
        assignment: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    }];
    let group_value = GroupValue {
        protocol_type: "consumer".into(),
        generation: 5,
        protocol: Some("range".into()),
        leader: Some("m1".into()),
        state_timestamp: 1,
        members,
    };
    let ok = offsets_log::offset_key("g1", "t0", 0);
    let ov = offsets_log::offset_value(&offset);
    let gk = offsets_log::group_key("g1");
    let gv = offsets_log::group_value(&group_value);
    let batch = offsets_log::build_batch(
        &[
            (ok.clone(), Some(ov.clone())),
            (gk.clone(), Some(gv.clone())),
            (offsets_log::offset_key("g1", "t1", 2), None),
        ],
        1_700_000_000_000,
    );
    out.push(("offsets-batch".into(), with_mode(0, &batch)));
    out.push(("offsets-batch-fixup".into(), with_mode(1, &batch)));
    for (name, k, v) in [("offset", &ok, &ov), ("group", &gk, &gv)] {
        let mut input = vec![3];
        input.extend_from_slice(&(k.len() as u16).to_be_bytes());
        input.extend_from_slice(k);
        input.extend_from_slice(v);
        out.push((format!("offsets-record-{name}"), input));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Raft log entries (against the state raft_apply seeds: brokers 1-4, topics t0, t1, t2)

fn raft_inputs() -> Vec<(String, Vec<u8>)> {
    let new_topic = |name: &str, partitions: i32, rf: i16| NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        assignments: None,
        configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
    };
    let commands: Vec<(&str, Command, Vec<[u8; 16]>)> = vec![
        (
            "register",
            Command::RegisterBroker(BrokerRegistration {
                id: 5,
                host: "broker5".into(),
                port: 9092,
                rack: Some("b".into()),
                listeners: Vec::new(),
            }),
            vec![],
        ),
        (
            "reregister",
            Command::RegisterBroker(BrokerRegistration {
                id: 2,
                host: "broker2".into(),
                port: 9093,
                rack: None,
                listeners: Vec::new(),
            }),
            vec![],
        ),
        ("fence", Command::FenceBroker { id: 1 }, vec![]),
        ("unfence", Command::UnfenceBroker { id: 4 }, vec![]),
        (
            "create-topics",
            Command::CreateTopics {
                topics: vec![
                    new_topic("n0", 4, 2),
                    new_topic("n1", -1, -1),
                    NewTopic {
                        assignments: Some(vec![vec![1, 2, 3], vec![3, 2, 1]]),
                        ..new_topic("n2", -1, -1)
                    },
                ],
                validate_only: false,
            },
            vec![[9; 16], [10; 16], [11; 16]],
        ),
        (
            "create-topics-validate-only",
            Command::CreateTopics {
                topics: vec![new_topic("n0", 1, 1)],
                validate_only: true,
            },
            vec![[12; 16]],
        ),
        (
            "delete-topics",
            Command::DeleteTopics {
                names: vec!["t1".into(), "missing".into()],
            },
            vec![],
        ),
        (
            "create-partitions",
            Command::CreatePartitions {
                topics: vec![
                    ("t0".into(), 5, None),
                    ("t2".into(), 4, Some(vec![vec![1, 3]])),
                ],
                validate_only: false,
            },
            vec![],
        ),
        (
            "alter-configs",
            Command::AlterConfigs {
                topic: "t0".into(),
                set: BTreeMap::from([
                    ("min.insync.replicas".into(), "2".into()),
                    ("unclean.leader.election.enable".into(), "true".into()),
                ]),
                delete: vec!["retention.ms".into()],
                validate_only: false,
            },
            vec![],
        ),
        (
            "alter-partition",
            Command::AlterPartition {
                topic: "t0".into(),
                partition: 0,
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![1, 2],
            },
            vec![],
        ),
        (
            "elect-leaders",
            Command::ElectLeaders {
                partitions: vec![PartitionRef {
                    topic: "t2".into(),
                    partition: 2,
                }],
                preferred: true,
            },
            vec![],
        ),
        (
            "elect-all",
            Command::ElectLeaders {
                partitions: vec![],
                preferred: false,
            },
            vec![],
        ),
        (
            "reassign",
            Command::ReassignPartitions {
                topic: "t0".into(),
                partition: 1,
                replicas: vec![3, 1],
            },
            vec![],
        ),
        (
            "producer-ids",
            Command::AllocateProducerIds {
                broker: 1,
                count: 1000,
            },
            vec![],
        ),
        (
            "add-node",
            Command::AddNode {
                id: 5,
                raft_addr: "127.0.0.1:9100".into(),
                voter: true,
            },
            vec![],
        ),
        ("remove-node", Command::RemoveNode { id: 3 }, vec![]),
        (
            "decommission",
            Command::DecommissionBroker { id: 3 },
            vec![],
        ),
        ("unregister", Command::UnregisterBroker { id: 4 }, vec![]),
        ("rebalance", Command::Rebalance, vec![]),
    ];
    let batch = |cmds: Vec<ProposedCommand>| {
        bincode::serialize(&CommandBatch {
            version: 1,
            commands: cmds,
        })
        .expect("encode batch")
    };
    let mut out = Vec::new();
    let mut all = Vec::new();
    for (name, cmd, topic_ids) in commands {
        let pc = ProposedCommand { cmd, topic_ids };
        out.push((format!("cmd-{name}"), batch(vec![pc.clone()])));
        all.push(pc);
    }
    // Several commands in one entry, each seeing the previous ones' effects.
    out.push(("batch-all".into(), batch(all[..all.len() - 1].to_vec())));
    // A whole log entry as the log store writes it, and a snapshot payload.
    let entry = Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), 17),
        payload: openraft::EntryPayload::Normal(CommandBatch {
            version: 1,
            commands: all[..3].to_vec(),
        }),
    };
    out.push((
        "entry".into(),
        bincode::serialize(&entry).expect("encode entry"),
    ));
    let snap = StoredSnapshot {
        meta: Default::default(),
        state: MetaState::default(),
    };
    out.push((
        "snapshot-empty".into(),
        bincode::serialize(&snap).expect("encode snapshot"),
    ));
    out
}
