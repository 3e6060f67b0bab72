//! A bounded reader over a byte slice: the Kafka wire primitives (big-endian integers,
//! unsigned and zig-zag varints, classic and compact strings, arrays, tagged fields) and the
//! record fields inside a batch. One reader for the broker's hand-parsed requests (request
//! header, Produce) and the storage crate's record walks: every read checks the bytes left
//! and fails, never panics or allocates on a count it was given.
//!
//! Hand-written rather than kafka-protocol's decoders: these paths run per request or per
//! appended batch, where those decoders would allocate per field or copy records.

/// What was wrong with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("varint too long")]
    VarintTooLong,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("null string")]
    NullString,
    #[error("array of {0} elements")]
    ArrayTooLong(i64),
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// A reader over `buf` starting at `pos` (clamped to its end).
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Reader {
            buf,
            pos: pos.min(buf.len()),
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ReadError> {
        if self.remaining() < n {
            return Err(ReadError::Truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A UUID (topic id): 16 bytes.
    pub fn uuid(&mut self) -> Result<[u8; 16], ReadError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16, "uuid")?);
        Ok(id)
    }

    pub fn i8(&mut self) -> Result<i8, ReadError> {
        Ok(self.take(1, "int8")?[0] as i8)
    }

    pub fn i16(&mut self) -> Result<i16, ReadError> {
        let b = self.take(2, "int16")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ReadError> {
        let b = self.take(4, "int32")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint of at most 5 bytes (lengths and tags of the flexible versions).
    pub fn uvarint(&mut self) -> Result<u32, ReadError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.take(1, "varint")?[0];
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ReadError::VarintTooLong)
    }

    /// A zig-zag varint of at most 10 bytes (the record fields of a v2 batch).
    pub fn varint(&mut self) -> Result<i64, ReadError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.take(1, "varint")?[0];
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(ReadError::VarintTooLong)
    }

    /// Bytes prefixed by a zig-zag varint length, -1 (any negative) for null: a record's key,
    /// value or header value.
    pub fn varint_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, ReadError> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| ReadError::Truncated(what))?;
        self.take(n, what).map(Some)
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str, ReadError> {
        let b = self.take(n, "string")?;
        std::str::from_utf8(b).map_err(|_| ReadError::NotUtf8)
    }

    pub fn nullable_string(&mut self) -> Result<Option<&'a str>, ReadError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        self.utf8(n as usize).map(Some)
    }

    pub fn string(&mut self) -> Result<&'a str, ReadError> {
        self.nullable_string()?.ok_or(ReadError::NullString)
    }

    pub fn compact_nullable_string(&mut self) -> Result<Option<&'a str>, ReadError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        self.utf8(n as usize - 1).map(Some)
    }

    pub fn compact_string(&mut self) -> Result<&'a str, ReadError> {
        self.compact_nullable_string()?.ok_or(ReadError::NullString)
    }

    /// Array length (classic i32 or compact uvarint+1); null arrays read as empty.
    pub fn array_len(&mut self, compact: bool) -> Result<usize, ReadError> {
        let n = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if n < 0 {
            return Ok(0);
        }
        // Each element takes at least one byte: a huge count in a small frame is garbage.
        if n as usize > self.remaining() {
            return Err(ReadError::ArrayTooLong(n));
        }
        Ok(n as usize)
    }

    /// Nullable bytes: returns (start, len) within the buffer, or None.
    pub fn bytes_span(&mut self, compact: bool) -> Result<Option<(usize, usize)>, ReadError> {
        let n = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if n < 0 {
            return Ok(None);
        }
        let start = self.pos;
        self.take(n as usize, "bytes")?;
        Ok(Some((start, n as usize)))
    }

    pub fn skip_tagged_fields(&mut self) -> Result<(), ReadError> {
        let n = self.uvarint()?;
        for _ in 0..n {
            let _tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_varints_strings_and_rejects_truncation() {
        let buf = [0x96, 0x01, 0x00, 0x02, b'h', b'i', 0xff, 0xff];
        let mut r = Reader::new(&buf);
        assert_eq!(r.uvarint().unwrap(), 150);
        assert_eq!(r.string().unwrap(), "hi");
        assert_eq!(r.nullable_string().unwrap(), None);
        assert!(r.i32().is_err());
        let mut r = Reader::new(&[0, 0, 0, 100]);
        assert_eq!(
            r.array_len(false),
            Err(ReadError::ArrayTooLong(100)),
            "100 elements cannot fit in 0 bytes"
        );
    }

    #[test]
    fn zig_zag_varints_and_record_bytes_are_bounded() {
        // 3 (zig-zag 6), -1 (1): null, then 2 bytes claimed with only one present.
        let mut r = Reader::new(&[0x06, b'a', b'b', b'c', 0x01, 0x04, b'x']);
        assert_eq!(r.varint_bytes("key").unwrap(), Some(&b"abc"[..]));
        assert_eq!(r.varint_bytes("value").unwrap(), None);
        assert_eq!(r.varint_bytes("value"), Err(ReadError::Truncated("value")));
        // Eleven continuation bytes are not a varint.
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.varint(), Err(ReadError::VarintTooLong));
        // i64::MIN survives the zig-zag round trip.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(r.varint().unwrap(), i64::MIN);
    }
}
