//! Deep validation of one Kafka v2 record batch, as Kafka's `LogValidator` does before a client's
//! batch reaches the log, and as the group coordinator does before it decodes a batch it reads
//! back: header, length, CRC-32C, record count, then every record's framing — walked in place
//! over the request bytes when uncompressed, and streamed through a small per-thread buffer
//! when compressed, so a batch is never copied or inflated whole. Total on any input: every
//! error is a `BatchError`, never a panic, and nothing is allocated in proportion to a count
//! or length the batch declares.

use std::cell::RefCell;
use std::io::Read;

use crate::batch::{parse_header, BatchError, BatchHeader, BATCH_HEADER_LEN, CRC_START};

/// What a batch's records may take once decompressed when the caller knows no better: the cap
/// behind `Limits::default` and the floor of `Limits::for_max_message_bytes`.
pub const DEFAULT_MAX_UNCOMPRESSED_BYTES: usize = 64 << 20;
/// Bytes decompressed per step into the per-thread buffer.
const CHUNK: usize = 16 << 10;
/// The scratch buffers a thread keeps between batches; a larger one is released after use.
const SCRATCH_KEEP: usize = 1 << 20;
/// Snappy emits at most ~21 bytes per input byte (a 3-byte copy of 64 bytes); a block that
/// claims more cannot be valid, and so cannot make us allocate more than this many times its size.
const SNAPPY_MAX_RATIO: usize = 24;
/// A zstd frame may ask for a window up to 2^27 bytes (zstd's own default limit, which Kafka's
/// zstd-jni keeps); its pages are touched only as far as output is produced.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// xerial snappy-java framing, used by the Java client: magic, version and compatible version.
pub(crate) const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Bounds applied while validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a compressed batch's records may decompress to. Past it the batch is
    /// refused (`TooLargeUncompressed`) without decompressing further.
    pub max_uncompressed_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_uncompressed_bytes: DEFAULT_MAX_UNCOMPRESSED_BYTES,
        }
    }
}

impl Limits {
    /// The bound for a topic whose batches are at most `max_message_bytes` on the wire: four
    /// times that, and never below the default 64 MiB (real producers compress batches of
    /// their own `batch.size`, far below it).
    pub fn for_max_message_bytes(max_message_bytes: usize) -> Limits {
        Limits {
            max_uncompressed_bytes: max_message_bytes
                .saturating_mul(4)
                .max(DEFAULT_MAX_UNCOMPRESSED_BYTES),
        }
    }
}

/// What validation learned about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub header: BatchHeader,
    /// The largest record timestamp (-1 when no record has one): what Kafka sets as the
    /// batch's maxTimestamp for CreateTime batches.
    pub max_timestamp: i64,
    /// Bytes of the records section once decompressed (its length when uncompressed).
    pub records_bytes: usize,
}

/// Validates that `bytes` is exactly one well-formed v2 batch: magic, length, CRC-32C, codec,
/// record count against lastOffsetDelta, and every record (length framing, offset deltas
/// 0..count in order, key/value/header lengths within the record, header count bounded by the
/// bytes present, nothing left over). Compressed records are decompressed as a stream with
/// `limits.max_uncompressed_bytes` as a hard bound. Producer fields and the base offset are
/// checked by `check_client_batch`, which applies only to batches from clients.
pub fn validate_batch(bytes: &[u8], limits: &Limits) -> Result<BatchSummary, BatchError> {
    let h = parse_header(bytes)?;
    if h.total_len() != bytes.len() {
        return Err(BatchError::NotOneBatch);
    }
    if crc32c::crc32c(&bytes[CRC_START..]) != h.crc {
        return Err(BatchError::CrcMismatch);
    }
    if h.records_count <= 0
        || h.last_offset_delta < 0
        || i64::from(h.records_count) != i64::from(h.last_offset_delta) + 1
    {
        return Err(BatchError::BadRecordCount);
    }
    let records = &bytes[BATCH_HEADER_LEN..];
    let (max_timestamp, records_bytes) = match h.compression() {
        0 => {
            // Every record takes at least 7 bytes: a count the bytes cannot hold is refused
            // before walking (the common lie, and it keeps the walk proportional to the bytes).
            if records.len() / 7 < h.records_count as usize {
                return Err(BatchError::InvalidRecord(
                    "record count larger than the records present",
                ));
            }
            let mut src = SliceSource {
                buf: records,
                pos: 0,
            };
            (walk_records(&mut src, &h)?, records.len())
        }
        codec @ 1..=4 => with_scratch(|scratch| {
            let budget = limits.max_uncompressed_bytes;
            let r = decoder(codec, records, &mut scratch.block, budget)?;
            stream(r, &h, &mut scratch.chunk, budget)
        })?,
        codec => return Err(BatchError::UnknownCompression(codec)),
    };
    Ok(BatchSummary {
        header: h,
        max_timestamp,
        records_bytes,
    })
}

