//! The offsets partitions this shard leads, their groups, and their log: loading a partition
//! when this broker becomes its leader, and appending records with acks=all.

use super::host::{self, Shard};
use super::machine::{Clock, Effect, MemberIds};
use super::offsets_log::{self, LogRecord, RecordKey};
use super::state::{now_ms, Group, JoinResult, SyncResult};
use super::{route, GroupConfig};
use crate::kafka::errors;
use crate::partition::replay::{
    forget_failed_load, held_at_epoch, LedAtEpoch, LoadedParts, LoadingCoordinator,
};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a write to the offsets log may wait for acks=all.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for a load another task started before it answers
/// COORDINATOR_LOAD_IN_PROGRESS. The loader starts as soon as leadership arrives, which is
/// also when clients first find the coordinator, so without a wait their first request would
/// usually be refused.
const LOAD_WAIT: Duration = Duration::from_secs(2);

/// A group and the shell's side of it: the reply channels of its parked requests and its
/// session timer.
pub struct GroupEntry {
    pub group: Group,
    join_waiters: HashMap<String, async_channel::Sender<JoinResult>>,
    sync_waiters: HashMap<String, async_channel::Sender<SyncResult>>,
    /// The armed session-expiry timer: (deadline, token).
    pub session_timer: Option<(Instant, u64)>,
}

pub type GroupRef = Rc<RefCell<GroupEntry>>;

/// The receivers of the requests parked by one step.
#[derive(Default)]
pub struct Parked {
    pub join: Option<async_channel::Receiver<JoinResult>>,
    pub sync: Option<async_channel::Receiver<SyncResult>>,
}

impl GroupEntry {
    fn new(group: Group) -> GroupEntry {
        GroupEntry {
            group,
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            session_timer: None,
        }
    }

    /// Carries out the core's replies and parkings in order.
    pub fn deliver(&mut self, actions: Vec<Effect>) -> Parked {
        let mut parked = Parked::default();
        for a in actions {
            match a {
                Effect::ParkJoin(id) => {
                    let (tx, rx) = async_channel::bounded(1);
                    self.join_waiters.insert(id, tx);
                    parked.join = Some(rx);
                }
                Effect::ParkSync(id) => {
                    let (tx, rx) = async_channel::bounded(1);
                    // A sync parked before under this id is dropped: it answers NOT_COORDINATOR.
                    self.sync_waiters.insert(id, tx);
                    parked.sync = Some(rx);
                }
                Effect::JoinReply(id, r) => {
                    if let Some(tx) = self.join_waiters.remove(&id) {
                        let _ = tx.try_send(r);
                    }
                }
                Effect::SyncReply(id, r) => {
                    if let Some(tx) = self.sync_waiters.remove(&id) {
                        let _ = tx.try_send(r);
                    }
                }
            }
        }
        self.prune_waiters();
        parked
    }

    /// Drops the channels of members no longer waiting (removed without an answer, e.g. not
    /// rejoined in time): their requests answer NOT_COORDINATOR instead of hanging.
    fn prune_waiters(&mut self) {
        let g = &self.group;
        if !self.join_waiters.is_empty() {
            self.join_waiters
                .retain(|id, _| g.member(id).is_some_and(|m| m.awaiting_join));
        }
        if !self.sync_waiters.is_empty() {
            self.sync_waiters
                .retain(|id, _| g.member(id).is_some_and(|m| m.awaiting_sync));
        }
    }
}

/// The groups of one `__consumer_offsets` partition this broker leads.
pub struct OffsetsPartition {
    pub index: i32,
    pub leader_epoch: i32,
    pub loaded: Cell<bool>,
    /// False once unloaded (leadership moved): timers of its groups stop.
    pub active: Cell<bool>,
    pub groups: RefCell<HashMap<String, GroupRef>>,
    /// Tokens of session timers, so a superseded timer knows to stop.
    pub timer_seq: Cell<u64>,
    /// Closed when the load ends (its sender is dropped), so requests can wait for it.
    load_done: async_channel::Receiver<()>,
    /// Offset records of open transactions (TxnOffsetCommit), by producer id: applied when
    /// the commit marker reaches this partition, dropped at the abort marker.
    pub txn_pending: RefCell<host::PendingTxnRecords>,
}

/// Per-shard coordinator state: the offsets partitions this shard serves.
pub struct GroupCoordinator {
    pub config: GroupConfig,
    pub(super) parts: LoadedParts<OffsetsPartition>,
    member_seq: Cell<u64>,
}

impl Default for GroupCoordinator {
    fn default() -> Self {
        Self::new(GroupConfig::default())
    }
}

impl MemberIds for GroupCoordinator {
    /// `prefix-` and a random UUID-shaped suffix, as Kafka's member ids look.
    fn next_member_id(&self, prefix: &str) -> String {
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
}

impl LoadingCoordinator for GroupCoordinator {
    type Part = OffsetsPartition;
    fn parts(&self) -> &LoadedParts<OffsetsPartition> {
        &self.parts
    }
    fn unload_part(&self, index: i32) {
        self.unload(index)
    }
}

impl LedAtEpoch for OffsetsPartition {
    fn leader_epoch(&self) -> i32 {
        self.leader_epoch
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

    pub fn loaded_parts(&self) -> Vec<Rc<OffsetsPartition>> {
        self.parts
            .borrow()
            .values()
            .filter(|p| p.loaded.get())
            .cloned()
            .collect()
    }

    pub fn unload(&self, index: i32) {
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
    pub fn group(&self, id: &str) -> Option<GroupRef> {
        self.groups.borrow().get(id).cloned()
    }

    pub fn group_or_create(&self, id: &str) -> GroupRef {
        self.groups
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| {
                Rc::new(RefCell::new(GroupEntry::new(Group::new(
                    id,
                    &Clock::system(),
                ))))
            })
            .clone()
    }

    /// Appends records with acks=all; answers with the error a group client expects.
    pub async fn write(&self, shard: &Rc<Shard>, records: Vec<LogRecord>) -> i16 {
        if records.is_empty() {
            return errors::NONE;
        }
        if !self.active.get() {
            return errors::NOT_COORDINATOR;
        }
        let batch = offsets_log::build_batch(&records, now_ms());
        map_write_error(host::append(shard, self.index, batch, WRITE_TIMEOUT).await)
    }
}

/// Kafka's mapping of offsets-log append errors to group errors.
pub(super) fn map_write_error(code: i16) -> i16 {
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
                super::background::arm_session_timer(shard, &part, &g);
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
    let mut pending = host::PendingTxnRecords::new();
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

pub fn apply_record(part: &OffsetsPartition, key: &Bytes, value: Option<&Bytes>) {
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
                    .group
                    .offsets
                    .insert((topic, partition), v);
            }
            None => {
                if let Some(g) = part.group(&group) {
                    g.borrow_mut().group.offsets.remove(&(topic, partition));
                }
            }
        },
        RecordKey::Group { group } => match value.and_then(offsets_log::decode_group_value) {
            Some(v) => part
                .group_or_create(&group)
                .borrow_mut()
                .group
                .apply_value(v, Instant::now()),
            None => {
                let remove = part.group(&group).is_some_and(|g| {
                    let g = &mut g.borrow_mut().group;
                    *g = Group {
                        offsets: std::mem::take(&mut g.offsets),
                        ..Group::new(&group, &Clock::system())
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
