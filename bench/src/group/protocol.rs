//! The embedded consumer protocol (what "consumer" groups put in JoinGroup metadata and
//! SyncGroup assignments) and Kafka's range assignor.

use anyhow::{bail, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::metadata::topic_name;

/// The embedded consumer protocol: a big-endian i16 version, then the struct.
fn encode_embedded<T: Encodable>(value: &T, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    value.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

pub fn encode_subscription(topic: &str) -> Result<Bytes> {
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = vec![StrBytes::from_string(topic.to_string())];
    encode_embedded(&sub, 0)
}

/// The topics of a member's subscription (any version a client sends; newer fields skipped).
pub fn decode_subscription(mut data: Bytes) -> Result<Vec<String>> {
    if data.len() < 2 {
        bail!("subscription of {} bytes", data.len());
    }
    let version = data.get_i16().clamp(0, 3);
    let sub = ConsumerProtocolSubscription::decode(&mut data, version)?;
    Ok(sub.topics.iter().map(|t| t.as_str().to_string()).collect())
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
    let mut parts: Vec<i32> = a
        .assigned_partitions
        .iter()
        .filter(|tp| tp.topic.0.as_str() == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect();
    parts.sort_unstable();
    Ok(parts)
}

/// Kafka's range assignor for one topic: members sorted by id, contiguous partition ranges,
/// the first `partitions % members` members one partition more.
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

/// The leader's SyncGroup assignments: members subscribed to `topic` share its partitions by
/// range; members that are not (or whose metadata cannot be read) get an empty assignment.
pub fn assign_group(
    members: &[(String, Bytes)],
    topic: &str,
    partitions: i32,
) -> Result<Vec<(String, Bytes)>> {
    let subscribed: Vec<String> = members
        .iter()
        .filter(|(_, meta)| {
            decode_subscription(meta.clone()).is_ok_and(|ts| ts.iter().any(|t| t == topic))
        })
        .map(|(id, _)| id.clone())
        .collect();
    let ranges = range_assign(&subscribed, partitions);
    let mut out = Vec::with_capacity(members.len());
    for (id, _) in members {
        let parts = ranges
            .iter()
            .find(|(m, _)| m == id)
            .map(|(_, p)| p.as_slice())
            .unwrap_or(&[]);
        out.push((id.clone(), encode_assignment(topic, parts)?));
    }
    Ok(out)
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
    fn four_members_get_three_of_twelve_and_five_get_three_or_two() {
        let four: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
        let a = range_assign(&four, 12);
        assert!(a.iter().all(|(_, p)| p.len() == 3));
        let mut five = four.clone();
        five.push("joiner".into());
        let sizes: Vec<usize> = range_assign(&five, 12)
            .iter()
            .map(|(_, p)| p.len())
            .collect();
        assert_eq!(sizes, vec![3, 3, 2, 2, 2]);
    }

    #[test]
    fn assignments_round_trip() {
        let bytes = encode_assignment("t", &[5, 0, 2]).expect("encodes");
        assert_eq!(
            decode_assignment(bytes, "t").expect("decodes"),
            vec![0, 2, 5]
        );
        assert!(decode_assignment(Bytes::new(), "t")
            .expect("empty")
            .is_empty());
    }

    #[test]
    fn the_leader_assigns_only_members_subscribed_to_the_topic() {
        let sub = encode_subscription("t").expect("encodes");
        assert_eq!(
            decode_subscription(sub.clone()).expect("decodes"),
            vec!["t"]
        );
        let other = encode_subscription("other").expect("encodes");
        let members = vec![
            ("b".to_string(), sub.clone()),
            ("x".to_string(), other),
            ("a".to_string(), sub),
            ("bad".to_string(), Bytes::from_static(b"\x00")),
        ];
        let out = assign_group(&members, "t", 4).expect("assigns");
        let parts: Vec<(String, Vec<i32>)> = out
            .into_iter()
            .map(|(m, a)| (m, decode_assignment(a, "t").expect("decodes")))
            .collect();
        assert_eq!(
            parts,
            vec![
                ("b".to_string(), vec![2, 3]),
                ("x".to_string(), vec![]),
                ("a".to_string(), vec![0, 1]),
                ("bad".to_string(), vec![]),
            ]
        );
    }
}
