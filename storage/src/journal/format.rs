//! The journal's entry format. An entry is a 24-byte header, the log's identity (its directory
//! name and the marker file that proves the directory is the same log) and a payload:
//!
//! ```text
//! magic u32 | len u32 (whole entry) | crc32c u32 (file number u64 LE, then bytes 12..len) |
//! kind u8 | dir len u8 | marker name len u8 | marker bytes len u8 | offset i64 | dir |
//! marker name | marker bytes |
//! payload (a record batch with its final offsets and epoch; empty for markers)
//! ```
//!
//! Entries of one write are contiguous; the write is padded with zeros to the next 4 KiB page,
//! where the next write starts. Everything read back is checked (magic, bounds, CRC) before
//! it is believed: a torn or damaged entry ends the file.
//!
//! The CRC is seeded with the number of the file the entry is written to because files are
//! recycled: a released file is overwritten in place as a later number, and past the last
//! write of its new life it still holds entries of its earlier ones. Those fail the new
//! number's CRC and end the file, as a torn write does. Files of an older binary (magic
//! "JRNL", CRC over bytes 12..len alone) are still read, so a crash before an upgrade loses
//! nothing; such files were never recycled. A file holds entries of one format only: an entry
//! of the other format ends it (a stale page of a recycled file could otherwise pass a
//! payload crafted as an old-format entry).

use bytes::Bytes;
use zerocopy::little_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::file::PAGE;

/// "JRN2": an entry whose CRC is seeded with its file's number. Its first byte on disk (0x4A)
/// is not zero, which is how padding is told apart.
pub(crate) const MAGIC: u32 = 0x324E_524A;
/// "JRNL": an entry of an older binary, whose CRC covers bytes 12..len alone (same first byte).
pub(crate) const MAGIC_UNSEEDED: u32 = 0x4C4E_524A;
pub(crate) const HEADER_LEN: usize = 24;
/// No entry is larger (a journaled batch is below the log's journaling bound, far less).
pub(crate) const MAX_ENTRY_LEN: usize = 2 << 20;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct Header {
    magic: U32,
    len: U32,
    crc: U32,
    kind: u8,
    dir_len: u8,
    marker_name_len: u8,
    marker_len: u8,
    offset: I64,
}

/// What an entry says about its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A record batch appended at `offset` (its base offset). Written by older binaries; read.
    Batch = 1,
    /// The log was truncated at `offset`: earlier entries of batches ending there or later
    /// are no longer the log's.
    TruncateTo = 2,
    /// The log was emptied (restarted elsewhere, or deleted): no earlier entry is its.
    Forget = 3,
    /// A record batch (its base offset in the batch) appended when the log ended at `offset`:
    /// a replay whose log ends before that lacks an entry, and stops the log there.
    BatchAfter = 4,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<EntryKind> {
        match v {
            1 => Some(EntryKind::Batch),
            2 => Some(EntryKind::TruncateTo),
            3 => Some(EntryKind::Forget),
            4 => Some(EntryKind::BatchAfter),
            _ => None,
        }
    }
}

/// Which log an entry belongs to: its directory (a name inside the data directory) and the
/// marker file in it with the bytes it must hold, so a directory recreated for another topic
/// of the same name never takes an older topic's entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub dir: String,
    pub marker_name: String,
    pub marker: Vec<u8>,
}

impl Identity {
    /// `None` when a part is too long for the format or the directory name is not a plain
    /// name (such a log is simply not journaled).
    pub fn new(dir: &str, marker_name: &str, marker: &[u8]) -> Option<Identity> {
        let plain =
            |s: &str| !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains('/');
        (plain(dir) && plain(marker_name) && marker.len() <= 255).then(|| Identity {
            dir: dir.to_string(),
            marker_name: marker_name.to_string(),
            marker: marker.to_vec(),
        })
    }

    fn len(&self) -> usize {
        self.dir.len() + self.marker_name.len() + self.marker.len()
    }
}

