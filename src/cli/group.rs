//! `chronik-server group list|describe|reset-offsets|delete`, over the Kafka protocol: ListGroups
//! on every broker (each lists the groups it coordinates), the rest on the group's coordinator;
//! log offsets from each partition's leader.

use super::admin::{topic_name, Admin, EARLIEST, LATEST};
use super::output::{self, opt};
use super::{error_name, CliError, Format, KafkaTarget};
use crate::kafka::errors;
use bytes::Buf;
use clap::{Args, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Subcommand, Debug, Clone)]
pub enum GroupCommand {
    /// List the consumer groups of every broker.
    List {
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// A group's state, members, and per partition its committed offset, log end offset, lag
    /// and the member that owns it.
    Describe {
        group: String,
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// Set a group's committed offsets; the group must be empty (no active members), as Kafka
    /// requires.
    ResetOffsets {
        group: String,
        /// TOPIC, or TOPIC:P1,P2 for some partitions (repeatable).
        #[arg(long = "topic", required = true, value_name = "TOPIC[:PARTITIONS]")]
        topics: Vec<String>,
        #[command(flatten)]
        to: ResetTo,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// Delete groups (their committed offsets); only empty groups can be deleted.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        target: KafkaTarget,
    },
}

/// Where reset-offsets moves each partition: exactly one of these.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset (the high watermark): skip everything not yet read.
    #[arg(long)]
    to_latest: bool,
    /// To offset N (kept within the log start and end offsets, as Kafka's tool does).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
}

pub fn run(cmd: &GroupCommand) -> Result<(), CliError> {
    match cmd {
        GroupCommand::List { target } => list(target),
        GroupCommand::Describe { group, target } => describe(target, group),
        GroupCommand::ResetOffsets {
            group,
            topics,
            to,
            dry_run,
            target,
        } => reset_offsets(target, group, topics, to, *dry_run),
        GroupCommand::Delete { groups, target } => delete(target, groups),
    }
}

#[derive(Serialize)]
struct Listed {
    group: String,
    state: String,
    protocol_type: String,
    coordinator: i32,
}

fn list(target: &KafkaTarget) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let mut groups: BTreeMap<String, Listed> = BTreeMap::new();
    let mut failed = None;
    for id in admin.broker_ids() {
        let r: Result<ListGroupsResponse, CliError> = admin
            .broker(id)
            .and_then(|c| Ok(c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())?));
        match r {
            Ok(r) if r.error_code != errors::NONE => {
                failed = Some(CliError::kafka(format!("broker {id}"), r.error_code, None))
            }
            Ok(r) => {
                for g in r.groups {
                    let name = g.group_id.0.to_string();
                    groups.insert(
                        name.clone(),
                        Listed {
                            group: name,
                            state: g.group_state.to_string(),
                            protocol_type: g.protocol_type.to_string(),
                            coordinator: id,
                        },
                    );
                }
            }
            Err(e) => failed = Some(e),
        }
    }
    let groups: Vec<Listed> = groups.into_values().collect();
    output::list(
        target.format,
        &groups,
        &["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"],
        |g| {
            vec![
                g.group.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
                g.coordinator.to_string(),
            ]
        },
    );
    // Groups of the brokers that answered are listed; one that did not makes the list partial.
    failed.map_or(Ok(()), Err)
}

#[derive(Serialize)]
struct Described {
    group: String,
    coordinator: i32,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
    /// Sum of the partitions' lag (partitions without a committed offset count nothing).
    total_lag: i64,
    partitions: Vec<PartitionLag>,
}

#[derive(Serialize)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    host: String,
    assignments: Vec<TopicPartitions>,
}

#[derive(Serialize, Clone)]
struct TopicPartitions {
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    /// Null when the group has committed nothing for it.
    committed_offset: Option<i64>,
    log_start_offset: Option<i64>,
    /// The high watermark: what the group can read up to.
    log_end_offset: Option<i64>,
    /// log_end_offset - committed_offset; null when either is unknown.
    lag: Option<i64>,
    member_id: Option<String>,
    client_id: Option<String>,
    host: Option<String>,
}

