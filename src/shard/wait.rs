//! The wait table: request id → the task waiting for that request's result.
//!
//! Owned by one shard's executor and touched only from it, so it is a plain map behind a
//! `RefCell`: no lock, no atomic (etcd's `pkg/wait` needs a mutex because its apply loop
//! and its gRPC handlers run on different goroutines; here they share one thread).
//!
//! Ids come from [`IdGenerator`]: `member (16 bits) | counter (48 bits)` where the counter
//! starts at the wall clock in microseconds, in the spirit of etcd's `idutil` (which uses
//! milliseconds << 8). Ids stay unique across restarts — which matters because entries
//! replayed from the WAL carry the ids of the previous run — as long as a run issued fewer
//! ids than the microseconds it lived, i.e. under a million per second on average.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Makes request ids unique across the node's shards and restarts.
pub struct IdGenerator {
    prefix: u64,
    counter: u64,
}

const ID_MEMBER_BITS: u32 = 16;
const ID_COUNTER_BITS: u32 = 64 - ID_MEMBER_BITS;
const ID_COUNTER_MASK: u64 = (1 << ID_COUNTER_BITS) - 1;

impl IdGenerator {
    /// `member` identifies node and shard within the group's replicas (only its low 16
    /// bits are used); `now_us` is the wall clock at start, in microseconds.
    pub fn new(member: u64, now_us: u64) -> Self {
        IdGenerator {
            prefix: (member & ((1 << ID_MEMBER_BITS) - 1)) << ID_COUNTER_BITS,
            counter: now_us & ID_COUNTER_MASK,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.counter = (self.counter + 1) & ID_COUNTER_MASK;
        self.prefix | self.counter
    }
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// The receiving half of one wait-table entry.
pub struct Waiter<T> {
    slot: Rc<RefCell<Slot<T>>>,
}

impl<T> Future for Waiter<T> {
    /// `None` when the entry was dropped without a result (e.g. leadership lost).
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = self.slot.borrow_mut();
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Request id → waiting task, with a bound on how many may wait at once.
pub struct WaitTable<T> {
    slots: RefCell<HashMap<u64, Rc<RefCell<Slot<T>>>>>,
    capacity: usize,
}

impl<T> WaitTable<T> {
    pub fn new(capacity: usize) -> Self {
        WaitTable {
            slots: RefCell::new(HashMap::new()),
            capacity,
        }
    }

    /// Registers `id`; `None` when the table is full (the caller answers
    /// `TooManyRequests`). Panics if `id` is already registered: ids are unique.
    pub fn register(&self, id: u64) -> Option<Waiter<T>> {
        let mut slots = self.slots.borrow_mut();
        if slots.len() >= self.capacity {
            return None;
        }
        let slot = Rc::new(RefCell::new(Slot {
            value: None,
            waker: None,
            closed: false,
        }));
        let prev = slots.insert(id, slot.clone());
        assert!(prev.is_none(), "request id {id:#x} registered twice");
        Some(Waiter { slot })
    }

    /// Completes `id` with `value`; returns false when nobody waits for it (a request
    /// of another node, or one already cancelled).
    pub fn trigger(&self, id: u64, value: T) -> bool {
        let Some(slot) = self.slots.borrow_mut().remove(&id) else {
            return false;
        };
        let mut s = slot.borrow_mut();
        s.value = Some(value);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        true
    }

    /// Drops `id` without a result: its waiter resolves to `None`.
    pub fn cancel(&self, id: u64) {
        if let Some(slot) = self.slots.borrow_mut().remove(&id) {
            close(&slot);
        }
    }

    /// Drops every entry (leadership lost, shutdown): every waiter resolves to `None`.
    pub fn cancel_all(&self) {
        let drained: Vec<_> = self.slots.borrow_mut().drain().map(|(_, s)| s).collect();
        for slot in drained {
            close(&slot);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn close<T>(slot: &Rc<RefCell<Slot<T>>>) {
    let mut s = slot.borrow_mut();
    s.closed = true;
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn trigger_completes_the_waiter() {
        let t = WaitTable::new(4);
        let w = t.register(7).unwrap();
        assert!(t.trigger(7, "done"));
        assert_eq!(block_on(w), Some("done"));
        assert!(!t.trigger(7, "again"), "an id completes once");
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses_and_cancel_releases() {
        let t: WaitTable<u8> = WaitTable::new(2);
        let a = t.register(1).unwrap();
        let _b = t.register(2).unwrap();
        assert!(t.register(3).is_none());
        t.cancel(1);
        assert_eq!(block_on(a), None);
        assert!(t.register(3).is_some());
        t.cancel_all();
        assert!(t.is_empty());
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_ids_are_a_bug() {
        let t: WaitTable<u8> = WaitTable::new(2);
        let _a = t.register(1);
        let _b = t.register(1);
    }

    #[test]
    fn ids_are_unique_across_restarts_and_members() {
        let mut a = IdGenerator::new(1, 1_000_000);
        let mut b = IdGenerator::new(1, 1_001_000);
        let mut c = IdGenerator::new(2, 1_000_000);
        let ids_a: Vec<u64> = (0..1000).map(|_| a.next_id()).collect();
        let ids_b: Vec<u64> = (0..1000).map(|_| b.next_id()).collect();
        let ids_c: Vec<u64> = (0..1000).map(|_| c.next_id()).collect();
        let mut all: Vec<u64> = ids_a.iter().chain(&ids_b).chain(&ids_c).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3000);
        assert!(ids_a.windows(2).all(|w| w[0] < w[1]));
    }
}