/// The encoded length of an entry.
pub(crate) fn entry_len(id: &Identity, payload_len: usize) -> usize {
    HEADER_LEN + id.len() + payload_len
}

/// Writes one entry at the start of `out` (exactly `entry_len` bytes), for the file numbered
/// `file_no`.
pub(crate) fn encode_entry(
    out: &mut [u8],
    file_no: u64,
    kind: EntryKind,
    offset: i64,
    id: &Identity,
    payload: &[u8],
) {
    let len = entry_len(id, payload.len());
    debug_assert!(out.len() >= len && len <= MAX_ENTRY_LEN);
    let mut at = HEADER_LEN;
    for part in [
        id.dir.as_bytes(),
        id.marker_name.as_bytes(),
        &id.marker,
        payload,
    ] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let mut h = Header {
        magic: U32::new(MAGIC),
        len: U32::new(len as u32),
        crc: U32::new(0),
        kind: kind as u8,
        dir_len: id.dir.len() as u8,
        marker_name_len: id.marker_name.len() as u8,
        marker_len: id.marker.len() as u8,
        offset: I64::new(offset),
    };
    out[..HEADER_LEN].copy_from_slice(h.as_bytes());
    h.crc = U32::new(seeded_crc(file_no, &out[12..len]));
    out[..HEADER_LEN].copy_from_slice(h.as_bytes());
}

/// The CRC of an entry's bytes 12..len written to the file numbered `file_no`.
fn seeded_crc(file_no: u64, covered: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&file_no.to_le_bytes()), covered)
}

/// One entry read back from a journal file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: EntryKind,
    pub offset: i64,
    pub id: Identity,
    pub payload: Bytes,
}

