//! `chronik-server topic create|list|describe|alter-config|delete`, over the Kafka protocol:
//! changes go to the controller (CreateTopics, IncrementalAlterConfigs, DeleteTopics), offsets
//! come from each partition's leader (ListOffsets).

use super::admin::{topic_name, Admin, EARLIEST, LATEST};
use super::output::{self, ids, opt};
use super::{error_name, parse_key_value, CliError, Format, KafkaTarget};
use crate::kafka::errors;
use clap::Subcommand;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

/// How long the broker may take to apply a topic change before answering REQUEST_TIMED_OUT.
const TIMEOUT_MS: i32 = 15_000;
/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

#[derive(Subcommand, Debug, Clone)]
pub enum TopicCommand {
    /// Create topics.
    Create {
        #[arg(required = true)]
        names: Vec<String>,
        /// Number of partitions [default: the broker's num.partitions].
        #[arg(short = 'p', long, default_value_t = -1, allow_negative_numbers = true, hide_default_value = true)]
        partitions: i32,
        /// Replication factor [default: the broker's default.replication.factor].
        #[arg(short = 'r', long, default_value_t = -1, allow_negative_numbers = true, hide_default_value = true)]
        replicas: i16,
        /// A topic config KEY=VALUE (repeatable), e.g. -c cleanup.policy=compact.
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Only validate the request; create nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// List topics with their partition and replica counts.
    List {
        /// Also list internal topics (__consumer_offsets).
        #[arg(short = 'i', long)]
        internal: bool,
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// A topic's partitions (leader, replicas, ISR, log start and end offsets) and configs.
    Describe {
        name: String,
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// Set or delete (back to the default) topic configs.
    AlterConfig {
        name: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// KEY to delete, falling back to the broker's default (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Only validate the change; apply nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: KafkaTarget,
    },
    /// Delete topics and their data.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        target: KafkaTarget,
    },
}

pub fn run(cmd: &TopicCommand) -> Result<(), CliError> {
    match cmd {
        TopicCommand::Create {
            names,
            partitions,
            replicas,
            configs,
            dry_run,
            target,
        } => create(target, names, *partitions, *replicas, configs, *dry_run),
        TopicCommand::List { internal, target } => list(target, *internal),
        TopicCommand::Describe { name, target } => describe(target, name),
        TopicCommand::AlterConfig {
            name,
            set,
            delete,
            dry_run,
            target,
        } => alter_config(target, name, set, delete, *dry_run),
        TopicCommand::Delete { names, target } => delete_topics(target, names),
    }
}

/// One topic's outcome of a create or delete.
#[derive(Serialize)]
struct Outcome {
    name: String,
    /// The Kafka error name, or null when done.
    error: Option<String>,
    message: Option<String>,
}

/// Prints per-topic outcomes; the first refusal becomes the command's error.
fn print_outcomes(format: Format, outcomes: &[(Outcome, i16)], done: &str) -> Result<(), CliError> {
    match format {
        Format::Json => {
            let v: Vec<&Outcome> = outcomes.iter().map(|(o, _)| o).collect();
            print!("{}", output::json(&v));
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = outcomes
                .iter()
                .map(|(o, _)| {
                    vec![
                        o.name.clone(),
                        o.error.clone().unwrap_or_else(|| done.to_string()),
                    ]
                })
                .collect();
            print!("{}", output::table(&["TOPIC", "STATUS"], &rows));
        }
    }
    match outcomes.iter().find(|(_, code)| *code != errors::NONE) {
        Some((o, code)) => Err(CliError::kafka(
            format!("topic {}", o.name),
            *code,
            o.message.clone(),
        )),
        None => Ok(()),
    }
}

fn outcome(name: String, code: i16, message: Option<StrBytes>) -> (Outcome, i16) {
    let failed = code != errors::NONE;
    (
        Outcome {
            name,
            error: failed.then(|| error_name(code)),
            message: message.map(|m| m.to_string()).filter(|_| failed),
        },
        code,
    )
}

fn create(
    target: &KafkaTarget,
    names: &[String],
    partitions: i32,
    replicas: i16,
    configs: &[(String, String)],
    dry_run: bool,
) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = TIMEOUT_MS;
    req.validate_only = dry_run;
    req.topics = names
        .iter()
        .map(|n| {
            let mut t = CreatableTopic::default();
            t.name = topic_name(n);
            t.num_partitions = partitions;
            t.replication_factor = replicas;
            t.configs = configs
                .iter()
                .map(|(k, v)| {
                    let mut c = CreatableTopicConfig::default();
                    c.name = StrBytes::from_string(k.clone());
                    c.value = Some(StrBytes::from_string(v.clone()));
                    c
                })
                .collect();
            t
        })
        .collect();
    let resp: CreateTopicsResponse = admin.on_controller(
        |c| Ok(c.call(ApiKey::CreateTopics, 7, &req)?),
        |r: &CreateTopicsResponse| {
            r.topics
                .iter()
                .any(|t| t.error_code == errors::NOT_CONTROLLER)
        },
    )?;
    let outcomes: Vec<_> = resp
        .topics
        .into_iter()
        .map(|t| outcome(t.name.0.to_string(), t.error_code, t.error_message))
        .collect();
    print_outcomes(
        target.format,
        &outcomes,
        if dry_run { "OK (dry run)" } else { "OK" },
    )
}

fn delete_topics(target: &KafkaTarget, names: &[String]) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = TIMEOUT_MS;
    req.topic_names = names.iter().map(|n| topic_name(n)).collect();
    let resp: DeleteTopicsResponse = admin.on_controller(
        |c| Ok(c.call(ApiKey::DeleteTopics, 5, &req)?),
        |r: &DeleteTopicsResponse| {
            r.responses
                .iter()
                .any(|t| t.error_code == errors::NOT_CONTROLLER)
        },
    )?;
    let outcomes: Vec<_> = resp
        .responses
        .into_iter()
        .map(|t| {
            let name = t.name.map_or_else(String::new, |n| n.0.to_string());
            outcome(name, t.error_code, t.error_message)
        })
        .collect();
    print_outcomes(target.format, &outcomes, "OK")
}

