//! Cluster view: bootstrap from Metadata, broker connections (one shared, pipelined connection
//! per broker), partition leaders, and the control-plane calls (CreateTopics, DeleteTopics,
//! ListOffsets). All control-plane messages use kafka-protocol's generated types.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::errors::{error_name, needs_metadata_refresh, KafkaError};
use crate::client::{Connection, Security};

pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub leader: i32,
    pub leader_epoch: i32,
    pub error_code: i16,
}

/// ListOffsets' replica id of an ordinary consumer: the leader answers, up to the high watermark.
const CONSUMER_REPLICA_ID: i32 = -1;
/// ListOffsets' debug replica id: any replica answers from its own log, up to its log end.
const DEBUG_REPLICA_ID: i32 = -2;

/// ListOffsets for `parts` of `topic` at `timestamp`, asked as `replica_id`.
fn list_offsets_request(
    topic: &str,
    parts: &[i32],
    timestamp: i64,
    replica_id: i32,
) -> ListOffsetsRequest {
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions = parts
        .iter()
        .map(|&p| {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp
        })
        .collect();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(replica_id);
    req.topics = vec![t];
    req
}

/// One replica's own log end for a partition (or why it could not be read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaLogEnd {
    pub partition: i32,
    pub broker: i32,
    pub log_end: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub error_code: i16,
    /// Indexed by partition id.
    pub partitions: Vec<PartitionInfo>,
    /// Each partition's replica brokers (Metadata's replica list), indexed by partition id.
    pub replicas: Vec<Vec<i32>>,
}

impl TopicInfo {
    pub fn leader(&self, partition: i32) -> Option<i32> {
        self.partitions
            .get(partition as usize)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    /// Every partition has a leader.
    pub fn is_ready(&self) -> bool {
        self.error_code == 0
            && !self.partitions.is_empty()
            && self.partitions.iter().all(|p| p.leader >= 0)
    }
}

/// Reads a Metadata response's view of one topic.
pub fn topic_from_metadata(resp: &MetadataResponse, name: &str) -> Option<TopicInfo> {
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name))?;
    let count = t
        .partitions
        .iter()
        .map(|p| p.partition_index + 1)
        .max()
        .unwrap_or(0)
        .max(0) as usize;
    let mut partitions = vec![
        PartitionInfo {
            leader: -1,
            leader_epoch: -1,
            error_code: 5
        };
        count
    ];
    let mut replicas = vec![Vec::new(); count];
    for p in &t.partitions {
        if p.partition_index >= 0 {
            partitions[p.partition_index as usize] = PartitionInfo {
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                error_code: p.error_code,
            };
            replicas[p.partition_index as usize] = p.replica_nodes.iter().map(|b| b.0).collect();
        }
    }
    Some(TopicInfo {
        error_code: t.error_code,
        partitions,
        replicas,
    })
}

#[derive(Default)]
struct State {
    brokers: HashMap<i32, String>,
    controller: i32,
    topics: HashMap<String, Arc<TopicInfo>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    AlreadyExists,
}

pub struct Cluster {
    bootstrap: Vec<String>,
    client_id: String,
    security: Arc<Security>,
    pub request_timeout: Duration,
    pub verbose: bool,
    state: RwLock<State>,
    conns: Mutex<HashMap<String, Arc<Connection>>>,
    refresh_lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server and learns the brokers.
    pub async fn bootstrap(
        bootstrap: Vec<String>,
        security: Arc<Security>,
        request_timeout: Duration,
        verbose: bool,
    ) -> Result<Arc<Cluster>> {
        if bootstrap.is_empty() {
            bail!("no bootstrap servers");
        }
        let cluster = Arc::new(Cluster {
            bootstrap,
            client_id: "chronik-bench".to_string(),
            security,
            request_timeout,
            verbose,
            state: RwLock::new(State {
                controller: -1,
                ..State::default()
            }),
            conns: Mutex::new(HashMap::new()),
            refresh_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        });
        cluster
            .refresh(&[], None)
            .await
            .context("bootstrap failed")?;
        Ok(cluster)
    }