/// A member's partitions, from its assignment in the consumer protocol (an i16 version, then the
/// assignment); anything else (another protocol type, bytes that do not decode) assigns nothing.
fn assignment(mut bytes: bytes::Bytes) -> Vec<TopicPartitions> {
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    // Newer versions only add fields; read them as the newest one we know (3).
    let version = bytes.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| TopicPartitions {
                topic: tp.topic.0.to_string(),
                partitions: tp.partitions,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The group's committed offsets (all partitions), from its coordinator.
fn committed(admin: &mut Admin, group: &str) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_string()));
    req.topics = None;
    let (_, c) = admin.coordinator(group)?;
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &req)?;
    if r.error_code != errors::NONE {
        return Err(CliError::kafka(
            format!("group {group}"),
            r.error_code,
            None,
        ));
    }
    let mut out = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            if p.error_code == errors::NONE && p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Each partition's leader, for these topics; an unknown topic is an error.
fn leaders(admin: &mut Admin, topics: &[String]) -> Result<Vec<(String, i32, i32)>, CliError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let meta = admin.metadata(Some(topics))?;
    let mut out = Vec::new();
    for t in &meta.topics {
        let name = t
            .name
            .as_ref()
            .map_or_else(String::new, |n| n.0.to_string());
        if t.error_code != errors::NONE {
            return Err(CliError::kafka(format!("topic {name}"), t.error_code, None));
        }
        for p in &t.partitions {
            out.push((name.clone(), p.partition_index, p.leader_id.0));
        }
    }
    out.sort();
    Ok(out)
}

fn describe(target: &KafkaTarget, group: &str) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let (coordinator, c) = admin.coordinator(group)?;
    let r: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &req)?;
    let Some(g) = r.groups.into_iter().next() else {
        return Err(CliError::Other(format!(
            "group {group}: empty DescribeGroups answer"
        )));
    };
    if g.error_code != errors::NONE {
        return Err(CliError::kafka(
            format!("group {group}"),
            g.error_code,
            g.error_message.map(|m| m.to_string()),
        ));
    }
    let offsets = committed(&mut admin, group)?;
    if g.group_state.as_str() == "Dead" && offsets.is_empty() {
        return Err(CliError::kafka(
            format!("group {group}"),
            errors::GROUP_ID_NOT_FOUND,
            None,
        ));
    }
    let consumer = g.protocol_type.as_str() == "consumer";
    let members: Vec<Member> = g
        .members
        .into_iter()
        .map(|m| Member {
            member_id: m.member_id.to_string(),
            group_instance_id: m.group_instance_id.map(|s| s.to_string()),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignments: if consumer {
                assignment(m.member_assignment)
            } else {
                Vec::new()
            },
        })
        .collect();
    let mut owner: HashMap<(String, i32), &Member> = HashMap::new();
    for m in &members {
        for tp in &m.assignments {
            for p in &tp.partitions {
                owner.insert((tp.topic.clone(), *p), m);
            }
        }
    }
    // The partitions shown: every one with a committed offset or an owner.
    let mut keys: BTreeSet<(String, i32)> = offsets.keys().cloned().collect();
    keys.extend(owner.keys().cloned());
    let topics: Vec<String> = keys
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // A committed topic may have been deleted since: show its offsets without log offsets.
    let parts = leaders(&mut admin, &topics).unwrap_or_default();
    let starts = admin.list_offsets(&parts, EARLIEST);
    let ends = admin.list_offsets(&parts, LATEST);
    let partitions: Vec<PartitionLag> = keys
        .into_iter()
        .map(|k| {
            let committed = offsets.get(&k).copied();
            let end = ends.get(&k).and_then(|r| r.ok());
            let m = owner.get(&k);
            PartitionLag {
                committed_offset: committed,
                log_start_offset: starts.get(&k).and_then(|r| r.ok()),
                log_end_offset: end,
                lag: committed.zip(end).map(|(c, e)| (e - c).max(0)),
                member_id: m.map(|m| m.member_id.clone()),
                client_id: m.map(|m| m.client_id.clone()),
                host: m.map(|m| m.host.clone()),
                topic: k.0,
                partition: k.1,
            }
        })
        .collect();
    let d = Described {
        group: group.to_string(),
        coordinator,
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        total_lag: partitions.iter().filter_map(|p| p.lag).sum(),
        members,
        partitions,
    };
    match target.format {
        Format::Json => print!("{}", output::json(&d)),
        Format::Table => print!("{}", describe_table(&d)),
    }
    Ok(())
}

