//! What one shard serves: its runtime (`shard::Shard`, reached through `Deref`), the replica
//! manager with the partitions it owns, the group coordinator, the replica fetchers, the
//! metrics counters and the client connections' bookkeeping. Kafka handlers and connections get
//! an `Rc<Services>`; `run_on` sends work to another shard's `Services`.
//!
//! Layering (each imports only from those before it): `shard` (runtime) < `partition` (a
//! partition, the replica manager) < `replication`, `group` < `services` < `kafka::handlers` <
//! `net::conn` < `server`.

use crate::group::{GroupCoordinator, GroupShard};
use crate::kafka::errors;
use crate::metrics::scrape::ShardSource;
use crate::metrics::{ShardMetrics, ShardSnapshot};
use crate::net::idle::IdleSweeper;
use crate::partition::manager::ReplicaManager;
use crate::replication::fetcher::Fetchers;
use crate::shard::{Mesh, Shard, ShardTask};
use chronik_raft::hub::ImageSubscription;
use chronik_raft::image::MetadataImage;
use chronik_raft::{Command, CommandOutcome};
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// Producer ids a shard asks the controller for at once.
const PRODUCER_ID_BLOCK: u32 = 1000;

pub struct Services {
    pub shard: Rc<Shard>,
    mesh: Mesh<Services>,
    /// The one owner of this shard's partitions and their replica state.
    pub replicas: Rc<ReplicaManager>,
    /// Consumer groups this shard coordinates (see `crate::group`).
    pub groups: Rc<GroupShard>,
    pub fetchers: Rc<Fetchers>,
    /// Counters for the metrics endpoint (`crate::metrics`).
    pub metrics: Rc<ShardMetrics>,
    pub connections: Cell<usize>,
    /// Client fetch sessions of this shard's connections, counted against the shard's bounds.
    pub fetch_session_budget: Rc<crate::kafka::handlers::fetch_session::SessionBudget>,
    /// Releases idle connections' buffers and closes them after `connections.max.idle.ms`.
    pub idle: IdleSweeper,
    /// The cluster secret: followers prove with it who they are (`net::broker_auth`).
    pub secret: chronik_raft::secret::ClusterSecret,
    /// Transactional ids this shard coordinates (see `crate::txn`).
    pub txns: crate::txn::partitions::TxnCoordinator,
    /// `--sasl-enabled-mechanisms`, shared by this shard's SASL connections.
    pub sasl_mechanisms: Arc<[crate::sasl::SaslMechanism]>,
    /// Keys the made-up salts SCRAM answers unknown users with (`sasl::session`), from the
    /// cluster secret, so they are the same on every shard and node.
    pub sasl_decoy_key: Arc<[u8; 32]>,
    /// Producer ids this shard may hand out: [next, end) of a block from the controller.
    pid_block: Cell<(i64, i64)>,
}

/// Handlers read the runtime's image, settings and identity as the shard's own.
impl std::ops::Deref for Services {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl Services {
    pub fn new(
        shard: Rc<Shard>,
        peers: Vec<async_channel::Sender<ShardTask<Services>>>,
    ) -> Rc<Services> {
        let metrics = Rc::new(ShardMetrics::default());
        let replicas = ReplicaManager::new(shard.clone(), metrics.clone());
        let secret = shard.controller.cluster_secret().clone();
        let fetchers = Fetchers::new(secret.clone());
        replicas.set_follower_sync(fetchers.clone());
        let groups = Rc::new(GroupShard {
            shard: shard.clone(),
            replicas: replicas.clone(),
            groups: GroupCoordinator::new(shard.config.groups.clone()),
        });
        Rc::new(Services {
            mesh: Mesh::new(shard.id, peers),
            sasl_mechanisms: Arc::from(shard.config.sasl.mechanisms.clone()),
            sasl_decoy_key: crate::sasl::session::decoy_key_from(secret.proving_key()),
            shard,
            replicas,
            groups,
            fetchers,
            metrics,
            connections: Cell::new(0),
            fetch_session_budget: Rc::default(),
            idle: Default::default(),
            secret,
            txns: Default::default(),
            pid_block: Cell::new((0, 0)),
        })
    }

