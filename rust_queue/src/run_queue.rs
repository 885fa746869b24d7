//! The run queue: per-shard lanes, bounded, with delayed items, recovered runs first and
//! weighted fair queueing between tenants.
//!
//! A lane holds three things: recovered items and new items, each a [`FairQueue`] by
//! tenant, and delayed items ordered by the clock time they are due. A pop first moves
//! the due delayed items into their class, then serves the recovered class before the
//! new one. Every item counts against its lane's capacity and its tenant's queued count
//! from push to pop, delayed or not, so nothing is held outside a bound.
//!
//! All of it sits behind one mutex, on purpose. A push or a pop changes several
//! structures that must agree (a lane's count, a tenant's count over all lanes, a fair
//! schedule, the delay order); lock-free, that would take a multi-word CAS or a
//! hand-proved protocol, and the queue's own bugs are what the last CI failures were.
//! The critical sections are short (hash lookups and an O(log tenants) heap step, no
//! Python code and no item dropped inside), a few hundred nanoseconds, while the callers
//! are launch workers doing one network round trip per item: the lock is not where the
//! time goes. Each lane has its own condition variable, so a push wakes only a waiter
//! of its lane.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, MonotonicClock};
use crate::error::Error;
use crate::fair::{FairQueue, MAX_WEIGHT};

/// Which class of its lane an item is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// A run accepted for the first time.
    New,
    /// A run re-queued after a restart or taken over, or a retry: served before any
    /// new run of its lane, and never refused for its tenant's limit (it was admitted
    /// under that limit once already).
    Recovered,
}

/// A refused push: why, and the item, handed back untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected<T> {
    pub error: Error,
    pub item: T,
}

/// An item taken from the queue, with what metrics need about its stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popped<T> {
    pub item: T,
    pub tenant: Arc<str>,
    pub priority: Priority,
    /// From the moment the item was ready (pushed, or its delay expired) to the pop.
    pub waited: Duration,
    /// The delay it was pushed with.
    pub delay: Duration,
}

/// Bounded lanes of items keyed by `L`, fair between tenants; see the module docs.
pub struct RunQueue<L, T, C: Clock = MonotonicClock> {
    state: Mutex<State<L, T>>,
    clock: C,
}

struct State<L, T> {
    lanes: HashMap<L, Lane<T>>,
    tenants: Tenants,
    /// Orders delayed items due at the same nanosecond by push; never repeats.
    pushes: u64,
}

struct Lane<T> {
    capacity: usize,
    recovered: FairQueue<Queued<T>>,
    new: FairQueue<Queued<T>>,
    /// Keyed by (due time, push number).
    delayed: BTreeMap<(u64, u64), Queued<T>>,
    /// Threads blocked in `pop_timeout` on this lane; a push notifies only if any.
    sleepers: usize,
    /// Shared so a waiter can wait on it while giving the state's guard back.
    wakeup: Arc<Condvar>,
}

struct Queued<T> {
    item: T,
    tenant: Arc<str>,
    priority: Priority,
    pushed_at: u64,
    due: u64,
}

#[derive(Default)]
struct Tenants {
    /// Queued items per tenant over all lanes; a tenant with none has no entry.
    queued: HashMap<Arc<str>, usize>,
    settings: HashMap<Arc<str>, TenantSettings>,
    default_limit: Option<usize>,
}

#[derive(Clone, Copy)]
struct TenantSettings {
    weight: u32,
    limit: Option<usize>,
}

impl<L: Eq + Hash + Display, T> RunQueue<L, T, MonotonicClock> {
    /// A queue on the real clock, with no lanes yet. `tenant_limit` caps the items any
    /// one tenant may have queued (None: only the lanes' capacities do).
    pub fn new(tenant_limit: Option<usize>) -> Self {
        Self::with_clock(tenant_limit, MonotonicClock::new())
    }
}