/// Every sound entry of the bytes of the journal file numbered `file_no`, in order, and why
/// reading stopped early (a torn or damaged entry, or one of an earlier life of a recycled
/// file), if it did. Total over any input: nothing is trusted unchecked.
pub(crate) fn decode_file(bytes: &Bytes, file_no: u64) -> (Vec<Entry>, Option<String>) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    // The format of the file's first entry; every later one must have it.
    let mut magic = None;
    let page = PAGE as usize;
    while pos + HEADER_LEN <= bytes.len() {
        // Padding after a write (the next write starts at the next page; a zero page there is
        // the end). An entry's first byte (of its magic) is never zero, so one zero byte tells
        // padding apart, however few bytes of it there are before the page boundary.
        if bytes[pos] == 0 {
            if pos.is_multiple_of(page) {
                return (out, None);
            }
            pos = pos.div_ceil(page) * page;
            continue;
        }
        let Ok(h) = Header::read_from_bytes(&bytes[pos..pos + HEADER_LEN]) else {
            return (out, Some(format!("unreadable header at {pos}")));
        };
        let len = h.len.get() as usize;
        let ids = h.dir_len as usize + h.marker_name_len as usize + h.marker_len as usize;
        let known = h.magic.get() == MAGIC || h.magic.get() == MAGIC_UNSEEDED;
        if !known
            || magic.is_some_and(|m| m != h.magic.get())
            || len < HEADER_LEN + ids
            || len > MAX_ENTRY_LEN
            || pos + len > bytes.len()
        {
            return (out, Some(format!("damaged entry header at {pos}")));
        }
        let covered = &bytes[pos + 12..pos + len];
        let crc = if h.magic.get() == MAGIC {
            seeded_crc(file_no, covered)
        } else {
            crc32c::crc32c(covered)
        };
        if crc != h.crc.get() {
            return (out, Some(format!("checksum mismatch at {pos}")));
        }
        magic = Some(h.magic.get());
        let Some(kind) = EntryKind::from_u8(h.kind) else {
            return (out, Some(format!("unknown entry kind {} at {pos}", h.kind)));
        };
        let mut at = pos + HEADER_LEN;
        let mut take = |n: usize| {
            let s = bytes.slice(at..at + n);
            at += n;
            s
        };
        let dir = take(h.dir_len as usize);
        let marker_name = take(h.marker_name_len as usize);
        let marker = take(h.marker_len as usize);
        let payload = bytes.slice(at..pos + len);
        let (Ok(dir), Ok(marker_name)) =
            (std::str::from_utf8(&dir), std::str::from_utf8(&marker_name))
        else {
            return (out, Some(format!("entry at {pos} names no directory")));
        };
        let Some(id) = Identity::new(dir, marker_name, &marker) else {
            return (
                out,
                Some(format!("entry at {pos} names no plain directory")),
            );
        };
        out.push(Entry {
            kind,
            offset: h.offset.get(),
            id,
            payload,
        });
        pos += len;
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::new("orders-3", "partition.metadata", &[7u8; 16]).unwrap()
    }

    /// The file number the tests write and read as, unless they say otherwise.
    const NO: u64 = 7;

    fn write(entries: &[(EntryKind, i64, &[u8])]) -> Vec<u8> {
        write_for(NO, entries)
    }

    /// One padded write of `entries` into the file numbered `file_no`.
    fn write_for(file_no: u64, entries: &[(EntryKind, i64, &[u8])]) -> Vec<u8> {
        let id = id();
        let total: usize = entries.iter().map(|e| entry_len(&id, e.2.len())).sum();
        let mut out = vec![0u8; total.div_ceil(PAGE as usize) * PAGE as usize];
        let mut at = 0;
        for (k, o, p) in entries {
            encode_entry(&mut out[at..], file_no, *k, *o, &id, p);
            at += entry_len(&id, p.len());
        }
        out
    }

    /// `write` as an older binary did it: magic "JRNL", CRC over bytes 12..len alone.
    fn write_unseeded(entries: &[(EntryKind, i64, &[u8])]) -> Vec<u8> {
        let mut out = write(entries);
        let mut at = 0;
        for (_, _, p) in entries {
            let len = entry_len(&id(), p.len());
            out[at..at + 4].copy_from_slice(&MAGIC_UNSEEDED.to_le_bytes());
            let crc = crc32c::crc32c(&out[at + 12..at + len]);
            out[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
            at += len;
        }
        out
    }

    fn offsets(entries: &[Entry]) -> Vec<i64> {
        entries.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn entries_written_in_two_padded_writes_read_back_in_order() {
        let mut file = write(&[
            (EntryKind::Batch, 0, b"abc"),
            (EntryKind::TruncateTo, 1, b""),
        ]);
        file.extend(write(&[
            (EntryKind::Forget, 0, b""),
            (EntryKind::Batch, 5, b"xyz"),
            (EntryKind::BatchAfter, 8, b"uvw"),
        ]));
        file.extend(vec![0u8; PAGE as usize]);
        let (entries, stop) = decode_file(&Bytes::from(file), NO);
        assert_eq!(stop, None);
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.kind, e.offset, e.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (EntryKind::Batch, 0, b"abc".to_vec()),
                (EntryKind::TruncateTo, 1, vec![]),
                (EntryKind::Forget, 0, vec![]),
                (EntryKind::Batch, 5, b"xyz".to_vec()),
                (EntryKind::BatchAfter, 8, b"uvw".to_vec()),
            ]
        );
        assert_eq!(entries[3].id, id());
    }

    #[test]
    fn a_write_ending_one_to_three_bytes_before_a_page_boundary_does_not_end_the_file() {
        let id = id();
        let page = PAGE as usize;
        for padding in 1..=3 {
            // One entry sized so the first write leaves `padding` zero bytes in its page.
            let payload = vec![7u8; page - padding - entry_len(&id, 0)];
            let mut file = write(&[(EntryKind::Batch, 0, &payload)]);
            assert_eq!(file.len(), page);
            file.extend(write(&[(EntryKind::Batch, 1, b"next")]));
            let (entries, stop) = decode_file(&Bytes::from(file), NO);
            assert_eq!(stop, None, "padding {padding}");
            assert_eq!(entries.len(), 2, "padding {padding}");
            assert_eq!(&entries[1].payload[..], b"next");
        }
    }

    #[test]
    fn a_damaged_entry_ends_the_file_and_keeps_what_came_before() {
        let mut file = write(&[(EntryKind::Batch, 0, b"abc"), (EntryKind::Batch, 1, b"def")]);
        let second = entry_len(&id(), 3);
        file[second + 30] ^= 0xff;
        let (entries, stop) = decode_file(&Bytes::from(file), NO);
        assert_eq!(entries.len(), 1);
        assert!(stop.unwrap().contains("checksum"));
    }

    #[test]
    fn an_entry_written_for_one_file_number_does_not_read_back_as_the_next() {
        let stale = write_for(NO, &[(EntryKind::Batch, 0, b"old")]);
        let (entries, stop) = decode_file(&Bytes::from(stale.clone()), NO + 1);
        assert!(entries.is_empty());
        assert!(stop.unwrap().contains("checksum"));
        // A recycled file: the new life's write, then a page left from the earlier life.
        let mut file = write_for(NO + 1, &[(EntryKind::Batch, 10, b"new")]);
        file.extend(stale);
        let (entries, stop) = decode_file(&Bytes::from(file), NO + 1);
        assert_eq!(offsets(&entries), vec![10], "the new life's entry only");
        assert!(stop.unwrap().contains("checksum"));
    }

    #[test]
    fn entries_of_an_older_binary_still_read_back() {
        let mut file = write_unseeded(&[
            (EntryKind::Batch, 0, b"abc"),
            (EntryKind::TruncateTo, 1, b""),
        ]);
        file.extend(write_unseeded(&[(EntryKind::Batch, 1, b"def")]));
        // Whatever the file's number: an older binary did not seed the CRC with it.
        for no in [0, NO, u64::MAX] {
            let (entries, stop) = decode_file(&Bytes::from(file.clone()), no);
            assert_eq!(stop, None);
            assert_eq!(offsets(&entries), vec![0, 1, 1]);
            assert_eq!(&entries[2].payload[..], b"def");
        }
    }

    #[test]
    fn an_entry_of_the_other_format_ends_the_file() {
        let mut file = write(&[(EntryKind::Batch, 0, b"abc")]);
        file.extend(write_unseeded(&[(EntryKind::Batch, 1, b"def")]));
        let (entries, stop) = decode_file(&Bytes::from(file), NO);
        assert_eq!(offsets(&entries), vec![0]);
        assert!(stop.unwrap().contains("damaged"));
        let mut file = write_unseeded(&[(EntryKind::Batch, 0, b"abc")]);
        file.extend(write(&[(EntryKind::Batch, 1, b"def")]));
        let (entries, stop) = decode_file(&Bytes::from(file), NO);
        assert_eq!(offsets(&entries), vec![0]);
        assert!(stop.unwrap().contains("damaged"));
    }

    #[test]
    fn both_magics_start_with_a_byte_padding_never_has() {
        assert_ne!(MAGIC.to_le_bytes()[0], 0);
        assert_ne!(MAGIC_UNSEEDED.to_le_bytes()[0], 0);
        assert_eq!(&MAGIC.to_le_bytes(), b"JRN2");
        assert_eq!(&MAGIC_UNSEEDED.to_le_bytes(), b"JRNL");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..2000 {
            let mut file = write(&[(EntryKind::Batch, round, b"payload")]);
            for _ in 0..(round % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % file.len();
                file[at] = (seed >> 32) as u8;
            }
            file.truncate((seed as usize >> 8) % (file.len() + 1));
            let _ = decode_file(&Bytes::from(file), NO);
        }
    }

    #[test]
    fn identities_name_plain_directories_only() {
        assert!(Identity::new("a-0", "m", b"x").is_some());
        assert!(Identity::new("../a-0", "m", b"x").is_none());
        assert!(Identity::new("..", "m", b"x").is_none());
        assert!(Identity::new("", "m", b"x").is_none());
        assert!(Identity::new("a-0", "m", &[0u8; 256]).is_none());
    }
}
