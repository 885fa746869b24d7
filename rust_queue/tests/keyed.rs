use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rust_queue::{Denied, Error, KeyedTokenBucket, ManualClock};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// 10 tokens per second (one per 100 ms) for each key.
fn buckets(burst: u64, max_keys: usize) -> KeyedTokenBucket<ManualClock> {
    KeyedTokenBucket::with_clock(10.0, burst, max_keys, ManualClock::new(1_000_000_000_000))
        .unwrap()
}

#[test]
fn each_key_has_its_own_bucket() {
    let buckets = buckets(3, 100);
    for _ in 0..3 {
        assert_eq!(buckets.try_acquire("alice", 1), Ok(()));
    }
    assert_eq!(
        buckets.try_acquire("alice", 1),
        Err(Denied::RetryAfter(ms(100)))
    );
    // bob is not slowed by alice
    for _ in 0..3 {
        assert_eq!(buckets.try_acquire("bob", 1), Ok(()));
    }
    assert_eq!(
        buckets.try_acquire("bob", 1),
        Err(Denied::RetryAfter(ms(100)))
    );
    buckets.clock().advance(ms(100));
    assert_eq!(buckets.try_acquire("alice", 1), Ok(()));
    assert_eq!(
        buckets.try_acquire("alice", 1),
        Err(Denied::RetryAfter(ms(100)))
    );
}

#[test]
fn a_refused_request_takes_nothing() {
    let buckets = buckets(2, 100);
    assert_eq!(buckets.try_acquire("a", 2), Ok(()));
    for _ in 0..5 {
        assert!(buckets.try_acquire("a", 1).is_err());
    }
    buckets.clock().advance(ms(100));
    assert_eq!(buckets.try_acquire("a", 1), Ok(()));
}

#[test]
fn more_than_the_burst_is_never_granted() {
    let buckets = buckets(2, 10);
    assert_eq!(buckets.try_acquire("a", 3), Err(Denied::ExceedsBurst));
    assert!(buckets.is_empty());
}

#[test]
fn idle_keys_are_forgotten_when_the_map_is_full() {
    let buckets = buckets(1, 4);
    for key in ["a", "b", "c", "d"] {
        assert_eq!(buckets.try_acquire(key, 1), Ok(()));
    }
    assert_eq!(buckets.len(), 4);
    buckets.clock().advance(ms(100)); // every bucket is full again: all idle
    assert_eq!(buckets.try_acquire("e", 1), Ok(()));
    assert_eq!(buckets.len(), 1);
    // A forgotten key starts full, as it would have been anyway.
    assert_eq!(buckets.try_acquire("a", 1), Ok(()));
}

#[test]
fn memory_stays_bounded_under_a_flood_of_busy_keys() {
    let buckets = buckets(1, 64);
    for n in 0..10_000 {
        assert_eq!(buckets.try_acquire(&format!("caller-{n}"), 1), Ok(()));
        assert!(buckets.len() <= 64);
    }
    // The most recent callers are still limited: the keys closest to full went first.
    assert!(buckets.try_acquire("caller-9999", 1).is_err());
}

#[test]
fn an_eviction_drops_the_keys_closest_to_full() {
    let buckets = buckets(10, 8);
    // k0 took 1 token, k7 took 8: k7 is the furthest from full.
    for (i, key) in ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"]
        .iter()
        .enumerate()
    {
        assert_eq!(buckets.try_acquire(key, i as u64 + 1), Ok(()));
    }
    assert_eq!(buckets.try_acquire("new", 1), Ok(())); // the map is full: one goes
    assert_eq!(buckets.len(), 8);
    assert_eq!(
        buckets.try_acquire("k7", 3),
        Err(Denied::RetryAfter(ms(100)))
    );
    assert_eq!(buckets.try_acquire("k0", 10), Ok(())); // k0 was forgotten: full again
}

#[test]
fn unlimited_stores_no_key() {
    let buckets = KeyedTokenBucket::with_clock(0.0, 5, 10, ManualClock::new(0)).unwrap();
    for n in 0..100 {
        assert_eq!(buckets.try_acquire(&n.to_string(), 5), Ok(()));
    }
    assert!(buckets.is_empty());
    assert_eq!(buckets.rate(), f64::INFINITY);
}

#[test]
fn bad_arguments_are_refused() {
    assert!(matches!(
        KeyedTokenBucket::new(1.0, 1, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        KeyedTokenBucket::new(1.0, 0, 10),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        KeyedTokenBucket::new(f64::NAN, 1, 10),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn threads_share_one_key_without_granting_more_than_the_burst() {
    let buckets = Arc::new(buckets(100, 10));
    let granted: usize = (0..4)
        .map(|_| {
            let buckets = Arc::clone(&buckets);
            thread::spawn(move || {
                (0..100)
                    .filter(|_| buckets.try_acquire("shared", 1).is_ok())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .sum();
    assert_eq!(granted, 100); // the clock does not move: exactly the burst
}
