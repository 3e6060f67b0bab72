//! A shard-wide budget for background high-watermark checkpoints.
//!
//! Each checkpoint is a new file, an fdatasync, a rename and a directory sync. Every log moves
//! its high watermark with each acknowledged produce, so at Kafka's 5 s interval a shard with
//! thousands of busy partitions wrote hundreds of them a second: on a 3-node, 1,000-partition
//! run they were most of the fsyncs and the inode allocations, and slowed produce for all.
//! A stale high watermark after a crash is only lower (it never passes the log end, and a
//! follower truncates by leader epoch, not by it), so a shard writes at most
//! `PER_SECOND` of them a second and the rest wait their turn: with few partitions each is
//! still written every 5 s. Log start moves, truncations, epochs and close are not paced.
//!
//! State is per thread, i.e. per shard (all logs of a shard run on its executor).

use std::cell::Cell;
use std::time::Instant;

/// Background high-watermark checkpoints one shard writes per second, at most.
const PER_SECOND: f64 = 20.0;
/// Tokens that can accumulate (a burst after a quiet period).
const BURST: f64 = 20.0;

thread_local! {
    static BUCKET: (Cell<f64>, Cell<Option<Instant>>) = const { (Cell::new(BURST), Cell::new(None)) };
}

/// Takes one checkpoint's worth of this shard's budget; false if spent (try at a later tick).
pub(super) fn take_token() -> bool {
    BUCKET.with(|(tokens, last)| {
        let now = Instant::now();
        let refill = last
            .get()
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64() * PER_SECOND);
        last.set(Some(now));
        let available = (tokens.get() + refill).min(BURST);
        if available >= 1.0 {
            tokens.set(available - 1.0);
            true
        } else {
            tokens.set(available);
            false
        }
    })
}
