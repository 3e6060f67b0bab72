//! Consumer-group settings of the broker: CLI flags, TOML keys and `CHRONIK_*` environment
//! variables, like every other broker setting (`src/config.rs`), under Kafka's names where Kafka
//! has the setting. Kept here, beside the coordinator that reads them, and flattened into the
//! broker config.
//!
//! In the TOML file a setting may be written kebab-case (`offsets-retention-minutes`),
//! snake_case, or with Kafka's dotted name, quoted (`"offsets.retention.minutes" = 60`) or as
//! TOML's nested keys (`offsets.retention.minutes = 60`).

use clap::Args;
use serde::Deserialize;
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
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_partitions: 50,
            offsets_replication_factor: None,
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_metadata_bytes: 4096,
            retention_check_interval: Duration::from_secs(600),
            offsets_segment_bytes: 100 << 20,
        }
    }
}

/// The flags (and their `CHRONIK_*` environment variables).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Consumer groups")]
pub struct GroupArgs {
    /// offsets.topic.num.partitions: partitions of __consumer_offsets, fixed once it exists.
    /// [default: 50]
    #[arg(long, env = "CHRONIK_OFFSETS_TOPIC_NUM_PARTITIONS")]
    pub offsets_topic_num_partitions: Option<i32>,
    /// offsets.topic.replication.factor: replicas of __consumer_offsets.
    /// [default: min(3, live brokers)]
    #[arg(long, env = "CHRONIK_OFFSETS_TOPIC_REPLICATION_FACTOR")]
    pub offsets_topic_replication_factor: Option<i16>,
    /// offsets.retention.minutes: committed offsets of an empty group expire after this.
    /// [default: 10080]
    #[arg(long, env = "CHRONIK_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<u64>,
    /// The same in ms (not a Kafka setting; overrides offsets-retention-minutes, for tests).
    #[arg(long, env = "CHRONIK_OFFSETS_RETENTION_MS")]
    pub offsets_retention_ms: Option<u64>,
    /// offsets.retention.check.interval.ms: how often offsets expire. [default: 600000]
    #[arg(long, env = "CHRONIK_OFFSETS_RETENTION_CHECK_INTERVAL_MS")]
    pub offsets_retention_check_interval_ms: Option<u64>,
    /// offsets.topic.segment.bytes: segment size of __consumer_offsets when it is created
    /// (the log cleaner compacts its sealed segments). [default: 104857600]
    #[arg(long, env = "CHRONIK_OFFSETS_TOPIC_SEGMENT_BYTES")]
    pub offsets_topic_segment_bytes: Option<u64>,
    /// offset.metadata.max.bytes: largest metadata string of a committed offset.
    /// [default: 4096]
    #[arg(long, env = "CHRONIK_OFFSET_METADATA_MAX_BYTES")]
    pub offset_metadata_max_bytes: Option<usize>,
    /// group.initial.rebalance.delay.ms: how long the first join of an empty group waits for
    /// more members. [default: 3000]
    #[arg(long, env = "CHRONIK_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// group.min.session.timeout.ms: smallest session timeout a member may ask for.
    /// [default: 6000]
    #[arg(long, env = "CHRONIK_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// group.max.session.timeout.ms: largest session timeout a member may ask for.
    /// [default: 1800000]
    #[arg(long, env = "CHRONIK_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
}

/// The same settings as read from the TOML file (kebab-case after [`take_from_file`]).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupFile {
    offsets_topic_num_partitions: Option<i32>,
    offsets_topic_replication_factor: Option<i16>,
    offsets_retention_minutes: Option<u64>,
    offsets_retention_ms: Option<u64>,
    offsets_retention_check_interval_ms: Option<u64>,
    offsets_topic_segment_bytes: Option<u64>,
    offset_metadata_max_bytes: Option<usize>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
}

