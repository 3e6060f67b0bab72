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
        }
    }
}

pub struct Listen<'a> {
    event: &'a LocalEvent,
    seen: u64,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut w = self.event.wakers.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
