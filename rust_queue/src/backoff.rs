//! Per-item capped exponential backoff.

use std::time::Duration;

use crate::error::Error;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Retry policy: attempt `k` (counting from 0) waits `min(base * 2^k, max)`, and an
/// item that has used `max_attempts` attempts is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    max_attempts: u32,
}

impl Backoff {
    /// Requires `base <= max`.
    pub fn new(base: Duration, max: Duration, max_attempts: u32) -> Result<Self, Error> {
        if base > max {
            return Err(Error::invalid(format!(
                "base ({base:?}) must not exceed max ({max:?})"
            )));
        }
        Ok(Self {
            base,
            max,
            max_attempts,
        })
    }

    pub fn base(&self) -> Duration {
        self.base
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// `min(base * 2^attempt, max)`, exact for every `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        // Any Duration is below 2^94 ns, so with a non-zero base a shift of 127 already
        // exceeds max; clamping the shift keeps `1 << shift` inside u128.
        let factor = 1u128 << attempt.min(127);
        match self.base.as_nanos().checked_mul(factor) {
            Some(nanos) if nanos < self.max.as_nanos() => from_nanos(nanos),
            _ => self.max,
        }
    }

    /// "Full jitter": a delay spread uniformly over `[0, delay(attempt))`, chosen by the
    /// caller's `random` word, so that retries of many items do not arrive together.
    /// Deterministic for a given `random`; the top 32 bits are used.
    pub fn jittered(&self, attempt: u32, random: u64) -> Duration {
        // delay < 2^94 ns and the fraction < 2^32: the product fits in u128.
        let fraction = u128::from(random >> 32);
        from_nanos((self.delay(attempt).as_nanos() * fraction) >> 32)
    }

    /// Whether an item that has made `attempt` attempts must not be retried again.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

/// Only called with values at most some Duration's nanoseconds, so nothing truncates.
fn from_nanos(nanos: u128) -> Duration {
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}
