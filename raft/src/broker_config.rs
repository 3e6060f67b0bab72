//! Dynamic broker configs (Kafka's DescribeConfigs/IncrementalAlterConfigs on BROKER
//! resources): which broker settings may change at run time, their validation with Kafka's
//! rules, and the overrides the metadata image keeps for them — cluster-wide defaults (Kafka's
//! resource name "") and per-broker values, per-broker first.

use crate::command::{codes, MetaError};
use crate::image::BrokerId;
use crate::validate::{shown, MAX_CONFIGS, MAX_CONFIG_KEY_LEN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most brokers that may carry their own overrides (ids need not be registered yet, as in
/// Kafka, so the count is bounded here).
pub const MAX_BROKERS_WITH_CONFIGS: usize = 1024;
/// A value is a number: a long one is garbage.
const MAX_VALUE_LEN: usize = 64;

/// The broker settings that change at run time, each with the least value Kafka accepts and
/// the most it accepts.
const DYNAMIC: &[(&str, i64, i64)] = &[
    ("message.max.bytes", 0, i32::MAX as i64),
    ("min.insync.replicas", 1, i32::MAX as i64),
    ("log.retention.ms", -1, i64::MAX),
    ("log.retention.bytes", -1, i64::MAX),
    ("log.segment.bytes", 14, i32::MAX as i64),
    ("log.cleaner.backoff.ms", 0, i64::MAX),
    // Kafka: at least 1 MiB per cleaner thread, and under 2 GiB (it is one allocation).
    ("log.cleaner.dedupe.buffer.size", 1 << 20, i32::MAX as i64),
];

/// The names of the broker configs that may change at run time.
pub fn dynamic_names() -> impl Iterator<Item = &'static str> {
    DYNAMIC.iter().map(|(k, ..)| *k)
}

pub fn is_dynamic(key: &str) -> bool {
    DYNAMIC.iter().any(|(k, ..)| *k == key)
}

/// Overrides of broker configs, as committed through the Raft log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerConfigs {
    /// Cluster-wide defaults (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG).
    pub cluster: BTreeMap<String, String>,
    /// Per broker (Kafka's DYNAMIC_BROKER_CONFIG); they win over the cluster-wide value.
    pub brokers: BTreeMap<BrokerId, BTreeMap<String, String>>,
}

/// Where a dynamic value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DynamicSource {
    Broker,
    ClusterDefault,
}

impl BrokerConfigs {
    /// The value of `key` for `broker`: its own override, else the cluster-wide one.
    pub fn get(&self, broker: BrokerId, key: &str) -> Option<(&str, DynamicSource)> {
        if let Some(v) = self.brokers.get(&broker).and_then(|m| m.get(key)) {
            return Some((v, DynamicSource::Broker));
        }
        self.cluster
            .get(key)
            .map(|v| (v.as_str(), DynamicSource::ClusterDefault))
    }

    /// The overrides of one resource: `None` is the cluster-wide default.
    pub fn of(&self, broker: Option<BrokerId>) -> Option<&BTreeMap<String, String>> {
        match broker {
            None => Some(&self.cluster),
            Some(id) => self.brokers.get(&id),
        }
    }

    /// Checks a change (INVALID_CONFIG for an unknown name or a bad value, INVALID_REQUEST for
    /// a bad broker id), without applying it.
    pub fn check(
        &self,
        broker: Option<BrokerId>,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), MetaError> {
        if let Some(id) = broker {
            if id < 0 {
                return Err(MetaError::new(
                    codes::INVALID_REQUEST,
                    format!("invalid broker id {id}"),
                ));
            }
            if !self.brokers.contains_key(&id)
                && self.brokers.len() >= MAX_BROKERS_WITH_CONFIGS
                && !set.is_empty()
            {
                return Err(MetaError::new(
                    codes::INVALID_REQUEST,
                    format!(
                        "at most {MAX_BROKERS_WITH_CONFIGS} brokers may carry their own configs"
                    ),
                ));
            }
        }
        if set.len() + delete.len() > 2 * MAX_CONFIGS {
            return Err(MetaError::new(codes::INVALID_CONFIG, "too many configs"));
        }
        for (k, v) in set {
            validate_broker_config(k, v)?;
        }
        for k in delete {
            known(k)?;
        }
        Ok(())
    }

