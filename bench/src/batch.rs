//! Kafka v2 record batches, built by hand: records are written straight into one growing buffer
//! (varint framing, no per-record allocation), the header is filled in at the end, and the CRC-32C
//! covers attributes..end as the format requires. Compressed batches compress the records section
//! with kafka-protocol's codecs. The reader side walks fetched batches without allocating for
//! uncompressed data and decodes compressed ones with kafka-protocol's `RecordBatchDecoder`.

use anyhow::{anyhow, bail, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::RecordBatchDecoder;

use crate::cli::CompressionArg;

/// Bytes before the first record in a v2 batch.
pub const BATCH_HEADER_LEN: usize = 61;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl From<CompressionArg> for Codec {
    fn from(c: CompressionArg) -> Codec {
        match c {
            CompressionArg::None => Codec::None,
            CompressionArg::Gzip => Codec::Gzip,
            CompressionArg::Snappy => Codec::Snappy,
            CompressionArg::Lz4 => Codec::Lz4,
            CompressionArg::Zstd => Codec::Zstd,
        }
    }
}

/// Accumulates records for one partition and seals them into a v2 record batch.
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    codec: Codec,
    producer: BatchProducer,
}

/// The producer fields of a batch header: none for a plain producer; id, epoch and base
/// sequence for an idempotent one, and the transactional attribute bit for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

impl BatchProducer {
    pub const NONE: BatchProducer = BatchProducer {
        id: -1,
        epoch: -1,
        base_sequence: -1,
        transactional: false,
    };
}

/// The transactional bit of the batch attributes.
pub const TRANSACTIONAL_ATTRIBUTE: i16 = 0x10;

pub fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

#[inline]
fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

