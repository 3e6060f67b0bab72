//! One member of a consumer group, speaking the classic protocol as Kafka's clients do:
//! FindCoordinator, JoinGroup (with the MEMBER_ID_REQUIRED second join), SyncGroup (the
//! elected leader computes the range assignment), Heartbeat, OffsetCommit, OffsetFetch and
//! LeaveGroup.
//!
//! Each member has its own connection to the coordinator: a broker answers the requests of one
//! connection in order, so a JoinGroup parked for a rebalance must not sit in front of another
//! member's requests, and a heartbeat must not wait behind a long-polling fetch.
//!
//! Errors are handled as the Java client handles them: REBALANCE_IN_PROGRESS and
//! ILLEGAL_GENERATION rejoin, UNKNOWN_MEMBER_ID rejoins with a new id, the coordinator errors
//! (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS) look the
//! coordinator up again after a short back-off; everything else fails the member, naming the
//! step. Every wait is bounded by the caller's deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::protocol::{assign_group, decode_assignment, encode_subscription};
use crate::client::errors::{error_name, ClientError};
use crate::client::Connection;
use crate::metadata::{topic_name, Cluster};

pub const NONE: i16 = 0;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const MEMBER_ID_REQUIRED: i16 = 79;

/// How long to wait before retrying after a coordinator error or a broken connection.
const BACKOFF: Duration = Duration::from_millis(100);

/// The coordinator moved, is starting, or is loading: find it again and retry.
pub fn coordinator_moved(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

/// What every member of a run shares.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    pub group: String,
    pub topic: String,
    /// Partitions of the topic, for the leader's assignment.
    pub partitions: i32,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub request_timeout: Duration,
    pub verbose: bool,
}

/// What a member holds after a completed join and sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub generation: i32,
    pub partitions: Vec<i32>,
    pub leader: bool,
    /// Members of the generation (known to the leader only; 0 for followers).
    pub members: usize,
}

pub struct GroupMember {
    cluster: Arc<Cluster>,
    settings: Arc<MemberSettings>,
    coordinator: Option<Arc<Connection>>,
    pub member_id: String,
    pub generation: i32,
    /// Error codes met and handled (rejoins, coordinator moves), by name.
    pub handled: BTreeMap<String, u64>,
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn group_id(g: &str) -> GroupId {
    GroupId(s(g))
}

impl GroupMember {
    pub fn new(cluster: Arc<Cluster>, settings: Arc<MemberSettings>) -> GroupMember {
        GroupMember {
            cluster,
            settings,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            handled: BTreeMap::new(),
        }
    }

    fn note(&mut self, code: i16, step: &str) {
        *self.handled.entry(error_name(code)).or_insert(0) += 1;
        if self.settings.verbose {
            eprintln!(
                "group {}: {step}: {} (handled)",
                self.settings.group,
                error_name(code)
            );
        }
    }

    fn lost_coordinator(&mut self, step: &str, e: &anyhow::Error) {
        self.coordinator = None;
        *self
            .handled
            .entry(format!("{step}: CLIENT_ERROR"))
            .or_insert(0) += 1;
        if self.settings.verbose {
            eprintln!("group {}: {step}: {e:#} (retried)", self.settings.group);
        }
    }

    /// Forgets the coordinator connection (a new one is opened when next needed), e.g. after
    /// abandoning a request whose answer would block the ones behind it.
    pub fn drop_connection(&mut self) {
        self.coordinator = None;
    }

