use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rust_queue::{Denied, Error, ManualClock, TokenBucket};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// 10 tokens per second (one per 100 ms), on a clock that starts at an arbitrary time.
fn bucket(burst: u64) -> TokenBucket<ManualClock> {
    TokenBucket::with_clock(10.0, burst, ManualClock::new(1_000_000_000_000)).unwrap()
}

#[test]
fn grants_the_burst_then_the_steady_rate() {
    let bucket = bucket(5);
    for _ in 0..5 {
        assert_eq!(bucket.try_acquire(1), Ok(()));
    }
    assert_eq!(bucket.try_acquire(1), Err(Denied::RetryAfter(ms(100))));

    bucket.clock().advance(ms(100));
    assert_eq!(bucket.try_acquire(1), Ok(()));
    assert_eq!(bucket.try_acquire(1), Err(Denied::RetryAfter(ms(100))));

    bucket.clock().advance(ms(250));
    assert_eq!(bucket.try_acquire(1), Ok(()));
    assert_eq!(bucket.try_acquire(1), Ok(()));
    assert_eq!(bucket.try_acquire(1), Err(Denied::RetryAfter(ms(50))));
}

#[test]
fn idle_time_refills_no_more_than_the_burst() {
    let bucket = bucket(3);
    assert_eq!(bucket.try_acquire(3), Ok(()));
    bucket.clock().advance(Duration::from_secs(3600));
    assert_eq!(bucket.try_acquire(3), Ok(()));
    assert_eq!(bucket.try_acquire(1), Err(Denied::RetryAfter(ms(100))));
}

#[test]
fn a_refusal_takes_nothing() {
    let bucket = bucket(4);
    assert_eq!(bucket.try_acquire(2), Ok(()));
    assert_eq!(bucket.try_acquire(3), Err(Denied::RetryAfter(ms(100))));
    assert_eq!(bucket.try_acquire(3), Err(Denied::RetryAfter(ms(100))));
    assert_eq!(bucket.try_acquire(2), Ok(()));
    assert_eq!(bucket.try_acquire(1), Err(Denied::RetryAfter(ms(100))));
    bucket.clock().advance(ms(100));
    assert_eq!(bucket.try_acquire(1), Ok(()));
}

#[test]
fn more_than_the_burst_is_never_granted() {
    let bucket = bucket(2);
    assert_eq!(bucket.try_acquire(3), Err(Denied::ExceedsBurst));
    assert_eq!(bucket.try_acquire(2), Ok(()));
    // Asking for nothing is granted even from an empty bucket.
    assert_eq!(bucket.try_acquire(0), Ok(()));
}

#[test]
fn reserve_always_takes_and_queues_callers() {
    let bucket = bucket(2);
    assert_eq!(bucket.reserve(1), Duration::ZERO);
    assert_eq!(bucket.reserve(1), Duration::ZERO);
    assert_eq!(bucket.reserve(1), ms(100));
    assert_eq!(bucket.reserve(3), ms(400));
    // The reservations are debt that try_acquire has to wait out.
    assert_eq!(bucket.try_acquire(1), Err(Denied::RetryAfter(ms(500))));
    bucket.clock().advance(ms(500));
    assert_eq!(bucket.try_acquire(1), Ok(()));
    // More than the burst may be reserved: it just waits longer.
    bucket.clock().advance(Duration::from_secs(10));
    assert_eq!(bucket.reserve(5), ms(300));
}

#[test]
fn unlimited_when_rate_is_not_positive_or_infinite() {
    for rate in [0.0, -1.0, f64::INFINITY, 1e12] {
        let bucket = TokenBucket::with_clock(rate, 3, ManualClock::new(0)).unwrap();
        assert!(bucket.is_unlimited());
        assert_eq!(bucket.rate(), f64::INFINITY);
        for _ in 0..1000 {
            assert_eq!(bucket.try_acquire(3), Ok(()));
        }
        assert_eq!(bucket.reserve(1_000_000), Duration::ZERO);
        assert_eq!(bucket.try_acquire(4), Err(Denied::ExceedsBurst));
    }
}

#[test]
fn rounds_the_interval_to_whole_nanoseconds() {
    let bucket = TokenBucket::with_clock(3.0, 1, ManualClock::new(0)).unwrap();
    assert_eq!(bucket.rate(), 3.0);
    assert_eq!(bucket.try_acquire(1), Ok(()));
    assert_eq!(
        bucket.try_acquire(1),
        Err(Denied::RetryAfter(Duration::from_nanos(333_333_333)))
    );
}

#[test]
fn rejects_invalid_configuration() {
    let clock = || ManualClock::new(0);
    assert!(matches!(
        TokenBucket::with_clock(1.0, 0, clock()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        TokenBucket::with_clock(f64::NAN, 1, clock()),
        Err(Error::InvalidArgument(_))
    ));
    // One token per ~32 years cannot hold a burst of ten in the TAT's range.
    assert!(matches!(
        TokenBucket::with_clock(1e-9, 10, clock()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn concurrent_callers_never_get_more_than_the_burst() {
    // The clock does not move, so exactly `burst` single-token requests can succeed.
    let bucket = Arc::new(TokenBucket::with_clock(1.0, 1000, ManualClock::new(0)).unwrap());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let bucket = Arc::clone(&bucket);
            thread::spawn(move || (0..1000).filter(|_| bucket.try_acquire(1).is_ok()).count())
        })
        .collect();
    let granted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(granted, 1000);
}

#[test]
fn real_clock_bucket_starts_full() {
    let bucket = TokenBucket::new(1.0, 2).unwrap();
    assert_eq!(bucket.try_acquire(2), Ok(()));
    assert!(
        matches!(bucket.try_acquire(1), Err(Denied::RetryAfter(wait)) if wait <= Duration::from_secs(1))
    );
}
