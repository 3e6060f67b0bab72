//! One consumer group in memory: its state machine position, members and committed offsets.

use super::offsets_log::{GroupValue, MemberValue, OffsetValue};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Kafka's classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    /// Being deleted.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The answer to one JoinGroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(code: i16, member_id: &str) -> JoinResult {
        JoinResult {
            error: code,
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinResult::default()
        }
    }
}

/// The answer to one SyncGroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(code: i16) -> SyncResult {
        SyncResult {
            error: code,
            ..SyncResult::default()
        }
    }
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: Duration,
    pub session_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// A JoinGroup of this member is parked (the shell holds its reply channel).
    pub awaiting_join: bool,
    /// A SyncGroup of this member is parked.
    pub awaiting_sync: bool,
    pub last_heartbeat: Instant,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }

    pub fn is_alive(&self, now: Instant) -> bool {
        self.awaiting_join
            || self.awaiting_sync
            || now.saturating_duration_since(self.last_heartbeat) <= self.session_timeout
    }

    /// When the session runs out unless the member is heard from; None while a request of
    /// it is parked (a waiting member is alive).
    pub fn session_deadline(&self) -> Option<Instant> {
        if self.awaiting_join || self.awaiting_sync {
            return None;
        }
        Some(self.last_heartbeat + self.session_timeout)
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// In join order: the first member is the leader when the old leader is gone.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub pending: HashMap<String, Instant>,
    pub offsets: HashMap<(String, i32), OffsetValue>,
    /// Bumped on every rebalance so a stale join timer does nothing.
    pub rebalance_seq: u64,
    pub join_deadline: Instant,
    /// The latest the initial (delayed) join may be extended to.
    pub join_deadline_cap: Instant,
    /// The first rebalance of an empty group waits group.initial.rebalance.delay.ms for more
    /// members instead of completing as soon as everyone known has joined.
    pub initial_phase: bool,
    /// Wall-clock ms of the last state change (Kafka's currentStateTimestamp).
    pub state_timestamp: i64,
}

/// The time a decision is made at: monotonic for deadlines, wall-clock ms for the timestamps
/// Kafka stores (currentStateTimestamp).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    pub wall_ms: i64,
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            now: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    /// The same clock `d` later (tests step time with it).
    pub fn after(self, d: Duration) -> Clock {
        Clock {
            now: self.now + d,
            wall_ms: self.wall_ms + d.as_millis() as i64,
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Group {
    pub fn new(id: &str, clock: &Clock) -> Group {
        let now = clock.now;
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            offsets: HashMap::new(),
            rebalance_seq: 0,
            join_deadline: now,
            join_deadline_cap: now,
            initial_phase: false,
            state_timestamp: clock.wall_ms,
        }
    }

    pub fn set_state(&mut self, s: GroupState, clock: &Clock) {
        self.state = s;
        self.state_timestamp = clock.wall_ms;
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    pub fn member_by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Protocols every member supports, in the order of the first member's preference.
    pub fn candidate_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| self.members.iter().all(|m| m.supports(n)))
            .collect()
    }

    /// Whether a member with these protocols may join: same protocol type and at least one
    /// protocol in common with everyone already in the group.
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let cands = self.candidate_protocols();
        protocols.iter().any(|(n, _)| cands.contains(n))
    }

    /// Kafka's protocol vote: each member votes for its most preferred candidate.
    pub fn select_protocol(&self) -> Option<String> {
        let cands = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = cands.iter().map(|c| (c.clone(), 0)).collect();
        for m in &self.members {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| cands.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == n) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, v)| *v).max()?;
        votes.into_iter().find(|(_, v)| *v == best).map(|(c, _)| c)
    }

    pub fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(|m| m.awaiting_join)
    }

    pub fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    /// The join result for member `m` of the current generation.
    pub fn join_result_for(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if member_id == leader {
            self.members
                .iter()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
            skip_assignment: false,
        }
    }

    /// The group metadata record value for the current state.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .iter()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores membership from a loaded group metadata record.
    pub fn apply_value(&mut self, v: GroupValue, now: Instant) {
        self.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        self.generation = v.generation;
        self.leader = v.leader;
        self.state_timestamp = v.state_timestamp;
        let protocol = v.protocol.clone().unwrap_or_default();
        self.protocol = v.protocol;
        self.members = v
            .members
            .into_iter()
            .map(|m| Member {
                id: m.member_id,
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                awaiting_join: false,
                awaiting_sync: false,
                last_heartbeat: now,
            })
            .collect();
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// Topics the members subscribed to (consumer protocol subscriptions).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut out = Vec::new();
        for m in &self.members {
            out.extend(parse_subscription_topics(&m.metadata(&protocol))?);
        }
        Some(out)
    }
}

/// Topics of a ConsumerProtocolSubscription (every version starts with version + topics).
pub fn parse_subscription_topics(b: &[u8]) -> Option<Vec<String>> {
    let mut pos = 2usize;
    let n = i32::from_be_bytes(b.get(pos..pos + 4)?.try_into().ok()?);
    pos += 4;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let len = i16::from_be_bytes(b.get(pos..pos + 2)?.try_into().ok()?).max(0) as usize;
        pos += 2;
        out.push(String::from_utf8_lossy(b.get(pos..pos + len)?).into_owned());
        pos += len;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protos: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout: Duration::from_secs(1),
            session_timeout: Duration::from_secs(1),
            protocols: protos
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: false,
            awaiting_sync: false,
            last_heartbeat: Instant::now(),
        }
    }

    #[test]
    fn protocol_is_chosen_by_vote_among_common_ones() {
        let mut g = Group::new("g", &Clock::system());
        g.protocol_type = Some("consumer".into());
        g.members.push(member("a", &["range", "roundrobin"]));
        g.members.push(member("b", &["roundrobin", "range"]));
        g.members.push(member("c", &["roundrobin", "sticky"]));
        assert_eq!(g.candidate_protocols(), vec!["roundrobin".to_string()]);
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        assert!(g.accepts("consumer", &[("roundrobin".into(), Bytes::new())]));
        assert!(!g.accepts("consumer", &[("range".into(), Bytes::new())]));
        assert!(!g.accepts("connect", &[("roundrobin".into(), Bytes::new())]));
    }

    #[test]
    fn subscription_topics_parse() {
        let mut b = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["ab", "c"] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&[255, 255, 255, 255]);
        assert_eq!(
            parse_subscription_topics(&b),
            Some(vec!["ab".to_string(), "c".to_string()])
        );
        assert_eq!(parse_subscription_topics(&b[..5]), None);
    }
}
