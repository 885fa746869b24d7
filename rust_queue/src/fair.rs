//! Weighted fair queueing between tenants, for one class of one lane of the run queue.
//!
//! Start-time fair queueing: each tenant keeps its own FIFO, and its head item carries
//! a virtual start tag. The item with the smallest tag is served next, and the lane's
//! virtual time moves to that tag. A tenant's next item starts `SCALE / weight` after
//! the one before (its finish); a tenant that becomes backlogged starts at the virtual
//! time, or at the finish of its last item if that is later. So a tenant arriving with
//! one item beside another's 50,000 is served at the next pop (its start is the
//! virtual time, the other's next item starts one cost later), and over a busy stretch
//! tenants are served in proportion to their weights. Finish tags (plain WFQ) would
//! make the newcomer tie with the backlogged tenant and wait one pop more.
//!
//! Tags are kept per tenant, not per item: only a tenant's head item has one in the
//! schedule, so a pop is O(log tenants) however many items wait. A tenant whose FIFO
//! empties leaves its finish tag behind, so that one which refills its queue right
//! after each pop cannot jump ahead of the others every time; tags the virtual time
//! has passed mean nothing and are pruned.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// Virtual time one item of a weight-1 tenant costs. Large enough that `SCALE / weight`
/// keeps the ratios of any two weights up to [`MAX_WEIGHT`] to within 1e-13, small
/// enough that u128 tags last 2^64 pops of a weight-1 tenant.
const SCALE: u128 = 1 << 64;

/// Remembered finish tags beyond which those the virtual time has passed are pruned.
const PRUNE_AT: usize = 4096;

/// Largest accepted tenant weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The items of one class (recovered or new) of one lane, served fairly by tenant.
pub(crate) struct FairQueue<E> {
    backlog: HashMap<Arc<str>, VecDeque<E>>,
    /// One entry per backlogged tenant: (start tag of its head item, order it was
    /// scheduled in, tenant). The order breaks ties between equal tags first come, first
    /// served, and makes the tenant never compared.
    schedule: BinaryHeap<Reverse<(u128, u64, Arc<str>)>>,
    /// Finish tags of tenants whose FIFO emptied, where later than the virtual time.
    finished: HashMap<Arc<str>, u128>,
    virtual_time: u128,
    scheduled: u64,
    len: usize,
}

impl<E> FairQueue<E> {
    pub(crate) fn new() -> Self {
        Self {
            backlog: HashMap::new(),
            schedule: BinaryHeap::new(),
            finished: HashMap::new(),
            virtual_time: 0,
            scheduled: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `entry` behind `tenant`'s other items.
    pub(crate) fn push(&mut self, tenant: &Arc<str>, entry: E) {
        self.len += 1;
        match self.backlog.entry(Arc::clone(tenant)) {
            Entry::Occupied(mut items) => items.get_mut().push_back(entry),
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([entry]));
                let finish = self.finished.remove(tenant).unwrap_or(0);
                self.schedule_tenant(self.virtual_time.max(finish), Arc::clone(tenant));
            }
        }
    }

    /// Removes the item with the smallest start tag; `weight_of` gives a tenant's
    /// weight (1 ..= [`MAX_WEIGHT`]) now, to tag its next item.
    pub(crate) fn pop(&mut self, weight_of: impl FnOnce(&str) -> u32) -> Option<E> {
        let Reverse((tag, _, tenant)) = self.schedule.pop()?;
        self.virtual_time = tag;
        let items = self
            .backlog
            .get_mut(&tenant)
            .expect("every scheduled tenant has a backlog");
        let entry = items
            .pop_front()
            .expect("a scheduled tenant's backlog is never empty");
        let finish = tag.saturating_add(cost(weight_of(&tenant)));
        if items.is_empty() {
            self.backlog.remove(&tenant);
            self.remember_finish(tenant, finish);
        } else {
            self.schedule_tenant(finish, tenant);
        }
        self.len -= 1;
        Some(entry)
    }

    fn remember_finish(&mut self, tenant: Arc<str>, finish: u128) {
        // Bounded by the tenants seen; past tags are dropped once the map grows.
        if self.finished.len() >= PRUNE_AT {
            let now = self.virtual_time;
            self.finished.retain(|_, tag| *tag > now);
        }
        self.finished.insert(tenant, finish);
    }

    fn schedule_tenant(&mut self, tag: u128, tenant: Arc<str>) {
        self.scheduled += 1;
        self.schedule.push(Reverse((tag, self.scheduled, tenant)));
    }
}

/// Virtual time one item costs a tenant of `weight`; a weight of 0 counts as 1, so a
/// caller's slip cannot divide by zero.
fn cost(weight: u32) -> u128 {
    SCALE / u128::from(weight.max(1))
}
