//! Finding the offsets partition that coordinates a group on this shard, and loading it
//! (replaying its log) when this broker becomes its leader.

use super::effects::arm_session_timer;
use super::host::{self, Shard};
use super::partitions::{apply_record, deactivate, GroupRef, OffsetsPartition, PendingTxnRecords};
use super::route;
use crate::kafka::errors;
use crate::partition::replay::{forget_failed_load, held_at_epoch};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a request waits for a load another task started before it answers
/// COORDINATOR_LOAD_IN_PROGRESS. The loader starts as soon as leadership arrives, which is
/// also when clients first find the coordinator, so without a wait their first request would
/// usually be refused.
const LOAD_WAIT: Duration = Duration::from_secs(2);

/// The loaded offsets partition coordinating `group`, loading it first if this broker just
/// became its leader. Errors are Kafka codes (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, …).
pub async fn acquire(shard: &Rc<Shard>, group: &str) -> Result<Rc<OffsetsPartition>, i16> {
    if group.is_empty() {
        return Err(errors::INVALID_GROUP_ID);
    }
    let (index, _) = route(shard, group);
    acquire_partition(shard, index).await
}

pub async fn acquire_partition(shard: &Rc<Shard>, index: i32) -> Result<Rc<OffsetsPartition>, i16> {
    let me = host::node_id(shard);
    let Some((leader, epoch)) = host::offsets_partition_leader(shard, index) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let coord = host::coordinator(shard);
    let held = held_at_epoch(coord, index, (leader, epoch), me)?;
    if let Some(p) = held {
        if !p.loaded.get() {
            let done = async {
                let _ = p.load_done.recv().await;
            };
            futures_lite::future::or(done, glommio::timer::sleep(LOAD_WAIT)).await;
        }
        return if p.loaded.get() && p.active.get() {
            Ok(p)
        } else {
            Err(errors::COORDINATOR_LOAD_IN_PROGRESS)
        };
    }
    let (load_finished, load_done) = async_channel::bounded(1);
    let part = Rc::new(OffsetsPartition {
        index,
        leader_epoch: epoch,
        loaded: Cell::new(false),
        active: Cell::new(true),
        groups: RefCell::new(HashMap::new()),
        timer_seq: Cell::new(0),
        load_done,
        txn_pending: RefCell::new(Default::default()),
    });
    coord.parts.borrow_mut().insert(index, part.clone());
    let loaded = load(shard, &part).await;
    drop(load_finished);
    match loaded {
        Ok(()) => {
            part.loaded.set(true);
            let groups: Vec<GroupRef> = part.groups.borrow().values().cloned().collect();
            for g in groups {
                arm_session_timer(shard, &part, &g);
            }
            Ok(part)
        }
        Err(code) => {
            forget_failed_load(&coord.parts, index, &part);
            deactivate(&part);
            Err(code)
        }
    }
}

/// Replays the partition from its log start: the last record of each key wins.
async fn load(shard: &Rc<Shard>, part: &Rc<OffsetsPartition>) -> Result<(), i16> {
    let started = Instant::now();
    let mut pending = PendingTxnRecords::new();
    let records = host::replay(shard, part.index, &mut pending, |k, v| {
        apply_record(part, k, v)
    })
    .await?;
    *part.txn_pending.borrow_mut() = pending;
    // Sessions of loaded members count from now, not from when they were written.
    let now = Instant::now();
    for g in part.groups.borrow().values() {
        for m in g.borrow_mut().group.members.iter_mut() {
            m.last_heartbeat = now;
        }
    }
    let groups = part.groups.borrow().len();
    let ms = started.elapsed().as_millis() as u64;
    if records > 0 {
        tracing::info!(
            partition = part.index,
            groups,
            records,
            ms,
            "loaded consumer offsets partition"
        );
    } else {
        tracing::debug!(
            partition = part.index,
            groups,
            records,
            ms,
            "loaded consumer offsets partition"
        );
    }
    Ok(())
}
