//! A lock-free token bucket, implemented as GCRA (generic cell rate algorithm).
//!
//! Instead of a token count refilled by a timer, GCRA keeps one number: the theoretical
//! arrival time (TAT), the instant at which the bucket would be full again. Taking `n`
//! tokens moves it `n * interval` later (from now, if it lies in the past); the request
//! fits when the new TAT is at most `burst * interval` ahead of now. One `AtomicU64`
//! and a compare-and-swap loop therefore make the bucket safe to share across threads
//! without a lock, and refilling needs no background work.
//!
//! Times are whole nanoseconds of a [`Clock`]. The interval is rounded to a whole
//! nanosecond, so a rate is exact to about `rate * 5e-10` relative error, and rates
//! above 2e9 per second round to an interval of zero and are treated as unlimited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::error::Error;

/// Largest `burst * interval` accepted (about 146 years). Leaves headroom so the TAT
/// arithmetic saturates only for absurd reservations, never for the bucket's own size.
const MAX_TOLERANCE_NANOS: u64 = u64::MAX / 4;

/// Why `try_acquire` granted nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Too few tokens now; the request would be granted after this wait.
    RetryAfter(Duration),
    /// More than `burst` tokens asked at once: no wait makes that grantable.
    ExceedsBurst,
}

/// The rate and burst of a GCRA bucket, and its one step: what taking tokens does to
/// a TAT. Shared by the [`TokenBucket`] (one atomic TAT) and the
/// [`KeyedTokenBucket`](crate::keyed::KeyedTokenBucket) (a TAT per key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gcra {
    /// Nanoseconds each token is worth; `None` when unlimited.
    interval: Option<u64>,
    /// Nanoseconds of credit a full bucket holds: `burst * interval`.
    tolerance: u64,
    burst: u64,
    rate: f64,
}

impl Gcra {
    pub(crate) fn new(rate: f64, burst: u64) -> Result<Self, Error> {
        if burst == 0 {
            return Err(Error::invalid("burst must be at least 1"));
        }
        if rate.is_nan() {
            return Err(Error::invalid("rate must be a number"));
        }
        let interval = if rate > 0.0 && rate.is_finite() {
            // `as` saturates: a tiny rate becomes u64::MAX and is rejected below.
            Some((1e9 / rate).round() as u64).filter(|&nanos| nanos > 0)
        } else {
            None
        };
        let tolerance = match interval {
            Some(nanos) => nanos
                .checked_mul(burst)
                .filter(|&t| t <= MAX_TOLERANCE_NANOS)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "rate {rate}/s is too low to fill a burst of {burst}"
                    ))
                })?,
            None => 0,
        };
        let rate = if interval.is_some() {
            rate
        } else {
            f64::INFINITY
        };
        Ok(Self {
            interval,
            tolerance,
            burst,
            rate,
        })
    }

    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    pub(crate) fn burst(&self) -> u64 {
        self.burst
    }

    pub(crate) fn is_unlimited(&self) -> bool {
        self.interval.is_none()
    }

    /// The TAT after taking `n` tokens at `now` from a bucket whose TAT is `tat`, or why
    /// not. `Ok(None)`: unlimited, nothing to record.
    pub(crate) fn take(&self, tat: u64, now: u64, n: u64) -> Result<Option<u64>, Denied> {
        if n > self.burst {
            return Err(Denied::ExceedsBurst);
        }
        let Some(interval) = self.interval else {
            return Ok(None);
        };
        let cost = interval * n; // n <= burst, so this is <= tolerance: no overflow.
        let next = tat.max(now).saturating_add(cost);
        let ready = self.ready_at(next);
        if ready <= now {
            Ok(Some(next))
        } else {
            Err(Denied::RetryAfter(Duration::from_nanos(ready - now)))
        }
    }

    /// The earliest instant at which the TAT may have advanced to `next`.
    fn ready_at(&self, next: u64) -> u64 {
        next.saturating_sub(self.tolerance)
    }
}

/// A token bucket of `burst` tokens refilled at `rate` tokens per second.
pub struct TokenBucket<C: Clock = MonotonicClock> {
    gcra: Gcra,
    /// Theoretical arrival time, in the clock's nanoseconds. It is the only shared
    /// state and guards no other memory, so relaxed atomics suffice.
    tat: AtomicU64,
    clock: C,
}

impl TokenBucket<MonotonicClock> {
    /// A bucket on the real clock. `rate <= 0` or infinite means unlimited.
    pub fn new(rate: f64, burst: u64) -> Result<Self, Error> {
        Self::with_clock(rate, burst, MonotonicClock::new())
    }
}

impl<C: Clock> TokenBucket<C> {
    /// A bucket reading time from `clock`; it starts full.
    pub fn with_clock(rate: f64, burst: u64, clock: C) -> Result<Self, Error> {
        // A TAT of 0 lies at or before any reading of the clock: the bucket starts full.
        Ok(Self {
            gcra: Gcra::new(rate, burst)?,
            tat: AtomicU64::new(0),
            clock,
        })
    }

    /// Tokens per second; infinite when unlimited.
    pub fn rate(&self) -> f64 {
        self.gcra.rate()
    }

    pub fn burst(&self) -> u64 {
        self.gcra.burst()
    }

    pub fn is_unlimited(&self) -> bool {
        self.gcra.is_unlimited()
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Takes `n` tokens if they are all available now; takes nothing otherwise.
    ///
    /// `n > burst` is refused with [`Denied::ExceedsBurst`] even when unlimited, so a
    /// caller's request size is validated the same way whatever the configured rate.
    pub fn try_acquire(&self, n: u64) -> Result<(), Denied> {
        let now = self.clock.now_nanos();
        let mut denied = None;
        // fetch_update retries the closure on contention: the last refusal is the answer.
        let update = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                match self.gcra.take(tat, now, n) {
                    Ok(next) => next,
                    Err(why) => {
                        denied = Some(why);
                        None
                    }
                }
            });
        match (update, denied) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(why)) => Err(why),
            (Err(_), None) => Ok(()), // unlimited: nothing to record
        }
    }

    /// Takes `n` tokens unconditionally and returns how long the caller must wait
    /// before acting on them (zero when they were available). Waiting callers queue
    /// up behind each other, for async callers that sleep instead of retrying.
    pub fn reserve(&self, n: u64) -> Duration {
        let Some(interval) = self.gcra.interval else {
            return Duration::ZERO;
        };
        let cost = interval.saturating_mul(n);
        let now = self.clock.now_nanos();
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(cost);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Duration::from_nanos(self.gcra.ready_at(next).saturating_sub(now)),
                Err(current) => tat = current,
            }
        }
    }
}