impl<L: Eq + Hash + Display, T, C: Clock> RunQueue<L, T, C> {
    /// A queue reading due times from `clock`.
    pub fn with_clock(tenant_limit: Option<usize>, clock: C) -> Self {
        let tenants = Tenants {
            default_limit: tenant_limit,
            ..Tenants::default()
        };
        Self {
            state: Mutex::new(State {
                lanes: HashMap::new(),
                tenants,
                pushes: 0,
            }),
            clock,
        }
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Creates `lane`, or changes its capacity. Items already held stay even above a
    /// lowered capacity; pushes are refused until the lane is below it.
    pub fn configure_lane(&self, lane: L, capacity: usize) -> Result<(), Error> {
        if capacity == 0 {
            return Err(Error::invalid(format!(
                "capacity of lane {lane} must be at least 1"
            )));
        }
        let mut state = self.lock();
        state
            .lanes
            .entry(lane)
            .and_modify(|lane| lane.capacity = capacity)
            .or_insert_with(|| Lane::new(capacity));
        Ok(())
    }

    /// Sets `tenant`'s weight (1 ..= [`MAX_WEIGHT`]; 1 for tenants never configured)
    /// and its limit on queued items (None: the queue's default limit).
    pub fn configure_tenant(
        &self,
        tenant: &str,
        weight: u32,
        limit: Option<usize>,
    ) -> Result<(), Error> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(Error::invalid(format!(
                "weight of tenant {tenant:?} must be between 1 and {MAX_WEIGHT}, got {weight}"
            )));
        }
        let mut state = self.lock();
        state
            .tenants
            .settings
            .insert(Arc::from(tenant), TenantSettings { weight, limit });
        Ok(())
    }

    /// Queues `item` in `lane` for `tenant`, ready after `delay` on the queue's clock.
    ///
    /// Refused, with the item handed back, if the lane is unknown or full, or if the
    /// tenant is at its limit and `priority` is [`Priority::New`].
    pub fn push(
        &self,
        lane: &L,
        tenant: &str,
        item: T,
        priority: Priority,
        delay: Duration,
    ) -> Result<(), Rejected<T>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(queue) = state.lanes.get_mut(lane) else {
            let error = unknown(lane);
            return Err(Rejected { error, item });
        };
        if queue.len() >= queue.capacity {
            let error = Error::LaneFull {
                lane: lane.to_string(),
                capacity: queue.capacity,
            };
            return Err(Rejected { error, item });
        }
        let tenant = match state.tenants.admit(tenant, priority) {
            Ok(tenant) => tenant,
            Err(error) => return Err(Rejected { error, item }),
        };
        let now = self.clock.now_nanos();
        let delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let queued = Queued {
            item,
            tenant,
            priority,
            pushed_at: now,
            due: now.saturating_add(delay),
        };
        state.pushes += 1;
        if delay == 0 {
            queue.enqueue(queued);
        } else {
            queue.delayed.insert((queued.due, state.pushes), queued);
        }
        // A delayed item wakes a waiter too, so that it shortens its sleep to the due time.
        if queue.sleepers > 0 {
            queue.wakeup.notify_one();
        }
        Ok(())
    }

    /// Takes the next item of `lane`: recovered before new, fair between tenants within
    /// each. `None` when nothing is ready now. Never blocks (beyond the lock).
    pub fn pop(&self, lane: &L) -> Result<Option<Popped<T>>, Error> {
        let mut state = self.lock();
        self.take(&mut state, lane)
    }

    /// Like [`pop`](Self::pop), waiting up to `timeout` of real time for an item to be
    /// pushed or to fall due. `None` only if nothing was ready for this caller in time.
    pub fn pop_timeout(&self, lane: &L, timeout: Duration) -> Result<Option<Popped<T>>, Error> {
        // A timeout too large for Instant means "wait as long as it takes".
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            if let Some(popped) = self.take(&mut state, lane)? {
                return Ok(Some(popped));
            }
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            let queue = state.lanes.get_mut(lane).expect("take found the lane");
            let until_due = queue.next_due().map(|due| {
                let ahead = Duration::from_nanos(due.saturating_sub(self.clock.now_nanos()));
                self.clock.real_wait(ahead)
            });
            let sleep = match (left, until_due) {
                (Some(left), Some(due)) => Some(left.min(due)),
                (left, due) => left.or(due),
            };
            let wakeup = Arc::clone(&queue.wakeup);
            queue.sleepers += 1;
            state = match sleep {
                None => wakeup.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(sleep) => {
                    wakeup
                        .wait_timeout(state, sleep)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            let queue = state.lanes.get_mut(lane).expect("lanes are never removed");
            queue.sleepers -= 1;
        }
    }

    /// Items held in all lanes, delayed ones included.
    pub fn len(&self) -> usize {
        self.lock().lanes.values().map(Lane::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items held in `lane`, delayed ones included: what its capacity bounds.
    pub fn lane_len(&self, lane: &L) -> Result<usize, Error> {
        let state = self.lock();
        let queue = state.lanes.get(lane);
        queue.map(Lane::len).ok_or_else(|| unknown(lane))
    }

    /// Items of `lane` whose delay has not expired yet.
    pub fn delayed_len(&self, lane: &L) -> Result<usize, Error> {
        let mut state = self.lock();
        let now = self.clock.now_nanos();
        Ok(state.released(lane, now)?.0.delayed.len())
    }

    /// How long until the earliest delayed item of `lane` is due; `None` when none is
    /// waiting. For callers that sleep instead of blocking in `pop_timeout`.
    pub fn next_due(&self, lane: &L) -> Result<Option<Duration>, Error> {
        let mut state = self.lock();
        let now = self.clock.now_nanos();
        let due = state.released(lane, now)?.0.next_due();
        Ok(due.map(|due| Duration::from_nanos(due.saturating_sub(now))))
    }

    /// Queued items per tenant over all lanes; tenants with none are absent.
    pub fn tenant_depths(&self) -> Vec<(Arc<str>, usize)> {
        let state = self.lock();
        let depths = state.tenants.queued.iter();
        depths.map(|(tenant, &n)| (Arc::clone(tenant), n)).collect()
    }

    fn take(&self, state: &mut State<L, T>, lane: &L) -> Result<Option<Popped<T>>, Error> {
        let now = self.clock.now_nanos();
        let (queue, tenants) = state.released(lane, now)?;
        let weight_of = |tenant: &str| tenants.weight(tenant);
        let Some(queued) = queue
            .recovered
            .pop(weight_of)
            .or_else(|| queue.new.pop(weight_of))
        else {
            return Ok(None);
        };
        // Several items can fall due at once while one waiter was woken for them.
        if queue.sleepers > 0 && queue.has_ready() {
            queue.wakeup.notify_one();
        }
        tenants.release(&queued.tenant);
        Ok(Some(Popped {
            waited: Duration::from_nanos(now.saturating_sub(queued.due)),
            delay: Duration::from_nanos(queued.due - queued.pushed_at),
            item: queued.item,
            tenant: queued.tenant,
            priority: queued.priority,
        }))
    }

    /// A panic inside the lock can only come from a broken invariant (an `expect`);
    /// the other threads carry on rather than all panicking in turn.
    fn lock(&self) -> MutexGuard<'_, State<L, T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<L: Eq + Hash + Display, T> State<L, T> {
    /// `lane` with the items due by `now` moved out of its delay order, and the
    /// tenants, borrowed apart so a caller can update both.
    fn released(&mut self, lane: &L, now: u64) -> Result<(&mut Lane<T>, &mut Tenants), Error> {
        let queue = self.lanes.get_mut(lane).ok_or_else(|| unknown(lane))?;
        queue.release_due(now);
        Ok((queue, &mut self.tenants))
    }
}

fn unknown(lane: &impl Display) -> Error {
    Error::UnknownLane(lane.to_string())
}

impl<T> Lane<T> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            recovered: FairQueue::new(),
            new: FairQueue::new(),
            delayed: BTreeMap::new(),
            sleepers: 0,
            wakeup: Arc::new(Condvar::new()),
        }
    }

    fn len(&self) -> usize {
        self.recovered.len() + self.new.len() + self.delayed.len()
    }

    fn has_ready(&self) -> bool {
        !(self.recovered.is_empty() && self.new.is_empty())
    }

    fn next_due(&self) -> Option<u64> {
        self.delayed.first_key_value().map(|(&(due, _), _)| due)
    }

    fn enqueue(&mut self, queued: Queued<T>) {
        let class = match queued.priority {
            Priority::Recovered => &mut self.recovered,
            Priority::New => &mut self.new,
        };
        let tenant = Arc::clone(&queued.tenant);
        class.push(&tenant, queued);
    }

    /// Moves the delayed items due by `now` into their class, earliest first.
    fn release_due(&mut self, now: u64) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let queued = entry.remove();
            self.enqueue(queued);
        }
    }
}

