//! The metadata trust boundary: limits on what a command may ask for, and the checks that hold
//! them, shared by the proposing side (before anything reaches the Raft log) and by apply (so a
//! command that reaches the log anyway — written by an older version, or crafted — is rejected
//! the same way on every node, never allocated for).
//!
//! Kafka has no hard partition limit; we refuse what a broker cannot hold. Error codes follow
//! Kafka: INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR,
//! INVALID_REPLICA_ASSIGNMENT, INVALID_CONFIG, INVALID_REQUEST, and POLICY_VIOLATION for the
//! cluster-wide partition cap (a broker policy, as Kafka's create-topic policies answer).

use crate::command::{codes, Command, CommandOutcome, MetaError, NewTopic, ProposedCommand};
use crate::image::{BrokerId, MetadataImage, TopicId};
use crate::metadata::{Defaults, MetaState};
use crate::topic_config::{validate_config, validate_topic_name};
use std::collections::{BTreeMap, BTreeSet};

/// Most partitions one topic may have (CreateTopics and CreatePartitions).
pub const MAX_PARTITIONS_PER_TOPIC: usize = 10_000;
/// Most partitions the whole cluster may hold (summed over topics, not counting replicas).
pub const MAX_PARTITIONS_PER_CLUSTER: usize = 100_000;
/// Most config overrides one topic may carry, and their sizes.
pub const MAX_CONFIGS: usize = 100;
pub const MAX_CONFIG_KEY_LEN: usize = 255;
pub const MAX_CONFIG_VALUE_LEN: usize = 32 * 1024;
/// Topics only brokers create (Kafka's internal topics); clients get INVALID_REQUEST.
pub const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

fn err(code: i16, msg: impl Into<String>) -> Result<(), MetaError> {
    Err(MetaError::new(code, msg))
}

/// A name for error messages: a hostile name can be kilobytes long.
pub fn shown(name: &str) -> String {
    const SHOW: usize = 64;
    if name.len() <= SHOW {
        return name.to_string();
    }
    let mut end = SHOW;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &name[..end], name.len())
}

/// Kafka refuses client creation of internal topics: "Creation of internal topic X is prohibited."
pub fn client_may_create(name: &str) -> Result<(), MetaError> {
    if is_internal_topic(name) {
        return err(
            codes::INVALID_REQUEST,
            format!("Creation of internal topic {name} is prohibited."),
        );
    }
    Ok(())
}

/// Clients may not change the partition count of internal topics: groups are mapped to
/// `__consumer_offsets` partitions by its count, which must stay fixed.
pub fn client_may_grow(name: &str) -> Result<(), MetaError> {
    if is_internal_topic(name) {
        return err(
            codes::INVALID_REQUEST,
            format!("The partition count of internal topic {name} cannot be changed."),
        );
    }
    Ok(())
}

/// Count, key and value sizes, known keys and parseable values (INVALID_CONFIG).
pub fn configs(set: &BTreeMap<String, String>) -> Result<(), MetaError> {
    if set.len() > MAX_CONFIGS {
        return err(
            codes::INVALID_CONFIG,
            format!("{} configs; at most {MAX_CONFIGS} are allowed", set.len()),
        );
    }
    for (k, v) in set {
        config_key(k)?;
        if v.len() > MAX_CONFIG_VALUE_LEN {
            return err(
                codes::INVALID_CONFIG,
                format!(
                    "value of {} is {} bytes; at most {MAX_CONFIG_VALUE_LEN} are allowed",
                    shown(k),
                    v.len()
                ),
            );
        }
        validate_config(k, v).map_err(|mut e| {
            // The value is echoed in the message: keep the message short.
            e.message = format!("invalid value for topic config {}", shown(k));
            e
        })?;
    }
    Ok(())
}

fn config_key(k: &str) -> Result<(), MetaError> {
    if k.len() > MAX_CONFIG_KEY_LEN {
        return err(
            codes::INVALID_CONFIG,
            format!(
                "config name {} is longer than {MAX_CONFIG_KEY_LEN} bytes",
                shown(k)
            ),
        );
    }
    Ok(())
}

/// Keys removed by AlterConfigs: bounded, and known (INVALID_CONFIG otherwise, as Kafka).
pub fn deleted_configs(keys: &[String]) -> Result<(), MetaError> {
    if keys.len() > MAX_CONFIGS {
        return err(
            codes::INVALID_CONFIG,
            format!("{} configs; at most {MAX_CONFIGS} are allowed", keys.len()),
        );
    }
    for k in keys {
        config_key(k)?;
        // Any value of the right kind tells whether the key is known; the error says which.
        if let Err(e) = validate_config(k, "") {
            if e.message.starts_with("unknown") {
                return err(
                    codes::INVALID_CONFIG,
                    format!("unknown topic config {}", shown(k)),
                );
            }
        }
    }
    Ok(())
}

