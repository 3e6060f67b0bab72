//! A shard: one glommio executor that owns a set of partitions and serves connections.
//!
//! All state here is executor-local (`Rc`, `RefCell`, `Cell`); other shards reach it only by
//! sending a task over its inbox (`run_on`).

pub mod event;
pub mod images;
pub mod maintenance;

use crate::config::BrokerConfig;
use crate::partition::Partition;
use chronik_raft::image::MetadataImage;
use chronik_raft::Controller;
use chronik_storage::ReadCache;
use event::LocalEvent;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Work sent to another shard: a closure run on the owner, producing a local future.
pub type ShardTask = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<()> + Send>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }
}

/// Stable owner of a partition among `nshards` (FNV-1a of the name, plus the index, so the
/// partitions of one topic spread over consecutive shards).
pub fn owner_shard(topic: &str, partition: i32, nshards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let p = u64::from(partition.unsigned_abs());
    (h.wrapping_add(p) % nshards as u64) as usize
}

pub struct Shard {
    pub id: usize,
    pub nshards: usize,
    pub config: Rc<BrokerConfig>,
    pub controller: Controller,
    pub cache: Rc<ReadCache>,
    peers: Vec<async_channel::Sender<ShardTask>>,
    image: RefCell<Arc<MetadataImage>>,
    image_changed: LocalEvent,
    pub(crate) partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Partitions being opened, with the event their other users wait on. Waiters resume in
    /// arrival order, so pipelined produces to a partition still append in request order.
    pub(crate) opening: RefCell<HashMap<TopicPartition, Rc<LocalEvent>>>,
    /// Partitions whose log could not be opened: the reason and when it was last tried, so
    /// requests get KAFKA_STORAGE_ERROR at once and the log says so once (see `images`).
    pub(crate) failed_opens: RefCell<HashMap<TopicPartition, images::FailedOpen>>,
    pub(crate) shutting_down: Cell<bool>,
    pub connections: Cell<usize>,
    /// Releases idle connections' buffers and closes them after `connections.max.idle.ms`.
    pub idle: crate::net::idle::IdleSweeper,
    /// Consumer groups this shard coordinates (see `crate::group`).
    pub groups: crate::group::GroupCoordinator,
    pub fetchers: crate::replication::fetcher::Fetchers,
    /// The cluster secret: followers prove with it who they are (`net::broker_auth`).
    pub secret: chronik_raft::secret::ClusterSecret,
    /// Counters for the metrics endpoint (`crate::metrics`).
    pub metrics: crate::metrics::ShardMetrics,
    /// Producer ids this shard may hand out: [next, end) of a block from the controller.
    pid_block: Cell<(i64, i64)>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Rc<BrokerConfig>,
        controller: Controller,
        peers: Vec<async_channel::Sender<ShardTask>>,
    ) -> Rc<Shard> {
        let image = controller.current_image();
        let groups = crate::group::GroupCoordinator::new(config.groups.clone());
        let secret = controller.cluster_secret().clone();
        Rc::new(Shard {
            id,
            nshards: peers.len(),
            cache: ReadCache::new(config.read_cache_bytes / peers.len().max(1)),
            config,
            controller,
            peers,
            image: RefCell::new(image),
            image_changed: LocalEvent::new(),
            partitions: RefCell::new(HashMap::new()),
            opening: RefCell::new(HashMap::new()),
            failed_opens: RefCell::new(HashMap::new()),
            shutting_down: Cell::new(false),
            connections: Cell::new(0),
            idle: Default::default(),
            groups,
            pid_block: Cell::new((0, 0)),
            fetchers: Default::default(),
            secret,
            metrics: Default::default(),
        })
    }

    /// The current metadata image. Cloning the `Arc` is only needed to hold it across an await.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Borrow the image for a synchronous lookup (no reference-count traffic).
    pub fn with_image<T>(&self, f: impl FnOnce(&MetadataImage) -> T) -> T {
        f(&self.image.borrow())
    }

    pub(crate) fn install_image(&self, img: Arc<MetadataImage>) {
        *self.image.borrow_mut() = img;
        self.image_changed.notify();
    }

    /// Waits until this shard's image reflects Raft index `index` (e.g. a CreateTopics entry).
    pub async fn wait_for_image(&self, index: u64, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.image.borrow().applied_index >= index {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let listen = self.image_changed.listen();
            futures_lite::future::or(listen, glommio::timer::sleep(deadline - now)).await;
        }
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        owner_shard(topic, partition, self.nshards)
    }

    /// Runs `f` on shard `target` and returns its result. Local calls run inline.
    pub async fn run_on<T, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            return Some(f(self.clone()).await);
        }
        let (tx, rx) = async_channel::bounded(1);
        let task: ShardTask = Box::new(move |shard| {
            Box::pin(async move {
                let v = f(shard).await;
                let _ = tx.send(v).await;
            })
        });
        self.peers.get(target)?.send(task).await.ok()?;
        rx.recv().await.ok()
    }

    pub fn take_producer_id(&self) -> Option<i64> {
        let (next, end) = self.pid_block.get();
        if next < end {
            self.pid_block.set((next + 1, end));
            Some(next)
        } else {
            None
        }
    }

    pub fn add_producer_id_block(&self, first: i64, count: i64) {
        self.pid_block.set((first, first + count));
    }

    /// An open partition this shard owns, if any.
    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> std::path::PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }
}

/// The inbox loop of a shard: runs tasks sent by other shards.
pub async fn run_inbox(shard: Rc<Shard>, inbox: async_channel::Receiver<ShardTask>) {
    while let Ok(task) = inbox.recv().await {
        let fut = task(shard.clone());
        glommio::spawn_local(fut).detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_in_range() {
        for n in 1..8 {
            for p in 0..50 {
                let a = owner_shard("orders", p, n);
                assert!(a < n);
                assert_eq!(a, owner_shard("orders", p, n));
            }
        }
        // consecutive partitions of a topic land on different shards
        assert_ne!(owner_shard("t", 0, 2), owner_shard("t", 1, 2));
    }
}
