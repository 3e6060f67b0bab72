//! The log settings of a partition: its topic's overrides on top of the broker defaults.

use crate::config::{BrokerConfig, FlushSetting};
use crate::dynamic_config;
use chronik_raft::image::MetadataImage;
use chronik_storage::{CleanupPolicy, FlushPolicy, LogConfig};
use std::collections::BTreeMap;

/// Log settings for a topic: its overrides on top of the broker defaults (static, or dynamic
/// from the image).
pub fn log_config_for(
    cfg: &BrokerConfig,
    img: &MetadataImage,
    topic_configs: &BTreeMap<String, String>,
) -> LogConfig {
    let mut lc = LogConfig {
        segment_bytes: dynamic_config::log_segment_bytes(cfg, img),
        retention_ms: dynamic_config::log_retention_ms(cfg, img),
        retention_bytes: dynamic_config::log_retention_bytes(cfg, img),
        flush: match cfg.log_flush {
            FlushSetting::Always => FlushPolicy::Always,
            FlushSetting::IntervalMs(ms) => FlushPolicy::IntervalMs(ms),
        },
        ..LogConfig::default()
    };
    for (k, v) in topic_configs {
        match k.as_str() {
            "segment.bytes" => {
                if let Ok(n) = v.parse::<u64>() {
                    lc.segment_bytes = n;
                }
            }
            "segment.ms" => lc.segment_ms = v.parse::<u64>().ok(),
            "retention.ms" => {
                lc.retention_ms = v.parse::<i64>().ok().filter(|n| *n >= 0);
            }
            "retention.bytes" => {
                lc.retention_bytes = v.parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n as u64);
            }
            // flush.ms=0 or flush.messages=1 mean "fdatasync before acknowledging".
            "flush.ms" => match v.parse::<u64>() {
                Ok(0) => lc.flush = FlushPolicy::Always,
                Ok(ms) => lc.flush = FlushPolicy::IntervalMs(ms),
                Err(_) => {}
            },
            "flush.messages" if v == "1" => lc.flush = FlushPolicy::Always,
            "cleanup.policy" => {
                if let Some(p) = CleanupPolicy::parse(v) {
                    lc.cleanup = p;
                }
            }
            "min.cleanable.dirty.ratio" => {
                if let Some(r) = v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)) {
                    lc.compaction.min_cleanable_dirty_ratio = r;
                }
            }
            "min.compaction.lag.ms" => {
                if let Ok(ms) = v.parse::<u64>() {
                    lc.compaction.min_compaction_lag_ms = ms;
                }
            }
            // Kafka's default (i64::MAX) means never forced.
            "max.compaction.lag.ms" => {
                lc.compaction.max_compaction_lag_ms =
                    v.parse::<u64>().ok().filter(|&ms| ms < i64::MAX as u64);
            }
            "delete.retention.ms" => {
                if let Ok(ms) = v.parse::<u64>() {
                    lc.compaction.delete_retention_ms = ms;
                }
            }
            _ => {}
        }
    }
    lc
}
