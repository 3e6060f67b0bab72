//! Broker configuration: CLI flags (clap), a TOML file with the same names, and `CHRONIK_*`
//! environment overrides. Precedence: CLI flag > environment > TOML file > built-in default.

use clap::{Args, Parser};
use serde::Deserialize;
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

/// Every option can also be given in the TOML file (same name, with `-` or `_`) and as
/// `CHRONIK_<NAME>` in the environment.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "CHRONIK_CONFIG")]
    pub config: Option<PathBuf>,
    /// This broker's id (also its controller node id). [default: 1]
    #[arg(long, env = "CHRONIK_NODE_ID")]
    pub node_id: Option<i32>,
    /// Kafka listener. [default: 127.0.0.1:9092]
    #[arg(long, env = "CHRONIK_LISTEN")]
    pub listen: Option<String>,
    /// Address advertised to clients. [default: the listen address]
    #[arg(long, env = "CHRONIK_ADVERTISE")]
    pub advertise: Option<String>,
    /// Data directory. [default: ./data]
    #[arg(long, env = "CHRONIK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of shard cores. [default: all cores but the controller's, at least 1]
    #[arg(long, env = "CHRONIK_CORES")]
    pub cores: Option<usize>,
    /// Pin shard and controller threads to cores (bare metal). [default: on]
    #[arg(long, overrides_with = "no_pin")]
    pub pin: bool,
    /// Do not pin threads (several nodes on one machine, tests).
    #[arg(long, overrides_with = "pin")]
    pub no_pin: bool,
    /// Controller (Raft) listener. [default: listen port + 1000]
    #[arg(long, env = "CHRONIK_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// Prometheus endpoint serving /metrics and /health, HOST:PORT, or `none` to turn it off.
    /// Several nodes on one machine need one port each. [default: 127.0.0.1:9644]
    #[arg(long, env = "CHRONIK_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Controller voters: `ID@HOST:PORT,…`. [default: this node alone]
    #[arg(long, env = "CHRONIK_CONTROLLER_QUORUM")]
    pub controller_quorum: Option<String>,
    /// The cluster's id (`cluster status` prints it). Needed by a node joining a cluster whose
    /// voters are no longer the ones it was first started with; checked against the id kept in
    /// the data dir. [default: derived from --controller-quorum at the first start]
    #[arg(long, env = "CHRONIK_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// The cluster's secret file (one or two lines of 64 hex digits), with which controllers
    /// and operator commands authenticate on the controller port; copied to
    /// `<data-dir>/cluster.secret`. Needed at the first start of every node of a multi-node
    /// cluster (the same file on all). [default: the copy in the data dir; a new single-node
    /// cluster generates one]
    #[arg(long, env = "CHRONIK_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Rack of this broker, for rack-aware placement.
    #[arg(long, env = "CHRONIK_RACK")]
    pub rack: Option<String>,
    /// Create topics on Metadata/Produce for unknown names. [default: true]
    #[arg(long, env = "CHRONIK_AUTO_CREATE_TOPICS_ENABLE")]
    pub auto_create_topics_enable: Option<bool>,
    /// Partitions of auto-created topics. [default: 1]
    #[arg(long, env = "CHRONIK_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Replication factor of auto-created topics. [default: 1]
    #[arg(long, env = "CHRONIK_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i16>,
    /// Largest record batch accepted, bytes. [default: 1048588]
    #[arg(long, env = "CHRONIK_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<usize>,
    /// Largest request frame accepted, bytes; bigger frames close the connection. [default: 104857600]
    #[arg(long, env = "CHRONIK_SOCKET_REQUEST_MAX_BYTES")]
    pub socket_request_max_bytes: Option<usize>,
    /// Most client connections per shard. [default: 10000]
    #[arg(long, env = "CHRONIK_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Request bytes in flight per connection before reading pauses. [default: 67108864]
    #[arg(long, env = "CHRONIK_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// connections.max.idle.ms: close a client connection silent this long with no request in
    /// flight; -1 never. [default: 600000]
    #[arg(
        long,
        env = "CHRONIK_CONNECTIONS_MAX_IDLE_MS",
        allow_negative_numbers = true
    )]
    pub connections_max_idle_ms: Option<i64>,
    /// fetch.max.bytes: most record bytes in one Fetch response, whatever the client asks.
    /// [default: 57671680]
    #[arg(long, env = "CHRONIK_FETCH_MAX_BYTES")]
    pub fetch_max_bytes: Option<i32>,
    /// Free space the data disk keeps for the partitions it already holds: below it, topic and
    /// partition creation (CreateTopics, CreatePartitions, auto-create) is refused.
    /// [default: 5% of the data disk, at most 268435456]
    #[arg(long, env = "CHRONIK_MIN_FREE_DISK_BYTES")]
    pub min_free_disk_bytes: Option<u64>,
    /// Log flush policy: `always` (fdatasync before acks), or an interval in ms. [default: 1000]
    #[arg(long, env = "CHRONIK_LOG_FLUSH")]
    pub log_flush: Option<String>,
    /// Segment size, bytes. [default: 1073741824]
    #[arg(long, env = "CHRONIK_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Retention, ms (-1 = forever). [default: 604800000]
    #[arg(long, env = "CHRONIK_LOG_RETENTION_MS")]
    pub log_retention_ms: Option<i64>,
    /// Read cache per shard, bytes. [default: 268435456]
    #[arg(long, env = "CHRONIK_READ_CACHE_BYTES")]
    pub read_cache_bytes: Option<usize>,
    /// min.insync.replicas default for topics. [default: 1]
    #[arg(long, env = "CHRONIK_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
    /// Controller fences a broker silent this long, ms. [default: 9000]
    #[arg(long, env = "CHRONIK_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// Broker heartbeat interval to the controller, ms. [default: 1000]
    #[arg(long, env = "CHRONIK_BROKER_HEARTBEAT_INTERVAL_MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// A follower this far behind (ms) leaves the ISR. [default: 30000]
    #[arg(long, env = "CHRONIK_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// How often the controller moves leadership back to live, in-sync preferred replicas
    /// (Kafka's auto leader rebalance), ms; 0 turns it off. [default: 60000]
    #[arg(long, env = "CHRONIK_LEADER_IMBALANCE_CHECK_INTERVAL_MS")]
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// On SIGTERM/SIGINT, how long the broker waits for the controller to move leadership of
    /// its partitions to other in-sync replicas before it stops anyway, ms; 0 stops at once
    /// (Kafka's controlled.shutdown.enable=false). [default: 30000]
    #[arg(long, env = "CHRONIK_CONTROLLED_SHUTDOWN_TIMEOUT_MS")]
    pub controlled_shutdown_timeout_ms: Option<u64>,
    /// Run the log cleaner for cleanup.policy=compact topics. [default: true]
    #[arg(long, env = "CHRONIK_LOG_CLEANER_ENABLE")]
    pub log_cleaner_enable: Option<bool>,
    /// Pause of a shard's cleaner when no log is due, ms. [default: 15000]
    #[arg(long, env = "CHRONIK_LOG_CLEANER_BACKOFF_MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Memory per shard for the cleaner's key→offset map, bytes. [default: 33554432]
    #[arg(long, env = "CHRONIK_LOG_CLEANER_DEDUPE_BUFFER_SIZE")]
    pub log_cleaner_dedupe_buffer_size: Option<usize>,
    /// CPU and I/O shares of a shard's cleaner task queue (the request path has 1000). [default: 50]
    #[arg(long, env = "CHRONIK_LOG_CLEANER_SHARES")]
    pub log_cleaner_shares: Option<usize>,
    /// Cap on a shard cleaner's reads plus writes, bytes/s; 0 = none. [default: 0]
    #[arg(long, env = "CHRONIK_LOG_CLEANER_IO_MAX_BYTES_PER_SECOND")]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    #[command(flatten)]
    pub groups: crate::group::config::GroupArgs,
}

