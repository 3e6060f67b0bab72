//! The controller: its thread and runtime, the submit path (batching and forwarding), broker
//! registration and heartbeats, fencing, and the handle the broker holds.
//!
//! Threading: openraft needs tokio, so the controller owns one thread running a current-thread
//! tokio runtime (pinned to a core when asked). The broker's glommio shards talk to it only
//! through async-channel (submissions, replies, images), whose futures need no tokio reactor.
//!
//! Submit path: `submit` queues a command; the dispatcher drains everything queued and delivers
//! it as one batch — to the local proposer if this node leads, else in one Forward RPC to the
//! leader. On the leader, the proposer drains its queue (local and forwarded commands alike) and
//! proposes all of it as ONE log entry, so commands arriving together share one fsync.

use crate::command::{
    BrokerRegistration, Command, CommandBatch, CommandOutcome, MetaError, PartitionRef,
    ProposedCommand,
};
pub use crate::error::ControllerError;
use crate::hub::{ImageHub, ImageSubscription, WaitError};
use crate::image::{BrokerId, MetadataImage};
use crate::liveness::Liveness;
use crate::log_store::{LogStore, LogWriterHandle};
use crate::metadata::Defaults;
use crate::network::{
    Credentials, ForwardError, HeartbeatReply, ImageSummary, NetworkFactory, PartitionInfo, Peers,
    RpcRequest, RpcResponse, RpcService,
};
use crate::quorum::QuorumStatus;
use crate::snapshot::SnapshotFiles;
use crate::state_machine::StateMachineStore;
use crate::types::{NodeId, Raft};
use crate::validate::{self, Precheck};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Everything the broker configures about its controller.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// This node's id; equal to its broker id.
    pub node_id: i32,
    /// Where our Raft RPC listens.
    pub raft_listen: SocketAddr,
    /// Initial voters as (node id, "host:port"). One entry: a single-node cluster (same code).
    pub quorum: Vec<(i32, String)>,
    /// Raft log and snapshots live here.
    pub data_dir: PathBuf,
    /// This node's Kafka endpoint; the controller registers it and heartbeats for it.
    pub broker: BrokerRegistration,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub default_num_partitions: i32,
    pub default_replication_factor: i16,
    /// Empty: derived from the initial quorum and persisted in the data dir.
    pub cluster_id: String,
    /// Every controller RPC connection, both ways, proves knowledge of this (network.rs).
    pub cluster_secret: crate::secret::ClusterSecret,
    pub pin_core: Option<usize>,
}

/// Knobs with sensible defaults that the broker need not set.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Take a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (lets slightly lagging followers catch up
    /// without a snapshot transfer).
    pub keep_after_snapshot: u64,
    pub raft_heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long `submit` keeps retrying across leader changes, and `wait_applied` waits.
    pub request_timeout: Duration,
    /// Most commands in one log entry.
    pub max_batch: usize,
    /// How often the active controller moves leadership back to preferred replicas that are
    /// live and in sync (Kafka's auto.leader.rebalance); None disables it.
    pub leader_rebalance_interval: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            raft_heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            request_timeout: Duration::from_secs(30),
            max_batch: 4096,
            leader_rebalance_interval: Some(Duration::from_secs(60)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Log index of the entry that carried the command; `wait_applied(index)` then guarantees
    /// this node's image reflects it.
    pub index: u64,
    pub outcome: CommandOutcome,
}

struct EverywhereWait {
    index: u64,
    deadline: Instant,
    reply: async_channel::Sender<usize>,
}

struct Submission {
    cmd: Command,
    reply: async_channel::Sender<Result<Submitted, ControllerError>>,
    deadline: Instant,
}

/// A command waiting for the leader's proposer.
struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<(u64, CommandOutcome), ForwardError>>,
}

/// The handle: `Send + Sync`, cheap to clone, usable from any runtime.
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: i32,
    hub: Arc<ImageHub>,
    submit_tx: async_channel::Sender<Submission>,
    everywhere_tx: async_channel::Sender<EverywhereWait>,
    quorum_tx: async_channel::Sender<QuorumQuery>,
    /// Raft leader as known locally, -1 when unknown.
    leader: AtomicI64,
    shutdown_tx: async_channel::Sender<()>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    request_timeout: Duration,
    /// Log index of this process's latest committed broker registration (0: none yet).
    registered_at: AtomicU64,
    /// For the checks made before proposing (see `validate::precheck`).
    defaults: Defaults,
    /// With which brokers prove themselves to each other on the Kafka port too.
    secret: crate::secret::ClusterSecret,
    /// Set by `controlled_shutdown`: the broker is leaving, so seeing itself fenced must not
    /// make it register again.
    stopping: AtomicBool,
    /// When the active controller last accepted this broker's heartbeat, in ms since `born`
    /// (0: never), for the broker's health check.
    controller_contact_ms: AtomicU64,
    born: Instant,
}

