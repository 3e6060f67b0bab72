//! The classic group protocol on the shard that owns a group's offsets partition.
//!
//! Every function here runs on that shard (the handlers route with `on_group_shard`). Group
//! state is `Rc<RefCell<Group>>`; a borrow is never held across an await. Waiting JoinGroup and
//! SyncGroup requests park on a one-slot channel kept in their member, completed when the join
//! phase ends (everyone rejoined, or the rebalance timeout passed) or the leader's assignment
//! arrives.

use super::offsets_log::{self, LogRecord, OffsetValue, RecordKey};
use super::state::{now_ms, Group, GroupState, JoinResult, Member, SyncResult};
use super::GroupShard;
use super::{route, GroupConfig, OFFSETS_TOPIC};
use crate::kafka::errors;
use crate::shard::TopicPartition;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub type GroupRef = Rc<RefCell<Group>>;

/// How long a write to the offsets log may wait for acks=all.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(250);

/// The groups of one `__consumer_offsets` partition this broker leads.
pub struct OffsetsPartition {
    pub index: i32,
    pub leader_epoch: i32,
    pub loaded: Cell<bool>,
    /// False once unloaded (leadership moved): timers of its groups stop.
    pub active: Cell<bool>,
    pub groups: RefCell<HashMap<String, GroupRef>>,
}

/// Per-shard coordinator state: the offsets partitions this shard serves.
pub struct GroupCoordinator {
    pub config: GroupConfig,
    parts: RefCell<HashMap<i32, Rc<OffsetsPartition>>>,
    member_seq: Cell<u64>,
}

impl Default for GroupCoordinator {
    fn default() -> Self {
        Self::new(GroupConfig::default())
    }
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            parts: RefCell::new(HashMap::new()),
            member_seq: Cell::new(0),
        }
    }

    fn new_member_id(&self, prefix: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        let n = self.member_seq.get() + 1;
        self.member_seq.set(n);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let a = h.finish();
        h.write_u64(a);
        let b = h.finish();
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    fn loaded_parts(&self) -> Vec<Rc<OffsetsPartition>> {
        self.parts
            .borrow()
            .values()
            .filter(|p| p.loaded.get())
            .cloned()
            .collect()
    }

    fn unload(&self, index: i32) {
        if let Some(p) = self.parts.borrow_mut().remove(&index) {
            deactivate(&p);
        }
    }
}

fn deactivate(p: &OffsetsPartition) {
    p.active.set(false);
    // Dropping the groups drops the waiters' senders: parked joins/syncs answer NOT_COORDINATOR.
    p.groups.borrow_mut().clear();
}

impl OffsetsPartition {
    fn tp(&self) -> TopicPartition {
        TopicPartition::new(OFFSETS_TOPIC, self.index)
    }

    pub fn group(&self, id: &str) -> Option<GroupRef> {
        self.groups.borrow().get(id).cloned()
    }

    fn group_or_create(&self, id: &str) -> GroupRef {
        self.groups
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(RefCell::new(Group::new(id))))
            .clone()
    }

    /// Appends records with acks=all; answers with the error a group client expects.
    async fn write(&self, shard: &Rc<GroupShard>, records: Vec<LogRecord>) -> i16 {
        if records.is_empty() {
            return errors::NONE;
        }
        if !self.active.get() {
            return errors::NOT_COORDINATOR;
        }
        let batch = offsets_log::build_batch(&records, now_ms());
        let out = shard
            .replicas
            .append_internal(self.tp(), batch, -1, WRITE_TIMEOUT)
            .await;
        map_write_error(out.error)
    }
}

/// Kafka's mapping of offsets-log append errors to group errors.
fn map_write_error(code: i16) -> i16 {
    match code {
        errors::NONE => errors::NONE,
        errors::UNKNOWN_TOPIC_OR_PARTITION
        | errors::NOT_ENOUGH_REPLICAS
        | errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | errors::REQUEST_TIMED_OUT => errors::COORDINATOR_NOT_AVAILABLE,
        errors::NOT_LEADER_OR_FOLLOWER | errors::KAFKA_STORAGE_ERROR => errors::NOT_COORDINATOR,
        errors::MESSAGE_TOO_LARGE | errors::RECORD_LIST_TOO_LARGE => {
            errors::INVALID_COMMIT_OFFSET_SIZE
        }
        _ => errors::UNKNOWN_SERVER_ERROR,
    }
}

/// The loaded offsets partition coordinating `group`, loading it first if this broker just
/// became its leader. Errors are Kafka codes (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, …).
pub async fn acquire(shard: &Rc<GroupShard>, group: &str) -> Result<Rc<OffsetsPartition>, i16> {
    if group.is_empty() {
        return Err(errors::INVALID_GROUP_ID);
    }
    let (index, _) = route(shard, group);
    acquire_partition(shard, index).await
}

