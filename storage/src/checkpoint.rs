//! `log-state.checkpoint`: log start offset and high watermark, so a restart neither exposes
//! deleted records nor starts the high watermark at 0.

use zerocopy::little_endian::I64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::disk_format::{self, FileKind};

pub(crate) const LOG_STATE_FILE: &str = "log-state.checkpoint";
pub(crate) const EPOCH_FILE: &str = "leader-epoch.checkpoint";

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
