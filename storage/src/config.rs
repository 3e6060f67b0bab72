//! Per-log configuration (Kafka topic configs `segment.bytes`, `segment.ms`, `retention.*`, flush).

/// When an append's future resolves, and when data is fdatasync'ed.
/// See storage/README.md for exactly what survives a process kill and a power cut under each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Resolve only after an fdatasync covering the batch (group-committed across appenders).
    Always,
    /// Resolve once the batch is written to the file (survives a process kill);
    /// fdatasync every N milliseconds in the background.
    IntervalMs(u64),
    /// Resolve once written to the file; fdatasync whenever N bytes are unsynced.
    Bytes(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when the active one would exceed this (default 1 GiB, max 2 GiB
    /// because index positions are u32 and we keep headroom).
    pub segment_bytes: u64,
    /// Roll a non-empty active segment older than this (default 7 days).
    pub segment_ms: Option<u64>,
    /// Delete whole non-active segments whose newest timestamp is older (default 7 days).
    pub retention_ms: Option<i64>,
    /// Delete oldest non-active segments while the log stays at least this big (default none).
    pub retention_bytes: Option<u64>,
    /// Default `IntervalMs(1000)`: Kafka's default acks=1 durability (page cache, no fsync)
    /// plus a bounded one-second window for power loss.
    pub flush: FlushPolicy,
    /// Bytes between sparse index entries (default 4096).
    pub index_interval_bytes: u32,
    /// Use buffered I/O even where O_DIRECT works (tests, odd file systems).
    pub force_buffered_io: bool,
}

pub(crate) const MAX_SEGMENT_BYTES: u64 = 2 << 30;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush: FlushPolicy::IntervalMs(1000),
            index_interval_bytes: 4096,
            force_buffered_io: false,
        }
    }
}

impl LogConfig {
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(4096, MAX_SEGMENT_BYTES)
    }
}