    /// Applies a change already `check`ed: keys deleted first, then set.
    pub fn apply(
        &mut self,
        broker: Option<BrokerId>,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) {
        let m = match broker {
            None => &mut self.cluster,
            Some(id) => self.brokers.entry(id).or_default(),
        };
        for k in delete {
            m.remove(k);
        }
        for (k, v) in set {
            m.insert(k.clone(), v.trim().to_string());
        }
        if let Some(id) = broker {
            if self.brokers.get(&id).is_some_and(BTreeMap::is_empty) {
                self.brokers.remove(&id);
            }
        }
    }
}

fn known(key: &str) -> Result<(i64, i64), MetaError> {
    if key.len() > MAX_CONFIG_KEY_LEN {
        return Err(MetaError::new(
            codes::INVALID_CONFIG,
            format!("config name {} is too long", shown(key)),
        ));
    }
    DYNAMIC
        .iter()
        .find(|(k, ..)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
        .ok_or_else(|| {
            MetaError::new(
                codes::INVALID_CONFIG,
                format!("unknown dynamic broker config {}", shown(key)),
            )
        })
}

/// A known dynamic broker config with an integer value in its range (INVALID_CONFIG).
pub fn validate_broker_config(key: &str, value: &str) -> Result<(), MetaError> {
    let (lo, hi) = known(key)?;
    let ok = value.len() <= MAX_VALUE_LEN
        && value
            .trim()
            .parse::<i64>()
            .is_ok_and(|v| (lo..=hi).contains(&v));
    if ok {
        Ok(())
    } else {
        Err(MetaError::new(
            codes::INVALID_CONFIG,
            format!(
                "invalid value {} for broker config {key} (an integer from {lo} to {hi})",
                shown(value)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_and_bad_values_are_invalid_config() {
        let c = BrokerConfigs::default();
        let set = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(c
            .check(None, &set("message.max.bytes", "1000"), &[])
            .is_ok());
        for (k, v) in [
            ("no.such.config", "1"),
            ("message.max.bytes", "big"),
            ("message.max.bytes", "-5"),
            ("log.cleaner.dedupe.buffer.size", "1024"),
            ("log.segment.bytes", "99999999999"),
        ] {
            let e = c.check(Some(1), &set(k, v), &[]).expect_err(k);
            assert_eq!(e.code, codes::INVALID_CONFIG, "{k}={v}");
        }
        let e = c.check(Some(-3), &set("message.max.bytes", "1"), &[]);
        assert_eq!(e.expect_err("id").code, codes::INVALID_REQUEST);
        let e = c.check(None, &BTreeMap::new(), &["nope".to_string()]);
        assert_eq!(e.expect_err("delete").code, codes::INVALID_CONFIG);
    }

    #[test]
    fn a_broker_value_wins_over_the_cluster_default_and_deleting_it_falls_back() {
        let mut c = BrokerConfigs::default();
        let set = |v: &str| BTreeMap::from([("log.retention.ms".to_string(), v.to_string())]);
        c.apply(None, &set("1000"), &[]);
        c.apply(Some(2), &set("2000"), &[]);
        assert_eq!(
            c.get(2, "log.retention.ms"),
            Some(("2000", DynamicSource::Broker))
        );
        assert_eq!(
            c.get(1, "log.retention.ms"),
            Some(("1000", DynamicSource::ClusterDefault))
        );
        c.apply(Some(2), &BTreeMap::new(), &["log.retention.ms".to_string()]);
        assert!(c.brokers.is_empty());
        assert_eq!(
            c.get(2, "log.retention.ms"),
            Some(("1000", DynamicSource::ClusterDefault))
        );
    }
}
