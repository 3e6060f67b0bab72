//! Consumer-group membership for `--consumer-group`: FindCoordinator, JoinGroup (with the
//! MEMBER_ID_REQUIRED second join), SyncGroup (range assignment when we lead), Heartbeat,
//! OffsetCommit and LeaveGroup. The bench joins as one member and spreads the partitions it is
//! assigned over its fetch tasks. Every failure names the step that failed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::client::errors::error_name;
use crate::client::Connection;
use crate::metadata::{topic_name, Cluster};

const SESSION_TIMEOUT_MS: i32 = 30_000;
const REBALANCE_TIMEOUT_MS: i32 = 60_000;

pub struct GroupMember {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    pub partitions: Vec<i32>,
    coordinator: Arc<Connection>,
    topic: String,
    timeout: Duration,
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn group_id(g: &str) -> GroupId {
    GroupId(s(g))
}

/// The embedded consumer protocol: a big-endian i16 version, then the struct.
fn encode_embedded<T: Encodable>(value: &T, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    value.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

pub fn encode_assignment(topic: &str, partitions: &[i32]) -> Result<Bytes> {
    let mut tp = consumer_protocol_assignment::TopicPartition::default();
    tp.topic = topic_name(topic);
    tp.partitions = partitions.to_vec();
    let mut a = ConsumerProtocolAssignment::default();
    a.assigned_partitions = vec![tp];
    encode_embedded(&a, 0)
}

pub fn decode_assignment(mut data: Bytes, topic: &str) -> Result<Vec<i32>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.len() < 2 {
        bail!("assignment of {} bytes", data.len());
    }
    let version = data.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut data, version)?;
    Ok(a.assigned_partitions
        .iter()
        .filter(|tp| tp.topic.0.as_str() == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect())
}

/// Kafka's range assignor for one topic: members sorted by id, contiguous partition ranges.
pub fn range_assign(members: &[String], partitions: i32) -> Vec<(String, Vec<i32>)> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let n = sorted.len().max(1) as i32;
    let per = partitions / n;
    let extra = partitions % n;
    let mut next = 0;
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let count = per + if (i as i32) < extra { 1 } else { 0 };
            let parts = (next..next + count).collect();
            next += count;
            (m, parts)
        })
        .collect()
}

