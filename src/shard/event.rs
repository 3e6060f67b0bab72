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
    /// Waiting tasks by slot; a listener dropped before the next notify empties its slot and
    /// hands it back (`free`). Without that, an event that rarely fires (an idle partition's
    /// `appended`, which every follower long-poll of its fetch session listens on) kept one
    /// waker per abandoned wait until it fired: a list growing by thousands a second, holding
    /// finished tasks alive.
    wakers: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalEvent {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every task currently waiting.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        self.free.borrow_mut().clear();
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers.into_iter().flatten() {
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
    /// Where this future's waker sits (valid until the next notify drains the list), so a
    /// re-poll is O(1): a partition with a hundred waiting produce requests would otherwise
    /// scan the whole list on every poll, and a drop can empty it.
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
            Some(i) if i < w.len() => match &mut w[i] {
                Some(old) if old.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            _ => {
                let waker = Some(cx.waker().clone());
                let i = match self.event.free.borrow_mut().pop() {
                    Some(i) if i < w.len() => {
                        w[i] = waker;
                        i
                    }
                    _ => {
                        w.push(waker);
                        w.len() - 1
                    }
                };
                drop(w);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Listen<'_> {
    fn drop(&mut self) {
        // Only a slot of the current round is ours: a notify since then drained the list.
        let Some(i) = self.slot else { return };
        if self.event.generation.get() != self.seen {
            return;
        }
        if let Some(w) = self.event.wakers.borrow_mut().get_mut(i) {
            if w.take().is_some() {
                self.event.free.borrow_mut().push(i);
            }
        }
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

    #[test]
    fn a_dropped_listener_leaves_no_waker_behind_and_its_slot_is_reused() {
        let ev = LocalEvent::new();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut l = Box::pin(ev.listen());
            assert!(l.as_mut().poll(&mut cx).is_pending());
        }
        let live = ev.wakers.borrow().iter().filter(|w| w.is_some()).count();
        assert_eq!(live, 0, "abandoned waits keep no waker");
        assert_eq!(ev.wakers.borrow().len(), 1, "one slot, reused");
        // A waiter alongside abandoned ones is still woken.
        let mut kept = Box::pin(ev.listen());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        drop(Box::pin(ev.listen()));
        ev.notify();
        assert!(kept.as_mut().poll(&mut cx).is_ready());
    }
}

/// An event that stays raised until taken, for a loop that may be busy elsewhere when it
/// fires (a `notify` with nobody listening is otherwise lost).
#[derive(Default)]
pub struct LatchedEvent {
    raised: Cell<bool>,
    event: LocalEvent,
}

impl LatchedEvent {
    pub fn raise(&self) {
        self.raised.set(true);
        self.event.notify();
    }

    /// Whether it was raised since the last `take`; lowers it.
    pub fn take(&self) -> bool {
        self.raised.replace(false)
    }

    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// A future that resolves at the next `raise` after this call.
    pub fn listen(&self) -> Listen<'_> {
        self.event.listen()
    }
}
