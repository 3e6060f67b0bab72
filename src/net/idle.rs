//! Idle client connections: their read buffers are released and, after Kafka's
//! `connections.max.idle.ms`, they are closed.
//!
//! Hand-written rather than a timer per read: a connection waits for data on nearly every
//! request, and arming and cancelling a glommio timer each time costs reactor work on the hot
//! path. Instead one sweeper per shard ticks every second and wakes only the connections that
//! have been silent for a tick (to release their buffer) or for the idle limit (to close).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How often the sweeper looks at the connections.
pub const TICK: Duration = Duration::from_secs(1);

/// What a connection shares with its shard's sweeper.
#[derive(Default)]
pub struct ConnIdle {
    /// Sweeper tick of the connection's last received byte (or of a reset while it had
    /// requests in flight).
    last_active: Cell<u64>,
    /// Set by the sweeper; the connection clears it when it wakes.
    kicked: Cell<Kick>,
    /// The connection's task while it waits for data.
    waker: RefCell<Option<Waker>>,
    /// The buffer was released for this silence (so it is not kicked again for it).
    released: Cell<bool>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum Kick {
    #[default]
    None,
    /// Silent for a tick: release the read buffer.
    Release,
    /// Silent for `connections.max.idle.ms`: close unless requests are in flight.
    Expire,
}

/// The shard's list of connections and its tick count.
#[derive(Default)]
pub struct IdleSweeper {
    tick: Cell<u64>,
    conns: RefCell<Vec<Weak<ConnIdle>>>,
}

impl IdleSweeper {
    pub fn register(&self) -> Rc<ConnIdle> {
        let c = Rc::new(ConnIdle::default());
        c.last_active.set(self.tick.get());
        self.conns.borrow_mut().push(Rc::downgrade(&c));
        c
    }

    pub fn now(&self) -> u64 {
        self.tick.get()
    }

    /// One tick: kick the connections whose silence crossed a threshold since the last one.
    /// `expire_ticks`: the idle limit in ticks, if any. Returns how many were kicked.
    pub fn sweep(&self, expire_ticks: Option<u64>) -> usize {
        let mut kicked = 0;
        let now = self.tick.get() + 1;
        self.tick.set(now);
        self.conns.borrow_mut().retain(|w| {
            let Some(c) = w.upgrade() else {
                return false;
            };
            let silent = now.saturating_sub(c.last_active.get());
            let kick = if expire_ticks.is_some_and(|e| silent >= e) {
                Kick::Expire
            } else if silent >= 2 && !c.released.get() {
                Kick::Release
            } else {
                Kick::None
            };
            if kick != Kick::None {
                kicked += 1;
                c.kicked.set(kick);
                if let Some(w) = c.waker.borrow_mut().take() {
                    w.wake();
                }
            }
            true
        });
        kicked
    }
}

impl IdleSweeper {
    /// Shutdown: every connection waiting for its next request closes now; one with requests
    /// in flight finishes them and closes at the next call.
    pub fn expire_all(&self) {
        self.conns.borrow_mut().retain(|w| {
            let Some(c) = w.upgrade() else {
                return false;
            };
            c.kicked.set(Kick::Expire);
            if let Some(w) = c.waker.borrow_mut().take() {
                w.wake();
            }
            true
        });
    }
}

/// Hands memory freed on this thread back to the OS. mimalloc (the broker's allocator) returns
/// freed pages only when the thread allocates again after a short delay; an idle shard does not,
/// so the read buffers its silent connections gave back would stay resident.
pub fn return_freed_memory() {
    // SAFETY: mi_collect only walks this thread's own mimalloc heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

impl ConnIdle {
    /// A byte arrived (or the connection is busy): its silence starts again.
    pub fn active(&self, sweeper: &IdleSweeper) {
        self.last_active.set(sweeper.now());
        self.released.set(false);
    }

    pub fn mark_released(&self) {
        self.released.set(true);
    }

    /// Resolves when the sweeper kicks this connection.
    pub fn kicked(&self) -> Kicked<'_> {
        Kicked { conn: self }
    }
}

pub struct Kicked<'a> {
    conn: &'a ConnIdle,
}

impl Future for Kicked<'_> {
    type Output = Kick;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Kick> {
        let k = self.conn.kicked.replace(Kick::None);
        if k != Kick::None {
            return Poll::Ready(k);
        }
        let mut slot = self.conn.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_connection_is_kicked_once_to_release_then_to_expire() {
        let s = IdleSweeper::default();
        let c = s.register();
        let mut cx = Context::from_waker(Waker::noop());
        let mut k = Box::pin(c.kicked());
        assert!(k.as_mut().poll(&mut cx).is_pending());
        s.sweep(Some(5));
        assert!(
            k.as_mut().poll(&mut cx).is_pending(),
            "one tick is not silence"
        );
        s.sweep(Some(5));
        assert_eq!(k.as_mut().poll(&mut cx), Poll::Ready(Kick::Release));
        c.mark_released();
        s.sweep(Some(5));
        s.sweep(Some(5));
        assert!(
            k.as_mut().poll(&mut cx).is_pending(),
            "released once per silence"
        );
        s.sweep(Some(5));
        assert_eq!(k.as_mut().poll(&mut cx), Poll::Ready(Kick::Expire));
        // Activity starts the silence again.
        c.active(&s);
        s.sweep(Some(5));
        assert!(k.as_mut().poll(&mut cx).is_pending());
    }

    #[test]
    fn at_shutdown_every_connection_is_kicked_to_expire_at_once() {
        let s = IdleSweeper::default();
        let c = s.register();
        let mut cx = Context::from_waker(Waker::noop());
        let mut k = Box::pin(c.kicked());
        assert!(k.as_mut().poll(&mut cx).is_pending());
        s.expire_all();
        assert_eq!(k.as_mut().poll(&mut cx), Poll::Ready(Kick::Expire));
    }

    #[test]
    fn closed_connections_leave_the_list() {
        let s = IdleSweeper::default();
        let c = s.register();
        let _d = s.register();
        drop(c);
        s.sweep(None);
        assert_eq!(s.conns.borrow().len(), 1);
    }
}