impl GroupMember {
    pub async fn join(
        cluster: &Cluster,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<GroupMember> {
        let timeout = cluster.request_timeout;
        let any = cluster
            .any_connection()
            .await
            .context("FindCoordinator: no broker")?;
        let v = any
            .version_of::<FindCoordinatorRequest>(0, 3)
            .context("FindCoordinator")?;
        let mut fc = FindCoordinatorRequest::default();
        fc.key = s(group);
        fc.key_type = 0;
        let resp = any.call(&fc, v, timeout).await.context("FindCoordinator")?;
        if resp.error_code != 0 {
            bail!("FindCoordinator failed: {}", error_name(resp.error_code));
        }
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        let coordinator = cluster.connection(&addr).await.with_context(|| {
            format!(
                "connecting to group coordinator {} at {addr}",
                resp.node_id.0
            )
        })?;

        let mut sub = ConsumerProtocolSubscription::default();
        sub.topics = vec![s(topic)];
        let metadata = encode_embedded(&sub, 0)?;
        let jv = coordinator
            .version_of::<JoinGroupRequest>(0, 7)
            .context("JoinGroup")?;
        let mut member_id = String::new();
        let mut attempt = 0;
        let joined = loop {
            attempt += 1;
            let mut proto = JoinGroupRequestProtocol::default();
            proto.name = s("range");
            proto.metadata = metadata.clone();
            let mut jg = JoinGroupRequest::default();
            jg.group_id = group_id(group);
            jg.session_timeout_ms = SESSION_TIMEOUT_MS;
            if jv >= 1 {
                jg.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
            }
            jg.member_id = s(&member_id);
            jg.protocol_type = s("consumer");
            jg.protocols = vec![proto];
            let join_timeout = timeout + Duration::from_millis(REBALANCE_TIMEOUT_MS as u64);
            let resp = coordinator
                .call(&jg, jv, join_timeout)
                .await
                .context("JoinGroup")?;
            match resp.error_code {
                0 => break resp,
                79 if attempt < 3 => {
                    // MEMBER_ID_REQUIRED: join again with the id the coordinator gave us.
                    member_id = resp.member_id.as_str().to_string();
                }
                code => bail!("JoinGroup failed: {}", error_name(code)),
            }
        };
        member_id = joined.member_id.as_str().to_string();
        let generation = joined.generation_id;
        let leader = joined.leader.as_str() == member_id;

        let sv = coordinator
            .version_of::<SyncGroupRequest>(0, 4)
            .context("SyncGroup")?;
        let mut sg = SyncGroupRequest::default();
        sg.group_id = group_id(group);
        sg.generation_id = generation;
        sg.member_id = s(&member_id);
        if leader {
            let members: Vec<String> = joined
                .members
                .iter()
                .map(|m| m.member_id.as_str().to_string())
                .collect();
            let members = if members.is_empty() {
                vec![member_id.clone()]
            } else {
                members
            };
            for (m, parts) in range_assign(&members, partitions) {
                let mut a = SyncGroupRequestAssignment::default();
                a.member_id = s(&m);
                a.assignment = encode_assignment(topic, &parts)?;
                sg.assignments.push(a);
            }
        }
        let resp = coordinator
            .call(&sg, sv, timeout)
            .await
            .context("SyncGroup")?;
        if resp.error_code != 0 {
            bail!("SyncGroup failed: {}", error_name(resp.error_code));
        }
        let parts = decode_assignment(resp.assignment.clone(), topic)
            .context("SyncGroup: bad assignment")?;
        Ok(GroupMember {
            group: group.to_string(),
            member_id,
            generation,
            partitions: parts,
            coordinator,
            topic: topic.to_string(),
            timeout,
        })
    }

    /// One heartbeat; returns the error code (27 = REBALANCE_IN_PROGRESS).
    pub async fn heartbeat(&self) -> Result<i16> {
        let v = self.coordinator.version_of::<HeartbeatRequest>(0, 4)?;
        let mut hb = HeartbeatRequest::default();
        hb.group_id = group_id(&self.group);
        hb.generation_id = self.generation;
        hb.member_id = s(&self.member_id);
        Ok(self
            .coordinator
            .call(&hb, v, self.timeout)
            .await?
            .error_code)
    }

    pub async fn commit(&self, offsets: &[(i32, i64)]) -> Result<()> {
        let v = self
            .coordinator
            .version_of::<OffsetCommitRequest>(2, 8)
            .context("OffsetCommit")?;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = topic_name(&self.topic);
        t.partitions = offsets
            .iter()
            .map(|&(p, o)| {
                let mut cp = OffsetCommitRequestPartition::default();
                cp.partition_index = p;
                cp.committed_offset = o;
                cp
            })
            .collect();
        let mut req = OffsetCommitRequest::default();
        req.group_id = group_id(&self.group);
        req.generation_id_or_member_epoch = self.generation;
        req.member_id = s(&self.member_id);
        req.topics = vec![t];
        let resp = self
            .coordinator
            .call(&req, v, self.timeout)
            .await
            .context("OffsetCommit")?;
        for t in &resp.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(anyhow!(
                        "OffsetCommit partition {} failed: {}",
                        p.partition_index,
                        error_name(p.error_code)
                    ));
                }
            }
        }
        Ok(())
    }

    pub async fn leave(&self) -> Result<()> {
        let v = self.coordinator.version_of::<LeaveGroupRequest>(0, 4)?;
        let mut req = LeaveGroupRequest::default();
        req.group_id = group_id(&self.group);
        if v >= 3 {
            let mut m = MemberIdentity::default();
            m.member_id = s(&self.member_id);
            req.members = vec![m];
        } else {
            req.member_id = s(&self.member_id);
        }
        let resp = self.coordinator.call(&req, v, self.timeout).await?;
        if resp.error_code != 0 {
            bail!("LeaveGroup failed: {}", error_name(resp.error_code));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_covers_every_partition_once() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let a = range_assign(&members, 7);
        assert_eq!(a[0], ("a".to_string(), vec![0, 1, 2]));
        assert_eq!(a[1], ("b".to_string(), vec![3, 4]));
        assert_eq!(a[2], ("c".to_string(), vec![5, 6]));
    }

    #[test]
    fn assignments_round_trip() {
        let bytes = encode_assignment("t", &[0, 2, 5]).expect("encodes");
        assert_eq!(
            decode_assignment(bytes, "t").expect("decodes"),
            vec![0, 2, 5]
        );
        assert!(decode_assignment(Bytes::new(), "t")
            .expect("empty")
            .is_empty());
    }
}
