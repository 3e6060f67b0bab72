//! Hands each new `MetadataImage` to subscribers and wakes `wait_applied` callers.
//!
//! Crosses runtimes: the controller thread publishes, glommio shards receive. Only async-channel
//! is used across the boundary, so receivers need no tokio reactor. The mutex is held for a few
//! pointer copies per publish and is never touched on a shard's request path (shards read their
//! own copy of the image).

use crate::image::{BrokerId, MetadataImage};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How many images a slow subscriber may have queued before older ones are dropped. Images are
/// whole states, so skipping intermediate ones loses nothing.
const SUBSCRIBER_BACKLOG: usize = 16;

pub struct ImageHub {
    inner: Mutex<HubInner>,
    /// Subscribers ring this after reporting what they serve; the controller thread then
    /// resolves waiters (`resolve_waiters`), so subscribers never take the mutex for it.
    served_tx: async_channel::Sender<()>,
    served_rx: async_channel::Receiver<()>,
    /// The highest applied index any subscriber serves (lock-free to read), so a subscriber
    /// that lags the others can tell and catch up before answering from its older copy.
    newest_served: Arc<AtomicU64>,
}

struct Subscriber {
    images: async_channel::Sender<Arc<MetadataImage>>,
    /// Highest applied index this subscriber reports serving.
    served: Arc<AtomicU64>,
}

struct HubInner {
    current: Arc<MetadataImage>,
    subscribers: Vec<Subscriber>,
    waiters: Vec<(u64, Instant, async_channel::Sender<()>)>,
    closed: bool,
}

/// A subscriber's end: images arrive on `images`; after installing one, the subscriber calls
/// `served` so `wait_applied` can promise that this subscriber serves it too.
pub struct ImageSubscription {
    pub images: async_channel::Receiver<Arc<MetadataImage>>,
    served: Arc<AtomicU64>,
    newest_served: Arc<AtomicU64>,
    ring: async_channel::Sender<()>,
}

impl ImageSubscription {
    /// This subscriber now serves images up to `applied_index`. Lock-free: atomic stores and
    /// a non-blocking channel send.
    pub fn served(&self, applied_index: u64) {
        self.served.fetch_max(applied_index, Ordering::AcqRel);
        self.newest_served
            .fetch_max(applied_index, Ordering::AcqRel);
        let _ = self.ring.try_send(());
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    Closed,
    Timeout,
}

impl ImageHub {
    pub fn new(initial: MetadataImage) -> Self {
        let (served_tx, served_rx) = async_channel::bounded(1);
        ImageHub {
            inner: Mutex::new(HubInner {
                current: Arc::new(initial),
                subscribers: Vec::new(),
                waiters: Vec::new(),
                closed: false,
            }),
            served_tx,
            served_rx,
            newest_served: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The highest applied index some subscriber serves. Lock-free.
    pub fn newest_served(&self) -> u64 {
        self.newest_served.load(Ordering::Acquire)
    }

    /// Resolves when some subscriber has reported serving a new image (see `resolve_waiters`).
    pub async fn served_rung(&self) {
        let _ = self.served_rx.recv().await;
    }

    /// Wake the waiters whose index every subscriber now serves.
    pub fn resolve_waiters(&self) {
        self.lock().resolve_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current(&self) -> Arc<MetadataImage> {
        self.lock().current.clone()
    }

    /// Publish a new image; `cluster_id` and `controller_id` are carried over from the current one.
    pub fn publish(&self, mut image: MetadataImage) {
        let mut inner = self.lock();
        image.cluster_id = inner.current.cluster_id.clone();
        image.controller_id = inner.current.controller_id;
        inner.install(Arc::new(image));
    }

    pub fn set_controller(&self, controller: Option<BrokerId>) {
        let mut inner = self.lock();
        if inner.current.controller_id == controller {
            return;
        }
        let mut image = (*inner.current).clone();
        image.controller_id = controller;
        inner.install(Arc::new(image));
    }

    pub fn set_cluster_id(&self, cluster_id: &str) {
        let mut inner = self.lock();
        let mut image = (*inner.current).clone();
        image.cluster_id = cluster_id.to_string();
        inner.install(Arc::new(image));
    }

    /// A new subscriber; the current image is queued for it at once. Until it reports serving
    /// that image, `wait_applied` waits for it too.
    pub fn subscribe(&self) -> ImageSubscription {
        let (tx, rx) = async_channel::bounded(SUBSCRIBER_BACKLOG);
        let served = Arc::new(AtomicU64::new(0));
        let mut inner = self.lock();
        let _ = tx.force_send(inner.current.clone());
        if inner.closed {
            tx.close();
        } else {
            inner.subscribers.push(Subscriber {
                images: tx,
                served: served.clone(),
            });
        }
        ImageSubscription {
            images: rx,
            served,
            newest_served: self.newest_served.clone(),
            ring: self.served_tx.clone(),
        }
    }

    /// The applied index this node serves: published, and installed by every live subscriber.
    pub fn served_index(&self) -> u64 {
        self.lock().served_index()
    }

    /// Resolves once an image with `applied_index >= index` is published and every subscriber
    /// (each broker shard) reports serving it. The deadline is enforced by `expire_waiters`,
    /// called periodically from the controller thread, because the caller's runtime may have
    /// no timer we can use.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), WaitError> {
        let rx = {
            let mut inner = self.lock();
            if inner.served_index() >= index {
                return Ok(());
            }
            if inner.closed {
                return Err(WaitError::Closed);
            }
            let (tx, rx) = async_channel::bounded(1);
            inner.waiters.push((index, deadline, tx));
            rx
        };
        match rx.recv().await {
            Ok(()) => Ok(()),
            Err(_) if self.lock().closed => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout),
        }
    }

    /// Drop waiters past their deadline; their `wait_applied` returns `Timeout`.
    pub fn expire_waiters(&self, now: Instant) {
        self.lock()
            .waiters
            .retain(|(_, deadline, _)| *deadline > now);
    }

    /// Shutdown: subscribers see their channel end, waiters get `Closed`.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for s in inner.subscribers.drain(..) {
            s.images.close();
        }
        inner.waiters.clear();
    }
}

