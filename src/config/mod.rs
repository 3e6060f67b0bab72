//! Broker configuration. Every setting is declared once, in `settings.rs` (`declare.rs` says
//! what a declaration makes): its CLI flag, `CHRONIK_<NAME>` environment variable, TOML key and
//! default. Precedence: CLI flag > environment > TOML file (`file.rs`) > default. Here the
//! values are checked and turned into what the broker runs with.

pub mod authorizer;
mod declare;
mod file;
mod groups;
pub mod listeners;
mod parse;
pub mod sasl;
mod settings;
#[cfg(test)]
mod tests;
pub mod tls;

pub use declare::Declared;
pub use groups::GroupConfig;
pub use parse::{parse_cluster_id, parse_flush, parse_quorum};
pub use settings::{BrokerSettings, GroupSettings};

use clap::{Args, Parser};
use listeners::{ListenerSettings, Listeners};
use parse::{absolute_dir, resolve_addr};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "chronik-server",
    version,
    about = "chronik: a Kafka-compatible broker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<crate::cli::Command>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The server's flags: the declared settings, and the two that are not settings of their own.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// TOML configuration file: keys are the flags' names (see README "Configuration").
    #[arg(long, env = "CHRONIK_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Do not pin threads: the same as --pin=false (several nodes on one machine, tests).
    #[arg(long, overrides_with = "pin")]
    pub no_pin: bool,
    #[command(flatten)]
    pub groups: GroupSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushSetting {
    Always,
    IntervalMs(u64),
}

/// The resolved configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Kafka listeners; every shard binds each one.
    pub listeners: Listeners,
    /// None: no SSL listener and no `--controller-tls`.
    pub tls: Option<tls::TlsFiles>,
    /// `--controller-tls`: mutual TLS on the controller port (with `tls`'s files).
    pub controller_tls: bool,
    /// SASL mechanisms, bootstrap users, session lifetime, the fetchers' login.
    pub sasl: sasl::SaslConfig,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub pin: bool,
    pub controller_listen: SocketAddr,
    pub controller_quorum: Vec<(i32, String)>,
    /// None: no metrics endpoint (`--metrics-listen none`).
    pub metrics_listen: Option<SocketAddr>,
    /// None: the id kept in the data dir, else one derived from the quorum.
    pub cluster_id: Option<String>,
    /// None: the copy in the data dir (`chronik_raft::secret::resolve`).
    pub cluster_secret_file: Option<PathBuf>,
    pub rack: Option<String>,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub max_inflight_bytes: usize,
    /// None: idle connections are never closed.
    pub connections_max_idle_ms: Option<u64>,
    pub fetch_max_bytes: i32,
    /// None: 5% of the data disk, at most 256 MiB (worked out when the disk is looked at).
    pub min_free_disk_bytes: Option<u64>,
    pub log_flush: FlushSetting,
    pub log_segment_bytes: u64,
    pub log_retention_ms: Option<i64>,
    pub read_cache_bytes: usize,
    pub min_insync_replicas: i32,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    /// 0: no automatic preferred-leader elections.
    pub leader_imbalance_check_interval_ms: u64,
    /// 0: stop without handing leadership over first.
    pub controlled_shutdown_timeout_ms: u64,
    pub log_cleaner_enable: bool,
    pub log_cleaner_backoff_ms: u64,
    pub log_cleaner_dedupe_buffer_size: usize,
    pub log_cleaner_shares: usize,
    /// 0: no cap.
    pub log_cleaner_io_max_bytes_per_second: u64,
    pub groups: GroupConfig,
    /// Who may do what (the authorizer is `crate::acl`).
    pub authorizer: authorizer::AuthorizerConfig,
}

