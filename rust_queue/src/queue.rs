//! A bounded multi-producer/multi-consumer queue with a blocking pop for threads.
//!
//! Storage is crossbeam's `ArrayQueue`: a fixed ring of slots, each carrying a stamp,
//! where producers and consumers claim positions with a CAS on the tail or head index
//! (Dmitry Vyukov's bounded MPMC design). We use it instead of writing that queue here
//! because it is the same algorithm already tuned (cache-padded indices, backoff under
//! contention) and widely used and tested, and because it keeps this crate free of
//! `unsafe`: a home-grown ring needs `MaybeUninit` slots and hand-proved orderings.
//!
//! Blocking is layered on top without touching the fast path. `push` and `pop` never
//! take a lock. A consumer that finds the queue empty in `pop_timeout` registers itself
//! in `sleepers` and waits on a condition variable; a producer takes the lock only when
//! it sees a registered sleeper, so an uncontended queue costs one fence per push.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::error::Error;

/// Largest accepted capacity. Slots are allocated up front, so this bound turns a
/// mistyped size into an error instead of an aborted process (2^26 slots of a pointer
/// and a stamp is 1 GiB).
pub const MAX_CAPACITY: usize = 1 << 26;

/// Bounded lock-free MPMC FIFO queue.
///
/// Items from one producer come out in the order that producer pushed them.
pub struct Queue<T> {
    slots: ArrayQueue<T>,
    /// Consumers inside the slow path of `pop_timeout`.
    sleepers: AtomicUsize,
    /// Guards nothing but the sleep/wake handshake.
    lock: Mutex<()>,
    wakeup: Condvar,
}

impl<T> Queue<T> {
    /// A queue holding at most `capacity` items (1 ..= [`MAX_CAPACITY`]).
    pub fn new(capacity: usize) -> Result<Self, Error> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::invalid(format!(
                "capacity must be between 1 and {MAX_CAPACITY}, got {capacity}"
            )));
        }
        Ok(Self {
            slots: ArrayQueue::new(capacity),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wakeup: Condvar::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Items in the queue at some instant during the call.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends `item`, or hands it back when the queue is full. Never blocks.
    pub fn push(&self, item: T) -> Result<(), T> {
        self.slots.push(item)?;
        // Pairs with the fence in `pop_timeout` (a Dekker handshake): either this load
        // sees the sleeper's registration, or the sleeper's re-check sees this item.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) > 0 {
            self.wake_one();
        }
        Ok(())
    }

    /// Removes the oldest item, or `None` when empty. Never blocks.
    pub fn pop(&self) -> Option<T> {
        self.slots.pop()
    }

    /// Removes the oldest item, waiting up to `timeout` for one to arrive.
    ///
    /// Returns `None` only if the queue stayed empty for the whole timeout (as seen by
    /// this consumer: another consumer may take an item first).
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        if let Some(item) = self.slots.pop() {
            return Some(item);
        }
        // A timeout too large for Instant means "wait as long as it takes".
        let deadline = Instant::now().checked_add(timeout);
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let item = self.sleep_until_item(deadline);
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
        item
    }

    fn sleep_until_item(&self, deadline: Option<Instant>) -> Option<T> {
        let mut guard = self.lock_handshake();
        loop {
            // Checked under the lock: a producer that pushed after this check must take
            // the lock to notify, which it can only do once we are waiting.
            if let Some(item) = self.slots.pop() {
                return Some(item);
            }
            guard = match deadline {
                None => self
                    .wakeup
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.wakeup
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    fn wake_one(&self) {
        let _guard = self.lock_handshake();
        self.wakeup.notify_one();
    }

    /// The mutex protects no data, so a panic while holding it leaves nothing broken.
    fn lock_handshake(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
