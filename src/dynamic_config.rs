//! Broker settings as they apply now: the static configuration (flags, file, defaults) with the
//! dynamic overrides of the metadata image on top — this broker's own, then the cluster-wide
//! default — as Kafka's DynamicBrokerConfig layers them. Read per use from the shard's image,
//! so a committed change takes effect on every shard of every broker without a restart.

use crate::config::{BrokerConfig, FlushSetting};
use chronik_raft::broker_config::{is_dynamic, DynamicSource};
use chronik_raft::image::MetadataImage;
use std::collections::BTreeMap;

/// Kafka's ConfigSource codes (DescribeConfigs v1+).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Topic configs whose default is a dynamic broker config (Kafka's topic config synonyms).
pub const TOPIC_SYNONYMS: &[(&str, &str)] = &[
    ("max.message.bytes", "message.max.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("segment.bytes", "log.segment.bytes"),
];

/// One value of a config with where it comes from (a DescribeConfigs entry or synonym).
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
}

/// The static broker configs, by Kafka name, as this broker was started.
pub fn static_broker_configs(cfg: &BrokerConfig) -> Vec<(&'static str, String)> {
    let flush_ms = match cfg.log_flush {
        FlushSetting::Always => "0".to_string(),
        FlushSetting::IntervalMs(ms) => ms.to_string(),
    };
    vec![
        ("broker.id", cfg.node_id.to_string()),
        ("node.id", cfg.node_id.to_string()),
        ("broker.rack", cfg.rack.clone().unwrap_or_default()),
        ("log.dirs", cfg.data_dir.display().to_string()),
        ("listeners", cfg.listeners.listeners_text()),
        ("advertised.listeners", cfg.listeners.advertised_text()),
        (
            "inter.broker.listener.name",
            cfg.listeners.inter_broker.clone(),
        ),
        (
            "auto.create.topics.enable",
            cfg.auto_create_topics_enable.to_string(),
        ),
        ("num.partitions", cfg.num_partitions.to_string()),
        (
            "default.replication.factor",
            cfg.default_replication_factor.to_string(),
        ),
        ("message.max.bytes", cfg.message_max_bytes.to_string()),
        ("min.insync.replicas", cfg.min_insync_replicas.to_string()),
        (
            "log.retention.ms",
            cfg.log_retention_ms.unwrap_or(-1).to_string(),
        ),
        ("log.retention.bytes", "-1".to_string()),
        ("log.segment.bytes", cfg.log_segment_bytes.to_string()),
        ("log.flush.interval.ms", flush_ms),
        ("log.cleaner.enable", cfg.log_cleaner_enable.to_string()),
        (
            "log.cleaner.backoff.ms",
            cfg.log_cleaner_backoff_ms.to_string(),
        ),
        (
            "log.cleaner.dedupe.buffer.size",
            cfg.log_cleaner_dedupe_buffer_size.to_string(),
        ),
        (
            "socket.request.max.bytes",
            cfg.socket_request_max_bytes.to_string(),
        ),
        (
            "connections.max.idle.ms",
            cfg.connections_max_idle_ms
                .map_or(-1, |ms| ms as i64)
                .to_string(),
        ),
        ("fetch.max.bytes", cfg.fetch_max_bytes.to_string()),
        (
            "replica.lag.time.max.ms",
            cfg.replica_lag_time_max_ms.to_string(),
        ),
        (
            "broker.session.timeout.ms",
            cfg.broker_session_timeout_ms.to_string(),
        ),
        (
            "broker.heartbeat.interval.ms",
            cfg.broker_heartbeat_interval_ms.to_string(),
        ),
        (
            "leader.imbalance.check.interval.seconds",
            (cfg.leader_imbalance_check_interval_ms / 1000).to_string(),
        ),
    ]
}

/// Whether `name` is a broker config this broker knows (dynamic or read-only).
pub fn is_broker_config(cfg: &BrokerConfig, name: &str) -> bool {
    static_broker_configs(cfg).iter().any(|(k, _)| *k == name)
}

