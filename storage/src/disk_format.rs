//! The small fixed header in front of every file we own besides segments (indexes, checkpoints):
//! a zerocopy struct checked with CRC-32 (crc32fast), so a torn or foreign file is detected
//! and rebuilt instead of trusted.

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub(crate) const MAGIC: [u8; 4] = *b"CHRK";
pub(crate) const VERSION: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum FileKind {
    OffsetIndex = 1,
    TimeIndex = 2,
    LogState = 3,
    LeaderEpochs = 4,
    CleanerOffset = 5,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct FileHeader {
    magic: [u8; 4],
    version: U16,
    kind: U16,
    /// Segment base offset for indexes; 0 for checkpoints.
    pub base_offset: I64,
    pub body_len: U64,
    body_crc: U32,
    /// CRC-32 of the header bytes before this field.
    header_crc: U32,
}

pub(crate) const HEADER_LEN: usize = std::mem::size_of::<FileHeader>();

pub(crate) fn encode(kind: FileKind, base_offset: i64, body: &[u8]) -> Vec<u8> {
    let mut h = FileHeader {
        magic: MAGIC,
        version: U16::new(VERSION),
        kind: U16::new(kind as u16),
        base_offset: I64::new(base_offset),
        body_len: U64::new(body.len() as u64),
        body_crc: U32::new(crc32fast::hash(body)),
        header_crc: U32::new(0),
    };
    let crc = crc32fast::hash(&h.as_bytes()[..HEADER_LEN - 4]);
    h.header_crc = U32::new(crc);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Returns the header and body, or why the file cannot be trusted.
pub(crate) fn decode(kind: FileKind, bytes: &[u8]) -> Result<(FileHeader, &[u8]), String> {
    let (h, body) = FileHeader::read_from_prefix(bytes)
        .map_err(|_| "file shorter than its header".to_string())?;
    if h.magic != MAGIC {
        return Err("bad magic".into());
    }
    if crc32fast::hash(&bytes[..HEADER_LEN - 4]) != h.header_crc.get() {
        return Err("header checksum mismatch".into());
    }
    if h.version.get() != VERSION {
        return Err(format!("unsupported version {}", h.version.get()));
    }
    if h.kind.get() != kind as u16 {
        return Err(format!("wrong file kind {}", h.kind.get()));
    }
    if h.body_len.get() != body.len() as u64 {
        return Err(format!(
            "body is {} bytes, header says {}",
            body.len(),
            h.body_len.get()
        ));
    }
    if crc32fast::hash(body) != h.body_crc.get() {
        return Err("body checksum mismatch".into());
    }
    Ok((h, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage_detected() {
        let enc = encode(FileKind::OffsetIndex, 77, b"payload");
        let (h, body) = decode(FileKind::OffsetIndex, &enc).expect("decodes");
        assert_eq!(h.base_offset.get(), 77);
        assert_eq!(body, b"payload");
        assert!(decode(FileKind::TimeIndex, &enc).is_err());
        let mut bad = enc.clone();
        let n = bad.len() - 1;
        bad[n] ^= 1;
        assert!(decode(FileKind::OffsetIndex, &bad).is_err());
        assert!(decode(FileKind::OffsetIndex, &enc[..10]).is_err());
    }
}
