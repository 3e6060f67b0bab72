//! Transaction markers: the control batches (attributes bit 5, and bit 4: transactional) that
//! end a producer's transaction in a partition. One record; its key is
//! `{version: int16 = 0, type: int16}` (0 abort, 1 commit) and its value
//! `{version: int16 = 0, coordinator_epoch: int32}`, as Kafka's `EndTransactionMarker` writes
//! them. Written by the broker only (clients may not, see `check_client_batch`).

use crate::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::byte_reader::Reader;
use crate::records::put_varint;
use bytes::{BufMut, BytesMut};

const ATTR_TRANSACTIONAL_CONTROL: i16 = 0x10 | 0x20;
const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// A marker batch of `producer_id` at `epoch` (base offset 0, assigned by the log), with the
/// record timestamp `timestamp_ms`.
pub fn build_marker_batch(
    producer_id: i64,
    epoch: i16,
    marker: TxnMarker,
    timestamp_ms: i64,
) -> BytesMut {
    let mut rec = BytesMut::with_capacity(32);
    rec.put_i8(0); // record attributes
    put_varint(&mut rec, 0); // timestamp delta
    put_varint(&mut rec, 0); // offset delta
    put_varint(&mut rec, 4);
    rec.put_i16(0); // key version
    rec.put_i16(if marker.commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    });
    put_varint(&mut rec, 6);
    rec.put_i16(0); // value version
    rec.put_i32(marker.coordinator_epoch);
    put_varint(&mut rec, 0); // headers

    let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + rec.len() + 2);
    buf.put_i64(0);
    buf.put_i32(0); // batch length, patched below
    buf.put_i32(-1); // partition leader epoch, assigned by the log
    buf.put_i8(2);
    buf.put_u32(0); // crc, patched below
    buf.put_i16(ATTR_TRANSACTIONAL_CONTROL);
    buf.put_i32(0); // last offset delta
    buf.put_i64(timestamp_ms);
    buf.put_i64(timestamp_ms);
    buf.put_i64(producer_id);
    buf.put_i16(epoch);
    buf.put_i32(-1); // base sequence: markers carry none
    buf.put_i32(1);
    put_varint(&mut buf, rec.len() as i64);
    buf.put_slice(&rec);
    crate::batch::seal(&mut buf);
    buf
}

/// The marker a control batch holds; `None` when `h` is not a control batch, the batch is
/// compressed, or its first record is not a well-formed marker (Kafka's other control type,
/// leader-change markers, are ignored the same way).
pub fn parse_marker(buf: &[u8], h: &BatchHeader) -> Option<TxnMarker> {
    if !h.is_control() || h.compression() != 0 || buf.len() < h.total_len() {
        return None;
    }
    let mut records = Reader::at(&buf[..h.total_len()], BATCH_HEADER_LEN);
    let len = usize::try_from(records.varint().ok()?).ok()?;
    let mut record = Reader::new(records.take(len, "record").ok()?);
    record.i8().ok()?; // attributes
    record.varint().ok()?; // timestamp delta
    record.varint().ok()?; // offset delta
    let mut key = Reader::new(record.varint_bytes("control key").ok()??);
    let _version = key.i16().ok()?;
    let commit = match key.i16().ok()? {
        CONTROL_ABORT => false,
        CONTROL_COMMIT => true,
        _ => return None,
    };
    // The value may be absent in old formats: the coordinator epoch is then unknown (-1).
    let coordinator_epoch = match record.varint_bytes("control value") {
        Ok(Some(v)) if v.len() >= 6 => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        _ => -1,
    };
    Some(TxnMarker {
        commit,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batch;

    #[test]
    fn a_marker_batch_is_a_valid_transactional_control_batch_that_parses_back() {
        for commit in [true, false] {
            let m = TxnMarker {
                commit,
                coordinator_epoch: 7,
            };
            let b = build_marker_batch(42, 3, m, 1_000);
            let h = validate_batch(&b).expect("valid batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (42, 3, 1)
            );
            assert_eq!(parse_marker(&b, &h), Some(m));
        }
    }

    #[test]
    fn a_data_batch_or_a_truncated_marker_is_no_marker() {
        let data = crate::testing::build_batch(&[(Some(b"k"), Some(b"v"))], 0);
        let h = validate_batch(&data).expect("valid");
        assert_eq!(parse_marker(&data, &h), None);
        let b = build_marker_batch(
            1,
            0,
            TxnMarker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        );
        let h = validate_batch(&b).expect("valid");
        for cut in BATCH_HEADER_LEN..b.len() {
            assert_eq!(parse_marker(&b[..cut], &h), None, "cut at {cut}");
        }
        // An unknown control type (say a leader-change record, type 2) is no transaction marker.
        let mut other = b.clone();
        let at = other.len() - 10; // type: after the key version, before the value
        other[at..at + 2].copy_from_slice(&2i16.to_be_bytes());
        assert_eq!(parse_marker(&other, &h), None);
    }
}
