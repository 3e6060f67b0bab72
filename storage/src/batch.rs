//! Kafka v2 RecordBatch header parsing and validation. All fields are big-endian on the wire.

use crate::byte_reader::Reader;

/// Bytes from the start of a batch to its first record.
pub const BATCH_HEADER_LEN: usize = 61;
/// The CRC-32C covers everything from `attributes` (offset 21) to the end of the batch.
pub(crate) const CRC_START: usize = 21;
/// `batch_length` counts bytes after the length field itself (offset 12).
pub(crate) const LENGTH_FIELD_END: usize = 12;
const CRC_AT: usize = 17;
const MAX_TIMESTAMP_AT: usize = 35;

/// Writes the CRC-32C of a batch whose other bytes are final; returns it.
pub(crate) fn write_crc(batch: &mut [u8]) -> u32 {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    crc
}

/// Fills in a freshly built batch's `batch_length` (from its size) and CRC.
pub(crate) fn seal(batch: &mut [u8]) {
    let len = (batch.len() - LENGTH_FIELD_END) as i32;
    batch[8..LENGTH_FIELD_END].copy_from_slice(&len.to_be_bytes());
    write_crc(batch);
}

pub(crate) const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Bytes of the whole batch including the offset and length fields.
    pub fn total_len(&self) -> usize {
        LENGTH_FIELD_END + self.batch_length.max(0) as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }
    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch shorter than its {BATCH_HEADER_LEN}-byte header")]
    TooShort,
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    BadMagic(i8),
    #[error("record batch length field does not match the bytes received")]
    BadLength,
    #[error("record batch CRC-32C mismatch")]
    CrcMismatch,
    #[error("record count does not match lastOffsetDelta + 1, or is not positive")]
    BadRecordCount,
    #[error("malformed record inside the batch")]
    BadRecord,
    #[error("a produced partition must hold exactly one record batch")]
    NotOneBatch,
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    #[error("the compressed records cannot be decompressed")]
    BadCompression,
    #[error("the records decompress to more than the broker accepts")]
    TooLargeUncompressed,
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(&'static str),
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the fixed header of the batch at the start of `buf`. Checks the magic and that the
/// length field is at least a header, but not the CRC nor that `buf` holds the whole batch.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::TooShort);
    }
    let h = BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length: be_i32(buf, 8),
        partition_leader_epoch: be_i32(buf, 12),
        magic: buf[16] as i8,
        crc: be_i32(buf, 17) as u32,
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        records_count: be_i32(buf, 57),
    };
    if h.magic != 2 {
        return Err(BatchError::BadMagic(h.magic));
    }
    if (h.batch_length as i64) < (BATCH_HEADER_LEN - LENGTH_FIELD_END) as i64 {
        return Err(BatchError::BadLength);
    }
    Ok(h)
}

/// Validates that `buf` is exactly one v2 batch with a correct CRC-32C and record count.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = parse_header(buf)?;
    if h.total_len() != buf.len() {
        return Err(BatchError::BadLength);
    }
    // An empty batch (no records, header only) is what the log cleaner leaves of a
    // producer's last batch whose records all went (Kafka's BatchRetention.RETAIN_EMPTY): it
    // keeps the producer's offsets and sequence numbers. Clients cannot send one (produce
    // validation refuses a batch without records).
    let empty = h.records_count == 0 && h.total_len() == BATCH_HEADER_LEN;
    if h.last_offset_delta < 0
        || !(empty || h.records_count as i64 == h.last_offset_delta as i64 + 1)
    {
        return Err(BatchError::BadRecordCount);
    }
    if crc32c::crc32c(&buf[CRC_START..]) != h.crc {
        return Err(BatchError::CrcMismatch);
    }
    Ok(h)
}

/// A batch that passed `validate_batch`, with its header. The log takes it as proof, so a
/// caller that had to validate anyway (the broker checks producer sequences before appending)
/// does not pay for a second CRC-32C pass over the payload.
#[derive(Debug)]
pub struct ValidBatch {
    bytes: bytes::BytesMut,
    header: BatchHeader,
}

