//! Applying new metadata images on a shard: swap the image, then open, update or remove the
//! partitions this shard owns so they match it.

use super::{Shard, TopicPartition};
use crate::config::{BrokerConfig, FlushSetting};
use crate::dynamic_config;
use crate::kafka::errors;
use crate::partition::Partition;
use chronik_raft::hub::ImageSubscription;
use chronik_raft::image::{MetadataImage, TopicImage};
use chronik_storage::{CleanupPolicy, FlushPolicy, LogConfig};
use std::collections::BTreeMap;
use std::rc::Rc;

/// Receives images from the controller for the life of the shard.
pub async fn run_image_loop(shard: Rc<Shard>, sub: ImageSubscription) {
    while let Ok(mut img) = sub.images.recv().await {
        // Coalesce a backlog: only the newest image matters.
        while let Ok(next) = sub.images.try_recv() {
            img = next;
        }
        shard.install_image(img.clone());
        // From here this shard answers Metadata from the new image; the controller's
        // wait_applied (and so CreateTopics on any node) counts on that.
        sub.served(img.applied_index);
        reconcile(&shard, &img).await;
    }
}

/// Log settings for a topic: its overrides on top of the broker defaults (static, or dynamic
/// from the image).
pub fn log_config_for(
    cfg: &BrokerConfig,
    img: &MetadataImage,
    topic_configs: &BTreeMap<String, String>,
) -> LogConfig {
    let mut lc = LogConfig {
        segment_bytes: dynamic_config::log_segment_bytes(cfg, img),
        retention_ms: dynamic_config::log_retention_ms(cfg, img),
        retention_bytes: dynamic_config::log_retention_bytes(cfg, img),
        flush: match cfg.log_flush {
            FlushSetting::Always => FlushPolicy::Always,
            FlushSetting::IntervalMs(ms) => FlushPolicy::IntervalMs(ms),
        },
        ..LogConfig::default()
    };
    for (k, v) in topic_configs {
        match k.as_str() {
            "segment.bytes" => {
                if let Ok(n) = v.parse::<u64>() {
                    lc.segment_bytes = n;
                }
            }
            "segment.ms" => lc.segment_ms = v.parse::<u64>().ok(),
            "retention.ms" => {
                lc.retention_ms = v.parse::<i64>().ok().filter(|n| *n >= 0);
            }
            "retention.bytes" => {
                lc.retention_bytes = v.parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n as u64);
            }
            // flush.ms=0 or flush.messages=1 mean "fdatasync before acknowledging".
            "flush.ms" => match v.parse::<u64>() {
                Ok(0) => lc.flush = FlushPolicy::Always,
                Ok(ms) => lc.flush = FlushPolicy::IntervalMs(ms),
                Err(_) => {}
            },
            "flush.messages" if v == "1" => lc.flush = FlushPolicy::Always,
            "cleanup.policy" => {
                if let Some(p) = CleanupPolicy::parse(v) {
                    lc.cleanup = p;
                }
            }
            "min.cleanable.dirty.ratio" => {
                if let Some(r) = v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)) {
                    lc.compaction.min_cleanable_dirty_ratio = r;
                }
            }
            "min.compaction.lag.ms" => {
                if let Ok(ms) = v.parse::<u64>() {
                    lc.compaction.min_compaction_lag_ms = ms;
                }
            }
            // Kafka's default (i64::MAX) means never forced.
            "max.compaction.lag.ms" => {
                lc.compaction.max_compaction_lag_ms =
                    v.parse::<u64>().ok().filter(|&ms| ms < i64::MAX as u64);
            }
            "delete.retention.ms" => {
                if let Ok(ms) = v.parse::<u64>() {
                    lc.compaction.delete_retention_ms = ms;
                }
            }
            _ => {}
        }
    }
    lc
}