impl Tenants {
    fn weight(&self, tenant: &str) -> u32 {
        self.settings
            .get(tenant)
            .map_or(1, |settings| settings.weight)
    }

    fn limit(&self, tenant: &str) -> Option<usize> {
        let own = self
            .settings
            .get(tenant)
            .and_then(|settings| settings.limit);
        own.or(self.default_limit)
    }

    /// Counts one more queued item for `tenant`, unless a new item would exceed its
    /// limit; returns the shared name to store with the item.
    fn admit(&mut self, tenant: &str, priority: Priority) -> Result<Arc<str>, Error> {
        // Reuse the name the map already holds, so a busy tenant costs no allocation.
        let (name, queued) = match self.queued.get_key_value(tenant) {
            Some((name, &queued)) => (Arc::clone(name), queued),
            None => (Arc::from(tenant), 0),
        };
        if priority == Priority::New {
            if let Some(limit) = self.limit(tenant).filter(|&limit| queued >= limit) {
                let tenant = tenant.to_owned();
                return Err(Error::TenantLimit { tenant, limit });
            }
        }
        self.queued.insert(Arc::clone(&name), queued + 1);
        Ok(name)
    }

    fn release(&mut self, tenant: &str) {
        if let Some(queued) = self.queued.get_mut(tenant) {
            *queued -= 1;
            if *queued == 0 {
                self.queued.remove(tenant);
            }
        }
    }
}
