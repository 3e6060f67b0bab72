//! The classic group protocol as pure functions of (group, request, clock).
//!
//! Nothing here does I/O: the clock and the member-id source are passed in, and what must
//! happen outside the group (answer a parked JoinGroup or SyncGroup, park the current request,
//! arm a join timer, write the group's metadata) comes back as `Effects` for the shell
//! (`rebalance`) to carry out, in order. That keeps every transition Kafka defines testable
//! without a broker (see `machine_tests`).

use super::offsets_log::GroupValue;
use super::state::{Group, GroupState, JoinResult, Member, SyncResult};
use super::GroupConfig;
use crate::kafka::errors;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use super::state::Clock;

/// Where new member ids come from (random in the broker, a counter in tests).
pub trait MemberIds {
    fn next_member_id(&self, prefix: &str) -> String;
}

/// One thing the shell must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Park the current JoinGroup as member `id`'s join waiter.
    ParkJoin(String),
    /// Park the current SyncGroup as member `id`'s sync waiter (a previous one is dropped).
    ParkSync(String),
    /// Answer member `id`'s parked JoinGroup.
    JoinReply(String, JoinResult),
    /// Answer member `id`'s parked SyncGroup.
    SyncReply(String, SyncResult),
}

#[derive(Debug, Default)]
pub struct Effects {
    pub actions: Vec<Effect>,
    /// A rebalance started: arm a join timer for this `rebalance_seq`.
    pub join_timer: Option<u64>,
    /// The group became empty: write its metadata in the background.
    pub persist_group: bool,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.join_timer.is_none() && !self.persist_group
    }
}

// ---------------------------------------------------------------------------------------------
// Rebalance machinery

fn reply_join(m: &mut Member, r: JoinResult, out: &mut Effects) {
    if std::mem::take(&mut m.awaiting_join) {
        out.actions.push(Effect::JoinReply(m.id.clone(), r));
    }
}

fn reply_sync(m: &mut Member, r: SyncResult, out: &mut Effects) {
    if std::mem::take(&mut m.awaiting_sync) {
        out.actions.push(Effect::SyncReply(m.id.clone(), r));
    }
}

/// Parks the member's JoinGroup; a JoinGroup it already had parked is answered first.
fn park_join(m: &mut Member, clock: &Clock, out: &mut Effects) {
    let stale = JoinResult::error(errors::REBALANCE_IN_PROGRESS, &m.id);
    reply_join(m, stale, out);
    m.awaiting_join = true;
    m.last_heartbeat = clock.now;
    out.actions.push(Effect::ParkJoin(m.id.clone()));
}

/// Moves the group to PreparingRebalance and asks for a join timer.
fn prepare_rebalance(g: &mut Group, cfg: &GroupConfig, clock: &Clock, out: &mut Effects) {
    if g.state == GroupState::CompletingRebalance {
        for m in g.members.iter_mut() {
            m.assignment = Bytes::new();
            reply_sync(m, SyncResult::error(errors::REBALANCE_IN_PROGRESS), out);
        }
    }
    let initial = g.state == GroupState::Empty;
    let now = clock.now;
    g.set_state(GroupState::PreparingRebalance, clock);
    g.rebalance_seq += 1;
    let timeout = g.max_rebalance_timeout();
    g.initial_phase = initial;
    g.join_deadline_cap = now + timeout;
    g.join_deadline = if initial {
        now + cfg.initial_rebalance_delay.min(timeout)
    } else {
        now + timeout
    };
    out.join_timer = Some(g.rebalance_seq);
}