/// The partition count a request asks for, with the cluster default for -1 (INVALID_PARTITIONS).
pub fn partition_count(requested: i32, default: i32) -> Result<usize, MetaError> {
    let n = if requested == -1 { default } else { requested };
    if n < 1 {
        return Err(MetaError::new(
            codes::INVALID_PARTITIONS,
            format!("Number of partitions must be larger than 0, got {requested}."),
        ));
    }
    let n = n as usize;
    if n > MAX_PARTITIONS_PER_TOPIC {
        return Err(MetaError::new(
            codes::INVALID_PARTITIONS,
            format!("{n} partitions; a topic may have at most {MAX_PARTITIONS_PER_TOPIC}"),
        ));
    }
    Ok(n)
}

/// The replication factor a request asks for, with the default for -1; it must fit on the
/// `placeable` brokers (INVALID_REPLICATION_FACTOR).
pub fn replication_factor(
    requested: i16,
    default: i16,
    placeable: usize,
) -> Result<usize, MetaError> {
    let rf = if requested == -1 { default } else { requested };
    if rf < 1 {
        return Err(MetaError::new(
            codes::INVALID_REPLICATION_FACTOR,
            format!("Replication factor must be larger than 0, got {requested}."),
        ));
    }
    let rf = rf as usize;
    if rf > placeable {
        return Err(MetaError::new(
            codes::INVALID_REPLICATION_FACTOR,
            format!("Replication factor: {rf} larger than available brokers: {placeable}."),
        ));
    }
    Ok(rf)
}

/// Explicit replica lists: at most `MAX_PARTITIONS_PER_TOPIC` of them, each of `rf` distinct
/// registered brokers (INVALID_REPLICA_ASSIGNMENT).
pub fn assignments(image: &MetadataImage, a: &[Vec<BrokerId>], rf: usize) -> Result<(), MetaError> {
    if a.len() > MAX_PARTITIONS_PER_TOPIC {
        return err(
            codes::INVALID_PARTITIONS,
            format!(
                "{} partitions assigned; a topic may have at most {MAX_PARTITIONS_PER_TOPIC}",
                a.len()
            ),
        );
    }
    for (p, replicas) in a.iter().enumerate() {
        let bad = |why: String| {
            err(
                codes::INVALID_REPLICA_ASSIGNMENT,
                format!("partition {p}: {why}"),
            )
        };
        if replicas.is_empty() {
            return bad("no replicas".into());
        }
        if replicas.len() != rf {
            return bad(format!(
                "{} replicas where the others have {rf}",
                replicas.len()
            ));
        }
        // Registered first: it bounds the list by the (small) broker count before the set.
        if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
            return bad(format!("broker {b} is not registered"));
        }
        let distinct: BTreeSet<_> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return bad("duplicate replica".into());
        }
    }
    Ok(())
}

/// What does not depend on the cluster: name, configs, and the request's shape.
pub fn new_topic_shape(nt: &NewTopic) -> Result<(), MetaError> {
    validate_topic_name(&nt.name).map_err(|e| {
        MetaError::new(
            e.code,
            format!("Topic name {} is invalid: {}", shown(&nt.name), reason(&e)),
        )
    })?;
    configs(&nt.configs)?;
    if nt.assignments.is_some() && (nt.num_partitions != -1 || nt.replication_factor != -1) {
        return err(
            codes::INVALID_REQUEST,
            "Both numPartitions or replicationFactor and replicasAssignments were set. \
             Both cannot be used at the same time.",
        );
    }
    if let Some(a) = &nt.assignments {
        if a.is_empty() {
            return err(codes::INVALID_PARTITIONS, "no partitions assigned");
        }
    }
    Ok(())
}

fn reason(e: &MetaError) -> &str {
    // validate_topic_name's message is `topic name "<name>" <why>`: keep only the why.
    match e.message.rfind('"') {
        Some(i) => e.message[i + 1..].trim(),
        None => &e.message,
    }
}

/// Kafka's collision rule: '.' and '_' are the same in metric names, so "a.b" and "a_b" cannot
/// both exist (INVALID_TOPIC_EXCEPTION).
pub fn collision<'a>(image: &'a MetadataImage, name: &str) -> Option<&'a str> {
    if !name.bytes().any(|c| c == b'.' || c == b'_') {
        return None;
    }
    let norm = |s: &str| s.replace('.', "_");
    let mine = norm(name);
    image
        .topics
        .keys()
        .find(|k| k.as_str() != name && k.len() == name.len() && norm(k) == mine)
        .map(String::as_str)
}

/// Partitions the cluster holds now.
pub fn total_partitions(image: &MetadataImage) -> usize {
    image.topics.values().map(|t| t.partitions.len()).sum()
}

