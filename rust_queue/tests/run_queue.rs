use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rust_queue::{Error, ManualClock, Popped, Priority, Rejected, RunQueue, MAX_WEIGHT};

const NOW: Duration = Duration::ZERO;

/// A queue on a manual clock (virtual time), with lanes 0 and 1 of `capacity`.
fn queue_with(
    capacity: usize,
    tenant_limit: Option<usize>,
) -> (RunQueue<u32, u64, Arc<ManualClock>>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(0));
    let queue = RunQueue::with_clock(tenant_limit, Arc::clone(&clock));
    queue.configure_lane(0, capacity).unwrap();
    queue.configure_lane(1, capacity).unwrap();
    (queue, clock)
}

fn push_new<C: rust_queue::Clock>(queue: &RunQueue<u32, u64, C>, tenant: &str, item: u64) {
    queue.push(&0, tenant, item, Priority::New, NOW).unwrap();
}

fn pop_items<C: rust_queue::Clock>(queue: &RunQueue<u32, u64, C>, n: usize) -> Vec<u64> {
    (0..n)
        .map_while(|_| queue.pop(&0).unwrap().map(|popped| popped.item))
        .collect()
}

fn pop_tenant<C: rust_queue::Clock>(queue: &RunQueue<u32, u64, C>) -> Option<String> {
    let popped = queue.pop(&0).unwrap()?;
    Some(popped.tenant.to_string())
}

#[test]
fn a_full_lane_refuses_and_hands_the_item_back() {
    let (queue, _) = queue_with(2, None);
    push_new(&queue, "a", 1);
    push_new(&queue, "b", 2);
    let refused = queue.push(&0, "c", 3, Priority::Recovered, NOW);
    let expected = Error::LaneFull {
        lane: "0".into(),
        capacity: 2,
    };
    assert_eq!(
        refused,
        Err(Rejected {
            error: expected,
            item: 3
        })
    );
    // The other lane has its own bound.
    queue.push(&1, "c", 3, Priority::New, NOW).unwrap();
    assert_eq!(queue.pop(&0).unwrap().map(|popped| popped.item), Some(1));
    push_new(&queue, "c", 4);
    assert_eq!((queue.lane_len(&0), queue.len()), (Ok(2), 3));
}

#[test]
fn delayed_items_count_against_the_lane() {
    let (queue, _) = queue_with(1, None);
    let delay = Duration::from_secs(60);
    queue.push(&0, "a", 1, Priority::Recovered, delay).unwrap();
    let refused = queue.push(&0, "a", 2, Priority::New, NOW).unwrap_err();
    assert!(matches!(refused.error, Error::LaneFull { capacity: 1, .. }));
}

#[test]
fn lowering_a_capacity_keeps_what_is_held() {
    let (queue, _) = queue_with(3, None);
    (1..=3).for_each(|item| push_new(&queue, "a", item));
    queue.configure_lane(0, 1).unwrap();
    assert_eq!(queue.lane_len(&0), Ok(3));
    assert!(queue.push(&0, "a", 4, Priority::New, NOW).is_err());
    assert_eq!(pop_items(&queue, 3), vec![1, 2, 3]);
    push_new(&queue, "a", 4);
}

#[test]
fn unknown_lanes_and_bad_settings_are_errors() {
    let (queue, _) = queue_with(1, None);
    let unknown = Error::UnknownLane("7".into());
    assert_eq!(
        queue
            .push(&7, "a", 1, Priority::New, NOW)
            .unwrap_err()
            .error,
        unknown
    );
    assert_eq!(queue.pop(&7), Err(unknown.clone()));
    assert_eq!(
        queue.pop_timeout(&7, Duration::from_secs(1)),
        Err(unknown.clone())
    );
    assert_eq!(queue.lane_len(&7), Err(unknown.clone()));
    assert_eq!(queue.next_due(&7), Err(unknown));
    assert!(matches!(
        queue.configure_lane(2, 0),
        Err(Error::InvalidArgument(_))
    ));
    for weight in [0, MAX_WEIGHT + 1] {
        let refused = queue.configure_tenant("a", weight, None);
        assert!(matches!(refused, Err(Error::InvalidArgument(_))));
    }
}