/// The records section of a compressed batch (`bytes` is the whole batch, `h` its header),
/// decompressed whole and appended to `out` with the same decoders and bounds as validation: past
/// `limit` bytes it stops with `TooLargeUncompressed`. For the log cleaner, which must see
/// each record to drop the overwritten ones and then recompress the rest.
pub(crate) fn decompress_records(
    bytes: &[u8],
    h: &BatchHeader,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let records = bytes
        .get(BATCH_HEADER_LEN..h.total_len().min(bytes.len()))
        .ok_or(BatchError::TooShort)?;
    let mut block = Vec::new();
    let r = decoder(h.compression(), records, &mut block, limit)?;
    read_bounded(r, limit, out)
}

/// The decompressing reader of a batch's records section for `codec` (1 gzip, 2 snappy, 3 lz4,
/// 4 zstd), each bounded as validation needs (snappy's output `budget`, zstd's window). Boxed:
/// one small allocation per compressed batch, next to the codec's own state.
fn decoder<'a>(
    codec: u8,
    records: &'a [u8],
    block: &'a mut Vec<u8>,
    budget: usize,
) -> Result<Box<dyn Read + 'a>, BatchError> {
    Ok(match codec {
        1 => Box::new(flate2::bufread::GzDecoder::new(records)),
        2 => Box::new(SnappyReader::new(records, block, budget)),
        3 => Box::new(lz4::Decoder::new(records).map_err(|_| BatchError::BadCompression)?),
        4 => {
            let mut r = zstd::stream::read::Decoder::with_buffer(records)
                .map_err(|_| BatchError::BadCompression)?;
            r.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|_| BatchError::BadCompression)?;
            Box::new(r)
        }
        codec => return Err(BatchError::UnknownCompression(codec)),
    })
}

/// Reads `r` to its end onto `out`, growing `out` only as bytes arrive, adding at most `limit`.
fn read_bounded<R: Read>(r: R, limit: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    let start = out.len();
    // One byte past the limit tells "exactly at the limit" from "more".
    let mut r = r.take(limit as u64 + 1);
    let mut chunk = [0u8; CHUNK];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                return Err(BatchError::TooLargeUncompressed)
            }
            Err(_) => return Err(BatchError::BadCompression),
        };
        if out.len() - start + n > limit {
            return Err(BatchError::TooLargeUncompressed);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// The rules Kafka applies only to batches appended by clients (`AppendOrigin.CLIENT`): base
/// offset 0, no control batch, a sequence for an idempotent producer, and no LogAppendTime
/// (the broker sets that, never the producer).
pub fn check_client_batch(h: &BatchHeader) -> Result<(), BatchError> {
    if h.base_offset != 0 {
        return Err(BatchError::InvalidRecord(
            "the base offset of a produced batch must be 0",
        ));
    }
    if h.is_control() {
        return Err(BatchError::InvalidRecord(
            "clients may not write control batches",
        ));
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return Err(BatchError::InvalidRecord(
            "an idempotent batch needs a base sequence",
        ));
    }
    if h.producer_id >= 0 && h.producer_epoch < 0 {
        return Err(BatchError::InvalidRecord(
            "an idempotent batch needs a producer epoch",
        ));
    }
    if h.timestamp_type_log_append() {
        return Err(BatchError::InvalidTimestamp(
            "producers may not set the LogAppendTime timestamp type",
        ));
    }
    Ok(())
}

/// Per-thread buffers for compressed batches (a shard is one thread): reused from batch to
/// batch, never holding a batch beyond its validation.
struct Scratch {
    chunk: Vec<u8>,
    block: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            chunk: Vec::new(),
            block: Vec::new(),
        })
    };
}

fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut guard) => {
            let s = &mut *guard;
            let out = f(s);
            for v in [&mut s.chunk, &mut s.block] {
                if v.capacity() > SCRATCH_KEEP {
                    *v = Vec::new();
                }
            }
            out
        }
        // Not reachable (validation does not re-enter), but a fresh buffer is always correct.
        Err(_) => f(&mut Scratch {
            chunk: Vec::new(),
            block: Vec::new(),
        }),
    })
}

