//! The handle the broker holds (`Controller`): `Send + Sync`, cheap to clone, usable from any
//! runtime. It talks to the controller thread only through channels and atomics in `Shared`.

use super::queries::{EverywhereWait, QuorumQuery};
use super::submit::{submit_checked, Submission};
use super::Submitted;
use crate::command::Command;
use crate::error::ControllerError;
use crate::hub::{ImageHub, ImageSubscription, WaitError};
use crate::image::MetadataImage;
use crate::metadata::Defaults;
use crate::quorum::QuorumStatus;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The handle: `Send + Sync`, cheap to clone, usable from any runtime.
#[derive(Clone)]
pub struct Controller {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) node_id: i32,
    pub(super) hub: Arc<ImageHub>,
    pub(super) submit_tx: async_channel::Sender<Submission>,
    pub(super) everywhere_tx: async_channel::Sender<EverywhereWait>,
    pub(super) quorum_tx: async_channel::Sender<QuorumQuery>,
    /// Raft leader as known locally, -1 when unknown.
    pub(super) leader: AtomicI64,
    pub(super) shutdown_tx: async_channel::Sender<()>,
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) request_timeout: Duration,
    /// Log index of this process's latest committed broker registration (0: none yet).
    pub(super) registered_at: AtomicU64,
    /// For the checks made before proposing (see `validate::precheck`).
    pub(super) defaults: Defaults,
    /// With which brokers prove themselves to each other on the Kafka port too.
    pub(super) secret: crate::secret::ClusterSecret,
    /// Set by `controlled_shutdown`: the broker is leaving, so seeing itself fenced must not
    /// make it register again.
    pub(super) stopping: AtomicBool,
    /// When the active controller last accepted this broker's heartbeat, in ms since `born`
    /// (0: never), for the broker's health check.
    pub(super) controller_contact_ms: AtomicU64,
    pub(super) born: Instant,
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

    /// The highest applied index some subscriber (shard) of this node serves. Lock-free: a
    /// shard compares it with its own image to catch up before answering from an older one.
    pub fn newest_served_index(&self) -> u64 {
        self.shared.hub.newest_served()
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

pub(super) fn join(shared: &Shared) {
    let handle = lock(&shared.thread).take();
    if let Some(h) = handle {
        // Never join ourselves (shutdown called from a task on the controller thread).
        if h.thread().id() != std::thread::current().id() {
            let _ = h.join();
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