pub fn start(cfg: ControllerConfig) -> Result<Controller, ControllerError> {
    start_with(cfg, Tuning::default())
}

/// `start` with non-default tuning (tests and benchmarks).
pub fn start_with(cfg: ControllerConfig, tuning: Tuning) -> Result<Controller, ControllerError> {
    if cfg.node_id < 0 {
        return Err(ControllerError::Io(format!(
            "invalid node id {}",
            cfg.node_id
        )));
    }
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir)?;
    let cluster_id = resolve_cluster_id(&cfg)?;
    let mut initial = MetadataImage {
        cluster_id: cluster_id.clone(),
        ..Default::default()
    };
    initial.controller_id = None;
    let hub = Arc::new(ImageHub::new(initial));
    let defaults = Defaults {
        num_partitions: cfg.default_num_partitions,
        replication_factor: cfg.default_replication_factor,
    };
    // Load local state before returning, so the first image is the recovered one.
    let (log_store, log_writer) = LogStore::open(&dir)?;
    let (sm, publisher) = StateMachineStore::open(
        SnapshotFiles::new(&dir.join("snapshots"))?,
        hub.clone(),
        defaults,
    )?;
    let listener = std::net::TcpListener::bind(cfg.raft_listen)?;
    listener.set_nonblocking(true)?;

    let (submit_tx, submit_rx) = async_channel::unbounded();
    let (everywhere_tx, everywhere_rx) = async_channel::unbounded();
    let (quorum_tx, quorum_rx) = async_channel::unbounded();
    let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
    let shared = Arc::new(Shared {
        node_id: cfg.node_id,
        hub: hub.clone(),
        submit_tx,
        everywhere_tx,
        quorum_tx,
        leader: AtomicI64::new(-1),
        shutdown_tx,
        thread: Mutex::new(None),
        request_timeout: tuning.request_timeout,
        registered_at: AtomicU64::new(0),
        defaults,
        secret: cfg.cluster_secret.clone(),
        stopping: AtomicBool::new(false),
        controller_contact_ms: AtomicU64::new(0),
        born: Instant::now(),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let shared2 = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("chronik-controller-{}", cfg.node_id))
        .spawn(move || {
            if let Some(core) = cfg.pin_core {
                pin_to_core(core);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(ControllerError::Io(e.to_string())));
                    return;
                }
            };
            let parts = Parts {
                cfg,
                tuning,
                log_store,
                log_writer,
                sm,
                listener,
                submit_rx,
                everywhere_rx,
                quorum_rx,
                shutdown_rx,
                shared: shared2,
                cluster_id,
            };
            rt.block_on(run(parts, ready_tx));
            // Dropping the runtime cancels every task (listener, connections, loops) and with
            // them the state machine, which ends the image publisher.
            drop(rt);
            let mut publisher = publisher;
            publisher.join();
        })?;
    *lock(&shared.thread) = Some(thread);
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(Controller { shared }),
        Ok(Err(e)) => {
            join(&shared);
            Err(e)
        }
        Err(_) => {
            join(&shared);
            Err(ControllerError::Shutdown)
        }
    }
}

struct Parts {
    cfg: ControllerConfig,
    tuning: Tuning,
    log_store: LogStore,
    log_writer: LogWriterHandle,
    sm: StateMachineStore,
    listener: std::net::TcpListener,
    submit_rx: async_channel::Receiver<Submission>,
    everywhere_rx: async_channel::Receiver<EverywhereWait>,
    quorum_rx: async_channel::Receiver<QuorumQuery>,
    shutdown_rx: async_channel::Receiver<()>,
    shared: Arc<Shared>,
    cluster_id: String,
}

/// State shared by the tasks on the controller thread.
struct Node {
    id: NodeId,
    raft: Raft,
    peers: Peers,
    proposals: mpsc::UnboundedSender<Proposal>,
    liveness: Liveness,
    shared: Arc<Shared>,
    tuning: Tuning,
}

