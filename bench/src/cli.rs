//! Command line. The flag names are the ones users already type; keep them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::client::security::{
    parse_sasl_mechanism, parse_security_protocol, SaslLogin, SaslMechanism, Security,
    SecurityProtocol,
};
use crate::duration::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Produce,
    Consume,
    #[value(name = "round-trip")]
    RoundTrip,
    Metadata,
    /// A group of -c members reads the topic while a new member joins and leaves
    /// --rebalance-joins times; reports how long each rebalance took.
    Rebalance,
}

/// How producer tasks drive the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProducerModel {
    /// Each task builds its own batches and awaits each round of them: concurrency × batch
    /// bytes in flight
    Batch,
    /// Each task sends one record and awaits its acknowledgement, like an application over a
    /// Kafka client's future-returning send; all tasks' records share per-partition batches:
    /// concurrency = records in flight, latency per record
    Record,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyPattern {
    Random,
    Sequential,
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadPattern {
    Random,
    Zeros,
    Text,
}

/// Kafka acks: 0 (no response), 1 (leader), -1/all (all in-sync replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acks(pub i16);

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text.trim() {
        "0" => Ok(Acks(0)),
        "1" => Ok(Acks(1)),
        "-1" | "all" => Ok(Acks(-1)),
        other => Err(format!("acks must be 0, 1, -1 or all, not '{other}'")),
    }
}

/// A Kafka-protocol load generator for chronik, Kafka, Redpanda and any Kafka-compatible broker.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chronik-bench",
    version,
    about,
    allow_negative_numbers = true,
    args_override_self = true
)]
pub struct Args {
    /// Bootstrap servers, comma separated (host:port,...)
    #[arg(
        short = 'b',
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,

    /// Topic to produce to / consume from (metadata mode: prefix of the created topics)
    #[arg(short = 't', long, default_value = "chronik-bench")]
    pub topic: String,

    /// produce | consume | round-trip | metadata | rebalance
    #[arg(short = 'm', long, value_enum, default_value = "produce")]
    pub mode: Mode,

    /// Concurrent producer/consumer tasks; with --consumer-group and in rebalance mode, the
    /// group's members (metadata mode: concurrent topic creations)
    #[arg(short = 'c', long, default_value_t = 4)]
    pub concurrency: usize,

    /// Message (record value) size in bytes
    #[arg(short = 's', long, default_value_t = 1024)]
    pub message_size: usize,

    /// How long to run after warm-up (60s, 5m, 500ms). Default 60s, or 10m when only -n is given
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Warm-up before measuring (not counted in the figures)
    #[arg(short = 'w', long, value_parser = parse_duration, default_value = "0s")]
    pub warmup_duration: Duration,

    /// Stop after this many messages (metadata mode: number of topics to create, default 100)
    #[arg(short = 'n', long)]
    pub message_count: Option<u64>,

    /// Messages per second over all tasks (0 = unlimited)
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u64,

    /// 0, 1, -1 or all
    #[arg(long, value_parser = parse_acks, default_value = "1")]
    pub acks: Acks,

    /// Record batch compression
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,

    /// Partitions of the topic (used with --create-topic, and in metadata mode)
    #[arg(short = 'p', long, default_value_t = 1)]
    pub partitions: i32,

    /// Replication factor (used with --create-topic, and in metadata mode)
    #[arg(short = 'r', long, default_value_t = 1)]
    pub replication_factor: i16,

    /// Create the topic before the run (an existing topic is fine)
    #[arg(long)]
    pub create_topic: bool,

    /// Delete the topic(s) after the run
    #[arg(long)]
    pub delete_topic_after: bool,

    /// How long a partition batch may wait for more records before it is sent
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,

    /// Maximum bytes of records per partition batch
    #[arg(long, default_value_t = 16384)]
    pub batch_size: usize,

    /// batch: each task builds and awaits its own batches; record: each task awaits one record
    /// at a time over a shared accumulator (see the README)
    #[arg(long, value_enum, default_value = "record")]
    pub producer_model: ProducerModel,

    /// Produce requests outstanding per broker and per partition (record model), like
    /// max.in.flight.requests.per.connection
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,

    /// How long to wait for a response before counting a timeout
    #[arg(long, default_value_t = 30000)]
    pub request_timeout_ms: u64,

    /// How connections reach the brokers, as Kafka's security.protocol
    #[arg(long, default_value = "PLAINTEXT", value_parser = parse_security_protocol)]
    pub security_protocol: SecurityProtocol,

