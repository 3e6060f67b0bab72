//! Topic creation through the controller, shared by CreateTopics and auto-create.

use crate::group::OFFSETS_TOPIC;
use crate::kafka::errors;
use crate::services::Services;
use crate::txn::TXN_TOPIC;
use chronik_raft::image::TopicId;
use chronik_raft::validate;
use chronik_raft::{Command, CommandOutcome, ControllerError, MetaError, NewTopic};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Kafka's topic-name rule: 1–249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// POLICY_VIOLATION for every topic of a creation request when this broker's data disk is
/// nearly full (see `crate::disk_space`); None when there is room.
fn disk_refusal(shard: &Services) -> Option<MetaError> {
    crate::disk_space::creation_refusal(&shard.config.data_dir, shard.config.min_free_disk_bytes)
        .map(|message| MetaError {
            code: errors::POLICY_VIOLATION,
            message,
        })
}

pub fn controller_error(e: &ControllerError) -> MetaError {
    match e {
        ControllerError::Timeout => MetaError {
            code: errors::REQUEST_TIMED_OUT,
            message: "the controller did not answer in time".into(),
        },
        other => MetaError {
            code: errors::NOT_CONTROLLER,
            message: format!("controller unavailable: {other:?}"),
        },
    }
}

/// CreateTopics and CreatePartitions: submits `cmd` for the topics that passed the early checks
/// (`None` when none did) and answers every topic of the request in request order, the early
/// refusals merged with the outcome. Both create partitions, so while this broker's disk is
/// nearly full every topic is refused instead and nothing is submitted.
pub async fn submit_checked(
    shard: &Rc<Services>,
    mut early: Vec<(String, Option<MetaError>)>,
    cmd: Option<Command>,
    names: &[String],
    timeout_ms: i32,
) -> Vec<(String, Result<TopicId, MetaError>)> {
    let timeout = Duration::from_millis(timeout_ms.clamp(1000, 60_000) as u64);
    let submitted = match cmd {
        None => Vec::new(),
        Some(cmd) => match disk_refusal(shard) {
            Some(e) => {
                for (_, r) in early.iter_mut() {
                    r.get_or_insert_with(|| e.clone());
                }
                Vec::new()
            }
            None => submit_per_topic(shard, cmd, names, timeout).await,
        },
    };
    match validate::merge(early, CommandOutcome::Topics(submitted)) {
        CommandOutcome::Topics(v) => v,
        _ => Vec::new(),
    }
}

/// Submits a command whose outcome is per topic, waits until this shard's image holds it, and
/// returns the per-topic results in request order. The whole call is bounded by `timeout`
/// (the request's own): an unreachable or stalled controller answers REQUEST_TIMED_OUT.
pub async fn submit_per_topic(
    shard: &Rc<Services>,
    cmd: Command,
    names: &[String],
    timeout: Duration,
) -> Vec<(String, Result<TopicId, MetaError>)> {
    let all = |e: MetaError| names.iter().map(|n| (n.clone(), Err(e.clone()))).collect();
    match submit_served(shard, cmd, timeout).await {
        Ok(CommandOutcome::Topics(v)) => v,
        Ok(CommandOutcome::Rejected(e)) | Err(e) => all(e),
        Ok(other) => all(MetaError {
            code: errors::UNKNOWN_SERVER_ERROR,
            message: format!("unexpected controller outcome {other:?}"),
        }),
    }
}

/// Commits `cmd` and returns its outcome once every shard of this node, and every other live
/// broker, serves it: a client may ask any node next (read-your-writes). An unreachable or
/// stalled controller, or a commit not served within `timeout`, is the error.
pub async fn submit_served(
    shard: &Rc<Services>,
    cmd: Command,
    timeout: Duration,
) -> Result<CommandOutcome, MetaError> {
    let sub = shard
        .controller
        .submit_within(cmd, timeout)
        .await
        .map_err(|e| controller_error(&e))?;
    if sub.index > 0
        && (shard
            .controller
            .wait_served_everywhere(sub.index, timeout)
            .await
            .is_err()
            || !shard.wait_for_image(sub.index, timeout).await)
    {
        return Err(MetaError {
            code: errors::REQUEST_TIMED_OUT,
            message: "committed, but not yet applied on this node".into(),
        });
    }
    Ok(sub.outcome)
}

