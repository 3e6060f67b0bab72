//! Starting and stopping a broker: the controller thread, one glommio executor per shard, and
//! the SO_REUSEPORT listeners.

use crate::config::BrokerConfig;
use crate::net::conn;
use crate::services::Services;
use crate::shard::{run_inbox, Shard, ShardTask};
use chronik_raft::image::ListenerEndpoint;
use chronik_raft::rpc_tls::ControllerTls;
use chronik_raft::{BrokerRegistration, Controller, ControllerConfig};
use glommio::{LocalExecutorBuilder, Placement};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A running broker. `stop` shuts it down cleanly.
pub struct Broker {
    controller: Controller,
    shard_threads: Vec<glommio::ExecutorJoinHandle<()>>,
    stop_senders: Vec<async_channel::Sender<()>>,
    /// Each shard's receiver of reloaded TLS configs (empty without SSL listeners).
    tls_senders: Vec<async_channel::Sender<TlsReload>>,
    tls_files: Option<crate::config::tls::TlsFiles>,
    /// Replica fetchers use TLS (their client config is reloaded too).
    inter_broker_tls: bool,
    /// `--controller-tls`: the controller port's configs, reloaded with the others.
    controller_tls: Option<Arc<ControllerTls>>,
    /// Bound of `controlled_shutdown`; zero skips it.
    controlled_shutdown_timeout: Duration,
    metrics: Option<crate::metrics::http::MetricsServer>,
}

pub fn controller_config(
    cfg: &BrokerConfig,
    cluster_secret: chronik_raft::secret::ClusterSecret,
    tls: Option<Arc<ControllerTls>>,
) -> ControllerConfig {
    ControllerConfig {
        node_id: cfg.node_id,
        raft_listen: cfg.controller_listen,
        quorum: cfg.controller_quorum.clone(),
        data_dir: cfg.data_dir.join("__raft"),
        broker: registration(cfg),
        session_timeout_ms: cfg.broker_session_timeout_ms,
        heartbeat_interval_ms: cfg.broker_heartbeat_interval_ms,
        default_num_partitions: cfg.num_partitions,
        default_replication_factor: cfg.default_replication_factor,
        cluster_id: cfg.cluster_id.clone().unwrap_or_default(),
        cluster_secret,
        tls,
        pin_core: cfg.pin.then_some(0),
    }
}

/// What this broker registers: its inter-broker endpoint, and every advertised listener.
fn registration(cfg: &BrokerConfig) -> BrokerRegistration {
    let ib = cfg.listeners.inter_broker();
    // resolve() checked that the inter-broker listener is advertised.
    let (host, port) = ib
        .advertised
        .clone()
        .unwrap_or_else(|| (ib.bind.ip().to_string(), ib.bind.port()));
    BrokerRegistration {
        id: cfg.node_id,
        host,
        port,
        rack: cfg.rack.clone(),
        listeners: cfg
            .listeners
            .all
            .iter()
            .filter_map(|l| {
                let (host, port) = l.advertised.clone()?;
                Some(ListenerEndpoint {
                    name: l.name.clone(),
                    host,
                    port,
                })
            })
            .collect(),
    }
}

/// The secret this node's controller authenticates with (see `chronik_raft::secret::resolve`).
fn cluster_secret(cfg: &BrokerConfig) -> Result<chronik_raft::secret::ClusterSecret, String> {
    use chronik_raft::secret::{resolve, Origin, SECRET_FILE};
    let sole_voter = matches!(cfg.controller_quorum.as_slice(), [(id, _)] if *id == cfg.node_id);
    let (secret, origin) = resolve(
        &cfg.data_dir,
        cfg.cluster_secret_file.as_deref(),
        sole_voter,
    )?;
    let copy = cfg.data_dir.join(SECRET_FILE);
    match origin {
        Origin::Generated => tracing::info!(
            file = %copy.display(),
            "generated the cluster secret of this new cluster; give this file to new nodes and \
             operator commands with --cluster-secret-file"
        ),
        Origin::Given | Origin::Stored => {
            tracing::info!(file = %copy.display(), "controller port authenticates with the cluster secret")
        }
    }
    Ok(secret)
}