async fn run(p: Parts, ready: std::sync::mpsc::Sender<Result<(), ControllerError>>) {
    let Parts {
        cfg,
        tuning,
        log_store,
        mut log_writer,
        sm,
        listener,
        submit_rx,
        everywhere_rx,
        quorum_rx,
        shutdown_rx,
        shared,
        cluster_id,
    } = p;
    let config = openraft::Config {
        cluster_name: "chronik".into(),
        heartbeat_interval: tuning.raft_heartbeat_ms,
        election_timeout_min: tuning.election_timeout_min_ms,
        election_timeout_max: tuning.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
        max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
        ..Default::default()
    };
    let config = match config.validate() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let _ = ready.send(Err(ControllerError::Raft(e.to_string())));
            return;
        }
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(ControllerError::Io(e.to_string())));
            return;
        }
    };
    let creds = Arc::new(Credentials {
        cluster_id: cluster_id.into(),
        secret: cfg.cluster_secret.clone(),
    });
    let peers = Peers::new(creds.clone());
    let id = cfg.node_id as NodeId;
    let raft = match Raft::new(
        id,
        config,
        NetworkFactory {
            peers: peers.clone(),
        },
        log_store,
        sm,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(ControllerError::Raft(e.to_string())));
            return;
        }
    };
    // Every initial voter initializes with the same membership; openraft accepts that, and
    // refuses (harmlessly) once the log is not empty.
    if cfg.quorum.iter().any(|(n, _)| *n == cfg.node_id) {
        let members: BTreeMap<NodeId, BasicNode> = cfg
            .quorum
            .iter()
            .map(|(n, addr)| (*n as NodeId, BasicNode { addr: addr.clone() }))
            .collect();
        if let Err(e) = raft.initialize(members).await {
            tracing::debug!(error = %e, "raft initialize skipped");
        }
    }
    let (prop_tx, prop_rx) = mpsc::unbounded_channel();
    let node = Arc::new(Node {
        id,
        raft: raft.clone(),
        peers,
        proposals: prop_tx,
        liveness: Liveness::new(Duration::from_millis(cfg.session_timeout_ms)),
        shared: shared.clone(),
        tuning: tuning.clone(),
    });
    tokio::spawn(crate::network::serve(listener, node.clone(), creds));
    tokio::spawn(watch_leader(node.clone()));
    tokio::spawn(propose_loop(node.clone(), prop_rx));
    tokio::spawn(dispatch_loop(node.clone(), submit_rx));
    tokio::spawn(everywhere_loop(node.clone(), everywhere_rx));
    tokio::spawn(quorum_loop(node.clone(), quorum_rx));
    tokio::spawn(broker_loop(
        node.clone(),
        cfg.broker.clone(),
        Duration::from_millis(cfg.heartbeat_interval_ms.max(10)),
    ));
    tokio::spawn(fence_loop(
        node.clone(),
        Duration::from_millis((cfg.heartbeat_interval_ms / 2).clamp(10, 500)),
    ));
    tokio::spawn(expire_waiters(shared.hub.clone()));
    if let Some(every) = tuning.leader_rebalance_interval {
        tokio::spawn(rebalance_loop(node.clone(), every));
    }
    let _ = ready.send(Ok(()));

    let _ = shutdown_rx.recv().await;
    tracing::info!(node = id, "controller shutting down");
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    shared.hub.close();
    shared.submit_tx.close();
    shared.everywhere_tx.close();
    shared.quorum_tx.close();
    log_writer.stop();
}

impl RpcService for Node {
    fn handle(
        self: Arc<Self>,
        req: RpcRequest,
    ) -> Pin<Box<dyn Future<Output = RpcResponse> + Send>> {
        Box::pin(async move {
            match req {
                RpcRequest::AppendEntries(r) => {
                    RpcResponse::AppendEntries(self.raft.append_entries(r).await)
                }
                RpcRequest::Vote(r) => RpcResponse::Vote(self.raft.vote(r).await),
                RpcRequest::InstallSnapshot(r) => {
                    RpcResponse::InstallSnapshot(self.raft.install_snapshot(r).await)
                }
                RpcRequest::Forward(cmds) => RpcResponse::Forward(self.propose_all(cmds).await),
                RpcRequest::Submit(cmd) => RpcResponse::Submit(
                    submit_local(&self, cmd)
                        .await
                        .map(|s| (s.index, s.outcome))
                        .map_err(|e| e.to_string()),
                ),
                RpcRequest::Summary => {
                    let img = self.shared.hub.current();
                    let mut v: Vec<PartitionInfo> = img
                        .topics
                        .values()
                        .flat_map(|t| {
                            t.partitions.iter().enumerate().map(|(i, p)| PartitionInfo {
                                topic: t.name.clone(),
                                partition: i as i32,
                                state: p.clone(),
                            })
                        })
                        .collect();
                    v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
                    RpcResponse::Summary(ImageSummary {
                        applied_index: img.applied_index,
                        brokers: img.brokers.values().cloned().collect(),
                        partitions: v,
                    })
                }
                RpcRequest::WaitServed { index, timeout_ms } => {
                    let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(60_000));
                    RpcResponse::WaitServed(
                        self.shared.hub.wait_applied(index, deadline).await.is_ok(),
                    )
                }
                RpcRequest::Quorum => RpcResponse::Quorum(self.local_quorum()),
                RpcRequest::Heartbeat { broker } => {
                    let accepted = self.liveness.is_leader();
                    if accepted {
                        self.liveness.heartbeat(broker, Instant::now());
                    }
                    RpcResponse::Heartbeat(HeartbeatReply { accepted })
                }
            }
        })
    }
}

impl Node {
    fn leader(&self) -> Option<NodeId> {
        let l = self.shared.leader.load(Ordering::Acquire);
        (l >= 0).then_some(l as NodeId)
    }

    fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    /// Queue commands to this node's proposer (it must be the leader) and wait for each.
    async fn propose_all(
        &self,
        cmds: Vec<Command>,
    ) -> Vec<Result<(u64, CommandOutcome), ForwardError>> {
        let mut rxs = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            if let Command::RegisterBroker(reg) = &cmd {
                // A registration starts a fresh session, as in Kafka: the broker's last
                // heartbeat may date from before it died, and the liveness check must not fence
                // it again before its first heartbeat of this life arrives.
                self.liveness.heartbeat(reg.id, Instant::now());
            }
            let (tx, rx) = oneshot::channel();
            if self.proposals.send(Proposal { cmd, reply: tx }).is_err() {
                drop(rx);
                rxs.push(None);
            } else {
                rxs.push(Some(rx));
            }
        }
        let mut out = Vec::with_capacity(rxs.len());
        for rx in rxs {
            out.push(match rx {
                Some(rx) => rx
                    .await
                    .unwrap_or_else(|_| Err(ForwardError::Failed("controller stopping".into()))),
                None => Err(ForwardError::Failed("controller stopping".into())),
            });
        }
        out
    }
}

/// Track the Raft leader: publish it in the image, and start/stop liveness tracking.
async fn watch_leader(node: Arc<Node>) {
    let mut rx = node.raft.metrics();
    let mut was_leader = false;
    loop {
        let (leader, is_leader) = {
            let m = rx.borrow_and_update();
            (m.current_leader, m.state == ServerState::Leader)
        };
        node.shared
            .leader
            .store(leader.map(|l| l as i64).unwrap_or(-1), Ordering::Release);
        node.shared
            .hub
            .set_controller(leader.map(|l| l as BrokerId));
        if is_leader && !was_leader {
            tracing::info!(node = node.id, "became the active controller");
            node.liveness.became_leader(Instant::now());
        } else if !is_leader && was_leader {
            node.liveness.lost_leadership();
        }
        was_leader = is_leader;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The leader's proposer: everything queued becomes one log entry.
async fn propose_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    // A few entries in flight at once keep the pipeline full; under load, more commands wait
    // and each entry grows, which is what amortizes the fsync.
    let in_flight = Arc::new(Semaphore::new(4));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < node.tuning.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (membership, normal): (Vec<Proposal>, Vec<Proposal>) =
            batch.into_iter().partition(|p| p.cmd.is_membership());
        for p in membership {
            let node = node.clone();
            tokio::spawn(async move {
                let r = change_membership(&node.raft, &p.cmd).await;
                let _ = p.reply.send(r);
            });
        }
        if normal.is_empty() {
            drop(permit);
            continue;
        }
        let raft = node.raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (cmds, replies): (Vec<Command>, Vec<_>) =
                normal.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let entry = CommandBatch {
                version: 1,
                commands: cmds.into_iter().map(ProposedCommand::new).collect(),
            };
            match raft.client_write(entry).await {
                Ok(resp) => {
                    let index = resp.log_id.index;
                    let mut outcomes = resp.data.outcomes.into_iter();
                    for reply in replies {
                        let r = match outcomes.next() {
                            Some(o) => Ok((index, o)),
                            None => Err(ForwardError::Failed("missing outcome".into())),
                        };
                        let _ = reply.send(r);
                    }
                }
                Err(e) => {
                    let fe = forward_error(e);
                    for reply in replies {
                        let _ = reply.send(Err(fe.clone()));
                    }
                }
            }
        });
    }
}

fn forward_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader: f.leader_id,
        },
        other => ForwardError::Failed(other.to_string()),
    }
}

/// AddNode: join as a learner (catching up first), then promote to voter. RemoveNode: drop it.
async fn change_membership(
    raft: &Raft,
    cmd: &Command,
) -> Result<(u64, CommandOutcome), ForwardError> {
    match cmd {
        Command::AddNode {
            id,
            raft_addr,
            voter,
        } => {
            // A learner that is not running yet must not block the caller; a voter must have
            // caught up before it counts toward the quorum.
            let r = raft
                .add_learner(
                    *id,
                    BasicNode {
                        addr: raft_addr.clone(),
                    },
                    *voter,
                )
                .await
                .map_err(forward_error)?;
            if !*voter {
                return Ok((r.log_id.index, CommandOutcome::Done));
            }
            let r = raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await
                .map_err(forward_error)?;
            Ok((r.log_id.index, CommandOutcome::Done))
        }
        Command::RemoveNode { id } => {
            let membership = raft.metrics().borrow().membership_config.clone();
            let ids = BTreeSet::from([*id]);
            let change = if membership.membership().voter_ids().any(|v| v == *id) {
                ChangeMembers::RemoveVoters(ids)
            } else if membership.membership().get_node(id).is_some() {
                ChangeMembers::RemoveNodes(ids)
            } else {
                // Index 0: nothing was written, so waiting for it returns at once.
                return Ok((
                    0,
                    CommandOutcome::Rejected(MetaError::new(
                        crate::command::codes::INVALID_REQUEST,
                        format!("node {id} is not a member of the metadata quorum"),
                    )),
                ));
            };
            let r = raft
                .change_membership(change, false)
                .await
                .map_err(forward_error)?;
            Ok((r.log_id.index, CommandOutcome::Done))
        }
        _ => Err(ForwardError::Failed("not a membership command".into())),
    }
}