async fn acquire_partition(
    shard: &Rc<GroupShard>,
    index: i32,
) -> Result<Rc<OffsetsPartition>, i16> {
    let me = shard.config.node_id;
    let Some((leader, epoch)) = shard.with_image(|i| {
        i.partition(OFFSETS_TOPIC, index)
            .map(|p| (p.leader, p.leader_epoch))
    }) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let coord = &shard.groups;
    if leader != me {
        coord.unload(index);
        return Err(if leader < 0 {
            errors::COORDINATOR_NOT_AVAILABLE
        } else {
            errors::NOT_COORDINATOR
        });
    }
    let existing = coord.parts.borrow().get(&index).cloned();
    if let Some(p) = existing {
        if p.leader_epoch == epoch {
            return if p.loaded.get() {
                Ok(p)
            } else {
                Err(errors::COORDINATOR_LOAD_IN_PROGRESS)
            };
        }
        coord.unload(index);
    }
    let part = Rc::new(OffsetsPartition {
        index,
        leader_epoch: epoch,
        loaded: Cell::new(false),
        active: Cell::new(true),
        groups: RefCell::new(HashMap::new()),
    });
    coord.parts.borrow_mut().insert(index, part.clone());
    match load(shard, &part).await {
        Ok(()) => {
            part.loaded.set(true);
            Ok(part)
        }
        Err(code) => {
            let mut parts = coord.parts.borrow_mut();
            if parts.get(&index).is_some_and(|p| Rc::ptr_eq(p, &part)) {
                parts.remove(&index);
            }
            deactivate(&part);
            Err(code)
        }
    }
}

/// Replays the partition from its log start: the last record of each key wins.
async fn load(shard: &Rc<GroupShard>, part: &Rc<OffsetsPartition>) -> Result<(), i16> {
    let p = shard
        .replicas
        .get_or_open(&part.tp())
        .await
        .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
    if !p.is_leader() {
        return Err(errors::NOT_COORDINATOR);
    }
    let started = Instant::now();
    let end = p.log.log_end_offset();
    let mut offset = p.log.log_start_offset();
    let mut records = 0u64;
    while offset < end {
        let batches = match p.log.read(offset, 1 << 20, end).await {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(partition = part.index, "loading offsets: {e}");
                return Err(errors::COORDINATOR_LOAD_IN_PROGRESS);
            }
        };
        for b in &batches {
            let Ok(h) = chronik_storage::parse_header(b) else {
                offset = end;
                break;
            };
            offset = h.last_offset() + 1;
            for (k, v) in offsets_log::batch_records(b) {
                if let Some(k) = k {
                    apply_record(part, &k, v.as_ref());
                    records += 1;
                }
            }
        }
    }
    let now = Instant::now();
    for g in part.groups.borrow().values() {
        for m in g.borrow_mut().members.iter_mut() {
            m.last_heartbeat = now;
        }
    }
    let level_info = records > 0;
    if level_info {
        tracing::info!(
            partition = part.index,
            groups = part.groups.borrow().len(),
            records,
            ms = started.elapsed().as_millis() as u64,
            "loaded consumer offsets partition"
        );
    }
    tracing::debug!(
        partition = part.index,
        groups = part.groups.borrow().len(),
        records,
        ms = started.elapsed().as_millis() as u64,
        "loaded consumer offsets partition"
    );
    Ok(())
}

