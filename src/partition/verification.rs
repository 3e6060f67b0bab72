//! A KIP-890 verification in flight for one producer in one partition: the partition holds it
//! (so the producer's other batches wait for the same answer, and a marker can void it) while
//! the transaction coordinator is asked (`crate::txn::verify`).

use crate::shard::event::LocalEvent;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// A verification in flight for one producer in one partition.
pub struct Verification {
    pub epoch: i16,
    /// Set when it ended: the coordinator's answer as the produce returns it.
    outcome: Cell<Option<i16>>,
    /// False once a marker of the producer was written meanwhile.
    valid: Cell<bool>,
    done: LocalEvent,
}

impl Verification {
    pub fn new(epoch: i16) -> Rc<Verification> {
        Rc::new(Verification {
            epoch,
            outcome: Cell::new(None),
            valid: Cell::new(true),
            done: LocalEvent::new(),
        })
    }

    /// A marker of the producer was written: a batch verified before it must not open a new
    /// transaction after it.
    pub fn void(&self) {
        self.valid.set(false);
    }

    /// False once voided.
    pub fn is_valid(&self) -> bool {
        self.valid.get()
    }

    /// Ends it with the coordinator's answer, waking the batches waiting on it.
    pub fn finish(&self, code: i16) {
        self.outcome.set(Some(code));
        self.done.notify();
    }

    /// Its outcome, waiting up to `limit` for it to end (None: still running).
    pub async fn outcome_within(&self, limit: Duration) -> Option<i16> {
        if self.outcome.get().is_none() {
            let wait = glommio::timer::sleep(limit);
            futures_lite::future::or(self.done.listen(), wait).await;
        }
        self.outcome.get()
    }
}