/// Creates missing topics with the broker defaults (auto.create.topics.enable). Returns the
/// Kafka error code per name (NONE when it exists now).
pub async fn auto_create(shard: &Rc<Services>, names: Vec<String>) -> Vec<(String, i16)> {
    let mut out = Vec::new();
    let mut to_create = Vec::new();
    for n in names {
        if !valid_topic_name(&n) {
            out.push((n, errors::INVALID_TOPIC_EXCEPTION));
        } else if validate::is_internal_topic(&n) {
            // Internal topics are created by their coordinator with their own settings, never
            // with the auto-create defaults (Kafka does the same).
            let code = if n == crate::group::OFFSETS_TOPIC {
                ensure_offsets_topic(shard).await
            } else {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            };
            out.push((n, code));
        } else if shard.with_image(|i| i.topic(&n).is_some()) {
            out.push((n, errors::NONE));
        } else {
            to_create.push(n);
        }
    }
    if to_create.is_empty() {
        return out;
    }
    if let Some(e) = disk_refusal(shard) {
        // As if auto-create were off: the client sees an unknown topic and may retry later.
        crate::disk_space::warn_refused(&e.message);
        out.extend(
            to_create
                .into_iter()
                .map(|n| (n, errors::UNKNOWN_TOPIC_OR_PARTITION)),
        );
        return out;
    }
    let topics = to_create
        .iter()
        .map(|n| NewTopic {
            name: n.clone(),
            num_partitions: shard.config.num_partitions,
            replication_factor: shard.config.default_replication_factor,
            assignments: None,
            configs: Default::default(),
        })
        .collect();
    let cmd = Command::CreateTopics {
        topics,
        validate_only: false,
    };
    for (n, r) in submit_per_topic(shard, cmd, &to_create, Duration::from_secs(10)).await {
        let code = match r {
            Ok(_) => errors::NONE,
            // Another client created it at the same moment: fine.
            Err(e) if e.code == errors::TOPIC_ALREADY_EXISTS => errors::NONE,
            Err(e) if e.code == errors::INVALID_REPLICATION_FACTOR => errors::LEADER_NOT_AVAILABLE,
            Err(e) => {
                tracing::warn!(topic = %n, code = e.code, "auto-create failed: {}", e.message);
                e.code
            }
        };
        out.push((n, code));
    }
    out
}

/// Creates `__consumer_offsets` if it does not exist (compacted, no time retention).
pub async fn ensure_offsets_topic(shard: &Rc<Services>) -> i16 {
    let n = shard.config.groups.offsets_partitions;
    ensure_internal_topic(shard, OFFSETS_TOPIC, n).await
}

/// Creates `__transaction_state` if it does not exist, as the offsets topic.
pub async fn ensure_txn_topic(shard: &Rc<Services>) -> i16 {
    let n = shard.config.groups.txn_partitions;
    ensure_internal_topic(shard, TXN_TOPIC, n).await
}

async fn ensure_internal_topic(shard: &Rc<Services>, name: &str, partitions: i32) -> i16 {
    if shard.with_image(|i| i.topic(name).is_some()) {
        return errors::NONE;
    }
    let cfg = &shard.config.groups;
    let live = shard.with_image(|i| i.live_brokers().count()).max(1);
    let rf = cfg
        .offsets_replication_factor
        .unwrap_or_else(|| live.min(3) as i16);
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert("retention.ms".to_string(), "-1".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        cfg.offsets_segment_bytes.to_string(),
    );
    let cmd = Command::CreateTopics {
        topics: vec![NewTopic {
            name: name.to_string(),
            num_partitions: partitions,
            replication_factor: rf,
            assignments: None,
            configs,
        }],
        validate_only: false,
    };
    let names = [name.to_string()];
    let r = submit_per_topic(shard, cmd, &names, Duration::from_secs(10)).await;
    match r.into_iter().next() {
        Some((_, Ok(_))) => errors::NONE,
        Some((_, Err(e))) if e.code == errors::TOPIC_ALREADY_EXISTS => errors::NONE,
        Some((_, Err(e))) => {
            tracing::warn!(code = e.code, "cannot create {name}: {}", e.message);
            errors::COORDINATOR_NOT_AVAILABLE
        }
        None => errors::COORDINATOR_NOT_AVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::valid_topic_name;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders.v1_x-2"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("."));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("has space"));
        assert!(!valid_topic_name(&"a".repeat(250)));
        assert!(valid_topic_name(&"a".repeat(249)));
    }
}
