//! Python bindings, `nexus._rust_queue`: argument checks and unit conversion only.
//!
//! Classes are `frozen` (no `&mut self`), so one instance is shared by any number of
//! threads without pyo3 borrow errors; the Rust types underneath are already `Sync`.
//! The GIL is released only while `Queue.pop_wait` blocks.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::{Backoff, Denied, Error, Queue, TokenBucket};

/// Longest stretch `pop_wait` sleeps without the GIL before it checks for signals, so
/// Ctrl-C interrupts a long wait.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

impl From<Error> for PyErr {
    fn from(error: Error) -> Self {
        PyValueError::new_err(error.to_string())
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
        if timeout.is_nan() || timeout < 0.0 {
            return Err(invalid(format!("timeout must be >= 0, got {timeout}")));
        }
        if let Some(item) = self.inner.pop() {
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
            if let Some(item) = py.detach(|| self.inner.pop_timeout(slice)) {
                return Ok(Some(item));
            }
            py.check_signals()?;
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(None);
            }
        }
    }

    fn remaining(&self) -> usize {
        self.inner.capacity().saturating_sub(self.inner.len())
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
        let burst = u64::try_from(burst)
            .map_err(|_| invalid(format!("burst must be at least 1, got {burst}")))?;
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
        match self.inner.try_acquire(non_negative("n", n)?) {
            Ok(()) => Ok(0.0),
            Err(Denied::RetryAfter(wait)) => Ok(wait.as_secs_f64()),
            Err(Denied::ExceedsBurst) => Err(invalid(format!(
                "n={n} exceeds burst={}: it can never be granted",
                self.inner.burst()
            ))),
        }
    }

    #[pyo3(signature = (n = 1))]
    fn reserve(&self, n: i64) -> PyResult<f64> {
        Ok(self.inner.reserve(non_negative("n", n)?).as_secs_f64())
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
}

/// Hot path of nexus: bounded MPMC queue, token bucket and backoff, written in Rust.
#[pymodule]
fn _rust_queue(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyQueue>()?;
    module.add_class::<PyTokenBucket>()?;
    module.add_class::<PyBackoff>()?;
    Ok(())
}
