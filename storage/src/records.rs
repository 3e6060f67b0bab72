//! The records inside a v2 batch (its plain records section), for the log cleaner: each
//! record's offset, timestamp, key and whether it is a tombstone; and rebuilding a batch from a
//! run of records with consecutive offsets (a v2 batch must hold exactly `lastOffsetDelta + 1`
//! records, so a batch with records removed from its middle becomes several batches), its
//! records compressed again with the original batch's codec.

use bytes::{BufMut, BytesMut};

use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_LEN, CRC_START};
use crate::byte_reader::{ReadError, Reader};
use crate::compression::Codec;

/// One record of a batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub tombstone: bool,
    pub attributes: u8,
    /// The record body after its offset delta: key, value and headers, copied as they are.
    pub tail: &'a [u8],
}

/// Parses every record of the validated batch `buf` (header then plain records: the batch
/// itself if uncompressed, its header followed by the decompressed records otherwise). Offset deltas must increase
/// and stay within the batch; anything malformed is an error (the cleaner then keeps the batch).
pub(crate) fn parse_records<'a>(
    buf: &'a [u8],
    h: &BatchHeader,
) -> Result<Vec<RecordRef<'a>>, BatchError> {
    let end = h.total_len().min(buf.len());
    let mut records = Reader::at(&buf[..end], BATCH_HEADER_LEN);
    // Every record takes at least 7 bytes: bounds the allocation by the batch size.
    let cap = (h.records_count.max(0) as usize).min(end / 7);
    let mut out = Vec::with_capacity(cap);
    let mut prev_delta = -1i64;
    let bad = |_: ReadError| BatchError::BadRecord;
    while records.remaining() > 0 {
        let len =
            usize::try_from(records.varint().map_err(bad)?).map_err(|_| BatchError::BadRecord)?;
        let body = records.take(len, "record").map_err(bad)?;
        let mut r = Reader::new(body);
        let attributes = r.i8().map_err(bad)? as u8;
        let timestamp_delta = r.varint().map_err(bad)?;
        let offset_delta = r.varint().map_err(bad)?;
        if offset_delta <= prev_delta || offset_delta > h.last_offset_delta as i64 {
            return Err(BatchError::BadRecord);
        }
        prev_delta = offset_delta;
        let tail = &body[r.position()..];
        let key = r.varint_bytes("key").map_err(bad)?;
        let tombstone = r.varint_bytes("value").map_err(bad)?.is_none();
        out.push(RecordRef {
            offset_delta,
            timestamp_delta,
            key,
            tombstone,
            attributes,
            tail,
        });
    }
    if out.len() != h.records_count.max(0) as usize {
        return Err(BatchError::BadRecordCount);
    }
    Ok(out)
}