/// The same options as read from a TOML file. Unknown keys are an error, so typos are caught.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(alias = "node_id")]
    node_id: Option<i32>,
    listen: Option<String>,
    advertise: Option<String>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    pin: Option<bool>,
    #[serde(alias = "controller_listen")]
    controller_listen: Option<String>,
    #[serde(alias = "controller_quorum")]
    controller_quorum: Option<String>,
    #[serde(alias = "metrics_listen")]
    metrics_listen: Option<String>,
    #[serde(alias = "cluster_id")]
    cluster_id: Option<String>,
    #[serde(alias = "cluster_secret_file")]
    cluster_secret_file: Option<PathBuf>,
    rack: Option<String>,
    #[serde(
        alias = "auto_create_topics_enable",
        alias = "auto.create.topics.enable"
    )]
    auto_create_topics_enable: Option<bool>,
    #[serde(alias = "num_partitions", alias = "num.partitions")]
    num_partitions: Option<i32>,
    #[serde(
        alias = "default_replication_factor",
        alias = "default.replication.factor"
    )]
    default_replication_factor: Option<i16>,
    #[serde(alias = "message_max_bytes", alias = "message.max.bytes")]
    message_max_bytes: Option<usize>,
    #[serde(alias = "socket_request_max_bytes", alias = "socket.request.max.bytes")]
    socket_request_max_bytes: Option<usize>,
    #[serde(alias = "max_connections")]
    max_connections: Option<usize>,
    #[serde(alias = "max_inflight_bytes")]
    max_inflight_bytes: Option<usize>,
    #[serde(alias = "connections_max_idle_ms", alias = "connections.max.idle.ms")]
    connections_max_idle_ms: Option<i64>,
    #[serde(alias = "fetch_max_bytes", alias = "fetch.max.bytes")]
    fetch_max_bytes: Option<i32>,
    #[serde(alias = "min_free_disk_bytes")]
    min_free_disk_bytes: Option<u64>,
    #[serde(alias = "log_flush")]
    log_flush: Option<String>,
    #[serde(alias = "log_segment_bytes", alias = "log.segment.bytes")]
    log_segment_bytes: Option<u64>,
    #[serde(alias = "log_retention_ms", alias = "log.retention.ms")]
    log_retention_ms: Option<i64>,
    #[serde(alias = "read_cache_bytes")]
    read_cache_bytes: Option<usize>,
    #[serde(alias = "min_insync_replicas", alias = "min.insync.replicas")]
    min_insync_replicas: Option<i32>,
    #[serde(
        alias = "broker_session_timeout_ms",
        alias = "broker.session.timeout.ms"
    )]
    broker_session_timeout_ms: Option<u64>,
    #[serde(alias = "broker_heartbeat_interval_ms")]
    broker_heartbeat_interval_ms: Option<u64>,
    #[serde(alias = "replica_lag_time_max_ms", alias = "replica.lag.time.max.ms")]
    replica_lag_time_max_ms: Option<u64>,
    #[serde(alias = "leader_imbalance_check_interval_ms")]
    leader_imbalance_check_interval_ms: Option<u64>,
    #[serde(alias = "controlled_shutdown_timeout_ms")]
    controlled_shutdown_timeout_ms: Option<u64>,
    #[serde(alias = "log_cleaner_enable", alias = "log.cleaner.enable")]
    log_cleaner_enable: Option<bool>,
    #[serde(alias = "log_cleaner_backoff_ms", alias = "log.cleaner.backoff.ms")]
    log_cleaner_backoff_ms: Option<u64>,
    #[serde(
        alias = "log_cleaner_dedupe_buffer_size",
        alias = "log.cleaner.dedupe.buffer.size"
    )]
    log_cleaner_dedupe_buffer_size: Option<usize>,
    #[serde(alias = "log_cleaner_shares")]
    log_cleaner_shares: Option<usize>,
    #[serde(
        alias = "log_cleaner_io_max_bytes_per_second",
        alias = "log.cleaner.io.max.bytes.per.second"
    )]
    log_cleaner_io_max_bytes_per_second: Option<u64>,
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
    pub listen: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: u16,
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
    pub groups: crate::group::config::GroupConfig,
}