/// Every node: drain local submissions and deliver them, batched, to the leader.
async fn dispatch_loop(node: Arc<Node>, rx: async_channel::Receiver<Submission>) {
    let in_flight = Arc::new(Semaphore::new(8));
    while let Ok(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < node.tuning.max_batch {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            deliver(&node, batch).await;
        });
    }
}

/// Deliver a batch, retrying what was not committed across leader changes until each deadline.
async fn deliver(node: &Node, mut pending: Vec<Submission>) {
    let mut backoff = Duration::from_millis(5);
    while !pending.is_empty() {
        let now = Instant::now();
        let leader = node.leader();
        pending.retain(|s| {
            if now >= s.deadline {
                let e = if leader.is_none() {
                    ControllerError::NoLeader
                } else {
                    ControllerError::Timeout
                };
                let _ = s.reply.try_send(Err(e));
                false
            } else {
                true
            }
        });
        if pending.is_empty() {
            return;
        }
        // A round never outlives the earliest deadline: a Raft core stalled on its disk (a full
        // log volume) must not hold the callers past their timeouts.
        let earliest = pending.iter().map(|s| s.deadline).min().unwrap_or(now);
        let stalled = || {
            vec![Err(ForwardError::Failed("no answer before the deadline".into())); pending.len()]
        };
        let results: Vec<Result<(u64, CommandOutcome), ForwardError>> = match leader {
            None => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
                continue;
            }
            Some(l) if l == node.id => {
                let all = node.propose_all(pending.iter().map(|s| s.cmd.clone()).collect());
                tokio::time::timeout_at(earliest.into(), all)
                    .await
                    .unwrap_or_else(|_| stalled())
            }
            Some(l) => {
                let Some(addr) = node.leader_addr(l) else {
                    tokio::time::sleep(backoff).await;
                    continue;
                };
                let req = RpcRequest::Forward(pending.iter().map(|s| s.cmd.clone()).collect());
                let timeout = earliest
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                match node.peers.client(&addr).call(&req, timeout).await {
                    Ok(RpcResponse::Forward(r)) if r.len() == pending.len() => r,
                    Ok(_) => {
                        vec![Err(ForwardError::Failed("bad forward reply".into())); pending.len()]
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "forward to leader failed; retrying");
                        vec![Err(ForwardError::Failed(e.to_string())); pending.len()]
                    }
                }
            }
        };
        let mut retry = Vec::new();
        for (s, r) in pending.into_iter().zip(results) {
            match r {
                Ok((index, outcome)) => {
                    let _ = s.reply.try_send(Ok(Submitted { index, outcome }));
                }
                // Not committed (or unknown after a lost connection): try again, the leader may
                // have moved. Commands are validated on apply, so a retried duplicate at worst
                // reports e.g. TOPIC_ALREADY_EXISTS.
                Err(e) => {
                    tracing::debug!(error = ?e, "proposal not committed; retrying");
                    retry.push(s);
                }
            }
        }
        pending = retry;
        if !pending.is_empty() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }
}

/// Register this node's broker once a leader exists (and again whenever it finds itself fenced
/// or unknown), and heartbeat to the active controller every interval.
async fn broker_loop(node: Arc<Node>, reg: BrokerRegistration, interval: Duration) {
    // Registration runs as its own task so heartbeats keep flowing while it waits for a commit.
    let registering = Arc::new(AtomicBool::new(false));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = reg.id;
    let mut removed_logged = false;
    loop {
        ticker.tick().await;
        let Some(leader) = node.leader() else {
            continue;
        };
        let image = node.shared.hub.current();
        let once = node.shared.registered_at.load(Ordering::Acquire) > 0;
        let stopping = node.shared.stopping.load(Ordering::Acquire);
        let needs_registration = !stopping
            && match image.broker(me) {
                Some(b) => !once || b.fenced,
                None if !once => true,
                // Registered before and now gone: an operator removed this broker (`cluster
                // remove-node`). Registering again would undo that; a restart rejoins.
                None => {
                    if !removed_logged {
                        tracing::warn!(
                            broker = me,
                            "this broker was removed from the cluster; stop it"
                        );
                        removed_logged = true;
                    }
                    false
                }
            };
        if needs_registration && !registering.swap(true, Ordering::AcqRel) {
            let (node, reg, registering) = (node.clone(), reg.clone(), registering.clone());
            tokio::spawn(async move {
                match submit_local(&node, Command::RegisterBroker(reg)).await {
                    Ok(s) if s.outcome == CommandOutcome::Done => {
                        node.shared
                            .registered_at
                            .fetch_max(s.index, Ordering::AcqRel);
                        // Wait until our own image shows it, so we do not register twice.
                        let deadline = Instant::now() + node.tuning.request_timeout;
                        let _ = node.shared.hub.wait_applied(s.index, deadline).await;
                        tracing::info!(broker = me, index = s.index, "broker registered");
                    }
                    Ok(s) => {
                        tracing::warn!(broker = me, outcome = ?s.outcome, "broker registration refused")
                    }
                    Err(e) => {
                        tracing::debug!(broker = me, error = %e, "broker registration failed; will retry")
                    }
                }
                registering.store(false, Ordering::Release);
            });
        }
        let accepted = if leader == node.id {
            node.liveness.heartbeat(me, Instant::now());
            // The active controller is reachable only while it still leads a quorum (a leader
            // cut off from the other voters does not step down by itself).
            let check = node.raft.ensure_linearizable();
            matches!(
                tokio::time::timeout(interval.max(Duration::from_millis(200)), check).await,
                Ok(Ok(_))
            )
        } else if let Some(addr) = node.leader_addr(leader) {
            let client = node.peers.client(&addr);
            matches!(
                client
                    .call(
                        &RpcRequest::Heartbeat { broker: me },
                        interval.max(Duration::from_millis(200)),
                    )
                    .await,
                Ok(RpcResponse::Heartbeat(HeartbeatReply { accepted: true }))
            )
        } else {
            false
        };
        if accepted {
            let ms = node.shared.born.elapsed().as_millis().max(1) as u64;
            node.shared
                .controller_contact_ms
                .store(ms, Ordering::Release);
        }
    }
}

