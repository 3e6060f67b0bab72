//! The `__consumer_offsets` record format, as Kafka writes it, so the log is readable by Kafka
//! tools and Kafka's own loader:
//!
//! - offset commit: key v1 `{group, topic, partition}`, value v3
//!   `{offset, leader_epoch, metadata, commit_timestamp}`;
//! - group metadata: key v2 `{group}`, value v3 `{protocol_type, generation, protocol, leader,
//!   current_state_timestamp, members[{member_id, group_instance_id, client_id, client_host,
//!   rebalance_timeout, session_timeout, subscription, assignment}]}`.
//!
//! A null value is a tombstone: the key was deleted. The last record of a key wins.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(10 + group.len() + topic.len());
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::with_capacity(26 + v.metadata.len());
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp);
    b.freeze()
}

pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(128);
    b.put_i16(3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_str(&mut b, v.protocol.as_deref());
    put_nullable_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// A reader that fails (None) instead of panicking on short input.
struct R(Bytes);

impl R {
    fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    fn nullable_str(&mut self) -> Option<Option<String>> {
        let n = self.i16()?;
        if n < 0 {
            return Some(None);
        }
        let n = n as usize;
        if self.0.remaining() < n {
            return None;
        }
        let s = self.0.split_to(n);
        Some(Some(String::from_utf8_lossy(&s).into_owned()))
    }
    fn str(&mut self) -> Option<String> {
        self.nullable_str()?.or(Some(String::new()))
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.i32()?;
        if n < 0 {
            return Some(Bytes::new());
        }
        let n = n as usize;
        (self.0.remaining() >= n).then(|| self.0.split_to(n))
    }
}

pub fn decode_key(key: &Bytes) -> Option<RecordKey> {
    let mut r = R(key.clone());
    match r.i16()? {
        0 | 1 => Some(RecordKey::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        }),
        2 => Some(RecordKey::Group { group: r.str()? }),
        _ => None,
    }
}

/// Decodes offset values v0–v3 (v2 has an expire timestamp, v3 a leader epoch).
pub fn decode_offset_value(v: &Bytes) -> Option<OffsetValue> {
    let mut r = R(v.clone());
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    Some(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// Decodes group metadata values v0–v3 (non-flexible versions).
pub fn decode_group_value(v: &Bytes) -> Option<GroupValue> {
    let mut r = R(v.clone());
    let version = r.i16()?;
    if version > 3 {
        return None;
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let n = r.i32()?.max(0);
    let mut members = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        let member_id = r.str()?;
        let group_instance_id = if version >= 3 {
            r.nullable_str()?
        } else {
            None
        };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// One record of a batch to write: key and value (None = tombstone).
pub type LogRecord = (Bytes, Option<Bytes>);

/// An uncompressed Kafka v2 batch of `records` (base offset and epoch assigned by the log).
pub fn build_batch(records: &[LogRecord], now_ms: i64) -> BytesMut {
    let rs: Vec<chronik_storage::testing::Record<'_>> = records
        .iter()
        .map(|(k, v)| (Some(&k[..]), v.as_deref()))
        .collect();
    chronik_storage::testing::build_batch(&rs, now_ms)
}

/// The records of one stored batch as (key, value); control batches and unreadable ones yield
/// nothing. The log's bytes are as hostile as a client's (a batch written before produce to
/// this topic was refused, or damaged on disk): the batch is validated first, every count
/// bounded by its bytes and any decompression by `Limits::default()`, so the decoder below
/// only ever sees a well-formed batch and allocates in proportion to it.
pub fn batch_records(batch: &Bytes) -> Vec<(Option<Bytes>, Option<Bytes>)> {
    let limits = chronik_storage::batch_validation::Limits::default();
    match chronik_storage::batch_validation::validate_batch(batch, &limits) {
        Ok(s) if s.header.is_control() => return Vec::new(),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(
                offset = chronik_storage::parse_header(batch).map_or(-1, |h| h.base_offset),
                "skipping invalid batch in __consumer_offsets: {e}"
            );
            return Vec::new();
        }
    }
    let mut b = batch.clone();
    match kafka_protocol::records::RecordBatchDecoder::decode(&mut b) {
        Ok(set) => set.records.into_iter().map(|r| (r.key, r.value)).collect(),
        Err(e) => {
            tracing::warn!("unreadable batch in __consumer_offsets: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let k = offset_key("g", "t", 7);
        assert_eq!(
            decode_key(&k),
            Some(RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            })
        );
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 99,
        };
        assert_eq!(decode_offset_value(&offset_value(&v)), Some(v));
    }

    #[test]
    fn group_records_round_trip() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 1,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/h".into(),
                rebalance_timeout_ms: 300,
                session_timeout_ms: 100,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode_key(&group_key("g")),
            Some(RecordKey::Group { group: "g".into() })
        );
        assert_eq!(decode_group_value(&group_value(&v)), Some(v));
    }

    #[test]
    fn truncated_values_are_rejected_not_panics() {
        let v = offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp: 0,
        });
        for n in 0..v.len() {
            assert!(decode_offset_value(&v.slice(..n)).is_none());
        }
    }

    #[test]
    fn a_poisoned_batch_yields_nothing_instead_of_aborting() {
        // One record declaring 2^31-1 headers: a decoder trusting the count would reserve
        // for all of them.
        let mut good = build_batch(&[(group_key("g"), None)], 1000);
        let n = good.len();
        // The record is the batch's tail: its header count varint (0) is the last byte.
        assert_eq!(good[n - 1], 0);
        good.truncate(n - 1);
        good.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // zig-zag of i32::MAX
        good[61] += 8; // the record's length (one varint byte): 4 bytes longer, zig-zag
        let len = (good.len() - 12) as i32;
        good[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&good[21..]);
        good[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(batch_records(&good.freeze()).is_empty());
    }

    #[test]
    fn batches_decode_back_to_records() {
        let recs = vec![
            (group_key("g"), None),
            (offset_key("g", "t", 0), Some(Bytes::from_static(b"x"))),
        ];
        let b = build_batch(&recs, 1000).freeze();
        let out = batch_records(&b);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.as_ref(), Some(&recs[0].0));
        assert_eq!(out[0].1, None);
        assert_eq!(out[1].1.as_deref(), Some(&b"x"[..]));
    }
}