fn describe_table(d: &Described) -> String {
    let mut out = output::pairs(&[
        ("GROUP", d.group.clone()),
        ("COORDINATOR", d.coordinator.to_string()),
        ("STATE", d.state.clone()),
        ("PROTOCOL", d.protocol.clone()),
        ("MEMBERS", d.members.len().to_string()),
        ("TOTAL-LAG", d.total_lag.to_string()),
    ]);
    out.push('\n');
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                opt(p.committed_offset),
                opt(p.log_start_offset),
                opt(p.log_end_offset),
                opt(p.lag),
                dash(&p.member_id),
                dash(&p.client_id),
                dash(&p.host),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-START-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER-ID",
            "CLIENT-ID",
            "HOST",
        ],
        &rows,
    ));
    out
}

/// `TOPIC` or `TOPIC:P1,P2`.
fn parse_topic_arg(s: &str) -> Result<(String, Option<Vec<i32>>), CliError> {
    match s.split_once(':') {
        None => Ok((s.to_string(), None)),
        Some((t, ps)) => {
            let parts: Result<Vec<i32>, _> = ps.split(',').map(|p| p.trim().parse()).collect();
            parts
                .map(|p| (t.to_string(), Some(p)))
                .map_err(|_| CliError::Other(format!("--topic {s}: partitions are not numbers")))
        }
    }
}

#[derive(Serialize)]
struct Reset {
    topic: String,
    partition: i32,
    previous_offset: Option<i64>,
    new_offset: i64,
    /// The Kafka error name the commit was refused with, or null.
    error: Option<String>,
}