/// Submit from inside the controller thread (same path as the handle's `submit`).
async fn submit_local(node: &Node, cmd: Command) -> Result<Submitted, ControllerError> {
    submit_checked(&node.shared, cmd, node.tuning.request_timeout).await
}

/// Check the command against this node's image first (`validate::precheck`): what is decided
/// there (validate-only requests, refused topics) is answered with index 0 and never reaches
/// the log; the rest is proposed and the answers merged back in request order.
async fn submit_checked(
    shared: &Shared,
    cmd: Command,
    timeout: Duration,
) -> Result<Submitted, ControllerError> {
    let image = shared.hub.current();
    match validate::precheck(&image, cmd, shared.defaults) {
        Precheck::Answer(outcome) => Ok(Submitted { index: 0, outcome }),
        Precheck::Propose { cmd, early } => {
            let s = submit_via(&shared.submit_tx, timeout, cmd).await?;
            Ok(Submitted {
                index: s.index,
                outcome: validate::merge(early, s.outcome),
            })
        }
    }
}

/// Hands a command to the proposer and waits for its outcome (it retries across leader
/// changes until `timeout`).
async fn submit_via(
    submit_tx: &async_channel::Sender<Submission>,
    timeout: Duration,
    cmd: Command,
) -> Result<Submitted, ControllerError> {
    let (tx, rx) = async_channel::bounded(1);
    submit_tx
        .send(Submission {
            cmd,
            reply: tx,
            deadline: Instant::now() + timeout,
        })
        .await
        .map_err(|_| ControllerError::Shutdown)?;
    rx.recv().await.map_err(|_| ControllerError::Shutdown)?
}

/// On the active controller: fence brokers whose heartbeats stopped for a session timeout.
async fn fence_loop(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let image = node.shared.hub.current();
        for broker in node.liveness.to_fence(&image, Instant::now()) {
            tracing::warn!(broker, "broker session expired; fencing");
            let node = node.clone();
            tokio::spawn(async move {
                let r = node
                    .propose_all(vec![Command::FenceBroker { id: broker }])
                    .await;
                if !matches!(r.first(), Some(Ok(_))) {
                    node.liveness.fence_failed(broker);
                }
            });
        }
    }
}

/// On the active controller: give leadership back to preferred replicas once they are live and
/// in the ISR again (after a fence and return), so leaders stay spread.
async fn rebalance_loop(node: Arc<Node>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if !node.liveness.is_leader() {
            continue;
        }
        let image = node.shared.hub.current();
        let mut partitions: Vec<PartitionRef> = Vec::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let live = image.broker(preferred).map(|b| !b.fenced).unwrap_or(false);
                if p.leader != preferred && live && p.isr.contains(&preferred) {
                    partitions.push(PartitionRef {
                        topic: t.name.clone(),
                        partition: i as i32,
                    });
                }
            }
        }
        if !partitions.is_empty() {
            tracing::info!(
                count = partitions.len(),
                "moving leadership back to preferred replicas"
            );
            let _ = node
                .propose_all(vec![Command::ElectLeaders {
                    partitions,
                    preferred: true,
                }])
                .await;
        }
    }
}

/// Resolves `wait_applied` callers when subscribers report serving a new image, and expires
/// the ones past their deadline.
async fn expire_waiters(hub: Arc<ImageHub>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = ticker.tick() => hub.expire_waiters(Instant::now()),
            _ = hub.served_rung() => hub.resolve_waiters(),
        }
    }
}