fn stream<R: Read>(
    r: R,
    h: &BatchHeader,
    chunk: &mut Vec<u8>,
    budget: usize,
) -> Result<(i64, usize), BatchError> {
    if chunk.len() < CHUNK {
        chunk.resize(CHUNK, 0);
    }
    let mut src = StreamSource {
        r,
        buf: chunk,
        pos: 0,
        len: 0,
        total: 0,
        budget,
        eof: false,
    };
    let max_ts = walk_records(&mut src, h)?;
    Ok((max_ts, src.total))
}

/// The decompressed (or plain) bytes of a batch's records section, read front to back.
trait RecordSource {
    /// The next byte, `None` at the end of the records.
    fn next_byte(&mut self) -> Result<Option<u8>, BatchError>;
    /// Skips `n` bytes; `false` if the records end first.
    fn skip(&mut self, n: usize) -> Result<bool, BatchError>;
}

struct SliceSource<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl RecordSource for SliceSource<'_> {
    #[inline]
    fn next_byte(&mut self) -> Result<Option<u8>, BatchError> {
        let b = self.buf.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        Ok(b)
    }
    #[inline]
    fn skip(&mut self, n: usize) -> Result<bool, BatchError> {
        if self.buf.len() - self.pos < n {
            return Ok(false);
        }
        self.pos += n;
        Ok(true)
    }
}

struct StreamSource<'a, R> {
    r: R,
    buf: &'a mut [u8],
    pos: usize,
    len: usize,
    /// Bytes decompressed so far, held to `budget`.
    total: usize,
    budget: usize,
    eof: bool,
}

impl<R: Read> StreamSource<'_, R> {
    /// Makes at least one byte available; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, BatchError> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        let n = loop {
            match self.r.read(self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                    return Err(BatchError::TooLargeUncompressed)
                }
                Err(_) => return Err(BatchError::BadCompression),
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.total = self.total.saturating_add(n);
        if self.total > self.budget {
            return Err(BatchError::TooLargeUncompressed);
        }
        self.pos = 0;
        self.len = n;
        Ok(true)
    }
}

impl<R: Read> RecordSource for StreamSource<'_, R> {
    fn next_byte(&mut self) -> Result<Option<u8>, BatchError> {
        if !self.fill()? {
            return Ok(None);
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(Some(b))
    }
    fn skip(&mut self, mut n: usize) -> Result<bool, BatchError> {
        while n > 0 {
            if !self.fill()? {
                return Ok(false);
            }
            let step = n.min(self.len - self.pos);
            self.pos += step;
            n -= step;
        }
        Ok(true)
    }
}

/// Snappy as Kafka clients write it: xerial framing (Java: a header, then blocks each
/// prefixed by its compressed length) or one raw block (librdkafka). Each block is decoded
/// into the per-thread block buffer, its claimed size checked against the budget and
/// snappy's own ratio before anything is allocated.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    block: &'a mut Vec<u8>,
    pos: usize,
    budget: usize,
    started: bool,
}

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], block: &'a mut Vec<u8>, budget: usize) -> SnappyReader<'a> {
        let framed = input.len() >= XERIAL_HEADER_LEN && input[..8] == XERIAL_MAGIC[..];
        block.clear();
        SnappyReader {
            input: if framed {
                &input[XERIAL_HEADER_LEN..]
            } else {
                input
            },
            framed,
            block,
            pos: 0,
            budget,
            started: false,
        }
    }

    /// Decodes the next block into `block`; false when the input is exhausted.
    fn next_block(&mut self) -> std::io::Result<bool> {
        let raw = if self.framed {
            if self.input.is_empty() {
                return Ok(false);
            }
            if self.input.len() < 4 {
                return Err(corrupt("truncated xerial block length"));
            }
            let n = u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]])
                as usize;
            let rest = &self.input[4..];
            if rest.len() < n {
                return Err(corrupt("truncated xerial block"));
            }
            self.input = &rest[n..];
            &rest[..n]
        } else {
            if self.started {
                return Ok(false);
            }
            self.started = true;
            std::mem::take(&mut self.input)
        };
        let n = snap::raw::decompress_len(raw).map_err(|_| corrupt("bad snappy header"))?;
        if n > self.budget {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "snappy block larger than the bound",
            ));
        }
        if n > raw
            .len()
            .saturating_mul(SNAPPY_MAX_RATIO)
            .saturating_add(64)
        {
            return Err(corrupt("snappy block claims an impossible size"));
        }
        self.block.clear();
        self.block.resize(n, 0);
        let got = snap::raw::Decoder::new()
            .decompress(raw, &mut self.block[..])
            .map_err(|_| corrupt("bad snappy block"))?;
        self.block.truncate(got);
        self.pos = 0;
        Ok(true)
    }
}

