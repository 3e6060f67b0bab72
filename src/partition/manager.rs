//! The replica manager of a shard: the one owner of the partitions this shard has open and of
//! their replica state. Produce, Fetch, the replica fetchers, the ISR check and the group
//! coordinator reach a partition only through it; it applies metadata images to them (opening,
//! changing role, removing) and tells the replica fetchers what to follow.

use super::log_config::log_config_for;
use super::{batch_error_code, Partition, ProduceOutcome, ReplicaStateError};
use crate::kafka::errors;
use crate::metrics::ShardMetrics;
use crate::shard::event::{LatchedEvent, LocalEvent};
use crate::shard::{Shard, TopicPartition};
use bytes::BytesMut;
use chronik_raft::image::{BrokerId, MetadataImage, TopicImage, NO_LEADER};
use chronik_storage::{Journal, ReadCache, ValidBatch};
use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who copies this shard's follower replicas from their leaders (the replica fetchers, a layer
/// above): told at once when a partition here starts or stops following a leader.
pub trait FollowerSync {
    fn follow(
        &self,
        replicas: &Rc<ReplicaManager>,
        tp: &TopicPartition,
        leader: BrokerId,
        epoch: i32,
    );
    fn unfollow(&self, tp: &TopicPartition);
}

/// A partition log that could not be opened, remembered so that the requests and images that
/// follow answer KAFKA_STORAGE_ERROR at once instead of retrying the open (and logging it) each
/// time; it is tried again after `OPEN_RETRY_INTERVAL`, so a fixed disk or permission heals.
struct FailedOpen {
    reason: String,
    at: Instant,
}

const OPEN_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// How often the journal is fdatasynced: the logs' flush interval, so journaled appends have
/// the power-cut window of segment appends. (With `--log-flush always` no log journals.)
fn journal_sync_period(cfg: &crate::config::BrokerConfig) -> Duration {
    match cfg.log_flush {
        crate::config::FlushSetting::IntervalMs(ms) => Duration::from_millis(ms.max(1)),
        crate::config::FlushSetting::Always => Duration::from_secs(1),
    }
}

/// The shard journals' directory inside the data directory (one `shard-N` per shard); a
/// partition directory is always `<topic>-<partition>`, so the name cannot clash.
pub const JOURNAL_DIR: &str = ".journal";

pub struct ReplicaManager {
    pub shard: Rc<Shard>,
    cache: Rc<ReadCache>,
    /// The journal every partition log of this shard hands its small appends to.
    pub journal: Rc<Journal>,
    metrics: Rc<ShardMetrics>,
    /// Looked up once per partition of every fetch and produce: a fast seeded hasher (SipHash
    /// was a visible share of a 1,000-partition run's CPU).
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>, foldhash::fast::RandomState>>,
    /// Partitions being opened, with the event their other users wait on. Waiters resume in
    /// arrival order, so pipelined produces to a partition still append in request order.
    opening: RefCell<HashMap<TopicPartition, Rc<LocalEvent>>>,
    /// Partitions whose log could not be opened: the reason and when it was last tried, so
    /// requests get KAFKA_STORAGE_ERROR at once and the log says so once.
    failed_opens: RefCell<HashMap<TopicPartition, FailedOpen>>,
    /// Set once when the shard starts (the fetchers are built after the manager).
    followers: OnceCell<Rc<dyn FollowerSync>>,
    /// Led partitions with a follower that may rejoin the ISR, for the ISR check
    /// (`replication::isr`), which `isr_wake` wakes.
    isr_candidates: RefCell<HashSet<TopicPartition>>,
    pub isr_wake: LocalEvent,
    /// Notified by a led partition whose write failed (`Partition::awaits_new_epoch`); the ISR
    /// loop then asks the controller for its new epoch.
    pub write_failures: Rc<LatchedEvent>,
}