#[derive(Serialize)]
struct Listed {
    name: String,
    partitions: usize,
    replicas: usize,
    internal: bool,
}

fn list(target: &KafkaTarget, internal: bool) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let meta = admin.metadata(None)?;
    let mut topics: Vec<Listed> = meta
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .filter_map(|t| {
            Some(Listed {
                name: t.name.as_ref()?.0.to_string(),
                partitions: t.partitions.len(),
                replicas: t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
                internal: t.is_internal,
            })
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    output::list(
        target.format,
        &topics,
        &["NAME", "PARTITIONS", "REPLICAS"],
        |t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.replicas.to_string(),
            ]
        },
    );
    Ok(())
}

#[derive(Serialize)]
struct Described {
    name: String,
    internal: bool,
    partitions: Vec<PartitionInfo>,
    configs: Vec<ConfigEntry>,
}

#[derive(Serialize)]
struct PartitionInfo {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline_replicas: Vec<i32>,
    /// Null when the leader could not be asked.
    log_start_offset: Option<i64>,
    /// The high watermark (what consumers can read up to), as Kafka's tools show it.
    log_end_offset: Option<i64>,
}

#[derive(Serialize)]
struct ConfigEntry {
    name: String,
    /// Null for sensitive values.
    value: Option<String>,
    source: &'static str,
    read_only: bool,
}

/// DescribeConfigs' `config_source` as Kafka's ConfigSource names it.
fn source_name(s: i8) -> &'static str {
    match s {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// Metadata of one topic, or the error it was refused with.
fn topic_metadata(admin: &mut Admin, name: &str) -> Result<MetadataResponse, CliError> {
    let meta = admin.metadata(Some(&[name.to_string()]))?;
    match meta.topics.first() {
        Some(t) if t.error_code != errors::NONE => {
            Err(CliError::kafka(format!("topic {name}"), t.error_code, None))
        }
        Some(_) => Ok(meta),
        None => Err(CliError::kafka(
            format!("topic {name}"),
            errors::UNKNOWN_TOPIC_OR_PARTITION,
            None,
        )),
    }
}

fn describe(target: &KafkaTarget, name: &str) -> Result<(), CliError> {
    let mut admin = Admin::connect(&target.brokers)?;
    let meta = topic_metadata(&mut admin, name)?;
    let Some(t) = meta.topics.first() else {
        return Err(CliError::Other(format!("topic {name}: empty metadata")));
    };
    let mut parts: Vec<_> = t.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition_index);
    let leaders: Vec<(String, i32, i32)> = parts
        .iter()
        .map(|p| (name.to_string(), p.partition_index, p.leader_id.0))
        .collect();
    let starts = admin.list_offsets(&leaders, EARLIEST);
    let ends = admin.list_offsets(&leaders, LATEST);
    let key = |p: i32| (name.to_string(), p);
    let partitions: Vec<PartitionInfo> = parts
        .iter()
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            leader: p.leader_id.0,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
            log_start_offset: starts.get(&key(p.partition_index)).and_then(|r| r.ok()),
            log_end_offset: ends.get(&key(p.partition_index)).and_then(|r| r.ok()),
        })
        .collect();

    let mut req = DescribeConfigsRequest::default();
    let mut res = DescribeConfigsResource::default();
    res.resource_type = TOPIC_RESOURCE;
    res.resource_name = StrBytes::from_string(name.to_string());
    res.configuration_keys = None;
    req.resources = vec![res];
    let resp: DescribeConfigsResponse =
        admin.controller()?.call(ApiKey::DescribeConfigs, 4, &req)?;
    let Some(r) = resp.results.first() else {
        return Err(CliError::Other(format!(
            "topic {name}: empty DescribeConfigs answer"
        )));
    };
    if r.error_code != errors::NONE {
        return Err(CliError::kafka(
            format!("topic {name}"),
            r.error_code,
            r.error_message.as_ref().map(|m| m.to_string()),
        ));
    }
    let mut configs: Vec<ConfigEntry> = r
        .configs
        .iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c
                .value
                .as_ref()
                .filter(|_| !c.is_sensitive)
                .map(|v| v.to_string()),
            source: source_name(c.config_source),
            read_only: c.read_only,
        })
        .collect();
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    let d = Described {
        name: name.to_string(),
        internal: t.is_internal,
        partitions,
        configs,
    };
    match target.format {
        Format::Json => print!("{}", output::json(&d)),
        Format::Table => print!("{}", describe_table(&d)),
    }
    Ok(())
}