impl BatchBuilder {
    pub fn new(codec: Codec, capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity + BATCH_HEADER_LEN + 64);
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            codec,
            producer: BatchProducer::NONE,
        }
    }

    /// Stamps the batch with a producer id, epoch and base sequence (and the transactional bit).
    pub fn with_producer(mut self, producer: BatchProducer) -> BatchBuilder {
        self.producer = producer;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn record_count(&self) -> i32 {
        self.count
    }

    /// Uncompressed size of the batch so far (header included).
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Encoded size a record with this key and value will add (upper bound for the timestamp delta).
    pub fn record_size_estimate(key_len: usize, value_len: usize) -> usize {
        let body = 1
            + 10
            + 5
            + varint_len(key_len as i64)
            + key_len
            + varint_len(value_len as i64)
            + value_len
            + 1;
        body + varint_len(body as i64)
    }

    /// Appends one record. `fill_value` writes exactly `value_len` bytes into the slice it is given.
    pub fn append_with<F: FnOnce(&mut [u8])>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_len: usize,
        fill_value: F,
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.base_timestamp;
        let offset_delta = self.count as i64;
        let key_len: i64 = key.map(|k| k.len() as i64).unwrap_or(-1);
        let body_len = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map(|k| k.len()).unwrap_or(0)
            + varint_len(value_len as i64)
            + value_len
            + 1;
        put_varint(&mut self.buf, body_len as i64);
        self.buf.push(0); // record attributes
        put_varint(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.extend_from_slice(k);
        }
        put_varint(&mut self.buf, value_len as i64);
        let start = self.buf.len();
        self.buf.resize(start + value_len, 0);
        fill_value(&mut self.buf[start..]);
        put_varint(&mut self.buf, 0); // headers
        self.count += 1;
    }

    /// Appends one record whose value is copied from `value`.
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: &[u8]) {
        self.append_with(timestamp_ms, key, value.len(), |dst| {
            dst.copy_from_slice(value)
        });
    }

    /// Seals the batch: fills the header, compresses if asked, computes the CRC-32C.
    pub fn finish(self) -> Result<Bytes> {
        let BatchBuilder {
            mut buf,
            count,
            base_timestamp,
            max_timestamp,
            codec,
            producer,
        } = self;
        if codec != Codec::None {
            let records = &buf[BATCH_HEADER_LEN..];
            let mut out = BytesMut::with_capacity(records.len() / 2 + BATCH_HEADER_LEN);
            out.extend_from_slice(&[0u8; BATCH_HEADER_LEN]);
            let write = |tmp: &mut BytesMut| -> Result<()> {
                tmp.extend_from_slice(records);
                Ok(())
            };
            match codec {
                Codec::Gzip => Gzip::compress(&mut out, |t: &mut BytesMut| write(t))?,
                Codec::Snappy => Snappy::compress(&mut out, |t: &mut BytesMut| write(t))?,
                Codec::Lz4 => Lz4::compress(&mut out, |t: &mut BytesMut| write(t))?,
                Codec::Zstd => Zstd::compress(&mut out, |t: &mut BytesMut| write(t))?,
                Codec::None => {}
            }
            buf = out.to_vec();
        }
        let batch_len = (buf.len() - 12) as i32;
        buf[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        buf[8..12].copy_from_slice(&batch_len.to_be_bytes());
        buf[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        buf[16] = 2; // magic
        let mut attributes = codec as i16; // codec, create time
        if producer.transactional {
            attributes |= TRANSACTIONAL_ATTRIBUTE;
        }
        buf[21..23].copy_from_slice(&attributes.to_be_bytes());
        buf[23..27].copy_from_slice(&(count - 1).max(0).to_be_bytes()); // last offset delta
        buf[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
        buf[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        buf[43..51].copy_from_slice(&producer.id.to_be_bytes());
        buf[51..53].copy_from_slice(&producer.epoch.to_be_bytes());
        buf[53..57].copy_from_slice(&producer.base_sequence.to_be_bytes());
        buf[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(buf))
    }
}

/// One batch found in fetched data, header fields decoded.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub codec: u8,
    pub is_control: bool,
    /// Written in a transaction (attributes bit 4).
    pub is_transactional: bool,
    pub producer_id: i64,
    pub crc_ok: bool,
    /// The whole batch (header included).
    pub bytes: Bytes,
}

impl FetchedBatch {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
}

/// Splits a fetch response's records into complete v2 batches; a trailing partial batch
/// (brokers may cut the last one at max_bytes) is ignored, as clients do.
pub fn split_batches(mut data: Bytes) -> Result<Vec<FetchedBatch>> {
    let mut out = Vec::new();
    while data.len() >= 12 {
        let base_offset = (&data[0..8]).get_i64();
        let len = (&data[8..12]).get_i32();
        if len < 0 {
            bail!("negative batch length {len}");
        }
        let total = 12 + len as usize;
        if data.len() < total {
            break; // partial batch at the end
        }
        let bytes = data.split_to(total);
        if bytes.len() < BATCH_HEADER_LEN {
            bail!("batch of {} bytes is shorter than a v2 header", bytes.len());
        }
        let magic = bytes[16];
        if magic != 2 {
            bail!(
                "record batch magic {magic} at offset {base_offset}: only v2 batches are supported"
            );
        }
        let stored_crc = (&bytes[17..21]).get_u32();
        let crc_ok = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]) == stored_crc;
        let attributes = (&bytes[21..23]).get_i16();
        out.push(FetchedBatch {
            base_offset,
            last_offset_delta: (&bytes[23..27]).get_i32(),
            record_count: (&bytes[57..61]).get_i32(),
            codec: (attributes & 0x7) as u8,
            is_control: attributes & 0x20 != 0,
            is_transactional: attributes & TRANSACTIONAL_ATTRIBUTE != 0,
            producer_id: (&bytes[43..51]).get_i64(),
            crc_ok,
            bytes,
        });
    }
    Ok(out)
}

/// A record as the reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

fn get_varint(buf: &mut Bytes) -> Result<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        if buf.is_empty() {
            bail!("truncated varint");
        }
        let b = buf.get_u8();
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("varint too long");
        }
    }
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