/// The file keys of [`GroupFile`], kebab-case.
const FILE_KEYS: &[&str] = &[
    "offsets-topic-num-partitions",
    "offsets-topic-replication-factor",
    "offsets-retention-minutes",
    "offsets-retention-ms",
    "offsets-retention-check-interval-ms",
    "offsets-topic-segment-bytes",
    "offset-metadata-max-bytes",
    "group-initial-rebalance-delay-ms",
    "group-min-session-timeout-ms",
    "group-max-session-timeout-ms",
];

/// `offsets.retention.minutes`, `offsets_retention_minutes` → `offsets-retention-minutes`.
fn normalize(key: &str) -> String {
    key.replace(['.', '_'], "-")
}

/// Moves the group settings out of a parsed TOML file, so the broker's strict parse of the rest
/// still rejects unknown keys.
pub fn take_from_file(table: &mut toml::Table) -> Result<GroupFile, String> {
    let mut found = toml::Table::new();
    take(table, "", &mut found)?;
    toml::Value::Table(found)
        .try_into::<GroupFile>()
        .map_err(|e| e.to_string())
}

fn take(table: &mut toml::Table, prefix: &str, found: &mut toml::Table) -> Result<(), String> {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let name = format!("{prefix}{}", normalize(&key));
        if FILE_KEYS.contains(&name.as_str()) {
            if found.contains_key(&name) {
                return Err(format!("`{name}` is given twice"));
            }
            if let Some(v) = table.remove(&key) {
                found.insert(name, v);
            }
            continue;
        }
        // Unquoted dotted keys (`offsets.retention.minutes = 5`) are nested tables in TOML.
        let nested = format!("{name}-");
        if !FILE_KEYS.iter().any(|k| k.starts_with(&nested)) {
            continue;
        }
        if let Some(toml::Value::Table(inner)) = table.get_mut(&key) {
            take(inner, &nested, found)?;
            if inner.is_empty() {
                table.remove(&key);
            }
        }
    }
    Ok(())
}

