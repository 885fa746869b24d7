//! The hot path of nexus, shared by its Python workers through `nexus._rust_queue`.
//!
//! - [`queue::Queue`]: bounded lock-free MPMC queue with a blocking `pop_timeout`.
//! - [`limiter::TokenBucket`]: lock-free token bucket (GCRA over one atomic).
//! - [`keyed::KeyedTokenBucket`]: a token bucket per key (per caller), idle keys evicted.
//! - [`run_queue::RunQueue`]: the run queue: bounded per-shard lanes, delayed items,
//!   recovered runs first and weighted fair queueing between tenants.
//! - [`backoff::Backoff`]: per-item capped exponential backoff, with jitter.
//! - [`clock`]: the time source the limiter and the run queue read, replaceable in tests.
//!
//! Only `python.rs`, compiled with the `python` feature, knows about pyo3.

pub mod backoff;
pub mod clock;
pub mod error;
mod fair;
pub mod keyed;
pub mod limiter;
pub mod queue;
pub mod run_queue;

#[cfg(feature = "python")]
mod python;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use error::Error;
pub use fair::MAX_WEIGHT;
pub use keyed::KeyedTokenBucket;
pub use limiter::{Denied, TokenBucket};
pub use queue::Queue;
pub use run_queue::{Popped, Priority, Rejected, RunQueue};