/// Ends the join phase: drops members that did not rejoin, starts the next generation and
/// answers every parked JoinGroup.
fn complete_join(g: &mut Group, clock: &Clock, out: &mut Effects) {
    g.members.retain(|m| m.awaiting_join);
    g.generation += 1;
    g.initial_phase = false;
    if g.members.is_empty() {
        g.protocol = None;
        g.leader = None;
        g.set_state(GroupState::Empty, clock);
        out.persist_group = true;
        return;
    }
    g.protocol = g.select_protocol();
    if g.leader.as_ref().is_none_or(|l| g.member(l).is_none()) {
        g.leader = g.members.first().map(|m| m.id.clone());
    }
    g.set_state(GroupState::CompletingRebalance, clock);
    let results: Vec<JoinResult> = g.members.iter().map(|m| g.join_result_for(&m.id)).collect();
    for (m, res) in g.members.iter_mut().zip(results) {
        m.last_heartbeat = clock.now;
        reply_join(m, res, out);
    }
}

/// After a change: completes the join phase if everyone is in (and the initial delay is over).
fn settle(g: &mut Group, clock: &Clock, out: &mut Effects) {
    if g.state == GroupState::PreparingRebalance && !g.initial_phase && g.all_joined() {
        complete_join(g, clock, out);
    }
}

/// What the join timer of rebalance `seq` should do now.
#[derive(Debug)]
pub enum JoinTimer {
    /// That rebalance is over (completed, or superseded by a newer one): stop.
    Stale,
    /// Sleep until this deadline (it may have been extended by the initial delay).
    Wait(Instant),
    /// The rebalance timeout passed: members that did not rejoin are gone, the rest answered.
    Fired(Effects),
}

pub fn join_timer(g: &mut Group, seq: u64, clock: &Clock) -> JoinTimer {
    if g.rebalance_seq != seq || g.state != GroupState::PreparingRebalance {
        return JoinTimer::Stale;
    }
    if clock.now < g.join_deadline {
        return JoinTimer::Wait(g.join_deadline);
    }
    let mut out = Effects::default();
    complete_join(g, clock, &mut out);
    JoinTimer::Fired(out)
}

// ---------------------------------------------------------------------------------------------
// JoinGroup

pub struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED with its id.
    pub require_known_member: bool,
}

#[derive(Debug, PartialEq)]
pub enum JoinOutcome {
    Done(JoinResult),
    /// The request is parked (an `Effect::ParkJoin` says as whom) until the join phase ends.
    Wait,
}

/// The session timeout must lie within the broker's bounds (checked before the group exists).
pub fn check_session_timeout(req: &JoinParams, cfg: &GroupConfig) -> Result<(), i16> {
    if req.session_timeout_ms < cfg.min_session_timeout_ms
        || req.session_timeout_ms > cfg.max_session_timeout_ms
    {
        return Err(errors::INVALID_SESSION_TIMEOUT);
    }
    Ok(())
}

pub fn join(
    g: &mut Group,
    req: &JoinParams,
    cfg: &GroupConfig,
    clock: &Clock,
    ids: &dyn MemberIds,
) -> (JoinOutcome, Effects) {
    let mut out = Effects::default();
    let r = join_step(g, req, cfg, clock, ids, &mut out);
    settle(g, clock, &mut out);
    (r, out)
}

fn ms(v: i32) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

fn new_member(req: &JoinParams, id: String, clock: &Clock) -> Member {
    Member {
        id,
        instance_id: req.instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        rebalance_timeout: ms(req.rebalance_timeout_ms),
        session_timeout: ms(req.session_timeout_ms),
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        awaiting_join: false,
        awaiting_sync: false,
        last_heartbeat: clock.now,
    }
}

/// Adds a member and starts (or joins) a rebalance.
fn add_member_and_rebalance(
    g: &mut Group,
    mut m: Member,
    cfg: &GroupConfig,
    clock: &Clock,
    out: &mut Effects,
) -> JoinOutcome {
    park_join(&mut m, clock, out);
    g.members.push(m);
    match g.state {
        GroupState::PreparingRebalance => {
            if g.initial_phase {
                // More members arrived during the initial delay: wait a little longer for more.
                let ext = clock.now + cfg.initial_rebalance_delay;
                g.join_deadline = ext.min(g.join_deadline_cap);
            }
        }
        _ => prepare_rebalance(g, cfg, clock, out),
    }
    JoinOutcome::Wait
}