fn get_nullable(buf: &mut Bytes) -> Result<Option<Bytes>> {
    let len = get_varint(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.len() < len {
        bail!("record field of {len} bytes runs past the batch");
    }
    Ok(Some(buf.split_to(len)))
}

/// The records of one batch. Uncompressed batches are walked in place (values are slices of the
/// fetched buffer); compressed ones go through kafka-protocol's decoder.
pub fn records(batch: &FetchedBatch) -> Result<Vec<FetchedRecord>> {
    if batch.codec != 0 {
        let mut data = batch.bytes.clone();
        let set = RecordBatchDecoder::decode(&mut data).map_err(|e| {
            anyhow!(
                "cannot decode compressed batch at {}: {e}",
                batch.base_offset
            )
        })?;
        return Ok(set
            .records
            .into_iter()
            .map(|r| FetchedRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
            })
            .collect());
    }
    let base_ts = (&batch.bytes[27..35]).get_i64();
    let mut data = batch.bytes.slice(BATCH_HEADER_LEN..);
    let mut out = Vec::with_capacity(batch.record_count.max(0) as usize);
    for _ in 0..batch.record_count.max(0) {
        let len = get_varint(&mut data)?;
        if len < 0 || data.len() < len as usize {
            bail!(
                "record length {len} runs past the batch at {}",
                batch.base_offset
            );
        }
        let mut rec = data.split_to(len as usize);
        if rec.is_empty() {
            bail!("empty record");
        }
        rec.advance(1); // attributes
        let ts_delta = get_varint(&mut rec)?;
        let offset_delta = get_varint(&mut rec)?;
        let key = get_nullable(&mut rec)?;
        let value = get_nullable(&mut rec)?;
        out.push(FetchedRecord {
            offset: batch.base_offset + offset_delta,
            timestamp: base_ts + ts_delta,
            key,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::Compression;

    fn build(codec: Codec, n: usize) -> Bytes {
        let mut b = BatchBuilder::new(codec, 16384);
        for i in 0..n {
            let key = format!("k{i}");
            let value = vec![(i % 251) as u8; 100 + i];
            b.append(1_700_000_000_000 + i as i64, Some(key.as_bytes()), &value);
        }
        b.finish().expect("finish")
    }

    #[test]
    fn uncompressed_batches_decode_with_kafka_protocol_and_have_a_valid_crc() {
        let bytes = build(Codec::None, 50);
        let stored_crc = u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
        assert_eq!(stored_crc, crc32c::crc32c(&bytes[21..]));
        let mut buf = bytes.clone();
        let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes our batch");
        assert_eq!(set.compression, Compression::None);
        assert_eq!(set.version, 2);
        assert_eq!(set.records.len(), 50);
        for (i, r) in set.records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(
                r.value.as_deref(),
                Some(&vec![(i % 251) as u8; 100 + i][..])
            );
        }
    }

    #[test]
    fn every_codec_round_trips_through_kafka_protocol() {
        for (codec, expect) in [
            (Codec::Gzip, Compression::Gzip),
            (Codec::Snappy, Compression::Snappy),
            (Codec::Lz4, Compression::Lz4),
            (Codec::Zstd, Compression::Zstd),
        ] {
            let bytes = build(codec, 20);
            assert_eq!(
                u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]),
                crc32c::crc32c(&bytes[21..])
            );
            let mut buf = bytes.clone();
            let set = RecordBatchDecoder::decode(&mut buf).expect("decodes");
            assert_eq!(set.compression, expect);
            assert_eq!(set.records.len(), 20);
            assert_eq!(set.records[19].value.as_deref(), Some(&vec![19u8; 119][..]));
        }
    }

    #[test]
    fn null_keys_and_the_reader_agree_with_the_writer() {
        let mut b = BatchBuilder::new(Codec::None, 1024);
        b.append(5, None, b"hello");
        b.append(9, Some(b""), b"world!");
        assert_eq!(b.record_count(), 2);
        let bytes = b.finish().expect("finish");
        let mut fetched = bytes.to_vec();
        fetched[0..8].copy_from_slice(&100i64.to_be_bytes()); // broker-assigned base offset
        let mut data = fetched.clone();
        data.extend_from_slice(&fetched[..30]); // a partial batch after it is ignored
        let batches = split_batches(Bytes::from(data)).expect("split");
        assert_eq!(batches.len(), 1);
        assert!(batches[0].crc_ok);
        assert_eq!(batches[0].next_offset(), 102);
        let recs = records(&batches[0]).expect("records");
        assert_eq!(
            recs[0],
            FetchedRecord {
                offset: 100,
                timestamp: 5,
                key: None,
                value: Some(Bytes::from_static(b"hello"))
            }
        );
        assert_eq!(recs[1].offset, 101);
        assert_eq!(recs[1].timestamp, 9);
        assert_eq!(recs[1].key.as_deref(), Some(&b""[..]));
        assert_eq!(recs[1].value.as_deref(), Some(&b"world!"[..]));
    }

    #[test]
    fn compressed_batches_read_back() {
        let bytes = build(Codec::Zstd, 10);
        let batches = split_batches(bytes).expect("split");
        let recs = records(&batches[0]).expect("records");
        assert_eq!(recs.len(), 10);
        assert_eq!(recs[3].value.as_deref(), Some(&vec![3u8; 103][..]));
    }

    #[test]
    fn a_damaged_batch_fails_its_crc() {
        let mut v = build(Codec::None, 3).to_vec();
        let last = v.len() - 5;
        v[last] ^= 0xff;
        let batches = split_batches(Bytes::from(v)).expect("split");
        assert!(!batches[0].crc_ok);
    }

    #[test]
    fn varint_lengths() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            300,
            1 << 20,
            i32::MAX as i64,
            i64::MIN,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut bytes = Bytes::from(b);
            assert_eq!(get_varint(&mut bytes).expect("decodes"), v);
        }
    }
}
