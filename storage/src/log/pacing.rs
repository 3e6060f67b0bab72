//! How the cleaner shares a shard with the request path it runs beside.
//!
//! glommio's task-queue shares alone do not keep a cleaner out of the way: while any queue is
//! runnable the executor does not reap io_uring completions, so a produce waiting on its write
//! stays stuck behind a cleaner that always has work, and its latency, not the CPU split,
//! sets the produce rate. So the cleaner paces itself in wall-clock time:
//! - it runs at most `SLICE`, then sleeps (a timer, so the reactor runs and woken requests go
//!   first);
//! - if the request path touched any log of this shard since the last pause (the shard is
//!   busy), it sleeps long enough to hold its share of the time (reading and waiting for its
//!   own I/O included) to `busy_share`; on an idle shard it sleeps only `IDLE_PAUSE`;
//! - with an I/O cap (Kafka's `log.cleaner.io.max.bytes.per.second`), it also sleeps until
//!   its bytes read and written stay under the cap, as Kafka's cleaner throttler does.
//!
//! State is per thread, i.e. per shard: the request path and the cleaner of a shard run on
//! the same executor, and `note_foreground` on the append and read paths is one `Cell` bump.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The most the cleaner runs before it hands the executor back. glommio preempts a task
/// queue only after 100 ms, far longer than a produce or fetch should wait behind a scan.
const SLICE: Duration = Duration::from_micros(500);
/// The pause on an idle shard: just long enough to let the reactor reap completions.
const IDLE_PAUSE: Duration = Duration::from_micros(20);
/// The longest single pause, so a change of load (or of limits) is seen soon.
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// The I/O cap is averaged over windows of this length (Kafka's throttler checks every
/// 300 ms; shorter keeps each pause, and so the cleaner's bursts, short).
const IO_WINDOW: Duration = Duration::from_millis(100);

struct Pacer {
    slice_start: Cell<Instant>,
    /// Foreground operations (appends, reads) on this shard's logs, ever.
    foreground: Cell<u64>,
    /// `foreground` as seen at the cleaner's last pause.
    seen: Cell<u64>,
    window_start: Cell<Instant>,
    window_bytes: Cell<u64>,
}

thread_local! {
    static PACER: Pacer = Pacer {
        slice_start: Cell::new(Instant::now()),
        foreground: Cell::new(0),
        seen: Cell::new(0),
        window_start: Cell::new(Instant::now()),
        window_bytes: Cell::new(0),
    };
}

/// Called by the request path on every append and read: the shard is busy.
pub(super) fn note_foreground() {
    PACER.with(|p| p.foreground.set(p.foreground.get().wrapping_add(1)));
}

/// How the cleaner may use a shard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerPace {
    /// The cleaner's share of wall-clock time while the request path is busy, in (0, 1].
    pub busy_share: f64,
    /// Bytes a second the cleaner may read and write together; None = no cap.
    pub io_max_bytes_per_sec: Option<u64>,
}

impl CleanerPace {
    /// The share of a shard that glommio task-queue `shares` get against the request path's
    /// 1000 (the broker's `--log-cleaner-shares`).
    pub fn from_shares(shares: usize, io_max_bytes_per_sec: Option<u64>) -> CleanerPace {
        let s = shares.clamp(1, 1000) as f64;
        CleanerPace {
            busy_share: s / (s + 1000.0),
            io_max_bytes_per_sec: io_max_bytes_per_sec.filter(|&r| r > 0),
        }
    }
}

impl Default for CleanerPace {
    fn default() -> Self {
        CleanerPace::from_shares(50, None)
    }
}

/// How long to pause after running `ran` (the slice just ended).
fn pause_for(pace: &CleanerPace, ran: Duration, busy: bool) -> Duration {
    if !busy {
        return IDLE_PAUSE;
    }
    let share = pace.busy_share.clamp(0.001, 1.0);
    ran.mul_f64((1.0 - share) / share)
        .clamp(IDLE_PAUSE, MAX_PAUSE)
}

/// How much longer the window must last for `bytes` to stay under `rate`.
fn io_wait(rate: u64, bytes: u64, elapsed: Duration) -> Duration {
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    due.saturating_sub(elapsed).min(MAX_PAUSE)
}

/// The cleaner calls this between pieces of work, with the bytes it read or wrote since.
pub(super) async fn pace(pace: &CleanerPace, io_bytes: u64) {
    let now = Instant::now();
    let (ran, mut pause) = PACER.with(|p| {
        p.window_bytes.set(p.window_bytes.get() + io_bytes);
        let ran = now.saturating_duration_since(p.slice_start.get());
        (ran, Duration::ZERO)
    });
    if ran >= SLICE {
        let busy = PACER.with(|p| {
            let f = p.foreground.get();
            f != p.seen.replace(f)
        });
        pause = pause_for(pace, ran, busy);
    }
    if let Some(rate) = pace.io_max_bytes_per_sec {
        let wait = PACER.with(|p| {
            let elapsed = now.saturating_duration_since(p.window_start.get());
            let wait = io_wait(rate, p.window_bytes.get(), elapsed);
            if elapsed >= IO_WINDOW && wait.is_zero() {
                p.window_start.set(now);
                p.window_bytes.set(0);
            }
            wait
        });
        pause = pause.max(wait);
    }
    if !pause.is_zero() {
        glommio::timer::sleep(pause).await;
        PACER.with(|p| p.slice_start.set(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_shard_gives_the_cleaner_almost_all_its_time() {
        let pace = CleanerPace::default();
        assert_eq!(pause_for(&pace, SLICE, false), IDLE_PAUSE);
    }

    #[test]
    fn a_busy_shard_holds_the_cleaner_to_its_share() {
        let pace = CleanerPace::from_shares(50, None);
        let pause = pause_for(&pace, SLICE, true);
        let share = SLICE.as_secs_f64() / (SLICE + pause).as_secs_f64();
        assert!((share - 50.0 / 1050.0).abs() < 1e-6, "share {share}");
        // Full shares: no more than the idle pause.
        let all = CleanerPace::from_shares(1000, None);
        assert!(pause_for(&all, SLICE, true) <= SLICE);
    }

    #[test]
    fn a_long_slice_never_pauses_beyond_the_bound() {
        let pace = CleanerPace::from_shares(1, None);
        assert_eq!(pause_for(&pace, Duration::from_secs(5), true), MAX_PAUSE);
    }

    #[test]
    fn the_io_cap_waits_until_the_bytes_fit_the_rate() {
        // 10 MB at 100 MB/s is due after 100 ms; 40 ms have passed.
        let w = io_wait(100_000_000, 10_000_000, Duration::from_millis(40));
        assert_eq!(w, Duration::from_millis(60));
        assert_eq!(
            io_wait(100_000_000, 1_000_000, Duration::from_millis(40)),
            Duration::ZERO
        );
        assert_eq!(
            CleanerPace::from_shares(50, Some(0)).io_max_bytes_per_sec,
            None
        );
    }
}
