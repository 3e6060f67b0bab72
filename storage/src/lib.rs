//! chronik-storage: the partition log. Segments of Kafka v2 record batches written with
//! O_DIRECT through io_uring (glommio), sparse offset and time indexes, group-committed
//! fdatasync, crash recovery, retention and a per-shard read cache. See README.md.

pub mod batch;
pub mod batch_validation;
pub mod byte_reader;
pub mod cache;
mod checkpoint;
mod commit;
mod compression;
pub mod config;
pub mod control;
pub mod disk;
mod disk_format;
mod epoch;
pub mod error;
mod file;
mod index;
pub mod journal;
pub mod log;
mod records;
mod recovery;
mod segment;
pub mod testing;
mod time_index;

pub use batch::{
    parse_header, validate_batch, BatchError, BatchHeader, ValidBatch, BATCH_HEADER_LEN,
};
pub use cache::ReadCache;
pub use config::{CleanupPolicy, CompactionConfig, FlushPolicy, LogConfig};
pub use control::{build_marker_batch, parse_marker, TxnMarker};
pub use error::StorageError;
pub use journal::replay::{recover as replay_journals, ReplayReport};
pub use journal::Journal;
pub use log::clean::{CleanStats, CleanerLimits};
pub use log::clean_txn::{AbortedRange, ProducerTail, TxnContext};
pub use log::pacing::CleanerPace;
pub use log::{AppendResult, DirMarker, PartitionLog};
