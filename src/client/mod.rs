//! The Rust client of corekv: pipelined and shard-aware.
//!
//! - [`Client`] is the native core and runs inside a glommio executor (`!Send`). It
//!   connects to any endpoint, does the handshake, asks `Topology` once, and then keeps
//!   one connection per shard it needs (opened lazily). Each request goes straight to
//!   the shard of its group (`group_for(key, shard_count)`, the rule proto's
//!   validation uses: a range in one hash tag is one group); ranges over several
//!   groups and key-less Txns go to the bootstrap node's shard, which scatters and
//!   merges (a delete range over several groups is refused by the server).
//! - [`ThreadedClient`] is a `Send + Clone` handle for every other runtime (tokio,
//!   async-std, plain threads): it owns a background thread running a glommio executor
//!   with a [`Client`]; requests go to it over one bounded flume channel, each answer
//!   comes back through a one-use slot that wakes the caller's task or thread
//!   (`*_async` methods on any runtime; [`ThreadedClient::blocking`] for blocking
//!   callers).
//! - [`cli`] is the pure logic of `corekvctl`: argument parsing, etcdctl's txn text
//!   syntax, output formatting.
//!
//! Connections ([`conn`]): many requests in flight, each with a request id unique on its
//! connection; a writer task sends everything queued meanwhile as one write; a reader
//! task decodes frames (proto's sans-I/O [`crate::proto::Decoder`]) and completes the
//! pending request with that id. A broken connection fails every pending request with
//! [`ClientError::ConnectionLost`] and is replaced on next use.
//!
//! Retries ([`RetryPolicy`]): `WrongShard` and `NotLeader` hints update the routing
//! table and the request is sent again; connection failures, `Unavailable` and
//! `TooManyRequests` are retried after an exponential backoff; both are bounded in
//! attempts and in total time. A write keeps its (session, seq) across retries, so the
//! server's dedupe answers a retried write that was already applied from its record
//! instead of applying it twice. Sessions are random non-zero u64s from a pool: a write
//! holds one for all its attempts, so a session never has two writes in flight (the
//! server keeps only the last seq of a session and calls an older one stale, which a
//! pipelined write lost by a broken connection and retried after a later one would
//! be). A session goes back to the pool with seq + 1 once its write's outcome is known,
//! and is retired when it is not (an attempt was lost). Reads use session 0, seq 0.
//!
//! Invariants: a request id is never reused while its request is pending on that
//! connection; every pending request is completed exactly once (answer, error frame,
//! timeout or connection loss); every queue is bounded (in-flight requests per
//! connection, the threaded handle's channel).

pub mod cli;
pub mod conn;
mod core;
pub mod routing;
mod threaded;

pub use self::core::Client;
pub use self::routing::{Routing, Target};
pub use self::threaded::{BlockingClient, ThreadedClient};

use std::time::Duration;

use crate::mvcc::{DeleteRangeResponse, PutResponse, TxnResponse};
use crate::proto::{
    ErrorCode, ProtoError, RangeResult, Response, ResponseBody, ResponseHeader, StatusResponse,
    TopologyResponse, DEFAULT_MAX_FRAME_BYTES,
};

/// The default client address of a corekv node (shard 0).
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";

/// What went wrong with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The server answered with an error frame.
    Server { code: ErrorCode, message: String },
    /// No connection could be opened to `addr`.
    Connect { addr: String, reason: String },
    /// The handshake with `addr` failed (bad ack, version, cluster).
    Handshake { addr: String, reason: String },
    /// The connection to `addr` broke (read/write error, end of stream, bad frame) while
    /// the request was pending or before it was sent.
    ConnectionLost { addr: String, reason: String },
    /// No answer within the configured time.
    Timeout { op: &'static str, after: Duration },
    /// The request could not be encoded (too large for a frame, ...).
    Encode(String),
    /// The server answered with something this client does not expect.
    Protocol(String),
    /// The client (the threaded handle's background thread) is gone.
    Closed,
}

impl ClientError {
    /// The server's error code, if the server answered with an error.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    fn server(e: ProtoError) -> Self {
        ClientError::Server {
            code: e.code,
            message: e.message,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Server { code, message } => write!(f, "server error {code:?}: {message}"),
            ClientError::Connect { addr, reason } => write!(f, "connecting to {addr}: {reason}"),
            ClientError::Handshake { addr, reason } => {
                write!(f, "handshake with {addr}: {reason}")
            }
            ClientError::ConnectionLost { addr, reason } => {
                write!(f, "connection to {addr} lost: {reason}")
            }
            ClientError::Timeout { op, after } => {
                write!(f, "{op}: no answer within {:.3}s", after.as_secs_f64())
            }
            ClientError::Encode(m) => write!(f, "encoding the request: {m}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
            ClientError::Closed => write!(f, "the client is closed"),
        }
    }
}

impl std::error::Error for ClientError {}

/// What the client does after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryAction {
    /// Give up: the error is the answer.
    Fail,
    /// The routing table was told something new: send again at once.
    Reroute,
    /// Wait (backoff), then send again; `refresh_topology` asks for the topology first.
    Backoff { refresh_topology: bool },
}

