//! Per-log configuration (Kafka topic configs `segment.bytes`, `segment.ms`, `retention.*`, flush,
//! `cleanup.policy` and the compaction settings).

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

/// Kafka's `cleanup.policy`: `delete`, `compact` or `compact,delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Old segments are deleted by `retention.ms` / `retention.bytes`.
    pub delete: bool,
    /// The log cleaner keeps only the latest record of each key.
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };

    /// Parses Kafka's comma-separated list; `None` for anything else.
    pub fn parse(s: &str) -> Option<CleanupPolicy> {
        let mut p = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in s.split(',').map(str::trim) {
            match part {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => return None,
            }
        }
        (p.delete || p.compact).then_some(p)
    }
}

/// Kafka's compaction topic configs, with Kafka's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    /// `min.cleanable.dirty.ratio`: clean once dirty bytes / cleanable bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this stay uncompacted.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: Option<u64>,
    /// `delete.retention.ms`: how long a tombstone (null value) outlives what it deletes.
    pub delete_retention_ms: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: None,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
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
    /// `cleanup.policy`; retention applies only with `delete`, the cleaner only with `compact`.
    pub cleanup: CleanupPolicy,
    pub compaction: CompactionConfig,
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
            cleanup: CleanupPolicy::DELETE,
            compaction: CompactionConfig::default(),
        }
    }
}

impl LogConfig {
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(4096, MAX_SEGMENT_BYTES)
    }
}