#[test]
fn a_tenant_at_its_limit_is_refused_over_all_lanes() {
    let (queue, _) = queue_with(10, Some(2));
    push_new(&queue, "a", 1);
    queue.push(&1, "a", 2, Priority::New, NOW).unwrap();
    let refused = queue.push(&0, "a", 3, Priority::New, NOW).unwrap_err();
    let expected = Error::TenantLimit {
        tenant: "a".into(),
        limit: 2,
    };
    assert_eq!(refused.error, expected);
    assert!(refused.error.to_string().contains("\"a\""));
    // Other tenants are not affected; a pop makes room again.
    push_new(&queue, "b", 4);
    queue.pop(&1).unwrap().unwrap();
    push_new(&queue, "a", 3);
}

#[test]
fn recovered_items_are_not_refused_for_the_tenant_limit() {
    let (queue, _) = queue_with(10, Some(1));
    push_new(&queue, "a", 1);
    queue.push(&0, "a", 2, Priority::Recovered, NOW).unwrap();
    assert_eq!(queue.tenant_depths(), vec![("a".into(), 2)]);
    assert!(queue.push(&0, "a", 3, Priority::New, NOW).is_err());
}

#[test]
fn a_tenant_limit_overrides_the_default() {
    let (queue, _) = queue_with(10, Some(1));
    queue.configure_tenant("big", 1, Some(3)).unwrap();
    queue.configure_tenant("none", 1, Some(0)).unwrap();
    (1..=3).for_each(|item| push_new(&queue, "big", item));
    assert!(queue.push(&0, "big", 4, Priority::New, NOW).is_err());
    let refused = queue.push(&0, "none", 5, Priority::New, NOW).unwrap_err();
    assert!(matches!(refused.error, Error::TenantLimit { limit: 0, .. }));
}

#[test]
fn tenant_depths_count_delayed_items_and_forget_empty_tenants() {
    let (queue, _) = queue_with(10, None);
    push_new(&queue, "a", 1);
    push_new(&queue, "b", 2);
    let delay = Duration::from_secs(5);
    queue.push(&1, "a", 3, Priority::Recovered, delay).unwrap();
    let mut depths = queue.tenant_depths();
    depths.sort();
    assert_eq!(depths, vec![("a".into(), 2), ("b".into(), 1)]);
    pop_items(&queue, 2);
    assert_eq!(queue.tenant_depths(), vec![("a".into(), 1)]);
}

#[test]
fn delayed_items_are_released_when_due_in_virtual_time() {
    let (queue, clock) = queue_with(10, None);
    queue
        .push(&0, "a", 1, Priority::Recovered, Duration::from_secs(5))
        .unwrap();
    queue
        .push(&0, "a", 2, Priority::Recovered, Duration::from_secs(2))
        .unwrap();
    assert_eq!(queue.pop(&0), Ok(None));
    assert_eq!(queue.delayed_len(&0), Ok(2));
    assert_eq!(queue.next_due(&0), Ok(Some(Duration::from_secs(2))));
    clock.advance(Duration::from_millis(1999));
    assert_eq!(queue.pop(&0), Ok(None));
    clock.advance(Duration::from_millis(1));
    let popped = queue.pop(&0).unwrap().unwrap();
    assert_eq!((popped.item, popped.delay), (2, Duration::from_secs(2)));
    assert_eq!(popped.waited, Duration::ZERO);
    assert_eq!(queue.next_due(&0), Ok(Some(Duration::from_secs(3))));
    clock.advance(Duration::from_secs(4));
    let popped = queue.pop(&0).unwrap().unwrap();
    // Due at 5 s, popped at 6 s: it waited one second once ready.
    assert_eq!((popped.item, popped.waited), (1, Duration::from_secs(1)));
    assert_eq!(
        (queue.next_due(&0), queue.delayed_len(&0)),
        (Ok(None), Ok(0))
    );
}

#[test]
fn waited_is_measured_on_the_queue_clock() {
    let (queue, clock) = queue_with(10, None);
    push_new(&queue, "a", 1);
    clock.advance(Duration::from_millis(250));
    let popped = queue.pop(&0).unwrap().unwrap();
    let expected = Popped {
        item: 1,
        tenant: "a".into(),
        priority: Priority::New,
        waited: Duration::from_millis(250),
        delay: Duration::ZERO,
    };
    assert_eq!(popped, expected);
}

