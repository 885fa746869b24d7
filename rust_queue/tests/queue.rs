use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rust_queue::queue::MAX_CAPACITY;
use rust_queue::{Error, Queue};

#[test]
fn rejects_capacity_out_of_range() {
    assert!(matches!(
        Queue::<u8>::new(0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Queue::<u8>::new(MAX_CAPACITY + 1),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(Queue::<u8>::new(1).unwrap().capacity(), 1);
}

#[test]
fn fifo_for_a_single_producer() {
    let queue = Queue::new(8).unwrap();
    for i in 0..5 {
        queue.push(i).unwrap();
    }
    assert_eq!(queue.len(), 5);
    let popped: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
    assert_eq!(popped, vec![0, 1, 2, 3, 4]);
    assert!(queue.is_empty());
    assert_eq!(queue.pop(), None);
}

#[test]
fn push_hands_the_item_back_when_full() {
    let queue = Queue::new(2).unwrap();
    queue.push("a").unwrap();
    queue.push("b").unwrap();
    assert_eq!(queue.push("c"), Err("c"));
    assert_eq!(queue.len(), 2);
    assert_eq!(queue.pop(), Some("a"));
    queue.push("c").unwrap();
    assert_eq!(queue.pop(), Some("b"));
    assert_eq!(queue.pop(), Some("c"));
}

#[test]
fn pop_timeout_returns_none_after_the_timeout_when_empty() {
    let queue = Queue::<u32>::new(1).unwrap();
    let started = Instant::now();
    assert_eq!(queue.pop_timeout(Duration::from_millis(30)), None);
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(queue.pop_timeout(Duration::ZERO), None);
}

#[test]
fn pop_timeout_returns_an_item_already_there() {
    let queue = Queue::new(1).unwrap();
    queue.push(7).unwrap();
    assert_eq!(queue.pop_timeout(Duration::ZERO), Some(7));
}

#[test]
fn pop_timeout_wakes_when_another_thread_pushes() {
    let queue = Arc::new(Queue::new(1).unwrap());
    let consumer = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            let started = Instant::now();
            (
                queue.pop_timeout(Duration::from_secs(60)),
                started.elapsed(),
            )
        })
    };
    thread::sleep(Duration::from_millis(20));
    queue.push(42).unwrap();
    let (item, waited) = consumer.join().unwrap();
    assert_eq!(item, Some(42));
    // A lost wakeup would still find the item, but only on the final re-check after
    // the full 60 s; the bound is far from both that and any scheduling delay.
    assert!(
        waited < Duration::from_secs(30),
        "woken only by the timeout"
    );
}

#[test]
fn mpmc_moves_every_item_exactly_once_in_per_producer_order() {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 4;
    const PER_PRODUCER: u64 = 50_000;
    const TOTAL: u64 = PRODUCERS * PER_PRODUCER;
    const STOP: u64 = u64::MAX;
    // Consumers block this long at most; running out means a push failed to wake one.
    const LOST_WAKEUP: Duration = Duration::from_secs(60);

    // Small capacity so producers hit "full" and consumers hit "empty" often.
    let queue = Arc::new(Queue::new(64).unwrap());
    let seen: Arc<Vec<AtomicU64>> =
        Arc::new((0..TOTAL.div_ceil(64)).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS));

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for i in 0..PER_PRODUCER {
                    let mut item = p * PER_PRODUCER + i;
                    while let Err(back) = queue.push(item) {
                        item = back;
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let (queue, seen, start) = (Arc::clone(&queue), Arc::clone(&seen), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut last_from = [None::<u64>; PRODUCERS as usize];
                let mut count = 0u64;
                loop {
                    // Half the consumers spin on the non-blocking pop, half sleep.
                    let item = if c % 2 == 0 {
                        queue
                            .pop_timeout(LOST_WAKEUP)
                            .expect("lost wakeup: waited the full timeout")
                    } else {
                        match queue.pop() {
                            Some(item) => item,
                            None => {
                                thread::yield_now();
                                continue;
                            }
                        }
                    };
                    if item == STOP {
                        return count;
                    }
                    let producer = (item / PER_PRODUCER) as usize;
                    assert!(
                        last_from[producer].is_none_or(|last| last < item),
                        "out of order: {item}"
                    );
                    last_from[producer] = Some(item);
                    let bit = 1u64 << (item % 64);
                    let before = seen[(item / 64) as usize].fetch_or(bit, Ordering::Relaxed);
                    assert_eq!(before & bit, 0, "item {item} delivered twice");
                    count += 1;
                }
            })
        })
        .collect();

    for producer in producers {
        producer.join().unwrap();
    }
    for _ in 0..CONSUMERS {
        let mut stop = STOP;
        while let Err(back) = queue.push(stop) {
            stop = back;
            thread::yield_now();
        }
    }
    let delivered: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();

    assert_eq!(delivered, TOTAL);
    let missing = (0..TOTAL)
        .find(|&i| seen[(i / 64) as usize].load(Ordering::Relaxed) & (1 << (i % 64)) == 0);
    assert_eq!(missing, None, "an item was lost");
    assert!(queue.is_empty());
}
