//! Weighted fair queueing between tenants, for one class of one lane of the run queue.
//!
//! Each tenant keeps its own FIFO. Every item gets a virtual finish tag: a tenant that
//! becomes backlogged starts at the lane's virtual time plus `SCALE / weight`, and each
//! following item of that tenant finishes `SCALE / weight` after the one before. The
//! item with the smallest tag is served next, and the virtual time moves to its tag.
//! So a tenant with 50,000 queued items and a tenant arriving with one are served in
//! turn, and over a busy stretch tenants are served in proportion to their weights.
//!
//! Tags are kept per tenant, not per item: only a tenant's head item has one in the
//! schedule, so a pop is O(log tenants) however many items wait. A tenant whose FIFO
//! empties is dropped; nothing is lost by that, because the virtual time has already
//! reached its last tag (that tag was the last one served), so a returning tenant starts
//! from the virtual time either way.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// Virtual time one item of a weight-1 tenant costs. Large enough that `SCALE / weight`
/// keeps the ratios of any two weights up to [`MAX_WEIGHT`] to within 1e-13, small
/// enough that u128 tags last 2^64 pops of a weight-1 tenant.
const SCALE: u128 = 1 << 64;

/// Largest accepted tenant weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The items of one class (recovered or new) of one lane, served fairly by tenant.
pub(crate) struct FairQueue<E> {
    backlog: HashMap<Arc<str>, VecDeque<E>>,
    /// One entry per backlogged tenant: (finish tag of its head item, order it was
    /// scheduled in, tenant). The order breaks ties between equal tags first come, first
    /// served, and makes the tenant never compared.
    schedule: BinaryHeap<Reverse<(u128, u64, Arc<str>)>>,
    virtual_time: u128,
    scheduled: u64,
    len: usize,
}

impl<E> FairQueue<E> {
    pub(crate) fn new() -> Self {
        Self {
            backlog: HashMap::new(),
            schedule: BinaryHeap::new(),
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

    /// Queues `entry` behind `tenant`'s other items; `weight` (1 ..= [`MAX_WEIGHT`]) is
    /// the tenant's weight now.
    pub(crate) fn push(&mut self, tenant: &Arc<str>, weight: u32, entry: E) {
        self.len += 1;
        match self.backlog.entry(Arc::clone(tenant)) {
            Entry::Occupied(mut items) => items.get_mut().push_back(entry),
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([entry]));
                let tag = self.virtual_time.saturating_add(cost(weight));
                self.schedule_tenant(tag, Arc::clone(tenant));
            }
        }
    }

    /// Removes the item with the smallest finish tag; `weight_of` gives a tenant's
    /// weight now, to tag its next item.
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
        if items.is_empty() {
            self.backlog.remove(&tenant);
        } else {
            let next = tag.saturating_add(cost(weight_of(&tenant)));
            self.schedule_tenant(next, tenant);
        }
        self.len -= 1;
        Some(entry)
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