async fn reconcile(shard: &Rc<Shard>, img: &MetadataImage) {
    let me = shard.config.node_id;
    // Partitions whose topic is gone (or replaced by a new topic of the same name).
    let stale: Vec<TopicPartition> = shard
        .partitions
        .borrow()
        .iter()
        .filter(|(tp, p)| match img.topic(&tp.topic) {
            None => true,
            Some(t) => {
                t.id != p.topic_id
                    || t.partitions
                        .get(tp.partition as usize)
                        .is_none_or(|ps| !ps.replicas.contains(&me))
            }
        })
        .map(|(tp, _)| tp.clone())
        .collect();
    // A topic that is gone (or recreated) gets a fresh open.
    shard
        .failed_opens
        .borrow_mut()
        .retain(|tp, _| img.topic(&tp.topic).is_some());
    for tp in stale {
        let removed = shard.partitions.borrow_mut().remove(&tp);
        if let Some(p) = removed {
            shard.fetchers.unfollow(&tp);
            p.is_leader.set(false);
            p.notify_all();
            // In-flight requests or a replica fetch may still hold it; delete once they let go.
            glommio::spawn_local(delete_when_released(shard.clone(), tp, p)).detach();
        }
    }
    for topic in img.topics.values() {
        for (idx, ps) in topic.partitions.iter().enumerate() {
            let idx = idx as i32;
            if !ps.replicas.contains(&me) || shard.owner_of(&topic.name, idx) != shard.id {
                continue;
            }
            let tp = TopicPartition::new(&topic.name, idx);
            let p = match shard.partition(&tp) {
                Some(p) => p,
                None => match open_partition(shard, topic, idx).await {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            apply_partition_state(shard, &p, topic, idx);
            // A topic or dynamic broker config change applies to the open log at once.
            let lc = log_config_for(&shard.config, img, &topic.configs);
            if p.log.config() != lc {
                p.log.set_config(lc);
            }
        }
    }
}

/// Deletes a partition's log once nothing else holds it (a long-poll fetch or an acks=all
/// produce may, for up to their timeouts), unless the partition was opened again meanwhile.
async fn delete_when_released(shard: Rc<Shard>, tp: TopicPartition, mut p: Rc<Partition>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match Rc::try_unwrap(p) {
            Ok(part) => {
                if shard.partitions.borrow().contains_key(&tp) {
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
        if std::time::Instant::now() >= deadline {
            tracing::warn!(topic = %tp.topic, partition = tp.partition, "partition still in use; its files stay until the next start");
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn apply_partition_state(shard: &Rc<Shard>, p: &Partition, topic: &TopicImage, idx: i32) {
    let Some(ps) = topic.partitions.get(idx as usize) else {
        return;
    };
    let me = shard.config.node_id;
    let was_leader = p.is_leader.get();
    let old_epoch = p.leader_epoch.get();
    p.is_leader.set(ps.leader == me);
    p.leader_epoch.set(ps.leader_epoch);
    if was_leader && ps.leader == me && *p.isr.borrow() != ps.isr {
        // Whoever decided it (this leader's AlterPartition, or the controller fencing a
        // replica), an ISR change of a partition led here is counted here.
        shard.metrics.isr_changed(&p.isr.borrow(), &ps.isr);
    }
    *p.isr.borrow_mut() = ps.isr.clone();
    if ps.leader == me {
        if !was_leader || old_epoch != ps.leader_epoch {
            // A new term: follower progress is learnt afresh from their fetches.
            p.followers.borrow_mut().clear();
            p.leader_since.set(std::time::Instant::now());
        }
        shard.fetchers.unfollow(&p.tp);
        p.maybe_advance_hw();
    } else if ps.leader != chronik_raft::image::NO_LEADER {
        shard
            .fetchers
            .follow(shard, &p.tp, ps.leader, ps.leader_epoch);
    } else {
        shard.fetchers.unfollow(&p.tp);
    }
    if was_leader != p.is_leader.get() {
        // Wake waiters so acks=all producers and fetchers re-check leadership.
        p.notify_all();
    }
}

/// The open partition for `tp` on this shard, opening its log if the image says this broker
/// holds a replica. Errors are Kafka codes.
pub async fn get_or_open(shard: &Rc<Shard>, tp: &TopicPartition) -> Result<Rc<Partition>, i16> {
    if let Some(p) = shard.partition(tp) {
        return Ok(p);
    }
    let topic = shard.with_image(|img| img.topics.get(&*tp.topic).cloned());
    let Some(topic) = topic else {
        return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let Some(ps) = topic.partitions.get(tp.partition.max(0) as usize) else {
        return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
    };
    if tp.partition < 0 || !ps.replicas.contains(&shard.config.node_id) {
        return Err(errors::NOT_LEADER_OR_FOLLOWER);
    }
    let p = open_partition(shard, &topic, tp.partition)
        .await
        .map_err(|_| errors::KAFKA_STORAGE_ERROR)?;
    apply_partition_state(shard, &p, &topic, tp.partition);
    Ok(p)
}

/// A partition log that could not be opened, remembered so that the requests and images that
/// follow answer KAFKA_STORAGE_ERROR at once instead of retrying the open (and logging it) each
/// time; it is tried again after `OPEN_RETRY_INTERVAL`, so a fixed disk or permission heals.
pub(crate) struct FailedOpen {
    reason: String,
    at: std::time::Instant,
}

const OPEN_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn open_partition(
    shard: &Rc<Shard>,
    topic: &TopicImage,
    idx: i32,
) -> Result<Rc<Partition>, String> {
    let tp = TopicPartition::new(&topic.name, idx);
    loop {
        if let Some(p) = shard.partition(&tp) {
            return Ok(p);
        }
        let pending = shard.opening.borrow().get(&tp).cloned();
        match pending {
            Some(ev) => ev.listen().await,
            None => break,
        }
    }
    if let Some(failed) = shard.failed_opens.borrow().get(&tp) {
        if failed.at.elapsed() < OPEN_RETRY_INTERVAL {
            return Err(failed.reason.clone());
        }
    }
    let ev = Rc::new(crate::shard::event::LocalEvent::new());
    shard.opening.borrow_mut().insert(tp.clone(), ev.clone());
    let dir = shard.partition_dir(&topic.name, idx);
    let cfg = shard.with_image(|img| log_config_for(&shard.config, img, &topic.configs));
    let opened = Partition::open(
        tp.clone(),
        topic.id,
        dir,
        cfg,
        shard.cache.clone(),
        shard.config.node_id,
    )
    .await;
    shard.opening.borrow_mut().remove(&tp);
    let result = match opened {
        Ok(p) => {
            if shard.failed_opens.borrow_mut().remove(&tp).is_some() {
                tracing::info!(topic = %topic.name, partition = idx, "partition opened after an earlier failure");
            }
            let p = Rc::new(p);
            shard.partitions.borrow_mut().insert(tp, p.clone());
            apply_partition_state(shard, &p, topic, idx);
            Ok(p)
        }
        Err(e) => {
            let mut failed = shard.failed_opens.borrow_mut();
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
                    at: std::time::Instant::now(),
                },
            );
            Err(e)
        }
    };
    ev.notify();
    result
}