    /// A second view of the same cluster with its own connections, so that long-polling fetches
    /// never sit in front of produce requests on one connection (Kafka answers in order).
    pub async fn fork(&self) -> Result<Arc<Cluster>> {
        Cluster::bootstrap(
            self.bootstrap.clone(),
            self.security.clone(),
            self.request_timeout,
            self.verbose,
        )
        .await
    }

    pub fn bootstrap_servers(&self) -> &[String] {
        &self.bootstrap
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<TopicInfo>> {
        self.state
            .read()
            .ok()
            .and_then(|s| s.topics.get(name).cloned())
    }

    pub fn broker_addr(&self, id: i32) -> Option<String> {
        self.state
            .read()
            .ok()
            .and_then(|s| s.brokers.get(&id).cloned())
    }

    pub fn broker_count(&self) -> usize {
        self.state.read().map(|s| s.brokers.len()).unwrap_or(0)
    }

    /// The shared connection to `addr`, opened (or re-opened after a failure) on demand.
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        if let Ok(conns) = self.conns.lock() {
            if let Some(c) = conns.get(addr) {
                if !c.is_broken() {
                    return Ok(c.clone());
                }
            }
        }
        let conn = Connection::connect(addr, &self.client_id, self.request_timeout, &self.security)
            .await?;
        if self.verbose {
            eprintln!("connected to {addr}");
        }
        if let Ok(mut conns) = self.conns.lock() {
            if let Some(existing) = conns.get(addr) {
                if !existing.is_broken() {
                    return Ok(existing.clone()); // another task won the race; use its connection
                }
            }
            conns.insert(addr.to_string(), conn.clone());
        }
        Ok(conn)
    }

    pub async fn broker_connection(&self, id: i32) -> Result<Arc<Connection>> {
        let addr = self
            .broker_addr(id)
            .ok_or_else(|| anyhow!("broker {id} is not in the metadata"))?;
        self.connection(&addr).await
    }