impl ReplicaManager {
    pub fn new(shard: Rc<Shard>, metrics: Rc<ShardMetrics>) -> Rc<ReplicaManager> {
        let cache = ReadCache::new(shard.config.read_cache_bytes / shard.nshards.max(1));
        let journal = Journal::new(
            shard
                .config
                .data_dir
                .join(JOURNAL_DIR)
                .join(format!("shard-{}", shard.id)),
            journal_sync_period(&shard.config),
        );
        Rc::new(ReplicaManager {
            shard,
            cache,
            journal,
            metrics,
            partitions: RefCell::new(HashMap::default()),
            opening: RefCell::new(HashMap::new()),
            failed_opens: RefCell::new(HashMap::new()),
            followers: OnceCell::new(),
            isr_candidates: RefCell::new(HashSet::new()),
            isr_wake: LocalEvent::new(),
            write_failures: Rc::new(LatchedEvent::default()),
        })
    }

    /// Connects the replica fetchers; done once, before the first image is applied.
    pub fn set_follower_sync(&self, f: Rc<dyn FollowerSync>) {
        if self.followers.set(f).is_err() {
            tracing::warn!("replica fetchers connected twice; keeping the first");
        }
    }

    fn follow(self: &Rc<Self>, tp: &TopicPartition, leader: BrokerId, epoch: i32) {
        if let Some(f) = self.followers.get() {
            f.follow(self, tp, leader, epoch);
        }
    }

    fn unfollow(&self, tp: &TopicPartition) {
        if let Some(f) = self.followers.get() {
            f.unfollow(tp);
        }
    }

