//! A token bucket per key (a caller), in bounded memory.
//!
//! Each key has its own GCRA theoretical arrival time (see [`crate::limiter`]); every key
//! shares one rate and burst. A key whose TAT has passed holds a full bucket, exactly
//! what a key never seen holds, so forgetting it changes nothing: that is how idle keys
//! are evicted. When the map reaches `max_keys`, the idle ones go; if fewer than an
//! eighth of the map was idle, the keys closest to full go as well until it is at
//! seven eighths (each of those is granted at most its remaining refill early). A
//! flood of new keys thus costs amortised O(1) per key and never more memory.
//!
//! The map sits behind one mutex: the critical section is a hash lookup and a few
//! integer operations.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::{Clock, MonotonicClock};
use crate::error::Error;
use crate::limiter::{Denied, Gcra};

/// Keys tracked when the caller does not say.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// Token buckets of `burst` tokens refilled at `rate` per second, one per key.
pub struct KeyedTokenBucket<C: Clock = MonotonicClock> {
    gcra: Gcra,
    max_keys: usize,
    tats: Mutex<HashMap<String, u64>>,
    clock: C,
}

impl KeyedTokenBucket<MonotonicClock> {
    /// Buckets on the real clock. `rate <= 0` or infinite means unlimited.
    pub fn new(rate: f64, burst: u64, max_keys: usize) -> Result<Self, Error> {
        Self::with_clock(rate, burst, max_keys, MonotonicClock::new())
    }
}

impl<C: Clock> KeyedTokenBucket<C> {
    /// Buckets reading time from `clock`; every key starts full.
    pub fn with_clock(rate: f64, burst: u64, max_keys: usize, clock: C) -> Result<Self, Error> {
        if max_keys == 0 {
            return Err(Error::invalid("max_keys must be at least 1"));
        }
        Ok(Self {
            gcra: Gcra::new(rate, burst)?,
            max_keys,
            tats: Mutex::new(HashMap::new()),
            clock,
        })
    }

    pub fn rate(&self) -> f64 {
        self.gcra.rate()
    }

    pub fn burst(&self) -> u64 {
        self.gcra.burst()
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Keys whose bucket is not known to be full (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `n` tokens from `key`'s bucket if they are all there now; takes nothing
    /// otherwise. `n > burst` is [`Denied::ExceedsBurst`], as for [`crate::TokenBucket`].
    pub fn try_acquire(&self, key: &str, n: u64) -> Result<(), Denied> {
        let now = self.clock.now_nanos();
        let mut tats = self.lock();
        let tat = tats.get(key).copied().unwrap_or(0);
        let Some(next) = self.gcra.take(tat, now, n)? else {
            return Ok(()); // unlimited: no key is ever stored
        };
        if let Some(slot) = tats.get_mut(key) {
            *slot = next;
        } else {
            if tats.len() >= self.max_keys {
                self.evict(&mut tats, now);
            }
            tats.insert(key.to_owned(), next);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // A panic elsewhere under the lock cannot leave a TAT half-written: go on.
        self.tats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Make room: drop the idle keys, and the keys closest to full if too few were idle.
    fn evict(&self, tats: &mut HashMap<String, u64>, now: u64) {
        tats.retain(|_, tat| *tat > now);
        let keep = self.max_keys - self.max_keys.div_ceil(8);
        if tats.len() <= keep {
            return;
        }
        let mut order: Vec<u64> = tats.values().copied().collect();
        let cut = tats.len() - keep;
        let (_, threshold, _) = order.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut dropped = 0;
        tats.retain(|_, tat| {
            let drop = *tat <= threshold && dropped < cut;
            dropped += usize::from(drop);
            !drop
        });
    }
}
