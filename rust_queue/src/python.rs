//! Python bindings, `nexus._rust_queue`: argument checks and unit conversion only.
//!
//! Classes are `frozen` (no `&mut self`), so one instance is shared by any number of
//! threads without pyo3 borrow errors; the Rust types underneath are already `Sync`.
//! The GIL is released only while a `pop_wait` blocks.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::{
    Backoff, Clock, Denied, Error, KeyedTokenBucket, ManualClock, MonotonicClock, Popped, Priority,
    Queue, RunQueue, TokenBucket, MAX_WEIGHT,
};

/// Longest stretch `pop_wait` sleeps without the GIL before it checks for signals, so
/// Ctrl-C interrupts a long wait.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

create_exception!(
    nexus._rust_queue,
    QueueFull,
    PyException,
    "A RunQueue refused a push for back-pressure."
);
create_exception!(
    nexus._rust_queue,
    LaneFull,
    QueueFull,
    "The lane holds its capacity of items."
);
create_exception!(
    nexus._rust_queue,
    TenantLimit,
    QueueFull,
    "The tenant has its limit of items queued."
);

impl From<Error> for PyErr {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => PyValueError::new_err(message),
            Error::UnknownLane(_) => PyKeyError::new_err(message),
            Error::LaneFull { .. } => LaneFull::new_err(message),
            Error::TenantLimit { .. } => TenantLimit::new_err(message),
        }
    }
}

fn invalid(message: String) -> PyErr {
    PyValueError::new_err(message)
}

fn non_negative(name: &str, value: i64) -> PyResult<u64> {
    u64::try_from(value).map_err(|_| invalid(format!("{name} must be >= 0, got {value}")))
}

/// Attempts past `u32::MAX` behave like `u32::MAX`: the delay is capped and `exhausted`
/// compares against a u32 anyway.
fn attempt_number(attempt: i64) -> PyResult<u32> {
    Ok(u32::try_from(non_negative("attempt", attempt)?).unwrap_or(u32::MAX))
}

/// Calls `pop_for(slice)` until it returns an item or `timeout` seconds (`math.inf`: no
/// limit) have passed: once with the GIL held and a zero slice, so an item already there
/// costs no GIL release, then with the GIL released, checking signals between slices.
fn wait_detached<T: Send>(
    py: Python<'_>,
    timeout: f64,
    pop_for: impl Fn(Duration) -> PyResult<Option<T>> + Sync,
) -> PyResult<Option<T>> {
    if timeout.is_nan() || timeout < 0.0 {
        return Err(invalid(format!("timeout must be >= 0, got {timeout}")));
    }
    if let Some(item) = pop_for(Duration::ZERO)? {
        return Ok(Some(item));
    }
    // Infinite, or too large to represent: wait until an item arrives.
    let deadline = Duration::try_from_secs_f64(timeout)
        .ok()
        .and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        let slice = match deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK_INTERVAL),
            None => SIGNAL_CHECK_INTERVAL,
        };
        if let Some(item) = py.detach(|| pop_for(slice))? {
            return Ok(Some(item));
        }
        py.check_signals()?;
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(None);
        }
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        invalid(format!(
            "{name} must be a finite number of seconds >= 0, got {value}"
        ))
    })
}

/// Bounded FIFO queue of Python objects, safe to share between threads.
#[pyclass(frozen, module = "nexus._rust_queue", name = "Queue")]
struct PyQueue {
    inner: Queue<Py<PyAny>>,
}

#[pymethods]
impl PyQueue {
    #[new]
    fn new(capacity: i64) -> PyResult<Self> {
        let capacity = usize::try_from(capacity)
            .map_err(|_| invalid(format!("capacity must be at least 1, got {capacity}")))?;
        Ok(Self {
            inner: Queue::new(capacity)?,
        })
    }

    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn push(&self, item: Bound<'_, PyAny>) -> bool {
        // When full the item comes back and is dropped here, with the GIL held.
        self.inner.push(item.unbind()).is_ok()
    }

    fn pop(&self) -> Option<Py<PyAny>> {
        self.inner.pop()
    }

