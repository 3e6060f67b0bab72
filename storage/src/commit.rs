//! Group-commit plumbing: at most one appender at a time is the *flusher* and writes (and
//! syncs) everything queued; the others wait for a progress notification instead of queueing
//! on the I/O lock. Queueing on the lock would not group: a task whose batch is already
//! durable still had to take the lock to find out, and a task re-taking the lock straight
//! after releasing it barged ahead of those woken, so every round covered one batch.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::task::{Poll, Waker};

#[derive(Default)]
pub(crate) struct Progress {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
    flushing: Cell<bool>,
}

impl Progress {
    /// Wakes everyone waiting; they re-check their outcome.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Resolves at the next `notify_all`.
    pub fn changed(&self) -> impl Future<Output = ()> + '_ {
        let seen = self.generation.get();
        poll_fn(move |cx| {
            if self.generation.get() != seen {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Claims the flusher role if nobody holds it. The guard gives it back (and wakes the
    /// waiters) when dropped, even if the flusher's future is cancelled.
    pub fn try_become_flusher(&self) -> Option<FlusherGuard<'_>> {
        if self.flushing.get() {
            return None;
        }
        self.flushing.set(true);
        Some(FlusherGuard { progress: self })
    }
}

pub(crate) struct FlusherGuard<'a> {
    progress: &'a Progress,
}

impl Drop for FlusherGuard<'_> {
    fn drop(&mut self) {
        self.progress.flushing.set(false);
        self.progress.notify_all();
    }
}

/// Lets every other ready task of the executor run once (they may have batches to queue).
pub(crate) async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