impl GroupConfig {
    /// Flag (or environment) > file > default, then checked.
    pub fn resolve(args: &GroupArgs, file: &GroupFile) -> Result<GroupConfig, String> {
        let d = GroupConfig::default();
        let offsets_retention = match (
            args.offsets_retention_ms.or(file.offsets_retention_ms),
            args.offsets_retention_minutes
                .or(file.offsets_retention_minutes),
        ) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(min)) => Duration::from_secs(min.saturating_mul(60)),
            (None, None) => d.offsets_retention,
        };
        let c = GroupConfig {
            offsets_partitions: args
                .offsets_topic_num_partitions
                .or(file.offsets_topic_num_partitions)
                .unwrap_or(d.offsets_partitions),
            offsets_replication_factor: args
                .offsets_topic_replication_factor
                .or(file.offsets_topic_replication_factor),
            offsets_retention,
            initial_rebalance_delay: args
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .map_or(d.initial_rebalance_delay, Duration::from_millis),
            min_session_timeout_ms: args
                .group_min_session_timeout_ms
                .or(file.group_min_session_timeout_ms)
                .unwrap_or(d.min_session_timeout_ms),
            max_session_timeout_ms: args
                .group_max_session_timeout_ms
                .or(file.group_max_session_timeout_ms)
                .unwrap_or(d.max_session_timeout_ms),
            max_metadata_bytes: args
                .offset_metadata_max_bytes
                .or(file.offset_metadata_max_bytes)
                .unwrap_or(d.max_metadata_bytes),
            retention_check_interval: args
                .offsets_retention_check_interval_ms
                .or(file.offsets_retention_check_interval_ms)
                .map_or(d.retention_check_interval, Duration::from_millis),
            offsets_segment_bytes: args
                .offsets_topic_segment_bytes
                .or(file.offsets_topic_segment_bytes)
                .unwrap_or(d.offsets_segment_bytes),
        };
        if c.offsets_partitions < 1 {
            return Err("offsets-topic-num-partitions must be at least 1".into());
        }
        if c.offsets_replication_factor.is_some_and(|rf| rf < 1) {
            return Err("offsets-topic-replication-factor must be at least 1".into());
        }
        if c.min_session_timeout_ms < 1 || c.min_session_timeout_ms > c.max_session_timeout_ms {
            return Err(format!(
                "group-min-session-timeout-ms ({}) must be at least 1 and at most group-max-session-timeout-ms ({})",
                c.min_session_timeout_ms, c.max_session_timeout_ms
            ));
        }
        if c.retention_check_interval.is_zero() {
            return Err("offsets-retention-check-interval-ms must be at least 1".into());
        }
        // Kafka's topic minimum for segment.bytes.
        if c.offsets_segment_bytes < 14 {
            return Err("offsets-topic-segment-bytes must be at least 14".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (GroupFile, toml::Table) {
        let mut t: toml::Table = toml::from_str(text).expect("toml");
        let g = take_from_file(&mut t).expect("group keys");
        (g, t)
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = GroupConfig::resolve(&GroupArgs::default(), &GroupFile::default()).unwrap();
        assert_eq!(c, GroupConfig::default());
        assert_eq!(c.offsets_partitions, 50);
        assert_eq!(c.offsets_retention, Duration::from_secs(10080 * 60));
        assert_eq!(c.initial_rebalance_delay, Duration::from_millis(3000));
    }

    #[test]
    fn every_spelling_of_a_file_key_is_taken_and_others_are_left() {
        let (g, rest) = file(
            r#"
            listen = "127.0.0.1:1"
            offsets-topic-num-partitions = 3
            offsets_retention_minutes = 7
            "group.initial.rebalance.delay.ms" = 10
            group.min.session.timeout.ms = 100
            offsets.topic.replication.factor = 2
            "#,
        );
        let c = GroupConfig::resolve(&GroupArgs::default(), &g).unwrap();
        assert_eq!(c.offsets_partitions, 3);
        assert_eq!(c.offsets_retention, Duration::from_secs(7 * 60));
        assert_eq!(c.initial_rebalance_delay, Duration::from_millis(10));
        assert_eq!(c.min_session_timeout_ms, 100);
        assert_eq!(c.offsets_replication_factor, Some(2));
        assert_eq!(rest.keys().collect::<Vec<_>>(), vec!["listen"]);
    }

    #[test]
    fn unknown_nested_keys_stay_for_the_strict_parse() {
        let (_, rest) = file("offsets.topic.typo = 1\ngroup.max.session.timeout.ms = 9000");
        assert!(rest.contains_key("offsets"), "{rest:?}");
        assert!(!rest.contains_key("group"), "{rest:?}");
    }

    #[test]
    fn a_key_given_twice_or_with_a_bad_type_is_refused() {
        let mut t: toml::Table =
            toml::from_str("offsets-retention-minutes = 1\n\"offsets.retention.minutes\" = 2")
                .unwrap();
        assert!(take_from_file(&mut t).is_err());
        let mut t: toml::Table = toml::from_str("offsets-retention-minutes = \"x\"").unwrap();
        assert!(take_from_file(&mut t).is_err());
    }

    #[test]
    fn flags_beat_the_file_and_ms_beats_minutes() {
        let (g, _) = file("offsets-topic-num-partitions = 3\noffsets-retention-minutes = 5");
        let args = GroupArgs {
            offsets_topic_num_partitions: Some(4),
            offsets_retention_ms: Some(1500),
            ..GroupArgs::default()
        };
        let c = GroupConfig::resolve(&args, &g).unwrap();
        assert_eq!(c.offsets_partitions, 4);
        assert_eq!(c.offsets_retention, Duration::from_millis(1500));
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = [
            GroupArgs {
                offsets_topic_num_partitions: Some(0),
                ..GroupArgs::default()
            },
            GroupArgs {
                group_min_session_timeout_ms: Some(10_000),
                group_max_session_timeout_ms: Some(5_000),
                ..GroupArgs::default()
            },
            GroupArgs {
                offsets_topic_segment_bytes: Some(0),
                ..GroupArgs::default()
            },
        ];
        for a in bad {
            assert!(
                GroupConfig::resolve(&a, &GroupFile::default()).is_err(),
                "{a:?}"
            );
        }
    }
}