/// A zig-zag varint, as Kafka's record fields are written.
pub(crate) fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            buf.put_u8(z as u8);
            return;
        }
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// A new batch holding `run` (records of the batch `h`, with consecutive offset deltas): its
/// base offset is the run's first offset, everything else (epoch, attributes, base timestamp,
/// producer id and epoch) is kept; the base sequence moves with the first record; the max
/// timestamp is that of the kept records (the original one under LogAppendTime), as Kafka's
/// cleaner sets it. The records are compressed with `codec` (the original batch's).
pub(crate) fn build_run(
    h: &BatchHeader,
    codec: Codec,
    run: &[RecordRef<'_>],
    out: &mut BytesMut,
) -> Result<(), BatchError> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let first_delta = first.offset_delta;
    let body_len: usize = run.iter().map(|r| r.tail.len() + 16).sum();
    let mut plain = BytesMut::with_capacity(body_len);
    for r in run {
        let delta = r.offset_delta - first_delta;
        let len = 1 + varint_len(r.timestamp_delta) + varint_len(delta) + r.tail.len();
        put_varint(&mut plain, len as i64);
        plain.put_u8(r.attributes);
        put_varint(&mut plain, r.timestamp_delta);
        put_varint(&mut plain, delta);
        plain.put_slice(r.tail);
    }
    let compressed;
    let section: &[u8] = if codec.id == 0 {
        &plain
    } else {
        compressed = codec.compress(&plain)?;
        &compressed
    };
    let start = out.len();
    out.reserve(BATCH_HEADER_LEN + section.len());
    let max_ts = if h.timestamp_type_log_append() {
        h.max_timestamp
    } else {
        run.iter()
            .map(|r| h.base_timestamp.wrapping_add(r.timestamp_delta))
            .max()
            .unwrap_or(h.max_timestamp)
    };
    let base_sequence = if h.base_sequence >= 0 {
        // Sequences wrap at i32::MAX like the producer's.
        ((h.base_sequence as i64 + first_delta) % (i32::MAX as i64 + 1)) as i32
    } else {
        h.base_sequence
    };
    out.put_i64(h.base_offset + first_delta);
    out.put_i32(0); // length, patched below
    out.put_i32(h.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0); // crc, patched below
    out.put_i16(h.attributes);
    out.put_i32(run.len() as i32 - 1);
    out.put_i64(h.base_timestamp);
    out.put_i64(max_ts);
    out.put_i64(h.producer_id);
    out.put_i16(h.producer_epoch);
    out.put_i32(base_sequence);
    out.put_i32(run.len() as i32);
    out.put_slice(section);
    let len = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The header of batch `h` alone, without records (Kafka's empty batch that the cleaner
/// keeps of a producer's last batch): base offset `base_offset`, last offset delta
/// `last_offset_delta` and base sequence `base_sequence`; no codec (no records to compress),
/// everything else as in `h`.
pub(crate) fn build_empty(
    h: &BatchHeader,
    base_offset: i64,
    last_offset_delta: i32,
    base_sequence: i32,
    out: &mut BytesMut,
) {
    let start = out.len();
    out.reserve(BATCH_HEADER_LEN);
    out.put_i64(base_offset);
    out.put_i32((BATCH_HEADER_LEN - 12) as i32);
    out.put_i32(h.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0); // crc, patched below
    out.put_i16(h.attributes & !crate::batch::ATTR_COMPRESSION_MASK);
    out.put_i32(last_offset_delta);
    out.put_i64(h.base_timestamp);
    out.put_i64(h.max_timestamp);
    out.put_i64(h.producer_id);
    out.put_i16(h.producer_epoch);
    out.put_i32(base_sequence);
    out.put_i32(0);
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batch;
    use crate::testing::{build_batch, set_producer};

    #[test]
    fn a_run_of_kept_records_becomes_a_valid_batch_with_the_same_offsets_and_timestamps() {
        let mut b = build_batch(
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (Some(b"c"), Some(b"3")),
                (Some(b"d"), Some(b"4")),
            ],
            1000,
        );
        set_producer(&mut b, 7, 1, 10);
        b[0..8].copy_from_slice(&100i64.to_be_bytes());
        let h = validate_batch(&b).expect("valid");
        let recs = parse_records(&b, &h).expect("records");
        assert_eq!(recs.len(), 4);
        assert!(recs[1].tombstone && !recs[0].tombstone);
        assert_eq!(recs[2].key, Some(&b"c"[..]));
        let mut out = BytesMut::new();
        build_run(&h, Codec::of(&b, &h), &recs[1..3], &mut out).expect("built");
        let nh = validate_batch(&out).expect("rebuilt batch is valid");
        assert_eq!(nh.base_offset, 101);
        assert_eq!(nh.last_offset(), 102);
        assert_eq!(nh.base_sequence, 11);
        assert_eq!(nh.producer_id, 7);
        assert_eq!(nh.max_timestamp, 1002);
        let back = parse_records(&out, &nh).expect("records");
        assert_eq!(back[0].key, Some(&b"b"[..]));
        assert!(back[0].tombstone);
        assert_eq!(back[1].timestamp_delta, 2);
        assert_eq!(back[1].offset_delta, 1);
    }

    #[test]
    fn malformed_records_are_an_error_not_a_panic() {
        let b = build_batch(&[(Some(b"key"), Some(b"value"))], 0);
        let h = validate_batch(&b).expect("valid");
        for cut in BATCH_HEADER_LEN..b.len() {
            let mut h2 = h;
            h2.batch_length = (cut - 12) as i32;
            assert!(parse_records(&b[..cut], &h2).is_err());
        }
    }
}