impl BrokerConfig {
    pub fn resolve(args: &ServerArgs) -> Result<BrokerConfig, String> {
        let from_file = match &args.config {
            Some(path) => file::read(path)?,
            None => Default::default(),
        };
        let mut given = args.broker.clone().or(from_file.broker);
        if args.no_pin {
            given.pin = Some(false);
        }
        let groups = GroupConfig::resolve(args.groups.clone().or(from_file.groups))?;
        let listen_given = given.listen.clone();
        let v = given.values();
        let node_id = v.node_id;
        let listeners = listeners::resolve(&ListenerSettings {
            listeners: v.listeners.as_deref(),
            advertised_listeners: v.advertised_listeners.as_deref(),
            protocol_map: v.listener_security_protocol_map.as_deref(),
            inter_broker_listener_name: v.inter_broker_listener_name.as_deref(),
            listen: listen_given.as_deref(),
            listen_default: &v.listen,
            advertise: v.advertise.as_deref(),
        })?;
        let tls = tls::resolve(
            tls::Uses {
                listener: listeners.all.iter().any(|l| l.protocol.uses_tls()),
                inter_broker: listeners.inter_broker().protocol.uses_tls(),
                controller: v.controller_tls,
            },
            v.ssl_cert_file,
            v.ssl_key_file,
            v.ssl_ca_file,
            &v.ssl_client_auth,
        )?;
        let sasl = sasl::resolve(sasl::SaslSettings {
            any_sasl_listener: listeners.all.iter().any(|l| l.protocol.uses_sasl()),
            inter_broker_sasl: listeners.inter_broker().protocol.uses_sasl(),
            mechanisms: &v.sasl_enabled_mechanisms,
            bootstrap_users: v.sasl_bootstrap_users,
            reauth_ms: v.connections_max_reauth_ms,
            inter_broker_mechanism: &v.sasl_mechanism_inter_broker_protocol,
            inter_broker_user: v.sasl_inter_broker_user,
            inter_broker_password_file: v.sasl_inter_broker_password_file,
        })?;
        let controller_listen = match v.controller_listen {
            Some(s) => resolve_addr(&s, "controller-listen")?,
            None => {
                let first = listeners.all[0].bind;
                let port = first.port().checked_add(1000).ok_or_else(|| {
                    "listen port + 1000 overflows; set --controller-listen".to_string()
                })?;
                SocketAddr::new(first.ip(), port)
            }
        };
        let controller_quorum = match v.controller_quorum {
            Some(s) => parse_quorum(&s)?,
            None => vec![(node_id, controller_listen.to_string())],
        };
        let metrics_listen = if v.metrics_listen.trim().eq_ignore_ascii_case("none") {
            None
        } else {
            Some(resolve_addr(&v.metrics_listen, "metrics-listen")?)
        };
        let cluster_id = v.cluster_id.as_deref().map(parse_cluster_id).transpose()?;
        if !controller_quorum.iter().any(|(id, _)| *id == node_id) {
            // A node outside the voter list joins later as a learner (cluster add-node).
            tracing::info!(
                node_id,
                "this node is not in --controller-quorum; it will wait to be added"
            );
        }
        let cores = v.cores.unwrap_or_else(|| {
            let avail = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            avail.saturating_sub(1).max(1)
        });
        if cores == 0 {
            return Err("cores must be at least 1".into());
        }
        if v.num_partitions < 1 {
            return Err("num-partitions must be at least 1".into());
        }
        if v.default_replication_factor < 1 {
            return Err("default-replication-factor must be at least 1".into());
        }
        let connections_max_idle_ms = match v.connections_max_idle_ms {
            ms if ms < 0 => None,
            0 => return Err("connections-max-idle-ms must be positive, or -1 for never".into()),
            ms => Some(ms.unsigned_abs()),
        };
        if v.fetch_max_bytes < 1024 {
            return Err("fetch-max-bytes must be at least 1024".into());
        }
        Ok(BrokerConfig {
            node_id,
            listeners,
            tls,
            controller_tls: v.controller_tls,
            sasl,
            data_dir: absolute_dir(v.data_dir)?,
            cores,
            pin: v.pin,
            controller_listen,
            controller_quorum,
            metrics_listen,
            cluster_id,
            cluster_secret_file: v.cluster_secret_file,
            rack: v.rack,
            auto_create_topics_enable: v.auto_create_topics_enable,
            num_partitions: v.num_partitions,
            default_replication_factor: v.default_replication_factor,
            message_max_bytes: v.message_max_bytes,
            socket_request_max_bytes: v.socket_request_max_bytes,
            max_connections: v.max_connections,
            max_inflight_bytes: v.max_inflight_bytes,
            connections_max_idle_ms,
            fetch_max_bytes: v.fetch_max_bytes,
            min_free_disk_bytes: v.min_free_disk_bytes,
            log_flush: parse_flush(&v.log_flush)?,
            log_segment_bytes: v.log_segment_bytes,
            log_retention_ms: (v.log_retention_ms >= 0).then_some(v.log_retention_ms),
            read_cache_bytes: v.read_cache_bytes,
            min_insync_replicas: v.min_insync_replicas,
            broker_session_timeout_ms: v.broker_session_timeout_ms,
            broker_heartbeat_interval_ms: v.broker_heartbeat_interval_ms,
            replica_lag_time_max_ms: v.replica_lag_time_max_ms,
            leader_imbalance_check_interval_ms: v.leader_imbalance_check_interval_ms,
            controlled_shutdown_timeout_ms: v.controlled_shutdown_timeout_ms,
            log_cleaner_enable: v.log_cleaner_enable,
            log_cleaner_backoff_ms: v.log_cleaner_backoff_ms,
            // Kafka's minimum map is 1 MiB per cleaner thread; less cannot do useful work.
            log_cleaner_dedupe_buffer_size: v.log_cleaner_dedupe_buffer_size.max(1 << 20),
            log_cleaner_shares: v.log_cleaner_shares.clamp(1, 1000),
            log_cleaner_io_max_bytes_per_second: v.log_cleaner_io_max_bytes_per_second,
            groups,
            authorizer: authorizer::AuthorizerConfig::resolve(
                v.authorizer_enable,
                v.super_users.as_deref(),
                v.allow_everyone_if_no_acl_found,
            )?,
        })
    }