/// Waits until every live, unfenced broker other than this one serves `index` (see
/// `Controller::wait_served_everywhere`). A broker that is unreachable or does not answer by
/// `deadline` is skipped: the command is committed and that broker catches up when it can.
async fn wait_served_by_peers(node: Arc<Node>, index: u64, deadline: Instant) -> usize {
    let image = node.shared.hub.current();
    let me = node.id as BrokerId;
    let mut calls = tokio::task::JoinSet::new();
    for (id, addr) in image
        .brokers
        .values()
        .filter(|b| b.id != me && !b.fenced)
        .filter_map(|b| node.leader_addr(b.id as NodeId).map(|a| (b.id, a)))
    {
        let node = node.clone();
        calls.spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let req = RpcRequest::WaitServed {
                index,
                timeout_ms: left.as_millis() as u64,
            };
            match node
                .peers
                .client(&addr)
                .call(&req, left + Duration::from_millis(200))
                .await
            {
                Ok(RpcResponse::WaitServed(true)) => true,
                other => {
                    tracing::debug!(
                        broker = id,
                        index,
                        ok = other.is_ok(),
                        "peer did not confirm serving the index"
                    );
                    false
                }
            }
        });
    }
    let mut confirmed = 0;
    while let Some(r) = calls.join_next().await {
        confirmed += usize::from(r.unwrap_or(false));
    }
    confirmed
}

/// A `Controller::quorum` call waiting for the controller thread.
struct QuorumQuery {
    deadline: Instant,
    reply: async_channel::Sender<Result<QuorumStatus, ControllerError>>,
}

/// Serves `Controller::quorum` on the controller thread: from this node's Raft metrics when it
/// leads, else from the leader's over controller RPC.
async fn quorum_loop(node: Arc<Node>, rx: async_channel::Receiver<QuorumQuery>) {
    while let Ok(q) = rx.recv().await {
        let node = node.clone();
        tokio::spawn(async move {
            let r = tokio::time::timeout_at(q.deadline.into(), node.quorum())
                .await
                .unwrap_or(Err(ControllerError::Timeout));
            let _ = q.reply.try_send(r);
        });
    }
}

impl Node {
    fn local_quorum(&self) -> Option<QuorumStatus> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        crate::quorum::from_metrics(&self.raft.metrics().borrow(), now_ms)
    }

    async fn quorum(&self) -> Result<QuorumStatus, ControllerError> {
        let leader = self.leader().ok_or(ControllerError::NoLeader)?;
        if leader == self.id {
            return self.local_quorum().ok_or(ControllerError::NoLeader);
        }
        let addr = self.leader_addr(leader).ok_or(ControllerError::NoLeader)?;
        match self
            .peers
            .client(&addr)
            .call(&RpcRequest::Quorum, self.shared.request_timeout)
            .await
        {
            Ok(RpcResponse::Quorum(Some(q))) => Ok(q),
            // The leader moved since we looked: the caller may ask again.
            Ok(_) => Err(ControllerError::NoLeader),
            Err(e) => Err(ControllerError::Raft(e.to_string())),
        }
    }
}

/// Serves `Controller::wait_served_everywhere` requests on the controller thread.
async fn everywhere_loop(node: Arc<Node>, rx: async_channel::Receiver<EverywhereWait>) {
    while let Ok(w) = rx.recv().await {
        let node = node.clone();
        tokio::spawn(async move {
            let n = wait_served_by_peers(node, w.index, w.deadline).await;
            let _ = w.reply.try_send(n);
        });
    }
}

impl Controller {
    /// Commit a command (forwarded to the Raft leader if needed) and return its outcome and log
    /// index. Retries across leader changes up to the request timeout.
    pub async fn submit(&self, cmd: Command) -> Result<Submitted, ControllerError> {
        submit_checked(&self.shared, cmd, self.shared.request_timeout).await
    }

    /// `submit`, giving up (Timeout, or NoLeader) after `timeout`: a Kafka request's own
    /// timeout. The command may still commit later.
    pub async fn submit_within(
        &self,
        cmd: Command,
        timeout: Duration,
    ) -> Result<Submitted, ControllerError> {
        submit_checked(&self.shared, cmd, timeout).await
    }

    /// Wait until this node has applied `index` and published the image reflecting it.
    pub async fn wait_applied(&self, index: u64) -> Result<(), ControllerError> {
        let deadline = Instant::now() + self.shared.request_timeout;
        self.shared
            .hub
            .wait_applied(index, deadline)
            .await
            .map_err(|e| match e {
                WaitError::Closed => ControllerError::Shutdown,
                WaitError::Timeout => ControllerError::Timeout,
            })
    }

