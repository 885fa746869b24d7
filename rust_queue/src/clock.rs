//! Monotonic time in nanoseconds, behind a trait so tests of the limiter and the run
//! queue can drive time by hand (virtual time, no real sleeps).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a thread waiting on a [`ManualClock`] reads it again: the clock jumps only
/// when a test advances it, and nothing tells the waiter, so it polls.
pub const MANUAL_CLOCK_POLL: Duration = Duration::from_millis(1);

/// A monotonic time source.
pub trait Clock: Send + Sync {
    /// Nanoseconds since an arbitrary origin fixed for this clock; never decreases.
    fn now_nanos(&self) -> u64;

    /// How long a thread waiting for this clock to move `ahead` should sleep, in real
    /// time, before it reads the clock again. A real clock moves with real time.
    fn real_wait(&self, ahead: Duration) -> Duration {
        ahead
    }
}

/// Shared clocks: a test keeps one handle to advance while the queue reads the other.
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }

    fn real_wait(&self, ahead: Duration) -> Duration {
        (**self).real_wait(ahead)
    }
}

/// The real clock: nanoseconds elapsed since the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> u64 {
        // u64 nanoseconds last 584 years; saturate rather than wrap past that.
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that only moves when told to, for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_nanos`.
    pub fn new(start_nanos: u64) -> Self {
        Self {
            nanos: AtomicU64::new(start_nanos),
        }
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update's closure always returns Some, so this cannot fail.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }

    fn real_wait(&self, ahead: Duration) -> Duration {
        ahead.min(MANUAL_CLOCK_POLL)
    }
}