    /// Kafka-named broker defaults reported by DescribeConfigs.
    pub fn broker_defaults(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        m.insert("min.insync.replicas", self.min_insync_replicas.to_string());
        m.insert("message.max.bytes", self.message_max_bytes.to_string());
        m.insert("segment.bytes", self.log_segment_bytes.to_string());
        m.insert(
            "retention.ms",
            self.log_retention_ms.unwrap_or(-1).to_string(),
        );
        m.insert("retention.bytes", "-1".to_string());
        m.insert("cleanup.policy", "delete".to_string());
        m.insert(
            "flush.ms",
            match self.log_flush {
                FlushSetting::Always => "0".to_string(),
                FlushSetting::IntervalMs(ms) => ms.to_string(),
            },
        );
        m.insert("unclean.leader.election.enable", "false".to_string());
        m.insert("compression.type", "producer".to_string());
        m.insert("message.timestamp.type", "CreateTime".to_string());
        m.insert("segment.ms", (7u64 * 24 * 3600 * 1000).to_string());
        m.insert("max.message.bytes", self.message_max_bytes.to_string());
        let cc = chronik_storage::CompactionConfig::default();
        m.insert(
            "min.cleanable.dirty.ratio",
            cc.min_cleanable_dirty_ratio.to_string(),
        );
        m.insert(
            "min.compaction.lag.ms",
            cc.min_compaction_lag_ms.to_string(),
        );
        m.insert("max.compaction.lag.ms", i64::MAX.to_string());
        m.insert("delete.retention.ms", cc.delete_retention_ms.to_string());
        m
    }
}