/// The cluster cap (POLICY_VIOLATION), for `adding` more partitions to `current`.
pub fn cluster_room(current: usize, adding: usize) -> Result<(), MetaError> {
    if current.saturating_add(adding) > MAX_PARTITIONS_PER_CLUSTER {
        return err(
            codes::POLICY_VIOLATION,
            format!(
                "the cluster holds {current} partitions; {adding} more would exceed its limit of \
                 {MAX_PARTITIONS_PER_CLUSTER}"
            ),
        );
    }
    Ok(())
}

/// A controlled shutdown names a registered broker in its current incarnation
/// (BROKER_ID_NOT_REGISTERED, STALE_BROKER_EPOCH otherwise, as Kafka answers a heartbeat).
pub fn controlled_shutdown(
    image: &MetadataImage,
    id: BrokerId,
    incarnation: u64,
) -> Result<(), MetaError> {
    let Some(b) = image.broker(id) else {
        return err(
            codes::BROKER_ID_NOT_REGISTERED,
            format!("broker {id} is not registered"),
        );
    };
    if b.incarnation != incarnation {
        return err(
            codes::STALE_BROKER_EPOCH,
            format!(
                "broker {id} is in incarnation {}, not {incarnation}",
                b.incarnation
            ),
        );
    }
    Ok(())
}

/// The outcome of checking a command before it is proposed.
#[derive(Debug, PartialEq)]
pub enum Precheck {
    /// Decided here (validate-only, or every part refused): answer it, write nothing.
    Answer(CommandOutcome),
    /// Propose `cmd`. For per-topic commands whose topics were partly refused here, `early`
    /// lists every topic of the original request in order, with the refusal or None for the
    /// topics left in `cmd` (empty: `cmd` is the original command).
    Propose {
        cmd: Command,
        early: Vec<(String, Option<MetaError>)>,
    },
}

/// Check a command against this node's image before proposing it: a validate-only request is
/// answered from a dry run and never grows the log, and topics the dry run refuses are answered
/// at once and left out of the proposal. The committed apply checks again (the image may be a
/// little behind the leader), so this only keeps what is certainly refused out of the log.
pub fn precheck(image: &MetadataImage, cmd: Command, defaults: Defaults) -> Precheck {
    if let Command::AlterBrokerConfigs {
        broker,
        set,
        delete,
        validate_only,
    } = &cmd
    {
        return match image.broker_configs.check(*broker, set, delete) {
            Err(e) => Precheck::Answer(CommandOutcome::Rejected(e)),
            Ok(()) if *validate_only => Precheck::Answer(CommandOutcome::Done),
            Ok(()) => Precheck::Propose {
                cmd,
                early: Vec::new(),
            },
        };
    }
    if let Command::AlterScramCredentials { upserts, deletes } = &cmd {
        // Checked on a copy; a request whose every user is refused stays out of the log.
        let results = image.scram.clone().alter(upserts, deletes, true);
        if results.iter().all(|(_, r)| r.is_err()) {
            return Precheck::Answer(CommandOutcome::Users(results));
        }
        return Precheck::Propose {
            cmd,
            early: Vec::new(),
        };
    }
    if matches!(cmd, Command::BootstrapScramUsers { .. }) && image.scram.bootstrapped {
        // Every node restarted with --sasl-bootstrap-users asks; only the first one counts.
        return Precheck::Answer(CommandOutcome::Users(Vec::new()));
    }
    if let Command::ControlledShutdown { id, incarnation } = &cmd {
        return match controlled_shutdown(image, *id, *incarnation) {
            Ok(()) => Precheck::Propose {
                cmd,
                early: Vec::new(),
            },
            Err(e) => Precheck::Answer(CommandOutcome::Rejected(e)),
        };
    }
    if matches!(cmd, Command::CreateAcls { .. } | Command::DeleteAcls { .. }) {
        // ACL commands that would change nothing (every binding refused, already present, or
        // no binding matched) are answered here and stay out of the log.
        let outcome = dry_run(image, &cmd, defaults);
        let changes = match (&cmd, &outcome) {
            (Command::CreateAcls { acls }, CommandOutcome::AclsCreated(v)) => acls
                .iter()
                .zip(v)
                .any(|(b, r)| r.is_ok() && !image.acls.contains(b)),
            (_, CommandOutcome::AclsDeleted(v)) => {
                v.iter().any(|r| r.as_ref().is_ok_and(|d| !d.is_empty()))
            }
            _ => false,
        };
        return if changes {
            Precheck::Propose {
                cmd,
                early: Vec::new(),
            }
        } else {
            Precheck::Answer(outcome)
        };
    }
    if matches!(cmd, Command::LeaderWriteFailed { .. }) {
        // A report the partition's epoch has already moved past stays out of the log.
        return match dry_run(image, &cmd, defaults) {
            CommandOutcome::Partition(Ok(_)) => Precheck::Propose {
                cmd,
                early: Vec::new(),
            },
            outcome => Precheck::Answer(outcome),
        };
    }
    if matches!(
        cmd,
        Command::ElectLeaders { .. }
            | Command::ReassignPartitions { .. }
            | Command::CancelReassignment { .. }
    ) {
        // Per-partition commands: one that changes no partition stays out of the log.
        let outcome = dry_run(image, &cmd, defaults);
        return match &outcome {
            CommandOutcome::Partitions(v) if v.iter().any(|(_, r)| r.is_ok()) => {
                Precheck::Propose {
                    cmd,
                    early: Vec::new(),
                }
            }
            _ => Precheck::Answer(outcome),
        };
    }
    let per_topic = matches!(
        cmd,
        Command::CreateTopics { .. }
            | Command::CreatePartitions { .. }
            | Command::AlterConfigs { .. }
    );
    if !per_topic {
        return Precheck::Propose {
            cmd,
            early: Vec::new(),
        };
    }
    // A dry run on a copy of the image (O(1): the maps are persistent), applied for real on the
    // copy, so checks that depend on earlier topics of the same request (collisions, the
    // cluster cap) see them.
    let validate_only = match &cmd {
        Command::CreateTopics { validate_only, .. }
        | Command::CreatePartitions { validate_only, .. }
        | Command::AlterConfigs { validate_only, .. } => *validate_only,
        _ => false,
    };
    let mut dry = MetaState {
        image: image.clone(),
        ..MetaState::default()
    };
    let trial = with_validate_only(&cmd, false);
    let outcome = dry.apply(&ProposedCommand::new(trial), defaults);
    if validate_only {
        return Precheck::Answer(outcome);
    }
    let CommandOutcome::Topics(results) = &outcome else {
        return Precheck::Answer(outcome);
    };
    if results.iter().all(|(_, r)| r.is_err()) {
        return Precheck::Answer(outcome);
    }
    if results.iter().all(|(_, r)| r.is_ok()) {
        return Precheck::Propose {
            cmd,
            early: Vec::new(),
        };
    }
    let keep: Vec<bool> = results.iter().map(|(_, r)| r.is_ok()).collect();
    let early = results
        .iter()
        .map(|(n, r)| (n.clone(), r.as_ref().err().cloned()))
        .collect();
    let cmd = match cmd {
        Command::CreateTopics {
            topics,
            validate_only,
        } => Command::CreateTopics {
            topics: keep_only(topics, &keep),
            validate_only,
        },
        Command::CreatePartitions {
            topics,
            validate_only,
        } => Command::CreatePartitions {
            topics: keep_only(topics, &keep),
            validate_only,
        },
        other => other,
    };
    Precheck::Propose { cmd, early }
}

