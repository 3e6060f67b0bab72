//! When a run (or one part of it) stops: a deadline, an optional message budget, and an explicit
//! stop. A group member's fetch loop gets a child control per generation, so a rebalance can
//! stop that member's fetching without stopping the run, while the run's deadline, budget and
//! stop still reach it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

/// Stop conditions shared by all tasks of a run: a deadline and an optional message budget.
pub struct RunControl {
    deadline: Instant,
    budget: Option<AtomicU64>,
    stopped: AtomicBool,
    wake: Notify,
    /// A child stops when its parent does and draws on the parent's budget.
    parent: Option<Arc<RunControl>>,
}

impl RunControl {
    pub fn new(deadline: Instant, message_count: Option<u64>) -> RunControl {
        RunControl {
            deadline,
            budget: message_count.map(AtomicU64::new),
            stopped: AtomicBool::new(false),
            wake: Notify::new(),
            parent: None,
        }
    }

    /// A control that can be stopped on its own, and stops with `parent`.
    pub fn child(parent: &Arc<RunControl>) -> RunControl {
        RunControl {
            deadline: parent.deadline,
            budget: None,
            stopped: AtomicBool::new(false),
            wake: Notify::new(),
            parent: Some(parent.clone()),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub fn should_stop(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
            || Instant::now() >= self.deadline
            || self.parent.as_ref().is_some_and(|p| p.should_stop())
    }

    /// Resolves once `should_stop` holds (stop, the parent's stop, or the deadline).
    pub async fn stopped(&self) {
        loop {
            let own = self.wake.notified();
            tokio::pin!(own);
            // Registered before the check, so a stop in between is not missed.
            own.as_mut().enable();
            match &self.parent {
                Some(p) => {
                    let parent = p.wake.notified();
                    tokio::pin!(parent);
                    parent.as_mut().enable();
                    if self.should_stop() {
                        return;
                    }
                    tokio::select! {
                        _ = own => {}
                        _ = parent => {}
                        _ = tokio::time::sleep_until(self.deadline.into()) => {}
                    }
                }
                None => {
                    if self.should_stop() {
                        return;
                    }
                    tokio::select! {
                        _ = own => {}
                        _ = tokio::time::sleep_until(self.deadline.into()) => {}
                    }
                }
            }
        }
    }

    /// Takes up to `want` messages from the budget; 0 means the budget is spent. A child takes
    /// from its parent, and stops the parent once the budget is spent.
    pub fn claim(&self, want: u64) -> u64 {
        if let Some(p) = &self.parent {
            let got = p.claim(want);
            if got < want {
                p.stop();
            }
            return got;
        }
        let Some(budget) = &self.budget else {
            return want;
        };
        let mut cur = budget.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return 0;
            }
            let take = cur.min(want);
            match budget.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_child_stops_alone_or_with_its_parent() {
        let parent = Arc::new(RunControl::new(
            Instant::now() + Duration::from_secs(60),
            None,
        ));
        let a = RunControl::child(&parent);
        let b = RunControl::child(&parent);
        a.stop();
        assert!(a.should_stop() && !b.should_stop() && !parent.should_stop());
        parent.stop();
        assert!(b.should_stop());
    }

    #[test]
    fn children_share_the_parents_budget() {
        let parent = Arc::new(RunControl::new(
            Instant::now() + Duration::from_secs(60),
            Some(10),
        ));
        let a = RunControl::child(&parent);
        let b = RunControl::child(&parent);
        assert_eq!(a.claim(6), 6);
        assert_eq!(b.claim(6), 4);
        assert!(parent.should_stop() && a.should_stop());
    }

    #[tokio::test]
    async fn stopped_resolves_on_the_parents_stop_and_at_the_deadline() {
        let parent = Arc::new(RunControl::new(
            Instant::now() + Duration::from_secs(60),
            None,
        ));
        let child = Arc::new(RunControl::child(&parent));
        let c = child.clone();
        let waiter = tokio::spawn(async move { c.stopped().await });
        tokio::task::yield_now().await;
        parent.stop();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the parent's stop")
            .expect("task");
        let soon = RunControl::new(Instant::now() + Duration::from_millis(20), None);
        tokio::time::timeout(Duration::from_secs(10), soon.stopped())
            .await
            .expect("the deadline ends the wait");
    }
}
