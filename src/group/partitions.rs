//! The state of the offsets partitions this shard leads: their groups (with the reply channels
//! of parked requests and the session timers' tokens), and how a log record changes them. No
//! I/O here: loading is in `offsets_partition`, appending in `append`.

use super::machine::{Clock, Effect, MemberIds};
use super::offsets_log::{self, RecordKey};
use super::state::{Group, JoinResult, SyncResult};
use super::GroupConfig;
use crate::partition::replay::{LedAtEpoch, LoadedParts, LoadingCoordinator};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// Records of transactions still open at the end of a replay, by producer id.
pub type PendingTxnRecords = HashMap<i64, Vec<(Bytes, Option<Bytes>)>>;

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
    pub(super) fn new(group: Group) -> GroupEntry {
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
    pub(super) load_done: async_channel::Receiver<()>,
    /// Offset records of open transactions (TxnOffsetCommit), by producer id: applied when
    /// the commit marker reaches this partition, dropped at the abort marker.
    pub txn_pending: RefCell<PendingTxnRecords>,
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

pub(super) fn deactivate(p: &OffsetsPartition) {
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
