//! The consumer-group settings as the coordinator runs with them (`crate::group` reads this;
//! the settings themselves are declared in `settings.rs` with every other one).

use super::settings::{GroupSettings, GroupValues};
use std::time::Duration;

/// What the coordinator runs with (resolved from flags, environment, file and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// offsets.topic.num.partitions
    pub offsets_partitions: i32,
    /// offsets.topic.replication.factor (None: min(3, live brokers))
    pub offsets_replication_factor: Option<i16>,
    /// offsets.retention.minutes (or offsets-retention-ms)
    pub offsets_retention: Duration,
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay: Duration,
    /// group.min.session.timeout.ms / group.max.session.timeout.ms
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// offset.metadata.max.bytes
    pub max_metadata_bytes: usize,
    /// How often offsets expire (offsets.retention.check.interval.ms).
    pub retention_check_interval: Duration,
    /// offsets.topic.segment.bytes: segment size of `__consumer_offsets`, which the log cleaner
    /// compacts (only sealed segments are cleaned, so this bounds what is left uncompacted).
    pub offsets_segment_bytes: u64,
    /// transaction.state.log.num.partitions
    pub txn_partitions: i32,
    /// transaction.max.timeout.ms
    pub txn_max_timeout_ms: i32,
}

/// The declared defaults.
impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig::from_values(GroupSettings::default().values())
    }
}

impl GroupConfig {
    /// The given settings (flag or environment > file > default), then checked.
    pub fn resolve(given: GroupSettings) -> Result<GroupConfig, String> {
        let c = GroupConfig::from_values(given.values());
        c.check()?;
        Ok(c)
    }

    fn from_values(v: GroupValues) -> GroupConfig {
        GroupConfig {
            offsets_partitions: v.offsets_topic_num_partitions,
            offsets_replication_factor: v.offsets_topic_replication_factor,
            offsets_retention: match v.offsets_retention_ms {
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_secs(v.offsets_retention_minutes.saturating_mul(60)),
            },
            initial_rebalance_delay: Duration::from_millis(v.group_initial_rebalance_delay_ms),
            min_session_timeout_ms: v.group_min_session_timeout_ms,
            max_session_timeout_ms: v.group_max_session_timeout_ms,
            max_metadata_bytes: v.offset_metadata_max_bytes,
            retention_check_interval: Duration::from_millis(v.offsets_retention_check_interval_ms),
            offsets_segment_bytes: v.offsets_topic_segment_bytes,
            txn_partitions: v.transaction_state_log_num_partitions,
            txn_max_timeout_ms: v.transaction_max_timeout_ms,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.offsets_partitions < 1 {
            return Err("offsets-topic-num-partitions must be at least 1".into());
        }
        if self.txn_partitions < 1 {
            return Err("transaction-state-log-num-partitions must be at least 1".into());
        }
        if self.txn_max_timeout_ms < 1 {
            return Err("transaction-max-timeout-ms must be at least 1".into());
        }
        if self.offsets_replication_factor.is_some_and(|rf| rf < 1) {
            return Err("offsets-topic-replication-factor must be at least 1".into());
        }
        if self.min_session_timeout_ms < 1
            || self.min_session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(format!(
                "group-min-session-timeout-ms ({}) must be at least 1 and at most group-max-session-timeout-ms ({})",
                self.min_session_timeout_ms, self.max_session_timeout_ms
            ));
        }
        if self.retention_check_interval.is_zero() {
            return Err("offsets-retention-check-interval-ms must be at least 1".into());
        }
        // Kafka's topic minimum for segment.bytes.
        if self.offsets_segment_bytes < 14 {
            return Err("offsets-topic-segment-bytes must be at least 14".into());
        }
        Ok(())
    }
}
