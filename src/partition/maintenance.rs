//! Periodic per-shard housekeeping: retention of old segments, and the log cleaner for
//! `cleanup.policy=compact` topics.

use super::manager::ReplicaManager;
use crate::dynamic_config;
use chronik_storage::{CleanerLimits, CleanerPace};
use glommio::{Latency, Shares};
use std::rc::Rc;
use std::time::Duration;

const RETENTION_CHECK: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn run(replicas: Rc<ReplicaManager>) {
    let shard = replicas.shard.clone();
    if shard.config.log_cleaner_enable {
        spawn_cleaner(&replicas);
    }
    loop {
        glommio::timer::sleep(RETENTION_CHECK).await;
        if shard.shutting_down.get() {
            return;
        }
        let now_ms = now_ms();
        let parts = replicas.all();
        for p in parts {
            match p.log.apply_retention(now_ms).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, segments = n, "retention deleted segments")
                }
                Err(e) => {
                    tracing::warn!(topic = %p.tp.topic, partition = p.tp.partition, "retention: {e}")
                }
            }
        }
    }
}

/// The cleaner runs in its own task queue with few shares: whenever requests are runnable
/// they get the executor first, so cleaning never holds up produce or fetch (it also takes
/// a log's I/O lock only for the moment of each segment swap).
fn spawn_cleaner(replicas: &Rc<ReplicaManager>) {
    let shard = &replicas.shard;
    let tq = glommio::executor().create_task_queue(
        Shares::Static(shard.config.log_cleaner_shares),
        Latency::NotImportant,
        "log-cleaner",
    );
    match glommio::spawn_local_into(run_cleaner(replicas.clone()), tq) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!("cannot start the log cleaner: {e}"),
    };
}

/// Cleans the dirtiest due log of the shard, one round at a time; sleeps for the backoff
/// when none is due.
async fn run_cleaner(replicas: Rc<ReplicaManager>) {
    let shard = replicas.shard.clone();
    loop {
        if shard.shutting_down.get() {
            return;
        }
        // Read each round: both are dynamic broker configs.
        let (backoff, dedupe) = shard.with_image(|img| {
            (
                Duration::from_millis(
                    dynamic_config::log_cleaner_backoff_ms(&shard.config, img).max(1),
                ),
                dynamic_config::log_cleaner_dedupe_buffer_size(&shard.config, img),
            )
        });
        let now = now_ms();
        let dirtiest = replicas
            .all()
            .into_iter()
            .filter_map(|p| {
                p.log
                    .cleanable_ratio(now, p.last_stable_offset())
                    .map(|r| (r, p.clone()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p);
        let Some(p) = dirtiest else {
            glommio::timer::sleep(backoff).await;
            continue;
        };
        let started = std::time::Instant::now();
        let limits = CleanerLimits {
            pace: CleanerPace::from_shares(
                shard.config.log_cleaner_shares,
                Some(shard.config.log_cleaner_io_max_bytes_per_second),
            ),
            // Open transactions and records not yet replicated are left alone.
            upper_bound: p.last_stable_offset(),
            txns: p.cleaner_txn_context(),
            ..CleanerLimits::new(dedupe, now)
        };
        match p.log.clean(&limits).await {
            Ok(Some(s)) => {
                p.forget_cleaned_aborts(&s.aborted_without_data);
                tracing::info!(
                    topic = %p.tp.topic,
                    partition = p.tp.partition,
                    read = s.bytes_read,
                    written = s.bytes_written,
                    segments = s.segments_rewritten,
                    removed = s.records_removed,
                    clean_end = s.clean_end,
                    ms = started.elapsed().as_millis() as u64,
                    "log cleaner round"
                );
            }
            Ok(None) => glommio::timer::sleep(backoff).await,
            Err(e) => {
                tracing::warn!(topic = %p.tp.topic, partition = p.tp.partition, "log cleaner: {e}");
                glommio::timer::sleep(backoff).await;
            }
        }
    }
}
