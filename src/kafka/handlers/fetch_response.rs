//! Hand-written Fetch response (v4–v13). Hot path: the record batches of every partition are
//! copied once, straight from the log's `Bytes` into the response frame. kafka-protocol needs one
//! contiguous `Bytes` per partition, which costs a second copy when a read returns several
//! batches.

use super::fetch::PartitionRead;
use crate::kafka::RequestContext;
use bytes::{BufMut, BytesMut};

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

/// Encodes the whole response frame (length, header, body).
pub fn encode(ctx: &RequestContext, topics: &[TopicReads<'_>]) -> BytesMut {
    let v = ctx.api_version;
    let flexible = v >= 12;
    let records: usize = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|(_, r)| r.bytes())
        .sum();
    let parts: usize = topics.iter().map(|t| t.partitions.len()).sum();
    let mut buf = ctx.response_buf(64 + records + parts * 64 + topics.len() * 64);
    buf.put_i32(0); // throttle_time_ms
    if v >= 7 {
        buf.put_i16(0); // error_code
        buf.put_i32(0); // session_id: sessions are not used
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
            buf.put_i64(r.high_watermark); // last_stable_offset: no transactions
            if v >= 5 {
                buf.put_i64(r.log_start_offset);
            }
            // aborted_transactions: null
            if flexible {
                put_uvarint(&mut buf, 0);
            } else {
                buf.put_i32(-1);
            }
            if v >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            put_len(&mut buf, r.bytes(), flexible);
            for b in &r.batches {
                buf.put_slice(b);
            }
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    crate::kafka::finish_response(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn every_version_decodes_with_kafka_protocol() {
        let read = PartitionRead {
            error: 0,
            high_watermark: 42,
            log_start_offset: 3,
            batches: vec![
                Bytes::from_static(b"first-batch"),
                Bytes::from_static(b"second"),
            ],
        };
        let empty = PartitionRead {
            error: 1,
            high_watermark: -1,
            log_start_offset: -1,
            batches: vec![],
        };
        for v in 4..=13 {
            let ctx = RequestContext {
                api_key: ApiKey::Fetch,
                api_version: v,
                correlation_id: 9,
                client_id: None,
                peer: None,
            };
            let topics = [TopicReads {
                name: "orders",
                id: [7; 16],
                partitions: vec![(0, read.clone()), (5, empty.clone())],
            }];
            let frame = encode(&ctx, &topics);
            let mut b = frame.freeze();
            assert_eq!(b.get_i32() as usize, b.len(), "v{v} length");
            assert_eq!(b.get_i32(), 9);
            if v >= 12 {
                assert_eq!(b.get_u8(), 0);
            }
            let r = FetchResponse::decode(&mut b, v).unwrap_or_else(|e| panic!("v{v}: {e}"));
            assert_eq!(b.remaining(), 0, "v{v} trailing bytes");
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
            assert_eq!(p.records.as_deref(), Some(&b"first-batchsecond"[..]));
            let q = &t.partitions[1];
            assert_eq!((q.partition_index, q.error_code), (5, 1));
            assert_eq!(q.records.as_deref(), Some(&b""[..]));
        }
    }
}