fn join_step(
    g: &mut Group,
    req: &JoinParams,
    cfg: &GroupConfig,
    clock: &Clock,
    ids: &dyn MemberIds,
    out: &mut Effects,
) -> JoinOutcome {
    let fail = |c| JoinOutcome::Done(JoinResult::error(c, &req.member_id));
    if g.state == GroupState::Dead {
        return fail(errors::COORDINATOR_NOT_AVAILABLE);
    }
    if !g.accepts(&req.protocol_type, &req.protocols) {
        return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
    }
    if g.members.is_empty() {
        g.protocol_type = Some(req.protocol_type.clone());
    }
    if req.member_id.is_empty() {
        let prefix = req.instance_id.as_deref().unwrap_or(&req.client_id);
        let new_id = ids.next_member_id(prefix);
        if let Some(inst) = &req.instance_id {
            if g.member_by_instance(inst).is_some() {
                return static_rejoin(g, req, inst, new_id, cfg, clock, out);
            }
            let m = new_member(req, new_id, clock);
            return add_member_and_rebalance(g, m, cfg, clock, out);
        }
        if req.require_known_member {
            let expiry = clock.now + Duration::from_millis(req.session_timeout_ms as u64);
            g.pending.insert(new_id.clone(), expiry);
            return JoinOutcome::Done(JoinResult::error(errors::MEMBER_ID_REQUIRED, &new_id));
        }
        let m = new_member(req, new_id, clock);
        return add_member_and_rebalance(g, m, cfg, clock, out);
    }
    if g.pending.remove(&req.member_id).is_some() {
        let m = new_member(req, req.member_id.clone(), clock);
        return add_member_and_rebalance(g, m, cfg, clock, out);
    }
    if let Some(inst) = &req.instance_id {
        if let Some(m) = g.member_by_instance(inst) {
            if m.id != req.member_id {
                return fail(errors::FENCED_INSTANCE_ID);
            }
        }
    }
    let state = g.state;
    let is_leader = g.leader.as_deref() == Some(req.member_id.as_str());
    let Some(m) = g.member_mut(&req.member_id) else {
        return fail(errors::UNKNOWN_MEMBER_ID);
    };
    let unchanged = m.protocols == req.protocols;
    match state {
        GroupState::Empty | GroupState::Dead => fail(errors::UNKNOWN_MEMBER_ID),
        GroupState::PreparingRebalance => {
            m.protocols = req.protocols.clone();
            m.rebalance_timeout = ms(req.rebalance_timeout_ms);
            m.session_timeout = ms(req.session_timeout_ms);
            park_join(m, clock, out);
            JoinOutcome::Wait
        }
        GroupState::CompletingRebalance if unchanged => {
            m.last_heartbeat = clock.now;
            JoinOutcome::Done(g.join_result_for(&req.member_id))
        }
        GroupState::Stable if unchanged && !is_leader => {
            m.last_heartbeat = clock.now;
            JoinOutcome::Done(g.join_result_for(&req.member_id))
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            m.protocols = req.protocols.clone();
            park_join(m, clock, out);
            prepare_rebalance(g, cfg, clock, out);
            JoinOutcome::Wait
        }
    }
}