    /// An open partition this shard owns, if any.
    pub fn get(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    /// A follower's fetch at `offset` (its log end; its log start `log_start`) of partition `p`,
    /// led here: recorded (it may move the high watermark, or the low watermark a DeleteRecords
    /// waits for), and the ISR check woken if the follower may rejoin the ISR.
    pub fn follower_fetched(
        &self,
        p: &Partition,
        follower: BrokerId,
        offset: i64,
        log_start: i64,
        now: Instant,
    ) -> Result<(), ReplicaStateError> {
        p.record_follower_fetch(follower, offset, now)?;
        p.record_follower_log_start(follower, log_start);
        if p.could_rejoin_isr(follower) && self.isr_candidates.borrow_mut().insert(p.tp.clone()) {
            self.isr_wake.notify();
        }
        Ok(())
    }

    /// The partitions queued by `follower_fetched` since the last call.
    pub fn take_isr_candidates(&self) -> Vec<TopicPartition> {
        self.isr_candidates.borrow_mut().drain().collect()
    }

    /// Whether `follower_fetched` queued a partition since the last `take_isr_candidates`.
    pub fn has_isr_candidates(&self) -> bool {
        !self.isr_candidates.borrow().is_empty()
    }

    /// Every open partition (a copy, to iterate across awaits).
    pub fn all(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Calls `f` on every open partition without copying the set (no await inside).
    pub fn for_each(&self, mut f: impl FnMut(&TopicPartition, &Partition)) {
        for (tp, p) in self.partitions.borrow().iter() {
            f(tp, p);
        }
    }

    /// Takes every partition out (shutdown): they are closed by the caller.
    pub fn drain(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect()
    }

    /// The open partition for `tp` on this shard, opening its log if the image says this broker
    /// holds a replica. Errors are Kafka codes.
    pub async fn get_or_open(self: &Rc<Self>, tp: &TopicPartition) -> Result<Rc<Partition>, i16> {
        if let Some(p) = self.get(tp) {
            return Ok(p);
        }
        let topic = self
            .shard
            .with_image(|img| img.topics.get(&*tp.topic).cloned());
        let Some(topic) = topic else {
            return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let Some(ps) = topic.partitions.get(tp.partition.max(0) as usize) else {
            return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
        };
        if tp.partition < 0 || !ps.replicas.contains(&self.shard.config.node_id) {
            return Err(errors::NOT_LEADER_OR_FOLLOWER);
        }
        let p = self
            .open(&topic, tp.partition)
            .await
            .map_err(|_| errors::KAFKA_STORAGE_ERROR)?;
        // The image may have moved on while the log opened: apply the current one.
        let now = self
            .shard
            .with_image(|img| img.topics.get(&*tp.topic).cloned());
        self.apply_state(&p, now.as_deref().unwrap_or(&topic), tp.partition);
        Ok(p)
    }

    /// Makes the open partitions match `img`, given `old`, the image reconciled last (None
    /// the first time): only topics whose image changed are looked at (an unchanged topic is
    /// the same `Arc` in both, and an unchanged topic map the same shared map), plus those
    /// with a failed open to retry. A change of the dynamic broker configs touches every
    /// topic's log settings, so it walks them all.
    pub async fn reconcile(self: &Rc<Self>, old: Option<&MetadataImage>, img: &MetadataImage) {
        let Some(old) = old.filter(|o| o.broker_configs == img.broker_configs) else {
            return self.reconcile_all(img).await;
        };
        let mut changed: Vec<&str> = Vec::new();
        if !old.topics.ptr_eq(&img.topics) {
            for (name, t) in img.topics.iter() {
                if old.topics.get(name).is_none_or(|o| !Arc::ptr_eq(o, t)) {
                    changed.push(name);
                }
            }
            changed.extend(
                old.topics
                    .keys()
                    .filter(|n| !img.topics.contains_key(*n))
                    .map(String::as_str),
            );
        }
        // A log that failed to open is tried again at a later image, as a full walk would.
        let failed: Vec<Arc<str>> = {
            let mut f = self.failed_opens.borrow_mut();
            f.retain(|tp, _| img.topic(&tp.topic).is_some());
            f.keys().map(|tp| tp.topic.clone()).collect()
        };
        changed.extend(failed.iter().map(|t| &**t));
        if changed.is_empty() {
            return;
        }
        changed.sort_unstable();
        changed.dedup();
        let me = self.shard.config.node_id;
        for name in &changed {
            let count = |i: &MetadataImage| i.topic(name).map_or(0, |t| t.partitions.len());
            let topic: Arc<str> = Arc::from(*name);
            let stale: Vec<TopicPartition> = (0..count(old).max(count(img)))
                .map(|idx| TopicPartition {
                    topic: topic.clone(),
                    partition: idx as i32,
                })
                .filter(|tp| self.get(tp).is_some_and(|p| is_stale(img, me, tp, &p)))
                .collect();
            for tp in stale {
                self.remove(&tp);
            }
        }
        for name in changed {
            if let Some(topic) = img.topics.get(name) {
                self.reconcile_topic(img, topic).await;
            }
        }
    }

    /// The full walk: every open partition checked, every topic's partitions applied.
    async fn reconcile_all(self: &Rc<Self>, img: &MetadataImage) {
        let me = self.shard.config.node_id;
        // Partitions whose topic is gone (or replaced by a new topic of the same name).
        let stale: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(tp, p)| is_stale(img, me, tp, p))
            .map(|(tp, _)| tp.clone())
            .collect();
        // A topic that is gone (or recreated) gets a fresh open.
        self.failed_opens
            .borrow_mut()
            .retain(|tp, _| img.topic(&tp.topic).is_some());
        for tp in stale {
            self.remove(&tp);
        }
        for topic in img.topics.values() {
            self.reconcile_topic(img, topic).await;
        }
    }

    /// The partitions of one topic held here: opened, role applied, log settings applied.
    async fn reconcile_topic(self: &Rc<Self>, img: &MetadataImage, topic: &TopicImage) {
        let me = self.shard.config.node_id;
        for (idx, ps) in topic.partitions.iter().enumerate() {
            let idx = idx as i32;
            if !ps.replicas.contains(&me) || self.shard.owner_of(&topic.name, idx) != self.shard.id
            {
                continue;
            }
            let tp = TopicPartition::new(&topic.name, idx);
            let p = match self.get(&tp) {
                Some(p) => p,
                None => match self.open(topic, idx).await {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            self.apply_state(&p, topic, idx);
            // A topic or dynamic broker config change applies to the open log at once.
            let lc = log_config_for(&self.shard.config, img, &topic.configs);
            if p.log.config() != lc {
                p.log.set_config(lc);
            }
        }
    }

    /// Takes a partition this broker no longer holds out of service, and deletes its log once
    /// nothing holds it.
    fn remove(self: &Rc<Self>, tp: &TopicPartition) {
        let removed = self.partitions.borrow_mut().remove(tp);
        if let Some(p) = removed {
            self.unfollow(tp);
            p.retire();
            // In-flight requests or a replica fetch may still hold it; delete once they let go.
            glommio::spawn_local(delete_when_released(self.clone(), tp.clone(), p)).detach();
        }
    }

    /// Applies the image's role, epoch and ISR of partition `idx` of `topic` to `p`.
    fn apply_state(self: &Rc<Self>, p: &Partition, topic: &TopicImage, idx: i32) {
        let Some(ps) = topic.partitions.get(idx as usize) else {
            return;
        };
        let me = self.shard.config.node_id;
        let result = if ps.leader == me {
            p.become_leader(ps.leader_epoch, &ps.isr, &ps.replicas, Instant::now())
                .map(|change| {
                    if let Some(before) = change.isr_before {
                        // Whoever decided it (this leader's AlterPartition, or the controller
                        // fencing a replica), an ISR change of a partition led here is counted
                        // here.
                        self.metrics.isr_changed(&before, &ps.isr);
                    }
                    self.unfollow(&p.tp);
                })
        } else {
            p.become_follower(ps.leader_epoch, &ps.isr, &ps.replicas)
                .map(|_| {
                    if ps.leader != NO_LEADER {
                        self.follow(&p.tp, ps.leader, ps.leader_epoch);
                    } else {
                        self.unfollow(&p.tp);
                    }
                })
        };
        match result {
            Ok(()) => {}
            // An image older than one already applied (a lookup that raced a newer image).
            Err(ReplicaStateError::EpochWentBack { .. }) => {
                tracing::debug!(topic = %p.tp.topic, partition = p.tp.partition, "stale partition state not applied");
            }
            Err(e) => {
                tracing::error!(topic = %p.tp.topic, partition = p.tp.partition, "partition state refused: {e}");
            }
        }
    }

    async fn open(self: &Rc<Self>, topic: &TopicImage, idx: i32) -> Result<Rc<Partition>, String> {
        let tp = TopicPartition::new(&topic.name, idx);
        loop {
            if let Some(p) = self.get(&tp) {
                return Ok(p);
            }
            let pending = self.opening.borrow().get(&tp).cloned();
            match pending {
                Some(ev) => ev.listen().await,
                None => break,
            }
        }
        if let Some(failed) = self.failed_opens.borrow().get(&tp) {
            if failed.at.elapsed() < OPEN_RETRY_INTERVAL {
                return Err(failed.reason.clone());
            }
        }
        let ev = Rc::new(LocalEvent::new());
        self.opening.borrow_mut().insert(tp.clone(), ev.clone());
        let dir = self.shard.partition_dir(&topic.name, idx);
        let cfg = self
            .shard
            .with_image(|img| log_config_for(&self.shard.config, img, &topic.configs));
        let opened = Partition::open(
            tp.clone(),
            topic.id,
            dir,
            cfg,
            self.cache.clone(),
            Some(self.journal.clone()),
            self.shard.config.node_id,
        )
        .await;
        self.opening.borrow_mut().remove(&tp);
        let result = match opened {
            Ok(p) => {
                if self.failed_opens.borrow_mut().remove(&tp).is_some() {
                    tracing::info!(topic = %topic.name, partition = idx, "partition opened after an earlier failure");
                }
                let p = Rc::new(p);
                p.set_write_failure_signal(self.write_failures.clone());
                self.partitions.borrow_mut().insert(tp, p.clone());
                self.apply_state(&p, topic, idx);
                Ok(p)
            }
            Err(e) => {
                let mut failed = self.failed_opens.borrow_mut();
                let same = failed.get(&tp).is_some_and(|f| f.reason == e);
                if !same {
                    tracing::error!(
                        topic = %topic.name,
                        partition = idx,
                        "cannot open partition: {e}; its produce and fetch requests get KAFKA_STORAGE_ERROR (retried every {} s)",
                        OPEN_RETRY_INTERVAL.as_secs()
                    );
                }
                failed.insert(
                    tp,
                    FailedOpen {
                        reason: e.clone(),
                        at: Instant::now(),
                    },
                );
                Err(e)
            }
        };
        ev.notify();
        result
    }

    /// An append by the broker itself (the group coordinator), whose batch is checked for its
    /// frame and CRC only.
    pub async fn append_internal(
        self: &Rc<Self>,
        tp: TopicPartition,
        batch: BytesMut,
        acks: i16,
        timeout: Duration,
    ) -> ProduceOutcome {
        match ValidBatch::new(batch) {
            Ok(b) => self.append(tp, b, acks, timeout).await,
            Err(e) => ProduceOutcome::error(batch_error_code(&e)),
        }
    }

    /// A produce to a partition of this shard: leader checks, append, and the acks=all wait.
    pub async fn append(
        self: &Rc<Self>,
        tp: TopicPartition,
        batch: ValidBatch,
        acks: i16,
        timeout: Duration,
    ) -> ProduceOutcome {
        let p = match self.get_or_open(&tp).await {
            Ok(p) => p,
            Err(code) => return ProduceOutcome::error(code),
        };
        if !p.is_leader() {
            return ProduceOutcome::error(errors::NOT_LEADER_OR_FOLLOWER);
        }
        let shard = &self.shard;
        let min_isr = shard.with_image(|i| {
            i.topic(&tp.topic)
                .and_then(|t| t.config("min.insync.replicas"))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| crate::dynamic_config::min_insync_replicas(&shard.config, i))
        });
        if acks == -1 && p.isr_len() < min_isr {
            return ProduceOutcome::error(errors::NOT_ENOUGH_REPLICAS);
        }
        let h = batch.header();
        // batchLength counts what follows its own field (and the base offset before it).
        let (records, bytes) = (h.records_count, i64::from(h.batch_length) + 12);
        let mut out = p.append_valid_as_leader(batch).await;
        if out.error == errors::NONE {
            let (records, bytes) = (records.max(0) as u64, bytes.max(0) as u64);
            self.metrics.produced(&tp.topic, records, bytes);
        }
        if acks == -1 && out.error == errors::NONE {
            let replicated = p.wait_hw_above(out.last_offset, timeout).await;
            // As Kafka: the ISR may shrink below min.insync.replicas after the append, and the
            // high watermark then passes the batch with fewer copies than the topic demands.
            let enough = p.isr_len() >= min_isr;
            out.error = if replicated && enough {
                errors::NONE
            } else if !replicated && !p.is_leader() {
                errors::NOT_LEADER_OR_FOLLOWER
            } else if !enough {
                errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
            } else {
                errors::REQUEST_TIMED_OUT
            };
        }
        out
    }
}

/// The open partition `p` no longer belongs here per `img`: its topic is gone or was
/// recreated (another id), or broker `me` holds no replica of it any more.
fn is_stale(img: &MetadataImage, me: BrokerId, tp: &TopicPartition, p: &Partition) -> bool {
    match img.topic(&tp.topic) {
        None => true,
        Some(t) => {
            t.id != p.topic_id
                || t.partitions
                    .get(tp.partition as usize)
                    .is_none_or(|ps| !ps.replicas.contains(&me))
        }
    }
}

/// Deletes a partition's log once nothing else holds it (a long-poll fetch or an acks=all
/// produce may, for up to their timeouts), unless the partition was opened again meanwhile.
async fn delete_when_released(
    replicas: Rc<ReplicaManager>,
    tp: TopicPartition,
    mut p: Rc<Partition>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match Rc::try_unwrap(p) {
            Ok(part) => {
                if replicas.partitions.borrow().contains_key(&tp) {
                    // Re-added and reopened on the same directory: that instance owns it now.
                    return;
                }
                let dir = part.dir.clone();
                match part.log.delete().await {
                    Ok(()) => {
                        tracing::info!(dir = %dir.display(), "deleted a replica this broker no longer holds")
                    }
                    Err(e) => tracing::warn!(dir = %dir.display(), "delete log: {e}"),
                }
                return;
            }
            Err(still_shared) => p = still_shared,
        }
        if Instant::now() >= deadline {
            tracing::warn!(topic = %tp.topic, partition = tp.partition, "partition still in use; its files stay until the next start");
            return;
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}