#[test]
fn recovered_items_go_ahead_of_new_ones() {
    let (queue, _) = queue_with(2000, None);
    (0..1000).for_each(|item| push_new(&queue, "a", item));
    for item in 1000..1010 {
        queue.push(&0, "b", item, Priority::Recovered, NOW).unwrap();
    }
    let first: Vec<_> = pop_items(&queue, 10);
    assert_eq!(first, (1000..1010).collect::<Vec<_>>());
    assert_eq!(pop_items(&queue, 3), vec![0, 1, 2]);
}

#[test]
fn a_retry_whose_backoff_expired_goes_ahead_of_new_items() {
    let (queue, clock) = queue_with(100, None);
    let backoff = rust_queue::Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 5);
    let delay = backoff.unwrap().jittered(2, u64::MAX / 2);
    queue.push(&0, "a", 99, Priority::Recovered, delay).unwrap();
    (0..5).for_each(|item| push_new(&queue, "a", item));
    assert_eq!(pop_items(&queue, 1), vec![0]);
    clock.advance(delay);
    assert_eq!(pop_items(&queue, 2), vec![99, 1]);
}

#[test]
fn new_items_of_one_tenant_keep_their_order() {
    let (queue, _) = queue_with(100, None);
    (0..50).for_each(|item| push_new(&queue, "a", item));
    assert_eq!(pop_items(&queue, 100), (0..50).collect::<Vec<_>>());
}

#[test]
fn a_burst_of_one_tenant_does_not_hold_back_another() {
    let (queue, _) = queue_with(60_000, None);
    (0..50_000).for_each(|item| push_new(&queue, "a", item));
    pop_items(&queue, 10);
    push_new(&queue, "b", 1_000_000);
    // B's item starts at the virtual time, A's next one a cost later: B goes next.
    assert_eq!(pop_tenant(&queue).as_deref(), Some("b"));
    // And again for an item that arrives after B's tenant emptied.
    pop_items(&queue, 1000);
    push_new(&queue, "b", 1_000_001);
    assert_eq!(pop_tenant(&queue).as_deref(), Some("b"));
}

#[test]
fn a_tenant_refilling_after_each_pop_gets_its_share_only() {
    // B keeps one item queued, pushing the next the moment its last is popped: without
    // its finish tag remembered, each refill would start at the virtual time and jump
    // ahead of A every time.
    let (queue, _) = queue_with(20_000, None);
    (0..10_000).for_each(|item| push_new(&queue, "a", item));
    push_new(&queue, "b", 0);
    let mut served: HashMap<String, usize> = HashMap::new();
    for item in 1..=2000 {
        let tenant = pop_tenant(&queue).unwrap();
        if tenant == "b" {
            push_new(&queue, "b", item);
        }
        *served.entry(tenant).or_default() += 1;
    }
    assert!(served["a"].abs_diff(1000) <= 2, "{served:?}");
    assert!(served["b"].abs_diff(1000) <= 2, "{served:?}");
}

#[test]
fn tenants_are_served_in_proportion_to_their_weights() {
    let (queue, _) = queue_with(100_000, None);
    queue.configure_tenant("heavy", 3, None).unwrap();
    for item in 0..10_000 {
        push_new(&queue, "heavy", item);
        push_new(&queue, "light", item);
        push_new(&queue, "plain", item);
    }
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..5000 {
        *served.entry(pop_tenant(&queue).unwrap()).or_default() += 1;
    }
    // 3 : 1 : 1 of 5000 pops, to within one round of tags.
    assert!(served["heavy"].abs_diff(3000) <= 3, "{served:?}");
    assert!(served["light"].abs_diff(1000) <= 3, "{served:?}");
    assert!(served["plain"].abs_diff(1000) <= 3, "{served:?}");
}

#[test]
fn recovered_items_are_fair_between_tenants_too() {
    let (queue, _) = queue_with(1000, None);
    for item in 0..100 {
        queue.push(&0, "a", item, Priority::Recovered, NOW).unwrap();
    }
    queue.push(&0, "b", 500, Priority::Recovered, NOW).unwrap();
    let next: Vec<_> = (0..2).filter_map(|_| pop_tenant(&queue)).collect();
    assert_eq!(next, vec!["a", "b"]);
}

