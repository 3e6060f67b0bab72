//! A tiny in-memory Kafka broker for testing chronik-bench's client without a real broker:
//! ApiVersions, Metadata, CreateTopics, DeleteTopics, Produce, Fetch, ListOffsets, and a
//! one-member consumer group (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch). It stores record
//! batches as sent (rewriting only the base offset), like chronik does. Faults can be injected:
//! NOT_LEADER_OR_FOLLOWER for the first produce responses, or a "lying" mode that acknowledges
//! produces without storing them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, HeaderVersion, StrBytes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Partition {
    batches: Vec<(i64, Bytes)>, // (base offset, batch bytes)
    end: i64,
}

#[derive(Default)]
pub struct Faults {
    /// Answer this many produce partition results with NOT_LEADER_OR_FOLLOWER first.
    pub not_leader: AtomicU64,
    /// Acknowledge produces with offsets but do not store them.
    pub lie: AtomicBool,
    /// Answer produces with error 0 and base offset -1.
    pub no_offset: AtomicBool,
    /// Count (advance offsets) but do not keep the data: for throughput runs that must not grow.
    pub discard: AtomicBool,
    /// Do not offer the consumer-group APIs.
    pub no_groups: AtomicBool,
}

pub struct MockBroker {
    pub port: u16,
    topics: Mutex<HashMap<String, Vec<Partition>>>,
    pub faults: Faults,
    pub produce_requests: AtomicU64,
    /// The most records any produced batch held.
    pub max_batch_records: AtomicU64,
    /// The most partitions any produce request carried.
    pub max_request_partitions: AtomicU64,
    /// Group state: last assignment per member and committed offsets (topic, partition) -> offset.
    assignments: Mutex<HashMap<String, Bytes>>,
    pub committed: Mutex<HashMap<(String, i32), i64>>,
}

