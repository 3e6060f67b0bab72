//! Every broker setting, declared once (see `declare.rs` for what a declaration makes): the flag
//! is the name in kebab-case, the TOML key the same (or with `_` or `.`), the environment
//! variable `CHRONIK_<NAME>`. README's configuration table is checked against these by
//! `config::tests`.

use super::declare::settings;
use std::path::PathBuf;

settings! {
    pub struct BrokerSettings => BrokerValues;

    /// This broker's id (also its controller node id).
    node_id: i32 = "1";
    /// Kafka listener, HOST:PORT: one PLAINTEXT listener (the short form of `--listeners`).
    listen: String = "127.0.0.1:9092";
    /// Address advertised to clients, HOST:PORT (goes with `--listen`).
    advertise: String = ["the listen address"];
    /// listeners: `NAME://HOST:PORT,…`, e.g. `PLAINTEXT://127.0.0.1:9092,SSL://0.0.0.0:9093`; an
    /// empty HOST binds every interface. Instead of `--listen`.
    listeners: String = ["a PLAINTEXT listener on the listen address"];
    /// advertised.listeners: `NAME://HOST:PORT,…`, what clients that came in on each listener
    /// are told; a listener left out is not advertised.
    advertised_listeners: String = ["the listeners"];
    /// listener.security.protocol.map: `NAME:PROTOCOL,…` (PLAINTEXT, SSL); a listener named
    /// after a protocol needs no entry.
    listener_security_protocol_map: String = ["none"];
    /// inter.broker.listener.name: the listener replica fetchers connect to (an SSL one needs
    /// `--ssl-ca-file` to verify the other brokers).
    inter_broker_listener_name: String = ["PLAINTEXT if listed, else the first listener"];
    /// ssl.keystore (PEM): the certificate chain SSL listeners present.
    ssl_cert_file: PathBuf = ["none"];
    /// ssl.keystore (PEM): the private key of `--ssl-cert-file` (PKCS#8, PKCS#1 or SEC1).
    ssl_key_file: PathBuf = ["none"];
    /// ssl.truststore (PEM): CAs that vouch for client certificates; needed only to verify
    /// clients.
    ssl_ca_file: PathBuf = ["none"];
    /// ssl.client.auth: `none`, `requested` (verified if shown) or `required`.
    ssl_client_auth: String = "none";
    /// sasl.enabled.mechanisms: what SASL_PLAINTEXT and SASL_SSL listeners offer, of `PLAIN`,
    /// `SCRAM-SHA-256` and `SCRAM-SHA-512`.
    sasl_enabled_mechanisms: String = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512";
    /// The first SASL users of a new cluster: a file of `name:password` lines, each given
    /// SCRAM-SHA-256 and SCRAM-SHA-512 credentials (4096 iterations) once per cluster.
    sasl_bootstrap_users: PathBuf = ["none"];
    /// connections.max.reauth.ms: a SASL session's lifetime (KIP-368): the client must
    /// re-authenticate within it or the broker closes the connection; 0 = sessions never end.
    connections_max_reauth_ms: u64 = "0";
    /// sasl.mechanism.inter.broker.protocol: how replica fetchers log in on a SASL inter-broker
    /// listener.
    sasl_mechanism_inter_broker_protocol: String = "SCRAM-SHA-512";
    /// The SASL user replica fetchers log in as on a SASL inter-broker listener (give it
    /// credentials, e.g. in `--sasl-bootstrap-users`).
    sasl_inter_broker_user: String = ["none"];
    /// A file whose first line is the password of `--sasl-inter-broker-user`.
    sasl_inter_broker_password_file: PathBuf = ["none"];
    /// Check every request against the ACLs (Kafka's `authorizer.class.name` set to the
    /// StandardAuthorizer); off, everyone may do everything and the ACL APIs answer
    /// SECURITY_DISABLED.
    authorizer_enable: bool = "false", arg(
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    );
    /// super.users: principals allowed everything, `;`-separated (`User:admin;User:CN=ops`).
    super_users: String = ["none"];
    /// allow.everyone.if.no.acl.found: a resource no ACL names is open to everyone.
    allow_everyone_if_no_acl_found: bool = "false", arg(
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    );
    /// Data directory (made absolute against the working directory at start-up).
    data_dir: PathBuf = "data";
    /// Number of shard cores.
    cores: usize = ["all cores but the controller's, at least 1"];
    /// Pin shard and controller threads to cores (bare metal); `--pin=false` or `--no-pin`
    /// when several nodes share a machine.
    pin: bool = "true", arg(
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        overrides_with = "no_pin"
    );
    /// Controller (Raft) listener, HOST:PORT.
    controller_listen: String = ["the first listener's port + 1000"];
    /// Mutual TLS on the controller port: controllers and operator commands show a certificate
    /// of `--ssl-ca-file` (with `--ssl-cert-file` / `--ssl-key-file`) and check each other's;
    /// the same on every node.
    controller_tls: bool = "false", arg(
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    );
    /// Prometheus endpoint serving /metrics and /health, HOST:PORT, or `none` to turn it off.
    /// Several nodes on one machine need one port each.
    metrics_listen: String = "127.0.0.1:9644";
    /// Controller voters: `ID@HOST:PORT,…`.
    controller_quorum: String = ["this node alone"];
    /// The cluster's id (`cluster status` prints it). Needed by a node joining a cluster whose
    /// voters are no longer the ones it was first started with; checked against the id kept in
    /// the data dir.
    cluster_id: String = ["derived from the quorum at the first start"];
    /// The cluster's secret file (one or two lines of 64 hex digits), with which controllers
    /// and operator commands authenticate on the controller port; copied to
    /// `<data-dir>/cluster.secret`. Needed at the first start of every node of a multi-node
    /// cluster (the same file on all).
    cluster_secret_file: PathBuf =
        ["the copy in the data dir; a new single-node cluster generates one"];
    /// Rack of this broker, for rack-aware placement.
    rack: String = ["none"];
    /// auto.create.topics.enable: create topics on Metadata/Produce for unknown names.
    auto_create_topics_enable: bool = "true";
    /// num.partitions: partitions of auto-created topics.
    num_partitions: i32 = "1";
    /// default.replication.factor: replication factor of auto-created topics.
    default_replication_factor: i16 = "1";
    /// message.max.bytes: largest record batch accepted, bytes.
    message_max_bytes: usize = "1048588";
    /// socket.request.max.bytes: largest request frame accepted, bytes; bigger frames close the
    /// connection.
    socket_request_max_bytes: usize = "104857600";
    /// Most client connections per shard.
    max_connections: usize = "10000";
    /// Request bytes in flight per connection before reading pauses.
    max_inflight_bytes: usize = "67108864";
    /// connections.max.idle.ms: close a client connection silent this long with no request in
    /// flight; -1 never.
    connections_max_idle_ms: i64 = "600000", arg(allow_negative_numbers = true);
    /// fetch.max.bytes: most record bytes in one Fetch response, whatever the client asks.
    fetch_max_bytes: i32 = "57671680";
    /// Free space the data disk keeps for the partitions it already holds: below it, topic and
    /// partition creation (CreateTopics, CreatePartitions, auto-create) is refused.
    min_free_disk_bytes: u64 = ["5% of the data disk, at most 268435456"];
    /// Log flush policy: `always` (fdatasync before acks), or an interval in ms.
    log_flush: String = "1000";
    /// log.segment.bytes: segment size, bytes.
    log_segment_bytes: u64 = "1073741824";
    /// log.retention.ms: retention, ms (-1 = forever).
    log_retention_ms: i64 = "604800000", arg(allow_negative_numbers = true);
    /// Read cache per shard, bytes.
    read_cache_bytes: usize = "268435456";
    /// min.insync.replicas default for topics.
    min_insync_replicas: i32 = "1";
    /// broker.session.timeout.ms: the controller fences a broker silent this long, ms.
    broker_session_timeout_ms: u64 = "9000";
    /// Broker heartbeat interval to the controller, ms.
    broker_heartbeat_interval_ms: u64 = "1000";
    /// replica.lag.time.max.ms: a follower this far behind (ms) leaves the ISR.
    replica_lag_time_max_ms: u64 = "30000";
    /// How often the controller moves leadership back to live, in-sync preferred replicas
    /// (Kafka's auto leader rebalance), ms; 0 turns it off.
    leader_imbalance_check_interval_ms: u64 = "60000";
    /// On SIGTERM/SIGINT, how long the broker waits for the controller to move leadership of
    /// its partitions to other in-sync replicas before it stops anyway, ms; 0 stops at once
    /// (Kafka's controlled.shutdown.enable=false).
    controlled_shutdown_timeout_ms: u64 = "30000";
    /// log.cleaner.enable: run the log cleaner for cleanup.policy=compact topics.
    log_cleaner_enable: bool = "true";
    /// log.cleaner.backoff.ms: pause of a shard's cleaner when no log is due, ms.
    log_cleaner_backoff_ms: u64 = "15000";
    /// log.cleaner.dedupe.buffer.size: memory per shard for the cleaner's key→offset map,
    /// bytes (at least 1048576).
    log_cleaner_dedupe_buffer_size: usize = "33554432";
    /// CPU and I/O shares of a shard's cleaner task queue (the request path has 1000; 1 to
    /// 1000).
    log_cleaner_shares: usize = "50";
    /// log.cleaner.io.max.bytes.per.second: cap on a shard cleaner's reads plus writes,
    /// bytes/s; 0 = none.
    log_cleaner_io_max_bytes_per_second: u64 = "0";
}

