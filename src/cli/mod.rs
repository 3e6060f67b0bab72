//! `chronik-server <command>`: the operator's command line, in the style of Redpanda's `rpk`.
//! `topic` and `group` speak the Kafka protocol to any broker, finding the controller, the group
//! coordinators and the partition leaders as a Kafka admin client does; `cluster` adds chronik's
//! membership commands. Blocking std sockets: this is a CLI, not shard code.

mod admin;
pub mod cluster;
pub(crate) mod conn;
mod group;
mod output;
mod topic;

use clap::{Args, Subcommand, ValueEnum};
use std::fmt;

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Cluster status and membership (add, rebalance, remove nodes).
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list, describe, reconfigure and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// List, describe (with lag), reset the offsets of and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
}

/// Runs a command; returns the process exit code (0 done, 1 refused or unreachable).
pub fn run(cmd: &Command) -> i32 {
    match cmd {
        Command::Cluster(c) => cluster::run(c),
        Command::Topic(c) => report(topic::run(c)),
        Command::Group(c) => report(group::run(c)),
    }
}

fn report(r: Result<(), CliError>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Where the Kafka-protocol commands connect, and how they print.
#[derive(Args, Debug, Clone)]
pub struct KafkaTarget {
    /// Brokers to bootstrap from, HOST:PORT comma-separated; any node of the cluster will do.
    #[arg(
        long,
        env = "CHRONIK_BROKERS",
        default_value = "127.0.0.1:9092",
        value_delimiter = ','
    )]
    pub brokers: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// A command's failure: an error code a broker answered with, or anything else (unreachable
/// broker, bad answer).
#[derive(Debug)]
pub enum CliError {
    Kafka {
        /// What was refused (a topic, a group, a partition).
        subject: String,
        code: i16,
        message: Option<String>,
    },
    Other(String),
}

impl CliError {
    pub fn kafka(subject: impl Into<String>, code: i16, message: Option<String>) -> CliError {
        CliError::Kafka {
            subject: subject.into(),
            code,
            message: message.filter(|m| !m.is_empty()),
        }
    }
}

impl From<String> for CliError {
    fn from(s: String) -> CliError {
        CliError::Other(s)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Kafka {
                subject,
                code,
                message,
            } => {
                write!(f, "{subject}: {}", error_name(*code))?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            CliError::Other(s) => f.write_str(s),
        }
    }
}

/// A Kafka error code's name as the protocol guide writes it (`TOPIC_ALREADY_EXISTS`), from the
/// kafka-protocol crate's list (which names them in CamelCase).
pub fn error_name(code: i16) -> String {
    use kafka_protocol::error::ResponseError;
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = e.to_string();
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// `k=v` of `--config`/`--set`.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_written_as_the_protocol_guide_writes_them() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(68), "NON_EMPTY_GROUP");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
    }

    #[test]
    fn a_key_value_needs_a_key_and_an_equals_sign() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(
            parse_key_value("cleanup.policy="),
            Ok(("cleanup.policy".into(), String::new()))
        );
        assert!(parse_key_value("retention.ms").is_err());
        assert!(parse_key_value("=1").is_err());
    }
}
