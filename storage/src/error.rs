//! Typed errors of the partition log. The broker maps `Io`/`DiskFull`/`Corrupt` to
//! KAFKA_STORAGE_ERROR, `InvalidBatch` to CORRUPT_MESSAGE/INVALID_RECORD and
//! `OffsetOutOfRange` to OFFSET_OUT_OF_RANGE.

use std::io;
use std::path::{Path, PathBuf};

use crate::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("disk full while writing {path}")]
    DiskFull { path: PathBuf },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("corrupt log file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("non-contiguous append: expected base offset {expected}, got {got}")]
    NonContiguous { expected: i64, got: i64 },
    #[error("partition log is closed")]
    Closed,
    #[error("the batch at offset {offset} was not written: its append failed")]
    NotWritten { offset: i64 },
}

impl StorageError {
    /// Classifies an I/O error: ENOSPC/EDQUOT become `DiskFull` so the broker can tell them apart.
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> StorageError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StorageError::DiskFull {
                path: path.to_path_buf(),
            },
            _ if source.kind() == io::ErrorKind::StorageFull => StorageError::DiskFull {
                path: path.to_path_buf(),
            },
            _ => StorageError::Io {
                path: path.to_path_buf(),
                op,
                source,
            },
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A copy for the other appenders of a failed group write (io::Error is not Clone).
    pub(crate) fn duplicate(&self) -> StorageError {
        match self {
            StorageError::Io { path, op, source } => StorageError::Io {
                path: path.clone(),
                op,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            StorageError::DiskFull { path } => StorageError::DiskFull { path: path.clone() },
            StorageError::InvalidBatch(e) => StorageError::InvalidBatch(e.clone()),
            StorageError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => StorageError::OffsetOutOfRange {
                offset: *offset,
                log_start: *log_start,
                log_end: *log_end,
            },
            StorageError::Corrupt { path, reason } => StorageError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
            StorageError::NonContiguous { expected, got } => StorageError::NonContiguous {
                expected: *expected,
                got: *got,
            },
            StorageError::Closed => StorageError::Closed,
            StorageError::NotWritten { offset } => StorageError::NotWritten { offset: *offset },
        }
    }
}

/// glommio wraps io errors in a way that loses `raw_os_error`; unwrap to the original.
pub(crate) fn glommio_io<T>(e: glommio::GlommioError<T>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::from(other),
    }
}