impl Broker {
    pub fn start(cfg: BrokerConfig) -> Result<Broker, String> {
        // Bind both ports once up front so a taken one is reported, with its address, before
        // anything is created or started.
        for l in &cfg.listeners.all {
            crate::net::listener::wait_free(l.bind).map_err(|e| {
                format!(
                    "cannot listen for Kafka clients on {} (listener {}): {e}",
                    l.bind, l.name
                )
            })?;
        }
        // Read the certificate and key before anything starts, so a bad file is reported at once.
        let tls = match &cfg.tls {
            Some(files) if cfg.listeners.all.iter().any(|l| l.protocol.uses_tls()) => {
                Some(crate::net::tls::load(files)?)
            }
            _ => None,
        };
        let controller_tls = match &cfg.tls {
            Some(files) if cfg.controller_tls => {
                let (server, client) = crate::net::tls::load_controller(files)?;
                Some(ControllerTls::new(server, client))
            }
            _ => None,
        };
        // Replica fetchers connect with TLS when the inter-broker listener is SSL.
        let fetcher_tls = match &cfg.tls {
            Some(files) if cfg.listeners.inter_broker().protocol.uses_tls() => {
                Some(crate::net::tls::load_client(files)?)
            }
            _ => None,
        };
        crate::net::listener::wait_free(cfg.controller_listen).map_err(|e| {
            format!(
                "cannot listen for the controller on {}: {e}",
                cfg.controller_listen
            )
        })?;
        let metrics_listener = match cfg.metrics_listen {
            Some(addr) => Some(crate::metrics::http::bind(addr).map_err(|e| {
                format!(
                    "cannot serve metrics on {addr}: {e} (give each node on a machine its own \
                     --metrics-listen, or `none`)"
                )
            })?),
            None => None,
        };
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| format!("data dir {}: {e}", cfg.data_dir.display()))?;
        replay_journals(&cfg.data_dir)?;
        let tuning = chronik_raft::Tuning {
            leader_rebalance_interval: (cfg.leader_imbalance_check_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.leader_imbalance_check_interval_ms)),
            ..Default::default()
        };
        let controlled_shutdown_timeout = Duration::from_millis(cfg.controlled_shutdown_timeout_ms);
        let secret = cluster_secret(&cfg)?;
        let controller_cfg = controller_config(&cfg, secret, controller_tls.clone());
        let controller = chronik_raft::start_with(controller_cfg, tuning)
            .map_err(|e| format!("controller failed to start: {e}"))?;
        let n = cfg.cores;
        let mut inbox_tx = Vec::with_capacity(n);
        let mut inbox_rx = Vec::with_capacity(n);
        for _ in 0..n {
            // Unbounded: a bounded mesh can deadlock when two shards fill each other's queues
            // (glommio issue 555); the senders are request tasks that are themselves bounded.
            let (tx, rx) = async_channel::unbounded::<ShardTask<Services>>();
            inbox_tx.push(tx);
            inbox_rx.push(rx);
        }
        // Up before the wait for registration, so /health can say why the broker is not
        // serving yet.
        let metrics = match metrics_listener {
            Some(l) => {
                let sources = crate::metrics::scrape::Sources {
                    shards: inbox_tx.clone(),
                    controller: controller.clone(),
                    node_id: cfg.node_id,
                    controller_contact_max: Duration::from_millis(
                        cfg.broker_heartbeat_interval_ms.saturating_mul(3).max(1000),
                    ),
                };
                Some(
                    crate::metrics::http::MetricsServer::start(l, sources)
                        .map_err(|e| format!("cannot start the metrics endpoint: {e}"))?,
                )
            }
            None => None,
        };
        wait_for_registration(&controller, cfg.node_id);
        bootstrap_scram_users(&controller, &cfg.sasl.bootstrap_users)?;
        let avail = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shard_threads = Vec::new();
        let mut stop_senders = Vec::new();
        let mut tls_senders = Vec::new();
        let tls_files = cfg.tls.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        for (id, rx) in inbox_rx.into_iter().enumerate() {
            let placement = if cfg.pin {
                // Core 0 is the controller's; shards take the next ones.
                Placement::Fixed((id + 1) % avail)
            } else {
                Placement::Unbound
            };
            let cfg = Rc::new(cfg.clone());
            let cfg_send = (*cfg).clone();
            drop(cfg);
            let peers = inbox_tx.clone();
            let controller = controller.clone();
            let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
            stop_senders.push(stop_tx);
            let shard_tls = match &tls {
                Some(config) => {
                    let (tx, rx) = async_channel::bounded(1);
                    tls_senders.push(tx);
                    Some((config.clone(), rx))
                }
                None => None,
            };
            let ready = ready_tx.clone();
            let shard_fetcher_tls = fetcher_tls.clone();
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{id}"))
                .spawn(move || async move {
                    let channels = ShardChannels {
                        peers,
                        inbox: rx,
                        stop: stop_rx,
                        tls: shard_tls,
                        fetcher_tls: shard_fetcher_tls,
                        ready,
                    };
                    run_shard(id, cfg_send, controller, channels).await
                })
                .map_err(|e| {
                    format!(
                        "cannot start shard {id}: {e}. io_uring needs enough locked memory: \
                         raise `ulimit -l` / LimitMEMLOCK (see tuning/check.sh)"
                    )
                })?;
            shard_threads.push(handle);
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    // Every shard thread ended without reporting: the executor itself could not
                    // start, which in practice is io_uring setup (locked memory, or io_uring
                    // disabled). Join them to report glommio's own error.
                    let reason = shard_threads
                        .into_iter()
                        .filter_map(|t| t.join().err())
                        .map(|e| e.to_string())
                        .next()
                        .unwrap_or_else(|| "unknown error".into());
                    return Err(format!(
                        "a shard executor failed to start: {reason}. io_uring needs locked \
                         memory (at least 512 KiB per shard): raise `ulimit -l` / LimitMEMLOCK, \
                         and check kernel.io_uring_disabled (run tuning/check.sh)"
                    ));
                }
            }
        }
        Ok(Broker {
            controller,
            shard_threads,
            stop_senders,
            tls_senders,
            tls_files,
            inter_broker_tls: fetcher_tls.is_some(),
            controller_tls,
            controlled_shutdown_timeout,
            metrics,
        })
    }

    /// Re-reads the TLS certificate, key and CA files (SIGHUP) and hands the new config to every
    /// shard; connections accepted from then on use it, open ones keep theirs. A bad file is
    /// reported and the old config stays.
    pub fn reload_tls(&self) -> Result<(), String> {
        let Some(files) = &self.tls_files else {
            return Ok(());
        };
        // Everything is read before anything is replaced: one bad file keeps all the old.
        let listeners = match self.tls_senders.is_empty() {
            true => None,
            false => Some(crate::net::tls::load(files)?),
        };
        let fetchers = match self.inter_broker_tls {
            true => Some(crate::net::tls::load_client(files)?),
            false => None,
        };
        let controller = match &self.controller_tls {
            Some(_) => Some(crate::net::tls::load_controller(files)?),
            None => None,
        };
        if let (Some(slot), Some((server, client))) = (&self.controller_tls, controller) {
            slot.replace(server, client);
        }
        let Some(server) = listeners else {
            return Ok(());
        };
        for s in &self.tls_senders {
            // bounded(1): a reload the shard has not taken yet is replaced by this one.
            let _ = s.force_send((server.clone(), fetchers.clone()));
        }
        Ok(())
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Kafka's controlled shutdown, before `stop`: the controller moves leadership of this
    /// broker's partitions to other in-sync replicas and drops it from the ISRs it shares, and
    /// every live broker serves that before this returns (bounded by
    /// `--controlled-shutdown-timeout-ms`). Meanwhile the shards keep serving: produce for a
    /// moved partition gets NOT_LEADER_OR_FOLLOWER, so clients refresh metadata and go to the
    /// new leader while this broker is still up.
    pub fn controlled_shutdown(&self) {
        use chronik_raft::shutdown::ShutdownOutcome;
        let timeout = self.controlled_shutdown_timeout;
        if timeout.is_zero() {
            return;
        }
        let start = std::time::Instant::now();
        if self.controller.raft_leader() == Some(self.controller.node_id()) {
            // openraft 0.9 has no leader transfer: the other voters elect a new active
            // controller within an election timeout after this node stops.
            tracing::info!(
                "this node is the active controller; the other voters take over when it stops"
            );
        }
        let outcome = futures_lite::future::block_on(self.controller.controlled_shutdown(timeout));
        let ms = start.elapsed().as_millis() as u64;
        match outcome {
            ShutdownOutcome::Moved {
                leading,
                sharing,
                confirmed,
            } => tracing::info!(
                leading,
                isrs = sharing,
                brokers_confirmed = confirmed,
                ms,
                "controlled shutdown: leadership and ISR places handed to other replicas"
            ),
            ShutdownOutcome::NothingToMove => {
                tracing::info!(
                    "controlled shutdown: no partition shares its ISR with another broker"
                )
            }
            ShutdownOutcome::NotRegistered => {
                tracing::info!("controlled shutdown: not registered, nothing to hand over")
            }
            ShutdownOutcome::Refused(e) => {
                tracing::warn!(ms, "controlled shutdown refused by the controller: {e}")
            }
            ShutdownOutcome::Failed(e) => tracing::warn!(
                ms,
                "controlled shutdown did not complete ({e}); stopping anyway, the controller \
                 fences this broker after its session timeout"
            ),
        }
    }

    /// Stops accepting, lets in-flight requests finish, flushes and closes every log.
    pub fn stop(mut self) {
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
        for s in &self.stop_senders {
            let _ = s.send_blocking(());
        }
        for t in self.shard_threads {
            let _ = t.join();
        }
        self.controller.shutdown();
    }
}

