//! A single-threaded "something changed" signal for tasks on one executor.
//!
//! Hand-written because it sits on the produce→fetch wake-up path: a `Cell` counter and a `RefCell`
//! of wakers, no atomics, no allocation per notify beyond the waker list.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct LocalEvent {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every task currently waiting.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// A future that resolves at the next `notify` after this call.
    pub fn listen(&self) -> Listen<'_> {
        Listen {
            event: self,
            seen: self.generation.get(),
            slot: None,
        }
    }
}

pub struct Listen<'a> {
    event: &'a LocalEvent,
    seen: u64,
    /// Where this future's waker sits in the list (valid until the next notify drains it), so
    /// a re-poll is O(1): a partition with a hundred waiting produce requests would otherwise
    /// scan the whole list on every poll.
    slot: Option<usize>,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut w = self.event.wakers.borrow_mut();
        match self.slot {
            Some(i) if i < w.len() => {
                if !w[i].will_wake(cx.waker()) {
                    w[i] = cx.waker().clone();
                }
            }
            _ => {
                let i = w.len();
                w.push(cx.waker().clone());
                drop(w);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repolls_do_not_grow_the_waiter_list_and_notify_releases() {
        let ev = LocalEvent::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut a = Box::pin(ev.listen());
        let mut b = Box::pin(ev.listen());
        for _ in 0..3 {
            assert!(a.as_mut().poll(&mut cx).is_pending());
            assert!(b.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(ev.wakers.borrow().len(), 2);
        ev.notify();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        assert!(ev.wakers.borrow().is_empty());
        // A listener created after the notify waits for the next one.
        let mut c = Box::pin(ev.listen());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        ev.notify();
        assert!(c.as_mut().poll(&mut cx).is_ready());
    }
}