    pub async fn leader_connection(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(i32, Arc<Connection>)> {
        let leader = self
            .topic(topic)
            .and_then(|t| t.leader(partition))
            .ok_or_else(|| anyhow!("no leader known for {topic}-{partition}"))?;
        Ok((leader, self.broker_connection(leader).await?))
    }

    /// Any working connection: bootstrap servers first, then known brokers.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut candidates = self.bootstrap.clone();
        if let Ok(s) = self.state.read() {
            candidates.extend(s.brokers.values().cloned());
        }
        let mut last = None;
        for addr in candidates {
            match self.connection(&addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no broker reachable")))
    }

    /// The controller (for CreateTopics/DeleteTopics on brokers that need it), else any broker.
    pub async fn controller_connection(&self) -> Result<Arc<Connection>> {
        let controller = self.state.read().map(|s| s.controller).unwrap_or(-1);
        if controller >= 0 {
            if let Ok(c) = self.broker_connection(controller).await {
                return Ok(c);
            }
        }
        self.any_connection().await
    }

    /// One Metadata request on `conn` (`topics` None = all topics).
    pub async fn metadata_from(
        &self,
        conn: &Connection,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse> {
        let version = conn.version_of::<MetadataRequest>(1, 12)?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut rt = MetadataRequestTopic::default();
                    rt.name = Some(topic_name(t));
                    rt
                })
                .collect()
        });
        conn.call(&req, version, self.request_timeout).await
    }

    /// Refreshes brokers and the named topics. With `seen` set, skips the refresh if another task
    /// already refreshed since that generation (coalesces refresh storms after a leader move).
    pub async fn refresh(&self, topics: &[String], seen: Option<u64>) -> Result<()> {
        let _guard = self.refresh_lock.lock().await;
        if let Some(g) = seen {
            if self.generation() > g {
                return Ok(());
            }
        }
        let conn = self.any_connection().await?;
        let resp = self.metadata_from(&conn, Some(topics)).await?;
        let mut brokers = HashMap::new();
        for b in &resp.brokers {
            brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        if self.verbose {
            eprintln!(
                "metadata from {}: brokers {:?}, controller {}",
                conn.addr(),
                brokers,
                resp.controller_id.0
            );
        }
        if let Ok(mut s) = self.state.write() {
            s.brokers = brokers;
            s.controller = resp.controller_id.0;
            for t in topics {
                match topic_from_metadata(&resp, t) {
                    Some(info) => {
                        if self.verbose {
                            eprintln!("metadata: {t}: {info:?}");
                        }
                        s.topics.insert(t.clone(), Arc::new(info));
                    }
                    None => {
                        s.topics.remove(t);
                    }
                }
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until the topic has a leader for every partition.
    pub async fn wait_for_topic(&self, topic: &str, timeout: Duration) -> Result<Arc<TopicInfo>> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("not in metadata");
        loop {
            match self.refresh(&[topic.to_string()], None).await {
                Ok(()) => {
                    if let Some(t) = self.topic(topic) {
                        if t.is_ready() {
                            return Ok(t);
                        }
                        last_error = if t.error_code != 0 {
                            error_name(t.error_code)
                        } else {
                            "some partitions have no leader".into()
                        };
                    }
                }
                Err(e) => last_error = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("topic '{topic}' is not usable after {timeout:?}: {last_error}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a topic. Retries while the cluster is still forming (NOT_CONTROLLER, or too few
    /// registered brokers for the replication factor) until the request timeout.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<CreateOutcome> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let conn = self.controller_connection().await?;
            let version = conn.version_of::<CreateTopicsRequest>(2, 7)?;
            let mut t = CreatableTopic::default();
            t.name = topic_name(topic);
            t.num_partitions = partitions;
            t.replication_factor = replication_factor;
            let mut req = CreateTopicsRequest::default();
            req.topics = vec![t];
            req.timeout_ms = self.request_timeout.as_millis().min(i32::MAX as u128) as i32;
            let resp = conn.call(&req, version, self.request_timeout).await?;
            let Some(result) = resp.topics.iter().find(|r| r.name.0.as_str() == topic) else {
                bail!("CreateTopics response does not mention '{topic}'");
            };
            let forming = match result.error_code {
                0 => return Ok(CreateOutcome::Created),
                36 => return Ok(CreateOutcome::AlreadyExists),
                41 | 7 => true,
                38 => self.broker_count() < replication_factor as usize,
                _ => false,
            };
            if !forming || Instant::now() >= deadline {
                return Err(KafkaError {
                    code: result.error_code,
                    context: format!(
                        "CreateTopics '{topic}'{}",
                        result
                            .error_message
                            .as_ref()
                            .map(|m| format!(" ({})", m.as_str()))
                            .unwrap_or_default()
                    ),
                }
                .into());
            }
            if self.verbose {
                eprintln!(
                    "CreateTopics '{topic}': {}; cluster still forming, retrying",
                    error_name(result.error_code)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.refresh(&[], None).await?;
        }
    }

    pub async fn delete_topics(&self, topics: &[String]) -> Result<()> {
        for chunk in topics.chunks(100) {
            let conn = self.controller_connection().await?;
            let version = conn.version_of::<DeleteTopicsRequest>(1, 6)?;
            let mut req = DeleteTopicsRequest::default();
            if version >= 6 {
                req.topics = chunk
                    .iter()
                    .map(|t| {
                        let mut s = DeleteTopicState::default();
                        s.name = Some(topic_name(t));
                        s
                    })
                    .collect();
            } else {
                req.topic_names = chunk.iter().map(|t| topic_name(t)).collect();
            }
            req.timeout_ms = self.request_timeout.as_millis().min(i32::MAX as u128) as i32;
            let resp = conn.call(&req, version, self.request_timeout).await?;
            for r in &resp.responses {
                if r.error_code != 0 {
                    bail!(
                        "DeleteTopics '{}' failed: {}",
                        r.name.as_ref().map(|n| n.0.as_str()).unwrap_or("?"),
                        error_name(r.error_code)
                    );
                }
            }
        }
        Ok(())
    }

    /// Every replica's own log end for each partition: ListOffsets LATEST with the debug
    /// replica id (-2), which any replica answers from its local log (Kafka does the same), sent
    /// to each broker for the partitions it holds. Shows whether the followers hold what the
    /// leader acknowledged. A broker that cannot be asked is reported with the reason.
    pub async fn replica_log_ends(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<ReplicaLogEnd>> {
        let info = self
            .topic(topic)
            .ok_or_else(|| anyhow!("topic '{topic}' is not in the metadata"))?;
        let mut by_broker: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in partitions {
            for &b in info.replicas.get(p as usize).into_iter().flatten() {
                by_broker.entry(b).or_default().push(p);
            }
        }
        let mut out = Vec::new();
        for (broker, parts) in by_broker {
            let answers = self.own_log_ends(broker, topic, &parts).await;
            for p in parts {
                let log_end = match &answers {
                    Ok(m) => m
                        .get(&p)
                        .cloned()
                        .unwrap_or_else(|| Err("not in the answer".to_string())),
                    Err(e) => Err(e.to_string()),
                };
                out.push(ReplicaLogEnd {
                    partition: p,
                    broker,
                    log_end: log_end.as_ref().ok().copied(),
                    error: log_end.err(),
                });
            }
        }
        out.sort_by_key(|r| (r.partition, r.broker));
        Ok(out)
    }

    /// One broker's own log ends (replica id -2) for `parts` of `topic`, or its error per partition.
    async fn own_log_ends(
        &self,
        broker: i32,
        topic: &str,
        parts: &[i32],
    ) -> Result<HashMap<i32, std::result::Result<i64, String>>> {
        let conn = self.broker_connection(broker).await?;
        let version = conn.version_of::<ListOffsetsRequest>(1, 7)?;
        let req = list_offsets_request(topic, parts, LATEST, DEBUG_REPLICA_ID);
        let resp = conn.call(&req, version, self.request_timeout).await?;
        Ok(resp
            .topics
            .iter()
            .filter(|rt| rt.name.0.as_str() == topic)
            .flat_map(|rt| rt.partitions.iter())
            .map(|rp| {
                let v = if rp.error_code == 0 {
                    Ok(rp.offset)
                } else {
                    Err(error_name(rp.error_code))
                };
                (rp.partition_index, v)
            })
            .collect())
    }

    /// Offsets at `timestamp` (LATEST = end offset, EARLIEST = log start) for each partition,
    /// asked of each partition's leader; retries leader moves with a metadata refresh.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<HashMap<i32, i64>> {
        let mut result = HashMap::new();
        let mut todo: Vec<i32> = partitions.to_vec();
        let mut attempt = 0;
        while !todo.is_empty() {
            attempt += 1;
            if attempt > 10 {
                bail!("ListOffsets for {topic} partitions {todo:?} kept failing");
            }
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                let gen = self.generation();
                self.refresh(&[topic.to_string()], Some(gen)).await?;
            }
            let info = self
                .topic(topic)
                .ok_or_else(|| anyhow!("topic '{topic}' is not in the metadata"))?;
            let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
            for &p in &todo {
                by_leader
                    .entry(info.leader(p).unwrap_or(-1))
                    .or_default()
                    .push(p);
            }
            let mut retry = Vec::new();
            for (leader, parts) in by_leader {
                if leader < 0 {
                    retry.extend(parts);
                    continue;
                }
                let conn = match self.broker_connection(leader).await {
                    Ok(c) => c,
                    Err(_) => {
                        retry.extend(parts);
                        continue;
                    }
                };
                let version = conn.version_of::<ListOffsetsRequest>(1, 7)?;
                let req = list_offsets_request(topic, &parts, timestamp, CONSUMER_REPLICA_ID);
                let resp = match conn.call(&req, version, self.request_timeout).await {
                    Ok(r) => r,
                    Err(_) => {
                        retry.extend(parts);
                        continue;
                    }
                };
                let mut answered = Vec::new();
                for rt in resp.topics.iter().filter(|rt| rt.name.0.as_str() == topic) {
                    for rp in &rt.partitions {
                        answered.push(rp.partition_index);
                        if rp.error_code == 0 {
                            result.insert(rp.partition_index, rp.offset);
                        } else if needs_metadata_refresh(rp.error_code) {
                            retry.push(rp.partition_index);
                        } else {
                            bail!(
                                "ListOffsets {topic}-{} failed: {}",
                                rp.partition_index,
                                error_name(rp.error_code)
                            );
                        }
                    }
                }
                retry.extend(parts.iter().filter(|p| !answered.contains(p)));
            }
            todo = retry;
        }
        Ok(result)
    }
}