    /// The coordinator connection, looked up (FindCoordinator) and opened when needed.
    pub async fn ensure_coordinator(&mut self, deadline: Instant) -> Result<Arc<Connection>> {
        loop {
            if let Some(c) = &self.coordinator {
                if !c.is_broken() {
                    return Ok(c.clone());
                }
            }
            match self.find_coordinator().await {
                Ok(c) => {
                    self.coordinator = Some(c.clone());
                    return Ok(c);
                }
                // A broker without consumer groups will not grow them on a retry.
                Err(e) if Instant::now() + BACKOFF < deadline && !unsupported(&e) => {
                    self.lost_coordinator("FindCoordinator", &e);
                    tokio::time::sleep(BACKOFF).await;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "FindCoordinator for group '{}'",
                        self.settings.group
                    )))
                }
            }
        }
    }

    async fn find_coordinator(&self) -> Result<Arc<Connection>> {
        let timeout = self.settings.request_timeout;
        let any = self.cluster.any_connection().await?;
        let v = any.version_of::<FindCoordinatorRequest>(0, 3)?;
        let mut fc = FindCoordinatorRequest::default();
        fc.key = s(&self.settings.group);
        fc.key_type = 0;
        let resp = any.call(&fc, v, timeout).await?;
        if resp.error_code != NONE {
            bail!("FindCoordinator: {}", error_name(resp.error_code));
        }
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        // Our own connection, not the cluster's shared one (see the module comment).
        Connection::connect(&addr, "chronik-bench", timeout, any.security())
            .await
            .with_context(|| format!("connecting to coordinator {} at {addr}", resp.node_id.0))
    }

    /// Joins (or rejoins) the group and syncs, until this member holds an assignment for a
    /// generation. The time of the first JoinGroup is the caller's: this sends it at once when
    /// the coordinator connection is open (see [`Self::ensure_coordinator`]).
    pub async fn join(&mut self, deadline: Instant) -> Result<Assignment> {
        loop {
            if Instant::now() >= deadline {
                bail!(
                    "group '{}': no assignment before the deadline",
                    self.settings.group
                );
            }
            let conn = self.ensure_coordinator(deadline).await?;
            let joined = match self.send_join(&conn, deadline).await {
                Ok(r) => r,
                Err(e) => {
                    self.lost_coordinator("JoinGroup", &e);
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
            match joined.error_code {
                NONE => {}
                MEMBER_ID_REQUIRED => {
                    // The coordinator handed out our id: join again with it at once.
                    self.member_id = joined.member_id.as_str().to_string();
                    self.note(MEMBER_ID_REQUIRED, "JoinGroup");
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    self.note(UNKNOWN_MEMBER_ID, "JoinGroup");
                    continue;
                }
                code @ (REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION) => {
                    self.note(code, "JoinGroup");
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                code if coordinator_moved(code) => {
                    self.note(code, "JoinGroup");
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                code => bail!(
                    "group '{}': JoinGroup failed: {}",
                    self.settings.group,
                    error_name(code)
                ),
            }
            self.member_id = joined.member_id.as_str().to_string();
            self.generation = joined.generation_id;
            let leader = joined.leader.as_str() == self.member_id;
            let assignments = if leader {
                let members: Vec<(String, Bytes)> = joined
                    .members
                    .iter()
                    .map(|m| (m.member_id.as_str().to_string(), m.metadata.clone()))
                    .collect();
                assign_group(&members, &self.settings.topic, self.settings.partitions)?
            } else {
                Vec::new()
            };
            let synced = match self.send_sync(&conn, assignments).await {
                Ok(r) => r,
                Err(e) => {
                    self.lost_coordinator("SyncGroup", &e);
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
            };
            match synced.error_code {
                NONE => {
                    let partitions = decode_assignment(synced.assignment, &self.settings.topic)
                        .context("SyncGroup: unreadable assignment")?;
                    return Ok(Assignment {
                        generation: self.generation,
                        partitions,
                        leader,
                        members: joined.members.len(),
                    });
                }
                code @ (REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION) => {
                    self.note(code, "SyncGroup");
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    self.note(UNKNOWN_MEMBER_ID, "SyncGroup");
                    continue;
                }
                code if coordinator_moved(code) => {
                    self.note(code, "SyncGroup");
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                code => bail!(
                    "group '{}': SyncGroup failed: {}",
                    self.settings.group,
                    error_name(code)
                ),
            }
        }
    }

    async fn send_join(&self, conn: &Connection, deadline: Instant) -> Result<JoinGroupResponse> {
        let v = conn.version_of::<JoinGroupRequest>(0, 7)?;
        let mut proto = JoinGroupRequestProtocol::default();
        proto.name = s("range");
        proto.metadata = encode_subscription(&self.settings.topic)?;
        let mut jg = JoinGroupRequest::default();
        jg.group_id = group_id(&self.settings.group);
        jg.session_timeout_ms = self.settings.session_timeout_ms;
        if v >= 1 {
            jg.rebalance_timeout_ms = self.settings.rebalance_timeout_ms;
        }
        jg.member_id = s(&self.member_id);
        jg.protocol_type = s("consumer");
        jg.protocols = vec![proto];
        // The coordinator parks a JoinGroup until the join phase ends (at most the rebalance
        // timeout); never past the caller's deadline.
        let longest = self.settings.request_timeout
            + Duration::from_millis(self.settings.rebalance_timeout_ms.max(0) as u64);
        let remaining = deadline.saturating_duration_since(Instant::now());
        conn.call(&jg, v, longest.min(remaining.max(BACKOFF))).await
    }

    async fn send_sync(
        &self,
        conn: &Connection,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncGroupResponse> {
        let v = conn.version_of::<SyncGroupRequest>(0, 4)?;
        let mut sg = SyncGroupRequest::default();
        sg.group_id = group_id(&self.settings.group);
        sg.generation_id = self.generation;
        sg.member_id = s(&self.member_id);
        sg.assignments = assignments
            .into_iter()
            .map(|(m, a)| {
                let mut x = SyncGroupRequestAssignment::default();
                x.member_id = s(&m);
                x.assignment = a;
                x
            })
            .collect();
        conn.call(&sg, v, self.settings.request_timeout).await
    }

    fn conn(&self) -> Result<Arc<Connection>> {
        self.coordinator
            .clone()
            .ok_or_else(|| anyhow!("no coordinator connection"))
    }

    /// One heartbeat for the current generation; the Kafka error code.
    pub async fn heartbeat(&mut self) -> Result<i16> {
        let conn = self
            .ensure_coordinator(Instant::now() + self.settings.request_timeout)
            .await?;
        let v = conn.version_of::<HeartbeatRequest>(0, 4)?;
        let mut hb = HeartbeatRequest::default();
        hb.group_id = group_id(&self.settings.group);
        hb.generation_id = self.generation;
        hb.member_id = s(&self.member_id);
        match conn.call(&hb, v, self.settings.request_timeout).await {
            Ok(r) => {
                if coordinator_moved(r.error_code) {
                    self.coordinator = None;
                }
                Ok(r.error_code)
            }
            Err(e) => {
                self.lost_coordinator("Heartbeat", &e);
                Err(e)
            }
        }
    }

    /// Commits `offsets` (partition, next offset to read) for the current generation; the first
    /// partition error code, or 0.
    pub async fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<i16> {
        if offsets.is_empty() {
            return Ok(NONE);
        }
        let conn = self.conn()?;
        let v = conn
            .version_of::<OffsetCommitRequest>(2, 8)
            .context("OffsetCommit")?;
        let mut req = OffsetCommitRequest::default();
        req.group_id = group_id(&self.settings.group);
        req.generation_id_or_member_epoch = self.generation;
        req.member_id = s(&self.member_id);
        req.topics = vec![commit_topic(&self.settings.topic, offsets)];
        let resp = conn
            .call(&req, v, self.settings.request_timeout)
            .await
            .context("OffsetCommit")?;
        Ok(first_commit_error(&resp))
    }

    /// Committed offsets of `partitions` (absent: nothing committed), retried while the
    /// coordinator moves or loads.
    pub async fn fetch_committed(
        &mut self,
        partitions: &[i32],
        deadline: Instant,
    ) -> Result<HashMap<i32, i64>> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        loop {
            let conn = self.ensure_coordinator(deadline).await?;
            let v = conn
                .version_of::<OffsetFetchRequest>(1, 7)
                .context("OffsetFetch")?;
            let mut t = OffsetFetchRequestTopic::default();
            t.name = topic_name(&self.settings.topic);
            t.partition_indexes = partitions.to_vec();
            let mut req = OffsetFetchRequest::default();
            req.group_id = group_id(&self.settings.group);
            req.topics = Some(vec![t]);
            let resp = match conn.call(&req, v, self.settings.request_timeout).await {
                Ok(r) => r,
                Err(e) if Instant::now() + BACKOFF < deadline => {
                    self.lost_coordinator("OffsetFetch", &e);
                    tokio::time::sleep(BACKOFF).await;
                    continue;
                }
                Err(e) => return Err(e.context("OffsetFetch")),
            };
            let mut code = resp.error_code;
            let mut out = HashMap::new();
            for t in &resp.topics {
                for p in &t.partitions {
                    if p.error_code != NONE && code == NONE {
                        code = p.error_code;
                    }
                    if p.committed_offset >= 0 {
                        out.insert(p.partition_index, p.committed_offset);
                    }
                }
            }
            match code {
                NONE => return Ok(out),
                c if coordinator_moved(c) && Instant::now() + BACKOFF < deadline => {
                    self.note(c, "OffsetFetch");
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                }
                c => bail!("OffsetFetch failed: {}", error_name(c)),
            }
        }
    }

    /// Leaves the group (the others rebalance at once instead of after our session timeout).
    pub async fn leave(&mut self) -> Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let conn = self
            .ensure_coordinator(Instant::now() + self.settings.request_timeout)
            .await?;
        let v = conn.version_of::<LeaveGroupRequest>(0, 4)?;
        let mut req = LeaveGroupRequest::default();
        req.group_id = group_id(&self.settings.group);
        if v >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = s(&self.member_id);
            req.members = vec![m];
        } else {
            req.member_id = s(&self.member_id);
        }
        let resp = conn.call(&req, v, self.settings.request_timeout).await?;
        let code = match resp.error_code {
            NONE => resp
                .members
                .iter()
                .map(|m| m.error_code)
                .find(|&c| c != NONE)
                .unwrap_or(NONE),
            c => c,
        };
        self.member_id.clear();
        if code != NONE {
            bail!("LeaveGroup failed: {}", error_name(code));
        }
        Ok(())
    }
}

fn unsupported(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ClientError>(),
        Some(ClientError::UnsupportedVersion(_))
    )
}

fn commit_topic(topic: &str, offsets: &[(i32, i64)]) -> OffsetCommitRequestTopic {
    let mut t = OffsetCommitRequestTopic::default();
    t.name = topic_name(topic);
    t.partitions = offsets
        .iter()
        .map(|&(p, o)| {
            let mut cp = OffsetCommitRequestPartition::default();
            cp.partition_index = p;
            cp.committed_offset = o;
            cp
        })
        .collect();
    t
}

fn first_commit_error(resp: &kafka_protocol::messages::OffsetCommitResponse) -> i16 {
    resp.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.error_code)
        .find(|&c| c != NONE)
        .unwrap_or(NONE)
}

/// Commits `offsets` for `group` outside group management (generation -1, no member id), as
/// an admin resetting offsets does; a group with live members refuses it.
pub async fn commit_as_admin(
    cluster: &Arc<Cluster>,
    settings: &Arc<MemberSettings>,
    offsets: &[(i32, i64)],
    deadline: Instant,
) -> Result<()> {
    let mut m = GroupMember::new(cluster.clone(), settings.clone());
    loop {
        m.ensure_coordinator(deadline).await?;
        match m.commit(offsets).await {
            Ok(NONE) => return Ok(()),
            Ok(c) if coordinator_moved(c) && Instant::now() + BACKOFF < deadline => {
                m.coordinator = None;
                tokio::time::sleep(BACKOFF).await;
            }
            Ok(c @ (UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS)) => bail!(
                "group '{}' has live members ({}): wait for their session timeout or use another group",
                settings.group,
                error_name(c)
            ),
            Ok(c) => bail!("OffsetCommit failed: {}", error_name(c)),
            Err(e) if Instant::now() + BACKOFF < deadline => {
                m.lost_coordinator("OffsetCommit", &e);
                tokio::time::sleep(BACKOFF).await;
            }
            Err(e) => return Err(e),
        }
    }
}
