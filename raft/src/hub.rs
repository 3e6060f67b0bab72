//! Hands each new `MetadataImage` to subscribers and wakes `wait_applied` callers.
//!
//! Crosses runtimes: the controller thread publishes, glommio shards receive. Only async-channel
//! is used across the boundary, so receivers need no tokio reactor. The mutex is held for a few
//! pointer copies per publish and is never touched on a shard's request path (shards read their
//! own copy of the image).

use crate::image::{BrokerId, MetadataImage};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How many images a slow subscriber may have queued before older ones are dropped. Images are
/// whole states, so skipping intermediate ones loses nothing.
const SUBSCRIBER_BACKLOG: usize = 16;

pub struct ImageHub {
    inner: Mutex<HubInner>,
}

struct HubInner {
    current: Arc<MetadataImage>,
    subscribers: Vec<async_channel::Sender<Arc<MetadataImage>>>,
    waiters: Vec<(u64, Instant, async_channel::Sender<()>)>,
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    Closed,
    Timeout,
}

impl ImageHub {
    pub fn new(initial: MetadataImage) -> Self {
        ImageHub {
            inner: Mutex::new(HubInner {
                current: Arc::new(initial),
                subscribers: Vec::new(),
                waiters: Vec::new(),
                closed: false,
            }),
        }
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

    pub fn subscribe(&self) -> async_channel::Receiver<Arc<MetadataImage>> {
        let (tx, rx) = async_channel::bounded(SUBSCRIBER_BACKLOG);
        let mut inner = self.lock();
        let _ = tx.force_send(inner.current.clone());
        if inner.closed {
            tx.close();
        } else {
            inner.subscribers.push(tx);
        }
        rx
    }

    /// Resolves once an image with `applied_index >= index` is published. The deadline is
    /// enforced by `expire_waiters`, called periodically from the controller thread, because
    /// the caller's runtime may have no timer we can use.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), WaitError> {
        let rx = {
            let mut inner = self.lock();
            if inner.current.applied_index >= index {
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
            s.close();
        }
        inner.waiters.clear();
    }
}

impl HubInner {
    fn install(&mut self, image: Arc<MetadataImage>) {
        let applied = image.applied_index;
        self.current = image.clone();
        // force_send drops the oldest queued image when a subscriber lags.
        self.subscribers
            .retain(|s| s.force_send(image.clone()).is_ok());
        self.waiters.retain(|(idx, _, tx)| {
            if *idx <= applied {
                let _ = tx.try_send(());
                false
            } else {
                true
            }
        });
    }
}