fn corrupt(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A record's body: reads are held to the record's declared length.
struct Body<'s, S> {
    src: &'s mut S,
    left: usize,
}

const PREMATURE_EOF: BatchError =
    BatchError::InvalidRecord("incorrect declared batch size, premature EOF reached");
const OVERRUN: BatchError = BatchError::InvalidRecord("record fields overrun the record's length");

impl<S: RecordSource> Body<'_, S> {
    #[inline]
    fn byte(&mut self) -> Result<u8, BatchError> {
        if self.left == 0 {
            return Err(OVERRUN);
        }
        self.left -= 1;
        self.src.next_byte()?.ok_or(PREMATURE_EOF)
    }
    #[inline]
    fn skip(&mut self, n: usize) -> Result<(), BatchError> {
        if n > self.left {
            return Err(OVERRUN);
        }
        self.left -= n;
        if self.src.skip(n)? {
            Ok(())
        } else {
            Err(PREMATURE_EOF)
        }
    }
    /// A zig-zag varint of at most `max_bytes` bytes (5 for an int, 10 for a long).
    #[inline]
    fn varint(&mut self, max_bytes: u32) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if max_bytes == 5 {
                    // As Java's readVarint: the value is an int, bits past 32 are dropped.
                    let v = raw as u32;
                    return Ok(i64::from(((v >> 1) as i32) ^ -((v & 1) as i32)));
                }
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(BatchError::InvalidRecord("varint too long"))
    }
    /// A length that is -1 (null) or a byte count within the record; skips the bytes.
    #[inline]
    fn skip_nullable(&mut self, what: &'static str) -> Result<(), BatchError> {
        let n = self.varint(5)?;
        match n {
            -1 => Ok(()),
            n if n >= 0 => self.skip(n as usize),
            _ => Err(BatchError::InvalidRecord(what)),
        }
    }
}

/// A record length varint read outside any record body (records have no upper bound but the
/// batch, which the varint's 5 bytes already keep within an i32).
fn record_length<S: RecordSource>(src: &mut S) -> Result<i64, BatchError> {
    let mut body = Body {
        src,
        left: usize::MAX,
    };
    body.varint(5)
}

/// Walks every record; returns the largest record timestamp (-1 if none is larger).
fn walk_records<S: RecordSource>(src: &mut S, h: &BatchHeader) -> Result<i64, BatchError> {
    let mut max_ts = -1i64;
    for i in 0..i64::from(h.records_count) {
        let len = record_length(src)?;
        if len < 0 {
            return Err(BatchError::InvalidRecord("negative record length"));
        }
        let mut body = Body {
            src: &mut *src,
            left: len as usize,
        };
        let _attributes = body.byte()?;
        let ts = h.base_timestamp.wrapping_add(body.varint(10)?);
        if ts > max_ts {
            max_ts = ts;
        }
        if body.varint(5)? != i {
            return Err(BatchError::InvalidRecord(
                "record offset deltas are not 0, 1, 2, ... in order",
            ));
        }
        body.skip_nullable("invalid key length")?;
        body.skip_nullable("invalid value length")?;
        let headers = body.varint(5)?;
        if headers < 0 || headers as u64 > body.left as u64 {
            return Err(BatchError::InvalidRecord(
                "invalid number of record headers",
            ));
        }
        for _ in 0..headers {
            let key = body.varint(5)?;
            if key < 0 {
                return Err(BatchError::InvalidRecord("invalid header key length"));
            }
            body.skip(key as usize)?;
            body.skip_nullable("invalid header value length")?;
        }
        if body.left != 0 {
            return Err(BatchError::InvalidRecord(
                "record length larger than its fields",
            ));
        }
    }
    if src.next_byte()?.is_some() {
        return Err(BatchError::InvalidRecord(
            "incorrect declared batch size, records still remaining",
        ));
    }
    Ok(max_ts)
}

#[cfg(test)]
mod tests;
