//! Raft consensus as a pure state machine (to be written: issue 2).
//!
//! This file fixes the shared vocabulary first — log entries, hard state, snapshot
//! metadata and the [`Storage`] trait — because the WAL (`src/wal`) implements that
//! trait and the server embeds these types in its wire frames.

pub mod types;

pub use types::*;