    /// PEM file of the CA the brokers' certificates are checked against (SSL, SASL_SSL)
    #[arg(long)]
    pub ssl_ca_file: Option<PathBuf>,

    /// SASL mechanism (SASL_PLAINTEXT, SASL_SSL)
    #[arg(long, default_value = "PLAIN", value_parser = parse_sasl_mechanism)]
    pub sasl_mechanism: SaslMechanism,

    /// SASL user name
    #[arg(long)]
    pub sasl_username: Option<String>,

    /// SASL password
    #[arg(long)]
    pub sasl_password: Option<String>,

    /// How long a message may take, retries included, before it counts as failed
    #[arg(long, default_value_t = 120000)]
    pub message_timeout_ms: u64,

    /// Record keys: random, sequential or fixed (fixed sends everything to one partition)
    #[arg(long, value_enum, default_value = "random")]
    pub key_pattern: KeyPattern,

    /// Record values: random, zeros or text
    #[arg(long, value_enum, default_value = "random")]
    pub payload_pattern: PayloadPattern,

    /// Consume as this consumer group: -c members, each reading the partitions the group's
    /// leader assigns it (range), committing on rebalance and at the end. The run first resets
    /// the group's offsets to the earliest (rebalance mode: a fresh group unless given)
    #[arg(long)]
    pub consumer_group: Option<String>,

    /// Rebalance mode: how many times a new member joins the running group (and leaves again)
    #[arg(long, default_value_t = 20)]
    pub rebalance_joins: u32,

    /// Group members' heartbeat interval (Kafka's heartbeat.interval.ms); members learn of a
    /// rebalance from a heartbeat, so this bounds how fast they rejoin
    #[arg(long, default_value_t = 3000)]
    pub heartbeat_interval_ms: u64,

    /// Group members' session timeout (Kafka's session.timeout.ms)
    #[arg(long, default_value_t = 45000)]
    pub session_timeout_ms: u64,

    /// Check every message arrives once, intact, in order per partition; fail the run otherwise
    #[arg(long)]
    pub validate: bool,

    /// Produce mode: each task is a transactional producer (its own transactional.id) that
    /// commits every --transaction-size records; messages count once committed. Needs
    /// --acks all; the tasks build their own batches, as in --producer-model batch
    #[arg(long)]
    pub transactional: bool,

    /// Records per transaction with --transactional
    #[arg(long, default_value_t = 100)]
    pub transaction_size: u64,

    /// transaction.timeout.ms the transactional producers ask for
    #[arg(long, default_value_t = 60000)]
    pub transaction_timeout_ms: i32,

    /// With --transactional: wait before retrying CONCURRENT_TRANSACTIONS (the previous
    /// transaction's markers still being written) and coordinator errors
    #[arg(long, default_value_t = 5)]
    pub transaction_retry_backoff_ms: u64,

    /// Seconds between progress lines
    #[arg(long, default_value_t = 5)]
    pub report_interval_secs: u64,

    /// Write the final summary as JSON to this file
    #[arg(long)]
    pub json_output: Option<PathBuf>,

    /// Write the final summary as CSV (header + one row) to this file
    #[arg(long)]
    pub csv_output: Option<PathBuf>,

    /// Print protocol-level detail (versions, metadata, retries)
    #[arg(long)]
    pub verbose: bool,

    /// Consume mode: stop once every partition reaches the end offset it had when the run began
    #[arg(long)]
    pub stop_at_end: bool,

    /// Runtime worker threads (default: the number of cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Args {
    pub fn bootstrap_list(&self) -> Vec<String> {
        self.bootstrap_servers
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The measured duration: explicit -d, else 10 minutes when bounded by -n or by
    /// --rebalance-joins (rebalance mode), else 60s.
    pub fn run_duration(&self) -> Duration {
        match (self.duration, self.message_count) {
            (Some(d), _) => d,
            (None, _) if self.mode == Mode::Rebalance => Duration::from_secs(600),
            (None, Some(_)) => Duration::from_secs(600),
            (None, None) => Duration::from_secs(60),
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms.max(1))
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report_interval_secs.max(1))
    }

    /// How connections reach the brokers (TLS, SASL login), from the security flags.
    pub fn security(&self) -> anyhow::Result<std::sync::Arc<Security>> {
        let sasl = match (&self.sasl_username, &self.sasl_password) {
            (Some(u), Some(p)) => Some(SaslLogin {
                mechanism: self.sasl_mechanism,
                username: u.clone(),
                password: p.clone(),
            }),
            _ => None,
        };
        Security::new(self.security_protocol, self.ssl_ca_file.as_deref(), sasl)
    }

