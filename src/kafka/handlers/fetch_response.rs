//! Hand-written Fetch response (v4–v18). Hot path: record batches are never re-encoded. A
//! small response is one buffer (the batches copied in once); a large one is sent as pieces —
//! the response's own fields in one buffer, cut where each partition's batches go, and the
//! log's `Bytes` between the cuts — written with one vectored write, so the batches are not
//! copied at all on their way to the socket.

use crate::kafka::{RequestContext, Response};
use crate::partition::txn_index::AbortedTxn;
use bytes::{BufMut, Bytes, BytesMut};

/// What one partition read produced.
#[derive(Debug, Clone, Default)]
pub struct PartitionRead {
    pub error: i16,
    pub high_watermark: i64,
    /// The last stable offset (the high watermark where no transaction holds it back).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
    /// read_committed reads: the aborted transactions overlapping what was read (Kafka
    /// answers null to read_uncommitted ones).
    pub aborted: Option<Vec<AbortedTxn>>,
    /// Fetch v16+ (KIP-951): the current leader and its epoch, on NOT_LEADER_OR_FOLLOWER and
    /// FENCED_LEADER_EPOCH.
    pub current_leader: Option<(i32, i32)>,
}

impl PartitionRead {
    pub(super) fn error(code: i16) -> Self {
        PartitionRead {
            error: code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            batches: Vec::new(),
            aborted: None,
            current_leader: None,
        }
    }
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// Below this many record bytes, or with batches smaller than `VECTORED_MIN_BATCH_BYTES` on
/// average, copying them into one buffer is cheaper than the iovec bookkeeping and the extra
/// pieces of a vectored write. A follower's fetch (one or two 16 KiB batches under load) is
/// sent vectored: copying it was ~2 % of a replicating broker's CPU.
const VECTORED_MIN_RECORD_BYTES: usize = 16 * 1024;
const VECTORED_MIN_BATCH_BYTES: usize = 4 * 1024;

/// One topic of the response: its name (v4–v12) or id (v13) and the reads of its partitions.
pub struct TopicReads<'a> {
    pub name: &'a str,
    pub id: [u8; 16],
    pub partitions: Vec<(i32, PartitionRead)>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_len(buf: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

fn put_compact_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(buf, 0),
        Some(s) => {
            put_uvarint(buf, s.len() as u64 + 1);
            buf.put_slice(s.as_bytes());
        }
    }
}