    /// Wait until this node (every shard) and every other live, unfenced broker serve
    /// metadata at `index`, so a topic created here is visible on every node when the call
    /// returns. Brokers that do not confirm by `timeout` are skipped (they are down or stalled
    /// and catch up later). Returns how many other brokers confirmed.
    pub async fn wait_served_everywhere(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<usize, ControllerError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = async_channel::bounded(1);
        self.shared
            .everywhere_tx
            .send(EverywhereWait {
                index,
                deadline,
                reply: tx,
            })
            .await
            .map_err(|_| ControllerError::Shutdown)?;
        let local = self.shared.hub.wait_applied(index, deadline).await;
        let peers = rx.recv().await.map_err(|_| ControllerError::Shutdown)?;
        local.map_err(|e| match e {
            WaitError::Closed => ControllerError::Shutdown,
            WaitError::Timeout => ControllerError::Timeout,
        })?;
        Ok(peers)
    }

    /// The metadata quorum as the Raft leader reports it (DescribeQuorum), asked of the leader
    /// when this node does not lead. NoLeader while there is none.
    pub async fn quorum(&self, timeout: Duration) -> Result<QuorumStatus, ControllerError> {
        let (tx, rx) = async_channel::bounded(1);
        self.shared
            .quorum_tx
            .send(QuorumQuery {
                deadline: Instant::now() + timeout,
                reply: tx,
            })
            .await
            .map_err(|_| ControllerError::Shutdown)?;
        rx.recv().await.map_err(|_| ControllerError::Shutdown)?
    }

    /// A receiver of every new image (the current one first). A lagging receiver skips to newer
    /// images rather than queueing them all; it reports what it installed with `served`.
    pub fn subscribe(&self) -> ImageSubscription {
        self.shared.hub.subscribe()
    }

    pub fn current_image(&self) -> Arc<MetadataImage> {
        self.shared.hub.current()
    }

    /// True once this process's own broker registration is committed and this node's image has
    /// applied it — and with it everything the log held before it, which is all this node
    /// missed while it was down. An image recovered from disk can show an older registration
    /// of the same broker before the log tail is applied; that one does not count.
    pub fn registration_applied(&self) -> bool {
        let at = self.shared.registered_at.load(Ordering::Acquire);
        at > 0 && self.shared.hub.current().applied_index >= at
    }

    /// The cluster secret this node runs with (brokers authenticate to each other with it).
    pub fn cluster_secret(&self) -> &crate::secret::ClusterSecret {
        &self.shared.secret
    }

    pub fn node_id(&self) -> i32 {
        self.shared.node_id
    }

    /// How long ago the active controller last accepted this broker's heartbeat (None: never).
    pub fn since_controller_contact(&self) -> Option<Duration> {
        let ms = self.shared.controller_contact_ms.load(Ordering::Acquire);
        (ms > 0).then(|| {
            self.shared
                .born
                .elapsed()
                .saturating_sub(Duration::from_millis(ms))
        })
    }

    pub fn raft_leader(&self) -> Option<i32> {
        let l = self.shared.leader.load(Ordering::Acquire);
        (l >= 0).then_some(l as i32)
    }

    /// The broker is leaving (see `shutdown.rs`): it must not register again from here on.
    pub(crate) fn begin_stopping(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Stop heartbeats, close Raft and join the controller thread. Idempotent.
    pub fn shutdown(&self) {
        self.shared.shutdown_tx.close();
        join(&self.shared);
    }
}

fn join(shared: &Shared) {
    let handle = lock(&shared.thread).take();
    if let Some(h) = handle {
        // Never join ourselves (shutdown called from a task on the controller thread).
        if h.thread().id() != std::thread::current().id() {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0, ..) affects only this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(core, "could not pin the controller thread");
        }
    }
}

/// The persisted cluster id, else the configured one, else one derived from the initial quorum
/// (identical on every initial node); persisted at the first start. A configured id that
/// differs from the persisted one is refused: the node would otherwise join another cluster
/// with this one's data.
fn resolve_cluster_id(cfg: &ControllerConfig) -> Result<String, ControllerError> {
    let path = cfg.data_dir.join("cluster_id");
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let configured = Some(cfg.cluster_id.clone()).filter(|s| !s.is_empty());
    let id = match (stored.clone(), configured) {
        (Some(stored), Some(configured)) if stored != configured => {
            return Err(ControllerError::InconsistentClusterId { stored, configured })
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => derive_cluster_id(&cfg.quorum),
    };
    if stored.as_deref() != Some(id.as_str()) {
        let tmp = cfg.data_dir.join("cluster_id.tmp");
        std::fs::write(&tmp, id.as_bytes())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&cfg.data_dir)?.sync_all()?;
    }
    Ok(id)
}

/// 16 bytes of FNV-1a over the sorted quorum, base64url without padding (Kafka's cluster-id form).
pub fn derive_cluster_id(quorum: &[(i32, String)]) -> String {
    let mut q: Vec<String> = quorum.iter().map(|(i, a)| format!("{i}@{a}")).collect();
    q.sort();
    let text = q.join(",");
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf29ce484222325 ^ seed;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0).to_le_bytes());
    bytes[8..].copy_from_slice(&fnv(0x9e3779b97f4a7c15).to_le_bytes());
    base64url(&bytes)
}

fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
