//! ISR maintenance on the leader: a follower that has not caught up for
//! `replica.lag.time.max.ms` leaves the ISR; one that reached the high watermark rejoins. Both
//! are AlterPartition proposals to the controller, checked there against the partition epoch.

use crate::shard::Shard;
use chronik_raft::{Command, CommandOutcome};
use std::rc::Rc;
use std::time::{Duration, Instant};

const CHECK_EVERY: Duration = Duration::from_millis(250);

pub async fn run(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(CHECK_EVERY).await;
        if shard.shutting_down.get() {
            return;
        }
        check_all(&shard);
    }
}

fn check_all(shard: &Rc<Shard>) {
    let me = shard.config.node_id;
    let lag_max = Duration::from_millis(shard.config.replica_lag_time_max_ms);
    let now = Instant::now();
    let parts: Vec<_> = shard.partitions.borrow().values().cloned().collect();
    for p in parts {
        if p.is_leader.get() {
            // Batches whose appender went away (closed connection) are written by the log's
            // background flusher with no one to move the HW past them: do it here.
            p.maybe_advance_hw();
        }
        if !p.is_leader.get() || p.isr_change_pending.get() {
            continue;
        }
        let Some(ps) = shard.with_image(|i| i.partition(&p.tp.topic, p.tp.partition).cloned())
        else {
            continue;
        };
        if ps.leader != me {
            continue;
        }
        let hw = p.high_watermark();
        let leader_age = now.duration_since(p.leader_since.get());
        let followers = p.followers.borrow().clone();
        let mut new_isr: Vec<i32> = ps
            .isr
            .iter()
            .copied()
            .filter(|b| {
                *b == me
                    || match followers.get(b) {
                        Some(f) => now.duration_since(f.caught_up_at) <= lag_max,
                        None => leader_age <= lag_max,
                    }
            })
            .collect();
        // A fenced replica (stopped, or in controlled shutdown and still fetching) may look
        // caught up, but the controller refuses it (Kafka's KIP-841 rule): do not ask.
        let live = |b: &i32| shard.with_image(|i| i.broker(*b).is_some_and(|x| !x.fenced));
        for r in &ps.replicas {
            if !new_isr.contains(r) && live(r) {
                if let Some(f) = followers.get(r) {
                    if f.log_end_offset >= hw && now.duration_since(f.caught_up_at) <= lag_max {
                        new_isr.push(*r);
                    }
                }
            }
        }
        let mut a = new_isr.clone();
        let mut b = ps.isr.clone();
        a.sort_unstable();
        b.sort_unstable();
        if a == b {
            continue;
        }
        tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, from = ?ps.isr, to = ?new_isr, "proposing ISR change");
        p.isr_change_pending.set(true);
        let cmd = Command::AlterPartition {
            topic: p.tp.topic.to_string(),
            partition: p.tp.partition,
            leader: me,
            leader_epoch: ps.leader_epoch,
            partition_epoch: ps.partition_epoch,
            new_isr,
        };
        let s = shard.clone();
        glommio::spawn_local(async move {
            match s.controller.submit(cmd).await {
                Ok(sub) => {
                    if let CommandOutcome::Partition(Err(e)) = &sub.outcome {
                        tracing::info!(topic = %p.tp.topic, partition = p.tp.partition, code = e.code, "ISR change refused: {}", e.message);
                    }
                    s.wait_for_image(sub.index, Duration::from_secs(5)).await;
                }
                Err(e) => tracing::warn!("ISR change not submitted: {e:?}"),
            }
            p.isr_change_pending.set(false);
        })
        .detach();
    }
}