fn apply_record(part: &OffsetsPartition, key: &Bytes, value: Option<&Bytes>) {
    let Some(k) = offsets_log::decode_key(key) else {
        return;
    };
    match k {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => match value.and_then(offsets_log::decode_offset_value) {
            Some(v) => {
                part.group_or_create(&group)
                    .borrow_mut()
                    .offsets
                    .insert((topic, partition), v);
            }
            None => {
                if let Some(g) = part.group(&group) {
                    g.borrow_mut().offsets.remove(&(topic, partition));
                }
            }
        },
        RecordKey::Group { group } => match value.and_then(offsets_log::decode_group_value) {
            Some(v) => part.group_or_create(&group).borrow_mut().apply_value(v),
            None => {
                let remove = part.group(&group).is_some_and(|g| {
                    let mut g = g.borrow_mut();
                    *g = Group {
                        offsets: std::mem::take(&mut g.offsets),
                        ..Group::new(&group)
                    };
                    g.offsets.is_empty()
                });
                if remove {
                    part.groups.borrow_mut().remove(&group);
                }
            }
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Rebalance machinery

/// Moves the group to PreparingRebalance and arms the join timer (spawned by `settle`).
fn prepare_rebalance(g: &mut Group, cfg: &GroupConfig) {
    if g.state == GroupState::CompletingRebalance {
        for m in g.members.iter_mut() {
            m.assignment = Bytes::new();
            if let Some(tx) = m.sync_waiter.take() {
                let _ = tx.try_send(SyncResult::error(errors::REBALANCE_IN_PROGRESS));
            }
        }
    }
    let initial = g.state == GroupState::Empty;
    let now = Instant::now();
    g.set_state(GroupState::PreparingRebalance);
    g.rebalance_seq += 1;
    let timeout = g.max_rebalance_timeout();
    g.initial_phase = initial;
    g.join_deadline_cap = now + timeout;
    g.join_deadline = if initial {
        now + cfg.initial_rebalance_delay.min(timeout)
    } else {
        now + timeout
    };
    g.timer_needed = Some(g.rebalance_seq);
}

/// Ends the join phase: drops members that did not rejoin, starts the next generation and
/// answers every parked JoinGroup. Returns true if the group became empty (to be persisted).
fn complete_join(g: &mut Group) -> bool {
    g.members.retain(|m| m.join_waiter.is_some());
    g.generation += 1;
    g.initial_phase = false;
    if g.members.is_empty() {
        g.protocol = None;
        g.leader = None;
        g.set_state(GroupState::Empty);
        return true;
    }
    g.protocol = g.select_protocol();
    if g.leader.as_ref().is_none_or(|l| g.member(l).is_none()) {
        g.leader = g.members.first().map(|m| m.id.clone());
    }
    g.set_state(GroupState::CompletingRebalance);
    let now = Instant::now();
    let ids: Vec<String> = g.members.iter().map(|m| m.id.clone()).collect();
    for id in ids {
        let res = g.join_result_for(&id);
        if let Some(m) = g.member_mut(&id) {
            m.last_heartbeat = now;
            if let Some(tx) = m.join_waiter.take() {
                let _ = tx.try_send(res);
            }
        }
    }
    false
}

/// After any change: spawns a requested join timer and completes the join phase if everyone
/// is in.
fn settle(shard: &Rc<GroupShard>, part: &Rc<OffsetsPartition>, g: &GroupRef) {
    let (timer, became_empty) = {
        let mut gm = g.borrow_mut();
        let timer = gm.timer_needed.take();
        let ready =
            gm.state == GroupState::PreparingRebalance && !gm.initial_phase && gm.all_joined();
        (timer, ready && complete_join(&mut gm))
    };
    if let Some(seq) = timer {
        glommio::spawn_local(join_timer(shard.clone(), part.clone(), g.clone(), seq)).detach();
    }
    if became_empty {
        persist_group_later(shard, part, g);
    }
}

async fn join_timer(shard: Rc<GroupShard>, part: Rc<OffsetsPartition>, g: GroupRef, seq: u64) {
    loop {
        let deadline = {
            let gm = g.borrow();
            if gm.rebalance_seq != seq || gm.state != GroupState::PreparingRebalance {
                return;
            }
            gm.join_deadline
        };
        if !part.active.get() {
            return;
        }
        let now = Instant::now();
        if now < deadline {
            glommio::timer::sleep(deadline - now).await;
            continue;
        }
        let became_empty = complete_join(&mut g.borrow_mut());
        if became_empty {
            persist_group_later(&shard, &part, &g);
        }
        return;
    }
}

/// Writes the group's metadata record in the background (state changes nobody waits on).
fn persist_group_later(shard: &Rc<GroupShard>, part: &Rc<OffsetsPartition>, g: &GroupRef) {
    let (key, value) = {
        let gm = g.borrow();
        (
            offsets_log::group_key(&gm.id),
            offsets_log::group_value(&gm.to_value()),
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

enum JoinStep {
    Done(JoinResult),
    Wait(async_channel::Receiver<JoinResult>),
}

pub async fn join(shard: Rc<GroupShard>, req: JoinParams) -> JoinResult {
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return JoinResult::error(c, &req.member_id),
    };
    let cfg = shard.groups.config.clone();
    if req.session_timeout_ms < cfg.min_session_timeout_ms
        || req.session_timeout_ms > cfg.max_session_timeout_ms
    {
        return JoinResult::error(errors::INVALID_SESSION_TIMEOUT, &req.member_id);
    }
    let g = match part.group(&req.group_id) {
        Some(g) => g,
        None if !req.member_id.is_empty() => {
            return JoinResult::error(errors::UNKNOWN_MEMBER_ID, &req.member_id)
        }
        None => part.group_or_create(&req.group_id),
    };
    let step = join_step(&shard, &g, &req, &cfg);
    settle(&shard, &part, &g);
    match step {
        JoinStep::Done(r) => r,
        JoinStep::Wait(rx) => rx
            .recv()
            .await
            .unwrap_or_else(|_| JoinResult::error(errors::NOT_COORDINATOR, &req.member_id)),
    }
}

fn new_member(req: &JoinParams, id: String) -> Member {
    Member {
        id,
        instance_id: req.instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
        session_timeout: Duration::from_millis(req.session_timeout_ms.max(0) as u64),
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        join_waiter: None,
        sync_waiter: None,
        last_heartbeat: Instant::now(),
    }
}

fn park_join(m: &mut Member) -> async_channel::Receiver<JoinResult> {
    let (tx, rx) = async_channel::bounded(1);
    if let Some(old) = m.join_waiter.replace(tx) {
        let _ = old.try_send(JoinResult::error(errors::REBALANCE_IN_PROGRESS, &m.id));
    }
    m.last_heartbeat = Instant::now();
    rx
}

/// Adds a member and starts (or joins) a rebalance.
fn add_member_and_rebalance(g: &mut Group, mut m: Member, cfg: &GroupConfig) -> JoinStep {
    let rx = park_join(&mut m);
    g.members.push(m);
    match g.state {
        GroupState::PreparingRebalance => {
            if g.initial_phase {
                // More members arrived during the initial delay: wait a little longer for more.
                let ext = Instant::now() + cfg.initial_rebalance_delay;
                g.join_deadline = ext.min(g.join_deadline_cap);
            }
        }
        _ => prepare_rebalance(g, cfg),
    }
    JoinStep::Wait(rx)
}

fn join_step(
    shard: &Rc<GroupShard>,
    g: &GroupRef,
    req: &JoinParams,
    cfg: &GroupConfig,
) -> JoinStep {
    let mut gm = g.borrow_mut();
    let fail = |c| JoinStep::Done(JoinResult::error(c, &req.member_id));
    if gm.state == GroupState::Dead {
        return fail(errors::COORDINATOR_NOT_AVAILABLE);
    }
    if !gm.accepts(&req.protocol_type, &req.protocols) {
        return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
    }
    if gm.members.is_empty() {
        gm.protocol_type = Some(req.protocol_type.clone());
    }
    if req.member_id.is_empty() {
        let prefix = req.instance_id.as_deref().unwrap_or(&req.client_id);
        let new_id = shard.groups.new_member_id(prefix);
        if let Some(inst) = &req.instance_id {
            if gm.member_by_instance(inst).is_some() {
                return static_rejoin(&mut gm, req, inst, new_id, cfg);
            }
            let m = new_member(req, new_id);
            return add_member_and_rebalance(&mut gm, m, cfg);
        }
        if req.require_known_member {
            let expiry = Instant::now() + Duration::from_millis(req.session_timeout_ms as u64);
            gm.pending.insert(new_id.clone(), expiry);
            return JoinStep::Done(JoinResult::error(errors::MEMBER_ID_REQUIRED, &new_id));
        }
        let m = new_member(req, new_id);
        return add_member_and_rebalance(&mut gm, m, cfg);
    }
    if gm.pending.remove(&req.member_id).is_some() {
        let m = new_member(req, req.member_id.clone());
        return add_member_and_rebalance(&mut gm, m, cfg);
    }
    if let Some(inst) = &req.instance_id {
        if let Some(m) = gm.member_by_instance(inst) {
            if m.id != req.member_id {
                return fail(errors::FENCED_INSTANCE_ID);
            }
        }
    }
    let state = gm.state;
    let is_leader = gm.leader.as_deref() == Some(req.member_id.as_str());
    let Some(m) = gm.member_mut(&req.member_id) else {
        return fail(errors::UNKNOWN_MEMBER_ID);
    };
    let unchanged = m.protocols == req.protocols;
    match state {
        GroupState::Empty | GroupState::Dead => fail(errors::UNKNOWN_MEMBER_ID),
        GroupState::PreparingRebalance => {
            m.protocols = req.protocols.clone();
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
            m.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
            JoinStep::Wait(park_join(m))
        }
        GroupState::CompletingRebalance if unchanged => {
            m.last_heartbeat = Instant::now();
            JoinStep::Done(gm.join_result_for(&req.member_id))
        }
        GroupState::Stable if unchanged && !is_leader => {
            m.last_heartbeat = Instant::now();
            JoinStep::Done(gm.join_result_for(&req.member_id))
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            m.protocols = req.protocols.clone();
            let rx = park_join(m);
            prepare_rebalance(&mut gm, cfg);
            JoinStep::Wait(rx)
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
) -> JoinStep {
    let state = g.state;
    let Some(pos) = g
        .members
        .iter()
        .position(|m| m.instance_id.as_deref() == Some(inst))
    else {
        return JoinStep::Done(JoinResult::error(errors::UNKNOWN_MEMBER_ID, ""));
    };
    let old_id = g.members[pos].id.clone();
    let unchanged = g.members[pos].protocols == req.protocols;
    {
        let m = &mut g.members[pos];
        if let Some(tx) = m.join_waiter.take() {
            let _ = tx.try_send(JoinResult::error(errors::FENCED_INSTANCE_ID, &old_id));
        }
        if let Some(tx) = m.sync_waiter.take() {
            let _ = tx.try_send(SyncResult::error(errors::FENCED_INSTANCE_ID));
        }
        m.id = new_id.clone();
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        m.last_heartbeat = Instant::now();
    }
    if g.leader.as_deref() == Some(old_id.as_str()) {
        g.leader = Some(new_id.clone());
    }
    match state {
        GroupState::Stable if unchanged => {
            let mut r = g.join_result_for(&new_id);
            // The leader keeps the current assignment instead of computing a new one.
            r.skip_assignment = g.leader.as_deref() == Some(new_id.as_str());
            JoinStep::Done(r)
        }
        GroupState::PreparingRebalance => {
            let m = &mut g.members[pos];
            m.protocols = req.protocols.clone();
            JoinStep::Wait(park_join(m))
        }
        _ => {
            let m = &mut g.members[pos];
            m.protocols = req.protocols.clone();
            let rx = park_join(m);
            prepare_rebalance(g, cfg);
            JoinStep::Wait(rx)
        }
    }
}

/// The member-id / instance-id check shared by sync, heartbeat and commit.
fn check_member(g: &Group, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
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

pub async fn sync(shard: Rc<GroupShard>, req: SyncParams) -> SyncResult {
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return SyncResult::error(c),
    };
    let Some(g) = part.group(&req.group_id) else {
        return SyncResult::error(errors::UNKNOWN_MEMBER_ID);
    };
    let (rx, persist) = {
        let mut gm = g.borrow_mut();
        if let Err(c) = check_member(&gm, &req.member_id, req.instance_id.as_deref()) {
            return SyncResult::error(c);
        }
        if req.generation != gm.generation {
            return SyncResult::error(errors::ILLEGAL_GENERATION);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| gm.protocol_type.as_ref() != Some(t))
            || req
                .protocol
                .as_ref()
                .is_some_and(|p| gm.protocol.as_ref() != Some(p))
        {
            return SyncResult::error(errors::INCONSISTENT_GROUP_PROTOCOL);
        }
        let ok = |gm: &Group, assignment: Bytes| SyncResult {
            error: errors::NONE,
            protocol_type: gm.protocol_type.clone(),
            protocol: gm.protocol.clone(),
            assignment,
        };
        match gm.state {
            GroupState::Empty | GroupState::Dead => {
                return SyncResult::error(errors::UNKNOWN_MEMBER_ID)
            }
            GroupState::PreparingRebalance => {
                return SyncResult::error(errors::REBALANCE_IN_PROGRESS)
            }
            GroupState::Stable => {
                let m = gm.member_mut(&req.member_id).expect("checked above");
                m.last_heartbeat = Instant::now();
                let a = m.assignment.clone();
                return ok(&gm, a);
            }
            GroupState::CompletingRebalance => {}
        }
        let is_leader = gm.leader.as_deref() == Some(req.member_id.as_str());
        let (tx, rx) = async_channel::bounded(1);
        if let Some(m) = gm.member_mut(&req.member_id) {
            m.sync_waiter = Some(tx);
            m.last_heartbeat = Instant::now();
        }
        let persist = if is_leader {
            let assigned: HashMap<String, Bytes> = req.assignments.iter().cloned().collect();
            for m in gm.members.iter_mut() {
                m.assignment = assigned.get(&m.id).cloned().unwrap_or_default();
            }
            Some((gm.generation, offsets_log::group_value(&gm.to_value())))
        } else {
            None
        };
        (rx, persist)
    };
    if let Some((generation, value)) = persist {
        let key = offsets_log::group_key(&req.group_id);
        let code = part.write(&shard, vec![(key, Some(value))]).await;
        {
            let mut gm = g.borrow_mut();
            if gm.generation == generation && gm.state == GroupState::CompletingRebalance {
                if code == errors::NONE {
                    gm.set_state(GroupState::Stable);
                    let pt = gm.protocol_type.clone();
                    let pr = gm.protocol.clone();
                    for m in gm.members.iter_mut() {
                        if let Some(tx) = m.sync_waiter.take() {
                            let _ = tx.try_send(SyncResult {
                                error: errors::NONE,
                                protocol_type: pt.clone(),
                                protocol: pr.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                } else {
                    for m in gm.members.iter_mut() {
                        if let Some(tx) = m.sync_waiter.take() {
                            let _ = tx.try_send(SyncResult::error(code));
                        }
                    }
                    prepare_rebalance(&mut gm, &shard.groups.config);
                }
            }
        }
        settle(&shard, &part, &g);
    }
    rx.recv()
        .await
        .unwrap_or_else(|_| SyncResult::error(errors::NOT_COORDINATOR))
}

// ---------------------------------------------------------------------------------------------
// Heartbeat and LeaveGroup

pub async fn heartbeat(
    shard: Rc<GroupShard>,
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
    let mut gm = g.borrow_mut();
    if let Err(c) = check_member(&gm, &member_id, instance_id.as_deref()) {
        return c;
    }
    let state = gm.state;
    let gen_ok = generation == gm.generation;
    let m = gm.member_mut(&member_id).expect("checked above");
    match state {
        GroupState::Empty | GroupState::Dead => errors::UNKNOWN_MEMBER_ID,
        GroupState::PreparingRebalance => {
            m.last_heartbeat = Instant::now();
            errors::REBALANCE_IN_PROGRESS
        }
        _ if !gen_ok => errors::ILLEGAL_GENERATION,
        _ => {
            m.last_heartbeat = Instant::now();
            errors::NONE
        }
    }
}

/// Removes members (by member id, or by group.instance.id for static members). Returns the
/// group-level error and one error per member.
pub async fn leave(
    shard: Rc<GroupShard>,
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
    let mut out = Vec::with_capacity(members.len());
    let mut removed_any = false;
    {
        let mut gm = g.borrow_mut();
        for (member_id, instance_id) in &members {
            let id = match instance_id {
                Some(inst) => match gm.member_by_instance(inst) {
                    Some(m) if member_id.is_empty() || m.id == *member_id => m.id.clone(),
                    Some(_) => {
                        out.push(errors::FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => {
                        out.push(errors::UNKNOWN_MEMBER_ID);
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if gm.pending.remove(&id).is_some() {
                out.push(errors::NONE);
                continue;
            }
            if remove_member(&mut gm, &id) {
                removed_any = true;
                out.push(errors::NONE);
            } else {
                out.push(errors::UNKNOWN_MEMBER_ID);
            }
        }
        if removed_any {
            after_removal(&mut gm, &shard.groups.config);
        }
    }
    settle(&shard, &part, &g);
    (errors::NONE, out)
}

fn remove_member(g: &mut Group, id: &str) -> bool {
    let Some(pos) = g.members.iter().position(|m| m.id == id) else {
        return false;
    };
    let m = g.members.remove(pos);
    if let Some(tx) = m.join_waiter {
        let _ = tx.try_send(JoinResult::error(errors::UNKNOWN_MEMBER_ID, id));
    }
    if let Some(tx) = m.sync_waiter {
        let _ = tx.try_send(SyncResult::error(errors::UNKNOWN_MEMBER_ID));
    }
    if g.leader.as_deref() == Some(id) {
        g.leader = g.members.first().map(|m| m.id.clone());
    }
    true
}

/// A member left or expired: stable groups rebalance; a join phase may now be complete.
fn after_removal(g: &mut Group, cfg: &GroupConfig) {
    if matches!(
        g.state,
        GroupState::Stable | GroupState::CompletingRebalance
    ) {
        prepare_rebalance(g, cfg);
        // Nobody to wait for: end the (non-initial) join phase at once if the group emptied.
        g.initial_phase = false;
    }
}

// ---------------------------------------------------------------------------------------------
// Offsets

pub struct CommitPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

pub struct CommitParams {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// Per topic, per partition error codes in request order.
pub async fn commit(shard: Rc<GroupShard>, req: CommitParams) -> Vec<(String, Vec<(i32, i16)>)> {
    let all = |code: i16, req: &CommitParams| {
        req.topics
            .iter()
            .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
            .collect()
    };
    let part = match acquire(&shard, &req.group_id).await {
        Ok(p) => p,
        Err(c) => return all(c, &req),
    };
    let g = match part.group(&req.group_id) {
        Some(g) => g,
        // A consumer without group management (generation -1) may commit to a new group.
        None if req.generation < 0 => part.group_or_create(&req.group_id),
        None => return all(errors::ILLEGAL_GENERATION, &req),
    };
    {
        let mut gm = g.borrow_mut();
        let simple = req.generation < 0 && gm.state == GroupState::Empty;
        if gm.state == GroupState::Dead {
            return all(errors::COORDINATOR_NOT_AVAILABLE, &req);
        }
        if !simple {
            if let Err(c) = check_member(&gm, &req.member_id, req.instance_id.as_deref()) {
                return all(c, &req);
            }
            if req.generation != gm.generation {
                return all(errors::ILLEGAL_GENERATION, &req);
            }
            if gm.state == GroupState::CompletingRebalance {
                return all(errors::REBALANCE_IN_PROGRESS, &req);
            }
            if let Some(m) = gm.member_mut(&req.member_id) {
                m.last_heartbeat = Instant::now();
            }
        }
    }
    let max_meta = shard.groups.config.max_metadata_bytes;
    let now = now_ms();
    let mut records = Vec::new();
    let mut values = Vec::new();
    let mut result: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    for (topic, parts) in &req.topics {
        let mut codes = Vec::new();
        for p in parts {
            let meta = p.metadata.clone().unwrap_or_default();
            if meta.len() > max_meta {
                codes.push((p.partition, errors::OFFSET_METADATA_TOO_LARGE));
                continue;
            }
            let v = OffsetValue {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata: meta,
                commit_timestamp: now,
            };
            records.push((
                offsets_log::offset_key(&req.group_id, topic, p.partition),
                Some(offsets_log::offset_value(&v)),
            ));
            values.push(((topic.clone(), p.partition), v));
            codes.push((p.partition, errors::NONE));
        }
        result.push((topic.clone(), codes));
    }
    let code = part.write(&shard, records).await;
    if code == errors::NONE {
        let mut gm = g.borrow_mut();
        for (k, v) in values {
            gm.offsets.insert(k, v);
        }
    } else {
        for (_, codes) in result.iter_mut() {
            for c in codes.iter_mut() {
                if c.1 == errors::NONE {
                    c.1 = code;
                }
            }
        }
    }
    result
}

/// One fetched offset: (partition, offset, leader epoch, metadata, error).
pub type FetchedOffset = (i32, i64, i32, Option<String>, i16);

/// Committed offsets of a group: the requested partitions, or all when `topics` is None.
pub async fn fetch_offsets(
    shard: Rc<GroupShard>,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (i16, Vec<(String, Vec<FetchedOffset>)>) {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => {
            let t = topics
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, -1, -1, None, c)).collect()))
                .collect();
            return (c, t);
        }
    };
    let g = part.group(&group_id);
    let g = g.as_ref().map(|g| g.borrow());
    let lookup = |t: &str, p: i32| -> FetchedOffset {
        match g.as_ref().and_then(|g| g.offsets.get(&(t.to_string(), p))) {
            Some(v) => (
                p,
                v.offset,
                v.leader_epoch,
                Some(v.metadata.clone()),
                errors::NONE,
            ),
            None => (p, -1, -1, Some(String::new()), errors::NONE),
        }
    };
    let out = match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(t, ps)| {
                let v = ps.into_iter().map(|p| lookup(&t, p)).collect();
                (t, v)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<FetchedOffset>> =
                Default::default();
            if let Some(g) = g.as_ref() {
                for ((t, p), v) in g.offsets.iter() {
                    by_topic.entry(t.clone()).or_default().push((
                        *p,
                        v.offset,
                        v.leader_epoch,
                        Some(v.metadata.clone()),
                        errors::NONE,
                    ));
                }
            }
            by_topic
                .into_iter()
                .map(|(t, mut v)| {
                    v.sort_by_key(|x| x.0);
                    (t, v)
                })
                .collect()
        }
    };
    (errors::NONE, out)
}

// ---------------------------------------------------------------------------------------------
// Admin: list, describe, delete

/// (group id, protocol type, state) of the groups this shard coordinates.
pub fn list_local(shard: &GroupShard) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    for p in shard.groups.loaded_parts() {
        for g in p.groups.borrow().values() {
            let g = g.borrow();
            if g.state == GroupState::Dead {
                continue;
            }
            out.push((
                g.id.clone(),
                g.protocol_type.clone().unwrap_or_default(),
                g.state.name(),
            ));
        }
    }
    out
}

/// (group, topic, partition, committed offset) of every group this shard coordinates, for
/// the lag metric.
pub fn committed_offsets(shard: &GroupShard) -> Vec<(String, String, i32, i64)> {
    let mut out = Vec::new();
    for p in shard.groups.loaded_parts() {
        for g in p.groups.borrow().values() {
            let g = g.borrow();
            for ((topic, partition), v) in &g.offsets {
                out.push((g.id.clone(), topic.clone(), *partition, v.offset));
            }
        }
    }
    out
}

pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct Described {
    pub error: i16,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

pub async fn describe(shard: Rc<GroupShard>, group_id: String) -> Described {
    let dead = |error| Described {
        error,
        state: GroupState::Dead.name(),
        protocol_type: String::new(),
        protocol: String::new(),
        members: Vec::new(),
    };
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return dead(c),
    };
    let Some(g) = part.group(&group_id) else {
        return dead(errors::NONE);
    };
    let g = g.borrow();
    let stable = g.state == GroupState::Stable;
    let protocol = g.protocol.clone().unwrap_or_default();
    Described {
        error: errors::NONE,
        state: g.state.name(),
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        protocol: if stable {
            protocol.clone()
        } else {
            String::new()
        },
        members: g
            .members
            .iter()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect(),
    }
}

/// Deletes an empty group and its offsets (tombstones in the log).
pub async fn delete_group(shard: Rc<GroupShard>, group_id: String) -> i16 {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    let Some(g) = part.group(&group_id) else {
        return errors::GROUP_ID_NOT_FOUND;
    };
    let records = {
        let mut gm = g.borrow_mut();
        match gm.state {
            GroupState::Dead => return errors::GROUP_ID_NOT_FOUND,
            GroupState::Empty => {}
            _ => return errors::NON_EMPTY_GROUP,
        }
        gm.set_state(GroupState::Dead);
        let mut r: Vec<LogRecord> = gm
            .offsets
            .keys()
            .map(|(t, p)| (offsets_log::offset_key(&group_id, t, *p), None))
            .collect();
        r.push((offsets_log::group_key(&group_id), None));
        r
    };
    let code = part.write(&shard, records).await;
    if code == errors::NONE {
        let mut groups = part.groups.borrow_mut();
        if groups.get(&group_id).is_some_and(|x| Rc::ptr_eq(x, &g)) {
            groups.remove(&group_id);
        }
    } else {
        g.borrow_mut().set_state(GroupState::Empty);
    }
    code
}

/// OffsetDelete: the group-level error and per topic, per partition errors.
pub async fn delete_offsets(
    shard: Rc<GroupShard>,
    group_id: String,
    topics: Vec<(String, Vec<i32>)>,
) -> (i16, Vec<(String, Vec<(i32, i16)>)>) {
    let part = match acquire(&shard, &group_id).await {
        Ok(p) => p,
        Err(c) => return (c, Vec::new()),
    };
    let Some(g) = part.group(&group_id) else {
        return (errors::GROUP_ID_NOT_FOUND, Vec::new());
    };
    let (records, result) = {
        let gm = g.borrow();
        if gm.state == GroupState::Dead {
            return (errors::GROUP_ID_NOT_FOUND, Vec::new());
        }
        let subscribed = if gm.state == GroupState::Empty {
            Vec::new()
        } else {
            match gm.subscribed_topics() {
                Some(t) => t,
                None => return (errors::NON_EMPTY_GROUP, Vec::new()),
            }
        };
        let mut records = Vec::new();
        let mut result = Vec::new();
        for (t, ps) in &topics {
            let mut codes = Vec::new();
            for p in ps {
                if subscribed.contains(t) {
                    codes.push((*p, errors::GROUP_SUBSCRIBED_TO_TOPIC));
                } else {
                    if gm.offsets.contains_key(&(t.clone(), *p)) {
                        records.push((offsets_log::offset_key(&group_id, t, *p), None));
                    }
                    codes.push((*p, errors::NONE));
                }
            }
            result.push((t.clone(), codes));
        }
        (records, result)
    };
    let deleted: Vec<(String, i32)> = records
        .iter()
        .filter_map(|(k, _)| match offsets_log::decode_key(k) {
            Some(RecordKey::Offset {
                topic, partition, ..
            }) => Some((topic, partition)),
            _ => None,
        })
        .collect();
    let code = part.write(&shard, records).await;
    if code != errors::NONE {
        return (code, Vec::new());
    }
    let mut gm = g.borrow_mut();
    for k in deleted {
        gm.offsets.remove(&k);
    }
    (errors::NONE, result)
}

// ---------------------------------------------------------------------------------------------
// Background: loading, session expiry, offset expiry

pub async fn run_background(shard: Rc<GroupShard>) {
    let mut last_retention = Instant::now();
    loop {
        glommio::timer::sleep(TICK).await;
        if shard.shutting_down.get() {
            return;
        }
        load_led_partitions(&shard).await;
        expire_members(&shard);
        if last_retention.elapsed() >= shard.groups.config.retention_check_interval {
            last_retention = Instant::now();
            for part in shard.groups.loaded_parts() {
                expire_offsets(&shard, &part).await;
            }
        }
    }
}

/// Loads every offsets partition this shard owns and this broker leads (so ListGroups sees
/// its groups and members expire), and unloads those it no longer leads.
async fn load_led_partitions(shard: &Rc<GroupShard>) {
    let me = shard.config.node_id;
    let wanted: Vec<(i32, i32)> = shard.with_image(|i| {
        i.topic(OFFSETS_TOPIC)
            .map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(idx, _)| shard.owner_of(OFFSETS_TOPIC, *idx as i32) == shard.id)
                    .map(|(idx, p)| (idx as i32, if p.leader == me { p.leader_epoch } else { -2 }))
                    .collect()
            })
            .unwrap_or_default()
    });
    let current: Vec<(i32, i32)> = shard
        .groups
        .parts
        .borrow()
        .values()
        .map(|p| (p.index, p.leader_epoch))
        .collect();
    for (idx, epoch) in current {
        if !wanted.contains(&(idx, epoch)) {
            shard.groups.unload(idx);
        }
    }
    for (idx, epoch) in wanted {
        if epoch == -2 || shard.groups.parts.borrow().contains_key(&idx) {
            continue;
        }
        let _ = acquire_partition(shard, idx).await;
    }
}

fn expire_members(shard: &Rc<GroupShard>) {
    let now = Instant::now();
    for part in shard.groups.loaded_parts() {
        let groups: Vec<GroupRef> = part.groups.borrow().values().cloned().collect();
        for g in groups {
            let changed = {
                let mut gm = g.borrow_mut();
                let before = gm.pending.len();
                gm.pending.retain(|_, exp| *exp > now);
                let mut changed = gm.pending.len() != before;
                let dead: Vec<String> = gm
                    .members
                    .iter()
                    .filter(|m| !m.is_alive(now))
                    .map(|m| m.id.clone())
                    .collect();
                for id in &dead {
                    tracing::info!(group = %gm.id, member = %id, "member session expired");
                    remove_member(&mut gm, id);
                }
                if !dead.is_empty() {
                    after_removal(&mut gm, &shard.groups.config);
                    changed = true;
                }
                changed
            };
            if changed {
                settle(shard, &part, &g);
            }
        }
    }
}

/// Expires offsets of empty groups older than offsets.retention.minutes (counted from the
/// later of the commit and the moment the group became empty), and removes groups left with
/// nothing.
async fn expire_offsets(shard: &Rc<GroupShard>, part: &Rc<OffsetsPartition>) {
    let retention = shard.groups.config.offsets_retention.as_millis() as i64;
    let now = now_ms();
    let groups: Vec<GroupRef> = part.groups.borrow().values().cloned().collect();
    for g in groups {
        let (records, keys, drop_group) = {
            let gm = g.borrow();
            if gm.state != GroupState::Empty {
                continue;
            }
            let keys: Vec<(String, i32)> = gm
                .offsets
                .iter()
                .filter(|(_, v)| now - v.commit_timestamp.max(gm.state_timestamp) > retention)
                .map(|(k, _)| k.clone())
                .collect();
            let drop_group = keys.len() == gm.offsets.len();
            let mut records: Vec<LogRecord> = keys
                .iter()
                .map(|(t, p)| (offsets_log::offset_key(&gm.id, t, *p), None))
                .collect();
            if drop_group {
                records.push((offsets_log::group_key(&gm.id), None));
            }
            (records, keys, drop_group)
        };
        if keys.is_empty() && !drop_group {
            continue;
        }
        if part.write(shard, records).await != errors::NONE {
            continue;
        }
        let id = {
            let mut gm = g.borrow_mut();
            for k in &keys {
                gm.offsets.remove(k);
            }
            tracing::info!(group = %gm.id, offsets = keys.len(), "expired committed offsets");
            gm.id.clone()
        };
        if drop_group && g.borrow().state == GroupState::Empty && g.borrow().offsets.is_empty() {
            part.groups.borrow_mut().remove(&id);
        }
    }
}

/// Used by tests and the bench: the number of loaded groups on this shard.
pub fn loaded_group_count(shard: &GroupShard) -> usize {
    shard
        .groups
        .loaded_parts()
        .iter()
        .map(|p| p.groups.borrow().len())
        .sum()
}