    fn pop_many(&self, max_items: i64) -> PyResult<Vec<Py<PyAny>>> {
        let max_items = non_negative("max_items", max_items)?;
        let limit = usize::try_from(max_items).unwrap_or(usize::MAX);
        let mut items = Vec::with_capacity(limit.min(self.inner.len()));
        while items.len() < limit {
            match self.inner.pop() {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(items)
    }

    fn pop_wait(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Py<PyAny>>> {
        wait_detached(py, timeout, |slice| Ok(self.inner.pop_timeout(slice)))
    }

    fn remaining(&self) -> usize {
        self.inner.capacity().saturating_sub(self.inner.len())
    }
}

fn burst_arg(burst: i64) -> PyResult<u64> {
    u64::try_from(burst).map_err(|_| invalid(format!("burst must be at least 1, got {burst}")))
}

/// A `try_acquire` answer as Python sees it: 0.0 when granted, else the seconds to wait.
fn wait_seconds(granted: Result<(), Denied>, n: i64, burst: u64) -> PyResult<f64> {
    match granted {
        Ok(()) => Ok(0.0),
        Err(Denied::RetryAfter(wait)) => Ok(wait.as_secs_f64()),
        Err(Denied::ExceedsBurst) => Err(invalid(format!(
            "n={n} exceeds burst={burst}: it can never be granted"
        ))),
    }
}

/// Lock-free token bucket: `burst` tokens, refilled at `rate` per second.
#[pyclass(frozen, module = "nexus._rust_queue", name = "TokenBucket")]
struct PyTokenBucket {
    inner: TokenBucket,
}

#[pymethods]
impl PyTokenBucket {
    #[new]
    fn new(rate: f64, burst: i64) -> PyResult<Self> {
        let burst = burst_arg(burst)?;
        Ok(Self {
            inner: TokenBucket::new(rate, burst)?,
        })
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.inner.rate()
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.inner.burst()
    }

    #[pyo3(signature = (n = 1))]
    fn try_acquire(&self, n: i64) -> PyResult<f64> {
        let granted = self.inner.try_acquire(non_negative("n", n)?);
        wait_seconds(granted, n, self.inner.burst())
    }

    #[pyo3(signature = (n = 1))]
    fn reserve(&self, n: i64) -> PyResult<f64> {
        Ok(self.inner.reserve(non_negative("n", n)?).as_secs_f64())
    }
}

/// A token bucket per key (per caller), in bounded memory: idle keys are forgotten.
#[pyclass(frozen, module = "nexus._rust_queue", name = "KeyedTokenBucket")]
struct PyKeyedTokenBucket {
    inner: KeyedTokenBucket,
}

#[pymethods]
impl PyKeyedTokenBucket {
    #[new]
    // A literal default (keyed::DEFAULT_MAX_KEYS), so the text signature, and through it
    // the stub check, shows the value.
    #[pyo3(signature = (rate, burst, max_keys = 10000))]
    fn new(rate: f64, burst: i64, max_keys: i64) -> PyResult<Self> {
        let burst = burst_arg(burst)?;
        let max_keys = usize::try_from(max_keys)
            .map_err(|_| invalid(format!("max_keys must be at least 1, got {max_keys}")))?;
        Ok(Self {
            inner: KeyedTokenBucket::new(rate, burst, max_keys)?,
        })
    }

    #[getter]
    fn rate(&self) -> f64 {
        self.inner.rate()
    }

    #[getter]
    fn burst(&self) -> u64 {
        self.inner.burst()
    }

    #[getter]
    fn max_keys(&self) -> usize {
        self.inner.max_keys()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    #[pyo3(signature = (key, n = 1))]
    fn try_acquire(&self, key: &str, n: i64) -> PyResult<f64> {
        let granted = self.inner.try_acquire(key, non_negative("n", n)?);
        wait_seconds(granted, n, self.inner.burst())
    }
}

/// Capped exponential backoff: attempt k waits min(base * 2**k, max) seconds.
#[pyclass(frozen, module = "nexus._rust_queue", name = "Backoff")]
struct PyBackoff {
    inner: Backoff,
}

#[pymethods]
impl PyBackoff {
    #[new]
    fn new(base: f64, max: f64, max_attempts: i64) -> PyResult<Self> {
        let max_attempts = u32::try_from(max_attempts).map_err(|_| {
            invalid(format!(
                "max_attempts must be between 0 and {}, got {max_attempts}",
                u32::MAX
            ))
        })?;
        let inner = Backoff::new(seconds("base", base)?, seconds("max", max)?, max_attempts)?;
        Ok(Self { inner })
    }

    #[getter]
    fn base(&self) -> f64 {
        self.inner.base().as_secs_f64()
    }

    #[getter]
    fn max(&self) -> f64 {
        self.inner.max().as_secs_f64()
    }

    #[getter]
    fn max_attempts(&self) -> u32 {
        self.inner.max_attempts()
    }

    fn delay(&self, attempt: i64) -> PyResult<f64> {
        Ok(self.inner.delay(attempt_number(attempt)?).as_secs_f64())
    }

    fn exhausted(&self, attempt: i64) -> PyResult<bool> {
        Ok(self.inner.exhausted(attempt_number(attempt)?))
    }

    fn jittered(&self, attempt: i64, random: u64) -> PyResult<f64> {
        let attempt = attempt_number(attempt)?;
        Ok(self.inner.jittered(attempt, random).as_secs_f64())
    }
}

/// A clock that moves only when told to, for tests of a RunQueue in virtual time.
#[pyclass(frozen, module = "nexus._rust_queue", name = "ManualClock")]
struct PyManualClock {
    inner: Arc<ManualClock>,
}

#[pymethods]
impl PyManualClock {
    #[new]
    #[pyo3(signature = (start = 0.0))]
    fn new(start: f64) -> PyResult<Self> {
        let start = u64::try_from(seconds("start", start)?.as_nanos()).unwrap_or(u64::MAX);
        Ok(Self {
            inner: Arc::new(ManualClock::new(start)),
        })
    }

    fn now(&self) -> f64 {
        Duration::from_nanos(self.inner.now_nanos()).as_secs_f64()
    }

    fn advance(&self, seconds: f64) -> PyResult<()> {
        self.inner.advance(self::seconds("seconds", seconds)?);
        Ok(())
    }
}

/// A lane's key as Python gives it: an int or a str (1 and "1" are different lanes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LaneKey {
    Id(i64),
    Name(String),
}

impl LaneKey {
    fn from_py(lane: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(name) = lane.cast::<PyString>() {
            return Ok(Self::Name(name.to_str()?.to_owned()));
        }
        let id = (!lane.is_instance_of::<PyBool>())
            .then(|| lane.extract::<i64>().ok())
            .flatten();
        id.map(Self::Id).ok_or_else(|| {
            let kind = lane
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |name| name.to_string());
            PyTypeError::new_err(format!("a lane is an int (64-bit) or a str, got {kind}"))
        })
    }
}

impl fmt::Display for LaneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Name(name) => write!(f, "{name:?}"),
        }
    }
}