#[test]
fn pop_timeout_waits_for_a_push_from_another_thread() {
    let queue = Arc::new(RunQueue::<u32, u64>::new(None));
    queue.configure_lane(0, 4).unwrap();
    let pusher = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            push_new(&queue, "a", 7);
        })
    };
    let popped = queue.pop_timeout(&0, Duration::from_secs(30)).unwrap();
    assert_eq!(popped.map(|popped| popped.item), Some(7));
    pusher.join().unwrap();
}

#[test]
fn pop_timeout_gives_up_after_the_timeout() {
    let queue = RunQueue::<u32, u64>::new(None);
    queue.configure_lane(0, 4).unwrap();
    let started = Instant::now();
    assert_eq!(queue.pop_timeout(&0, Duration::from_millis(30)), Ok(None));
    assert!(started.elapsed() >= Duration::from_millis(30));
    // A push into another lane does not end the wait.
    queue.configure_lane(1, 4).unwrap();
    queue.push(&1, "a", 1, Priority::New, NOW).unwrap();
    assert_eq!(queue.pop_timeout(&0, Duration::ZERO), Ok(None));
}

#[test]
fn pop_timeout_wakes_when_a_delayed_item_falls_due() {
    let queue = RunQueue::<u32, u64>::new(None);
    queue.configure_lane(0, 4).unwrap();
    let delay = Duration::from_millis(50);
    queue.push(&0, "a", 1, Priority::Recovered, delay).unwrap();
    let started = Instant::now();
    let popped = queue.pop_timeout(&0, Duration::from_secs(30)).unwrap();
    assert_eq!(popped.map(|popped| popped.item), Some(1));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= delay && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[test]
fn pop_timeout_sees_a_manual_clock_advanced_by_another_thread() {
    let (queue, clock) = queue_with(4, None);
    let delay = Duration::from_secs(3600);
    queue.push(&0, "a", 1, Priority::Recovered, delay).unwrap();
    let advancer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        clock.advance(delay);
    });
    let popped = queue.pop_timeout(&0, Duration::from_secs(30)).unwrap();
    assert_eq!(popped.map(|popped| popped.item), Some(1));
    advancer.join().unwrap();
}

#[test]
fn threads_pushing_and_popping_lose_and_duplicate_nothing() {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: u64 = 20_000;
    // Small lanes, so producers meet back-pressure and consumers meet empty lanes.
    let queue = Arc::new(RunQueue::<u32, u64>::new(Some(40)));
    queue.configure_lane(0, 64).unwrap();
    queue.configure_lane(1, 64).unwrap();
    let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));
    // Consumers stop only once every producer is done and their lane is empty: an idle
    // timeout alone would stop them early on a loaded machine and leave producers
    // blocked on full lanes for ever.
    let produced = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for n in 0..PER_PRODUCER {
                    let item = producer * PER_PRODUCER + n;
                    let lane = u32::from(n % 2 == 0);
                    let tenant = ["a", "b", "c"][(item % 3) as usize];
                    let priority = [Priority::New, Priority::Recovered][(n % 5 == 0) as usize];
                    let delay = Duration::from_micros(n % 7);
                    let mut next = item;
                    while let Err(refused) = queue.push(&lane, tenant, next, priority, delay) {
                        next = refused.item;
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|consumer| {
            let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
            let produced = Arc::clone(&produced);
            thread::spawn(move || {
                start.wait();
                let lane = (consumer % 2) as u32;
                let mut taken = Vec::new();
                loop {
                    match queue.pop_timeout(&lane, Duration::from_millis(50)).unwrap() {
                        Some(popped) => taken.push(popped.item),
                        None if produced.load(Ordering::Acquire)
                            && queue.lane_len(&lane).unwrap() == 0 =>
                        {
                            break
                        }
                        None => {}
                    }
                }
                taken
            })
        })
        .collect();
    producers
        .into_iter()
        .for_each(|producer| producer.join().unwrap());
    produced.store(true, Ordering::Release);
    let mut taken: Vec<u64> = consumers
        .into_iter()
        .flat_map(|consumer| consumer.join().unwrap())
        .collect();
    taken.sort_unstable();
    assert_eq!(taken, (0..PRODUCERS * PER_PRODUCER).collect::<Vec<_>>());
    assert!(queue.is_empty());
    assert!(queue.tenant_depths().is_empty());
}
