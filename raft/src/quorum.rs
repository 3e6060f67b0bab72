//! The metadata quorum as the Raft leader sees it (Kafka's DescribeQuorum): voters, observers
//! (learners), the leader's term and commit point, and each replica's log end. Built from
//! openraft's metrics on the leader; other nodes ask the leader over controller RPC.

use crate::types::NodeId;
use openraft::{BasicNode, RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One voter or observer. Offsets are Kafka-style "next offset" positions: the Raft index of
/// the last entry plus one (openraft's first entry has index 0), so an empty log is 0.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: i32,
    /// -1 when the leader has not heard from the replica yet.
    pub log_end_offset: i64,
    /// Unix ms; -1 where openraft does not say (it tracks only the matched log id of a
    /// follower, not when it last fetched).
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumStatus {
    pub leader_id: i32,
    /// The Raft term (Kafka's leader epoch of the metadata log).
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<ReplicaStatus>,
    pub observers: Vec<ReplicaStatus>,
    /// Raft (controller) address of each member, as `host:port`.
    pub nodes: Vec<(i32, String)>,
}

/// The quorum as `m` shows it, or None when `m` is not from the current leader (only the
/// leader knows every replica's progress).
pub fn from_metrics(m: &RaftMetrics<NodeId, BasicNode>, now_ms: i64) -> Option<QuorumStatus> {
    if m.state != ServerState::Leader {
        return None;
    }
    let progress = m.replication.as_ref()?;
    let own_end = m.last_log_index.map_or(0, |i| to_offset(i + 1));
    let end_of = |id: NodeId| -> i64 {
        if id == m.id {
            return own_end;
        }
        match progress.get(&id) {
            Some(Some(log_id)) => to_offset(log_id.index + 1),
            Some(None) => 0,
            None => -1,
        }
    };
    let status = |id: NodeId| {
        let end = end_of(id);
        let leader = id == m.id;
        ReplicaStatus {
            id: to_id(id),
            log_end_offset: end,
            last_fetch_ms: if leader { now_ms } else { -1 },
            last_caught_up_ms: if leader { now_ms } else { -1 },
        }
    };
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let mut ends: Vec<i64> = voters.iter().map(|v| end_of(*v)).collect();
    // The commit point: the highest end a majority of voters has reached (what openraft
    // commits by; its metrics do not carry the committed index itself).
    ends.sort_unstable_by(|a, b| b.cmp(a));
    let high_watermark = ends
        .get(voters.len() / 2)
        .copied()
        .unwrap_or(0)
        .clamp(0, own_end);
    Some(QuorumStatus {
        leader_id: to_id(m.id),
        leader_epoch: i32::try_from(m.current_term).unwrap_or(i32::MAX),
        high_watermark,
        voters: voters.iter().map(|v| status(*v)).collect(),
        observers: membership.learner_ids().map(status).collect(),
        nodes: membership
            .nodes()
            .map(|(id, n)| (to_id(*id), n.addr.clone()))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
    })
}

fn to_offset(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_id(v: NodeId) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
