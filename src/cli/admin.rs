//! A blocking Kafka admin client as the Java AdminClient finds its way: bootstrap from any
//! listed broker, learn the brokers and the controller from Metadata, send topic changes to the
//! controller, group requests to the group's coordinator (FindCoordinator), offset look-ups to
//! each partition's leader.

use super::conn::Conn;
use super::CliError;
use crate::kafka::errors;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// ListOffsets timestamps for the first and the next offset of a partition.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

/// Retriable answers (no controller or coordinator yet, leader moving) are retried this long.
const RETRY_FOR: Duration = Duration::from_secs(15);
const RETRY_EVERY: Duration = Duration::from_millis(250);

pub struct Admin {
    bootstrap: Conn,
    /// Broker id → HOST:PORT, from the latest Metadata.
    brokers: BTreeMap<i32, String>,
    controller: i32,
    conns: HashMap<i32, Conn>,
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

impl Admin {
    /// Connects to the first listed broker that answers Metadata.
    pub fn connect(bootstrap: &[String]) -> Result<Admin, CliError> {
        let mut failures = Vec::new();
        for addr in bootstrap.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            let conn = match Conn::connect(addr) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            let mut admin = Admin {
                bootstrap: conn,
                brokers: BTreeMap::new(),
                controller: -1,
                conns: HashMap::new(),
            };
            match admin.metadata(Some(&[])) {
                Ok(_) => return Ok(admin),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(CliError::Other(format!(
            "no broker reachable ({}); give a running broker with --brokers HOST:PORT",
            if failures.is_empty() {
                "no address given".to_string()
            } else {
                failures.join("; ")
            }
        )))
    }

    /// Metadata for these topics (None: all, empty: none, only brokers and controller); keeps
    /// the brokers and the controller it names.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, CliError> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut x = MetadataRequestTopic::default();
                    x.name = Some(topic_name(t));
                    x
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let resp: MetadataResponse = self.bootstrap.call(ApiKey::Metadata, 12, &req)?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller = resp.controller_id.0;
        Ok(resp)
    }

    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.keys().copied().collect()
    }

    /// A connection to broker `id` (opened once, kept for the command).
    pub fn broker(&mut self, id: i32) -> Result<&mut Conn, CliError> {
        if !self.conns.contains_key(&id) {
            let addr = self
                .brokers
                .get(&id)
                .ok_or_else(|| CliError::Other(format!("broker {id} is not in the metadata")))?;
            let c = Conn::connect(addr).map_err(|e| format!("broker {id}: {e}"))?;
            self.conns.insert(id, c);
        }
        self.conns
            .get_mut(&id)
            .ok_or_else(|| CliError::Other(format!("broker {id}: no connection")))
    }

    /// The controller's connection (the bootstrap broker while none is known: it forwards).
    pub fn controller(&mut self) -> Result<&mut Conn, CliError> {
        if self.controller < 0 || !self.brokers.contains_key(&self.controller) {
            return Ok(&mut self.bootstrap);
        }
        self.broker(self.controller)
    }

    /// Runs `f` against the controller, again after a Metadata refresh while it answers
    /// NOT_CONTROLLER (the controller moved), for at most `RETRY_FOR`.
    pub fn on_controller<T>(
        &mut self,
        mut f: impl FnMut(&mut Conn) -> Result<T, CliError>,
        moved: impl Fn(&T) -> bool,
    ) -> Result<T, CliError> {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let r = f(self.controller()?)?;
            if !moved(&r) || Instant::now() >= deadline {
                return Ok(r);
            }
            std::thread::sleep(RETRY_EVERY);
            self.conns.remove(&self.controller);
            self.metadata(Some(&[]))?;
        }
    }

    /// The coordinator of `group`: its broker id and connection.
    pub fn coordinator(&mut self, group: &str) -> Result<(i32, &mut Conn), CliError> {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let mut req = FindCoordinatorRequest::default();
            req.key = StrBytes::from_string(group.to_string());
            req.key_type = 0;
            let r: FindCoordinatorResponse =
                self.bootstrap.call(ApiKey::FindCoordinator, 3, &req)?;
            let retriable = r.error_code == errors::COORDINATOR_NOT_AVAILABLE
                || r.error_code == errors::COORDINATOR_LOAD_IN_PROGRESS;
            if r.error_code == errors::NONE {
                let id = r.node_id.0;
                // A broker newer than our metadata: learn its address from the answer.
                self.brokers
                    .entry(id)
                    .or_insert_with(|| format!("{}:{}", r.host.as_str(), r.port));
                return Ok((id, self.broker(id)?));
            }
            if !retriable || Instant::now() >= deadline {
                return Err(CliError::kafka(
                    format!("group {group}"),
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                ));
            }
            std::thread::sleep(RETRY_EVERY);
        }
    }

    /// Each partition's earliest or latest offset (`EARLIEST`, `LATEST`), asked of its leader;
    /// a partition without a leader or whose leader refuses maps to the error code.
    pub fn list_offsets(
        &mut self,
        partitions: &[(String, i32, i32)],
        timestamp: i64,
    ) -> HashMap<(String, i32), Result<i64, i16>> {
        let mut out = HashMap::new();
        let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
        for (t, p, leader) in partitions {
            if *leader < 0 {
                out.insert((t.clone(), *p), Err(errors::LEADER_NOT_AVAILABLE));
            } else {
                by_leader
                    .entry(*leader)
                    .or_default()
                    .entry(t.clone())
                    .or_default()
                    .push(*p);
            }
        }
        for (leader, topics) in by_leader {
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            req.isolation_level = 0;
            req.topics = topics
                .iter()
                .map(|(t, ps)| {
                    let mut lt = ListOffsetsTopic::default();
                    lt.name = topic_name(t);
                    lt.partitions = ps
                        .iter()
                        .map(|p| {
                            let mut lp = ListOffsetsPartition::default();
                            lp.partition_index = *p;
                            lp.current_leader_epoch = -1;
                            lp.timestamp = timestamp;
                            lp
                        })
                        .collect();
                    lt
                })
                .collect();
            let resp: Result<ListOffsetsResponse, CliError> = self
                .broker(leader)
                .and_then(|c| Ok(c.call(ApiKey::ListOffsets, 7, &req)?));
            let Ok(resp) = resp else {
                for (t, ps) in &topics {
                    for p in ps {
                        out.insert((t.clone(), *p), Err(errors::LEADER_NOT_AVAILABLE));
                    }
                }
                continue;
            };
            for t in &resp.topics {
                for p in &t.partitions {
                    let v = if p.error_code == errors::NONE {
                        Ok(p.offset)
                    } else {
                        Err(p.error_code)
                    };
                    out.insert((t.name.0.to_string(), p.partition_index), v);
                }
            }
        }
        out
    }
}
