//! Appending group records (offset commits, group metadata, tombstones) to an offsets
//! partition with acks=all, answered with the error a group client expects.

use super::host::{self, Shard};
use super::offsets_log::{self, LogRecord};
use super::partitions::OffsetsPartition;
use super::state::now_ms;
use crate::kafka::errors;
use std::rc::Rc;
use std::time::Duration;

/// How long a write to the offsets log may wait for acks=all.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl OffsetsPartition {
    /// Appends records with acks=all; answers with the error a group client expects.
    pub async fn write(&self, shard: &Rc<Shard>, records: Vec<LogRecord>) -> i16 {
        if records.is_empty() {
            return errors::NONE;
        }
        if !self.active.get() {
            return errors::NOT_COORDINATOR;
        }
        let batch = offsets_log::build_batch(&records, now_ms());
        map_write_error(host::append(shard, self.index, batch, WRITE_TIMEOUT).await)
    }
}

/// Kafka's mapping of offsets-log append errors to group errors.
pub(super) fn map_write_error(code: i16) -> i16 {
    match code {
        errors::NONE => errors::NONE,
        errors::UNKNOWN_TOPIC_OR_PARTITION
        | errors::NOT_ENOUGH_REPLICAS
        | errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | errors::REQUEST_TIMED_OUT => errors::COORDINATOR_NOT_AVAILABLE,
        errors::NOT_LEADER_OR_FOLLOWER | errors::KAFKA_STORAGE_ERROR => errors::NOT_COORDINATOR,
        errors::MESSAGE_TOO_LARGE | errors::RECORD_LIST_TOO_LARGE => {
            errors::INVALID_COMMIT_OFFSET_SIZE
        }
        _ => errors::UNKNOWN_SERVER_ERROR,
    }
}