pub fn parse_flush(s: &str) -> Result<FlushSetting, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("always") {
        return Ok(FlushSetting::Always);
    }
    let ms = s.strip_suffix("ms").unwrap_or(s);
    ms.parse::<u64>()
        .map(FlushSetting::IntervalMs)
        .map_err(|_| format!("log-flush must be `always` or an interval in ms, got `{s}`"))
}

/// `1@127.0.0.1:10092,2@127.0.0.1:10093`
pub fn parse_quorum(s: &str) -> Result<Vec<(i32, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("controller-quorum entry `{part}` is not ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .map_err(|_| format!("controller-quorum id `{id}` is not a number"))?;
        if !addr.contains(':') {
            return Err(format!("controller-quorum address `{addr}` has no port"));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("controller-quorum lists node {id} twice"));
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        return Err("controller-quorum is empty".into());
    }
    Ok(out)
}

fn resolve_addr(s: &str, what: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{what} `{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} `{s}` resolves to no address"))
}

/// A cluster id as Kafka writes them (base64url, `[A-Za-z0-9_-]`), at most 64 characters: it
/// travels in every controller connection's greeting and in Metadata responses.
pub fn parse_cluster_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "cluster-id `{s}` must be 1 to 64 characters of A-Z, a-z, 0-9, - and _"
        ))
    }
}

fn split_host_port(s: &str, what: &str) -> Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{what} `{s}` is not HOST:PORT"))?;
    let port = p
        .parse()
        .map_err(|_| format!("{what} `{s}` has a bad port"))?;
    Ok((h.trim_matches(|c| c == '[' || c == ']').to_string(), port))
}

impl BrokerConfig {
    pub fn resolve(args: &ServerArgs) -> Result<BrokerConfig, String> {
        let (file, group_file) = match &args.config {
            Some(path) => {
                let bad = |e: String| format!("config file {}: {e}", path.display());
                let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                let mut table =
                    toml::from_str::<toml::Table>(&text).map_err(|e| bad(e.to_string()))?;
                let groups = crate::group::config::take_from_file(&mut table).map_err(bad)?;
                let file = toml::Value::Table(table).try_into::<FileConfig>();
                (file.map_err(|e| bad(e.to_string()))?, groups)
            }
            None => Default::default(),
        };
        let node_id = args.node_id.or(file.node_id).unwrap_or(1);
        let listen_s = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:9092".into());
        let listen = resolve_addr(&listen_s, "listen")?;
        let advertise_s = args
            .advertise
            .clone()
            .or(file.advertise)
            .unwrap_or_else(|| listen_s.clone());
        let (advertise_host, advertise_port) = split_host_port(&advertise_s, "advertise")?;
        let controller_listen = match args.controller_listen.clone().or(file.controller_listen) {
            Some(s) => resolve_addr(&s, "controller-listen")?,
            None => {
                let port = listen.port().checked_add(1000).ok_or_else(|| {
                    "listen port + 1000 overflows; set --controller-listen".to_string()
                })?;
                SocketAddr::new(listen.ip(), port)
            }
        };
        let controller_quorum = match args.controller_quorum.clone().or(file.controller_quorum) {
            Some(s) => parse_quorum(&s)?,
            None => vec![(node_id, controller_listen.to_string())],
        };
        let metrics_listen = match args.metrics_listen.clone().or(file.metrics_listen) {
            Some(s) if s.trim().eq_ignore_ascii_case("none") => None,
            Some(s) => Some(resolve_addr(&s, "metrics-listen")?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
        };
        let cluster_id = match args.cluster_id.clone().or(file.cluster_id) {
            Some(s) => Some(parse_cluster_id(&s)?),
            None => None,
        };
        if !controller_quorum.iter().any(|(id, _)| *id == node_id) {
            // A node outside the voter list joins later as a learner (cluster add-node).
            tracing::info!(
                node_id,
                "this node is not in --controller-quorum; it will wait to be added"
            );
        }
        let avail = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = args
            .cores
            .or(file.cores)
            .unwrap_or_else(|| avail.saturating_sub(1).max(1));
        if cores == 0 {
            return Err("cores must be at least 1".into());
        }
        let pin = if args.no_pin {
            false
        } else if args.pin {
            true
        } else {
            file.pin.unwrap_or(true)
        };
        let log_flush = match args.log_flush.clone().or(file.log_flush) {
            Some(s) => parse_flush(&s)?,
            None => FlushSetting::IntervalMs(1000),
        };
        let num_partitions = args.num_partitions.or(file.num_partitions).unwrap_or(1);
        if num_partitions < 1 {
            return Err("num-partitions must be at least 1".into());
        }
        let default_replication_factor = args
            .default_replication_factor
            .or(file.default_replication_factor)
            .unwrap_or(1);
        if default_replication_factor < 1 {
            return Err("default-replication-factor must be at least 1".into());
        }
        Ok(BrokerConfig {
            node_id,
            listen,
            advertise_host,
            advertise_port,
            data_dir: absolute_dir(
                args.data_dir
                    .clone()
                    .or(file.data_dir)
                    .unwrap_or_else(|| PathBuf::from("data")),
            )?,
            cores,
            pin,
            controller_listen,
            controller_quorum,
            metrics_listen,
            cluster_id,
            cluster_secret_file: args
                .cluster_secret_file
                .clone()
                .or(file.cluster_secret_file),
            rack: args.rack.clone().or(file.rack),
            auto_create_topics_enable: args
                .auto_create_topics_enable
                .or(file.auto_create_topics_enable)
                .unwrap_or(true),
            num_partitions,
            default_replication_factor,
            message_max_bytes: args
                .message_max_bytes
                .or(file.message_max_bytes)
                .unwrap_or(1_048_588),
            socket_request_max_bytes: args
                .socket_request_max_bytes
                .or(file.socket_request_max_bytes)
                .unwrap_or(100 * 1024 * 1024),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000),
            max_inflight_bytes: args
                .max_inflight_bytes
                .or(file.max_inflight_bytes)
                .unwrap_or(64 * 1024 * 1024),
            connections_max_idle_ms: match args
                .connections_max_idle_ms
                .or(file.connections_max_idle_ms)
                .unwrap_or(600_000)
            {
                ms if ms < 0 => None,
                0 => return Err("connections-max-idle-ms must be positive, or -1 for never".into()),
                ms => Some(ms as u64),
            },
            fetch_max_bytes: match args.fetch_max_bytes.or(file.fetch_max_bytes) {
                Some(n) if n < 1024 => return Err("fetch-max-bytes must be at least 1024".into()),
                Some(n) => n,
                None => 57_671_680,
            },
            min_free_disk_bytes: args.min_free_disk_bytes.or(file.min_free_disk_bytes),
            log_flush,
            log_segment_bytes: args
                .log_segment_bytes
                .or(file.log_segment_bytes)
                .unwrap_or(1 << 30),
            log_retention_ms: match args.log_retention_ms.or(file.log_retention_ms) {
                Some(v) if v < 0 => None,
                Some(v) => Some(v),
                None => Some(7 * 24 * 3600 * 1000),
            },
            read_cache_bytes: args
                .read_cache_bytes
                .or(file.read_cache_bytes)
                .unwrap_or(256 << 20),
            min_insync_replicas: args
                .min_insync_replicas
                .or(file.min_insync_replicas)
                .unwrap_or(1),
            broker_session_timeout_ms: args
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms)
                .unwrap_or(9000),
            broker_heartbeat_interval_ms: args
                .broker_heartbeat_interval_ms
                .or(file.broker_heartbeat_interval_ms)
                .unwrap_or(1000),
            replica_lag_time_max_ms: args
                .replica_lag_time_max_ms
                .or(file.replica_lag_time_max_ms)
                .unwrap_or(30_000),
            leader_imbalance_check_interval_ms: args
                .leader_imbalance_check_interval_ms
                .or(file.leader_imbalance_check_interval_ms)
                .unwrap_or(60_000),
            controlled_shutdown_timeout_ms: args
                .controlled_shutdown_timeout_ms
                .or(file.controlled_shutdown_timeout_ms)
                .unwrap_or(30_000),
            log_cleaner_enable: args
                .log_cleaner_enable
                .or(file.log_cleaner_enable)
                .unwrap_or(true),
            log_cleaner_backoff_ms: args
                .log_cleaner_backoff_ms
                .or(file.log_cleaner_backoff_ms)
                .unwrap_or(15_000),
            // Kafka's minimum map is 1 MiB per cleaner thread; less cannot do useful work.
            log_cleaner_dedupe_buffer_size: args
                .log_cleaner_dedupe_buffer_size
                .or(file.log_cleaner_dedupe_buffer_size)
                .unwrap_or(32 << 20)
                .max(1 << 20),
            log_cleaner_shares: args
                .log_cleaner_shares
                .or(file.log_cleaner_shares)
                .unwrap_or(50)
                .clamp(1, 1000),
            log_cleaner_io_max_bytes_per_second: args
                .log_cleaner_io_max_bytes_per_second
                .or(file.log_cleaner_io_max_bytes_per_second)
                .unwrap_or(0),
            groups: crate::group::config::GroupConfig::resolve(&args.groups, &group_file)?,
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

/// A path option made absolute against the working directory at start-up. Every path the broker
/// keeps is absolute: glommio's `Directory::open` passes a relative path to `openat(-1, …)`, which
/// fails with EBADF, and a later change of working directory must not move the data.
fn absolute_dir(p: PathBuf) -> Result<PathBuf, String> {
    std::path::absolute(&p).map_err(|e| format!("data dir {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_parses_and_rejects_garbage() {
        let q = parse_quorum("1@127.0.0.1:10092,2@127.0.0.1:10093").unwrap();
        assert_eq!(
            q,
            vec![(1, "127.0.0.1:10092".into()), (2, "127.0.0.1:10093".into())]
        );
        assert!(parse_quorum("x@1:2").is_err());
        assert!(parse_quorum("1@host").is_err());
        assert!(parse_quorum("1@a:1,1@b:2").is_err());
    }

    #[test]
    fn the_cluster_secret_file_comes_from_the_flag_or_the_file() {
        let c = with_file(
            "cluster-secret-file = \"/etc/chronik/secret\"",
            ServerArgs::default(),
        )
        .unwrap();
        assert_eq!(
            c.cluster_secret_file.as_deref(),
            Some(std::path::Path::new("/etc/chronik/secret"))
        );
        let flag = ServerArgs {
            cluster_secret_file: Some("/from/the/flag".into()),
            ..Default::default()
        };
        let c = with_file("cluster-secret-file = \"/etc/chronik/secret\"", flag).unwrap();
        assert_eq!(
            c.cluster_secret_file.as_deref(),
            Some(std::path::Path::new("/from/the/flag"))
        );
        let c = with_file("", ServerArgs::default()).unwrap();
        assert_eq!(c.cluster_secret_file, None);
    }

    #[test]
    fn a_cluster_id_comes_from_the_flag_or_the_file_and_garbage_is_refused() {
        let c = with_file(
            "cluster-id = \"MkU3OEVBNTcwNTJENDM2Qg\"",
            ServerArgs::default(),
        )
        .unwrap();
        assert_eq!(c.cluster_id.as_deref(), Some("MkU3OEVBNTcwNTJENDM2Qg"));
        let flag = ServerArgs {
            cluster_id: Some("from-the-flag".into()),
            ..Default::default()
        };
        let c = with_file("cluster-id = \"from-the-file\"", flag).unwrap();
        assert_eq!(c.cluster_id.as_deref(), Some("from-the-flag"));
        assert_eq!(
            BrokerConfig::resolve(&ServerArgs::default())
                .unwrap()
                .cluster_id,
            None
        );
        for bad in ["", "has space", "slash/y", &"x".repeat(65)] {
            let args = ServerArgs {
                cluster_id: Some(bad.to_string()),
                ..Default::default()
            };
            let e = BrokerConfig::resolve(&args).unwrap_err();
            assert!(e.contains("cluster-id"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn no_flags_give_a_single_node_on_9092() {
        let c = BrokerConfig::resolve(&ServerArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.controller_listen.to_string(), "127.0.0.1:10092");
        assert_eq!(
            c.controller_quorum,
            vec![(1, "127.0.0.1:10092".to_string())]
        );
        assert!(c.cores >= 1);
        assert_eq!(c.log_flush, FlushSetting::IntervalMs(1000));
    }

    #[test]
    fn metrics_listen_defaults_to_9644_and_none_turns_it_off() {
        let c = BrokerConfig::resolve(&ServerArgs::default()).unwrap();
        assert_eq!(c.metrics_listen.unwrap().to_string(), "127.0.0.1:9644");
        let c = with_file(
            "metrics-listen = \"127.0.0.1:19644\"",
            ServerArgs::default(),
        )
        .unwrap();
        assert_eq!(c.metrics_listen.unwrap().to_string(), "127.0.0.1:19644");
        let off = ServerArgs {
            metrics_listen: Some("none".into()),
            ..Default::default()
        };
        assert_eq!(
            with_file("metrics-listen = \"127.0.0.1:19644\"", off)
                .unwrap()
                .metrics_listen,
            None
        );
        let bad = ServerArgs {
            metrics_listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(BrokerConfig::resolve(&bad)
            .unwrap_err()
            .contains("metrics-listen"));
    }

    fn with_file(text: &str, args: ServerArgs) -> Result<BrokerConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        BrokerConfig::resolve(&ServerArgs {
            config: Some(path),
            ..args
        })
    }

    #[test]
    fn a_toml_file_configures_a_cluster_node_and_flags_override_it() {
        let text = r#"
            node-id = 2
            listen = "127.0.0.1:19093"
            controller_listen = "127.0.0.1:20093"
            controller-quorum = "1@127.0.0.1:20092,2@127.0.0.1:20093,3@127.0.0.1:20094"
            "min.insync.replicas" = 2
            replica-lag-time-max-ms = 5000
        "#;
        let c = with_file(text, ServerArgs::default()).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.listen.to_string(), "127.0.0.1:19093");
        assert_eq!(c.controller_listen.to_string(), "127.0.0.1:20093");
        assert_eq!(c.controller_quorum.len(), 3);
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(c.replica_lag_time_max_ms, 5000);
        let flags = ServerArgs {
            listen: Some("127.0.0.1:19999".into()),
            min_insync_replicas: Some(1),
            ..Default::default()
        };
        let c = with_file(text, flags).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:19999");
        assert_eq!(c.min_insync_replicas, 1);
        assert_eq!(c.node_id, 2);
    }

    #[test]
    fn a_toml_file_with_an_unknown_key_or_bad_syntax_is_refused_by_name() {
        let e = with_file("node-id = 1\nlisten-port = 9092\n", ServerArgs::default())
            .err()
            .unwrap();
        assert!(e.contains("listen-port") && e.contains("node.toml"), "{e}");
        let e = with_file("node-id = \n", ServerArgs::default())
            .err()
            .unwrap();
        assert!(e.contains("node.toml"), "{e}");
    }

    #[test]
    fn flush_setting_parses() {
        assert_eq!(parse_flush("always").unwrap(), FlushSetting::Always);
        assert_eq!(parse_flush("250").unwrap(), FlushSetting::IntervalMs(250));
        assert!(parse_flush("sometimes").is_err());
    }

    // Group settings through the broker's flags and file (`group::config` holds their parsing).
    #[test]
    fn the_broker_flags_and_config_file_carry_group_settings() {
        use super::{BrokerConfig, Cli};
        use clap::Parser;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chronik.toml");
        std::fs::write(
            &path,
            "num-partitions = 2\noffsets.retention.minutes = 3\n\"group.initial.rebalance.delay.ms\" = 0\n",
        )
        .expect("write");
        let path_s = path.display().to_string();
        let cli = Cli::try_parse_from([
            "chronik-server",
            "--config",
            &path_s,
            "--offsets-topic-num-partitions",
            "7",
        ])
        .expect("flags parse");
        let c = BrokerConfig::resolve(&cli.server).expect("resolves");
        assert_eq!(c.num_partitions, 2);
        assert_eq!(c.groups.offsets_partitions, 7);
        assert_eq!(
            c.groups.offsets_retention,
            std::time::Duration::from_secs(180)
        );
        assert_eq!(c.groups.initial_rebalance_delay, std::time::Duration::ZERO);
        // A misspelt group key is still an unknown key of the file.
        std::fs::write(&path, "offsets.retention.minutez = 3\n").expect("write");
        assert!(BrokerConfig::resolve(&cli.server).is_err());
    }

    #[test]
    fn the_example_config_file_resolves() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/chronik.toml");
        let args = super::ServerArgs {
            config: Some(path),
            ..Default::default()
        };
        let c = super::BrokerConfig::resolve(&args).expect("tuning/chronik.toml resolves");
        assert_eq!(c.groups.offsets_replication_factor, Some(3));
    }
}
