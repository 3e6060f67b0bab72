//! The record format of `__transaction_state`, as Kafka writes it (TransactionLogKey and
//! TransactionLogValue, version 0): key `{version: int16 = 0, transactional_id: string}`,
//! value `{version: int16 = 0, producer_id: int64, producer_epoch: int16,
//! transaction_timeout_ms: int32, transaction_status: int8, transaction_partitions:
//! nullable [{topic: string, partition_ids: [int32]}], transaction_last_update_timestamp_ms:
//! int64, transaction_start_timestamp_ms: int64}`. A null value (tombstone) forgets the id.
//!
//! Decoding is total: the log's bytes are as hostile as a client's, and every count is bounded
//! by the bytes left before anything is allocated for it.

use super::state::{TxnMeta, TxnState};
use bytes::{BufMut, Bytes, BytesMut};
use chronik_storage::byte_reader::Reader;
use std::collections::BTreeSet;

pub fn key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_str(&mut b, transactional_id);
    b.freeze()
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Transactional ids and topic names are far below 32 KiB (checked where they enter).
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

pub fn value(m: &TxnMeta) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + m.partitions.len() * 24);
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state as i8);
    // Grouped by topic, as Kafka writes them.
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((name, ps)) if *name == t.as_str() => ps.push(*p),
            _ => topics.push((t.as_str(), vec![*p])),
        }
    }
    b.put_i32(topics.len() as i32);
    for (t, ps) in topics {
        put_str(&mut b, t);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(m.update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

/// The transactional id of a key; None for a key of another version or malformed.
pub fn decode_key(k: &[u8]) -> Option<String> {
    let mut r = Reader::new(k);
    if r.i16().ok()? != 0 {
        return None;
    }
    Some(r.string().ok()?.to_string())
}

fn i64_of(r: &mut Reader<'_>) -> Option<i64> {
    let b = r.take(8, "int64").ok()?;
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

pub fn decode_value(v: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader::new(v);
    if r.i16().ok()? != 0 {
        return None;
    }
    let producer_id = i64_of(&mut r)?;
    let producer_epoch = r.i16().ok()?;
    let timeout_ms = r.i32().ok()?;
    let state = TxnState::from_i8(r.i8().ok()?)?;
    let mut partitions = BTreeSet::new();
    let topics = r.i32().ok()?;
    // -1 is a null array; each topic takes at least 6 bytes, each partition 4.
    if topics > 0 {
        if topics as usize > r.remaining() / 6 {
            return None;
        }
        for _ in 0..topics {
            let t = r.string().ok()?.to_string();
            let n = r.i32().ok()?;
            if n < 0 || n as usize > r.remaining() / 4 {
                return None;
            }
            for _ in 0..n {
                partitions.insert((t.clone(), r.i32().ok()?));
            }
        }
    }
    let update_ms = i64_of(&mut r)?;
    let start_ms = i64_of(&mut r)?;
    Some(TxnMeta {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        update_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TxnMeta {
        TxnMeta {
            producer_id: 4242,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            start_ms: 1_000,
            update_ms: 2_000,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(decode_key(&key("my-txn")).as_deref(), Some("my-txn"));
        assert_eq!(decode_value(&value(&meta())), Some(meta()));
        let empty = TxnMeta {
            partitions: BTreeSet::new(),
            state: TxnState::Empty,
            ..meta()
        };
        assert_eq!(decode_value(&value(&empty)), Some(empty));
    }

    #[test]
    fn truncated_or_lying_records_decode_to_nothing() {
        let v = value(&meta());
        for cut in 0..v.len() {
            assert_eq!(decode_value(&v[..cut]), None, "cut at {cut}");
        }
        let mut huge = v.to_vec();
        // The topic count (after version, pid, epoch, timeout, state) claims 2^31-1 topics.
        huge[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_value(&huge), None);
        let mut bad_state = v.to_vec();
        bad_state[16] = 42;
        assert_eq!(decode_value(&bad_state), None);
        assert_eq!(decode_key(&[0, 1]), None);
        assert_eq!(decode_key(&[0, 0, 0, 9, b'x']), None);
    }
}