/// Bounds on retrying one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (>= 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub initial_backoff: Duration,
    /// Cap of one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(1000),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): `initial * 2^(attempt-1)`
    /// capped at `max_backoff`, minus up to a quarter of jitter drawn from `jitter` (any
    /// u64, e.g. a hash of the session and attempt) so that many clients do not retry in
    /// step. Deterministic for a given `jitter`.
    pub fn backoff(&self, attempt: u32, jitter: u64) -> Duration {
        assert!(attempt >= 1, "backoff: attempts are numbered from 1");
        let shift = (attempt - 1).min(30);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff);
        let quarter = base / 4;
        let cut = if quarter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = quarter.as_nanos() as u64;
            Duration::from_nanos(jitter % (nanos + 1))
        };
        base - cut
    }

    /// What to do after `error` on attempt `attempt` (1-based), `elapsed` into a request
    /// whose deadline is `budget` after its start. `writes_safe` tells whether the request
    /// may be sent again after its connection broke (always true here: reads are
    /// idempotent and writes carry (session, seq)).
    pub fn decide(
        &self,
        error: &ClientError,
        attempt: u32,
        elapsed: Duration,
        budget: Duration,
    ) -> RetryAction {
        if attempt >= self.max_attempts || elapsed >= budget {
            return RetryAction::Fail;
        }
        match error {
            ClientError::Server { code, .. } => match code {
                ErrorCode::WrongShard { .. } => RetryAction::Reroute,
                ErrorCode::NotLeader { leader: 0 } => RetryAction::Backoff {
                    refresh_topology: true,
                },
                ErrorCode::NotLeader { .. } => RetryAction::Reroute,
                ErrorCode::Unavailable | ErrorCode::TooManyRequests => RetryAction::Backoff {
                    refresh_topology: false,
                },
                _ => RetryAction::Fail,
            },
            // The node may be gone for good (a killed leader): ask the cluster who
            // serves the group now.
            ClientError::Connect { .. } | ClientError::ConnectionLost { .. } => {
                RetryAction::Backoff {
                    refresh_topology: true,
                }
            }
            ClientError::Handshake { .. }
            | ClientError::Timeout { .. }
            | ClientError::Encode(_)
            | ClientError::Protocol(_)
            | ClientError::Closed => RetryAction::Fail,
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of nodes to bootstrap from, tried in order.
    pub endpoints: Vec<String>,
    /// Limit on opening one connection (TCP connect + handshake).
    pub connect_timeout: Duration,
    /// Limit on one request, retries included.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests in flight on one connection; more wait for a free slot.
    pub max_in_flight_per_connection: usize,
    /// Largest frame this client sends or accepts.
    pub max_frame_bytes: usize,
    /// Requests queued in the [`ThreadedClient`]'s channel.
    pub channel_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_in_flight_per_connection: 4096,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            channel_capacity: 4096,
        }
    }
}

impl ClientConfig {
    /// The defaults with these endpoints.
    pub fn with_endpoints<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }
}

/// An answer with its header (who answered, the group and its revision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    pub header: ResponseHeader,
    pub body: T,
}

fn unexpected(want: &str, body: &ResponseBody) -> ClientError {
    let got = match body {
        ResponseBody::Put(_) => "Put",
        ResponseBody::Range(_) => "Range",
        ResponseBody::DeleteRange(_) => "DeleteRange",
        ResponseBody::Txn(_) => "Txn",
        ResponseBody::Compact => "Compact",
        ResponseBody::Status(_) => "Status",
        ResponseBody::Topology(_) => "Topology",
        ResponseBody::HashKv(_) => "HashKv",
        ResponseBody::Members(_) => "Members",
    };
    ClientError::Protocol(format!("expected a {want} answer, got {got}"))
}

macro_rules! into_reply {
    ($name:ident, $variant:ident, $ty:ty) => {
        /// Takes the expected body out of a response.
        pub fn $name(r: Response) -> Result<Reply<$ty>, ClientError> {
            match r.body {
                ResponseBody::$variant(b) => Ok(Reply {
                    header: r.header,
                    body: b,
                }),
                other => Err(unexpected(stringify!($variant), &other)),
            }
        }
    };
}

into_reply!(into_put, Put, PutResponse);
into_reply!(into_range, Range, RangeResult);
into_reply!(into_delete, DeleteRange, DeleteRangeResponse);
into_reply!(into_txn, Txn, TxnResponse);
into_reply!(into_status, Status, StatusResponse);
into_reply!(into_topology, Topology, TopologyResponse);

/// Takes the header of a Compact answer.
pub fn into_compact(r: Response) -> Result<ResponseHeader, ClientError> {
    match r.body {
        ResponseBody::Compact => Ok(r.header),
        other => Err(unexpected("Compact", &other)),
    }
}

/// etcd's prefix rule: the smallest key greater than every key starting with `prefix`
/// (the prefix with its last byte below 0xff incremented, the rest dropped); `"\0"`
/// (every key) when there is none (empty or all 0xff).
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[cfg(test)]
mod tests;