/// A static member (known group.instance.id) rejoining with an unknown member id: it takes
/// over the old member's place under a new id; the old id is fenced. No rebalance when the
/// group is stable and the member's protocols are unchanged.
fn static_rejoin(
    g: &mut Group,
    req: &JoinParams,
    inst: &str,
    new_id: String,
    cfg: &GroupConfig,
    clock: &Clock,
    out: &mut Effects,
) -> JoinOutcome {
    let state = g.state;
    let Some(pos) = g
        .members
        .iter()
        .position(|m| m.instance_id.as_deref() == Some(inst))
    else {
        return JoinOutcome::Done(JoinResult::error(errors::UNKNOWN_MEMBER_ID, ""));
    };
    let old_id = g.members[pos].id.clone();
    let unchanged = g.members[pos].protocols == req.protocols;
    {
        let m = &mut g.members[pos];
        reply_join(
            m,
            JoinResult::error(errors::FENCED_INSTANCE_ID, &old_id),
            out,
        );
        reply_sync(m, SyncResult::error(errors::FENCED_INSTANCE_ID), out);
        m.id = new_id.clone();
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout = ms(req.session_timeout_ms);
        m.rebalance_timeout = ms(req.rebalance_timeout_ms);
        m.last_heartbeat = clock.now;
    }
    if g.leader.as_deref() == Some(old_id.as_str()) {
        g.leader = Some(new_id.clone());
    }
    match state {
        GroupState::Stable if unchanged => {
            let mut r = g.join_result_for(&new_id);
            // The leader keeps the current assignment instead of computing a new one.
            r.skip_assignment = g.leader.as_deref() == Some(new_id.as_str());
            JoinOutcome::Done(r)
        }
        GroupState::PreparingRebalance => {
            let m = &mut g.members[pos];
            m.protocols = req.protocols.clone();
            park_join(m, clock, out);
            JoinOutcome::Wait
        }
        _ => {
            let m = &mut g.members[pos];
            m.protocols = req.protocols.clone();
            park_join(m, clock, out);
            prepare_rebalance(g, cfg, clock, out);
            JoinOutcome::Wait
        }
    }
}