/// What `RunQueue.pop` hands out: the item and its stay in the queue.
#[pyclass(frozen, module = "nexus._rust_queue", name = "Dequeued")]
struct PyDequeued {
    #[pyo3(get)]
    item: Py<PyAny>,
    #[pyo3(get)]
    tenant: String,
    #[pyo3(get)]
    recovered: bool,
    #[pyo3(get)]
    waited: f64,
    #[pyo3(get)]
    delay: f64,
}

impl From<Popped<Py<PyAny>>> for PyDequeued {
    fn from(popped: Popped<Py<PyAny>>) -> Self {
        Self {
            item: popped.item,
            tenant: popped.tenant.to_string(),
            recovered: popped.priority == Priority::Recovered,
            waited: popped.waited.as_secs_f64(),
            delay: popped.delay.as_secs_f64(),
        }
    }
}

/// Per-shard lanes of runs: bounded, delayed retries, recovered first, fair by tenant.
#[pyclass(frozen, module = "nexus._rust_queue", name = "RunQueue")]
struct PyRunQueue {
    inner: RunQueue<LaneKey, Py<PyAny>, Arc<dyn Clock>>,
}

#[pymethods]
impl PyRunQueue {
    #[new]
    #[pyo3(signature = (*, tenant_limit = None, clock = None))]
    fn new(tenant_limit: Option<i64>, clock: Option<Bound<'_, PyManualClock>>) -> PyResult<Self> {
        let tenant_limit = tenant_limit
            .map(|limit| count("tenant_limit", limit))
            .transpose()?;
        let clock: Arc<dyn Clock> = match clock {
            Some(clock) => clock.get().inner.clone(),
            None => Arc::new(MonotonicClock::new()),
        };
        Ok(Self {
            inner: RunQueue::with_clock(tenant_limit, clock),
        })
    }

    fn configure_lane(&self, lane: Bound<'_, PyAny>, capacity: i64) -> PyResult<()> {
        let capacity = count("capacity", capacity)?;
        Ok(self
            .inner
            .configure_lane(LaneKey::from_py(&lane)?, capacity)?)
    }

