//! `log-state.checkpoint`: log start offset and high watermark, so a restart neither exposes
//! deleted records nor starts the high watermark at 0. `cleaner-offset.checkpoint`: the log
//! cleaner's first dirty offset (Kafka's cleaner-offset-checkpoint, kept per partition), so a
//! restart does not rescan a compacted log from its start.

use zerocopy::little_endian::I64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::disk_format::{self, FileKind};

pub(crate) const LOG_STATE_FILE: &str = "log-state.checkpoint";
pub(crate) const EPOCH_FILE: &str = "leader-epoch.checkpoint";
pub(crate) const CLEANER_FILE: &str = "cleaner-offset.checkpoint";
/// A cleaner checkpoint is a header and 8 bytes; a larger file is not one (not read whole).
pub(crate) const CLEANER_FILE_MAX: u64 = 256;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct LogStateBody {
    log_start_offset: I64,
    high_watermark: I64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogState {
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

impl LogState {
    pub fn encode(&self) -> Vec<u8> {
        let body = LogStateBody {
            log_start_offset: I64::new(self.log_start_offset),
            high_watermark: I64::new(self.high_watermark),
        };
        disk_format::encode(FileKind::LogState, 0, body.as_bytes())
    }

    pub fn decode(bytes: &[u8]) -> Result<LogState, String> {
        let (_, body) = disk_format::decode(FileKind::LogState, bytes)?;
        let b = LogStateBody::read_from_bytes(body).map_err(|_| "wrong body size".to_string())?;
        Ok(LogState {
            log_start_offset: b.log_start_offset.get(),
            high_watermark: b.high_watermark.get(),
        })
    }
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct CleanerBody {
    first_dirty: I64,
}

/// The cleaner's first dirty offset: below it each key appeared once after the last round.
pub(crate) fn encode_first_dirty(first_dirty: i64) -> Vec<u8> {
    let body = CleanerBody {
        first_dirty: I64::new(first_dirty),
    };
    disk_format::encode(FileKind::CleanerOffset, 0, body.as_bytes())
}

pub(crate) fn decode_first_dirty(bytes: &[u8]) -> Result<i64, String> {
    let (_, body) = disk_format::decode(FileKind::CleanerOffset, bytes)?;
    let b = CleanerBody::read_from_bytes(body).map_err(|_| "wrong body size".to_string())?;
    Ok(b.first_dirty.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_dirty_offset_round_trips_and_a_damaged_one_is_refused() {
        let enc = encode_first_dirty(12_345);
        assert_eq!(decode_first_dirty(&enc), Ok(12_345));
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(decode_first_dirty(&bad).is_err(), "byte {i} flipped");
        }
        assert!(decode_first_dirty(&enc[..enc.len() - 1]).is_err());
        assert!(decode_first_dirty(
            &LogState {
                log_start_offset: 1,
                high_watermark: 2
            }
            .encode()
        )
        .is_err());
    }
}
