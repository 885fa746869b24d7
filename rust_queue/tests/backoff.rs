use std::time::Duration;

use rust_queue::{Backoff, Error};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn policy() -> Backoff {
    Backoff::new(ms(100), Duration::from_secs(10), 5).unwrap()
}

#[test]
fn doubles_from_the_base_up_to_the_cap() {
    let backoff = policy();
    let delays: Vec<_> = (0..9).map(|attempt| backoff.delay(attempt)).collect();
    let expected = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000].map(ms);
    assert_eq!(delays, expected);
}

#[test]
fn large_attempts_do_not_overflow() {
    let backoff = policy();
    for attempt in [63, 64, 127, 128, 1000, u32::MAX] {
        assert_eq!(backoff.delay(attempt), Duration::from_secs(10));
    }
    let huge = Backoff::new(Duration::from_secs(1), Duration::MAX, 3).unwrap();
    assert_eq!(huge.delay(1000), Duration::MAX);
    assert_eq!(huge.delay(10), Duration::from_secs(1024));
    assert!(huge.jittered(1000, u64::MAX) <= Duration::MAX);
}

#[test]
fn zero_base_never_waits() {
    let backoff = Backoff::new(Duration::ZERO, Duration::ZERO, 1).unwrap();
    assert_eq!(backoff.delay(0), Duration::ZERO);
    assert_eq!(backoff.delay(1000), Duration::ZERO);
}

#[test]
fn exhausted_after_max_attempts() {
    let backoff = policy();
    assert!(!backoff.exhausted(0));
    assert!(!backoff.exhausted(4));
    assert!(backoff.exhausted(5));
    assert!(backoff.exhausted(u32::MAX));
    assert!(Backoff::new(ms(1), ms(1), 0).unwrap().exhausted(0));
}

#[test]
fn full_jitter_scales_the_delay_by_the_random_word() {
    let backoff = policy();
    assert_eq!(backoff.jittered(2, 0), Duration::ZERO);
    assert_eq!(backoff.jittered(2, 1 << 63), ms(200));
    assert_eq!(backoff.jittered(2, 3 << 62), ms(300));
    let top = backoff.jittered(2, u64::MAX);
    assert!(top < ms(400) && top > ms(399));
    assert_eq!(backoff.jittered(20, 1 << 63), Duration::from_secs(5));
}

#[test]
fn rejects_a_base_above_the_cap() {
    assert!(matches!(
        Backoff::new(ms(2), ms(1), 3),
        Err(Error::InvalidArgument(_))
    ));
    let backoff = policy();
    assert_eq!(
        (backoff.base(), backoff.max(), backoff.max_attempts()),
        (ms(100), Duration::from_secs(10), 5)
    );
}
