//! Start-up: open the local state, bind the controller port, start the controller thread with
//! its tokio runtime and, on it, Raft and every task of the controller.

use super::broker_loops::{broker_loop, fence_loop, rebalance_loop};
use super::cluster_id::resolve_cluster_id;
use super::handle::{join, lock, Controller, Shared};
use super::node::{watch_leader, Node};
use super::propose::propose_loop;
use super::queries::{everywhere_loop, expire_waiters, quorum_loop, EverywhereWait, QuorumQuery};
use super::submit::{dispatch_loop, Submission};
use super::{ControllerConfig, Tuning};
use crate::error::ControllerError;
use crate::hub::ImageHub;
use crate::image::MetadataImage;
use crate::liveness::Liveness;
use crate::log_store::{LogStore, LogWriterHandle};
use crate::metadata::Defaults;
use crate::network::{Credentials, NetworkFactory, Peers};
use crate::snapshot::SnapshotFiles;
use crate::state_machine::StateMachineStore;
use crate::types::{NodeId, Raft};
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
        tls: cfg.tls.clone(),
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