impl ValidBatch {
    pub fn new(bytes: bytes::BytesMut) -> Result<ValidBatch, BatchError> {
        let header = validate_batch(&bytes)?;
        Ok(ValidBatch { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// A client's batch, validated as Kafka's LogValidator does (every record, compressed ones
    /// decompressed within `limits`, and the rules for client batches). As Kafka, a wrong
    /// maxTimestamp is set to the records' true maximum, which takes a new CRC; the records
    /// themselves are never rewritten.
    pub fn from_client(
        mut bytes: bytes::BytesMut,
        limits: &crate::batch_validation::Limits,
    ) -> Result<ValidBatch, BatchError> {
        let summary = crate::batch_validation::validate_batch(&bytes, limits)?;
        crate::batch_validation::check_client_batch(&summary.header)?;
        let mut header = summary.header;
        if header.max_timestamp != summary.max_timestamp {
            bytes[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
                .copy_from_slice(&summary.max_timestamp.to_be_bytes());
            header.crc = write_crc(&mut bytes);
            header.max_timestamp = summary.max_timestamp;
        }
        Ok(ValidBatch { bytes, header })
    }

    pub(crate) fn into_parts(self) -> (bytes::BytesMut, BatchHeader) {
        (self.bytes, self.header)
    }
}

/// Overwrites baseOffset and partitionLeaderEpoch in place; both lie outside the CRC.
pub(crate) fn assign_offset_and_epoch(buf: &mut [u8], base_offset: i64, epoch: i32) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Walks the records of an uncompressed batch in order and returns the first
/// (offset, timestamp) for which `hit` holds, `Some(None)` if none does. `None` for a
/// compressed batch or a malformed record (callers then fall back to batch-level answers).
/// Runs on every append (`offset_of_max_timestamp`): it stops at the hit and allocates nothing.
fn find_record(
    buf: &[u8],
    h: &BatchHeader,
    mut hit: impl FnMut(i64, i64) -> bool,
) -> Option<Option<(i64, i64)>> {
    if h.compression() != 0 || buf.len() < h.total_len() {
        return None;
    }
    let mut records = Reader::at(&buf[..h.total_len()], BATCH_HEADER_LEN);
    while records.remaining() > 0 {
        let len = usize::try_from(records.varint().ok()?).ok()?;
        let mut record = Reader::new(records.take(len, "record").ok()?);
        record.i8().ok()?; // attributes
        let ts_delta = record.varint().ok()?;
        let off_delta = record.varint().ok()?;
        let (offset, ts) = (
            h.base_offset.wrapping_add(off_delta),
            h.base_timestamp.wrapping_add(ts_delta),
        );
        if hit(offset, ts) {
            return Some(Some((offset, ts)));
        }
    }
    Some(None)
}

/// (offset, timestamp) of every record of an uncompressed batch; `None` as for `find_record`.
#[cfg(test)]
pub(crate) fn record_times(buf: &[u8], h: &BatchHeader) -> Option<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    find_record(buf, h, |o, t| {
        out.push((o, t));
        false
    })?;
    Some(out)
}

/// The offset of the first record carrying the batch's max timestamp (KIP-734 MAX_TIMESTAMP);
/// the batch's last offset when records cannot be inspected (compressed).
pub(crate) fn offset_of_max_timestamp(buf: &[u8], h: &BatchHeader) -> i64 {
    if h.timestamp_type_log_append() {
        return h.base_offset;
    }
    match find_record(buf, h, |_, ts| ts == h.max_timestamp) {
        Some(Some((o, _))) => o,
        _ => h.last_offset(),
    }
}

/// The first record with timestamp >= `target` in a batch whose max timestamp is >= target.
pub(crate) fn first_record_at_or_after(buf: &[u8], h: &BatchHeader, target: i64) -> (i64, i64) {
    if h.timestamp_type_log_append() {
        return (h.base_offset, h.max_timestamp);
    }
    match find_record(buf, h, |_, ts| ts >= target) {
        Some(Some(hit)) => hit,
        _ => (h.base_offset, h.max_timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build_batch;

    #[test]
    fn valid_batch_round_trips() {
        let b = build_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"v2"))], 1000);
        let h = validate_batch(&b).expect("valid");
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.max_timestamp, 1001);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(
            record_times(&b, &h).expect("records"),
            vec![(0, 1000), (1, 1001)]
        );
    }

    #[test]
    fn crc_and_shape_errors() {
        let b = build_batch(&[(None, Some(b"hello"))], 5);
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(validate_batch(&bad), Err(BatchError::CrcMismatch));
        assert_eq!(validate_batch(&b[..40]), Err(BatchError::TooShort));
        assert_eq!(
            validate_batch(&b[..b.len() - 1]),
            Err(BatchError::BadLength)
        );
        let mut magic = b.clone();
        magic[16] = 1;
        assert_eq!(validate_batch(&magic), Err(BatchError::BadMagic(1)));
        let mut count = b.clone();
        count[57..61].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(validate_batch(&count), Err(BatchError::BadRecordCount));
    }

    #[test]
    fn record_lookups_stop_at_the_matching_record() {
        let b = build_batch(
            &[(None, Some(b"a")), (None, Some(b"b")), (None, Some(b"c"))],
            1000,
        );
        let h = validate_batch(&b).expect("valid");
        assert_eq!(offset_of_max_timestamp(&b, &h), 2);
        assert_eq!(first_record_at_or_after(&b, &h, 1001), (1, 1001));
        assert_eq!(first_record_at_or_after(&b, &h, 0), (0, 1000));
    }

    #[test]
    fn valid_batch_refuses_what_validate_refuses() {
        let b = build_batch(&[(None, Some(b"hello"))], 5);
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(ValidBatch::new(bytes::BytesMut::from(&bad[..])).is_err());
        let ok = ValidBatch::new(bytes::BytesMut::from(&b[..])).expect("valid");
        assert_eq!(ok.header().records_count, 1);
    }

    #[test]
    fn a_client_batch_gets_its_true_max_timestamp_and_a_valid_crc() {
        let limits = crate::batch_validation::Limits::default();
        let mut b = build_batch(&[(None, Some(b"a")), (None, Some(b"b"))], 1000);
        b[35..43].copy_from_slice(&i64::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let v = ValidBatch::from_client(bytes::BytesMut::from(&b[..]), &limits).expect("valid");
        assert_eq!(v.header().max_timestamp, 1001);
        let (bytes, _) = v.into_parts();
        assert_eq!(validate_batch(&bytes).expect("crc").max_timestamp, 1001);
        let mut lie = build_batch(&[(None, Some(b"a"))], 0);
        lie[57..61].copy_from_slice(&7i32.to_be_bytes());
        lie[23..27].copy_from_slice(&6i32.to_be_bytes());
        let crc = crc32c::crc32c(&lie[CRC_START..]);
        lie[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(ValidBatch::from_client(bytes::BytesMut::from(&lie[..]), &limits).is_err());
    }

    #[test]
    fn offset_and_epoch_rewrite_keeps_crc_valid() {
        let mut b = build_batch(&[(None, Some(b"x"))], 0);
        assign_offset_and_epoch(&mut b, 42, 7);
        let h = validate_batch(&b).expect("still valid");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 7);
    }
}