impl MockBroker {
    pub async fn start() -> Arc<MockBroker> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        let broker = Arc::new(MockBroker {
            port,
            topics: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            produce_requests: AtomicU64::new(0),
            max_batch_records: AtomicU64::new(0),
            max_request_partitions: AtomicU64::new(0),
            assignments: Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
        });
        let b = broker.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let b = b.clone();
                tokio::spawn(async move {
                    let _ = b.serve(sock).await;
                });
            }
        });
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create(&self, topic: &str, partitions: i32) {
        let mut t = self.topics.lock().expect("lock");
        t.entry(topic.to_string())
            .or_insert_with(|| (0..partitions).map(|_| Partition::default()).collect());
    }

    pub fn stored(&self, topic: &str) -> i64 {
        let t = self.topics.lock().expect("lock");
        t.get(topic)
            .map(|ps| ps.iter().map(|p| p.end).sum())
            .unwrap_or(0)
    }

    async fn serve(&self, mut sock: TcpStream) -> anyhow::Result<()> {
        sock.set_nodelay(true)?;
        loop {
            let len = sock.read_i32().await?;
            let mut buf = BytesMut::zeroed(len as usize);
            sock.read_exact(&mut buf).await?;
            let mut buf = buf.freeze();
            let header = decode_request_header_from_buffer(&mut buf)?;
            let v = header.request_api_version;
            let out = match header.request_api_key {
                18 => respond(self.api_versions(), v)?,
                3 => respond(self.metadata(MetadataRequest::decode(&mut buf, v)?), v)?,
                19 => respond(
                    self.create_topics(CreateTopicsRequest::decode(&mut buf, v)?),
                    v,
                )?,
                20 => respond(
                    self.delete_topics(DeleteTopicsRequest::decode(&mut buf, v)?),
                    v,
                )?,
                0 => {
                    let req = ProduceRequest::decode(&mut buf, v)?;
                    let acks = req.acks;
                    let resp = self.produce(req);
                    if acks == 0 {
                        continue;
                    }
                    respond(resp, v)?
                }
                1 => respond(self.fetch(FetchRequest::decode(&mut buf, v)?), v)?,
                2 => respond(
                    self.list_offsets(ListOffsetsRequest::decode(&mut buf, v)?),
                    v,
                )?,
                10 => respond(self.find_coordinator(), v)?,
                11 => respond(
                    self.join_group(JoinGroupRequest::decode(&mut buf, v)?, v),
                    v,
                )?,
                14 => respond(self.sync_group(SyncGroupRequest::decode(&mut buf, v)?), v)?,
                12 => respond(HeartbeatResponse::default(), v)?,
                13 => respond(LeaveGroupResponse::default(), v)?,
                8 => respond(
                    self.offset_commit(OffsetCommitRequest::decode(&mut buf, v)?),
                    v,
                )?,
                9 => respond(
                    self.offset_fetch(OffsetFetchRequest::decode(&mut buf, v)?),
                    v,
                )?,
                other => anyhow::bail!("mock broker does not speak API {other}"),
            };
            let (resp_header_version, body) = out;
            let mut frame = BytesMut::new();
            frame.put_i32(0);
            let mut rh = ResponseHeader::default();
            rh.correlation_id = header.correlation_id;
            rh.encode(&mut frame, resp_header_version)?;
            frame.extend_from_slice(&body);
            let n = (frame.len() - 4) as i32;
            frame[0..4].copy_from_slice(&n.to_be_bytes());
            sock.write_all(&frame).await?;
        }
    }

    fn api_versions(&self) -> ApiVersionsResponse {
        let mut r = ApiVersionsResponse::default();
        let mut keys = vec![
            (0, 3, 9),
            (1, 4, 12),
            (2, 1, 7),
            (3, 1, 12),
            (18, 0, 3),
            (19, 2, 7),
            (20, 1, 6),
        ];
        if !self.faults.no_groups.load(Ordering::Relaxed) {
            keys.extend([
                (8, 2, 8),
                (10, 0, 3),
                (11, 0, 7),
                (12, 0, 4),
                (13, 0, 4),
                (14, 0, 4),
                (9, 1, 7),
            ]);
        }
        for (key, min, max) in keys {
            let mut a = ApiVersion::default();
            a.api_key = key;
            a.min_version = min;
            a.max_version = max;
            r.api_keys.push(a);
        }
        r
    }

    fn metadata(&self, req: MetadataRequest) -> MetadataResponse {
        let mut r = MetadataResponse::default();
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(1);
        b.host = StrBytes::from_static_str("127.0.0.1");
        b.port = self.port as i32;
        r.brokers.push(b);
        r.controller_id = BrokerId(1);
        let topics = self.topics.lock().expect("lock");
        let names: Vec<String> = match &req.topics {
            Some(ts) => ts
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
            None => topics.keys().cloned().collect(),
        };
        for name in names {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(TopicName(StrBytes::from_string(name.clone())));
            match topics.get(&name) {
                Some(ps) => {
                    for i in 0..ps.len() {
                        let mut p = MetadataResponsePartition::default();
                        p.partition_index = i as i32;
                        p.leader_id = BrokerId(1);
                        p.leader_epoch = 0;
                        p.replica_nodes = vec![BrokerId(1)];
                        p.isr_nodes = vec![BrokerId(1)];
                        t.partitions.push(p);
                    }
                }
                None => t.error_code = 3,
            }
            r.topics.push(t);
        }
        r
    }

    fn create_topics(&self, req: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut r = CreateTopicsResponse::default();
        for t in req.topics {
            let mut res = CreatableTopicResult::default();
            res.name = t.name.clone();
            let exists = self
                .topics
                .lock()
                .expect("lock")
                .contains_key(t.name.0.as_str());
            if exists {
                res.error_code = 36;
            } else {
                self.create(t.name.0.as_str(), t.num_partitions);
            }
            r.topics.push(res);
        }
        r
    }

    fn delete_topics(&self, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut r = DeleteTopicsResponse::default();
        let mut topics = self.topics.lock().expect("lock");
        let names: Vec<TopicName> = req
            .topic_names
            .into_iter()
            .chain(req.topics.into_iter().filter_map(|t| t.name))
            .collect();
        for n in names {
            let mut res = DeletableTopicResult::default();
            if topics.remove(n.0.as_str()).is_none() {
                res.error_code = 3;
            }
            res.name = Some(n);
            r.responses.push(res);
        }
        r
    }

    fn produce(&self, req: ProduceRequest) -> ProduceResponse {
        self.produce_requests.fetch_add(1, Ordering::Relaxed);
        let partitions: usize = req.topic_data.iter().map(|t| t.partition_data.len()).sum();
        self.max_request_partitions
            .fetch_max(partitions as u64, Ordering::Relaxed);
        let mut r = ProduceResponse::default();
        let mut topics = self.topics.lock().expect("lock");
        for td in req.topic_data {
            let mut tr = TopicProduceResponse::default();
            tr.name = td.name.clone();
            for pd in td.partition_data {
                let mut pr = PartitionProduceResponse::default();
                pr.index = pd.index;
                pr.log_append_time_ms = -1;
                let injected = self
                    .faults
                    .not_leader
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                match topics
                    .get_mut(td.name.0.as_str())
                    .and_then(|ps| ps.get_mut(pd.index as usize))
                {
                    _ if injected => pr.error_code = 6,
                    None => pr.error_code = 3,
                    Some(p) => {
                        let mut base = p.end;
                        let mut data = pd.records.unwrap_or_default();
                        while data.len() >= 61 {
                            let len = (&data[8..12]).get_i32() as usize + 12;
                            if len > data.len() {
                                break;
                            }
                            let mut batch = BytesMut::from(&data[..len]);
                            data.advance(len);
                            let last_delta = (&batch[23..27]).get_i32() as i64;
                            self.max_batch_records
                                .fetch_max((last_delta + 1) as u64, Ordering::Relaxed);
                            batch[0..8].copy_from_slice(&p.end.to_be_bytes());
                            if self.faults.discard.load(Ordering::Relaxed) {
                                p.end += last_delta + 1;
                            } else if !self.faults.lie.load(Ordering::Relaxed) {
                                p.batches.push((p.end, batch.freeze()));
                                p.end += last_delta + 1;
                            } else {
                                base = 0;
                            }
                        }
                        pr.base_offset = if self.faults.no_offset.load(Ordering::Relaxed) {
                            -1
                        } else {
                            base
                        };
                    }
                }
                tr.partition_responses.push(pr);
            }
            r.responses.push(tr);
        }
        r
    }

    fn fetch(&self, req: FetchRequest) -> FetchResponse {
        let mut r = FetchResponse::default();
        let topics = self.topics.lock().expect("lock");
        for ft in req.topics {
            let mut tr = FetchableTopicResponse::default();
            tr.topic = ft.topic.clone();
            for fp in ft.partitions {
                let mut pd = PartitionData::default();
                pd.partition_index = fp.partition;
                match topics
                    .get(ft.topic.0.as_str())
                    .and_then(|ps| ps.get(fp.partition as usize))
                {
                    None => pd.error_code = 3,
                    Some(p) => {
                        pd.high_watermark = p.end;
                        pd.last_stable_offset = p.end;
                        let mut out = BytesMut::new();
                        for (base, batch) in &p.batches {
                            let last = base + (&batch[23..27]).get_i32() as i64;
                            if last < fp.fetch_offset {
                                continue;
                            }
                            if !out.is_empty()
                                && out.len() + batch.len() > fp.partition_max_bytes as usize
                            {
                                break;
                            }
                            out.extend_from_slice(batch);
                        }
                        pd.records = Some(out.freeze());
                    }
                }
                tr.partitions.push(pd);
            }
            r.responses.push(tr);
        }
        r
    }

    fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let mut r = ListOffsetsResponse::default();
        let topics = self.topics.lock().expect("lock");
        for t in req.topics {
            let mut tr = ListOffsetsTopicResponse::default();
            tr.name = t.name.clone();
            for p in t.partitions {
                let mut pr = ListOffsetsPartitionResponse::default();
                pr.partition_index = p.partition_index;
                match topics
                    .get(t.name.0.as_str())
                    .and_then(|ps| ps.get(p.partition_index as usize))
                {
                    None => pr.error_code = 3,
                    Some(part) => pr.offset = if p.timestamp == -2 { 0 } else { part.end },
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }
}

impl MockBroker {
    fn find_coordinator(&self) -> FindCoordinatorResponse {
        let mut r = FindCoordinatorResponse::default();
        r.node_id = BrokerId(1);
        r.host = StrBytes::from_static_str("127.0.0.1");
        r.port = self.port as i32;
        r
    }

    fn join_group(&self, req: JoinGroupRequest, v: i16) -> JoinGroupResponse {
        let mut r = JoinGroupResponse::default();
        if req.member_id.is_empty() && v >= 4 {
            r.error_code = 79; // MEMBER_ID_REQUIRED
            r.member_id = StrBytes::from_static_str("member-1");
            return r;
        }
        let id = if req.member_id.is_empty() {
            StrBytes::from_static_str("member-1")
        } else {
            req.member_id
        };
        r.generation_id = 1;
        r.protocol_name = Some(StrBytes::from_static_str("range"));
        r.leader = id.clone();
        r.member_id = id.clone();
        let mut m = join_group_response::JoinGroupResponseMember::default();
        m.member_id = id;
        m.metadata = req
            .protocols
            .first()
            .map(|p| p.metadata.clone())
            .unwrap_or_default();
        r.members.push(m);
        r
    }

    fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let mut a = self.assignments.lock().expect("lock");
        for x in req.assignments {
            a.insert(x.member_id.to_string(), x.assignment);
        }
        let mut r = SyncGroupResponse::default();
        r.assignment = a.get(req.member_id.as_str()).cloned().unwrap_or_default();
        r
    }

    fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut r = OffsetCommitResponse::default();
        let mut c = self.committed.lock().expect("lock");
        for t in req.topics {
            let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
            tr.name = t.name.clone();
            for p in t.partitions {
                c.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
                let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }
}

impl MockBroker {
    fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let c = self.committed.lock().expect("lock");
        let mut r = OffsetFetchResponse::default();
        for t in req.topics.unwrap_or_default() {
            let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
            tr.name = t.name.clone();
            for p in t.partition_indexes {
                let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = c.get(&(t.name.0.to_string(), p)).copied().unwrap_or(-1);
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }
}

fn respond<T: Encodable + HeaderVersion>(msg: T, version: i16) -> anyhow::Result<(i16, Bytes)> {
    let mut b = BytesMut::new();
    msg.encode(&mut b, version)?;
    Ok((T::header_version(version), b.freeze()))
}