settings! {
    #[command(next_help_heading = "Consumer groups")]
    pub struct GroupSettings => GroupValues;

    /// offsets.topic.num.partitions: partitions of __consumer_offsets, fixed once it exists.
    offsets_topic_num_partitions: i32 = "50";
    /// offsets.topic.replication.factor: replicas of __consumer_offsets.
    offsets_topic_replication_factor: i16 = ["min(3, live brokers)"];
    /// offsets.retention.minutes: committed offsets of an empty group expire after this.
    offsets_retention_minutes: u64 = "10080";
    /// The same in ms (not a Kafka setting; overrides offsets-retention-minutes, for tests).
    offsets_retention_ms: u64 = ["offsets-retention-minutes"];
    /// offsets.retention.check.interval.ms: how often offsets expire.
    offsets_retention_check_interval_ms: u64 = "600000";
    /// offsets.topic.segment.bytes: segment size of __consumer_offsets when it is created
    /// (the log cleaner compacts its sealed segments).
    offsets_topic_segment_bytes: u64 = "104857600";
    /// offset.metadata.max.bytes: largest metadata string of a committed offset.
    offset_metadata_max_bytes: usize = "4096";
    /// group.initial.rebalance.delay.ms: how long the first join of an empty group waits for
    /// more members.
    group_initial_rebalance_delay_ms: u64 = "3000";
    /// group.min.session.timeout.ms: smallest session timeout a member may ask for.
    group_min_session_timeout_ms: i32 = "6000";
    /// group.max.session.timeout.ms: largest session timeout a member may ask for.
    group_max_session_timeout_ms: i32 = "1800000";
    /// transaction.state.log.num.partitions: partitions of __transaction_state, fixed once it
    /// exists (its replication factor is the offsets topic's).
    transaction_state_log_num_partitions: i32 = "50";
    /// transaction.max.timeout.ms: largest transaction timeout a producer may ask for.
    transaction_max_timeout_ms: i32 = "900000";
}