/// A broker config's value for this broker, most specific first: the dynamic per-broker
/// value, the dynamic cluster-wide default, the static value. The first is the effective one.
pub fn broker_chain(
    img: &MetadataImage,
    broker: Option<i32>,
    name: &'static str,
    static_value: &str,
) -> Vec<Sourced> {
    let mut out = Vec::new();
    if is_dynamic(name) {
        if let Some(v) = broker.and_then(|b| img.broker_configs.brokers.get(&b)?.get(name)) {
            out.push(Sourced {
                name,
                value: v.clone(),
                source: SOURCE_DYNAMIC_BROKER,
            });
        }
        if let Some(v) = img.broker_configs.cluster.get(name) {
            out.push(Sourced {
                name,
                value: v.clone(),
                source: SOURCE_DYNAMIC_DEFAULT_BROKER,
            });
        }
    }
    out.push(Sourced {
        name,
        value: static_value.to_string(),
        source: SOURCE_STATIC_BROKER,
    });
    out
}

/// A dynamic broker config's value for this broker, if one is set and parses.
fn dynamic<T: std::str::FromStr>(cfg: &BrokerConfig, img: &MetadataImage, name: &str) -> Option<T> {
    img.broker_configs
        .get(cfg.node_id, name)
        .and_then(|(v, _): (&str, DynamicSource)| v.parse().ok())
}

pub fn message_max_bytes(cfg: &BrokerConfig, img: &MetadataImage) -> usize {
    dynamic(cfg, img, "message.max.bytes").unwrap_or(cfg.message_max_bytes)
}

pub fn min_insync_replicas(cfg: &BrokerConfig, img: &MetadataImage) -> usize {
    dynamic::<usize>(cfg, img, "min.insync.replicas")
        .unwrap_or(cfg.min_insync_replicas.max(1) as usize)
        .max(1)
}

pub fn log_segment_bytes(cfg: &BrokerConfig, img: &MetadataImage) -> u64 {
    dynamic(cfg, img, "log.segment.bytes").unwrap_or(cfg.log_segment_bytes)
}

/// None: kept forever.
pub fn log_retention_ms(cfg: &BrokerConfig, img: &MetadataImage) -> Option<i64> {
    match dynamic::<i64>(cfg, img, "log.retention.ms") {
        Some(ms) => (ms >= 0).then_some(ms),
        None => cfg.log_retention_ms,
    }
}

/// None: no size limit.
pub fn log_retention_bytes(cfg: &BrokerConfig, img: &MetadataImage) -> Option<u64> {
    dynamic::<i64>(cfg, img, "log.retention.bytes")
        .filter(|b| *b >= 0)
        .map(|b| b as u64)
}

pub fn log_cleaner_backoff_ms(cfg: &BrokerConfig, img: &MetadataImage) -> u64 {
    dynamic(cfg, img, "log.cleaner.backoff.ms").unwrap_or(cfg.log_cleaner_backoff_ms)
}

pub fn log_cleaner_dedupe_buffer_size(cfg: &BrokerConfig, img: &MetadataImage) -> usize {
    dynamic(cfg, img, "log.cleaner.dedupe.buffer.size")
        .unwrap_or(cfg.log_cleaner_dedupe_buffer_size)
}

/// Topic config defaults (what a topic without an override gets), each with its source and,
/// where Kafka has one, the broker config it follows.
pub fn topic_defaults(
    cfg: &BrokerConfig,
    img: &MetadataImage,
) -> BTreeMap<&'static str, (Sourced, Option<Vec<Sourced>>)> {
    let statics = static_broker_configs(cfg);
    let mut out = BTreeMap::new();
    for (k, v) in cfg.broker_defaults() {
        let synonym = TOPIC_SYNONYMS
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, b)| *b);
        let chain = synonym.and_then(|b| {
            let static_value = statics.iter().find(|(n, _)| *n == b)?.1.clone();
            Some(broker_chain(img, Some(cfg.node_id), b, &static_value))
        });
        let top = match chain.as_ref().and_then(|c| c.first()) {
            Some(s) if s.source != SOURCE_STATIC_BROKER => Sourced {
                name: k,
                value: s.value.clone(),
                source: s.source,
            },
            _ => Sourced {
                name: k,
                value: v,
                source: SOURCE_DEFAULT,
            },
        };
        out.insert(k, (top, chain));
    }
    out
}
