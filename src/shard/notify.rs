//! Core-local wake-ups, no lock, no atomic (one executor owns each):
//! - [`Notify`]: a flag for ONE waiting task (a driver loop): `notify` sets it, `wait`
//!   returns once it is set and clears it, so a notification that came while the task
//!   was busy is not lost.
//! - [`Broadcast`]: for MANY waiters: `listen` returns a future that resolves at the
//!   next `notify` after it was created. Check the condition, then listen, in one
//!   synchronous step.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves when notified (now, if a notification came since the last `wait`).
    pub fn wait(&self) -> Wait<'_> {
        Wait { n: self }
    }
}

pub struct Wait<'a> {
    n: &'a Notify,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.n.set.replace(false) {
            return Poll::Ready(());
        }
        let mut w = self.n.wakers.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Wakes every task listening at the time of a `notify`.
#[derive(Default)]
pub struct Broadcast {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Broadcast {
    pub fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn listen(&self) -> Listen<'_> {
        Listen {
            b: self,
            generation: self.generation.get(),
        }
    }
}

pub struct Listen<'a> {
    b: &'a Broadcast,
    generation: u64,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.b.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.b.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn a_notification_is_kept_until_waited_for() {
        let n = Notify::default();
        assert!(block_on(poll_once(n.wait())).is_none());
        n.notify();
        assert!(block_on(poll_once(n.wait())).is_some());
        assert!(block_on(poll_once(n.wait())).is_none(), "consumed");
    }

    #[test]
    fn broadcast_wakes_every_listener_once() {
        let b = Broadcast::default();
        let (mut l1, mut l2) = (Box::pin(b.listen()), Box::pin(b.listen()));
        assert!(block_on(poll_once(l1.as_mut())).is_none());
        b.notify();
        assert!(block_on(poll_once(l1.as_mut())).is_some());
        assert!(block_on(poll_once(l2.as_mut())).is_some());
        assert!(block_on(poll_once(Box::pin(b.listen()))).is_none());
    }
}