/// Serve clients only once this node's metadata has caught up: its own registration (committed
/// after everything it missed while down) must be applied to the local image, as Kafka brokers
/// wait to catch up with the metadata log before unfencing. Keyed on this process's
/// registration, not on what the image shows: right after a restart the image is the one
/// recovered from disk, which still holds the previous (unfenced) registration.
fn wait_for_registration(controller: &Controller, node_id: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if controller.registration_applied()
            && controller
                .current_image()
                .broker(node_id)
                .is_some_and(|b| !b.fenced)
        {
            return;
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(
                node_id,
                "not registered with the controller after 30 s (no quorum?); serving anyway"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--sasl-bootstrap-users`: each user's SCRAM-SHA-256 and -512 credentials (4096 iterations),
/// committed once per cluster (`Command::BootstrapScramUsers`; a cluster already bootstrapped
/// ignores it) and applied here before the listeners open, so the users can log in as soon as
/// the broker serves.
fn bootstrap_scram_users(
    controller: &Controller,
    users: &[(String, String)],
) -> Result<(), String> {
    use chronik_raft::{Command, CommandOutcome};
    if users.is_empty() || controller.current_image().scram.bootstrapped {
        return Ok(());
    }
    let mut upserts = Vec::with_capacity(users.len() * 2);
    for (user, password) in users {
        let creds =
            crate::sasl::credentials_of(user, password, chronik_raft::scram::MIN_ITERATIONS)
                .map_err(|e| format!("sasl-bootstrap-users: {user}: {e}"))?;
        upserts.extend(creds);
    }
    let submitted =
        futures_lite::future::block_on(controller.submit(Command::BootstrapScramUsers { upserts }));
    match submitted {
        Ok(s) => {
            if s.index > 0 {
                let _ = futures_lite::future::block_on(controller.wait_applied(s.index));
            }
            match s.outcome {
                CommandOutcome::Users(v) if !v.is_empty() => {
                    for (user, r) in v {
                        if let Err(e) = r {
                            tracing::warn!(%user, "bootstrap user refused: {}", e.message);
                        }
                    }
                    tracing::info!(users = users.len(), "SASL bootstrap users created");
                }
                _ => tracing::info!("SASL users were already bootstrapped; file not applied"),
            }
        }
        Err(e) => tracing::warn!("SASL bootstrap users not committed: {e:?}"),
    }
    Ok(())
}

/// Partitions a shard closes at once when it stops.
const CLOSE_CONCURRENCY: usize = 256;

/// Reloaded TLS configs: the SSL listeners' and, with an SSL inter-broker listener, the replica
/// fetchers'.
type TlsReload = (Arc<rustls::ServerConfig>, Option<Arc<rustls::ClientConfig>>);

/// What a shard thread is handed besides its config.
struct ShardChannels {
    peers: Vec<async_channel::Sender<ShardTask<Services>>>,
    inbox: async_channel::Receiver<ShardTask<Services>>,
    stop: async_channel::Receiver<()>,
    /// The TLS config of SSL listeners, and where reloaded ones arrive.
    tls: Option<(
        Arc<rustls::ServerConfig>,
        async_channel::Receiver<TlsReload>,
    )>,
    /// The client config of replica fetchers (an SSL inter-broker listener).
    fetcher_tls: Option<Arc<rustls::ClientConfig>>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Applies the shard journals a crash left behind to their partition logs (and removes
/// them) before any shard opens a log: afterwards every log holds what it acknowledged, and
/// shards may own other partitions than before (`--cores` changed) without needing the old
/// journals.
fn replay_journals(data_dir: &std::path::Path) -> Result<(), String> {
    let root = data_dir.join(crate::partition::manager::JOURNAL_DIR);
    if !root.exists() {
        return Ok(());
    }
    let data = data_dir.to_path_buf();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("journal-replay")
        .spawn(move || async move {
            chronik_storage::replay_journals(&root, &data, chronik_storage::LogConfig::default())
                .await
        })
        .map_err(|e| format!("cannot start the journal replay: {e}"))?;
    match handle.join() {
        Ok(Ok(report)) => {
            if report.applied > 0 {
                tracing::info!(
                    batches = report.applied,
                    logs = report.logs,
                    "replayed the shard journals of the previous run"
                );
            }
            Ok(())
        }
        Ok(Err(e)) => Err(format!("replaying the shard journals: {e}")),
        Err(_) => Err("the journal replay thread panicked".to_string()),
    }
}

async fn run_shard(id: usize, cfg: BrokerConfig, controller: Controller, ch: ShardChannels) {
    let ShardChannels {
        peers,
        inbox,
        stop,
        tls,
        fetcher_tls,
        ready,
    } = ch;
    let listeners = cfg.listeners.all.clone();
    let runtime = Shard::new(id, peers.len(), Rc::new(cfg), controller.clone());
    let shard = Services::new(runtime, peers);
    // Before the image loop, which starts the fetchers.
    if let Some(config) = fetcher_tls {
        shard.fetchers.set_tls(config);
    }
    glommio::spawn_local(run_inbox(shard.clone(), inbox)).detach();
    glommio::spawn_local(shard.clone().run_image_loop(controller.subscribe())).detach();
    glommio::spawn_local(crate::partition::maintenance::run(shard.replicas.clone())).detach();
    glommio::spawn_local(crate::group::run(shard.groups.clone())).detach();
    // The transaction state partitions this broker leads are loaded at once (transactions a
    // previous coordinator left are resumed), and those past their timeout aborted.
    glommio::spawn_local(crate::txn::coordinator::run_loader(shard.clone())).detach();
    glommio::spawn_local(crate::txn::coordinator::run_expiry(
        shard.clone(),
        std::time::Duration::from_secs(1),
    ))
    .detach();
    glommio::spawn_local(crate::replication::isr::run(shard.replicas.clone())).detach();
    glommio::spawn_local(sweep_idle_connections(shard.clone())).detach();
    // One TLS config slot per shard, shared by its SSL listeners and swapped on reload.
    let tls_slot = tls.map(|(config, reloads)| {
        let slot = Rc::new(std::cell::RefCell::new(crate::net::tls::for_shard(&config)));
        let target = slot.clone();
        let fetchers = shard.fetchers.clone();
        glommio::spawn_local(async move {
            while let Ok((server, client)) = reloads.recv().await {
                *target.borrow_mut() = crate::net::tls::for_shard(&server);
                if let Some(client) = client {
                    fetchers.set_tls(client);
                }
                tracing::info!(shard = id, "TLS certificates reloaded");
            }
        })
        .detach();
        slot
    });
    let mut accepting = Vec::with_capacity(listeners.len());
    for l in &listeners {
        let socket = match crate::net::listener::bind_shard(l.bind) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "shard {id}: cannot listen on {} (listener {}): {e}",
                    l.bind, l.name
                )));
                return;
            }
        };
        let origin = Rc::new(conn::Origin {
            name: Arc::from(l.name.as_str()),
            tls: if l.protocol.uses_tls() {
                tls_slot.clone()
            } else {
                None
            },
            sasl: l.protocol.uses_sasl(),
        });
        tracing::info!(shard = id, listener = %l.name, bind = %l.bind, "shard listening");
        accepting.push(glommio::spawn_local(accept_loop(
            id,
            shard.clone(),
            socket,
            origin,
        )));
    }
    let _ = ready.send(Ok(()));
    let _ = stop.recv().await;
    // Dropping an accept task drops its listener socket.
    for task in accepting {
        drop(task);
    }
    shard.shutting_down.set(true);
    shard.fetchers.stop_all();
    // Give in-flight requests a moment to finish before the logs close; connections waiting
    // for their next request close at once (as Kafka closes its sockets on shutdown).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while shard.connections.get() > 0 && std::time::Instant::now() < deadline {
        shard.idle.expire_all();
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let mut parts = shard.replicas.drain();
    // Closed many at a time: each may wait on fsyncs, which the disk takes together, and a
    // node holding thousands of partitions must stop in seconds.
    while !parts.is_empty() {
        let batch = parts.split_off(parts.len().saturating_sub(CLOSE_CONCURRENCY));
        let closing: Vec<_> = batch
            .into_iter()
            .map(|p| {
                glommio::spawn_local(async move {
                    match Rc::try_unwrap(p) {
                        Ok(p) => p.close().await,
                        Err(p) => {
                            if let Err(e) = p.log.flush().await {
                                tracing::warn!("flush on shutdown: {e}");
                            }
                        }
                    }
                })
            })
            .collect();
        for task in closing {
            task.await;
        }
    }
    // Every log wrote its journaled batches when it closed: the files are released.
    shard.replicas.journal.close().await;
    tracing::info!(shard = id, "shard stopped");
}

/// Accepts on one listener of a shard until the task is dropped.
async fn accept_loop(
    id: usize,
    shard: Rc<Services>,
    listener: glommio::net::TcpListener,
    origin: Rc<conn::Origin>,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shard.connections.get() >= shard.config.max_connections {
                    tracing::warn!(shard = id, "connection limit reached; refusing");
                    drop(stream);
                    continue;
                }
                shard.connections.set(shard.connections.get() + 1);
                glommio::spawn_local(conn::serve(shard.clone(), stream, origin.clone())).detach();
            }
            Err(e) => {
                tracing::warn!(shard = id, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The shard's idle sweeper: one tick a second (see `net::idle`).
async fn sweep_idle_connections(shard: Rc<Services>) {
    let tick = crate::net::idle::TICK.as_millis() as u64;
    let expire = shard
        .config
        .connections_max_idle_ms
        .map(|ms| ms.div_ceil(tick).max(1));
    let mut kicked = 0;
    while !shard.shutting_down.get() {
        glommio::timer::sleep(crate::net::idle::TICK).await;
        // The connections kicked a tick ago have released their buffers by now.
        if kicked > 0 {
            crate::net::idle::return_freed_memory();
        }
        kicked = shard.idle.sweep(expire);
    }
}
