//! The hot path of nexus, shared by its Python workers through `nexus._rust_queue`.
//!
//! - [`queue::Queue`]: bounded lock-free MPMC queue with a blocking `pop_timeout`.
//! - [`limiter::TokenBucket`]: lock-free token bucket (GCRA over one atomic).
//! - [`backoff::Backoff`]: per-item capped exponential backoff.
//! - [`clock`]: the time source the limiter reads, replaceable in tests.
//!
//! Only `python.rs`, compiled with the `python` feature, knows about pyo3.

pub mod backoff;
pub mod clock;
pub mod error;
pub mod limiter;
pub mod queue;

#[cfg(feature = "python")]
mod python;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, MonotonicClock};
pub use error::Error;
pub use limiter::{Denied, TokenBucket};
pub use queue::Queue;
