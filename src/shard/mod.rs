//! A shard's runtime: one glommio executor, who it is, the metadata image it serves from, and
//! the inboxes of every shard (`Mesh`) to run work where a partition or group lives.
//!
//! All state here is executor-local (`Rc`, `RefCell`, `Cell`); other shards reach it only by
//! sending a task over its inbox (`Mesh::run_on`). What the shard serves (partitions, groups,
//! fetchers) lives above this module (`services`).

pub mod event;

use crate::config::BrokerConfig;
use chronik_raft::image::MetadataImage;
use chronik_raft::Controller;
use event::LocalEvent;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Work sent to another shard: a closure run on the owner with its context `C`, producing a
/// local future.
pub type ShardTask<C> = Box<dyn FnOnce(Rc<C>) -> LocalBoxFuture<()> + Send>;

/// A partition by topic name and index. Equal names built on one thread share one `Arc`
/// (`new` reuses a recent one), so comparing two (every map lookup of the fetch paths, which
/// visit each partition of a session on every round) is a pointer compare, not a `memcmp`.
#[derive(Clone, Debug)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl PartialEq for TopicPartition {
    fn eq(&self, other: &Self) -> bool {
        self.partition == other.partition
            && (Arc::ptr_eq(&self.topic, &other.topic) || self.topic == other.topic)
    }
}

impl Eq for TopicPartition {}

impl std::hash::Hash for TopicPartition {
    /// By value (name, index), as equality is.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.topic.hash(state);
        self.partition.hash(state);
    }
}

impl Ord for TopicPartition {
    /// By topic name, then index (as the derived order was).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let topic = if Arc::ptr_eq(&self.topic, &other.topic) {
            std::cmp::Ordering::Equal
        } else {
            self.topic.cmp(&other.topic)
        };
        topic.then(self.partition.cmp(&other.partition))
    }
}

impl PartialOrd for TopicPartition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// How many recent topic names a thread keeps for `TopicPartition::new` to share.
const RECENT_TOPICS: usize = 8;

thread_local! {
    /// Recently built topic names, newest first: a loop over one topic's partitions (a fetch
    /// of hundreds of them) builds them without an allocation each, all sharing one `Arc`.
    /// Bounded, so a deleted topic's name is held only until eight others were used.
    static RECENT: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        let topic = RECENT.with(|r| {
            let mut r = r.borrow_mut();
            if let Some(i) = r.iter().position(|t| **t == *topic) {
                if i == 0 {
                    return r[0].clone();
                }
                let t = r.remove(i);
                r.insert(0, t.clone());
                return t;
            }
            let t: Arc<str> = Arc::from(topic);
            r.truncate(RECENT_TOPICS - 1);
            r.insert(0, t.clone());
            t
        });
        TopicPartition { topic, partition }
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

/// The runtime of one shard: identity, settings, controller handle and the current image.
pub struct Shard {
    pub id: usize,
    pub nshards: usize,
    pub config: Rc<BrokerConfig>,
    pub controller: Controller,
    image: RefCell<Arc<MetadataImage>>,
    image_changed: LocalEvent,
    /// Set when the shard stops: its background loops end.
    pub shutting_down: Cell<bool>,
}

impl Shard {
    pub fn new(
        id: usize,
        nshards: usize,
        config: Rc<BrokerConfig>,
        controller: Controller,
    ) -> Rc<Shard> {
        let image = controller.current_image();
        Rc::new(Shard {
            id,
            nshards,
            config,
            controller,
            image: RefCell::new(image),
            image_changed: LocalEvent::new(),
            shutting_down: Cell::new(false),
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

    /// Swaps in a new image; returns the one it replaces (for reconciling the difference).
    pub fn install_image(&self, img: Arc<MetadataImage>) -> Arc<MetadataImage> {
        let old = std::mem::replace(&mut *self.image.borrow_mut(), img);
        self.image_changed.notify();
        old
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

    /// Waits (within `timeout`) until this shard's image is as new as the newest another shard
    /// of this node already serves, so what one connection to this broker has seen, a later
    /// one on another shard does not contradict (Kafka's brokers keep one metadata cache).
    /// Free when this shard is not behind: one atomic load.
    pub async fn catch_up_with_node(&self, timeout: std::time::Duration) {
        let newest = self.controller.newest_served_index();
        if newest > self.image.borrow().applied_index {
            self.wait_for_image(newest, timeout).await;
        }
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        owner_shard(topic, partition, self.nshards)
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> std::path::PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
    }
}

/// The inboxes of every shard, carrying tasks that run with the target shard's context `C`
/// (generic so that this runtime does not depend on what the shards serve).
pub struct Mesh<C: 'static> {
    id: usize,
    peers: Vec<async_channel::Sender<ShardTask<C>>>,
}

impl<C: 'static> Mesh<C> {
    pub fn new(id: usize, peers: Vec<async_channel::Sender<ShardTask<C>>>) -> Self {
        Mesh { id, peers }
    }

    /// Runs `f` on shard `target` with its context and returns its result. `here` is this
    /// shard's context: local calls run inline with it.
    pub async fn run_on<T, F, Fut>(&self, here: &Rc<C>, target: usize, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            return Some(f(here.clone()).await);
        }
        let (tx, rx) = async_channel::bounded(1);
        let task: ShardTask<C> = Box::new(move |ctx| {
            Box::pin(async move {
                let v = f(ctx).await;
                let _ = tx.send(v).await;
            })
        });
        self.peers.get(target)?.send(task).await.ok()?;
        rx.recv().await.ok()
    }
}

/// The inbox loop of a shard: runs tasks sent by other shards.
pub async fn run_inbox<C: 'static>(ctx: Rc<C>, inbox: async_channel::Receiver<ShardTask<C>>) {
    while let Ok(task) = inbox.recv().await {
        let fut = task(ctx.clone());
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

    #[test]
    fn partitions_of_one_topic_share_its_name_and_compare_as_names_and_indexes_do() {
        let a = TopicPartition::new("orders", 1);
        let b = TopicPartition::new("orders", 2);
        assert!(Arc::ptr_eq(&a.topic, &b.topic), "one name, one allocation");
        // Built apart (another thread's name, or a literal): equal and ordered by value.
        let c = TopicPartition {
            topic: Arc::from("orders"),
            partition: 1,
        };
        assert_eq!(a, c);
        assert_eq!(a.cmp(&c), std::cmp::Ordering::Equal);
        assert!(a < b && c < b);
        let d = TopicPartition::new("audit", 9);
        assert!(d < a, "names order before indexes");
        assert_ne!(d, TopicPartition::new("audit", 8));
        // Nine other names later the first is built afresh, still equal.
        for i in 0..9 {
            let _ = TopicPartition::new(&format!("t{i}"), 0);
        }
        let e = TopicPartition::new("orders", 1);
        assert!(!Arc::ptr_eq(&a.topic, &e.topic));
        assert_eq!(a, e);
        let mut sorted = vec![b.clone(), d.clone(), e.clone(), c.clone()];
        sorted.sort();
        assert_eq!(sorted, vec![d, a.clone(), a, b]);
    }
}