    /// Runs `f` on shard `target` with its services and returns its result. Local calls run
    /// inline.
    pub async fn run_on<T, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Services>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.mesh.run_on(self, target, f).await
    }

    /// Runs `f` with the group coordinator of the shard that coordinates `group`.
    pub async fn on_group_shard<T, F, Fut>(self: &Rc<Self>, group: &str, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<GroupShard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (_, owner) = crate::group::route(&self.groups, group);
        self.run_on(owner, move |s| f(s.groups.clone())).await
    }

    /// A producer id unique in the cluster (InitProducerId, idempotent or transactional): from
    /// this shard's block, or from a new block of `PRODUCER_ID_BLOCK` the controller allocates.
    /// Kafka's codes on failure.
    pub async fn next_producer_id(&self) -> Result<i64, i16> {
        if let Some(id) = self.take_producer_id() {
            return Ok(id);
        }
        let cmd = Command::AllocateProducerIds {
            broker: self.config.node_id,
            count: PRODUCER_ID_BLOCK,
        };
        match self.controller.submit(cmd).await {
            Ok(sub) => match sub.outcome {
                CommandOutcome::ProducerIds(Ok(first)) => {
                    self.pid_block
                        .set((first, first + i64::from(PRODUCER_ID_BLOCK)));
                    self.take_producer_id().ok_or(errors::UNKNOWN_SERVER_ERROR)
                }
                CommandOutcome::ProducerIds(Err(e)) | CommandOutcome::Rejected(e) => Err(e.code),
                _ => Err(errors::UNKNOWN_SERVER_ERROR),
            },
            Err(_) => Err(errors::COORDINATOR_NOT_AVAILABLE),
        }
    }

    fn take_producer_id(&self) -> Option<i64> {
        let (next, end) = self.pid_block.get();
        if next < end {
            self.pid_block.set((next + 1, end));
            Some(next)
        } else {
            None
        }
    }

    /// Receives images from the controller for the life of the shard: each is installed, then
    /// the replica manager makes the partitions match it, from its difference with the image
    /// reconciled before (all of it the first time). Reconciling in a task of its own would let
    /// the next image be served sooner (CreateTopics answered ~40 % sooner with 16 clients), but
    /// a topic created right after a large one then gets its followers only once the large
    /// one's logs are open, so its first acks=all produce stalls (measured, see
    /// bench/results/2026-12-03-create-topics.md).
    pub async fn run_image_loop(self: Rc<Self>, sub: ImageSubscription) {
        let mut reconciled: Option<Arc<MetadataImage>> = None;
        while let Ok(mut img) = sub.images.recv().await {
            // Coalesce a backlog: only the newest image matters.
            while let Ok(next) = sub.images.try_recv() {
                img = next;
            }
            self.shard.install_image(img.clone());
            // From here this shard answers Metadata from the new image; the controller's
            // wait_applied (and so CreateTopics on any node) counts on that.
            sub.served(img.applied_index);
            self.replicas.reconcile(reconciled.as_deref(), &img).await;
            reconciled = Some(img);
        }
    }
}

impl ShardSource for Services {
    /// A copy of the shard's counters and of what it holds.
    fn snapshot(&self) -> ShardSnapshot {
        let mut snap = crate::metrics::snapshot(&self.metrics, self.shard.id, |t| {
            self.shard.with_image(|i| i.topic(t).is_some())
        });
        let mut log_bytes: HashMap<String, u64> = HashMap::new();
        self.replicas.for_each(|tp, p| {
            *log_bytes.entry(tp.topic.to_string()).or_default() += p.log.size_bytes();
            snap.high_watermarks
                .push((tp.topic.to_string(), tp.partition, p.high_watermark()));
        });
        snap.log_bytes = log_bytes.into_iter().collect();
        snap.connections = self.connections.get() as u64;
        let b = &self.fetch_session_budget;
        snap.fetch_sessions = (b.sessions() as u64, b.replica_sessions() as u64);
        snap.committed = crate::group::committed_offsets(&self.groups);
        snap
    }

    fn serving(&self) -> bool {
        !self.shard.shutting_down.get()
    }
}
