//! The narrow interface between the load generator and a key-value server.
//!
//! A [`Target`] is a cheap handle to one client connection; cloning it shares that
//! connection (several requests may be in flight on it at once). The driver opens
//! `--conns` connections and hands each in-flight worker a clone of one of them
//! (worker `w` uses connection `w % conns`). Each method is one request and one answer:
//! the driver times it, bounds it with `--timeout`, and counts its failures.
//!
//! Adding a server means implementing these five operations and a `connect` function.

use std::fmt;
use std::future::Future;

/// Read consistency of a single-key get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (etcd: default read,
    /// ReadIndex through the leader).
    Linearizable,
    /// Answered from the local replica, possibly stale (etcd: `serializable`).
    Serializable,
}

/// A failed request, as the target reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// No answer within the per-request timeout (set by the driver).
    Timeout,
    /// The server or the client library reported an error.
    Failed(String),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Timeout => f.write_str("request timed out"),
            OpError::Failed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for OpError {}

/// One connection to a server under test.
pub trait Target: Clone + Send + 'static {
    /// Short name used in results (`etcd`, `corekv`).
    fn name(&self) -> &'static str;

    /// Writes `value` at `key`.
    fn put(&mut self, key: &[u8], value: &[u8])
        -> impl Future<Output = Result<(), OpError>> + Send;

    /// Reads `key`; `Ok(false)` if it does not exist.
    fn get(
        &mut self,
        key: &[u8],
        consistency: Consistency,
    ) -> impl Future<Output = Result<bool, OpError>> + Send;

    /// Reads every key starting with `prefix` (linearizable) and returns how many there were.
    fn range_prefix(&mut self, prefix: &[u8]) -> impl Future<Output = Result<u64, OpError>> + Send;

    /// One transaction: if the value at `key` equals `expected`, write `new`; otherwise
    /// read the key. Returns whether the swap happened.
    fn compare_and_swap(
        &mut self,
        key: &[u8],
        expected: &[u8],
        new: &[u8],
    ) -> impl Future<Output = Result<bool, OpError>> + Send;
}
