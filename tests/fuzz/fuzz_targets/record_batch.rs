//! Record batches through chronik-storage's validators (the header parse, the frame + CRC
//! check the log applies, Kafka's LogValidator rules for a client's batch) and the
//! `__consumer_offsets` replay that reads batches back from the log (`offsets_log`).
//!
//! The first input byte picks how the rest becomes a batch, so mutations get past the CRC
//! and into the records and the codecs:
//! - `% 4 == 0`: the bytes as they are;
//! - `% 4 == 1`: the bytes with their length field and CRC-32C made to match;
//! - `% 4 == 2`: a 61-byte header, then records the harness compresses with the codec
//!   `(byte >> 2) % 8` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd, 5..7 unknown), length and CRC
//!   fixed;
//! - `% 4 == 3`: one `__consumer_offsets` record, `key length u16 | key | value`, through the
//!   replay's key and value decoders.
//!
//! Asserts: nothing panics or allocates past libFuzzer's limit; a batch the deep validator
//! accepts passes the log's frame check; a client batch it accepts (after the maxTimestamp
//! fix-up) validates again unchanged.

#![no_main]

use bytes::{Bytes, BytesMut};
use chronik::group::offsets_log::{self, RecordKey};
use chronik::group::state::Group;
use chronik_storage::batch_validation::{self, Limits};
use chronik_storage::{ValidBatch, BATCH_HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

/// Where the CRC-32C starts and is stored, and the attributes field (Kafka v2 batch layout).
const CRC_AT: usize = 17;
const CRC_START: usize = 21;
const ATTRIBUTES_AT: usize = 21;
/// A small decompression bound so bombs are cut quickly; the check is the same for any bound.
const LIMITS: Limits = Limits {
    max_uncompressed_bytes: 1 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => batch(rest.to_vec()),
        1 => batch(fixed_up(rest.to_vec())),
        2 => {
            if let Some(b) = compressed((mode >> 2) % 8, rest) {
                batch(fixed_up(b));
            }
        }
        _ => offsets_record(rest),
    }
});

/// Makes the length field and the CRC-32C match the bytes (when a header is there).
fn fixed_up(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() >= BATCH_HEADER_LEN {
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    b
}

/// A header from the input (magic forced to 2, codec bits set), then the input's records
/// compressed as a producer would.
fn compressed(codec: u8, rest: &[u8]) -> Option<Vec<u8>> {
    if rest.len() < BATCH_HEADER_LEN {
        return None;
    }
    let (header, records) = rest.split_at(BATCH_HEADER_LEN);
    let mut b = header.to_vec();
    b[16] = 2;
    let attributes =
        (i16::from_be_bytes([b[ATTRIBUTES_AT], b[ATTRIBUTES_AT + 1]]) & !7) | i16::from(codec);
    b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    match codec {
        1 => {
            let mut w = flate2::write::GzEncoder::new(b, flate2::Compression::fast());
            w.write_all(records).ok()?;
            w.finish().ok()
        }
        2 => {
            // librdkafka's raw block (the xerial framing comes from mutations of the seeds).
            b.extend(snap::raw::Encoder::new().compress_vec(records).ok()?);
            Some(b)
        }
        3 => {
            let mut w = lz4::EncoderBuilder::new().build(b).ok()?;
            w.write_all(records).ok()?;
            let (b, r) = w.finish();
            r.ok().map(|()| b)
        }
        4 => {
            b.extend(zstd::bulk::compress(records, 1).ok()?);
            Some(b)
        }
        _ => {
            b.extend_from_slice(records);
            Some(b)
        }
    }
}

fn batch(b: Vec<u8>) {
    let header = chronik_storage::parse_header(&b);
    let framed = chronik_storage::validate_batch(&b);
    let deep = batch_validation::validate_batch(&b, &LIMITS);
    if let Ok(summary) = &deep {
        let h = framed.unwrap_or_else(|e| panic!("deep validation passed, frame check {e:?}"));
        assert_eq!(h, summary.header);
        assert_eq!(header.ok(), Some(h));
    }
    // The produce path: a client's batch, validated and its maxTimestamp corrected in place.
    if let Ok(vb) = ValidBatch::from_client(BytesMut::from(&b[..]), &LIMITS) {
        let summary = deep
            .as_ref()
            .expect("from_client accepted what validate_batch refused");
        assert_eq!(vb.header().max_timestamp, summary.max_timestamp);
        // The corrected batch is what the log stores: it must pass the log's own check.
        let mut fixed = b.clone();
        fixed[35..43].copy_from_slice(&summary.max_timestamp.to_be_bytes());
        let fixed = fixed_crc(fixed);
        let again = ValidBatch::new(BytesMut::from(&fixed[..])).expect("corrected batch is valid");
        assert_eq!(again.header(), vb.header());
    }
    if deep.is_ok() {
        // The offsets loader: validates again (its own bound), then decodes the records.
        for (k, v) in offsets_log::batch_records(&Bytes::from(b)) {
            if let Some(k) = k {
                replay(&k, v.as_ref());
            }
        }
    }
}

fn fixed_crc(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

fn offsets_record(rest: &[u8]) {
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let n = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (k, v) = rest.split_at(n);
    let v = Bytes::copy_from_slice(v);
    replay(&Bytes::copy_from_slice(k), Some(&v));
}

/// What the coordinator's loader (`apply_record`) does with one record of the offsets topic.
fn replay(key: &Bytes, value: Option<&Bytes>) {
    match offsets_log::decode_key(key) {
        Some(RecordKey::Offset { .. }) => {
            let _ = value.and_then(offsets_log::decode_offset_value);
        }
        Some(RecordKey::Group { group }) => {
            if let Some(v) = value.and_then(offsets_log::decode_group_value) {
                let clock = chronik::group::machine::Clock::system();
                let mut g = Group::new(&group, &clock);
                g.apply_value(v, clock.now);
                let _ = g.subscribed_topics();
                let _ = g.to_value();
            }
        }
        None => {}
    }
}
