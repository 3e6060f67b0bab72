//! The transaction coordinator's state on one shard: the `__transaction_state` partitions it
//! leads and loaded, and the transactional ids in each. Owned by the shard's `Services`; what is
//! done with it (loading, persisting, markers) is in `coordinator`, which runs on `Services`.
//! This module stays below `services` in the layering, so it imports nothing above
//! `partition`.

use super::state::TxnMeta;
use crate::partition::replay::{LedAtEpoch, LoadedParts, LoadingCoordinator};
use crate::shard::event::LocalEvent;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// The transactional ids of one `__transaction_state` partition this broker leads.
pub struct TxnPartition {
    pub index: i32,
    /// The partition's leader epoch: the coordinator epoch markers carry.
    pub leader_epoch: i32,
    pub(super) loaded: Cell<bool>,
    /// False once leadership moved: background work for it stops.
    pub(super) active: Cell<bool>,
    pub(super) txns: RefCell<HashMap<String, TxnMeta>>,
    /// Ids with a state write in flight: other requests for them wait.
    pub(super) busy: RefCell<HashSet<String>>,
    /// Notified whenever an id's state or busy mark changes, or the partition is unloaded:
    /// held requests re-check their id.
    pub(super) changed: LocalEvent,
}

impl TxnPartition {
    pub fn get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    /// Every id and its state (DescribeTransactions / ListTransactions / expiry).
    pub fn snapshot(&self) -> Vec<(String, TxnMeta)> {
        self.txns
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Per-shard coordinator state.
#[derive(Default)]
pub struct TxnCoordinator {
    pub(super) parts: LoadedParts<TxnPartition>,
}

impl LoadingCoordinator for TxnCoordinator {
    type Part = TxnPartition;
    fn parts(&self) -> &LoadedParts<TxnPartition> {
        &self.parts
    }
    fn unload_part(&self, index: i32) {
        self.unload(index)
    }
}

impl LedAtEpoch for TxnPartition {
    fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }
}

impl TxnCoordinator {
    pub(super) fn unload(&self, index: i32) {
        let removed = self.parts.borrow_mut().remove(&index);
        if let Some(p) = removed {
            p.active.set(false);
            p.changed.notify();
        }
    }

    pub fn loaded(&self) -> Vec<Rc<TxnPartition>> {
        self.parts
            .borrow()
            .values()
            .filter(|p| p.loaded.get() && p.active.get())
            .cloned()
            .collect()
    }
}
