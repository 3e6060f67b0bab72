//! Validation of topic names and topic-level configs, with Kafka's rules and error codes.

use crate::command::{codes, MetaError};
use std::collections::BTreeMap;

pub const UNCLEAN_LEADER_ELECTION: &str = "unclean.leader.election.enable";

/// Kafka: 1–249 characters of `[a-zA-Z0-9._-]`, and not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let bad = |why: &str| {
        Err(MetaError::new(
            codes::INVALID_TOPIC_EXCEPTION,
            format!("topic name {name:?} {why}"),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 249 {
        return bad("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
    {
        return bad("contains characters other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

enum Kind {
    /// An integer not below the bound.
    Long(i64),
    Bool,
    Ratio,
    OneOf(&'static [&'static str]),
    /// A comma-separated subset of the listed values.
    ListOf(&'static [&'static str]),
    AnyString,
}

fn kind_of(key: &str) -> Option<Kind> {
    use Kind::*;
    Some(match key {
        "retention.ms" | "retention.bytes" | "local.retention.ms" | "local.retention.bytes" => {
            Long(-2)
        }
        "segment.bytes" => Long(14),
        "segment.ms" | "flush.messages" | "flush.ms" | "max.message.bytes" => Long(1),
        "segment.index.bytes" => Long(4),
        "min.insync.replicas" => Long(1),
        "segment.jitter.ms"
        | "index.interval.bytes"
        | "delete.retention.ms"
        | "min.compaction.lag.ms"
        | "max.compaction.lag.ms"
        | "file.delete.delay.ms"
        | "message.timestamp.difference.max.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms" => Long(0),
        "unclean.leader.election.enable"
        | "preallocate"
        | "message.downconversion.enable"
        | "remote.storage.enable" => Bool,
        "min.cleanable.dirty.ratio" => Ratio,
        "cleanup.policy" => ListOf(&["delete", "compact"]),
        "compression.type" => OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        "message.timestamp.type" => OneOf(&["CreateTime", "LogAppendTime"]),
        "message.format.version"
        | "leader.replication.throttled.replicas"
        | "follower.replication.throttled.replicas"
        | "compression.gzip.level"
        | "compression.lz4.level"
        | "compression.zstd.level" => AnyString,
        // Broker-specific settings (e.g. the flush policy) live under our own prefix.
        k if k.starts_with("chronik.") => AnyString,
        _ => return None,
    })
}

/// Whether `key` holds a comma-separated list (IncrementalAlterConfigs may APPEND to it or
/// SUBTRACT from it, as Kafka allows only for list-typed configs).
pub fn is_list_config(key: &str) -> bool {
    matches!(kind_of(key), Some(Kind::ListOf(_)))
        || matches!(
            key,
            "leader.replication.throttled.replicas" | "follower.replication.throttled.replicas"
        )
}

/// Reject unknown keys and values Kafka would refuse (INVALID_CONFIG).
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), MetaError> {
    for (k, v) in configs {
        validate_config(k, v)?;
    }
    Ok(())
}

pub fn validate_config(key: &str, value: &str) -> Result<(), MetaError> {
    let invalid = |why: String| Err(MetaError::new(codes::INVALID_CONFIG, why));
    let Some(kind) = kind_of(key) else {
        return invalid(format!("unknown topic config {key:?}"));
    };
    let ok = match kind {
        Kind::Long(min) => value
            .trim()
            .parse::<i64>()
            .map(|v| v >= min)
            .unwrap_or(false),
        Kind::Bool => matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false"),
        Kind::Ratio => value
            .trim()
            .parse::<f64>()
            .map(|v| (0.0..=1.0).contains(&v))
            .unwrap_or(false),
        Kind::OneOf(allowed) => allowed.contains(&value.trim()),
        Kind::ListOf(allowed) => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            !parts.is_empty() && parts.iter().all(|p| allowed.contains(p))
        }
        Kind::AnyString => true,
    };
    if ok {
        Ok(())
    } else {
        invalid(format!("invalid value {value:?} for topic config {key:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "has space", "slash/", "é", &"x".repeat(250)] {
            let err = validate_topic_name(bad).expect_err(bad);
            assert_eq!(err.code, codes::INVALID_TOPIC_EXCEPTION);
        }
    }

    #[test]
    fn config_values_are_checked() {
        assert!(validate_config("retention.ms", "-1").is_ok());
        assert!(validate_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_config("chronik.flush", "always").is_ok());
        for (k, v) in [
            ("retention.ms", "soon"),
            ("min.insync.replicas", "0"),
            ("no.such.key", "1"),
            ("cleanup.policy", ""),
        ] {
            assert_eq!(
                validate_config(k, v).expect_err(k).code,
                codes::INVALID_CONFIG
            );
        }
    }
}