fn describe_table(d: &Described) -> String {
    let mut out = output::section("SUMMARY");
    out.push_str(&output::pairs(&[
        ("NAME", d.name.clone()),
        ("PARTITIONS", d.partitions.len().to_string()),
        (
            "REPLICAS",
            d.partitions
                .first()
                .map_or(0, |p| p.replicas.len())
                .to_string(),
        ),
        ("INTERNAL", d.internal.to_string()),
    ]));
    out.push('\n');
    out.push_str(&output::section("CONFIGS"));
    let rows: Vec<Vec<String>> = d
        .configs
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.clone().unwrap_or_else(|| "(sensitive)".into()),
                c.source.to_string(),
            ]
        })
        .collect();
    out.push_str(&output::table(&["KEY", "VALUE", "SOURCE"], &rows));
    out.push('\n');
    out.push_str(&output::section("PARTITIONS"));
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.leader.to_string(),
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                opt(p.log_start_offset),
                opt(p.log_end_offset),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-START-OFFSET",
            "LOG-END-OFFSET",
        ],
        &rows,
    ));
    out
}

#[derive(Serialize)]
struct ConfigChange {
    name: String,
    operation: &'static str,
    value: Option<String>,
}

fn alter_config(
    target: &KafkaTarget,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
    dry_run: bool,
) -> Result<(), CliError> {
    if set.is_empty() && delete.is_empty() {
        return Err(CliError::Other(
            "nothing to change: give --set KEY=VALUE or --delete KEY".into(),
        ));
    }
    // IncrementalAlterConfigs operations: 0 SET, 1 DELETE.
    let mut changes: Vec<(ConfigChange, i8)> = set
        .iter()
        .map(|(k, v)| {
            let c = ConfigChange {
                name: k.clone(),
                operation: "SET",
                value: Some(v.clone()),
            };
            (c, 0)
        })
        .collect();
    changes.extend(delete.iter().map(|k| {
        let c = ConfigChange {
            name: k.clone(),
            operation: "DELETE",
            value: None,
        };
        (c, 1)
    }));
    let mut admin = Admin::connect(&target.brokers)?;
    let mut res = AlterConfigsResource::default();
    res.resource_type = TOPIC_RESOURCE;
    res.resource_name = StrBytes::from_string(name.to_string());
    res.configs = changes
        .iter()
        .map(|(c, op)| {
            let mut a = AlterableConfig::default();
            a.name = StrBytes::from_string(c.name.clone());
            a.config_operation = *op;
            a.value = c.value.clone().map(StrBytes::from_string);
            a
        })
        .collect();
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    req.validate_only = dry_run;
    let resp: IncrementalAlterConfigsResponse = admin.on_controller(
        |c| Ok(c.call(ApiKey::IncrementalAlterConfigs, 1, &req)?),
        |r: &IncrementalAlterConfigsResponse| {
            r.responses
                .iter()
                .any(|x| x.error_code == errors::NOT_CONTROLLER)
        },
    )?;
    let Some(r) = resp.responses.first() else {
        return Err(CliError::Other(format!(
            "topic {name}: empty IncrementalAlterConfigs answer"
        )));
    };
    if r.error_code != errors::NONE {
        return Err(CliError::kafka(
            format!("topic {name}"),
            r.error_code,
            r.error_message.as_ref().map(|m| m.to_string()),
        ));
    }
    let changes: Vec<ConfigChange> = changes.into_iter().map(|(c, _)| c).collect();
    output::list(
        target.format,
        &changes,
        &["KEY", "OPERATION", "VALUE", "STATUS"],
        |c| {
            vec![
                c.name.clone(),
                c.operation.to_string(),
                c.value.clone().unwrap_or_else(|| "-".into()),
                if dry_run { "OK (dry run)" } else { "OK" }.to_string(),
            ]
        },
    );
    Ok(())
}
