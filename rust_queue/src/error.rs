//! The crate's error type.

use std::fmt;

/// Why a constructor or call refused its arguments, or a push refused its item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An argument outside its domain; the message names it and the accepted range.
    InvalidArgument(String),
    /// No lane with this key was configured. The key is written as the lane's `Display`.
    UnknownLane(String),
    /// Back-pressure: the lane already holds `capacity` items (delayed ones included).
    LaneFull { lane: String, capacity: usize },
    /// Back-pressure: the tenant already has `limit` items queued, over all lanes.
    TenantLimit { tenant: String, limit: usize },
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArgument(message) => write!(f, "invalid argument: {message}"),
            Self::UnknownLane(lane) => write!(f, "no lane {lane} is configured"),
            Self::LaneFull { lane, capacity } => {
                write!(
                    f,
                    "lane {lane} is full: it holds its capacity of {capacity} items"
                )
            }
            Self::TenantLimit { tenant, limit } => write!(
                f,
                "tenant {tenant:?} has {limit} items queued, its limit: no more are accepted"
            ),
        }
    }
}

impl std::error::Error for Error {}