/// Encodes the whole response frame (length, header, body). `endpoints` (id, host, port,
/// rack) are the NodeEndpoints of v16+: the leaders named in partitions' CurrentLeader.
/// `error` and `session_id` are the top-level fields of v7+ (fetch sessions).
pub fn encode(
    ctx: &RequestContext,
    error: i16,
    session_id: i32,
    topics: &[TopicReads<'_>],
    endpoints: &[super::Endpoint],
) -> Response {
    let (mut records, mut batches, mut parts) = (0usize, 0usize, 0usize);
    for (_, r) in topics.iter().flat_map(|t| t.partitions.iter()) {
        records += r.bytes();
        batches += r.batches.len();
        parts += 1;
    }
    let vectored =
        records >= VECTORED_MIN_RECORD_BYTES && records >= batches * VECTORED_MIN_BATCH_BYTES;
    let fields = 64 + parts * 80 + topics.len() * 64 + endpoints.len() * 300;
    let mut buf = ctx.response_buf(if vectored { fields } else { fields + records });
    // Where in `buf` each partition's batches belong, when they are not copied in.
    let mut cuts: Vec<(usize, &[Bytes])> = Vec::new();
    let v = ctx.api_version;
    let flexible = v >= 12;
    buf.put_i32(0); // throttle_time_ms
    if v >= 7 {
        buf.put_i16(error);
        buf.put_i32(session_id);
    }
    put_len(&mut buf, topics.len(), flexible);
    for t in topics {
        if v >= 13 {
            buf.put_slice(&t.id);
        } else {
            // strings: int16 length, or uvarint length + 1 when flexible
            if flexible {
                put_uvarint(&mut buf, t.name.len() as u64 + 1);
            } else {
                buf.put_i16(t.name.len() as i16);
            }
            buf.put_slice(t.name.as_bytes());
        }
        put_len(&mut buf, t.partitions.len(), flexible);
        for (index, r) in &t.partitions {
            buf.put_i32(*index);
            buf.put_i16(r.error);
            buf.put_i64(r.high_watermark);
            if v >= 4 {
                buf.put_i64(r.last_stable_offset);
            }
            if v >= 5 {
                buf.put_i64(r.log_start_offset);
            }
            if v >= 4 {
                match &r.aborted {
                    None if flexible => put_uvarint(&mut buf, 0),
                    None => buf.put_i32(-1),
                    Some(list) => {
                        put_len(&mut buf, list.len(), flexible);
                        for a in list {
                            buf.put_i64(a.producer_id);
                            buf.put_i64(a.first_offset);
                            if flexible {
                                buf.put_u8(0); // tagged fields
                            }
                        }
                    }
                }
            }
            if v >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            put_len(&mut buf, r.bytes(), flexible);
            if vectored {
                if !r.batches.is_empty() {
                    cuts.push((buf.len(), &r.batches));
                }
            } else {
                for b in &r.batches {
                    buf.put_slice(b);
                }
            }
            match r.current_leader {
                // Tag 1, CurrentLeader {leader id, leader epoch, no tagged fields}: 9 bytes.
                Some((leader, epoch)) if v >= 16 => {
                    buf.put_u8(1);
                    buf.put_u8(1);
                    buf.put_u8(9);
                    buf.put_i32(leader);
                    buf.put_i32(epoch);
                    buf.put_u8(0);
                }
                _ if flexible => buf.put_u8(0), // partition tagged fields
                _ => {}
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if v >= 16 && !endpoints.is_empty() {
        // Tag 0, NodeEndpoints: a compact array, its size first.
        let mut e = BytesMut::new();
        put_uvarint(&mut e, endpoints.len() as u64 + 1);
        for (id, host, port, rack) in endpoints {
            e.put_i32(*id);
            put_compact_str(&mut e, Some(host));
            e.put_i32(*port);
            put_compact_str(&mut e, rack.as_deref());
            e.put_u8(0);
        }
        buf.put_u8(1);
        buf.put_u8(0);
        put_uvarint(&mut buf, e.len() as u64);
        buf.put_slice(&e);
    } else if flexible {
        buf.put_u8(0); // response tagged fields
    }
    if !vectored {
        return Response::Frame(crate::kafka::finish_response(buf));
    }
    let len = (buf.len() - 4 + records) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    let fields = buf.freeze();
    let mut pieces = Vec::with_capacity(2 * cuts.len() + 1 + records / (16 * 1024));
    let mut from = 0;
    for (at, batches) in cuts {
        if at > from {
            pieces.push(fields.slice(from..at));
        }
        pieces.extend(batches.iter().cloned());
        from = at;
    }
    if from < fields.len() {
        pieces.push(fields.slice(from..));
    }
    Response::Pieces(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn every_version_decodes_with_kafka_protocol() {
        let small = PartitionRead {
            error: 0,
            high_watermark: 42,
            last_stable_offset: 40,
            log_start_offset: 3,
            aborted: Some(vec![crate::partition::txn_index::AbortedTxn {
                producer_id: 9,
                first_offset: 5,
                last_offset: 7,
            }]),
            batches: vec![
                Bytes::from_static(b"first-batch"),
                Bytes::from_static(b"second"),
            ],
            current_leader: None,
        };
        // Large enough to be sent as pieces rather than copied into one buffer.
        let big = PartitionRead {
            batches: vec![
                Bytes::from(vec![1u8; VECTORED_MIN_RECORD_BYTES]),
                Bytes::from(vec![2u8; 1000]),
            ],
            ..small.clone()
        };
        // As many bytes, but in small batches: copied.
        let many_small = PartitionRead {
            batches: (0..20).map(|i| Bytes::from(vec![i as u8; 1000])).collect(),
            ..small.clone()
        };
        for read in [small, big, many_small] {
            check_every_version(&read);
        }
    }

    fn check_every_version(read: &PartitionRead) {
        let expected: Vec<u8> = read.batches.iter().flat_map(|b| b.to_vec()).collect();
        // Two partitions carry `read`, so the whole response holds twice its bytes.
        let empty = PartitionRead {
            error: 6,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            batches: vec![],
            aborted: None,
            current_leader: Some((3, 12)),
        };
        let endpoints = [(3, "node3".to_string(), 9093, Some("r1".to_string()))];
        for v in 4..=18 {
            let ctx = RequestContext {
                api_key: ApiKey::Fetch,
                api_version: v,
                correlation_id: 9,
                client_id: None,
                peer: None,
                broker: None,
                fetch_sessions: None,
                listener: None,
                principal: None,
            };
            let topics = [TopicReads {
                name: "orders",
                id: [7; 16],
                partitions: vec![(0, read.clone()), (5, empty.clone()), (7, read.clone())],
            }];
            let frame = encode(&ctx, 0, 77, &topics, &endpoints);
            let (bytes, batches) = (2 * expected.len(), 2 * read.batches.len());
            assert_eq!(
                matches!(frame, Response::Pieces(_)),
                bytes >= VECTORED_MIN_RECORD_BYTES && bytes >= batches * VECTORED_MIN_BATCH_BYTES,
                "v{v}: large responses of large batches go out as pieces"
            );
            let mut b = frame.to_bytes();
            assert_eq!(b.get_i32() as usize, b.len(), "v{v} length");
            assert_eq!(b.get_i32(), 9);
            if v >= 12 {
                assert_eq!(b.get_u8(), 0);
            }
            let r = FetchResponse::decode(&mut b, v).unwrap_or_else(|e| panic!("v{v}: {e}"));
            assert_eq!(b.remaining(), 0, "v{v} trailing bytes");
            if v >= 7 {
                assert_eq!((r.error_code, r.session_id), (0, 77), "v{v} session");
            }
            let t = &r.responses[0];
            if v >= 13 {
                assert_eq!(t.topic_id.as_bytes(), &[7u8; 16]);
            } else {
                assert_eq!(t.topic.0.as_str(), "orders");
            }
            let p = &t.partitions[0];
            assert_eq!(
                (p.partition_index, p.error_code, p.high_watermark),
                (0, 0, 42)
            );
            if v >= 5 {
                assert_eq!(p.log_start_offset, 3);
            }
            assert_eq!(p.last_stable_offset, read.last_stable_offset, "v{v} LSO");
            let aborted = p.aborted_transactions.as_ref().map(|l| {
                l.iter()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect::<Vec<_>>()
            });
            let want = read.aborted.as_ref().map(|l| {
                l.iter()
                    .map(|a| (a.producer_id, a.first_offset))
                    .collect::<Vec<_>>()
            });
            assert_eq!(aborted, want, "v{v} aborted transactions");
            assert_eq!(p.records.as_deref(), Some(&expected[..]));
            let q = &t.partitions[1];
            assert_eq!((q.partition_index, q.error_code), (5, 6));
            if v >= 16 {
                assert_eq!(
                    (q.current_leader.leader_id.0, q.current_leader.leader_epoch),
                    (3, 12),
                    "v{v} current leader"
                );
                assert_eq!(r.node_endpoints.len(), 1);
                let e = &r.node_endpoints[0];
                assert_eq!((e.node_id.0, e.host.as_str(), e.port), (3, "node3", 9093));
                assert_eq!(e.rack.as_deref(), Some("r1"));
            } else {
                assert_eq!(q.current_leader.leader_id.0, -1, "v{v}: no current leader");
            }
            assert_eq!(q.records.as_deref(), Some(&b""[..]));
            let last = &t.partitions[2];
            assert_eq!(last.partition_index, 7);
            assert_eq!(last.records.as_deref(), Some(&expected[..]));
        }
    }
}