impl HubInner {
    fn install(&mut self, image: Arc<MetadataImage>) {
        self.current = image.clone();
        // force_send drops the oldest queued image when a subscriber lags; a subscriber whose
        // receiver is gone is forgotten.
        self.subscribers
            .retain(|s| s.images.force_send(image.clone()).is_ok());
        self.resolve_waiters();
    }

    fn served_index(&self) -> u64 {
        self.subscribers
            .iter()
            .filter(|s| !s.images.is_closed())
            .map(|s| s.served.load(Ordering::Acquire))
            .fold(self.current.applied_index, u64::min)
    }

    fn resolve_waiters(&mut self) {
        let served = self.served_index();
        self.waiters.retain(|(idx, _, tx)| {
            if *idx <= served {
                let _ = tx.try_send(());
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};
    use std::time::Duration;

    fn image(applied_index: u64) -> MetadataImage {
        MetadataImage {
            applied_index,
            ..Default::default()
        }
    }

    #[test]
    fn wait_applied_waits_for_every_subscriber_to_serve() {
        let hub = ImageHub::new(image(0));
        let a = hub.subscribe();
        let b = hub.subscribe();
        hub.publish(image(5));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut wait = Box::pin(hub.wait_applied(5, deadline));
        assert!(
            block_on(poll_once(&mut wait)).is_none(),
            "nobody serves 5 yet"
        );
        a.served(5);
        hub.resolve_waiters();
        assert!(
            block_on(poll_once(&mut wait)).is_none(),
            "b does not serve 5 yet"
        );
        // b can tell it lags: some subscriber already serves 5.
        assert_eq!((hub.served_index(), hub.newest_served()), (0, 5));
        b.served(5);
        hub.resolve_waiters();
        assert_eq!(block_on(poll_once(&mut wait)), Some(Ok(())));
        assert_eq!(hub.served_index(), 5);
    }

    #[test]
    fn a_dropped_subscriber_no_longer_holds_waiters_back() {
        let hub = ImageHub::new(image(0));
        let a = hub.subscribe();
        let b = hub.subscribe();
        hub.publish(image(3));
        a.served(3);
        assert_eq!(hub.served_index(), 0);
        drop(b);
        assert_eq!(hub.served_index(), 3);
        // Without subscribers, published is served.
        drop(a);
        hub.publish(image(4));
        assert_eq!(hub.served_index(), 4);
    }
}
