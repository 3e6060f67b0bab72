//! Builders of valid Kafka v2 record batches (real varint-encoded records, CRC-32C), for tests
//! and benchmarks of this crate, the broker and the bench.

use bytes::{BufMut, BytesMut};

use crate::batch::BATCH_HEADER_LEN;
use crate::records::put_varint;

/// One record: (key, value), either may be null.
pub type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

/// A batch of `records` (key, value) with timestamps `base_timestamp + i`, base offset 0,
/// no producer id, uncompressed.
pub fn build_batch(records: &[Record<'_>], base_timestamp: i64) -> BytesMut {
    let ts: Vec<i64> = (0..records.len() as i64)
        .map(|i| base_timestamp + i)
        .collect();
    build_batch_with_timestamps(records, &ts)
}

/// A batch whose record i has timestamp `timestamps[i]` (missing entries reuse the last one).
pub fn build_batch_with_timestamps(records: &[Record<'_>], timestamps: &[i64]) -> BytesMut {
    let base_ts = timestamps.iter().copied().min().unwrap_or(0);
    let max_ts = timestamps.iter().copied().max().unwrap_or(0);
    let size_hint: usize = records
        .iter()
        .map(|(k, v)| 16 + k.map_or(0, |k| k.len()) + v.map_or(0, |v| v.len()))
        .sum();
    let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + size_hint);
    buf.put_i64(0); // base offset, assigned by the log
    buf.put_i32(0); // batch length, patched below
    buf.put_i32(-1); // partition leader epoch, assigned by the log
    buf.put_i8(2); // magic
    buf.put_u32(0); // crc, patched below
    buf.put_i16(0); // attributes: no compression, create time
    buf.put_i32(records.len() as i32 - 1);
    buf.put_i64(base_ts);
    buf.put_i64(max_ts);
    buf.put_i64(-1); // producer id
    buf.put_i16(-1); // producer epoch
    buf.put_i32(-1); // base sequence
    buf.put_i32(records.len() as i32);
    let mut rec = BytesMut::new();
    let mut last_ts = base_ts;
    for (i, (k, v)) in records.iter().enumerate() {
        let ts = timestamps.get(i).copied().unwrap_or(last_ts);
        last_ts = ts;
        rec.clear();
        rec.put_i8(0); // attributes
        put_varint(&mut rec, ts - base_ts);
        put_varint(&mut rec, i as i64);
        put_bytes(&mut rec, *k);
        put_bytes(&mut rec, *v);
        put_varint(&mut rec, 0); // headers
        put_varint(&mut buf, rec.len() as i64);
        buf.put_slice(&rec);
    }
    crate::batch::seal(&mut buf);
    buf
}

/// Makes `batch` an idempotent producer's: sets producer id, epoch and base sequence and
/// recomputes the CRC.
pub fn set_producer(batch: &mut BytesMut, producer_id: i64, epoch: i16, base_sequence: i32) {
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    crate::batch::write_crc(batch);
}

/// `n` records of `value_len` bytes each (values filled with `fill`), for benchmarks.
pub fn build_batch_of(n: usize, value_len: usize, fill: u8, base_timestamp: i64) -> BytesMut {
    let value = vec![fill; value_len];
    let recs: Vec<Record<'_>> = (0..n).map(|_| (None, Some(&value[..]))).collect();
    build_batch(&recs, base_timestamp)
}