/// What `cmd` would do if applied to `image` now, with nothing changed (a copy of the image is
/// O(1): its maps are persistent). Handlers use it to answer the parts of a request that are
/// certainly refused and propose only the rest.
pub fn dry_run(image: &MetadataImage, cmd: &Command, defaults: Defaults) -> CommandOutcome {
    let mut dry = MetaState {
        image: image.clone(),
        ..MetaState::default()
    };
    dry.apply(&ProposedCommand::new(cmd.clone()), defaults)
}

fn keep_only<T>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep.iter())
        .filter(|(_, k)| **k)
        .map(|(t, _)| t)
        .collect()
}

fn with_validate_only(cmd: &Command, v: bool) -> Command {
    let mut c = cmd.clone();
    match &mut c {
        Command::CreateTopics { validate_only, .. }
        | Command::CreatePartitions { validate_only, .. }
        | Command::AlterConfigs { validate_only, .. } => *validate_only = v,
        _ => {}
    }
    c
}

/// Put the refusals decided before proposing back beside the committed outcome, in request
/// order.
pub fn merge(early: Vec<(String, Option<MetaError>)>, outcome: CommandOutcome) -> CommandOutcome {
    if early.is_empty() {
        return outcome;
    }
    let mut committed: Box<dyn Iterator<Item = Result<TopicId, MetaError>>> = match outcome {
        CommandOutcome::Topics(v) => Box::new(v.into_iter().map(|(_, r)| r)),
        CommandOutcome::Rejected(e) => Box::new(std::iter::repeat(Err(e))),
        other => {
            let e = MetaError::new(
                codes::INVALID_REQUEST,
                format!("unexpected outcome {other:?}"),
            );
            Box::new(std::iter::repeat(Err(e)))
        }
    };
    CommandOutcome::Topics(
        early
            .into_iter()
            .map(|(name, e)| {
                let r = match e {
                    Some(e) => Err(e),
                    None => committed.next().unwrap_or_else(|| {
                        Err(MetaError::new(codes::INVALID_REQUEST, "missing outcome"))
                    }),
                };
                (name, r)
            })
            .collect(),
    )
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