/// The member-id / instance-id check shared by sync, heartbeat and commit.
pub fn check_member(g: &Group, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
    if let Some(inst) = instance_id {
        if let Some(m) = g.member_by_instance(inst) {
            if m.id != member_id {
                return Err(errors::FENCED_INSTANCE_ID);
            }
        }
    }
    if g.member(member_id).is_none() {
        return Err(errors::UNKNOWN_MEMBER_ID);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SyncGroup

pub struct SyncParams {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug)]
pub enum SyncOutcome {
    Done(SyncResult),
    /// Parked until the assignment is stored. `persist` is set for the leader: write this
    /// group metadata (of that generation), then call `sync_persisted`.
    Wait {
        persist: Option<(i32, GroupValue)>,
    },
}

pub fn sync(g: &mut Group, req: &SyncParams, clock: &Clock) -> (SyncOutcome, Effects) {
    let mut out = Effects::default();
    let done = |r| (SyncOutcome::Done(r), Effects::default());
    if let Err(c) = check_member(g, &req.member_id, req.instance_id.as_deref()) {
        return done(SyncResult::error(c));
    }
    if req.generation != g.generation {
        return done(SyncResult::error(errors::ILLEGAL_GENERATION));
    }
    if req
        .protocol_type
        .as_ref()
        .is_some_and(|t| g.protocol_type.as_ref() != Some(t))
        || req
            .protocol
            .as_ref()
            .is_some_and(|p| g.protocol.as_ref() != Some(p))
    {
        return done(SyncResult::error(errors::INCONSISTENT_GROUP_PROTOCOL));
    }
    match g.state {
        GroupState::Empty | GroupState::Dead => {
            return done(SyncResult::error(errors::UNKNOWN_MEMBER_ID))
        }
        GroupState::PreparingRebalance => {
            return done(SyncResult::error(errors::REBALANCE_IN_PROGRESS))
        }
        GroupState::Stable => {
            let (pt, pr) = (g.protocol_type.clone(), g.protocol.clone());
            let Some(m) = g.member_mut(&req.member_id) else {
                return done(SyncResult::error(errors::UNKNOWN_MEMBER_ID));
            };
            m.last_heartbeat = clock.now;
            return done(SyncResult {
                error: errors::NONE,
                protocol_type: pt,
                protocol: pr,
                assignment: m.assignment.clone(),
            });
        }
        GroupState::CompletingRebalance => {}
    }
    let is_leader = g.leader.as_deref() == Some(req.member_id.as_str());
    if let Some(m) = g.member_mut(&req.member_id) {
        m.awaiting_sync = true;
        m.last_heartbeat = clock.now;
        out.actions.push(Effect::ParkSync(m.id.clone()));
    }
    let persist = if is_leader {
        let assigned: HashMap<&str, &Bytes> = req
            .assignments
            .iter()
            .map(|(id, a)| (id.as_str(), a))
            .collect();
        for m in g.members.iter_mut() {
            m.assignment = assigned
                .get(m.id.as_str())
                .map(|a| (*a).clone())
                .unwrap_or_default();
        }
        Some((g.generation, g.to_value()))
    } else {
        None
    };
    (SyncOutcome::Wait { persist }, out)
}

/// The leader's assignment of `generation` was written (`code` NONE) or not: on success the
/// group is Stable and every parked SyncGroup gets its assignment; on failure they get the
/// error and the group rebalances. Nothing happens if the group moved on meanwhile.
pub fn sync_persisted(
    g: &mut Group,
    generation: i32,
    code: i16,
    cfg: &GroupConfig,
    clock: &Clock,
) -> Effects {
    let mut out = Effects::default();
    if g.generation == generation && g.state == GroupState::CompletingRebalance {
        if code == errors::NONE {
            g.set_state(GroupState::Stable, clock);
            let (pt, pr) = (g.protocol_type.clone(), g.protocol.clone());
            for m in g.members.iter_mut() {
                let r = SyncResult {
                    error: errors::NONE,
                    protocol_type: pt.clone(),
                    protocol: pr.clone(),
                    assignment: m.assignment.clone(),
                };
                reply_sync(m, r, &mut out);
            }
        } else {
            for m in g.members.iter_mut() {
                reply_sync(m, SyncResult::error(code), &mut out);
            }
            prepare_rebalance(g, cfg, clock, &mut out);
        }
    }
    settle(g, clock, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Heartbeat, LeaveGroup, session expiry

pub fn heartbeat(
    g: &mut Group,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    clock: &Clock,
) -> i16 {
    if let Err(c) = check_member(g, member_id, instance_id) {
        return c;
    }
    let state = g.state;
    let gen_ok = generation == g.generation;
    let Some(m) = g.member_mut(member_id) else {
        return errors::UNKNOWN_MEMBER_ID;
    };
    match state {
        GroupState::Empty | GroupState::Dead => errors::UNKNOWN_MEMBER_ID,
        GroupState::PreparingRebalance => {
            m.last_heartbeat = clock.now;
            errors::REBALANCE_IN_PROGRESS
        }
        _ if !gen_ok => errors::ILLEGAL_GENERATION,
        _ => {
            m.last_heartbeat = clock.now;
            errors::NONE
        }
    }
}

/// Removes members (by member id, or by group.instance.id for static members): one error per
/// member, in request order.
pub fn leave(
    g: &mut Group,
    members: &[(String, Option<String>)],
    cfg: &GroupConfig,
    clock: &Clock,
) -> (Vec<i16>, Effects) {
    let mut out = Effects::default();
    let mut codes = Vec::with_capacity(members.len());
    let mut removed_any = false;
    for (member_id, instance_id) in members {
        let id = match instance_id {
            Some(inst) => match g.member_by_instance(inst) {
                Some(m) if member_id.is_empty() || m.id == *member_id => m.id.clone(),
                Some(_) => {
                    codes.push(errors::FENCED_INSTANCE_ID);
                    continue;
                }
                None => {
                    codes.push(errors::UNKNOWN_MEMBER_ID);
                    continue;
                }
            },
            None => member_id.clone(),
        };
        if g.pending.remove(&id).is_some() {
            codes.push(errors::NONE);
            continue;
        }
        if remove_member(g, &id, &mut out) {
            removed_any = true;
            codes.push(errors::NONE);
        } else {
            codes.push(errors::UNKNOWN_MEMBER_ID);
        }
    }
    if removed_any {
        after_removal(g, cfg, clock, &mut out);
    }
    settle(g, clock, &mut out);
    (codes, out)
}

fn remove_member(g: &mut Group, id: &str, out: &mut Effects) -> bool {
    let Some(pos) = g.members.iter().position(|m| m.id == id) else {
        return false;
    };
    let mut m = g.members.remove(pos);
    reply_join(
        &mut m,
        JoinResult::error(errors::UNKNOWN_MEMBER_ID, id),
        out,
    );
    reply_sync(&mut m, SyncResult::error(errors::UNKNOWN_MEMBER_ID), out);
    if g.leader.as_deref() == Some(id) {
        g.leader = g.members.first().map(|m| m.id.clone());
    }
    true
}

/// A member left or expired: stable groups rebalance; a join phase may now be complete.
fn after_removal(g: &mut Group, cfg: &GroupConfig, clock: &Clock, out: &mut Effects) {
    if matches!(
        g.state,
        GroupState::Stable | GroupState::CompletingRebalance
    ) {
        prepare_rebalance(g, cfg, clock, out);
        // Nobody to wait for: end the (non-initial) join phase at once if the group emptied.
        g.initial_phase = false;
    }
}

/// The earliest moment a session or a handed-out member id (MEMBER_ID_REQUIRED) of the group
/// may run out; None when nothing can expire.
pub fn next_session_deadline(g: &Group) -> Option<Instant> {
    let members = g.members.iter().filter_map(Member::session_deadline);
    g.pending.values().copied().chain(members).min()
}

/// Drops handed-out member ids and members whose session ran out. Returns the expired members
/// and, if anything changed, what to do about it.
pub fn expire_sessions(g: &mut Group, cfg: &GroupConfig, clock: &Clock) -> (Vec<String>, Effects) {
    let mut out = Effects::default();
    let now = clock.now;
    let before = g.pending.len();
    g.pending.retain(|_, exp| *exp > now);
    let mut changed = g.pending.len() != before;
    let dead: Vec<String> = g
        .members
        .iter()
        .filter(|m| !m.is_alive(now))
        .map(|m| m.id.clone())
        .collect();
    for id in &dead {
        remove_member(g, id, &mut out);
    }
    if !dead.is_empty() {
        after_removal(g, cfg, clock, &mut out);
        changed = true;
    }
    if changed {
        settle(g, clock, &mut out);
    }
    (dead, out)
}

// ---------------------------------------------------------------------------------------------
// Offsets and deletion

/// Whether an OffsetCommit from (`generation`, `member_id`, `instance_id`) is accepted; a
/// member's commit counts as a heartbeat. Generation -1 is a consumer without group
/// management, allowed only while the group is empty.
pub fn check_commit(
    g: &mut Group,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    clock: &Clock,
) -> Result<(), i16> {
    if g.state == GroupState::Dead {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    }
    let simple = generation < 0 && g.state == GroupState::Empty;
    if simple {
        return Ok(());
    }
    check_member(g, member_id, instance_id)?;
    if generation != g.generation {
        return Err(errors::ILLEGAL_GENERATION);
    }
    if g.state == GroupState::CompletingRebalance {
        return Err(errors::REBALANCE_IN_PROGRESS);
    }
    if let Some(m) = g.member_mut(member_id) {
        m.last_heartbeat = clock.now;
    }
    Ok(())
}

/// DeleteGroups: only an empty group may go; it is Dead until its tombstones are written
/// (`delete_failed` brings it back).
pub fn begin_delete(g: &mut Group, clock: &Clock) -> Result<(), i16> {
    match g.state {
        GroupState::Dead => Err(errors::GROUP_ID_NOT_FOUND),
        GroupState::Empty => {
            g.set_state(GroupState::Dead, clock);
            Ok(())
        }
        _ => Err(errors::NON_EMPTY_GROUP),
    }
}

pub fn delete_failed(g: &mut Group, clock: &Clock) {
    g.set_state(GroupState::Empty, clock);
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
