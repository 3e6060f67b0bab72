//! Broker liveness as the active controller sees it: last heartbeat per broker, in memory only.
//!
//! Heartbeats are not log entries (that would be one fsync per broker per second); only their
//! consequence, a FenceBroker, is. A controller that just became leader knows no heartbeat
//! times, so it grants every broker a full session timeout from the moment it took over.

use crate::image::{BrokerId, MetadataImage};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Liveness {
    session_timeout: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    /// When this node last became leader (None while not leader).
    leader_since: Option<Instant>,
    last_heartbeat: HashMap<BrokerId, Instant>,
    /// Fences proposed but not yet visible in the image, so we do not propose them twice.
    fencing: HashSet<BrokerId>,
}

impl Liveness {
    pub fn new(session_timeout: Duration) -> Self {
        Liveness {
            session_timeout,
            inner: Mutex::new(Inner {
                leader_since: None,
                last_heartbeat: HashMap::new(),
                fencing: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn became_leader(&self, now: Instant) {
        let mut i = self.lock();
        i.leader_since = Some(now);
        i.last_heartbeat.clear();
        i.fencing.clear();
    }

    pub fn lost_leadership(&self) {
        let mut i = self.lock();
        i.leader_since = None;
        i.last_heartbeat.clear();
        i.fencing.clear();
    }

    pub fn is_leader(&self) -> bool {
        self.lock().leader_since.is_some()
    }

    pub fn heartbeat(&self, broker: BrokerId, now: Instant) {
        self.lock().last_heartbeat.insert(broker, now);
    }

    /// Unfenced brokers silent for a session timeout, to be fenced now. Marks them in flight.
    pub fn to_fence(&self, image: &MetadataImage, now: Instant) -> Vec<BrokerId> {
        let mut i = self.lock();
        let Some(since) = i.leader_since else {
            return Vec::new();
        };
        // Forget in-flight fences the image already shows, or for brokers that came back.
        i.fencing
            .retain(|b| image.broker(*b).map(|x| !x.fenced).unwrap_or(false));
        let mut out = Vec::new();
        for b in image.live_brokers() {
            let last = i
                .last_heartbeat
                .get(&b.id)
                .copied()
                .unwrap_or(since)
                .max(since);
            if now.saturating_duration_since(last) >= self.session_timeout
                && !i.fencing.contains(&b.id)
            {
                out.push(b.id);
            }
        }
        for b in &out {
            i.fencing.insert(*b);
        }
        out
    }

    /// A proposed fence failed (e.g. leadership moved); allow proposing it again.
    pub fn fence_failed(&self, broker: BrokerId) {
        self.lock().fencing.remove(&broker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::BrokerInfo;

    fn image(ids: &[BrokerId]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in ids {
            img.brokers.insert(
                *id,
                BrokerInfo {
                    id: *id,
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    listeners: Vec::new(),
                    incarnation: 1,
                    fenced: false,
                    decommissioned: false,
                },
            );
        }
        img
    }

    #[test]
    fn new_leader_grants_a_full_session_then_fences_the_silent() {
        let l = Liveness::new(Duration::from_secs(9));
        let t0 = Instant::now();
        let img = image(&[1, 2]);
        assert!(
            l.to_fence(&img, t0 + Duration::from_secs(60)).is_empty(),
            "not leader: never fences"
        );
        l.became_leader(t0);
        l.heartbeat(1, t0 + Duration::from_secs(5));
        assert!(l.to_fence(&img, t0 + Duration::from_secs(8)).is_empty());
        assert_eq!(l.to_fence(&img, t0 + Duration::from_secs(10)), vec![2]);
        assert!(
            l.to_fence(&img, t0 + Duration::from_secs(11)).is_empty(),
            "already in flight"
        );
        assert_eq!(l.to_fence(&img, t0 + Duration::from_secs(15)), vec![1]);
    }
}