fn reset_offsets(
    target: &KafkaTarget,
    group: &str,
    topic_args: &[String],
    to: &ResetTo,
    dry_run: bool,
) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let wanted: Vec<(String, Option<Vec<i32>>)> = topic_args
        .iter()
        .map(|s| parse_topic_arg(s))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = wanted.iter().map(|(t, _)| t.clone()).collect();
    let all = leaders(&mut admin, &names)?;
    let mut parts = Vec::new();
    for (t, only) in &wanted {
        let of_topic: Vec<&(String, i32, i32)> = all.iter().filter(|(n, _, _)| n == t).collect();
        match only {
            None => parts.extend(of_topic.into_iter().cloned()),
            Some(ps) => {
                for p in ps {
                    match of_topic.iter().find(|(_, q, _)| q == p) {
                        Some(x) => parts.push((*x).clone()),
                        None => {
                            return Err(CliError::kafka(
                                format!("topic {t} partition {p}"),
                                errors::UNKNOWN_TOPIC_OR_PARTITION,
                                None,
                            ))
                        }
                    }
                }
            }
        }
    }
    parts.sort();
    parts.dedup();
    let starts = admin.list_offsets(&parts, EARLIEST);
    let ends = admin.list_offsets(&parts, LATEST);
    let log_offset = |m: &HashMap<(String, i32), Result<i64, i16>>, t: &str, p: i32| match m
        .get(&(t.to_string(), p))
    {
        Some(Ok(o)) => Ok(*o),
        Some(Err(code)) => Err(CliError::kafka(format!("{t}-{p}"), *code, None)),
        None => Err(CliError::kafka(
            format!("{t}-{p}"),
            errors::LEADER_NOT_AVAILABLE,
            None,
        )),
    };
    let previous = committed(&mut admin, group)?;
    let mut resets = Vec::new();
    for (t, p, _) in &parts {
        let start = log_offset(&starts, t, *p)?;
        let end = log_offset(&ends, t, *p)?;
        let new_offset = match (to.to_earliest, to.to_latest, to.to_offset) {
            (true, _, _) => start,
            (_, true, _) => end,
            (_, _, Some(n)) => n.clamp(start, end.max(start)),
            _ => {
                return Err(CliError::Other(
                    "give --to-earliest, --to-latest or --to-offset N".into(),
                ))
            }
        };
        resets.push(Reset {
            topic: t.clone(),
            partition: *p,
            previous_offset: previous.get(&(t.clone(), *p)).copied(),
            new_offset,
            error: None,
        });
    }
    let mut refused = None;
    if !dry_run && !resets.is_empty() {
        // A commit from outside the group (generation -1, no member id), as Kafka's
        // AdminClient.alterConsumerGroupOffsets sends it: the coordinator takes it only while the
        // group is empty, else it answers UNKNOWN_MEMBER_ID (or REBALANCE_IN_PROGRESS).
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for r in &resets {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = r.partition;
            p.committed_offset = r.new_offset;
            p.committed_leader_epoch = -1;
            p.committed_metadata = Some(StrBytes::from_static_str(""));
            topics.entry(&r.topic).or_default().push(p);
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id_or_member_epoch = -1;
        req.member_id = StrBytes::from_static_str("");
        req.retention_time_ms = -1;
        req.topics = topics
            .into_iter()
            .map(|(t, ps)| {
                let mut rt = OffsetCommitRequestTopic::default();
                rt.name = topic_name(t);
                rt.partitions = ps;
                rt
            })
            .collect();
        let (_, c) = admin.coordinator(group)?;
        let resp: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req)?;
        let codes: HashMap<(String, i32), i16> = resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| ((t.name.0.to_string(), p.partition_index), p.error_code))
            })
            .collect();
        for r in &mut resets {
            let code = codes
                .get(&(r.topic.clone(), r.partition))
                .copied()
                .unwrap_or(errors::UNKNOWN_SERVER_ERROR);
            if code != errors::NONE {
                r.error = Some(error_name(code));
                refused.get_or_insert(code);
            }
        }
    }
    let status = if dry_run { "dry run" } else { "OK" };
    output::list(
        target.format,
        &resets,
        &[
            "TOPIC",
            "PARTITION",
            "PREVIOUS-OFFSET",
            "NEW-OFFSET",
            "STATUS",
        ],
        |r| {
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.previous_offset),
                r.new_offset.to_string(),
                r.error.clone().unwrap_or_else(|| status.into()),
            ]
        },
    );
    match refused {
        Some(code) => {
            let hint = matches!(
                code,
                errors::UNKNOWN_MEMBER_ID
                    | errors::REBALANCE_IN_PROGRESS
                    | errors::ILLEGAL_GENERATION
            )
            .then(|| "the group has active members; offsets can only be reset while it is empty (stop its consumers first)".to_string());
            Err(CliError::kafka(format!("group {group}"), code, hint))
        }
        None => Ok(()),
    }
}

#[derive(Serialize)]
struct Deleted {
    group: String,
    error: Option<String>,
}

fn delete(target: &KafkaTarget, groups: &[String]) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let mut out = Vec::new();
    let mut refused = None;
    for g in groups {
        let code = (|| -> Result<i16, CliError> {
            let mut req = DeleteGroupsRequest::default();
            req.groups_names = vec![GroupId(StrBytes::from_string(g.clone()))];
            let (_, c) = admin.coordinator(g)?;
            let r: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &req)?;
            Ok(r.results
                .first()
                .map_or(errors::UNKNOWN_SERVER_ERROR, |x| x.error_code))
        })();
        let code = match code {
            Ok(c) => c,
            Err(CliError::Kafka { code, .. }) => code,
            Err(e) => return Err(e),
        };
        if code != errors::NONE && refused.is_none() {
            refused = Some(CliError::kafka(format!("group {g}"), code, None));
        }
        out.push(Deleted {
            group: g.clone(),
            error: (code != errors::NONE).then(|| error_name(code)),
        });
    }
    output::list(target.format, &out, &["GROUP", "STATUS"], |d| {
        vec![
            d.group.clone(),
            d.error.clone().unwrap_or_else(|| "OK".into()),
        ]
    });
    refused.map_or(Ok(()), Err)
}
