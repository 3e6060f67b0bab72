//! Hand-written primitives of the Kafka wire format, for the parts on the hot path (request
//! header, Produce request) where kafka-protocol would allocate per field or copy records.

use super::ProtocolError;

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short(what: &str) -> ProtocolError {
    ProtocolError::Malformed(format!("truncated {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        if self.remaining() < n {
            return Err(short(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A UUID (topic id): 16 bytes.
    pub fn uuid(&mut self) -> Result<[u8; 16], ProtocolError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16, "uuid")?);
        Ok(id)
    }

    pub fn i8(&mut self) -> Result<i8, ProtocolError> {
        Ok(self.take(1, "int8")?[0] as i8)
    }

    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.take(2, "int16")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.take(4, "int32")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn uvarint(&mut self) -> Result<u32, ProtocolError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.take(1, "varint")?[0];
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtocolError::Malformed("varint too long".into()))
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str, ProtocolError> {
        let b = self.take(n, "string")?;
        std::str::from_utf8(b).map_err(|_| ProtocolError::Malformed("string is not UTF-8".into()))
    }

    pub fn nullable_string(&mut self) -> Result<Option<&'a str>, ProtocolError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        self.utf8(n as usize).map(Some)
    }

    pub fn string(&mut self) -> Result<&'a str, ProtocolError> {
        self.nullable_string()?
            .ok_or_else(|| ProtocolError::Malformed("null string".into()))
    }

    pub fn compact_nullable_string(&mut self) -> Result<Option<&'a str>, ProtocolError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        self.utf8(n as usize - 1).map(Some)
    }

    pub fn compact_string(&mut self) -> Result<&'a str, ProtocolError> {
        self.compact_nullable_string()?
            .ok_or_else(|| ProtocolError::Malformed("null string".into()))
    }

    /// Array length (classic i32 or compact uvarint+1); null arrays read as empty.
    pub fn array_len(&mut self, compact: bool) -> Result<usize, ProtocolError> {
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
            return Err(ProtocolError::Malformed(format!("array of {n} elements")));
        }
        Ok(n as usize)
    }

    /// Nullable bytes: returns (start, len) within the buffer, or None.
    pub fn bytes_span(&mut self, compact: bool) -> Result<Option<(usize, usize)>, ProtocolError> {
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

    pub fn skip_tagged_fields(&mut self) -> Result<(), ProtocolError> {
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
        assert!(
            r.array_len(false).is_err(),
            "100 elements cannot fit in 0 bytes"
        );
    }
}
