//! The shell of the membership protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup): finds
//! the group, asks the core (`machine`) what to do, and does it: parks and answers requests,
//! arms the join and session timers, writes group metadata.
//!
//! Every function here runs on the shard that owns the group's offsets partition (the handlers
//! route with `on_group_shard`). A group is `Rc<RefCell<GroupEntry>>`; a borrow is never held
//! across an await.

use super::effects::apply;
use super::host::{self, Shard};
use super::machine::{self, Clock, JoinOutcome, JoinParams, SyncOutcome, SyncParams};
use super::offsets_log;
use super::offsets_partition::acquire;
use super::state::{JoinResult, SyncResult};
use crate::kafka::errors;
use std::rc::Rc;

pub async fn join(shard: Rc<Shard>, req: JoinParams) -> JoinResult {
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return JoinResult::error(c, &req.member_id),
    };
    let coord = host::coordinator(&shard);
    if let Err(c) = machine::check_session_timeout(&req, &coord.config) {
        return JoinResult::error(c, &req.member_id);
    }
    let g = match part.group(&req.group_id) {
        Some(g) => g,
        None if !req.member_id.is_empty() => {
            return JoinResult::error(errors::UNKNOWN_MEMBER_ID, &req.member_id)
        }
        None => part.group_or_create(&req.group_id),
    };
    let (outcome, fx) = machine::join(
        &mut g.borrow_mut().group,
        &req,
        &coord.config,
        &Clock::system(),
        coord,
    );
    let parked = apply(&shard, &part, &g, fx);
    match (outcome, parked.join) {
        (JoinOutcome::Done(r), _) => r,
        (JoinOutcome::Wait, Some(rx)) => rx
            .recv()
            .await
            .unwrap_or_else(|_| JoinResult::error(errors::NOT_COORDINATOR, &req.member_id)),
        (JoinOutcome::Wait, None) => JoinResult::error(errors::NOT_COORDINATOR, &req.member_id),
    }
}

pub async fn sync(shard: Rc<Shard>, req: SyncParams) -> SyncResult {
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return SyncResult::error(c),
    };
    let Some(g) = part.group(&req.group_id) else {
        return SyncResult::error(errors::UNKNOWN_MEMBER_ID);
    };
    let (outcome, fx) = machine::sync(&mut g.borrow_mut().group, &req, &Clock::system());
    let parked = apply(&shard, &part, &g, fx);
    let persist = match outcome {
        SyncOutcome::Done(r) => return r,
        SyncOutcome::Wait { persist } => persist,
    };
    let Some(rx) = parked.sync else {
        return SyncResult::error(errors::NOT_COORDINATOR);
    };
    if let Some((generation, value)) = persist {
        let key = offsets_log::group_key(&req.group_id);
        let value = offsets_log::group_value(&value);
        let code = part.write(&shard, vec![(key, Some(value))]).await;
        let cfg = &host::coordinator(&shard).config;
        let fx = machine::sync_persisted(
            &mut g.borrow_mut().group,
            generation,
            code,
            cfg,
            &Clock::system(),
        );
        apply(&shard, &part, &g, fx);
    }
    rx.recv()
        .await
        .unwrap_or_else(|_| SyncResult::error(errors::NOT_COORDINATOR))
}

pub async fn heartbeat(
    shard: Rc<Shard>,
    group_id: String,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
) -> i16 {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    let Some(g) = part.group(&group_id) else {
        return errors::UNKNOWN_MEMBER_ID;
    };
    // A heartbeat only moves deadlines later: the armed session timer re-checks when it fires.
    let mut e = g.borrow_mut();
    machine::heartbeat(
        &mut e.group,
        generation,
        &member_id,
        instance_id.as_deref(),
        &Clock::system(),
    )
}

/// Removes members (by member id, or by group.instance.id for static members). Returns the
/// group-level error and one error per member.
pub async fn leave(
    shard: Rc<Shard>,
    group_id: String,
    members: Vec<(String, Option<String>)>,
) -> (i16, Vec<i16>) {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return (c, vec![c; members.len()]),
    };
    let Some(g) = part.group(&group_id) else {
        return (
            errors::UNKNOWN_MEMBER_ID,
            vec![errors::UNKNOWN_MEMBER_ID; members.len()],
        );
    };
    let cfg = &host::coordinator(&shard).config;
    let (codes, fx) = machine::leave(&mut g.borrow_mut().group, &members, cfg, &Clock::system());
    apply(&shard, &part, &g, fx);
    (errors::NONE, codes)
}
