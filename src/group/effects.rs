//! Carrying out what the core (`machine`) decided for a group: replies to parked requests, the
//! join timer of a rebalance, background writes of group metadata, and the session timer.
//! Applying effects arms the session timer and a timer that fires applies effects, so both
//! live here.
//!
//! Session expiry is one timer per group, armed at its earliest session deadline and re-armed
//! after every change; heartbeats only push deadlines later, so the timer re-checks when it
//! fires instead of being re-armed per heartbeat.

use super::host::{self, Shard};
use super::machine::{self, Clock, Effects};
use super::offsets_log;
use super::partitions::{GroupRef, OffsetsPartition, Parked};
use crate::kafka::errors;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A timer that fires at its deadline sleeps at least this long, so a deadline reached exactly
/// (the member is still alive at that instant) cannot spin.
const MIN_TIMER_SLEEP: Duration = Duration::from_millis(1);

/// Carries out what the core decided: replies and parkings, the join timer, the metadata
/// write of an emptied group; then (re)arms the session timer.
pub(super) fn apply(
    shard: &Rc<Shard>,
    part: &Rc<OffsetsPartition>,
    g: &GroupRef,
    fx: Effects,
) -> Parked {
    let parked = g.borrow_mut().deliver(fx.actions);
    if let Some(seq) = fx.join_timer {
        glommio::spawn_local(join_timer(shard.clone(), part.clone(), g.clone(), seq)).detach();
    }
    if fx.persist_group {
        persist_group_later(shard, part, g);
    }
    arm_session_timer(shard, part, g);
    parked
}

/// Ends rebalance `seq` when its join deadline passes (one timer per rebalance, no polling).
async fn join_timer(shard: Rc<Shard>, part: Rc<OffsetsPartition>, g: GroupRef, seq: u64) {
    loop {
        if !part.active.get() {
            return;
        }
        let step = machine::join_timer(&mut g.borrow_mut().group, seq, &Clock::system());
        match step {
            machine::JoinTimer::Stale => return,
            machine::JoinTimer::Wait(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                glommio::timer::sleep(left).await;
            }
            machine::JoinTimer::Fired(fx) => {
                apply(&shard, &part, &g, fx);
                return;
            }
        }
    }
}

/// Writes the group's metadata record in the background (state changes nobody waits on).
fn persist_group_later(shard: &Rc<Shard>, part: &Rc<OffsetsPartition>, g: &GroupRef) {
    let (key, value) = {
        let e = g.borrow();
        (
            offsets_log::group_key(&e.group.id),
            offsets_log::group_value(&e.group.to_value()),
        )
    };
    let (shard, part) = (shard.clone(), part.clone());
    glommio::spawn_local(async move {
        let code = part.write(&shard, vec![(key, Some(value))]).await;
        if code != errors::NONE {
            tracing::warn!(
                partition = part.index,
                code,
                "writing group metadata failed"
            );
        }
    })
    .detach();
}

/// Arms the group's session timer for its earliest deadline, unless a timer at or before that
/// deadline is already armed (it re-arms when it fires).
pub(super) fn arm_session_timer(shard: &Rc<Shard>, part: &Rc<OffsetsPartition>, g: &GroupRef) {
    let token = {
        let mut e = g.borrow_mut();
        let Some(deadline) = machine::next_session_deadline(&e.group) else {
            return;
        };
        if e.session_timer.is_some_and(|(at, _)| at <= deadline) {
            return;
        }
        let token = part.timer_seq.get() + 1;
        part.timer_seq.set(token);
        e.session_timer = Some((deadline, token));
        (deadline, token)
    };
    glommio::spawn_local(session_timer(shard.clone(), part.clone(), g.clone(), token)).detach();
}

async fn session_timer(
    shard: Rc<Shard>,
    part: Rc<OffsetsPartition>,
    g: GroupRef,
    (deadline, token): (Instant, u64),
) {
    let left = deadline.saturating_duration_since(Instant::now());
    glommio::timer::sleep(left.max(MIN_TIMER_SLEEP)).await;
    if !part.active.get() || host::shutting_down(&shard) {
        return;
    }
    {
        let mut e = g.borrow_mut();
        if e.session_timer.map(|(_, t)| t) != Some(token) {
            // Superseded by an earlier timer, which re-arms after it fires.
            return;
        }
        e.session_timer = None;
    }
    let cfg = &host::coordinator(&shard).config;
    let (expired, fx) = machine::expire_sessions(&mut g.borrow_mut().group, cfg, &Clock::system());
    for id in &expired {
        tracing::info!(group = %g.borrow().group.id, member = %id, "member session expired");
    }
    // Re-arms the timer for the next deadline, too.
    apply(&shard, &part, &g, fx);
}
