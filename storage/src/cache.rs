//! Per-shard read cache of recent batches, shared by every log of the shard (`Rc`, no locks).
//! Batches enter on append (the frozen `Bytes` the producer sent, no copy) and leave in FIFO
//! order once the shard's budget is exceeded: recent data is what tailing consumers and
//! followers fetch.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

/// base offset → (last offset, batch) of one log.
type LogBatches = BTreeMap<i64, (i64, Bytes)>;

pub struct ReadCache {
    budget: Cell<usize>,
    used: Cell<usize>,
    next_log_id: Cell<u64>,
    /// log id → base offset → (last offset, batch).
    logs: RefCell<HashMap<u64, LogBatches>>,
    /// Insertion order for eviction; may hold entries already removed by truncation.
    fifo: RefCell<VecDeque<(u64, i64)>>,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl ReadCache {
    pub fn new(budget_bytes: usize) -> Rc<ReadCache> {
        Rc::new(ReadCache {
            budget: Cell::new(budget_bytes),
            used: Cell::new(0),
            next_log_id: Cell::new(1),
            logs: RefCell::new(HashMap::new()),
            fifo: RefCell::new(VecDeque::new()),
            hits: Cell::new(0),
            misses: Cell::new(0),
        })
    }

    pub fn set_budget(&self, budget_bytes: usize) {
        self.budget.set(budget_bytes);
        self.evict();
    }

    pub fn used_bytes(&self) -> usize {
        self.used.get()
    }

    /// (hits, misses) of batch lookups, for benchmarks and metrics.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    pub(crate) fn register(&self) -> u64 {
        let id = self.next_log_id.get();
        self.next_log_id.set(id + 1);
        id
    }

    pub(crate) fn insert(&self, log: u64, base: i64, last: i64, batch: Bytes) {
        if batch.len() > self.budget.get() {
            return;
        }
        let len = batch.len();
        let old = self
            .logs
            .borrow_mut()
            .entry(log)
            .or_default()
            .insert(base, (last, batch));
        if let Some((_, b)) = old {
            self.used.set(self.used.get() - b.len());
        }
        self.used.set(self.used.get() + len);
        self.fifo.borrow_mut().push_back((log, base));
        self.evict();
    }

    fn evict(&self) {
        let mut fifo = self.fifo.borrow_mut();
        let mut logs = self.logs.borrow_mut();
        while self.used.get() > self.budget.get() {
            let Some((log, base)) = fifo.pop_front() else {
                break;
            };
            if let Some(m) = logs.get_mut(&log) {
                if let Some((_, b)) = m.remove(&base) {
                    self.used.set(self.used.get() - b.len());
                }
            }
        }
        // Stale FIFO entries (already removed) would otherwise accumulate under truncation churn.
        if fifo.len() > 1024 && fifo.len() > 4 * logs.values().map(|m| m.len()).sum::<usize>() {
            fifo.retain(|(l, b)| logs.get(l).is_some_and(|m| m.contains_key(b)));
        }
    }

    /// The cached batch containing `offset`: (base, last, bytes).
    pub(crate) fn get(&self, log: u64, offset: i64) -> Option<(i64, i64, Bytes)> {
        let logs = self.logs.borrow();
        let hit = logs.get(&log).and_then(|m| {
            m.range(..=offset)
                .next_back()
                .filter(|(_, (last, _))| *last >= offset)
                .map(|(base, (last, b))| (*base, *last, b.clone()))
        });
        if hit.is_some() {
            self.hits.set(self.hits.get() + 1);
        } else {
            self.misses.set(self.misses.get() + 1);
        }
        hit
    }

    /// Forgets batches ending at or after `offset` (truncation, failed writes).
    pub(crate) fn remove_from(&self, log: u64, offset: i64) {
        let mut logs = self.logs.borrow_mut();
        if let Some(m) = logs.get_mut(&log) {
            // The batch straddling `offset` goes too.
            let start = m
                .range(..offset)
                .next_back()
                .filter(|(_, (last, _))| *last >= offset)
                .map_or(offset, |(b, _)| *b);
            let tail = m.split_off(&start);
            let freed: usize = tail.values().map(|(_, b)| b.len()).sum();
            self.used.set(self.used.get() - freed);
        }
    }

    /// Forgets batches wholly below `offset` (log start moved).
    pub(crate) fn remove_below(&self, log: u64, offset: i64) {
        let mut logs = self.logs.borrow_mut();
        if let Some(m) = logs.get_mut(&log) {
            let keep_from = m
                .range(..offset)
                .next_back()
                .filter(|(_, (last, _))| *last >= offset)
                .map_or(offset, |(b, _)| *b);
            let keep = m.split_off(&keep_from);
            let freed: usize = m.values().map(|(_, b)| b.len()).sum();
            *m = keep;
            self.used.set(self.used.get() - freed);
        }
    }

    pub(crate) fn remove_log(&self, log: u64) {
        if let Some(m) = self.logs.borrow_mut().remove(&log) {
            let freed: usize = m.values().map(|(_, b)| b.len()).sum();
            self.used.set(self.used.get() - freed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_evicts_oldest_first() {
        let c = ReadCache::new(250);
        let id = c.register();
        for i in 0..5i64 {
            c.insert(id, i * 10, i * 10 + 9, Bytes::from(vec![0u8; 100]));
        }
        assert!(c.used_bytes() <= 250);
        assert!(c.get(id, 5).is_none());
        assert_eq!(c.get(id, 45).map(|(b, l, _)| (b, l)), Some((40, 49)));
        assert_eq!(c.get(id, 35).map(|(b, _, _)| b), Some(30));
    }

    #[test]
    fn truncation_removes_straddling_batch() {
        let c = ReadCache::new(10_000);
        let id = c.register();
        let other = c.register();
        for i in 0..4i64 {
            c.insert(id, i * 10, i * 10 + 9, Bytes::from(vec![0u8; 10]));
        }
        c.insert(other, 0, 9, Bytes::from(vec![0u8; 10]));
        c.remove_from(id, 25);
        assert!(c.get(id, 20).is_none());
        assert!(c.get(id, 15).is_some());
        c.remove_below(id, 12);
        assert!(c.get(id, 5).is_none());
        assert!(c.get(id, 12).is_some());
        assert_eq!(c.used_bytes(), 20);
        c.remove_log(id);
        assert_eq!(c.used_bytes(), 10);
    }
}