    #[pyo3(signature = (tenant, *, weight = 1, limit = None))]
    fn configure_tenant(&self, tenant: &str, weight: i64, limit: Option<i64>) -> PyResult<()> {
        let weight = u32::try_from(weight)
            .ok()
            .filter(|weight| (1..=MAX_WEIGHT).contains(weight))
            .ok_or_else(|| {
                invalid(format!(
                    "weight of tenant {tenant:?} must be between 1 and {MAX_WEIGHT}, got {weight}"
                ))
            })?;
        let limit = limit.map(|limit| count("limit", limit)).transpose()?;
        Ok(self.inner.configure_tenant(tenant, weight, limit)?)
    }

    #[pyo3(signature = (lane, tenant, item, *, recovered = false, delay = 0.0))]
    fn push(
        &self,
        py: Python<'_>,
        lane: Bound<'_, PyAny>,
        tenant: &str,
        item: Bound<'_, PyAny>,
        recovered: bool,
        delay: f64,
    ) -> PyResult<()> {
        let key = LaneKey::from_py(&lane)?;
        let delay = seconds("delay", delay)?;
        let priority = if recovered {
            Priority::Recovered
        } else {
            Priority::New
        };
        // A refused item comes back and is dropped here, with the GIL held.
        self.inner
            .push(&key, tenant, item.unbind(), priority, delay)
            .map_err(|refused| refused_with_details(py, refused.error, &lane))
    }

    fn pop(&self, lane: Bound<'_, PyAny>) -> PyResult<Option<PyDequeued>> {
        let popped = self.inner.pop(&LaneKey::from_py(&lane)?)?;
        Ok(popped.map(PyDequeued::from))
    }

    fn pop_wait(
        &self,
        py: Python<'_>,
        lane: Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<Option<PyDequeued>> {
        let key = LaneKey::from_py(&lane)?;
        let popped = wait_detached(py, timeout, |slice| {
            Ok(self.inner.pop_timeout(&key, slice)?)
        })?;
        Ok(popped.map(PyDequeued::from))
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn depth(&self, lane: Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.inner.lane_len(&LaneKey::from_py(&lane)?)?)
    }

    fn delayed(&self, lane: Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.inner.delayed_len(&LaneKey::from_py(&lane)?)?)
    }

    fn next_due(&self, lane: Bound<'_, PyAny>) -> PyResult<Option<f64>> {
        let due = self.inner.next_due(&LaneKey::from_py(&lane)?)?;
        Ok(due.map(|due| due.as_secs_f64()))
    }

    fn tenant_depths(&self) -> HashMap<String, usize> {
        let depths = self.inner.tenant_depths().into_iter();
        depths.map(|(tenant, n)| (tenant.to_string(), n)).collect()
    }
}

/// A count given as a Python int: `name` must be >= 0.
fn count(name: &str, value: i64) -> PyResult<usize> {
    Ok(usize::try_from(non_negative(name, value)?).unwrap_or(usize::MAX))
}

/// The exception for a refused push, carrying the lane, tenant and limit as attributes
/// so that the 429 and the metrics need not parse the message.
fn refused_with_details(py: Python<'_>, error: Error, lane: &Bound<'_, PyAny>) -> PyErr {
    let details = error.clone();
    let err = PyErr::from(error);
    let value = err.value(py);
    let set = match details {
        Error::LaneFull { capacity, .. } => value
            .setattr("lane", lane)
            .and_then(|()| value.setattr("capacity", capacity)),
        Error::TenantLimit { tenant, limit } => value
            .setattr("tenant", tenant)
            .and_then(|()| value.setattr("limit", limit)),
        Error::InvalidArgument(_) | Error::UnknownLane(_) => Ok(()),
    };
    match set {
        Ok(()) => err,
        Err(failed) => failed,
    }
}

/// Hot path of nexus: run queue, bounded MPMC queue, token bucket and backoff, in Rust.
#[pymodule]
fn _rust_queue(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<PyQueue>()?;
    module.add_class::<PyTokenBucket>()?;
    module.add_class::<PyKeyedTokenBucket>()?;
    module.add_class::<PyBackoff>()?;
    module.add_class::<PyManualClock>()?;
    module.add_class::<PyRunQueue>()?;
    module.add_class::<PyDequeued>()?;
    module.add("QueueFull", py.get_type::<QueueFull>())?;
    module.add("LaneFull", py.get_type::<LaneFull>())?;
    module.add("TenantLimit", py.get_type::<TenantLimit>())?;
    Ok(())
}