    /// Checks the combinations clap cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.bootstrap_list().is_empty() {
            return Err("--bootstrap-servers is empty".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.partitions < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if self.replication_factor < 1 {
            return Err("--replication-factor must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        let needs_header = self.validate || self.mode == Mode::RoundTrip;
        if needs_header && self.message_size < crate::payload::HEADER_LEN {
            return Err(format!(
                "--validate and round-trip mode put a {}-byte header in each message: --message-size must be at least {}",
                crate::payload::HEADER_LEN,
                crate::payload::HEADER_LEN
            ));
        }
        if self.validate && self.acks.0 == 0 {
            return Err("--validate needs acknowledgements: use --acks 1 or all".into());
        }
        if self.transactional {
            if self.mode != Mode::Produce {
                return Err("--transactional is a produce mode option".into());
            }
            if self.acks.0 != -1 {
                return Err("--transactional needs --acks all, as Kafka's producers do".into());
            }
            if self.transaction_size == 0 {
                return Err("--transaction-size must be at least 1".into());
            }
            if self.rate_limit != 0 {
                return Err("--rate-limit is not supported with --transactional".into());
            }
            if self.transaction_timeout_ms < 1 {
                return Err("--transaction-timeout-ms must be at least 1".into());
            }
        }
        if self.mode == Mode::Rebalance && self.rebalance_joins == 0 {
            return Err("--rebalance-joins must be at least 1".into());
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.session_timeout_ms
        {
            return Err(
                "--heartbeat-interval-ms must be at least 1 and below --session-timeout-ms".into(),
            );
        }
        if self.session_timeout_ms > i32::MAX as u64 {
            return Err("--session-timeout-ms is too large".into());
        }
        if self.message_size > 64 * 1024 * 1024 {
            return Err("--message-size above 64 MiB is not supported".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut full = vec!["chronik-bench"];
        full.extend_from_slice(args);
        Args::try_parse_from(full).expect("parses")
    }

    #[test]
    fn the_documented_example_parses() {
        let a = parse(&[
            "--bootstrap-servers",
            "localhost:9092,localhost:9093,localhost:9094",
            "--topic",
            "perf-test",
            "--mode",
            "produce",
            "--concurrency",
            "128",
            "--message-size",
            "1024",
            "--duration",
            "30s",
            "--acks",
            "all",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--create-topic",
        ]);
        assert_eq!(a.bootstrap_list().len(), 3);
        assert_eq!(a.topic, "perf-test");
        assert_eq!(a.mode, Mode::Produce);
        assert_eq!(a.concurrency, 128);
        assert_eq!(a.message_size, 1024);
        assert_eq!(a.run_duration(), Duration::from_secs(30));
        assert_eq!(a.acks, Acks(-1));
        assert_eq!(a.partitions, 3);
        assert_eq!(a.replication_factor, 3);
        assert!(a.create_topic);
        // Concurrency means records in flight, as in the bench the issues' baselines came from.
        assert_eq!(a.producer_model, ProducerModel::Record);
        assert_eq!(a.max_in_flight, 5);
        assert!(a.check().is_ok());
        let b = parse(&["--producer-model", "record", "--producer-model", "batch"]);
        assert_eq!(b.producer_model, ProducerModel::Batch, "the last one wins");
    }

    #[test]
    fn short_flags_and_every_option_parse() {
        let a = parse(&[
            "-b",
            "127.0.0.1:1",
            "-t",
            "x",
            "-m",
            "round-trip",
            "-c",
            "2",
            "-s",
            "100",
            "-d",
            "500ms",
            "-w",
            "1s",
            "-n",
            "1000",
            "--rate-limit",
            "500",
            "--acks",
            "-1",
            "--compression",
            "zstd",
            "-p",
            "12",
            "-r",
            "1",
            "--delete-topic-after",
            "--linger-ms",
            "0",
            "--batch-size",
            "1000",
            "--request-timeout-ms",
            "100",
            "--message-timeout-ms",
            "200",
            "--key-pattern",
            "sequential",
            "--payload-pattern",
            "text",
            "--consumer-group",
            "g",
            "--validate",
            "--report-interval-secs",
            "2",
            "--json-output",
            "o.json",
            "--csv-output",
            "o.csv",
            "--verbose",
        ]);
        assert_eq!(a.mode, Mode::RoundTrip);
        assert_eq!(a.acks, Acks(-1));
        assert_eq!(a.compression, CompressionArg::Zstd);
        assert_eq!(a.key_pattern, KeyPattern::Sequential);
        assert_eq!(a.payload_pattern, PayloadPattern::Text);
        assert_eq!(a.run_duration(), Duration::from_millis(500));
        assert_eq!(a.warmup_duration, Duration::from_secs(1));
        assert_eq!(a.message_count, Some(1000));
        assert_eq!(a.consumer_group.as_deref(), Some("g"));
        assert!(a.validate && a.verbose && a.delete_topic_after);
        assert!(a.check().is_ok());
    }

    #[test]
    fn group_and_rebalance_flags_parse() {
        let a = parse(&[
            "-m",
            "rebalance",
            "--consumer-group",
            "g",
            "-c",
            "4",
            "--rebalance-joins",
            "20",
            "--heartbeat-interval-ms",
            "500",
            "--session-timeout-ms",
            "10000",
        ]);
        assert_eq!(a.mode, Mode::Rebalance);
        assert_eq!(a.rebalance_joins, 20);
        assert_eq!(a.heartbeat_interval(), Duration::from_millis(500));
        assert_eq!(a.session_timeout_ms, 10000);
        assert_eq!(
            a.run_duration(),
            Duration::from_secs(600),
            "bounded by default"
        );
        assert!(a.check().is_ok());
        let d = parse(&[]);
        assert_eq!(
            (
                d.rebalance_joins,
                d.heartbeat_interval_ms,
                d.session_timeout_ms
            ),
            (20, 3000, 45000)
        );
        assert!(parse(&["-m", "rebalance", "--rebalance-joins", "0"])
            .check()
            .is_err());
        assert!(parse(&[
            "--heartbeat-interval-ms",
            "6000",
            "--session-timeout-ms",
            "6000"
        ])
        .check()
        .is_err());
    }

    #[test]
    fn transactional_flags_parse_and_need_acks_all() {
        let a = parse(&["--transactional", "--acks", "all"]);
        assert!(a.transactional);
        assert_eq!(a.transaction_size, 100, "the default");
        assert!(a.check().is_ok());
        let b = parse(&[
            "--transactional",
            "--acks",
            "-1",
            "--transaction-size",
            "10",
        ]);
        assert_eq!(b.transaction_size, 10);
        assert!(parse(&["--transactional"]).check().is_err(), "acks=1");
        assert!(parse(&[
            "--transactional",
            "--acks",
            "all",
            "--transaction-size",
            "0"
        ])
        .check()
        .is_err());
        assert!(
            parse(&["--transactional", "--acks", "all", "-m", "consume"])
                .check()
                .is_err()
        );
    }

    #[test]
    fn acks_values() {
        assert_eq!(parse(&["--acks", "0"]).acks, Acks(0));
        assert_eq!(parse(&["--acks", "1"]).acks, Acks(1));
        assert_eq!(parse(&["--acks", "all"]).acks, Acks(-1));
        let mut full = vec!["chronik-bench", "--acks", "2"];
        assert!(Args::try_parse_from(full.drain(..)).is_err());
    }

    #[test]
    fn duration_defaults_depend_on_message_count() {
        assert_eq!(parse(&[]).run_duration(), Duration::from_secs(60));
        assert_eq!(parse(&["-n", "5"]).run_duration(), Duration::from_secs(600));
        assert_eq!(
            parse(&["-n", "5", "-d", "5m"]).run_duration(),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn validate_needs_room_for_the_header() {
        assert!(parse(&["--validate", "-s", "10"]).check().is_err());
        assert!(parse(&["-m", "round-trip", "-s", "10"]).check().is_err());
        assert!(parse(&["--validate", "--acks", "0"]).check().is_err());
        assert!(parse(&["-c", "0"]).check().is_err());
    }

    #[test]
    fn bootstrap_servers_come_from_the_environment() {
        // clap reads the env var when the flag is absent
        std::env::set_var("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:7777,127.0.0.1:7778");
        let a = parse(&["-t", "x"]);
        std::env::remove_var("KAFKA_BOOTSTRAP_SERVERS");
        assert_eq!(a.bootstrap_list(), vec!["127.0.0.1:7777", "127.0.0.1:7778"]);
    }
}
