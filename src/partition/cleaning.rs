//! What the log cleaner needs from a partition's transaction and producer state, and what a
//! cleaning round tells it back (see `chronik_storage`'s `clean_txn` for the rules).

use super::{Partition, TXN_SNAPSHOT};
use chronik_storage::{AbortedRange, ProducerTail, TxnContext};

impl Partition {
    /// The aborted transactions and producer tails a cleaning round works with.
    pub fn cleaner_txn_context(&self) -> TxnContext {
        let aborted = self
            .txns
            .borrow()
            .aborted()
            .map(|a| AbortedRange {
                producer_id: a.producer_id,
                first_offset: a.first_offset,
                marker_offset: a.last_offset,
            })
            .collect();
        let producers = self
            .producers
            .borrow()
            .tails()
            .map(|(id, epoch, last_data_offset)| {
                (
                    id,
                    ProducerTail {
                        epoch,
                        last_data_offset,
                    },
                )
            })
            .collect();
        TxnContext { aborted, producers }
    }

    /// A cleaning round left nothing of these aborted transactions: the index forgets them, so
    /// read_committed fetches are no longer told of them and a later round may remove their
    /// markers. The transaction snapshot on disk still lists them, so it goes first (a crash
    /// before the next clean close then replays transaction state from the log start, which
    /// agrees with the cleaned log); if it cannot be removed the index keeps them, and with
    /// them their markers.
    pub fn forget_cleaned_aborts(&self, gone: &[AbortedRange]) {
        if gone.is_empty() {
            return;
        }
        match std::fs::remove_file(self.dir.join(TXN_SNAPSHOT)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, "cannot remove the transaction snapshot: {e}");
                return;
            }
        }
        let gone: Vec<(i64, i64)> = gone
            .iter()
            .map(|a| (a.producer_id, a.marker_offset))
            .collect();
        self.txns.borrow_mut().forget_aborted(&gone);
    }
}
